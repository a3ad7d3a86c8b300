//! SRTP per leg through the B2BUA core: tapir terminates SDES on each leg with keys of its
//! own, refuses what a route does not allow with 488 and a reason, and relays undecryptable
//! media untouched when the route says so.

mod common;

use b2bua::{
    CallEvent, KeySource, Leg, LegCrypto, MediaCommand, RouteSrtp, SrtpMode, Undecryptable,
};
use common::*;
use sdp::{Sdp, Security};
use sip::{Method, Request};

const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// Bytes 0x80, 0x81...: plainly not the caller's key.
struct Counting(u8);
impl KeySource for Counting {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = 0x80 | self.0;
            self.0 = self.0.wrapping_add(1) & 0x7f;
        }
    }
}

fn world(srtp: RouteSrtp) -> World {
    let mut r = route("trunk", &format!("sip:{CALLEE}"));
    r.srtp = srtp;
    let mut w = World::new(Setup {
        routes: vec![r],
        ..Setup::default()
    });
    w.tapir.set_key_source(Box::new(Counting(0)));
    w
}

fn policy(caller: SrtpMode, callee: SrtpMode, undecryptable: Undecryptable) -> RouteSrtp {
    RouteSrtp {
        caller,
        callee,
        undecryptable,
    }
}

/// The caller's INVITE with `media` (m= line and attributes) as its SDP.
fn invite(w: &mut World, media: &str) -> Request {
    let body = format!(
        "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n{media}"
    );
    let now = w.now;
    w.caller
        .invite_with(now, "1000", true, |r| r.body = body.into_bytes())
}

fn crypto_cmds(w: &World) -> Vec<(Leg, LegCrypto)> {
    w.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Crypto { leg, crypto, .. } => Some((*leg, crypto.clone())),
            _ => None,
        })
        .collect()
}

fn refused_with(w: &mut World, reason: &str) {
    w.run_for(std::time::Duration::from_secs(5));
    let r = w.caller.responses(Method::Invite);
    let last = r.last().expect("a response");
    assert_eq!(last.status, 488, "{:?}", last.reason);
    assert_eq!(last.reason, format!("Not Acceptable Here: {reason}"));
    assert!(
        w.callee.requests(Method::Invite).is_empty(),
        "leg B never called"
    );
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports);
}

#[test]
fn srtp_caller_plain_callee_gets_tapirs_keys_on_each_leg() {
    let mut w = world(policy(
        SrtpMode::Allow,
        SrtpMode::Off,
        Undecryptable::Refuse,
    ));
    invite(
        &mut w,
        &format!(
            "m=audio 40000 RTP/SAVP 0\r\na=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31\r\n"
        ),
    );
    w.establish();
    // Leg B: plain RTP, no key of the caller's.
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    let b_sdp = Sdp::parse(&b_inv.body).unwrap();
    assert_eq!(b_sdp.proto(0), Some("RTP/AVP"));
    assert_eq!(b_sdp.security(0), Security::Plain);
    assert!(!String::from_utf8_lossy(&b_inv.body).contains(KEY));
    // Leg A: the answer repeats the caller's tag and suite, with tapir's own key.
    let ok = w.caller.responses(Method::Invite).last().cloned().unwrap();
    let a_sdp = Sdp::parse(&ok.body).unwrap();
    assert_eq!(a_sdp.proto(0), Some("RTP/SAVP"));
    let ours = a_sdp.security(0).first_usable().cloned().unwrap();
    assert_eq!(ours.tag, 3);
    assert_eq!(ours.suite(), srtp::Suite::AesCm128HmacSha1_80);
    assert_eq!(
        ours.keying.master.as_bytes()[0],
        0x80,
        "from the key source"
    );
    // The relay decrypts leg A with the caller's key and encrypts toward it with tapir's.
    let cmds = crypto_cmds(&w);
    let a = cmds.iter().rev().find(|(l, _)| *l == Leg::A).unwrap();
    let LegCrypto::Srtp {
        inbound: Some(inbound),
        outbound,
    } = &a.1
    else {
        panic!("{cmds:?}")
    };
    assert_eq!(&inbound.master.as_bytes()[..5], b"YS___");
    assert_eq!(inbound.lifetime, Some(1 << 31));
    assert_eq!(outbound, &ours.keying);
    assert!(cmds.contains(&(Leg::B, LegCrypto::Plain)));
    // Crypto follows Open for the call.
    let open = w
        .media
        .iter()
        .position(|m| matches!(m, MediaCommand::Open { .. }));
    let first_crypto = w
        .media
        .iter()
        .position(|m| matches!(m, MediaCommand::Crypto { .. }));
    assert!(open < first_crypto);
}

#[test]
fn plain_caller_srtp_callee() {
    let mut w = world(policy(
        SrtpMode::Allow,
        SrtpMode::Require,
        Undecryptable::Refuse,
    ));
    invite(&mut w, "m=audio 40000 RTP/AVP 0 8\r\n");
    w.run_for(std::time::Duration::from_secs(1));
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    let b_sdp = Sdp::parse(&b_inv.body).unwrap();
    assert_eq!(b_sdp.proto(0), Some("RTP/SAVP"));
    let offered = b_sdp.security(0).first_usable().cloned().unwrap();
    let cmds = crypto_cmds(&w);
    assert!(cmds.contains(&(Leg::A, LegCrypto::Plain)));
    assert!(cmds.contains(&(
        Leg::B,
        LegCrypto::Srtp {
            inbound: None,
            outbound: offered.keying
        }
    )));
}

#[test]
fn offers_a_route_does_not_take_get_488_with_the_reason() {
    let savp =
        format!("m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n");
    let mut w = world(policy(
        SrtpMode::Off,
        SrtpMode::Allow,
        Undecryptable::Refuse,
    ));
    invite(&mut w, &savp);
    refused_with(&mut w, "SRTP is not allowed on this route");

    let mut w = world(policy(
        SrtpMode::Require,
        SrtpMode::Allow,
        Undecryptable::Refuse,
    ));
    invite(&mut w, "m=audio 40000 RTP/AVP 0\r\n");
    refused_with(&mut w, "SRTP (SDES) is required on this route");

    let mut w = world(RouteSrtp::default());
    invite(
        &mut w,
        &format!(
            "m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            &KEY[..20]
        ),
    );
    refused_with(
        &mut w,
        "AES_CM_128_HMAC_SHA1_80 needs 30 bytes of key and salt, not 15",
    );

    let mut w = world(RouteSrtp::default());
    invite(
        &mut w,
        &format!("m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}\r\n"),
    );
    refused_with(&mut w, "unknown crypto suite AES_256_CM_HMAC_SHA1_80");

    let mut w = world(RouteSrtp::default());
    invite(&mut w, &format!("m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:8\r\n"));
    refused_with(&mut w, "MKI 1:8 is not supported (1 to 4 bytes)");

    let mut w = world(RouteSrtp::default());
    invite(
        &mut w,
        "m=audio 40000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n",
    );
    refused_with(&mut w, "DTLS-SRTP is not supported");

    // Without a key source tapir cannot make its own keys.
    let mut r = route("trunk", &format!("sip:{CALLEE}"));
    r.srtp = RouteSrtp::default();
    let mut w = World::new(Setup {
        routes: vec![r],
        ..Setup::default()
    });
    invite(&mut w, &savp);
    refused_with(&mut w, "SRTP keys unavailable");
}

#[test]
fn undecryptable_media_is_relayed_unrecorded_when_the_route_says_so() {
    let mut w = world(policy(
        SrtpMode::Allow,
        SrtpMode::Allow,
        Undecryptable::Relay,
    ));
    invite(&mut w, "m=audio 40000 RTP/AVP 0\r\na=zrtp-hash:1.10 fe30efd02423cb054e50efd0248742ac7a52c8f91bc2df881ae642c371ba46df\r\n");
    w.establish();
    // The offer reaches leg B with its keying untouched.
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    assert!(String::from_utf8_lossy(&b_inv.body).contains("a=zrtp-hash:1.10 fe30"));
    assert!(w.events.iter().any(|e| matches!(e,
        CallEvent::Encrypted { reason, .. } if reason == "ZRTP is not supported")));
    let cmds = crypto_cmds(&w);
    assert_eq!(
        cmds,
        vec![(Leg::A, LegCrypto::Opaque), (Leg::B, LegCrypto::Opaque)]
    );
}

#[test]
fn an_in_dialog_offer_tapir_cannot_take_gets_488_and_the_call_goes_on() {
    let mut w = world(policy(
        SrtpMode::Allow,
        SrtpMode::Off,
        Undecryptable::Refuse,
    ));
    invite(&mut w, "m=audio 40000 RTP/AVP 0\r\n");
    w.establish();
    let now = w.now;
    let body = "v=0\r\no=alice 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB\r\n";
    w.caller.request(
        now,
        Method::Invite,
        Some(("application/sdp", body.as_bytes().to_vec())),
    );
    w.run_for(std::time::Duration::from_secs(5));
    let last = w.caller.responses(Method::Invite).last().cloned().unwrap();
    assert_eq!(last.status, 488);
    assert_eq!(
        last.reason,
        "Not Acceptable Here: DTLS-SRTP is not supported"
    );
    assert_eq!(w.callee.requests(Method::Invite).len(), 1, "not relayed");
    assert_eq!(w.tapir.active_calls(), 1);
}
