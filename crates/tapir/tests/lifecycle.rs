//! Process lifecycle with real calls: crash (`kill -9`) and spool repair, SIGTERM drain,
//! SIGHUP route reload.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tapir_tests::{
    free_media_port, free_port, read_stereo_wav, sipp_args, tone_energy, Sipp, Tapir, TapirOptions,
};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn route(callee_port: u16, record: &str) -> String {
    format!(
        "[[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\nrecord = \"{record}\"\n"
    )
}

fn spawn(t: &Tapir, scn: &str, port: u16, extra: &[&str], tone: Option<f64>) -> Sipp {
    let toward = scn.starts_with("uac").then_some(t);
    Sipp::party(scn, scn, "127.0.0.1", port, toward, tone, extra)
}

fn files(dir: PathBuf, ext: &str) -> Vec<PathBuf> {
    tapir_tests::files_under(&dir, ext)
}

#[test]
fn kill9_mid_call_loses_at_most_about_a_second() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(callee_port, "always"), TapirOptions::default());
    let t = kill9_mid_call(t, callee_port, "wav");
    assert!(files(t.dir.path().join("recordings"), "mp3").is_empty());
}

#[test]
fn kill9_mid_call_on_an_mp3_route_is_delivered_as_mp3() {
    let callee_port = free_port("127.0.0.1");
    let routes = format!("{}format = \"mp3\"\n", route(callee_port, "always"));
    let t = Tapir::start(BIN, &routes, TapirOptions::default());
    let t = kill9_mid_call(t, callee_port, "mp3");
    let rec = files(t.dir.path().join("recordings"), "mp3");
    assert_eq!(rec.len(), 1, "{}", t.log());
    assert!(files(t.dir.path().join("recordings"), "wav").is_empty());
    let meta = std::fs::read_to_string(rec[0].with_extension("json")).unwrap();
    assert!(meta.contains("\"format\": \"mp3\""), "{meta}");
}

/// Kills `t` with SIGKILL three seconds into a recorded call and restarts it; checks what
/// every repaired recording must hold, whatever its format, and returns the new process.
fn kill9_mid_call(mut t: Tapir, callee_port: u16, ext: &str) -> Tapir {
    let _callee = spawn(&t, "uas_tone.xml", callee_port, &[], Some(1000.0));
    let _caller = spawn(
        &t,
        "uac_tone.xml",
        free_port("127.0.0.1"),
        &["-d", "20000"],
        Some(400.0),
    );
    // The spool file appears with the first recorded audio: that is the recording's start.
    let spool = t.dir.path().join("spool");
    let end = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if !files(spool.clone(), "wav").is_empty() {
            break Instant::now();
        }
        assert!(Instant::now() < end, "no spool file\n{}", t.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(3000));
    let recorded_before_kill = first.elapsed().as_secs_f64();
    t.kill9();
    let t = t.restart();
    t.wait_metric(
        "tapir_recordings_total{result=\"interrupted\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    if ext != "wav" {
        // What the route asked for is delivered: the segments and decisions below are read
        // from the transcoded recording's sidecar.
        let rec = files(t.dir.path().join("recordings"), ext);
        assert_eq!(rec.len(), 1, "{}", t.log());
        let meta = std::fs::read_to_string(rec[0].with_extension("json")).unwrap();
        check_repaired_meta(&meta);
        return t;
    }
    let rec = files(t.dir.path().join("recordings"), "wav");
    assert_eq!(
        rec.len(),
        1,
        "the repaired file is moved to recordings\n{}",
        t.log()
    );
    assert!(files(spool, "wav").is_empty());
    let (c1, c2) = read_stereo_wav(&rec[0]);
    let secs = c1.len() as f64 / 8000.0;
    assert!(
        secs >= recorded_before_kill - 1.2 && secs <= recorded_before_kill + 0.5,
        "repaired file holds {secs:.2} s of {recorded_before_kill:.2} s recorded before the kill"
    );
    assert!(tone_energy(&c1, 400.0) > 20.0 * tone_energy(&c1, 1000.0));
    assert!(tone_energy(&c2, 1000.0) > 20.0 * tone_energy(&c2, 400.0));
    let meta = std::fs::read_to_string(rec[0].with_extension("json")).unwrap();
    check_repaired_meta(&meta);
    t
}

/// The sidecar of a recording repaired after a crash: marked so, with the segment list and
/// the decision log as they were journaled during the call.
fn check_repaired_meta(meta: &str) {
    assert!(
        meta.contains("\"interrupted\": true") && meta.contains("\"repaired\": true"),
        "{meta}"
    );
    let v: serde_json::Value = serde_json::from_str(meta).unwrap();
    let segments = v["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 1, "{meta}");
    assert_eq!(
        segments[0]["start_reason"], "record policy \"route r\" (100 %)",
        "{meta}"
    );
    assert_eq!(segments[0]["end_reason"], "interrupted", "{meta}");
    assert!(
        v["decisions"].as_array().is_some_and(|d| d.len() >= 2),
        "the decision log survives the crash: {meta}"
    );
}

#[test]
fn sigterm_refuses_new_calls_then_ends_calls_at_the_deadline() {
    let callee_port = free_port("127.0.0.1");
    let mut t = Tapir::start(
        BIN,
        &route(callee_port, "never"),
        TapirOptions {
            args: vec!["--drain-seconds".into(), "3".into()],
            ..Default::default()
        },
    );
    let mut callee = spawn(&t, "uas_answer.xml", callee_port, &[], None);
    let mut caller = spawn(&t, "uac_wait_bye.xml", free_port("127.0.0.1"), &[], None);
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 1.0);
    let sent = Instant::now();
    t.signal("TERM");
    // Draining: a new INVITE gets 503.
    let mut late = spawn(&t, "uac_unavailable.xml", free_port("127.0.0.1"), &[], None);
    assert_eq!(late.wait(Duration::from_secs(10)), 0, "{}", late.logs());
    // The call in progress goes on until the deadline, then both sides get a BYE.
    assert_eq!(
        caller.wait(Duration::from_secs(20)),
        0,
        "{}\n{}",
        caller.logs(),
        t.log()
    );
    assert_eq!(callee.wait(Duration::from_secs(20)), 0, "{}", callee.logs());
    let status = t.wait_exit(Duration::from_secs(10)).expect("tapir exits");
    assert!(status.success(), "{status:?}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "ended the call after {took:?}, before the deadline"
    );
}

#[test]
fn sigterm_exits_as_soon_as_calls_end() {
    let callee_port = free_port("127.0.0.1");
    let mut t = Tapir::start(BIN, &route(callee_port, "never"), TapirOptions::default());
    let mut callee = spawn(&t, "uas_answer.xml", callee_port, &[], None);
    let mut caller = spawn(
        &t,
        "uac_pcap.xml",
        free_port("127.0.0.1"),
        &["-d", "1500"],
        None,
    );
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 1.0);
    t.signal("TERM");
    assert_eq!(
        caller.wait(Duration::from_secs(20)),
        0,
        "the call completes normally\n{}",
        caller.logs()
    );
    assert_eq!(callee.wait(Duration::from_secs(20)), 0);
    let status = t
        .wait_exit(Duration::from_secs(10))
        .expect("tapir exits once the call is over");
    assert!(status.success());
}

#[test]
fn sigterm_stores_the_recordings_of_the_calls_it_drained_before_it_exits() {
    // A rolling upgrade: the node drains, its last call ends normally, and the process
    // exits only once that call's recording is in storage and catalogued, not left in the
    // spool for the next start to repair as if the node had crashed.
    let callee_port = free_port("127.0.0.1");
    let mut t = Tapir::start(BIN, &route(callee_port, "always"), TapirOptions::default());
    let mut callee = spawn(&t, "uas_tone.xml", callee_port, &[], Some(1000.0));
    let mut caller = spawn(
        &t,
        "uac_tone.xml",
        free_port("127.0.0.1"),
        &["-d", "1500"],
        Some(400.0),
    );
    t.wait_metric("tapir_recordings_active", Duration::from_secs(10), |v| {
        v == 1.0
    });
    t.signal("TERM");
    assert_eq!(caller.wait(Duration::from_secs(20)), 0, "{}", caller.logs());
    assert_eq!(callee.wait(Duration::from_secs(20)), 0, "{}", callee.logs());
    let status = t
        .wait_exit(Duration::from_secs(20))
        .expect("tapir exits once the call is over and stored");
    assert!(status.success(), "{status:?}");
    let stored = files(t.dir.path().join("recordings"), "wav");
    assert_eq!(stored.len(), 1, "stored before the exit\n{}", t.log());
    let meta = std::fs::read_to_string(stored[0].with_extension("json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(v["interrupted"], false, "{meta}");
    assert!(
        files(t.dir.path().join("spool"), "wav").is_empty(),
        "nothing left in the spool\n{}",
        t.log()
    );
    let log = t.log();
    assert!(log.contains("recording stored"), "{log}");
}

#[test]
fn sighup_reloads_routes_without_dropping_calls() {
    let first = free_port("127.0.0.1");
    let second = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(first, "never"), TapirOptions::default());
    let mut callee1 = spawn(&t, "uas_answer.xml", first, &[], None);
    let mut caller1 = spawn(
        &t,
        "uac_pcap.xml",
        free_port("127.0.0.1"),
        &["-d", "3000"],
        None,
    );
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 1.0);
    let cfg = std::fs::read_to_string(t.config_path()).unwrap();
    std::fs::write(
        t.config_path(),
        cfg.replace(&format!(":{first}\""), &format!(":{second}\"")),
    )
    .unwrap();
    t.signal("HUP");
    let end = Instant::now() + Duration::from_secs(10);
    while !t.log().contains("routes reloaded") {
        assert!(Instant::now() < end, "no reload\n{}", t.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut callee2 = spawn(&t, "uas_answer.xml", second, &[], None);
    let mut caller2 = spawn(
        &t,
        "uac_pcap.xml",
        free_port("127.0.0.1"),
        &["-d", "500"],
        None,
    );
    assert_eq!(
        caller2.wait(Duration::from_secs(20)),
        0,
        "{}",
        caller2.logs()
    );
    assert_eq!(
        callee2.wait(Duration::from_secs(20)),
        0,
        "the new route took the call"
    );
    assert_eq!(
        caller1.wait(Duration::from_secs(20)),
        0,
        "the call in progress was kept"
    );
    assert_eq!(callee1.wait(Duration::from_secs(20)), 0);
}

#[test]
fn a_flood_from_one_address_does_not_starve_calls_from_others() {
    if std::net::UdpSocket::bind("127.0.0.2:0").is_err() {
        eprintln!("no 127.0.0.2 on this host; skipping");
        return;
    }
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "never"),
        TapirOptions {
            extra: String::new(),
            env: vec![
                ("TAPIR_SIP__RATE_LIMIT".into(), "50".into()),
                ("TAPIR_SIP__RATE_LIMIT_BURST".into(), "100".into()),
            ],
            ..Default::default()
        },
    );
    // 127.0.0.2 sends OPTIONS at 1,000 per second for 4 seconds.
    let mut a = sipp_args("flood_options.xml", "127.0.0.2", free_port("127.0.0.1"));
    a.insert(0, t.sip());
    a.extend([
        "-r".into(),
        "1000".into(),
        "-m".into(),
        "4000".into(),
        "-l".into(),
        "4000".into(),
    ]);
    let mut flood = Sipp::spawn("flood", &a);
    // Meanwhile 127.0.0.1 places 20 calls at 10 per second; every one must complete.
    let mut uas = sipp_args("uas", "127.0.0.1", callee_port);
    uas.extend(["-mp".into(), free_media_port("127.0.0.1").to_string()]);
    let _callee = Sipp::spawn("callee", &uas);
    let mut uac = sipp_args("uac", "127.0.0.1", free_port("127.0.0.1"));
    uac.insert(0, t.sip());
    uac.extend([
        "-mp".into(),
        free_media_port("127.0.0.1").to_string(),
        "-r".into(),
        "10".into(),
        "-m".into(),
        "20".into(),
    ]);
    let mut caller = Sipp::spawn("caller", &uac);
    assert_eq!(
        caller.wait(Duration::from_secs(60)),
        0,
        "{}\n{}",
        caller.logs(),
        t.log()
    );
    flood.wait(Duration::from_secs(60));
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 20.0);
    let limited = t.metric("tapir_sip_rate_limited_total");
    assert!(limited > 1000.0, "rate limited {limited}");
}

#[test]
fn a_config_file_change_reloads_routes_by_itself() {
    let first = free_port("127.0.0.1");
    let second = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(first, "never"), TapirOptions::default());
    let cfg = std::fs::read_to_string(t.config_path()).unwrap();
    // An invalid edit is rejected and the previous routes stay in force.
    std::fs::write(
        t.config_path(),
        format!("{cfg}\n[[routes]]\nname = \"broken\"\n"),
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !t.log().contains("reload rejected") {
        assert!(Instant::now() < end, "no rejection\n{}", t.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        t.config_path(),
        cfg.replace(&format!(":{first}\""), &format!(":{second}\"")),
    )
    .unwrap();
    while !t.log().contains("routes reloaded") {
        assert!(Instant::now() < end, "no reload\n{}", t.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut callee = spawn(&t, "uas_answer.xml", second, &[], None);
    let mut caller = spawn(
        &t,
        "uac_pcap.xml",
        free_port("127.0.0.1"),
        &["-d", "300"],
        None,
    );
    tapir_tests::expect_success(&t, &mut [&mut caller, &mut callee], Duration::from_secs(20));
}

fn thp_enabled(pid: &str) -> Option<u8> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Huge pages stalled the signalling thread while its tables grew (docs/benchmarks.md), so
/// tapir turns them off for itself; `MIMALLOC_ALLOW_THP` leaves the allocator's setting.
#[test]
fn tapir_runs_without_transparent_huge_pages_unless_told_otherwise() {
    let Some(ours) = thp_enabled("self") else {
        eprintln!("kernel without THP_enabled in /proc/<pid>/status: nothing to check");
        return;
    };
    let routes = route(free_port("127.0.0.1"), "never");
    let t = Tapir::start(BIN, &routes, TapirOptions::default());
    assert_eq!(thp_enabled(&t.pid().to_string()), Some(0), "{}", t.log());
    if ours == 1 {
        let opts = TapirOptions {
            env: vec![("MIMALLOC_ALLOW_THP".into(), "1".into())],
            ..TapirOptions::default()
        };
        let t = Tapir::start(BIN, &routes, opts);
        assert_eq!(thp_enabled(&t.pid().to_string()), Some(1), "{}", t.log());
    }
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    // An empty NO_COLOR leaves colour to tapir (the harness sets it to 1 otherwise); stderr is a
    // pipe here, as it is under systemd, docker or `2> file`.
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "always"),
        TapirOptions {
            env: vec![("NO_COLOR".into(), String::new())],
            ..Default::default()
        },
    );
    // A call, for log lines with spans and fields, not only the start-up lines.
    let mut callee = spawn(&t, "uas_answer.xml", callee_port, &[], None);
    let mut caller = spawn(
        &t,
        "uac_tone.xml",
        free_port("127.0.0.1"),
        &["-d", "200"],
        Some(400.0),
    );
    tapir_tests::expect_success(&t, &mut [&mut caller, &mut callee], Duration::from_secs(30));
    let log = t.log();
    assert!(log.contains("tapir ready"), "{log}");
    assert!(log.lines().count() > 3, "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in piped logs:\n{log:?}"
    );
}
