//! The job driver over the real catalog (SQLite) and storage (a local directory), through
//! the glue a node uses ([`CatalogHost`]): a job interrupted mid-attempt by a "crash" is
//! resumed from its row after the restart and completes; the stored transcript is found by
//! full-text search by a word only the agent said, and not by a word nobody said.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use store::{Catalog, Entry, PhraseRow, State, Storage, StorageConfig, StoredTranscript};
use transcript::engine::BoxFuture;
use transcript::{
    AudioFile, Engine, Job, JobHost, JobState, Jobs, JobsConfig, Phrase, Request, Speaker,
    Transcript, TranscriptError, Vader, Word, Worker,
};

/// The node's glue between the driver and its catalog and storage.
struct CatalogHost {
    catalog: Catalog,
    storage: Storage,
    node: String,
    engine: String,
    t0: Instant,
}

fn to_row(job: &Job, node: &str, engine: &str) -> store::TranscriptJob {
    store::TranscriptJob {
        contact_id: job.contact_id.clone(),
        node: node.to_string(),
        state: job.state.as_str().to_string(),
        attempts: job.attempts as i32,
        next_at_ms: job.next_at_ms,
        error: job.error.clone(),
        engine: engine.to_string(),
        language: job.language.clone(),
        updated_ms: job.updated_ms,
    }
}

fn from_row(row: store::TranscriptJob) -> Option<Job> {
    Some(Job {
        state: JobState::parse(&row.state)?,
        contact_id: row.contact_id,
        attempts: row.attempts.max(0) as u32,
        next_at_ms: row.next_at_ms,
        error: row.error,
        language: row.language,
        updated_ms: row.updated_ms,
    })
}

fn to_stored(contact_id: &str, t: &Transcript, now_ms: i64) -> StoredTranscript {
    StoredTranscript {
        summary: store::TranscriptSummary {
            contact_id: contact_id.to_string(),
            engine: t.engine.clone(),
            language: t.language.clone(),
            phrase_count: t.phrases.len() as i32,
            sentiment_avg: t.sentiment_average(),
            customer_wpm: t.words_per_minute(Speaker::Customer),
            agent_wpm: t.words_per_minute(Speaker::Agent),
            created_ms: now_ms,
        },
        phrases: t
            .phrases
            .iter()
            .map(|p| PhraseRow {
                speaker: match p.speaker {
                    Speaker::Customer => "customer".into(),
                    Speaker::Agent => "agent".into(),
                },
                start_ms: p.start_ms as i64,
                end_ms: p.end_ms as i64,
                text: p.text.clone(),
                sentiment: p.sentiment.map(|s| s.score),
                words: serde_json::to_value(&p.words).unwrap_or_default(),
            })
            .collect(),
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
        Box::pin(async move {
            let entry = self
                .catalog
                .get(contact_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no such recording")?;
            let key = entry.storage_key.ok_or("the recording is not stored")?;
            let mut read = self
                .storage
                .read(&key, None)
                .await
                .map_err(|e| e.to_string())?;
            let tmp = tempfile::Builder::new()
                .suffix(&format!(".{}", entry.format))
                .tempfile()
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            while let Some(chunk) = read.stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            }
            std::fs::write(tmp.path(), bytes).map_err(|e| e.to_string())?;
            Ok(AudioFile {
                path: tmp.path().to_owned(),
                guard: Some(Box::new(tmp)),
            })
        })
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
        1_700_000_000_000 + self.t0.elapsed().as_millis() as i64
    }
}

/// An engine that answers after `delay` with one phrase per channel: the agent says
/// "refund", the customer "invoice" (told apart by the channel's loudness).
#[derive(Debug)]
struct Scripted {
    delay: Duration,
}

impl Engine for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn transcribe(&self, r: Request) -> BoxFuture<'_, Result<Vec<Phrase>, TranscriptError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let loud = r.samples.iter().any(|s| s.unsigned_abs() > 1000);
            let text = if loud {
                "I will refund you today"
            } else {
                "my invoice is wrong"
            };
            Ok(vec![Phrase {
                start_ms: 100,
                end_ms: 900,
                text: text.into(),
                words: vec![Word {
                    start_ms: 100,
                    end_ms: 300,
                    text: text.split(' ').next().unwrap().into(),
                    confidence: Some(0.9),
                }],
            }])
        })
    }
}

fn wav(path: &std::path::Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..8000 {
        w.write_sample(0i16).unwrap();
        w.write_sample(if i % 2 == 0 { 5000i16 } else { -5000 })
            .unwrap();
    }
    w.finalize().unwrap();
}

async fn until(deadline: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < deadline, "not reached within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_a_restart_resumes_and_its_transcript_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tapir.db");
    let catalog = Catalog::open(db.to_str().unwrap()).await.unwrap();
    let storage = Storage::open(&StorageConfig::Local(dir.path().join("shelf"))).unwrap();
    // A stored recording.
    let spool = dir.path().join("c1.wav");
    wav(&spool);
    let meta = recorder::RecordingMetadata {
        contact_id: "c1".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: 1_700_000_000_000,
        duration_ms: 1000,
        ..Default::default()
    };
    let mut entry = Entry::from_metadata(&meta, "node-a", State::Finished, 0).unwrap();
    entry.format = "wav".into();
    catalog.upsert(&entry).await.unwrap();
    let obj = storage.put_file("2023/11/14/c1.wav", &spool).await.unwrap();
    assert!(catalog
        .mark_stored("c1", &obj.key, obj.size as i64, &obj.sha256, 1)
        .await
        .unwrap());

    let config = JobsConfig {
        concurrency: 1,
        max_attempts: 3,
        backoff_ms: 50,
        backoff_max_ms: 50,
        timeout_ms: 30_000,
    };
    let host = |catalog: &Catalog| {
        Arc::new(CatalogHost {
            catalog: catalog.clone(),
            storage: storage.clone(),
            node: "node-a".into(),
            engine: "scripted".into(),
            t0: Instant::now(),
        })
    };

    // First life: the job starts, and the node dies mid-attempt (an engine that takes an hour).
    let worker = Worker::new(
        Jobs::new(config),
        Arc::new(Scripted {
            delay: Duration::from_secs(3600),
        }),
        Arc::new(Vader::default()),
        host(&catalog),
    );
    let run = tokio::spawn(worker.clone().run());
    // The finisher's step: one row per recording, then the scheduler.
    assert!(worker.enqueue("c1", "en").await.unwrap());
    until(Duration::from_secs(5), async || {
        catalog
            .transcript_job("c1")
            .await
            .unwrap()
            .is_some_and(|j| j.state == "running")
    })
    .await;
    run.abort();
    drop(worker);
    catalog.close().await;

    // Second life: the node reloads its active jobs and resumes.
    let catalog = Catalog::open(db.to_str().unwrap()).await.unwrap();
    let rows = catalog.active_transcript_jobs("node-a").await.unwrap();
    assert_eq!(rows.len(), 1);
    let host = host(&catalog);
    let (jobs, changed) =
        Jobs::restore(config, rows.into_iter().filter_map(from_row), host.now_ms());
    for job in &changed {
        host.save(job).await.unwrap();
    }
    assert_eq!(changed[0].state, JobState::Queued);
    let worker = Worker::new(
        jobs,
        Arc::new(Scripted {
            delay: Duration::from_millis(10),
        }),
        Arc::new(Vader::default()),
        host,
    );
    let run = tokio::spawn(worker.clone().run());
    until(Duration::from_secs(10), async || {
        catalog
            .transcript_job("c1")
            .await
            .unwrap()
            .is_some_and(|j| j.state == "done")
    })
    .await;
    let row = catalog.transcript_job("c1").await.unwrap().unwrap();
    assert_eq!(row.attempts, 2, "the interrupted attempt counted");
    run.abort();

    let t = catalog.transcript("c1").await.unwrap().unwrap();
    let who: Vec<(&str, &str)> = t
        .phrases
        .iter()
        .map(|p| (p.speaker.as_str(), p.text.as_str()))
        .collect();
    assert_eq!(
        who,
        [
            ("customer", "my invoice is wrong"),
            ("agent", "I will refund you today")
        ]
    );
    assert!(t.summary.sentiment_avg.is_some());
    assert_eq!(t.summary.agent_wpm, Some(75.0));
    // Found by a word only the agent said, not by one nobody said.
    let hits = catalog.search_transcripts("refund", 0).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].contact_id.as_str(), hits[0].speaker.as_str()),
        ("c1", "agent")
    );
    assert!(catalog
        .search_transcripts("lawyer", 0)
        .await
        .unwrap()
        .is_empty());
    let page = catalog
        .search(&store::Query {
            text: Some("refund".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    // A recording stored again (reconciliation after a restart) gets no second job.
    assert!(!worker.enqueue("c1", "en").await.unwrap());
    assert_eq!(
        catalog.transcript_job("c1").await.unwrap().unwrap().state,
        "done"
    );
    assert_eq!(worker.counts().queued, 0);
}
