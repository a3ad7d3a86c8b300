//! Deterministic test signals for the DTMF detectors: tones, speech-like audio, noise and a
//! G.711 round trip.

use audio_codec::pcma::{PcmaDecoder, PcmaEncoder};
use audio_codec::pcmu::{PcmuDecoder, PcmuEncoder};
use audio_codec::{Decoder, Encoder};
use std::f32::consts::PI;

pub const RATE: f32 = 8000.0;

/// Peak amplitude of a sine at `dbm0` on the 16-bit G.711 scale.
pub fn dbm0_to_amp(dbm0: f32) -> f32 {
    22_500.0 * 10f32.powf(dbm0 / 20.0)
}

fn samples(ms: u32) -> usize {
    ms as usize * 8
}

pub fn silence(ms: u32) -> Vec<f32> {
    vec![0.0; samples(ms)]
}

pub fn sine(freq: f32, ms: u32, dbm0: f32) -> Vec<f32> {
    let a = dbm0_to_amp(dbm0);
    (0..samples(ms))
        .map(|i| a * (2.0 * PI * freq * i as f32 / RATE).sin())
        .collect()
}

/// A key's two tones at the given levels; `freq_scale` detunes both (1.015 = +1.5 %).
pub fn tone_pair(key: char, ms: u32, row_dbm0: f32, col_dbm0: f32, freq_scale: f32) -> Vec<f32> {
    const KEYS: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (r, c) = KEYS
        .iter()
        .enumerate()
        .find_map(|(r, row)| row.find(key).map(|c| (r, c)))
        .expect("not a DTMF key");
    let (fr, fc) = (ROWS[r] * freq_scale, COLS[c] * freq_scale);
    let (ar, ac) = (dbm0_to_amp(row_dbm0), dbm0_to_amp(col_dbm0));
    (0..samples(ms))
        .map(|i| {
            let t = i as f32 / RATE;
            ar * (2.0 * PI * fr * t).sin() + ac * (2.0 * PI * fc * t + 1.0).sin()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub enum Law {
    Mu,
    A,
}

/// Encodes to G.711 and decodes back, as audio crossing a G.711 leg.
pub fn g711_round_trip(sig: &[f32], law: Law) -> Vec<i16> {
    let pcm: Vec<i16> = sig
        .iter()
        .map(|&x| x.round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    match law {
        Law::Mu => PcmuDecoder::new().decode(&PcmuEncoder::new().encode(&pcm)),
        Law::A => PcmaDecoder::new().decode(&PcmaEncoder::new().encode(&pcm)),
    }
}

/// xorshift64* generator: fixed seed, same sequence on every platform.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Approximately normal, unit variance (Irwin-Hall with 4 terms).
    pub fn gauss(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// Scales `sig` so its RMS equals that of a sine at `dbm0`.
fn normalize(sig: &mut [f32], dbm0: f32) {
    let rms = (sig.iter().map(|x| x * x).sum::<f32>() / sig.len().max(1) as f32).sqrt();
    if rms > 0.0 {
        let gain = dbm0_to_amp(dbm0) / 2f32.sqrt() / rms;
        sig.iter_mut().for_each(|x| *x *= gain);
    }
}

/// Klatt-style two-pole resonator with unity gain at DC.
#[derive(Default, Clone, Copy)]
struct Resonator {
    a: f32,
    b: f32,
    c: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn tune(&mut self, freq: f32, bw: f32) {
        let r = (-PI * bw / RATE).exp();
        self.c = -r * r;
        self.b = 2.0 * r * (2.0 * PI * freq / RATE).cos();
        self.a = 1.0 - self.b - self.c;
    }

    fn step(&mut self, x: f32) -> f32 {
        let y = self.a * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Segment {
    Voiced,
    Fricative,
    Pause,
}

/// Source-filter speech imitation: a glottal pulse train with wandering pitch (100-250 Hz)
/// through three wandering formant resonators, alternating with fricative noise and pauses,
/// under a syllabic envelope. Its harmonics sweep across every DTMF frequency, which is
/// what makes real speech hard for tone detectors.
pub struct SpeechGen {
    rng: Prng,
}

impl SpeechGen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Prng::new(seed),
        }
    }

    /// `n` samples whose overall RMS is that of a sine at `dbm0`.
    pub fn generate(&mut self, n: usize, dbm0: f32) -> Vec<f32> {
        let rng = &mut self.rng;
        let mut out = Vec::with_capacity(n);
        let mut seg = Segment::Pause;
        let mut seg_left = 0usize;
        let mut seg_amp = 0f32;
        let mut env = 0f32;
        let mut f0 = 150f32;
        let mut f0_target = 150f32;
        let mut formants = [500f32, 1500.0, 2500.0];
        let mut targets = formants;
        let mut res = [Resonator::default(); 3];
        let mut fric = Resonator::default();
        let mut phase = 0f32;
        let mut glottis = 0f32;
        for i in 0..n {
            if seg_left == 0 {
                let pick = rng.uniform();
                (seg, seg_left) = if pick < 0.6 {
                    (Segment::Voiced, samples(rng.range(120.0, 350.0) as u32))
                } else if pick < 0.8 {
                    (Segment::Fricative, samples(rng.range(40.0, 120.0) as u32))
                } else {
                    (Segment::Pause, samples(rng.range(30.0, 400.0) as u32))
                };
                seg_amp = rng.range(0.3, 1.0);
                targets = [
                    rng.range(250.0, 900.0),
                    rng.range(800.0, 2600.0),
                    rng.range(2200.0, 3400.0),
                ];
                f0_target = rng.range(100.0, 250.0);
                fric.tune(rng.range(2500.0, 3800.0), 600.0);
            }
            seg_left -= 1;
            if i % 40 == 0 {
                for ((f, t), r) in formants.iter_mut().zip(targets).zip(res.iter_mut()) {
                    *f += (t - *f) * 0.08;
                    r.tune(*f, 60.0 + *f * 0.05);
                }
                f0 += (f0_target - f0) * 0.05 + rng.range(-1.5, 1.5);
                f0 = f0.clamp(95.0, 260.0);
            }
            let target_env = if seg == Segment::Pause { 0.0 } else { seg_amp };
            env += (target_env - env) * 0.004;
            let x = match seg {
                Segment::Voiced | Segment::Pause => {
                    phase += f0 / RATE;
                    let pulse = if phase >= 1.0 {
                        phase -= 1.0;
                        1.0
                    } else {
                        0.0
                    };
                    // One-pole glottal roll-off, plus a little breath noise.
                    glottis = 0.85 * glottis + pulse;
                    let v = res
                        .iter_mut()
                        .fold(glottis + 0.01 * rng.gauss(), |acc, r| r.step(acc));
                    if seg == Segment::Voiced {
                        v
                    } else {
                        0.0
                    }
                }
                Segment::Fricative => fric.step(rng.gauss()) * 0.3,
            };
            out.push(env * x);
        }
        normalize(&mut out, dbm0);
        out
    }
}

/// Speech imitation as an explicit sum of harmonics: wandering pitch (100-250 Hz), each
/// harmonic weighted by three wandering formant bumps, a 3-6 Hz syllabic modulation with
/// pauses, and a noise floor. Harmonics are generated by complex rotation, not `sin`, to
/// keep three minutes of audio cheap.
pub fn harmonic_speech(n: usize, dbm0: f32, seed: u64) -> Vec<f32> {
    const FRAME: usize = 80;
    const MAX_HARMONICS: usize = 40;
    let mut rng = Prng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut f0 = 160f32;
    let mut formants = [600f32, 1600.0, 2700.0];
    let mut targets = formants;
    let mut weights = [0f32; MAX_HARMONICS];
    let (mut re, mut im) = (1f32, 0f32);
    let mut syllable_phase = 0f32;
    let mut syllable_rate = 4.0f32;
    let mut talking = true;
    let mut frame = 0usize;
    while out.len() < n {
        if frame % 25 == 0 {
            // Every 250 ms: new formant targets, maybe a pause.
            targets = [
                rng.range(250.0, 900.0),
                rng.range(800.0, 2600.0),
                rng.range(2200.0, 3400.0),
            ];
            syllable_rate = rng.range(3.0, 6.0);
            talking = rng.uniform() < 0.8;
        }
        frame += 1;
        f0 = (f0 + rng.range(-6.0, 6.0)).clamp(100.0, 250.0);
        let harmonics = ((3600.0 / f0) as usize).min(MAX_HARMONICS);
        for (f, t) in formants.iter_mut().zip(targets) {
            *f += (t - *f) * 0.15;
        }
        for (k, w) in weights.iter_mut().enumerate().take(harmonics) {
            let fk = (k + 1) as f32 * f0;
            *w = formants
                .iter()
                .enumerate()
                .map(|(j, &fm)| {
                    let bw = 90.0 + 40.0 * j as f32;
                    let d = (fk - fm) / bw;
                    (1.0 / (1 + j) as f32) / (1.0 + d * d)
                })
                .sum();
        }
        let step = 2.0 * PI * f0 / RATE;
        let (rc, rs) = (step.cos(), step.sin());
        for _ in 0..FRAME {
            (re, im) = (re * rc - im * rs, re * rs + im * rc);
            syllable_phase += syllable_rate / RATE;
            let am = if talking {
                0.5 - 0.5 * (2.0 * PI * syllable_phase).cos()
            } else {
                0.0
            };
            let (mut hr, mut hi) = (re, im);
            let mut v = 0f32;
            for &w in &weights[..harmonics] {
                v += w * hi;
                (hr, hi) = (hr * re - hi * im, hr * im + hi * re);
            }
            out.push(am * v + 0.02 * rng.gauss());
        }
        // Keep the phasor on the unit circle despite rounding.
        let norm = (re * re + im * im).sqrt();
        (re, im) = (re / norm, im / norm);
    }
    out.truncate(n);
    normalize(&mut out, dbm0);
    out
}
