//! Password hashing: argon2id with the crate's default parameters (19 MiB, 2 passes, 1 lane,
//! the OWASP minimum), a random 16-byte salt per hash, stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Verification compares in constant time (argon2's output comparison), and a login for a
//! username that does not exist verifies against a dummy hash of the same cost
//! ([`verify_login`]), so the answer takes as long whether or not the user exists.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use crate::AccessError;

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 8;
/// The longest password accepted, in bytes: a bound on the work one login can ask for.
pub const MAX_PASSWORD: usize = 1024;

/// Checks a new password against the policy: 8 to 1024 bytes, not only white space.
pub fn check_policy(password: &str) -> Result<(), AccessError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccessError::BadPassword("shorter than 8 characters"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AccessError::BadPassword("longer than 1024 bytes"));
    }
    if password.trim().is_empty() {
        return Err(AccessError::BadPassword("only white space"));
    }
    Ok(())
}

/// Hashes a new password (after [`check_policy`]) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    check_policy(password)?;
    hash_unchecked(password)
}

fn hash_unchecked(password: &str) -> Result<String, AccessError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string. A PHC string that does not parse, or that
/// is not argon2, is no match. Oversize passwords are no match without any hashing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// The hash that logins of unknown users are checked against: of a random password, made
/// once with the same parameters as real hashes.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        // Without randomness a fixed text is as good: nobody logs in with this hash.
        let _ = getrandom::fill(&mut pw);
        hash_unchecked(&hex::encode(pw)).unwrap_or_default()
    })
}

/// Makes the dummy hash now (at start), so the first login for an unknown user does not
/// take longer than the others.
pub fn warm_up() {
    dummy_hash();
}

/// The password check of a login: against the user's hash when the user exists (and is
/// enabled), else against the dummy hash, so the time taken does not tell which. Returns
/// true only for an existing user with the right password.
pub fn verify_login(password: &str, stored: Option<&str>) -> bool {
    match stored {
        Some(phc) => verify_password(password, phc),
        None => {
            let _ = verify_password(password, dummy_hash());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_salted_and_verifies_only_its_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("", &h));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("correct horse", ""));
        assert!(!verify_password(&"x".repeat(MAX_PASSWORD + 1), &h));
    }

    #[test]
    fn the_policy_refuses_short_long_and_blank_passwords() {
        assert!(check_policy("12345678").is_ok());
        assert!(check_policy("ääääääää").is_ok(), "characters, not bytes");
        for bad in ["", "1234567", "        ", &"x".repeat(MAX_PASSWORD + 1)] {
            assert!(hash_password(bad).is_err(), "{}", bad.len());
        }
    }

    #[test]
    fn a_login_for_an_unknown_user_costs_a_hash_and_fails() {
        warm_up();
        let h = hash_password("secret-pass").unwrap();
        assert!(verify_login("secret-pass", Some(&h)));
        assert!(!verify_login("secret-pass", None));
        assert!(!verify_login("", None));
        // The dummy is a real argon2id hash of the same cost, so the time is the same.
        assert!(dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // The fastest of several tries each, interleaved: robust against other load.
        let (mut known, mut unknown) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            for (stored, best) in [(Some(h.as_str()), &mut known), (None, &mut unknown)] {
                let t = std::time::Instant::now();
                verify_login("secret-pass-wrong", stored);
                *best = best.min(t.elapsed().as_secs_f64());
            }
        }
        let ratio = known / unknown;
        assert!(
            (0.5..2.0).contains(&ratio),
            "known user {known:.4}s, unknown {unknown:.4}s"
        );
    }
}
