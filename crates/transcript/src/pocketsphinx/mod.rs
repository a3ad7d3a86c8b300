//! The offline engine: CMU PocketSphinx (Debian's `libpocketsphinx3`, 5prealpha) with its
//! US-English model (`pocketsphinx-en-us`), nothing downloaded at run time.
//!
//! A channel is cut into utterances by the energy VAD of the `analysis` crate (the same talk
//! spans as the conversation metrics), each widened by [`PocketSphinxConfig::pad_ms`] so
//! that weak word onsets and ends reach the recogniser; each utterance is upsampled to
//! 16 kHz ([`crate::resample`]) and decoded on its own, and becomes one phrase whose words
//! carry the recogniser's frame times (10 ms) and posterior probabilities.
//!
//! PocketSphinx's own endpointing is not used: with silence removal on, its frame numbers
//! skip the removed frames, so word times would drift from the audio. It is switched off
//! (`-remove_silence no`) and the utterances are cut outside.
//!
//! A decoder loads the acoustic model, the 27 MB language model and the dictionary (about a
//! second and 100 MB); the engine keeps the decoders it made and hands one to each call, so a
//! worker pool of N threads holds at most N of them.

mod ffi;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::engine::BlockingEngine;
use crate::resample::upsample_2x;
use crate::{Phrase, TranscriptError, Word};

/// Where Debian's `pocketsphinx-en-us` puts the model (pkg-config's `modeldir` at build time).
pub const DEFAULT_MODEL_DIR: &str = concat!(env!("POCKETSPHINX_MODELDIR"), "/en-us");

/// Settings of the offline engine.
#[derive(Debug, Clone, PartialEq)]
pub struct PocketSphinxConfig {
    /// Directory holding the acoustic model `en-us/`, `en-us.lm.bin` and
    /// `cmudict-en-us.dict` (Debian's layout).
    pub model_dir: PathBuf,
    /// Overrides of the three model files (default: inside `model_dir`).
    pub hmm: Option<PathBuf>,
    pub lm: Option<PathBuf>,
    pub dict: Option<PathBuf>,
    /// The language the model speaks; requests for another one are refused.
    pub language: String,
    /// Audio kept before and after each talk span.
    pub pad_ms: u64,
    /// Longer utterances are cut (a recogniser's search grows with the utterance).
    pub max_utterance_ms: u64,
    /// Extra decoder options as `-name value` pairs (`-beam 1e-60`...).
    pub args: Vec<(String, String)>,
    /// SphinxBase's log file; `None` silences it (it logs to stderr by default).
    pub log_file: Option<PathBuf>,
}

impl Default for PocketSphinxConfig {
    fn default() -> Self {
        PocketSphinxConfig {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            hmm: None,
            lm: None,
            dict: None,
            language: "en".into(),
            pad_ms: 200,
            max_utterance_ms: 30_000,
            args: Vec::new(),
            log_file: None,
        }
    }
}

impl PocketSphinxConfig {
    fn files(&self) -> [(&'static str, PathBuf); 3] {
        [
            (
                "-hmm",
                self.hmm
                    .clone()
                    .unwrap_or_else(|| self.model_dir.join("en-us")),
            ),
            (
                "-lm",
                self.lm
                    .clone()
                    .unwrap_or_else(|| self.model_dir.join("en-us.lm.bin")),
            ),
            (
                "-dict",
                self.dict
                    .clone()
                    .unwrap_or_else(|| self.model_dir.join("cmudict-en-us.dict")),
            ),
        ]
    }
}

/// Whether `asked` (a BCP 47 tag) is served by a model for `model` (its primary subtag
/// decides: `en-GB` is served by `en`, `de` is not).
pub(crate) fn same_language(asked: &str, model: &str) -> bool {
    let primary = |s: &str| {
        s.split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    !asked.is_empty() && primary(asked) == primary(model)
}

/// One loaded decoder. Its configuration strings live as long as it does (SphinxBase keeps
/// pointers into argv).
struct Decoder {
    ps: *mut ffi::Decoder,
    config: *mut ffi::CmdLn,
    _argv: Vec<CString>,
}

// SAFETY: a decoder has no thread affinity; it is only ever used by one thread at a time
// (taken out of the engine's mutex-guarded list for the duration of a call).
unsafe impl Send for Decoder {}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: both pointers came from ps_init / cmd_ln_parse_r and are freed once.
        unsafe {
            ffi::ps_free(self.ps);
            ffi::cmd_ln_free_r(self.config);
        }
    }
}

static LOGGING: Once = Once::new();

/// A recognised word: text, first and last frame (10 ms), posterior probability.
struct RawWord {
    text: String,
    first_frame: i32,
    last_frame: i32,
    probability: Option<f32>,
}

/// The recogniser's word, or `None` for fillers (`<s>`, `</s>`, `<sil>`, `[NOISE]`,
/// `++NOISE++`). Alternative pronunciations (`read(2)`) lose their number.
fn clean_word(w: &str) -> Option<&str> {
    if w.is_empty() || w.starts_with('<') || w.starts_with('[') || w.starts_with("++") {
        return None;
    }
    Some(match w.find('(') {
        Some(i) if w.ends_with(')') && i > 0 => &w[..i],
        _ => w,
    })
}

impl Decoder {
    fn new(config: &PocketSphinxConfig) -> Result<Decoder, TranscriptError> {
        LOGGING.call_once(|| {
            // SAFETY: NULL disables logging; no other thread is inside SphinxBase yet, as
            // every decoder is made after this.
            unsafe { ffi::err_set_logfp(std::ptr::null_mut()) };
        });
        let mut pairs: Vec<(String, String)> = config
            .files()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect();
        pairs.push(("-samprate".into(), "16000".into()));
        pairs.push(("-remove_silence".into(), "no".into()));
        if let Some(log) = &config.log_file {
            pairs.push(("-logfn".into(), log.display().to_string()));
        }
        pairs.extend(config.args.iter().cloned());
        let mut argv: Vec<CString> = vec![CString::new("tapir").expect("no NUL")];
        for (k, v) in pairs {
            let bad = |s: &str| TranscriptError::Config(format!("NUL byte in option {s:?}"));
            argv.push(CString::new(k.clone()).map_err(|_| bad(&k))?);
            argv.push(CString::new(v.clone()).map_err(|_| bad(&v))?);
        }
        let mut ptrs: Vec<*mut std::ffi::c_char> =
            argv.iter().map(|s| s.as_ptr().cast_mut()).collect();
        // SAFETY: argv points at NUL-terminated strings that outlive the config (kept in
        // the Decoder); ps_args() is the static definition table.
        let cfg = unsafe {
            ffi::cmd_ln_parse_r(
                std::ptr::null_mut(),
                ffi::ps_args(),
                ptrs.len() as i32,
                ptrs.as_mut_ptr(),
                1,
            )
        };
        if cfg.is_null() {
            return Err(TranscriptError::Config(
                "PocketSphinx refused its options (an unknown -name in args?)".into(),
            ));
        }
        // SAFETY: cfg is a valid config; ps_init retains it and returns NULL on failure.
        let ps = unsafe { ffi::ps_init(cfg) };
        if ps.is_null() {
            // SAFETY: cfg is ours to free when ps_init failed.
            unsafe { ffi::cmd_ln_free_r(cfg) };
            return Err(TranscriptError::Config(format!(
                "PocketSphinx could not load its model from {} (set a log file to see why)",
                config.model_dir.display()
            )));
        }
        Ok(Decoder {
            ps,
            config: cfg,
            _argv: argv,
        })
    }

    /// Decodes one utterance of 16 kHz audio, handed over whole (`full_utt`): the model's
    /// cepstral mean normalization is `batch`, which needs the whole utterance (fed in
    /// pieces, the first utterance of a decoder came out garbled and word frames counted on
    /// from the previous utterances). The deadline is checked before each utterance, so an
    /// attempt overruns it by one utterance's decoding at most (seconds).
    fn decode(
        &mut self,
        audio: &[i16],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<RawWord>, TranscriptError> {
        let fail = |what: &str| TranscriptError::Engine(format!("PocketSphinx {what} failed"));
        if Instant::now() >= deadline {
            return Err(TranscriptError::Timeout(timeout));
        }
        // SAFETY: self.ps is a live decoder used by this thread only; audio is a valid
        // slice of i16 for its length.
        unsafe {
            if ffi::ps_start_utt(self.ps) < 0 {
                return Err(fail("ps_start_utt"));
            }
            if ffi::ps_process_raw(self.ps, audio.as_ptr(), audio.len(), 0, 1) < 0 {
                ffi::ps_end_utt(self.ps);
                return Err(fail("ps_process_raw"));
            }
            if ffi::ps_end_utt(self.ps) < 0 {
                return Err(fail("ps_end_utt"));
            }
        }
        let mut words = Vec::new();
        // SAFETY: the iterator and the strings it yields belong to the decoder and stay
        // valid until the next call on it; each word is copied out before moving on, and
        // ps_seg_next frees the iterator when it returns NULL.
        unsafe {
            let lmath = ffi::ps_get_logmath(self.ps);
            let mut seg = ffi::ps_seg_iter(self.ps);
            while !seg.is_null() {
                let w = ffi::ps_seg_word(seg);
                if !w.is_null() {
                    let text = CStr::from_ptr(w).to_string_lossy();
                    if let Some(clean) = clean_word(&text) {
                        let (mut sf, mut ef) = (0, 0);
                        ffi::ps_seg_frames(seg, &mut sf, &mut ef);
                        let (mut ascr, mut lscr, mut lback) = (0, 0, 0);
                        let post = ffi::ps_seg_prob(seg, &mut ascr, &mut lscr, &mut lback);
                        let p = if lmath.is_null() {
                            f64::NAN
                        } else {
                            ffi::logmath_exp(lmath, post)
                        };
                        words.push(RawWord {
                            text: clean.to_lowercase(),
                            first_frame: sf,
                            last_frame: ef,
                            // exp of a log posterior: ≤ 1 but for rounding.
                            probability: p.is_finite().then(|| p.clamp(0.0, 1.0) as f32),
                        });
                    }
                }
                seg = ffi::ps_seg_next(seg);
            }
        }
        Ok(words)
    }
}

/// The offline engine (see the module docs).
#[derive(Debug)]
pub struct PocketSphinx {
    config: PocketSphinxConfig,
    decoders: Mutex<Vec<DecoderSlot>>,
}

/// A decoder at rest in the engine's list.
struct DecoderSlot(Decoder);

impl std::fmt::Debug for DecoderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl PocketSphinx {
    /// Checks the model files and loads a first decoder, so that a wrong path is an error at
    /// start naming it, not a failed job later.
    pub fn new(config: PocketSphinxConfig) -> Result<PocketSphinx, TranscriptError> {
        for (what, path) in config.files() {
            if !path.exists() {
                return Err(TranscriptError::Config(format!(
                    "PocketSphinx model file {what} {} is missing \
                     (apt-get install pocketsphinx-en-us, or set its path)",
                    path.display()
                )));
            }
        }
        let first = Decoder::new(&config)?;
        Ok(PocketSphinx {
            config,
            decoders: Mutex::new(vec![DecoderSlot(first)]),
        })
    }

    pub fn config(&self) -> &PocketSphinxConfig {
        &self.config
    }

    fn take_decoder(&self) -> Result<Decoder, TranscriptError> {
        let spare = self.decoders.lock().ok().and_then(|mut d| d.pop());
        match spare {
            Some(DecoderSlot(d)) => Ok(d),
            None => Decoder::new(&self.config),
        }
    }

    fn give_back(&self, d: Decoder) {
        if let Ok(mut list) = self.decoders.lock() {
            list.push(DecoderSlot(d));
        }
    }
}

/// Utterances (ms, end exclusive) from talk spans: each widened by `pad`, overlapping ones
/// merged, long ones cut into pieces of at most `max`, all clipped to `len`.
pub(crate) fn utterances(spans: &[(u64, u64)], pad: u64, max: u64, len: u64) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in spans {
        let (s, e) = (s.saturating_sub(pad), (e + pad).min(len));
        if e <= s {
            continue;
        }
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let max = max.max(1000);
    let mut out = Vec::with_capacity(merged.len());
    for (s, e) in merged {
        let mut t = s;
        while t < e {
            let end = (t + max).min(e);
            out.push((t, end));
            t = end;
        }
    }
    out
}

impl BlockingEngine for PocketSphinx {
    fn name(&self) -> &str {
        "pocketsphinx"
    }

    fn transcribe_blocking(
        &self,
        samples: &[i16],
        language: &str,
        deadline: Instant,
    ) -> Result<Vec<Phrase>, TranscriptError> {
        if !same_language(language, &self.config.language) {
            return Err(TranscriptError::Language(language.to_string()));
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let len_ms = samples.len() as u64 / 8;
        let spans = analysis::vad::talk_spans(samples);
        let cuts = utterances(
            &spans,
            self.config.pad_ms,
            self.config.max_utterance_ms,
            len_ms,
        );
        let mut decoder = self.take_decoder()?;
        let mut phrases = Vec::with_capacity(cuts.len());
        let mut result = Ok(());
        for (start_ms, end_ms) in cuts {
            let slice =
                &samples[(start_ms * 8) as usize..((end_ms * 8) as usize).min(samples.len())];
            let audio = upsample_2x(slice);
            let words = match decoder.decode(&audio, deadline, timeout) {
                Ok(w) => w,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let words: Vec<Word> = words
                .into_iter()
                .map(|w| Word {
                    start_ms: start_ms + w.first_frame.max(0) as u64 * 10,
                    end_ms: (start_ms + (w.last_frame.max(0) as u64 + 1) * 10).min(end_ms),
                    text: w.text,
                    confidence: w.probability,
                })
                .collect();
            let (Some(first), Some(last)) = (words.first(), words.last()) else {
                continue;
            };
            phrases.push(Phrase {
                start_ms: first.start_ms,
                end_ms: last.end_ms,
                text: words
                    .iter()
                    .map(|w| w.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                words,
            });
        }
        // A decoder that timed out ended its utterance and is reusable.
        self.give_back(decoder);
        result.map(|()| phrases)
    }
}

/// The model directory if Debian's package is installed there.
pub fn installed_model() -> Option<&'static Path> {
    let p = Path::new(DEFAULT_MODEL_DIR);
    p.join("en-us.lm.bin").exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_dropped_and_alternates_lose_their_number() {
        assert_eq!(clean_word("<s>"), None);
        assert_eq!(clean_word("</s>"), None);
        assert_eq!(clean_word("<sil>"), None);
        assert_eq!(clean_word("[NOISE]"), None);
        assert_eq!(clean_word("++UH++"), None);
        assert_eq!(clean_word("read(2)"), Some("read"));
        assert_eq!(clean_word("order"), Some("order"));
        assert_eq!(clean_word("(x)"), Some("(x)"));
    }

    #[test]
    fn languages_match_on_their_primary_subtag() {
        assert!(same_language("en", "en"));
        assert!(same_language("en-US", "en"));
        assert!(same_language("EN_gb", "en-us"));
        assert!(!same_language("de", "en"));
        assert!(!same_language("", "en"));
    }

    #[test]
    fn utterances_are_padded_merged_and_cut() {
        assert_eq!(
            utterances(
                &[(1000, 2000), (2300, 3000), (9000, 9500)],
                200,
                30_000,
                9600
            ),
            vec![(800, 3200), (8800, 9600)]
        );
        assert_eq!(
            utterances(&[(100, 200)], 200, 30_000, 10_000),
            vec![(0, 400)]
        );
        assert_eq!(
            utterances(&[(0, 65_000)], 0, 30_000, 70_000),
            vec![(0, 30_000), (30_000, 60_000), (60_000, 65_000)]
        );
        assert!(utterances(&[], 200, 30_000, 0).is_empty());
    }

    #[test]
    fn a_missing_model_is_a_config_error_naming_the_path() {
        let err = PocketSphinx::new(PocketSphinxConfig {
            model_dir: "/nonexistent/model".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, TranscriptError::Config(m) if m.contains("/nonexistent/model")),
            "{err}"
        );
    }
}
