//! Cost of the offline engine: CPU seconds per minute of recorded call, transcribing both
//! channels with PocketSphinx on one thread, and the upsampler's share. The call is built
//! from `espeak-ng` sentences (as in tests/espeak.rs): two parties taking turns, each
//! talking about half of the time, ten minutes long. Run with
//! `cargo bench -p transcript --bench offline`. Under `cargo test` it only says that it is
//! not measuring.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use transcript::pocketsphinx::{PocketSphinx, PocketSphinxConfig};
use transcript::resample::upsample_2x;
use transcript::BlockingEngine;

const CALL_SECONDS: usize = 600;

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn speak(dir: &Path, i: usize, voice: &str, text: &str) -> Vec<i16> {
    let raw = dir.join(format!("{i}.22k.wav"));
    let narrow = dir.join(format!("{i}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("sox")
            .arg("-R")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
            .arg(&narrow)
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "espeak-ng and sox are needed: apt-get install -y espeak-ng sox"
    );
    let mut r = hound::WavReader::open(&narrow).unwrap();
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

const SENTENCES: &[&str] = &[
    "Thank you for calling customer service how can I help you today",
    "I would like to check the status of my order",
    "Of course can you give me the order number please",
    "The amount seems much higher than usual this month",
    "I will send you a copy by email right away",
    "That would be great thank you very much",
    "Is there anything else I can help you with",
    "No that is all for today have a nice evening",
];

/// Two channels of `CALL_SECONDS`: turns alternate with 600 ms gaps.
fn call(dir: &Path) -> [Vec<i16>; 2] {
    let clips: Vec<Vec<i16>> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            speak(
                dir,
                i,
                if i % 2 == 0 {
                    "en-us+klatt3"
                } else {
                    "en-us+klatt4"
                },
                s,
            )
        })
        .collect();
    let len = CALL_SECONDS * 8000;
    let mut ch = [vec![0i16; len], vec![0i16; len]];
    let (mut t, mut i) = (4000usize, 0usize);
    loop {
        let clip = &clips[i % clips.len()];
        if t + clip.len() > len {
            break;
        }
        ch[i % 2][t..t + clip.len()].copy_from_slice(clip);
        t += clip.len() + 4800;
        i += 1;
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for c in &mut ch {
        for s in c.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *s = s.saturating_add(((rng >> 58) as i16) - 32);
        }
    }
    ch
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "transcript bench: not measuring (run `cargo bench -p transcript --bench offline`)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let channels = call(dir.path());
    let speech_s: f64 = channels
        .iter()
        .map(|c| {
            analysis::vad::talk_spans(c)
                .iter()
                .map(|(s, e)| (e - s) as f64 / 1000.0)
                .sum::<f64>()
        })
        .sum();

    let c0 = cpu_seconds();
    let mut n = 0;
    for c in &channels {
        n += upsample_2x(c).len();
    }
    let upsample_cpu = cpu_seconds() - c0;
    assert_eq!(n, 2 * CALL_SECONDS * 16_000);

    let t0 = Instant::now();
    let engine = PocketSphinx::new(PocketSphinxConfig::default()).expect("model installed");
    let load = t0.elapsed();
    let c0 = cpu_seconds();
    let wall = Instant::now();
    let mut words = 0;
    for c in &channels {
        let phrases = engine
            .transcribe_blocking(c, "en", Instant::now() + Duration::from_secs(3600))
            .unwrap();
        words += phrases.iter().map(|p| p.words.len()).sum::<usize>();
    }
    let cpu = cpu_seconds() - c0;
    let minutes = CALL_SECONDS as f64 / 60.0;
    println!(
        "offline engine: {CALL_SECONDS} s stereo call, {speech_s:.0} s of speech over both \
         channels, {words} words"
    );
    println!("  model load: {load:.2?}");
    println!(
        "  CPU: {cpu:.1} s ({:.2?} wall) = {:.1} CPU s per recorded minute, {:.2} CPU s per \
         second of speech, {:.2}x realtime per channel of speech",
        wall.elapsed(),
        cpu / minutes,
        cpu / speech_s,
        speech_s / cpu
    );
    println!(
        "  upsampling (both channels, whole call): {:.3} CPU s = {:.2} % of the engine's",
        upsample_cpu,
        upsample_cpu / cpu * 100.0
    );
}
