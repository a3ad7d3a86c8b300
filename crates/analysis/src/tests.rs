//! The analyser end to end on synthetic calls: tone and noise bursts at known times over a
//! quiet line, peaks checked against a direct computation, chunking, and the file readers.

use super::*;
use proptest::prelude::*;

/// A deterministic xorshift generator, so that every run sees the same "noise".
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly uniform in −1…1.
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[derive(Clone, Copy)]
enum Burst {
    /// A tone of the given frequency (Hz) and dBFS.
    Tone(f64, f64),
    /// White noise at the given dBFS.
    Noise(f64),
}

/// A stereo call of `ms` milliseconds: background noise at `floor_dbfs` on both channels,
/// bursts `(start_ms, end_ms, burst)` per channel.
fn call(ms: u64, floor_dbfs: f64, channels: [&[(u64, u64, Burst)]; 2]) -> Vec<i16> {
    let frames = (ms * 8) as usize;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let amplitude = |dbfs: f64| 32768.0 * 10f64.powf(dbfs / 20.0);
    // Uniform noise in ±a has an RMS of a/√3.
    let floor = amplitude(floor_dbfs) * 3f64.sqrt();
    let mut out = vec![0i16; frames * 2];
    for (ch, bursts) in channels.iter().enumerate() {
        for i in 0..frames {
            let t_ms = i as u64 / 8;
            let mut v = floor * rng.uniform();
            for &(start, end, burst) in bursts.iter() {
                if (start..end).contains(&t_ms) {
                    v += match burst {
                        // A sine's RMS is its amplitude over √2.
                        Burst::Tone(hz, db) => {
                            amplitude(db)
                                * 2f64.sqrt()
                                * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()
                        }
                        Burst::Noise(db) => amplitude(db) * 3f64.sqrt() * rng.uniform(),
                    };
                }
            }
            out[2 * i + ch] = v.round().clamp(-32768.0, 32767.0) as i16;
        }
    }
    out
}

fn analyze(samples: &[i16]) -> Analysis {
    let mut a = Analyzer::new(AnalysisConfig::default()).unwrap();
    a.push(samples);
    a.finish()
}

fn spans_of(m: &ConversationMetrics, who: Speaker) -> Vec<(u64, u64)> {
    m.spans
        .iter()
        .filter(|s| s.speaker == who)
        .map(|s| (s.start_ms, s.end_ms))
        .collect()
}

fn assert_spans_near(got: &[(u64, u64)], want: &[(u64, u64)], tolerance_ms: u64) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.0.abs_diff(w.0) <= tolerance_ms && g.1.abs_diff(w.1) <= tolerance_ms,
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn tone_and_noise_bursts_come_out_as_their_spans_and_metrics() {
    use Burst::*;
    let customer = [
        (500, 2500, Tone(300.0, -20.0)),
        (6000, 7000, Noise(-25.0)),
        (12_000, 13_000, Tone(700.0, -30.0)),
    ];
    let agent = [
        (2800, 5000, Noise(-22.0)),
        (6800, 7500, Tone(1200.0, -18.0)),
    ];
    let audio = call(14_000, -60.0, [&customer, &agent]);
    let m = analyze(&audio).metrics;
    let want_c = [(500, 2500), (6000, 7000), (12_000, 13_000)];
    let want_a = [(2800, 5000), (6800, 7500)];
    // A burst starts and stops within one 10 ms frame.
    assert_spans_near(&spans_of(&m, Speaker::Customer), &want_c, 10);
    assert_spans_near(&spans_of(&m, Speaker::Agent), &want_a, 10);

    let near = |got: u64, want: u64| got.abs_diff(want) <= 20;
    assert!(near(m.customer_talk_ms, 4000), "{m:?}");
    assert!(near(m.agent_talk_ms, 2900), "{m:?}");
    assert_eq!(m.overtalk_count, 1);
    assert!(near(m.overtalk_ms, 200), "{m:?}");
    // Pauses: 2.5–2.8, 5.0–6.0 and 7.5–12 s; the 7.5–12 s gap is also the only long silence.
    assert_eq!(m.pause_count, 3);
    assert!(
        near(m.average_pause_ms.unwrap(), (300 + 1000 + 4500) / 3),
        "{m:?}"
    );
    assert_eq!(m.silences_over_4s, 1);
    assert!(near(m.longest_silence_ms, 4500));
    // Turns C A C A C: the agent's 6.8–7.5 s outlasts the customer's, so it is a turn.
    assert_eq!(m.switches, 4);
    assert!(near(m.longest_customer_monologue_ms, 2000));
    assert!(near(m.longest_agent_monologue_ms, 2200));
    assert_eq!(m.duration_ms, 14_000);
}

#[test]
fn a_quiet_line_is_no_talk_and_a_click_is_dropped() {
    let audio = call(5000, -60.0, [&[(1000, 1040, Burst::Noise(-10.0))], &[]]);
    let m = analyze(&audio).metrics;
    assert!(m.spans.is_empty(), "{:?}", m.spans);
    assert_eq!(m.talk_to_listen_ratio, None);
    assert_eq!((m.silences_over_4s, m.longest_silence_ms), (1, 5000));
}

#[test]
fn peaks_are_the_min_and_max_of_each_bucket() {
    let audio = call(1234, -30.0, [&[(100, 600, Burst::Tone(440.0, -6.0))], &[]]);
    for bps in [50, 3, 7, 8000] {
        let mut a = Analyzer::new(AnalysisConfig {
            buckets_per_second: bps,
        })
        .unwrap();
        a.push(&audio);
        let p = a.finish().peaks;
        let frames = audio.len() / 2;
        let mut want: [Vec<i16>; 2] = Default::default();
        let mut start = 0usize;
        let mut k = 0u64;
        while start < frames {
            let end = (peaks::bucket_end(k, bps) as usize).min(frames);
            for (ch, w) in want.iter_mut().enumerate() {
                let bucket = (start..end).map(|i| audio[2 * i + ch]);
                w.push(bucket.clone().min().unwrap());
                w.push(bucket.max().unwrap());
            }
            start = end;
            k += 1;
        }
        assert_eq!(p.customer, want[0], "{bps}/s");
        assert_eq!(p.agent, want[1], "{bps}/s");
        assert_eq!(
            p.buckets(),
            (frames as u64 * u64::from(bps)).div_ceil(8000) as usize
        );
        assert_eq!(p.frames, frames as u64);
        assert!((p.duration_secs() - 1.234).abs() < 1e-9);
    }
}

#[test]
fn an_hour_at_50_per_second_is_180000_pairs_per_channel() {
    let mut a = Analyzer::new(AnalysisConfig::default()).unwrap();
    let minute = vec![0i16; 2 * 8000 * 60];
    for _ in 0..60 {
        a.push(&minute);
    }
    let analysis = a.finish();
    assert_eq!(analysis.peaks.buckets(), 180_000);
    assert_eq!(
        analysis.peaks.to_wavesurfer(usize::MAX, 2).peaks[1].len(),
        360_000
    );
    assert_eq!(analysis.metrics.duration_ms, 3_600_000);
}

#[test]
fn bad_bucket_rates_are_refused() {
    for bps in [0, 8001, u32::MAX] {
        let err = Analyzer::new(AnalysisConfig {
            buckets_per_second: bps,
        })
        .unwrap_err();
        assert!(
            matches!(err, AnalysisError::BucketsPerSecond(b) if b == bps),
            "{err}"
        );
    }
}

#[test]
fn nothing_pushed_is_an_empty_analysis() {
    let mut a = Analyzer::new(AnalysisConfig::default()).unwrap();
    a.push(&[]);
    a.push(&[7]); // half a frame, never completed
    let analysis = a.finish();
    assert_eq!(analysis.peaks.frames, 0);
    assert!(analysis.peaks.customer.is_empty());
    assert_eq!(analysis.metrics.duration_ms, 0);
    assert!(analysis.metrics.spans.is_empty());
}

#[test]
fn analysis_serializes_and_round_trips() {
    let audio = call(2000, -60.0, [&[(200, 900, Burst::Tone(500.0, -20.0))], &[]]);
    let analysis = analyze(&audio);
    let json = serde_json::to_string(&analysis).unwrap();
    assert!(
        json.starts_with(r#"{"peaks":{"sample_rate":8000"#),
        "{}",
        &json[..80]
    );
    assert_eq!(serde_json::from_str::<Analysis>(&json).unwrap(), analysis);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// However the samples are cut into chunks (odd lengths, single samples, empty chunks),
    /// the analysis is the same as from one push.
    #[test]
    fn chunking_does_not_change_the_analysis(cuts in proptest::collection::vec(0usize..3000, 0..40)) {
        let audio = call(3000, -55.0, [
            &[(300, 1300, Burst::Tone(250.0, -15.0))],
            &[(1200, 2600, Burst::Noise(-20.0))],
        ]);
        let whole = analyze(&audio);
        let mut a = Analyzer::new(AnalysisConfig::default()).unwrap();
        let mut rest = &audio[..];
        for cut in cuts {
            let (chunk, tail) = rest.split_at(cut.min(rest.len()));
            a.push(chunk);
            rest = tail;
        }
        a.push(rest);
        prop_assert_eq!(a.frames(), 24_000);
        prop_assert_eq!(a.finish(), whole);
    }
}

mod files {
    use super::*;
    use recorder::{create_sink, Format, SinkOptions};

    fn record(format: Format, audio: &[i16]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(match format {
            Format::Wav => "call.wav",
            Format::Mp3 => "call.mp3",
        });
        let mut sink = create_sink(format, &path, SinkOptions::default()).unwrap();
        sink.write(audio).unwrap();
        sink.finish().unwrap();
        (dir, path)
    }

    fn conversation() -> Vec<i16> {
        call(
            6000,
            -60.0,
            [
                &[(500, 2000, Burst::Tone(400.0, -15.0))],
                &[(2600, 5000, Burst::Tone(900.0, -15.0))],
            ],
        )
    }

    #[test]
    fn a_recording_reads_back_as_its_two_channels() {
        let audio = conversation();
        let (_dir, path) = record(Format::Wav, &audio);
        let ch = crate::read_channels(&path).unwrap();
        let customer: Vec<i16> = audio.iter().step_by(2).copied().collect();
        let agent: Vec<i16> = audio.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(ch.customer, customer);
        assert_eq!(ch.agent, agent);
        // An MP3 decodes to two channels of the same length, give or take the codec's frames.
        let (_dir, mp3) = record(Format::Mp3, &audio);
        let ch = crate::read_channels(&mp3).unwrap();
        assert_eq!(ch.customer.len(), ch.agent.len());
        assert!(ch.customer.len() >= customer.len(), "{}", ch.customer.len());
    }

    #[test]
    fn a_recorded_wav_gives_the_same_analysis_as_its_samples() {
        let audio = conversation();
        let (_dir, path) = record(Format::Wav, &audio);
        let config = AnalysisConfig::default();
        let from_file = analyze_wav(&path, config).unwrap();
        assert_eq!(from_file, analyze(&audio));
        assert_eq!(analyze_file(&path, config).unwrap(), from_file);
        // A reader that hands out odd numbers of bytes changes nothing.
        struct Dribble(std::io::Cursor<Vec<u8>>);
        impl Read for Dribble {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(3);
                self.0.read(&mut buf[..n])
            }
        }
        use std::io::Read;
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            analyze_wav_reader(Dribble(std::io::Cursor::new(bytes)), config).unwrap(),
            from_file
        );
    }

    #[test]
    fn a_recorded_mp3_gives_the_spans_shifted_by_the_codec_delay() {
        let audio = conversation();
        let (_dir, path) = record(Format::Mp3, &audio);
        let config = AnalysisConfig::default();
        let analysis = analyze_mp3(&path, config).unwrap();
        assert_eq!(analyze_file(&path, config).unwrap(), analysis);
        let m = &analysis.metrics;
        let c = spans_of(m, Speaker::Customer);
        let a = spans_of(m, Speaker::Agent);
        assert_eq!((c.len(), a.len()), (1, 1), "{:?}", m.spans);
        // LAME's delay at 8 kHz (encoder delay and decoder padding) shifts both channels alike.
        let delay = c[0].0 as i64 - 500;
        assert!((0..=200).contains(&delay), "{delay}");
        let shifted = |(s, e): (u64, u64)| ((s as i64 - delay) as u64, (e as i64 - delay) as u64);
        // A loud tone that stops dead is the worst case for MP3: its quantization noise
        // rings on for up to two 576-sample granules (72 ms each at 8 kHz) above −50 dBFS.
        // Speech fades out and stays within 50 ms (tests/espeak.rs).
        assert_spans_near(&[shifted(c[0])], &[(500, 2000)], 150);
        assert_spans_near(&[shifted(a[0])], &[(2600, 5000)], 150);
        // The decoded length covers the recording (plus the codec's padding).
        assert!(analysis.peaks.frames >= 48_000, "{}", analysis.peaks.frames);
    }

    #[test]
    fn wrong_formats_and_damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let config = AnalysisConfig::default();
        let write_wav = |name: &str, channels: u16, sample_rate: u32, bits: u16| {
            let path = dir.path().join(name);
            let spec = hound::WavSpec {
                channels,
                sample_rate,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            for i in 0..1600 {
                if bits == 8 {
                    w.write_sample(i as i8).unwrap();
                } else {
                    w.write_sample(i as i16).unwrap();
                }
            }
            w.finalize().unwrap();
            path
        };
        for (name, channels, rate, bits) in [
            ("mono.wav", 1, 8000, 16),
            ("wide.wav", 2, 16000, 16),
            ("8bit.wav", 2, 8000, 8),
        ] {
            let err = analyze_wav(write_wav(name, channels, rate, bits), config).unwrap_err();
            assert!(
                matches!(err, AnalysisError::Unsupported { channels: c, sample_rate: r, bits: b }
                    if (c, r, b) == (channels, rate, bits)),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("stereo at 8000 Hz"), "{err}");
        }

        let missing = dir.path().join("missing.wav");
        let err = analyze_file(&missing, config).unwrap_err();
        assert!(
            matches!(err, AnalysisError::Io { ref path, .. } if *path == missing),
            "{err}"
        );

        let garbage = dir.path().join("garbage.wav");
        std::fs::write(&garbage, b"RIFF\x10\0\0\0not a wave file at all").unwrap();
        assert!(matches!(
            analyze_wav(&garbage, config),
            Err(AnalysisError::Wav(_))
        ));
        assert!(analyze_file(&garbage, config).is_err());
        let noise = dir.path().join("noise.mp3");
        std::fs::write(&noise, vec![0x5au8; 4096]).unwrap();
        assert!(analyze_mp3(&noise, config).is_err());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(analyze_file(&empty, config).is_err());

        // A WAV cut off mid-sample is analysed as far as it goes.
        let audio = conversation();
        let (_keep, path) = record(Format::Wav, &audio);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(44 + 4 * 24_000 + 3);
        let cut = dir.path().join("cut.wav");
        std::fs::write(&cut, &bytes).unwrap();
        let analysis = analyze_wav(&cut, config).unwrap();
        assert_eq!(analysis.peaks.frames, 24_000);
        assert_eq!(analysis, analyze(&audio[..48_000]));
        let bad_config = AnalysisConfig {
            buckets_per_second: 0,
        };
        assert!(matches!(
            analyze_wav(&path, bad_config),
            Err(AnalysisError::BucketsPerSecond(0))
        ));
    }
}

#[test]
fn the_analyzer_moves_between_threads() {
    // The binary feeds it from the recorder thread or a blocking task.
    fn is_send<T: Send + Sync + 'static>() {}
    is_send::<Analyzer>();
    is_send::<Analysis>();
    is_send::<AnalysisError>();
}
