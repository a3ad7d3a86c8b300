//! End-to-end recording tests: SIPp calls through the real binary with a distinct tone per
//! direction; the test opens the recording and checks which tone is on which channel.

use std::path::PathBuf;
use std::time::Duration;

use tapir_tests::{free_port, read_stereo_wav, tone_energy, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const CALLER_HZ: f64 = 400.0;
const CALLEE_HZ: f64 = 1000.0;

fn route(callee_port: u16, customer: &str, record: &str, format: &str) -> String {
    format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"{customer}\"\n\
         direction = \"inbound\"\nrecord = \"{record}\"\nformat = \"{format}\"\n"
    )
}

/// Runs one call: caller plays 400 Hz, callee 1000 Hz, for `ms` milliseconds.
fn call(t: &Tapir, callee_port: u16, ms: u32) {
    let d = ms.to_string();
    tapir_tests::call(
        t,
        ("uac_tone.xml", Some(CALLER_HZ), &["-d", &d]),
        ("uas_tone.xml", Some(CALLEE_HZ), &[]),
        callee_port,
    );
}

fn recordings(t: &Tapir, ext: &str) -> Vec<PathBuf> {
    let dir = t.dir.path().join("recordings");
    tapir_tests::files_under(&dir, ext)
}

fn dominant(samples: &[i16]) -> (f64, f64) {
    (
        tone_energy(samples, CALLER_HZ),
        tone_energy(samples, CALLEE_HZ),
    )
}

fn check_channels(customer: &str) {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, customer, "always", "wav"),
        TapirOptions::default(),
    );
    call(&t, callee_port, 2000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = recordings(&t, "wav");
    assert_eq!(files.len(), 1, "{files:?}");
    let (c1, c2) = read_stereo_wav(&files[0]);
    assert_eq!(c1.len(), c2.len());
    // About the call length: 2 s of media plus set-up and tear-down.
    let secs = c1.len() as f64 / 8000.0;
    assert!((1.5..4.0).contains(&secs), "recording lasts {secs} s");
    let (c1_caller, c1_callee) = dominant(&c1);
    let (c2_caller, c2_callee) = dominant(&c2);
    let (ch1_hz_ok, ch2_hz_ok) = if customer == "caller" {
        (c1_caller > 20.0 * c1_callee, c2_callee > 20.0 * c2_caller)
    } else {
        (c1_callee > 20.0 * c1_caller, c2_caller > 20.0 * c2_callee)
    };
    assert!(
        ch1_hz_ok && ch2_hz_ok,
        "customer={customer}: ch1 400Hz {c1_caller:.0} 1kHz {c1_callee:.0}; ch2 400Hz {c2_caller:.0} 1kHz {c2_callee:.0}"
    );
    let meta = std::fs::read_to_string(files[0].with_extension("json")).unwrap();
    assert!(meta.contains("\"complete\": true"), "{meta}");
    assert!(meta.contains("\"route\": \"rec\""), "{meta}");
    // Conversation metrics and waveform peaks are computed when the recording is finished:
    // both parties play a tone the whole call, so both talk about the whole file, at once.
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let m = &v["metrics"];
    let file_ms = secs * 1000.0;
    for talk in ["customer_talk_ms", "agent_talk_ms"] {
        let ms = m[talk].as_f64().unwrap_or(0.0);
        assert!(
            ms > 0.8 * file_ms && ms <= file_ms + 20.0,
            "{talk} {ms} of {file_ms}: {m:#}"
        );
    }
    assert!(
        m["overtalk_ms"].as_f64().unwrap_or(0.0) > 0.8 * file_ms,
        "{m:#}"
    );
    let peaks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(files[0].with_extension("peaks.json")).expect("peaks"),
    )
    .unwrap();
    // `[min, max]` per 20 ms bucket, interleaved.
    let buckets = peaks["customer"].as_array().expect("customer peaks").len() / 2;
    assert!(
        (buckets as f64 - secs * 50.0).abs() <= 2.0,
        "{buckets} buckets for {secs} s"
    );
    assert_eq!(peaks["agent"].as_array().unwrap().len(), 2 * buckets);
}

#[test]
fn customer_is_channel_1_when_caller() {
    check_channels("caller");
}

#[test]
fn customer_is_channel_1_when_callee() {
    check_channels("callee");
}

#[test]
fn mp3_recording() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "caller", "always", "mp3"),
        TapirOptions::default(),
    );
    call(&t, callee_port, 1500);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = recordings(&t, "mp3");
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    // 32 kbit/s is 4000 bytes a second; the call is about 2 s.
    assert!(
        (3000..20000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    assert!(
        recordings(&t, "wav").is_empty(),
        "the WAV spool copy is removed"
    );
}

#[test]
fn on_demand_records_only_after_api_start() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "caller", "on_demand", "wav"),
        TapirOptions::default(),
    );
    let h = {
        let http = t.http;
        std::thread::spawn(move || {
            // Wait for the call to exist, then start recording through the control API.
            let end = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (_, body) = tapir_tests::http_request(http, "GET", "/calls", "");
                if let Some(id) = body
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .next()
                    .filter(|s| !s.is_empty())
                {
                    std::thread::sleep(Duration::from_millis(1000));
                    let (code, _) = tapir_tests::http_request(
                        http,
                        "POST",
                        &format!("/calls/{id}/recording/start"),
                        "",
                    );
                    return code;
                }
                assert!(std::time::Instant::now() < end, "call never appeared");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    call(&t, callee_port, 2500);
    assert_eq!(h.join().unwrap(), 204);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = recordings(&t, "wav");
    let (c1, _) = read_stereo_wav(&files[0]);
    let secs = c1.len() as f64 / 8000.0;
    // Started about 1 s into a 2.5 s call: the first second is not in the file.
    assert!((0.8..2.2).contains(&secs), "recording lasts {secs} s");
}

#[test]
fn never_records_nothing_but_keeps_the_decision() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "caller", "never", "wav"),
        TapirOptions::default(),
    );
    call(&t, callee_port, 500);
    t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    // An operator asked "why was this call not recorded?" finds the answer in the
    // recordings directory and in the log.
    t.wait_metric(
        "tapir_recordings_total{result=\"not_recorded\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert!(recordings(&t, "wav").is_empty());
    assert_eq!(t.metric("tapir_recordings_total{result=\"ok\"}"), 0.0);
    let json = recordings(&t, "json");
    assert_eq!(json.len(), 1, "{json:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap()).unwrap();
    assert_eq!(meta["recorded"], false, "{meta:#}");
    assert!(
        meta["decision"]
            .as_str()
            .is_some_and(|d| d.ends_with("mode never")),
        "{meta:#}"
    );
    assert!(
        meta["decisions"].as_array().is_some_and(|d| !d.is_empty()),
        "{meta:#}"
    );
    let log = t.log();
    assert!(
        log.contains("recording decision") && log.contains("recorded=false"),
        "{log}"
    );
}

#[test]
fn unwritable_spool_leaves_the_call_unharmed() {
    let callee_port = free_port("127.0.0.1");
    // A spool that cannot be created is a start-up error, so break it once tapir runs:
    // read-only, or (as root, where modes do not bind) a plain file in its place.
    let t = Tapir::start(
        BIN,
        &route(callee_port, "caller", "always", "wav"),
        TapirOptions::default(),
    );
    let spool = t.dir.path().join("spool");
    let mut perm = std::fs::metadata(&spool).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o500);
    std::fs::set_permissions(&spool, perm).unwrap();
    if std::fs::write(spool.join("probe"), b"x").is_ok() {
        // Running as root: permissions do not stop us; use a file in place of the directory.
        std::fs::remove_file(spool.join("probe")).unwrap();
        let mut perm = std::fs::metadata(&spool).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
        std::fs::set_permissions(&spool, perm).unwrap();
        std::fs::remove_dir_all(&spool).unwrap();
        std::fs::write(&spool, b"not a directory").unwrap();
    }
    call(&t, callee_port, 1000);
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
    t.wait_metric(
        "tapir_recordings_total{result=\"error\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    assert!(t.log().contains("the call continues"), "{}", t.log());
}
