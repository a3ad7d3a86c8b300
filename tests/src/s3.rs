//! The test S3 server (`tapir-s3-server`, built from this crate) as a child process that a
//! test can kill and start again on the same port and directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const ACCESS_KEY: &str = "tapir-test-access";
pub const SECRET_KEY: &str = "tapir-test-secret-key";
pub const BUCKET: &str = "recordings";

/// The server binary beside the tapir binary being tested (same target directory).
pub fn server_bin(tapir_bin: &str) -> PathBuf {
    let p = Path::new(tapir_bin).with_file_name("tapir-s3-server");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p tapir-tests --bins` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The environment a tapir using this server needs (its S3 client's credentials).
pub fn env() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
    ]
}

pub struct S3Process {
    bin: PathBuf,
    pub root: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl S3Process {
    /// Starts a server with one bucket, [`BUCKET`], on a free loopback port.
    pub fn start(tapir_bin: &str) -> S3Process {
        let mut s = S3Process {
            bin: server_bin(tapir_bin),
            root: tempfile::tempdir().unwrap(),
            addr: format!("127.0.0.1:{}", crate::free_port("127.0.0.1"))
                .parse()
                .unwrap(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .args(["--root", &self.root.path().to_string_lossy()])
            .args(["--listen", &self.addr.to_string(), "--bucket", BUCKET])
            .envs(env())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tapir-s3-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "tapir-s3-server: {line}");
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `[storage] s3 = {...}` for tapir's configuration.
    pub fn storage_toml(&self) -> String {
        format!(
            "s3 = {{ endpoint = \"{}\", bucket = \"{BUCKET}\", region = \"us-east-1\", allow_http = true, request_retries = 0, timeout_s = 5 }}",
            self.endpoint()
        )
    }

    /// Where the object of `key` is on disk.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Kills the server (SIGKILL: connections drop mid-request, the port closes).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        self.kill();
    }
}
