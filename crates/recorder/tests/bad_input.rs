//! Hostile and broken input: never a panic, never a file longer than the call.

mod common;

use std::time::{Duration, Instant};

use common::*;
use media::rtp::write_header;
use recorder::{Channel, Command, Output, Recording, RecordingConfig};

fn start(rec: &mut Recording, t: Instant) {
    rec.handle_command(
        t,
        Command::Start {
            reason: "test".into(),
        },
    );
}

fn drain_count(rec: &mut Recording) -> u64 {
    let mut frames = 0;
    while let Some(out) = rec.poll_output() {
        match out {
            Output::Audio(a) => frames += a.len() as u64 / 2,
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
    }
    frames
}

#[test]
fn garbage_floods_and_absurd_timestamps_are_counted_and_clamped() {
    let t0 = Instant::now();
    let mut rec = Recording::new(t0, RecordingConfig::default());
    start(&mut rec, t0);
    let mut rng = Rng(42);
    let mut frames = 0;
    let mut pkt = vec![0u8; 172];
    let mut seq = 0u16;
    let mut ts = 0u32;
    // 10 s: every 20 ms one good customer packet, one garbage datagram, one packet with a
    // random timestamp on the agent channel; at 5 s a flood of 20 000 packets in 1 ms whose
    // timestamps run 20 000 packets ahead.
    for step in 0..500u64 {
        let now = t0 + Duration::from_millis(20 * step + 20);
        rec.handle_timeout(now);
        write_header(&mut pkt, false, 0, seq, ts, 1);
        rec.handle_packet(now, Channel::Customer, &pkt);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        let len = (rng.next() % 200) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        rec.handle_packet(now, Channel::Customer, &garbage);
        write_header(&mut pkt, false, 8, step as u16, rng.next() as u32, 2);
        rec.handle_packet(now, Channel::Agent, &pkt);
        if step == 250 {
            for _ in 0..20_000 {
                write_header(&mut pkt, false, 0, seq, ts, 1);
                rec.handle_packet(now, Channel::Customer, &pkt);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        }
        frames += drain_count(&mut rec);
        assert!(
            frames <= (20 * step + 20) * 8,
            "ahead of the clock at step {step}"
        );
    }
    rec.finish(t0 + Duration::from_secs(10), "end");
    frames += drain_count(&mut rec);
    assert_eq!(frames, 80_000, "exactly the call length");
    assert_eq!(rec.frames(), 80_000);
    let c = rec.stats(Channel::Customer);
    assert!(c.malformed > 200, "{c:?}");
    assert!(c.early_dropped > 15_000, "{c:?}");
    let a = rec.stats(Channel::Agent);
    assert_eq!(a.received, 500);
}

#[test]
fn wrong_payload_types_are_silence_with_one_warning_per_type() {
    let t0 = Instant::now();
    let mut rec = Recording::new(t0, RecordingConfig::default());
    start(&mut rec, t0);
    let mut pkt = vec![0x80u8; 172];
    let mut warnings = Vec::new();
    let mut loud = false;
    for i in 0..100u16 {
        let now = t0 + Duration::from_millis(20 * i as u64 + 20);
        // Payload types 96 and 97 were never negotiated; 13 is comfort noise.
        let pt = [96, 97, 13][i as usize % 3];
        write_header(&mut pkt, false, pt, i, 160 * i as u32, 5);
        rec.handle_timeout(now);
        rec.handle_packet(now, Channel::Agent, &pkt);
        while let Some(out) = rec.poll_output() {
            match out {
                Output::Audio(a) => loud |= a.iter().any(|&s| s != 0),
                Output::Event(e) => warnings.push(e),
                Output::Timeout(_) => break,
            }
        }
    }
    assert!(!loud, "nothing decodable was sent");
    let unsupported: Vec<_> = warnings
        .iter()
        .filter_map(|e| match e {
            recorder::Event::UnsupportedCodec {
                channel,
                payload_type,
            } => Some((*channel, *payload_type)),
            _ => None,
        })
        .collect();
    assert_eq!(
        unsupported,
        vec![(Channel::Agent, 96), (Channel::Agent, 97)]
    );
    let s = rec.stats(Channel::Agent);
    assert_eq!(s.unsupported_codec, 67);
    assert_eq!(s.received, 100);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary packets (random header fields, random payloads, random gaps) and commands:
    /// no panic, and exactly the recorded span of the call is written.
    #[test]
    fn arbitrary_input_never_outgrows_the_call(
        ops in proptest::collection::vec(
            (0u64..200, 0u8..8, proptest::num::u16::ANY, proptest::num::u32::ANY,
             proptest::num::u32::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..400)),
            1..120)
    ) {
        let t0 = Instant::now();
        let mut rec = Recording::new(t0, RecordingConfig::default());
        start(&mut rec, t0);
        let mut elapsed = 0u64;
        let mut frames = 0u64;
        for (gap_ms, kind, seq, ts, ssrc, payload) in ops {
            elapsed += gap_ms;
            let now = t0 + Duration::from_millis(elapsed);
            let channel = if kind & 1 == 0 { Channel::Customer } else { Channel::Agent };
            match kind >> 1 {
                0 => rec.handle_packet(now, channel, &payload),
                1 => rec.handle_command(now, Command::Pause { reason: String::new() }),
                2 => rec.handle_command(now, Command::Resume { reason: String::new() }),
                _ => {
                    let mut pkt = vec![0u8; 12];
                    write_header(&mut pkt, false, [0u8, 8, 9, 13][(ssrc & 3) as usize], seq, ts, ssrc % 3);
                    pkt.extend_from_slice(&payload);
                    rec.handle_packet(now, channel, &pkt);
                }
            }
            rec.handle_timeout(now);
            frames += drain_count(&mut rec);
            proptest::prop_assert!(frames <= elapsed * 8);
        }
        rec.finish(t0 + Duration::from_millis(elapsed), "end");
        frames += drain_count(&mut rec);
        proptest::prop_assert_eq!(frames, elapsed * 8);
    }
}
