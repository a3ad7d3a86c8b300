//! SRTP for one leg of the relay: the contexts the B2BUA core's
//! [`b2bua::MediaCommand::Crypto`] keys, and the two steps the relay's packet loop takes with
//! them: unprotect what arrives from the leg, protect what is sent to it.
//!
//! Both work in place in the loop's fixed buffers and never allocate; a context is built only
//! when its key changes. Each context sits behind its
//! own mutex: the inbound one is used by the leg's RTP and RTCP tasks, the outbound one by the
//! other leg's, so a lock is almost never contended.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use b2bua::LegCrypto;
use prometheus::IntCounter;
use srtp::{Context, Keying, SrtpError};

use crate::metrics::Metrics;

const PLAIN: u8 = 0;
const SRTP: u8 = 1;
const OPAQUE: u8 = 2;

/// Bytes `protect` may add to a packet.
pub const MAX_TRAILER: usize = srtp::MAX_RTCP_TRAILER;

/// A context with the key it was built from.
type Keyed = Option<(Keying, Box<Context>)>;

#[derive(Default)]
pub struct LegSrtp {
    mode: AtomicU8,
    inbound: Mutex<Keyed>,
    outbound: Mutex<Keyed>,
}

/// Puts a context for `key` in `slot`, keeping the one there when it has the same key: its
/// rollover counters and replay windows must survive a re-INVITE that changed only the
/// other direction's key (a fresh context would restart at ROC 0 and, after the first
/// sequence wrap, every packet would fail authentication at the peer).
fn install(slot: &Mutex<Keyed>, key: Option<&Keying>) -> Result<(), SrtpError> {
    let mut s = slot.lock().unwrap();
    match key {
        None => *s = None,
        Some(k) if s.as_ref().is_some_and(|(have, _)| have == k) => {}
        Some(k) => *s = Some((k.clone(), Box::new(Context::new(k)?))),
    }
    Ok(())
}

impl LegSrtp {
    /// Takes the leg's new keys. Called from the relay's control task.
    pub fn set(&self, crypto: &LegCrypto) -> Result<(), SrtpError> {
        match crypto {
            LegCrypto::Plain => {
                self.mode.store(PLAIN, Ordering::Release);
                *self.inbound.lock().unwrap() = None;
                *self.outbound.lock().unwrap() = None;
            }
            LegCrypto::Opaque => {
                self.mode.store(OPAQUE, Ordering::Release);
                *self.inbound.lock().unwrap() = None;
                *self.outbound.lock().unwrap() = None;
            }
            LegCrypto::Srtp { inbound, outbound } => {
                // Contexts first, then the mode: a packet that sees SRTP finds keys.
                install(&self.inbound, inbound.as_ref())?;
                install(&self.outbound, Some(outbound))?;
                self.mode.store(SRTP, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Encrypted with keys tapir does not have: relay untouched, never tap.
    pub fn opaque(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == OPAQUE
    }

    /// Unprotects a packet that arrived from the leg, in place; returns the plaintext length,
    /// or why it was dropped. Plain and opaque legs pass it as it is.
    pub fn receive<'m>(
        &self,
        buf: &mut [u8],
        rtcp: bool,
        drops: &'m SrtpDrops,
    ) -> Result<usize, Dropped<'m>> {
        if self.mode.load(Ordering::Acquire) != SRTP {
            return Ok(buf.len());
        }
        let mut ctx = self.inbound.lock().unwrap();
        let Some((_, ctx)) = ctx.as_mut() else {
            return Err(drops.dropped(Reason::NoKey));
        };
        let r = if rtcp {
            ctx.unprotect_rtcp(buf)
        } else {
            ctx.unprotect_rtp(buf)
        };
        r.map_err(|e| drops.reason(e))
    }

    /// The packet to send to the leg: `data` itself on a plain or opaque leg, else `data`
    /// protected into `out` (which must be `MAX_TRAILER` bytes longer).
    pub fn send<'a>(
        &self,
        data: &'a [u8],
        out: &'a mut [u8],
        rtcp: bool,
    ) -> Result<&'a [u8], SrtpError> {
        if self.mode.load(Ordering::Acquire) != SRTP {
            return Ok(data);
        }
        let mut ctx = self.outbound.lock().unwrap();
        let Some((_, ctx)) = ctx.as_mut() else {
            return Ok(data);
        };
        if data.len() + MAX_TRAILER > out.len() {
            return Err(SrtpError::NoRoom);
        }
        out[..data.len()].copy_from_slice(data);
        let n = if rtcp {
            ctx.protect_rtcp(out, data.len())?
        } else {
            ctx.protect_rtp(out, data.len())?
        };
        Ok(&out[..n])
    }
}

/// Why an arriving SRTP/SRTCP packet was dropped: the `reason` label of
/// `tapir_srtp_packets_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    AuthFailed,
    Replayed,
    TooOld,
    KeyExpired,
    BadMki,
    NoKey,
    Malformed,
}

impl Reason {
    const ALL: [Reason; 7] = [
        Reason::AuthFailed,
        Reason::Replayed,
        Reason::TooOld,
        Reason::KeyExpired,
        Reason::BadMki,
        Reason::NoKey,
        Reason::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthFailed => "auth_failed",
            Reason::Replayed => "replayed",
            Reason::TooOld => "too_old",
            Reason::KeyExpired => "key_expired",
            Reason::BadMki => "bad_mki",
            Reason::NoKey => "no_key",
            Reason::Malformed => "malformed",
        }
    }

    fn of(e: SrtpError) -> Self {
        match e {
            SrtpError::AuthFailed => Reason::AuthFailed,
            SrtpError::Replayed => Reason::Replayed,
            SrtpError::TooOld => Reason::TooOld,
            SrtpError::KeyExpired => Reason::KeyExpired,
            SrtpError::BadMki => Reason::BadMki,
            _ => Reason::Malformed,
        }
    }
}

/// A dropped packet: its reason and the counter to count it on.
pub struct Dropped<'m> {
    pub reason: Reason,
    pub counter: &'m IntCounter,
}

/// The drop counters of one packet loop, resolved once so no label is looked up per packet.
pub struct SrtpDrops {
    by_reason: [IntCounter; 7],
    pub protect_failed: IntCounter,
}

impl SrtpDrops {
    pub fn new(m: &Metrics) -> Self {
        let c = |r: &str| m.srtp_dropped.with_label_values(&[r]);
        Self {
            by_reason: Reason::ALL.map(|r| c(r.as_str())),
            protect_failed: c("protect_failed"),
        }
    }

    fn dropped(&self, reason: Reason) -> Dropped<'_> {
        Dropped {
            reason,
            counter: &self.by_reason[reason as usize],
        }
    }

    fn reason(&self, e: SrtpError) -> Dropped<'_> {
        self.dropped(Reason::of(e))
    }
}

/// Which drop reasons a packet loop has already logged: the first packet dropped for each
/// reason is logged, the rest only counted, so a flood of forged packets cannot flood the log.
#[derive(Default)]
pub struct LoggedDrops(u8);

impl LoggedDrops {
    /// Whether this is the loop's first drop for `reason` (and so to be logged).
    pub fn first(&mut self, reason: Reason) -> bool {
        let bit = 1u8 << (reason as u8);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srtp::{MasterKey, Suite};

    fn key(b: u8) -> Keying {
        Keying::new(MasterKey::new(Suite::AesCm128HmacSha1_80, &[b; 30]).unwrap())
    }

    /// A packet of `seq` protected by a fresh context that first sent 65535 and 0 (so its
    /// rollover counter is 1).
    fn sent_after_a_wrap(k: &Keying, seq: u16) -> Vec<u8> {
        let mut tx = Context::new(k).unwrap();
        let mut last = Vec::new();
        for s in [65535u16, 0, seq] {
            let mut b = vec![0u8; 32 + MAX_TRAILER];
            media::rtp::write_header(&mut b, false, 0, s, 0, 7);
            let n = tx.protect_rtp(&mut b, 32).unwrap();
            b.truncate(n);
            last = b;
        }
        last
    }

    #[test]
    fn new_keys_for_one_direction_keep_the_other_directions_state() {
        let m = Metrics::new();
        let drops = SrtpDrops::new(&m);
        let leg = LegSrtp::default();
        let (theirs, ours) = (key(1), key(2));
        leg.set(&LegCrypto::Srtp {
            inbound: None,
            outbound: ours.clone(),
        })
        .unwrap();
        leg.set(&LegCrypto::Srtp {
            inbound: Some(theirs.clone()),
            outbound: ours.clone(),
        })
        .unwrap();
        // The peer's packets across a wrap: the inbound context learns ROC 1.
        let mut rx_tx = Context::new(&theirs).unwrap();
        for s in [65535u16, 0, 1] {
            let mut b = vec![0u8; 32 + MAX_TRAILER];
            media::rtp::write_header(&mut b, false, 0, s, 0, 7);
            let n = rx_tx.protect_rtp(&mut b, 32).unwrap();
            assert_eq!(leg.receive(&mut b[..n], false, &drops).ok(), Some(32));
        }
        // The same keys again (a re-INVITE that changed nothing for this leg): the state stays,
        // so packet 2 of ROC 1 still authenticates.
        leg.set(&LegCrypto::Srtp {
            inbound: Some(theirs.clone()),
            outbound: ours.clone(),
        })
        .unwrap();
        let mut p = sent_after_a_wrap(&theirs, 2);
        assert_eq!(leg.receive(&mut p, false, &drops).ok(), Some(32));
        // A plain leg passes packets through; an opaque one too, and says so.
        leg.set(&LegCrypto::Opaque).unwrap();
        assert!(leg.opaque());
        let mut out = [0u8; 64 + MAX_TRAILER];
        assert_eq!(
            leg.send(&[0x80; 20], &mut out, false).unwrap(),
            &[0x80; 20][..]
        );
    }

    #[test]
    fn failures_are_counted_by_reason() {
        let m = Metrics::new();
        let drops = SrtpDrops::new(&m);
        let leg = LegSrtp::default();
        leg.set(&LegCrypto::Srtp {
            inbound: None,
            outbound: key(2),
        })
        .unwrap();
        let mut b = [0x80u8; 40];
        let d = leg.receive(&mut b, false, &drops).unwrap_err();
        assert_eq!(d.reason, Reason::NoKey);
        d.counter.inc();
        assert_eq!(m.srtp_dropped.with_label_values(&["no_key"]).get(), 1);
        leg.set(&LegCrypto::Srtp {
            inbound: Some(key(1)),
            outbound: key(2),
        })
        .unwrap();
        let d = leg.receive(&mut b, false, &drops).unwrap_err();
        assert_eq!(d.reason.as_str(), "auth_failed");
        d.counter.inc();
        assert_eq!(m.srtp_dropped.with_label_values(&["auth_failed"]).get(), 1);
        // A short packet is malformed.
        let d = leg.receive(&mut b[..14], false, &drops).unwrap_err();
        assert_eq!(d.reason, Reason::Malformed);
    }

    #[test]
    fn each_reason_is_logged_once_per_loop() {
        let mut l = LoggedDrops::default();
        assert!(l.first(Reason::Malformed));
        assert!(l.first(Reason::AuthFailed));
        assert!(!l.first(Reason::Malformed));
        assert!(!l.first(Reason::AuthFailed));
        assert!(l.first(Reason::NoKey));
        for r in Reason::ALL {
            l.first(r);
            assert!(!l.first(r), "{r:?}");
        }
    }
}
