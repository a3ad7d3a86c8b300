//! The per-call decision machine: call facts and events in, recorder actions with reasons out.
//!
//! A [`CallPolicy`] is built from the rules in force when the call starts and the call's facts;
//! it copies what it needs, so later rule changes never affect it. The caller feeds it
//! [`Event`]s and drains [`Action`]s with [`CallPolicy::poll_action`]. Each action carries the
//! [`Reason`] that caused it, and every meaningful event is entered in a decision log
//! ([`CallPolicy::explain`]) meant for the recording's metadata.

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

use crate::digits::{Digits, FeatureCode, Fed, Matcher};
use crate::directive::{Consent, FlowDirective};
use crate::rules::{Direction, Mode, RecordingOptions, Rules};
use crate::sample;

/// What is known about a call when it is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFacts {
    /// Unique id of the call (contact); also the key of deterministic sampling.
    pub contact_id: String,
    /// Name of the route that carried the call, if the binary uses named routes.
    pub route: Option<String>,
    pub direction: Direction,
    /// The agent-side SIP account.
    pub station: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub skill: Option<String>,
    pub queue: Option<String>,
    pub customer_number: String,
    pub dialled_number: String,
    /// The far end is an emergency number.
    pub is_emergency: bool,
    /// A third party (besides customer and agent) is on the call.
    pub is_third_party: bool,
}

/// Which leg a DTMF digit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Agent,
    Customer,
}

/// Something that happened on the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The agent (or, for an outbound call, the customer) answered: the agent segment begins.
    Answered,
    /// A DTMF digit, already detected, at `at_ms` (any monotonic millisecond clock of the call).
    /// Only the agent's digits can be feature codes; customer digits are passed through.
    Dtmf {
        digit: char,
        side: Side,
        at_ms: u64,
    },
    /// Lets held feature-code digits expire when no further digit comes; see
    /// [`CallPolicy::digit_deadline_ms`].
    Tick {
        at_ms: u64,
    },
    /// From an IVR/PBX flow, by SIP header or the control API.
    Directive(FlowDirective),
    /// The caller's answer to the recording question.
    Consent(Consent),
    /// On-demand start from the HTTP API; ranks with the agent's feature codes.
    ApiStart,
    ApiStop,
    ApiPause,
    ApiResume,
    /// Leave agent-only and record both channels again, from the HTTP API; casts no vote on
    /// whether the call is recorded.
    ApiBoth,
    /// The agent transferred the call, to an external number or to another agent.
    Transfer {
        external: bool,
    },
    /// The agent left while the call goes on: a third party (or an emergency service) stays
    /// with the customer. Either flag set here, or in the call's facts, picks the option.
    AgentLeft {
        emergency: bool,
        third_party: bool,
    },
    /// The agent applied a disposition (wrap-up).
    Disposition,
    HangUp,
}

impl fmt::Display for Event {
    /// Digits are never shown: customers key card numbers, agents dial phone numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Answered => f.write_str("answered"),
            Event::Dtmf { side, at_ms, .. } => write!(f, "dtmf ({side:?} side) at {at_ms} ms"),
            Event::Tick { at_ms } => write!(f, "tick at {at_ms} ms"),
            Event::Directive(d) => write!(f, "flow directive {d}"),
            Event::Consent(c) => write!(f, "consent {c}"),
            Event::ApiStart => f.write_str("api start"),
            Event::ApiStop => f.write_str("api stop"),
            Event::ApiPause => f.write_str("api pause"),
            Event::ApiResume => f.write_str("api resume"),
            Event::ApiBoth => f.write_str("api both channels"),
            Event::Transfer { external: true } => f.write_str("transfer to an external number"),
            Event::Transfer { external: false } => f.write_str("transfer to another agent"),
            Event::AgentLeft { .. } => f.write_str("agent left"),
            Event::Disposition => f.write_str("disposition"),
            Event::HangUp => f.write_str("hang-up"),
        }
    }
}

/// What the recorder must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// Start writing the call recording (a new segment).
    Start,
    /// Stop writing the call recording (end the segment).
    Stop,
    /// Stop writing audio until `Resume`; the segment stays open.
    Pause,
    Resume,
    /// From now on write silence on the customer channel. Sent before `Start` when a recording
    /// begins agent-only, so no customer audio is ever written; the mode lasts across
    /// `Stop`/`Start` until `Both`.
    AgentOnly,
    /// Leave agent-only: write both channels again.
    Both,
    /// Open a recorded statement, a separate recording with its own id.
    StatementStart {
        id: String,
    },
    StatementStop {
        id: String,
    },
    /// Drop every bit of audio of this call held but not yet written: nothing from before this
    /// instant may reach storage. Sent when the caller answers the consent question.
    DiscardBuffered,
}

/// An action and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(flatten)]
    pub kind: ActionKind,
    pub reason: Reason,
}

/// How an on-demand command arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum OnDemandVia {
    /// A feature code dialled on the agent's leg.
    FeatureCode { code: String },
    /// The HTTP control API.
    Api,
}

/// Why the recording is in its current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// The caller refused; nothing is recorded for the rest of the call.
    ConsentDenied,
    /// Consent is required on this direction and the caller has not answered yet.
    ConsentPending,
    /// The caller consented; audio from before is discarded.
    ConsentGranted,
    /// Agent feature code or control API.
    OnDemand {
        command: OnDemandCommand,
        #[serde(flatten)]
        via: OnDemandVia,
    },
    /// A flow directive.
    FlowDirective {
        directive: FlowDirective,
    },
    /// A do-not-record policy matched.
    DoNotRecordPolicy {
        name: String,
    },
    /// A record policy matched and sampled the call in.
    RecordPolicy {
        name: String,
        percentage: u32,
    },
    /// The station's mode for this direction.
    StationRule {
        station: Option<String>,
        direction: Direction,
        mode: Mode,
    },
    /// Nothing asks for a recording.
    NoRule,
    /// Before the answer only an IVR-segment directive records.
    NotAnswered,
    /// The agent answered, which ends the IVR segment.
    AgentAnswered,
    /// External transfer without `keep_after_external_transfer`.
    ExternalTransfer,
    /// A transfer ends a recorded statement.
    Transfer,
    /// The agent left without the matching keep option.
    AgentLeft {
        emergency: bool,
        third_party: bool,
    },
    /// Disposition without `keep_after_disposition`.
    Disposition,
    HangUp,
}

/// On-demand functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDemandCommand {
    Start,
    Stop,
    Pause,
    Resume,
}

/// The six ranked sources of a start/stop decision, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Consent,
    /// A station whose mode is `never` for the call's direction: absolute, below consent only
    /// because both say "no".
    StationNever,
    OnDemand,
    FlowDirective,
    DoNotRecord,
    Record,
}

impl Reason {
    /// A fixed label of the kind of reason, for logs that must not name stations or numbers.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::ConsentDenied => "consent_denied",
            Reason::ConsentPending => "consent_pending",
            Reason::ConsentGranted => "consent_granted",
            Reason::OnDemand { .. } => "on_demand",
            Reason::FlowDirective { .. } => "flow_directive",
            Reason::DoNotRecordPolicy { .. } => "do_not_record_policy",
            Reason::RecordPolicy { .. } => "record_policy",
            Reason::StationRule { mode, .. } => match mode {
                Mode::Never => "station_never",
                Mode::Always => "station_always",
                Mode::OnDemand => "station_on_demand",
            },
            Reason::NoRule => "no_rule",
            Reason::NotAnswered => "not_answered",
            Reason::AgentAnswered => "agent_answered",
            Reason::ExternalTransfer => "external_transfer",
            Reason::Transfer => "transfer",
            Reason::AgentLeft { .. } => "agent_left",
            Reason::Disposition => "disposition",
            Reason::HangUp => "hang_up",
        }
    }

    /// The priority level this reason belongs to, if it is one of the ranked sources.
    pub fn level(&self) -> Option<Level> {
        match self {
            Reason::ConsentDenied | Reason::ConsentPending => Some(Level::Consent),
            Reason::OnDemand { .. } => Some(Level::OnDemand),
            Reason::FlowDirective { .. } => Some(Level::FlowDirective),
            Reason::DoNotRecordPolicy { .. } => Some(Level::DoNotRecord),
            Reason::StationRule {
                mode: Mode::Never, ..
            } => Some(Level::StationNever),
            Reason::RecordPolicy { .. } => Some(Level::Record),
            Reason::StationRule {
                mode: Mode::Always, ..
            } => Some(Level::Record),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsentDenied => f.write_str("the caller refused consent"),
            Reason::ConsentPending => f.write_str("waiting for the caller's consent"),
            Reason::ConsentGranted => f.write_str("the caller granted consent"),
            Reason::OnDemand { command, via } => {
                let c = match command {
                    OnDemandCommand::Start => "start",
                    OnDemandCommand::Stop => "stop",
                    OnDemandCommand::Pause => "pause",
                    OnDemandCommand::Resume => "resume",
                };
                match via {
                    OnDemandVia::FeatureCode { code } => {
                        write!(f, "on-demand {c} by the agent's feature code {code}")
                    }
                    OnDemandVia::Api => write!(f, "on-demand {c} by the control API"),
                }
            }
            Reason::FlowDirective { directive } => write!(f, "flow directive {directive}"),
            Reason::DoNotRecordPolicy { name } => write!(f, "do-not-record policy {name:?}"),
            Reason::RecordPolicy { name, percentage } => {
                write!(f, "record policy {name:?} ({percentage} %)")
            }
            Reason::StationRule {
                station,
                direction,
                mode,
            } => write!(
                f,
                "station {} {direction} mode {mode}",
                station.as_deref().unwrap_or("(default)")
            ),
            Reason::NoRule => f.write_str("no rule asks for a recording"),
            Reason::NotAnswered => f.write_str("not answered yet"),
            Reason::AgentAnswered => f.write_str("the agent answered, ending the IVR segment"),
            Reason::ExternalTransfer => f.write_str("transferred to an external number"),
            Reason::Transfer => f.write_str("transferred"),
            Reason::AgentLeft {
                emergency,
                third_party,
            } => write!(
                f,
                "the agent left{}",
                if *emergency {
                    " an emergency call"
                } else if *third_party {
                    " a third-party call"
                } else {
                    ""
                }
            ),
            Reason::Disposition => f.write_str("disposition applied"),
            Reason::HangUp => f.write_str("hang-up"),
        }
    }
}

/// The current decision, for tests and status pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub recording: bool,
    pub paused: bool,
    pub agent_only: bool,
    pub reason: Reason,
}

/// One entry of the decision log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Position of the event in the call, from 0 (the setup entry).
    pub seq: u32,
    pub event: String,
    pub actions: Vec<Action>,
    /// The decision after the event, in words.
    pub decision: String,
    /// Anything worth knowing: ignored directives, options applied, sampling.
    pub notes: Vec<String>,
}

/// The caller's part after one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    forward: Digits,
}

impl Handled {
    /// DTMF digits to pass to the other leg now, in order. Empty when an agent digit was
    /// swallowed as (part of) a feature code; may hold earlier swallowed digits released
    /// because they turned out not to be a code.
    pub fn forward_digits(&self) -> &[char] {
        self.forward.as_slice()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    PreAnswer,
    Answered,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsentState {
    Unknown,
    Granted,
    Denied,
}

#[derive(Clone, Debug)]
struct Vote {
    on: bool,
    reason: Reason,
}

/// The per-call state machine.
#[derive(Clone, Debug)]
pub struct CallPolicy {
    facts: CallFacts,
    /// The station's mode is `never` for this call's direction: nothing is recorded, whatever
    /// asks (see the module docs of the crate).
    never: Option<Reason>,
    dnr: Option<Reason>,
    record: Option<Reason>,
    options: RecordingOptions,
    consent_required: bool,
    matcher: Matcher,

    phase: Phase,
    consent: ConsentState,
    on_demand: Option<Vote>,
    directive: Option<Vote>,
    /// A do-not-record directive makes later flow starts ineffective.
    flow_do_not_record: bool,
    ivr: Option<Vote>,
    suspended: Option<Reason>,
    pause: Option<Vote>,
    agent_only: Option<Reason>,
    statement: Option<String>,
    statements: u32,

    out_on: bool,
    out_paused: bool,
    out_agent_only: bool,
    reason: Reason,

    queue: VecDeque<Action>,
    log: Vec<LogEntry>,
    seq: u32,
}

impl CallPolicy {
    /// Evaluates the static rules for this call (station mode, policies, sampling, options,
    /// consent requirement) and starts the state machine. Nothing is recorded before
    /// [`Event::Answered`] except an IVR segment asked for by a flow.
    pub fn new(rules: &Rules, facts: CallFacts) -> Self {
        let mut notes = Vec::new();
        let station_mode = rules
            .stations
            .mode(facts.station.as_deref(), facts.direction);
        let station_reason = Reason::StationRule {
            station: facts.station.clone(),
            direction: facts.direction,
            mode: station_mode,
        };
        notes.push(format!("{station_reason}"));

        let dnr_policy = rules
            .do_not_record_policies
            .iter()
            .find(|p| p.filter.matches(&facts));
        let never = (station_mode == Mode::Never).then(|| station_reason.clone());
        let dnr = dnr_policy.map(|p| Reason::DoNotRecordPolicy {
            name: p.name.clone(),
        });

        let mut selected = None;
        let mut first_match = None;
        for p in &rules.record_policies {
            if !p.filter.matches(&facts) {
                continue;
            }
            first_match.get_or_insert(p);
            let bucket = sample::bucket(&facts.contact_id, &p.name);
            let chosen = sample::selected(&facts.contact_id, &p.name, p.percentage);
            notes.push(format!(
                "record policy {:?} ({} %) matches; sample bucket {bucket}/{}: {}",
                p.name,
                p.percentage,
                sample::BUCKETS,
                if chosen { "selected" } else { "not selected" }
            ));
            if chosen && selected.is_none() {
                selected = Some(p);
            }
        }
        let record = match (selected, station_mode) {
            (Some(p), _) => Some(Reason::RecordPolicy {
                name: p.name.clone(),
                percentage: p.percentage,
            }),
            (None, Mode::Always) => Some(station_reason.clone()),
            (None, _) => None,
        };
        let options_from = selected.or(first_match);
        let options = options_from
            .and_then(|p| p.options)
            .unwrap_or(rules.options);
        match options_from.filter(|p| p.options.is_some()) {
            Some(p) => notes.push(format!("options from record policy {:?}", p.name)),
            None => notes.push("options from the defaults".to_owned()),
        }
        if let Some(r) = never.as_ref().or(dnr.as_ref()) {
            notes.push(format!("{r} applies"));
        }
        let consent_required = rules.consent.required_for.contains(&facts.direction);
        if consent_required {
            notes.push(format!("consent required on {} calls", facts.direction));
        }

        let mut me = Self {
            facts,
            never,
            dnr,
            record,
            options,
            consent_required,
            matcher: Matcher::new(&rules.feature_codes),
            phase: Phase::PreAnswer,
            consent: ConsentState::Unknown,
            on_demand: None,
            directive: None,
            flow_do_not_record: false,
            ivr: None,
            suspended: None,
            pause: None,
            agent_only: None,
            statement: None,
            statements: 0,
            out_on: false,
            out_paused: false,
            out_agent_only: false,
            reason: Reason::NotAnswered,
            queue: VecDeque::new(),
            log: Vec::new(),
            seq: 0,
        };
        me.reason = me.desired().1;
        me.push_log("call set up".to_owned(), 0, notes);
        me
    }

    /// The facts the call was set up with.
    pub fn facts(&self) -> &CallFacts {
        &self.facts
    }

    /// The options that govern transfers, agent leaving and disposition for this call.
    pub fn options(&self) -> &RecordingOptions {
        &self.options
    }

    /// Handles one event; queue the resulting actions for [`Self::poll_action`].
    pub fn handle_event(&mut self, event: Event) -> Handled {
        self.seq += 1;
        let queued_before = self.queue.len();
        let mut notes = Vec::new();
        let mut handled = Handled::default();
        let mut log_it = true;
        let mut stop_reason = None;
        let label = event.to_string();

        if self.phase == Phase::Ended {
            if let Event::Dtmf { digit, .. } = event {
                handled.forward.push(digit);
            }
            // Nothing changes after hang-up, and a stray digit is not worth a log line.
            if !matches!(event, Event::Dtmf { .. } | Event::Tick { .. }) {
                notes.push("ignored after hang-up".to_owned());
                self.push_log(label, queued_before, notes);
            }
            return handled;
        }

        match event {
            Event::Answered => {
                self.phase = Phase::Answered;
                if self.ivr.take().is_some() {
                    notes.push("the IVR segment ends at the answer".to_owned());
                    stop_reason = Some(Reason::AgentAnswered);
                }
            }
            Event::Dtmf {
                digit,
                side: Side::Customer,
                ..
            } => {
                handled.forward.push(digit);
                log_it = false;
            }
            Event::Dtmf {
                digit,
                side: Side::Agent,
                at_ms,
            } => {
                let fed = self.matcher.feed(digit, at_ms);
                log_it = self.apply_fed(&fed, &mut notes);
                handled.forward = fed.forward;
            }
            Event::Tick { at_ms } => {
                let fed = self.matcher.tick(at_ms);
                log_it = self.apply_fed(&fed, &mut notes);
                handled.forward = fed.forward;
            }
            Event::Directive(d) => self.apply_directive(d, &mut notes),
            Event::Consent(c) => self.apply_consent(c, &mut notes),
            Event::ApiStart => self.on_demand(OnDemandCommand::Start, OnDemandVia::Api),
            Event::ApiStop => self.on_demand(OnDemandCommand::Stop, OnDemandVia::Api),
            Event::ApiPause => self.on_demand(OnDemandCommand::Pause, OnDemandVia::Api),
            Event::ApiResume => self.on_demand(OnDemandCommand::Resume, OnDemandVia::Api),
            Event::ApiBoth => self.agent_only = None,
            Event::Transfer { external } => {
                self.stop_statement(Reason::Transfer);
                if external {
                    if self.options.keep_after_external_transfer {
                        notes.push("recording kept (keep_after_external_transfer)".to_owned());
                    } else {
                        self.suspend(Reason::ExternalTransfer);
                    }
                }
            }
            Event::AgentLeft {
                emergency,
                third_party,
            } => {
                let emergency = emergency || self.facts.is_emergency;
                let reason = Reason::AgentLeft {
                    emergency,
                    third_party: third_party || self.facts.is_third_party,
                };
                self.stop_statement(reason.clone());
                let (keep, option) = if emergency {
                    (
                        self.options.keep_after_agent_leaves_emergency,
                        "keep_after_agent_leaves_emergency",
                    )
                } else {
                    (
                        self.options.keep_after_agent_leaves_third_party,
                        "keep_after_agent_leaves_third_party",
                    )
                };
                if keep {
                    notes.push(format!("recording kept ({option})"));
                } else {
                    notes.push(format!("recording ends ({option} is off)"));
                    self.suspend(reason);
                }
            }
            Event::Disposition => {
                if self.options.keep_after_disposition {
                    notes.push("recording kept (keep_after_disposition)".to_owned());
                } else {
                    self.suspend(Reason::Disposition);
                }
            }
            Event::HangUp => {
                self.stop_statement(Reason::HangUp);
                self.phase = Phase::Ended;
            }
        }

        let before = self.reason.clone();
        self.sync(stop_reason);
        if log_it || self.queue.len() > queued_before || self.reason != before {
            self.push_log(label, queued_before, notes);
        }
        handled
    }

    /// The next action for the recorder, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.queue.pop_front()
    }

    /// The current decision and its reason.
    pub fn decision(&self) -> Decision {
        Decision {
            recording: self.out_on,
            paused: self.out_paused,
            agent_only: self.out_agent_only,
            reason: self.reason.clone(),
        }
    }

    /// The decision log so far, for the recording's metadata.
    pub fn explain(&self) -> &[LogEntry] {
        &self.log
    }

    /// When to send [`Event::Tick`] so held feature-code digits are released on time, if any
    /// are held.
    pub fn digit_deadline_ms(&self) -> Option<u64> {
        self.matcher.deadline()
    }

    /// Whether agent digits are being held back as a possible feature code.
    pub fn holding_digits(&self) -> bool {
        self.matcher.holding()
    }

    /// Whether nothing can ever be recorded on this call (a `never` station or route).
    pub fn is_never(&self) -> bool {
        self.never.is_some()
    }

    /// Adds a note to the decision log that is no event of the policy's own (a header that
    /// did not parse, a transfer being requested), so the log tells the whole story.
    pub fn note(&mut self, event: &str, note: String) {
        self.seq += 1;
        let at = self.queue.len();
        self.push_log(event.to_owned(), at, vec![note]);
    }

    /// The open recorded statement, if any.
    pub fn open_statement(&self) -> Option<&str> {
        self.statement.as_deref()
    }

    /// Returns whether the event deserves a log line.
    fn apply_fed(&mut self, fed: &Fed, notes: &mut Vec<String>) -> bool {
        if fed.abandoned {
            notes.push("held digits were not a feature code and were released".to_owned());
        }
        let Some((function, code)) = fed.fired else {
            return fed.abandoned;
        };
        let code = code.to_string_lossy();
        let command = match function {
            FeatureCode::Start => OnDemandCommand::Start,
            FeatureCode::Stop => OnDemandCommand::Stop,
            FeatureCode::Pause => OnDemandCommand::Pause,
            FeatureCode::Resume => OnDemandCommand::Resume,
        };
        notes.push(format!("feature code {code}"));
        self.on_demand(command, OnDemandVia::FeatureCode { code });
        true
    }

    fn on_demand(&mut self, command: OnDemandCommand, via: OnDemandVia) {
        let reason = Reason::OnDemand { command, via };
        match command {
            OnDemandCommand::Start | OnDemandCommand::Stop => {
                self.on_demand = Some(Vote {
                    on: command == OnDemandCommand::Start,
                    reason,
                });
            }
            OnDemandCommand::Pause | OnDemandCommand::Resume => {
                self.pause = Some(Vote {
                    on: command == OnDemandCommand::Pause,
                    reason,
                });
            }
        }
    }

    fn apply_directive(&mut self, d: FlowDirective, notes: &mut Vec<String>) {
        let reason = Reason::FlowDirective {
            directive: d.clone(),
        };
        let vote = |on| {
            Some(Vote {
                on,
                reason: reason.clone(),
            })
        };
        match d {
            FlowDirective::StartIvrRecording => {
                if self.phase != Phase::PreAnswer {
                    notes.push("ignored: the IVR segment ended at the answer".to_owned());
                } else if self.flow_do_not_record {
                    notes.push("ignored: the flow said do-not-record".to_owned());
                } else {
                    self.ivr = vote(true);
                }
            }
            FlowDirective::StopIvrRecording => self.ivr = None,
            FlowDirective::StartCallRecording => {
                if self.flow_do_not_record {
                    notes.push("ignored: the flow said do-not-record".to_owned());
                } else {
                    self.directive = vote(true);
                    self.agent_only = None;
                }
            }
            FlowDirective::StopCallRecording => self.directive = vote(false),
            FlowDirective::AgentOnly => {
                if self.flow_do_not_record {
                    notes.push("ignored: the flow said do-not-record".to_owned());
                } else {
                    self.directive = vote(true);
                    self.agent_only = Some(reason.clone());
                }
            }
            FlowDirective::DoNotRecord => {
                self.directive = vote(false);
                self.ivr = None;
                self.flow_do_not_record = true;
            }
            FlowDirective::Pause => self.pause = vote(true),
            FlowDirective::Resume => self.pause = vote(false),
            FlowDirective::StatementStart { id } => self.start_statement(id, reason, notes),
            FlowDirective::StatementStop => {
                if self.statement.is_none() {
                    notes.push("no statement is open".to_owned());
                }
                self.stop_statement(reason);
            }
        }
    }

    fn apply_consent(&mut self, c: Consent, notes: &mut Vec<String>) {
        let pending = self.consent_required && self.consent == ConsentState::Unknown;
        match (c, self.consent) {
            (_, ConsentState::Denied) => {
                notes.push("ignored: the refusal is final for this call".to_owned());
            }
            (Consent::Granted, ConsentState::Granted) => {}
            (Consent::Granted, ConsentState::Unknown) => {
                self.consent = ConsentState::Granted;
                if pending {
                    self.emit(ActionKind::DiscardBuffered, Reason::ConsentGranted);
                }
            }
            (Consent::Denied, _) => {
                self.consent = ConsentState::Denied;
                self.stop_statement(Reason::ConsentDenied);
                if pending {
                    self.emit(ActionKind::DiscardBuffered, Reason::ConsentDenied);
                }
            }
        }
    }

    fn start_statement(&mut self, id: String, reason: Reason, notes: &mut Vec<String>) {
        let blocked = match self.consent {
            ConsentState::Denied => Some("the caller refused consent"),
            ConsentState::Unknown if self.consent_required => Some("consent is pending"),
            _ if self.never.is_some() => Some("the station is never recorded"),
            _ => None,
        };
        if let Some(why) = blocked {
            notes.push(format!("statement not recorded: {why}"));
            return;
        }
        // One statement at a time: a new one closes the previous, as a new statement id
        // replaces the previous one in the flows this mirrors.
        self.stop_statement(reason.clone());
        self.statements += 1;
        let id = if id.is_empty() {
            format!("{}-statement-{}", self.facts.contact_id, self.statements)
        } else {
            id
        };
        self.statement = Some(id.clone());
        self.emit(ActionKind::StatementStart { id }, reason);
    }

    fn stop_statement(&mut self, reason: Reason) {
        if let Some(id) = self.statement.take() {
            self.emit(ActionKind::StatementStop { id }, reason);
        }
    }

    /// Ends the agent segment: earlier on-demand and flow votes lapse and the static policies
    /// no longer apply; a new on-demand or flow start can still record.
    fn suspend(&mut self, reason: Reason) {
        self.on_demand = None;
        self.directive = None;
        self.ivr = None;
        self.suspended = Some(reason);
    }

    /// Recording on or off, and the winning reason, by the priority order.
    fn desired(&self) -> (bool, Reason) {
        if self.phase == Phase::Ended {
            return (false, Reason::HangUp);
        }
        if self.consent == ConsentState::Denied {
            return (false, Reason::ConsentDenied);
        }
        if self.consent_required && self.consent == ConsentState::Unknown {
            return (false, Reason::ConsentPending);
        }
        if let Some(r) = &self.never {
            return (false, r.clone());
        }
        if self.phase == Phase::PreAnswer {
            return match &self.ivr {
                Some(v) => (v.on, v.reason.clone()),
                None => (false, Reason::NotAnswered),
            };
        }
        if let Some(v) = self.on_demand.as_ref().or(self.directive.as_ref()) {
            return (v.on, v.reason.clone());
        }
        if let Some(r) = &self.suspended {
            return (false, r.clone());
        }
        if let Some(r) = &self.dnr {
            return (false, r.clone());
        }
        if let Some(r) = &self.record {
            return (true, r.clone());
        }
        (false, Reason::NoRule)
    }

    /// Emits the actions that take the recorder from its current state to the desired one;
    /// `stop_reason` names the cause of a stop when it is not the ranked decision itself.
    fn sync(&mut self, stop_reason: Option<Reason>) {
        let (on, reason) = self.desired();
        let paused = self
            .pause
            .as_ref()
            .filter(|p| p.on)
            .map(|p| p.reason.clone());
        if on {
            let agent_only = self.agent_only.is_some();
            if agent_only != self.out_agent_only {
                let why = self.agent_only.clone().unwrap_or_else(|| reason.clone());
                let kind = if agent_only {
                    ActionKind::AgentOnly
                } else {
                    ActionKind::Both
                };
                self.emit(kind, why);
                self.out_agent_only = agent_only;
            }
            if !self.out_on {
                self.emit(ActionKind::Start, reason.clone());
                self.out_on = true;
            }
            match (paused, self.out_paused) {
                (Some(why), false) => {
                    self.emit(ActionKind::Pause, why);
                    self.out_paused = true;
                }
                (None, true) => {
                    let why = self
                        .pause
                        .as_ref()
                        .map_or_else(|| reason.clone(), |p| p.reason.clone());
                    self.emit(ActionKind::Resume, why);
                    self.out_paused = false;
                }
                _ => {}
            }
        } else if self.out_on {
            self.emit(
                ActionKind::Stop,
                stop_reason.unwrap_or_else(|| reason.clone()),
            );
            self.out_on = false;
            self.out_paused = false;
        }
        self.reason = reason;
    }

    fn emit(&mut self, kind: ActionKind, reason: Reason) {
        self.queue.push_back(Action { kind, reason });
    }

    fn push_log(&mut self, event: String, queued_before: usize, notes: Vec<String>) {
        let actions = self.queue.iter().skip(queued_before).cloned().collect();
        let state = if !self.out_on {
            "not recording"
        } else if self.out_paused {
            "recording, paused"
        } else if self.out_agent_only {
            "recording the agent only"
        } else {
            "recording"
        };
        self.log.push(LogEntry {
            seq: self.seq,
            event,
            actions,
            decision: format!("{state}: {}", self.reason),
            notes,
        });
    }
}
