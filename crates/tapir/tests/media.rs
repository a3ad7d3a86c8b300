//! What the customer's phone receives of the agent's media: the test itself is the customer's
//! RTP endpoint (a UDP socket pair the caller's SDP points at), so every packet tapir forwards
//! can be inspected.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tapir_tests::{free_media_port, free_port, Tapir, TapirOptions, PHONE_FIRST_SEQ, PHONE_SSRC};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

/// A customer's RTP and RTCP sockets, read on a thread until stopped.
struct Sink {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Sink {
    fn bind() -> Sink {
        let port = free_media_port("127.0.0.1");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [port, port + 1]
            .into_iter()
            .map(|p| {
                let s = UdpSocket::bind(("127.0.0.1", p)).expect("bind the customer's media");
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = s.recv(&mut buf) {
                            got.push(buf[..n].to_vec());
                        }
                    }
                    got
                })
            })
            .collect();
        Sink {
            port,
            stop,
            threads,
        }
    }

    /// Stops reading; returns the datagrams received on the RTP and the RTCP port, in order.
    fn finish(self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut it = self.threads.into_iter().map(|t| t.join().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[test]
fn the_customer_sees_no_sequence_gap_after_a_swallowed_star2() {
    let callee_port = free_port("127.0.0.1");
    let dir = tapir_tests::tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[stations.default]\noutbound = \"on_demand\"\ninbound_direct = \"on_demand\"\n\
         inbound_ivr = \"on_demand\"\n\n[feature_codes]\nstart = \"*2\"\n",
    )
    .unwrap();
    let t = Tapir::start(
        BIN,
        &format!(
            "[[routes]]\nname = \"pbx\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n"
        ),
        TapirOptions {
            extra: format!("[recording]\npolicy_file = \"{}\"\n", policy.display()),
            ..Default::default()
        },
    );
    let sink = Sink::bind();
    let port = sink.port.to_string();
    // The agent keys *2 one second into its stream, which wraps past 65535 meanwhile.
    tapir_tests::call(
        &t,
        (
            "uac_rtp_sink.xml",
            None,
            &["-d", "4000", "-key", "rtp_sink", &port],
        ),
        ("uas_phone_star2.xml", Some(1000.0), &[]),
        callee_port,
    );
    let (rtp, rtcp) = sink.finish();
    // Every event packet of both key presses was kept from the customer.
    assert_eq!(
        t.metric("tapir_rtp_packets_dropped_total{reason=\"feature_code\"}"),
        16.0,
        "{}",
        t.metrics()
    );
    let agent: Vec<media::rtp::RtpView> = rtp
        .iter()
        .filter_map(|p| media::rtp::RtpView::parse(p).ok())
        .filter(|v| v.ssrc() == PHONE_SSRC)
        .collect();
    assert!(
        agent.iter().all(|v| v.payload_type() == 8),
        "a telephone-event reached the customer"
    );
    // 1 s before the digits and 1.5 s after, at 50 packets a second.
    assert_eq!(agent.len(), 125, "packets of the agent's stream received");
    assert_eq!(agent[0].sequence(), PHONE_FIRST_SEQ);
    for w in agent.windows(2) {
        assert_eq!(
            w[1].sequence(),
            w[0].sequence().wrapping_add(1),
            "a hole after {} (timestamp {})",
            w[0].sequence(),
            w[1].timestamp()
        );
    }
    // The agent's sender report counted the 16 digit packets (4 payload octets each); the
    // customer's copy counts only what reached it.
    let sr: Vec<&Vec<u8>> = rtcp
        .iter()
        .filter(|p| p.len() >= 28 && p[1] == 200 && be32(&p[4..8]) == PHONE_SSRC)
        .collect();
    assert_eq!(sr.len(), 1, "the agent's sender report was relayed");
    assert_eq!(be32(&sr[0][20..24]), 50, "sender's packet count");
    assert_eq!(be32(&sr[0][24..28]), 50 * 160, "sender's octet count");
}
