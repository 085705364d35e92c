//! JSON shapes of the resources, field for field as a 7.x manager renders them in API v3.1
//! (`manager_rest/storage/resource_models.py`), plus the cheap field accessors that filters
//! and `_sort` use.

use serde_json::{Map, Value, json};

use super::executions::scale_workflow_parameters;
use super::instance_json::InstanceJson;
use super::query::{FieldVal, Listable};
use super::state::{
    Deployment, ExecStatus, Execution, Model, ModificationRecord, Node, NodeInstance, ScalingGroup,
    Token,
};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Listable for Deployment {
    const KIND: &'static str = "Deployment";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "display_name",
        "blueprint_id",
        "description",
        "created_at",
        "updated_at",
        "created_by",
        "tenant_name",
        "visibility",
        "private_resource",
        "resource_availability",
        "inputs",
        "outputs",
        "capabilities",
        "groups",
        "scaling_groups",
        "policy_types",
        "policy_triggers",
        "workflows",
        "labels",
        "site_name",
        "runtime_only_evaluation",
        "installation_status",
        "deployment_status",
        "latest_execution",
        "latest_execution_status",
        "latest_execution_workflow_id",
        "latest_execution_total_operations",
        "latest_execution_finished_operations",
        "create_execution",
        "sub_services_status",
        "sub_environments_status",
        "sub_services_count",
        "sub_environments_count",
        "environment_type",
        "deployment_groups",
        "has_sub_deployments",
        "unavailable_instances",
        "drifted_instances",
        "resource_tags",
    ];

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        match name {
            "id" | "display_name" => FieldVal::Str(&self.id),
            "blueprint_id" => FieldVal::Str(&self.blueprint_id),
            "created_by" => FieldVal::Str(&self.created_by),
            "tenant_name" => FieldVal::Str(&self.tenant),
            "created_at" | "updated_at" => FieldVal::Str(&self.created_at),
            _ => self
                .render(model)
                .remove(name)
                .map_or(FieldVal::Null, FieldVal::Json),
        }
    }

    fn render(&self, model: &Model) -> Map<String, Value> {
        let latest = self.executions.last().and_then(|id| model.execution(id));
        let latest_summary = latest.map(|e| latest_execution_status(e.status));
        let deployment_status = deployment_status(self, model, latest_summary);
        object(json!({
            "id": &*self.id,
            "display_name": &*self.id,
            "blueprint_id": self.blueprint_id,
            "description": null,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "created_by": self.created_by,
            "tenant_name": &*self.tenant,
            "visibility": "tenant",
            "private_resource": false,
            "resource_availability": "tenant",
            "inputs": {},
            "outputs": {},
            "capabilities": {},
            "groups": groups_json(&self.groups),
            "scaling_groups": scaling_groups_json(&self.groups),
            "policy_types": {},
            "policy_triggers": {},
            "workflows": [{
                "name": "scale",
                "plugin": "default_workflows",
                "operation": "cloudify.plugins.workflows.scale_entity",
                "parameters": scale_workflow_parameters(),
                "is_cascading": false,
                "is_available": true,
                "availability_rules": {"node_instances_active": ["all", "partial"]},
            }],
            "labels": labels_json(self),
            "site_name": null,
            "runtime_only_evaluation": false,
            "installation_status": "active",
            "deployment_status": deployment_status,
            "latest_execution": latest.map(|e| e.id.clone()),
            "latest_execution_status": latest_summary,
            "latest_execution_workflow_id": latest.map(|e| e.workflow_id.clone()),
            "latest_execution_total_operations": latest.map(|e| e.total_operations),
            "latest_execution_finished_operations": latest.map(|e| e.finished_operations),
            "create_execution": null,
            "sub_services_status": null,
            "sub_environments_status": null,
            "sub_services_count": 0,
            "sub_environments_count": 0,
            "environment_type": "",
            "deployment_groups": [],
            "has_sub_deployments": false,
            "unavailable_instances": 0,
            "drifted_instances": 0,
            "resource_tags": null,
        }))
    }
}

/// `latest_execution_status`: the manager's three-way summary of an execution's status, with
/// everything not yet ended (queued included) as `in_progress`.
fn latest_execution_status(status: ExecStatus) -> &'static str {
    match status {
        ExecStatus::Terminated => "completed",
        ExecStatus::Failed => "failed",
        ExecStatus::Cancelled => "cancelled",
        _ => "in_progress",
    }
}

/// `deployment_status`: `in_progress` while any execution is active or queued;
/// `requires_attention` after a failed latest execution or with a deployment modification left
/// started (a cancelled or failed scale without rollback); `good` otherwise.
fn deployment_status(d: &Deployment, model: &Model, latest: Option<&str>) -> &'static str {
    let active = d
        .executions
        .iter()
        .filter_map(|id| model.execution(id))
        .any(|e| e.status.is_active() || e.status == ExecStatus::Queued);
    if active {
        "in_progress"
    } else if matches!(latest, Some("failed")) || d.modification.is_some() {
        "requires_attention"
    } else {
        "good"
    }
}

/// `groups`: each scaling group's members, with no policies.
fn groups_json(groups: &[ScalingGroup]) -> Map<String, Value> {
    groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                json!({"members": g.members, "policies": {}}),
            )
        })
        .collect()
}

/// `scaling_groups`: each group's members and its sizes (`current_instances` is what exists,
/// `planned_instances` what a running scale is heading for).
fn scaling_groups_json(groups: &[ScalingGroup]) -> Map<String, Value> {
    groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                json!({
                    "members": g.members,
                    "properties": {
                        "default_instances": g.default_instances,
                        "min_instances": g.min,
                        "max_instances": g.max,
                        "current_instances": g.current,
                        "planned_instances": g.planned,
                    }
                }),
            )
        })
        .collect()
}

/// `labels`: one object per `(key, value)`, stamped with the deployment's creation.
fn labels_json(d: &Deployment) -> Vec<Value> {
    d.labels
        .iter()
        .map(|(k, v)| {
            json!({"key": k, "value": v, "created_at": d.created_at,
                   "created_by": d.created_by})
        })
        .collect()
}

impl Listable for Node {
    const KIND: &'static str = "Node";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "deployment_id",
        "blueprint_id",
        "type",
        "type_hierarchy",
        "host_id",
        "properties",
        "operations",
        "relationships",
        "plugins",
        "plugins_to_install",
        "number_of_instances",
        "planned_number_of_instances",
        "deploy_number_of_instances",
        "min_number_of_instances",
        "max_number_of_instances",
        "actual_number_of_instances",
        "actual_planned_number_of_instances",
        "unavailable_instances",
        "drifted_instances",
        "tenant_name",
        "created_by",
        "visibility",
        "private_resource",
        "resource_availability",
    ];

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        match name {
            "id" => FieldVal::Str(&self.id),
            "deployment_id" => FieldVal::Str(&self.deployment_id),
            "blueprint_id" => FieldVal::Str(&self.blueprint_id),
            "type" => FieldVal::Str(self.type_name),
            "host_id" => self
                .host_id
                .as_deref()
                .map_or(FieldVal::Null, FieldVal::Str),
            "tenant_name" => FieldVal::Str(&self.tenant),
            _ => self
                .render(model)
                .remove(name)
                .map_or(FieldVal::Null, FieldVal::Json),
        }
    }

    fn render(&self, model: &Model) -> Map<String, Value> {
        // Counts of a node inside a group are per group instance; the actual_* fields multiply
        // by the group's current/planned instances (as `resources_v2/nodes.py` does).
        let group = self.group.as_deref().and_then(|g| {
            model
                .deployment_index(&self.tenant, &self.deployment_id)
                .and_then(|di| model.deployments[di].group(g))
        });
        let (actual, actual_planned) = match group {
            Some(g) => (
                self.number_of_instances * g.current,
                self.number_of_instances * g.planned,
            ),
            None => (self.number_of_instances, self.number_of_instances),
        };
        let is_vm = self.host_id.as_deref() == Some(self.id.as_str());
        let properties = if is_vm {
            json!({"ip": "", "image": "ubuntu-22.04", "flavor": "m1.large",
                   "agent_config": {"install_method": "none"}})
        } else {
            json!({"resource_id": "", "use_external_resource": false})
        };
        // The group's first VM is connected to its port; extra VMs have none.
        let relationships = if is_vm
            && self
                .group
                .as_deref()
                .is_some_and(|g| self.id == format!("{g}_host"))
        {
            json!([{
                "type": "cloudify.openstack.server_connected_to_port",
                "target_id": self.id.replace("_host", "_port"),
                "type_hierarchy": ["cloudify.relationships.depends_on",
                                   "cloudify.relationships.connected_to",
                                   "cloudify.openstack.server_connected_to_port"],
                "properties": {"connection_type": "all_to_all"},
            }])
        } else {
            json!([])
        };
        object(json!({
            "id": self.id,
            "deployment_id": &*self.deployment_id,
            "blueprint_id": self.blueprint_id,
            "type": self.type_name,
            "type_hierarchy": self.hierarchy,
            "host_id": self.host_id,
            "properties": properties,
            "operations": {},
            "relationships": relationships,
            "plugins": [],
            "plugins_to_install": null,
            "number_of_instances": self.number_of_instances,
            "planned_number_of_instances": self.number_of_instances,
            "deploy_number_of_instances": self.number_of_instances,
            "min_number_of_instances": 0,
            "max_number_of_instances": -1,
            "actual_number_of_instances": actual,
            "actual_planned_number_of_instances": actual_planned,
            "unavailable_instances": 0,
            "drifted_instances": 0,
            "tenant_name": &*self.tenant,
            "created_by": self.created_by,
            "visibility": "tenant",
            "private_resource": false,
            "resource_availability": "tenant",
        }))
    }
}

impl Listable for NodeInstance {
    const KIND: &'static str = "NodeInstance";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "node_id",
        "deployment_id",
        "host_id",
        "state",
        "runtime_properties",
        "system_properties",
        "relationships",
        "scaling_groups",
        "version",
        "index",
        "has_configuration_drift",
        "is_status_check_ok",
        "tenant_name",
        "created_by",
        "visibility",
        "private_resource",
        "resource_availability",
    ];

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        match name {
            "id" => FieldVal::Str(&self.id),
            "node_id" => FieldVal::Str(&self.node_id),
            "deployment_id" => FieldVal::Str(&self.deployment_id),
            "host_id" => self
                .host_id
                .as_deref()
                .map_or(FieldVal::Null, FieldVal::Str),
            "state" => FieldVal::Str(self.state),
            "version" => FieldVal::Int(i64::from(self.version)),
            "index" => FieldVal::Int(i64::from(self.index)),
            "tenant_name" => FieldVal::Str(&self.tenant),
            "created_by" => FieldVal::Str(&self.created_by),
            _ => self
                .render(model)
                .remove(name)
                .map_or(FieldVal::Null, FieldVal::Json),
        }
    }

    fn render(&self, _model: &Model) -> Map<String, Value> {
        // One definition of the shape: the streaming serializer.
        object(
            serde_json::to_value(InstanceJson {
                inst: self,
                include: None,
            })
            .unwrap_or(Value::Null),
        )
    }
}

impl Listable for Execution {
    const KIND: &'static str = "Execution";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "workflow_id",
        "deployment_id",
        "deployment_display_name",
        "blueprint_id",
        "status",
        "status_display",
        "error",
        "parameters",
        "created_at",
        "started_at",
        "ended_at",
        "scheduled_for",
        "is_dry_run",
        "is_system_workflow",
        "allow_custom_parameters",
        "total_operations",
        "finished_operations",
        "resume",
        "execution_group_id",
        "created_by",
        "tenant_name",
        "visibility",
        "private_resource",
        "resource_availability",
    ];

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        match name {
            "id" => FieldVal::Str(&self.id),
            "workflow_id" => FieldVal::Str(&self.workflow_id),
            "deployment_id" | "deployment_display_name" => FieldVal::Str(&self.deployment_id),
            "blueprint_id" => FieldVal::Str(&self.blueprint_id),
            "status" => FieldVal::Str(self.status.as_str()),
            "created_at" => FieldVal::Str(&self.created_at),
            "created_by" => FieldVal::Str(&self.created_by),
            "tenant_name" => FieldVal::Str(&self.tenant),
            "is_system_workflow" => FieldVal::Bool(false),
            "is_dry_run" => FieldVal::Bool(self.is_dry_run),
            _ => self
                .render(model)
                .remove(name)
                .map_or(FieldVal::Null, FieldVal::Json),
        }
    }

    fn render(&self, _model: &Model) -> Map<String, Value> {
        let status_display = match self.status {
            ExecStatus::Terminated => "completed",
            other => other.as_str(),
        };
        object(json!({
            "id": self.id,
            "workflow_id": self.workflow_id,
            "deployment_id": &*self.deployment_id,
            "deployment_display_name": &*self.deployment_id,
            "blueprint_id": self.blueprint_id,
            "status": self.status.as_str(),
            "status_display": status_display,
            "error": self.error,
            "parameters": self.parameters,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "scheduled_for": null,
            "is_dry_run": self.is_dry_run,
            "is_system_workflow": false,
            "allow_custom_parameters": self.allow_custom_parameters,
            "total_operations": self.total_operations,
            "finished_operations": self.finished_operations,
            "resume": false,
            "execution_group_id": null,
            "created_by": self.created_by,
            "tenant_name": &*self.tenant,
            "visibility": "tenant",
            "private_resource": false,
            "resource_availability": "tenant",
        }))
    }
}

/// Listing tokens is not tenant-scoped; the route passes the caller's username as "tenant".
impl Listable for Token {
    const KIND: &'static str = "Token";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "value",
        "username",
        "role",
        "expiration_date",
        "last_used",
        "description",
    ];

    fn tenant(&self) -> &str {
        &self.username
    }

    fn render(&self, _model: &Model) -> Map<String, Value> {
        token_json(self, "sys_admin", false)
    }
}

/// A token as the manager shows it: the secret only right after creation.
pub(crate) fn token_json(token: &Token, role: &str, with_secret: bool) -> Map<String, Value> {
    let value = if with_secret {
        format!("ctok-{}-{}", token.id, token.secret)
    } else {
        "********".to_string()
    };
    object(json!({
        "id": token.id,
        "value": value,
        "username": token.username,
        "role": role,
        "expiration_date": token
            .expiration
            .map(|e| e.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        "last_used": token.last_used,
        "description": token.description,
    }))
}

impl Listable for ModificationRecord {
    const KIND: &'static str = "DeploymentModification";
    const FIELDS: &'static [&'static str] = &[
        "id",
        "deployment_id",
        "status",
        "created_at",
        "ended_at",
        "modified_nodes",
        "node_instances",
        "context",
        "created_by",
        "tenant_name",
        "visibility",
        "private_resource",
        "resource_availability",
    ];

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        match name {
            "id" => FieldVal::Str(&self.id),
            "deployment_id" => FieldVal::Str(&self.deployment_id),
            "status" => FieldVal::Str(self.status.as_str()),
            "created_at" => FieldVal::Str(&self.created_at),
            "tenant_name" => FieldVal::Str(&self.tenant),
            _ => self
                .render(model)
                .remove(name)
                .map_or(FieldVal::Null, FieldVal::Json),
        }
    }

    fn render(&self, _model: &Model) -> Map<String, Value> {
        let ids = |v: &[String]| -> Vec<Value> { v.iter().map(|id| json!({"id": id})).collect() };
        object(json!({
            "id": self.id,
            "deployment_id": &*self.deployment_id,
            "status": self.status.as_str(),
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "modified_nodes": self.modified_nodes,
            "node_instances": {
                "added_and_related": ids(&self.added_instances),
                "removed_and_related": ids(&self.removed_instances),
                "before_modification": [],
            },
            "context": {
                "blueprint_id": &*self.deployment_id,
                "deployment_id": &*self.deployment_id,
                "execution_id": self.execution_id,
                "workflow_id": "scale",
            },
            "created_by": self.created_by,
            "tenant_name": &*self.tenant,
            "visibility": "tenant",
            "private_resource": false,
            "resource_availability": "tenant",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use crate::state::Modification;

    /// The demo model with one execution per status given on `k8s-pool-a`, oldest first.
    fn pool_a_with(statuses: &[ExecStatus]) -> Model {
        let mut model =
            Model::from_scenario(&Scenario::default_demo().with_seed(1)).expect("model");
        for (i, status) in statuses.iter().enumerate() {
            model.push_execution(Execution::scale_for_test(
                &format!("e{i}"),
                "default_tenant",
                "k8s-pool-a",
                "admin",
                *status,
            ));
        }
        model
    }

    fn status_of(model: &Model) -> (Value, Value) {
        let d = model.deployments[0].render(model);
        (
            d["deployment_status"].clone(),
            d["latest_execution_status"].clone(),
        )
    }

    #[test]
    fn latest_execution_status_is_the_managers_summary() {
        for (status, summary) in [
            (ExecStatus::Terminated, "completed"),
            (ExecStatus::Failed, "failed"),
            (ExecStatus::Cancelled, "cancelled"),
            (ExecStatus::Pending, "in_progress"),
            (ExecStatus::Started, "in_progress"),
            (ExecStatus::Cancelling, "in_progress"),
            (ExecStatus::ForceCancelling, "in_progress"),
            (ExecStatus::KillCancelling, "in_progress"),
            (ExecStatus::Queued, "in_progress"),
        ] {
            assert_eq!(latest_execution_status(status), summary, "{status:?}");
        }
    }

    #[test]
    fn deployment_status_follows_active_executions_then_failures_and_left_modifications() {
        assert_eq!(status_of(&pool_a_with(&[])), (json!("good"), Value::Null));
        assert_eq!(
            status_of(&pool_a_with(&[ExecStatus::Failed, ExecStatus::Terminated])),
            (json!("good"), json!("completed")),
            "only the latest execution counts"
        );
        assert_eq!(
            status_of(&pool_a_with(&[ExecStatus::Terminated, ExecStatus::Failed])),
            (json!("requires_attention"), json!("failed"))
        );
        // An active or queued execution anywhere in the history wins over a failed latest one.
        assert_eq!(
            status_of(&pool_a_with(&[ExecStatus::Queued, ExecStatus::Failed])),
            (json!("in_progress"), json!("failed"))
        );
        assert_eq!(
            status_of(&pool_a_with(&[ExecStatus::Started])),
            (json!("in_progress"), json!("in_progress"))
        );
        let mut left = pool_a_with(&[ExecStatus::Cancelled]);
        left.deployments[0].modification = Some(Modification {
            group: "workers".into(),
            added: Vec::new(),
            removing: Vec::new(),
            record: 0,
        });
        assert_eq!(
            status_of(&left),
            (json!("requires_attention"), json!("cancelled"))
        );
    }

    #[test]
    fn scaling_groups_show_current_and_planned_sizes() {
        let mut model = pool_a_with(&[]);
        model.deployments[0].groups[0].planned = 5;
        let d = model.deployments[0].render(&model);
        assert_eq!(
            d["scaling_groups"],
            json!({"workers": {
                "members": ["workers_host", "workers_port"],
                "properties": {"default_instances": 2, "min_instances": 1, "max_instances": 10,
                               "current_instances": 2, "planned_instances": 5},
            }})
        );
        assert_eq!(
            d["groups"],
            json!({"workers": {"members": ["workers_host", "workers_port"], "policies": {}}})
        );
        let labels = d["labels"].as_array().expect("labels");
        assert_eq!(labels.len(), 1);
        assert_eq!(
            (&labels[0]["key"], &labels[0]["value"]),
            (&json!("k8s-cluster"), &json!("demo"))
        );
        assert_eq!(labels[0]["created_at"], d["created_at"]);
    }
}
