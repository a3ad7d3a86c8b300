//! The decisions of the recordings API that do not need a socket: request parameters into a
//! [`Query`] (errors name the parameter), the HTTP `Range` header (RFC 9110 §14), entity tags,
//! content types, and whether an entry's audio can be served.
//!
//! The HTTP adapter (the binary's `api` module) only moves bytes between these functions, the
//! [`crate::Catalog`] and the [`crate::Storage`].

use std::ops::Range;

use crate::error::StoreError;
use crate::model::{Entry, State, Statement};
use crate::search::{Query, Sort, MAX_LIMIT};

/// Decoded query-string pairs, in the order they came.
pub type Params = [(String, String)];

/// Waveform buckets per channel when `buckets` is not given: enough for a full-width canvas.
pub const DEFAULT_PEAK_BUCKETS: usize = 4000;
/// The most waveform buckets per channel one request may ask for.
pub const MAX_PEAK_BUCKETS: usize = 100_000;
/// Longest accepted value of a text filter (agent, team, queue, number, direction).
pub const MAX_TEXT: usize = 256;
/// Longest duration bound accepted, in seconds (about 31 years: anything above is a typo).
const MAX_SECONDS: f64 = 1e9;

fn bad(param: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::BadQuery {
        param,
        reason: reason.into(),
    }
}

/// Refuses a parameter not in `known`, and any parameter given twice.
fn check_names(params: &Params, known: &[&'static str]) -> Result<(), StoreError> {
    for (i, (name, _)) in params.iter().enumerate() {
        let Some(&known_name) = known.iter().find(|k| **k == name.as_str()) else {
            return Err(StoreError::UnknownParam {
                param: name.chars().take(MAX_TEXT).collect(),
            });
        };
        if params[..i].iter().any(|(n, _)| n == name) {
            return Err(bad(known_name, "given more than once"));
        }
    }
    Ok(())
}

/// A time: RFC 3339 (`2024-03-01T09:30:00Z`, `2024-03-01T10:30:00.5+01:00`) or unix
/// milliseconds (`1709285400000`). Returns unix milliseconds.
pub fn parse_time(param: &'static str, v: &str) -> Result<i64, StoreError> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| bad(param, "unix milliseconds out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            bad(
                param,
                format!("expected RFC 3339 (2024-03-01T09:30:00Z) or unix milliseconds: {e}"),
            )
        })
}

/// Seconds (fractions allowed: `90`, `2.5`) into milliseconds, rounded to the nearest.
pub fn parse_seconds(param: &'static str, v: &str) -> Result<i64, StoreError> {
    let s: f64 = v
        .trim()
        .parse()
        .map_err(|_| bad(param, "expected seconds, e.g. 90 or 2.5"))?;
    if !s.is_finite() || s < 0.0 {
        return Err(bad(param, "expected a non-negative number of seconds"));
    }
    if s > MAX_SECONDS {
        return Err(bad(param, "too large"));
    }
    Ok((s * 1000.0).round() as i64)
}

fn parse_bool(param: &'static str, v: &str) -> Result<bool, StoreError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(param, "expected true or false")),
    }
}

fn text(param: &'static str, v: &str) -> Result<String, StoreError> {
    if v.is_empty() {
        return Err(bad(param, "empty"));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(bad(param, format!("longer than {MAX_TEXT} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(bad(param, "control characters"));
    }
    Ok(v.to_string())
}

/// The search parameters of `GET /api/v1/recordings`.
pub const SEARCH_PARAMS: [&str; 17] = [
    "from",
    "to",
    "agent",
    "team",
    "queue",
    "direction",
    "number",
    "min_duration",
    "max_duration",
    "has_statement",
    "min_silence",
    "min_overtalk",
    "text",
    "state",
    "sort",
    "cursor",
    "limit",
];

impl Query {
    /// Builds a search from query-string parameters (see [`SEARCH_PARAMS`]):
    ///
    /// * `from`, `to`: the call's start, RFC 3339 or unix ms; `from` included, `to` excluded.
    /// * `agent`, `team`, `queue`, `direction`: exact values as catalogued. The recorder writes
    ///   the route's `direction` label (`inbound`, `outbound` by convention), else the
    ///   policy's classification (`outbound`, `inbound_direct`, `inbound_ivr`).
    /// * `number`: customer numbers starting with it. A leading space is taken for the `+`
    ///   that form decoding turns into one (`number=+4930` unencoded).
    /// * `min_duration`, `max_duration`: recorded length in seconds (fractions allowed),
    ///   inclusive.
    /// * `has_statement`: `true` or `false`.
    /// * `min_silence`: a silence (neither side speaking) at least this many seconds long.
    /// * `min_overtalk`: both sides talking over each other at least this many seconds in all.
    /// * `text`: a transcript phrase holds every word of it (full text, see
    ///   [`crate::transcripts`]); at most 16 words.
    /// * `state`: `recording`, `finished`, `interrupted`, `stored` or `deleted` (purged).
    /// * `sort`: `start_desc` (default), `start_asc`, `duration_desc`, `duration_asc`.
    /// * `cursor`: a previous page's `next_cursor`, with the same `sort`.
    /// * `limit`: page size, 1 to 1000 (default 50).
    ///
    /// A parameter that does not parse, a name not in the list and a name given twice are
    /// errors that name the parameter. The result is checked as a whole (`to` before `from`,
    /// a cursor of another sort) before it is returned.
    pub fn from_params(params: &Params) -> Result<Query, StoreError> {
        check_names(params, &SEARCH_PARAMS)?;
        let mut q = Query::default();
        for (name, v) in params {
            match name.as_str() {
                "from" => q.from_ms = Some(parse_time("from", v)?),
                "to" => q.to_ms = Some(parse_time("to", v)?),
                "agent" => q.agent = Some(text("agent", v)?),
                "team" => q.team = Some(text("team", v)?),
                "queue" => q.queue = Some(text("queue", v)?),
                "direction" => q.direction = Some(text("direction", v)?),
                "number" => {
                    let n = match v.strip_prefix(' ') {
                        Some(rest) => format!("+{rest}"),
                        None => v.clone(),
                    };
                    q.customer_prefix = Some(text("number", &n)?);
                }
                "min_duration" => q.min_duration_ms = Some(parse_seconds("min_duration", v)?),
                "max_duration" => q.max_duration_ms = Some(parse_seconds("max_duration", v)?),
                "has_statement" => q.has_statement = Some(parse_bool("has_statement", v)?),
                "min_silence" => q.min_silence_ms = Some(parse_seconds("min_silence", v)?),
                "min_overtalk" => q.min_overtalk_ms = Some(parse_seconds("min_overtalk", v)?),
                "text" => q.text = Some(text("text", v)?),
                "state" => {
                    q.state = Some(State::parse(v).ok_or_else(|| {
                        bad(
                            "state",
                            "expected recording, finished, interrupted, stored or deleted",
                        )
                    })?)
                }
                "sort" => {
                    q.sort = Sort::parse(v).ok_or_else(|| {
                        bad(
                            "sort",
                            "expected start_desc, start_asc, duration_desc or duration_asc",
                        )
                    })?
                }
                "cursor" => q.cursor = Some(text("cursor", v)?),
                "limit" => {
                    q.limit = match v.parse::<u32>() {
                        Ok(n @ 1..=MAX_LIMIT) => n,
                        _ => return Err(bad("limit", format!("expected 1 to {MAX_LIMIT}"))),
                    }
                }
                _ => unreachable!("names are checked above"),
            }
        }
        q.check()?;
        Ok(q)
    }
}

/// Parameters of the audio endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioParams {
    /// `download=1`: send it as an attachment (a browser saves it instead of playing it).
    pub download: bool,
}

impl AudioParams {
    pub fn from_params(params: &Params) -> Result<AudioParams, StoreError> {
        check_names(params, &["download"])?;
        let mut p = AudioParams::default();
        for (_, v) in params {
            p.download = parse_bool("download", v)?;
        }
        Ok(p)
    }
}

/// Parameters of the peaks endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeaksParams {
    /// At most this many buckets per channel, 1 to [`MAX_PEAK_BUCKETS`].
    pub buckets: usize,
}

impl PeaksParams {
    pub fn from_params(params: &Params) -> Result<PeaksParams, StoreError> {
        check_names(params, &["buckets"])?;
        let mut p = PeaksParams {
            buckets: DEFAULT_PEAK_BUCKETS,
        };
        for (_, v) in params {
            p.buckets = match v.parse::<usize>() {
                Ok(n @ 1..=MAX_PEAK_BUCKETS) => n,
                _ => return Err(bad("buckets", format!("expected 1 to {MAX_PEAK_BUCKETS}"))),
            };
        }
        Ok(p)
    }
}

/// Endpoints that take no parameters refuse any.
pub fn no_params(params: &Params) -> Result<(), StoreError> {
    check_names(params, &[])
}

/// How to answer a `GET` of a representation of `size` bytes, given its `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole body: no `Range`, a unit other than bytes, a malformed range set
    /// (RFC 9110 says to ignore those), or an `If-Range` that no longer matches.
    Full,
    /// 206 with these bytes (end exclusive) and `Content-Range: bytes a-b/size`.
    Partial(Range<u64>),
    /// 416 with `Content-Range: bytes */size`: well formed, but no range overlaps the body.
    Unsatisfiable,
}

/// One byte-range-spec of a range set, before it is resolved against the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` (`last` may be past the end) or `first-` (`last` = None).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// A decimal that may be too large for u64: such a value saturates (a position past any
/// real body means the same as u64::MAX).
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// Parses `bytes=<range-set>`; `None` when the header is to be ignored.
fn range_set(header: &str) -> Option<Vec<Spec>> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // RFC 9110 allows empty list elements (`bytes=0-1,,2-3`); a set of nothing is invalid.
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let spec = if a.is_empty() {
            Spec::Suffix(position(b)?)
        } else {
            let first = position(a)?;
            let last = if b.is_empty() {
                None
            } else {
                Some(position(b)?)
            };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
        // A client that needs hundreds of ranges of one recording is not a player; only the
        // first is served anyway.
        if specs.len() > 64 {
            return None;
        }
    }
    (!specs.is_empty()).then_some(specs)
}

fn resolve(spec: Spec, size: u64) -> Option<Range<u64>> {
    match spec {
        Spec::From { first, last } if first < size => {
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            Some(first..end)
        }
        Spec::From { .. } => None,
        Spec::Suffix(0) => None,
        Spec::Suffix(n) if size > 0 => Some(size.saturating_sub(n)..size),
        Spec::Suffix(_) => None,
    }
}

/// Decides the answer to a `Range` header (RFC 9110 §14.2) for a body of `size` bytes whose
/// strong entity tag is `etag` (quoted). `if_range` is the `If-Range` header: when it is not
/// that tag (a date, or another tag), the whole body is sent.
///
/// Of several ranges, the first one that overlaps the body is served as a single part (RFC
/// 9110 lets a server answer a multi-range request with one part; players only ever ask one).
pub fn byte_range(
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    size: u64,
) -> RangeAnswer {
    let Some(specs) = range.and_then(range_set) else {
        return RangeAnswer::Full;
    };
    if let Some(tag) = if_range {
        // If-Range uses the strong comparison: a weak tag never matches.
        if tag.trim() != etag {
            return RangeAnswer::Full;
        }
    }
    specs
        .into_iter()
        .find_map(|s| resolve(s, size))
        .map_or(RangeAnswer::Unsatisfiable, RangeAnswer::Partial)
}

/// `Content-Range` of a 206 for `range` (end exclusive) of a body of `size` bytes.
pub fn content_range(range: &Range<u64>, size: u64) -> String {
    format!(
        "bytes {}-{}/{size}",
        range.start,
        range.end.saturating_sub(1)
    )
}

/// `Content-Range` of a 416.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// The strong entity tag of a stored file: its SHA-256, quoted.
pub fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// `If-None-Match` (RFC 9110 §13.1.2, weak comparison): true when the client's copy is
/// current and a 304 may be sent.
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// `Content-Type` of a recording by its format (`wav` or `mp3`).
pub fn audio_content_type(format: &str) -> &'static str {
    match format {
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition` to save a file as `<name>.<ext>` (name reduced to safe characters,
/// so no header can be injected and no path climbs out of the download folder).
pub fn attachment(name: &str, ext: &str) -> String {
    let safe: String = name
        .chars()
        .take(160)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "recording" } else { safe };
    let ext: String = ext.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("attachment; filename=\"{safe}.{ext}\"")
}

/// Where a recording's (or a statement's) audio is, if it can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// In storage under `key`.
    Stored {
        key: String,
        /// As catalogued (verified at upload); `None` for an entry written without it.
        size: Option<u64>,
        sha256: Option<String>,
        format: String,
    },
    /// Still being recorded, or in the spool waiting for storage.
    NotStored,
    /// Soft-deleted or purged.
    Deleted,
}

/// A contact is hidden once it is soft-deleted or purged: it answers as deleted.
pub fn is_deleted(e: &Entry) -> bool {
    e.deleted_at_ms.is_some() || e.purged_at_ms.is_some() || e.state == State::Deleted
}

fn availability(state: State, key: &Option<String>) -> Option<String> {
    match (state, key) {
        (State::Stored, Some(k)) if !k.is_empty() => Some(k.clone()),
        _ => None,
    }
}

impl Availability {
    pub fn of_entry(e: &Entry) -> Availability {
        if is_deleted(e) {
            return Availability::Deleted;
        }
        match availability(e.state, &e.storage_key) {
            Some(key) => Availability::Stored {
                key,
                size: e.size_bytes.and_then(|s| u64::try_from(s).ok()),
                sha256: e.sha256.clone(),
                format: e.format.clone(),
            },
            None => Availability::NotStored,
        }
    }

    /// A statement of `contact` (which decides whether it is deleted).
    pub fn of_statement(s: &Statement, contact: &Entry) -> Availability {
        if is_deleted(contact) || s.state == State::Deleted {
            return Availability::Deleted;
        }
        match availability(s.state, &s.storage_key) {
            Some(key) => Availability::Stored {
                key,
                size: s.size_bytes.and_then(|v| u64::try_from(v).ok()),
                sha256: s.sha256.clone(),
                format: s.format.clone(),
            },
            None => Availability::NotStored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn param_of(r: Result<Query, StoreError>) -> String {
        r.unwrap_err()
            .param()
            .expect("names a parameter")
            .to_string()
    }

    #[test]
    fn every_search_parameter_parses() {
        let q = Query::from_params(&p(&[
            ("from", "2024-03-01T09:30:00Z"),
            ("to", "1709290000000"),
            ("agent", "anna"),
            ("team", "complaints"),
            ("queue", "q1"),
            ("direction", "inbound_ivr"),
            ("number", "+4930"),
            ("min_duration", "2.5"),
            ("max_duration", "90"),
            ("has_statement", "true"),
            ("min_silence", "4"),
            ("min_overtalk", "0.5"),
            ("state", "stored"),
            ("sort", "duration_asc"),
            ("limit", "20"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            Query {
                from_ms: Some(1_709_285_400_000),
                to_ms: Some(1_709_290_000_000),
                agent: Some("anna".into()),
                team: Some("complaints".into()),
                queue: Some("q1".into()),
                direction: Some("inbound_ivr".into()),
                customer_prefix: Some("+4930".into()),
                min_duration_ms: Some(2500),
                max_duration_ms: Some(90_000),
                has_statement: Some(true),
                min_silence_ms: Some(4000),
                min_overtalk_ms: Some(500),
                state: Some(State::Stored),
                include_deleted: false,
                sort: Sort::DurationAsc,
                limit: 20,
                cursor: None,
                restrict: None,
                text: None,
            }
        );
        assert_eq!(Query::from_params(&[]).unwrap(), Query::default());
    }

    #[test]
    fn times_take_offsets_fractions_and_unix_ms() {
        assert_eq!(
            parse_time("from", "2024-03-01T10:30:00.5+01:00").unwrap(),
            1_709_285_400_500
        );
        assert_eq!(
            parse_time("from", "2024-03-01 09:30:00z").unwrap(),
            1_709_285_400_000
        );
        assert_eq!(parse_time("from", "0").unwrap(), 0);
        for bad in [
            "",
            "yesterday",
            "2024-03-01",
            "2024-13-01T00:00:00Z",
            "-5",
            "1e3",
        ] {
            assert!(parse_time("from", bad).is_err(), "{bad}");
        }
        assert!(parse_time("to", "99999999999999999999").is_err());
    }

    #[test]
    fn durations_are_seconds_rounded_to_ms() {
        assert_eq!(parse_seconds("min_duration", "0.0015").unwrap(), 2);
        assert_eq!(parse_seconds("min_duration", "60").unwrap(), 60_000);
        for bad in ["", "-1", "NaN", "inf", "1e10", "1m"] {
            assert!(parse_seconds("min_duration", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_search_parameters_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("from", "last tuesday")], "from"),
            (&[("to", "x")], "to"),
            (&[("from", "2000"), ("to", "1000")], "to"),
            (&[("agent", "")], "agent"),
            (&[("team", "a\u{0}b")], "team"),
            (&[("direction", "")], "direction"),
            (&[("number", "")], "number"),
            (&[("min_duration", "abc")], "min_duration"),
            (&[("max_duration", "-3")], "max_duration"),
            (
                &[("min_duration", "10"), ("max_duration", "5")],
                "max_duration",
            ),
            (&[("has_statement", "yes")], "has_statement"),
            (&[("min_silence", "long")], "min_silence"),
            (&[("min_overtalk", "-1")], "min_overtalk"),
            (&[("state", "gone")], "state"),
            (&[("sort", "size")], "sort"),
            (&[("cursor", "nonsense")], "cursor"),
            (&[("limit", "0")], "limit"),
            (&[("limit", "1001")], "limit"),
            (&[("limit", "ten")], "limit"),
            (&[("agentt", "anna")], "agentt"),
            (&[("agent", "a"), ("agent", "b")], "agent"),
        ];
        for (params, name) in cases {
            assert_eq!(
                param_of(Query::from_params(&p(params))),
                *name,
                "{params:?}"
            );
        }
        let long = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            param_of(Query::from_params(&p(&[("queue", &long)]))),
            "queue"
        );
    }

    #[test]
    fn a_plus_decoded_to_a_space_is_put_back() {
        let q = Query::from_params(&p(&[("number", " 4930")])).unwrap();
        assert_eq!(q.customer_prefix.as_deref(), Some("+4930"));
    }

    #[test]
    fn a_cursor_must_match_the_sort() {
        let page_cursor = crate::search::Cursor {
            sort: Sort::StartAsc,
            key: 5,
            contact_id: "c".into(),
        }
        .encode();
        assert!(Query::from_params(&p(&[("sort", "start_asc"), ("cursor", &page_cursor)])).is_ok());
        assert_eq!(
            param_of(Query::from_params(&p(&[("cursor", &page_cursor)]))),
            "cursor"
        );
    }

    #[test]
    fn audio_and_peaks_parameters() {
        assert!(
            AudioParams::from_params(&p(&[("download", "1")]))
                .unwrap()
                .download
        );
        assert!(!AudioParams::from_params(&[]).unwrap().download);
        assert_eq!(
            AudioParams::from_params(&p(&[("download", "please")]))
                .unwrap_err()
                .param(),
            Some("download")
        );
        assert_eq!(
            AudioParams::from_params(&p(&[("range", "0-1")]))
                .unwrap_err()
                .param(),
            Some("range")
        );
        assert_eq!(
            PeaksParams::from_params(&[]).unwrap().buckets,
            DEFAULT_PEAK_BUCKETS
        );
        assert_eq!(
            PeaksParams::from_params(&p(&[("buckets", "800")]))
                .unwrap()
                .buckets,
            800
        );
        for v in ["0", "100001", "-1", "many"] {
            assert_eq!(
                PeaksParams::from_params(&p(&[("buckets", v)]))
                    .unwrap_err()
                    .param(),
                Some("buckets"),
                "{v}"
            );
        }
        assert_eq!(no_params(&p(&[("x", "1")])).unwrap_err().param(), Some("x"));
        assert!(no_params(&[]).is_ok());
    }

    const TAG: &str = "\"abc\"";

    fn answer(h: &str, size: u64) -> RangeAnswer {
        byte_range(Some(h), None, TAG, size)
    }

    #[test]
    fn ranges_of_rfc_9110() {
        use RangeAnswer::*;
        // The examples of RFC 9110 §14.1.2 on a 10000-byte body.
        assert_eq!(answer("bytes=0-499", 10_000), Partial(0..500));
        assert_eq!(answer("bytes=500-999", 10_000), Partial(500..1000));
        assert_eq!(answer("bytes=-500", 10_000), Partial(9500..10_000));
        assert_eq!(answer("bytes=9500-", 10_000), Partial(9500..10_000));
        assert_eq!(answer("bytes=0-0,-1", 10_000), Partial(0..1));
        // A last position past the end is clipped; a suffix longer than the body is all of it.
        assert_eq!(answer("bytes=9000-20000", 10_000), Partial(9000..10_000));
        assert_eq!(answer("bytes=-20000", 10_000), Partial(0..10_000));
        assert_eq!(answer("bytes=9999-9999", 10_000), Partial(9999..10_000));
        // Unit and whitespace are lenient; empty list elements are allowed.
        assert_eq!(answer(" Bytes = 1-2 ", 10), Partial(1..3));
        assert_eq!(answer("bytes=,1-2,", 10), Partial(1..3));
        // Of several, the first that overlaps is served.
        assert_eq!(answer("bytes=50-60,1-2", 10), Partial(1..3));
        // Positions too large for 64 bits saturate.
        assert_eq!(
            answer("bytes=0-99999999999999999999999", 10),
            Partial(0..10)
        );
        assert_eq!(answer("bytes=99999999999999999999999-", 10), Unsatisfiable);
    }

    #[test]
    fn unsatisfiable_ranges() {
        use RangeAnswer::*;
        assert_eq!(answer("bytes=10000-", 10_000), Unsatisfiable);
        assert_eq!(answer("bytes=20000-30000", 10_000), Unsatisfiable);
        assert_eq!(answer("bytes=-0", 10_000), Unsatisfiable);
        assert_eq!(answer("bytes=0-", 0), Unsatisfiable);
        assert_eq!(answer("bytes=-5", 0), Unsatisfiable);
        assert_eq!(answer("bytes=11-12,20-", 10), Unsatisfiable);
        assert_eq!(unsatisfied_range(10_000), "bytes */10000");
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=5",
            "bytes=5-4",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=+1-2",
            "bytes= - ",
            "items=0-5",
            "bytes=0-1,5-4",
        ] {
            assert_eq!(answer(h, 100), RangeAnswer::Full, "{h:?}");
        }
        let many = format!("bytes={}", vec!["0-1"; 65].join(","));
        assert_eq!(answer(&many, 100), RangeAnswer::Full);
        assert_eq!(byte_range(None, None, TAG, 100), RangeAnswer::Full);
    }

    #[test]
    fn if_range_needs_the_same_strong_tag() {
        let r = Some("bytes=0-1");
        assert_eq!(
            byte_range(r, Some("\"abc\""), TAG, 10),
            RangeAnswer::Partial(0..2)
        );
        for stale in ["\"abd\"", "W/\"abc\"", "Sat, 01 Mar 2024 09:30:00 GMT"] {
            assert_eq!(
                byte_range(r, Some(stale), TAG, 10),
                RangeAnswer::Full,
                "{stale}"
            );
        }
        // If-Range without Range changes nothing.
        assert_eq!(byte_range(None, Some(TAG), TAG, 10), RangeAnswer::Full);
    }

    #[test]
    fn content_ranges_and_tags() {
        assert_eq!(content_range(&(0..500), 10_000), "bytes 0-499/10000");
        assert_eq!(
            content_range(&(9999..10_000), 10_000),
            "bytes 9999-9999/10000"
        );
        assert_eq!(etag("ab12"), "\"ab12\"");
        assert!(none_match("\"ab12\"", "\"ab12\""));
        assert!(none_match("\"x\", W/\"ab12\"", "\"ab12\""));
        assert!(none_match("*", "\"ab12\""));
        assert!(!none_match("\"ab13\"", "\"ab12\""));
    }

    #[test]
    fn content_types_and_file_names() {
        assert_eq!(audio_content_type("wav"), "audio/wav");
        assert_eq!(audio_content_type("mp3"), "audio/mpeg");
        assert_eq!(audio_content_type("ogg"), "application/octet-stream");
        assert_eq!(
            attachment("1709-node-7", "wav"),
            "attachment; filename=\"1709-node-7.wav\""
        );
        assert_eq!(
            attachment("a\"\r\nSet-Cookie: x", "mp3"),
            "attachment; filename=\"a___Set-Cookie__x.mp3\""
        );
        assert_eq!(
            attachment("../..", "wav"),
            "attachment; filename=\"_...wav\""
        );
        assert_eq!(
            attachment("", "wav"),
            "attachment; filename=\"recording.wav\""
        );
    }

    fn entry(state: State) -> Entry {
        let meta = recorder::RecordingMetadata {
            contact_id: "c1".into(),
            ..Default::default()
        };
        let mut e = Entry::from_metadata(&meta, "n", state, 0).unwrap();
        e.storage_key = Some("2024/03/01/c1.wav".into());
        e.size_bytes = Some(44);
        e.sha256 = Some("ab".into());
        e
    }

    #[test]
    fn only_stored_undeleted_audio_is_served() {
        assert_eq!(
            Availability::of_entry(&entry(State::Stored)),
            Availability::Stored {
                key: "2024/03/01/c1.wav".into(),
                size: Some(44),
                sha256: Some("ab".into()),
                format: "wav".into(),
            }
        );
        for s in [State::Recording, State::Finished, State::Interrupted] {
            assert_eq!(Availability::of_entry(&entry(s)), Availability::NotStored);
        }
        assert_eq!(
            Availability::of_entry(&entry(State::Deleted)),
            Availability::Deleted
        );
        let mut e = entry(State::Stored);
        e.deleted_at_ms = Some(1);
        assert_eq!(Availability::of_entry(&e), Availability::Deleted);
        assert!(is_deleted(&e));
        let mut e = entry(State::Stored);
        e.storage_key = None;
        assert_eq!(Availability::of_entry(&e), Availability::NotStored);
    }

    #[test]
    fn a_statement_of_a_deleted_contact_is_deleted() {
        let contact = entry(State::Stored);
        let meta = recorder::RecordingMetadata {
            contact_id: "c1".into(),
            statement_id: Some("terms".into()),
            ..Default::default()
        };
        let mut s =
            Statement::from_metadata(&meta, "c1-statement-terms", State::Stored, 0).unwrap();
        assert_eq!(
            Availability::of_statement(&s, &contact),
            Availability::NotStored
        );
        s.storage_key = Some("2024/03/01/c1-statement-terms.wav".into());
        assert!(matches!(
            Availability::of_statement(&s, &contact),
            Availability::Stored { .. }
        ));
        let mut gone = contact.clone();
        gone.deleted_at_ms = Some(5);
        assert_eq!(Availability::of_statement(&s, &gone), Availability::Deleted);
    }
}
