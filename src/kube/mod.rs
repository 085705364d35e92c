//! The Kubernetes side of the provider (kube-rs): Lease leader election and the node controller.
//!
//! It is on only when Kubernetes credentials are present (a kubeconfig, `KUBECONFIG`, or the
//! in-cluster service account); `demo`, the tests and a single process without them run as before.
//! Everything here reads the same inventory snapshot as the gRPC facade: no extra Cloudify calls.

pub mod events;
pub mod lease;
pub mod nodes;

/// Connecting to the Kubernetes API server failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable credentials were found, or they could not be loaded.
    #[error("kubernetes credentials: {0}")]
    Config(#[source] ::kube::config::InferConfigError),
    /// A client could not be built from the credentials.
    #[error("kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

/// Whether Kubernetes credentials are available to this process: the in-cluster service account
/// (`KUBERNETES_SERVICE_HOST`), `KUBECONFIG`, or `~/.kube/config`.
pub fn credentials_present() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .is_some_and(|h| h.join(".kube").join("config").is_file())
}

/// Builds a client from the inferred credentials (kubeconfig first, then in-cluster), or `None`
/// when there are none, so a process without Kubernetes runs as a plain provider.
pub async fn connect() -> Result<Option<::kube::Client>, KubeError> {
    if !credentials_present() {
        return Ok(None);
    }
    let config = ::kube::Config::infer().await.map_err(KubeError::Config)?;
    ::kube::Client::try_from(config)
        .map(Some)
        .map_err(KubeError::Client)
}
