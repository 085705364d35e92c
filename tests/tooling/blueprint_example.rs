//! Checks that the example Cloudify blueprint (deploy/cloudify/blueprint.yaml) produces what the
//! provider's documented configuration expects: one scaling group with a compute node and its port,
//! a scaling policy on it, kubelets whose provider id has the shape of the default
//! `provider_id_template`, and the deployment label that the discovery example in
//! docs/configuration.md matches.
//!
//! Self-contained on purpose (no crate internals): it reads the files as an operator would.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A YAML mapping read into JSON values (the blueprint's keys are all strings).
type Mapping = Map<String, Value>;

/// The provider's default provider-id template (docs/configuration.md, `provider_id_template` default).
/// Kept as a literal so this test does not depend on crate internals; it must equal the crate's
/// default template constant.
const DEFAULT_PROVIDER_ID_TEMPLATE: &str = "cloudify://{tenant}/{deployment}/{vm_instance}";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn blueprint() -> Value {
    serde_saphyr::from_str(&read("deploy/cloudify/blueprint.yaml"))
        .expect("blueprint.yaml is valid YAML")
}

fn map<'a>(v: &'a Value, key: &str) -> &'a Mapping {
    v.get(key)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("`{key}` is a mapping"))
}

fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("`{key}` is a string"))
}

/// The node templates, by name.
fn node_templates(bp: &Value) -> Vec<(String, &Value)> {
    map(bp, "node_templates")
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .collect()
}

fn node_type<'a>(bp: &'a Value, name: &str) -> &'a str {
    let node = bp
        .get("node_templates")
        .and_then(|n| n.get(name))
        .unwrap_or_else(|| panic!("node template {name} exists"));
    string(node, "type")
}

/// Compute in the sense of the provider: the VM whose instance is the group instance's host.
fn is_compute_type(t: &str) -> bool {
    t.ends_with(".Server") || t.ends_with(".Compute") || t.ends_with(".Instances")
}

fn is_port_type(t: &str) -> bool {
    t.ends_with(".Port")
}

/// The single scaling group: (name, members).
fn the_group(bp: &Value) -> (String, Vec<String>) {
    let groups = map(bp, "groups");
    assert_eq!(
        groups.len(),
        1,
        "exactly one scaling group: one blueprint deployment = one node group"
    );
    let (name, group) = groups.iter().next().expect("one group");
    let members = group
        .get("members")
        .and_then(Value::as_array)
        .expect("group has members")
        .iter()
        .map(|m| m.as_str().expect("member name").to_owned())
        .collect();
    (name.clone(), members)
}

/// The compute member of the group (the node that runs the join script).
fn compute_member(bp: &Value) -> String {
    let (_, members) = the_group(bp);
    let computes: Vec<_> = members
        .iter()
        .filter(|m| is_compute_type(node_type(bp, m)))
        .collect();
    assert_eq!(
        computes.len(),
        1,
        "one compute node per scale unit, got {computes:?}"
    );
    computes[0].clone()
}

fn lifecycle_op<'a>(bp: &'a Value, node: &str, op: &str) -> &'a Value {
    bp.get("node_templates")
        .and_then(|n| n.get(node))
        .and_then(|n| n.get("interfaces"))
        .and_then(|i| i.get("cloudify.interfaces.lifecycle"))
        .and_then(|l| l.get(op))
        .unwrap_or_else(|| panic!("{node} has a cloudify.interfaces.lifecycle.{op} operation"))
}

/// Renders a blueprint value into the provider's template syntax: `get_sys` becomes the
/// placeholder it stands for, `concat` joins, plain strings stay.
fn as_template(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one key");
            match Some(k.as_str()) {
                Some("concat") => arg
                    .as_array()
                    .expect("concat takes a list")
                    .iter()
                    .map(as_template)
                    .collect(),
                Some("get_sys") => {
                    let path: Vec<&str> = arg
                        .as_array()
                        .expect("get_sys takes a list")
                        .iter()
                        .map(|p| p.as_str().expect("get_sys path element"))
                        .collect();
                    match path.as_slice() {
                        ["tenant", "name"] => "{tenant}".to_owned(),
                        ["deployment", "id"] => "{deployment}".to_owned(),
                        other => panic!("get_sys {other:?} has no provider placeholder"),
                    }
                }
                other => panic!("unexpected intrinsic function {other:?} in provider id"),
            }
        }
        other => panic!("unexpected value in provider id: {other:?}"),
    }
}

/// Resolves `{get_input: name}` to the input's default; plain strings stay.
fn resolve_input(bp: &Value, v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_owned();
    }
    let input = v
        .get("get_input")
        .and_then(Value::as_str)
        .expect("get_input or a string");
    let default = bp
        .get("inputs")
        .and_then(|i| i.get(input))
        .and_then(|i| i.get("default"))
        .unwrap_or_else(|| panic!("input {input} has a default"));
    match default {
        Value::String(s) => s.clone(),
        // Numbers and booleans as YAML writes them (JSON's scalars are spelled the same).
        other => other.to_string(),
    }
}

#[test]
fn one_scaling_group_of_compute_and_port() {
    let bp = blueprint();
    let (name, members) = the_group(&bp);
    assert!(
        members.iter().any(|m| is_compute_type(node_type(&bp, m))),
        "group {name} has a compute member: {members:?}"
    );
    assert!(
        members.iter().any(|m| is_port_type(node_type(&bp, m))),
        "group {name} has a port member (each VM gets and frees its own port): {members:?}"
    );
    // The compute node derives from cloudify.nodes.Compute in the plugin; the provider finds it
    // by host_id == id, which every Server instance satisfies.
    assert_eq!(compute_member(&bp), "worker_host");
    assert!(node_templates(&bp).len() >= 2);
}

#[test]
fn scaling_policy_targets_the_group() {
    let bp = blueprint();
    let (group, _) = the_group(&bp);
    let policies: Vec<&Value> = map(&bp, "policies")
        .values()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("cloudify.policies.scaling"))
        .collect();
    assert_eq!(policies.len(), 1, "one cloudify.policies.scaling policy");
    let targets: Vec<&str> = policies[0]
        .get("targets")
        .and_then(Value::as_array)
        .expect("policy targets")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(targets, vec![group.as_str()]);
    // min/max are what the provider enforces (Cloudify itself does not).
    let props = policies[0].get("properties").expect("policy properties");
    for key in ["default_instances", "min_instances", "max_instances"] {
        assert!(props.get(key).is_some(), "policy sets {key}");
    }
    let min: i64 = resolve_input(&bp, &props["min_instances"])
        .parse()
        .expect("min is a number");
    let max: i64 = resolve_input(&bp, &props["max_instances"])
        .parse()
        .expect("max is a number");
    assert!(0 <= min && min <= max, "min {min} <= max {max}");
}

#[test]
fn kubelet_provider_id_matches_default_template() {
    let bp = blueprint();
    let compute = compute_member(&bp);
    // The join runs as an operation of the compute node itself, so `ctx instance id` in the script
    // is the VM node-instance id ({vm_instance}), not the id of some contained node.
    let join = lifecycle_op(&bp, &compute, "poststart");
    let script = string(join, "implementation");
    let inputs = join.get("inputs").expect("join inputs");
    let prefix = as_template(
        inputs
            .get("PROVIDER_ID_PREFIX")
            .expect("PROVIDER_ID_PREFIX input"),
    );

    let body = read(&format!("deploy/cloudify/{script}"));
    assert!(
        body.contains(r#"VM_INSTANCE_ID="$(ctx instance id)""#),
        "{script} takes the VM instance id from ctx"
    );
    assert!(
        body.contains(r#"PROVIDER_ID="${PROVIDER_ID_PREFIX}${VM_INSTANCE_ID}""#),
        "{script} builds the provider id as prefix + VM instance id"
    );
    assert!(
        body.contains("--provider-id=${PROVIDER_ID}"),
        "{script} passes it to kubelet"
    );
    assert_eq!(
        format!("{prefix}{{vm_instance}}"),
        DEFAULT_PROVIDER_ID_TEMPLATE
    );

    // The Node name lands on the VM instance as runtime property `hostname`, which is the
    // provider's default node_name_property.
    assert!(body.contains(r#"ctx instance runtime-properties hostname "$NODE_NAME""#));
    // Real nodes carry the labels the provider puts on its template nodes.
    assert!(body.contains(
        "cloudify.co/deployment=${DEPLOYMENT_ID},cloudify.co/scaling-group=${SCALING_GROUP}"
    ));
    let (group, _) = the_group(&bp);
    assert_eq!(
        inputs.get("SCALING_GROUP").and_then(Value::as_str),
        Some(group.as_str())
    );
    assert_eq!(
        as_template(inputs.get("DEPLOYMENT_ID").expect("DEPLOYMENT_ID input")),
        "{deployment}"
    );
}

#[test]
fn node_object_is_deleted_on_scale_in() {
    let bp = blueprint();
    let compute = compute_member(&bp);
    let stop = lifecycle_op(&bp, &compute, "prestop");
    let script = string(stop, "implementation");
    let body = read(&format!("deploy/cloudify/{script}"));
    assert!(
        body.contains("delete node \"$NODE_NAME\""),
        "{script} runs kubectl delete node"
    );
}

#[test]
fn deployment_label_matches_documented_discovery() {
    let bp = blueprint();
    // The discovery example in docs/configuration.md: cloudify:label=<key>=<value>.
    let doc = read("docs/configuration.md");
    let spec = doc
        .split("cloudify:label=")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c == '"' || c == '`' || c == '\'' || c.is_whitespace())
                .next()
        })
        .expect("docs/configuration.md has a cloudify:label=k=v discovery example");
    let (key, value) = spec.split_once('=').expect("label=key=value");

    let labels = map(&bp, "labels");
    let label = labels
        .get(key)
        .unwrap_or_else(|| panic!("blueprint sets deployment label {key}"));
    let values: Vec<String> = label
        .get("values")
        .and_then(Value::as_array)
        .expect("label values")
        .iter()
        .map(|v| resolve_input(&bp, v))
        .collect();
    assert_eq!(
        values,
        vec![value.to_owned()],
        "label {key} defaults to the documented value"
    );
}
