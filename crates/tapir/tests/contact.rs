//! One contact, one decision, through the real binary: consent on a route that always
//! records, `never` stations, in-band `*2`, pause and resume by feature code, transfers whose
//! transferor hangs up first, the agent leaving a third party with the customer.
//!
//! The caller (customer) plays 400 Hz, the callee (agent) 1000 Hz, a transfer target 1600 Hz.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tapir_tests::{free_port, read_stereo_wav, tone_energy, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const CUSTOMER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;
const TARGET_HZ: f64 = 1600.0;

/// Starts tapir with `routes` and, when given, a policy rules file.
fn start(routes: &str, policy: Option<&str>) -> Tapir {
    let extra = match policy {
        Some(p) => {
            let dir = tapir_tests::tempfile::tempdir().unwrap().keep();
            let path = dir.join("policy.toml");
            std::fs::write(&path, p).unwrap();
            format!(
                "[recording]\npolicy_file = \"{}\"\ntransfer_grace_ms = 5000\n",
                path.display()
            )
        }
        None => "[recording]\ntransfer_grace_ms = 5000\n".to_string(),
    };
    Tapir::start(
        BIN,
        routes,
        TapirOptions {
            extra,
            ..Default::default()
        },
    )
}

fn pbx_route(callee_port: u16, record: Option<&str>) -> String {
    let record = record.map_or(String::new(), |r| format!("record = \"{r}\"\n"));
    format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n{record}"
    )
}

fn call(t: &Tapir, callee_port: u16, caller: &str, callee: &str, ms: u32) {
    let d = ms.to_string();
    tapir_tests::call(
        t,
        (caller, Some(CUSTOMER_HZ), &["-d", &d]),
        (callee, Some(AGENT_HZ), &[]),
        callee_port,
    );
}

/// Files with extension `ext` in the recordings directory and the spool.
fn files(t: &Tapir, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["recordings", "spool"]
        .iter()
        .flat_map(|d| tapir_tests::files_under(&t.dir.path().join(d), ext))
        .collect();
    v.sort();
    v
}

fn sidecar(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits for `n` contacts' decisions: recorded (`ok`) or not (`not_recorded`).
fn wait_decisions(t: &Tapir, label: &str, n: f64) {
    t.wait_metric(
        &format!("tapir_recordings_total{{result=\"{label}\"}}"),
        Duration::from_secs(15),
        |v| v == n,
    );
}

/// The one decision record of an unrecorded contact, after checking no audio was kept.
fn only_decision(t: &Tapir) -> serde_json::Value {
    wait_decisions(t, "not_recorded", 1.0);
    assert!(files(t, "wav").is_empty(), "{:?}", files(t, "wav"));
    assert!(files(t, "mp3").is_empty());
    let json = files(t, "json");
    assert_eq!(json.len(), 1, "{json:?}");
    let meta = sidecar(&json[0]);
    assert_eq!(meta["recorded"], false, "{meta:#}");
    meta
}

#[test]
fn a_consent_refusal_on_a_route_that_always_records_leaves_no_file() {
    let callee_port = free_port("127.0.0.1");
    let t = start(&pbx_route(callee_port, Some("always")), None);
    call(
        &t,
        callee_port,
        "uac_tone_consent_denied.xml",
        "uas_tone.xml",
        1500,
    );
    let meta = only_decision(&t);
    assert_eq!(meta["decision"], "the caller refused consent", "{meta:#}");
    assert!(
        t.log().contains("reason=the caller refused consent"),
        "{}",
        t.log()
    );
}

#[test]
fn a_never_station_is_not_recorded_by_star_two() {
    let callee_port = free_port("127.0.0.1");
    // SIPp dials `service`: that is the agent's station.
    let policy =
        "[stations.accounts.\"service\"]\noutbound = \"never\"\ninbound_direct = \"never\"\n\
                  inbound_ivr = \"never\"\n\n[feature_codes]\nstart = \"*2\"\n";
    let t = start(&pbx_route(callee_port, None), Some(policy));
    call(&t, callee_port, "uac_tone.xml", "uas_star2.xml", 3000);
    let meta = only_decision(&t);
    assert_eq!(
        meta["decision"], "station service inbound_direct mode never",
        "{meta:#}"
    );
    assert_eq!(meta["station"], "service");
    // The code is still kept from the customer: the agent pressed it.
    assert_eq!(
        t.metric("tapir_rtp_packets_dropped_total{reason=\"feature_code\"}"),
        16.0
    );
}

#[test]
fn in_band_star_two_starts_the_recording_at_that_moment() {
    let callee_port = free_port("127.0.0.1");
    let policy = "[feature_codes]\nstart = \"*2\"\n";
    let t = start(&pbx_route(callee_port, None), Some(policy));
    call(
        &t,
        callee_port,
        "uac_tone.xml",
        "uas_inband_star2.xml",
        3000,
    );
    wait_decisions(&t, "ok", 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}\n{}", t.log());
    let (c1, c2) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    // *2 ends about 1.3 s into the agent's audio of a ~3 s call: only the rest is recorded.
    assert!((0.8..2.3).contains(&secs), "{secs} s\n{}", t.log());
    assert!(tone_energy(&c1, CUSTOMER_HZ) > 20.0 * tone_energy(&c1, AGENT_HZ));
    assert!(tone_energy(&c2, AGENT_HZ) > 20.0 * tone_energy(&c2, CUSTOMER_HZ));
    let meta = sidecar(&wav[0].with_extension("json"));
    assert!(
        meta["decision"]
            .as_str()
            .is_some_and(|d| d.contains("feature code *2")),
        "{meta:#}"
    );
}

/// The longest run of 20 ms frames in which both channels are silent, in seconds.
fn longest_silence(c1: &[i16], c2: &[i16]) -> f64 {
    let loud = |f: &[i16]| f.iter().map(|s| i64::from(*s).abs()).max().unwrap_or(0) > 200;
    let (mut best, mut run) = (0usize, 0usize);
    for (a, b) in c1.chunks(160).zip(c2.chunks(160)) {
        if loud(a) || loud(b) {
            run = 0;
        } else {
            run += 1;
            best = best.max(run);
        }
    }
    best as f64 * 0.02
}

#[test]
fn pause_and_resume_by_feature_code_leave_silence_on_both_channels_for_that_span() {
    let callee_port = free_port("127.0.0.1");
    let policy = "[stations.default]\noutbound = \"always\"\ninbound_direct = \"always\"\n\
                  inbound_ivr = \"always\"\n\n[feature_codes]\npause = \"*4\"\nresume = \"*5\"\n";
    let t = start(&pbx_route(callee_port, None), Some(policy));
    call(
        &t,
        callee_port,
        "uac_tone.xml",
        "uas_pause_resume.xml",
        4000,
    );
    wait_decisions(&t, "ok", 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, c2) = read_stereo_wav(&wav[0]);
    // *4 and *5 are keyed 1.5 s apart (each the same 300 ms of key presses): the pause spans
    // 1.5 s, give or take a packet or two of detection.
    let silent = longest_silence(&c1, &c2);
    let meta = sidecar(&wav[0].with_extension("json"));
    assert!(
        (1.4..=1.6).contains(&silent),
        "silent for {silent} s: {meta:#}"
    );
    let kinds: Vec<&str> = meta["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "paused", "full"], "{meta:#}");
}

/// Routes of the transfer tests: calls to `ext-…` leave the contact centre (external),
/// calls to `agent2-…` reach another agent; both at the target's port; the rest reaches
/// the first agent.
fn transfer_routes(callee_port: u16, target_port: u16) -> String {
    format!(
        "[[routes]]\nname = \"carrier\"\nuser_prefix = \"ext-\"\ntarget = \"sip:127.0.0.1:{target_port}\"\n\
         customer = \"caller\"\nexternal = true\nrecord = \"always\"\n\n\
         [[routes]]\nname = \"agents\"\nuser_prefix = \"agent2-\"\ntarget = \"sip:127.0.0.1:{target_port}\"\n\
         customer = \"caller\"\nrecord = \"always\"\n\n{}",
        pbx_route(callee_port, Some("always"))
    )
}

/// A customer calls the agent, who transfers it to `target_user` (with `suffix` after the
/// Refer-To's port) and hangs up at once; the customer calls the target only afterwards.
fn transfer_hanging_up_first(
    t: &Tapir,
    callee_port: u16,
    target_port: u16,
    target_user: &str,
    suffix: &str,
) {
    transfer_dialled(t, callee_port, target_port, "1000", target_user, suffix);
}

/// [`transfer_hanging_up_first`], the customer dialling `dialled`.
fn transfer_dialled(
    t: &Tapir,
    callee_port: u16,
    target_port: u16,
    dialled: &str,
    target_user: &str,
    suffix: &str,
) {
    let tp = target_port.to_string();
    let mut target = Sipp::party(
        "target",
        "uas_tone.xml",
        "127.0.0.1",
        target_port,
        None,
        Some(TARGET_HZ),
        &[],
    );
    let mut agent = Sipp::party(
        "agent",
        "refer_uas_hangup.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(AGENT_HZ),
        &[
            "-set",
            "target_port",
            &tp,
            "-set",
            "target_user",
            target_user,
            "-set",
            "refer_suffix",
            suffix,
        ],
    );
    let mut customer = Sipp::party(
        "customer",
        "refer_uac_late.xml",
        "127.0.0.1",
        free_port("127.0.0.1"),
        Some(t),
        Some(CUSTOMER_HZ),
        &["-s", dialled],
    );
    tapir_tests::expect_success(
        t,
        &mut [&mut customer, &mut agent, &mut target],
        Duration::from_secs(40),
    );
}

#[test]
fn a_blind_transfer_whose_transferor_hangs_up_first_is_one_file_with_both_segments() {
    let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let t = start(&transfer_routes(callee_port, target_port), None);
    transfer_hanging_up_first(&t, callee_port, target_port, "agent2-200", ";x=1");
    wait_decisions(&t, "ok", 1.0);
    let wav = files(&t, "wav");
    assert_eq!(
        wav.len(),
        1,
        "one file for the contact: {wav:?}\n{}",
        t.log()
    );
    let meta = sidecar(&wav[0].with_extension("json"));
    let segments = meta["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{meta:#}");
    assert_eq!(
        segments[1]["start_reason"], "the transferred call joined",
        "{meta:#}"
    );
    // Channel 2 is the first agent up to the transfer, the second one after it.
    let (_, c2) = read_stereo_wav(&wav[0]);
    let split = segments[1]["start_frame"].as_u64().unwrap() as usize;
    let (first, second) = c2.split_at(split.min(c2.len()));
    assert!(
        tone_energy(first, AGENT_HZ) > 20.0 * tone_energy(first, TARGET_HZ),
        "the first agent in the first segment"
    );
    assert!(
        tone_energy(second, TARGET_HZ) > 20.0 * tone_energy(second, AGENT_HZ),
        "the second agent in the second segment"
    );
}

/// The agent consulted a third party outside the contact centre (attended transfer to an
/// external number) and left: the option decides whether the customer's talk with the third
/// party is recorded.
#[test]
fn the_agent_leaving_a_third_party_with_the_customer_follows_its_option() {
    for keep in [false, true] {
        let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let policy = format!("[options]\nkeep_after_agent_leaves_third_party = {keep}\n");
        let t = start(&transfer_routes(callee_port, target_port), Some(&policy));
        transfer_hanging_up_first(
            &t,
            callee_port,
            target_port,
            "ext-5550100",
            "?Replaces=consult%40pbx%3Bto-tag%3Da%3Bfrom-tag%3Db",
        );
        wait_decisions(&t, "ok", 1.0);
        let wav = files(&t, "wav");
        assert_eq!(wav.len(), 1, "{wav:?}\n{}", t.log());
        let meta = sidecar(&wav[0].with_extension("json"));
        let segments = meta["segments"].as_array().unwrap();
        if keep {
            assert_eq!(segments.len(), 2, "{meta:#}");
            let split = segments[1]["start_frame"].as_u64().unwrap() as usize;
            let (_, c2) = read_stereo_wav(&wav[0]);
            let after = &c2[split.min(c2.len())..];
            assert!(
                after.len() > 8000,
                "the third party's talk is recorded: {meta:#}"
            );
            assert!(tone_energy(after, TARGET_HZ) > 20.0 * tone_energy(after, AGENT_HZ));
        } else {
            assert_eq!(segments.len(), 1, "nothing after the agent left: {meta:#}");
            assert!(
                meta["decisions"].to_string().contains("the agent left"),
                "{meta:#}"
            );
        }
    }
}

/// The agent's disposition through the control API ends the recording when
/// `keep_after_disposition` is off; an unknown call gets 404.
#[test]
fn a_disposition_by_the_api_ends_the_recording_unless_kept() {
    let callee_port = free_port("127.0.0.1");
    let policy = "[options]\nkeep_after_disposition = false\n";
    let t = start(&pbx_route(callee_port, Some("always")), Some(policy));
    assert_eq!(
        t.http("POST", "/calls/999/disposition").0,
        404,
        "an unknown call"
    );
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
        // About a second into the answered call.
        std::thread::sleep(Duration::from_millis(1000));
        tapir_tests::http_request(http, "POST", &format!("/calls/{id}/disposition"), "").0
    });
    call(&t, callee_port, "uac_tone.xml", "uas_tone.xml", 3000);
    assert_eq!(api.join().unwrap(), 204);
    wait_decisions(&t, "ok", 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, _) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    assert!(
        (0.5..2.0).contains(&secs),
        "recorded {secs} s of a 3 s call"
    );
    let meta = sidecar(&wav[0].with_extension("json"));
    assert_eq!(
        meta["segments"][0]["end_reason"], "disposition applied",
        "{meta:#}"
    );
}

/// The customer refuses the agent's REFER (603): no transferred call will come, so the
/// contact is finished at the hang-up rather than at the end of a long grace window (60 s
/// here), and the decision log says why.
#[test]
fn a_refused_transfer_finishes_the_contact_at_the_hang_up() {
    let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let t = Tapir::start(
        BIN,
        &transfer_routes(callee_port, target_port),
        TapirOptions {
            extra: "[recording]\ntransfer_grace_ms = 60000\n".into(),
            ..TapirOptions::default()
        },
    );
    let tp = target_port.to_string();
    let mut agent = Sipp::party(
        "agent",
        "refer_uas_refused.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(AGENT_HZ),
        &[
            "-set",
            "target_port",
            &tp,
            "-set",
            "target_user",
            "agent2-200",
            "-set",
            "refer_suffix",
            "",
        ],
    );
    let mut customer = Sipp::party(
        "customer",
        "refer_uac_refuse.xml",
        "127.0.0.1",
        free_port("127.0.0.1"),
        Some(&t),
        Some(CUSTOMER_HZ),
        &["-s", "1000"],
    );
    tapir_tests::expect_success(
        &t,
        &mut [&mut customer, &mut agent],
        Duration::from_secs(30),
    );
    let hung_up = std::time::Instant::now();
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert!(
        hung_up.elapsed() < Duration::from_secs(15),
        "finished {:?} after the hang-up",
        hung_up.elapsed()
    );
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let meta = sidecar(&wav[0].with_extension("json"));
    assert!(
        meta.to_string().contains("the REFER came to 603"),
        "{meta:#}"
    );
    t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("transfer failed") && l.contains("status=603")
    });
}

/// The segments of the contact's one recording, once it is stored.
fn transferred_segments(t: &Tapir) -> (usize, serde_json::Value) {
    wait_decisions(t, "ok", 1.0);
    let wav = files(t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}\n{}", t.log());
    let meta = sidecar(&wav[0].with_extension("json"));
    (meta["segments"].as_array().unwrap().len(), meta)
}

/// A blind transfer to a number outside the contact centre (a route marked `external`):
/// `keep_after_external_transfer` decides whether the customer's talk with it is recorded.
#[test]
fn an_external_blind_transfer_follows_its_option() {
    for keep in [false, true] {
        let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let policy = format!("[options]\nkeep_after_external_transfer = {keep}\n");
        let t = start(&transfer_routes(callee_port, target_port), Some(&policy));
        transfer_hanging_up_first(&t, callee_port, target_port, "ext-5550100", ";x=1");
        let (segments, meta) = transferred_segments(&t);
        assert_eq!(segments, if keep { 2 } else { 1 }, "keep {keep}: {meta:#}");
        if !keep {
            assert!(
                meta["decisions"].to_string().contains("external number"),
                "{meta:#}"
            );
        }
    }
}

/// The agent leaves an attended transfer to an emergency number (`emergency_numbers`):
/// `keep_after_agent_leaves_emergency` decides, not the third-party option (set the other
/// way). A call the customer dialled to an emergency number is an emergency call too: the
/// agent leaving it with an ordinary external party follows the emergency option.
#[test]
fn the_agent_leaving_an_emergency_call_follows_the_emergency_option() {
    const REPLACES: &str = "?Replaces=consult%40pbx%3Bto-tag%3Da%3Bfrom-tag%3Db";
    for keep in [false, true] {
        let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let policy = format!(
            "emergency_numbers = [\"ext-112\"]\n[options]\nkeep_after_agent_leaves_emergency = {keep}\n\
             keep_after_agent_leaves_third_party = {}\n",
            !keep
        );
        let t = start(&transfer_routes(callee_port, target_port), Some(&policy));
        transfer_hanging_up_first(&t, callee_port, target_port, "ext-112", REPLACES);
        let (segments, meta) = transferred_segments(&t);
        assert_eq!(segments, if keep { 2 } else { 1 }, "keep {keep}: {meta:#}");
    }
    let (callee_port, target_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let policy =
        "emergency_numbers = [\"911\"]\n[options]\nkeep_after_agent_leaves_emergency = true\n\
                  keep_after_agent_leaves_third_party = false\n";
    let t = start(&transfer_routes(callee_port, target_port), Some(policy));
    transfer_dialled(&t, callee_port, target_port, "911", "ext-5550100", REPLACES);
    let (segments, meta) = transferred_segments(&t);
    assert_eq!(
        segments, 2,
        "an emergency call keeps its recording: {meta:#}"
    );
}
