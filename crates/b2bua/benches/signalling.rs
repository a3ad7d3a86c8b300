//! CPU and allocations per call of the signalling core alone: SIPp's built-in `uac` and `uas`
//! scenarios (INVITE, 100, 180, 200, ACK, BYE, 200) replayed as bytes through [`B2bua`], with
//! no sockets and no kernel. Virtual time advances 1 ms per call, so transactions linger and
//! expire as they do at 1,000 calls per second and the tables reach their steady size.
//!
//! Run with `cargo bench -p b2bua --bench signalling` (`CALLS=N` to change the 100,000 calls).
//! Only the time and the allocations inside `handle_message`, `handle_timeout` and
//! `poll_output` are counted; the scripted endpoints' own work is not. The allocator is
//! mimalloc, as in the binary.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use b2bua::{B2bua, Config, Output, RouteConfig, Routes, Side};
use sip::transaction::{Peer, Timers};
use sip::{Message, Transport};

/// Counts allocations (around mimalloc), so a change that adds one per message shows.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TAPIR: &str = "127.0.0.1:5090";
const UAC: &str = "127.0.0.1:25080";
const UAS: &str = "127.0.0.1:25090";

fn peer(s: &str) -> Peer {
    Peer {
        addr: s.parse().expect("address"),
        transport: Transport::Udp,
    }
}

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(n: u64) -> Vec<u8> {
    format!(
        "INVITE sip:service@{TAPIR} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {UAC};branch=z9hG4bK-{n}-1-0\r\n\
         From: sipp <sip:sipp@{UAC}>;tag={n}SIPpTag001\r\n\
         To: service <sip:service@{TAPIR}>\r\n\
         Call-ID: {n}-25080@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: sip:sipp@{UAC}\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

fn in_dialog(method: &str, n: u64, to_tag: &str, cseq: u32, contact: &str) -> Vec<u8> {
    format!(
        "{method} {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {UAC};branch=z9hG4bK-{n}-{cseq}-{method}\r\n\
         From: sipp <sip:sipp@{UAC}>;tag={n}SIPpTag001\r\n\
         To: service <sip:service@{TAPIR}>;tag={to_tag}\r\n\
         Call-ID: {n}-25080@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: sip:sipp@{UAC}\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The callee's answer to a request tapir sent, as SIPp's `uas` builds it.
fn answer(req: &sip::Request, status: u16, reason: &str, n: u64) -> Vec<u8> {
    let mut r = req.response(status, reason);
    if status > 100 {
        let to = r.headers.get("To").unwrap_or("").to_string();
        if !to.contains("tag=") {
            r.headers.set("To", format!("{to};tag={n}SIPpTag012"));
        }
        r.headers
            .push("Contact", format!("<sip:{UAS};transport=UDP>"));
    }
    if status == 200 && req.method == sip::Method::Invite {
        r.headers.push("Content-Type", "application/sdp");
        r.body = SDP.as_bytes().to_vec();
    }
    r.to_bytes()
}

struct Bench {
    core: B2bua,
    now: Instant,
    busy: Duration,
    /// Allocations made inside the core.
    allocs: u64,
    messages: u64,
    /// Single steps (one message or one timer round) that took over 1 ms, with the number of
    /// the call: growing tables stop the core for one step, which the per-call means hide.
    stalls: Vec<(Duration, u64)>,
    /// Requests and responses tapir sent, by destination, since the last `take`.
    out: Vec<(SocketAddr, Vec<u8>)>,
}

impl Bench {
    fn feed(&mut self, from: &str, data: &[u8]) {
        let from = peer(from);
        let a = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        self.core.handle_message(self.now, data, from);
        self.drain();
        self.step(t.elapsed());
        self.allocs += ALLOCS.load(Ordering::Relaxed) - a;
        self.messages += 1;
    }

    fn step(&mut self, d: Duration) {
        self.busy += d;
        if d > Duration::from_millis(1) {
            self.stalls.push((d, self.messages / 7));
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            if let Output::Transmit { to, data } = o {
                self.out.push((to.addr, data));
            }
        }
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        let a = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        while self.core.poll_timeout().is_some_and(|d| d <= self.now) {
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.step(t.elapsed());
        self.allocs += ALLOCS.load(Ordering::Relaxed) - a;
    }

    /// Takes the one message tapir sent to `to` that satisfies `pick`.
    fn take(&mut self, to: &str, pick: impl Fn(&Message) -> bool) -> Message {
        let to: SocketAddr = to.parse().expect("address");
        let i = self
            .out
            .iter()
            .position(|(a, d)| *a == to && sip::message::parse(d, true).is_ok_and(|m| pick(&m)))
            .unwrap_or_else(|| panic!("tapir sent nothing expected to {to}"));
        let (_, data) = self.out.remove(i);
        sip::message::parse(&data, true).expect("tapir's own message parses")
    }
}

fn request_of(m: Message) -> sip::Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!("picked a request"),
    }
}

fn one_call(b: &mut Bench, n: u64) {
    b.feed(UAC, &invite(n));
    let inv = request_of(b.take(UAS, |m| matches!(m, Message::Request(_))));
    b.out.clear(); // 100 Trying to the caller
    b.feed(UAS, &answer(&inv, 100, "Trying", n));
    b.feed(UAS, &answer(&inv, 180, "Ringing", n));
    b.feed(UAS, &answer(&inv, 200, "OK", n));
    let ok = b.take(
        UAC,
        |m| matches!(m, Message::Response(r) if r.status == 200),
    );
    let to_tag = ok
        .headers()
        .get("To")
        .and_then(|t| t.split("tag=").nth(1))
        .unwrap_or("");
    let to_tag = to_tag.to_string();
    let contact = ok
        .headers()
        .get("Contact")
        .unwrap_or("")
        .trim_matches(['<', '>'])
        .to_string();
    b.out.clear(); // the 180 to the caller
    b.feed(UAC, &in_dialog("ACK", n, &to_tag, 1, &contact));
    b.out.clear(); // the ACK to the callee
    b.feed(UAC, &in_dialog("BYE", n, &to_tag, 2, &contact));
    let bye = request_of(b.take(UAS, |m| matches!(m, Message::Request(_))));
    b.feed(UAS, &answer(&bye, 200, "OK", n));
    b.out.clear();
}

fn main() {
    // As the binary does (`no_huge_pages` in crates/tapir/src/main.rs).
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and touches no memory of this process.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    // `cargo test --all-targets` runs this file too, unoptimized and without `--bench`: a
    // short run then checks that the scenario still completes, and measures nothing.
    let measuring = std::env::args().any(|a| a == "--bench");
    let calls: u64 = std::env::var("CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if measuring { 100_000 } else { 2_000 });
    let route = RouteConfig {
        name: "bench".into(),
        source: Vec::new(),
        source_zone: None,
        user_prefix: None,
        user_pattern: None,
        target: format!("sip:{UAS}"),
        customer: Side::Caller,
        direction: Some("inbound".into()),
        record: None,
        format: None,
        srtp: Default::default(),
        tls: None,
        external: false,
    };
    let routes = Routes::compile(&[route], &HashMap::new()).expect("route");
    let config = Config {
        sip_addrs: vec![TAPIR.parse().expect("address")],
        media_ips: vec!["127.0.0.1".parse().expect("address")],
        timers: Timers::default(),
        rtp_ports: (30000, 54999),
        id_seed: 1,
        user_agent: "tapir-bench".into(),
    };
    let mut b = Bench {
        core: B2bua::new(config, routes),
        now: Instant::now(),
        busy: Duration::ZERO,
        allocs: 0,
        messages: 0,
        stalls: Vec::new(),
        out: Vec::new(),
    };
    // The first 40 s of virtual time fill the tables to their steady size (transactions
    // linger 32 s); only what follows is reported.
    let warm = 40_000.min(calls / 2);
    // Timed in blocks of 5,000 calls (fewer in a short run): on a shared machine the fastest
    // block is the figure that repeats (the median is printed beside it).
    let block: u64 = 5_000.min((calls - warm).max(1));
    let mut blocks = Vec::new();
    let (mut allocs, mut messages) = (0, 0);
    let mut block_start = Duration::ZERO;
    for n in 0..calls {
        if n == warm {
            allocs = b.allocs;
            messages = b.messages;
        }
        if n >= warm && (n - warm) % block == 0 {
            block_start = b.busy;
        }
        one_call(&mut b, n);
        b.tick(Duration::from_millis(1));
        if n >= warm && (n - warm + 1) % block == 0 {
            blocks.push((b.busy - block_start).as_secs_f64() * 1e6 / block as f64);
        }
    }
    let measured = (calls - warm).max(1);
    let messages = (b.messages - messages) / measured;
    if blocks.is_empty() {
        println!("signalling core: {calls} calls completed; not measuring (run `cargo bench -p b2bua --bench signalling`)");
        return;
    }
    blocks.sort_by(f64::total_cmp);
    let (best, median) = (blocks[0], blocks[blocks.len() / 2]);
    println!(
        "signalling core: {measured} calls after {warm} warm-up: {best:.1} µs per call (median of {} blocks {median:.1}), {:.2} µs per message in, {messages} messages in per call, {:.0} allocations per call",
        blocks.len(),
        best / messages as f64,
        (b.allocs - allocs) as f64 / measured as f64,
    );
    // Over the whole run, warm-up included: that is when the tables grow.
    b.stalls.sort_by(|a, b| b.cmp(a));
    let longest: Vec<String> = b
        .stalls
        .iter()
        .take(5)
        .map(|(d, call)| format!("{:.1} ms (call {call})", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "steps over 1 ms in all {calls} calls: {}; longest: {}",
        b.stalls.len(),
        longest.join(", ")
    );
}
