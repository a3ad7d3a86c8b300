use std::time::Duration;

/// Why a channel or a recording could not be transcribed.
///
/// Every variant is a reason a job is marked failed with (after its retries); none of them
/// is a panic, whatever an engine answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranscriptError {
    /// The engine did not answer within the time allowed.
    #[error("the engine did not answer within {0:?}")]
    Timeout(Duration),
    /// The engine answered something that is not a transcript (not JSON, wrong shape, times
    /// that do not fit the audio...).
    #[error("the engine answered garbage: {0}")]
    Garbage(String),
    /// The engine answered text without timing: a transcript that cannot follow playback.
    #[error("the engine answered text without timing")]
    NoTiming,
    /// The engine failed (refused the request, crashed, could not load its model...).
    #[error("engine: {0}")]
    Engine(String),
    /// The engine has no model for this language.
    #[error("no model for language {0:?}")]
    Language(String),
    /// The recording could not be read.
    #[error("reading the recording: {0}")]
    Audio(String),
    /// The engine's configuration is unusable.
    #[error("transcription config: {0}")]
    Config(String),
}

impl From<analysis::AnalysisError> for TranscriptError {
    fn from(e: analysis::AnalysisError) -> Self {
        TranscriptError::Audio(e.to_string())
    }
}
