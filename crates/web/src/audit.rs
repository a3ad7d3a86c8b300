//! The audit log for admins: a filter (actor, action, time), the entries newest first with
//! cursor paging, links that export what the filter selects (CSV or JSON lines), and the
//! verdict of the chain check.
//!
//! Checking the chain reads the whole log, so the page never does it on a view: the button
//! posts to `/audit/verify` and the page that answers shows the verdict.

use access::Action;
use maud::{html, Markup};
use store::{AuditEntry, AuditOrder, AuditQuery, ChainVerdict};

use crate::layout::{page, Chrome};
use crate::search::time_tag;
use crate::time::{datetime_local, iso_utc, parse_datetime_local};
use crate::WebError;

/// Where the log is.
pub const PATH: &str = "/audit";
/// Entries per page.
pub const PAGE: u32 = 100;

/// The filter of the page, as typed (empty fields left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// JSON lines, every field with the hashes, so an export verifies on its own.
    Jsonl,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" | "json" => Some(ExportFormat::Jsonl),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }
}

/// A time of the filter: `datetime-local` (UTC), RFC 3339 or unix milliseconds.
fn time(param: &'static str, v: &str) -> Result<i64, WebError> {
    match parse_datetime_local(v) {
        Some(ms) => Ok(ms),
        None => Ok(store::api::parse_time(param, v)?),
    }
}

impl AuditFilter {
    /// Reads the page's parameters; `format` is allowed too (the export's). Unknown names
    /// and repeats are refused.
    pub fn from_params(raw: &[(String, String)]) -> Result<AuditFilter, WebError> {
        let mut f = AuditFilter::default();
        for (k, v) in raw {
            let v = v.trim();
            let slot = match k.as_str() {
                "actor" => &mut f.actor,
                "action" => &mut f.action,
                "from" => &mut f.from,
                "to" => &mut f.to,
                "cursor" => &mut f.cursor,
                "format" => continue,
                other => {
                    return Err(WebError::param(
                        &other.chars().take(64).collect::<String>(),
                        "unknown parameter",
                    ))
                }
            };
            if slot.is_some() {
                return Err(WebError::param(k, "given more than once"));
            }
            if !v.is_empty() {
                if v.chars().count() > store::api::MAX_TEXT || v.chars().any(char::is_control) {
                    return Err(WebError::param(k, "not a valid value"));
                }
                *slot = Some(v.to_string());
            }
        }
        Ok(f)
    }

    /// The catalog listing: newest first for the page, oldest first for an export.
    pub fn query(&self, order: AuditOrder, limit: u32) -> Result<AuditQuery, WebError> {
        if let Some(a) = &self.action {
            if Action::parse(a).is_none() {
                return Err(WebError::param("action", "unknown action"));
            }
        }
        let cursor = match &self.cursor {
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| WebError::param("cursor", "not a cursor"))?,
            ),
            None => None,
        };
        let from_ms = self.from.as_deref().map(|v| time("from", v)).transpose()?;
        let to_ms = self.to.as_deref().map(|v| time("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from_ms, to_ms) {
            if t < f {
                return Err(WebError::param("to", "before from"));
            }
        }
        Ok(AuditQuery {
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: None,
            from_ms,
            to_ms,
            order,
            cursor,
            limit,
        })
    }

    fn pairs(&self, cursor: Option<&str>) -> Vec<(&'static str, String)> {
        let norm = |v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_datetime_local(s).map_or_else(|| s.to_string(), iso_utc))
        };
        let mut p = Vec::new();
        for (k, v) in [
            ("actor", self.actor.clone()),
            ("action", self.action.clone()),
            ("from", norm(&self.from)),
            ("to", norm(&self.to)),
            ("cursor", cursor.map(str::to_string)),
        ] {
            if let Some(v) = v {
                p.push((k, v));
            }
        }
        p
    }

    fn href(&self, path: &str, cursor: Option<&str>, extra: Option<(&str, &str)>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs(cursor) {
            s.append_pair(k, &v);
        }
        if let Some((k, v)) = extra {
            s.append_pair(k, v);
        }
        let q = s.finish();
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }

    /// The next page's link.
    pub fn next_href(&self, next_seq: i64) -> String {
        self.href(PATH, Some(&next_seq.to_string()), None)
    }

    /// The export of what the filter selects (every page of it).
    pub fn export_href(&self, format: ExportFormat) -> String {
        self.href(
            &format!("{PATH}/export"),
            None,
            Some(("format", format.extension())),
        )
    }

    fn time_value(v: &Option<String>) -> Option<String> {
        let v = v.as_deref()?;
        Some(
            time("from", v)
                .map(datetime_local)
                .unwrap_or_else(|_| v.to_string()),
        )
    }
}

/// What the audit page shows.
#[derive(Debug, Clone, Copy)]
pub struct AuditView<'a> {
    pub filter: &'a AuditFilter,
    pub entries: &'a [AuditEntry],
    pub next: Option<i64>,
    /// The verdict of a check just run (`None`: not checked on this page).
    pub verdict: Option<&'a ChainVerdict>,
    /// A filter that did not parse.
    pub error: Option<&'a str>,
}

fn verdict(v: &ChainVerdict) -> Markup {
    match v {
        ChainVerdict::Intact { entries, head_hash } => html! {
            p.notice.ok role="status" #chain-verdict data-intact="true" {
                "The audit chain is intact: " (entries) " entries, head " code { (head_hash) } "."
            }
        },
        ChainVerdict::Broken(b) => html! {
            p.notice.error role="alert" #chain-verdict data-intact="false" {
                "The audit chain is broken at entry " (b.seq) ": " (b.kind.to_string()) "."
            }
        },
    }
}

/// The audit page.
pub fn audit_page(chrome: &Chrome<'_>, v: AuditView<'_>) -> Markup {
    let f = v.filter;
    let from_utc = f
        .from
        .as_deref()
        .and_then(|s| time("from", s).ok())
        .map(iso_utc);
    let to_utc =
        f.to.as_deref()
            .and_then(|s| time("to", s).ok())
            .map(iso_utc);
    page(
        chrome,
        "Audit log",
        html! {
            h1 { "Audit log" }
            form #search.filters method="get" action=(PATH) {
                fieldset {
                    label { "Actor" input name="actor" value=[f.actor.as_deref()] placeholder="username, token:name, cli"; }
                    label { "Action"
                        select name="action" {
                            option value="" { "any" }
                            @for a in Action::ALL {
                                option value=(a.as_str()) selected[f.action.as_deref() == Some(a.as_str())] { (a.as_str()) }
                            }
                        }
                    }
                    label { "From" input type="datetime-local" name="from" value=[AuditFilter::time_value(&f.from)] data-utc=[from_utc]; }
                    label { "To" input type="datetime-local" name="to" value=[AuditFilter::time_value(&f.to)] data-utc=[to_utc]; }
                }
                div.actions {
                    button type="submit" { "Filter" }
                    " " a href=(PATH) { "Clear" }
                    " · Export: "
                    a #export-csv href=(f.export_href(ExportFormat::Csv)) download { "CSV" }
                    " "
                    a #export-jsonl href=(f.export_href(ExportFormat::Jsonl)) download { "JSON lines" }
                }
            }
            form.verify method="post" action={ (PATH) "/verify" } {
                input type="hidden" name="csrf" value=[chrome.csrf];
                button #verify type="submit" { "Check the chain" }
                " "
                span.meta { "Reads the whole log; may take a while on a long one." }
            }
            @if let Some(verdict_) = v.verdict { (verdict(verdict_)) }
            @if let Some(err) = v.error { p.notice.error role="alert" { (err) } }
            @if v.entries.is_empty() {
                p.empty { "No entries match." }
            } @else {
                table.list.audit {
                    thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "From" } th { "Detail" } } }
                    tbody {
                        @for e in v.entries {
                            tr {
                                td.num { (e.seq) }
                                td { (time_tag(e.at_ms)) }
                                td { (e.actor) }
                                td { (e.action) }
                                td { (e.target.as_deref().unwrap_or("")) }
                                td { (e.from.as_deref().unwrap_or("")) }
                                td { code { (store::audit::canonical_json(&e.detail)) } }
                            }
                        }
                    }
                }
            }
            @if let Some(n) = v.next {
                nav.paging { a rel="next" href=(f.next_href(n)) { "Older entries →" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{BreakKind, ChainBreak};

    const XSS: &str = "<script>alert(1)</script>";

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_filter_becomes_a_listing_and_links() {
        let f = AuditFilter::from_params(&pairs(&[
            ("actor", "anna"),
            ("action", "role_change"),
            ("from", "2026-03-01T09:30"),
            ("to", ""),
        ]))
        .unwrap();
        let q = f.query(AuditOrder::NewestFirst, PAGE).unwrap();
        assert_eq!(q.actor.as_deref(), Some("anna"));
        assert_eq!(q.from_ms, Some(1_772_357_400_000));
        assert_eq!(q.to_ms, None);
        assert_eq!(q.limit, PAGE);
        assert_eq!(
            f.export_href(ExportFormat::Csv),
            "/audit/export?actor=anna&action=role_change&from=2026-03-01T09%3A30%3A00Z&format=csv"
        );
        assert_eq!(
            f.next_href(41),
            "/audit?actor=anna&action=role_change&from=2026-03-01T09%3A30%3A00Z&cursor=41"
        );
        assert_eq!(
            AuditFilter::default().export_href(ExportFormat::Jsonl),
            "/audit/export?format=jsonl"
        );
        for bad in [
            &[("action", "sudo")][..],
            &[("cursor", "x")],
            &[("from", "yesterday")],
            &[("from", "2026-03-02T00:00"), ("to", "2026-03-01T00:00")],
        ] {
            let f = AuditFilter::from_params(&pairs(bad)).unwrap();
            assert!(f.query(AuditOrder::NewestFirst, PAGE).is_err(), "{bad:?}");
        }
        assert!(AuditFilter::from_params(&pairs(&[("bogus", "1")])).is_err());
        assert!(AuditFilter::from_params(&pairs(&[("actor", "a"), ("actor", "b")])).is_err());
        assert_eq!(ExportFormat::parse("json"), Some(ExportFormat::Jsonl));
        assert_eq!(ExportFormat::parse("xml"), None);
    }

    #[test]
    fn entries_and_verdicts_are_shown_escaped() {
        let e = AuditEntry {
            seq: 7,
            at_ms: 1_772_357_405_250,
            actor: XSS.into(),
            action: XSS.into(),
            target: Some(XSS.into()),
            detail: serde_json::json!({ "q": XSS }),
            from: Some(XSS.into()),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        };
        let f = AuditFilter {
            actor: Some(XSS.into()),
            ..Default::default()
        };
        let broken = ChainVerdict::Broken(ChainBreak {
            seq: 5,
            kind: BreakKind::Altered,
        });
        let html = audit_page(
            &Chrome::anonymous(),
            AuditView {
                filter: &f,
                entries: &[e],
                next: Some(6),
                verdict: Some(&broken),
                error: Some(XSS),
            },
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("broken at entry 5"));
        assert!(html.contains(r#"data-intact="false""#));
        assert!(html.contains(r#"action="/audit/verify""#));
        let intact = ChainVerdict::Intact {
            entries: 12,
            head_hash: "ab".repeat(32),
        };
        let html = audit_page(
            &Chrome::anonymous(),
            AuditView {
                filter: &AuditFilter::default(),
                entries: &[],
                next: None,
                verdict: Some(&intact),
                error: None,
            },
        )
        .into_string();
        assert!(html.contains("intact: 12 entries"));
        assert!(html.contains("No entries match."));
    }
}
