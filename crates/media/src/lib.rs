//! Media for tapir: RTP/RTCP packet views and renumbering, codecs (decode to 8 kHz PCM) and DTMF detection.
//!
//! Everything here is sans-IO: functions and state machines take bytes and time as input and
//! never touch sockets or clocks. The relay in the binary and the recorder build on it.

pub mod codec;
pub mod dtmf;
pub mod rtp;
