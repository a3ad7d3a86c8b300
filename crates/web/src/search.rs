//! The recordings list: the catalog's filters as a form, the rows the viewer may see, sort
//! links on the sortable columns and cursor paging.
//!
//! The form's fields have the names of the recordings API's search parameters
//! (`store::api::SEARCH_PARAMS`), so a page URL and an API URL say the same thing and
//! [`SearchForm::query`] is `store`'s own parser. An empty field is no filter. Time fields
//! are `datetime-local`: the script sends them as RFC 3339 UTC; a value without a zone is
//! read as UTC. The viewer's restriction is not the form's business: the binary puts it on
//! the query after this, so an agent or team that does not exist, or that the viewer may not
//! see, gives an empty list.

use maud::{html, Markup};
use store::{Entry, Query, Sort};

use crate::layout::{page, Chrome};
use crate::time::{clock, datetime_local, human_utc, iso_utc, parse_datetime_local, seconds};
use crate::WebError;

/// Where the list is.
pub const PATH: &str = "/recordings";

/// The search as the page's URL carries it: the non-empty parameters, in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchForm {
    params: Vec<(String, String)>,
}

/// A sortable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Start,
    Duration,
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page of one recording.
pub fn recording_href(contact_id: &str) -> String {
    format!("{PATH}/{}", path_segment(contact_id))
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl SearchForm {
    /// The search of a page request: its query-string pairs without the empty ones.
    pub fn from_params(raw: &[(String, String)]) -> SearchForm {
        SearchForm {
            params: raw
                .iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .cloned()
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parameters as the API reads them: `datetime-local` times become RFC 3339 UTC.
    pub fn api_params(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(k, v)| match (k.as_str(), parse_datetime_local(v)) {
                ("from" | "to", Some(ms)) => (k.clone(), iso_utc(ms)),
                _ => (k.clone(), v.clone()),
            })
            .collect()
    }

    /// The catalog query (without the viewer's restriction); an error names the parameter.
    pub fn query(&self) -> Result<Query, WebError> {
        Ok(Query::from_params(&self.api_params())?)
    }

    /// The order asked for (the default when none, or one that does not parse).
    pub fn sort(&self) -> Sort {
        self.get("sort").and_then(Sort::parse).unwrap_or_default()
    }

    /// This search with `changes` applied (`None` removes a parameter), as a page URL.
    pub fn href(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut p: Vec<(String, String)> = self
            .api_params()
            .into_iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .collect();
        for (k, v) in changes {
            if let Some(v) = v {
                p.push((k.to_string(), v.to_string()));
            }
        }
        if p.is_empty() {
            PATH.to_string()
        } else {
            format!("{PATH}?{}", encode(&p))
        }
    }

    /// The link of a column's header: sorted by it, descending first, the other way when
    /// it already is; back to the first page.
    pub fn sort_href(&self, column: Column) -> String {
        let next = match (column, self.sort()) {
            (Column::Start, Sort::StartDesc) => "start_asc",
            (Column::Start, _) => "start_desc",
            (Column::Duration, Sort::DurationDesc) => "duration_asc",
            (Column::Duration, _) => "duration_desc",
        };
        self.href(&[("sort", Some(next)), ("cursor", None)])
    }

    /// The next page's link.
    pub fn next_href(&self, cursor: &str) -> String {
        self.href(&[("cursor", Some(cursor))])
    }

    /// The first page's link.
    pub fn first_href(&self) -> String {
        self.href(&[("cursor", None)])
    }

    /// The value a `datetime-local` field shows for `name`: the time in UTC (the script
    /// shows it in the viewer's zone), or what was typed when it does not parse.
    fn time_field(&self, name: &str) -> (Option<String>, Option<String>) {
        let Some(v) = self.get(name) else {
            return (None, None);
        };
        let ms = parse_datetime_local(v).or_else(|| store::api::parse_time("from", v).ok());
        match ms {
            Some(ms) => (Some(datetime_local(ms)), Some(iso_utc(ms))),
            None => (Some(v.to_string()), None),
        }
    }
}

/// A metric of an entry's stored conversation metrics.
pub(crate) fn metric_u64(e: &Entry, name: &str) -> Option<u64> {
    e.metrics.as_ref()?.get(name)?.as_u64()
}

/// A time as `<time>`: UTC text, localized by the script.
pub fn time_tag(ms: i64) -> Markup {
    html! { time datetime=(iso_utc(ms)) { (human_utc(ms)) } }
}

fn dash(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "—",
    }
}

fn sort_mark(form: &SearchForm, column: Column) -> &'static str {
    match (column, form.sort()) {
        (Column::Start, Sort::StartDesc) | (Column::Duration, Sort::DurationDesc) => " ▼",
        (Column::Start, Sort::StartAsc) | (Column::Duration, Sort::DurationAsc) => " ▲",
        _ => "",
    }
}

fn text_field(form: &SearchForm, name: &str, label: &str, hint: &str) -> Markup {
    html! {
        label { (label)
            input name=(name) value=[form.get(name)] placeholder=[(!hint.is_empty()).then_some(hint)];
        }
    }
}

fn select(form: &SearchForm, name: &str, label: &str, options: &[(&str, &str)]) -> Markup {
    let current = form.get(name).unwrap_or("");
    html! {
        label { (label)
            select name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[*value == current] { (text) }
                }
            }
        }
    }
}

fn filters(form: &SearchForm) -> Markup {
    let (from, from_utc) = form.time_field("from");
    let (to, to_utc) = form.time_field("to");
    html! {
        form #search.filters method="get" action=(PATH) {
            fieldset {
                legend { "Time" }
                label { "From"
                    input type="datetime-local" name="from" value=[from] data-utc=[from_utc];
                }
                label { "To"
                    input type="datetime-local" name="to" value=[to] data-utc=[to_utc];
                }
            }
            fieldset {
                legend { "Who" }
                (text_field(form, "agent", "Agent", "agent id"))
                (text_field(form, "team", "Team", ""))
                (text_field(form, "queue", "Queue", ""))
                (text_field(form, "number", "Customer number", "starts with, e.g. +4930"))
                label { "Direction"
                    input name="direction" list="directions" value=[form.get("direction")];
                }
                datalist #directions {
                    @for d in ["inbound", "outbound", "inbound_direct", "inbound_ivr"] {
                        option value=(d) {}
                    }
                }
            }
            fieldset {
                legend { "Conversation" }
                (text_field(form, "min_duration", "Duration from (s)", ""))
                (text_field(form, "max_duration", "Duration to (s)", ""))
                (text_field(form, "min_silence", "Silence of at least (s)", ""))
                (text_field(form, "min_overtalk", "Overtalk of at least (s)", ""))
                (select(form, "has_statement", "Recorded statement", &[("", "any"), ("true", "with"), ("false", "without")]))
                (select(form, "state", "State", &[
                    ("", "any but deleted"), ("recording", "recording"), ("finished", "finished"),
                    ("interrupted", "interrupted"), ("stored", "stored"), ("deleted", "deleted"),
                ]))
            }
            @if let Some(s) = form.get("sort") {
                input type="hidden" name="sort" value=(s);
            }
            @if let Some(l) = form.get("limit") {
                input type="hidden" name="limit" value=(l);
            }
            div.actions {
                button type="submit" { "Search" }
                " "
                a href=(PATH) { "Clear" }
            }
        }
    }
}

fn row(e: &Entry) -> Markup {
    let href = recording_href(&e.contact_id);
    html! {
        tr {
            td { a href=(href) { (time_tag(e.start_ms)) } }
            td.num { (clock(e.duration_ms)) }
            td { (e.direction) }
            td { (dash(e.customer_number.as_deref())) }
            td { (dash(e.agent.as_deref())) }
            td { (dash(e.team.as_deref())) }
            td { (dash(e.queue.as_deref())) }
            td { @if e.has_statement { "yes" } }
            td.num { @if let Some(s) = metric_u64(e, "longest_silence_ms") { (seconds(s as i64)) } }
            td.num { @if let Some(s) = metric_u64(e, "overtalk_ms") { (seconds(s as i64)) } }
            td {
                (e.state.as_str())
                @if e.legal_hold { " " span.badge { "hold" } }
            }
        }
    }
}

/// The recordings list. `error` is a parameter that did not parse (the list is then empty
/// and the form says why).
pub fn search_page(
    chrome: &Chrome<'_>,
    form: &SearchForm,
    rows: &[Entry],
    next: Option<&str>,
    error: Option<&str>,
) -> Markup {
    page(
        chrome,
        "Recordings",
        html! {
            h1 { "Recordings" }
            (filters(form))
            @if let Some(err) = error {
                p.notice.error role="alert" { (err) }
            }
            @if rows.is_empty() {
                p.empty { "No recordings match." }
            } @else {
                table.list {
                    thead { tr {
                        th { a href=(form.sort_href(Column::Start)) { "Start" (sort_mark(form, Column::Start)) } }
                        th { a href=(form.sort_href(Column::Duration)) { "Duration" (sort_mark(form, Column::Duration)) } }
                        th { "Direction" } th { "Customer" } th { "Agent" } th { "Team" } th { "Queue" }
                        th { "Statement" } th { "Longest silence" } th { "Overtalk" } th { "State" }
                    } }
                    tbody { @for e in rows { (row(e)) } }
                }
            }
            nav.paging {
                @if form.get("cursor").is_some() {
                    a href=(form.first_href()) { "← First page" }
                }
                @if let Some(c) = next {
                    " "
                    a rel="next" href=(form.next_href(c)) { "Next page →" }
                }
            }
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use store::State;

    pub(crate) const XSS: &str = "<script>alert(1)</script>";

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An entry with markup in every text field.
    pub(crate) fn hostile_entry() -> Entry {
        let meta = recorder::RecordingMetadata {
            contact_id: format!("c-{XSS}"),
            call_id_customer: Some(XSS.into()),
            call_id_agent: Some(XSS.into()),
            from: format!("sip:{XSS}@x"),
            to: format!("sip:{XSS}@y"),
            route: XSS.into(),
            direction: XSS.into(),
            start_unix_ms: 1_772_357_405_250,
            duration_ms: 65_000,
            call_duration_ms: 70_000,
            agent_id: Some(XSS.into()),
            team: Some(XSS.into()),
            queue: Some(XSS.into()),
            skill: Some(XSS.into()),
            customer_number: Some(XSS.into()),
            station: Some(XSS.into()),
            ..Default::default()
        };
        let mut e = Entry::from_metadata(&meta, XSS, State::Stored, 0).unwrap();
        e.error = Some(XSS.into());
        e.codecs_customer = vec![XSS.into()];
        e.codecs_agent = vec![XSS.into()];
        e.has_statement = true;
        e.legal_hold = true;
        e
    }

    #[test]
    fn empty_fields_are_no_filter_and_local_times_are_utc() {
        let f = SearchForm::from_params(&pairs(&[
            ("agent", ""),
            ("team", "  "),
            ("from", "2026-03-01T09:30"),
            ("queue", "q1"),
        ]));
        assert_eq!(f.get("agent"), None);
        let q = f.query().unwrap();
        assert_eq!(q.from_ms, Some(1_772_357_400_000));
        assert_eq!(q.queue.as_deref(), Some("q1"));
        assert_eq!(q.agent, None);
        assert_eq!(q.restrict, None, "the binary restricts, not the form");
        let f = SearchForm::from_params(&pairs(&[("from", "2026-03-01T09:30:00Z")]));
        assert_eq!(f.query().unwrap().from_ms, Some(1_772_357_400_000));
    }

    #[test]
    fn a_bad_parameter_is_named() {
        for (k, v) in [
            ("min_duration", "long"),
            ("from", "yesterday"),
            ("bogus", "1"),
            ("sort", "agent"),
        ] {
            let err = SearchForm::from_params(&pairs(&[(k, v)]))
                .query()
                .unwrap_err();
            match &err {
                WebError::BadParam { param, .. } => assert_eq!(param, k, "{err}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn sort_links_toggle_and_paging_keeps_the_filters() {
        let f = SearchForm::from_params(&pairs(&[
            ("agent", "anna & bert"),
            ("from", "2026-03-01T09:30"),
            ("cursor", "abc"),
        ]));
        assert_eq!(
            f.sort_href(Column::Start),
            "/recordings?agent=anna+%26+bert&from=2026-03-01T09%3A30%3A00Z&sort=start_asc"
        );
        assert_eq!(
            f.sort_href(Column::Duration),
            "/recordings?agent=anna+%26+bert&from=2026-03-01T09%3A30%3A00Z&sort=duration_desc"
        );
        let g = SearchForm::from_params(&pairs(&[("sort", "duration_desc")]));
        assert_eq!(
            g.sort_href(Column::Duration),
            "/recordings?sort=duration_asc"
        );
        assert_eq!(
            f.next_href("6e6578742f"),
            "/recordings?agent=anna+%26+bert&from=2026-03-01T09%3A30%3A00Z&cursor=6e6578742f"
        );
        assert_eq!(
            f.first_href(),
            "/recordings?agent=anna+%26+bert&from=2026-03-01T09%3A30%3A00Z"
        );
        assert_eq!(SearchForm::default().first_href(), "/recordings");
        let html = search_page(
            &Chrome::anonymous(),
            &f,
            &[hostile_entry()],
            Some("6e6578742f"),
            None,
        )
        .into_string();
        assert!(
            html.contains(r#"rel="next" href="/recordings?agent=anna+%26+bert&amp;from="#),
            "{html}"
        );
        assert!(html.contains("← First page"));
        let last = search_page(
            &Chrome::anonymous(),
            &SearchForm::default(),
            &[],
            None,
            None,
        )
        .into_string();
        assert!(!last.contains("rel=\"next\"") && !last.contains("First page"));
        assert!(last.contains("No recordings match."));
    }

    #[test]
    fn every_field_of_a_row_and_the_form_is_escaped() {
        let raw: Vec<(String, String)> = store::api::SEARCH_PARAMS
            .iter()
            .map(|p| (p.to_string(), XSS.to_string()))
            .collect();
        let f = SearchForm::from_params(&raw);
        let err = f.query().unwrap_err().to_string();
        let html = search_page(
            &Chrome::anonymous(),
            &f,
            &[hostile_entry()],
            Some(XSS),
            Some(&err),
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("/recordings/c-%3Cscript%3Ealert%281%29%3C%2Fscript%3E"),
            "the id is a path segment"
        );
        assert!(html
            .contains(r#"<time datetime="2026-03-01T09:30:05Z">2026-03-01 09:30:05 UTC</time>"#));
        assert!(html.contains(">1:05<"), "the duration");
        assert_eq!(path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
    }
}
