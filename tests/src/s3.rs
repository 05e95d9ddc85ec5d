//! An S3 server on loopback: `s3s-fs` serving a directory, for tests and benchmarks.
//!
//! The server runs on its own thread with its own tokio runtime, so it serves both async tests
//! and blocking callers (the CLI, the Python package) alike, and it stops when the handle is
//! dropped. Buckets are subdirectories of the root. Objects should be uploaded through S3
//! (see [`upload_dir`]) rather than copied into the directory: s3s-fs then stores their MD5
//! etags instead of re-hashing a whole file on every GET.
//!
//! [`ServerConfig::latency`] delays every request before it is served — the per-request
//! latency of a real object store, which is what makes prefetching matter.

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use shard_index::storage::StorageOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Credentials the test server accepts.
pub const ACCESS_KEY: &str = "shardstream";
pub const SECRET_KEY: &str = "shardstream-secret";
pub const REGION: &str = "us-east-1";

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Delay added before serving each request.
    pub latency: Duration,
    /// Port to bind (0 = any free port).
    pub port: u16,
}

/// A running server; dropping it stops the server.
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves `root` on 127.0.0.1 with default settings.
    pub fn start(root: &Path) -> Result<Self> {
        Self::start_with(root, ServerConfig::default())
    }

    pub fn start_with(root: &Path, config: ServerConfig) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("s3s-fs root {}: {e:?}", root.display()))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let std_listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let latency = config.latency;
        let thread = std::thread::Builder::new()
            .name(format!("s3-test-server-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            r = listener.accept() => match r {
                                Ok((s, _)) => s,
                                Err(_) => continue,
                            },
                            _ = &mut rx => break,
                        };
                        let _ = socket.set_nodelay(true);
                        let svc = service.clone();
                        let handler = hyper::service::service_fn(move |req| {
                            let svc = svc.clone();
                            async move {
                                if !latency.is_zero() {
                                    tokio::time::sleep(latency).await;
                                }
                                hyper::service::Service::call(&svc, req).await
                            }
                        });
                        let conn = http
                            .serve_connection(TokioIo::new(socket), handler)
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            root: root.to_path_buf(),
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Creates a bucket (a directory under the root).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))?;
        Ok(())
    }

    /// The directory holding `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// object_store options that reach this server.
    pub fn storage_options(&self) -> StorageOptions {
        s3_options(&self.endpoint())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// object_store options for an S3 endpoint on loopback with the test credentials.
pub fn s3_options(endpoint: &str) -> StorageOptions {
    [
        ("aws_endpoint", endpoint),
        ("aws_access_key_id", ACCESS_KEY),
        ("aws_secret_access_key", SECRET_KEY),
        ("aws_region", REGION),
        ("aws_allow_http", "true"),
        ("aws_virtual_hosted_style_request", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Uploads every file under `local` to `store` below `prefix`, keeping relative paths
/// (32 uploads at a time, so a server with injected latency is still quick to fill).
pub async fn upload_dir(store: &dyn ObjectStore, local: &Path, prefix: &str) -> Result<u64> {
    use futures::{StreamExt, TryStreamExt};
    let mut files = Vec::new();
    let mut stack = vec![local.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let count = files.len() as u64;
    futures::stream::iter(files)
        .map(|path| async move {
            let rel = path
                .strip_prefix(local)?
                .to_string_lossy()
                .replace('\\', "/");
            let key = if prefix.is_empty() {
                rel
            } else {
                format!("{}/{rel}", prefix.trim_end_matches('/'))
            };
            let data = tokio::fs::read(&path).await?;
            store
                .put(&StorePath::from(key.as_str()), PutPayload::from(data))
                .await
                .with_context(|| format!("uploading {key}"))?;
            anyhow::Ok(())
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}
