//! The HTTP engine against a small fake OpenAI-compatible server (axum on a free loopback
//! port): its answer is taken as given, garbage and hangs are errors, and through the job
//! driver a hanging engine is retried, then marked failed, while other jobs go on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

use transcript::engine::BoxFuture;
use transcript::http::{HttpConfig, HttpEngine};
use transcript::{
    transcribe_recording, AttemptReport, AudioFile, Counts, Engine, Job, JobHost, JobState, Jobs,
    JobsConfig, Observer, Outcome, Speaker, Transcript, TranscriptError, Vader, Worker,
};

/// What the fake server does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    Garbage,
    NoTiming,
    Hang,
    Fail,
}

/// One request as the server saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    auth: Option<String>,
    fields: Vec<(String, String)>,
    wav: Vec<u8>,
}

#[derive(Clone)]
struct Fake {
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const ANSWER: &str = r#"{"task":"transcribe","language":"english","duration":1.6,
  "text":"I am very happy with your service.",
  "segments":[{"id":0,"start":0.30,"end":1.30,"text":" I am very happy with your service."}],
  "words":[{"word":"I","start":0.30,"end":0.40},{"word":"am","start":0.40,"end":0.50},
           {"word":"very","start":0.50,"end":0.70},{"word":"happy","start":0.70,"end":0.90},
           {"word":"with","start":0.90,"end":1.00},{"word":"your","start":1.00,"end":1.10},
           {"word":"service.","start":1.10,"end":1.30}]}"#;

async fn transcriptions(
    State(fake): State<Fake>,
    headers: HeaderMap,
    mut form: Multipart,
) -> axum::response::Response {
    let mut seen = Seen {
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Default::default()
    };
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.unwrap_or_default();
        if name == "file" {
            seen.wav = bytes.to_vec();
        } else {
            seen.fields
                .push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    fake.seen.lock().unwrap().push(seen);
    match fake.mode {
        Mode::Answer => ([("content-type", "application/json")], ANSWER).into_response(),
        Mode::Garbage => "<html><body>502 Bad Gateway</body></html>".into_response(),
        Mode::NoTiming => r#"{"text":"I am very happy with your service."}"#.into_response(),
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never".into_response()
        }
    }
}

/// Starts a fake server on a free loopback port.
async fn serve(mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .with_state(Fake {
            mode,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn engine(addr: SocketAddr, key: Option<&str>) -> HttpEngine {
    HttpEngine::new(HttpConfig {
        url: format!("http://{addr}"),
        model: "whisper-test".into(),
        api_key: key.map(str::to_string),
        ..Default::default()
    })
    .unwrap()
}

/// A stereo recording: a 1 s tone burst on the customer's channel at 1.0 s, on the agent's
/// at 3.0 s (speech enough for the VAD), over a −65 dBFS floor; 5 s long.
fn recording(dir: &Path) -> PathBuf {
    let path = dir.join("call.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..40_000u32 {
        let tone = ((f64::from(i) * 0.4).sin() * 8000.0) as i16;
        let floor = if i % 2 == 0 { 8 } else { -8 };
        let customer = if (8000..16_000).contains(&i) {
            tone
        } else {
            floor
        };
        let agent = if (24_000..32_000).contains(&i) {
            tone
        } else {
            floor
        };
        w.write_sample(customer).unwrap();
        w.write_sample(agent).unwrap();
    }
    w.finalize().unwrap();
    path
}

#[tokio::test]
async fn an_answer_is_taken_as_given_with_both_channels_labelled() {
    let (addr, seen) = serve(Mode::Answer).await;
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path());
    // The key comes from the environment, as the node reads it.
    std::env::set_var("TAPIR_TEST_TRANSCRIPT_KEY", "sk-test-123");
    let key = HttpConfig::api_key_from_env("TAPIR_TEST_TRANSCRIPT_KEY");
    let e = engine(addr, key.as_deref());
    let mut t = transcribe_recording(&path, &e, "en-US", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(t.engine, "http");
    assert_eq!(t.duration_ms, 5000);
    // One chunk per channel, starting 300 ms (the padding) before its talk.
    let starts: Vec<(Speaker, u64, u64, &str)> = t
        .phrases
        .iter()
        .map(|p| (p.speaker, p.start_ms, p.end_ms, p.text.as_str()))
        .collect();
    assert_eq!(
        starts,
        [
            (
                Speaker::Customer,
                1000,
                2000,
                "I am very happy with your service."
            ),
            (
                Speaker::Agent,
                3000,
                4000,
                "I am very happy with your service."
            ),
        ]
    );
    let words: Vec<(u64, &str)> = t.phrases[1]
        .words
        .iter()
        .map(|w| (w.start_ms, w.text.as_str()))
        .collect();
    assert_eq!(words[0], (3000, "I"));
    assert_eq!(words[6], (3800, "service."));
    t.score(&Vader::default());
    assert!(t.sentiment_average().unwrap() > 0.5);
    // 7 words over 1 s of phrase each.
    assert_eq!(t.words_per_minute(Speaker::Agent), Some(420.0));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "silent stretches are never sent");
    for s in seen.iter() {
        assert_eq!(s.auth.as_deref(), Some("Bearer sk-test-123"));
        let field = |k: &str| -> Vec<&str> {
            s.fields
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(field("model"), ["whisper-test"]);
        assert_eq!(field("language"), ["en"]);
        assert_eq!(field("response_format"), ["verbose_json"]);
        assert_eq!(field("timestamp_granularities[]"), ["segment", "word"]);
        let wav = hound::WavReader::new(std::io::Cursor::new(&s.wav)).unwrap();
        assert_eq!(wav.spec().channels, 1);
        assert_eq!(wav.spec().sample_rate, 8000);
        assert_eq!(wav.spec().bits_per_sample, 16);
        // 1 s of talk and 300 ms of padding either side.
        assert_eq!(wav.len(), 8000 * 16 / 10);
    }
}

#[tokio::test]
async fn garbage_untimed_failed_and_hung_answers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path());
    for (mode, check) in [
        (
            Mode::Garbage,
            (|e: &TranscriptError| matches!(e, TranscriptError::Garbage(_)))
                as fn(&TranscriptError) -> bool,
        ),
        (Mode::NoTiming, |e| *e == TranscriptError::NoTiming),
        (
            Mode::Fail,
            |e| matches!(e, TranscriptError::Engine(m) if m.contains("500") && m.contains("model crashed")),
        ),
        (Mode::Hang, |e| matches!(e, TranscriptError::Timeout(_))),
    ] {
        let (addr, _) = serve(mode).await;
        let t0 = Instant::now();
        let err =
            transcribe_recording(&path, &engine(addr, None), "en", Duration::from_millis(500))
                .await
                .unwrap_err();
        assert!(check(&err), "{mode:?}: {err:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{mode:?}: {:?}",
            t0.elapsed()
        );
    }
    // Nobody listening: an engine error, not a panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = transcribe_recording(&path, &engine(port, None), "en", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TranscriptError::Engine(_)), "{err:?}");
}

/// An in-memory node: job rows and transcripts in maps, audio from a directory.
struct Host {
    dir: PathBuf,
    rows: Mutex<HashMap<String, Vec<Job>>>,
    stored: Mutex<HashMap<String, Transcript>>,
    t0: Instant,
}

impl JobHost for Host {
    fn create(&self, job: &Job) -> BoxFuture<'_, Result<bool, String>> {
        let mut rows = self.rows.lock().unwrap();
        let new = !rows.contains_key(&job.contact_id);
        if new {
            rows.insert(job.contact_id.clone(), vec![job.clone()]);
        }
        Box::pin(async move { Ok(new) })
    }
    fn save(&self, job: &Job) -> BoxFuture<'_, Result<(), String>> {
        self.rows
            .lock()
            .unwrap()
            .entry(job.contact_id.clone())
            .or_default()
            .push(job.clone());
        Box::pin(async { Ok(()) })
    }
    fn audio<'a>(&'a self, contact_id: &'a str) -> BoxFuture<'a, Result<AudioFile, String>> {
        let path = self.dir.join(format!("{contact_id}.wav"));
        Box::pin(async move {
            if path.exists() {
                Ok(AudioFile { path, guard: None })
            } else {
                Err(format!("{} is not in storage", path.display()))
            }
        })
    }
    fn store<'a>(&'a self, id: &'a str, t: &'a Transcript) -> BoxFuture<'a, Result<(), String>> {
        self.stored
            .lock()
            .unwrap()
            .insert(id.to_string(), t.clone());
        Box::pin(async { Ok(()) })
    }
    fn now_ms(&self) -> i64 {
        self.t0.elapsed().as_millis() as i64
    }
}

/// Routes requests to the engine named by the language asked for, so one driver can hold a
/// hanging and a working server at once ("xx-hang" → the hanging one).
#[derive(Debug)]
struct Split {
    ok: HttpEngine,
    hang: HttpEngine,
}

impl Engine for Split {
    fn name(&self) -> &str {
        "http"
    }
    fn transcribe(
        &self,
        r: transcript::Request,
    ) -> BoxFuture<'_, Result<Vec<transcript::Phrase>, TranscriptError>> {
        if r.language.ends_with("hang") {
            self.hang.transcribe(r)
        } else {
            self.ok.transcribe(r)
        }
    }
}

/// Counts what the driver reports, as the node's metrics do.
#[derive(Default)]
struct Seen2 {
    outcomes: Mutex<HashMap<Outcome, u32>>,
    peak_running: Mutex<usize>,
    last: Mutex<Counts>,
    attempts: Mutex<Vec<AttemptReport>>,
}

impl Observer for Seen2 {
    fn outcome(&self, _: &Job, o: Outcome) {
        *self.outcomes.lock().unwrap().entry(o).or_default() += 1;
    }
    fn counts(&self, c: Counts) {
        let mut p = self.peak_running.lock().unwrap();
        *p = (*p).max(c.running);
        *self.last.lock().unwrap() = c;
    }
    fn attempt(&self, r: &AttemptReport) {
        self.attempts.lock().unwrap().push(*r);
    }
}

async fn until(deadline: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < deadline, "not reached within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_engine_is_retried_then_failed_without_blocking_other_jobs() {
    let (ok, _) = serve(Mode::Answer).await;
    let (hang, hang_seen) = serve(Mode::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = recording(dir.path());
    for id in ["hung", "fine-1", "fine-2"] {
        std::fs::copy(&wav, dir.path().join(format!("{id}.wav"))).unwrap();
    }
    let host = Arc::new(Host {
        dir: dir.path().to_owned(),
        rows: Mutex::new(HashMap::new()),
        stored: Mutex::new(HashMap::new()),
        t0: Instant::now(),
    });
    let jobs = Jobs::new(JobsConfig {
        concurrency: 2,
        max_attempts: 2,
        backoff_ms: 100,
        backoff_max_ms: 100,
        timeout_ms: 600,
    });
    let seen = Arc::new(Seen2::default());
    let worker = Worker::with_observer(
        jobs,
        Arc::new(Split {
            ok: engine(ok, None),
            hang: engine(hang, None),
        }),
        Arc::new(Vader::default()),
        host.clone(),
        seen.clone(),
    );
    let run = tokio::spawn(worker.clone().run());
    assert!(worker.enqueue("hung", "en-hang").await.unwrap());
    assert!(
        !worker.enqueue("hung", "en-hang").await.unwrap(),
        "one job per recording"
    );
    assert!(worker.enqueue("fine-1", "en").await.unwrap());
    assert!(worker.enqueue("fine-2", "en").await.unwrap());
    assert!(worker.enqueue("missing", "en").await.unwrap());

    let last = |id: &str| {
        host.rows
            .lock()
            .unwrap()
            .get(id)
            .and_then(|r| r.last().cloned())
    };
    let ended = |id: &str| last(id).is_some_and(|j| !j.state.is_active());
    until(Duration::from_secs(10), || {
        ["hung", "fine-1", "fine-2", "missing"]
            .iter()
            .all(|id| ended(id))
    })
    .await;
    // The working jobs finished while the hung one was still on its attempts.
    let fine = last("fine-2").unwrap();
    let hung = last("hung").unwrap();
    assert_eq!(fine.state, JobState::Done);
    assert!(fine.updated_ms < hung.updated_ms, "{fine:?} {hung:?}");
    assert_eq!(hung.state, JobState::Failed);
    assert_eq!(hung.attempts, 2);
    assert!(
        hung.error.as_deref().unwrap().contains("did not answer"),
        "{hung:?}"
    );
    assert_eq!(
        hang_seen.lock().unwrap().len(),
        2,
        "one request per attempt"
    );
    // Its rows went queued → running → queued (retry) → running → failed.
    let states: Vec<JobState> = host.rows.lock().unwrap()["hung"]
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Running,
            JobState::Queued,
            JobState::Running,
            JobState::Failed
        ]
    );
    let missing = last("missing").unwrap();
    assert_eq!(missing.state, JobState::Failed);
    assert!(missing.error.unwrap().contains("not in storage"));
    // The transcripts were stored as the engine answered them, scored.
    let stored = host.stored.lock().unwrap();
    assert_eq!(stored.len(), 2);
    let t = &stored["fine-1"];
    assert_eq!(t.phrases.len(), 2);
    assert_eq!(t.phrases[0].text, "I am very happy with your service.");
    assert!(t.phrases.iter().all(|p| p.sentiment.is_some()));
    assert_eq!(worker.counts().running + worker.counts().queued, 0);
    // What the metrics were told: two done, the hung one and the missing one retried once
    // and failed; every attempt reported, audio only for the successful ones.
    let o = seen.outcomes.lock().unwrap().clone();
    assert_eq!(o.get(&Outcome::Done), Some(&2));
    assert_eq!(o.get(&Outcome::Failed), Some(&2));
    assert_eq!(o.get(&Outcome::Retried), Some(&2));
    assert_eq!(
        *seen.peak_running.lock().unwrap(),
        2,
        "the concurrency limit"
    );
    assert_eq!(*seen.last.lock().unwrap(), Counts::default());
    let attempts = seen.attempts.lock().unwrap();
    assert_eq!(attempts.len(), 6);
    let audio: Vec<u64> = attempts.iter().filter_map(|a| a.audio_ms).collect();
    assert_eq!(audio, [5000, 5000]);
    assert!(attempts.iter().all(|a| a.cpu.is_none()), "remote engine");
    run.abort();
}
