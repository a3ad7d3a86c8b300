//! The signalling driver: SIP sockets, TCP connections and timers around the sans-IO B2BUA.
//!
//! One task owns the [`B2bua`] core. Socket tasks parse nothing: they hand raw datagrams and
//! framed stream messages to that task through a channel. After every input the task drains
//! the core's outputs: SIP bytes go to sockets, media commands to the relay, call events to
//! logs, metrics and the recorder. Then it sleeps until the next input or the core's next
//! timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use b2bua::{B2bua, CallEvent, CallId, Output};
use sip::transaction::Peer;
use sip::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::recording::{Format, Mode, RecCtl};
use crate::relay::Relay;

pub enum Input {
    Sip {
        data: Vec<u8>,
        from: Peer,
    },
    TcpUp {
        addr: SocketAddr,
        id: u64,
        tx: mpsc::Sender<Vec<u8>>,
        tls: bool,
    },
    TcpDown {
        addr: SocketAddr,
        id: u64,
        tls: bool,
        /// The connection tapir opened never came up (connect or TLS handshake failed):
        /// what was waiting to go out on it has failed.
        failed: bool,
    },
    Control(Control),
}

/// Requests from the HTTP API and the signal handlers.
pub enum Control {
    ListCalls(oneshot::Sender<Vec<CallId>>),
    HangUp(CallId, oneshot::Sender<bool>),
    Drain,
    ReloadRoutes(b2bua::Routes),
}

/// How the engine reaches the recorder thread.
pub struct RecorderLink {
    pub tx: crate::recording::RecTx,
    pub default_mode: Mode,
    pub default_format: Format,
    /// Distinguishes this process's contact ids from other nodes'.
    pub node: String,
    /// Whether a policy rules file is in force (it then decides for routes without `record`).
    pub policy: crate::policy_link::PolicyStore,
    /// Named zones, to tell the policy where a call came from.
    pub zones: Vec<(String, Vec<b2bua::routing::Cidr>)>,
}

pub struct Engine {
    core: B2bua,
    /// SIP UDP sockets with whether each is IPv4 (asked once: `local_addr` is a syscall).
    udp: Vec<(Arc<UdpSocket>, bool)>,
    tcp: TcpPeers,
    /// The writers of the open SIP/TLS connections, by peer address.
    tls_peers: TcpPeers,
    tls: Option<Arc<crate::tls::Tls>>,
    inputs_tx: mpsc::Sender<Input>,
    inputs: mpsc::Receiver<Input>,
    relay: Relay,
    metrics: Arc<Metrics>,
    recorder: Option<RecorderLink>,
    /// Calls whose packets the recorder wants.
    tapped: std::collections::HashSet<CallId>,
    /// Prompts that finished playing (from the relay).
    announce_done: mpsc::UnboundedReceiver<(CallId, Option<bool>)>,
    /// Feature-code filters decided at call start, handed to the relay when media opens.
    dtmf_filters: HashMap<CallId, crate::relay::DtmfFilter>,
    show_numbers: bool,
    tcp_idle: Duration,
    last_stats: (u64, u64, u64, u64, u64, u64),
    /// Tells `main` how many calls remain (for drain on shutdown).
    calls_watch: watch::Sender<usize>,
    /// Contact ids a transferred call continues, from its `Transferred` until its `Started`.
    continued_contacts: HashMap<CallId, String>,
    /// Calls announced as encrypted and unrecordable, until their `Started`.
    encrypted: HashMap<CallId, String>,
    /// RTP counter of each call and when it last moved (media supervision).
    media_seen: HashMap<CallId, (u64, Instant)>,
}

/// Everything the engine is made of, handed to [`Engine::start`].
pub struct EngineParts {
    pub core: B2bua,
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    pub tls_addrs: Vec<SocketAddr>,
    /// Certificates for the TLS listeners and targets.
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub relay: Relay,
    pub metrics: Arc<Metrics>,
    pub recorder: Option<RecorderLink>,
    pub show_numbers: bool,
    pub tcp_idle: Duration,
    /// Receive buffer of each SIP UDP socket in bytes; 0 keeps the system's default.
    pub udp_recv_buffer: usize,
    pub announce_done: mpsc::UnboundedReceiver<(CallId, Option<bool>)>,
}

pub struct EngineHandle {
    pub inputs: mpsc::Sender<Input>,
    pub calls: watch::Receiver<usize>,
    pub local_udp: Vec<SocketAddr>,
    pub local_tcp: Vec<SocketAddr>,
    pub local_tls: Vec<SocketAddr>,
}

impl Engine {
    /// Binds the SIP sockets and runs the engine on a thread of its own ("tapir-sip"), with a
    /// single-threaded runtime that also owns the SIP sockets and TCP connections.
    ///
    /// Why not a task on the main runtime: there the engine queued behind the relay's work
    /// (four sockets bound, four tasks spawned and later dropped per call) on the same two
    /// workers, and each SIP message crossed threads from its reader task to the engine.
    /// Setup latency added at 1,000 calls per second is in docs/benchmarks.md.
    pub async fn start(parts: EngineParts) -> Result<EngineHandle> {
        let (ready_tx, ready) = oneshot::channel();
        std::thread::Builder::new()
            .name("tapir-sip".into())
            .spawn(move || {
                // Without its signalling thread the process would still answer HTTP and look
                // alive to a supervisor; end it instead, so it is restarted.
                struct ExitOnPanic;
                impl Drop for ExitOnPanic {
                    fn drop(&mut self) {
                        if std::thread::panicking() {
                            eprintln!("tapir: the signalling thread panicked; exiting");
                            std::process::exit(70);
                        }
                    }
                }
                let _guard = ExitOnPanic;
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(anyhow::Error::new(e)
                                .context("cannot start the signalling runtime")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Self::bind(parts).await {
                        Ok((engine, handle)) => {
                            let _ = ready_tx.send(Ok(handle));
                            engine.run().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("cannot start the signalling thread")?;
        ready.await.context("the signalling thread stopped")?
    }

    async fn bind(parts: EngineParts) -> Result<(Engine, EngineHandle)> {
        let EngineParts {
            core,
            udp_addrs,
            tcp_addrs,
            tls_addrs,
            tls,
            relay,
            metrics,
            recorder,
            show_numbers,
            tcp_idle,
            udp_recv_buffer,
            announce_done,
        } = parts;
        let (inputs_tx, inputs) = mpsc::channel(65536);
        let mut udp = Vec::new();
        let mut local_udp = Vec::new();
        for a in &udp_addrs {
            let s = Arc::new(
                bind_sip_udp(*a, udp_recv_buffer)
                    .with_context(|| format!("cannot bind SIP UDP {a}"))?,
            );
            let local = s.local_addr()?;
            local_udp.push(local);
            udp.push((s.clone(), local.is_ipv4()));
            tokio::spawn(udp_reader(s, inputs_tx.clone()));
        }
        let mut local_tcp = Vec::new();
        for a in &tcp_addrs {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind SIP TCP {a}"))?;
            local_tcp.push(l.local_addr()?);
            tokio::spawn(tcp_acceptor(l, inputs_tx.clone(), tcp_idle));
        }
        let mut local_tls = Vec::new();
        for a in &tls_addrs {
            let Some(t) = tls.clone().filter(|t| t.server.is_some()) else {
                anyhow::bail!("SIP TLS {a}: no certificate configured");
            };
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind SIP TLS {a}"))?;
            local_tls.push(l.local_addr()?);
            tokio::spawn(tls_acceptor(
                l,
                t,
                inputs_tx.clone(),
                tcp_idle,
                metrics.clone(),
            ));
        }
        let (calls_watch, calls) = watch::channel(0);
        let engine = Engine {
            core,
            udp,
            tcp: TcpPeers::default(),
            tls_peers: TcpPeers::default(),
            tls,
            inputs_tx: inputs_tx.clone(),
            inputs,
            relay,
            metrics,
            recorder,
            tapped: Default::default(),
            dtmf_filters: HashMap::new(),
            announce_done,
            show_numbers,
            tcp_idle,
            last_stats: (0, 0, 0, 0, 0, 0),
            calls_watch,
            continued_contacts: HashMap::new(),
            encrypted: HashMap::new(),
            media_seen: HashMap::new(),
        };
        Ok((
            engine,
            EngineHandle {
                inputs: inputs_tx,
                calls,
                local_udp,
                local_tcp,
                local_tls,
            },
        ))
    }

    async fn run(mut self) {
        let media_timeout = self.relay.media_timeout();
        // Look a few times per timeout period, so a silent call ends within about 1.25 times
        // the configured time.
        let period = (media_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let mut media_tick = tokio::time::interval(period);
        media_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = media_tick.tick(), if !media_timeout.is_zero() => {
                    self.check_media(media_timeout);
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else { return };
                    self.on_input(input);
                    // Take whatever else is already queued before flushing, so a burst costs
                    // one pass over the outputs.
                    for _ in 0..64 {
                        match self.inputs.try_recv() {
                            Ok(i) => self.on_input(i),
                            Err(_) => break,
                        }
                    }
                }
                Some((call, consent)) = self.announce_done.recv() => {
                    self.core.announcement_done(std::time::Instant::now(), call);
                    if let (Some(c), Some(r)) = (consent, &self.recorder) {
                        let consent = if c {
                            policy::Consent::Granted
                        } else {
                            policy::Consent::Denied
                        };
                        let _ = r.tx.send(RecCtl::Call(contact::Input::Consent { call, consent }));
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    self.core.handle_timeout(std::time::Instant::now());
                }
            }
            self.flush().await;
        }
    }

    /// Media supervision: a call whose relay saw no RTP from either party for `timeout` is
    /// reported to the core, which ends it unless it is on hold.
    fn check_media(&mut self, timeout: Duration) {
        let now = Instant::now();
        let activity = self.relay.rtp_activity();
        let mut live = std::collections::HashSet::with_capacity(activity.len());
        for (call, count) in activity {
            live.insert(call);
            let seen = self.media_seen.entry(call).or_insert((count, now));
            if seen.0 != count {
                *seen = (count, now);
                continue;
            }
            let idle = now.duration_since(seen.1);
            if idle >= timeout && self.core.media_timeout(now.into_std(), call, idle) {
                tracing::warn!(
                    call,
                    idle_s = idle.as_secs(),
                    "no RTP from either side; call ended"
                );
            }
        }
        self.media_seen.retain(|c, _| live.contains(c));
    }

    fn on_input(&mut self, input: Input) {
        let now = std::time::Instant::now();
        match input {
            Input::Sip { data, from } => self.core.handle_message(now, &data, from),
            Input::TcpUp {
                addr,
                id,
                tx,
                tls: false,
            } => self.tcp.up(addr, id, tx),
            Input::TcpUp { addr, id, tx, .. } => self.tls_peers.up(addr, id, tx),
            Input::TcpDown {
                addr,
                id,
                tls,
                failed,
            } => {
                let (current, transport) = if tls {
                    (self.tls_peers.down(addr, id), Transport::Tls)
                } else {
                    (self.tcp.down(addr, id), Transport::Tcp)
                };
                // A stale report (a message found this connection closed and opened a new
                // one before the report arrived) must not fail what waits on the new one.
                if failed && current {
                    self.core.transport_error(now, Peer { addr, transport });
                }
            }
            Input::Control(c) => match c {
                Control::ListCalls(reply) => {
                    let _ = reply.send(self.core.call_ids());
                }
                Control::HangUp(call, reply) => {
                    let known = self.core.call_ids().contains(&call);
                    self.core.hang_up(now, call);
                    let _ = reply.send(known);
                }
                Control::Drain => self.core.set_draining(true),
                Control::ReloadRoutes(r) => {
                    tracing::info!(routes = r.len(), "routes reloaded");
                    self.core.set_routes(r);
                }
            },
        }
    }

    async fn flush(&mut self) {
        let mut stream_sends = 0usize;
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    if to.transport != Transport::Udp {
                        stream_sends += 1;
                        // The TCP writers run on this thread: let them drain their queues
                        // (TCP_QUEUE each) during a long burst, e.g. hundreds of BYEs at once.
                        if stream_sends % (TCP_QUEUE / 2) == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    self.send(to, data).await
                }
                Output::Media(cmd) => {
                    if let (
                        Some(r),
                        b2bua::MediaCommand::Update {
                            call, leg, codecs, ..
                        },
                    ) = (&self.recorder, &cmd)
                    {
                        let _ = r.tx.send(RecCtl::Call(contact::Input::Codecs {
                            call: *call,
                            leg: *leg,
                            codecs: codecs.clone(),
                        }));
                    }
                    let open = match &cmd {
                        b2bua::MediaCommand::Open { call, .. } => Some(*call),
                        _ => None,
                    };
                    self.relay.handle(cmd);
                    if let Some(call) = open {
                        self.relay.set_tap(call, self.tapped.contains(&call));
                        self.relay
                            .set_dtmf_filter(call, self.dtmf_filters.remove(&call));
                    }
                }
                Output::Call(ev) => self.on_call_event(ev),
            }
        }
        let s = self.core.stats();
        let t = self.core.tx_stats();
        let now = (
            s.messages_in,
            s.messages_out,
            s.parse_errors,
            t.retransmissions_sent,
            s.flood_limited,
            s.keepalives,
        );
        let last = self.last_stats;
        self.metrics.sip_in.inc_by(now.0 - last.0);
        self.metrics.sip_out.inc_by(now.1 - last.1);
        self.metrics.sip_parse_errors.inc_by(now.2 - last.2);
        self.metrics.sip_retransmissions.inc_by(now.3 - last.3);
        self.metrics.sip_rate_limited.inc_by(now.4 - last.4);
        self.metrics.sip_keepalives.inc_by(now.5 - last.5);
        self.last_stats = now;
        self.metrics
            .calls_active
            .set(self.core.active_calls() as i64);
        let _ = self.calls_watch.send_if_modified(|n| {
            let c = self.core.active_calls();
            let changed = *n != c;
            *n = c;
            changed
        });
    }

    fn on_call_event(&mut self, ev: CallEvent) {
        match &ev {
            CallEvent::Started {
                call,
                route,
                from,
                to,
                a_call_id,
                b_call_id,
                ..
            } => {
                if self.show_numbers {
                    tracing::info!(call, route, from, to, a_call_id, b_call_id, "call started");
                } else {
                    tracing::info!(call, route, a_call_id, b_call_id, "call started");
                }
            }
            CallEvent::Answered { call } => tracing::info!(call, "call answered"),
            CallEvent::Encrypted { call, reason } => {
                tracing::warn!(
                    call,
                    reason,
                    "media encrypted with keys tapir does not have: relayed, not recorded"
                );
                self.metrics.calls_encrypted.inc();
                // Kept for the recorder's metadata only; without a recorder nothing takes it.
                if self.recorder.is_some() {
                    self.encrypted.insert(*call, reason.clone());
                }
            }
            CallEvent::Ended { call, outcome } => {
                tracing::info!(call, outcome = ?outcome, "call ended");
                self.encrypted.remove(call);
                self.metrics
                    .calls_total
                    .with_label_values(&[outcome.label()])
                    .inc();
            }
            CallEvent::InDialog {
                call, leg, method, ..
            } => tracing::debug!(call, leg = ?leg, method, "in-dialog request relayed"),
            CallEvent::Transferred {
                call,
                previous,
                contact,
                replaces,
                ..
            } => tracing::info!(
                call,
                previous,
                contact,
                replaces,
                "call continues a transfer"
            ),
            CallEvent::TransferRequested {
                call,
                attended,
                external,
                ..
            } => tracing::info!(call, attended, external, "transfer requested"),
            CallEvent::TransferFailed { call, status } => {
                tracing::info!(call, status, "transfer failed")
            }
        }
        if let Some(r) = &self.recorder {
            let msg = match ev {
                CallEvent::Started {
                    call,
                    route,
                    direction,
                    a_call_id,
                    b_call_id,
                    from,
                    to,
                    customer,
                    record,
                    format,
                    x_headers,
                    source,
                    station,
                } => {
                    let start = crate::recording::unix_ms();
                    let (cust_id, agent_id) = match customer {
                        b2bua::Leg::A => (a_call_id, b_call_id),
                        b2bua::Leg::B => (b_call_id, a_call_id),
                    };
                    // A transferred call keeps the contact id of the call it continues.
                    let continues = self.continued_contacts.remove(&call);
                    let contact_id = continues
                        .clone()
                        .unwrap_or_else(|| format!("{start}-{}-{call}", r.node));
                    self.core.set_contact_label(call, contact_id.clone());
                    let encrypted = self.encrypted.remove(&call);
                    let meta = recorder::RecordingMetadata {
                        encrypted: encrypted.as_ref().map(|_| "not recorded".to_string()),
                        encrypted_reason: encrypted.clone(),
                        call_id_customer: Some(cust_id),
                        call_id_agent: Some(agent_id),
                        direction: direction.unwrap_or_default(),
                        start_unix_ms: start,
                        ..Default::default()
                    };
                    // A route's own mode is compiled into the policy (consent still wins);
                    // without one, the policy file decides, else the default mode.
                    let rules = r.policy.current();
                    let route_mode = match record.as_deref().and_then(crate::recording::parse_mode)
                    {
                        Some(m) => Some(m),
                        None if rules.is_some() => None,
                        None => Some(r.default_mode),
                    };
                    let rules = rules.unwrap_or_default();
                    // Ciphertext is never recorded: it would be a file of noise. The call
                    // leaves its decision and metadata (marked encrypted) like a `never` one.
                    let route_mode = if encrypted.is_some() {
                        Some(Mode::Never)
                    } else {
                        route_mode
                    };
                    if route_mode != Some(Mode::Never) {
                        self.tapped.insert(call);
                        if let Some(f) = feature_filter(&rules) {
                            self.dtmf_filters.insert(call, f);
                            self.core.set_feature_code_filter(call, Some(f));
                        }
                    }
                    let zone = r
                        .zones
                        .iter()
                        .find(|(_, nets)| nets.iter().any(|n| n.contains(source.ip())))
                        .map(|(z, _)| z.clone());
                    let (agent_user, customer_number) = match customer {
                        b2bua::Leg::A => (to.clone(), from.clone()),
                        b2bua::Leg::B => (from.clone(), to.clone()),
                    };
                    let mut meta = meta;
                    meta.from = from;
                    meta.to = to.clone();
                    Some(RecCtl::Call(contact::Input::Started(Box::new(
                        contact::CallStart {
                            call,
                            contact_id,
                            continues: continues.is_some(),
                            customer,
                            route,
                            route_mode,
                            format: format
                                .as_deref()
                                .and_then(crate::recording::parse_format)
                                .unwrap_or(r.default_format),
                            rules,
                            source_zone: zone,
                            station,
                            agent_user: Some(agent_user),
                            customer_number,
                            dialled_number: to,
                            x_headers,
                            meta,
                        },
                    ))))
                }
                CallEvent::TransferRequested {
                    call,
                    attended,
                    external,
                    target,
                } => Some(RecCtl::Call(contact::Input::TransferStarted {
                    call,
                    external,
                    attended,
                    target,
                })),
                CallEvent::TransferFailed { call, status } => {
                    Some(RecCtl::Call(contact::Input::TransferFailed {
                        call,
                        status,
                    }))
                }
                CallEvent::Transferred { call, label, .. } => {
                    if let Some(l) = label {
                        self.continued_contacts.insert(call, l);
                    }
                    None
                }
                CallEvent::Answered { call } => {
                    Some(RecCtl::Call(contact::Input::Answered { call }))
                }
                CallEvent::Encrypted { .. } => None,
                CallEvent::Ended { call, .. } => {
                    self.tapped.remove(&call);
                    Some(RecCtl::Call(contact::Input::Ended { call }))
                }
                CallEvent::InDialog {
                    call,
                    leg,
                    x_headers,
                    content_type,
                    body,
                    ..
                } => Some(RecCtl::Call(contact::Input::InDialog {
                    call,
                    leg,
                    x_headers,
                    content_type,
                    body,
                })),
            };
            if let Some(m) = msg {
                let _ = r.tx.send(m);
            }
        }
    }

    async fn send(&mut self, to: Peer, data: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|(_, v4)| *v4 == to.addr.is_ipv4())
                    .or(self.udp.first())
                    .map(|(s, _)| s);
                if let Some(s) = sock {
                    if let Err(e) = s.send_to(&data, to.addr).await {
                        tracing::debug!(peer = %to.addr, error = %e, "SIP UDP send failed");
                    }
                }
            }
            Transport::Tls => match self.tls_peers.send(to.addr, data) {
                TcpRoute::Queued => {}
                TcpRoute::Dropped => {
                    tracing::debug!(peer = %to.addr, "TLS peer is not reading; SIP message dropped");
                }
                TcpRoute::Connect { id, rx } => {
                    tokio::spawn(tls_connect(
                        to.addr,
                        id,
                        rx,
                        self.inputs_tx.clone(),
                        self.tcp_idle,
                        self.tls.clone(),
                        self.metrics.clone(),
                    ));
                }
            },
            _ => match self.tcp.send(to.addr, data) {
                TcpRoute::Queued => {}
                TcpRoute::Dropped => {
                    tracing::debug!(peer = %to.addr, "TCP peer is not reading; SIP message dropped");
                }
                TcpRoute::Connect { id, rx } => {
                    tokio::spawn(tcp_connect(
                        to.addr,
                        id,
                        rx,
                        self.inputs_tx.clone(),
                        self.tcp_idle,
                    ));
                }
            },
        }
    }
}

/// Messages queued per TCP connection. A peer that stops reading while it keeps sending would
/// otherwise make tapir hold every response it is owed.
const TCP_QUEUE: usize = 256;

/// Identifies one TCP connection, so the end of an old connection to an address cannot remove
/// the newer one that replaced it.
fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The writers of the open SIP/TCP connections, by peer address.
#[derive(Default)]
struct TcpPeers {
    map: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>,
}

/// What became of a message for a TCP peer.
enum TcpRoute {
    Queued,
    /// The connection's queue is full: the peer is not reading.
    Dropped,
    /// No usable connection: open this one; the message waits in its queue.
    Connect {
        id: u64,
        rx: mpsc::Receiver<Vec<u8>>,
    },
}

impl TcpPeers {
    fn up(&mut self, addr: SocketAddr, id: u64, tx: mpsc::Sender<Vec<u8>>) {
        self.map.insert(addr, (id, tx));
    }

    /// Forgets connection `id` to `addr`; false when it is no longer the peer's connection
    /// (a newer one has taken its place, and what is queued on that one is not affected).
    fn down(&mut self, addr: SocketAddr, id: u64) -> bool {
        let current = self.map.get(&addr).is_some_and(|(cur, _)| *cur == id);
        if current {
            self.map.remove(&addr);
        }
        current
    }

    fn send(&mut self, addr: SocketAddr, data: Vec<u8>) -> TcpRoute {
        let data = match self.map.get(&addr) {
            Some((_, tx)) => match tx.try_send(data) {
                Ok(()) => return TcpRoute::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => return TcpRoute::Dropped,
                Err(mpsc::error::TrySendError::Closed(data)) => data,
            },
            None => data,
        };
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        let _ = tx.try_send(data);
        let id = next_conn_id();
        self.map.insert(addr, (id, tx));
        TcpRoute::Connect { id, rx }
    }
}

/// Binds a SIP UDP socket with a receive buffer of `recv_buffer` bytes (0: the system's
/// default). The default (about 200 KiB on Linux) holds a few hundred messages: at 1,000 calls
/// per second, one stall of the engine of a few tens of milliseconds would overflow it, and
/// what overflows is lost until the sender retransmits.
fn bind_sip_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    if recv_buffer > 0 {
        if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
            tracing::warn!(%addr, error = %e, "cannot set the SIP UDP receive buffer");
        } else if let Some(got) = s
            .recv_buffer_size()
            .ok()
            // Linux caps the request at net.core.rmem_max and reports double what it keeps.
            .map(|b| b / 2)
            .filter(|got| *got < recv_buffer)
        {
            tracing::warn!(
                %addr,
                asked_kib = recv_buffer / 1024,
                got_kib = got / 1024,
                "SIP UDP receive buffer capped by the system (raise net.core.rmem_max)"
            );
        }
    }
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn udp_reader(sock: Arc<UdpSocket>, inputs: mpsc::Sender<Input>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // Keep-alive CRLFs go to the core too: it tells them from SIP and counts them.
                let input = Input::Sip {
                    data: buf[..n].to_vec(),
                    from: Peer {
                        addr: from,
                        transport: Transport::Udp,
                    },
                };
                if inputs.send(input).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "SIP UDP recv error"),
        }
    }
}

async fn tcp_acceptor(l: TcpListener, inputs: mpsc::Sender<Input>, idle: Duration) {
    loop {
        match l.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let (tx, rx) = mpsc::channel(TCP_QUEUE);
                let id = next_conn_id();
                let up = Input::TcpUp {
                    addr,
                    id,
                    tx,
                    tls: false,
                };
                if inputs.send(up).await.is_err() {
                    return;
                }
                tokio::spawn(stream_connection(
                    stream,
                    addr,
                    id,
                    rx,
                    inputs.clone(),
                    idle,
                    Transport::Tcp,
                    false,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_connect(
    addr: SocketAddr,
    id: u64,
    rx: mpsc::Receiver<Vec<u8>>,
    inputs: mpsc::Sender<Input>,
    idle: Duration,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            stream_connection(stream, addr, id, rx, inputs, idle, Transport::Tcp, true).await;
        }
        _ => {
            tracing::info!(peer = %addr, "TCP connect failed");
            let down = Input::TcpDown {
                addr,
                id,
                tls: false,
                failed: true,
            };
            let _ = inputs.send(down).await;
        }
    }
}

/// Accepts SIP/TLS connections. The handshake runs in the connection's own task, so a peer
/// that stalls or fails it never holds up the others; a failure is logged with the peer and
/// counted.
async fn tls_acceptor(
    l: TcpListener,
    tls: Arc<crate::tls::Tls>,
    inputs: mpsc::Sender<Input>,
    idle: Duration,
    metrics: Arc<Metrics>,
) {
    loop {
        let (stream, addr) = match l.accept().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls.server.as_ref().map(|s| s.acceptor()) else {
            return;
        };
        let inputs = inputs.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let stream = match hs {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %addr, error = %e, "TLS handshake from peer failed");
                    metrics
                        .tls_handshake_failures
                        .with_label_values(&["in"])
                        .inc();
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, "TLS handshake from peer timed out");
                    metrics
                        .tls_handshake_failures
                        .with_label_values(&["in"])
                        .inc();
                    return;
                }
            };
            let (tx, rx) = mpsc::channel(TCP_QUEUE);
            let id = next_conn_id();
            let up = Input::TcpUp {
                addr,
                id,
                tx,
                tls: true,
            };
            if inputs.send(up).await.is_err() {
                return;
            }
            stream_connection(stream, addr, id, rx, inputs, idle, Transport::Tls, false).await;
        });
    }
}

/// Opens a SIP/TLS connection to a route target, verified as its route says.
async fn tls_connect(
    addr: SocketAddr,
    id: u64,
    rx: mpsc::Receiver<Vec<u8>>,
    inputs: mpsc::Sender<Input>,
    idle: Duration,
    tls: Option<Arc<crate::tls::Tls>>,
    metrics: Arc<Metrics>,
) {
    let down = Input::TcpDown {
        addr,
        id,
        tls: true,
        failed: true,
    };
    let client = tls.and_then(|t| t.clients.read().unwrap().get(addr));
    let Some((connector, name)) = client else {
        tracing::warn!(peer = %addr, "no TLS settings for this peer (not a route target); message dropped");
        let _ = inputs.send(down).await;
        return;
    };
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        _ => {
            tracing::info!(peer = %addr, "TCP connect for TLS failed");
            let _ = inputs.send(down).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream)).await {
        Ok(Ok(s)) => stream_connection(s, addr, id, rx, inputs, idle, Transport::Tls, true).await,
        Ok(Err(e)) => {
            tracing::warn!(peer = %addr, error = %e, "TLS handshake with target failed");
            metrics
                .tls_handshake_failures
                .with_label_values(&["out"])
                .inc();
            let _ = inputs.send(down).await;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "TLS handshake with target timed out");
            metrics
                .tls_handshake_failures
                .with_label_values(&["out"])
                .inc();
            let _ = inputs.send(down).await;
        }
    }
}

/// Reads framed SIP messages (RFC 3261 §18.3: by Content-Length, across partial reads and
/// several per read) and writes queued outgoing messages; closes after `idle` with no traffic.
/// The same for TCP and TLS.
///
/// A connection tapir opened (`outbound`) that the peer closes or resets before sending a
/// single byte is reported as failed, like one that never opened: under TLS 1.3 a server
/// that refuses tapir's client certificate says so only after the handshake, with an alert
/// in place of the first read.
#[allow(clippy::too_many_arguments)]
async fn stream_connection<S>(
    stream: S,
    addr: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
    inputs: mpsc::Sender<Input>,
    idle: Duration,
    transport: Transport,
    outbound: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wr.write_all(&m).await.is_err() {
                break;
            }
        }
    });
    let mut framer = sip::message::StreamFramer::new();
    let mut chunk = vec![0u8; 16384];
    let mut failed = false;
    let mut read_any = false;
    'conn: loop {
        let n = match tokio::time::timeout(idle, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) if outbound && !read_any => {
                tracing::warn!(peer = %addr, transport = transport.as_str(),
                    "connection to target closed before it sent anything");
                failed = true;
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(peer = %addr, "closing idle TCP connection");
                break;
            }
            Ok(Ok(n)) => n,
        };
        read_any = true;
        framer.push(&chunk[..n]);
        loop {
            match framer.next_message() {
                Ok(Some(data)) => {
                    let from = Peer { addr, transport };
                    if inputs.send(Input::Sip { data, from }).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = %addr, error = %e, "unframable SIP on TCP; closing");
                    break 'conn;
                }
            }
        }
    }
    writer.abort();
    let down = Input::TcpDown {
        addr,
        id,
        tls: transport == Transport::Tls,
        failed,
    };
    let _ = inputs.send(down).await;
}

/// The filter that keeps the policy's feature codes from the customer, unless the rules say
/// to forward them.
fn feature_filter(rules: &policy::Rules) -> Option<crate::relay::DtmfFilter> {
    let fc = &rules.feature_codes;
    if fc.forward {
        return None;
    }
    crate::relay::DtmfFilter::from_codes(
        [
            fc.start.as_str(),
            fc.stop.as_str(),
            fc.pause.as_str(),
            fc.resume.as_str(),
        ],
        Duration::from_millis(fc.inter_digit_timeout_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sip_udp_sockets_get_the_configured_receive_buffer() {
        let rmem_max: Option<usize> = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let asked = 1 << 20;
        let s = bind_sip_udp("127.0.0.1:0".parse().unwrap(), asked).unwrap();
        let got = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        assert!(s.local_addr().unwrap().port() != 0);
        // Linux keeps double the size asked for (its bookkeeping), capped at rmem_max. Where
        // the limit cannot be read (some containers), the size is not checked.
        if let Some(max) = rmem_max {
            assert_eq!(got, 2 * asked.min(max));
        }
    }
}
