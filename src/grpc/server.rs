//! The gRPC server: CA's `CloudProvider` service plus `grpc.health.v1` and reflection, over mTLS
//! (`client_ca_root`) or, on loopback or with `--insecure`, plaintext h2c.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::Provider;
use crate::config::TlsFiles;
use crate::proto::cloud_provider_server::CloudProviderServer;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Plaintext on a non-loopback address without `--insecure`.
    #[error(
        "refusing plaintext gRPC on {0}: configure grpc.tls (--tls-cert/--tls-key/--tls-client-ca) \
         or pass --insecure"
    )]
    PlaintextRefused(SocketAddr),
    /// TLS without a client CA (no client authentication) on a non-loopback address without
    /// `--insecure`: anyone who can reach the port could scale node groups.
    #[error(
        "refusing gRPC without client authentication on {0}: set grpc.tls.client_ca_file \
         (--tls-client-ca) for mTLS, or pass --insecure"
    )]
    ClientAuthMissing(SocketAddr),
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The path as configured (`grpc.tls.*_file` or its flag).
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Binding the port failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for (`grpc.listen`, `--listen`).
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS configuration or failed to serve.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Building the reflection service failed.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A running server.
pub struct ServerHandle {
    /// The bound address: the real port when `:0` was asked.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    reset: Arc<Notify>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServerHandle {
    /// Closes every client connection (HTTP/2 GOAWAY, in-flight calls finish) and goes on
    /// serving on the same socket. A replica that loses the lease calls it so CA reconnects,
    /// through the Service, to the new leader (issue #13). tonic has no per-connection close:
    /// this is a graceful shutdown of the serving future and a new one on the kept listener, so
    /// the port never stops accepting (connections wait in the backlog for a moment).
    pub fn close_connections(&self) {
        self.reset.notify_one();
    }

    /// [`close_connections`](Self::close_connections) as a callable another task can keep.
    pub fn connection_closer(&self) -> impl Fn() + Send + Sync + 'static {
        let reset = Arc::clone(&self.reset);
        move || reset.notify_one()
    }

    /// Stops accepting, finishes in-flight calls, and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }

    /// Waits until the server stops by itself (an error).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => Ok(r?),
            Err(_) => Ok(()),
        }
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

/// Binds `listen` and serves in the background.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    insecure: bool,
    provider: Provider,
) -> Result<ServerHandle, ServeError> {
    let mut builder = Server::builder();
    match tls {
        Some(files) => {
            let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(
                read(&files.cert_file)?,
                read(&files.key_file)?,
            ));
            match &files.client_ca_file {
                // CA's externalgrpc client presents its certificate when `cert` is configured:
                // require and verify it against this CA (mTLS).
                Some(ca) => cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?)),
                // Server-only TLS encrypts but lets any client scale: the same rule as
                // plaintext (issue #7: mTLS required by default).
                None if listen.ip().is_loopback() => {}
                None if insecure => tracing::warn!(
                    %listen,
                    "gRPC TLS without a client CA on a non-loopback address (--insecure): any \
                     client that can reach this port can scale node groups"
                ),
                None => return Err(ServeError::ClientAuthMissing(listen)),
            }
            builder = builder.tls_config(cfg)?;
        }
        None if listen.ip().is_loopback() => {}
        None if insecure => tracing::warn!(
            %listen,
            "serving plaintext gRPC on a non-loopback address (--insecure): anyone who can reach \
             this port can scale node groups"
        ),
        None => return Err(ServeError::PlaintextRefused(listen)),
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CloudProviderServer<Provider>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let listener = Arc::new(listener);
    let (tx, mut rx) = oneshot::channel::<()>();
    let reset = Arc::new(Notify::new());
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(CloudProviderServer::new(provider));
    let task = {
        let reset = Arc::clone(&reset);
        tokio::spawn(async move {
            loop {
                let stopped = Arc::new(Notify::new());
                let serving =
                    router
                        .clone()
                        .serve_with_incoming_shutdown(incoming(Arc::clone(&listener)), {
                            let stopped = Arc::clone(&stopped);
                            async move { stopped.notified().await }
                        });
                tokio::pin!(serving);
                let reset_asked = tokio::select! {
                    r = &mut serving => return r,
                    _ = &mut rx => false,
                    () = reset.notified() => true,
                };
                // Graceful: GOAWAY to every connection, wait for in-flight calls.
                stopped.notify_one();
                let r = serving.await;
                if !reset_asked {
                    return r;
                }
                tracing::info!(%addr, "gRPC connections closed; serving new ones");
            }
        })
    };
    tracing::info!(%addr, tls = tls.is_some(), "gRPC server listening");
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        reset,
        task,
    })
}

/// Accepted connections of a listener that outlives each serving future (see
/// [`ServerHandle::close_connections`]). `serve_with_incoming*` ignores the builder's
/// `tcp_nodelay`, so it is set here: without it small unary answers wait for the client's delayed
/// ACK (~40 ms on Linux), which the load test showed as 44 ms NodeGroups/TargetSize calls
/// (BENCHMARKS.md).
fn incoming(listener: Arc<TcpListener>) -> impl Stream<Item = Result<TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |l| async move {
        loop {
            match l.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(stream), l));
                }
                // Out of file descriptors or a connection reset before accept: not fatal for
                // the server; wait a little instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}
