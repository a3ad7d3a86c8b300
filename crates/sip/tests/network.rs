//! Two transaction layers joined by an emulated UDP network that loses, duplicates and reorders
//! datagrams. Time is virtual: the loop jumps to the earliest of the two layers' timeouts and
//! the next delivery, so a 30-second retransmission schedule runs in microseconds and every
//! run with the same seed is identical.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip::message::HeaderAccess;
use sip::transaction::{Event, Output, Peer, Timers, TransactionLayer, TxKey};
use sip::{Message, Method, Request, Response, Transport};

/// SplitMix64: tiny, seedable and good enough to decide the fate of a datagram.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Datagram {
    at: Instant,
    /// Tie-breaker so equal delivery times keep a deterministic order.
    seq: u64,
    to: SocketAddr,
    from: Peer,
    data: Vec<u8>,
}

struct Net {
    rng: Rng,
    loss_percent: u64,
    dup_percent: u64,
    in_flight: Vec<Datagram>,
    seq: u64,
    sent: u64,
    lost: u64,
}

impl Net {
    fn new(seed: u64, loss_percent: u64, dup_percent: u64) -> Self {
        Self {
            rng: Rng(seed),
            loss_percent,
            dup_percent,
            in_flight: Vec::new(),
            seq: 0,
            sent: 0,
            lost: 0,
        }
    }

    fn send(&mut self, now: Instant, from: SocketAddr, to: Peer, data: Vec<u8>) {
        self.sent += 1;
        let copies = if self.rng.chance(self.dup_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.chance(self.loss_percent) {
                self.lost += 1;
                continue;
            }
            // 5–150 ms of jitter: later datagrams often overtake earlier ones.
            let delay = Duration::from_millis(self.rng.between(5, 150));
            self.seq += 1;
            self.in_flight.push(Datagram {
                at: now + delay,
                seq: self.seq,
                to: to.addr,
                from: Peer {
                    addr: from,
                    transport: Transport::Udp,
                },
                data: data.clone(),
            });
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.iter().map(|d| d.at).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<Datagram> {
        let (mut due, rest): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|d| d.at <= now);
        self.in_flight = rest;
        due.sort_by_key(|d| (d.at, d.seq));
        due
    }
}

const ALICE: &str = "192.0.2.10:5060";
const BOB: &str = "192.0.2.20:5060";

fn udp(addr: &str) -> Peer {
    Peer {
        addr: addr.parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>) -> Request {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let text = format!(
        "{method} sip:bob@192.0.2.20 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@192.0.2.10>;tag=alice\r\n\
         To: <sip:bob@192.0.2.20>{to_tag}\r\n\
         Call-ID: net-call\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@192.0.2.10>\r\n\r\n"
    );
    match sip::parse(text.as_bytes(), true).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn reply(req: &Request, status: u16, reason: &str) -> Response {
    let mut r = req.response(status, reason);
    if status > 100 && req.to_tag().is_none() {
        let to = format!("{};tag=bob", r.headers.get("To").unwrap());
        r.headers.set("To", to);
    }
    r.headers.push("Contact", "<sip:bob@192.0.2.20>");
    r
}

/// What the calling side wants to do, and what it saw.
#[derive(Default)]
struct Caller {
    invite: Option<TxKey>,
    bye: Option<TxKey>,
    options: Option<TxKey>,
    invite_ok: u32,
    acks_sent: u32,
    bye_ok: u32,
    options_ok: u32,
    timeouts: u32,
}

/// The answering side: rings, answers 200, and accepts BYE and OPTIONS.
#[derive(Default)]
struct Callee {
    invites: u32,
    acks: u32,
    byes: u32,
    options: u32,
    ack_timeouts: u32,
}

struct World {
    net: Net,
    now: Instant,
    alice: TransactionLayer,
    bob: TransactionLayer,
    caller: Caller,
    callee: Callee,
}

impl World {
    fn new(seed: u64, loss: u64, dup: u64) -> Self {
        Self {
            net: Net::new(seed, loss, dup),
            now: Instant::now(),
            alice: TransactionLayer::new(Timers::default()),
            bob: TransactionLayer::new(Timers::default()),
            caller: Caller::default(),
            callee: Callee::default(),
        }
    }

    fn ack(&mut self, ok: &Response) {
        let mut ack = request(
            "ACK",
            &format!("z9hG4bKack{}", self.caller.acks_sent),
            1,
            None,
        );
        ack.headers
            .set("To", ok.headers.get("To").unwrap().to_string());
        self.caller.acks_sent += 1;
        self.alice.send_stateless(&Message::Request(ack), udp(BOB));
    }

    /// Drains both layers: hands transmissions to the network and events to the two UAs.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(o) = self.alice.poll_output() {
                progressed = true;
                match o {
                    Output::Transmit { to, data } => {
                        self.net.send(self.now, udp(ALICE).addr, to, data)
                    }
                    Output::Event(e) => self.caller_event(e),
                }
            }
            while let Some(o) = self.bob.poll_output() {
                progressed = true;
                match o {
                    Output::Transmit { to, data } => {
                        self.net.send(self.now, udp(BOB).addr, to, data)
                    }
                    Output::Event(e) => self.callee_event(e),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn caller_event(&mut self, e: Event) {
        match e {
            Event::Response { key, response } if response.status >= 200 => {
                if Some(&key) == self.caller.invite.as_ref() {
                    assert_eq!(response.status, 200);
                    self.caller.invite_ok += 1;
                    self.ack(&response);
                    let bye = request("BYE", "z9hG4bKbye", 2, Some("bob"));
                    self.caller.bye = Some(self.alice.send_request(self.now, bye, udp(BOB)));
                } else if Some(&key) == self.caller.bye.as_ref() {
                    self.caller.bye_ok += 1;
                } else if Some(&key) == self.caller.options.as_ref() {
                    self.caller.options_ok += 1;
                }
            }
            Event::Response { .. } => {}
            // The 2xx is retransmitted because our ACK was lost: ACK again (§13.2.2.4).
            Event::Stray2xx { response, .. } => self.ack(&response),
            Event::Timeout { .. } => self.caller.timeouts += 1,
            other => panic!("caller got {other:?}"),
        }
    }

    fn callee_event(&mut self, e: Event) {
        match e {
            Event::Request { key, request, .. } => match request.method {
                Method::Invite => {
                    self.callee.invites += 1;
                    self.bob
                        .respond(self.now, &key, reply(&request, 180, "Ringing"));
                    self.bob.respond(self.now, &key, reply(&request, 200, "OK"));
                }
                Method::Bye => {
                    self.callee.byes += 1;
                    self.bob.respond(self.now, &key, reply(&request, 200, "OK"));
                }
                Method::Options => {
                    self.callee.options += 1;
                    self.bob.respond(self.now, &key, reply(&request, 200, "OK"));
                }
                other => panic!("callee got {other}"),
            },
            Event::Ack { .. } => self.callee.acks += 1,
            Event::AckTimeout { .. } => self.callee.ack_timeouts += 1,
            other => panic!("callee got {other:?}"),
        }
    }

    /// Runs until nothing is scheduled anywhere; returns false if it had to be cut short.
    fn run(&mut self) -> bool {
        self.pump();
        let deadline = self.now + Duration::from_secs(600);
        for _ in 0..100_000 {
            let next = [
                self.alice.poll_timeout(),
                self.bob.poll_timeout(),
                self.net.next_delivery(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return true;
            };
            if next > deadline {
                return false;
            }
            self.now = self.now.max(next);
            for d in self.net.take_due(self.now) {
                let msg = sip::parse(&d.data, true).expect("only valid messages on the wire");
                if d.to == udp(ALICE).addr {
                    self.alice.handle_message(self.now, msg, d.from);
                } else {
                    self.bob.handle_message(self.now, msg, d.from);
                }
                self.pump();
            }
            self.alice.handle_timeout(self.now);
            self.bob.handle_timeout(self.now);
            self.pump();
        }
        false
    }
}

#[test]
fn call_setup_and_teardown_survive_30_percent_loss_duplication_and_reordering() {
    let mut total_lost = 0;
    for seed in 1..=40 {
        let mut w = World::new(seed, 30, 10);
        let invite = request("INVITE", "z9hG4bKinv", 1, None);
        w.caller.invite = Some(w.alice.send_request(w.now, invite, udp(BOB)));
        assert!(w.run(), "seed {seed}: did not settle");
        let (c, s) = (&w.caller, &w.callee);
        assert_eq!(c.timeouts, 0, "seed {seed}");
        assert_eq!(
            s.invites, 1,
            "seed {seed}: retransmissions must not look like new calls"
        );
        assert_eq!(c.invite_ok, 1, "seed {seed}: the 2xx reaches the UAC once");
        assert!(c.acks_sent >= 1);
        assert_eq!(
            s.acks, 1,
            "seed {seed}: the 2xx is acknowledged exactly once"
        );
        assert_eq!(s.ack_timeouts, 0, "seed {seed}");
        assert_eq!(s.byes, 1, "seed {seed}");
        assert_eq!(c.bye_ok, 1, "seed {seed}");
        // Every transaction ended on its own timers: nothing leaks.
        assert_eq!(w.alice.len(), 0, "seed {seed}");
        assert_eq!(w.bob.len(), 0, "seed {seed}");
        total_lost += w.net.lost;
    }
    assert!(total_lost > 100, "the network really lost datagrams");
}

#[test]
fn non_invite_completes_despite_loss() {
    for seed in 100..=140 {
        let mut w = World::new(seed, 30, 10);
        let options = request("OPTIONS", "z9hG4bKopt", 1, None);
        w.caller.options = Some(w.alice.send_request(w.now, options, udp(BOB)));
        assert!(w.run(), "seed {seed}");
        assert_eq!(w.caller.timeouts, 0, "seed {seed}");
        assert_eq!(w.callee.options, 1, "seed {seed}");
        assert_eq!(w.caller.options_ok, 1, "seed {seed}");
        assert_eq!(w.alice.len() + w.bob.len(), 0, "seed {seed}");
    }
}

#[test]
fn a_dead_network_ends_in_timeouts_not_in_leaks() {
    let mut w = World::new(7, 100, 0);
    let invite = request("INVITE", "z9hG4bKdead", 1, None);
    w.caller.invite = Some(w.alice.send_request(w.now, invite, udp(BOB)));
    let start = w.now;
    assert!(w.run());
    assert_eq!(w.caller.timeouts, 1);
    assert_eq!(w.callee.invites, 0);
    assert_eq!(w.net.sent, 7, "Timer A: seven copies of the INVITE");
    assert_eq!(w.now - start, Duration::from_secs(32));
    assert_eq!(w.alice.len(), 0);
}
