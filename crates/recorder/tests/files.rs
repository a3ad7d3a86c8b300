//! Files on disk: WAV and MP3 output, crash repair, unwritable directories, failing disks.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::*;
use media::codec::Codec;
use recorder::{
    create_sink, repair_spool, sidecar_path, transcode_wav_to_mp3, Channel, Format, Mp3Sink,
    RecorderError, Recording, RecordingMetadata, Sink, SinkOptions, WavSink,
};

/// `seconds` of a 400 Hz tone left and a 1000 Hz tone right, in 20 ms chunks.
fn write_tones(sink: &mut dyn Sink, seconds: f64) {
    let frames = (seconds * 8000.0) as usize;
    let mut chunk = Vec::with_capacity(320);
    for start in (0..frames).step_by(160) {
        chunk.clear();
        for i in start..(start + 160).min(frames) {
            let t = i as f64 / 8000.0;
            let w = 2.0 * std::f64::consts::PI * t;
            chunk.push((8000.0 * (400.0 * w).sin()) as i16);
            chunk.push((8000.0 * (1000.0 * w).sin()) as i16);
        }
        sink.write(&chunk).unwrap();
    }
}

fn wav_frames(path: &Path) -> u32 {
    let reader = hound::WavReader::open(path).expect("valid wav");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    reader.duration()
}

#[test]
fn wav_header_is_valid_after_each_flush_and_kill_loses_under_a_second() {
    let spool = tempfile::tempdir().unwrap();
    let path = spool.path().join("contact-1.wav");
    let mut sink = WavSink::create(&path, SinkOptions::default()).unwrap();
    let meta = RecordingMetadata {
        contact_id: "contact-1".into(),
        start_unix_ms: 1_700_000_000_000,
        format: Format::Wav,
        ..Default::default()
    };
    meta.write_to(&sidecar_path(&path)).unwrap();
    write_tones(&mut sink, 5.0);
    // What `kill -9` leaves on disk is exactly what has been written to the file so far.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("contact-1.wav");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(sidecar_path(&path), sidecar_path(&copy)).unwrap();
    // The header is already valid (the last flush patched it) and holds ≥ 4 s.
    let before_repair = wav_frames(&copy);
    assert!(before_repair >= 4 * 8000, "{before_repair}");
    // A torn last write: half a frame more on disk.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();

    let repaired = repair_spool(crashed.path()).unwrap();
    assert_eq!(repaired.len(), 1);
    let r = &repaired[0];
    assert_eq!(r.format, Format::Wav);
    let frames = wav_frames(&copy);
    assert!((4 * 8000..=5 * 8000).contains(&frames), "{frames}");
    assert_eq!(
        std::fs::metadata(&copy).unwrap().len(),
        44 + 4 * frames as u64
    );
    assert_eq!(r.duration_ms, frames as u64 / 8);
    let m = RecordingMetadata::read_from(&sidecar_path(&copy)).unwrap();
    assert!(m.interrupted && m.repaired && m.complete);
    assert_eq!(m.contact_id, "contact-1");
    assert_eq!(m.end_unix_ms, Some(1_700_000_000_000 + r.duration_ms));
    // A second start-up finds nothing left to repair.
    assert!(repair_spool(crashed.path()).unwrap().is_empty());

    // The original, finished normally, has everything.
    assert_eq!(sink.finish().unwrap(), 40_000);
    assert_eq!(wav_frames(&path), 40_000);
}

#[test]
fn repair_handles_cut_headers_and_mp3_and_closes_open_segments() {
    let spool = tempfile::tempdir().unwrap();
    // A WAV cut inside its header.
    let cut = spool.path().join("cut.wav");
    std::fs::write(&cut, &recorder::sink::wav_header(0)[..20]).unwrap();
    // A WAV whose header still says 0 bytes (crashed before the first flush) with data after.
    let stale = spool.path().join("stale.wav");
    let mut bytes = recorder::sink::wav_header(0).to_vec();
    bytes.extend(std::iter::repeat_n(7u8, 4 * 8000 + 2));
    std::fs::write(&stale, &bytes).unwrap();
    // An MP3 cut mid-stream, with a sidecar holding an open segment.
    let mp3 = spool.path().join("call.mp3");
    let mut sink = Mp3Sink::create(&mp3, SinkOptions::default()).unwrap();
    write_tones(&mut sink, 3.0);
    sink.flush().unwrap();
    // One instant for both: a second `Instant::now()` may already be a frame later, and a
    // command timed after the play position stays pending until audio reaches it.
    let t0 = std::time::Instant::now();
    let mut rec = Recording::new(t0, Default::default());
    rec.handle_command(
        t0,
        recorder::Command::Start {
            reason: "route".into(),
        },
    );
    let _ = rec.poll_output();
    let mut meta = RecordingMetadata {
        contact_id: "call".into(),
        format: Format::Mp3,
        start_unix_ms: 1000,
        ..Default::default()
    };
    meta.update_from(&rec);
    assert_eq!(meta.segments.len(), 1);
    assert_eq!(meta.segments[0].end_frame, None);
    meta.write_to(&sidecar_path(&mp3)).unwrap();
    // Something that is not a recording.
    std::fs::write(spool.path().join("notes.txt"), "x").unwrap();
    std::fs::write(
        spool.path().join("junk.wav"),
        "not a wav at all, longer than 44 bytes....",
    )
    .unwrap();

    let repaired = repair_spool(spool.path()).unwrap();
    let names: Vec<_> = repaired
        .iter()
        .map(|r| r.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["call.mp3", "cut.wav", "stale.wav"]);
    assert_eq!(wav_frames(&cut), 0);
    assert_eq!(wav_frames(&stale), 8000);
    let m = &repaired[0].metadata;
    assert!(m.interrupted && m.repaired);
    let seg = &m.segments[0];
    assert_eq!(seg.end_reason.as_deref(), Some("interrupted"));
    // 3 s at 32 kbit/s is about 12 000 bytes: the estimate is within LAME's buffering.
    let end = seg.end_frame.unwrap();
    assert!((2 * 8000..=3 * 8000 + 800).contains(&end), "{end}");
    assert!(mp3_frames_are_valid(&std::fs::read(&mp3).unwrap()) > 30);
}

/// Walks MPEG-2.5 layer III frame headers; returns how many frames were found in sequence.
fn mp3_frames_are_valid(data: &[u8]) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    while pos + 4 <= data.len() {
        let h = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        assert_eq!(h >> 21, 0x7ff, "frame sync at {pos}");
        assert_eq!((h >> 19) & 3, 0, "MPEG 2.5");
        assert_eq!((h >> 17) & 3, 1, "layer III");
        assert_eq!((h >> 12) & 0xf, 4, "32 kbit/s (MPEG 2.5 index 4)");
        assert_eq!((h >> 10) & 3, 2, "8000 Hz");
        let padding = ((h >> 9) & 1) as usize;
        pos += 72 * 32_000 / 8000 + padding;
        frames += 1;
    }
    frames
}

#[test]
fn mp3_is_32kbps_and_tones_decode_on_the_right_channels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.mp3");
    // A real call through the recording: tones at known times on each leg.
    let c_bursts = vec![burst(1.0, 2.0, 400.0), burst(4.0, 5.0, 400.0)];
    let a_bursts = vec![burst(2.5, 3.5, 1000.0), burst(6.0, 6.5, 1000.0)];
    let legs = vec![
        Leg::new(Channel::Customer, Codec::Pcma, 8, c_bursts.clone(), 8.0),
        Leg::new(Channel::Agent, Codec::Pcmu, 0, a_bursts.clone(), 8.0),
    ];
    let net = Network::rough();
    let mut call = Call::new(legs, net, 8.0);
    let mut sink = create_sink(Format::Mp3, &path, SinkOptions::default()).unwrap();
    call.run(sink.as_mut());
    assert_eq!(sink.finish().unwrap(), 64_000);
    let data = std::fs::read(&path).unwrap();
    let frames = mp3_frames_are_valid(&data);
    // 576 samples per MPEG-2.5 frame: 8 s is ~111 frames, plus LAME's delay and flush.
    assert!((111..=116).contains(&frames), "{frames} frames");
    assert!(
        (31_000..=34_000).contains(&data.len()),
        "{} bytes",
        data.len()
    );

    let pcm = decode_mp3(&data);
    // LAME and the decoder add a fixed delay (encoder delay + decoder delay, 1105 samples
    // at most for MPEG-2.5); find it from the first burst and check the rest against it.
    let mut a = Analyzer::new();
    a.push(&pcm);
    let c = a.runs(0, 1);
    let g = a.runs(1, 2);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(g.len(), 2, "{g:?}");
    let codec_delay = c[0].0 - (c_bursts[0].start + net.mean_delay());
    assert!((0.0..0.2).contains(&codec_delay), "{codec_delay}");
    assert_bursts(&c, &c_bursts, net.mean_delay() + codec_delay, 0.03);
    assert_bursts(&g, &a_bursts, net.mean_delay() + codec_delay, 0.03);
    assert!(a.runs(0, 2).is_empty() && a.runs(1, 1).is_empty());
}

fn decode_mp3(data: &[u8]) -> Vec<i16> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let mss = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(data.to_vec())),
        Default::default(),
    );
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .expect("mp3 probe");
    let mut format = probed.format;
    let track = format.default_track().expect("track").clone();
    assert_eq!(track.codec_params.sample_rate, Some(8000));
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .expect("decoder");
    let mut out = Vec::new();
    while let Ok(packet) = format.next_packet() {
        let decoded = decoder.decode(&packet).expect("decodable frame");
        assert_eq!(decoded.spec().channels.count(), 2);
        let mut buf = SampleBuffer::<i16>::new(decoded.capacity() as u64, *decoded.spec());
        buf.copy_interleaved_ref(decoded);
        out.extend_from_slice(buf.samples());
    }
    out
}

#[test]
fn unwritable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the spool directory should be: fails even for root.
    let not_a_dir = dir.path().join("spool");
    std::fs::write(&not_a_dir, b"").unwrap();
    for format in [Format::Wav, Format::Mp3] {
        let err = create_sink(format, &not_a_dir.join("c.wav"), SinkOptions::default())
            .err()
            .expect("creating under a file fails");
        assert!(
            matches!(err, RecorderError::Io { op: "create", .. }),
            "{err}"
        );
    }
    let err = RecordingMetadata::default()
        .write_to(&not_a_dir.join("c.json"))
        .unwrap_err();
    assert!(matches!(err, RecorderError::Io { .. }), "{err}");
    assert!(repair_spool(&not_a_dir.join("x")).is_err());
}

/// A writer standing in for a full disk after `room` bytes.
struct FullDisk {
    room: usize,
    written: Vec<u8>,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.len() + buf.len() > self.room {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for FullDisk {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        // Header patches overwrite in place: model them as no-ops that succeed.
        Ok(match pos {
            SeekFrom::Start(p) => p,
            _ => self.written.len() as u64,
        })
    }
}

#[test]
fn full_disk_stops_the_sink_with_a_typed_error() {
    let mut wav = WavSink::new(
        FullDisk {
            room: 100_000,
            written: Vec::new(),
        },
        SinkOptions::default(),
    )
    .unwrap();
    let chunk = vec![0i16; 2 * 160];
    let mut failed = None;
    for i in 0..2000 {
        if let Err(e) = wav.write(&chunk) {
            failed = Some((i, e));
            break;
        }
    }
    let (at, err) = failed.expect("disk fills up");
    assert!(at > 50, "failed at chunk {at}");
    match err {
        RecorderError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull)
        }
        other => panic!("{other}"),
    }
    assert!(matches!(wav.write(&chunk), Err(RecorderError::SinkClosed)));
    assert!(matches!(wav.finish(), Err(RecorderError::SinkClosed)));

    let mut mp3 = Mp3Sink::new(
        FullDisk {
            room: 5_000,
            written: Vec::new(),
        },
        SinkOptions::default(),
    )
    .unwrap();
    let mut result = Ok(());
    for _ in 0..2000 {
        result = mp3.write(&chunk);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(RecorderError::Io { .. })));
    assert!(matches!(mp3.write(&chunk), Err(RecorderError::SinkClosed)));
}

#[test]
fn metadata_round_trips_with_call_facts_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let legs = vec![
        Leg::new(Channel::Customer, Codec::Pcmu, 0, vec![], 3.0),
        Leg::new(Channel::Agent, Codec::G722, 9, vec![], 3.0),
    ];
    let mut call = Call::new(legs, Network::rough(), 3.0);
    let mut a = Analyzer::new();
    let mut rec = call.run(&mut a);
    rec.note_tap_drops(3);
    let mut meta = RecordingMetadata {
        contact_id: "k".into(),
        call_id_customer: Some("a@x".into()),
        call_id_agent: Some("b@y".into()),
        from: "sip:+331@x".into(),
        to: "sip:100@y".into(),
        route: "support".into(),
        direction: "inbound".into(),
        station: Some("100".into()),
        start_unix_ms: 5_000,
        format: Format::Wav,
        ..Default::default()
    };
    meta.update_from(&rec);
    meta.complete = true;
    assert_eq!(meta.duration_ms, 3000);
    assert_eq!(meta.end_unix_ms, Some(8000));
    assert_eq!(meta.codecs_customer, vec!["PCMU"]);
    assert_eq!(meta.codecs_agent, vec!["G722"]);
    assert_eq!(meta.tap_drops, 3);
    assert!(meta.customer.received > 100 && meta.agent.received > 100);
    let path = dir.path().join("k.json");
    meta.write_to(&path).unwrap();
    assert_eq!(RecordingMetadata::read_from(&path).unwrap(), meta);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"format\": \"wav\"") && text.contains("\"kind\": \"full\""));
}

#[test]
fn spooled_wav_transcodes_to_mp3_with_tones_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("c.wav");
    let mp3 = dir.path().join("c.mp3");
    let mut sink = WavSink::create(&wav, SinkOptions::default()).unwrap();
    write_tones(&mut sink, 4.0);
    sink.finish().unwrap();
    assert_eq!(
        transcode_wav_to_mp3(&wav, &mp3, SinkOptions::default()).unwrap(),
        32_000
    );
    let data = std::fs::read(&mp3).unwrap();
    assert!(mp3_frames_are_valid(&data) >= 55);
    let pcm = decode_mp3(&data);
    let mut a = Analyzer::new();
    a.push(&pcm);
    assert!(a.loud_fraction(0, 0.2, 3.8) > 0.95 && a.runs(0, 1).len() == 1);
    assert!(a.runs(1, 2).len() == 1 && a.runs(1, 1).is_empty());
    // Not a WAV: a typed error.
    std::fs::write(&wav, b"garbage").unwrap();
    assert!(matches!(
        transcode_wav_to_mp3(&wav, &mp3, SinkOptions::default()),
        Err(RecorderError::NotWav { .. })
    ));
}
