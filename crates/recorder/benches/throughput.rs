//! Recorder throughput per core: decode + timeline + mix + encode, for WAV (to memory) and
//! MP3, as a realtime factor (seconds of call recorded per second of CPU); and memory per
//! active recording. Run with `cargo bench -p recorder`.

use std::io::Cursor;
use std::time::{Duration, Instant};

use media::codec::{encode_pcma, Codec, PayloadMap};
use media::rtp::write_header;
use recorder::{
    Channel, Command, Mp3Sink, Output, Recording, RecordingConfig, Sink, SinkOptions, WavSink,
};

const CALL_SECONDS: u64 = 60;

/// A call's packets in arrival order: both legs, 20 ms, tones with pauses.
fn call_packets(codec: Codec) -> Vec<(u64, Channel, Vec<u8>)> {
    let mut g722 = [
        audio_codec::g722::G722Encoder::new(),
        audio_codec::g722::G722Encoder::new(),
    ];
    let mut out = Vec::new();
    for i in 0..(CALL_SECONDS * 50) {
        for (leg, (channel, freq)) in [(Channel::Customer, 400.0), (Channel::Agent, 1000.0)]
            .into_iter()
            .enumerate()
        {
            let mut p = vec![0u8; 12];
            let pt = if codec == Codec::G722 { 9 } else { 8 };
            write_header(
                &mut p,
                false,
                pt,
                i as u16,
                (i * 160) as u32,
                leg as u32 + 1,
            );
            let speaking = (i / 100) % 2 == leg as u64;
            let level = |t: f64| {
                if speaking {
                    (6000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                } else {
                    0
                }
            };
            if codec == Codec::G722 {
                use audio_codec::Encoder as _;
                let pcm: Vec<i16> = (0..320)
                    .map(|j| level((i * 320 + j) as f64 / 16000.0))
                    .collect();
                p.extend_from_slice(&g722[leg].encode(&pcm));
            } else {
                p.extend((0..160).map(|j| encode_pcma(level((i * 160 + j) as f64 / 8000.0))));
            }
            // Arrival 20 ms after the packet's audio ends, agent 3 ms after the customer.
            out.push((20 * i + 20 + 3 * leg as u64, channel, p));
        }
    }
    out
}

/// Feeds a whole call through a recording into `sink`; returns the frames written.
fn record(packets: &[(u64, Channel, Vec<u8>)], sink: &mut dyn Sink) -> u64 {
    let t0 = Instant::now();
    let mut rec = Recording::new(t0, RecordingConfig::default());
    let mut map = PayloadMap::with_static();
    map.insert(9, Codec::G722);
    rec.set_codecs(Channel::Customer, &map);
    rec.set_codecs(Channel::Agent, &map);
    rec.handle_command(
        t0,
        Command::Start {
            reason: "bench".into(),
        },
    );
    let mut next_timeout = t0;
    for (ms, channel, p) in packets {
        let now = t0 + Duration::from_millis(*ms);
        if now >= next_timeout {
            rec.handle_timeout(now);
        }
        rec.handle_packet(now, *channel, p);
        while let Some(out) = rec.poll_output() {
            match out {
                Output::Audio(a) => sink.write(a).expect("write"),
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    next_timeout = t;
                    break;
                }
            }
        }
    }
    rec.finish(t0 + Duration::from_secs(CALL_SECONDS), "end");
    while let Some(out) = rec.poll_output() {
        if let Output::Audio(a) = out {
            sink.write(a).expect("write");
        }
    }
    sink.finish().expect("finish")
}

/// Runs `f` repeatedly for at least `budget`; returns the realtime factor.
fn realtime_factor(budget: Duration, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < budget {
        frames += f();
    }
    let audio = frames as f64 / 8000.0;
    audio / start.elapsed().as_secs_f64()
}

/// A file that forgets what is written, so memory figures count buffers, not file content.
struct NullFile;

impl std::io::Write for NullFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for NullFile {
    fn seek(&mut self, _: std::io::SeekFrom) -> std::io::Result<u64> {
        Ok(0)
    }
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    // `cargo test --all-targets` runs benches unoptimized and without `--bench`: their figures
    // would read as failures against the targets. Say so, and measure nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: not measuring (run `cargo bench -p recorder --bench throughput`)");
        return;
    }
    let budget = Duration::from_secs(3);
    let pcma = call_packets(Codec::Pcma);
    let g722 = call_packets(Codec::G722);
    let mut wav_bytes = Vec::with_capacity(CALL_SECONDS as usize * 32_000 + 1024);

    let wav = realtime_factor(budget, || {
        wav_bytes.clear();
        let mut sink =
            WavSink::new(Cursor::new(&mut wav_bytes), SinkOptions::default()).expect("wav");
        record(&pcma, &mut sink)
    });
    let wav_g722 = realtime_factor(budget, || {
        wav_bytes.clear();
        let mut sink =
            WavSink::new(Cursor::new(&mut wav_bytes), SinkOptions::default()).expect("wav");
        record(&g722, &mut sink)
    });
    let mp3 = realtime_factor(budget, || {
        let mut sink = Mp3Sink::new(std::io::sink(), SinkOptions::default()).expect("mp3");
        record(&pcma, &mut sink)
    });

    println!("recorder throughput, one core, {CALL_SECONDS} s stereo calls:");
    println!("  PCMA  -> WAV (memory): {wav:>10.0} x realtime (target >= 20000)");
    println!("  G.722 -> WAV (memory): {wav_g722:>10.0} x realtime");
    println!("  PCMA  -> MP3 32 kbit/s: {mp3:>9.0} x realtime (target >= 600)");

    let rec = Recording::new(Instant::now(), RecordingConfig::default());
    println!(
        "memory: Recording struct {} B, with buffers {} B",
        std::mem::size_of::<Recording>(),
        rec.memory_bytes()
    );
    // Resident memory of many live recordings with their sinks, LAME's C heap included.
    const N: usize = 200;
    for (name, mp3) in [("WAV", false), ("MP3", true)] {
        let before = rss_bytes();
        let mut live: Vec<(Recording, Box<dyn Sink>)> = (0..N)
            .map(|_| {
                let rec = Recording::new(Instant::now(), RecordingConfig::default());
                let sink: Box<dyn Sink> = if mp3 {
                    Box::new(Mp3Sink::new(std::io::sink(), SinkOptions::default()).expect("mp3"))
                } else {
                    Box::new(WavSink::new(NullFile, SinkOptions::default()).expect("wav"))
                };
                (rec, sink)
            })
            .collect();
        // Touch every buffer as a running call would (one second of audio each).
        for (rec, sink) in &mut live {
            let t0 = Instant::now();
            rec.handle_command(t0, Command::Start { reason: "m".into() });
            for (ms, ch, p) in pcma.iter().take(100) {
                let now = t0 + Duration::from_millis(*ms);
                rec.handle_packet(now, *ch, p);
                rec.handle_timeout(now);
                loop {
                    match rec.poll_output() {
                        Some(Output::Audio(a)) => sink.write(a).expect("write"),
                        Some(Output::Event(_)) => {}
                        _ => break,
                    }
                }
            }
        }
        if let (Some(b), Some(a)) = (before, rss_bytes()) {
            println!(
                "memory: {N} live recordings + {name} sink: {} KiB resident each",
                a.saturating_sub(b) / N / 1024
            );
        }
        drop(live);
    }
}
