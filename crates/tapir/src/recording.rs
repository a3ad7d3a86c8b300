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
use b2bua::CallId;
use contact::ContactKey;
use media::codec::PayloadMap;
use recorder::{
    create_sink, Channel, Command, Output, Recording, RecordingMetadata, Sink, SinkOptions,
};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::relay::TapPacket;
use crate::shelf::{ShelfMsg, ShelfTx};

pub use recorder::Format;

/// Reads a `format` value of a route or of the registrar.
pub fn parse_format(s: &str) -> Option<Format> {
    match s {
        "wav" => Some(Format::Wav),
        "mp3" => Some(Format::Mp3),
        _ => None,
    }
}

/// A route's recording mode: the station modes of the policy engine, applied to every call
/// of the route (see `policy::Rules::with_route_mode`).
pub use policy::Mode;

/// Reads a route's `record` value.
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "never" => Some(Mode::Never),
        "always" => Some(Mode::Always),
        "on_demand" => Some(Mode::OnDemand),
        _ => None,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Default mode for routes that do not set `record`, when no policy file is set.
    #[serde(default = "default_mode")]
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
    /// How long a contact whose calls have all ended waits for the call of a transfer in
    /// progress, so that a transfer whose transferor hung up first stays one recording.
    #[serde(default = "default_transfer_grace_ms")]
    pub transfer_grace_ms: u64,
    /// `fdatasync` the spool files at every flush (0.8 s of audio) while recording, so a power
    /// loss costs at most that much; a process crash costs as much without it (the page cache
    /// keeps what was flushed).
    #[serde(default)]
    pub sync_while_recording: bool,
}

fn default_transfer_grace_ms() -> u64 {
    30_000
}

fn default_mode() -> Mode {
    Mode::Never
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
            transfer_grace_ms: default_transfer_grace_ms(),
            sync_while_recording: false,
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
        if self.transfer_grace_ms > 600_000 {
            bail!("recording.transfer_grace_ms must be at most 600000 (10 minutes)");
        }
        Ok(())
    }
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
    /// What happened on a call, for its contact.
    Call(contact::Input),
    /// A command from the control API or the announcement; `reply` says whether the call is
    /// known.
    Api {
        call: CallId,
        command: contact::ApiCommand,
        reply: Option<tokio::sync::oneshot::Sender<bool>>,
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
    sink_options: SinkOptions,
}

/// The files of one contact.
struct Active {
    main: Track,
    statements: Vec<Track>,
    format: Format,
    /// Latest payload maps (customer, agent), for statements opened later.
    codecs: [Option<PayloadMap>; 2],
}

pub struct RecorderThread {
    cfg: RecordingConfig,
    tap: Receiver<TapPacket>,
    ctl: Receiver<(Instant, RecCtl)>,
    /// The recording decisions of every live contact (sans-IO).
    contacts: contact::Contacts,
    /// The files of the contacts that have a recording.
    tracks: HashMap<ContactKey, Active>,
    metrics: Arc<Metrics>,
    finisher: FinisherTx,
    tap_drops_seen: u64,
    /// `log.show_numbers`: decision reasons may name stations, which are often numbers.
    show_numbers: bool,
    /// The catalog side: started recordings are catalogued, the spool's fill refuses new ones.
    shelf: ShelfTx,
    /// Stems of files this process finished lately: a contact recorded again after its first
    /// file left the spool gets a new name, so it never replaces the first one in storage.
    finished_stems: std::collections::VecDeque<String>,
}

/// The finisher's queue. What it holds counts in `tapir_recordings_finishing` until the
/// finisher has handed it to the shelf, so that "nothing recording, finishing or pending"
/// means every ended recording is in storage (the drain at SIGTERM waits for that).
#[derive(Clone)]
struct FinisherTx {
    tx: std::sync::mpsc::Sender<Finished>,
    queued: prometheus::IntGauge,
}

impl FinisherTx {
    /// Queues `f`; false when the finisher is gone.
    fn send(&self, f: Finished) -> bool {
        self.queued.inc();
        let sent = self.tx.send(f).is_ok();
        if !sent {
            self.queued.dec();
        }
        sent
    }
}

/// How many finished file names the recorder remembers (an hour at 3 recordings a second).
const FINISHED_STEMS: usize = 10_000;

/// Starts the recorder and finisher threads; returns the tap sender (for the relay) and the
/// control sender (for the engine and the HTTP API).
pub fn start(
    cfg: RecordingConfig,
    tap_queue: usize,
    metrics: Arc<Metrics>,
    show_numbers: bool,
    shelf: ShelfTx,
) -> Result<(SyncSender<TapPacket>, RecTx)> {
    std::fs::create_dir_all(&cfg.spool_dir)
        .map_err(|e| anyhow::anyhow!("cannot create spool dir {}: {e}", cfg.spool_dir.display()))?;
    std::fs::create_dir_all(&cfg.recordings_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create recordings dir {}: {e}",
            cfg.recordings_dir.display()
        )
    })?;
    let (tap_tx, tap_rx) = std::sync::mpsc::sync_channel(tap_queue);
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let (fin_tx, fin_rx) = std::sync::mpsc::channel();
    let fin_tx = FinisherTx {
        tx: fin_tx,
        queued: metrics.recordings_finishing.clone(),
    };
    resume_finishing(&cfg, &fin_tx);
    repair_on_start(&cfg, &fin_tx);
    let outbox = cfg.spool_dir.join(store::OUTBOX_DIR);
    std::fs::create_dir_all(&outbox)
        .map_err(|e| anyhow::anyhow!("cannot create the outbox {}: {e}", outbox.display()))?;
    let m2 = metrics.clone();
    let s2 = shelf.clone();
    std::thread::Builder::new()
        .name("tapir-finisher".into())
        .spawn(move || finisher(fin_rx, outbox, m2, s2))?;
    let t = RecorderThread {
        contacts: contact::Contacts::new(contact::Config {
            transfer_grace: Duration::from_millis(cfg.transfer_grace_ms),
        }),
        cfg,
        tap: tap_rx,
        ctl: ctl_rx,
        tracks: HashMap::new(),
        metrics,
        finisher: fin_tx,
        tap_drops_seen: 0,
        show_numbers,
        shelf,
        finished_stems: Default::default(),
    };
    std::thread::Builder::new()
        .name("tapir-recorder".into())
        .spawn(move || t.run())?;
    Ok((tap_tx, RecTx(ctl_tx)))
}

/// Subdirectory of the spool where the finisher works: a finished recording is renamed there
/// before its metrics, peaks and transcode, so the spool's repair never takes it for an
/// interrupted call, and a crash in the middle (mid-transcode) leaves it there to be finished
/// again at the next start.
pub const FINISHING_DIR: &str = "finishing";

/// Hands back to the finisher what a crash left in `spool/finishing/`: recordings whose
/// result did not reach the outbox are finished again from their WAV (a partial MP3 is
/// overwritten); leftovers of those that did reach it are removed.
fn resume_finishing(cfg: &RecordingConfig, finisher: &FinisherTx) {
    let dir = cfg.spool_dir.join(FINISHING_DIR);
    let outbox = cfg.spool_dir.join(store::OUTBOX_DIR);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut wavs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    wavs.sort();
    for wav in wavs {
        let name = wav.file_name().map(PathBuf::from).unwrap_or_default();
        let delivered = ["wav", "mp3"]
            .iter()
            .any(|ext| outbox.join(&name).with_extension(ext).exists());
        let side = recorder::sidecar_path(&wav);
        if delivered {
            for f in [
                wav.clone(),
                wav.with_extension("mp3"),
                side,
                peaks_path(&wav),
            ] {
                let _ = std::fs::remove_file(f);
            }
            continue;
        }
        // The sidecar is beside the WAV, or already moved to the outbox.
        let meta = RecordingMetadata::read_from(&side).or_else(|_| {
            RecordingMetadata::read_from(&recorder::sidecar_path(&outbox.join(&name)))
        });
        match meta {
            Ok(mut meta) => {
                tracing::warn!(file = %wav.display(), "finishing a recording a crash interrupted after the call");
                let target = meta.format;
                meta.format = Format::Wav;
                let _ = finisher.send(Finished {
                    path: Some(wav),
                    interrupted: meta.interrupted,
                    meta,
                    format: target,
                });
            }
            Err(e) => {
                tracing::error!(file = %wav.display(), error = %e, "a finished recording without readable metadata; moved to the quarantine");
                let q = cfg.spool_dir.join(store::QUARANTINE_DIR);
                let _ = std::fs::create_dir_all(&q);
                let _ = std::fs::rename(&wav, q.join(&name));
            }
        }
    }
}

/// Renames a finished spool file (and its sidecar) into `spool/finishing/`; returns its new
/// path, or the old one when the rename failed (the file is then finished where it is).
fn to_finishing(path: &Path) -> PathBuf {
    let (Some(spool), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    if spool.file_name().is_some_and(|n| n == FINISHING_DIR) {
        return path.to_path_buf();
    }
    let dir = spool.join(FINISHING_DIR);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the finishing directory");
        return path.to_path_buf();
    }
    let to = dir.join(name);
    let side = recorder::sidecar_path(path);
    if side.exists() {
        let _ = std::fs::rename(&side, recorder::sidecar_path(&to));
    }
    match std::fs::rename(path, &to) {
        Ok(()) => to,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot move to the finishing directory");
            path.to_path_buf()
        }
    }
}

/// Repairs what a crash left in the spool and hands it to the finisher, which transcodes the
/// recordings of MP3 routes (their sidecar names the format they were meant for) and moves
/// them to the recordings directory like any other.
fn repair_on_start(cfg: &RecordingConfig, finisher: &FinisherTx) {
    match recorder::repair_spool(&cfg.spool_dir) {
        Ok(files) => {
            for f in files {
                tracing::warn!(
                    file = %f.path.display(),
                    duration_ms = f.duration_ms,
                    segments = f.metadata.segments.len(),
                    "repaired a recording interrupted by a crash"
                );
                let target = f.metadata.format;
                let mut meta = f.metadata;
                meta.format = f.format;
                let _ = finisher.send(Finished {
                    path: Some(f.path),
                    meta,
                    format: target,
                    interrupted: true,
                });
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot repair the spool"),
    }
}

/// `fsync` of a file (its data and size), so what the outbox holds survives power loss.
fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// `fsync` of a directory, so the renames in it survive power loss.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|f| f.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory");
    }
}

/// Moves a finished recording with its sidecar and peaks into the outbox (the same disk as
/// the spool, so a rename), each synced first; returns its outbox path.
fn move_to(audio: &Path, outbox: &Path) -> Option<PathBuf> {
    let name = audio.file_name()?;
    let dest = outbox.join(name);
    let side = recorder::sidecar_path(audio);
    let peaks = store::shelf::peaks_path(audio);
    for f in [audio, side.as_path(), peaks.as_path()] {
        if f.exists() {
            if let Err(e) = sync_file(f) {
                tracing::error!(file = %f.display(), error = %e, "cannot sync a finished recording");
            }
        }
    }
    // Companions first: an audio file in the outbox always has its sidecar beside it.
    for (from, to) in [
        (&side, recorder::sidecar_path(&dest)),
        (&peaks, store::shelf::peaks_path(&dest)),
    ] {
        if from.exists() {
            if let Err(e) = std::fs::rename(from, &to) {
                tracing::error!(file = %from.display(), error = %e, "cannot move to the outbox");
            }
        }
    }
    if let Err(e) = std::fs::rename(audio, &dest) {
        tracing::error!(file = %audio.display(), error = %e, "cannot move a recording to the outbox");
        return None;
    }
    sync_dir(outbox);
    if let Some(spool) = audio.parent() {
        sync_dir(spool);
    }
    Some(dest)
}

struct Finished {
    /// The spool audio; `None` for a contact that recorded nothing, whose decision is kept as
    /// a sidecar alone.
    path: Option<PathBuf>,
    meta: RecordingMetadata,
    /// The format the route asked for.
    format: Format,
    /// Repaired after a crash.
    interrupted: bool,
}

/// Finishes recordings: metrics and peaks, the MP3 transcode, then the outbox and the shelf.
fn finisher(rx: Receiver<Finished>, outbox: PathBuf, metrics: Arc<Metrics>, shelf: ShelfTx) {
    while let Ok(mut f) = rx.recv() {
        f.meta.retention_days = shelf.retention.days_for(&f.meta);
        f.meta.node.get_or_insert_with(|| shelf.node.to_string());
        let Some(path) = f.path.take() else {
            // Recorded but silent: asked for, yet no audio ever came (no RTP, or a call that
            // ended before the jitter delay).
            let label = if f.meta.recorded == Some(true) {
                "no_audio"
            } else {
                "not_recorded"
            };
            // No audio: the decision record alone, kept beside the recordings.
            shelf.send(ShelfMsg::Decision(Box::new(f.meta)));
            metrics.recordings_total.with_label_values(&[label]).inc();
            metrics.recordings_finishing.dec();
            continue;
        };
        let path = to_finishing(&path);
        // Metrics and peaks from the WAV, before any transcode: reading it costs about 1/48,000
        // of the call's length, decoding an MP3 twenty times more.
        let peaks = analyse(&path, &mut f.meta);
        let mut audio = path.clone();
        if f.format == Format::Mp3 && f.meta.error.is_none() {
            let mp3 = path.with_extension("mp3");
            match recorder::transcode_wav_to_mp3(&path, &mp3, SinkOptions::default()) {
                Ok(_) => {
                    // The WAV stays until the MP3 is in the outbox: a crash before that
                    // finishes it again from the WAV.
                    f.meta.format = Format::Mp3;
                    audio = mp3;
                }
                Err(e) => tracing::error!(error = %e, "MP3 transcode failed; keeping WAV"),
            }
        }
        f.meta.interrupted |= f.interrupted;
        if let Err(e) = f.meta.write_to(&recorder::sidecar_path(&audio)) {
            tracing::error!(error = %e, "cannot write recording metadata");
        }
        if let Some(p) = peaks {
            let to = peaks_path(&audio);
            if let Err(e) = std::fs::write(&to, p) {
                tracing::warn!(file = %to.display(), error = %e, "cannot write the waveform peaks");
            }
        }
        let result = if f.interrupted {
            "interrupted"
        } else if f.meta.error.is_some() {
            "error"
        } else {
            "ok"
        };
        if let Some(dest) = move_to(&audio, &outbox) {
            if audio != path {
                let _ = std::fs::remove_file(&path);
            }
            tracing::info!(file = %dest.display(), duration_ms = f.meta.duration_ms, "recording finished");
            shelf.send(ShelfMsg::Deliver(Box::new(store::Parcel {
                audio: dest,
                retention_days: f.meta.retention_days,
                interrupted: f.interrupted,
                meta: f.meta,
            })));
        }
        // Counted once the file is handed on: from here it is pending until stored. The gauge
        // goes down first, so that whoever sees the count sees the gauge without it.
        metrics.recordings_finishing.dec();
        metrics.recordings_total.with_label_values(&[result]).inc();
    }
}

/// The waveform peaks of a recording: `<name>.peaks.json` beside its audio.
pub fn peaks_path(audio: &Path) -> PathBuf {
    audio.with_extension("peaks.json")
}

/// Computes a finished WAV's conversation metrics into its metadata; returns its waveform
/// peaks as JSON. A file that cannot be analysed is still delivered, without them.
fn analyse(wav: &Path, meta: &mut RecordingMetadata) -> Option<Vec<u8>> {
    match analysis::analyze_wav(wav, analysis::AnalysisConfig::default()) {
        Ok(a) => {
            meta.metrics = serde_json::to_value(&a.metrics).ok();
            serde_json::to_vec(&a.peaks).ok()
        }
        Err(e) => {
            tracing::warn!(file = %wav.display(), error = %e, "cannot compute the recording's metrics");
            None
        }
    }
}

/// A file stem that cannot leave its directory or break a name.
fn safe_stem(name: &str) -> String {
    name.chars()
        .take(160)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
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
                Ok((at, c @ RecCtl::Call(contact::Input::Ended { .. }))) => ended.push((at, c)),
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

    fn on_packet(&mut self, p: &TapPacket) {
        let Some((key, ch)) = self.contacts.route(p.call, p.leg) else {
            return;
        };
        let data = &p.data[..p.len as usize];
        if let Some(a) = self.tracks.get_mut(&key) {
            a.main.rec.handle_packet(p.at, ch, data);
            for t in &mut a.statements {
                t.rec.handle_packet(p.at, ch, data);
            }
        }
        if ch == Channel::Agent {
            self.contacts.handle_agent_packet(p.at, p.call, data);
            self.apply(p.at);
        }
    }

    /// One control message, sent at `now`.
    fn on_ctl(&mut self, now: Instant, c: RecCtl) {
        match c {
            RecCtl::Call(input) => self.contacts.handle_input(now, input),
            RecCtl::Api {
                call,
                command,
                reply,
            } => {
                let known = self.contacts.handle_api(now, call, command).is_ok();
                if let Some(r) = reply {
                    let _ = r.send(known);
                }
            }
        }
        self.apply(now);
    }

    fn tick(&mut self, now: Instant) {
        let drops = self.metrics.tap_dropped.get();
        let new_drops = drops.saturating_sub(self.tap_drops_seen);
        self.tap_drops_seen = drops;
        self.contacts.handle_timeout(now);
        self.apply(now);
        for (&key, a) in self.tracks.iter_mut() {
            // The tap counts drops for the whole process; charge them to every active
            // recording, which may over-report but never hides a loss.
            if new_drops > 0 {
                a.main.rec.note_tap_drops(new_drops);
            }
            a.main.rec.handle_timeout(now);
            for t in &mut a.statements {
                t.rec.handle_timeout(now);
            }
            drain_active(key, a, &self.metrics, &self.shelf);
        }
    }

    /// Carries out what the contact core decided: files opened, commands, statements,
    /// journals, finishes.
    fn apply(&mut self, now: Instant) {
        while let Some(o) = self.contacts.poll_output() {
            self.apply_one(now, o);
        }
    }

    fn apply_one(&mut self, now: Instant, o: contact::Output) {
        use contact::Output as O;
        match o {
            O::Open {
                contact,
                stem,
                format,
                meta,
            } => {
                let path = self.unique_path(&stem);
                self.tracks.insert(
                    contact,
                    Active {
                        main: new_track(&self.cfg, now, *meta, path),
                        statements: Vec::new(),
                        format,
                        codecs: [None, None],
                    },
                );
            }
            O::Command { contact, command } => {
                if let Some(a) = self.tracks.get_mut(&contact) {
                    a.main.rec.handle_command(now, command);
                    drain_active(contact, a, &self.metrics, &self.shelf);
                }
            }
            O::Codecs {
                contact,
                channel,
                codecs,
            } => {
                if let Some(a) = self.tracks.get_mut(&contact) {
                    let mut map = PayloadMap::with_static();
                    for c in &codecs {
                        map.insert_rtpmap(c.payload_type, &c.encoding, c.clock_rate);
                    }
                    a.main.rec.set_codecs(channel, &map);
                    for t in &mut a.statements {
                        t.rec.set_codecs(channel, &map);
                    }
                    a.codecs[usize::from(channel == Channel::Agent)] = Some(map);
                }
            }
            O::StatementOpen { contact, id, stem } => {
                let path = self.unique_path(&stem);
                if let Some(a) = self.tracks.get_mut(&contact) {
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
            }
            O::StatementClose { contact, id } => {
                if let Some(a) = self.tracks.get_mut(&contact) {
                    if let Some(pos) = a
                        .statements
                        .iter()
                        .position(|t| t.meta.statement_id.as_deref() == Some(&id))
                    {
                        let mut t = a.statements.remove(pos);
                        t.rec.finish(now, "statement stopped");
                        drain_track(contact, &mut t, &self.metrics, &self.shelf);
                        if let Some(stem) =
                            finish_track(contact, t, a.format, &self.metrics, &self.finisher)
                        {
                            remember(&mut self.finished_stems, stem);
                        }
                    }
                }
            }
            O::Journal { contact, decisions } => {
                if let Some(a) = self.tracks.get_mut(&contact) {
                    a.main.meta.decisions = Some(decisions);
                    journal(&mut a.main);
                }
            }
            O::Finish {
                contact,
                contact_id,
                calls,
                recorded,
                reason,
                rule,
                decisions,
                meta,
            } => {
                // The reason in words may name a station, often a number: it is in the
                // metadata, and in the log only with `log.show_numbers`.
                if self.show_numbers {
                    tracing::info!(contact = %contact_id, ?calls, recorded, rule, %reason, "recording decision");
                } else {
                    tracing::info!(contact = %contact_id, ?calls, recorded, rule, "recording decision");
                    tracing::debug!(contact = %contact_id, %reason, "recording decision reason");
                }
                let tracks = self.tracks.remove(&contact);
                let Some(mut a) = tracks else {
                    // Never opened (a `never` station or route): the decision alone.
                    if let Some(mut m) = meta {
                        m.recorded = Some(false);
                        m.decision = Some(reason);
                        m.decisions = Some(decisions);
                        m.complete = true;
                        let _ = self.finisher.send(Finished {
                            path: None,
                            meta: *m,
                            format: Format::Wav,
                            interrupted: false,
                        });
                    }
                    return;
                };
                let mut tracks = std::mem::take(&mut a.statements);
                tracks.insert(0, a.main);
                for (i, mut t) in tracks.into_iter().enumerate() {
                    t.rec.finish(now, "call ended");
                    drain_track(contact, &mut t, &self.metrics, &self.shelf);
                    t.meta.decisions = Some(decisions.clone());
                    t.meta.recorded = Some(recorded);
                    t.meta.decision = Some(reason.clone());
                    if i == 0 && t.sink.is_none() {
                        // The contact's decision is kept even when it wrote no audio.
                        t.meta.update_from(&t.rec);
                        t.meta.complete = true;
                        let _ = self.finisher.send(Finished {
                            path: None,
                            meta: t.meta,
                            format: a.format,
                            interrupted: false,
                        });
                        continue;
                    }
                    if let Some(stem) =
                        finish_track(contact, t, a.format, &self.metrics, &self.finisher)
                    {
                        remember(&mut self.finished_stems, stem);
                    }
                }
            }
            // The reason may quote what the peer sent, a keyed digit among it.
            O::Ignored { call, why } => tracing::debug!(call, "{why}"),
        }
    }

    /// The spool path of a new file named after `name`. Characters that could leave the spool
    /// or break the name are replaced, and a name already taken, by a live track or by a file
    /// an earlier call left in the spool or the recordings (a transferred call whose contact's
    /// first recording has already finished, a statement id used twice), gets a `-2`, `-3`...
    /// suffix: a recording never overwrites another.
    fn unique_path(&self, name: &str) -> PathBuf {
        let safe = safe_stem(name);
        let spool = &self.cfg.spool_dir;
        let taken = |stem: &str| {
            let wav = spool.join(format!("{stem}.wav"));
            self.tracks
                .values()
                .any(|a| a.main.path == wav || a.statements.iter().any(|t| t.path == wav))
                || self.finished_stems.iter().any(|s| s == stem)
                || ["wav", "mp3", "json"].iter().any(|ext| {
                    let f = format!("{stem}.{ext}");
                    spool.join(&f).exists() || spool.join(store::OUTBOX_DIR).join(&f).exists()
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
}

fn drain_active(key: ContactKey, a: &mut Active, metrics: &Metrics, shelf: &ShelfTx) {
    drain_track(key, &mut a.main, metrics, shelf);
    for t in &mut a.statements {
        drain_track(key, t, metrics, shelf);
    }
}

/// Remembers a finished file's stem (see `RecorderThread::finished_stems`).
fn remember(stems: &mut std::collections::VecDeque<String>, stem: String) {
    if stems.len() >= FINISHED_STEMS {
        stems.pop_front();
    }
    stems.push_back(stem);
}

/// Rewrites a live track's spool sidecar (segments so far and the decision log), so a file
/// repaired after a crash keeps them. Only once the file exists: before that there is nothing
/// to repair.
fn journal(t: &mut Track) {
    if t.sink.is_none() {
        return;
    }
    t.meta.update_from(&t.rec);
    if let Err(e) = t.meta.write_to(&recorder::sidecar_path(&t.path)) {
        tracing::warn!(file = %t.path.display(), error = %e, "cannot journal the recording's metadata");
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
        sink_options: SinkOptions {
            sync: cfg.sync_while_recording,
            ..SinkOptions::default()
        },
    }
}

/// Closes a finished track's file and hands it to the finisher; returns the file's stem. A
/// track that never wrote audio leaves no file.
fn finish_track(
    call: ContactKey,
    mut t: Track,
    format: Format,
    metrics: &Metrics,
    finisher: &FinisherTx,
) -> Option<String> {
    let mut s = t.sink.take()?;
    let stem = t.path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if let Err(e) = s.finish() {
        tracing::error!(contact = call, error = %e, "cannot finish recording");
        t.meta.error.get_or_insert(e.to_string());
    }
    t.meta.update_from(&t.rec);
    t.meta.complete = true;
    // The audio is WAV until the finisher has transcoded it.
    t.meta.format = Format::Wav;
    let _ = finisher.send(Finished {
        path: Some(t.path),
        meta: t.meta,
        format,
        interrupted: false,
    });
    // Only now: in between, the recording counts as finishing, never as nothing.
    metrics.recordings_active.dec();
    stem
}

/// Hands a track's output to its sink; opens the file on the first audio, unless the spool
/// is past its high-water mark (then the recording is refused and counted; the call goes on).
fn drain_track(call: ContactKey, t: &mut Track, metrics: &Metrics, shelf: &ShelfTx) {
    let mut segments_changed = false;
    while let Some(out) = t.rec.poll_output() {
        match out {
            Output::Audio(frames) => {
                if t.failed {
                    continue;
                }
                if t.sink.is_none() {
                    if shelf.spool_full.load(std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            contact = call,
                            "spool past its high-water mark: recording refused, the call continues"
                        );
                        metrics.shelf.refused.inc();
                        t.meta.error =
                            Some("refused: the spool is past its high-water mark".into());
                        t.failed = true;
                        continue;
                    }
                    match create_sink(Format::Wav, &t.path, t.sink_options) {
                        Ok(s) => {
                            t.sink = Some(s);
                            metrics.recordings_active.inc();
                            segments_changed = true;
                            tracing::info!(contact = call, file = %t.path.display(), "recording started");
                            let stem = t
                                .path
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            shelf.send(ShelfMsg::Opened {
                                meta: Box::new(t.meta.clone()),
                                stem,
                            });
                        }
                        Err(e) => {
                            tracing::error!(contact = call, error = %e, "cannot create recording; the call continues unrecorded");
                            metrics.recordings_total.with_label_values(&["error"]).inc();
                            t.failed = true;
                            continue;
                        }
                    }
                }
                if let Some(s) = t.sink.as_mut() {
                    if let Err(e) = s.write(frames) {
                        tracing::error!(contact = call, error = %e, "recording write failed; recording stopped, the call continues");
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
            Output::Event(
                recorder::Event::SegmentStarted { .. } | recorder::Event::SegmentEnded { .. },
            ) => segments_changed = true,
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
    }
    if segments_changed {
        journal(t);
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
    use b2bua::Leg;

    struct Rig {
        t: RecorderThread,
        done: Receiver<Finished>,
        dir: PathBuf,
        _tap: SyncSender<TapPacket>,
        _ctl: std::sync::mpsc::Sender<(Instant, RecCtl)>,
        _shelf: tokio::sync::mpsc::UnboundedReceiver<ShelfMsg>,
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
        let (shelf, shelf_rx) = ShelfTx::detached();
        std::fs::create_dir_all(cfg.spool_dir.join(store::OUTBOX_DIR)).unwrap();
        let metrics = Arc::new(Metrics::new());
        Rig {
            t: RecorderThread {
                cfg,
                tap,
                ctl,
                contacts: contact::Contacts::new(contact::Config::default()),
                tracks: HashMap::new(),
                finisher: FinisherTx {
                    tx: finisher,
                    queued: metrics.recordings_finishing.clone(),
                },
                metrics,
                tap_drops_seen: 0,
                show_numbers: false,
                shelf,
                finished_stems: Default::default(),
            },
            done,
            dir,
            _tap: tap_tx,
            _ctl: ctl_tx,
            _shelf: shelf_rx,
        }
    }

    /// Starts and answers `call` as signalled at `at`, on a route that always records.
    fn start(r: &mut Rig, call: u64, contact: &str, at: Instant) {
        r.t.on_ctl(
            at,
            RecCtl::Call(contact::Input::Started(Box::new(contact::CallStart {
                call,
                contact_id: contact.into(),
                continues: false,
                customer: Leg::A,
                route: "r".into(),
                route_mode: Some(Mode::Always),
                format: Format::Wav,
                rules: Arc::new(policy::Rules::default()),
                source_zone: None,
                station: None,
                agent_user: None,
                customer_number: String::new(),
                dialled_number: String::new(),
                x_headers: Vec::new(),
                meta: RecordingMetadata::default(),
            }))),
        );
        r.t.on_ctl(at, RecCtl::Call(contact::Input::Answered { call }));
    }

    fn packet(call: u64, i: u16, at: Instant) -> TapPacket {
        let mut p = TapPacket {
            call,
            leg: Leg::A,
            at,
            len: 172,
            data: [0xff; crate::relay::TAP_MAX],
        };
        media::rtp::write_header(&mut p.data, i == 0, 0, i, u32::from(i) * 160, 7);
        p
    }

    /// Half a second of PCMU on leg A of `call` arriving from `t0`, then the recorder's timers,
    /// so audio reaches the spool file.
    fn audio(r: &mut Rig, call: u64, t0: Instant) {
        for i in 0..25u16 {
            let p = packet(call, i, t0 + Duration::from_millis(20 * u64::from(i)));
            r.t.on_packet(&p);
        }
        r.t.tick(t0 + Duration::from_secs(1));
    }

    /// Ends `call` and does the finisher's move; returns the finished file's name.
    fn end(r: &mut Rig, call: u64) -> String {
        r.t.on_ctl(Instant::now(), RecCtl::Call(contact::Input::Ended { call }));
        let f = r.done.try_recv().expect("a finished recording");
        let dest = move_to(
            f.path.as_ref().unwrap(),
            &r.t.cfg.spool_dir.join(store::OUTBOX_DIR),
        )
        .expect("moved");
        dest.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn stats(r: &Rig) -> recorder::ChannelStats {
        r.t.tracks
            .values()
            .next()
            .unwrap()
            .main
            .rec
            .stats(Channel::Customer)
    }

    #[test]
    fn a_call_starts_when_it_was_signalled_not_when_the_thread_got_to_it() {
        let mut r = rig("stamped");
        // The thread takes its control queue once per tick: this call was signalled 30 ms
        // before the thread read it, and its first packets arrived in between.
        let signalled = Instant::now() - Duration::from_millis(30);
        start(&mut r, 1, "c1", signalled);
        audio(&mut r, 1, signalled + Duration::from_millis(1));
        let s = stats(&r);
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
            let p = packet(1, i, t0 + Duration::from_millis(20 * u64::from(i) + 1));
            r._tap.send(p).unwrap();
        }
        let hung_up = t0 + Duration::from_millis(400);
        r._ctl
            .send((hung_up, RecCtl::Call(contact::Input::Ended { call: 1 })))
            .unwrap();
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
        // A call continuing contact c1 after its recording is already in the archive.
        start(&mut r, 2, "c1", Instant::now());
        audio(&mut r, 2, Instant::now());
        let second = end(&mut r, 2);
        assert_eq!(first, "c1.wav");
        assert_ne!(first, second, "the second recording overwrote the first");
        let outbox = r.t.cfg.spool_dir.join(store::OUTBOX_DIR);
        assert!(outbox.join(&first).exists() && outbox.join(&second).exists());
        // Also once the first has left the outbox for storage.
        std::fs::remove_file(outbox.join(&first)).unwrap();
        start(&mut r, 3, "c1", Instant::now());
        audio(&mut r, 3, Instant::now());
        let third = end(&mut r, 3);
        assert!(third != first && third != second, "{third}");
    }

    #[test]
    fn the_spool_sidecar_follows_the_segments_as_they_happen() {
        let mut r = rig("journal");
        let t0 = Instant::now() - Duration::from_secs(2);
        start(&mut r, 1, "c1", t0);
        audio(&mut r, 1, t0);
        let side = r.t.cfg.spool_dir.join("c1.json");
        let m = RecordingMetadata::read_from(&side).expect("sidecar journaled");
        assert_eq!(m.segments.len(), 1, "{m:?}");
        assert!(m.decisions.is_some(), "decision log journaled");
    }

    #[test]
    fn statement_files_stay_in_the_spool_and_never_share_a_name() {
        let r = rig("statements");
        let again = r.t.unique_path("c1-statement-terms");
        assert_eq!(again.parent(), Some(r.t.cfg.spool_dir.as_path()));
        std::fs::write(&again, b"x").unwrap();
        assert_eq!(
            r.t.unique_path("c1-statement-terms")
                .file_name()
                .unwrap()
                .to_string_lossy(),
            "c1-statement-terms-2.wav"
        );
        let escaped = r.t.unique_path("c1-statement-../../escape");
        assert_eq!(escaped.parent(), Some(r.t.cfg.spool_dir.as_path()));
    }
}
