//! Sentiment of phrases and calls, from a pluggable [`Scorer`].
//!
//! The default, [`Vader`], is VADER (Hutto & Gilbert, ICWSM 2014), a lexicon- and rule-based
//! scorer for English: about 7,500 words and emoticons rated by people, with rules for
//! negation ("not good"), boosters ("very"), "but" and capitals. It needs no model, runs in
//! microseconds per phrase and is robust to the lower-case, unpunctuated text recognisers
//! produce. It comes from the `vader-sentimental` crate (MIT), which carries VADER's lexicon.
//!
//! # Labels
//! VADER's compound score lies in −1..=1. As its authors recommend, a phrase is
//! [`Label::Positive`] at or above [`POSITIVE_THRESHOLD`] (+0.05), [`Label::Negative`] at or
//! below [`NEGATIVE_THRESHOLD`] (−0.05), and [`Label::Neutral`] in between. A call's
//! sentiment is the mean compound of its scored phrases ([`crate::Transcript::sentiment_average`]),
//! labelled with the same thresholds.

use serde::{Deserialize, Serialize};
use vader_sentimental::SentimentIntensityAnalyzer;

/// At or above: positive.
pub const POSITIVE_THRESHOLD: f64 = 0.05;
/// At or below: negative.
pub const NEGATIVE_THRESHOLD: f64 = -0.05;

/// A sentiment class, as the page colours it (green, red, grey).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Positive,
    Negative,
    Neutral,
}

impl Label {
    pub fn of(score: f64) -> Label {
        if score >= POSITIVE_THRESHOLD {
            Label::Positive
        } else if score <= NEGATIVE_THRESHOLD {
            Label::Negative
        } else {
            Label::Neutral
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Positive => "positive",
            Label::Negative => "negative",
            Label::Neutral => "neutral",
        }
    }
}

/// A score in −1..=1 and its label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub score: f64,
    pub label: Label,
}

impl Sentiment {
    /// The sentiment of a score; out-of-range or NaN scores are clamped to the range (NaN to
    /// neutral 0).
    pub fn of(score: f64) -> Sentiment {
        let score = if score.is_nan() {
            0.0
        } else {
            score.clamp(-1.0, 1.0)
        };
        Sentiment {
            score,
            label: Label::of(score),
        }
    }
}

/// Scores the sentiment of a phrase.
pub trait Scorer: Send + Sync + std::fmt::Debug {
    /// Stored with the transcript (`vader`...).
    fn name(&self) -> &str;

    /// The phrase's score in −1..=1, or `None` when the scorer does not know the language.
    fn score(&self, text: &str, language: &str) -> Option<f64>;
}

/// VADER for English (see the module docs).
#[derive(Debug, Clone)]
pub struct Vader {
    analyzer: SentimentIntensityAnalyzer<'static>,
}

impl Default for Vader {
    fn default() -> Self {
        Vader {
            analyzer: SentimentIntensityAnalyzer::new(),
        }
    }
}

impl Scorer for Vader {
    fn name(&self) -> &str {
        "vader"
    }

    fn score(&self, text: &str, language: &str) -> Option<f64> {
        if !crate::recording::is_english(language) {
            return None;
        }
        if text.trim().is_empty() {
            return Some(0.0);
        }
        Some(self.analyzer.polarity_scores(text).compound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clearly_positive_and_negative_sentences() {
        let v = Vader::default();
        for text in [
            "thank you so much you have been very helpful",
            "that is great I am really happy with the service",
            "wonderful thanks a lot",
        ] {
            let s = v.score(text, "en").unwrap();
            assert_eq!(Label::of(s), Label::Positive, "{text}: {s}");
        }
        for text in [
            "this is terrible I am very angry",
            "your service is awful and I hate waiting",
            "that is not good at all it is a horrible mess",
        ] {
            let s = v.score(text, "en-US").unwrap();
            assert_eq!(Label::of(s), Label::Negative, "{text}: {s}");
        }
        let s = v
            .score("i am calling about the invoice from last month", "en")
            .unwrap();
        assert_eq!(Label::of(s), Label::Neutral, "{s}");
        assert_eq!(v.score("", "en"), Some(0.0));
        assert_eq!(v.score("das ist gut", "de"), None);
    }

    #[test]
    fn thresholds_are_inclusive_and_scores_are_clamped() {
        assert_eq!(Label::of(0.05), Label::Positive);
        assert_eq!(Label::of(0.0499), Label::Neutral);
        assert_eq!(Label::of(-0.05), Label::Negative);
        assert_eq!(Sentiment::of(f64::NAN).score, 0.0);
        assert_eq!(Sentiment::of(7.0).score, 1.0);
        assert_eq!(Sentiment::of(-7.0).label, Label::Negative);
    }

    proptest! {
        /// Whatever an engine sends, scoring never panics and stays in range.
        #[test]
        fn any_text_scores_in_range(text in "\\PC{0,200}") {
            if let Some(s) = Vader::default().score(&text, "en") {
                prop_assert!((-1.0..=1.0).contains(&s), "{s}");
            }
        }
    }
}
