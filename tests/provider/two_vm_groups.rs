//! A scaling group whose group instance holds two VMs (issue 20 item 1): a worker VM that joins
//! Kubernetes and a storage VM beside it, scaled as one unit, as the manager tier's
//! `two-vm.yaml` blueprint. Cloudify counts `delta` in group instances, so the provider must too:
//! one Kubernetes Node per group instance (its joining VM), TargetSize == NodeGroupNodes length
//! == group instances, and a DeleteNodes never removes a group instance nobody named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::provider_support::*;
use cloudify_sim::{DeploymentSpec, GroupSpec, Scenario, Timing};

const PAIRS: &str = "pairs/workers";

const YAML: &str = r#"
refresh: {interval: 1h, max_age: 0s}
cloudify:
  - {name: main, url: "{url}", tenant: default_tenant, username: admin, request_timeout: 2s}
node_groups:
  auto_discovery: ["cloudify:label=k8s-cluster=pairs"]
"#;

/// Deployment `pairs`, group `workers` (min 1, max 10, `current` group instances), each a
/// `workers_host` VM with its port and a `workers_storage` VM.
fn scenario(current: u64) -> Scenario {
    let mut s = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(11);
    s.deployments = vec![DeploymentSpec {
        id: "pairs".into(),
        tenant: None,
        blueprint_id: None,
        labels: [(
            "k8s-cluster".to_owned(),
            cloudify_sim::LabelValues::One("pairs".into()),
        )]
        .into(),
        scaling_groups: vec![GroupSpec {
            name: "workers".into(),
            extra_vms: vec!["storage".into()],
            min: 1,
            max: 10,
            current,
            default: None,
        }],
        standalone_vms: 0,
        standalone_node: "control_plane_host".into(),
    }];
    s
}

/// Cloudify's view: group instance → `(node id, VM instance id)` of its VMs.
async fn group_instances(env: &Env) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let v = env
        .cfy_get(
            "/node-instances?deployment_id=pairs&_include=id,node_id,scaling_groups&_size=1000",
        )
        .await;
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for i in v["items"].as_array().expect("items") {
        let node = i["node_id"].as_str().expect("node_id");
        if node == "workers_port" {
            continue;
        }
        let gi = i["scaling_groups"][0]["id"]
            .as_str()
            .expect("group instance");
        out.entry(gi.to_owned())
            .or_default()
            .insert((node.to_owned(), i["id"].as_str().expect("id").to_owned()));
    }
    out
}

/// The provider id the default template renders for a VM instance.
fn provider_id(vm: &str) -> String {
    format!("cloudify://default_tenant/pairs/{vm}")
}

/// The VM of `node` in a group instance.
fn vm_of(members: &BTreeSet<(String, String)>, node: &str) -> String {
    members
        .iter()
        .find(|(n, _)| n == node)
        .map(|(_, id)| id.clone())
        .expect("member")
}

/// Waits until every scale-in this process sent was verified; the mismatch count then.
async fn verified_mismatches(env: &Env, scale_ins: u64) -> u64 {
    use autoscaler_cloudify::observability::metrics::ScaleLabels;
    let count = |result: &str| {
        env.app
            .metrics
            .scale_executions
            .get_or_create(&ScaleLabels {
                direction: "down".into(),
                result: result.into(),
            })
            .get()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("terminated") + count("mismatch") < scale_ins {
        assert!(Instant::now() < deadline, "scale-ins never verified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.app.metrics.scale_down_mismatches.get()
}

#[tokio::test]
async fn one_node_per_group_instance_so_target_size_equals_the_nodes_ca_sees() {
    let mut env = start_with(scenario(3), YAML).await;
    let cloudify = group_instances(&env).await;
    assert_eq!(cloudify.len(), 3);
    assert!(cloudify.values().all(|vms| vms.len() == 2), "{cloudify:?}");
    let nodes = env.nodes(PAIRS).await;
    assert_eq!(env.target(PAIRS).await, 3);
    assert_eq!(
        nodes.len(),
        3,
        "NodeGroupNodes lists one node per group instance: {nodes:?}"
    );
    // Each is the group instance's worker VM (the first Compute member), never its storage VM.
    let workers: BTreeSet<String> = cloudify
        .values()
        .map(|vms| provider_id(&vm_of(vms, "workers_host")))
        .collect();
    let listed: BTreeSet<String> = nodes.into_iter().map(|n| n.id).collect();
    assert_eq!(listed, workers);
    let storage = provider_id(&vm_of(
        cloudify.values().next().expect("one"),
        "workers_storage",
    ));
    assert_eq!(
        env.group_for(&storage, "").await,
        "",
        "the storage VM is no Kubernetes node of the group"
    );
    env.increase(PAIRS, 1).await.expect("increase");
    env.wait_executions_done().await;
    let after = env.wait_running(PAIRS, 4).await;
    assert_eq!(env.target(PAIRS).await, 4);
    assert_eq!(after.len(), group_instances(&env).await.len());
    env.shutdown().await;
}

#[tokio::test]
async fn deleting_both_vms_of_a_group_instance_never_removes_another_one() {
    let mut env = start_with(scenario(3), YAML).await;
    let before = group_instances(&env).await;
    let (gi, vms) = before.iter().next().expect("a group instance");
    let named = [
        provider_id(&vm_of(vms, "workers_host")),
        provider_id(&vm_of(vms, "workers_storage")),
    ];
    let refs: Vec<&str> = named.iter().map(String::as_str).collect();
    // Refused (the storage VM is no node of the group) or accepted: either way, nothing but
    // this group instance may go.
    let _ = env.delete(PAIRS, &refs).await;
    env.wait_executions_done().await;
    let after = group_instances(&env).await;
    let others: BTreeSet<&String> = before.keys().filter(|g| *g != gi).collect();
    let kept: BTreeSet<&String> = after.keys().collect();
    assert!(
        others.is_subset(&kept),
        "group instances nobody named were removed: before {before:?}, after {after:?}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn deleting_one_node_removes_its_group_instance_and_nothing_ca_did_not_name() {
    let mut env = start_with(scenario(3), YAML).await;
    let before = group_instances(&env).await;
    let seen_before: BTreeSet<String> = env.nodes(PAIRS).await.into_iter().map(|n| n.id).collect();
    let (gi, vms) = before.iter().next().expect("a group instance");
    let worker = provider_id(&vm_of(vms, "workers_host"));
    env.delete(PAIRS, &[&worker]).await.expect("delete");
    env.wait_executions_done().await;
    let after = group_instances(&env).await;
    let expected: BTreeSet<&String> = before.keys().filter(|g| *g != gi).collect();
    assert_eq!(after.keys().collect::<BTreeSet<_>>(), expected);
    env.refresh().await;
    let seen_after: BTreeSet<String> = env.nodes(PAIRS).await.into_iter().map(|n| n.id).collect();
    let mut wanted = seen_before.clone();
    wanted.remove(&worker);
    assert_eq!(
        seen_after, wanted,
        "CA asked for one node to go: exactly that one is gone from its view"
    );
    assert_eq!(env.target(PAIRS).await, 2);
    assert_eq!(
        verified_mismatches(&env, 1).await,
        0,
        "the storage VM leaving with its group instance is what was asked"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn the_min_check_counts_group_instances() {
    let mut env = start_with(scenario(2), YAML).await;
    let nodes: Vec<String> = env.nodes(PAIRS).await.into_iter().map(|n| n.id).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let refused = env.delete(PAIRS, &refs).await.expect_err("below min 1");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(env.route_count("POST /api/v3.1/executions").await, 0);
    env.shutdown().await;
}
