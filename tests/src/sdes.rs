//! A minimal SIP/SDES caller over real UDP sockets, for the SRTP black-box tests: it offers
//! SRTP with its own key (or any SDP a test gives), sends a PCMA tone protected with the
//! `srtp` crate, and decrypts what tapir sends back with the key of tapir's answer.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sdp::Sdp;
use srtp::{Context, Keying};

/// How the INVITE ended.
pub enum Outcome {
    Answered(Box<SdesCall>),
    Refused(u16, String),
}

pub struct SdesCall {
    sip: UdpSocket,
    pub rtp: UdpSocket,
    tapir: SocketAddr,
    call_id: String,
    from_tag: String,
    to_tag: String,
    /// tapir's answer.
    pub answer: Sdp,
    pub remote_rtp: SocketAddr,
    tx: Option<Context>,
    rx: Option<Context>,
    seq: u16,
    ts: u32,
    phase: f64,
    /// Packets from tapir that decrypted (or, on a plain call, arrived).
    pub received: u64,
    /// Packets from tapir that did not decrypt.
    pub undecryptable: u64,
    /// The audio tapir sent, A-law decoded.
    pub samples: Vec<i16>,
    /// The last genuine packet sent, as sent (for [`SdesCall::resend_last`]).
    last_sent: Vec<u8>,
}

const SSRC: u32 = 0x5d35_0001;

fn alaw_decode(a: u8) -> i16 {
    let a = a ^ 0x55;
    let seg = (a & 0x70) >> 4;
    let mut t = i16::from(a & 0x0f) << 4;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        s => (t + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 {
        t
    } else {
        -t
    }
}

fn recv_sip(sock: &UdpSocket, deadline: Instant) -> Option<String> {
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// Calls `1000` through tapir on 127.0.0.1:`tapir_port`, offering `media` (the m= line and
/// its attributes; `{port}` is replaced by the caller's RTP port). `key` is the caller's own
/// key, used to protect what it sends when tapir answers with SRTP.
pub fn invite(tapir_port: u16, media: &str, key: Option<Keying>) -> Outcome {
    invite_user(tapir_port, "1000", media, key)
}

/// [`invite`] for the Request-URI user `user`.
pub fn invite_user(tapir_port: u16, user: &str, media: &str, key: Option<Keying>) -> Outcome {
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tapir: SocketAddr = format!("127.0.0.1:{tapir_port}").parse().unwrap();
    let sport = sip.local_addr().unwrap().port();
    let rport = rtp.local_addr().unwrap().port();
    let call_id = format!("sdes-{sport}-{rport}@127.0.0.1");
    let from_tag = format!("ft{sport}");
    let body = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{}",
        media.replace("{port}", &rport.to_string())
    );
    let branch = format!("z9hG4bK-sdes-{sport}-1");
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1:{tapir_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sport};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag={from_tag}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{sport}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sip.send_to(invite.as_bytes(), tapir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let resp = loop {
        let m = recv_sip(&sip, deadline).expect("a final response to the INVITE");
        let status: u16 = m
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status >= 200 {
            break m;
        }
    };
    let first = resp.lines().next().unwrap_or("");
    let status: u16 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    let reason = first.splitn(3, ' ').nth(2).unwrap_or("").to_string();
    let to = header(&resp, "To").unwrap_or("").to_string();
    let to_tag = to.split("tag=").nth(1).unwrap_or("").to_string();
    if status >= 300 {
        let ack = format!(
            "ACK sip:{user}@127.0.0.1:{tapir_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sport};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sip.send_to(ack.as_bytes(), tapir).unwrap();
        return Outcome::Refused(status, reason);
    }
    let sdp_start = resp.find("\r\n\r\n").expect("a body") + 4;
    let answer = Sdp::parse(&resp.as_bytes()[sdp_start..]).expect("tapir's answer is SDP");
    let i = answer.audio_index().expect("audio");
    let remote_rtp = SocketAddr::new(answer.connection(i).unwrap(), answer.media[i].port);
    let theirs = answer.security(i).first_usable().map(|c| c.keying.clone());
    let (tx, rx) = match (key, theirs) {
        (Some(k), Some(t)) => (
            Some(Context::new(&k).unwrap()),
            Some(Context::new(&t).unwrap()),
        ),
        _ => (None, None),
    };
    let call = SdesCall {
        sip,
        rtp,
        tapir,
        call_id,
        from_tag,
        to_tag,
        answer,
        remote_rtp,
        tx,
        rx,
        seq: 1,
        ts: 0,
        phase: 0.0,
        received: 0,
        undecryptable: 0,
        samples: Vec::new(),
        last_sent: Vec::new(),
    };
    call.request("ACK", 1);
    Outcome::Answered(Box::new(call))
}

impl SdesCall {
    fn request(&self, method: &str, cseq: u32) {
        let sport = self.sip.local_addr().unwrap().port();
        let port = self.tapir.port();
        let m = format!(
            "{method} sip:1000@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bK-sdes-{sport}-{method}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag={}\r\nTo: <sip:1000@127.0.0.1>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            self.from_tag, self.to_tag, self.call_id
        );
        self.sip.send_to(m.as_bytes(), self.tapir).unwrap();
    }

    /// One 20 ms PCMA packet of a `freq` Hz tone, protected when the call is SRTP; `corrupt`
    /// flips a bit of its authentication tag.
    fn packet(&mut self, freq: f64, corrupt: bool) -> Vec<u8> {
        let mut b = vec![0u8; 12 + 160 + srtp::MAX_RTP_TRAILER];
        media::rtp::write_header(&mut b, self.seq == 1, 8, self.seq, self.ts, SSRC);
        for x in b[12..172].iter_mut() {
            *x = media::codec::encode_pcma((8000.0 * self.phase.sin()) as i16);
            self.phase += 2.0 * std::f64::consts::PI * freq / 8000.0;
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        let n = match self.tx.as_mut() {
            Some(tx) => tx.protect_rtp(&mut b, 172).unwrap(),
            None => 172,
        };
        b.truncate(n);
        if corrupt {
            *b.last_mut().unwrap() ^= 0x01;
        }
        b
    }

    /// Sends `packets` packets of a `freq` Hz tone paced at 20 ms, with a corrupted copy of
    /// packet `corrupt_at` sent just before it, and takes in what tapir sends meanwhile.
    pub fn talk(&mut self, freq: f64, packets: u32, corrupt_at: Option<u32>) {
        let start = Instant::now();
        for i in 0..packets {
            if corrupt_at == Some(i) {
                // A copy of the next packet with a broken tag: same sequence number, so the
                // genuine one that follows must still be accepted.
                let (seq, ts, phase) = (self.seq, self.ts, self.phase);
                let bad = self.packet(freq, true);
                (self.seq, self.ts, self.phase) = (seq, ts, phase);
                self.rtp.send_to(&bad, self.remote_rtp).unwrap();
            }
            let p = self.packet(freq, false);
            self.rtp.send_to(&p, self.remote_rtp).unwrap();
            self.last_sent = p;
            let next = start + Duration::from_millis(20 * (u64::from(i) + 1));
            self.take_in(next);
        }
    }

    /// Sends the last packet again, byte for byte: a replay, which SRTP must refuse.
    pub fn resend_last(&mut self) {
        self.rtp.send_to(&self.last_sent, self.remote_rtp).unwrap();
    }

    /// Sends an RTCP sender report on the RTP port (RFC 5761 multiplexing), protected as
    /// SRTCP when the call is SRTP.
    pub fn send_muxed_rtcp(&mut self) {
        let mut b = vec![0u8; 28 + srtp::MAX_RTCP_TRAILER];
        b[..4].copy_from_slice(&[0x80, 200, 0, 6]);
        b[4..8].copy_from_slice(&SSRC.to_be_bytes());
        let n = match self.tx.as_mut() {
            Some(tx) => tx.protect_rtcp(&mut b, 28).unwrap(),
            None => 28,
        };
        self.rtp.send_to(&b[..n], self.remote_rtp).unwrap();
    }

    /// Receives media until `until`.
    fn take_in(&mut self, until: Instant) {
        let mut buf = [0u8; 2048];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.rtp
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let Ok((n, _)) = self.rtp.recv_from(&mut buf) else {
                continue;
            };
            let len = match self.rx.as_mut() {
                Some(rx) => match rx.unprotect_rtp(&mut buf[..n]) {
                    Ok(len) => len,
                    Err(_) => {
                        self.undecryptable += 1;
                        continue;
                    }
                },
                None => n,
            };
            let Ok(v) = media::rtp::RtpView::parse(&buf[..len]) else {
                self.undecryptable += 1;
                continue;
            };
            self.received += 1;
            if v.payload_type() == 8 {
                self.samples
                    .extend(v.payload().iter().map(|&b| alaw_decode(b)));
            }
        }
    }

    /// Hangs up and waits for tapir's 200.
    pub fn bye(&mut self) -> bool {
        self.request("BYE", 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(m) = recv_sip(&self.sip, deadline) {
            if m.starts_with("SIP/2.0 200") && header(&m, "CSeq").is_some_and(|c| c.contains("BYE"))
            {
                return true;
            }
        }
        false
    }
}

/// The callee side: takes the INVITE tapir sends to the UDP socket `sip`, answers 200 with
/// `answer_media` (`{port}` is the callee's RTP port; `{crypto}` becomes `key` written as an
/// `a=crypto` line with the tag tapir offered), and returns the call once tapir's ACK is in.
pub fn answer(sip: UdpSocket, answer_media: &str, key: Option<Keying>) -> (SdesCall, Sdp) {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rport = rtp.local_addr().unwrap().port();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (invite, from) = loop {
        let mut buf = [0u8; 8192];
        sip.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (n, from) = sip.recv_from(&mut buf).expect("tapir's INVITE");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.starts_with("INVITE ") {
            break (m, from);
        }
        assert!(Instant::now() < deadline, "no INVITE");
    };
    let body_at = invite.find("\r\n\r\n").expect("a body") + 4;
    let offer = Sdp::parse(&invite.as_bytes()[body_at..]).expect("tapir's offer is SDP");
    let i = offer.audio_index().expect("audio");
    let remote_rtp = SocketAddr::new(offer.connection(i).unwrap(), offer.media[i].port);
    let offered = offer.security(i).first_usable().cloned();
    let crypto = match (&key, &offered) {
        (Some(k), Some(o)) => sdp::Crypto {
            tag: o.tag,
            keying: k.clone(),
        }
        .to_value(),
        _ => String::new(),
    };
    let media = answer_media
        .replace("{port}", &rport.to_string())
        .replace("{crypto}", &crypto);
    let body = format!(
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}"
    );
    let to_tag = "calleetag".to_string();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\nContact: <sip:bob@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        echo_headers(&invite, Some(&to_tag)),
        sip.local_addr().unwrap(),
        body.len()
    );
    sip.send_to(ok.as_bytes(), from).unwrap();
    let (tx, rx) = match (key, offered) {
        (Some(k), Some(o)) => (
            Some(Context::new(&k).unwrap()),
            Some(Context::new(&o.keying).unwrap()),
        ),
        _ => (None, None),
    };
    let call = SdesCall {
        call_id: header(&invite, "Call-ID").unwrap_or("").to_string(),
        from_tag: String::new(),
        to_tag,
        sip,
        rtp,
        tapir: from,
        answer: offer.clone(),
        remote_rtp,
        tx,
        rx,
        seq: 1,
        ts: 0,
        phase: 0.0,
        received: 0,
        undecryptable: 0,
        samples: Vec::new(),
        last_sent: Vec::new(),
    };
    (call, offer)
}

/// Via, From, To (with `to_tag` added when given), Call-ID and CSeq of a request, for its
/// response.
fn echo_headers(req: &str, to_tag: Option<&str>) -> String {
    let mut out = Vec::new();
    for l in req.lines().take_while(|l| !l.trim().is_empty()).skip(1) {
        let name = l.split(':').next().unwrap_or("").trim();
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            out.push(l.to_string());
        } else if name.eq_ignore_ascii_case("To") {
            match to_tag {
                Some(t) if !l.contains("tag=") => out.push(format!("{l};tag={t}")),
                _ => out.push(l.to_string()),
            }
        }
    }
    out.join("\r\n")
}

impl SdesCall {
    /// Sends a `freq` Hz tone and takes in media until tapir's BYE, which is answered.
    /// Gives up after `max`; returns whether the BYE came.
    pub fn talk_until_bye(&mut self, freq: f64, max: Duration) -> bool {
        let start = Instant::now();
        let mut i = 0u64;
        self.sip.set_nonblocking(true).unwrap();
        while start.elapsed() < max {
            let mut buf = [0u8; 8192];
            if let Ok((n, from)) = self.sip.recv_from(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.starts_with("BYE ") {
                    let ok = format!(
                        "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
                        echo_headers(&m, None)
                    );
                    self.sip.send_to(ok.as_bytes(), from).unwrap();
                    return true;
                }
            }
            let p = self.packet(freq, false);
            self.rtp.send_to(&p, self.remote_rtp).unwrap();
            i += 1;
            self.take_in(start + Duration::from_millis(20 * i));
        }
        false
    }
}
