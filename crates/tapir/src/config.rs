//! Configuration: the TOML file, environment overrides, and validation.
//!
//! Unknown keys are errors that name the key, so a typo never silently falls back to a
//! default. Environment variables `TAPIR_<SECTION>__<KEY>` override file values; their text
//! is read as a TOML value when it parses as one (numbers, booleans, arrays) and as a string
//! otherwise.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use b2bua::{RouteConfig, Routes};
use serde::Deserialize;

/// The embedded defaults (`config/tapir.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/tapir.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub recording: crate::recording::RecordingConfig,
    #[serde(default)]
    pub zones: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Recording announcements, per route.
    #[serde(default)]
    pub announcements: Vec<AnnouncementConfig>,
    /// Registration relay toward a PBX (phone-side deployment); off when absent.
    #[serde(default)]
    pub registrar: Option<b2bua::RegistrarConfig>,
    pub node: crate::shelf::NodeConfig,
    pub catalog: crate::shelf::CatalogConfig,
    pub storage: crate::shelf::StorageSection,
    /// Access control of the HTTP APIs (docs/access.md).
    #[serde(default)]
    pub access: AccessConfig,
    /// Transcripts of stored recordings (docs/transcripts.md); off unless an engine is named.
    #[serde(default)]
    pub transcripts: transcript::TranscriptsConfig,
}

/// `[access]`: who may use the HTTP APIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Sessions and API tokens on every endpoint but `/metrics` and `/health`; the control
    /// API needs a token with the `control` scope. Off: the recordings API answers this
    /// host's clients only, as administrator, and the control API anyone who reaches it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Mark the session cookie `Secure` (with the `__Host-` name): set it when tapir is
    /// reached over HTTPS (a TLS-terminating proxy).
    #[serde(default)]
    pub secure_cookie: bool,
}

fn yes() -> bool {
    true
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            enabled: true,
            secure_cookie: false,
        }
    }
}

/// A prompt played to the customer before the call is connected (see docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementConfig {
    /// Name of the route whose calls are announced.
    pub route: String,
    /// WAV file: 8 kHz, mono, 16-bit PCM.
    pub prompt: std::path::PathBuf,
    /// After the prompt, wait for the caller's 1 (accept) or 2 (refuse).
    #[serde(default)]
    pub collect_consent: bool,
    /// `X-Tapir-Call-Type` values for which the prompt is skipped (call-backs).
    #[serde(default = "default_skip")]
    pub skip_call_types: Vec<String>,
}

fn default_skip() -> Vec<String> {
    vec!["callback".into(), "scheduled".into()]
}

/// Reads a prompt: 8 kHz mono 16-bit PCM WAV.
pub fn load_prompt(path: &Path) -> Result<Vec<i16>> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("cannot read prompt {}", path.display()))?;
    let spec = r.spec();
    if spec.sample_rate != 8000
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        bail!(
            "prompt {}: must be 8000 Hz mono 16-bit PCM (is {} Hz, {} channels, {} bits)",
            path.display(),
            spec.sample_rate,
            spec.channels,
            spec.bits_per_sample
        );
    }
    r.samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("prompt {} is truncated", path.display()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    #[serde(default)]
    pub listen_udp: Vec<SocketAddr>,
    #[serde(default)]
    pub listen_tcp: Vec<SocketAddr>,
    /// SIP over TLS (RFC 3261 §26) listeners; they need `tls_cert` and `tls_key`.
    #[serde(default)]
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain of the TLS listeners.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CAs that client certificates of TLS peers are verified against; without it no
    /// client certificate is asked for.
    #[serde(default)]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// With `tls_client_ca`: refuse peers that present no client certificate.
    #[serde(default)]
    pub tls_require_client_cert: bool,
    #[serde(default)]
    pub advertise: Vec<SocketAddr>,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub tcp_idle_timeout_s: u64,
    /// Receive buffer of each SIP UDP socket, in KiB; 0 keeps the system's default.
    pub udp_recv_buffer_kb: usize,
    pub user_agent: String,
    /// Requests per second allowed from one source address; 0 turns the limit off.
    pub rate_limit: f64,
    pub rate_limit_burst: f64,
    /// `reject` (503 + Retry-After) or `drop`.
    pub rate_limit_action: String,
    /// Zones (see `[zones]`) never rate limited: trunks and PBXs that carry many calls.
    #[serde(default)]
    pub rate_limit_exempt_zones: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub ips: Vec<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    pub tap_queue: usize,
    /// Seconds without RTP in either direction (while not on hold) after which a call is
    /// ended with BYE on both legs; 0 disables.
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS only (and the
    /// session cookie is `Secure`).
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
    pub show_numbers: bool,
}

impl Config {
    /// Reads `path` (or the embedded defaults), applies `env` overrides and validates.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?,
            None => DEFAULT_CONFIG.to_string(),
        };
        Self::from_str_with_env(&text, env)
    }

    pub fn from_str_with_env(text: &str, env: &[(String, String)]) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Missing sections take the embedded defaults, so a small file only says what differs.
        let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG).expect("embedded config parses");
        for (k, v) in defaults {
            if k == "routes" {
                continue;
            }
            match (value.get_mut(&k), v) {
                (None, v) => {
                    value.insert(k, v);
                }
                (Some(toml::Value::Table(t)), toml::Value::Table(d)) => {
                    for (dk, dv) in d {
                        t.entry(dk).or_insert(dv);
                    }
                }
                _ => {}
            }
        }
        for (k, v) in env {
            let Some(path) = k.strip_prefix("TAPIR_") else {
                continue;
            };
            let Some((section, key)) = path.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let parsed = toml::from_str::<toml::Table>(&format!("x = {v}"))
                .ok()
                .and_then(|mut t| t.remove("x"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            let table = value
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            match table {
                toml::Value::Table(t) => {
                    t.insert(key, parsed);
                }
                _ => bail!("environment variable {k}: [{section}] is not a section"),
            }
        }
        let cfg: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.sip.listen_udp.is_empty()
            && self.sip.listen_tcp.is_empty()
            && self.sip.listen_tls.is_empty()
        {
            bail!("sip: listen_udp, listen_tcp and listen_tls are empty: nothing to listen on");
        }
        if self.media.ips.is_empty() {
            bail!("media.ips: at least one address is needed for SDP");
        }
        if self.media.port_min >= self.media.port_max {
            bail!("media: port_min must be below port_max");
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            bail!("sip: t1_ms must be > 0 and t2_ms >= t1_ms");
        }
        if !["reject", "drop"].contains(&self.sip.rate_limit_action.as_str()) {
            bail!(
                "sip.rate_limit_action: '{}' is not reject or drop",
                self.sip.rate_limit_action
            );
        }
        self.flood()?;
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!("log.format: '{}' is not text or json", self.log.format);
        }
        if self.routes.is_empty() {
            bail!("routes: no route configured; every INVITE would be refused");
        }
        self.recording.validate()?;
        self.storage.validate()?;
        self.transcripts
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for name in self.transcripts.routes.keys() {
            if !self.routes.iter().any(|r| &r.name == name) {
                bail!("transcripts.routes: no route named '{name}'");
            }
        }
        // A misspelt route would keep its recordings for the default period, silently.
        for name in self.storage.retention.routes.keys() {
            if !self.routes.iter().any(|r| &r.name == name) {
                bail!("storage.retention.routes: no route named '{name}'");
            }
        }
        store::CatalogUrl::parse(&self.catalog.url)
            .map_err(|e| anyhow::anyhow!("catalog.url: {e}"))?;
        for a in &self.announcements {
            if !self.routes.iter().any(|r| r.name == a.route) {
                bail!("announcements: no route named '{}'", a.route);
            }
            load_prompt(&a.prompt)?;
        }
        if let Some(p) = &self.recording.policy_file {
            crate::policy_link::load_rules(p)
                .map_err(|e| anyhow::anyhow!("recording.policy_file: {e}"))?;
        }
        for r in &self.routes {
            if let Some(m) = &r.record {
                if crate::recording::parse_mode(m).is_none() {
                    bail!(
                        "route '{}': record = '{m}' is not never, always or on_demand",
                        r.name
                    );
                }
            }
            if let Some(f) = &r.format {
                if crate::recording::parse_format(f).is_none() {
                    bail!("route '{}': format = '{f}' is not wav or mp3", r.name);
                }
            }
        }
        self.compile_routes()?;
        self.tls()?;
        self.http_tls()?;
        if let Some(r) = &self.registrar {
            if let Some(m) = &r.record {
                if crate::recording::parse_mode(m).is_none() {
                    bail!("registrar: record = '{m}' is not never, always or on_demand");
                }
            }
            if let Some(f) = &r.format {
                if crate::recording::parse_format(f).is_none() {
                    bail!("registrar: format = '{f}' is not wav or mp3");
                }
            }
        }
        self.compile_registrar()?;
        self.advertise()?;
        Ok(())
    }

    /// The compiled `[registrar]` section, `None` when the registration relay is off.
    pub fn compile_registrar(&self) -> Result<Option<b2bua::Registrar>> {
        self.registrar
            .as_ref()
            .map(|r| r.compile().map_err(|e| anyhow::anyhow!("{e}")))
            .transpose()
    }

    pub fn flood(&self) -> Result<b2bua::flood::FloodConfig> {
        let mut exempt = Vec::new();
        for z in &self.sip.rate_limit_exempt_zones {
            let nets = self.zones.get(z).ok_or_else(|| {
                anyhow::anyhow!("sip.rate_limit_exempt_zones: unknown zone '{z}'")
            })?;
            for n in nets {
                exempt.push(
                    b2bua::routing::Cidr::parse(n)
                        .map_err(|e| anyhow::anyhow!("zone '{z}': {e}"))?,
                );
            }
        }
        Ok(b2bua::flood::FloodConfig {
            rate: self.sip.rate_limit,
            burst: self.sip.rate_limit_burst.max(self.sip.rate_limit),
            action: if self.sip.rate_limit_action == "drop" {
                b2bua::flood::FloodAction::Drop
            } else {
                b2bua::flood::FloodAction::Reject
            },
            max_sources: 100_000,
            exempt,
        })
    }

    /// Announcements by route name, and the decoded prompts by name.
    #[allow(clippy::type_complexity)]
    pub fn announcements(
        &self,
    ) -> Result<(
        HashMap<String, b2bua::announce::AnnounceConfig>,
        HashMap<String, std::sync::Arc<Vec<i16>>>,
    )> {
        let mut by_route = HashMap::new();
        let mut prompts = HashMap::new();
        for a in &self.announcements {
            let name = a.prompt.display().to_string();
            prompts.insert(name.clone(), std::sync::Arc::new(load_prompt(&a.prompt)?));
            by_route.insert(
                a.route.clone(),
                b2bua::announce::AnnounceConfig {
                    prompt: name,
                    collect_consent: a.collect_consent,
                    skip_call_types: a.skip_call_types.clone(),
                },
            );
        }
        Ok((by_route, prompts))
    }

    /// The HTTPS certificate of the HTTP listener (`[http] tls_cert`, `tls_key`, read with
    /// the same loader as SIP's); `None` for plain HTTP.
    pub fn http_tls(&self) -> Result<Option<crate::tls::TlsServer>> {
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(c), Some(k)) => crate::tls::TlsServer::load(crate::tls::ServerFiles {
                cert: c.clone(),
                key: k.clone(),
                client_ca: None,
                require_client_cert: false,
            })
            .map(Some)
            .map_err(|e| anyhow::anyhow!("http.tls_cert: {e:#}")),
            (None, None) => Ok(None),
            _ => bail!("http: tls_cert and tls_key go together"),
        }
    }

    /// The TLS settings: the listeners' certificate and each TLS target's verification.
    /// `None` when nothing speaks TLS.
    pub fn tls(&self) -> Result<Option<crate::tls::Tls>> {
        let server = match (&self.sip.tls_cert, &self.sip.tls_key) {
            (Some(c), Some(k)) => Some(
                crate::tls::TlsServer::load(crate::tls::ServerFiles {
                    cert: c.clone(),
                    key: k.clone(),
                    client_ca: self.sip.tls_client_ca.clone(),
                    require_client_cert: self.sip.tls_require_client_cert,
                })
                .map_err(|e| anyhow::anyhow!("sip.tls_cert: {e:#}"))?,
            ),
            (None, None) => None,
            _ => bail!("sip: tls_cert and tls_key go together"),
        };
        if !self.sip.listen_tls.is_empty() && server.is_none() {
            bail!("sip.listen_tls needs tls_cert and tls_key");
        }
        let targets = self.tls_targets()?;
        if server.is_none() && targets.is_empty() {
            return Ok(None);
        }
        let clients = crate::tls::TlsClients::build(&targets)?;
        Ok(Some(crate::tls::Tls {
            server,
            clients: std::sync::RwLock::new(std::sync::Arc::new(clients)),
        }))
    }

    /// Each route target reached over TLS, with its route's verification settings.
    pub fn tls_targets(&self) -> Result<Vec<(SocketAddr, b2bua::RouteTls)>> {
        let routes = self.compile_routes()?;
        let mut out = Vec::new();
        for rc in &self.routes {
            let Some(r) = routes.get(&rc.name) else {
                continue;
            };
            if r.transport == sip::Transport::Tls {
                let tls = rc.tls.clone().unwrap_or_default();
                out.push((r.target, tls));
            } else if rc.tls.is_some() {
                bail!(
                    "route '{}': tls is set but the target is not ;transport=tls",
                    rc.name
                );
            }
        }
        Ok(out)
    }

    /// Addresses for Via/Contact toward TLS peers: the TLS listeners, with the advertised
    /// address when they listen on a wildcard.
    pub fn advertise_tls(&self) -> Result<Vec<SocketAddr>> {
        let plain = self.advertise()?;
        Ok(self
            .sip
            .listen_tls
            .iter()
            .map(|a| {
                if a.ip().is_unspecified() {
                    let ip = plain
                        .iter()
                        .find(|p| p.is_ipv4() == a.is_ipv4())
                        .map_or(a.ip(), |p| p.ip());
                    SocketAddr::new(ip, a.port())
                } else {
                    *a
                }
            })
            .collect())
    }

    pub fn compile_routes(&self) -> Result<Routes> {
        Routes::compile(&self.routes, &self.zones).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Addresses for Via/Contact: explicit ones, else the non-wildcard listen addresses.
    pub fn advertise(&self) -> Result<Vec<SocketAddr>> {
        if !self.sip.advertise.is_empty() {
            return Ok(self.sip.advertise.clone());
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in self.sip.listen_udp.iter().chain(&self.sip.listen_tcp) {
            if a.ip().is_unspecified() {
                bail!("sip.advertise must be set when listening on a wildcard address ({a})");
            }
            if !out.iter().any(|o| o.is_ipv4() == a.is_ipv4()) {
                out.push(*a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::from_str_with_env(DEFAULT_CONFIG, &[]).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.sip.t1_ms, 500);
    }

    #[test]
    fn every_sample_config_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tapir") && n.ends_with(".toml"))
            {
                Config::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = DEFAULT_CONFIG.replace("t1_ms = 500", "t1_ms = 500\nt1_msec = 3");
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("t1_msec"), "{e}");
        let text = DEFAULT_CONFIG.replace(
            "customer = \"caller\"",
            "customer = \"caller\"\ncustomr = 1",
        );
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("customr"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let env = vec![
            ("TAPIR_MEDIA__PORT_MIN".to_string(), "20000".to_string()),
            ("TAPIR_LOG__LEVEL".to_string(), "debug".to_string()),
            (
                "TAPIR_SIP__LISTEN_UDP".to_string(),
                "[\"127.0.0.1:5999\"]".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::from_str_with_env(DEFAULT_CONFIG, &env).unwrap();
        assert_eq!(c.media.port_min, 20000);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.sip.listen_udp, vec!["127.0.0.1:5999".parse().unwrap()]);
        let bad = vec![("TAPIR_MEDIA__PORT_MNI".to_string(), "1".to_string())];
        let e = Config::from_str_with_env(DEFAULT_CONFIG, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("port_mni"), "{e}");
    }

    #[test]
    fn registrar_section() {
        let c = Config::from_str_with_env(DEFAULT_CONFIG, &[]).unwrap();
        assert!(c.compile_registrar().unwrap().is_none(), "off by default");
        let text = format!(
            "{DEFAULT_CONFIG}\n[registrar]\ntarget = \"sip:192.0.2.10:5060;transport=tcp\"\nmax_expires = 600\ncustomer = \"callee\"\n"
        );
        let c = Config::from_str_with_env(&text, &[]).unwrap();
        let r = c.compile_registrar().unwrap().unwrap();
        assert_eq!(r.peer().addr, "192.0.2.10:5060".parse().unwrap());
        let r = c.registrar.as_ref().unwrap();
        assert_eq!((r.min_expires, r.max_expires), (60, 600));
        assert_eq!(r.customer, b2bua::Side::Callee);
        let e = Config::from_str_with_env(&format!("{text}expire = 3\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expire"), "{e}");
        let e = Config::from_str_with_env(
            &text.replace("sip:192.0.2.10:5060", "sip:pbx.example.com"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("registrar") && e.contains("IP address"), "{e}");
        let e = Config::from_str_with_env(&format!("{text}record = \"maybe\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("registrar: record"), "{e}");
    }

    #[test]
    fn transcripts_are_off_by_default_and_checked() {
        let c = Config::from_str_with_env(DEFAULT_CONFIG, &[]).unwrap();
        assert!(!c.transcripts.enabled().unwrap());
        assert_eq!(c.transcripts, transcript::TranscriptsConfig::default());
        let text = DEFAULT_CONFIG.replace("engine = \"none\"", "engine = \"whisper\"");
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transcripts.engine") && e.contains("whisper"),
            "{e}"
        );
        let env = vec![
            ("TAPIR_TRANSCRIPTS__ENGINE".to_string(), "http".to_string()),
            (
                "TAPIR_TRANSCRIPTS__URL".to_string(),
                "http://127.0.0.1:8000".to_string(),
            ),
            (
                "TAPIR_TRANSCRIPTS__CONCURRENCY".to_string(),
                "2".to_string(),
            ),
        ];
        let c = Config::from_str_with_env(DEFAULT_CONFIG, &env).unwrap();
        assert!(c.transcripts.enabled().unwrap());
        assert_eq!(c.transcripts.jobs_config().concurrency, 2);
        let e = Config::from_str_with_env(
            DEFAULT_CONFIG,
            &[("TAPIR_TRANSCRIPTS__ENGINE".to_string(), "http".to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("transcripts.url"), "{e}");
        let text = DEFAULT_CONFIG.replace(
            "\ntranscribe = true",
            "\ntranscribe = true\nroutes = { nowhere = { transcribe = true } }",
        );
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no route named 'nowhere'"), "{e}");
        let text =
            DEFAULT_CONFIG.replace("\ntranscribe = true", "\ntranscribe = true\ntranscibe = 1");
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("transcibe"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        let text = DEFAULT_CONFIG.replace(
            "target = \"sip:127.0.0.1:5070\"",
            "target = \"sip:pbx.example.com\"",
        );
        let e = Config::from_str_with_env(&text, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("route 'default'") && e.contains("IP address"),
            "{e}"
        );
        let text = DEFAULT_CONFIG.replace("port_min = 30000", "port_min = 50000");
        assert!(Config::from_str_with_env(&text, &[]).is_err());
    }
}
