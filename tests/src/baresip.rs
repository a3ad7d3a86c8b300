//! baresip (Debian's `baresip`, 1.0) as a real SDES-SRTP party of the black-box tests,
//! driven headless: its configuration in a temporary directory (`-f`), commands and events
//! over its `ctrl_tcp` module (netstrings of JSON), its audio from a WAV tone through the
//! `aufile` module, what it receives written to a WAV by the `sndfile` filter, playback to
//! ALSA's `null` device. Everything binds 127.0.0.1 on ports from the harness.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{free_media_port, free_port, write_prompt_wav};

/// The baresip binary (`BARESIP` overrides), or `None` when it is not installed. Under
/// `CI=true` a missing baresip panics: the test command installs it, so its absence is a
/// broken machine, not a reason to skip.
pub fn baresip_path() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("BARESIP").unwrap_or_else(|_| "baresip".into()));
    let found = Command::new(&p)
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "baresip is required under CI=true: apt-get install -y baresip (scripts/test.sh does)"
        );
    }
    eprintln!("skipping: baresip missing (apt-get install -y baresip)");
    None
}

/// How a baresip party is set up.
pub struct Party<'a> {
    /// The account's user: a callee must be the user tapir calls (the dialled number).
    pub user: &'a str,
    /// The account's `mediaenc`: `srtp` (RTP/AVP with `a=crypto`, best effort), `srtp-mand`
    /// (RTP/SAVP), `srtp-mandf` (RTP/SAVPF), or empty for plain RTP.
    pub mediaenc: &'a str,
    /// The tone it sends, Hz.
    pub tone_hz: f64,
    /// SIP over TLS: the certificate it presents (as a server, and as a client when the
    /// server asks for one) and the CAs it is given to trust. `None`: no TLS listener.
    pub tls: Option<PartyTls<'a>>,
}

/// A baresip party's TLS material.
pub struct PartyTls<'a> {
    /// Its own certificate and key.
    pub own: &'a crate::pki::Pki,
    /// The CAs it is given (`sip_cafile`), PEM.
    pub trust: &'a str,
}

/// A running baresip.
pub struct Baresip {
    child: Child,
    pub dir: tempfile::TempDir,
    pub sip_port: u16,
    ctrl: TcpStream,
    /// Netstrings read from `ctrl_tcp` (events and responses), oldest first.
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Its stdout and stderr (with the SIP trace of `-s`).
    out: Arc<Mutex<String>>,
    token: u32,
}

fn drain_into<R: Read + Send + 'static>(mut r: R, to: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

/// Splits complete netstrings (`len:payload,`) off the front of `buf`.
fn netstrings(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(colon) = buf.iter().position(|&b| b == b':') {
        let Some(len) = std::str::from_utf8(&buf[..colon])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            buf.clear();
            break;
        };
        if buf.len() < colon + 1 + len + 1 {
            break;
        }
        out.push(buf[colon + 1..colon + 1 + len].to_vec());
        buf.drain(..colon + 1 + len + 1);
    }
    out
}

impl Baresip {
    /// Starts baresip as `party` and connects to its control port. Calls to it are answered
    /// at once (`answermode=auto`).
    pub fn start(bin: &Path, party: Party<'_>) -> Baresip {
        let dir = tempfile::tempdir().unwrap();
        // baresip listens for SIP over UDP and TCP on its port and over TLS on the next one:
        // both are taken from the harness, so no other party is handed the second.
        let sip_port = loop {
            let (p, q) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
            if q == p + 1 {
                break p;
            }
        };
        let ctrl_port = free_port("127.0.0.1");
        // RTP and RTCP on an even port of a block of four from the harness's media range.
        let rtp = free_media_port("127.0.0.1");
        let d = dir.path();
        write_prompt_wav(&d.join("tone.wav"), party.tone_hz, 30.0);
        let tls = match &party.tls {
            Some(t) => {
                std::fs::write(d.join("cert.pem"), t.own.cert_and_key()).unwrap();
                std::fs::write(d.join("ca.pem"), t.trust).unwrap();
                format!(
                    "sip_certificate {}\nsip_cafile {}\n",
                    d.join("cert.pem").display(),
                    d.join("ca.pem").display()
                )
            }
            None => String::new(),
        };
        let cfg = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{sip_port}\n\
             net_interface 127.0.0.1\n\
             call_local_timeout 30\n\
             call_max_calls 2\n\
             audio_source aufile,{tone}\n\
             audio_player alsa,null\n\
             audio_alert alsa,null\n\
             ausrc_srate 8000\n\
             auplay_srate 8000\n\
             ausrc_channels 1\n\
             auplay_channels 1\n\
             audio_buffer 20-160\n\
             rtp_ports {rtp}-{rtp_end}\n\
             rtcp_mux no\n\
             jitter_buffer_delay 5-10\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module alsa.so\n\
             module srtp.so\n\
             module sndfile.so\n\
             module_tmp account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n\
             snd_path {dir}\n\
             {tls}",
            tone = d.join("tone.wav").display(),
            rtp_end = rtp + 3,
            dir = d.display(),
        );
        std::fs::write(d.join("config"), cfg).unwrap();
        let enc = if party.mediaenc.is_empty() {
            String::new()
        } else {
            format!(";mediaenc={}", party.mediaenc)
        };
        std::fs::write(
            d.join("accounts"),
            format!(
                "<sip:{}@127.0.0.1:{sip_port}>;regint=0;answermode=auto;audio_codecs=PCMA{enc}\n",
                party.user
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["-f", &d.display().to_string(), "-s", "-v"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run baresip ({e})"));
        let out = Arc::new(Mutex::new(String::new()));
        drain_into(child.stdout.take().unwrap(), out.clone());
        drain_into(child.stderr.take().unwrap(), out.clone());
        // The control port is up once the modules are loaded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                break s;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("baresip exited ({st}):\n{}", out.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "baresip's control port never opened:\n{}",
                out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (mut r, m) = (ctrl.try_clone().unwrap(), messages.clone());
        std::thread::spawn(move || {
            let (mut acc, mut buf) = (Vec::new(), [0u8; 8192]);
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                acc.extend_from_slice(&buf[..n]);
                for ns in netstrings(&mut acc) {
                    if let Ok(v) = serde_json::from_slice(&ns) {
                        m.lock().unwrap().push(v);
                    }
                }
            }
        });
        Baresip {
            child,
            dir,
            sip_port,
            ctrl,
            messages,
            out,
            token: 0,
        }
    }

    /// Sends a command (`dial`, `hangup`, `quit`...) to `ctrl_tcp`; waits for its response.
    pub fn command(&mut self, command: &str, params: &str) -> serde_json::Value {
        self.token += 1;
        let token = format!("t{}", self.token);
        let body =
            serde_json::json!({ "command": command, "params": params, "token": token }).to_string();
        write!(self.ctrl, "{}:{body},", body.len()).unwrap();
        self.wait_for(Duration::from_secs(10), |m| {
            m["response"] == true && m["token"] == token.as_str()
        })
        .unwrap_or_else(|| panic!("no response to {command}:\n{}", self.output()))
    }

    /// The first event of `kind` (`CALL_ESTABLISHED`, `CALL_MENC`, `CALL_CLOSED`...), waiting
    /// up to `timeout` for it.
    pub fn event(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        self.wait_for(timeout, |m| m["event"] == true && m["type"] == kind)
    }

    /// The `n`-th event of `kind` (counting from 1), waiting up to `timeout` for it: a second
    /// call's `CALL_CLOSED`, say.
    pub fn wait_events(
        &self,
        kind: &str,
        n: usize,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m["event"] == true && m["type"] == kind)
                .nth(n - 1)
            {
                return Some(m.clone());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages.lock().unwrap().iter().find(|m| pred(m)) {
                return Some(m.clone());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its output so far: log lines and the SIP trace.
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The port it takes SIP over TLS on (with [`Party::tls`]).
    pub fn tls_port(&self) -> u16 {
        self.sip_port + 1
    }

    /// The SIP messages of its trace (`-s`) over UDP that it received, oldest first.
    pub fn received_sip(&self) -> Vec<String> {
        let to_me = format!("-> 127.0.0.1:{}", self.sip_port);
        self.trace()
            .into_iter()
            .filter(|(transport, line, _)| transport == "UDP" && line.ends_with(&to_me))
            .map(|(_, _, m)| m)
            .collect()
    }

    /// The SIP messages it sent over UDP, oldest first.
    pub fn sent_sip(&self) -> Vec<String> {
        let from_me = format!("127.0.0.1:{} -> ", self.sip_port);
        self.trace()
            .into_iter()
            .filter(|(transport, line, _)| transport == "UDP" && line.starts_with(&from_me))
            .map(|(_, _, m)| m)
            .collect()
    }

    /// The SIP messages of its trace over TLS, either way, oldest first, each with its
    /// `source -> destination` line.
    pub fn tls_sip(&self) -> Vec<(String, String)> {
        self.trace()
            .into_iter()
            .filter(|(transport, _, _)| transport == "TLS")
            .map(|(_, line, m)| (line, m))
            .collect()
    }

    /// Every message of the trace: (transport, `source -> destination`, message).
    fn trace(&self) -> Vec<(String, String, String)> {
        self.output()
            .split("#\n")
            .skip(1)
            .filter_map(|m| {
                let (first, rest) = m.split_once('\n')?;
                let (transport, line) = first.trim_end().split_once(' ')?;
                if !matches!(transport, "UDP" | "TCP" | "TLS") {
                    return None;
                }
                // The trace ends with a colour reset.
                let msg = rest.split("\x1b[").next().unwrap_or(rest).to_string();
                Some((transport.to_string(), line.to_string(), msg))
            })
            .collect()
    }

    /// What it received and decoded (decrypted, on SRTP), as the `sndfile` filter wrote it.
    pub fn received_audio(&self) -> Vec<i16> {
        let dec = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no decoded-audio dump:\n{}", self.output()));
        let mut r = hound::WavReader::open(&dec).unwrap();
        r.samples::<i16>().map_while(Result::ok).collect()
    }

    /// Hangs up (if in a call) and quits; waits for it to exit.
    pub fn quit(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let body = r#"{"command":"quit","token":"quit"}"#;
        let _ = write!(self.ctrl, "{}:{body},", body.len());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of the first `m=audio` line of an SDP body in a SIP message.
pub fn audio_port(msg: &str) -> Option<u16> {
    msg.lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// The value of the first `a=<name>:` line of a SIP message's SDP.
pub fn sdp_attr<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    msg.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
}
