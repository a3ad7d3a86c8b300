//! Access control through the real binary: logins, sessions, CSRF, throttling, API tokens,
//! what each role sees of the recordings API, the control API's token, and the audit log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use store::{Catalog, Entry, State};
use tapir_tests::{Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

struct Site {
    t: Tapir,
}

impl Site {
    fn cli(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(self.t.config_path())
            .args(args)
            .current_dir(self.t.dir.path())
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
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tapir {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn get(&self, path: &str, auth: &[(&str, &str)]) -> Resp {
        request(self.t.http, "GET", path, auth, "")
    }

    /// Logs in; the session cookie (as a `Cookie` header value) and the CSRF token.
    fn login(&self, user: &str, password: &str) -> (String, String) {
        let r = self.login_raw(user, password, &[]);
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        assert!(set.starts_with("tapir_session="), "{set}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let me = self.get("/api/v1/session", &[("Cookie", &cookie)]);
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(me.json()["username"], user);
        let csrf = me.json()["csrf"].as_str().unwrap().to_string();
        (cookie, csrf)
    }

    fn login_raw(&self, user: &str, password: &str, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        request(
            self.t.http,
            "POST",
            "/login",
            &h,
            &format!("username={user}&password={password}&next=/recordings"),
        )
    }

    /// The contact ids a search shows to this credential.
    fn visible(&self, auth: &[(&str, &str)], query: &str) -> Vec<String> {
        let r = self.get(&format!("/api/v1/recordings{query}"), auth);
        assert_eq!(r.status, 200, "{}", r.body);
        let mut ids: Vec<String> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["contact_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

fn ck(cookie: &str) -> [(&'static str, &str); 1] {
    [("Cookie", cookie)]
}

fn entry(id: &str, agent: Option<&str>, team: Option<&str>) -> Entry {
    let meta = recorder::RecordingMetadata {
        contact_id: id.into(),
        call_id_customer: Some(format!("{id}-a@carrier")),
        from: "+4930111".into(),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: 1_700_000_000_000,
        duration_ms: 60_000,
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "node-x", State::Finished, 0).unwrap();
    e.agent = agent.map(str::to_string);
    e.team = team.map(str::to_string);
    e
}

#[test]
fn roles_sessions_tokens_csrf_throttling_and_the_audit_log() {
    let t = Tapir::start(
        BIN,
        "[[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:9\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n",
        TapirOptions {
            extra: "[access]\nenabled = true\n".into(),
            ..Default::default()
        },
    );
    let site = Site { t };
    let pw = "long enough pw";
    for args in [
        &[
            "user",
            "add",
            "anna",
            "--role",
            "agent",
            "--agent-id",
            "anna",
        ][..],
        &[
            "user",
            "add",
            "bert",
            "--role",
            "agent",
            "--agent-id",
            "bert",
        ],
        &[
            "user",
            "add",
            "sue",
            "--role",
            "supervisor",
            "--team",
            "complaints",
        ],
        &["user", "add", "root", "--role", "admin"],
    ] {
        let mut a = args.to_vec();
        a.push("--password-stdin");
        site.cli(&a, &format!("{pw}\n"));
    }
    let ivr = site.cli(&["token", "add", "ivr", "--scope", "control"], "");
    let crm = site.cli(&["token", "add", "crm", "--scope", "read"], "");
    let (ivr, crm) = (
        format!("Bearer {}", ivr.trim()),
        format!("Bearer {}", crm.trim()),
    );
    // Recordings of anna, of bert (team complaints) and of nobody, in the server's catalog.
    let db = site.t.dir.path().join("tapir.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let c = Catalog::open(db.to_str().unwrap()).await.unwrap();
            c.upsert_many(&[
                entry("a1", Some("anna"), Some("sales")),
                entry("b1", Some("bert"), Some("complaints")),
                entry("n1", None, None),
            ])
            .await
            .unwrap();
            c.close().await;
        });

    // Without a credential: 401 for the API, the control API and the session; /metrics and
    // /health stay open.
    for path in [
        "/api/v1/recordings",
        "/api/v1/recordings/a1",
        "/api/v1/session",
    ] {
        let r = site.get(path, &[]);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(site.get("/health", &[]).status, 200);
    assert_eq!(site.get("/metrics", &[]).status, 200);
    let forged = "tapir_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        site.get("/api/v1/recordings", &[("Cookie", forged)]).status,
        401
    );
    let bad_token = "Bearer tapir_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        site.get("/api/v1/recordings", &[("Authorization", bad_token)])
            .status,
        401
    );

    // The control API: a token with the control scope only.
    let hangup = |auth: &[(&str, &str)]| request(site.t.http, "POST", "/calls/77/hangup", auth, "");
    assert_eq!(hangup(&[]).status, 401);
    assert_eq!(hangup(&[("Authorization", &crm)]).status, 403);
    assert_eq!(
        hangup(&[("Authorization", &ivr)]).status,
        404,
        "through to the engine, which knows no call 77"
    );
    assert_eq!(site.get("/calls", &[("Authorization", &ivr)]).status, 200);
    assert_eq!(
        site.get("/api/v1/recordings", &[("Authorization", &ivr)])
            .json()["items"],
        serde_json::json!([]),
        "a control token sees no recording"
    );

    // Logins: a wrong password and an unknown user get the same 401.
    let wrong = site.login_raw("anna", "not the password", &[]);
    let unknown = site.login_raw("nobody", pw, &[]);
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.header("set-cookie").is_none());
    let foreign = site.login_raw("anna", pw, &[("Origin", "http://evil.example")]);
    assert_eq!(foreign.status, 403, "a login from another site's page");
    let r = site.login_raw("anna", pw, &[]);
    assert_eq!(r.header("location"), Some("/recordings"));
    let (anna, anna_csrf) = site.login("anna", pw);
    let (sue, _) = site.login("sue", pw);
    let (root, root_csrf) = site.login("root", pw);

    // What each sees.
    assert_eq!(site.visible(&ck(&anna), ""), ["a1"]);
    assert_eq!(
        site.visible(&ck(&anna), "?agent=bert"),
        Vec::<String>::new()
    );
    assert_eq!(
        site.visible(&ck(&anna), "?team=complaints"),
        Vec::<String>::new()
    );
    assert_eq!(
        site.visible(&ck(&anna), "?agent=ghost"),
        Vec::<String>::new()
    );
    assert_eq!(site.visible(&ck(&sue), ""), ["b1"]);
    assert_eq!(site.visible(&ck(&root), ""), ["a1", "b1", "n1"]);
    assert_eq!(
        site.visible(&[("Authorization", crm.as_str())], ""),
        ["a1", "b1", "n1"]
    );
    // By id, Call-ID, audio, peaks: bert's call does not exist for anna.
    for path in [
        "/api/v1/recordings/b1",
        "/api/v1/recordings/b1/audio",
        "/api/v1/recordings/b1/peaks",
        "/api/v1/recordings/n1",
        "/api/v1/calls/b1-a@carrier/recording",
    ] {
        let r = site.get(path, &ck(&anna));
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    assert_eq!(site.get("/api/v1/recordings/a1", &ck(&anna)).status, 200);
    assert_eq!(
        site.get("/api/v1/calls/a1-a@carrier/recording", &ck(&anna))
            .status,
        200
    );
    assert_eq!(site.get("/api/v1/recordings/b1", &ck(&sue)).status, 200);

    // State changes: the CSRF token, then the role.
    let del = |c: &str, csrf: Option<&str>, origin: Option<&str>, id: &str| {
        let mut hs = vec![("Cookie", c)];
        if let Some(t) = csrf {
            hs.push(("X-CSRF-Token", t));
        }
        if let Some(o) = origin {
            hs.push(("Origin", o));
        }
        request(
            site.t.http,
            "DELETE",
            &format!("/api/v1/recordings/{id}"),
            &hs,
            "",
        )
    };
    let r = del(&anna, None, None, "a1");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    assert_eq!(
        del(&anna, Some(&root_csrf), None, "a1").status,
        403,
        "another session's token"
    );
    let r = del(&anna, Some(&anna_csrf), None, "a1");
    assert_eq!(r.status, 403, "an agent may not delete");
    assert!(r.body.contains("not allowed"), "{}", r.body);
    let own = format!("http://{}", site.t.http);
    assert_eq!(
        del(&root, Some(&root_csrf), Some("http://evil.example"), "n1").status,
        403
    );
    assert_eq!(del(&root, Some(&root_csrf), Some(&own), "n1").status, 204);

    // Logout ends the session.
    let r = request(
        site.t.http,
        "POST",
        "/logout",
        &[("Cookie", &anna), ("X-CSRF-Token", &anna_csrf)],
        "",
    );
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(site.get("/api/v1/recordings", &ck(&anna)).status, 401);

    // A disabled user's session closes at once.
    let (bert, _) = site.login("bert", pw);
    assert_eq!(site.get("/api/v1/recordings", &ck(&bert)).status, 200);
    site.cli(&["user", "disable", "bert"], "");
    assert_eq!(site.get("/api/v1/recordings", &ck(&bert)).status, 401);
    assert_eq!(site.login_raw("bert", pw, &[]).status, 401);

    // Five failures for a username, then 429 with Retry-After, even with the right password.
    for _ in 0..5 {
        assert_eq!(site.login_raw("sue", "wrong wrong", &[]).status, 401);
    }
    let r = site.login_raw("sue", pw, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((800..=900).contains(&retry), "{retry}");

    // Every action left its entry, and the chain holds.
    let jsonl = site.cli(&["audit", "export"], "");
    let entries: Vec<_> = jsonl
        .lines()
        .map(|l| access::audit::parse_json_line(l).unwrap())
        .collect();
    access::audit::verify_chain(&entries).unwrap();
    let has = |actor: &str, action: &str, target: Option<&str>| {
        entries.iter().any(|e| {
            e.actor == actor
                && e.action == action
                && (target.is_none() || e.target.as_deref() == target)
        })
    };
    assert!(has("anna", "login", None));
    assert!(has("anna", "login_failed", None));
    assert!(has("nobody", "login_failed", None));
    assert!(has("sue", "login_failed", None));
    assert!(has("anna", "search", None));
    assert!(has("anna", "view", Some("a1")));
    assert!(has("root", "delete", Some("n1")));
    assert!(has("anna", "logout", None));
    assert!(has("token:ivr", "control", Some("/calls/77/hangup")));
    assert!(has("token:crm", "search", None));
    assert!(has("cli", "user_disable", Some("bert")));
    let throttled = entries
        .iter()
        .find(|e| e.action == "login_failed" && e.detail["reason"] == "throttled")
        .expect("the throttled login");
    assert_eq!(throttled.from.as_deref(), Some("127.0.0.1"));
    assert!(!jsonl.contains(pw), "no password in the audit log");
    let out = site.cli(&["audit", "verify"], "");
    assert!(out.contains("audit log intact"), "{out}");
    assert!(!site.t.log().contains(pw), "no password in the log");
}
