//! The review site of a running tapir, as a browser-less client sees it: users made with
//! the command line, plain HTTP/1.1 requests with cookies and forms, logins, and calls of
//! known agents recorded through the binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Tapir;

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        b = &b[eol + 2..];
        if n == 0 || b.len() < n {
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[(n + 2).min(b.len())..];
    }
    out
}

/// Reads an HTTP/1.x answer to the end of the connection.
pub fn read_answer(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let r = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Resp { body, ..r }
}

/// The bytes of one HTTP/1.1 request (`Connection: close`).
pub fn request_bytes(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request on its own connection, read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&request_bytes(
        &addr.to_string(),
        method,
        path,
        headers,
        body,
    ))
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    read_answer(&raw)
}

/// A urlencoded form body.
pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    for (k, v) in fields {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(&encode(k));
        s.push('=');
        s.push_str(&encode(v));
    }
    s.into_bytes()
}

/// Percent-encodes a query or form value.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A logged-in session: its cookie (a `Cookie` header value) and CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// A tapir with access control on, reached as a site.
pub struct Site {
    pub t: Tapir,
    pub bin: String,
}

/// The password every test user gets.
pub const PASSWORD: &str = "long enough pw";

impl Site {
    /// Runs `tapir <args>` on the site's configuration with `stdin`; panics unless it
    /// succeeds; returns its standard output.
    pub fn cli(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(&self.bin)
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

    /// Adds a user with [`PASSWORD`]: `role` and extra arguments (`--agent-id`, `--team`).
    pub fn add_user(&self, name: &str, role: &str, extra: &[&str]) {
        let mut a = vec!["user", "add", name, "--role", role, "--password-stdin"];
        a.extend_from_slice(extra);
        self.cli(&a, &format!("{PASSWORD}\n"));
    }

    pub fn get(&self, path: &str, s: Option<&Session>) -> Resp {
        let cookie = s.map(|s| s.cookie.clone());
        let mut h = vec![];
        if let Some(c) = &cookie {
            h.push(("Cookie", c.as_str()));
        }
        request(self.t.http, "GET", path, &h, b"")
    }

    /// Posts a form as the session's browser would: cookie, this site's Origin, and the
    /// CSRF field when `csrf` (the session's token unless overridden).
    pub fn post_form(
        &self,
        path: &str,
        s: &Session,
        csrf: Option<&str>,
        fields: &[(&str, &str)],
    ) -> Resp {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(t) = csrf {
            all.push(("csrf", t));
        }
        let origin = format!("http://{}", self.t.http);
        request(
            self.t.http,
            "POST",
            path,
            &[
                ("Cookie", &s.cookie),
                ("Origin", &origin),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "text/html"),
            ],
            &form(&all),
        )
    }

    /// Posts the login form; the raw answer.
    pub fn login_raw(&self, user: &str, password: &str, accept_html: bool) -> Resp {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if accept_html {
            h.push(("Accept", "text/html,application/xhtml+xml"));
        }
        request(
            self.t.http,
            "POST",
            "/login",
            &h,
            &form(&[
                ("username", user),
                ("password", password),
                ("next", "/recordings"),
            ]),
        )
    }

    /// Logs in; panics unless it works.
    pub fn login_with(&self, user: &str, password: &str) -> Session {
        let r = self.login_raw(user, password, true);
        assert_eq!(r.status, 303, "login of {user}: {}", r.text());
        let cookie = r
            .header("set-cookie")
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let me = request(
            self.t.http,
            "GET",
            "/api/v1/session",
            &[("Cookie", &cookie)],
            b"",
        );
        assert_eq!(me.status, 200, "{}", me.text());
        let csrf = me.json()["csrf"].as_str().unwrap().to_string();
        Session { cookie, csrf }
    }

    pub fn login(&self, user: &str) -> Session {
        self.login_with(user, PASSWORD)
    }

    /// The contact ids of the recordings the API shows to `s` (`query` without `?`).
    pub fn api_ids(&self, s: &Session, query: &str) -> Vec<String> {
        let r = self.get(&format!("/api/v1/recordings?{query}"), Some(s));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["contact_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until the API shows `s` `n` stored recordings; returns their ids, newest first.
    pub fn wait_stored(&self, s: &Session, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let ids = self.api_ids(s, "state=stored");
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < end,
                "{} of {n} recordings stored\n{}",
                ids.len(),
                self.t.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One recorded call of `agent` in `team` from `number`, `ms` long: SIPp's
/// `uac_tone_agent.xml` (a 400 Hz tone) toward a callee answering with a 1 kHz tone on
/// `callee_port`.
pub fn agent_call(t: &Tapir, callee_port: u16, agent: &str, team: &str, number: &str, ms: u32) {
    let d = ms.to_string();
    let mut b = crate::Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(1000.0),
        &[],
    );
    let mut a = crate::Sipp::party(
        "caller",
        "uac_tone_agent.xml",
        "127.0.0.1",
        crate::free_port("127.0.0.1"),
        Some(t),
        Some(400.0),
        &[
            "-d", &d, "-key", "agent", agent, "-key", "team", team, "-key", "queue", "q1", "-key",
            "number", number,
        ],
    );
    let timeout = Duration::from_millis(u64::from(ms)) + Duration::from_secs(30);
    crate::expect_success(t, &mut [&mut a, &mut b], timeout);
}

/// The route of a site whose calls all go to `callee_port` and are recorded.
pub fn recording_route(callee_port: u16) -> String {
    format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\n"
    )
}
