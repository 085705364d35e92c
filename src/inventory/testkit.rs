//! Hand-written Cloudify answers and configurations shared by the crate's unit tests: the same
//! JSON shapes the client decodes, so a fixture cannot drift from what Cloudify sends.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cloudify::{Deployment, Node, NodeInstance};
use crate::config::{Config, NodeGroupsConfig, Overrides};

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
