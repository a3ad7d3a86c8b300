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
    /// or the counter of the reason it was dropped. Plain and opaque legs pass it as it is.
    pub fn receive<'m>(
        &self,
        buf: &mut [u8],
        rtcp: bool,
        drops: &'m SrtpDrops,
    ) -> Result<usize, &'m IntCounter> {
        if self.mode.load(Ordering::Acquire) != SRTP {
            return Ok(buf.len());
        }
        let mut ctx = self.inbound.lock().unwrap();
        let Some((_, ctx)) = ctx.as_mut() else {
            return Err(&drops.no_key);
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

/// The drop counters of one packet loop, resolved once so no label is looked up per packet.
pub struct SrtpDrops {
    auth_failed: IntCounter,
    replayed: IntCounter,
    too_old: IntCounter,
    key_expired: IntCounter,
    bad_mki: IntCounter,
    no_key: IntCounter,
    malformed: IntCounter,
    pub protect_failed: IntCounter,
}

impl SrtpDrops {
    pub fn new(m: &Metrics) -> Self {
        let c = |r: &str| m.srtp_dropped.with_label_values(&[r]);
        Self {
            auth_failed: c("auth_failed"),
            replayed: c("replayed"),
            too_old: c("too_old"),
            key_expired: c("key_expired"),
            bad_mki: c("bad_mki"),
            no_key: c("no_key"),
            malformed: c("malformed"),
            protect_failed: c("protect_failed"),
        }
    }

    fn reason(&self, e: SrtpError) -> &IntCounter {
        match e {
            SrtpError::AuthFailed => &self.auth_failed,
            SrtpError::Replayed => &self.replayed,
            SrtpError::TooOld => &self.too_old,
            SrtpError::KeyExpired => &self.key_expired,
            SrtpError::BadMki => &self.bad_mki,
            _ => &self.malformed,
        }
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
        leg.receive(&mut b, false, &drops).unwrap_err().inc();
        assert_eq!(m.srtp_dropped.with_label_values(&["no_key"]).get(), 1);
        leg.set(&LegCrypto::Srtp {
            inbound: Some(key(1)),
            outbound: key(2),
        })
        .unwrap();
        leg.receive(&mut b, false, &drops).unwrap_err().inc();
        assert_eq!(m.srtp_dropped.with_label_values(&["auth_failed"]).get(), 1);
    }
}
