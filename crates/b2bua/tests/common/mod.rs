//! A deterministic world for the B2BUA core: a caller UA, a callee UA and tapir in the middle,
//! joined by an in-memory datagram network that loses, duplicates and delays (and so reorders)
//! datagrams per link with a seeded PRNG. Time is virtual: when nothing is due, the clock jumps
//! to the earliest of the next delivery and every node's `poll_timeout()`, so a 32-second
//! retransmission schedule runs in microseconds and a run with the same seed is identical.
//!
//! The UAs are a `sip::transaction::TransactionLayer` each plus a small scripted UA core
//! ([`Ua`]): it sends INVITEs with SDP (or without, for a delayed offer), rings and answers or
//! rejects, ACKs 2xx (again when a 2xx is retransmitted), sends BYE, CANCEL, re-INVITE, INFO and
//! OPTIONS, and answers what it receives. Everything a UA's core sees is kept in [`Ua::seen`];
//! every datagram put on the network is kept in [`Net::log`] when tracing is on.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use b2bua::{B2bua, CallEvent, Config, MediaCommand, Output, RouteConfig, Routes, Side};
use sdp::{Direction, Sdp};
use sip::dialog::Dialog;
use sip::transaction::{Event, Output as TxOutput, Peer, Timers, TransactionLayer, TxKey};
use sip::{HeaderAccess, Message, Method, NameAddr, Request, Response, Transport, Uri};

pub const TAPIR: &str = "192.0.2.1:5060";
pub const CALLER: &str = "192.0.2.10:5060";
pub const CALLEE: &str = "192.0.2.20:5060";
/// tapir's media address; deliberately not its SIP address, so SDP rewriting is visible.
pub const MEDIA_IP: &str = "203.0.113.1";
pub const CALLER_RTP: &str = "192.0.2.10:40000";
pub const CALLEE_RTP: &str = "192.0.2.20:50000";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub fn udp(s: &str) -> Peer {
    Peer {
        addr: addr(s),
        transport: Transport::Udp,
    }
}

/// SplitMix64: tiny, seedable, and good enough to decide the fate of a datagram.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && self.next_u64() % 100 < u64::from(percent)
    }

    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// How one direction of a link treats datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub loss_percent: u32,
    pub dup_percent: u32,
    /// Each copy is delayed by a uniform draw in this range; a wide range reorders.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Link {
    /// No loss, a fixed 10 ms: what happens is exactly what the script says.
    pub const CLEAN: Link = Link {
        loss_percent: 0,
        dup_percent: 0,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    /// Everything sent is lost.
    pub const DEAD: Link = Link {
        loss_percent: 100,
        dup_percent: 0,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };

    pub fn lossy(loss_percent: u32, dup_percent: u32) -> Link {
        Link {
            loss_percent,
            dup_percent,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(150),
        }
    }

    pub fn fixed(delay_ms: u64) -> Link {
        Link {
            min_delay: Duration::from_millis(delay_ms),
            max_delay: Duration::from_millis(delay_ms),
            ..Link::CLEAN
        }
    }
}

/// A datagram as it was put on the network.
#[derive(Debug, Clone)]
pub struct Packet {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
    /// How many copies the network delivers (0: lost, 2: duplicated).
    pub copies: u8,
}

impl Packet {
    pub fn message(&self) -> Option<Message> {
        sip::parse(&self.data, true).ok()
    }
}

struct InFlight {
    at: Instant,
    /// Tie-breaker: equal delivery times keep the order of sending.
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct Net {
    rng: Rng,
    pub default_link: Link,
    /// Per (from, to) overrides of `default_link`.
    pub links: HashMap<(SocketAddr, SocketAddr), Link>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Every datagram handed to the network, before its fate is decided (when tracing).
    pub log: Option<Vec<Packet>>,
}

impl Net {
    pub fn new(seed: u64, default_link: Link) -> Self {
        Self {
            rng: Rng::new(seed),
            default_link,
            links: HashMap::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            sent: 0,
            lost: 0,
            duplicated: 0,
            log: Some(Vec::new()),
        }
    }

    pub fn set_link(&mut self, from: &str, to: &str, link: Link) {
        self.links.insert((addr(from), addr(to)), link);
    }

    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.sent += 1;
        if let Some(log) = &mut self.log {
            log.push(Packet {
                at: now,
                from,
                to,
                data: data.clone(),
                copies: 0,
            });
        }
        let link = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link);
        let copies = if self.rng.chance(link.dup_percent) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        let mut data = Some(data);
        for i in 0..copies {
            if self.rng.chance(link.loss_percent) {
                self.lost += 1;
                continue;
            }
            let delay = self.rng.between(
                link.min_delay.as_micros() as u64,
                link.max_delay.as_micros() as u64,
            );
            self.seq += 1;
            if let Some(p) = self.log.as_mut().and_then(|l| l.last_mut()) {
                p.copies += 1;
            }
            let data = if i + 1 == copies {
                data.take().unwrap_or_default()
            } else {
                data.clone().unwrap_or_default()
            };
            self.in_flight.push(Reverse(InFlight {
                at: now + Duration::from_micros(delay),
                seq: self.seq,
                from,
                to,
                data,
            }));
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(d)| d.at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        if self.next_delivery()? <= now {
            self.in_flight.pop().map(|Reverse(d)| d)
        } else {
            None
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Logged datagrams from `from` to `to`, parsed.
    pub fn messages(&self, from: &str, to: &str) -> Vec<(Instant, Message)> {
        let (from, to) = (addr(from), addr(to));
        self.log
            .iter()
            .flatten()
            .filter(|p| p.from == from && p.to == to)
            .filter_map(|p| p.message().map(|m| (p.at, m)))
            .collect()
    }

    /// Logged requests of `method` from `from` to `to`.
    pub fn requests(&self, from: &str, to: &str, method: Method) -> Vec<(Instant, Request)> {
        self.messages(from, to)
            .into_iter()
            .filter_map(|(at, m)| match m {
                Message::Request(r) if r.method == method => Some((at, r)),
                _ => None,
            })
            .collect()
    }

    /// Logged responses from `from` to `to` (status, CSeq method).
    pub fn responses(&self, from: &str, to: &str) -> Vec<Response> {
        self.messages(from, to)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::Response(r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

/// What a UA does with a new INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 180 at once, then 200 with SDP after `ring`.
    Accept { ring: Duration },
    /// 180 at once, then `status` after `ring`.
    Reject { ring: Duration, status: u16 },
    /// 180 and nothing more.
    RingForever,
}

/// What a UA's core was told by its transaction layer.
#[derive(Debug, Clone)]
pub enum Seen {
    Request(Request),
    Ack(Request),
    Response(Response),
    Stray2xx(Response),
    Timeout(Method),
    Cancelled,
    AckTimeout,
}

enum Scheduled {
    /// Send this final (or provisional) response on a server transaction.
    Respond(TxKey, Response),
}

/// A scripted user agent.
pub struct Ua {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub rtp: SocketAddr,
    pub tx: TransactionLayer,
    pub answer: Answer,
    /// INFO, OPTIONS, UPDATE... inside a dialog are answered after this long.
    pub in_dialog_delay: Duration,
    /// Everything the core saw, in order (when `keep_log`).
    pub seen: Vec<Seen>,
    pub keep_log: bool,
    pub parse_errors: u32,
    pub dialog: Option<Dialog>,
    /// The dialog has been confirmed by a 2xx.
    pub confirmed: bool,
    /// Where in-dialog requests go when the remote target names no usable address.
    pub next_hop: SocketAddr,
    /// Our pending INVITE (initial or re-INVITE) until its final response.
    pub invite: Option<(TxKey, Request)>,
    /// An INVITE received and not yet answered finally.
    pub incoming: Option<(TxKey, Request)>,
    /// The last ACKs sent, resent when their 2xx is retransmitted: (Call-ID, CSeq, bytes).
    last_acks: VecDeque<(String, u32, Vec<u8>)>,
    /// Direction we offer in our next SDP.
    pub direction: Direction,
    scheduled: Vec<(Instant, Scheduled)>,
    n: u64,
    sdp_version: u32,
    /// Final statuses of our initial INVITEs, in order.
    pub invite_finals: Vec<u16>,
    /// The SDP received last (offer or answer), for checks.
    pub last_remote_sdp: Option<Sdp>,
    pub byes_received: u32,
    /// URI parameters of its Contact (`;transport=tcp`: tapir sends it in-dialog requests
    /// over TCP; the simulated network carries them all the same).
    pub contact_params: &'static str,
    pub acks_received: u32,
    /// Final responses to our requests, (method, status), kept even without `keep_log`.
    pub finals: Vec<(Method, u16)>,
    /// Whether 2xx responses to our INVITEs are acknowledged (false: a broken UA).
    pub send_acks: bool,
    timeouts: usize,
}

pub fn sdp_body(rtp: SocketAddr, dir: Direction, version: u32) -> Vec<u8> {
    format!(
        "v=0\r\n\
         o=- 4711 {version} IN IP4 {ip}\r\n\
         s=-\r\n\
         c=IN IP4 {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a={dir}\r\n",
        ip = rtp.ip(),
        port = rtp.port(),
        dir = dir.as_str()
    )
    .into_bytes()
}

/// The answer's direction for an offered one (RFC 3264 §6.1).
pub fn answer_direction(offer: Direction) -> Direction {
    match offer {
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        Direction::Inactive => Direction::Inactive,
        Direction::SendRecv => Direction::SendRecv,
    }
}

/// (connection address, port, direction) of the first audio stream of an SDP body.
pub fn sdp_summary(body: &[u8]) -> (SocketAddr, Direction) {
    let s = Sdp::parse(body).expect("valid SDP");
    let i = s.audio_index().expect("an audio stream");
    let ip = s.connection(i).expect("a connection address");
    (SocketAddr::new(ip, s.media[i].port), s.direction(i))
}

fn uri_addr(uri: &Uri) -> Option<SocketAddr> {
    let s = uri.sip()?;
    Some(SocketAddr::new(s.host.ip()?, s.port.unwrap_or(5060)))
}

fn strip_tag(na: &NameAddr) -> NameAddr {
    let mut n = na.clone();
    n.params.remove("tag");
    n
}

impl Ua {
    pub fn new(name: &'static str, sip: &str, rtp: &str, timers: Timers) -> Self {
        Self {
            name,
            addr: addr(sip),
            rtp: addr(rtp),
            tx: TransactionLayer::new(timers),
            answer: Answer::Accept {
                ring: Duration::from_secs(1),
            },
            in_dialog_delay: Duration::ZERO,
            seen: Vec::new(),
            keep_log: true,
            parse_errors: 0,
            dialog: None,
            confirmed: false,
            next_hop: addr(TAPIR),
            invite: None,
            incoming: None,
            last_acks: VecDeque::new(),
            direction: Direction::SendRecv,
            scheduled: Vec::new(),
            n: 0,
            sdp_version: 1,
            invite_finals: Vec::new(),
            last_remote_sdp: None,
            byes_received: 0,
            acks_received: 0,
            finals: Vec::new(),
            send_acks: true,
            timeouts: 0,
            contact_params: "",
        }
    }

    fn id(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{}{what}{}", self.name, self.n)
    }

    fn via(&mut self) -> String {
        let b = self.id("b");
        format!("SIP/2.0/UDP {};branch=z9hG4bK{b};rport", self.addr)
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}{}>", self.name, self.addr, self.contact_params)
    }

    fn our_sdp(&mut self, dir: Direction) -> Vec<u8> {
        self.sdp_version += 1;
        sdp_body(self.rtp, dir, self.sdp_version)
    }

    fn log(&mut self, s: Seen) {
        if self.keep_log {
            self.seen.push(s);
        }
    }

    /// Forgets the state of the last call (the transaction layer keeps running).
    pub fn reset_call(&mut self) {
        self.dialog = None;
        self.confirmed = false;
        self.invite = None;
        self.incoming = None;
        // Responses already scheduled still go out: their transactions must end.
        self.direction = Direction::SendRecv;
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let s = self.scheduled.iter().map(|(t, _)| *t).min();
        [self.tx.poll_timeout(), s].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        let mut i = 0;
        while i < self.scheduled.len() {
            if self.scheduled[i].0 <= now {
                let (_, Scheduled::Respond(key, resp)) = self.scheduled.remove(i);
                if resp.status >= 200 && self.incoming.as_ref().is_some_and(|(k, _)| *k == key) {
                    self.incoming = None;
                    if resp.status < 300 {
                        self.confirmed = true;
                    } else {
                        self.dialog = None;
                    }
                }
                self.tx.respond(now, &key, resp);
            } else {
                i += 1;
            }
        }
    }

    pub fn handle_datagram(&mut self, now: Instant, data: &[u8], from: SocketAddr) {
        match sip::parse(data, true) {
            Ok(m) => self.tx.handle_message(
                now,
                m,
                Peer {
                    addr: from,
                    transport: Transport::Udp,
                },
            ),
            Err(_) => self.parse_errors += 1,
        }
    }

    /// Drains the transaction layer: transmissions out, events to the core.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(Peer, Vec<u8>)> {
        loop {
            match self.tx.poll_output()? {
                TxOutput::Transmit { to, data } => return Some((to, data)),
                TxOutput::Event(e) => self.on_event(now, e),
            }
        }
    }

    fn dialog_peer(&self) -> Peer {
        let a = self
            .dialog
            .as_ref()
            .and_then(|d| uri_addr(&d.remote_target))
            .unwrap_or(self.next_hop);
        Peer {
            addr: a,
            transport: Transport::Udp,
        }
    }

    fn in_our_dialog(&self, r: &Request) -> bool {
        self.dialog.as_ref().is_some_and(|d| {
            d.call_id == r.call_id() && r.to_tag().as_deref() == Some(d.local_tag.as_str())
        })
    }

    fn reply(&self, req: &Request, status: u16, reason: &str) -> Response {
        let mut r = req.response(status, reason);
        if req.to_tag().is_none() && status > 100 {
            if let (Some(d), Some(mut to)) = (&self.dialog, r.to()) {
                to.params.set("tag", Some(d.local_tag.clone()));
                r.headers.set("To", to.to_string());
            } else if let Some(mut to) = r.to() {
                to.params.set("tag", Some(format!("{}-x", self.name)));
                r.headers.set("To", to.to_string());
            }
        }
        if req.method == Method::Invite && (101..300).contains(&status) {
            r.headers.push("Contact", self.contact());
        }
        r
    }

    fn with_sdp(r: &mut Response, body: Vec<u8>) {
        r.headers.push("Content-Type", "application/sdp");
        r.body = body;
    }

    // ---- actions -------------------------------------------------------------------------

    /// Sends an INVITE for `user` to tapir; `sdp` false sends a delayed offer. `tweak` may
    /// change the request before it goes out.
    pub fn invite_with(
        &mut self,
        now: Instant,
        user: &str,
        sdp: bool,
        tweak: impl FnOnce(&mut Request),
    ) -> Request {
        self.reset_call();
        let uri = Uri::parse(&format!("sip:{user}@{TAPIR}")).expect("uri");
        let mut r = Request::new(Method::Invite, uri);
        let via = self.via();
        let tag = self.id("t");
        let call_id = format!("{}@{}", self.id("c"), self.addr.ip());
        r.headers.push("Via", via);
        r.headers.push("Max-Forwards", "70");
        r.headers.push(
            "From",
            format!(
                "\"{}\" <sip:{}@{}>;tag={tag}",
                self.name,
                self.name,
                self.addr.ip()
            ),
        );
        r.headers
            .push("To", format!("<sip:{user}@{}>", addr(TAPIR).ip()));
        r.headers.push("Call-ID", call_id.clone());
        r.headers.push("CSeq", "1 INVITE");
        r.headers.push("Contact", self.contact());
        r.headers.push("X-Tapir-Agent", "4711");
        if sdp {
            r.headers.push("Content-Type", "application/sdp");
            r.body = self.our_sdp(Direction::SendRecv);
        }
        tweak(&mut r);
        let from = r.from().expect("From");
        let to = r.to().expect("To");
        self.dialog = Some(Dialog {
            call_id,
            local_tag: tag,
            remote_tag: None,
            local_uri: strip_tag(&from),
            remote_uri: strip_tag(&to),
            remote_target: r.uri.clone(),
            route_set: Vec::new(),
            local_cseq: 1,
            remote_cseq: None,
        });
        self.next_hop = addr(TAPIR);
        let key = self.tx.send_request(now, r.clone(), udp(TAPIR));
        self.invite = Some((key, r.clone()));
        r
    }

    pub fn invite(&mut self, now: Instant, user: &str, sdp: bool) -> Request {
        self.invite_with(now, user, sdp, |_| {})
    }

    pub fn cancel(&mut self, now: Instant) {
        let (key, _) = self.invite.clone().expect("an INVITE to cancel");
        self.tx.cancel(now, &key);
    }

    /// Sends a request inside the dialog (early or confirmed).
    pub fn request(
        &mut self,
        now: Instant,
        method: Method,
        body: Option<(&str, Vec<u8>)>,
    ) -> Request {
        let peer = self.dialog_peer();
        let via = self.via();
        let contact = self.contact();
        let d = self.dialog.as_mut().expect("a dialog");
        let mut r = d.request(method.clone());
        r.headers.push_front("Via", via);
        if method == Method::Invite || method == Method::Update {
            r.headers.push("Contact", contact);
        }
        if let Some((ct, b)) = body {
            r.headers.push("Content-Type", ct);
            r.body = b;
        }
        let key = self.tx.send_request(now, r.clone(), peer);
        if method == Method::Invite {
            self.invite = Some((key, r.clone()));
        }
        if method == Method::Bye {
            self.dialog = None;
            self.confirmed = false;
        }
        r
    }

    pub fn bye(&mut self, now: Instant) -> Request {
        self.request(now, Method::Bye, None)
    }

    /// re-INVITE offering `dir` (hold: sendonly or inactive; resume: sendrecv).
    pub fn reinvite(&mut self, now: Instant, dir: Direction) -> Request {
        self.direction = dir;
        let body = self.our_sdp(dir);
        self.request(now, Method::Invite, Some(("application/sdp", body)))
    }

    // ---- events --------------------------------------------------------------------------

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Request { key, request, .. } => {
                if self.keep_log {
                    self.seen.push(Seen::Request(request.clone()));
                }
                self.on_request(now, key, request);
            }
            Event::Ack { request, .. } => {
                self.acks_received += 1;
                if request.has_sdp() {
                    self.last_remote_sdp = Sdp::parse(&request.body).ok();
                }
                self.log(Seen::Ack(request));
            }
            Event::Response { key, response } => {
                if response.status >= 200 {
                    self.finals.push((key.method().clone(), response.status));
                }
                if self.keep_log {
                    self.seen.push(Seen::Response(response.clone()));
                }
                self.on_response(now, key, response);
            }
            Event::Stray2xx { response, from } => {
                let seq = response.cseq().map(|c| c.seq).unwrap_or(0);
                let ack = self
                    .last_acks
                    .iter()
                    .find(|(cid, s, _)| cid == response.call_id() && *s == seq);
                if let Some((_, _, bytes)) = ack {
                    let msg = sip::parse(bytes, true).expect("our own ACK");
                    self.tx.send_stateless(&msg, from);
                }
                self.log(Seen::Stray2xx(response));
            }
            // The test UAs talk UDP: no connection to fail.
            Event::TransportError { .. } => unreachable!("UDP only"),
            Event::Timeout { key } => {
                // Status 0: the request timed out locally, no response came.
                self.finals.push((key.method().clone(), 0));
                self.timeouts += 1;
                if self.invite.as_ref().is_some_and(|(k, _)| *k == key) {
                    self.invite = None;
                }
                self.log(Seen::Timeout(key.method().clone()));
            }
            Event::Cancelled { invite } => {
                self.log(Seen::Cancelled);
                if let Some((k, req)) = self.incoming.take() {
                    if k == invite {
                        let r = self.reply(&req, 487, "Request Terminated");
                        self.scheduled
                            .retain(|(_, Scheduled::Respond(sk, _))| *sk != invite);
                        self.tx.respond(now, &k, r);
                        self.dialog = None;
                    } else {
                        self.incoming = Some((k, req));
                    }
                }
            }
            Event::AckTimeout { .. } => {
                self.timeouts += 1;
                self.log(Seen::AckTimeout)
            }
        }
    }

    fn on_request(&mut self, now: Instant, key: TxKey, req: Request) {
        let in_dialog = req.to_tag().is_some();
        if in_dialog && !self.in_our_dialog(&req) {
            let r = self.reply(&req, 481, "Call/Transaction Does Not Exist");
            self.tx.respond(now, &key, r);
            return;
        }
        match req.method {
            Method::Invite if !in_dialog => self.on_new_invite(now, key, req),
            Method::Invite => {
                if self.invite.is_some() {
                    // Glare (§14.2): our own re-INVITE is pending.
                    let r = self.reply(&req, 491, "Request Pending");
                    self.tx.respond(now, &key, r);
                    return;
                }
                if let Some(c) = req.contact() {
                    if let Some(d) = &mut self.dialog {
                        d.remote_target = c.uri;
                    }
                }
                let mut r = self.reply(&req, 200, "OK");
                let body = if req.has_sdp() {
                    let (_, dir) = sdp_summary(&req.body);
                    self.last_remote_sdp = Sdp::parse(&req.body).ok();
                    self.our_sdp(answer_direction(dir))
                } else {
                    let d = self.direction;
                    self.our_sdp(d)
                };
                Self::with_sdp(&mut r, body);
                self.respond_in_dialog(now, key, r);
            }
            Method::Bye => {
                self.byes_received += 1;
                let r = self.reply(&req, 200, "OK");
                self.tx.respond(now, &key, r);
                self.dialog = None;
                self.confirmed = false;
            }
            _ => {
                let mut r = self.reply(&req, 200, "OK");
                if req.method == Method::Update && req.has_sdp() {
                    let (_, dir) = sdp_summary(&req.body);
                    self.last_remote_sdp = Sdp::parse(&req.body).ok();
                    let body = self.our_sdp(answer_direction(dir));
                    Self::with_sdp(&mut r, body);
                }
                if in_dialog {
                    self.respond_in_dialog(now, key, r);
                } else {
                    self.tx.respond(now, &key, r);
                }
            }
        }
    }

    /// Answers an in-dialog request now or after `in_dialog_delay`.
    fn respond_in_dialog(&mut self, now: Instant, key: TxKey, r: Response) {
        if self.in_dialog_delay.is_zero() {
            self.tx.respond(now, &key, r);
        } else {
            self.scheduled
                .push((now + self.in_dialog_delay, Scheduled::Respond(key, r)));
        }
    }

    fn on_new_invite(&mut self, now: Instant, key: TxKey, req: Request) {
        self.reset_call();
        let tag = self.id("t");
        let from = req.from().expect("From");
        let to = req.to().expect("To");
        self.dialog = Some(Dialog {
            call_id: req.call_id().to_string(),
            local_tag: tag,
            remote_tag: req.from_tag(),
            local_uri: strip_tag(&to),
            remote_uri: strip_tag(&from),
            remote_target: req.contact().map(|c| c.uri).unwrap_or(from.uri.clone()),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: req.cseq().map(|c| c.seq),
        });
        if req.has_sdp() {
            self.last_remote_sdp = Sdp::parse(&req.body).ok();
        }
        let ringing = self.reply(&req, 180, "Ringing");
        self.tx.respond(now, &key, ringing);
        let fin = match self.answer {
            Answer::Accept { ring } => {
                let mut r = self.reply(&req, 200, "OK");
                let body = if req.has_sdp() {
                    let (_, dir) = sdp_summary(&req.body);
                    self.our_sdp(answer_direction(dir))
                } else {
                    self.our_sdp(Direction::SendRecv)
                };
                Self::with_sdp(&mut r, body);
                Some((ring, r))
            }
            Answer::Reject { ring, status } => Some((ring, self.reply(&req, status, "Busy Here"))),
            Answer::RingForever => None,
        };
        if let Some((ring, r)) = fin {
            self.scheduled
                .push((now + ring, Scheduled::Respond(key.clone(), r)));
        }
        self.incoming = Some((key, req));
    }

    fn on_response(&mut self, _now: Instant, key: TxKey, resp: Response) {
        let Some((ikey, ireq)) = self.invite.clone() else {
            return;
        };
        if ikey != key {
            return;
        }
        let initial = ireq.to_tag().is_none();
        let to_tag = resp.to_tag();
        if resp.status < 200 {
            if let (true, Some(t), Some(d)) = (initial, to_tag, self.dialog.as_mut()) {
                d.remote_tag = Some(t);
                if let Some(c) = resp.contact() {
                    d.remote_target = c.uri;
                }
            }
            return;
        }
        self.invite = None;
        if initial {
            self.invite_finals.push(resp.status);
        }
        if resp.status >= 300 {
            if initial {
                self.dialog = None;
            }
            return;
        }
        if resp.has_sdp() {
            self.last_remote_sdp = Sdp::parse(&resp.body).ok();
        }
        let Some(d) = self.dialog.as_mut() else {
            return;
        };
        if initial {
            d.remote_tag = to_tag;
        }
        if let Some(c) = resp.contact() {
            d.remote_target = c.uri;
        }
        self.confirmed = true;
        if !self.send_acks {
            return;
        }
        // ACK for the 2xx (§13.2.2.4): its own branch, the INVITE's CSeq number; a delayed
        // offer's answer rides in it.
        let seq = ireq.cseq().map(|c| c.seq).unwrap_or(1);
        let mut ack = d.request(Method::Ack);
        ack.headers.set("CSeq", format!("{seq} ACK"));
        let via = self.via();
        ack.headers.push_front("Via", via);
        if ireq.body.is_empty() && resp.has_sdp() {
            let (_, dir) = sdp_summary(&resp.body);
            let body = self.our_sdp(answer_direction(dir));
            ack.headers.push("Content-Type", "application/sdp");
            ack.body = body;
        }
        let peer = self.dialog_peer();
        let msg = Message::Request(ack);
        if self.last_acks.len() == 8 {
            self.last_acks.pop_front();
        }
        self.last_acks
            .push_back((resp.call_id().to_string(), seq, msg.to_bytes()));
        self.tx.send_stateless(&msg, peer);
    }

    // ---- queries -------------------------------------------------------------------------

    /// Requests of `method` the core received (retransmissions absorbed).
    pub fn requests(&self, method: Method) -> Vec<&Request> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Request(r) if r.method == method => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Statuses of responses to `method` the core received.
    pub fn statuses(&self, method: Method) -> Vec<u16> {
        self.responses(method).iter().map(|r| r.status).collect()
    }

    pub fn responses(&self, method: Method) -> Vec<&Response> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Response(r) if r.cseq().is_some_and(|c| c.method == method) => Some(r),
                _ => None,
            })
            .collect()
    }

    pub fn acks(&self) -> Vec<&Request> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Ack(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The last final status for our requests of `method` (0: timed out locally).
    pub fn last_final(&self, method: Method) -> Option<u16> {
        self.finals
            .iter()
            .rev()
            .find(|(m, _)| *m == method)
            .map(|(_, s)| *s)
    }

    /// Local transaction timeouts and unacknowledged 2xx, kept even without `keep_log`.
    pub fn timeouts(&self) -> usize {
        self.timeouts
    }
}

/// What a test world is made of.
pub struct Setup {
    pub seed: u64,
    pub link: Link,
    pub routes: Vec<RouteConfig>,
    pub rtp_ports: (u16, u16),
    pub timers: Timers,
    pub trace: bool,
}

pub fn route(name: &str, target: &str) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        source: Vec::new(),
        source_zone: None,
        user_prefix: None,
        user_pattern: None,
        target: target.into(),
        customer: Side::Caller,
        direction: Some("inbound".into()),
        record: None,
        format: None,
        srtp: Default::default(),
        tls: None,
        external: false,
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            seed: 1,
            link: Link::CLEAN,
            routes: vec![route("trunk", &format!("sip:{CALLEE}"))],
            rtp_ports: (30000, 30099),
            timers: Timers::default(),
            trace: true,
        }
    }
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub net: Net,
    pub tapir: B2bua,
    pub caller: Ua,
    pub callee: Ua,
    pub media: Vec<MediaCommand>,
    pub events: Vec<CallEvent>,
    /// Datagrams addressed to no node.
    pub undeliverable: u64,
    pub initial_free_ports: usize,
}

impl World {
    pub fn new(setup: Setup) -> Self {
        let routes = Routes::compile(&setup.routes, &HashMap::new()).expect("routes");
        let config = Config {
            sip_addrs: vec![addr(TAPIR)],
            media_ips: vec![MEDIA_IP.parse::<IpAddr>().expect("ip")],
            timers: setup.timers,
            rtp_ports: setup.rtp_ports,
            id_seed: setup.seed,
            user_agent: "tapir-test".into(),
        };
        let tapir = B2bua::new(config, routes);
        let initial_free_ports = tapir.free_ports();
        let mut net = Net::new(setup.seed, setup.link);
        if !setup.trace {
            net.log = None;
        }
        let mut caller = Ua::new("alice", CALLER, CALLER_RTP, setup.timers);
        let mut callee = Ua::new("bob", CALLEE, CALLEE_RTP, setup.timers);
        caller.keep_log = setup.trace;
        callee.keep_log = setup.trace;
        let start = Instant::now();
        Self {
            start,
            now: start,
            net,
            tapir,
            caller,
            callee,
            media: Vec::new(),
            events: Vec::new(),
            undeliverable: 0,
            initial_free_ports,
        }
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves every node's pending output onto the network (or into the collected commands
    /// and events).
    pub fn pump(&mut self) {
        let now = self.now;
        let tapir = addr(TAPIR);
        loop {
            let mut progressed = false;
            while let Some(o) = self.tapir.poll_output() {
                progressed = true;
                match o {
                    Output::Transmit { to, data } => self.net.send(now, tapir, to.addr, data),
                    Output::Media(m) => self.media.push(m),
                    Output::Call(e) => self.events.push(e),
                }
            }
            while let Some((to, data)) = self.caller.poll_transmit(now) {
                progressed = true;
                self.net.send(now, self.caller.addr, to.addr, data);
            }
            while let Some((to, data)) = self.callee.poll_transmit(now) {
                progressed = true;
                self.net.send(now, self.callee.addr, to.addr, data);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Injects raw bytes as if `from` had sent them to `to`.
    pub fn inject(&mut self, from: &str, to: &str, data: &[u8]) {
        self.net.send(self.now, addr(from), addr(to), data.to_vec());
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        [
            self.net.next_delivery(),
            self.tapir.poll_timeout(),
            self.caller.poll_timeout(),
            self.callee.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Processes everything due at `self.now`.
    fn run_now(&mut self) {
        let now = self.now;
        let tapir = addr(TAPIR);
        self.pump();
        while let Some(d) = self.net.pop_due(now) {
            if d.to == tapir {
                let from = Peer {
                    addr: d.from,
                    transport: Transport::Udp,
                };
                self.tapir.handle_message(now, &d.data, from);
            } else if d.to == self.caller.addr {
                self.caller.handle_datagram(now, &d.data, d.from);
            } else if d.to == self.callee.addr {
                self.callee.handle_datagram(now, &d.data, d.from);
            } else {
                self.undeliverable += 1;
            }
            self.pump();
        }
        if self.tapir.poll_timeout().is_some_and(|t| t <= now) {
            self.tapir.handle_timeout(now);
        }
        if self.caller.poll_timeout().is_some_and(|t| t <= now) {
            self.caller.handle_timeout(now);
        }
        if self.callee.poll_timeout().is_some_and(|t| t <= now) {
            self.callee.handle_timeout(now);
        }
        self.pump();
    }

    /// Advances to the next thing that happens, no further than `limit`; false when nothing
    /// is scheduled before it.
    fn step(&mut self, limit: Instant) -> bool {
        self.pump();
        match self.next_wakeup() {
            Some(t) if t <= limit => {
                self.now = self.now.max(t);
                self.run_now();
                true
            }
            _ => false,
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
        self.run_now();
    }

    /// Runs until `done` holds (checked after each instant), at most `max` of virtual time.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let limit = self.now + max;
        self.pump();
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    /// Runs until nothing is scheduled anywhere (all timers ran out, the network is empty);
    /// panics if that takes more than ten virtual minutes.
    pub fn settle(&mut self) {
        let limit = self.now + Duration::from_secs(600);
        while self.step(limit) {}
        assert!(
            self.next_wakeup().is_none(),
            "still busy after 10 virtual minutes: {} transactions in tapir",
            self.tapir.transactions()
        );
    }

    /// Asserts that nothing is left: no call, all ports free, no transaction anywhere.
    pub fn assert_clean(&mut self) {
        self.settle();
        assert_eq!(self.tapir.active_calls(), 0, "calls left in tapir");
        assert_eq!(
            self.tapir.free_ports(),
            self.initial_free_ports,
            "RTP ports leaked"
        );
        assert_eq!(self.tapir.transactions(), 0, "transactions left in tapir");
        assert_eq!(self.caller.tx.len(), 0, "transactions left in the caller");
        assert_eq!(self.callee.tx.len(), 0, "transactions left in the callee");
        assert_eq!(self.caller.parse_errors, 0, "tapir sent the caller garbage");
        assert_eq!(self.callee.parse_errors, 0, "tapir sent the callee garbage");
    }

    /// The network log, one line per datagram, for diagnosing a failing seed.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for p in self.net.log.iter().flatten() {
            let what = match p.message() {
                Some(Message::Request(r)) => format!(
                    "{} {} cseq={} to-tag={:?}",
                    r.method,
                    r.call_id(),
                    r.headers.get("CSeq").unwrap_or(""),
                    r.to_tag()
                ),
                Some(Message::Response(r)) => format!(
                    "{} {} cseq={}",
                    r.status,
                    r.call_id(),
                    r.headers.get("CSeq").unwrap_or("")
                ),
                None => format!("<{} bytes>", p.data.len()),
            };
            let fate = ["lost", "", "x2"][usize::from(p.copies.min(2))];
            out.push_str(&format!(
                "{:>9.3} {} -> {} {what} {fate}\n",
                (p.at - self.start).as_secs_f64(),
                p.from,
                p.to
            ));
        }
        out
    }

    // ---- what tapir reported ---------------------------------------------------------------

    /// The ports of the only `Open` so far: (call, a_port, b_port).
    pub fn opened(&self) -> Vec<(u64, u16, u16)> {
        self.media
            .iter()
            .filter_map(|m| match m {
                MediaCommand::Open {
                    call,
                    a_port,
                    b_port,
                    ..
                } => Some((*call, *a_port, *b_port)),
                _ => None,
            })
            .collect()
    }

    pub fn updates(&self, leg: b2bua::Leg) -> Vec<(Option<SocketAddr>, bool)> {
        self.media
            .iter()
            .filter_map(|m| match m {
                MediaCommand::Update {
                    leg: l,
                    remote,
                    sends,
                    ..
                } if *l == leg => Some((*remote, *sends)),
                _ => None,
            })
            .collect()
    }

    pub fn closes(&self) -> usize {
        self.media
            .iter()
            .filter(|m| matches!(m, MediaCommand::Close { .. }))
            .count()
    }

    pub fn started(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, CallEvent::Started { .. }))
            .count()
    }

    pub fn answered(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, CallEvent::Answered { .. }))
            .count()
    }

    pub fn outcomes(&self) -> Vec<b2bua::Outcome> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Ended { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    /// The caller dials 1000 with SDP; see [`World::establish`].
    pub fn call(&mut self) -> (u16, u16) {
        self.caller.invite(self.now, "1000", true);
        self.establish()
    }

    /// Runs until the call the caller dialled is answered and acknowledged on both legs;
    /// returns the call's (a_port, b_port).
    pub fn establish(&mut self) -> (u16, u16) {
        let ok = self.run_until(Duration::from_secs(60), |w| {
            w.caller.confirmed && w.callee.confirmed && w.callee.acks_received > 0
        });
        assert!(ok, "call was not established");
        let (_, a, b) = *self.opened().last().expect("media opened");
        (a, b)
    }
}
