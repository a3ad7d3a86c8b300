//! The offline engine on synthetic speech: `espeak-ng` speaks known sentences (resampled to
//! 8 kHz 16-bit by `sox`, as a call would carry them), placed at known times on each channel
//! of a stereo WAV, two of them overlapping; the recording is transcribed through
//! [`transcript::transcribe_recording`] and a [`WorkerPool`] as the node runs it.
//!
//! What must hold:
//! * every key word is found on its speaker's channel, within 1 s of the time it was said,
//!   and not on the other channel at that time;
//! * the word error rate over all sentences stays within [`WER_BOUND`].
//!
//! # The word error bound
//! Measured on this set: 30 % WER (16 errors in 53 words) with Debian's 5prealpha
//! PocketSphinx and `en-us` model; every key word found, word times within 30 ms of where
//! the speech was placed. The bound is 45 %. Why so high: the model is trained on
//! 16 kHz read speech; here the audio is band-limited to 4 kHz (half of the model's filter
//! bank sees nothing) and espeak's Klatt voices are formant synthesis, whose spectra are
//! smoother than a human voice; small function words ("a", "by", "the") are the usual
//! casualties, content words survive. The bound leaves room for a different but equally
//! good outcome (another libpocketsphinx build, another espeak-ng version) while failing a
//! broken pipeline: a wrong sample rate, unfiltered upsampling images, a mislabelled channel
//! or shifted word times all push the WER far above 60 %.
//!
//! Needs `espeak-ng`, `sox`, `libpocketsphinx-dev` and `pocketsphinx-en-us` (scripts/test.sh
//! installs them). Without the tools the test fails under CI=true and is skipped otherwise.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use transcript::pocketsphinx::{installed_model, PocketSphinx, PocketSphinxConfig};
use transcript::{transcribe_recording, Speaker, Transcript, WorkerPool};

const WER_BOUND: f64 = 0.45;

fn tools_present() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let present = ok("espeak-ng") && ok("sox") && installed_model().is_some();
    if !present {
        let msg = "espeak-ng, sox and pocketsphinx-en-us are required: \
                   apt-get install -y espeak-ng sox libpocketsphinx-dev pocketsphinx-en-us";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
    }
    present
}

/// A sentence at 8 kHz and where its speech starts and ends (samples).
struct Clip {
    samples: Vec<i16>,
    speech: (usize, usize),
}

fn speak(dir: &Path, name: &str, voice: &str, text: &str) -> Clip {
    let raw = dir.join(format!("{name}.22k.wav"));
    let narrow = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng {voice} {text:?}");
    // -R: sox dithers with a random seed otherwise, and the test would not hear the same
    // audio twice.
    let status = Command::new("sox")
        .arg("-R")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&narrow)
        .status()
        .expect("sox runs");
    assert!(status.success());
    let mut reader = hound::WavReader::open(&narrow).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let loud = |s: &i16| s.unsigned_abs() >= 328;
    let first = samples.iter().position(loud).expect("speech");
    let last = samples.iter().rposition(loud).unwrap() + 1;
    Clip {
        samples,
        speech: (first, last),
    }
}

/// A sentence placed on the recording.
struct Said {
    speaker: Speaker,
    text: &'static str,
    keywords: &'static [&'static str],
    span_ms: (u64, u64),
}

const CUSTOMER_VOICE: &str = "en-us+klatt4";
const AGENT_VOICE: &str = "en-us+klatt3";

/// The conversation: (speaker, start ms of its speech, sentence, key words). The customer's
/// last sentence starts while the agent is still talking.
const SCRIPT: &[(Speaker, u64, &str, &[&str])] = &[
    (
        Speaker::Agent,
        1000,
        "Thank you for calling customer service",
        &["customer", "service"],
    ),
    (
        Speaker::Customer,
        4500,
        "I would like to check the status of my order",
        &["order"],
    ),
    (
        Speaker::Agent,
        8500,
        "Of course can you give me the order number please",
        &["number"],
    ),
    (
        Speaker::Customer,
        13_000,
        "The amount seems much higher than usual this month",
        &["higher", "usual"],
    ),
    (
        Speaker::Agent,
        17_500,
        "I will send you a copy by email right away",
        &["email", "right", "away"],
    ),
    (
        Speaker::Customer,
        19_000,
        "That would be great thank you very much",
        &["would", "great"],
    ),
];

fn record(dir: &Path) -> (std::path::PathBuf, Vec<Said>) {
    let mut channels: [Vec<i16>; 2] = Default::default();
    let mut said = Vec::new();
    for (i, &(speaker, start_ms, text, keywords)) in SCRIPT.iter().enumerate() {
        let (ch, voice) = match speaker {
            Speaker::Customer => (0, CUSTOMER_VOICE),
            Speaker::Agent => (1, AGENT_VOICE),
        };
        let clip = speak(dir, &format!("s{i}"), voice, text);
        let offset = (start_ms * 8) as usize - clip.speech.0;
        let c = &mut channels[ch];
        if c.len() < offset + clip.samples.len() {
            c.resize(offset + clip.samples.len(), 0);
        }
        for (o, s) in c[offset..].iter_mut().zip(&clip.samples) {
            *o = o.saturating_add(*s);
        }
        let len_ms = ((clip.speech.1 - clip.speech.0) / 8) as u64;
        said.push(Said {
            speaker,
            text,
            keywords,
            span_ms: (start_ms, start_ms + len_ms),
        });
    }
    let frames = channels.iter().map(Vec::len).max().unwrap() + 8000;
    let path = dir.join("call.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..frames {
        for c in &channels {
            // A −65 dBFS noise floor: a real line is never digitally silent.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let noise = ((rng >> 58) as i16) - 32;
            w.write_sample(c.get(i).copied().unwrap_or(0).saturating_add(noise))
                .unwrap();
        }
    }
    w.finalize().unwrap();
    (path, said)
}

/// Word-level edit distance.
fn edits(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut row = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[hypothesis.len()]
}

fn words_near(t: &Transcript, speaker: Speaker, (s, e): (u64, u64), slack: u64) -> Vec<String> {
    t.phrases
        .iter()
        .filter(|p| p.speaker == speaker)
        .flat_map(|p| &p.words)
        .filter(|w| w.start_ms + slack >= s && w.start_ms <= e + slack)
        .map(|w| w.text.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketsphinx_finds_the_key_words_on_the_right_channel_in_time() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, said) = record(dir.path());
    let engine = WorkerPool::new(PocketSphinx::new(PocketSphinxConfig::default()).unwrap(), 1);
    let t = transcribe_recording(&path, &engine, "en-US", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(t.engine, "pocketsphinx");
    for p in &t.phrases {
        eprintln!(
            "{:?} {:>6}..{:<6} {}",
            p.speaker, p.start_ms, p.end_ms, p.text
        );
    }
    let (mut errors, mut total) = (0, 0);
    for s in &said {
        let other = match s.speaker {
            Speaker::Customer => Speaker::Agent,
            Speaker::Agent => Speaker::Customer,
        };
        let heard = words_near(&t, s.speaker, s.span_ms, 1000);
        for k in s.keywords {
            assert!(
                heard.iter().any(|w| w == k),
                "{k:?} ({:?} at {:?}) not heard there: {heard:?}",
                s.speaker,
                s.span_ms
            );
            assert!(
                !words_near(&t, other, s.span_ms, 0).iter().any(|w| w == k),
                "{k:?} heard on the wrong channel"
            );
        }
        let reference: Vec<String> = s.text.split_whitespace().map(str::to_lowercase).collect();
        let hypothesis = words_near(&t, s.speaker, s.span_ms, 300);
        let e = edits(&reference, &hypothesis);
        eprintln!(
            "{:?}: {e} errors in {:?} → {hypothesis:?}",
            s.speaker, s.text
        );
        errors += e;
        total += reference.len();
    }
    let wer = errors as f64 / total as f64;
    eprintln!("word error rate {errors}/{total} = {:.1} %", wer * 100.0);
    assert!(wer <= WER_BOUND, "WER {wer:.3} above {WER_BOUND}");
    // Phrases carry their words and confidences, in order.
    for p in &t.phrases {
        assert!(!p.words.is_empty());
        assert!(p.words.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
        assert!(p.words.iter().all(|w| w.confidence.is_some()));
    }
    // Talking speed comes out in the range of speech (espeak at 150 wpm, pauses excluded).
    for who in [Speaker::Customer, Speaker::Agent] {
        let wpm = t.words_per_minute(who).unwrap();
        assert!((80.0..260.0).contains(&wpm), "{who:?}: {wpm}");
    }
}

#[test]
fn other_languages_are_refused_by_the_english_model() {
    if installed_model().is_none() {
        return;
    }
    use transcript::{BlockingEngine, TranscriptError};
    let ps = PocketSphinx::new(PocketSphinxConfig::default()).unwrap();
    let err = ps
        .transcribe_blocking(
            &[0; 8000],
            "de",
            std::time::Instant::now() + Duration::from_secs(5),
        )
        .unwrap_err();
    assert_eq!(err, TranscriptError::Language("de".into()));
    // Silence is no phrase at all.
    let none = ps
        .transcribe_blocking(
            &[0; 16_000],
            "en",
            std::time::Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
    assert!(none.is_empty());
    // An expired deadline is a timeout, not a hang.
    let mut speechy = vec![0i16; 16_000];
    for (i, s) in speechy.iter_mut().enumerate().skip(2000).take(8000) {
        *s = ((i as f64 * 0.25).sin() * 9000.0) as i16;
    }
    let err = ps
        .transcribe_blocking(&speechy, "en", std::time::Instant::now())
        .unwrap_err();
    assert!(matches!(err, TranscriptError::Timeout(_)), "{err:?}");
}
