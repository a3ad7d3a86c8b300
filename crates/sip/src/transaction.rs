//! The RFC 3261 §17 transaction layer, sans-IO.
//!
//! [`TransactionLayer`] matches incoming messages to client and server transactions, absorbs
//! retransmissions, retransmits over unreliable transports and fires timers A–K. It also
//! carries the two INVITE duties RFC 6026 moved next to the transactions: retransmitting a 2xx
//! until its ACK arrives (server) and passing retransmitted 2xx up so the UAC can re-ACK
//! (client).
//!
//! The caller drives it str0m-style: feed input with `handle_*`, then drain [`poll_output`]
//! until it returns `None`, and call [`handle_timeout`] at [`poll_timeout`].
//!
//! [`poll_output`]: TransactionLayer::poll_output
//! [`handle_timeout`]: TransactionLayer::handle_timeout
//! [`poll_timeout`]: TransactionLayer::poll_timeout

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::message::{HeaderAccess, Message, Method, Request, Response};
use crate::uri::Transport;

/// The far end of a message: where it came from or where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// RFC 3261 timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Identifies a transaction: the branch of the top Via, plus the method (ACK folds into
/// INVITE, §17.2.3) and, on the server side, the sent-by of the top Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    pub branch: String,
    pub method: Method,
    pub sent_by: String,
    pub server: bool,
}

/// What the transaction layer tells its user.
#[derive(Debug)]
pub enum Event {
    /// A new request opened a server transaction; answer with [`TransactionLayer::respond`].
    Request {
        key: TxKey,
        request: Request,
        from: Peer,
    },
    /// An ACK that matched no transaction: the ACK for a 2xx (dialog-level).
    Ack { request: Request, from: Peer },
    /// A response for a client transaction.
    Response { key: TxKey, response: Response },
    /// A 2xx retransmission after the INVITE client transaction ended; re-send the ACK.
    Stray2xx { response: Response, from: Peer },
    /// Timer B or F fired: treat as 408 (§8.1.3.1).
    Timeout { key: TxKey },
    /// CANCEL matched a pending INVITE server transaction; it has been answered with 200.
    Cancelled { invite: TxKey },
    /// A 2xx sent on an INVITE was never acknowledged within 64*T1 (§13.3.1.4): end the dialog.
    AckTimeout { call_id: String, cseq: u32 },
}

#[derive(Debug)]
pub enum Output {
    Transmit { to: Peer, data: Vec<u8> },
    Event(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// Server INVITE after 2xx (RFC 6026 "Accepted"): retransmit the 2xx until ACK.
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// A/E/G: retransmit.
    Retransmit,
    /// B/F/H/L: give up.
    Timeout,
    /// D/I/J/K: linger, then forget.
    Linger,
}

#[derive(Debug)]
struct Tx {
    state: State,
    peer: Peer,
    /// Last message sent, for retransmission.
    last: Vec<u8>,
    /// The request that opened the transaction (client: for CANCEL and ACK construction).
    request: Option<Request>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    linger_at: Option<Instant>,
    cancel_pending: bool,
    generation: u64,
}

impl Tx {
    fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.linger_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Counters the binary exports as metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub retransmissions_sent: u64,
    pub retransmissions_absorbed: u64,
    pub timeouts: u64,
    pub unmatched_responses: u64,
}

pub struct TransactionLayer {
    timers: Timers,
    txs: HashMap<TxKey, Tx>,
    /// Min-heap of (deadline, generation, key); entries whose generation no longer matches
    /// the transaction's are stale and skipped.
    wakeups: BinaryHeap<Reverse<(Instant, u64, TxKey)>>,
    /// INVITE server transactions in Accepted, by (Call-ID, CSeq number), so a 2xx ACK (which
    /// has its own branch) can stop the 2xx retransmissions.
    accepted: HashMap<(String, u32), TxKey>,
    out: VecDeque<Output>,
    next_generation: u64,
    stats: Stats,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            txs: HashMap::new(),
            wakeups: BinaryHeap::new(),
            accepted: HashMap::new(),
            out: VecDeque::new(),
            next_generation: 0,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, generation, key))) = self.wakeups.peek() {
            match self.txs.get(key) {
                Some(tx) if tx.generation == *generation => return Some(*at),
                _ => {
                    self.wakeups.pop();
                }
            }
        }
        None
    }

    fn schedule(&mut self, key: &TxKey) {
        let generation = self.next_generation;
        self.next_generation += 1;
        if let Some(tx) = self.txs.get_mut(key) {
            tx.generation = generation;
            if let Some(at) = tx.next_deadline() {
                self.wakeups.push(Reverse((at, generation, key.clone())));
            }
        }
    }

    fn transmit(&mut self, to: Peer, data: Vec<u8>) {
        self.out.push_back(Output::Transmit { to, data });
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// Feeds one parsed message received from `from`.
    pub fn handle_message(&mut self, now: Instant, msg: Message, from: Peer) {
        match msg {
            Message::Request(r) => self.handle_request(now, r, from),
            Message::Response(r) => self.handle_response(now, r, from),
        }
    }

    fn server_key(req: &Request) -> TxKey {
        let via = req.top_via();
        let (branch, sent_by) = match &via {
            Some(v) => (
                v.branch().unwrap_or("").to_string(),
                format!("{}:{}", v.host, v.port.unwrap_or(0)),
            ),
            None => (String::new(), String::new()),
        };
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        // RFC 2543 peers have no magic cookie: fall back to a key built from the fields
        // §17.2.3 names for them.
        let branch = if branch.starts_with("z9hG4bK") {
            branch
        } else {
            let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
            format!(
                "2543:{}:{}:{}:{}",
                req.call_id(),
                req.from_tag().unwrap_or_default(),
                cseq,
                branch
            )
        };
        TxKey {
            branch,
            method,
            sent_by,
            server: true,
        }
    }

    fn handle_request(&mut self, now: Instant, mut req: Request, from: Peer) {
        stamp_received(&mut req, from);
        let key = Self::server_key(&req);
        if req.method == Method::Ack {
            if let Some(tx) = self.txs.get_mut(&key) {
                if tx.state == State::Completed {
                    // ACK for a non-2xx final: stop G/H, linger for I.
                    tx.state = State::Confirmed;
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                    tx.linger_at = Some(
                        now + if from.transport.is_reliable() {
                            Duration::ZERO
                        } else {
                            self.timers.t4
                        },
                    );
                    self.schedule(&key);
                } else {
                    self.stats.retransmissions_absorbed += 1;
                }
                return;
            }
            let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
            if let Some(inv) = self.accepted.remove(&(req.call_id().to_string(), cseq)) {
                self.txs.remove(&inv);
            }
            self.event(Event::Ack { request: req, from });
            return;
        }
        if let Some(tx) = self.txs.get(&key) {
            // A retransmission: repeat the last response, if any (§17.2.1, §17.2.2).
            self.stats.retransmissions_absorbed += 1;
            if !tx.last.is_empty() && tx.state != State::Accepted {
                let (peer, last) = (tx.peer, tx.last.clone());
                self.transmit(peer, last);
            }
            return;
        }
        if req.method == Method::Cancel {
            let invite_key = TxKey {
                method: Method::Invite,
                ..key.clone()
            };
            let resp_peer = response_peer(&req, from);
            let pending = self
                .txs
                .get(&invite_key)
                .map(|t| matches!(t.state, State::Proceeding | State::Trying));
            let resp = match pending {
                Some(_) => req.response(200, "OK"),
                None => req.response(481, "Call/Transaction Does Not Exist"),
            };
            self.create_server_tx(now, key.clone(), resp_peer, State::Trying);
            self.respond(now, &key, resp);
            if pending == Some(true) {
                self.event(Event::Cancelled { invite: invite_key });
            }
            return;
        }
        let peer = response_peer(&req, from);
        if req.method == Method::Invite {
            self.create_server_tx(now, key.clone(), peer, State::Proceeding);
            // A B2BUA always forwards the INVITE; say so at once so the caller stops
            // retransmitting (§17.2.1).
            let trying = req.response(100, "Trying");
            if let Some(tx) = self.txs.get_mut(&key) {
                tx.last = trying.to_bytes();
            }
            self.transmit(peer, trying.to_bytes());
        } else {
            self.create_server_tx(now, key.clone(), peer, State::Trying);
        }
        self.event(Event::Request {
            key,
            request: req,
            from,
        });
    }

    fn create_server_tx(&mut self, _now: Instant, key: TxKey, peer: Peer, state: State) {
        self.txs.insert(
            key,
            Tx {
                state,
                peer,
                last: Vec::new(),
                request: None,
                interval: self.timers.t1,
                retransmit_at: None,
                timeout_at: None,
                linger_at: None,
                cancel_pending: false,
                generation: 0,
            },
        );
    }

    /// Sends a response on a server transaction. Unknown or ended transactions are ignored:
    /// the user may answer late after a CANCEL or a timeout.
    pub fn respond(&mut self, now: Instant, key: &TxKey, resp: Response) {
        let t = self.timers;
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        if matches!(
            tx.state,
            State::Completed | State::Confirmed | State::Accepted
        ) {
            return;
        }
        let bytes = resp.to_bytes();
        let reliable = tx.peer.transport.is_reliable();
        let peer = tx.peer;
        tx.last = bytes.clone();
        if resp.status < 200 {
            tx.state = State::Proceeding;
        } else if key.method == Method::Invite {
            tx.interval = t.t1;
            tx.retransmit_at = (!reliable).then(|| now + t.t1);
            tx.timeout_at = Some(now + 64 * t.t1);
            if resp.status < 300 {
                tx.state = State::Accepted;
                let cseq = resp.cseq().map(|c| c.seq).unwrap_or(0);
                self.accepted
                    .insert((resp.call_id().to_string(), cseq), key.clone());
            } else {
                tx.state = State::Completed;
            }
            self.schedule(key);
        } else {
            tx.state = State::Completed;
            tx.linger_at = Some(now + if reliable { Duration::ZERO } else { 64 * t.t1 });
            self.schedule(key);
        }
        self.transmit(peer, bytes);
    }

    /// Sends a request in a new client transaction; returns its key. ACK must go through
    /// [`send_stateless`](Self::send_stateless) instead.
    pub fn send_request(&mut self, now: Instant, req: Request, to: Peer) -> TxKey {
        let t = self.timers;
        let via = req.top_via();
        let key = TxKey {
            branch: via
                .as_ref()
                .and_then(|v| v.branch().map(str::to_string))
                .unwrap_or_default(),
            method: req.method.clone(),
            sent_by: String::new(),
            server: false,
        };
        let bytes = req.to_bytes();
        let reliable = to.transport.is_reliable();
        let state = if req.method == Method::Invite {
            State::Calling
        } else {
            State::Trying
        };
        self.txs.insert(
            key.clone(),
            Tx {
                state,
                peer: to,
                last: bytes.clone(),
                request: Some(req),
                interval: t.t1,
                retransmit_at: (!reliable).then(|| now + t.t1),
                timeout_at: Some(now + 64 * t.t1),
                linger_at: None,
                cancel_pending: false,
                generation: 0,
            },
        );
        self.schedule(&key);
        self.transmit(to, bytes);
        key
    }

    /// Sends a message outside any transaction (ACK for 2xx, stateless replies).
    pub fn send_stateless(&mut self, msg: &Message, to: Peer) {
        self.transmit(to, msg.to_bytes());
    }

    /// Cancels a pending INVITE client transaction (§9.1). The CANCEL waits for a provisional
    /// response if none has arrived yet; after a final response it is not sent.
    pub fn cancel(&mut self, now: Instant, key: &TxKey) {
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        match tx.state {
            State::Calling => tx.cancel_pending = true,
            State::Proceeding => {
                if let Some(cancel) = tx.request.as_ref().map(build_cancel) {
                    let peer = tx.peer;
                    self.send_request(now, cancel, peer);
                }
            }
            _ => {}
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Response, from: Peer) {
        let t = self.timers;
        let Some(cseq) = resp.cseq() else {
            self.stats.unmatched_responses += 1;
            return;
        };
        let branch = resp
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let key = TxKey {
            branch,
            method: cseq.method.clone(),
            sent_by: String::new(),
            server: false,
        };
        let Some(tx) = self.txs.get_mut(&key) else {
            if key.method == Method::Invite && (200..300).contains(&resp.status) {
                self.event(Event::Stray2xx {
                    response: resp,
                    from,
                });
            } else {
                self.stats.unmatched_responses += 1;
            }
            return;
        };
        let reliable = tx.peer.transport.is_reliable();
        let is_invite = key.method == Method::Invite;
        match (tx.state, resp.status) {
            (State::Calling | State::Trying | State::Proceeding, 100..=199) => {
                let was_calling = tx.state == State::Calling;
                tx.state = State::Proceeding;
                if is_invite {
                    tx.retransmit_at = None;
                } else if !reliable {
                    // §17.1.2.2: in Proceeding, retransmit at T2.
                    tx.interval = t.t2;
                    tx.retransmit_at = Some(now + t.t2);
                }
                let send_cancel = was_calling && tx.cancel_pending;
                let cancel = send_cancel.then(|| tx.request.as_ref().map(build_cancel));
                let peer = tx.peer;
                self.schedule(&key);
                if let Some(Some(c)) = cancel {
                    self.send_request(now, c, peer);
                }
                self.event(Event::Response {
                    key,
                    response: resp,
                });
            }
            (State::Calling | State::Proceeding, 200..=299) if is_invite => {
                // The INVITE client transaction ends on 2xx; the UAC core ACKs (§17.1.1.2).
                self.txs.remove(&key);
                self.event(Event::Response {
                    key,
                    response: resp,
                });
            }
            (State::Calling | State::Proceeding, _) if is_invite => {
                let ack = tx.request.as_ref().map(|r| build_ack_for_error(r, &resp));
                tx.state = State::Completed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.linger_at = Some(now + if reliable { Duration::ZERO } else { 32 * t.t1 });
                let peer = tx.peer;
                if let Some(ack) = ack {
                    let bytes = ack.to_bytes();
                    if let Some(tx) = self.txs.get_mut(&key) {
                        tx.last = bytes.clone();
                    }
                    self.transmit(peer, bytes);
                }
                self.schedule(&key);
                self.event(Event::Response {
                    key,
                    response: resp,
                });
            }
            (State::Completed, _) if is_invite => {
                // Retransmitted final: repeat the ACK (§17.1.1.2).
                self.stats.retransmissions_absorbed += 1;
                let (peer, last) = (tx.peer, tx.last.clone());
                self.transmit(peer, last);
            }
            (State::Trying | State::Proceeding, 200..) => {
                tx.state = State::Completed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.linger_at = Some(now + if reliable { Duration::ZERO } else { t.t4 });
                self.schedule(&key);
                self.event(Event::Response {
                    key,
                    response: resp,
                });
            }
            _ => self.stats.retransmissions_absorbed += 1,
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.timers;
        while let Some(Reverse((at, generation, key))) = self.wakeups.peek().cloned() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            if tx.generation != generation {
                continue;
            }
            let kind = if tx.linger_at.is_some_and(|l| l <= now) {
                TimerKind::Linger
            } else if tx.timeout_at.is_some_and(|l| l <= now) {
                TimerKind::Timeout
            } else {
                TimerKind::Retransmit
            };
            match kind {
                TimerKind::Linger => {
                    self.txs.remove(&key);
                }
                TimerKind::Timeout => {
                    let state = tx.state;
                    let removed = self.txs.remove(&key);
                    if key.server {
                        if state == State::Accepted {
                            if let Some(r) = removed.and_then(|tx| tx.request) {
                                let _ = r;
                            }
                            let found = self
                                .accepted
                                .iter()
                                .find(|(_, k)| **k == key)
                                .map(|(id, _)| id.clone());
                            if let Some(id) = found {
                                self.accepted.remove(&id);
                                self.event(Event::AckTimeout {
                                    call_id: id.0,
                                    cseq: id.1,
                                });
                            }
                        }
                        // Timer H: no ACK for a non-2xx final; nothing more to do.
                    } else {
                        self.stats.timeouts += 1;
                        self.event(Event::Timeout { key });
                    }
                }
                TimerKind::Retransmit => {
                    // A and G double without bound until B/H; E and G cap at T2 (§17.1.2.2,
                    // §17.2.1). INVITE client (A) is the only uncapped one.
                    let uncapped = !key.server && key.method == Method::Invite;
                    tx.interval = if uncapped {
                        tx.interval * 2
                    } else {
                        (tx.interval * 2).min(t.t2)
                    };
                    if !key.server && tx.state == State::Proceeding {
                        tx.interval = t.t2;
                    }
                    tx.retransmit_at = Some(now + tx.interval);
                    let (peer, last) = (tx.peer, tx.last.clone());
                    self.stats.retransmissions_sent += 1;
                    self.transmit(peer, last);
                    self.schedule(&key);
                }
            }
        }
    }
}

/// RFC 3581 / §18.2.1: record where the request really came from in its top Via, so the
/// response goes back to the source address even behind NAT.
fn stamp_received(req: &mut Request, from: Peer) {
    let Some(mut via) = req.top_via() else {
        return;
    };
    let ip = from.addr.ip();
    let mut changed = false;
    if via.host.ip() != Some(ip) {
        via.params.set("received", Some(ip.to_string()));
        changed = true;
    }
    if via.params.get("rport") == Some(None) {
        via.params.set("rport", Some(from.addr.port().to_string()));
        changed = true;
    }
    if changed {
        req.headers.remove_first_value("Via");
        req.headers.push_front("Via", via.to_string());
    }
}

/// Where responses to `req` go (§18.2.2, RFC 3581 §4): the source for reliable transports and
/// for `rport`; otherwise the source IP and the port in the Via.
fn response_peer(req: &Request, from: Peer) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    match req.top_via() {
        Some(v) if v.params.contains("rport") => from,
        Some(v) => Peer {
            addr: SocketAddr::new(from.addr.ip(), v.port.unwrap_or(5060)),
            transport: from.transport,
        },
        None => from,
    }
}

/// CANCEL for a pending INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number and
/// top Via; Route copied.
pub fn build_cancel(invite: &Request) -> Request {
    let mut c = Request::new(Method::Cancel, invite.uri.clone());
    for (n, v) in &invite.headers.0 {
        match n.as_str() {
            "Via" => {
                if c.headers.count("Via") == 0 {
                    let top = crate::uri::split_unquoted(v, ',')[0].trim().to_string();
                    c.headers.push("Via", top);
                }
            }
            "From" | "To" | "Call-ID" | "Route" | "Max-Forwards" => c.headers.push(n, v.clone()),
            "CSeq" => {
                let seq = invite.cseq().map(|s| s.seq).unwrap_or(1);
                c.headers.push("CSeq", format!("{seq} CANCEL"));
            }
            _ => {}
        }
    }
    c
}

/// ACK for a non-2xx final response, generated by the transaction (§17.1.1.3).
fn build_ack_for_error(invite: &Request, resp: &Response) -> Request {
    let mut a = Request::new(Method::Ack, invite.uri.clone());
    for (n, v) in &invite.headers.0 {
        match n.as_str() {
            "Via" => {
                if a.headers.count("Via") == 0 {
                    let top = crate::uri::split_unquoted(v, ',')[0].trim().to_string();
                    a.headers.push("Via", top);
                }
            }
            "From" | "Call-ID" | "Route" | "Max-Forwards" => a.headers.push(n, v.clone()),
            "CSeq" => {
                let seq = invite.cseq().map(|s| s.seq).unwrap_or(1);
                a.headers.push("CSeq", format!("{seq} ACK"));
            }
            _ => {}
        }
    }
    if let Some(to) = resp.headers.get("To") {
        a.headers.push("To", to.to_string());
    }
    a
}
