//! An in-memory [`Cloudify`] for unit tests and benchmarks: no HTTP, no timing. It answers like
//! the REST API the client speaks (the same filters, newest execution first, 404 for unknown
//! ids), so the layers above run their real code against it. Scale requests are recorded and
//! left `queued`, as a manager with a busy queue would; nothing ever runs them.
//!
//! A fake of the dependency, not a mock of our code: tests that need the workflow itself to run
//! use the simulator over HTTP instead.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Cloudify, CloudifyError, Deployment, Execution, ExecutionStatus, Node, NodeInstance,
    ScaleRequest,
};

/// The fake manager/tenant: fixed deployments, nodes and instances, executions that tests can
/// add, and a record of every scale and cancel request.
#[derive(Debug, Default)]
pub struct FakeCloudify {
    name: String,
    tenant: String,
    deployments: Mutex<Vec<Deployment>>,
    nodes: Vec<Node>,
    instances: Mutex<Vec<NodeInstance>>,
    executions: Mutex<Vec<Execution>>,
    scales: Mutex<Vec<ScaleRequest>>,
    cancels: Mutex<Vec<String>>,
    fail_scales: AtomicBool,
    fail_reads: AtomicBool,
    scale_latency: Duration,
}

/// A poisoned lock only means another test thread panicked; the data is still what it wrote.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(route: &str, id: &str) -> CloudifyError {
    CloudifyError::Api {
        route: route.into(),
        status: 404,
        code: "not_found_error".into(),
        message: format!("{id} not found"),
    }
}

impl FakeCloudify {
    /// An empty manager entry called `name` (what group ids are prefixed with) in `tenant`.
    pub fn new(name: &str, tenant: &str) -> FakeCloudify {
        FakeCloudify {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            ..FakeCloudify::default()
        }
    }

    /// With these deployments (their labels decide what discovery finds).
    pub fn with_deployments(mut self, deployments: Vec<Deployment>) -> FakeCloudify {
        self.deployments = Mutex::new(deployments);
        self
    }

    /// Moves a deployment to another Cloudify site (what `cfy deployments set-site` does).
    pub fn set_site(&self, deployment: &str, site: Option<&str>) {
        if let Ok(mut deployments) = self.deployments.lock() {
            for d in deployments.iter_mut().filter(|d| d.id == deployment) {
                d.site_name = site.map(str::to_owned);
            }
        }
    }

    fn deployments(&self) -> Vec<Deployment> {
        self.deployments
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// With these nodes; `nodes` answers those of the asked deployments.
    pub fn with_nodes(mut self, nodes: Vec<Node>) -> FakeCloudify {
        self.nodes = nodes;
        self
    }

    /// With these node instances, answered as given: a scale adds or removes none.
    pub fn with_instances(self, instances: Vec<NodeInstance>) -> FakeCloudify {
        *lock(&self.instances) = instances;
        self
    }

    /// Every `start_scale` takes this long before it answers, as a real POST does, so that
    /// concurrent callers interleave there (a test of serialization needs that window).
    pub fn with_scale_latency(mut self, latency: Duration) -> FakeCloudify {
        self.scale_latency = latency;
        self
    }

    /// Adds an execution, as if someone else had started it.
    pub fn push_execution(&self, execution: Execution) {
        lock(&self.executions).push(execution);
    }

    /// While `true`, `start_scale` times out (Cloudify unreachable) and records nothing.
    pub fn fail_scales(&self, fail: bool) {
        self.fail_scales.store(fail, Ordering::SeqCst);
    }

    /// While `true`, every list read times out (a manager that is down), so a refresh fails.
    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    fn read(&self, route: &str) -> Result<(), CloudifyError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(CloudifyError::Timeout {
                route: route.into(),
                timeout: Duration::from_secs(1),
            });
        }
        Ok(())
    }

    /// Every accepted scale request, oldest first.
    pub fn scales(&self) -> Vec<ScaleRequest> {
        lock(&self.scales).clone()
    }

    /// The id of every cancel request, oldest first (unknown ids included).
    pub fn cancels(&self) -> Vec<String> {
        lock(&self.cancels).clone()
    }
}

#[async_trait]
impl Cloudify for FakeCloudify {
    fn name(&self) -> &str {
        &self.name
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    async fn deployments_by_id(&self, ids: &[String]) -> Result<Vec<Deployment>, CloudifyError> {
        self.read("GET /deployments")?;
        Ok(self
            .deployments()
            .into_iter()
            .filter(|d| ids.contains(&d.id))
            .collect())
    }

    async fn search_deployments(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<Deployment>, CloudifyError> {
        self.read("POST /searches/deployments")?;
        Ok(self
            .deployments()
            .into_iter()
            .filter(|d| {
                labels
                    .iter()
                    .all(|(k, v)| d.labels.iter().any(|l| &l.key == k && &l.value == v))
            })
            .collect())
    }

    async fn nodes(&self, deployment_ids: &[String]) -> Result<Vec<Node>, CloudifyError> {
        self.read("GET /nodes")?;
        let wanted: HashSet<&str> = deployment_ids.iter().map(String::as_str).collect();
        Ok(self
            .nodes
            .iter()
            .filter(|n| wanted.contains(n.deployment_id.as_str()))
            .cloned()
            .collect())
    }

    async fn node_instances(
        &self,
        deployment_ids: &[String],
        node_ids: &[String],
    ) -> Result<Vec<NodeInstance>, CloudifyError> {
        self.read("GET /node-instances")?;
        let deployments: HashSet<&str> = deployment_ids.iter().map(String::as_str).collect();
        let nodes: HashSet<&str> = node_ids.iter().map(String::as_str).collect();
        Ok(lock(&self.instances)
            .iter()
            .filter(|i| {
                deployments.contains(i.deployment_id.as_str()) && nodes.contains(i.node_id.as_str())
            })
            .cloned()
            .collect())
    }

    async fn scale_executions(
        &self,
        deployment_ids: &[String],
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        self.read("GET /executions")?;
        Ok(lock(&self.executions)
            .iter()
            .rev() // newest first, like `_sort=-created_at`
            .filter(|e| e.workflow_id == "scale")
            .filter(|e| deployment_ids.is_empty() || deployment_ids.contains(&e.deployment_id))
            .filter(|e| statuses.is_empty() || statuses.contains(&e.status))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn start_scale(&self, request: &ScaleRequest) -> Result<Execution, CloudifyError> {
        if !self.scale_latency.is_zero() {
            tokio::time::sleep(self.scale_latency).await;
        }
        if self.fail_scales.load(Ordering::SeqCst) {
            return Err(CloudifyError::Timeout {
                route: "POST /executions".into(),
                timeout: Duration::from_secs(1),
            });
        }
        let mut executions = lock(&self.executions);
        let mut parameters = serde_json::Map::new();
        parameters.insert("scalable_entity_name".into(), request.group.clone().into());
        parameters.insert("delta".into(), request.delta.into());
        parameters.insert(
            "include_instances".into(),
            request.include_instances.clone().into(),
        );
        let execution = Execution {
            id: format!("e{}", executions.len()),
            workflow_id: "scale".into(),
            deployment_id: request.deployment_id.clone(),
            status: ExecutionStatus::Queued,
            parameters,
            ..Execution::default()
        };
        executions.push(execution.clone());
        lock(&self.scales).push(request.clone());
        Ok(execution)
    }

    async fn execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        lock(&self.executions)
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or_else(|| not_found("GET /executions/{id}", id))
    }

    async fn cancel_execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        lock(&self.cancels).push(id.to_owned());
        let mut executions = lock(&self.executions);
        let execution = executions
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or_else(|| not_found("POST /executions/{id}", id))?;
        execution.status = ExecutionStatus::Cancelled;
        Ok(execution.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(id: &str, labels: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"id": id, "labels": labels})).expect("deployment")
    }

    #[tokio::test]
    async fn answers_with_the_apis_filters() {
        let fake = FakeCloudify::new("main", "t")
            .with_deployments(vec![
                deployment("a", json!([{"key": "k", "value": "v"}])),
                deployment("b", json!([])),
            ])
            .with_nodes(vec![
                serde_json::from_value(json!({"id": "vm", "deployment_id": "a"})).expect("node"),
            ]);
        let found = fake
            .search_deployments(&[("k".into(), "v".into())])
            .await
            .expect("search");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "a");
        let by_id = fake.deployments_by_id(&["b".into()]).await.expect("by id");
        assert_eq!(by_id[0].id, "b");
        assert!(fake.nodes(&[]).await.expect("nodes").is_empty());
        assert_eq!(fake.nodes(&["a".into()]).await.expect("nodes").len(), 1);
    }

    #[tokio::test]
    async fn scales_queue_and_are_listed_newest_first_until_cancelled() {
        let fake = FakeCloudify::new("main", "t");
        for delta in [1, 2] {
            fake.start_scale(&ScaleRequest::scale_out("a", "g", delta, false))
                .await
                .expect("queued");
        }
        let queued = fake
            .scale_executions(&[], &[ExecutionStatus::Queued], None)
            .await
            .expect("list");
        let ids: Vec<&str> = queued.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e0"]);
        assert_eq!(queued[0].parameters["delta"], 2);
        fake.cancel_execution("e1").await.expect("cancel");
        assert_eq!(
            fake.execution("e1").await.expect("get").status,
            ExecutionStatus::Cancelled
        );
        assert!(fake.cancel_execution("nope").await.is_err());
        assert_eq!(fake.cancels(), ["e1", "nope"]);
        fake.fail_scales(true);
        assert!(matches!(
            fake.start_scale(&fake.scales()[0]).await,
            Err(CloudifyError::Timeout { .. })
        ));
        assert_eq!(fake.scales().len(), 2, "a failed request is not recorded");
    }
}
