//! The job driver over the real catalog (SQLite) and storage (a local directory), through
//! the glue the node uses ([`CatalogHost`]): a job interrupted mid-attempt by a "crash" is
//! resumed from its row after the restart and completes; the stored transcript is found by
//! full-text search by a word only the agent said, and not by a word nobody said.

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Catalog, Entry, State, Storage, StorageConfig};
use transcript::engine::BoxFuture;
use transcript::{
    CatalogHost, Engine, Jobs, JobsConfig, Phrase, Request, TranscriptError, Vader, Word, Worker,
};

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
        Arc::new(
            CatalogHost::new(catalog.clone(), storage.clone(), "node-a", "scripted")
                .with_tmp_dir(dir.path().to_owned()),
        )
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
    let host = host(&catalog);
    let rows = host.active_jobs().await.unwrap();
    assert_eq!(rows.len(), 1);
    let worker = Worker::new(
        Jobs::new(config),
        Arc::new(Scripted {
            delay: Duration::from_millis(10),
        }),
        Arc::new(Vader::default()),
        host,
    );
    assert_eq!(worker.resume(rows).await, 1);
    assert_eq!(
        catalog.transcript_job("c1").await.unwrap().unwrap().state,
        "queued",
        "the interrupted attempt is queued again"
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
