//! The review pages through the real binary: what each role sees of the recordings list and
//! of one recording (an id outside the viewer's restriction is the same 404 as one that does
//! not exist, for the page, the audio and the peaks), redirects to the login page without a
//! session, the login page's messages, the admins' pages, user management on the page (CSRF,
//! origin, bad bodies, every change audited and the chain intact), the assets' cache rules
//! and the page metrics.

use std::time::Duration;

use tapir_tests::site::{agent_call, recording_route, Session, Site, PASSWORD};
use tapir_tests::{free_port, parse_metric, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn site() -> (Site, u16) {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &recording_route(callee_port),
        TapirOptions {
            extra: "[access]\nenabled = true\n".into(),
            ..Default::default()
        },
    );
    (
        Site {
            t,
            bin: BIN.to_string(),
        },
        callee_port,
    )
}

/// The recording ids linked from a list page.
fn listed(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"/recordings/") {
        rest = &rest[i + "href=\"/recordings/".len()..];
        let end = rest.find('"').unwrap();
        out.push(rest[..end].to_string());
    }
    out.sort();
    out
}

fn page(site: &Site, path: &str, s: &Session) -> String {
    let r = site.get(path, Some(s));
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{path}"
    );
    r.text()
}

#[test]
fn each_role_sees_its_recordings_and_admins_manage_users_on_the_page() {
    let (site, callee) = site();
    site.add_user("anna", "agent", &["--agent-id", "anna"]);
    site.add_user("bert", "agent", &["--agent-id", "bert"]);
    site.add_user("sue", "supervisor", &["--team", "complaints"]);
    site.add_user("root", "admin", &[]);
    agent_call(&site.t, callee, "anna", "sales", "+4930111", 1500);
    agent_call(&site.t, callee, "bert", "complaints", "+4940222", 1500);
    let root = site.login("root");
    let ids = site.wait_stored(&root, 2, Duration::from_secs(30));
    let (bert_id, anna_id) = (ids[0].clone(), ids[1].clone());

    // No session: every page sends the browser to the login page, and back afterwards.
    for (path, next) in [
        ("/recordings", "%2Frecordings"),
        (&format!("/recordings/{anna_id}") as &str, ""),
        ("/users", "%2Fusers"),
        ("/audit?actor=x", "%2Faudit%3Factor%3Dx"),
    ] {
        let r = site.get(path, None);
        assert_eq!(r.status, 303, "{path}");
        let loc = r.header("location").unwrap();
        assert!(loc.starts_with("/login?next="), "{path}: {loc}");
        if !next.is_empty() {
            assert_eq!(loc, format!("/login?next={next}"), "{path}");
        }
    }
    assert_eq!(site.get("/", None).header("location"), Some("/login"));
    assert_eq!(
        site.get("/", Some(&root)).header("location"),
        Some("/recordings")
    );
    let forged = Session {
        cookie: "tapir_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        csrf: String::new(),
    };
    assert_eq!(site.get("/recordings", Some(&forged)).status, 303);
    // The login page, and its answers to a browser.
    let login = site.get("/login?next=/recordings", None);
    assert_eq!(login.status, 200);
    assert!(!login.text().contains("logged out"));
    assert!(site
        .get("/login?logged_out=1", None)
        .text()
        .contains("You are logged out."));
    assert!(login.text().contains(r#"action="/login""#));
    let wrong = site.login_raw("anna", "not the password", true);
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        wrong.text().contains("Wrong username or password."),
        "{}",
        wrong.text()
    );
    let api_wrong = site.login_raw("anna", "not the password", false);
    assert_eq!(api_wrong.status, 401);
    assert!(api_wrong
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));

    // An agent sees their own recording only, whatever the filters; another's is a 404
    // exactly like an id that does not exist, for the page, the audio and the peaks.
    let anna = site.login("anna");
    assert_eq!(
        listed(&page(&site, "/recordings", &anna)),
        [anna_id.as_str()]
    );
    for q in ["agent=bert", "team=complaints", "agent=ghost", "team=ghost"] {
        let html = page(&site, &format!("/recordings?{q}"), &anna);
        assert!(listed(&html).is_empty(), "{q}");
        assert!(html.contains("No recordings match."), "{q}");
    }
    let own = page(&site, &format!("/recordings/{anna_id}"), &anna);
    assert!(own.contains(&format!("/api/v1/recordings/{anna_id}/peaks")));
    assert!(own.contains("+4930111"));
    let theirs = site.get(&format!("/recordings/{bert_id}"), Some(&anna));
    let nobody = site.get("/recordings/1700000000000-does-not-exist", Some(&anna));
    assert_eq!((theirs.status, nobody.status), (404, 404));
    assert_eq!(theirs.text(), nobody.text(), "a refusal reads like a miss");
    for tail in ["/audio", "/peaks", ""] {
        let r = site.get(&format!("/api/v1/recordings/{bert_id}{tail}"), Some(&anna));
        assert_eq!(r.status, 404, "bert's {tail}: {}", r.text());
    }
    assert_eq!(
        site.get(&format!("/api/v1/recordings/{anna_id}/peaks"), Some(&anna))
            .status,
        200
    );
    for admin_page in ["/users", "/audit", "/audit/export?format=csv"] {
        assert_eq!(
            site.get(admin_page, Some(&anna)).status,
            403,
            "{admin_page}"
        );
    }
    let bad = site.get("/recordings?min_duration=long", Some(&anna));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("min_duration"), "{}", bad.text());

    // A supervisor sees their team; an admin everything.
    let sue = site.login("sue");
    assert_eq!(
        listed(&page(&site, "/recordings", &sue)),
        [bert_id.as_str()]
    );
    assert_eq!(
        site.get(&format!("/recordings/{anna_id}"), Some(&sue))
            .status,
        404
    );
    let mut both = vec![anna_id.clone(), bert_id.clone()];
    both.sort();
    assert_eq!(listed(&page(&site, "/recordings", &root)), both);
    assert_eq!(
        listed(&page(&site, "/recordings?number=%2B4940", &root)),
        [bert_id.as_str()]
    );
    assert_eq!(
        listed(&page(&site, "/recordings?sort=duration_asc&limit=1", &root)).len(),
        1
    );

    // User management: with the CSRF token and from this site only.
    let carl = [
        ("username", "carl"),
        ("display_name", "Carl <b>C</b>"),
        ("role", "agent"),
        ("agent_id", "carl"),
        ("teams", ""),
        ("password", "carls first pw"),
    ];
    let r = site.post_form("/users", &root, None, &carl);
    assert_eq!(r.status, 403, "without the CSRF token: {}", r.text());
    let r = site.post_form("/users", &root, Some(&anna.csrf), &carl);
    assert_eq!(r.status, 403, "another session's token");
    let r = site.post_form("/users", &anna, Some(&anna.csrf), &carl);
    assert_eq!(r.status, 403, "an agent may not");
    let r = tapir_tests::site::request(
        site.t.http,
        "POST",
        "/users",
        &[
            ("Cookie", &root.cookie),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &tapir_tests::site::form(&[("csrf", &root.csrf), ("username", "carl")]),
    );
    assert_eq!(r.status, 403, "a foreign origin");
    assert_eq!(
        site.login_raw("carl", "carls first pw", false).status,
        401,
        "not made"
    );
    let r = site.post_form("/users", &root, Some(&root.csrf), &carl);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/users?done=added&user=carl"));
    let users = page(&site, "/users?done=added&user=carl", &root);
    assert!(users.contains("User carl added."));
    assert!(users.contains("Carl &lt;b&gt;C&lt;/b&gt;"), "escaped");
    let r = site.post_form("/users", &root, Some(&root.csrf), &carl);
    assert_eq!(r.status, 409, "taken");
    let r = site.post_form(
        "/users",
        &root,
        Some(&root.csrf),
        &[
            ("username", "dora"),
            ("role", "agent"),
            ("password", "long enough"),
        ],
    );
    assert_eq!(r.status, 400, "an agent without agent id");
    assert!(r.text().contains("agent id"), "{}", r.text());
    // Bad bodies: not a form, too large.
    let json = tapir_tests::site::request(
        site.t.http,
        "POST",
        "/users",
        &[
            ("Cookie", &root.cookie),
            ("X-CSRF-Token", &root.csrf),
            ("Content-Type", "application/json"),
        ],
        br#"{"username":"eve"}"#,
    );
    assert_eq!(json.status, 400, "{}", json.text());
    let big = "x".repeat(20_000);
    let r = site.post_form("/users", &root, Some(&root.csrf), &[("display_name", &big)]);
    assert_eq!(r.status, 413);

    let carl_s = site.login_with("carl", "carls first pw");
    assert_eq!(
        page(&site, "/recordings", &carl_s)
            .matches("href=\"/recordings/")
            .count(),
        0
    );
    // A role change (audited as such) ends carl's sessions.
    let r = site.post_form(
        "/users/carl",
        &root,
        Some(&root.csrf),
        &[
            ("display_name", "Carl"),
            ("role", "supervisor"),
            ("agent_id", "carl"),
            ("teams", "sales, complaints"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        site.get("/recordings", Some(&carl_s)).status,
        303,
        "session ended"
    );
    let carl_s = site.login_with("carl", "carls first pw");
    assert_eq!(
        listed(&page(&site, "/recordings", &carl_s)),
        both,
        "now a supervisor of both teams"
    );
    // Disable, enable, a new password; an admin cannot disable themselves.
    assert_eq!(
        site.post_form("/users/carl/disable", &root, Some(&root.csrf), &[])
            .status,
        303
    );
    assert_eq!(site.login_raw("carl", "carls first pw", false).status, 401);
    assert_eq!(
        site.post_form("/users/carl/enable", &root, Some(&root.csrf), &[])
            .status,
        303
    );
    let r = site.post_form(
        "/users/carl/password",
        &root,
        Some(&root.csrf),
        &[("password", "short")],
    );
    assert_eq!(r.status, 400);
    let r = site.post_form(
        "/users/carl/password",
        &root,
        Some(&root.csrf),
        &[("password", "carls second pw")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(site.login_raw("carl", "carls first pw", false).status, 401);
    site.login_with("carl", "carls second pw");
    let r = site.post_form("/users/root/disable", &root, Some(&root.csrf), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        site.post_form("/users/ghost/disable", &root, Some(&root.csrf), &[])
            .status,
        404
    );
    let r = site.post_form(
        "/users/root",
        &root,
        Some(&root.csrf),
        &[("role", "agent"), ("agent_id", "root")],
    );
    assert_eq!(r.status, 400, "no admin demotes themselves");

    // The audit page, its export and the chain check.
    let audit = page(&site, "/audit?actor=root", &root);
    assert!(audit.contains("role_change"), "{audit}");
    let csv = site.get("/audit/export?format=csv&action=role_change", Some(&root));
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-disposition").unwrap().contains(".csv"));
    let csv = csv.text();
    assert!(csv.starts_with(access::audit::CSV_HEADER), "{csv}");
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let r = site.post_form("/audit/verify", &root, Some(&root.csrf), &[]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains(r#"data-intact="true""#), "{}", r.text());
    assert_eq!(
        site.post_form("/audit/verify", &root, None, &[]).status,
        403
    );

    // An admin's legal hold and deletion on the recording page: CSRF-checked, the API's
    // rules (no deletion under a hold), audited; agents have no such buttons nor rights.
    let bert_page = format!("/recordings/{bert_id}");
    assert!(page(&site, &bert_page, &root).contains("Place on legal hold"));
    assert!(!page(&site, &format!("/recordings/{anna_id}"), &anna).contains("Delete recording"));
    let hold_on = [("hold", "on")];
    assert_eq!(
        site.post_form(
            &format!("/recordings/{anna_id}/hold"),
            &anna,
            Some(&anna.csrf),
            &hold_on
        )
        .status,
        403
    );
    assert_eq!(
        site.post_form(&format!("{bert_page}/hold"), &root, None, &hold_on)
            .status,
        403
    );
    assert_eq!(
        site.post_form(
            &format!("{bert_page}/hold"),
            &root,
            Some(&root.csrf),
            &[("hold", "maybe")]
        )
        .status,
        400
    );
    let r = site.post_form(
        &format!("{bert_page}/hold"),
        &root,
        Some(&root.csrf),
        &hold_on,
    );
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(bert_page.as_str()))
    );
    let held = page(&site, &bert_page, &root);
    assert!(held.contains("On legal hold") && held.contains("Release the legal hold"));
    let r = site.post_form(&format!("{bert_page}/delete"), &root, Some(&root.csrf), &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    let r = site.post_form(
        &format!("{bert_page}/hold"),
        &root,
        Some(&root.csrf),
        &[("hold", "off")],
    );
    assert_eq!(r.status, 303);
    let r = site.post_form(&format!("{bert_page}/delete"), &root, Some(&root.csrf), &[]);
    assert_eq!((r.status, r.header("location")), (303, Some("/recordings")));
    assert_eq!(site.get(&bert_page, Some(&root)).status, 404);
    assert!(!listed(&page(&site, "/recordings", &root)).contains(&bert_id));
    assert_eq!(
        site.post_form(
            "/recordings/1700000000000-none/delete",
            &root,
            Some(&root.csrf),
            &[]
        )
        .status,
        404
    );

    let jsonl = site.cli(&["audit", "export"], "");
    let entries: Vec<_> = jsonl
        .lines()
        .map(|l| access::audit::parse_json_line(l).unwrap())
        .collect();
    access::audit::verify_chain(&entries).unwrap();
    let has = |actor: &str, action: &str, target: &str| {
        entries
            .iter()
            .any(|e| e.actor == actor && e.action == action && e.target.as_deref() == Some(target))
    };
    for (actor, action, target) in [
        ("root", "user_add", "carl"),
        ("root", "role_change", "carl"),
        ("root", "user_update", "carl"),
        ("root", "user_disable", "carl"),
        ("root", "user_enable", "carl"),
        ("root", "passwd", "carl"),
        ("root", "audit_export", "audit_log"),
        ("anna", "view", anna_id.as_str()),
        ("root", "legal_hold", bert_id.as_str()),
        ("root", "delete", bert_id.as_str()),
    ] {
        assert!(has(actor, action, target), "{actor} {action} {target}");
    }
    let role = entries.iter().find(|e| e.action == "role_change").unwrap();
    assert_eq!(
        role.detail,
        serde_json::json!({"from": "agent", "to": "supervisor"})
    );
    assert!(entries
        .iter()
        .any(|e| e.actor == "anna" && e.action == "search"));
    assert!(!jsonl.contains("carls first pw") && !jsonl.contains(PASSWORD));
    assert!(
        !site.t.log().contains("carls second pw"),
        "no password in the log"
    );

    // The assets: content types and cache rules; the page links the current hash.
    let html = page(&site, "/recordings", &root);
    let at = html.find("/assets/app.js?v=").unwrap();
    let url = &html[at..at + html[at..].find('"').unwrap()];
    let js = site.get(url, None);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let stale = site.get("/assets/app.js?v=0000", None);
    assert_eq!(stale.header("cache-control"), Some("no-cache"));
    assert_eq!(site.get("/assets/wavesurfer.esm.js", None).status, 200);
    assert_eq!(site.get("/assets/nope.js", None).status, 404);
    let csp = site.get("/recordings", Some(&root));
    assert!(csp
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'; script-src 'self';"));
    assert_eq!(csp.header("cache-control"), Some("no-store"));

    let m = site.t.metrics();
    assert!(
        parse_metric(&m, "tapir_logins_total{outcome=\"success\"}") >= 6.0,
        "{m}"
    );
    assert!(parse_metric(&m, "tapir_logins_total{outcome=\"failed\"}") >= 3.0);
    assert!(
        parse_metric(
            &m,
            "tapir_page_requests_total{page=\"recordings\",status=\"200\"}"
        ) >= 5.0
    );
    assert!(
        parse_metric(
            &m,
            "tapir_page_requests_total{page=\"recording\",status=\"404\"}"
        ) >= 3.0
    );
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM: (ca, cert, key).
fn pki() -> (String, String, String) {
    let p = tapir_tests::pki::pki("pages");
    (p.ca, p.cert, p.key)
}

/// One HTTPS request to 127.0.0.1, trusting `ca`.
fn https(
    port: u16,
    ca: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> tapir_tests::site::Resp {
    try_https(port, ca, method, path, headers, body).expect("TLS handshake")
}

/// [`https`], or the handshake's error.
fn try_https(
    port: u16,
    ca: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<tapir_tests::site::Resp> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let req =
        tapir_tests::site::request_bytes(&format!("127.0.0.1:{port}"), method, path, headers, body);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await?;
            s.write_all(&req).await?;
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await;
            Ok(tapir_tests::site::read_answer(&raw))
        })
}

#[test]
fn https_serves_the_pages_and_the_session_cookie_is_secure() {
    let (ca, cert, key) = pki();
    let certs = tapir_tests::tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("http.pem"), certs.path().join("http.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let t = Tapir::start(
        BIN,
        &recording_route(free_port("127.0.0.1")),
        TapirOptions {
            extra: "[access]\nenabled = true\n".into(),
            env: vec![
                (
                    "TAPIR_HTTP__TLS_CERT".into(),
                    format!("\"{}\"", cert_path.display()),
                ),
                (
                    "TAPIR_HTTP__TLS_KEY".into(),
                    format!("\"{}\"", key_path.display()),
                ),
            ],
            ..Default::default()
        },
    );
    let site = Site {
        t,
        bin: BIN.to_string(),
    };
    site.add_user("anna", "agent", &["--agent-id", "anna"]);
    let port = site.t.http.port();

    // The login over HTTPS: the cookie is Secure, __Host- named, HttpOnly, SameSite=Strict.
    let r = https(
        port,
        &ca,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &format!("https://127.0.0.1:{port}")),
        ],
        &tapir_tests::site::form(&[
            ("username", "anna"),
            ("password", PASSWORD),
            ("next", "/recordings"),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(set.starts_with("__Host-tapir_session="), "{set}");
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = https(port, &ca, "GET", "/recordings", &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("My recordings"));
    // The same token under the plain-HTTP name is no session over HTTPS.
    let plain_name = cookie.replace("__Host-tapir_session=", "tapir_session=");
    let r = https(
        port,
        &ca,
        "GET",
        "/recordings",
        &[("Cookie", &plain_name)],
        b"",
    );
    assert_eq!(r.status, 303);
    // The listener speaks HTTPS only.
    let plain = tapir_tests::site::request(site.t.http, "GET", "/health", &[], b"");
    assert_eq!(plain.status, 0, "plain HTTP gets no HTTP answer");
    let m = https(port, &ca, "GET", "/metrics", &[], b"").text();
    assert!(
        tapir_tests::parse_metric(&m, "tapir_tls_handshake_failures_total{side=\"https\"}") >= 1.0,
        "{m}"
    );
    assert!(tapir_tests::parse_metric(&m, "tapir_logins_total{outcome=\"success\"}") >= 1.0);

    // SIGHUP: a certificate from another CA is in force for new connections, the old one gone.
    let (ca2, cert2, key2) = pki();
    std::fs::write(&cert_path, cert2).unwrap();
    std::fs::write(&key_path, key2).unwrap();
    site.t.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !site.t.log().contains("HTTPS certificate reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", site.t.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = try_https(port, &ca2, "GET", "/health", &[], b"").expect("the reloaded certificate");
    assert_eq!(r.status, 200);
    assert!(
        try_https(port, &ca, "GET", "/health", &[], b"").is_err(),
        "the old certificate is gone"
    );
}
