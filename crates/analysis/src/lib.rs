//! Analysis of a finished dual-channel recording (customer on channel 1, agent on channel 2,
//! 8 kHz 16-bit): the waveform [`Peaks`] the review page draws, and the
//! [`ConversationMetrics`] the catalog stores and searches.
//!
//! The core is sans-IO and streaming: [`Analyzer::push`] takes interleaved stereo samples in
//! chunks of any size (even an odd number of samples), [`Analyzer::finish`] returns the
//! [`Analysis`]. It keeps a few counters per channel and allocates only as its output vectors
//! grow. [`analyze_wav`], [`analyze_mp3`] and [`analyze_file`] read a recording from disk and
//! feed it through the same core.
//!
//! How talk is detected is documented in [`vad`]; what each metric means, in [`metrics`].
//!
//! ```
//! let mut analyzer = analysis::Analyzer::new(analysis::AnalysisConfig::default()).unwrap();
//! // One second: the customer talks (a loud tone), the agent is silent.
//! let second: Vec<i16> = (0..8000)
//!     .flat_map(|i| [((i as f64 * 0.3).sin() * 8000.0) as i16, 0])
//!     .collect();
//! analyzer.push(&second);
//! let analysis = analyzer.finish();
//! assert_eq!(analysis.metrics.customer_talk_ms, 1000);
//! assert_eq!(analysis.peaks.buckets(), 50);
//! ```

pub mod metrics;
pub mod peaks;
pub mod vad;

mod decode;

use serde::{Deserialize, Serialize};

pub use decode::{
    analyze_file, analyze_mp3, analyze_mp3_reader, analyze_wav, analyze_wav_reader, read_channels,
    Channels,
};
pub use metrics::{ConversationMetrics, Speaker, SpeakerSpan};
pub use peaks::{Peaks, WavesurferPeaks};

use vad::{ChannelVad, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};

/// Why a recording could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("buckets per second must be between 1 and {SAMPLE_RATE}, not {0}")]
    BucketsPerSecond(u32),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("reading the recording: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a readable WAV file: {0}")]
    Wav(#[from] hound::Error),
    #[error("not a readable MP3 file: {0}")]
    Mp3(#[from] symphonia::core::errors::Error),
    #[error("{channels} channel(s) at {sample_rate} Hz, {bits} bit: a recording is stereo at 8000 Hz, 16 bit")]
    Unsupported {
        channels: u16,
        sample_rate: u32,
        bits: u16,
    },
}

/// How the analysis is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    /// Waveform buckets per second (1–8000). 50 gives 20 ms buckets: 180,000 per channel for
    /// a 60-minute call, enough to zoom to about 50 px per second.
    pub buckets_per_second: u32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            buckets_per_second: 50,
        }
    }
}

/// Everything known about a recording's audio once it is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub peaks: Peaks,
    pub metrics: ConversationMetrics,
}

/// The streaming analyser of one recording.
#[derive(Debug, Clone)]
pub struct Analyzer {
    buckets_per_second: u32,
    /// Stereo frames pushed so far.
    frames: u64,
    /// The first sample of a frame split between two pushes.
    pending: Option<i16>,
    /// Frames in the current VAD frame and the sums of their squares, per channel.
    vad_fill: usize,
    vad_energy: [u64; 2],
    vad_index: u64,
    vad: [ChannelVad; 2],
    /// The current bucket: its index, where it ends, and its running min/max per channel.
    bucket: u64,
    bucket_end: u64,
    low: [i16; 2],
    high: [i16; 2],
    peaks: [Vec<i16>; 2],
}

impl Analyzer {
    pub fn new(config: AnalysisConfig) -> Result<Self, AnalysisError> {
        let bps = config.buckets_per_second;
        if bps == 0 || bps > SAMPLE_RATE {
            return Err(AnalysisError::BucketsPerSecond(bps));
        }
        Ok(Analyzer {
            buckets_per_second: bps,
            frames: 0,
            pending: None,
            vad_fill: 0,
            vad_energy: [0; 2],
            vad_index: 0,
            vad: Default::default(),
            bucket: 0,
            bucket_end: peaks::bucket_end(0, bps),
            low: [i16::MAX; 2],
            high: [i16::MIN; 2],
            peaks: Default::default(),
        })
    }

    /// Takes interleaved stereo samples (customer, agent, customer, ...). A chunk may end in
    /// the middle of a frame; the next one continues it.
    pub fn push(&mut self, samples: &[i16]) {
        let mut rest = samples;
        if let Some(customer) = self.pending {
            let Some((&agent, tail)) = rest.split_first() else {
                return;
            };
            self.pending = None;
            self.process(&[customer, agent]);
            rest = tail;
        }
        let (whole, odd) = rest.split_at(rest.len() & !1);
        self.process(whole);
        self.pending = odd.first().copied();
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn process(&mut self, mut interleaved: &[i16]) {
        while !interleaved.is_empty() {
            // The longest run that stays inside one VAD frame and one bucket, so that the
            // inner loop has no branches but min, max and a multiply-add.
            let to_vad = FRAME_SAMPLES - self.vad_fill;
            let to_bucket = (self.bucket_end - self.frames) as usize;
            let n = (interleaved.len() / 2).min(to_vad).min(to_bucket);
            let (run, rest) = interleaved.split_at(2 * n);
            let [mut c_lo, mut a_lo] = self.low;
            let [mut c_hi, mut a_hi] = self.high;
            let (mut c_sq, mut a_sq) = (0u64, 0u64);
            for frame in run.chunks_exact(2) {
                let (c, a) = (frame[0], frame[1]);
                c_lo = c_lo.min(c);
                c_hi = c_hi.max(c);
                a_lo = a_lo.min(a);
                a_hi = a_hi.max(a);
                // 32768² fits an i32, so the square is exact before widening.
                c_sq += (i32::from(c) * i32::from(c)) as u64;
                a_sq += (i32::from(a) * i32::from(a)) as u64;
            }
            self.low = [c_lo, a_lo];
            self.high = [c_hi, a_hi];
            self.vad_energy[0] += c_sq;
            self.vad_energy[1] += a_sq;
            self.vad_fill += n;
            self.frames += n as u64;
            if self.vad_fill == FRAME_SAMPLES {
                self.end_vad_frame();
            }
            if self.frames == self.bucket_end {
                self.end_bucket();
            }
            interleaved = rest;
        }
    }

    fn end_vad_frame(&mut self) {
        for (vad, energy) in self.vad.iter_mut().zip(self.vad_energy) {
            vad.frame(self.vad_index, energy, self.vad_fill);
        }
        self.vad_index += 1;
        self.vad_fill = 0;
        self.vad_energy = [0; 2];
    }

    fn end_bucket(&mut self) {
        for ch in 0..2 {
            self.peaks[ch].push(self.low[ch]);
            self.peaks[ch].push(self.high[ch]);
        }
        self.low = [i16::MAX; 2];
        self.high = [i16::MIN; 2];
        self.bucket += 1;
        self.bucket_end = peaks::bucket_end(self.bucket, self.buckets_per_second);
    }

    /// Ends the recording: a partial last VAD frame and bucket count with what they hold; a
    /// lone sample of an incomplete frame is dropped.
    pub fn finish(mut self) -> Analysis {
        if self.vad_fill > 0 {
            self.end_vad_frame();
        }
        let bucket_start = if self.bucket == 0 {
            0
        } else {
            peaks::bucket_end(self.bucket - 1, self.buckets_per_second)
        };
        if self.frames > bucket_start {
            self.end_bucket();
        }
        let duration_ms = self.frames * 1000 / u64::from(SAMPLE_RATE);
        let [customer_vad, agent_vad] = self.vad;
        let to_ms = |spans: Vec<(u64, u64)>| -> Vec<(u64, u64)> {
            spans
                .into_iter()
                .map(|(s, e)| (s * FRAME_MS, (e * FRAME_MS).min(duration_ms)))
                .collect()
        };
        let customer = to_ms(customer_vad.finish());
        let agent = to_ms(agent_vad.finish());
        let metrics = ConversationMetrics::from_spans(&customer, &agent, duration_ms);
        let [customer_peaks, agent_peaks] = self.peaks;
        tracing::debug!(
            duration_ms,
            spans = metrics.spans.len(),
            buckets = customer_peaks.len() / 2,
            "recording analysed"
        );
        Analysis {
            peaks: Peaks {
                sample_rate: SAMPLE_RATE,
                buckets_per_second: self.buckets_per_second,
                frames: self.frames,
                customer: customer_peaks,
                agent: agent_peaks,
            },
            metrics,
        }
    }
}

#[cfg(test)]
mod tests;
