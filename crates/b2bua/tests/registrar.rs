//! The registration relay through the whole [`B2bua`] on a virtual clock: a phone behind NAT
//! registers through tapir with a PBX that challenges it, then the PBX calls it; expiry,
//! un-REGISTER and `Contact: *` drop the binding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use b2bua::{B2bua, Config, Output, RegistrarConfig, RouteConfig, Routes, Side};
use sip::transaction::Peer;
use sip::{HeaderAccess, Message, NameAddr, Request, Response, Transport};

const TAPIR: &str = "192.0.2.1:5060";
const PBX: &str = "192.0.2.10:5060";
/// The phone's public address as its NAT shows it.
const PHONE_NAT: &str = "203.0.113.7:41000";
/// What the phone writes in its Contact: a private address tapir cannot reach.
const PHONE_CONTACT: &str = "sip:alice@10.1.1.7:5060";

fn udp(s: &str) -> Peer {
    Peer {
        addr: s.parse().unwrap(),
        transport: Transport::Udp,
    }
}

struct World {
    b: B2bua,
    now: Instant,
    branch: u32,
}

impl World {
    fn new(registrar: bool) -> Self {
        let config = Config {
            sip_addrs: vec![TAPIR.parse().unwrap()],
            media_ips: vec!["192.0.2.1".parse().unwrap()],
            timers: b2bua::default_timers(),
            rtp_ports: (30000, 30099),
            id_seed: 42,
            user_agent: "tapir-test".into(),
        };
        // Outgoing calls of the phones: dialled numbers starting with 9 go to the PBX.
        let routes = Routes::compile(
            &[RouteConfig {
                name: "phones-out".into(),
                source: Vec::new(),
                source_zone: None,
                user_prefix: Some("9".into()),
                user_pattern: None,
                target: format!("sip:{PBX}"),
                customer: Side::Callee,
                direction: Some("outbound".into()),
                record: None,
                format: None,
                srtp: Default::default(),
                tls: None,
                external: false,
            }],
            &HashMap::new(),
        )
        .unwrap();
        let mut b = B2bua::new(config, routes);
        if registrar {
            let mut rc = RegistrarConfig::new(&format!("sip:{PBX}"));
            rc.direction = Some("inbound".into());
            b.set_registrar(Some(rc.compile().unwrap()));
        }
        Self {
            b,
            now: Instant::now(),
            branch: 0,
        }
    }

    fn feed(&mut self, from: &str, text: &str) {
        self.b
            .handle_message(self.now, text.replace('\n', "\r\n").as_bytes(), udp(from));
    }

    /// Everything tapir sent since the last call, parsed.
    fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(o) = self.b.poll_output() {
            if let Output::Transmit { to, data } = o {
                out.push((
                    to.addr,
                    sip::parse(&data, true).expect("tapir sends valid SIP"),
                ));
            }
        }
        out
    }

    fn requests_to(&mut self, to: &str) -> Vec<Request> {
        let to: SocketAddr = to.parse().unwrap();
        self.sent()
            .into_iter()
            .filter_map(|(a, m)| match m {
                Message::Request(r) if a == to => Some(r),
                _ => None,
            })
            .collect()
    }

    fn one_request_to(&mut self, to: &str) -> Request {
        let mut r = self.requests_to(to);
        assert_eq!(r.len(), 1, "one request to {to}: {r:?}");
        r.remove(0)
    }

    /// The one final response sent to `to` (100 Trying of INVITEs is left out).
    fn one_response_to(&mut self, to: &str) -> Response {
        let to: SocketAddr = to.parse().unwrap();
        let mut r: Vec<Response> = self
            .sent()
            .into_iter()
            .filter_map(|(a, m)| match m {
                Message::Response(r) if a == to && r.status != 100 => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(r.len(), 1, "one response to {to}: {r:?}");
        r.remove(0)
    }

    /// Runs the clock to `until`, firing every timer on the way.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(t) = self.b.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.b.handle_timeout(self.now);
        }
        self.now = until;
        self.b.handle_timeout(self.now);
    }

    fn phone_register(&mut self, call_id: &str, cseq: u32, extra: &str) {
        self.branch += 1;
        let text = format!(
            "REGISTER sip:pbx.example.com SIP/2.0\n\
             Via: SIP/2.0/UDP 10.1.1.7:5060;branch=z9hG4bKph{b};rport\n\
             Max-Forwards: 70\n\
             From: \"Alice\" <sip:alice@pbx.example.com>;tag=ph{b}\n\
             To: <sip:alice@pbx.example.com>\n\
             Call-ID: {call_id}\n\
             CSeq: {cseq} REGISTER\n\
             User-Agent: DeskPhone/1.0\n\
             {extra}Content-Length: 0\n\n",
            b = self.branch
        );
        self.feed(PHONE_NAT, &text);
    }

    /// The PBX answers `req` (a REGISTER tapir relayed) with `status` and extra headers.
    fn pbx_answer(&mut self, req: &Request, status: u16, reason: &str, extra: &str) {
        let mut r = req.response(status, reason);
        set_tag(&mut r, "pbxtag");
        for line in extra.lines().filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':').unwrap();
            r.headers.push(n.trim(), v.trim());
        }
        self.b.handle_message(self.now, &r.to_bytes(), udp(PBX));
    }

    fn pbx_invite(&mut self, from: &str, user: &str, call_id: &str) {
        self.branch += 1;
        let text = format!(
            "INVITE sip:{user}@{TAPIR} SIP/2.0\n\
             Via: SIP/2.0/UDP {from};branch=z9hG4bKpbx{b}\n\
             Max-Forwards: 70\n\
             From: <sip:+15551230000@pbx.example.com>;tag=pbx{b}\n\
             To: <sip:alice@pbx.example.com>\n\
             Call-ID: {call_id}\n\
             CSeq: 1 INVITE\n\
             Contact: <sip:pbx@{from}>\n\
             Content-Type: application/sdp\n\
             Content-Length: 0\n\n",
            b = self.branch
        );
        // A real SDP offer is not needed here: tapir accepts a delayed offer.
        let text = text.replace("Content-Type: application/sdp\n", "");
        self.feed(from, &text);
    }

    /// Registers the phone without a challenge; returns the relayed REGISTER.
    fn register(&mut self, expires: u32) -> Request {
        self.phone_register(
            "ph-1",
            1,
            &format!("Contact: <{PHONE_CONTACT}>;expires={expires}\n"),
        );
        let relayed = self.one_request_to(PBX);
        let ct = relayed.contact().unwrap();
        self.pbx_answer(
            &relayed,
            200,
            "OK",
            &format!("Contact: <{}>;expires={expires}\n", ct.uri),
        );
        let ok = self.one_response_to(PHONE_NAT);
        assert_eq!(ok.status, 200);
        relayed
    }
}

fn set_tag(r: &mut Response, tag: &str) {
    let mut to = r.to().unwrap();
    to.params.set("tag", Some(tag.into()));
    r.headers.set("To", to.to_string());
}

fn token(relayed: &Request) -> String {
    relayed.contact().unwrap().uri.user().unwrap().to_string()
}

#[test]
fn challenged_registration_then_a_call_from_the_pbx_reaches_the_phone() {
    let mut w = World::new(true);
    w.phone_register(
        "ph-1",
        1,
        &format!("Contact: <{PHONE_CONTACT}>\nExpires: 3600\n"),
    );
    let first = w.one_request_to(PBX);
    // The Request-URI is the phone's: digest responses cover it.
    assert_eq!(first.uri.to_string(), "sip:pbx.example.com");
    assert_eq!(first.headers.get("User-Agent"), Some("DeskPhone/1.0"));
    assert_eq!(first.headers.get("Expires"), Some("3600"));
    assert_ne!(
        first.call_id(),
        "ph-1",
        "the registrar side has its own Call-ID"
    );
    assert_eq!(first.cseq().unwrap().seq, 1);
    let ct = first.contact().unwrap();
    let sip_ct = ct.uri.sip().unwrap();
    assert_eq!(sip_ct.host.to_string(), "192.0.2.1");
    assert_eq!(sip_ct.port, Some(5060));
    assert!(token(&first).starts_with("alice~"), "{ct}");
    assert_eq!(ct.params.value("expires"), Some("3600"));
    assert!(first.headers.get("Authorization").is_none());
    assert_eq!(w.b.bindings().live(w.now), 0);

    let challenge =
        "Digest realm=\"pbx.example.com\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"";
    w.pbx_answer(
        &first,
        401,
        "Unauthorized",
        &format!("WWW-Authenticate: {challenge}\n"),
    );
    let r401 = w.one_response_to(PHONE_NAT);
    assert_eq!(r401.status, 401);
    assert_eq!(r401.headers.get("WWW-Authenticate"), Some(challenge));
    assert_eq!(r401.call_id(), "ph-1");
    assert_eq!(r401.cseq().unwrap().seq, 1);
    assert!(r401.to_tag().is_some());
    assert_eq!(w.b.bindings().live(w.now), 0, "a challenge binds nothing");

    let auth = "Digest username=\"alice\", realm=\"pbx.example.com\", nonce=\"abc123\", \
                uri=\"sip:pbx.example.com\", response=\"0123456789abcdef0123456789abcdef\", \
                qop=auth, nc=00000001, cnonce=\"x\", algorithm=MD5";
    w.phone_register(
        "ph-1",
        2,
        &format!("Contact: <{PHONE_CONTACT}>\nExpires: 3600\nAuthorization: {auth}\n"),
    );
    let second = w.one_request_to(PBX);
    assert_eq!(second.headers.get("Authorization"), Some(auth));
    assert_eq!(
        second.call_id(),
        first.call_id(),
        "one Call-ID per registration"
    );
    assert_eq!(second.from_tag(), first.from_tag());
    assert_eq!(second.cseq().unwrap().seq, 2);
    assert_eq!(token(&second), token(&first));

    // The registrar grants less than asked and also lists a binding of another device.
    w.pbx_answer(
        &second,
        200,
        "OK",
        &format!(
            "Contact: <{}>;expires=120\nContact: <sip:alice@198.51.100.9>;expires=50\nDate: Sat, 13 Nov 2010 23:29:00 GMT\nService-Route: <sip:pbx-core@192.0.2.10;lr>\n",
            second.contact().unwrap().uri
        ),
    );
    let ok = w.one_response_to(PHONE_NAT);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.cseq().unwrap().seq, 2);
    let contacts: Vec<NameAddr> = ok
        .headers
        .get_all("Contact")
        .map(|v| NameAddr::parse(v).unwrap())
        .collect();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert_eq!(contacts[0].uri.to_string(), PHONE_CONTACT);
    assert_eq!(contacts[0].params.value("expires"), Some("120"));
    assert_eq!(contacts[1].uri.to_string(), "sip:alice@198.51.100.9");
    assert!(ok.headers.get("Date").is_some());
    assert!(
        ok.headers.get("Service-Route").is_none(),
        "the phone must keep sending through tapir"
    );

    let b =
        w.b.bindings()
            .lookup(w.now, &token(&second))
            .unwrap()
            .clone();
    assert_eq!(b.peer, udp(PHONE_NAT));
    assert_eq!(b.contact.to_string(), PHONE_CONTACT);
    assert_eq!(b.aor, "sip:alice@pbx.example.com");
    // Timers wake tapir up no later than the expiry.
    assert!(w.b.poll_timeout().unwrap() <= w.now + Duration::from_secs(120));

    // The PBX calls the contact it was given.
    w.pbx_invite(PBX, &token(&second), "pbx-call-1");
    let invite = w.one_request_to(PHONE_NAT);
    assert_eq!(invite.method, sip::Method::Invite);
    assert_eq!(invite.uri.to_string(), PHONE_CONTACT);
    assert_eq!(invite.to().unwrap().uri.user(), Some("alice"));
    assert_eq!(w.b.active_calls(), 1);
}

#[test]
fn only_the_registrar_side_reaches_registered_phones() {
    let mut w = World::new(true);
    let relayed = w.register(300);
    // Someone else using the same contact user gets no route.
    w.pbx_invite("198.51.100.66:5060", &token(&relayed), "stranger");
    let r = w.one_response_to("198.51.100.66:5060");
    assert_eq!(r.status, 404);
    // The PBX calling the user by address-of-record also reaches the phone.
    w.pbx_invite(PBX, "alice", "pbx-call-aor");
    let invite = w.one_request_to(PHONE_NAT);
    assert_eq!(invite.uri.to_string(), PHONE_CONTACT);
    // A user that never registered: 480, not a route lookup failure.
    w.pbx_invite(PBX, "bob", "pbx-call-bob");
    assert_eq!(w.one_response_to(PBX).status, 480);
}

#[test]
fn expired_binding_is_dropped_and_calls_get_480() {
    let mut w = World::new(true);
    let relayed = w.register(60);
    assert_eq!(w.b.bindings().live(w.now), 1);
    w.advance(Duration::from_secs(59));
    assert_eq!(w.b.bindings().iter().count(), 1);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.b.bindings().iter().count(), 0, "dropped by the timer");
    let _ = w.sent();
    w.pbx_invite(PBX, &token(&relayed), "late-call");
    assert_eq!(w.one_response_to(PBX).status, 480);
    assert_eq!(w.b.active_calls(), 0);
}

#[test]
fn refresh_with_a_new_phone_call_id_keeps_the_relay_identity() {
    let mut w = World::new(true);
    let first = w.register(300);
    w.advance(Duration::from_secs(200));
    let _ = w.sent();
    w.phone_register(
        "ph-2",
        1,
        &format!("Contact: <{PHONE_CONTACT}>;expires=300\n"),
    );
    let refresh = w.one_request_to(PBX);
    assert_eq!(refresh.call_id(), first.call_id());
    assert_eq!(refresh.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
    assert_eq!(token(&refresh), token(&first));
    w.pbx_answer(
        &refresh,
        200,
        "OK",
        &format!(
            "Contact: <{}>;expires=300\n",
            refresh.contact().unwrap().uri
        ),
    );
    assert_eq!(w.one_response_to(PHONE_NAT).status, 200);
    // The first grant would have run out at 300 s; the refresh carries it to 500 s.
    w.advance(Duration::from_secs(250));
    assert_eq!(w.b.bindings().live(w.now), 1);
}

#[test]
fn unregister_removes_the_binding() {
    let mut w = World::new(true);
    let first = w.register(300);
    w.phone_register(
        "ph-1",
        2,
        &format!("Contact: <{PHONE_CONTACT}>\nExpires: 0\n"),
    );
    let un = w.one_request_to(PBX);
    assert_eq!(un.call_id(), first.call_id());
    assert_eq!(un.cseq().unwrap().seq, 2);
    assert_eq!(un.contact().unwrap().params.value("expires"), Some("0"));
    assert_eq!(un.headers.get("Expires"), Some("0"));
    // Until the registrar confirms, the binding holds.
    assert_eq!(w.b.bindings().live(w.now), 1);
    w.pbx_answer(&un, 200, "OK", "");
    let ok = w.one_response_to(PHONE_NAT);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.count("Contact"), 0);
    assert_eq!(w.b.bindings().iter().count(), 0);
    w.pbx_invite(PBX, &token(&first), "after-unregister");
    assert_eq!(w.one_response_to(PBX).status, 480);
}

#[test]
fn star_unregisters_every_binding_of_the_user() {
    let mut w = World::new(true);
    w.register(300);
    w.phone_register("ph-1", 2, "Contact: *\nExpires: 0\n");
    let un = w.one_request_to(PBX);
    assert_eq!(un.headers.get("Contact"), Some("*"));
    assert_eq!(un.headers.get("Expires"), Some("0"));
    w.pbx_answer(&un, 200, "OK", "");
    assert_eq!(w.one_response_to(PHONE_NAT).status, 200);
    assert_eq!(w.b.bindings().iter().count(), 0);
    // `*` needs Expires: 0 (RFC 3261 §10.3 step 6): refused locally.
    w.phone_register("ph-1", 3, "Contact: *\nExpires: 60\n");
    assert_eq!(w.one_response_to(PHONE_NAT).status, 400);
}

#[test]
fn registrar_refusals_and_silence_reach_the_phone() {
    let mut w = World::new(true);
    // Too short for min_expires: answered locally with the minimum.
    w.phone_register(
        "ph-1",
        1,
        &format!("Contact: <{PHONE_CONTACT}>;expires=10\n"),
    );
    let r = w.one_response_to(PHONE_NAT);
    assert_eq!(r.status, 423);
    assert_eq!(r.headers.get("Min-Expires"), Some("60"));
    // The registrar's own 423 passes through with its Min-Expires.
    w.phone_register(
        "ph-1",
        2,
        &format!("Contact: <{PHONE_CONTACT}>;expires=100\n"),
    );
    let relayed = w.one_request_to(PBX);
    w.pbx_answer(&relayed, 423, "Interval Too Brief", "Min-Expires: 600\n");
    let r = w.one_response_to(PHONE_NAT);
    assert_eq!((r.status, r.headers.get("Min-Expires")), (423, Some("600")));
    // A registrar that never answers: 408 after Timer F.
    w.phone_register(
        "ph-1",
        3,
        &format!("Contact: <{PHONE_CONTACT}>;expires=3600\n"),
    );
    let _ = w.one_request_to(PBX);
    w.advance(Duration::from_secs(33));
    let last = w.one_response_to(PHONE_NAT);
    assert_eq!(last.status, 408);
    assert_eq!(w.b.bindings().live(w.now), 0);
}

#[test]
fn max_expires_caps_what_is_asked() {
    let mut w = World::new(true);
    w.phone_register(
        "ph-1",
        1,
        &format!("Contact: <{PHONE_CONTACT}>\nExpires: 86400\n"),
    );
    let relayed = w.one_request_to(PBX);
    assert_eq!(relayed.headers.get("Expires"), Some("3600"));
    assert_eq!(
        relayed.contact().unwrap().params.value("expires"),
        Some("3600")
    );
}

#[test]
fn register_without_a_registrar_is_not_allowed() {
    let mut w = World::new(false);
    w.phone_register("ph-1", 1, &format!("Contact: <{PHONE_CONTACT}>\n"));
    let r = w.one_response_to(PHONE_NAT);
    assert_eq!(r.status, 405);
    assert!(r.headers.get("Allow").unwrap().contains("INVITE"));
    // And INVITEs from anywhere without a route stay 404.
    w.pbx_invite(PBX, "alice", "no-registrar");
    assert_eq!(w.one_response_to(PBX).status, 404);
}
