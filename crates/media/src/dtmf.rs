//! DTMF digit detection, for in-call feature codes such as `*2` (start recording on demand).
//!
//! A desk phone signals a key press in one of three ways, depending on what the call
//! negotiated, and each has its own detector here:
//!
//! - RFC 4733 telephone-event RTP packets: [`Rfc4733Detector`], a state machine fed with the
//!   packets of the negotiated telephone-event payload type;
//! - SIP INFO requests with an `application/dtmf-relay` or `application/dtmf` body:
//!   [`parse_info_body`];
//! - in-band tones inside G.711 audio when no telephone-event was negotiated:
//!   [`InbandDetector`], a Goertzel detector fed with decoded 8 kHz PCM.
//!
//! All three report the same [`DtmfEvent`], exactly once per key press, so the policy layer
//! does not care how a digit arrived. They are sans-IO: time enters as a parameter (an
//! `Instant` for RTP, the sample count for audio) and detected digits are drained with
//! `poll_event()`. None of them allocates after construction.

mod inband;
mod info;
mod rfc4733;

#[cfg(test)]
mod testsig;

pub use inband::{InbandConfig, InbandDetector, InbandStats, INBAND_BLOCK_LEN};
pub use info::parse_info_body;
pub use rfc4733::{Rfc4733Config, Rfc4733Detector, Rfc4733Stats};

use thiserror::Error;

/// How a digit reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets in the RTP stream.
    Rfc4733,
    /// A SIP INFO request body.
    SipInfo,
    /// Tones detected in the decoded audio.
    InBand,
}

/// Where a digit starts, in the timeline of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfStart {
    /// RTP timestamp of the event (the timestamp all packets of one RFC 4733 event share).
    RtpTimestamp(u32),
    /// Index of the first sample of the tone, counted from the first sample given to the
    /// in-band detector (8 kHz).
    Sample(u64),
    /// A SIP INFO carries no media time: the digit happened when the request arrived, which
    /// only the caller knows.
    AtReceipt,
}

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfEvent {
    /// `'0'..='9'`, `'*'`, `'#'` or `'A'..='D'`.
    pub digit: char,
    pub source: DtmfSource,
    pub start: DtmfStart,
    /// How long the key was held, when the source says so (a SIP INFO may omit it).
    pub duration_ms: Option<u32>,
}

/// Why a DTMF input was not understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DtmfError {
    #[error("telephone-event payload is {0} bytes, shorter than the 4-byte event block")]
    PayloadTooShort(usize),
    #[error("content type {0:?} does not carry DTMF")]
    UnsupportedContentType(String),
    #[error("DTMF body is not ASCII text")]
    BodyNotText,
    #[error("DTMF body of {0} bytes is too large to be a digit")]
    BodyTooLarge(usize),
    #[error("dtmf-relay body has no Signal line")]
    MissingSignal,
    #[error("{0:?} is not a DTMF digit")]
    InvalidSignal(String),
}

/// Digit for an RFC 4733 event code (0-9, 10 = `*`, 11 = `#`, 12-15 = `A`-`D`); `None` for
/// codes that are not keypad digits (flash, tones, ...).
pub fn event_code_to_digit(code: u8) -> Option<char> {
    const DIGITS: &[u8; 16] = b"0123456789*#ABCD";
    DIGITS.get(code as usize).map(|&b| b as char)
}

/// RFC 4733 event code for a keypad digit (`a`-`d` accepted in lower case).
pub fn digit_to_event_code(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

const QUEUE_CAP: usize = 16;

/// Fixed-capacity FIFO of detected digits, so detectors never allocate while running. A
/// caller that never drains loses the oldest digits, counted in `dropped`.
#[derive(Debug, Clone)]
struct EventQueue {
    slots: [Option<DtmfEvent>; QUEUE_CAP],
    head: usize,
    len: usize,
    dropped: u64,
}

impl EventQueue {
    fn new() -> Self {
        Self {
            slots: [None; QUEUE_CAP],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, ev: DtmfEvent) {
        if self.len == QUEUE_CAP {
            self.head = (self.head + 1) % QUEUE_CAP;
            self.len -= 1;
            self.dropped += 1;
        }
        self.slots[(self.head + self.len) % QUEUE_CAP] = Some(ev);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<DtmfEvent> {
        if self.len == 0 {
            return None;
        }
        let ev = self.slots[self.head].take();
        self.head = (self.head + 1) % QUEUE_CAP;
        self.len -= 1;
        ev
    }

    fn clear(&mut self) {
        *self = Self {
            dropped: self.dropped,
            ..Self::new()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip() {
        for code in 0..16u8 {
            let d = event_code_to_digit(code).unwrap();
            assert_eq!(digit_to_event_code(d), Some(code));
        }
        assert_eq!(event_code_to_digit(10), Some('*'));
        assert_eq!(event_code_to_digit(11), Some('#'));
        assert_eq!(event_code_to_digit(16), None);
        assert_eq!(digit_to_event_code('b'), Some(13));
        assert_eq!(digit_to_event_code('E'), None);
    }

    #[test]
    fn queue_keeps_order_and_drops_oldest_when_full() {
        let mut q = EventQueue::new();
        let ev = |n: u32| DtmfEvent {
            digit: '1',
            source: DtmfSource::InBand,
            start: DtmfStart::Sample(n as u64),
            duration_ms: Some(n),
        };
        for n in 0..(QUEUE_CAP as u32 + 3) {
            q.push(ev(n));
        }
        assert_eq!(q.dropped, 3);
        for n in 3..(QUEUE_CAP as u32 + 3) {
            assert_eq!(q.pop(), Some(ev(n)));
        }
        assert_eq!(q.pop(), None);
    }
}
