//! Renumbering an RTP stream from which a relay removes packets, and the RTCP that describes it.
//!
//! When tapir keeps the agent's feature-code digits (`*2`) from the customer, the RFC 4733
//! packets that carried them are not forwarded. Forwarded as they are, the packets that follow
//! would leave a hole in the sequence numbers, and the customer's phone would count the removed
//! packets as lost in its RTCP receiver reports (and show it to its user). Media relays that
//! strip DTMF close the hole instead: every packet after a removed one is sent with its
//! sequence number lowered by the number of packets removed before it (RFC 3550 §5.1 leaves the
//! numbering to the sender; a translator that removes packets is a sender for this purpose,
//! RFC 3550 §7.1), and the sender reports' packet and octet counts are lowered by what was
//! removed, so that both views of the stream agree.
//!
//! [`Renumber`] is the state of one direction: it is told which packets are removed and answers
//! the sequence number each forwarded packet goes out with. Sequence numbers are extended to 64
//! bits as a receiver does (RFC 3550 Appendix A.1), so wraparound and long calls need no special
//! case. A late packet (reordered in the network) older than a removed one gets the number it
//! would have had in order, so the forwarded numbering stays one-to-one; to know that, the most
//! recent removals are kept in a fixed ring ([`WINDOW`]), and a packet older than every
//! remembered removal when older removals have been forgotten cannot be numbered and is
//! dropped. Nothing allocates.
//!
//! [`correct_sender_reports`] and [`correct_receiver_reports`] edit compound RTCP packets in
//! place, for the two directions of the same stream.

/// How many removals are remembered for numbering late packets. A key press is 8 to 20
/// packets; a packet that arrives after more than this many later removals is seconds late.
pub const WINDOW: usize = 64;

/// What has been removed from a stream so far: what its RTCP must be corrected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// The stream (its SSRC) the counts apply to.
    pub ssrc: u32,
    /// Packets removed (every one, as the sender counted them in its reports).
    pub packets: u32,
    /// Payload octets of those packets (RFC 3550 §6.4.1: header and padding excluded).
    pub octets: u32,
    /// How far the sequence numbers of new packets are lowered (removals that closed a hole).
    pub seq_offset: u32,
}

/// The numbering state of one forwarded RTP direction (see the module documentation).
#[derive(Debug, Clone)]
pub struct Renumber {
    ssrc: Option<u32>,
    /// Highest extended sequence number seen (forwarded or removed).
    highest: u64,
    /// Extended sequence numbers of the most recent counted removals, in increasing order
    /// (a ring: `head` is the oldest of `len`).
    recent: [u64; WINDOW],
    head: usize,
    len: usize,
    /// Newest removal that fell out of `recent`: older packets cannot be numbered any more.
    forgotten: Option<u64>,
    removed: Removed,
}

impl Default for Renumber {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a stream's extended sequence numbers start: far from zero, so a packet older than the
/// first one seen does not underflow.
const BASE: u64 = 1 << 32;

impl Renumber {
    pub fn new() -> Self {
        Self {
            ssrc: None,
            highest: 0,
            recent: [0; WINDOW],
            head: 0,
            len: 0,
            forgotten: None,
            removed: Removed::default(),
        }
    }

    /// What has been removed from the current stream so far.
    pub fn removed(&self) -> Removed {
        self.removed
    }

    /// The packet `seq` of `ssrc` is removed from the stream; `payload_octets` is its payload
    /// length (for the sender reports' octet count).
    pub fn remove(&mut self, ssrc: u32, seq: u16, payload_octets: usize) {
        let ext = self.extend(ssrc, seq);
        self.removed.packets = self.removed.packets.wrapping_add(1);
        self.removed.octets = self.removed.octets.wrapping_add(payload_octets as u32);
        if ext <= self.highest {
            // A duplicate of a removed packet has its number closed already. A removal that
            // arrives late, after a newer packet went out with the number it would free, must
            // not close its hole: that would give two packets one number. The hole stays (the
            // customer counts one lost packet).
            return;
        }
        if self.len == WINDOW {
            self.forgotten = Some(self.recent[self.head]);
            self.head = (self.head + 1) % WINDOW;
            self.len -= 1;
        }
        self.recent[(self.head + self.len) % WINDOW] = ext;
        self.len += 1;
        self.highest = ext;
        self.removed.seq_offset = self.removed.seq_offset.wrapping_add(1);
    }

    /// The sequence number to forward the packet `seq` of `ssrc` with, or `None` when it cannot
    /// be numbered consistently (it is older than removals forgotten already, or it carries the
    /// number of a removed packet) and must be dropped.
    pub fn forward(&mut self, ssrc: u32, seq: u16) -> Option<u16> {
        let ext = self.extend(ssrc, seq);
        if ext > self.highest {
            self.highest = ext;
        }
        if self.len == 0 && self.forgotten.is_none() {
            // Nothing removed from this stream: the common case costs a compare.
            return Some(seq);
        }
        if self.len > 0 && ext > self.newest() {
            return Some(lower(seq, self.removed.seq_offset));
        }
        if self.forgotten.is_some_and(|f| ext <= f) {
            return None;
        }
        // Late: lowered only by the removals older than itself.
        let mut newer = 0u32;
        for i in (0..self.len).rev() {
            let r = self.recent[(self.head + i) % WINDOW];
            if r == ext {
                return None;
            }
            if r < ext {
                break;
            }
            newer += 1;
        }
        Some(lower(seq, self.removed.seq_offset.wrapping_sub(newer)))
    }

    fn newest(&self) -> u64 {
        self.recent[(self.head + self.len - 1) % WINDOW]
    }

    /// The extended sequence number of `seq`: the one nearest the highest seen. A new SSRC is a
    /// new stream (a new source after a transfer or re-INVITE) and starts afresh.
    fn extend(&mut self, ssrc: u32, seq: u16) -> u64 {
        if self.ssrc != Some(ssrc) {
            *self = Self::new();
            self.ssrc = Some(ssrc);
            self.removed.ssrc = ssrc;
            // Just below the first packet, which is thus the newest so far.
            self.highest = BASE + u64::from(seq) - 1;
            return self.highest + 1;
        }
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        self.highest.wrapping_add_signed(i64::from(delta))
    }
}

fn lower(seq: u16, by: u32) -> u16 {
    seq.wrapping_sub(by as u16)
}

/// Writes the sequence number of the RTP packet in `buf` (at least 4 bytes: the caller has
/// validated the header).
pub fn set_sequence(buf: &mut [u8], seq: u16) {
    if let Some(b) = buf.get_mut(2..4) {
        b.copy_from_slice(&seq.to_be_bytes());
    }
}

/// RTCP packet types (RFC 3550 §12.1).
const SR: u8 = 200;
const RR: u8 = 201;
/// Length of a report block (RFC 3550 §6.4.1).
const BLOCK: usize = 24;

/// Lowers the packet and octet counts of every sender report of `removed.ssrc` in the compound
/// RTCP packet `buf`, which goes from the stream's sender toward its receiver. Anything that is
/// not well-formed RTCP is left as it is.
pub fn correct_sender_reports(buf: &mut [u8], removed: &Removed) {
    if removed.packets == 0 {
        return;
    }
    for_each_packet(buf, |pt, _count, p| {
        if pt == SR && p.len() >= 28 && be32(&p[4..8]) == removed.ssrc {
            let packets = be32(&p[20..24]).wrapping_sub(removed.packets);
            let octets = be32(&p[24..28]).wrapping_sub(removed.octets);
            p[20..24].copy_from_slice(&packets.to_be_bytes());
            p[24..28].copy_from_slice(&octets.to_be_bytes());
        }
    });
}

/// Raises the extended highest sequence number of every report block about `removed.ssrc` in
/// the compound RTCP packet `buf`, which goes from the stream's receiver back to its sender:
/// the receiver saw the renumbered stream, the sender knows its own numbers. Loss and jitter
/// need no change (the receiver's loss is real loss once the holes are closed).
pub fn correct_receiver_reports(buf: &mut [u8], removed: &Removed) {
    if removed.seq_offset == 0 {
        return;
    }
    for_each_packet(buf, |pt, count, p| {
        let first = match pt {
            SR => 28,
            RR => 8,
            _ => return,
        };
        for i in 0..count {
            let at = first + i * BLOCK;
            let Some(block) = p.get_mut(at..at + BLOCK) else {
                return;
            };
            if be32(&block[0..4]) == removed.ssrc {
                let highest = be32(&block[8..12]).wrapping_add(removed.seq_offset);
                block[8..12].copy_from_slice(&highest.to_be_bytes());
            }
        }
    });
}

/// Calls `f(packet type, report count, packet bytes)` for each packet of a compound RTCP
/// packet (RFC 3550 §6.1), stopping at the first that is not version 2 or runs past the end.
fn for_each_packet(buf: &mut [u8], mut f: impl FnMut(u8, usize, &mut [u8])) {
    let mut at = 0;
    while buf.len() >= at + 4 {
        let head = &buf[at..at + 4];
        if head[0] >> 6 != 2 {
            return;
        }
        let count = usize::from(head[0] & 0x1f);
        let pt = head[1];
        let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
        let Some(p) = buf.get_mut(at..at + len) else {
            return;
        };
        f(pt, count, p);
        at += len;
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u32 = 0x0bad_cafe;

    /// Feeds `(seq, removed)` in order; returns the numbers forwarded (None: dropped).
    fn run(r: &mut Renumber, packets: &[(u16, bool)]) -> Vec<Option<u16>> {
        packets
            .iter()
            .filter_map(|&(seq, removed)| {
                if removed {
                    r.remove(S, seq, 4);
                    None
                } else {
                    Some(r.forward(S, seq))
                }
            })
            .collect()
    }

    #[test]
    fn untouched_until_something_is_removed() {
        let mut r = Renumber::new();
        let got = run(
            &mut r,
            &[(10, false), (11, false), (13, false), (12, false)],
        );
        assert_eq!(got, [Some(10), Some(11), Some(13), Some(12)]);
        assert_eq!(r.removed().packets, 0);
        assert_eq!(r.removed().seq_offset, 0);
    }

    #[test]
    fn removed_packets_leave_no_hole() {
        let mut r = Renumber::new();
        let mut pkts: Vec<(u16, bool)> = (100..110).map(|s| (s, false)).collect();
        pkts.extend((110..126).map(|s| (s, true)));
        pkts.extend((126..140).map(|s| (s, false)));
        let got: Vec<u16> = run(&mut r, &pkts).into_iter().map(Option::unwrap).collect();
        let want: Vec<u16> = (100..124).collect();
        assert_eq!(got, want, "contiguous across the removal");
        assert_eq!(
            r.removed(),
            Removed {
                ssrc: S,
                packets: 16,
                octets: 64,
                seq_offset: 16
            }
        );
    }

    #[test]
    fn wraps_around_2_pow_16() {
        let mut r = Renumber::new();
        let mut pkts = vec![(65530, false), (65531, false)];
        pkts.extend([65532, 65533, 65534, 65535, 0, 1].map(|s| (s, true)));
        pkts.extend((2..6).map(|s| (s, false)));
        let got: Vec<u16> = run(&mut r, &pkts).into_iter().map(Option::unwrap).collect();
        assert_eq!(got, [65530, 65531, 65532, 65533, 65534, 65535]);
        // A later removal, after the wrap, adds to the offset.
        r.remove(S, 6, 4);
        assert_eq!(r.forward(S, 7), Some(0));
    }

    #[test]
    fn the_offset_holds_for_a_whole_long_call() {
        // One removal, then more than 2^15 packets: the comparison must not flip sign.
        let mut r = Renumber::new();
        r.forward(S, 0);
        r.remove(S, 1, 4);
        let mut expect = 1u16;
        for i in 2..200_000u32 {
            assert_eq!(r.forward(S, i as u16), Some(expect), "packet {i}");
            expect = expect.wrapping_add(1);
        }
    }

    #[test]
    fn a_late_packet_keeps_its_place() {
        // 10, 11, [12 removed], 14, 13 (late), 15: forwarded numbers 10 11 13 12 14, one each.
        let mut r = Renumber::new();
        let got = run(
            &mut r,
            &[
                (10, false),
                (11, false),
                (12, true),
                (14, false),
                (13, false),
                (15, false),
            ],
        );
        assert_eq!(got, [Some(10), Some(11), Some(13), Some(12), Some(14)]);
        // A packet older than the removal (11 again, late duplicate) keeps its own number.
        assert_eq!(r.forward(S, 11), Some(11));
    }

    #[test]
    fn a_late_packet_older_than_a_removal_is_not_lowered_by_it() {
        // 20, 22, [23, 24 removed], 21 (late, older than both), 25.
        let mut r = Renumber::new();
        let got = run(
            &mut r,
            &[
                (20, false),
                (22, false),
                (23, true),
                (24, true),
                (21, false),
                (25, false),
            ],
        );
        assert_eq!(got, [Some(20), Some(22), Some(21), Some(23)]);
        // Between the removals.
        let mut r = Renumber::new();
        let got = run(
            &mut r,
            &[
                (20, false),
                (21, true),
                (23, true),
                (24, false),
                (22, false),
            ],
        );
        assert_eq!(got, [Some(20), Some(22), Some(21)]);
    }

    #[test]
    fn numbers_stay_one_to_one_under_reordering() {
        // Forwarded packets swapped with their neighbours, and one (4) arriving after the three
        // removals that follow it: the numbers stay distinct and, once all have arrived,
        // contiguous.
        let removed = [5u16, 6, 7, 12, 13];
        let order: [u16; 20] = [
            0, 2, 1, 3, 5, 6, 7, 4, 8, 10, 9, 11, 12, 13, 15, 14, 17, 16, 19, 18,
        ];
        let mut r = Renumber::new();
        let mut got = Vec::new();
        for s in order {
            if removed.contains(&s) {
                r.remove(S, s, 4);
            } else {
                got.push(r.forward(S, s).expect("numbered"));
            }
        }
        got.sort();
        let want: Vec<u16> = (0..15).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_removal_arriving_after_newer_packets_leaves_a_hole_not_a_clash() {
        // 30, 32, [31 removed, late], 33: 32 has gone out as 32 already.
        let mut r = Renumber::new();
        let got = run(&mut r, &[(30, false), (32, false), (31, true), (33, false)]);
        assert_eq!(got, [Some(30), Some(32), Some(33)]);
        assert_eq!(r.removed().packets, 1, "the sender reports still lose it");
        assert_eq!(r.removed().seq_offset, 0);
    }

    #[test]
    fn duplicates_of_a_removed_packet() {
        let mut r = Renumber::new();
        r.forward(S, 1);
        r.remove(S, 2, 4);
        r.remove(S, 2, 4);
        assert_eq!(r.forward(S, 3), Some(2));
        assert_eq!(r.removed().seq_offset, 1);
        // A forwardable packet carrying a removed number has no number of its own.
        assert_eq!(r.forward(S, 2), None);
    }

    #[test]
    fn too_late_after_the_window_is_dropped() {
        let mut r = Renumber::new();
        r.forward(S, 0);
        r.forward(S, 1);
        for s in 2..(2 + WINDOW as u16 + 1) {
            r.remove(S, s, 4);
        }
        let next = 2 + WINDOW as u16 + 1;
        assert_eq!(r.forward(S, next), Some(2));
        // 1 is older than a forgotten removal.
        assert_eq!(r.forward(S, 1), None);
    }

    #[test]
    fn a_new_ssrc_starts_afresh() {
        let mut r = Renumber::new();
        r.forward(S, 1);
        r.remove(S, 2, 4);
        assert_eq!(r.forward(S, 3), Some(2));
        assert_eq!(r.forward(7, 500), Some(500));
        assert_eq!(r.forward(7, 501), Some(501));
        assert_eq!(
            r.removed(),
            Removed {
                ssrc: 7,
                ..Default::default()
            }
        );
    }

    fn sr(ssrc: u32, packets: u32, octets: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut p = vec![0x80 | blocks.len() as u8, SR, 0, 0];
        p.extend(ssrc.to_be_bytes());
        p.extend([0u8; 12]);
        p.extend(packets.to_be_bytes());
        p.extend(octets.to_be_bytes());
        for &(about, highest) in blocks {
            p.extend(about.to_be_bytes());
            p.extend([0u8; 4]);
            p.extend(highest.to_be_bytes());
            p.extend([0u8; 12]);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    }

    fn rr(ssrc: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut p = vec![0x80 | blocks.len() as u8, RR, 0, 0];
        p.extend(ssrc.to_be_bytes());
        for &(about, highest) in blocks {
            p.extend(about.to_be_bytes());
            p.extend([0u8; 4]);
            p.extend(highest.to_be_bytes());
            p.extend([0u8; 12]);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    }

    fn sdes() -> Vec<u8> {
        vec![0x81, 202, 0, 2, 0, 0, 0, 1, 1, 1, b'x', 0]
    }

    const REMOVED: Removed = Removed {
        ssrc: S,
        packets: 16,
        octets: 64,
        seq_offset: 16,
    };

    #[test]
    fn sender_reports_lose_the_removed_packets() {
        let mut buf = sr(S, 1000, 160_000, &[(9, 77)]);
        buf.extend(sdes());
        let want_tail = buf[28..].to_vec();
        correct_sender_reports(&mut buf, &REMOVED);
        assert_eq!(be32(&buf[20..24]), 984);
        assert_eq!(be32(&buf[24..28]), 159_936);
        assert_eq!(
            &buf[28..],
            &want_tail[..],
            "report blocks and SDES untouched"
        );
        // Another source's report is left alone.
        let mut other = sr(9, 1000, 160_000, &[]);
        let before = other.clone();
        correct_sender_reports(&mut other, &REMOVED);
        assert_eq!(other, before);
    }

    #[test]
    fn receiver_reports_about_the_stream_get_its_own_numbers_back() {
        let mut buf = rr(1, &[(9, 500), (S, 0x0001_0005)]);
        buf.extend(sr(2, 1, 1, &[(S, 100)]));
        correct_receiver_reports(&mut buf, &REMOVED);
        assert_eq!(be32(&buf[8 + 8..8 + 12]), 500, "another source's block");
        assert_eq!(be32(&buf[8 + 24 + 8..8 + 24 + 12]), 0x0001_0015);
        let sr_at = 8 + 48;
        assert_eq!(be32(&buf[sr_at + 28 + 8..sr_at + 28 + 12]), 116);
    }

    #[test]
    fn malformed_rtcp_is_left_alone() {
        let mut buf = sr(S, 1000, 1000, &[]);
        buf[2..4].copy_from_slice(&200u16.to_be_bytes());
        let before = buf.clone();
        correct_sender_reports(&mut buf, &REMOVED);
        correct_receiver_reports(&mut buf, &REMOVED);
        assert_eq!(buf, before, "a length past the end");
        // A report count larger than the packet holds.
        let mut buf = rr(1, &[(S, 5)]);
        buf[0] = 0x80 | 5;
        correct_receiver_reports(&mut buf, &REMOVED);
        assert_eq!(
            be32(&buf[16..20]),
            21,
            "the block that is there is corrected"
        );
    }

    proptest::proptest! {
        #[test]
        fn rtcp_correction_never_panics(mut data in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            correct_sender_reports(&mut data, &REMOVED);
            correct_receiver_reports(&mut data, &REMOVED);
        }

        #[test]
        fn forwarded_numbers_are_distinct(ops in proptest::collection::vec((0u16..80, proptest::bool::ANY), 0..200)) {
            // Whatever the arrival order, no two different packets get one number.
            let mut r = Renumber::new();
            let mut given = std::collections::HashMap::new();
            for (seq, removed) in ops {
                if removed {
                    if !given.contains_key(&seq) {
                        r.remove(S, seq, 4);
                    }
                } else if let Some(n) = r.forward(S, seq) {
                    if let Some(prev) = given.insert(seq, n) {
                        proptest::prop_assert_eq!(prev, n, "a duplicate keeps its number");
                    }
                }
            }
            let mut numbers: Vec<u16> = given.values().copied().collect();
            numbers.sort();
            numbers.dedup();
            proptest::prop_assert_eq!(numbers.len(), given.len());
        }
    }
}
