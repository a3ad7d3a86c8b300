//! The storage against a local directory and a real S3 server (`s3s-fs`, in-process on a
//! loopback port), including the server stopped in the middle of an upload.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::s3::{S3Server, BUCKET};
use sha2::{Digest, Sha256};
use store::{Backoff, S3Config, Storage, StorageConfig, StoreError};

const MIB: usize = 1024 * 1024;

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn s3_config(server: &S3Server, prefix: &str) -> S3Config {
    common::s3::set_credentials();
    S3Config {
        endpoint: Some(server.endpoint()),
        prefix: prefix.into(),
        region: Some("us-east-1".into()),
        allow_http: true,
        request_retries: 0,
        timeout_s: 20,
        ..S3Config::new(BUCKET)
    }
}

/// put, verify, ranged and whole reads, size, delete: the same on every backend.
async fn put_read_delete(storage: &Storage, spool: &Path) {
    storage.check().await.unwrap();
    // Small (one request) and large (several parts, the last one short).
    for (name, len) in [("small", 100_000usize), ("large", 11 * MIB + 12_345)] {
        let data = pattern(len, len as u64);
        let file = write_file(spool, &format!("{name}.wav"), &data);
        let key = format!("2024/03/01/{name}.wav");
        let o = storage.put_file(&key, &file).await.unwrap();
        assert_eq!(
            (o.size, o.sha256.as_str(), o.attempts),
            (len as u64, sha(&data).as_str(), 1)
        );
        storage.verify(&key, o.size, &o.sha256).await.unwrap();
        assert_eq!(storage.size(&key).await.unwrap(), Some(len as u64));
        // Exactly the bytes asked for, across a part boundary too.
        for r in [
            0..1,
            44..4044,
            (len as u64 - 10)..len as u64,
            (5 * MIB as u64 - 3)..(5 * MIB as u64 + 3),
        ] {
            if r.end > len as u64 {
                continue;
            }
            let got = storage.read_bytes(&key, Some(r.clone())).await.unwrap();
            assert_eq!(
                &got[..],
                &data[r.start as usize..r.end as usize],
                "{name} {r:?}"
            );
        }
        let read = storage.read(&key, Some(10..20)).await.unwrap();
        assert_eq!((read.size, read.range.clone()), (len as u64, 10..20));
        // A range running past the end is clipped to the end.
        let tail = storage
            .read_bytes(&key, Some(len as u64 - 5..len as u64 + 100))
            .await
            .unwrap();
        assert_eq!(&tail[..], &data[len - 5..]);
        assert_eq!(
            &storage.read_bytes(&key, None).await.unwrap()[..],
            &data[..]
        );
        // A wrong expectation is caught.
        let e = storage
            .verify(&key, o.size + 1, &o.sha256)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Verify { .. }), "{e}");
        let e = storage
            .verify(&key, o.size, &sha(b"other"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Verify { .. }), "{e}");
        storage.delete(&key).await.unwrap();
        assert_eq!(storage.size(&key).await.unwrap(), None);
        storage.delete(&key).await.unwrap();
        assert!(storage.read(&key, None).await.unwrap_err().is_not_found());
    }
    // A missing spool file is an IO error and is not retried.
    let e = storage
        .put_file_retrying(
            "2024/03/01/x.wav",
            &spool.join("missing.wav"),
            Backoff::default(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert!(matches!(
        storage.put_file("../x.wav", &spool.join("small.wav")).await,
        Err(StoreError::BadKey(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let root = dir.path().join("recordings");
    let storage = Storage::open(&StorageConfig::Local(root.clone()))
        .unwrap()
        .with_part_size(5 * MIB);
    put_read_delete(&storage, spool.path()).await;
    // Keys are paths under the directory.
    let data = pattern(1000, 7);
    let file = write_file(spool.path(), "c1.wav", &data);
    storage.put_file("2024/03/01/c1.wav", &file).await.unwrap();
    assert_eq!(std::fs::read(root.join("2024/03/01/c1.wav")).unwrap(), data);
    // A file corrupted in storage fails verification.
    std::fs::write(root.join("2024/03/01/c1.wav"), pattern(1000, 8)).unwrap();
    let e = storage
        .verify("2024/03/01/c1.wav", 1000, &sha(&data))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
}

/// On the spool's filesystem a local store links the spool file (no second copy of the
/// audio); from another filesystem it copies. Both are verified and read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_storage_links_on_one_filesystem_and_copies_across() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageConfig::Local(dir.path().join("recordings"))).unwrap();
    let data = pattern(300_000, 11);
    let same = write_file(dir.path(), "same.wav", &data);
    let o = storage
        .put_file("2024/03/01/same.wav", &same)
        .await
        .unwrap();
    assert_eq!((o.size, o.sha256.as_str()), (300_000, sha(&data).as_str()));
    let stored = dir.path().join("recordings/2024/03/01/same.wav");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().ino(),
        std::fs::metadata(&same).unwrap().ino(),
        "linked, not copied"
    );
    // Storing it again (a retry) replaces the link; no temporary name is left behind.
    storage
        .put_file("2024/03/01/same.wav", &same)
        .await
        .unwrap();
    let names: Vec<_> = std::fs::read_dir(stored.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("same.wav")]);
    // The spool name goes, the stored object stays.
    std::fs::remove_file(&same).unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), data);

    // /dev/shm is a tmpfs: another filesystem than the temporary directory's, when it is.
    let shm = Path::new("/dev/shm");
    let other = tempfile::tempdir_in(shm).unwrap();
    if std::fs::metadata(shm).unwrap().dev() != std::fs::metadata(dir.path()).unwrap().dev() {
        let far = write_file(other.path(), "far.wav", &data);
        let o = storage.put_file("2024/03/01/far.wav", &far).await.unwrap();
        assert_eq!(o.sha256, sha(&data));
        let stored = dir.path().join("recordings/2024/03/01/far.wav");
        assert_ne!(
            std::fs::metadata(&stored).unwrap().ino(),
            std::fs::metadata(&far).unwrap().ino()
        );
        assert_eq!(std::fs::read(&stored).unwrap(), data);
    }
    // Hashed by the caller: linked without reading it again, the size checked.
    let hashed = write_file(dir.path(), "hashed.wav", &data);
    let o = storage
        .put_hashed_file("2024/03/01/hashed.wav", &hashed, 300_000, &sha(&data))
        .await
        .unwrap();
    assert_eq!(o.sha256, sha(&data));
    let e = storage
        .put_hashed_file("2024/03/01/hashed.wav", &hashed, 299_999, &sha(&data))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Verify { .. }), "{e}");
    // A missing spool file is an error, not an empty object.
    let e = storage
        .put_file("2024/03/01/gone.wav", &dir.path().join("gone.wav"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server() {
    let server = S3Server::start().await;
    let spool = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageConfig::S3(s3_config(&server, "tapir/")))
        .unwrap()
        .with_part_size(5 * MIB);
    assert!(storage.describe().contains(&server.endpoint()));
    put_read_delete(&storage, spool.path()).await;
    // The prefix is honoured: the object lies under it in the bucket.
    let data = pattern(3000, 9);
    let file = write_file(spool.path(), "c1.wav", &data);
    storage.put_file("2024/03/01/c1.wav", &file).await.unwrap();
    assert_eq!(
        std::fs::read(server.object_path("tapir/2024/03/01/c1.wav")).unwrap(),
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_every_attempt_and_count_them() {
    let server = S3Server::start_with_secret("another-secret").await;
    let cfg = s3_config(&server, "");
    let storage = Storage::open(&StorageConfig::S3(cfg)).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let file = write_file(spool.path(), "a.wav", b"abc");
    let e = storage
        .put_file_retrying(
            "k/a.wav",
            &file,
            Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            Some(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Storage { .. }), "{e}");
    assert_eq!(*storage.failures().borrow(), 2);
    assert!(!server.object_path("k/a.wav").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_s3_is_an_error_naming_it() {
    let mut server = S3Server::start().await;
    let storage = Storage::open(&StorageConfig::S3(s3_config(&server, ""))).unwrap();
    storage.check().await.unwrap();
    server.stop().await;
    let e = storage.check().await.unwrap_err().to_string();
    assert!(e.contains(&server.endpoint()), "{e}");
    server.restart().await;
    storage.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_the_server_stopping_mid_way() {
    let mut server = S3Server::start().await;
    let spool = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageConfig::S3(s3_config(&server, "")))
        .unwrap()
        .with_part_size(5 * MIB);
    let data = pattern(12 * MIB, 42);
    let file = write_file(spool.path(), "long-call.wav", &data);
    let mut failures = storage.failures();
    server.hold_next_part();
    let held = server.part_held.clone();
    let up = {
        let storage = storage.clone();
        tokio::spawn(async move {
            let backoff = Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            };
            storage
                .put_file_retrying("2024/03/01/long-call.wav", &file, backoff, None)
                .await
        })
    };
    // The upload is under way: a part has reached the server.
    held.notified().await;
    server.stop().await;
    // The attempt fails (the server is gone) and the storage retries on its own.
    failures.wait_for(|n| *n >= 1).await.unwrap();
    assert!(!up.is_finished());
    server.restart().await;
    let o = tokio::time::timeout(Duration::from_secs(120), up)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(o.attempts >= 2, "{o:?}");
    assert_eq!((o.size, o.sha256.clone()), (data.len() as u64, sha(&data)));
    assert_eq!(
        std::fs::read(server.object_path("2024/03/01/long-call.wav")).unwrap(),
        data
    );
    storage.verify(&o.key, o.size, &o.sha256).await.unwrap();
}
