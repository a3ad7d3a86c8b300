//! An engine that speaks the OpenAI-compatible transcription API,
//! `POST {url}/v1/audio/transcriptions`, which most self-hosted Whisper servers expose
//! (faster-whisper servers such as speaches, whisper.cpp's `whisper-server` with
//! `--inference-path /v1/audio/transcriptions`, vLLM, LocalAI).
//!
//! A channel is cut by the energy VAD into chunks of speech (at most
//! [`HttpConfig::max_chunk_ms`] each, padded like the offline engine's utterances); silent
//! channels send nothing, and long silences never reach the server, where Whisper models
//! tend to invent text. Each chunk is sent as a 16-bit mono 8 kHz WAV (the server resamples;
//! sending 8 kHz halves the upload) in a multipart form with `model`, `language` (the
//! ISO 639-1 part of the tag), `response_format=verbose_json` and
//! `timestamp_granularities[]=segment` and `=word`. The answer's `segments[]` become
//! phrases, its words (top-level `words[]` as OpenAI sends them, or `segments[].words[]` as
//! faster-whisper servers do) their words, with times moved by the chunk's offset.
//!
//! # Bad answers
//! A body that is not the expected JSON, or whose times are not finite, negative, reversed
//! or beyond the audio sent, is [`TranscriptError::Garbage`]; text without `segments` is
//! [`TranscriptError::NoTiming`]; a non-2xx status is [`TranscriptError::Engine`] with the
//! status and the start of the body; no complete answer within the request's time is
//! [`TranscriptError::Timeout`]. Answers over [`MAX_ANSWER_BYTES`] are refused. Nothing an
//! engine sends can make this module panic.
//!
//! The bearer key is read from an environment variable named in the configuration
//! (`api_key_env`), never from the configuration file, and is never logged.

use std::time::Duration;

use serde::Deserialize;

use crate::engine::{BoxFuture, Engine, Request};
use crate::{Phrase, TranscriptError, Word};

/// The largest answer accepted (a verbose answer for 10 minutes of speech is ~1 MB).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Times may exceed the audio sent by this much (servers round up to their frame).
const END_SLACK_S: f64 = 1.0;

/// Settings of the HTTP engine.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The server's base URL (`http://127.0.0.1:8000`); `/v1/audio/transcriptions` is
    /// appended unless the URL already ends with it.
    pub url: String,
    /// The `model` form field (`whisper-1`, `Systran/faster-whisper-small.en`...).
    pub model: String,
    /// The bearer key, if the server wants one.
    pub api_key: Option<String>,
    /// Longest chunk of a channel sent in one request.
    pub max_chunk_ms: u64,
    /// Audio kept before and after each talk span.
    pub pad_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            url: "http://127.0.0.1:8000".into(),
            model: "whisper-1".into(),
            api_key: None,
            max_chunk_ms: 600_000,
            pad_ms: 300,
        }
    }
}

impl HttpConfig {
    /// Reads the key from environment variable `var` (unset or empty: no key).
    pub fn api_key_from_env(var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|k| !k.is_empty())
    }
}

/// The HTTP engine (see the module docs).
#[derive(Clone)]
pub struct HttpEngine {
    client: reqwest::Client,
    endpoint: String,
    config: HttpConfig,
}

impl std::fmt::Debug for HttpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("HttpEngine")
            .field("endpoint", &self.endpoint)
            .field("model", &self.config.model)
            .field("api_key", &self.config.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The answer's shape (`verbose_json`). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Verbose {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    segments: Option<Vec<Segment>>,
    #[serde(default)]
    words: Option<Vec<WireWord>>,
}

#[derive(Debug, Deserialize)]
struct Segment {
    start: f64,
    end: f64,
    #[serde(default)]
    text: String,
    #[serde(default)]
    words: Option<Vec<WireWord>>,
}

#[derive(Debug, Deserialize)]
struct WireWord {
    word: String,
    start: f64,
    end: f64,
    #[serde(default)]
    probability: Option<f64>,
}

/// Checks one time span (seconds) against the audio's length and converts it to ms.
fn span_ms(what: &str, start: f64, end: f64, len_s: f64) -> Result<(u64, u64), TranscriptError> {
    if !start.is_finite() || !end.is_finite() || start < 0.0 || end < start {
        return Err(TranscriptError::Garbage(format!(
            "{what} has times {start}..{end} s"
        )));
    }
    if end > len_s + END_SLACK_S {
        return Err(TranscriptError::Garbage(format!(
            "{what} ends at {end} s, after the {len_s} s of audio sent"
        )));
    }
    let ms = |s: f64| (s.min(len_s) * 1000.0).round() as u64;
    Ok((ms(start), ms(end)))
}

/// Parses a `verbose_json` answer for `len_ms` of audio into phrases (times from the start
/// of the audio sent).
pub fn parse_verbose_json(body: &[u8], len_ms: u64) -> Result<Vec<Phrase>, TranscriptError> {
    let v: Verbose = serde_json::from_slice(body).map_err(|e| {
        let head: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        TranscriptError::Garbage(format!("not a verbose_json transcript ({e}): {head:?}"))
    })?;
    let len_s = len_ms as f64 / 1000.0;
    let Some(segments) = v.segments else {
        return if v.text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            Err(TranscriptError::NoTiming)
        } else {
            Ok(Vec::new())
        };
    };
    if segments.is_empty() && v.text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        return Err(TranscriptError::NoTiming);
    }
    let mut phrases = Vec::with_capacity(segments.len());
    let mut nested = false;
    for (i, s) in segments.iter().enumerate() {
        let (start_ms, end_ms) = span_ms(&format!("segment {i}"), s.start, s.end, len_s)?;
        let mut words = Vec::new();
        if let Some(ws) = &s.words {
            nested = true;
            for (j, w) in ws.iter().enumerate() {
                words.push(word(&format!("segment {i} word {j}"), w, len_s)?);
            }
        }
        phrases.push(Phrase {
            start_ms,
            end_ms,
            text: s.text.trim().to_string(),
            words,
        });
    }
    if !nested {
        if let Some(ws) = &v.words {
            for (j, w) in ws.iter().enumerate() {
                let w = word(&format!("word {j}"), w, len_s)?;
                let mid = (w.start_ms + w.end_ms) / 2;
                // The segment holding the word's middle (with 50 ms of rounding either side).
                if let Some(p) = phrases
                    .iter_mut()
                    .find(|p| p.start_ms.saturating_sub(50) <= mid && mid <= p.end_ms + 50)
                {
                    p.words.push(w);
                }
            }
        }
    }
    phrases.retain(|p| !p.text.is_empty());
    phrases.sort_by_key(|p| (p.start_ms, p.end_ms));
    Ok(phrases)
}

fn word(what: &str, w: &WireWord, len_s: f64) -> Result<Word, TranscriptError> {
    let (start_ms, end_ms) = span_ms(what, w.start, w.end, len_s)?;
    Ok(Word {
        start_ms,
        end_ms,
        text: w.word.trim().to_string(),
        confidence: w
            .probability
            .filter(|p| p.is_finite() && (0.0..=1.0).contains(p))
            .map(|p| p as f32),
    })
}

/// A 16-bit mono 8 kHz WAV of `samples`.
pub fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    {
        let mut w = hound::WavWriter::new(&mut out, spec).expect("writing to memory");
        let mut i16w = w.get_i16_writer(samples.len() as u32);
        for &s in samples {
            i16w.write_sample(s);
        }
        i16w.flush().expect("writing to memory");
        w.finalize().expect("writing to memory");
    }
    out.into_inner()
}

/// The ISO 639-1 part of a BCP 47 tag (`en-US` → `en`).
fn iso639(language: &str) -> String {
    language
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl HttpEngine {
    pub fn new(config: HttpConfig) -> Result<HttpEngine, TranscriptError> {
        let url = config.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TranscriptError::Config(format!(
                "transcription url {url:?} is not http:// or https://"
            )));
        }
        let endpoint = if url.ends_with("/v1/audio/transcriptions") {
            url.to_string()
        } else {
            format!("{url}/v1/audio/transcriptions")
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TranscriptError::Config(format!("HTTP client: {e}")))?;
        Ok(HttpEngine {
            client,
            endpoint,
            config,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One request for one chunk.
    async fn request(
        &self,
        samples: &[i16],
        language: &str,
        timeout: Duration,
    ) -> Result<Vec<Phrase>, TranscriptError> {
        use reqwest::multipart::{Form, Part};
        let file = Part::bytes(wav_bytes(samples))
            .file_name("channel.wav")
            .mime_str("audio/wav")
            .map_err(|e| TranscriptError::Engine(e.to_string()))?;
        let form = Form::new()
            .part("file", file)
            .text("model", self.config.model.clone())
            .text("language", iso639(language))
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment")
            .text("timestamp_granularities[]", "word");
        let mut req = self.client.post(&self.endpoint).multipart(form);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key);
        }
        let exchange = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| TranscriptError::Engine(format!("POST {}: {e}", self.endpoint)))?;
            let status = resp.status();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| TranscriptError::Engine(format!("reading the answer: {e}")))?
            {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(TranscriptError::Garbage(format!(
                        "answer larger than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(TranscriptError::Engine(format!("HTTP {status}: {head:?}")));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TranscriptError::Timeout(timeout))??;
        parse_verbose_json(&body, samples.len() as u64 / 8)
    }
}

impl Engine for HttpEngine {
    fn name(&self) -> &str {
        "http"
    }

    fn transcribe(&self, request: Request) -> BoxFuture<'_, Result<Vec<Phrase>, TranscriptError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + request.timeout;
            let samples = &request.samples;
            let len_ms = samples.len() as u64 / 8;
            let spans = analysis::vad::talk_spans(samples);
            let chunks = chunks(&spans, self.config.pad_ms, self.config.max_chunk_ms, len_ms);
            let mut phrases = Vec::new();
            for (start, end) in chunks {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(TranscriptError::Timeout(request.timeout));
                }
                let slice = &samples[(start * 8) as usize..((end * 8) as usize).min(samples.len())];
                let got =
                    self.request(slice, &request.language, left)
                        .await
                        .map_err(|e| match e {
                            TranscriptError::Timeout(_) => {
                                TranscriptError::Timeout(request.timeout)
                            }
                            e => e,
                        })?;
                phrases.extend(got.into_iter().map(|mut p| {
                    p.start_ms += start;
                    p.end_ms += start;
                    for w in &mut p.words {
                        w.start_ms += start;
                        w.end_ms += start;
                    }
                    p
                }));
            }
            Ok(phrases)
        })
    }
}

/// Chunks of a channel to send (ms, end exclusive): padded talk spans grouped while the group
/// stays within `max`; a single span longer than `max` is cut.
pub(crate) fn chunks(spans: &[(u64, u64)], pad: u64, max: u64, len: u64) -> Vec<(u64, u64)> {
    let max = max.max(1000);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in spans {
        let (s, e) = (s.saturating_sub(pad), (e + pad).min(len));
        // Never overlap the previous chunk.
        let s = out.last().map_or(s, |last| s.max(last.1));
        if e <= s {
            continue;
        }
        match out.last_mut() {
            Some(last) if e - last.0 <= max => last.1 = e,
            _ => push_cut(&mut out, s, e, max),
        }
    }
    out
}

fn push_cut(out: &mut Vec<(u64, u64)>, s: u64, e: u64, max: u64) {
    let mut t = s;
    while t < e {
        let end = (t + max).min(e);
        out.push((t, end));
        t = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_answers_parse_with_top_level_words() {
        let body = br#"{"task":"transcribe","language":"english","duration":4.0,
            "text":"Hello there. How can I help?",
            "segments":[{"id":0,"start":0.0,"end":1.2,"text":" Hello there."},
                        {"id":1,"start":1.5,"end":3.0,"text":" How can I help?"}],
            "words":[{"word":"Hello","start":0.1,"end":0.5},{"word":"there","start":0.6,"end":1.1},
                     {"word":"How","start":1.5,"end":1.7},{"word":"can","start":1.7,"end":1.9},
                     {"word":"I","start":1.9,"end":2.0},{"word":"help","start":2.0,"end":2.8}]}"#;
        let p = parse_verbose_json(body, 4000).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].start_ms, p[0].end_ms, p[0].text.as_str()),
            (0, 1200, "Hello there.")
        );
        assert_eq!(p[0].words.len(), 2);
        assert_eq!(p[1].words.len(), 4);
        assert_eq!(p[1].words[3].text, "help");
        assert_eq!((p[1].words[3].start_ms, p[1].words[3].end_ms), (2000, 2800));
    }

    #[test]
    fn faster_whisper_answers_parse_with_nested_words_and_probabilities() {
        let body = br#"{"text":"yes","segments":[{"start":0.5,"end":0.9,"text":"yes",
            "words":[{"word":" yes","start":0.5,"end":0.9,"probability":0.93}]}]}"#;
        let p = parse_verbose_json(body, 1000).unwrap();
        assert_eq!(p[0].words[0].text, "yes");
        assert_eq!(p[0].words[0].confidence, Some(0.93));
    }

    #[test]
    fn garbage_and_untimed_answers_are_errors() {
        let garbage: &[&[u8]] = &[
            b"<html>502 Bad Gateway</html>",
            b"",
            b"[1,2,3]",
            br#"{"segments":[{"start":"zero","end":1,"text":"x"}]}"#,
            br#"{"segments":[{"start":2.0,"end":1.0,"text":"reversed"}]}"#,
            br#"{"segments":[{"start":-1.0,"end":1.0,"text":"negative"}]}"#,
            br#"{"segments":[{"start":0.0,"end":99.0,"text":"beyond the audio"}]}"#,
            br#"{"segments":[{"start":0.0,"end":1.0,"text":"x"}],"words":[{"word":"x","start":0,"end":1e400}]}"#,
        ];
        for body in garbage {
            let e = parse_verbose_json(body, 5000).unwrap_err();
            assert!(
                matches!(e, TranscriptError::Garbage(_)),
                "{:?}: {e:?}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"text":"hello there"}"#[..],
            br#"{"text":"hi","segments":[]}"#,
        ] {
            assert_eq!(
                parse_verbose_json(body, 5000).unwrap_err(),
                TranscriptError::NoTiming
            );
        }
        assert!(parse_verbose_json(br#"{"text":"","segments":[]}"#, 5000)
            .unwrap()
            .is_empty());
        assert!(parse_verbose_json(br#"{"text":" "}"#, 5000)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn chunks_group_talk_and_skip_silence() {
        assert_eq!(
            chunks(
                &[(1000, 2000), (5000, 6000), (700_000, 701_000)],
                300,
                600_000,
                800_000
            ),
            vec![(700, 6300), (699_700, 701_300)]
        );
        assert_eq!(chunks(&[(0, 1_300_000)], 0, 600_000, 1_300_000).len(), 3);
        assert!(chunks(&[], 300, 600_000, 10_000).is_empty());
    }

    #[test]
    fn the_wav_is_mono_8k_16_bit() {
        let bytes = wav_bytes(&[1, -2, 3]);
        let r = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().channels, 1);
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn urls_are_checked_and_keys_never_shown() {
        assert!(HttpEngine::new(HttpConfig {
            url: "ftp://x".into(),
            ..Default::default()
        })
        .is_err());
        let e = HttpEngine::new(HttpConfig {
            url: "http://127.0.0.1:9/".into(),
            api_key: Some("sk-secret".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(e.endpoint(), "http://127.0.0.1:9/v1/audio/transcriptions");
        assert!(!format!("{e:?}").contains("sk-secret"));
        assert_eq!(iso639("en-US"), "en");
    }
}
