//! The async driver of [`Jobs`]: it persists every job row through a [`JobHost`], starts
//! due jobs as tokio tasks (each transcribes, scores and stores one recording under the job's
//! timeout), feeds their outcome back, and sleeps until the machine's next wake-up or new
//! input. The host is the node's glue to its catalog and storage; the driver itself holds no
//! IO of its own, so it is tested here against an in-memory host.
//!
//! A failure to persist a row or to store a transcript fails that attempt (retried like any
//! other); the driver never stops on a job's error, and a job never blocks another beyond
//! the concurrency limit.
//!
//! What happens is reported to an [`Observer`] (the node's metrics): each job's outcome
//! (done, retried, failed; [`Outcome::of`] the row), the counts of queued and running jobs,
//! and per attempt its wall time, its engine's CPU time and the audio it transcribed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use crate::engine::BoxFuture;
use crate::jobs::{Counts, Job, JobState, Jobs, Start};
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
    /// Notes that this node is alive (for [`JobHost::orphans`] on the other nodes). A host
    /// that shares its jobs with no other node does nothing.
    fn heartbeat(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Takes over the active jobs of nodes not heard from since `seen_before_ms`, now this
    /// node's. None by default.
    fn orphans(&self, _seen_before_ms: i64) -> BoxFuture<'_, Result<Vec<Job>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// How a job row left by the scheduler ended an attempt (or a restart), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The transcript is stored.
    Done,
    /// The attempt failed (or was interrupted); the job is queued for another.
    Retried,
    /// The last attempt failed; the job is given up.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Done, Outcome::Retried, Outcome::Failed];

    /// The outcome a changed row records: `None` for a job that was queued or started.
    pub fn of(job: &Job) -> Option<Outcome> {
        match job.state {
            JobState::Done => Some(Outcome::Done),
            JobState::Failed => Some(Outcome::Failed),
            JobState::Queued if job.attempts > 0 => Some(Outcome::Retried),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        }
    }
}

/// What one attempt cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptReport {
    /// From start to end (fetching the audio, recognising, storing).
    pub wall: Duration,
    /// The engine's CPU time on this node during the attempt (and any attempt running
    /// beside it), for engines that compute here.
    pub cpu: Option<Duration>,
    /// Length of the recording transcribed, when the attempt succeeded.
    pub audio_ms: Option<u64>,
}

/// Receives what the driver does (the node's metrics). Every method does nothing by default.
pub trait Observer: Send + Sync {
    /// A job row changed to `outcome`.
    fn outcome(&self, _job: &Job, _outcome: Outcome) {}
    /// The active jobs, after every change.
    fn counts(&self, _counts: Counts) {}
    /// An attempt ended.
    fn attempt(&self, _report: &AttemptReport) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// The driver (see the module docs). Shared as `Arc<Worker>`.
pub struct Worker {
    jobs: Mutex<Jobs>,
    wake: Notify,
    engine: Arc<dyn Engine>,
    scorer: Arc<dyn Scorer>,
    host: Arc<dyn JobHost>,
    observer: Arc<dyn Observer>,
    /// The engine's CPU time when last reported.
    cpu_seen: Mutex<Duration>,
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
        Self::with_observer(jobs, engine, scorer, host, Arc::new(NoObserver))
    }

    /// [`Worker::new`], reporting to `observer`.
    pub fn with_observer(
        jobs: Jobs,
        engine: Arc<dyn Engine>,
        scorer: Arc<dyn Scorer>,
        host: Arc<dyn JobHost>,
        observer: Arc<dyn Observer>,
    ) -> Arc<Worker> {
        let cpu_seen = engine.cpu_time().unwrap_or_default();
        Arc::new(Worker {
            jobs: Mutex::new(jobs),
            wake: Notify::new(),
            engine,
            scorer,
            host,
            observer,
            cpu_seen: Mutex::new(cpu_seen),
        })
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &str {
        self.engine.name()
    }

    /// Takes up the persisted active jobs after a restart ([`Jobs::restore`]), in place of
    /// whatever the driver held, and persists the rows that changed (running jobs queued
    /// again, or failed when that was their last attempt). Returns how many jobs are active.
    /// Call before [`Worker::run`].
    pub async fn resume(&self, persisted: Vec<Job>) -> usize {
        let now = self.host.now_ms();
        let config = *self.lock().config();
        let (jobs, changed) = Jobs::restore(config, persisted, now);
        let active = jobs.counts();
        *self.lock() = jobs;
        self.observer.counts(active);
        for job in &changed {
            self.persist(job).await;
        }
        self.wake.notify_one();
        active.queued + active.running
    }

    /// Takes up active jobs of a node gone for good ([`Jobs::adopt`]) beside those held, and
    /// persists the rows that changed. Returns how many were taken.
    pub async fn adopt(&self, persisted: Vec<Job>) -> usize {
        let now = self.host.now_ms();
        let (changed, before, counts) = {
            let mut jobs = self.lock();
            let before = jobs.counts();
            let changed = jobs.adopt(persisted, now);
            (changed, before, jobs.counts())
        };
        self.observer.counts(counts);
        for job in &changed {
            self.persist(job).await;
        }
        self.wake.notify_one();
        (counts.queued + counts.running).saturating_sub(before.queued + before.running)
    }

    /// Runs forever (spawn it beside [`Worker::run`]): every `every`, notes that this node
    /// is alive and takes up the active jobs of nodes not heard from for `gone_after`, so
    /// that a node removed for good leaves no recording untranscribed.
    pub async fn watch_orphans(self: Arc<Self>, every: Duration, gone_after: Duration) {
        loop {
            if let Err(e) = self.host.heartbeat().await {
                tracing::warn!(error = %e, "transcripts: heartbeat not written");
            }
            let before =
                self.host.now_ms() - i64::try_from(gone_after.as_millis()).unwrap_or(i64::MAX);
            match self.host.orphans(before).await {
                Ok(jobs) if !jobs.is_empty() => {
                    let found = jobs.len();
                    let taken = self.adopt(jobs).await;
                    tracing::info!(found, taken, "transcripts: took up the jobs of a node gone");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "transcripts: cannot look for jobs of nodes gone")
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Reports a changed row's outcome, then saves it (so that whoever sees the row has seen
    /// the report too: metrics never lag the catalog).
    async fn persist(&self, job: &Job) {
        if let Some(o) = Outcome::of(job) {
            match o {
                Outcome::Failed => tracing::warn!(contact_id = %job.contact_id,
                    attempts = job.attempts, error = job.error.as_deref().unwrap_or(""),
                    "transcription failed; given up"),
                Outcome::Retried => tracing::info!(contact_id = %job.contact_id,
                    attempts = job.attempts, retry_at_ms = job.next_at_ms,
                    "transcription attempt failed; retried later"),
                Outcome::Done => {}
            }
            self.observer.outcome(job, o);
        }
        if let Err(e) = self.host.save(job).await {
            tracing::warn!(contact_id = %job.contact_id, error = %e, "transcript job row not saved");
        }
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
        let counts = {
            let mut jobs = self.lock();
            if jobs.enqueue(contact_id, language, now).is_none() {
                return Ok(false);
            }
            jobs.counts()
        };
        self.observer.counts(counts);
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
            let (poll, counts) = {
                let now = self.host.now_ms();
                let mut jobs = self.lock();
                let poll = jobs.poll(now);
                (poll, jobs.counts())
            };
            if !poll.changed.is_empty() {
                self.observer.counts(counts);
            }
            for job in &poll.changed {
                self.persist(job).await;
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
        let t0 = std::time::Instant::now();
        let timeout = Duration::from_millis((start.deadline_ms - self.host.now_ms()).max(1) as u64);
        // The engine gets a little less than the job, so that a hung engine is reported as
        // such (with its own reason) before the scheduler's deadline, the safety net.
        let margin = (timeout / 10).min(Duration::from_secs(5));
        let result = tokio::time::timeout(timeout, self.transcribe(&start, timeout - margin))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} s", timeout.as_secs())));
        match &result {
            Ok(ms) => tracing::info!(
                engine = self.engine.name(),
                audio_ms = ms,
                "transcript stored"
            ),
            Err(e) => tracing::warn!(error = %e, "transcription attempt failed"),
        }
        let cpu = self.engine.cpu_time().map(|total| {
            let mut seen = self.cpu_seen.lock().unwrap_or_else(|e| e.into_inner());
            let delta = total.saturating_sub(*seen);
            *seen = total.max(*seen);
            delta
        });
        self.observer.attempt(&AttemptReport {
            wall: t0.elapsed(),
            cpu,
            audio_ms: result.as_ref().ok().copied(),
        });
        let now = self.host.now_ms();
        let (job, counts) = {
            let mut jobs = self.lock();
            let job = jobs.finish(&start.contact_id, start.attempt, result.map(|_| ()), now);
            (job, jobs.counts())
        };
        if let Some(job) = job {
            self.observer.counts(counts);
            self.persist(&job).await;
        }
        self.wake.notify_one();
    }

    /// One attempt; the length of the audio transcribed.
    async fn transcribe(&self, start: &Start, timeout: Duration) -> Result<u64, String> {
        let audio = self.host.audio(&start.contact_id).await?;
        let mut t = transcribe_recording(&audio.path, &*self.engine, &start.language, timeout)
            .await
            .map_err(|e| e.to_string())?;
        drop(audio);
        t.score(&*self.scorer);
        self.host.store(&start.contact_id, &t).await?;
        Ok(t.duration_ms)
    }
}
