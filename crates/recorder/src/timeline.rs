//! One channel's timeline: RTP packets placed by timestamp on the call clock.
//!
//! Every position here is a sample index at 8 kHz on the *call timeline*, whose zero is the
//! instant the [`crate::Recording`] was created. A packet's position is `extended RTP timestamp +
//! offset`; the offset is chosen when the stream is anchored so that the packet ends at the
//! instant it arrived, and from then on it is only changed
//!
//! * gradually (*slewing*): the mean of `arrival − timestamp` is tracked with a moving average;
//!   when the mapping disagrees with it by more than [`SLEW_START`] samples (sender clock skew,
//!   or an anchor taken on a jittery first packet), the offset moves a few samples per packet
//!   until they agree within [`SLEW_STOP`]. Moving by +k leaves k silent samples, moving by −k
//!   overwrites k samples: skew is absorbed as inaudible insertions and drops instead of one
//!   channel running ahead of the other.
//! * at once (*re-anchoring*): on a new SSRC, when the timestamp jumps while the sequence number
//!   does not, when packets resume after an arrival gap with a different timestamp mapping
//!   (hold), or when several consecutive packets agree on a new mapping.
//!
//! Decoded samples land in a ring of [`RING`] samples that covers the window between the
//! playout position (`now − jitter delay`) and a bounded distance ahead of it: packets behind
//! the playout position are late, packets beyond the ring are dropped. Output therefore never
//! depends on how many packets arrive or on what timestamps they claim, only on the clock.

use media::codec::{Codec, Decoder, PayloadMap};
use media::rtp::RtpView;
use serde::{Deserialize, Serialize};

/// Ring length in samples (1.024 s); a power of two so positions map to slots with a mask.
pub(crate) const RING: usize = 8192;
const RING_MASK: i64 = RING as i64 - 1;
/// Largest payload decoded, in samples (256 ms at 8 kHz); bigger packets are malformed.
pub(crate) const MAX_PACKET_SAMPLES: usize = 2048;
/// Disagreement (samples) between mapping and mean arrival that starts slewing: 5 ms.
pub(crate) const SLEW_START: i64 = 40;
/// Disagreement (samples) at which slewing stops: 1 ms.
pub(crate) const SLEW_STOP: i64 = 8;
/// Largest correction applied per packet, in samples.
const SLEW_MAX_STEP: i64 = 8;
/// Arrival gap (samples) after which a packet with a new mapping re-anchors at once: 250 ms.
const RESUME_GAP: i64 = 2000;
/// Consecutive packets agreeing on a new mapping that re-anchor the stream.
const SHIFT_CONFIRM: u32 = 4;
/// How closely (samples) those packets must agree with each other: 20 ms.
const SHIFT_AGREE: i64 = 160;
/// Added to the jitter delay to tell a jump from a late packet: 45 ms.
const JUMP_MARGIN: i64 = 360;
/// G.722 packets held for in-order decoding (320 ms of 20 ms packets, well beyond the jitter
/// delay; when full, the oldest is decoded early)…
const HOLD_SLOTS: usize = 16;
/// …of at most this size (60 ms); larger ones are decoded on arrival.
const HOLD_BYTES: usize = 480;
/// Sequence numbers remembered for duplicate detection.
const SEQ_WINDOW: i64 = 128;
/// A sequence jump larger than this starts a new sequence epoch (sender restarted numbering).
const SEQ_RESTART: i64 = 3000;

/// Per-channel packet counters, reported in the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// Datagrams that parsed as RTP (including duplicates, late and unsupported ones).
    pub received: u64,
    /// Packets never received, from sequence-number gaps among supported payload types.
    pub lost: u64,
    /// Packets received more than once (second and later copies).
    pub duplicated: u64,
    /// Packets that arrived after their audio had been written (beyond the jitter window).
    pub late_dropped: u64,
    /// Packets whose audio lies wholly before the call timeline's zero (they arrived before
    /// the recording was created): outside the recording, not lost from it.
    #[serde(default)]
    pub before_start: u64,
    /// Packets whose timestamp placed them too far ahead of the clock (absurd timestamps, floods).
    pub early_dropped: u64,
    /// Datagrams that are not valid RTP or whose payload could not be decoded.
    pub malformed: u64,
    /// Packets whose payload type maps to no supported codec (recorded as silence).
    pub unsupported_codec: u64,
    /// Times the stream was re-anchored (new SSRC, timestamp jump, resume after hold…).
    pub reanchored: u64,
    /// Net samples inserted (positive) or dropped (negative) to follow the arrival clock.
    pub slewed_samples: i64,
}

/// Why a channel's timestamp mapping was re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReanchorCause {
    /// A different SSRC started sending on this channel.
    SsrcChange,
    /// The timestamp jumped while the sequence number advanced normally.
    TimestampJump,
    /// Packets resumed after an arrival gap (hold, one-way audio) with a new mapping.
    Resumed,
    /// Several consecutive packets agreed on a new mapping.
    Shifted,
}

/// What placing one packet did, for the recording to turn into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    Nothing,
    Reanchored(ReanchorCause),
    Unsupported { first_time: bool, payload_type: u8 },
}

#[derive(Debug)]
struct SeqState {
    highest: i64,
    base: i64,
    unique: u64,
    /// Bit i set: sequence `highest - i` was received.
    seen: u128,
}

#[derive(Debug)]
struct Mapping {
    offset: i64,
    /// Packet length at anchoring: the mapping puts a packet's end at its arrival.
    lead: i64,
    mean_delay: f64,
    samples: u32,
    slewing: bool,
    last_ts: u32,
    last_ts_ext: i64,
    last_seq_ext: i64,
    last_len: i64,
    last_arrival: i64,
    outlier_ref: i64,
    outliers: u32,
    /// The sequence numbering restarted: a mapping change now is a timestamp jump.
    renumbered: bool,
}

/// The timeline of one channel (customer or agent).
pub(crate) struct ChannelTimeline {
    ring: Box<[i16]>,
    codecs: PayloadMap,
    decoder: Decoder,
    ssrc: Option<u32>,
    seq: Option<SeqState>,
    map: Option<Mapping>,
    lost_closed: u64,
    stats: ChannelStats,
    warned_pt: u128,
    codecs_seen: u8,
    /// Deviation from the mean arrival delay (samples) that is a jump, not jitter.
    jump: i64,
    held: Vec<Held>,
}

/// A G.722 payload waiting to be decoded in order.
struct Held {
    seq_ext: i64,
    pos: i64,
    len: usize,
    payload: [u8; HOLD_BYTES],
}

impl std::fmt::Debug for ChannelTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelTimeline")
            .field("ssrc", &self.ssrc)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Codecs reported in the metadata, in a fixed order.
const CODEC_ORDER: [Codec; 5] = [
    Codec::Pcmu,
    Codec::Pcma,
    Codec::G722,
    Codec::ComfortNoise,
    Codec::TelephoneEvent,
];

impl ChannelTimeline {
    /// `jitter_delay` in samples: deviations well beyond it are jumps rather than jitter.
    pub(crate) fn new(jitter_delay: i64) -> Self {
        Self {
            jump: jitter_delay + JUMP_MARGIN,
            held: Vec::with_capacity(HOLD_SLOTS),
            ring: vec![0i16; RING].into_boxed_slice(),
            codecs: PayloadMap::with_static(),
            decoder: Decoder::new(),
            ssrc: None,
            seq: None,
            map: None,
            lost_closed: 0,
            stats: ChannelStats::default(),
            warned_pt: 0,
            codecs_seen: 0,
        }
    }

    /// Heap bytes owned by this timeline (the struct itself excluded).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.len() * std::mem::size_of::<i16>()
            + self.held.capacity() * std::mem::size_of::<Held>()
    }

    pub(crate) fn set_codecs(&mut self, codecs: &PayloadMap) {
        self.codecs = codecs.clone();
    }

    pub(crate) fn stats(&self) -> ChannelStats {
        let mut s = self.stats;
        s.lost = self.lost_closed + self.seq.as_ref().map_or(0, epoch_lost);
        s
    }

    /// Names of the codecs this channel carried, for the metadata.
    pub(crate) fn codecs_seen(&self) -> Vec<String> {
        CODEC_ORDER
            .iter()
            .enumerate()
            .filter(|(i, _)| self.codecs_seen & (1 << i) != 0)
            .map(|(_, c)| c.name().to_string())
            .collect()
    }

    fn note_codec(&mut self, codec: Codec) {
        if let Some(i) = CODEC_ORDER.iter().position(|&c| c == codec) {
            self.codecs_seen |= 1 << i;
        }
    }

    /// Handles one datagram that arrived at call-timeline position `arrival`, while the
    /// playout position is `play`. `scratch` is decode space shared by the channels.
    pub(crate) fn handle_packet(
        &mut self,
        arrival: i64,
        play: i64,
        datagram: &[u8],
        scratch: &mut [i16; MAX_PACKET_SAMPLES],
    ) -> Placed {
        let Ok(rtp) = RtpView::parse(datagram) else {
            self.stats.malformed += 1;
            return Placed::Nothing;
        };
        self.stats.received += 1;
        let pt = rtp.payload_type();
        let codec = self.codecs.get(pt);
        if codec == Codec::Unsupported {
            self.stats.unsupported_codec += 1;
            let bit = 1u128 << (pt & 0x7f);
            let first_time = self.warned_pt & bit == 0;
            self.warned_pt |= bit;
            return Placed::Unsupported {
                first_time,
                payload_type: pt,
            };
        }

        self.note_codec(codec);
        if !codec.is_audio() {
            // CN and telephone-events put no samples on the timeline: their span stays silent.
            // They share the audio stream's sequence space, so they count for loss and
            // duplicates, but only audio may change the stream: some endpoints send events
            // with an SSRC of their own.
            if self.ssrc == Some(rtp.ssrc()) {
                let _ = self.track_sequence(rtp.sequence());
            }
            return Placed::Nothing;
        }
        let mut cause = None;
        if self.ssrc != Some(rtp.ssrc()) {
            if self.ssrc.is_some() {
                cause = Some(ReanchorCause::SsrcChange);
            }
            self.ssrc = Some(rtp.ssrc());
            // Held packets of the old stream are decoded with the old stream's state.
            self.release(i64::MAX, play, scratch);
            self.close_seq_epoch();
            self.map = None;
            self.decoder.reset();
        }
        let Some(seq_ext) = self.track_sequence(rtp.sequence()) else {
            return Placed::Nothing;
        };

        let payload = rtp.payload();
        if payload.is_empty() || codec.samples_for(payload.len()) > MAX_PACKET_SAMPLES {
            self.stats.malformed += 1;
            return Placed::Nothing;
        }
        let n = codec.samples_for(payload.len()) as i64;

        let ts = rtp.timestamp();
        let pos = match self.map_packet(arrival, ts, seq_ext, n) {
            Mapped::Normal(pos) => pos,
            Mapped::Anchored(pos, why) => {
                if cause.is_none() && why.is_some() {
                    cause = why;
                }
                pos
            }
        };
        if cause.is_some() {
            self.stats.reanchored += 1;
        }
        if codec == Codec::G722 && payload.len() <= HOLD_BYTES {
            self.hold(seq_ext, pos, payload, play, scratch);
        } else {
            self.decode_and_write(codec, payload, pos, play, scratch);
        }
        match cause {
            Some(c) => Placed::Reanchored(c),
            None => Placed::Nothing,
        }
    }

    fn close_seq_epoch(&mut self) {
        if let Some(seq) = self.seq.take() {
            self.lost_closed += epoch_lost(&seq);
        }
    }

    /// Duplicate detection and loss accounting. Returns the extended sequence number, or
    /// `None` when the packet is a duplicate or too old to tell.
    fn track_sequence(&mut self, seq: u16) -> Option<i64> {
        let Some(state) = self.seq.as_mut() else {
            self.seq = Some(SeqState {
                highest: seq as i64,
                base: seq as i64,
                unique: 1,
                seen: 1,
            });
            return Some(seq as i64);
        };
        let delta = seq.wrapping_sub(state.highest as u16) as i16 as i64;
        let ext = state.highest + delta;
        if delta.abs() > SEQ_RESTART {
            // The sender renumbered: account the old run and start a new one.
            self.close_seq_epoch();
            self.seq = Some(SeqState {
                highest: ext,
                base: ext,
                unique: 1,
                seen: 1,
            });
            if let Some(m) = self.map.as_mut() {
                m.last_seq_ext = ext;
                m.renumbered = true;
            }
            return Some(ext);
        }
        if delta > 0 {
            state.seen = if delta >= SEQ_WINDOW {
                0
            } else {
                state.seen << delta
            };
            state.seen |= 1;
            state.highest = ext;
            state.unique += 1;
            return Some(ext);
        }
        let age = -delta;
        if age >= SEQ_WINDOW {
            self.stats.late_dropped += 1;
            return None;
        }
        let bit = 1u128 << age;
        if state.seen & bit != 0 {
            self.stats.duplicated += 1;
            return None;
        }
        state.seen |= bit;
        state.unique += 1;
        Some(ext)
    }

    fn map_packet(&mut self, arrival: i64, ts: u32, seq_ext: i64, n: i64) -> Mapped {
        let Some(m) = self.map.as_mut() else {
            let ts_ext = ts as i64;
            let m = Mapping::anchor(arrival, ts, ts_ext, seq_ext, n);
            let pos = ts_ext + m.offset;
            self.map = Some(m);
            return Mapped::Anchored(pos, None);
        };
        let ts_ext = m.last_ts_ext + ts.wrapping_sub(m.last_ts) as i32 as i64;
        let delay = arrival - ts_ext;
        let jump = (delay as f64 - m.mean_delay).abs() > self.jump as f64;
        let newer = seq_ext > m.last_seq_ext;
        let renumbered = std::mem::take(&mut m.renumbered);
        if jump {
            let gap = arrival - m.last_arrival;
            let seq_delta = seq_ext - m.last_seq_ext;
            let ts_delta = ts_ext - m.last_ts_ext;
            let why = if gap > RESUME_GAP {
                Some(ReanchorCause::Resumed)
            } else if renumbered
                || (seq_delta > 0 && (ts_delta - seq_delta * m.last_len).abs() > self.jump)
            {
                Some(ReanchorCause::TimestampJump)
            } else {
                if m.outliers > 0 && (delay - m.outlier_ref).abs() < SHIFT_AGREE {
                    m.outliers += 1;
                } else {
                    m.outlier_ref = delay;
                    m.outliers = 1;
                }
                (m.outliers >= SHIFT_CONFIRM).then_some(ReanchorCause::Shifted)
            };
            if let Some(why) = why {
                *m = Mapping::anchor(arrival, ts, ts_ext, seq_ext, n);
                return Mapped::Anchored(ts_ext + m.offset, Some(why));
            }
            // A lone outlier: place it with the current mapping (it is most likely late) and
            // keep it out of the average.
            if newer {
                m.remember(arrival, ts, ts_ext, seq_ext, n);
            }
            return Mapped::Normal(ts_ext + m.offset);
        }
        m.outliers = 0;
        m.samples = m.samples.saturating_add(1);
        // A running mean over the first packets, then an exponential average (~1.3 s at 20 ms).
        let weight = 1.0 / f64::from(m.samples.min(64));
        m.mean_delay += (delay as f64 - m.mean_delay) * weight;
        let err = (m.mean_delay - m.lead as f64).round() as i64 - m.offset;
        if !m.slewing && err.abs() > SLEW_START {
            m.slewing = true;
        }
        if m.slewing {
            if err.abs() <= SLEW_STOP {
                m.slewing = false;
            } else {
                let step = (err.abs() / 32).clamp(1, SLEW_MAX_STEP) * err.signum();
                m.offset += step;
                self.stats.slewed_samples += step;
            }
        }
        if newer {
            m.remember(arrival, ts, ts_ext, seq_ext, n);
        }
        Mapped::Normal(ts_ext + m.offset)
    }

    fn decode_and_write(
        &mut self,
        codec: Codec,
        payload: &[u8],
        pos: i64,
        play: i64,
        scratch: &mut [i16; MAX_PACKET_SAMPLES],
    ) {
        match self.decoder.decode(codec, payload, scratch) {
            Ok(n) if n > 0 => self.write(pos, play, &scratch[..n]),
            _ => self.stats.malformed += 1,
        }
    }

    /// Keeps a G.722 payload until its audio is due, so that reordered packets reach the
    /// ADPCM decoder in sequence order (decoding them as they arrive would run the predictor
    /// on the wrong history and smear audio across packets).
    fn hold(
        &mut self,
        seq_ext: i64,
        pos: i64,
        payload: &[u8],
        play: i64,
        scratch: &mut [i16; MAX_PACKET_SAMPLES],
    ) {
        let n = payload.len() as i64;
        if pos + n <= 0 {
            self.stats.before_start += 1;
            return;
        }
        if pos + n <= play {
            self.stats.late_dropped += 1;
            return;
        }
        if pos >= play + RING as i64 {
            self.stats.early_dropped += 1;
            return;
        }
        if self.held.len() == HOLD_SLOTS {
            if let Some(oldest) = (0..self.held.len()).min_by_key(|&i| self.held[i].seq_ext) {
                let h = self.held.swap_remove(oldest);
                self.decode_and_write(Codec::G722, &h.payload[..h.len], h.pos, play, scratch);
            }
        }
        let mut h = Held {
            seq_ext,
            pos,
            len: payload.len(),
            payload: [0; HOLD_BYTES],
        };
        h.payload[..payload.len()].copy_from_slice(payload);
        self.held.push(h);
    }

    /// Decodes, in sequence order, the held packets that start before `until`.
    pub(crate) fn release(
        &mut self,
        until: i64,
        play: i64,
        scratch: &mut [i16; MAX_PACKET_SAMPLES],
    ) {
        while let Some(i) = (0..self.held.len())
            .filter(|&i| self.held[i].pos < until)
            .min_by_key(|&i| self.held[i].seq_ext)
        {
            let h = self.held.swap_remove(i);
            self.decode_and_write(Codec::G722, &h.payload[..h.len], h.pos, play, scratch);
        }
    }

    /// Writes decoded samples at `pos`, clipped to the part of the ring still ahead of `play`.
    fn write(&mut self, pos: i64, play: i64, samples: &[i16]) {
        let end = pos + samples.len() as i64;
        if end <= 0 {
            self.stats.before_start += 1;
            return;
        }
        if end <= play {
            self.stats.late_dropped += 1;
            return;
        }
        let limit = play + RING as i64;
        if pos >= limit {
            self.stats.early_dropped += 1;
            return;
        }
        let from = pos.max(play);
        let to = end.min(limit);
        let src = &samples[(from - pos) as usize..(to - pos) as usize];
        let start = (from & RING_MASK) as usize;
        let first = src.len().min(RING - start);
        self.ring[start..start + first].copy_from_slice(&src[..first]);
        self.ring[..src.len() - first].copy_from_slice(&src[first..]);
    }

    /// The ring slots for `len` samples from position `from`, as up to two contiguous runs.
    pub(crate) fn slots(&mut self, from: i64, len: usize) -> (&mut [i16], &mut [i16]) {
        let start = (from & RING_MASK) as usize;
        let first = len.min(RING - start);
        let (head, tail) = self.ring.split_at_mut(start);
        (&mut tail[..first], &mut head[..len - first])
    }
}

enum Mapped {
    Normal(i64),
    Anchored(i64, Option<ReanchorCause>),
}

impl Mapping {
    fn anchor(arrival: i64, ts: u32, ts_ext: i64, seq_ext: i64, n: i64) -> Self {
        let delay = arrival - ts_ext;
        Mapping {
            offset: delay - n,
            lead: n,
            mean_delay: delay as f64,
            samples: 1,
            slewing: false,
            last_ts: ts,
            last_ts_ext: ts_ext,
            last_seq_ext: seq_ext,
            last_len: n,
            last_arrival: arrival,
            outlier_ref: 0,
            outliers: 0,
            renumbered: false,
        }
    }

    fn remember(&mut self, arrival: i64, ts: u32, ts_ext: i64, seq_ext: i64, n: i64) {
        self.last_ts = ts;
        self.last_ts_ext = ts_ext;
        self.last_seq_ext = seq_ext;
        self.last_len = n;
        self.last_arrival = arrival;
    }
}

fn epoch_lost(seq: &SeqState) -> u64 {
    let expected = (seq.highest - seq.base + 1).max(0) as u64;
    expected.saturating_sub(seq.unique)
}
