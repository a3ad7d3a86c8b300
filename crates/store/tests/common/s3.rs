//! A real S3 server for tests: `s3s-fs` serving a temporary directory on a free loopback
//! port, with signature checking on. It can be stopped (every connection dropped, the port
//! closed) and started again on the same port, and it can hold the first part upload it
//! receives until the test stops it, so "the server died mid-upload" happens at a known point.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpSocket;
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub const ACCESS_KEY: &str = "tapir-test-access";
pub const SECRET_KEY: &str = "tapir-test-secret-key";
pub const BUCKET: &str = "recordings";

/// Puts the test credentials where the S3 client looks for them. Every test in the binary
/// sets the same values, so concurrent tests do not disturb each other.
pub fn set_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY (edition 2021: safe): set once, before any client is built.
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_ENDPOINT");
        std::env::remove_var("AWS_PROFILE");
    });
}

pub struct S3Server {
    pub root: tempfile::TempDir,
    pub addr: SocketAddr,
    tasks: Option<JoinSet<()>>,
    /// When set, the next part upload is held (never answered) and `part_held` notified.
    hold_next_part: Arc<AtomicBool>,
    pub part_held: Arc<Notify>,
    secret: String,
}

impl S3Server {
    pub async fn start() -> S3Server {
        Self::start_with_secret(SECRET_KEY).await
    }

    /// A server that accepts only this secret key (with [`ACCESS_KEY`]).
    pub async fn start_with_secret(secret: &str) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
        let mut s = S3Server {
            root,
            addr: "127.0.0.1:0".parse().unwrap(),
            tasks: None,
            hold_next_part: Arc::new(AtomicBool::new(false)),
            part_held: Arc::new(Notify::new()),
            secret: secret.to_string(),
        };
        s.serve().await;
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket_dir(&self) -> std::path::PathBuf {
        self.root.path().join(BUCKET)
    }

    /// Holds the next `UploadPart` request unanswered (until [`S3Server::stop`]).
    pub fn hold_next_part(&self) {
        self.hold_next_part.store(true, Ordering::SeqCst);
    }

    async fn serve(&mut self) {
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(self.addr).unwrap();
        let listener = sock.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let service = {
            let fs = s3s_fs::FileSystem::new(self.root.path()).unwrap();
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, self.secret.as_str()));
            b.build()
        };
        let hold = self.hold_next_part.clone();
        let held = self.part_held.clone();
        let mut tasks = JoinSet::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
        tasks.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = conn_tx.send(socket);
            }
        });
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Some(socket) = conn_rx.recv().await {
                let service = service.clone();
                let hold = hold.clone();
                let held = held.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let is_part = req.uri().query().is_some_and(|q| q.contains("partNumber="));
                        let hold_it = is_part && hold.swap(false, Ordering::SeqCst);
                        let held = held.clone();
                        async move {
                            if hold_it {
                                held.notify_one();
                                std::future::pending::<()>().await;
                            }
                            hyper::service::Service::call(&service, req).await
                        }
                    },
                );
                conns.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Stops the server: the port closes and every open connection is dropped.
    pub async fn stop(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.shutdown().await;
        }
    }

    /// Starts it again on the same port, serving the same directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    pub fn object_path(&self, key: &str) -> std::path::PathBuf {
        self.bucket_dir().join(Path::new(key))
    }
}
