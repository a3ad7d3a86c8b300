//! The command line of access control: `tapir user ...`, `tapir token ...`, `tapir audit ...`.
//!
//! Each command opens the catalog named by the same configuration as the server
//! (`[catalog] url`), does one thing and writes its audit entry (actor `cli`, with the
//! operating-system user in the detail). The decisions (username rules, password policy,
//! hashing, token making, export formats) are the `access` crate's; this only reads
//! arguments, terminals and files.
//!
//! Exit codes: 0 done; 1 the catalog failed (unreachable, a broken audit chain); 2 the
//! request was wrong (bad arguments, unknown user, a name taken, a password refused).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use access::audit::{self, Action, CLI_ACTOR};
use access::user::{check_role_fields, normalize_username};
use access::{password, token, Role, Scope, Scopes};
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use store::{AuditOrder, AuditQuery, Catalog, ChainVerdict, NewUser, StoreError};

use crate::config::Config;

/// `tapir user ...`
#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Add a user of the review page.
    Add {
        username: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The agent id as it appears in recordings (needed for role agent).
        #[arg(long)]
        agent_id: Option<String>,
        /// A team the user supervises (repeat for several; needed for role supervisor).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// The name shown on the page (the username when absent).
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from the first line of standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (ends the user's sessions).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (ends the user's sessions; the user cannot log in).
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
    /// List the users.
    List,
}

/// `tapir token ...`
#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Make an API token; it is printed once and only its hash is kept.
    Add {
        name: String,
        /// What the token may do (repeat for several).
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<ScopeArg>,
    },
    /// List the tokens (never the tokens themselves).
    List,
    /// Revoke a token.
    Revoke { name: String },
}

/// `tapir audit ...`
#[derive(Subcommand, Debug, Clone)]
pub enum AuditCommand {
    /// Check the hash chain of the whole audit log.
    Verify,
    /// Write the audit log to standard output, oldest first.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// From this time on (unix milliseconds, included).
        #[arg(long)]
        from_ms: Option<i64>,
        /// Before this time (unix milliseconds, excluded).
        #[arg(long)]
        to_ms: Option<i64>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum RoleArg {
    Agent,
    Supervisor,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Agent => Role::Agent,
            RoleArg::Supervisor => Role::Supervisor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum ScopeArg {
    Read,
    Control,
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Read => Scope::Read,
            ScopeArg::Control => Scope::Control,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// One of the commands above.
pub enum Task<'a> {
    User(&'a UserCommand),
    Token(&'a TokenCommand),
    Audit(&'a AuditCommand),
}

/// Why a command failed, and so its exit code.
enum Failure {
    /// The request was wrong: exit 2.
    Usage(String),
    /// The catalog or the system failed: exit 1.
    System(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Exists { .. } | StoreError::BadQuery { .. } => {
                Failure::Usage(e.to_string())
            }
            e => Failure::System(e.to_string()),
        }
    }
}

impl From<access::AccessError> for Failure {
    fn from(e: access::AccessError) -> Failure {
        match e {
            access::AccessError::Random(_) | access::AccessError::Hash(_) => {
                Failure::System(e.to_string())
            }
            e => Failure::Usage(e.to_string()),
        }
    }
}

type Done = Result<(), Failure>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs a command with the configuration at `config` (or the embedded defaults).
pub fn run(config: Option<&Path>, task: Task<'_>) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TAPIR_"))
        .collect();
    let cfg = match Config::load(config, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tapir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        let cat = Catalog::open(&cfg.catalog.url)
            .await
            .map_err(|e| Failure::System(e.to_string()))?;
        let r = match task {
            Task::User(c) => user(&cat, c).await,
            Task::Token(c) => token_cmd(&cat, c).await,
            Task::Audit(c) => audit_cmd(&cat, c).await,
        };
        cat.close().await;
        r
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("tapir: {m}");
            ExitCode::from(2)
        }
        Err(Failure::System(m)) => {
            eprintln!("tapir: {m}");
            ExitCode::FAILURE
        }
    }
}

/// Who ran the command, for the audit detail.
fn os_user() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

async fn audited(
    cat: &Catalog,
    action: Action,
    target: &str,
    mut detail: serde_json::Value,
) -> Done {
    if let (Some(u), Some(obj)) = (os_user(), detail.as_object_mut()) {
        obj.insert("os_user".into(), json!(u));
    }
    let e = audit::entry(now_ms(), CLI_ACTOR, action, Some(target), detail, None);
    cat.audit_append(&e).await?;
    Ok(())
}

/// Turns the terminal's echo off while alive.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn new() -> NoEcho {
        // SAFETY: tcgetattr and tcsetattr only read and write the termios struct given.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let old = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return NoEcho(None);
            }
            NoEcho(Some(old))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &old);
            }
        }
    }
}

fn read_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::System(format!("reading the password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The new password: the first line of standard input, or asked twice on the terminal.
fn new_password(username: &str, from_stdin: bool) -> Result<String, Failure> {
    let pw = if from_stdin {
        read_line()?
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "no terminal to ask the password on: pass it with --password-stdin".into(),
            ));
        }
        let _echo = NoEcho::new();
        eprint!("Password for {username}: ");
        let _ = std::io::stderr().flush();
        let first = read_line()?;
        eprint!("Again: ");
        let _ = std::io::stderr().flush();
        if read_line()? != first {
            return Err(Failure::Usage("the passwords differ".into()));
        }
        first
    };
    password::check_policy(&pw)?;
    Ok(pw)
}

async fn user(cat: &Catalog, cmd: &UserCommand) -> Done {
    match cmd {
        UserCommand::Add {
            username,
            role,
            agent_id,
            teams,
            display_name,
            password_stdin,
        } => {
            let username = normalize_username(username)?;
            let role = Role::from(*role);
            let agent_id = agent_id.clone().filter(|a| !a.trim().is_empty());
            let teams: Vec<String> = teams.iter().filter(|t| !t.is_empty()).cloned().collect();
            check_role_fields(role, agent_id.as_deref(), &teams)?;
            if cat.user_by_name(&username).await?.is_some() {
                return Err(Failure::Usage(format!("user {username:?} exists already")));
            }
            let pw = new_password(&username, *password_stdin)?;
            let hash = password::hash_password(&pw)?;
            cat.add_user(
                &NewUser {
                    username: username.clone(),
                    display_name: display_name.clone().unwrap_or_else(|| username.clone()),
                    role: role.as_str().into(),
                    agent_id: agent_id.clone(),
                    teams: teams.clone(),
                    password_hash: hash,
                },
                now_ms(),
            )
            .await?;
            audited(
                cat,
                Action::UserAdd,
                &username,
                json!({"role": role.as_str(), "agent_id": agent_id, "teams": teams}),
            )
            .await?;
            println!("user {username} added ({role})");
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let username = normalize_username(username)?;
            if cat.user_by_name(&username).await?.is_none() {
                return Err(no_user(&username));
            }
            let pw = new_password(&username, *password_stdin)?;
            let hash = password::hash_password(&pw)?;
            if !cat.set_password(&username, &hash, now_ms()).await? {
                return Err(no_user(&username));
            }
            audited(cat, Action::Passwd, &username, json!({})).await?;
            println!("password of {username} changed; its sessions are ended");
        }
        UserCommand::Disable { username } | UserCommand::Enable { username } => {
            let disable = matches!(cmd, UserCommand::Disable { .. });
            let username = normalize_username(username)?;
            if !cat.set_user_disabled(&username, disable, now_ms()).await? {
                return Err(no_user(&username));
            }
            let action = if disable {
                Action::UserDisable
            } else {
                Action::UserEnable
            };
            audited(cat, action, &username, json!({})).await?;
            println!(
                "user {username} {}",
                if disable { "disabled" } else { "enabled" }
            );
        }
        UserCommand::List => {
            let users = cat.list_users().await?;
            let rows: Vec<[String; 6]> = users
                .iter()
                .map(|u| {
                    [
                        u.username.clone(),
                        u.role.clone(),
                        u.agent_id.clone().unwrap_or_else(|| "-".into()),
                        if u.teams.is_empty() {
                            "-".into()
                        } else {
                            u.teams.join(",")
                        },
                        if u.disabled { "disabled" } else { "active" }.into(),
                        u.display_name.clone(),
                    ]
                })
                .collect();
            print_table(
                ["USERNAME", "ROLE", "AGENT", "TEAMS", "STATE", "NAME"],
                &rows,
            );
        }
    }
    Ok(())
}

fn no_user(username: &str) -> Failure {
    Failure::Usage(format!("no user {username:?}"))
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

async fn token_cmd(cat: &Catalog, cmd: &TokenCommand) -> Done {
    match cmd {
        TokenCommand::Add { name, scopes } => {
            let scopes = Scopes::of(&scopes.iter().map(|s| Scope::from(*s)).collect::<Vec<_>>());
            let issued = token::issue(name, scopes, CLI_ACTOR)?;
            cat.add_token(&issued.record, now_ms()).await?;
            audited(
                cat,
                Action::TokenAdd,
                &issued.record.name,
                json!({"scopes": issued.record.scopes}),
            )
            .await?;
            eprintln!(
                "token {} ({}) made; it is shown once, keep it now:",
                issued.record.name, issued.record.scopes
            );
            println!("{}", issued.token);
        }
        TokenCommand::List => {
            let rows: Vec<[String; 4]> = cat
                .list_tokens()
                .await?
                .into_iter()
                .map(|t| {
                    [
                        t.name,
                        t.scopes,
                        if t.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "live"
                        }
                        .into(),
                        t.last_used_ms
                            .map_or_else(|| "never".into(), |ms| ms.to_string()),
                    ]
                })
                .collect();
            print_table(["NAME", "SCOPES", "STATE", "LAST USED (ms)"], &rows);
        }
        TokenCommand::Revoke { name } => {
            let name = normalize_username(name)?;
            if !cat.revoke_token(&name, now_ms()).await? {
                return Err(Failure::Usage(format!("no live token {name:?}")));
            }
            audited(cat, Action::TokenRevoke, &name, json!({})).await?;
            println!("token {name} revoked");
        }
    }
    Ok(())
}

async fn audit_cmd(cat: &Catalog, cmd: &AuditCommand) -> Done {
    match cmd {
        AuditCommand::Verify => match cat.audit_verify().await? {
            ChainVerdict::Intact { entries, head_hash } => {
                println!("audit log intact: {entries} entries, head {head_hash}");
            }
            ChainVerdict::Broken(b) => return Err(Failure::System(b.to_string())),
        },
        AuditCommand::Export {
            format,
            actor,
            action,
            from_ms,
            to_ms,
        } => {
            if let Some(a) = action {
                if Action::parse(a).is_none() {
                    return Err(Failure::Usage(format!("unknown audit action {a:?}")));
                }
            }
            let mut q = AuditQuery {
                actor: actor.clone(),
                action: action.clone(),
                from_ms: *from_ms,
                to_ms: *to_ms,
                order: AuditOrder::OldestFirst,
                limit: store::MAX_LIMIT,
                ..Default::default()
            };
            // The export is itself audited, before it runs: it shows in what it exports.
            audited(
                cat,
                Action::AuditExport,
                "audit_log",
                json!({"format": format!("{format:?}").to_lowercase(), "actor": actor,
                       "action": action, "from_ms": from_ms, "to_ms": to_ms}),
            )
            .await?;
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            let io = |e: std::io::Error| Failure::System(format!("writing the export: {e}"));
            if *format == ExportFormat::Csv {
                writeln!(out, "{}", audit::CSV_HEADER).map_err(io)?;
            }
            loop {
                let page = cat.audit_list(&q).await?;
                for e in &page.entries {
                    let line = match format {
                        ExportFormat::Jsonl => audit::json_line(e),
                        ExportFormat::Csv => audit::csv_row(e),
                    };
                    writeln!(out, "{line}").map_err(io)?;
                }
                match page.next {
                    Some(n) => q.cursor = Some(n),
                    None => break,
                }
            }
            out.flush().map_err(io)?;
        }
    }
    Ok(())
}
