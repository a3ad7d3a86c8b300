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
//! - Attended transfer: a caller replaces its own dialog with tapir by a new one (INVITE with
//!   Replaces); the callee gets the new call with a Replaces naming its own dialog with
//!   tapir, ends that dialog, and the contact's recording goes on with the new call. Once
//!   with the customer's side replacing (inbound), once with the agent's (outbound).
//! - Session timer: a held call is refreshed by tapir at half its 90 s interval, twice (the
//!   callee has no timer support), and hangs up normally past the interval (about 92 s).
//! - Vanished peer: no RTP either way and a callee that never answers BYE: tapir ends the
//!   call after `media.timeout_s` (2 s here).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tapir_tests::{free_port, read_stereo_wav, tone_energy, Sipp, Tapir, TapirOptions};

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

/// Tone of the side that replaces its own dialog (the SIPp caller of an attended round).
const REPLACER_HZ: f64 = 400.0;
/// Tone of the party whose dialog is replaced (the SIPp callee).
const REPLACED_HZ: f64 = 1000.0;

/// The SIP messages of a SIPp's message log (`-trace_msg`): (sent by SIPp, text).
fn sipp_messages(s: &Sipp) -> Vec<(bool, String)> {
    let path = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_messages.log"))
        .unwrap_or_else(|| panic!("{} has no message log", s.name));
    let text = std::fs::read_to_string(path).unwrap().replace('\r', "");
    text.split("-----------------------------------------------")
        .filter_map(|block| {
            let mut parts = block.splitn(2, "\n\n");
            let head = parts.next()?;
            let sent = head.contains("message sent");
            (sent || head.contains("message received"))
                .then(|| (sent, parts.next().unwrap_or("").trim().to_string()))
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn tag(name_addr: &str) -> &str {
    let rest = name_addr.split(";tag=").nth(1).unwrap_or("");
    rest.split(';').next().unwrap_or("")
}

/// The first message of `msgs` sent (or received) that starts with `start` and passes `pred`.
fn find_msg<'a>(
    msgs: &'a [(bool, String)],
    sent: bool,
    start: &str,
    pred: impl Fn(&str) -> bool,
) -> &'a str {
    msgs.iter()
        .find(|(s, m)| *s == sent && m.starts_with(start) && pred(m))
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("no {start} (sent: {sent}) in {msgs:#?}"))
}

/// The Replaces header `callee` got, checked against its own dialog with tapir (the first
/// INVITE it received and its answer), and against what `caller` sent.
fn check_replaces(callee: &Sipp, caller: &Sipp) {
    let callee_msgs = sipp_messages(callee);
    let first = find_msg(&callee_msgs, false, "INVITE ", |m| {
        header(m, "Replaces").is_none()
    });
    let first_call_id = header(first, "Call-ID").unwrap();
    let tapir_tag = tag(header(first, "From").unwrap());
    let answer = find_msg(&callee_msgs, true, "SIP/2.0 200", |m| {
        header(m, "Call-ID") == Some(first_call_id)
            && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
    });
    let callee_tag = tag(header(answer, "To").unwrap());
    let replacing = find_msg(&callee_msgs, false, "INVITE ", |m| {
        header(m, "Replaces").is_some()
    });
    let got = header(replacing, "Replaces");
    assert_eq!(
        got,
        Some(format!("{first_call_id};to-tag={callee_tag};from-tag={tapir_tag}").as_str()),
        "the Replaces header must name the callee's own dialog with tapir, to-tag being the \
         callee's"
    );
    assert_ne!(header(replacing, "Call-ID"), Some(first_call_id));
    assert_eq!(header(replacing, "Require"), Some("replaces"));

    // The caller named its own dialog, which the callee knows nothing of.
    let caller_msgs = sipp_messages(caller);
    let caller_first = find_msg(&caller_msgs, true, "INVITE ", |m| {
        header(m, "Replaces").is_none()
    });
    let caller_call_id = header(caller_first, "Call-ID").unwrap();
    let sent = find_msg(&caller_msgs, true, "INVITE ", |m| {
        header(m, "Replaces").is_some()
    });
    let sent = header(sent, "Replaces").unwrap();
    assert!(sent.starts_with(&format!("{caller_call_id};")), "{sent}");
    assert_ne!(got, Some(sent));
}

/// One attended transfer through `t`: a SIPp caller dials `service`, reaching the callee on
/// `callee_port`, then replaces its own dialog with tapir by a new one (INVITE with
/// Replaces); the callee answers the new INVITE, ends the dialog its Replaces names and
/// stays on the new call until the caller hangs up. Returns the Call-ID of the customer's
/// first dialog with tapir (the caller's when `customer_is_caller`), by which the recording
/// is found.
fn attended_round(t: &Tapir, callee_port: u16, service: &str, customer_is_caller: bool) -> String {
    // A message that does not come fails the call in seconds rather than at the harness's
    // limit.
    let mut callee = Sipp::party(
        "replaced",
        "attended_uas.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(REPLACED_HZ),
        &["-m", "2", "-recv_timeout", "10000"],
    );
    let mut caller = Sipp::party(
        "replacer",
        "attended_uac.xml",
        "127.0.0.1",
        free_port("127.0.0.1"),
        Some(t),
        Some(REPLACER_HZ),
        &["-s", service, "-recv_timeout", "10000"],
    );
    let limit = Duration::from_secs(30);
    let done = [caller.wait(limit), callee.wait(limit)] == [0, 0];
    // A callee told to replace a dialog that is not its own cannot end it, so its SIPp fails
    // too; the header says why, the exit codes would not.
    let replacing_arrived = sipp_messages(&callee)
        .iter()
        .any(|(sent, m)| !*sent && m.starts_with("INVITE ") && header(m, "Replaces").is_some());
    if replacing_arrived || done {
        check_replaces(&callee, &caller);
    }
    expect_ok(t, &mut [&mut caller, &mut callee], limit);

    if customer_is_caller {
        let msgs = sipp_messages(&caller);
        header(find_msg(&msgs, true, "INVITE ", |_| true), "Call-ID")
            .unwrap()
            .to_string()
    } else {
        let msgs = sipp_messages(&callee);
        header(find_msg(&msgs, false, "INVITE ", |_| true), "Call-ID")
            .unwrap()
            .to_string()
    }
}

/// Checks the recording of the contact whose first call had `customer_call_id` on the
/// customer's side: the transferred call went on in the same file, with the customer on
/// channel 1.
fn check_continued_recording(t: &Tapir, customer_call_id: &str, customer_hz: f64, agent_hz: f64) {
    let dir = t.dir.path().join("recordings");
    let sidecars: Vec<(PathBuf, serde_json::Value)> = tapir_tests::files_under(&dir, "json")
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    let ours: Vec<&(PathBuf, serde_json::Value)> = sidecars
        .iter()
        .filter(|(_, m)| m["call_id_customer"] == customer_call_id)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one recording for the contact: {sidecars:#?}"
    );
    let (path, meta) = ours[0];
    assert_eq!(meta["complete"], true, "{meta:#}");
    // The replaced call lasted milliseconds; the call that replaced it, a second.
    let covered = meta["call_duration_ms"].as_u64().unwrap();
    assert!(
        covered >= 1000,
        "the recording ended with the replaced call: {meta:#}"
    );
    let (c1, c2) = read_stereo_wav(&path.with_extension("wav"));
    let (c1_cust, c1_agent) = (tone_energy(&c1, customer_hz), tone_energy(&c1, agent_hz));
    let (c2_cust, c2_agent) = (tone_energy(&c2, customer_hz), tone_energy(&c2, agent_hz));
    assert!(
        c1_cust > 20.0 * c1_agent && c2_agent > 20.0 * c2_cust,
        "the transferred call's audio is recorded, customer on channel 1: \
         ch1 {customer_hz} Hz {c1_cust:.0}, {agent_hz} Hz {c1_agent:.0}; \
         ch2 {customer_hz} Hz {c2_cust:.0}, {agent_hz} Hz {c2_agent:.0}"
    );
}

#[test]
fn attended_transfer_by_invite_with_replaces_from_either_side() {
    let callee_port = free_port("127.0.0.1");
    let routes = format!(
        "[[routes]]\nname = \"outbound\"\nuser_prefix = \"out-\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\n\
         customer = \"callee\"\ndirection = \"outbound\"\nrecord = \"always\"\n\n{}record = \"always\"\n",
        route(callee_port)
    );
    // Ports for two calls at once: the replaced call and the one replacing it. The second
    // round needs every pair again, so a pair the first round failed to release makes one
    // of its INVITEs fail with 503.
    let opts = TapirOptions {
        rtp_ports: 8,
        ..TapirOptions::default()
    };
    let t = Tapir::start(BIN, &routes, opts);

    // Inbound: the customer's side replaces its dialog; the agent is told to replace its own.
    let customer = attended_round(&t, callee_port, "1000", true);
    t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(5),
        |v| v == 2.0,
    );
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    check_continued_recording(&t, &customer, REPLACER_HZ, REPLACED_HZ);

    // Outbound: the agent's side replaces its dialog; the customer replaces its own.
    let customer = attended_round(&t, callee_port, "out-1000", false);
    t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(5),
        |v| v == 4.0,
    );
    // Every call, replaced or replacing, ended completed: none rejected, refused or timed out.
    assert_eq!(t.metric("tapir_calls_total"), 4.0, "{}", t.metrics());
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 2.0,
    );
    check_continued_recording(&t, &customer, REPLACED_HZ, REPLACER_HZ);

    let log = t.log();
    for (call, replaced) in [(2, 1), (4, 3)] {
        let linked = format!("call continues a transfer call={call} previous={replaced} contact={replaced} replaces={replaced}");
        assert!(log.contains(&linked), "{linked}:\n{log}");
    }
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
    expect_ok(
        &t,
        &mut [&mut caller, &mut callee],
        Duration::from_secs(120),
    );
    // Two refreshes, each at half the interval, and the call lived past the 90 s interval
    // (without the first refresh tapir would have hung up at 60 s, a third before expiry).
    assert!(
        started.elapsed() >= Duration::from_secs(90),
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
