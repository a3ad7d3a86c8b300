//! The shelf: how a finished recording gets from the node's spool into storage and the
//! catalog, and how a node that restarts finds where each file stopped.
//!
//! A recording that finished waits in the spool's *outbox* (`<spool>/outbox/`) as its audio,
//! its JSON sidecar and its waveform peaks, synced to disk. [`Shelf::deliver`] then:
//!
//! 1. hashes the audio (SHA-256) and records the entry as `finished` (or `interrupted`, for a
//!    file repaired after a crash) with its size and hash: from here on the entry is the
//!    journal of the upload;
//! 2. uploads the audio, the sidecar and the peaks under `yyyy/mm/dd/<name>.*`, retrying with
//!    backoff for as long as the store is away, and verifies size and hash;
//! 3. marks the entry `stored`, queues the `recording.stored` webhooks, and only then removes
//!    the outbox files.
//!
//! Every step can be repeated: a file whose entry is already `stored` with the same hash is
//! not uploaded twice, so a crash between any two steps ends, after [`Shelf::reconcile`], with
//! the file stored once. Catalog errors during operation are retried like storage errors, so
//! a database outage delays a recording, never drops it.
//!
//! This is an adapter over [`Catalog`] and [`Storage`] (it does IO on tokio); the choices it
//! makes are the small pure functions at the bottom ([`parcel_kind`], [`classify`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use recorder::RecordingMetadata;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::error::StoreError;
use crate::model::{Entry, State, Statement};
use crate::storage::{storage_key, Backoff, Storage};

/// Subdirectory of the spool holding finished files that wait for storage.
pub const OUTBOX_DIR: &str = "outbox";
/// Subdirectory of the spool holding files the node could not make sense of (kept, never
/// deleted, for a person to look at).
pub const QUARANTINE_DIR: &str = "quarantine";

/// The webhook event sent when a recording is stored.
pub const EVENT_STORED: &str = "recording.stored";

/// How the shelf works.
#[derive(Debug, Clone)]
pub struct ShelfConfig {
    /// This node's name, written into every entry it catalogues.
    pub node: String,
    /// Wait between failed attempts (upload or catalog).
    pub backoff: Backoff,
    /// URLs that get a POST for every stored recording.
    pub webhooks: Vec<String>,
}

/// One finished file in the outbox.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// The audio in the outbox (`<name>.wav` or `<name>.mp3`).
    pub audio: PathBuf,
    /// Its final metadata (also written beside it as `<name>.json`).
    pub meta: RecordingMetadata,
    /// Repaired after a crash.
    pub interrupted: bool,
    /// Days to keep the recording; `None` keeps it until deleted.
    pub retention_days: Option<i32>,
}

impl Parcel {
    /// The file's name without extension: the stem of its keys.
    pub fn stem(&self) -> String {
        self.audio
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The sidecar beside the audio.
    pub fn sidecar(&self) -> PathBuf {
        recorder::sidecar_path(&self.audio)
    }

    /// The waveform peaks beside the audio.
    pub fn peaks(&self) -> PathBuf {
        peaks_path(&self.audio)
    }
}

/// `<name>.peaks.json` beside an audio file (or key).
pub fn peaks_path(audio: &Path) -> PathBuf {
    audio.with_extension("peaks.json")
}

/// The key of a companion object (sidecar or peaks) of the audio stored under `audio_key`.
pub fn companion_key(audio_key: &str, ext: &str) -> String {
    match audio_key.rsplit_once('.') {
        Some((stem, _)) => format!("{stem}.{ext}"),
        None => format!("{audio_key}.{ext}"),
    }
}

/// Whether a parcel is a contact's recording or one of its recorded statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParcelKind {
    /// The contact's recording, catalogued under this id: the contact id, or the file's stem
    /// when the contact was recorded into more than one file (a contact recorded again after
    /// its first file finished), so no file replaces another's entry.
    Recording { entry_id: String },
    /// A recorded statement, catalogued under its file's stem.
    Statement { id: String },
}

/// What a parcel is, from its metadata and file stem.
pub fn parcel_kind(meta: &RecordingMetadata, stem: &str) -> ParcelKind {
    if meta.statement_id.is_some() {
        ParcelKind::Statement {
            id: stem.to_string(),
        }
    } else if stem == safe_name(&meta.contact_id) {
        ParcelKind::Recording {
            entry_id: meta.contact_id.clone(),
        }
    } else {
        ParcelKind::Recording {
            entry_id: stem.to_string(),
        }
    }
}

/// The file-name form of an id (what the recorder names files after).
pub fn safe_name(name: &str) -> String {
    name.chars()
        .take(160)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What [`Shelf::deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The catalog id (contact id, or statement file id).
    pub id: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// Upload attempts of the audio and its companions (0 when the file was already stored,
    /// by an earlier run; more than the number of files when the store failed on the way).
    pub attempts: u32,
    pub statement: bool,
}

/// What [`Shelf::reconcile`] found and repaired at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Outbox files handed back for delivery.
    pub parcels: Vec<Parcel>,
    /// Files moved to the quarantine, with why.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Entries whose file was found in storage, verified, and marked stored.
    pub marked_stored: Vec<String>,
    /// Entries left `recording` by a crash with no file to repair: marked interrupted.
    pub lost: Vec<String>,
}

impl PartialEq for Parcel {
    fn eq(&self, other: &Self) -> bool {
        self.audio == other.audio && self.interrupted == other.interrupted
    }
}
impl Eq for Parcel {}

/// The delivery pipeline of one node (see the module docs). Cloning shares the clients.
#[derive(Debug, Clone)]
pub struct Shelf {
    catalog: Catalog,
    storage: Storage,
    cfg: ShelfConfig,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Errors that retrying cannot fix: the file or its data is at fault, not the service.
fn permanent(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Io { .. }
            | StoreError::BadKey(_)
            | StoreError::Corrupt { .. }
            | StoreError::BadQuery { .. }
    )
}

impl Shelf {
    pub fn new(catalog: Catalog, storage: Storage, cfg: ShelfConfig) -> Shelf {
        Shelf {
            catalog,
            storage,
            cfg,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// Runs `op` until it succeeds or fails for good, waiting the backoff between attempts.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if permanent(&e) => return Err(e),
                Err(e) => {
                    failures += 1;
                    let wait = self.cfg.backoff.delay(failures);
                    tracing::warn!(what, error = %e, attempt = failures,
                        retry_in_ms = wait.as_millis() as u64, "catalog unavailable; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Catalogues a recording that has just started (state `recording`), so a crash before
    /// it finishes still leaves its entry. Retried while the catalog is away.
    pub async fn opened(&self, meta: &RecordingMetadata, stem: &str) -> Result<(), StoreError> {
        let ParcelKind::Recording { entry_id } = parcel_kind(meta, stem) else {
            return Ok(());
        };
        let mut e = Entry::from_metadata(meta, &self.cfg.node, State::Recording, now_ms())?;
        e.contact_id = entry_id;
        self.retrying("catalogue a started recording", || self.catalog.upsert(&e))
            .await
    }

    /// Takes one outbox parcel to storage and the catalog (see the module docs). Only
    /// returns an error the file itself causes (unreadable, metadata that does not map);
    /// the caller quarantines it.
    pub async fn deliver(&self, p: &Parcel) -> Result<Delivered, StoreError> {
        let stem = p.stem();
        let kind = parcel_kind(&p.meta, &stem);
        let (size, sha256) = hash_file(&p.audio).await?;
        let ext = p
            .audio
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("wav")
            .to_ascii_lowercase();
        let key = storage_key(p.meta.start_unix_ms as i64, &stem, &ext);
        let state = if p.interrupted {
            State::Interrupted
        } else {
            State::Finished
        };
        let now = now_ms();
        let (id, statement) = match &kind {
            ParcelKind::Recording { entry_id } => (entry_id.clone(), false),
            ParcelKind::Statement { id } => (id.clone(), true),
        };
        // Already stored with this very file: a crash came after the upload, before the
        // outbox was cleared. Nothing to send again.
        let stored = if statement {
            self.retrying("look up a statement", || {
                self.catalog
                    .statements_by_id(p.meta.statement_id.as_deref().unwrap_or(""))
            })
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .is_some_and(|s| s.state == State::Stored && s.sha256.as_deref() == Some(&sha256))
        } else {
            self.retrying("look up an entry", || self.catalog.get(&id))
                .await?
                .is_some_and(|e| e.state == State::Stored && e.sha256.as_deref() == Some(&sha256))
        };
        if stored {
            tracing::info!(id, key, "already stored; clearing the outbox");
            self.clear_outbox(p).await;
            return Ok(Delivered {
                id,
                key,
                size,
                sha256,
                attempts: 0,
                statement,
            });
        }
        let size_i = i64::try_from(size).unwrap_or(i64::MAX);
        if statement {
            let mut s = Statement::from_metadata(&p.meta, &id, state, now)?;
            s.size_bytes = Some(size_i);
            s.sha256 = Some(sha256.clone());
            self.retrying("catalogue a statement", || {
                self.catalog.upsert_statement(&s)
            })
            .await?;
        } else {
            let mut e = Entry::from_metadata(&p.meta, &self.cfg.node, state, now)?
                .with_retention(p.retention_days);
            e.contact_id = id.clone();
            e.size_bytes = Some(size_i);
            e.sha256 = Some(sha256.clone());
            self.retrying("catalogue a finished recording", || self.catalog.upsert(&e))
                .await?;
        }
        // Companions first: once the entry says stored, everything it points at is there.
        let mut attempts = 0;
        for (path, ext) in [(p.sidecar(), "json"), (p.peaks(), "peaks.json")] {
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                attempts += self
                    .storage
                    .put_file_retrying(&companion_key(&key, ext), &path, self.cfg.backoff, None)
                    .await?
                    .attempts;
            }
        }
        let o = self
            .storage
            .put_hashed_file_retrying(&key, &p.audio, size, &sha256, self.cfg.backoff)
            .await?;
        if o.sha256 != sha256 || o.size != size {
            // The outbox file changed under us: nothing should write there. Keep it.
            return Err(StoreError::Verify {
                key,
                reason: format!(
                    "outbox file changed during upload (sha256 {} then {})",
                    sha256, o.sha256
                ),
            });
        }
        let now = now_ms();
        if statement {
            self.retrying("mark a statement stored", || {
                self.catalog
                    .mark_statement_stored(&id, &key, size_i, &sha256, now)
            })
            .await?;
        } else {
            self.retrying("mark a recording stored", || {
                self.catalog.mark_stored(&id, &key, size_i, &sha256, now)
            })
            .await?;
            let payload = serde_json::json!({
                "event": EVENT_STORED,
                "contact_id": id,
                "node": self.cfg.node,
                "storage_key": key,
                "size_bytes": size,
                "sha256": sha256,
                "format": ext,
                "call_id_customer": p.meta.call_id_customer,
                "call_id_agent": p.meta.call_id_agent,
                "interrupted": p.interrupted,
            });
            for url in &self.cfg.webhooks {
                self.retrying("queue a webhook", || {
                    self.catalog
                        .enqueue_webhook(url, EVENT_STORED, &payload, now)
                })
                .await?;
            }
        }
        self.clear_outbox(p).await;
        Ok(Delivered {
            id,
            key,
            size,
            sha256,
            attempts: attempts + o.attempts,
            statement,
        })
    }

    /// Removes a delivered parcel's files from the outbox and syncs the directory.
    async fn clear_outbox(&self, p: &Parcel) {
        for f in [p.audio.clone(), p.sidecar(), p.peaks()] {
            match tokio::fs::remove_file(&f).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "cannot clear the outbox")
                }
            }
        }
        if let Some(dir) = p.audio.parent() {
            let _ = sync_dir(dir).await;
        }
    }

    /// At start: finds what a crash left between the spool, the catalog and the storage.
    /// Returns the outbox parcels to deliver (the caller delivers them like any other), moves
    /// what it cannot read to the quarantine, marks stored the entries whose verified file is
    /// already in storage, and marks interrupted the entries of this node still `recording`
    /// whose file is neither in the spool nor the outbox (`live_stems`: stems of files the
    /// spool repair or the finisher will deliver; their files in the outbox are left alone).
    pub async fn reconcile(
        &self,
        spool: &Path,
        live_stems: &[String],
    ) -> Result<Reconciled, StoreError> {
        let outbox = spool.join(OUTBOX_DIR);
        let quarantine = spool.join(QUARANTINE_DIR);
        tokio::fs::create_dir_all(&outbox)
            .await
            .map_err(|e| StoreError::io("create outbox", &outbox, e))?;
        let mut out = Reconciled::default();
        let mut names: Vec<PathBuf> = Vec::new();
        let mut rd = tokio::fs::read_dir(&outbox)
            .await
            .map_err(|e| StoreError::io("read outbox", &outbox, e))?;
        while let Ok(Some(d)) = rd.next_entry().await {
            names.push(d.path());
        }
        names.sort();
        let mut stems: Vec<String> = live_stems.to_vec();
        for path in &names {
            // A file whose recording is still being repaired or finished is not ours yet.
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if live_stems.iter().any(|s| {
                name.strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            }) {
                continue;
            }
            match classify(path, &names) {
                OutboxFile::Audio => {
                    match RecordingMetadata::read_from(&recorder::sidecar_path(path)) {
                        Ok(meta) if !meta.contact_id.is_empty() => {
                            let stem = path
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            stems.push(stem);
                            out.parcels.push(Parcel {
                                audio: path.clone(),
                                interrupted: meta.interrupted,
                                retention_days: meta.retention_days,
                                meta,
                            });
                        }
                        Ok(_) => out
                            .quarantined
                            .push((path.clone(), "sidecar without a contact id".into())),
                        Err(e) => out
                            .quarantined
                            .push((path.clone(), format!("sidecar: {e}"))),
                    }
                }
                OutboxFile::Companion => {}
                OutboxFile::Orphan(why) => out.quarantined.push((path.clone(), why.into())),
            }
        }
        if !out.quarantined.is_empty() {
            tokio::fs::create_dir_all(&quarantine)
                .await
                .map_err(|e| StoreError::io("create quarantine", &quarantine, e))?;
            for (f, why) in &out.quarantined {
                let Some(name) = f.file_name() else { continue };
                let to = quarantine.join(name);
                match tokio::fs::rename(f, &to).await {
                    Ok(()) => {
                        tracing::warn!(file = %f.display(), to = %to.display(), why, "quarantined a file the outbox cannot deliver")
                    }
                    Err(e) => {
                        tracing::error!(file = %f.display(), error = %e, "cannot quarantine")
                    }
                }
                // Its sidecar and peaks go with it.
                for comp in [recorder::sidecar_path(f), peaks_path(f)] {
                    if let Some(n) = comp.file_name() {
                        let _ = tokio::fs::rename(&comp, quarantine.join(n)).await;
                    }
                }
            }
        }
        // Entries of this node that never reached storage (listed before any is changed).
        let mut unfinished = Vec::new();
        for state in [State::Recording, State::Finished, State::Interrupted] {
            unfinished.extend(
                self.retrying("list this node's unfinished entries", || {
                    self.catalog.by_node_state(&self.cfg.node, state, 10_000)
                })
                .await?,
            );
        }
        {
            for e in unfinished {
                let state = e.state;
                let stem = safe_name(&e.contact_id);
                if stems.iter().any(|s| *s == stem || *s == e.contact_id) {
                    continue;
                }
                // Stored but not marked: the crash came between the upload and the mark.
                if let (Some(size), Some(sha)) = (e.size_bytes, e.sha256.as_deref()) {
                    let key = storage_key(e.start_ms, &stem, &e.format);
                    if self.storage.verify(&key, size as u64, sha).await.is_ok() {
                        self.retrying("mark a recording stored", || {
                            self.catalog
                                .mark_stored(&e.contact_id, &key, size, sha, now_ms())
                        })
                        .await?;
                        out.marked_stored.push(e.contact_id.clone());
                        continue;
                    }
                }
                if state == State::Recording {
                    self.retrying("mark a lost recording", || {
                        self.catalog
                            .set_state(&e.contact_id, State::Interrupted, now_ms())
                    })
                    .await?;
                }
                out.lost.push(e.contact_id.clone());
            }
        }
        Ok(out)
    }
}

/// What a file in the outbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxFile {
    /// A recording's audio (with its sidecar beside it).
    Audio,
    /// A sidecar or peaks file of an audio file that is there.
    Companion,
    /// Anything else: quarantined, with why.
    Orphan(&'static str),
}

/// Classifies `path` among the outbox's `names`.
pub fn classify(path: &Path, names: &[PathBuf]) -> OutboxFile {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with('.') {
        // A temporary file of an interrupted write: its audio is written again.
        return OutboxFile::Orphan("temporary file");
    }
    let audio_of = |stem: &str| {
        ["wav", "mp3"].iter().any(|ext| {
            names
                .iter()
                .any(|n| *n == path.with_file_name(format!("{stem}.{ext}")))
        })
    };
    if let Some(stem) = name.strip_suffix(".peaks.json") {
        return if audio_of(stem) {
            OutboxFile::Companion
        } else {
            OutboxFile::Orphan("peaks without audio")
        };
    }
    if let Some(stem) = name.strip_suffix(".json") {
        return if audio_of(stem) {
            OutboxFile::Companion
        } else {
            OutboxFile::Orphan("sidecar without audio")
        };
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".wav") || lower.ends_with(".mp3") {
        if names.contains(&recorder::sidecar_path(path)) {
            OutboxFile::Audio
        } else {
            OutboxFile::Orphan("audio without its sidecar")
        }
    } else {
        OutboxFile::Orphan("not a recording")
    }
}

/// Size and SHA-256 (lower-case hex) of a local file.
pub async fn hash_file(path: &Path) -> Result<(u64, String), StoreError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&p).map_err(|e| StoreError::io("open", &p, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| StoreError::io("read", &p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, hex::encode(h.finalize())))
    })
    .await
    .map_err(|e| StoreError::io("hash", path, std::io::Error::other(e)))?
}

/// `fsync` of a directory, so a rename or removal in it survives power loss.
pub async fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("sync dir", &d, e))
    })
    .await
    .map_err(|e| StoreError::io("sync dir", dir, std::io::Error::other(e)))?
}

/// A pause used by callers between passes over work that failed (purge, webhooks).
pub fn idle_wait(failures: u32, backoff: Backoff) -> Duration {
    if failures == 0 {
        Duration::ZERO
    } else {
        backoff.delay(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_keys_sit_beside_the_audio() {
        assert_eq!(
            companion_key("2026/12/01/c1.wav", "peaks.json"),
            "2026/12/01/c1.peaks.json"
        );
        assert_eq!(
            companion_key("2026/12/01/c1.mp3", "json"),
            "2026/12/01/c1.json"
        );
    }

    #[test]
    fn the_outbox_keeps_pairs_and_quarantines_the_rest() {
        let d = Path::new("/s/outbox");
        let names: Vec<PathBuf> = [
            "a.wav",
            "a.json",
            "a.peaks.json",
            "b.mp3",
            "c.json",
            "x.txt",
            "d.wav",
        ]
        .iter()
        .map(|n| d.join(n))
        .collect();
        assert_eq!(classify(&d.join("a.wav"), &names), OutboxFile::Audio);
        assert_eq!(classify(&d.join("a.json"), &names), OutboxFile::Companion);
        assert_eq!(
            classify(&d.join("a.peaks.json"), &names),
            OutboxFile::Companion
        );
        assert!(matches!(
            classify(&d.join("b.mp3"), &names),
            OutboxFile::Orphan(_)
        ));
        assert!(matches!(
            classify(&d.join("c.json"), &names),
            OutboxFile::Orphan(_)
        ));
        assert!(matches!(
            classify(&d.join("x.txt"), &names),
            OutboxFile::Orphan(_)
        ));
        assert!(matches!(
            classify(&d.join("d.wav"), &names),
            OutboxFile::Orphan(_)
        ));
    }

    #[test]
    fn a_second_file_of_a_contact_gets_its_own_entry() {
        let meta = RecordingMetadata {
            contact_id: "c@1".into(),
            ..Default::default()
        };
        assert_eq!(
            parcel_kind(&meta, "c_1"),
            ParcelKind::Recording {
                entry_id: "c@1".into()
            }
        );
        assert_eq!(
            parcel_kind(&meta, "c_1-2"),
            ParcelKind::Recording {
                entry_id: "c_1-2".into()
            }
        );
        let st = RecordingMetadata {
            statement_id: Some("terms".into()),
            ..meta
        };
        assert_eq!(
            parcel_kind(&st, "c_1-statement-terms"),
            ParcelKind::Statement {
                id: "c_1-statement-terms".into()
            }
        );
    }
}
