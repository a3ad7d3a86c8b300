//! SRTP end to end through the real binary: an SDES caller (tests/src/sdes.rs, real UDP
//! sockets, the `srtp` crate) on leg A, a plain-RTP SIPp callee on leg B. The recording must
//! hold each party's tone on its own channel, in the clear; a packet with a bad tag is
//! dropped and counted while the call goes on; streams tapir cannot decrypt are refused with
//! 488 or relayed unrecorded, as the route says.

use std::path::PathBuf;
use std::time::Duration;

use tapir_tests::sdes::{self, Outcome};
use tapir_tests::{free_port, read_stereo_wav, tone_energy, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const CALLER_HZ: f64 = 400.0;
const CALLEE_HZ: f64 = 1000.0;

fn route(callee_port: u16, srtp: &str) -> String {
    format!(
        "[[routes]]\nname = \"trunk\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\nformat = \"wav\"\nsrtp = {srtp}\n"
    )
}

fn files(t: &Tapir, ext: &str) -> Vec<PathBuf> {
    let dir = t.dir.path().join("recordings");
    tapir_tests::files_under(&dir, ext)
}

fn callee(port: u16) -> Sipp {
    Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        port,
        None,
        Some(CALLEE_HZ),
        &[],
    )
}

fn key(suite: srtp::Suite) -> srtp::Keying {
    let bytes: Vec<u8> = (0..suite.master_len() as u8)
        .map(|b| b.wrapping_mul(37) ^ 0x5a)
        .collect();
    srtp::Keying::new(srtp::MasterKey::new(suite, &bytes).unwrap())
}

fn b64(k: &srtp::Keying) -> String {
    sdp::Crypto {
        tag: 1,
        keying: k.clone(),
    }
    .to_value()
}

/// SRTP on leg A with `suite`, RTP on leg B: tones on the right channels, recorded in the
/// clear; one forged packet dropped and counted.
fn srtp_caller_plain_callee(suite: srtp::Suite) {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "{ caller = \"require\", callee = \"off\" }"),
        TapirOptions::default(),
    );
    let mut b = callee(callee_port);
    let k = key(suite);
    let media = format!(
        "m=audio {{port}} RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=crypto:{}\r\na=sendrecv\r\n",
        b64(&k)
    );
    let Outcome::Answered(mut call) = sdes::invite(t.sip_port, &media, Some(k.clone())) else {
        panic!("SRTP call refused:\n{}", t.log());
    };
    // tapir answered SRTP in the caller's suite, with a key that is not the caller's.
    let i = call.answer.audio_index().unwrap();
    assert_eq!(call.answer.proto(i), Some("RTP/SAVP"));
    let ours = call
        .answer
        .security(i)
        .first_usable()
        .cloned()
        .expect("tapir's key");
    assert_eq!(ours.suite(), suite);
    assert_ne!(ours.keying.master, k.master);

    call.talk(CALLER_HZ, 75, Some(40));
    // A packet sent twice: the copy is a replay, dropped and counted.
    call.resend_last();
    // SRTCP multiplexed on the RTP port is unprotected as SRTCP, not refused as bad SRTP.
    call.send_muxed_rtcp();
    call.talk(CALLER_HZ, 75, None);
    assert!(call.bye(), "BYE answered");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());

    // What tapir sent the caller decrypted with tapir's key and carried the callee's tone.
    assert!(call.received > 50, "decrypted {} packets", call.received);
    assert_eq!(call.undecryptable, 0);
    let e = (
        tone_energy(&call.samples, CALLEE_HZ),
        tone_energy(&call.samples, CALLER_HZ),
    );
    assert!(e.0 > 10.0 * e.1, "callee tone reached the caller: {e:?}");
    // The forged packet was dropped and counted, the genuine packet of the same number was
    // not; the replayed copy was dropped and counted, and the call went on.
    assert_eq!(
        t.metric("tapir_srtp_packets_dropped_total{reason=\"auth_failed\"}"),
        1.0,
        "{}",
        t.metrics()
    );
    assert_eq!(
        t.metric("tapir_srtp_packets_dropped_total{reason=\"replayed\"}"),
        1.0
    );

    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let wav = files(&t, "wav");
    assert_eq!(wav.len(), 1, "{wav:?}");
    let (customer, agent) = read_stereo_wav(&wav[0]);
    let c = (
        tone_energy(&customer, CALLER_HZ),
        tone_energy(&customer, CALLEE_HZ),
    );
    let a = (
        tone_energy(&agent, CALLEE_HZ),
        tone_energy(&agent, CALLER_HZ),
    );
    assert!(
        c.0 > 10.0 * c.1,
        "caller's tone on channel 1, in the clear: {c:?}"
    );
    assert!(a.0 > 10.0 * a.1, "callee's tone on channel 2: {a:?}");
}

#[test]
fn srtp_aes_cm_80_caller_recorded_in_the_clear() {
    srtp_caller_plain_callee(srtp::Suite::AesCm128HmacSha1_80);
}

#[test]
fn srtp_gcm_caller_recorded_in_the_clear() {
    srtp_caller_plain_callee(srtp::Suite::AeadAes128Gcm);
}

#[test]
fn undecryptable_offers_are_refused_with_488() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "{ undecryptable = \"refuse\" }"),
        TapirOptions::default(),
    );
    let dtls = "m=audio {port} UDP/TLS/RTP/SAVPF 8\r\na=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n";
    let Outcome::Refused(status, reason) = sdes::invite(t.sip_port, dtls, None) else {
        panic!("a DTLS-SRTP offer was answered");
    };
    assert_eq!(
        (status, reason.as_str()),
        (488, "Not Acceptable Here: DTLS-SRTP is not supported")
    );
    let bad = "m=audio {port} RTP/SAVP 8\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n";
    let Outcome::Refused(status, reason) = sdes::invite(t.sip_port, bad, None) else {
        panic!("a bad key was answered");
    };
    assert_eq!(status, 488);
    assert_eq!(
        reason,
        "Not Acceptable Here: AES_CM_128_HMAC_SHA1_80 needs 30 bytes of key and salt, not 3"
    );
    assert!(
        t.log().contains("DTLS-SRTP is not supported"),
        "{}",
        t.log()
    );
}

#[test]
fn undecryptable_media_is_relayed_and_never_recorded() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "{ undecryptable = \"relay\" }"),
        TapirOptions::default(),
    );
    let mut b = callee(callee_port);
    let zrtp = "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=zrtp-hash:1.10 fe30efd02423cb054e50efd0248742ac7a52c8f91bc2df881ae642c371ba46df\r\n";
    let Outcome::Answered(mut call) = sdes::invite(t.sip_port, zrtp, None) else {
        panic!("refused:\n{}", t.log());
    };
    call.talk(CALLER_HZ, 50, None);
    assert!(call.bye());
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());
    assert!(call.received > 10, "media was relayed: {}", call.received);
    assert_eq!(t.metric("tapir_calls_encrypted_unrecorded_total"), 1.0);
    assert!(t.log().contains("relayed, not recorded"), "{}", t.log());
    let ended = t.wait_metric(
        "tapir_calls_total{outcome=\"completed\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(ended, 1.0);
    assert!(files(&t, "wav").is_empty(), "no audio file");
    let json = files(&t, "json");
    assert_eq!(json.len(), 1, "{json:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap()).unwrap();
    assert_eq!(meta["encrypted"], "not recorded");
    assert_eq!(meta["encrypted_reason"], "ZRTP is not supported");
    assert_eq!(meta["duration_ms"], 0);
}

/// RTP on leg A (a SIPp caller), SRTP on leg B (an SDES callee): tapir offers leg B its own
/// key, decrypts the callee's packets with the callee's key, and records both in the clear.
#[test]
fn plain_caller_srtp_callee_recorded_in_the_clear() {
    let sip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = sip.local_addr().unwrap().port();
    let t = Tapir::start(
        BIN,
        &route(callee_port, "{ caller = \"off\", callee = \"require\" }"),
        TapirOptions::default(),
    );
    let k = key(srtp::Suite::AesCm128HmacSha1_80);
    let callee = std::thread::spawn(move || {
        let (mut call, offer) = sdes::answer(
            sip,
            "m=audio {port} RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=crypto:{crypto}\r\n",
            Some(k),
        );
        let bye = call.talk_until_bye(CALLEE_HZ, Duration::from_secs(20));
        (call, offer, bye)
    });
    let mut a = Sipp::party(
        "caller",
        "uac_tone.xml",
        "127.0.0.1",
        free_port("127.0.0.1"),
        Some(&t),
        Some(CALLER_HZ),
        &["-d", "3000"],
    );
    assert_eq!(
        a.wait(Duration::from_secs(30)),
        0,
        "{}\n{}",
        a.logs(),
        t.log()
    );
    let (call, offer, bye) = callee.join().unwrap();
    assert!(bye, "tapir's BYE reached the callee");
    // tapir offered leg B SRTP with a key of its own.
    let i = offer.audio_index().unwrap();
    assert_eq!(offer.proto(i), Some("RTP/SAVP"));
    assert!(offer.security(i).first_usable().is_some());
    assert!(call.received > 50, "decrypted {} packets", call.received);
    assert_eq!(call.undecryptable, 0);
    let e = (
        tone_energy(&call.samples, CALLER_HZ),
        tone_energy(&call.samples, CALLEE_HZ),
    );
    assert!(
        e.0 > 10.0 * e.1,
        "the caller's tone reached the callee encrypted: {e:?}"
    );
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let wav = files(&t, "wav");
    let (customer, agent) = read_stereo_wav(&wav[0]);
    let c = (
        tone_energy(&customer, CALLER_HZ),
        tone_energy(&customer, CALLEE_HZ),
    );
    let a = (
        tone_energy(&agent, CALLEE_HZ),
        tone_energy(&agent, CALLER_HZ),
    );
    assert!(c.0 > 10.0 * c.1, "caller's tone on channel 1: {c:?}");
    assert!(
        a.0 > 10.0 * a.1,
        "callee's tone on channel 2, decrypted: {a:?}"
    );
    assert_eq!(
        t.metric("tapir_srtp_packets_dropped_total{reason=\"auth_failed\"}"),
        0.0
    );
}
