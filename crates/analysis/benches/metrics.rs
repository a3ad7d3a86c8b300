//! Analysis throughput per core: VAD, metrics and peaks over a generated 60-minute stereo
//! call, as a realtime factor (seconds of call analysed per second of one core), fed in
//! 20 ms chunks as a recorder would and from a WAV in memory; MP3 decoding plus analysis on
//! a 5-minute call; and the size and cost of the page's JSON. Run with
//! `cargo bench -p analysis`. Under `cargo test` it only says that it is not measuring.

use std::hint::black_box;
use std::time::{Duration, Instant};

use analysis::{analyze_mp3_reader, analyze_wav_reader, Analysis, AnalysisConfig, Analyzer};
use recorder::{Mp3Sink, Sink, SinkOptions, WavSink};

const CALL_SECONDS: u64 = 3600;
const MP3_SECONDS: u64 = 300;

/// A conversation: each party talks in turns of 2–12 s made of 150–400 ms "syllables" of
/// noise with 40–120 ms dips, turns separated by 0.2–2 s, one in five overlapping the other's
/// end by up to 1 s, over a −60 dBFS line.
fn call(seconds: u64) -> Vec<i16> {
    let frames = (seconds * 8000) as usize;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut level = vec![[0u16; 2]; frames];
    let mut t = 4000usize;
    let mut who = 0usize;
    while t < frames {
        let turn = 16_000 + (next() % 80_000) as usize;
        let end = (t + turn).min(frames);
        let mut s = t;
        while s < end {
            let syllable = 1200 + (next() % 2000) as usize;
            let loud = 3000 + (next() % 6000) as u16;
            for l in level.iter_mut().take((s + syllable).min(end)).skip(s) {
                l[who] = loud;
            }
            s += syllable + 320 + (next() % 640) as usize;
        }
        let gap = 1600 + (next() % 14_400) as usize;
        t = if next() % 5 == 0 {
            end.saturating_sub((next() % 8000) as usize)
        } else {
            end + gap
        };
        who ^= 1;
    }
    let mut out = Vec::with_capacity(frames * 2);
    for l in level {
        for amplitude in l {
            let noise = (next() >> 48) as i32 - 32768;
            let floor = noise / 1024;
            out.push((floor + noise * i32::from(amplitude) / 32768) as i16);
        }
    }
    out
}

/// Runs `f` until `budget` is spent (at least three times) and returns the best realtime
/// factor for `seconds` of audio.
fn realtime_factor(seconds: u64, budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    seconds as f64 / best.as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("analysis bench: not measuring (run `cargo bench -p analysis`)");
        return;
    }
    let budget = Duration::from_secs(5);
    let config = AnalysisConfig::default();
    let audio = call(CALL_SECONDS);

    let mut last: Option<Analysis> = None;
    let chunked = realtime_factor(CALL_SECONDS, budget, || {
        let mut a = Analyzer::new(config).expect("config");
        // 20 ms of stereo per push, as the recorder hands out its mixed chunks.
        for chunk in audio.chunks(320) {
            a.push(black_box(chunk));
        }
        last = Some(black_box(a.finish()));
    });
    let analysis = last.expect("ran");
    let whole = realtime_factor(CALL_SECONDS, budget, || {
        let mut a = Analyzer::new(config).expect("config");
        a.push(black_box(&audio));
        black_box(a.finish());
    });

    let mut wav = Vec::with_capacity(audio.len() * 2 + 64);
    let mut sink =
        WavSink::new(std::io::Cursor::new(&mut wav), SinkOptions::default()).expect("wav");
    sink.write(&audio).expect("wav");
    sink.finish().expect("wav");
    drop(sink);
    let from_wav = realtime_factor(CALL_SECONDS, budget, || {
        black_box(analyze_wav_reader(std::io::Cursor::new(&wav[..]), config).expect("wav"));
    });
    drop(wav);

    let mut mp3 = Vec::new();
    let mut sink =
        Mp3Sink::new(std::io::Cursor::new(&mut mp3), SinkOptions::default()).expect("mp3");
    sink.write(&audio[..(MP3_SECONDS * 16_000) as usize])
        .expect("mp3");
    sink.finish().expect("mp3");
    drop(sink);
    let mp3 = std::sync::Arc::new(mp3);
    let from_mp3 = realtime_factor(MP3_SECONDS, budget, || {
        let bytes = std::io::Cursor::new(mp3.as_ref().clone());
        black_box(analyze_mp3_reader(bytes, config).expect("mp3"));
    });

    let t = Instant::now();
    let wavesurfer = analysis.peaks.to_wavesurfer(usize::MAX, 2);
    let page_json = serde_json::to_vec(&wavesurfer).expect("json");
    let page_json_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let fitted = serde_json::to_vec(&analysis.peaks.to_wavesurfer(8000, 2)).expect("json");
    let fitted_ms = t.elapsed().as_secs_f64() * 1000.0;
    let stored_json = serde_json::to_vec(&analysis.peaks).expect("json");
    let metrics_json = serde_json::to_vec(&analysis.metrics).expect("json");
    let m = &analysis.metrics;

    println!("analysis throughput, one core, {CALL_SECONDS} s stereo call (VAD + metrics + peaks at 50/s):");
    println!("  pushed in 20 ms chunks: {chunked:>10.0} x realtime (target >= 5000)");
    println!("  pushed in one chunk:    {whole:>10.0} x realtime");
    println!("  from WAV in memory:     {from_wav:>10.0} x realtime");
    println!("  from MP3 in memory ({MP3_SECONDS} s, symphonia decode + analysis): {from_mp3:>8.0} x realtime");
    println!(
        "  call: {} spans, {} switches, customer {} s / agent {} s talk, overtalk {} s in {}, {} pauses",
        m.spans.len(),
        m.switches,
        m.customer_talk_ms / 1000,
        m.agent_talk_ms / 1000,
        m.overtalk_ms / 1000,
        m.overtalk_count,
        m.pause_count
    );
    println!(
        "  JSON: stored peaks {} KiB; wavesurfer peaks, all {} buckets {} KiB ({page_json_ms:.1} ms), fitted to 8000 {} KiB ({fitted_ms:.1} ms); metrics {} KiB",
        stored_json.len() / 1024,
        analysis.peaks.buckets(),
        page_json.len() / 1024,
        fitted.len() / 1024,
        metrics_json.len() / 1024
    );
}
