//! Owning a Cloudify deployment: create it from a blueprint, run `install` and `uninstall`,
//! change its inputs through a deployment update, read its outputs and capabilities, delete it,
//! and upload the blueprint it comes from. The controllers of pools (issue 22) and of
//! LoadBalancer Services (issue 23) drive a deployment through these calls; the autoscaling
//! path never does.
//!
//! Every call goes through [`CloudifyClient`]'s transport (auth, `Tenant` header, timeouts,
//! metrics, typed errors); writes are never retried, reads are. What a 7.x manager answers, and
//! when, is in `shared/reference/native-pools-and-load-balancers.md` Part B §3 and was checked
//! against a real manager (`tests/manager_lifecycle/main.rs`):
//!
//! - `PUT /deployments/{id}?async_create=true` answers 201 at once, with
//!   `installation_status: inactive` and the `create_deployment_environment` execution in
//!   `create_execution`/`latest_execution`; labels and the blueprint's defaults for inputs
//!   appear only once that execution has ended. 404 for an unknown blueprint, 409 `conflict_error`
//!   for an id that exists, 400 `unknown_deployment_input_error` (and kin) for bad inputs.
//! - `POST /executions {workflow_id: install|uninstall, queue: true}` answers 400
//!   `deployment_environment_creation_pending_error` / `_in_progress_error` until the environment
//!   exists, and 400 `unavailable_workflow_error` for `install` when every instance is started
//!   (`uninstall` when none is live). A *queued* one that became unavailable meanwhile fails when
//!   dequeued ("Error dequeueing execution: Workflow not available: install"), so the latest
//!   execution of a deployment may be a failed install of an installed deployment:
//!   [`DeploymentState::installation_status`] is the truth, not the latest execution.
//! - `POST /deployment-updates/{id}/update/initiate` starts an `update` execution without
//!   checking for a running one: callers wait for the deployment to be quiet first.
//! - `DELETE /deployments/{id}` answers 204 and removes the deployment asynchronously
//!   (`delete_deployment_environment`), so `GET` answers it for a moment and then 404; 400
//!   `dependent_exists_error` while executions run or are queued, or while instances are live
//!   (unless `force`).

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::CallKind;
use super::models::{Execution, Label, ScalingGroup, lenient};
use super::{CloudifyClient, CloudifyError};

/// What a new deployment is made of (`PUT /deployments/{id}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewDeployment {
    /// Deployment id: up to 256 of `[A-Za-z0-9-._]`, unique in the tenant.
    pub id: String,
    /// An uploaded blueprint of the same tenant (or global).
    pub blueprint_id: String,
    /// Deployment inputs; the blueprint's defaults fill in the others.
    pub inputs: Map<String, Value>,
    /// Labels `(key, value)`; Cloudify lower-cases keys and refuses a `/` in them. Discovery and
    /// "is this deployment mine" both read them.
    pub labels: Vec<(String, String)>,
}

/// `installation_status` of a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallationStatus {
    /// Every node instance is started (after a successful `install`).
    Active,
    /// Not installed, partly installed, or uninstalled.
    #[default]
    Inactive,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// The summary a manager keeps of a deployment's latest execution
/// (`latest_execution_status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionSummary {
    /// Queued, pending, started or being cancelled.
    InProgress,
    /// Terminated.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// No execution yet, or a value this client does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// A deployment as the lifecycle reads it (`GET /deployments/{id}`): what follows the progress
/// of its workflows, and what proves who created it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentState {
    /// Deployment id.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// The blueprint it was created from (or updated to).
    #[serde(deserialize_with = "lenient")]
    pub blueprint_id: String,
    /// `active` once installed; the one field that says so (see the module doc).
    #[serde(deserialize_with = "lenient")]
    pub installation_status: InstallationStatus,
    /// `good`, `in_progress` or `requires_attention`.
    #[serde(deserialize_with = "lenient")]
    pub deployment_status: Option<String>,
    /// The `create_deployment_environment` execution.
    #[serde(deserialize_with = "lenient")]
    pub create_execution: Option<String>,
    /// The newest execution of the deployment.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution: Option<String>,
    /// Summary of its status.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution_status: ExecutionSummary,
    /// Its workflow (`create_deployment_environment`, `install`, `update`, `scale`, ...).
    #[serde(deserialize_with = "lenient")]
    pub latest_execution_workflow_id: Option<String>,
    /// Operations it has, for progress.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution_total_operations: Option<i64>,
    /// Operations it has finished.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution_finished_operations: Option<i64>,
    /// Inputs in force, the blueprint's defaults included (`null` until the environment exists).
    #[serde(deserialize_with = "lenient")]
    pub inputs: Map<String, Value>,
    /// Labels (empty until the environment exists).
    #[serde(deserialize_with = "lenient")]
    pub labels: Vec<Label>,
    /// Scaling groups and their sizes.
    #[serde(deserialize_with = "lenient")]
    pub scaling_groups: std::collections::HashMap<String, ScalingGroup>,
}

const STATE_FIELDS: &str = "id,blueprint_id,installation_status,deployment_status,\
create_execution,latest_execution,latest_execution_status,latest_execution_workflow_id,\
latest_execution_total_operations,latest_execution_finished_operations,inputs,labels,\
scaling_groups";

impl DeploymentState {
    /// Whether the deployment carries the label `key=value` (keys compared lower-cased, as
    /// Cloudify stores them).
    pub fn has_label(&self, key: &str, value: &str) -> bool {
        let key = key.to_lowercase();
        self.labels.iter().any(|l| l.key == key && l.value == value)
    }

    /// Whether the `create_deployment_environment` execution is still the latest one and has
    /// not ended: `install` is refused until it has.
    pub fn environment_pending(&self) -> bool {
        self.latest_execution_workflow_id.as_deref() == Some(CREATE_ENVIRONMENT)
            && self.latest_execution_status == ExecutionSummary::InProgress
    }
}

/// Workflow name of the execution that creates a deployment's environment.
pub const CREATE_ENVIRONMENT: &str = "create_deployment_environment";

/// A lifecycle workflow of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    /// Creates and starts every node instance.
    Install,
    /// Stops and deletes every node instance.
    Uninstall,
}

impl Workflow {
    /// The workflow id Cloudify knows it by.
    pub fn id(self) -> &'static str {
        match self {
            Workflow::Install => "install",
            Workflow::Uninstall => "uninstall",
        }
    }
}

/// A deployment update (`/deployment-updates`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentUpdate {
    /// Update id (`<deployment>-<uuid>`).
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// The deployment it changes.
    #[serde(deserialize_with = "lenient")]
    pub deployment_id: String,
    /// `updating`, `executing_workflow`, `finalizing`, `successful`, `failed`, ...
    #[serde(deserialize_with = "lenient")]
    pub state: String,
    /// The `update` execution.
    #[serde(deserialize_with = "lenient")]
    pub execution_id: Option<String>,
    /// Inputs before.
    #[serde(deserialize_with = "lenient")]
    pub old_inputs: Map<String, Value>,
    /// Inputs after (the given ones merged over the old).
    #[serde(deserialize_with = "lenient")]
    pub new_inputs: Map<String, Value>,
}

impl DeploymentUpdate {
    /// True once the update can change no more (`successful` or `failed`).
    pub fn is_ended(&self) -> bool {
        matches!(self.state.as_str(), "successful" | "failed")
    }
}

/// How a deployment update treats the node instances whose properties or operations changed
/// (the manager's `update_instances.py`): each runs `cloudify.interfaces.lifecycle.update` (or
/// `update_config`/`update_apply`) where its node declares one, after `check_drift` where that is
/// declared; the others are reinstalled unless `skip_reinstall`. The defaults are the manager's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Never reinstall: an instance whose node has no update operation keeps running as it is
    /// (the LoadBalancer controller: a reinstall would replace the load balancer's address).
    pub skip_reinstall: bool,
    /// Skip the `check_status` pass before the update, and the heal (a reinstall, for a node
    /// without `heal`) of the instances it finds unhealthy: one workflow graph less per update.
    pub skip_heal: bool,
}

/// A blueprint (`/blueprints`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Blueprint {
    /// Blueprint id.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// `pending`, `uploading`, `extracting`, `parsing`, `uploaded`, `failed_*`, `invalid`.
    #[serde(deserialize_with = "lenient")]
    pub state: Option<String>,
    /// Why an upload failed.
    #[serde(deserialize_with = "lenient")]
    pub error: Option<String>,
}

impl Blueprint {
    /// True when deployments can be created from it (a blueprint from before upload states
    /// were tracked has none).
    pub fn is_uploaded(&self) -> bool {
        matches!(self.state.as_deref(), None | Some("uploaded"))
    }

    /// True when the upload ended without a usable blueprint.
    pub fn is_failed(&self) -> bool {
        matches!(self.state.as_deref(), Some(s) if s.starts_with("failed") || s == "invalid")
    }
}

/// What Cloudify's refusal of a lifecycle call means for the caller, from its `error_code`
/// (and HTTP status): the decision a controller takes depends on this, not on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 409 `conflict_error`: the id is taken (an earlier attempt of ours may have made it).
    AlreadyExists,
    /// 404: the deployment, blueprint, update or execution named does not exist.
    NotFound,
    /// 400 `deployment_environment_creation_pending_error` / `_in_progress_error`: try later.
    EnvironmentNotReady,
    /// 400 `unavailable_workflow_error`: `install` of an installed deployment, `uninstall` of
    /// one with nothing live.
    WorkflowUnavailable,
    /// 400 `dependent_exists_error`: a delete while executions run or instances live.
    DependentsExist,
    /// 400 `existing_running_execution_error`: busy and not queued.
    Busy,
    /// 400 about the inputs or the blueprint (`unknown_deployment_input_error`,
    /// `missing_required_deployment_input_error`, `deployment_creation_error`, ...): retrying
    /// the same request cannot succeed.
    Invalid,
    /// Anything else (transport, 5xx, auth, an unknown code): retry with backoff.
    Other,
}

impl Refusal {
    /// Classifies a failed lifecycle call.
    pub fn of(error: &CloudifyError) -> Refusal {
        let CloudifyError::Api { status, code, .. } = error else {
            return match error {
                CloudifyError::Http { status: 404, .. } => Refusal::NotFound,
                _ => Refusal::Other,
            };
        };
        match (*status, code.as_str()) {
            (409, _) | (_, "conflict_error") => Refusal::AlreadyExists,
            (404, _) | (_, "not_found_error") => Refusal::NotFound,
            (
                _,
                "deployment_environment_creation_pending_error"
                | "deployment_environment_creation_in_progress_error",
            ) => Refusal::EnvironmentNotReady,
            (_, "unavailable_workflow_error") => Refusal::WorkflowUnavailable,
            (_, "dependent_exists_error") => Refusal::DependentsExist,
            (_, "existing_running_execution_error") => Refusal::Busy,
            (400 | 422, _) => Refusal::Invalid,
            _ => Refusal::Other,
        }
    }
}

/// The deployment-lifecycle calls, implemented by [`CloudifyClient`] over HTTP. A trait so that
/// a controller can hold one per configured manager/tenant behind `Arc<dyn ...>`.
#[async_trait]
pub trait DeploymentLifecycle: Send + Sync {
    /// Uploads a blueprint archive (`.tar.gz` or `.zip` whose top directory holds
    /// `application_file_name`) as `PUT /blueprints/{id}` with the archive as the body and
    /// `async_upload`: the answer comes at once, [`blueprint`](Self::blueprint) follows the
    /// upload to `uploaded`. 409 when the id exists.
    async fn upload_blueprint(
        &self,
        id: &str,
        application_file_name: &str,
        archive: Vec<u8>,
    ) -> Result<Blueprint, CloudifyError>;
    /// The blueprint, or `None` when there is none with this id.
    async fn blueprint(&self, id: &str) -> Result<Option<Blueprint>, CloudifyError>;
    /// Creates a deployment (`async_create=true`): answers once the manager has stored it and
    /// queued its `create_deployment_environment`. Never retried.
    async fn create_deployment(
        &self,
        deployment: &NewDeployment,
    ) -> Result<DeploymentState, CloudifyError>;
    /// The deployment, or `None` once it does not exist (never created, or deleted).
    async fn deployment_state(&self, id: &str) -> Result<Option<DeploymentState>, CloudifyError>;
    /// Queues `install` or `uninstall` (`queue: true`). Never retried.
    async fn start_workflow(
        &self,
        deployment_id: &str,
        workflow: Workflow,
    ) -> Result<Execution, CloudifyError>;
    /// Executions of a deployment, newest first (any workflow), all pages.
    async fn deployment_executions(
        &self,
        deployment_id: &str,
    ) -> Result<Vec<Execution>, CloudifyError>;
    /// The deployment's outputs, evaluated now.
    async fn outputs(&self, deployment_id: &str) -> Result<Map<String, Value>, CloudifyError>;
    /// The deployment's capabilities, evaluated now.
    async fn capabilities(&self, deployment_id: &str) -> Result<Map<String, Value>, CloudifyError>;
    /// Starts a deployment update with these inputs merged over the current ones, same
    /// blueprint. Cloudify does not wait for a running execution: call when quiet.
    async fn start_update(
        &self,
        deployment_id: &str,
        inputs: &Map<String, Value>,
    ) -> Result<DeploymentUpdate, CloudifyError> {
        self.start_update_with(deployment_id, inputs, UpdateOptions::default())
            .await
    }
    /// [`start_update`](Self::start_update) with the manager's reinstall and heal switches.
    async fn start_update_with(
        &self,
        deployment_id: &str,
        inputs: &Map<String, Value>,
        options: UpdateOptions,
    ) -> Result<DeploymentUpdate, CloudifyError>;
    /// One deployment update by id.
    async fn deployment_update(&self, id: &str) -> Result<DeploymentUpdate, CloudifyError>;
    /// Deletes the deployment (204); it disappears once `delete_deployment_environment` ran.
    /// `force` deletes it even with live instances (never used by the controllers: they
    /// uninstall first). Never retried.
    async fn delete_deployment(&self, id: &str, force: bool) -> Result<(), CloudifyError>;
}

/// Reads deployment `id` and its executions (newest first), `None` when the deployment does not
/// exist. The executions are read first: the manager records an execution's end and its effect
/// on the deployment (`installation_status`, an update's inputs) in one transaction, so a
/// deployment read after the executions shows at least what they show. Read the other way round,
/// an `install` (or `update`) that ends between the two reads looks like "nothing running, not
/// installed (inputs still old)", and a controller starts the same workflow a second time (seen
/// on the real manager: a second `install`, refused as "Workflow not available").
pub async fn read_with_executions(
    manager: &dyn DeploymentLifecycle,
    id: &str,
) -> Result<Option<(DeploymentState, Vec<Execution>)>, CloudifyError> {
    let executions = match manager.deployment_executions(id).await {
        Ok(e) => e,
        Err(e) if Refusal::of(&e) == Refusal::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(manager
        .deployment_state(id)
        .await?
        .map(|deployment| (deployment, executions)))
}

fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `None` for a 404, the value otherwise.
fn found<T>(result: Result<T, CloudifyError>) -> Result<Option<T>, CloudifyError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if Refusal::of(&e) == Refusal::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `{deployment_id, outputs|capabilities: {...}}`.
#[derive(Deserialize)]
struct Evaluated {
    #[serde(default)]
    outputs: Option<Map<String, Value>>,
    #[serde(default)]
    capabilities: Option<Map<String, Value>>,
}

#[async_trait]
impl DeploymentLifecycle for CloudifyClient {
    async fn upload_blueprint(
        &self,
        id: &str,
        application_file_name: &str,
        archive: Vec<u8>,
    ) -> Result<Blueprint, CloudifyError> {
        let path = format!("/blueprints/{}", path_segment(id));
        let query = [
            ("application_file_name", application_file_name.to_owned()),
            ("async_upload", "true".to_owned()),
            ("visibility", "tenant".to_owned()),
        ];
        let body = bytes::Bytes::from(archive);
        self.send(
            "PUT /blueprints/{id}",
            || {
                self.request(Method::PUT, &path)
                    .query(&query)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            },
            CallKind::Write,
        )
        .await
    }

    async fn blueprint(&self, id: &str) -> Result<Option<Blueprint>, CloudifyError> {
        let path = format!("/blueprints/{}", path_segment(id));
        let query = [("_include", "id,state,error".to_owned())];
        found(
            self.send(
                "GET /blueprints/{id}",
                || self.request(Method::GET, &path).query(&query),
                CallKind::Read,
            )
            .await,
        )
    }

    async fn create_deployment(
        &self,
        deployment: &NewDeployment,
    ) -> Result<DeploymentState, CloudifyError> {
        let path = format!("/deployments/{}", path_segment(&deployment.id));
        // Labels as Cloudify's clients send them: a list of one-entry objects.
        let labels: Vec<Value> = deployment
            .labels
            .iter()
            .map(|(k, v)| json!({ k: v }))
            .collect();
        let body = json!({
            "blueprint_id": deployment.blueprint_id,
            "inputs": deployment.inputs,
            "labels": labels,
            "visibility": "tenant",
        });
        self.send(
            "PUT /deployments/{id}",
            || {
                self.request(Method::PUT, &path)
                    .query(&[("async_create", "true")])
                    .json(&body)
            },
            CallKind::Write,
        )
        .await
    }

    async fn deployment_state(&self, id: &str) -> Result<Option<DeploymentState>, CloudifyError> {
        let path = format!("/deployments/{}", path_segment(id));
        let query = [("_include", STATE_FIELDS.to_owned())];
        found(
            self.send(
                "GET /deployments/{id}",
                || self.request(Method::GET, &path).query(&query),
                CallKind::Read,
            )
            .await,
        )
    }

    async fn start_workflow(
        &self,
        deployment_id: &str,
        workflow: Workflow,
    ) -> Result<Execution, CloudifyError> {
        // queue: behind a running scale or update instead of existing_running_execution_error.
        let body = json!({
            "deployment_id": deployment_id,
            "workflow_id": workflow.id(),
            "queue": true,
        });
        self.send(
            "POST /executions",
            || self.request(Method::POST, "/executions").json(&body),
            CallKind::Write,
        )
        .await
    }

    async fn deployment_executions(
        &self,
        deployment_id: &str,
    ) -> Result<Vec<Execution>, CloudifyError> {
        let q = [
            ("deployment_id", deployment_id.to_owned()),
            ("_sort", "-created_at".to_owned()),
            (
                "_include",
                "id,workflow_id,deployment_id,status,error,parameters,created_at,ended_at"
                    .to_owned(),
            ),
        ];
        self.list_all(
            "GET /executions",
            Method::GET,
            "/executions",
            &q,
            None,
            None,
        )
        .await
    }

    async fn outputs(&self, deployment_id: &str) -> Result<Map<String, Value>, CloudifyError> {
        let path = format!("/deployments/{}/outputs", path_segment(deployment_id));
        let answer: Evaluated = self
            .send(
                "GET /deployments/{id}/outputs",
                || self.request(Method::GET, &path),
                CallKind::Read,
            )
            .await?;
        Ok(answer.outputs.unwrap_or_default())
    }

    async fn capabilities(&self, deployment_id: &str) -> Result<Map<String, Value>, CloudifyError> {
        let path = format!("/deployments/{}/capabilities", path_segment(deployment_id));
        let answer: Evaluated = self
            .send(
                "GET /deployments/{id}/capabilities",
                || self.request(Method::GET, &path),
                CallKind::Read,
            )
            .await?;
        Ok(answer.capabilities.unwrap_or_default())
    }

    async fn start_update_with(
        &self,
        deployment_id: &str,
        inputs: &Map<String, Value>,
        options: UpdateOptions,
    ) -> Result<DeploymentUpdate, CloudifyError> {
        // POST, although the REST docs say PUT: the 7.x code registers POST (Part B §3).
        let path = format!(
            "/deployment-updates/{}/update/initiate",
            path_segment(deployment_id)
        );
        let body = json!({
            "inputs": inputs,
            "skip_reinstall": options.skip_reinstall,
            "skip_heal": options.skip_heal,
        });
        self.send(
            "POST /deployment-updates/{id}/update/initiate",
            || self.request(Method::POST, &path).json(&body),
            CallKind::Write,
        )
        .await
    }

    async fn deployment_update(&self, id: &str) -> Result<DeploymentUpdate, CloudifyError> {
        let path = format!("/deployment-updates/{}", path_segment(id));
        let query = [(
            "_include",
            "id,deployment_id,state,execution_id,old_inputs,new_inputs".to_owned(),
        )];
        self.send(
            "GET /deployment-updates/{id}",
            || self.request(Method::GET, &path).query(&query),
            CallKind::Read,
        )
        .await
    }

    async fn delete_deployment(&self, id: &str, force: bool) -> Result<(), CloudifyError> {
        let path = format!("/deployments/{}", path_segment(id));
        let query = [("force", force.to_string())];
        // 204 No Content: decoded as JSON `null`.
        let _: Value = self
            .send(
                "DELETE /deployments/{id}",
                || self.request(Method::DELETE, &path).query(&query),
                CallKind::Write,
            )
            .await?;
        Ok(())
    }
}

/// Test doubles of [`DeploymentLifecycle`] shared by the controllers' tests.
#[cfg(test)]
pub(crate) mod doubles {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A deployment whose running execution ends right after the first read, whichever read it
    /// is: what a manager does when a workflow's last step lands between two of our GETs.
    /// Calls other than the two reads are not expected.
    pub(crate) struct EndsBetweenReads {
        reads: AtomicUsize,
        /// The deployment and its executions while the execution runs.
        pub before: (DeploymentState, Vec<Execution>),
        /// The same once it has ended.
        pub after: (DeploymentState, Vec<Execution>),
    }

    impl EndsBetweenReads {
        /// A deployment that looks like `before` to the first read and like `after` since.
        pub(crate) fn new(
            before: (DeploymentState, Vec<Execution>),
            after: (DeploymentState, Vec<Execution>),
        ) -> Self {
            Self {
                reads: AtomicUsize::new(0),
                before,
                after,
            }
        }

        fn now(&self) -> &(DeploymentState, Vec<Execution>) {
            if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
                &self.before
            } else {
                &self.after
            }
        }
    }

    #[async_trait]
    impl DeploymentLifecycle for EndsBetweenReads {
        async fn deployment_state(
            &self,
            _: &str,
        ) -> Result<Option<DeploymentState>, CloudifyError> {
            Ok(Some(self.now().0.clone()))
        }
        async fn deployment_executions(&self, _: &str) -> Result<Vec<Execution>, CloudifyError> {
            Ok(self.now().1.clone())
        }
        async fn upload_blueprint(
            &self,
            _: &str,
            _: &str,
            _: Vec<u8>,
        ) -> Result<Blueprint, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn blueprint(&self, _: &str) -> Result<Option<Blueprint>, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn create_deployment(
            &self,
            _: &NewDeployment,
        ) -> Result<DeploymentState, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn start_workflow(&self, _: &str, _: Workflow) -> Result<Execution, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn outputs(&self, _: &str) -> Result<Map<String, Value>, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn capabilities(&self, _: &str) -> Result<Map<String, Value>, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn start_update_with(
            &self,
            _: &str,
            _: &Map<String, Value>,
            _: UpdateOptions,
        ) -> Result<DeploymentUpdate, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn deployment_update(&self, _: &str) -> Result<DeploymentUpdate, CloudifyError> {
            unreachable!("only the reads are expected")
        }
        async fn delete_deployment(&self, _: &str, _: bool) -> Result<(), CloudifyError> {
            unreachable!("only the reads are expected")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> CloudifyError {
        CloudifyError::Api {
            route: "r".into(),
            status,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn refusals_follow_the_error_code() {
        assert_eq!(
            Refusal::of(&api(409, "conflict_error")),
            Refusal::AlreadyExists
        );
        assert_eq!(Refusal::of(&api(404, "not_found_error")), Refusal::NotFound);
        assert_eq!(
            Refusal::of(&api(400, "deployment_environment_creation_pending_error")),
            Refusal::EnvironmentNotReady
        );
        assert_eq!(
            Refusal::of(&api(
                400,
                "deployment_environment_creation_in_progress_error"
            )),
            Refusal::EnvironmentNotReady
        );
        assert_eq!(
            Refusal::of(&api(400, "unavailable_workflow_error")),
            Refusal::WorkflowUnavailable
        );
        assert_eq!(
            Refusal::of(&api(400, "dependent_exists_error")),
            Refusal::DependentsExist
        );
        assert_eq!(
            Refusal::of(&api(400, "existing_running_execution_error")),
            Refusal::Busy
        );
        assert_eq!(
            Refusal::of(&api(400, "unknown_deployment_input_error")),
            Refusal::Invalid
        );
        assert_eq!(
            Refusal::of(&api(503, "maintenance_mode_active")),
            Refusal::Other
        );
        assert_eq!(
            Refusal::of(&CloudifyError::Settings("x".into())),
            Refusal::Other
        );
    }

    #[test]
    fn a_deployment_state_reads_the_managers_answer() {
        // The shape a 7.0 manager answered right after `PUT ...?async_create=true`, trimmed.
        let fresh: DeploymentState = serde_json::from_value(json!({
            "id": "np-a", "blueprint_id": "bp", "inputs": null, "labels": [],
            "installation_status": "inactive", "deployment_status": "requires_attention",
            "latest_execution": "e1", "create_execution": "e1",
            "latest_execution_workflow_id": "create_deployment_environment",
            "latest_execution_status": "in_progress", "scaling_groups": null,
        }))
        .expect("decodes");
        assert!(fresh.environment_pending());
        assert_eq!(fresh.installation_status, InstallationStatus::Inactive);
        assert!(fresh.inputs.is_empty());
        let done: DeploymentState = serde_json::from_value(json!({
            "id": "np-a", "installation_status": "active",
            "latest_execution_status": "completed", "latest_execution_workflow_id": "install",
            "labels": [{"key": "k8s-nodepool-uid", "value": "u1"}],
            "inputs": {"flavor": "m1"},
        }))
        .expect("decodes");
        assert!(!done.environment_pending());
        assert!(done.has_label("K8S-NodePool-UID", "u1"));
        assert!(!done.has_label("k8s-nodepool-uid", "u2"));
        let odd: DeploymentState =
            serde_json::from_value(json!({"id": "x", "installation_status": "partial",
                "latest_execution_status": 7}))
            .expect("a strange answer still decodes");
        assert_eq!(odd.installation_status, InstallationStatus::Unknown);
        assert_eq!(odd.latest_execution_status, ExecutionSummary::Unknown);
    }

    #[test]
    fn blueprint_and_update_states() {
        let bp = |s: Value| -> Blueprint {
            serde_json::from_value(json!({"id": "b", "state": s})).expect("decodes")
        };
        assert!(bp(Value::Null).is_uploaded());
        assert!(bp(json!("uploaded")).is_uploaded());
        assert!(!bp(json!("parsing")).is_uploaded() && !bp(json!("parsing")).is_failed());
        assert!(bp(json!("failed_parsing")).is_failed());
        assert!(bp(json!("invalid")).is_failed());
        let up = |s: &str| DeploymentUpdate {
            state: s.into(),
            ..Default::default()
        };
        assert!(up("successful").is_ended() && up("failed").is_ended());
        assert!(!up("updating").is_ended() && !up("executing_workflow").is_ended());
    }
}
