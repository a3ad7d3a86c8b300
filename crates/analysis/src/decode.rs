//! Reading a finished recording (WAV, or MP3 through symphonia) into the [`Analyzer`].
//!
//! An MP3 is analysed as decoded, encoder delay included: the browser plays the same file
//! with the same delay, so the spans line up with what the page plays.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::vad::SAMPLE_RATE;
use crate::{Analysis, AnalysisConfig, AnalysisError, Analyzer};

fn open(path: &Path) -> Result<File, AnalysisError> {
    File::open(path).map_err(|source| AnalysisError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Analyses a stereo 8 kHz 16-bit WAV file.
pub fn analyze_wav(
    path: impl AsRef<Path>,
    config: AnalysisConfig,
) -> Result<Analysis, AnalysisError> {
    analyze_wav_reader(BufReader::new(open(path.as_ref())?), config)
}

/// Analyses an MP3 file whose frames decode to stereo 8 kHz.
pub fn analyze_mp3(
    path: impl AsRef<Path>,
    config: AnalysisConfig,
) -> Result<Analysis, AnalysisError> {
    analyze_mp3_reader(open(path.as_ref())?, config)
}

/// Analyses a recording in either of tapir's formats, told apart by their first bytes (a
/// WAV starts with `RIFF`), not by the file's name.
pub fn analyze_file(
    path: impl AsRef<Path>,
    config: AnalysisConfig,
) -> Result<Analysis, AnalysisError> {
    let mut analyzer = Analyzer::new(config)?;
    feed_file(path.as_ref(), &mut |s| analyzer.push(s))?;
    Ok(analyzer.finish())
}

/// The two channels of a recording, decoded (8 kHz, 16 bit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channels {
    /// Channel 1.
    pub customer: Vec<i16>,
    /// Channel 2.
    pub agent: Vec<i16>,
}

/// Decodes a recording in either format (told apart as [`analyze_file`] does) into its two
/// channels, for consumers that need the samples themselves (a speech recogniser). A lone
/// last sample of an incomplete frame is dropped.
pub fn read_channels(path: impl AsRef<Path>) -> Result<Channels, AnalysisError> {
    let mut ch = Channels::default();
    let mut pending: Option<i16> = None;
    feed_file(path.as_ref(), &mut |samples| {
        let mut rest = samples;
        if let Some(c) = pending {
            let Some((&a, tail)) = rest.split_first() else {
                return;
            };
            ch.customer.push(c);
            ch.agent.push(a);
            pending = None;
            rest = tail;
        }
        let (whole, odd) = rest.split_at(rest.len() & !1);
        for f in whole.chunks_exact(2) {
            ch.customer.push(f[0]);
            ch.agent.push(f[1]);
        }
        pending = odd.first().copied();
    })?;
    Ok(ch)
}

fn feed_file(path: &Path, push: &mut dyn FnMut(&[i16])) -> Result<(), AnalysisError> {
    let io = |source| AnalysisError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = open(path)?;
    let mut magic = [0u8; 4];
    let wav = match file.read_exact(&mut magic) {
        Ok(()) => &magic == b"RIFF",
        // Too short for either: let the WAV reader say what is wrong.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => true,
        Err(e) => return Err(io(e)),
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    if wav {
        feed_wav(BufReader::new(file), push)
    } else {
        feed_mp3(file, push)
    }
}

/// Analyses a WAV stream. A data chunk shorter than its header says (a file cut off) is
/// analysed as far as it goes.
pub fn analyze_wav_reader<R: Read>(
    reader: R,
    config: AnalysisConfig,
) -> Result<Analysis, AnalysisError> {
    let mut analyzer = Analyzer::new(config)?;
    feed_wav(reader, &mut |s| analyzer.push(s))?;
    Ok(analyzer.finish())
}

/// Reads a stereo 8 kHz WAV stream and hands its interleaved samples to `push` in chunks.
fn feed_wav<R: Read>(reader: R, push: &mut dyn FnMut(&[i16])) -> Result<(), AnalysisError> {
    let wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    if spec.channels != 2
        || spec.sample_rate != SAMPLE_RATE
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(AnalysisError::Unsupported {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits: spec.bits_per_sample,
        });
    }
    let mut remaining = u64::from(wav.len()) * 2;
    // The reader stands at the first sample; reading the little-endian samples directly is
    // several times faster than hound's per-sample iterator.
    let mut inner = wav.into_inner();
    let mut bytes = vec![0u8; 1 << 16];
    let mut samples = vec![0i16; bytes.len() / 2];
    // A read may end in the middle of a sample: its first byte waits at bytes[0].
    let mut carry = 0usize;
    while remaining > 0 {
        let want = ((bytes.len() - carry) as u64).min(remaining) as usize;
        let got = match inner.read(&mut bytes[carry..carry + want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        remaining -= got as u64;
        let have = carry + got;
        let whole = have & !1;
        for (s, b) in samples.iter_mut().zip(bytes[..whole].chunks_exact(2)) {
            *s = i16::from_le_bytes([b[0], b[1]]);
        }
        push(&samples[..whole / 2]);
        carry = have - whole;
        if carry == 1 {
            bytes[0] = bytes[whole];
        }
    }
    Ok(())
}

/// Analyses an MP3 stream. A frame that does not decode is skipped, as a player would.
pub fn analyze_mp3_reader<R: Read + Send + Sync + 'static>(
    reader: R,
    config: AnalysisConfig,
) -> Result<Analysis, AnalysisError> {
    let mut analyzer = Analyzer::new(config)?;
    feed_mp3(reader, &mut |s| analyzer.push(s))?;
    Ok(analyzer.finish())
}

/// Decodes a stereo 8 kHz MP3 stream and hands its interleaved samples to `push`.
fn feed_mp3<R: Read + Send + Sync + 'static>(
    reader: R,
    push: &mut dyn FnMut(&[i16]),
) -> Result<(), AnalysisError> {
    let source = MediaSourceStream::new(Box::new(ReadOnlySource::new(reader)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let probed = symphonia::default::get_probe().format(
        &hint,
        source,
        &FormatOptions::default(),
        &MetadataOptions::default(),
    )?;
    let mut format = probed.format;
    let track = format
        .default_track()
        .ok_or(SymphoniaError::Unsupported("no audio track"))?;
    let track_id = track.id;
    let params = &track.codec_params;
    let unsupported = |channels: usize, rate: u32| AnalysisError::Unsupported {
        channels: channels as u16,
        sample_rate: rate,
        bits: 16,
    };
    let channels = params.channels.map_or(0, |c| c.count());
    let rate = params.sample_rate.unwrap_or(0);
    if channels != 2 || rate != SAMPLE_RATE {
        return Err(unsupported(channels, rate));
    }
    let mut decoder = symphonia::default::get_codecs().make(params, &DecoderOptions::default())?;
    let mut buffer: Option<SampleBuffer<i16>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        };
        let spec = *decoded.spec();
        if spec.channels.count() != 2 || spec.rate != SAMPLE_RATE {
            return Err(unsupported(spec.channels.count(), spec.rate));
        }
        let needed = decoded.capacity() as u64;
        let buf = match &mut buffer {
            Some(b) if b.capacity() as u64 >= needed * 2 => b,
            _ => buffer.insert(SampleBuffer::new(needed, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        push(buf.samples());
    }
    Ok(())
}
