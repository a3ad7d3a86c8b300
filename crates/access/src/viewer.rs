//! Who is asking, what they may see, and what they may do.
//!
//! Every request resolves to a [`Viewer`]. Searches get its [`Visibility`] as a mandatory
//! [`store::Restriction`] ([`restrict`]), and every fetch by id (metadata, audio, peaks,
//! metrics, by Call-ID, a statement) asks [`may_view`] of the entry it found, so an id or a
//! Call-ID never grants access by itself. A refusal should look like a miss (404), so that
//! guessing ids tells nothing about what exists.
//!
//! The rules:
//! * an agent sees entries whose `agent` is their agent id;
//! * a supervisor sees entries whose `team` is one of theirs, and their own as an agent;
//! * an admin sees everything;
//! * an API token with `read` (or `admin`) scope sees everything: it is a machine client
//!   (a CRM's look-ups) configured by an admin;
//! * a disabled user, or a token without a reading scope, sees nothing;
//! * an entry without agent and team is seen by admins (and reading tokens) only.

use serde::Serialize;
use store::{Entry, Query, Restriction};

use crate::user::{Role, User};
use crate::AccessError;

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Look-ups, searches, audio, peaks, metrics.
    Read,
    /// The call-control API (`/calls/*`): consent, directives, dispositions.
    Control,
    /// Everything an admin user may do, reading included.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Control, Scope::Admin];

    pub fn parse(s: &str) -> Result<Scope, AccessError> {
        match s {
            "read" => Ok(Scope::Read),
            "control" => Ok(Scope::Control),
            "admin" => Ok(Scope::Admin),
            other => Err(AccessError::BadScope(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Control => "control",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Control => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// Reads scopes separated by spaces or commas (`"read control"`); unknown ones are an
    /// error, none at all too.
    pub fn parse(s: &str) -> Result<Scopes, AccessError> {
        let mut out = Scopes::default();
        for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
            out.0 |= Scope::parse(part)?.bit();
        }
        if out.is_empty() {
            return Err(AccessError::BadScope(s.to_string()));
        }
        Ok(out)
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Space separated, in a fixed order: the form stored in the catalog.
    pub fn to_text(self) -> String {
        Scope::ALL
            .iter()
            .filter(|s| self.contains(**s))
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// A user logged in with a session.
    User(User),
    /// A machine client with an API token.
    Token {
        id: i64,
        name: String,
        scopes: Scopes,
    },
}

impl Viewer {
    /// The actor written in the audit log: the username, or `token:<name>`.
    pub fn actor(&self) -> String {
        match self {
            Viewer::User(u) => u.username.clone(),
            Viewer::Token { name, .. } => format!("token:{name}"),
        }
    }
}

/// What a viewer may see of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every entry.
    All,
    /// Only the entries this restriction admits (none when it names nothing).
    Only(Restriction),
}

impl Visibility {
    /// The restriction a search must carry; `None` for [`Visibility::All`].
    pub fn restriction(&self) -> Option<Restriction> {
        match self {
            Visibility::All => None,
            Visibility::Only(r) => Some(r.clone()),
        }
    }

    /// True when the entry is visible.
    pub fn admits(&self, e: &Entry) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Only(r) => r.admits(e.agent.as_deref(), e.team.as_deref()),
        }
    }

    fn nothing() -> Visibility {
        Visibility::Only(Restriction::default())
    }
}

/// What `viewer` may see (see the module docs for the rules).
pub fn scope(viewer: &Viewer) -> Visibility {
    match viewer {
        Viewer::User(u) if u.disabled => Visibility::nothing(),
        Viewer::User(u) => match u.role {
            Role::Admin => Visibility::All,
            Role::Supervisor => Visibility::Only(Restriction {
                agents: u.agent_id.iter().cloned().collect(),
                teams: u.teams.clone(),
            }),
            Role::Agent => Visibility::Only(Restriction {
                agents: u.agent_id.iter().cloned().collect(),
                teams: Vec::new(),
            }),
        },
        Viewer::Token { scopes, .. }
            if scopes.contains(Scope::Read) || scopes.contains(Scope::Admin) =>
        {
            Visibility::All
        }
        Viewer::Token { .. } => Visibility::nothing(),
    }
}

/// The search `q` as `viewer` may run it: whatever restriction `q` carried is replaced by
/// the viewer's own.
pub fn restrict(viewer: &Viewer, mut q: Query) -> Query {
    q.restrict = scope(viewer).restriction();
    q
}

/// True when `viewer` may see this entry (its metadata, audio, peaks, metrics, statements).
pub fn may_view(viewer: &Viewer, e: &Entry) -> bool {
    scope(viewer).admits(e)
}

/// What a request needs besides seeing an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Search, look up, play, download (within the viewer's visibility).
    Read,
    /// Soft-delete a recording.
    Delete,
    /// Set or clear a legal hold.
    LegalHold,
    /// The call-control API (`/calls/*`): only tokens with the `control` scope.
    Control,
    /// Add, change and disable users; add and revoke tokens.
    ManageUsers,
    /// Read and export the audit log.
    ViewAudit,
}

/// True when `viewer` may do what `need` names.
pub fn allows(viewer: &Viewer, need: Need) -> bool {
    match viewer {
        Viewer::User(u) if u.disabled => false,
        Viewer::User(u) => match need {
            Need::Read => true,
            // The call-control API is for machine clients with a token, never a browser.
            Need::Control => false,
            Need::Delete | Need::LegalHold | Need::ManageUsers | Need::ViewAudit => {
                u.role == Role::Admin
            }
        },
        Viewer::Token { scopes, .. } => match need {
            Need::Read => scopes.contains(Scope::Read) || scopes.contains(Scope::Admin),
            Need::Control => scopes.contains(Scope::Control),
            Need::Delete | Need::LegalHold | Need::ManageUsers | Need::ViewAudit => {
                scopes.contains(Scope::Admin)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::State;

    fn user(role: Role, agent: Option<&str>, teams: &[&str]) -> Viewer {
        Viewer::User(User {
            id: 1,
            username: "u".into(),
            display_name: "U".into(),
            role,
            agent_id: agent.map(str::to_string),
            teams: teams.iter().map(|t| t.to_string()).collect(),
            disabled: false,
        })
    }

    fn entry(agent: Option<&str>, team: Option<&str>) -> Entry {
        let meta = recorder::RecordingMetadata {
            contact_id: "c".into(),
            route: "r".into(),
            direction: "inbound".into(),
            ..Default::default()
        };
        let mut e = Entry::from_metadata(&meta, "n", State::Finished, 0).unwrap();
        e.agent = agent.map(str::to_string);
        e.team = team.map(str::to_string);
        e
    }

    fn token(scopes: &[Scope]) -> Viewer {
        Viewer::Token {
            id: 1,
            name: "t".into(),
            scopes: Scopes::of(scopes),
        }
    }

    /// Every viewer against every kind of entry, including entries with no agent or team
    /// and entries whose agent or team is an empty string.
    #[test]
    fn the_visibility_matrix() {
        let entries = [
            ("anna/complaints", entry(Some("anna"), Some("complaints"))),
            ("anna/-", entry(Some("anna"), None)),
            ("bert/complaints", entry(Some("bert"), Some("complaints"))),
            ("bert/sales", entry(Some("bert"), Some("sales"))),
            ("-/sales", entry(None, Some("sales"))),
            ("-/-", entry(None, None)),
            ("''/''", entry(Some(""), Some(""))),
        ];
        let mut disabled = user(Role::Admin, None, &[]);
        if let Viewer::User(u) = &mut disabled {
            u.disabled = true;
        }
        let viewers: [(&str, Viewer, [bool; 7]); 10] = [
            (
                "agent anna",
                user(Role::Agent, Some("anna"), &["sales"]),
                [true, true, false, false, false, false, false],
            ),
            ("agent without id", user(Role::Agent, None, &[]), [false; 7]),
            (
                "agent with an empty id",
                user(Role::Agent, Some(""), &[]),
                [false; 7],
            ),
            (
                "supervisor of complaints",
                user(Role::Supervisor, None, &["complaints"]),
                [true, false, true, false, false, false, false],
            ),
            (
                "supervisor of sales who is agent anna",
                user(Role::Supervisor, Some("anna"), &["sales"]),
                [true, true, false, true, true, false, false],
            ),
            ("admin", user(Role::Admin, None, &[]), [true; 7]),
            ("disabled admin", disabled, [false; 7]),
            ("read token", token(&[Scope::Read]), [true; 7]),
            ("admin token", token(&[Scope::Admin]), [true; 7]),
            ("control token", token(&[Scope::Control]), [false; 7]),
        ];
        for (who, v, want) in &viewers {
            for ((what, e), want) in entries.iter().zip(want) {
                assert_eq!(may_view(v, e), *want, "{who} viewing {what}");
            }
        }
    }

    #[test]
    fn a_search_carries_the_viewers_restriction_whatever_it_asked() {
        let forged = Query {
            restrict: None,
            agent: Some("bert".into()),
            ..Default::default()
        };
        let q = restrict(&user(Role::Agent, Some("anna"), &[]), forged.clone());
        assert_eq!(
            q.restrict,
            Some(Restriction {
                agents: vec!["anna".into()],
                teams: vec![]
            })
        );
        assert_eq!(q.agent.as_deref(), Some("bert"), "filters stay");
        let q = restrict(&user(Role::Supervisor, None, &["a", "b"]), forged.clone());
        assert_eq!(
            q.restrict,
            Some(Restriction {
                agents: vec![],
                teams: vec!["a".into(), "b".into()]
            })
        );
        let mut wide = forged.clone();
        wide.restrict = Some(Restriction {
            agents: vec!["x".into()],
            teams: vec![],
        });
        assert_eq!(restrict(&user(Role::Admin, None, &[]), wide).restrict, None);
        assert_eq!(
            restrict(&token(&[Scope::Control]), forged).restrict,
            Some(Restriction::default()),
            "a control token searches nothing"
        );
    }

    #[test]
    fn what_each_viewer_may_do() {
        use Need::*;
        let needs = [Read, Delete, LegalHold, Control, ManageUsers, ViewAudit];
        let mut disabled = user(Role::Admin, None, &[]);
        if let Viewer::User(u) = &mut disabled {
            u.disabled = true;
        }
        let cases: [(&str, Viewer, [bool; 6]); 9] = [
            (
                "agent",
                user(Role::Agent, Some("a"), &[]),
                [true, false, false, false, false, false],
            ),
            (
                "supervisor",
                user(Role::Supervisor, None, &["t"]),
                [true, false, false, false, false, false],
            ),
            (
                "admin",
                user(Role::Admin, None, &[]),
                [true, true, true, false, true, true],
            ),
            ("disabled admin", disabled, [false; 6]),
            (
                "read",
                token(&[Scope::Read]),
                [true, false, false, false, false, false],
            ),
            (
                "control",
                token(&[Scope::Control]),
                [false, false, false, true, false, false],
            ),
            (
                "admin token",
                token(&[Scope::Admin]),
                [true, true, true, false, true, true],
            ),
            (
                "read+control",
                token(&[Scope::Read, Scope::Control]),
                [true, false, false, true, false, false],
            ),
            ("no scope", token(&[]), [false; 6]),
        ];
        for (who, v, want) in &cases {
            for (n, w) in needs.iter().zip(want) {
                assert_eq!(allows(v, *n), *w, "{who} {n:?}");
            }
        }
    }

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse("control, read").unwrap();
        assert!(s.contains(Scope::Read) && s.contains(Scope::Control));
        assert!(!s.contains(Scope::Admin));
        assert_eq!(s.to_text(), "read control");
        assert_eq!(Scopes::parse(&s.to_text()), Ok(s));
        assert_eq!(
            Scopes::parse("read write"),
            Err(AccessError::BadScope("write".into()))
        );
        assert!(Scopes::parse(" , ").is_err(), "no scope at all");
        assert_eq!(token(&[Scope::Read]).actor(), "token:t");
        assert_eq!(user(Role::Agent, Some("a"), &[]).actor(), "u");
    }
}
