//! The page of one recording: the player, the stereo waveform from the stored peaks with the
//! recording's markers, the contact's details, its segments and statements, its conversation
//! metrics, and the transcript pane.
//!
//! The page names its data sources in `data-*` attributes of `#player`; `app.js` fetches the
//! precomputed peaks (`GET /api/v1/recordings/{id}/peaks`) and hands them to wavesurfer.js
//! with the duration, so the browser never decodes the audio: the `<audio>` element streams
//! it from the API's audio endpoint with Range requests. Markers are computed here
//! ([`markers`]) and passed as JSON in `data-markers`:
//!
//! * segments that are not recorded in full (paused, agent only) as regions, and the start
//!   of every later segment as a point, labelled with its reason;
//! * recorded statements as regions, labelled with their statement id;
//! * silences (quiet gaps over 4 s, `analysis::metrics::LONG_SILENCE_MS`) and pauses (quiet
//!   gaps of at least [`MARKED_PAUSE_MS`] between talk): at most [`MAX_QUIET_MARKERS`] of
//!   them, the longest, so an hour's call does not put thousands of regions on the page.
//!
//! The transcript pane is filled by the script from `GET /api/v1/recordings/{id}/transcript`
//! (404: none, the pane stays hidden); phrases are built with `textContent`.

use analysis::metrics::LONG_SILENCE_MS;
use analysis::ConversationMetrics;
use maud::{html, Markup};
use recorder::{Segment, SegmentKind, SAMPLE_RATE};
use serde::Serialize;
use store::{Entry, Statement};

use crate::assets;
use crate::layout::{page, Chrome};
use crate::search::{path_segment, time_tag};
use crate::time::{clock, seconds};

/// Pauses at least this long are marked on the waveform (shorter ones are counted only).
pub const MARKED_PAUSE_MS: u64 = 1000;
/// The most silences and pauses marked on one waveform.
pub const MAX_QUIET_MARKERS: usize = 400;
/// Peaks asked for per channel: two per pixel of a wide screen.
pub const PEAK_BUCKETS: usize = 4000;

/// One mark on the waveform, in seconds of the file. `end == start` is a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    /// `segment`, `segment-start`, `statement`, `silence` or `pause` (the CSS class too).
    pub kind: &'static str,
    pub start: f64,
    pub end: f64,
    pub label: String,
}

fn frame_secs(frame: u64) -> f64 {
    frame as f64 / f64::from(SAMPLE_RATE)
}

fn frame_ms(frame: u64) -> u64 {
    frame * 1000 / u64::from(SAMPLE_RATE)
}

/// Where call time `call_ms` (milliseconds from the start of the call) lies in the file,
/// in milliseconds, given the file's segments. A time in a gap between segments (the
/// recording was stopped) maps to the start of the next segment; after the last, to its end.
pub fn call_to_file_ms(segments: &[Segment], call_ms: u64) -> Option<u64> {
    let mut last_end = None;
    for s in segments {
        let file_start = frame_ms(s.start_frame);
        if call_ms < s.call_start_ms {
            return Some(file_start);
        }
        let end_call = s.call_end_ms.unwrap_or(u64::MAX);
        let file_end = s.end_frame.map(frame_ms).unwrap_or(u64::MAX);
        if call_ms <= end_call {
            return Some((file_start + (call_ms - s.call_start_ms)).min(file_end));
        }
        last_end = s.end_frame.map(frame_ms);
    }
    last_end
}

/// The quiet gaps of a recording: where neither party talks, from the talk spans of both
/// (any order, overlapping), including before the first and after the last word.
pub fn quiet_gaps(spans: &[(u64, u64)], duration_ms: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = spans
        .iter()
        .map(|&(s, e)| (s.min(duration_ms), e.min(duration_ms)))
        .filter(|(s, e)| e > s)
        .collect();
    v.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = 0;
    for (s, e) in v {
        if s > at {
            gaps.push((at, s));
        }
        at = at.max(e);
    }
    if duration_ms > at {
        gaps.push((at, duration_ms));
    }
    gaps
}

/// The conversation metrics stored with an entry, when they parse.
pub fn conversation_metrics(e: &Entry) -> Option<ConversationMetrics> {
    serde_json::from_value(e.metrics.clone()?).ok()
}

fn segment_kind(k: SegmentKind) -> &'static str {
    match k {
        SegmentKind::Full => "both channels",
        SegmentKind::AgentOnly => "agent only",
        SegmentKind::Paused => "paused",
    }
}

/// A statement's place in the file: (start, end) in milliseconds.
pub fn statement_span(main: &[Segment], st: &Statement) -> Option<(u64, u64)> {
    let first = st.segments.first()?;
    let last = st.segments.last()?;
    let start = call_to_file_ms(main, first.call_start_ms)?;
    let end_call = last
        .call_end_ms
        .unwrap_or(first.call_start_ms + st.duration_ms.max(0) as u64);
    let end = call_to_file_ms(main, end_call)?.max(start);
    Some((start, end))
}

/// Everything marked on the waveform of `e` (see the module docs).
pub fn markers(e: &Entry, metrics: Option<&ConversationMetrics>) -> Vec<Marker> {
    let mut out = Vec::new();
    for (i, s) in e.segments.iter().enumerate() {
        let start = frame_secs(s.start_frame);
        if i > 0 {
            out.push(Marker {
                kind: "segment-start",
                start,
                end: start,
                label: s.start_reason.clone(),
            });
        }
        if s.kind != SegmentKind::Full {
            let end = s
                .end_frame
                .map_or(e.duration_ms as f64 / 1000.0, frame_secs);
            out.push(Marker {
                kind: "segment",
                start,
                end,
                label: format!("{}: {}", segment_kind(s.kind), s.start_reason),
            });
        }
    }
    for st in &e.statements {
        if let Some((s, end)) = statement_span(&e.segments, st) {
            out.push(Marker {
                kind: "statement",
                start: s as f64 / 1000.0,
                end: end as f64 / 1000.0,
                label: st.statement_id.clone(),
            });
        }
    }
    if let Some(m) = metrics {
        let spans: Vec<(u64, u64)> = m.spans.iter().map(|s| (s.start_ms, s.end_ms)).collect();
        let mut quiet: Vec<(u64, u64)> = quiet_gaps(&spans, m.duration_ms)
            .into_iter()
            .filter(|&(s, e)| {
                let len = e - s;
                len > LONG_SILENCE_MS
                    || (len >= MARKED_PAUSE_MS && s > 0 && e < m.duration_ms && !spans.is_empty())
            })
            .collect();
        quiet.sort_by_key(|&(s, e)| std::cmp::Reverse(e - s));
        quiet.truncate(MAX_QUIET_MARKERS);
        quiet.sort_unstable();
        for (s, e) in quiet {
            let silence = e - s > LONG_SILENCE_MS;
            out.push(Marker {
                kind: if silence { "silence" } else { "pause" },
                start: s as f64 / 1000.0,
                end: e as f64 / 1000.0,
                label: format!(
                    "{} {}",
                    if silence { "silence" } else { "pause" },
                    seconds(e as i64 - s as i64)
                ),
            });
        }
    }
    out
}

/// What the recording page shows besides the entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingOptions {
    /// The viewer may delete and hold recordings (an admin).
    pub admin: bool,
}

fn api(e: &Entry, tail: &str) -> String {
    format!("/api/v1/recordings/{}{tail}", path_segment(&e.contact_id))
}

fn opt(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "—",
    }
}

fn ms_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "—".into(), |ms| seconds(ms as i64))
}

fn details(e: &Entry) -> Markup {
    html! {
        section.details {
            h2 { "Contact" }
            dl {
                dt { "Agent" } dd { (opt(e.agent.as_deref())) }
                dt { "Team" } dd { (opt(e.team.as_deref())) }
                dt { "Customer number" } dd { (opt(e.customer_number.as_deref())) }
                dt { "Queue" } dd { (opt(e.queue.as_deref())) }
                dt { "Skill" } dd { (opt(e.skill.as_deref())) }
                dt { "Direction" } dd { (e.direction) }
                dt { "Route" } dd { (e.route) }
                dt { "Station" } dd { (opt(e.station.as_deref())) }
                dt { "Start" } dd { (time_tag(e.start_ms)) }
                dt { "Answered" } dd { @if let Some(t) = e.answer_ms { (time_tag(t)) } @else { "—" } }
                dt { "End" } dd { @if let Some(t) = e.end_ms { (time_tag(t)) } @else { "—" } }
                dt { "Recorded" } dd { (clock(e.duration_ms)) }
                dt { "Call time covered" } dd { (clock(e.call_duration_ms)) }
                dt { "Format" } dd { (e.format) }
                dt { "Codecs" } dd { (e.codecs_customer.join(", ")) " / " (e.codecs_agent.join(", ")) }
                dt { "State" } dd {
                    (e.state.as_str())
                    @if e.legal_hold { " " span.badge { "legal hold" } }
                }
                @if let Some(err) = &e.error {
                    dt { "Stopped early" } dd { (err) }
                }
                dt { "Contact id" } dd { code { (e.contact_id) } }
                dt { "Call-IDs" } dd {
                    code { (opt(e.call_id_customer.as_deref())) } " / " code { (opt(e.call_id_agent.as_deref())) }
                }
            }
        }
    }
}

fn metrics_table(m: Option<&ConversationMetrics>) -> Markup {
    let wpm = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |w| format!("{w:.0}"));
    html! {
        section.metrics {
            h2 { "Conversation" }
            @match m {
                None => { p.empty { "No conversation metrics for this recording." } }
                Some(m) => {
                    table.kv {
                        tr { th { "Talk-to-listen ratio (agent : customer)" }
                             td #talk-ratio { @match m.talk_to_listen_ratio { Some(r) => { (format!("{r:.2}")) }, None => { "—" } } } }
                        tr { th { "Customer talk" } td { (clock(m.customer_talk_ms as i64)) } }
                        tr { th { "Agent talk" } td { (clock(m.agent_talk_ms as i64)) } }
                        tr { th { "Average pause" } td { (ms_opt(m.average_pause_ms)) " (" (m.pause_count) (if m.pause_count == 1 { " pause)" } else { " pauses)" }) } }
                        tr { th { "Longest customer monologue" } td { (seconds(m.longest_customer_monologue_ms as i64)) } }
                        tr { th { "Longest agent monologue" } td { (seconds(m.longest_agent_monologue_ms as i64)) } }
                        tr { th { "Switches" } td { (m.switches) } }
                        tr { th { "Switches per hour" } td { @match m.switches_per_hour { Some(s) => { (format!("{s:.1}")) }, None => { "—" } } } }
                        tr { th { "Overtalk" } td { (seconds(m.overtalk_ms as i64)) " (" (m.overtalk_count) (if m.overtalk_count == 1 { " time)" } else { " times)" }) } }
                        tr { th { "Silences over 4 s" } td { (m.silences_over_4s) } }
                        tr { th { "Longest silence" } td { (seconds(m.longest_silence_ms as i64)) } }
                        tr { th { "Talking speed, customer (words/min)" } td #wpm-customer { (wpm(m.customer_words_per_minute)) } }
                        tr { th { "Talking speed, agent (words/min)" } td #wpm-agent { (wpm(m.agent_words_per_minute)) } }
                    }
                }
            }
        }
    }
}

fn segments_table(e: &Entry) -> Markup {
    html! {
        section.segments {
            h2 { "Segments" }
            @if e.segments.is_empty() { p.empty { "No segments." } } @else {
                table.list {
                    thead { tr { th { "#" } th { "Recorded" } th { "From" } th { "To" } th { "Started because" } th { "Ended because" } } }
                    tbody {
                        @for (i, s) in e.segments.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                td { (segment_kind(s.kind)) }
                                td.num { (clock(frame_ms(s.start_frame) as i64)) }
                                td.num { @if let Some(f) = s.end_frame { (clock(frame_ms(f) as i64)) } @else { "open" } }
                                td { (s.start_reason) }
                                td { (opt(s.end_reason.as_deref())) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn statements_table(e: &Entry) -> Markup {
    html! {
        section.statements {
            h2 { "Recorded statements" }
            @if e.statements.is_empty() { p.empty { "No recorded statement." } } @else {
                table.list {
                    thead { tr { th { "Statement id" } th { "File" } th { "At" } th { "Length" } th { "State" } th {} } }
                    tbody {
                        @for st in &e.statements {
                            @let at = statement_span(&e.segments, st).map(|(s, _)| s);
                            tr {
                                td { code { (st.statement_id) } }
                                td { code { (st.id) } }
                                td.num {
                                    @if let Some(ms) = at {
                                        a.seek href={ "?t=" (ms / 1000) } data-seek=(ms as f64 / 1000.0) { (clock(ms as i64)) }
                                    }
                                }
                                td.num { (clock(st.duration_ms)) }
                                td { (st.state.as_str()) }
                                td { a href={ "/api/v1/statements/" (path_segment(&st.statement_id)) "/audio?download=true" } { "Download" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn transcript_pane(e: &Entry) -> Markup {
    html! {
        section #transcript.transcript hidden data-src=(api(e, "/transcript")) {
            h2 { "Transcript" }
            p #transcript-state.meta {}
            div.tools {
                label { "Find "
                    input #keyword type="search" placeholder="keyword" autocomplete="off";
                }
                " "
                span #keyword-count.meta {}
                " "
                a #transcript-download href=(api(e, "/transcript.html")) { "Download transcript" }
            }
            ol #phrases.phrases {}
        }
    }
}

/// The recording page of `e` (with its statements).
pub fn recording_page(chrome: &Chrome<'_>, e: &Entry, opts: RecordingOptions) -> Markup {
    let metrics = conversation_metrics(e);
    let marks = markers(e, metrics.as_ref());
    let marks_json = serde_json::to_string(&marks).unwrap_or_else(|_| "[]".into());
    let duration = metrics.as_ref().map_or(e.duration_ms as f64 / 1000.0, |m| {
        m.duration_ms as f64 / 1000.0
    });
    let format = e.format.to_ascii_uppercase();
    let title = format!("Recording {}", e.contact_id);
    page(
        chrome,
        &title,
        html! {
            h1 { "Recording " small { (time_tag(e.start_ms)) } }
            section #player.player
                data-audio=(api(e, "/audio"))
                data-peaks={ (api(e, "/peaks")) "?buckets=" (PEAK_BUCKETS) }
                data-duration=(duration)
                data-markers=(marks_json)
                data-wavesurfer=(assets::url("wavesurfer.esm.js"))
                data-regions=(assets::url("regions.esm.js"))
                data-timeline=(assets::url("timeline.esm.js"))
                data-admin=[opts.admin.then_some("1")]
            {
                div.lanes {
                    div.lane-labels { span.customer { "Customer" } span.agent { "Agent" } }
                    div.wave {
                        div #waveform.waveform {}
                        div #timeline {}
                    }
                }
                p #waveform-state.meta {}
                audio #audio controls preload="metadata" src=(api(e, "/audio")) {}
                div.controls {
                    button #play type="button" { "Play" }
                    button #back type="button" title="Back 10 seconds (←)" { "−10 s" }
                    button #fwd type="button" title="Forward 30 seconds (→)" { "+30 s" }
                    span #position.position { "0:00 / " (clock((duration * 1000.0) as i64)) }
                    label { "Volume "
                        input #volume type="range" min="0" max="1" step="0.05" value="1";
                    }
                    label { "Speed "
                        select #speed {
                            @for s in ["0.5", "0.75", "1", "1.25", "1.5", "1.75", "2"] {
                                option value=(s) selected[s == "1"] { (s) "×" }
                            }
                        }
                    }
                    a #download href=(api(e, "/audio?download=true")) download { "Download " (format) }
                    button #copy-link type="button" { "Copy link at current time" }
                    input #link type="text" readonly hidden aria-label="Link at the current time";
                }
                p.keys.meta { "Keys: space play/pause · ← back 10 s · → forward 30 s" }
                ul.legend {
                    li.segment { "paused or agent only" }
                    li.statement { "recorded statement" }
                    li.silence { "silence over 4 s" }
                    li.pause { "pause" }
                }
            }
            div.columns {
                (details(e))
                (metrics_table(metrics.as_ref()))
            }
            (segments_table(e))
            (statements_table(e))
            (transcript_pane(e))
            @if opts.admin {
                (admin_actions(chrome, e))
            }
        },
    )
}

/// An admin's legal hold and deletion: plain forms (they work without the script), each
/// with the session's CSRF token. A held recording cannot be deleted, so its delete button
/// is disabled and says why.
fn admin_actions(chrome: &Chrome<'_>, e: &Entry) -> Markup {
    let base = format!("/recordings/{}", path_segment(&e.contact_id));
    html! {
        section #admin.admin {
            h2 { "Retention" }
            p {
                @if e.legal_hold { "On legal hold: it is kept past its retention and cannot be deleted." }
                @else { "Not on legal hold." }
            }
            form method="post" action={ (base) "/hold" } {
                input type="hidden" name="csrf" value=[chrome.csrf];
                input type="hidden" name="hold" value=(if e.legal_hold { "off" } else { "on" });
                button #hold type="submit" {
                    @if e.legal_hold { "Release the legal hold" } @else { "Place on legal hold" }
                }
            }
            form method="post" action={ (base) "/delete" }
                data-confirm="Delete this recording? Its audio is purged and cannot be restored." {
                input type="hidden" name="csrf" value=[chrome.csrf];
                button #delete.danger type="submit" disabled[e.legal_hold]
                    title=[e.legal_hold.then_some("A recording on legal hold cannot be deleted")] {
                    "Delete recording"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::{hostile_entry, XSS};
    use analysis::{Speaker, SpeakerSpan};
    use store::State;

    fn seg(
        kind: SegmentKind,
        frames: (u64, Option<u64>),
        call: (u64, Option<u64>),
        why: &str,
    ) -> Segment {
        Segment {
            kind,
            start_frame: frames.0,
            end_frame: frames.1,
            call_start_ms: call.0,
            call_end_ms: call.1,
            start_reason: why.into(),
            end_reason: Some(XSS.into()),
        }
    }

    #[test]
    fn call_time_maps_into_the_file_across_stopped_spans() {
        // 0-10 s recorded, call 10-20 s not, call 20-30 s recorded as file 10-20 s.
        let segs = [
            seg(
                SegmentKind::Full,
                (0, Some(80_000)),
                (0, Some(10_000)),
                "start",
            ),
            seg(
                SegmentKind::Full,
                (80_000, Some(160_000)),
                (20_000, Some(30_000)),
                "resume",
            ),
        ];
        assert_eq!(call_to_file_ms(&segs, 5_000), Some(5_000));
        assert_eq!(call_to_file_ms(&segs, 15_000), Some(10_000), "in the gap");
        assert_eq!(call_to_file_ms(&segs, 25_000), Some(15_000));
        assert_eq!(
            call_to_file_ms(&segs, 99_000),
            Some(20_000),
            "after the end"
        );
        assert_eq!(call_to_file_ms(&[], 1), None);
    }

    #[test]
    fn quiet_gaps_cover_what_nobody_says() {
        let spans = [(1000, 3000), (2500, 4000), (9000, 9500)];
        assert_eq!(
            quiet_gaps(&spans, 20_000),
            vec![(0, 1000), (4000, 9000), (9500, 20_000)]
        );
        assert_eq!(quiet_gaps(&[], 5000), vec![(0, 5000)]);
        assert_eq!(quiet_gaps(&[(0, 5000)], 5000), Vec::<(u64, u64)>::new());
    }

    fn metrics(spans: &[(Speaker, u64, u64)], duration_ms: u64) -> ConversationMetrics {
        let pick = |who| -> Vec<(u64, u64)> {
            spans
                .iter()
                .filter(|s| s.0 == who)
                .map(|s| (s.1, s.2))
                .collect()
        };
        let mut m = ConversationMetrics::from_spans(
            &pick(Speaker::Customer),
            &pick(Speaker::Agent),
            duration_ms,
        );
        m.spans = spans
            .iter()
            .map(|&(speaker, start_ms, end_ms)| SpeakerSpan {
                speaker,
                start_ms,
                end_ms,
            })
            .collect();
        m
    }

    #[test]
    fn markers_show_segments_statements_silences_and_pauses() {
        let mut e = hostile_entry();
        e.duration_ms = 30_000;
        e.segments = vec![
            seg(
                SegmentKind::Full,
                (0, Some(80_000)),
                (0, Some(10_000)),
                "start",
            ),
            seg(
                SegmentKind::Paused,
                (80_000, Some(120_000)),
                (10_000, Some(15_000)),
                XSS,
            ),
            seg(
                SegmentKind::Full,
                (120_000, Some(240_000)),
                (15_000, Some(30_000)),
                "resume",
            ),
        ];
        e.statements = vec![Statement {
            id: "st-1".into(),
            statement_id: "terms".into(),
            contact_id: e.contact_id.clone(),
            start_ms: e.start_ms,
            duration_ms: 2000,
            format: "wav".into(),
            segments: vec![seg(
                SegmentKind::Full,
                (0, Some(16_000)),
                (20_000, Some(22_000)),
                "statement terms",
            )],
            state: State::Stored,
            storage_key: None,
            size_bytes: None,
            sha256: None,
            updated_ms: 0,
        }];
        let m = metrics(
            &[
                (Speaker::Customer, 500, 2000),
                (Speaker::Agent, 3500, 5000),     // a 1.5 s pause before
                (Speaker::Customer, 5200, 6000),  // 200 ms: too short to mark
                (Speaker::Agent, 12_000, 13_000), // a 6 s silence before
            ],
            30_000,
        );
        let marks = markers(&e, Some(&m));
        let kinds: Vec<(&str, f64, f64)> = marks.iter().map(|m| (m.kind, m.start, m.end)).collect();
        assert_eq!(
            kinds,
            vec![
                ("segment-start", 10.0, 10.0),
                ("segment", 10.0, 15.0),
                ("segment-start", 15.0, 15.0),
                ("statement", 20.0, 22.0),
                ("pause", 2.0, 3.5),
                ("silence", 6.0, 12.0),
                ("silence", 13.0, 30.0),
            ]
        );
        assert_eq!(marks[3].label, "terms");
        assert_eq!(marks[5].label, "silence 6.0 s");
        // Many pauses: only the longest are marked.
        let many: Vec<(Speaker, u64, u64)> = (0..2000u64)
            .map(|i| {
                (
                    if i % 2 == 0 {
                        Speaker::Customer
                    } else {
                        Speaker::Agent
                    },
                    i * 3000,
                    i * 3000 + 1500 + i % 7,
                )
            })
            .collect();
        let m = metrics(&many, 6_000_000);
        let marks = markers(&e, Some(&m));
        let quiet = marks
            .iter()
            .filter(|m| m.kind == "pause" || m.kind == "silence")
            .count();
        assert_eq!(quiet, MAX_QUIET_MARKERS);
    }

    #[test]
    fn every_field_of_the_recording_page_is_escaped() {
        let mut e = hostile_entry();
        e.segments = vec![
            seg(SegmentKind::Full, (0, Some(8000)), (0, Some(1000)), XSS),
            seg(SegmentKind::AgentOnly, (8000, None), (1000, None), XSS),
        ];
        e.statements = vec![Statement {
            id: XSS.into(),
            statement_id: XSS.into(),
            contact_id: e.contact_id.clone(),
            start_ms: e.start_ms,
            duration_ms: 1000,
            format: XSS.into(),
            segments: vec![seg(
                SegmentKind::Full,
                (0, Some(8000)),
                (500, Some(1500)),
                XSS,
            )],
            state: State::Stored,
            storage_key: Some(XSS.into()),
            size_bytes: None,
            sha256: Some(XSS.into()),
            updated_ms: 0,
        }];
        e.metrics =
            Some(serde_json::to_value(metrics(&[(Speaker::Customer, 0, 1000)], 65_000)).unwrap());
        let html =
            recording_page(&Chrome::anonymous(), &e, RecordingOptions::default()).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // The markers' JSON is an attribute: its quotes and brackets are escaped too.
        assert!(
            html.contains(r#"data-markers="[{&quot;kind&quot;:&quot;segment-start&quot;"#),
            "{html}"
        );
        assert!(html.contains(
            r#"src="/api/v1/recordings/c-%3Cscript%3Ealert%281%29%3C%2Fscript%3E/audio""#
        ));
        assert!(html.contains("/peaks?buckets=4000"));
        assert!(html.contains(r#"data-duration="65""#));
        assert!(html.contains("Talk-to-listen ratio"));
        assert!(html.contains(r#"id="wpm-customer""#));
        assert!(
            html.contains(r#"<section class="transcript" id="transcript" hidden"#)
                || html.contains(r#"id="transcript" class="transcript" hidden"#),
            "{html}"
        );
    }

    #[test]
    fn a_recording_without_metrics_still_has_its_player() {
        let mut e = hostile_entry();
        e.metrics = None;
        e.format = "mp3".into();
        let html =
            recording_page(&Chrome::anonymous(), &e, RecordingOptions::default()).into_string();
        assert!(html.contains("No conversation metrics"));
        assert!(html.contains("Download MP3"));
        assert!(html.contains(r#"<audio id="audio""#) || html.contains("<audio "));
        assert!(html.contains(r#"data-duration="65""#));
    }
}
