//! RFC 4733 telephone-event receiver: turns the packets of one event into one digit.
//!
//! A sender emits, for one key press, a first packet (marker bit set), updates every ~50 ms
//! with a growing duration, and an end packet (E bit) sent three times. All packets of one
//! event share one RTP timestamp, so the timestamp — not the marker bit, not the sequence
//! number — identifies the event here. That makes the detector indifferent to a missing
//! marker bit, duplicates, reordering within an event and sequence-number wrap.
//!
//! A digit is reported once, when its end is known: on the first end packet, or — if all
//! three end packets were lost — when a packet with a newer timestamp starts the next event,
//! or when no packet of the event arrived for `end_timeout` (the driver arms a timer at
//! [`Rfc4733Detector::poll_timeout`] and calls [`Rfc4733Detector::handle_timeout`]). The
//! event in progress is visible through [`Rfc4733Detector::in_progress`] for a caller that
//! must act before the key is released (e.g. to hold back a feature code from the far end).
//!
//! Events longer than the 16-bit duration field (about 8 s at 8 kHz) arrive as several
//! segments (RFC 4733 §2.5.1.3): a new timestamp, no marker bit, the same event code. Those
//! are merged into one digit.
//!
//! Only the first 4-byte event block of a payload is read; packing several events into one
//! packet (§2.5.1.5) is not used by desk phones.

use std::time::{Duration, Instant};

use super::{event_code_to_digit, DtmfError, DtmfEvent, DtmfSource, DtmfStart, EventQueue};
use crate::rtp::RtpView;

/// Settings for one telephone-event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc4733Config {
    /// The dynamic payload type negotiated for `telephone-event` (often 101).
    pub payload_type: u8,
    /// Its RTP clock rate from the SDP (8000 for narrowband calls, 48000 with Opus).
    pub clock_rate: u32,
    /// Silence after which an event whose end packets were all lost is reported anyway.
    /// Senders update every 50 ms, so a few hundred ms means the end was lost.
    pub end_timeout: Duration,
}

impl Default for Rfc4733Config {
    fn default() -> Self {
        Self {
            payload_type: 101,
            clock_rate: 8000,
            end_timeout: Duration::from_millis(300),
        }
    }
}

/// Counters for metrics and troubleshooting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rfc4733Stats {
    /// Telephone-event packets handled, malformed included.
    pub packets: u64,
    /// Digits reported.
    pub digits: u64,
    /// Payloads too short to hold an event block.
    pub malformed: u64,
    /// Packets of events that are not keypad digits (code > 15), ignored.
    pub non_digit: u64,
    /// Packets with a sequence number already seen in the current event.
    pub duplicates: u64,
    /// Packets older than the newest one seen in the current event.
    pub reordered: u64,
    /// Packets of an event older than the current one (late retransmissions), ignored.
    pub stale: u64,
    /// Digits reported without having received any of their end packets.
    pub end_lost: u64,
    /// Digits lost because `poll_event` was not called.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    /// Timestamp of the first segment: the digit's start.
    start_ts: u32,
    /// Timestamp of the segment packets currently carry.
    seg_ts: u32,
    code: u8,
    /// Longest duration seen in the current segment (updates may arrive out of order).
    seg_duration: u16,
    /// Sum of the durations of the segments before the current one.
    prior_duration: u64,
    max_seq: u16,
    end_seen: bool,
    reported: bool,
    last_rx: Instant,
}

/// Detector for one telephone-event stream (one SSRC of one leg).
#[derive(Debug, Clone)]
pub struct Rfc4733Detector {
    cfg: Rfc4733Config,
    current: Option<Current>,
    /// SSRC of the packets given to `handle_rtp`, to notice a new sender.
    ssrc: Option<u32>,
    queue: EventQueue,
    stats: Rfc4733Stats,
}

/// Below this segment length a new timestamp is always a new key press; above it, a segment
/// continuing exactly where the previous one ends is the same press (§2.5.1.3).
const LONG_SEGMENT: u16 = 0x8000;

/// How long after its last packet a finished event still shadows older timestamps. Late
/// retransmissions arrive within milliseconds; a sender whose timestamps jump backwards (a
/// restarted stream keeping its SSRC) must not be ignored for ever.
const STALE_WINDOW: Duration = Duration::from_secs(2);

/// Whether `a` is after `b` in RTP serial-number arithmetic (RFC 1982).
fn ts_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Rfc4733Detector {
    pub fn new(cfg: Rfc4733Config) -> Self {
        Self {
            cfg,
            current: None,
            ssrc: None,
            queue: EventQueue::new(),
            stats: Rfc4733Stats::default(),
        }
    }

    pub fn config(&self) -> &Rfc4733Config {
        &self.cfg
    }

    pub fn stats(&self) -> Rfc4733Stats {
        Rfc4733Stats {
            dropped: self.queue.dropped,
            ..self.stats
        }
    }

    /// Feeds one RTP packet. Packets of another payload type are left alone and `Ok(false)`
    /// is returned, so the caller can offer every packet of the leg. A change of SSRC means
    /// a new sender: an event in progress from the old one is reported and forgotten.
    pub fn handle_rtp(&mut self, now: Instant, pkt: &RtpView<'_>) -> Result<bool, DtmfError> {
        if pkt.payload_type() != self.cfg.payload_type {
            return Ok(false);
        }
        if self.ssrc.is_some_and(|s| s != pkt.ssrc()) {
            self.report(true);
            self.current = None;
        }
        self.ssrc = Some(pkt.ssrc());
        self.handle_packet(
            now,
            pkt.marker(),
            pkt.sequence(),
            pkt.timestamp(),
            pkt.payload(),
        )?;
        Ok(true)
    }

    /// Feeds the header fields and payload of one telephone-event packet.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        marker: bool,
        sequence: u16,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), DtmfError> {
        self.stats.packets += 1;
        let &[code, flags, d0, d1, ..] = payload else {
            self.stats.malformed += 1;
            return Err(DtmfError::PayloadTooShort(payload.len()));
        };
        if event_code_to_digit(code).is_none() {
            self.stats.non_digit += 1;
            return Ok(());
        }
        let end = flags & 0x80 != 0;
        let duration = u16::from_be_bytes([d0, d1]);

        let Some(cur) = self.current.as_mut() else {
            self.start_event(now, sequence, timestamp, code, end, duration);
            return Ok(());
        };

        if timestamp == cur.seg_ts && (code == cur.code || !cur.reported) {
            // Another packet of the event in progress: an update, a retransmitted end, a
            // duplicate or a late packet. Only the longest duration and the first end count.
            if sequence == cur.max_seq {
                self.stats.duplicates += 1;
            } else if seq_after(sequence, cur.max_seq) {
                cur.max_seq = sequence;
            } else {
                self.stats.reordered += 1;
            }
            cur.last_rx = now;
            cur.seg_duration = cur.seg_duration.max(duration);
            if end {
                cur.end_seen = true;
            }
            if end && !cur.reported {
                self.report(false);
            }
            return Ok(());
        }

        let delta = timestamp.wrapping_sub(cur.seg_ts);
        let long_finished =
            cur.reported && now.saturating_duration_since(cur.last_rx) > STALE_WINDOW;
        if timestamp == cur.seg_ts || ts_after(timestamp, cur.seg_ts) || long_finished {
            let continues = !marker
                && !cur.end_seen
                && code == cur.code
                && cur.seg_duration >= LONG_SEGMENT
                && delta >= u32::from(cur.seg_duration)
                && delta - u32::from(cur.seg_duration) <= self.cfg.clock_rate;
            if continues {
                cur.prior_duration += u64::from(delta);
                cur.seg_ts = timestamp;
                cur.seg_duration = duration;
                cur.max_seq = sequence;
                cur.last_rx = now;
                if end {
                    cur.end_seen = true;
                    if !cur.reported {
                        self.report(false);
                    }
                }
                return Ok(());
            }
            // A new key press: the previous one is over even if its end never arrived.
            if !cur.reported {
                self.report(true);
            }
            self.start_event(now, sequence, timestamp, code, end, duration);
        } else {
            self.stats.stale += 1;
        }
        Ok(())
    }

    fn start_event(
        &mut self,
        now: Instant,
        sequence: u16,
        timestamp: u32,
        code: u8,
        end: bool,
        duration: u16,
    ) {
        self.current = Some(Current {
            start_ts: timestamp,
            seg_ts: timestamp,
            code,
            seg_duration: duration,
            prior_duration: 0,
            max_seq: sequence,
            end_seen: end,
            reported: false,
            last_rx: now,
        });
        if end {
            self.report(false);
        }
    }

    /// Reports the current event, once.
    fn report(&mut self, end_lost: bool) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if cur.reported {
            return;
        }
        cur.reported = true;
        let Some(digit) = event_code_to_digit(cur.code) else {
            return;
        };
        let ticks = cur.prior_duration + u64::from(cur.seg_duration);
        let ms = ticks * 1000 / u64::from(self.cfg.clock_rate.max(1));
        self.stats.digits += 1;
        if end_lost {
            self.stats.end_lost += 1;
        }
        self.queue.push(DtmfEvent {
            digit,
            source: DtmfSource::Rfc4733,
            start: DtmfStart::RtpTimestamp(cur.start_ts),
            duration_ms: Some(u32::try_from(ms).unwrap_or(u32::MAX)),
        });
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): set while an event is in
    /// progress and its end has not been seen.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current
            .as_ref()
            .filter(|c| !c.reported)
            .map(|c| c.last_rx + self.cfg.end_timeout)
    }

    /// Reports the event in progress if no packet of it arrived for `end_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.report(true);
        }
    }

    /// Next detected digit, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.queue.pop()
    }

    /// The digit whose key is down right now (an event started and not yet reported).
    pub fn in_progress(&self) -> Option<char> {
        self.current
            .as_ref()
            .filter(|c| !c.reported)
            .and_then(|c| event_code_to_digit(c.code))
    }

    /// Reports the event in progress, e.g. when the stream stops or the call ends.
    pub fn flush(&mut self) {
        self.report(true);
    }

    /// Forgets all state, e.g. when the call is re-negotiated. Counters are kept.
    pub fn reset(&mut self) {
        self.current = None;
        self.ssrc = None;
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::write_header;

    const PT: u8 = 101;

    /// One packet as a sender would emit it.
    #[derive(Debug, Clone, Copy)]
    struct Pkt {
        marker: bool,
        seq: u16,
        ts: u32,
        code: u8,
        end: bool,
        duration: u16,
        /// Arrival time, ms after the test start.
        at_ms: u64,
    }

    /// Emits the packets of key presses like a compliant phone: first packet with marker,
    /// updates every 50 ms, end packet three times; RTP timestamps at 8 kHz.
    struct Phone {
        seq: u16,
        ts: u32,
        clock_ms: u64,
    }

    impl Phone {
        fn new(seq: u16, ts: u32) -> Self {
            Self {
                seq,
                ts,
                clock_ms: 0,
            }
        }

        fn press(&mut self, digit: char, hold_ms: u32) -> Vec<Pkt> {
            let code = crate::dtmf::digit_to_event_code(digit).unwrap();
            let mut out = Vec::new();
            let ts = self.ts;
            let mut elapsed = 0u32;
            let mut first = true;
            loop {
                let end = elapsed >= hold_ms;
                let n = if end { 3 } else { 1 };
                for _ in 0..n {
                    out.push(Pkt {
                        marker: first,
                        seq: self.seq,
                        ts,
                        code,
                        end,
                        duration: (elapsed * 8) as u16,
                        at_ms: self.clock_ms,
                    });
                    first = false;
                    self.seq = self.seq.wrapping_add(1);
                    if end {
                        self.clock_ms += 20;
                    }
                }
                if end {
                    break;
                }
                elapsed = (elapsed + 50).min(hold_ms);
                self.clock_ms += 50;
            }
            // Inter-digit gap of 200 ms, during which audio packets advance the timestamp.
            self.clock_ms += 200;
            self.ts = self.ts.wrapping_add(hold_ms * 8 + 1600);
            out
        }
    }

    fn payload(p: &Pkt) -> [u8; 4] {
        let d = p.duration.to_be_bytes();
        [p.code, if p.end { 0x80 } else { 0 } | 10, d[0], d[1]]
    }

    /// Feeds packets, firing the timer whenever it expires before the next arrival, then
    /// lets a last timer fire; returns the digits in order.
    fn run(det: &mut Rfc4733Detector, t0: Instant, pkts: &[Pkt]) -> Vec<DtmfEvent> {
        let mut out = Vec::new();
        for p in pkts {
            let now = t0 + Duration::from_millis(p.at_ms);
            if let Some(deadline) = det.poll_timeout() {
                if deadline <= now {
                    det.handle_timeout(deadline);
                }
            }
            det.handle_packet(now, p.marker, p.seq, p.ts, &payload(p))
                .unwrap();
            while let Some(ev) = det.poll_event() {
                out.push(ev);
            }
        }
        if let Some(deadline) = det.poll_timeout() {
            det.handle_timeout(deadline);
        }
        while let Some(ev) = det.poll_event() {
            out.push(ev);
        }
        out
    }

    fn digits(evs: &[DtmfEvent]) -> String {
        evs.iter().map(|e| e.digit).collect()
    }

    fn detector() -> Rfc4733Detector {
        Rfc4733Detector::new(Rfc4733Config::default())
    }

    #[test]
    fn star_two_reports_each_digit_once_despite_triple_end() {
        let mut phone = Phone::new(1000, 160_000);
        let mut pkts = phone.press('*', 120);
        pkts.extend(phone.press('2', 100));
        let mut det = detector();
        let t0 = Instant::now();
        let evs = run(&mut det, t0, &pkts);
        assert_eq!(digits(&evs), "*2");
        assert_eq!(evs[0].start, DtmfStart::RtpTimestamp(160_000));
        assert_eq!(evs[0].duration_ms, Some(120));
        assert_eq!(evs[0].source, DtmfSource::Rfc4733);
        assert_eq!(evs[1].duration_ms, Some(100));
        let st = det.stats();
        assert_eq!(st.digits, 2);
        assert_eq!(st.end_lost, 0);
        assert_eq!(st.stale, 0);
    }

    #[test]
    fn digit_is_reported_on_the_first_end_packet() {
        let mut phone = Phone::new(0, 0);
        let pkts = phone.press('5', 100);
        let first_end = pkts.iter().position(|p| p.end).unwrap();
        let mut det = detector();
        let t0 = Instant::now();
        for (i, p) in pkts.iter().enumerate() {
            let now = t0 + Duration::from_millis(p.at_ms);
            det.handle_packet(now, p.marker, p.seq, p.ts, &payload(p))
                .unwrap();
            if i < first_end {
                assert_eq!(det.in_progress(), Some('5'));
                assert_eq!(det.poll_event(), None);
            } else if i == first_end {
                assert_eq!(det.poll_event().map(|e| e.digit), Some('5'));
                assert_eq!(det.in_progress(), None);
                assert_eq!(det.poll_timeout(), None);
            } else {
                assert_eq!(det.poll_event(), None);
            }
        }
    }

    #[test]
    fn lost_end_packets_report_when_the_next_event_starts() {
        let mut phone = Phone::new(7, 42);
        let mut pkts: Vec<Pkt> = phone
            .press('*', 150)
            .into_iter()
            .filter(|p| !p.end)
            .collect();
        // Next press arrives before the end timeout would fire.
        let second = phone.press('2', 100);
        let base = pkts.last().unwrap().at_ms + 100;
        let first_at = second[0].at_ms;
        pkts.extend(second.into_iter().map(|p| Pkt {
            at_ms: base + p.at_ms - first_at,
            ..p
        }));
        let mut det = detector();
        let evs = run(&mut det, Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*2");
        // Without its end, the duration is that of the last update received.
        assert_eq!(evs[0].duration_ms, Some(100));
        assert_eq!(det.stats().end_lost, 1);
    }

    #[test]
    fn lost_end_packets_report_after_the_timeout() {
        let mut phone = Phone::new(7, 42);
        let pkts: Vec<Pkt> = phone
            .press('9', 200)
            .into_iter()
            .filter(|p| !p.end)
            .collect();
        let last_at = pkts.last().unwrap().at_ms;
        let mut det = detector();
        let t0 = Instant::now();
        for p in &pkts {
            let now = t0 + Duration::from_millis(p.at_ms);
            det.handle_packet(now, p.marker, p.seq, p.ts, &payload(p))
                .unwrap();
        }
        let deadline = det.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_millis(last_at + 300));
        det.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(det.poll_event(), None, "fired before the deadline");
        det.handle_timeout(deadline);
        let ev = det.poll_event().unwrap();
        assert_eq!(ev.digit, '9');
        assert_eq!(ev.duration_ms, Some(150));
        assert_eq!(det.poll_timeout(), None);
        det.handle_timeout(deadline + Duration::from_secs(5));
        assert_eq!(det.poll_event(), None, "reported twice");
    }

    #[test]
    fn end_packets_arriving_after_the_timeout_do_not_double_report() {
        let mut phone = Phone::new(0, 0);
        let pkts = phone.press('1', 100);
        let mut det = detector();
        let t0 = Instant::now();
        let mut evs = Vec::new();
        for p in &pkts {
            // A 1 s network stall before the end packets.
            let extra = if p.end { 1000 } else { 0 };
            let now = t0 + Duration::from_millis(p.at_ms + extra);
            if let Some(d) = det.poll_timeout() {
                if d <= now {
                    det.handle_timeout(d);
                }
            }
            det.handle_packet(now, p.marker, p.seq, p.ts, &payload(p))
                .unwrap();
            evs.extend(std::iter::from_fn(|| det.poll_event()));
        }
        assert_eq!(digits(&evs), "1");
    }

    #[test]
    fn long_press_with_many_updates_is_one_digit() {
        let mut phone = Phone::new(65_000, 1_000);
        let pkts = phone.press('*', 3000);
        assert!(pkts.len() > 60);
        let mut det = detector();
        let evs = run(&mut det, Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*");
        assert_eq!(evs[0].duration_ms, Some(3000));
    }

    #[test]
    fn press_longer_than_the_duration_field_is_one_digit() {
        // 10 s at 8 kHz = 80 000 ticks: the sender starts a second segment after 0xFFFF.
        let mut det = detector();
        let t0 = Instant::now();
        let ts0 = u32::MAX - 1000; // the second segment also wraps the timestamp
        let mut seq = 10u16;
        let mut evs = Vec::new();
        let mut feed = |det: &mut Rfc4733Detector, at: u64, m: bool, ts: u32, end: bool, d: u16| {
            let p = [10u8, if end { 0x80 } else { 0 }, (d >> 8) as u8, d as u8];
            det.handle_packet(t0 + Duration::from_millis(at), m, seq, ts, &p)
                .unwrap();
            seq = seq.wrapping_add(1);
            evs.extend(std::iter::from_fn(|| det.poll_event()));
        };
        let mut at = 0;
        let mut ticks = 0u32;
        while ticks < 0xFFFF {
            feed(&mut det, at, ticks == 0, ts0, false, ticks as u16);
            ticks = (ticks + 400).min(0xFFFF);
            at += 50;
        }
        feed(&mut det, at, false, ts0, false, 0xFFFF);
        let ts1 = ts0.wrapping_add(0xFFFF);
        let rest = 80_000 - 0xFFFF;
        let mut t = 0u32;
        while t < rest {
            at += 50;
            feed(&mut det, at, false, ts1, false, t as u16);
            t = (t + 400).min(rest);
        }
        for _ in 0..3 {
            at += 20;
            feed(&mut det, at, false, ts1, true, rest as u16);
        }
        assert_eq!(digits(&evs), "*");
        assert_eq!(evs[0].start, DtmfStart::RtpTimestamp(ts0));
        assert_eq!(evs[0].duration_ms, Some(10_000));
    }

    #[test]
    fn missing_marker_bit_gives_no_double_digit() {
        let mut phone = Phone::new(0, 8000);
        let mut pkts = phone.press('*', 100);
        pkts.extend(phone.press('2', 100));
        for p in &mut pkts {
            p.marker = false;
        }
        let evs = run(&mut detector(), Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*2");
    }

    #[test]
    fn marker_bit_on_every_packet_gives_no_double_digit() {
        let mut phone = Phone::new(0, 8000);
        let mut pkts = phone.press('*', 300);
        for p in &mut pkts {
            p.marker = true;
        }
        let evs = run(&mut detector(), Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*");
    }

    #[test]
    fn duplicates_and_reordering_within_an_event() {
        let mut phone = Phone::new(100, 8000);
        let pkts = phone.press('7', 250);
        // Swap updates pairwise, duplicate each one, and put the first packet last but one.
        let mut shuffled: Vec<Pkt> = Vec::new();
        let (first, rest) = pkts.split_first().unwrap();
        let (ends, updates): (Vec<Pkt>, Vec<Pkt>) = rest.iter().partition(|p| p.end);
        for pair in updates.chunks(2) {
            for p in pair.iter().rev() {
                shuffled.push(*p);
                shuffled.push(*p);
            }
        }
        shuffled.push(*first);
        shuffled.extend(ends);
        let mut det = detector();
        let evs = run(&mut det, Instant::now(), &shuffled);
        assert_eq!(digits(&evs), "7");
        assert_eq!(evs[0].duration_ms, Some(250));
        let st = det.stats();
        // Arrival order: u100 u100 u50 u50 u200 u200 u150 u150 first end end end.
        assert_eq!(updates.len(), 4);
        assert_eq!((st.duplicates, st.reordered), (2, 5), "{st:?}");
    }

    #[test]
    fn late_packets_of_a_finished_event_are_ignored() {
        let mut phone = Phone::new(0, 8000);
        let star = phone.press('*', 100);
        let two = phone.press('2', 100);
        let mut pkts = star.clone();
        pkts.push(two[0]);
        // A straggler update and a retransmitted end of '*' after '2' started.
        pkts.push(Pkt {
            at_ms: two[0].at_ms + 5,
            ..star[1]
        });
        pkts.push(Pkt {
            at_ms: two[0].at_ms + 6,
            ..*star.last().unwrap()
        });
        pkts.extend_from_slice(&two[1..]);
        let mut det = detector();
        let evs = run(&mut det, Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*2");
        assert_eq!(det.stats().stale, 2);
    }

    #[test]
    fn timestamps_jumping_backwards_after_a_while_start_a_new_digit() {
        let mut det = detector();
        let t0 = Instant::now();
        det.handle_packet(t0, true, 1, 900_000, &[1, 0x80, 1, 0])
            .unwrap();
        // A late straggler is stale; the same timestamps 3 s later are a restarted sender.
        let late = t0 + Duration::from_millis(30);
        det.handle_packet(late, true, 2, 100, &[2, 0x80, 1, 0])
            .unwrap();
        let restarted = t0 + Duration::from_secs(3);
        det.handle_packet(restarted, true, 3, 100, &[2, 0x80, 1, 0])
            .unwrap();
        let evs: Vec<_> = std::iter::from_fn(|| det.poll_event()).collect();
        assert_eq!(digits(&evs), "12");
        assert_eq!(det.stats().stale, 1);
    }

    #[test]
    fn new_ssrc_reports_the_old_senders_event_and_starts_afresh() {
        let mut det = detector();
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        write_header(&mut buf, true, PT, 1, 5000, 1);
        buf[12..].copy_from_slice(&[10, 0, 0, 160]);
        det.handle_rtp(t0, &RtpView::parse(&buf).unwrap()).unwrap();
        assert_eq!(det.in_progress(), Some('*'));
        // The new sender's timestamp is older: without the SSRC change it would be stale.
        write_header(&mut buf, true, PT, 9, 10, 2);
        buf[12..].copy_from_slice(&[2, 0x80, 0, 160]);
        det.handle_rtp(t0, &RtpView::parse(&buf).unwrap()).unwrap();
        let evs: Vec<_> = std::iter::from_fn(|| det.poll_event()).collect();
        assert_eq!(digits(&evs), "*2");
        assert_eq!(det.stats().end_lost, 1);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut phone = Phone::new(65_530, u32::MAX - 500);
        let mut pkts = phone.press('*', 200);
        pkts.extend(phone.press('2', 200));
        assert!(pkts.iter().any(|p| p.seq < 100) && pkts.iter().any(|p| p.seq > 65_000));
        assert!(pkts.iter().any(|p| p.ts < 5000));
        let mut det = detector();
        let evs = run(&mut det, Instant::now(), &pkts);
        assert_eq!(digits(&evs), "*2");
        assert_eq!(det.stats().reordered, 0);
        assert_eq!(det.stats().stale, 0);
    }

    #[test]
    fn same_digit_twice_is_two_digits() {
        let mut phone = Phone::new(0, 0);
        let mut pkts = phone.press('2', 100);
        pkts.extend(phone.press('2', 100));
        let evs = run(&mut detector(), Instant::now(), &pkts);
        assert_eq!(digits(&evs), "22");
    }

    #[test]
    fn short_event_whose_first_packet_is_an_end() {
        let mut det = detector();
        let t0 = Instant::now();
        det.handle_packet(t0, true, 1, 800, &[1, 0x80, 0, 160])
            .unwrap();
        det.handle_packet(t0, false, 2, 800, &[1, 0x80, 0, 160])
            .unwrap();
        assert_eq!(det.poll_event().map(|e| e.digit), Some('1'));
        assert_eq!(det.poll_event(), None);
    }

    #[test]
    fn malformed_and_non_digit_payloads_are_counted() {
        let mut det = detector();
        let t0 = Instant::now();
        for len in 0..4 {
            let p = [11u8; 4];
            assert_eq!(
                det.handle_packet(t0, true, 1, 0, &p[..len]),
                Err(DtmfError::PayloadTooShort(len))
            );
        }
        // Flash (16) and a tone (70) are not digits and do not disturb a digit in progress.
        det.handle_packet(t0, true, 2, 800, &[3, 0, 0, 0]).unwrap();
        det.handle_packet(t0, true, 3, 1600, &[16, 0x80, 0, 80])
            .unwrap();
        det.handle_packet(t0, true, 4, 2400, &[70, 0, 0, 80])
            .unwrap();
        det.handle_packet(t0, false, 5, 800, &[3, 0x80, 1, 64])
            .unwrap();
        // Extra bytes after the first block are ignored.
        det.handle_packet(t0, true, 6, 9000, &[4, 0x80, 1, 64, 9, 9, 9])
            .unwrap();
        let evs: Vec<_> = std::iter::from_fn(|| det.poll_event()).collect();
        assert_eq!(digits(&evs), "34");
        assert_eq!(evs[0].duration_ms, Some(40));
        let st = det.stats();
        assert_eq!(st.malformed, 4);
        assert_eq!(st.non_digit, 2);
        assert_eq!(st.packets, 9);
    }

    #[test]
    fn rtp_packets_of_other_payload_types_are_left_alone() {
        let mut det = detector();
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        write_header(&mut buf, true, 0, 1, 0, 7);
        let audio = RtpView::parse(&buf).unwrap();
        assert_eq!(det.handle_rtp(t0, &audio), Ok(false));
        write_header(&mut buf, true, PT, 2, 0, 7);
        buf[12..].copy_from_slice(&[11, 0x8a, 0, 240]);
        let ev = RtpView::parse(&buf).unwrap();
        assert_eq!(det.handle_rtp(t0, &ev), Ok(true));
        let got = det.poll_event().unwrap();
        assert_eq!(got.digit, '#');
        assert_eq!(got.duration_ms, Some(30));
        assert_eq!(det.stats().packets, 1);
    }

    #[test]
    fn clock_rate_scales_the_duration() {
        let mut det = Rfc4733Detector::new(Rfc4733Config {
            clock_rate: 48_000,
            ..Rfc4733Config::default()
        });
        let d = 4800u16.to_be_bytes();
        det.handle_packet(Instant::now(), true, 1, 0, &[0, 0x80, d[0], d[1]])
            .unwrap();
        assert_eq!(det.poll_event().unwrap().duration_ms, Some(100));
    }

    #[test]
    fn flush_reports_an_unfinished_event_and_reset_forgets_it() {
        let mut det = detector();
        let t0 = Instant::now();
        det.handle_packet(t0, true, 1, 0, &[5, 0, 0, 0]).unwrap();
        det.flush();
        assert_eq!(det.poll_event().map(|e| e.digit), Some('5'));
        det.handle_packet(t0, true, 2, 900, &[6, 0, 0, 0]).unwrap();
        det.reset();
        assert_eq!(det.in_progress(), None);
        det.flush();
        assert_eq!(det.poll_event(), None);
    }
}
