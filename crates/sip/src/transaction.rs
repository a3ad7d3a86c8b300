//! The RFC 3261 §17 transaction layer, sans-IO.
//!
//! [`TransactionLayer`] matches incoming messages to client and server transactions, absorbs
//! retransmissions, retransmits over unreliable transports and fires timers A–K. It also
//! carries the INVITE duties RFC 6026 moved next to the transactions: retransmitting a 2xx
//! until its ACK arrives and absorbing INVITE retransmissions until Timer L (server), passing
//! retransmitted 2xx up so the UAC can re-ACK (client), and Timer C, which bounds how long a
//! ringing INVITE may wait for its final response.
//!
//! Every transaction ends on its own timers, so the layer holds nothing for a request once
//! they have run (`len()` returns to zero); `tests/transaction.rs` checks each timer on a
//! virtual clock and `tests/network.rs` runs two layers over a lossy network.
//!
//! The caller drives it str0m-style: feed input with `handle_*`, then drain [`poll_output`]
//! until it returns `None`, and call [`handle_timeout`] at [`poll_timeout`].
//!
//! [`poll_output`]: TransactionLayer::poll_output
//! [`handle_timeout`]: TransactionLayer::handle_timeout
//! [`poll_timeout`]: TransactionLayer::poll_timeout

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::OnceLock;
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
///
/// The key carries a keyed hash of its fields, computed once when it is made. At 1,000 calls
/// per second the table holds ~100,000 lingering transactions; growing it rehashed every key
/// (SipHash over each branch) in one go, a stall of several milliseconds on the signalling
/// thread. With the hash kept, growth only moves entries (and those a few at a time: see
/// [`TxMap`]). The hash is keyed per process, so a peer cannot choose branches that collide.
#[derive(Debug, Clone)]
pub struct TxKey {
    branch: String,
    method: Method,
    sent_by: String,
    server: bool,
    hash: u64,
}

impl TxKey {
    pub fn new(branch: String, method: Method, sent_by: String, server: bool) -> Self {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let hash = KEYS
            .get_or_init(Default::default)
            .hash_one((&branch, &method, &sent_by, server));
        TxKey {
            branch,
            method,
            sent_by,
            server,
            hash,
        }
    }

    /// The branch of the top Via (for RFC 2543 peers, the fields standing in for it).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn sent_by(&self) -> &str {
        &self.sent_by
    }

    pub fn is_server(&self) -> bool {
        self.server
    }

    /// The same transaction's key for another method (a CANCEL finds its INVITE).
    fn with_method(&self, method: Method) -> Self {
        TxKey::new(
            self.branch.clone(),
            method,
            self.sent_by.clone(),
            self.server,
        )
    }
}

impl PartialEq for TxKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.server == other.server
            && self.method == other.method
            && self.branch == other.branch
            && self.sent_by == other.sent_by
    }
}

impl Eq for TxKey {}

impl Hash for TxKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`TxKey`]'s kept hash through: the transaction table hashes nothing itself.
#[derive(Default)]
struct KeptHash(u64);

impl Hasher for KeptHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `TxKey`; fold anything else in rather than lose it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The tables that grow with the call rate (transactions linger 32 s after they end) are
/// `griddle` maps: when one outgrows its allocation it moves its entries to the new one a few
/// per insert rather than all in one insert. A standard map of ~100,000 lingering transactions
/// stopped the signalling thread for milliseconds each time it doubled, and every call set up
/// in that moment waited (`cargo bench -p b2bua --bench signalling` prints the longest steps).
type TxMap<V> = griddle::HashMap<TxKey, V, BuildHasherDefault<KeptHash>>;

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
    /// A 2xx that matches no live INVITE client transaction: a retransmission after the
    /// transaction ended (re-send the ACK), or a 2xx from another fork or after Timer C (ACK it,
    /// then BYE, when no dialog wants it).
    Stray2xx { response: Response, from: Peer },
    /// Timer B, C or F fired: treat as 408 (§8.1.3.1). After Timer C (a ringing INVITE that
    /// never got a final response) the layer has already sent the CANCEL and will ACK the 487
    /// on its own; a 2xx that still arrives is reported as [`Event::Stray2xx`].
    Timeout { key: TxKey },
    /// A connection (TCP or TLS) to the transaction's peer could not be opened or its
    /// handshake failed while the request was waiting to get through: the transaction has
    /// ended (§17.1.1.2, §17.1.2.2); treat as 503 (§8.1.3.1). The layer tracks peers, not
    /// connections: see [`TransactionLayer::transport_error`].
    TransportError { key: TxKey },
    /// CANCEL matched a pending INVITE server transaction; it has been answered with 200.
    Cancelled { invite: TxKey },
    /// A 2xx sent on an INVITE was never acknowledged within 64*T1 (§13.3.1.4): end the dialog.
    AckTimeout { call_id: String, cseq: u32 },
}

// Events are far rarer than transmissions and are moved out at once; boxing them would only
// add an allocation per event.
#[allow(clippy::large_enum_variant)]
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
    /// Client INVITE given up by Timer C: a late final response is absorbed, not reported.
    abandoned: bool,
    /// Server INVITE answered 2xx: its entry in [`TransactionLayer::accepted`].
    accepted_id: Option<(String, u32)>,
    generation: u64,
    /// The deadline of this transaction's entry in the timer queue, if it has one.
    wake_at: Option<Instant>,
}

impl Tx {
    fn new(state: State, peer: Peer, interval: Duration) -> Self {
        Tx {
            state,
            peer,
            last: Vec::new(),
            request: None,
            interval,
            retransmit_at: None,
            timeout_at: None,
            linger_at: None,
            cancel_pending: false,
            abandoned: false,
            accepted_id: None,
            generation: 0,
            wake_at: None,
        }
    }

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
    pub transport_errors: u64,
}

/// RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element and is
/// unique on its own.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Timer D's floor on unreliable transports (§17.1.1.2: "at least 32 seconds"); it grows with
/// T1 so that it always outlasts the server's Timer H.
const TIMER_D_MIN: Duration = Duration::from_secs(32);

/// How long an INVITE client transaction waits for a final response once a provisional one has
/// arrived (Timer C, RFC 3261 §16.6 item 11: more than 3 minutes). Each provisional restarts
/// it. Timer B only covers the Calling state, so without this bound a far end that rings
/// forever would keep the transaction alive forever.
pub const TIMER_C: Duration = Duration::from_secs(181);

pub struct TransactionLayer {
    timers: Timers,
    timer_c: Duration,
    /// Boxed: at 1,000 calls per second the table grows to ~100,000 lingering transactions,
    /// and growing it moves every entry; with the transactions inline (their request and last
    /// message) the moves were tens of megabytes. Boxed, an entry is a key and a pointer. (A
    /// B-tree avoids the growth but shifts whole transactions within its nodes on every insert
    /// and removal, and compares keys that share long prefixes: measurably slower on every
    /// call.)
    txs: TxMap<Box<Tx>>,
    /// Timer queue: one entry per transaction with a deadline, keyed by (deadline, the
    /// transaction's generation). An ordered map rather than a binary heap: a rescheduled
    /// transaction removes its old entry instead of leaving a stale one behind, and the queue
    /// grows node by node, never by copying itself whole.
    wakeups: BTreeMap<(Instant, u64), TxKey>,
    /// INVITE server transactions in Accepted, by (Call-ID, CSeq number), so a 2xx ACK (which
    /// has its own branch) can stop the 2xx retransmissions.
    /// One per call for 32 s, so it grows with the call rate as `txs` does.
    accepted: griddle::HashMap<(String, u32), TxKey, RandomState>,
    /// Client transactions over connection-oriented transports, by the peer they go to, so
    /// that a connection that cannot be opened fails them without a walk of every
    /// transaction. Ended transactions are pruned lazily (see [`Self::index_reliable`]).
    reliable_clients: std::collections::HashMap<Peer, Vec<TxKey>, RandomState>,
    /// Insertions into `reliable_clients` since its last full sweep.
    reliable_inserts: u32,
    out: VecDeque<Output>,
    next_generation: u64,
    stats: Stats,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            timer_c: TIMER_C,
            txs: TxMap::with_capacity_and_hasher(1024, Default::default()),
            wakeups: BTreeMap::new(),
            accepted: griddle::HashMap::with_hasher(Default::default()),
            reliable_clients: Default::default(),
            reliable_inserts: 0,
            out: VecDeque::new(),
            next_generation: 0,
            stats: Stats::default(),
        }
    }

    /// Overrides [`TIMER_C`].
    pub fn set_timer_c(&mut self, timer_c: Duration) {
        self.timer_c = timer_c;
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
        self.wakeups.first_key_value().map(|((at, _), _)| *at)
    }

    /// Puts the transaction's next deadline in the timer queue, in place of its old one.
    fn schedule(&mut self, key: &TxKey) {
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        let next = tx.next_deadline();
        if next.is_some() && next == tx.wake_at {
            return;
        }
        if let Some(at) = tx.wake_at.take() {
            self.wakeups.remove(&(at, tx.generation));
        }
        tx.generation = self.next_generation;
        self.next_generation += 1;
        if let Some(at) = next {
            tx.wake_at = Some(at);
            self.wakeups.insert((at, tx.generation), key.clone());
        }
    }

    /// Forgets a transaction, its timer, and the 2xx-ACK matching entry that points at it.
    fn remove_tx(&mut self, key: &TxKey) -> Option<Tx> {
        let tx = *self.txs.remove(key)?;
        if let Some(at) = tx.wake_at {
            self.wakeups.remove(&(at, tx.generation));
        }
        if let Some(id) = &tx.accepted_id {
            if self.accepted.get(id) == Some(key) {
                self.accepted.remove(id);
            }
        }
        Some(tx)
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
        let via = req.top_via_ref();
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
        // §17.2.3 names for them. A bare cookie with no identifier after it (RFC 4475 §3.2.1)
        // identifies nothing either, and would make every such request one transaction.
        let branch = if branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE) {
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
        TxKey::new(branch, method, sent_by, true)
    }

    fn handle_request(&mut self, now: Instant, mut req: Request, from: Peer) {
        // The key first: stamping adds only `received`/`rport`, which the key does not read.
        let key = Self::server_key(&req);
        stamp_received(&mut req, from);
        if req.method == Method::Ack {
            self.handle_ack(now, key, req, from);
            return;
        }
        if let Some(tx) = self.txs.get(&key) {
            // A retransmission: repeat the last response where §17.2.1/§17.2.2 say so. In
            // Accepted the 2xx is already retransmitted on its own timer (RFC 6026 §8.5), and
            // in Confirmed the exchange is over.
            self.stats.retransmissions_absorbed += 1;
            if !tx.last.is_empty() && matches!(tx.state, State::Proceeding | State::Completed) {
                let (peer, last) = (tx.peer, tx.last.clone());
                self.transmit(peer, last);
            }
            return;
        }
        if req.method == Method::Cancel {
            let invite_key = key.with_method(Method::Invite);
            let resp_peer = response_peer(&req, from);
            // §9.2: any matching transaction gets 200; only a pending one is cancelled.
            let pending = self
                .txs
                .get(&invite_key)
                .map(|t| matches!(t.state, State::Proceeding | State::Trying));
            let resp = match pending {
                Some(_) => req.response(200, "OK"),
                None => req.response(481, "Call/Transaction Does Not Exist"),
            };
            self.create_server_tx(key.clone(), resp_peer, State::Trying);
            self.respond(now, &key, resp);
            if pending == Some(true) {
                self.event(Event::Cancelled { invite: invite_key });
            }
            return;
        }
        let peer = response_peer(&req, from);
        if req.method == Method::Invite {
            self.create_server_tx(key.clone(), peer, State::Proceeding);
            // A B2BUA always forwards the INVITE; say so at once so the caller stops
            // retransmitting (§17.2.1).
            let trying = req.response(100, "Trying").to_bytes();
            if let Some(tx) = self.txs.get_mut(&key) {
                tx.last = trying.clone();
            }
            self.transmit(peer, trying);
        } else {
            self.create_server_tx(key.clone(), peer, State::Trying);
        }
        self.event(Event::Request {
            key,
            request: req,
            from,
        });
    }

    fn handle_ack(&mut self, now: Instant, key: TxKey, req: Request, from: Peer) {
        if let Some(tx) = self.txs.get_mut(&key) {
            match tx.state {
                State::Completed => {
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
                    return;
                }
                // An RFC 2543 ACK for a 2xx carries the INVITE's own key: handled below.
                State::Accepted => {}
                _ => {
                    self.stats.retransmissions_absorbed += 1;
                    return;
                }
            }
        }
        let id = (
            req.call_id().to_string(),
            req.cseq().map(|c| c.seq).unwrap_or(0),
        );
        if let Some(inv) = self.accepted.get(&id).cloned() {
            if let Some(tx) = self.txs.get_mut(&inv) {
                if tx.state != State::Accepted {
                    // The 2xx was acknowledged already: a retransmitted ACK.
                    self.stats.retransmissions_absorbed += 1;
                    return;
                }
                // Stop retransmitting the 2xx, but keep the transaction until Timer L (RFC 6026
                // §8.7) so a late INVITE retransmission is absorbed instead of starting a call.
                tx.state = State::Confirmed;
                tx.retransmit_at = None;
                tx.linger_at = tx.timeout_at.take();
                self.schedule(&inv);
            }
        }
        self.event(Event::Ack { request: req, from });
    }

    fn create_server_tx(&mut self, key: TxKey, peer: Peer, state: State) {
        self.txs
            .insert(key, Box::new(Tx::new(state, peer, self.timers.t1)));
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
            // G (or the RFC 6026 2xx retransmission) and H (or L), both 64*T1 long.
            tx.interval = t.t1;
            tx.retransmit_at = (!reliable).then(|| now + t.t1);
            tx.timeout_at = Some(now + 64 * t.t1);
            if resp.status < 300 {
                tx.state = State::Accepted;
                let id = (
                    resp.call_id().to_string(),
                    resp.cseq().map(|c| c.seq).unwrap_or(0),
                );
                tx.accepted_id = Some(id.clone());
                self.accepted.insert(id, key.clone());
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
        let key = TxKey::new(
            req.top_via_ref()
                .and_then(|v| v.branch().map(str::to_string))
                .unwrap_or_default(),
            req.method.clone(),
            String::new(),
            false,
        );
        let bytes = req.to_bytes();
        let reliable = to.transport.is_reliable();
        let state = if req.method == Method::Invite {
            State::Calling
        } else {
            State::Trying
        };
        let mut tx = Tx::new(state, to, t.t1);
        tx.last = bytes.clone();
        tx.request = Some(req);
        // A/E start at T1 on unreliable transports only; B/F run on every transport.
        tx.retransmit_at = (!reliable).then(|| now + t.t1);
        tx.timeout_at = Some(now + 64 * t.t1);
        self.txs.insert(key.clone(), Box::new(tx));
        self.schedule(&key);
        if reliable {
            self.index_reliable(to, &key);
        }
        self.transmit(to, bytes);
        key
    }

    /// Notes a client transaction over a connection to `to`. The list drops its ended
    /// transactions whenever it has doubled since it was last pruned, so a long-lived
    /// connection's list stays as long as its live transactions, amortised.
    /// Peers come and go (a phone on TCP reconnects from a new port): every 4,096 insertions
    /// the lists of peers with no live transaction are dropped.
    fn index_reliable(&mut self, to: Peer, key: &TxKey) {
        let txs = &self.txs;
        self.reliable_inserts += 1;
        if self.reliable_inserts >= 4096 {
            self.reliable_inserts = 0;
            self.reliable_clients.retain(|_, l| {
                l.retain(|k| txs.contains_key(k));
                !l.is_empty()
            });
        }
        let list = self.reliable_clients.entry(to).or_default();
        if list.len() >= 64 && list.len() == list.capacity() {
            list.retain(|k| txs.contains_key(k));
            // Room for as many again as are live, so that a list whose live count hovers
            // near its capacity is not walked on every insert.
            list.reserve(list.len());
        }
        list.push(key.clone());
    }

    /// The connection to `peer` (TCP or TLS) could not be opened, or its TLS handshake failed:
    /// every client transaction still waiting for its request to get through to it (Calling
    /// or Trying) ends now with [`Event::TransportError`] instead of waiting out Timer B or
    /// F (§17.1.1.2, §17.1.2.2: a transport error is reported to the user at once). One that
    /// has had a provisional response got through, and is left to its timers: the far end
    /// answers over a new connection (§18.2.2).
    pub fn transport_error(&mut self, peer: Peer) {
        let Some(keys) = self.reliable_clients.remove(&peer) else {
            return;
        };
        let mut live = Vec::new();
        for key in keys {
            let Some(tx) = self.txs.get(&key) else {
                continue;
            };
            let waiting = matches!(tx.state, State::Calling | State::Trying) && !tx.abandoned;
            if !waiting || tx.peer != peer {
                live.push(key);
                continue;
            }
            self.remove_tx(&key);
            self.stats.transport_errors += 1;
            self.event(Event::TransportError { key });
        }
        if !live.is_empty() {
            self.reliable_clients.insert(peer, live);
        }
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
            State::Proceeding if !tx.cancel_pending => {
                tx.cancel_pending = true;
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
            .top_via_ref()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let key = TxKey::new(branch, cseq.method.clone(), String::new(), false);
        let is_invite = key.method == Method::Invite;
        let is_2xx = (200..300).contains(&resp.status);
        let Some(tx) = self.txs.get_mut(&key) else {
            if is_invite && is_2xx {
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
        match (tx.state, resp.status) {
            (State::Calling | State::Trying | State::Proceeding, 100..=199) => {
                let was_calling = tx.state == State::Calling;
                tx.state = State::Proceeding;
                if is_invite {
                    // Timer A stops; Timer B gives way to Timer C (§17.1.1.2, §16.6).
                    tx.retransmit_at = None;
                    tx.timeout_at = Some(now + self.timer_c);
                }
                // Non-INVITE: Timer E keeps running; from its next firing it uses T2
                // (§17.1.2.2), which `handle_timeout` applies in Proceeding.
                let cancel = (was_calling && tx.cancel_pending)
                    .then(|| tx.request.as_ref().map(build_cancel))
                    .flatten();
                let abandoned = tx.abandoned;
                let peer = tx.peer;
                self.schedule(&key);
                if let Some(c) = cancel {
                    self.send_request(now, c, peer);
                }
                if !abandoned {
                    self.event(Event::Response {
                        key,
                        response: resp,
                    });
                }
            }
            (State::Calling | State::Proceeding, 200..=299) if is_invite => {
                // The INVITE client transaction ends on 2xx; the UAC core ACKs (§17.1.1.2).
                let abandoned = tx.abandoned;
                self.remove_tx(&key);
                if abandoned {
                    // Timer C already reported a timeout: let the user ACK and hang up.
                    self.event(Event::Stray2xx {
                        response: resp,
                        from,
                    });
                } else {
                    self.event(Event::Response {
                        key,
                        response: resp,
                    });
                }
            }
            (State::Calling | State::Proceeding, _) if is_invite => {
                let ack = tx.request.as_ref().map(|r| build_ack_for_error(r, &resp));
                tx.state = State::Completed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                // Timer D: at least 32 s on unreliable transports, to absorb retransmitted
                // finals; zero on reliable ones.
                tx.linger_at = Some(
                    now + if reliable {
                        Duration::ZERO
                    } else {
                        TIMER_D_MIN.max(64 * t.t1)
                    },
                );
                let abandoned = tx.abandoned;
                let peer = tx.peer;
                if let Some(ack) = ack {
                    let bytes = ack.to_bytes();
                    tx.last = bytes.clone();
                    self.transmit(peer, bytes);
                }
                self.schedule(&key);
                if !abandoned {
                    self.event(Event::Response {
                        key,
                        response: resp,
                    });
                }
            }
            (State::Completed, 200..=299) if is_invite => {
                // A 2xx from another fork after a failure: the UAC core must ACK it and BYE.
                self.event(Event::Stray2xx {
                    response: resp,
                    from,
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
        while let Some(entry) = self.wakeups.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, generation), key) = entry.remove_entry();
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            if tx.generation != generation {
                continue;
            }
            // Its entry is gone: a reschedule below must not look for it.
            tx.wake_at = None;
            let kind = if tx.linger_at.is_some_and(|l| l <= now) {
                TimerKind::Linger
            } else if tx.timeout_at.is_some_and(|l| l <= now) {
                TimerKind::Timeout
            } else {
                TimerKind::Retransmit
            };
            match kind {
                TimerKind::Linger => {
                    self.remove_tx(&key);
                }
                TimerKind::Timeout if key.server => {
                    // H (no ACK for a non-2xx final: nothing more to do) or L without an ACK
                    // for the 2xx (§13.3.1.4: the dialog must end).
                    let Some(tx) = self.remove_tx(&key) else {
                        continue;
                    };
                    if tx.state == State::Accepted {
                        if let Some((call_id, cseq)) = tx.accepted_id {
                            self.event(Event::AckTimeout { call_id, cseq });
                        }
                    }
                }
                TimerKind::Timeout => {
                    if key.method == Method::Invite
                        && tx.state == State::Proceeding
                        && !tx.abandoned
                    {
                        // Timer C: give up, CANCEL (§16.8 for the same situation in
                        // proxies), and stay around for the 487 so it is ACKed.
                        tx.abandoned = true;
                        tx.timeout_at = Some(now + 64 * t.t1);
                        let cancel = (!tx.cancel_pending)
                            .then(|| tx.request.as_ref().map(build_cancel))
                            .flatten();
                        tx.cancel_pending = true;
                        let peer = tx.peer;
                        self.schedule(&key);
                        if let Some(c) = cancel {
                            self.send_request(now, c, peer);
                        }
                        self.stats.timeouts += 1;
                        self.event(Event::Timeout { key });
                        continue;
                    }
                    let abandoned = tx.abandoned;
                    self.remove_tx(&key);
                    if !abandoned {
                        self.stats.timeouts += 1;
                        self.event(Event::Timeout { key });
                    }
                }
                TimerKind::Retransmit => {
                    // A doubles without bound until B fires; E, G and the 2xx retransmission
                    // double up to T2 (§17.1.1.2, §17.1.2.2, §17.2.1, §13.3.1.4); E is T2
                    // flat in Proceeding.
                    let uncapped = !key.server && key.method == Method::Invite;
                    tx.interval = if uncapped {
                        tx.interval * 2
                    } else if !key.server && tx.state == State::Proceeding {
                        t.t2
                    } else {
                        (tx.interval * 2).min(t.t2)
                    };
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
    // Most requests need neither parameter: look before copying the Via.
    let ip = from.addr.ip();
    let needed = req.top_via_ref().is_some_and(|v| {
        v.host.text.parse::<std::net::IpAddr>().ok() != Some(ip)
            || crate::uri::Params::bare(v.params, "rport")
    });
    if !needed {
        return;
    }
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
    match req.top_via_ref() {
        Some(v) if crate::uri::Params::has(v.params, "rport") => from,
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
        match n.as_ref() {
            "Via" if c.headers.count("Via") == 0 => {
                let top = crate::uri::split_unquoted(v, b',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                c.headers.push("Via", top);
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
        match n.as_ref() {
            "Via" if a.headers.count("Via") == 0 => {
                let top = crate::uri::split_unquoted(v, b',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                a.headers.push("Via", top);
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

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn invite(branch: &str) -> Request {
        let text = format!(
            "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
             From: <sip:alice@192.0.2.10>;tag=a1\r\nTo: <sip:bob@192.0.2.20>\r\n\
             Call-ID: {branch}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        match crate::parse(text.as_bytes(), true).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    /// Each transaction has at most one entry in the timer queue however often it is
    /// rescheduled, and none once it is gone: the queue cannot grow beyond the table.
    #[test]
    fn the_timer_queue_holds_one_entry_per_live_transaction() {
        let t0 = Instant::now();
        let mut layer = TransactionLayer::new(Timers::default());
        let to = Peer {
            addr: "192.0.2.20:5060".parse().unwrap(),
            transport: Transport::Udp,
        };
        for i in 0..50 {
            layer.send_request(t0, invite(&format!("z9hG4bK-q{i}")), to);
        }
        let mut now = t0;
        let mut most = 0;
        while let Some(at) = layer.poll_timeout() {
            now = at;
            layer.handle_timeout(now);
            while layer.poll_output().is_some() {}
            assert!(layer.wakeups.len() <= layer.txs.len());
            most = most.max(layer.wakeups.len());
        }
        assert_eq!(most, 50);
        // Timer A retransmitted until Timer B ended every transaction.
        assert!(layer.stats().retransmissions_sent >= 50 * 6);
        assert!(now >= t0 + 64 * Timers::default().t1);
        assert!(layer.is_empty() && layer.wakeups.is_empty());
    }

    #[test]
    fn keys_differ_by_every_field_and_hash_alike_when_equal() {
        let k = |b: &str, m: Method, s: &str, server| TxKey::new(b.into(), m, s.into(), server);
        let a = k("z9hG4bK1", Method::Invite, "h:1", true);
        assert_eq!(a, k("z9hG4bK1", Method::Invite, "h:1", true));
        assert_eq!(a.hash, k("z9hG4bK1", Method::Invite, "h:1", true).hash);
        assert_ne!(a, k("z9hG4bK2", Method::Invite, "h:1", true));
        assert_ne!(a, k("z9hG4bK1", Method::Bye, "h:1", true));
        assert_ne!(a, k("z9hG4bK1", Method::Invite, "h:2", true));
        assert_ne!(a, k("z9hG4bK1", Method::Invite, "h:1", false));
        assert_eq!(a.with_method(Method::Cancel).with_method(Method::Invite), a);
    }
}
