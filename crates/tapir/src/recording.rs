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
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use b2bua::{CallId, Leg};
use media::codec::PayloadMap;
use recorder::{
    create_sink, Channel, Command, Format as FileFormat, Output, Recording, RecordingMetadata,
    Sink, SinkOptions,
};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::relay::TapPacket;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Wav,
    Mp3,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wav" => Some(Self::Wav),
            "mp3" => Some(Self::Mp3),
            _ => None,
        }
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
}

fn default_spool() -> PathBuf {
    PathBuf::from("spool")
}

fn default_recordings() -> PathBuf {
    PathBuf::from("recordings")
}

fn default_jitter_ms() -> u64 {
    80
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Never,
            spool_dir: default_spool(),
            recordings_dir: default_recordings(),
            format: Format::Wav,
            jitter_ms: default_jitter_ms(),
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

/// Messages from the signalling side to the recorder thread.
pub enum RecCtl {
    Started {
        call: CallId,
        meta: Box<RecordingMetadata>,
        customer: Leg,
        mode: Mode,
        format: Format,
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

struct Active {
    rec: Recording,
    meta: RecordingMetadata,
    customer: Leg,
    mode: Mode,
    format: Format,
    sink: Option<Box<dyn Sink>>,
    /// Spool path of the audio (always WAV while recording).
    path: PathBuf,
    failed: bool,
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
    ctl: Receiver<RecCtl>,
    calls: HashMap<CallId, Active>,
    metrics: Arc<Metrics>,
    finisher: std::sync::mpsc::Sender<Finished>,
    tap_drops_seen: u64,
}

/// Starts the recorder and finisher threads; returns the tap sender (for the relay) and the
/// control sender (for the engine and the HTTP API).
pub fn start(
    cfg: RecordingConfig,
    tap_queue: usize,
    metrics: Arc<Metrics>,
) -> Result<(SyncSender<TapPacket>, std::sync::mpsc::Sender<RecCtl>)> {
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
    };
    std::thread::Builder::new()
        .name("tapir-recorder".into())
        .spawn(move || t.run())?;
    Ok((tap_tx, ctl_tx))
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
                    f.meta.format = FileFormat::Mp3;
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
        let tick = Duration::from_millis(20);
        let mut next_tick = Instant::now() + tick;
        loop {
            loop {
                match self.ctl.try_recv() {
                    Ok(c) => self.on_ctl(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick;
            }
            match self
                .tap
                .recv_timeout(next_tick.saturating_duration_since(Instant::now()))
            {
                Ok(p) => {
                    self.on_packet(&p);
                    // Take what is queued without going back to the clock for each packet.
                    for _ in 0..256 {
                        match self.tap.try_recv() {
                            Ok(p) => self.on_packet(&p),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn on_packet(&mut self, p: &TapPacket) {
        if let Some(a) = self.calls.get_mut(&p.call) {
            let ch = a.channel(p.leg);
            a.rec.handle_packet(p.at, ch, &p.data[..p.len as usize]);
        }
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
                    a.rec.note_tap_drops(new_drops);
                }
                a.rec.handle_timeout(now);
            }
            self.drain(id);
        }
    }

    fn on_ctl(&mut self, c: RecCtl) {
        let now = Instant::now();
        match c {
            RecCtl::Started {
                call,
                meta,
                customer,
                mode,
                format,
            } => {
                if mode == Mode::Never {
                    return;
                }
                let rec = Recording::new(
                    now,
                    recorder::RecordingConfig {
                        jitter_delay: Duration::from_millis(self.cfg.jitter_ms),
                        ..Default::default()
                    },
                );
                let path = self.cfg.spool_dir.join(format!("{}.wav", meta.contact_id));
                self.calls.insert(
                    call,
                    Active {
                        rec,
                        meta: *meta,
                        customer,
                        mode,
                        format,
                        sink: None,
                        path,
                        failed: false,
                    },
                );
            }
            RecCtl::Codecs { call, leg, codecs } => {
                if let Some(a) = self.calls.get_mut(&call) {
                    let mut map = PayloadMap::with_static();
                    for c in &codecs {
                        map.insert_rtpmap(c.payload_type, &c.encoding, c.clock_rate);
                    }
                    let ch = a.channel(leg);
                    a.rec.set_codecs(ch, &map);
                }
            }
            RecCtl::Answered { call } => {
                if let Some(a) = self.calls.get_mut(&call) {
                    if a.mode == Mode::Always {
                        a.rec.handle_command(
                            now,
                            Command::Start {
                                reason: "route: always".into(),
                            },
                        );
                    }
                }
                self.drain(call);
            }
            RecCtl::Command {
                call,
                command,
                reply,
            } => {
                let known = match self.calls.get_mut(&call) {
                    Some(a) => {
                        a.rec.handle_command(now, command);
                        true
                    }
                    None => false,
                };
                if let Some(r) = reply {
                    let _ = r.send(known);
                }
                self.drain(call);
            }
            RecCtl::Ended { call } => {
                if let Some(a) = self.calls.get_mut(&call) {
                    a.rec.finish(now, "call ended");
                }
                self.drain(call);
                if let Some(mut a) = self.calls.remove(&call) {
                    if let Some(mut s) = a.sink.take() {
                        if let Err(e) = s.finish() {
                            tracing::error!(call, error = %e, "cannot finish recording");
                            a.meta.error.get_or_insert(e.to_string());
                        }
                        self.metrics.recordings_active.dec();
                        a.meta.update_from(&a.rec);
                        a.meta.complete = true;
                        let _ = self.finisher.send(Finished {
                            path: a.path,
                            meta: a.meta,
                            format: a.format,
                        });
                    }
                }
            }
        }
    }

    /// Hands the recording's output to its sink; opens the file on the first audio.
    fn drain(&mut self, call: CallId) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        while let Some(out) = a.rec.poll_output() {
            match out {
                Output::Audio(frames) => {
                    if a.failed {
                        continue;
                    }
                    if a.sink.is_none() {
                        match create_sink(FileFormat::Wav, &a.path, SinkOptions::default()) {
                            Ok(s) => {
                                a.sink = Some(s);
                                self.metrics.recordings_active.inc();
                                let _ = a.meta.write_to(&recorder::sidecar_path(&a.path));
                                tracing::info!(call, file = %a.path.display(), "recording started");
                            }
                            Err(e) => {
                                tracing::error!(call, error = %e, "cannot create recording; the call continues unrecorded");
                                self.metrics
                                    .recordings_total
                                    .with_label_values(&["error"])
                                    .inc();
                                a.failed = true;
                                continue;
                            }
                        }
                    }
                    if let Some(s) = a.sink.as_mut() {
                        if let Err(e) = s.write(frames) {
                            tracing::error!(call, error = %e, "recording write failed; recording stopped, the call continues");
                            a.meta.error = Some(e.to_string());
                            a.failed = true;
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
}

/// Current wall-clock time in unix milliseconds, for metadata.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
