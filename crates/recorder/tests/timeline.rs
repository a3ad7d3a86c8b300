//! Synthetic calls through the recorder: where does each leg's audio land, on which channel,
//! and how long is the file?

mod common;

use common::*;
use media::codec::{Codec, PayloadMap};
use recorder::{
    Channel, Command, Event, ReanchorCause, Recording, RecordingConfig, SegmentKind, Sink,
    SinkOptions, WavSink,
};

const CUSTOMER: usize = 0;
const AGENT: usize = 1;
const TONE_C: u8 = 1; // 400 Hz
const TONE_A: u8 = 2; // 1000 Hz
const TOL: f64 = 0.020;

fn wav_analysis(path: &std::path::Path) -> (Analyzer, u32) {
    let mut reader = hound::WavReader::open(path).expect("readable wav");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let mut a = Analyzer::new();
    a.push(&samples);
    (a, reader.duration())
}

#[test]
fn tones_land_on_their_channels_through_jitter_loss_and_duplicates() {
    let c_bursts = vec![burst(1.0, 2.0, 400.0), burst(3.0, 3.5, 400.0)];
    let a_bursts = vec![burst(1.5, 2.5, 1000.0), burst(4.0, 4.3, 1000.0)];
    let legs = vec![
        Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts.clone(), 6.0),
        Leg::new(Channel::Agent, Codec::Pcma, 8, a_bursts.clone(), 6.0),
    ];
    let net = Network::rough();
    let mut call = Call::new(legs, net, 6.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.wav");
    let mut sink = WavSink::create(&path, SinkOptions::default()).unwrap();
    let rec = call.run(&mut sink);
    assert_eq!(sink.finish().unwrap(), 48_000);

    let (a, frames) = wav_analysis(&path);
    assert_eq!(frames, 48_000, "file length is the call length");
    assert_bursts(&a.runs(CUSTOMER, TONE_C), &c_bursts, net.mean_delay(), TOL);
    assert_bursts(&a.runs(AGENT, TONE_A), &a_bursts, net.mean_delay(), TOL);
    assert!(
        a.runs(CUSTOMER, TONE_A).is_empty(),
        "agent audio on channel 1"
    );
    assert!(
        a.runs(AGENT, TONE_C).is_empty(),
        "customer audio on channel 2"
    );

    for ch in [Channel::Customer, Channel::Agent] {
        let s = rec.stats(ch);
        assert!(s.received > 280, "{s:?}");
        assert!(s.lost > 0 && s.lost < 20, "{s:?}");
        assert!(s.duplicated > 0 && s.duplicated < 20, "{s:?}");
        assert_eq!(s.late_dropped + s.early_dropped + s.malformed, 0, "{s:?}");
    }
}

#[test]
fn exact_counters_for_a_scripted_stream() {
    let t0 = std::time::Instant::now();
    let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
    let mut rec = Recording::new(t0, RecordingConfig::default());
    rec.handle_command(
        t0,
        Command::Start {
            reason: "test".into(),
        },
    );
    let mut a = Analyzer::new();
    let mut events = Vec::new();
    let packet = |i: u16| {
        let mut p = vec![0u8; 172];
        media::rtp::write_header(&mut p, false, 0, 100 + i, 8000 + 160 * i as u32, 7);
        // Loud square-ish signal: µ-law 0x80 is +32124, 0x00 is -32124.
        for (j, b) in p[12..].iter_mut().enumerate() {
            *b = if (j / 4) % 2 == 0 { 0x80 } else { 0x00 };
        }
        p
    };
    // 0..50 with 10 duplicated, 20/21 swapped, 30 lost.
    let mut order: Vec<u16> = (0..50).filter(|&i| i != 30).collect();
    order.swap(20, 21);
    for &i in &order {
        let arrive = 20 * (i as u64 + 1) + if i == 21 { 15 } else { 0 };
        rec.handle_timeout(ms(arrive));
        rec.handle_packet(ms(arrive), Channel::Customer, &packet(i));
        if i == 10 {
            rec.handle_packet(ms(arrive + 1), Channel::Customer, &packet(i));
        }
        drain(&mut rec, &mut a, &mut events);
    }
    rec.finish(ms(1100), "end");
    drain(&mut rec, &mut a, &mut events);
    let s = rec.stats(Channel::Customer);
    assert_eq!(s.received, 50);
    assert_eq!(s.duplicated, 1);
    assert_eq!(s.lost, 1);
    assert_eq!(s.late_dropped, 0);
    assert_eq!(a.frames, 8800, "1.1 s of call");
    // Audio covers 0..1000 ms except the 20 ms of packet 30 (600..620 ms).
    assert!(a.loud_fraction(CUSTOMER, 0.005, 0.595) > 0.99);
    assert_eq!(a.loud_fraction(CUSTOMER, 0.6025, 0.6175), 0.0);
    assert!(a.loud_fraction(CUSTOMER, 0.625, 0.995) > 0.99);
    assert_eq!(a.loud_fraction(AGENT, 0.0, 1.1), 0.0);
    assert!(matches!(
        events.last(),
        Some(Event::Finished { frames: 8800 })
    ));
}

#[test]
fn audio_from_before_the_recording_began_is_not_counted_as_late() {
    let t0 = std::time::Instant::now();
    let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
    // Packets stamped before the recording's time zero, as a driver may deliver when a call's
    // first packets reach it ahead of the call itself.
    let early = t0 - std::time::Duration::from_millis(5);
    let mut rec = Recording::new(t0, RecordingConfig::default());
    let packet = |i: u16| {
        let mut p = vec![0x80u8; 172];
        media::rtp::write_header(&mut p, false, 0, i, 160 * i as u32, 7);
        p
    };
    rec.handle_packet(early, Channel::Customer, &packet(0));
    for i in 1..10u16 {
        rec.handle_timeout(ms(20 * u64::from(i)));
        rec.handle_packet(ms(20 * u64::from(i)), Channel::Customer, &packet(i));
    }
    let s = rec.stats(Channel::Customer);
    assert_eq!(s.received, 10);
    assert_eq!(s.before_start, 1, "{s:?}");
    assert_eq!(s.late_dropped, 0, "{s:?}");
}

#[test]
fn ssrc_change_timestamp_jump_and_wrap_keep_alignment() {
    let c_bursts = vec![
        burst(1.0, 1.5, 400.0),
        burst(2.5, 3.0, 400.0),
        burst(4.5, 5.0, 400.0),
    ];
    let a_bursts = vec![burst(1.2, 1.4, 1000.0), burst(4.6, 4.8, 1000.0)];
    let mut customer = Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts.clone(), 6.0);
    // Sequence and timestamp wrap within the first second.
    customer.seq = 65_500;
    customer.ts = u32::MAX - 3000;
    customer.changes = vec![
        (
            2.0,
            Change::NewSsrc {
                ssrc: 0xdead_beef,
                seq: 7,
                ts: 123_456_789,
            },
        ),
        (4.0, Change::TimestampJump(1_000_000)),
    ];
    let mut agent = Leg::new(Channel::Agent, Codec::Pcma, 8, a_bursts.clone(), 6.0);
    agent.changes = vec![(3.0, Change::TimestampJump(u32::MAX - 80_000))];
    let net = Network {
        jitter: 0.030,
        ..Network::rough()
    };
    let mut call = Call::new(vec![customer, agent], net, 6.0);
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    assert_eq!(a.frames, 48_000);
    assert_bursts(&a.runs(CUSTOMER, TONE_C), &c_bursts, net.mean_delay(), TOL);
    assert_bursts(&a.runs(AGENT, TONE_A), &a_bursts, net.mean_delay(), TOL);
    let causes: Vec<_> = call
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reanchored { channel, cause } => Some((*channel, *cause)),
            _ => None,
        })
        .collect();
    assert!(causes.contains(&(Channel::Customer, ReanchorCause::SsrcChange)));
    assert!(causes.contains(&(Channel::Customer, ReanchorCause::TimestampJump)));
    assert!(causes.contains(&(Channel::Agent, ReanchorCause::TimestampJump)));
    assert!(rec.stats(Channel::Customer).lost < 15);
}

#[test]
fn hold_and_one_way_audio_become_silence_of_the_right_length() {
    // Agent goes on hold (stops sending) 2..4 s; both sides inactive 4..5 s; timestamps
    // resume where they stopped. Tones play throughout in real time.
    let c_bursts = vec![burst(0.5, 6.5, 400.0)];
    let a_bursts = vec![burst(0.5, 6.5, 1000.0)];
    let mut customer = Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts, 7.0);
    customer.changes = vec![(4.0, Change::Pause), (5.0, Change::Resume)];
    let mut agent = Leg::new(Channel::Agent, Codec::Pcmu, 0, a_bursts, 7.0);
    agent.changes = vec![(2.0, Change::Pause), (5.0, Change::Resume)];
    let net = Network::clean();
    let mut call = Call::new(vec![customer, agent], net, 7.0);
    let mut a = Analyzer::new();
    call.run(&mut a);
    assert_eq!(a.frames, 56_000, "file length is the call length");
    let d = net.mean_delay();
    let c_expected = [burst(0.5, 4.0, 0.0), burst(5.0, 6.5, 0.0)];
    let a_expected = [burst(0.5, 2.0, 0.0), burst(5.0, 6.5, 0.0)];
    assert_bursts(&a.runs(CUSTOMER, TONE_C), &c_expected, d, TOL);
    assert_bursts(&a.runs(AGENT, TONE_A), &a_expected, d, TOL);
    assert!(call.events.iter().any(|e| matches!(
        e,
        Event::Reanchored {
            channel: Channel::Agent,
            cause: ReanchorCause::Resumed
        }
    )));
}

#[test]
fn codec_changes_mid_call_and_g722_on_one_leg() {
    let c_bursts = vec![burst(1.0, 2.0, 400.0), burst(3.5, 4.5, 400.0)];
    let a_bursts = vec![burst(1.5, 2.5, 1000.0), burst(3.0, 3.2, 1000.0)];
    let mut customer = Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts.clone(), 5.0);
    customer.changes = vec![(
        3.0,
        Change::Codec {
            codec: Codec::Pcma,
            pt: 8,
        },
    )];
    let mut agent = Leg::new(Channel::Agent, Codec::G722, 9, a_bursts.clone(), 5.0);
    agent.changes = vec![(
        2.7,
        Change::Codec {
            codec: Codec::G722,
            pt: 109,
        },
    )];
    let net = Network::rough();
    let mut call = Call::new(vec![customer, agent], net, 5.0);
    // The agent leg's re-INVITE moves G.722 to a dynamic payload type the recording is never
    // told about: those packets are unsupported, recorded as silence, warned about once.
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    assert_eq!(a.frames, 40_000);
    assert_bursts(&a.runs(CUSTOMER, TONE_C), &c_bursts, net.mean_delay(), TOL);
    assert_bursts(
        &a.runs(AGENT, TONE_A),
        &a_bursts[..1],
        net.mean_delay(),
        TOL,
    );
    assert!(rec.stats(Channel::Agent).unsupported_codec > 50);
    assert_eq!(
        call.events
            .iter()
            .filter(|e| matches!(e, Event::UnsupportedCodec { .. }))
            .count(),
        1,
        "warned once"
    );
    assert_eq!(rec.codecs_seen(Channel::Customer), vec!["PCMU", "PCMA"]);
    assert_eq!(rec.codecs_seen(Channel::Agent), vec!["G722"]);

    // The same call with the new payload type announced to the recording when the re-INVITE
    // completes records the second burst too.
    let mut customer = Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts.clone(), 5.0);
    customer.changes = vec![(
        3.0,
        Change::Codec {
            codec: Codec::Pcma,
            pt: 8,
        },
    )];
    let mut agent = Leg::new(Channel::Agent, Codec::G722, 9, a_bursts.clone(), 5.0);
    agent.changes = vec![(
        2.7,
        Change::Codec {
            codec: Codec::G722,
            pt: 109,
        },
    )];
    let mut call = Call::new(vec![customer, agent], net, 5.0);
    let mut map = PayloadMap::with_static();
    map.insert(109, Codec::G722);
    call.codecs = vec![(2.6, Channel::Agent, map)];
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    assert_bursts(&a.runs(AGENT, TONE_A), &a_bursts, net.mean_delay(), TOL);
    assert_eq!(rec.stats(Channel::Agent).unsupported_codec, 0);
}

#[test]
fn one_hour_with_opposite_clock_skew_stays_aligned() {
    // Simultaneous bursts on both legs early, midway and at the end of an hour; the customer's
    // clock runs 0.1 % fast, the agent's 0.1 % slow.
    let times = [10.0, 1800.0, 3590.0];
    let c_bursts: Vec<_> = times.iter().map(|&t| burst(t, t + 0.5, 400.0)).collect();
    let a_bursts: Vec<_> = times.iter().map(|&t| burst(t, t + 0.5, 1000.0)).collect();
    let mut customer = Leg::new(Channel::Customer, Codec::Pcmu, 0, c_bursts.clone(), 3600.0);
    customer.skew = 0.001;
    let mut agent = Leg::new(Channel::Agent, Codec::Pcma, 8, a_bursts.clone(), 3600.0);
    agent.skew = -0.001;
    let net = Network {
        jitter: 0.020,
        loss: 0.01,
        duplicate: 0.0,
        delay: 0.010,
    };
    let mut call = Call::new(vec![customer, agent], net, 3600.0);
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    assert_eq!(a.frames, 3600 * 8000, "file length is the call length");
    let c = a.runs(CUSTOMER, TONE_C);
    let g = a.runs(AGENT, TONE_A);
    assert_bursts(&c, &c_bursts, net.mean_delay(), TOL);
    assert_bursts(&g, &a_bursts, net.mean_delay(), TOL);
    for (x, y) in c.iter().zip(&g) {
        assert!((x.0 - y.0).abs() <= TOL, "channels apart: {x:?} vs {y:?}");
    }
    // 0.1 % of an hour is 3.6 s = 28 800 samples, absorbed by slewing in opposite directions.
    let cs = rec.stats(Channel::Customer).slewed_samples;
    let as_ = rec.stats(Channel::Agent).slewed_samples;
    assert!((-29_500..=-28_000).contains(&cs), "customer slewed {cs}");
    assert!((28_000..=29_500).contains(&as_), "agent slewed {as_}");
}

#[test]
fn segments_pause_agent_only_and_stop() {
    let all = vec![burst(0.0, 9.0, 400.0)];
    let all_a = vec![burst(0.0, 9.0, 1000.0)];
    let legs = vec![
        Leg::new(Channel::Customer, Codec::Pcmu, 0, all, 9.0),
        Leg::new(Channel::Agent, Codec::Pcmu, 0, all_a, 9.0),
    ];
    let mut call = Call::new(legs, Network::clean(), 9.0);
    let cmd = |t: f64, c: Command| (t, c);
    let r = |s: &str| s.to_string();
    call.commands = vec![
        cmd(0.0, Command::Start { reason: r("ivr") }),
        cmd(
            1.0,
            Command::Pause {
                reason: r("card number"),
            },
        ),
        cmd(
            2.0,
            Command::Resume {
                reason: r("card done"),
            },
        ),
        cmd(
            3.0,
            Command::AgentOnly {
                reason: r("no consent"),
            },
        ),
        cmd(
            4.0,
            Command::BothChannels {
                reason: r("consent"),
            },
        ),
        cmd(
            5.0,
            Command::Stop {
                reason: r("transfer"),
            },
        ),
        cmd(
            5.5,
            Command::Resume {
                reason: r("ignored"),
            },
        ),
        cmd(7.0, Command::Start { reason: r("agent") }),
    ];
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    // 9 s of call minus 2 s stopped.
    assert_eq!(a.frames, 7 * 8000);
    let loud = |ch, from: f64, to: f64| a.loud_fraction(ch, from + 0.02, to - 0.02);
    assert!(loud(CUSTOMER, 0.0, 1.0) > 0.95 && loud(AGENT, 0.0, 1.0) > 0.95);
    assert_eq!(
        loud(CUSTOMER, 1.0, 2.0) + loud(AGENT, 1.0, 2.0),
        0.0,
        "paused"
    );
    assert!(loud(CUSTOMER, 2.0, 3.0) > 0.95 && loud(AGENT, 2.0, 3.0) > 0.95);
    assert_eq!(loud(CUSTOMER, 3.0, 4.0), 0.0, "agent only");
    assert!(loud(AGENT, 3.0, 4.0) > 0.95);
    assert!(loud(CUSTOMER, 4.0, 7.0) > 0.95 && loud(AGENT, 4.0, 7.0) > 0.95);

    let segs = rec.segments();
    let kinds: Vec<_> = segs.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            SegmentKind::Full,
            SegmentKind::Paused,
            SegmentKind::Full,
            SegmentKind::AgentOnly,
            SegmentKind::Full,
            SegmentKind::Full,
        ]
    );
    let bounds: Vec<_> = segs
        .iter()
        .map(|s| {
            (
                s.start_frame,
                s.end_frame.unwrap(),
                s.call_start_ms,
                s.call_end_ms.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bounds,
        vec![
            (0, 8000, 0, 1000),
            (8000, 16000, 1000, 2000),
            (16000, 24000, 2000, 3000),
            (24000, 32000, 3000, 4000),
            (32000, 40000, 4000, 5000),
            (40000, 56000, 7000, 9000),
        ]
    );
    assert_eq!(segs[1].start_reason, "card number");
    assert_eq!(segs[4].end_reason.as_deref(), Some("transfer"));
    assert_eq!(segs[5].start_reason, "agent");
    assert_eq!(segs[5].end_reason.as_deref(), Some("call ended"));
    assert!(call.events.iter().any(|e| matches!(
        e,
        Event::CommandIgnored {
            command: recorder::CommandKind::Resume
        }
    )));
}

#[test]
fn telephone_events_stay_out_of_the_audio_and_do_not_change_the_stream() {
    let t0 = std::time::Instant::now();
    let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
    let mut rec = Recording::new(t0, RecordingConfig::default());
    let mut map = PayloadMap::with_static();
    map.insert_rtpmap(101, "telephone-event", 8000);
    rec.set_codecs(Channel::Agent, &map);
    rec.handle_command(t0, Command::Start { reason: "t".into() });
    let mut a = Analyzer::new();
    let mut events = Vec::new();
    for i in 0..100u16 {
        let now = ms(20 * i as u64 + 20);
        rec.handle_timeout(now);
        let mut p = vec![0u8; 172];
        if (40..50).contains(&i) {
            // A DTMF event in place of audio, from an SSRC of its own.
            media::rtp::write_header(&mut p[..16], i == 40, 101, i, 160 * 40, 99);
            p.truncate(16);
        } else {
            media::rtp::write_header(&mut p, false, 0, i, 160 * i as u32, 7);
            for (j, b) in p[12..].iter_mut().enumerate() {
                *b = if (j / 4) % 2 == 0 { 0x80 } else { 0x00 };
            }
        }
        rec.handle_packet(now, Channel::Agent, &p);
        drain(&mut rec, &mut a, &mut events);
    }
    rec.finish(ms(2100), "end");
    drain(&mut rec, &mut a, &mut events);
    assert!(!events.iter().any(|e| matches!(e, Event::Reanchored { .. })));
    assert!(a.loud_fraction(AGENT, 0.005, 0.795) > 0.99);
    assert_eq!(
        a.loud_fraction(AGENT, 0.8025, 0.9975),
        0.0,
        "event span is silent"
    );
    assert!(a.loud_fraction(AGENT, 1.005, 1.995) > 0.99);
    assert_eq!(
        rec.codecs_seen(Channel::Agent),
        vec!["PCMU", "telephone-event"]
    );
    let s = rec.stats(Channel::Agent);
    assert_eq!((s.received, s.lost), (100, 10));
}

#[test]
fn discard_buffered_drops_the_held_audio_even_of_a_running_segment() {
    let legs = vec![
        Leg::new(
            Channel::Customer,
            Codec::Pcmu,
            0,
            vec![burst(0.0, 4.0, 400.0)],
            4.0,
        ),
        Leg::new(
            Channel::Agent,
            Codec::Pcmu,
            0,
            vec![burst(0.0, 4.0, 1000.0)],
            4.0,
        ),
    ];
    let mut call = Call::new(legs, Network::clean(), 4.0);
    let r = |s: &str| s.to_string();
    // The start is effective at 1.0 s, but 100 ms later, while that audio is still inside the
    // jitter window, the caller answers the consent question: nothing before 1.1 s is written.
    call.commands = vec![
        (1.0, Command::Start { reason: r("ivr") }),
        (
            1.1,
            Command::DiscardBuffered {
                reason: r("consent"),
            },
        ),
    ];
    let mut a = Analyzer::new();
    let rec = call.run(&mut a);
    // 2.9 s, give or take the harness's 20 ms tick (without the discard it would be 3.0 s).
    assert!(
        (23_040..=23_360).contains(&a.frames),
        "{} frames written",
        a.frames
    );
    assert_eq!(rec.segments().len(), 1);
}
