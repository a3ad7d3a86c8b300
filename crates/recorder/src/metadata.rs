//! The JSON sidecar written next to every recording.
//!
//! The driver writes it when the recording starts (`complete: false`, so a file interrupted by
//! a crash still has its call facts) and again at the end (`complete: true`). [`crate::repair_spool`]
//! completes the sidecars of interrupted files. Writes go to a temporary file renamed over
//! the sidecar, so a crash never leaves half a JSON document.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RecorderError;
use crate::recording::{Channel, Recording, Segment};
use crate::sink::Format;
use crate::timeline::ChannelStats;

/// Everything known about one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordingMetadata {
    pub contact_id: String,
    /// Call-ID of the customer leg.
    pub call_id_customer: Option<String>,
    /// Call-ID of the agent leg.
    pub call_id_agent: Option<String>,
    pub from: String,
    pub to: String,
    pub route: String,
    pub direction: String,
    /// The agent-side SIP account the policy used (the registered account, not a Contact).
    pub station: Option<String>,
    /// Agent, team, queue and skill as the flow named them (`X-Tapir-*` headers). (`agent`
    /// names the agent channel's packet counters.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// Whether anything of the contact was recorded, and by which rule or why not.
    pub recorded: Option<bool>,
    pub decision: Option<String>,
    /// Wall-clock start of the call (unix milliseconds), supplied by the driver.
    pub start_unix_ms: u64,
    /// Wall-clock end: start plus the call time covered, once known.
    pub end_unix_ms: Option<u64>,
    /// Length of the audio file in milliseconds (recorded segments only).
    pub duration_ms: u64,
    /// Length of the call covered so far in milliseconds (including stopped spans).
    pub call_duration_ms: u64,
    pub format: Format,
    pub codecs_customer: Vec<String>,
    pub codecs_agent: Vec<String>,
    pub segments: Vec<Segment>,
    pub customer: ChannelStats,
    pub agent: ChannelStats,
    /// Datagrams the tap queue dropped before they reached the recorder.
    pub tap_drops: u64,
    /// Some audio was recorded as silence because its codec is not supported.
    pub unsupported_codec: bool,
    /// Written at the normal end of the recording.
    pub complete: bool,
    /// The recording ended without being finished (crash, kill, power loss).
    pub interrupted: bool,
    /// The file's header was rebuilt by [`crate::repair_spool`].
    pub repaired: bool,
    /// Why the recording stopped early, if it did (e.g. a write error).
    pub error: Option<String>,
    /// For a recorded statement: its id (the contact id names the call it belongs to).
    pub statement_id: Option<String>,
    /// The policy engine's decision log for the call: which rule fired and why.
    pub decisions: Option<serde_json::Value>,
    /// Conversation metrics computed when the recording was finished (talk time per channel,
    /// talk-to-listen ratio, pauses, overtalk, monologues, silences; see the `analysis`
    /// crate). Its waveform peaks are in `<name>.peaks.json` beside the audio.
    pub metrics: Option<serde_json::Value>,
    /// `"not recorded"` when the call's media was encrypted with keys tapir does not have
    /// (DTLS-SRTP, ZRTP, an unknown SRTP suite) and was relayed without being recorded.
    pub encrypted: Option<String>,
    /// Why it could not be decrypted.
    pub encrypted_reason: Option<String>,
    /// The node that recorded the call (absent in sidecars written before it was added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Wall-clock answer of the call (unix milliseconds), when the driver knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_unix_ms: Option<u64>,
    /// The customer's number, when the driver knows which side is the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_number: Option<String>,
    /// Days the recording is kept, from its route or record policy; absent keeps it until
    /// deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<i32>,
}

impl RecordingMetadata {
    /// Copies the recording's state (segments, counters, codecs, durations) into the
    /// metadata. `end_unix_ms` is derived from `start_unix_ms` and the call time covered.
    pub fn update_from(&mut self, recording: &Recording) {
        self.segments = recording.segments().to_vec();
        self.customer = recording.stats(Channel::Customer);
        self.agent = recording.stats(Channel::Agent);
        self.codecs_customer = recording.codecs_seen(Channel::Customer);
        self.codecs_agent = recording.codecs_seen(Channel::Agent);
        self.tap_drops = recording.tap_drops();
        self.unsupported_codec =
            self.customer.unsupported_codec > 0 || self.agent.unsupported_codec > 0;
        self.duration_ms = recording.frames() * 1000 / u64::from(crate::SAMPLE_RATE);
        self.call_duration_ms = recording.call_elapsed_ms();
        self.end_unix_ms = Some(self.start_unix_ms + self.call_duration_ms);
    }

    /// Writes the sidecar atomically (temporary file, then rename).
    pub fn write_to(&self, path: &Path) -> Result<(), RecorderError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| RecorderError::Metadata {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.flush()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| RecorderError::io("write metadata", path, e))
    }

    /// Reads a sidecar.
    pub fn read_from(path: &Path) -> Result<Self, RecorderError> {
        let bytes = fs::read(path).map_err(|e| RecorderError::io("read metadata", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| RecorderError::Metadata {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

/// The sidecar path of an audio file: same name, `.json` extension.
pub fn sidecar_path(audio: &Path) -> PathBuf {
    audio.with_extension("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_facts_are_optional_both_ways() {
        // A sidecar written before the search facts existed still reads.
        let old = r#"{"contact_id":"c1","from":"a","to":"b","complete":true}"#;
        let m: RecordingMetadata = serde_json::from_str(old).unwrap();
        assert_eq!((m.agent_id.as_deref(), m.node.as_deref()), (None, None));
        // Absent facts are not written, so older readers see the document they know.
        let json = serde_json::to_string(&m).unwrap();
        for k in [
            "agent_id",
            "team",
            "queue",
            "skill",
            "node",
            "answer_unix_ms",
            "customer_number",
        ] {
            assert!(!json.contains(k), "{k} in {json}");
        }
        let m = RecordingMetadata {
            agent_id: Some("anna".into()),
            queue: Some("complaints".into()),
            ..m
        };
        let back: RecordingMetadata =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
