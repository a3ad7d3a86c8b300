//! The B2BUA core of tapir, sans-IO.
//!
//! One [`B2bua`] owns the SIP transaction layer and every call. A call is two legs: leg A
//! faces the party that sent the INVITE (tapir is its UAS), leg B faces the route's target
//! (tapir is its UAC). Each leg has its own Call-ID, tags, CSeq space and Via; SDP on both legs
//! is rewritten so that media flows through a port pair tapir owns on each side.
//!
//! Drive it like the transaction layer: feed datagrams/frames with
//! [`B2bua::handle_message`], timeouts with [`B2bua::handle_timeout`], then drain
//! [`B2bua::poll_output`]. Outputs are SIP bytes to send, media commands for the relay in the
//! IO layer, and call events for logs, metrics and the recorder.
//!
//! Layout: [`routing`] (routes and zones), [`ports`] (the RTP port pool), and the call state
//! machine in this file. The features a real phone system needs live beside it: `auth`
//! (challenges passed through, retries continuing leg B), `transfer` (REFER, Replaces, the
//! contact identity of transferred calls), `timers` (RFC 4028 session timers, media
//! supervision) and `extra` (their per-call state).

pub mod announce;
mod auth;
mod extra;
pub mod feature;
pub mod flood;
pub mod ports;
pub mod registrar;
pub mod routing;
pub mod secure;
mod timers;
mod transfer;
mod ttl_map;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use sdp::{RtpMap, Sdp};
use sip::dialog::Dialog;
use sip::transaction::{Event, Output as TxOutput, Peer, Timers, TransactionLayer, TxKey};
use sip::{HeaderAccess, Message, Method, NameAddr, Request, Response, Transport, Via};
use thiserror::Error;

pub use ports::PortPool;
pub use registrar::{Binding, Bindings, Registrar, RegistrarConfig};
pub use routing::{Route, RouteConfig, RouteTls, Routes, Side};
pub use secure::{KeySource, LegCrypto, RouteSrtp, SrtpMode, Undecryptable};

#[derive(Debug, Error)]
pub enum B2buaError {
    #[error("configuration: {0}")]
    Config(String),
}

/// Identifies a call inside one tapir process.
pub type CallId = u64;

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

/// Static settings of the B2BUA core.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses written in Via and Contact, one per address family in use; the one of the
    /// peer's family is used.
    pub sip_addrs: Vec<SocketAddr>,
    /// Addresses written into SDP for anchored media, chosen by the family of the leg.
    pub media_ips: Vec<IpAddr>,
    pub timers: Timers,
    /// First and last RTP port (even ports are RTP, the next odd one RTCP).
    pub rtp_ports: (u16, u16),
    /// Seed for Call-IDs, tags and branches; the binary passes something random so two nodes
    /// never collide, tests pass a constant so runs repeat.
    pub id_seed: u64,
    /// Text of the `Server`/`User-Agent` header.
    pub user_agent: String,
}

/// How a call ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered and later hung up by either side.
    Completed,
    /// The caller cancelled before answer.
    Cancelled,
    /// The far side rejected with this status.
    Rejected(u16),
    /// No response from the far side: the INVITE timed out, or an answered call was ended
    /// by tapir because a party vanished (failed or missing session refresh, no media).
    Timeout,
    /// tapir refused the call itself (no route, no ports, bad SDP, draining).
    Refused(u16),
    /// Leg B's INVITE could not be delivered: the TCP or TLS connection to the target could
    /// not be opened or its handshake failed (the caller gets 503).
    Unreachable,
}

/// Why a client transaction ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Timer B or F.
    Timeout,
    /// The connection to the peer could not be opened.
    Transport,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected(_) => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// What the relay in the IO layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind the RTP/RTCP pairs for a new call: `a_port` faces leg A, `b_port` faces leg B.
    Open {
        call: CallId,
        a_port: u16,
        b_port: u16,
        /// Which leg carries the customer (recorded on channel 1).
        customer: Leg,
    },
    /// The remote media of one leg, as its latest SDP says. `remote` is where that party
    /// said it receives; symmetric latching in the relay may override it.
    Update {
        call: CallId,
        leg: Leg,
        remote: Option<SocketAddr>,
        /// Whether that party sends media (not on hold).
        sends: bool,
        codecs: Vec<RtpMap>,
    },
    Close {
        call: CallId,
    },
    /// How the relay treats one leg's media from now on: plain, SRTP with these keys, or
    /// encrypted with keys tapir does not have (see the `secure` module). Sent after `Open`,
    /// and again whenever a leg's keys change.
    Crypto {
        call: CallId,
        leg: Leg,
        crypto: LegCrypto,
    },
    /// Play a prompt to one leg before the call is connected, then report
    /// [`B2bua::announcement_done`]. While it plays nothing is relayed between the legs.
    Announce {
        call: CallId,
        leg: Leg,
        prompt: String,
        codec: announce::PromptCodec,
        /// Listen for the customer's 1 (accept) or 2 (refuse) after the prompt.
        collect_consent: bool,
    },
}

/// Things that happened to calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Started {
        call: CallId,
        route: String,
        direction: Option<String>,
        a_call_id: String,
        b_call_id: String,
        from: String,
        to: String,
        customer: Leg,
        /// The route's recording mode and format, as configured (see [`RouteConfig`]).
        record: Option<String>,
        format: Option<String>,
        /// `X-Tapir-*` headers of the caller's INVITE (policy facts and directives).
        x_headers: Vec<(String, String)>,
        /// Where the caller's INVITE came from (for zone-based classification).
        source: SocketAddr,
        /// The registered account the call goes to, when leg B is a phone registered through
        /// tapir (whichever of its URIs the PBX dialled): the station.
        station: Option<String>,
    },
    Answered {
        call: CallId,
    },
    /// The call's media is encrypted with keys tapir does not have and is relayed without
    /// being recorded (`undecryptable = "relay"`). Emitted just before `Started`.
    Encrypted {
        call: CallId,
        reason: String,
    },
    /// An in-dialog request crossed tapir (re-INVITE, UPDATE, INFO...): its `X-Tapir-*`
    /// headers carry flow directives, an INFO body may carry DTMF.
    InDialog {
        call: CallId,
        leg: Leg,
        method: String,
        /// `X-Tapir-*` headers, name and value.
        x_headers: Vec<(String, String)>,
        content_type: String,
        body: Vec<u8>,
    },
    Ended {
        call: CallId,
        outcome: Outcome,
    },
    /// A REFER crossed `call` and was pointed at tapir: the transferee's INVITE will continue
    /// the contact (see [`CallEvent::Transferred`]).
    TransferRequested {
        call: CallId,
        /// The Refer-To carries Replaces: the referrer consulted the target first (attended).
        attended: bool,
        /// A route marked `external` would carry the target's user.
        external: bool,
        /// The Refer-To's user part (a number, for the emergency list).
        target: String,
    },
    /// The REFER relayed on `call` failed: refused or unanswered (`status` is its final
    /// response, or 408/503 when none came), or the transferee's NOTIFY reported a final
    /// status of 300 or more for the transfer. No transferred call will follow it.
    TransferFailed {
        call: CallId,
        status: u16,
    },
    /// The new call `call` continues the contact of call `previous`: the transferee's INVITE
    /// after a REFER tapir relayed, or an INVITE with Replaces naming a dialog of a call
    /// through tapir (see the `transfer` module). Emitted just before `call`'s `Started`.
    Transferred {
        call: CallId,
        previous: CallId,
        /// First call of the transfer chain: the contact identity.
        contact: CallId,
        /// Label given to the contact with [`B2bua::set_contact_label`], if any.
        label: Option<String>,
        /// The call whose dialog the INVITE replaces (attended transfer), if tapir holds it.
        replaces: Option<CallId>,
    },
}

// Call events are a few per call against many transmits, but they pass through a queue that
// is drained at once: the size costs a little memory in that queue, a box an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    Transmit { to: Peer, data: Vec<u8> },
    Media(MediaCommand),
    Call(CallEvent),
}

/// Counters the binary exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub parse_errors: u64,
    /// CRLF keep-alives received (RFC 5626): not SIP messages, not parse errors.
    pub keepalives: u64,
    pub bad_requests_answered: u64,
    /// Requests refused or dropped by the per-source rate limit.
    pub flood_limited: u64,
    pub stray_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// INVITE sent on leg B, no final response yet.
    Proceeding,
    /// Caller cancelled; waiting for leg B's final response.
    Cancelling,
    /// 2xx relayed; waiting for the caller's ACK (only when leg B's ACK depends on it).
    Answered,
    Confirmed,
    /// BYE sent on one or both legs; the call lingers until they are answered.
    Ending,
}

struct LegState {
    dialog: Dialog,
    /// Where this leg's SIP goes: the caller's source for A (NAT-friendly), the route
    /// target for B.
    peer: Peer,
    /// Our RTP port facing this leg.
    port: u16,
}

/// A server transaction on one leg that waits for the answer coming from the other leg.
struct Relay {
    call: CallId,
    /// Leg the request came in on.
    from_leg: Leg,
    server: TxKey,
    request: Request,
}

struct Call {
    id: CallId,
    state: CallState,
    a: LegState,
    b: LegState,
    customer: Leg,
    /// Server transaction of the caller's initial INVITE, until it has a final response.
    a_invite: Option<(TxKey, Request)>,
    b_invite: Option<TxKey>,
    /// Leg B's 2xx whose ACK waits for the caller's ACK (delayed offer: the answer is in it).
    b_ack_pending: Option<Response>,
    /// CSeq and SDP of leg B's delayed-offer ACK, repeated if the 2xx is retransmitted (the
    /// first ACK may have been lost, and an ACK without the answer would leave leg B without
    /// one).
    b_ack_body: Option<(u32, (Vec<u8>, String))>,
    /// BYE transactions still open; the call is forgotten when none is left.
    byes_pending: u32,
    answered: bool,
    outcome: Option<Outcome>,
    media_open: bool,
    /// Transfer, session-timer and hold state (see the `extra` module).
    x: extra::CallExtra,
    /// SRTP on each leg (see the `secure` module).
    srtp: secure::CallSrtp,
    ann: announce::CallAnnounce,
}

impl Call {
    fn leg(&self, l: Leg) -> &LegState {
        match l {
            Leg::A => &self.a,
            Leg::B => &self.b,
        }
    }
    fn leg_mut(&mut self, l: Leg) -> &mut LegState {
        match l {
            Leg::A => &mut self.a,
            Leg::B => &mut self.b,
        }
    }
}

/// Deterministic unique identifiers: a per-process seed and a counter.
struct IdGen {
    seed: u64,
    n: u64,
}

impl IdGen {
    fn next(&mut self) -> String {
        self.n += 1;
        // splitmix64 scrambles the counter so ids do not look sequential on the wire.
        let mut z = self
            .seed
            .wrapping_add(self.n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
    }
}

/// Dialogs of calls tapir has forgotten, (Call-ID, our tag), kept for a while so that a 2xx
/// that arrives for one of them (answered after Timer C, a re-INVITE answered after the call
/// ended) is acknowledged and hung up. Only these: a 2xx naming any other dialog is dropped,
/// or a forged 2xx from a spoofed address would make tapir send an ACK and a BYE with all its
/// retransmissions to that address.
struct Forgotten(ttl_map::TtlMap<(String, String), ()>);

impl Default for Forgotten {
    fn default() -> Self {
        // Longer than a late 2xx takes: Timer B/F of a relayed request plus 2xx
        // retransmissions.
        Self(ttl_map::TtlMap::new(
            std::time::Duration::from_secs(180),
            16384,
        ))
    }
}

impl Forgotten {
    fn insert(&mut self, now: Instant, key: (String, String)) {
        self.0.insert(now, key, ());
    }

    fn contains(&mut self, now: Instant, key: &(String, String)) -> bool {
        self.0.get(now, key).is_some()
    }
}

/// Branch prefix of every Via tapir writes; a request arriving with it on top has looped.
const BRANCH_PREFIX: &str = "z9hG4bK-tpr";

/// Option tags a request may `Require` of tapir: session timers (RFC 4028, see the `timers`
/// module) and Replaces (RFC 3891, see the `transfer` module). Any other gets 420.
const SUPPORTED_OPTION_TAGS: &[&str] = &["timer", "replaces"];

/// Headers rebuilt per leg and therefore never copied from one leg to the other.
const LEG_LOCAL_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "From",
    "To",
    "Content-Type",
    "Server",
    "User-Agent",
];

pub struct B2bua {
    config: Config,
    routes: Routes,
    tx: TransactionLayer,
    ids: IdGen,
    ports: PortPool,
    /// Boxed: a call is over 2 KB, and a map of inline calls moved all of them each time it
    /// doubled (16 MB in one insert at 7,000 calls up) and kept 2 KB in every empty slot.
    calls: HashMap<CallId, Box<Call>>,
    /// (Call-ID, our tag) of each leg's dialog → call and leg.
    dialogs: HashMap<(String, String), (CallId, Leg)>,
    /// Client transactions and what they were for.
    client: HashMap<TxKey, (CallId, Purpose)>,
    /// Server transactions waiting on the other leg (INVITE handled separately).
    next_call: CallId,
    out: VecDeque<Output>,
    stats: Stats,
    draining: bool,
    /// Registration relay (phone-side deployment); off until [`B2bua::set_registrar`].
    reg: registrar::State,
    flood: flood::FloodGuard,
    /// Announcement per route name.
    announcements: HashMap<String, announce::AnnounceConfig>,
    /// Feature-code filters for the agent's SIP INFO digits, per call.
    info_filters: HashMap<CallId, (feature::FeatureCodeFilter, feature::Swallower)>,
    /// Leg B identities of challenged INVITEs, for their retries (see the `auth` module).
    challenges: auth::Challenges,
    /// Transfers announced by relayed REFERs (see the `transfer` module).
    transfers: transfer::Transfers,
    /// Session-timer deadlines, (when, call); entries made stale by a reschedule are skipped.
    wakeups: BinaryHeap<Reverse<(Instant, CallId)>>,
    /// The latest `now` seen, for bookkeeping in paths that are not handed one.
    clock: Option<Instant>,
    forgotten: Forgotten,
    /// Random bytes for SRTP keys; without it, SRTP offers are refused.
    keys: Option<Box<dyn KeySource>>,
    /// Addresses written in Via and Contact toward TLS peers (the TLS listeners).
    tls_addrs: Vec<SocketAddr>,
}

enum Purpose {
    Invite,
    Bye,
    /// tapir's own session refresh on this leg (see the `timers` module).
    Refresh(Leg),
    /// Relayed in-dialog request; answer goes back on the relay's server transaction.
    Relay(Box<Relay>),
}

impl B2bua {
    pub fn new(config: Config, routes: Routes) -> Self {
        Self {
            tx: TransactionLayer::new(config.timers),
            ids: IdGen {
                seed: config.id_seed,
                n: 0,
            },
            ports: PortPool::new(config.rtp_ports.0, config.rtp_ports.1),
            config,
            routes,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            client: HashMap::new(),
            next_call: 1,
            out: VecDeque::new(),
            stats: Stats::default(),
            draining: false,
            reg: registrar::State::default(),
            flood: flood::FloodGuard::new(flood::FloodConfig::default()),
            announcements: HashMap::new(),
            info_filters: HashMap::new(),
            challenges: auth::Challenges::default(),
            transfers: transfer::Transfers::default(),
            wakeups: BinaryHeap::new(),
            clock: None,
            forgotten: Forgotten::default(),
            keys: None,
            tls_addrs: Vec::new(),
        }
    }

    /// The TLS listeners' addresses, for Via and Contact toward TLS peers (RFC 3261 §26: a
    /// TLS peer sends its requests back to the TLS port). Without them, the UDP/TCP
    /// addresses are written.
    pub fn set_tls_addrs(&mut self, addrs: Vec<SocketAddr>) {
        self.tls_addrs = addrs;
    }

    /// Where SRTP master keys come from: the binary passes its random number generator.
    /// Until one is set, offers that need a key of tapir's are refused with 488.
    pub fn set_key_source(&mut self, keys: Box<dyn KeySource>) {
        self.keys = Some(keys);
    }

    /// Replaces the routing table; calls in progress keep the route they were set up with.
    pub fn set_routes(&mut self, routes: Routes) {
        self.routes = routes;
    }

    /// Refuse new calls with 503 (graceful shutdown); calls in progress continue.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn tx_stats(&self) -> sip::transaction::Stats {
        self.tx.stats()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn free_ports(&self) -> usize {
        self.ports.free()
    }

    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// Which leg carries the customer of `call`.
    pub fn customer_leg(&self, call: CallId) -> Option<Leg> {
        self.calls.get(&call).map(|c| c.customer)
    }

    pub fn call_ids(&self) -> Vec<CallId> {
        self.calls.keys().copied().collect()
    }

    /// Sets the recording announcement of each route (by route name); calls in progress are
    /// not affected.
    pub fn set_announcements(&mut self, a: HashMap<String, announce::AnnounceConfig>) {
        self.announcements = a;
    }

    /// Keeps the agent's feature-code digits sent by SIP INFO from the customer: such an INFO
    /// is answered by tapir and still reported as [`CallEvent::InDialog`] for the policy.
    pub fn set_feature_code_filter(&mut self, call: CallId, f: Option<feature::FeatureCodeFilter>) {
        match f {
            Some(f) if self.calls.contains_key(&call) => {
                self.info_filters
                    .insert(call, (f, feature::Swallower::default()));
            }
            _ => {
                self.info_filters.remove(&call);
            }
        }
    }

    /// Sets the per-source request rate limit (off by default).
    pub fn set_flood_limit(&mut self, cfg: flood::FloodConfig) {
        self.flood.set_config(cfg);
    }

    /// Feeds one datagram (or one framed stream message) received from `from`.
    pub fn handle_message(&mut self, now: Instant, data: &[u8], from: Peer) {
        if let Some(k) = sip::message::keepalive(data) {
            // RFC 5626 §3.5.1: a double CRLF on a connection is answered with one CRLF. Over
            // UDP a CRLF is a NAT keep-alive (RFC 5626's UDP keep-alive is STUN) that wants no
            // answer, and answering a datagram whose source may be forged helps no one.
            self.stats.keepalives += 1;
            if k == sip::message::KeepAlive::Ping && from.transport.is_reliable() {
                self.out.push_back(Output::Transmit {
                    to: from,
                    data: sip::message::PONG.to_vec(),
                });
            }
            return;
        }
        self.stats.messages_in += 1;
        self.clock = Some(now);
        // Responses belong to our own transactions and are never rate limited; requests are
        // charged to their source address before any parsing, so a flood costs little.
        if !data.starts_with(b"SIP/") {
            if let flood::Verdict::Limit(action) = self.flood.check(now, from.addr.ip()) {
                self.stats.flood_limited += 1;
                if action == flood::FloodAction::Reject {
                    if let Ok(Message::Request(r)) = sip::parse(data, !from.transport.is_reliable())
                    {
                        if r.method != Method::Ack {
                            let mut resp = r.response(503, "Service Unavailable");
                            resp.headers.push("Retry-After", "5");
                            self.tx.send_stateless(&Message::Response(resp), from);
                            self.drain_tx(now);
                        }
                    }
                }
                return;
            }
        }
        let datagram = !from.transport.is_reliable();
        match sip::parse(data, datagram) {
            Ok(msg) => {
                if let Message::Request(r) = &msg {
                    if r.top_via_ref()
                        .and_then(|v| v.branch().map(|b| b.starts_with(BRANCH_PREFIX)))
                        .unwrap_or(false)
                        && r.method != Method::Ack
                    {
                        // Our own request came back to us: a routing loop.
                        let resp = r.response(482, "Loop Detected");
                        self.tx.send_stateless(&Message::Response(resp), from);
                        self.drain_tx(now);
                        return;
                    }
                }
                self.tx.handle_message(now, msg, from);
            }
            Err(e) => {
                self.stats.parse_errors += 1;
                tracing::info!(peer = %from.addr, reason = %e.reason, "unparsable SIP message");
                if let Some(resp) = e.response() {
                    self.stats.bad_requests_answered += 1;
                    let to = match resp.top_via() {
                        Some(v) if !from.transport.is_reliable() && !v.params.contains("rport") => {
                            Peer {
                                addr: SocketAddr::new(from.addr.ip(), v.port.unwrap_or(5060)),
                                transport: from.transport,
                            }
                        }
                        _ => from,
                    };
                    self.tx.send_stateless(&Message::Response(resp), to);
                }
            }
        }
        self.drain_tx(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        self.tx.handle_timeout(now);
        self.expire_registrations(now);
        self.drain_tx(now);
        self.run_session_timers(now);
        self.drain_tx(now);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let tx = self.tx.poll_timeout();
        let t = match (tx, self.registrar_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        [t, self.session_deadline()].into_iter().flatten().min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        let o = self.out.pop_front();
        if let Some(Output::Transmit { data, .. }) = &o {
            // A keep-alive pong is no SIP message.
            if data != sip::message::PONG {
                self.stats.messages_out += 1;
            }
        }
        o
    }

    /// Ends a call from tapir's side (operator action, media timeout, shutdown deadline).
    pub fn hang_up(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.a_invite.is_some() && !matches!(c.state, CallState::Cancelling | CallState::Ending) {
            // The caller has no 2xx yet (ringing, or an outbound prompt holding it back): its
            // INVITE gets a final answer, never a BYE on a dialog it does not have; leg B is
            // cancelled if still ringing and hung up if it answered.
            let (b_invite, answered) = (c.b_invite.clone(), c.answered);
            c.state = CallState::Cancelling;
            if let Some(k) = b_invite {
                self.tx.cancel(now, &k);
            }
            self.reply_a_invite(now, call, 503, "Service Unavailable");
            if answered {
                self.finish(call, Outcome::Completed);
                self.send_bye(now, call, Leg::B);
            } else {
                self.finish(call, Outcome::Refused(503));
            }
            self.maybe_forget(now, call);
            self.drain_tx(now);
            return;
        }
        match c.state {
            CallState::Confirmed | CallState::Answered => {
                self.send_bye(now, call, Leg::A);
                self.send_bye(now, call, Leg::B);
                self.finish(call, Outcome::Completed);
            }
            _ => {}
        }
        self.drain_tx(now);
    }

    fn drain_tx(&mut self, now: Instant) {
        while let Some(o) = self.tx.poll_output() {
            match o {
                TxOutput::Transmit { to, data } => {
                    self.out.push_back(Output::Transmit { to, data })
                }
                TxOutput::Event(e) => self.on_tx_event(now, e),
            }
        }
    }

    fn on_tx_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Request { key, request, from } => self.on_request(now, key, request, from),
            Event::Ack { request, from } => self.on_ack(now, request, from),
            Event::Response { key, response } => self.on_response(now, key, response),
            Event::Stray2xx { response, from } => self.on_stray_2xx(now, response, from),
            Event::Timeout { key } => self.on_client_failure(now, key, Failure::Timeout),
            Event::TransportError { key } => self.on_client_failure(now, key, Failure::Transport),
            Event::Cancelled { invite } => self.on_cancelled(now, invite),
            Event::AckTimeout { call_id, .. } => {
                if let Some(&(call, _)) = self
                    .dialogs
                    .iter()
                    .find(|((c, _), _)| *c == call_id)
                    .map(|(_, v)| v)
                {
                    tracing::warn!(call, "2xx never acknowledged; ending the call");
                    self.hang_up(now, call);
                }
            }
        }
    }

    /// Our SIP address in the family of `peer`.
    fn local_addr(&self, peer: Peer) -> SocketAddr {
        if peer.transport == Transport::Tls {
            if let Some(a) = same_family(peer, &self.tls_addrs, SocketAddr::is_ipv4) {
                return a;
            }
        }
        same_family(peer, &self.config.sip_addrs, SocketAddr::is_ipv4)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// Our media address in the family of `peer`.
    fn media_ip(&self, peer: Peer) -> IpAddr {
        same_family(peer, &self.config.media_ips, IpAddr::is_ipv4)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    fn via(&mut self, peer: Peer) -> String {
        let id = self.ids.next();
        let local = HostPort(self.local_addr(peer));
        format!(
            "SIP/2.0/{} {local};branch={BRANCH_PREFIX}{id};rport",
            peer.transport.as_str(),
        )
    }

    fn contact(&self, peer: Peer) -> String {
        let local = HostPort(self.local_addr(peer));
        let t = if peer.transport == Transport::Udp {
            String::new()
        } else {
            format!(
                ";transport={}",
                peer.transport.as_str().to_ascii_lowercase()
            )
        };
        format!("<sip:tapir@{local}{t}>")
    }

    fn respond(&mut self, now: Instant, key: &TxKey, mut resp: Response) {
        if resp.headers.get("Server").is_none() {
            resp.headers.push("Server", self.config.user_agent.clone());
        }
        // Every response but 100 carries a To tag (RFC 3261 §8.2.6.2), also those tapir
        // makes up itself for requests that never reach a dialog.
        if resp.status > 100 && resp.to_tag().is_none() {
            let tag = self.ids.next();
            set_to_tag(&mut resp, &tag);
        }
        self.tx.respond(now, key, resp);
    }

    fn on_request(&mut self, now: Instant, key: TxKey, req: Request, from: Peer) {
        let in_dialog = req.to_tag().is_some();
        if in_dialog {
            let to_tag = req.to_tag().unwrap_or_default();
            match self
                .dialogs
                .get(&(req.call_id().to_string(), to_tag))
                .copied()
            {
                Some((call, leg)) => self.on_in_dialog(now, key, req, call, leg),
                None => {
                    self.stats.stray_requests += 1;
                    let r = req.response(481, "Call/Transaction Does Not Exist");
                    self.respond(now, &key, r);
                }
            }
            return;
        }
        // The UAS checks (RFC 3261 §8.2.2, §8.2.3; Max-Forwards as a relaying element, §16.3)
        // come from `sip`, so the RFC 4475 verdicts its tests pin are the ones applied here.
        if let Err(rej) = sip::check_request_semantics(&req, SUPPORTED_OPTION_TAGS) {
            tracing::info!(
                peer = %from.addr, status = rej.status, reason = %rej.reason, "request refused"
            );
            let r = rej.response(&req);
            self.respond(now, &key, r);
            return;
        }
        match req.method {
            Method::Invite => self.on_new_invite(now, key, req, from),
            Method::Options => {
                // Keep-alive pings from trunks and load balancers (e.g. Kamailio dispatcher).
                let mut r = req.response(
                    if self.draining { 503 } else { 200 },
                    if self.draining {
                        "Service Unavailable"
                    } else {
                        "OK"
                    },
                );
                r.headers.push(
                    "Allow",
                    "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY",
                );
                r.headers.push("Accept", "application/sdp");
                self.respond(now, &key, r);
            }
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                let r = req.response(481, "Call/Transaction Does Not Exist");
                self.respond(now, &key, r);
            }
            Method::Cancel => {}
            Method::Register => self.on_register(now, key, req, from),
            // A method tapir does not even know (RFC 3261 §8.2.1, §21.5.2); 405 is for the
            // known ones it does not take out of a dialog.
            Method::Other(_) => {
                let r = req.response(501, "Not Implemented");
                self.respond(now, &key, r);
            }
            _ => {
                let mut r = req.response(405, "Method Not Allowed");
                r.headers.push(
                    "Allow",
                    "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY",
                );
                self.respond(now, &key, r);
            }
        }
    }

    /// An INVITE tapir sent inside this call is unanswered: a relayed re-INVITE (a party's,
    /// which holds an INVITE open on both legs' dialogs, RFC 3261 §14.1) or, when
    /// `own_refreshes`, tapir's own refresh of a leg. A party's re-INVITE must wait for
    /// either, since it would cross to the other leg; tapir's refresh only for the former, as
    /// its refresh of one leg does not hold the other. Only re-INVITEs ask, so the scan is rare.
    pub(crate) fn invite_in_progress(&self, call: CallId, own_refreshes: bool) -> bool {
        self.client.iter().any(|(k, (cid, p))| {
            *cid == call
                && *k.method() == Method::Invite
                && match p {
                    Purpose::Relay(_) => true,
                    Purpose::Refresh(_) => own_refreshes,
                    _ => false,
                }
        })
    }

    fn on_new_invite(&mut self, now: Instant, key: TxKey, req: Request, from: Peer) {
        let reject = |this: &mut Self, code: u16, reason: &str| {
            let r = req.response(code, reason);
            this.respond(now, &key, r);
        };
        if self.draining {
            let mut r = req.response(503, "Service Unavailable");
            r.headers.push("Retry-After", "30");
            self.respond(now, &key, r);
            return;
        }
        // Max-Forwards 0, Require, the URI scheme and the body type were checked in
        // `on_request`.
        let mf = req.max_forwards().unwrap_or(70).max(1);
        let sdp = if req.body.is_empty() {
            None
        } else if !req.has_sdp() {
            // A multipart body passed those checks; tapir does not take SDP out of one.
            let mut r = req.response(415, "Unsupported Media Type");
            r.headers.push("Accept", "application/sdp");
            self.respond(now, &key, r);
            return;
        } else {
            match Sdp::parse(&req.body) {
                Ok(s) if s.audio_index().is_some() => Some(s),
                Ok(_) => return reject(self, 488, "Not Acceptable Here: no audio stream"),
                Err(e) => {
                    let reason = format!("Bad SDP: {e}");
                    return reject(self, 400, &reason);
                }
            }
        };
        // A tel: Request-URI (RFC 3966; its scheme passes the checks) is dialled by its number.
        let user = match &req.uri {
            sip::Uri::Other(u) if u.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tel:")) => {
                u[4..].split(';').next().unwrap_or("").to_string()
            }
            u => u.user().unwrap_or("").to_string(),
        };
        // A transfer tapir announced or a dialog it holds first (see the `transfer` module),
        // then a registered phone (see the `registrar` module), then the routes.
        let link = self.transfer_link(now, &req);
        let Some(route) = link
            .as_ref()
            .and_then(|l| l.route.clone())
            .or_else(|| self.registered_route(now, from, &req))
            .or_else(|| self.routes.find(from.addr.ip(), &user).cloned())
        else {
            if self.is_registrar_side(from) {
                return reject(self, 480, "Temporarily Unavailable");
            }
            tracing::info!(peer = %from.addr, "no route for INVITE");
            return reject(self, 404, "Not Found: no route");
        };
        // SRTP per leg: read the caller's keying and make leg B's offer (see `secure`).
        let mut srtp = secure::CallSrtp::new(route.srtp);
        let mut b_sdp = sdp.clone();
        if let Some(s) = b_sdp.as_mut() {
            match srtp.on_sdp(Leg::A, secure::SdpKind::Offer, s, self.keys.as_deref_mut()) {
                Ok(()) => {}
                Err(secure::SdpReject::Undecryptable(reason))
                    if route.srtp.undecryptable == Undecryptable::Relay =>
                {
                    srtp.set_opaque(reason);
                    b_sdp = sdp.clone();
                }
                Err(e) => {
                    tracing::info!(peer = %from.addr, reason = e.reason(), "offer refused");
                    let reason = format!("Not Acceptable Here: {}", e.reason());
                    return reject(self, 488, &reason);
                }
            }
        }
        let Some((a_port, b_port)) = self.ports.allocate_pair() else {
            tracing::warn!("RTP port range exhausted");
            let mut r = req.response(503, "Service Unavailable: no media ports");
            r.headers.push("Retry-After", "5");
            self.respond(now, &key, r);
            return;
        };

        let call = self.next_call;
        self.next_call += 1;
        let customer = match route.customer {
            Side::Caller => Leg::A,
            Side::Callee => Leg::B,
        };

        // Leg A dialog (tapir is the UAS).
        let a_tag = self.ids.next();
        let from_na = req.from().unwrap_or_else(|| NameAddr::new(req.uri.clone()));
        let to_na = req.to().unwrap_or_else(|| NameAddr::new(req.uri.clone()));
        let a_target = req
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| from_na.uri.clone());
        let a_dialog = Dialog {
            call_id: req.call_id().to_string(),
            local_tag: a_tag.clone(),
            remote_tag: req.from_tag(),
            local_uri: strip_tag(&to_na),
            remote_uri: strip_tag(&from_na),
            remote_target: a_target,
            route_set: req
                .headers
                .get_all("Record-Route")
                .map(str::to_string)
                .collect(),
            local_cseq: 0,
            remote_cseq: req.cseq().map(|c| c.seq),
        };

        // Leg B: new Call-ID, From tag, Via; Request-URI from the route target. A retry after
        // a challenge continues the challenged leg B instead (see the `auth` module).
        let (b_call_id, b_tag, b_cseq) = match self.challenges.take_retry(now, &req) {
            Some(r) => (r.b_call_id, r.b_tag, r.b_cseq),
            None => (format!("{}@tapir", self.ids.next()), self.ids.next(), 1),
        };
        let mut b_uri = route.target_uri.clone();
        if let Some(s) = b_uri.sip_mut() {
            if s.user.is_none() {
                s.user = req
                    .uri
                    .sip()
                    .and_then(|u| u.user.clone())
                    .or_else(|| (!user.is_empty()).then(|| user.clone()));
            }
        }
        let mut b_from = strip_tag(&from_na);
        b_from.params.set("tag", Some(b_tag.clone()));
        let b_to = strip_tag(&to_na);
        let b_peer = Peer {
            addr: route.target,
            transport: route.transport,
        };
        let mut b_req = Request::new(Method::Invite, b_uri.clone());
        b_req.headers.push("Via", self.via(b_peer));
        b_req.headers.push("Max-Forwards", (mf - 1).to_string());
        b_req.headers.push("From", b_from.to_string());
        b_req.headers.push("To", b_to.to_string());
        b_req.headers.push("Call-ID", b_call_id.clone());
        b_req.headers.push("CSeq", format!("{b_cseq} INVITE"));
        b_req.headers.push("Contact", self.contact(b_peer));
        b_req
            .headers
            .push("User-Agent", self.config.user_agent.clone());
        copy_end_to_end_headers(&req, &mut b_req);
        if let Some(r) = link.as_ref().and_then(|l| l.replaces.clone()) {
            b_req.headers.set("Replaces", r);
        }
        if let Some(mut s) = b_sdp {
            let i = s.audio_index().unwrap_or(0);
            s.anchor(i, self.media_ip(b_peer), b_port);
            b_req.headers.push("Content-Type", "application/sdp");
            b_req.body = s.to_bytes();
        }
        let b_dialog = Dialog {
            call_id: b_call_id.clone(),
            local_tag: b_tag.clone(),
            remote_tag: None,
            local_uri: strip_tag(&from_na),
            remote_uri: b_to,
            remote_target: b_uri,
            route_set: Vec::new(),
            local_cseq: b_cseq,
            remote_cseq: None,
        };
        let mut x = extra::CallExtra::new(
            call,
            None,
            extra::CallMeta {
                route: route.name.clone(),
                direction: route.direction.clone(),
                record: route.record.clone(),
                format: route.format.clone(),
                srtp: route.srtp,
            },
        );
        if let Some(s) = &sdp {
            x.leg_mut(Leg::A).sends = timers::sdp_sends(s);
        }
        if !b_req.body.is_empty() {
            x.leg_mut(Leg::B).last_sdp = Some(b_req.body.clone());
        }
        if let Some(l) = &link {
            x.contact = l.contact;
            x.label = l.label.clone();
            x.meta = l.meta.clone();
            tracing::info!(
                call,
                previous = l.previous,
                contact = l.contact,
                "transferred call"
            );
            self.out.push_back(Output::Call(CallEvent::Transferred {
                call,
                previous: l.previous,
                contact: l.contact,
                label: l.label.clone(),
                replaces: l.replaced,
            }));
        }

        let mut span_from = from_na.uri.user().unwrap_or("").to_string();
        let mut span_to = user.clone();
        if span_from.is_empty() {
            span_from = "anonymous".into();
        }
        if span_to.is_empty() {
            span_to = "unknown".into();
        }
        if let Some(reason) = srtp.opaque() {
            self.out.push_back(Output::Call(CallEvent::Encrypted {
                call,
                reason: reason.to_string(),
            }));
        }
        self.out.push_back(Output::Call(CallEvent::Started {
            call,
            route: route.name.clone(),
            direction: route.direction.clone(),
            a_call_id: req.call_id().to_string(),
            b_call_id: b_call_id.clone(),
            from: span_from,
            to: span_to,
            customer,
            record: route.record.clone(),
            format: route.format.clone(),
            x_headers: x_tapir_headers(&req),
            source: from.addr,
            station: route.station.clone(),
        }));
        self.out.push_back(Output::Media(MediaCommand::Open {
            call,
            a_port,
            b_port,
            customer,
        }));
        if let Some(s) = &sdp {
            self.media_update(call, Leg::A, s);
        }
        for (leg, crypto) in srtp.changes() {
            self.out
                .push_back(Output::Media(MediaCommand::Crypto { call, leg, crypto }));
        }

        self.dialogs
            .insert((req.call_id().to_string(), a_tag), (call, Leg::A));
        self.dialogs.insert((b_call_id, b_tag), (call, Leg::B));
        let mut ann = announce::CallAnnounce::default();
        let announce_cfg = self
            .announcements
            .get(&route.name)
            .filter(|a| {
                let kind = req.headers.get("X-Tapir-Call-Type").unwrap_or("");
                !a.skip_call_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(kind.trim()))
            })
            .cloned();
        let inbound = match (&announce_cfg, customer, &sdp) {
            (Some(cfg), Leg::A, Some(offer)) => {
                let i = offer.audio_index().unwrap_or(0);
                announce::choose_codec(&offer.rtpmaps(i)).map(|codec| (cfg.clone(), codec))
            }
            _ => None,
        };
        if customer == Leg::B {
            ann.outbound = announce_cfg;
        }
        let b_invite = match inbound {
            None => {
                let b_key = self.tx.send_request(now, b_req, b_peer);
                self.client.insert(b_key.clone(), (call, Purpose::Invite));
                Some(b_key)
            }
            Some((cfg, codec)) => {
                // Early media with tapir's own answer; leg B is called when the prompt ends,
                // offered only the codec the caller now has.
                let mut b_req = b_req;
                if let Ok(mut s) = Sdp::parse(&b_req.body) {
                    let i = s.audio_index().unwrap_or(0);
                    announce::narrow_offer(&mut s, i, codec);
                    b_req.body = s.to_bytes();
                }
                let answer = announce::answer(self.media_ip(from), a_port, codec, call);
                let mut r = req.response(183, "Session Progress");
                set_to_tag(&mut r, &a_dialog.local_tag);
                r.headers.push("Contact", self.contact(from));
                copy_record_route(&req, &mut r);
                r.headers.push("Content-Type", "application/sdp");
                r.body = answer.clone();
                self.respond(now, &key, r);
                self.out.push_back(Output::Media(MediaCommand::Announce {
                    call,
                    leg: Leg::A,
                    prompt: cfg.prompt.clone(),
                    codec,
                    collect_consent: cfg.collect_consent,
                }));
                ann.a_sdp = Some(answer);
                ann.phase = Some(announce::Phase::Inbound { b_req, b_peer });
                None
            }
        };
        self.calls.insert(
            call,
            Box::new(Call {
                id: call,
                state: CallState::Proceeding,
                a: LegState {
                    dialog: a_dialog,
                    peer: from,
                    port: a_port,
                },
                b: LegState {
                    dialog: b_dialog,
                    peer: b_peer,
                    port: b_port,
                },
                customer,
                a_invite: Some((key, req)),
                b_invite,
                b_ack_pending: None,
                b_ack_body: None,
                byes_pending: 0,
                answered: false,
                outcome: None,
                media_open: true,
                x,
                srtp,
                ann,
            }),
        );
    }

    fn media_update(&mut self, call: CallId, leg: Leg, s: &Sdp) {
        let Some(i) = s.audio_index() else { return };
        let remote = s
            .connection(i)
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, s.media[i].port));
        self.out.push_back(Output::Media(MediaCommand::Update {
            call,
            leg,
            remote,
            sends: s.direction(i).sends(),
            codecs: s.rtpmaps(i),
        }));
        self.note_media(call, leg, timers::sdp_sends(s));
    }

    /// Rewrites an SDP body that came from `from_leg` for sending on the other leg (anchored,
    /// keying replaced as the `secure` module decides), and tells the relay what `from_leg`
    /// now sends. `Ok(None)` for a body that is not valid SDP; an error for an offer tapir
    /// cannot take (488).
    fn relay_sdp(
        &mut self,
        call: CallId,
        from_leg: Leg,
        body: &[u8],
        kind: secure::SdpKind,
    ) -> Result<Option<Vec<u8>>, secure::SdpReject> {
        let Ok(mut s) = Sdp::parse(body) else {
            return Ok(None);
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(None);
        };
        c.srtp
            .on_sdp(from_leg, kind, &mut s, self.keys.as_deref_mut())?;
        let changes = c.srtp.changes();
        let Some(s) = self.relay_sdp_anchored(call, from_leg, body, s) else {
            return Ok(None);
        };
        for (leg, crypto) in changes {
            self.out
                .push_back(Output::Media(MediaCommand::Crypto { call, leg, crypto }));
        }
        Ok(Some(s))
    }

    fn relay_sdp_anchored(
        &mut self,
        call: CallId,
        from_leg: Leg,
        body: &[u8],
        mut s: Sdp,
    ) -> Option<Vec<u8>> {
        // The relay learns the leg's media from the SDP as it came, keying and all.
        if let Ok(orig) = Sdp::parse(body) {
            self.media_update(call, from_leg, &orig);
        }
        let to = self.calls.get(&call)?.leg(from_leg.other());
        let (port, ip) = (to.port, self.media_ip(to.peer));
        if let Some(i) = s.audio_index() {
            s.anchor(i, ip, port);
        }
        let out = s.to_bytes();
        self.note_sdp_sent(call, from_leg.other(), &out);
        Some(out)
    }

    /// Builds the message for `to_leg` that carries `src`'s body, with SDP anchored.
    #[allow(clippy::too_many_arguments)]
    fn copy_body(
        &mut self,
        call: CallId,
        from_leg: Leg,
        src_has_sdp: bool,
        body: &[u8],
        content_type: Option<&str>,
        dst: &mut sip::Headers,
        kind: secure::SdpKind,
    ) -> Result<Vec<u8>, secure::SdpReject> {
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let out = if src_has_sdp {
            match self.relay_sdp(call, from_leg, body, kind)? {
                Some(b) => b,
                None => body.to_vec(),
            }
        } else {
            body.to_vec()
        };
        if let Some(ct) = content_type {
            dst.push("Content-Type", ct.to_string());
        }
        Ok(out)
    }

    /// [`Self::copy_body`] for a response, which cannot be refused: an offer in it that tapir
    /// cannot take is logged and relayed anchored with its keying untouched.
    #[allow(clippy::too_many_arguments)]
    fn copy_response_body(
        &mut self,
        call: CallId,
        from_leg: Leg,
        src_has_sdp: bool,
        body: &[u8],
        content_type: Option<&str>,
        dst: &mut sip::Headers,
        kind: secure::SdpKind,
    ) -> Vec<u8> {
        match self.copy_body(call, from_leg, src_has_sdp, body, content_type, dst, kind) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(call, reason = e.reason(), "SDP in a response not taken");
                if let Some(ct) = content_type {
                    dst.push("Content-Type", ct.to_string());
                }
                Sdp::parse(body)
                    .ok()
                    .and_then(|s| self.relay_sdp_anchored(call, from_leg, body, s))
                    .unwrap_or_else(|| body.to_vec())
            }
        }
    }

    fn reply_a_invite(&mut self, now: Instant, call: CallId, code: u16, reason: &str) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some((key, req)) = c.a_invite.take() {
            let mut r = req.response(code, reason);
            set_to_tag(&mut r, &c.a.dialog.local_tag);
            self.respond(now, &key, r);
        }
    }

    fn on_response(&mut self, now: Instant, key: TxKey, resp: Response) {
        if self.on_register_response(now, &key, &resp) {
            return;
        }
        let Some((call, purpose)) = self.client.get(&key).map(|(c, p)| (*c, p)) else {
            return;
        };
        match purpose {
            Purpose::Invite => self.on_b_invite_response(now, key, call, resp),
            Purpose::Bye => {
                if resp.status >= 200 {
                    self.client.remove(&key);
                    self.bye_done(now, call);
                }
            }
            &Purpose::Refresh(leg) => {
                if resp.status >= 200 {
                    self.client.remove(&key);
                    self.on_refresh_response(now, call, leg, resp);
                }
            }
            Purpose::Relay(_) => {
                let final_ = resp.status >= 200;
                let relay = if final_ {
                    match self.client.remove(&key) {
                        Some((_, Purpose::Relay(r))) => *r,
                        _ => return,
                    }
                } else {
                    match self.client.get(&key) {
                        Some((_, Purpose::Relay(r))) => Relay {
                            call: r.call,
                            from_leg: r.from_leg,
                            server: r.server.clone(),
                            request: r.request.clone(),
                        },
                        _ => return,
                    }
                };
                self.relay_response(now, relay, resp);
            }
        }
    }

    /// Relays a response to an in-dialog request back to the leg that sent the request.
    fn relay_response(&mut self, now: Instant, relay: Relay, resp: Response) {
        if resp.status == 100 {
            return;
        }
        if relay.request.method == Method::Refer && resp.status >= 300 {
            self.transfer_failed(relay.call, resp.status);
        }
        let Some(c) = self.calls.get(&relay.call) else {
            let r = relay.request.response(resp.status, &resp.reason);
            self.respond(now, &relay.server, r);
            return;
        };
        let local_tag = c.leg(relay.from_leg).dialog.local_tag.clone();
        let to_leg_of_resp = relay.from_leg.other();
        let mut r = relay.request.response(resp.status, &resp.reason);
        set_to_tag(&mut r, &local_tag);
        copy_response_headers(&resp, &mut r);
        if (200..300).contains(&resp.status) && relay.request.method == Method::Invite {
            let p = c.leg(relay.from_leg).peer;
            r.headers.push("Contact", self.contact(p));
        }
        let has_sdp = resp.has_sdp();
        let ct = resp.content_type().map(str::to_string);
        let kind = if relay.request.body.is_empty() {
            secure::SdpKind::Offer
        } else {
            secure::SdpKind::Answer
        };
        r.body = self.copy_response_body(
            relay.call,
            to_leg_of_resp,
            has_sdp,
            &resp.body,
            ct.as_deref(),
            &mut r.headers,
            kind,
        );
        if relay.request.method == Method::Invite && (200..300).contains(&resp.status) {
            // ACK the re-INVITE's 2xx on the answering leg at once; the caller's ACK to us is
            // absorbed (tapir holds both offer/answer sides, so nothing in it is needed).
            self.ack_2xx(now, relay.call, to_leg_of_resp, &resp, None);
        }
        if matches!(relay.request.method, Method::Invite | Method::Update)
            && (200..300).contains(&resp.status)
        {
            self.timers_on_refresh(
                now,
                relay.call,
                relay.from_leg,
                &relay.request,
                &resp,
                &mut r,
            );
        }
        self.respond(now, &relay.server, r);
    }

    fn ack_2xx(
        &mut self,
        now: Instant,
        call: CallId,
        leg: Leg,
        resp: &Response,
        body: Option<(Vec<u8>, String)>,
    ) {
        let _ = now;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let l = c.leg_mut(leg);
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(l.dialog.local_cseq);
        let mut ack = l.dialog.request(Method::Ack);
        ack.headers.set("CSeq", format!("{seq} ACK"));
        let peer = l.peer;
        let via = self.via(peer);
        ack.headers.push_front("Via", via);
        if let Some((b, ct)) = body {
            ack.headers.push("Content-Type", ct);
            ack.body = b;
        }
        self.tx.send_stateless(&Message::Request(ack), peer);
    }

    fn on_b_invite_response(&mut self, now: Instant, key: TxKey, call: CallId, resp: Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if resp.status == 100 {
            return;
        }
        let remote_tag = resp.to_tag();
        if resp.status >= 200 {
            self.client.remove(&key);
            c.b_invite = None;
        }
        if c.state == CallState::Cancelling {
            if (200..300).contains(&resp.status) {
                // The callee answered while the CANCEL crossed: accept and hang up at once.
                c.b.dialog.remote_tag = remote_tag;
                if let Some(ct) = resp.contact() {
                    c.b.dialog.remote_target = ct.uri;
                }
                self.ack_2xx(now, call, Leg::B, &resp, None);
                self.send_bye(now, call, Leg::B);
            }
            if resp.status >= 200 {
                self.maybe_forget(now, call);
            }
            return;
        }
        if c.state != CallState::Proceeding {
            // A second 2xx from a forking proxy downstream: take the first, drop the others.
            if (200..300).contains(&resp.status) && remote_tag != c.b.dialog.remote_tag {
                let mut extra = c.b.dialog.clone();
                extra.remote_tag = remote_tag;
                let peer = c.b.peer;
                let mut ack = extra.request(Method::Ack);
                ack.headers.push_front("Via", self.via(peer));
                self.tx.send_stateless(&Message::Request(ack), peer);
                let mut bye = extra.request(Method::Bye);
                bye.headers.push_front("Via", self.via(peer));
                self.tx.send_request(now, bye, peer);
            }
            if resp.status >= 200 {
                // The call may have been waiting only for this final response.
                self.maybe_forget(now, call);
            }
            return;
        }
        if resp.status < 300 || resp.status < 200 {
            c.b.dialog.remote_tag = remote_tag.or(c.b.dialog.remote_tag.clone());
            if let Some(ct) = resp.contact() {
                c.b.dialog.remote_target = ct.uri;
            }
            c.b.dialog.route_set = resp
                .headers
                .get_all("Record-Route")
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
        }
        let a_tag = c.a.dialog.local_tag.clone();
        let a_peer = c.a.peer;
        // Taken rather than cloned (a whole request, for every 180 and 200); a provisional
        // response puts it back below.
        let Some((a_key, a_req)) = c.a_invite.take() else {
            return;
        };
        let mut r = a_req.response(resp.status, &resp.reason);
        set_to_tag(&mut r, &a_tag);
        copy_response_headers(&resp, &mut r);
        if resp.status < 300 {
            r.headers.push("Contact", self.contact(a_peer));
            copy_record_route(&a_req, &mut r);
        }
        let has_sdp = resp.has_sdp();
        let ct = resp.content_type().map(str::to_string);
        // Leg B's SDP answers tapir's offer, unless the caller made none (delayed offer).
        let kind = if a_req.body.is_empty() {
            secure::SdpKind::Offer
        } else {
            secure::SdpKind::Answer
        };
        r.body = self.copy_response_body(
            call,
            Leg::B,
            has_sdp,
            &resp.body,
            ct.as_deref(),
            &mut r.headers,
            kind,
        );
        let c = self.calls.get_mut(&call).expect("call exists");
        if let (Some(fixed), false) = (&c.ann.a_sdp, r.body.is_empty()) {
            // The caller already has tapir's answer from the announcement's 183.
            r.body = fixed.clone();
        }
        match resp.status {
            101..=199 => {
                c.a_invite = Some((a_key.clone(), a_req));
                self.respond(now, &a_key, r);
                return;
            }
            200..=299 => {
                c.answered = true;
                let delayed_offer = a_req.body.is_empty();
                if delayed_offer {
                    c.state = CallState::Answered;
                    c.b_ack_pending = Some(resp.clone());
                } else {
                    c.state = CallState::Confirmed;
                    self.ack_2xx(now, call, Leg::B, &resp, None);
                }
                self.out
                    .push_back(Output::Call(CallEvent::Answered { call }));
            }
            _ => {
                c.outcome = Some(Outcome::Rejected(resp.status));
            }
        }
        if (200..300).contains(&resp.status) {
            self.timers_on_answer(now, call, &a_req, &resp, &mut r);
        } else if matches!(resp.status, 401 | 407) {
            self.remember_challenge(now, call, &a_req);
        }
        if (200..300).contains(&resp.status) && !a_req.body.is_empty() {
            if let Some(r) = self.hold_for_announcement(call, &resp, a_key.clone(), &a_req, r) {
                self.respond(now, &a_key, r);
            }
            return;
        }
        self.respond(now, &a_key, r);
        if resp.status >= 300 {
            self.finish(call, Outcome::Rejected(resp.status));
            self.maybe_forget(now, call);
        }
    }

    /// A client transaction that ended without a response: Timer B or F (408), or a
    /// connection to its peer that could not be opened (503, §8.1.3.1).
    fn on_client_failure(&mut self, now: Instant, key: TxKey, failure: Failure) {
        let (code, reason, outcome) = match failure {
            Failure::Timeout => (408, "Request Timeout", Outcome::Timeout),
            Failure::Transport => (503, "Service Unavailable", Outcome::Unreachable),
        };
        if self.on_register_failure(now, &key, code, reason) {
            return;
        }
        let Some((call, purpose)) = self.client.remove(&key) else {
            return;
        };
        match purpose {
            Purpose::Invite => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.b_invite = None;
                }
                if failure == Failure::Transport {
                    tracing::info!(call, "leg B's target unreachable; answering 503");
                }
                self.reply_a_invite(now, call, code, reason);
                self.finish(call, outcome);
                self.maybe_forget(now, call);
            }
            Purpose::Bye => self.bye_done(now, call),
            Purpose::Refresh(leg) => self.on_refresh_timeout(now, call, leg),
            Purpose::Relay(relay) => {
                let r = relay.request.response(code, reason);
                self.respond(now, &relay.server, r);
                if relay.request.method == Method::Refer {
                    self.transfer_failed(call, code);
                }
                // §12.2.1.2: no response at all to an in-dialog request ends the dialog.
                // After a timeout the sender does so itself on the 408; a 503 leaves its
                // dialog up, so tapir ends a call whose other party it cannot reach.
                if failure == Failure::Transport && relay.request.method != Method::Bye {
                    tracing::info!(call, method = %relay.request.method,
                        "the other party is unreachable; ending the call");
                    self.hang_up(now, call);
                }
            }
        }
    }

    /// The connection (TCP or TLS) to `peer` could not be opened, or its TLS handshake
    /// failed: the requests waiting to get through to it fail now, as 503, instead of after
    /// Timer B or F. The binary calls this when a connection it opened toward `peer` dies
    /// before it carried anything.
    pub fn transport_error(&mut self, now: Instant, peer: Peer) {
        self.tx.transport_error(peer);
        self.drain_tx(now);
    }

    fn on_cancelled(&mut self, now: Instant, invite: TxKey) {
        let Some(call) = self
            .calls
            .values()
            .find(|c| c.a_invite.as_ref().is_some_and(|(k, _)| *k == invite))
            .map(|c| c.id)
        else {
            return;
        };
        let c = self.calls.get_mut(&call).expect("call exists");
        c.state = CallState::Cancelling;
        if let Some(k) = c.b_invite.clone() {
            self.tx.cancel(now, &k);
        }
        let announcing = c.ann.phase.take();
        self.reply_a_invite(now, call, 487, "Request Terminated");
        self.finish(call, Outcome::Cancelled);
        match announcing {
            // The callee had answered and was hearing the prompt: hang up on it.
            Some(announce::Phase::Outbound { .. }) => self.send_bye(now, call, Leg::B),
            // Leg B was never called: nothing else will end this call.
            Some(announce::Phase::Inbound { .. }) => self.maybe_forget(now, call),
            None => {}
        }
    }

    /// The prompt of [`MediaCommand::Announce`] has ended: connect the call.
    pub fn announcement_done(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.ann.phase.take() {
            Some(announce::Phase::Inbound { b_req, b_peer }) => {
                let k = self.tx.send_request(now, b_req, b_peer);
                c.b_invite = Some(k.clone());
                self.client.insert(k, (call, Purpose::Invite));
            }
            Some(announce::Phase::Outbound { a_key, response }) => {
                c.a_invite = None;
                self.respond(now, &a_key, response);
            }
            None => {}
        }
        self.drain_tx(now);
    }

    /// Outbound calls with an announcement: keeps the 200 for the agent until the prompt has
    /// played to the callee. Returns the response when it must be sent now.
    fn hold_for_announcement(
        &mut self,
        call: CallId,
        resp: &Response,
        a_key: TxKey,
        a_req: &Request,
        r: Response,
    ) -> Option<Response> {
        let c = self.calls.get_mut(&call)?;
        let Some(cfg) = c.ann.outbound.take() else {
            return Some(r);
        };
        let codec = Sdp::parse(&resp.body).ok().and_then(|s| {
            let i = s.audio_index()?;
            announce::choose_codec(&s.rtpmaps(i))
        });
        let Some(codec) = codec else {
            tracing::info!(call, "callee answered without G.711: no announcement");
            return Some(r);
        };
        // The agent's INVITE stays pending (a CANCEL still works) until the prompt ends.
        c.a_invite = Some((a_key.clone(), a_req.clone()));
        c.ann.phase = Some(announce::Phase::Outbound { a_key, response: r });
        self.out.push_back(Output::Media(MediaCommand::Announce {
            call,
            leg: Leg::B,
            prompt: cfg.prompt,
            codec,
            collect_consent: cfg.collect_consent,
        }));
        None
    }

    fn on_ack(&mut self, now: Instant, req: Request, _from: Peer) {
        let Some(&(call, leg)) = self
            .dialogs
            .get(&(req.call_id().to_string(), req.to_tag().unwrap_or_default()))
        else {
            return;
        };
        if leg != Leg::A {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::Answered {
            c.state = CallState::Confirmed;
            if let Some(resp) = c.b_ack_pending.take() {
                let body = if req.has_sdp() {
                    self.relay_sdp(call, Leg::A, &req.body, secure::SdpKind::Answer)
                        .unwrap_or_else(|e| {
                            tracing::warn!(call, reason = e.reason(), "answer in ACK not taken");
                            None
                        })
                        .map(|b| (b, "application/sdp".to_string()))
                } else {
                    None
                };
                if let (Some(c), Some(b), Some(cseq)) =
                    (self.calls.get_mut(&call), &body, resp.cseq())
                {
                    c.b_ack_body = Some((cseq.seq, b.clone()));
                }
                self.ack_2xx(now, call, Leg::B, &resp, body);
            }
        }
    }

    fn on_stray_2xx(&mut self, now: Instant, resp: Response, from: Peer) {
        // A retransmitted 2xx: our ACK was lost. ACK again (§13.2.2.4).
        let Some(tag) = resp.from_tag() else { return };
        let Some(&(call, leg)) = self.dialogs.get(&(resp.call_id().to_string(), tag)) else {
            self.end_orphan_2xx(now, &resp, from);
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.b_ack_pending.is_some() {
            return;
        }
        let body = match &c.b_ack_body {
            Some((seq, b)) if leg == Leg::B && resp.cseq().map(|c| c.seq) == Some(*seq) => {
                Some(b.clone())
            }
            _ => None,
        };
        self.ack_2xx(now, call, leg, &resp, body);
    }

    /// A 2xx to an INVITE of ours whose call is gone (answered after Timer C gave up, or a
    /// re-INVITE answered after the call ended): ACK it so the far end stops retransmitting,
    /// and BYE the dialog it would otherwise believe established.
    fn end_orphan_2xx(&mut self, now: Instant, resp: &Response, from: Peer) {
        // Only for requests tapir sent: never ACK or BYE on behalf of a stranger's 2xx.
        if !resp
            .top_via_ref()
            .and_then(|v| v.branch())
            .is_some_and(|b| b.starts_with(BRANCH_PREFIX))
        {
            return;
        }
        let (Some(local), Some(remote), Some(local_tag)) =
            (resp.from(), resp.to(), resp.from_tag())
        else {
            return;
        };
        let key = (resp.call_id().to_string(), local_tag);
        if !self.forgotten.contains(now, &key) {
            tracing::debug!(peer = %from.addr, "2xx for a dialog tapir never had; dropped");
            return;
        }
        let (_, local_tag) = key;
        let mut d = Dialog {
            call_id: resp.call_id().to_string(),
            local_tag,
            remote_tag: resp.to_tag(),
            local_uri: strip_tag(&local),
            remote_uri: strip_tag(&remote),
            remote_target: resp.contact().map(|c| c.uri).unwrap_or(remote.uri),
            route_set: resp
                .headers
                .get_all("Record-Route")
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            local_cseq: resp.cseq().map(|c| c.seq).unwrap_or(1),
            remote_cseq: None,
        };
        let mut ack = d.request(Method::Ack);
        ack.headers.push_front("Via", self.via(from));
        self.tx.send_stateless(&Message::Request(ack), from);
        let mut bye = d.request(Method::Bye);
        bye.headers.push_front("Via", self.via(from));
        self.tx.send_request(now, bye, from);
    }

    fn on_in_dialog(&mut self, now: Instant, key: TxKey, req: Request, call: CallId, leg: Leg) {
        let Some(c) = self.calls.get_mut(&call) else {
            let r = req.response(481, "Call/Transaction Does Not Exist");
            self.respond(now, &key, r);
            return;
        };
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        if !c.leg_mut(leg).dialog.accept_remote_cseq(seq, &req.method) {
            let r = req.response(500, "Server Internal Error: CSeq out of order");
            self.respond(now, &key, r);
            return;
        }
        if let Some(ct) = req.contact() {
            if req.method == Method::Invite || req.method == Method::Update {
                c.leg_mut(leg).dialog.remote_target = ct.uri;
            }
        }
        match req.method {
            Method::Bye => {
                let mut r = req.response(200, "OK");
                set_to_tag(&mut r, &c.leg(leg).dialog.local_tag);
                let state = c.state;
                let b_invite = c.b_invite.clone();
                let (a_pending, answered) = (c.a_invite.is_some(), c.answered);
                if a_pending && state != CallState::Ending {
                    c.state = CallState::Cancelling;
                }
                self.respond(now, &key, r);
                if matches!(state, CallState::Ending | CallState::Cancelling) {
                    // Already being torn down; a BYE now (say, the caller's on its early
                    // dialog after its own CANCEL) must not hang up a leg B that still rings.
                    return;
                }
                if a_pending {
                    // Leg A has no 2xx yet: the caller hung up its early dialog (while leg B
                    // rings or an announcement plays), or the callee left while an outbound
                    // prompt held its 2xx back. The caller's INVITE gets its final answer (a
                    // BYE on leg A would name a dialog the caller never confirmed); leg B is
                    // cancelled if it still rings, hung up if it answered.
                    if let Some(k) = b_invite {
                        self.tx.cancel(now, &k);
                    }
                    if leg == Leg::A {
                        self.reply_a_invite(now, call, 487, "Request Terminated");
                        self.finish(call, Outcome::Cancelled);
                        if answered {
                            self.send_bye(now, call, Leg::B);
                        }
                    } else {
                        self.reply_a_invite(now, call, 480, "Temporarily Unavailable");
                        let outcome = if answered {
                            Outcome::Completed
                        } else {
                            Outcome::Rejected(480)
                        };
                        self.finish(call, outcome);
                    }
                    self.maybe_forget(now, call);
                    return;
                }
                self.send_bye(now, call, leg.other());
                self.finish(call, Outcome::Completed);
                self.maybe_forget(now, call);
            }
            Method::Cancel | Method::Ack => {}
            _ => {
                let state = c.state;
                if state == CallState::Ending || state == CallState::Cancelling {
                    let r = req.response(481, "Call/Transaction Does Not Exist");
                    self.respond(now, &key, r);
                    return;
                }
                // The caller's INVITE is still unanswered (it rings, or a prompt holds its 2xx
                // back), or the other leg has no dialog yet (leg B is called only after an
                // inbound prompt): an offer cannot cross to the other party now.
                let not_yet = c.a_invite.is_some()
                    && (req.method == Method::Invite
                        || c.leg(leg.other()).dialog.remote_tag.is_none());
                if matches!(req.method, Method::Invite | Method::Update) && not_yet
                    || req.method == Method::Invite && self.invite_in_progress(call, true)
                {
                    // Glare: an INVITE is already in progress on this call (§14.1, §14.2).
                    let r = req.response(491, "Request Pending");
                    self.respond(now, &key, r);
                    return;
                }
                if req.method == Method::Info {
                    if let Some(why) = bad_flow_info(&req) {
                        // A flow's command that does not parse must not change a recording
                        // silently, nor reach the other party as if it had been obeyed.
                        tracing::info!(call, leg = ?leg, "INFO refused: {why}");
                        let mut r = req.response(400, &format!("Bad Request: {why}"));
                        if let Some(c) = self.calls.get(&call) {
                            set_to_tag(&mut r, &c.leg(leg).dialog.local_tag);
                        }
                        self.respond(now, &key, r);
                        return;
                    }
                }
                if let Some(status) = failed_refer_notify(&req) {
                    self.transfer_failed(call, status);
                }
                self.out.push_back(Output::Call(CallEvent::InDialog {
                    call,
                    leg,
                    method: req.method.to_string(),
                    x_headers: x_tapir_headers(&req),
                    content_type: req.content_type().unwrap_or("").to_string(),
                    body: if req.method == Method::Info {
                        req.body.clone()
                    } else {
                        Vec::new()
                    },
                }));
                if req.method == Method::Info && self.swallow_info_digit(now, call, leg, &req) {
                    let mut r = req.response(200, "OK");
                    if let Some(c) = self.calls.get(&call) {
                        set_to_tag(&mut r, &c.leg(leg).dialog.local_tag);
                    }
                    self.respond(now, &key, r);
                    return;
                }
                self.relay_in_dialog(now, key, req, call, leg);
            }
        }
    }

    /// Whether an INFO from `leg` carries a feature-code digit of the agent to keep from the
    /// customer.
    fn swallow_info_digit(&mut self, now: Instant, call: CallId, leg: Leg, req: &Request) -> bool {
        let agent = self.calls.get(&call).is_some_and(|c| c.customer != leg);
        let Some((f, s)) = self.info_filters.get_mut(&call) else {
            return false;
        };
        if !agent {
            return false;
        }
        let ct = req.content_type().unwrap_or("");
        match media::dtmf::parse_info_body(ct, &req.body) {
            Ok(ev) => feature::event_code(ev.digit).is_some_and(|code| s.press(f, code, now)),
            Err(_) => false,
        }
    }

    /// Relays an in-dialog request (re-INVITE, UPDATE, INFO, OPTIONS, NOTIFY, REFER...) to the
    /// other leg, with SDP anchored; its answer comes back through [`Relay`].
    fn relay_in_dialog(&mut self, now: Instant, key: TxKey, req: Request, call: CallId, leg: Leg) {
        let to = leg.other();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let l = c.leg_mut(to);
        let mut out = l.dialog.request(req.method.clone());
        let peer = l.peer;
        out.headers.push_front("Via", self.via(peer));
        if matches!(
            req.method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Refer | Method::Notify
        ) {
            out.headers.push("Contact", self.contact(peer));
        }
        copy_end_to_end_headers(&req, &mut out);
        if req.method == Method::Refer {
            self.rewrite_refer_to(now, call, leg, &mut out);
        }
        let has_sdp = req.has_sdp();
        let ct = req.content_type().map(str::to_string);
        let kind = if matches!(req.method, Method::Ack | Method::Prack) {
            secure::SdpKind::Answer
        } else {
            secure::SdpKind::Offer
        };
        out.body = match self.copy_body(
            call,
            leg,
            has_sdp,
            &req.body,
            ct.as_deref(),
            &mut out.headers,
            kind,
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(call, reason = e.reason(), "in-dialog offer refused");
                let reason = format!("Not Acceptable Here: {}", e.reason());
                let r = req.response(488, &reason);
                self.respond(now, &key, r);
                return;
            }
        };
        let k = self.tx.send_request(now, out, peer);
        self.client.insert(
            k,
            (
                call,
                Purpose::Relay(Box::new(Relay {
                    call,
                    from_leg: leg,
                    server: key,
                    request: req,
                })),
            ),
        );
    }

    fn send_bye(&mut self, now: Instant, call: CallId, leg: Leg) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.state = CallState::Ending;
        let l = c.leg_mut(leg);
        if l.dialog.remote_tag.is_none() && leg == Leg::B {
            return;
        }
        let mut bye = l.dialog.request(Method::Bye);
        let peer = l.peer;
        c.byes_pending += 1;
        bye.headers.push_front("Via", self.via(peer));
        let k = self.tx.send_request(now, bye, peer);
        self.client.insert(k, (call, Purpose::Bye));
    }

    fn bye_done(&mut self, now: Instant, call: CallId) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.byes_pending = c.byes_pending.saturating_sub(1);
        }
        self.maybe_forget(now, call);
    }

    /// Records the outcome and releases media at once: the call may linger in SIP (BYE
    /// answers, a CANCEL race) but its ports are free from here.
    fn finish(&mut self, call: CallId, outcome: Outcome) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.outcome.is_none() || matches!(c.outcome, Some(Outcome::Rejected(_))) {
            c.outcome.get_or_insert(outcome);
        }
        // A prompt still playing must not continue the call when it ends (the relay stops
        // it with the media, but a report may already be on its way).
        c.ann.phase = None;
        if c.media_open {
            c.media_open = false;
            let (a, b) = (c.a.port, c.b.port);
            self.ports.release_pair(a, b);
            self.out
                .push_back(Output::Media(MediaCommand::Close { call }));
            let outcome = c.outcome.unwrap_or(outcome);
            self.out
                .push_back(Output::Call(CallEvent::Ended { call, outcome }));
        }
    }

    /// Forgets a call whose SIP is all done.
    fn maybe_forget(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let b_open = c.b_invite.is_some();
        let a_open = c.a_invite.is_some();
        if c.byes_pending > 0 || b_open || a_open {
            return;
        }
        if c.state == CallState::Confirmed || c.state == CallState::Answered {
            return;
        }
        let key_a = (c.a.dialog.call_id.clone(), c.a.dialog.local_tag.clone());
        let key_b = (c.b.dialog.call_id.clone(), c.b.dialog.local_tag.clone());
        let outcome = c.outcome.unwrap_or(Outcome::Completed);
        self.finish(call, outcome);
        self.dialogs.remove(&key_a);
        self.dialogs.remove(&key_b);
        self.forgotten.insert(now, key_a);
        self.forgotten.insert(now, key_b);
        self.calls.remove(&call);
        self.info_filters.remove(&call);
        // A request relayed to the other leg and still unanswered must get a final response
        // (§15.1.2 recommends 487); its server transaction would otherwise wait forever.
        let mut unanswered = Vec::new();
        self.client.retain(|_, (c, p)| {
            if *c != call {
                return true;
            }
            if let Purpose::Relay(r) = p {
                unanswered.push((
                    r.server.clone(),
                    r.request.response(487, "Request Terminated"),
                ));
            }
            false
        });
        for (key, r) in unanswered {
            self.respond(now, &key, r);
        }
    }
}

/// The first of `items` in the address family of `peer` (an IPv4 peer seen through a
/// dual-stack socket counts as IPv4), else the first item.
fn same_family<T: Copy>(peer: Peer, items: &[T], is_v4: fn(&T) -> bool) -> Option<T> {
    let v4 = peer.addr.is_ipv4()
        || matches!(peer.addr.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    items
        .iter()
        .find(|a| is_v4(a) == v4)
        .or(items.first())
        .copied()
}

/// The `X-Tapir-*` headers of a request (flow directives, consent, policy facts).
/// Why an in-dialog INFO cannot be obeyed: an `X-Tapir-Record` or `X-Tapir-Consent` that does
/// not parse, or a DTMF body (`application/dtmf-relay`, `application/dtmf`) that is not one
/// digit. `None` for anything else, which is relayed as it is.
fn bad_flow_info(req: &Request) -> Option<String> {
    if let Some(v) = req.headers.get("X-Tapir-Record") {
        if let Err(e) = policy::parse_record_header(v) {
            return Some(format!("X-Tapir-Record: {e}"));
        }
    }
    if let Some(v) = req.headers.get("X-Tapir-Consent") {
        if let Err(e) = v.trim().parse::<policy::Consent>() {
            return Some(format!("X-Tapir-Consent: {e}"));
        }
    }
    let ct = req.content_type().unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    let dtmf = media.eq_ignore_ascii_case("application/dtmf-relay")
        || media.eq_ignore_ascii_case("application/dtmf");
    if dtmf {
        if let Err(e) = media::dtmf::parse_info_body(ct, &req.body) {
            return Some(format!("DTMF body: {e}"));
        }
    }
    None
}

/// The final status a transferee reports in a NOTIFY of the `refer` event package (RFC 3515
/// §2.4.5: a `message/sipfrag` body whose status line is the transferred INVITE's), when it
/// is 300 or more: the transfer failed.
fn failed_refer_notify(req: &Request) -> Option<u16> {
    if req.method != Method::Notify {
        return None;
    }
    let event = req.headers.get("Event").or_else(|| req.headers.get("o"))?;
    if !event.trim().to_ascii_lowercase().starts_with("refer") {
        return None;
    }
    let ct = req.content_type()?.to_ascii_lowercase();
    if !ct.starts_with("message/sipfrag") {
        return None;
    }
    let line = std::str::from_utf8(&req.body).ok()?.lines().next()?;
    let status: u16 = line.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
    (status >= 300).then_some(status)
}

fn x_tapir_headers(req: &Request) -> Vec<(String, String)> {
    req.headers
        .0
        .iter()
        .filter(|(n, _)| n.len() > 8 && n[..8].eq_ignore_ascii_case("x-tapir-"))
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

fn strip_tag(na: &NameAddr) -> NameAddr {
    let mut n = na.clone();
    n.params.remove("tag");
    n
}

/// An address as a Via sent-by or a URI's host and port: IPv6 in brackets and without the
/// scope id that `SocketAddr` prints as `%n` (SIP has no syntax for it, and tapir's own parser
/// would refuse the Via it wrote). `sip::Host::from(ip)` prints the same host but builds a
/// `String`; this is written into every request and Contact tapir sends.
struct HostPort(SocketAddr);

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "{a}"),
            SocketAddr::V6(a) => write!(f, "[{}]:{}", a.ip(), a.port()),
        }
    }
}

fn set_to_tag(r: &mut Response, tag: &str) {
    if r.to_tag().is_some() {
        return;
    }
    let Some(to) = r
        .headers
        .0
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("To"))
    else {
        return;
    };
    // A `tag` without a value is replaced rather than kept beside ours: peers read the
    // first tag parameter, and a bare one would leave the dialog without a To tag.
    // Looked for by a byte search first: this runs for every response tapir sends its caller.
    let may_have_tag =
        to.1.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"tag"));
    if may_have_tag
        && sip::uri::NameAddrRef::parse(&to.1).is_ok_and(|v| sip::uri::Params::has(v.params, "tag"))
    {
        if let Ok(mut a) = NameAddr::parse(&to.1) {
            a.params.set("tag", Some(tag.to_string()));
            to.1 = a.to_string();
        }
        return;
    }
    // The To value was checked when the request was parsed; without a tag parameter, one
    // appended to it is a header parameter in either form (`<uri>;p` or `uri;p`).
    to.1.push_str(";tag=");
    to.1.push_str(tag);
}

/// Copies headers that mean something end to end (identity, auth, custom X- headers,
/// Supported, Allow, Session-Expires...) from one leg's request to the other's.
fn copy_end_to_end_headers(src: &Request, dst: &mut Request) {
    for (n, v) in &src.headers.0 {
        if LEG_LOCAL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n)) {
            continue;
        }
        // Already in canonical spelling: no need to look the name up again.
        dst.headers.0.push((n.clone(), v.clone()));
    }
}

fn copy_response_headers(src: &Response, dst: &mut Response) {
    for (n, v) in &src.headers.0 {
        if LEG_LOCAL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n)) {
            continue;
        }
        dst.headers.0.push((n.clone(), v.clone()));
    }
}

/// A response that creates leg A's dialog (18x, 2xx to the INVITE) carries the INVITE's
/// Record-Route values, in order (RFC 3261 §12.1.1): the caller's route set is then the
/// proxies that asked to stay on the path (a load balancer in front of several nodes), and
/// its ACK, BYE and re-INVITEs come back through them to this node.
fn copy_record_route(req: &Request, resp: &mut Response) {
    for v in req.headers.get_all("Record-Route") {
        resp.headers.push("Record-Route", v.to_string());
    }
}

/// Re-exported for the IO layer: parse helper for stream framing.
pub use sip::message::frame_len;

/// Helper for tests and the IO layer: the default timers.
pub fn default_timers() -> Timers {
    Timers::default()
}

/// Tells whether `uri` names tapir itself (used by tests for loop checks).
pub fn is_tapir_branch(via: &Via) -> bool {
    via.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> B2bua {
        let cfg = Config {
            sip_addrs: vec!["192.0.2.1:5060".parse().unwrap()],
            media_ips: vec!["192.0.2.1".parse().unwrap()],
            timers: sip::transaction::Timers::default(),
            rtp_ports: (40000, 40099),
            id_seed: 1,
            user_agent: "tapir-test".into(),
        };
        B2bua::new(cfg, routing::Routes::default())
    }

    fn outputs(b: &mut B2bua) -> Vec<(Peer, Vec<u8>)> {
        std::iter::from_fn(|| b.poll_output())
            .filter_map(|o| match o {
                Output::Transmit { to, data } => Some((to, data)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_ping_on_a_connection_gets_a_pong_and_udp_crlfs_get_nothing() {
        let mut b = core();
        let now = Instant::now();
        let tcp = Peer {
            addr: "192.0.2.10:40123".parse().unwrap(),
            transport: Transport::Tcp,
        };
        let udp = Peer {
            addr: "192.0.2.10:5060".parse().unwrap(),
            transport: Transport::Udp,
        };
        b.handle_message(now, b"\r\n\r\n", tcp);
        assert_eq!(outputs(&mut b), [(tcp, b"\r\n".to_vec())]);
        // A pong or stray CRLF on a connection, and any CRLFs over UDP, are not answered.
        b.handle_message(now, b"\r\n", tcp);
        b.handle_message(now, b"\r\n\r\n", udp);
        b.handle_message(now, b"\r\n", udp);
        assert!(outputs(&mut b).is_empty());
        let s = b.stats();
        assert_eq!(s.keepalives, 4);
        assert_eq!(s.parse_errors, 0, "keep-alives are no parse errors");
        assert_eq!((s.messages_in, s.messages_out), (0, 0), "nor SIP messages");
        // Junk is still junk.
        b.handle_message(now, b"\r\nX\r\n\r\n", udp);
        assert_eq!(b.stats().parse_errors, 1);
        assert_eq!(b.stats().keepalives, 4);
    }

    #[test]
    fn sent_by_has_ipv6_in_brackets_and_no_scope_id() {
        let v6: SocketAddr = "[fe80::1%2]:5060".parse().unwrap();
        assert_eq!(HostPort(v6).to_string(), "[fe80::1]:5060");
        let v4: SocketAddr = "192.0.2.1:5080".parse().unwrap();
        assert_eq!(HostPort(v4).to_string(), "192.0.2.1:5080");
        let via = format!("SIP/2.0/UDP {};branch=z9hG4bK1", HostPort(v6));
        assert!(sip::ViaRef::parse(&via).is_ok(), "{via}");
    }
}
