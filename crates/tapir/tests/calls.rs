//! Black-box call tests: the real `tapir` binary between two SIPp instances, with RTP.
//!
//! Each test starts its own tapir on free ports, a SIPp callee behind it and a SIPp caller in
//! front of it, and asserts on SIPp's exit code (every expected message arrived, in order) and
//! on tapir's metrics (media went through tapir in both directions, calls ended as expected).

use std::time::Duration;

use tapir_tests::{free_port, sipp_args, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn route(callee_port: u16, transport: &str, ip: &str) -> String {
    let ip = tapir_tests::bracket(ip);
    let t = if transport == "tcp" {
        ";transport=tcp"
    } else {
        ""
    };
    format!(
        "[[routes]]\nname = \"to-callee\"\ntarget = \"sip:{ip}:{callee_port}{t}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n"
    )
}

struct Pair {
    caller: Sipp,
    callee: Sipp,
}

/// Starts the callee, then the caller, each with its own SIP and media ports.
fn run_pair(
    tapir: &Tapir,
    caller_scn: &str,
    callee_scn: &str,
    callee_port: u16,
    caller_extra: &[&str],
    callee_extra: &[&str],
    ip: &str,
) -> Pair {
    let callee = Sipp::party(
        "callee",
        callee_scn,
        ip,
        callee_port,
        None,
        None,
        callee_extra,
    );
    let caller = Sipp::party(
        "caller",
        caller_scn,
        ip,
        free_port(ip),
        Some(tapir),
        None,
        caller_extra,
    );
    Pair { caller, callee }
}

fn expect_ok(tapir: &Tapir, mut p: Pair, timeout: Duration) {
    tapir_tests::expect_success(tapir, &mut [&mut p.caller, &mut p.callee], timeout);
}

fn relayed(t: &Tapir, from: &str) -> f64 {
    t.metric(&format!(
        "tapir_rtp_packets_relayed_total{{from=\"{from}\"}}"
    ))
}

/// After every call has ended, nothing may be left behind: no call, no ports in use.
fn assert_clean(t: &Tapir) {
    t.wait_metric("tapir_calls_active", Duration::from_secs(10), |v| v == 0.0);
    let (code, body) = t.http("GET", "/calls");
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "[]");
}

/// One call end to end over UDP on 127.0.0.1: a fresh tapir routing to the callee, both SIPp
/// parties succeed, nothing is left behind. Returns tapir for the test's own assertions.
fn call(caller: (&str, &[&str]), callee: (&str, &[&str])) -> Tapir {
    call_with(caller, callee, "udp", "127.0.0.1", TapirOptions::default())
}

fn call_with(
    caller: (&str, &[&str]),
    callee: (&str, &[&str]),
    callee_transport: &str,
    ip: &str,
    opts: TapirOptions,
) -> Tapir {
    let callee_port = free_port(ip);
    let t = Tapir::start(BIN, &route(callee_port, callee_transport, ip), opts);
    let p = run_pair(&t, caller.0, callee.0, callee_port, caller.1, callee.1, ip);
    expect_ok(&t, p, Duration::from_secs(30));
    assert_clean(&t);
    t
}

/// Both legs carried RTP through tapir.
fn assert_media_both_ways(t: &Tapir, at_least: f64) {
    let (a, b) = (relayed(t, "a_rtp"), relayed(t, "b_rtp"));
    assert!(
        a > at_least && b > at_least,
        "relayed {a} from A, {b} from B"
    );
}

#[test]
fn basic_call_relays_rtp_both_ways() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "udp", "127.0.0.1"),
        TapirOptions::default(),
    );
    // The callee echoes every RTP packet it receives: packets relayed from leg B prove that
    // leg A's audio reached the far side through tapir.
    let p = run_pair(
        &t,
        "uac_pcap.xml",
        "uas",
        callee_port,
        &["-d", "3000"],
        &["-rtp_echo"],
        "127.0.0.1",
    );
    expect_ok(&t, p, Duration::from_secs(30));
    let from_a = relayed(&t, "a_rtp");
    let from_b = relayed(&t, "b_rtp");
    // 3 s of 20 ms packets is 150; allow for the start and end of the call and for a loaded
    // machine delaying SIPp's playback.
    assert!(
        from_a >= 60.0,
        "caller audio relayed: {from_a}\n{}",
        t.log()
    );
    assert!(
        from_b >= from_a * 0.9,
        "echo relayed back: {from_b} of {from_a}"
    );
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
    assert_clean(&t);
}

#[test]
fn callee_hangs_up() {
    let t = call(("uac_wait_bye.xml", &[]), ("uas_bye.xml", &["-d", "1500"]));
    assert_media_both_ways(&t, 30.0);
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
}

#[test]
fn caller_hangs_up() {
    let t = call(("uac_pcap.xml", &["-d", "1500"]), ("uas_answer.xml", &[]));
    assert_media_both_ways(&t, 30.0);
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 1.0);
}

#[test]
fn cancel_before_answer() {
    let t = call(("uac_cancel.xml", &[]), ("uas_ring.xml", &[]));
    assert_eq!(t.metric("tapir_calls_total{outcome=\"cancelled\"}"), 1.0);
}

#[test]
fn busy_is_relayed() {
    let t = call(("uac_busy.xml", &[]), ("uas_busy.xml", &[]));
    assert_eq!(t.metric("tapir_calls_total{outcome=\"rejected\"}"), 1.0);
}

#[test]
fn no_answer_times_out_with_408() {
    // Nothing listens on the callee port; with T1 = 50 ms, Timer B fires after 3.2 s.
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "udp", "127.0.0.1"),
        TapirOptions {
            t1_ms: 50,
            ..Default::default()
        },
    );
    let mut a = sipp_args("uac_timeout.xml", "127.0.0.1", free_port("127.0.0.1"));
    a.insert(0, t.sip());
    a.extend([
        "-mp".into(),
        tapir_tests::free_media_port("127.0.0.1").to_string(),
        "-m".into(),
        "1".into(),
    ]);
    let mut caller = Sipp::spawn("caller", &a);
    let rc = caller.wait(Duration::from_secs(30));
    assert_eq!(rc, 0, "{}\n{}", caller.logs(), t.log());
    assert_eq!(t.metric("tapir_calls_total{outcome=\"timeout\"}"), 1.0);
    // 7 INVITEs over 64*T1 on leg B: six retransmissions.
    assert!(t.metric("tapir_sip_retransmissions_total") >= 6.0);
    assert_clean(&t);
}

#[test]
fn caller_holds_and_resumes() {
    // The scenarios check the sendonly/recvonly/sendrecv offers and answers that arrive.
    call(("uac_hold.xml", &["-d", "700"]), ("uas_held.xml", &[]));
}

#[test]
fn callee_holds_and_resumes() {
    call(("uac_held.xml", &[]), ("uas_hold.xml", &["-d", "700"]));
}

#[test]
fn tcp_caller_udp_callee() {
    let t = call(
        ("uac_pcap.xml", &["-t", "t1", "-d", "1000"]),
        ("uas_answer.xml", &[]),
    );
    assert_media_both_ways(&t, 20.0);
}

#[test]
fn udp_caller_tcp_callee() {
    let t = call_with(
        ("uac_pcap.xml", &["-d", "1000"]),
        ("uas_answer.xml", &["-t", "t1"]),
        "tcp",
        "127.0.0.1",
        TapirOptions::default(),
    );
    assert_media_both_ways(&t, 20.0);
}

#[test]
fn ipv6_call() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host; skipping");
        return;
    }
    let t = call_with(
        ("uac_pcap.xml", &["-d", "1000"]),
        ("uas_answer.xml", &[]),
        "udp",
        "::1",
        TapirOptions {
            ipv6: true,
            ..Default::default()
        },
    );
    assert_media_both_ways(&t, 20.0);
}

#[test]
fn garbage_and_strangers_on_media_ports_are_dropped_and_counted() {
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port, "udp", "127.0.0.1"),
        TapirOptions::default(),
    );
    let p = run_pair(
        &t,
        "uac_pcap.xml",
        "uas_answer.xml",
        callee_port,
        &["-d", "2500"],
        &[],
        "127.0.0.1",
    );
    t.wait_metric(
        "tapir_rtp_packets_relayed_total",
        Duration::from_secs(10),
        |v| v >= 20.0,
    );
    // While both parties send, spray every RTP port of the range with garbage and with
    // well-formed RTP from a stranger.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rtp = [0u8; 172];
    media::rtp::write_header(&mut rtp, false, 8, 1, 160, 0xdead_beef);
    let (lo, hi) = t.rtp_ports;
    for port in (lo..=hi).step_by(2) {
        let dest = format!("127.0.0.1:{port}");
        let _ = stranger.send_to(b"\x00garbage that is not RTP", &dest);
        let _ = stranger.send_to(&[0x80, 0x08], &dest);
        let _ = stranger.send_to(&rtp, &dest);
    }
    expect_ok(&t, p, Duration::from_secs(30));
    let malformed = t.metric("tapir_rtp_packets_dropped_total{reason=\"malformed\"}");
    let strangers = t.metric("tapir_rtp_packets_dropped_total{reason=\"unexpected_source\"}");
    // Two legs in use: each got two malformed datagrams and one stranger packet.
    assert_eq!(malformed, 4.0, "{}", t.metrics());
    assert_eq!(strangers, 2.0, "{}", t.metrics());
    assert_clean(&t);
}

fn options(branch: &str, port: u16) -> String {
    format!(
        "OPTIONS sip:tapir@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n\
         From: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:tapir@127.0.0.1>\r\nCall-ID: {branch}@probe\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn crlf_keepalives_are_answered_on_tcp_and_never_parse_errors() {
    use std::io::{Read, Write};
    let t = Tapir::start(
        BIN,
        &route(free_port("127.0.0.1"), "udp", "127.0.0.1"),
        TapirOptions::default(),
    );
    // RFC 5626 §3.5.1 over TCP: a double CRLF (here split across two segments) is a ping and
    // gets a single CRLF back.
    let mut s = std::net::TcpStream::connect(t.sip()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(b"\r\n").unwrap();
    s.flush().unwrap();
    s.write_all(b"\r\n").unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).expect("a pong");
    assert_eq!(&pong, b"\r\n");
    // A lone CRLF is no ping: the next bytes tapir sends are the answer to the request after it.
    s.write_all(format!("\r\n{}", options("ka1", port)).as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"SIP/2.0 200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Over UDP, phones send CRLFs as NAT keep-alives: no answer, no parse error.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    u.send_to(b"\r\n\r\n", t.sip()).unwrap();
    u.send_to(b"\r\n", t.sip()).unwrap();
    // The TCP ping and both datagrams; a lone CRLF on TCP is skipped by the framer uncounted.
    t.wait_metric("tapir_sip_keepalives_total", Duration::from_secs(5), |v| {
        v >= 3.0
    });
    assert_eq!(t.metric("tapir_sip_keepalives_total"), 3.0);
    assert_eq!(t.metric("tapir_sip_parse_errors_total"), 0.0, "{}", t.log());
    assert_eq!(
        t.metric("tapir_sip_messages_in_total"),
        1.0,
        "only the OPTIONS"
    );
    assert!(u.recv(&mut buf).is_err(), "a UDP keep-alive got an answer");
    assert!(
        !t.log().contains("unparsable"),
        "keep-alives logged as unparsable:\n{}",
        t.log()
    );
}

#[test]
fn tcp_framing_partial_and_batched_reads_and_idle_close() {
    use std::io::{Read, Write};
    let t = Tapir::start(
        BIN,
        &route(free_port("127.0.0.1"), "udp", "127.0.0.1"),
        TapirOptions {
            env: vec![("TAPIR_SIP__TCP_IDLE_TIMEOUT_S".into(), "1".into())],
            ..Default::default()
        },
    );
    let mut s = std::net::TcpStream::connect(t.sip()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = s.local_addr().unwrap().port();
    // Two requests in one write, then one split across three writes with CRLF keep-alives
    // in between.
    let batch = format!("{}{}", options("a1", port), options("a2", port));
    s.write_all(batch.as_bytes()).unwrap();
    let third = options("a3", port);
    let (x, y) = third.split_at(37);
    s.write_all(b"\r\n\r\n").unwrap();
    s.write_all(x.as_bytes()).unwrap();
    s.flush().unwrap();
    // Not a synchronisation: the pause makes the two halves arrive as separate segments, so
    // tapir sees a partial message.
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(y.as_bytes()).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("SIP/2.0 200 OK").count() < 3 {
        let n = s.read(&mut buf).expect("three answers");
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    for b in ["a1", "a2", "a3"] {
        assert!(got.contains(&format!("branch=z9hG4bK{b}")), "{got}");
    }
    // Idle for longer than tcp_idle_timeout_s: tapir closes the connection.
    let started = std::time::Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the connection to be closed");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A TCP target that refuses the connection (nothing listens on its port): the caller gets
/// 503 as soon as the connect has failed (RFC 3261 §8.1.3.1), not 408 after Timer B, and
/// the call is counted as unreachable.
#[test]
fn a_tcp_target_that_refuses_the_connection_answers_503_at_once() {
    let dead = free_port("127.0.0.1");
    let routes = format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{dead};transport=tcp\"\ncustomer = \"caller\"\nrecord = \"never\"\n"
    );
    let t = Tapir::start(BIN, &routes, TapirOptions::default());
    let started = std::time::Instant::now();
    let outcome =
        tapir_tests::sdes::invite_user(t.sip_port, "1000", "m=audio {port} RTP/AVP 8\r\n", None);
    let tapir_tests::sdes::Outcome::Refused(status, _) = outcome else {
        panic!("answered through a port where nothing listens");
    };
    assert_eq!(status, 503, "{}", t.log());
    // Timer B would be 32 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    t.wait_metric(
        "tapir_calls_total{outcome=\"unreachable\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("TCP connect failed") && l.contains(&format!("127.0.0.1:{dead}"))
    });
}
