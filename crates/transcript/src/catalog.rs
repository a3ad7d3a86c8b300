//! The node's [`JobHost`]: job rows in the catalog (`store::transcripts`, the journal a
//! restarting node resumes from), the recording's audio fetched from storage (local or S3)
//! into a temporary file for the length of a job, and finished transcripts stored with their
//! summary (average sentiment, words per minute of each speaker).
//!
//! Also the mapping between the scheduler's [`Job`] and the catalog's row, both ways, and
//! the selection of a stored recording ([`decide`]), which reads the route and the record
//! policies from its catalog entry.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use store::{Catalog, Entry, PhraseRow, Storage, StoredTranscript, TranscriptJob};
use tokio::io::AsyncWriteExt;

use crate::engine::BoxFuture;
use crate::jobs::{Job, JobState};
use crate::recording::Transcript;
use crate::selection::Selection;
use crate::worker::{AudioFile, JobHost};
use crate::Speaker;

/// `customer` or `agent`, as the catalog stores a speaker.
pub fn speaker_name(s: Speaker) -> &'static str {
    match s {
        Speaker::Customer => "customer",
        Speaker::Agent => "agent",
    }
}

/// The catalog's row of a job, run by `node` with `engine`.
pub fn to_row(job: &Job, node: &str, engine: &str) -> TranscriptJob {
    TranscriptJob {
        contact_id: job.contact_id.clone(),
        node: node.to_string(),
        state: job.state.as_str().to_string(),
        attempts: i32::try_from(job.attempts).unwrap_or(i32::MAX),
        next_at_ms: job.next_at_ms,
        error: job.error.clone(),
        engine: engine.to_string(),
        language: job.language.clone(),
        updated_ms: job.updated_ms,
    }
}

/// The job of a catalog row; `None` for a row whose state this version does not know.
pub fn from_row(row: TranscriptJob) -> Option<Job> {
    Some(Job {
        state: JobState::parse(&row.state)?,
        contact_id: row.contact_id,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        next_at_ms: row.next_at_ms,
        error: row.error,
        language: row.language,
        updated_ms: row.updated_ms,
    })
}

/// A scored transcript as the catalog stores it.
pub fn to_stored(contact_id: &str, t: &Transcript, now_ms: i64) -> StoredTranscript {
    StoredTranscript {
        summary: store::TranscriptSummary {
            contact_id: contact_id.to_string(),
            engine: t.engine.clone(),
            language: t.language.clone(),
            phrase_count: i32::try_from(t.phrases.len()).unwrap_or(i32::MAX),
            sentiment_avg: t.sentiment_average(),
            customer_wpm: t.words_per_minute(Speaker::Customer),
            agent_wpm: t.words_per_minute(Speaker::Agent),
            created_ms: now_ms,
        },
        phrases: t
            .phrases
            .iter()
            .map(|p| PhraseRow {
                speaker: speaker_name(p.speaker).into(),
                start_ms: i64::try_from(p.start_ms).unwrap_or(i64::MAX),
                end_ms: i64::try_from(p.end_ms).unwrap_or(i64::MAX),
                text: p.text.clone(),
                sentiment: p.sentiment.map(|s| s.score),
                words: serde_json::to_value(&p.words).unwrap_or_default(),
            })
            .collect(),
    }
}

/// Whether and in which language a stored recording is transcribed: by its route and the
/// record policies its decision log names (see [`Selection::decide_for`]).
pub fn decide(selection: &Selection, entry: &Entry) -> Option<String> {
    let policies = entry
        .decisions
        .as_ref()
        .map(store::model::record_policy_names)
        .unwrap_or_default();
    selection.decide_for(&entry.route, &policies)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The node's glue between the job driver and its catalog and storage.
#[derive(Debug, Clone)]
pub struct CatalogHost {
    catalog: Catalog,
    storage: Storage,
    node: String,
    engine: String,
    /// Where a recording's audio is copied for the length of its job.
    tmp_dir: PathBuf,
}

impl CatalogHost {
    /// `node` is this node's catalog name (it resumes its own jobs), `engine` the name stored
    /// with each job row.
    pub fn new(catalog: Catalog, storage: Storage, node: &str, engine: &str) -> CatalogHost {
        CatalogHost {
            catalog,
            storage,
            node: node.to_string(),
            engine: engine.to_string(),
            tmp_dir: std::env::temp_dir(),
        }
    }

    /// Copies audio under `dir` instead of the system's temporary directory.
    pub fn with_tmp_dir(mut self, dir: PathBuf) -> CatalogHost {
        self.tmp_dir = dir;
        self
    }

    /// This node's active jobs, as persisted: what [`crate::Worker::resume`] takes up.
    pub async fn active_jobs(&self) -> Result<Vec<Job>, store::StoreError> {
        Ok(self
            .catalog
            .active_transcript_jobs(&self.node)
            .await?
            .into_iter()
            .filter_map(from_row)
            .collect())
    }

    async fn fetch(&self, contact_id: &str) -> Result<AudioFile, String> {
        let entry = self
            .catalog
            .get(contact_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the recording is not in the catalog")?;
        if entry.deleted_at_ms.is_some() {
            return Err("the recording was deleted".into());
        }
        let key = entry.storage_key.ok_or("the recording is not in storage")?;
        let ext = if entry.format.eq_ignore_ascii_case("mp3") {
            ".mp3"
        } else {
            ".wav"
        };
        let tmp = tempfile::Builder::new()
            .prefix("tapir-transcribe-")
            .suffix(ext)
            .tempfile_in(&self.tmp_dir)
            .map_err(|e| format!("temporary file in {}: {e}", self.tmp_dir.display()))?;
        let mut read = self
            .storage
            .read(&key, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .await
            .map_err(|e| format!("temporary file: {e}"))?;
        // Streamed: an hour of stereo WAV is 115 MB, never held in memory whole.
        while let Some(chunk) = read.stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("temporary file: {e}"))?;
        }
        out.flush()
            .await
            .map_err(|e| format!("temporary file: {e}"))?;
        Ok(AudioFile {
            path: tmp.path().to_owned(),
            guard: Some(Box::new(tmp)),
        })
    }
}

impl JobHost for CatalogHost {
    fn create(&self, job: &Job) -> BoxFuture<'_, Result<bool, String>> {
        let row = to_row(job, &self.node, &self.engine);
        Box::pin(async move {
            self.catalog
                .insert_transcript_job(&row)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn save(&self, job: &Job) -> BoxFuture<'_, Result<(), String>> {
        let row = to_row(job, &self.node, &self.engine);
        Box::pin(async move {
            self.catalog
                .save_transcript_job(&row)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn audio<'a>(&'a self, contact_id: &'a str) -> BoxFuture<'a, Result<AudioFile, String>> {
        Box::pin(self.fetch(contact_id))
    }

    fn store<'a>(&'a self, id: &'a str, t: &'a Transcript) -> BoxFuture<'a, Result<(), String>> {
        let stored = to_stored(id, t, self.now_ms());
        Box::pin(async move {
            self.catalog
                .store_transcript(&stored)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn now_ms(&self) -> i64 {
        unix_ms()
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.catalog
                .node_seen(&self.node, unix_ms())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn orphans(&self, seen_before_ms: i64) -> BoxFuture<'_, Result<Vec<Job>, String>> {
        Box::pin(async move {
            let rows = self
                .catalog
                .adopt_transcript_jobs(&self.node, seen_before_ms, unix_ms(), ADOPT_MAX)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows.into_iter().filter_map(from_row).collect())
        })
    }
}

/// Most jobs of nodes gone taken up at one look (the next look takes more).
const ADOPT_MAX: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::TranscriptPhrase;
    use crate::sentiment::Sentiment;
    use crate::Word;

    #[test]
    fn rows_map_both_ways() {
        let mut job = Job::queued("c1", "en-GB", 1000);
        job.state = JobState::Running;
        job.attempts = 2;
        job.error = Some("boom".into());
        let row = to_row(&job, "node-a", "http");
        assert_eq!(
            (row.state.as_str(), row.node.as_str(), row.engine.as_str()),
            ("running", "node-a", "http")
        );
        assert_eq!(from_row(row.clone()), Some(job));
        let mut odd = row;
        odd.state = "paused".into();
        assert_eq!(from_row(odd.clone()), None);
        odd.state = "queued".into();
        odd.attempts = -3;
        assert_eq!(from_row(odd).unwrap().attempts, 0);
    }

    #[test]
    fn a_transcript_is_stored_with_its_summary() {
        let phrase = |speaker, start_ms, text: &str, score: Option<f64>| TranscriptPhrase {
            speaker,
            start_ms,
            end_ms: start_ms + 1000,
            text: text.into(),
            words: vec![Word {
                start_ms,
                end_ms: start_ms + 200,
                text: text.split(' ').next().unwrap().into(),
                confidence: Some(0.5),
            }],
            sentiment: score.map(Sentiment::of),
        };
        let t = Transcript {
            engine: "http".into(),
            language: "en".into(),
            duration_ms: 5000,
            phrases: vec![
                phrase(Speaker::Customer, 0, "bad", Some(-0.5)),
                phrase(Speaker::Agent, 2000, "good", Some(0.7)),
                phrase(Speaker::Agent, 4000, "x", None),
            ],
        };
        let s = to_stored("c1", &t, 77);
        assert_eq!(s.summary.phrase_count, 3);
        assert!((s.summary.sentiment_avg.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(s.summary.customer_wpm, Some(60.0));
        assert_eq!(s.summary.agent_wpm, Some(60.0));
        assert_eq!(s.summary.created_ms, 77);
        let speakers: Vec<&str> = s.phrases.iter().map(|p| p.speaker.as_str()).collect();
        assert_eq!(speakers, ["customer", "agent", "agent"]);
        assert_eq!(s.phrases[2].sentiment, None);
        assert_eq!(s.phrases[1].words[0]["text"], "good");
    }

    #[test]
    fn a_recording_is_selected_by_its_route_and_record_policies() {
        let meta = recorder::RecordingMetadata {
            contact_id: "c1".into(),
            route: "pbx".into(),
            decisions: Some(serde_json::json!([
                {"source": "record_policy", "name": "complaints", "record": true}
            ])),
            ..Default::default()
        };
        let e = Entry::from_metadata(&meta, "n", store::State::Stored, 0).unwrap();
        let s: Selection = serde_json::from_value(serde_json::json!({
            "transcribe": false,
            "policies": {"complaints": {"transcribe": true, "language": "en-GB"}},
        }))
        .unwrap();
        assert_eq!(decide(&s, &e).as_deref(), Some("en-GB"));
        let mut other = e.clone();
        other.decisions = None;
        assert_eq!(decide(&s, &other), None);
    }
}
