//! The catalog: one interface, two typed sqlx backends.
//!
//! [`Catalog`] is an enum over the backends rather than a trait object: there are exactly two
//! (SQLite embedded by default, PostgreSQL for many nodes), an enum needs neither boxed futures
//! nor `dyn`-compatible async methods, and a caller holds one concrete, cheaply cloned type.
//! sqlx's `Any` driver is not used because it lacks most types (JSON, booleans). Both
//! backends share their SQL text: SQLite accepts PostgreSQL's `$n` placeholders, so one
//! macro body ([`backend!`]) serves both, with the few dialect differences passed in.
//!
//! Every method that needs the time takes it (`now_ms`, unix milliseconds): the catalog never
//! reads a clock, so its behaviour in tests is exactly what the caller asks for.
//!
//! Migrations are versioned (`migrations/sqlite`, `migrations/postgres`, embedded at build
//! time) and each runs in its own transaction: one that fails leaves the schema at the last
//! version that succeeded, and the catalog keeps working on it. PostgreSQL migrations take an
//! advisory lock, so nodes starting together migrate once.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use recorder::Segment;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use crate::error::StoreError;
use crate::model::{Counters, DeleteOutcome, Delivery, Entry, State, Statement};
use crate::search::{Cursor, Page, Query};

/// The catalog file used when none is configured, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "tapir.db";

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a catalog URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl CatalogUrl {
    /// `postgres://…` or `postgresql://…`; `sqlite://PATH`, `sqlite:PATH` or a bare path.
    pub fn parse(url: &str) -> Result<CatalogUrl, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: redact_url(url),
            reason: reason.to_string(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(CatalogUrl::Postgres(url.to_string()));
        }
        let path = if let Some(p) = url.strip_prefix("sqlite://") {
            p
        } else if let Some(p) = url.strip_prefix("sqlite:") {
            p
        } else if url.contains("://") {
            return Err(bad("expected postgres://…, sqlite://PATH or a file path"));
        } else {
            url
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(bad("a SQLite catalog needs a file path"));
        }
        Ok(CatalogUrl::Sqlite(PathBuf::from(path)))
    }
}

/// The URL with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The row as stored; both backends decode into it.
#[derive(sqlx::FromRow)]
struct EntryRow {
    contact_id: String,
    call_id_customer: Option<String>,
    call_id_agent: Option<String>,
    node: String,
    start_ms: i64,
    answer_ms: Option<i64>,
    end_ms: Option<i64>,
    duration_ms: i64,
    call_duration_ms: i64,
    direction: String,
    route: String,
    station: Option<String>,
    agent: Option<String>,
    team: Option<String>,
    queue: Option<String>,
    skill: Option<String>,
    customer_number: Option<String>,
    from_uri: String,
    to_uri: String,
    format: String,
    codecs_customer: Json<Vec<String>>,
    codecs_agent: Json<Vec<String>>,
    segments: Json<Vec<Segment>>,
    decisions: Option<Json<serde_json::Value>>,
    stats: Json<serde_json::Value>,
    packets_customer: i64,
    lost_customer: i64,
    packets_agent: i64,
    lost_agent: i64,
    tap_drops: i64,
    state: String,
    error: Option<String>,
    storage_key: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    retention_days: Option<i32>,
    retain_until_ms: Option<i64>,
    legal_hold: bool,
    deleted_at_ms: Option<i64>,
    purged_at_ms: Option<i64>,
    has_statement: bool,
    updated_ms: i64,
    metrics: Option<Json<serde_json::Value>>,
}

/// The `(column, start_ms, contact_id)` index of the most selective equality filter of `q`,
/// for a search sorted by start: the agent's (500 agents in a typical centre), else the
/// queue's, else the team's.
fn equality_index(q: &Query) -> Option<&'static str> {
    // An agent's view (restricted to one agent, no team) is an agent filter too.
    let one_agent = q.restrict.as_ref().is_some_and(|r| {
        let (agents, teams) = r.terms();
        agents.len() == 1 && teams.is_empty()
    });
    if q.agent.is_some() || one_agent {
        Some("recordings_agent")
    } else if q.queue.is_some() {
        Some("recordings_queue")
    } else if q.team.is_some() {
        Some("recordings_team")
    } else {
        None
    }
}

/// A whole-number field of the conversation metrics, as a searchable column.
fn metric_i64(m: &Option<serde_json::Value>, field: &str) -> Option<i64> {
    m.as_ref()?.get(field)?.as_i64()
}

fn parse_state(id: &str, s: &str) -> Result<State, StoreError> {
    State::parse(s).ok_or_else(|| StoreError::Corrupt {
        contact_id: id.to_string(),
        reason: format!("unknown state {s:?}"),
    })
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;
    fn try_from(r: EntryRow) -> Result<Entry, StoreError> {
        let state = parse_state(&r.contact_id, &r.state)?;
        Ok(Entry {
            contact_id: r.contact_id,
            call_id_customer: r.call_id_customer,
            call_id_agent: r.call_id_agent,
            node: r.node,
            start_ms: r.start_ms,
            answer_ms: r.answer_ms,
            end_ms: r.end_ms,
            duration_ms: r.duration_ms,
            call_duration_ms: r.call_duration_ms,
            direction: r.direction,
            route: r.route,
            station: r.station,
            agent: r.agent,
            team: r.team,
            queue: r.queue,
            skill: r.skill,
            customer_number: r.customer_number,
            from_uri: r.from_uri,
            to_uri: r.to_uri,
            format: r.format,
            codecs_customer: r.codecs_customer.0,
            codecs_agent: r.codecs_agent.0,
            segments: r.segments.0,
            decisions: r.decisions.map(|j| j.0),
            stats: r.stats.0,
            counters: Counters {
                packets_customer: r.packets_customer,
                lost_customer: r.lost_customer,
                packets_agent: r.packets_agent,
                lost_agent: r.lost_agent,
                tap_drops: r.tap_drops,
            },
            state,
            error: r.error,
            storage_key: r.storage_key,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            retention_days: r.retention_days,
            retain_until_ms: r.retain_until_ms,
            legal_hold: r.legal_hold,
            deleted_at_ms: r.deleted_at_ms,
            purged_at_ms: r.purged_at_ms,
            has_statement: r.has_statement,
            updated_ms: r.updated_ms,
            metrics: r.metrics.map(|j| j.0),
            statements: Vec::new(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct StatementRow {
    id: String,
    statement_id: String,
    contact_id: String,
    start_ms: i64,
    duration_ms: i64,
    format: String,
    segments: Json<Vec<Segment>>,
    state: String,
    storage_key: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    updated_ms: i64,
}

impl TryFrom<StatementRow> for Statement {
    type Error = StoreError;
    fn try_from(r: StatementRow) -> Result<Statement, StoreError> {
        let state = parse_state(&r.contact_id, &r.state)?;
        Ok(Statement {
            id: r.id,
            statement_id: r.statement_id,
            contact_id: r.contact_id,
            start_ms: r.start_ms,
            duration_ms: r.duration_ms,
            format: r.format,
            segments: r.segments.0,
            state,
            storage_key: r.storage_key,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            updated_ms: r.updated_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    url: String,
    event: String,
    payload: Json<serde_json::Value>,
    created_ms: i64,
    attempts: i32,
    next_attempt_ms: i64,
    last_error: Option<String>,
    delivered_ms: Option<i64>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Delivery {
        Delivery {
            id: r.id,
            url: r.url,
            event: r.event,
            payload: r.payload.0,
            created_ms: r.created_ms,
            attempts: r.attempts,
            next_attempt_ms: r.next_attempt_ms,
            last_error: r.last_error,
            delivered_ms: r.delivered_ms,
        }
    }
}

macro_rules! entry_cols {
    () => {
        "contact_id, call_id_customer, call_id_agent, node, start_ms, answer_ms, end_ms, \
         duration_ms, call_duration_ms, direction, route, station, agent, team, queue, skill, \
         customer_number, from_uri, to_uri, format, codecs_customer, codecs_agent, segments, \
         decisions, stats, packets_customer, lost_customer, packets_agent, lost_agent, tap_drops, \
         state, error, storage_key, size_bytes, sha256, retention_days, retain_until_ms, \
         legal_hold, deleted_at_ms, purged_at_ms, has_statement, updated_ms, metrics, \
         longest_silence_ms, talk_to_listen_ratio, overtalk_ms"
    };
}

macro_rules! statement_cols {
    () => {
        "id, statement_id, contact_id, start_ms, duration_ms, format, segments, state, \
         storage_key, size_bytes, sha256, updated_ms"
    };
}

macro_rules! delivery_cols {
    () => {
        "id, url, event, payload, created_ms, attempts, next_attempt_ms, last_error, delivered_ms"
    };
}

/// Call facts are refreshed on conflict; the life of the file (stored, held, deleted) is
/// never undone by a late copy of the facts.
const UPSERT_ENTRY: &str = concat!(
    "INSERT INTO recordings (",
    entry_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, \
     $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46) \
     ON CONFLICT (contact_id) DO UPDATE SET \
     call_id_customer = excluded.call_id_customer, call_id_agent = excluded.call_id_agent, \
     node = excluded.node, start_ms = excluded.start_ms, answer_ms = excluded.answer_ms, \
     end_ms = excluded.end_ms, duration_ms = excluded.duration_ms, \
     call_duration_ms = excluded.call_duration_ms, direction = excluded.direction, \
     route = excluded.route, station = excluded.station, agent = excluded.agent, \
     team = excluded.team, queue = excluded.queue, skill = excluded.skill, \
     customer_number = excluded.customer_number, from_uri = excluded.from_uri, \
     to_uri = excluded.to_uri, format = excluded.format, \
     codecs_customer = excluded.codecs_customer, codecs_agent = excluded.codecs_agent, \
     segments = excluded.segments, decisions = excluded.decisions, stats = excluded.stats, \
     packets_customer = excluded.packets_customer, lost_customer = excluded.lost_customer, \
     packets_agent = excluded.packets_agent, lost_agent = excluded.lost_agent, \
     tap_drops = excluded.tap_drops, \
     state = CASE WHEN recordings.state IN ('stored', 'deleted') THEN recordings.state \
             ELSE excluded.state END, \
     error = excluded.error, \
     storage_key = COALESCE(excluded.storage_key, recordings.storage_key), \
     size_bytes = COALESCE(excluded.size_bytes, recordings.size_bytes), \
     sha256 = COALESCE(excluded.sha256, recordings.sha256), \
     retention_days = excluded.retention_days, retain_until_ms = excluded.retain_until_ms, \
     legal_hold = (recordings.legal_hold OR excluded.legal_hold), \
     deleted_at_ms = COALESCE(recordings.deleted_at_ms, excluded.deleted_at_ms), \
     purged_at_ms = COALESCE(recordings.purged_at_ms, excluded.purged_at_ms), \
     updated_ms = excluded.updated_ms, \
     metrics = COALESCE(excluded.metrics, recordings.metrics), \
     longest_silence_ms = COALESCE(excluded.longest_silence_ms, recordings.longest_silence_ms), \
     talk_to_listen_ratio = COALESCE(excluded.talk_to_listen_ratio, recordings.talk_to_listen_ratio), \
     overtalk_ms = COALESCE(excluded.overtalk_ms, recordings.overtalk_ms)"
);

const REFRESH_HAS_STATEMENT: &str = "UPDATE recordings SET has_statement = EXISTS \
     (SELECT 1 FROM statements s WHERE s.contact_id = recordings.contact_id) \
     WHERE contact_id = $1";

const UPSERT_STATEMENT: &str = concat!(
    "INSERT INTO statements (",
    statement_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET statement_id = excluded.statement_id, \
     contact_id = excluded.contact_id, start_ms = excluded.start_ms, \
     duration_ms = excluded.duration_ms, format = excluded.format, segments = excluded.segments, \
     state = CASE WHEN statements.state IN ('stored', 'deleted') THEN statements.state \
             ELSE excluded.state END, \
     storage_key = COALESCE(excluded.storage_key, statements.storage_key), \
     size_bytes = COALESCE(excluded.size_bytes, statements.size_bytes), \
     sha256 = COALESCE(excluded.sha256, statements.sha256), \
     updated_ms = excluded.updated_ms"
);

const GET_ENTRY: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM recordings WHERE contact_id = $1"
);
const BY_CALL_ID: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM recordings WHERE call_id_customer = $1 \
     UNION SELECT ",
    entry_cols!(),
    " FROM recordings WHERE call_id_agent = $1 ORDER BY start_ms DESC LIMIT 1"
);
const STATEMENTS_OF: &str = concat!(
    "SELECT ",
    statement_cols!(),
    " FROM statements WHERE contact_id = $1 ORDER BY start_ms, id"
);
const STATEMENTS_BY_ID: &str = concat!(
    "SELECT ",
    statement_cols!(),
    " FROM statements WHERE statement_id = $1 ORDER BY start_ms, id"
);
const BY_NODE_STATE: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM recordings WHERE node = $1 AND state = $2 ORDER BY start_ms, contact_id LIMIT $3"
);
const STATEMENTS_BY_NODE_STATE: &str =
    "SELECT s.id, s.statement_id, s.contact_id, s.start_ms, s.duration_ms, s.format, \
     s.segments, s.state, s.storage_key, s.size_bytes, s.sha256, s.updated_ms \
     FROM statements s JOIN recordings r ON r.contact_id = s.contact_id \
     WHERE r.node = $1 AND s.state = $2 ORDER BY s.start_ms, s.id LIMIT $3";
const SET_STATE: &str = "UPDATE recordings SET state = $2, updated_ms = $3 WHERE contact_id = $1";
const SET_FILE: &str = "UPDATE recordings SET state = $2, size_bytes = $3, sha256 = $4, \
     updated_ms = $5 WHERE contact_id = $1 AND state NOT IN ('stored', 'deleted')";
const MARK_STORED: &str = "UPDATE recordings SET state = 'stored', storage_key = $2, \
     size_bytes = $3, sha256 = $4, updated_ms = $5 \
     WHERE contact_id = $1 AND state <> 'deleted'";
const SET_STATEMENT_FILE: &str = "UPDATE statements SET state = $2, size_bytes = $3, \
     sha256 = $4, updated_ms = $5 WHERE id = $1 AND state NOT IN ('stored', 'deleted')";
const MARK_STATEMENT_STORED: &str = "UPDATE statements SET state = 'stored', storage_key = $2, \
     size_bytes = $3, sha256 = $4, updated_ms = $5 WHERE id = $1 AND state <> 'deleted'";
const SOFT_DELETE: &str = "UPDATE recordings SET deleted_at_ms = $2, updated_ms = $2 \
     WHERE contact_id = $1 AND NOT legal_hold AND deleted_at_ms IS NULL \
     AND purged_at_ms IS NULL";
const SET_HOLD: &str =
    "UPDATE recordings SET legal_hold = $2, updated_ms = $3 WHERE contact_id = $1";
const PURGE_CANDIDATES: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM recordings WHERE NOT legal_hold AND purged_at_ms IS NULL \
     AND state <> 'recording' \
     AND (deleted_at_ms IS NOT NULL OR retain_until_ms <= $1) \
     ORDER BY contact_id LIMIT $2"
);
const MARK_PURGED: &str = "UPDATE recordings SET state = 'deleted', purged_at_ms = $2, \
     deleted_at_ms = COALESCE(deleted_at_ms, $2), updated_ms = $2 \
     WHERE contact_id = $1 AND NOT legal_hold AND purged_at_ms IS NULL";
const MARK_STATEMENTS_PURGED: &str =
    "UPDATE statements SET state = 'deleted', updated_ms = $2 WHERE contact_id = $1";
const ENQUEUE: &str = "INSERT INTO webhook_outbox (url, event, payload, created_ms, attempts, \
     next_attempt_ms) VALUES ($1, $2, $3, $4, 0, $4) RETURNING id";
const DELIVERED: &str = "UPDATE webhook_outbox SET delivered_ms = $2, last_error = NULL \
     WHERE id = $1 AND delivered_ms IS NULL";
const DELIVERY_FAILED: &str = "UPDATE webhook_outbox SET next_attempt_ms = $2, last_error = $3 \
     WHERE id = $1 AND delivered_ms IS NULL";
const PENDING_DELIVERIES: &str = "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_ms IS NULL";
const GET_DELIVERY: &str = concat!(
    "SELECT ",
    delivery_cols!(),
    " FROM webhook_outbox WHERE id = $1"
);
const COUNT_ENTRIES: &str = "SELECT COUNT(*) FROM recordings";

/// Claims due deliveries: each is leased (its next attempt moved to `$2`) so a crashed node's
/// claim expires and another node, or the same one after a restart, tries again.
const CLAIM_SQLITE: &str = concat!(
    "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_ms = $2 \
     WHERE id IN (SELECT id FROM webhook_outbox WHERE delivered_ms IS NULL \
     AND next_attempt_ms <= $1 ORDER BY next_attempt_ms, id LIMIT $3) RETURNING ",
    delivery_cols!()
);
const CLAIM_POSTGRES: &str = concat!(
    "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_ms = $2 \
     WHERE id IN (SELECT id FROM webhook_outbox WHERE delivered_ms IS NULL \
     AND next_attempt_ms <= $1 ORDER BY next_attempt_ms, id LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING ",
    delivery_cols!()
);

/// Recordings in a viewer's restriction from which a start-sorted page walks the start index.
const RESTRICTION_PROBE: i64 = 5000;

/// A viewer's restriction as SQL: nothing outside it, and nothing at all when it names no
/// agent and no team.
fn push_restriction<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, r: &crate::Restriction)
where
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (agents, teams) = r.terms();
    if agents.is_empty() && teams.is_empty() {
        qb.push(" AND 1 = 0");
        return;
    }
    qb.push(" AND (");
    let mut first = true;
    for (col, vals) in [("agent", agents), ("team", teams)] {
        if vals.is_empty() {
            continue;
        }
        if !first {
            qb.push(" OR ");
        }
        first = false;
        qb.push(col).push(" IN (");
        let mut list = qb.separated(", ");
        for v in vals {
            list.push_bind(v);
        }
        qb.push(")");
    }
    qb.push(")");
}

/// Matches of a duration range below which its index serves a start-sorted page.
const DURATION_PROBE: i64 = 5000;
const DURATION_PROBE_SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM recordings \
     WHERE duration_ms >= $1 AND duration_ms <= $2 LIMIT $3) AS probe";

fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// The body shared by both backends. `$true` is the dialect's literal for a true boolean,
/// spelled as the partial indexes spell it so the planner can use them; `$probe_duration`
/// says whether a duration range is probed before choosing its index (see `search`).
macro_rules! backend {
    ($name:ident, $db:ty, $pool:ty, $true:literal, $claim:expr, $probe_duration:literal,
     $text_filter:path) => {
        #[derive(Debug, Clone)]
        pub struct $name {
            pub(crate) pool: $pool,
            url: String,
        }

        impl $name {
            async fn upsert_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                e: &Entry,
            ) -> Result<(), StoreError> {
                sqlx::query(UPSERT_ENTRY)
                    .bind(&e.contact_id)
                    .bind(&e.call_id_customer)
                    .bind(&e.call_id_agent)
                    .bind(&e.node)
                    .bind(e.start_ms)
                    .bind(e.answer_ms)
                    .bind(e.end_ms)
                    .bind(e.duration_ms)
                    .bind(e.call_duration_ms)
                    .bind(&e.direction)
                    .bind(&e.route)
                    .bind(&e.station)
                    .bind(&e.agent)
                    .bind(&e.team)
                    .bind(&e.queue)
                    .bind(&e.skill)
                    .bind(&e.customer_number)
                    .bind(&e.from_uri)
                    .bind(&e.to_uri)
                    .bind(&e.format)
                    .bind(Json(&e.codecs_customer))
                    .bind(Json(&e.codecs_agent))
                    .bind(Json(&e.segments))
                    .bind(e.decisions.as_ref().map(Json))
                    .bind(Json(&e.stats))
                    .bind(e.counters.packets_customer)
                    .bind(e.counters.lost_customer)
                    .bind(e.counters.packets_agent)
                    .bind(e.counters.lost_agent)
                    .bind(e.counters.tap_drops)
                    .bind(e.state.as_str())
                    .bind(&e.error)
                    .bind(&e.storage_key)
                    .bind(e.size_bytes)
                    .bind(&e.sha256)
                    .bind(e.retention_days)
                    .bind(e.retain_until_ms)
                    .bind(e.legal_hold)
                    .bind(e.deleted_at_ms)
                    .bind(e.purged_at_ms)
                    .bind(false)
                    .bind(e.updated_ms)
                    .bind(e.metrics.as_ref().map(Json))
                    .bind(metric_i64(&e.metrics, "longest_silence_ms"))
                    .bind(
                        e.metrics
                            .as_ref()
                            .and_then(|m| m.get("talk_to_listen_ratio"))
                            .and_then(|v| v.as_f64()),
                    )
                    .bind(metric_i64(&e.metrics, "overtalk_ms"))
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(REFRESH_HAS_STATEMENT)
                    .bind(&e.contact_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            async fn upsert_many(&self, entries: &[Entry]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for e in entries {
                    Self::upsert_in(&mut tx, e).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn upsert_statement(&self, s: &Statement) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(UPSERT_STATEMENT)
                    .bind(&s.id)
                    .bind(&s.statement_id)
                    .bind(&s.contact_id)
                    .bind(s.start_ms)
                    .bind(s.duration_ms)
                    .bind(&s.format)
                    .bind(Json(&s.segments))
                    .bind(s.state.as_str())
                    .bind(&s.storage_key)
                    .bind(s.size_bytes)
                    .bind(&s.sha256)
                    .bind(s.updated_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(REFRESH_HAS_STATEMENT)
                    .bind(&s.contact_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn with_statements(
                &self,
                row: Option<EntryRow>,
            ) -> Result<Option<Entry>, StoreError> {
                let Some(row) = row else { return Ok(None) };
                let mut e = Entry::try_from(row)?;
                e.statements = self.statements_of(&e.contact_id).await?;
                Ok(Some(e))
            }

            async fn statements_of(&self, contact_id: &str) -> Result<Vec<Statement>, StoreError> {
                sqlx::query_as::<_, StatementRow>(STATEMENTS_OF)
                    .bind(contact_id)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(Statement::try_from)
                    .collect()
            }

            async fn get(&self, contact_id: &str) -> Result<Option<Entry>, StoreError> {
                let row = sqlx::query_as::<_, EntryRow>(GET_ENTRY)
                    .bind(contact_id)
                    .fetch_optional(&self.pool)
                    .await?;
                self.with_statements(row).await
            }

            async fn by_call_id(&self, call_id: &str) -> Result<Option<Entry>, StoreError> {
                let row = sqlx::query_as::<_, EntryRow>(BY_CALL_ID)
                    .bind(call_id)
                    .fetch_optional(&self.pool)
                    .await?;
                self.with_statements(row).await
            }

            async fn statements_by_id(
                &self,
                statement_id: &str,
            ) -> Result<Vec<Statement>, StoreError> {
                sqlx::query_as::<_, StatementRow>(STATEMENTS_BY_ID)
                    .bind(statement_id)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(Statement::try_from)
                    .collect()
            }

            async fn by_node_state(
                &self,
                node: &str,
                state: State,
                max: u32,
            ) -> Result<Vec<Entry>, StoreError> {
                sqlx::query_as::<_, EntryRow>(BY_NODE_STATE)
                    .bind(node)
                    .bind(state.as_str())
                    .bind(limit(max))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(Entry::try_from)
                    .collect()
            }

            async fn statements_by_node_state(
                &self,
                node: &str,
                state: State,
                max: u32,
            ) -> Result<Vec<Statement>, StoreError> {
                sqlx::query_as::<_, StatementRow>(STATEMENTS_BY_NODE_STATE)
                    .bind(node)
                    .bind(state.as_str())
                    .bind(limit(max))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(Statement::try_from)
                    .collect()
            }

            async fn set_state(
                &self,
                contact_id: &str,
                state: State,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(SET_STATE)
                    .bind(contact_id)
                    .bind(state.as_str())
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_file(
                &self,
                sql: &'static str,
                id: &str,
                state: State,
                size: i64,
                sha256: &str,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(sql)
                    .bind(id)
                    .bind(state.as_str())
                    .bind(size)
                    .bind(sha256)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn mark_stored(
                &self,
                sql: &'static str,
                id: &str,
                key: &str,
                size: i64,
                sha256: &str,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(sql)
                    .bind(id)
                    .bind(key)
                    .bind(size)
                    .bind(sha256)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn search(&self, q: &Query) -> Result<Page, StoreError> {
                let c = q.check()?;
                let mut qb =
                    QueryBuilder::<$db>::new(concat!("SELECT ", entry_cols!(), " FROM recordings"));
                // SQLite has no range statistics: given an agent (team, queue) and a time
                // window it walked the start index over the window, checking the agent on
                // each of its ~19,000 rows (99 ms at 1,000,000 recordings), instead of the
                // agent's own index, which holds the agent's rows in start order and serves
                // the window and the sort at once. Name that index for it. PostgreSQL's
                // planner finds it itself.
                if $probe_duration && q.sort.column() == "start_ms" {
                    if let Some(idx) = equality_index(q) {
                        qb.push(" INDEXED BY ").push(idx);
                    } else if let Some(r) = q
                        .restrict
                        .as_ref()
                        .filter(|_| q.min_duration_ms.is_none() && q.max_duration_ms.is_none())
                    {
                        // A supervisor's view (agents OR teams): SQLite reads both indexes,
                        // then sorts every match (100 ms for 3 teams of 50 at 100,000
                        // recordings). When the view holds many recordings, walking the start
                        // index finds a page after a few hundred rows; when it holds few,
                        // sorting them is cheap. A bounded count tells which.
                        let (agents, teams) = r.terms();
                        if !teams.is_empty() || agents.len() > 1 {
                            let mut probe = QueryBuilder::<$db>::new(
                                "SELECT COUNT(*) FROM (SELECT 1 FROM recordings WHERE 1 = 1",
                            );
                            push_restriction(&mut probe, r);
                            probe
                                .push(" LIMIT ")
                                .push_bind(RESTRICTION_PROBE)
                                .push(") AS probe");
                            let n: i64 = probe.build_query_scalar().fetch_one(&self.pool).await?;
                            if n >= RESTRICTION_PROBE {
                                qb.push(" INDEXED BY recordings_start");
                            }
                        }
                    }
                }
                qb.push(" WHERE 1 = 1");
                if let Some(v) = q.from_ms {
                    qb.push(" AND start_ms >= ").push_bind(v);
                }
                if let Some(v) = q.to_ms {
                    qb.push(" AND start_ms < ").push_bind(v);
                }
                for (col, v) in [
                    ("agent", &q.agent),
                    ("team", &q.team),
                    ("queue", &q.queue),
                    ("direction", &q.direction),
                ] {
                    if let Some(v) = v {
                        qb.push(" AND ").push(col).push(" = ").push_bind(v.clone());
                    }
                }
                if let Some((lo, hi)) = &c.customer_range {
                    qb.push(" AND customer_number >= ").push_bind(lo.clone());
                    if let Some(hi) = hi {
                        qb.push(" AND customer_number < ").push_bind(hi.clone());
                    }
                }
                // SQLite has no range statistics, so for a duration range sorted by start it
                // cannot tell a wide range (read the start index, a page is found after a
                // few hundred rows) from a rare one (read the duration index, sort the few
                // matches). A bounded count on the duration index tells: below
                // DURATION_PROBE matches it keeps that index, else `+duration_ms` (which no
                // index serves) steers it to the others. PostgreSQL estimates this itself.
                let dur = if $probe_duration
                    && q.sort.column() == "start_ms"
                    && (q.min_duration_ms.is_some() || q.max_duration_ms.is_some())
                {
                    let n: i64 = sqlx::query_scalar(DURATION_PROBE_SQL)
                        .bind(q.min_duration_ms.unwrap_or(i64::MIN))
                        .bind(q.max_duration_ms.unwrap_or(i64::MAX))
                        .bind(DURATION_PROBE)
                        .fetch_one(&self.pool)
                        .await?;
                    if n < DURATION_PROBE {
                        "duration_ms"
                    } else {
                        "+duration_ms"
                    }
                } else {
                    "duration_ms"
                };
                if let Some(v) = q.min_duration_ms {
                    qb.push(" AND ").push(dur).push(" >= ").push_bind(v);
                }
                if let Some(v) = q.max_duration_ms {
                    qb.push(" AND ").push(dur).push(" <= ").push_bind(v);
                }
                if let Some(v) = q.min_silence_ms {
                    qb.push(" AND longest_silence_ms >= ").push_bind(v);
                }
                if let Some(v) = q.min_overtalk_ms {
                    qb.push(" AND overtalk_ms >= ").push_bind(v);
                }
                if let Some(words) = &c.text {
                    $text_filter(&mut qb, words);
                }
                match q.has_statement {
                    Some(true) => {
                        qb.push(concat!(" AND has_statement = ", $true));
                    }
                    Some(false) => {
                        qb.push(concat!(" AND NOT (has_statement = ", $true, ")"));
                    }
                    None => {}
                }
                if let Some(r) = &q.restrict {
                    push_restriction(&mut qb, r);
                }
                if let Some(s) = q.state {
                    qb.push(" AND state = ").push_bind(s.as_str());
                }
                // A soft-deleted entry keeps its state (`stored`) until it is purged, so a
                // search by state would find it unless told not to.
                if !q.include_deleted && q.state != Some(State::Deleted) {
                    qb.push(" AND deleted_at_ms IS NULL");
                }
                let col = q.sort.column();
                let (cmp, dir) = if q.sort.descending() {
                    ("<", " DESC")
                } else {
                    (">", " ASC")
                };
                if let Some(Cursor {
                    key, contact_id, ..
                }) = &c.cursor
                {
                    qb.push(" AND (")
                        .push(col)
                        .push(", contact_id) ")
                        .push(cmp)
                        .push(" (")
                        .push_bind(*key)
                        .push(", ")
                        .push_bind(contact_id.clone())
                        .push(")");
                }
                qb.push(" ORDER BY ")
                    .push(col)
                    .push(dir)
                    .push(", contact_id")
                    .push(dir)
                    .push(" LIMIT ")
                    .push_bind(limit(c.limit) + 1);
                let rows = qb
                    .build_query_as::<EntryRow>()
                    .fetch_all(&self.pool)
                    .await?;
                let mut entries = rows
                    .into_iter()
                    .map(Entry::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if entries.len() > c.limit as usize {
                    entries.truncate(c.limit as usize);
                    entries.last().map(|e| Cursor::after(q.sort, e).encode())
                } else {
                    None
                };
                Ok(Page { entries, next })
            }

            async fn soft_delete(
                &self,
                contact_id: &str,
                now_ms: i64,
            ) -> Result<DeleteOutcome, StoreError> {
                let r = sqlx::query(SOFT_DELETE)
                    .bind(contact_id)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                if r.rows_affected() == 1 {
                    return Ok(DeleteOutcome::Deleted);
                }
                let row = sqlx::query_as::<_, EntryRow>(GET_ENTRY)
                    .bind(contact_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    None => DeleteOutcome::NotFound,
                    Some(r) if r.legal_hold => DeleteOutcome::Held,
                    Some(_) => DeleteOutcome::AlreadyDeleted,
                })
            }

            async fn set_legal_hold(
                &self,
                contact_id: &str,
                hold: bool,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(SET_HOLD)
                    .bind(contact_id)
                    .bind(hold)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn purge_candidates(
                &self,
                now_ms: i64,
                max: u32,
            ) -> Result<Vec<Entry>, StoreError> {
                let rows = sqlx::query_as::<_, EntryRow>(PURGE_CANDIDATES)
                    .bind(now_ms)
                    .bind(limit(max))
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    if let Some(e) = self.with_statements(Some(r)).await? {
                        out.push(e);
                    }
                }
                Ok(out)
            }

            async fn mark_purged(&self, contact_id: &str, now_ms: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(MARK_PURGED)
                    .bind(contact_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() == 1 {
                    sqlx::query(MARK_STATEMENTS_PURGED)
                        .bind(contact_id)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(r.rows_affected() == 1)
            }

            async fn enqueue_webhook(
                &self,
                url: &str,
                event: &str,
                payload: &serde_json::Value,
                now_ms: i64,
            ) -> Result<i64, StoreError> {
                let id: i64 = sqlx::query_scalar(ENQUEUE)
                    .bind(url)
                    .bind(event)
                    .bind(Json(payload))
                    .bind(now_ms)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(id)
            }

            async fn claim_webhooks(
                &self,
                now_ms: i64,
                lease_ms: i64,
                max: u32,
            ) -> Result<Vec<Delivery>, StoreError> {
                let mut rows = sqlx::query_as::<_, DeliveryRow>($claim)
                    .bind(now_ms)
                    .bind(now_ms.saturating_add(lease_ms))
                    .bind(limit(max))
                    .fetch_all(&self.pool)
                    .await?;
                // RETURNING gives no order; hand them out oldest first.
                rows.sort_by_key(|r| (r.created_ms, r.id));
                Ok(rows.into_iter().map(Delivery::from).collect())
            }

            async fn webhook_delivered(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
                let r = sqlx::query(DELIVERED)
                    .bind(id)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn webhook_failed(
                &self,
                id: i64,
                next_attempt_ms: i64,
                error: &str,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(DELIVERY_FAILED)
                    .bind(id)
                    .bind(next_attempt_ms)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn webhook(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
                Ok(sqlx::query_as::<_, DeliveryRow>(GET_DELIVERY)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(Delivery::from))
            }

            async fn pending_webhooks(&self) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(PENDING_DELIVERIES)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn count(&self) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(COUNT_ENTRIES)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn apply_migrations(&self, m: &Migrator) -> Result<(), StoreError> {
                let mut conn = self.pool.acquire().await?;
                let r = m.run(&mut *conn).await;
                if r.is_err() {
                    // A failed run returns without releasing PostgreSQL's advisory migration
                    // lock, which lives as long as the session: end the session with it, or
                    // the next migration on this pool (or on another node) waits forever.
                    conn.close_on_drop();
                }
                r.map_err(|source| StoreError::Migrate {
                    url: self.url.clone(),
                    source,
                })
            }
        }
    };
}

backend!(
    SqliteCatalog,
    Sqlite,
    SqlitePool,
    "1",
    CLAIM_SQLITE,
    true,
    crate::transcripts::push_text_filter_sqlite
);
backend!(
    PostgresCatalog,
    Postgres,
    PgPool,
    "TRUE",
    CLAIM_POSTGRES,
    false,
    crate::transcripts::push_text_filter_postgres
);

impl SqliteCatalog {
    async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::io("create catalog dir", dir, e))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Connect {
                url: url.clone(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The catalog is the upload journal: a committed state survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect {
                url: url.clone(),
                source,
            })?;
        let c = SqliteCatalog { pool, url };
        c.apply_migrations(&SQLITE_MIGRATIONS).await?;
        Ok(c)
    }

    /// The journal mode in force (`wal` once opened).
    async fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?)
    }
}

impl PostgresCatalog {
    async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let c = PostgresCatalog { pool, url: shown };
        c.apply_migrations(&POSTGRES_MIGRATIONS).await?;
        Ok(c)
    }
}

/// The recordings catalog (see the module docs). Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub enum Catalog {
    Sqlite(SqliteCatalog),
    Postgres(PostgresCatalog),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Catalog::Sqlite($c) => $e,
            Catalog::Postgres($c) => $e,
        }
    };
}

impl Catalog {
    /// Opens (and for SQLite creates) the catalog and migrates it to this version's schema.
    /// Errors name the URL, its password masked.
    pub async fn open(url: &str) -> Result<Catalog, StoreError> {
        match CatalogUrl::parse(url)? {
            CatalogUrl::Sqlite(path) => Ok(Catalog::Sqlite(SqliteCatalog::open(&path).await?)),
            CatalogUrl::Postgres(url) => Ok(Catalog::Postgres(PostgresCatalog::open(&url).await?)),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Catalog::Sqlite(_) => "sqlite",
            Catalog::Postgres(_) => "postgres",
        }
    }

    /// The URL opened, password masked.
    pub fn url(&self) -> &str {
        dispatch!(self, c => &c.url)
    }

    /// SQLite's journal mode (`wal`); `None` for PostgreSQL.
    pub async fn sqlite_journal_mode(&self) -> Result<Option<String>, StoreError> {
        match self {
            Catalog::Sqlite(c) => Ok(Some(c.journal_mode().await?)),
            Catalog::Postgres(_) => Ok(None),
        }
    }

    /// Runs `migrator` (beyond the embedded migrations); used to prove that a failing
    /// migration leaves the previous schema in place.
    #[doc(hidden)]
    pub async fn apply_migrations(&self, migrator: &Migrator) -> Result<(), StoreError> {
        dispatch!(self, c => c.apply_migrations(migrator).await)
    }

    /// Inserts the entry or refreshes its call facts. A stored or deleted entry keeps its
    /// state, a held one its hold, a deleted one its deletion.
    pub async fn upsert(&self, e: &Entry) -> Result<(), StoreError> {
        self.upsert_many(std::slice::from_ref(e)).await
    }

    /// [`Catalog::upsert`] for many entries in one transaction.
    pub async fn upsert_many(&self, entries: &[Entry]) -> Result<(), StoreError> {
        dispatch!(self, c => c.upsert_many(entries).await)
    }

    /// Inserts or refreshes a statement and marks its contact as having one.
    pub async fn upsert_statement(&self, s: &Statement) -> Result<(), StoreError> {
        dispatch!(self, c => c.upsert_statement(s).await)
    }

    /// One entry with its statements.
    pub async fn get(&self, contact_id: &str) -> Result<Option<Entry>, StoreError> {
        dispatch!(self, c => c.get(contact_id).await)
    }

    /// The entry whose customer or agent leg had this SIP Call-ID (the latest, if reused).
    pub async fn by_call_id(&self, call_id: &str) -> Result<Option<Entry>, StoreError> {
        dispatch!(self, c => c.by_call_id(call_id).await)
    }

    /// The recorded statements with this statement id, oldest first.
    pub async fn statements_by_id(&self, statement_id: &str) -> Result<Vec<Statement>, StoreError> {
        dispatch!(self, c => c.statements_by_id(statement_id).await)
    }

    /// Entries of `node` in `state`, oldest first: what a restarting node must resume.
    pub async fn by_node_state(
        &self,
        node: &str,
        state: State,
        max: u32,
    ) -> Result<Vec<Entry>, StoreError> {
        dispatch!(self, c => c.by_node_state(node, state, max).await)
    }

    /// Statements of `node`'s contacts in `state`, oldest first.
    pub async fn statements_by_node_state(
        &self,
        node: &str,
        state: State,
        max: u32,
    ) -> Result<Vec<Statement>, StoreError> {
        dispatch!(self, c => c.statements_by_node_state(node, state, max).await)
    }

    /// Sets the state; false when there is no such entry.
    pub async fn set_state(
        &self,
        contact_id: &str,
        state: State,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.set_state(contact_id, state, now_ms).await)
    }

    /// Records the closed spool file (size and hash) and its state (finished or interrupted).
    /// False when the entry is missing or already stored or deleted.
    pub async fn set_file(
        &self,
        contact_id: &str,
        state: State,
        size: i64,
        sha256: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.set_file(SET_FILE, contact_id, state, size, sha256, now_ms).await)
    }

    /// The file is in storage under `key`, verified. False when missing or deleted.
    pub async fn mark_stored(
        &self,
        contact_id: &str,
        key: &str,
        size: i64,
        sha256: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.mark_stored(MARK_STORED, contact_id, key, size, sha256, now_ms).await)
    }

    /// [`Catalog::set_file`] for a statement (by its file id).
    pub async fn set_statement_file(
        &self,
        id: &str,
        state: State,
        size: i64,
        sha256: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.set_file(SET_STATEMENT_FILE, id, state, size, sha256, now_ms).await)
    }

    /// [`Catalog::mark_stored`] for a statement (by its file id).
    pub async fn mark_statement_stored(
        &self,
        id: &str,
        key: &str,
        size: i64,
        sha256: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.mark_stored(MARK_STATEMENT_STORED, id, key, size, sha256, now_ms).await)
    }

    /// One page of entries matching `q`.
    pub async fn search(&self, q: &Query) -> Result<Page, StoreError> {
        dispatch!(self, c => c.search(q).await)
    }

    /// Soft delete: hidden from searches from now on, purged by the retention job.
    pub async fn soft_delete(
        &self,
        contact_id: &str,
        now_ms: i64,
    ) -> Result<DeleteOutcome, StoreError> {
        dispatch!(self, c => c.soft_delete(contact_id, now_ms).await)
    }

    /// Sets or clears the legal hold; false when there is no such entry.
    pub async fn set_legal_hold(
        &self,
        contact_id: &str,
        hold: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.set_legal_hold(contact_id, hold, now_ms).await)
    }

    /// Entries whose audio may be purged at `now_ms`: soft-deleted or past retention, not
    /// held, not purged yet, not being recorded. With their statements.
    pub async fn purge_candidates(&self, now_ms: i64, max: u32) -> Result<Vec<Entry>, StoreError> {
        dispatch!(self, c => c.purge_candidates(now_ms, max).await)
    }

    /// The audio is gone from storage: the entry (and its statements) become `deleted`.
    /// False, changing nothing, when the entry is held (a hold set after the candidates
    /// were listed wins), missing or already purged.
    pub async fn mark_purged(&self, contact_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self, c => c.mark_purged(contact_id, now_ms).await)
    }

    /// Queues a webhook delivery, due at once; returns its id.
    pub async fn enqueue_webhook(
        &self,
        url: &str,
        event: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        dispatch!(self, c => c.enqueue_webhook(url, event, payload, now_ms).await)
    }

    /// Claims up to `max` due deliveries for `lease_ms`: their attempt count goes up and they
    /// are not due again until the lease ends, unless reported delivered or failed first.
    pub async fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, c => c.claim_webhooks(now_ms, lease_ms, max).await)
    }

    /// The receiver acknowledged the delivery.
    pub async fn webhook_delivered(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self, c => c.webhook_delivered(id, now_ms).await)
    }

    /// The attempt failed; try again at `next_attempt_ms`.
    pub async fn webhook_failed(
        &self,
        id: i64,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.webhook_failed(id, next_attempt_ms, error).await)
    }

    /// One delivery by id.
    pub async fn webhook(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
        dispatch!(self, c => c.webhook(id).await)
    }

    /// Deliveries not yet acknowledged.
    pub async fn pending_webhooks(&self) -> Result<i64, StoreError> {
        dispatch!(self, c => c.pending_webhooks().await)
    }

    /// Entries in the catalog, deleted ones included.
    pub async fn count(&self) -> Result<i64, StoreError> {
        dispatch!(self, c => c.count().await)
    }

    /// Refreshes the planner's statistics (`PRAGMA optimize` / `ANALYZE`), so searches pick
    /// the index that narrows most. Cheap when little changed; run it after bulk loads and
    /// now and then (daily) in operation.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        match self {
            Catalog::Sqlite(c) => {
                sqlx::raw_sql("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
                    .execute(&c.pool)
                    .await?;
            }
            Catalog::Postgres(c) => {
                sqlx::raw_sql("ANALYZE recordings; ANALYZE statements;")
                    .execute(&c.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Closes the pool (waits for connections in use to return).
    pub async fn close(&self) {
        dispatch!(self, c => c.pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            CatalogUrl::parse("tapir.db").unwrap(),
            CatalogUrl::Sqlite("tapir.db".into())
        );
        assert_eq!(
            CatalogUrl::parse("sqlite:///var/lib/tapir/c.db").unwrap(),
            CatalogUrl::Sqlite("/var/lib/tapir/c.db".into())
        );
        assert_eq!(
            CatalogUrl::parse("sqlite:c.db?mode=rwc").unwrap(),
            CatalogUrl::Sqlite("c.db".into())
        );
        assert!(matches!(
            CatalogUrl::parse("postgresql://u@h/db").unwrap(),
            CatalogUrl::Postgres(_)
        ));
        for bad in ["mysql://h/db", "", "sqlite::memory:", "sqlite://"] {
            assert!(
                matches!(CatalogUrl::parse(bad), Err(StoreError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://tapir:s3cret@db:5432/tapir"),
            "postgres://tapir:***@db:5432/tapir"
        );
        assert_eq!(redact_url("postgres://db/tapir"), "postgres://db/tapir");
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
        let e = CatalogUrl::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw@"), "{e}");
    }
}
