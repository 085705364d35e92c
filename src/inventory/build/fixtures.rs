//! Hand-written Cloudify answers and half-built groups for the unit tests of the build steps.

use serde_json::{Value, json};

use super::*;
pub(super) use crate::inventory::testkit::{deployment, group, node_groups as config};

/// A node of deployment `dep` with the given type hierarchy.
pub(super) fn node(dep: &str, id: &str, types: &[&str]) -> Node {
    serde_json::from_value(json!({"id": id, "deployment_id": dep, "type_hierarchy": types}))
        .expect("node")
}

/// A `scale` execution of group `g` of deployment `dep`.
pub(super) fn scale(id: &str, dep: &str, status: &str, delta: i64, include: &[&str]) -> Execution {
    serde_json::from_value(
        json!({"id": id, "workflow_id": "scale", "deployment_id": dep,
        "status": status, "error": "boom",
        "parameters": {"scalable_entity_name": "g", "delta": delta, "include_instances": include}}),
    )
    .expect("execution")
}

/// A `started` modification of `dep`, recorded as started by `execution` when given, setting
/// group `g` to `target` instances.
pub(super) fn modification(
    dep: &str,
    execution: Option<&str>,
    target: i64,
) -> DeploymentModification {
    let context = match execution {
        Some(e) => json!({"execution_id": e}),
        None => json!({}),
    };
    serde_json::from_value(json!({"id": "m", "deployment_id": dep, "status": "started",
        "context": context, "modified_nodes": {"g": {"instances": target}}}))
    .expect("modification")
}

/// A VM instance `id` of node `vm` in group instance `g_<id>` of group `g`.
pub(super) fn vm(id: &str, dep: &str, state: &str, runtime: Value) -> NodeInstance {
    crate::inventory::testkit::vm(id, dep, "g", state, runtime)
}

/// The groups map of one group, `a/g`.
pub(super) fn groups_a_g<'a>() -> Groups<'a> {
    HashMap::from([(("a", "g"), group("a", "g"))])
}

/// A running instance with this provider id and node name.
pub(super) fn instance_of(provider_id: &str, node_name: Option<&str>) -> GroupInstance {
    GroupInstance {
        provider_id: provider_id.into(),
        vm_instance: normalize_provider_id(provider_id).into(),
        group_instance: String::new(),
        node_name: node_name.map(str::to_owned),
        state: InstanceState::Running,
        cloudify_state: "started".into(),
        addresses: InstanceAddresses::default(),
        being_removed: false,
        infrastructure: Vec::new(),
    }
}
