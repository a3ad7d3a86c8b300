//! Voice activity of one channel: the energy of each 10 ms frame against an adaptive noise
//! floor, smoothed into talk spans.
//!
//! # Why energy and not `webrtc-vad`
//! `webrtc-vad` 0.4 (libfvad) builds here, but measured on this machine it classifies
//! ~8,300 s of audio per second of CPU on one channel at 8 kHz in 20 ms frames (~5,900 at
//! 10 ms), so ~4,100× realtime for a stereo call before peaks are computed: below the
//! 5,000× per core that keeps metrics under 1 % of a recorded call's CPU. Its `Vad` also
//! holds a raw pointer and is not `Send`. Each channel of a tapir recording carries one
//! party, recorded at the anchor (no acoustic cross-talk between channels), so the hard case
//! a model-based VAD solves (speech in loud non-stationary noise) is rarer here than on a
//! single mixed channel, and an energy detector with an adaptive floor is enough for talk
//! time, pauses and turns. Its known limit: any sound above the threshold counts as talk
//! (hold music, DTMF, a loud television behind the customer).
//!
//! # The detector
//! A frame is voiced when its mean square energy exceeds a threshold that follows the
//! channel's noise floor:
//!
//! `threshold = clamp(floor + NOISE_MARGIN_DB, THRESHOLD_MIN_DBFS, THRESHOLD_MAX_DBFS)`
//!
//! - [`THRESHOLD_MIN_DBFS`] −50 dBFS: quiet lines (A-law idle codes at ±8 are −72 dBFS, comfort
//!   noise and quiet rooms −65…−55 dBFS) never count as talk, while telephone speech (nominal
//!   active level around −20…−25 dBFS, weak consonants around −40 dBFS) does.
//! - [`NOISE_MARGIN_DB`] 12 dB above the floor: frame energies of stationary noise spread a few
//!   dB around their mean; 12 dB keeps them below the threshold while speech stays 15–30 dB
//!   above a noisy floor.
//! - [`THRESHOLD_MAX_DBFS`] −35 dBFS: however loud the floor becomes (a noisy call centre, or
//!   more than 5 s of speech without a quiet frame), speech at normal level still clears it.
//!
//! The noise floor is the lowest frame energy of the last [`NOISE_WINDOW_MS`] (5 s, kept as
//! the minima of five 1 s blocks), the minimum-statistics idea: speech has quiet frames
//! between words and sentences, noise has no frames much quieter than itself. So a line that
//! is noisy from the start is known as noisy from its first frame, a noise that gets louder
//! is learned within 5–6 s, and a floor never creeps up during ordinary speech, which keeps
//! the threshold low enough for the weak ends of words (a floor that rose by 3 dB/s during
//! speech cut 100 ms off the end of "service" at the end of a 2 s sentence). The floor never
//! goes below `THRESHOLD_MIN_DBFS − NOISE_MARGIN_DB`, below which it could not change the
//! threshold anyway.
//!
//! # Smoothing into talk spans
//! - [`HANGOVER_MS`] 250 ms: a gap shorter than this between voiced frames belongs to the span
//!   (stop closures and word boundaries inside an utterance last up to ~200 ms; 250 ms is the
//!   silent-pause threshold customary in speech research). A span ends at its last voiced frame,
//!   not after the hangover, so talk time is not inflated by it.
//! - [`MIN_TALK_MS`] 100 ms: shorter spans are clicks, coughs and line noise, not talk (even a
//!   short "yes" lasts 200 ms or more).

/// Sample rate of tapir's recordings.
pub const SAMPLE_RATE: u32 = 8000;
/// Length of a VAD frame.
pub const FRAME_MS: u64 = 10;
/// Samples per VAD frame and channel.
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE as usize * FRAME_MS as usize) / 1000;
/// The voicing threshold never goes below this (dB relative to a full-scale square wave).
pub const THRESHOLD_MIN_DBFS: f64 = -50.0;
/// The voicing threshold never goes above this.
pub const THRESHOLD_MAX_DBFS: f64 = -35.0;
/// How far above the noise floor a voiced frame is.
pub const NOISE_MARGIN_DB: f64 = 12.0;
/// The noise floor is the quietest frame of this window.
pub const NOISE_WINDOW_MS: u64 = 5000;
/// Gaps shorter than this inside a talk span do not end it.
pub const HANGOVER_MS: u64 = 250;
/// Talk spans shorter than this are dropped.
pub const MIN_TALK_MS: u64 = 100;

const HANGOVER_FRAMES: u64 = HANGOVER_MS / FRAME_MS;
const MIN_TALK_FRAMES: u64 = MIN_TALK_MS / FRAME_MS;
/// The window is kept as the minima of this many blocks.
const NOISE_BLOCKS: usize = 5;
const NOISE_BLOCK_FRAMES: u64 = NOISE_WINDOW_MS / FRAME_MS / NOISE_BLOCKS as u64;

/// Full-scale mean square of an i16 signal, so that energies are relative to 0 dBFS.
const FULL_SCALE: f64 = 32768.0 * 32768.0;

fn db_to_power(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

/// The voice activity detector of one channel. Frames are numbered from 0; spans are in
/// frames, end exclusive.
#[derive(Debug, Clone)]
pub(crate) struct ChannelVad {
    /// Quietest frame energy (mean square relative to full scale) of each finished block of
    /// the window, oldest overwritten first, and of the block in progress.
    blocks: [f64; NOISE_BLOCKS],
    block: f64,
    margin: f64,
    threshold_min: f64,
    threshold_max: f64,
    floor_min: f64,
    /// The open span: its first voiced frame and one past its last voiced frame.
    open: Option<(u64, u64)>,
    spans: Vec<(u64, u64)>,
}

impl Default for ChannelVad {
    fn default() -> Self {
        let floor_min = db_to_power(THRESHOLD_MIN_DBFS - NOISE_MARGIN_DB);
        ChannelVad {
            blocks: [f64::INFINITY; NOISE_BLOCKS],
            block: f64::INFINITY,
            margin: db_to_power(NOISE_MARGIN_DB),
            threshold_min: db_to_power(THRESHOLD_MIN_DBFS),
            threshold_max: db_to_power(THRESHOLD_MAX_DBFS),
            floor_min,
            open: None,
            spans: Vec::new(),
        }
    }
}

impl ChannelVad {
    /// Classifies frame `index` from the sum of its squared samples over `n` samples and
    /// extends or closes the talk span. Returns whether the frame was voiced.
    pub(crate) fn frame(&mut self, index: u64, sum_sq: u64, n: usize) -> bool {
        let energy = if n == 0 {
            0.0
        } else {
            sum_sq as f64 / n as f64 / FULL_SCALE
        };
        self.block = self.block.min(energy);
        let floor = self
            .blocks
            .iter()
            .fold(self.block, |m, &b| m.min(b))
            .max(self.floor_min);
        if (index + 1) % NOISE_BLOCK_FRAMES == 0 {
            let oldest = ((index / NOISE_BLOCK_FRAMES) % NOISE_BLOCKS as u64) as usize;
            self.blocks[oldest] = self.block;
            self.block = f64::INFINITY;
        }
        let threshold = (floor * self.margin).clamp(self.threshold_min, self.threshold_max);
        let voiced = energy > threshold;

        match (voiced, self.open) {
            (true, Some((start, end))) if index - end < HANGOVER_FRAMES => {
                self.open = Some((start, index + 1));
            }
            (true, _) => {
                self.close();
                self.open = Some((index, index + 1));
            }
            (false, Some((_, end))) if index + 1 - end >= HANGOVER_FRAMES => self.close(),
            (false, _) => {}
        }
        voiced
    }

    fn close(&mut self) {
        if let Some((start, end)) = self.open.take() {
            if end - start >= MIN_TALK_FRAMES {
                self.spans.push((start, end));
            }
        }
    }

    /// Closes the open span and returns the talk spans in frames.
    pub(crate) fn finish(mut self) -> Vec<(u64, u64)> {
        self.close();
        self.spans
    }
}

/// Talk spans of one 8 kHz mono channel in milliseconds (start, end exclusive), found by the
/// same detector and smoothing as the conversation metrics. Used to cut a channel into
/// utterances for a speech recogniser.
pub fn talk_spans(samples: &[i16]) -> Vec<(u64, u64)> {
    let mut vad = ChannelVad::default();
    for (i, frame) in samples.chunks(FRAME_SAMPLES).enumerate() {
        let energy: u64 = frame
            .iter()
            .map(|&s| (i32::from(s) * i32::from(s)) as u64)
            .sum();
        vad.frame(i as u64, energy, frame.len());
    }
    let duration_ms = samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE);
    vad.finish()
        .into_iter()
        .map(|(s, e)| (s * FRAME_MS, (e * FRAME_MS).min(duration_ms)))
        .filter(|(s, e)| e > s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds frames of the given dBFS levels (None: digital silence) and returns the spans.
    fn run(levels: impl IntoIterator<Item = Option<f64>>) -> Vec<(u64, u64)> {
        let mut vad = ChannelVad::default();
        for (i, level) in levels.into_iter().enumerate() {
            let sum = level.map_or(0.0, |db| {
                db_to_power(db) * FULL_SCALE * FRAME_SAMPLES as f64
            });
            vad.frame(i as u64, sum as u64, FRAME_SAMPLES);
        }
        vad.finish()
    }

    fn repeat(level: Option<f64>, frames: usize) -> impl Iterator<Item = Option<f64>> {
        std::iter::repeat_n(level, frames)
    }

    #[test]
    fn talk_spans_of_a_mono_channel_are_in_milliseconds() {
        let mut samples = vec![0i16; 8000];
        for (i, s) in samples[2400..4000].iter_mut().enumerate() {
            *s = ((i as f64 * 0.3).sin() * 8000.0) as i16;
        }
        assert_eq!(talk_spans(&samples), vec![(300, 500)]);
        assert!(talk_spans(&[]).is_empty());
        assert!(talk_spans(&[0; 7999]).is_empty());
    }

    #[test]
    fn speech_level_frames_form_one_span_and_silence_none() {
        let spans = run(repeat(None, 50)
            .chain(repeat(Some(-20.0), 100))
            .chain(repeat(None, 50)));
        assert_eq!(spans, vec![(50, 150)]);
        assert!(run(repeat(None, 1000)).is_empty());
        // −55 dBFS is below the lowest threshold.
        assert!(run(repeat(Some(-55.0), 1000)).is_empty());
    }

    #[test]
    fn gaps_shorter_than_the_hangover_are_bridged_longer_ones_split() {
        let gap = |frames| {
            run(repeat(Some(-20.0), 30)
                .chain(repeat(None, frames))
                .chain(repeat(Some(-20.0), 30)))
        };
        let bridged = (HANGOVER_FRAMES - 1) as usize;
        assert_eq!(gap(bridged), vec![(0, 60 + bridged as u64)]);
        let split = HANGOVER_FRAMES as usize;
        assert_eq!(
            gap(split),
            vec![(0, 30), (30 + split as u64, 60 + split as u64)]
        );
    }

    #[test]
    fn spans_shorter_than_the_minimum_are_dropped() {
        let short = (MIN_TALK_FRAMES - 1) as usize;
        assert!(run(repeat(None, 20).chain(repeat(Some(-10.0), short))).is_empty());
        let long = MIN_TALK_FRAMES as usize;
        assert_eq!(
            run(repeat(None, 20).chain(repeat(Some(-10.0), long))),
            vec![(20, 20 + long as u64)]
        );
    }

    /// −40 dBFS noise (alternating ±1 dB like real frame energies).
    fn noise(frames: usize) -> impl Iterator<Item = Option<f64>> {
        (0..frames).map(|i| Some(-40.0 + if i % 2 == 0 { 1.0 } else { -1.0 }))
    }

    #[test]
    fn a_line_noisy_from_the_start_is_never_talk_but_speech_over_it_is() {
        let spans = run(noise(1000)
            .chain(repeat(Some(-20.0), 200))
            .chain(noise(1000)));
        assert_eq!(spans, vec![(1000, 1200)]);
    }

    #[test]
    fn noise_that_gets_louder_is_learned_within_the_window() {
        let spans = run(repeat(Some(-60.0), 1000)
            .chain(noise(2000))
            .chain(repeat(Some(-20.0), 200))
            .chain(noise(500)));
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (start, learned) = spans[0];
        assert_eq!(start, 1000);
        // The quiet frames leave the window 5 s after the last of them, at a block's end.
        let window = NOISE_WINDOW_MS / FRAME_MS;
        assert!(
            (1000 + window - NOISE_BLOCK_FRAMES..=1000 + window + NOISE_BLOCK_FRAMES)
                .contains(&learned),
            "{spans:?}"
        );
        assert_eq!(spans[1], (3000, 3200));
    }

    #[test]
    fn speech_stays_voiced_through_a_long_monologue() {
        // Five minutes of syllables (−18 dBFS) and dips (−45 dBFS) over a −60 dBFS line.
        let syllables = (0..30_000).map(|i| Some(if i % 25 < 20 { -18.0 } else { -45.0 }));
        let spans = run(repeat(Some(-60.0), 100)
            .chain(syllables)
            .chain(repeat(Some(-60.0), 100)));
        assert_eq!(spans.len(), 1, "{:?}", &spans[..spans.len().min(5)]);
        let (start, end) = spans[0];
        assert_eq!(start, 100);
        assert!((30_090..=30_100).contains(&end), "{end}");
    }
}
