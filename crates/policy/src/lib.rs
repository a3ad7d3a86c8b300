//! Recording policy: which calls tapir records, when, and why.
//!
//! The crate is pure: no IO, no clock, no randomness. The binary loads [`Rules`] (TOML, see
//! `config/policy.toml` and `docs/policy.md`), checks them with [`Rules::validate`], and for each
//! call builds a [`CallPolicy`] from the rules and the call's [`CallFacts`]. It then feeds every
//! [`Event`] of the call (answer, agent DTMF, flow directives, consent, API commands,
//! transfers, hang-up) to [`CallPolicy::handle_event`] and passes the resulting [`Action`]s
//! (from [`CallPolicy::poll_action`]) to the recorder. [`CallPolicy::explain`] is the decision
//! log for the recording's metadata.
//!
//! # Priority
//!
//! Whether the call recording runs is decided by the highest-ranked source that has an opinion:
//!
//! | rank | source | examples | beats | loses to |
//! |---|---|---|---|---|
//! | 1 | consent refusal | `X-Tapir-Consent: denied`; also *pending* consent where `consent.required_for` lists the call's direction | everything, for the rest of the call | nothing |
//! | 2 | `never` station | station mode `never` for the call's direction | 3–6, statements, the IVR segment | 1 |
//! | 3 | on-demand start/stop | the agent's `*2` (or configured stop code), control API start/stop | 4, 5, 6 | 1, 2 |
//! | 4 | flow directive | `X-Tapir-Record: start`, `stop`, `agent-only`, `do-not-record` | 5, 6 | 1–3 |
//! | 5 | do-not-record | a matching do-not-record policy | 6 | 1–4 |
//! | 6 | record | a matching record policy that samples the call in; station mode `always` | nothing | 1–5 |
//! | – | none | station mode `on_demand` and no policy: not recorded | | |
//!
//! Within ranks 3 and 4 the latest command wins (a stop code after `*2` stops). Station modes:
//! `always` is a record policy covering every call of that station and direction, `on_demand`
//! is neutral (the mode where `*2` works), and `never` is absolute: such a call is wholly
//! outside recording. A route's own mode is compiled into the rules
//! ([`Rules::with_route_mode`]). Consent refusal is final; consent, like every decision here,
//! lasts for the current call only.
//!
//! Around the ranked decision:
//! - Before the answer, only an IVR-segment directive (`start;type=ivr`) records; the segment
//!   ends when the agent answers and the ranked decision takes over. Other votes given before
//!   the answer (a flow's `start`, an API start) are kept and apply from the answer.
//! - Pause and resume mask the running recording; the latest pause or resume wins whatever its
//!   source (feature code, API, flow), because it is always about what is being said now.
//! - `agent-only` is a flow start that records the agent's channel only; a flow `start` returns
//!   to both channels.
//! - Recorded statements are separate recordings opened and closed by flow directives; only
//!   consent gates them. A transfer, the agent leaving, a new statement or hang-up closes one.
//! - An external transfer, the agent leaving, and a disposition end the recording unless the
//!   call's options keep it ([`RecordingOptions`]). The options come from the record policy that
//!   selected the call, else the first record policy whose filter matches, else `[options]`.
//! - When consent is required and the caller answers, [`ActionKind::DiscardBuffered`] tells the
//!   recorder that no audio from before that instant may be written.
//! - Only the agent's DTMF can be a feature code ([`Side`]); feature-code digits are not
//!   forwarded to the customer unless `feature_codes.forward` is set, and digits held as a
//!   possible code are released when they turn out not to be one ([`Handled`]).
//!
//! Digits never appear in the decision log: customers key card numbers.

mod call;
mod digits;
mod directive;
mod rules;
pub mod sample;

pub use call::{
    Action, ActionKind, CallFacts, CallPolicy, Decision, Event, Handled, Level, LogEntry,
    OnDemandCommand, OnDemandVia, Reason, Side,
};
pub use digits::{normalize_digit, MAX_CODE_LEN};
pub use directive::{parse_record_header, Consent, FlowDirective};
pub use rules::{
    pattern_matches, CallOrigin, Classification, ConsentRules, Direction, DoNotRecordPolicy,
    FeatureCodes, Filter, Mode, RecordPolicy, RecordingOptions, Rules, StationModes,
    StationOverride, StationRules,
};

/// Errors of the policy crate: invalid rules and unparsable directives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: percentage {value} is outside 0..=100")]
    PercentageOutOfRange { field: String, value: u32 },
    #[error("{field}: feature code {code:?} is invalid: {why}")]
    BadFeatureCode {
        field: String,
        code: String,
        why: &'static str,
    },
    #[error("{field}: feature code {code:?} clashes with {other} {other_code:?} (one is a prefix of the other)")]
    FeatureCodeClash {
        field: String,
        code: String,
        other: String,
        other_code: String,
    },
    #[error("{field}: must be greater than zero")]
    Zero { field: String },
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error("{field}: duplicate policy name {name:?}")]
    DuplicateName { field: String, name: String },
    #[error("bad recording directive {input:?}: {why}")]
    BadDirective { input: String, why: String },
    #[error("bad consent value {input:?}: expected granted or denied")]
    BadConsent { input: String },
}

impl PolicyError {
    /// The rules field at fault (`record_policies[2].percentage`), for rule errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::PercentageOutOfRange { field, .. }
            | PolicyError::BadFeatureCode { field, .. }
            | PolicyError::FeatureCodeClash { field, .. }
            | PolicyError::Zero { field }
            | PolicyError::Empty { field }
            | PolicyError::DuplicateName { field, .. } => Some(field),
            PolicyError::BadDirective { .. } | PolicyError::BadConsent { .. } => None,
        }
    }
}
