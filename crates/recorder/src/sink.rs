//! Where recorded audio goes: WAV and MP3 files written with blocking `std::io`.
//!
//! Sinks block on the file system, so the driver runs them on a writer thread, never on the
//! RTP path. Both sinks make what is on disk playable at least once per flush interval
//! (default 0.8 s of audio, so that together with the jitter delay a `kill -9` loses at most
//! about a second):
//!
//! * [`WavSink`] writes the RIFF/WAVE header by hand. hound's `WavWriter` can patch its header
//!   on `flush()`, but it takes samples one call at a time; writing whole chunks as bytes is
//!   several times faster, and the header layout must be known exactly anyway for
//!   [`crate::repair_spool`]. Each flush writes the buffered samples, then rewrites the RIFF and
//!   `data` sizes in place.
//! * [`Mp3Sink`] encodes with LAME at 32 kbit/s CBR, 8 kHz joint stereo, no Xing/LAME tag (an
//!   interrupted file needs none). MP3 frames are self-delimiting, so a flush only has to push
//!   the encoded bytes to the file; `finish` adds LAME's last frames (`FlushGap`).
//!
//! `fsync` is not called by default: a killed process leaves its written data in the page
//! cache; [`SinkOptions::sync`] adds `sync_data` at each flush for power-loss safety, at a cost.
//! After any IO error a sink refuses further audio ([`RecorderError::SinkClosed`]); the driver
//! stops that recording and the call continues.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mp3lame_encoder::{Bitrate, Builder, FlushGap, InterleavedPcm, Mode, Quality};
use serde::{Deserialize, Serialize};

use crate::error::RecorderError;
use crate::recording::{CHANNELS, SAMPLE_RATE};

/// Size of the canonical 16-bit PCM WAV header written by [`WavSink`].
pub const WAV_HEADER_LEN: u64 = 44;
/// Bytes per stereo 16-bit frame.
pub const WAV_FRAME_BYTES: u64 = 4;
/// MP3 bit rate of recordings, in kbit/s.
pub const MP3_KBPS: u32 = 32;

/// File format of a recording, configurable per route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Wav,
    Mp3,
}

impl Format {
    /// File name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Mp3 => "mp3",
        }
    }
}

/// Knobs shared by the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// Audio frames between automatic flushes (default 6400 = 0.8 s).
    pub flush_frames: u64,
    /// Call `sync_data` after each flush.
    pub sync: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            flush_frames: 6400,
            sync: false,
        }
    }
}

/// A destination for interleaved stereo 8 kHz audio.
pub trait Sink: Send {
    /// Appends interleaved frames (customer, agent). Flushes by itself every
    /// `flush_frames`. An odd trailing sample is ignored.
    fn write(&mut self, interleaved: &[i16]) -> Result<(), RecorderError>;
    /// Makes everything written so far durable and playable.
    fn flush(&mut self) -> Result<(), RecorderError>;
    /// Completes the file; returns the number of frames in it. Further writes fail.
    fn finish(&mut self) -> Result<u64, RecorderError>;
    /// Frames accepted so far.
    fn frames(&self) -> u64;
}

/// Creates the sink for `format` at `path` (the file must not be in use; it is truncated).
pub fn create_sink(
    format: Format,
    path: &Path,
    options: SinkOptions,
) -> Result<Box<dyn Sink>, RecorderError> {
    Ok(match format {
        Format::Wav => Box::new(WavSink::create(path, options)?),
        Format::Mp3 => Box::new(Mp3Sink::create(path, options)?),
    })
}

fn open(path: &Path) -> Result<File, RecorderError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| RecorderError::io("create", path, e))
}

/// The header of a canonical PCM WAV holding `data_bytes` of 8 kHz 16-bit stereo.
pub fn wav_header(data_bytes: u32) -> [u8; WAV_HEADER_LEN as usize] {
    let mut h = [0u8; WAV_HEADER_LEN as usize];
    let byte_rate = SAMPLE_RATE * WAV_FRAME_BYTES as u32;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&(WAV_FRAME_BYTES as u16).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Stereo 16-bit 8 kHz WAV writer whose header is correct after every flush.
pub struct WavSink<W: Write + Seek> {
    inner: Option<W>,
    path: PathBuf,
    buf: Vec<u8>,
    options: SinkOptions,
    frames: u64,
    unflushed: u64,
    sync: fn(&mut W) -> std::io::Result<()>,
}

impl<W: Write + Seek> std::fmt::Debug for WavSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl WavSink<File> {
    /// Creates (truncates) the file and writes an empty header at once, so even a file
    /// interrupted before its first flush is recognisable.
    pub fn create(path: &Path, options: SinkOptions) -> Result<Self, RecorderError> {
        let file = open(path)?;
        let mut sink = Self::with_path(file, path.to_path_buf(), options)?;
        sink.sync = |f| f.sync_data();
        Ok(sink)
    }
}

impl<W: Write + Seek> WavSink<W> {
    /// A WAV sink over any seekable writer (a `Cursor<Vec<u8>>` in benchmarks).
    pub fn new(inner: W, options: SinkOptions) -> Result<Self, RecorderError> {
        Self::with_path(inner, PathBuf::from("<memory>"), options)
    }

    fn with_path(mut inner: W, path: PathBuf, options: SinkOptions) -> Result<Self, RecorderError> {
        inner
            .write_all(&wav_header(0))
            .map_err(|e| RecorderError::io("write", &path, e))?;
        Ok(Self {
            inner: Some(inner),
            path,
            buf: Vec::with_capacity(32 * 1024),
            options,
            frames: 0,
            unflushed: 0,
            sync: |_| Ok(()),
        })
    }

    /// The writer, once the sink is no longer needed.
    pub fn into_inner(self) -> Option<W> {
        self.inner
    }

    fn fail(&mut self, op: &'static str, e: std::io::Error) -> RecorderError {
        self.inner = None;
        RecorderError::io(op, &self.path, e)
    }

    fn data_bytes(&self) -> Result<u32, RecorderError> {
        let bytes = self.frames * WAV_FRAME_BYTES;
        u32::try_from(bytes)
            .ok()
            .filter(|b| *b <= u32::MAX - 36)
            .ok_or(RecorderError::WavTooLong)
    }

    fn drain_buf(&mut self) -> Result<(), RecorderError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(RecorderError::SinkClosed);
        };
        if let Err(e) = inner.write_all(&self.buf) {
            return Err(self.fail("write", e));
        }
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write + Seek + Send> Sink for WavSink<W> {
    fn write(&mut self, interleaved: &[i16]) -> Result<(), RecorderError> {
        if self.inner.is_none() {
            return Err(RecorderError::SinkClosed);
        }
        let frames = (interleaved.len() / 2) as u64;
        if u32::try_from((self.frames + frames) * WAV_FRAME_BYTES)
            .map_or(true, |b| b > u32::MAX - 36)
        {
            return Err(RecorderError::WavTooLong);
        }
        let samples = &interleaved[..2 * frames as usize];
        let start = self.buf.len();
        self.buf.resize(start + 2 * samples.len(), 0);
        for (dst, s) in self.buf[start..].chunks_exact_mut(2).zip(samples) {
            dst.copy_from_slice(&s.to_le_bytes());
        }
        self.frames += frames;
        self.unflushed += frames;
        if self.buf.len() >= 32 * 1024 {
            self.drain_buf()?;
        }
        if self.unflushed >= self.options.flush_frames {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecorderError> {
        self.drain_buf()?;
        let data = self.data_bytes()?;
        let sync = self.sync;
        let do_sync = self.options.sync;
        let Some(inner) = self.inner.as_mut() else {
            return Err(RecorderError::SinkClosed);
        };
        let result = (|| {
            inner.seek(SeekFrom::Start(4))?;
            inner.write_all(&data.saturating_add(36).to_le_bytes())?;
            inner.seek(SeekFrom::Start(40))?;
            inner.write_all(&data.to_le_bytes())?;
            inner.seek(SeekFrom::End(0))?;
            inner.flush()?;
            if do_sync {
                sync(inner)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.unflushed = 0;
                Ok(())
            }
            Err(e) => Err(self.fail("flush", e)),
        }
    }

    fn finish(&mut self) -> Result<u64, RecorderError> {
        self.flush()?;
        self.inner = None;
        Ok(self.frames)
    }

    fn frames(&self) -> u64 {
        self.frames
    }
}

/// Stereo MP3 writer (32 kbit/s CBR, 8 kHz, joint stereo).
pub struct Mp3Sink<W: Write> {
    inner: Option<W>,
    path: PathBuf,
    encoder: mp3lame_encoder::Encoder,
    buf: Vec<u8>,
    options: SinkOptions,
    frames: u64,
    unflushed: u64,
    sync: fn(&mut W) -> std::io::Result<()>,
}

impl<W: Write> std::fmt::Debug for Mp3Sink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp3Sink")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

/// Frames handed to LAME per call; bounds the output buffer.
const MP3_STEP_FRAMES: usize = 1152;

impl Mp3Sink<File> {
    pub fn create(path: &Path, options: SinkOptions) -> Result<Self, RecorderError> {
        let file = open(path)?;
        let mut sink = Self::with_path(file, path.to_path_buf(), options)?;
        sink.sync = |f| f.sync_data();
        Ok(sink)
    }
}

impl<W: Write> Mp3Sink<W> {
    /// An MP3 sink over any writer.
    pub fn new(inner: W, options: SinkOptions) -> Result<Self, RecorderError> {
        Self::with_path(inner, PathBuf::from("<memory>"), options)
    }

    fn with_path(inner: W, path: PathBuf, options: SinkOptions) -> Result<Self, RecorderError> {
        let mp3 = |e: &dyn std::fmt::Display| RecorderError::Mp3(e.to_string());
        let mut b = Builder::new().ok_or_else(|| RecorderError::Mp3("lame_init failed".into()))?;
        b.set_num_channels(CHANNELS as u8).map_err(|e| mp3(&e))?;
        b.set_sample_rate(SAMPLE_RATE).map_err(|e| mp3(&e))?;
        b.set_output_sample_rate(std::num::NonZeroU32::new(SAMPLE_RATE))
            .map_err(|e| mp3(&e))?;
        b.set_brate(Bitrate::Kbps32).map_err(|e| mp3(&e))?;
        b.set_mode(Mode::JointStereo).map_err(|e| mp3(&e))?;
        b.set_quality(Quality::Decent).map_err(|e| mp3(&e))?;
        b.set_to_write_vbr_tag(false).map_err(|e| mp3(&e))?;
        let encoder = b.build().map_err(|e| mp3(&e))?;
        Ok(Self {
            inner: Some(inner),
            path,
            encoder,
            buf: Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(MP3_STEP_FRAMES)),
            options,
            frames: 0,
            unflushed: 0,
            sync: |_| Ok(()),
        })
    }

    /// The writer, once the sink is no longer needed.
    pub fn into_inner(self) -> Option<W> {
        self.inner
    }

    fn fail(&mut self, op: &'static str, e: std::io::Error) -> RecorderError {
        self.inner = None;
        RecorderError::io(op, &self.path, e)
    }

    fn drain_buf(&mut self) -> Result<(), RecorderError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(RecorderError::SinkClosed);
        };
        if let Err(e) = inner.write_all(&self.buf) {
            return Err(self.fail("write", e));
        }
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write + Send> Sink for Mp3Sink<W> {
    fn write(&mut self, interleaved: &[i16]) -> Result<(), RecorderError> {
        if self.inner.is_none() {
            return Err(RecorderError::SinkClosed);
        }
        let frames = interleaved.len() / 2;
        for step in interleaved[..2 * frames].chunks(2 * MP3_STEP_FRAMES) {
            self.buf
                .reserve(mp3lame_encoder::max_required_buffer_size(step.len() / 2));
            self.encoder
                .encode_to_vec(InterleavedPcm(step), &mut self.buf)
                .map_err(|e| RecorderError::Mp3(e.to_string()))?;
        }
        self.frames += frames as u64;
        self.unflushed += frames as u64;
        if self.buf.len() >= 16 * 1024 {
            self.drain_buf()?;
        }
        if self.unflushed >= self.options.flush_frames {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecorderError> {
        self.drain_buf()?;
        let sync = self.sync;
        let do_sync = self.options.sync;
        let Some(inner) = self.inner.as_mut() else {
            return Err(RecorderError::SinkClosed);
        };
        let result = inner
            .flush()
            .and_then(|()| if do_sync { sync(inner) } else { Ok(()) });
        match result {
            Ok(()) => {
                self.unflushed = 0;
                Ok(())
            }
            Err(e) => Err(self.fail("flush", e)),
        }
    }

    fn finish(&mut self) -> Result<u64, RecorderError> {
        if self.inner.is_none() {
            return Err(RecorderError::SinkClosed);
        }
        // LAME needs up to 7200 bytes for its final frames.
        self.buf.reserve(7200);
        self.encoder
            .flush_to_vec::<FlushGap>(&mut self.buf)
            .map_err(|e| RecorderError::Mp3(e.to_string()))?;
        self.flush()?;
        self.inner = None;
        Ok(self.frames)
    }

    fn frames(&self) -> u64 {
        self.frames
    }
}

/// Encodes a finished (or repaired) recording WAV into an MP3 at `mp3`; returns the frames
/// encoded.
///
/// LAME keeps about 280 KiB of state per encoder, more than a live recording's budget. A
/// driver with many concurrent MP3 calls can therefore spool every call as WAV (80 KiB per
/// live call, and the simplest crash repair) and run this on its writer thread when the call
/// ends, at several hundred times realtime.
pub fn transcode_wav_to_mp3(
    wav: &Path,
    mp3: &Path,
    options: SinkOptions,
) -> Result<u64, RecorderError> {
    use std::io::Read;
    let io = |op| move |e| RecorderError::io(op, wav, e);
    let mut file = File::open(wav).map_err(io("open"))?;
    let mut head = [0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]).map_err(io("read"))? {
            0 => break,
            n => got += n,
        }
    }
    let (data_start, frame_bytes) =
        crate::repair::parse_wav_layout(&head[..got]).map_err(|reason| RecorderError::NotWav {
            path: wav.to_path_buf(),
            reason,
        })?;
    if frame_bytes != WAV_FRAME_BYTES {
        return Err(RecorderError::NotWav {
            path: wav.to_path_buf(),
            reason: "not 16-bit stereo",
        });
    }
    let declared = u64::from(u32::from_le_bytes([
        head[data_start as usize - 4],
        head[data_start as usize - 3],
        head[data_start as usize - 2],
        head[data_start as usize - 1],
    ]));
    file.seek(SeekFrom::Start(data_start)).map_err(io("seek"))?;
    let mut remaining = declared / WAV_FRAME_BYTES * WAV_FRAME_BYTES;
    let mut sink = Mp3Sink::create(mp3, options)?;
    let mut bytes = vec![0u8; MP3_STEP_FRAMES * WAV_FRAME_BYTES as usize];
    let mut samples = vec![0i16; MP3_STEP_FRAMES * 2];
    while remaining > 0 {
        let want = (bytes.len() as u64).min(remaining) as usize;
        let n = file.read(&mut bytes[..want]).map_err(io("read"))?;
        // A file shorter than its header claims ends the audio there.
        let n = n / WAV_FRAME_BYTES as usize * WAV_FRAME_BYTES as usize;
        if n == 0 {
            break;
        }
        for (s, b) in samples.iter_mut().zip(bytes[..n].chunks_exact(2)) {
            *s = i16::from_le_bytes([b[0], b[1]]);
        }
        sink.write(&samples[..n / 2])?;
        remaining -= n as u64;
    }
    sink.finish()
}
