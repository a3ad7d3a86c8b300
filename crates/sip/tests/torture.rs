//! RFC 4475 and RFC 5118 torture messages, one test per file, each with the verdict its RFC
//! section asks for.
//!
//! The messages are read at test time from `shared/sip-torture` beside the repository; in a
//! plain clone without it the tests say so and pass over the cases.
//!
//! tapir is a B2BUA: toward the sender of a request it is the UAS that terminates it, toward
//! the next hop it is a UAC that originates a new one. So where a section distinguishes "a
//! proxy" from "an endpoint/UAS", the UAS rule is the one applied (tapir never forwards the
//! received request itself), except for Max-Forwards, where a B2BUA that relays must behave like
//! a proxy to break loops, and for REGISTER, which tapir relays to the registrar untouched (the
//! registrar-only rules are the registrar's to apply). For responses, tapir is the UAC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sip::message::HeaderAccess;
use sip::transaction::{Event, Output, Peer, Timers, TransactionLayer};
use sip::{Host, Message, Method, Transport, Uri};

/// Option tags the test UAS claims to support; none of the torture messages need any.
const SUPPORTED: &[&str] = &["replaces", "timer"];

#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Parses, reprints to an equal message, and the UAS checks let it through.
    Accept,
    /// Parses and reprints, then the UAS checks refuse it with this status.
    Refuse(u16),
    /// The parser rejects the request; the answer it builds has this status.
    Reject(u16),
    /// A response the parser rejects: dropped, nothing is sent.
    Drop,
    /// A response that parses but that a UAC discards (RFC 3261 §8.1.3.3).
    Discard,
}
use Verdict::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sip-torture")
}

fn load(file: &str) -> Option<Vec<u8>> {
    let path = dir().join(file);
    if !dir().is_dir() {
        eprintln!(
            "note: {} is absent; skipping torture case {file}",
            dir().display()
        );
        return None;
    }
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Equality as the wire sees it: the printer always writes the Content-Length of the body it
/// holds, so a message that arrived without one (RFC 2543 style) gains it.
fn without_length(m: &Message) -> Message {
    let mut m = m.clone();
    match &mut m {
        Message::Request(r) => r.headers.remove("Content-Length"),
        Message::Response(r) => r.headers.remove("Content-Length"),
    }
    m
}

fn assert_reprints(m: &Message) {
    let printed = m.to_bytes();
    let again = sip::parse(&printed, true).expect("a printed message parses");
    assert_eq!(without_length(&again), without_length(m));
    assert_eq!(again.to_bytes(), printed, "printing is a fixed point");
    // The printed form carries an exact Content-Length, so it frames on a stream too.
    assert_eq!(sip::frame_len(&printed).unwrap(), Some(printed.len()));
    assert_eq!(sip::parse(&printed, false).unwrap(), again);
}

fn client() -> Peer {
    Peer {
        addr: "192.0.2.99:5060".parse::<SocketAddr>().unwrap(),
        transport: Transport::Udp,
    }
}

/// Whatever the verdict, the message must not leave anything behind in the transaction layer:
/// the request is answered (with `status`) and every timer is run out.
fn settles_in_transaction_layer(m: &Message, status: u16) {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    layer.handle_message(t0, m.clone(), client());
    let mut answered = 0;
    let mut steps = 0;
    let mut now = t0;
    loop {
        while let Some(o) = layer.poll_output() {
            match o {
                Output::Event(Event::Request { key, request, .. }) => {
                    answered += 1;
                    layer.respond(now, &key, request.response(status, "Torture"));
                }
                Output::Transmit { data, .. } => {
                    sip::parse(&data, true).expect("the layer only sends valid messages");
                }
                Output::Event(_) => {}
            }
        }
        let Some(at) = layer.poll_timeout() else {
            break;
        };
        now = at;
        layer.handle_timeout(at);
        steps += 1;
        assert!(steps < 1000 && now - t0 < Duration::from_secs(300));
    }
    if let Message::Request(r) = m {
        if r.method != Method::Ack {
            assert_eq!(answered, 1, "a new request opens exactly one transaction");
        }
    }
    assert_eq!(layer.len(), 0);
}

fn run(file: &str, verdict: Verdict, extra: &[fn(&Message)]) {
    let Some(bytes) = load(file) else {
        return;
    };
    let parsed = sip::parse(&bytes, true);
    // The stream entry points must survive the same bytes.
    let _ = sip::frame_len(&bytes);
    let _ = sip::parse(&bytes, false);
    match verdict {
        Accept | Refuse(_) | Discard => {
            let m = parsed.unwrap_or_else(|e| panic!("{file} must parse: {e}"));
            assert_reprints(&m);
            match (&m, verdict) {
                (Message::Request(r), Accept) => {
                    assert_eq!(sip::check_request_semantics(r, SUPPORTED), Ok(()));
                    settles_in_transaction_layer(&m, 200);
                }
                (Message::Request(r), Refuse(status)) => {
                    let rej = sip::check_request_semantics(r, SUPPORTED)
                        .expect_err("the UAS checks must refuse it");
                    assert_eq!(rej.status, status, "{}", rej.reason);
                    let resp = rej.response(r);
                    assert_eq!(resp.status, status);
                    let again = sip::parse(&resp.to_bytes(), true).expect("the answer is valid");
                    assert_eq!(again.headers().get("Call-ID"), Some(r.call_id()));
                    settles_in_transaction_layer(&m, status);
                }
                (Message::Response(r), Accept) => {
                    assert_eq!(sip::check_response_semantics(r), Ok(()));
                    settles_in_transaction_layer(&m, 200);
                }
                (Message::Response(r), Discard) => {
                    assert!(sip::check_response_semantics(r).is_err());
                    settles_in_transaction_layer(&m, 200);
                }
                (m, v) => panic!("{file}: verdict {v:?} does not fit {m:?}"),
            }
            for f in extra {
                f(&m);
            }
        }
        Reject(status) => {
            let e = parsed.expect_err("the parser must reject it");
            let resp = e
                .response()
                .unwrap_or_else(|| panic!("{file}: a {status} must be sent ({e})"));
            assert_eq!(resp.status, status, "{e}");
            // It travels back on the request's Via and matches its transaction by CSeq.
            let text = String::from_utf8_lossy(&bytes);
            let first = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                    })
                    .map(str::to_string)
            };
            assert_eq!(resp.headers.get("Via").map(str::to_string), first("Via"));
            assert_eq!(resp.headers.get("CSeq").map(str::to_string), first("CSeq"));
            assert_eq!(resp.headers.count("To"), first("To").iter().count());
            assert!(resp.headers.count("From") <= 1 && resp.headers.count("Call-ID") <= 1);
            assert!(extra.is_empty());
        }
        Drop => {
            let e = parsed.expect_err("the parser must reject it");
            assert!(
                e.response().is_none(),
                "a bad response is dropped, never answered"
            );
            assert!(extra.is_empty());
        }
    }
}

fn req(m: &Message) -> &sip::Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

fn resp(m: &Message) -> &sip::Response {
    match m {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response"),
    }
}

fn sip_uri(u: &Uri) -> &sip::SipUri {
    u.sip().expect("a SIP URI")
}

macro_rules! torture {
    ($( $(#[doc = $doc:literal])* $name:ident: $file:literal => $verdict:expr $(, $extra:expr)? ;)*) => {
        /// Every file the table covers, to prove none is missing.
        const CASES: &[&str] = &[$($file),*];
        $(
            $(#[doc = $doc])*
            #[test]
            fn $name() {
                run($file, $verdict, &[$($extra)?]);
            }
        )*
    };
}

torture! {
    // ---- RFC 4475 §3.1.1: valid messages, must be accepted ----

    /// §3.1.1.1 A short tortuous INVITE: LWS, folding, compact and mixed-case names, empty
    /// Subject, unknown headers with odd values. All legal.
    wsinv: "rfc4475/wsinv.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.method, Method::Invite);
        assert!(sip_uri(&r.uri).params.contains("unknownparam"));
        assert_eq!(r.to_tag().as_deref(), Some("1918181833n"));
        assert_eq!(r.from_tag().as_deref(), Some("98asjd8"));
        assert_eq!(r.from().unwrap().display.as_deref(), Some("\"J Rosenberg \\\\\\\"\""));
        assert_eq!(r.max_forwards(), Some(68));
        assert_eq!(r.cseq().unwrap().seq, 9);
        assert_eq!(r.headers.get_all("Via").count(), 3);
        assert_eq!(r.top_via().unwrap().branch(), Some("390skdjuw"));
        assert_eq!(r.headers.get("Subject"), Some(""));
        assert_eq!(
            r.headers.get("NewFangledHeader"),
            Some("newfangled value continued newfangled value")
        );
        assert_eq!(r.headers.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
        assert_eq!(r.contact().unwrap().params.value("q"), Some("0.33"));
        assert_eq!(r.body.len(), 150);
    };
    /// §3.1.1.2 Wide range of valid characters in method, URI user and password, tokens,
    /// quoted strings and Call-ID.
    intmeth: "rfc4475/intmeth.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.method, Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into()));
        let u = sip_uri(&r.uri);
        assert_eq!(u.host, Host::Name("example.com".into()));
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert!(u.headers.is_none(), "the '?' belongs to the user part");
        assert_eq!(r.from_tag().as_deref(), Some("_token~1'+`*%!-."));
    };
    /// §3.1.1.3 Valid %-escapes in URIs; they are kept as received, not unescaped.
    esc01: "rfc4475/esc01.dat" => Accept, |m| {
        let r = req(m);
        let u = sip_uri(&r.uri);
        assert_eq!(u.user.as_deref(), Some("sips%3Auser%40example.com"));
        assert_eq!(u.host, Host::Name("example.net".into()));
    };
    /// §3.1.1.4 Escaped NULs in URIs are legal and must not truncate anything.
    escnull: "rfc4475/escnull.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.headers.get_all("Contact").count(), 2);
        assert_eq!(r.to().unwrap().uri.user(), Some("null-%00-null"));
    };
    /// §3.1.1.5 '%' that is not an escape, in a method and a header name: `C%6Fntact` is an
    /// unknown header, not Contact.
    esc02: "rfc4475/esc02.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
        assert_eq!(r.headers.get_all("Contact").count(), 2);
        assert_eq!(r.headers.get("C%6Fntact"), Some("<sip:alias2@host2.example.com>"));
    };
    /// §3.1.1.6 No LWS between display name and '<' is legal.
    lwsdisp: "rfc4475/lwsdisp.dat" => Accept, |m| {
        assert_eq!(req(m).from().unwrap().display.as_deref(), Some("caller"));
    };
    /// §3.1.1.7 Very long header values and many Via entries.
    longreq: "rfc4475/longreq.dat" => Accept, |m| {
        let r = req(m);
        assert!(r.headers.get_all("Via").count() > 10);
        assert!(r.headers.0.iter().any(|(_, v)| v.len() > 500));
    };
    /// §3.1.1.8 Extra octets after the message in a UDP datagram are discarded: this is one
    /// REGISTER; the INVITE after it is ignored.
    dblreq: "rfc4475/dblreq.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.method, Method::Register);
        assert!(r.body.is_empty());
    };
    /// §3.1.1.9 Semicolons in the user part are user parameters, not URI parameters.
    semiuri: "rfc4475/semiuri.dat" => Accept, |m| {
        let r = req(m);
        let u = sip_uri(&r.uri);
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        assert!(u.params.is_empty());
        assert_eq!(r.headers.get_all("Accept").count(), 6);
    };
    /// §3.1.1.10 Varied and unknown transports in Via; an unknown one is kept by name.
    transports: "rfc4475/transports.dat" => Accept, |m| {
        let names: Vec<String> = req(m)
            .headers
            .get_all("Via")
            .map(|v| sip::Via::parse(v).unwrap().transport_name.into_owned())
            .collect();
        assert_eq!(names, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    };
    /// §3.1.1.11 A multipart MIME body (MESSAGE: tapir relays it without reading it).
    mpart01: "rfc4475/mpart01.dat" => Accept, |m| {
        let r = req(m);
        assert!(r.body.starts_with(b"--7a9cbec02ceef655"));
        assert!(r.headers.get("Content-Type").unwrap().starts_with("multipart/mixed"));
    };
    /// §3.1.1.12 A UTF-8 reason phrase with unusual characters is kept as is.
    unreason: "rfc4475/unreason.dat" => Accept, |m| {
        let r = resp(m);
        assert_eq!(r.status, 200);
        assert!(r.reason.starts_with("= 2**3 * 5**2 "));
        assert!(r.reason.ends_with(" - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}"));
    };
    /// §3.1.1.13 An empty reason phrase is legal.
    noreason: "rfc4475/noreason.dat" => Accept, |m| {
        assert_eq!(resp(m).status, 100);
        assert_eq!(resp(m).reason, "");
    };

    // ---- RFC 4475 §3.1.2: invalid messages, must be rejected ----

    /// §3.1.2.1 Empty Via and Contact parameters (`;;,;,,`): 400.
    badinv01: "rfc4475/badinv01.dat" => Reject(400);
    /// §3.1.2.2 Content-Length larger than the datagram: 400 (on UDP the element answers).
    clerr: "rfc4475/clerr.dat" => Reject(400);
    /// §3.1.2.3 Negative Content-Length: 400.
    ncl: "rfc4475/ncl.dat" => Reject(400);
    /// §3.1.2.4 Overlarge CSeq (and Max-Forwards, Expires): 400 for the CSeq.
    scalar02: "rfc4475/scalar02.dat" => Reject(400);
    /// §3.1.2.5 A response with overlarge CSeq and Retry-After: dropped.
    scalarlg: "rfc4475/scalarlg.dat" => Drop;
    /// §3.1.2.6 Unterminated quoted string in a display name: 400.
    quotbal: "rfc4475/quotbal.dat" => Reject(400);
    /// §3.1.2.7 Request-URI enclosed in <>: 400.
    ltgtruri: "rfc4475/ltgtruri.dat" => Reject(400);
    /// §3.1.2.8 LWS inside the Request-URI: 400.
    lwsruri: "rfc4475/lwsruri.dat" => Reject(400);
    /// §3.1.2.9 Several SP between Request-Line elements: 400.
    lwsstart: "rfc4475/lwsstart.dat" => Reject(400);
    /// §3.1.2.10 Trailing SP at the end of the Request-Line: 400.
    trws: "rfc4475/trws.dat" => Reject(400);
    /// §3.1.2.11 Escaped headers in the Request-URI, which allows none: tapir takes the
    /// strict option the section offers, 400.
    escruri: "rfc4475/escruri.dat" => Reject(400);
    /// §3.1.2.12 Date in EST instead of GMT: 400.
    baddate: "rfc4475/baddate.dat" => Reject(400);
    /// §3.1.2.13 A Contact URI with headers must be in <>: 400.
    regbadct: "rfc4475/regbadct.dat" => Reject(400);
    /// §3.1.2.14 Whitespace inside <> around an addr-spec: 400.
    badaspec: "rfc4475/badaspec.dat" => Reject(400);
    /// §3.1.2.15 Non-token characters (a comma) in an unquoted display name: 400.
    baddn: "rfc4475/baddn.dat" => Reject(400);
    /// §3.1.2.16 SIP/7.0: 505, answered even though the Via says SIP/7.0 too.
    badvers: "rfc4475/badvers.dat" => Reject(505);
    /// §3.1.2.17 Request-Line method and CSeq method differ: 400.
    mismatch01: "rfc4475/mismatch01.dat" => Reject(400);
    /// §3.1.2.18 Unknown method with a CSeq method that differs: 400, not 501.
    mismatch02: "rfc4475/mismatch02.dat" => Reject(400);
    /// §3.1.2.19 A response with a status code beyond three digits: dropped.
    bigcode: "rfc4475/bigcode.dat" => Drop;

    // ---- RFC 4475 §3.2: transaction layer ----

    /// §3.2.1 `branch=z9hG4bK` with no identifier: well formed; the transaction layer falls
    /// back to RFC 2543 matching (the section's second option) instead of lumping every such
    /// request into one transaction.
    badbranch: "rfc4475/badbranch.dat" => Accept, |m| {
        let mut layer = TransactionLayer::new(Timers::default());
        layer.handle_message(Instant::now(), m.clone(), client());
        let Some(Output::Event(Event::Request { key, .. })) = layer.poll_output() else {
            panic!("expected a new request")
        };
        assert!(key.branch().starts_with("2543:"), "{key:?}");
    };

    // ---- RFC 4475 §3.3: application layer (parse, then the element decides) ----

    /// §3.3.1 No Call-ID, From or To: "ideally a 400". The parser already refuses it, and the
    /// 400 still goes back on the Via with the CSeq.
    insuf: "rfc4475/insuf.dat" => Reject(400);
    /// §3.3.2 Unknown Request-URI scheme: parses; the UAS answers 416.
    unkscm: "rfc4475/unkscm.dat" => Refuse(416);
    /// §3.3.3 A registered scheme tapir never routes (soap.beep): treated as unknown, 416.
    novelsc: "rfc4475/novelsc.dat" => Refuse(416);
    /// §3.3.4 Unknown schemes in To, From and Contact of a REGISTER: must parse. Only a
    /// registrar rejects it (400, To must be SIP); tapir relays REGISTER to the registrar, so it
    /// lets it through.
    unksm2: "rfc4475/unksm2.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.to().unwrap().uri, Uri::Other("isbn:2983792873".into()));
        assert_eq!(r.contact().unwrap().uri, Uri::Other("name:John_Smith".into()));
    };
    /// §3.3.5 Unsupported Require and Proxy-Require: as the UAS, tapir answers 420 listing the
    /// Require tags; Proxy-Require is for proxies and is not judged.
    bext01: "rfc4475/bext01.dat" => Refuse(420), |m| {
        let rej = sip::check_request_semantics(req(m), SUPPORTED).unwrap_err();
        let resp = rej.response(req(m));
        assert_eq!(
            resp.headers.get("Unsupported"),
            Some("nothingSupportsThis, nothingSupportsThisEither")
        );
    };
    /// §3.3.6 INVITE with a body of unknown type: a proxy would forward it, an endpoint answers
    /// 415. tapir must read the session description to anchor media, so it is the endpoint.
    invut: "rfc4475/invut.dat" => Refuse(415), |m| {
        let rej = sip::check_request_semantics(req(m), SUPPORTED).unwrap_err();
        assert!(rej.headers.iter().any(|(n, v)| n == "Accept" && v.contains("application/sdp")));
    };
    /// §3.3.7 Unknown Authorization scheme: parses; relayed untouched to the registrar, which
    /// decides.
    regaut01: "rfc4475/regaut01.dat" => Accept, |m| {
        assert_eq!(
            req(m).headers.get("Authorization"),
            Some("NoOneKnowsThisScheme opaque-data=here")
        );
    };
    /// §3.3.8 Several Call-ID, To, From, Max-Forwards and CSeq: 400.
    multi01: "rfc4475/multi01.dat" => Reject(400);
    /// §3.3.9 Two different Content-Length values: the framing is unknowable, 400 (and on a
    /// stream the connection is closed, which `frame_len` reports as an error).
    mcl01: "rfc4475/mcl01.dat" => Reject(400);
    /// §3.3.10 A 200 with a second Via naming 255.255.255.255: well formed, but an endpoint
    /// discards it (more than one Via); tapir is the UAC here.
    bcast: "rfc4475/bcast.dat" => Discard;
    /// §3.3.11 OPTIONS with Max-Forwards 0: a proxy must not forward it but may answer an
    /// OPTIONS itself (RFC 3261 §16.3 item 3), and an endpoint processes it. Either way tapir
    /// answers it locally: accepted.
    zeromf: "rfc4475/zeromf.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.max_forwards(), Some(0));
        // The same request as an INVITE would be relayed, so it is a loop: 483.
        let mut invite = r.clone();
        invite.method = Method::Invite;
        invite.headers.set("CSeq", "39234321 INVITE");
        assert_eq!(sip::check_request_semantics(&invite, SUPPORTED).unwrap_err().status, 483);
    };
    /// §3.3.12 `;unknownparam` after an addr-spec Contact is a Contact parameter, not a URI
    /// parameter.
    cparam01: "rfc4475/cparam01.dat" => Accept, |m| {
        let c = req(m).contact().unwrap();
        assert!(c.params.contains("unknownparam"));
        assert!(sip_uri(&c.uri).params.is_empty());
    };
    /// §3.3.13 Inside <>, `;unknownparam` is a URI parameter.
    cparam02: "rfc4475/cparam02.dat" => Accept, |m| {
        let c = req(m).contact().unwrap();
        assert!(c.params.is_empty());
        assert!(sip_uri(&c.uri).params.contains("unknownparam"));
    };
    /// §3.3.14 A Contact URI with an escaped header, in <>: valid, kept for the registrar.
    regescrt: "rfc4475/regescrt.dat" => Accept, |m| {
        let c = req(m).contact().unwrap();
        assert_eq!(
            sip_uri(&c.uri).headers.as_deref(),
            Some("Route=%3Csip:sip.example.com%3E")
        );
    };
    /// §3.3.15 INVITE whose Accept rules out SDP: the answer could not carry tapir's SDP, so
    /// 406 with a Warning, the first option the section gives.
    sdp01: "rfc4475/sdp01.dat" => Refuse(406);

    // ---- RFC 4475 §3.4: backward compatibility ----

    /// §3.4.1 RFC 2543 INVITE: no branch, no From tag, no Content-Length, no Max-Forwards.
    /// Accepted; the body is the rest of the datagram and transactions match the 2543 way.
    inv2543: "rfc4475/inv2543.dat" => Accept, |m| {
        let r = req(m);
        assert_eq!(r.top_via().unwrap().branch(), None);
        assert_eq!(r.from_tag(), None);
        assert_eq!(r.max_forwards(), None);
        assert!(r.body.starts_with(b"v=0") && r.body.ends_with(b"RTP/AVP 0\r\n"));
        let mut layer = TransactionLayer::new(Timers::default());
        layer.handle_message(Instant::now(), m.clone(), client());
        layer.poll_output(); // 100 Trying
        let Some(Output::Event(Event::Request { key, .. })) = layer.poll_output() else {
            panic!("expected a new request")
        };
        assert!(key.branch().starts_with("2543:"));
    };

    // ---- RFC 5118 ----

    /// RFC 5118 §4.1 IPv6 reference in the Request-URI, Via and Contact: valid.
    rfc5118_ipv6_good: "rfc5118/ipv6-good" => Accept, |m| {
        assert_eq!(sip_uri(&req(m).uri).host, Host::V6("2001:db8::10".into()));
    };
    /// RFC 5118 §4.2 IPv6 address without brackets in a SIP URI: 400.
    rfc5118_ipv6_bad: "rfc5118/ipv6-bad" => Reject(400);
    /// RFC 5118 §4.3 `[2001:db8::10:5070]` is a valid address with no port: accepted, and
    /// the port is not guessed.
    rfc5118_port_ambiguous: "rfc5118/port-ambiguous" => Accept, |m| {
        let u = sip_uri(&req(m).uri);
        assert_eq!(u.host, Host::V6("2001:db8::10:5070".into()));
        assert_eq!(u.port, None);
    };
    /// RFC 5118 §4.4 `[2001:db8::10]:5070`: address and port.
    rfc5118_port_unambiguous: "rfc5118/port-unambiguous" => Accept, |m| {
        let u = sip_uri(&req(m).uri);
        assert_eq!(u.host, Host::V6("2001:db8::10".into()));
        assert_eq!(u.port, Some(5070));
    };
    /// RFC 5118 §4.5 `received=[2001:db8::9:255]`: RFC 3261's grammar has no brackets there,
    /// but the section asks implementations to accept both forms.
    rfc5118_via_received_param_with_delim: "rfc5118/via-received-param-with-delim" => Accept, |m| {
        let v = req(m).top_via().unwrap();
        assert_eq!(v.params.value("received"), Some("[2001:db8::9:255]"));
    };
    /// RFC 5118 §4.5 `received=2001:db8::9:255`, the RFC 3261 form: accepted.
    rfc5118_via_received_param_no_delim: "rfc5118/via-received-param-no-delim" => Accept, |m| {
        let v = req(m).top_via().unwrap();
        assert_eq!(v.params.value("received"), Some("2001:db8::9:255"));
    };
    /// RFC 5118 §4.6 IPv6 addresses in the SDP body: the SIP layer passes the body through.
    rfc5118_ipv6_in_sdp: "rfc5118/ipv6-in-sdp" => Accept, |m| {
        assert!(String::from_utf8_lossy(&req(m).body).contains("c=IN IP6 2001:db8::20"));
    };
    /// RFC 5118 §4.7 IPv4 and IPv6 addresses mixed in the Via list: valid.
    rfc5118_mult_ip_in_header: "rfc5118/mult-ip-in-header" => Accept, |m| {
        let vias: Vec<sip::Via> = req(m)
            .headers
            .get_all("Via")
            .map(|v| sip::Via::parse(v).unwrap())
            .collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].host, Host::V6("2001:db8::9:1".into()));
        assert_eq!(vias[0].port, Some(6050));
        assert_eq!(vias[1].host, Host::Name("192.0.2.1".into()));
        assert_eq!(vias[2].params.value("received"), Some("192.0.2.200"));
    };
    /// RFC 5118 §4.8 IPv4 and IPv6 connection lines in one SDP: valid for SIP.
    rfc5118_mult_ip_in_sdp: "rfc5118/mult-ip-in-sdp" => Accept;
    /// RFC 5118 §4.9 IPv4-mapped IPv6 addresses: valid.
    rfc5118_ipv4_mapped_ipv6: "rfc5118/ipv4-mapped-ipv6" => Accept, |m| {
        let v = req(m).top_via().unwrap();
        assert_eq!(v.host, Host::V6("::ffff:192.0.2.10".into()));
        assert_eq!(v.port, Some(19823));
    };
    /// RFC 5118 §4.10 `2001:db8:::192.0.2.1` (three colons) is not an IPv6 address: 400.
    rfc5118_ipv6_bug_abnf_3_colons: "rfc5118/ipv6-bug-abnf-3-colons" => Reject(400);
    /// RFC 5118 §4.10 `2001:db8::192.0.2.1`: valid.
    rfc5118_ipv6_correct_abnf_2_colons: "rfc5118/ipv6-correct-abnf-2-colons" => Accept, |m| {
        assert_eq!(sip_uri(&req(m).uri).host, Host::V6("2001:db8::192.0.2.1".into()));
    };
}

/// Every message file in the directory has a verdict above, and the README's counts hold.
#[test]
fn every_torture_file_has_a_verdict() {
    if !dir().is_dir() {
        eprintln!("note: {} is absent; skipping", dir().display());
        return;
    }
    let mut on_disk = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(dir().join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            on_disk.push(format!("{sub}/{name}"));
        }
    }
    on_disk.sort();
    let mut covered: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
    assert_eq!(
        on_disk.iter().filter(|f| f.starts_with("rfc4475/")).count(),
        49
    );
    assert_eq!(
        on_disk.iter().filter(|f| f.starts_with("rfc5118/")).count(),
        12
    );
}

/// §3.1.1.8 on a stream: framing by Content-Length splits the two requests of `dblreq`.
#[test]
fn dblreq_frames_as_two_requests_on_a_stream() {
    let Some(bytes) = load("rfc4475/dblreq.dat") else {
        return;
    };
    let first = sip::frame_len(&bytes).unwrap().unwrap();
    let m = sip::parse(&bytes[..first], false).unwrap();
    assert_eq!(req(&m).method, Method::Register);
    let mut rest = &bytes[first..];
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    assert!(rest.starts_with(b"INVITE "));
}

/// §3.3.9 on a stream: two Content-Length values make the stream unusable.
#[test]
fn mcl01_is_a_framing_error_on_a_stream() {
    let Some(bytes) = load("rfc4475/mcl01.dat") else {
        return;
    };
    assert!(sip::frame_len(&bytes).is_err());
}
