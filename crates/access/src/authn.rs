//! Authentication decisions: which credential a request carries, whether the session or
//! token it names is good, whether its CSRF token is, and how a login attempt ends.
//!
//! The HTTP layer reads headers and the catalog and calls these; it never decides itself.
//! A login is three steps so that no lock is held while argon2 runs: [`Throttle::check`]
//! (refuse early, 429), [`verify_login`] (CPU-bound: run it off the async threads, e.g. in
//! `spawn_blocking`), [`record_login`] (count the failure or clear the user's count).
//! Failure reasons go to the audit log only; the client always hears the same "wrong
//! username or password".

use std::net::IpAddr;

use store::{SessionRecord, TokenRecord, UserRecord};

use crate::session::{self, csrf_matches, needs_csrf, SessionCheck, SessionPolicy};
use crate::throttle::{Throttle, Throttled};
use crate::user::{normalize_username, User};
use crate::viewer::Viewer;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or one that is unknown, forged, expired or of a disabled user: 401
    /// (the API) or the login page (the pages).
    Unauthenticated,
    /// A state-changing request of a session without its CSRF token: 403.
    BadCsrf,
    /// Authenticated, but not allowed to do this: 403.
    Forbidden,
}

impl Denied {
    /// The HTTP status for it.
    pub fn status(self) -> u16 {
        match self {
            Denied::Unauthenticated => 401,
            Denied::BadCsrf | Denied::Forbidden => 403,
        }
    }
}

/// What a request presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A session cookie's token.
    Session(&'a str),
    /// An API token from `Authorization: Bearer`.
    Bearer(&'a str),
    None,
}

/// The credential in a request's `Authorization` and `Cookie` headers. A bearer token wins
/// over a cookie. Under HTTPS (`secure`) only the `__Host-` cookie counts, so a cookie set
/// over plain HTTP by someone on the path is never taken for a session. Credentials of the
/// wrong shape are no credential (and are never looked up).
pub fn credential<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    secure: bool,
) -> Credential<'a> {
    if let Some(a) = authorization {
        return match crate::token::bearer(a) {
            Some(t) if crate::token::well_formed(t) => Credential::Bearer(t),
            _ => Credential::None,
        };
    }
    let name = if secure {
        session::SECURE_COOKIE_NAME
    } else {
        session::COOKIE_NAME
    };
    match cookie.and_then(|c| session::cookie_value(c, name)) {
        Some(t) if session::well_formed(t) => Credential::Session(t),
        _ => Credential::None,
    }
}

/// A request's viewer, with its session when it came with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub viewer: Viewer,
    pub session: Option<SessionRecord>,
    /// Write the session's activity back now (see [`SessionPolicy::touch_every_ms`]).
    pub touch: bool,
}

/// The viewer of the session the catalog found for a cookie's token hash (or `None`).
/// Expired and idle sessions and disabled users are [`Denied::Unauthenticated`]; the caller
/// may delete such a session.
pub fn session_viewer(
    policy: &SessionPolicy,
    found: Option<(SessionRecord, UserRecord)>,
    now_ms: i64,
) -> Result<Authenticated, Denied> {
    let (s, u) = found.ok_or(Denied::Unauthenticated)?;
    let touch = match policy.check(&s, now_ms) {
        SessionCheck::Valid { touch } => touch,
        SessionCheck::Idle | SessionCheck::Expired => return Err(Denied::Unauthenticated),
    };
    let user = User::try_from(&u).map_err(|_| Denied::Unauthenticated)?;
    if user.disabled || u.id != s.user_id {
        return Err(Denied::Unauthenticated);
    }
    Ok(Authenticated {
        viewer: Viewer::User(user),
        session: Some(s),
        touch,
    })
}

/// The viewer of the live token the catalog found for a bearer token's hash (or `None`).
pub fn token_viewer(found: Option<TokenRecord>) -> Result<Authenticated, Denied> {
    let t = found.ok_or(Denied::Unauthenticated)?;
    if t.revoked_ms.is_some() {
        return Err(Denied::Unauthenticated);
    }
    let viewer = crate::token::viewer(&t).map_err(|_| Denied::Unauthenticated)?;
    Ok(Authenticated {
        viewer,
        session: None,
        touch: false,
    })
}

/// The CSRF check of a request: a session's state-changing request must carry the
/// session's token. Bearer requests carry no ambient credential a foreign page could make a
/// browser send, so they need none.
pub fn check_csrf(a: &Authenticated, method: &str, given: Option<&str>) -> Result<(), Denied> {
    match &a.session {
        Some(s) if needs_csrf(method) && !csrf_matches(s, given) => Err(Denied::BadCsrf),
        _ => Ok(()),
    }
}

/// How a login's password check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginVerdict {
    Success(User),
    /// `reason` is for the audit log (`unknown user`, `disabled`, `wrong password`), never
    /// for the client.
    Failed {
        reason: &'static str,
    },
}

/// Checks a login's password against the user the catalog found for the username (or
/// `None`). Unknown and disabled users are checked against a dummy hash, so all three
/// failures take the time of one argon2 verification.
pub fn verify_login(password: &str, found: Option<&UserRecord>) -> LoginVerdict {
    let usable = found.filter(|u| !u.disabled);
    let ok = crate::password::verify_login(password, usable.map(|u| u.password_hash.as_str()));
    match (found, ok) {
        (None, _) => LoginVerdict::Failed {
            reason: "unknown user",
        },
        (Some(u), _) if u.disabled => LoginVerdict::Failed { reason: "disabled" },
        (Some(u), true) => match User::try_from(u) {
            Ok(user) => LoginVerdict::Success(user),
            Err(_) => LoginVerdict::Failed {
                reason: "invalid stored user",
            },
        },
        (Some(_), false) => LoginVerdict::Failed {
            reason: "wrong password",
        },
    }
}

/// The username a login form's text is looked up as; `None` when it breaks the username
/// rules (then nobody is looked up, the password is checked against the dummy all the same).
pub fn login_username(input: &str) -> Option<String> {
    normalize_username(input).ok()
}

/// Counts a login's outcome in the throttle.
pub fn record_login(
    throttle: &mut Throttle,
    username: &str,
    from: IpAddr,
    now_ms: i64,
    verdict: &LoginVerdict,
) {
    match verdict {
        LoginVerdict::Success(_) => throttle.succeeded(username),
        LoginVerdict::Failed { .. } => throttle.failed(username, from, now_ms),
    }
}

/// Where a login sends the browser: `next` when it is a path of this site, else `/`. No
/// scheme, no host, no `//` or backslash (browsers read `/\\host` as a host), no control
/// characters: never an open redirect, never a header split.
pub fn local_redirect(next: Option<&str>) -> &str {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(char::is_control) =>
        {
            p
        }
        _ => "/",
    }
}

/// True unless a browser says the request comes from another site: an `Origin` header
/// (browsers send it on every cross-site POST) whose host and port are not the request's
/// `Host`. Without `Origin` (curl, an IVR, an old browser on a same-site form) it passes;
/// the CSRF token and the `SameSite=Strict` cookie still stand. This is what stops a login
/// CSRF (a foreign page logging the victim into the attacker's account), where there is no
/// session yet to hold a token.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let Some(host) = host else { return false };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .map(|rest| rest.split('/').next().unwrap_or_default());
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host.trim()))
}

/// The `Retry-After` value of a throttled login.
pub fn retry_after(t: &Throttled) -> String {
    t.retry_after_s().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{random_token, COOKIE_NAME, SECURE_COOKIE_NAME};
    use crate::throttle::ThrottleConfig;

    const T0: i64 = 1_700_000_000_000;

    fn record(name: &str, password: &str, role: &str) -> UserRecord {
        UserRecord {
            id: 9,
            username: name.into(),
            display_name: name.into(),
            role: role.into(),
            agent_id: Some("201".into()),
            teams: vec![],
            password_hash: crate::password::hash_password(password).unwrap(),
            disabled: false,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn the_credential_is_read_from_the_right_header_and_cookie() {
        let tok = random_token().unwrap();
        let api = format!("tapir_{tok}");
        let plain = format!("x=1; {COOKIE_NAME}={tok}");
        let secure = format!("{SECURE_COOKIE_NAME}={tok}");
        assert_eq!(
            credential(None, Some(&plain), false),
            Credential::Session(&tok)
        );
        assert_eq!(credential(None, Some(&plain), true), Credential::None);
        assert_eq!(
            credential(None, Some(&secure), true),
            Credential::Session(&tok)
        );
        let bearer = format!("Bearer {api}");
        assert_eq!(
            credential(Some(&bearer), Some(&plain), false),
            Credential::Bearer(&api)
        );
        assert_eq!(
            credential(Some("Bearer junk"), Some(&plain), false),
            Credential::None
        );
        assert_eq!(
            credential(None, Some(&format!("{COOKIE_NAME}=short")), false),
            Credential::None
        );
        assert_eq!(credential(None, None, false), Credential::None);
    }

    #[test]
    fn sessions_open_only_while_valid_and_for_enabled_users() {
        let p = SessionPolicy::default();
        let u = record("anna", "good password", "agent");
        let s = p.start(u.id, T0, None).unwrap().record;
        let a = session_viewer(&p, Some((s.clone(), u.clone())), T0 + 1).unwrap();
        assert!(matches!(&a.viewer, Viewer::User(x) if x.username == "anna"));
        assert!(!a.touch);
        assert!(
            session_viewer(&p, Some((s.clone(), u.clone())), T0 + 61_000)
                .unwrap()
                .touch
        );
        assert_eq!(session_viewer(&p, None, T0), Err(Denied::Unauthenticated));
        assert_eq!(
            session_viewer(&p, Some((s.clone(), u.clone())), T0 + p.idle_ms),
            Err(Denied::Unauthenticated),
            "idle"
        );
        let mut off = u.clone();
        off.disabled = true;
        assert_eq!(
            session_viewer(&p, Some((s.clone(), off)), T0 + 1),
            Err(Denied::Unauthenticated)
        );
        let mut other = u.clone();
        other.id = 10;
        assert_eq!(
            session_viewer(&p, Some((s, other)), T0 + 1),
            Err(Denied::Unauthenticated),
            "a session is its own user's only"
        );
    }

    #[test]
    fn tokens_open_until_revoked_and_need_no_csrf() {
        let mut t = TokenRecord {
            id: 1,
            name: "ivr".into(),
            token_hash: "h".into(),
            scopes: "control".into(),
            created_ms: 0,
            created_by: "cli".into(),
            last_used_ms: None,
            revoked_ms: None,
        };
        let a = token_viewer(Some(t.clone())).unwrap();
        assert_eq!(check_csrf(&a, "POST", None), Ok(()));
        t.revoked_ms = Some(1);
        assert_eq!(token_viewer(Some(t)), Err(Denied::Unauthenticated));
        assert_eq!(token_viewer(None), Err(Denied::Unauthenticated));
    }

    #[test]
    fn a_sessions_state_changing_request_needs_its_csrf_token() {
        let p = SessionPolicy::default();
        let u = record("anna", "good password", "admin");
        let s = p.start(u.id, T0, None).unwrap().record;
        let a = session_viewer(&p, Some((s.clone(), u)), T0).unwrap();
        assert_eq!(check_csrf(&a, "GET", None), Ok(()));
        assert_eq!(check_csrf(&a, "POST", None), Err(Denied::BadCsrf));
        assert_eq!(check_csrf(&a, "DELETE", Some("nope")), Err(Denied::BadCsrf));
        assert_eq!(check_csrf(&a, "PUT", Some(&s.csrf)), Ok(()));
        assert_eq!(Denied::BadCsrf.status(), 403);
        assert_eq!(Denied::Unauthenticated.status(), 401);
    }

    #[test]
    fn a_login_succeeds_only_with_the_right_password_of_an_enabled_user() {
        let u = record("anna", "good password", "agent");
        assert!(matches!(
            verify_login("good password", Some(&u)),
            LoginVerdict::Success(x) if x.username == "anna"
        ));
        assert_eq!(
            verify_login("bad password", Some(&u)),
            LoginVerdict::Failed {
                reason: "wrong password"
            }
        );
        assert_eq!(
            verify_login("good password", None),
            LoginVerdict::Failed {
                reason: "unknown user"
            }
        );
        let mut off = u.clone();
        off.disabled = true;
        assert_eq!(
            verify_login("good password", Some(&off)),
            LoginVerdict::Failed { reason: "disabled" }
        );
        assert_eq!(login_username(" Anna "), Some("anna".into()));
        assert_eq!(login_username("<x>"), None);
    }

    #[test]
    fn a_foreign_origin_is_refused_and_no_origin_passes() {
        assert!(same_origin(None, Some("tapir:9060")));
        assert!(same_origin(Some("http://tapir:9060"), Some("tapir:9060")));
        assert!(same_origin(
            Some("https://Tapir.example"),
            Some("tapir.example")
        ));
        assert!(!same_origin(
            Some("https://evil.example"),
            Some("tapir.example")
        ));
        assert!(!same_origin(Some("http://tapir:9061"), Some("tapir:9060")));
        assert!(
            !same_origin(Some("null"), Some("tapir:9060")),
            "sandboxed frames"
        );
        assert!(!same_origin(Some("http://tapir:9060"), None));
    }

    #[test]
    fn redirects_after_login_stay_on_this_site() {
        assert_eq!(local_redirect(Some("/recordings?x=1")), "/recordings?x=1");
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example"),
            Some("/\\evil.example"),
            Some("evil"),
            Some("/a\r\nSet-Cookie: x"),
        ] {
            assert_eq!(local_redirect(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn failed_logins_are_throttled_and_a_success_clears_the_user() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let from: IpAddr = "192.0.2.1".parse().unwrap();
        let failed = LoginVerdict::Failed {
            reason: "wrong password",
        };
        for i in 0..5 {
            assert!(t.check("anna", from, T0 + i).is_ok());
            record_login(&mut t, "anna", from, T0 + i, &failed);
        }
        let th = t.check("anna", from, T0 + 10).unwrap_err();
        assert_eq!(retry_after(&th), "900");
        let u = User::try_from(&record("bert", "good password", "agent")).unwrap();
        record_login(&mut t, "anna", from, T0 + 11, &LoginVerdict::Success(u));
        assert!(t.check("anna", from, T0 + 12).is_ok());
    }
}
