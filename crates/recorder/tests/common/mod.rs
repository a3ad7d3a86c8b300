//! Synthetic calls for the recorder tests: two senders with their own clocks, a network with
//! delay, jitter, loss and duplicates, a virtual clock, and an analyser that finds tones in
//! the produced audio.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use audio_codec::Encoder as _;
use media::codec::{encode_pcma, encode_pcmu, Codec, PayloadMap};
use media::rtp::write_header;
use recorder::{Channel, Command, Output, Recording, RecordingConfig, Sink};

/// Deterministic xorshift generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tone burst in real (call) seconds.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    pub start: f64,
    pub end: f64,
    pub freq: f64,
}

pub fn burst(start: f64, end: f64, freq: f64) -> Burst {
    Burst { start, end, freq }
}

/// Something that happens to a sender at a given real time.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    /// New SSRC, sequence and timestamp bases.
    NewSsrc { ssrc: u32, seq: u16, ts: u32 },
    /// Timestamp jumps by this much (sequence continues).
    TimestampJump(u32),
    /// Stop sending (hold, inactive) until `Resume`; the timestamp does not advance meanwhile.
    Pause,
    /// Resume sending; the timestamp continues where it stopped.
    Resume,
    /// Switch codec and payload type.
    Codec { codec: Codec, pt: u8 },
}

/// One RTP sender.
pub struct Leg {
    pub channel: Channel,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub codec: Codec,
    pub pt: u8,
    /// Relative clock error: the sender produces 8000 × (1 + skew) samples per real second.
    pub skew: f64,
    pub bursts: Vec<Burst>,
    pub changes: Vec<(f64, Change)>,
    pub end: f64,
    /// Sender-clock samples produced (8 kHz units).
    sample: u64,
    /// Real time (s) at which the sender's clock started.
    epoch: f64,
    paused: bool,
    g722: audio_codec::g722::G722Encoder,
    pcm: Vec<i16>,
}

impl Leg {
    pub fn new(channel: Channel, codec: Codec, pt: u8, bursts: Vec<Burst>, end: f64) -> Self {
        let ssrc = match channel {
            Channel::Customer => 0x1111_0000,
            Channel::Agent => 0x2222_0000,
        };
        Self {
            channel,
            ssrc,
            seq: 1000,
            ts: 50_000,
            codec,
            pt,
            skew: 0.0,
            bursts,
            changes: Vec::new(),
            end,
            sample: 0,
            epoch: 0.0,
            paused: false,
            g722: audio_codec::g722::G722Encoder::new(),
            pcm: Vec::with_capacity(320),
        }
    }

    fn rate(&self) -> f64 {
        8000.0 * (1.0 + self.skew)
    }

    /// Real time at which the packet holding samples up to `sample` is complete.
    fn time_of(&self, sample: u64) -> f64 {
        self.epoch + sample as f64 / self.rate()
    }

    pub fn next_send(&self) -> f64 {
        self.time_of(self.sample + 160)
    }

    fn level(&self, t: f64) -> f64 {
        self.bursts
            .iter()
            .filter(|b| t >= b.start && t < b.end)
            .map(|b| 8000.0 * (2.0 * std::f64::consts::PI * b.freq * t).sin())
            .sum()
    }

    /// Produces the next packet (or none while paused) and its send time.
    pub fn produce(&mut self, out: &mut Vec<u8>) -> Option<f64> {
        let send = self.next_send();
        while let Some(&(at, change)) = self.changes.first() {
            if at > send {
                break;
            }
            self.changes.remove(0);
            match change {
                Change::NewSsrc { ssrc, seq, ts } => {
                    self.ssrc = ssrc;
                    self.seq = seq;
                    self.ts = ts;
                    self.g722 = audio_codec::g722::G722Encoder::new();
                }
                Change::TimestampJump(d) => self.ts = self.ts.wrapping_add(d),
                Change::Pause => self.paused = true,
                Change::Resume => {
                    // Time kept moving while paused (see below); timestamps did not.
                    self.paused = false;
                }
                Change::Codec { codec, pt } => {
                    self.codec = codec;
                    self.pt = pt;
                }
            }
        }
        let send = self.next_send();
        if self.paused {
            // Keep time moving without sending.
            self.epoch += 0.02;
            return None;
        }
        out.clear();
        out.resize(12, 0);
        write_header(out, false, self.pt, self.seq, self.ts, self.ssrc);
        match self.codec {
            Codec::G722 => {
                self.pcm.clear();
                for j in 0..320u64 {
                    let t = self.epoch + (2 * self.sample + j) as f64 / (2.0 * self.rate());
                    self.pcm.push(self.level(t) as i16);
                }
                out.extend_from_slice(&self.g722.encode(&self.pcm));
            }
            codec => {
                for j in 0..160u64 {
                    let s = self.level(self.time_of(self.sample + j)) as i16;
                    out.push(if codec == Codec::Pcma {
                        encode_pcma(s)
                    } else {
                        encode_pcmu(s)
                    });
                }
            }
        }
        self.sample += 160;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        Some(send)
    }
}

/// Network impairments applied to both legs.
#[derive(Clone, Copy, Debug)]
pub struct Network {
    pub delay: f64,
    /// Uniform extra delay in [0, jitter).
    pub jitter: f64,
    pub loss: f64,
    pub duplicate: f64,
}

impl Network {
    pub fn clean() -> Self {
        Self {
            delay: 0.010,
            jitter: 0.0,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
    pub fn rough() -> Self {
        Self {
            delay: 0.010,
            jitter: 0.040,
            loss: 0.02,
            duplicate: 0.02,
        }
    }
    /// Where audio sent at real time t is expected in the file: mean network delay later.
    pub fn mean_delay(&self) -> f64 {
        self.delay + self.jitter / 2.0
    }
}

/// Sink that keeps only a coarse tone analysis (5 ms blocks), so hour-long calls stay small.
pub struct Analyzer {
    pub frames: u64,
    block: [[f64; 2]; 40],
    fill: usize,
    /// Per block and channel: 0 silent, 1 400 Hz, 2 1000 Hz, 3 something else loud.
    pub labels: Vec<[u8; 2]>,
}

pub const BLOCK_MS: f64 = 5.0;

impl Analyzer {
    pub fn new() -> Self {
        Self {
            frames: 0,
            block: [[0.0; 2]; 40],
            fill: 0,
            labels: Vec::new(),
        }
    }

    pub fn push(&mut self, interleaved: &[i16]) {
        for f in interleaved.chunks_exact(2) {
            self.block[self.fill] = [f[0] as f64, f[1] as f64];
            self.fill += 1;
            self.frames += 1;
            if self.fill == 40 {
                self.fill = 0;
                let mut l = [0u8; 2];
                for (c, label) in l.iter_mut().enumerate() {
                    *label = classify(self.block.iter().map(|s| s[c]));
                }
                self.labels.push(l);
            }
        }
    }

    /// Runs of `label` on `channel` as (start_s, end_s) in file time; holes up to 60 ms
    /// (lost packets) are bridged.
    pub fn runs(&self, channel: usize, label: u8) -> Vec<(f64, f64)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (i, l) in self.labels.iter().enumerate() {
            if l[channel] == label {
                match runs.last_mut() {
                    Some(r) if i - r.1 <= 13 => r.1 = i + 1,
                    _ => runs.push((i, i + 1)),
                }
            }
        }
        runs.into_iter()
            .filter(|r| r.1 - r.0 >= 4)
            .map(|(a, b)| (a as f64 * BLOCK_MS / 1000.0, b as f64 * BLOCK_MS / 1000.0))
            .collect()
    }

    /// Fraction of blocks in [from, to) s whose label on `channel` is not silent.
    pub fn loud_fraction(&self, channel: usize, from: f64, to: f64) -> f64 {
        let a = (from * 1000.0 / BLOCK_MS) as usize;
        let b = ((to * 1000.0 / BLOCK_MS) as usize).min(self.labels.len());
        if b <= a {
            return 0.0;
        }
        self.labels[a..b].iter().filter(|l| l[channel] != 0).count() as f64 / (b - a) as f64
    }
}

fn goertzel(samples: impl Iterator<Item = f64> + Clone, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn classify(samples: impl Iterator<Item = f64> + Clone) -> u8 {
    let energy: f64 = samples.clone().map(|x| x * x).sum::<f64>() / 40.0;
    if energy.sqrt() < 1000.0 {
        return 0;
    }
    let p400 = goertzel(samples.clone(), 400.0);
    let p1000 = goertzel(samples, 1000.0);
    if p400 > 4.0 * p1000 {
        1
    } else if p1000 > 4.0 * p400 {
        2
    } else {
        3
    }
}

impl Sink for Analyzer {
    fn write(&mut self, interleaved: &[i16]) -> Result<(), recorder::RecorderError> {
        self.push(interleaved);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), recorder::RecorderError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<u64, recorder::RecorderError> {
        Ok(self.frames)
    }
    fn frames(&self) -> u64 {
        self.frames
    }
}

/// A packet on the wire: (arrival ns, tie-breaker, leg index, datagram).
type InFlight = (u64, u64, usize, Vec<u8>);

/// A whole synthetic call: legs, network, commands at real times, run to `end` seconds.
pub struct Call {
    pub legs: Vec<Leg>,
    pub net: Network,
    pub commands: Vec<(f64, Command)>,
    pub end: f64,
    pub seed: u64,
    pub config: RecordingConfig,
    pub events: Vec<recorder::Event>,
    /// Payload maps announced to the recording at real times (SDP, re-INVITE).
    pub codecs: Vec<(f64, Channel, PayloadMap)>,
}

impl Call {
    pub fn new(legs: Vec<Leg>, net: Network, end: f64) -> Self {
        Self {
            legs,
            net,
            commands: vec![(
                0.0,
                Command::Start {
                    reason: "route".into(),
                },
            )],
            end,
            seed: 0x9e37_79b9_7f4a_7c15,
            config: RecordingConfig::default(),
            events: Vec::new(),
            codecs: Vec::new(),
        }
    }

    /// Runs the call through a fresh recording into `sink`; returns the recording.
    pub fn run(&mut self, sink: &mut dyn Sink) -> Recording {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s.max(0.0));
        let mut rec = Recording::new(t0, self.config);
        let mut rng = Rng(self.seed);
        let mut heap: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
        let mut order = 0u64;
        let mut buf = Vec::with_capacity(400);
        let mut commands = std::mem::take(&mut self.commands);
        commands.reverse();
        loop {
            let next_leg = self
                .legs
                .iter()
                .enumerate()
                .filter(|(_, l)| l.next_send() < l.end.min(self.end))
                .min_by(|a, b| a.1.next_send().total_cmp(&b.1.next_send()))
                .map(|(i, l)| (i, l.next_send()));
            let next_arrival = heap.peek().map(|Reverse((ns, ..))| *ns as f64 / 1e9);
            let next_command = commands.last().map(|(t, _)| *t);
            let candidates = [next_leg.map(|l| l.1), next_arrival, next_command];
            let Some(t) = candidates.iter().flatten().copied().reduce(f64::min) else {
                break;
            };
            while let Some((_, ch, map)) = self.codecs.first().filter(|c| c.0 <= t) {
                rec.set_codecs(*ch, map);
                self.codecs.remove(0);
            }
            if next_command == Some(t) {
                let (_, cmd) = commands.pop().expect("peeked");
                rec.handle_timeout(at(t));
                drain(&mut rec, sink, &mut self.events);
                rec.handle_command(at(t), cmd);
                drain(&mut rec, sink, &mut self.events);
            } else if next_arrival == Some(t) {
                let Reverse((ns, _, leg, bytes)) = heap.pop().expect("peeked");
                let now = t0 + Duration::from_nanos(ns);
                rec.handle_timeout(now);
                rec.handle_packet(now, self.legs[leg].channel, &bytes);
                drain(&mut rec, sink, &mut self.events);
            } else if let Some((i, _)) = next_leg {
                if let Some(send) = self.legs[i].produce(&mut buf) {
                    if rng.unit() < self.net.loss {
                        continue;
                    }
                    let arrival = send + self.net.delay + rng.unit() * self.net.jitter;
                    let copies = if rng.unit() < self.net.duplicate {
                        2
                    } else {
                        1
                    };
                    for c in 0..copies {
                        let ns = ((arrival + c as f64 * 0.001) * 1e9) as u64;
                        if ns as f64 / 1e9 <= self.end {
                            heap.push(Reverse((ns, order, i, buf.clone())));
                            order += 1;
                        }
                    }
                }
            }
        }
        rec.handle_timeout(at(self.end));
        drain(&mut rec, sink, &mut self.events);
        rec.finish(at(self.end), "call ended");
        drain(&mut rec, sink, &mut self.events);
        rec
    }
}

pub fn drain(rec: &mut Recording, sink: &mut dyn Sink, events: &mut Vec<recorder::Event>) {
    while let Some(out) = rec.poll_output() {
        match out {
            Output::Audio(a) => sink.write(a).expect("sink write"),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => break,
        }
    }
}

/// Asserts that `runs` holds one run per expected burst, each starting and ending within
/// `tol` seconds of `burst + shift`.
#[track_caller]
pub fn assert_bursts(runs: &[(f64, f64)], expected: &[Burst], shift: f64, tol: f64) {
    assert_eq!(
        runs.len(),
        expected.len(),
        "runs {runs:?} vs expected {expected:?} (+{shift})"
    );
    for (r, b) in runs.iter().zip(expected) {
        let (s, e) = (b.start + shift, b.end + shift);
        assert!(
            (r.0 - s).abs() <= tol && (r.1 - e).abs() <= tol,
            "run {r:?} vs expected ({s:.3}, {e:.3}); all runs {runs:?}"
        );
    }
}
