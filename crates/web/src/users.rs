//! User management for admins: the list of users with a form per user (name, role, agent
//! id, teams; disable or enable; a new password) and a form that adds one; and the parsing
//! of those forms.
//!
//! The rules are the `access` crate's (username, role fields, password policy); a form that
//! breaks them is refused with the reason, and nothing is changed. An admin cannot disable
//! themselves or take their own admin role away (the last admin would lock everyone out).

use access::user::{check_role_fields, normalize_username};
use access::{password, Role};
use maud::{html, Markup};
use store::{UserRecord, UserUpdate};

use crate::layout::{page, Chrome};
use crate::search::{path_segment, time_tag};
use crate::WebError;

/// Where the users are.
pub const PATH: &str = "/users";
/// The longest display name, agent id or team.
pub const MAX_FIELD: usize = 128;
/// The most teams of one user.
pub const MAX_TEAMS: usize = 100;

/// A form's fields, each name at most once; `csrf` is the middleware's and is skipped.
fn fields<'a>(
    pairs: &'a [(String, String)],
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, WebError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (k, v) in pairs {
        if k == access::session::CSRF_FIELD {
            continue;
        }
        if !known.contains(&k.as_str()) {
            return Err(WebError::UnknownField(k.chars().take(64).collect()));
        }
        if out.iter().any(|(n, _)| n == k) {
            return Err(WebError::form(k, "given more than once"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn get<'a>(f: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A short text field: trimmed, at most [`MAX_FIELD`] characters, no control characters;
/// empty is `None`.
fn short(name: &str, v: Option<&str>) -> Result<Option<String>, WebError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_FIELD {
        return Err(WebError::form(
            name,
            format!("longer than {MAX_FIELD} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(WebError::form(name, "control characters"));
    }
    Ok(Some(v.to_string()))
}

/// Teams separated by commas, trimmed, without repeats.
fn teams(v: Option<&str>) -> Result<Vec<String>, WebError> {
    let mut out: Vec<String> = Vec::new();
    for t in v.unwrap_or("").split(',') {
        if let Some(t) = short("teams", Some(t))? {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.len() > MAX_TEAMS {
        return Err(WebError::form("teams", format!("more than {MAX_TEAMS}")));
    }
    Ok(out)
}

fn role(v: Option<&str>) -> Result<Role, WebError> {
    let v = v.ok_or_else(|| WebError::form("role", "missing"))?;
    Ok(Role::parse(v.trim())?)
}

/// The "add user" form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUserForm {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub agent_id: Option<String>,
    pub teams: Vec<String>,
    /// The initial password, within the policy (hash it off the async threads).
    pub password: String,
}

impl NewUserForm {
    pub fn parse(pairs: &[(String, String)]) -> Result<NewUserForm, WebError> {
        let f = fields(
            pairs,
            &[
                "username",
                "display_name",
                "role",
                "agent_id",
                "teams",
                "password",
            ],
        )?;
        let username = normalize_username(
            get(&f, "username").ok_or_else(|| WebError::form("username", "missing"))?,
        )?;
        let role = role(get(&f, "role"))?;
        let agent_id = short("agent_id", get(&f, "agent_id"))?;
        let teams = teams(get(&f, "teams"))?;
        check_role_fields(role, agent_id.as_deref(), &teams)?;
        let password = get(&f, "password").unwrap_or("").to_string();
        password::check_policy(&password)?;
        Ok(NewUserForm {
            display_name: short("display_name", get(&f, "display_name"))?
                .unwrap_or_else(|| username.clone()),
            username,
            role,
            agent_id,
            teams,
            password,
        })
    }
}

/// The "change user" form: every field is set to what the form says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeForm {
    pub display_name: Option<String>,
    pub role: Role,
    pub agent_id: Option<String>,
    pub teams: Vec<String>,
}

/// What a [`ChangeForm`] changes of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// For `Catalog::update_user`; fields that stay are `None`.
    pub update: UserUpdate,
    /// The old and new role, when the role changes (a `role_change` audit entry).
    pub role: Option<(Role, Role)>,
    /// The names of the other fields that change (a `user_update` audit entry).
    pub fields: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.role.is_none() && self.fields.is_empty()
    }
}

impl ChangeForm {
    pub fn parse(pairs: &[(String, String)]) -> Result<ChangeForm, WebError> {
        let f = fields(pairs, &["display_name", "role", "agent_id", "teams"])?;
        let role = role(get(&f, "role"))?;
        let agent_id = short("agent_id", get(&f, "agent_id"))?;
        let teams = teams(get(&f, "teams"))?;
        check_role_fields(role, agent_id.as_deref(), &teams)?;
        Ok(ChangeForm {
            display_name: short("display_name", get(&f, "display_name"))?,
            role,
            agent_id,
            teams,
        })
    }

    /// What changes of `current`. `me` is the admin making the change: taking away one's
    /// own admin role is refused.
    pub fn changes(&self, current: &UserRecord, me: &str) -> Result<Changes, WebError> {
        let old_role = Role::parse(&current.role)?;
        if current.username == me && old_role == Role::Admin && self.role != Role::Admin {
            return Err(WebError::form(
                "role",
                "you cannot take your own admin role away",
            ));
        }
        let mut c = Changes {
            update: UserUpdate::default(),
            role: None,
            fields: Vec::new(),
        };
        if self.role != old_role {
            c.update.role = Some(self.role.as_str().to_string());
            c.role = Some((old_role, self.role));
        }
        let name = self
            .display_name
            .clone()
            .unwrap_or_else(|| current.username.clone());
        if name != current.display_name {
            c.update.display_name = Some(name);
            c.fields.push("display_name");
        }
        if self.agent_id != current.agent_id.clone().filter(|a| !a.is_empty()) {
            c.update.agent_id = Some(self.agent_id.clone());
            c.fields.push("agent_id");
        }
        if self.teams != current.teams {
            c.update.teams = Some(self.teams.clone());
            c.fields.push("teams");
        }
        Ok(c)
    }
}

/// The "new password" form.
pub fn parse_password(pairs: &[(String, String)]) -> Result<String, WebError> {
    let f = fields(pairs, &["password"])?;
    let pw = get(&f, "password").unwrap_or("").to_string();
    password::check_policy(&pw)?;
    Ok(pw)
}

/// Refuses an admin disabling themselves.
pub fn check_disable(me: &str, target: &str) -> Result<(), WebError> {
    if me == target {
        return Err(WebError::form("username", "you cannot disable yourself"));
    }
    Ok(())
}

/// What was just done, shown above the list after a change (fixed texts: the URL carries
/// only the code and the username).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Added,
    Updated,
    Unchanged,
    Disabled,
    Enabled,
    Password,
}

impl Done {
    pub const ALL: [Done; 6] = [
        Done::Added,
        Done::Updated,
        Done::Unchanged,
        Done::Disabled,
        Done::Enabled,
        Done::Password,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Done::Added => "added",
            Done::Updated => "updated",
            Done::Unchanged => "unchanged",
            Done::Disabled => "disabled",
            Done::Enabled => "enabled",
            Done::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<Done> {
        Done::ALL.into_iter().find(|d| d.code() == s)
    }

    fn text(self, user: &str) -> String {
        match self {
            Done::Added => format!("User {user} added."),
            Done::Updated => format!("User {user} changed; their sessions are ended."),
            Done::Unchanged => format!("Nothing to change for {user}."),
            Done::Disabled => format!("User {user} disabled; their sessions are ended."),
            Done::Enabled => format!("User {user} enabled."),
            Done::Password => format!("Password of {user} changed; their sessions are ended."),
        }
    }

    /// The page to go back to after the change (Post/Redirect/Get).
    pub fn href(self, user: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("done", self.code());
        s.append_pair("user", user);
        format!("{PATH}?{}", s.finish())
    }
}

/// A user's own path, for the per-user forms.
pub fn user_href(username: &str, tail: &str) -> String {
    format!("{PATH}/{}{tail}", path_segment(username))
}

/// What the users page shows.
#[derive(Debug, Clone, Copy)]
pub struct UsersView<'a> {
    pub users: &'a [UserRecord],
    /// The admin looking (their own row has no disable button).
    pub me: &'a str,
    pub done: Option<(Done, &'a str)>,
    pub error: Option<&'a str>,
}

fn role_select(current: Option<&str>) -> Markup {
    html! {
        select name="role" required {
            @for r in [Role::Agent, Role::Supervisor, Role::Admin] {
                option value=(r.as_str()) selected[current == Some(r.as_str())] { (r.as_str()) }
            }
        }
    }
}

fn add_form(csrf: Option<&str>) -> Markup {
    html! {
        form #add-user.card method="post" action=(PATH) {
            h2 { "Add a user" }
            input type="hidden" name="csrf" value=[csrf];
            label { "Username" input name="username" required autocomplete="off"; }
            label { "Display name" input name="display_name"; }
            label { "Role" (role_select(Some("agent"))) }
            label { "Agent id" input name="agent_id" placeholder="as in recordings (agents)"; }
            label { "Teams" input name="teams" placeholder="comma separated (supervisors)"; }
            label { "Initial password" input type="password" name="password" required minlength="8" autocomplete="new-password"; }
            button type="submit" { "Add user" }
        }
    }
}

fn user_row(u: &UserRecord, me: &str, csrf: Option<&str>) -> Markup {
    let csrf_field = html! { input type="hidden" name="csrf" value=[csrf]; };
    html! {
        tr.disabled[u.disabled] {
            td { code { (u.username) } }
            td {
                form.inline method="post" action=(user_href(&u.username, "")) {
                    (csrf_field)
                    input name="display_name" value=(u.display_name) aria-label="Display name";
                    (role_select(Some(&u.role)))
                    input name="agent_id" value=[u.agent_id.as_deref()] placeholder="agent id" aria-label="Agent id";
                    input name="teams" value=(u.teams.join(", ")) placeholder="teams" aria-label="Teams";
                    button type="submit" { "Save" }
                }
            }
            td {
                @if u.disabled { "disabled" } @else { "active" }
                " "
                @if u.username != me {
                    form.inline method="post" action=(user_href(&u.username, if u.disabled { "/enable" } else { "/disable" })) {
                        (csrf_field)
                        button type="submit" { @if u.disabled { "Enable" } @else { "Disable" } }
                    }
                }
            }
            td {
                form.inline method="post" action=(user_href(&u.username, "/password")) {
                    (csrf_field)
                    input type="password" name="password" required minlength="8" autocomplete="new-password" aria-label="New password" placeholder="new password";
                    button type="submit" { "Set" }
                }
            }
            td { (time_tag(u.updated_ms)) }
        }
    }
}

/// The users page.
pub fn users_page(chrome: &Chrome<'_>, v: UsersView<'_>) -> Markup {
    page(
        chrome,
        "Users",
        html! {
            h1 { "Users" }
            @if let Some((d, user)) = v.done { p.notice.ok role="status" { (d.text(user)) } }
            @if let Some(err) = v.error { p.notice.error role="alert" { (err) } }
            (add_form(chrome.csrf))
            table.list.users {
                thead { tr { th { "Username" } th { "Name, role, agent id, teams" } th { "State" } th { "Password" } th { "Changed" } } }
                tbody { @for u in v.users { (user_row(u, v.me, chrome.csrf)) } }
            }
            p.meta { "A change of role, agent id or teams, a new password and disabling end the user's sessions. Every change is in the audit log." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const XSS: &str = "<script>alert(1)</script>";

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn record(name: &str, role: &str) -> UserRecord {
        UserRecord {
            id: 1,
            username: name.into(),
            display_name: name.into(),
            role: role.into(),
            agent_id: Some("201".into()),
            teams: vec![],
            password_hash: "x".into(),
            disabled: false,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn a_new_user_follows_the_access_rules() {
        let u = NewUserForm::parse(&pairs(&[
            ("csrf", "t"),
            ("username", " Sue "),
            ("role", "supervisor"),
            ("teams", "sales, complaints,sales,, "),
            ("agent_id", ""),
            ("password", "long enough"),
            ("display_name", ""),
        ]))
        .unwrap();
        assert_eq!(u.username, "sue");
        assert_eq!(u.display_name, "sue");
        assert_eq!(u.teams, ["sales", "complaints"]);
        assert_eq!(u.agent_id, None);
        for (bad, why) in [
            (
                &[
                    ("username", XSS),
                    ("role", "admin"),
                    ("password", "long enough"),
                ][..],
                "username",
            ),
            (
                &[
                    ("username", "a"),
                    ("role", "root"),
                    ("password", "long enough"),
                ],
                "role",
            ),
            (
                &[
                    ("username", "a"),
                    ("role", "agent"),
                    ("password", "long enough"),
                ],
                "agent id",
            ),
            (
                &[
                    ("username", "a"),
                    ("role", "supervisor"),
                    ("password", "long enough"),
                ],
                "team",
            ),
            (
                &[("username", "a"), ("role", "admin"), ("password", "short")],
                "password",
            ),
            (&[("username", "a"), ("role", "admin")], "password"),
            (
                &[
                    ("username", "a"),
                    ("role", "admin"),
                    ("password", "long enough"),
                    ("is_admin", "1"),
                ],
                "field",
            ),
            (
                &[
                    ("username", "a"),
                    ("username", "b"),
                    ("role", "admin"),
                    ("password", "long enough"),
                ],
                "more than once",
            ),
        ] {
            let e = NewUserForm::parse(&pairs(bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_change_says_what_it_changes_and_keeps_an_admin_in() {
        let cur = record("anna", "agent");
        let f = ChangeForm::parse(&pairs(&[
            ("role", "supervisor"),
            ("teams", "sales"),
            ("agent_id", "201"),
            ("display_name", "Anna B"),
        ]))
        .unwrap();
        let c = f.changes(&cur, "root").unwrap();
        assert_eq!(c.role, Some((Role::Agent, Role::Supervisor)));
        assert_eq!(c.fields, ["display_name", "teams"]);
        assert_eq!(c.update.role.as_deref(), Some("supervisor"));
        assert_eq!(c.update.agent_id, None, "unchanged");
        let same = ChangeForm::parse(&pairs(&[
            ("role", "agent"),
            ("agent_id", "201"),
            ("display_name", "anna"),
        ]))
        .unwrap()
        .changes(&cur, "root")
        .unwrap();
        assert!(same.is_empty(), "{same:?}");
        let root = record("root", "admin");
        let demote = ChangeForm::parse(&pairs(&[("role", "agent"), ("agent_id", "1")])).unwrap();
        assert!(demote.changes(&root, "root").is_err());
        assert!(demote.changes(&root, "other-admin").is_ok());
        assert!(check_disable("root", "root").is_err());
        assert!(check_disable("root", "anna").is_ok());
        assert!(parse_password(&pairs(&[("password", "1234567")])).is_err());
        assert_eq!(
            parse_password(&pairs(&[("password", "12345678")])).unwrap(),
            "12345678"
        );
    }

    #[test]
    fn the_users_page_escapes_every_field() {
        let mut u = record("x", "agent");
        u.display_name = XSS.into();
        u.agent_id = Some(XSS.into());
        u.teams = vec![XSS.into()];
        u.role = XSS.into();
        let html = users_page(
            &Chrome::anonymous(),
            UsersView {
                users: &[u],
                me: "root",
                done: Some((Done::Added, XSS)),
                error: Some(XSS),
            },
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains(r#"action="/users/x/disable""#));
        assert!(html.contains(r#"action="/users/x/password""#));
        assert_eq!(Done::Added.href("a b"), "/users?done=added&user=a+b");
        assert_eq!(Done::parse("password"), Some(Done::Password));
        assert_eq!(Done::parse("<x>"), None);
    }
}
