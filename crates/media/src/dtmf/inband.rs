//! In-band DTMF detection on decoded 8 kHz audio (G.711 legs without telephone-event).
//!
//! The audio is cut into blocks of [`INBAND_BLOCK_LEN`] samples (12.75 ms). For each block
//! the Goertzel algorithm measures the power at the eight DTMF frequencies, and the block is
//! a hit for a digit when the strongest row and column tones pass, in order:
//!
//! 1. level: both tones at least `min_level_dbm0`;
//! 2. twist: the low (row) tone at most `max_normal_twist_db` above the high (column) tone,
//!    the high tone at most `max_reverse_twist_db` above the low one;
//! 3. relative peak: each tone `min_relative_peak_db` above the other tones of its group;
//! 4. purity: the two tones carry at least `min_tone_to_total` of the block's energy.
//!    Speech spreads its energy over many harmonics and formants, so this is what rejects
//!    it; a key pressed while someone talks more softly still passes;
//! 5. second harmonic: the column tone's second harmonic stays `max_harmonic_db` below it,
//!    which rejects voiced sounds whose harmonic series happens to cross a column frequency.
//!    Row frequencies are not checked this way: at this block length their second harmonics
//!    (1394-1882 Hz) sit within one bin of the column tones, whose leakage would reject
//!    genuine digits.
//!
//! 102 samples give a 78 Hz bin, enough to separate the rows (73-89 Hz apart) because each
//! row frequency lands near a null of its neighbours' response, and short enough that two
//! consecutive hits (25.5 ms) fit inside the 40 ms minimum tone of ITU-T Q.24 whatever its
//! alignment. A digit starts after `min_on_blocks` (2) consecutive hits and ends after
//! `min_off_blocks` (3) blocks without it: a 10 ms dropout spoils at most two blocks and does
//! not split a press, while the 40 ms minimum pause between two presses of the same key
//! always spoils three. A long press is therefore one digit, reported once, at its end, with
//! its duration.
//!
//! The purity threshold was set against the speech-like signals of the tests: over hours of
//! them at talker levels from -20 to -6 dBm0, no block carried more than 86 % of its energy
//! in a DTMF pair, while a key over speech 15 dB softer carries about 95 %.
//!
//! Levels are in dBm0 on the 16-bit scale G.711 decoders produce (a 0 dBm0 sine peaks near
//! 22,500).

use super::{DtmfEvent, DtmfSource, DtmfStart, EventQueue};

/// Samples per analysis block.
pub const INBAND_BLOCK_LEN: usize = 102;

const SAMPLE_RATE: f32 = 8000.0;
const ZERO_DBM0_PEAK: f32 = 22_500.0;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Thresholds of the in-band detector. The level, twist and relative-peak defaults follow
/// common practice (SpanDSP, ITU-T Q.24); the purity default is stricter than SpanDSP's
/// (about 0.82), for the reason given in the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InbandConfig {
    /// Weakest accepted tone, per frequency.
    pub min_level_dbm0: f32,
    /// How much stronger the low-group tone may be than the high-group tone.
    pub max_normal_twist_db: f32,
    /// How much stronger the high-group tone may be than the low-group tone.
    pub max_reverse_twist_db: f32,
    /// How far each tone must stand above the other frequencies of its group.
    pub min_relative_peak_db: f32,
    /// Share of the block's energy the two tones must carry (0..1).
    pub min_tone_to_total: f32,
    /// Highest accepted level of the column tone's second harmonic, relative to the tone.
    pub max_harmonic_db: f32,
    /// Consecutive hit blocks that make a digit (2 = 25.5 ms).
    pub min_on_blocks: u32,
    /// Consecutive blocks without the digit that end it (3 = 38 ms).
    pub min_off_blocks: u32,
}

impl Default for InbandConfig {
    fn default() -> Self {
        Self {
            min_level_dbm0: -30.0,
            max_normal_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            min_relative_peak_db: 8.0,
            min_tone_to_total: 0.9,
            max_harmonic_db: -12.0,
            min_on_blocks: 2,
            min_off_blocks: 3,
        }
    }
}

/// Counters, per block and per digit; each rejected block is counted under the first check
/// it failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InbandStats {
    pub blocks: u64,
    /// Blocks whose strongest row and column tones were both loud enough.
    pub loud_blocks: u64,
    pub rejected_twist: u64,
    pub rejected_relative_peak: u64,
    pub rejected_tone_to_total: u64,
    pub rejected_harmonic: u64,
    pub hit_blocks: u64,
    pub digits: u64,
    /// Digits lost because `poll_event` was not called.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    digit: char,
    blocks: u32,
    start: u64,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    digit: char,
    start: u64,
    end: u64,
    misses: u32,
}

/// Thresholds as power ratios, computed once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    min_power: f32,
    normal_twist: f32,
    reverse_twist: f32,
    relative_peak: f32,
    harmonic: f32,
}

/// In-band DTMF detector for one audio stream.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    cfg: InbandConfig,
    limits: Limits,
    /// Goertzel coefficients `2 cos(w)`: rows then columns.
    coeffs: [f32; 8],
    /// Coefficients a quarter bin either side of each frequency, rows then columns.
    detuned_coeffs: [[f32; 2]; 8],
    /// Coefficients at twice each column frequency.
    harmonic_coeffs: [f32; 4],
    block: [f32; INBAND_BLOCK_LEN],
    fill: usize,
    /// Index of the sample in `block[0]`.
    block_start: u64,
    run: Option<Run>,
    active: Option<Active>,
    queue: EventQueue,
    stats: InbandStats,
}

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

fn coeff(freq: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * freq / SAMPLE_RATE).cos()
}

/// Power of one frequency over `block`, scaled so a sine of amplitude `a` gives
/// about `(a * N / 2)^2`.
fn goertzel(block: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

impl InbandDetector {
    pub fn new(cfg: InbandConfig) -> Self {
        let amp = ZERO_DBM0_PEAK * 10f32.powf(cfg.min_level_dbm0 / 20.0);
        let half_n = INBAND_BLOCK_LEN as f32 / 2.0;
        let limits = Limits {
            min_power: (amp * half_n) * (amp * half_n),
            normal_twist: db_to_power(cfg.max_normal_twist_db),
            reverse_twist: db_to_power(cfg.max_reverse_twist_db),
            relative_peak: db_to_power(cfg.min_relative_peak_db),
            harmonic: db_to_power(cfg.max_harmonic_db),
        };
        let mut coeffs = [0f32; 8];
        let mut detuned_coeffs = [[0f32; 2]; 8];
        let quarter_bin = SAMPLE_RATE / INBAND_BLOCK_LEN as f32 / 4.0;
        for ((c, d), f) in coeffs
            .iter_mut()
            .zip(detuned_coeffs.iter_mut())
            .zip(ROWS.iter().chain(COLS.iter()))
        {
            *c = coeff(*f);
            *d = [coeff(f - quarter_bin), coeff(f + quarter_bin)];
        }
        Self {
            cfg,
            limits,
            coeffs,
            detuned_coeffs,
            harmonic_coeffs: COLS.map(|f| coeff(2.0 * f)),
            block: [0.0; INBAND_BLOCK_LEN],
            fill: 0,
            block_start: 0,
            run: None,
            active: None,
            queue: EventQueue::new(),
            stats: InbandStats::default(),
        }
    }

    pub fn config(&self) -> &InbandConfig {
        &self.cfg
    }

    pub fn stats(&self) -> InbandStats {
        InbandStats {
            dropped: self.queue.dropped,
            ..self.stats
        }
    }

    /// Feeds decoded 8 kHz samples, in chunks of any size.
    pub fn push_samples(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (INBAND_BLOCK_LEN - self.fill).min(rest.len());
            let (now, later) = rest.split_at(take);
            for (dst, &s) in self.block[self.fill..self.fill + take].iter_mut().zip(now) {
                *dst = f32::from(s);
            }
            self.fill += take;
            rest = later;
            if self.fill == INBAND_BLOCK_LEN {
                let hit = self.classify();
                self.track(hit);
                self.fill = 0;
                self.block_start += INBAND_BLOCK_LEN as u64;
            }
        }
    }

    /// Next detected digit, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.queue.pop()
    }

    /// The digit whose tone is sounding right now (detected, not yet ended).
    pub fn in_progress(&self) -> Option<char> {
        self.active.map(|a| a.digit)
    }

    /// Ends the stream: reports a digit whose tone was still sounding.
    pub fn flush(&mut self) {
        self.end_active();
        self.run = None;
    }

    /// Forgets all state and restarts sample counting at 0. Counters are kept.
    pub fn reset(&mut self) {
        self.fill = 0;
        self.block_start = 0;
        self.run = None;
        self.active = None;
        self.queue.clear();
    }

    /// Decides whether the full block is a hit, and for which digit.
    fn classify(&mut self) -> Option<char> {
        self.stats.blocks += 1;
        let mut s1 = [0f32; 8];
        let mut s2 = [0f32; 8];
        let mut energy = 0f32;
        for &x in &self.block {
            energy += x * x;
            for ((a, b), c) in s1.iter_mut().zip(s2.iter_mut()).zip(&self.coeffs) {
                let s0 = x + c * *a - *b;
                *b = *a;
                *a = s0;
            }
        }
        let mut power = [0f32; 8];
        for (i, p) in power.iter_mut().enumerate() {
            *p = s1[i] * s1[i] + s2[i] * s2[i] - self.coeffs[i] * s1[i] * s2[i];
        }
        let (rows, cols) = power.split_at(4);
        let row = strongest(rows);
        let col = strongest(cols);
        let (pr, pc) = (rows[row], cols[col]);
        let l = self.limits;
        if pr < l.min_power || pc < l.min_power {
            return None;
        }
        self.stats.loud_blocks += 1;
        if pr > pc * l.normal_twist || pc > pr * l.reverse_twist {
            self.stats.rejected_twist += 1;
            return None;
        }
        let dominates = |group: &[f32], best: usize| {
            group
                .iter()
                .enumerate()
                .all(|(i, &p)| i == best || p * l.relative_peak <= group[best])
        };
        if !dominates(rows, row) || !dominates(cols, col) {
            self.stats.rejected_relative_peak += 1;
            return None;
        }
        // A tone off its nominal frequency (up to the 1.5 % a keypad may deviate) loses up to
        // 1.1 dB in its bin; measuring a quarter bin either side as well recovers most of
        // it, so that the share below reflects impurity, not detuning.
        let refined = |i: usize, p: f32| {
            self.detuned_coeffs[i]
                .iter()
                .fold(p, |best, &c| best.max(goertzel(&self.block, c)))
        };
        let tone_energy = refined(row, pr) + refined(4 + col, pc);
        // A sine of amplitude a holds a^2 N / 2 of energy and gives a Goertzel power of
        // (a N / 2)^2, hence the 2 / N.
        let tone_share = 2.0 * tone_energy / (INBAND_BLOCK_LEN as f32 * energy);
        if tone_share < self.cfg.min_tone_to_total {
            self.stats.rejected_tone_to_total += 1;
            return None;
        }
        if goertzel(&self.block, self.harmonic_coeffs[col]) > pc * l.harmonic {
            self.stats.rejected_harmonic += 1;
            return None;
        }
        self.stats.hit_blocks += 1;
        Some(KEYPAD[row][col])
    }

    /// Debounces block hits into digits.
    fn track(&mut self, hit: Option<char>) {
        let start = self.block_start;
        let end = start + INBAND_BLOCK_LEN as u64;
        self.run = match (self.run, hit) {
            (Some(r), Some(d)) if r.digit == d => Some(Run {
                blocks: r.blocks + 1,
                ..r
            }),
            (_, hit) => hit.map(|digit| Run {
                digit,
                blocks: 1,
                start,
            }),
        };
        if let Some(a) = self.active.as_mut() {
            if hit == Some(a.digit) {
                a.misses = 0;
                a.end = end;
            } else {
                a.misses += 1;
                if a.misses >= self.cfg.min_off_blocks.max(1) {
                    self.end_active();
                }
            }
        }
        if self.active.is_none() {
            if let Some(r) = self.run {
                if r.blocks >= self.cfg.min_on_blocks.max(1) {
                    self.active = Some(Active {
                        digit: r.digit,
                        start: r.start,
                        end,
                        misses: 0,
                    });
                }
            }
        }
    }

    fn end_active(&mut self) {
        let Some(a) = self.active.take() else {
            return;
        };
        self.stats.digits += 1;
        let samples = a.end - a.start;
        self.queue.push(DtmfEvent {
            digit: a.digit,
            source: DtmfSource::InBand,
            start: DtmfStart::Sample(a.start),
            duration_ms: Some(u32::try_from(samples / 8).unwrap_or(u32::MAX)),
        });
    }
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new(InbandConfig::default())
    }
}

fn strongest(group: &[f32]) -> usize {
    let mut best = 0;
    for (i, &p) in group.iter().enumerate() {
        if p > group[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::testsig::*;

    fn detect_with(cfg: InbandConfig, pcm: &[i16], chunk: usize) -> (Vec<DtmfEvent>, InbandStats) {
        let mut det = InbandDetector::new(cfg);
        let mut evs = Vec::new();
        for c in pcm.chunks(chunk.max(1)) {
            det.push_samples(c);
            evs.extend(std::iter::from_fn(|| det.poll_event()));
        }
        det.flush();
        evs.extend(std::iter::from_fn(|| det.poll_event()));
        (evs, det.stats())
    }

    fn detect(pcm: &[i16]) -> Vec<DtmfEvent> {
        detect_with(InbandConfig::default(), pcm, 160).0
    }

    fn digits(evs: &[DtmfEvent]) -> String {
        evs.iter().map(|e| e.digit).collect()
    }

    /// `keys` as 60 ms tones with 60 ms gaps at -10 dBm0 per tone, after 100 ms of silence.
    fn dial(keys: &str, on_ms: u32, off_ms: u32) -> Vec<f32> {
        let mut sig = silence(100);
        for k in keys.chars() {
            sig.extend(tone_pair(k, on_ms, -10.0, -10.0, 1.0));
            sig.extend(silence(off_ms));
        }
        sig
    }

    #[test]
    fn star_two_through_mu_law_and_a_law() {
        let sig = dial("*2", 60, 60);
        for law in [Law::Mu, Law::A] {
            let evs = detect(&g711_round_trip(&sig, law));
            assert_eq!(digits(&evs), "*2", "{law:?}");
            // '*' starts after 100 ms (800 samples), within one block.
            let DtmfStart::Sample(s) = evs[0].start else {
                panic!("{:?}", evs[0].start)
            };
            assert!((800..=800 + INBAND_BLOCK_LEN as u64).contains(&s), "{s}");
            let d = evs[0].duration_ms.unwrap();
            assert!((30..=60).contains(&d), "{d}");
        }
    }

    #[test]
    fn star_two_over_speech_and_noise() {
        let tones = dial("*2", 60, 60);
        let mut gen = SpeechGen::new(7);
        for (speech_dbm0, law) in [(-25.0, Law::Mu), (-22.0, Law::A), (-30.0, Law::Mu)] {
            let speech = gen.generate(tones.len(), speech_dbm0);
            let mut noise = Prng::new(99);
            let noisy: Vec<f32> = tones
                .iter()
                .zip(&speech)
                .map(|(t, s)| t + s + noise.gauss() * dbm0_to_amp(-45.0))
                .collect();
            let evs = detect(&g711_round_trip(&noisy, law));
            assert_eq!(digits(&evs), "*2", "speech at {speech_dbm0} dBm0, {law:?}");
        }
    }

    #[test]
    fn every_key_is_recognised() {
        let keys = "123A456B789C*0#D";
        let evs = detect(&g711_round_trip(&dial(keys, 50, 50), Law::Mu));
        assert_eq!(digits(&evs), keys);
    }

    #[test]
    fn chunk_size_does_not_matter() {
        let pcm = g711_round_trip(&dial("*2#", 60, 60), Law::A);
        let (reference, _) = detect_with(InbandConfig::default(), &pcm, pcm.len());
        assert_eq!(digits(&reference), "*2#");
        for chunk in [1, 7, 101, 102, 103, 160, 320] {
            let (evs, _) = detect_with(InbandConfig::default(), &pcm, chunk);
            assert_eq!(evs, reference, "chunk {chunk}");
        }
    }

    #[test]
    fn minimum_duration() {
        for (on_ms, want) in [(15, ""), (20, ""), (40, "5"), (45, "5")] {
            // Tone placed at every phase relative to the block grid.
            for offset in (0..INBAND_BLOCK_LEN as u32).step_by(17) {
                let mut sig = vec![0.0; offset as usize];
                sig.extend(dial("5", on_ms, 100));
                let evs = detect(&g711_round_trip(&sig, Law::Mu));
                assert_eq!(digits(&evs), want, "{on_ms} ms at offset {offset}");
            }
        }
    }

    #[test]
    fn long_press_is_one_digit() {
        let tones = dial("2", 2000, 100);
        let speech = SpeechGen::new(3).generate(tones.len(), -28.0);
        let sig: Vec<f32> = tones.iter().zip(&speech).map(|(t, s)| t + s).collect();
        let evs = detect(&g711_round_trip(&sig, Law::Mu));
        assert_eq!(digits(&evs), "2");
        let d = evs[0].duration_ms.unwrap();
        assert!((1960..=2000).contains(&d), "{d}");
    }

    #[test]
    fn short_dropout_does_not_split_a_press_but_a_pause_does() {
        for offset in (0..INBAND_BLOCK_LEN).step_by(9) {
            let mut sig = vec![0.0; offset];
            sig.extend(tone_pair('8', 300, -10.0, -10.0, 1.0));
            sig.extend(silence(10));
            sig.extend(tone_pair('8', 300, -10.0, -10.0, 1.0));
            sig.extend(silence(100));
            let got = digits(&detect(&g711_round_trip(&sig, Law::Mu)));
            assert_eq!(got, "8", "10 ms dropout at offset {offset}");
            let mut sig = vec![0.0; offset];
            sig.extend(dial("88", 60, 40));
            let got = digits(&detect(&g711_round_trip(&sig, Law::Mu)));
            assert_eq!(got, "88", "40 ms pause at offset {offset}");
        }
    }

    #[test]
    fn in_progress_while_the_tone_sounds() {
        let mut det = InbandDetector::default();
        let pcm = g711_round_trip(&tone_pair('#', 200, -10.0, -10.0, 1.0), Law::Mu);
        det.push_samples(&pcm[..800]);
        assert_eq!(det.in_progress(), Some('#'));
        assert_eq!(det.poll_event(), None);
        det.push_samples(&g711_round_trip(&silence(50), Law::Mu));
        assert_eq!(det.in_progress(), None);
        assert_eq!(det.poll_event().map(|e| e.digit), Some('#'));
    }

    #[test]
    fn twist_limits() {
        let cases = [
            // (row dBm0, col dBm0, detected)
            (-8.0, -14.0, true),  // low group 6 dB stronger
            (-6.0, -16.0, false), // low group 10 dB stronger
            (-12.0, -9.0, true),  // high group 3 dB stronger
            (-14.0, -8.0, false), // high group 6 dB stronger
        ];
        for (row, col, ok) in cases {
            let mut sig = silence(50);
            sig.extend(tone_pair('1', 80, row, col, 1.0));
            sig.extend(silence(50));
            let got = digits(&detect(&g711_round_trip(&sig, Law::Mu)));
            assert_eq!(got == "1", ok, "row {row} col {col}: {got:?}");
        }
    }

    #[test]
    fn level_and_frequency_tolerance() {
        for (level, scale, ok) in [
            (-28.0, 1.0, true),
            (-40.0, 1.0, false),
            (-10.0, 1.015, true),
            (-10.0, 0.985, true),
        ] {
            let mut sig = silence(50);
            sig.extend(tone_pair('9', 80, level, level, scale));
            sig.extend(silence(50));
            let got = digits(&detect(&g711_round_trip(&sig, Law::A)));
            assert_eq!(got == "9", ok, "{level} dBm0 x{scale}: {got:?}");
        }
    }

    #[test]
    fn single_tones_and_chords_are_not_digits() {
        let mut sig = silence(50);
        sig.extend(sine(697.0, 300, -10.0));
        sig.extend(sine(1336.0, 300, -10.0));
        // Two rows at once.
        let two_rows: Vec<f32> = sine(770.0, 300, -10.0)
            .iter()
            .zip(sine(852.0, 300, -10.0))
            .map(|(a, b)| a + b)
            .collect();
        sig.extend(two_rows);
        // A digit plus a third strong tone.
        let three: Vec<f32> = tone_pair('5', 300, -10.0, -10.0, 1.0)
            .iter()
            .zip(sine(2000.0, 300, -10.0))
            .map(|(a, b)| a + b)
            .collect();
        sig.extend(three);
        let (evs, st) = detect_with(
            InbandConfig::default(),
            &g711_round_trip(&sig, Law::Mu),
            160,
        );
        assert_eq!(digits(&evs), "");
        assert!(
            st.rejected_relative_peak > 0 && st.rejected_tone_to_total > 0,
            "{st:?}"
        );
    }

    #[test]
    fn harmonic_check_rejects_a_tone_with_its_octave() {
        let mut sig = silence(50);
        let tone: Vec<f32> = tone_pair('1', 200, -10.0, -10.0, 1.0)
            .iter()
            .zip(sine(2418.0, 200, -16.0))
            .map(|(a, b)| a + b)
            .collect();
        sig.extend(tone);
        let (evs, st) = detect_with(
            InbandConfig {
                min_tone_to_total: 0.5,
                ..InbandConfig::default()
            },
            &g711_round_trip(&sig, Law::Mu),
            160,
        );
        assert_eq!(digits(&evs), "");
        assert!(st.rejected_harmonic > 0, "{st:?}");
    }

    #[test]
    fn no_false_digits_in_three_minutes_of_speech() {
        let n = 8000 * 180;
        let mut gen = SpeechGen::new(2024);
        // A loud talker, so that many blocks reach the spectral checks.
        let mut sig = gen.generate(n / 2, -12.0);
        sig.extend(harmonic_speech(n / 2, -12.0, 77));
        for law in [Law::Mu, Law::A] {
            let pcm = g711_round_trip(&sig, law);
            let (evs, st) = detect_with(InbandConfig::default(), &pcm, 160);
            assert_eq!(digits(&evs), "", "{law:?}: {evs:?} {st:?}");
            // The speech must be loud enough to reach the spectral checks, or the test
            // proves nothing.
            assert!(st.loud_blocks > st.blocks / 10, "{st:?}");
            assert!(
                st.rejected_relative_peak > 100 && st.rejected_tone_to_total > 10,
                "{st:?}"
            );
            assert_eq!(st.hit_blocks, 0, "{st:?}");
        }
    }
}
