//! The administrator's rules: station modes, feature codes, consent, record and do-not-record
//! policies, and how a call is classified into a direction.
//!
//! `Rules` is plain data deserialized from TOML by the binary (unknown keys are rejected at every
//! level) and checked by [`Rules::validate`]. Nothing here depends on a call; per-call decisions
//! live in [`crate::CallPolicy`], which copies what it needs so a reload of the rules never
//! changes a call already in progress.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digits::{normalize_digit, MAX_CODE_LEN};
use crate::PolicyError;

/// How a call reached (or left) the agent's station.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Placed by the agent (station) towards a customer.
    Outbound,
    /// A customer dialled the station's own number.
    #[default]
    InboundDirect,
    /// A customer came through an IVR and/or a queue.
    InboundIvr,
}

impl Direction {
    /// Every direction, in configuration order.
    pub const ALL: [Direction; 3] = [
        Direction::Outbound,
        Direction::InboundDirect,
        Direction::InboundIvr,
    ];

    /// The name used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::InboundDirect => "inbound_direct",
            Direction::InboundIvr => "inbound_ivr",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a station does with calls of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Not recorded; ranks as a do-not-record policy.
    Never,
    /// Recorded from answer to hang-up; ranks as a record policy.
    Always,
    /// Neutral: recorded only when something else says so (the agent's `*2`, the API, a flow
    /// directive or a record policy).
    #[default]
    OnDemand,
}

impl Mode {
    /// The name used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Never => "never",
            Mode::Always => "always",
            Mode::OnDemand => "on_demand",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole rules file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// How the binary classifies a call into a [`Direction`].
    pub direction: Classification,
    /// Per station and direction modes.
    pub stations: StationRules,
    /// DTMF feature codes on the agent's leg.
    pub feature_codes: FeatureCodes,
    /// When the caller's consent is required before anything is recorded.
    pub consent: ConsentRules,
    /// Options for recordings that no record policy selected (station `always`, on-demand,
    /// flow directives).
    pub options: RecordingOptions,
    /// Record policies, in priority order (the first that selects a call names the reason).
    pub record_policies: Vec<RecordPolicy>,
    /// Do-not-record policies, in priority order.
    pub do_not_record_policies: Vec<DoNotRecordPolicy>,
    /// Emergency numbers (patterns, see [`pattern_matches`]): a call to one, or a transfer to
    /// one, counts as an emergency call for `keep_after_agent_leaves_emergency`.
    pub emergency_numbers: Vec<String>,
}

/// Configurable classification of calls into directions.
///
/// Checked in this order: a source zone listed in `outbound_zones` gives `outbound`; an explicit
/// IVR marker (for instance an `X-Tapir-Queue` header or `X-Tapir-Record: start;type=ivr` on the
/// INVITE), a source zone listed in `ivr_zones`, a known queue when `queue_means_ivr` is set, or a
/// dialled number matching `ivr_numbers` give `inbound_ivr`; anything else is `inbound_direct`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Classification {
    /// Source zones whose calls are placed by agents.
    pub outbound_zones: Vec<String>,
    /// Source zones whose calls come from an IVR or queue platform.
    pub ivr_zones: Vec<String>,
    /// Dialled-number patterns (see [`pattern_matches`]) that are IVR or queue entry points.
    pub ivr_numbers: Vec<String>,
    /// A call that carries a queue name came through a queue.
    pub queue_means_ivr: bool,
}

impl Default for Classification {
    fn default() -> Self {
        Self {
            outbound_zones: Vec::new(),
            ivr_zones: Vec::new(),
            ivr_numbers: Vec::new(),
            queue_means_ivr: true,
        }
    }
}

/// What the binary knows about a new call, for [`Classification::classify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOrigin<'a> {
    /// Name of the zone (listener / trusted peer set) the INVITE came from.
    pub source_zone: Option<&'a str>,
    /// The dialled number (Request-URI user part).
    pub dialled_number: &'a str,
    /// The INVITE carried an explicit IVR/queue marker.
    pub ivr_marked: bool,
    /// Queue name, if the call carries one.
    pub queue: Option<&'a str>,
}

impl Classification {
    /// Classifies a call; see the type's documentation for the order of the checks.
    pub fn classify(&self, origin: &CallOrigin<'_>) -> Direction {
        let zone_in = |zones: &[String]| {
            origin
                .source_zone
                .is_some_and(|z| zones.iter().any(|c| c == z))
        };
        if zone_in(&self.outbound_zones) {
            return Direction::Outbound;
        }
        if origin.ivr_marked
            || zone_in(&self.ivr_zones)
            || (self.queue_means_ivr && origin.queue.is_some_and(|q| !q.is_empty()))
            || self
                .ivr_numbers
                .iter()
                .any(|p| pattern_matches(p, origin.dialled_number))
        {
            return Direction::InboundIvr;
        }
        Direction::InboundDirect
    }
}

/// Modes per direction for one station; unset directions fall back to `stations.default`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationOverride {
    pub outbound: Option<Mode>,
    pub inbound_direct: Option<Mode>,
    pub inbound_ivr: Option<Mode>,
}

/// Modes per direction for the default station.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationModes {
    pub outbound: Mode,
    pub inbound_direct: Mode,
    pub inbound_ivr: Mode,
}

impl StationModes {
    /// The mode for one direction.
    pub fn get(&self, direction: Direction) -> Mode {
        match direction {
            Direction::Outbound => self.outbound,
            Direction::InboundDirect => self.inbound_direct,
            Direction::InboundIvr => self.inbound_ivr,
        }
    }
}

/// Station rules: a default and per-SIP-account overrides.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationRules {
    /// Applies to every station without its own entry, and to unset directions of those with one.
    pub default: StationModes,
    /// Keyed by SIP account (the agent-side station).
    pub accounts: BTreeMap<String, StationOverride>,
}

impl StationRules {
    /// The mode for a station (or the default when `station` is `None` or unknown).
    pub fn mode(&self, station: Option<&str>, direction: Direction) -> Mode {
        let over = station.and_then(|s| self.accounts.get(s));
        let specific = over.and_then(|o| match direction {
            Direction::Outbound => o.outbound,
            Direction::InboundDirect => o.inbound_direct,
            Direction::InboundIvr => o.inbound_ivr,
        });
        specific.unwrap_or_else(|| self.default.get(direction))
    }
}

/// Feature codes dialled on the agent's leg. An empty code is disabled.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureCodes {
    /// Start recording from now to the end of the call (default `*2`).
    pub start: String,
    /// Stop recording.
    pub stop: String,
    /// Pause recording.
    pub pause: String,
    /// Resume a paused recording.
    pub resume: String,
    /// Forward feature-code digits to the customer as well (default: swallow them).
    pub forward: bool,
    /// A sequence is abandoned when the next digit comes this late or later.
    pub inter_digit_timeout_ms: u64,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        Self {
            start: "*2".to_owned(),
            stop: String::new(),
            pause: String::new(),
            resume: String::new(),
            forward: false,
            inter_digit_timeout_ms: 2000,
        }
    }
}

impl FeatureCodes {
    /// `(field name, code)` for every configured code.
    pub(crate) fn named(&self) -> [(&'static str, &str); 4] {
        [
            ("start", self.start.as_str()),
            ("stop", self.stop.as_str()),
            ("pause", self.pause.as_str()),
            ("resume", self.resume.as_str()),
        ]
    }
}

/// When consent is required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentRules {
    /// Directions on which nothing is recorded until the caller has consented. Outbound calls
    /// are usually left out, as the agent announces the recording.
    pub required_for: Vec<Direction>,
}

/// What happens to a recording when the call changes shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingOptions {
    /// Keep recording after the agent transfers the call to an external number.
    pub keep_after_external_transfer: bool,
    /// Keep recording after the agent leaves a call with a third party.
    pub keep_after_agent_leaves_third_party: bool,
    /// Keep recording after the agent leaves a call with an emergency number.
    pub keep_after_agent_leaves_emergency: bool,
    /// Keep recording after the agent applies a disposition (wrap-up).
    pub keep_after_disposition: bool,
}

impl Default for RecordingOptions {
    fn default() -> Self {
        Self {
            keep_after_external_transfer: false,
            keep_after_agent_leaves_third_party: false,
            keep_after_agent_leaves_emergency: false,
            keep_after_disposition: true,
        }
    }
}

/// Which calls a policy applies to. Every non-empty list must match (lists are ANDed), any
/// entry of a list may match (entries are ORed); an empty filter matches every call. A list
/// that names agents (teams, ...) never matches a call without an agent (team, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub agents: Vec<String>,
    pub teams: Vec<String>,
    pub skills: Vec<String>,
    pub queues: Vec<String>,
    pub routes: Vec<String>,
    pub directions: Vec<Direction>,
    pub stations: Vec<String>,
    /// Patterns on the customer's number (see [`pattern_matches`]).
    pub customer_numbers: Vec<String>,
    /// Patterns on the dialled number.
    pub dialled_numbers: Vec<String>,
}

impl Filter {
    /// Whether the call's facts pass this filter.
    pub fn matches(&self, facts: &crate::CallFacts) -> bool {
        fn one_of(list: &[String], value: Option<&str>) -> bool {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        }
        fn pattern(list: &[String], value: &str) -> bool {
            list.is_empty() || list.iter().any(|p| pattern_matches(p, value))
        }
        one_of(&self.agents, facts.agent.as_deref())
            && one_of(&self.teams, facts.team.as_deref())
            && one_of(&self.skills, facts.skill.as_deref())
            && one_of(&self.queues, facts.queue.as_deref())
            && one_of(&self.routes, facts.route.as_deref())
            && one_of(&self.stations, facts.station.as_deref())
            && (self.directions.is_empty() || self.directions.contains(&facts.direction))
            && pattern(&self.customer_numbers, &facts.customer_number)
            && pattern(&self.dialled_numbers, &facts.dialled_number)
    }

    fn validate(&self, field: &str) -> Result<(), PolicyError> {
        let lists: [(&str, &[String]); 8] = [
            ("agents", &self.agents),
            ("teams", &self.teams),
            ("skills", &self.skills),
            ("queues", &self.queues),
            ("routes", &self.routes),
            ("stations", &self.stations),
            ("customer_numbers", &self.customer_numbers),
            ("dialled_numbers", &self.dialled_numbers),
        ];
        for (name, list) in lists {
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    return Err(PolicyError::Empty {
                        field: format!("{field}.filter.{name}[{i}]"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Records a share of the calls its filter matches.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPolicy {
    /// Unique name, shown in every decision it causes; also salts the sampling hash.
    pub name: String,
    /// Share of matching calls recorded, 0..=100 (default 100).
    #[serde(default = "hundred")]
    pub percentage: u32,
    #[serde(default)]
    pub filter: Filter,
    /// Options for the calls this policy records; defaults to the top-level `[options]`.
    #[serde(default)]
    pub options: Option<RecordingOptions>,
}

fn hundred() -> u32 {
    100
}

/// Prevents recording of the calls its filter matches (unless on-demand or a flow says so).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoNotRecordPolicy {
    /// Unique name, shown in every decision it causes.
    pub name: String,
    #[serde(default)]
    pub filter: Filter,
}

impl Rules {
    /// The rules for a call on a route whose own `record` setting is `mode`, so that a route's
    /// setting is decided by the same engine and priority order as everything else (a caller's
    /// consent refusal beats a route's `always`, as it beats any record policy):
    ///
    /// - `always`: a record policy covering every call of the route, ahead of the others;
    /// - `never`: every station `never` for the route's calls, which nothing overrides;
    /// - `on_demand`: no record policies and no `always` station: only the agent's feature
    ///   code, the control API or a flow directive records (a `never` station stays `never`).
    pub fn with_route_mode(&self, route: &str, mode: Mode) -> Rules {
        let mut r = self.clone();
        match mode {
            Mode::Always => r.record_policies.insert(
                0,
                RecordPolicy {
                    name: format!("route {route}"),
                    percentage: 100,
                    filter: Filter {
                        routes: vec![route.to_owned()],
                        ..Filter::default()
                    },
                    options: None,
                },
            ),
            Mode::Never => {
                r.stations.accounts.clear();
                r.stations.default = StationModes {
                    outbound: Mode::Never,
                    inbound_direct: Mode::Never,
                    inbound_ivr: Mode::Never,
                };
            }
            Mode::OnDemand => {
                r.record_policies.clear();
                let neutral = |m: Mode| if m == Mode::Always { Mode::OnDemand } else { m };
                let d = &mut r.stations.default;
                d.outbound = neutral(d.outbound);
                d.inbound_direct = neutral(d.inbound_direct);
                d.inbound_ivr = neutral(d.inbound_ivr);
                for o in r.stations.accounts.values_mut() {
                    for m in [&mut o.outbound, &mut o.inbound_direct, &mut o.inbound_ivr] {
                        *m = m.map(neutral);
                    }
                }
            }
        }
        r
    }

    /// Whether `number` is one of the configured emergency numbers.
    pub fn is_emergency_number(&self, number: &str) -> bool {
        !number.is_empty()
            && self
                .emergency_numbers
                .iter()
                .any(|p| pattern_matches(p, number))
    }

    /// Checks what the types cannot: ranges, feature-code syntax and clashes, empty or
    /// duplicate names and patterns. The error names the offending field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_feature_codes()?;
        for (i, p) in self.direction.ivr_numbers.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(PolicyError::Empty {
                    field: format!("direction.ivr_numbers[{i}]"),
                });
            }
        }
        for name in self.stations.accounts.keys() {
            if name.trim().is_empty() {
                return Err(PolicyError::Empty {
                    field: "stations.accounts.<name>".to_owned(),
                });
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, p) in self.record_policies.iter().enumerate() {
            let field = format!("record_policies[{i}]");
            check_name(&field, &p.name, &mut seen)?;
            if p.percentage > 100 {
                return Err(PolicyError::PercentageOutOfRange {
                    field: format!("{field}.percentage"),
                    value: p.percentage,
                });
            }
            p.filter.validate(&field)?;
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, p) in self.do_not_record_policies.iter().enumerate() {
            let field = format!("do_not_record_policies[{i}]");
            check_name(&field, &p.name, &mut seen)?;
            p.filter.validate(&field)?;
        }
        Ok(())
    }

    fn validate_feature_codes(&self) -> Result<(), PolicyError> {
        let fc = &self.feature_codes;
        if fc.inter_digit_timeout_ms == 0 {
            return Err(PolicyError::Zero {
                field: "feature_codes.inter_digit_timeout_ms".to_owned(),
            });
        }
        let named = fc.named();
        for (name, code) in named {
            if code.is_empty() {
                continue;
            }
            let field = format!("feature_codes.{name}");
            if code.chars().count() > MAX_CODE_LEN {
                return Err(PolicyError::BadFeatureCode {
                    field,
                    code: code.to_owned(),
                    why: "longer than 8 digits",
                });
            }
            if code.chars().any(|c| normalize_digit(c).is_none()) {
                return Err(PolicyError::BadFeatureCode {
                    field,
                    code: code.to_owned(),
                    why: "only 0-9, *, # and A-D are DTMF digits",
                });
            }
        }
        for (i, (name, code)) in named.iter().enumerate() {
            for (other, other_code) in named.iter().skip(i + 1) {
                if code.is_empty() || other_code.is_empty() {
                    continue;
                }
                let a = code.to_ascii_uppercase();
                let b = other_code.to_ascii_uppercase();
                if a.starts_with(&b) || b.starts_with(&a) {
                    return Err(PolicyError::FeatureCodeClash {
                        field: format!("feature_codes.{name}"),
                        code: (*code).to_owned(),
                        other: format!("feature_codes.{other}"),
                        other_code: (*other_code).to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_name<'a>(field: &str, name: &'a str, seen: &mut Vec<&'a str>) -> Result<(), PolicyError> {
    if name.trim().is_empty() {
        return Err(PolicyError::Empty {
            field: format!("{field}.name"),
        });
    }
    if seen.contains(&name) {
        return Err(PolicyError::DuplicateName {
            field: format!("{field}.name"),
            name: name.to_owned(),
        });
    }
    seen.push(name);
    Ok(())
}

/// Matches a number against a pattern: `*` matches any run of characters (so `+4420*` is a
/// prefix), `?`, `X` and `x` match exactly one character, anything else matches itself.
/// Matching is by byte, which is exact for the ASCII that telephone numbers are made of.
pub fn pattern_matches(pattern: &str, number: &str) -> bool {
    let p = pattern.as_bytes();
    let n = number.as_bytes();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Position of the last `*` seen and the number index it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == b'X' || c == b'x' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("+4420*", "+442071234567"));
        assert!(!pattern_matches("+4420*", "+441611234567"));
        assert!(pattern_matches("112", "112"));
        assert!(!pattern_matches("112", "1120"));
        assert!(!pattern_matches("112", "11"));
        assert!(pattern_matches("0800XXXXXX", "0800123456"));
        assert!(!pattern_matches("0800XXXXXX", "08001234567"));
        assert!(pattern_matches("*911", "+1911"));
        assert!(pattern_matches("*9*1*", "x9y1z"));
        assert!(!pattern_matches("*9*1*", "x1y9z"));
        assert!(pattern_matches("*", ""));
        assert!(!pattern_matches("?", ""));
    }

    #[test]
    fn station_fallback() {
        let mut s = StationRules::default();
        s.default.inbound_ivr = Mode::Always;
        s.accounts.insert(
            "1001".into(),
            StationOverride {
                outbound: Some(Mode::Never),
                ..Default::default()
            },
        );
        assert_eq!(s.mode(Some("1001"), Direction::Outbound), Mode::Never);
        assert_eq!(s.mode(Some("1001"), Direction::InboundIvr), Mode::Always);
        assert_eq!(s.mode(Some("1002"), Direction::Outbound), Mode::OnDemand);
        assert_eq!(s.mode(None, Direction::InboundIvr), Mode::Always);
    }

    #[test]
    fn classification_order() {
        let c = Classification {
            outbound_zones: vec!["agents".into()],
            ivr_zones: vec!["ivr".into()],
            ivr_numbers: vec!["+3222000*".into()],
            queue_means_ivr: true,
        };
        let o = |zone: Option<&'static str>, dialled: &'static str, marked, queue| CallOrigin {
            source_zone: zone,
            dialled_number: dialled,
            ivr_marked: marked,
            queue,
        };
        assert_eq!(
            c.classify(&o(Some("agents"), "+32220001", true, Some("q"))),
            Direction::Outbound
        );
        assert_eq!(
            c.classify(&o(Some("trunk"), "+321", true, None)),
            Direction::InboundIvr
        );
        assert_eq!(
            c.classify(&o(Some("ivr"), "+321", false, None)),
            Direction::InboundIvr
        );
        assert_eq!(
            c.classify(&o(Some("trunk"), "+321", false, Some("sales"))),
            Direction::InboundIvr
        );
        assert_eq!(
            c.classify(&o(Some("trunk"), "+3222000555", false, None)),
            Direction::InboundIvr
        );
        assert_eq!(
            c.classify(&o(Some("trunk"), "+321", false, None)),
            Direction::InboundDirect
        );
        assert_eq!(
            c.classify(&o(None, "+321", false, Some(""))),
            Direction::InboundDirect
        );
        let no_queue = Classification {
            queue_means_ivr: false,
            ..c
        };
        assert_eq!(
            no_queue.classify(&o(Some("trunk"), "+321", false, Some("sales"))),
            Direction::InboundDirect
        );
    }
}
