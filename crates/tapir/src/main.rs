//! The `tapir` binary: configuration, logging, sockets and tasks around the sans-IO cores.
//!
//! Layout:
//! - [`config`]: the TOML configuration, environment overrides, validation.
//! - [`engine`]: SIP over UDP/TCP and timers, driving the `b2bua` core.
//! - [`relay`]: RTP/RTCP sockets per call leg, forwarding and the recorder tap.
//! - [`recording`]: recording settings and the recorder bridge.
//! - [`http`]: `/metrics`, the control API and the recordings API.
//! - [`shelf`]: the catalog, storage and delivery of finished recordings.
//! - [`transcribe`]: the transcription stage after a recording is stored.
//! - [`metrics`]: the Prometheus registry.

/// The SIP engine allocates on every message (parsed headers, the messages it builds) and the
/// recorder and relay threads allocate alongside it; glibc's malloc was a sixth of the engine's
/// CPU at 1,000 calls per second (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod auth;
mod config;
mod engine;
mod http;
mod metrics;
mod policy_link;
mod recording;
mod relay;
mod relay_srtp;
mod shelf;
mod tls;
mod transcribe;
mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::engine::{Control, Engine, Input};

#[derive(Parser)]
#[command(name = "tapir", version, about = "SIP back-to-back recording server")]
struct Cli {
    /// Configuration file; without it tapir runs on its embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// How long SIGTERM waits for calls in progress before ending them.
    #[arg(long, default_value = "30")]
    drain_seconds: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print what is wrong with it.
    CheckConfig { file: PathBuf },
    /// Print the embedded default configuration.
    DefaultConfig,
    // Access control, in the catalog of `--config` (users.rs).
    /// Manage the users of the review page.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Check or export the audit log.
    #[command(subcommand)]
    Audit(users::AuditCommand),
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("TAPIR_"))
        .collect()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            return match Config::load(Some(file), &env_vars()) {
                Ok(c) => {
                    println!(
                        "{}: OK ({} routes, SIP udp {:?} tcp {:?})",
                        file.display(),
                        c.routes.len(),
                        c.sip.listen_udp,
                        c.sip.listen_tcp
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e:#}", file.display());
                    std::process::ExitCode::from(2)
                }
            };
        }
        Some(Command::DefaultConfig) => {
            print!("{}", config::DEFAULT_CONFIG);
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::User(c)) => return users::run(cli.config.as_deref(), users::Task::User(c)),
        Some(Command::Token(c)) => return users::run(cli.config.as_deref(), users::Task::Token(c)),
        Some(Command::Audit(c)) => return users::run(cli.config.as_deref(), users::Task::Audit(c)),
        None => {}
    }
    // Taken before reading, so an edit made while tapir starts is not missed.
    let config_stamp = config_stamp(&cli.config);
    let cfg = match Config::load(cli.config.as_deref(), &env_vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    no_huge_pages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli, cfg, config_stamp)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tapir: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// the allocator's own setting stands). mimalloc asks the kernel for huge pages, and the kernel
/// zeroes each 2 MiB page whole on its first touch: while the transaction tables grew to their
/// plateau (the first 32 s at a steady call rate) that stopped the signalling thread for up to
/// tens of milliseconds at a time, and every call set up in that moment waited. With 4 KiB
/// pages the same zeroing is spread over the inserts (docs/benchmarks.md, "Huge pages").
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integers only and touches no memory of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages left on");
    }
}

fn init_logging(cfg: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // Colour only for a person at a terminal: a file, a pipe or journald would keep the escape
    // codes in every line. NO_COLOR (https://no-color.org) turns it off there too.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn run(cli: Cli, cfg: Config, config_stamp: Option<SystemTime>) -> Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    let advertise = cfg.advertise()?;
    let core_cfg = b2bua::Config {
        sip_addrs: advertise.clone(),
        media_ips: cfg.media.ips.clone(),
        timers: sip::transaction::Timers {
            t1: Duration::from_millis(cfg.sip.t1_ms),
            t2: Duration::from_millis(cfg.sip.t2_ms),
            t4: Duration::from_millis(cfg.sip.t4_ms),
        },
        rtp_ports: (cfg.media.port_min, cfg.media.port_max),
        id_seed: random_seed(),
        user_agent: cfg.sip.user_agent.clone(),
    };
    let mut core = b2bua::B2bua::new(core_cfg, cfg.compile_routes()?);
    core.set_key_source(Box::new(OsKeys));
    core.set_tls_addrs(cfg.advertise_tls()?);
    let tls = cfg.tls()?.map(Arc::new);
    core.set_registrar(cfg.compile_registrar()?);
    core.set_flood_limit(cfg.flood()?);
    let (announcements, prompts) = cfg.announcements()?;
    core.set_announcements(announcements);
    let (announce_tx, announce_rx) = tokio::sync::mpsc::unbounded_channel();

    // Contact ids carry a per-process tag (unique across restarts); the catalog names the
    // node by its configured name (stable across restarts, so it resumes its own uploads).
    let node = format!("{:08x}", random_seed() as u32);
    let node_name = shelf::node_name(&cfg.node);
    let opened = shelf::open(
        &cfg.catalog,
        &cfg.storage,
        &cfg.recording.recordings_dir,
        node_name,
    )
    .await?;
    // Before the shelf delivers anything: every recording it stores is handed to it.
    let transcriber = transcribe::start(&cfg.transcripts, &opened, metrics.clone()).await?;
    let shelf_tx = shelf::start(
        &opened,
        &cfg.storage,
        cfg.recording.spool_dir.clone(),
        metrics.clone(),
        transcriber.clone(),
    );
    // Before the recorder repairs the spool: what the outbox holds was finished by the last
    // run, what the spool's top holds was interrupted and is the repair's.
    std::fs::create_dir_all(&cfg.recording.spool_dir).with_context(|| {
        format!(
            "cannot create spool dir {}",
            cfg.recording.spool_dir.display()
        )
    })?;
    shelf::reconcile(
        &opened.shelf,
        &cfg.recording.spool_dir,
        &shelf_tx,
        &metrics,
        transcriber.as_ref(),
    )
    .await?;
    let policy = policy_link::start(cfg.recording.policy_file.clone(), metrics.clone())?;
    let (tap, rec_ctl) = recording::start(
        cfg.recording.clone(),
        cfg.media.tap_queue,
        metrics.clone(),
        cfg.log.show_numbers,
        shelf_tx,
    )?;
    let mut zones = Vec::new();
    for (name, nets) in &cfg.zones {
        let nets = nets
            .iter()
            .map(|n| b2bua::routing::Cidr::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        zones.push((name.clone(), nets));
    }
    let relay = relay::Relay::new(
        metrics.clone(),
        Some(tap),
        std::sync::Arc::new(prompts),
        Some(announce_tx),
    );
    relay.set_media_timeout(Duration::from_secs(cfg.media.timeout_s));
    let link = engine::RecorderLink {
        tx: rec_ctl.clone(),
        default_mode: cfg.recording.mode,
        default_format: cfg.recording.format,
        node,
        policy,
        zones,
    };
    let handle = Engine::start(engine::EngineParts {
        core,
        udp_addrs: cfg.sip.listen_udp.clone(),
        tcp_addrs: cfg.sip.listen_tcp.clone(),
        tls_addrs: cfg.sip.listen_tls.clone(),
        tls: tls.clone(),
        relay: relay.clone(),
        metrics: metrics.clone(),
        recorder: Some(link),
        show_numbers: cfg.log.show_numbers,
        tcp_idle: Duration::from_secs(cfg.sip.tcp_idle_timeout_s),
        udp_recv_buffer: cfg.sip.udp_recv_buffer_kb.saturating_mul(1024),
        announce_done: announce_rx,
    })
    .await?;
    // HTTPS when [http] has a certificate; the session cookie is then Secure.
    let https = cfg.http_tls()?.map(Arc::new);
    let http_addr = http::serve(
        cfg.http.listen,
        https.clone(),
        metrics.clone(),
        handle.inputs.clone(),
        rec_ctl,
        opened.catalog.clone(),
        opened.storage.clone(),
        cfg.access.enabled.then(|| {
            auth::Auth::new(
                opened.catalog.clone(),
                cfg.access.secure_cookie || https.is_some(),
            )
        }),
    )
    .await
    .context("cannot start the HTTP server")?;
    // One line tests and operators can wait for: every socket is bound.
    tracing::info!(
        sip_udp = ?handle.local_udp,
        sip_tcp = ?handle.local_tcp,
        sip_tls = ?handle.local_tls,
        http = %http_addr,
        "tapir ready"
    );

    let config_path = cli.config.clone();
    let inputs = handle.inputs.clone();
    let mut calls = handle.calls.clone();
    wait_for_shutdown(config_path, config_stamp, inputs.clone(), tls, https).await;
    tracing::info!("draining: new calls get 503, calls in progress continue");
    let _ = inputs.send(Input::Control(Control::Drain)).await;
    let deadline = tokio::time::sleep(Duration::from_secs(cli.drain_seconds));
    tokio::pin!(deadline);
    loop {
        if *calls.borrow() == 0 {
            break;
        }
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!("drain deadline reached; ending the remaining calls");
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = inputs.send(Input::Control(Control::ListCalls(tx))).await;
                for call in rx.await.unwrap_or_default() {
                    let (tx, _rx) = tokio::sync::oneshot::channel();
                    let _ = inputs.send(Input::Control(Control::HangUp(call, tx))).await;
                }
                // Give the BYEs a moment on the wire.
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            r = calls.changed() => if r.is_err() { break },
        }
    }
    // The calls are over; their recordings are still on their way (the recorder runs behind
    // the call, the finisher analyses and transcodes, the shelf uploads). Exiting now would
    // leave them for the next start to repair as if the node had crashed.
    let until = deadline
        .deadline()
        .max(tokio::time::Instant::now() + SETTLE_MIN);
    settle_recordings(&metrics, until).await;
    tracing::info!("tapir stopped");
    Ok(())
}

/// How long a drain waits at least for the recordings of its last calls, even past
/// `--drain-seconds`.
const SETTLE_MIN: Duration = Duration::from_secs(5);

/// Waits until no recording is being written, finished or uploaded, or until `until`; what
/// is not in storage by then stays in the spool for the next start.
async fn settle_recordings(metrics: &metrics::Metrics, until: tokio::time::Instant) {
    let left = || {
        metrics.recordings_active.get()
            + metrics.recordings_finishing.get()
            + metrics.shelf.uploads_pending.get()
    };
    if left() > 0 {
        tracing::info!(
            recordings = left(),
            "draining: waiting for recordings to reach storage"
        );
    }
    while left() > 0 {
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                recordings = left(),
                "recordings not in storage yet; the spool keeps them for the next start"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for SIGTERM or Ctrl-C. SIGHUP, or a change of the configuration file (its
/// modification time, checked every second), reloads the routes and the TLS certificates
/// (SIP's and HTTPS's);
/// calls in progress keep the route they started with, connections the certificate they
/// were made with, and an invalid file leaves what was in force.
async fn wait_for_shutdown(
    config: Option<PathBuf>,
    mut seen: Option<SystemTime>,
    inputs: mpsc::Sender<Input>,
    tls: Option<Arc<tls::Tls>>,
    https: Option<Arc<tls::TlsServer>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let reload = tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = config_stamp(&config);
                let changed = now != seen;
                seen = now;
                changed
            }
        };
        if reload {
            let loaded = Config::load(config.as_deref(), &env_vars());
            match loaded
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .and_then(|c| c.compile_routes())
            {
                Ok(r) => {
                    let _ = inputs.send(Input::Control(Control::ReloadRoutes(r))).await;
                }
                Err(e) => tracing::error!("reload rejected, previous routes stay: {e:#}"),
            }
            if let (Some(t), Ok(c)) = (&tls, &loaded) {
                match c.tls_targets().and_then(|targets| t.reload(&targets)) {
                    Ok(()) => tracing::info!("TLS certificates reloaded"),
                    Err(e) => {
                        tracing::error!("TLS reload rejected, previous certificates stay: {e:#}")
                    }
                }
            }
            if let Some(h) = &https {
                match h.reload() {
                    Ok(()) => tracing::info!("HTTPS certificate reloaded"),
                    Err(e) => tracing::error!(
                        "HTTPS reload rejected, the previous certificate stays: {e:#}"
                    ),
                }
            }
        }
    }
}

/// Modification time of the configuration file, if there is one.
fn config_stamp(path: &Option<PathBuf>) -> Option<SystemTime> {
    path.as_deref()
        .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// SRTP master keys from the operating system's random number generator.
struct OsKeys;

impl b2bua::KeySource for OsKeys {
    fn fill(&mut self, buf: &mut [u8]) {
        // Without the OS generator no key could be trusted: stopping is the only safe answer.
        getrandom::fill(buf).expect("the operating system's random number generator");
    }
}

/// Seed for Call-IDs and tags: distinct per process and per node without a RNG dependency.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
