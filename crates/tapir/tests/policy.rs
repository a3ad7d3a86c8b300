//! End-to-end recording policy: SIPp calls through the real binary with a policy rules file.
//!
//! The route makes the caller the customer, so the agent is the callee and its station is the
//! dialled user (`service`, SIPp's default). The caller plays 400 Hz, the callee 1000 Hz.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tapir_tests::{free_port, read_stereo_wav, tone_energy, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn rules(default_mode: &str, extra: &str) -> String {
    format!(
        "[stations.default]\noutbound = \"{m}\"\ninbound_direct = \"{m}\"\ninbound_ivr = \"{m}\"\n\n\
         [feature_codes]\nstart = \"*2\"\nstop = \"*3\"\n\n{extra}\n",
        m = default_mode
    )
}

fn start(policy: &str) -> (Tapir, u16, PathBuf) {
    let callee_port = free_port("127.0.0.1");
    let dir = tapir_tests::tempfile::tempdir().unwrap().keep();
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let extra = format!("[recording]\npolicy_file = \"{}\"\n", policy_path.display());
    let route = format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n"
    );
    let t = Tapir::start(
        BIN,
        &route,
        TapirOptions {
            extra,
            ..Default::default()
        },
    );
    (t, callee_port, policy_path)
}

fn call(t: &Tapir, callee_port: u16, caller_scn: &str, callee_scn: &str, ms: u32) {
    let d = ms.to_string();
    tapir_tests::call(
        t,
        (caller_scn, Some(400.0), &["-d", &d]),
        (callee_scn, Some(1000.0), &[]),
        callee_port,
    );
}

/// Recordings finished or still in the spool (a file being moved is in one or the other).
fn wav_files(t: &Tapir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["recordings", "spool"]
        .iter()
        .flat_map(|d| tapir_tests::files_under(&t.dir.path().join(d), "wav"))
        .collect();
    v.sort();
    v
}

/// Waits until the call has ended and the recorder has had time to hand over its files.
fn settle(t: &Tapir, calls: f64) {
    t.wait_metric("tapir_calls_total", Duration::from_secs(10), |v| v >= calls);
    // The recorder finishes a call within its jitter delay; its result shows in the metrics
    // or not at all (a call that recorded nothing produces no recording event). Wait on the
    // recorder's active gauge reaching zero, which covers both.
    t.wait_metric("tapir_recordings_active", Duration::from_secs(10), |v| {
        v == 0.0
    });
}

fn seconds(path: &Path) -> (f64, Vec<i16>, Vec<i16>) {
    let (c1, c2) = read_stereo_wav(path);
    (c1.len() as f64 / 8000.0, c1, c2)
}

#[test]
fn on_demand_star2_records_from_that_moment() {
    let (t, port, _) = start(&rules("on_demand", ""));
    call(&t, port, "uac_tone.xml", "uas_star2.xml", 3000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = wav_files(&t);
    assert_eq!(files.len(), 1, "{files:?}\n{}", t.log());
    assert!(files[0].starts_with(t.dir.path().join("recordings")));
    let (secs, c1, _) = seconds(&files[0]);
    // *2 completes about 1.3-1.5 s into a ~3 s call: only the rest is in the file.
    assert!(
        (0.8..2.3).contains(&secs),
        "recording lasts {secs} s\n{}",
        t.log()
    );
    assert!(
        tone_energy(&c1, 400.0) > 20.0 * tone_energy(&c1, 1000.0),
        "customer tone on channel 1"
    );
    let meta = std::fs::read_to_string(files[0].with_extension("json")).unwrap();
    assert!(
        meta.contains("on_demand") || meta.contains("feature_code"),
        "{meta}"
    );
    // By default the customer never hears the code: every packet of both key presses (5
    // updates and 3 end packets each) was kept from leg A.
    assert_eq!(
        t.metric("tapir_rtp_packets_dropped_total{reason=\"feature_code\"}"),
        16.0
    );
}

#[test]
fn feature_codes_are_forwarded_when_configured() {
    let rules = rules("on_demand", "").replace("stop = \"*3\"", "stop = \"*3\"\nforward = true");
    let (t, port, _) = start(&rules);
    call(&t, port, "uac_tone.xml", "uas_star2.xml", 3000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(
        t.metric("tapir_rtp_packets_dropped_total{reason=\"feature_code\"}"),
        0.0
    );
}

#[test]
fn on_demand_without_star2_records_nothing() {
    let (t, port, _) = start(&rules("on_demand", ""));
    call(&t, port, "uac_tone.xml", "uas_tone.xml", 1500);
    settle(&t, 1.0);
    assert!(wav_files(&t).is_empty());
}

#[test]
fn consent_denied_blocks_even_star2() {
    let (t, port, _) = start(&rules("on_demand", ""));
    call(
        &t,
        port,
        "uac_tone_consent_denied.xml",
        "uas_star2.xml",
        3000,
    );
    settle(&t, 1.0);
    assert!(wav_files(&t).is_empty(), "{}", t.log());
}

#[test]
fn agent_only_leaves_channel_1_silent() {
    let (t, port, _) = start(&rules("always", ""));
    call(&t, port, "uac_tone_agent_only.xml", "uas_tone.xml", 2000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = wav_files(&t);
    let (secs, c1, c2) = seconds(&files[0]);
    assert!(secs > 1.0);
    let loud = c1.iter().filter(|s| **s != 0).count();
    assert_eq!(
        loud,
        0,
        "channel 1 must be silent\n{}",
        std::fs::read_to_string(files[0].with_extension("json")).unwrap_or_default()
    );
    assert!(tone_energy(&c2, 1000.0) > 1000.0, "agent tone on channel 2");
}

#[test]
fn flow_start_beats_do_not_record_policy() {
    let dnr =
        "[[do_not_record_policies]]\nname = \"everything\"\n[do_not_record_policies.filter]\n";
    let (t, port, _) = start(&rules("always", dnr));
    // Without a directive the do-not-record policy wins over the station's `always`.
    call(&t, port, "uac_tone.xml", "uas_tone.xml", 1000);
    settle(&t, 1.0);
    assert!(
        wav_files(&t).is_empty(),
        "do-not-record must win over always"
    );
    // A flow start directive outranks the do-not-record policy.
    call(&t, port, "uac_tone_record_start.xml", "uas_tone.xml", 1500);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(wav_files(&t).len(), 1);
}

#[test]
fn policy_file_change_applies_to_the_next_call() {
    let (t, port, path) = start(&rules("never", ""));
    call(&t, port, "uac_tone.xml", "uas_tone.xml", 1000);
    settle(&t, 1.0);
    assert!(wav_files(&t).is_empty());
    // An invalid file is rejected and the previous rules stay.
    std::fs::write(&path, "[stations.default]\noutbound = \"sometimes\"\n").unwrap();
    t.wait_metric(
        "tapir_policy_reloads_total{result=\"rejected\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    std::fs::write(&path, rules("always", "")).unwrap();
    t.wait_metric(
        "tapir_policy_reloads_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    call(&t, port, "uac_tone.xml", "uas_tone.xml", 1000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(wav_files(&t).len(), 1);
}

#[test]
fn recorded_statement_is_a_separate_file_with_its_own_id() {
    let (t, port, _) = start(&rules("on_demand", ""));
    let http = t.http;
    let api = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let id = loop {
            let (_, body) = tapir_tests::http_request(http, "GET", "/calls", "");
            let id = body
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            if !id.is_empty() {
                break id;
            }
            assert!(std::time::Instant::now() < end, "call never appeared");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Wait for the answer (the call is recorded from the statement start only).
        std::thread::sleep(Duration::from_millis(500));
        let start = tapir_tests::http_request(
            http,
            "POST",
            &format!("/calls/{id}/directive/statement-start;id=terms"),
            "",
        )
        .0;
        std::thread::sleep(Duration::from_millis(1000));
        let stop = tapir_tests::http_request(
            http,
            "POST",
            &format!("/calls/{id}/directive/statement-stop"),
            "",
        )
        .0;
        (start, stop)
    });
    call(&t, port, "uac_tone.xml", "uas_tone.xml", 2500);
    assert_eq!(api.join().unwrap(), (204, 204));
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = wav_files(&t);
    // Nothing records the call itself (on demand, no *2): the statement is the only file.
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with("-statement-terms.wav"), "{name}");
    let (secs, c1, _) = seconds(&files[0]);
    assert!((0.7..1.4).contains(&secs), "statement lasts {secs} s");
    assert!(tone_energy(&c1, 400.0) > 1000.0);
    let meta = std::fs::read_to_string(files[0].with_extension("json")).unwrap();
    assert!(meta.contains("\"statement_id\": \"terms\""), "{meta}");
}

#[test]
fn star2_by_sip_info_records_and_never_reaches_the_customer() {
    let (t, port, _) = start(&rules("on_demand", ""));
    // The caller's scenario has no INFO in it: a relayed INFO would fail the call.
    call(&t, port, "uac_tone.xml", "uas_info_star2.xml", 3000);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let files = wav_files(&t);
    let (secs, _, _) = seconds(&files[0]);
    assert!((0.8..2.5).contains(&secs), "recording lasts {secs} s");
}
