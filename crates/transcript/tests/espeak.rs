//! Offline transcription of synthetic speech (see the module docs of the real test).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use transcript::pocketsphinx::{PocketSphinx, PocketSphinxConfig};
use transcript::BlockingEngine;

fn speak(dir: &Path, name: &str, voice: &str, text: &str, rate: u32, speed: &str) -> Vec<i16> {
    let raw = dir.join(format!("{name}.22k.wav"));
    let narrow = dir.join(format!("{name}.wav"));
    assert!(Command::new("espeak-ng").args(["-v", voice, "-s", speed, "-w"]).arg(&raw).arg(text).status().unwrap().success());
    assert!(Command::new("sox").arg(&raw).args(["-r", &rate.to_string(), "-c", "1", "-b", "16", "-e", "signed-integer"]).arg(&narrow).status().unwrap().success());
    let mut r = hound::WavReader::open(&narrow).unwrap();
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

#[test]
fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PocketSphinxConfig::default();
    if let Ok(a) = std::env::var("PS_ARGS") {
        let v: Vec<&str> = a.split_whitespace().collect();
        for p in v.chunks(2) { cfg.args.push((p[0].into(), p[1].into())); }
    }
    let rate: u32 = std::env::var("RATE").ok().and_then(|r| r.parse().ok()).unwrap_or(8000);
    let speed = std::env::var("SPEED").unwrap_or("150".into());
    let ps = PocketSphinx::new(cfg).unwrap();
    let vo = std::env::var("VOICE").ok(); for (voice, text) in [
        ("en-us", "I would like to check the status of my order"),
        ("en-us", "Thank you for calling customer service"),
        ("en-us", "I would like to check the status of my order"),
        ("en-us+f3", "Of course can you give me the order number please"),
        ("en-us", "The amount seems much higher than usual this month"),
        ("en-us+f3", "I will send you a copy by email right away"),
    ] {
        let voice = vo.as_deref().unwrap_or(voice);
        let mut s = vec![0i16; 8000];
        s.extend(speak(dir.path(), "x", voice, text, rate, &speed));
        s.extend(vec![0i16; 8000]);
        let t0 = Instant::now();
        let p = ps.transcribe_blocking(&s, "en", Instant::now() + Duration::from_secs(60)).unwrap();
        eprintln!("{text:?} ({:.1}s audio, {:?})", s.len() as f64 / 8000.0, t0.elapsed());
        for ph in p {
            eprintln!("  {}..{} {:?} {:?}", ph.start_ms, ph.end_ms, ph.text, ph.words.iter().map(|w| (w.start_ms, w.confidence)).collect::<Vec<_>>());
        }
    }
}
