//! The transcription stage at run time: the configured engine, the job driver
//! ([`transcript::Worker`]) over the catalog and storage ([`transcript::CatalogHost`]), the
//! jobs this node left active resumed at start, and a job queued for every recording the
//! shelf stores and the selection picks. Its outcomes and costs go to the metrics.
//!
//! Nothing here decides: which recordings are transcribed, how jobs are scheduled, retried
//! and resumed, and what is stored are the `transcript` crate's.

use std::sync::Arc;

use anyhow::{Context, Result};
use store::Catalog;
use transcript::{
    AttemptReport, CatalogHost, Counts, Job, Jobs, Observer, Outcome, Selection, TranscriptsConfig,
    Vader, Worker,
};

use crate::metrics::Metrics;

/// The running stage; shared by the shelf's tasks.
pub struct Transcriber {
    worker: Arc<Worker>,
    selection: Selection,
    catalog: Catalog,
}

/// Feeds the driver's reports into Prometheus.
struct MetricsObserver(Arc<Metrics>);

impl Observer for MetricsObserver {
    fn outcome(&self, _: &Job, o: Outcome) {
        self.0
            .transcripts
            .total
            .with_label_values(&[o.as_str()])
            .inc();
    }

    fn counts(&self, c: Counts) {
        let jobs = &self.0.transcripts.jobs;
        jobs.with_label_values(&["queued"])
            .set(i64::try_from(c.queued).unwrap_or(i64::MAX));
        jobs.with_label_values(&["running"])
            .set(i64::try_from(c.running).unwrap_or(i64::MAX));
    }

    fn attempt(&self, r: &AttemptReport) {
        let m = &self.0.transcripts;
        m.processing_seconds.inc_by(r.wall.as_secs_f64());
        if let Some(cpu) = r.cpu {
            m.cpu_seconds.inc_by(cpu.as_secs_f64());
        }
        if let Some(ms) = r.audio_ms {
            m.audio_seconds.inc_by(ms as f64 / 1000.0);
        }
    }
}

/// Starts the stage when `[transcripts]` names an engine: loads it (a missing model or a
/// bad URL is an error here, at start), resumes this node's active jobs from the catalog and
/// spawns the driver. `None` when transcription is off.
pub async fn start(
    cfg: &TranscriptsConfig,
    opened: &crate::shelf::Opened,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<Transcriber>>> {
    let Some(engine) = cfg.build_engine().context("transcripts")? else {
        return Ok(None);
    };
    let node = opened.shelf.node().to_string();
    let host = CatalogHost::new(
        opened.catalog.clone(),
        opened.storage.clone(),
        &node,
        engine.name(),
    );
    let active = host
        .active_jobs()
        .await
        .context("transcripts: reading this node's jobs from the catalog")?;
    let worker = Worker::with_observer(
        Jobs::new(cfg.jobs_config()),
        engine,
        Arc::new(Vader::default()),
        Arc::new(host),
        Arc::new(MetricsObserver(metrics)),
    );
    let resumed = worker.resume(active).await;
    tracing::info!(
        engine = worker.engine_name(),
        concurrency = cfg.concurrency,
        resumed,
        "transcription on"
    );
    tokio::spawn(worker.clone().run());
    let (gone_after, every) = cfg.adoption();
    tokio::spawn(worker.clone().watch_orphans(every, gone_after));
    let t = Arc::new(Transcriber {
        worker,
        selection: cfg.selection(),
        catalog: opened.catalog.clone(),
    });
    t.catch_up(node);
    Ok(Some(t))
}

/// How far back [`Transcriber::catch_up`] looks for stored recordings without a job.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Most recordings it checks in one start, newest first.
const CATCH_UP_MAX: u32 = 10_000;

impl Transcriber {
    /// A recording is stored: queue its job if the selection picks it (once per recording,
    /// whatever happens twice). Runs on its own task, so a slow catalog never holds up the
    /// shelf; failures are logged.
    pub fn stored(self: &Arc<Self>, contact_id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            me.queue_if_selected(&contact_id).await;
        });
    }

    /// Queues the job of a stored recording the selection picks; whether one was queued now.
    async fn queue_if_selected(&self, contact_id: &str) -> bool {
        let entry = match self.catalog.get(contact_id).await {
            Ok(Some(e)) => e,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(contact = %contact_id, error = %e,
                    "transcripts: cannot read a stored recording; no transcript for it");
                return false;
            }
        };
        let Some(language) = transcript::catalog::decide(&self.selection, &entry) else {
            tracing::debug!(contact = %contact_id, route = %entry.route,
                "transcripts: not selected");
            return false;
        };
        match self.worker.enqueue(contact_id, &language).await {
            Ok(true) => {
                tracing::info!(contact = %contact_id, language, "transcription queued");
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(contact = %contact_id, error = %e,
                    "transcripts: cannot queue a job; no transcript for it");
                false
            }
        }
    }

    /// At start: the recordings this node stored in the last day that have no job get one
    /// if the selection picks them. The job row is written after the recording is marked
    /// stored, so a crash between the two would otherwise leave the recording without a
    /// transcript for good. (Transcription turned on, or a route newly selected, also
    /// catches up on the last day's recordings this way.) On its own task; failures logged.
    fn catch_up(self: &Arc<Self>, node: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let since_ms = now_ms - CATCH_UP.as_millis() as i64;
            let ids = match me
                .catalog
                .stored_without_transcript_job(&node, since_ms, CATCH_UP_MAX)
                .await
            {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e,
                        "transcripts: cannot list stored recordings without a job");
                    return;
                }
            };
            let mut queued = 0usize;
            for id in &ids {
                if me.queue_if_selected(id).await {
                    queued += 1;
                }
            }
            if queued > 0 {
                tracing::info!(
                    queued,
                    checked = ids.len(),
                    "transcripts: queued stored recordings of the last day that had no job"
                );
            }
        });
    }
}
