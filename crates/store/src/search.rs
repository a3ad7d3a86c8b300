//! Search parameters, sort orders and the opaque paging cursor.
//!
//! Paging is by key (the sort column and the contact id of the last row returned), never by
//! offset: a page costs the same on the last page as on the first, and rows inserted meanwhile
//! neither repeat nor vanish from the pages that follow.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::{Entry, State};

/// The largest page a search returns.
pub const MAX_LIMIT: u32 = 1000;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 50;

/// How results are ordered; ties are broken by contact id in the same direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    StartAsc,
    /// Newest first (the default).
    #[default]
    StartDesc,
    DurationAsc,
    DurationDesc,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "start_asc" | "start" => Some(Sort::StartAsc),
            "start_desc" | "-start" => Some(Sort::StartDesc),
            "duration_asc" | "duration" => Some(Sort::DurationAsc),
            "duration_desc" | "-duration" => Some(Sort::DurationDesc),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Sort::StartAsc => "sa",
            Sort::StartDesc => "sd",
            Sort::DurationAsc => "da",
            Sort::DurationDesc => "dd",
        }
    }

    /// The column sorted on.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Sort::StartAsc | Sort::StartDesc => "start_ms",
            Sort::DurationAsc | Sort::DurationDesc => "duration_ms",
        }
    }

    pub(crate) fn descending(self) -> bool {
        matches!(self, Sort::StartDesc | Sort::DurationDesc)
    }

    fn key_of(self, e: &Entry) -> i64 {
        match self {
            Sort::StartAsc | Sort::StartDesc => e.start_ms,
            Sort::DurationAsc | Sort::DurationDesc => e.duration_ms,
        }
    }
}

/// Where the next page starts: after the row with this sort key and contact id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) sort: Sort,
    pub(crate) key: i64,
    pub(crate) contact_id: String,
}

impl Cursor {
    pub(crate) fn after(sort: Sort, e: &Entry) -> Cursor {
        Cursor {
            sort,
            key: sort.key_of(e),
            contact_id: e.contact_id.clone(),
        }
    }

    /// The opaque text handed to clients: hex, so it survives any URL or JSON unescaped.
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "1:{}:{}:{}",
            self.sort.tag(),
            self.key,
            self.contact_id
        ))
    }

    /// Reads a cursor made by [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Cursor, StoreError> {
        let bad = |reason: &str| StoreError::BadQuery {
            param: "cursor",
            reason: reason.to_string(),
        };
        let bytes = hex::decode(s).map_err(|_| bad("not a cursor"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not a cursor"))?;
        let mut parts = text.splitn(4, ':');
        if parts.next() != Some("1") {
            return Err(bad("unknown cursor version"));
        }
        let sort = match parts.next() {
            Some("sa") => Sort::StartAsc,
            Some("sd") => Sort::StartDesc,
            Some("da") => Sort::DurationAsc,
            Some("dd") => Sort::DurationDesc,
            _ => return Err(bad("not a cursor")),
        };
        let key = parts
            .next()
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| bad("not a cursor"))?;
        let contact_id = parts.next().ok_or_else(|| bad("not a cursor"))?.to_string();
        Ok(Cursor {
            sort,
            key,
            contact_id,
        })
    }
}

/// What a viewer may see, applied to a search as a mandatory filter: entries whose agent is
/// one of `agents` or whose team is one of `teams`. Empty strings match nothing, and a
/// restriction with neither agents nor teams matches no entry at all (never every entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restriction {
    pub agents: Vec<String>,
    pub teams: Vec<String>,
}

/// The most agents plus teams a restriction may name.
pub const MAX_RESTRICTION: usize = 1000;

impl Restriction {
    /// The agents and teams that can match, empty strings left out.
    pub(crate) fn terms(&self) -> (Vec<String>, Vec<String>) {
        let keep =
            |v: &[String]| -> Vec<String> { v.iter().filter(|s| !s.is_empty()).cloned().collect() };
        (keep(&self.agents), keep(&self.teams))
    }

    /// True when the restriction lets this entry through (the same rule as the SQL).
    pub fn admits(&self, agent: Option<&str>, team: Option<&str>) -> bool {
        let hit = |v: &[String], x: Option<&str>| {
            x.is_some_and(|x| !x.is_empty() && v.iter().any(|s| s == x))
        };
        hit(&self.agents, agent) || hit(&self.teams, team)
    }
}

/// A search: every field set narrows it. Time bounds apply to the start of the call and are
/// half-open (`from_ms` included, `to_ms` excluded); duration bounds are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub queue: Option<String>,
    pub direction: Option<String>,
    /// Customer numbers starting with this text.
    pub customer_prefix: Option<String>,
    pub min_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
    pub has_statement: Option<bool>,
    /// Recordings with a silence (neither side speaking) at least this long.
    pub min_silence_ms: Option<i64>,
    /// Recordings where both sides talked over each other at least this long in all.
    pub min_overtalk_ms: Option<i64>,
    /// Only this state.
    pub state: Option<State>,
    /// Include soft-deleted entries; without it they are left out, unless `state` is
    /// `deleted` (purged entries, which are soft-deleted too).
    pub include_deleted: bool,
    pub sort: Sort,
    /// Page size, 1..=[`MAX_LIMIT`]; 0 means [`DEFAULT_LIMIT`].
    pub limit: u32,
    /// From a previous page's [`Page::next`]; it must come from a search with the same sort.
    pub cursor: Option<String>,
    /// Only what a viewer may see (see [`Restriction`]); `None` is no restriction.
    pub restrict: Option<Restriction>,
}

/// A checked query, ready for a backend.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub limit: u32,
    pub cursor: Option<Cursor>,
    /// `[prefix, upper)` for the customer number range, `upper` absent when unbounded.
    pub customer_range: Option<(String, Option<String>)>,
}

/// The smallest string greater than every string starting with `prefix`, if there is one:
/// the prefix with its last character incremented. A range scan on it uses a plain B-tree
/// index in both backends (a `LIKE` would not in PostgreSQL's non-C collations).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Query {
    /// Validates the parameters; errors name the parameter at fault.
    pub(crate) fn check(&self) -> Result<Checked, StoreError> {
        let bad = |param: &'static str, reason: &str| StoreError::BadQuery {
            param,
            reason: reason.to_string(),
        };
        if let (Some(f), Some(t)) = (self.from_ms, self.to_ms) {
            if f > t {
                return Err(bad("to", "ends before from"));
            }
        }
        if self.min_duration_ms.is_some_and(|d| d < 0) {
            return Err(bad("min_duration", "negative"));
        }
        if let (Some(a), Some(b)) = (self.min_duration_ms, self.max_duration_ms) {
            if a > b {
                return Err(bad("max_duration", "below min_duration"));
            }
        }
        let limit = match self.limit {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => return Err(bad("limit", "above 1000")),
            n => n,
        };
        let cursor = match &self.cursor {
            Some(c) => {
                let c = Cursor::decode(c)?;
                if c.sort != self.sort {
                    return Err(bad("cursor", "made for another sort order"));
                }
                Some(c)
            }
            None => None,
        };
        if self
            .restrict
            .as_ref()
            .is_some_and(|r| r.agents.len() + r.teams.len() > MAX_RESTRICTION)
        {
            return Err(bad("restrict", "more than 1000 agents and teams"));
        }
        let customer_range = match self.customer_prefix.as_deref() {
            None | Some("") => None,
            Some(p) => Some((p.to_string(), prefix_upper_bound(p))),
        };
        Ok(Checked {
            limit,
            cursor,
            customer_range,
        })
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let c = Cursor {
            sort: Sort::DurationDesc,
            key: -5,
            contact_id: "17-a:b-3".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for junk in [
            "",
            "zz",
            &hex::encode("2:sa:1:x"),
            &hex::encode("1:sa:x:y"),
            &hex::encode("1:qq:1:y"),
        ] {
            assert!(
                matches!(
                    Cursor::decode(junk),
                    Err(StoreError::BadQuery {
                        param: "cursor",
                        ..
                    })
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_cursor_of_another_sort_is_refused() {
        let c = Cursor {
            sort: Sort::StartAsc,
            key: 1,
            contact_id: "c".into(),
        };
        let q = Query {
            sort: Sort::StartDesc,
            cursor: Some(c.encode()),
            ..Default::default()
        };
        assert!(matches!(
            q.check(),
            Err(StoreError::BadQuery {
                param: "cursor",
                ..
            })
        ));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let cases = [
            (
                Query {
                    from_ms: Some(10),
                    to_ms: Some(5),
                    ..Default::default()
                },
                "to",
            ),
            (
                Query {
                    min_duration_ms: Some(10),
                    max_duration_ms: Some(5),
                    ..Default::default()
                },
                "max_duration",
            ),
            (
                Query {
                    min_duration_ms: Some(-1),
                    ..Default::default()
                },
                "min_duration",
            ),
            (
                Query {
                    limit: 1001,
                    ..Default::default()
                },
                "limit",
            ),
        ];
        for (q, name) in cases {
            match q.check() {
                Err(StoreError::BadQuery { param, .. }) => assert_eq!(param, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(Query::default().check().unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound("+4930").as_deref(), Some("+4931"));
        assert_eq!(prefix_upper_bound("49").as_deref(), Some("4:"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        let upper = prefix_upper_bound("+4930").unwrap();
        for (s, inside) in [
            ("+4930", true),
            ("+49301", true),
            ("+4930~", true),
            ("+4931", false),
            ("+493", false),
        ] {
            assert_eq!(s >= "+4930" && s < upper.as_str(), inside, "{s}");
        }
    }

    #[test]
    fn a_restriction_admits_only_its_agents_and_teams() {
        let r = Restriction {
            agents: vec!["anna".into(), "".into()],
            teams: vec!["complaints".into()],
        };
        assert!(r.admits(Some("anna"), None));
        assert!(r.admits(Some("bert"), Some("complaints")));
        assert!(!r.admits(Some("bert"), Some("sales")));
        assert!(!r.admits(None, None));
        assert!(!r.admits(Some(""), Some("")), "an empty agent is no agent");
        assert!(!Restriction::default().admits(Some("anna"), Some("complaints")));
        let big = Query {
            restrict: Some(Restriction {
                agents: vec!["a".into(); 1001],
                teams: vec![],
            }),
            ..Default::default()
        };
        assert!(matches!(
            big.check(),
            Err(StoreError::BadQuery {
                param: "restrict",
                ..
            })
        ));
    }

    #[test]
    fn sorts_parse() {
        assert_eq!(Sort::parse("-duration"), Some(Sort::DurationDesc));
        assert_eq!(Sort::parse("start_asc"), Some(Sort::StartAsc));
        assert_eq!(Sort::parse("size"), None);
    }
}
