//! Drop-in behaviour of the B2BUA core on a virtual clock: authentication pass-through,
//! transfers (REFER both ways, NOTIFY relayed, INVITE with Replaces), session timers and media
//! supervision. Every message is real SIP text fed to [`B2bua::handle_message`]; every
//! assertion is on the SIP tapir sends and the events it reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use b2bua::{B2bua, CallEvent, Config, Leg, Outcome, Output, RouteConfig, Routes, Side};
use sip::transaction::Peer;
use sip::{HeaderAccess, Message, Method, Request, Response, Transport};

const TAPIR: &str = "10.0.0.1:5060";
const CALLER: &str = "192.0.2.10:5060";
const CALLEE: &str = "192.0.2.20:5060";
const TARGET: &str = "192.0.2.30:5060";

fn peer(a: &str) -> Peer {
    Peer {
        addr: a.parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn sdp(port: u16, dir: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.99\r\ns=-\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na={dir}\r\n"
    )
}

/// A SIP message written with `\n` line ends and a body; Content-Length is computed.
fn msg(head: &str, body: &str) -> Vec<u8> {
    let mut s = head.trim_end().replace('\n', "\r\n");
    if !body.is_empty() {
        s.push_str("\r\nContent-Type: application/sdp");
    }
    s.push_str(&format!("\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    s.into_bytes()
}

struct Sent {
    to: SocketAddr,
    msg: Message,
}

struct H {
    b: B2bua,
    now: Instant,
    t0: Instant,
    sent: Vec<Sent>,
    events: Vec<CallEvent>,
    free_ports: usize,
}

impl H {
    fn new() -> H {
        let cfg = Config {
            sip_addrs: vec![TAPIR.parse().unwrap()],
            media_ips: vec!["10.0.0.1".parse().unwrap()],
            timers: b2bua::default_timers(),
            rtp_ports: (20000, 20099),
            id_seed: 7,
            user_agent: "tapir-test".into(),
        };
        let route = RouteConfig {
            name: "to-callee".into(),
            source: vec![],
            source_zone: None,
            user_prefix: None,
            user_pattern: None,
            target: format!("sip:{CALLEE}"),
            customer: Side::Caller,
            direction: Some("inbound".into()),
            record: None,
            format: None,
            srtp: Default::default(),
            tls: None,
            external: false,
        };
        // The transfer target is a next hop tapir knows (a route of its own): a Refer-To may
        // only steer calls to such hosts.
        let to_target = RouteConfig {
            name: "to-target".into(),
            user_prefix: Some("target-".into()),
            target: format!("sip:{TARGET}"),
            ..route.clone()
        };
        // Numbers outside the contact centre.
        let carrier = RouteConfig {
            name: "carrier".into(),
            user_prefix: Some("00".into()),
            target: format!("sip:{TARGET}"),
            external: true,
            ..route.clone()
        };
        let routes = Routes::compile(&[to_target, carrier, route], &HashMap::new()).unwrap();
        let b = B2bua::new(cfg, routes);
        let free_ports = b.free_ports();
        let t0 = Instant::now();
        H {
            b,
            now: t0,
            t0,
            sent: Vec::new(),
            events: Vec::new(),
            free_ports,
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.b.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    let msg = sip::parse(&data, true).expect("tapir sends parsable SIP");
                    self.sent.push(Sent { to: to.addr, msg });
                }
                Output::Call(e) => self.events.push(e),
                Output::Media(_) => {}
            }
        }
    }

    fn feed(&mut self, from: &str, data: Vec<u8>) {
        self.b.handle_message(self.now, &data, peer(from));
        self.drain();
    }

    /// Runs every timer up to `t0 + secs`, as the IO layer would.
    fn advance_to(&mut self, secs: f64) {
        let end = self.t0 + Duration::from_secs_f64(secs);
        while let Some(t) = self.b.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.b.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(end);
    }

    /// Removes and returns the requests tapir sent to `to` with `method`.
    fn take_requests(&mut self, to: &str, method: Method) -> Vec<Request> {
        let to: SocketAddr = to.parse().unwrap();
        let mut out = Vec::new();
        self.sent.retain(|s| match &s.msg {
            Message::Request(r) if s.to == to && r.method == method => {
                out.push(r.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn take_request(&mut self, to: &str, method: Method) -> Request {
        let mut v = self.take_requests(to, method.clone());
        assert!(!v.is_empty(), "no {method} sent to {to}");
        // Retransmissions of the same request are the same transaction: take the first.
        v.swap_remove(0)
    }

    /// Removes and returns the final (or given-status) responses sent to `to`.
    fn take_responses(&mut self, to: &str, status: u16) -> Vec<Response> {
        let to: SocketAddr = to.parse().unwrap();
        let mut out = Vec::new();
        self.sent.retain(|s| match &s.msg {
            Message::Response(r) if s.to == to && r.status == status => {
                out.push(r.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn take_response(&mut self, to: &str, status: u16) -> Response {
        let mut v = self.take_responses(to, status);
        assert!(!v.is_empty(), "no {status} sent to {to}");
        v.swap_remove(0)
    }

    fn byes_to(&mut self, to: &str) -> usize {
        self.take_requests(to, Method::Bye).len()
    }

    /// Answers a request tapir sent, as the party at `from` would.
    fn answer(
        &mut self,
        from: &str,
        req: &Request,
        status: u16,
        tag: &str,
        extra: &str,
        body: &str,
    ) {
        let mut r = req.response(status, "Reason");
        if let Some(mut to) = r.to() {
            if to.tag().is_none() {
                to.params.set("tag", Some(tag.to_string()));
                r.headers.set("To", to.to_string());
            }
        }
        if (200..300).contains(&status) && matches!(req.method, Method::Invite | Method::Update) {
            r.headers.push("Contact", format!("<sip:party@{from}>"));
        }
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            let (n, v) = line.split_once(':').unwrap();
            r.headers.push(n.trim(), v.trim());
        }
        if !body.is_empty() {
            r.headers.push("Content-Type", "application/sdp");
            r.body = body.as_bytes().to_vec();
        }
        let bytes = r.to_bytes();
        self.feed(from, bytes);
    }

    fn ended(&self) -> Vec<(u64, Outcome)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Ended { call, outcome } => Some((*call, *outcome)),
                _ => None,
            })
            .collect()
    }
}

/// The caller's side of a dialog with tapir.
struct CallerLeg {
    call_id: String,
    tag: String,
    /// tapir's tag on leg A.
    tapir_tag: String,
    cseq: u32,
}

/// The callee's side of a dialog with tapir.
struct CalleeLeg {
    call_id: String,
    tag: String,
    tapir_tag: String,
    cseq: u32,
}

fn invite_text(
    call_id: &str,
    tag: &str,
    cseq: u32,
    branch: &str,
    ruri: &str,
    extra: &str,
) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK{branch}\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag={tag}\n\
         To: <sip:1000@{TAPIR}>\n\
         Call-ID: {call_id}\n\
         CSeq: {cseq} INVITE\n\
         Contact: <sip:alice@{CALLER}>\n\
         {extra}"
    )
}

/// Sets up a confirmed call caller → tapir → callee; returns both legs and the call id.
fn establish(
    h: &mut H,
    call_id: &str,
    invite_extra: &str,
    answer_extra: &str,
) -> (CallerLeg, CalleeLeg, u64) {
    let text = invite_text(
        call_id,
        "ct1",
        1,
        &format!("inv-{call_id}"),
        &format!("sip:1000@{TAPIR}"),
        invite_extra,
    );
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b_inv = h.take_request(CALLEE, Method::Invite);
    h.answer(
        CALLEE,
        &b_inv,
        200,
        "cee1",
        answer_extra,
        &sdp(5000, "sendrecv"),
    );
    let ok = h.take_response(CALLER, 200);
    let tapir_tag = ok.to_tag().expect("2xx has a To tag");
    let ack = format!(
        "ACK sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKack-{call_id}\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag=ct1\n\
         To: <sip:1000@{TAPIR}>;tag={tapir_tag}\n\
         Call-ID: {call_id}\n\
         CSeq: 1 ACK"
    );
    h.feed(CALLER, msg(&ack, ""));
    let b_ack = h.take_request(CALLEE, Method::Ack);
    let call = h
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            CallEvent::Started { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap();
    let caller = CallerLeg {
        call_id: call_id.into(),
        tag: "ct1".into(),
        tapir_tag,
        cseq: 1,
    };
    let callee = CalleeLeg {
        call_id: b_ack.call_id().to_string(),
        tag: "cee1".into(),
        tapir_tag: b_ack.from_tag().unwrap(),
        cseq: 0,
    };
    (caller, callee, call)
}

fn caller_request(c: &mut CallerLeg, method: &str, extra: &str) -> String {
    c.cseq += 1;
    format!(
        "{method} sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK{method}-{}-{}\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag={}\n\
         To: <sip:1000@{TAPIR}>;tag={}\n\
         Call-ID: {}\n\
         CSeq: {} {method}\n\
         Contact: <sip:alice@{CALLER}>\n\
         {extra}",
        c.call_id, c.cseq, c.tag, c.tapir_tag, c.call_id, c.cseq
    )
}

fn callee_request(c: &mut CalleeLeg, method: &str, extra: &str) -> String {
    c.cseq += 1;
    format!(
        "{method} sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLEE};branch=z9hG4bK{method}-{}-{}\n\
         Max-Forwards: 70\n\
         From: <sip:1000@192.0.2.20>;tag={}\n\
         To: <sip:alice@192.0.2.10>;tag={}\n\
         Call-ID: {}\n\
         CSeq: {} {method}\n\
         Contact: <sip:1000@{CALLEE}>\n\
         {extra}",
        c.call_id, c.cseq, c.tag, c.tapir_tag, c.call_id, c.cseq
    )
}

// ---------------------------------------------------------------------------------------
// Authentication pass-through

fn challenge_then_retry(status: u16, challenge: &str, credentials: &str) {
    let mut h = H::new();
    let text = invite_text(
        "auth-1",
        "ct1",
        1,
        "auth-a1",
        &format!("sip:1000@{TAPIR}"),
        "",
    );
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b1 = h.take_request(CALLEE, Method::Invite);
    let challenge_value = "Digest realm=\"carrier\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"";
    h.answer(
        CALLEE,
        &b1,
        status,
        "cee1",
        &format!("{challenge}: {challenge_value}"),
        "",
    );
    // The far side's challenge reaches the caller intact.
    let r = h.take_response(CALLER, status);
    assert_eq!(r.headers.get(challenge), Some(challenge_value));
    assert_eq!(r.call_id(), "auth-1");
    assert_eq!(r.cseq().unwrap().seq, 1);
    assert_eq!(h.b.pending_challenges(), 1);
    assert_eq!(h.ended().len(), 1, "the challenged attempt ends");

    // The caller's ACK for the challenge reuses the INVITE branch and is absorbed.
    let ack = format!(
        "ACK sip:1000@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKauth-a1\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag=ct1\n\
         To: <sip:1000@{TAPIR}>;tag={}\n\
         Call-ID: auth-1\n\
         CSeq: 1 ACK",
        r.to_tag().unwrap()
    );
    h.feed(CALLER, msg(&ack, ""));

    // The retry: same Call-ID and From tag, next CSeq, with credentials.
    let cred_value = "Digest username=\"pbx\", realm=\"carrier\", nonce=\"abc123\", \
                      uri=\"sip:1000@10.0.0.1:5060\", response=\"0123456789abcdef0123456789abcdef\", \
                      qop=auth, nc=00000001, cnonce=\"xyz\"";
    let text = invite_text(
        "auth-1",
        "ct1",
        2,
        "auth-a2",
        &format!("sip:1000@{TAPIR}"),
        &format!("{credentials}: {cred_value}\n"),
    );
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b2 = h.take_request(CALLEE, Method::Invite);
    assert_eq!(
        b2.headers.get(credentials),
        Some(cred_value),
        "credentials relayed"
    );
    assert_eq!(
        b2.call_id(),
        b1.call_id(),
        "the retry keeps leg B's Call-ID"
    );
    assert_eq!(b2.from_tag(), b1.from_tag(), "and its From tag");
    assert_eq!(
        b2.cseq().unwrap().seq,
        b1.cseq().unwrap().seq + 1,
        "with the next CSeq"
    );
    assert_ne!(
        b2.top_via().unwrap().branch(),
        b1.top_via().unwrap().branch()
    );
    assert_eq!(h.b.pending_challenges(), 0);

    h.answer(CALLEE, &b2, 200, "cee2", "", &sdp(5000, "sendrecv"));
    let ok = h.take_response(CALLER, 200);
    assert_eq!(ok.cseq().unwrap().seq, 2);
    assert_eq!(ok.call_id(), "auth-1");
    // Leg B's ACK carries the retry's CSeq number.
    let ack = format!(
        "ACK sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKauth-ack2\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag=ct1\n\
         To: <sip:1000@{TAPIR}>;tag={}\n\
         Call-ID: auth-1\n\
         CSeq: 2 ACK",
        ok.to_tag().unwrap()
    );
    h.feed(CALLER, msg(&ack, ""));
    // The first ACK tapir sent on leg B was the transaction layer's, for the challenge.
    let acks = h.take_requests(CALLEE, Method::Ack);
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].cseq().unwrap().seq, b1.cseq().unwrap().seq);
    assert_eq!(acks[1].cseq().unwrap().seq, b2.cseq().unwrap().seq);
    assert_eq!(h.b.active_calls(), 1);
}

#[test]
fn proxy_challenge_passes_through_and_retry_continues_leg_b() {
    challenge_then_retry(407, "Proxy-Authenticate", "Proxy-Authorization");
}

#[test]
fn www_challenge_passes_through_and_retry_continues_leg_b() {
    challenge_then_retry(401, "WWW-Authenticate", "Authorization");
}

#[test]
fn a_new_call_with_the_same_call_id_but_lower_cseq_is_not_a_retry() {
    let mut h = H::new();
    let text = invite_text("auth-2", "ct1", 5, "x1", &format!("sip:1000@{TAPIR}"), "");
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b1 = h.take_request(CALLEE, Method::Invite);
    h.answer(
        CALLEE,
        &b1,
        407,
        "cee1",
        "Proxy-Authenticate: Digest realm=\"x\", nonce=\"n\"",
        "",
    );
    let text = invite_text("auth-2", "ct1", 5, "x2", &format!("sip:1000@{TAPIR}"), "");
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b2 = h.take_request(CALLEE, Method::Invite);
    assert_ne!(b2.call_id(), b1.call_id());
    assert_eq!(b2.cseq().unwrap().seq, 1);
}

#[test]
fn challenged_in_dialog_request_is_relayed_back_and_retry_goes_through() {
    let mut h = H::new();
    let (mut caller, _callee, _call) = establish(&mut h, "auth-3", "", "");
    let bye = caller_request(&mut caller, "BYE", "");
    h.feed(CALLER, msg(&bye, ""));
    let b_bye = h.take_request(CALLEE, Method::Bye);
    assert_eq!(h.byes_to(CALLER), 0);
    // tapir answers the caller's BYE itself; the far side may still challenge tapir's BYE,
    // which has no credentials to give: the call is over on both sides anyway.
    h.answer(CALLEE, &b_bye, 200, "", "", "");
    h.take_response(CALLER, 200);
    assert_eq!(h.b.active_calls(), 0);
}

// ---------------------------------------------------------------------------------------
// Transfers

fn param(uri: &str, name: &str) -> Option<String> {
    let u = sip::Uri::parse(uri).ok()?;
    u.sip()?.params.value(name).map(str::to_string)
}

fn refer_to_uri(r: &Request) -> String {
    let v = r.headers.get("Refer-To").expect("Refer-To");
    let na = sip::NameAddr::parse(v).expect("Refer-To parses");
    na.uri.to_string()
}

fn transferred(h: &H) -> Vec<(u64, u64, u64, Option<u64>)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Transferred {
                call,
                previous,
                contact,
                replaces,
                ..
            } => Some((*call, *previous, *contact, *replaces)),
            _ => None,
        })
        .collect()
}

fn started_customer(h: &H, call: u64) -> Leg {
    h.events
        .iter()
        .find_map(|e| match e {
            CallEvent::Started {
                call: c, customer, ..
            } if *c == call => Some(*customer),
            _ => None,
        })
        .unwrap()
}

#[test]
fn refer_to_an_unknown_host_is_sent_to_the_referrer() {
    let mut h = H::new();
    let (mut caller, mut callee, _call) = establish(&mut h, "xfer-u", "", "");
    let stranger = "203.0.113.99:5060";
    let refer = callee_request(
        &mut callee,
        "REFER",
        &format!("Refer-To: <sip:2000@{stranger}>\n"),
    );
    h.feed(CALLEE, msg(&refer, ""));
    let a_refer = h.take_request(CALLER, Method::Refer);
    let target = refer_to_uri(&a_refer);
    h.answer(CALLER, &a_refer, 202, "", "", "");
    let _ = &mut caller;
    let text = invite_text("xfer-u-new", "ctu", 1, "xfer-u-new-1", &target, "");
    h.feed(CALLER, msg(&text, &sdp(4004, "sendrecv")));
    // Nothing goes to the host the REFER named; the referrer gets the call instead.
    assert!(h.take_requests(stranger, Method::Invite).is_empty());
    let inv = h.take_request(CALLEE, Method::Invite);
    assert!(inv.uri.to_string().starts_with("sip:2000@"), "{}", inv.uri);
}

#[test]
fn a_transfer_says_whether_it_is_attended_and_whether_its_target_is_external() {
    for (refer_to, attended, external) in [
        (format!("<sip:00441234@{TARGET}>"), false, true),
        (
            format!("<sip:00441234@{TARGET}?Replaces=abc%40x%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            true,
            true,
        ),
        (
            format!("<sip:2000@{TARGET}?Replaces=abc%40x%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            true,
            false,
        ),
    ] {
        let mut h = H::new();
        let (_caller, mut callee, call) = establish(&mut h, "xfer-k", "", "");
        let refer = callee_request(&mut callee, "REFER", &format!("Refer-To: {refer_to}\n"));
        h.feed(CALLEE, msg(&refer, ""));
        let got = h.events.iter().find_map(|e| match e {
            CallEvent::TransferRequested {
                call: c,
                attended,
                external,
                ..
            } if *c == call => Some((*attended, *external)),
            _ => None,
        });
        assert_eq!(got, Some((attended, external)), "{refer_to}");
    }
}

fn transfer_failures(h: &H) -> Vec<(u64, u16)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            CallEvent::TransferFailed { call, status } => Some((*call, *status)),
            _ => None,
        })
        .collect()
}

/// A NOTIFY of the refer event package with a `message/sipfrag` body.
fn sipfrag_notify(head: &str, frag: &str) -> Vec<u8> {
    let mut s = head.trim_end().replace('\n', "\r\n");
    s.push_str(&format!(
        "\r\nEvent: refer\r\nSubscription-State: active;expires=60\r\n\
         Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{frag}",
        frag.len()
    ));
    s.into_bytes()
}

/// A REFER the transferee refuses, and one it accepts but then reports failed in its NOTIFY:
/// each is reported, so the contact does not wait for a transferred call; its pending
/// transfer is dropped. A NOTIFY of progress or success reports nothing.
#[test]
fn a_refused_or_failed_transfer_is_reported() {
    let mut h = H::new();
    let (_caller, mut callee, call) = establish(&mut h, "xfer-r", "", "");
    let refer = callee_request(
        &mut callee,
        "REFER",
        &format!("Refer-To: <sip:2000@{TARGET}>\n"),
    );
    h.feed(CALLEE, msg(&refer, ""));
    assert_eq!(h.b.pending_transfers(), 1);
    let a_refer = h.take_request(CALLER, Method::Refer);
    h.answer(CALLER, &a_refer, 603, "", "", "");
    assert_eq!(
        h.take_responses(CALLEE, 603).len(),
        1,
        "the refusal is relayed"
    );
    assert_eq!(transfer_failures(&h), vec![(call, 603)]);
    assert_eq!(h.b.pending_transfers(), 0);

    let mut h = H::new();
    let (mut caller, mut callee, call) = establish(&mut h, "xfer-n", "", "");
    let refer = callee_request(
        &mut callee,
        "REFER",
        &format!("Refer-To: <sip:2000@{TARGET}>\n"),
    );
    h.feed(CALLEE, msg(&refer, ""));
    let a_refer = h.take_request(CALLER, Method::Refer);
    h.answer(CALLER, &a_refer, 202, "", "", "");
    for frag in ["SIP/2.0 100 Trying\r\n", "SIP/2.0 180 Ringing\r\n"] {
        let n = caller_request(&mut caller, "NOTIFY", "");
        h.feed(CALLER, sipfrag_notify(&n, frag));
    }
    assert!(transfer_failures(&h).is_empty());
    let n = caller_request(&mut caller, "NOTIFY", "");
    h.feed(CALLER, sipfrag_notify(&n, "SIP/2.0 486 Busy Here\r\n"));
    assert_eq!(transfer_failures(&h), vec![(call, 486)]);
    assert_eq!(h.b.pending_transfers(), 0);
    assert!(
        !h.take_requests(CALLEE, Method::Notify).is_empty(),
        "the NOTIFYs are still relayed to the referrer"
    );
}

#[test]
fn blind_transfer_by_the_callee_goes_through_tapir_and_keeps_the_contact() {
    let mut h = H::new();
    let (mut caller, mut callee, call) = establish(&mut h, "xfer-1", "", "");
    h.b.set_contact_label(call, "contact-42".into());

    // The agent (callee) refers the customer to 2000 at the target.
    let refer = callee_request(
        &mut callee,
        "REFER",
        &format!("Refer-To: <sip:2000@{TARGET}>\nReferred-By: <sip:1000@192.0.2.20>\n"),
    );
    h.feed(CALLEE, msg(&refer, ""));
    let a_refer = h.take_request(CALLER, Method::Refer);
    assert_eq!(a_refer.call_id(), "xfer-1");
    assert_eq!(
        a_refer.headers.get("Referred-By"),
        Some("<sip:1000@192.0.2.20>")
    );
    let target = refer_to_uri(&a_refer);
    assert!(
        target.starts_with(&format!("sip:2000@{TAPIR}")),
        "Refer-To points at tapir: {target}"
    );
    assert!(param(&target, "tapir-xfer").is_some(), "{target}");
    assert_eq!(h.b.pending_transfers(), 1);
    assert!(
        h.events.iter().any(|e| matches!(
            e,
            CallEvent::TransferRequested { call: c, attended: false, external: false, target }
                if *c == call && target == "2000"
        )),
        "{:?}",
        h.events
    );

    h.answer(CALLER, &a_refer, 202, "", "", "");
    let accepted = h.take_response(CALLEE, 202);
    assert_eq!(accepted.call_id(), callee.call_id);

    // The transferee reports progress; the NOTIFY and its sipfrag reach the referrer.
    let notify = caller_request(
        &mut caller,
        "NOTIFY",
        "Event: refer\nSubscription-State: active;expires=60\nContent-Type: message/sipfrag;version=2.0\n",
    );
    let mut bytes = notify.trim_end().replace('\n', "\r\n");
    bytes.push_str("\r\nContent-Length: 20\r\n\r\nSIP/2.0 100 Trying\r\n");
    h.feed(CALLER, bytes.into_bytes());
    let b_notify = h.take_request(CALLEE, Method::Notify);
    assert_eq!(b_notify.call_id(), callee.call_id);
    assert_eq!(b_notify.headers.get("Event"), Some("refer"));
    assert_eq!(
        b_notify.headers.get("Content-Type"),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(b_notify.body, b"SIP/2.0 100 Trying\r\n");
    h.answer(CALLEE, &b_notify, 200, "", "", "");
    h.take_response(CALLER, 200);

    // The transferee's INVITE to the Refer-To URI comes to tapir and goes to the target.
    let text = invite_text(
        "xfer-new",
        "ct9",
        1,
        "xfer-new-1",
        &target,
        "Referred-By: <sip:1000@192.0.2.20>\n",
    );
    h.feed(CALLER, msg(&text, &sdp(4002, "sendrecv")));
    let t_inv = h.take_request(TARGET, Method::Invite);
    assert_eq!(t_inv.uri.to_string(), format!("sip:2000@{TARGET}"));
    assert!(h.take_requests(CALLEE, Method::Invite).is_empty());
    let links = transferred(&h);
    assert_eq!(links.len(), 1);
    let (new_call, previous, contact, replaces) = links[0];
    assert_ne!(new_call, call);
    assert_eq!((previous, contact, replaces), (call, call, None));
    assert_eq!(h.b.contact_of(new_call), Some(call));
    // The customer (the caller of the first call) stays the customer.
    assert_eq!(started_customer(&h, new_call), Leg::A);
    // Transferred comes right before the new call's Started and carries the label.
    let pos_t = h
        .events
        .iter()
        .position(|e| matches!(e, CallEvent::Transferred { .. }))
        .unwrap();
    match (&h.events[pos_t], &h.events[pos_t + 1]) {
        (CallEvent::Transferred { label, .. }, CallEvent::Started { call: c, .. }) => {
            assert_eq!(label.as_deref(), Some("contact-42"));
            assert_eq!(*c, new_call);
        }
        other => panic!("unexpected order {other:?}"),
    }
    h.answer(TARGET, &t_inv, 200, "tgt1", "", &sdp(6000, "sendrecv"));
    h.take_response(CALLER, 200);

    // The referrer hangs up the old call; the new one continues.
    let bye = callee_request(&mut callee, "BYE", "");
    h.feed(CALLEE, msg(&bye, ""));
    assert_eq!(h.byes_to(CALLER), 1);
    assert_eq!(
        h.b.active_calls(),
        2,
        "old call waits for the caller's answer to BYE"
    );
    assert!(h.ended().iter().any(|(c, _)| *c == call));
    assert!(!h.ended().iter().any(|(c, _)| *c == new_call));
}

#[test]
fn blind_transfer_by_the_caller_links_the_callees_new_call() {
    let mut h = H::new();
    let (mut caller, mut callee, call) = establish(&mut h, "xfer-2", "", "");
    let refer = caller_request(
        &mut caller,
        "REFER",
        &format!("Refer-To: <sip:3000@{TARGET}>\n"),
    );
    h.feed(CALLER, msg(&refer, ""));
    let b_refer = h.take_request(CALLEE, Method::Refer);
    assert_eq!(b_refer.call_id(), callee.call_id);
    let target = refer_to_uri(&b_refer);
    assert!(target.starts_with(&format!("sip:3000@{TAPIR}")), "{target}");
    h.answer(CALLEE, &b_refer, 202, "", "", "");
    h.take_response(CALLER, 202);
    let notify = callee_request(
        &mut callee,
        "NOTIFY",
        "Event: refer\nSubscription-State: terminated;reason=noresource\nContent-Type: message/sipfrag\n",
    );
    let mut bytes = notify.trim_end().replace('\n', "\r\n");
    bytes.push_str("\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n");
    h.feed(CALLEE, bytes.into_bytes());
    let a_notify = h.take_request(CALLER, Method::Notify);
    assert_eq!(a_notify.body, b"SIP/2.0 200 OK\r\n");
    assert_eq!(a_notify.call_id(), "xfer-2");

    // The callee (the agent side) now calls the target through tapir.
    let text = format!(
        "INVITE {target} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLEE};branch=z9hG4bKcee-new\n\
         Max-Forwards: 70\n\
         From: <sip:1000@192.0.2.20>;tag=cee9\n\
         To: <sip:3000@{TAPIR}>\n\
         Call-ID: xfer-2-new\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:1000@{CALLEE}>\n"
    );
    h.feed(CALLEE, msg(&text, &sdp(5002, "sendrecv")));
    let t_inv = h.take_request(TARGET, Method::Invite);
    assert_eq!(t_inv.uri.user(), Some("3000"));
    let links = transferred(&h);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].1, call);
    // The transferee was the agent; the target it reaches takes the customer's place.
    assert_eq!(started_customer(&h, links[0].0), Leg::B);
}

#[test]
fn invite_with_replaces_goes_to_the_replaced_dialogs_other_party() {
    let mut h = H::new();
    let (_c1, _e1, call1) = establish(&mut h, "att-1", "", "");
    // A second call through tapir: the consultation call between alice and 1000.
    let (c2, e2, call2) = establish(&mut h, "att-2", "", "");
    assert_ne!(call1, call2);

    // A third party brings an INVITE that replaces call 2's leg A dialog (as alice sees it:
    // to-tag is tapir's tag, from-tag alice's).
    let replaces = format!("{};to-tag={};from-tag={}", c2.call_id, c2.tapir_tag, c2.tag);
    let text = format!(
        "INVITE sip:1000@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {TARGET};branch=z9hG4bKrepl\n\
         Max-Forwards: 70\n\
         From: <sip:carol@192.0.2.30>;tag=car1\n\
         To: <sip:1000@{TAPIR}>\n\
         Call-ID: att-new\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:carol@{TARGET}>\n\
         Replaces: {replaces}\n\
         Require: replaces\n"
    );
    h.feed(TARGET, msg(&text, &sdp(7000, "sendrecv")));
    let inv = h.take_request(CALLEE, Method::Invite);
    // Sent to the party on the other leg of call 2, at its Contact, naming its own dialog.
    assert_eq!(inv.uri.to_string(), format!("sip:party@{CALLEE}"));
    assert_eq!(
        inv.headers.get("Replaces").map(str::to_string),
        Some(format!(
            "{};to-tag={};from-tag={}",
            e2.call_id, e2.tag, e2.tapir_tag
        ))
    );
    let links = transferred(&h);
    assert_eq!(links.len(), 1);
    let (new_call, previous, contact, replaced) = links[0];
    assert_eq!((previous, contact, replaced), (call2, call2, Some(call2)));
    // In call 2 the caller was the customer; the party that stays (the callee) is not.
    assert_eq!(started_customer(&h, new_call), Leg::A);

    // The replaced party accepts, then ends its old dialog with tapir: call 2 ends.
    h.answer(CALLEE, &inv, 200, "cee7", "", &sdp(5004, "sendrecv"));
    h.take_response(TARGET, 200);
    let mut e2 = e2;
    let bye = callee_request(&mut e2, "BYE", "");
    h.feed(CALLEE, msg(&bye, ""));
    assert_eq!(h.byes_to(CALLER), 1);
    assert!(h.ended().iter().any(|(c, _)| *c == call2));
    assert!(!h.ended().iter().any(|(c, _)| *c == call1 || *c == new_call));
}

#[test]
fn invite_with_replaces_from_the_callee_side_goes_to_the_caller_naming_its_dialog() {
    let mut h = H::new();
    let (mut c1, e1, call) = establish(&mut h, "att-5", "", "");
    // Another phone behind the callee's PBX takes the call over: it replaces the callee's
    // dialog with tapir (as the callee sees it: to-tag is tapir's tag, from-tag the callee's).
    let agent2 = "192.0.2.21:5060";
    let text = format!(
        "INVITE sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {agent2};branch=z9hG4bKrepl-b\n\
         Max-Forwards: 70\n\
         From: <sip:1001@192.0.2.21>;tag=ag2\n\
         To: <sip:alice@192.0.2.10>\n\
         Call-ID: att-5-new\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:1001@{agent2}>\n\
         Replaces: {};to-tag={};from-tag={}\n\
         Require: replaces\n",
        e1.call_id, e1.tapir_tag, e1.tag
    );
    h.feed(agent2, msg(&text, &sdp(5006, "sendrecv")));
    let inv = h.take_request(CALLER, Method::Invite);
    // Sent to the caller at its Contact, naming the caller's own dialog with tapir.
    assert_eq!(inv.uri.to_string(), format!("sip:alice@{CALLER}"));
    assert_eq!(
        inv.headers.get("Replaces").map(str::to_string),
        Some(format!(
            "{};to-tag={};from-tag={}",
            c1.call_id, c1.tag, c1.tapir_tag
        ))
    );
    assert_ne!(inv.call_id(), c1.call_id);
    assert!(h.take_requests(CALLEE, Method::Invite).is_empty());
    let links = transferred(&h);
    assert_eq!(links.len(), 1);
    let (new_call, previous, contact, replaced) = links[0];
    assert_eq!((previous, contact, replaced), (call, call, Some(call)));
    // The caller was the customer and stays on: it is the new call's callee.
    assert_eq!(started_customer(&h, new_call), Leg::B);

    // The caller accepts, then ends its replaced dialog: the old call ends toward the callee.
    h.answer(CALLER, &inv, 200, "ct7", "", &sdp(4006, "sendrecv"));
    h.take_response(agent2, 200);
    let bye = caller_request(&mut c1, "BYE", "");
    h.feed(CALLER, msg(&bye, ""));
    let b_bye = h.take_request(CALLEE, Method::Bye);
    assert_eq!(b_bye.call_id(), e1.call_id);
    assert!(h.ended().iter().any(|(c, _)| *c == call));
    assert!(!h.ended().iter().any(|(c, _)| *c == new_call));
}

#[test]
fn attended_transfer_refer_keeps_replaces_and_links_both_calls() {
    let mut h = H::new();
    let (_c1, mut e1, call1) = establish(&mut h, "att-3", "", "");
    let (c2, _e2, call2) = establish(&mut h, "att-4", "", "");
    // The agent on call 1 refers the customer to the dialog of call 2 (attended transfer).
    let embedded = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        c2.call_id, c2.tapir_tag, c2.tag
    );
    let refer = callee_request(
        &mut e1,
        "REFER",
        &format!("Refer-To: <sip:1000@{TAPIR}?Replaces={embedded}>\n"),
    );
    h.feed(CALLEE, msg(&refer, ""));
    let a_refer = h.take_request(CALLER, Method::Refer);
    let target = refer_to_uri(&a_refer);
    assert!(
        target.ends_with(&format!("?Replaces={embedded}")),
        "URI headers kept: {target}"
    );
    // The transferee turns the URI header into a Replaces header.
    let uri = target.split('?').next().unwrap();
    let text = invite_text(
        "att-new2",
        "ct5",
        1,
        "att-new2",
        uri,
        &format!(
            "Replaces: {};to-tag={};from-tag={}\n",
            c2.call_id, c2.tapir_tag, c2.tag
        ),
    );
    h.feed(CALLER, msg(&text, &sdp(4004, "sendrecv")));
    let inv = h.take_request(CALLEE, Method::Invite);
    assert!(inv.headers.get("Replaces").is_some());
    let links = transferred(&h);
    assert_eq!(links.len(), 1);
    // The contact is the customer's call (the REFER's); the dialog replaced is call 2's.
    assert_eq!(
        (links[0].1, links[0].2, links[0].3),
        (call1, call1, Some(call2))
    );
}

#[test]
fn replaces_naming_an_unknown_dialog_is_routed_unchanged() {
    let mut h = H::new();
    let text = invite_text(
        "rep-x",
        "ct1",
        1,
        "rep-x",
        &format!("sip:1000@{TAPIR}"),
        "Replaces: nobody@else;to-tag=a;from-tag=b\n",
    );
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let inv = h.take_request(CALLEE, Method::Invite);
    assert_eq!(
        inv.headers.get("Replaces"),
        Some("nobody@else;to-tag=a;from-tag=b")
    );
    assert!(transferred(&h).is_empty());
}

// ---------------------------------------------------------------------------------------
// Session timers

fn hold_by_caller(h: &mut H, caller: &mut CallerLeg) {
    let reinvite = caller_request(caller, "INVITE", "");
    let mut s = sdp(4000, "sendonly");
    s = s.replace("o=- 1 1", "o=- 1 2");
    h.feed(CALLER, msg(&reinvite, &s));
    let b_re = h.take_request(CALLEE, Method::Invite);
    let mut ans = sdp(5000, "recvonly");
    ans = ans.replace("o=- 1 1", "o=- 1 2");
    h.answer(CALLEE, &b_re, 200, "", "", &ans);
    h.take_request(CALLEE, Method::Ack);
    h.take_response(CALLER, 200);
    caller_ack(h, caller);
}

/// The caller's ACK for tapir's 2xx to its latest re-INVITE.
fn caller_ack(h: &mut H, caller: &CallerLeg) {
    let ack = format!(
        "ACK sip:tapir@{TAPIR} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKack-re-{}\n\
         Max-Forwards: 70\n\
         From: <sip:alice@192.0.2.10>;tag={}\n\
         To: <sip:1000@{TAPIR}>;tag={}\n\
         Call-ID: {}\n\
         CSeq: {} ACK",
        caller.cseq, caller.tag, caller.tapir_tag, caller.call_id, caller.cseq
    );
    h.feed(CALLER, msg(&ack, ""));
}

#[test]
fn tapir_refreshes_a_held_call_past_its_interval_when_the_callee_has_no_timer() {
    let mut h = H::new();
    let (mut caller, _callee, call) = establish(
        &mut h,
        "st-1",
        "Session-Expires: 90;refresher=uas\nMin-SE: 90\nSupported: timer\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\n",
        "",
    );
    assert_eq!(
        h.b.session_timer(call, Leg::A),
        Some((Duration::from_secs(90), true))
    );
    assert_eq!(h.b.session_timer(call, Leg::B), None);
    hold_by_caller(&mut h, &mut caller);
    assert_eq!(h.b.on_hold(call), Some(true));

    let mut refreshes = 0;
    // Three intervals: tapir refreshes every 45 s and the caller accepts each.
    for step in 1..=6 {
        h.advance_to(step as f64 * 45.0 + 1.0);
        for up in h.take_requests(CALLER, Method::Update) {
            assert!(up.body.is_empty(), "UPDATE refresh carries no SDP");
            assert_eq!(up.headers.get("Session-Expires"), Some("90;refresher=uac"));
            assert_eq!(up.call_id(), "st-1");
            h.answer(
                CALLER,
                &up,
                200,
                "",
                "Session-Expires: 90;refresher=uac\n",
                "",
            );
            refreshes += 1;
        }
    }
    assert!(refreshes >= 5, "refreshes: {refreshes}");
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
    assert!(h.ended().is_empty());
    assert_eq!(h.b.active_calls(), 1);
}

#[test]
fn the_2xx_to_the_caller_carries_the_timer_tapir_runs_for_the_callee() {
    let mut h = H::new();
    let text = invite_text(
        "st-h",
        "ct1",
        1,
        "st-h",
        &format!("sip:1000@{TAPIR}"),
        "Session-Expires: 120\nSupported: timer\n",
    );
    h.feed(CALLER, msg(&text, &sdp(4000, "sendrecv")));
    let b = h.take_request(CALLEE, Method::Invite);
    assert_eq!(b.headers.get("Session-Expires"), Some("120"), "relayed");
    h.answer(CALLEE, &b, 200, "cee1", "", &sdp(5000, "sendrecv"));
    let ok = h.take_response(CALLER, 200);
    // The caller supports timers and named no refresher: it refreshes (RFC 4028 §9).
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    assert!(ok.headers.get_all("Require").any(|v| v == "timer"));
}

#[test]
fn refresh_by_re_invite_offers_the_held_sdp_unchanged() {
    let mut h = H::new();
    let (mut caller, _callee, _call) = establish(
        &mut h,
        "st-2",
        "Session-Expires: 90;refresher=uas\nSupported: timer\n",
        "",
    );
    hold_by_caller(&mut h, &mut caller);
    h.advance_to(46.0);
    let re = h.take_request(CALLER, Method::Invite);
    let body = String::from_utf8(re.body.clone()).unwrap();
    assert!(
        body.contains("a=recvonly"),
        "the held answer is re-offered:\n{body}"
    );
    assert!(body.contains("o=- 1 2"), "same session version:\n{body}");
    assert!(
        body.contains("c=IN IP4 10.0.0.1"),
        "anchored on tapir:\n{body}"
    );
    h.answer(
        CALLER,
        &re,
        200,
        "",
        "",
        &sdp(4000, "sendonly").replace("o=- 1 1", "o=- 1 2"),
    );
    let ack = h.take_request(CALLER, Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, re.cseq().unwrap().seq);
    let mut refreshes = 1;
    for step in 2..=5 {
        h.advance_to(step as f64 * 45.0 + 1.0);
        for re in h.take_requests(CALLER, Method::Invite) {
            h.answer(
                CALLER,
                &re,
                200,
                "",
                "",
                &sdp(4000, "sendonly").replace("o=- 1 1", "o=- 1 2"),
            );
            refreshes += 1;
        }
    }
    assert!(refreshes >= 4, "{refreshes}");
    assert_eq!(
        h.byes_to(CALLER) + h.byes_to(CALLEE),
        0,
        "refreshed, not ended"
    );
}

#[test]
fn relayed_refreshes_keep_the_call_and_a_silent_refresher_ends_it() {
    let mut h = H::new();
    // Both ends support timers; the callee's 2xx makes the caller the refresher.
    let (mut caller, _callee, call) = establish(
        &mut h,
        "st-3",
        "Session-Expires: 90\nSupported: timer\n",
        "Session-Expires: 90;refresher=uac\nRequire: timer\n",
    );
    assert_eq!(
        h.b.session_timer(call, Leg::A),
        Some((Duration::from_secs(90), false))
    );
    // tapir is the refresher in the callee's eyes, by relaying the caller's refreshes.
    assert_eq!(
        h.b.session_timer(call, Leg::B),
        Some((Duration::from_secs(90), false))
    );
    // The caller refreshes at 40 s with UPDATE; tapir relays it.
    h.advance_to(40.0);
    let up = caller_request(
        &mut caller,
        "UPDATE",
        "Session-Expires: 90;refresher=uac\nSupported: timer\n",
    );
    h.feed(CALLER, msg(&up, ""));
    let b_up = h.take_request(CALLEE, Method::Update);
    h.answer(
        CALLEE,
        &b_up,
        200,
        "",
        "Session-Expires: 90;refresher=uac\nRequire: timer\n",
        "",
    );
    h.take_response(CALLER, 200);
    h.advance_to(95.0);
    assert_eq!(
        h.byes_to(CALLER) + h.byes_to(CALLEE),
        0,
        "refreshed at 40 s"
    );
    assert!(
        h.take_requests(CALLEE, Method::Update).is_empty(),
        "tapir did not need to"
    );
    // Then the caller goes silent: at 40 + 90 - 90/3 s tapir ends the call on both legs.
    h.advance_to(99.0);
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
    h.advance_to(100.2);
    assert_eq!(h.byes_to(CALLER), 1);
    assert_eq!(h.byes_to(CALLEE), 1);
    assert_eq!(h.ended(), vec![(call, Outcome::Timeout)]);
}

#[test]
fn failed_refresh_ends_both_legs_with_bye() {
    let mut h = H::new();
    let (_caller, _callee, call) = establish(
        &mut h,
        "st-4",
        "Session-Expires: 90;refresher=uas\nSupported: timer\nAllow: INVITE, ACK, BYE, UPDATE\n",
        "",
    );
    h.advance_to(46.0);
    let up = h.take_request(CALLER, Method::Update);
    h.answer(CALLER, &up, 481, "", "", "");
    assert_eq!(h.byes_to(CALLER), 1);
    assert_eq!(h.byes_to(CALLEE), 1);
    assert_eq!(h.ended(), vec![(call, Outcome::Timeout)]);
    assert_eq!(h.b.free_ports(), h.free_ports, "media ports released");
}

#[test]
fn unanswered_refresh_ends_both_legs_with_bye() {
    let mut h = H::new();
    let (_caller, _callee, call) = establish(
        &mut h,
        "st-5",
        "Session-Expires: 90;refresher=uas\nSupported: timer\nAllow: INVITE, ACK, BYE, UPDATE\n",
        "",
    );
    h.advance_to(46.0);
    assert!(!h.take_requests(CALLER, Method::Update).is_empty());
    // Nobody answers: Timer F (64*T1 = 32 s) fires.
    h.advance_to(80.0);
    assert!(h.byes_to(CALLER) >= 1);
    assert!(h.byes_to(CALLEE) >= 1);
    assert_eq!(h.ended(), vec![(call, Outcome::Timeout)]);
}

#[test]
fn glare_on_refresh_is_retried() {
    let mut h = H::new();
    let (_caller, _callee, _call) = establish(
        &mut h,
        "st-6",
        "Session-Expires: 90;refresher=uas\nSupported: timer\nAllow: INVITE, ACK, BYE, UPDATE\n",
        "",
    );
    h.advance_to(46.0);
    let up = h.take_request(CALLER, Method::Update);
    h.answer(CALLER, &up, 491, "", "", "");
    h.advance_to(49.0);
    let again = h.take_request(CALLER, Method::Update);
    assert!(again.cseq().unwrap().seq > up.cseq().unwrap().seq);
    h.answer(CALLER, &again, 200, "", "", "");
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
}

/// A caller that runs RFC 4028 with the callee not supporting it, and without UPDATE: tapir
/// refreshes leg A itself, by re-INVITE.
const TIMER_NO_UPDATE: &str = "Session-Expires: 90;refresher=uas\nSupported: timer\n";

#[test]
fn a_party_re_invite_during_tapirs_refresh_invite_gets_491_on_either_leg() {
    let mut h = H::new();
    let (mut caller, mut callee, _call) = establish(&mut h, "st-g1", TIMER_NO_UPDATE, "");
    h.advance_to(46.0);
    let refresh = h.take_request(CALLER, Method::Invite);
    // RFC 3261 §14.1: no second INVITE on a dialog while one is in progress, so neither
    // party's re-INVITE may cross now (the callee's would reach leg A beside the refresh).
    let re = callee_request(&mut callee, "INVITE", "Content-Type: application/sdp\n");
    h.feed(CALLEE, msg(&re, &sdp(5000, "sendonly")));
    assert_eq!(
        h.take_response(CALLEE, 491).cseq().unwrap().seq,
        callee.cseq
    );
    let re = caller_request(&mut caller, "INVITE", "Content-Type: application/sdp\n");
    h.feed(CALLER, msg(&re, &sdp(4000, "sendonly")));
    assert_eq!(
        h.take_response(CALLER, 491).cseq().unwrap().seq,
        caller.cseq
    );
    assert!(h.take_requests(CALLER, Method::Invite).is_empty());
    assert!(h.take_requests(CALLEE, Method::Invite).is_empty());

    // Once the refresh is answered, the callee's retry goes through.
    h.answer(CALLER, &refresh, 200, "", "", &sdp(4000, "sendrecv"));
    h.take_request(CALLER, Method::Ack);
    let re = callee_request(&mut callee, "INVITE", "Content-Type: application/sdp\n");
    h.feed(CALLEE, msg(&re, &sdp(5000, "sendonly")));
    let relayed = h.take_request(CALLER, Method::Invite);
    assert!(relayed.cseq().unwrap().seq > refresh.cseq().unwrap().seq);
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
}

#[test]
fn tapirs_refresh_invite_waits_for_a_relayed_re_invite_in_progress() {
    let mut h = H::new();
    let (_caller, mut callee, _call) = establish(&mut h, "st-g2", TIMER_NO_UPDATE, "");
    h.advance_to(44.0);
    // The callee re-INVITEs just before tapir's refresh is due; the caller is slow to answer.
    let re = callee_request(&mut callee, "INVITE", "Content-Type: application/sdp\n");
    h.feed(CALLEE, msg(&re, &sdp(5000, "sendonly")));
    let relayed = h.take_request(CALLER, Method::Invite);
    h.advance_to(46.5);
    // Retransmissions of the relayed INVITE aside, nothing else.
    assert!(
        h.take_requests(CALLER, Method::Invite)
            .iter()
            .all(|r| r.cseq() == relayed.cseq()),
        "no refresh INVITE beside the relayed one"
    );
    // The caller refuses the offer, so nothing refreshed leg A: tapir's refresh follows as soon
    // as the leg is free.
    h.answer(CALLER, &relayed, 488, "", "", "");
    h.take_response(CALLEE, 488);
    h.advance_to(48.0);
    let refresh = h.take_request(CALLER, Method::Invite);
    assert!(refresh.cseq().unwrap().seq > relayed.cseq().unwrap().seq);
    h.answer(CALLER, &refresh, 200, "", "", &sdp(4000, "sendrecv"));
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
    assert!(h.ended().is_empty());
}

#[test]
fn calls_without_session_timers_never_refresh() {
    let mut h = H::new();
    let (_caller, _callee, call) = establish(&mut h, "st-7", "", "");
    assert_eq!(h.b.session_timer(call, Leg::A), None);
    h.advance_to(4000.0);
    assert!(
        h.sent
            .iter()
            .all(|s| !matches!(&s.msg, Message::Request(_))),
        "nothing sent"
    );
    assert_eq!(h.b.active_calls(), 1);
}

// ---------------------------------------------------------------------------------------
// Media supervision

#[test]
fn media_timeout_ends_both_legs_but_not_while_on_hold() {
    let mut h = H::new();
    let (mut caller, _callee, call) = establish(&mut h, "mt-1", "", "");
    // Silence shorter than the time since the answer never counts.
    assert!(!h.b.media_timeout(h.now, call, Duration::from_secs(10)));
    hold_by_caller(&mut h, &mut caller);
    h.advance_to(300.0);
    assert!(
        !h.b.media_timeout(h.now, call, Duration::from_secs(200)),
        "a held call is silent by design"
    );
    // Resume at 300 s: silence counts from there.
    let reinvite = caller_request(&mut caller, "INVITE", "");
    h.feed(
        CALLER,
        msg(
            &reinvite,
            &sdp(4000, "sendrecv").replace("o=- 1 1", "o=- 1 3"),
        ),
    );
    let b_re = h.take_request(CALLEE, Method::Invite);
    h.answer(
        CALLEE,
        &b_re,
        200,
        "",
        "",
        &sdp(5000, "sendrecv").replace("o=- 1 1", "o=- 1 3"),
    );
    h.take_response(CALLER, 200);
    caller_ack(&mut h, &caller);
    assert_eq!(h.b.on_hold(call), Some(false));
    h.advance_to(330.0);
    assert!(
        !h.b.media_timeout(h.now, call, Duration::from_secs(60)),
        "off hold for 30 s only"
    );
    assert_eq!(h.byes_to(CALLER) + h.byes_to(CALLEE), 0);
    h.advance_to(361.0);
    assert!(h.b.media_timeout(h.now, call, Duration::from_secs(60)));
    h.drain();
    assert_eq!(h.byes_to(CALLER), 1);
    assert_eq!(h.byes_to(CALLEE), 1);
    assert_eq!(h.ended(), vec![(call, Outcome::Timeout)]);
    assert_eq!(h.b.free_ports(), h.free_ports);
    // Both BYEs answered: nothing is left of the call.
    assert!(!h.b.media_timeout(h.now, call, Duration::from_secs(60)));
}

#[test]
fn media_timeout_cleans_up_once_the_byes_are_answered() {
    let mut h = H::new();
    let (_caller, _callee, call) = establish(&mut h, "mt-2", "", "");
    h.advance_to(70.0);
    assert!(h.b.media_timeout(h.now, call, Duration::from_secs(61)));
    h.drain();
    let a = h.take_request(CALLER, Method::Bye);
    let b = h.take_request(CALLEE, Method::Bye);
    h.answer(CALLER, &a, 200, "", "", "");
    h.answer(CALLEE, &b, 200, "", "", "");
    assert_eq!(h.b.active_calls(), 0);
    h.advance_to(200.0);
    assert_eq!(h.b.transactions(), 0, "every transaction ended");
}
