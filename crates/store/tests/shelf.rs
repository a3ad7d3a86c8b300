//! The shelf on SQLite and a local directory (and on S3 for the outage case): a parcel is
//! catalogued, stored once with its hash, its outbox cleared; a crash at each step ends, after
//! reconciliation, with the file stored once; foreign files are quarantined, never deleted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::s3::{S3Server, BUCKET};
use recorder::RecordingMetadata;
use sha2::{Digest, Sha256};
use store::{
    Backoff, Catalog, Parcel, S3Config, Shelf, ShelfConfig, State, Storage, StorageConfig,
    OUTBOX_DIR, QUARANTINE_DIR,
};

struct Rig {
    _dir: tempfile::TempDir,
    spool: PathBuf,
    shelf_dir: PathBuf,
    shelf: Shelf,
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

async fn rig(storage: Option<StorageConfig>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(spool.join(OUTBOX_DIR)).unwrap();
    let shelf_dir = dir.path().join("recordings");
    let cat = Catalog::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let storage =
        Storage::open(&storage.unwrap_or(StorageConfig::Local(shelf_dir.clone()))).unwrap();
    let shelf = Shelf::new(
        cat,
        storage,
        ShelfConfig {
            node: "n1".into(),
            backoff: backoff(),
            webhooks: vec!["http://127.0.0.1:9/hook".into()],
        },
    );
    Rig {
        _dir: dir,
        spool,
        shelf_dir,
        shelf,
    }
}

fn meta(contact: &str) -> RecordingMetadata {
    RecordingMetadata {
        contact_id: contact.into(),
        call_id_customer: Some(format!("{contact}-a@example.com")),
        from: "+4930111".into(),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        agent_id: Some("anna".into()),
        // 2026-12-01T10:00:00Z
        start_unix_ms: 1_796_119_200_000,
        duration_ms: 1000,
        complete: true,
        metrics: Some(serde_json::json!({"longest_silence_ms": 31_000, "overtalk_ms": 0})),
        ..Default::default()
    }
}

/// Writes a parcel into the outbox: audio bytes, sidecar, peaks.
fn parcel(spool: &Path, stem: &str, m: RecordingMetadata, bytes: &[u8]) -> Parcel {
    let audio = spool.join(OUTBOX_DIR).join(format!("{stem}.wav"));
    std::fs::write(&audio, bytes).unwrap();
    m.write_to(&recorder::sidecar_path(&audio)).unwrap();
    std::fs::write(audio.with_extension("peaks.json"), b"{}").unwrap();
    Parcel {
        audio,
        meta: m,
        interrupted: false,
        retention_days: Some(90),
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn outbox_files(spool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(spool.join(OUTBOX_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_parcel_is_catalogued_stored_and_cleared() {
    let r = rig(None).await;
    let bytes = vec![7u8; 5000];
    let p = parcel(&r.spool, "c1", meta("c1"), &bytes);
    let d = r.shelf.deliver(&p).await.unwrap();
    assert_eq!(d.key, "2026/12/01/c1.wav");
    assert_eq!(d.sha256, sha(&bytes));
    assert_eq!(std::fs::read(r.shelf_dir.join(&d.key)).unwrap(), bytes);
    assert!(r.shelf_dir.join("2026/12/01/c1.json").exists());
    assert!(r.shelf_dir.join("2026/12/01/c1.peaks.json").exists());
    assert!(
        outbox_files(&r.spool).is_empty(),
        "{:?}",
        outbox_files(&r.spool)
    );
    let e = r.shelf.catalog().get("c1").await.unwrap().unwrap();
    assert_eq!(e.state, State::Stored);
    assert_eq!(e.sha256.as_deref(), Some(sha(&bytes).as_str()));
    assert_eq!(e.size_bytes, Some(5000));
    assert_eq!(e.storage_key.as_deref(), Some("2026/12/01/c1.wav"));
    assert_eq!(e.retention_days, Some(90));
    assert_eq!(e.node, "n1");
    assert_eq!(r.shelf.catalog().pending_webhooks().await.unwrap(), 1);
    // The metrics are searchable.
    let q = store::Query {
        min_silence_ms: Some(30_000),
        ..Default::default()
    };
    assert_eq!(r.shelf.catalog().search(&q).await.unwrap().entries.len(), 1);
    let q = store::Query {
        min_silence_ms: Some(32_000),
        ..Default::default()
    };
    assert!(r
        .shelf
        .catalog()
        .search(&q)
        .await
        .unwrap()
        .entries
        .is_empty());
}

#[tokio::test]
async fn a_crash_after_the_upload_stores_the_file_once() {
    let r = rig(None).await;
    let bytes = vec![3u8; 4000];
    let p = parcel(&r.spool, "c2", meta("c2"), &bytes);
    r.shelf.deliver(&p).await.unwrap();
    // As if the node died before clearing the outbox: the same files are back.
    let p = parcel(&r.spool, "c2", meta("c2"), &bytes);
    let rec = r.shelf.reconcile(&r.spool, &[]).await.unwrap();
    assert_eq!(rec.parcels, vec![p.clone()]);
    let d = r.shelf.deliver(&rec.parcels[0]).await.unwrap();
    assert_eq!(d.attempts, 0, "not uploaded again");
    assert!(outbox_files(&r.spool).is_empty());
    assert_eq!(
        r.shelf.catalog().pending_webhooks().await.unwrap(),
        1,
        "one webhook"
    );
}

#[tokio::test]
async fn a_crash_between_upload_and_mark_is_marked_at_start() {
    let r = rig(None).await;
    let bytes = vec![5u8; 3000];
    let m = meta("c3");
    // The entry says finished with the hash; the file is in storage; the outbox is empty.
    let mut e = store::Entry::from_metadata(&m, "n1", State::Finished, 1).unwrap();
    e.size_bytes = Some(3000);
    e.sha256 = Some(sha(&bytes));
    r.shelf.catalog().upsert(&e).await.unwrap();
    let key = "2026/12/01/c3.wav";
    std::fs::create_dir_all(r.shelf_dir.join("2026/12/01")).unwrap();
    std::fs::write(r.shelf_dir.join(key), &bytes).unwrap();
    // And one left `recording` with no file anywhere.
    let lost = store::Entry::from_metadata(&meta("c4"), "n1", State::Recording, 1).unwrap();
    r.shelf.catalog().upsert(&lost).await.unwrap();
    // Another node's entry is not ours to touch.
    let other = store::Entry::from_metadata(&meta("c5"), "n2", State::Recording, 1).unwrap();
    r.shelf.catalog().upsert(&other).await.unwrap();
    let rec = r.shelf.reconcile(&r.spool, &[]).await.unwrap();
    assert_eq!(rec.marked_stored, vec!["c3".to_string()]);
    assert_eq!(rec.lost, vec!["c4".to_string()]);
    let c = r.shelf.catalog();
    assert_eq!(c.get("c3").await.unwrap().unwrap().state, State::Stored);
    assert_eq!(
        c.get("c4").await.unwrap().unwrap().state,
        State::Interrupted
    );
    assert_eq!(c.get("c5").await.unwrap().unwrap().state, State::Recording);
}

#[tokio::test]
async fn foreign_files_are_quarantined_not_deleted() {
    let r = rig(None).await;
    let out = r.spool.join(OUTBOX_DIR);
    std::fs::write(out.join("stray.wav"), b"RIFF").unwrap();
    std::fs::write(out.join("notes.txt"), b"hello").unwrap();
    std::fs::write(out.join("bad.wav"), b"RIFF").unwrap();
    std::fs::write(out.join("bad.json"), b"{not json").unwrap();
    let good = parcel(&r.spool, "c6", meta("c6"), b"data");
    let rec = r.shelf.reconcile(&r.spool, &[]).await.unwrap();
    assert_eq!(rec.parcels, vec![good]);
    assert_eq!(rec.quarantined.len(), 3, "{:?}", rec.quarantined);
    let mut q: Vec<String> = std::fs::read_dir(r.spool.join(QUARANTINE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    q.sort();
    assert_eq!(q, ["bad.json", "bad.wav", "notes.txt", "stray.wav"]);
}

#[tokio::test]
async fn a_statement_is_stored_under_its_own_entry() {
    let r = rig(None).await;
    let mut m = meta("c7");
    m.statement_id = Some("terms".into());
    let p = parcel(&r.spool, "c7-statement-terms", m, b"stmt");
    let d = r.shelf.deliver(&p).await.unwrap();
    assert!(d.statement);
    assert_eq!(d.key, "2026/12/01/c7-statement-terms.wav");
    let s = r.shelf.catalog().statements_by_id("terms").await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].state, State::Stored);
    assert_eq!(s[0].contact_id, "c7");
}

/// The store goes away during delivery and comes back: the parcel waits in the outbox,
/// then is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_delays_the_file_never_loses_it() {
    let mut server = S3Server::start().await;
    common::s3::set_credentials();
    let cfg = S3Config {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        allow_http: true,
        request_retries: 0,
        timeout_s: 5,
        ..S3Config::new(BUCKET)
    };
    let r = rig(Some(StorageConfig::S3(cfg))).await;
    server.stop().await;
    let bytes = vec![9u8; 10_000];
    let p = parcel(&r.spool, "c8", meta("c8"), &bytes);
    let shelf = r.shelf.clone();
    let task = tokio::spawn(async move { shelf.deliver(&p).await });
    // Wait until the catalog shows the file finished (hashed, waiting for the store).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = r.shelf.catalog().get("c8").await.unwrap();
        if e.is_some_and(|e| e.state == State::Finished) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never catalogued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!task.is_finished());
    assert_eq!(outbox_files(&r.spool).len(), 3, "the outbox keeps it");
    server.restart().await;
    let d = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("delivered after the store came back")
        .unwrap()
        .unwrap();
    assert!(d.attempts > 3, "three files, retried: {d:?}");
    assert_eq!(std::fs::read(server.object_path(&d.key)).unwrap(), bytes);
    assert!(outbox_files(&r.spool).is_empty());
}
