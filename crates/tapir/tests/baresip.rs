//! SRTP end to end with a real SDES client: Debian's baresip (1.0, its `srtp` module) on one
//! or both legs of the real binary (tests/src/baresip.rs drives it headless). Each party sends
//! its own tone; the recording must hold the customer's on channel 1 and the agent's on
//! channel 2, in the clear, and each party must hear (decrypt) the other's. A packet with a bad
//! authentication tag sent toward tapir's SRTP port is dropped and counted while the call goes
//! on.
//!
//! baresip's own habits that these tests live with: it offers a single `a=crypto` line,
//! AES_CM_128_HMAC_SHA1_80 (it answers _32 and AEAD_AES_128_GCM too); `mediaenc=srtp` offers
//! `RTP/AVP` with `a=crypto` ("best effort"); it sends an RTCP APP "PINGPONG" in the clear
//! before its SRTCP starts and its RTCP BYE in the clear at hang-up, both of which tapir
//! drops and counts as it must (they carry no authentication tag).
//!
//! baresip is also the real SIP over TLS party (Debian's SIPp has no TLS): a TLS and SRTP
//! caller toward a UDP SIPp callee, and mutual TLS on both legs with a phone and a target
//! whose certificates are of a CA tapir does not trust, each refused with a log line naming
//! it (the caller of the untrusted target answered 503 at once).
//!
//! Needs `baresip` (`apt-get install -y baresip`; scripts/test.sh installs it): without it the
//! tests skip, except under CI=true where they fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tapir_tests::baresip::{audio_port, baresip_path, sdp_attr, Baresip, Party, PartyTls};
use tapir_tests::pki::{pki, tls_listener_env, write, Pki};
use tapir_tests::sdes::{self, Outcome};
use tapir_tests::{free_port, read_stereo_wav, tone_energy, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const CALLER_HZ: f64 = 400.0;
const CALLEE_HZ: f64 = 1000.0;
const T: Duration = Duration::from_secs(15);

fn route(callee_port: u16, srtp: &str) -> String {
    format!(
        "[[routes]]\nname = \"trunk\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\nformat = \"wav\"\nsrtp = {srtp}\n"
    )
}

/// baresip as `user`, with `mediaenc`, sending a `hz` tone; over TLS with its own
/// certificate and the CAs it trusts when `tls` is given.
fn party(bin: &Path, user: &str, mediaenc: &str, hz: f64, tls: Option<(&Pki, &str)>) -> Baresip {
    Baresip::start(
        bin,
        Party {
            user,
            mediaenc,
            tone_hz: hz,
            tls: tls.map(|(own, trust)| PartyTls { own, trust }),
        },
    )
}

/// Files under `dir` with extension `ext`, at any depth (recordings may sit in date folders).
fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, ext, out);
        } else if p.extension().and_then(|e| e.to_str()) == Some(ext) {
            out.push(p);
        }
    }
}

fn recordings(t: &Tapir, ext: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    walk(&t.dir.path().join("recordings"), ext, &mut v);
    v
}

/// Asserts that `samples` carry `want` Hz and not `other` Hz (at least ten times the energy).
fn assert_tone(samples: &[i16], want: f64, other: f64, what: &str) {
    assert!(
        samples.len() > 8000,
        "{what}: only {} samples",
        samples.len()
    );
    let e = (tone_energy(samples, want), tone_energy(samples, other));
    assert!(
        e.0 > 10.0 * e.1,
        "{what}: {want} Hz against {other} Hz: {e:?}"
    );
}

/// The recording's channels: the caller's tone on channel 1 (customer), the callee's on 2.
fn assert_recording(t: &Tapir) {
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let wav = recordings(t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (customer, agent) = read_stereo_wav(&wav[0]);
    let sidecar = std::fs::read_to_string(wav[0].with_extension("json")).unwrap_or_default();
    let what = |ch: &str| format!("{ch}; sidecar: {sidecar}");
    assert_tone(
        &customer,
        CALLER_HZ,
        CALLEE_HZ,
        &what("channel 1 (customer)"),
    );
    assert_tone(&agent, CALLEE_HZ, CALLER_HZ, &what("channel 2 (agent)"));
}

/// Every SRTP drop counter, by reason.
fn srtp_drops(t: &Tapir) -> Vec<(String, f64)> {
    t.metrics()
        .lines()
        .filter(|l| l.starts_with("tapir_srtp_packets_dropped_total{"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

const AUTH_FAILED: &str = "tapir_srtp_packets_dropped_total{reason=\"auth_failed\"}";

/// Sends tapir's port `port` one SRTP packet protected with the caller's own key (`crypto`,
/// the value of its `a=crypto`) whose authentication tag is then broken. Its SSRC is new, so
/// no replay window is consulted: the tag alone decides. Returns the port it came from.
fn forge(crypto: &str, port: u16) -> u16 {
    let c = sdp::Crypto::parse(crypto).expect("the caller's a=crypto");
    let mut ctx = srtp::Context::new(&c.keying).unwrap();
    let mut b = vec![0u8; 172 + srtp::MAX_RTP_TRAILER];
    media::rtp::write_header(&mut b, false, 8, 4242, 4242 * 160, 0x0bad_f00d);
    b[12..172].fill(0xd5);
    let n = ctx.protect_rtp(&mut b, 172).unwrap();
    b[n - 1] ^= 0x01;
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&b[..n], ("127.0.0.1", port)).unwrap();
    s.local_addr().unwrap().port()
}

/// What tapir dropped of plain RTP/RTCP: nothing, on any of these calls.
fn assert_no_rtp_dropped(t: &Tapir) {
    assert_eq!(
        t.metric("tapir_rtp_packets_dropped_total"),
        0.0,
        "{}",
        t.metrics()
    );
}

/// baresip on both legs, SRTP (RTP/SAVP) both ways: each leg keyed on its own, tones on the
/// right channels, each party hears the other; a forged packet is dropped and counted, and
/// the call goes on.
#[test]
fn baresip_srtp_on_both_legs() {
    let Some(bin) = baresip_path() else { return };
    let mut callee = party(&bin, "1000", "srtp-mand", CALLEE_HZ, None);
    let t = Tapir::start(
        BIN,
        &route(
            callee.sip_port,
            "{ caller = \"require\", callee = \"require\" }",
        ),
        TapirOptions::default(),
    );
    let mut caller = party(&bin, "alice", "srtp-mand", CALLER_HZ, None);
    caller.command("dial", &format!("sip:1000@127.0.0.1:{}", t.sip_port));
    let fail = |what: &str, c: &Baresip, b: &Baresip| -> String {
        format!(
            "{what}\ncaller:\n{}\ncallee:\n{}\ntapir:\n{}",
            c.output(),
            b.output(),
            t.log()
        )
    };
    caller
        .event("CALL_ESTABLISHED", T)
        .unwrap_or_else(|| panic!("{}", fail("no call", &caller, &callee)));
    // Both parties run SRTP in baresip's suite.
    for (who, p) in [("caller", &caller), ("callee", &callee)] {
        let menc = p
            .event("CALL_MENC", T)
            .unwrap_or_else(|| panic!("{}", fail(&format!("{who}: no SRTP"), &caller, &callee)));
        assert_eq!(menc["param"], "0,audio,AES_CM_128_HMAC_SHA1_80", "{who}");
    }
    // Each leg has its own key: tapir's offer to the callee does not carry the caller's key,
    // and its answer to the caller does not carry the callee's.
    let sent = caller.sent_sip();
    let invite = sent.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    let caller_key = sdp_attr(invite, "crypto").expect("baresip offers a=crypto");
    let got = callee.received_sip();
    let offer = got.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    assert!(offer.contains(" RTP/SAVP "), "{offer}");
    let to_callee = sdp_attr(offer, "crypto").expect("tapir offers the callee a key");
    assert_ne!(key_of(to_callee), key_of(caller_key));
    let got = caller.received_sip();
    let answer = got
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("m=audio"))
        .expect("tapir's answer");
    let callee_sent = callee.sent_sip();
    let callee_ok = callee_sent
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .unwrap();
    assert_ne!(
        key_of(sdp_attr(answer, "crypto").unwrap()),
        key_of(sdp_attr(callee_ok, "crypto").unwrap())
    );
    let tapir_port = audio_port(answer).unwrap();

    // Media flows both ways; then one forged packet toward the caller's leg.
    let relayed = |leg: &str| format!("tapir_rtp_packets_relayed_total{{from=\"{leg}_rtp\"}}");
    t.wait_metric(&relayed("a"), T, |v| v >= 100.0);
    t.wait_metric(&relayed("b"), T, |v| v >= 100.0);
    let before = srtp_drops(&t);
    let auth0 = t.metric(AUTH_FAILED);
    let forger = forge(caller_key, tapir_port);
    t.wait_metric(AUTH_FAILED, T, |v| v == auth0 + 1.0);
    // ... and logged with where it came from.
    let from = format!("from=127.0.0.1:{forger}");
    let log = t.log();
    let line = log
        .lines()
        .find(|l| l.contains("SRTP packet dropped") && l.contains(&from))
        .unwrap_or_else(|| panic!("no log line for the forged packet:\n{log}"));
    assert!(line.contains("auth_failed"), "{line}");
    // The call goes on: another two seconds of the caller's audio are relayed, and nothing
    // else was dropped meanwhile.
    let a_at = t.metric(&relayed("a"));
    t.wait_metric(&relayed("a"), T, |v| v >= a_at + 100.0);
    let after = srtp_drops(&t);
    for ((k, v0), (k1, v1)) in before.iter().zip(&after) {
        assert_eq!(k, k1);
        let want = if k == AUTH_FAILED { v0 + 1.0 } else { *v0 };
        assert_eq!(*v1, want, "{k}");
    }
    assert!(callee.event("CALL_CLOSED", Duration::ZERO).is_none());
    // The caller's SRTCP was authenticated, decrypted and relayed too.
    assert!(
        t.metric("tapir_rtp_packets_relayed_total{from=\"a_rtcp\"}") >= 1.0,
        "{}",
        t.metrics()
    );

    caller.command("hangup", "");
    callee
        .event("CALL_CLOSED", T)
        .unwrap_or_else(|| panic!("{}", fail("BYE not relayed", &caller, &callee)));
    caller.quit();
    callee.quit();
    assert_eq!(
        t.wait_metric(
            "tapir_calls_total{outcome=\"completed\"}",
            Duration::from_secs(10),
            |v| v == 1.0
        ),
        1.0
    );
    assert_recording(&t);
    assert_tone(
        &callee.received_audio(),
        CALLER_HZ,
        CALLEE_HZ,
        "the callee heard the caller",
    );
    assert_tone(
        &caller.received_audio(),
        CALLEE_HZ,
        CALLER_HZ,
        "the caller heard the callee",
    );
    // Everything tapir sent either party decrypted there (baresip logs each SRTP or SRTCP
    // packet it cannot decrypt).
    for (who, p) in [("caller", &caller), ("callee", &callee)] {
        assert!(
            !p.output().contains("failed to decrypt"),
            "{who}:\n{}",
            p.output()
        );
    }
    assert_no_rtp_dropped(&t);
}

fn key_of(crypto: &str) -> Vec<u8> {
    sdp::Crypto::parse(crypto)
        .unwrap()
        .keying
        .master
        .as_bytes()
        .to_vec()
}

/// SRTP on leg A (a baresip offering `RTP/AVP` with `a=crypto`, its `mediaenc=srtp`), plain
/// RTP on leg B (a SIPp callee): tapir takes the keyed AVP offer as SRTP (the route requires
/// it), answers in the same profile with its own key, and offers the callee plain RTP.
#[test]
fn baresip_srtp_caller_plain_rtp_callee() {
    let Some(bin) = baresip_path() else { return };
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "{ caller = \"require\", callee = \"off\" }"),
        TapirOptions::default(),
    );
    let mut b = Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(CALLEE_HZ),
        &[],
    );
    let mut caller = party(&bin, "alice", "srtp", CALLER_HZ, None);
    caller.command("dial", &format!("sip:1000@127.0.0.1:{}", t.sip_port));
    caller
        .event("CALL_ESTABLISHED", T)
        .unwrap_or_else(|| panic!("no call:\n{}\n{}", caller.output(), t.log()));
    let menc = caller.event("CALL_MENC", T).expect("SRTP on leg A");
    assert_eq!(menc["param"], "0,audio,AES_CM_128_HMAC_SHA1_80");
    let sent = caller.sent_sip();
    let invite = sent.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    assert!(invite.contains(" RTP/AVP "), "{invite}");
    let got = caller.received_sip();
    let answer = got
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("m=audio"))
        .expect("tapir's answer");
    assert!(
        answer.contains(" RTP/AVP "),
        "the offer's profile: {answer}"
    );
    let ours = sdp_attr(answer, "crypto").expect("tapir's key in the answer");
    assert_ne!(key_of(ours), key_of(sdp_attr(invite, "crypto").unwrap()));

    let relayed = |leg: &str| format!("tapir_rtp_packets_relayed_total{{from=\"{leg}_rtp\"}}");
    t.wait_metric(&relayed("a"), T, |v| v >= 150.0);
    t.wait_metric(&relayed("b"), T, |v| v >= 150.0);
    caller.command("hangup", "");
    caller.event("CALL_CLOSED", T).expect("call closed");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());
    caller.quit();
    // The callee was offered, and spoke, plain RTP.
    let msgs = b.logs();
    assert!(msgs.contains("RTP/AVP"), "{msgs}");
    assert!(
        !msgs.contains("a=crypto"),
        "no key toward the RTP leg: {msgs}"
    );
    assert_recording(&t);
    assert_tone(
        &caller.received_audio(),
        CALLEE_HZ,
        CALLER_HZ,
        "the caller heard the RTP callee, encrypted by tapir",
    );
    assert_no_rtp_dropped(&t);
}

/// tapir's SDES client on leg A offering `suite` on `profile`, baresip on leg B with
/// `mediaenc`: tapir offers the callee the caller's suite and profile with its own key, and
/// baresip's encryption and tapir's agree both ways in that suite. (baresip's `srtp-mandf`
/// refuses an RTP/SAVP offer as having "no common audio codecs", and `srtp-mand` an
/// RTP/SAVPF one: the profile must be the one it is set to.)
fn sdes_caller_baresip_callee(suite: srtp::Suite, profile: &str, mediaenc: &str) {
    let Some(bin) = baresip_path() else { return };
    let mut callee = party(&bin, "1000", mediaenc, CALLEE_HZ, None);
    let t = Tapir::start(
        BIN,
        &route(
            callee.sip_port,
            "{ caller = \"require\", callee = \"require\" }",
        ),
        TapirOptions::default(),
    );
    let bytes: Vec<u8> = (0..suite.master_len() as u8)
        .map(|b| b.wrapping_mul(29) ^ 0xa5)
        .collect();
    let k = srtp::Keying::new(srtp::MasterKey::new(suite, &bytes).unwrap());
    let media = format!(
        "m=audio {{port}} {profile} 8\r\na=rtpmap:8 PCMA/8000\r\na=crypto:{}\r\na=sendrecv\r\n",
        sdp::Crypto {
            tag: 1,
            keying: k.clone()
        }
        .to_value()
    );
    let Outcome::Answered(mut call) = sdes::invite(t.sip_port, &media, Some(k)) else {
        panic!("refused:\n{}\n{}", t.log(), callee.output());
    };
    let menc = callee
        .event("CALL_MENC", T)
        .unwrap_or_else(|| panic!("callee: no SRTP\n{}", callee.output()));
    assert_eq!(menc["param"], format!("0,audio,{}", suite.name()));
    let got = callee.received_sip();
    let offer = got.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    assert!(offer.contains(&format!(" {profile} ")), "{offer}");
    // Three seconds of tone, taking in what tapir sends back from baresip.
    call.talk(CALLER_HZ, 150, None);
    assert!(call.bye(), "BYE answered");
    callee.event("CALL_CLOSED", T).expect("BYE relayed");
    callee.quit();
    assert!(call.received > 50, "decrypted {} packets", call.received);
    assert_eq!(call.undecryptable, 0);
    assert_tone(
        &call.samples,
        CALLEE_HZ,
        CALLER_HZ,
        "baresip's audio, re-encrypted by tapir",
    );
    assert_tone(
        &callee.received_audio(),
        CALLER_HZ,
        CALLEE_HZ,
        "baresip decrypted tapir's audio",
    );
    assert!(
        !callee.output().contains("failed to decrypt"),
        "{}",
        callee.output()
    );
    assert_recording(&t);
    assert_no_rtp_dropped(&t);
}

#[test]
fn baresip_answers_aead_aes_128_gcm() {
    sdes_caller_baresip_callee(srtp::Suite::AeadAes128Gcm, "RTP/SAVPF", "srtp-mandf");
}

#[test]
fn baresip_answers_aes_cm_128_hmac_sha1_32() {
    sdes_caller_baresip_callee(srtp::Suite::AesCm128HmacSha1_32, "RTP/SAVP", "srtp-mand");
}

/// tapir with a SIP over TLS listener presenting `own`'s certificate, `routes`, and `env` on
/// top; its TLS port.
fn tapir_with_tls(dir: &Path, own: &Pki, routes: &str, env: Vec<(String, String)>) -> (Tapir, u16) {
    let (mut e, tls_port) = tls_listener_env(dir, own);
    e.extend(env);
    let opts = TapirOptions {
        env: e,
        ..TapirOptions::default()
    };
    (Tapir::start(BIN, routes, opts), tls_port)
}

/// SIP over TLS and SRTP on leg A (baresip, as a trunk or a secure phone would call), UDP and
/// plain RTP on leg B (a SIPp callee): the signalling of leg A is all TLS, its media SRTP in
/// baresip's suite, and the recording holds both parties in the clear.
#[test]
fn baresip_over_tls_and_srtp_to_a_udp_sipp_callee() {
    let Some(bin) = baresip_path() else { return };
    let dir = tapir_tests::tempfile::tempdir().unwrap();
    let server = pki("tapir");
    let phone = pki("phone");
    let callee_port = free_port("127.0.0.1");
    let (t, tls_port) = tapir_with_tls(
        dir.path(),
        &server,
        &route(callee_port, "{ caller = \"require\", callee = \"off\" }"),
        vec![],
    );
    let mut b = Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(CALLEE_HZ),
        &[],
    );
    let mut caller = party(
        &bin,
        "alice",
        "srtp-mand",
        CALLER_HZ,
        Some((&phone, &server.ca)),
    );
    caller.command(
        "dial",
        &format!("sip:1000@127.0.0.1:{tls_port};transport=tls"),
    );
    caller
        .event("CALL_ESTABLISHED", T)
        .unwrap_or_else(|| panic!("no call:\n{}\n{}", caller.output(), t.log()));
    let menc = caller.event("CALL_MENC", T).expect("SRTP on leg A");
    assert_eq!(menc["param"], "0,audio,AES_CM_128_HMAC_SHA1_80");
    // Leg A's signalling went over TLS to tapir's TLS port, and none of it over UDP.
    let tls = caller.tls_sip();
    let to_tapir = format!("-> 127.0.0.1:{tls_port}");
    assert!(
        tls.iter()
            .any(|(line, m)| line.ends_with(&to_tapir) && m.starts_with("INVITE sip:1000@")),
        "{}",
        caller.output()
    );
    let ok = tls
        .iter()
        .find(|(_, m)| m.starts_with("SIP/2.0 200") && m.contains("m=audio"))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("tapir's 200 over TLS:\n{}", caller.output()));
    assert!(ok.contains(" RTP/SAVP "), "{ok}");
    assert!(ok.contains(";transport=tls"), "tapir's Contact: {ok}");
    assert!(caller.sent_sip().is_empty(), "{:?}", caller.sent_sip());

    let relayed = |leg: &str| format!("tapir_rtp_packets_relayed_total{{from=\"{leg}_rtp\"}}");
    t.wait_metric(&relayed("a"), T, |v| v >= 150.0);
    t.wait_metric(&relayed("b"), T, |v| v >= 150.0);
    caller.command("hangup", "");
    caller.event("CALL_CLOSED", T).expect("call closed");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());
    caller.quit();
    let msgs = b.logs();
    assert!(
        !msgs.contains("a=crypto"),
        "no key toward the RTP leg: {msgs}"
    );
    assert_recording(&t);
    assert_tone(
        &caller.received_audio(),
        CALLEE_HZ,
        CALLER_HZ,
        "the caller heard the RTP callee, encrypted by tapir",
    );
    assert_eq!(
        t.metric("tapir_tls_handshake_failures_total{side=\"in\"}"),
        0.0
    );
    assert_no_rtp_dropped(&t);
}

/// Mutual TLS with baresip on both legs: tapir asks its callers for a client certificate of
/// the phones' CA and verifies its target against that CA. A phone whose certificate is of
/// another CA is refused at the handshake with a log line naming it, while a call in progress
/// goes on; a target presenting a certificate of another CA is refused too, with a log line,
/// and the caller is answered at once rather than left waiting.
#[test]
fn baresip_over_mutual_tls_and_wrong_certificates_refused() {
    let Some(bin) = baresip_path() else { return };
    let dir = tapir_tests::tempfile::tempdir().unwrap();
    let server = pki("tapir");
    let phones = pki("phones");
    let rogue = pki("rogue");
    let mut callee = party(
        &bin,
        "1000",
        "srtp-mand",
        CALLEE_HZ,
        Some((&phones, &server.ca)),
    );
    let mut impostor = party(
        &bin,
        "2000",
        "srtp-mand",
        CALLEE_HZ,
        Some((&rogue, &server.ca)),
    );
    let ca = write(dir.path(), "phones-ca.pem", &phones.ca);
    let routes = format!(
        "[[routes]]\nname = \"desk\"\nuser_prefix = \"1\"\ntarget = \"sip:127.0.0.1:{};transport=tls\"\n\
         customer = \"caller\"\ndirection = \"inbound\"\nrecord = \"always\"\nformat = \"wav\"\n\
         srtp = {{ caller = \"require\", callee = \"require\" }}\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[routes]]\nname = \"other-desk\"\nuser_prefix = \"2\"\ntarget = \"sip:127.0.0.1:{};transport=tls\"\n\
         customer = \"caller\"\ndirection = \"inbound\"\nrecord = \"always\"\nformat = \"wav\"\n\
         srtp = {{ caller = \"require\", callee = \"require\" }}\ntls = {{ ca_file = \"{ca}\" }}\n",
        callee.tls_port(),
        impostor.tls_port(),
    );
    let (t, tls_port) = tapir_with_tls(
        dir.path(),
        &server,
        &routes,
        vec![
            ("TAPIR_SIP__TLS_CLIENT_CA".into(), ca.clone()),
            ("TAPIR_SIP__TLS_REQUIRE_CLIENT_CERT".into(), "true".into()),
        ],
    );
    let mut caller = party(
        &bin,
        "alice",
        "srtp-mand",
        CALLER_HZ,
        Some((&phones, &server.ca)),
    );
    caller.command(
        "dial",
        &format!("sip:1000@127.0.0.1:{tls_port};transport=tls"),
    );
    let fail = |what: &str, c: &Baresip, b: &Baresip| -> String {
        format!(
            "{what}\ncaller:\n{}\ncallee:\n{}\ntapir:\n{}",
            c.output(),
            b.output(),
            t.log()
        )
    };
    caller
        .event("CALL_ESTABLISHED", T)
        .unwrap_or_else(|| panic!("{}", fail("no call", &caller, &callee)));
    for (who, p) in [("caller", &caller), ("callee", &callee)] {
        let menc = p
            .event("CALL_MENC", T)
            .unwrap_or_else(|| panic!("{}", fail(&format!("{who}: no SRTP"), &caller, &callee)));
        assert_eq!(menc["param"], "0,audio,AES_CM_128_HMAC_SHA1_80", "{who}");
    }
    // Leg B's INVITE reached the callee over TLS.
    assert!(
        callee
            .tls_sip()
            .iter()
            .any(|(_, m)| m.starts_with("INVITE sip:1000@127.0.0.1")),
        "{}",
        callee.output()
    );
    let relayed = |leg: &str| format!("tapir_rtp_packets_relayed_total{{from=\"{leg}_rtp\"}}");
    t.wait_metric(&relayed("a"), T, |v| v >= 100.0);
    t.wait_metric(&relayed("b"), T, |v| v >= 100.0);

    // A phone with a certificate of another CA: refused at the handshake, logged, counted.
    let mut stranger = party(
        &bin,
        "mallory",
        "srtp-mand",
        CALLER_HZ,
        Some((&rogue, &server.ca)),
    );
    stranger.command(
        "dial",
        &format!("sip:1000@127.0.0.1:{tls_port};transport=tls"),
    );
    t.wait_metric("tapir_tls_handshake_failures_total{side=\"in\"}", T, |v| {
        v >= 1.0
    });
    // (baresip 1.0 does not end its call when its TLS connection is refused: it waits out
    // its own transaction timer; what matters here is that nothing of it got through.)
    assert!(stranger.event("CALL_ESTABLISHED", Duration::ZERO).is_none());
    t.wait_log_line(T, |l| {
        l.contains("TLS handshake from peer failed") && l.contains("peer=127.0.0.1:")
    });
    stranger.quit();
    // The call in progress went on meanwhile.
    let a_at = t.metric(&relayed("a"));
    t.wait_metric(&relayed("a"), T, |v| v >= a_at + 50.0);
    assert!(callee.event("CALL_CLOSED", Duration::ZERO).is_none());
    let invites = callee
        .tls_sip()
        .iter()
        .filter(|(_, m)| m.starts_with("INVITE "))
        .count();
    assert_eq!(invites, 1, "the stranger's call reached the callee");
    caller.command("hangup", "");
    callee
        .event("CALL_CLOSED", T)
        .unwrap_or_else(|| panic!("{}", fail("BYE not relayed", &caller, &callee)));
    assert_recording(&t);
    assert_tone(
        &callee.received_audio(),
        CALLER_HZ,
        CALLEE_HZ,
        "the callee heard the caller",
    );

    // A target whose certificate is of another CA than the route trusts: refused, logged with
    // its address, and the caller answered without waiting out the transaction's timer.
    let started = std::time::Instant::now();
    caller.command(
        "dial",
        &format!("sip:2000@127.0.0.1:{tls_port};transport=tls"),
    );
    t.wait_metric("tapir_tls_handshake_failures_total{side=\"out\"}", T, |v| {
        v == 1.0
    });
    let closed = caller.wait_events("CALL_CLOSED", 2, T).unwrap_or_else(|| {
        panic!(
            "{}",
            fail("the call to 2000 never ended", &caller, &impostor)
        )
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        closed["param"].as_str().unwrap_or("").contains("503"),
        "{closed}"
    );
    assert!(
        impostor
            .tls_sip()
            .iter()
            .all(|(_, m)| !m.starts_with("INVITE ")),
        "the INVITE went to an untrusted target"
    );
    let port = format!("peer=127.0.0.1:{}", impostor.tls_port());
    t.wait_log_line(T, |l| {
        l.contains("TLS handshake with target failed") && l.contains(&port)
    });
    assert_eq!(
        t.metric("tapir_calls_total{outcome=\"unreachable\"}"),
        1.0,
        "{}",
        t.metrics()
    );
    impostor.quit();
    caller.quit();
    callee.quit();
    assert_no_rtp_dropped(&t);
}
