//! Durable object storage for finished recordings: a local directory by default, any
//! S3-compatible store at scale, both through the `object_store` crate.
//!
//! [`Storage::put_file`] streams a local file up (in parts above [`PART_SIZE`]), hashing it
//! on the way, then verifies what the store holds: its size from a `HEAD`, and its SHA-256 by
//! reading it back (unless the config turns that off). A local directory on the spool's
//! filesystem gets a hard link instead of a copy, hashed once as it is stored. Only a verified object may be marked
//! stored in the catalog. [`Storage::put_file_retrying`] repeats a failed upload with backoff,
//! so a store that goes away and comes back costs time, never the file.
//!
//! Credentials for S3 come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the instance's metadata service), never
//! from tapir's config file.
//!
//! Unlike the sans-IO cores this is an adapter: it does IO on tokio. What needs deciding (the
//! key of a recording, the backoff schedule) is in pure functions ([`storage_key`],
//! [`Backoff::delay`]).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::error::StoreError;

/// Files larger than this are uploaded in parts of this size (S3's minimum part is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
const READ_CHUNK: usize = 256 * 1024;

/// The directory used when no storage is configured, relative to the working directory.
pub const DEFAULT_LOCAL_DIR: &str = "recordings";

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `https://…` of the service; absent for AWS itself (then `region` picks the endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Prepended to every key (`tapir/` puts `2024/…` under `tapir/2024/…`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (a local MinIO or test server).
    #[serde(default)]
    pub allow_http: bool,
    /// Read every object back after upload to check its SHA-256 (else the size only).
    #[serde(default = "yes")]
    pub verify_read_back: bool,
    /// Retries of one request inside the client; the whole upload is retried by
    /// [`Storage::put_file_retrying`] on top of this.
    #[serde(default = "default_request_retries")]
    pub request_retries: usize,
    /// Timeout of one request, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn yes() -> bool {
    true
}

fn default_request_retries() -> usize {
    3
}

fn default_timeout_s() -> u64 {
    60
}

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            endpoint: None,
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            allow_http: false,
            verify_read_back: true,
            request_retries: default_request_retries(),
            timeout_s: default_timeout_s(),
        }
    }
}

/// Where recordings are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory (created if missing).
    Local(PathBuf),
    S3(S3Config),
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Local(PathBuf::from(DEFAULT_LOCAL_DIR))
    }
}

/// What the store holds after a verified upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Upload attempts it took (1 when the first one succeeded).
    pub attempts: u32,
}

/// A read of (part of) an object.
pub struct ObjectRead {
    /// Size of the whole object.
    pub size: u64,
    /// The bytes this read returns.
    pub range: Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Exponential backoff: `initial`, doubled after each failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << shift).min(self.max)
    }
}

/// Civil date (year, month, day) of a unix-millisecond time, UTC (Howard Hinnant's algorithm).
pub fn civil_date(unix_ms: i64) -> (i64, u32, u32) {
    let days = unix_ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The key of a recording: `yyyy/mm/dd/<name>.<ext>` by the call's start (UTC). Characters
/// outside `[A-Za-z0-9._-]` in `name` become `_`, so no key can climb out of its day.
pub fn storage_key(start_ms: i64, name: &str, ext: &str) -> String {
    let (y, m, d) = civil_date(start_ms);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.chars().all(|c| c == '.') {
        safe.replace('.', "_") + "_"
    } else {
        safe
    };
    format!("{y:04}/{m:02}/{d:02}/{safe}.{ext}")
}

#[derive(Debug, Clone)]
enum Kind {
    Local(LocalFileSystem),
    S3,
}

/// The recordings' object store (see the module docs). Cloning shares the client.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    kind: Arc<Kind>,
    prefix: String,
    verify_read_back: bool,
    describe: String,
    failures: Arc<watch::Sender<u64>>,
    part_size: usize,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

impl Storage {
    /// Opens the storage. Nothing is sent yet: [`Storage::check`] proves it is reachable.
    pub fn open(cfg: &StorageConfig) -> Result<Storage, StoreError> {
        let (store, kind, prefix, verify, describe): (
            Arc<dyn ObjectStore>,
            Kind,
            String,
            bool,
            String,
        ) = match cfg {
            StorageConfig::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(io_err("create storage dir", dir))?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| StoreError::StorageConfig(format!("{}: {e}", dir.display())))?;
                (
                    Arc::new(fs.clone()),
                    Kind::Local(fs),
                    String::new(),
                    true,
                    format!("local directory {}", dir.display()),
                )
            }
            StorageConfig::S3(s3) => {
                if s3.bucket.is_empty() {
                    return Err(StoreError::StorageConfig("s3: bucket is empty".into()));
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_allow_http(s3.allow_http)
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig {
                            init_backoff: Duration::from_millis(100),
                            max_backoff: Duration::from_secs(5),
                            base: 2.0,
                        },
                        max_retries: s3.request_retries,
                        retry_timeout: Duration::from_secs(s3.timeout_s.max(1) * 2),
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(Duration::from_secs(s3.timeout_s.max(1)))
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_allow_http(s3.allow_http),
                    );
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                let store = b
                    .build()
                    .map_err(|e| StoreError::StorageConfig(format!("s3: {e}")))?;
                let prefix = s3.prefix.trim_matches('/').to_string();
                let describe = format!(
                    "s3 bucket {} at {}",
                    s3.bucket,
                    s3.endpoint.as_deref().unwrap_or("aws")
                );
                (
                    Arc::new(store),
                    Kind::S3,
                    prefix,
                    s3.verify_read_back,
                    describe,
                )
            }
        };
        Ok(Storage {
            store,
            kind: Arc::new(kind),
            prefix,
            verify_read_back: verify,
            describe,
            failures: Arc::new(watch::channel(0).0),
            part_size: PART_SIZE,
        })
    }

    /// Uploads files larger than `bytes` in parts of that size (S3 refuses parts below
    /// 5 MiB except the last).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// What this storage is, for logs (`s3 bucket b at http://…`, `local directory …`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Upload attempts that failed so far; a receiver to await the next one.
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StoreError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(StoreError::BadKey(key.to_string()));
        }
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|_| StoreError::BadKey(key.to_string()))
    }

    /// Proves the store answers: lists (at most) one object under the prefix. Errors name
    /// the store.
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut list = self.store.list(prefix.as_ref());
        match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(StoreError::Storage {
                op: "reach",
                key: self.describe.clone(),
                source: e,
            }),
        }
    }

    /// One upload of `file` to `key`, then verification. The file is read once; its hash is
    /// computed on the way.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<StoredObject, StoreError> {
        self.put_file_inner(key, file, None).await
    }

    /// [`Storage::put_file`] of a file whose size and SHA-256 the caller just computed: a
    /// local store that links it (the very inode that was hashed) checks the size and does
    /// not read it again; a copy or an upload is hashed and verified as usual, and must
    /// match.
    pub async fn put_hashed_file(
        &self,
        key: &str,
        file: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<StoredObject, StoreError> {
        self.put_file_inner(key, file, Some((size, sha256))).await
    }

    async fn put_file_inner(
        &self,
        key: &str,
        file: &Path,
        known: Option<(u64, &str)>,
    ) -> Result<StoredObject, StoreError> {
        let location = self.path(key)?;
        if let Kind::Local(fs) = &*self.kind {
            if let Some(o) = link_local(fs, &location, key, file, known).await? {
                return Ok(o);
            }
        }
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(io_err("open", file))?;
        let len = f.metadata().await.map_err(io_err("stat", file))?.len();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        if len <= self.part_size as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf)
                .await
                .map_err(io_err("read", file))?;
            hasher.update(&buf);
            size = buf.len() as u64;
            self.store
                .put(&location, PutPayload::from(buf))
                .await
                .map_err(|e| StoreError::storage("put", key, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| StoreError::storage("start upload", key, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
            let mut buf = vec![0u8; READ_CHUNK];
            let res: Result<(), StoreError> = async {
                loop {
                    let n = f.read(&mut buf).await.map_err(io_err("read", file))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    w.wait_for_capacity(2)
                        .await
                        .map_err(|e| StoreError::storage("upload part", key, e))?;
                    w.write(&buf[..n]);
                }
                Ok(())
            }
            .await;
            if let Err(e) = res {
                // Best effort: a store that is down will not hear it, and S3 lifecycle
                // rules clear abandoned parts.
                let _ = w.abort().await;
                return Err(e);
            }
            w.finish()
                .await
                .map_err(|e| StoreError::storage("finish upload", key, e))?;
        }
        let sha256 = hex::encode(hasher.finalize());
        self.verify(key, size, &sha256).await?;
        if let Kind::Local(fs) = &*self.kind {
            sync_local(fs, &location).await?;
        }
        Ok(StoredObject {
            key: key.to_string(),
            size,
            sha256,
            attempts: 1,
        })
    }

    /// [`Storage::put_file`] until it succeeds, waiting `backoff` between attempts; at most
    /// `max_attempts` when given. A missing local file is not retried.
    pub async fn put_file_retrying(
        &self,
        key: &str,
        file: &Path,
        backoff: Backoff,
        max_attempts: Option<u32>,
    ) -> Result<StoredObject, StoreError> {
        self.retrying(key, file, None, backoff, max_attempts).await
    }

    /// [`Storage::put_hashed_file`] until it succeeds, like [`Storage::put_file_retrying`].
    pub async fn put_hashed_file_retrying(
        &self,
        key: &str,
        file: &Path,
        size: u64,
        sha256: &str,
        backoff: Backoff,
    ) -> Result<StoredObject, StoreError> {
        self.retrying(key, file, Some((size, sha256)), backoff, None)
            .await
    }

    async fn retrying(
        &self,
        key: &str,
        file: &Path,
        known: Option<(u64, &str)>,
        backoff: Backoff,
        max_attempts: Option<u32>,
    ) -> Result<StoredObject, StoreError> {
        let mut failures = 0u32;
        loop {
            match self.put_file_inner(key, file, known).await {
                Ok(mut o) => {
                    o.attempts = failures + 1;
                    return Ok(o);
                }
                Err(e @ StoreError::Io { .. }) | Err(e @ StoreError::BadKey(_)) => return Err(e),
                Err(e) => {
                    failures += 1;
                    self.failures.send_modify(|n| *n += 1);
                    if max_attempts.is_some_and(|m| failures >= m) {
                        return Err(e);
                    }
                    let wait = backoff.delay(failures);
                    tracing::warn!(key, error = %e, attempt = failures, retry_in_ms = wait.as_millis() as u64,
                        "upload failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Checks that `key` holds `size` bytes hashing to `sha256`.
    pub async fn verify(&self, key: &str, size: u64, sha256: &str) -> Result<(), StoreError> {
        let location = self.path(key)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(|e| StoreError::storage("head", key, e))?;
        if meta.size != size {
            return Err(StoreError::Verify {
                key: key.to_string(),
                reason: format!("size {} in store, {size} written", meta.size),
            });
        }
        if self.verify_read_back {
            let mut stream = self
                .store
                .get(&location)
                .await
                .map_err(|e| StoreError::storage("get", key, e))?
                .into_stream();
            let mut h = Sha256::new();
            while let Some(chunk) = stream.next().await {
                h.update(chunk.map_err(|e| StoreError::storage("get", key, e))?);
            }
            let got = hex::encode(h.finalize());
            if got != sha256 {
                return Err(StoreError::Verify {
                    key: key.to_string(),
                    reason: format!("sha256 {got} in store, {sha256} written"),
                });
            }
        }
        Ok(())
    }

    /// Size of the object, `None` when there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.store.head(&self.path(key)?).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::storage("head", key, e)),
        }
    }

    /// Reads the whole object, or the bytes of `range` (end exclusive, clipped to the
    /// object's end). A range starting at or past the end is [`StoreError::Storage`]; check
    /// it against the catalog's size first to answer 416.
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, StoreError> {
        let location = self.path(key)?;
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&location, opts)
            .await
            .map_err(|e| StoreError::storage("get", key, e))?;
        let size = r.meta.size;
        let range = r.range.clone();
        let k = key.to_string();
        let stream = r
            .into_stream()
            .map(move |c| c.map_err(|e| StoreError::storage("get", &k, e)))
            .boxed();
        Ok(ObjectRead {
            size,
            range,
            stream,
        })
    }

    /// [`Storage::read`] collected into memory.
    pub async fn read_bytes(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, StoreError> {
        let mut r = self.read(key, range).await?;
        let mut out = Vec::with_capacity((r.range.end - r.range.start) as usize);
        while let Some(c) = r.stream.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(Bytes::from(out))
    }

    /// Writes a small object in one request (a decision record); no read-back.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let location = self.path(key)?;
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| StoreError::storage("put", key, e))?;
        if let Kind::Local(fs) = &*self.kind {
            sync_local(fs, &location).await?;
        }
        Ok(())
    }

    /// Deletes the object; deleting one that is not there succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::storage("delete", key, e)),
        }
    }
}

/// `LocalFileSystem` renames a finished upload into place but does not sync it: do so, file
/// and directory, so a stored recording survives power loss.
/// Local storage on the spool's filesystem: the spool file is hard-linked under its key
/// instead of copied, so storing a recording writes no audio a second time (a copy would
/// double the disk writes of every recorded call). The link is made under a temporary name
/// and renamed over the key (a hard link cannot replace a file), then the file and its
/// directory are synced. Verification reads the stored object once, hashing it, unless the
/// caller hashed that very file already (`known`: the size is checked then): it is the
/// spool's inode, which nothing writes once it reached the outbox.
///
/// `None` when the two are on different filesystems (or links are not supported there):
/// the caller copies instead.
async fn link_local(
    fs: &LocalFileSystem,
    location: &ObjectPath,
    key: &str,
    file: &Path,
    known: Option<(u64, &str)>,
) -> Result<Option<StoredObject>, StoreError> {
    let known = known.map(|(size, sha)| (size, sha.to_string()));
    let dest = fs
        .path_to_filesystem(location)
        .map_err(|e| StoreError::storage("locate", location.as_ref(), e))?;
    let src = file.to_path_buf();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || -> Result<Option<StoredObject>, StoreError> {
        use std::io::ErrorKind;
        use std::os::unix::fs::MetadataExt;
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(".{name}.link-{}", std::process::id()));
        let src_meta = std::fs::metadata(&src).map_err(io_err("stat", &src))?;
        let same_file = |p: &Path| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.dev() == src_meta.dev() && m.ino() == src_meta.ino())
        };
        // Already linked (a retry after a crash): renaming a link over another link of the
        // same file would do nothing and leave the temporary name behind.
        if !same_file(&dest) {
            let _ = std::fs::remove_file(&tmp);
            match std::fs::hard_link(&src, &tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StoreError::io("link", &src, e));
                }
                // EXDEV (another filesystem), EPERM/ENOTSUP (no links there): copy instead.
                Err(_) => return Ok(None),
            }
            let renamed = std::fs::rename(&tmp, &dest);
            let _ = std::fs::remove_file(&tmp);
            renamed.map_err(io_err("rename", &dest))?;
        }
        let f = std::fs::File::open(&dest).map_err(io_err("open", &dest))?;
        let sha256 = match known {
            // The inode the caller hashed: its size says nothing was appended since.
            Some((size, sha256)) => {
                let now = f.metadata().map_err(io_err("stat", &dest))?.len();
                if now != size {
                    return Err(StoreError::Verify {
                        key,
                        reason: format!("size {now} in store, {size} hashed"),
                    });
                }
                (size, sha256)
            }
            None => hash_open(f.try_clone().map_err(io_err("open", &dest))?, &dest)?,
        };
        f.sync_all().map_err(io_err("sync", &dest))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync dir", dir))?;
        Ok(Some(StoredObject {
            key,
            size: sha256.0,
            sha256: sha256.1,
            attempts: 1,
        }))
    })
    .await
    .map_err(|e| StoreError::io("link", file, std::io::Error::other(e)))?
}

/// Size and SHA-256 of an open file, read from its start.
fn hash_open(mut f: std::fs::File, path: &Path) -> Result<(u64, String), StoreError> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

async fn sync_local(fs: &LocalFileSystem, location: &ObjectPath) -> Result<(), StoreError> {
    let path = fs
        .path_to_filesystem(location)
        .map_err(|e| StoreError::storage("locate", location.as_ref(), e))?;
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", &path))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync dir", dir))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::io("sync", PathBuf::new(), std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400_000), (2000, 2, 29));
        assert_eq!(civil_date(1_709_251_199_999), (2024, 2, 29));
        assert_eq!(civil_date(1_709_251_200_000), (2024, 3, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(4_102_444_800_000), (2100, 1, 1));
    }

    #[test]
    fn keys_are_by_day_and_cannot_escape() {
        assert_eq!(
            storage_key(1_709_251_200_000, "1709251200000-node1-7", "wav"),
            "2024/03/01/1709251200000-node1-7.wav"
        );
        assert_eq!(
            storage_key(0, "../../etc/passwd", "mp3"),
            "1970/01/01/.._.._etc_passwd.mp3"
        );
        assert_eq!(storage_key(0, "..", "wav"), "1970/01/01/___.wav");
        assert_eq!(storage_key(0, "", "wav"), "1970/01/01/_.wav");
        assert_eq!(storage_key(0, "a b/ü", "wav"), "1970/01/01/a_b__.wav");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(0).as_millis(), 100);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn keys_outside_the_rules_are_refused() {
        let s = Storage::open(&StorageConfig::Local(tempfile::tempdir().unwrap().keep())).unwrap();
        for k in ["", "/a", "a//b", "a/../b", "./a"] {
            assert!(matches!(s.path(k), Err(StoreError::BadKey(_))), "{k}");
        }
        assert!(s.path("2024/01/01/x.wav").is_ok());
    }
}
