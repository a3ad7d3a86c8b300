//! What the recordings API shows of a transcript: the JSON of
//! `GET /api/v1/recordings/{id}/transcript` ([`TranscriptView`], a contract the review page
//! reads) and the standalone HTML document of `…/transcript.html` ([`html`]), both built from
//! the catalog's job row and stored transcript.
//!
//! In the HTML every piece of text that comes from an engine, the catalog or the call is
//! escaped ([`escape`]); the document has no script and loads nothing.

use serde::Serialize;
use store::{StoredTranscript, TranscriptJob, TranscriptSummary};

use crate::sentiment::{Label, Sentiment};

/// Talking speed per speaker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WordsPerMinute {
    pub customer: Option<f64>,
    pub agent: Option<f64>,
}

/// One phrase of the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhraseView {
    /// `customer` or `agent`.
    pub speaker: &'static str,
    /// 1 (customer) or 2 (agent): the recording's channel.
    pub channel: u8,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    pub sentiment: Option<f64>,
    pub label: Option<Label>,
}

/// The transcript of a recording as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptView {
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub engine: String,
    pub language: String,
    /// The call's average sentiment (−1..1).
    pub sentiment: Option<f64>,
    pub label: Option<Label>,
    pub words_per_minute: WordsPerMinute,
    /// Why the job failed (or why its last attempt did, while it waits for a retry).
    pub error: Option<String>,
    pub phrases: Vec<PhraseView>,
}

fn label_of(score: Option<f64>) -> Option<Label> {
    score
        .filter(|s| s.is_finite())
        .map(|s| Sentiment::of(s).label)
}

impl TranscriptView {
    /// The view of a job and, once it is done, its transcript. A transcript stored by an
    /// earlier run is shown while a new job runs.
    pub fn new(job: &TranscriptJob, transcript: Option<&StoredTranscript>) -> TranscriptView {
        let done = job.state == "done";
        let summary = transcript.map(|t| &t.summary);
        let phrases = transcript
            .map(|t| {
                t.phrases
                    .iter()
                    .filter_map(|p| {
                        let (speaker, channel) = match p.speaker.as_str() {
                            "customer" => ("customer", 1),
                            "agent" => ("agent", 2),
                            _ => return None,
                        };
                        Some(PhraseView {
                            speaker,
                            channel,
                            start_ms: p.start_ms,
                            end_ms: p.end_ms,
                            text: p.text.clone(),
                            sentiment: p.sentiment.filter(|s| s.is_finite()),
                            label: label_of(p.sentiment),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sentiment = summary
            .and_then(|s| s.sentiment_avg)
            .filter(|s| s.is_finite());
        TranscriptView {
            state: job.state.clone(),
            engine: summary.map_or(&job.engine, |s| &s.engine).clone(),
            language: summary.map_or(&job.language, |s| &s.language).clone(),
            sentiment,
            label: label_of(sentiment),
            words_per_minute: WordsPerMinute {
                customer: summary.and_then(|s| s.customer_wpm),
                agent: summary.and_then(|s| s.agent_wpm),
            },
            error: if done { None } else { job.error.clone() },
            phrases,
        }
    }
}

/// Adds a transcript's talking speed to a recording's conversation metrics (the
/// `customer_words_per_minute` and `agent_words_per_minute` they leave empty until a
/// transcript exists). Metrics that are absent (not computed) stay absent.
pub fn add_talking_speed(metrics: &mut Option<serde_json::Value>, summary: &TranscriptSummary) {
    if let Some(serde_json::Value::Object(m)) = metrics {
        let wpm = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or(serde_json::Value::Null, serde_json::Value::from)
        };
        m.insert(
            "customer_words_per_minute".into(),
            wpm(summary.customer_wpm),
        );
        m.insert("agent_words_per_minute".into(), wpm(summary.agent_wpm));
    }
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `m:ss.s` (or `h:mm:ss.s`) of a time in ms.
pub fn clock(ms: i64) -> String {
    let ms = ms.max(0);
    let tenths = (ms / 100) % 10;
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{tenths}")
    } else {
        format!("{m}:{s:02}.{tenths}")
    }
}

fn number(v: Option<f64>, decimals: usize) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.decimals$}"),
        None => "–".into(),
    }
}

/// What the document says about the call, above the phrases.
#[derive(Debug, Clone, Default)]
pub struct Heading {
    pub contact_id: String,
    /// The call's start (unix ms), shown in UTC.
    pub start_ms: Option<i64>,
    pub agent: Option<String>,
    pub route: Option<String>,
}

fn utc(ms: i64) -> String {
    let (y, mo, d) = store::storage::civil_date(ms);
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The standalone HTML document of a transcript: a table of phrases with time, speaker,
/// text and sentiment (green positive, red negative, grey neutral), and the call's figures.
pub fn html(heading: &Heading, view: &TranscriptView) -> String {
    let mut o = String::with_capacity(4096 + view.phrases.len() * 200);
    let title = format!("Transcript of {}", heading.contact_id);
    o.push_str("<!DOCTYPE html>\n<html lang=\"");
    o.push_str(&escape(&view.language));
    o.push_str("\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    o.push_str("<title>");
    o.push_str(&escape(&title));
    o.push_str("</title>\n<style>\n");
    o.push_str(
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\n\
         table{border-collapse:collapse;width:100%}\n\
         th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}\n\
         td.time{font-variant-numeric:tabular-nums;white-space:nowrap;color:#555}\n\
         tr.customer td.speaker{color:#1f4e9c}\ntr.agent td.speaker{color:#7a3e9d}\n\
         .positive{border-left:.4rem solid #2e9d4a}\n.negative{border-left:.4rem solid #c62828}\n\
         .neutral{border-left:.4rem solid #9e9e9e}\n.unscored{border-left:.4rem solid transparent}\n\
         span.score{font-size:.85em;color:#666}\ndl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}\n\
         dt{font-weight:600}\n",
    );
    o.push_str("</style>\n</head>\n<body>\n<h1>");
    o.push_str(&escape(&title));
    o.push_str("</h1>\n<dl>\n");
    let mut fact = |k: &str, v: &str, class: Option<&str>| {
        o.push_str("<dt>");
        o.push_str(k);
        o.push_str("</dt><dd");
        if let Some(c) = class {
            o.push_str(" class=\"");
            o.push_str(c);
            o.push('"');
        }
        o.push('>');
        o.push_str(&escape(v));
        o.push_str("</dd>\n");
    };
    if let Some(ms) = heading.start_ms {
        fact("Call started", &utc(ms), None);
    }
    if let Some(a) = &heading.agent {
        fact("Agent", a, None);
    }
    if let Some(r) = &heading.route {
        fact("Route", r, None);
    }
    fact("Engine", &view.engine, None);
    fact("Language", &view.language, None);
    fact("State", &view.state, None);
    if let Some(e) = &view.error {
        fact("Error", e, None);
    }
    let label = view.label.map_or("unscored", Label::as_str);
    fact(
        "Average sentiment",
        &format!("{} ({label})", number(view.sentiment, 2)),
        Some(label),
    );
    fact(
        "Words per minute",
        &format!(
            "customer {}, agent {}",
            number(view.words_per_minute.customer, 0),
            number(view.words_per_minute.agent, 0)
        ),
        None,
    );
    o.push_str("</dl>\n<table>\n<thead><tr><th>Time</th><th>Speaker</th><th>Text</th></tr></thead>\n<tbody>\n");
    for p in &view.phrases {
        let label = p.label.map_or("unscored", Label::as_str);
        o.push_str(&format!(
            "<tr class=\"{speaker}\"><td class=\"time\">{start} – {end}</td>\
             <td class=\"speaker\">{speaker} (channel {channel})</td>\
             <td class=\"{label}\">{text} <span class=\"score\">{score}</span></td></tr>\n",
            speaker = p.speaker,
            channel = p.channel,
            start = clock(p.start_ms),
            end = clock(p.end_ms),
            text = escape(&p.text),
            score = match p.sentiment {
                Some(s) => format!("{label} {s:+.2}"),
                None => "unscored".into(),
            },
        ));
    }
    o.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::PhraseRow;

    fn job(state: &str, error: Option<&str>) -> TranscriptJob {
        TranscriptJob {
            contact_id: "c1".into(),
            node: "n".into(),
            state: state.into(),
            attempts: 1,
            next_at_ms: 0,
            error: error.map(str::to_string),
            engine: "pocketsphinx".into(),
            language: "en".into(),
            updated_ms: 0,
        }
    }

    fn stored() -> StoredTranscript {
        let p = |speaker: &str, start_ms, text: &str, sentiment| PhraseRow {
            speaker: speaker.into(),
            start_ms,
            end_ms: start_ms + 900,
            text: text.into(),
            sentiment,
            words: serde_json::json!([]),
        };
        StoredTranscript {
            summary: TranscriptSummary {
                contact_id: "c1".into(),
                engine: "http".into(),
                language: "en-US".into(),
                phrase_count: 3,
                sentiment_avg: Some(-0.2),
                customer_wpm: Some(120.0),
                agent_wpm: None,
                created_ms: 0,
            },
            phrases: vec![
                p(
                    "customer",
                    500,
                    "<script>alert('x')</script> & \"so\"",
                    Some(-0.6),
                ),
                p("agent", 1500, "thank you", Some(0.6)),
                p("agent", 62_000, "ok", None),
                p("robot", 70_000, "never shown", None),
            ],
        }
    }

    #[test]
    fn the_view_is_the_api_contract() {
        let t = stored();
        let v = TranscriptView::new(&job("done", Some("old")), Some(&t));
        let j = serde_json::to_value(&v).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = [
            "state",
            "engine",
            "language",
            "sentiment",
            "label",
            "words_per_minute",
            "error",
            "phrases",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(j["state"], "done");
        assert_eq!(j["engine"], "http");
        assert_eq!(j["language"], "en-US");
        assert_eq!(j["sentiment"], -0.2);
        assert_eq!(j["label"], "negative");
        assert_eq!(
            j["words_per_minute"],
            serde_json::json!({"customer": 120.0, "agent": null})
        );
        assert_eq!(j["error"], serde_json::Value::Null);
        assert_eq!(j["phrases"].as_array().unwrap().len(), 3);
        assert_eq!(
            j["phrases"][0],
            serde_json::json!({"speaker": "customer", "channel": 1, "start_ms": 500,
                "end_ms": 1400, "text": "<script>alert('x')</script> & \"so\"",
                "sentiment": -0.6, "label": "negative"})
        );
        assert_eq!(j["phrases"][1]["channel"], 2);
        assert_eq!(j["phrases"][1]["label"], "positive");
        assert_eq!(j["phrases"][2]["sentiment"], serde_json::Value::Null);
        assert_eq!(j["phrases"][2]["label"], serde_json::Value::Null);
    }

    #[test]
    fn a_job_without_a_transcript_shows_its_state_and_error() {
        let v = TranscriptView::new(&job("failed", Some("engine: HTTP 500")), None);
        assert_eq!(v.state, "failed");
        assert_eq!(v.engine, "pocketsphinx");
        assert_eq!(v.error.as_deref(), Some("engine: HTTP 500"));
        assert!(v.phrases.is_empty());
        assert_eq!(v.sentiment, None);
        assert_eq!(v.label, None);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j["words_per_minute"],
            serde_json::json!({"customer": null, "agent": null})
        );
    }

    #[test]
    fn the_document_escapes_everything_and_colours_sentiment() {
        let t = stored();
        let v = TranscriptView::new(&job("done", None), Some(&t));
        let h = html(
            &Heading {
                contact_id: "c1<i>".into(),
                start_ms: Some(1_700_000_000_000),
                agent: Some("anna & <b>co</b>".into()),
                route: None,
            },
            &v,
        );
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<i>") && !h.contains("<b>"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;so&quot;"));
        assert!(h.contains("anna &amp; &lt;b&gt;co&lt;/b&gt;"));
        assert!(h.contains("Transcript of c1&lt;i&gt;"));
        assert!(h.contains("2023-11-14 22:13:20 UTC"), "{h}");
        assert!(h.contains("<td class=\"negative\">"));
        assert!(h.contains("<td class=\"positive\">thank you"));
        assert!(h.contains("<td class=\"unscored\">ok"));
        assert!(h.contains("1:02.0"), "{h}");
        assert!(h.contains("customer (channel 1)") && h.contains("agent (channel 2)"));
        assert!(!h.contains("never shown"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "loads nothing"
        );
    }

    #[test]
    fn talking_speed_joins_the_metrics() {
        let s = stored().summary;
        let mut m = Some(serde_json::json!({"duration_ms": 1000,
            "customer_words_per_minute": null, "agent_words_per_minute": null}));
        add_talking_speed(&mut m, &s);
        let m = m.unwrap();
        assert_eq!(m["customer_words_per_minute"], 120.0);
        assert_eq!(m["agent_words_per_minute"], serde_json::Value::Null);
        assert_eq!(m["duration_ms"], 1000);
        let mut none = None;
        add_talking_speed(&mut none, &s);
        assert_eq!(none, None);
    }

    #[test]
    fn clocks_and_escapes() {
        assert_eq!(clock(0), "0:00.0");
        assert_eq!(clock(61_250), "1:01.2");
        assert_eq!(clock(3_723_400), "1:02:03.4");
        assert_eq!(clock(-5), "0:00.0");
        assert_eq!(escape("a\u{0}b\nc"), "a b\nc");
    }
}
