//! [`Cloudify`] over [`CloudifyClient`]: which endpoints, filters and projections each call uses.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;

use super::client::CallKind;
use super::{
    Cloudify, CloudifyClient, CloudifyError, Deployment, DeploymentModification, Execution,
    ExecutionStatus, Node, NodeInstance, ScaleRequest,
};

const DEPLOYMENT_FIELDS: &str = "id,labels,scaling_groups,site_name";
const NODE_FIELDS: &str = "id,deployment_id,type_hierarchy,host_id";
const INSTANCE_FIELDS: &str =
    "id,node_id,deployment_id,host_id,state,runtime_properties,scaling_groups";
const MODIFICATION_FIELDS: &str = "id,deployment_id,status,context,modified_nodes";
const EXECUTION_FIELDS: &str =
    "id,workflow_id,deployment_id,status,error,parameters,created_at,ended_at";

fn repeated<'a>(key: &'a str, values: &[String]) -> Vec<(&'a str, String)> {
    values.iter().map(|v| (key, v.clone())).collect()
}

#[async_trait]
impl Cloudify for CloudifyClient {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn tenant(&self) -> &str {
        &self.settings.tenant
    }

    async fn deployments_by_id(&self, ids: &[String]) -> Result<Vec<Deployment>, CloudifyError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = repeated("id", ids);
        q.push(("_include", DEPLOYMENT_FIELDS.into()));
        self.list_all(
            "GET /deployments",
            Method::GET,
            "/deployments",
            &q,
            None,
            None,
        )
        .await
    }

    async fn search_deployments(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<Deployment>, CloudifyError> {
        let rules: Vec<_> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "values": [v], "operator": "any_of", "type": "label"}))
            .collect();
        let q = [("_include", DEPLOYMENT_FIELDS.to_owned())];
        self.list_all(
            "POST /searches/deployments",
            Method::POST,
            "/searches/deployments",
            &q,
            Some(json!({ "filter_rules": rules })),
            None,
        )
        .await
    }

    async fn nodes(&self, deployment_ids: &[String]) -> Result<Vec<Node>, CloudifyError> {
        if deployment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = repeated("deployment_id", deployment_ids);
        q.push(("_include", NODE_FIELDS.into()));
        self.list_all("GET /nodes", Method::GET, "/nodes", &q, None, None)
            .await
    }

    async fn node_instances(
        &self,
        deployment_ids: &[String],
        node_ids: &[String],
    ) -> Result<Vec<NodeInstance>, CloudifyError> {
        if deployment_ids.is_empty() || node_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = repeated("deployment_id", deployment_ids);
        q.extend(repeated("node_id", node_ids));
        q.push(("_include", INSTANCE_FIELDS.into()));
        self.list_all(
            "GET /node-instances",
            Method::GET,
            "/node-instances",
            &q,
            None,
            None,
        )
        .await
    }

    async fn scale_executions(
        &self,
        deployment_ids: &[String],
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        // An empty deployment list means "every deployment of the tenant": the refresh asks for
        // executions before it knows which deployments discovery will find.
        let mut q = repeated("deployment_id", deployment_ids);
        q.extend(statuses.iter().map(|s| ("status", s.as_str().to_owned())));
        q.push(("workflow_id", "scale".into()));
        q.push(("_sort", "-created_at".into()));
        q.push(("_include", EXECUTION_FIELDS.into()));
        self.list_all(
            "GET /executions",
            Method::GET,
            "/executions",
            &q,
            None,
            limit,
        )
        .await
    }

    async fn deployment_modifications(
        &self,
        deployment_ids: &[String],
        status: &str,
    ) -> Result<Vec<DeploymentModification>, CloudifyError> {
        if deployment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = repeated("deployment_id", deployment_ids);
        q.push(("status", status.to_owned()));
        q.push(("_include", MODIFICATION_FIELDS.into()));
        self.list_all(
            "GET /deployment-modifications",
            Method::GET,
            "/deployment-modifications",
            &q,
            None,
            None,
        )
        .await
    }

    async fn start_scale(&self, request: &ScaleRequest) -> Result<Execution, CloudifyError> {
        let mut parameters = json!({
            "scalable_entity_name": request.group,
            "delta": request.delta,
            "scale_compute": false,
        });
        if request.abort_started {
            parameters["abort_started"] = json!(true);
        }
        if !request.include_instances.is_empty() {
            parameters["include_instances"] = json!(request.include_instances);
        }
        let body = json!({
            "deployment_id": request.deployment_id,
            "workflow_id": "scale",
            "parameters": parameters,
            // queue: a second workflow on the deployment waits instead of failing with
            // existing_running_execution_error. Never `force`: parallel scales corrupt the
            // deployment modification.
            "queue": true,
        });
        self.send(
            "POST /executions",
            || self.request(Method::POST, "/executions").json(&body),
            CallKind::Write,
        )
        .await
    }

    async fn execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        let path = format!("/executions/{}", urlencode(id));
        self.send(
            "GET /executions/{id}",
            || self.request(Method::GET, &path),
            CallKind::Read,
        )
        .await
    }

    async fn cancel_execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        let path = format!("/executions/{}", urlencode(id));
        let body = json!({"action": "cancel"});
        self.send(
            "POST /executions/{id}",
            || self.request(Method::POST, &path).json(&body),
            CallKind::Write,
        )
        .await
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
