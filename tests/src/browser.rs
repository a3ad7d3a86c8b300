//! A real headless Chromium for the browser tests, driven over WebDriver: Debian's
//! `chromium` and `chromium-driver` (`scripts/deps.sh` installs them), nothing downloaded.
//!
//! [`Browser::start`] runs chromedriver on a free port, opens a session with a fresh profile
//! in a temporary directory and returns a [`fantoccini::Client`]; dropping the `Browser`
//! ends the session (chromedriver closes its Chromium) and kills the chromedriver it
//! started, and only that one. A missing Chromium or chromedriver fails the test with what
//! to install, in CI and everywhere else: the test command installs them.
//!
//! Waits poll the page with a deadline ([`Browser::wait_js`]); nothing sleeps blindly.

use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fantoccini;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver with one Chromium session.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    driver: Child,
    pub client: Client,
    _profile: tempfile::TempDir,
}

fn require(path: &str, package: &str) {
    if !Path::new(path).exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "{path} is missing: the browser tests need Debian's {package} (scripts/deps.sh \
             installs it: apt-get install chromium chromium-driver){}",
            if ci { " [CI]" } else { "" }
        );
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let port = crate::free_port("127.0.0.1");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let b = Browser::connect(rt, driver, port);
        b.block_on(b.client.set_window_size(1400, 1100)).unwrap();
        b
    }

    fn connect(rt: tokio::runtime::Runtime, mut driver: Child, port: u16) -> Browser {
        // chromedriver listens once it is ready.
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            if Instant::now() > end {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not listen on {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt.block_on(async {
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("no WebDriver session with {CHROMIUM}: {e}");
            }
        };
        Browser {
            rt,
            driver,
            client,
            _profile: profile,
        }
    }

    /// Runs a future of the session to its end.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Evaluates `expr` (a JavaScript expression) in the page.
    pub fn js(&self, expr: &str) -> Value {
        self.block_on(self.client.execute(&format!("return ({expr});"), vec![]))
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// Polls `expr` until it is truthy (not false, null, 0 or "") and returns its value;
    /// panics with `what` after `timeout`.
    pub fn wait_js(&self, what: &str, expr: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        loop {
            // A navigation in progress makes a script fail: try again.
            let v = self
                .block_on(self.client.execute(&format!("return ({expr});"), vec![]))
                .unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > end {
                let url = self
                    .block_on(self.client.current_url())
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                panic!("{what}: `{expr}` not true within {timeout:?} (at {url}, last {v})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the page under `dir` as `name`; returns its path.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.block_on(self.client.screenshot()).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close its Chromium; then chromedriver goes.
        let client = self.client.clone();
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.close()).await
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/test-artifacts`, given an integration test's `env!("CARGO_TARGET_TMPDIR")`
/// (`target/tmp`).
pub fn artifacts_dir(target_tmpdir: &str) -> PathBuf {
    Path::new(target_tmpdir)
        .parent()
        .unwrap_or(Path::new(target_tmpdir))
        .join("test-artifacts")
}
