//! The catalog and storage through the real binary: a SIPp call's recording is catalogued and
//! stored by day with its hash; webhooks are retried until acknowledged; retention purges only
//! what it should and never a held recording; an S3 outage and a `kill -9` during the upload
//! end with the file stored once; a full spool refuses recordings, not calls; foreign files
//! are quarantined; an unreachable catalog at start is a clear error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tapir_tests::s3::S3Process;
use tapir_tests::{files_under, free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn route(callee_port: u16) -> String {
    format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\n"
    )
}

fn start(callee_port: u16, storage: &str, env: Vec<(String, String)>) -> Tapir {
    Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: format!("[storage]\nretry_initial_ms = 100\nretry_max_ms = 400\n{storage}\n"),
            env,
            ..Default::default()
        },
    )
}

fn call(t: &Tapir, callee_port: u16) {
    tapir_tests::call(
        t,
        ("uac_tone.xml", Some(400.0), &["-d", "1500"]),
        ("uas_tone.xml", Some(1000.0), &[]),
        callee_port,
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The node's embedded catalog.
fn catalog(t: &Tapir) -> (tokio::runtime::Runtime, store::Catalog) {
    let rt = rt();
    let url = format!("sqlite://{}", t.dir.path().join("tapir.db").display());
    let c = rt.block_on(store::Catalog::open(&url)).unwrap();
    (rt, c)
}

fn entries(t: &Tapir) -> Vec<store::Entry> {
    let (rt, c) = catalog(t);
    let q = store::Query {
        include_deleted: true,
        ..Default::default()
    };
    rt.block_on(c.search(&q)).unwrap().entries
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn wait_until(what: &str, t: &Tapir, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "{what} never happened\n{}", t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_recorded_call_is_catalogued_and_stored_by_day_with_its_hash() {
    let callee_port = free_port("127.0.0.1");
    // With the periodic fdatasync on: the recording is the same, only more durable.
    let t = start(
        callee_port,
        "[recording]\nsync_while_recording = true",
        Vec::new(),
    );
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v == 1.0,
    );
    assert_eq!(t.metric("tapir_uploads_total{result=\"ok\"}"), 1.0);
    let e = entries(&t);
    assert_eq!(e.len(), 1, "{e:?}");
    let e = &e[0];
    assert_eq!(e.state, store::State::Stored);
    let key = e.storage_key.as_deref().unwrap();
    let (y, m, d) = store::storage::civil_date(e.start_ms);
    assert!(key.starts_with(&format!("{y:04}/{m:02}/{d:02}/")), "{key}");
    assert!(key.ends_with(".wav"));
    let file = t.dir.path().join("recordings").join(key);
    assert_eq!(e.sha256.as_deref(), Some(sha(&file).as_str()));
    assert_eq!(
        e.size_bytes,
        Some(std::fs::metadata(&file).unwrap().len() as i64)
    );
    assert!(file.with_extension("json").exists() && file.with_extension("peaks.json").exists());
    assert!(e.metrics.is_some(), "conversation metrics are catalogued");
    assert!(e.call_id_customer.is_some() && e.call_id_agent.is_some());
    assert_eq!(e.route, "rec");
    assert!(!e.node.is_empty());
    // Nothing is left in the spool.
    let spool = t.dir.path().join("spool");
    assert!(files_under(&spool, "wav").is_empty() && files_under(&spool, "json").is_empty());
    // One entry per Call-ID, whichever leg.
    let (rt, c) = catalog(&t);
    let by = rt
        .block_on(c.by_call_id(e.call_id_agent.as_deref().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(by.contact_id, e.contact_id);
}

/// A webhook receiver on a loopback port: answers 500 to the first `fail` requests, then 204.
/// Returns the port and the requests seen (head, body).
/// What the receiver saw: (request head, body) per request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn receiver(fail: usize) -> (u16, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let n = {
                let mut g = s2.lock().unwrap();
                g.push((head, String::from_utf8_lossy(&body).into_owned()));
                g.len()
            };
            let status = if n <= fail {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = c.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, seen)
}

#[test]
fn webhooks_are_retried_until_acknowledged() {
    let (hook_port, seen) = receiver(2);
    let callee_port = free_port("127.0.0.1");
    let t = start(
        callee_port,
        &format!("webhooks = [\"http://127.0.0.1:{hook_port}/tapir\"]"),
        Vec::new(),
    );
    call(&t, callee_port);
    t.wait_metric(
        "tapir_webhooks_total{result=\"delivered\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert_eq!(t.metric("tapir_webhooks_total{result=\"failed\"}"), 2.0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let contact = entries(&t)[0].contact_id.clone();
    let delivery = |h: &str| {
        h.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-tapir-delivery:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap()
    };
    for (head, body) in &seen {
        assert!(head.starts_with("POST /tapir HTTP/1.1"), "{head}");
        assert_eq!(
            delivery(head),
            delivery(&seen[0].0),
            "one delivery id across retries"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"], "recording.stored");
        assert_eq!(v["contact_id"], contact.as_str());
        assert_eq!(v["sha256"], entries(&t)[0].sha256.clone().unwrap().as_str());
    }
}

#[test]
fn retention_purges_only_what_it_should_and_never_a_held_recording() {
    let callee_port = free_port("127.0.0.1");
    // Kept for 0 days on this route: due at once. The purge runs at start and then hourly, so
    // nothing is purged before the hold is set and tapir restarted.
    let t = start(
        callee_port,
        "retention = { days = 365, routes = { rec = 0 } }",
        Vec::new(),
    );
    call(&t, callee_port);
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v == 2.0,
    );
    let e = entries(&t);
    assert_eq!(e.len(), 2);
    assert!(e.iter().all(|e| e.retention_days == Some(0)), "{e:?}");
    let (held, other) = (&e[0], &e[1]);
    {
        let (rt, c) = catalog(&t);
        assert!(rt
            .block_on(c.set_legal_hold(&held.contact_id, true, 0))
            .unwrap());
    }
    let t = t.restart();
    t.wait_metric(
        "tapir_recordings_purged_total",
        Duration::from_secs(15),
        |v| v == 1.0,
    );
    let rec = t.dir.path().join("recordings");
    assert!(
        rec.join(held.storage_key.as_deref().unwrap()).exists(),
        "the held recording stays"
    );
    assert!(
        !rec.join(other.storage_key.as_deref().unwrap()).exists(),
        "the other is purged"
    );
    assert!(!rec
        .join(other.storage_key.as_deref().unwrap())
        .with_extension("peaks.json")
        .exists());
    let after = entries(&t);
    let o = after
        .iter()
        .find(|e| e.contact_id == other.contact_id)
        .unwrap();
    assert!(o.purged_at_ms.is_some());
    let h = after
        .iter()
        .find(|e| e.contact_id == held.contact_id)
        .unwrap();
    assert!(h.purged_at_ms.is_none() && h.legal_hold);
    assert!(
        t.log().contains("recording purged"),
        "every deletion is logged"
    );
}

#[test]
fn kill9_during_an_s3_upload_then_restart_stores_the_file_once() {
    let mut s3 = S3Process::start(BIN);
    let callee_port = free_port("127.0.0.1");
    let t = start(callee_port, &s3.storage_toml(), tapir_tests::s3::env());
    // The store goes away; the call and its recording go on into the spool.
    s3.kill();
    call(&t, callee_port);
    wait_until("a failed upload", &t, Duration::from_secs(20), || {
        t.log().contains("upload failed; retrying")
    });
    assert_eq!(t.metric("tapir_uploads_pending"), 1.0);
    let mut t = t;
    t.kill9();
    let outbox = t.dir.path().join("spool").join("outbox");
    assert_eq!(
        files_under(&outbox, "wav").len(),
        1,
        "the outbox keeps the file"
    );
    s3.restart();
    let t = t.restart();
    t.wait_metric(
        "tapir_uploads_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    t.wait_metric("tapir_uploads_pending", Duration::from_secs(5), |v| {
        v == 0.0
    });
    let e = entries(&t);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].state, store::State::Stored);
    let key = e[0].storage_key.clone().unwrap();
    assert_eq!(
        e[0].sha256.as_deref(),
        Some(sha(&s3.object_path(&key)).as_str())
    );
    let stored: Vec<PathBuf> = files_under(&s3.root.path().join(tapir_tests::s3::BUCKET), "wav");
    assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    assert!(files_under(&outbox, "wav").is_empty());
    assert!(t.log().contains("reconciled spool, catalog and storage"));
}

#[test]
fn a_full_spool_refuses_recordings_not_calls() {
    let callee_port = free_port("127.0.0.1");
    let t = start(callee_port, "spool_high_water_mb = 1", Vec::new());
    // 2 MiB the node cannot deliver (as if storage had been away for long).
    let q = t.dir.path().join("spool").join("quarantine");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(q.join("stuck.bin"), vec![0u8; 2 << 20]).unwrap();
    t.wait_metric("tapir_spool_bytes", Duration::from_secs(5), |v| {
        v > 1_048_576.0
    });
    wait_until(
        "the high-water log line",
        &t,
        Duration::from_secs(5),
        || t.log().contains("spool past its high-water mark"),
    );
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_refused_total",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert!(files_under(&t.dir.path().join("recordings"), "wav").is_empty());
    // Back under the mark, recordings resume.
    std::fs::remove_file(q.join("stuck.bin")).unwrap();
    wait_until("the spool back under", &t, Duration::from_secs(5), || {
        t.log().contains("spool back under its high-water mark")
    });
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v == 1.0,
    );
}

#[test]
fn foreign_files_in_the_outbox_are_quarantined_at_start() {
    let callee_port = free_port("127.0.0.1");
    let t = start(callee_port, "", Vec::new());
    let outbox = t.dir.path().join("spool").join("outbox");
    std::fs::write(outbox.join("foreign.wav"), b"RIFF....").unwrap();
    std::fs::write(outbox.join("notes.txt"), b"hello").unwrap();
    let t = t.restart();
    let q = t.dir.path().join("spool").join("quarantine");
    assert!(q.join("foreign.wav").exists() && q.join("notes.txt").exists());
    assert_eq!(t.metric("tapir_spool_quarantined_total"), 2.0);
    assert!(t
        .log()
        .contains("quarantined a file the outbox cannot deliver"));
}

#[test]
fn an_unreachable_catalog_at_start_is_an_error_naming_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let pg_port = free_port("127.0.0.1");
    let cfg = format!(
        "[sip]\nlisten_udp = [\"127.0.0.1:{}\"]\nlisten_tcp = []\n[http]\nlisten = \"127.0.0.1:{}\"\n\
         [catalog]\nurl = \"postgres://tapir:sekrit@127.0.0.1:{pg_port}/tapir\"\n\
         [[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:5070\"\ncustomer = \"caller\"\n",
        free_port("127.0.0.1"),
        free_port("127.0.0.1")
    );
    std::fs::write(dir.path().join("t.toml"), cfg).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("t.toml"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{pg_port}/tapir")), "{err}");
    assert!(
        !err.contains("sekrit"),
        "the password is never printed: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn retention_follows_the_record_policy_that_recorded_the_call() {
    let callee_port = free_port("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[stations.default]\noutbound = \"on_demand\"\ninbound_direct = \"on_demand\"\ninbound_ivr = \"on_demand\"\n\n\
         [[record_policies]]\nname = \"complaints\"\n[record_policies.filter]\n",
    )
    .unwrap();
    let t = Tapir::start(
        BIN,
        &format!(
            "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n"
        ),
        TapirOptions {
            extra: format!(
                "[recording]\npolicy_file = \"{}\"\n[storage]\n\
                 retention = {{ days = 30, routes = {{ pbx = 90 }}, policies = {{ complaints = 365 }} }}\n",
                policy.display()
            ),
            ..Default::default()
        },
    );
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v == 1.0,
    );
    let e = entries(&t);
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].retention_days,
        Some(365),
        "the policy's period beats the route's"
    );
    assert_eq!(e[0].retain_until_ms, Some(e[0].start_ms + 365 * 86_400_000));
}

/// The state a `kill -9` in the middle of an MP3 transcode leaves: the finished WAV and its
/// sidecar in `spool/finishing/`, a partial MP3 beside them.
#[test]
fn a_crash_mid_transcode_is_finished_again_at_start_and_stored_once() {
    let callee_port = free_port("127.0.0.1");
    let mut t = start(callee_port, "", Vec::new());
    t.kill9();
    let fin = t.dir.path().join("spool").join("finishing");
    std::fs::create_dir_all(&fin).unwrap();
    let wav = fin.join("crash-1.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for i in 0..16_000u32 {
        let s = ((i as f64 * 0.3).sin() * 8000.0) as i16;
        w.write_sample(s).unwrap();
        w.write_sample(-s).unwrap();
    }
    w.finalize().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let meta = serde_json::json!({
        "contact_id": "crash-1", "route": "rec", "direction": "inbound", "from": "a", "to": "b",
        "start_unix_ms": now, "duration_ms": 2000, "format": "mp3", "complete": true,
        "call_id_customer": "crash-1-a@example.com",
    });
    std::fs::write(fin.join("crash-1.json"), meta.to_string()).unwrap();
    std::fs::write(fin.join("crash-1.mp3"), b"\xff\xfb partial").unwrap();
    let t = t.restart();
    t.wait_metric(
        "tapir_uploads_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    let e = entries(&t);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].contact_id, "crash-1");
    assert_eq!(e[0].format, "mp3");
    assert_eq!(e[0].state, store::State::Stored);
    let rec = t.dir.path().join("recordings");
    let mp3 = files_under(&rec, "mp3");
    assert_eq!(mp3.len(), 1, "{mp3:?}");
    assert_eq!(e[0].sha256.as_deref(), Some(sha(&mp3[0]).as_str()));
    assert!(
        std::fs::metadata(&mp3[0]).unwrap().len() > 1000,
        "a whole MP3, not the partial one"
    );
    assert!(files_under(&rec, "wav").is_empty());
    assert!(files_under(&fin, "wav").is_empty() && files_under(&fin, "mp3").is_empty());
    assert!(t
        .log()
        .contains("finishing a recording a crash interrupted"));
}

/// `retention.days` alone: a recording no route or policy rule names is kept that long.
#[test]
fn retention_days_apply_where_no_rule_names_the_recording() {
    let callee_port = free_port("127.0.0.1");
    let t = start(callee_port, "retention = { days = 30 }", Vec::new());
    call(&t, callee_port);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v == 1.0,
    );
    wait_until("the entry catalogued", &t, Duration::from_secs(15), || {
        entries(&t).len() == 1
    });
    let e = entries(&t);
    assert_eq!(e[0].retention_days, Some(30), "{e:?}");
    assert_eq!(e[0].retain_until_ms, Some(e[0].start_ms + 30 * 86_400_000));
}

/// A retention rule for a route that does not exist stops tapir at start, naming it.
#[test]
fn retention_for_an_unknown_route_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tapir.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[storage]\nretention = {{ days = 30, routes = {{ pbxx = 7 }} }}\n",
            route(free_port("127.0.0.1"))
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.retention.routes: no route named 'pbxx'"),
        "{err}"
    );
}
