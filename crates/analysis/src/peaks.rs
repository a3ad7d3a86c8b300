//! Waveform peaks: the lowest and highest sample of each channel in each time bucket, kept
//! with the recording so that the page draws a 60-minute call without decoding its audio.
//!
//! [`Peaks`] is the stored form (exact i16, about 4 bytes per bucket and channel);
//! [`Peaks::to_wavesurfer`] turns it into what wavesurfer.js 8 accepts as precomputed
//! `peaks` and `duration`: one array per channel (customer first) of values in −1…1. Each
//! bucket contributes its minimum then its maximum; wavesurfer draws, per pixel, the largest
//! magnitude of the values that fall on it, so the pairs render as the usual envelope.

use serde::{Deserialize, Serialize};

use crate::vad::SAMPLE_RATE;

/// Min/max per bucket of both channels of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peaks {
    pub sample_rate: u32,
    pub buckets_per_second: u32,
    /// Stereo frames analysed (the recording's length in samples per channel).
    pub frames: u64,
    /// Channel 1: `[min, max]` of each bucket, interleaved.
    pub customer: Vec<i16>,
    /// Channel 2: `[min, max]` of each bucket, interleaved.
    pub agent: Vec<i16>,
}

/// Precomputed peaks in wavesurfer.js 8's form: `WaveSurfer.create({ peaks, duration, ... })`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WavesurferPeaks {
    /// Seconds.
    pub duration: f64,
    /// `[customer, agent]`, each `[min, max, min, max, ...]` normalized to −1…1.
    pub peaks: Vec<Vec<f32>>,
}

/// One past the last frame of bucket `k` (buckets need not hold equal numbers of frames when
/// the rate does not divide 8000).
pub(crate) fn bucket_end(k: u64, buckets_per_second: u32) -> u64 {
    (k + 1) * u64::from(SAMPLE_RATE) / u64::from(buckets_per_second)
}

impl Peaks {
    /// Length of the recording in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate)
    }

    /// Number of buckets per channel.
    pub fn buckets(&self) -> usize {
        self.customer.len() / 2
    }

    /// Peaks for wavesurfer.js: at most `max_buckets` per channel (adjacent buckets are
    /// merged by a whole factor when there are more, e.g. to fit a canvas without zoom),
    /// rounded to `decimals` decimal places (at most 6) so that the JSON stays small: with
    /// 2 decimals, a step is 1 % of full scale, under a pixel on a lane 100 px high.
    pub fn to_wavesurfer(&self, max_buckets: usize, decimals: u32) -> WavesurferPeaks {
        let buckets = self.buckets();
        let factor = buckets.div_ceil(max_buckets.max(1)).max(1);
        let scale = 10f64.powi(decimals.min(6) as i32);
        let norm = |v: i16| {
            let r = (f64::from(v) / 32768.0 * scale).round() / scale;
            // Avoid "-0.0" in the JSON.
            if r == 0.0 {
                0.0
            } else {
                r as f32
            }
        };
        let channel = |pairs: &[i16]| {
            let mut out = Vec::with_capacity(2 * buckets.div_ceil(factor));
            for group in pairs.chunks(2 * factor) {
                let (mut lo, mut hi) = (i16::MAX, i16::MIN);
                for pair in group.chunks_exact(2) {
                    lo = lo.min(pair[0]);
                    hi = hi.max(pair[1]);
                }
                out.push(norm(lo));
                out.push(norm(hi));
            }
            out
        };
        WavesurferPeaks {
            duration: self.duration_secs(),
            peaks: vec![channel(&self.customer), channel(&self.agent)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peaks(customer: Vec<i16>, agent: Vec<i16>) -> Peaks {
        Peaks {
            sample_rate: 8000,
            buckets_per_second: 50,
            // 160 frames per 50/s bucket, two values per bucket.
            frames: customer.len() as u64 / 2 * 160,
            customer,
            agent,
        }
    }

    #[test]
    fn bucket_ends_cover_every_frame_once() {
        assert_eq!(bucket_end(0, 50), 160);
        assert_eq!(bucket_end(49, 50), 8000);
        // 3 per second: 2666, 5333, 8000.
        let ends: Vec<u64> = (0..3).map(|k| bucket_end(k, 3)).collect();
        assert_eq!(ends, vec![2666, 5333, 8000]);
        assert_eq!(bucket_end(0, 8000), 1);
    }

    #[test]
    fn wavesurfer_form_is_normalized_rounded_and_merged() {
        let p = peaks(
            vec![-32768, 32767, -16384, 100, 0, 0, -3, 3],
            vec![0, 0, -1000, 1000, -20000, 5, -5, 20000],
        );
        let w = p.to_wavesurfer(usize::MAX, 2);
        assert_eq!(w.duration, 4.0 * 160.0 / 8000.0);
        assert_eq!(w.peaks[0], vec![-1.0, 1.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            w.peaks[1],
            vec![0.0, 0.0, -0.03, 0.03, -0.61, 0.0, 0.0, 0.61]
        );
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"duration":0.08,"peaks":[[-1.0,1.0,-0.5,0.0,0.0,0.0,0.0,0.0],[0.0,0.0,-0.03,0.03,-0.61,0.0,0.0,0.61]]}"#
        );
        // Two buckets at most: pairs of buckets merge into (min of mins, max of maxes).
        let w = p.to_wavesurfer(2, 3);
        assert_eq!(w.peaks[0], vec![-1.0, 1.0, 0.0, 0.0]);
        assert_eq!(w.peaks[1], vec![-0.031, 0.031, -0.61, 0.61]);
        // Three at most: factor 2 again (4 buckets do not fit 3 without a whole factor of 2).
        assert_eq!(p.to_wavesurfer(3, 3).peaks[0].len(), 4);
        assert_eq!(p.to_wavesurfer(0, 3).peaks[0].len(), 2);
    }

    #[test]
    fn stored_form_round_trips_through_json() {
        let p = peaks(vec![-5, 7], vec![i16::MIN, i16::MAX]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"sample_rate":8000,"buckets_per_second":50,"frames":160,"customer":[-5,7],"agent":[-32768,32767]}"#
        );
        assert_eq!(serde_json::from_str::<Peaks>(&json).unwrap(), p);
    }
}
