//! Login sessions: their tokens, their expiry, their CSRF token and their cookie.
//!
//! A session token is 256 random bits (the system's generator), sent to the browser in a
//! cookie and stored only as its SHA-256, so the catalog alone opens no session. A session
//! ends when idle for [`SessionPolicy::idle_ms`] or [`SessionPolicy::absolute_ms`] after the
//! login, whichever comes first; activity is written back at most every
//! [`SessionPolicy::touch_every_ms`], not on every request.
//!
//! Each session has its own CSRF token (the synchronizer token pattern): pages carry it in
//! their forms and scripts send it in the `X-CSRF-Token` header or a `csrf` form field; every
//! state-changing request (anything but GET, HEAD, OPTIONS) must carry it, compared in
//! constant time. The `SameSite=Strict` cookie already keeps other sites' requests
//! cookieless; the token covers browsers and cases where it does not.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use store::SessionRecord;
use subtle::ConstantTimeEq;

use crate::AccessError;

/// The cookie's name over plain HTTP.
pub const COOKIE_NAME: &str = "tapir_session";
/// The cookie's name over HTTPS: the `__Host-` prefix makes browsers refuse it unless it is
/// `Secure`, has `Path=/` and no `Domain`, so a sibling host cannot plant one.
pub const SECURE_COOKIE_NAME: &str = "__Host-tapir_session";
/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field forms send the CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// 32 random bytes, URL-safe base64 without padding (43 characters).
pub fn random_token() -> Result<String, AccessError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| AccessError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The SHA-256 (hex) a token is stored and looked up as. A plain hash suffices: the token is
/// 256 random bits, so there is nothing to guess that a slow hash would protect.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// True when `token` has the shape of one made by [`random_token`]: a cheap check before
/// any look-up.
pub fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle_ms: i64,
    /// A session ends this long after the login, used or not.
    pub absolute_ms: i64,
    /// Activity is recorded when the last record is at least this old.
    pub touch_every_ms: i64,
}

impl Default for SessionPolicy {
    /// 30 minutes idle, 12 hours at most (a working day), activity recorded each minute.
    fn default() -> Self {
        SessionPolicy {
            idle_ms: 30 * 60_000,
            absolute_ms: 12 * 3_600_000,
            touch_every_ms: 60_000,
        }
    }
}

/// A session's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// In use; `touch` when its activity should be written back now.
    Valid { touch: bool },
    /// Ended by inactivity.
    Idle,
    /// Ended by its absolute limit.
    Expired,
}

/// A new session: the token for the cookie (shown to nobody else, never stored) and the
/// record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub record: SessionRecord,
}

impl SessionPolicy {
    /// Starts a session for `user_id` at `now_ms`.
    pub fn start(
        &self,
        user_id: i64,
        now_ms: i64,
        from: Option<String>,
    ) -> Result<NewSession, AccessError> {
        let token = random_token()?;
        let record = SessionRecord {
            token_hash: token_hash(&token),
            user_id,
            csrf: random_token()?,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.absolute_ms),
            from_addr: from,
        };
        Ok(NewSession { token, record })
    }

    /// The state of `s` at `now_ms`.
    pub fn check(&self, s: &SessionRecord, now_ms: i64) -> SessionCheck {
        if now_ms >= s.expires_ms || now_ms >= s.created_ms.saturating_add(self.absolute_ms) {
            return SessionCheck::Expired;
        }
        if now_ms >= s.last_seen_ms.saturating_add(self.idle_ms) {
            return SessionCheck::Idle;
        }
        SessionCheck::Valid {
            touch: now_ms >= s.last_seen_ms.saturating_add(self.touch_every_ms),
        }
    }

    /// Sessions idle since this moment or earlier are over (for the purge).
    pub fn idle_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.idle_ms)
    }
}

/// True for methods that change state and so need the CSRF token; unknown methods do too.
pub fn needs_csrf(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// True when the request's CSRF token is the session's; constant time in the token's
/// content. A missing or empty token never matches.
pub fn csrf_matches(session: &SessionRecord, given: Option<&str>) -> bool {
    match given {
        Some(g) if !g.is_empty() => bool::from(g.as_bytes().ct_eq(session.csrf.as_bytes())),
        _ => false,
    }
}

/// The session cookie's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSpec {
    /// Served over HTTPS: `Secure` and the `__Host-` name.
    pub secure: bool,
    /// `Max-Age` in seconds; without it the cookie ends with the browser.
    pub max_age_s: Option<i64>,
}

impl CookieSpec {
    pub fn name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE_NAME
        } else {
            COOKIE_NAME
        }
    }

    /// The `Set-Cookie` value that sets `token`: `HttpOnly` (scripts cannot read it),
    /// `SameSite=Strict` (other sites' requests do not carry it), `Path=/`, `Secure` under
    /// HTTPS.
    pub fn set(&self, token: &str) -> String {
        let mut c = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", self.name());
        if let Some(age) = self.max_age_s {
            c.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    /// The `Set-Cookie` value that removes the cookie (logout).
    pub fn clear(&self) -> String {
        let mut c = format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.name()
        );
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn tokens_are_random_well_formed_and_stored_hashed() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        let h = token_hash(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a));
        assert_eq!(h, token_hash(&a));
        for bad in ["", "short", &format!("{a}x"), &a.replace(&a[..1], "+")] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn a_session_ends_when_idle_or_at_its_absolute_limit() {
        let p = SessionPolicy {
            idle_ms: 1000,
            absolute_ms: 5000,
            touch_every_ms: 100,
        };
        let s = p.start(7, T0, Some("127.0.0.1".into())).unwrap();
        let mut r = s.record.clone();
        assert_eq!(r.token_hash, token_hash(&s.token));
        assert_ne!(r.csrf, s.token);
        assert_eq!(r.expires_ms, T0 + 5000);
        assert_eq!(p.check(&r, T0), SessionCheck::Valid { touch: false });
        assert_eq!(p.check(&r, T0 + 99), SessionCheck::Valid { touch: false });
        assert_eq!(p.check(&r, T0 + 100), SessionCheck::Valid { touch: true });
        assert_eq!(p.check(&r, T0 + 999), SessionCheck::Valid { touch: true });
        assert_eq!(p.check(&r, T0 + 1000), SessionCheck::Idle);
        // Kept busy, it still ends at the absolute limit.
        let mut now = T0;
        while now < T0 + 4900 {
            now += 900;
            if p.check(&r, now) == (SessionCheck::Valid { touch: true }) {
                r.last_seen_ms = now;
            }
        }
        assert_eq!(p.check(&r, T0 + 4999), SessionCheck::Valid { touch: true });
        assert_eq!(p.check(&r, T0 + 5000), SessionCheck::Expired);
        // A stored end earlier than the policy's (the policy was shortened) wins, and so
        // does the policy when the stored end is later.
        let mut early = s.record.clone();
        early.expires_ms = T0 + 10;
        assert_eq!(p.check(&early, T0 + 10), SessionCheck::Expired);
        let mut late = s.record.clone();
        late.expires_ms = i64::MAX;
        late.last_seen_ms = T0 + 5500;
        assert_eq!(p.check(&late, T0 + 6000), SessionCheck::Expired);
        assert_eq!(p.idle_cutoff(T0), T0 - 1000);
    }

    #[test]
    fn the_csrf_token_must_be_the_sessions() {
        let s = SessionPolicy::default().start(1, T0, None).unwrap().record;
        assert!(csrf_matches(&s, Some(&s.csrf.clone())));
        assert!(!csrf_matches(&s, None));
        assert!(!csrf_matches(&s, Some("")));
        assert!(!csrf_matches(&s, Some(&s.csrf[..42])));
        assert!(!csrf_matches(&s, Some(&format!("{}x", s.csrf))));
        let other = SessionPolicy::default().start(1, T0, None).unwrap().record;
        assert!(!csrf_matches(&s, Some(&other.csrf)), "another session's");
        for m in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"] {
            assert!(needs_csrf(m), "{m}");
        }
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert!(!needs_csrf(m), "{m}");
        }
    }

    #[test]
    fn cookies_are_httponly_strict_and_secure_under_https() {
        let plain = CookieSpec {
            secure: false,
            max_age_s: Some(43200),
        };
        assert_eq!(
            plain.set("tok"),
            "tapir_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let tls = CookieSpec {
            secure: true,
            max_age_s: None,
        };
        assert_eq!(
            tls.set("tok"),
            "__Host-tapir_session=tok; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(tls.clear().contains("Max-Age=0"));
        assert!(tls.clear().ends_with("; Secure"));
        assert!(plain.clear().starts_with("tapir_session=;"));
    }

    #[test]
    fn the_cookie_header_is_read_by_name() {
        let h = "a=1; tapir_session=abc; __Host-tapir_session=\"def\"";
        assert_eq!(cookie_value(h, COOKIE_NAME), Some("abc"));
        assert_eq!(cookie_value(h, SECURE_COOKIE_NAME), Some("def"));
        assert_eq!(cookie_value(h, "b"), None);
        assert_eq!(cookie_value("xtapir_session=1", COOKIE_NAME), None);
        assert_eq!(cookie_value("", COOKIE_NAME), None);
    }
}
