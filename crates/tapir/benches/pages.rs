//! The review pages end to end, through the real binary over loopback: the recordings list
//! with N recordings in the catalog (default 100,000; `TAPIR_BENCH_RECORDINGS=1000000` for
//! the figure of docs/benchmarks.md), and the page of a 60-minute call with its waveform.
//!
//! The bench generates the catalog (SQLite, the embedded default; the generator of
//! `crates/store/benches/search.rs`: one year, 500 agents, 50 teams, 100 queues, a third
//! outbound, 2 s to 30 min, each with conversation metrics) and one real 60-minute stereo
//! WAV of a conversation with its stored peaks and metrics, starts `tapir` on them, logs in
//! and times:
//!
//! * `GET /recordings` with each filter (an admin, and a supervisor whose team restricts
//!   the search): time to the last byte on loopback, which is the server's time plus well
//!   under a millisecond; every such request also writes its audit entry;
//! * the 60-minute call's page: `GET /recordings/{id}` then the peaks the page fetches
//!   (`GET /api/v1/recordings/{id}/peaks?buckets=4000`), one after the other as the browser
//!   does them;
//! * in headless Chromium (when installed): from the navigation to the waveform drawn
//!   (`performance.now()` when wavesurfer has rendered the peaks), assets cached.
//!
//! The generated catalog is kept in `target/tmp/pages-bench-<N>/` and reused by the next
//! run with the same N. Run with `cargo bench -p tapir --bench pages`; under `cargo test`
//! (no `--bench` argument) it says so and measures nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use store::{Catalog, Entry, State};
use tapir_tests::site::{Session, Site};
use tapir_tests::{free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01
const SPAN_DAYS: i64 = 365;
const AGENTS: u64 = 500;
const TEAMS: u64 = 50;
const QUEUES: u64 = 100;
const RUNS: usize = 100;
const HOUR_ID: &str = "1767225600000-bench-hour";

/// xorshift: deterministic, so every run searches the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn number(i: u64) -> String {
    format!("+49{:010}", i % 10_000_000_000)
}

/// Conversation metrics as the finisher stores them, without the talk spans (an hour's
/// spans are kilobytes; a million of them would not fit this machine's disk).
fn metrics(duration_ms: u64, rng: &mut Rng) -> serde_json::Value {
    let silence = rng.below(40_000);
    serde_json::json!({
        "version": 1, "duration_ms": duration_ms,
        "customer_talk_ms": duration_ms * 2 / 5, "agent_talk_ms": duration_ms * 2 / 5,
        "talk_to_listen_ratio": 0.5 + rng.below(100) as f64 / 100.0,
        "pause_count": duration_ms / 8000, "average_pause_ms": 700,
        "longest_customer_monologue_ms": 20_000, "longest_agent_monologue_ms": 30_000,
        "switches": duration_ms / 8000, "switches_per_hour": 450.0,
        "overtalk_ms": rng.below(20_000), "overtalk_count": rng.below(20),
        "silences_over_4s": silence / 4000, "longest_silence_ms": silence,
        "customer_words_per_minute": null, "agent_words_per_minute": null, "spans": [],
    })
}

fn generate(i: u64, rng: &mut Rng) -> Entry {
    let duration_ms = rng.below(1800) * 1000 + 2000;
    let meta = recorder::RecordingMetadata {
        contact_id: format!("{}-bench-{i}", T0 + i as i64),
        call_id_customer: Some(format!("{i}-a@carrier.example")),
        call_id_agent: Some(format!("{i}-b@pbx.example")),
        from: number(rng.next()),
        to: format!("{}", 200 + rng.below(AGENTS)),
        route: "pbx".into(),
        direction: if rng.below(3) == 0 {
            "outbound"
        } else {
            "inbound"
        }
        .into(),
        start_unix_ms: (T0 + rng.below((SPAN_DAYS * DAY) as u64) as i64) as u64,
        duration_ms,
        call_duration_ms: duration_ms,
        agent_id: Some(format!("agent{}", rng.below(AGENTS))),
        team: Some(format!("team{}", rng.below(TEAMS))),
        queue: Some(format!("queue{}", rng.below(QUEUES))),
        skill: Some(format!("skill{}", rng.below(8))),
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "bench-node", State::Stored, 0).unwrap();
    e.storage_key = Some(store::storage_key(e.start_ms, &e.contact_id, "wav"));
    e.size_bytes = Some(e.duration_ms * 32);
    e.sha256 = Some("0".repeat(64));
    e.metrics = Some(metrics(duration_ms, rng));
    e
}

/// A 60-minute conversation, 8 kHz stereo: turns of 3 to 9 s with tones on the speaking
/// party's channel, pauses between them, a long silence every 10 minutes.
fn write_hour(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let total = 3600 * 8000u64;
    let (mut at, mut k) = (4000u64, 0u64);
    let mut turns = Vec::new();
    while at < total {
        let len = (3 + (k * 7_919) % 6) * 8000;
        turns.push((at, (at + len).min(total), k % 2));
        at += len + 2400 + (k * 104_729) % 14_000;
        if k % 100 == 99 {
            at += 48_000;
        }
        k += 1;
    }
    let mut turn = 0;
    for n in 0..total {
        while turn < turns.len() && turns[turn].1 <= n {
            turn += 1;
        }
        let (mut c, mut a) = (0i16, 0i16);
        if let Some(&(s, e, who)) = turns.get(turn) {
            if (s..e).contains(&n) {
                let f = if who == 0 { 300.0 } else { 520.0 };
                let x =
                    (6000.0 * (2.0 * std::f64::consts::PI * f * n as f64 / 8000.0).sin()) as i16;
                if who == 0 {
                    c = x
                } else {
                    a = x
                }
            }
        }
        w.write_sample(c).unwrap();
        w.write_sample(a).unwrap();
    }
    w.finalize().unwrap();
}

/// The catalog and storage of the bench in `dir`, made once per N.
async fn prepare(dir: &Path, n: u64) {
    let done = dir.join("ready");
    if done.exists() {
        println!("reusing the catalog of {n} recordings in {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("recordings")).unwrap();
    let c = Catalog::open(&format!("sqlite://{}", dir.join("bench.db").display()))
        .await
        .unwrap();
    let t = Instant::now();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut batch = Vec::with_capacity(2000);
    for i in 0..n {
        batch.push(generate(i, &mut rng));
        if batch.len() == batch.capacity() {
            c.upsert_many(&batch).await.unwrap();
            batch.clear();
        }
    }
    c.upsert_many(&batch).await.unwrap();
    println!(
        "loaded {n} recordings in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // The 60-minute call: its WAV, peaks and metrics as the finisher stores them.
    let t = Instant::now();
    let start = T0 + 200 * DAY;
    let key = store::storage_key(start, HOUR_ID, "wav");
    let wav = dir.join("recordings").join(&key);
    std::fs::create_dir_all(wav.parent().unwrap()).unwrap();
    write_hour(&wav);
    let a = analysis::analyze_wav(&wav, analysis::AnalysisConfig::default()).unwrap();
    let peaks = dir
        .join("recordings")
        .join(store::shelf::companion_key(&key, "peaks.json"));
    std::fs::write(&peaks, serde_json::to_vec(&a.peaks).unwrap()).unwrap();
    let bytes = std::fs::read(&wav).unwrap();
    let meta = recorder::RecordingMetadata {
        contact_id: HOUR_ID.into(),
        from: "+4930555000".into(),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: start as u64,
        duration_ms: 3_600_000,
        call_duration_ms: 3_600_000,
        agent_id: Some("agent7".into()),
        team: Some("team7".into()),
        queue: Some("queue7".into()),
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "bench-node", State::Stored, 0).unwrap();
    e.segments = vec![recorder::Segment {
        kind: recorder::SegmentKind::Full,
        start_frame: 0,
        end_frame: Some(3600 * 8000),
        call_start_ms: 0,
        call_end_ms: Some(3_600_000),
        start_reason: "answer".into(),
        end_reason: Some("hangup".into()),
    }];
    e.storage_key = Some(key);
    e.size_bytes = Some(bytes.len() as i64);
    e.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
    e.metrics = Some(serde_json::to_value(&a.metrics).unwrap());
    c.upsert(&e).await.unwrap();
    c.optimize().await.unwrap();
    c.close().await;
    println!(
        "60-minute call: {} talk spans, {} KiB of stored peaks, made in {:.1} s",
        a.metrics.spans.len(),
        std::fs::metadata(&peaks).unwrap().len() / 1024,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(done, "").unwrap();
}

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
    )
}

fn iso(ms: i64) -> String {
    web::time::iso_utc(ms)
}

type Filter = fn(&mut Rng) -> String;

fn filters() -> Vec<(&'static str, Filter)> {
    vec![
        ("none (newest first)", |_| String::new()),
        ("time range (1 day)", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64) as i64 * DAY;
            format!("from={}&to={}", iso(from), iso(from + DAY))
        }),
        ("agent", |r| format!("agent=agent{}", r.below(AGENTS))),
        ("team", |r| format!("team=team{}", r.below(TEAMS))),
        ("queue", |r| format!("queue=queue{}", r.below(QUEUES))),
        ("direction", |_| "direction=outbound".into()),
        ("customer number prefix", |r| {
            format!("number=%2B49{:04}", r.below(10_000))
        }),
        ("duration 20-25 min", |_| {
            "min_duration=1200&max_duration=1500".into()
        }),
        ("silence of at least 30 s", |_| "min_silence=30".into()),
        ("sort by duration", |_| "sort=duration_desc".into()),
        ("agent + 7 days + inbound", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64 - 7) as i64 * DAY;
            format!(
                "agent=agent{}&from={}&to={}&direction=inbound",
                r.below(AGENTS),
                iso(from),
                iso(from + 7 * DAY)
            )
        }),
        ("unknown agent (empty list)", |_| "agent=nobody".into()),
    ]
}

fn timed(site: &Site, s: &Session, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let r = site.get(path, Some(s));
    let d = t.elapsed();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    (d, r.body.len())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pages: run with `cargo bench -p tapir --bench pages` to measure");
        return;
    }
    let n: u64 = std::env::var("TAPIR_BENCH_RECORDINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pages-bench-{n}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(prepare(&dir, n));

    let extra = format!(
        "[access]\nenabled = true\n[node]\nid = \"bench-node\"\n[catalog]\nurl = \"sqlite://{}\"\n\
         [recording]\nrecordings_dir = \"{}\"\n",
        dir.join("bench.db").display(),
        dir.join("recordings").display()
    );
    let route = format!(
        "[[routes]]\nname = \"r\"\ntarget = \"sip:127.0.0.1:{}\"\ncustomer = \"caller\"\ndirection = \"inbound\"\n",
        free_port("127.0.0.1")
    );
    let t = Tapir::start(
        BIN,
        &route,
        TapirOptions {
            extra,
            ..Default::default()
        },
    );
    let site = Site {
        t,
        bin: BIN.to_string(),
    };
    // Users live in the kept catalog too: add them only once.
    let users = site.cli(&["user", "list"], "");
    if !users.contains("bench-admin") {
        site.add_user("bench-admin", "admin", &[]);
        site.add_user("bench-sup", "supervisor", &["--team", "team7"]);
    }
    let admin = site.login("bench-admin");
    let sup = site.login("bench-sup");
    println!("\nsearch page over {n} recordings, {RUNS} requests per filter (ms, loopback, to the last byte):");
    println!("{:<32} {:>8} {:>8} {:>9}", "filter", "p50", "p95", "KiB");
    let mut rng = Rng(42);
    let mut worst = 0.0f64;
    for (name, f) in filters() {
        let mut t = Vec::with_capacity(RUNS);
        let mut size = 0;
        for _ in 0..RUNS {
            let q = f(&mut rng);
            let (d, len) = timed(&site, &admin, &format!("/recordings?{q}"));
            t.push(d);
            size = len;
        }
        let (p50, p95) = pct(t);
        worst = worst.max(p95);
        println!("{name:<32} {p50:>8.1} {p95:>8.1} {:>9}", size / 1024);
    }
    // The next page by cursor, and a supervisor's restricted list.
    let first = site.get("/recordings", Some(&admin)).text();
    let at = first.find("rel=\"next\" href=\"").map(|i| i + 17).unwrap();
    let next = first[at..at + first[at..].find('"').unwrap()].replace("&amp;", "&");
    let t: Vec<Duration> = (0..RUNS).map(|_| timed(&site, &admin, &next).0).collect();
    let (p50, p95) = pct(t);
    worst = worst.max(p95);
    println!("{:<32} {p50:>8.1} {p95:>8.1}", "second page (cursor)");
    let t: Vec<Duration> = (0..RUNS)
        .map(|_| timed(&site, &sup, "/recordings").0)
        .collect();
    let (p50, p95) = pct(t);
    worst = worst.max(p95);
    println!("{:<32} {p50:>8.1} {p95:>8.1}", "supervisor (one team)");
    println!("worst p95: {worst:.1} ms (target 150 ms)");

    // The 60-minute call's page and its peaks.
    let page = format!("/recordings/{HOUR_ID}");
    let peaks = format!(
        "/api/v1/recordings/{HOUR_ID}/peaks?buckets={}",
        web::recording::PEAK_BUCKETS
    );
    let (mut html_t, mut peaks_t, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let (mut html_len, mut peaks_len) = (0, 0);
    for _ in 0..50 {
        let (a, la) = timed(&site, &admin, &page);
        let (b, lb) = timed(&site, &admin, &peaks);
        html_t.push(a);
        peaks_t.push(b);
        both.push(a + b);
        (html_len, peaks_len) = (la, lb);
    }
    let (h50, h95) = pct(html_t);
    let (p50, p95) = pct(peaks_t);
    let (b50, b95) = pct(both);
    println!("\n60-minute call, 50 loads (ms):");
    println!(
        "  page HTML ({} KiB)             p50 {h50:.1}  p95 {h95:.1}",
        html_len / 1024
    );
    println!(
        "  peaks, 4000 buckets ({} KiB)  p50 {p50:.1}  p95 {p95:.1}",
        peaks_len / 1024
    );
    println!("  page + peaks                   p50 {b50:.1}  p95 {b95:.1} (target 300 ms)");

    // In a browser: navigation to drawn waveform.
    if !Path::new(tapir_tests::browser::CHROMIUM).exists() {
        println!(
            "\nno {}: the browser figure is skipped",
            tapir_tests::browser::CHROMIUM
        );
        return;
    }
    let b = tapir_tests::browser::Browser::start();
    let base = format!("http://{}", site.t.http);
    b.block_on(b.client.goto(&format!("{base}/login"))).unwrap();
    b.block_on(async {
        use tapir_tests::browser::fantoccini::Locator;
        let c = &b.client;
        c.find(Locator::Css("input[name=username]"))
            .await?
            .send_keys("bench-admin")
            .await?;
        c.find(Locator::Css("input[name=password]"))
            .await?
            .send_keys(tapir_tests::site::PASSWORD)
            .await?;
        c.find(Locator::Css("section.login button[type=submit]"))
            .await?
            .click()
            .await
    })
    .unwrap();
    b.wait_js(
        "logged in",
        "location.pathname === '/recordings'",
        Duration::from_secs(20),
    );
    let mut loads = Vec::new();
    for _ in 0..11 {
        b.block_on(b.client.goto(&format!("{base}{page}"))).unwrap();
        let v = b.wait_js(
            "the waveform",
            "document.querySelector('#player').dataset.readyMs",
            Duration::from_secs(20),
        );
        loads.push(v.as_str().unwrap().parse::<f64>().unwrap());
    }
    let first = loads.remove(0);
    loads.sort_by(f64::total_cmp);
    println!(
        "\nheadless Chromium, navigation to drawn waveform of the 60-minute call: first (assets not cached) {first:.0} ms; \
         then median {:.0} ms, worst {:.0} ms of {}",
        loads[loads.len() / 2],
        loads[loads.len() - 1],
        loads.len()
    );
}
