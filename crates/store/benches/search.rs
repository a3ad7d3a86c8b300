//! Search latency over many catalogued recordings: generates N entries (default 100,000;
//! `TAPIR_BENCH_RECORDINGS=1000000` for the figure), then times every search filter
//! (first page of 50, newest first, and a page reached by cursor) and prints p50 and p95.
//! SQLite always (a file in a temporary directory); PostgreSQL too when
//! `TAPIR_BENCH_PG_URL=postgres://…` names an empty database (its tables are emptied first).
//!
//! Run with `cargo bench -p store --bench search`. Under `cargo test` (no `--bench`
//! argument, a debug build) it says so and measures nothing.

use std::time::{Duration, Instant};

use store::{Catalog, Entry, Query, Restriction, Sort, State, Statement};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01
const SPAN_DAYS: i64 = 365;
const AGENTS: u64 = 500;
const TEAMS: u64 = 50;
const QUEUES: u64 = 100;
const RUNS: usize = 200;
const TARGET_P95: Duration = Duration::from_millis(50);

/// xorshift: deterministic, so every run (and both backends) searches the same data.
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

fn generate(i: u64, rng: &mut Rng) -> Entry {
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
        duration_ms: rng.below(1800) * 1000 + 2000,
        call_duration_ms: 0,
        agent_id: Some(format!("agent{}", rng.below(AGENTS))),
        team: Some(format!("team{}", rng.below(TEAMS))),
        queue: Some(format!("queue{}", rng.below(QUEUES))),
        skill: Some(format!("skill{}", rng.below(8))),
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "node-a", State::Stored, 0)
        .unwrap()
        .with_retention(Some(90));
    e.storage_key = Some(store::storage_key(e.start_ms, &e.contact_id, "wav"));
    e.size_bytes = Some(e.duration_ms * 32);
    e.sha256 = Some("0".repeat(64));
    e
}

async fn load(c: &Catalog, n: u64) -> Duration {
    let t = Instant::now();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut batch = Vec::with_capacity(2000);
    let mut statements = Vec::new();
    for i in 0..n {
        let e = generate(i, &mut rng);
        if i % 50 == 0 {
            let meta = recorder::RecordingMetadata {
                contact_id: e.contact_id.clone(),
                statement_id: Some(format!("stmt-{i}")),
                start_unix_ms: e.start_ms as u64,
                duration_ms: 5000,
                ..Default::default()
            };
            statements.push(
                Statement::from_metadata(
                    &meta,
                    &format!("{}-statement", e.contact_id),
                    State::Stored,
                    0,
                )
                .unwrap(),
            );
        }
        batch.push(e);
        if batch.len() == batch.capacity() {
            c.upsert_many(&batch).await.unwrap();
            batch.clear();
        }
    }
    c.upsert_many(&batch).await.unwrap();
    for s in &statements {
        c.upsert_statement(s).await.unwrap();
    }
    c.optimize().await.unwrap();
    t.elapsed()
}

type MakeQuery = fn(&mut Rng) -> Query;

fn filters() -> Vec<(&'static str, MakeQuery)> {
    vec![
        ("none (newest first)", |_| Query::default()),
        ("time range (1 day)", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64) as i64 * DAY;
            Query {
                from_ms: Some(from),
                to_ms: Some(from + DAY),
                ..Default::default()
            }
        }),
        ("time range (30 days)", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64 - 30) as i64 * DAY;
            Query {
                from_ms: Some(from),
                to_ms: Some(from + 30 * DAY),
                ..Default::default()
            }
        }),
        ("agent", |r| Query {
            agent: Some(format!("agent{}", r.below(AGENTS))),
            ..Default::default()
        }),
        ("team", |r| Query {
            team: Some(format!("team{}", r.below(TEAMS))),
            ..Default::default()
        }),
        ("queue", |r| Query {
            queue: Some(format!("queue{}", r.below(QUEUES))),
            ..Default::default()
        }),
        ("direction", |r| Query {
            direction: Some(
                if r.below(2) == 0 {
                    "inbound"
                } else {
                    "outbound"
                }
                .into(),
            ),
            ..Default::default()
        }),
        ("customer number prefix (+49 + 4 digits)", |r| Query {
            customer_prefix: Some(number(r.next())[..7].to_string()),
            ..Default::default()
        }),
        ("customer number (full, mostly absent)", |r| Query {
            customer_prefix: Some(number(r.next())),
            ..Default::default()
        }),
        ("duration range (0-3 s, rare)", |_| Query {
            min_duration_ms: Some(0),
            max_duration_ms: Some(3_000),
            ..Default::default()
        }),
        ("duration range (20-25 min)", |_| Query {
            min_duration_ms: Some(20 * 60_000),
            max_duration_ms: Some(25 * 60_000),
            ..Default::default()
        }),
        ("has statement", |_| Query {
            has_statement: Some(true),
            ..Default::default()
        }),
        ("state", |_| Query {
            state: Some(State::Stored),
            ..Default::default()
        }),
        ("sort by duration (longest first)", |_| Query {
            sort: Sort::DurationDesc,
            ..Default::default()
        }),
        ("agent + time range (7 days) + inbound", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64 - 7) as i64 * DAY;
            Query {
                agent: Some(format!("agent{}", r.below(AGENTS))),
                from_ms: Some(from),
                to_ms: Some(from + 7 * DAY),
                direction: Some("inbound".into()),
                ..Default::default()
            }
        }),
        ("team + duration >= 10 min", |r| Query {
            team: Some(format!("team{}", r.below(TEAMS))),
            min_duration_ms: Some(10 * 60_000),
            ..Default::default()
        }),
        // What the review page runs: every search carries the viewer's restriction.
        ("an agent's view (restricted to 1 agent)", |r| Query {
            restrict: Some(Restriction {
                agents: vec![format!("agent{}", r.below(AGENTS))],
                teams: vec![],
            }),
            ..Default::default()
        }),
        ("a supervisor's view (3 teams + own agent)", |r| Query {
            restrict: Some(supervisor(r)),
            ..Default::default()
        }),
        ("a supervisor's view + 7 days", |r| {
            let from = T0 + r.below(SPAN_DAYS as u64 - 7) as i64 * DAY;
            Query {
                restrict: Some(supervisor(r)),
                from_ms: Some(from),
                to_ms: Some(from + 7 * DAY),
                ..Default::default()
            }
        }),
        ("a supervisor's view + queue", |r| Query {
            restrict: Some(supervisor(r)),
            queue: Some(format!("queue{}", r.below(QUEUES))),
            ..Default::default()
        }),
        ("an unknown agent's view (empty)", |_| Query {
            restrict: Some(Restriction {
                agents: vec!["nobody".into()],
                teams: vec![],
            }),
            ..Default::default()
        }),
    ]
}

fn supervisor(r: &mut Rng) -> Restriction {
    let t = r.below(TEAMS);
    Restriction {
        agents: vec![format!("agent{}", r.below(AGENTS))],
        teams: (0..3).map(|i| format!("team{}", (t + i) % TEAMS)).collect(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn measure(c: &Catalog) -> bool {
    let mut ok = true;
    println!(
        "  {:<44} {:>9} {:>9} {:>7}  target p95 <= {} ms",
        "filter",
        "p50 ms",
        "p95 ms",
        "rows",
        TARGET_P95.as_millis()
    );
    for (name, make) in filters() {
        for paged in [false, true] {
            let mut rng = Rng(0xB0B0_0000_0000_0001 ^ name.len() as u64);
            let mut times = Vec::with_capacity(RUNS);
            let mut rows = 0usize;
            for _ in 0..RUNS {
                let mut q = make(&mut rng);
                if paged {
                    // The cursor of the first page, then the second page is timed.
                    q.cursor = c.search(&q).await.unwrap().next;
                    if q.cursor.is_none() {
                        continue;
                    }
                }
                let t = Instant::now();
                let page = c.search(&q).await.unwrap();
                times.push(t.elapsed());
                rows += page.entries.len();
            }
            if times.is_empty() {
                continue;
            }
            times.sort();
            let p95 = pct(&times, 0.95);
            let met = p95 <= TARGET_P95;
            ok &= met;
            let label = if paged {
                format!("{name}, page 2")
            } else {
                name.to_string()
            };
            println!(
                "  {:<44} {:>9.2} {:>9.2} {:>7.1}  {}",
                label,
                pct(&times, 0.5).as_secs_f64() * 1e3,
                p95.as_secs_f64() * 1e3,
                rows as f64 / times.len() as f64,
                if met { "ok" } else { "ABOVE TARGET" }
            );
        }
    }
    let t = Instant::now();
    for i in 0..RUNS as u64 {
        c.by_call_id(&format!("{}-b@pbx.example", i * 97))
            .await
            .unwrap()
            .unwrap();
    }
    println!(
        "  by Call-ID: mean {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / RUNS as f64
    );
    let t = Instant::now();
    for i in 0..RUNS as u64 {
        c.statements_by_id(&format!("stmt-{}", i * 50))
            .await
            .unwrap();
    }
    println!(
        "  statement by id: mean {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / RUNS as f64
    );
    ok
}

async fn run(n: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let c = Catalog::open(&url).await.unwrap();
    println!(
        "SQLite, {n} recordings: loaded in {:.1} s",
        load(&c, n).await.as_secs_f64()
    );
    let mut ok = measure(&c).await;
    c.close().await;
    if let Ok(pg) = std::env::var("TAPIR_BENCH_PG_URL") {
        let c = Catalog::open(&pg).await.unwrap();
        // Start from empty tables: the bench owns this database.
        empty(&pg).await;
        println!(
            "PostgreSQL, {n} recordings: loaded in {:.1} s",
            load(&c, n).await.as_secs_f64()
        );
        ok &= measure(&c).await;
        c.close().await;
    } else {
        println!("PostgreSQL: skipped (set TAPIR_BENCH_PG_URL=postgres://… to an empty database)");
    }
    ok
}

async fn empty(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("TRUNCATE recordings, statements, webhook_outbox")
        .execute(&mut conn)
        .await
        .unwrap();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("search bench: not measuring under `cargo test` (run `cargo bench -p store --bench search`)");
        return;
    }
    let n = std::env::var("TAPIR_BENCH_RECORDINGS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(run(n));
    println!(
        "search p95 target met on every filter: {}",
        if ok { "yes" } else { "no" }
    );
}
