//! Deployments that come and go: blueprints, `PUT /deployments/{id}` with its
//! `create_deployment_environment`, the `install`/`uninstall` availability rules, deployment
//! updates and `DELETE /deployments/{id}`, as a 7.x manager applies them
//! (`resource_manager.py`, `resource_models.py`; checked against a real manager, see
//! `tests/manager_lifecycle/main.rs` in the provider). The workflows that act on these
//! records run in `workflow::lifecycle`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Deployment, ExecStatus, Execution, Model, now_stamp};
use crate::error::SimError;
use crate::scenario::{BlueprintSpec, DeploymentSpec, GroupSpec, LabelValues};

/// Workflow of the execution `PUT /deployments/{id}` starts.
pub(crate) const CREATE_ENVIRONMENT: &str = "create_deployment_environment";
/// Workflow of the execution `DELETE /deployments/{id}` starts.
pub(crate) const DELETE_ENVIRONMENT: &str = "delete_deployment_environment";
/// Workflow of a deployment update's execution.
pub(crate) const UPDATE: &str = "update";

/// Node-instance states that count as not live (`uninstall` is unavailable when every instance
/// is in one; `DELETE` accepts them without `force`).
const INACTIVE_STATES: &[&str] = &["uninitialized", "deleted"];

/// The lifecycle side of a deployment: what created it, its inputs, whether it is installed,
/// whether it is gone. Scenario deployments are installed from the start and have no create
/// execution (as after `configure_manager` imported them).
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// Inputs in force (the blueprint's defaults merged in once the environment exists).
    pub inputs: Map<String, Value>,
    /// `installation_status: active`.
    pub installed: bool,
    /// The `create_deployment_environment` execution, for deployments created over REST.
    pub create_execution: Option<String>,
    /// Deleted: the row stays so that indexes held by running workflows stay valid, but
    /// lookups, lists and searches no longer see it.
    pub deleted: bool,
    /// The blueprint it came from, for outputs and capabilities.
    pub blueprint: Option<Arc<BlueprintSpec>>,
    /// Labels given at creation, applied with the blueprint's when the environment is created.
    pub pending_labels: Vec<(String, String)>,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            inputs: Map::new(),
            installed: true,
            create_execution: None,
            deleted: false,
            blueprint: None,
            pending_labels: Vec::new(),
        }
    }
}

/// A blueprint of the simulated manager.
#[derive(Debug, Clone)]
pub(crate) struct BlueprintRecord {
    pub tenant: Arc<str>,
    pub spec: Arc<BlueprintSpec>,
    pub created_at: String,
    pub created_by: String,
    /// `application_file_name` of an upload (empty for scenario blueprints).
    pub main_file_name: String,
}

/// A deployment update (`/deployment-updates`).
#[derive(Debug, Clone)]
pub(crate) struct UpdateRecord {
    pub id: String,
    pub tenant: Arc<str>,
    pub deployment_id: Arc<str>,
    pub blueprint_id: String,
    /// `updating`, `executing_workflow`, `successful`, `failed`.
    pub state: &'static str,
    pub execution_id: String,
    pub old_inputs: Map<String, Value>,
    pub new_inputs: Map<String, Value>,
    pub created_at: String,
    pub created_by: String,
}

/// A validated `PUT /deployments/{id}` body.
#[derive(Debug, Default)]
pub(crate) struct NewDeployment {
    pub blueprint_id: String,
    pub inputs: Map<String, Value>,
    pub labels: Vec<(String, String)>,
}

/// Parses the body of `PUT /deployments/{id}`: `blueprint_id` (required), `inputs` (object or
/// null), `labels` as a list of one-entry objects `{key: value | [values]}` (what Cloudify's
/// clients send) or of `{key, value}` objects. Keys are lower-cased, as Cloudify stores them.
pub(crate) fn parse_new_deployment(body: &[u8]) -> Result<NewDeployment, SimError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?;
    let Value::Object(body) = value else {
        return Err(SimError::BadParameters(
            "Request body must be a JSON object".into(),
        ));
    };
    let blueprint_id = match body.get("blueprint_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(SimError::BadParameters(
                "Missing blueprint_id in json request body".into(),
            ));
        }
    };
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(SimError::BadParameters("inputs: expected a dict".into())),
    };
    let labels = match body.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => parse_labels(items)?,
        Some(_) => return Err(SimError::BadParameters("labels: expected a list".into())),
    };
    Ok(NewDeployment {
        blueprint_id,
        inputs,
        labels,
    })
}

fn parse_labels(items: &[Value]) -> Result<Vec<(String, String)>, SimError> {
    let bad = || {
        SimError::BadParameters(
            "Labels must be a list of 1-entry dictionaries: [{<key1>: <value1>}, ...]".into(),
        )
    };
    let mut labels = Vec::new();
    for item in items {
        let Value::Object(map) = item else {
            return Err(bad());
        };
        let (key, values) = match (map.get("key"), map.get("value")) {
            (Some(Value::String(k)), Some(v)) if map.len() == 2 => (k.clone(), v.clone()),
            _ if map.len() == 1 => {
                let (k, v) = map.iter().next().ok_or_else(bad)?;
                (k.clone(), v.clone())
            }
            _ => return Err(bad()),
        };
        if key.is_empty() || key.contains('/') {
            return Err(SimError::BadParameters(format!(
                "The label key `{key}` is invalid: it must be non-empty and cannot contain `/`"
            )));
        }
        let values = match values {
            Value::String(v) => vec![v],
            Value::Array(vs) => vs
                .into_iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        for v in values {
            labels.push((key.to_lowercase(), v));
        }
    }
    Ok(labels)
}

/// `[A-Za-z0-9-._]{1,256}`, as `rest_utils.validate_inputs` demands of resource ids.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Checks inputs against a blueprint's declaration and merges the defaults in. A blueprint that
/// declares none accepts anything.
fn merge_inputs(
    spec: &BlueprintSpec,
    given: &Map<String, Value>,
    action: &str,
) -> Result<Map<String, Value>, SimError> {
    if spec.inputs.is_empty() {
        return Ok(given.clone());
    }
    let unknown: Vec<&str> = given
        .keys()
        .filter(|k| !spec.inputs.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(SimError::UnknownDeploymentInput(format!(
            "{action} - unknown inputs: {}",
            unknown.join(", ")
        )));
    }
    let mut merged = Map::new();
    let mut missing = Vec::new();
    for (name, decl) in &spec.inputs {
        match (given.get(name), &decl.default) {
            (Some(v), _) => {
                merged.insert(name.clone(), v.clone());
            }
            (None, Some(d)) => {
                merged.insert(name.clone(), d.clone());
            }
            (None, None) => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(SimError::MissingRequiredDeploymentInput(format!(
            "{action} - missing required inputs: {}",
            missing.join(", ")
        )));
    }
    Ok(merged)
}

/// Replaces `{deployment_id}` and `{inputs.NAME}` in every string of `template`.
pub(crate) fn evaluate(
    template: &Value,
    deployment_id: &str,
    inputs: &Map<String, Value>,
) -> Value {
    match template {
        Value::String(s) => {
            let mut out = s.replace("{deployment_id}", deployment_id);
            for (name, value) in inputs {
                let text = match value {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                out = out.replace(&format!("{{inputs.{name}}}"), &text);
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| evaluate(v, deployment_id, inputs))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), evaluate(v, deployment_id, inputs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The result of `install`'s or `uninstall`'s availability rule (`node_instances_active`).
pub(crate) fn workflow_available(workflow: &str, states: &[&str]) -> bool {
    let all_started = !states.is_empty() && states.iter().all(|s| *s == "started");
    let all_inactive = states.iter().all(|s| INACTIVE_STATES.contains(s));
    match workflow {
        // ['none', 'partial']: unavailable only when every instance is started.
        "install" => !all_started,
        // ['all', 'partial']: unavailable when instances exist and none is live.
        "uninstall" => states.is_empty() || all_started || !all_inactive,
        _ => true,
    }
}

impl Model {
    /// The live (not deleted) blueprint `id` of `tenant`.
    pub fn blueprint(&self, tenant: &str, id: &str) -> Option<&BlueprintRecord> {
        self.blueprints
            .iter()
            .find(|b| &*b.tenant == tenant && b.spec.id == id)
    }

    /// Stores an uploaded blueprint archive with [`BlueprintSpec::uploaded`]'s topology (the
    /// simulator parses no TOSCA; a scenario's `blueprints` are there from the start, so an
    /// upload of one of their ids is a 409 like any existing id).
    pub fn upload_blueprint(
        &mut self,
        tenant: &str,
        username: &str,
        id: &str,
        main_file_name: &str,
        archive_bytes: usize,
    ) -> Result<&BlueprintRecord, SimError> {
        if !valid_id(id) {
            return Err(SimError::BadParameters(format!(
                "The `blueprint_id` argument contains illegal characters: {id}"
            )));
        }
        if archive_bytes == 0 {
            return Err(SimError::BadParameters(
                "Missing blueprint archive in the request body".into(),
            ));
        }
        if self.blueprint(tenant, id).is_some() {
            return Err(SimError::Conflict(format!(
                "<Blueprint id=`{id}` tenant=`{tenant}`> already exists on <Tenant name=`{tenant}`>"
            )));
        }
        let spec = Arc::new(BlueprintSpec::uploaded(id));
        self.blueprints.push(BlueprintRecord {
            tenant: Arc::from(tenant),
            spec,
            created_at: now_stamp(),
            created_by: username.to_string(),
            main_file_name: main_file_name.to_string(),
        });
        self.blueprints
            .last()
            .ok_or_else(|| SimError::Internal("blueprint vanished".into()))
    }

    /// `PUT /deployments/{id}`: validates, stores the deployment without groups or labels and
    /// queues its `create_deployment_environment`; returns its index. A deployment whose
    /// environment creation failed is replaced, as the manager does on the next PUT.
    pub fn create_deployment(
        &mut self,
        tenant: &str,
        username: &str,
        id: &str,
        request: NewDeployment,
    ) -> Result<usize, SimError> {
        if !valid_id(id) {
            return Err(SimError::BadParameters(format!(
                "The `deployment_id` argument contains illegal characters: {id}"
            )));
        }
        let spec = self
            .blueprint(tenant, &request.blueprint_id)
            .map(|b| b.spec.clone())
            .ok_or_else(|| SimError::not_found("Blueprint", &request.blueprint_id))?;
        if let Some(di) = self.deployment_index(tenant, id) {
            let failed_create = self.deployments[di]
                .life
                .create_execution
                .as_deref()
                .and_then(|e| self.execution(e))
                .is_some_and(|e| e.status == ExecStatus::Failed);
            if !failed_create {
                return Err(SimError::Conflict(format!(
                    "<Deployment id=`{id}` tenant=`{tenant}`> already exists on <Tenant \
                     name=`{tenant}`> or with global visibility"
                )));
            }
            self.purge_deployment(di);
        }
        let inputs = merge_inputs(&spec, &request.inputs, "Cannot create deployment")?;
        let created_at = now_stamp();
        let tenant: Arc<str> = Arc::from(tenant);
        let deployment = Deployment {
            tenant: tenant.clone(),
            id: Arc::from(id),
            blueprint_id: spec.id.clone(),
            created_at: created_at.clone(),
            created_by: username.to_string(),
            labels: Vec::new(),
            groups: Vec::new(),
            modification: None,
            executions: Vec::new(),
            life: Lifecycle {
                inputs,
                installed: false,
                create_execution: None,
                deleted: false,
                blueprint: Some(spec.clone()),
                pending_labels: request.labels,
            },
        };
        self.add_deployment(deployment);
        let di = self.deployments.len() - 1;
        let execution = self.system_execution(di, CREATE_ENVIRONMENT, username);
        self.deployments[di].life.create_execution = Some(execution);
        Ok(di)
    }

    /// Stores an execution of a lifecycle workflow of deployment `di`, `pending` (or `queued`
    /// behind another) for the deployment's FIFO runner; returns its id.
    pub fn system_execution(&mut self, di: usize, workflow: &str, username: &str) -> String {
        let busy = self
            .deployment_executions(di)
            .any(|e| e.status.is_active() || e.status == ExecStatus::Queued);
        let d = &self.deployments[di];
        let mut execution = Execution::new(
            d.tenant.clone(),
            d.id.clone(),
            d.blueprint_id.clone(),
            workflow,
            username,
        );
        if busy {
            execution.status = ExecStatus::Queued;
        }
        let id = execution.id.clone();
        self.push_execution(execution);
        id
    }

    /// Ends environment creation: the blueprint's groups, nodes and `uninitialized` instances,
    /// its labels with those given at creation. `installation_status` stays `inactive`.
    pub fn create_environment(&mut self, di: usize) -> Result<(), SimError> {
        let Some(spec) = self.deployments[di].life.blueprint.clone() else {
            return Ok(());
        };
        let inputs = self.deployments[di].life.inputs.clone();
        let initial = spec
            .initial_input
            .as_ref()
            .and_then(|name| inputs.get(name))
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()));
        let groups: Vec<GroupSpec> = spec
            .scaling_groups
            .iter()
            .map(|g| GroupSpec {
                current: initial.unwrap_or(g.current),
                default: None,
                ..g.clone()
            })
            .collect();
        let d = &self.deployments[di];
        let mut labels: BTreeMap<String, LabelValues> = spec.labels.clone();
        for (k, v) in &d.life.pending_labels {
            let values = labels
                .entry(k.clone())
                .or_insert_with(|| LabelValues::Many(Vec::new()));
            let mut all = values.values();
            if !all.contains(v) {
                all.push(v.clone());
            }
            *values = LabelValues::Many(all);
        }
        let layout = DeploymentSpec {
            id: d.id.to_string(),
            tenant: Some(d.tenant.to_string()),
            blueprint_id: Some(d.blueprint_id.clone()),
            labels,
            scaling_groups: groups,
            standalone_vms: 0,
            standalone_node: String::new(),
        };
        let creator: Arc<str> = Arc::from(d.created_by.as_str());
        self.populate_environment(di, &layout, &creator)
    }

    /// Validates an `install`/`uninstall` of deployment `di` as `POST /executions` (and the
    /// dequeue) does: the environment must exist, and the availability rule must hold.
    pub fn check_lifecycle_workflow(&self, di: usize, workflow: &str) -> Result<(), SimError> {
        let d = &self.deployments[di];
        if let Some(create) = d
            .life
            .create_execution
            .as_deref()
            .and_then(|e| self.execution(e))
        {
            match create.status {
                ExecStatus::Terminated => {}
                ExecStatus::Pending | ExecStatus::Queued => {
                    return Err(SimError::EnvironmentCreationPending(
                        "Deployment environment creation is still pending, try again in a minute"
                            .into(),
                    ));
                }
                ExecStatus::Started => {
                    return Err(SimError::EnvironmentCreationInProgress(
                        "Deployment environment creation is still in progress, try again in a \
                         minute"
                            .into(),
                    ));
                }
                ExecStatus::Failed => {
                    let last = create.error.trim().lines().last().unwrap_or("").to_string();
                    return Err(SimError::DeploymentCreation(format!(
                        "Can't launch executions since environment creation for deployment {} \
                         has failed: {last}",
                        d.id
                    )));
                }
                other => {
                    return Err(SimError::DeploymentCreation(format!(
                        "Can't launch executions since the environment creation for deployment \
                         {} has been cancelled [status={}]",
                        d.id,
                        other.as_str()
                    )));
                }
            }
        }
        if !workflow_available(workflow, &self.instance_states(di)) {
            return Err(SimError::UnavailableWorkflow(format!(
                "Workflow not available: {workflow}"
            )));
        }
        Ok(())
    }

    /// States of every node instance of deployment `di`.
    pub fn instance_states(&self, di: usize) -> Vec<&'static str> {
        let d = &self.deployments[di];
        self.instances_by_deployment
            .get(&(d.tenant.clone(), d.id.clone()))
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| self.instances.get(k))
                    .map(|i| i.state)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets every node instance of deployment `di` whose state is in `from` (all when empty) to
    /// `state`; returns how many changed.
    #[cfg(test)]
    pub fn set_deployment_instances_state(
        &mut self,
        di: usize,
        from: &[&str],
        state: &'static str,
    ) -> u64 {
        let d = &self.deployments[di];
        let keys = self
            .instances_by_deployment
            .get(&(d.tenant.clone(), d.id.clone()))
            .cloned()
            .unwrap_or_default();
        let mut changed = 0;
        for key in keys {
            if let Some(inst) = self.instances.get_mut(&key)
                && (from.is_empty() || from.contains(&inst.state))
            {
                inst.state = state;
                inst.version += 1;
                changed += 1;
            }
        }
        changed
    }

    /// `DELETE /deployments/{id}`: refused while executions run or are queued, or (without
    /// `force`) while instances are live; otherwise queues `delete_deployment_environment`,
    /// which removes the deployment when it runs.
    pub fn delete_deployment(
        &mut self,
        tenant: &str,
        username: &str,
        id: &str,
        force: bool,
    ) -> Result<usize, SimError> {
        let di = self
            .deployment_index(tenant, id)
            .ok_or_else(|| SimError::not_found("Deployment", id))?;
        let running: Vec<String> = self
            .deployment_executions(di)
            .filter(|e| e.status.is_active() || e.status == ExecStatus::Queued)
            .map(|e| e.id.clone())
            .collect();
        if !running.is_empty() {
            return Err(SimError::DependentExists(format!(
                "Can't delete deployment {id} - There are running or queued executions for this \
                 deployment. Running executions ids: {}",
                running.join(",")
            )));
        }
        if !force {
            let d = &self.deployments[di];
            let live: Vec<String> = self
                .instances_by_deployment
                .get(&(d.tenant.clone(), d.id.clone()))
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| self.instances.get(k))
                        .filter(|i| !INACTIVE_STATES.contains(&i.state))
                        .map(|i| i.id.clone())
                        .collect()
                })
                .unwrap_or_default();
            if !live.is_empty() {
                return Err(SimError::DependentExists(format!(
                    "Can't delete deployment {id} - There are live nodes for this deployment. \
                     Live nodes ids: {}",
                    live.join(",")
                )));
            }
        }
        self.system_execution(di, DELETE_ENVIRONMENT, username);
        Ok(di)
    }

    /// Removes deployment `di` from every lookup: its instances, nodes, executions and updates
    /// go; the row stays as a tombstone so that indexes held elsewhere stay valid.
    pub fn purge_deployment(&mut self, di: usize) {
        let (tenant, id) = {
            let d = &self.deployments[di];
            (d.tenant.clone(), d.id.clone())
        };
        let keys = self
            .instances_by_deployment
            .remove(&(tenant.clone(), id.clone()))
            .unwrap_or_default();
        self.remove_instances(&keys);
        self.nodes
            .retain(|n| !(n.tenant == tenant && n.deployment_id == id));
        let gone: std::collections::HashSet<String> =
            self.deployments[di].executions.drain(..).collect();
        self.executions.retain(|e| !gone.contains(&e.id));
        self.execution_index = self
            .executions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        self.updates
            .retain(|u| !(u.tenant == tenant && u.deployment_id == id));
        if let Some(ids) = self.deployment_lookup.get_mut(&*tenant)
            && ids.get(&*id) == Some(&di)
        {
            ids.remove(&*id);
        }
        let d = &mut self.deployments[di];
        d.life.deleted = true;
        d.groups.clear();
        d.labels.clear();
        d.modification = None;
    }

    /// `POST /deployment-updates/{id}/update/initiate`: the inputs merged over the current ones
    /// (checked against the blueprint), an `update` execution queued; returns the update's id.
    pub fn initiate_update(
        &mut self,
        tenant: &str,
        username: &str,
        deployment_id: &str,
        inputs: &Map<String, Value>,
    ) -> Result<String, SimError> {
        let di = self
            .deployment_index(tenant, deployment_id)
            .ok_or_else(|| SimError::not_found("Deployment", deployment_id))?;
        let old_inputs = self.deployments[di].life.inputs.clone();
        let mut new_inputs = old_inputs.clone();
        for (k, v) in inputs {
            new_inputs.insert(k.clone(), v.clone());
        }
        if let Some(spec) = self.deployments[di].life.blueprint.clone() {
            new_inputs = merge_inputs(&spec, &new_inputs, "Cannot update deployment")?;
        }
        let execution_id = self.system_execution(di, UPDATE, username);
        let d = &self.deployments[di];
        let id = format!("{}-{}", d.id, uuid::Uuid::new_v4());
        self.updates.push(UpdateRecord {
            id: id.clone(),
            tenant: d.tenant.clone(),
            deployment_id: d.id.clone(),
            blueprint_id: d.blueprint_id.clone(),
            state: "updating",
            execution_id,
            old_inputs,
            new_inputs,
            created_at: now_stamp(),
            created_by: username.to_string(),
        });
        Ok(id)
    }

    /// The update whose execution is `execution_id`, mutably.
    pub fn update_of_execution(&mut self, execution_id: &str) -> Option<&mut UpdateRecord> {
        self.updates
            .iter_mut()
            .find(|u| u.execution_id == execution_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scenario::{InputSpec, Scenario};

    fn spec_with_inputs() -> BlueprintSpec {
        let mut spec = BlueprintSpec::uploaded("bp");
        spec.inputs = BTreeMap::from([
            ("flavor".to_string(), InputSpec { default: None }),
            (
                "initial_workers".to_string(),
                InputSpec {
                    default: Some(json!(1)),
                },
            ),
        ]);
        spec
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn inputs_are_checked_against_the_declaration_and_defaults_merged() {
        let spec = spec_with_inputs();
        let merged = merge_inputs(&spec, &map(json!({"flavor": "m1"})), "x").expect("valid");
        assert_eq!(
            Value::Object(merged),
            json!({"flavor": "m1", "initial_workers": 1})
        );
        let err = merge_inputs(&spec, &map(json!({"flavor": "m1", "bogus": 1})), "x")
            .expect_err("unknown");
        assert_eq!(err.error_code(), "unknown_deployment_input_error");
        let err = merge_inputs(&spec, &Map::new(), "x").expect_err("missing");
        assert_eq!(err.error_code(), "missing_required_deployment_input_error");
        let open = BlueprintSpec::uploaded("any");
        assert!(merge_inputs(&open, &map(json!({"whatever": 1})), "x").is_ok());
    }

    #[test]
    fn availability_rules_are_the_managers() {
        assert!(workflow_available("install", &[]));
        assert!(workflow_available("install", &["uninitialized", "started"]));
        assert!(!workflow_available("install", &["started", "started"]));
        assert!(workflow_available("uninstall", &[]));
        assert!(workflow_available("uninstall", &["started"]));
        assert!(workflow_available("uninstall", &["stopped", "deleted"]));
        assert!(!workflow_available(
            "uninstall",
            &["uninitialized", "deleted"]
        ));
    }

    #[test]
    fn labels_parse_in_both_client_shapes_and_bad_ones_are_refused() {
        let req = parse_new_deployment(
            br#"{"blueprint_id":"bp","inputs":null,"labels":[{"K8s-Cluster":"a"},{"zone":["x","y"]},{"key":"k","value":"v"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            req.labels,
            [
                ("k8s-cluster".to_string(), "a".to_string()),
                ("zone".into(), "x".into()),
                ("zone".into(), "y".into()),
                ("k".into(), "v".into())
            ]
        );
        for bad in [
            &br#"{"inputs":{}}"#[..],
            br#"{"blueprint_id":"bp","labels":[{"a/b":"c"}]}"#,
            br#"{"blueprint_id":"bp","labels":[{"a":1}]}"#,
            br#"{"blueprint_id":"bp","inputs":[1]}"#,
            b"not json",
        ] {
            assert_eq!(
                parse_new_deployment(bad).expect_err("refused").error_code(),
                "bad_parameters_error",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn outputs_are_evaluated_from_the_id_and_inputs() {
        let inputs = map(json!({"site": "zone-a", "size": 3}));
        assert_eq!(
            evaluate(
                &json!({"g": "{deployment_id}/workers", "z": ["{inputs.site}", "{inputs.size}"], "n": 1}),
                "np-a",
                &inputs
            ),
            json!({"g": "np-a/workers", "z": ["zone-a", "3"], "n": 1})
        );
    }

    #[test]
    fn a_deployment_is_created_then_deleted_and_its_id_reused() {
        let mut model = Model::from_scenario(&Scenario::default_demo()).expect("model");
        model
            .upload_blueprint("default_tenant", "admin", "bp", "bp.yaml", 10)
            .expect("uploaded");
        let err = model
            .upload_blueprint("default_tenant", "admin", "bp", "bp.yaml", 10)
            .expect_err("twice");
        assert_eq!(err.error_code(), "conflict_error");
        let new = || NewDeployment {
            blueprint_id: "bp".into(),
            inputs: map(json!({"initial_workers": 2})),
            labels: vec![("k8s-nodepool-uid".into(), "u1".into())],
        };
        let missing = NewDeployment {
            blueprint_id: "nope".into(),
            ..NewDeployment::default()
        };
        let err = model
            .create_deployment("default_tenant", "admin", "np", missing)
            .expect_err("no blueprint");
        assert_eq!(err.error_code(), "not_found_error");
        let di = model
            .create_deployment("default_tenant", "admin", "np", new())
            .expect("created");
        let err = model
            .create_deployment("default_tenant", "admin", "np", new())
            .expect_err("exists");
        assert_eq!(err.error_code(), "conflict_error");
        let err = model
            .check_lifecycle_workflow(di, "install")
            .expect_err("environment pending");
        assert_eq!(
            err.error_code(),
            "deployment_environment_creation_pending_error"
        );
        model.create_environment(di).expect("environment");
        let create = model.deployments[di].life.create_execution.clone();
        if let Some(e) = create.and_then(|id| model.execution_mut(&id)) {
            e.status = ExecStatus::Terminated;
        }
        assert_eq!(model.instance_states(di), ["uninitialized"; 4]);
        assert!(
            model.deployments[di]
                .labels
                .contains(&("k8s-nodepool-uid".into(), "u1".into()))
        );
        model
            .check_lifecycle_workflow(di, "install")
            .expect("install");
        assert_eq!(
            model
                .check_lifecycle_workflow(di, "uninstall")
                .expect_err("nothing live")
                .error_code(),
            "unavailable_workflow_error"
        );
        model.set_deployment_instances_state(di, &[], "started");
        let err = model
            .delete_deployment("default_tenant", "admin", "np", false)
            .expect_err("live instances");
        assert_eq!(err.error_code(), "dependent_exists_error");
        model.set_deployment_instances_state(di, &[], "deleted");
        model
            .delete_deployment("default_tenant", "admin", "np", false)
            .expect("deletable");
        model.purge_deployment(di);
        assert_eq!(model.deployment_index("default_tenant", "np"), None);
        assert!(model.instance_states(di).is_empty());
        let again = model
            .create_deployment("default_tenant", "admin", "np", new())
            .expect("the id is free again");
        assert_ne!(again, di);
    }
}
