//! The catalog's records: one [`Entry`] per contact, its [`Statement`]s, and webhook
//! [`Delivery`]s; plus their mapping from the recorder's JSON sidecar.

use recorder::{RecordingMetadata, Segment};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Where a recording is in its life. Stored as lower-case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The call is being recorded into the spool.
    Recording,
    /// The spool file is closed, synced and hashed; not yet in storage.
    Finished,
    /// The recording was cut short by a crash and repaired; not yet in storage.
    Interrupted,
    /// The file is in storage, verified by size and hash.
    Stored,
    /// The audio was purged from storage; the entry stays as a record of it.
    Deleted,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Recording,
        State::Finished,
        State::Interrupted,
        State::Stored,
        State::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Recording => "recording",
            State::Finished => "finished",
            State::Interrupted => "interrupted",
            State::Stored => "stored",
            State::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A file exists locally that still has to reach storage.
    pub fn awaits_upload(self) -> bool {
        matches!(self, State::Finished | State::Interrupted)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Packet counters of both channels, as the recorder counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub packets_customer: i64,
    pub lost_customer: i64,
    pub packets_agent: i64,
    pub lost_agent: i64,
    /// Datagrams the tap queue dropped before they reached the recorder.
    pub tap_drops: i64,
}

/// One catalogued contact: the call's facts, its file and where the file is.
///
/// Times are unix milliseconds. `duration_ms` is the length of the audio (recorded segments);
/// `call_duration_ms` the call time covered, stopped spans included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub contact_id: String,
    pub call_id_customer: Option<String>,
    pub call_id_agent: Option<String>,
    /// The node that recorded the contact (its spool holds the file until it is stored).
    pub node: String,
    pub start_ms: i64,
    pub answer_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub duration_ms: i64,
    pub call_duration_ms: i64,
    pub direction: String,
    pub route: String,
    pub station: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub queue: Option<String>,
    pub skill: Option<String>,
    pub customer_number: Option<String>,
    pub from_uri: String,
    pub to_uri: String,
    /// `wav` or `mp3`.
    pub format: String,
    pub codecs_customer: Vec<String>,
    pub codecs_agent: Vec<String>,
    /// The segment list with the reason each started and ended.
    pub segments: Vec<Segment>,
    /// The policy engine's decision log.
    pub decisions: Option<serde_json::Value>,
    /// Full per-channel statistics (the counters below are their searchable part).
    pub stats: serde_json::Value,
    pub counters: Counters,
    pub state: State,
    /// Why the recording stopped early, if it did.
    pub error: Option<String>,
    pub storage_key: Option<String>,
    pub size_bytes: Option<i64>,
    /// Lower-case hex SHA-256 of the file as stored.
    pub sha256: Option<String>,
    pub retention_days: Option<i32>,
    /// When retention ends; `None` keeps the recording until deleted.
    pub retain_until_ms: Option<i64>,
    /// Blocks deletion and purging while set.
    pub legal_hold: bool,
    /// Soft delete: hidden from searches, purged by the retention job.
    pub deleted_at_ms: Option<i64>,
    /// When the audio was removed from storage.
    pub purged_at_ms: Option<i64>,
    /// Maintained by the catalog: the contact has at least one recorded statement.
    pub has_statement: bool,
    pub updated_ms: i64,
    /// Conversation metrics of the recording (the `analysis` crate's `ConversationMetrics`);
    /// its longest silence, overtalk and talk-to-listen ratio are also searchable columns.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    /// Filled by look-ups of one entry ([`crate::Catalog::get`] and friends); empty in searches.
    #[serde(default)]
    pub statements: Vec<Statement>,
}

/// A recorded statement: its own file within a contact, with the id the flow gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Unique per file (the spool file's stem): one statement id may be recorded twice.
    pub id: String,
    /// The id the IVR or flow named the statement with (what a CRM keeps).
    pub statement_id: String,
    pub contact_id: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub format: String,
    pub segments: Vec<Segment>,
    pub state: State,
    pub storage_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub updated_ms: i64,
}

/// A webhook delivery waiting in the outbox, claimed for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub url: String,
    pub event: String,
    pub payload: serde_json::Value,
    pub created_ms: i64,
    /// Attempts made so far, this one included.
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub delivered_ms: Option<i64>,
}

/// What a soft delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// Already soft-deleted (or purged): nothing changed.
    AlreadyDeleted,
    /// On legal hold: refused.
    Held,
    NotFound,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(v: u64) -> i64 {
    ms(v)
}

/// The end of retention for a recording that started at `start_ms`, kept `days` days.
pub fn retain_until(start_ms: i64, days: Option<i32>) -> Option<i64> {
    let days = i64::from(days?.max(0));
    Some(start_ms.saturating_add(days.saturating_mul(86_400_000)))
}

/// The customer's number: the sidecar's own field, else the side of the call that is not the
/// station (the agent's phone).
fn customer_number(meta: &RecordingMetadata) -> Option<String> {
    if let Some(n) = &meta.customer_number {
        return Some(n.clone());
    }
    let n = match meta.station.as_deref() {
        Some(s) if s == meta.from => &meta.to,
        _ => &meta.from,
    };
    (!n.is_empty()).then(|| n.clone())
}

impl Entry {
    /// Maps a recorder sidecar to a catalog entry of `state`, recorded by `node` and known at `now_ms`.
    /// Storage fields start empty; retention is set by [`Entry::with_retention`].
    pub fn from_metadata(
        meta: &RecordingMetadata,
        node: &str,
        state: State,
        now_ms: i64,
    ) -> Result<Entry, StoreError> {
        if meta.contact_id.is_empty() {
            return Err(StoreError::Corrupt {
                contact_id: String::new(),
                reason: "metadata without a contact id".into(),
            });
        }
        Ok(Entry {
            contact_id: meta.contact_id.clone(),
            call_id_customer: meta.call_id_customer.clone(),
            call_id_agent: meta.call_id_agent.clone(),
            node: meta.node.clone().unwrap_or_else(|| node.to_string()),
            start_ms: ms(meta.start_unix_ms),
            answer_ms: meta.answer_unix_ms.map(ms),
            end_ms: meta.end_unix_ms.map(ms),
            duration_ms: ms(meta.duration_ms),
            call_duration_ms: ms(meta.call_duration_ms),
            direction: meta.direction.clone(),
            route: meta.route.clone(),
            station: meta.station.clone(),
            agent: meta.agent_id.clone(),
            team: meta.team.clone(),
            queue: meta.queue.clone(),
            skill: meta.skill.clone(),
            customer_number: customer_number(meta),
            from_uri: meta.from.clone(),
            to_uri: meta.to.clone(),
            format: meta.format.extension().to_string(),
            codecs_customer: meta.codecs_customer.clone(),
            codecs_agent: meta.codecs_agent.clone(),
            segments: meta.segments.clone(),
            decisions: meta.decisions.clone(),
            stats: serde_json::json!({ "customer": meta.customer, "agent": meta.agent }),
            counters: Counters {
                packets_customer: count(meta.customer.received),
                lost_customer: count(meta.customer.lost),
                packets_agent: count(meta.agent.received),
                lost_agent: count(meta.agent.lost),
                tap_drops: count(meta.tap_drops),
            },
            state,
            error: meta.error.clone(),
            storage_key: None,
            size_bytes: None,
            sha256: None,
            retention_days: None,
            retain_until_ms: None,
            legal_hold: false,
            deleted_at_ms: None,
            purged_at_ms: None,
            has_statement: false,
            updated_ms: now_ms,
            metrics: meta.metrics.clone(),
            statements: Vec::new(),
        })
    }

    /// Sets the retention period (days from the start of the call).
    pub fn with_retention(mut self, days: Option<i32>) -> Self {
        self.retention_days = days;
        self.retain_until_ms = retain_until(self.start_ms, days);
        self
    }
}

impl Statement {
    /// Maps a statement's sidecar; `id` names its file (unique), the sidecar names the
    /// statement id and the contact it belongs to.
    pub fn from_metadata(
        meta: &RecordingMetadata,
        id: &str,
        state: State,
        now_ms: i64,
    ) -> Result<Statement, StoreError> {
        let Some(statement_id) = meta.statement_id.clone() else {
            return Err(StoreError::Corrupt {
                contact_id: meta.contact_id.clone(),
                reason: "statement metadata without a statement id".into(),
            });
        };
        Ok(Statement {
            id: id.to_string(),
            statement_id,
            contact_id: meta.contact_id.clone(),
            start_ms: ms(meta.start_unix_ms),
            duration_ms: ms(meta.duration_ms),
            format: meta.format.extension().to_string(),
            segments: meta.segments.clone(),
            state,
            storage_key: None,
            size_bytes: None,
            sha256: None,
            updated_ms: now_ms,
        })
    }
}

/// How long recordings are kept: a default, per route, and per record policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRules {
    /// Days for recordings no other rule names; absent keeps them until deleted.
    #[serde(default)]
    pub days: Option<u32>,
    /// Days per route name.
    #[serde(default)]
    pub routes: std::collections::HashMap<String, u32>,
    /// Days per record policy name (the policy that recorded the call).
    #[serde(default)]
    pub policies: std::collections::HashMap<String, u32>,
}

impl RetentionRules {
    /// The days a recording is kept. A record policy that recorded the call decides before
    /// the route, the route before the default; when several record policies recorded it, the
    /// longest period wins (a recording kept for one reason is not deleted for another).
    pub fn days_for(&self, meta: &RecordingMetadata) -> Option<i32> {
        let mut names = Vec::new();
        if let Some(d) = &meta.decisions {
            record_policies(d, &mut names);
        }
        let by_policy = names.iter().filter_map(|n| self.policies.get(*n)).max();
        by_policy
            .or_else(|| self.routes.get(&meta.route))
            .or(self.days.as_ref())
            .map(|d| i32::try_from(*d).unwrap_or(i32::MAX))
    }
}

/// Names of the record policies a recording's decision log cites (the policies that
/// recorded it), in the order they appear; retention and transcription rules by policy key
/// on these.
pub fn record_policy_names(decisions: &serde_json::Value) -> Vec<&str> {
    let mut out = Vec::new();
    record_policies(decisions, &mut out);
    out
}

/// Names of the record policies a decision log cites (`{"source": "record_policy", "name": ..}`).
fn record_policies<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("source").and_then(|s| s.as_str()) == Some("record_policy") {
                if let Some(n) = m.get("name").and_then(|n| n.as_str()) {
                    out.push(n);
                }
            }
            for x in m.values() {
                record_policies(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| record_policies(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retention_prefers_the_policy_then_the_route_then_the_default() {
        let rules = RetentionRules {
            days: Some(30),
            routes: [("pbx".to_string(), 90)].into(),
            policies: [("complaints".to_string(), 365), ("sample".to_string(), 7)].into(),
        };
        let mut m = RecordingMetadata {
            route: "other".into(),
            ..Default::default()
        };
        assert_eq!(rules.days_for(&m), Some(30));
        m.route = "pbx".into();
        assert_eq!(rules.days_for(&m), Some(90));
        m.decisions = Some(serde_json::json!([{"actions": [
            {"reason": {"source": "record_policy", "name": "sample", "percentage": 10}},
            {"reason": {"source": "record_policy", "name": "complaints", "percentage": 100}}
        ]}]));
        assert_eq!(rules.days_for(&m), Some(365));
        assert_eq!(RetentionRules::default().days_for(&m), None);
    }

    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("Stored"), None);
    }

    #[test]
    fn metadata_maps_to_an_entry() {
        let mut meta = RecordingMetadata {
            contact_id: "c1".into(),
            call_id_customer: Some("a@x".into()),
            call_id_agent: Some("b@y".into()),
            from: "+4930123".into(),
            to: "201".into(),
            station: Some("201".into()),
            direction: "inbound".into(),
            route: "pbx".into(),
            start_unix_ms: 1_700_000_000_000,
            end_unix_ms: Some(1_700_000_060_000),
            duration_ms: 59_000,
            call_duration_ms: 60_000,
            format: recorder::Format::Mp3,
            agent_id: Some("anna".into()),
            team: Some("complaints".into()),
            tap_drops: 3,
            ..Default::default()
        };
        meta.customer.received = 3000;
        meta.customer.lost = 7;
        let e = Entry::from_metadata(&meta, "node-a", State::Finished, 5)
            .unwrap()
            .with_retention(Some(90));
        assert_eq!(e.customer_number.as_deref(), Some("+4930123"));
        assert_eq!(e.node, "node-a");
        assert_eq!(e.format, "mp3");
        assert_eq!(e.counters.packets_customer, 3000);
        assert_eq!(e.counters.lost_customer, 7);
        assert_eq!(e.counters.tap_drops, 3);
        assert_eq!(e.agent.as_deref(), Some("anna"));
        assert_eq!(e.retain_until_ms, Some(1_700_000_000_000 + 90 * 86_400_000));
        // An outbound call: the station placed it, so the customer is the called number.
        meta.from = "201".into();
        meta.to = "+4940999".into();
        let e = Entry::from_metadata(&meta, "n", State::Finished, 5).unwrap();
        assert_eq!(e.customer_number.as_deref(), Some("+4940999"));
        meta.contact_id.clear();
        assert!(Entry::from_metadata(&meta, "n", State::Finished, 5).is_err());
    }

    #[test]
    fn a_statement_needs_its_id() {
        let mut meta = RecordingMetadata {
            contact_id: "c1".into(),
            ..Default::default()
        };
        assert!(Statement::from_metadata(&meta, "c1-statement-x", State::Finished, 0).is_err());
        meta.statement_id = Some("terms".into());
        let s = Statement::from_metadata(&meta, "c1-statement-terms", State::Finished, 0).unwrap();
        assert_eq!(s.statement_id, "terms");
        assert_eq!(s.contact_id, "c1");
    }

    #[test]
    fn retention_saturates_and_ignores_negative_days() {
        assert_eq!(retain_until(10, None), None);
        assert_eq!(retain_until(10, Some(-5)), Some(10));
        assert_eq!(retain_until(i64::MAX - 1, Some(1)), Some(i64::MAX));
    }
}
