//! Black-box drop-in tests: the real `tapir` binary between SIPp instances playing a PBX, a
//! carrier, phones and a transfer target. Each test asserts on SIPp's exit codes (every
//! expected message arrived, in order, with the content its scenario checks) and on tapir's
//! metrics and log.
//!
//! - Authentication pass-through: the far side challenges with 407, the caller retries with
//!   credentials that the far side verifies, in the same leg B call (same Call-ID, CSeq 2).
//! - Blind transfer: the callee REFERs the caller to a third party; the Refer-To reaches the
//!   caller pointed at tapir, the NOTIFYs reach the callee, the transferred call goes
//!   through tapir to the target and is reported as continuing the first call.
//! - Session timer: a call held past half its 90 s interval is refreshed by tapir (the
//!   callee has no timer support) and still hangs up normally (about 47 s).
//! - Vanished peer: no RTP either way and a callee that never answers BYE: tapir ends the
//!   call after `media.timeout_s` (2 s here).

use std::time::{Duration, Instant};

use tapir_tests::{free_port, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn route(callee_port: u16) -> String {
    format!(
        "[[routes]]\nname = \"to-callee\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n"
    )
}

/// A SIPp instance on its own SIP and media ports; `target` is where a caller sends.
fn spawn(name: &str, scenario: &str, port: u16, target: Option<&Tapir>, extra: &[&str]) -> Sipp {
    Sipp::party(name, scenario, "127.0.0.1", port, target, None, extra)
}

fn expect_ok(tapir: &Tapir, sipps: &mut [&mut Sipp], timeout: Duration) {
    tapir_tests::expect_success(tapir, sipps, timeout);
}

fn assert_clean(t: &Tapir) {
    t.wait_metric("tapir_calls_active", Duration::from_secs(15), |v| v == 0.0);
    let (code, body) = t.http("GET", "/calls");
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "[]");
}

#[test]
fn far_side_challenge_reaches_caller_and_retry_is_answered() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(callee_port), TapirOptions::default());
    let mut callee = spawn("carrier", "auth_uas.xml", callee_port, None, &[]);
    let mut caller = spawn(
        "pbx",
        "auth_uac.xml",
        free_port("127.0.0.1"),
        Some(&t),
        &["-s", "1000"],
    );
    expect_ok(&t, &mut [&mut caller, &mut callee], Duration::from_secs(30));
    // The challenged attempt is a rejected call; the retry completes.
    assert_eq!(t.metric("tapir_calls_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
    assert_clean(&t);
}

#[test]
fn blind_transfer_by_refer_relays_notify_and_keeps_the_call_on_tapir() {
    let callee_port = free_port("127.0.0.1");
    let target_port = free_port("127.0.0.1");
    // The transfer target is a next hop of tapir's own (a route names it): a Refer-To may
    // only steer calls to such hosts.
    let routes = format!(
        "[[routes]]\nname = \"to-target\"\nuser_prefix = \"target-\"\ntarget = \"sip:127.0.0.1:{target_port}\"\ncustomer = \"caller\"\n\n{}",
        route(callee_port)
    );
    let t = Tapir::start(BIN, &routes, TapirOptions::default());
    let mut target = spawn("target", "uas", target_port, None, &[]);
    let tp = target_port.to_string();
    let mut agent = spawn(
        "agent",
        "refer_uas.xml",
        callee_port,
        None,
        &["-set", "target_port", &tp],
    );
    let mut customer = spawn(
        "customer",
        "refer_uac.xml",
        free_port("127.0.0.1"),
        Some(&t),
        &["-s", "1000"],
    );
    expect_ok(
        &t,
        &mut [&mut customer, &mut agent, &mut target],
        Duration::from_secs(40),
    );
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 2.0);
    let log = t.log();
    assert!(
        log.contains("call continues a transfer"),
        "the transferred call is linked to the first:\n{log}"
    );
    assert_clean(&t);
}

#[test]
fn held_call_survives_its_session_interval_by_tapirs_refresh() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(callee_port), TapirOptions::default());
    let mut callee = spawn("callee", "timer_uas.xml", callee_port, None, &[]);
    let mut caller = spawn(
        "caller",
        "timer_uac.xml",
        free_port("127.0.0.1"),
        Some(&t),
        &["-s", "1000"],
    );
    let started = Instant::now();
    expect_ok(&t, &mut [&mut caller, &mut callee], Duration::from_secs(75));
    // The UPDATE came at half the interval, not earlier.
    assert!(
        started.elapsed() >= Duration::from_secs(44),
        "finished after {:?}",
        started.elapsed()
    );
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
    assert_eq!(t.metric("tapir_calls_total{outcome=\"timeout\"}"), 0.0);
    assert_clean(&t);
}

#[test]
fn vanished_peer_is_hung_up_after_the_media_timeout() {
    let callee_port = free_port("127.0.0.1");
    let opts = TapirOptions {
        // BYE to the vanished callee times out after 64*T1: keep that short.
        t1_ms: 100,
        env: vec![("TAPIR_MEDIA__TIMEOUT_S".into(), "2".into())],
        ..TapirOptions::default()
    };
    let t = Tapir::start(BIN, &route(callee_port), opts);
    let mut callee = spawn("callee", "timer_uas_vanish.xml", callee_port, None, &[]);
    let mut caller = spawn(
        "caller",
        "timer_uac_vanish.xml",
        free_port("127.0.0.1"),
        Some(&t),
        &["-s", "1000"],
    );
    let started = Instant::now();
    expect_ok(&t, &mut [&mut caller, &mut callee], Duration::from_secs(30));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "ended before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "ended late: {took:?}");
    t.wait_metric(
        "tapir_calls_total{outcome=\"timeout\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert!(t.log().contains("no RTP"), "{}", t.log());
    assert_clean(&t);
}
