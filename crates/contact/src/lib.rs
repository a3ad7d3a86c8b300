//! One contact, one decision: the recording decision of a contact from the first INVITE to the
//! last segment, as a sans-IO state machine.
//!
//! A *contact* is what a customer experiences as one conversation with the contact centre: the
//! IVR, the queue, the agent, a consult, a transfer to another agent. Through tapir it is one
//! or more calls (B2BUA calls, two legs each) that follow one another or overlap: a transferred
//! call continues the contact of the call it came from. A contact is one recording file with
//! all its segments, and one decision log.
//!
//! [`Contacts`] owns every live contact. The binary feeds it what happens ([`Input`]: a call
//! started with its facts, answered, in-dialog headers and INFO, transfers, the API, hang-ups),
//! the agent's RTP for DTMF detection ([`Contacts::handle_agent_packet`]) and the time
//! ([`Contacts::handle_timeout`]); it drains [`Output`]s (open a recording, recorder commands,
//! statements, journal the decision log, finish) and carries them out on files. It never reads
//! a clock, a socket or a file.
//!
//! Every call gets a [`policy::CallPolicy`]. A route's own `record` setting is compiled into
//! the rules of that call ([`policy::Rules::with_route_mode`]), so the priority order (consent
//! refusal first) holds on every route, whatever its mode.
//!
//! # Transfers
//!
//! A call that continues a contact ([`CallStart::continues`]) joins that contact's recording
//! while the contact is live. When the contact's last call ends while a transfer is pending
//! (a REFER crossed it, [`Input::TransferStarted`]), the contact waits
//! [`Config::transfer_grace`] for the transferee's call before it finishes: a blind transfer
//! whose transferor hangs up before the transferee's INVITE arrives is still one file.
//!
//! What the transfer means for the recording is decided when the transferee's call joins:
//! - to an internal target: [`policy::Event::Transfer`] `{ external: false }` (a new agent
//!   segment; the recording goes on);
//! - a blind transfer to an external target: `Transfer { external: true }`, which ends the
//!   recording unless `keep_after_external_transfer`;
//! - an attended transfer (the agent consulted the target, then left) to an external or
//!   emergency target: the agent left a three-party call, [`policy::Event::AgentLeft`], which
//!   ends it unless `keep_after_agent_leaves_third_party` (or `..._emergency`).

mod digits;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use b2bua::{CallId, Leg};
use policy::{
    ActionKind, CallFacts, CallOrigin, CallPolicy, Consent, Event as PEvent, FlowDirective, Mode,
    Rules, Side,
};
use recorder::{Channel, Command, Format, RecordingMetadata};

pub use digits::DigitTap;

/// Errors of the contact core: inputs that name nothing it knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("no live call {0}")]
    UnknownCall(CallId),
}

/// Settings of the contact core.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a contact whose calls have all ended waits for the call of a pending transfer.
    pub transfer_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            transfer_grace: Duration::from_secs(30),
        }
    }
}

/// Identifies a contact's recording towards the binary.
pub type ContactKey = u64;

/// A new call, with everything known when its INVITE arrived.
#[derive(Debug, Clone)]
pub struct CallStart {
    pub call: CallId,
    /// The contact id: a new one, or for a transfer the id of the contact it continues.
    pub contact_id: String,
    /// The call continues a contact (a transfer): join that contact when it is still live.
    pub continues: bool,
    /// The leg toward the customer (channel 1).
    pub customer: Leg,
    pub route: String,
    /// The route's own `record` setting, if it has one.
    pub route_mode: Option<Mode>,
    pub format: Format,
    /// The rules in force when the call started (the policy file, or the defaults).
    pub rules: Arc<Rules>,
    pub source_zone: Option<String>,
    /// The registered account, when the agent's leg goes to a phone registered through tapir:
    /// the station, whatever an INVITE header says.
    pub station: Option<String>,
    /// The agent side's URI user: the station when nothing better names it.
    pub agent_user: Option<String>,
    pub customer_number: String,
    pub dialled_number: String,
    /// `X-Tapir-*` headers of the INVITE.
    pub x_headers: Vec<(String, String)>,
    /// Call ids, numbers and wall-clock start, for the recording's metadata.
    pub meta: RecordingMetadata,
}

/// Commands from the control API, by call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCommand {
    Start,
    Stop,
    Pause,
    Resume,
    AgentOnly,
    Both,
    Consent(Consent),
    Directive(FlowDirective),
    Disposition,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Input {
    Started(Box<CallStart>),
    Answered {
        call: CallId,
    },
    /// A leg's payload types (from its SDP).
    Codecs {
        call: CallId,
        leg: Leg,
        codecs: Vec<sdp::RtpMap>,
    },
    /// `X-Tapir-*` headers and the body of an in-dialog request (re-INVITE, UPDATE, INFO...).
    InDialog {
        call: CallId,
        leg: Leg,
        x_headers: Vec<(String, String)>,
        content_type: String,
        body: Vec<u8>,
    },
    /// A REFER crossed `call`: the transferee's call will continue the contact.
    TransferStarted {
        call: CallId,
        /// The target is outside the contact centre (its route says so).
        external: bool,
        /// The Refer-To replaces a dialog: the agent consulted the target first.
        attended: bool,
        /// The target's user part (number), for the emergency list.
        target: String,
    },
    /// The REFER on `call` failed (refused, unanswered, or the transferee reported the
    /// transfer failed with `status`): no transferred call will come, so the contact does not
    /// wait for one.
    TransferFailed {
        call: CallId,
        status: u16,
    },
    /// The announcement collected the caller's consent digit.
    Consent {
        call: CallId,
        consent: Consent,
    },
    Ended {
        call: CallId,
    },
}

/// What the binary must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A contact's recording exists from now: create its track (its file appears with the
    /// first audio). `stem` is the file name without extension, before uniquifying.
    Open {
        contact: ContactKey,
        stem: String,
        format: Format,
        meta: Box<RecordingMetadata>,
    },
    /// A recorder command for the contact's recording, effective now.
    Command {
        contact: ContactKey,
        command: Command,
    },
    /// A leg's payload types, for the contact's recordings.
    Codecs {
        contact: ContactKey,
        channel: Channel,
        codecs: Vec<sdp::RtpMap>,
    },
    /// Open a recorded statement, a separate file of the contact.
    StatementOpen {
        contact: ContactKey,
        id: String,
        stem: String,
    },
    StatementClose {
        contact: ContactKey,
        id: String,
    },
    /// The decision log changed: journal it beside the audio, so a crash keeps it.
    Journal {
        contact: ContactKey,
        decisions: serde_json::Value,
    },
    /// The contact is over: finish its files. Also for a contact that recorded nothing, so
    /// that its decision is kept.
    Finish {
        contact: ContactKey,
        contact_id: String,
        calls: Vec<CallId>,
        /// Whether any audio was asked for.
        recorded: bool,
        /// Why: the rule that started the recording, or the one that kept it off.
        reason: String,
        /// The kind of that rule (`record_policy`, `station_never`, `consent_denied`...), which
        /// names no station or number.
        rule: &'static str,
        decisions: serde_json::Value,
        /// Metadata of a contact that never opened a recording, for its decision record.
        meta: Option<Box<RecordingMetadata>>,
    },
    /// An input was not applied, for the log (never a digit or a number).
    Ignored {
        call: CallId,
        why: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct PendingTransfer {
    external: bool,
    attended: bool,
    emergency: bool,
}

struct Member {
    contact: ContactKey,
    customer: Leg,
    /// A call of a `never` station that joined the contact: its audio is never taken.
    muted: bool,
}

struct Contact {
    id: String,
    policy: CallPolicy,
    rules: Arc<Rules>,
    t0: Instant,
    /// Latest time handed to the policy: its clock must not run backwards.
    last_ms: u64,
    digits: DigitTap,
    members: usize,
    calls: Vec<CallId>,
    /// The recording track exists (`Output::Open` was sent).
    opened: bool,
    meta: RecordingMetadata,
    transfer: Option<PendingTransfer>,
    /// All calls ended with a transfer pending: finish at this instant unless one joins.
    grace_until: Option<Instant>,
    /// Entries of the decision log already journaled.
    journaled: usize,
    /// The reason of the first start, once anything was recorded.
    recorded_by: Option<policy::Reason>,
    /// The decision's reason before the hang-up.
    last_reason: policy::Reason,
    /// A call of the contact answered (a transferred call's answer is not a new one).
    answered: bool,
    /// The contact's own stop while it waits for a transferred call is in force.
    wait_stopped: bool,
    /// A call of a `never` station (or route) joined: nothing more is recorded for this
    /// contact, and that call's audio is never taken.
    blocked: bool,
}

/// Every live contact.
pub struct Contacts {
    cfg: Config,
    contacts: HashMap<ContactKey, Contact>,
    by_id: HashMap<String, ContactKey>,
    calls: HashMap<CallId, Member>,
    next_key: ContactKey,
    out: VecDeque<Output>,
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The station of a call: the registered account, else `X-Tapir-Station`, else the agent
/// side's user. A registered account is what the phone proved with its credentials; a header
/// is only what a sender says.
fn station_of(s: &CallStart) -> Option<String> {
    s.station
        .clone()
        .or_else(|| header(&s.x_headers, "X-Tapir-Station").map(str::to_owned))
        .or_else(|| s.agent_user.clone())
}

/// The file stem of a statement: `<contact>-statement-<id>`; a generated id already has that
/// form and is used as it is.
pub fn statement_stem(contact_id: &str, id: &str) -> String {
    let prefix = format!("{contact_id}-statement-");
    if id.starts_with(&prefix) {
        id.to_owned()
    } else {
        format!("{prefix}{id}")
    }
}

impl Contacts {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            contacts: HashMap::new(),
            by_id: HashMap::new(),
            calls: HashMap::new(),
            next_key: 1,
            out: VecDeque::new(),
        }
    }

    /// Live contacts (including those waiting for a transfer).
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// Where a packet of `call`'s `leg` goes: its contact's recording and channel. `None` for
    /// a call that is not recorded at all (no track).
    pub fn route(&self, call: CallId, leg: Leg) -> Option<(ContactKey, Channel)> {
        let m = self.calls.get(&call)?;
        let c = self.contacts.get(&m.contact)?;
        if !c.opened || m.muted {
            return None;
        }
        let ch = if leg == m.customer {
            Channel::Customer
        } else {
            Channel::Agent
        };
        Some((m.contact, ch))
    }

    /// The contact of a live call, for the API and tests.
    pub fn contact_of(&self, call: CallId) -> Option<&str> {
        let m = self.calls.get(&call)?;
        self.contacts.get(&m.contact).map(|c| c.id.as_str())
    }

    /// The current decision of a live call's contact.
    pub fn decision(&self, call: CallId) -> Option<policy::Decision> {
        let m = self.calls.get(&call)?;
        self.contacts.get(&m.contact).map(|c| c.policy.decision())
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Started(s) => self.start(now, *s),
            Input::Answered { call } => {
                // The contact is answered once: a transferred call's answer is not a new one.
                let Some(key) = self.calls.get(&call).map(|m| m.contact) else {
                    return;
                };
                let first = self
                    .contacts
                    .get_mut(&key)
                    .is_some_and(|c| !std::mem::replace(&mut c.answered, true));
                if first {
                    self.event(key, now, PEvent::Answered);
                }
            }
            Input::Codecs { call, leg, codecs } => {
                let Some(m) = self.calls.get(&call) else {
                    return;
                };
                let key = m.contact;
                let channel = if leg == m.customer {
                    Channel::Customer
                } else {
                    Channel::Agent
                };
                if let Some(c) = self.contacts.get_mut(&key) {
                    if channel == Channel::Agent {
                        c.digits.set_codecs(&codecs);
                    }
                    if c.opened {
                        self.out.push_back(Output::Codecs {
                            contact: key,
                            channel,
                            codecs,
                        });
                    }
                }
            }
            Input::InDialog {
                call,
                leg,
                x_headers,
                content_type,
                body,
            } => self.in_dialog(now, call, leg, &x_headers, &content_type, &body),
            Input::TransferFailed { call, status } => self.transfer_failed(now, call, status),
            Input::TransferStarted {
                call,
                external,
                attended,
                target,
            } => {
                let Some(key) = self.calls.get(&call).map(|m| m.contact) else {
                    return;
                };
                if let Some(c) = self.contacts.get_mut(&key) {
                    let emergency = c.rules.is_emergency_number(&target);
                    c.transfer = Some(PendingTransfer {
                        external,
                        attended,
                        emergency,
                    });
                    c.policy.note(
                        "transfer requested",
                        format!(
                            "{} transfer to {} target{}",
                            if attended { "attended" } else { "blind" },
                            if external {
                                "an external"
                            } else {
                                "an internal"
                            },
                            if emergency { " (emergency number)" } else { "" }
                        ),
                    );
                    self.journal(key);
                }
            }
            Input::Consent { call, consent } => {
                if let Some(key) = self.calls.get(&call).map(|m| m.contact) {
                    self.event(key, now, PEvent::Consent(consent));
                }
            }
            Input::Ended { call } => self.end_call(now, call),
        }
    }

    /// A command from the control API. `Err` for a call tapir does not know (HTTP 404).
    pub fn handle_api(
        &mut self,
        now: Instant,
        call: CallId,
        command: ApiCommand,
    ) -> Result<(), ContactError> {
        let key = self
            .calls
            .get(&call)
            .map(|m| m.contact)
            .ok_or(ContactError::UnknownCall(call))?;
        let e = match command {
            ApiCommand::Start => PEvent::ApiStart,
            ApiCommand::Stop => PEvent::ApiStop,
            ApiCommand::Pause => PEvent::ApiPause,
            ApiCommand::Resume => PEvent::ApiResume,
            ApiCommand::AgentOnly => PEvent::Directive(FlowDirective::AgentOnly),
            ApiCommand::Both => PEvent::ApiBoth,
            ApiCommand::Consent(c) => PEvent::Consent(c),
            ApiCommand::Directive(d) => PEvent::Directive(d),
            ApiCommand::Disposition => PEvent::Disposition,
        };
        self.event(key, now, e);
        Ok(())
    }

    /// An RTP datagram from the agent's leg of `call`: DTMF detection for feature codes.
    pub fn handle_agent_packet(&mut self, at: Instant, call: CallId, data: &[u8]) {
        let Some(key) = self.calls.get(&call).map(|m| m.contact) else {
            return;
        };
        let mut digits = Vec::new();
        if let Some(c) = self.contacts.get_mut(&key) {
            c.digits.handle_packet(at, data, &mut digits);
        }
        for digit in digits {
            self.digit(key, at, digit, Side::Agent);
        }
    }

    /// Advances time: lost DTMF ends, held feature-code digits, transfer grace windows.
    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<ContactKey> = self.contacts.keys().copied().collect();
        for key in keys {
            let mut digits = Vec::new();
            let Some(c) = self.contacts.get_mut(&key) else {
                continue;
            };
            c.digits.handle_timeout(now, &mut digits);
            for digit in digits {
                self.digit(key, now, digit, Side::Agent);
            }
            let Some(c) = self.contacts.get_mut(&key) else {
                continue;
            };
            let at_ms = c.at_ms(now);
            if c.policy.digit_deadline_ms().is_some_and(|d| d <= at_ms) {
                self.event(key, now, PEvent::Tick { at_ms });
            }
            let expired = self
                .contacts
                .get(&key)
                .and_then(|c| c.grace_until)
                .is_some_and(|t| t <= now);
            if expired {
                if let Some(c) = self.contacts.get_mut(&key) {
                    c.policy.note(
                        "transfer not completed",
                        "no transferred call arrived within the grace window".into(),
                    );
                }
                self.finish(now, key);
            }
        }
    }

    /// The next instant [`Contacts::handle_timeout`] must run, at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.contacts
            .values()
            .flat_map(|c| {
                let digit = c
                    .policy
                    .digit_deadline_ms()
                    .map(|ms| c.t0 + Duration::from_millis(ms));
                [c.grace_until, digit]
            })
            .flatten()
            .min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn start(&mut self, now: Instant, s: CallStart) {
        if s.continues {
            if let Some(&key) = self.by_id.get(&s.contact_id) {
                self.join(now, key, &s);
                return;
            }
        }
        let mut notes = Vec::new();
        let h = &s.x_headers;
        let queue = header(h, "X-Tapir-Queue").map(str::to_owned);
        let record_hdr = header(h, "X-Tapir-Record");
        let directives = match record_hdr.map(policy::parse_record_header) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                notes.push(format!("ignored X-Tapir-Record: {e}"));
                Vec::new()
            }
            None => Vec::new(),
        };
        let ivr_marked = directives
            .iter()
            .any(|d| matches!(d, FlowDirective::StartIvrRecording));
        let rules = match s.route_mode {
            Some(m) => Arc::new(s.rules.with_route_mode(&s.route, m)),
            None => s.rules.clone(),
        };
        let direction = rules.direction.classify(&CallOrigin {
            source_zone: s.source_zone.as_deref(),
            dialled_number: &s.dialled_number,
            ivr_marked,
            queue: queue.as_deref(),
        });
        let emergency_hdr = header(h, "X-Tapir-Emergency");
        let is_emergency = match emergency_hdr {
            Some("true" | "1") => true,
            Some("false" | "0") | None => false,
            Some(_) => {
                notes.push("ignored X-Tapir-Emergency: expected true or false".to_owned());
                false
            }
        } || rules.is_emergency_number(&s.dialled_number);
        let facts = CallFacts {
            contact_id: s.contact_id.clone(),
            route: Some(s.route.clone()),
            direction,
            station: station_of(&s),
            agent: header(h, "X-Tapir-Agent").map(str::to_owned),
            team: header(h, "X-Tapir-Team").map(str::to_owned),
            skill: header(h, "X-Tapir-Skill").map(str::to_owned),
            queue,
            customer_number: s.customer_number.clone(),
            dialled_number: s.dialled_number.clone(),
            is_emergency,
            is_third_party: false,
        };
        let mut meta = s.meta.clone();
        meta.contact_id = s.contact_id.clone();
        meta.route = s.route.clone();
        if meta.direction.is_empty() {
            meta.direction = direction.as_str().to_owned();
        }
        meta.station = facts.station.clone();
        meta.agent_id = facts.agent.clone();
        meta.team = facts.team.clone();
        meta.queue = facts.queue.clone();
        meta.skill = facts.skill.clone();
        meta.format = s.format;
        let mut policy = CallPolicy::new(&rules, facts);
        if let Some(m) = s.route_mode {
            policy.note("call set up", format!("route {} records {m}", s.route));
        }
        for n in notes {
            policy.note("INVITE headers", n);
        }
        let key = self.next_key;
        self.next_key += 1;
        let opened = !policy.is_never();
        let last_reason = policy.decision().reason;
        self.contacts.insert(
            key,
            Contact {
                id: s.contact_id.clone(),
                policy,
                rules,
                t0: now,
                last_ms: 0,
                digits: DigitTap::new(),
                members: 1,
                calls: vec![s.call],
                opened,
                meta: meta.clone(),
                transfer: None,
                grace_until: None,
                journaled: 0,
                recorded_by: None,
                last_reason,
                answered: false,
                wait_stopped: false,
                blocked: false,
            },
        );
        self.by_id.insert(s.contact_id.clone(), key);
        self.calls.insert(
            s.call,
            Member {
                contact: key,
                customer: s.customer,
                muted: false,
            },
        );
        if opened {
            self.out.push_back(Output::Open {
                contact: key,
                stem: s.contact_id.clone(),
                format: s.format,
                meta: Box::new(meta),
            });
        }
        // Consent and directives of the INVITE itself.
        self.apply_headers(key, now, h, true);
        self.journal(key);
    }

    /// A transferred call joins a live contact.
    fn join(&mut self, now: Instant, key: ContactKey, s: &CallStart) {
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        c.members += 1;
        c.calls.push(s.call);
        c.grace_until = None;
        let waited = std::mem::take(&mut c.wait_stopped);
        let t = c.transfer.take();
        // The transferred call may reach a station that is never recorded: that is absolute
        // for the rest of the contact.
        let rules = match s.route_mode {
            Some(m) => std::borrow::Cow::Owned(s.rules.with_route_mode(&s.route, m)),
            None => std::borrow::Cow::Borrowed(&*s.rules),
        };
        let station = station_of(s);
        let muted = rules
            .stations
            .mode(station.as_deref(), c.policy.facts().direction)
            == Mode::Never;
        self.calls.insert(
            s.call,
            Member {
                contact: key,
                customer: s.customer,
                muted,
            },
        );
        if muted && !c.blocked {
            c.blocked = true;
            c.policy.note(
                "transferred call joined",
                format!(
                    "the call reached station {} whose mode is never: nothing more is recorded",
                    station.as_deref().unwrap_or("(default)")
                ),
            );
            if c.opened && (c.policy.decision().recording || waited) {
                self.out.push_back(Output::Command {
                    contact: key,
                    command: Command::Stop {
                        reason: "transferred to a station that is never recorded".into(),
                    },
                });
            }
            if let Some(id) = c.policy.open_statement().filter(|_| c.opened) {
                self.out.push_back(Output::StatementClose {
                    contact: key,
                    id: id.to_owned(),
                });
            }
        }
        let e = match t {
            Some(t) if t.attended && (t.external || t.emergency) => PEvent::AgentLeft {
                emergency: t.emergency,
                third_party: true,
            },
            Some(t) => PEvent::Transfer {
                external: t.external || t.emergency,
            },
            None => PEvent::Transfer { external: false },
        };
        let from = self.out.len();
        self.event(key, now, e);
        if waited {
            self.resume_after_wait(key, from);
        }
        self.apply_headers(key, now, &s.x_headers, true);
    }

    /// The wait for a transferred call stopped the recording on the contact's own account,
    /// not the policy's: once the transfer's consequences are decided (outputs from `from`
    /// on), a stop the policy sends is already done, and what the policy still has in force
    /// starts again as a segment of its own.
    fn resume_after_wait(&mut self, key: ContactKey, from: usize) {
        let Some(c) = self.contacts.get(&key) else {
            return;
        };
        let d = c.policy.decision();
        if !c.opened || c.blocked {
            return;
        }
        let mut i = from;
        let mut started = false;
        while i < self.out.len() {
            match &self.out[i] {
                Output::Command {
                    contact,
                    command: Command::Stop { .. },
                } if *contact == key => {
                    self.out.remove(i);
                    continue;
                }
                Output::Command {
                    contact,
                    command: Command::Start { .. },
                } if *contact == key => started = true,
                _ => {}
            }
            i += 1;
        }
        if d.recording && !started {
            let reason = "the transferred call joined".to_owned();
            let mut resume = vec![Output::Command {
                contact: key,
                command: Command::Start {
                    reason: reason.clone(),
                },
            }];
            if d.paused {
                resume.push(Output::Command {
                    contact: key,
                    command: Command::Pause { reason },
                });
            }
            for (n, o) in resume.into_iter().enumerate() {
                self.out.insert(from + n, o);
            }
        }
    }

    fn transfer_failed(&mut self, now: Instant, call: CallId, status: u16) {
        let Some(key) = self.calls.get(&call).map(|m| m.contact).or_else(|| {
            // The call may have ended already (a REFER that timed out after the hang-up):
            // its contact is waiting for the transfer.
            self.contacts
                .iter()
                .find(|(_, c)| c.calls.contains(&call))
                .map(|(k, _)| *k)
        }) else {
            return;
        };
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        if c.transfer.take().is_none() {
            return;
        }
        c.policy
            .note("transfer failed", format!("the REFER came to {status}"));
        self.journal(key);
        let Some(c) = self.contacts.get(&key) else {
            return;
        };
        if c.members == 0 && c.grace_until.is_some() {
            self.finish(now, key);
        }
    }

    fn end_call(&mut self, now: Instant, call: CallId) {
        let Some(m) = self.calls.remove(&call) else {
            return;
        };
        let key = m.contact;
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        c.members = c.members.saturating_sub(1);
        if c.members > 0 {
            return;
        }
        if c.transfer.is_some() {
            c.grace_until = Some(now + self.cfg.transfer_grace);
            c.policy.note(
                "all calls ended",
                format!(
                    "waiting up to {} s for the transferred call",
                    self.cfg.transfer_grace.as_secs()
                ),
            );
            // Nothing is said while no call is up: the file leaves the wait out, and the
            // transferred call is a segment of its own.
            if c.opened && c.policy.decision().recording {
                c.wait_stopped = true;
                self.out.push_back(Output::Command {
                    contact: key,
                    command: Command::Stop {
                        reason: "the transferor left; waiting for the transferred call".into(),
                    },
                });
            }
            // An open statement would record the wait's silence: it ends here (the policy
            // closes it again at the transfer, which the recorder ignores).
            if let Some(id) = c.policy.open_statement().filter(|_| c.opened) {
                self.out.push_back(Output::StatementClose {
                    contact: key,
                    id: id.to_owned(),
                });
            }
            self.journal(key);
            return;
        }
        self.finish(now, key);
    }

    fn finish(&mut self, now: Instant, key: ContactKey) {
        self.event(key, now, PEvent::HangUp);
        let Some(c) = self.contacts.remove(&key) else {
            return;
        };
        self.calls.retain(|_, m| m.contact != key);
        if self.by_id.get(&c.id) == Some(&key) {
            self.by_id.remove(&c.id);
        }
        let recorded = c.recorded_by.is_some();
        let why = c.recorded_by.clone().unwrap_or(c.last_reason.clone());
        self.out.push_back(Output::Finish {
            contact: key,
            contact_id: c.id.clone(),
            calls: c.calls.clone(),
            recorded,
            reason: why.to_string(),
            rule: why.kind(),
            decisions: explain(&c.policy),
            meta: (!c.opened).then(|| Box::new(c.meta.clone())),
        });
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        call: CallId,
        leg: Leg,
        x_headers: &[(String, String)],
        content_type: &str,
        body: &[u8],
    ) {
        let Some(m) = self.calls.get(&call) else {
            return;
        };
        let key = m.contact;
        let side = if leg == m.customer {
            Side::Customer
        } else {
            Side::Agent
        };
        self.apply_headers(key, now, x_headers, false);
        if !body.is_empty() {
            let ct = content_type.split(';').next().unwrap_or("").trim();
            let dtmf = ct.eq_ignore_ascii_case("application/dtmf-relay")
                || ct.eq_ignore_ascii_case("application/dtmf");
            match media::dtmf::parse_info_body(content_type, body) {
                Ok(ev) => self.digit(key, now, ev.digit, side),
                Err(e) if dtmf => self.out.push_back(Output::Ignored {
                    call,
                    why: format!("INFO body is not a DTMF digit: {e}"),
                }),
                Err(_) => {}
            }
        }
    }

    /// `X-Tapir-Consent`, `X-Tapir-Record` and `X-Tapir-Disposition`. A value that does not
    /// parse changes nothing and is noted in the decision log.
    fn apply_headers(
        &mut self,
        key: ContactKey,
        now: Instant,
        h: &[(String, String)],
        invite: bool,
    ) {
        if let Some(v) = header(h, "X-Tapir-Consent") {
            match v.parse::<Consent>() {
                Ok(c) => self.event(key, now, PEvent::Consent(c)),
                Err(e) => self.note(key, "X-Tapir-Consent", format!("ignored: {e}")),
            }
        }
        if let Some(v) = header(h, "X-Tapir-Record") {
            match policy::parse_record_header(v) {
                Ok(ds) => {
                    for d in ds {
                        self.event(key, now, PEvent::Directive(d));
                    }
                }
                // The INVITE's bad header was noted when the call was set up.
                Err(e) if !invite => self.note(key, "X-Tapir-Record", format!("ignored: {e}")),
                Err(_) => {}
            }
        }
        if !invite && header(h, "X-Tapir-Disposition").is_some() {
            self.event(key, now, PEvent::Disposition);
        }
    }

    fn note(&mut self, key: ContactKey, what: &str, note: String) {
        if let Some(c) = self.contacts.get_mut(&key) {
            c.policy.note(what, note);
        }
        self.journal(key);
    }

    fn digit(&mut self, key: ContactKey, at: Instant, digit: char, side: Side) {
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        let at_ms = c.at_ms(at);
        self.event(key, at, PEvent::Dtmf { digit, side, at_ms });
    }

    /// Hands one event to the contact's policy and turns its actions into outputs.
    fn event(&mut self, key: ContactKey, _now: Instant, e: PEvent) {
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        let hang_up = matches!(e, PEvent::HangUp);
        c.policy.handle_event(e);
        while let Some(a) = c.policy.poll_action() {
            let why = a.reason.clone();
            let reason = a.reason.to_string();
            let command = |command| Output::Command {
                contact: key,
                command,
            };
            let o = match a.kind {
                ActionKind::Start => {
                    c.recorded_by.get_or_insert(why);
                    command(Command::Start { reason })
                }
                ActionKind::Stop => command(Command::Stop { reason }),
                ActionKind::Pause => command(Command::Pause { reason }),
                ActionKind::Resume => command(Command::Resume { reason }),
                ActionKind::AgentOnly => command(Command::AgentOnly { reason }),
                ActionKind::Both => command(Command::BothChannels { reason }),
                ActionKind::DiscardBuffered => command(Command::DiscardBuffered { reason }),
                ActionKind::StatementStart { id } => {
                    c.recorded_by.get_or_insert(why);
                    Output::StatementOpen {
                        contact: key,
                        stem: statement_stem(&c.id, &id),
                        id,
                    }
                }
                ActionKind::StatementStop { id } => Output::StatementClose { contact: key, id },
            };
            // A contact that can never record has no track: its commands go nowhere. Once a
            // `never` call joined, the recording was stopped for good: nothing more is sent.
            if c.opened && !c.blocked {
                self.out.push_back(o);
            }
        }
        if !hang_up {
            c.last_reason = c.policy.decision().reason;
        }
        self.journal(key);
    }

    /// Emits the decision log when it grew.
    fn journal(&mut self, key: ContactKey) {
        let Some(c) = self.contacts.get_mut(&key) else {
            return;
        };
        let n = c.policy.explain().len();
        if n == c.journaled {
            return;
        }
        c.journaled = n;
        if c.opened {
            self.out.push_back(Output::Journal {
                contact: key,
                decisions: explain(&c.policy),
            });
        }
    }
}

impl Contact {
    fn at_ms(&mut self, now: Instant) -> u64 {
        let ms = (now.saturating_duration_since(self.t0).as_millis() as u64).max(self.last_ms);
        self.last_ms = ms;
        ms
    }
}

fn explain(p: &CallPolicy) -> serde_json::Value {
    serde_json::to_value(p.explain()).unwrap_or(serde_json::Value::Null)
}
