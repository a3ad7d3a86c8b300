//! Black-box registration relay tests: the real `tapir` binary as outbound proxy of a SIPp
//! "desk phone", in front of a SIPp "PBX registrar".
//!
//! The registrar challenges the phone with a digest 401 and verifies the retried REGISTER's
//! credentials (SIPp's `verifyauth`), so a pass proves that the challenge and the credentials
//! crossed tapir untouched. It then calls the Contact tapir registered; the phone answers that
//! call on the address it registered from.

use std::time::Duration;

use tapir_tests::{free_media_port, free_port, sipp_args, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const IP: &str = "127.0.0.1";

/// tapir with the registration relay toward `registrar_port`, and a route for the phones'
/// own outgoing calls (dialled numbers starting with 9) that these tests never use.
fn start_tapir(registrar_port: u16) -> Tapir {
    start_tapir_with(registrar_port, "")
}

fn start_tapir_with(registrar_port: u16, more: &str) -> Tapir {
    let extra = format!(
        "[registrar]\ntarget = \"sip:{IP}:{registrar_port}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n{more}"
    );
    let routes = format!(
        "[[routes]]\nname = \"phones-out\"\nuser_prefix = \"9\"\ntarget = \"sip:{IP}:{registrar_port}\"\ncustomer = \"callee\"\ndirection = \"outbound\"\n"
    );
    Tapir::start(
        BIN,
        &routes,
        TapirOptions {
            extra,
            ..Default::default()
        },
    )
}

fn spawn_registrar(scenario: &str, port: u16) -> Sipp {
    let mut a = sipp_args(scenario, IP, port);
    a.extend([
        "-mp".into(),
        free_media_port(IP).to_string(),
        "-m".into(),
        "1".into(),
    ]);
    Sipp::spawn("registrar", &a)
}

fn spawn_phone(t: &Tapir, scenario: &str, extra: &[&str]) -> Sipp {
    let mut a = sipp_args(scenario, IP, free_port(IP));
    a.insert(0, t.sip());
    a.extend([
        "-mp".into(),
        free_media_port(IP).to_string(),
        "-m".into(),
        "1".into(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    Sipp::spawn("phone", &a)
}

fn expect_ok(t: &Tapir, phone: &mut Sipp, registrar: &mut Sipp) {
    let rc_phone = phone.wait(Duration::from_secs(30));
    let rc_registrar = registrar.wait(Duration::from_secs(30));
    assert!(
        rc_phone == 0 && rc_registrar == 0,
        "phone rc {rc_phone}, registrar rc {rc_registrar}\n{}\n{}\ntapir log:\n{}",
        phone.logs(),
        registrar.logs(),
        t.log()
    );
}

#[test]
fn challenged_registration_then_call_to_the_phone_then_unregister() {
    let registrar_port = free_port(IP);
    let t = start_tapir(registrar_port);
    let mut registrar = spawn_registrar("reg_registrar.xml", registrar_port);
    let answer = tapir_tests::scenarios().join("reg_phone_answer.xml");
    let mut phone = spawn_phone(&t, "reg_phone.xml", &["-oocsf", answer.to_str().unwrap()]);
    expect_ok(&t, &mut phone, &mut registrar);
    // The call from the PBX went through tapir to the phone and was hung up by the PBX; the
    // call after the un-REGISTER got 480 (the registrar scenario checks it) before any call
    // state existed, so it is not counted as a call.
    t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(t.metric("tapir_calls_total"), 1.0);
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 0.0);
}

#[test]
fn expired_registration_is_dropped() {
    let registrar_port = free_port(IP);
    let t = start_tapir(registrar_port);
    let mut registrar = spawn_registrar("reg_registrar_expire.xml", registrar_port);
    let mut phone = spawn_phone(&t, "reg_phone_short.xml", &[]);
    // The registrar scenario got its 480 for the call after the grant ran out.
    expect_ok(&t, &mut phone, &mut registrar);
    assert_eq!(t.metric("tapir_calls_total"), 0.0);
    assert!(
        t.log().contains("registrations expired"),
        "the expiry timer fired:\n{}",
        t.log()
    );
}

#[test]
fn a_phone_called_at_its_registered_contact_is_recorded_by_its_accounts_station_rule() {
    let registrar_port = free_port(IP);
    let dir = tapir_tests::tempfile::tempdir().unwrap().keep();
    let policy = dir.join("policy.toml");
    // Every other station is on demand: only alice's own rule records her calls.
    std::fs::write(
        &policy,
        "[stations.accounts.\"alice\"]\ninbound_direct = \"always\"\n",
    )
    .unwrap();
    let t = start_tapir_with(
        registrar_port,
        &format!("\n[recording]\npolicy_file = \"{}\"\n", policy.display()),
    );
    let mut registrar = spawn_registrar("reg_registrar.xml", registrar_port);
    let answer = tapir_tests::scenarios().join("reg_phone_answer.xml");
    let mut phone = spawn_phone(&t, "reg_phone.xml", &["-oocsf", answer.to_str().unwrap()]);
    expect_ok(&t, &mut phone, &mut registrar);
    // The PBX dialled the Contact tapir registered (`alice~<token>`); the recording and its
    // decision name the account.
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let json: Vec<_> = tapir_tests::files_under(&t.dir.path().join("recordings"), "json")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".peaks.json"))
        .collect();
    assert_eq!(json.len(), 1, "{json:?}");
    assert!(json[0].with_extension("wav").exists());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap()).unwrap();
    assert_eq!(meta["station"], "alice", "{meta:#}");
    assert_eq!(meta["recorded"], true, "{meta:#}");
    assert_eq!(
        meta["decision"], "station alice inbound_direct mode always",
        "{meta:#}"
    );
}
