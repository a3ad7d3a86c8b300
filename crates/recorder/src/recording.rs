//! The per-contact recording state machine (sans-IO).
//!
//! A [`Recording`] is created when the call starts and lives until it ends. It is fed RTP
//! datagrams of both legs with their arrival instants, recording commands and timeouts, and
//! produces stereo audio (channel 1 customer, channel 2 agent), events and its next timeout
//! through [`Recording::poll_output`]. It never reads a clock, touches a file or spawns
//! anything: the driver owns time and IO.
//!
//! ## Time
//! Time zero is the `now` passed to [`Recording::new`]. Packets stamped earlier count as
//! arriving at zero: the first of a stream anchors it with its audio ending at zero, outside
//! the recording, and is counted `before_start` rather than `late_dropped`; the following ones
//! are placed after it by timestamp. Output runs a fixed *jitter delay*
//! behind the clock: audio for instant `t` is emitted once the clock passes `t + delay`, so
//! packets reordered within that window are put back in place. The amount of audio produced
//! depends only on the clock, never on the packets: a file can never be longer than the call.
//!
//! ## Segments
//! Commands take effect at the instant they are given (not at the delayed output position),
//! so "pause at 12:00:05" silences exactly the audio heard from 12:00:05 on.
//! * not started / stopped: audio is **not written**. A stopped span is not part of the
//!   recording; the file is the concatenation of the recorded segments, and the segment list
//!   gives each segment's place both in the file and in the call.
//! * paused: written as silence on both channels (the span is part of the recording, its
//!   content is withheld).
//! * agent-only: channel 1 (customer) is silent, channel 2 carries the agent.
//!
//! Every change of what is written closes the current segment and opens a new one; all
//! segments of a contact go into one file.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use media::codec::PayloadMap;
use serde::{Deserialize, Serialize};

use crate::timeline::{ChannelStats, ChannelTimeline, Placed, ReanchorCause, MAX_PACKET_SAMPLES};

/// Audio sample rate of every recording.
pub const SAMPLE_RATE: u32 = 8000;
/// Channels of every recording.
pub const CHANNELS: u16 = 2;
/// Largest audio chunk handed out by [`Recording::poll_output`], in stereo frames (128 ms).
pub const MAX_CHUNK_FRAMES: usize = 1024;
const NANOS_PER_SAMPLE: u128 = 1_000_000_000 / SAMPLE_RATE as u128;
const MAX_PENDING_EVENTS: usize = 64;

/// Which side of the call a packet belongs to. The route decides it, never packet order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Channel 1 (left).
    Customer,
    /// Channel 2 (right).
    Agent,
}

impl Channel {
    fn index(self) -> usize {
        match self {
            Channel::Customer => 0,
            Channel::Agent => 1,
        }
    }
}

/// Recording commands, from the route configuration, the HTTP control API or the policy
/// engine. `reason` ends up in the segment list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start (or restart after a stop) writing audio.
    Start { reason: String },
    /// Stop writing; the stopped span is left out of the file.
    Stop { reason: String },
    /// Keep the timeline running but write silence on both channels.
    Pause { reason: String },
    /// Leave a pause.
    Resume { reason: String },
    /// Record the agent only: channel 1 silent. Also applies to later starts.
    AgentOnly { reason: String },
    /// Record both channels again (the default).
    BothChannels { reason: String },
    /// Never write any audio from before this instant, whatever later commands say: the
    /// audio held in the jitter window is dropped. Sent when the caller answers the consent
    /// question, so nothing said before the answer reaches the file.
    DiscardBuffered { reason: String },
}

impl Command {
    fn kind(&self) -> CommandKind {
        match self {
            Command::Start { .. } => CommandKind::Start,
            Command::Stop { .. } => CommandKind::Stop,
            Command::Pause { .. } => CommandKind::Pause,
            Command::Resume { .. } => CommandKind::Resume,
            Command::AgentOnly { .. } => CommandKind::AgentOnly,
            Command::BothChannels { .. } => CommandKind::BothChannels,
            Command::DiscardBuffered { .. } => CommandKind::DiscardBuffered,
        }
    }

    fn into_reason(self) -> String {
        match self {
            Command::Start { reason }
            | Command::Stop { reason }
            | Command::Pause { reason }
            | Command::Resume { reason }
            | Command::AgentOnly { reason }
            | Command::BothChannels { reason }
            | Command::DiscardBuffered { reason } => reason,
        }
    }
}

/// A command without its reason, for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    Start,
    Stop,
    Pause,
    Resume,
    AgentOnly,
    BothChannels,
    DiscardBuffered,
}

/// What a segment of the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// Both channels recorded.
    Full,
    /// Channel 1 silent, channel 2 recorded.
    AgentOnly,
    /// Both channels silent.
    Paused,
}

/// One segment of the file. Frames are stereo frames at 8 kHz from the start of the file;
/// call times are milliseconds from the start of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub kind: SegmentKind,
    pub start_frame: u64,
    /// `None` while the segment is open.
    pub end_frame: Option<u64>,
    pub call_start_ms: u64,
    pub call_end_ms: Option<u64>,
    pub start_reason: String,
    pub end_reason: Option<String>,
}

/// Something the driver may want to log, count or put in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `segments()[index]` started at file frame `frame`.
    SegmentStarted {
        index: usize,
        kind: SegmentKind,
        frame: u64,
    },
    /// `segments()[index]` ended at file frame `frame`.
    SegmentEnded {
        index: usize,
        kind: SegmentKind,
        frame: u64,
    },
    /// A command changed nothing (e.g. resume while not paused).
    CommandIgnored { command: CommandKind },
    /// First packet of a payload type without a supported codec on this channel: its audio is
    /// recorded as silence.
    UnsupportedCodec { channel: Channel, payload_type: u8 },
    /// A channel's timestamp mapping was re-established.
    Reanchored {
        channel: Channel,
        cause: ReanchorCause,
    },
    /// The recording is finished: every frame has been handed out.
    Finished { frames: u64 },
}

/// What [`Recording::poll_output`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Interleaved stereo frames (customer, agent), the next part of the file.
    Audio(&'a [i16]),
    Event(Event),
    /// Nothing more until this instant: call [`Recording::handle_timeout`] then.
    Timeout(Instant),
}

/// Tuning of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingConfig {
    /// How far output runs behind the clock; packets later than this are dropped. Clamped to
    /// 20..=500 ms.
    pub jitter_delay: Duration,
    /// How much audio is gathered before the next timeout. Clamped to 10..=100 ms.
    pub tick: Duration,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            jitter_delay: Duration::from_millis(80),
            tick: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Stopped,
    Recording,
    Paused,
}

/// One contact's recording. See the module documentation.
#[derive(Debug)]
pub struct Recording {
    t0: Instant,
    delay: i64,
    tick: i64,
    channels: [ChannelTimeline; 2],
    scratch: Box<[i16; MAX_PACKET_SAMPLES]>,
    out: Box<[i16]>,
    /// Next call-timeline position to emit.
    play: i64,
    /// Emit up to here.
    target: i64,
    frames: u64,
    run: Run,
    agent_only: bool,
    pending: VecDeque<(i64, Command)>,
    events: VecDeque<Event>,
    dropped_events: u64,
    segments: Vec<Segment>,
    tap_drops: u64,
    /// Audio before this position is never written ([`Command::DiscardBuffered`]).
    discard_until: i64,
    finishing: bool,
    finished: bool,
}

impl Recording {
    /// A recording whose call timeline starts at `now`, initially stopped: send
    /// [`Command::Start`] to begin writing. Packets are tracked from the start either way, so
    /// a later start is aligned from its first frame.
    pub fn new(now: Instant, config: RecordingConfig) -> Self {
        let delay = samples(
            config
                .jitter_delay
                .clamp(Duration::from_millis(20), Duration::from_millis(500)),
        );
        let tick = samples(
            config
                .tick
                .clamp(Duration::from_millis(10), Duration::from_millis(100)),
        );
        Self {
            t0: now,
            delay,
            tick,
            channels: [ChannelTimeline::new(delay), ChannelTimeline::new(delay)],
            scratch: Box::new([0; MAX_PACKET_SAMPLES]),
            out: vec![0; 2 * MAX_CHUNK_FRAMES].into_boxed_slice(),
            play: 0,
            target: 0,
            frames: 0,
            run: Run::Stopped,
            agent_only: false,
            pending: VecDeque::with_capacity(8),
            events: VecDeque::with_capacity(16),
            dropped_events: 0,
            segments: Vec::new(),
            tap_drops: 0,
            discard_until: 0,
            finishing: false,
            finished: false,
        }
    }

    /// Sets the payload-type table of one leg (from its SDP). Call again after a re-INVITE;
    /// packets use the table in force when they are handled.
    pub fn set_codecs(&mut self, channel: Channel, codecs: &PayloadMap) {
        self.channels[channel.index()].set_codecs(codecs);
    }

    /// One datagram from a leg, with the instant it arrived at the relay (not the instant it
    /// is processed: a tap queue in between must carry the arrival time). Never fails: bad
    /// packets are counted and dropped.
    pub fn handle_packet(&mut self, now: Instant, channel: Channel, datagram: &[u8]) {
        if self.finishing {
            return;
        }
        let arrival = self.position(now);
        // A driver that falls behind on timeouts must not make packets overflow the ring.
        let overdue = arrival - self.delay - self.play;
        if overdue > (crate::timeline::RING as i64) / 2 {
            self.target = self.target.max(arrival - self.delay);
        }
        let placed = self.channels[channel.index()].handle_packet(
            arrival,
            self.play,
            datagram,
            &mut self.scratch,
        );
        match placed {
            Placed::Nothing => {}
            Placed::Reanchored(cause) => self.push_event(Event::Reanchored { channel, cause }),
            Placed::Unsupported {
                first_time,
                payload_type,
            } => {
                if first_time {
                    self.push_event(Event::UnsupportedCodec {
                        channel,
                        payload_type,
                    });
                }
            }
        }
    }

    /// A recording command, effective at `now`.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        if self.finishing {
            return;
        }
        let at = self.position(now).max(self.play);
        if let Command::DiscardBuffered { .. } = command {
            self.discard_until = self.discard_until.max(at);
            return;
        }
        let at = self.pending.back().map_or(at, |(p, _)| at.max(*p));
        self.pending.push_back((at, command));
    }

    /// Advances the clock: audio up to `now − jitter delay` becomes available.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finishing {
            return;
        }
        self.target = self.target.max(self.position(now) - self.delay);
    }

    /// Ends the recording at `now`: the audio still inside the jitter window is emitted, the
    /// open segment is closed with `reason`, then [`Event::Finished`] and `None` follow.
    pub fn finish(&mut self, now: Instant, reason: &str) {
        if self.finishing {
            return;
        }
        let end = self.position(now).max(self.play);
        self.target = self.target.max(end);
        let at = self.pending.back().map_or(end, |(p, _)| end.max(*p));
        self.pending.push_back((
            at,
            Command::Stop {
                reason: reason.to_string(),
            },
        ));
        self.finishing = true;
    }

    /// Counts datagrams the driver's bounded tap queue had to drop for this recording.
    pub fn note_tap_drops(&mut self, n: u64) {
        self.tap_drops = self.tap_drops.saturating_add(n);
    }

    /// The next output. Drain it after every `handle_*` call until it returns
    /// [`Output::Timeout`]; after [`Recording::finish`] it ends with `None`.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(Output::Event(event));
            }
            if self.finished {
                return None;
            }
            if let Some((at, _)) = self.pending.front() {
                if *at <= self.play || (self.finishing && self.play >= self.target) {
                    if let Some((_, command)) = self.pending.pop_front() {
                        self.apply(command);
                    }
                    continue;
                }
            }
            if self.play < self.target {
                let mut end = self.target.min(self.play + MAX_CHUNK_FRAMES as i64);
                if let Some((at, _)) = self.pending.front() {
                    end = end.min(*at);
                }
                let discarding = self.play < self.discard_until;
                if discarding {
                    end = end.min(self.discard_until);
                }
                let len = (end - self.play) as usize;
                let kind = if discarding { None } else { self.kind() };
                let from = self.play;
                for ch in &mut self.channels {
                    ch.release(end, from, &mut self.scratch);
                }
                self.play = end;
                match kind {
                    None => self.discard(from, len),
                    Some(kind) => {
                        self.mix(from, len, kind);
                        self.frames += len as u64;
                        return Some(Output::Audio(&self.out[..2 * len]));
                    }
                }
                continue;
            }
            if self.finishing {
                self.finished = true;
                self.events.push_back(Event::Finished {
                    frames: self.frames,
                });
                continue;
            }
            let next = self.play + self.tick + self.delay;
            return Some(Output::Timeout(self.instant(next)));
        }
    }

    /// Segments so far (the last one open while recording).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Packet counters of one channel.
    pub fn stats(&self, channel: Channel) -> ChannelStats {
        self.channels[channel.index()].stats()
    }

    /// Names of the codecs a channel has carried so far.
    pub fn codecs_seen(&self, channel: Channel) -> Vec<String> {
        self.channels[channel.index()].codecs_seen()
    }

    /// Datagrams dropped by the driver's tap queue, as reported with `note_tap_drops`.
    pub fn tap_drops(&self) -> u64 {
        self.tap_drops
    }

    /// Events that were dropped because the driver did not drain them (bounded queue).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Stereo frames handed out so far: the length of the file.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// How much of the call has been emitted (recorded or not), in milliseconds.
    pub fn call_elapsed_ms(&self) -> u64 {
        position_ms(self.play)
    }

    /// Whether audio is currently being written (recording or paused).
    pub fn is_recording(&self) -> bool {
        self.run != Run::Stopped
    }

    /// Memory held by this recording (struct and buffers; sinks not included).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.channels.iter().map(|c| c.heap_bytes()).sum::<usize>()
            + std::mem::size_of_val(&*self.scratch)
            + std::mem::size_of_val(&*self.out)
            + self.pending.capacity() * std::mem::size_of::<(i64, Command)>()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self.segments.capacity() * std::mem::size_of::<Segment>()
    }

    fn position(&self, now: Instant) -> i64 {
        let nanos = now.saturating_duration_since(self.t0).as_nanos();
        (nanos / NANOS_PER_SAMPLE).min(i64::MAX as u128 / 2) as i64
    }

    fn instant(&self, pos: i64) -> Instant {
        self.t0 + Duration::from_nanos(pos.max(0) as u64 * NANOS_PER_SAMPLE as u64)
    }

    fn kind(&self) -> Option<SegmentKind> {
        match self.run {
            Run::Stopped => None,
            Run::Paused => Some(SegmentKind::Paused),
            Run::Recording if self.agent_only => Some(SegmentKind::AgentOnly),
            Run::Recording => Some(SegmentKind::Full),
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.dropped_events += 1;
        } else {
            self.events.push_back(event);
        }
    }

    fn apply(&mut self, command: Command) {
        let before = self.kind();
        let command_kind = command.kind();
        match command_kind {
            CommandKind::Start => self.run = Run::Recording,
            CommandKind::Stop => self.run = Run::Stopped,
            CommandKind::Pause if self.run == Run::Recording => self.run = Run::Paused,
            CommandKind::Resume if self.run == Run::Paused => self.run = Run::Recording,
            CommandKind::AgentOnly => self.agent_only = true,
            CommandKind::BothChannels => self.agent_only = false,
            CommandKind::Pause | CommandKind::Resume | CommandKind::DiscardBuffered => {}
        }
        let after = self.kind();
        if before == after {
            if !(command_kind == CommandKind::Stop && self.finishing) {
                self.push_event(Event::CommandIgnored {
                    command: command_kind,
                });
            }
            return;
        }
        let reason = command.into_reason();
        let call_ms = position_ms(self.play);
        if let Some(kind) = before {
            let index = self.segments.len() - 1;
            if let Some(open) = self.segments.last_mut() {
                open.end_frame = Some(self.frames);
                open.call_end_ms = Some(call_ms);
                open.end_reason = Some(reason.clone());
            }
            self.push_event(Event::SegmentEnded {
                index,
                kind,
                frame: self.frames,
            });
        }
        if let Some(kind) = after {
            self.segments.push(Segment {
                kind,
                start_frame: self.frames,
                end_frame: None,
                call_start_ms: call_ms,
                call_end_ms: None,
                start_reason: reason,
                end_reason: None,
            });
            self.push_event(Event::SegmentStarted {
                index: self.segments.len() - 1,
                kind,
                frame: self.frames,
            });
        }
    }

    fn discard(&mut self, from: i64, len: usize) {
        for ch in &mut self.channels {
            let (a, b) = ch.slots(from, len);
            a.fill(0);
            b.fill(0);
        }
    }

    fn mix(&mut self, from: i64, len: usize, kind: SegmentKind) {
        let [customer, agent] = &mut self.channels;
        let (c1, c2) = customer.slots(from, len);
        let (a1, a2) = agent.slots(from, len);
        let out = &mut self.out[..2 * len];
        let keep_customer = kind == SegmentKind::Full;
        let keep_agent = kind != SegmentKind::Paused;
        let split = c1.len();
        let (o1, o2) = out.split_at_mut(2 * split);
        interleave(o1, c1, a1, keep_customer, keep_agent);
        interleave(o2, c2, a2, keep_customer, keep_agent);
    }
}

/// Interleaves two channels into `out`, silencing those not kept, and clears the sources.
fn interleave(out: &mut [i16], left: &mut [i16], right: &mut [i16], keep_l: bool, keep_r: bool) {
    for ((frame, l), r) in out.chunks_exact_mut(2).zip(left.iter()).zip(right.iter()) {
        frame[0] = if keep_l { *l } else { 0 };
        frame[1] = if keep_r { *r } else { 0 };
    }
    left.fill(0);
    right.fill(0);
}

fn samples(d: Duration) -> i64 {
    (d.as_nanos() / NANOS_PER_SAMPLE) as i64
}

fn position_ms(pos: i64) -> u64 {
    (pos.max(0) / (SAMPLE_RATE as i64 / 1000)) as u64
}
