//! Transcripts in the catalog: the transcription job of each recording (the journal a
//! restarting node resumes from), the phrases of each channel, full-text search over them
//! with highlighted snippets, and a per-call summary (average sentiment, words per minute of
//! each speaker).
//!
//! Search runs on SQLite's FTS5 (an external-content index over `transcript_phrases`, kept
//! in step by triggers) and on PostgreSQL's `tsvector` (a generated column with a GIN
//! index), both folding case without stemming. A search text is reduced to its words
//! (letters and digits; everything else separates words and nothing is syntax), and a phrase
//! matches when it holds every word. Snippets come from `snippet()` and `ts_headline()`
//! with control characters as markers, then are HTML-escaped here with the markers turned
//! into `<mark>`: text from an engine can never inject markup into a page.
//!
//! Soft-deleted recordings are left out of searches; a purged one loses its transcript
//! (a trigger on `recordings.purged_at_ms`).

use serde::{Deserialize, Serialize};
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::types::Json;
use sqlx::QueryBuilder;

use crate::catalog::{Catalog, PostgresCatalog, SqliteCatalog};
use crate::error::StoreError;

/// Most words a search text may have.
pub const MAX_SEARCH_WORDS: usize = 16;
/// Most hits a transcript search returns.
pub const MAX_HITS: u32 = 1000;
const MARK_START: char = '\u{2}';
const MARK_END: char = '\u{3}';

/// A recording's transcription job, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TranscriptJob {
    pub contact_id: String,
    /// The node that runs it (resumes it after a restart).
    pub node: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub next_at_ms: i64,
    pub error: Option<String>,
    /// The engine configured when the job was queued (`pocketsphinx`, `http`).
    pub engine: String,
    pub language: String,
    pub updated_ms: i64,
}

/// One phrase of a stored transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhraseRow {
    /// `customer` or `agent`.
    pub speaker: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    /// Sentiment score in −1..=1, if scored.
    pub sentiment: Option<f64>,
    /// The words with their times, as the transcript crate serializes them.
    pub words: serde_json::Value,
}

/// The per-call figures of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TranscriptSummary {
    pub contact_id: String,
    pub engine: String,
    pub language: String,
    pub phrase_count: i32,
    /// Mean sentiment of the scored phrases.
    pub sentiment_avg: Option<f64>,
    pub customer_wpm: Option<f64>,
    pub agent_wpm: Option<f64>,
    pub created_ms: i64,
}

/// A stored transcript: its summary and its phrases ordered by start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTranscript {
    pub summary: TranscriptSummary,
    pub phrases: Vec<PhraseRow>,
}

/// A phrase that matched a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptHit {
    pub contact_id: String,
    pub speaker: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The matching words wrapped in `<mark>…</mark>`, everything else HTML-escaped.
    pub snippet_html: String,
}

#[derive(sqlx::FromRow)]
struct PhraseDbRow {
    speaker: String,
    start_ms: i64,
    end_ms: i64,
    text: String,
    sentiment: Option<f64>,
    words: Json<serde_json::Value>,
}

#[derive(sqlx::FromRow)]
struct HitRow {
    contact_id: String,
    speaker: String,
    start_ms: i64,
    end_ms: i64,
    snippet: String,
}

/// The words of a search text, lower-cased; errors name `param`.
pub(crate) fn search_words(text: &str, param: &'static str) -> Result<Vec<String>, StoreError> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let bad = |reason: &str| StoreError::BadQuery {
        param,
        reason: reason.to_string(),
    };
    if words.is_empty() {
        return Err(bad("no word to search for"));
    }
    if words.len() > MAX_SEARCH_WORDS {
        return Err(bad("more than 16 words"));
    }
    if words.iter().any(|w| w.chars().count() > 64) {
        return Err(bad("a word longer than 64 characters"));
    }
    Ok(words)
}

/// An FTS5 query matching phrases holding every word: each word quoted (so nothing in it is
/// syntax), juxtaposed (AND).
fn fts5_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `AND contact_id IN (…phrases matching every word…)` for [`crate::Query::text`].
pub(crate) fn push_text_filter_sqlite(qb: &mut QueryBuilder<Sqlite>, words: &[String]) {
    qb.push(
        " AND contact_id IN (SELECT p.contact_id FROM transcript_fts \
         JOIN transcript_phrases p ON p.id = transcript_fts.rowid WHERE transcript_fts MATCH ",
    )
    .push_bind(fts5_query(words))
    .push(")");
}

/// The PostgreSQL twin of [`push_text_filter_sqlite`].
pub(crate) fn push_text_filter_postgres(qb: &mut QueryBuilder<Postgres>, words: &[String]) {
    qb.push(
        " AND contact_id IN (SELECT contact_id FROM transcript_phrases \
         WHERE tsv @@ plainto_tsquery('simple', ",
    )
    .push_bind(words.join(" "))
    .push("))");
}

/// Removes control characters (the snippet markers among them) from text to be stored.
fn clean_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// HTML-escapes a snippet and turns its markers into `<mark>` elements.
fn snippet_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            MARK_START => out.push_str("<mark>"),
            MARK_END => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const UPSERT_JOB: &str = "INSERT INTO transcript_jobs (contact_id, node, state, attempts, \
     next_at_ms, error, engine, language, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (contact_id) DO UPDATE SET node = excluded.node, state = excluded.state, \
     attempts = excluded.attempts, next_at_ms = excluded.next_at_ms, error = excluded.error, \
     engine = excluded.engine, language = excluded.language, updated_ms = excluded.updated_ms";
const INSERT_JOB: &str = "INSERT INTO transcript_jobs (contact_id, node, state, attempts, \
     next_at_ms, error, engine, language, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (contact_id) DO NOTHING";
const JOB_COLS: &str =
    "contact_id, node, state, attempts, next_at_ms, error, engine, language, updated_ms";
const UPSERT_SUMMARY: &str = "INSERT INTO transcripts (contact_id, engine, language, \
     phrase_count, sentiment_avg, customer_wpm, agent_wpm, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (contact_id) DO UPDATE SET \
     engine = excluded.engine, language = excluded.language, \
     phrase_count = excluded.phrase_count, sentiment_avg = excluded.sentiment_avg, \
     customer_wpm = excluded.customer_wpm, agent_wpm = excluded.agent_wpm, \
     created_ms = excluded.created_ms";
const SUMMARY_COLS: &str = "contact_id, engine, language, phrase_count, sentiment_avg, \
     customer_wpm, agent_wpm, created_ms";
const INSERT_PHRASE: &str = "INSERT INTO transcript_phrases (contact_id, speaker, start_ms, \
     end_ms, text, sentiment, words) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const PHRASES_OF: &str = "SELECT speaker, start_ms, end_ms, text, sentiment, words \
     FROM transcript_phrases WHERE contact_id = $1 ORDER BY start_ms, id";

const HITS_SQLITE: &str = "SELECT p.contact_id, p.speaker, p.start_ms, p.end_ms, \
     snippet(transcript_fts, 0, char(2), char(3), '…', 16) AS snippet \
     FROM transcript_fts JOIN transcript_phrases p ON p.id = transcript_fts.rowid \
     JOIN recordings r ON r.contact_id = p.contact_id \
     WHERE transcript_fts MATCH $1 AND r.deleted_at_ms IS NULL \
     ORDER BY r.start_ms DESC, p.contact_id, p.start_ms LIMIT $2";
const HITS_POSTGRES: &str = "SELECT p.contact_id, p.speaker, p.start_ms, p.end_ms, \
     ts_headline('simple', p.text, q, $3) AS snippet \
     FROM transcript_phrases p, plainto_tsquery('simple', $1) q, recordings r \
     WHERE p.tsv @@ q AND r.contact_id = p.contact_id AND r.deleted_at_ms IS NULL \
     ORDER BY r.start_ms DESC, p.contact_id, p.start_ms LIMIT $2";

macro_rules! transcript_backend {
    ($name:ident, $db:ty, $begin:literal) => {
        impl $name {
            async fn save_job(
                &self,
                sql: &'static str,
                j: &TranscriptJob,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(sql)
                    .bind(&j.contact_id)
                    .bind(&j.node)
                    .bind(&j.state)
                    .bind(j.attempts)
                    .bind(j.next_at_ms)
                    .bind(&j.error)
                    .bind(&j.engine)
                    .bind(&j.language)
                    .bind(j.updated_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn transcript_job(
                &self,
                contact_id: &str,
            ) -> Result<Option<TranscriptJob>, StoreError> {
                let sql = format!("SELECT {JOB_COLS} FROM transcript_jobs WHERE contact_id = $1");
                Ok(sqlx::query_as::<_, TranscriptJob>(sqlx::AssertSqlSafe(sql))
                    .bind(contact_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn stored_without_transcript_job(
                &self,
                node: &str,
                since_ms: i64,
                max: u32,
            ) -> Result<Vec<String>, StoreError> {
                // The (state, start_ms) index bounds the walk to the window.
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT r.contact_id FROM recordings r WHERE r.state = 'stored' \
                     AND r.start_ms >= $1 AND r.node = $2 AND r.deleted_at_ms IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM transcript_jobs j \
                     WHERE j.contact_id = r.contact_id) \
                     ORDER BY r.start_ms DESC, r.contact_id LIMIT $3",
                )
                .bind(since_ms)
                .bind(node)
                .bind(i64::from(max))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn active_transcript_jobs(
                &self,
                node: &str,
            ) -> Result<Vec<TranscriptJob>, StoreError> {
                let sql = format!(
                    "SELECT {JOB_COLS} FROM transcript_jobs WHERE node = $1 \
                     AND state IN ('queued', 'running') ORDER BY next_at_ms, contact_id"
                );
                Ok(sqlx::query_as::<_, TranscriptJob>(sqlx::AssertSqlSafe(sql))
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn store_transcript(&self, t: &StoredTranscript) -> Result<(), StoreError> {
                let s = &t.summary;
                // SQLite: take the write lock at once; a deferred transaction that read first
                // could not upgrade after another writer committed, and would fail at once.
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("DELETE FROM transcript_phrases WHERE contact_id = $1")
                    .bind(&s.contact_id)
                    .execute(&mut *tx)
                    .await?;
                for p in &t.phrases {
                    sqlx::query(INSERT_PHRASE)
                        .bind(&s.contact_id)
                        .bind(&p.speaker)
                        .bind(p.start_ms)
                        .bind(p.end_ms)
                        .bind(clean_text(&p.text))
                        .bind(p.sentiment)
                        .bind(Json(&p.words))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(UPSERT_SUMMARY)
                    .bind(&s.contact_id)
                    .bind(&s.engine)
                    .bind(&s.language)
                    .bind(t.phrases.len() as i32)
                    .bind(s.sentiment_avg)
                    .bind(s.customer_wpm)
                    .bind(s.agent_wpm)
                    .bind(s.created_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn transcript(
                &self,
                contact_id: &str,
            ) -> Result<Option<StoredTranscript>, StoreError> {
                let sql = format!("SELECT {SUMMARY_COLS} FROM transcripts WHERE contact_id = $1");
                let Some(summary) =
                    sqlx::query_as::<_, TranscriptSummary>(sqlx::AssertSqlSafe(sql))
                        .bind(contact_id)
                        .fetch_optional(&self.pool)
                        .await?
                else {
                    return Ok(None);
                };
                let phrases = sqlx::query_as::<_, PhraseDbRow>(PHRASES_OF)
                    .bind(contact_id)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|r| PhraseRow {
                        speaker: r.speaker,
                        start_ms: r.start_ms,
                        end_ms: r.end_ms,
                        text: r.text,
                        sentiment: r.sentiment,
                        words: r.words.0,
                    })
                    .collect();
                Ok(Some(StoredTranscript { summary, phrases }))
            }

            async fn transcript_summaries(
                &self,
                contact_ids: &[String],
            ) -> Result<Vec<TranscriptSummary>, StoreError> {
                if contact_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {SUMMARY_COLS} FROM transcripts WHERE contact_id IN ("
                ));
                let mut sep = qb.separated(", ");
                for id in contact_ids {
                    sep.push_bind(id.clone());
                }
                qb.push(") ORDER BY contact_id");
                Ok(qb
                    .build_query_as::<TranscriptSummary>()
                    .fetch_all(&self.pool)
                    .await?)
            }
        }
    };
}

transcript_backend!(SqliteCatalog, Sqlite, "BEGIN IMMEDIATE");
transcript_backend!(PostgresCatalog, Postgres, "BEGIN");

const NODE_SEEN: &str = "INSERT INTO nodes (node, seen_ms) VALUES ($1, $2) \
     ON CONFLICT (node) DO UPDATE SET seen_ms = excluded.seen_ms";

/// The jobs of nodes last seen before `$2`, at most `$4`, handed to node `$1` at `$3`.
/// PostgreSQL: the rows are locked as they are picked and rows another node is taking are
/// skipped, so two nodes adopting at once never take the same job. (SQLite has one writer.)
fn adopt_sql(lock: &str) -> String {
    format!(
        "UPDATE transcript_jobs SET node = $1, updated_ms = $3 WHERE contact_id IN \
         (SELECT contact_id FROM transcript_jobs WHERE state IN ('queued', 'running') \
         AND node <> $1 AND node IN (SELECT node FROM nodes WHERE seen_ms < $2) \
         ORDER BY next_at_ms, contact_id LIMIT $4{lock}) RETURNING {JOB_COLS}"
    )
}

macro_rules! node_backend {
    ($name:ident, $lock:literal) => {
        impl $name {
            async fn node_seen(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
                sqlx::query(NODE_SEEN)
                    .bind(node)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn adopt_transcript_jobs(
                &self,
                node: &str,
                seen_before_ms: i64,
                now_ms: i64,
                max: u32,
            ) -> Result<Vec<TranscriptJob>, StoreError> {
                let mut jobs =
                    sqlx::query_as::<_, TranscriptJob>(sqlx::AssertSqlSafe(adopt_sql($lock)))
                        .bind(node)
                        .bind(seen_before_ms)
                        .bind(now_ms)
                        .bind(i64::from(max))
                        .fetch_all(&self.pool)
                        .await?;
                jobs.sort_by(|a, b| {
                    (a.next_at_ms, &a.contact_id).cmp(&(b.next_at_ms, &b.contact_id))
                });
                Ok(jobs)
            }
        }
    };
}

node_backend!(SqliteCatalog, "");
node_backend!(PostgresCatalog, " FOR UPDATE SKIP LOCKED");

/// Most snippets [`Catalog::transcript_snippets`] returns per recording.
pub const MAX_SNIPPETS: usize = 20;

const SNIPPETS_SQLITE: &str = "SELECT p.contact_id, p.speaker, p.start_ms, p.end_ms, \
     snippet(transcript_fts, 0, char(2), char(3), '…', 16) AS snippet \
     FROM transcript_fts JOIN transcript_phrases p ON p.id = transcript_fts.rowid \
     WHERE transcript_fts MATCH ";
const SNIPPETS_POSTGRES: &str = "SELECT p.contact_id, p.speaker, p.start_ms, p.end_ms, \
     ts_headline('simple', p.text, q, ";

macro_rules! on {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Catalog::Sqlite($c) => $e,
            Catalog::Postgres($c) => $e,
        }
    };
}

impl Catalog {
    /// Inserts or updates a job row (every transition of the scheduler).
    pub async fn save_transcript_job(&self, job: &TranscriptJob) -> Result<(), StoreError> {
        on!(self, c => c.save_job(UPSERT_JOB, job).await.map(|_| ()))
    }

    /// Inserts a job row unless the recording already has one (of any state): false then.
    /// The finisher calls this before queueing, so a recording stored twice (a restart's
    /// reconciliation) is transcribed once.
    pub async fn insert_transcript_job(&self, job: &TranscriptJob) -> Result<bool, StoreError> {
        on!(self, c => c.save_job(INSERT_JOB, job).await)
    }

    pub async fn transcript_job(
        &self,
        contact_id: &str,
    ) -> Result<Option<TranscriptJob>, StoreError> {
        on!(self, c => c.transcript_job(contact_id).await)
    }

    /// Recordings `node` stored that started at or after `since_ms`, are not deleted and have
    /// no transcription job, newest first, at most `max`. A node checks these at start, so a
    /// recording stored just before a crash, before its job row was written, still gets one
    /// (newest first: those are the ones a bound must not leave out).
    pub async fn stored_without_transcript_job(
        &self,
        node: &str,
        since_ms: i64,
        max: u32,
    ) -> Result<Vec<String>, StoreError> {
        on!(self, c => c.stored_without_transcript_job(node, since_ms, max).await)
    }

    /// Node `node` is alive at `now_ms` (its heartbeat, in the `nodes` table).
    pub async fn node_seen(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        on!(self, c => c.node_seen(node, now_ms).await)
    }

    /// Hands `node` the queued and running jobs (at most `max`, due first) of nodes whose
    /// last heartbeat is older than `seen_before_ms`: nodes gone for good leave no
    /// recording untranscribed. A node that never wrote a heartbeat is never adopted from.
    /// The rows now name `node`; they are returned as they were otherwise (a running one is
    /// for the adopter to queue again, as after a restart).
    pub async fn adopt_transcript_jobs(
        &self,
        node: &str,
        seen_before_ms: i64,
        now_ms: i64,
        max: u32,
    ) -> Result<Vec<TranscriptJob>, StoreError> {
        on!(self, c => c.adopt_transcript_jobs(node, seen_before_ms, now_ms, max).await)
    }

    /// Queued and running jobs of `node`, due first: what it resumes after a restart.
    pub async fn active_transcript_jobs(
        &self,
        node: &str,
    ) -> Result<Vec<TranscriptJob>, StoreError> {
        on!(self, c => c.active_transcript_jobs(node).await)
    }

    /// Stores (or replaces) a recording's transcript and its summary in one transaction.
    /// `summary.phrase_count` is taken from the phrases; control characters in the text are
    /// replaced by spaces.
    pub async fn store_transcript(&self, t: &StoredTranscript) -> Result<(), StoreError> {
        on!(self, c => c.store_transcript(t).await)
    }

    /// A recording's transcript, phrases ordered by start.
    pub async fn transcript(
        &self,
        contact_id: &str,
    ) -> Result<Option<StoredTranscript>, StoreError> {
        on!(self, c => c.transcript(contact_id).await)
    }

    /// The summaries (sentiment average, words per minute) of those of `contact_ids` that
    /// have a transcript, for a page of search results.
    pub async fn transcript_summaries(
        &self,
        contact_ids: &[String],
    ) -> Result<Vec<TranscriptSummary>, StoreError> {
        on!(self, c => c.transcript_summaries(contact_ids).await)
    }

    /// For a page of search results: the phrases of each of `contact_ids` that hold every
    /// word of `text`, with highlighted snippets (see the module docs), at most `per_contact`
    /// (1..=[`MAX_SNIPPETS`]) per recording, ordered by recording and start.
    pub async fn transcript_snippets(
        &self,
        text: &str,
        contact_ids: &[String],
        per_contact: usize,
    ) -> Result<Vec<TranscriptHit>, StoreError> {
        let words = search_words(text, "text")?;
        if contact_ids.is_empty() {
            return Ok(Vec::new());
        }
        let per_contact = per_contact.clamp(1, MAX_SNIPPETS);
        let rows: Vec<HitRow> = match self {
            Catalog::Sqlite(c) => {
                let mut qb = QueryBuilder::<Sqlite>::new(SNIPPETS_SQLITE);
                qb.push_bind(fts5_query(&words))
                    .push(" AND p.contact_id IN (");
                let mut sep = qb.separated(", ");
                for id in contact_ids {
                    sep.push_bind(id.clone());
                }
                qb.push(") ORDER BY p.contact_id, p.start_ms, p.id");
                qb.build_query_as().fetch_all(&c.pool).await?
            }
            Catalog::Postgres(c) => {
                let mut qb = QueryBuilder::<Postgres>::new(SNIPPETS_POSTGRES);
                qb.push_bind(format!(
                    "StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=8, \
                     HighlightAll=false"
                ))
                .push(") AS snippet FROM transcript_phrases p, plainto_tsquery('simple', ")
                .push_bind(words.join(" "))
                .push(") q WHERE p.tsv @@ q AND p.contact_id IN (");
                let mut sep = qb.separated(", ");
                for id in contact_ids {
                    sep.push_bind(id.clone());
                }
                qb.push(") ORDER BY p.contact_id, p.start_ms, p.id");
                qb.build_query_as().fetch_all(&c.pool).await?
            }
        };
        let mut out: Vec<TranscriptHit> = Vec::new();
        let mut run = 0;
        for r in rows {
            run = match out.last() {
                Some(last) if last.contact_id == r.contact_id => run + 1,
                _ => 1,
            };
            if run > per_contact {
                continue;
            }
            out.push(TranscriptHit {
                contact_id: r.contact_id,
                speaker: r.speaker,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                snippet_html: snippet_html(&r.snippet),
            });
        }
        Ok(out)
    }

    /// Phrases holding every word of `text`, newest recording first, with highlighted
    /// snippets (see the module docs). `limit` 0 means 50; above [`MAX_HITS`] is refused.
    pub async fn search_transcripts(
        &self,
        text: &str,
        limit: u32,
    ) -> Result<Vec<TranscriptHit>, StoreError> {
        let words = search_words(text, "q")?;
        let limit = match limit {
            0 => 50,
            n if n > MAX_HITS => {
                return Err(StoreError::BadQuery {
                    param: "limit",
                    reason: "above 1000".into(),
                })
            }
            n => n,
        };
        let rows: Vec<HitRow> = match self {
            Catalog::Sqlite(c) => {
                sqlx::query_as(HITS_SQLITE)
                    .bind(fts5_query(&words))
                    .bind(i64::from(limit))
                    .fetch_all(&c.pool)
                    .await?
            }
            Catalog::Postgres(c) => {
                sqlx::query_as(HITS_POSTGRES)
                    .bind(words.join(" "))
                    .bind(i64::from(limit))
                    .bind(format!(
                        "StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=8, \
                         HighlightAll=false"
                    ))
                    .fetch_all(&c.pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| TranscriptHit {
                contact_id: r.contact_id,
                speaker: r.speaker,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                snippet_html: snippet_html(&r.snippet),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_words_and_never_syntax() {
        let w = search_words("  Invoice, \"NEAR\"(order) OR x* -y ", "q").unwrap();
        assert_eq!(w, ["invoice", "near", "order", "or", "x", "y"]);
        assert_eq!(
            fts5_query(&w),
            "\"invoice\" \"near\" \"order\" \"or\" \"x\" \"y\""
        );
        for bad in ["", "  ", "!!! ???"] {
            assert!(matches!(
                search_words(bad, "text"),
                Err(StoreError::BadQuery { param: "text", .. })
            ));
        }
        assert!(search_words(&"a ".repeat(17), "q").is_err());
    }

    #[test]
    fn snippets_are_escaped_and_marked() {
        assert_eq!(
            snippet_html("<b>\u{2}order\u{3}</b> & \"x\""),
            "&lt;b&gt;<mark>order</mark>&lt;/b&gt; &amp; &quot;x&quot;"
        );
        assert_eq!(clean_text("a\u{2}b\nc"), "a b c");
    }
}
