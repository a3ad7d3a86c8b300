//! The access-control command line through the real binary: `tapir user`, `tapir token` and
//! `tapir audit` on a catalog named by the configuration file, checked in the catalog itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use store::Catalog;

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[catalog]\nurl = \"sqlite://{}\"\n\n[[routes]]\nname = \"r\"\n\
             target = \"sip:127.0.0.1:5070\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n",
            dir.path().join("tapir.db").display()
        );
        std::fs::write(dir.path().join("tapir.toml"), cfg).unwrap();
        Site { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("tapir.toml")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("tapir.db")
    }

    /// Runs `tapir -c <config> args...` with `stdin` as standard input.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("TAPIR_CATALOG__URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and expects exit code `code`; returns stdout and stderr.
    fn expect(&self, code: i32, args: &[&str], stdin: &str) -> (String, String) {
        let out = self.run(args, stdin);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "tapir {args:?}\nstdout: {o}\nstderr: {e}"
        );
        (o, e)
    }

    fn catalog<T>(&self, f: impl AsyncFnOnce(Catalog) -> T) -> T {
        catalog_at(&self.db(), f)
    }
}

fn catalog_at<T>(db: &Path, f: impl AsyncFnOnce(Catalog) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Catalog::open(db.to_str().unwrap()).await.unwrap();
        let r = f(c.clone()).await;
        c.close().await;
        r
    })
}

/// The rows of `user list` as (username, role, agent, teams, state).
fn listed(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(5).map(str::to_string).collect())
        .collect()
}

#[test]
fn users_are_added_listed_stored_with_argon2_and_disabled() {
    let s = Site::new();
    let (out, _) = s.expect(
        0,
        &[
            "user",
            "add",
            "Anna",
            "--role",
            "agent",
            "--agent-id",
            "201",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(out.contains("user anna added (agent)"), "{out}");
    s.expect(
        0,
        &[
            "user",
            "add",
            "bert",
            "--role",
            "supervisor",
            "--team",
            "complaints",
            "--team",
            "sales",
            "--display-name",
            "Bert B.",
            "--password-stdin",
        ],
        "another good one\n",
    );
    let (out, _) = s.expect(0, &["user", "list"], "");
    assert_eq!(
        listed(&out),
        [
            ["anna", "agent", "201", "-", "active"],
            ["bert", "supervisor", "-", "complaints,sales", "active"]
        ]
    );
    assert!(out.contains("Bert B."), "{out}");

    // In the catalog: an argon2id PHC string that verifies the password, never the password.
    let anna = s.catalog(async |c| c.user_by_name("anna").await.unwrap().unwrap());
    assert!(
        anna.password_hash.starts_with("$argon2id$v=19$"),
        "{}",
        anna.password_hash
    );
    assert!(!anna.password_hash.contains("correct horse"));
    assert!(access::password::verify_password(
        "correct horse battery",
        &anna.password_hash
    ));
    assert_eq!(anna.agent_id.as_deref(), Some("201"));

    // A new password replaces the hash.
    s.expect(
        0,
        &["user", "passwd", "anna", "--password-stdin"],
        "a new password\n",
    );
    let after = s.catalog(async |c| c.user_by_name("anna").await.unwrap().unwrap());
    assert!(access::password::verify_password(
        "a new password",
        &after.password_hash
    ));
    assert!(!access::password::verify_password(
        "correct horse battery",
        &after.password_hash
    ));

    // Disable, then enable.
    let (out, _) = s.expect(0, &["user", "disable", "bert"], "");
    assert!(out.contains("user bert disabled"), "{out}");
    let (out, _) = s.expect(0, &["user", "list"], "");
    assert_eq!(listed(&out)[1][4], "disabled");
    assert!(s.catalog(async |c| c.user_by_name("bert").await.unwrap().unwrap().disabled));
    s.expect(0, &["user", "enable", "bert"], "");
    let (out, _) = s.expect(0, &["user", "list"], "");
    assert_eq!(listed(&out)[1][4], "active");
}

#[test]
fn wrong_requests_are_clear_errors_with_exit_2() {
    let s = Site::new();
    let (_, err) = s.expect(
        2,
        &["user", "add", "x", "--role", "boss", "--password-stdin"],
        "long enough pw\n",
    );
    assert!(err.contains("invalid value 'boss'"), "{err}");
    assert!(err.contains("agent, supervisor, admin"), "{err}");
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["user", "add", "a", "--role", "agent", "--password-stdin"],
            "long enough pw\n",
            "needs an agent id",
        ),
        (
            &[
                "user",
                "add",
                "s",
                "--role",
                "supervisor",
                "--password-stdin",
            ],
            "long enough pw\n",
            "needs at least one team",
        ),
        (
            &[
                "user",
                "add",
                "bad name",
                "--role",
                "admin",
                "--password-stdin",
            ],
            "long enough pw\n",
            "invalid username",
        ),
        (
            &["user", "add", "cli", "--role", "admin", "--password-stdin"],
            "long enough pw\n",
            "reserved",
        ),
        (
            &["user", "add", "root", "--role", "admin", "--password-stdin"],
            "short\n",
            "shorter than 8",
        ),
        (&["user", "disable", "nobody"], "", "no user \"nobody\""),
        (
            &["user", "passwd", "nobody", "--password-stdin"],
            "long enough pw\n",
            "no user",
        ),
    ];
    for (args, stdin, want) in cases {
        let (_, err) = s.expect(2, args, stdin);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Without a terminal and without --password-stdin nothing is asked and nothing added.
    let (_, err) = s.expect(2, &["user", "add", "root", "--role", "admin"], "");
    assert!(err.contains("--password-stdin"), "{err}");
    s.expect(
        0,
        &["user", "add", "root", "--role", "admin", "--password-stdin"],
        "long enough pw\n",
    );
    let (_, err) = s.expect(
        2,
        &["user", "add", "ROOT", "--role", "admin", "--password-stdin"],
        "long enough pw\n",
    );
    assert!(err.contains("exists already"), "{err}");
    let (out, _) = s.expect(0, &["user", "list"], "");
    assert_eq!(listed(&out).len(), 1, "{out}");
    // A catalog URL that is not one is a configuration error (2); a catalog that cannot be
    // reached is exit 1, naming it with its password masked.
    let write = |url: &str| {
        std::fs::write(
            s.config(),
            format!(
                "[catalog]\nurl = \"{url}\"\n\n[[routes]]\nname = \"r\"\n\
                 target = \"sip:127.0.0.1:5070\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n"
            ),
        )
        .unwrap()
    };
    write("mysql://h/db");
    let (_, err) = s.expect(2, &["user", "list"], "");
    assert!(err.contains("mysql://h/db"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write(&format!("postgres://tapir:hunter2@127.0.0.1:{port}/tapir"));
    let (_, err) = s.expect(1, &["user", "list"], "");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_token_is_printed_once_and_only_its_hash_is_kept() {
    let s = Site::new();
    let (out, err) = s.expect(
        0,
        &[
            "token", "add", "ivr", "--scope", "control", "--scope", "read",
        ],
        "",
    );
    let token = out.trim().to_string();
    assert!(access::token::well_formed(&token), "{token}");
    assert!(err.contains("shown once"), "{err}");
    let rec = s.catalog(async |c| {
        let hash = access::session::token_hash(&token);
        c.token_by_hash(&hash).await.unwrap()
    });
    let rec = rec.expect("found by the hash of what was printed");
    assert_eq!(
        (rec.name.as_str(), rec.scopes.as_str()),
        ("ivr", "read control")
    );
    assert_ne!(rec.token_hash, token);
    let (list, _) = s.expect(0, &["token", "list"], "");
    assert!(
        list.contains("ivr") && list.contains("read control"),
        "{list}"
    );
    assert!(!list.contains(&token[6..]), "the list never shows a token");
    let db = std::fs::read(s.db()).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is nowhere in the catalog file"
    );
    let (_, err) = s.expect(2, &["token", "add", "ivr", "--scope", "read"], "");
    assert!(err.contains("exists already"), "{err}");
    let (_, err) = s.expect(2, &["token", "add", "x"], "");
    assert!(err.contains("--scope"), "{err}");
    s.expect(0, &["token", "revoke", "ivr"], "");
    let gone = s.catalog(async |c| {
        c.token_by_hash(&access::session::token_hash(&token))
            .await
            .unwrap()
    });
    assert!(gone.is_none(), "a revoked token opens nothing");
    let (list, _) = s.expect(0, &["token", "list"], "");
    assert!(list.contains("revoked"), "{list}");
    s.expect(2, &["token", "revoke", "ivr"], "");
}

#[test]
fn every_command_is_audited_and_a_tampered_log_fails_verification() {
    let s = Site::new();
    s.expect(
        0,
        &["user", "add", "anna", "--role", "admin", "--password-stdin"],
        "long enough pw\n",
    );
    s.expect(
        0,
        &["user", "passwd", "anna", "--password-stdin"],
        "other long pw\n",
    );
    s.expect(0, &["user", "disable", "anna"], "");
    s.expect(0, &["token", "add", "crm", "--scope", "read"], "");
    s.expect(0, &["token", "revoke", "crm"], "");
    let (out, _) = s.expect(0, &["audit", "verify"], "");
    assert!(out.contains("audit log intact: 5 entries"), "{out}");

    let (jsonl, _) = s.expect(0, &["audit", "export"], "");
    let entries: Vec<_> = jsonl
        .lines()
        .map(|l| access::audit::parse_json_line(l).unwrap())
        .collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user_add",
            "passwd",
            "user_disable",
            "token_add",
            "token_revoke",
            "audit_export"
        ]
    );
    assert!(entries.iter().all(|e| e.actor == "cli"));
    assert_eq!(entries[0].target.as_deref(), Some("anna"));
    assert_eq!(entries[0].detail["role"], "admin");
    access::audit::verify_chain(&entries).expect("the export verifies on its own");
    assert!(!jsonl.contains("long enough pw"), "no password in the log");

    let (csv, _) = s.expect(
        0,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--action",
            "token_add",
        ],
        "",
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], access::audit::CSV_HEADER);
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].starts_with("4,") && lines[1].contains(",token_add,crm,"),
        "{csv}"
    );
    s.expect(2, &["audit", "export", "--action", "sudo"], "");

    // An entry edited behind tapir's back (its guard dropped first) breaks the chain.
    let url = format!("sqlite://{}", s.db().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "DROP TRIGGER audit_log_no_update; \
             UPDATE audit_log SET target = 'bert' WHERE seq = 3",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    });
    let (_, err) = s.expect(1, &["audit", "verify"], "");
    assert!(err.contains("broken at seq 3"), "{err}");
}
