//! Audio codecs as the recorder needs them: RTP payloads decoded to 8 kHz, 16-bit mono PCM.
//!
//! Recordings are 8 kHz whatever the call negotiated, so every decoder here ends at 8 kHz:
//! G.711 (PCMU/PCMA) is 8 kHz already; G.722 is decoded at 16 kHz and decimated by two through a
//! half-band FIR whose state survives packet boundaries. Comfort noise (RFC 3389) and
//! telephone-events (RFC 4733) carry no audio samples: they decode to nothing, and the recorder
//! renders the span they cover as silence, exactly as it renders a gap. Silence was chosen over
//! synthesised noise because it is deterministic, compresses well and never invents sound a
//! listener could mistake for speech.
//!
//! Decoding never allocates: the caller owns the output slice and [`Decoder`] keeps fixed-size
//! scratch space.

use audio_codec::g722::{Bitrate, G722Decoder};
use thiserror::Error;

/// Sample rate of everything this module produces.
pub const OUTPUT_RATE: u32 = 8000;

/// A payload format the recorder knows how to treat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s. Samples at 16 kHz but its RTP clock ticks at 8 kHz (RFC 3551 §4.5.2).
    G722,
    /// Comfort noise (RFC 3389): no samples, rendered as silence.
    ComfortNoise,
    /// DTMF events (RFC 4733): not audio, kept out of the recording.
    TelephoneEvent,
    /// Anything else: relayed by the call path, recorded as silence with a warning.
    Unsupported,
}

impl Codec {
    /// The codec of a static RTP payload type (RFC 3551 table 4), or `Unsupported`.
    pub fn from_static_payload_type(pt: u8) -> Codec {
        match pt {
            0 => Codec::Pcmu,
            8 => Codec::Pcma,
            9 => Codec::G722,
            13 => Codec::ComfortNoise,
            _ => Codec::Unsupported,
        }
    }

    /// The codec named by an SDP `a=rtpmap` entry (`encoding/clock_rate`), compared
    /// case-insensitively. A known name with an unexpected clock rate is `Unsupported`, because
    /// the timeline assumes 8 kHz RTP timestamps for audio.
    pub fn from_rtpmap(encoding: &str, clock_rate: u32) -> Codec {
        let is = |name: &str| encoding.eq_ignore_ascii_case(name);
        if is("telephone-event") {
            // Not audio, so its clock does not matter to the timeline.
            return Codec::TelephoneEvent;
        }
        if clock_rate != 8000 {
            return Codec::Unsupported;
        }
        if is("PCMU") {
            Codec::Pcmu
        } else if is("PCMA") {
            Codec::Pcma
        } else if is("G722") {
            Codec::G722
        } else if is("CN") {
            Codec::ComfortNoise
        } else {
            Codec::Unsupported
        }
    }

    /// The SDP encoding name (upper case for audio codecs), for metadata and logs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::ComfortNoise => "CN",
            Codec::TelephoneEvent => "telephone-event",
            Codec::Unsupported => "unsupported",
        }
    }

    /// Whether payloads of this codec decode to samples.
    pub fn is_audio(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma | Codec::G722)
    }

    /// Number of 8 kHz samples a payload of `payload_len` bytes decodes to. For all supported
    /// audio codecs that is one sample per byte (G.722: two 16 kHz samples per byte, halved).
    pub fn samples_for(self, payload_len: usize) -> usize {
        if self.is_audio() {
            payload_len
        } else {
            0
        }
    }
}

/// Payload type → codec table of one call leg, as negotiated in SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMap {
    table: [Codec; 128],
}

impl PayloadMap {
    /// A table where every payload type is `Unsupported`.
    pub fn empty() -> Self {
        Self {
            table: [Codec::Unsupported; 128],
        }
    }

    /// A table holding the static payload types 0 (PCMU), 8 (PCMA), 9 (G722) and 13 (CN).
    pub fn with_static() -> Self {
        let mut map = Self::empty();
        for pt in [0u8, 8, 9, 13] {
            map.table[pt as usize] = Codec::from_static_payload_type(pt);
        }
        map
    }

    /// Sets the codec of a payload type; types above 127 are ignored (they cannot occur in RTP).
    pub fn insert(&mut self, pt: u8, codec: Codec) {
        if let Some(slot) = self.table.get_mut(pt as usize) {
            *slot = codec;
        }
    }

    /// Sets a payload type from an SDP `a=rtpmap:<pt> <encoding>/<clock_rate>` line.
    pub fn insert_rtpmap(&mut self, pt: u8, encoding: &str, clock_rate: u32) {
        self.insert(pt, Codec::from_rtpmap(encoding, clock_rate));
    }

    /// The codec of a payload type.
    pub fn get(&self, pt: u8) -> Codec {
        self.table
            .get(pt as usize)
            .copied()
            .unwrap_or(Codec::Unsupported)
    }
}

impl Default for PayloadMap {
    fn default() -> Self {
        Self::with_static()
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    #[error("output buffer holds {available} samples, payload needs {needed}")]
    OutputTooSmall { needed: usize, available: usize },
    #[error("{0:?} payloads are not audio")]
    NotAudio(Codec),
    #[error("G.722 decoder rejected the payload")]
    G722,
}

const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// Encodes one linear sample to G.711 µ-law (G.711 reference algorithm). Used where tapir
/// originates media and by tests that synthesise calls.
pub fn encode_pcmu(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Encodes one linear sample to G.711 A-law (G.711 reference algorithm).
pub fn encode_pcma(sample: i16) -> u8 {
    let s = sample as i32;
    let (sign, mag) = if s >= 0 { (0x80, s) } else { (0, -s - 1) };
    let mag = mag.min(0x7fff);
    let byte = if mag < 256 {
        (mag >> 4) as u8
    } else {
        let exponent = (31 - (mag as u32).leading_zeros() as i32 - 7).clamp(1, 7);
        ((exponent << 4) as u8) | (((mag >> (exponent + 3)) & 0x0f) as u8)
    };
    (byte | sign) ^ 0x55
}

/// Taps of the half-band decimation filter (odd, so the filter has an integer centre).
const HB_TAPS: usize = 47;
const HB_CENTER: usize = HB_TAPS / 2;
/// Non-zero off-centre coefficients: offsets 1, 3, 5, …, HB_CENTER.
const HB_PAIRS: usize = HB_CENTER.div_ceil(2);
/// 16 kHz samples decoded per step; bounds the scratch space.
const G722_STEP_BYTES: usize = 256;

/// Kaiser-windowed half-band low-pass (cut-off at 4 kHz of 16 kHz, β = 5.65 for about 60 dB
/// stop-band), coefficients in Q15. Every other coefficient of a half-band filter is zero, so
/// only the centre and the odd offsets are kept.
fn halfband_coefficients() -> (i32, [i32; HB_PAIRS]) {
    fn bessel_i0(x: f64) -> f64 {
        let mut sum = 1.0;
        let mut term = 1.0;
        let half = x / 2.0;
        for k in 1..32 {
            term *= (half / k as f64) * (half / k as f64);
            sum += term;
        }
        sum
    }
    let beta = 5.65;
    let m = HB_CENTER as f64;
    let tap = |offset: usize| -> f64 {
        let n = offset as f64;
        let sinc = if offset == 0 {
            0.5
        } else {
            (std::f64::consts::PI * n / 2.0).sin() / (std::f64::consts::PI * n)
        };
        let r = n / m;
        sinc * bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta)
    };
    let mut raw = [0.0f64; HB_PAIRS];
    let mut sum = tap(0);
    for (i, c) in raw.iter_mut().enumerate() {
        *c = tap(2 * i + 1);
        sum += 2.0 * *c;
    }
    // Unity gain at DC after quantisation to Q15.
    let q = |v: f64| (v / sum * 32768.0).round() as i32;
    let mut pairs = [0i32; HB_PAIRS];
    for (p, c) in pairs.iter_mut().zip(raw.iter()) {
        *p = q(*c);
    }
    (q(tap(0)), pairs)
}

/// Per-channel decoder. Holds the G.722 ADPCM state and the decimator history, which must
/// follow one RTP stream: call [`Decoder::reset`] when the stream changes (new SSRC).
pub struct Decoder {
    g722: G722Decoder,
    center: i32,
    pairs: [i32; HB_PAIRS],
    /// `HB_TAPS - 1` samples of history followed by the 16 kHz samples of the current step.
    work: [i16; HB_TAPS - 1 + 2 * G722_STEP_BYTES],
    last: Option<Codec>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("last", &self.last).finish()
    }
}

impl Decoder {
    pub fn new() -> Self {
        let (center, pairs) = halfband_coefficients();
        Self {
            g722: G722Decoder::with_options(Bitrate::Mode1_64000, false, false),
            center,
            pairs,
            work: [0; HB_TAPS - 1 + 2 * G722_STEP_BYTES],
            last: None,
        }
    }

    /// Forgets the stream state (ADPCM predictor, filter history).
    pub fn reset(&mut self) {
        self.g722 = G722Decoder::with_options(Bitrate::Mode1_64000, false, false);
        self.work = [0; HB_TAPS - 1 + 2 * G722_STEP_BYTES];
        self.last = None;
    }

    /// Decodes one RTP payload into `out` as 8 kHz samples and returns how many were written
    /// (`codec.samples_for(payload.len())`). Comfort noise and telephone-events write nothing
    /// and return 0; `Unsupported` is an error.
    pub fn decode(
        &mut self,
        codec: Codec,
        payload: &[u8],
        out: &mut [i16],
    ) -> Result<usize, CodecError> {
        match codec {
            Codec::ComfortNoise | Codec::TelephoneEvent => return Ok(0),
            Codec::Unsupported => return Err(CodecError::NotAudio(codec)),
            _ => {}
        }
        let needed = codec.samples_for(payload.len());
        let Some(out) = out.get_mut(..needed) else {
            return Err(CodecError::OutputTooSmall {
                needed,
                available: out.len(),
            });
        };
        if self.last != Some(codec) {
            // A stream that switches codecs mid-call restarts G.722 from a clean state rather
            // than from whatever it held before the switch.
            if codec == Codec::G722 {
                self.g722 = G722Decoder::with_options(Bitrate::Mode1_64000, false, false);
                self.work = [0; HB_TAPS - 1 + 2 * G722_STEP_BYTES];
            }
            self.last = Some(codec);
        }
        match codec {
            Codec::Pcmu => {
                for (o, &b) in out.iter_mut().zip(payload) {
                    *o = ULAW_TABLE[b as usize];
                }
            }
            Codec::Pcma => {
                for (o, &b) in out.iter_mut().zip(payload) {
                    *o = ALAW_TABLE[b as usize];
                }
            }
            _ => self.decode_g722(payload, out)?,
        }
        Ok(needed)
    }

    fn decode_g722(&mut self, payload: &[u8], out: &mut [i16]) -> Result<(), CodecError> {
        const HIST: usize = HB_TAPS - 1;
        for (chunk, out) in payload
            .chunks(G722_STEP_BYTES)
            .zip(out.chunks_mut(G722_STEP_BYTES))
        {
            let wide = 2 * chunk.len();
            let n = self
                .g722
                .decode_frame_into(chunk, &mut self.work[HIST..HIST + wide])
                .map_err(|_| CodecError::G722)?;
            if n != wide {
                return Err(CodecError::G722);
            }
            for (m, o) in out.iter_mut().enumerate() {
                // Window of HB_TAPS samples ending at the second 16 kHz sample of pair `m`.
                let w = &self.work[2 * m + 1 + HIST + 1 - HB_TAPS..2 * m + 1 + HIST + 1];
                let mut acc = self.center as i64 * w[HB_CENTER] as i64;
                for (k, &c) in self.pairs.iter().enumerate() {
                    let off = 2 * k + 1;
                    acc += c as i64 * (w[HB_CENTER - off] as i64 + w[HB_CENTER + off] as i64);
                }
                *o = ((acc + (1 << 14)) >> 15).clamp(i16::MIN as i64, i16::MAX as i64) as i16;
            }
            self.work.copy_within(wide..wide + HIST, 0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audio_codec::Encoder as _;

    fn tone(freq: f64, rate: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16)
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn g711_tables_match_reference_points() {
        // Well-known values from the G.711 tables.
        assert_eq!(ULAW_TABLE[0xff], 0);
        assert_eq!(ULAW_TABLE[0x00], -32124);
        assert_eq!(ULAW_TABLE[0x80], 32124);
        assert_eq!(ALAW_TABLE[0xd5], 8);
        assert_eq!(ALAW_TABLE[0x55], -8);
        assert_eq!(ALAW_TABLE[0xaa], 32256);
        assert_eq!(ALAW_TABLE[0x2a], -32256);
    }

    #[test]
    fn g711_round_trip() {
        let mut ref_u = audio_codec::pcmu::PcmuEncoder::new();
        for b in 0..=255u8 {
            // Every code decodes to a value that encodes back to the same code (µ-law has two
            // codes for zero).
            assert_eq!(encode_pcma(ALAW_TABLE[b as usize]), b, "alaw {b:#x}");
            if b != 0x7f {
                assert_eq!(encode_pcmu(ULAW_TABLE[b as usize]), b, "ulaw {b:#x}");
            }
        }
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = encode_pcmu(s);
            let a = encode_pcma(s);
            assert_eq!(ref_u.encode(&[s])[0], u, "pcmu {s}");
            let tol = (s as i32).abs() / 16 + 16;
            assert!((ULAW_TABLE[u as usize] as i32 - s as i32).abs() <= tol.max(33));
            assert!((ALAW_TABLE[a as usize] as i32 - s as i32).abs() <= tol);
        }
    }

    #[test]
    fn codec_from_sdp() {
        assert_eq!(Codec::from_static_payload_type(0), Codec::Pcmu);
        assert_eq!(Codec::from_static_payload_type(8), Codec::Pcma);
        assert_eq!(Codec::from_static_payload_type(9), Codec::G722);
        assert_eq!(Codec::from_static_payload_type(13), Codec::ComfortNoise);
        assert_eq!(Codec::from_static_payload_type(18), Codec::Unsupported);
        assert_eq!(Codec::from_rtpmap("pcma", 8000), Codec::Pcma);
        assert_eq!(Codec::from_rtpmap("G722", 8000), Codec::G722);
        assert_eq!(Codec::from_rtpmap("G722", 16000), Codec::Unsupported);
        assert_eq!(
            Codec::from_rtpmap("telephone-event", 16000),
            Codec::TelephoneEvent
        );
        assert_eq!(Codec::from_rtpmap("opus", 48000), Codec::Unsupported);
        let mut map = PayloadMap::with_static();
        map.insert_rtpmap(101, "telephone-event", 8000);
        map.insert(200, Codec::Pcmu);
        assert_eq!(map.get(101), Codec::TelephoneEvent);
        assert_eq!(map.get(8), Codec::Pcma);
        assert_eq!(map.get(96), Codec::Unsupported);
        assert_eq!(map.get(200), Codec::Unsupported);
    }

    #[test]
    fn non_audio_and_short_output() {
        let mut d = Decoder::new();
        let mut out = [0i16; 4];
        assert_eq!(d.decode(Codec::ComfortNoise, &[40], &mut out), Ok(0));
        assert_eq!(
            d.decode(Codec::TelephoneEvent, &[1, 2, 3, 4], &mut out),
            Ok(0)
        );
        assert_eq!(
            d.decode(Codec::Unsupported, &[1], &mut out),
            Err(CodecError::NotAudio(Codec::Unsupported))
        );
        assert_eq!(
            d.decode(Codec::Pcmu, &[0xff; 5], &mut out),
            Err(CodecError::OutputTooSmall {
                needed: 5,
                available: 4
            })
        );
    }

    /// Encodes a 16 kHz signal with G.722 in 20 ms packets and decodes it with [`Decoder`].
    fn g722_through(signal: &[i16]) -> Vec<i16> {
        let mut enc = audio_codec::g722::G722Encoder::new();
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut buf = [0i16; 160];
        for pcm in signal.chunks(320) {
            let payload = enc.encode(pcm);
            assert_eq!(payload.len(), pcm.len() / 2);
            let n = dec.decode(Codec::G722, &payload, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn g722_passes_speech_band_and_rejects_aliases() {
        let passband = g722_through(&tone(1000.0, 16000.0, 16000, 8000.0));
        assert_eq!(passband.len(), 8000);
        let level = rms(&passband[800..]);
        let expected = 8000.0 / std::f64::consts::SQRT_2;
        assert!(
            (level / expected - 1.0).abs() < 0.1,
            "1 kHz level {level} vs {expected}"
        );
        // A 6 kHz tone would fold to 2 kHz at 8 kHz without the low-pass.
        let alias = g722_through(&tone(6000.0, 16000.0, 16000, 8000.0));
        let leaked = rms(&alias[800..]);
        assert!(leaked < expected * 0.01, "6 kHz leaked at {leaked}");
    }

    #[test]
    fn g722_state_continues_across_packets() {
        // Same signal decoded as one stream in 20 ms packets and in odd-sized packets: the
        // output must not depend on where packet boundaries fall.
        let signal = tone(700.0, 16000.0, 3200, 6000.0);
        let mut enc = audio_codec::g722::G722Encoder::new();
        let payload = enc.encode(&signal);
        let mut a = Decoder::new();
        let mut b = Decoder::new();
        let mut out_a = vec![0i16; payload.len()];
        let mut out_b = vec![0i16; payload.len()];
        a.decode(Codec::G722, &payload, &mut out_a).unwrap();
        let mut pos = 0;
        for size in [1usize, 37, 160, 300, 2000].iter().cycle() {
            if pos >= payload.len() {
                break;
            }
            let end = (pos + size).min(payload.len());
            b.decode(Codec::G722, &payload[pos..end], &mut out_b[pos..end])
                .unwrap();
            pos = end;
        }
        assert_eq!(out_a, out_b);
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..1500),
                                 which in 0u8..6) {
            let codec = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::ComfortNoise,
                         Codec::TelephoneEvent, Codec::Unsupported][which as usize];
            let mut d = Decoder::new();
            let mut out = vec![0i16; 1500];
            if let Ok(n) = d.decode(codec, &data, &mut out) {
                proptest::prop_assert_eq!(n, codec.samples_for(data.len()));
            }
        }
    }
}
