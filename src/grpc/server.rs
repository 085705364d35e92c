//! The gRPC server: CA's `CloudProvider` service plus `grpc.health.v1` and reflection, over mTLS
//! (`client_ca_root`) or, on loopback or with `--insecure`, plaintext h2c.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::Provider;
pub use super::error::ServeError;
use crate::config::{GrpcConnections, TlsFiles};
use crate::observability::listener::{
    ConnectionLimits, GuardedListener, GuardedStream, KillSwitch,
};
use crate::observability::metrics::Port;
use crate::proto::cloud_provider_server::CloudProviderServer;

/// A running server.
pub struct ServerHandle {
    /// The bound address: the real port when `:0` was asked.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    reset: Arc<Notify>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServerHandle {
    /// Closes every client connection (HTTP/2 GOAWAY, in-flight calls finish within
    /// `grpc.drain_timeout`, then the rest is closed) and goes on serving on the same socket. A
    /// replica that loses the lease calls it so CA reconnects, through the Service, to the new
    /// leader (issue #13). tonic has no per-connection close: this is a graceful shutdown of the
    /// serving future while a new one serves on the kept listener at once (issue 20: the port
    /// used to accept nothing until the last old connection was gone).
    pub fn close_connections(&self) {
        self.reset.notify_one();
    }

    /// [`close_connections`](Self::close_connections) as a callable another task can keep.
    pub fn connection_closer(&self) -> impl Fn() + Send + Sync + 'static {
        let reset = Arc::clone(&self.reset);
        move || reset.notify_one()
    }

    /// Stops accepting, finishes in-flight calls (for at most `grpc.drain_timeout`), and waits.
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

/// Binds `listen` and serves in the background, with the drain, keepalive and connection limit
/// of `connections`.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    insecure: bool,
    connections: &GrpcConnections,
    provider: Provider,
) -> Result<ServerHandle, ServeError> {
    // HTTP/2 PINGs find dead peers once the connection is up; the guarded stream below closes the
    // ones that never get that far (issue 20: idle and half-sent connections were kept for ever).
    let builder = Server::builder()
        .http2_keepalive_interval(Some(connections.keepalive_interval))
        .http2_keepalive_timeout(Some(connections.keepalive_timeout));
    let mut builder = secure(builder, listen, tls, insecure, connections)?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CloudProviderServer<Provider>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let bind_error = |source| ServeError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let limits = ConnectionLimits {
        max_connections: connections.max_connections,
        // A live client answers the PINGs within this; the same bound for a peer that stops
        // reading our answers.
        read_idle: Some(connections.read_idle()),
        write_stall: Some(connections.read_idle()),
    };
    let listener = Arc::new(GuardedListener::new(
        listener,
        limits,
        Port::Grpc,
        Arc::clone(&provider.metrics),
    ));
    let addr = listener.local_addr().map_err(bind_error)?;
    let (tx, rx) = oneshot::channel::<()>();
    let reset = Arc::new(Notify::new());
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(CloudProviderServer::new(provider));
    let task = tokio::spawn(serve_generations(
        router,
        listener,
        rx,
        Arc::clone(&reset),
        connections.drain_timeout,
    ));
    tracing::info!(%addr, tls = tls.is_some(), "gRPC server listening");
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        reset,
        task,
    })
}

/// The TLS rule of the port: mTLS from the checked files; plaintext, or TLS without a client CA,
/// only on loopback or with `insecure`.
fn secure(
    builder: Server,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    insecure: bool,
    connections: &GrpcConnections,
) -> Result<Server, ServeError> {
    match tls {
        Some(files) => {
            let cfg = super::tls::server_config(files, connections.read_idle())?;
            match &files.client_ca_file {
                // CA's externalgrpc client presents its certificate when `cert` is configured:
                // `server_config` requires it and verifies it against this CA (mTLS).
                Some(_) => {}
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
            Ok(builder.tls_config(cfg)?)
        }
        None if listen.ip().is_loopback() => Ok(builder),
        None if insecure => {
            tracing::warn!(
                %listen,
                "serving plaintext gRPC on a non-loopback address (--insecure): anyone who can \
                 reach this port can scale node groups"
            );
            Ok(builder)
        }
        None => Err(ServeError::PlaintextRefused(listen)),
    }
}

/// Serves generation after generation of connections on the kept listener: a reset (a lost
/// Lease) closes the current one, which drains beside the next; a shutdown drains the last one.
async fn serve_generations(
    router: Router,
    listener: Arc<GuardedListener>,
    mut shutdown: oneshot::Receiver<()>,
    reset: Arc<Notify>,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    loop {
        // One generation of connections: served by one serving future, closed together.
        let kill = KillSwitch::default();
        let stop = Arc::new(Notify::new());
        let mut serving = Box::pin(router.clone().serve_with_incoming_shutdown(
            incoming(Arc::clone(&listener), kill.clone()),
            {
                let stop = Arc::clone(&stop);
                async move { stop.notified().await }
            },
        ));
        let reset_asked = tokio::select! {
            r = &mut serving => return r,
            _ = &mut shutdown => false,
            () = reset.notified() => true,
        };
        // Graceful: GOAWAY to every connection, in-flight calls finish, for at most `drain`;
        // then the rest is closed (issue 20: one silent client held this for ever).
        stop.notify_one();
        let drained = drain_bounded(serving, kill, drain);
        if !reset_asked {
            return drained.await;
        }
        // The next generation accepts at once; this one drains beside it.
        tokio::spawn(async move {
            let _ = drained.await;
        });
        tracing::info!("gRPC connections asked to close; serving new ones");
    }
}

/// Waits up to `limit` for a generation's connections to close after its GOAWAY, then closes
/// what is left through its kill switch.
async fn drain_bounded(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    kill: KillSwitch,
    limit: Duration,
) -> Result<(), tonic::transport::Error> {
    match tokio::time::timeout(limit, serving).await {
        Ok(r) => r,
        Err(_) => {
            tracing::info!(
                drain_timeout = ?limit,
                "gRPC connections still open after the drain time: closing them"
            );
            kill.kill();
            Ok(())
        }
    }
}

/// Accepted connections of a listener that outlives each serving future (see
/// [`ServerHandle::close_connections`]), each with its generation's kill switch.
/// `serve_with_incoming*` ignores the builder's `tcp_nodelay`; the guarded listener sets it (the
/// load test showed 44 ms NodeGroups/TargetSize calls without it: BENCHMARKS.md).
fn incoming(
    listener: Arc<GuardedListener>,
    kill: KillSwitch,
) -> impl Stream<Item = Result<GuardedStream, std::io::Error>> {
    futures::stream::unfold((listener, kill), |(l, kill)| async move {
        let stream = l.accept(Some(&kill)).await;
        Some((Ok(stream), (l, kill)))
    })
}

/// What tonic records of a connection (its addresses, for request extensions).
impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.get_ref().connect_info()
    }
}
