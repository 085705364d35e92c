//! Hand-written Cloudify answers and configurations shared by the crate's unit tests: the same
//! JSON shapes the client decodes, so a fixture cannot drift from what Cloudify sends.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cloudify::{Deployment, Node, NodeInstance};
use crate::config::{Config, NodeGroupsConfig, Overrides};
use crate::inventory::NodeGroup;

/// A configuration from YAML text, with every password it may name (`CLOUDIFY_PASSWORD`, `P`)
/// set in the environment.
pub(crate) fn config(yaml: &str) -> Config {
    let env = BTreeMap::from([
        ("CLOUDIFY_PASSWORD".to_owned(), "x".to_owned()),
        ("P".to_owned(), "x".to_owned()),
    ]);
    Config::from_yaml(yaml, &Overrides::default(), &env).expect("config")
}

/// The `node_groups` section of [`config`].
pub(crate) fn node_groups(yaml: &str) -> NodeGroupsConfig {
    config(yaml).node_groups
}

/// A deployment whose scaling groups are given as Cloudify's JSON `scaling_groups` object.
pub(crate) fn deployment(id: &str, scaling_groups: Value) -> Deployment {
    serde_json::from_value(json!({"id": id, "scaling_groups": scaling_groups})).expect("deployment")
}

/// A node of deployment `dep` whose type derives from `cloudify.nodes.Compute`: a VM.
pub(crate) fn compute_node(dep: &str, id: &str) -> Node {
    serde_json::from_value(
        json!({"id": id, "deployment_id": dep, "type_hierarchy": ["cloudify.nodes.Compute"]}),
    )
    .expect("node")
}

/// A VM instance `id` of node `vm` (its own host), in group instance `<group>_<id>` of `group`.
pub(crate) fn vm(id: &str, dep: &str, group: &str, state: &str, runtime: Value) -> NodeInstance {
    serde_json::from_value(
        json!({"id": id, "node_id": "vm", "deployment_id": dep, "host_id": id,
        "state": state, "runtime_properties": runtime,
        "scaling_groups": [{"name": group, "id": format!("{group}_{id}")}]}),
    )
    .expect("instance")
}

/// Group `group` of `dep` as `build::groups::create` leaves it: 3 planned and current, bounds 0..10.
pub(crate) fn group(dep: &str, group: &str) -> NodeGroup {
    NodeGroup {
        id: format!("{dep}/{group}"),
        source: 0,
        tenant: "t".into(),
        deployment: dep.into(),
        group: group.into(),
        site: None,
        min: 0,
        max: 10,
        planned: 3,
        current: 3,
        waiting: Vec::new(),
        running: Vec::new(),
        instances: Vec::new(),
        failed: Vec::new(),
        vm_nodes: vec!["vm".into()],
        joining_node: Some("vm".into()),
        seen_executions: Vec::new(),
        orphan_modification: false,
        debug: String::new(),
    }
}

/// `vm_1` (node `vm`, runtime `worker_runtime`) and `st_1` (node `storage`, hostname `st-1`) of
/// deployment `dep`, both in group instance `gi` of `group`: a group instance of two VMs
/// (issue 20), with their two compute nodes.
pub(crate) fn two_vm_group_instance(
    dep: &str,
    group: &str,
    gi: &str,
    worker_runtime: Value,
) -> (Vec<Node>, Vec<NodeInstance>) {
    let in_gi = |mut i: NodeInstance| {
        i.scaling_groups =
            serde_json::from_value(json!([{"name": group, "id": gi}])).expect("refs");
        i
    };
    let mut storage = vm("st_1", dep, group, "started", json!({"hostname": "st-1"}));
    storage.node_id = "storage".into();
    let worker = vm("vm_1", dep, group, "started", worker_runtime);
    (
        vec![compute_node(dep, "vm"), compute_node(dep, "storage")],
        vec![in_gi(storage), in_gi(worker)],
    )
}
