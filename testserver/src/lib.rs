//! An S3 server for s3load's tests and benchmarks, running in the test's own process.
//!
//! The HTTP and S3 protocol layer is [`s3s`], which parses requests and verifies
//! SigV4 signatures exactly as a client-facing S3 would, so tests exercise the real
//! AWS SDK path of s3load. Behind it sits our own in-memory [`Store`], built for
//! large objects: ETags are computed once at upload and ranges are zero-copy slices.
//!
//! Tests drive the server through [`TestServer`]: seed objects with
//! [`TestServer::store`], read what the client did from [`TestServer::log`], and
//! emulate a network path with [`Shaping`], and make requests fail with
//! [`TestServer::faults`] (see `faults.rs`).

mod creds;
mod dns;
mod faults;
mod service;
mod shaping;
mod store;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use creds::{CredentialCall, CredentialServer};
pub use dns::DnsServer;
pub use faults::{Fault, Faults, Gate, Random, Rule, When};
pub use service::{RequestLog, RequestRecord};
pub use shaping::{Shaping, Straggler};
pub use store::{
    ChecksumAlgorithm, PendingUpload, Store, StoredChecksum, StoredObject, Writer, generate_bytes, safetensors_bytes,
    safetensors_with,
};
pub use tls::Tls;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "s3load-test-access-key";
/// Secret key the server accepts (a test value, not a secret).
pub const SECRET_KEY: &str = "s3load-test-secret-key-0123456789abcdef";
/// Region used by tests.
pub const REGION: &str = "us-east-1";

/// Options for [`TestServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub shaping: Shaping,
    /// Port to bind on 127.0.0.1; 0 (the default) picks a free one.
    pub port: u16,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<Tls>,
}

/// A running server; it stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    store: Arc<Store>,
    log: Arc<RequestLog>,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts an unshaped server on a random loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> std::io::Result<Self> {
        let store = Arc::new(Store::default());
        let log = Arc::new(RequestLog::default());
        let faults = Arc::new(Faults::default());
        let svc =
            service::Service { store: store.clone(), log: log.clone(), shaping: opts.shaping, faults: faults.clone() };
        let mut builder = S3ServiceBuilder::new(svc);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();

        let listener = TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let acceptor = opts.tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let _ = socket.set_nodelay(true);
                let s3 = s3.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let conn = ConnBuilder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = conn.serve_connection(TokioIo::new(socket), s3).await;
                        }
                        // A client that does not trust the CA ends the handshake.
                        Some(a) => {
                            if let Ok(tls) = a.accept(socket).await {
                                let _ = conn.serve_connection(TokioIo::new(tls), s3).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(TestServer { addr, store, log, faults, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `--endpoint-url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn log(&self) -> &Arc<RequestLog> {
        &self.log
    }

    /// Fault rules applied to the requests that follow.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Environment for a client process: the server's credentials and region, and
    /// nothing that could reach a real AWS endpoint.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
