//! Transcripts of tapir's dual-channel recordings (customer on channel 1, agent on channel 2,
//! 8 kHz 16-bit): each channel is transcribed on its own into time-aligned phrases, so every
//! phrase carries its speaker exactly, without diarization.
//!
//! ## Layout
//! * [`engine`]: the [`Engine`] interface (one channel in, [`Phrase`]s out), the blocking
//!   form [`BlockingEngine`] and the idle-priority [`WorkerPool`] that runs it, the `none`
//!   engine.
//! * [`pocketsphinx`] (feature `pocketsphinx`, default): the offline engine.
//! * [`http`]: an OpenAI-compatible `POST /v1/audio/transcriptions` client (faster-whisper,
//!   whisper.cpp, vLLM... servers).
//! * [`recording`]: [`transcribe_recording`] splits a WAV/MP3 into its channels, runs the
//!   engine on each and labels the phrases; [`Transcript`] also gives talking speed.
//! * [`sentiment`]: the pluggable [`Scorer`] with the lexicon-based [`Vader`] default.
//! * [`jobs`]: the sans-IO [`Jobs`] state machine that schedules one job per recording with
//!   bounded retries, a concurrency limit, a per-job timeout and resumption after a restart.
//! * [`selection`]: which calls are transcribed, and in which language, per route and
//!   record policy.
//! * [`worker`]: the async driver of [`Jobs`] over a [`JobHost`], reporting to an
//!   [`Observer`] (the node's metrics).
//! * [`catalog`]: the node's [`JobHost`], [`CatalogHost`], over its catalog and storage, and
//!   the selection of a stored recording by its catalog entry.
//! * [`config`]: the node's `[transcripts]` section, checked, and the engine it names.
//! * [`view`]: what the recordings API answers: the transcript's JSON and its standalone
//!   HTML document.
//! * [`resample`]: the 8 → 16 kHz upsampler.

pub mod catalog;
pub mod config;
pub mod engine;
mod error;
pub mod http;
pub mod jobs;
#[cfg(feature = "pocketsphinx")]
pub mod pocketsphinx;
pub mod recording;
pub mod resample;
pub mod selection;
pub mod sentiment;
pub mod view;
pub mod worker;

use serde::{Deserialize, Serialize};

pub use analysis::Speaker;
pub use catalog::CatalogHost;
pub use config::{EngineKind, TranscriptsConfig};
pub use engine::{BlockingEngine, BoxFuture, Engine, NoEngine, Priority, Request, WorkerPool};
pub use error::TranscriptError;
pub use jobs::Counts;
pub use jobs::{Job, JobState, Jobs, JobsConfig, Poll, Start};
pub use recording::{transcribe_recording, Transcript, TranscriptPhrase};
pub use selection::Selection;
pub use sentiment::{Label, Scorer, Sentiment, Vader};
pub use view::TranscriptView;
pub use worker::{AttemptReport, AudioFile, JobHost, NoObserver, Observer, Outcome, Worker};

/// One recognised word. Times are milliseconds from the start of the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    /// The engine's confidence (0–1), when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

/// A phrase of one channel: a stretch of speech between pauses, with its words where the
/// engine gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phrase {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    #[serde(default)]
    pub words: Vec<Word>,
}
