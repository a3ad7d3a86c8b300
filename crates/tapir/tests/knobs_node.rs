//! Options of one node through the real binary, each shown to take effect (every test here
//! fails when its option is ignored):
//!
//! * `[sip] user_agent` names tapir in leg B's INVITE (`User-Agent`) and in the responses it
//!   sends (`Server`, replacing the callee's; the transaction layer's `100 Trying` has none);
//!   `advertise` is what Via and Contact name for a wildcard listener, without which tapir
//!   refuses to start; `rate_limit_action = "drop"` answers a flood nothing while counting
//!   it, and a source in `rate_limit_exempt_zones` is never limited; a `udp_recv_buffer_kb`
//!   above `net.core.rmem_max` is warned about.
//! * `[access] secure_cookie` names the session cookie `__Host-tapir_session` and marks it
//!   `Secure` over plain HTTP.
//! * `[log] format = "json"` writes one JSON object per line; `show_numbers` puts the caller's
//!   number in the `call started` line, which leaves it out by default.
//! * `[transcripts]`: with `transcribe = false` only the route selected by `routes` gets a
//!   job, in that route's language, sent with the bearer key of `api_key_env`; likewise the
//!   record policy selected by `policies`; the offline engine with a `model_dir` that lacks a
//!   file stops tapir at start, naming the file.
//! * `[storage]`: an S3 `prefix` begins every object key and `verify_read_back = false` reads
//!   nothing back (a proxy in front of the test S3 server sees the requests);
//!   `purge_interval_s` purges a soft-deleted recording while tapir runs; `webhook_timeout_s`
//!   gives up on a receiver that never answers and retries.
//! * SIP over TLS: `tls_require_client_cert` refuses a client without a certificate, and a
//!   route's `tls.pinned_cert` accepts the pinned certificate (no CA involved).
//! * `[media] tap_queue`: a burst the recorder cannot take is counted in
//!   `tapir_tap_dropped_total`; `tapir_recordings_finishing` counts a recording between its
//!   call's end and its hand-over to storage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tapir_tests::s3::S3Process;
use tapir_tests::{files_under, free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn start_with_env(routes: &str, pairs: &[(&str, &str)]) -> Tapir {
    Tapir::start(
        BIN,
        routes,
        TapirOptions {
            env: env(pairs),
            ..Default::default()
        },
    )
}

/// A route to `port` that records nothing.
fn plain_route(port: u16) -> String {
    format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{port}\"\ncustomer = \"caller\"\nrecord = \"never\"\n"
    )
}

/// A route to `port` whose calls are all recorded.
fn recorded_route(port: u16) -> String {
    format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\n"
    )
}

fn wait_until(what: &str, t: &Tapir, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "{what} never happened\n{}", t.log());
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs tapir on `cfg` (written to a file in a directory of its own) until it exits, at most
/// 20 s (then it is killed and `None` is returned); its exit code and standard error.
fn run_to_exit(cfg: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tapir.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, reader.join().unwrap())
}

/// The sections a configuration for [`run_to_exit`] needs around `extra`: its own free ports.
fn minimal_config(extra: &str) -> String {
    format!(
        "[sip]\nlisten_udp = [\"127.0.0.1:{}\"]\nlisten_tcp = []\n[http]\nlisten = \"127.0.0.1:{}\"\n\
         [access]\nenabled = false\n{extra}\n\
         [[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:5070\"\ncustomer = \"caller\"\n",
        free_port("127.0.0.1"),
        free_port("127.0.0.1")
    )
}

// ---------------------------------------------------------------------------------------
// SIP over plain UDP sockets

fn recv_from(sock: &UdpSocket, timeout: Duration) -> Option<(String, SocketAddr)> {
    let mut buf = [0u8; 8192];
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .unwrap();
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// The values of a header in a message's head, in order.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A response to `req`: its Via, From, To (tagged), Call-ID and CSeq, then `extra` headers.
fn reply(req: &str, status_line: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status_line}\r\n");
    for l in req.lines().take_while(|l| !l.trim().is_empty()).skip(1) {
        let name = l.split(':').next().unwrap_or("").trim();
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            out.push_str(l);
            out.push_str("\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            out.push_str(l);
            if !l.contains("tag=") {
                out.push_str(";tag=callee1");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// What one refused call showed.
struct Refused {
    /// The INVITE tapir sent the callee.
    invite: String,
    /// Every response the caller got, the final one last.
    responses: Vec<String>,
}

/// A call from the user `from_user` through tapir at `tapir` to a callee on the UDP socket
/// `callee`, which refuses it with 486 carrying a `Server` header of its own.
fn refused_call(tapir: SocketAddr, callee: &UdpSocket, from_user: &str) -> Refused {
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = caller.local_addr().unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    let call_id = format!("knobs-{}@127.0.0.1", local.port());
    let body = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    );
    let branch = format!("z9hG4bK-knobs-{}", local.port());
    let from = format!("<sip:{from_user}@127.0.0.1>;tag=caller1");
    let invite = format!(
        "INVITE sip:1000@{tapir} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:{from_user}@{local}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    caller.send_to(invite.as_bytes(), tapir).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let (b_invite, src) = loop {
        let left = end.saturating_duration_since(Instant::now());
        let (m, src) = recv_from(callee, left).expect("tapir's INVITE to the callee");
        if m.starts_with("INVITE ") {
            break (m, src);
        }
    };
    callee
        .send_to(
            reply(&b_invite, "486 Busy Here", "Server: callee-box/1.0\r\n").as_bytes(),
            src,
        )
        .unwrap();
    let mut responses = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let (m, _) = recv_from(&caller, left).expect("a final response to the INVITE");
        let s = status(&m);
        if s == 0 {
            continue;
        }
        responses.push(m.clone());
        if s >= 200 {
            let to = header(&m, "To").unwrap_or("").to_string();
            let ack = format!(
                "ACK sip:1000@{tapir} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
                 Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
                 CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            );
            caller.send_to(ack.as_bytes(), tapir).unwrap();
            break;
        }
    }
    Refused {
        invite: b_invite,
        responses,
    }
}

fn options_request(tapir: SocketAddr, local: SocketAddr, call_id: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:tapir@{tapir} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:tapir@{tapir}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An out-of-dialog OPTIONS to tapir; its answer.
fn options(tapir: SocketAddr) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = s.local_addr().unwrap();
    s.send_to(
        options_request(tapir, local, &format!("probe-{}", local.port()), "probe").as_bytes(),
        tapir,
    )
    .unwrap();
    recv_from(&s, Duration::from_secs(10))
        .expect("an answer to OPTIONS")
        .0
}

fn addr(t: &Tapir) -> SocketAddr {
    t.sip().parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// [sip]

#[test]
fn user_agent_is_sent_in_leg_b_invites_and_every_response() {
    const UA: &str = "AcmeRecorder/7.1";
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = callee.local_addr().unwrap().port();
    let t = start_with_env(&plain_route(callee_port), &[("TAPIR_SIP__USER_AGENT", UA)]);
    let call = refused_call(addr(&t), &callee, "alice");
    assert_eq!(
        headers(&call.invite, "User-Agent"),
        vec![UA],
        "{}",
        call.invite
    );
    let last = call.responses.last().unwrap();
    assert_eq!(status(last), 486, "{last}");
    // Every response tapir sent the caller names tapir, the relayed 486 too: the callee's own
    // Server header stays on leg B. (The transaction layer's `100 Trying`, hop by hop, carries
    // none.)
    for r in call.responses.iter().filter(|r| status(r) > 100) {
        assert_eq!(headers(r, "Server"), vec![UA], "{r}");
    }
    // A response tapir makes up by itself.
    let ok = options(addr(&t));
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(headers(&ok, "Server"), vec![UA], "{ok}");

    // Without the option: "tapir".
    let d = start_with_env(&plain_route(callee_port), &[]);
    assert_eq!(header(&options(addr(&d)), "Server"), Some("tapir"));
}

#[test]
fn advertise_names_the_address_of_a_wildcard_listener_and_is_required_with_one() {
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = callee.local_addr().unwrap().port();
    let port = free_port("127.0.0.1");
    let wildcard = format!("[\"0.0.0.0:{port}\"]");
    // 127.0.0.9 is this host's too (all of 127/8 is loopback): what tapir advertises is
    // reachable, and it is neither a listen address nor the one the caller used.
    let advertised = format!("127.0.0.9:{port}");
    let t = start_with_env(
        &plain_route(callee_port),
        &[
            ("TAPIR_SIP__LISTEN_UDP", &wildcard),
            ("TAPIR_SIP__LISTEN_TCP", &wildcard),
            ("TAPIR_SIP__ADVERTISE", &format!("[\"{advertised}\"]")),
        ],
    );
    let tapir: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let call = refused_call(tapir, &callee, "alice");
    let via = header(&call.invite, "Via").unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/UDP {advertised};")),
        "{via}"
    );
    let contact = header(&call.invite, "Contact").unwrap();
    assert!(contact.contains(&format!("@{advertised}>")), "{contact}");
    assert_eq!(status(call.responses.last().unwrap()), 486);
    // The wildcard listener takes requests on any local address.
    let other: SocketAddr = advertised.parse().unwrap();
    assert_eq!(status(&options(other)), 200);
    drop(t);

    // Without `advertise`, a wildcard listener is a start error that says what to set.
    let cfg =
        minimal_config("").replacen("listen_udp = [\"127.0.0.1:", "listen_udp = [\"0.0.0.0:", 1);
    assert!(cfg.contains("listen_udp = [\"0.0.0.0:"), "{cfg}");
    let (code, err) = run_to_exit(&cfg);
    assert!(
        code.is_some_and(|c| c != 0),
        "tapir started ({code:?}): {err}"
    );
    assert!(
        err.contains("sip.advertise must be set when listening on a wildcard address (0.0.0.0:"),
        "{err}"
    );
}

/// Sends `n` OPTIONS from `sock`, as fast as it can.
fn flood(sock: &UdpSocket, tapir: SocketAddr, n: usize, tag: &str) {
    let local = sock.local_addr().unwrap();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        sock.send_to(options_request(tapir, local, &id, &id).as_bytes(), tapir)
            .unwrap();
    }
}

/// The status of every answer `sock` gets after a flood, up to the answer to a marker OPTIONS
/// sent after it (resent every 200 ms until answered: a limited one may be dropped). tapir
/// takes one socket's datagrams in order, so the flood's answers are all in by then. Also the
/// number of markers sent.
fn answers_to_flood(sock: &UdpSocket, tapir: SocketAddr, tag: &str) -> (Vec<u16>, usize) {
    let local = sock.local_addr().unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    let mut statuses = Vec::new();
    let mut markers = 0;
    loop {
        assert!(Instant::now() < end, "the marker was never answered");
        let id = format!("{tag}-marker");
        sock.send_to(
            options_request(tapir, local, &id, &format!("{id}-{markers}")).as_bytes(),
            tapir,
        )
        .unwrap();
        markers += 1;
        let round = Instant::now() + Duration::from_millis(200);
        while let Some((m, _)) = recv_from(sock, round.saturating_duration_since(Instant::now())) {
            if header(&m, "Call-ID") == Some(id.as_str()) {
                return (statuses, markers);
            }
            statuses.push(status(&m));
        }
    }
}

#[test]
fn rate_limit_drop_answers_a_flood_nothing_and_an_exempt_zone_is_never_limited() {
    let t = Tapir::start(
        BIN,
        &plain_route(free_port("127.0.0.1")),
        TapirOptions {
            extra: "[zones]\ntrunk = [\"127.0.0.2\"]\n".into(),
            env: env(&[
                ("TAPIR_SIP__RATE_LIMIT", "5"),
                ("TAPIR_SIP__RATE_LIMIT_BURST", "5"),
                ("TAPIR_SIP__RATE_LIMIT_ACTION", "drop"),
                ("TAPIR_SIP__RATE_LIMIT_EXEMPT_ZONES", "[\"trunk\"]"),
            ]),
            ..Default::default()
        },
    );
    let tapir = addr(&t);
    const N: usize = 100;
    // The trunk: every request answered, far beyond the bucket of 5.
    let trunk = UdpSocket::bind("127.0.0.2:0").unwrap();
    flood(&trunk, tapir, N, "trunk");
    let (got, _) = answers_to_flood(&trunk, tapir, "trunk");
    assert_eq!(got.len(), N, "{got:?}");
    assert!(got.iter().all(|s| *s == 200), "{got:?}");

    // Another source: the bucket's few answered, the rest dropped without a word.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood(&other, tapir, N, "other");
    let (got, markers) = answers_to_flood(&other, tapir, "other");
    assert!(
        !got.contains(&503),
        "a dropped request got an answer: {got:?}"
    );
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    assert!(got.len() <= 10, "{} of {N} answered", got.len());
    // Each request not answered was counted, and nothing of the trunk's (the metric is
    // published every so often: wait for it).
    let unanswered = (N + markers - got.len() - 1) as f64;
    t.wait_metric(
        "tapir_sip_rate_limited_total",
        Duration::from_secs(10),
        |v| v == unanswered,
    );
}

/// `net.core.rmem_max` in KiB.
fn rmem_max_kib() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
        / 1024
}

#[test]
fn a_udp_receive_buffer_above_the_system_cap_is_warned_about() {
    let max = rmem_max_kib();
    let asked = 2 * max + 1024;
    let t = start_with_env(
        &plain_route(free_port("127.0.0.1")),
        &[("TAPIR_SIP__UDP_RECV_BUFFER_KB", &asked.to_string())],
    );
    let line = t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("SIP UDP receive buffer capped by the system")
    });
    assert!(line.contains(&format!("asked_kib={asked}")), "{line}");
    assert!(line.contains(&format!("got_kib={max}")), "{line}");

    // One the system grants is not: the warning is logged before the ready line.
    let small = (max / 2).clamp(64, 1024);
    let t = start_with_env(
        &plain_route(free_port("127.0.0.1")),
        &[("TAPIR_SIP__UDP_RECV_BUFFER_KB", &small.to_string())],
    );
    t.wait_log_line(Duration::from_secs(5), |l| l.contains("tapir ready"));
    assert!(!t.log().contains("receive buffer capped"), "{}", t.log());
}

// ---------------------------------------------------------------------------------------
// [access]

fn site(extra: &str) -> tapir_tests::site::Site {
    let s = tapir_tests::site::Site {
        t: Tapir::start(
            BIN,
            &plain_route(free_port("127.0.0.1")),
            TapirOptions {
                extra: extra.into(),
                ..Default::default()
            },
        ),
        bin: BIN.into(),
    };
    s.add_user("ada", "admin", &[]);
    s
}

#[test]
fn secure_cookie_names_the_session_cookie_host_and_marks_it_secure_over_plain_http() {
    let s = site("[access]\nsecure_cookie = true\n");
    let r = s.login_raw("ada", tapir_tests::site::PASSWORD, true);
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(set.starts_with("__Host-tapir_session="), "{set}");
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Secure"), "{set}");
    assert!(
        attrs.contains(&"Path=/"),
        "a __Host- cookie needs Path=/: {set}"
    );
    // The proxy in front passes it back: it is the session.
    let cookie = set.split(';').next().unwrap();
    let me = tapir_tests::site::request(
        s.t.http,
        "GET",
        "/api/v1/session",
        &[("Cookie", cookie)],
        b"",
    );
    assert_eq!(me.status, 200, "{}", me.text());

    // By default: the plain name, not Secure.
    let s = site("[access]\nenabled = true\n");
    let r = s.login_raw("ada", tapir_tests::site::PASSWORD, true);
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(set.starts_with("tapir_session="), "{set}");
    assert!(!set.split(';').any(|a| a.trim() == "Secure"), "{set}");
}

// ---------------------------------------------------------------------------------------
// [log]

#[test]
fn json_log_lines_and_show_numbers() {
    const NUMBER: &str = "4930123456";
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = callee.local_addr().unwrap().port();
    let t = start_with_env(
        &plain_route(callee_port),
        &[
            ("TAPIR_LOG__FORMAT", "json"),
            ("TAPIR_LOG__SHOW_NUMBERS", "true"),
        ],
    );
    refused_call(addr(&t), &callee, NUMBER);
    let started = t.wait_log_line(Duration::from_secs(5), |l| l.contains("call started"));
    let v: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(v["fields"]["message"], "call started", "{started}");
    assert!(
        v["fields"]["from"].as_str().unwrap_or("").contains(NUMBER),
        "{started}"
    );
    // Wait for the call's end so its lines are in too; then every line is one JSON object.
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 0.0);
    let log = t.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 3, "{log}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}"));
        assert!(v.is_object() && v["level"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"tapir ready\"")),
        "{log}"
    );

    // By default: text lines, and the number kept out of the call's info line.
    let t = start_with_env(&plain_route(callee_port), &[]);
    refused_call(addr(&t), &callee, NUMBER);
    let started = t.wait_log_line(Duration::from_secs(5), |l| l.contains("call started"));
    assert!(started.contains(" INFO "), "{started}");
    assert!(!started.contains(NUMBER), "{started}");
    assert!(serde_json::from_str::<serde_json::Value>(&started).is_err());
}

// ---------------------------------------------------------------------------------------
// [transcripts]

/// One request the fake transcription server got: its `Authorization` header and its form
/// fields but the audio.
#[derive(Clone, Debug)]
struct SttRequest {
    authorization: Option<String>,
    fields: Vec<(String, String)>,
}

type SttSeen = Arc<Mutex<Vec<SttRequest>>>;

async fn stt(
    axum::extract::State(seen): axum::extract::State<SttSeen>,
    headers: axum::http::HeaderMap,
    mut form: axum::extract::Multipart,
) -> impl axum::response::IntoResponse {
    let mut fields = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.unwrap_or_default();
        if name != "file" {
            fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    seen.lock().unwrap().push(SttRequest {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        fields,
    });
    let body = serde_json::json!({"task": "transcribe", "language": "german", "text": "hallo",
        "segments": [{"id": 0, "start": 0.1, "end": 0.9, "text": "hallo"}]});
    ([("content-type", "application/json")], body.to_string())
}

/// An OpenAI-compatible transcription server on a free port that answers every request with
/// one phrase and keeps what it was sent.
fn fake_stt() -> (SocketAddr, SttSeen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: SttSeen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/audio/transcriptions", axum::routing::post(stt))
        .with_state(seen.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (addr, seen)
}

/// One recorded call to the user `user`: SIPp tones on both legs, `ms` long.
fn tone_call(t: &Tapir, callee_port: u16, user: &str, ms: u32) {
    let d = ms.to_string();
    tapir_tests::call(
        t,
        ("uac_tone.xml", Some(400.0), &["-d", &d, "-s", user]),
        ("uas_tone.xml", Some(1000.0), &[]),
        callee_port,
    );
}

/// The stored recordings (API entries), newest first.
fn stored(t: &Tapir) -> Vec<serde_json::Value> {
    let (code, body) = t.http("GET", "/api/v1/recordings?state=stored");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["items"].as_array().unwrap().clone()
}

fn wait_stored(t: &Tapir, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    wait_until("recordings stored", t, Duration::from_secs(30), || {
        out = stored(t);
        out.len() >= n
    });
    out
}

#[test]
fn transcripts_only_for_the_selected_route_in_its_language_with_the_bearer_key() {
    const KEY: &str = "sk-knobs-0123456789";
    let (stt_addr, seen) = fake_stt();
    let callee_port = free_port("127.0.0.1");
    let routes = format!(
        "[[routes]]\nname = \"x\"\nuser_prefix = \"1\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\n\
         customer = \"caller\"\ndirection = \"inbound\"\nrecord = \"always\"\n\
         [[routes]]\nname = \"y\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\n\
         customer = \"caller\"\ndirection = \"inbound\"\nrecord = \"always\"\n"
    );
    let t = Tapir::start(
        BIN,
        &routes,
        TapirOptions {
            extra: format!(
                "[transcripts]\nengine = \"http\"\nurl = \"http://{stt_addr}\"\nmodel = \"whisper-test\"\n\
                 transcribe = false\napi_key_env = \"KNOBS_STT_KEY\"\n\
                 routes = {{ x = {{ transcribe = true, language = \"de\" }} }}\n"
            ),
            env: env(&[("KNOBS_STT_KEY", KEY)]),
            ..Default::default()
        },
    );
    // Route y first: were it selected, its job would be queued (and, one job at a time,
    // done) before route x's.
    tone_call(&t, callee_port, "2000", 1200);
    tone_call(&t, callee_port, "1000", 1200);
    let entries = wait_stored(&t, 2);
    let id_of = |route: &str| {
        entries
            .iter()
            .find(|e| e["route"] == route)
            .unwrap_or_else(|| panic!("no recording of route {route}: {entries:?}"))["contact_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (x, y) = (id_of("x"), id_of("y"));
    let mut transcript = serde_json::Value::Null;
    wait_until("route x's transcript", &t, Duration::from_secs(60), || {
        let (code, body) = t.http("GET", &format!("/api/v1/recordings/{x}/transcript"));
        if code == 200 {
            transcript = serde_json::from_str(&body).unwrap();
        }
        transcript["state"] == "done"
    });
    assert_eq!(transcript["language"], "de", "{transcript}");
    let (code, body) = t.http("GET", &format!("/api/v1/recordings/{y}/transcript"));
    assert_eq!(code, 404, "route y has no transcription job: {body}");
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"done\"}"), 1.0);

    // One request per channel of route x's recording, in its language, with the key.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        let field = |n: &str| {
            r.fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("language"), Some("de"), "{r:?}");
        assert_eq!(field("model"), Some("whisper-test"), "{r:?}");
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str()),
            "{r:?}"
        );
    }
    assert!(!t.log().contains(KEY), "the key is never logged");
}

#[test]
fn transcripts_for_a_selected_record_policy_only() {
    let (stt_addr, seen) = fake_stt();
    let callee_port = free_port("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    // Calls to 1… are complaints, all others general; both are recorded.
    std::fs::write(
        &policy,
        "[stations.default]\noutbound = \"on_demand\"\ninbound_direct = \"on_demand\"\ninbound_ivr = \"on_demand\"\n\n\
         [[record_policies]]\nname = \"complaints\"\n[record_policies.filter]\ndialled_numbers = [\"1*\"]\n\n\
         [[record_policies]]\nname = \"general\"\n[record_policies.filter]\n",
    )
    .unwrap();
    let t = Tapir::start(
        BIN,
        &format!(
            "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n"
        ),
        TapirOptions {
            extra: format!(
                "[recording]\npolicy_file = \"{}\"\n\
                 [transcripts]\nengine = \"http\"\nurl = \"http://{stt_addr}\"\ntranscribe = false\n\
                 policies = {{ complaints = {{ transcribe = true, language = \"fr\" }} }}\n",
                policy.display()
            ),
            ..Default::default()
        },
    );
    // The general call first, as for routes.
    tone_call(&t, callee_port, "2000", 1200);
    tone_call(&t, callee_port, "1000", 1200);
    let entries = wait_stored(&t, 2);
    // The policy that started the recording (the decision log names every policy that
    // matched: the complaint matches both).
    let started_by = |e: &serde_json::Value, name: &str| {
        e["decisions"].as_array().unwrap().iter().any(|d| {
            d["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["kind"] == "start" && a["reason"]["name"] == name)
        })
    };
    let by_rule = |name: &str| {
        entries
            .iter()
            .find(|e| started_by(e, name))
            .unwrap_or_else(|| panic!("no recording of policy {name}: {entries:?}"))["contact_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (complaint, general) = (by_rule("complaints"), by_rule("general"));
    assert_ne!(complaint, general);
    let mut transcript = serde_json::Value::Null;
    wait_until(
        "the complaint's transcript",
        &t,
        Duration::from_secs(60),
        || {
            let (code, body) = t.http("GET", &format!("/api/v1/recordings/{complaint}/transcript"));
            if code == 200 {
                transcript = serde_json::from_str(&body).unwrap();
            }
            transcript["state"] == "done"
        },
    );
    assert_eq!(transcript["language"], "fr", "{transcript}");
    let (code, body) = t.http("GET", &format!("/api/v1/recordings/{general}/transcript"));
    assert_eq!(
        code, 404,
        "the general call has no transcription job: {body}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        assert!(
            r.fields.iter().any(|(k, v)| k == "language" && v == "fr"),
            "{r:?}"
        );
        // No api_key_env: no key sent.
        assert_eq!(r.authorization, None, "{r:?}");
    }
}

#[test]
fn the_offline_engine_with_a_model_dir_lacking_a_file_stops_tapir_naming_it() {
    let models = tempfile::tempdir().unwrap();
    // The acoustic model and the language model are there, the dictionary is not.
    std::fs::create_dir(models.path().join("en-us")).unwrap();
    std::fs::write(models.path().join("en-us.lm.bin"), b"lm").unwrap();
    let (code, err) = run_to_exit(&minimal_config(&format!(
        "[transcripts]\nengine = \"pocketsphinx\"\nmodel_dir = \"{}\"\n",
        models.path().display()
    )));
    assert!(
        code.is_some_and(|c| c != 0),
        "tapir started ({code:?}): {err}"
    );
    let missing = models.path().join("cmudict-en-us.dict");
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("missing"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// ---------------------------------------------------------------------------------------
// [storage]

/// What clients sent through the proxy: the bytes of each connection.
type Sent = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TCP proxy in front of `to` that keeps every byte clients send through it, one buffer per
/// connection, so a test can read the HTTP request lines that went to the server.
fn recording_proxy(to: SocketAddr) -> (SocketAddr, Sent) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns: Sent = Arc::default();
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(to) else {
                continue;
            };
            let buf = Arc::new(Mutex::new(Vec::new()));
            c2.lock().unwrap().push(buf.clone());
            let (mut client_w, mut server_r) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_r, &mut client_w);
                let _ = client_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut chunk = [0u8; 65536];
                while let Ok(n) = client.read(&mut chunk) {
                    if n == 0 || server.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, conns)
}

/// The request lines (`GET /bucket/key HTTP/1.1`) the proxy forwarded.
fn request_lines(conns: &Sent) -> Vec<String> {
    let mut out = Vec::new();
    for c in conns.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(&c.lock().unwrap()).into_owned();
        for l in text.split("\r\n") {
            if ["GET /", "PUT /", "HEAD /", "POST /", "DELETE /"]
                .iter()
                .any(|m| l.starts_with(m))
                && l.ends_with(" HTTP/1.1")
            {
                out.push(l.to_string());
            }
        }
    }
    out
}

/// A tapir recording every call into the test S3 server through `endpoint`, with `s3` added
/// to the bucket's settings.
fn s3_tapir(callee_port: u16, endpoint: SocketAddr, s3: &str) -> Tapir {
    Tapir::start(
        BIN,
        &recorded_route(callee_port),
        TapirOptions {
            extra: format!(
                "[storage]\nretry_initial_ms = 100\nretry_max_ms = 400\n\
                 s3 = {{ endpoint = \"http://{endpoint}\", bucket = \"{}\", region = \"us-east-1\", \
                 allow_http = true, request_retries = 0, timeout_s = 5, {s3} }}\n",
                tapir_tests::s3::BUCKET
            ),
            env: tapir_tests::s3::env(),
            ..Default::default()
        },
    )
}

#[test]
fn s3_prefix_begins_every_key_and_verify_read_back_false_reads_nothing_back() {
    let s3 = S3Process::start(BIN);
    let (proxy, conns) = recording_proxy(s3.addr);
    let bucket = s3.root.path().join(tapir_tests::s3::BUCKET);
    let callee_port = free_port("127.0.0.1");

    let t = s3_tapir(
        callee_port,
        proxy,
        "prefix = \"site-a/calls\", verify_read_back = false",
    );
    tone_call(&t, callee_port, "1000", 1000);
    t.wait_metric(
        "tapir_uploads_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    // Every object (audio, sidecar, peaks) is under the prefix, nothing beside it.
    let under = files_under(&bucket.join("site-a/calls"), "wav");
    assert_eq!(under.len(), 1, "{under:?}");
    let all: Vec<_> = files_under(&bucket, "wav")
        .into_iter()
        .chain(files_under(&bucket, "json"))
        // The server's own bookkeeping (`.bucket-…` files) is not an object.
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(all.len() >= 3, "{all:?}");
    for f in &all {
        assert!(f.starts_with(bucket.join("site-a/calls")), "{f:?}");
    }
    let lines = request_lines(&conns);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PUT /") && l.contains("/site-a/calls/") && l.contains(".wav")),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("GET /") && l.contains(".wav")),
        "the audio was read back: {lines:?}"
    );
    drop(t);

    // By default the audio is read back after the upload, through the same proxy.
    let t = s3_tapir(callee_port, proxy, "prefix = \"site-b\"");
    tone_call(&t, callee_port, "1000", 1000);
    t.wait_metric(
        "tapir_uploads_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    let lines = request_lines(&conns);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET /") && l.contains("/site-b/") && l.contains(".wav")),
        "{lines:?}"
    );
}

#[test]
fn purge_interval_purges_a_soft_deleted_recording_while_tapir_runs() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &recorded_route(callee_port),
        TapirOptions {
            extra: "[storage]\npurge_interval_s = 1\n".into(),
            ..Default::default()
        },
    );
    tone_call(&t, callee_port, "1000", 1000);
    let e = wait_stored(&t, 1);
    let id = e[0]["contact_id"].as_str().unwrap().to_string();
    let key = e[0]["storage_key"].as_str().unwrap().to_string();
    let file = t.dir.path().join("recordings").join(&key);
    assert!(file.exists(), "{}", file.display());
    assert_eq!(t.metric("tapir_recordings_purged_total"), 0.0);
    // Deleted after the purge at start: only the periodic job can remove it (the default
    // interval is an hour).
    let (code, body) = t.http("DELETE", &format!("/api/v1/recordings/{id}"));
    assert_eq!(code, 204, "{body}");
    t.wait_metric(
        "tapir_recordings_purged_total",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert!(!file.exists(), "the audio is gone");
    let line = t.wait_log_line(Duration::from_secs(5), |l| l.contains("recording purged"));
    assert!(line.contains(&id), "{line}");
}

#[test]
fn webhook_timeout_gives_up_on_a_silent_receiver_and_retries() {
    // A receiver that reads the first two requests and never answers them (the connections
    // stay open), then answers 204.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = l.local_addr().unwrap().port();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a2 = arrivals.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let n = {
                let mut g = a2.lock().unwrap();
                g.push(Instant::now());
                g.len()
            };
            if n <= 2 {
                held.push(c);
            } else {
                let _ = c.write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        }
    });
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &recorded_route(callee_port),
        TapirOptions {
            extra: format!(
                "[storage]\nretry_initial_ms = 100\nretry_max_ms = 400\nwebhook_timeout_s = 1\n\
                 webhooks = [\"http://127.0.0.1:{hook_port}/hook\"]\n"
            ),
            ..Default::default()
        },
    );
    tone_call(&t, callee_port, "1000", 1000);
    t.wait_metric(
        "tapir_webhooks_total{result=\"delivered\"}",
        Duration::from_secs(30),
        |v| v == 1.0,
    );
    assert_eq!(t.metric("tapir_webhooks_total{result=\"failed\"}"), 2.0);
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 3);
    // Each silent attempt was given up after about a second (not the default ten), then
    // retried after the short backoff.
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_secs(4),
            "{gap:?} between attempts"
        );
    }
}

// ---------------------------------------------------------------------------------------
// SIP over TLS

mod tls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tapir_tests::pki::{connector_with, pki, tls_listener_env, write, Pki};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// OPTIONS over a TLS connection made by `connector`; whether tapir answered it 200.
    async fn options_answered(port: u16, c: tokio_rustls::TlsConnector) -> bool {
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return false;
        };
        let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let Ok(mut s) = c.connect(name, tcp).await else {
            return false;
        };
        let local = s.get_ref().0.local_addr().unwrap();
        let req = format!(
            "OPTIONS sips:tapir@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-opt\r\n\
             Max-Forwards: 70\r\nFrom: <sips:probe@127.0.0.1>;tag=probe\r\nTo: <sips:tapir@127.0.0.1>\r\n\
             Call-ID: tls-opt-{}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            local.port()
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; 4096];
        // TLS 1.3 reports a refused client certificate on the first read, not in the
        // handshake.
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
            _ => false,
        }
    }

    /// A tapir with a TLS listener of `server`'s certificate asking clients for one of
    /// `clients`' CA, requiring it when `require`; and the listener's port.
    fn mtls_tapir(dir: &Path, server: &Pki, clients: &Pki, require: bool) -> (Tapir, u16) {
        let (mut env, port) = tls_listener_env(dir, server);
        env.push((
            "TAPIR_SIP__TLS_CLIENT_CA".into(),
            write(dir, "clients-ca.pem", &clients.ca),
        ));
        if require {
            env.push(("TAPIR_SIP__TLS_REQUIRE_CLIENT_CERT".into(), "true".into()));
        }
        let t = Tapir::start(
            BIN,
            &plain_route(free_port("127.0.0.1")),
            TapirOptions {
                env,
                ..Default::default()
            },
        );
        (t, port)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn require_client_cert_refuses_a_client_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let server = pki("server");
        let clients = pki("clients");
        let (t, port) = mtls_tapir(dir.path(), &server, &clients, true);
        assert!(
            !options_answered(port, connector_with(&server.ca, None)).await,
            "a client without a certificate was served"
        );
        t.wait_metric(
            "tapir_tls_handshake_failures_total{side=\"in\"}",
            Duration::from_secs(5),
            |v| v == 1.0,
        );
        assert!(options_answered(port, connector_with(&server.ca, Some(&clients))).await);
        drop(t);

        // Without it, the same client is served.
        let (_t, port) = mtls_tapir(dir.path(), &server, &clients, false);
        assert!(options_answered(port, connector_with(&server.ca, None)).await);
    }

    /// A TLS server standing in for a target, presenting `p`'s certificate; it notes the
    /// first line of the first message it is sent, and answers nothing.
    async fn fake_target(p: &Pki) -> (u16, Arc<Mutex<String>>) {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(p.cert.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(String::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let a = acceptor.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = a.accept(s).await {
                        let mut buf = vec![0u8; 4096];
                        if let Ok(n) = s.read(&mut buf).await {
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            *seen.lock().unwrap() = text.lines().next().unwrap_or("").to_string();
                        }
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pinned_certificate_is_accepted_without_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        // The target's certificate is signed by a CA tapir is never told of: only the pin
        // can make it trusted.
        let trunk = pki("trunk");
        let (target, seen) = fake_target(&trunk).await;
        let pinned = write(dir.path(), "trunk.pem", &trunk.cert);
        let routes = format!(
            "[[routes]]\nname = \"pinned-trunk\"\ntarget = \"sip:127.0.0.1:{target};transport=tls\"\n\
             customer = \"caller\"\nrecord = \"never\"\ntls = {{ pinned_cert = \"{pinned}\" }}\n"
        );
        // The target never answers: the INVITE ends at Timer B, 64 × T1 = 3.2 s.
        let t = Tapir::start(
            BIN,
            &routes,
            TapirOptions {
                t1_ms: 50,
                ..Default::default()
            },
        );
        let port = t.sip_port;
        let _ = tokio::task::spawn_blocking(move || {
            tapir_tests::sdes::invite_user(port, "1000", "m=audio {port} RTP/AVP 8\r\n", None)
        })
        .await
        .unwrap();
        assert!(
            seen.lock()
                .unwrap()
                .starts_with("INVITE sip:1000@127.0.0.1"),
            "{:?}\n{}",
            seen.lock().unwrap(),
            t.log()
        );
        assert_eq!(
            t.metric("tapir_tls_handshake_failures_total{side=\"out\"}"),
            0.0
        );
        assert_eq!(t.metric("tapir_calls_total{outcome=\"unreachable\"}"), 0.0);
    }
}

// ---------------------------------------------------------------------------------------
// Metrics of the recording path

/// A recorded call whose caller (tests/src/sdes.rs, plain RTP) sends `burst` packets at once;
/// the tapir it went through.
fn burst_call(pairs: &[(&str, &str)], burst: u16) -> Tapir {
    let callee_port = free_port("127.0.0.1");
    let t = start_with_env(&recorded_route(callee_port), pairs);
    let mut b = tapir_tests::Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(1000.0),
        &[],
    );
    let tapir_tests::sdes::Outcome::Answered(mut call) = tapir_tests::sdes::invite(
        t.sip_port,
        "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        None,
    ) else {
        panic!("call refused:\n{}", t.log());
    };
    // A few paced packets first, so tapir has latched the caller's address.
    call.talk(400.0, 10, None);
    let mut p = vec![0x55u8; 172];
    for i in 0..burst {
        media::rtp::write_header(
            &mut p,
            false,
            8,
            100 + i,
            1600 + u32::from(i) * 160,
            0x0b0b_0b0b,
        );
        call.rtp.send_to(&p, call.remote_rtp).unwrap();
    }
    call.talk(400.0, 10, None);
    assert!(call.bye(), "BYE answered");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());
    t
}

#[test]
fn a_tiny_tap_queue_drops_and_counts_what_the_recorder_cannot_take() {
    let t = burst_call(&[("TAPIR_MEDIA__TAP_QUEUE", "1")], 100);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    let dropped = t.metric("tapir_tap_dropped_total");
    assert!(dropped > 0.0, "{}", t.metrics());

    // The default queue takes the same burst.
    let t = burst_call(&[], 100);
    t.wait_metric(
        "tapir_recordings_total{result=\"ok\"}",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert_eq!(t.metric("tapir_tap_dropped_total"), 0.0);
}

#[test]
fn recordings_finishing_counts_a_recording_until_it_is_handed_to_storage() {
    let callee_port = free_port("127.0.0.1");
    // MP3: the finisher transcodes after the metrics and peaks, which widens the window.
    let t = Tapir::start(
        BIN,
        &recorded_route(callee_port).replace(
            "record = \"always\"\n",
            "record = \"always\"\nformat = \"mp3\"\n",
        ),
        TapirOptions::default(),
    );
    assert_eq!(t.metric("tapir_recordings_finishing"), 0.0);
    let mut b = tapir_tests::Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(1000.0),
        &[],
    );
    let tapir_tests::sdes::Outcome::Answered(mut call) = tapir_tests::sdes::invite(
        t.sip_port,
        "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        None,
    ) else {
        panic!("call refused:\n{}", t.log());
    };
    call.talk(400.0, 150, None);
    // Watch the gauge from the hang-up until the recording is counted as handed on.
    let http = t.http;
    let watcher = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let m = tapir_tests::http_request(http, "GET", "/metrics", "").1;
            let finishing = tapir_tests::parse_metric(&m, "tapir_recordings_finishing");
            let ok = tapir_tests::parse_metric(&m, "tapir_recordings_total{result=\"ok\"}");
            seen.push((finishing, ok));
            if ok == 1.0 || Instant::now() > end {
                return seen;
            }
        }
    });
    assert!(call.bye(), "BYE answered");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());
    let seen = watcher.join().unwrap();
    assert_eq!(seen.last().map(|s| s.1), Some(1.0), "{seen:?}");
    assert!(
        seen.iter().any(|&(f, ok)| f == 1.0 && ok == 0.0),
        "never seen finishing: {seen:?}"
    );
    // Handed on, it no longer counts (the finisher counts the result a moment before it
    // lowers the gauge: wait for it).
    t.wait_metric("tapir_recordings_finishing", Duration::from_secs(5), |v| {
        v == 0.0
    });
    t.wait_metric("tapir_uploads_pending", Duration::from_secs(10), |v| {
        v == 0.0
    });
    assert_eq!(t.metric("tapir_recordings_finishing"), 0.0);
}
