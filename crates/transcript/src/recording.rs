//! A whole recording: both channels transcribed, phrases labelled by speaker, scored, and the
//! talking speed of each party.
//!
//! # Talking speed
//! Words per minute of a speaker = the words of their phrases / their speaking time, where
//! the speaking time is the union of their phrases' spans (so pauses between phrases do not
//! count, and overlapping phrases are not counted twice). A phrase without word timings
//! counts the whitespace-separated tokens of its text. `None` when the speaker never spoke.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sentiment::{Label, Scorer, Sentiment};
use crate::{Engine, Phrase, Request, Speaker, TranscriptError, Word};

/// Whether a BCP 47 tag is English.
pub(crate) fn is_english(language: &str) -> bool {
    language
        .split(['-', '_'])
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("en"))
}

/// A phrase of the transcript: who said it, when, and how it sounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptPhrase {
    pub speaker: Speaker,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    #[serde(default)]
    pub words: Vec<Word>,
    /// Set by [`Transcript::score`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<Sentiment>,
}

impl TranscriptPhrase {
    fn word_count(&self) -> usize {
        if self.words.is_empty() {
            self.text.split_whitespace().count()
        } else {
            self.words.len()
        }
    }
}

/// The transcript of one recording, phrases of both speakers ordered by start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The engine that made it ([`Engine::name`]).
    pub engine: String,
    pub language: String,
    /// Length of the recording's audio.
    pub duration_ms: u64,
    pub phrases: Vec<TranscriptPhrase>,
}

impl Transcript {
    /// Labels each channel's phrases with its speaker and merges them by start time. Phrases
    /// without text are dropped; times are clipped to the recording and made ordered.
    pub fn from_channels(
        engine: &str,
        language: &str,
        duration_ms: u64,
        customer: Vec<Phrase>,
        agent: Vec<Phrase>,
    ) -> Transcript {
        let label = |speaker: Speaker, phrases: Vec<Phrase>| {
            phrases.into_iter().filter_map(move |p| {
                let text = p.text.trim().to_string();
                if text.is_empty() {
                    return None;
                }
                let start_ms = p.start_ms.min(duration_ms);
                let end_ms = p.end_ms.clamp(start_ms, duration_ms);
                let words = p
                    .words
                    .into_iter()
                    .filter(|w| !w.text.trim().is_empty())
                    .map(|w| {
                        let s = w.start_ms.min(duration_ms);
                        Word {
                            start_ms: s,
                            end_ms: w.end_ms.clamp(s, duration_ms),
                            text: w.text.trim().to_string(),
                            confidence: w.confidence.filter(|c| (0.0..=1.0).contains(c)),
                        }
                    })
                    .collect();
                Some(TranscriptPhrase {
                    speaker,
                    start_ms,
                    end_ms,
                    text,
                    words,
                    sentiment: None,
                })
            })
        };
        let mut phrases: Vec<TranscriptPhrase> = label(Speaker::Customer, customer)
            .chain(label(Speaker::Agent, agent))
            .collect();
        phrases.sort_by_key(|p| (p.start_ms, p.speaker == Speaker::Agent, p.end_ms));
        Transcript {
            engine: engine.to_string(),
            language: language.to_string(),
            duration_ms,
            phrases,
        }
    }

    /// Scores every phrase (see [`crate::sentiment`]); phrases in a language the scorer does
    /// not know stay unscored.
    pub fn score(&mut self, scorer: &dyn Scorer) {
        for p in &mut self.phrases {
            p.sentiment = scorer.score(&p.text, &self.language).map(Sentiment::of);
        }
    }

    /// The mean score of the scored phrases; `None` when none is scored.
    pub fn sentiment_average(&self) -> Option<f64> {
        let scores: Vec<f64> = self
            .phrases
            .iter()
            .filter_map(|p| p.sentiment.map(|s| s.score))
            .collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    }

    /// [`Transcript::sentiment_average`] as a label.
    pub fn sentiment_label(&self) -> Option<Label> {
        self.sentiment_average().map(Label::of)
    }

    /// Words spoken by `speaker`.
    pub fn words(&self, speaker: Speaker) -> usize {
        self.phrases
            .iter()
            .filter(|p| p.speaker == speaker)
            .map(TranscriptPhrase::word_count)
            .sum()
    }

    /// The union of `speaker`'s phrase spans.
    pub fn speaking_ms(&self, speaker: Speaker) -> u64 {
        let mut spans: Vec<(u64, u64)> = self
            .phrases
            .iter()
            .filter(|p| p.speaker == speaker)
            .map(|p| (p.start_ms, p.end_ms))
            .collect();
        spans.sort_unstable();
        let mut total = 0;
        let mut open: Option<(u64, u64)> = None;
        for (s, e) in spans {
            match &mut open {
                Some((_, oe)) if s <= *oe => *oe = (*oe).max(e),
                _ => {
                    if let Some((os, oe)) = open {
                        total += oe - os;
                    }
                    open = Some((s, e));
                }
            }
        }
        if let Some((os, oe)) = open {
            total += oe - os;
        }
        total
    }

    /// Talking speed (see the module docs).
    pub fn words_per_minute(&self, speaker: Speaker) -> Option<f64> {
        let ms = self.speaking_ms(speaker);
        (ms > 0).then(|| self.words(speaker) as f64 * 60_000.0 / ms as f64)
    }
}

/// Transcribes a recording (WAV or MP3, stereo 8 kHz): each channel goes to `engine` on its
/// own, the customer's first, within `timeout` for the whole recording.
pub async fn transcribe_recording(
    path: impl AsRef<Path>,
    engine: &dyn Engine,
    language: &str,
    timeout: Duration,
) -> Result<Transcript, TranscriptError> {
    let path = path.as_ref().to_owned();
    let deadline = Instant::now() + timeout;
    // Decoding reads the whole file: off the async workers.
    let channels = tokio::task::spawn_blocking(move || analysis::read_channels(&path))
        .await
        .map_err(|e| TranscriptError::Audio(format!("decoder task: {e}")))??;
    let duration_ms = channels.customer.len() as u64 / 8;
    let mut out = Vec::with_capacity(2);
    for samples in [channels.customer, channels.agent] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TranscriptError::Timeout(timeout));
        }
        let request = Request {
            samples: Arc::from(samples),
            language: language.to_string(),
            timeout: left,
        };
        out.push(engine.transcribe(request).await?);
    }
    let agent = out.pop().unwrap_or_default();
    let customer = out.pop().unwrap_or_default();
    Ok(Transcript::from_channels(
        engine.name(),
        language,
        duration_ms,
        customer,
        agent,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vader;

    fn phrase(start_ms: u64, end_ms: u64, text: &str) -> Phrase {
        Phrase {
            start_ms,
            end_ms,
            text: text.into(),
            words: Vec::new(),
        }
    }

    #[test]
    fn phrases_are_labelled_by_channel_and_ordered() {
        let t = Transcript::from_channels(
            "test",
            "en",
            10_000,
            vec![phrase(3000, 4000, "second"), phrase(500, 900, "  ")],
            vec![phrase(1000, 2000, "first"), phrase(9000, 12_000, "late")],
        );
        let got: Vec<(Speaker, &str, u64)> = t
            .phrases
            .iter()
            .map(|p| (p.speaker, p.text.as_str(), p.end_ms))
            .collect();
        assert_eq!(
            got,
            [
                (Speaker::Agent, "first", 2000),
                (Speaker::Customer, "second", 4000),
                (Speaker::Agent, "late", 10_000),
            ]
        );
    }

    #[test]
    fn words_per_minute_count_speaking_time_only() {
        let mut p = phrase(0, 30_000, "ignored when words exist");
        p.words = (0..50)
            .map(|i| Word {
                start_ms: i * 600,
                end_ms: i * 600 + 500,
                text: "w".into(),
                confidence: None,
            })
            .collect();
        let t = Transcript::from_channels(
            "test",
            "en",
            120_000,
            vec![p, phrase(60_000, 90_000, "a b c d e f g h i j")],
            vec![
                phrase(0, 6000, "one two"),
                phrase(3000, 12_000, "three four five six"),
            ],
        );
        // Customer: 60 words over 60 s of phrases (30 s of pause between them do not count).
        assert_eq!(t.words(Speaker::Customer), 60);
        assert_eq!(t.speaking_ms(Speaker::Customer), 60_000);
        assert_eq!(t.words_per_minute(Speaker::Customer), Some(60.0));
        // Agent: overlapping phrases count once: 6 words over 12 s.
        assert_eq!(t.speaking_ms(Speaker::Agent), 12_000);
        assert_eq!(t.words_per_minute(Speaker::Agent), Some(30.0));
        let silent = Transcript::from_channels("t", "en", 1000, vec![], vec![]);
        assert_eq!(silent.words_per_minute(Speaker::Agent), None);
    }

    #[test]
    fn a_call_is_scored_per_phrase_and_on_average() {
        let mut t = Transcript::from_channels(
            "test",
            "en",
            10_000,
            vec![phrase(0, 1000, "this is terrible and I am very angry")],
            vec![phrase(
                2000,
                3000,
                "I am so sorry, thank you for your patience, great",
            )],
        );
        t.score(&Vader::default());
        let labels: Vec<Label> = t
            .phrases
            .iter()
            .map(|p| p.sentiment.unwrap().label)
            .collect();
        assert_eq!(labels, [Label::Negative, Label::Positive]);
        let avg = t.sentiment_average().unwrap();
        let want =
            (t.phrases[0].sentiment.unwrap().score + t.phrases[1].sentiment.unwrap().score) / 2.0;
        assert!((avg - want).abs() < 1e-12);
        let mut german =
            Transcript::from_channels("t", "de", 1000, vec![phrase(0, 1, "gut")], vec![]);
        german.score(&Vader::default());
        assert_eq!(german.phrases[0].sentiment, None);
        assert_eq!(german.sentiment_average(), None);
    }
}
