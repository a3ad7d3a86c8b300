//! Glue between calls and the `policy` crate: the watched rules file, the facts of a call,
//! DTMF detection on the agent's leg (RFC 4733, SIP INFO, in-band), and the translation of
//! policy actions into recorder commands.
//!
//! Everything per call runs on the recorder thread, next to the call's `Recording`, so a
//! decision and the audio it governs are ordered by one clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use media::codec::{Codec, Decoder, PayloadMap};
use media::dtmf::{InbandConfig, InbandDetector, Rfc4733Config, Rfc4733Detector};
use policy::{
    ActionKind, CallFacts, CallOrigin, CallPolicy, Consent, Event as PEvent, FlowDirective, Rules,
    Side,
};

/// The rules in force: new calls take a snapshot, calls in progress keep theirs.
#[derive(Clone, Default)]
pub struct PolicyStore {
    rules: Arc<RwLock<Option<Arc<Rules>>>>,
}

impl PolicyStore {
    pub fn current(&self) -> Option<Arc<Rules>> {
        self.rules.read().unwrap().clone()
    }

    pub fn is_active(&self) -> bool {
        self.rules.read().unwrap().is_some()
    }

    fn set(&self, r: Rules) {
        *self.rules.write().unwrap() = Some(Arc::new(r));
    }
}

pub fn load_rules(path: &Path) -> Result<Rules, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rules: Rules =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    rules
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(rules)
}

/// Loads the rules file and watches it: a valid change applies to the next calls, an invalid
/// one is logged and the previous rules stay in force.
pub fn start(
    path: Option<PathBuf>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<PolicyStore> {
    let store = PolicyStore::default();
    let Some(path) = path else {
        return Ok(store);
    };
    let rules = load_rules(&path).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    store.set(rules);
    let s2 = store.clone();
    std::thread::Builder::new()
        .name("tapir-policy-watch".into())
        .spawn(move || {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last: Option<SystemTime> = stamp(&path);
            loop {
                // Polling the modification time works on every filesystem (including the bind
                // mounts and ConfigMaps operators use) and costs one stat a second.
                std::thread::sleep(Duration::from_secs(1));
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match load_rules(&path) {
                    Ok(r) => {
                        s2.set(r);
                        metrics.policy_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(file = %path.display(), "policy reloaded; applies to new calls");
                    }
                    Err(e) => {
                        metrics.policy_reloads.with_label_values(&["rejected"]).inc();
                        tracing::error!("policy change rejected, previous rules stay in force: {e}");
                    }
                }
            }
        })?;
    Ok(store)
}

/// What the signalling side knows about a new call, for the policy.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    pub source_zone: Option<String>,
    pub route: String,
    pub station: Option<String>,
    pub customer_number: String,
    pub dialled_number: String,
    pub x_headers: Vec<(String, String)>,
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A recorder-level instruction derived from a policy action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Command(recorder::Command),
    StatementStart(String),
    StatementStop(String),
}

/// Policy and DTMF state of one call.
pub struct CallControl {
    policy: CallPolicy,
    t0: Instant,
    /// Latest time handed to the policy: its clock must not run backwards, and packets and
    /// messages reach this thread stamped by different senders.
    last_ms: std::cell::Cell<u64>,
    rfc4733: Option<Rfc4733Detector>,
    inband: Option<InbandDetector>,
    agent_codecs: PayloadMap,
    decoder: Decoder,
    pcm: Box<[i16; 2048]>,
}

impl CallControl {
    pub fn new(
        rules: &Rules,
        contact_id: &str,
        input: &CallInput,
        now: Instant,
    ) -> (Self, Vec<Instruction>) {
        let h = &input.x_headers;
        let queue = header(h, "X-Tapir-Queue").map(str::to_string);
        let record_hdr = header(h, "X-Tapir-Record").unwrap_or("");
        let directives = policy::parse_record_header(record_hdr).unwrap_or_default();
        let ivr_marked = directives
            .iter()
            .any(|d| matches!(d, FlowDirective::StartIvrRecording));
        let direction = rules.direction.classify(&CallOrigin {
            source_zone: input.source_zone.as_deref(),
            dialled_number: &input.dialled_number,
            ivr_marked,
            queue: queue.as_deref(),
        });
        let facts = CallFacts {
            contact_id: contact_id.to_string(),
            route: Some(input.route.clone()),
            direction,
            station: header(h, "X-Tapir-Station")
                .map(str::to_string)
                .or_else(|| input.station.clone()),
            agent: header(h, "X-Tapir-Agent").map(str::to_string),
            team: header(h, "X-Tapir-Team").map(str::to_string),
            skill: header(h, "X-Tapir-Skill").map(str::to_string),
            queue,
            customer_number: input.customer_number.clone(),
            dialled_number: input.dialled_number.clone(),
            is_emergency: header(h, "X-Tapir-Emergency").is_some_and(|v| v == "true" || v == "1"),
            is_third_party: false,
        };
        let mut cc = Self {
            policy: CallPolicy::new(rules, facts),
            t0: now,
            last_ms: std::cell::Cell::new(0),
            rfc4733: None,
            inband: None,
            agent_codecs: PayloadMap::with_static(),
            decoder: Decoder::new(),
            pcm: Box::new([0; 2048]),
        };
        let mut out = Vec::new();
        cc.apply_headers(h, &mut out);
        (cc, out)
    }

    fn at_ms(&self, now: Instant) -> u64 {
        let ms =
            (now.saturating_duration_since(self.t0).as_millis() as u64).max(self.last_ms.get());
        self.last_ms.set(ms);
        ms
    }

    /// Handles `X-Tapir-Record` and `X-Tapir-Consent` on an INVITE or in-dialog request.
    pub fn apply_headers(&mut self, h: &[(String, String)], out: &mut Vec<Instruction>) {
        if let Some(v) = header(h, "X-Tapir-Consent") {
            match v.trim().parse::<Consent>() {
                Ok(c) => self.event(PEvent::Consent(c), out),
                Err(e) => tracing::warn!("ignored X-Tapir-Consent '{v}': {e}"),
            }
        }
        if let Some(v) = header(h, "X-Tapir-Record") {
            match policy::parse_record_header(v) {
                Ok(ds) => {
                    for d in ds {
                        self.event(PEvent::Directive(d), out);
                    }
                }
                Err(e) => tracing::warn!("ignored X-Tapir-Record '{v}': {e}"),
            }
        }
    }

    /// The agent leg's payload types changed (SDP): choose the DTMF detector to run.
    pub fn set_agent_codecs(&mut self, codecs: &[sdp::RtpMap]) {
        let mut map = PayloadMap::with_static();
        let mut te = None;
        for c in codecs {
            map.insert_rtpmap(c.payload_type, &c.encoding, c.clock_rate);
            if c.encoding.eq_ignore_ascii_case("telephone-event") {
                te = Some((c.payload_type, c.clock_rate));
            }
        }
        self.agent_codecs = map;
        match te {
            Some((pt, rate)) => {
                self.rfc4733 = Some(Rfc4733Detector::new(Rfc4733Config {
                    payload_type: pt,
                    clock_rate: rate,
                    ..Default::default()
                }));
                self.inband = None;
            }
            None => {
                // No telephone-event negotiated: listen for tones in the G.711 audio.
                self.rfc4733 = None;
                self.inband = Some(InbandDetector::new(InbandConfig::default()));
            }
        }
    }

    /// An RTP packet from the agent's leg.
    pub fn on_agent_packet(&mut self, at: Instant, data: &[u8], out: &mut Vec<Instruction>) {
        let Ok(v) = media::rtp::RtpView::parse(data) else {
            return;
        };
        if let Some(d) = self.rfc4733.as_mut() {
            let r = d.handle_rtp(at, &v);
            tracing::trace!(
                pt = v.payload_type(),
                ts = v.timestamp(),
                ssrc = v.ssrc(),
                ?r,
                "agent packet"
            );
        } else if let Some(d) = self.inband.as_mut() {
            let codec = self.agent_codecs.get(v.payload_type());
            if matches!(codec, Codec::Pcmu | Codec::Pcma) {
                if let Ok(n) = self.decoder.decode(codec, v.payload(), &mut self.pcm[..]) {
                    d.push_samples(&self.pcm[..n]);
                }
            }
        }
        self.collect_digits(at, out);
    }

    fn collect_digits(&mut self, at: Instant, out: &mut Vec<Instruction>) {
        let at_ms = self.at_ms(at);
        let mut digits = [None::<char>; 8];
        let mut n = 0;
        if let Some(d) = self.rfc4733.as_mut() {
            d.handle_timeout(at);
            while let Some(e) = d.poll_event() {
                if n < digits.len() {
                    digits[n] = Some(e.digit);
                    n += 1;
                }
            }
        }
        if let Some(d) = self.inband.as_mut() {
            while let Some(e) = d.poll_event() {
                if n < digits.len() {
                    digits[n] = Some(e.digit);
                    n += 1;
                }
            }
        }
        for digit in digits.into_iter().flatten() {
            // The digit itself is not logged: agents key card and phone numbers.
            tracing::debug!(source = "agent", "DTMF digit detected");
            self.event(
                PEvent::Dtmf {
                    digit,
                    side: Side::Agent,
                    at_ms,
                },
                out,
            );
        }
    }

    /// A DTMF digit from a SIP INFO on either leg.
    pub fn on_info_digit(
        &mut self,
        digit: char,
        agent: bool,
        now: Instant,
        out: &mut Vec<Instruction>,
    ) {
        let side = if agent { Side::Agent } else { Side::Customer };
        let at_ms = self.at_ms(now);
        self.event(PEvent::Dtmf { digit, side, at_ms }, out);
    }

    /// Periodic: expire lost DTMF ends and held feature-code digits.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Instruction>) {
        self.collect_digits(now, out);
        let at_ms = self.at_ms(now);
        if self.policy.digit_deadline_ms().is_some_and(|d| d <= at_ms) {
            self.event(PEvent::Tick { at_ms }, out);
        }
    }

    pub fn event(&mut self, e: PEvent, out: &mut Vec<Instruction>) {
        self.policy.handle_event(e);
        while let Some(a) = self.policy.poll_action() {
            let reason = a.reason.to_string();
            tracing::info!(action = ?a.kind, %reason, "policy decision");
            let i = match a.kind {
                ActionKind::Start => Instruction::Command(recorder::Command::Start { reason }),
                ActionKind::Stop => Instruction::Command(recorder::Command::Stop { reason }),
                ActionKind::Pause => Instruction::Command(recorder::Command::Pause { reason }),
                ActionKind::Resume => Instruction::Command(recorder::Command::Resume { reason }),
                ActionKind::AgentOnly => {
                    Instruction::Command(recorder::Command::AgentOnly { reason })
                }
                ActionKind::Both => {
                    Instruction::Command(recorder::Command::BothChannels { reason })
                }
                ActionKind::StatementStart { id } => Instruction::StatementStart(id),
                ActionKind::StatementStop { id } => Instruction::StatementStop(id),
                // Nothing before a Start is ever written (a stopped span is not part of the
                // file and commands apply from the instant they are given), so there is no
                // buffered audio to drop.
                ActionKind::DiscardBuffered => continue,
            };
            out.push(i);
        }
    }

    /// The decision log, for the recording's metadata.
    pub fn explain(&self) -> serde_json::Value {
        serde_json::to_value(self.policy.explain()).unwrap_or(serde_json::Value::Null)
    }
}
