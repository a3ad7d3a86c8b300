//! A real S3 server for black-box tests and the two-node deployment script: `s3s-fs` (the
//! s3s project's file-system backend) serving a directory on a loopback port, with signature
//! checking on. Each directory under the root is a bucket.
//!
//! ```text
//! tapir-s3-server --root DIR --listen 127.0.0.1:9000 [--bucket NAME]...
//! ```
//!
//! The credentials are `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the environment, the
//! same variables tapir's S3 client reads. It prints `listening <addr>` once it accepts
//! connections; SIGKILL stops it at once, mid-request, which is what the outage tests want.

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn usage() -> ! {
    eprintln!("usage: tapir-s3-server --root DIR --listen ADDR [--bucket NAME]...");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut root: Option<PathBuf> = None;
    let mut listen: Option<SocketAddr> = None;
    let mut buckets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--bucket" => buckets.extend(args.next()),
            _ => usage(),
        }
    }
    let (Some(root), Some(listen)) = (root, listen) else {
        usage()
    };
    for b in &buckets {
        std::fs::create_dir_all(root.join(b)).expect("create bucket directory");
    }
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| usage());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| usage());
    let fs = s3s_fs::FileSystem::new(&root).expect("serve the root directory");
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(access, secret));
    let service = b.build();
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_reuseaddr(true).expect("SO_REUSEADDR");
    sock.bind(listen).expect("bind");
    let listener = sock.listen(128).expect("listen");
    println!(
        "listening {}",
        listener.local_addr().expect("local address")
    );
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _ = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
