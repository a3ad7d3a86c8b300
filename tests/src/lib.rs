//! Harness for black-box tests: start the real `tapir` binary on free ports, run SIPp
//! scenarios against it, read its metrics.
//!
//! Tests wait for events (the "tapir ready" log line, a process exit, a metric reaching a
//! value), never for fixed sleeps.

pub use tempfile;

pub mod baresip;
pub mod browser;
pub mod pki;
pub mod s3;
pub mod sdes;
pub mod site;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Directory of the SIPp scenarios (`tests/sipp`).
pub fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// `../shared` beside the repository, when present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    p.is_dir().then_some(p)
}

/// Whether SIPp is installed; tests that need it fail loudly without it, because the test
/// command installs it.
pub fn sipp_path() -> PathBuf {
    PathBuf::from(std::env::var("SIPP").unwrap_or_else(|_| "sipp".into()))
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

// Three disjoint ranges, so a SIP port, a SIPp media block and a tapir RTP range never
// overlap: SIP ports 20000-29999, tapir RTP ranges 40000-49999, SIPp media 52000-59999. The
// process id shifts the start, so consecutive test binaries do not reuse ports still in
// TIME_WAIT.

/// A port free for both UDP and TCP on `ip`, distinct from others handed out in this process.
pub fn free_port(ip: &str) -> u16 {
    let offset = std::process::id() % 10_000;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (20_000 + (offset + n) % 10_000) as u16;
        let addr: SocketAddr = format!("{}:{port}", bracket(ip)).parse().unwrap();
        if UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok() {
            return port;
        }
    }
}

/// A media port for SIPp's `-mp`: SIPp binds it and the next three (RTP/RTCP for audio and
/// video), so these come in blocks of four from their own range.
pub fn free_media_port(ip: &str) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = std::process::id() % 2_000;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (52_000 + ((offset + k) % 2_000) * 4) as u16;
        let ok = (0..4).all(|i| {
            let addr: SocketAddr = format!("{}:{}", bracket(ip), port + i).parse().unwrap();
            UdpSocket::bind(addr).is_ok()
        });
        if ok {
            return port;
        }
    }
}

/// A block of `n` consecutive free UDP ports (for RTP ranges).
pub fn free_port_range(n: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n32 = u32::from(n.clamp(4, 5_000));
    let k = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
    let slots = 10_000 / n32;
    let slot = (std::process::id() + k) % slots;
    let start = 40_000 + slot * n32;
    (start as u16, (start + n32 - 1) as u16)
}

pub fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// A running tapir.
pub struct Tapir {
    child: Child,
    pub sip_port: u16,
    /// The RTP port range tapir was given.
    pub rtp_ports: (u16, u16),
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    bin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct TapirOptions {
    /// Extra TOML appended to the generated config (routes, recording...).
    pub extra: String,
    /// Listen also on [::1].
    pub ipv6: bool,
    pub t1_ms: u64,
    pub rtp_ports: u16,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl Default for TapirOptions {
    fn default() -> Self {
        Self {
            extra: String::new(),
            ipv6: false,
            t1_ms: 500,
            rtp_ports: 200,
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Tapir {
    /// Starts tapir with one route to `callee` (a SIP URI) plus `opts.extra`.
    pub fn start(bin: &str, routes: &str, opts: TapirOptions) -> Tapir {
        let dir = tempfile::tempdir().unwrap();
        let sip_port = free_port("127.0.0.1");
        let http_port = free_port("127.0.0.1");
        let (pmin, pmax) = free_port_range(opts.rtp_ports);
        let (udp, tcp, ips) = if opts.ipv6 {
            (
                format!("[\"127.0.0.1:{sip_port}\", \"[::1]:{sip_port}\"]"),
                format!("[\"127.0.0.1:{sip_port}\", \"[::1]:{sip_port}\"]"),
                "[\"127.0.0.1\", \"::1\"]".to_string(),
            )
        } else {
            (
                format!("[\"127.0.0.1:{sip_port}\"]"),
                format!("[\"127.0.0.1:{sip_port}\"]"),
                "[\"127.0.0.1\"]".to_string(),
            )
        };
        let cfg = format!(
            "[sip]\nlisten_udp = {udp}\nlisten_tcp = {tcp}\nt1_ms = {t1}\nt2_ms = {t2}\n\n\
             [media]\nips = {ips}\nport_min = {pmin}\nport_max = {pmax}\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[log]\nlevel = \"info,tapir=debug\"\n\n{extra}\n{routes}\n",
            t1 = opts.t1_ms,
            t2 = (opts.t1_ms * 8).max(opts.t1_ms),
            extra = opts.extra,
        );
        // Access control is tested on its own (crates/tapir/tests/access.rs); the other
        // tests drive the control API and the recordings API as the host's administrator.
        let cfg = if opts.extra.contains("[access]") {
            cfg
        } else {
            format!("{cfg}\n[access]\nenabled = false\n")
        };
        let path = dir.path().join("tapir.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut t = Self::spawn(bin, dir, sip_port, http_port, &opts);
        t.rtp_ports = (pmin, pmax);
        t
    }

    fn spawn(
        bin: &str,
        dir: tempfile::TempDir,
        sip_port: u16,
        http_port: u16,
        opts: &TapirOptions,
    ) -> Tapir {
        let path = dir.path().join("tapir.toml");
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&path)
            .args(&opts.args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tapir");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            let mut ready = Some(ready_tx);
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("tapir ready") {
                    if let Some(t) = ready.take() {
                        let _ = t.send(());
                    }
                }
                log2.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("tapir did not become ready:\n{}", log.lock().unwrap());
        }
        Tapir {
            child,
            sip_port,
            rtp_ports: (0, 0),
            http: format!("127.0.0.1:{http_port}").parse().unwrap(),
            dir,
            log,
            bin: bin.to_string(),
            args: opts.args.clone(),
            env: opts.env.clone(),
        }
    }

    /// Kills tapir with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts tapir again on the same configuration, directory and ports.
    pub fn restart(self) -> Tapir {
        let mut this = self;
        this.kill9();
        let opts = TapirOptions {
            args: this.args.clone(),
            env: this.env.clone(),
            ..Default::default()
        };
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().unwrap());
        let http_port = this.http.port();
        let ports = this.rtp_ports;
        let mut t = Self::spawn(&this.bin.clone(), dir, this.sip_port, http_port, &opts);
        t.rtp_ports = ports;
        t
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("tapir.toml")
    }

    pub fn sip(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The first line of its log for which `pred` holds, waiting up to `timeout` for it (its
    /// log is read by another thread, a moment after the line is written).
    pub fn wait_log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.log().lines().find(|l| pred(l)) {
                return l.to_string();
            }
            assert!(
                std::time::Instant::now() < end,
                "no such line in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to tapir.
    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits for tapir to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A plain HTTP/1.0 GET or POST on the HTTP port; returns (status, body).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        http_request(self.http, method, path, "")
    }

    pub fn metrics(&self) -> String {
        self.http("GET", "/metrics").1
    }

    /// Sum of a metric's samples whose line starts with `prefix` (name plus optional labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        parse_metric(&self.metrics(), prefix)
    }

    /// Polls a metric until `pred` holds (the event we wait for), or panics after `timeout`.
    /// A wait on `tapir_recordings_total` also waits until nothing is pending for storage
    /// (`tapir_uploads_pending` is 0): a finished recording is counted when it is handed to
    /// the shelf, and tests then read it from the recordings directory.
    pub fn wait_metric(&self, prefix: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + timeout;
        loop {
            let v = self.metric(prefix);
            if pred(v)
                && (!prefix.starts_with("tapir_recordings_total")
                    || self.metric("tapir_uploads_pending") == 0.0)
            {
                return v;
            }
            if Instant::now() > end {
                panic!(
                    "metric {prefix} = {v} never met the condition\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Tapir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files whose name ends with `.{ext}` anywhere under `dir` (stored recordings are kept as
/// `yyyy/mm/dd/<name>.<ext>`; the spool has `outbox/` and `quarantine/`), sorted. An absent
/// directory has none.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn parse_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(prefix)
                && l[prefix.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == ' ' || c == '{' || prefix.ends_with('}'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: tapir\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// A SIPp process.
pub struct Sipp {
    child: Child,
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Sipp {
    /// Runs SIPp with `args` in its own directory (for its log files).
    pub fn spawn(name: &str, args: &[String]) -> Sipp {
        Self::spawn_in(name, args, tempfile::tempdir().unwrap())
    }

    /// Waits for SIPp to finish; returns its exit code (0: every call succeeded).
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return -2;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIPp's error and message logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                let p = e.path();
                if let Ok(t) = std::fs::read_to_string(&p) {
                    let tail: String = t
                        .chars()
                        .rev()
                        .take(6000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    out.push_str(&format!("== {} {}\n{tail}\n", self.name, p.display()));
                }
            }
        }
        out
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Common SIPp arguments: scenario file (or built-in `-sn` name) and local address.
pub fn sipp_args(scenario: &str, local_ip: &str, port: u16) -> Vec<String> {
    let mut v = Vec::new();
    if scenario.ends_with(".xml") {
        v.push("-sf".into());
        v.push(scenarios().join(scenario).to_string_lossy().into_owned());
    } else {
        v.push("-sn".into());
        v.push(scenario.into());
    }
    v.extend(["-i".into(), local_ip.into(), "-p".into(), port.to_string()]);
    v
}

/// Writes a pcap of PCMA RTP (payload type 8, 20 ms packets) carrying a sine tone at `freq`
/// Hz for `secs` seconds, for SIPp's `play_pcap_audio`.
pub fn write_tone_pcap(path: &Path, freq: f64, secs: f64) {
    let packets = (secs / 0.02) as u32;
    let mut phase = 0.0f64;
    let mut list = Vec::new();
    for i in 0..packets {
        let mut rtp = vec![0u8; 172];
        media::rtp::write_header(&mut rtp, i == 0, 8, i as u16, i * 160, 0x1234_5678);
        for b in rtp[12..].iter_mut() {
            *b = media::codec::encode_pcma((8000.0 * phase.sin()) as i16);
            phase += 2.0 * std::f64::consts::PI * freq / 8000.0;
        }
        list.push((i as u64 * 20_000, rtp));
    }
    write_pcap(path, &list);
}

/// Writes a pcap of RFC 4733 telephone-events (payload type 101) keying `digits` the way a
/// desk phone does: 100 ms per key with updates every 20 ms, the end packet sent three times,
/// 100 ms between keys; one SSRC and increasing timestamps throughout. Pcaps of different
/// digits start at different timestamps and sequence numbers, as one phone's later key
/// presses do: a detector must not take `*5` after `*4` for a repeat of the same `*`.
pub fn write_dtmf_pcap(path: &Path, digits: &str) {
    write_dtmf_pcap_gap(path, digits, 100);
}

/// [`write_dtmf_pcap`] with `gap_ms` between the end of one key and the next.
pub fn write_dtmf_pcap_gap(path: &Path, digits: &str, gap_ms: u64) {
    let mut list = Vec::new();
    let base = digits
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 1000;
    let (mut t_us, mut ts, mut seq) = (0u64, 16000 + base * 8000, 1000 + base as u16 * 20);
    for d in digits.chars() {
        let code = media::dtmf::digit_to_event_code(d).expect("DTMF digit");
        for i in 0..8u16 {
            let end = i >= 5;
            let dur = 160 * (i.min(4) + 1);
            let mut rtp = vec![0u8; 16];
            media::rtp::write_header(&mut rtp, i == 0, 101, seq, ts, 0x0bad_cafe);
            rtp[12] = code;
            rtp[13] = if end { 0x80 | 10 } else { 10 };
            rtp[14..16].copy_from_slice(&dur.to_be_bytes());
            list.push((t_us, rtp));
            seq = seq.wrapping_add(1);
            if i < 5 {
                t_us += 20_000;
            }
        }
        t_us += gap_ms * 1000;
        ts = ts.wrapping_add(160 * 5 + 8 * gap_ms as u32);
    }
    write_pcap(path, &list);
}

/// The two frequencies (Hz) of a DTMF key (ITU-T Q.23).
fn dtmf_freqs(d: char) -> (f64, f64) {
    let row = |r| [697.0, 770.0, 852.0, 941.0][r];
    let col = |c| [1209.0, 1336.0, 1477.0, 1633.0][c];
    let (r, c) = match d {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        _ => (3, 3),
    };
    (row(r), col(c))
}

/// One span of [`write_pcma_pcap`]'s audio.
#[derive(Clone, Copy, Debug)]
pub enum Audio {
    /// A sine at this frequency, for this many seconds.
    Tone(f64, f64),
    /// In-band DTMF keys (100 ms each, 100 ms apart), as a phone without telephone-event
    /// sends them.
    Keys(&'static str),
}

/// Writes one PCMA stream (payload type 8, 20 ms packets, one SSRC) of the spans in order.
pub fn write_pcma_pcap(path: &Path, spans: &[Audio]) {
    let mut samples: Vec<f64> = Vec::new();
    for s in spans {
        match *s {
            Audio::Tone(f, secs) => {
                let n = (secs * 8000.0) as usize;
                samples.extend(
                    (0..n).map(|i| {
                        8000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 8000.0).sin()
                    }),
                );
            }
            Audio::Keys(keys) => {
                for d in keys.chars() {
                    let (lo, hi) = dtmf_freqs(d);
                    samples.extend((0..800).map(|i| {
                        let t = i as f64 / 8000.0;
                        6000.0 * (2.0 * std::f64::consts::PI * lo * t).sin()
                            + 6000.0 * (2.0 * std::f64::consts::PI * hi * t).sin()
                    }));
                    samples.extend(std::iter::repeat_n(0.0, 800));
                }
            }
        }
    }
    let mut list = Vec::new();
    for (i, chunk) in samples.chunks(160).enumerate() {
        let mut rtp = vec![0u8; 12 + chunk.len()];
        let i = i as u32;
        media::rtp::write_header(&mut rtp, i == 0, 8, i as u16, i * 160, 0x1234_5678);
        for (b, x) in rtp[12..].iter_mut().zip(chunk) {
            *b = media::codec::encode_pcma(*x as i16);
        }
        list.push((u64::from(i) * 20_000, rtp));
    }
    write_pcap(path, &list);
}

/// Writes one PCMA stream (payload type 8, 20 ms packets, one SSRC) of 8 kHz samples, for
/// SIPp's `play_pcap_audio` (speech made with [`espeak`], for instance).
pub fn write_pcma_samples_pcap(path: &Path, samples: &[i16]) {
    let mut list = Vec::new();
    for (i, chunk) in samples.chunks(160).enumerate() {
        let mut rtp = vec![0u8; 12 + chunk.len()];
        let i = i as u32;
        media::rtp::write_header(&mut rtp, i == 0, 8, i as u16, i * 160, 0x5eec_0001);
        for (b, x) in rtp[12..].iter_mut().zip(chunk) {
            *b = media::codec::encode_pcma(*x);
        }
        list.push((u64::from(i) * 20_000, rtp));
    }
    write_pcap(path, &list);
}

/// Whether `espeak-ng` and `sox` are installed. Without them a test that needs speech fails
/// when `CI=true` (the test command installs them) and is skipped otherwise, saying so.
pub fn speech_tools_present() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let present = ok("espeak-ng") && ok("sox");
    if !present {
        let msg = "espeak-ng and sox are required: apt-get install -y espeak-ng sox";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
    }
    present
}

/// `text` spoken by espeak-ng's `voice` at 150 words per minute, as 8 kHz 16-bit samples
/// (what a telephone line carries), with where its speech starts and ends (samples above
/// −40 dBFS). `sox -R` makes the resampling deterministic.
pub fn espeak(dir: &Path, name: &str, voice: &str, text: &str) -> (Vec<i16>, (usize, usize)) {
    let raw = dir.join(format!("{name}.22k.wav"));
    let narrow = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng {voice} {text:?}");
    let status = Command::new("sox")
        .arg("-R")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&narrow)
        .status()
        .expect("sox runs");
    assert!(status.success(), "sox {}", raw.display());
    let mut r = hound::WavReader::open(&narrow).unwrap();
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let loud = |s: &i16| s.unsigned_abs() >= 328;
    let first = samples.iter().position(loud).expect("speech");
    let last = samples.iter().rposition(loud).unwrap() + 1;
    (samples, (first, last))
}

/// SSRC of the stream [`phone_keying`] builds.
pub const PHONE_SSRC: u32 = 0x5eed_f00d;

/// First sequence number of [`phone_keying`]'s stream: close below 2^16, so the numbers wrap
/// during the call.
pub const PHONE_FIRST_SEQ: u16 = 65_500;

/// What a desk phone sends while its user keys `digits` mid-call, as one RTP stream (one SSRC,
/// consecutive sequence numbers, timestamps following the clock): `before_s` seconds of PCMA
/// tone at `freq` Hz, the digits as RFC 4733 events (PT 101, as [`write_dtmf_pcap`] keys them;
/// no audio meanwhile), one RTCP sender report counting everything sent so far, then `after_s`
/// seconds of tone. Items are (time in µs, UDP destination port, bytes): RTP to 6000, RTCP to
/// 6001, which SIPp's `play_pcap_audio` sends to the media port and the one above it.
pub fn phone_keying(
    freq: f64,
    before_s: f64,
    digits: &str,
    after_s: f64,
) -> Vec<(u64, u16, Vec<u8>)> {
    let mut out = Vec::new();
    let (mut t_us, mut ts, mut seq) = (0u64, 0u32, PHONE_FIRST_SEQ);
    let (mut packets, mut octets) = (0u32, 0u32);
    let mut phase = 0.0f64;
    let mut audio = |out: &mut Vec<_>, t_us: &mut u64, ts: &mut u32, seq: &mut u16, secs: f64| {
        for i in 0..(secs / 0.02) as u32 {
            let mut rtp = vec![0u8; 172];
            media::rtp::write_header(&mut rtp, i == 0, 8, *seq, *ts, PHONE_SSRC);
            for b in rtp[12..].iter_mut() {
                *b = media::codec::encode_pcma((8000.0 * phase.sin()) as i16);
                phase += 2.0 * std::f64::consts::PI * freq / 8000.0;
            }
            out.push((*t_us, 6000, rtp));
            *seq = seq.wrapping_add(1);
            *ts = ts.wrapping_add(160);
            *t_us += 20_000;
        }
    };
    audio(&mut out, &mut t_us, &mut ts, &mut seq, before_s);
    for d in digits.chars() {
        let code = media::dtmf::digit_to_event_code(d).expect("DTMF digit");
        for i in 0..8u16 {
            let end = i >= 5;
            let dur = 160 * (i.min(4) + 1);
            let mut rtp = vec![0u8; 16];
            media::rtp::write_header(&mut rtp, i == 0, 101, seq, ts, PHONE_SSRC);
            rtp[12] = code;
            rtp[13] = if end { 0x80 | 10 } else { 10 };
            rtp[14..16].copy_from_slice(&dur.to_be_bytes());
            out.push((t_us, 6000, rtp));
            seq = seq.wrapping_add(1);
            if i < 5 {
                t_us += 20_000;
            }
        }
        // 100 ms of the key's events and 100 ms between keys, in RTP time too.
        t_us += 100_000;
        ts = ts.wrapping_add(1600);
    }
    for (_, _, p) in &out {
        packets += 1;
        octets += p.len() as u32 - 12;
    }
    let mut sr = vec![0x80, 200, 0, 6];
    sr.extend(PHONE_SSRC.to_be_bytes());
    sr.extend([0u8; 8]);
    sr.extend(ts.to_be_bytes());
    sr.extend(packets.to_be_bytes());
    sr.extend(octets.to_be_bytes());
    out.push((t_us, 6001, sr));
    audio(&mut out, &mut t_us, &mut ts, &mut seq, after_s);
    out
}

/// Writes RTP packets (time in µs, RTP bytes) as an Ethernet/IPv4/UDP pcap.
pub fn write_pcap(path: &Path, packets: &[(u64, Vec<u8>)]) {
    let with_ports: Vec<(u64, u16, Vec<u8>)> =
        packets.iter().map(|(t, p)| (*t, 6000, p.clone())).collect();
    write_pcap_to(path, &with_ports);
}

/// Writes UDP datagrams (time in µs, destination port, bytes) as an Ethernet/IPv4/UDP pcap.
pub fn write_pcap_to(path: &Path, packets: &[(u64, u16, Vec<u8>)]) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, thiszone, sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (t_us, port, rtp) in packets {
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0u8; 12]);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(rtp);
        out.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// Energy of `freq` in `samples` (8 kHz), by the Goertzel algorithm.
pub fn tone_energy(samples: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

/// Reads a stereo 8 kHz WAV into (channel 1, channel 2).
pub fn read_stereo_wav(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "stereo");
    assert_eq!(spec.sample_rate, 8000);
    assert_eq!(spec.bits_per_sample, 16);
    let all: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let c1 = all.iter().step_by(2).copied().collect();
    let c2 = all.iter().skip(1).step_by(2).copied().collect();
    (c1, c2)
}

impl Sipp {
    /// Like [`Sipp::spawn`], with the test media in its working directory: `tone.pcap` (a
    /// sine at `freq` Hz for `secs` seconds), `star2.pcap`, `star3.pcap`, `star4.pcap`,
    /// `star5.pcap`, `star_gap2.pcap` (`*` then `2` 800 ms later),
    /// `digit1.pcap`, `digit2.pcap` (RFC 4733 key presses), `inband_star2.pcap` (the tone
    /// with `*2` keyed in-band after 1 s), and `phone_star2.pcap` ([`phone_keying`] of `*2`
    /// after 1 s of the tone, 1.5 s of it after).
    pub fn spawn_with_tone(name: &str, args: &[String], freq: f64, secs: f64) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        write_tone_pcap(&dir.path().join("tone.pcap"), freq, secs);
        write_pcap_to(
            &dir.path().join("phone_star2.pcap"),
            &phone_keying(freq, 1.0, "*2", 1.5),
        );
        write_dtmf_pcap(&dir.path().join("star2.pcap"), "*2");
        write_dtmf_pcap(&dir.path().join("digit1.pcap"), "1");
        write_dtmf_pcap(&dir.path().join("digit2.pcap"), "2");
        write_dtmf_pcap(&dir.path().join("star4.pcap"), "*4");
        write_dtmf_pcap(&dir.path().join("star5.pcap"), "*5");
        write_dtmf_pcap(&dir.path().join("star3.pcap"), "*3");
        // `*`, then `2` 800 ms later: a code only if the inter-digit timeout allows it.
        write_dtmf_pcap_gap(&dir.path().join("star_gap2.pcap"), "*2", 800);
        // The agent's audio of a phone without telephone-event: its tone, then *2 keyed
        // in-band 1 s in, then its tone again.
        write_pcma_pcap(
            &dir.path().join("inband_star2.pcap"),
            &[
                Audio::Tone(freq, 1.0),
                Audio::Keys("*2"),
                Audio::Tone(freq, secs),
            ],
        );
        Self::spawn_in(name, args, dir)
    }

    /// Starts one party of a test call: `scenario` on `ip:port` with its own media port and
    /// `-m 1`. A caller (`toward` set) sends to that tapir; `tone` puts the test media in its
    /// directory (see [`Sipp::spawn_with_tone`]).
    pub fn party(
        name: &str,
        scenario: &str,
        ip: &str,
        port: u16,
        toward: Option<&Tapir>,
        tone: Option<f64>,
        extra: &[&str],
    ) -> Sipp {
        let mut a = sipp_args(scenario, ip, port);
        if let Some(t) = toward {
            a.insert(0, format!("{}:{}", bracket(ip), t.sip_port));
        }
        a.extend([
            "-mp".into(),
            free_media_port(ip).to_string(),
            "-m".into(),
            "1".into(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        match tone {
            Some(f) => Sipp::spawn_with_tone(name, &a, f, 20.0),
            None => Sipp::spawn(name, &a),
        }
    }

    /// Starts one party like [`Sipp::party`], whose scenario plays `audio` (8 kHz samples,
    /// sent as PCMA) as its `tone.pcap`.
    pub fn party_with_audio(
        name: &str,
        scenario: &str,
        port: u16,
        toward: Option<&Tapir>,
        audio: &[i16],
        extra: &[&str],
    ) -> Sipp {
        let ip = "127.0.0.1";
        let mut a = sipp_args(scenario, ip, port);
        if let Some(t) = toward {
            a.insert(0, format!("{ip}:{}", t.sip_port));
        }
        a.extend([
            "-mp".into(),
            free_media_port(ip).to_string(),
            "-m".into(),
            "1".into(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        let dir = tempfile::tempdir().unwrap();
        write_pcma_samples_pcap(&dir.path().join("tone.pcap"), audio);
        Self::spawn_in(name, &a, dir)
    }

    fn spawn_in(name: &str, args: &[String], dir: tempfile::TempDir) -> Sipp {
        let child = Command::new(sipp_path())
            .args(args)
            .args(["-nostdin", "-trace_err", "-trace_msg"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run sipp ({e}); the test command installs sip-tester")
            });
        Sipp {
            child,
            name: name.into(),
            dir,
        }
    }
}

/// Waits for every SIPp; panics with their logs and tapir's unless all exited 0 (every
/// expected message arrived, in order).
pub fn expect_success(t: &Tapir, sipps: &mut [&mut Sipp], timeout: Duration) {
    let rcs: Vec<i32> = sipps.iter_mut().map(|s| s.wait(timeout)).collect();
    if rcs.iter().any(|rc| *rc != 0) {
        let logs: String = sipps.iter().map(|s| s.logs()).collect();
        panic!("sipp rc {rcs:?}\n{logs}\ntapir log:\n{}", t.log());
    }
}

/// Runs one call through `t`: the callee on `callee_port`, then the caller; waits for both
/// to succeed. Each party gets its tone when given.
pub fn call(
    t: &Tapir,
    caller: (&str, Option<f64>, &[&str]),
    callee: (&str, Option<f64>, &[&str]),
    callee_port: u16,
) -> (Sipp, Sipp) {
    let mut b = Sipp::party(
        "callee",
        callee.0,
        "127.0.0.1",
        callee_port,
        None,
        callee.1,
        callee.2,
    );
    let mut a = Sipp::party(
        "caller",
        caller.0,
        "127.0.0.1",
        free_port("127.0.0.1"),
        Some(t),
        caller.1,
        caller.2,
    );
    expect_success(t, &mut [&mut a, &mut b], Duration::from_secs(30));
    (a, b)
}

/// Writes an 8 kHz mono 16-bit WAV prompt: a sine at `freq` Hz for `secs` seconds.
pub fn write_prompt_wav(path: &Path, freq: f64, secs: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(secs * 8000.0) as usize {
        let t = i as f64 / 8000.0;
        w.write_sample((8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}
