//! The async driver of [`Jobs`]: it persists every job row through a [`JobHost`], starts
//! due jobs as tokio tasks (each transcribes, scores and stores one recording under the job's
//! timeout), feeds their outcome back, and sleeps until the machine's next wake-up or new
//! input. The host is the node's glue to its catalog and storage; the driver itself holds no
//! IO of its own, so it is tested here against an in-memory host.
//!
//! A failure to persist a row or to store a transcript fails that attempt (retried like any
//! other); the driver never stops on a job's error, and a job never blocks another beyond
//! the concurrency limit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use crate::engine::BoxFuture;
use crate::jobs::{Counts, Job, Jobs, Start};
use crate::recording::{transcribe_recording, Transcript};
use crate::sentiment::Scorer;
use crate::Engine;

/// A recording's audio on the local disk for the length of a job.
pub struct AudioFile {
    pub path: PathBuf,
    /// Dropped when the job ends (a temporary copy fetched from object storage deletes
    /// itself).
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// What the node provides to the driver.
pub trait JobHost: Send + Sync + 'static {
    /// Inserts a new job's row unless the recording already has one, in any state: false
    /// then (a recording stored twice is transcribed once).
    fn create(&self, job: &Job) -> BoxFuture<'_, Result<bool, String>>;
    /// Persists a job row (insert or update by contact id).
    fn save(&self, job: &Job) -> BoxFuture<'_, Result<(), String>>;
    /// The recording's audio as a local file.
    fn audio<'a>(&'a self, contact_id: &'a str) -> BoxFuture<'a, Result<AudioFile, String>>;
    /// Stores a finished, scored transcript.
    fn store<'a>(
        &'a self,
        contact_id: &'a str,
        transcript: &'a Transcript,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Unix milliseconds now.
    fn now_ms(&self) -> i64;
}

/// The driver (see the module docs). Shared as `Arc<Worker>`.
pub struct Worker {
    jobs: Mutex<Jobs>,
    wake: Notify,
    engine: Arc<dyn Engine>,
    scorer: Arc<dyn Scorer>,
    host: Arc<dyn JobHost>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("engine", &self.engine.name())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// `jobs` is new or [`Jobs::restore`]d (persist the rows `restore` changed first).
    pub fn new(
        jobs: Jobs,
        engine: Arc<dyn Engine>,
        scorer: Arc<dyn Scorer>,
        host: Arc<dyn JobHost>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            jobs: Mutex::new(jobs),
            wake: Notify::new(),
            engine,
            scorer,
            host,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        // A panic while holding the lock cannot leave Jobs half-updated in a way that
        // matters more than losing the driver; recover the guard.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job for a stored recording (the finisher calls this once the recording is
    /// stored); false when the recording already has a job, active or ended.
    pub async fn enqueue(&self, contact_id: &str, language: &str) -> Result<bool, String> {
        if self.lock().get(contact_id).is_some() {
            return Ok(false);
        }
        let now = self.host.now_ms();
        if !self
            .host
            .create(&Job::queued(contact_id, language, now))
            .await?
        {
            return Ok(false);
        }
        if self.lock().enqueue(contact_id, language, now).is_none() {
            return Ok(false);
        }
        self.wake.notify_one();
        Ok(true)
    }

    /// Queued and running jobs.
    pub fn counts(&self) -> Counts {
        self.lock().counts()
    }

    /// Runs forever (spawn it; abort the task to stop).
    pub async fn run(self: Arc<Self>) {
        loop {
            let poll = {
                let now = self.host.now_ms();
                self.lock().poll(now)
            };
            for job in &poll.changed {
                if let Err(e) = self.host.save(job).await {
                    tracing::warn!(contact_id = %job.contact_id, error = %e, "transcript job row not saved");
                }
            }
            for start in poll.start {
                let me = self.clone();
                let span = tracing::info_span!(
                    "transcript",
                    contact_id = %start.contact_id,
                    attempt = start.attempt
                );
                tokio::spawn(async move { me.attempt(start).await }.instrument(span));
            }
            let sleep = match poll.wake_at_ms {
                Some(at) => {
                    Duration::from_millis((at - self.host.now_ms()).clamp(0, 3_600_000) as u64)
                }
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn attempt(self: Arc<Self>, start: Start) {
        let timeout = Duration::from_millis((start.deadline_ms - self.host.now_ms()).max(1) as u64);
        // The engine gets a little less than the job, so that a hung engine is reported as
        // such (with its own reason) before the scheduler's deadline, the safety net.
        let margin = (timeout / 10).min(Duration::from_secs(5));
        let result = tokio::time::timeout(timeout, self.transcribe(&start, timeout - margin))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} s", timeout.as_secs())));
        match &result {
            Ok(()) => tracing::info!(engine = self.engine.name(), "transcript stored"),
            Err(e) => tracing::warn!(error = %e, "transcription attempt failed"),
        }
        let now = self.host.now_ms();
        let job = self
            .lock()
            .finish(&start.contact_id, start.attempt, result, now);
        if let Some(job) = job {
            if let Err(e) = self.host.save(&job).await {
                tracing::warn!(error = %e, "transcript job row not saved");
            }
        }
        self.wake.notify_one();
    }

    async fn transcribe(&self, start: &Start, timeout: Duration) -> Result<(), String> {
        let audio = self.host.audio(&start.contact_id).await?;
        let mut t = transcribe_recording(&audio.path, &*self.engine, &start.language, timeout)
            .await
            .map_err(|e| e.to_string())?;
        drop(audio);
        t.score(&*self.scorer);
        self.host.store(&start.contact_id, &t).await
    }
}
