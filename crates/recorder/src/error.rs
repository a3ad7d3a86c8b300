//! The recorder's error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while writing, finishing or repairing a recording. Bad RTP is
/// never an error: it is counted in [`crate::ChannelStats`] and dropped.
#[derive(Debug, Error)]
pub enum RecorderError {
    /// Creating, writing, flushing or repairing a file failed (disk full, unwritable
    /// directory, file removed under us…). The caller stops this recording; the call goes on.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The MP3 encoder could not be set up or refused input.
    #[error("mp3 encoder: {0}")]
    Mp3(String),
    /// A WAV file cannot describe more than 4 GiB of samples (about 37 hours at 8 kHz stereo).
    #[error("WAV file would exceed 4 GiB")]
    WavTooLong,
    /// The sink already failed once; it accepts no more audio.
    #[error("sink failed earlier and is closed")]
    SinkClosed,
    /// A metadata sidecar could not be encoded or decoded.
    #[error("metadata {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A file in the spool is not a WAV this recorder can repair.
    #[error("{path} is not a repairable WAV file: {reason}")]
    NotWav { path: PathBuf, reason: &'static str },
}

impl RecorderError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecorderError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
