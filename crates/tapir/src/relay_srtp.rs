//! SRTP for one leg of the relay: the contexts the B2BUA core's
//! [`b2bua::MediaCommand::Crypto`] keys, and the two steps the relay's packet loop takes with
//! them: unprotect what arrives from the leg, protect what is sent to it.
//!
//! Both work in place in the loop's fixed buffers and never allocate; contexts are built (and
//! their per-SSRC state allocated) only when a leg's keys change. Each context sits behind its
//! own mutex: the inbound one is used by the leg's RTP and RTCP tasks, the outbound one by the
//! other leg's, so a lock is almost never contended.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use b2bua::LegCrypto;
use prometheus::IntCounter;
use srtp::{Context, SrtpError};

use crate::metrics::Metrics;

const PLAIN: u8 = 0;
const SRTP: u8 = 1;
const OPAQUE: u8 = 2;

/// Bytes `protect` may add to a packet.
pub const MAX_TRAILER: usize = srtp::MAX_RTCP_TRAILER;

#[derive(Default)]
pub struct LegSrtp {
    mode: AtomicU8,
    inbound: Mutex<Option<Box<Context>>>,
    outbound: Mutex<Option<Box<Context>>>,
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
                let out = Box::new(Context::new(outbound)?);
                let inb = match inbound {
                    Some(k) => Some(Box::new(Context::new(k)?)),
                    None => None,
                };
                // Contexts first, then the mode: a packet that sees SRTP finds keys.
                *self.inbound.lock().unwrap() = inb;
                *self.outbound.lock().unwrap() = Some(out);
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
        let Some(ctx) = ctx.as_mut() else {
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
        let Some(ctx) = ctx.as_mut() else {
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
