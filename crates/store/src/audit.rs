//! The audit log's hash chain: what an entry is, how it is hashed, and how a chain is checked.
//!
//! Every entry carries the hash of the one before it and its own hash,
//! `hash = SHA-256(prev_hash || canonical entry)`, where `prev_hash` is the previous entry's
//! hash as 32 raw bytes (all zeros before the first entry) and the canonical entry is the JSON
//! array `[seq, at_ms, actor, action, target, detail, from]` with `detail` written as
//! canonical JSON (object keys sorted, no white space) inside a JSON string. An edited entry
//! no longer matches its hash; an entry whose hash was recomputed no longer matches the
//! `prev_hash` of the next; a deleted entry leaves a gap in `seq`; a deleted tail leaves the
//! chain shorter than its head (the `audit_head` row that every append updates).
//!
//! Appending (in [`crate::Catalog::audit_append`]) reads and locks the head, so concurrent
//! writers, two nodes on one PostgreSQL included, line up and never fork the chain.
//!
//! This is plain computation, shared by the catalog (which hashes on append) and by anyone
//! checking a chain: an exported log can be verified without the database.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append; the catalog gives it its `seq` and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub at_ms: i64,
    /// Who: a username, `token:<name>`, `cli`, or `anonymous` for a failed login.
    pub actor: String,
    /// What: `login`, `login_failed`, `search`, `play`, ... (see the `access` crate).
    pub action: String,
    /// On what: a contact id, a username, a token name, a Call-ID...
    pub target: Option<String>,
    /// Anything else worth keeping (search parameters, the old and new role...).
    pub detail: serde_json::Value,
    /// The client address the request came from.
    pub from: Option<String>,
}

/// An entry of the log as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub from: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {kind}")]
pub struct ChainBreak {
    /// The first entry (or the first missing seq) at which the chain does not hold.
    pub seq: i64,
    pub kind: BreakKind,
}

/// The ways a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The entry's content does not give its hash: it was edited.
    Altered,
    /// The entry does not point at the hash of the entry before it: an entry before it was
    /// replaced (hash recomputed) or the entries were reordered.
    Unlinked,
    /// This seq is missing: an entry was deleted (or the tail, when the head says so).
    Missing,
}

impl std::fmt::Display for BreakKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakKind::Altered => "the entry does not match its hash (edited)",
            BreakKind::Unlinked => "the entry does not follow the hash before it",
            BreakKind::Missing => "the entry is missing (deleted)",
        })
    }
}

/// `value` as canonical JSON: object keys sorted (byte order), no white space, numbers and
/// strings as serde_json writes them. Canonical text read back and canonicalized again gives
/// the same text, so a chain survives a round trip through the database or an export.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of an entry with these fields following `prev_hash` (hex). `None` when
/// `prev_hash` is not 64 hex digits.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: &serde_json::Value,
    from: Option<&str>,
) -> Option<String> {
    let mut prev = [0u8; 32];
    hex::decode_to_slice(prev_hash, &mut prev).ok()?;
    let canonical = serde_json::to_string(&(
        seq,
        at_ms,
        actor,
        action,
        target,
        canonical_json(detail),
        from,
    ))
    .expect("a tuple of strings and integers serializes");
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    Some(hex::encode(h.finalize()))
}

impl AuditEntry {
    /// The hash this entry's content gives after its `prev_hash`.
    pub fn computed_hash(&self) -> Option<String> {
        entry_hash(
            &self.prev_hash,
            self.seq,
            self.at_ms,
            &self.actor,
            &self.action,
            self.target.as_deref(),
            &self.detail,
            self.from.as_deref(),
        )
    }
}

/// Checks a chain entry by entry, oldest first, without holding it all in memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new()
    }
}

impl ChainVerifier {
    /// A chain from its first entry (seq 1, after [`GENESIS_HASH`]).
    pub fn new() -> ChainVerifier {
        ChainVerifier::resume(0, GENESIS_HASH)
    }

    /// A chain that continues after the entry `seq` whose hash was `hash` (an export of a
    /// range, checked from an anchor the reader trusts).
    pub fn resume(seq: i64, hash: &str) -> ChainVerifier {
        ChainVerifier {
            next_seq: seq + 1,
            prev_hash: hash.to_string(),
        }
    }

    /// The next entry of the chain.
    pub fn push(&mut self, e: &AuditEntry) -> Result<(), ChainBreak> {
        let brk = |seq, kind| Err(ChainBreak { seq, kind });
        if e.seq > self.next_seq {
            return brk(self.next_seq, BreakKind::Missing);
        }
        if e.seq < self.next_seq {
            return brk(e.seq, BreakKind::Unlinked);
        }
        if e.computed_hash().as_deref() != Some(e.hash.as_str()) {
            return brk(e.seq, BreakKind::Altered);
        }
        if e.prev_hash != self.prev_hash {
            return brk(e.seq, BreakKind::Unlinked);
        }
        self.next_seq += 1;
        self.prev_hash = e.hash.clone();
        Ok(())
    }

    /// The end of the entries: the head (seq and hash of the last entry appended) must be
    /// where the chain ended, or entries at its end were removed (or it was rewritten).
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), ChainBreak> {
        let last = self.next_seq - 1;
        if head_seq > last {
            return Err(ChainBreak {
                seq: self.next_seq,
                kind: BreakKind::Missing,
            });
        }
        if head_seq < last || head_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: last,
                kind: BreakKind::Unlinked,
            });
        }
        Ok(())
    }

    /// Entries checked so far.
    pub fn checked(&self) -> i64 {
        self.next_seq - 1
    }
}

/// Checks a whole chain, from its first entry, oldest first.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<(), ChainBreak> {
    let mut v = ChainVerifier::new();
    entries.iter().try_for_each(|e| v.push(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let detail = json!({"z": seq, "a": [1, "two", {"y": null, "b": 1.5}]});
                let hash = entry_hash(
                    &prev,
                    seq,
                    1000 + seq,
                    "anna",
                    "play",
                    Some("c1"),
                    &detail,
                    Some("127.0.0.1"),
                )
                .unwrap();
                let e = AuditEntry {
                    seq,
                    at_ms: 1000 + seq,
                    actor: "anna".into(),
                    action: "play".into(),
                    target: Some("c1".into()),
                    detail,
                    from: Some("127.0.0.1".into()),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys_and_round_trips() {
        let v = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}, "e": 2.5});
        let c = canonical_json(&v);
        assert_eq!(c, r#"{"a":{"c":"x\"y","d":[true,null]},"b":1,"e":2.5}"#);
        let back: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(canonical_json(&back), c);
    }

    #[test]
    fn an_intact_chain_verifies_and_matches_its_head() {
        let c = chain(5);
        assert_eq!(verify_chain(&c), Ok(()));
        let mut v = ChainVerifier::new();
        c.iter().for_each(|e| v.push(e).unwrap());
        assert_eq!(v.finish(5, &c[4].hash), Ok(()));
        assert_eq!(v.checked(), 5);
        assert_eq!(verify_chain(&[]), Ok(()));
    }

    #[test]
    fn an_altered_entry_breaks_the_chain_at_that_entry() {
        for field in 0..6 {
            let mut c = chain(5);
            let e = &mut c[2];
            match field {
                0 => e.actor = "bert".into(),
                1 => e.action = "download".into(),
                2 => e.target = None,
                3 => e.detail = json!({"z": 4}),
                4 => e.at_ms += 1,
                _ => e.from = Some("10.0.0.1".into()),
            }
            assert_eq!(
                verify_chain(&c),
                Err(ChainBreak {
                    seq: 3,
                    kind: BreakKind::Altered
                }),
                "field {field}"
            );
        }
    }

    #[test]
    fn a_rehashed_entry_breaks_the_link_to_the_next() {
        let mut c = chain(5);
        c[2].actor = "bert".into();
        c[2].hash = c[2].computed_hash().unwrap();
        assert_eq!(
            verify_chain(&c),
            Err(ChainBreak {
                seq: 4,
                kind: BreakKind::Unlinked
            })
        );
    }

    #[test]
    fn a_deleted_entry_shows_as_missing() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify_chain(&c),
            Err(ChainBreak {
                seq: 2,
                kind: BreakKind::Missing
            })
        );
        // The first entry deleted.
        let mut c = chain(3);
        c.remove(0);
        assert_eq!(
            verify_chain(&c).unwrap_err(),
            ChainBreak {
                seq: 1,
                kind: BreakKind::Missing
            }
        );
        // The tail deleted: only the head tells.
        let c = chain(5);
        let mut v = ChainVerifier::new();
        c[..3].iter().for_each(|e| v.push(e).unwrap());
        assert_eq!(
            v.finish(5, &c[4].hash),
            Err(ChainBreak {
                seq: 4,
                kind: BreakKind::Missing
            })
        );
    }

    #[test]
    fn reordered_or_duplicated_entries_break_the_chain() {
        let mut c = chain(4);
        c.swap(1, 2);
        assert!(verify_chain(&c).is_err());
        let mut c = chain(3);
        let dup = c[1].clone();
        c.insert(2, dup);
        assert_eq!(
            verify_chain(&c).unwrap_err(),
            ChainBreak {
                seq: 2,
                kind: BreakKind::Unlinked
            }
        );
    }

    #[test]
    fn a_range_verifies_from_a_trusted_anchor() {
        let c = chain(6);
        let mut v = ChainVerifier::resume(3, &c[2].hash);
        c[3..].iter().for_each(|e| v.push(e).unwrap());
        let mut wrong = ChainVerifier::resume(3, &c[1].hash);
        assert_eq!(
            wrong.push(&c[3]).unwrap_err().kind,
            BreakKind::Unlinked,
            "an anchor that is not the entry before"
        );
        let mut junk = c[0].clone();
        junk.prev_hash = "xyz".into();
        assert_eq!(
            ChainVerifier::new().push(&junk).unwrap_err().kind,
            BreakKind::Altered
        );
    }
}
