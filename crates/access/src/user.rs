//! Users and their roles.

use serde::Serialize;
use store::UserRecord;

use crate::AccessError;

/// What a user is on the review page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the calls where they were the contact's agent.
    Agent,
    /// Sees the calls of their teams (and their own).
    Supervisor,
    /// Sees everything; manages users, tokens, deletions and legal holds; reads the audit log.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, AccessError> {
        match s {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            other => Err(AccessError::BadRole(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// The agent id as it appears in recordings (`store::Entry::agent`).
    pub agent_id: Option<String>,
    pub teams: Vec<String>,
    pub disabled: bool,
}

impl TryFrom<&UserRecord> for User {
    type Error = AccessError;
    fn try_from(r: &UserRecord) -> Result<User, AccessError> {
        let role = Role::parse(&r.role).map_err(|_| AccessError::Corrupt {
            what: "role",
            reason: format!("user {:?} has role {:?}", r.username, r.role),
        })?;
        Ok(User {
            id: r.id,
            username: r.username.clone(),
            display_name: r.display_name.clone(),
            role,
            agent_id: r.agent_id.clone().filter(|a| !a.is_empty()),
            teams: r.teams.iter().filter(|t| !t.is_empty()).cloned().collect(),
            disabled: r.disabled,
        })
    }
}

/// The longest username.
pub const MAX_USERNAME: usize = 64;

/// Names the audit log uses for actors that are not users.
pub const RESERVED: [&str; 3] = ["cli", "anonymous", "system"];

/// A username as stored: trimmed and lowercased (logins are case-insensitive), 1 to 64 of
/// `a-z 0-9 . _ - @`, starting with a letter or digit. The narrow alphabet keeps usernames
/// safe in logs, audit entries, CSV and HTML, and rules out look-alike Unicode accounts.
pub fn normalize_username(name: &str) -> Result<String, AccessError> {
    let bad = |reason| AccessError::BadUsername {
        name: name.chars().take(80).collect(),
        reason,
    };
    let n = name.trim().to_ascii_lowercase();
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.len() > MAX_USERNAME {
        return Err(bad("longer than 64 characters"));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b))
    {
        return Err(bad("only letters, digits and . _ - @ are allowed"));
    }
    if !n.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or a digit"));
    }
    if RESERVED.contains(&n.as_str()) {
        return Err(bad("reserved for the audit log's own actors"));
    }
    Ok(n)
}

/// Checks that a role has what it needs to see anything: an agent its agent id, a
/// supervisor at least one team.
pub fn check_role_fields(
    role: Role,
    agent_id: Option<&str>,
    teams: &[String],
) -> Result<(), AccessError> {
    match role {
        Role::Agent if agent_id.is_none_or(str::is_empty) => Err(AccessError::Incomplete {
            role: "agent",
            what: "an agent id (the agent as it appears in recordings)",
        }),
        Role::Supervisor if teams.iter().all(String::is_empty) => Err(AccessError::Incomplete {
            role: "supervisor",
            what: "at least one team",
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for r in [Role::Agent, Role::Supervisor, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert_eq!(
            Role::parse("Admin"),
            Err(AccessError::BadRole("Admin".into()))
        );
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(
            normalize_username("  Anna.B@Example ").unwrap(),
            "anna.b@example"
        );
        assert_eq!(normalize_username("7-x_y").unwrap(), "7-x_y");
        for bad in [
            "",
            "   ",
            "-anna",
            ".x",
            "an na",
            "anna<script>",
            "ännä",
            "a,b",
            "a\"b",
        ] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_username(&"a".repeat(64)).is_ok());
        assert!(normalize_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn roles_need_what_makes_them_see() {
        assert!(check_role_fields(Role::Agent, Some("a1"), &[]).is_ok());
        assert!(check_role_fields(Role::Agent, None, &["t".into()]).is_err());
        assert!(check_role_fields(Role::Agent, Some(""), &[]).is_err());
        assert!(check_role_fields(Role::Supervisor, None, &["t".into()]).is_ok());
        assert!(check_role_fields(Role::Supervisor, Some("a"), &[]).is_err());
        assert!(check_role_fields(Role::Supervisor, None, &["".into()]).is_err());
        assert!(check_role_fields(Role::Admin, None, &[]).is_ok());
    }

    #[test]
    fn a_stored_user_becomes_a_user_and_a_bad_role_is_refused() {
        let mut r = UserRecord {
            id: 3,
            username: "anna".into(),
            display_name: "Anna".into(),
            role: "supervisor".into(),
            agent_id: Some("".into()),
            teams: vec!["a".into(), "".into()],
            password_hash: "x".into(),
            disabled: false,
            created_ms: 0,
            updated_ms: 0,
        };
        let u = User::try_from(&r).unwrap();
        assert_eq!(u.role, Role::Supervisor);
        assert_eq!(u.agent_id, None, "an empty agent id is none");
        assert_eq!(u.teams, ["a"]);
        r.role = "root".into();
        assert!(matches!(
            User::try_from(&r),
            Err(AccessError::Corrupt { what: "role", .. })
        ));
    }
}
