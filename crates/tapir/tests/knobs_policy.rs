//! The rules file's knobs and the flow's headers, each proven through the real binary with
//! SIPp calls: how a call's direction is classified (`outbound_zones`, `ivr_zones`,
//! `ivr_numbers`, `queue_means_ivr`, the IVR marker), record policies with a `percentage`
//! and filters, do-not-record policies with a filter, per-policy options, the stop code and
//! the inter-digit timeout, station accounts named by `X-Tapir-Station`, `X-Tapir-Skill`,
//! and the directives an IVR sends on INFO (`start`, `stop`, `pause`, `resume`,
//! `do-not-record`), `X-Tapir-Consent: granted` and `X-Tapir-Disposition`.
//!
//! The route makes the caller the customer and the callee the agent; the caller plays
//! 400 Hz, the callee 1000 Hz.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tapir_tests::{free_port, read_stereo_wav, tone_energy, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const CUSTOMER_HZ: f64 = 400.0;
const AGENT_HZ: f64 = 1000.0;

/// tapir with `policy` as its rules file and `config` on top, one route to `callee_port`.
fn start(policy: &str, config: &str, callee_port: u16) -> Tapir {
    let dir = tapir_tests::tempfile::tempdir().unwrap().keep();
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let route = format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n"
    );
    Tapir::start(
        BIN,
        &route,
        TapirOptions {
            extra: format!(
                "[recording]\npolicy_file = \"{}\"\n\n{config}",
                path.display()
            ),
            ..Default::default()
        },
    )
}

/// Every station in every direction in `mode`, the stop code `*3`, and `extra`.
fn rules(mode: &str, extra: &str) -> String {
    format!(
        "[stations.default]\noutbound = \"{mode}\"\ninbound_direct = \"{mode}\"\ninbound_ivr = \"{mode}\"\n\n\
         [feature_codes]\nstart = \"*2\"\nstop = \"*3\"\n\n{extra}\n"
    )
}

/// One call from `ip` (a loopback address) dialling `user`, the caller running `caller_scn`
/// with `caller_args`, the callee `callee_scn`; waits for both to end well.
fn call_from(
    t: &Tapir,
    callee_port: u16,
    ip: &str,
    user: &str,
    (caller_scn, caller_args): (&str, &[&str]),
    callee_scn: &str,
) {
    let mut callee = Sipp::party(
        "callee",
        callee_scn,
        "127.0.0.1",
        callee_port,
        None,
        Some(AGENT_HZ),
        &[],
    );
    // From `ip` to tapir on 127.0.0.1 (Sipp::party sends to its own address).
    let mut args = tapir_tests::sipp_args(caller_scn, ip, free_port(ip));
    args.insert(0, format!("127.0.0.1:{}", t.sip_port));
    args.extend(
        [
            "-mp",
            &tapir_tests::free_media_port(ip).to_string(),
            "-m",
            "1",
            "-s",
            user,
        ]
        .map(String::from),
    );
    args.extend(caller_args.iter().map(|a| a.to_string()));
    let mut caller = Sipp::spawn_with_tone("caller", &args, CUSTOMER_HZ, 20.0);
    tapir_tests::expect_success(t, &mut [&mut caller, &mut callee], Duration::from_secs(30));
}

/// A call with `inv_hdr` on the INVITE and `info1`, `info2` on INFOs 1 s and 2 s after the
/// answer (each a whole header line); 3 s of audio in all.
fn info_call(t: &Tapir, callee_port: u16, inv_hdr: &str, info1: &str, info2: &str) {
    call_from(
        t,
        callee_port,
        "127.0.0.1",
        "1000",
        (
            "uac_info_directives.xml",
            &[
                "-key", "inv_hdr", inv_hdr, "-key", "info1", info1, "-key", "info2", info2,
            ],
        ),
        "uas_tone_info2.xml",
    );
}

/// A plain 1.5 s call from `ip` to `user` with `headers` (`-key` pairs for
/// uac_tone_agent.xml: number, agent, team, queue).
fn plain_call(t: &Tapir, callee_port: u16, ip: &str, user: &str, keys: &[&str]) {
    let mut args = vec!["-d", "1500"];
    args.extend_from_slice(keys);
    call_from(
        t,
        callee_port,
        ip,
        user,
        ("uac_tone_agent.xml", &args),
        "uas_tone.xml",
    );
}

/// Default `-key`s of uac_tone_agent.xml.
fn facts<'a>(number: &'a str, queue: &'a str) -> Vec<&'a str> {
    vec![
        "-key", "number", number, "-key", "agent", "a1", "-key", "team", "t1", "-key", "queue",
        queue,
    ]
}

fn files(t: &Tapir, ext: &str) -> Vec<PathBuf> {
    let mut v = tapir_tests::files_under(&t.dir.path().join("recordings"), ext);
    v.sort();
    v
}

fn sidecar(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits for `n` contacts to have left their decision (recorded or not).
fn wait_contacts(t: &Tapir, n: f64) {
    t.wait_metric("tapir_calls_total", Duration::from_secs(15), |v| v >= n);
    let done = || {
        t.metric("tapir_recordings_total{result=\"ok\"}")
            + t.metric("tapir_recordings_total{result=\"not_recorded\"}")
    };
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while done() < n {
        assert!(std::time::Instant::now() < end, "{}", t.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A recording's files reach storage a moment after its decision, the sidecar before the
    // audio: wait for every contact's record there, and for the audio of each recorded one.
    let stored = || {
        let sidecars: Vec<PathBuf> = files(t, "json")
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".peaks.json"))
            .collect();
        sidecars.len() as f64 >= n
            && sidecars.iter().all(|p| {
                sidecar(p)["recorded"] == false
                    || p.with_extension("wav").exists()
                    || p.with_extension("mp3").exists()
            })
    };
    while !stored() {
        assert!(std::time::Instant::now() < end, "{:?}", decisions(t));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The decision records (sidecars of recordings and of unrecorded contacts) in call order.
fn decisions(t: &Tapir) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = files(t, "json")
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".peaks.json"))
        .map(|p| sidecar(p))
        .collect();
    v.sort_by_key(|m| m["start_unix_ms"].as_u64().unwrap_or(0));
    v
}

fn reason(m: &serde_json::Value) -> String {
    m["decision"].as_str().unwrap_or("").to_string()
}

/// The longest run of samples silent on both channels, in seconds.
fn longest_silence(c1: &[i16], c2: &[i16]) -> f64 {
    let (mut run, mut best) = (0usize, 0usize);
    for (a, b) in c1.iter().zip(c2) {
        if a.unsigned_abs() < 64 && b.unsigned_abs() < 64 {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best as f64 / 8000.0
}

/// Calls are classified by source zone (outbound and IVR zones), by the IVR marker, by an IVR
/// number, and (with `queue_means_ivr = false`) not by a queue name: the station rule that
/// records each call names the direction it was given.
#[test]
fn directions_come_from_zones_numbers_markers_and_queues() {
    let callee_port = free_port("127.0.0.1");
    let policy = rules(
        "always",
        "[direction]\noutbound_zones = [\"agents\"]\nivr_zones = [\"ivr\"]\n\
         ivr_numbers = [\"800*\"]\nqueue_means_ivr = false\n",
    );
    let t = start(
        &policy,
        "[zones]\nagents = [\"127.0.0.2/32\"]\nivr = [\"127.0.0.3/32\"]\n",
        callee_port,
    );
    let none = facts("5550001", "");
    let queued = facts("5550002", "sales");
    plain_call(&t, callee_port, "127.0.0.2", "1000", &none);
    plain_call(&t, callee_port, "127.0.0.3", "1000", &none);
    plain_call(&t, callee_port, "127.0.0.1", "800123", &none);
    plain_call(&t, callee_port, "127.0.0.1", "1000", &queued);
    call_from(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        (
            "uac_info_directives.xml",
            &[
                "-key",
                "inv_hdr",
                "X-Tapir-Record: start;type=ivr",
                "-key",
                "info1",
                "X-Test: 1",
                "-key",
                "info2",
                "X-Test: 2",
            ],
        ),
        "uas_tone_info2.xml",
    );
    wait_contacts(&t, 5.0);
    let d = decisions(&t);
    assert_eq!(d.len(), 5, "{d:#?}");
    let want = [
        "outbound",
        "inbound_ivr",
        "inbound_ivr",
        "inbound_direct",
        "inbound_ivr",
    ];
    // The route names no direction, so the recording's is the policy's.
    let got: Vec<&str> = d.iter().map(|m| m["direction"].as_str().unwrap()).collect();
    assert_eq!(got, want, "{d:#?}");
    // The station rule that recorded the first four names it too (the fifth is recorded by
    // its own IVR directive).
    for (m, want) in d.iter().zip(want).take(4) {
        assert!(
            reason(m).contains(&format!("{want} mode always")),
            "{want}: {:?}",
            reason(m)
        );
    }
}

/// Record policies by queue: one samples 0 % of its calls, one records all of its; a
/// do-not-record policy filtered by customer number beats the one that records; a call no
/// policy matches is not recorded.
#[test]
fn record_policies_sample_by_percentage_and_filters_decide() {
    let callee_port = free_port("127.0.0.1");
    let policy = rules(
        "on_demand",
        "[[record_policies]]\nname = \"sales\"\npercentage = 0\n[record_policies.filter]\nqueues = [\"sales\"]\n\n\
         [[record_policies]]\nname = \"support\"\n[record_policies.filter]\nqueues = [\"support\"]\n\n\
         [[do_not_record_policies]]\nname = \"vip\"\n[do_not_record_policies.filter]\ncustomer_numbers = [\"555*\"]\n",
    );
    let t = start(&policy, "", callee_port);
    plain_call(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        &facts("4440001", "sales"),
    );
    plain_call(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        &facts("4440002", "support"),
    );
    plain_call(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        &facts("5550003", "support"),
    );
    plain_call(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        &facts("4440004", "other"),
    );
    wait_contacts(&t, 4.0);
    let d = decisions(&t);
    assert_eq!(d.len(), 4);
    let recorded: Vec<bool> = d.iter().map(|m| m["recorded"] != false).collect();
    assert_eq!(recorded, [false, true, false, false], "{d:#?}");
    assert!(
        reason(&d[1]).contains("record policy \"support\" (100 %)"),
        "{d:#?}"
    );
    assert!(
        reason(&d[2]).contains("do-not-record policy \"vip\""),
        "{d:#?}"
    );
    assert_eq!(files(&t, "wav").len(), 1);
}

/// `[record_policies.options]`: the policy that records the call ends its recording at a
/// disposition (`keep_after_disposition = false`, sent as `X-Tapir-Disposition` on an INFO),
/// while `[options]` keeps recordings through dispositions.
#[test]
fn a_record_policys_own_options_apply_to_its_calls() {
    let callee_port = free_port("127.0.0.1");
    let policy = rules(
        "on_demand",
        "[options]\nkeep_after_disposition = true\n\n\
         [[record_policies]]\nname = \"everything\"\n[record_policies.filter]\n\
         [record_policies.options]\nkeep_after_disposition = false\n",
    );
    let t = start(&policy, "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Test: 0",
        "X-Tapir-Disposition: sale",
        "X-Test: 2",
    );
    wait_contacts(&t, 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, _) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    // The disposition came 1 s into a 3 s call.
    assert!((0.6..1.8).contains(&secs), "recorded {secs} s");
    let meta = sidecar(&wav[0].with_extension("json"));
    assert!(meta.to_string().contains("disposition"), "{meta:#}");
}

/// The stop code (`*3` here) ends what `*2` started; a `*` and a `2` further apart than
/// `inter_digit_timeout_ms` are no code (and are one with the default timeout).
#[test]
fn the_stop_code_and_the_inter_digit_timeout_are_honoured() {
    let callee_port = free_port("127.0.0.1");
    let t = start(&rules("on_demand", ""), "", callee_port);
    call_from(
        &t,
        callee_port,
        "127.0.0.1",
        "1000",
        ("uac_tone.xml", &["-d", "4000"]),
        "uas_star2_star3.xml",
    );
    wait_contacts(&t, 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, _) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    // *2 completes ~1.3 s in, *3 ~1.5 s later, of a 4 s call.
    let meta = sidecar(&wav[0].with_extension("json"));
    assert!((1.0..2.2).contains(&secs), "recorded {secs} s: {meta:#}");
    assert!(meta["decisions"].to_string().contains("*3"), "{meta:#}");

    for (timeout, recorded) in [("300", false), ("2000", true)] {
        let callee_port = free_port("127.0.0.1");
        let policy = rules("on_demand", "").replace(
            "stop = \"*3\"",
            &format!("stop = \"*3\"\ninter_digit_timeout_ms = {timeout}"),
        );
        let t = start(&policy, "", callee_port);
        call_from(
            &t,
            callee_port,
            "127.0.0.1",
            "1000",
            ("uac_tone.xml", &["-d", "3500"]),
            "uas_star_gap2.xml",
        );
        wait_contacts(&t, 1.0);
        assert_eq!(
            !files(&t, "wav").is_empty(),
            recorded,
            "timeout {timeout} ms: {:?}",
            decisions(&t).iter().map(reason).collect::<Vec<_>>()
        );
    }
}

/// `X-Tapir-Station` names the station whose account rules apply (`always` for this one,
/// `never` for everyone else); `X-Tapir-Skill` is matched by a record policy's `skills`.
#[test]
fn station_and_skill_headers_select_their_rules() {
    let callee_port = free_port("127.0.0.1");
    let policy = rules(
        "never",
        "[stations.accounts.\"alice\"]\ninbound_direct = \"always\"\n",
    );
    let t = start(&policy, "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Tapir-Station: alice",
        "X-Test: 1",
        "X-Test: 2",
    );
    info_call(
        &t,
        callee_port,
        "X-Tapir-Station: bob",
        "X-Test: 1",
        "X-Test: 2",
    );
    wait_contacts(&t, 2.0);
    let d = decisions(&t);
    assert_eq!(d.len(), 2);
    assert!(
        reason(&d[0]).contains("station alice inbound_direct mode always"),
        "{d:#?}"
    );
    assert_eq!(d[1]["recorded"], false, "{d:#?}");
    assert_eq!(d[0]["station"], "alice");

    let callee_port = free_port("127.0.0.1");
    let policy = rules(
        "on_demand",
        "[[record_policies]]\nname = \"billing\"\n[record_policies.filter]\nskills = [\"billing\"]\n",
    );
    let t = start(&policy, "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Tapir-Skill: billing",
        "X-Test: 1",
        "X-Test: 2",
    );
    info_call(
        &t,
        callee_port,
        "X-Tapir-Skill: sales",
        "X-Test: 1",
        "X-Test: 2",
    );
    wait_contacts(&t, 2.0);
    let d = decisions(&t);
    assert!(
        reason(&d[0]).contains("record policy \"billing\""),
        "{d:#?}"
    );
    assert_eq!(d[0]["skill"], "billing");
    assert_eq!(d[1]["recorded"], false, "{d:#?}");
}

/// Flow directives on INFO during the call: `start` then `stop` records the second between;
/// `pause` then `resume` masks the second between (segments full, paused, full); a
/// `do-not-record` on the INVITE makes a later flow `start` ineffective.
#[test]
fn flow_directives_on_info_steer_the_recording() {
    let callee_port = free_port("127.0.0.1");
    let t = start(&rules("on_demand", ""), "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Test: 0",
        "X-Tapir-Record: start",
        "X-Tapir-Record: stop",
    );
    wait_contacts(&t, 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, c2) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    assert!((0.6..1.6).contains(&secs), "start..stop recorded {secs} s");
    assert!(tone_energy(&c1, CUSTOMER_HZ) > 10.0 * tone_energy(&c1, AGENT_HZ));
    assert!(tone_energy(&c2, AGENT_HZ) > 10.0 * tone_energy(&c2, CUSTOMER_HZ));

    let callee_port = free_port("127.0.0.1");
    let t = start(&rules("always", ""), "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Test: 0",
        "X-Tapir-Record: pause",
        "X-Tapir-Record: resume",
    );
    wait_contacts(&t, 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (c1, c2) = read_stereo_wav(&wav[0]);
    let silent = longest_silence(&c1, &c2);
    assert!((0.7..1.3).contains(&silent), "paused for {silent} s");
    let meta = sidecar(&wav[0].with_extension("json"));
    let kinds: Vec<&str> = meta["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "paused", "full"], "{meta:#}");

    let callee_port = free_port("127.0.0.1");
    let t = start(&rules("always", ""), "", callee_port);
    info_call(
        &t,
        callee_port,
        "X-Tapir-Record: do-not-record",
        "X-Tapir-Record: start",
        "X-Test: 2",
    );
    wait_contacts(&t, 1.0);
    assert!(files(&t, "wav").is_empty(), "{:?}", decisions(&t));
    assert!(
        reason(&decisions(&t)[0]).contains("do-not-record"),
        "{:?}",
        decisions(&t)
    );
}

/// Where consent is required for the call's direction nothing is recorded before it;
/// `X-Tapir-Consent: granted` on an INFO 1 s in records the rest of the call, and what came
/// before the grant is not in the file.
#[test]
fn consent_granted_by_the_flow_records_from_then_on() {
    let callee_port = free_port("127.0.0.1");
    let t = start(
        &rules("always", "[consent]\nrequired_for = [\"inbound_direct\"]\n"),
        "",
        callee_port,
    );
    info_call(
        &t,
        callee_port,
        "X-Test: 0",
        "X-Tapir-Consent: granted",
        "X-Test: 2",
    );
    wait_contacts(&t, 1.0);
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{:?}", decisions(&t));
    let (c1, _) = read_stereo_wav(&wav[0]);
    let secs = c1.len() as f64 / 8000.0;
    // Granted 1 s into a 3 s call.
    assert!((1.4..2.6).contains(&secs), "recorded {secs} s");
}
