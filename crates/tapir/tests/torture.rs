//! RFC 4475 and RFC 5118 torture messages sent byte-exact to the real `tapir` binary, one
//! test per file and transport, each checking what tapir visibly does with it.
//!
//! The messages are read from `shared/sip-torture` beside the repository; in a plain clone
//! without it every test says so and passes.
//!
//! Roles. toward the sender of a request, tapir is the UAS that terminates it; toward the next
//! hop it is a UAC that sends a request of its own. So where a section speaks of "an endpoint"
//! or "a UAS", that rule applies; where it speaks of "a proxy", tapir follows it only where it
//! relays like one: Max-Forwards (a B2BUA that relays must break loops) and REGISTER, which the
//! registration relay passes to the registrar, whose rules (authentication, AOR syntax) are the
//! registrar's to apply. For responses tapir is the UAC: one that matches none of its
//! transactions is dropped, never relayed.
//!
//! Set-up, per test: a tapir whose one route and whose registrar both target a UDP socket the
//! test owns on 127.0.0.1 (the next hop), so nothing a message names (example.com, 192.0.2.x,
//! 255.255.255.255, IPv6 documentation addresses) is ever contacted; tapir resolves no names.
//! The sender binds a loopback address of its own (127.x.y.z) at the port of the message's top
//! Via, because RFC 3261 §18.2.2 sends a UDP response to the source IP and the Via port; a
//! response therefore reaches the sender whether tapir follows the Via or `rport`.
//!
//! After every case: tapir still answers an OPTIONS, `tapir_sip_parse_errors_total` counted the
//! case exactly when the parser had to reject it, `GET /calls` is `[]`, and
//! `tapir_sip_messages_out_total` equals what the test's own sockets received (so tapir sent
//! nothing anywhere else). `whole_run_*` sends every file into one tapir and checks it survives.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sip::{HeaderAccess, Message, Method};
use tapir_tests::{free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

/// How long a case waits for something that must come (a response, a relayed request).
const WAIT: Duration = Duration::from_secs(5);

/// How long a case listens to show that nothing comes. Silence has no event to wait for; this
/// is far above loopback delivery plus tapir's handling of one message (well under a
/// millisecond), and it is the only fixed wait in these tests.
const SILENCE: Duration = Duration::from_millis(300);

/// What the sender (and the next hop) see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The parser refuses the request; tapir answers this status statelessly (a parse error).
    Bad(u16),
    /// Well formed; `sip::check_request_semantics` refuses it with this status.
    Refused(u16),
    /// Well formed; tapir answers it itself with this status.
    Answered(u16),
    /// A new INVITE tapir routes: 100 Trying, a fresh INVITE to the next hop, whose 486
    /// comes back to the sender.
    Forwarded,
    /// A REGISTER the registration relay passes to the registrar; the registrar's answer
    /// (200, or 401 to an Authorization it cannot read) comes back with this status.
    Relayed(u16),
    /// A response the parser refuses: dropped, nothing sent (a parse error).
    Dropped,
    /// A well-formed response that matches none of tapir's transactions: discarded.
    Discarded,
    /// Stream only: the framing is unknowable, tapir closes the connection.
    Closed,
    /// Stream only: Content-Length promises more than came; tapir waits for the rest.
    Waits,
}
use Expect::*;

impl Expect {
    fn parse_errors(self) -> f64 {
        match self {
            Bad(_) | Dropped => 1.0,
            _ => 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Over {
    Udp,
    Tcp,
}

struct Case {
    name: &'static str,
    file: &'static str,
    section: &'static str,
    udp: Expect,
    /// The verdict on a stream, where it differs from the datagram one.
    tcp: Option<Expect>,
    /// Further checks on the final response the sender got.
    check: fn(&sip::Response),
}

fn no_check(_: &sip::Response) {}

/// The value given, else the default.
macro_rules! optional {
    ($default:expr;) => {
        $default
    };
    ($default:expr; $v:expr) => {
        $v
    };
}

macro_rules! cases {
    ($( $(#[doc = $doc:literal])* $name:ident: $file:literal, $section:literal => $udp:expr
        $(, tcp $tcp:expr)? $(, check $check:expr)? ;)*) => {
        const CASES: &[Case] = &[$(Case {
            name: stringify!($name),
            file: $file,
            section: $section,
            udp: $udp,
            tcp: optional!(None; $(Some($tcp))?),
            check: optional!(no_check; $($check)?),
        }),*];

        /// Every file over UDP, as the RFCs present them.
        mod udp {
            $( $(#[doc = $doc])* #[test] fn $name() { super::run(stringify!($name), super::Over::Udp); } )*
        }
    };
}

cases! {
    // ---- RFC 4475 §3.1.1: valid messages ----

    /// A tortuous but valid INVITE; its To carries a tag, so it names a dialog tapir does not
    /// have: 481 (RFC 3261 §12.2.2).
    wsinv: "rfc4475/wsinv.dat", "4475 §3.1.1.1" => Answered(481);
    /// Valid, with a method nobody knows: a UAS answers 501 (RFC 3261 §8.2.1, §21.5.2).
    intmeth: "rfc4475/intmeth.dat", "4475 §3.1.1.2" => Answered(501);
    /// Valid %-escapes: routed; the escaped user reaches the next hop as received.
    esc01: "rfc4475/esc01.dat", "4475 §3.1.1.3" => Forwarded;
    /// Escaped NULs in a REGISTER: valid, relayed to the registrar.
    escnull: "rfc4475/escnull.dat", "4475 §3.1.1.4" => Relayed(200);
    /// `RE%47IST%45R` is not REGISTER but an unknown method: 501.
    esc02: "rfc4475/esc02.dat", "4475 §3.1.1.5" => Answered(501);
    /// No LWS between display name and `<`: valid OPTIONS, answered by tapir.
    lwsdisp: "rfc4475/lwsdisp.dat", "4475 §3.1.1.6" => Answered(200);
    /// Long values and many Vias: routed.
    longreq: "rfc4475/longreq.dat", "4475 §3.1.1.7" => Forwarded;
    /// A REGISTER followed by junk in the same datagram: the REGISTER is handled, the INVITE
    /// after it is ignored (RFC 3261 §18.3) and never reaches the next hop.
    dblreq: "rfc4475/dblreq.dat", "4475 §3.1.1.8" => Relayed(200);
    /// Semicolons in the user part: valid OPTIONS.
    semiuri: "rfc4475/semiuri.dat", "4475 §3.1.1.9" => Answered(200);
    /// Unknown transports in Via: valid OPTIONS.
    transports: "rfc4475/transports.dat", "4475 §3.1.1.10" => Answered(200);
    /// MESSAGE with a multipart body: valid; tapir knows MESSAGE but takes none out of a
    /// dialog: 405 with Allow (RFC 3261 §8.2.1).
    mpart01: "rfc4475/mpart01.dat", "4475 §3.1.1.11" => Answered(405), check |r| {
        assert!(r.headers.get("Allow").is_some_and(|a| a.contains("INVITE")), "Allow: {r:?}");
    };
    /// A 200 with an unusual reason phrase: valid, but no transaction of tapir's: discarded.
    unreason: "rfc4475/unreason.dat", "4475 §3.1.1.12" => Discarded;
    /// A 100 with an empty reason phrase: likewise discarded.
    noreason: "rfc4475/noreason.dat", "4475 §3.1.1.13" => Discarded;

    // ---- RFC 4475 §3.1.2: invalid messages ----

    badinv01: "rfc4475/badinv01.dat", "4475 §3.1.2.1" => Bad(400);
    /// Content-Length beyond the datagram: 400. On a stream the rest may still come, so
    /// tapir waits for it and answers nothing.
    clerr: "rfc4475/clerr.dat", "4475 §3.1.2.2" => Bad(400), tcp Waits;
    /// Negative Content-Length: 400; on a stream it cannot be framed, so the connection closes.
    ncl: "rfc4475/ncl.dat", "4475 §3.1.2.3" => Bad(400), tcp Closed;
    scalar02: "rfc4475/scalar02.dat", "4475 §3.1.2.4" => Bad(400);
    /// A bad response: dropped.
    scalarlg: "rfc4475/scalarlg.dat", "4475 §3.1.2.5" => Dropped;
    quotbal: "rfc4475/quotbal.dat", "4475 §3.1.2.6" => Bad(400);
    ltgtruri: "rfc4475/ltgtruri.dat", "4475 §3.1.2.7" => Bad(400);
    lwsruri: "rfc4475/lwsruri.dat", "4475 §3.1.2.8" => Bad(400);
    lwsstart: "rfc4475/lwsstart.dat", "4475 §3.1.2.9" => Bad(400);
    trws: "rfc4475/trws.dat", "4475 §3.1.2.10" => Bad(400);
    /// Headers in the Request-URI: the strict option the section offers, 400.
    escruri: "rfc4475/escruri.dat", "4475 §3.1.2.11" => Bad(400);
    baddate: "rfc4475/baddate.dat", "4475 §3.1.2.12" => Bad(400);
    regbadct: "rfc4475/regbadct.dat", "4475 §3.1.2.13" => Bad(400);
    badaspec: "rfc4475/badaspec.dat", "4475 §3.1.2.14" => Bad(400);
    baddn: "rfc4475/baddn.dat", "4475 §3.1.2.15" => Bad(400);
    /// SIP/7.0: 505.
    badvers: "rfc4475/badvers.dat", "4475 §3.1.2.16" => Bad(505);
    mismatch01: "rfc4475/mismatch01.dat", "4475 §3.1.2.17" => Bad(400);
    /// Unknown method whose CSeq method differs: 400, not 501.
    mismatch02: "rfc4475/mismatch02.dat", "4475 §3.1.2.18" => Bad(400);
    /// A status code beyond three digits: dropped.
    bigcode: "rfc4475/bigcode.dat", "4475 §3.1.2.19" => Dropped;

    // ---- RFC 4475 §3.2: transaction layer ----

    /// `branch=z9hG4bK` alone: handled as a new request (RFC 2543 matching), answered.
    badbranch: "rfc4475/badbranch.dat", "4475 §3.2.1" => Answered(200);

    // ---- RFC 4475 §3.3: application layer ----

    /// No Call-ID, From or To: 400, still sent back on the Via.
    insuf: "rfc4475/insuf.dat", "4475 §3.3.1" => Bad(400);
    /// Unknown Request-URI scheme: 416 (RFC 3261 §8.2.2.1).
    unkscm: "rfc4475/unkscm.dat", "4475 §3.3.2" => Refused(416);
    /// A registered scheme tapir does not route: 416.
    novelsc: "rfc4475/novelsc.dat", "4475 §3.3.3" => Refused(416);
    /// Non-SIP To, From and Contact in a REGISTER. It must parse (it does: no parse error);
    /// the AOR is then judged by whoever keeps bindings. tapir keeps them for the phones it
    /// relays and, as the registrar side of the relay, rejects a To that is not an
    /// address-of-record with 400, as the section says of a registrar.
    unksm2: "rfc4475/unksm2.dat", "4475 §3.3.4" => Answered(400);
    /// Require with unknown option tags: as the UAS, 420 listing them; Proxy-Require is for
    /// proxies and is not judged (RFC 3261 §8.2.2.3).
    bext01: "rfc4475/bext01.dat", "4475 §3.3.5" => Refused(420), check |r| {
        assert_eq!(
            r.headers.get("Unsupported"),
            Some("nothingSupportsThis, nothingSupportsThisEither")
        );
    };
    /// INVITE with a body of unknown type: a proxy would forward it, an endpoint answers 415.
    /// tapir must read the SDP to anchor the media, so it is the endpoint.
    invut: "rfc4475/invut.dat", "4475 §3.3.6" => Refused(415), check |r| {
        assert!(r.headers.get("Accept").is_some_and(|a| a.contains("application/sdp")), "{r:?}");
    };
    /// Unknown Authorization scheme: no 400; the registrar, which owns authentication, gets
    /// it untouched and challenges (401), and its challenge comes back.
    regaut01: "rfc4475/regaut01.dat", "4475 §3.3.7" => Relayed(401), check |r| {
        assert!(r.headers.get("WWW-Authenticate").is_some(), "{r:?}");
    };
    /// Several Call-ID, To, From, Max-Forwards, CSeq: 400.
    multi01: "rfc4475/multi01.dat", "4475 §3.3.8" => Bad(400);
    /// Two Content-Length values: 400 on a datagram; on a stream the framing is lost and the
    /// connection is closed.
    mcl01: "rfc4475/mcl01.dat", "4475 §3.3.9" => Bad(400), tcp Closed;
    /// A 200 with a second Via naming the broadcast address: tapir (the UAC) discards it and
    /// sends nothing anywhere, least of all to 255.255.255.255.
    bcast: "rfc4475/bcast.dat", "4475 §3.3.10" => Discarded;
    /// OPTIONS with Max-Forwards 0: tapir answers OPTIONS itself and never relays it, so it
    /// processes it as an endpoint would: 200.
    zeromf: "rfc4475/zeromf.dat", "4475 §3.3.11" => Answered(200);
    /// Contact parameter after an addr-spec: valid REGISTER, relayed.
    cparam01: "rfc4475/cparam01.dat", "4475 §3.3.12" => Relayed(200);
    /// URI parameter inside `<>`: valid REGISTER, relayed.
    cparam02: "rfc4475/cparam02.dat", "4475 §3.3.13" => Relayed(200);
    /// An escaped header in a Contact URI: valid REGISTER, relayed.
    regescrt: "rfc4475/regescrt.dat", "4475 §3.3.14" => Relayed(200);
    /// Accept without application/sdp on an INVITE: 406 with a Warning, the section's first
    /// option.
    sdp01: "rfc4475/sdp01.dat", "4475 §3.3.15" => Refused(406), check |r| {
        assert!(r.headers.get("Warning").is_some_and(|w| w.starts_with("399 ")), "{r:?}");
    };

    // ---- RFC 4475 §3.4: backward compatibility ----

    /// An RFC 2543 INVITE (no branch, no From tag, no Content-Length, no Max-Forwards):
    /// routed. On a stream a message without Content-Length cannot be framed (RFC 3261 §18.3).
    inv2543: "rfc4475/inv2543.dat", "4475 §3.4.1" => Forwarded, tcp Closed;

    // ---- RFC 5118 ----

    rfc5118_ipv6_good: "rfc5118/ipv6-good", "5118 §4.1" => Relayed(200);
    rfc5118_ipv6_bad: "rfc5118/ipv6-bad", "5118 §4.2" => Bad(400);
    rfc5118_port_ambiguous: "rfc5118/port-ambiguous", "5118 §4.3" => Relayed(200);
    rfc5118_port_unambiguous: "rfc5118/port-unambiguous", "5118 §4.4" => Relayed(200);
    /// Out-of-dialog BYE: 481.
    rfc5118_via_received_param_with_delim: "rfc5118/via-received-param-with-delim", "5118 §4.5" => Answered(481);
    rfc5118_via_received_param_no_delim: "rfc5118/via-received-param-no-delim", "5118 §4.5" => Answered(200);
    /// IPv6 in the SDP: routed; leg B's SDP names tapir's IPv4 media address.
    rfc5118_ipv6_in_sdp: "rfc5118/ipv6-in-sdp", "5118 §4.6" => Forwarded;
    /// Mixed IPv4/IPv6 Vias on an out-of-dialog BYE: 481.
    rfc5118_mult_ip_in_header: "rfc5118/mult-ip-in-header", "5118 §4.7" => Answered(481);
    rfc5118_mult_ip_in_sdp: "rfc5118/mult-ip-in-sdp", "5118 §4.8" => Forwarded;
    rfc5118_ipv4_mapped_ipv6: "rfc5118/ipv4-mapped-ipv6", "5118 §4.9" => Forwarded;
    rfc5118_ipv6_bug_abnf_3_colons: "rfc5118/ipv6-bug-abnf-3-colons", "5118 §4.10" => Bad(400);
    rfc5118_ipv6_correct_abnf_2_colons: "rfc5118/ipv6-correct-abnf-2-colons", "5118 §4.10" => Answered(200);
}

/// The files whose handling depends on the transport (framing by Content-Length), and those
/// whose top Via says TCP or TLS, sent over TCP.
mod tcp {
    macro_rules! tcp_cases {
        ($($name:ident),* $(,)?) => {
            $( #[test] fn $name() { super::run(stringify!($name), super::Over::Tcp); } )*
        };
    }
    tcp_cases!(
        clerr, ncl, mcl01, inv2543, intmeth, esc02, longreq, regaut01, scalar02, scalarlg, trws,
        unkscm, novelsc, bext01, wsinv
    );
}

fn dir() -> Option<PathBuf> {
    tapir_tests::shared_dir()
        .map(|d| d.join("sip-torture"))
        .filter(|d| d.is_dir())
}

fn load(file: &str) -> Option<Vec<u8>> {
    let Some(d) = dir() else {
        eprintln!("note: shared/sip-torture is absent; skipping torture case {file}");
        return None;
    };
    let p = d.join(file);
    Some(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// A loopback address of the sender's own per case and transport, so that concurrent tests
/// (and concurrent runs) never share a socket and a late message of one case cannot reach
/// another.
fn sender_ip(index: usize, over: Over) -> Ipv4Addr {
    let k = index * 2 + (over == Over::Tcp) as usize + 2;
    let run = 100 + (std::process::id() % 100) as u8;
    Ipv4Addr::new(127, run, (k / 200) as u8, (k % 200 + 10) as u8)
}

/// The port of the top Via's sent-by (5060 when absent), from the parsed message or, when it
/// does not parse, from the first Via line.
fn via_port(bytes: &[u8]) -> u16 {
    if let Ok(m) = sip::parse(bytes, true) {
        let via = match &m {
            Message::Request(r) => r.top_via(),
            Message::Response(r) => r.top_via(),
        };
        return via.and_then(|v| v.port).unwrap_or(5060);
    }
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("via") || n.eq_ignore_ascii_case("v")).then_some(v)
    });
    let Some(v) = line else { return 5060 };
    let sent_by = v.split_whitespace().nth(1).unwrap_or("");
    let host_port = sent_by.split([';', ',']).next().unwrap_or("");
    let port = match host_port.rsplit_once(']') {
        Some((_, rest)) => rest.strip_prefix(':'),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(5060)
}

enum Recv {
    Msg(Vec<u8>),
    Timeout,
    Closed,
}

/// The sender of the torture message: a UDP socket at the Via port, or a TCP connection.
enum Link {
    Udp(UdpSocket),
    Tcp { s: TcpStream, buf: Vec<u8> },
}

struct Peer {
    link: Link,
    tapir: SocketAddr,
    /// SIP messages received, to compare with what tapir says it sent.
    received: usize,
}

impl Peer {
    fn udp(ip: Ipv4Addr, port: u16, tapir: SocketAddr) -> Peer {
        let s = UdpSocket::bind((ip, port)).unwrap_or_else(|e| {
            panic!("cannot bind {ip}:{port} ({e}); the sender needs the port its Via names")
        });
        Peer {
            link: Link::Udp(s),
            tapir,
            received: 0,
        }
    }

    fn tcp(ip: Ipv4Addr, tapir: SocketAddr) -> Peer {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&SockAddr::from(SocketAddr::from((ip, 0)))).unwrap();
        s.connect_timeout(&SockAddr::from(tapir), WAIT).unwrap();
        Peer {
            link: Link::Tcp {
                s: s.into(),
                buf: Vec::new(),
            },
            tapir,
            received: 0,
        }
    }

    fn local(&self) -> SocketAddr {
        match &self.link {
            Link::Udp(s) => s.local_addr().unwrap(),
            Link::Tcp { s, .. } => s.local_addr().unwrap(),
        }
    }

    fn send(&mut self, data: &[u8]) {
        match &mut self.link {
            Link::Udp(s) => {
                s.send_to(data, self.tapir).unwrap();
            }
            Link::Tcp { s, .. } => s.write_all(data).unwrap(),
        }
    }

    fn recv(&mut self, wait: Duration) -> Recv {
        let end = Instant::now() + wait;
        match &mut self.link {
            Link::Udp(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                let mut buf = vec![0u8; 65536];
                match s.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        self.received += 1;
                        Recv::Msg(buf[..n].to_vec())
                    }
                    Err(_) => Recv::Timeout,
                }
            }
            Link::Tcp { s, buf } => loop {
                while buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
                    buf.remove(0);
                }
                if let Ok(Some(n)) = sip::frame_len(buf) {
                    self.received += 1;
                    return Recv::Msg(buf.drain(..n).collect());
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Recv::Timeout;
                }
                s.set_read_timeout(Some(left)).unwrap();
                let mut chunk = [0u8; 16384];
                match s.read(&mut chunk) {
                    Ok(0) => return Recv::Closed,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Recv::Timeout
                    }
                    Err(_) => return Recv::Closed,
                }
            },
        }
    }
}

/// The test's next hop and registrar: a UDP socket on 127.0.0.1.
struct Hop {
    sock: UdpSocket,
    received: usize,
}

impl Hop {
    fn recv(&mut self, wait: Duration) -> Option<(sip::Message, SocketAddr)> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        self.received += 1;
        let m = sip::parse(&buf[..n], true)
            .unwrap_or_else(|e| panic!("tapir sent an invalid message ({e}) to the next hop"));
        Some((m, from))
    }

    fn send(&self, m: &sip::Response, to: SocketAddr) {
        self.sock
            .send_to(&Message::Response(m.clone()).to_bytes(), to)
            .unwrap();
    }
}

struct World {
    tapir: Tapir,
    hop: Hop,
}

/// tapir with one route and the registration relay, both toward `port` on 127.0.0.1.
fn start(t1_ms: u64, port: u16) -> Tapir {
    let routes = format!(
        "[[routes]]\nname = \"torture\"\ntarget = \"sip:127.0.0.1:{port}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n"
    );
    let extra = format!(
        "[registrar]\ntarget = \"sip:127.0.0.1:{port}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n"
    );
    Tapir::start(
        BIN,
        &routes,
        TapirOptions {
            extra,
            t1_ms,
            // One call at a time needs four ports; a small block also keeps the many tapirs
            // of this file inside the harness's RTP port window.
            rtp_ports: 8,
            ..Default::default()
        },
    )
}

impl World {
    fn new() -> World {
        // Port 0: the kernel picks a free port, so no other test can take it in between.
        let sock = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        // A long T1: no retransmission may run while a case exchanges its few messages, so
        // what tapir sent and what the test received can be compared exactly.
        let tapir = start(2000, sock.local_addr().unwrap().port());
        World {
            tapir,
            hop: Hop { sock, received: 0 },
        }
    }
}

fn sip_addr(t: &Tapir) -> SocketAddr {
    t.sip().parse().unwrap()
}

fn parse_response(data: &[u8], ctx: &str) -> sip::Response {
    match sip::parse(data, true) {
        Ok(Message::Response(r)) => r,
        other => panic!(
            "{ctx}: tapir sent something that is not a valid response: {other:?}\n{}",
            String::from_utf8_lossy(data)
        ),
    }
}

/// Status, reason and head of a response that tapir made from a request it could not parse:
/// it repeats that request's headers, so it need not parse itself.
fn raw_response(data: &[u8], ctx: &str) -> (u16, String, String) {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("SIP/2.0"), "{ctx}: status line {line:?}");
    let status = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, parts.next().unwrap_or("").to_string(), head)
}

/// The first value of header `name` (long form or compact), as written.
fn first_header(text: &str, name: &str) -> Option<String> {
    let compact = match name {
        "Via" => "v",
        "CSeq" => "CSeq",
        _ => name,
    };
    text.split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact))
                .then(|| v.trim().to_string())
        })
}

/// The next final response, after any 100 Trying (only an INVITE may get one).
fn final_response(p: &mut Peer, req: Option<&sip::Request>, ctx: &str) -> sip::Response {
    loop {
        let data = match p.recv(WAIT) {
            Recv::Msg(d) => d,
            Recv::Timeout => panic!("{ctx}: no response within {WAIT:?}"),
            Recv::Closed => panic!("{ctx}: tapir closed the connection instead of answering"),
        };
        let r = parse_response(&data, ctx);
        if r.status >= 200 {
            return r;
        }
        assert_eq!(r.status, 100, "{ctx}: unexpected provisional response");
        assert!(
            req.is_some_and(|q| q.method == Method::Invite),
            "{ctx}: 100 Trying to a request that is not an INVITE"
        );
    }
}

/// The response belongs to the request: same Call-ID, CSeq and top Via branch.
fn assert_answers(r: &sip::Response, req: &sip::Request, ctx: &str) {
    assert_eq!(r.call_id(), req.call_id(), "{ctx}: Call-ID");
    assert_eq!(r.cseq(), req.cseq(), "{ctx}: CSeq");
    assert_eq!(
        r.top_via().and_then(|v| v.branch().map(str::to_string)),
        req.top_via().and_then(|v| v.branch().map(str::to_string)),
        "{ctx}: Via branch"
    );
}

/// ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3): the INVITE's top Via,
/// the response's To (with tapir's tag).
fn ack(invite: &sip::Request, r: &sip::Response) -> Vec<u8> {
    let via = invite.headers.get("Via").unwrap_or("");
    let from = r.headers.get("From").unwrap_or("");
    let to = r.headers.get("To").unwrap_or("");
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    format!(
        "ACK {} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {seq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        invite.uri,
        invite.call_id()
    )
    .into_bytes()
}

/// What tapir sent the next hop for a routed INVITE: a request of its own, toward the route
/// target only, with the media anchored on tapir.
fn check_forwarded(fwd: &sip::Request, orig: &sip::Request, hop: SocketAddr, ctx: &str) {
    assert_eq!(fwd.method, Method::Invite, "{ctx}");
    let uri = fwd.uri.to_string();
    assert!(
        uri.contains(&format!("127.0.0.1:{}", hop.port())),
        "{ctx}: Request-URI {uri}"
    );
    assert_eq!(
        fwd.uri.user(),
        orig.uri.user(),
        "{ctx}: the dialled user is kept"
    );
    assert_eq!(fwd.headers.count("Via"), 1, "{ctx}: only tapir's Via");
    assert!(
        fwd.top_via()
            .and_then(|v| v.branch().map(|b| b.starts_with("z9hG4bK")))
            .unwrap_or(false),
        "{ctx}: RFC 3261 branch"
    );
    assert_ne!(
        fwd.call_id(),
        orig.call_id(),
        "{ctx}: leg B has its own Call-ID"
    );
    assert_eq!(
        fwd.max_forwards(),
        Some(orig.max_forwards().unwrap_or(70) - 1),
        "{ctx}: Max-Forwards"
    );
    let sdp = sdp::Sdp::parse(&fwd.body).unwrap_or_else(|e| panic!("{ctx}: leg B SDP: {e}"));
    let i = sdp.audio_index().expect("audio");
    assert_eq!(
        sdp.connection(i),
        Some("127.0.0.1".parse().unwrap()),
        "{ctx}: audio anchored on tapir"
    );
    let theirs = sdp::Sdp::parse(&orig.body).unwrap();
    let j = theirs.audio_index().unwrap();
    assert_ne!(
        sdp.media[i].port, theirs.media[j].port,
        "{ctx}: tapir's RTP port"
    );
}

fn ping(t: &Tapir, ip: Ipv4Addr, over: Over, tag: &str) -> (sip::Response, usize) {
    let mut p = match over {
        Over::Udp => Peer::udp(ip, 0, sip_addr(t)),
        Over::Tcp => Peer::tcp(ip, sip_addr(t)),
    };
    let local = p.local();
    let tr = if over == Over::Udp { "UDP" } else { "TCP" };
    let msg = format!(
        "OPTIONS sip:ping@{tapir} SIP/2.0\r\nVia: SIP/2.0/{tr} {local};branch=z9hG4bK-ping-{tag};rport\r\nMax-Forwards: 70\r\nFrom: <sip:torture@{ip}>;tag=p{tag}\r\nTo: <sip:ping@{tapir}>\r\nCall-ID: ping-{tag}@{ip}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        tapir = sip_addr(t)
    );
    p.send(msg.as_bytes());
    let r = final_response(&mut p, None, &format!("OPTIONS after {tag}"));
    (r, p.received)
}

fn wait_no_calls(t: &Tapir, ctx: &str) {
    let end = Instant::now() + WAIT;
    loop {
        let (status, body) = t.http("GET", "/calls");
        if status == 200 && body.trim() == "[]" {
            return;
        }
        assert!(
            Instant::now() < end,
            "{ctx}: calls left behind: {status} {body}\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(name: &str, over: Over) {
    let (index, case) = CASES
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
        .expect("a case of the table");
    let Some(bytes) = load(case.file) else {
        return;
    };
    let expect = match over {
        Over::Udp => case.udp,
        Over::Tcp => case.tcp.unwrap_or(case.udp),
    };
    let ctx = format!(
        "{} (RFC {}, over {over:?}, expected {expect:?})",
        case.file, case.section
    );
    let mut w = World::new();
    let ip = sender_ip(index, over);
    let mut p = match over {
        Over::Udp => Peer::udp(ip, via_port(&bytes), sip_addr(&w.tapir)),
        Over::Tcp => Peer::tcp(ip, sip_addr(&w.tapir)),
    };
    // On a datagram the parser discards what follows the message (dblreq); on a stream the
    // request is what the Content-Length frames.
    let request = match sip::parse(&bytes, over == Over::Udp) {
        Ok(Message::Request(r)) => Some(r),
        _ => None,
    };
    p.send(&bytes);

    let hop_addr = w.hop.sock.local_addr().unwrap();
    match expect {
        Bad(status) => {
            let data = match p.recv(WAIT) {
                Recv::Msg(d) => d,
                _ => panic!("{ctx}: no answer within {WAIT:?}"),
            };
            let (got, reason, head) = raw_response(&data, &ctx);
            assert_eq!(got, status, "{ctx}: {got} {reason}");
            assert!(!reason.is_empty(), "{ctx}: the reason says what is wrong");
            // The answer copies the request's Via and CSeq (RFC 3261 §8.2.6.2), however broken
            // the rest of it is, so it travels back and matches the request's transaction.
            for name in ["Via", "CSeq"] {
                assert_eq!(
                    first_header(&head, name),
                    first_header(&String::from_utf8_lossy(&bytes), name),
                    "{ctx}: {name}"
                );
            }
        }
        Refused(status) | Answered(status) => {
            let req = request
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: must parse"));
            let r = final_response(&mut p, Some(req), &ctx);
            assert_eq!(r.status, status, "{ctx}: {} {}", r.status, r.reason);
            assert_answers(&r, req, &ctx);
            assert!(r.to_tag().is_some(), "{ctx}: To tag (RFC 3261 §8.2.6.2)");
            (case.check)(&r);
            if req.method == Method::Invite {
                p.send(&ack(req, &r));
            }
        }
        Forwarded => {
            let req = request.as_ref().expect("an INVITE");
            let (m, from) = w
                .hop
                .recv(WAIT)
                .unwrap_or_else(|| panic!("{ctx}: nothing reached the next hop"));
            let Message::Request(fwd) = m else {
                panic!("{ctx}: expected the INVITE at the next hop")
            };
            check_forwarded(&fwd, req, hop_addr, &ctx);
            let mut busy = fwd.response(486, "Busy Here");
            busy.headers
                .set("To", format!("{};tag=hop", fwd.headers.get("To").unwrap()));
            w.hop.send(&busy, from);
            match w.hop.recv(WAIT) {
                Some((Message::Request(a), _)) if a.method == Method::Ack => {}
                other => panic!("{ctx}: tapir must ACK the 486 hop by hop, got {other:?}"),
            }
            let r = final_response(&mut p, Some(req), &ctx);
            assert_eq!(r.status, 486, "{ctx}: the callee's answer comes back");
            assert_answers(&r, req, &ctx);
            p.send(&ack(req, &r));
        }
        Relayed(status) => {
            let req = request.as_ref().expect("a REGISTER");
            let (m, from) = w
                .hop
                .recv(WAIT)
                .unwrap_or_else(|| panic!("{ctx}: nothing reached the registrar"));
            let Message::Request(fwd) = m else {
                panic!("{ctx}: expected the REGISTER at the registrar")
            };
            assert_eq!(fwd.method, Method::Register, "{ctx}");
            assert_eq!(fwd.headers.count("Via"), 1, "{ctx}: only tapir's Via");
            assert_eq!(
                fwd.to().map(|t| t.uri),
                req.to().map(|t| t.uri),
                "{ctx}: the AOR"
            );
            assert_eq!(
                fwd.headers.get("Authorization"),
                req.headers.get("Authorization"),
                "{ctx}: credentials pass untouched"
            );
            let mut answer = if fwd.headers.get("Authorization").is_some() {
                let mut r = fwd.response(401, "Unauthorized");
                r.headers
                    .push("WWW-Authenticate", "Digest realm=\"torture\", nonce=\"n0\"");
                r
            } else {
                let mut r = fwd.response(200, "OK");
                for c in fwd.headers.get_all("Contact") {
                    r.headers.push("Contact", c.to_string());
                }
                r
            };
            answer
                .headers
                .set("To", format!("{};tag=reg", fwd.headers.get("To").unwrap()));
            w.hop.send(&answer, from);
            let r = final_response(&mut p, Some(req), &ctx);
            assert_eq!(r.status, status, "{ctx}: {} {}", r.status, r.reason);
            assert_answers(&r, req, &ctx);
            (case.check)(&r);
        }
        Dropped | Discarded | Waits => match p.recv(SILENCE) {
            Recv::Timeout => {}
            Recv::Msg(m) => panic!(
                "{ctx}: tapir answered what it must not:\n{}",
                String::from_utf8_lossy(&m)
            ),
            Recv::Closed => panic!("{ctx}: tapir closed the connection"),
        },
        Closed => loop {
            match p.recv(WAIT) {
                Recv::Closed => break,
                Recv::Timeout => panic!("{ctx}: the connection stayed open"),
                Recv::Msg(m) => {
                    // A 400 before closing is allowed; nothing else is.
                    assert_eq!(raw_response(&m, &ctx).0, 400, "{ctx}");
                }
            }
        },
    }
    let received = p.received;
    drop(p);
    after_case(&mut w, ip, over, &ctx, expect.parse_errors(), received);
}

/// What holds after any case: tapir alive, the parse error counted when there was one, no call
/// left, and every message tapir sent received by the test.
fn after_case(w: &mut World, ip: Ipv4Addr, over: Over, ctx: &str, parse_errors: f64, got: usize) {
    let (r, pinged) = ping(&w.tapir, ip, over, "after");
    assert_eq!(r.status, 200, "{ctx}: tapir still answers OPTIONS");
    wait_no_calls(&w.tapir, ctx);
    assert_eq!(
        w.tapir.metric("tapir_sip_parse_errors_total"),
        parse_errors,
        "{ctx}: tapir_sip_parse_errors_total"
    );
    // Nothing else went to the next hop (dblreq: the INVITE after the REGISTER is noise on a
    // datagram and must go nowhere).
    if let Some((m, _)) = w.hop.recv(Duration::from_millis(1)) {
        panic!("{ctx}: unexpected message at the next hop: {m:?}");
    }
    let expected_out = (got + pinged + w.hop.received) as f64;
    let out = w
        .tapir
        .wait_metric("tapir_sip_messages_out_total", WAIT, |v| v >= expected_out);
    assert_eq!(
        out,
        expected_out,
        "{ctx}: tapir sent {out} messages, the test's sockets received {expected_out}: \
         something went elsewhere\n{}",
        w.tapir.log()
    );
}

/// Every message file has a case, and the counts match the RFCs.
#[test]
fn every_torture_file_has_a_case() {
    let Some(d) = dir() else {
        eprintln!("note: shared/sip-torture is absent; skipping");
        return;
    };
    let mut on_disk = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(d.join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            on_disk.push(format!("{sub}/{name}"));
        }
    }
    on_disk.sort();
    let mut covered: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
    assert_eq!(on_disk.len(), 49 + 12);
}

/// Every file, over UDP and then the stream ones over TCP, into one tapir whose route and
/// registrar are a closed loopback port and whose T1 is 20 ms: the INVITEs and REGISTERs it
/// relays time out (408). Afterwards tapir answers OPTIONS, counted every parse error, and
/// holds no call.
#[test]
fn whole_run_leaves_tapir_healthy() {
    if dir().is_none() {
        eprintln!("note: shared/sip-torture is absent; skipping");
        return;
    }
    // Bound, then given up: nothing listens there, so whatever tapir relays gets no answer.
    let closed = UdpSocket::bind(("127.0.0.1", free_port("127.0.0.1"))).unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let tapir = start(20, closed_port);
    let addr: SocketAddr = tapir.sip().parse().unwrap();
    let ip = sender_ip(CASES.len() + 1, Over::Udp);
    let mut sockets: Vec<(u16, UdpSocket)> = Vec::new();
    let mut parse_errors = 0.0;
    let mut tcp_links = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let bytes = load(c.file).unwrap();
        let port = via_port(&bytes);
        if !sockets.iter().any(|(p, _)| *p == port) {
            sockets.push((port, UdpSocket::bind((ip, port)).unwrap()));
        }
        let s = &sockets.iter().find(|(p, _)| *p == port).unwrap().1;
        s.send_to(&bytes, addr).unwrap();
        parse_errors += c.udp.parse_errors();
        if let Some(t) = c.tcp {
            let mut s = Peer::tcp(sender_ip(i, Over::Tcp), addr);
            s.send(&bytes);
            parse_errors += t.parse_errors();
            tcp_links.push(s);
        }
    }
    // Every INVITE and REGISTER relayed to the closed port ends in Timer B/F (64*T1) and its
    // 408 in Timer H; the calls are gone once that ran.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = tapir.http("GET", "/calls");
        if status == 200 && body.trim() == "[]" {
            break;
        }
        assert!(
            Instant::now() < end,
            "calls left behind: {body}\n{}",
            tapir.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r, _) = ping(
        &tapir,
        sender_ip(CASES.len() + 2, Over::Udp),
        Over::Udp,
        "whole-run",
    );
    assert_eq!(r.status, 200);
    let (r, _) = ping(
        &tapir,
        sender_ip(CASES.len() + 2, Over::Tcp),
        Over::Tcp,
        "whole-run",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        tapir.metric("tapir_sip_parse_errors_total"),
        parse_errors,
        "every parse error counted once"
    );
    drop(tcp_links);
}
