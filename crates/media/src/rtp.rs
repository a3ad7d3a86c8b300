//! Zero-copy views of RTP and RTCP packets (RFC 3550).
//!
//! The relay forwards packets untouched and only needs a handful of header fields (SSRC,
//! sequence number, timestamp, payload type, marker) plus the payload slice for the recorder.
//! The webrtc-rs `rtp` crate parses into an owned `Packet` whose payload is a `Bytes` copy and
//! whose CSRC list and extensions are `Vec`s; on the per-packet path that is an allocation we
//! must not pay. This borrowed view validates the header and exposes the fields in place.
//!
//! The one field the relay rewrites is the sequence number, when it removes packets from a
//! stream (feature-code digits): see [`renumber`].

use thiserror::Error;

pub mod renumber;

pub use renumber::{Removed, Renumber};

/// Why a datagram is not a usable RTP/RTCP packet.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    #[error("packet shorter than the 12-byte RTP header")]
    TooShort,
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    #[error("CSRC list or header extension runs past the end of the packet")]
    Truncated,
    #[error("padding length is larger than the payload")]
    BadPadding,
}

/// A validated RTP packet borrowed from a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    buf: &'a [u8],
    payload_start: usize,
    payload_end: usize,
}

impl<'a> RtpView<'a> {
    /// Validates `buf` as an RTP packet and locates its payload.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < 12 {
            return Err(RtpError::TooShort);
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let csrc_count = (buf[0] & 0x0f) as usize;
        let mut start = 12 + 4 * csrc_count;
        if start > buf.len() {
            return Err(RtpError::Truncated);
        }
        if buf[0] & 0x10 != 0 {
            if start + 4 > buf.len() {
                return Err(RtpError::Truncated);
            }
            let words = u16::from_be_bytes([buf[start + 2], buf[start + 3]]) as usize;
            start += 4 + 4 * words;
            if start > buf.len() {
                return Err(RtpError::Truncated);
            }
        }
        let mut end = buf.len();
        if buf[0] & 0x20 != 0 {
            let pad = buf[buf.len() - 1] as usize;
            if pad == 0 || start + pad > end {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(Self {
            buf,
            payload_start: start,
            payload_end: end,
        })
    }

    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_start..self.payload_end]
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Tells RTCP from RTP when both share a port (RFC 5761 §4): RTCP packet types 192..=223
/// occupy the second byte where RTP would carry marker + payload type 64..=95.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Writes a minimal RTP header (no CSRC, no extension) into `out`; returns the header length.
/// Used by tests and by tapir when it originates media (announcements).
pub fn write_header(
    out: &mut [u8],
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) -> usize {
    out[0] = 0x80;
    out[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&sequence.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_header() {
        let mut buf = [0u8; 172];
        let n = write_header(&mut buf, true, 8, 65535, 0xdead_beef, 42);
        assert_eq!(n, 12);
        let v = RtpView::parse(&buf).unwrap();
        assert!(v.marker());
        assert_eq!(v.payload_type(), 8);
        assert_eq!(v.sequence(), 65535);
        assert_eq!(v.timestamp(), 0xdead_beef);
        assert_eq!(v.ssrc(), 42);
        assert_eq!(v.payload().len(), 160);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(RtpView::parse(&[0x80; 11]).unwrap_err(), RtpError::TooShort);
        assert_eq!(
            RtpView::parse(&[0x40; 12]).unwrap_err(),
            RtpError::BadVersion(1)
        );
        // 15 CSRCs announced, none present.
        let mut b = [0u8; 20];
        b[0] = 0x8f;
        assert_eq!(RtpView::parse(&b).unwrap_err(), RtpError::Truncated);
        // Padding byte claims more than the payload.
        let mut b = [0u8; 14];
        b[0] = 0xa0;
        b[13] = 200;
        assert_eq!(RtpView::parse(&b).unwrap_err(), RtpError::BadPadding);
    }

    #[test]
    fn rtcp_is_told_apart() {
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1];
        assert!(is_rtcp(&sr));
        let mut rtp = [0u8; 12];
        write_header(&mut rtp, false, 0, 1, 1, 1);
        assert!(!is_rtcp(&rtp));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(v) = RtpView::parse(&data) {
                let _ = (v.payload(), v.ssrc(), v.sequence(), v.timestamp());
            }
        }
    }
}
