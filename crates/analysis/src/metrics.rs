//! Conversation metrics computed from the talk spans of the two channels.
//!
//! Definitions (all times in milliseconds of the recording):
//! - **talk time**: the sum of a channel's talk spans.
//! - **talk-to-listen ratio**: agent talk time over customer talk time (`None` when the
//!   customer never talks).
//! - **quiet gap**: a stretch where neither channel is in a talk span.
//! - **pause**: a quiet gap of at least [`PAUSE_MIN_MS`] between two talk spans (not before
//!   the first word nor after the last). 250 ms is the silent-pause threshold customary in
//!   speech research, and equals the VAD's hangover, so a gap inside one party's speech and a
//!   gap between the two parties count alike.
//! - **silence**: a quiet gap longer than [`LONG_SILENCE_MS`] (4 s), anywhere in the recording,
//!   including before the first and after the last word (dead air after the answer counts).
//!   `longest_silence_ms` is the longest quiet gap of any length.
//! - **overtalk**: a stretch where both channels are in talk spans; counted and summed.
//! - **turn**: a talk span that is not wholly inside a span of the other channel (a
//!   backchannel such as "mm-hmm" inside the other's speech is overtalk, not a turn).
//!   Consecutive turns of one channel are one turn.
//! - **switches**: the number of times the turn passes from one channel to the other;
//!   per hour of recording as well.
//! - **monologue**: consecutive turns of one channel not separated by a silence; its length
//!   runs from its first word to its last.

use serde::{Deserialize, Serialize};

/// Quiet gaps at least this long between talk spans are pauses.
pub const PAUSE_MIN_MS: u64 = 250;
/// Quiet gaps longer than this are silences.
pub const LONG_SILENCE_MS: u64 = 4000;
/// Version of the definitions and the VAD; bumped whenever stored metrics would come out
/// differently, so that a catalog can tell which ones to recompute.
pub const METRICS_VERSION: u32 = 1;

/// The party a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// Channel 1 (left).
    Customer,
    /// Channel 2 (right).
    Agent,
}

/// One talk span of one party, for the page's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerSpan {
    pub speaker: Speaker,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What the page shows and the catalog stores and searches about a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationMetrics {
    /// [`METRICS_VERSION`] of the code that computed these.
    pub version: u32,
    pub duration_ms: u64,
    pub customer_talk_ms: u64,
    pub agent_talk_ms: u64,
    /// Agent talk over customer talk; `None` when the customer never talks.
    pub talk_to_listen_ratio: Option<f64>,
    pub pause_count: u32,
    /// Mean length of the pauses; `None` without pauses.
    pub average_pause_ms: Option<u64>,
    pub longest_customer_monologue_ms: u64,
    pub longest_agent_monologue_ms: u64,
    pub switches: u32,
    /// `None` for an empty recording.
    pub switches_per_hour: Option<f64>,
    pub overtalk_ms: u64,
    pub overtalk_count: u32,
    /// Quiet gaps longer than [`LONG_SILENCE_MS`].
    pub silences_over_4s: u32,
    /// The longest quiet gap, whatever its length (0 when someone always talks).
    pub longest_silence_ms: u64,
    /// Talking speed; `None` until a transcript exists.
    pub customer_words_per_minute: Option<f64>,
    /// Talking speed; `None` until a transcript exists.
    pub agent_words_per_minute: Option<f64>,
    /// Talk spans of both parties, ordered by start.
    pub spans: Vec<SpeakerSpan>,
}

/// Sorts spans, drops empty ones, clips them to the recording and merges overlaps, so that
/// every computation below may assume ordered disjoint spans whatever it was given.
fn normalize(spans: &[(u64, u64)], duration_ms: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = spans
        .iter()
        .map(|&(s, e)| (s.min(duration_ms), e.min(duration_ms)))
        .filter(|&(s, e)| e > s)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether `span` lies wholly inside one of `other` (ordered, disjoint), without being the
/// same span: of two identical spans neither is a backchannel of the other.
fn inside(span: (u64, u64), other: &[(u64, u64)]) -> bool {
    let i = other.partition_point(|o| o.0 <= span.0);
    i > 0 && {
        let o = other[i - 1];
        span.1 <= o.1 && o != span
    }
}

impl ConversationMetrics {
    /// Computes the metrics from each party's talk spans `(start_ms, end_ms)` and the
    /// recording's length. Spans may come in any order and overlap; they are normalized.
    pub fn from_spans(customer: &[(u64, u64)], agent: &[(u64, u64)], duration_ms: u64) -> Self {
        let customer = normalize(customer, duration_ms);
        let agent = normalize(agent, duration_ms);
        let talk = |v: &[(u64, u64)]| v.iter().map(|&(s, e)| e - s).sum::<u64>();
        let customer_talk_ms = talk(&customer);
        let agent_talk_ms = talk(&agent);

        let mut spans: Vec<SpeakerSpan> = customer
            .iter()
            .map(|&(s, e)| (Speaker::Customer, s, e))
            .chain(agent.iter().map(|&(s, e)| (Speaker::Agent, s, e)))
            .map(|(speaker, start_ms, end_ms)| SpeakerSpan {
                speaker,
                start_ms,
                end_ms,
            })
            .collect();
        spans.sort_unstable_by_key(|s| (s.start_ms, s.end_ms, s.speaker == Speaker::Agent));

        // Overtalk: intersections of the two ordered lists.
        let (mut overtalk_ms, mut overtalk_count) = (0u64, 0u32);
        let (mut i, mut j) = (0, 0);
        while i < customer.len() && j < agent.len() {
            let (c, a) = (customer[i], agent[j]);
            let (s, e) = (c.0.max(a.0), c.1.min(a.1));
            if e > s {
                overtalk_ms += e - s;
                overtalk_count += 1;
            }
            if c.1 <= a.1 {
                i += 1;
            } else {
                j += 1;
            }
        }

        // Quiet gaps: the complement of the union of both channels.
        let union = normalize(
            &customer
                .iter()
                .chain(agent.iter())
                .copied()
                .collect::<Vec<_>>(),
            duration_ms,
        );
        let (mut pause_count, mut pause_total) = (0u32, 0u64);
        let (mut silences_over_4s, mut longest_silence_ms) = (0u32, 0u64);
        let mut quiet = |gap: u64, interior: bool| {
            if interior && gap >= PAUSE_MIN_MS {
                pause_count += 1;
                pause_total += gap;
            }
            if gap > LONG_SILENCE_MS {
                silences_over_4s += 1;
            }
            longest_silence_ms = longest_silence_ms.max(gap);
        };
        let mut cursor = 0;
        for (k, &(s, e)) in union.iter().enumerate() {
            quiet(s - cursor, k > 0);
            cursor = e;
        }
        quiet(duration_ms - cursor, false);

        // Turns, switches and monologues.
        let mut switches = 0u32;
        let (mut longest_customer, mut longest_agent) = (0u64, 0u64);
        let mut run: Option<(Speaker, u64, u64)> = None;
        let mut last_turn: Option<Speaker> = None;
        for span in &spans {
            let other = match span.speaker {
                Speaker::Customer => &agent,
                Speaker::Agent => &customer,
            };
            if inside((span.start_ms, span.end_ms), other) {
                continue;
            }
            if last_turn.is_some_and(|t| t != span.speaker) {
                switches += 1;
            }
            last_turn = Some(span.speaker);
            run = match run {
                Some((who, start, end))
                    if who == span.speaker
                        && span.start_ms.saturating_sub(end) <= LONG_SILENCE_MS =>
                {
                    Some((who, start, end.max(span.end_ms)))
                }
                previous => {
                    if let Some(done) = previous {
                        record_monologue(done, &mut longest_customer, &mut longest_agent);
                    }
                    Some((span.speaker, span.start_ms, span.end_ms))
                }
            };
        }
        if let Some(done) = run {
            record_monologue(done, &mut longest_customer, &mut longest_agent);
        }

        ConversationMetrics {
            version: METRICS_VERSION,
            duration_ms,
            customer_talk_ms,
            agent_talk_ms,
            talk_to_listen_ratio: (customer_talk_ms > 0)
                .then(|| agent_talk_ms as f64 / customer_talk_ms as f64),
            pause_count,
            average_pause_ms: (pause_count > 0)
                .then(|| (pause_total + u64::from(pause_count) / 2) / u64::from(pause_count)),
            longest_customer_monologue_ms: longest_customer,
            longest_agent_monologue_ms: longest_agent,
            switches,
            switches_per_hour: (duration_ms > 0)
                .then(|| f64::from(switches) * 3_600_000.0 / duration_ms as f64),
            overtalk_ms,
            overtalk_count,
            silences_over_4s,
            longest_silence_ms,
            customer_words_per_minute: None,
            agent_words_per_minute: None,
            spans,
        }
    }
}

fn record_monologue((who, start, end): (Speaker, u64, u64), customer: &mut u64, agent: &mut u64) {
    let longest = match who {
        Speaker::Customer => customer,
        Speaker::Agent => agent,
    };
    *longest = (*longest).max(end - start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_party_call_with_backchannel_overtalk_and_silence() {
        // Customer talks 1–5 s; the agent says "mm-hmm" at 3.0–3.4 s (inside), then answers at
        // 5.5–9 s; the customer interrupts at 8.5–10 s; 10 s of dead air; the agent talks
        // 20–22 s; the recording ends at 30 s.
        let customer = [(1000, 5000), (8500, 10_000)];
        let agent = [(3000, 3400), (5500, 9000), (20_000, 22_000)];
        let m = ConversationMetrics::from_spans(&customer, &agent, 30_000);
        assert_eq!(m.customer_talk_ms, 5500);
        assert_eq!(m.agent_talk_ms, 400 + 3500 + 2000);
        assert!((m.talk_to_listen_ratio.unwrap() - 5900.0 / 5500.0).abs() < 1e-9);
        // Overtalk: the backchannel (400) and the interruption (500).
        assert_eq!((m.overtalk_ms, m.overtalk_count), (900, 2));
        // Pauses: 5.0–5.5 s and 10–20 s; leading 1 s and trailing 8 s are not pauses.
        assert_eq!(m.pause_count, 2);
        assert_eq!(m.average_pause_ms, Some((500 + 10_000) / 2));
        // Silences over 4 s: 10–20 s and 22–30 s (trailing counts); the longest is 10 s.
        assert_eq!(m.silences_over_4s, 2);
        assert_eq!(m.longest_silence_ms, 10_000);
        // Turns: C(1–5), A(5.5–9), C(8.5–10), A(20–22): the backchannel is not a turn.
        assert_eq!(m.switches, 3);
        assert!((m.switches_per_hour.unwrap() - 3.0 * 120.0).abs() < 1e-9);
        assert_eq!(m.longest_customer_monologue_ms, 4000);
        assert_eq!(m.longest_agent_monologue_ms, 3500);
        assert_eq!(m.spans.len(), 5);
        assert_eq!(
            m.spans[1],
            SpeakerSpan {
                speaker: Speaker::Agent,
                start_ms: 3000,
                end_ms: 3400
            }
        );
        assert!(m.spans.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
        assert_eq!(m.customer_words_per_minute, None);
    }

    #[test]
    fn a_monologue_spans_own_pauses_but_not_a_silence() {
        // Customer: 0–10 s, 11–20 s (a 1 s pause: same monologue), then 5 s quiet, 25–27 s.
        let m = ConversationMetrics::from_spans(
            &[(0, 10_000), (11_000, 20_000), (25_000, 27_000)],
            &[],
            27_000,
        );
        assert_eq!(m.longest_customer_monologue_ms, 20_000);
        assert_eq!(m.switches, 0);
        assert_eq!(m.talk_to_listen_ratio, Some(0.0));
        assert_eq!((m.pause_count, m.silences_over_4s), (2, 1));
        assert_eq!(m.average_pause_ms, Some(3000));
    }

    #[test]
    fn short_gaps_are_not_pauses_and_exactly_4s_is_not_a_silence() {
        let m = ConversationMetrics::from_spans(&[(0, 1000), (5000, 6000)], &[(1249, 1500)], 6000);
        // Gaps: 1000–1249 (249 ms, not a pause), 1500–5000 (3.5 s pause).
        assert_eq!(m.pause_count, 1);
        assert_eq!(m.average_pause_ms, Some(3500));
        let m = ConversationMetrics::from_spans(&[(0, 1000), (5000, 6000)], &[], 6000);
        assert_eq!((m.silences_over_4s, m.longest_silence_ms), (0, 4000));
        let m = ConversationMetrics::from_spans(&[(0, 1000), (5001, 6000)], &[], 6000);
        assert_eq!(m.silences_over_4s, 1);
    }

    #[test]
    fn empty_and_silent_recordings() {
        let m = ConversationMetrics::from_spans(&[], &[], 0);
        assert_eq!(m.switches_per_hour, None);
        assert_eq!(m.talk_to_listen_ratio, None);
        assert_eq!(m.average_pause_ms, None);
        assert_eq!(m.longest_silence_ms, 0);
        let m = ConversationMetrics::from_spans(&[], &[], 60_000);
        assert_eq!((m.silences_over_4s, m.longest_silence_ms), (1, 60_000));
        assert_eq!(m.pause_count, 0);
        assert_eq!(m.switches_per_hour, Some(0.0));
    }

    #[test]
    fn unordered_overlapping_and_out_of_range_spans_are_normalized() {
        let m = ConversationMetrics::from_spans(
            &[
                (3000, 4000),
                (500, 1500),
                (1000, 2000),
                (9000, 12_000),
                (7000, 7000),
            ],
            &[(2500, 2600), (4000, 2000)],
            10_000,
        );
        assert_eq!(m.customer_talk_ms, 1500 + 1000 + 1000);
        assert_eq!(m.agent_talk_ms, 100);
        assert_eq!(m.spans.len(), 4);
        assert_eq!(m.spans.last().unwrap().end_ms, 10_000);
        assert_eq!(m.switches, 2);
    }

    #[test]
    fn identical_spans_on_both_channels_are_both_turns() {
        let m = ConversationMetrics::from_spans(&[(0, 1000)], &[(0, 1000)], 1000);
        assert_eq!(m.switches, 1);
        assert_eq!((m.overtalk_ms, m.overtalk_count), (1000, 1));
    }

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let m = ConversationMetrics::from_spans(&[(0, 1000)], &[(1500, 2500)], 3000);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""speaker":"customer""#), "{json}");
        assert!(
            json.contains(r#""customer_words_per_minute":null"#),
            "{json}"
        );
        let back: ConversationMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
