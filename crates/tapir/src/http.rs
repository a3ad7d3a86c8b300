//! HTTP: Prometheus `/metrics`, the control API (`/calls`, hang-up), the recordings API
//! (`/api/v1`, see [`api`]) and the review pages ([`pages`]), over plain HTTP or, with
//! `[http] tls_cert` and `tls_key`, HTTPS (rustls, the certificate loader of SIP over TLS).

pub mod api;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Control, Input};
use crate::metrics::Metrics;
use crate::recording::RecCtl;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    inputs: mpsc::Sender<Input>,
    recorder: crate::recording::RecTx,
}

/// Binds the HTTP listener and serves in the background (HTTPS with `tls`); returns the
/// bound address.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    addr: SocketAddr,
    tls: Option<Arc<crate::tls::TlsServer>>,
    metrics: Arc<Metrics>,
    inputs: mpsc::Sender<Input>,
    recorder: crate::recording::RecTx,
    catalog: store::Catalog,
    storage: store::Storage,
    auth: Option<Arc<crate::auth::Auth>>,
) -> std::io::Result<SocketAddr> {
    let mut recordings = api::router(
        api::ApiState::new(catalog.clone(), storage, metrics.clone()).with_auth(auth.clone()),
    );
    // Access control (auth.rs): the recordings API needs a session or a token, the control
    // API a token with the control scope; /metrics and /health stay open.
    // The review pages (pages.rs) sit beside the API behind the same Auth, with their own
    // middleware (a browser is sent to /login rather than answered 401).
    if let Some(a) = &auth {
        use axum::middleware::from_fn_with_state;
        a.register(&metrics.registry);
        recordings = recordings
            .layer(from_fn_with_state(a.clone(), crate::auth::require_viewer))
            .merge(crate::auth::routes(a.clone()))
            .merge(pages::router(pages::PagesState {
                catalog: catalog.clone(),
                auth: a.clone(),
                metrics: metrics.clone(),
            }));
        tokio::spawn(crate::auth::purge_loop(a.clone()));
    }
    recordings = recordings.merge(pages::assets_router(metrics.clone()));
    let control = Router::new()
        .route("/calls", get(list_calls))
        .route("/calls/{id}/hangup", post(hang_up))
        .route("/calls/{id}/recording/{action}", post(recording_command))
        .route("/calls/{id}/consent/{answer}", post(consent))
        .route("/calls/{id}/directive/{value}", post(directive))
        .route("/calls/{id}/disposition", post(disposition));
    let control = match &auth {
        Some(a) => control.route_layer(axum::middleware::from_fn_with_state(
            a.clone(),
            crate::auth::require_control,
        )),
        None => control,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok" }))
        .merge(control)
        .with_state(AppState {
            metrics: metrics.clone(),
            inputs,
            recorder,
        })
        .merge(recordings);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    match tls {
        None => {
            tokio::spawn(async move {
                // The peer's address tells the recordings API who is asking (see api::Viewer).
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
        }
        Some(tls) => {
            let failures = metrics.tls_handshake_failures.clone();
            let listener = TlsListener::start(listener, tls, failures);
            // The handlers read the peer as ConnectInfo<SocketAddr>, as over plain HTTP.
            let app = app.layer(axum::middleware::map_request(
                |mut req: axum::extract::Request| async move {
                    if let Some(ConnectInfo(TlsPeer(a))) = req.extensions().get().cloned() {
                        req.extensions_mut().insert(ConnectInfo(a));
                    }
                    req
                },
            ));
            tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<TlsPeer>();
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTPS server stopped");
                }
            });
        }
    }
    Ok(local)
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most TLS handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// The HTTPS side of the listener: TCP connections are accepted and their handshakes run
/// each in its own task (a slow or silent client holds up nobody else), and the server is
/// handed only established TLS streams. Each connection uses the certificate in force when
/// it was accepted (`TlsServer::reload` on SIGHUP).
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local: SocketAddr,
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// The client address of an HTTPS connection.
#[derive(Debug, Clone, Copy)]
struct TlsPeer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, TlsListener>) -> TlsPeer {
        TlsPeer(*s.remote_addr())
    }
}

impl TlsListener {
    fn start(
        tcp: tokio::net::TcpListener,
        tls: Arc<crate::tls::TlsServer>,
        failures: prometheus::IntCounterVec,
    ) -> TlsListener {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let (tx, rx) = mpsc::channel(64);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: try again shortly.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => {
                            failures.with_label_values(&["https"]).inc();
                            tracing::debug!(peer = %peer, error = %e, "HTTPS handshake failed");
                        }
                        Err(_) => {
                            failures.with_label_values(&["https"]).inc();
                            tracing::debug!(peer = %peer, "HTTPS handshake timed out");
                        }
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsStream, SocketAddr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accepting task is gone (the runtime is shutting down): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn metrics_handler(State(s): State<AppState>) -> String {
    s.metrics.render()
}

async fn list_calls(State(s): State<AppState>) -> Result<Json<Vec<u64>>, StatusCode> {
    let (tx, rx) = oneshot::channel();
    s.inputs
        .send(Input::Control(Control::ListCalls(tx)))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let mut calls = rx.await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    calls.sort_unstable();
    Ok(Json(calls))
}

/// Maps a yes/no answer from the engine or the recorder: 204 when the call was found, 404
/// when not (unknown call, or nothing records it), 503 when the answer never came.
async fn found(sent: bool, rx: oneshot::Receiver<bool>) -> StatusCode {
    if !sent {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match rx.await {
        Ok(true) => StatusCode::NO_CONTENT,
        Ok(false) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Sends a message to the recorder thread and waits for its answer.
async fn ask_recorder(
    s: &AppState,
    msg: impl FnOnce(oneshot::Sender<bool>) -> RecCtl,
) -> StatusCode {
    let (tx, rx) = oneshot::channel();
    found(s.recorder.send(msg(tx)), rx).await
}

async fn hang_up(State(s): State<AppState>, Path(id): Path<u64>) -> StatusCode {
    let (tx, rx) = oneshot::channel();
    let sent = s
        .inputs
        .send(Input::Control(Control::HangUp(id, tx)))
        .await
        .is_ok();
    found(sent, rx).await
}

/// `POST /calls/{id}/recording/{start|stop|pause|resume|agent-only|both}`.
async fn recording_command(
    State(s): State<AppState>,
    Path((id, action)): Path<(u64, String)>,
) -> StatusCode {
    use contact::ApiCommand as C;
    let command = match action.as_str() {
        "start" => C::Start,
        "stop" => C::Stop,
        "pause" => C::Pause,
        "resume" => C::Resume,
        "agent-only" => C::AgentOnly,
        "both" => C::Both,
        _ => return StatusCode::BAD_REQUEST,
    };
    api(&s, id, command).await
}

async fn api(s: &AppState, call: u64, command: contact::ApiCommand) -> StatusCode {
    ask_recorder(s, |tx| RecCtl::Api {
        call,
        command,
        reply: Some(tx),
    })
    .await
}

/// `POST /calls/{id}/disposition`: the agent applied a disposition (wrap-up).
async fn disposition(State(s): State<AppState>, Path(id): Path<u64>) -> StatusCode {
    api(&s, id, contact::ApiCommand::Disposition).await
}

/// `POST /calls/{id}/consent/{granted|denied}`: the caller's answer, from an IVR.
async fn consent(State(s): State<AppState>, Path((id, answer)): Path<(u64, String)>) -> StatusCode {
    match answer.parse::<policy::Consent>() {
        Ok(c) => api(&s, id, contact::ApiCommand::Consent(c)).await,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// `POST /calls/{id}/directive/{value}`: a flow directive in `X-Tapir-Record` syntax, e.g.
/// `start`, `stop;type=ivr`, `pause`, `statement-start;id=terms`.
async fn directive(
    State(s): State<AppState>,
    Path((id, value)): Path<(u64, String)>,
) -> StatusCode {
    let Ok(ds) = policy::parse_record_header(&value) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut code = StatusCode::BAD_REQUEST;
    for d in ds {
        code = api(&s, id, contact::ApiCommand::Directive(d)).await;
    }
    code
}
