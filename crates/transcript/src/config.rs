//! The node's `[transcripts]` configuration: which engine, which calls, how many at once,
//! how often retried; checked as a whole at start (an unknown engine, an `http` engine
//! without a URL or a PocketSphinx model that is not there stop the node with the reason),
//! and turned into the [`Selection`], the [`JobsConfig`] and the [`Engine`] the node runs.
//!
//! Transcription is off unless configured: `engine` defaults to `none`. Recognition costs
//! CPU (about 0.3 CPU s per second of speech with the offline engine, see
//! docs/benchmarks.md) and loads a 100 MB model per worker; an operator turns it on by
//! naming an engine, and narrows it per route and record policy with `transcribe = false`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::Engine;
use crate::jobs::JobsConfig;
use crate::selection::{Rule, Selection};
use crate::TranscriptError;

/// Which engine transcribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// No transcription stage: no job is queued, no model loaded.
    None,
    /// The offline engine (PocketSphinx) on idle-priority threads of the node.
    PocketSphinx,
    /// An OpenAI-compatible server.
    Http,
}

impl EngineKind {
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "none" => Some(EngineKind::None),
            "pocketsphinx" => Some(EngineKind::PocketSphinx),
            "http" => Some(EngineKind::Http),
            _ => None,
        }
    }
}

/// The `[transcripts]` section (see docs/transcripts.md and docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscriptsConfig {
    /// `none` (the default), `pocketsphinx` or `http`.
    pub engine: String,
    /// Language of recordings no rule names one for (BCP 47).
    pub language: String,
    /// Transcribe recordings no rule decides for (once an engine is named).
    pub transcribe: bool,
    /// Per route name.
    pub routes: HashMap<String, Rule>,
    /// Per record policy name (the policy that recorded the call); beats the route.
    pub policies: HashMap<String, Rule>,
    /// Jobs at once (and offline engine threads).
    pub concurrency: usize,
    /// Attempts before a job is marked failed.
    pub max_attempts: u32,
    /// Time allowed for one attempt.
    pub timeout_s: u64,
    /// Wait before the first retry, doubled for each further one up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// `http`: the server's base URL.
    pub url: Option<String>,
    /// `http`: the `model` form field.
    pub model: String,
    /// `http`: the environment variable holding the bearer key (never the key itself).
    pub api_key_env: Option<String>,
    /// `pocketsphinx`: the model directory (Debian's by default).
    pub model_dir: Option<PathBuf>,
    /// A node sharing the catalog that has not been heard from for this long is gone: the
    /// jobs it left queued or running are taken up by another node.
    pub adopt_after_s: u64,
}

impl Default for TranscriptsConfig {
    fn default() -> Self {
        let jobs = JobsConfig::default();
        TranscriptsConfig {
            engine: "none".into(),
            language: "en".into(),
            transcribe: true,
            routes: HashMap::new(),
            policies: HashMap::new(),
            concurrency: jobs.concurrency,
            max_attempts: jobs.max_attempts,
            timeout_s: (jobs.timeout_ms / 1000) as u64,
            retry_initial_ms: jobs.backoff_ms as u64,
            retry_max_ms: jobs.backoff_max_ms as u64,
            url: None,
            model: "whisper-1".into(),
            api_key_env: None,
            model_dir: None,
            adopt_after_s: 600,
        }
    }
}

fn bad(reason: String) -> TranscriptError {
    TranscriptError::Config(reason)
}

/// A BCP 47 tag as far as it matters here: letters, digits and `-`/`_`, starting with a
/// letter, at most 35 characters.
fn valid_language(s: &str) -> bool {
    s.len() <= 35
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl TranscriptsConfig {
    /// The engine named, or an error naming the key.
    pub fn kind(&self) -> Result<EngineKind, TranscriptError> {
        EngineKind::parse(&self.engine).ok_or_else(|| {
            bad(format!(
                "transcripts.engine: {:?} is not pocketsphinx, http or none",
                self.engine
            ))
        })
    }

    /// How long a node sharing the catalog may go unheard before its jobs are taken up, and
    /// how often this node says it is alive and looks (a quarter of that, at most a minute).
    pub fn adoption(&self) -> (Duration, Duration) {
        let after = Duration::from_secs(self.adopt_after_s);
        (after, (after / 4).min(Duration::from_secs(60)))
    }

    /// Whether the node runs a transcription stage at all.
    pub fn enabled(&self) -> Result<bool, TranscriptError> {
        Ok(self.kind()? != EngineKind::None)
    }

    /// Checks everything that can be checked without loading a model or reaching a server.
    pub fn validate(&self) -> Result<(), TranscriptError> {
        let kind = self.kind()?;
        if !(1..=64).contains(&self.concurrency) {
            return Err(bad("transcripts.concurrency must be within 1..=64".into()));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(bad("transcripts.max_attempts must be within 1..=100".into()));
        }
        if !(2..=7 * 86_400).contains(&self.adopt_after_s) {
            return Err(bad(
                "transcripts.adopt_after_s must be within 2..=604800".into()
            ));
        }
        if self.timeout_s == 0 || self.timeout_s > 7 * 86_400 {
            return Err(bad("transcripts.timeout_s must be within 1..=604800".into()));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(bad(
                "transcripts: retry_initial_ms must be > 0 and retry_max_ms >= it".into(),
            ));
        }
        let languages = std::iter::once(("transcripts.language".to_string(), &self.language))
            .chain(self.routes.iter().filter_map(|(n, r)| {
                r.language
                    .as_ref()
                    .map(|l| (format!("transcripts.routes.{n}.language"), l))
            }))
            .chain(self.policies.iter().filter_map(|(n, r)| {
                r.language
                    .as_ref()
                    .map(|l| (format!("transcripts.policies.{n}.language"), l))
            }));
        for (key, l) in languages {
            if !valid_language(l) {
                return Err(bad(format!(
                    "{key}: {l:?} is not a language tag (en, en-US, de)"
                )));
            }
        }
        match kind {
            EngineKind::Http => {
                let url = self.url.as_deref().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(
                        "transcripts.url: the http engine needs the server's http:// or https:// URL"
                            .into(),
                    ));
                }
                if self.model.trim().is_empty() {
                    return Err(bad("transcripts.model: empty".into()));
                }
                if let Some(var) = &self.api_key_env {
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        return Err(bad(format!(
                            "transcripts.api_key_env: {var:?} is not an environment variable name"
                        )));
                    }
                }
            }
            EngineKind::PocketSphinx => {
                if !cfg!(feature = "pocketsphinx") {
                    return Err(bad(
                        "transcripts.engine: this build has no pocketsphinx engine".into(),
                    ));
                }
            }
            EngineKind::None => {}
        }
        Ok(())
    }

    /// Which recordings are transcribed, and in which language.
    pub fn selection(&self) -> Selection {
        Selection {
            transcribe: self.transcribe,
            language: self.language.clone(),
            routes: self.routes.clone(),
            policies: self.policies.clone(),
        }
    }

    /// The scheduler's limits.
    pub fn jobs_config(&self) -> JobsConfig {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        JobsConfig {
            concurrency: self.concurrency,
            max_attempts: self.max_attempts,
            backoff_ms: ms(self.retry_initial_ms),
            backoff_max_ms: ms(self.retry_max_ms),
            timeout_ms: ms(self.timeout_s.saturating_mul(1000)),
        }
    }

    /// Builds the configured engine (loads the offline model once, so that a missing model
    /// stops the node at start); `None` for `none`. The `http` engine's key is read from
    /// the environment here.
    pub fn build_engine(&self) -> Result<Option<Arc<dyn Engine>>, TranscriptError> {
        self.validate()?;
        match self.kind()? {
            EngineKind::None => Ok(None),
            EngineKind::Http => {
                let engine = crate::http::HttpEngine::new(crate::http::HttpConfig {
                    url: self.url.clone().unwrap_or_default(),
                    model: self.model.clone(),
                    api_key: self
                        .api_key_env
                        .as_deref()
                        .and_then(crate::http::HttpConfig::api_key_from_env),
                    ..Default::default()
                })?;
                Ok(Some(Arc::new(engine)))
            }
            #[cfg(feature = "pocketsphinx")]
            EngineKind::PocketSphinx => {
                use crate::pocketsphinx::{PocketSphinx, PocketSphinxConfig};
                let mut c = PocketSphinxConfig::default();
                if let Some(dir) = &self.model_dir {
                    c.model_dir = dir.clone();
                }
                let engine = PocketSphinx::new(c)?;
                Ok(Some(Arc::new(crate::WorkerPool::new(
                    engine,
                    self.concurrency,
                ))))
            }
            #[cfg(not(feature = "pocketsphinx"))]
            EngineKind::PocketSphinx => Err(bad(
                "transcripts.engine: this build has no pocketsphinx engine".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_like: serde_json::Value) -> TranscriptsConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn off_unless_an_engine_is_named() {
        let c = TranscriptsConfig::default();
        c.validate().unwrap();
        assert!(!c.enabled().unwrap());
        assert!(c.build_engine().unwrap().is_none());
        assert_eq!(c.jobs_config(), JobsConfig::default());
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                serde_json::json!({"engine": "whisper"}),
                "transcripts.engine",
            ),
            (serde_json::json!({"engine": "http"}), "transcripts.url"),
            (
                serde_json::json!({"engine": "http", "url": "ftp://x"}),
                "transcripts.url",
            ),
            (serde_json::json!({"concurrency": 0}), "concurrency"),
            (serde_json::json!({"max_attempts": 0}), "max_attempts"),
            (serde_json::json!({"adopt_after_s": 1}), "adopt_after_s"),
            (serde_json::json!({"timeout_s": 0}), "timeout_s"),
            (
                serde_json::json!({"retry_initial_ms": 10, "retry_max_ms": 5}),
                "retry_max_ms",
            ),
            (
                serde_json::json!({"language": "en US"}),
                "transcripts.language",
            ),
            (
                serde_json::json!({"routes": {"pbx": {"language": "<x>"}}}),
                "transcripts.routes.pbx.language",
            ),
        ];
        for (v, key) in cases {
            let e = parse(v.clone()).validate().unwrap_err().to_string();
            assert!(e.contains(key), "{v}: {e}");
        }
        let e: Result<TranscriptsConfig, _> =
            serde_json::from_value(serde_json::json!({"engnie": "none"}));
        assert!(e.unwrap_err().to_string().contains("engnie"));
    }

    #[test]
    fn the_http_engine_is_built_with_its_key_from_the_environment() {
        let c = parse(serde_json::json!({
            "engine": "http", "url": "http://127.0.0.1:9", "model": "m",
            "api_key_env": "TRANSCRIPT_CONFIG_TEST_KEY",
            "concurrency": 2, "max_attempts": 4, "timeout_s": 60,
            "retry_initial_ms": 100, "retry_max_ms": 400,
            "transcribe": false, "routes": {"qa": {"transcribe": true, "language": "de"}},
        }));
        c.validate().unwrap();
        let e = c.build_engine().unwrap().unwrap();
        assert_eq!(e.name(), "http");
        assert_eq!(
            c.jobs_config(),
            JobsConfig {
                concurrency: 2,
                max_attempts: 4,
                backoff_ms: 100,
                backoff_max_ms: 400,
                timeout_ms: 60_000,
            }
        );
        let s = c.selection();
        assert_eq!(s.decide("pbx", None), None);
        assert_eq!(s.decide("qa", None).as_deref(), Some("de"));
    }

    #[cfg(feature = "pocketsphinx")]
    #[test]
    fn a_missing_offline_model_is_a_start_error() {
        let c = parse(serde_json::json!({
            "engine": "pocketsphinx", "model_dir": "/nonexistent/model",
        }));
        c.validate().unwrap();
        let e = c.build_engine().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/model"), "{e}");
    }
}
