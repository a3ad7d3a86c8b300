//! The RTP/RTCP relay: the IO side of media anchoring.
//!
//! Each call leg gets an RTP and an RTCP socket on the port pair the B2BUA core allocated. A
//! packet that arrives on leg A's socket is sent at once from leg B's socket to leg B's remote
//! address, and the other way round: no jitter buffer, no decoding, no copy on the forwarding
//! path. After forwarding, RTP packets are offered to the tap (the recorder) with `try_send`,
//! which never waits: when the recorder falls behind, the copy is dropped and counted.
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
/// feature code (`*2`...). Digits are dropped from the first digit that can start a code until
/// as many digits as the longest code have passed or the inter-digit time ran out; a digit
/// that turns out not to be a code is lost rather than delayed (the relay never holds media).
#[derive(Debug, Clone, Copy, Default)]
pub struct DtmfFilter {
    /// Bit n set: event code n can start a feature code.
    pub starts: u16,
    pub max_len: u8,
    pub window: std::time::Duration,
}

struct CallMedia {
    legs: [LegMedia; 2],
    customer: Leg,
    filter: Mutex<Option<DtmfFilter>>,
    /// Telephone-event payload type of the agent leg, or 0xffff when none.
    agent_te_pt: std::sync::atomic::AtomicU16,
    /// Tap only while some recording wants this call.
    tap_enabled: AtomicBool,
    packets: AtomicU64,
    /// RTP packets received from either party, forwarded or not: proof of life.
    rtp_rx: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
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
}

struct RelayInner {
    calls: Mutex<HashMap<CallId, Arc<CallMedia>>>,
    metrics: Arc<Metrics>,
    tap: Option<std::sync::mpsc::SyncSender<TapPacket>>,
    /// `media.timeout_s` in milliseconds; 0 turns media supervision off.
    media_timeout_ms: AtomicU64,
}

impl Relay {
    pub fn new(metrics: Arc<Metrics>, tap: Option<std::sync::mpsc::SyncSender<TapPacket>>) -> Self {
        Self {
            inner: Arc::new(RelayInner {
                calls: Mutex::new(HashMap::new()),
                metrics,
                tap,
                media_timeout_ms: AtomicU64::new(0),
            }),
        }
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

    pub fn set_dtmf_filter(&self, call: CallId, filter: Option<DtmfFilter>) {
        if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
            *c.filter.lock().unwrap() = filter;
        }
    }

    pub fn set_tap(&self, call: CallId, on: bool) {
        if let Some(c) = self.inner.calls.lock().unwrap().get(&call) {
            c.tap_enabled.store(on, Ordering::Relaxed);
        }
    }

    pub fn handle(&self, cmd: MediaCommand) {
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
            MediaCommand::Close { call } => {
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
            })
        };
        let media = Arc::new(CallMedia {
            legs: [mk(a_port)?, mk(b_port)?],
            customer,
            filter: Mutex::new(None),
            agent_te_pt: std::sync::atomic::AtomicU16::new(0xffff),
            tap_enabled: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            rtp_rx: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::with_capacity(4);
        for leg in [Leg::A, Leg::B] {
            for rtcp in [false, true] {
                let span = tracing::info_span!("media", call, leg = ?leg, rtcp);
                let fut = relay_loop(self.inner.clone(), media.clone(), call, leg, rtcp);
                tasks.push(tokio::spawn(fut.instrument(span)));
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

/// A dual-stack socket reaches IPv4 peers through their mapped address.
fn to_socket_family(sock: &UdpSocket, dest: SocketAddr) -> SocketAddr {
    match (sock.local_addr(), dest) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
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
    let mut buf = [0u8; MAX_DATAGRAM];
    let agent_rtp = !rtcp && leg != media.customer;
    // Feature-code swallowing state of the agent's RTP task (only that task touches it).
    let mut swallow_ts: Option<u32> = None;
    let mut window: Option<(Instant, u8)> = None;
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from a peer that went away shows up here on Linux;
                // it is not fatal for the socket.
                tracing::debug!(error = %e, "media recv error");
                continue;
            }
        };
        let data = &buf[..n];
        if !rtcp {
            media.rtp_rx.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut l = latch.lock().unwrap();
            if *l != Some(src) {
                *l = Some(src);
            }
        }
        if agent_rtp && swallow_feature_digit(&media, data, &mut swallow_ts, &mut window) {
            // Kept from the customer, but the recorder's DTMF detector must still see it.
            inner
                .metrics
                .rtp_dropped
                .with_label_values(&["feature_code"])
                .inc();
            offer_to_tap(&inner, &media, call, leg, data);
            continue;
        }
        let dest = if rtcp {
            other.rtcp_dest()
        } else {
            other.rtp_dest()
        };
        let Some(dest) = dest else {
            inner
                .metrics
                .rtp_dropped
                .with_label_values(&["no_destination"])
                .inc();
            continue;
        };
        match out_sock.try_send_to(data, to_socket_family(&out_sock, dest)) {
            Ok(_) => relayed.inc(),
            Err(_) => {
                inner
                    .metrics
                    .rtp_dropped
                    .with_label_values(&["send_failed"])
                    .inc();
                continue;
            }
        }
        media.packets.fetch_add(1, Ordering::Relaxed);
        if !rtcp {
            offer_to_tap(&inner, &media, call, leg, data);
        }
    }
}

/// Copies an RTP packet to the recorder's queue when this call is tapped. Never waits: a full
/// queue drops the copy and counts it.
fn offer_to_tap(inner: &RelayInner, media: &CallMedia, call: CallId, leg: Leg, data: &[u8]) {
    if !media.tap_enabled.load(Ordering::Relaxed) {
        return;
    }
    let Some(tap) = &inner.tap else {
        return;
    };
    if data.len() > TAP_MAX || media::rtp::RtpView::parse(data).is_err() {
        inner
            .metrics
            .rtp_dropped
            .with_label_values(&["not_rtp"])
            .inc();
        return;
    }
    let mut p = TapPacket {
        call,
        leg,
        at: Instant::now(),
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
    swallow_ts: &mut Option<u32>,
    window: &mut Option<(Instant, u8)>,
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
    let now = Instant::now();
    let open = match window {
        Some((until, left)) if now < *until && *left > 0 => true,
        _ => false,
    };
    let starts = code < 16 && f.starts & (1 << code) != 0;
    if open {
        if let Some((until, left)) = window.as_mut() {
            *left -= 1;
            *until = now + f.window;
        }
    } else if starts {
        *window = Some((now + f.window, f.max_len.saturating_sub(1)));
    } else {
        return false;
    }
    *swallow_ts = Some(ts);
    true
}
