/// Everything the access decisions refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A username outside the rules (see [`crate::user::normalize_username`]).
    #[error("invalid username {name:?}: {reason}")]
    BadUsername { name: String, reason: &'static str },
    #[error("unknown role {0:?} (agent, supervisor or admin)")]
    BadRole(String),
    #[error("unknown scope {0:?} (read, control or admin)")]
    BadScope(String),
    /// A password outside the policy.
    #[error("password refused: {0}")]
    BadPassword(&'static str),
    /// A role that cannot work without this field (an agent without agent id sees nothing).
    #[error("role {role} needs {what}")]
    Incomplete {
        role: &'static str,
        what: &'static str,
    },
    /// A stored value this version does not understand.
    #[error("stored {what} is invalid: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The system's random source failed.
    #[error("no randomness from the system: {0}")]
    Random(String),
    /// argon2 failed (not a wrong password: that is `false`).
    #[error("password hashing failed: {0}")]
    Hash(String),
}
