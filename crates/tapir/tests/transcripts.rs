//! Transcripts through the real binary: SIPp calls are recorded and stored, the
//! transcription stage queues a job, transcribes each channel, and the recordings API shows
//! the result.
//!
//! * The offline engine on speech: espeak-ng says known sentences on each channel at known
//!   times; the transcript holds the key words on the right channel within a second of when
//!   they were said, within a word error bound; full-text search finds the call by a word
//!   only the agent said and not by one nobody said.
//! * The HTTP engine against a fake OpenAI-compatible server in the test (axum on a free
//!   port) that answers by the tone each channel carries: its answer lands as given, scored
//!   for sentiment; with access control, an agent sees the transcript of their own call only
//!   (another agent's is 404), searches only their own, and viewing and downloading are
//!   audited; an engine that answers 500, garbage, untimed text or hangs is retried and then
//!   marked failed with the reason while another recording's job completes; kill -9 mid-job
//!   and a restart resume the job, which completes (its audio fetched from S3).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tapir_tests::{expect_success, free_port, Sipp, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

// ---------------------------------------------------------------------------------------
// HTTP client

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut a = Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if a.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        a.body = dechunk(&a.body);
    }
    a
}

fn get(t: &Tapir, path: &str, auth: &[(&str, &str)]) -> Answer {
    request(t.http, "GET", path, auth, "")
}

fn wait_until<T>(what: &str, t: &Tapir, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what} never happened\n{}", t.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Contact ids of stored recordings, newest first.
fn stored(t: &Tapir, auth: &[(&str, &str)]) -> Vec<String> {
    let a = get(t, "/api/v1/recordings?state=stored", auth);
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["contact_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for the `n`th stored recording (newest first) and returns its contact id.
fn wait_stored(t: &Tapir, n: usize) -> String {
    wait_until("the recording stored", t, Duration::from_secs(60), || {
        let v = stored(t, &[]);
        (v.len() >= n).then(|| v[0].clone())
    })
}

/// The transcript of `id` once its job is `state` (404 until its job exists).
fn wait_transcript(t: &Tapir, id: &str, state: &str, timeout: Duration) -> Value {
    wait_until(&format!("transcript of {id} {state}"), t, timeout, || {
        let a = get(t, &format!("/api/v1/recordings/{id}/transcript"), &[]);
        if a.status != 200 {
            return None;
        }
        let j = a.json();
        (j["state"] == state).then_some(j)
    })
}

/// The text of each phrase of a transcript, in order.
fn phrase_texts(transcript: &Value) -> Vec<&str> {
    transcript["phrases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

fn search(t: &Tapir, text: &str, auth: &[(&str, &str)]) -> Vec<Value> {
    let a = get(t, &format!("/api/v1/recordings?text={text}"), auth);
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["items"].as_array().unwrap().clone()
}

fn route(callee_port: u16) -> String {
    format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\n"
    )
}

/// One recorded call: the caller (customer, channel 1) plays a tone at `caller_hz`, the
/// callee (agent, channel 2) one at `callee_hz`, for `ms`.
fn tone_call(t: &Tapir, callee_port: u16, caller_hz: f64, callee_hz: f64, ms: u32, extra: &[&str]) {
    let d = ms.to_string();
    let mut args = vec!["-d", d.as_str()];
    args.extend_from_slice(extra);
    let scenario = if extra.is_empty() {
        "uac_tone.xml"
    } else {
        "uac_tone_agent.xml"
    };
    tapir_tests::call(
        t,
        (scenario, Some(caller_hz), &args),
        ("uas_tone.xml", Some(callee_hz), &[]),
        callee_port,
    );
}

// ---------------------------------------------------------------------------------------
// A fake OpenAI-compatible transcription server

/// What the fake answers to one request.
#[derive(Clone, Debug)]
enum Reply {
    /// `verbose_json` with these segments (start s, end s, text).
    Segments(Vec<(f64, f64, &'static str)>),
    /// An HTTP status and body.
    Status(u16, &'static str),
    /// 200 with this body as it is.
    Raw(&'static str),
    /// Never answers (until the connection goes away).
    Hang,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// The tone the channel carried (the loudest of the candidates).
    hz: f64,
    fields: Vec<(String, String)>,
    audio_ms: u64,
}

type Choose = dyn Fn(f64, usize) -> Reply + Send + Sync;

#[derive(Clone)]
struct FakeState {
    /// By tone and how many requests with that tone came before.
    choose: Arc<Mutex<Box<Choose>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    hanging: Arc<Mutex<usize>>,
}

struct Fake {
    addr: SocketAddr,
    state: FakeState,
}

const CANDIDATES: [f64; 9] = [
    300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 1000.0, 1200.0, 1500.0,
];

fn loudest(samples: &[i16]) -> f64 {
    CANDIDATES
        .iter()
        .copied()
        .max_by(|a, b| {
            tapir_tests::tone_energy(samples, *a).total_cmp(&tapir_tests::tone_energy(samples, *b))
        })
        .unwrap()
}

fn verbose_json(segments: &[(f64, f64, &str)]) -> String {
    let segs: Vec<Value> = segments
        .iter()
        .enumerate()
        .map(|(i, (s, e, text))| serde_json::json!({"id": i, "start": s, "end": e, "text": text}))
        .collect();
    let text: Vec<&str> = segments.iter().map(|s| s.2).collect();
    serde_json::json!({"task": "transcribe", "language": "english", "text": text.join(" "),
        "segments": segs})
    .to_string()
}

/// Counts a hanging request while it is open.
struct Open(Arc<Mutex<usize>>);

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.lock().unwrap() -= 1;
    }
}

async fn transcriptions(
    State(fake): State<FakeState>,
    mut form: Multipart,
) -> axum::response::Response {
    let mut fields = Vec::new();
    let mut wav = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.unwrap_or_default();
        if name == "file" {
            wav = bytes.to_vec();
        } else {
            fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let samples: Vec<i16> = hound::WavReader::new(std::io::Cursor::new(&wav))
        .map(|mut r| r.samples::<i16>().map(|s| s.unwrap_or(0)).collect())
        .unwrap_or_default();
    let hz = loudest(&samples);
    let reply = {
        let mut seen = fake.seen.lock().unwrap();
        let before = seen.iter().filter(|s| s.hz == hz).count();
        seen.push(Seen {
            hz,
            fields,
            audio_ms: samples.len() as u64 / 8,
        });
        (fake.choose.lock().unwrap())(hz, before)
    };
    match reply {
        Reply::Segments(s) => {
            ([("content-type", "application/json")], verbose_json(&s)).into_response()
        }
        Reply::Status(code, body) => {
            (axum::http::StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Reply::Raw(body) => ([("content-type", "application/json")], body).into_response(),
        Reply::Hang => {
            *fake.hanging.lock().unwrap() += 1;
            let _open = Open(fake.hanging.clone());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never".into_response()
        }
    }
}

impl Fake {
    fn start(choose: impl Fn(f64, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = FakeState {
            choose: Arc::new(Mutex::new(Box::new(choose))),
            seen: Arc::new(Mutex::new(Vec::new())),
            hanging: Arc::new(Mutex::new(0)),
        };
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .with_state(state.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Fake { addr, state }
    }

    fn set(&self, choose: impl Fn(f64, usize) -> Reply + Send + Sync + 'static) {
        *self.state.choose.lock().unwrap() = Box::new(choose);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn hanging(&self) -> usize {
        *self.state.hanging.lock().unwrap()
    }

    /// The `[transcripts]` section that points tapir at this server.
    fn config(&self, extra: &str) -> String {
        format!(
            "[transcripts]\nengine = \"http\"\nurl = \"http://{}\"\nmodel = \"whisper-test\"\n{extra}\n",
            self.addr
        )
    }
}

// ---------------------------------------------------------------------------------------
// The offline engine on a spoken call

const CUSTOMER_VOICE: &str = "en-us+klatt4";
const AGENT_VOICE: &str = "en-us+klatt3";

/// (agent?, start ms of the speech, sentence, key words).
const SCRIPT: &[(bool, u64, &str, &[&str])] = &[
    (
        true,
        1000,
        "Thank you for calling customer service",
        &["customer", "service"],
    ),
    (
        false,
        4500,
        "I would like to check the status of my order",
        &["order"],
    ),
    (
        true,
        8500,
        "Of course can you give me the order number please",
        &["number"],
    ),
    (
        false,
        13_000,
        "The amount seems much higher than usual this month",
        &["higher", "usual"],
    ),
    (
        true,
        17_500,
        "I will send you a copy by email right away",
        &["email"],
    ),
    (
        false,
        19_000,
        "That would be great thank you very much",
        &["great"],
    ),
];

/// The word error bound of the offline engine on this call: measured 26 % (14 of 53 words);
/// see docs/transcripts.md for why 45 %.
const WER_BOUND: f64 = 0.45;

/// Word-level edit distance.
fn edits(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut row = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[hypothesis.len()]
}

/// Both channels of the conversation (8 kHz), each sentence's speech starting at its time,
/// over a −65 dBFS noise floor; and each sentence's span (ms).
fn conversation(dir: &Path) -> ([Vec<i16>; 2], Vec<(u64, u64)>) {
    let mut ch: [Vec<i16>; 2] = Default::default();
    let mut spans = Vec::new();
    for (i, &(agent, start_ms, text, _)) in SCRIPT.iter().enumerate() {
        let voice = if agent { AGENT_VOICE } else { CUSTOMER_VOICE };
        let (clip, (first, last)) = tapir_tests::espeak(dir, &format!("s{i}"), voice, text);
        let c = &mut ch[usize::from(agent)];
        let offset = (start_ms * 8) as usize - first;
        if c.len() < offset + clip.len() {
            c.resize(offset + clip.len(), 0);
        }
        for (o, s) in c[offset..].iter_mut().zip(&clip) {
            *o = o.saturating_add(*s);
        }
        spans.push((start_ms, start_ms + ((last - first) / 8) as u64));
    }
    let len = ch.iter().map(Vec::len).max().unwrap() + 8000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for c in &mut ch {
        c.resize(len, 0);
        for s in c.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *s = s.saturating_add(((rng >> 58) as i16) - 32);
        }
    }
    (ch, spans)
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[test]
fn the_offline_engine_transcribes_a_spoken_call_by_channel() {
    if !tapir_tests::speech_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ([customer, agent], spans) = conversation(dir.path());
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: "[transcripts]\nengine = \"pocketsphinx\"\n".into(),
            ..Default::default()
        },
    );
    assert!(t.log().contains("transcription on"), "{}", t.log());
    let call_ms = (customer.len() / 8) as u32;
    let d = call_ms.to_string();
    let mut b = Sipp::party_with_audio("callee", "uas_tone.xml", callee_port, None, &agent, &[]);
    let mut a = Sipp::party_with_audio(
        "caller",
        "uac_tone.xml",
        free_port("127.0.0.1"),
        Some(&t),
        &customer,
        &["-d", &d],
    );
    expect_success(&t, &mut [&mut a, &mut b], Duration::from_secs(90));
    let id = wait_stored(&t, 1);
    // Idle priority: on a machine busy with builds it waits for spare CPU.
    let j = wait_transcript(&t, &id, "done", Duration::from_secs(900));
    assert_eq!(j["engine"], "pocketsphinx");
    assert_eq!(j["language"], "en");
    let phrases = j["phrases"].as_array().unwrap();
    for p in phrases {
        eprintln!(
            "{} {:>6}..{:<6} {}",
            p["speaker"], p["start_ms"], p["end_ms"], p["text"]
        );
    }
    let on = |agent: bool| {
        let who = if agent { "agent" } else { "customer" };
        phrases
            .iter()
            .filter(move |p| p["speaker"] == who)
            .map(move |p| {
                assert_eq!(p["channel"], if agent { 2 } else { 1 });
                (
                    p["start_ms"].as_u64().unwrap(),
                    p["end_ms"].as_u64().unwrap(),
                    p["text"].as_str().unwrap().to_string(),
                )
            })
    };
    let (mut errors, mut total) = (0, 0);
    for (&(agent, _, text, keys), &(s, e)) in SCRIPT.iter().zip(&spans) {
        // The phrase that holds the sentence: on its speaker's channel, starting within a
        // second of when it was said.
        let near: Vec<(u64, u64, String)> = on(agent)
            .filter(|(ps, pe, _)| *ps + 1000 >= s && *ps <= s + 1000 && *pe + 1000 >= e)
            .collect();
        let heard: Vec<String> = near.iter().flat_map(|(_, _, t)| words(t)).collect();
        for k in keys {
            assert!(
                heard.iter().any(|w| w == k),
                "{k:?} (agent: {agent}, at {s}..{e} ms) not heard there: {near:?}"
            );
            assert!(
                !on(!agent)
                    .filter(|(ps, pe, _)| *ps <= e && *pe >= s)
                    .any(|(_, _, t)| words(&t).iter().any(|w| w == k)),
                "{k:?} heard on the other channel"
            );
        }
        let reference = words(text);
        let n = edits(&reference, &heard);
        eprintln!("{n} errors in {text:?} -> {heard:?}");
        errors += n;
        total += reference.len();
    }
    let wer = errors as f64 / total as f64;
    eprintln!(
        "word error rate through the call: {errors}/{total} = {:.1} %",
        wer * 100.0
    );
    assert!(wer <= WER_BOUND, "WER {wer:.3} above {WER_BOUND}");
    for who in ["customer", "agent"] {
        let wpm = j["words_per_minute"][who].as_f64().unwrap();
        assert!((80.0..300.0).contains(&wpm), "{who}: {wpm}");
    }
    // The recording's metrics carry the talking speed now.
    let e = get(&t, &format!("/api/v1/recordings/{id}"), &[]).json();
    assert_eq!(
        e["metrics"]["agent_words_per_minute"],
        j["words_per_minute"]["agent"]
    );

    // Full-text search: a word only the agent said finds the call, on the agent's channel;
    // one nobody said finds nothing.
    let hits = search(&t, "email", &[]);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["contact_id"], id.as_str());
    let snip = &hits[0]["snippets"][0];
    assert_eq!(snip["speaker"], "agent");
    assert!(
        snip["snippet_html"]
            .as_str()
            .unwrap()
            .contains("<mark>email</mark>"),
        "{snip}"
    );
    assert!(search(&t, "lawyer", &[]).is_empty());

    // What it cost, in the metrics.
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"done\"}"), 1.0);
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(t.metric("tapir_transcript_jobs"), 0.0);
    let audio = t.metric("tapir_transcript_audio_seconds_total");
    assert!((audio - call_ms as f64 / 1000.0).abs() < 2.0, "{audio}");
    assert!(t.metric("tapir_transcript_cpu_seconds_total") > 0.5);
    assert!(t.metric("tapir_transcript_processing_seconds_total") > 0.5);
}

// ---------------------------------------------------------------------------------------
// The HTTP engine

/// The fake's answers by tone: the customer of anna's call (400 Hz) is angry, her agent
/// (1000 Hz) kind; bert's call (600 Hz, 1500 Hz) is neutral.
fn conversations(hz: f64, _: usize) -> Reply {
    match hz as u32 {
        400 => Reply::Segments(vec![
            (
                0.2,
                1.2,
                " This is terrible <script>alert(1)</script> & I am very angry.",
            ),
            (1.4, 2.2, " My invoice is wrong."),
        ]),
        1000 => Reply::Segments(vec![
            (0.3, 1.3, " Thank you so much, you have been very helpful."),
            (1.5, 2.4, " I will refund you today."),
        ]),
        600 => Reply::Segments(vec![(0.2, 1.0, " I am calling about my order.")]),
        1500 => Reply::Segments(vec![(0.2, 1.0, " Let me check that for you.")]),
        _ => Reply::Status(400, "unexpected audio"),
    }
}

struct Site<'a> {
    t: &'a Tapir,
}

impl Site<'_> {
    fn cli(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(self.t.config_path())
            .args(args)
            .current_dir(self.t.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tapir {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Logs in; the session cookie as a `Cookie` header value.
    fn login(&self, user: &str, password: &str) -> String {
        let r = request(
            self.t.http,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &format!("username={user}&password={password}&next=/recordings"),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        r.header("set-cookie")
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
}

#[test]
fn http_answers_land_as_given_scored_and_only_for_those_who_may_see_the_call() {
    let fake = Fake::start(conversations);
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: format!(
                "[access]\nenabled = true\n\n{}",
                fake.config("concurrency = 2\nmax_attempts = 2\nretry_initial_ms = 200")
            ),
            ..Default::default()
        },
    );
    let site = Site { t: &t };
    let pw = "long enough pw";
    for (user, role) in [("anna", "agent"), ("bert", "agent"), ("root", "admin")] {
        let mut args = vec!["user", "add", user, "--role", role, "--password-stdin"];
        if role == "agent" {
            args.extend(["--agent-id", user]);
        }
        site.cli(&args, &format!("{pw}\n"));
    }
    let (anna, bert, root) = (
        site.login("anna", pw),
        site.login("bert", pw),
        site.login("root", pw),
    );
    let (anna, bert, root) = (
        [("Cookie", anna.as_str())],
        [("Cookie", bert.as_str())],
        [("Cookie", root.as_str())],
    );
    tone_call(
        &t,
        callee_port,
        400.0,
        1000.0,
        3000,
        &[
            "-key", "agent", "anna", "-key", "team", "t1", "-key", "queue", "q1", "-key", "number",
            "+4930111",
        ],
    );
    tone_call(
        &t,
        callee_port,
        600.0,
        1500.0,
        3000,
        &[
            "-key", "agent", "bert", "-key", "team", "t1", "-key", "queue", "q1", "-key", "number",
            "+4930111",
        ],
    );
    let ids = wait_until(
        "both recordings stored",
        &t,
        Duration::from_secs(60),
        || {
            let v = stored(&t, &root);
            (v.len() == 2).then_some(v)
        },
    );
    // Newest first: bert's call was the second.
    let (bert_call, anna_call) = (ids[0].clone(), ids[1].clone());
    let transcript = |id: &str, auth: &[(&str, &str)]| {
        get(&t, &format!("/api/v1/recordings/{id}/transcript"), auth)
    };
    let j = wait_until("anna's transcript", &t, Duration::from_secs(60), || {
        let a = transcript(&anna_call, &anna);
        (a.status == 200 && a.json()["state"] == "done").then(|| a.json())
    });
    wait_until("bert's transcript", &t, Duration::from_secs(60), || {
        let a = transcript(&bert_call, &bert);
        (a.status == 200 && a.json()["state"] == "done").then_some(())
    });

    // The answer as given: text, speaker by channel, times moved by where the chunk sent
    // started (the same for all phrases of a channel, and under a second).
    assert_eq!(j["engine"], "http");
    assert_eq!(j["language"], "en");
    assert_eq!(j["error"], Value::Null);
    let p = j["phrases"].as_array().unwrap();
    assert!(
        p.windows(2)
            .all(|w| w[0]["start_ms"].as_i64() <= w[1]["start_ms"].as_i64()),
        "ordered by start: {j}"
    );
    let given = [
        (
            "customer",
            1,
            vec![
                (
                    200,
                    1200,
                    "This is terrible <script>alert(1)</script> & I am very angry.",
                ),
                (1400, 2200, "My invoice is wrong."),
            ],
        ),
        (
            "agent",
            2,
            vec![
                (300, 1300, "Thank you so much, you have been very helpful."),
                (1500, 2400, "I will refund you today."),
            ],
        ),
    ];
    for (speaker, channel, segments) in given {
        let mine: Vec<&Value> = p.iter().filter(|p| p["speaker"] == speaker).collect();
        assert_eq!(mine.len(), segments.len(), "{j}");
        let off = mine[0]["start_ms"].as_i64().unwrap() - segments[0].0;
        assert!((0..1000).contains(&off), "{j}");
        for (p, (s, e, text)) in mine.iter().zip(segments) {
            assert_eq!(p["channel"], channel);
            assert_eq!(p["text"], text);
            assert_eq!(
                p["start_ms"].as_i64().unwrap(),
                s + off,
                "one offset per channel: {p}"
            );
            assert_eq!(p["end_ms"].as_i64().unwrap(), e + off, "{p}");
        }
    }
    let label_of = |text: &str| {
        p.iter().find(|p| p["text"] == text).unwrap()["label"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        label_of("This is terrible <script>alert(1)</script> & I am very angry."),
        "negative"
    );
    assert_eq!(label_of("My invoice is wrong."), "negative");
    assert_eq!(
        label_of("Thank you so much, you have been very helpful."),
        "positive"
    );
    assert_eq!(label_of("I will refund you today."), "neutral");
    // The call's sentiment is the mean of its phrases'.
    let scores: Vec<f64> = p.iter().map(|p| p["sentiment"].as_f64().unwrap()).collect();
    let mean = scores.iter().sum::<f64>() / 4.0;
    assert!(
        (j["sentiment"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{j}"
    );
    let want = if mean >= 0.05 {
        "positive"
    } else if mean <= -0.05 {
        "negative"
    } else {
        "neutral"
    };
    assert_eq!(j["label"], want);
    assert!(j["words_per_minute"]["customer"].as_f64().unwrap() > 0.0);
    // The fake was asked as the API says: one request per channel.
    let seen = fake.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for s in &seen {
        let field = |k: &str| {
            s.fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("model"), Some("whisper-test"));
        assert_eq!(field("language"), Some("en"));
        assert_eq!(field("response_format"), Some("verbose_json"));
        assert!((2400..=4000).contains(&s.audio_ms), "{s:?}");
    }

    // Access: each agent sees the transcript of their own call; another's is 404, like an
    // unknown id; the admin sees both.
    assert_eq!(transcript(&bert_call, &anna).status, 404);
    assert_eq!(transcript(&anna_call, &bert).status, 404);
    assert_eq!(
        get(
            &t,
            &format!("/api/v1/recordings/{anna_call}/transcript.html"),
            &bert
        )
        .status,
        404
    );
    assert_eq!(transcript("nobody-0", &anna).status, 404);
    assert_eq!(transcript(&anna_call, &[]).status, 401);
    assert_eq!(transcript(&anna_call, &root).status, 200);
    assert_eq!(
        transcript(&bert_call, &root).json()["phrases"][0]["text"],
        "I am calling about my order."
    );
    // Search by text: anna's call with its sentiment and the phrase that matched, for anna
    // and the admin; not for bert.
    let hits = search(&t, "refund", &anna);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["contact_id"], anna_call.as_str());
    assert_eq!(hits[0]["sentiment"], j["sentiment"]);
    assert_eq!(hits[0]["sentiment_label"], j["label"]);
    assert_eq!(
        hits[0]["snippets"][0]["snippet_html"],
        "I will <mark>refund</mark> you today."
    );
    assert_eq!(hits[0]["snippets"][0]["channel"], 2);
    let hits = search(&t, "terrible", &root);
    let s = hits[0]["snippets"][0]["snippet_html"].as_str().unwrap();
    assert!(
        s.contains("<mark>terrible</mark>")
            && s.contains("&lt;script&gt;")
            && !s.contains("<script>"),
        "{s}"
    );
    assert!(search(&t, "refund", &bert).is_empty());
    assert!(search(&t, "lawyer", &root).is_empty());
    assert_eq!(search(&t, "order", &bert).len(), 1);

    // The document: an attachment, everything escaped.
    let d = get(
        &t,
        &format!("/api/v1/recordings/{anna_call}/transcript.html"),
        &anna,
    );
    assert_eq!(d.status, 200);
    assert_eq!(d.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        d.header("content-disposition"),
        Some(format!("attachment; filename=\"{anna_call}.transcript.html\"").as_str())
    );
    let html = d.text();
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; I am very angry."));
    assert!(html.contains("class=\"negative\"") && html.contains("class=\"positive\""));

    // Viewing and downloading are audited.
    let jsonl = site.cli(&["audit", "export"], "");
    let entries: Vec<access::audit::AuditEntry> = jsonl
        .lines()
        .map(|l| access::audit::parse_json_line(l).unwrap())
        .collect();
    let did = |actor: &str, action: &str, what: &str| {
        entries.iter().any(|e| {
            e.actor == actor
                && e.action == action
                && e.target.as_deref() == Some(anna_call.as_str())
                && e.detail["transcript"] == what
        })
    };
    assert!(did("anna", "view", "json"));
    assert!(did("anna", "download", "html"));
    assert!(did("root", "view", "json"));
    assert!(
        !did("bert", "download", "html"),
        "a refused request is not an access"
    );
}

#[test]
fn failing_engines_are_retried_then_failed_while_other_jobs_complete() {
    // By the customer's tone: 400 Hz gets a 500, 500 Hz garbage, 600 Hz no answer at all,
    // 700 Hz text without timing; 800 Hz (and every agent channel) a proper answer.
    let fake = Fake::start(|hz, _| match hz as u32 {
        400 => Reply::Status(500, "model crashed"),
        500 => Reply::Raw("<html><body>502 Bad Gateway</body></html>"),
        600 => Reply::Hang,
        700 => Reply::Raw(r#"{"text": "hello there"}"#),
        _ => Reply::Segments(vec![(0.2, 1.0, " Fine, thanks.")]),
    });
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: fake.config(
                "concurrency = 2\nmax_attempts = 2\ntimeout_s = 10\nretry_initial_ms = 200\nretry_max_ms = 200",
            ),
            ..Default::default()
        },
    );
    // The hanging one first; while its request is held, another call is recorded, stored
    // and transcribed.
    tone_call(&t, callee_port, 600.0, 1000.0, 2000, &[]);
    let hung = wait_stored(&t, 1);
    wait_until(
        "the engine holding a request",
        &t,
        Duration::from_secs(30),
        || (fake.hanging() > 0).then_some(()),
    );
    tone_call(&t, callee_port, 800.0, 1000.0, 2000, &[]);
    let fine = wait_stored(&t, 2);
    let done = wait_transcript(&t, &fine, "done", Duration::from_secs(30));
    assert_eq!(done["phrases"][0]["text"], "Fine, thanks.");
    let meanwhile = get(&t, &format!("/api/v1/recordings/{hung}/transcript"), &[]).json();
    assert_ne!(meanwhile["state"], "failed", "{meanwhile}");
    assert!(fake.hanging() > 0, "the hung request is still open");
    // Its recording is stored and plays meanwhile.
    let a = get(&t, &format!("/api/v1/recordings/{hung}/audio"), &[]);
    assert_eq!(a.status, 200);
    assert!(a.body.len() > 10_000);

    let mut ids = HashMap::new();
    for hz in [400.0, 500.0, 700.0] {
        tone_call(&t, callee_port, hz, 1000.0, 2000, &[]);
        ids.insert(hz as u32, wait_stored(&t, 3 + ids.len()));
    }
    ids.insert(600, hung);
    for (hz, why) in [
        (400, "HTTP 500"),
        (500, "garbage"),
        (600, "did not answer"),
        (700, "without timing"),
    ] {
        let j = wait_transcript(&t, &ids[&hz], "failed", Duration::from_secs(90));
        let error = j["error"].as_str().unwrap();
        assert!(error.contains(why), "{hz} Hz: {error}");
        assert_eq!(j["phrases"], serde_json::json!([]));
    }
    // Two attempts each: the customer's channel of every failing call was sent twice.
    let seen = fake.seen();
    for hz in [400.0, 500.0, 600.0, 700.0] {
        assert_eq!(
            seen.iter().filter(|s| s.hz == hz).count(),
            2,
            "{hz} Hz: {seen:?}"
        );
    }
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"failed\"}"), 4.0);
    assert_eq!(
        t.metric("tapir_transcripts_total{outcome=\"retried\"}"),
        4.0
    );
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"done\"}"), 1.0);
    assert_eq!(t.metric("tapir_transcript_jobs"), 0.0);
    // The calls themselves were never disturbed.
    assert_eq!(t.metric("tapir_calls_total{outcome=\"completed\"}"), 5.0);
    assert!(t.log().contains("transcription failed; given up"));
}

#[test]
fn a_job_interrupted_by_kill_9_resumes_after_the_restart() {
    // The first request is held (the engine is busy when the node dies), later ones answered.
    // Recordings are kept in S3: each attempt fetches the audio from the bucket.
    let fake = Fake::start(|_, _| Reply::Hang);
    let s3 = tapir_tests::s3::S3Process::start(BIN);
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: format!(
                "[storage]\n{}\n\n{}",
                s3.storage_toml(),
                fake.config("max_attempts = 3\ntimeout_s = 60")
            ),
            env: tapir_tests::s3::env(),
            ..Default::default()
        },
    );
    tone_call(&t, callee_port, 400.0, 1000.0, 2000, &[]);
    let id = wait_stored(&t, 1);
    assert!(
        tapir_tests::files_under(&s3.root.path().join(tapir_tests::s3::BUCKET), "wav").len() == 1,
        "the recording is in the bucket"
    );
    assert!(
        tapir_tests::files_under(&t.dir.path().join("recordings"), "wav").is_empty(),
        "and not on the local disk"
    );
    wait_transcript(&t, &id, "running", Duration::from_secs(30));
    wait_until("the request held", &t, Duration::from_secs(30), || {
        (fake.hanging() > 0).then_some(())
    });
    fake.set(|hz, _| {
        if hz == 400.0 {
            Reply::Segments(vec![(0.1, 0.9, " Resumed after a restart.")])
        } else {
            Reply::Segments(vec![(0.1, 0.9, " Agent here.")])
        }
    });
    let mut t = t;
    t.kill9();
    let t = t.restart();
    assert!(t.log().contains("resumed=1"), "{}", t.log());
    let j = wait_transcript(&t, &id, "done", Duration::from_secs(60));
    let texts = phrase_texts(&j);
    assert_eq!(texts, ["Resumed after a restart.", "Agent here."]);
    // The interrupted attempt counted as one: the restart is a retry.
    assert_eq!(
        t.metric("tapir_transcripts_total{outcome=\"retried\"}"),
        1.0
    );
    assert_eq!(t.metric("tapir_transcripts_total{outcome=\"done\"}"), 1.0);
    assert_eq!(
        fake.seen().iter().filter(|s| s.hz == 400.0).count(),
        2,
        "one request before the kill, one after"
    );
}

/// A recording stored while the node had no transcription job for it (transcription off
/// here; a crash between marking it stored and writing its job row leaves the same state)
/// gets its job when the node starts with transcription on: the start-up catch-up.
#[test]
fn a_stored_recording_without_a_job_gets_one_at_the_next_start() {
    let fake = Fake::start(|hz, _| {
        if hz == 400.0 {
            Reply::Segments(vec![(0.1, 0.9, " Caught up at start.")])
        } else {
            Reply::Segments(vec![(0.1, 0.9, " Agent too.")])
        }
    });
    let callee_port = free_port("127.0.0.1");
    let t = Tapir::start(BIN, &route(callee_port), TapirOptions::default());
    tone_call(&t, callee_port, 400.0, 1000.0, 2000, &[]);
    let id = wait_stored(&t, 1);
    let a = get(&t, &format!("/api/v1/recordings/{id}/transcript"), &[]);
    assert_eq!(
        a.status,
        404,
        "no job while transcription is off: {}",
        a.text()
    );
    // Transcription on, same catalog and recordings.
    let cfg = std::fs::read_to_string(t.config_path()).unwrap();
    std::fs::write(t.config_path(), format!("{cfg}\n{}", fake.config(""))).unwrap();
    let t = t.restart();
    let j = wait_transcript(&t, &id, "done", Duration::from_secs(60));
    let texts = phrase_texts(&j);
    assert_eq!(texts, ["Caught up at start.", "Agent too."]);
    t.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("queued stored recordings of the last day that had no job")
            && l.contains("queued=1")
    });
    // The next start finds nothing to catch up on: the job exists.
    let t = t.restart();
    wait_until("the stage started", &t, Duration::from_secs(30), || {
        t.log().contains("transcription on").then_some(())
    });
    assert_eq!(fake.seen().len(), 2, "one request per channel, once");
    assert!(!t.log().contains("that had no job"), "{}", t.log());
}

/// Two nodes share one catalog and one storage. Node B dies for good with a job running
/// (its engine request held); node A, alive, takes the job up once B has not been heard
/// from for `adopt_after_s`, and completes it. The job row then names A.
#[test]
fn the_jobs_of_a_node_gone_for_good_are_taken_up_by_another() {
    let fake = Fake::start(|_, _| Reply::Hang);
    let callee_port = free_port("127.0.0.1");
    let mut b = Tapir::start(
        BIN,
        &route(callee_port),
        TapirOptions {
            extra: format!(
                "[node]\nid = \"node-b\"\n\n{}",
                fake.config("max_attempts = 3\ntimeout_s = 60\nadopt_after_s = 2")
            ),
            ..Default::default()
        },
    );
    tone_call(&b, callee_port, 400.0, 1000.0, 2000, &[]);
    let id = wait_stored(&b, 1);
    wait_transcript(&b, &id, "running", Duration::from_secs(30));
    wait_until("the request held", &b, Duration::from_secs(30), || {
        (fake.hanging() > 0).then_some(())
    });
    b.kill9();
    fake.set(|hz, _| {
        if hz == 400.0 {
            Reply::Segments(vec![(0.1, 0.9, " Taken up by another node.")])
        } else {
            Reply::Segments(vec![(0.1, 0.9, " Agent.")])
        }
    });
    let shared = b.dir.path();
    let a = Tapir::start(
        BIN,
        &route(free_port("127.0.0.1")),
        TapirOptions {
            extra: format!(
                "[node]\nid = \"node-a\"\n\n[catalog]\nurl = \"sqlite://{}\"\n\n\
                 [recording]\nrecordings_dir = \"{}\"\n\n{}",
                shared.join("tapir.db").display(),
                shared.join("recordings").display(),
                fake.config("max_attempts = 3\ntimeout_s = 60\nadopt_after_s = 2")
            ),
            ..Default::default()
        },
    );
    let j = wait_transcript(&a, &id, "done", Duration::from_secs(60));
    let texts = phrase_texts(&j);
    assert_eq!(texts, ["Taken up by another node.", "Agent."]);
    let line = a.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("took up the jobs of a node gone")
    });
    assert!(line.contains("taken=1"), "{line}");
    // The interrupted attempt counted: B's attempt and A's.
    assert_eq!(
        a.metric("tapir_transcripts_total{outcome=\"retried\"}"),
        1.0
    );
    let db = format!("sqlite://{}", shared.join("tapir.db").display());
    let node: String = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = store::Catalog::open(&db).await.unwrap();
        c.transcript_job(&id).await.unwrap().unwrap().node
    });
    assert_eq!(node, "node-a");
}
