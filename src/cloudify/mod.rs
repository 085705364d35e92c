//! Cloudify Manager REST client: the [`Cloudify`] trait the upper layers talk to, its reqwest
//! implementation [`CloudifyClient`], the serde models and the typed [`CloudifyError`];
//! [`deployments`] adds the calls that own a deployment (create, install, update, uninstall,
//! delete) for the pool and LoadBalancer controllers.

mod api;
mod client;
pub mod deployments;
mod error;
mod execution_status;
// Tests and benches only: a release build leaves it out (feature `test-util`, issue 24).
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod models;
mod paging;

pub use client::{Auth, ClientSettings, CloudifyClient, DEFAULT_MAX_RESPONSE_BYTES};
pub use error::CloudifyError;
pub use models::{
    Deployment, DeploymentModification, Execution, ExecutionStatus, Node, NodeInstance,
};

use async_trait::async_trait;

/// Parameters of a `scale` workflow execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleRequest {
    /// Deployment holding the scaling group.
    pub deployment_id: String,
    /// Scaling group name (`scalable_entity_name`).
    pub group: String,
    /// Positive to add group instances, negative to remove.
    pub delta: i64,
    /// For scale-in: the exact instances to remove (`include_instances`), `delta == -len`.
    pub include_instances: Vec<String>,
    /// Roll back a deployment modification a failed, cancelled or killed scale left `started`
    /// before this one starts (`abort_started`); without it the scale would fail.
    pub abort_started: bool,
}

impl ScaleRequest {
    /// Adds `delta` (> 0) group instances to `group`. No hints: Cloudify refuses them on a
    /// scale-out.
    pub fn scale_out(deployment_id: &str, group: &str, delta: i64, abort_started: bool) -> Self {
        ScaleRequest {
            deployment_id: deployment_id.to_owned(),
            group: group.to_owned(),
            delta,
            include_instances: Vec::new(),
            abort_started,
        }
    }

    /// Removes exactly the named group instances: one hint each (a group-instance id or the id
    /// of one of its member node instances) and `delta = -len`. Cloudify removes the hinted group
    /// instances first until `|delta|` is reached and then arbitrary ones, so a second hint for
    /// the same group instance would cost an unnamed one (issue 20): callers pass one hint per
    /// group instance.
    pub fn scale_in(
        deployment_id: &str,
        group: &str,
        hints: Vec<String>,
        abort_started: bool,
    ) -> Self {
        ScaleRequest {
            deployment_id: deployment_id.to_owned(),
            group: group.to_owned(),
            delta: -i64::try_from(hints.len()).unwrap_or(i64::MAX),
            include_instances: hints,
            abort_started,
        }
    }
}

/// The slice of the Cloudify REST API this service uses. Implemented by [`CloudifyClient`] over
/// HTTP and by `fake::FakeCloudify` in memory (unit tests, benchmarks; feature `test-util`).
#[async_trait]
pub trait Cloudify: Send + Sync {
    /// Name of the configured manager/tenant entry.
    fn name(&self) -> &str;
    /// Tenant all calls are made in.
    fn tenant(&self) -> &str;
    /// Deployments with these ids (their scaling groups, site and change markers). Missing ids
    /// are absent. However many ids, every request stays bounded (issue 20).
    async fn deployments_by_id(&self, ids: &[String]) -> Result<Vec<Deployment>, CloudifyError>;
    /// Deployments carrying every one of these labels (`POST /searches/deployments`), with the
    /// same fields as [`deployments_by_id`](Self::deployments_by_id).
    async fn search_deployments(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<Deployment>, CloudifyError>;
    /// Nodes of these deployments (`id`, `deployment_id`, `type_hierarchy`, `host_id`), in
    /// bounded requests.
    async fn nodes(&self, deployment_ids: &[String]) -> Result<Vec<Node>, CloudifyError>;
    /// Node instances of these deployments restricted to these node ids, all pages, in bounded
    /// requests.
    async fn node_instances(
        &self,
        deployment_ids: &[String],
        node_ids: &[String],
    ) -> Result<Vec<NodeInstance>, CloudifyError>;
    /// `scale` executions of these deployments (all deployments of the tenant when empty) in
    /// these states (any state when empty), newest first, at most `limit` (all pages when
    /// `None`).
    async fn scale_executions(
        &self,
        deployment_ids: &[String],
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError>;
    /// Ids, deployments and statuses of the tenant's `scale` executions in these states (any
    /// when empty), newest first, at most `limit`: what a refresh compares to tell whether a
    /// scale started or ended while it read. The default reads them whole.
    async fn scale_execution_statuses(
        &self,
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        self.scale_executions(&[], statuses, limit).await
    }
    /// Deployment modifications of these deployments (all deployments of the tenant when empty)
    /// in this status (`GET /deployment-modifications`), all pages. Read-only: the provider
    /// never writes them. The default answers none, for fakes that model no modifications.
    async fn deployment_modifications(
        &self,
        deployment_ids: &[String],
        status: &str,
    ) -> Result<Vec<DeploymentModification>, CloudifyError> {
        let _ = (deployment_ids, status);
        Ok(Vec::new())
    }
    /// Starts a queued `scale` execution (`POST /executions`, `queue: true`). Never retried.
    async fn start_scale(&self, request: &ScaleRequest) -> Result<Execution, CloudifyError>;
    /// One execution by id.
    async fn execution(&self, id: &str) -> Result<Execution, CloudifyError>;
    /// Cancels an execution (`POST /executions/{id}` `{action: cancel}`).
    async fn cancel_execution(&self, id: &str) -> Result<Execution, CloudifyError>;
}
