//! The recorder: one dual-channel file per contact, aligned, gap-true and crash-safe.
//!
//! Channel 1 is always the customer and channel 2 the agent, as the route says; 8 kHz, 16-bit,
//! WAV or MP3 (32 kbit/s).
//!
//! ## Layout
//! * [`recording`]: the sans-IO [`Recording`] state machine. Packets, commands and timeouts
//!   in (each with the instant they happened); stereo audio, events and the next timeout out.
//! * `timeline`: per-channel placement of RTP packets by timestamp on the call clock
//!   (reordering, duplicates, loss, re-anchoring, clock-skew slewing), see [`ChannelStats`].
//! * [`sink`]: blocking WAV/MP3 writers for a writer thread, flushed and playable at least
//!   every second, and [`transcode_wav_to_mp3`] for drivers that spool MP3 calls as WAV.
//! * [`metadata`]: the JSON sidecar.
//! * [`repair`]: start-up repair of files interrupted by a crash.
//!
//! ## Driving a recording
//! ```no_run
//! # use std::time::Instant;
//! # use recorder::*;
//! # fn run(dir: &std::path::Path, packets: Vec<(Instant, Channel, Vec<u8>)>) -> Result<(), RecorderError> {
//! let now = Instant::now();
//! let mut rec = Recording::new(now, RecordingConfig::default());
//! rec.set_codecs(Channel::Customer, &media::codec::PayloadMap::with_static());
//! rec.handle_command(now, Command::Start { reason: "route".into() });
//! let mut sink = create_sink(Format::Wav, &dir.join("c1.wav"), SinkOptions::default())?;
//! for (at, channel, datagram) in packets {
//!     rec.handle_packet(at, channel, &datagram);
//!     rec.handle_timeout(at);
//!     while let Some(out) = rec.poll_output() {
//!         match out {
//!             Output::Audio(frames) => sink.write(frames)?,
//!             Output::Event(_event) => {}
//!             Output::Timeout(_next) => break,
//!         }
//!     }
//! }
//! rec.finish(Instant::now(), "call ended");
//! while let Some(out) = rec.poll_output() {
//!     if let Output::Audio(frames) = out {
//!         sink.write(frames)?;
//!     }
//! }
//! sink.finish()?;
//! # Ok(()) }
//! ```

mod error;
pub mod metadata;
pub mod recording;
pub mod repair;
pub mod sink;
mod timeline;

pub use error::RecorderError;
pub use metadata::{sidecar_path, RecordingMetadata};
pub use recording::{
    Channel, Command, CommandKind, Event, Output, Recording, RecordingConfig, Segment, SegmentKind,
    CHANNELS, MAX_CHUNK_FRAMES, SAMPLE_RATE,
};
pub use repair::{repair_spool, repair_wav, RepairedFile};
pub use sink::{create_sink, transcode_wav_to_mp3, Format, Mp3Sink, Sink, SinkOptions, WavSink};
pub use timeline::{ChannelStats, ReanchorCause};
