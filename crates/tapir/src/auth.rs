//! HTTP authentication: the viewer of every request, CSRF on state-changing requests,
//! `/login` and `/logout`, and the control API's token check.
//!
//! The decisions are the `access` crate's ([`access::authn`]); this reads headers, bodies
//! and the catalog, runs argon2 off the async threads, and writes the audit log.
//!
//! `http.rs` wires it when `[access] enabled` (the default): the recordings API behind
//! [`require_viewer`] (its handlers read the [`Caller`] through `api::Viewer`), the control
//! API behind [`require_control`], [`routes`] merged in, [`purge_loop`] spawned. The server
//! is served with the peer's address (`into_make_service_with_connect_info`), which the
//! throttle and the audit log use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use access::audit::{self, Action};
use access::authn::{self, Authenticated, Credential, Denied, LoginVerdict};
use access::session::{token_hash, CookieSpec, CSRF_FIELD, CSRF_HEADER};
use access::{allows, Need, SessionPolicy, Throttle, ThrottleConfig, Viewer};
use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use store::{Catalog, StoreError};

/// The largest login or form body read.
const MAX_FORM: usize = 16 * 1024;
/// How often expired sessions are deleted and the throttle pruned.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// A token's last use is written back at most this often.
const TOKEN_TOUCH_MS: i64 = 60_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What authentication needs, shared by every request.
pub struct Auth {
    catalog: Catalog,
    policy: SessionPolicy,
    throttle: Mutex<Throttle>,
    cookie: CookieSpec,
    /// `tapir_logins_total{outcome}`; registered by [`Auth::register`].
    logins: prometheus::IntCounterVec,
}

impl Auth {
    /// `secure`: served over HTTPS (the cookie is then `Secure` and `__Host-` named).
    pub fn new(catalog: Catalog, secure: bool) -> Arc<Auth> {
        access::password::warm_up();
        let policy = SessionPolicy::default();
        Arc::new(Auth {
            catalog,
            policy,
            throttle: Mutex::new(Throttle::new(ThrottleConfig::default())),
            cookie: CookieSpec {
                secure,
                max_age_s: Some(policy.absolute_ms / 1000),
            },
            logins: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tapir_logins_total",
                    "Login attempts, by outcome (success, failed, throttled, refused: a foreign origin or a malformed form)",
                ),
                &["outcome"],
            )
            .expect("a valid metric"),
        })
    }

    /// Registers this layer's metrics (once, by the HTTP server).
    pub fn register(&self, registry: &prometheus::Registry) {
        for outcome in ["success", "failed", "throttled", "refused"] {
            self.logins.with_label_values(&[outcome]);
        }
        if let Err(e) = registry.register(Box::new(self.logins.clone())) {
            tracing::warn!(error = %e, "login metrics not registered");
        }
    }

    fn count_login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // A panic while holding it cannot leave the counters inconsistent: use them.
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Best effort: an audit entry that cannot be written is logged, the request goes on.
    pub async fn audit(&self, e: store::NewAudit) {
        if let Err(err) = self.catalog.audit_append(&e).await {
            tracing::error!(error = %err, action = %e.action, "audit entry not written");
        }
    }

    /// The caller of a request, or why not.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Authenticated, AuthFailure> {
        let h = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let now = now_ms();
        match authn::credential(
            h(header::AUTHORIZATION),
            h(header::COOKIE),
            self.cookie.secure,
        ) {
            Credential::None => Err(AuthFailure::Denied(Denied::Unauthenticated)),
            Credential::Session(token) => {
                let hash = token_hash(token);
                let found = self.catalog.session(&hash).await?;
                let a = authn::session_viewer(&self.policy, found, now);
                match &a {
                    Ok(a) if a.touch => {
                        self.catalog.touch_session(&hash, now).await?;
                    }
                    Err(_) => {
                        // Expired, idle or disabled: it will never open again.
                        self.catalog.delete_session(&hash).await?;
                    }
                    Ok(_) => {}
                }
                a.map_err(AuthFailure::Denied)
            }
            Credential::Bearer(token) => {
                let found = self.catalog.token_by_hash(&token_hash(token)).await?;
                let touch = found.as_ref().map(|t| {
                    (
                        t.id,
                        t.last_used_ms.is_none_or(|l| now - l >= TOKEN_TOUCH_MS),
                    )
                });
                let a = authn::token_viewer(found).map_err(AuthFailure::Denied)?;
                if let Some((id, true)) = touch {
                    self.catalog.touch_token(id, now).await?;
                }
                Ok(a)
            }
        }
    }
}

pub(crate) enum AuthFailure {
    Denied(Denied),
    Catalog(StoreError),
}

impl From<StoreError> for AuthFailure {
    fn from(e: StoreError) -> Self {
        AuthFailure::Catalog(e)
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        match self {
            AuthFailure::Denied(d) => denied(d),
            AuthFailure::Catalog(e) => {
                tracing::error!(error = %e, "catalog unavailable for authentication");
                error(StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable")
            }
        }
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn denied(d: Denied) -> Response {
    match d {
        Denied::Unauthenticated => {
            let mut r = error(StatusCode::UNAUTHORIZED, "authentication required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Denied::BadCsrf => error(StatusCode::FORBIDDEN, "missing or wrong CSRF token"),
        Denied::Forbidden => error(StatusCode::FORBIDDEN, "not allowed"),
    }
}

/// False when a browser says the request comes from another site (see
/// [`authn::same_origin`]).
fn from_this_site(headers: &HeaderMap) -> bool {
    let h = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    authn::same_origin(h(header::ORIGIN), h(header::HOST))
}

/// The client address of a request (the connection's peer).
fn client(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The authenticated caller of a request behind [`require_viewer`] or [`require_control`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub viewer: Viewer,
    pub session: Option<store::SessionRecord>,
    pub from: IpAddr,
}

impl Caller {
    /// An audit entry by this caller.
    pub fn audit(
        &self,
        action: Action,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> store::NewAudit {
        audit::by(
            &self.viewer,
            now_ms(),
            action,
            target,
            detail,
            Some(&self.from.to_string()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| denied(Denied::Unauthenticated))
    }
}

/// The CSRF token a request carries: the header, else a urlencoded form's `csrf` field. A
/// form body is read (up to [`MAX_FORM`]) and put back for the handler.
async fn csrf_of(req: Request) -> Result<(Option<String>, Request), Refusal> {
    if let Some(v) = req.headers().get(CSRF_HEADER) {
        let v = v.to_str().ok().map(str::to_string);
        return Ok((v, req));
    }
    if !is_form(req.headers()) {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| Refusal::TooLarge)?;
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

/// True when the body is a urlencoded form.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// Why [`admit`] did not let a request through.
pub enum Refusal {
    Denied(Denied),
    /// A form body over [`MAX_FORM`].
    TooLarge,
    Catalog(StoreError),
}

impl From<AuthFailure> for Refusal {
    fn from(f: AuthFailure) -> Refusal {
        match f {
            AuthFailure::Denied(d) => Refusal::Denied(d),
            AuthFailure::Catalog(e) => Refusal::Catalog(e),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Denied(d) => denied(d),
            Refusal::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
            Refusal::Catalog(e) => AuthFailure::Catalog(e).into_response(),
        }
    }
}

/// The checks of every request behind access control: a session or a token, and a
/// session's state-changing request its CSRF token and this site's origin. Returns the
/// request with its [`Caller`] for the handler; the refusal is the caller's to answer (JSON
/// for the API, a redirect or a page for the pages).
pub async fn admit(auth: &Auth, req: Request) -> Result<Request, Refusal> {
    let a = auth.authenticate(req.headers()).await?;
    let method = req.method().as_str().to_string();
    if access::session::needs_csrf(&method) && !from_this_site(req.headers()) {
        return Err(Refusal::Denied(Denied::BadCsrf));
    }
    let (given, mut req) = csrf_of(req).await?;
    authn::check_csrf(&a, &method, given.as_deref()).map_err(Refusal::Denied)?;
    let from = client(req.extensions());
    req.extensions_mut().insert(Caller {
        viewer: a.viewer,
        session: a.session,
        from,
    });
    Ok(req)
}

/// Middleware: the request needs a session or a token (401 otherwise), and a session's
/// state-changing request its CSRF token (403 otherwise). Puts the [`Caller`] in the
/// request for the handler.
pub async fn require_viewer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    match admit(&auth, req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r.into_response(),
    }
}

/// Middleware of the call-control API (`/calls/*`): only a token with the `control` scope
/// (401 without a credential, 403 with one that lacks it). Every command (not the listing)
/// is audited.
pub async fn require_control(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let a = match auth.authenticate(req.headers()).await {
        Ok(a) => a,
        Err(f) => return f.into_response(),
    };
    if !allows(&a.viewer, Need::Control) {
        return denied(Denied::Forbidden);
    }
    let caller = Caller {
        viewer: a.viewer,
        session: None,
        from: client(req.extensions()),
    };
    let command = (req.method() != Method::GET).then(|| req.uri().path().to_string());
    let res = next.run(req).await;
    if let Some(path) = command {
        let e = caller.audit(
            Action::Control,
            Some(&path),
            json!({ "status": res.status().as_u16() }),
        );
        auth.audit(e).await;
    }
    res
}

/// `POST /login`, `POST /logout`, `GET /api/v1/session`.
pub fn routes(auth: Arc<Auth>) -> Router {
    let session_only = axum::middleware::from_fn_with_state(auth.clone(), require_viewer);
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout).route_layer(session_only.clone()))
        .route("/api/v1/session", get(whoami).route_layer(session_only))
        .with_state(auth)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    /// Where to go after the login: a path of this site only.
    #[serde(default)]
    next: Option<String>,
}

/// True when the client is a browser navigating (a form of the login page): failures then
/// come back as the login page with a message, not as JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A failed login's answer: JSON for API clients, the login page for browsers.
fn login_refused(
    html: bool,
    status: StatusCode,
    msg: &str,
    notice: web::login::LoginNotice,
    form: Option<&LoginForm>,
) -> Response {
    if !html {
        return error(status, msg);
    }
    let next = form
        .and_then(|f| f.next.as_deref())
        .map(|n| authn::local_redirect(Some(n)));
    let username = form.map(|f| f.username.as_str());
    crate::http::pages::html(status, web::login::login_page(next, Some(notice), username))
}

/// `POST /login` (form `username`, `password`, optional `next`): 303 to `next` with the
/// session cookie; 401 for a wrong username or password (the same answer whatever was
/// wrong), 429 with `Retry-After` when throttled, 400/413 for a malformed or oversize form.
/// A browser (`Accept: text/html`) gets the login page back with the message instead of
/// JSON, with the same status.
async fn login(State(auth): State<Arc<Auth>>, req: Request) -> Response {
    use web::login::LoginNotice;
    let html = wants_html(req.headers());
    if !from_this_site(req.headers()) {
        auth.count_login("refused");
        return denied(Denied::Forbidden);
    }
    let from = client(req.extensions());
    let from_s = from.to_string();
    let bytes = match to_bytes(req.into_body(), MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            auth.count_login("refused");
            return login_refused(
                html,
                StatusCode::PAYLOAD_TOO_LARGE,
                "form too large",
                LoginNotice::BadForm,
                None,
            );
        }
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&bytes) else {
        auth.count_login("refused");
        return login_refused(
            html,
            StatusCode::BAD_REQUEST,
            "expected username and password",
            LoginNotice::BadForm,
            None,
        );
    };
    let now = now_ms();
    let checked = auth.throttle().check(&form.username, from, now);
    if let Err(t) = checked {
        auth.count_login("throttled");
        auth.audit(audit::login_failed(
            now,
            &form.username,
            "throttled",
            Some(&from_s),
        ))
        .await;
        let mut r = login_refused(
            html,
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins",
            LoginNotice::Throttled {
                retry_after_s: t.retry_after_s(),
            },
            Some(&form),
        );
        if let Ok(v) = HeaderValue::from_str(&authn::retry_after(&t)) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let found = match authn::login_username(&form.username) {
        Some(name) => match auth.catalog.user_by_name(&name).await {
            Ok(u) => u,
            Err(e) => return AuthFailure::Catalog(e).into_response(),
        },
        None => None,
    };
    let password = form.password.clone();
    // argon2 takes tens of milliseconds of CPU: not on the async threads.
    let verdict =
        match tokio::task::spawn_blocking(move || authn::verify_login(&password, found.as_ref()))
            .await
        {
            Ok(v) => v,
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "login failed"),
        };
    authn::record_login(&mut auth.throttle(), &form.username, from, now, &verdict);
    let user = match verdict {
        LoginVerdict::Success(u) => u,
        LoginVerdict::Failed { reason } => {
            auth.count_login("failed");
            auth.audit(audit::login_failed(
                now,
                &form.username,
                reason,
                Some(&from_s),
            ))
            .await;
            return login_refused(
                html,
                StatusCode::UNAUTHORIZED,
                "wrong username or password",
                LoginNotice::Failed,
                Some(&form),
            );
        }
    };
    let session = match auth.policy.start(user.id, now, Some(from_s.clone())) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "no session token");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "login failed");
        }
    };
    if let Err(e) = auth.catalog.add_session(&session.record).await {
        return AuthFailure::Catalog(e).into_response();
    }
    auth.count_login("success");
    auth.audit(audit::entry(
        now,
        &user.username,
        Action::Login,
        None,
        json!({ "role": user.role.as_str() }),
        Some(&from_s),
    ))
    .await;
    let mut r = (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            authn::local_redirect(form.next.as_deref()).to_string(),
        )],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&auth.cookie.set(&session.token)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /logout` (a session with its CSRF token): ends the session, clears the cookie,
/// 303 to the login page (which then says so).
async fn logout(State(auth): State<Arc<Auth>>, caller: Caller) -> Response {
    if let Some(s) = &caller.session {
        if let Err(e) = auth.catalog.delete_session(&s.token_hash).await {
            return AuthFailure::Catalog(e).into_response();
        }
    }
    auth.audit(caller.audit(Action::Logout, None, json!({})))
        .await;
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/login?logged_out=1")],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&auth.cookie.clear()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /api/v1/session`: who is logged in, and the CSRF token for the page's scripts.
async fn whoami(caller: Caller) -> Response {
    let csrf = caller.session.as_ref().map(|s| s.csrf.clone());
    let mut r = match &caller.viewer {
        Viewer::User(u) => Json(json!({
            "username": u.username,
            "display_name": u.display_name,
            "role": u.role.as_str(),
            "csrf": csrf,
        })),
        Viewer::Token { name, scopes, .. } => Json(json!({
            "token": name,
            "scopes": scopes.to_text(),
        })),
    }
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Deletes expired sessions and prunes the throttle, for ever.
pub async fn purge_loop(auth: Arc<Auth>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        let now = now_ms();
        match auth
            .catalog
            .purge_sessions(now, auth.policy.idle_cutoff(now))
            .await
        {
            Ok(n) if n > 0 => tracing::info!(sessions = n, "expired sessions deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expired sessions not deleted"),
        }
        auth.throttle().prune(now);
    }
}
