//! The review pages: `/`, `/login`, `/recordings`, `/recordings/{id}`, `/audit` and `/users`
//! (admins), the admins' user management forms, and the static assets under `/assets`.
//!
//! This is the HTTP adapter of the `web` crate, which renders and decides what a page's
//! input means; here the catalog is read and written and the audit log kept. Every page
//! but `/login` and the assets is behind [`require_page_viewer`], the same checks as the API
//! (`auth::admit`: session, CSRF token and origin on every POST), answered the way a
//! browser needs: no session is a redirect to `/login?next=…`, a role that may not see a
//! page is a 403 page, a recording outside the viewer's restriction is the same 404 page as
//! one that does not exist. Pages are for users: an API token gets 403 here.
//!
//! With access control off (`[access] enabled = false`) there are no users and no pages;
//! only the assets are served.

use std::sync::Arc;

use access::audit::Action;
use access::{Need, Viewer};
use axum::body::{to_bytes, Body};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use store::api::is_deleted;
use store::{AuditOrder, Catalog};
use web::layout::error_page;
use web::{Chrome, Nav, UserBadge};

use crate::auth::{admit, Auth, Caller, Refusal};
use crate::metrics::Metrics;

/// The largest form body a page accepts (the same as the login's).
const MAX_FORM: usize = 16 * 1024;

/// What the page handlers share.
#[derive(Clone)]
pub struct PagesState {
    pub catalog: Catalog,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
}

/// An HTML answer with the pages' security headers: the Content-Security-Policy (no inline
/// script), no framing, no sniffing, and no caching (pages carry personal data and the
/// session's CSRF token).
pub fn html(status: StatusCode, markup: web::Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, web::layout::CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The frame of a page for `caller` (a user: [`require_page_viewer`] lets no one else in).
fn chrome(caller: &Caller, current: Nav) -> Chrome<'_> {
    let user = match &caller.viewer {
        Viewer::User(u) => Some(UserBadge {
            username: &u.username,
            display_name: &u.display_name,
            role: u.role,
        }),
        Viewer::Token { .. } => None,
    };
    Chrome {
        user,
        csrf: caller.session.as_ref().map(|s| s.csrf.as_str()),
        current,
    }
}

/// An error page; with the caller's frame when there is one.
fn error(caller: Option<&Caller>, status: StatusCode, message: &str) -> Response {
    let c = match caller {
        Some(c) => chrome(c, Nav::None),
        None => Chrome::anonymous(),
    };
    html(status, error_page(&c, status.as_u16(), message))
}

fn not_found(caller: &Caller) -> Response {
    error(
        Some(caller),
        StatusCode::NOT_FOUND,
        "There is no such recording.",
    )
}

fn forbidden(caller: &Caller) -> Response {
    error(
        Some(caller),
        StatusCode::FORBIDDEN,
        "Your role does not give access to this page.",
    )
}

fn unavailable(caller: Option<&Caller>, e: &store::StoreError) -> Response {
    tracing::warn!(error = %e, "review pages: catalog unavailable");
    error(
        caller,
        StatusCode::SERVICE_UNAVAILABLE,
        "The catalog is unavailable; try again shortly.",
    )
}

/// `/login?next=<this request's path and query>`.
fn login_redirect(req: &Request) -> Response {
    let here = req
        .uri()
        .path_and_query()
        .map_or("/recordings", |p| p.as_str());
    // Only where a GET can go back to; a form post starts again from its page.
    let next = if req.method() == Method::GET {
        here
    } else {
        "/recordings"
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("next", next);
    redirect(&format!("/login?{}", q.finish()))
}

/// Middleware of every page but `/login`: the checks of the API (see [`admit`]), refused the
/// way a browser needs (see the module docs).
pub async fn require_page_viewer(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let back = login_redirect(&req);
    match admit(&auth, req).await {
        Ok(req) => {
            let is_user = req
                .extensions()
                .get::<Caller>()
                .is_some_and(|c| matches!(c.viewer, Viewer::User(_)));
            if !is_user {
                return error(
                    None,
                    StatusCode::FORBIDDEN,
                    "The pages are for users; API tokens use the API.",
                );
            }
            next.run(req).await
        }
        Err(Refusal::Denied(access::authn::Denied::Unauthenticated)) => back,
        Err(Refusal::Denied(_)) => error(
            None,
            StatusCode::FORBIDDEN,
            "The request did not carry this session's token (CSRF) or came from another site. Reload the page and try again.",
        ),
        Err(Refusal::TooLarge) => error(None, StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        Err(Refusal::Catalog(e)) => unavailable(None, &e),
    }
}

/// Counts each request of a page by its label and status.
async fn count(
    State((metrics, label)): State<(Arc<Metrics>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let r = next.run(req).await;
    metrics
        .page_requests
        .with_label_values(&[label, r.status().as_str()])
        .inc();
    r
}

fn pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The pages' router (everything needs access control; see [`assets_router`] for the rest).
pub fn router(state: PagesState) -> Router {
    let auth = state.auth.clone();
    let guard = || middleware::from_fn_with_state(auth.clone(), require_page_viewer);
    let counted =
        |label: &'static str| middleware::from_fn_with_state((state.metrics.clone(), label), count);
    Router::new()
        .route("/", get(root).layer(counted("root")))
        .route("/login", get(login_page).layer(counted("login")))
        .route(
            "/recordings",
            get(recordings).layer(guard()).layer(counted("recordings")),
        )
        .route(
            "/recordings/{id}",
            get(recording).layer(guard()).layer(counted("recording")),
        )
        .route(
            "/recordings/{id}/{action}",
            post(recording_action)
                .layer(guard())
                .layer(counted("recording_action")),
        )
        .route(
            "/audit",
            get(audit_page).layer(guard()).layer(counted("audit")),
        )
        .route(
            "/audit/export",
            get(audit_export)
                .layer(guard())
                .layer(counted("audit_export")),
        )
        .route(
            "/audit/verify",
            post(audit_verify)
                .layer(guard())
                .layer(counted("audit_verify")),
        )
        .route(
            "/users",
            get(users_page)
                .post(add_user)
                .layer(guard())
                .layer(counted("users")),
        )
        .route(
            "/users/{name}",
            post(change_user).layer(guard()).layer(counted("users")),
        )
        .route(
            "/users/{name}/{action}",
            post(user_action).layer(guard()).layer(counted("users")),
        )
        .with_state(state)
}

/// `/assets/{name}`: open to everyone (the login page needs them; they hold no data).
pub fn assets_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/assets/{name}",
        get(asset).layer(middleware::from_fn_with_state((metrics, "assets"), count)),
    )
}

async fn asset(Path(name): Path<String>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let Some(a) = web::assets::get(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let v = pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "v")
        .map(|(_, v)| v);
    let etag = a.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| store::api::none_match(inm, &etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(a.bytes))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(a.cache_control(v.as_deref())),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(t) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, t);
    }
    r
}

/// `GET /`: the recordings for a logged-in user, else the login page.
async fn root(State(s): State<PagesState>, headers: HeaderMap) -> Response {
    match s.auth.authenticate(&headers).await {
        Ok(a) if matches!(a.viewer, Viewer::User(_)) => redirect("/recordings"),
        _ => redirect("/login"),
    }
}

/// `GET /login[?next=/path][&logged_out=1]`: the form (a logged-in user goes on to
/// `next`); after a logout it says so.
async fn login_page(
    State(s): State<PagesState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let p = pairs(q.as_deref());
    let next = p
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| access::authn::local_redirect(Some(v)).to_string());
    if let Ok(a) = s.auth.authenticate(&headers).await {
        if matches!(a.viewer, Viewer::User(_)) {
            return redirect(next.as_deref().unwrap_or("/recordings"));
        }
    }
    let notice = p
        .iter()
        .any(|(k, _)| k == "logged_out")
        .then_some(web::login::LoginNotice::LoggedOut);
    html(
        StatusCode::OK,
        web::login::login_page(next.as_deref(), notice, None),
    )
}

/// `GET /recordings`: the search page.
async fn recordings(
    caller: Caller,
    State(s): State<PagesState>,
    RawQuery(q): RawQuery,
) -> Response {
    let raw = pairs(q.as_deref());
    let form = web::search::SearchForm::from_params(&raw);
    let c = chrome(&caller, Nav::Recordings);
    let mut query = match form.query() {
        Ok(q) => q,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                web::search::search_page(&c, &form, &[], None, Some(&e.to_string())),
            )
        }
    };
    // The viewer's restriction, whatever the form asked: an agent or team the viewer may
    // not see (or that does not exist) gives an empty list.
    query.restrict = access::scope(&caller.viewer).restriction();
    let page = match s.catalog.search(&query).await {
        Ok(p) => p,
        // A cursor of another sort and the like: the parameters' fault.
        Err(e) if e.param().is_some() => {
            let msg = e.to_string();
            return html(
                StatusCode::BAD_REQUEST,
                web::search::search_page(&c, &form, &[], None, Some(&msg)),
            );
        }
        Err(e) => return unavailable(Some(&caller), &e),
    };
    let asked: serde_json::Map<String, serde_json::Value> = form
        .api_params()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    s.auth
        .audit(caller.audit(
            Action::Search,
            None,
            json!({ "params": asked, "rows": page.entries.len(), "page": true }),
        ))
        .await;
    html(
        StatusCode::OK,
        web::search::search_page(&c, &form, &page.entries, page.next.as_deref(), None),
    )
}

/// `GET /recordings/{id}`: one recording, if the viewer may see it (else the same 404 as a
/// recording that does not exist, or was deleted).
async fn recording(
    caller: Caller,
    State(s): State<PagesState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(
            Some(&caller),
            StatusCode::BAD_REQUEST,
            "Not a recording id.",
        );
    };
    let e = match s.catalog.get(&id).await {
        Ok(Some(e)) if access::may_view(&caller.viewer, &e) && !is_deleted(&e) => e,
        Ok(_) => return not_found(&caller),
        Err(e) => return unavailable(Some(&caller), &e),
    };
    s.auth
        .audit(caller.audit(Action::View, Some(&id), json!({ "page": true })))
        .await;
    let opts = web::recording::RecordingOptions {
        admin: access::allows(&caller.viewer, Need::Delete),
    };
    html(
        StatusCode::OK,
        web::recording::recording_page(&chrome(&caller, Nav::Recordings), &e, opts),
    )
}

/// `POST /recordings/{id}/hold` (`hold=on|off`) and `/recordings/{id}/delete`: an admin's
/// legal hold and soft delete from the recording page, with the API's rules (a held
/// recording is not deleted, a purged one has nothing to hold) and the same audit entries.
/// The browser goes back to the page (or to the list after a deletion).
async fn recording_action(
    caller: Caller,
    State(s): State<PagesState>,
    Path((id, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    let need = match action.as_str() {
        "hold" => Need::LegalHold,
        "delete" => Need::Delete,
        _ => {
            return error(
                Some(&caller),
                StatusCode::NOT_FOUND,
                "There is no such page.",
            )
        }
    };
    let e = match s.catalog.get(&id).await {
        Ok(Some(e)) if access::may_view(&caller.viewer, &e) && !is_deleted(&e) => e,
        Ok(_) => return not_found(&caller),
        Err(e) => return unavailable(Some(&caller), &e),
    };
    if !access::allows(&caller.viewer, need) {
        return forbidden(&caller);
    }
    let body = match form_body(&caller, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let page = format!("/recordings/{}", web::search::path_segment(&id));
    let now = now_ms();
    if need == Need::LegalHold {
        let on = match body
            .iter()
            .find(|(k, _)| k == "hold")
            .map(|(_, v)| v.as_str())
        {
            Some("on") => true,
            Some("off") => false,
            _ => {
                return error(
                    Some(&caller),
                    StatusCode::BAD_REQUEST,
                    "The form needs hold=on or hold=off.",
                )
            }
        };
        if e.purged_at_ms.is_some() {
            return not_found(&caller);
        }
        match s.catalog.set_legal_hold(&id, on, now).await {
            Ok(true) => {}
            Ok(false) => return not_found(&caller),
            Err(e) => return unavailable(Some(&caller), &e),
        }
        tracing::info!(contact_id = %id, legal_hold = on, "legal hold changed on the recording page");
        s.auth
            .audit(caller.audit(
                Action::LegalHold,
                Some(&id),
                json!({ "hold": on, "page": true }),
            ))
            .await;
        return redirect(&page);
    }
    let outcome = match s.catalog.soft_delete(&id, now).await {
        Ok(o) => o,
        Err(e) => return unavailable(Some(&caller), &e),
    };
    s.auth
        .audit(caller.audit(
            Action::Delete,
            Some(&id),
            json!({ "outcome": format!("{outcome:?}").to_lowercase(), "page": true }),
        ))
        .await;
    match outcome {
        store::DeleteOutcome::Deleted => {
            tracing::info!(contact_id = %id, "recording deleted on the recording page (soft delete; the audio is purged later)");
            redirect("/recordings")
        }
        store::DeleteOutcome::Held => error(
            Some(&caller),
            StatusCode::CONFLICT,
            "This recording is on legal hold: release the hold before deleting it.",
        ),
        store::DeleteOutcome::AlreadyDeleted | store::DeleteOutcome::NotFound => not_found(&caller),
    }
}

/// The audit page with `filter`, and the chain's verdict when just checked.
async fn render_audit(
    s: &PagesState,
    caller: &Caller,
    filter: &web::audit::AuditFilter,
    verdict: Option<&store::ChainVerdict>,
) -> Response {
    let c = chrome(caller, Nav::Audit);
    fn view<'a>(
        filter: &'a web::audit::AuditFilter,
        entries: &'a [store::AuditEntry],
        next: Option<i64>,
        verdict: Option<&'a store::ChainVerdict>,
        error: Option<&'a str>,
    ) -> web::audit::AuditView<'a> {
        web::audit::AuditView {
            filter,
            entries,
            next,
            verdict,
            error,
        }
    }
    let q = match filter.query(AuditOrder::NewestFirst, web::audit::PAGE) {
        Ok(q) => q,
        Err(e) => {
            let msg = e.to_string();
            return html(
                StatusCode::BAD_REQUEST,
                web::audit::audit_page(&c, view(filter, &[], None, verdict, Some(&msg))),
            );
        }
    };
    let page = match s.catalog.audit_list(&q).await {
        Ok(p) => p,
        Err(e) => return unavailable(Some(caller), &e),
    };
    html(
        StatusCode::OK,
        web::audit::audit_page(&c, view(filter, &page.entries, page.next, verdict, None)),
    )
}

fn filter_detail(f: &web::audit::AuditFilter) -> serde_json::Value {
    json!({ "actor": f.actor, "action": f.action, "from": f.from, "to": f.to })
}

/// `GET /audit` (admins).
async fn audit_page(
    caller: Caller,
    State(s): State<PagesState>,
    RawQuery(q): RawQuery,
) -> Response {
    if !access::allows(&caller.viewer, Need::ViewAudit) {
        return forbidden(&caller);
    }
    let filter = match web::audit::AuditFilter::from_params(&pairs(q.as_deref())) {
        Ok(f) => f,
        Err(e) => {
            return error(Some(&caller), StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    s.auth
        .audit(caller.audit(Action::AuditView, None, filter_detail(&filter)))
        .await;
    render_audit(&s, &caller, &filter, None).await
}

/// `POST /audit/verify` (admins): checks the whole chain, then shows the log with the
/// verdict. On demand only: it reads every entry.
async fn audit_verify(caller: Caller, State(s): State<PagesState>) -> Response {
    if !access::allows(&caller.viewer, Need::ViewAudit) {
        return forbidden(&caller);
    }
    let verdict = match s.catalog.audit_verify().await {
        Ok(v) => v,
        Err(e) => return unavailable(Some(&caller), &e),
    };
    let detail = match &verdict {
        store::ChainVerdict::Intact { entries, .. } => {
            json!({ "verify": "intact", "entries": entries })
        }
        store::ChainVerdict::Broken(b) => json!({ "verify": "broken", "seq": b.seq }),
    };
    s.auth
        .audit(caller.audit(Action::AuditView, Some("audit_log"), detail))
        .await;
    render_audit(
        &s,
        &caller,
        &web::audit::AuditFilter::default(),
        Some(&verdict),
    )
    .await
}

/// `GET /audit/export?format=csv|jsonl&…filter` (admins): every entry the filter selects,
/// oldest first, streamed a page at a time. The export is audited before it runs.
async fn audit_export(
    caller: Caller,
    State(s): State<PagesState>,
    RawQuery(q): RawQuery,
) -> Response {
    use web::audit::ExportFormat;
    if !access::allows(&caller.viewer, Need::ViewAudit) {
        return forbidden(&caller);
    }
    let p = pairs(q.as_deref());
    let format = match p.iter().find(|(k, _)| k == "format") {
        None => ExportFormat::Jsonl,
        Some((_, v)) => match ExportFormat::parse(v) {
            Some(f) => f,
            None => {
                return error(
                    Some(&caller),
                    StatusCode::BAD_REQUEST,
                    "format: expected csv or jsonl",
                )
            }
        },
    };
    let filter = match web::audit::AuditFilter::from_params(&p) {
        Ok(f) => f,
        Err(e) => return error(Some(&caller), StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let query = match filter.query(AuditOrder::OldestFirst, store::MAX_LIMIT) {
        Ok(q) => q,
        Err(e) => return error(Some(&caller), StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut detail = filter_detail(&filter);
    detail["format"] = json!(format.extension());
    s.auth
        .audit(caller.audit(Action::AuditExport, Some("audit_log"), detail))
        .await;
    let catalog = s.catalog.clone();
    let head = (format == ExportFormat::Csv).then(|| format!("{}\n", access::audit::CSV_HEADER));
    // One page per step: (next query, header still to send, done).
    let stream = futures_util::stream::unfold((Some(query), head), move |(q, head)| {
        let catalog = catalog.clone();
        async move {
            if let Some(h) = head {
                return Some((Ok::<_, std::io::Error>(h), (q, None)));
            }
            let mut q = q?;
            match catalog.audit_list(&q).await {
                Ok(page) => {
                    let mut out = String::new();
                    for e in &page.entries {
                        out.push_str(&match format {
                            ExportFormat::Csv => access::audit::csv_row(e),
                            ExportFormat::Jsonl => access::audit::json_line(e),
                        });
                        out.push('\n');
                    }
                    let next = page.next.map(|n| {
                        q.cursor = Some(n);
                        q
                    });
                    Some((Ok(out), (next, None)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit export cut short: catalog unavailable");
                    Some((Err(std::io::Error::other(e.to_string())), (None, None)))
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let name = format!(
        "attachment; filename=\"tapir-audit-{}.{}\"",
        crate::http::api::now_ms(),
        format.extension()
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// The users page with a notice or an error, and `status`.
async fn render_users(
    s: &PagesState,
    caller: &Caller,
    status: StatusCode,
    done: Option<(web::users::Done, &str)>,
    err: Option<&str>,
) -> Response {
    let users = match s.catalog.list_users().await {
        Ok(u) => u,
        Err(e) => return unavailable(Some(caller), &e),
    };
    let me = caller.viewer.actor();
    html(
        status,
        web::users::users_page(
            &chrome(caller, Nav::Users),
            web::users::UsersView {
                users: &users,
                me: &me,
                done,
                error: err,
            },
        ),
    )
}

/// `GET /users` (admins), `?done=<what>&user=<name>` after a change.
async fn users_page(
    caller: Caller,
    State(s): State<PagesState>,
    RawQuery(q): RawQuery,
) -> Response {
    if !access::allows(&caller.viewer, Need::ManageUsers) {
        return forbidden(&caller);
    }
    let p = pairs(q.as_deref());
    let get = |name: &str| p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let done = get("done")
        .and_then(web::users::Done::parse)
        .zip(get("user").and_then(|u| access::user::normalize_username(u).ok()));
    render_users(
        &s,
        &caller,
        StatusCode::OK,
        done.as_ref().map(|(d, u)| (*d, u.as_str())),
        None,
    )
    .await
}

/// The urlencoded form of a page's POST: 400 for another type or a body that is not UTF-8
/// pairs, 413 above [`MAX_FORM`].
async fn form_body(caller: &Caller, req: Request) -> Result<Vec<(String, String)>, Response> {
    if !crate::auth::is_form(req.headers()) {
        return Err(error(
            Some(caller),
            StatusCode::BAD_REQUEST,
            "Expected a form (application/x-www-form-urlencoded).",
        ));
    }
    let bytes = to_bytes(req.into_body(), MAX_FORM).await.map_err(|_| {
        error(
            Some(caller),
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large.",
        )
    })?;
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes).map_err(|_| {
        error(
            Some(caller),
            StatusCode::BAD_REQUEST,
            "The form does not parse.",
        )
    })
}

/// Hashes a password off the async threads (argon2 takes tens of milliseconds of CPU).
async fn hash(password: String) -> Result<String, String> {
    match tokio::task::spawn_blocking(move || access::password::hash_password(&password)).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The target of a per-user form: the normalized username of an existing user.
async fn target_user(
    s: &PagesState,
    caller: &Caller,
    name: &str,
) -> Result<store::UserRecord, Response> {
    let Ok(name) = access::user::normalize_username(name) else {
        return Err(error(
            Some(caller),
            StatusCode::NOT_FOUND,
            "There is no such user.",
        ));
    };
    match s.catalog.user_by_name(&name).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(error(
            Some(caller),
            StatusCode::NOT_FOUND,
            "There is no such user.",
        )),
        Err(e) => Err(unavailable(Some(caller), &e)),
    }
}

fn now_ms() -> i64 {
    crate::http::api::now_ms()
}

/// `POST /users` (admins): adds a user.
async fn add_user(caller: Caller, State(s): State<PagesState>, req: Request) -> Response {
    use web::users::{Done, NewUserForm};
    if !access::allows(&caller.viewer, Need::ManageUsers) {
        return forbidden(&caller);
    }
    let body = match form_body(&caller, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let f = match NewUserForm::parse(&body) {
        Ok(f) => f,
        Err(e) => {
            return render_users(
                &s,
                &caller,
                StatusCode::BAD_REQUEST,
                None,
                Some(&e.to_string()),
            )
            .await
        }
    };
    match s.catalog.user_by_name(&f.username).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            let msg = format!("User {} exists already.", f.username);
            return render_users(&s, &caller, StatusCode::CONFLICT, None, Some(&msg)).await;
        }
        Err(e) => return unavailable(Some(&caller), &e),
    }
    let password_hash = match hash(f.password.clone()).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "password hashing failed");
            return error(
                Some(&caller),
                StatusCode::INTERNAL_SERVER_ERROR,
                "The password could not be hashed.",
            );
        }
    };
    let new = store::NewUser {
        username: f.username.clone(),
        display_name: f.display_name.clone(),
        role: f.role.as_str().to_string(),
        agent_id: f.agent_id.clone(),
        teams: f.teams.clone(),
        password_hash,
    };
    match s.catalog.add_user(&new, now_ms()).await {
        Ok(_) => {}
        Err(store::StoreError::Exists { .. }) => {
            let msg = format!("User {} exists already.", f.username);
            return render_users(&s, &caller, StatusCode::CONFLICT, None, Some(&msg)).await;
        }
        Err(e) => return unavailable(Some(&caller), &e),
    }
    s.auth
        .audit(caller.audit(
            Action::UserAdd,
            Some(&f.username),
            json!({ "role": f.role.as_str(), "agent_id": f.agent_id, "teams": f.teams }),
        ))
        .await;
    tracing::info!(actor = %caller.viewer.actor(), user = %f.username, role = %f.role, "user added on the users page");
    redirect(&Done::Added.href(&f.username))
}

/// `POST /users/{name}` (admins): display name, role, agent id, teams. A changed role is a
/// `role_change` entry of the audit log, the other fields a `user_update` one.
async fn change_user(
    caller: Caller,
    State(s): State<PagesState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    use web::users::{ChangeForm, Done};
    if !access::allows(&caller.viewer, Need::ManageUsers) {
        return forbidden(&caller);
    }
    let body = match form_body(&caller, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let user = match target_user(&s, &caller, &name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let me = caller.viewer.actor();
    let changes = match ChangeForm::parse(&body).and_then(|f| f.changes(&user, &me)) {
        Ok(c) => c,
        Err(e) => {
            return render_users(
                &s,
                &caller,
                StatusCode::BAD_REQUEST,
                None,
                Some(&e.to_string()),
            )
            .await
        }
    };
    if changes.is_empty() {
        return redirect(&Done::Unchanged.href(&user.username));
    }
    match s
        .catalog
        .update_user(&user.username, &changes.update, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return error(
                Some(&caller),
                StatusCode::NOT_FOUND,
                "There is no such user.",
            )
        }
        Err(e) => return unavailable(Some(&caller), &e),
    }
    if let Some((from, to)) = changes.role {
        s.auth
            .audit(caller.audit(
                Action::RoleChange,
                Some(&user.username),
                json!({ "from": from.as_str(), "to": to.as_str() }),
            ))
            .await;
        tracing::info!(actor = %me, user = %user.username, from = %from, to = %to, "role changed on the users page");
    }
    if !changes.fields.is_empty() {
        s.auth
            .audit(caller.audit(
                Action::UserUpdate,
                Some(&user.username),
                json!({
                    "fields": changes.fields,
                    "display_name": changes.update.display_name,
                    "agent_id": changes.update.agent_id,
                    "teams": changes.update.teams,
                }),
            ))
            .await;
    }
    redirect(&Done::Updated.href(&user.username))
}

/// `POST /users/{name}/disable`, `…/enable`, `…/password` (admins).
async fn user_action(
    caller: Caller,
    State(s): State<PagesState>,
    Path((name, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    use web::users::Done;
    if !access::allows(&caller.viewer, Need::ManageUsers) {
        return forbidden(&caller);
    }
    if !matches!(action.as_str(), "disable" | "enable" | "password") {
        return error(
            Some(&caller),
            StatusCode::NOT_FOUND,
            "There is no such page.",
        );
    }
    let body = match form_body(&caller, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let user = match target_user(&s, &caller, &name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let me = caller.viewer.actor();
    let now = now_ms();
    let (done, audit_action) = match action.as_str() {
        "password" => {
            let pw = match web::users::parse_password(&body) {
                Ok(p) => p,
                Err(e) => {
                    return render_users(
                        &s,
                        &caller,
                        StatusCode::BAD_REQUEST,
                        None,
                        Some(&e.to_string()),
                    )
                    .await
                }
            };
            let h = match hash(pw).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "password hashing failed");
                    return error(
                        Some(&caller),
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The password could not be hashed.",
                    );
                }
            };
            match s.catalog.set_password(&user.username, &h, now).await {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        Some(&caller),
                        StatusCode::NOT_FOUND,
                        "There is no such user.",
                    )
                }
                Err(e) => return unavailable(Some(&caller), &e),
            }
            (Done::Password, Action::Passwd)
        }
        other => {
            let disable = other == "disable";
            // Only the CSRF field: these forms have nothing else.
            if body.iter().any(|(k, _)| k != access::session::CSRF_FIELD) {
                return error(
                    Some(&caller),
                    StatusCode::BAD_REQUEST,
                    "Unexpected form fields.",
                );
            }
            if disable {
                if let Err(e) = web::users::check_disable(&me, &user.username) {
                    return render_users(
                        &s,
                        &caller,
                        StatusCode::BAD_REQUEST,
                        None,
                        Some(&e.to_string()),
                    )
                    .await;
                }
            }
            match s
                .catalog
                .set_user_disabled(&user.username, disable, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        Some(&caller),
                        StatusCode::NOT_FOUND,
                        "There is no such user.",
                    )
                }
                Err(e) => return unavailable(Some(&caller), &e),
            }
            if disable {
                (Done::Disabled, Action::UserDisable)
            } else {
                (Done::Enabled, Action::UserEnable)
            }
        }
    };
    s.auth
        .audit(caller.audit(audit_action, Some(&user.username), json!({})))
        .await;
    tracing::info!(actor = %me, user = %user.username, action = %audit_action.as_str(), "user changed on the users page");
    redirect(&done.href(&user.username))
}
