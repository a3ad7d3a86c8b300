//! Feature-code recognition on the agent's DTMF digits.
//!
//! Digits arrive one by one, already detected, with a timestamp. The matcher keeps the digits
//! that could still become a feature code ("held"), fires when they spell one exactly, and
//! gives up on them when the next digit cannot continue any code or comes after the
//! inter-digit timeout. Codes are prefix-free (checked by [`crate::Rules::validate`]), so a
//! complete code never needs to wait for more digits.
//!
//! When feature codes are not forwarded, held digits are not passed to the customer; if the
//! sequence then fails, they are released so the caller forwards them late rather than losing
//! a digit the agent meant for the far end. Without a clock, a timeout is only noticed at the
//! next digit or at an explicit [`crate::Event::Tick`]; [`Matcher::deadline`] says when to send one.

use crate::rules::FeatureCodes;

/// Longest feature code accepted.
pub const MAX_CODE_LEN: usize = 8;
const CAP: usize = MAX_CODE_LEN + 1;

/// A short inline list of digits (no heap), used for codes, held digits and digits to forward.
#[derive(Clone, Copy)]
pub struct Digits {
    buf: [char; CAP],
    len: usize,
}

impl Default for Digits {
    fn default() -> Self {
        Self {
            buf: ['\0'; CAP],
            len: 0,
        }
    }
}

// Slots past `len` hold stale digits, so equality must look at the live part only.
impl PartialEq for Digits {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Digits {}

impl std::fmt::Debug for Digits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digits({:?})", self.as_slice())
    }
}

impl Digits {
    /// The digits, oldest first.
    pub fn as_slice(&self) -> &[char] {
        &self.buf[..self.len]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a digit; returns false (and drops it) when full, which the callers' invariants
    /// rule out but which must not panic.
    pub(crate) fn push(&mut self, c: char) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = c;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    pub(crate) fn extend(&mut self, other: &Digits) {
        for &c in other.as_slice() {
            self.push(c);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    fn remove_first(&mut self) -> Option<char> {
        let first = *self.as_slice().first()?;
        self.buf.copy_within(1..self.len, 0);
        self.len -= 1;
        Some(first)
    }

    fn from_code(code: &str) -> Option<Digits> {
        let mut d = Digits::default();
        for c in code.chars() {
            if !d.push(normalize_digit(c)?) || d.len > MAX_CODE_LEN {
                return None;
            }
        }
        (!d.is_empty()).then_some(d)
    }

    fn starts_with(&self, prefix: &Digits) -> bool {
        self.as_slice().starts_with(prefix.as_slice())
    }

    pub(crate) fn to_string_lossy(self) -> String {
        self.as_slice().iter().collect()
    }
}

/// Maps a DTMF symbol to its canonical form (`0-9`, `*`, `#`, `A-D`), or `None` for anything
/// that is not one.
pub fn normalize_digit(c: char) -> Option<char> {
    match c {
        '0'..='9' | '*' | '#' | 'A'..='D' => Some(c),
        'a'..='d' => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

/// The four feature-code functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureCode {
    Start,
    Stop,
    Pause,
    Resume,
}

/// What one digit (or a tick) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// A code completed with this digit, and its digits.
    pub fired: Option<(FeatureCode, Digits)>,
    /// Digits to pass to the other leg now, in order.
    pub forward: Digits,
    /// Held digits were abandoned (timeout or no code can continue them).
    pub abandoned: bool,
}

/// Per-call feature-code state machine.
#[derive(Clone, Debug)]
pub struct Matcher {
    codes: Vec<(FeatureCode, Digits)>,
    held: Digits,
    last_at_ms: u64,
    forward_codes: bool,
    timeout_ms: u64,
}

impl Matcher {
    /// Builds the matcher; codes that are empty or invalid (possible only when the rules were
    /// not validated) are left out rather than matched wrongly.
    pub fn new(fc: &FeatureCodes) -> Self {
        let functions = [
            FeatureCode::Start,
            FeatureCode::Stop,
            FeatureCode::Pause,
            FeatureCode::Resume,
        ];
        let codes = functions
            .iter()
            .zip(fc.named())
            .filter_map(|(&f, (_, code))| Digits::from_code(code).map(|d| (f, d)))
            .collect();
        Self {
            codes,
            held: Digits::default(),
            last_at_ms: 0,
            forward_codes: fc.forward,
            timeout_ms: fc.inter_digit_timeout_ms.max(1),
        }
    }

    /// When held digits expire, if any are held.
    pub fn deadline(&self) -> Option<u64> {
        (!self.held.is_empty()).then(|| self.last_at_ms.saturating_add(self.timeout_ms))
    }

    /// Whether digits are currently held back.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Abandons held digits if the timeout has passed at `at_ms`.
    pub fn tick(&mut self, at_ms: u64) -> Fed {
        let mut out = Fed::default();
        self.expire(at_ms, &mut out);
        out
    }

    fn expire(&mut self, at_ms: u64, out: &mut Fed) {
        if !self.held.is_empty() && at_ms.saturating_sub(self.last_at_ms) >= self.timeout_ms {
            self.release_held(out);
        }
    }

    fn release_held(&mut self, out: &mut Fed) {
        if !self.forward_codes {
            out.forward.extend(&self.held);
        }
        self.held.clear();
        out.abandoned = true;
    }

    /// Feeds one agent digit detected at `at_ms`.
    pub fn feed(&mut self, digit: char, at_ms: u64) -> Fed {
        let mut out = Fed::default();
        let Some(d) = normalize_digit(digit) else {
            // Not a DTMF symbol: it cannot be part of a code, and it ends any sequence.
            if !self.held.is_empty() {
                self.release_held(&mut out);
            }
            out.forward.push(digit);
            return out;
        };
        self.expire(at_ms, &mut out);
        self.last_at_ms = at_ms;
        self.held.push(d);
        let mut dropped = Digits::default();
        while !self.held.is_empty() {
            if let Some(&(f, code)) = self.codes.iter().find(|(_, c)| *c == self.held) {
                out.fired = Some((f, code));
                self.held.clear();
                break;
            }
            if self.codes.iter().any(|(_, c)| c.starts_with(&self.held)) {
                break;
            }
            // No code continues these digits: give up the oldest and retry the rest, so that
            // `**2` still finds `*2`.
            if let Some(first) = self.held.remove_first() {
                dropped.push(first);
            }
            out.abandoned = true;
        }
        if self.forward_codes {
            out.forward.push(d);
        } else {
            out.forward.extend(&dropped);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(forward: bool) -> FeatureCodes {
        FeatureCodes {
            start: "*2".into(),
            stop: "*3".into(),
            pause: "*4".into(),
            resume: "#45".into(),
            forward,
            inter_digit_timeout_ms: 1000,
        }
    }

    fn s(d: &Digits) -> String {
        d.to_string_lossy()
    }

    #[test]
    fn star_two_fires_and_is_swallowed() {
        let mut m = Matcher::new(&codes(false));
        let a = m.feed('*', 0);
        assert_eq!(a.fired, None);
        assert!(a.forward.is_empty());
        assert_eq!(m.deadline(), Some(1000));
        let b = m.feed('2', 300);
        assert_eq!(b.fired.map(|f| f.0), Some(FeatureCode::Start));
        assert!(b.forward.is_empty());
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn non_matching_digit_releases_held() {
        let mut m = Matcher::new(&codes(false));
        m.feed('*', 0);
        let b = m.feed('9', 100);
        assert_eq!(b.fired, None);
        assert_eq!(s(&b.forward), "*9");
        assert!(b.abandoned);
        assert!(!m.holding());
    }

    #[test]
    fn double_star_still_finds_code() {
        let mut m = Matcher::new(&codes(false));
        m.feed('*', 0);
        let b = m.feed('*', 100);
        assert_eq!(s(&b.forward), "*");
        let c = m.feed('2', 200);
        assert_eq!(c.fired.map(|f| f.0), Some(FeatureCode::Start));
        assert!(c.forward.is_empty());
    }

    #[test]
    fn timeout_between_digits() {
        let mut m = Matcher::new(&codes(false));
        m.feed('*', 0);
        let b = m.feed('2', 1000);
        assert_eq!(
            b.fired, None,
            "gap equal to the timeout abandons the sequence"
        );
        assert_eq!(s(&b.forward), "*2");
        let mut m = Matcher::new(&codes(false));
        m.feed('*', 0);
        assert_eq!(
            m.feed('2', 999).fired.map(|f| f.0),
            Some(FeatureCode::Start)
        );
    }

    #[test]
    fn tick_expires_held() {
        let mut m = Matcher::new(&codes(false));
        m.feed('#', 10);
        m.feed('4', 20);
        assert!(m.tick(1019).forward.is_empty());
        let t = m.tick(1020);
        assert_eq!(s(&t.forward), "#4");
        assert!(t.abandoned);
        assert!(!m.holding());
    }

    #[test]
    fn three_digit_code() {
        let mut m = Matcher::new(&codes(false));
        assert!(m.feed('#', 0).forward.is_empty());
        assert!(m.feed('4', 10).forward.is_empty());
        let f = m.feed('5', 20);
        assert_eq!(f.fired.map(|f| f.0), Some(FeatureCode::Resume));
        let mut m = Matcher::new(&codes(false));
        m.feed('#', 0);
        m.feed('4', 10);
        let f = m.feed('*', 20);
        assert_eq!(
            s(&f.forward),
            "#4",
            "the new * may start a code, so it is held"
        );
        assert!(m.holding());
        assert_eq!(m.feed('3', 30).fired.map(|f| f.0), Some(FeatureCode::Stop));
    }

    #[test]
    fn forwarding_mode_forwards_everything() {
        let mut m = Matcher::new(&codes(true));
        assert_eq!(s(&m.feed('*', 0).forward), "*");
        let f = m.feed('2', 10);
        assert_eq!(s(&f.forward), "2");
        assert_eq!(f.fired.map(|f| f.0), Some(FeatureCode::Start));
    }

    #[test]
    fn plain_digits_pass_through_and_lowercase_normalizes() {
        let mut m = Matcher::new(&codes(false));
        for (i, d) in "0123456789#a".chars().enumerate() {
            let f = m.feed(d, i as u64 * 10);
            assert_eq!(f.fired, None);
            if d != '#' {
                assert_eq!(f.forward.as_slice().len(), 1 + usize::from(i == 11));
            }
        }
        let f = m.feed('x', 500);
        assert_eq!(s(&f.forward), "x");
    }

    #[test]
    fn unvalidated_codes_never_panic() {
        let fc = FeatureCodes {
            start: "*2*2*2*2*2*2".into(),
            stop: "*z".into(),
            pause: "".into(),
            resume: "*".into(),
            forward: false,
            inter_digit_timeout_ms: 0,
        };
        let mut m = Matcher::new(&fc);
        for (i, d) in "*2*2*2*2*2*2**".chars().enumerate() {
            let _ = m.feed(d, i as u64);
        }
        let _ = m.tick(u64::MAX);
        let _ = m.feed('1', 0);
    }
}
