//! A bounded SDES-SRTP (or plain RTP) call load against a running tapir, for bench/srtp.sh:
//! SIPp sends no SRTP, so this plays both parties itself. It places `--calls` calls over SIP/UDP
//! at `--rate` per second, each held `--duration` seconds and then hung up; the caller offers
//! `RTP/SAVP` with its own `a=crypto` (or `RTP/AVP`, `--mode plain`), the callee (tapir's route
//! target) answers with its own key. Both send 20 ms PCMA packets protected with the `srtp`
//! crate and unprotect what tapir relays to them. Every party's packets are spread evenly over
//! the 20 ms period, as independent phones are. It stops by itself: at the latest 30 s after
//! the last call should have ended.
//!
//! With `--tapir-pid`, tapir's CPU (utime + stime of /proc/PID/stat) is read when the last
//! call is up and when the first is hung up: that window's CPU divided by calls × its length
//! is the steady-state CPU per call-second. Prints one `srtp-load:` line of key=value figures.
//!
//! usage: srtp-load --target 127.0.0.1:5090 --uac 127.0.0.1:25080 --uas 127.0.0.1:25070
//!        --calls 100 --duration 60 [--rate 20] [--mode srtp|plain] [--suite NAME]
//!        [--rtp-base 26000] [--tapir-pid PID] [--one-customer USER]
//!
//! Each call comes from its own customer number, as on a trunk; `--one-customer` places them
//! all from the same From user.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use srtp::{Context, Keying, MasterKey, Suite};

const PTIME: Duration = Duration::from_millis(20);
const RETRANSMIT: Duration = Duration::from_millis(500);
const MAX_SENDS: u32 = 7;

struct Args {
    target: SocketAddr,
    uac: SocketAddr,
    uas: SocketAddr,
    calls: usize,
    duration: Duration,
    rate: f64,
    srtp: bool,
    suite: Suite,
    rtp_base: u16,
    tapir_pid: Option<u32>,
    one_customer: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:5090".parse().unwrap(),
        uac: "127.0.0.1:25080".parse().unwrap(),
        uas: "127.0.0.1:25070".parse().unwrap(),
        calls: 10,
        duration: Duration::from_secs(10),
        rate: 20.0,
        srtp: true,
        suite: Suite::AesCm128HmacSha1_80,
        rtp_base: 26000,
        tapir_pid: None,
        one_customer: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        let val = it
            .next()
            .unwrap_or_else(|| die(&format!("{k} needs a value")));
        let bad = || -> ! { die(&format!("bad value for {k}: {val}")) };
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| bad()) };
        match k.as_str() {
            "--target" => a.target = val.parse::<SocketAddr>().unwrap_or_else(|_| bad()),
            "--uac" => a.uac = val.parse::<SocketAddr>().unwrap_or_else(|_| bad()),
            "--uas" => a.uas = val.parse::<SocketAddr>().unwrap_or_else(|_| bad()),
            "--calls" => a.calls = num(val) as usize,
            "--duration" => a.duration = Duration::from_secs(val.parse().unwrap_or_else(|_| bad())),
            "--rate" => a.rate = val.parse::<f64>().unwrap_or_else(|_| bad()),
            "--mode" => {
                a.srtp = match val.as_str() {
                    "srtp" => true,
                    "plain" => false,
                    _ => bad(),
                }
            }
            "--suite" => a.suite = Suite::from_name(val).unwrap_or_else(|| bad()),
            "--rtp-base" => a.rtp_base = u16::try_from(num(val)).unwrap_or_else(|_| bad()),
            "--tapir-pid" => a.tapir_pid = Some(num(val) as u32),
            "--one-customer" => a.one_customer = Some(val.clone()),
            _ => die(&format!("unknown option {k}")),
        }
    }
    if a.calls == 0 || a.calls > 2000 || a.rate <= 0.0 {
        die("--calls must be 1 to 2000 and --rate above 0");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("srtp-load: {msg}");
    std::process::exit(2)
}

/// Key material for the load (not for secrecy: a bench's keys only have to differ).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn keying(&mut self, suite: Suite) -> Keying {
        let bytes: Vec<u8> = (0..suite.master_len()).map(|_| self.next() as u8).collect();
        Keying::new(MasterKey::new(suite, &bytes).unwrap())
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One party's media: its socket, where tapir expects it, its keys.
struct Leg {
    sock: UdpSocket,
    port: u16,
    remote: Option<SocketAddr>,
    tx: Option<Context>,
    rx: Option<Context>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    sending: bool,
    sent: u64,
    received: u64,
    undecryptable: u64,
}

impl Leg {
    fn new(ip: std::net::IpAddr, port: u16, ssrc: u32) -> Leg {
        let sock = UdpSocket::bind((ip, port))
            .unwrap_or_else(|e| die(&format!("cannot bind RTP port {port}: {e}")));
        sock.set_nonblocking(true).unwrap();
        Leg {
            sock,
            port,
            remote: None,
            tx: None,
            rx: None,
            ssrc,
            seq: (ssrc >> 16) as u16,
            ts: ssrc,
            sending: false,
            sent: 0,
            received: 0,
            undecryptable: 0,
        }
    }

    /// Sends its next 20 ms packet, then reads whatever tapir sent it.
    fn tick(&mut self, payload: &[u8; 160], buf: &mut [u8]) {
        if let (true, Some(to)) = (self.sending, self.remote) {
            media::rtp::write_header(buf, false, 8, self.seq, self.ts, self.ssrc);
            buf[12..172].copy_from_slice(payload);
            let n = match self.tx.as_mut() {
                Some(tx) => tx.protect_rtp(buf, 172).expect("protect"),
                None => 172,
            };
            if self.sock.send_to(&buf[..n], to).is_ok() {
                self.sent += 1;
            }
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
        }
        loop {
            match self.sock.recv_from(buf) {
                Ok((n, _)) => {
                    let ok = match self.rx.as_mut() {
                        Some(rx) => rx.unprotect_rtp(&mut buf[..n]).is_ok(),
                        None => n >= 12,
                    };
                    if ok {
                        self.received += 1;
                    } else {
                        self.undecryptable += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

#[derive(PartialEq, Clone, Copy, Debug)]
enum State {
    Waiting,
    Inviting,
    Up,
    Hanging,
    Done,
    Failed,
}

struct Caller {
    state: State,
    start_at: Instant,
    end_at: Instant,
    last_send: Instant,
    sends: u32,
    to_tag: String,
    key: Option<Keying>,
}

struct Callee {
    /// tapir's INVITE, for the 200 (re)sent to it.
    ok: String,
    from: SocketAddr,
    acked: bool,
    last_send: Instant,
    sends: u32,
    done: bool,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// Via, From, To (with `to_tag` added when it has none), Call-ID and CSeq of a request.
fn echo_headers(req: &str, to_tag: Option<&str>) -> String {
    let mut out = String::new();
    for l in req.lines().take_while(|l| !l.trim().is_empty()).skip(1) {
        let name = l.split(':').next().unwrap_or("").trim();
        let keep = ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name));
        if keep {
            out.push_str(l);
            out.push_str("\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            match to_tag {
                Some(t) if !l.contains("tag=") => out.push_str(&format!("{l};tag={t}\r\n")),
                _ => {
                    out.push_str(l);
                    out.push_str("\r\n");
                }
            }
        }
    }
    out
}

fn body(msg: &str) -> &[u8] {
    msg.find("\r\n\r\n")
        .map_or(&[][..], |i| &msg.as_bytes()[i + 4..])
}

/// The media address and key of an SDP body.
fn media_of(sdp_body: &[u8]) -> Option<(SocketAddr, Option<Keying>)> {
    let s = sdp::Sdp::parse(sdp_body).ok()?;
    let i = s.audio_index()?;
    let addr = SocketAddr::new(s.connection(i)?, s.media[i].port);
    let key = s.security(i).first_usable().map(|c| c.keying.clone());
    Some((addr, key))
}

fn sdp_body(user: &str, port: u16, key: Option<&Keying>) -> String {
    let (proto, crypto) = match key {
        Some(k) => (
            "RTP/SAVP",
            format!(
                "a=crypto:{}\r\n",
                sdp::Crypto {
                    tag: 1,
                    keying: k.clone()
                }
                .to_value()
            ),
        ),
        None => ("RTP/AVP", String::new()),
    };
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=ptime:20\r\n{crypto}a=sendrecv\r\n"
    )
}

fn tone(freq: f64) -> [u8; 160] {
    // 400 and 1000 Hz fit a whole number of periods in 160 samples: every packet is the same.
    let mut p = [0u8; 160];
    for (i, b) in p.iter_mut().enumerate() {
        let x = 8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin();
        *b = media::codec::encode_pcma(x as i16);
    }
    p
}

struct Load {
    a: Args,
    uac: UdpSocket,
    uas: UdpSocket,
    callers: Vec<Caller>,
    /// Legs 0..calls are the callers', calls.. the callees' (in the order tapir called them).
    legs: Vec<Leg>,
    callees: Vec<Callee>,
    by_call_id: HashMap<String, usize>,
    rng: XorShift,
    sip_buf: Vec<u8>,
    /// Part of every Call-ID and branch: runs against the same tapir never collide.
    run: u32,
}

impl Load {
    /// The customer's number of call `i`: one per call, as on a trunk (`--one-customer`: the
    /// same for all).
    fn number(&self, i: usize) -> String {
        match &self.a.one_customer {
            Some(n) => n.clone(),
            None => format!("+4931{i:06}"),
        }
    }

    fn invite(&mut self, i: usize) {
        let c = &self.callers[i];
        let port = self.legs[i].port;
        let body = sdp_body("caller", port, c.key.as_ref());
        let (t, u, r, n) = (self.a.target, self.a.uac, self.run, self.number(i));
        let m = format!(
            "INVITE sip:1000@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {u};branch=z9hG4bK-load-{r}-{i}-inv\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{n}@{u}>;tag=f{i}\r\nTo: <sip:1000@{t}>\r\n\
             Call-ID: load-{i}-{r}@srtp-load\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{u}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = self.uac.send_to(m.as_bytes(), t);
    }

    fn in_dialog(&self, i: usize, method: &str, cseq: u32) {
        let c = &self.callers[i];
        let (t, u, r, n) = (self.a.target, self.a.uac, self.run, self.number(i));
        let m = format!(
            "{method} sip:1000@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {u};branch=z9hG4bK-load-{r}-{i}-{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{n}@{u}>;tag=f{i}\r\nTo: <sip:1000@{t}>;tag={}\r\n\
             Call-ID: load-{i}-{r}@srtp-load\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            c.to_tag
        );
        let _ = self.uac.send_to(m.as_bytes(), t);
    }

    /// What tapir sent the caller side: responses to INVITE and BYE, or a BYE of its own.
    fn on_uac(&mut self, msg: &str, from: SocketAddr) {
        let Some(i) = header(msg, "Call-ID")
            .and_then(|c| c.strip_prefix("load-"))
            .and_then(|c| c.split('-').next())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < self.callers.len())
        else {
            return;
        };
        if msg.starts_with("BYE ") {
            let ok = format!(
                "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
                echo_headers(msg, None)
            );
            let _ = self.uac.send_to(ok.as_bytes(), from);
            self.callers[i].state = State::Done;
            self.legs[i].sending = false;
            return;
        }
        let Some(status) = msg
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return;
        };
        let cseq = header(msg, "CSeq").unwrap_or("");
        let c = &mut self.callers[i];
        if cseq.ends_with("INVITE") {
            if status < 200 {
                c.sends = MAX_SENDS; // provisional: tapir has it, no more retransmissions
                return;
            }
            if status >= 300 {
                if c.state == State::Inviting {
                    c.state = State::Failed;
                    eprintln!(
                        "srtp-load: call {i} refused: {}",
                        msg.lines().next().unwrap_or("")
                    );
                }
                return;
            }
            c.to_tag = header(msg, "To")
                .and_then(|t| t.split("tag=").nth(1))
                .map(|t| t.split(';').next().unwrap_or(t).to_string())
                .unwrap_or_default();
            let first = c.state == State::Inviting;
            if first {
                let Some((remote, key)) = media_of(body(msg)) else {
                    c.state = State::Failed;
                    return;
                };
                if self.a.srtp && key.is_none() {
                    eprintln!("srtp-load: call {i} answered without a key");
                    c.state = State::Failed;
                    return;
                }
                c.state = State::Up;
                let leg = &mut self.legs[i];
                leg.remote = Some(remote);
                leg.tx = c.key.as_ref().map(|k| Context::new(k).unwrap());
                leg.rx = key.map(|k| Context::new(&k).unwrap());
                leg.sending = true;
            }
            // ACK every 2xx, also a retransmitted one.
            self.in_dialog(i, "ACK", 1);
        } else if cseq.ends_with("BYE") && status >= 200 {
            self.callers[i].state = State::Done;
        }
    }

    /// What tapir sent the callee side: INVITE, ACK, BYE.
    fn on_uas(&mut self, msg: &str, from: SocketAddr) {
        let Some(call_id) = header(msg, "Call-ID").map(str::to_string) else {
            return;
        };
        let known = self.by_call_id.get(&call_id).copied();
        if msg.starts_with("INVITE ") {
            if let Some(k) = known {
                // A retransmission: the same answer again.
                let _ = self.uas.send_to(self.callees[k].ok.as_bytes(), from);
                return;
            }
            let Some((remote, their_key)) = media_of(body(msg)) else {
                return;
            };
            let k = self.callees.len();
            let leg_i = self.a.calls + k;
            if leg_i >= self.legs.len() {
                return; // more calls than placed: not ours
            }
            let ours = if self.a.srtp {
                let Some(t) = &their_key else {
                    eprintln!("srtp-load: tapir offered the callee no key");
                    return;
                };
                Some(self.rng.keying(t.master.suite()))
            } else {
                None
            };
            let body = sdp_body("callee", self.legs[leg_i].port, ours.as_ref());
            let ok = format!(
                "SIP/2.0 200 OK\r\n{}Contact: <sip:callee@{}>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                echo_headers(msg, Some(&format!("t{k}"))),
                self.a.uas,
                body.len()
            );
            let _ = self.uas.send_to(ok.as_bytes(), from);
            let leg = &mut self.legs[leg_i];
            leg.remote = Some(remote);
            leg.tx = ours.as_ref().map(|k| Context::new(k).unwrap());
            leg.rx = their_key.map(|k| Context::new(&k).unwrap());
            leg.sending = true;
            self.callees.push(Callee {
                ok,
                from,
                acked: false,
                last_send: Instant::now(),
                sends: 1,
                done: false,
            });
            self.by_call_id.insert(call_id, k);
        } else if msg.starts_with("ACK ") {
            if let Some(k) = known {
                self.callees[k].acked = true;
            }
        } else if msg.starts_with("BYE ") {
            let ok = format!(
                "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
                echo_headers(msg, None)
            );
            let _ = self.uas.send_to(ok.as_bytes(), from);
            if let Some(k) = known {
                self.callees[k].done = true;
                self.legs[self.a.calls + k].sending = false;
            }
        } else if msg.starts_with("OPTIONS ") || msg.starts_with("UPDATE ") {
            let ok = format!(
                "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
                echo_headers(msg, None)
            );
            let _ = self.uas.send_to(ok.as_bytes(), from);
        }
    }

    fn poll_sip(&mut self) {
        for side in [false, true] {
            loop {
                let sock = if side { &self.uas } else { &self.uac };
                let (n, from) = match sock.recv_from(&mut self.sip_buf) {
                    Ok(x) => x,
                    Err(_) => break,
                };
                let msg = String::from_utf8_lossy(&self.sip_buf[..n]).into_owned();
                if side {
                    self.on_uas(&msg, from);
                } else {
                    self.on_uac(&msg, from);
                }
            }
        }
    }

    /// Starts, retransmits and hangs up calls whose time has come.
    fn timers(&mut self, now: Instant) {
        for i in 0..self.callers.len() {
            let c = &mut self.callers[i];
            match c.state {
                State::Waiting if now >= c.start_at => {
                    c.state = State::Inviting;
                    c.last_send = now;
                    c.sends = 1;
                    self.invite(i);
                }
                State::Inviting if c.sends < MAX_SENDS && now - c.last_send >= RETRANSMIT => {
                    c.last_send = now;
                    c.sends += 1;
                    self.invite(i);
                }
                State::Inviting if c.sends >= MAX_SENDS && now - c.last_send >= 60 * RETRANSMIT => {
                    eprintln!("srtp-load: call {i}: no final response");
                    c.state = State::Failed;
                }
                State::Up if now >= c.end_at => {
                    c.state = State::Hanging;
                    c.last_send = now;
                    c.sends = 1;
                    self.legs[i].sending = false;
                    self.in_dialog(i, "BYE", 2);
                }
                State::Hanging if now - c.last_send >= RETRANSMIT => {
                    if c.sends >= MAX_SENDS {
                        eprintln!("srtp-load: call {i}: BYE unanswered");
                        c.state = State::Failed;
                    } else {
                        c.last_send = now;
                        c.sends += 1;
                        self.in_dialog(i, "BYE", 2);
                    }
                }
                _ => {}
            }
        }
        for e in &mut self.callees {
            if !e.acked && !e.done && e.sends < MAX_SENDS && now - e.last_send >= RETRANSMIT {
                e.last_send = now;
                e.sends += 1;
                let _ = self.uas.send_to(e.ok.as_bytes(), e.from);
            }
        }
    }
}

fn main() {
    let a = args();
    let ip = a.uac.ip();
    let bind = |addr: SocketAddr| {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| die(&format!("cannot bind {addr}: {e}")));
        s.set_nonblocking(true).unwrap();
        s
    };
    let (uac, uas) = (bind(a.uac), bind(a.uas));
    let mut rng = XorShift(
        0x9e37_79b9_7f4a_7c15
            ^ u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
    );
    let n = a.calls;
    let t0 = Instant::now() + Duration::from_millis(200);
    let spacing = Duration::from_secs_f64(1.0 / a.rate);
    let mut legs = Vec::with_capacity(2 * n);
    let mut callers = Vec::with_capacity(n);
    for i in 0..2 * n {
        // Even ports, two apart: each party's RTCP port (the one above) stays free.
        let port = a.rtp_base + 2 * i as u16;
        legs.push(Leg::new(ip, port, rng.next() as u32));
    }
    for i in 0..n {
        let start_at = t0 + spacing * i as u32;
        callers.push(Caller {
            state: State::Waiting,
            start_at,
            end_at: start_at + a.duration,
            last_send: t0,
            sends: 0,
            to_tag: String::new(),
            key: a.srtp.then(|| rng.keying(a.suite)),
        });
    }
    let mode = if a.srtp { "srtp" } else { "plain" };
    let (suite, tapir_pid, calls, dur) = (a.suite, a.tapir_pid, a.calls, a.duration);
    let mut load = Load {
        a,
        uac,
        uas,
        callers,
        legs,
        callees: Vec::new(),
        by_call_id: HashMap::new(),
        run: rng.next() as u32,
        rng,
        sip_buf: vec![0u8; 65536],
    };
    let caller_tone = tone(400.0);
    let callee_tone = tone(1000.0);
    let mut buf = vec![0u8; 2048];
    let deadline = t0 + spacing * n as u32 + dur + Duration::from_secs(30);
    // The media schedule: leg j sends at tick + j × 20 ms / (2n), so the 2n parties' packets
    // are spread evenly over each 20 ms.
    let slot = PTIME / (2 * n) as u32;
    let (mut tick, mut next_leg) = (t0, 0usize);
    let (mut last_sip, mut late_max) = (t0, Duration::ZERO);
    let mut window: Option<(Instant, Option<u64>)> = None;
    let mut window_end: Option<(Instant, Option<u64>)> = None;
    loop {
        let now = Instant::now();
        if now >= last_sip + Duration::from_millis(1) || now < t0 {
            load.poll_sip();
            load.timers(now);
            last_sip = now;
            let up = |s: State| s == State::Up;
            if window.is_none()
                && load.callers.iter().all(|c| up(c.state))
                && load.callees.len() == n
                && load.callees.iter().all(|e| e.acked)
            {
                window = Some((now, tapir_pid.and_then(cpu_ticks)));
            }
            if window.is_some() && window_end.is_none() && load.callers.iter().any(|c| !up(c.state))
            {
                window_end = Some((now, tapir_pid.and_then(cpu_ticks)));
            }
            let over = load
                .callers
                .iter()
                .all(|c| matches!(c.state, State::Done | State::Failed))
                && load.callees.iter().all(|e| e.done);
            if over || now > deadline {
                break;
            }
        }
        let due = tick + slot * next_leg as u32;
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_millis(1)));
            continue;
        }
        late_max = late_max.max(now - due);
        let payload = if next_leg < n {
            &caller_tone
        } else {
            &callee_tone
        };
        load.legs[next_leg].tick(payload, &mut buf);
        next_leg += 1;
        if next_leg == 2 * n {
            next_leg = 0;
            tick += PTIME;
        }
    }
    // What is still on its way in.
    std::thread::sleep(Duration::from_millis(100));
    for l in &mut load.legs {
        l.sending = false;
        l.tick(&caller_tone, &mut buf);
    }
    let count = |f: fn(&State) -> bool| load.callers.iter().filter(|c| f(&c.state)).count();
    let failed = count(|s| *s == State::Failed);
    let completed = count(|s| *s == State::Done);
    let sum =
        |r: std::ops::Range<usize>, f: fn(&Leg) -> u64| load.legs[r].iter().map(f).sum::<u64>();
    let (callers, callees) = (0..n, n..2 * n);
    let mut out = format!(
        "srtp-load: mode={mode} suite={} calls={calls} dur={} completed={completed} failed={failed} \
         caller_sent={} callee_sent={} caller_received={} callee_received={} \
         caller_undecryptable={} callee_undecryptable={} sender_late_max_ms={:.1}",
        if mode == "srtp" { suite.name() } else { "-" },
        dur.as_secs(),
        sum(callers.clone(), |l| l.sent),
        sum(callees.clone(), |l| l.sent),
        sum(callers.clone(), |l| l.received),
        sum(callees.clone(), |l| l.received),
        sum(callers, |l| l.undecryptable),
        sum(callees, |l| l.undecryptable),
        late_max.as_secs_f64() * 1000.0,
    );
    if let (Some((t_a, c_a)), Some((t_b, c_b))) = (window, window_end) {
        let secs = (t_b - t_a).as_secs_f64();
        out.push_str(&format!(" window_s={secs:.1}"));
        if let (Some(c_a), Some(c_b)) = (c_a, c_b) {
            let cpu = (c_b - c_a) as f64 / clk_tck();
            out.push_str(&format!(
                " tapir_cpu_window_s={cpu:.2} cpu_ms_per_call_s_window={:.3}",
                1000.0 * cpu / (calls as f64 * secs)
            ));
        }
    }
    println!("{out}");
    if failed > 0 || completed < calls {
        std::process::exit(1);
    }
}
