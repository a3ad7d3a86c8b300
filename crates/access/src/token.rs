//! API tokens for machine clients: an IVR's consent and directive calls, a CRM's look-ups.
//!
//! A token is `tapir_` followed by 256 random bits (URL-safe base64), shown once when it is
//! made and stored only as its SHA-256; it is sent as `Authorization: Bearer <token>`. The
//! prefix lets secret scanners and people recognise one.

use store::{NewToken, TokenRecord};

use crate::session::{random_token, token_hash};
use crate::user::normalize_username;
use crate::viewer::{Scopes, Viewer};
use crate::AccessError;

/// What every token starts with.
pub const PREFIX: &str = "tapir_";

/// A token just made: `token` is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub record: NewToken,
}

/// Makes a token named `name` (the username rules: it appears in the audit log as
/// `token:<name>`) with `scopes`, made by `created_by`.
pub fn issue(name: &str, scopes: Scopes, created_by: &str) -> Result<IssuedToken, AccessError> {
    let name = normalize_username(name)?;
    if scopes.is_empty() {
        return Err(AccessError::BadScope(String::new()));
    }
    let token = format!("{PREFIX}{}", random_token()?);
    Ok(IssuedToken {
        record: NewToken {
            name,
            token_hash: token_hash(&token),
            scopes: scopes.to_text(),
            created_by: created_by.to_string(),
        },
        token,
    })
}

/// True when `token` has the shape of one made by [`issue`] (checked before any look-up).
pub fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(PREFIX)
        .is_some_and(crate::session::well_formed)
}

/// The token of an `Authorization` header value (`Bearer <token>`, the scheme in any case).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    (!t.is_empty()).then_some(t)
}

/// The viewer a stored, live token stands for.
pub fn viewer(r: &TokenRecord) -> Result<Viewer, AccessError> {
    let scopes = Scopes::parse(&r.scopes).map_err(|e| AccessError::Corrupt {
        what: "token scopes",
        reason: format!("token {:?}: {e}", r.name),
    })?;
    Ok(Viewer::Token {
        id: r.id,
        name: r.name.clone(),
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::Scope;

    #[test]
    fn an_issued_token_is_shown_once_and_stored_hashed() {
        let t = issue("IVR-1", Scopes::of(&[Scope::Control]), "cli").unwrap();
        assert!(t.token.starts_with("tapir_"));
        assert!(well_formed(&t.token));
        assert_eq!(t.record.name, "ivr-1");
        assert_eq!(t.record.scopes, "control");
        assert_eq!(t.record.token_hash, token_hash(&t.token));
        assert!(!t.record.token_hash.contains(&t.token[6..]));
        assert!(issue("bad name", Scopes::of(&[Scope::Read]), "cli").is_err());
        assert!(issue("crm", Scopes::default(), "cli").is_err());
        for bad in [
            "",
            "tapir_",
            "tapir_short",
            &t.token[1..],
            &format!("x{}", t.token),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_read() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic YTpi"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn a_stored_token_becomes_a_viewer_with_its_scopes() {
        let r = TokenRecord {
            id: 4,
            name: "crm".into(),
            token_hash: "h".into(),
            scopes: "read control".into(),
            created_ms: 0,
            created_by: "cli".into(),
            last_used_ms: None,
            revoked_ms: None,
        };
        match viewer(&r).unwrap() {
            Viewer::Token { id, name, scopes } => {
                assert_eq!((id, name.as_str()), (4, "crm"));
                assert!(scopes.contains(Scope::Read) && scopes.contains(Scope::Control));
            }
            other => panic!("{other:?}"),
        }
        let bad = TokenRecord {
            scopes: "root".into(),
            ..r
        };
        assert!(viewer(&bad).is_err());
    }
}
