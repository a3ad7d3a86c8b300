//! Keeping the agent's feature codes (`*2`...) from the customer.
//!
//! The policy decides what a code means on the recorder side, after the digits have already
//! been relayed. To keep codes from the customer without holding media, the path that relays
//! digits (RTP telephone-events in the relay, SIP INFO here) swallows them by shape: from a
//! digit that can start a code until as many digits as the longest code have passed or the
//! inter-digit time ran out. A sequence that turns out not to be a code is lost, not delayed.

use std::time::{Duration, Instant};

/// Which digits start a feature code, and how long codes are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureCodeFilter {
    /// Bit n set: RFC 4733 event code n (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D) starts a code.
    pub starts: u16,
    pub max_len: u8,
    pub window: Duration,
}

impl FeatureCodeFilter {
    /// Builds a filter from the codes in force; `None` when there is nothing to swallow.
    pub fn from_codes<'a>(
        codes: impl IntoIterator<Item = &'a str>,
        window: Duration,
    ) -> Option<Self> {
        let mut f = Self {
            window,
            ..Default::default()
        };
        for c in codes.into_iter().filter(|c| !c.is_empty()) {
            if let Some(code) = c.chars().next().and_then(event_code) {
                f.starts |= 1 << code;
            }
            f.max_len = f.max_len.max(c.chars().count().min(255) as u8);
        }
        (f.starts != 0).then_some(f)
    }
}

/// RFC 4733 event code of a DTMF digit.
pub fn event_code(d: char) -> Option<u8> {
    Some(match d {
        '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => d as u8 - b'A' + 12,
        'a'..='d' => d as u8 - b'a' + 12,
        _ => return None,
    })
}

/// Per-call state of a [`FeatureCodeFilter`]: whether each new key press is swallowed.
#[derive(Debug, Clone, Default)]
pub struct Swallower {
    /// Until when, and for how many more digits, presses are swallowed.
    window: Option<(Instant, u8)>,
}

impl Swallower {
    /// Decides for one new key press (event code) at `now`.
    pub fn press(&mut self, f: &FeatureCodeFilter, code: u8, now: Instant) -> bool {
        if let Some((until, left)) = self.window.as_mut() {
            if now < *until && *left > 0 {
                *left -= 1;
                *until = now + f.window;
                return true;
            }
        }
        if code < 16 && f.starts & (1 << code) != 0 {
            self.window = Some((now + f.window, f.max_len.saturating_sub(1)));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swallows_codes_not_other_digits() {
        let f = FeatureCodeFilter::from_codes(["*2", "*3", ""], Duration::from_secs(2)).unwrap();
        assert_eq!(f.max_len, 2);
        let t0 = Instant::now();
        let mut s = Swallower::default();
        assert!(!s.press(&f, 5, t0), "a plain digit passes");
        assert!(s.press(&f, 10, t0), "* starts a code");
        assert!(
            s.press(&f, 2, t0 + Duration::from_millis(300)),
            "2 completes it"
        );
        assert!(
            !s.press(&f, 2, t0 + Duration::from_millis(600)),
            "the window is used up"
        );
        assert!(s.press(&f, 10, t0 + Duration::from_secs(5)));
        assert!(
            !s.press(&f, 7, t0 + Duration::from_secs(8)),
            "too late: not part of a code"
        );
        assert!(FeatureCodeFilter::from_codes(["", ""], Duration::ZERO).is_none());
    }
}
