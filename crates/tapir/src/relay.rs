//! The RTP/RTCP relay: the IO side of media anchoring.
//!
//! Each call leg gets an RTP and an RTCP socket on the port pair the B2BUA core allocated. A
//! packet that arrives on leg A's socket is sent at once from leg B's socket to leg B's remote
//! address, and the other way round: no jitter buffer, no decoding, no copy on the forwarding
//! path. After forwarding, RTP packets are offered to the tap (the recorder) with `try_send`,
//! which never waits: when the recorder falls behind, the copy is dropped and counted.
//!
//! Packets go out as they came, with one exception: once the agent's feature-code digits have
//! been kept from the customer, the agent's later packets are renumbered so the customer sees
//! no hole in the sequence numbers, and the RTCP of that stream is corrected to match in both
//! directions ([`media::rtp::renumber`]). The recorder always gets the original packets.
//!
//! Symmetric RTP (RFC 4961 practice): the remote address of a leg is latched to the source of
//! the packets that leg sends, so phones behind NAT get their media back; until a packet has
//! arrived, the address from SDP is used. A new SDP address from a re-INVITE clears the latch.
//!
//! Media supervision: every RTP packet received on a call bumps a per-call counter (one
//! relaxed atomic add, no clock read); the engine samples the counters periodically and
//! reports calls whose counter stood still for `media.timeout_s` to the core.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use b2bua::{CallId, Leg, MediaCommand};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::metrics::Metrics;

/// A latched source silent this long gives way to a new source.
const RELATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest datagram the relay carries; larger ones are truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 2048;

/// One RTP packet copied for the recorder. Fixed size, so the tap queue never allocates per
/// packet once its blocks exist.
pub struct TapPacket {
    pub call: CallId,
    pub leg: Leg,
    pub at: Instant,
    pub len: u16,
    pub data: [u8; TAP_MAX],
}

/// 20 ms of G.711/G.722 is 160 bytes; 60 ms is 480. Larger payloads are not audio tapir
/// records.
pub const TAP_MAX: usize = 1024;

struct LegMedia {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    sdp_remote: Mutex<Option<SocketAddr>>,
    latched_rtp: Mutex<Option<SocketAddr>>,
    latched_rtcp: Mutex<Option<SocketAddr>>,
    /// SRTP contexts of the leg (see `relay_srtp`).
    srtp: crate::relay_srtp::LegSrtp,
}

impl LegMedia {
    fn rtp_dest(&self) -> Option<SocketAddr> {
        let l = *self.latched_rtp.lock().unwrap();
        l.or(*self.sdp_remote.lock().unwrap())
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        let l = *self.latched_rtcp.lock().unwrap();
        l.or_else(|| {
            self.sdp_remote
                .lock()
                .unwrap()
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }
}

/// What the relay swallows of the agent's RFC 4733 digits so the customer never hears a
/// feature code (`*2`...); see [`b2bua::feature`].
pub use b2bua::feature::FeatureCodeFilter as DtmfFilter;

struct CallMedia {
    legs: [LegMedia; 2],
    customer: Leg,
    filter: Mutex<Option<DtmfFilter>>,
    /// What the relay has removed from the agent's RTP stream (written by the agent's RTP task,
    /// read by both RTCP tasks to correct the reports about that stream).
    removed: Mutex<Option<media::rtp::Removed>>,
    /// Telephone-event payload type of the agent leg, or 0xffff when none.
    agent_te_pt: std::sync::atomic::AtomicU16,
    /// Tap only while some recording wants this call.
    tap_enabled: AtomicBool,
    packets: AtomicU64,
    /// RTP packets received from either party, forwarded or not: proof of life.
    rtp_rx: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// A prompt is playing: nothing is relayed between the legs.
    announcing: AtomicBool,
    /// While collecting consent: the leg and telephone-event type to listen on (0xffff: none).
    consent_pt: std::sync::atomic::AtomicU16,
    consent_leg_b: AtomicBool,
    /// 0 none yet, 1 accepted, 2 refused.
    consent: std::sync::atomic::AtomicU8,
}

fn idx(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
    }
}

#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
    /// Commands are carried out in order by the relay's own control task: binding and closing
    /// sockets never runs on (or delays) the signalling task.
    ctl: tokio::sync::mpsc::UnboundedSender<RelayCmd>,
}

enum RelayCmd {
    Media(MediaCommand),
    Tap(CallId, bool),
    Filter(CallId, Option<DtmfFilter>),
}

impl RelayCmd {
    /// The call of a command an address update must stay in order with (sockets and
    /// addresses); `None` for the others (tap, filter, announcement), which it may overtake.
    fn ordered(&self) -> Option<CallId> {
        match self {
            RelayCmd::Media(
                MediaCommand::Open { call, .. }
                | MediaCommand::Update { call, .. }
                | MediaCommand::Close { call },
            ) => Some(*call),
            _ => None,
        }
    }
}

/// Prompts by name (the configured path), decoded once at start-up: 8 kHz mono samples.
pub type Prompts = Arc<HashMap<String, Arc<Vec<i16>>>>;

/// Sent when a prompt has finished: the call, and the consent the customer keyed, if asked.
pub type AnnounceDone = tokio::sync::mpsc::UnboundedSender<(CallId, Option<bool>)>;

struct RelayInner {
    calls: Mutex<HashMap<CallId, Arc<CallMedia>>>,
    metrics: Arc<Metrics>,
    tap: Option<std::sync::mpsc::SyncSender<TapPacket>>,
    prompts: Prompts,
    announce_done: Option<AnnounceDone>,
    /// `media.timeout_s` in milliseconds; 0 turns media supervision off.
    media_timeout_ms: AtomicU64,
    /// Socket and address commands (`Open`, `Update`, `Close`) sent to the control task and
    /// not yet carried out, per call: an address update must not overtake them.
    queued: Mutex<HashMap<CallId, u32>>,
    /// The latest address of each leg whose update had to queue, for the call's `Open` to
    /// start with: when the relay's task reaches the `Open` late, the answer that carried the
    /// address may already be on its way to the caller, whose first packets must then find
    /// it (they were dropped as `no_destination` otherwise).
    early: Mutex<HashMap<(CallId, usize), Option<SocketAddr>>>,
}

impl Relay {
    pub fn new(
        metrics: Arc<Metrics>,
        tap: Option<std::sync::mpsc::SyncSender<TapPacket>>,
        prompts: Prompts,
        announce_done: Option<AnnounceDone>,
    ) -> Self {
        let (ctl, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let relay = Self {
            inner: Arc::new(RelayInner {
                calls: Mutex::new(HashMap::new()),
                metrics,
                tap,
                prompts,
                announce_done,
                media_timeout_ms: AtomicU64::new(0),
                queued: Mutex::new(HashMap::new()),
                early: Mutex::new(HashMap::new()),
            }),
            ctl,
        };
        let worker = relay.clone();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let ordered = cmd.ordered();
                match cmd {
                    RelayCmd::Media(c) => worker.apply(c),
                    RelayCmd::Tap(call, on) => worker.apply_tap(call, on),
                    RelayCmd::Filter(call, f) => worker.apply_filter(call, f),
                }
                if let Some(call) = ordered {
                    worker.done(call);
                }
            }
        });
        relay
    }

    /// How long a call may carry no RTP in either direction (while not on hold) before it is
    /// ended; zero disables the check.
    pub fn set_media_timeout(&self, timeout: std::time::Duration) {
        self.inner
            .media_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn media_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.inner.media_timeout_ms.load(Ordering::Relaxed))
    }

    /// RTP packets received so far by each open call.
    pub fn rtp_activity(&self) -> Vec<(CallId, u64)> {
        self.inner
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(c, m)| (*c, m.rtp_rx.load(Ordering::Relaxed)))
            .collect()
    }

    /// Plays a prompt on one leg, paced at 20 ms, then reports to the engine. The call's
    /// relaying is suspended meanwhile; closing the call stops the prompt.
    fn announce(
        &self,
        call: CallId,
        leg: Leg,
        prompt: &str,
        codec: b2bua::announce::PromptCodec,
        collect_consent: bool,
    ) {
        let media = self.inner.calls.lock().unwrap().get(&call).cloned();
        let samples = self.inner.prompts.get(prompt).cloned();
        let done = self.inner.announce_done.clone();
        let (Some(media), Some(samples)) = (media, samples) else {
            tracing::error!(
                call,
                prompt,
                "cannot play announcement (unknown prompt or call)"
            );
            if let Some(d) = done {
                let _ = d.send((call, None));
            }
            return;
        };
        media.announcing.store(true, Ordering::Relaxed);
        media.consent.store(0, Ordering::Relaxed);
        media.consent_leg_b.store(leg == Leg::B, Ordering::Relaxed);
        media.consent_pt.store(
            match (collect_consent, codec.telephone_event) {
                (true, Some(pt)) => pt as u16,
                _ => 0xffff,
            },
            Ordering::Relaxed,
        );
        let metrics = self.inner.metrics.clone();
        let m2 = media.clone();
        let task = tokio::spawn(
            async move {
                let ssrc = 0x7a71_0000 ^ (call as u32);
                let consent =
                    play_prompt(&m2, leg, &samples, codec, collect_consent, ssrc, &metrics).await;
                m2.announcing.store(false, Ordering::Relaxed);
                let result = match consent {
                    Some(true) => "consent_granted",
                    Some(false) => "consent_refused",
                    None if collect_consent => "consent_no_answer",
                    None => "played",
                };
                metrics.announcements.with_label_values(&[result]).inc();
                if let Some(d) = done {
                    let _ = d.send((call, consent));
                }
            }
            .instrument(tracing::info_span!("announce", call, leg = ?leg)),
        );
        media.tasks.lock().unwrap().push(task);
    }

    /// Keeps the agent's feature-code digits of `call` from the customer (after its `Open`).
    pub fn set_dtmf_filter(&self, call: CallId, filter: Option<DtmfFilter>) {
        self.enqueue(RelayCmd::Filter(call, filter));
    }

    /// Offers `call`'s packets to the recorder or not (after its `Open`).
    pub fn set_tap(&self, call: CallId, on: bool) {
        self.enqueue(RelayCmd::Tap(call, on));
    }

    /// Carries out a media command of the B2BUA, in order with the others. Called from the
    /// signalling task only (the commands' single producer).
    pub fn handle(&self, cmd: MediaCommand) {
        // A new remote address must be in force before the SIP message that follows it leaves:
        // the caller starts sending as soon as it has the callee's answer, and a packet that
        // finds no address is lost. Updating an address is two short locks, so it is done
        // here unless socket or address commands of the same call are still queued ahead of
        // it (its `Open`, an earlier update), whose order it must keep. (Binding sockets here
        // too was measured: 80 us more per call on this task, and setup p99 doubled.)
        // New SRTP keys, likewise: the answer carrying the peer's key is about to leave, and
        // its first packets must find the key in force.
        if let MediaCommand::Crypto { call, .. } = &cmd {
            if !self.inner.queued.lock().unwrap().contains_key(call) {
                self.apply(cmd);
                return;
            }
        }
        if let MediaCommand::Update {
            call, leg, remote, ..
        } = &cmd
        {
            if !self.inner.queued.lock().unwrap().contains_key(call) {
                self.apply(cmd);
                return;
            }
            self.inner
                .early
                .lock()
                .unwrap()
                .insert((*call, idx(*leg)), *remote);
        }
        self.enqueue(RelayCmd::Media(cmd));
    }

    fn enqueue(&self, cmd: RelayCmd) {
        let ordered = cmd.ordered();
        if let Some(call) = ordered {
            *self.inner.queued.lock().unwrap().entry(call).or_insert(0) += 1;
        }
        if self.ctl.send(cmd).is_err() {
            if let Some(call) = ordered {
                self.done(call);
            }
        }
    }

    /// One queued command of `call` has been carried out (or dropped).
    fn done(&self, call: CallId) {
        let mut q = self.inner.queued.lock().unwrap();
        if let Some(n) = q.get_mut(&call) {
            *n -= 1;
            if *n == 0 {
                q.remove(&call);
                // Every queued update of the call is applied by now: whatever `early` holds
                // for it is stale (e.g. updates that followed its Close).
                let mut early = self.inner.early.lock().unwrap();
                early.remove(&(call, 0));
                early.remove(&(call, 1));
            }
        }
    }

    fn apply_filter(&self, call: CallId, filter: Option<DtmfFilter>) {
        if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
            *c.filter.lock().unwrap() = filter;
        }
    }

    fn apply_tap(&self, call: CallId, on: bool) {
        if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
            c.tap_enabled.store(on, Ordering::Relaxed);
        }
    }

    fn apply(&self, cmd: MediaCommand) {
        match cmd {
            MediaCommand::Open {
                call,
                a_port,
                b_port,
                customer,
            } => {
                if let Err(e) = self.open(call, a_port, b_port, customer) {
                    tracing::error!(call, a_port, b_port, error = %e, "cannot bind media ports");
                    self.inner
                        .metrics
                        .rtp_dropped
                        .with_label_values(&["bind_failed"])
                        .inc();
                }
            }
            MediaCommand::Update {
                call,
                leg,
                remote,
                codecs,
                ..
            } => {
                if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
                    if leg != c.customer {
                        let pt = codecs
                            .iter()
                            .find(|m| m.encoding.eq_ignore_ascii_case("telephone-event"))
                            .map(|m| m.payload_type as u16)
                            .unwrap_or(0xffff);
                        c.agent_te_pt.store(pt, Ordering::Relaxed);
                    }
                    let l = &c.legs[idx(leg)];
                    let mut sdp = l.sdp_remote.lock().unwrap();
                    if *sdp != remote {
                        // The party moved its media (re-INVITE): learn its source again.
                        *sdp = remote;
                        *l.latched_rtp.lock().unwrap() = None;
                        *l.latched_rtcp.lock().unwrap() = None;
                    }
                }
            }
            MediaCommand::Announce {
                call,
                leg,
                prompt,
                codec,
                collect_consent,
            } => self.announce(call, leg, &prompt, codec, collect_consent),
            MediaCommand::Crypto { call, leg, crypto } => {
                if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
                    if let Err(e) = c.legs[idx(leg)].srtp.set(&crypto) {
                        tracing::error!(call, leg = ?leg, error = %e, "cannot key SRTP");
                    }
                }
            }
            MediaCommand::Close { call } => {
                {
                    let mut early = self.inner.early.lock().unwrap();
                    early.remove(&(call, 0));
                    early.remove(&(call, 1));
                }
                if let Some(c) = self.inner.calls.lock().unwrap().remove(&call) {
                    for t in c.tasks.lock().unwrap().drain(..) {
                        t.abort();
                    }
                }
            }
        }
    }

    fn open(&self, call: CallId, a_port: u16, b_port: u16, customer: Leg) -> std::io::Result<()> {
        let mk = |port: u16| -> std::io::Result<LegMedia> {
            Ok(LegMedia {
                rtp: Arc::new(bind_udp(port)?),
                rtcp: Arc::new(bind_udp(port + 1)?),
                sdp_remote: Mutex::new(None),
                latched_rtp: Mutex::new(None),
                latched_rtcp: Mutex::new(None),
                srtp: Default::default(),
            })
        };
        let media = Arc::new(CallMedia {
            legs: [mk(a_port)?, mk(b_port)?],
            customer,
            filter: Mutex::new(None),
            removed: Mutex::new(None),
            agent_te_pt: std::sync::atomic::AtomicU16::new(0xffff),
            tap_enabled: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            rtp_rx: AtomicU64::new(0),
            announcing: AtomicBool::new(false),
            consent_pt: std::sync::atomic::AtomicU16::new(0xffff),
            consent_leg_b: AtomicBool::new(false),
            consent: std::sync::atomic::AtomicU8::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        {
            let mut early = self.inner.early.lock().unwrap();
            for (i, l) in media.legs.iter().enumerate() {
                if let Some(remote) = early.remove(&(call, i)) {
                    *l.sdp_remote.lock().unwrap() = remote;
                }
            }
        }
        let mut tasks = Vec::with_capacity(4);
        for leg in [Leg::A, Leg::B] {
            for rtcp in [false, true] {
                // No tracing span around the task: a span is entered and left on every poll,
                // that is on every packet; the loop's rare log lines carry call and leg.
                let fut = relay_loop(self.inner.clone(), media.clone(), call, leg, rtcp);
                tasks.push(tokio::spawn(fut));
            }
        }
        *media.tasks.lock().unwrap() = tasks;
        self.inner.calls.lock().unwrap().insert(call, media);
        Ok(())
    }
}

/// Binds a UDP socket on every address: dual-stack `[::]` where the host has IPv6, else
/// `0.0.0.0`.
pub fn bind_udp(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = (|| {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok::<_, std::io::Error>(s)
    })();
    let s = match v6 {
        Ok(s) => s,
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
            s
        }
    };
    UdpSocket::from_std(s.into())
}

/// Sends a datagram at once with `sendto(2)` on the non-blocking socket. tokio's
/// `try_send_to` is not used: it refuses to send (WouldBlock, without a syscall) until the
/// reactor has seen the socket writable once, so a new leg's first packets were dropped when
/// the reactor was slow to turn under load. A UDP socket only refuses a send when its buffer
/// is full, and then the packet is dropped and counted either way.
fn send_now(sock: &UdpSocket, data: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    socket2::SockRef::from(sock).send_to(data, &to.into())
}

/// Whether `sock` is a dual-stack IPv6 socket (asked once per socket, not per packet: it is
/// a `getsockname` call).
fn is_v6_socket(sock: &UdpSocket) -> bool {
    matches!(sock.local_addr(), Ok(SocketAddr::V6(_)))
}

/// A dual-stack socket reaches IPv4 peers through their mapped address.
fn to_socket_family(v6_socket: bool, dest: SocketAddr) -> SocketAddr {
    match dest {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => dest,
    }
}

async fn relay_loop(
    inner: Arc<RelayInner>,
    media: Arc<CallMedia>,
    call: CallId,
    leg: Leg,
    rtcp: bool,
) {
    let this = &media.legs[idx(leg)];
    let other = &media.legs[idx(leg.other())];
    let (sock, out_sock) = if rtcp {
        (this.rtcp.clone(), other.rtcp.clone())
    } else {
        (this.rtp.clone(), other.rtp.clone())
    };
    let latch = if rtcp {
        &this.latched_rtcp
    } else {
        &this.latched_rtp
    };
    // Resolve the labelled counter once: no label lookup per packet.
    let relayed = inner
        .metrics
        .rtp_relayed
        .with_label_values(&[match (leg, rtcp) {
            (Leg::A, false) => "a_rtp",
            (Leg::B, false) => "b_rtp",
            (Leg::A, true) => "a_rtcp",
            (Leg::B, true) => "b_rtcp",
        }]);
    let dropped = |reason: &str| inner.metrics.rtp_dropped.with_label_values(&[reason]);
    let malformed = dropped("malformed");
    let unexpected = dropped("unexpected_source");
    let feature_code = dropped("feature_code");
    let no_destination = dropped("no_destination");
    let send_failed = dropped("send_failed");
    let too_large = dropped("too_large_for_tap");
    let late_after_removal = dropped("late_after_removal");
    let mut last_from_latched = Instant::now();
    let out_v6 = is_v6_socket(&out_sock);
    let srtp_drops = crate::relay_srtp::SrtpDrops::new(&inner.metrics);
    let mut srtp_logged = crate::relay_srtp::LoggedDrops::default();
    let mut buf = [0u8; MAX_DATAGRAM];
    // What is sent to an SRTP leg is protected here, so `buf` keeps the plaintext for the tap.
    let mut out_buf = [0u8; MAX_DATAGRAM + crate::relay_srtp::MAX_TRAILER];
    let agent_leg = leg != media.customer;
    let agent_rtp = !rtcp && agent_leg;
    // Feature-code swallowing and renumbering state of the agent's RTP task (only that task
    // touches it).
    let mut swallow_ts: Option<u32> = None;
    let mut swallower = b2bua::feature::Swallower::default();
    let mut renumber = media::rtp::Renumber::new();
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from a peer that went away shows up here on Linux;
                // it is not fatal for the socket.
                tracing::debug!(call, leg = ?leg, rtcp, error = %e, "media recv error");
                continue;
            }
        };
        // RTCP multiplexed on the RTP port (RFC 5761) counts as RTCP here, and is SRTCP on an
        // SRTP leg. An SRTP leg's packets are authenticated and decrypted first; a forged,
        // replayed or damaged one is dropped and counted here, before it can move the latch.
        let srtcp = rtcp || media::rtp::is_rtcp(&buf[..n]);
        let n = match this.srtp.receive(&mut buf[..n], srtcp, &srtp_drops) {
            Ok(n) => n,
            Err(d) => {
                d.counter.inc();
                if srtp_logged.first(d.reason) {
                    tracing::info!(
                        call,
                        leg = ?leg,
                        rtcp = srtcp,
                        from = %SocketAddr::new(src.ip().to_canonical(), src.port()),
                        reason = d.reason.as_str(),
                        "SRTP packet dropped; further drops of this reason on this stream are only counted (tapir_srtp_packets_dropped_total)"
                    );
                }
                continue;
            }
        };
        let opaque = this.srtp.opaque();
        let data = &buf[..n];
        let is_rtcp = srtcp;
        // Only well-formed RTP/RTCP (version 2, a whole header) crosses tapir; anything else
        // on a media port is noise or an attack. Media tapir cannot decrypt (DTLS, ZRTP) is
        // carried as it is.
        let valid = if opaque {
            true
        } else if rtcp {
            n >= 8 && data[0] >> 6 == 2
        } else {
            media::rtp::RtpView::parse(data).is_ok()
        };
        if !valid {
            malformed.inc();
            continue;
        }
        let now = Instant::now();
        {
            // Symmetric latching: the first source is the party's address (NAT-safe); another
            // source is ignored while the latched one is alive, and takes over after it has
            // been silent for RELATCH_AFTER (NAT rebinding, a new device after a transfer).
            let mut l = latch.lock().unwrap();
            match *l {
                Some(cur) if cur == src => last_from_latched = now,
                Some(_) if now.duration_since(last_from_latched) < RELATCH_AFTER => {
                    unexpected.inc();
                    continue;
                }
                _ => {
                    *l = Some(src);
                    last_from_latched = now;
                }
            }
        }
        if !rtcp {
            media.rtp_rx.fetch_add(1, Ordering::Relaxed);
        }
        if media.announcing.load(Ordering::Relaxed) {
            if !rtcp && (leg == Leg::B) == media.consent_leg_b.load(Ordering::Relaxed) {
                listen_for_consent(&media, data);
            }
            continue;
        }
        // Media tapir cannot decrypt is neither read for digits nor renumbered.
        let agent_media = agent_rtp && !is_rtcp && !opaque;
        if agent_media && swallow_feature_digit(&media, data, now, &mut swallow_ts, &mut swallower)
        {
            // Kept from the customer, but the recorder's DTMF detector must still see it.
            feature_code.inc();
            let payload = media::rtp::RtpView::parse(data).map_or(0, |v| v.payload().len());
            renumber.remove(rtp_ssrc(data), rtp_sequence(data), payload);
            *media.removed.lock().unwrap() = Some(renumber.removed());
            offer_to_tap(&inner, &media, call, leg, data, now, &too_large);
            continue;
        }
        // The customer must see the agent's stream without the holes removals left.
        let mut original_seq = None;
        if agent_media {
            let seq = rtp_sequence(data);
            match renumber.forward(rtp_ssrc(data), seq) {
                Some(s) if s != seq => {
                    media::rtp::renumber::set_sequence(&mut buf[..n], s);
                    original_seq = Some(seq);
                }
                Some(_) => {}
                None => {
                    late_after_removal.inc();
                    continue;
                }
            }
        } else if is_rtcp {
            let removed = *media.removed.lock().unwrap();
            if let Some(removed) = removed {
                if agent_leg {
                    media::rtp::renumber::correct_sender_reports(&mut buf[..n], &removed);
                } else {
                    media::rtp::renumber::correct_receiver_reports(&mut buf[..n], &removed);
                }
            }
        }
        let data = &buf[..n];
        let dest = if rtcp {
            other.rtcp_dest()
        } else {
            other.rtp_dest()
        };
        let Some(dest) = dest else {
            no_destination.inc();
            continue;
        };
        let packet = match other.srtp.send(data, &mut out_buf, srtcp) {
            Ok(p) => p,
            Err(_) => {
                srtp_drops.protect_failed.inc();
                continue;
            }
        };
        match send_now(&out_sock, packet, to_socket_family(out_v6, dest)) {
            Ok(_) => relayed.inc(),
            Err(_) => {
                send_failed.inc();
                continue;
            }
        }
        media.packets.fetch_add(1, Ordering::Relaxed);
        if !rtcp && !opaque {
            if let Some(seq) = original_seq {
                // The recorder orders packets by their own numbers.
                media::rtp::renumber::set_sequence(&mut buf[..n], seq);
            }
            offer_to_tap(&inner, &media, call, leg, &buf[..n], now, &too_large);
        }
    }
}

/// Sequence number of a validated RTP packet.
fn rtp_sequence(data: &[u8]) -> u16 {
    u16::from_be_bytes([data[2], data[3]])
}

/// SSRC of a validated RTP packet.
fn rtp_ssrc(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[8], data[9], data[10], data[11]])
}

/// Copies a (validated) RTP packet that arrived `at` to the recorder's queue when this call
/// is tapped. Never waits: a full queue drops the copy and counts it.
fn offer_to_tap(
    inner: &RelayInner,
    media: &CallMedia,
    call: CallId,
    leg: Leg,
    data: &[u8],
    at: Instant,
    too_large: &prometheus::IntCounter,
) {
    if !media.tap_enabled.load(Ordering::Relaxed) {
        return;
    }
    let Some(tap) = &inner.tap else {
        return;
    };
    if data.len() > TAP_MAX {
        too_large.inc();
        return;
    }
    let mut p = TapPacket {
        call,
        leg,
        at,
        len: data.len() as u16,
        data: [0u8; TAP_MAX],
    };
    p.data[..data.len()].copy_from_slice(data);
    // A bounded channel with a preallocated ring: no allocation, and never a wait.
    if tap.try_send(p).is_err() {
        inner.metrics.tap_dropped.inc();
    }
}

/// Decides whether an agent-leg packet is a feature-code digit to keep from the customer.
fn swallow_feature_digit(
    media: &CallMedia,
    data: &[u8],
    now: Instant,
    swallow_ts: &mut Option<u32>,
    swallower: &mut b2bua::feature::Swallower,
) -> bool {
    let pt = media.agent_te_pt.load(Ordering::Relaxed);
    if pt == 0xffff || data.len() < 16 || (data[1] & 0x7f) as u16 != pt {
        return false;
    }
    let Some(f) = *media.filter.lock().unwrap() else {
        return false;
    };
    let Ok(v) = media::rtp::RtpView::parse(data) else {
        return false;
    };
    let (ts, code) = (v.timestamp(), v.payload().first().copied().unwrap_or(255));
    if *swallow_ts == Some(ts) {
        // Every packet of a swallowed key press (updates and the repeated end packets).
        return true;
    }
    if swallower.press(&f, code, now) {
        *swallow_ts = Some(ts);
        return true;
    }
    false
}

/// How long the customer has to key 1 or 2 after the prompt.
const CONSENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends the prompt, 160 samples every 20 ms; returns the consent keyed, if any.
async fn play_prompt(
    media: &CallMedia,
    leg: Leg,
    samples: &[i16],
    codec: b2bua::announce::PromptCodec,
    collect_consent: bool,
    ssrc: u32,
    metrics: &Metrics,
) -> Option<bool> {
    let l = &media.legs[idx(leg)];
    let mut pkt = [0u8; 12 + 160];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let consent = || match media.consent.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    };
    for (i, chunk) in samples.chunks(160).enumerate() {
        tick.tick().await;
        if collect_consent && consent().is_some() {
            return consent();
        }
        media::rtp::write_header(
            &mut pkt,
            i == 0,
            codec.payload_type,
            i as u16,
            (i * 160) as u32,
            ssrc,
        );
        for (o, s) in pkt[12..]
            .iter_mut()
            .zip(chunk.iter().chain(std::iter::repeat(&0)))
        {
            *o = if codec.alaw {
                media::codec::encode_pcma(*s)
            } else {
                media::codec::encode_pcmu(*s)
            };
        }
        if let Some(dest) = l.rtp_dest() {
            if send_now(&l.rtp, &pkt, to_socket_family(is_v6_socket(&l.rtp), dest)).is_ok() {
                metrics.announcement_packets.inc();
            }
        }
    }
    if !collect_consent {
        return None;
    }
    let end = tokio::time::Instant::now() + CONSENT_WAIT;
    while tokio::time::Instant::now() < end {
        if let Some(c) = consent() {
            return Some(c);
        }
        tick.tick().await;
    }
    consent()
}

/// While a prompt asks for consent: an RFC 4733 end packet of 1 accepts, of 2 refuses.
fn listen_for_consent(media: &CallMedia, data: &[u8]) {
    let pt = media.consent_pt.load(Ordering::Relaxed);
    if pt == 0xffff || data.len() < 16 || (data[1] & 0x7f) as u16 != pt {
        return;
    }
    let Ok(v) = media::rtp::RtpView::parse(data) else {
        return;
    };
    let p = v.payload();
    if p.len() >= 2 && p[1] & 0x80 != 0 {
        let answer = match p[0] {
            1 => 1,
            2 => 2,
            _ => return,
        };
        let _ = media
            .consent
            .compare_exchange(0, answer, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An even port, other than `avoid`, whose pair is free, from the kernel's choice.
    fn free_pair(avoid: u16) -> u16 {
        loop {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            if p % 2 == 0
                && p.abs_diff(avoid) > 1
                && p < 65534
                && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            {
                return p;
            }
        }
    }

    fn update(call: CallId, port: u16) -> MediaCommand {
        MediaCommand::Update {
            call,
            leg: Leg::B,
            remote: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            sends: true,
            codecs: Vec::new(),
        }
    }

    fn remote_b(r: &Relay, call: CallId) -> Option<SocketAddr> {
        let calls = r.inner.calls.lock().unwrap();
        let l = &calls.get(&call)?.legs[1];
        let remote = *l.sdp_remote.lock().unwrap();
        remote
    }

    async fn settle(r: &Relay) {
        // Bounded, so a command that never completes fails the test instead of hanging it.
        for _ in 0..100_000 {
            if r.inner.queued.lock().unwrap().is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("relay commands still queued");
    }

    #[tokio::test]
    async fn a_new_socket_sends_before_the_reactor_has_seen_it() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = bind_udp(free_pair(0)).unwrap();
        // No await since the bind: the reactor has not reported the socket writable yet.
        let to = to_socket_family(is_v6_socket(&tx), rx.local_addr().unwrap());
        assert_eq!(send_now(&tx, b"first packet", to).unwrap(), 12);
        let mut buf = [0u8; 32];
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap(), 12);
    }

    #[tokio::test]
    async fn an_answers_address_is_in_force_before_the_answer_is_sent_on() {
        let r = Relay::new(Arc::new(Metrics::new()), None, Prompts::default(), None);
        let a = free_pair(0);
        let b = free_pair(a);
        r.handle(MediaCommand::Open {
            call: 1,
            a_port: a,
            b_port: b,
            customer: Leg::A,
        });
        // Queued behind the Open, so it waits its turn rather than finding no call.
        r.handle(update(1, 7000));
        assert_eq!(remote_b(&r, 1), None, "the control task has not run yet");
        settle(&r).await;
        assert_eq!(
            remote_b(&r, 1),
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        // Another call's queued work, or this call's tap setting, does not hold it back.
        r.handle(MediaCommand::Close { call: 99 });
        r.set_tap(1, true);
        // With nothing of its call queued, an address change is in force when `handle`
        // returns, before the engine transmits the SIP message that made the party send.
        r.handle(update(1, 7002));
        assert_eq!(
            remote_b(&r, 1),
            Some(SocketAddr::from(([127, 0, 0, 1], 7002)))
        );
        r.handle(MediaCommand::Close { call: 1 });
        settle(&r).await;
        assert!(r.inner.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_address_queued_behind_a_late_open_is_in_force_when_the_sockets_open() {
        let r = Relay::new(Arc::new(Metrics::new()), None, Prompts::default(), None);
        let a = free_pair(0);
        let b = free_pair(a);
        // The call's Open is still queued when the callee's answer arrives.
        r.inner.queued.lock().unwrap().insert(1, 1);
        r.handle(update(1, 7000));
        // The control task reaches the Open: the packets its sockets take from now on must find
        // the callee's address, although the update itself is still queued behind.
        r.apply(MediaCommand::Open {
            call: 1,
            a_port: a,
            b_port: b,
            customer: Leg::A,
        });
        r.done(1);
        assert_eq!(
            remote_b(&r, 1),
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        settle(&r).await;
        assert_eq!(
            remote_b(&r, 1),
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        // An update that follows the Close (a late answer's SDP) leaves nothing behind.
        r.handle(MediaCommand::Close { call: 1 });
        r.handle(update(1, 7004));
        assert!(!r.inner.early.lock().unwrap().is_empty());
        settle(&r).await;
        assert!(r.inner.calls.lock().unwrap().is_empty());
        assert!(r.inner.early.lock().unwrap().is_empty());
    }
}
