//! SIP over TLS through the real binary, with certificates made in the test (rcgen): a TLS
//! caller and a UDP SIPp callee; a listener certificate reloaded on SIGHUP; a client that
//! does not trust tapir's certificate, and a target whose certificate the route does not
//! trust, refused and counted with a log line naming the peer.
//!
//! The TLS party here is a small client in this file (tokio-rustls), which lets a test write
//! exactly the bytes it needs: Debian's SIPp is built without TLS (`sipp -t l1` answers "To
//! use a TLS transport you must compile SIPp with OpenSSL"). A real user agent over TLS,
//! baresip, is in baresip.rs: SIP over TLS with SRTP, mutual TLS, wrong certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tapir_tests::pki::{connector_with, pki, tls_listener_env, write, Pki};
use tapir_tests::{free_port, Sipp, Tapir, TapirOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    connector_with(ca_pem, None)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(port: u16, ca_pem: &str) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    connector(ca_pem).connect(name, tcp).await
}

/// Reads SIP messages off a stream until one starts with `prefix`.
async fn read_until(s: &mut Tls, framer: &mut sip::message::StreamFramer, prefix: &str) -> String {
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        while let Ok(Some(m)) = framer.next_message() {
            let m = String::from_utf8_lossy(&m).into_owned();
            if m.starts_with(prefix) {
                return m;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no '{prefix}' in time"))
            .unwrap();
        assert!(n > 0, "tapir closed the TLS connection");
        framer.push(&buf[..n]);
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or("")
}

fn request(
    method: &str,
    tls_port: u16,
    local: SocketAddr,
    cseq: u32,
    to_tag: &str,
    body: &str,
) -> String {
    let to = if to_tag.is_empty() {
        "<sip:1000@127.0.0.1>".to_string()
    } else {
        format!("<sip:1000@127.0.0.1>;tag={to_tag}")
    };
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sips:1000@127.0.0.1:{tls_port} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{cseq}-{method}\r\n\
         Max-Forwards: 70\r\nFrom: <sips:alice@127.0.0.1>;tag=tlscaller\r\nTo: {to}\r\n\
         Call-ID: tls-call@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: <sips:alice@{local};transport=tls>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn tapir_with_tls(dir: &Path, p: &Pki, routes: &str) -> (Tapir, u16) {
    let (env, tls_port) = tls_listener_env(dir, p);
    let opts = TapirOptions {
        env,
        ..TapirOptions::default()
    };
    (Tapir::start(BIN, routes, opts), tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_caller_udp_callee_and_a_certificate_reloaded_on_sighup() {
    let dir = tempfile_dir();
    let first = pki("first");
    let callee_port = free_port("127.0.0.1");
    let routes = format!(
        "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\nrecord = \"never\"\n"
    );
    let (t, tls_port) = tapir_with_tls(dir.path(), &first, &routes);
    // The ready line names the TLS listener (the log reader may add it a moment after
    // signalling readiness).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !t.log().contains(&format!("sip_tls=[127.0.0.1:{tls_port}]")) {
        assert!(std::time::Instant::now() < deadline, "{}", t.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut b = Sipp::party(
        "callee",
        "uas_tone.xml",
        "127.0.0.1",
        callee_port,
        None,
        Some(1000.0),
        &[],
    );

    // A call over TLS on leg A, UDP on leg B.
    let mut s = connect(tls_port, &first.ca)
        .await
        .expect("handshake with tapir");
    let local = s.get_ref().0.local_addr().unwrap();
    let mut framer = sip::message::StreamFramer::new();
    let sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    s.write_all(request("INVITE", tls_port, local, 1, "", sdp).as_bytes())
        .await
        .unwrap();
    let ok = read_until(&mut s, &mut framer, "SIP/2.0 200").await;
    // tapir's Contact toward a TLS peer names its TLS port and transport.
    let contact = header(&ok, "Contact");
    assert!(
        contact.contains(&format!(":{tls_port};transport=tls")),
        "{contact}"
    );
    let to_tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_string();
    s.write_all(request("ACK", tls_port, local, 1, &to_tag, "").as_bytes())
        .await
        .unwrap();
    s.write_all(request("BYE", tls_port, local, 2, &to_tag, "").as_bytes())
        .await
        .unwrap();
    let bye_ok = read_until(&mut s, &mut framer, "SIP/2.0 200").await;
    assert!(header(&bye_ok, "CSeq").contains("BYE"), "{bye_ok}");
    assert_eq!(b.wait(Duration::from_secs(20)), 0, "{}", b.logs());

    // A client that does not trust tapir's certificate fails, and tapir counts it.
    let other = pki("other");
    assert!(connect(tls_port, &other.ca).await.is_err());
    t.wait_metric(
        "tapir_tls_handshake_failures_total{side=\"in\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert!(
        t.log().contains("TLS handshake from peer failed"),
        "{}",
        t.log()
    );

    // SIGHUP: a new certificate from the other CA is in force for new connections.
    write(dir.path(), "tapir.crt", &other.cert);
    write(dir.path(), "tapir.key", &other.key);
    t.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !t.log().contains("TLS certificates reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", t.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connect(tls_port, &other.ca)
        .await
        .expect("the reloaded certificate");
    assert!(
        connect(tls_port, &first.ca).await.is_err(),
        "the old one is gone"
    );
}

fn tempfile_dir() -> tapir_tests::tempfile::TempDir {
    tapir_tests::tempfile::tempdir().unwrap()
}

/// A TLS server standing in for a target, presenting `p`'s certificate; it notes the first
/// line of the first message it is sent, and answers nothing.
async fn fake_target(p: &Pki) -> (u16, Arc<std::sync::Mutex<String>>) {
    fake_target_with(p, None).await
}

/// [`fake_target`] that demands a client certificate signed by `client_ca` when given.
async fn fake_target_with(
    p: &Pki,
    client_ca: Option<&str>,
) -> (u16, Arc<std::sync::Mutex<String>>) {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(p.cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
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
async fn a_target_with_a_certificate_the_route_does_not_trust_is_refused() {
    let dir = tempfile_dir();
    let trusted = pki("trusted");
    let impostor = pki("impostor");
    let (target, _) = fake_target(&impostor).await;
    let (good_target, good_seen) = fake_target(&trusted).await;
    let ca = write(dir.path(), "route-ca.pem", &trusted.ca);
    let pinned = write(dir.path(), "pinned.pem", &trusted.cert);
    let (other_target, _) = fake_target(&impostor).await;
    let routes = format!(
        "[[routes]]\nname = \"good-trunk\"\nuser_prefix = \"3\"\ntarget = \"sip:127.0.0.1:{good_target};transport=tls\"\ncustomer = \"caller\"\n\
         record = \"never\"\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[routes]]\nname = \"secure-trunk\"\nuser_prefix = \"1\"\ntarget = \"sip:127.0.0.1:{target};transport=tls\"\ncustomer = \"caller\"\n\
         record = \"never\"\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[routes]]\nname = \"pinned-trunk\"\ntarget = \"sip:127.0.0.1:{other_target};transport=tls\"\ncustomer = \"caller\"\n\
         record = \"never\"\ntls = {{ pinned_cert = \"{pinned}\" }}\n"
    );
    // The last target never answers: its INVITE ends at Timer B, 64 × T1 = 3.2 s.
    let opts = TapirOptions {
        t1_ms: 50,
        ..TapirOptions::default()
    };
    let t = Tapir::start(BIN, &routes, opts);
    for user in ["1000", "2000"] {
        let port = t.sip_port;
        let body = "m=audio {port} RTP/AVP 8\r\n";
        let user = user.to_string();
        // The INVITE cannot be delivered: the caller gets 503 as soon as the handshake has
        // failed, not 408 after Timer B.
        let started = std::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            tapir_tests::sdes::invite_user(port, &user, body, None)
        })
        .await
        .unwrap();
        let tapir_tests::sdes::Outcome::Refused(status, _) = outcome else {
            panic!("answered through an untrusted target");
        };
        assert_eq!(status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(t.metric("tapir_calls_total{outcome=\"unreachable\"}"), 2.0);
    t.wait_metric(
        "tapir_tls_handshake_failures_total{side=\"out\"}",
        Duration::from_secs(5),
        |v| v == 2.0,
    );
    // A target whose certificate chains to the route's CA gets the INVITE over TLS.
    let port = t.sip_port;
    let _ = tokio::task::spawn_blocking(move || {
        tapir_tests::sdes::invite_user(port, "3000", "m=audio {port} RTP/AVP 8\r\n", None)
    })
    .await
    .unwrap();
    assert!(
        good_seen
            .lock()
            .unwrap()
            .starts_with("INVITE sip:3000@127.0.0.1"),
        "{:?}",
        good_seen.lock().unwrap()
    );
    assert_eq!(
        t.metric("tapir_tls_handshake_failures_total{side=\"out\"}"),
        2.0
    );
    let log = t.log();
    for port in [target, other_target] {
        assert!(
            log.lines()
                .any(|l| l.contains("TLS handshake with target failed")
                    && l.contains(&format!("127.0.0.1:{port}"))),
            "{log}"
        );
    }
}

/// OPTIONS over a TLS connection made by `connector`; whether tapir answered it.
async fn options_answered(port: u16, c: tokio_rustls::TlsConnector) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let Ok(mut s) = c.connect(name, tcp).await else {
        return false;
    };
    let local = s.get_ref().0.local_addr().unwrap();
    if s.write_all(request("OPTIONS", port, local, 1, "", "").as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    // TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_both_ways() {
    let dir = tempfile_dir();
    let server = pki("server");
    let clients = pki("clients");
    let strangers = pki("strangers");
    // Toward a target that demands a client certificate of the `clients` CA.
    let (target, seen) = fake_target_with(&server, Some(&clients.ca)).await;
    let ca = write(dir.path(), "server-ca.pem", &server.ca);
    let ccert = write(dir.path(), "client.crt", &clients.cert);
    let ckey = write(dir.path(), "client.key", &clients.key);
    // Another such target, on a route that has no client certificate to present.
    let (strict, _) = fake_target_with(&server, Some(&clients.ca)).await;
    let routes = format!(
        "[[routes]]\nname = \"no-cert-trunk\"\nuser_prefix = \"2\"\ntarget = \"sip:127.0.0.1:{strict};transport=tls\"\n\
         customer = \"caller\"\nrecord = \"never\"\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[routes]]\nname = \"mtls-trunk\"\ntarget = \"sip:127.0.0.1:{target};transport=tls\"\ncustomer = \"caller\"\n\
         record = \"never\"\ntls = {{ ca_file = \"{ca}\", client_cert = \"{ccert}\", client_key = \"{ckey}\" }}\n"
    );
    let tls_port = free_port("127.0.0.1");
    let opts = TapirOptions {
        t1_ms: 50,
        env: vec![
            (
                "TAPIR_SIP__LISTEN_TLS".into(),
                format!("[\"127.0.0.1:{tls_port}\"]"),
            ),
            (
                "TAPIR_SIP__TLS_CERT".into(),
                write(dir.path(), "t.crt", &server.cert),
            ),
            (
                "TAPIR_SIP__TLS_KEY".into(),
                write(dir.path(), "t.key", &server.key),
            ),
            (
                "TAPIR_SIP__TLS_CLIENT_CA".into(),
                write(dir.path(), "cca.pem", &clients.ca),
            ),
        ],
        ..TapirOptions::default()
    };
    let t = Tapir::start(BIN, &routes, opts);

    // Listener: a client certificate of the configured CA, or none (optional), is accepted;
    // one of another CA is refused and counted.
    assert!(options_answered(tls_port, connector_with(&server.ca, Some(&clients))).await);
    assert!(options_answered(tls_port, connector_with(&server.ca, None)).await);
    assert!(!options_answered(tls_port, connector_with(&server.ca, Some(&strangers))).await);
    t.wait_metric(
        "tapir_tls_handshake_failures_total{side=\"in\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );

    // Target: tapir presents its client certificate and the INVITE gets through.
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

    // A target that refuses tapir for presenting no certificate: under TLS 1.3 it says so
    // with an alert after the handshake, in place of an answer. The caller gets 503 at once
    // (Timer B would be 3.2 s here).
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        tapir_tests::sdes::invite_user(port, "2000", "m=audio {port} RTP/AVP 8\r\n", None)
    })
    .await
    .unwrap();
    let tapir_tests::sdes::Outcome::Refused(status, _) = outcome else {
        panic!("answered through a target that refused tapir");
    };
    assert_eq!(status, 503, "{}", t.log());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let line = t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("connection to target closed before it sent anything")
    });
    assert!(line.contains(&format!("127.0.0.1:{strict}")), "{line}");
}

/// A TLS 1.2 ClientHello offering only TLS_RSA_WITH_AES_128_CBC_SHA, a suite tapir does not
/// speak (no forward secrecy): refused with an alert, logged with the peer and the reason,
/// counted; a proper client is served right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_only_an_unsupported_cipher_is_refused_and_counted() {
    let dir = tempfile_dir();
    let p = pki("tapir");
    let routes = "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:5999\"\ncustomer = \"caller\"\nrecord = \"never\"\n";
    let (t, tls_port) = tapir_with_tls(dir.path(), &p, routes);
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // one suite
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
                                            // Extensions a TLS 1.2 client must send: signature algorithms (ecdsa_secp256r1_sha256,
                                            // rsa_pkcs1_sha256) and supported groups (x25519, secp256r1).
    hello.extend_from_slice(&[
        0x00, 0x14, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01, 0x00, 0x0a, 0x00,
        0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17,
    ]);
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(&record).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    assert!(n >= 1 && buf[0] == 0x15, "an alert record: {:?}", &buf[..n]);
    t.wait_metric(
        "tapir_tls_handshake_failures_total{side=\"in\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    let line = t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("TLS handshake from peer failed") && l.contains(&format!("peer={local}"))
    });
    assert!(line.to_ascii_lowercase().contains("cipher"), "{line}");
    connect(tls_port, &p.ca)
        .await
        .expect("a client that speaks a common suite");
}
