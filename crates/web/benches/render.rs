//! Rendering cost of the two heavy pages, without a server: the recordings list with a page
//! of 50 rows (each with its conversation metrics) and the recording page of a 60-minute
//! call (its metrics with the talk spans of an hour, hundreds of markers, segments and
//! statements). Prints p50 and p95 over 300 renders each.
//!
//! Run with `cargo bench -p web --bench render`. Under `cargo test` (no `--bench`
//! argument) it says so and measures nothing.

use std::time::{Duration, Instant};

use analysis::{ConversationMetrics, Speaker, SpeakerSpan};
use store::{Entry, State, Statement};
use web::layout::{Chrome, Nav, UserBadge};
use web::recording::{recording_page, RecordingOptions};
use web::search::{search_page, SearchForm};

const RUNS: usize = 300;

/// A conversation of `minutes`: turns of 3 to 9 s, a pause of 0.3 to 2 s between them, a
/// long silence every 10 minutes.
fn metrics(minutes: u64) -> ConversationMetrics {
    let end = minutes * 60_000;
    let (mut at, mut k) = (500u64, 0u64);
    let (mut customer, mut agent) = (Vec::new(), Vec::new());
    while at < end {
        let len = 3_000 + (k * 7_919) % 6_000;
        let span = (at, (at + len).min(end));
        if k % 2 == 0 {
            customer.push(span)
        } else {
            agent.push(span)
        }
        at += len + 300 + (k * 104_729) % 1_700;
        if k % 100 == 99 {
            at += 6_000;
        }
        k += 1;
    }
    let mut m = ConversationMetrics::from_spans(&customer, &agent, end);
    let mut spans: Vec<SpeakerSpan> = customer
        .iter()
        .map(|&(s, e)| SpeakerSpan {
            speaker: Speaker::Customer,
            start_ms: s,
            end_ms: e,
        })
        .chain(agent.iter().map(|&(s, e)| SpeakerSpan {
            speaker: Speaker::Agent,
            start_ms: s,
            end_ms: e,
        }))
        .collect();
    spans.sort_by_key(|s| s.start_ms);
    m.spans = spans;
    m
}

fn entry(i: u64, minutes: u64) -> Entry {
    let meta = recorder::RecordingMetadata {
        contact_id: format!("1767225600000-bench-{i}"),
        call_id_customer: Some(format!("{i}-a@carrier.example")),
        call_id_agent: Some(format!("{i}-b@pbx.example")),
        from: format!("+49301234{i:04}"),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: 1_767_225_600_000 + i * 60_000,
        duration_ms: minutes * 60_000,
        call_duration_ms: minutes * 60_000,
        agent_id: Some(format!("agent{}", i % 500)),
        team: Some(format!("team{}", i % 50)),
        queue: Some(format!("queue{}", i % 100)),
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "node-a", State::Stored, 0).unwrap();
    e.metrics = Some(serde_json::to_value(metrics(minutes)).unwrap());
    e
}

fn hour_call() -> Entry {
    let mut e = entry(0, 60);
    let seg = |kind, from_s: u64, to_s: u64, why: &str| recorder::Segment {
        kind,
        start_frame: from_s * 8000,
        end_frame: Some(to_s * 8000),
        call_start_ms: from_s * 1000,
        call_end_ms: Some(to_s * 1000),
        start_reason: why.into(),
        end_reason: Some("next".into()),
    };
    e.segments = vec![
        seg(recorder::SegmentKind::Full, 0, 1200, "answer"),
        seg(recorder::SegmentKind::Paused, 1200, 1320, "payment card"),
        seg(recorder::SegmentKind::Full, 1320, 3600, "resume"),
    ];
    e.statements = (0..3)
        .map(|k| Statement {
            id: format!("st-{k}"),
            statement_id: format!("terms-{k}"),
            contact_id: e.contact_id.clone(),
            start_ms: e.start_ms,
            duration_ms: 20_000,
            format: "wav".into(),
            segments: vec![seg(
                recorder::SegmentKind::Full,
                600 + k * 900,
                620 + k * 900,
                "statement",
            )],
            state: State::Stored,
            storage_key: None,
            size_bytes: None,
            sha256: None,
            updated_ms: 0,
        })
        .collect();
    e
}

fn time(name: &str, mut f: impl FnMut() -> usize) {
    let mut t: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut bytes = 0;
    for _ in 0..RUNS {
        let s = Instant::now();
        bytes = f();
        t.push(s.elapsed());
    }
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<48} p50 {:>7.3} ms  p95 {:>7.3} ms  ({} KiB of HTML)",
        ms(t[RUNS / 2]),
        ms(t[RUNS * 95 / 100]),
        bytes / 1024
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("render: run with `cargo bench -p web --bench render` to measure");
        return;
    }
    let chrome = Chrome {
        user: Some(UserBadge {
            username: "root",
            display_name: "Root",
            role: access::Role::Admin,
        }),
        csrf: Some("0123456789012345678901234567890123456789012"),
        current: Nav::Recordings,
    };
    let rows: Vec<Entry> = (0..50).map(|i| entry(i, 1 + i % 30)).collect();
    let form = SearchForm::from_params(&[
        ("agent".into(), "agent7".into()),
        ("from".into(), "2026-01-01T00:00".into()),
    ]);
    time("search page, 50 rows", || {
        search_page(&chrome, &form, &rows, Some("6e657874"), None)
            .into_string()
            .len()
    });
    let hour = hour_call();
    let spans = web::recording::conversation_metrics(&hour)
        .unwrap()
        .spans
        .len();
    time(
        &format!("recording page, 60-minute call ({spans} talk spans)"),
        || {
            recording_page(&chrome, &hour, RecordingOptions { admin: true })
                .into_string()
                .len()
        },
    );
}
