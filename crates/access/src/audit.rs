//! What is audited and how the audit log is exported.
//!
//! Every login (and failed login), logout, search, play, download, delete, legal hold, user
//! and token change and control command makes an entry: who ([`store::NewAudit::actor`]),
//! when, what ([`Action`]), on what (the target), from where (the client address) and any
//! detail. The catalog chains the entries ([`store::audit`]); [`verify_chain`] checks a
//! chain, for example one read back from a JSON lines export.
//!
//! Exports: JSON lines keep every field, hashes included, so an export can be verified on
//! its own; CSV is for spreadsheets, and a cell that a spreadsheet would run as a formula
//! (starting with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with `'`.

use serde_json::Value;
pub use store::audit::{verify_chain, AuditEntry, ChainBreak, ChainVerifier, NewAudit};

use crate::viewer::Viewer;

/// The actions audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Login,
    LoginFailed,
    Logout,
    Search,
    /// Metadata, peaks or metrics of a recording read (also by Call-ID or statement id).
    View,
    Play,
    Download,
    Delete,
    LegalHold,
    RoleChange,
    UserAdd,
    UserUpdate,
    UserDisable,
    UserEnable,
    Passwd,
    TokenAdd,
    TokenRevoke,
    /// A call-control command (`/calls/*`).
    Control,
    /// The audit log itself read or exported.
    AuditView,
    AuditExport,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::Login,
        Action::LoginFailed,
        Action::Logout,
        Action::Search,
        Action::View,
        Action::Play,
        Action::Download,
        Action::Delete,
        Action::LegalHold,
        Action::RoleChange,
        Action::UserAdd,
        Action::UserUpdate,
        Action::UserDisable,
        Action::UserEnable,
        Action::Passwd,
        Action::TokenAdd,
        Action::TokenRevoke,
        Action::Control,
        Action::AuditView,
        Action::AuditExport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::Search => "search",
            Action::View => "view",
            Action::Play => "play",
            Action::Download => "download",
            Action::Delete => "delete",
            Action::LegalHold => "legal_hold",
            Action::RoleChange => "role_change",
            Action::UserAdd => "user_add",
            Action::UserUpdate => "user_update",
            Action::UserDisable => "user_disable",
            Action::UserEnable => "user_enable",
            Action::Passwd => "passwd",
            Action::TokenAdd => "token_add",
            Action::TokenRevoke => "token_revoke",
            Action::Control => "control",
            Action::AuditView => "audit_view",
            Action::AuditExport => "audit_export",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The actor of entries made by the command line (`tapir user ...`).
pub const CLI_ACTOR: &str = "cli";

/// An entry by `actor` (see [`Viewer::actor`], or [`CLI_ACTOR`]).
pub fn entry(
    now_ms: i64,
    actor: &str,
    action: Action,
    target: Option<&str>,
    detail: Value,
    from: Option<&str>,
) -> NewAudit {
    NewAudit {
        at_ms: now_ms,
        actor: actor.to_string(),
        action: action.as_str().to_string(),
        target: target.map(str::to_string),
        detail,
        from: from.map(str::to_string),
    }
}

/// An entry by `viewer`.
pub fn by(
    viewer: &Viewer,
    now_ms: i64,
    action: Action,
    target: Option<&str>,
    detail: Value,
    from: Option<&str>,
) -> NewAudit {
    entry(now_ms, &viewer.actor(), action, target, detail, from)
}

/// A failed login: the actor is the username tried (after the username rules, or
/// `anonymous` when it broke them, so no junk reaches the log).
pub fn login_failed(now_ms: i64, username: &str, reason: &str, from: Option<&str>) -> NewAudit {
    let actor = crate::user::normalize_username(username).unwrap_or_else(|_| "anonymous".into());
    entry(
        now_ms,
        &actor,
        Action::LoginFailed,
        None,
        serde_json::json!({ "reason": reason }),
        from,
    )
}

/// One entry as a line of JSON (without the newline), hashes included.
pub fn json_line(e: &AuditEntry) -> String {
    serde_json::to_string(e).expect("an audit entry serializes")
}

/// Reads an entry written by [`json_line`].
pub fn parse_json_line(line: &str) -> Result<AuditEntry, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Line {
        seq: i64,
        at_ms: i64,
        actor: String,
        action: String,
        target: Option<String>,
        detail: Value,
        from: Option<String>,
        prev_hash: String,
        hash: String,
    }
    let l: Line = serde_json::from_str(line)?;
    Ok(AuditEntry {
        seq: l.seq,
        at_ms: l.at_ms,
        actor: l.actor,
        action: l.action,
        target: l.target,
        detail: l.detail,
        from: l.from,
        prev_hash: l.prev_hash,
        hash: l.hash,
    })
}

/// The CSV header line (without the newline).
pub const CSV_HEADER: &str = "seq,at_ms,actor,action,target,detail,from,prev_hash,hash";

fn csv_cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// One entry as a CSV line (without the newline), RFC 4180 quoting.
pub fn csv_row(e: &AuditEntry) -> String {
    [
        e.seq.to_string(),
        e.at_ms.to_string(),
        csv_cell(&e.actor),
        csv_cell(&e.action),
        csv_cell(e.target.as_deref().unwrap_or("")),
        csv_cell(&store::audit::canonical_json(&e.detail)),
        csv_cell(e.from.as_deref().unwrap_or("")),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
    .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use store::audit::{entry_hash, GENESIS_HASH};

    fn chained(items: &[NewAudit]) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_string();
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let seq = i as i64 + 1;
                let hash = entry_hash(
                    &prev,
                    seq,
                    a.at_ms,
                    &a.actor,
                    &a.action,
                    a.target.as_deref(),
                    &a.detail,
                    a.from.as_deref(),
                )
                .unwrap();
                AuditEntry {
                    seq,
                    at_ms: a.at_ms,
                    actor: a.actor.clone(),
                    action: a.action.clone(),
                    target: a.target.clone(),
                    detail: a.detail.clone(),
                    from: a.from.clone(),
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    #[test]
    fn actions_have_stable_names() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::LegalHold.as_str(), "legal_hold");
        assert_eq!(Action::parse("sudo"), None);
    }

    #[test]
    fn a_failed_login_never_writes_junk_as_the_actor() {
        let e = login_failed(1, "Anna", "bad password", Some("192.0.2.1"));
        assert_eq!(
            (e.actor.as_str(), e.action.as_str()),
            ("anna", "login_failed")
        );
        let e = login_failed(1, "<script>\n", "bad password", None);
        assert_eq!(e.actor, "anonymous");
    }

    #[test]
    fn a_json_lines_export_verifies_on_its_own_and_shows_an_edit() {
        let items = [
            entry(1, "anna", Action::Login, None, json!({}), Some("192.0.2.1")),
            entry(
                2,
                "anna",
                Action::Search,
                None,
                json!({"agent": "anna", "limit": 50, "ratio": 0.25}),
                Some("192.0.2.1"),
            ),
            entry(3, "anna", Action::Play, Some("c1"), json!(null), None),
        ];
        let chain = chained(&items);
        let text: String = chain.iter().map(|e| json_line(e) + "\n").collect();
        let back: Vec<AuditEntry> = text.lines().map(|l| parse_json_line(l).unwrap()).collect();
        assert_eq!(back, chain);
        assert_eq!(verify_chain(&back), Ok(()));
        let edited = text.replace("\"play\"", "\"view\"");
        let back: Vec<AuditEntry> = edited
            .lines()
            .map(|l| parse_json_line(l).unwrap())
            .collect();
        assert_eq!(verify_chain(&back).unwrap_err().seq, 3);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let chain = chained(&[entry(
            5,
            "=HYPERLINK(\"x\")",
            Action::Search,
            Some("a,b"),
            json!({"q": "line\nbreak"}),
            Some("@evil"),
        )]);
        let row = csv_row(&chain[0]);
        assert!(
            row.starts_with("1,5,\"'=HYPERLINK(\"\"x\"\")\",search,\"a,b\","),
            "{row}"
        );
        assert!(row.contains(",'@evil,"), "{row}");
        assert!(row.contains(r#""{""q"":""line\nbreak""}""#), "{row}");
        assert!(row.ends_with(&chain[0].hash));
        assert_eq!(CSV_HEADER.split(',').count(), 9);
    }
}
