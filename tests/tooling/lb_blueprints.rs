//! The LB blueprints (issue 23) against the service controller's contract: the example
//! (deploy/cloudify/lb-haproxy.yaml) and the manager tier's test blueprint
//! (tests/manager/blueprints/lb.yaml) declare every input the controller sends (Cloudify refuses a
//! deployment with an undeclared input), publish `ingress` where the controller reads it, and
//! give the node that consumes the inputs `update` and `check_drift`, so a deployment update
//! reconfigures it in place instead of reinstalling it (a reinstall would replace the address).

use std::path::Path;

use autoscaler_cloudify::config::LB_CONTRACT_INPUTS;
use serde_json::Value;

fn blueprint(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The node templates whose properties take contract inputs (`{get_input: ports}`, ...).
fn consumers(bp: &Value) -> Vec<(String, Value)> {
    let nodes = bp["node_templates"].as_object().expect("node_templates");
    nodes
        .iter()
        .filter(|(_, n)| {
            n["properties"]
                .as_object()
                .is_some_and(|p| p.values().any(|v| v["get_input"] == "ports"))
        })
        .map(|(k, n)| (k.clone(), n.clone()))
        .collect()
}

fn check(rel: &str, ingress_in: &str) {
    let bp = blueprint(rel);
    let inputs = bp["inputs"].as_object().expect("inputs");
    for name in LB_CONTRACT_INPUTS {
        assert!(
            inputs.contains_key(name),
            "{rel}: input {name} not declared"
        );
    }
    let ingress = &bp[ingress_in]["ingress"];
    assert!(
        ingress.is_object(),
        "{rel}: no {ingress_in}.ingress for the controller to read"
    );
    let nodes = consumers(&bp);
    assert_eq!(nodes.len(), 1, "{rel}: one node takes the ports: {nodes:?}");
    let (name, node) = &nodes[0];
    let ops = &node["interfaces"]["cloudify.interfaces.lifecycle"];
    for op in ["update", "check_drift"] {
        let implementation = match &ops[op] {
            Value::String(s) => s.clone(),
            v => v["implementation"].as_str().unwrap_or_default().to_owned(),
        };
        assert!(
            !implementation.is_empty(),
            "{rel}: node {name} lacks lifecycle.{op}"
        );
        let script = Path::new(rel)
            .parent()
            .map(|d| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(d)
                    .join(&implementation)
            })
            .expect("dir");
        assert!(script.is_file(), "{rel}: {} missing", script.display());
    }
}

#[test]
fn the_example_haproxy_blueprint_meets_the_contract() {
    check("deploy/cloudify/lb-haproxy.yaml", "outputs");
}

#[test]
fn the_manager_tier_lb_blueprint_meets_the_contract() {
    check("tests/manager/blueprints/lb.yaml", "capabilities");
}
