//! Recording settings and the recorder thread that turns tapped RTP into files.
//!
//! The relay hands each tapped packet to a bounded `sync_channel` with `try_send`: when the
//! recorder falls behind, the packet is dropped and counted, and forwarding is never delayed.
//! One dedicated OS thread owns every active [`recorder::Recording`] (the sans-IO core) and its
//! file sink, so disk writes never run on the tokio workers that relay media. Finished MP3
//! recordings are spooled as WAV (crash-repairable, and a live LAME encoder costs ~280 KiB per
//! call) and transcoded on a separate finisher thread, so a long transcode never stalls the
//! live recordings.
//!
//! Files are written to `spool_dir` while the call lasts and moved to `recordings_dir` with
//! their JSON sidecar when it ends. On start-up every file left in the spool is repaired,
//! marked interrupted and moved too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use b2bua::{CallId, Leg};
use media::codec::PayloadMap;
use recorder::{
    create_sink, Channel, Command, Output, Recording, RecordingMetadata, Sink, SinkOptions,
};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::policy_link::{CallControl, CallInput, Instruction, PolicyStore};
use crate::relay::TapPacket;

pub use recorder::Format;

/// Reads a `format` value of a route or of the registrar.
pub fn parse_format(s: &str) -> Option<Format> {
    match s {
        "wav" => Some(Format::Wav),
        "mp3" => Some(Format::Mp3),
        _ => None,
    }
}

/// When a call is recorded, until the policy engine decides per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Never record.
    #[default]
    Never,
    /// Record from answer to hang-up.
    Always,
    /// Record when asked (control API).
    OnDemand,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "never" => Some(Self::Never),
            "always" => Some(Self::Always),
            "on_demand" => Some(Self::OnDemand),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Default mode for routes that do not set `record`.
    #[serde(default)]
    pub mode: Mode,
    /// Where recordings are written while the call lasts.
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    /// Where finished recordings and their sidecars are kept.
    #[serde(default = "default_recordings")]
    pub recordings_dir: PathBuf,
    /// Default format for routes that do not set `format`.
    #[serde(default)]
    pub format: Format,
    /// How far the recorder's output runs behind the live call, to reorder late packets.
    #[serde(default = "default_jitter_ms")]
    pub jitter_ms: u64,
    /// Recording policy rules (station modes, *2, consent, policies); watched for changes.
    /// When set, the policy decides for every route that does not set `record` itself.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
}

fn default_spool() -> PathBuf {
    PathBuf::from("spool")
}

fn default_recordings() -> PathBuf {
    PathBuf::from("recordings")
}

fn default_jitter_ms() -> u64 {
    160
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Never,
            spool_dir: default_spool(),
            recordings_dir: default_recordings(),
            format: Format::Wav,
            jitter_ms: default_jitter_ms(),
            policy_file: None,
        }
    }
}

impl RecordingConfig {
    pub fn validate(&self) -> Result<()> {
        if self.spool_dir.as_os_str().is_empty() || self.recordings_dir.as_os_str().is_empty() {
            bail!("recording: spool_dir and recordings_dir must not be empty");
        }
        if !(20..=500).contains(&self.jitter_ms) {
            bail!("recording.jitter_ms must be within 20..=500");
        }
        Ok(())
    }
}

/// A new call, as the recorder needs it.
pub struct CallStart {
    pub call: CallId,
    pub meta: RecordingMetadata,
    pub customer: Leg,
    /// `None`: the policy decides.
    pub mode: Option<Mode>,
    pub format: Format,
    pub input: CallInput,
}

/// Period of the recorder thread: how often it takes the queued packets and writes audio.
const TICK_MS: u64 = 20;

/// The recorder thread's control queue. Every message carries the instant it was sent: the
/// thread takes its queue only once per tick, and a call's time zero or a command's effect
/// must be the instant the event happened, not the instant the thread got to it (a time zero
/// taken up to a tick late would place the first packet of each leg before the recording
/// began, outside the file).
#[derive(Clone)]
pub struct RecTx(std::sync::mpsc::Sender<(Instant, RecCtl)>);

impl RecTx {
    /// Queues `c`, stamped now. `false` when the recorder thread is gone.
    pub fn send(&self, c: RecCtl) -> bool {
        self.0.send((Instant::now(), c)).is_ok()
    }
}

/// Messages from the signalling side to the recorder thread.
pub enum RecCtl {
    Started(Box<CallStart>),
    /// `X-Tapir-*` headers and DTMF bodies of in-dialog requests.
    InDialog {
        call: CallId,
        leg: Leg,
        x_headers: Vec<(String, String)>,
        content_type: String,
        body: Vec<u8>,
    },
    /// Consent or a flow directive from the control API.
    Policy {
        call: CallId,
        event: policy::Event,
        reply: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    Codecs {
        call: CallId,
        leg: Leg,
        codecs: Vec<sdp::RtpMap>,
    },
    Answered {
        call: CallId,
    },
    Command {
        call: CallId,
        command: Command,
        reply: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    Ended {
        call: CallId,
    },
}

/// One file being written: the call recording or a recorded statement.
struct Track {
    rec: Recording,
    meta: RecordingMetadata,
    sink: Option<Box<dyn Sink>>,
    /// Spool path of the audio (always WAV while recording).
    path: PathBuf,
    failed: bool,
}

struct Active {
    /// Other calls of the same contact (transfers) still feeding this recording.
    members: usize,
    /// The owning call has ended; the recording finishes when the last member ends.
    owner_ended: bool,
    main: Track,
    statements: Vec<Track>,
    customer: Leg,
    mode: Option<Mode>,
    format: Format,
    control: Option<CallControl>,
    /// Latest payload maps (customer, agent), for statements opened later.
    codecs: [Option<PayloadMap>; 2],
}

impl Active {
    fn channel(&self, leg: Leg) -> Channel {
        if leg == self.customer {
            Channel::Customer
        } else {
            Channel::Agent
        }
    }
}

pub struct RecorderThread {
    cfg: RecordingConfig,
    tap: Receiver<TapPacket>,
    ctl: Receiver<(Instant, RecCtl)>,
    calls: HashMap<CallId, Active>,
    metrics: Arc<Metrics>,
    finisher: std::sync::mpsc::Sender<Finished>,
    tap_drops_seen: u64,
    policy: PolicyStore,
    /// Which call owns the recording of each contact id.
    contacts: HashMap<String, CallId>,
    /// Calls that continue another call's contact (transfers), with the leg that flips
    /// orientation relative to the owner: their packets go into the owner's recording.
    aliases: HashMap<CallId, (CallId, bool)>,
}

/// Starts the recorder and finisher threads; returns the tap sender (for the relay) and the
/// control sender (for the engine and the HTTP API).
pub fn start(
    cfg: RecordingConfig,
    tap_queue: usize,
    metrics: Arc<Metrics>,
    policy: PolicyStore,
) -> Result<(SyncSender<TapPacket>, RecTx)> {
    std::fs::create_dir_all(&cfg.spool_dir)
        .map_err(|e| anyhow::anyhow!("cannot create spool dir {}: {e}", cfg.spool_dir.display()))?;
    std::fs::create_dir_all(&cfg.recordings_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create recordings dir {}: {e}",
            cfg.recordings_dir.display()
        )
    })?;
    repair_on_start(&cfg, &metrics);
    let (tap_tx, tap_rx) = std::sync::mpsc::sync_channel(tap_queue);
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let (fin_tx, fin_rx) = std::sync::mpsc::channel();
    let dir = cfg.recordings_dir.clone();
    let m2 = metrics.clone();
    std::thread::Builder::new()
        .name("tapir-finisher".into())
        .spawn(move || finisher(fin_rx, dir, m2))?;
    let t = RecorderThread {
        cfg,
        tap: tap_rx,
        ctl: ctl_rx,
        calls: HashMap::new(),
        metrics,
        finisher: fin_tx,
        tap_drops_seen: 0,
        policy,
        contacts: HashMap::new(),
        aliases: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("tapir-recorder".into())
        .spawn(move || t.run())?;
    Ok((tap_tx, RecTx(ctl_tx)))
}

fn repair_on_start(cfg: &RecordingConfig, metrics: &Metrics) {
    match recorder::repair_spool(&cfg.spool_dir) {
        Ok(files) => {
            for f in files {
                tracing::warn!(
                    file = %f.path.display(),
                    duration_ms = f.duration_ms,
                    "repaired a recording interrupted by a crash"
                );
                metrics
                    .recordings_total
                    .with_label_values(&["interrupted"])
                    .inc();
                move_to(&f.path, &cfg.recordings_dir);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot repair the spool"),
    }
}

/// Moves a recording and its sidecar into `dir`.
fn move_to(audio: &Path, dir: &Path) -> Option<PathBuf> {
    let name = audio.file_name()?;
    let dest = dir.join(name);
    if let Err(e) = std::fs::rename(audio, &dest) {
        tracing::error!(file = %audio.display(), error = %e, "cannot move recording");
        return None;
    }
    let side = recorder::sidecar_path(audio);
    if side.exists() {
        let _ = std::fs::rename(&side, recorder::sidecar_path(&dest));
    }
    Some(dest)
}

struct Finished {
    path: PathBuf,
    meta: RecordingMetadata,
    format: Format,
}

/// Moves finished recordings out of the spool, transcoding MP3 ones first.
fn finisher(rx: Receiver<Finished>, dir: PathBuf, metrics: Arc<Metrics>) {
    while let Ok(mut f) = rx.recv() {
        let mut audio = f.path.clone();
        if f.format == Format::Mp3 && f.meta.error.is_none() {
            let mp3 = f.path.with_extension("mp3");
            match recorder::transcode_wav_to_mp3(&f.path, &mp3, SinkOptions::default()) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&f.path);
                    let _ = std::fs::remove_file(recorder::sidecar_path(&f.path));
                    f.meta.format = Format::Mp3;
                    audio = mp3;
                }
                Err(e) => tracing::error!(error = %e, "MP3 transcode failed; keeping WAV"),
            }
        }
        if let Err(e) = f.meta.write_to(&recorder::sidecar_path(&audio)) {
            tracing::error!(error = %e, "cannot write recording metadata");
        }
        if let Some(dest) = move_to(&audio, &dir) {
            tracing::info!(file = %dest.display(), duration_ms = f.meta.duration_ms, "recording finished");
        }
        let result = if f.meta.error.is_some() {
            "error"
        } else {
            "ok"
        };
        metrics.recordings_total.with_label_values(&[result]).inc();
    }
}

impl RecorderThread {
    fn run(mut self) {
        // The thread wakes on its own clock and takes every queued packet at once. It never
        // parks on the tap queue: a parked receiver would make every relayed packet pay for a
        // cross-thread wake-up (a futex call on each side), which at 100 packets per call and
        // second costs more than the recording itself. The queue holds far more than one
        // period of packets, and the recorder's jitter delay absorbs the wait.
        let tick = Duration::from_millis(TICK_MS);
        let mut next_tick = Instant::now() + tick;
        let mut ended = Vec::with_capacity(64);
        loop {
            if self.drain_queues(&mut ended).is_err() {
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = (next_tick + tick).max(now);
            }
            std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
        }
    }

    /// Takes every queued control message and packet. A call's end waits until the packets
    /// queued with it are placed: they arrived before the hang-up and belong in its file.
    /// `Err` when the signalling side is gone.
    fn drain_queues(&mut self, ended: &mut Vec<(Instant, RecCtl)>) -> Result<(), TryRecvError> {
        loop {
            match self.ctl.try_recv() {
                Ok((at, c @ RecCtl::Ended { .. })) => ended.push((at, c)),
                Ok((at, c)) => self.on_ctl(at, c),
                Err(TryRecvError::Empty) => break,
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.tap.try_recv() {
                Ok(p) => self.on_packet(&p),
                Err(TryRecvError::Empty) => break,
                Err(e) => return Err(e),
            }
        }
        for (at, c) in ended.drain(..) {
            self.on_ctl(at, c);
        }
        Ok(())
    }

    /// The call owning `call`'s recording, and `leg` seen from that call.
    fn resolve(&self, call: CallId, leg: Leg) -> (CallId, Leg) {
        match self.aliases.get(&call) {
            Some(&(owner, flip)) => (owner, if flip { leg.other() } else { leg }),
            None => (call, leg),
        }
    }

    fn on_packet(&mut self, p: &TapPacket) {
        let mut ins = Vec::new();
        let (call, leg) = self.resolve(p.call, p.leg);
        if let Some(a) = self.calls.get_mut(&call) {
            let ch = a.channel(leg);
            let data = &p.data[..p.len as usize];
            a.main.rec.handle_packet(p.at, ch, data);
            for t in &mut a.statements {
                t.rec.handle_packet(p.at, ch, data);
            }
            if ch == Channel::Agent {
                if let Some(c) = a.control.as_mut() {
                    c.on_agent_packet(p.at, data, &mut ins);
                }
            }
        }
        if !ins.is_empty() {
            self.apply(call, p.at, ins);
        }
    }

    /// Carries out policy instructions on a call's recordings.
    fn apply(&mut self, call: CallId, now: Instant, ins: Vec<Instruction>) {
        if !self.calls.contains_key(&call) {
            return;
        }
        for i in ins {
            let Some(a) = self.calls.get(&call) else {
                return;
            };
            let path = match &i {
                Instruction::StatementStart(id) => {
                    Some(self.unique_path(&format!("{}-statement-{id}", a.main.meta.contact_id)))
                }
                _ => None,
            };
            let Some(a) = self.calls.get_mut(&call) else {
                return;
            };
            match i {
                Instruction::Command(c) => a.main.rec.handle_command(now, c),
                Instruction::StatementStart(id) => {
                    let Some(path) = path else { continue };
                    let mut t = new_track(&self.cfg, now, a.main.meta.clone(), path);
                    t.meta.statement_id = Some(id.clone());
                    for (ch, map) in [Channel::Customer, Channel::Agent]
                        .into_iter()
                        .zip(&a.codecs)
                    {
                        if let Some(m) = map {
                            t.rec.set_codecs(ch, m);
                        }
                    }
                    t.rec.handle_command(
                        now,
                        Command::Start {
                            reason: format!("statement {id}"),
                        },
                    );
                    a.statements.push(t);
                }
                Instruction::StatementStop(id) => {
                    if let Some(pos) = a
                        .statements
                        .iter()
                        .position(|t| t.meta.statement_id.as_deref() == Some(&id))
                    {
                        let mut t = a.statements.remove(pos);
                        t.rec.finish(now, "statement stopped");
                        drain_track(call, &mut t, &self.metrics);
                        finish_track(call, t, a.format, &self.metrics, &self.finisher);
                    }
                }
            }
        }
        self.drain(call);
    }

    fn tick(&mut self, now: Instant) {
        let drops = self.metrics.tap_dropped.get();
        let new_drops = drops.saturating_sub(self.tap_drops_seen);
        self.tap_drops_seen = drops;
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(a) = self.calls.get_mut(&id) {
                // The tap counts drops for the whole process; charge them to every active
                // recording, which may over-report but never hides a loss.
                if new_drops > 0 {
                    a.main.rec.note_tap_drops(new_drops);
                }
                a.main.rec.handle_timeout(now);
                for t in &mut a.statements {
                    t.rec.handle_timeout(now);
                }
                let mut ins = Vec::new();
                if let Some(c) = a.control.as_mut() {
                    c.tick(now, &mut ins);
                }
                if !ins.is_empty() {
                    self.apply(id, now, ins);
                }
            }
            self.drain(id);
        }
    }

    /// A new call: a recording (and policy) for it, or, for a transfer, a place in its
    /// contact's recording.
    fn start_call(&mut self, now: Instant, start: CallStart) {
        let CallStart {
            call,
            meta,
            customer,
            mode,
            format,
            input,
        } = start;
        if let Some(&owner) = self.contacts.get(&meta.contact_id) {
            if let Some(a) = self.calls.get_mut(&owner) {
                // A transfer: this call's audio continues the contact's recording.
                a.members += 1;
                self.aliases.insert(call, (owner, customer != a.customer));
                let mut ins = Vec::new();
                if let Some(ctl) = a.control.as_mut() {
                    ctl.event(policy::Event::Transfer { external: false }, &mut ins);
                }
                tracing::info!(
                    call,
                    owner,
                    "transferred call joins its contact's recording"
                );
                self.apply(owner, now, ins);
                return;
            }
        }
        if meta.encrypted.is_some() && mode != Some(Mode::Never) {
            // Media tapir cannot decrypt is not recorded; a sidecar without audio says that
            // the call happened and why there is no file.
            let path = self.unique_path(&meta.contact_id);
            let name = recorder::metadata::sidecar_path(&path);
            let side = self
                .cfg
                .recordings_dir
                .join(name.file_name().unwrap_or_default());
            let mut meta = meta;
            meta.complete = true;
            if let Err(e) = meta.write_to(&side) {
                tracing::error!(call, error = %e, "cannot write the sidecar of an encrypted call");
            }
            return;
        }
        let rules = match mode {
            Some(Mode::Never) => return,
            Some(_) => None,
            None => match self.policy.current() {
                Some(r) => Some(r),
                None => return,
            },
        };
        self.contacts.insert(meta.contact_id.clone(), call);
        let contact = meta.contact_id.clone();
        let path = self.unique_path(&contact);
        let main = new_track(&self.cfg, now, meta, path);
        let mut ins = Vec::new();
        let control = rules.map(|r| {
            let (c, i) = CallControl::new(&r, &contact, &input, now);
            ins = i;
            c
        });
        self.calls.insert(
            call,
            Active {
                members: 0,
                owner_ended: false,
                main,
                statements: Vec::new(),
                customer,
                mode,
                format,
                control,
                codecs: [None, None],
            },
        );
        self.apply(call, now, ins);
    }

    /// Sends a transferred call's messages to the call that owns its contact's recording.
    fn redirect(&mut self, now: Instant, c: RecCtl) -> Option<RecCtl> {
        Some(match c {
            RecCtl::Started(start) => {
                self.start_call(now, *start);
                return None;
            }
            RecCtl::Ended { call } => match self.aliases.remove(&call) {
                Some((owner, _)) => {
                    let done = match self.calls.get_mut(&owner) {
                        Some(a) => {
                            a.members -= 1;
                            a.owner_ended && a.members == 0
                        }
                        None => false,
                    };
                    if !done {
                        return None;
                    }
                    RecCtl::Ended { call: owner }
                }
                None => {
                    if let Some(a) = self.calls.get_mut(&call) {
                        if a.members > 0 {
                            a.owner_ended = true;
                            return None;
                        }
                    }
                    RecCtl::Ended { call }
                }
            },
            RecCtl::Answered { call } if self.aliases.contains_key(&call) => return None,
            RecCtl::Codecs { call, leg, codecs } => {
                let (call, leg) = self.resolve(call, leg);
                RecCtl::Codecs { call, leg, codecs }
            }
            RecCtl::InDialog {
                call,
                leg,
                x_headers,
                content_type,
                body,
            } => {
                let (call, leg) = self.resolve(call, leg);
                RecCtl::InDialog {
                    call,
                    leg,
                    x_headers,
                    content_type,
                    body,
                }
            }
            RecCtl::Policy { call, event, reply } => RecCtl::Policy {
                call: self.resolve(call, Leg::A).0,
                event,
                reply,
            },
            RecCtl::Command {
                call,
                command,
                reply,
            } => RecCtl::Command {
                call: self.resolve(call, Leg::A).0,
                command,
                reply,
            },
            other => other,
        })
    }

    /// One control message, sent at `now`.
    fn on_ctl(&mut self, now: Instant, c: RecCtl) {
        let Some(c) = self.redirect(now, c) else {
            return;
        };
        match c {
            // Handled by `redirect`.
            RecCtl::Started(_) => {}
            RecCtl::Codecs { call, leg, codecs } => {
                if let Some(a) = self.calls.get_mut(&call) {
                    let mut map = PayloadMap::with_static();
                    for c in &codecs {
                        map.insert_rtpmap(c.payload_type, &c.encoding, c.clock_rate);
                    }
                    let ch = a.channel(leg);
                    a.main.rec.set_codecs(ch, &map);
                    for t in &mut a.statements {
                        t.rec.set_codecs(ch, &map);
                    }
                    if ch == Channel::Agent {
                        if let Some(c) = a.control.as_mut() {
                            c.set_agent_codecs(&codecs);
                        }
                    }
                    a.codecs[usize::from(ch == Channel::Agent)] = Some(map);
                }
            }
            RecCtl::Answered { call } => {
                let mut ins = Vec::new();
                if let Some(a) = self.calls.get_mut(&call) {
                    if a.mode == Some(Mode::Always) {
                        ins.push(Instruction::Command(Command::Start {
                            reason: "route: always".into(),
                        }));
                    }
                    if let Some(c) = a.control.as_mut() {
                        c.event(policy::Event::Answered, &mut ins);
                    }
                }
                self.apply(call, now, ins);
            }
            RecCtl::InDialog {
                call,
                leg,
                x_headers,
                content_type,
                body,
            } => {
                let mut ins = Vec::new();
                if let Some(a) = self.calls.get_mut(&call) {
                    let agent = a.channel(leg) == Channel::Agent;
                    if let Some(c) = a.control.as_mut() {
                        c.apply_headers(&x_headers, &mut ins);
                        if !body.is_empty() {
                            match media::dtmf::parse_info_body(&content_type, &body) {
                                Ok(ev) => c.on_info_digit(ev.digit, agent, now, &mut ins),
                                Err(e) => tracing::debug!(call, "INFO body is not DTMF: {e}"),
                            }
                        }
                    }
                }
                self.apply(call, now, ins);
            }
            RecCtl::Policy { call, event, reply } => {
                let mut ins = Vec::new();
                let known = match self.calls.get_mut(&call).and_then(|a| a.control.as_mut()) {
                    Some(c) => {
                        c.event(event, &mut ins);
                        true
                    }
                    None => false,
                };
                if let Some(r) = reply {
                    let _ = r.send(known);
                }
                self.apply(call, now, ins);
            }
            RecCtl::Command {
                call,
                command,
                reply,
            } => {
                let mut ins = Vec::new();
                let known = match self.calls.get_mut(&call) {
                    Some(a) => {
                        match a.control.as_mut() {
                            // With a policy, the API ranks as on-demand: the policy decides
                            // (a refused consent still wins).
                            Some(c) => {
                                let e = match command {
                                    Command::Start { .. } => Some(policy::Event::ApiStart),
                                    Command::Stop { .. } => Some(policy::Event::ApiStop),
                                    Command::Pause { .. } => Some(policy::Event::ApiPause),
                                    Command::Resume { .. } => Some(policy::Event::ApiResume),
                                    Command::AgentOnly { .. } => Some(policy::Event::Directive(
                                        policy::FlowDirective::AgentOnly,
                                    )),
                                    Command::BothChannels { .. } => None,
                                };
                                match e {
                                    Some(e) => c.event(e, &mut ins),
                                    None => ins.push(Instruction::Command(command)),
                                }
                            }
                            None => ins.push(Instruction::Command(command)),
                        }
                        true
                    }
                    None => false,
                };
                if let Some(r) = reply {
                    let _ = r.send(known);
                }
                self.apply(call, now, ins);
            }
            RecCtl::Ended { call } => {
                let mut ins = Vec::new();
                if let Some(a) = self.calls.get_mut(&call) {
                    if let Some(c) = a.control.as_mut() {
                        c.event(policy::Event::HangUp, &mut ins);
                    }
                }
                self.apply(call, now, ins);
                let Some(mut a) = self.calls.remove(&call) else {
                    return;
                };
                self.contacts.retain(|_, owner| *owner != call);
                let decisions = a.control.as_ref().map(|c| c.explain());
                let mut tracks = std::mem::take(&mut a.statements);
                tracks.insert(0, a.main);
                for mut t in tracks {
                    t.rec.finish(now, "call ended");
                    drain_track(call, &mut t, &self.metrics);
                    t.meta.decisions = decisions.clone();
                    finish_track(call, t, a.format, &self.metrics, &self.finisher);
                }
            }
        }
    }

    /// The spool path of a new file named after `name`. Characters that could leave the spool
    /// or break the name are replaced, and a name already taken, by a live track or by a file
    /// an earlier call left in the spool or the recordings (a transferred call whose contact's
    /// first recording has already finished, a statement id used twice), gets a `-2`, `-3`...
    /// suffix: a recording never overwrites another.
    fn unique_path(&self, name: &str) -> PathBuf {
        let safe: String = name
            .chars()
            .take(160)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let spool = &self.cfg.spool_dir;
        let taken = |stem: &str| {
            let wav = spool.join(format!("{stem}.wav"));
            self.calls
                .values()
                .any(|a| a.main.path == wav || a.statements.iter().any(|t| t.path == wav))
                || ["wav", "mp3"].iter().any(|ext| {
                    let f = format!("{stem}.{ext}");
                    spool.join(&f).exists() || self.cfg.recordings_dir.join(&f).exists()
                })
        };
        let mut stem = safe.clone();
        let mut n = 1u32;
        while taken(&stem) {
            n += 1;
            stem = format!("{safe}-{n}");
        }
        spool.join(format!("{stem}.wav"))
    }

    fn drain(&mut self, call: CallId) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        drain_track(call, &mut a.main, &self.metrics);
        for t in &mut a.statements {
            drain_track(call, t, &self.metrics);
        }
    }
}

fn new_track(cfg: &RecordingConfig, now: Instant, meta: RecordingMetadata, path: PathBuf) -> Track {
    Track {
        rec: Recording::new(
            now,
            recorder::RecordingConfig {
                jitter_delay: Duration::from_millis(cfg.jitter_ms),
                ..Default::default()
            },
        ),
        meta,
        sink: None,
        path,
        failed: false,
    }
}

/// Closes a finished track's file and hands it to the finisher; a track that never wrote
/// audio leaves no file.
fn finish_track(
    call: CallId,
    mut t: Track,
    format: Format,
    metrics: &Metrics,
    finisher: &std::sync::mpsc::Sender<Finished>,
) {
    let Some(mut s) = t.sink.take() else {
        return;
    };
    if let Err(e) = s.finish() {
        tracing::error!(call, error = %e, "cannot finish recording");
        t.meta.error.get_or_insert(e.to_string());
    }
    metrics.recordings_active.dec();
    t.meta.update_from(&t.rec);
    t.meta.complete = true;
    let _ = finisher.send(Finished {
        path: t.path,
        meta: t.meta,
        format,
    });
}

/// Hands a track's output to its sink; opens the file on the first audio.
fn drain_track(call: CallId, t: &mut Track, metrics: &Metrics) {
    while let Some(out) = t.rec.poll_output() {
        match out {
            Output::Audio(frames) => {
                if t.failed {
                    continue;
                }
                if t.sink.is_none() {
                    match create_sink(Format::Wav, &t.path, SinkOptions::default()) {
                        Ok(s) => {
                            t.sink = Some(s);
                            metrics.recordings_active.inc();
                            let _ = t.meta.write_to(&recorder::sidecar_path(&t.path));
                            tracing::info!(call, file = %t.path.display(), "recording started");
                        }
                        Err(e) => {
                            tracing::error!(call, error = %e, "cannot create recording; the call continues unrecorded");
                            metrics.recordings_total.with_label_values(&["error"]).inc();
                            t.failed = true;
                            continue;
                        }
                    }
                }
                if let Some(s) = t.sink.as_mut() {
                    if let Err(e) = s.write(frames) {
                        tracing::error!(call, error = %e, "recording write failed; recording stopped, the call continues");
                        t.meta.error = Some(e.to_string());
                        t.failed = true;
                    }
                }
            }
            Output::Event(recorder::Event::UnsupportedCodec {
                channel,
                payload_type,
            }) => {
                tracing::warn!(
                    call,
                    ?channel,
                    payload_type,
                    "codec not supported by the recorder; recorded as silence"
                );
            }
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
    }
}

/// Current wall-clock time in unix milliseconds, for metadata.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rig {
        t: RecorderThread,
        done: Receiver<Finished>,
        dir: PathBuf,
        _tap: SyncSender<TapPacket>,
        _ctl: std::sync::mpsc::Sender<(Instant, RecCtl)>,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("tapir-rec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RecordingConfig {
            spool_dir: dir.join("spool"),
            recordings_dir: dir.join("recordings"),
            ..RecordingConfig::default()
        };
        std::fs::create_dir_all(&cfg.spool_dir).unwrap();
        std::fs::create_dir_all(&cfg.recordings_dir).unwrap();
        let (tap_tx, tap) = std::sync::mpsc::sync_channel(16);
        let (ctl_tx, ctl) = std::sync::mpsc::channel();
        let (finisher, done) = std::sync::mpsc::channel();
        Rig {
            t: RecorderThread {
                cfg,
                tap,
                ctl,
                calls: HashMap::new(),
                metrics: Arc::new(Metrics::new()),
                finisher,
                tap_drops_seen: 0,
                policy: PolicyStore::default(),
                contacts: HashMap::new(),
                aliases: HashMap::new(),
            },
            done,
            dir,
            _tap: tap_tx,
            _ctl: ctl_tx,
        }
    }

    /// Starts and answers `call` as signalled at `at`.
    fn start(r: &mut Rig, call: CallId, contact: &str, at: Instant) {
        r.t.on_ctl(
            at,
            RecCtl::Started(Box::new(CallStart {
                call,
                meta: RecordingMetadata {
                    contact_id: contact.into(),
                    ..Default::default()
                },
                customer: Leg::A,
                mode: Some(Mode::Always),
                format: Format::Wav,
                input: CallInput::default(),
            })),
        );
        r.t.on_ctl(at, RecCtl::Answered { call });
    }

    /// Half a second of PCMU on leg A of `call` arriving from `t0`, then the recorder's timers,
    /// so audio reaches the spool file.
    fn audio(r: &mut Rig, call: CallId, t0: Instant) {
        for i in 0..25u16 {
            let mut p = TapPacket {
                call,
                leg: Leg::A,
                at: t0 + Duration::from_millis(20 * u64::from(i)),
                len: 172,
                data: [0xff; crate::relay::TAP_MAX],
            };
            media::rtp::write_header(&mut p.data, i == 0, 0, i, u32::from(i) * 160, 7);
            r.t.on_packet(&p);
        }
        r.t.tick(t0 + Duration::from_secs(1));
    }

    /// Ends `call` and does the finisher's move; returns the finished file's name.
    fn end(r: &mut Rig, call: CallId) -> String {
        r.t.on_ctl(Instant::now(), RecCtl::Ended { call });
        let f = r.done.try_recv().expect("a finished recording");
        let dest = move_to(&f.path, &r.t.cfg.recordings_dir).expect("moved");
        dest.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn a_call_starts_when_it_was_signalled_not_when_the_thread_got_to_it() {
        let mut r = rig("stamped");
        // The thread takes its control queue once per tick: this call was signalled 30 ms
        // before the thread read it, and its first packets arrived in between.
        let signalled = Instant::now() - Duration::from_millis(30);
        start(&mut r, 1, "c1", signalled);
        audio(&mut r, 1, signalled + Duration::from_millis(1));
        let s = r.t.calls[&1].main.rec.stats(Channel::Customer);
        assert_eq!(s.received, 25);
        assert_eq!(
            s.late_dropped, 0,
            "a packet was placed before the call began"
        );
        assert_eq!(s.lost, 0);
    }

    #[test]
    fn packets_queued_ahead_of_a_hang_up_are_in_the_file() {
        let mut r = rig("ended");
        let t0 = Instant::now() - Duration::from_millis(500);
        start(&mut r, 1, "c1", t0);
        // The hang-up reaches the control queue while the call's last packets, which arrived
        // before it, still wait in the tap queue.
        for i in 0..10u16 {
            let mut p = TapPacket {
                call: 1,
                leg: Leg::A,
                at: t0 + Duration::from_millis(20 * u64::from(i) + 1),
                len: 172,
                data: [0xff; crate::relay::TAP_MAX],
            };
            media::rtp::write_header(&mut p.data, i == 0, 0, i, u32::from(i) * 160, 7);
            r._tap.send(p).unwrap();
        }
        let hung_up = t0 + Duration::from_millis(400);
        r._ctl.send((hung_up, RecCtl::Ended { call: 1 })).unwrap();
        r.t.drain_queues(&mut Vec::new()).unwrap();
        let f = r.done.try_recv().expect("a finished recording");
        assert_eq!(f.meta.customer.received, 10, "{:?}", f.meta.customer);
        assert_eq!(f.meta.customer.late_dropped, 0);
    }

    #[test]
    fn a_contact_recorded_again_after_its_file_finished_gets_a_new_file() {
        let mut r = rig("again");
        start(&mut r, 1, "c1", Instant::now());
        audio(&mut r, 1, Instant::now());
        let first = end(&mut r, 1);
        // A blind transfer whose transferor hung up before the transferee's INVITE came: the
        // new call continues contact c1, but c1's recording is already in the archive.
        start(&mut r, 2, "c1", Instant::now());
        audio(&mut r, 2, Instant::now());
        let second = end(&mut r, 2);
        assert_eq!(first, "c1.wav");
        assert_ne!(first, second, "the second recording overwrote the first");
        let rec = &r.t.cfg.recordings_dir;
        assert!(rec.join(&first).exists() && rec.join(&second).exists());
    }

    #[test]
    fn statement_files_stay_in_the_spool_and_never_share_a_name() {
        let mut r = rig("statements");
        start(&mut r, 1, "c1", Instant::now());
        let now = Instant::now();
        r.t.apply(
            1,
            now,
            vec![Instruction::StatementStart("../../escape".into())],
        );
        r.t.apply(
            1,
            now,
            vec![
                Instruction::StatementStop("../../escape".into()),
                Instruction::StatementStart("terms".into()),
                Instruction::StatementStop("terms".into()),
                Instruction::StatementStart("terms".into()),
            ],
        );
        let a = &r.t.calls[&1];
        let open = &a.statements[0].path;
        assert_eq!(open.parent(), Some(r.t.cfg.spool_dir.as_path()));
        assert_eq!(
            open.file_name().unwrap().to_string_lossy(),
            "c1-statement-terms.wav"
        );
        let again = r.t.unique_path("c1-statement-terms");
        assert_eq!(
            again.file_name().unwrap().to_string_lossy(),
            "c1-statement-terms-2.wav",
            "a live track's name is taken even before its file exists"
        );
        let escaped = r.t.unique_path("c1-statement-../../escape");
        assert_eq!(escaped.parent(), Some(r.t.cfg.spool_dir.as_path()));
    }
}
