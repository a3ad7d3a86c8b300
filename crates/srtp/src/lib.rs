//! SRTP and SRTCP (RFC 3711) for tapir's relay: AES_CM_128_HMAC_SHA1_80,
//! AES_CM_128_HMAC_SHA1_32 and AEAD_AES_128_GCM (RFC 7714), with the rollover counter, a
//! replay window, key lifetimes and an optional MKI, protecting and unprotecting a packet in
//! the buffer it arrived in.
//!
//! Sans-IO: a [`Context`] is built from a master key (SDES hands it over in SDP, RFC 4568) and
//! then only transforms bytes. It never reads a clock, generates a key or allocates: its
//! per-SSRC state lives in a fixed array inside it, so the relay can decrypt, tap and
//! re-encrypt every packet without touching the allocator.
//!
//! # Why the framing is our own
//!
//! The packet framing (index estimation, IVs, trailers, replay window) is written here on top
//! of the RustCrypto primitives (`aes`, `ctr`, `hmac`, `sha1`, `aes-gcm`) because no
//! maintained crate transforms in place without allocating:
//!
//! - `webrtc-srtp` and its successor `rtc-srtp` (webrtc-rs) return a fresh `Bytes`/`BytesMut`
//!   for every packet and keep a boxed replay detector per SSRC in a `HashMap`; they have no
//!   MKI, since they are built for DTLS-SRTP.
//! - `srtp` (the libsrtp2 binding) has had no release since 2020, needs a C build with
//!   OpenSSL for GCM, and puts every packet through `unsafe` FFI.
//! - `libsrtp` (a pure Rust port) is marked experimental and moves a `Vec` in and out of
//!   each call.
//!
//! The tests check the primitives against RFC 3711 appendix B (keystream and key derivation)
//! and RFC 7714 (GCM packets), and whole packets against ones protected by libsrtp 2.
//!
//! A context serves one direction: the receiving one checks replays, the sending one counts
//! the SRTCP index. SDES gives each party its own key for what it sends, so a call leg has
//! one of each.

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128;
use aes_gcm::{AeadInOut, Aes128Gcm};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use thiserror::Error;
use zeroize::Zeroize;

type Ctr = ctr::Ctr128BE<Aes128>;
type CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;
type HmacSha1 = Hmac<Sha1>;

/// Why a packet was not protected or unprotected, or a key not accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    #[error("packet too short for its header and SRTP trailer")]
    TooShort,
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    #[error("CSRC list or header extension runs past the end of the packet")]
    Truncated,
    #[error("buffer has no room for the SRTP trailer")]
    NoRoom,
    #[error("authentication failed")]
    AuthFailed,
    #[error("packet was already received (replay)")]
    Replayed,
    #[error("packet is older than the replay window")]
    TooOld,
    #[error("master key has reached its lifetime")]
    KeyExpired,
    #[error("MKI does not name the key in use")]
    BadMki,
    #[error("master key and salt must be {expected} bytes, not {got}")]
    BadKeyLength { expected: usize, got: usize },
    #[error("MKI length {0} is not supported (1 to 4 bytes)")]
    BadMkiLength(usize),
    #[error("MKI value {value} does not fit in {len} bytes")]
    MkiTooLarge { value: u64, len: usize },
    #[error("key lifetime must be at least 1 packet")]
    BadLifetime,
}

/// An SRTP crypto suite, by its SDES name (RFC 4568 §6.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, in the order tapir prefers them when it offers.
    pub const ALL: [Suite; 3] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite named `name` (exact, case-sensitive as RFC 4568's grammar).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes: 112 bits for AES-CM, 96 for GCM.
    pub fn salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Length of the key||salt that SDES carries inline.
    pub fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Authentication tag length of SRTP packets.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm => 16,
        }
    }

    /// Authentication tag length of SRTCP packets: _32 keeps the 80-bit tag for SRTCP
    /// (RFC 4568 §6.2.1).
    pub fn rtcp_tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 16,
            _ => 10,
        }
    }

    fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm)
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Master key and salt of one suite. `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    bytes: [u8; 30],
}

impl MasterKey {
    /// `key_and_salt` is the master key followed by the master salt, as SDES carries it.
    pub fn new(suite: Suite, key_and_salt: &[u8]) -> Result<Self, SrtpError> {
        if key_and_salt.len() != suite.master_len() {
            return Err(SrtpError::BadKeyLength {
                expected: suite.master_len(),
                got: key_and_salt.len(),
            });
        }
        let mut bytes = [0u8; 30];
        bytes[..key_and_salt.len()].copy_from_slice(key_and_salt);
        Ok(Self { suite, bytes })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Key then salt, `suite().master_len()` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.suite.master_len()]
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..16]
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[16..self.suite.master_len()]
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ..)", self.suite)
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// A master key identifier carried in every packet (RFC 3711 §3.1), 1 to 4 bytes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    bytes: [u8; 4],
    len: u8,
}

impl Mki {
    /// The MKI `value` written big-endian in `len` bytes (RFC 4568's `|value:len`).
    pub fn new(value: u64, len: usize) -> Result<Self, SrtpError> {
        if !(1..=4).contains(&len) {
            return Err(SrtpError::BadMkiLength(len));
        }
        if value >> (8 * len) != 0 {
            return Err(SrtpError::MkiTooLarge { value, len });
        }
        let mut bytes = [0u8; 4];
        bytes[..len].copy_from_slice(&value.to_be_bytes()[8 - len..]);
        Ok(Self {
            bytes,
            len: len as u8,
        })
    }

    /// Bytes the MKI takes in each packet.
    pub fn size(&self) -> usize {
        self.len as usize
    }

    pub fn value(&self) -> u64 {
        self.as_bytes()
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Everything one direction of a stream is keyed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keying {
    pub master: MasterKey,
    pub mki: Option<Mki>,
    /// Packets the master key may protect, for SRTP and for SRTCP each (RFC 4568's lifetime
    /// parameter); `None` is the RFC 3711 maximum (2^48 SRTP, 2^31 SRTCP).
    pub lifetime: Option<u64>,
}

impl Keying {
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            mki: None,
            lifetime: None,
        }
    }
}

/// Longest SRTP trailer any suite adds (GCM tag 16 + MKI 4).
pub const MAX_RTP_TRAILER: usize = 20;
/// Longest SRTCP trailer any suite adds (tag 16 + E/index 4 + MKI 4).
pub const MAX_RTCP_TRAILER: usize = 24;
/// SSRCs a context keeps state for; the least recently used is forgotten beyond that.
pub const STREAMS: usize = 8;
/// Replay window, in packets (RFC 3711 §3.3.2 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 128;

const MAX_RTP_PACKETS: u64 = 1 << 48;
const MAX_RTCP_PACKETS: u64 = 1 << 31;
const E_FLAG: u32 = 0x8000_0000;

enum Transform {
    Cm {
        aes: Aes128,
        hmac: HmacSha1,
        tag_len: usize,
    },
    Gcm(Aes128Gcm),
}

/// Session keys for RTP or for RTCP.
struct Session {
    transform: Transform,
    /// Session salt, 14 bytes for AES-CM, the first 12 for GCM.
    salt: [u8; 14],
}

/// Received-index and replay state of one direction of one SSRC.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    init: bool,
    /// Highest index received (48 bits for SRTP, 31 for SRTCP).
    highest: u64,
    /// Bit k set: index `highest - k` was received.
    seen: u128,
}

impl Window {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.init || index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.seen & (1u128 << delta) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if !self.init {
            *self = Self {
                init: true,
                highest: index,
                seen: 1,
            };
        } else if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1u128 << (self.highest - index);
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    used: bool,
    ssrc: u32,
    last_use: u64,
    rtp: Window,
    rtcp: Window,
    /// Last SRTCP index sent; the first packet goes out with 1, as libsrtp's do.
    rtcp_sent: u32,
}

/// One direction's SRTP/SRTCP crypto context (RFC 3711 §3.2).
pub struct Context {
    suite: Suite,
    mki: Option<Mki>,
    rtp: Session,
    rtcp: Session,
    rtp_limit: u64,
    rtcp_limit: u64,
    rtp_count: u64,
    rtcp_count: u64,
    streams: [Stream; STREAMS],
    tick: u64,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("mki", &self.mki)
            .field("rtp_count", &self.rtp_count)
            .field("rtcp_count", &self.rtcp_count)
            .finish_non_exhaustive()
    }
}

/// RFC 3711 §4.3.1 key derivation with a key derivation rate of zero: AES-CM keyed with the
/// master key over `(master_salt XOR label << 48) || 0x0000`.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    // A 96-bit GCM salt sits at the left of the 112-bit field (RFC 7714 §11).
    iv[..master.salt().len()].copy_from_slice(master.salt());
    iv[7] ^= label;
    out.fill(0);
    let aes = Aes128::new(master.key().try_into().expect("16-byte master key"));
    let mut ctr = Ctr::from_core(CtrCore::inner_iv_init(aes, &iv.into()));
    ctr.apply_keystream(out);
}

impl Session {
    fn new(master: &MasterKey, labels: [u8; 3], tag_len: usize) -> Self {
        let mut key = [0u8; 16];
        derive(master, labels[0], &mut key);
        let mut salt = [0u8; 14];
        derive(master, labels[2], &mut salt[..master.suite.salt_len()]);
        let transform = if master.suite.is_aead() {
            Transform::Gcm(Aes128Gcm::new(&key.into()))
        } else {
            let mut auth = [0u8; 20];
            derive(master, labels[1], &mut auth);
            let hmac = HmacSha1::new_from_slice(&auth).expect("HMAC takes any key length");
            auth.fill(0);
            Transform::Cm {
                aes: Aes128::new(&key.into()),
                hmac,
                tag_len,
            }
        };
        key.fill(0);
        Self { transform, salt }
    }

    #[cfg(test)]
    fn from_session_keys(
        suite: Suite,
        key: &[u8],
        salt: &[u8],
        auth: &[u8],
        tag_len: usize,
    ) -> Self {
        let mut s = [0u8; 14];
        s[..salt.len()].copy_from_slice(salt);
        let transform = if suite.is_aead() {
            Transform::Gcm(Aes128Gcm::new_from_slice(key).unwrap())
        } else {
            Transform::Cm {
                aes: Aes128::new_from_slice(key).unwrap(),
                hmac: HmacSha1::new_from_slice(auth).unwrap(),
                tag_len,
            }
        };
        Self { transform, salt: s }
    }

    /// AES-CM IV (RFC 3711 §4.1.1): salt·2^16 XOR SSRC·2^64 XOR index·2^16.
    fn cm_iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *d ^= s;
        }
        iv
    }

    /// GCM IV for SRTP (RFC 7714 §8.1): 00 00 || SSRC || ROC || SEQ, XOR salt.
    fn gcm_rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (d, s) in iv.iter_mut().zip(&self.salt) {
            *d ^= s;
        }
        iv
    }

    /// GCM IV for SRTCP (RFC 7714 §9.1): 00 00 || SSRC || 00 00 || 0 || index, XOR salt.
    fn gcm_rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&index.to_be_bytes());
        for (d, s) in iv.iter_mut().zip(&self.salt) {
            *d ^= s;
        }
        iv
    }

    fn cm_crypt(aes: &Aes128, iv: [u8; 16], data: &mut [u8]) {
        // Cloning copies the expanded key schedule; it does not allocate.
        let mut ctr = Ctr::from_core(CtrCore::inner_iv_init(aes.clone(), &iv.into()));
        ctr.apply_keystream(data);
    }
}

/// Length of the RTP header (fixed part, CSRCs, extension) at the start of `buf`.
fn rtp_header_len(buf: &[u8]) -> Result<usize, SrtpError> {
    if buf.len() < 12 {
        return Err(SrtpError::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = 12 + 4 * usize::from(buf[0] & 0x0f);
    if buf[0] & 0x10 != 0 {
        if len + 4 > buf.len() {
            return Err(SrtpError::Truncated);
        }
        let words = usize::from(u16::from_be_bytes([buf[len + 2], buf[len + 3]]));
        len += 4 + 4 * words;
    }
    if len > buf.len() {
        return Err(SrtpError::Truncated);
    }
    Ok(len)
}

/// RFC 3711 §3.3.1 / appendix A: the 48-bit index of `seq` given the highest index so far.
fn estimate_index(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let s_l = highest as u16;
    let v = if s_l < 0x8000 {
        // Before the first rollover a "previous ROC" does not exist: the packet is simply
        // far ahead (libsrtp does the same).
        if seq > s_l && seq - s_l > 0x8000 && roc > 0 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Context {
    /// A context for one direction, with its session keys derived from `keying`.
    pub fn new(keying: &Keying) -> Result<Self, SrtpError> {
        let suite = keying.master.suite;
        if keying.lifetime == Some(0) {
            return Err(SrtpError::BadLifetime);
        }
        let life = keying.lifetime.unwrap_or(u64::MAX);
        Ok(Self {
            suite,
            mki: keying.mki,
            rtp: Session::new(&keying.master, [0, 1, 2], suite.rtp_tag_len()),
            rtcp: Session::new(&keying.master, [3, 4, 5], suite.rtcp_tag_len()),
            rtp_limit: life.min(MAX_RTP_PACKETS),
            rtcp_limit: life.min(MAX_RTCP_PACKETS),
            rtp_count: 0,
            rtcp_count: 0,
            streams: [Stream::default(); STREAMS],
            tick: 0,
        })
    }

    /// A context that uses the given session keys as they are, skipping key derivation: the
    /// RFC 7714 vectors are written that way.
    #[cfg(test)]
    fn from_sessions(suite: Suite, rtp: Session, rtcp: Session) -> Self {
        Self {
            suite,
            mki: None,
            rtp,
            rtcp,
            rtp_limit: MAX_RTP_PACKETS,
            rtcp_limit: MAX_RTCP_PACKETS,
            rtp_count: 0,
            rtcp_count: 0,
            streams: [Stream::default(); STREAMS],
            tick: 0,
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// SRTP packets this context has protected or unprotected.
    pub fn rtp_packets(&self) -> u64 {
        self.rtp_count
    }

    /// SRTCP packets this context has protected or unprotected.
    pub fn rtcp_packets(&self) -> u64 {
        self.rtcp_count
    }

    /// Bytes `protect_rtp` adds.
    pub fn rtp_trailer_len(&self) -> usize {
        self.suite.rtp_tag_len() + self.mki_len()
    }

    /// Bytes `protect_rtcp` adds.
    pub fn rtcp_trailer_len(&self) -> usize {
        self.suite.rtcp_tag_len() + 4 + self.mki_len()
    }

    fn mki_len(&self) -> usize {
        self.mki.map_or(0, |m| m.size())
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.used && s.ssrc == ssrc)
    }

    /// The stream of `ssrc`, created (forgetting the least recently used) when new.
    fn stream_mut(&mut self, ssrc: u32) -> &mut Stream {
        self.tick += 1;
        let i = match self.find(ssrc) {
            Some(i) => i,
            None => {
                let i = self
                    .streams
                    .iter()
                    .position(|s| !s.used)
                    .unwrap_or_else(|| {
                        let mut oldest = 0;
                        for (i, s) in self.streams.iter().enumerate() {
                            if s.last_use < self.streams[oldest].last_use {
                                oldest = i;
                            }
                        }
                        oldest
                    });
                self.streams[i] = Stream {
                    used: true,
                    ssrc,
                    ..Stream::default()
                };
                i
            }
        };
        let s = &mut self.streams[i];
        s.last_use = self.tick;
        s
    }

    fn check_mki(&self, found: &[u8]) -> Result<(), SrtpError> {
        match self.mki {
            Some(m) if m.as_bytes() != found => Err(SrtpError::BadMki),
            _ => Ok(()),
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place and appends the trailer; returns the
    /// SRTP packet's length. `buf` must have `rtp_trailer_len()` bytes of room after `len`.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        let hdr = rtp_header_len(&buf[..len])?;
        let out_len = len + self.rtp_trailer_len();
        if out_len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        if self.rtp_count >= self.rtp_limit {
            return Err(SrtpError::KeyExpired);
        }
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let stream = self.stream_mut(ssrc);
        let index = if stream.rtp.init {
            estimate_index(stream.rtp.highest, seq)
        } else {
            u64::from(seq)
        };
        if index >= MAX_RTP_PACKETS {
            return Err(SrtpError::KeyExpired);
        }
        if !stream.rtp.init || index > stream.rtp.highest {
            stream.rtp.accept(index);
        }
        let roc = (index >> 16) as u32;
        let mki = self.mki;
        let mki_len = self.mki_len();
        match &self.rtp.transform {
            Transform::Cm { aes, hmac, tag_len } => {
                Session::cm_crypt(aes, self.rtp.cm_iv(ssrc, index), &mut buf[hdr..len]);
                if let Some(m) = mki {
                    buf[len..len + mki_len].copy_from_slice(m.as_bytes());
                }
                let mut mac = hmac.clone();
                mac.update(&buf[..len]);
                mac.update(&roc.to_be_bytes());
                let tag = mac.finalize().into_bytes();
                buf[len + mki_len..out_len].copy_from_slice(&tag[..*tag_len]);
            }
            Transform::Gcm(gcm) => {
                let iv = self.rtp.gcm_rtp_iv(ssrc, index);
                let (aad, rest) = buf.split_at_mut(hdr);
                let tag = gcm
                    .encrypt_inout_detached(&iv.into(), aad, (&mut rest[..len - hdr]).into())
                    .map_err(|_| SrtpError::TooShort)?;
                buf[len..len + 16].copy_from_slice(&tag);
                if let Some(m) = mki {
                    buf[len + 16..out_len].copy_from_slice(m.as_bytes());
                }
            }
        }
        self.rtp_count += 1;
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTP packet `buf` in place; returns the length of the
    /// RTP packet now at its start. A packet that fails any check leaves the context as it
    /// was (a forged packet cannot move the replay window or the rollover counter).
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let trailer = self.rtp_trailer_len();
        let hdr = rtp_header_len(buf)?;
        if buf.len() < hdr + trailer {
            return Err(SrtpError::TooShort);
        }
        if self.rtp_count >= self.rtp_limit {
            return Err(SrtpError::KeyExpired);
        }
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let window = self.find(ssrc).map(|i| self.streams[i].rtp);
        let index = match window {
            Some(w) if w.init => estimate_index(w.highest, seq),
            _ => u64::from(seq),
        };
        if index >= MAX_RTP_PACKETS {
            return Err(SrtpError::KeyExpired);
        }
        if let Some(w) = window {
            w.check(index)?;
        }
        let roc = (index >> 16) as u32;
        let tag_len = self.suite.rtp_tag_len();
        let mki_len = self.mki_len();
        let plain_len = match &self.rtp.transform {
            Transform::Cm { aes, hmac, .. } => {
                let end = buf.len() - trailer;
                self.check_mki(&buf[end..end + mki_len])?;
                let mut mac = hmac.clone();
                mac.update(&buf[..end]);
                mac.update(&roc.to_be_bytes());
                mac.verify_truncated_left(&buf[end + mki_len..])
                    .map_err(|_| SrtpError::AuthFailed)?;
                Session::cm_crypt(aes, self.rtp.cm_iv(ssrc, index), &mut buf[hdr..end]);
                end
            }
            Transform::Gcm(gcm) => {
                let end = buf.len() - trailer;
                self.check_mki(&buf[end + tag_len..])?;
                let iv = self.rtp.gcm_rtp_iv(ssrc, index);
                let (aad, rest) = buf.split_at_mut(hdr);
                let (ct, tail) = rest.split_at_mut(end - hdr);
                let tag: [u8; 16] = tail[..16].try_into().expect("16-byte tag");
                gcm.decrypt_inout_detached(&iv.into(), aad, ct.into(), &tag.into())
                    .map_err(|_| SrtpError::AuthFailed)?;
                end
            }
        };
        self.stream_mut(ssrc).rtp.accept(index);
        self.rtp_count += 1;
        Ok(plain_len)
    }

    /// Protects (encrypts) the RTCP compound packet in `buf[..len]` in place and appends the
    /// SRTCP trailer; returns the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        if len < 8 {
            return Err(SrtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let out_len = len + self.rtcp_trailer_len();
        if out_len > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        if self.rtcp_count >= self.rtcp_limit {
            return Err(SrtpError::KeyExpired);
        }
        let ssrc = be32(&buf[4..8]);
        let stream = self.stream_mut(ssrc);
        let index = stream.rtcp_sent + 1;
        if u64::from(index) >= MAX_RTCP_PACKETS {
            return Err(SrtpError::KeyExpired);
        }
        stream.rtcp_sent = index;
        let e_index = (E_FLAG | index).to_be_bytes();
        let mki = self.mki;
        let mki_len = self.mki_len();
        match &self.rtcp.transform {
            Transform::Cm { aes, hmac, tag_len } => {
                Session::cm_crypt(
                    aes,
                    self.rtcp.cm_iv(ssrc, u64::from(index)),
                    &mut buf[8..len],
                );
                buf[len..len + 4].copy_from_slice(&e_index);
                if let Some(m) = mki {
                    buf[len + 4..len + 4 + mki_len].copy_from_slice(m.as_bytes());
                }
                let mut mac = hmac.clone();
                mac.update(&buf[..len + 4]);
                let tag = mac.finalize().into_bytes();
                buf[len + 4 + mki_len..out_len].copy_from_slice(&tag[..*tag_len]);
            }
            Transform::Gcm(gcm) => {
                let iv = self.rtcp.gcm_rtcp_iv(ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = gcm
                    .encrypt_inout_detached(&iv.into(), &aad, (&mut buf[8..len]).into())
                    .map_err(|_| SrtpError::TooShort)?;
                buf[len..len + 16].copy_from_slice(&tag);
                buf[len + 16..len + 20].copy_from_slice(&e_index);
                if let Some(m) = mki {
                    buf[len + 20..out_len].copy_from_slice(m.as_bytes());
                }
            }
        }
        self.rtcp_count += 1;
        Ok(out_len)
    }

    /// Authenticates and, when its E flag is set, decrypts the SRTCP packet `buf` in place;
    /// returns the length of the RTCP packet now at its start.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let trailer = self.rtcp_trailer_len();
        if buf.len() < 8 + trailer {
            return Err(SrtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        if self.rtcp_count >= self.rtcp_limit {
            return Err(SrtpError::KeyExpired);
        }
        let ssrc = be32(&buf[4..8]);
        let tag_len = self.suite.rtcp_tag_len();
        let mki_len = self.mki_len();
        // Where the E flag and index sit: after the tag for GCM, before MKI and tag for CM.
        let at = if self.suite.is_aead() {
            buf.len() - mki_len - 4
        } else {
            buf.len() - trailer
        };
        let e_index = be32(&buf[at..at + 4]);
        let encrypted = e_index & E_FLAG != 0;
        let index = e_index & !E_FLAG;
        let window = self.find(ssrc).map(|i| self.streams[i].rtcp);
        if let Some(w) = window {
            w.check(u64::from(index))?;
        }
        let plain_len = match &self.rtcp.transform {
            Transform::Cm { aes, hmac, .. } => {
                self.check_mki(&buf[at + 4..at + 4 + mki_len])?;
                let mut mac = hmac.clone();
                mac.update(&buf[..at + 4]);
                mac.verify_truncated_left(&buf[at + 4 + mki_len..])
                    .map_err(|_| SrtpError::AuthFailed)?;
                if encrypted {
                    Session::cm_crypt(
                        aes,
                        self.rtcp.cm_iv(ssrc, u64::from(index)),
                        &mut buf[8..at],
                    );
                }
                at
            }
            Transform::Gcm(gcm) => {
                self.check_mki(&buf[at + 4..])?;
                let end = at - tag_len;
                let iv = self.rtcp.gcm_rtcp_iv(ssrc, index);
                let tag: [u8; 16] = buf[end..at].try_into().expect("16-byte tag");
                let ok = if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&e_index.to_be_bytes());
                    gcm.decrypt_inout_detached(
                        &iv.into(),
                        &aad,
                        (&mut buf[8..end]).into(),
                        &tag.into(),
                    )
                } else {
                    // Unencrypted SRTCP (RFC 7714 §9.3): all of it is associated data.
                    gcm_unencrypted(gcm, &iv, &buf[..end], e_index, &tag)
                };
                ok.map_err(|_| SrtpError::AuthFailed)?;
                end
            }
        };
        self.stream_mut(ssrc).rtcp.accept(u64::from(index));
        self.rtcp_count += 1;
        Ok(plain_len)
    }
}

/// GCM over an unencrypted SRTCP packet: AAD = packet || E/index, empty plaintext. The AAD is
/// assembled on the stack; an RTCP compound packet fits in one MTU.
fn gcm_unencrypted(
    gcm: &Aes128Gcm,
    iv: &[u8; 12],
    packet: &[u8],
    e_index: u32,
    tag: &[u8; 16],
) -> Result<(), aes_gcm::Error> {
    let mut aad = [0u8; 1504];
    if packet.len() + 4 > aad.len() {
        return Err(aes_gcm::Error);
    }
    aad[..packet.len()].copy_from_slice(packet);
    aad[packet.len()..packet.len() + 4].copy_from_slice(&e_index.to_be_bytes());
    gcm.decrypt_inout_detached(
        &(*iv).into(),
        &aad[..packet.len() + 4],
        (&mut [][..]).into(),
        &(*tag).into(),
    )
}

#[cfg(test)]
mod tests;
