//! The recordings API under `/api/v1`: search the catalog (by transcript text too, with
//! highlighted snippets and each call's average sentiment), read one recording with its
//! segments, statements and decision log, stream its audio with HTTP Range, its waveform
//! peaks, its transcript (JSON, or a standalone HTML document to download), look-ups by
//! either leg's SIP Call-ID and by recorded statement id, soft delete and legal hold; and the
//! OpenAPI document that describes all of it (`openapi.json` beside this
//! file, served at `/api/v1/openapi.json`; docs/api.md is the prose).
//!
//! This is the HTTP adapter: parameters, ranges and tags are decided by `store::api`, the
//! data comes from [`Catalog`] and [`Storage`]. Audio is streamed from storage as it is read,
//! never buffered whole.
//!
//! **Who is asking.** Every handler takes a [`Viewer`]; searches go through
//! [`Viewer::restrict`] and every fetch by id through [`ApiState::entry`], which asks
//! [`Viewer::may_view`]. With access control on (`[access] enabled`, the default) the viewer
//! is the session's user or the API token that `auth::require_viewer` found (docs/access.md),
//! deleting and holding need an admin, and searches, views, plays, downloads, deletions and
//! holds are audited (a transcript's view as a view, its document as a download). With it off the only viewer is the administrator on the same host: a
//! request from any other address gets 403, whatever `[http] listen` binds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use store::api::{self as rules, AudioParams, Availability, PeaksParams, RangeAnswer};
use store::{
    Catalog, DeleteOutcome, Entry, Query, Statement, Storage, StoreError, TranscriptHit,
    TranscriptSummary,
};
use transcript::sentiment::{Label, Sentiment};
use transcript::view::{self as tview, TranscriptView};

use crate::metrics::Metrics;

/// Where the API is mounted.
pub const PREFIX: &str = "/api/v1";

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// How long a client is asked to wait before it asks again for audio not stored yet.
const RETRY_AFTER_S: &str = "5";

/// Decimal places of the waveform peaks (1 % of full scale: under a pixel on a 100 px lane).
const PEAK_DECIMALS: u32 = 2;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    catalog: Catalog,
    storage: Storage,
    metrics: Arc<Metrics>,
    /// Access control; `None` when off.
    auth: Option<Arc<crate::auth::Auth>>,
}

impl ApiState {
    pub fn new(catalog: Catalog, storage: Storage, metrics: Arc<Metrics>) -> ApiState {
        ApiState {
            catalog,
            storage,
            metrics,
            auth: None,
        }
    }

    /// With access control: every request must have passed `auth::require_viewer`.
    pub fn with_auth(mut self, auth: Option<Arc<crate::auth::Auth>>) -> ApiState {
        self.auth = auth;
        self
    }

    /// Writes the audit entry of what `viewer` did (nothing when access control is off).
    async fn audit(
        &self,
        viewer: &Viewer,
        action: access::Action,
        target: Option<&str>,
        detail: serde_json::Value,
    ) {
        if let (Some(auth), Some(c)) = (&self.auth, &viewer.caller) {
            auth.audit(c.audit(action, target, detail)).await;
        }
    }

    /// The entry `id` if it exists and the viewer may see it; deleted ones too (callers
    /// that serve content refuse those, see [`ApiState::entry`]). An entry the viewer may
    /// not see answers like one that does not exist.
    async fn any_entry(&self, viewer: &Viewer, id: &str) -> Result<Entry, ApiError> {
        match self.catalog.get(id).await? {
            Some(e) if viewer.may_view(&e) => Ok(e),
            _ => Err(ApiError::not_found()),
        }
    }

    /// The entry `id`, visible and not deleted.
    async fn entry(&self, viewer: &Viewer, id: &str) -> Result<Entry, ApiError> {
        let e = self.any_entry(viewer, id).await?;
        if rules::is_deleted(&e) {
            return Err(ApiError::deleted());
        }
        Ok(e)
    }
}

/// Who is asking (see the module docs).
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Who access control found; `None` when it is off (the host's administrator).
    caller: Option<crate::auth::Caller>,
}

impl Viewer {
    /// Narrows a search to what this viewer may see (everything, for the administrator).
    fn restrict(&self, q: &mut Query) {
        if let Some(c) = &self.caller {
            q.restrict = access::scope(&c.viewer).restriction();
        }
    }

    /// Whether this viewer may see this entry (and act on it).
    fn may_view(&self, e: &Entry) -> bool {
        self.caller
            .as_ref()
            .is_none_or(|c| access::may_view(&c.viewer, e))
    }

    /// Whether this viewer may do what `need` names (403 when not).
    fn require(&self, need: access::Need) -> Result<(), ApiError> {
        match &self.caller {
            Some(c) if !access::allows(&c.viewer, need) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "not allowed"))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        if state.auth.is_some() {
            // Fail closed: without the caller auth::require_viewer found, nobody.
            return match parts.extensions.get::<crate::auth::Caller>() {
                Some(c) => Ok(Viewer {
                    caller: Some(c.clone()),
                }),
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "authentication required",
                )),
            };
        }
        // Fail closed: a server built without the peer's address serves nobody.
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) if peer.ip().is_loopback() => Ok(Viewer { caller: None }),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the recordings API answers clients on this host only",
            )),
        }
    }
}

/// The decoded query string (any order, repeats kept, so they can be refused).
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state).await
        {
            Ok(q) => Ok(Params(q.0)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

/// The one `{param}` of a route, percent-decoded (a Call-ID's `%40` is `@`, `%2F` is `/`).
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

/// An error answer: `{"error": "...", "param": "..."}` (`param` when a parameter is at fault).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    param: Option<String>,
    headers: Vec<(HeaderName, String)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not found")
    }

    /// Soft-deleted or purged: documented as 404 `{"error": "deleted"}`.
    fn deleted() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "deleted")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if let Some(param) = e.param() {
            let param = param.to_string();
            return ApiError {
                param: Some(param),
                ..ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            };
        }
        match &e {
            StoreError::Db(_) | StoreError::Connect { .. } => {
                tracing::warn!(error = %e, "recordings API: catalog unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable")
            }
            StoreError::Storage { .. } => {
                tracing::warn!(error = %e, "recordings API: storage unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
            }
            _ => {
                tracing::error!(error = %e, "recordings API: internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.error,
            param: self.param.as_deref(),
        };
        let mut r = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One route of the API: the router is built from this list, the OpenAPI test checks it
/// against the document, and the metrics label each request with `"<METHOD> <path>"`.
pub struct Endpoint {
    pub method: Method,
    /// Below [`PREFIX`], in the router's (and OpenAPI's) `{param}` syntax.
    pub path: &'static str,
    route: MethodRouter<ApiState>,
}

fn endpoint<H, T>(method: Method, path: &'static str, handler: H) -> Endpoint
where
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    Endpoint {
        method,
        path,
        route: on(filter, handler),
    }
}

/// Every route of the API.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/recordings", search),
        endpoint(Method::GET, "/recordings/{contact_id}", recording),
        endpoint(Method::DELETE, "/recordings/{contact_id}", delete_recording),
        endpoint(
            Method::GET,
            "/recordings/{contact_id}/audio",
            recording_audio,
        ),
        endpoint(
            Method::GET,
            "/recordings/{contact_id}/peaks",
            recording_peaks,
        ),
        endpoint(
            Method::GET,
            "/recordings/{contact_id}/transcript",
            recording_transcript,
        ),
        endpoint(
            Method::GET,
            "/recordings/{contact_id}/transcript.html",
            transcript_document,
        ),
        endpoint(Method::PUT, "/recordings/{contact_id}/hold", set_hold),
        endpoint(Method::DELETE, "/recordings/{contact_id}/hold", clear_hold),
        endpoint(Method::GET, "/calls/{sip_call_id}/recording", by_call_id),
        endpoint(Method::GET, "/statements/{statement_id}", statements),
        endpoint(
            Method::GET,
            "/statements/{statement_id}/audio",
            statement_audio,
        ),
        endpoint(Method::GET, "/openapi.json", openapi),
    ]
}

/// The API's router, mounted at [`PREFIX`], to merge into the HTTP server's. It needs the
/// peer's address (`into_make_service_with_connect_info::<SocketAddr>()`), see [`Viewer`].
pub fn router(state: ApiState) -> Router {
    let mut api = Router::new();
    for e in endpoints() {
        let label = format!("{} {}", e.method, e.path);
        let counted = e.route.layer(middleware::from_fn_with_state(
            (state.metrics.clone(), Arc::<str>::from(label)),
            count,
        ));
        api = api.route(e.path, counted);
    }
    let api = api
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .fallback(unknown_endpoint)
        .with_state(state.clone());
    Router::new().nest(PREFIX, api)
}

async fn count(
    State((metrics, label)): State<(Arc<Metrics>, Arc<str>)>,
    req: Request,
    next: Next,
) -> Response {
    let r = next.run(req).await;
    metrics
        .api_requests
        .with_label_values(&[&*label, r.status().as_str()])
        .inc();
    r
}

async fn unknown_endpoint(State(s): State<ApiState>) -> ApiError {
    s.metrics
        .api_requests
        .with_label_values(&["unknown", "404"])
        .inc();
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

#[derive(Serialize)]
struct SearchPage {
    items: Vec<SearchItem>,
    next_cursor: Option<String>,
}

/// A search result: the entry, its call's average sentiment once transcribed, and with
/// `text` the phrases that matched.
#[derive(Serialize)]
struct SearchItem {
    #[serde(flatten)]
    entry: Entry,
    sentiment: Option<f64>,
    sentiment_label: Option<Label>,
    snippets: Vec<Snippet>,
}

/// A phrase that matched a search's `text`.
#[derive(Serialize)]
struct Snippet {
    speaker: String,
    channel: u8,
    start_ms: i64,
    end_ms: i64,
    /// The matching words in `<mark>`, everything else HTML-escaped.
    snippet_html: String,
}

/// Snippets shown per result.
const SNIPPETS_PER_RESULT: usize = 3;

/// The transcript summaries of `ids`, by contact id.
async fn summaries(
    s: &ApiState,
    ids: &[String],
) -> Result<HashMap<String, TranscriptSummary>, ApiError> {
    Ok(s.catalog
        .transcript_summaries(ids)
        .await?
        .into_iter()
        .map(|t| (t.contact_id.clone(), t))
        .collect())
}

/// `GET /recordings`: one page of a search.
async fn search(viewer: Viewer, State(s): State<ApiState>, Params(p): Params) -> ApiResult {
    let mut q = Query::from_params(&p)?;
    viewer.restrict(&mut q);
    let page = s.catalog.search(&q).await?;
    let asked: serde_json::Map<String, serde_json::Value> = p
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    s.audit(
        &viewer,
        access::Action::Search,
        None,
        serde_json::json!({ "params": asked, "rows": page.entries.len() }),
    )
    .await;
    let ids: Vec<String> = page.entries.iter().map(|e| e.contact_id.clone()).collect();
    let mut sums = summaries(&s, &ids).await?;
    let mut hits: HashMap<String, Vec<TranscriptHit>> = HashMap::new();
    if let Some(text) = &q.text {
        for h in s
            .catalog
            .transcript_snippets(text, &ids, SNIPPETS_PER_RESULT)
            .await?
        {
            hits.entry(h.contact_id.clone()).or_default().push(h);
        }
    }
    let items = page
        .entries
        .into_iter()
        .map(|mut entry| {
            let sum = sums.remove(&entry.contact_id);
            if let Some(t) = &sum {
                tview::add_talking_speed(&mut entry.metrics, t);
            }
            let sentiment = sum.and_then(|t| t.sentiment_avg).filter(|v| v.is_finite());
            let snippets = hits
                .remove(&entry.contact_id)
                .unwrap_or_default()
                .into_iter()
                .map(|h| Snippet {
                    channel: if h.speaker == "agent" { 2 } else { 1 },
                    speaker: h.speaker,
                    start_ms: h.start_ms,
                    end_ms: h.end_ms,
                    snippet_html: h.snippet_html,
                })
                .collect();
            SearchItem {
                entry,
                sentiment,
                sentiment_label: sentiment.map(|v| Sentiment::of(v).label),
                snippets,
            }
        })
        .collect();
    Ok(Json(SearchPage {
        items,
        next_cursor: page.next,
    })
    .into_response())
}

/// `GET /recordings/{contact_id}`: the entry with segments, statements and decisions.
async fn recording(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    let mut e = s.entry(&viewer, &id).await?;
    if let Some(t) = summaries(&s, std::slice::from_ref(&id)).await?.get(&id) {
        tview::add_talking_speed(&mut e.metrics, t);
    }
    s.audit(
        &viewer,
        access::Action::View,
        Some(&id),
        serde_json::json!({}),
    )
    .await;
    Ok(Json(e).into_response())
}

/// The recording `id` (visible, not deleted) and its transcript's view; 404 `no transcript`
/// when it has no transcription job.
async fn transcript_of(
    s: &ApiState,
    viewer: &Viewer,
    id: &str,
) -> ApiResult<(Entry, TranscriptView)> {
    let e = s.entry(viewer, id).await?;
    let Some(job) = s.catalog.transcript_job(id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no transcript"));
    };
    let t = s.catalog.transcript(id).await?;
    Ok((e, TranscriptView::new(&job, t.as_ref())))
}

/// `GET /recordings/{contact_id}/transcript`.
async fn recording_transcript(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    let (_, view) = transcript_of(&s, &viewer, &id).await?;
    s.audit(
        &viewer,
        access::Action::View,
        Some(&id),
        serde_json::json!({ "transcript": "json" }),
    )
    .await;
    let mut r = Json(view).into_response();
    insert(&mut r, header::CACHE_CONTROL, "private, no-cache");
    Ok(r)
}

/// `GET /recordings/{contact_id}/transcript.html`: the transcript as a document to save.
async fn transcript_document(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    let (e, view) = transcript_of(&s, &viewer, &id).await?;
    s.audit(
        &viewer,
        access::Action::Download,
        Some(&id),
        serde_json::json!({ "transcript": "html" }),
    )
    .await;
    let heading = tview::Heading {
        contact_id: e.contact_id.clone(),
        start_ms: Some(e.start_ms),
        agent: e.agent.clone(),
        route: Some(e.route.clone()),
    };
    let mut r = Response::new(Body::from(tview::html(&heading, &view)));
    insert(&mut r, header::CONTENT_TYPE, "text/html; charset=utf-8");
    insert(
        &mut r,
        header::CONTENT_DISPOSITION,
        &rules::attachment(&format!("{}.transcript", e.contact_id), "html"),
    );
    insert(&mut r, header::CACHE_CONTROL, "private, no-cache");
    // Opened in a browser it runs nothing and loads nothing, whatever the text holds.
    insert(
        &mut r,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'",
    );
    insert(&mut r, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    Ok(r)
}

/// `GET /calls/{sip_call_id}/recording`: the entry either of whose legs had this Call-ID.
async fn by_call_id(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(call_id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    let e = match s.catalog.by_call_id(&call_id).await? {
        Some(e) if viewer.may_view(&e) => e,
        _ => return Err(ApiError::not_found()),
    };
    if rules::is_deleted(&e) {
        return Err(ApiError::deleted());
    }
    s.audit(
        &viewer,
        access::Action::View,
        Some(&e.contact_id),
        serde_json::json!({ "call_id": call_id }),
    )
    .await;
    Ok(Json(e).into_response())
}

/// `GET /recordings/{contact_id}/audio`.
async fn recording_audio(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
    headers: HeaderMap,
) -> ApiResult {
    let ap = AudioParams::from_params(&p)?;
    let e = s.entry(&viewer, &id).await?;
    audit_audio(&s, &viewer, &e.contact_id, &ap, &headers).await;
    serve_audio(&s, Availability::of_entry(&e), &e.contact_id, ap, &headers).await
}

/// A play or a download is audited once, not for every range a player asks while it plays:
/// for a request without `Range` or for the range that starts at the beginning.
async fn audit_audio(
    s: &ApiState,
    viewer: &Viewer,
    target: &str,
    ap: &AudioParams,
    headers: &HeaderMap,
) {
    let range = header_str(headers, header::RANGE);
    if range.is_some_and(|r| !r.trim().starts_with("bytes=0-")) {
        return;
    }
    let action = if ap.download {
        access::Action::Download
    } else {
        access::Action::Play
    };
    s.audit(viewer, action, Some(target), serde_json::json!({}))
        .await;
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Streams stored audio: whole (200), a range (206) or 416, with its type, length and tag.
async fn serve_audio(
    s: &ApiState,
    what: Availability,
    name: &str,
    ap: AudioParams,
    headers: &HeaderMap,
) -> ApiResult {
    let (key, size, sha256, format) = match what {
        Availability::Deleted => return Err(ApiError::deleted()),
        Availability::NotStored => {
            return Err(ApiError::new(StatusCode::CONFLICT, "not stored yet")
                .header(header::RETRY_AFTER, RETRY_AFTER_S))
        }
        Availability::Stored {
            key,
            size,
            sha256,
            format,
        } => (key, size, sha256, format),
    };
    let missing = || {
        tracing::warn!(key = %key, "recordings API: a stored recording is missing from storage");
        ApiError::new(StatusCode::NOT_FOUND, "audio missing from storage")
    };
    let size = match size {
        Some(n) => n,
        None => s.storage.size(&key).await?.ok_or_else(missing)?,
    };
    let etag = sha256.as_deref().map(rules::etag);
    if let (Some(tag), Some(inm)) = (&etag, header_str(headers, header::IF_NONE_MATCH)) {
        if rules::none_match(inm, tag) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            insert(&mut r, header::ETAG, tag);
            return Ok(r);
        }
    }
    let answer = rules::byte_range(
        header_str(headers, header::RANGE),
        header_str(headers, header::IF_RANGE),
        etag.as_deref().unwrap_or(""),
        size,
    );
    let range = match answer {
        RangeAnswer::Unsatisfiable => {
            return Err(
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
                    .header(header::CONTENT_RANGE, rules::unsatisfied_range(size))
                    .header(header::ACCEPT_RANGES, "bytes"),
            )
        }
        RangeAnswer::Full => None,
        RangeAnswer::Partial(r) => Some(r),
    };
    let read = match s.storage.read(&key, range.clone()).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let wanted = range.clone().unwrap_or(0..size);
    if read.size != size || read.range != wanted {
        tracing::error!(key = %key, catalogued = size, stored = read.size,
            "recordings API: the stored file's size differs from the catalog's");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored file does not match the catalog",
        ));
    }
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut r = Response::new(Body::from_stream(read.stream));
    *r.status_mut() = status;
    insert(
        &mut r,
        header::CONTENT_TYPE,
        rules::audio_content_type(&format),
    );
    insert(
        &mut r,
        header::CONTENT_LENGTH,
        &(wanted.end - wanted.start).to_string(),
    );
    insert(&mut r, header::ACCEPT_RANGES, "bytes");
    insert(&mut r, header::CACHE_CONTROL, "private");
    if let Some(tag) = &etag {
        insert(&mut r, header::ETAG, tag);
    }
    if let Some(range) = &range {
        insert(
            &mut r,
            header::CONTENT_RANGE,
            &rules::content_range(range, size),
        );
    }
    if ap.download {
        insert(
            &mut r,
            header::CONTENT_DISPOSITION,
            &rules::attachment(name, &format),
        );
    }
    Ok(r)
}

fn insert(r: &mut Response, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// `GET /recordings/{contact_id}/peaks`: the stored waveform peaks in wavesurfer.js's form.
async fn recording_peaks(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    let pp = PeaksParams::from_params(&p)?;
    let e = s.entry(&viewer, &id).await?;
    let key = match Availability::of_entry(&e) {
        Availability::Stored { key, .. } => store::shelf::companion_key(&key, "peaks.json"),
        Availability::Deleted => return Err(ApiError::deleted()),
        Availability::NotStored => {
            return Err(ApiError::new(StatusCode::CONFLICT, "not stored yet")
                .header(header::RETRY_AFTER, RETRY_AFTER_S))
        }
    };
    let bytes = match s.storage.read_bytes(&key, None).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no peaks"));
        }
        Err(e) => return Err(e.into()),
    };
    // An hour's peaks are a few MB of JSON: parse and reduce them off the async threads.
    let out = tokio::task::spawn_blocking(move || {
        serde_json::from_slice::<analysis::Peaks>(&bytes)
            .map(|p| serde_json::to_vec(&p.to_wavesurfer(pp.buckets, PEAK_DECIMALS)))
    })
    .await;
    match out {
        Ok(Ok(Ok(json))) => {
            let mut r = Response::new(Body::from(json));
            insert(&mut r, header::CONTENT_TYPE, "application/json");
            insert(&mut r, header::CACHE_CONTROL, "private");
            Ok(r)
        }
        _ => {
            tracing::warn!(key = %key, "recordings API: stored peaks do not parse");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored peaks are unreadable",
            ))
        }
    }
}

#[derive(Serialize)]
struct StatementList {
    statement_id: String,
    items: Vec<Statement>,
}

/// The recorded statements with this id whose contacts the viewer may see and are not
/// deleted, oldest first, each with its contact.
async fn visible_statements(
    s: &ApiState,
    viewer: &Viewer,
    statement_id: &str,
) -> ApiResult<Vec<(Statement, Entry)>> {
    let all = s.catalog.statements_by_id(statement_id).await?;
    let mut contacts: HashMap<String, Option<Entry>> = HashMap::new();
    let (mut out, mut deleted) = (Vec::new(), false);
    for st in all {
        if !contacts.contains_key(&st.contact_id) {
            let e = s
                .catalog
                .get(&st.contact_id)
                .await?
                .filter(|e| viewer.may_view(e));
            contacts.insert(st.contact_id.clone(), e);
        }
        let Some(Some(contact)) = contacts.get(&st.contact_id) else {
            continue;
        };
        if matches!(
            Availability::of_statement(&st, contact),
            Availability::Deleted
        ) {
            deleted = true;
            continue;
        }
        out.push((st, contact.clone()));
    }
    match (out.is_empty(), deleted) {
        (true, true) => Err(ApiError::deleted()),
        (true, false) => Err(ApiError::not_found()),
        _ => Ok(out),
    }
}

/// `GET /statements/{statement_id}`.
async fn statements(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(statement_id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    let items = visible_statements(&s, &viewer, &statement_id)
        .await?
        .into_iter()
        .map(|(st, _)| st)
        .collect();
    s.audit(
        &viewer,
        access::Action::View,
        Some(&statement_id),
        serde_json::json!({ "statement": true }),
    )
    .await;
    Ok(Json(StatementList {
        statement_id,
        items,
    })
    .into_response())
}

/// `GET /statements/{statement_id}/audio`: the audio of the first (oldest) of them.
async fn statement_audio(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(statement_id): Id,
    Params(p): Params,
    headers: HeaderMap,
) -> ApiResult {
    let ap = AudioParams::from_params(&p)?;
    let list = visible_statements(&s, &viewer, &statement_id).await?;
    let (st, contact) = list.into_iter().next().ok_or_else(ApiError::not_found)?;
    audit_audio(&s, &viewer, &st.id, &ap, &headers).await;
    serve_audio(
        &s,
        Availability::of_statement(&st, &contact),
        &st.id,
        ap,
        &headers,
    )
    .await
}

/// `DELETE /recordings/{contact_id}`: soft delete.
async fn delete_recording(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    s.any_entry(&viewer, &id).await?;
    viewer.require(access::Need::Delete)?;
    let outcome = s.catalog.soft_delete(&id, now_ms()).await?;
    s.audit(
        &viewer,
        access::Action::Delete,
        Some(&id),
        serde_json::json!({ "outcome": format!("{outcome:?}").to_lowercase() }),
    )
    .await;
    match outcome {
        DeleteOutcome::Deleted => {
            tracing::info!(contact_id = %id, "recording deleted through the API (soft delete; the audio is purged later)");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        DeleteOutcome::Held => {
            tracing::info!(contact_id = %id, "recording not deleted: legal hold");
            Err(ApiError::new(StatusCode::CONFLICT, "legal hold"))
        }
        DeleteOutcome::AlreadyDeleted => Err(ApiError::deleted()),
        DeleteOutcome::NotFound => Err(ApiError::not_found()),
    }
}

async fn hold(s: &ApiState, viewer: &Viewer, id: &str, on: bool) -> ApiResult {
    let e = s.any_entry(viewer, id).await?;
    viewer.require(access::Need::LegalHold)?;
    // A soft-deleted recording can still be held, which stops its purge; a purged one has
    // nothing left to hold.
    if e.purged_at_ms.is_some() {
        return Err(ApiError::deleted());
    }
    if !s.catalog.set_legal_hold(id, on, now_ms()).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(contact_id = %id, legal_hold = on, "legal hold changed through the API");
    s.audit(
        viewer,
        access::Action::LegalHold,
        Some(id),
        serde_json::json!({ "hold": on }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /recordings/{contact_id}/hold`.
async fn set_hold(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    hold(&s, &viewer, &id, true).await
}

/// `DELETE /recordings/{contact_id}/hold`.
async fn clear_hold(
    viewer: Viewer,
    State(s): State<ApiState>,
    Id(id): Id,
    Params(p): Params,
) -> ApiResult {
    rules::no_params(&p)?;
    hold(&s, &viewer, &id, false).await
}

/// `GET /openapi.json`.
async fn openapi(_viewer: Viewer) -> Response {
    let mut r = Response::new(Body::from(OPENAPI));
    insert(&mut r, header::CONTENT_TYPE, "application/json");
    r
}

#[cfg(test)]
mod tests;
