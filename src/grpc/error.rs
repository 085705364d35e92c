//! Why the gRPC server could not start: the one error type of the server setup, shared by the
//! TLS file checks (`tls.rs`) and the listener (`server.rs`).

use std::net::SocketAddr;

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
    /// A TLS file holds nothing usable, or the wrong thing (issue 20: tonic says only
    /// `transport error`).
    #[error("{key} {path}: {problem}")]
    Tls {
        /// The configuration key (`grpc.tls.cert_file`, ...; the flags `--tls-*` set the same).
        key: &'static str,
        /// The path as configured.
        path: String,
        /// What is wrong, and what to do about it.
        problem: String,
    },
    /// tonic refused the TLS configuration or failed to serve (with its causes: tonic's own
    /// text is only `transport error`).
    #[error("gRPC transport: {}", crate::observability::error_chain(.0))]
    Transport(#[from] tonic::transport::Error),
    /// Building the reflection service failed.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}
