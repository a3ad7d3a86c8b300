//! Recording announcements and consent collected by tapir, end to end with SIPp.

use std::path::PathBuf;
use std::time::Duration;

use tapir_tests::{free_port, write_prompt_wav, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

struct Setup {
    t: Tapir,
    callee_port: u16,
}

/// tapir with one route whose customer is `customer`, announced with a 1 s prompt.
fn start(customer: &str, collect_consent: bool, policy: Option<&str>) -> Setup {
    let callee_port = free_port("127.0.0.1");
    let dir = tapir_tests::tempfile::tempdir().unwrap().keep();
    let prompt = dir.join("prompt.wav");
    write_prompt_wav(&prompt, 600.0, 1.0);
    let mut extra = format!(
        "[[announcements]]\nroute = \"r\"\nprompt = \"{}\"\ncollect_consent = {collect_consent}\n",
        prompt.display()
    );
    let record = match policy {
        Some(p) => {
            let path = dir.join("policy.toml");
            std::fs::write(&path, p).unwrap();
            extra = format!(
                "[recording]\npolicy_file = \"{}\"\n\n{extra}",
                path.display()
            );
            String::new()
        }
        None => "record = \"never\"\n".into(),
    };
    let route = format!(
        "[[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"{customer}\"\n{record}"
    );
    let t = Tapir::start(
        BIN,
        &route,
        TapirOptions {
            extra,
            ..Default::default()
        },
    );
    Setup { t, callee_port }
}

fn call(s: &Setup, caller_scn: &str, callee_scn: &str) -> (Sipp, Sipp) {
    tapir_tests::call(
        &s.t,
        (caller_scn, Some(400.0), &["-d", "1000"]),
        (callee_scn, Some(1000.0), &[]),
        s.callee_port,
    )
}

/// Time of day (seconds) at which SIPp logged the first message starting with `start`.
fn logged_at(sipp: &Sipp, start: &str) -> f64 {
    let logs = sipp.logs();
    let at = logs
        .find(&format!("\n\n{start}"))
        .unwrap_or_else(|| panic!("no '{start}' in {}", sipp.name));
    let stamp_line = logs[..at]
        .lines()
        .rev()
        .find(|l| l.starts_with("-----") && l.contains(':'))
        .expect("timestamp line");
    let time = stamp_line.rsplit(' ').next().unwrap();
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

fn recordings(t: &Tapir) -> Vec<PathBuf> {
    ["recordings", "spool"]
        .iter()
        .flat_map(|d| tapir_tests::files_under(&t.dir.path().join(d), "wav"))
        .collect()
}

#[test]
fn inbound_prompt_plays_before_the_agent_is_called() {
    let s = start("caller", false, None);
    let (caller, callee) = call(&s, "uac_tone.xml", "uas_tone.xml");
    assert_eq!(
        s.t.metric("tapir_announcements_total{result=\"played\"}"),
        1.0
    );
    // 1 s of prompt is 50 packets of 20 ms.
    assert_eq!(s.t.metric("tapir_announcement_packets_total"), 50.0);
    let sent = logged_at(&caller, "INVITE sip:");
    let reached = logged_at(&callee, "INVITE sip:");
    assert!(
        reached - sent >= 0.95,
        "the agent side was called {:.3} s after the caller's INVITE, before the prompt ended",
        reached - sent
    );
}

#[test]
fn call_backs_are_not_announced() {
    let s = start("caller", false, None);
    call(&s, "uac_tone_callback.xml", "uas_tone.xml");
    assert_eq!(s.t.metric("tapir_announcements_total"), 0.0);
    assert_eq!(s.t.metric("tapir_announcement_packets_total"), 0.0);
}

#[test]
fn outbound_prompt_plays_to_the_callee_before_the_agent_is_connected() {
    let s = start("callee", false, None);
    let (caller, callee) = call(&s, "uac_tone.xml", "uas_tone.xml");
    assert_eq!(
        s.t.metric("tapir_announcements_total{result=\"played\"}"),
        1.0
    );
    let answered = logged_at(&callee, "SIP/2.0 200 OK");
    let connected = logged_at(&caller, "SIP/2.0 200 OK");
    assert!(
        connected - answered >= 0.95,
        "the agent got the 200 {:.3} s after the customer answered",
        connected - answered
    );
}

const CONSENT_POLICY: &str = "[stations.default]\noutbound = \"always\"\ninbound_direct = \"always\"\ninbound_ivr = \"always\"\n\n[consent]\nrequired_for = [\"inbound_direct\"]\n";

#[test]
fn consent_collected_by_tapir_one_records() {
    let s = start("caller", true, Some(CONSENT_POLICY));
    call(&s, "uac_consent_1.xml", "uas_tone.xml");
    assert_eq!(
        s.t.metric("tapir_announcements_total{result=\"consent_granted\"}"),
        1.0
    );
    s.t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
}

#[test]
fn consent_collected_by_tapir_two_refuses() {
    let s = start("caller", true, Some(CONSENT_POLICY));
    call(&s, "uac_consent_2.xml", "uas_tone.xml");
    assert_eq!(
        s.t.metric("tapir_announcements_total{result=\"consent_refused\"}"),
        1.0
    );
    s.t.wait_metric("tapir_recordings_active", Duration::from_secs(10), |v| {
        v == 0.0
    });
    assert!(recordings(&s.t).is_empty(), "{:?}", recordings(&s.t));
}
