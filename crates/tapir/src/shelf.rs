//! The catalog and storage at run time: opened at start (a clear error naming the URL when
//! either cannot be reached), the delivery of finished recordings ([`store::Shelf`]), which
//! hands every stored recording to the transcription stage when it runs, the spool watch with
//! its high-water mark, the retention purge and the webhook sender.
//!
//! Nothing here decides: what is delivered where, what a reconciliation repairs and how long
//! a recording is kept are the `store` crate's; these are the tasks that run them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use store::{Backoff, Catalog, Parcel, Shelf, ShelfConfig, Storage, StorageConfig};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::transcribe::Transcriber;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in the catalog; the host name when empty. Nodes sharing a catalog
    /// need distinct names: each resumes only its own unfinished uploads after a restart.
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sqlite://tapir.db` (embedded, relative to the working directory) or
    /// `postgres://user:password@host/db`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// An S3-compatible bucket; without it recordings are kept under
    /// `recording.recordings_dir`.
    #[serde(default)]
    pub s3: Option<store::S3Config>,
    /// Past this many MiB in the spool, new recordings are refused (the calls go on); 0 means
    /// no limit.
    #[serde(default)]
    pub spool_high_water_mb: u64,
    /// Uploads running at once.
    #[serde(default = "default_concurrency")]
    pub upload_concurrency: usize,
    /// First wait after a failed upload or catalog write, doubled up to `retry_max_ms`.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// How long recordings are kept: `days`, and per route and record policy.
    #[serde(default)]
    pub retention: store::RetentionRules,
    /// How often the purge job looks for recordings past retention or deleted.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_s: u64,
    /// URLs that get a POST for every stored recording, retried until they answer 2xx.
    #[serde(default)]
    pub webhooks: Vec<String>,
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout_s: u64,
}

fn default_concurrency() -> usize {
    4
}
fn default_retry_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_purge_interval() -> u64 {
    3600
}
fn default_webhook_timeout() -> u64 {
    10
}

impl StorageSection {
    pub fn validate(&self) -> Result<()> {
        if self.upload_concurrency == 0 || self.upload_concurrency > 64 {
            anyhow::bail!("storage.upload_concurrency must be within 1..=64");
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            anyhow::bail!("storage: retry_initial_ms must be > 0 and retry_max_ms >= it");
        }
        if self.purge_interval_s == 0 {
            anyhow::bail!("storage.purge_interval_s must be > 0");
        }
        for u in &self.webhooks {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("storage.webhooks: {u:?} is not an http:// or https:// URL");
            }
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms),
        }
    }
}

/// The node's name: configured, else the host name.
pub fn node_name(cfg: &NodeConfig) -> String {
    if !cfg.id.is_empty() {
        return cfg.id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tapir".into())
}

/// What the recorder side sends to the shelf.
pub enum ShelfMsg {
    /// A recording's file was created: catalogue it as `recording`.
    Opened {
        meta: Box<recorder::RecordingMetadata>,
        stem: String,
    },
    /// A finished file is in the outbox.
    Deliver(Box<Parcel>),
    /// A contact that recorded nothing: its decision record, kept beside the recordings.
    Decision(Box<recorder::RecordingMetadata>),
}

/// The recorder side's handle on the shelf.
#[derive(Clone)]
pub struct ShelfTx {
    tx: mpsc::UnboundedSender<ShelfMsg>,
    /// Set while the spool is past its high-water mark.
    pub spool_full: Arc<AtomicBool>,
    pub retention: Arc<store::RetentionRules>,
    /// This node's name, written into the metadata of what it records.
    pub node: Arc<str>,
    metrics: Arc<Metrics>,
}

impl ShelfTx {
    /// Queues a message; never blocks (the recorder and finisher are plain threads). A file
    /// counts as pending from here until it is stored.
    pub fn send(&self, m: ShelfMsg) {
        if matches!(m, ShelfMsg::Deliver(_) | ShelfMsg::Decision(_)) {
            self.metrics.shelf.uploads_pending.inc();
        }
        if self.tx.send(m).is_err() {
            tracing::error!("the shelf task is gone; a finished recording stays in the spool");
        }
    }
}

impl ShelfTx {
    /// A handle whose messages go to the returned receiver (for the recorder's unit tests).
    #[cfg(test)]
    pub fn detached() -> (ShelfTx, mpsc::UnboundedReceiver<ShelfMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = ShelfTx {
            tx,
            spool_full: Arc::new(AtomicBool::new(false)),
            retention: Arc::new(store::RetentionRules::default()),
            node: "test".into(),
            metrics: Arc::new(Metrics::new()),
        };
        (h, rx)
    }
}

/// The catalog and storage, opened and checked.
pub struct Opened {
    pub shelf: Shelf,
    pub catalog: Catalog,
    pub storage: Storage,
}

/// Opens the catalog (creating and migrating an embedded one) and the storage, and proves
/// both answer. Errors name the URL (without its password) or the bucket.
pub async fn open(
    catalog: &CatalogConfig,
    storage: &StorageSection,
    recordings_dir: &Path,
    node: String,
) -> Result<Opened> {
    let cat = Catalog::open(&catalog.url)
        .await
        .with_context(|| format!("catalog {}", store::redact_url(&catalog.url)))?;
    let scfg = match &storage.s3 {
        Some(s3) => StorageConfig::S3(s3.clone()),
        None => StorageConfig::Local(recordings_dir.to_path_buf()),
    };
    let st = Storage::open(&scfg).context("storage")?;
    st.check()
        .await
        .with_context(|| format!("storage {} is not reachable", st.describe()))?;
    tracing::info!(catalog = %store::redact_url(&catalog.url), backend = cat.backend(),
        storage = st.describe(), node, "catalog and storage open");
    let shelf = Shelf::new(
        cat.clone(),
        st.clone(),
        ShelfConfig {
            node,
            backoff: storage.backoff(),
            webhooks: storage.webhooks.clone(),
        },
    );
    Ok(Opened {
        shelf,
        catalog: cat,
        storage: st,
    })
}

/// Audio files at the top of the spool (recordings a crash interrupted, which the recorder's
/// repair will deliver) and in `spool/finishing/` (finished calls whose finishing a crash
/// interrupted, which the finisher takes up again): the reconciliation must neither call
/// them lost nor quarantine their companions in the outbox.
pub fn spool_stems(spool: &Path) -> Vec<String> {
    let mut v = audio_stems(spool);
    v.extend(audio_stems(&spool.join(crate::recording::FINISHING_DIR)));
    v
}

fn audio_stems(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("wav") || e.eq_ignore_ascii_case("mp3"))
        })
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

/// Reconciles the spool, the catalog and the storage; says what it repaired; queues the
/// outbox for delivery; hands the recordings it found stored to the transcription stage.
pub async fn reconcile(
    shelf: &Shelf,
    spool: &Path,
    tx: &ShelfTx,
    metrics: &Metrics,
    transcriber: Option<&Arc<Transcriber>>,
) -> Result<()> {
    let live = spool_stems(spool);
    let r = shelf
        .reconcile(spool, &live)
        .await
        .context("reconciling the spool with the catalog")?;
    metrics.shelf.quarantined.inc_by(r.quarantined.len() as u64);
    tracing::info!(
        interrupted_in_spool = live.len(),
        waiting_for_storage = r.parcels.len(),
        quarantined = r.quarantined.len(),
        marked_stored = r.marked_stored.len(),
        lost = r.lost.len(),
        "reconciled spool, catalog and storage"
    );
    for id in &r.lost {
        tracing::warn!(contact = %id, "catalogued as unfinished, but no file is in the spool or in storage");
    }
    if let Some(t) = transcriber {
        for id in &r.marked_stored {
            t.stored(id.clone());
        }
    }
    for p in r.parcels {
        tx.send(ShelfMsg::Deliver(Box::new(p)));
    }
    Ok(())
}

/// Starts the shelf's tasks; returns the handle the recorder side sends through.
pub fn start(
    opened: &Opened,
    cfg: &StorageSection,
    spool: PathBuf,
    metrics: Arc<Metrics>,
    transcriber: Option<Arc<Transcriber>>,
) -> ShelfTx {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = ShelfTx {
        tx,
        spool_full: Arc::new(AtomicBool::new(false)),
        retention: Arc::new(cfg.retention.clone()),
        node: opened.shelf.node().into(),
        metrics: metrics.clone(),
    };
    tokio::spawn(deliveries(
        opened.shelf.clone(),
        rx,
        cfg.upload_concurrency,
        spool.clone(),
        metrics.clone(),
        transcriber,
    ));
    tokio::spawn(watch_spool(
        spool,
        cfg.spool_high_water_mb.saturating_mul(1024 * 1024),
        handle.spool_full.clone(),
        metrics.clone(),
    ));
    tokio::spawn(purge(
        opened.catalog.clone(),
        opened.storage.clone(),
        Duration::from_secs(cfg.purge_interval_s),
        metrics.clone(),
    ));
    if !cfg.webhooks.is_empty() {
        tokio::spawn(webhooks(
            opened.catalog.clone(),
            Duration::from_secs(cfg.webhook_timeout_s),
            cfg.backoff(),
            metrics,
        ));
    }
    handle
}

/// Carries out the recorder side's messages: catalogue entries in order, deliver finished
/// files a few at a time, and hand each stored recording to the transcription stage.
async fn deliveries(
    shelf: Shelf,
    mut rx: mpsc::UnboundedReceiver<ShelfMsg>,
    concurrency: usize,
    spool: PathBuf,
    metrics: Arc<Metrics>,
    transcriber: Option<Arc<Transcriber>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    // A parcel queued twice (the reconciliation and the finisher both found it) is
    // delivered once.
    let in_flight = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<PathBuf>::new(),
    ));
    while let Some(m) = rx.recv().await {
        match m {
            ShelfMsg::Opened { meta, stem } => {
                if let Err(e) = shelf.opened(&meta, &stem).await {
                    tracing::warn!(file = %stem, error = %e, "cannot catalogue a started recording");
                }
            }
            ShelfMsg::Decision(meta) => {
                let key = store::storage_key(
                    meta.start_unix_ms as i64,
                    &store::shelf::safe_name(&meta.contact_id),
                    "json",
                );
                match serde_json::to_vec_pretty(&meta) {
                    Ok(bytes) => {
                        if let Err(e) = shelf.storage().put_bytes(&key, bytes).await {
                            tracing::warn!(key, error = %e, "cannot keep the decision record");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot write the decision record"),
                }
                metrics.shelf.uploads_pending.dec();
            }
            ShelfMsg::Deliver(p) => {
                if !in_flight.lock().unwrap().insert(p.audio.clone()) {
                    metrics.shelf.uploads_pending.dec();
                    continue;
                }
                let permit = slots.clone().acquire_owned().await;
                let (shelf, metrics, in_flight, spool, transcriber) = (
                    shelf.clone(),
                    metrics.clone(),
                    in_flight.clone(),
                    spool.clone(),
                    transcriber.clone(),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    match shelf.deliver(&p).await {
                        Ok(d) => {
                            metrics.shelf.uploads.with_label_values(&["ok"]).inc();
                            tracing::info!(id = %d.id, key = %d.key, size = d.size, sha256 = %d.sha256,
                                attempts = d.attempts, "recording stored");
                            // Only once it is stored: a transcript never holds up storage.
                            if let (Some(t), false) = (&transcriber, d.statement) {
                                t.stored(d.id);
                            }
                        }
                        Err(e) => {
                            metrics.shelf.uploads.with_label_values(&["error"]).inc();
                            tracing::error!(file = %p.audio.display(), error = %e,
                                "cannot deliver a recording; moved to the quarantine");
                            quarantine(&spool, &p.audio);
                            metrics.shelf.quarantined.inc();
                        }
                    }
                    metrics.shelf.uploads_pending.dec();
                    in_flight.lock().unwrap().remove(&p.audio);
                });
            }
        }
    }
}

/// Moves an undeliverable parcel's files to the spool's quarantine (never deletes them).
fn quarantine(spool: &Path, audio: &Path) {
    let q = spool.join(store::QUARANTINE_DIR);
    let _ = std::fs::create_dir_all(&q);
    for f in [
        audio.to_path_buf(),
        recorder::sidecar_path(audio),
        store::shelf::peaks_path(audio),
    ] {
        if let Some(n) = f.file_name() {
            let _ = std::fs::rename(&f, q.join(n));
        }
    }
}

/// Bytes under `dir`, quarantine included (it is on the same disk).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Measures the spool every second; past `high_water` bytes (0: never) new recordings are
/// refused until it is back under.
async fn watch_spool(
    spool: PathBuf,
    high_water: u64,
    full: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let dir = spool.clone();
        let bytes = tokio::task::spawn_blocking(move || dir_bytes(&dir))
            .await
            .unwrap_or(0);
        metrics
            .shelf
            .spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let over = high_water > 0 && bytes > high_water;
        if full.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::error!(bytes, high_water, "spool past its high-water mark: new recordings are refused until storage catches up");
            } else {
                tracing::warn!(
                    bytes,
                    high_water,
                    "spool back under its high-water mark: recordings resume"
                );
            }
        }
    }
}

fn now_ms() -> i64 {
    crate::recording::unix_ms() as i64
}

/// The retention job: removes from storage the audio of recordings past retention or
/// deleted (never held ones: the catalog does not offer them), then marks them purged.
async fn purge(catalog: Catalog, storage: Storage, every: Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        loop {
            let batch = match catalog.purge_candidates(now_ms(), 100).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "purge: cannot list candidates; next pass later");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut progressed = false;
            for e in batch {
                let why = if e.deleted_at_ms.is_some() {
                    "deleted"
                } else {
                    "retention"
                };
                let mut keys: Vec<String> = Vec::new();
                if let Some(k) = &e.storage_key {
                    keys.push(k.clone());
                    keys.push(store::shelf::companion_key(k, "json"));
                    keys.push(store::shelf::companion_key(k, "peaks.json"));
                }
                for s in &e.statements {
                    if let Some(k) = &s.storage_key {
                        keys.push(k.clone());
                        keys.push(store::shelf::companion_key(k, "json"));
                        keys.push(store::shelf::companion_key(k, "peaks.json"));
                    }
                }
                let mut ok = true;
                for k in &keys {
                    if let Err(err) = storage.delete(k).await {
                        tracing::warn!(key = %k, error = %err, "purge: cannot delete; next pass later");
                        ok = false;
                    }
                }
                if ok {
                    match catalog.mark_purged(&e.contact_id, now_ms()).await {
                        Ok(true) => {
                            progressed = true;
                            metrics.shelf.purged.inc();
                            tracing::info!(contact = %e.contact_id, reason = why,
                                retain_until_ms = e.retain_until_ms, "recording purged");
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(contact = %e.contact_id, error = %err, "purge: cannot mark purged")
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }
}

/// The webhook sender: claims due deliveries from the catalog's outbox (so two nodes never
/// send the same one at once), POSTs them as JSON, and retries with backoff until the
/// receiver answers 2xx.
async fn webhooks(catalog: Catalog, timeout: Duration, backoff: Backoff, metrics: Arc<Metrics>) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client; webhooks stay queued");
            return;
        }
    };
    let lease_ms = i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_mul(2);
    loop {
        let batch = match catalog.claim_webhooks(now_ms(), lease_ms, 16).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim deliveries");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        for d in batch {
            let r = client
                .post(&d.url)
                .header("content-type", "application/json")
                .header("x-tapir-event", &d.event)
                .header("x-tapir-delivery", d.id.to_string())
                .body(d.payload.to_string())
                .send()
                .await;
            let failure = match r {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status().as_u16())),
                Err(e) => Some(e.without_url().to_string()),
            };
            match failure {
                None => {
                    metrics
                        .shelf
                        .webhooks
                        .with_label_values(&["delivered"])
                        .inc();
                    if let Err(e) = catalog.webhook_delivered(d.id, now_ms()).await {
                        tracing::warn!(delivery = d.id, error = %e, "webhooks: delivered but not marked; it may be sent again");
                    }
                }
                Some(why) => {
                    metrics.shelf.webhooks.with_label_values(&["failed"]).inc();
                    let wait = backoff.delay(u32::try_from(d.attempts).unwrap_or(u32::MAX));
                    let next = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    tracing::warn!(delivery = d.id, attempt = d.attempts, error = %why,
                        retry_in_ms = wait.as_millis() as u64, "webhook not acknowledged");
                    let _ = catalog.webhook_failed(d.id, next, &why).await;
                }
            }
        }
    }
}
