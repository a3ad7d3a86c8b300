//! Recording settings and the bridge from the relay's tap to the recorder.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Wav,
    Mp3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Record every call (until the policy engine decides per call).
    #[serde(default)]
    pub enabled: bool,
    /// Where recordings are written while in progress and kept when done.
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    #[serde(default)]
    pub format: Format,
}

fn default_spool() -> PathBuf {
    PathBuf::from("spool")
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            spool_dir: default_spool(),
            format: Format::Wav,
        }
    }
}

impl RecordingConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled && self.spool_dir.as_os_str().is_empty() {
            bail!("recording.spool_dir is empty");
        }
        Ok(())
    }
}
