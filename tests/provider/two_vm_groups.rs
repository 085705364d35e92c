//! A scaling group whose group instance holds two VMs (issue 20 item 1): a worker VM that joins
//! Kubernetes and a storage VM beside it, scaled as one unit. Cloudify counts `delta` in group
//! instances, so the provider must too: one Kubernetes Node per group instance (its joining VM),
//! TargetSize == NodeGroupNodes length == group instances, and a DeleteNodes never removes a
//! group instance nobody named.
//!
//! The checks run against any manager: the simulator (`extra_vms`) here, and a real Cloudify
//! Manager holding a deployment of the manager tier's `tests/manager/blueprints/two-vm.yaml`
//! with the `#[ignore]`d tests at the end (`CLOUDIFY_MANAGER_URL` and friends, as
//! `tests/manager/manager.sh env` prints them, plus `TWO_VM_DEPLOYMENT`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::provider_support::{cloudify_get, config_with_password, node, start_app};
use autoscaler_cloudify::app::App;
use autoscaler_cloudify::observability::metrics::{ScaleDirection, ScaleLabels, ScaleResult};
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{DeploymentSpec, GroupSpec, Scenario, Simulator, SimulatorHandle, Timing};
use serde_json::Value;
use tonic::transport::Channel;

/// A manager's REST API, as admin of one tenant.
struct Manager {
    url: String,
    user: String,
    password: String,
    tenant: String,
}

/// A two-VM pool under test: the provider in front of a manager, and that manager's own view.
struct Pool {
    manager: Manager,
    http: reqwest::Client,
    app: App,
    client: CloudProviderClient<Channel>,
    /// The node group id, `<deployment>/<group>`.
    id: String,
    deployment: String,
    /// The joining VM node, then the infrastructure VM node.
    vm_nodes: [String; 2],
    sim: Option<SimulatorHandle>,
}

impl Pool {
    /// The provider (in-process, static group `1:10:<deployment>/<group>` whose `joining_node` is
    /// `vm_nodes[0]`) in front of `manager`.
    async fn start(
        manager: Manager,
        deployment: &str,
        group: &str,
        vm_nodes: [&str; 2],
        sim: Option<SimulatorHandle>,
    ) -> Pool {
        let yaml = format!(
            "refresh: {{interval: 1h, max_age: 0s}}\ncloudify:\n  - {{name: main, url: \"{{url}}\", \
             tenant: {}, username: {}, request_timeout: 10s}}\nnode_groups:\n  static: \
             [\"1:10:{deployment}/{group}\"]\n  groups: {{\"{deployment}/{group}\": \
             {{joining_node: {}}}}}\n",
            manager.tenant, manager.user, vm_nodes[0]
        );
        let cfg = config_with_password(&manager.url, &yaml, &manager.password);
        let (app, client) = start_app(&cfg).await;
        Pool {
            manager,
            http: reqwest::Client::new(),
            app,
            client,
            id: format!("{deployment}/{group}"),
            deployment: deployment.to_owned(),
            vm_nodes: vm_nodes.map(str::to_owned),
            sim,
        }
    }

    async fn rest(&self, path_and_query: &str) -> Value {
        let m = &self.manager;
        let who = (m.user.as_str(), m.password.as_str(), m.tenant.as_str());
        cloudify_get(&self.http, &m.url, who, path_and_query).await
    }

    /// The manager's view: group instance → `(node id, VM instance id)` of its VMs.
    async fn group_instances(&self) -> BTreeMap<String, BTreeSet<(String, String)>> {
        let v = self
            .rest(&format!(
                "/node-instances?deployment_id={}&_include=id,node_id,state,scaling_groups&_size=1000",
                self.deployment
            ))
            .await;
        let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for i in v["items"].as_array().expect("items") {
            let node = i["node_id"].as_str().expect("node_id").to_owned();
            if !self.vm_nodes.contains(&node) || i["state"].as_str() == Some("deleted") {
                continue;
            }
            let gi = i["scaling_groups"][0]["id"]
                .as_str()
                .expect("group instance");
            let id = i["id"].as_str().expect("id").to_owned();
            out.entry(gi.to_owned()).or_default().insert((node, id));
        }
        out
    }

    /// The id the default template renders for a VM instance.
    fn provider_id(&self, vm: &str) -> String {
        format!(
            "cloudify://{}/{}/{vm}",
            self.manager.tenant, self.deployment
        )
    }

    /// The provider id of the VM of node `slot` (0 joining, 1 infrastructure) in `members`.
    fn member(&self, members: &BTreeSet<(String, String)>, slot: usize) -> String {
        let vm = members
            .iter()
            .find(|(n, _)| *n == self.vm_nodes[slot])
            .map(|(_, id)| id.clone())
            .expect("member");
        self.provider_id(&vm)
    }

    async fn nodes(&mut self) -> BTreeSet<String> {
        let r = proto::NodeGroupNodesRequest {
            id: self.id.clone(),
        };
        let list = self.client.node_group_nodes(r).await.expect("nodes");
        list.into_inner()
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    async fn target(&mut self) -> i32 {
        let r = proto::NodeGroupTargetSizeRequest {
            id: self.id.clone(),
        };
        let t = self.client.node_group_target_size(r).await.expect("target");
        t.into_inner().target_size
    }

    async fn delete(&mut self, provider_ids: &[String]) -> Result<(), tonic::Status> {
        let r = proto::NodeGroupDeleteNodesRequest {
            id: self.id.clone(),
            nodes: provider_ids.iter().map(|p| node(p, "")).collect(),
        };
        self.client.node_group_delete_nodes(r).await.map(|_| ())
    }

    async fn group_for(&mut self, provider_id: &str) -> String {
        let r = proto::NodeGroupForNodeRequest {
            node: Some(node(provider_id, "")),
        };
        let answer = self.client.node_group_for_node(r).await.expect("group");
        answer.into_inner().node_group.unwrap_or_default().id
    }

    async fn increase(&mut self, delta: i32) {
        let r = proto::NodeGroupIncreaseSizeRequest {
            delta,
            id: self.id.clone(),
        };
        self.client
            .node_group_increase_size(r)
            .await
            .expect("increase");
    }

    /// Waits until the deployment has no scale execution that has not ended, then refreshes.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self
                .rest(&format!(
                    "/executions?deployment_id={}&workflow_id=scale&_include=id,status&_size=1000",
                    self.deployment
                ))
                .await;
            let busy = v["items"].as_array().is_none_or(|a| {
                a.iter().any(|e| {
                    !matches!(
                        e["status"].as_str(),
                        Some("terminated" | "failed" | "cancelled")
                    )
                })
            });
            if !busy {
                break;
            }
            assert!(Instant::now() < deadline, "executions still running: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.app.inventory.refresh().await.expect("refresh");
    }

    /// Waits until every scale-in this process sent was verified; the mismatch count then.
    async fn verified_mismatches(&self, scale_ins: u64) -> u64 {
        let count = |result: ScaleResult| {
            self.app
                .metrics
                .scale_executions
                .get_or_create(&ScaleLabels {
                    direction: ScaleDirection::Down,
                    result,
                })
                .get()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(ScaleResult::Terminated) + count(ScaleResult::Mismatch) < scale_ins {
            assert!(Instant::now() < deadline, "scale-ins never verified");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.app.metrics.scale_down_mismatches.get()
    }

    async fn shutdown(self) {
        self.app.shutdown().await;
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}

/// Scales the pool out to at least `n` group instances.
async fn at_least(pool: &mut Pool, n: usize) {
    let have = pool.group_instances().await.len();
    if have < n {
        pool.increase(i32::try_from(n - have).expect("small")).await;
        pool.settle().await;
    }
}

/// Check 1: one Node per group instance, the joining VM's; the other VM is no node of the group.
async fn one_node_per_group_instance(pool: &mut Pool) {
    pool.settle().await;
    let cloudify = pool.group_instances().await;
    assert!(cloudify.values().all(|vms| vms.len() == 2), "{cloudify:?}");
    let joining: BTreeSet<String> = cloudify.values().map(|vms| pool.member(vms, 0)).collect();
    assert_eq!(pool.target().await as usize, cloudify.len());
    assert_eq!(
        pool.nodes().await,
        joining,
        "NodeGroupNodes: the joining VM of each group instance"
    );
    let storage = pool.member(cloudify.values().next().expect("one"), 1);
    assert_eq!(pool.group_for(&storage).await, "", "no node of the group");
}

/// Check 2: naming both VMs of a group instance never removes another one.
async fn deleting_both_vms_never_removes_another_group_instance(pool: &mut Pool) {
    at_least(pool, 3).await;
    let before = pool.group_instances().await;
    let (gi, vms) = before.iter().next().expect("a group instance");
    let named = [pool.member(vms, 0), pool.member(vms, 1)];
    // Refused (the storage VM is no node of the group) or accepted: either way, nothing but
    // this group instance may go.
    let _ = pool.delete(&named).await;
    pool.settle().await;
    let after = pool.group_instances().await;
    let others: BTreeSet<&String> = before.keys().filter(|g| *g != gi).collect();
    let kept: BTreeSet<&String> = after.keys().collect();
    assert!(
        others.is_subset(&kept),
        "group instances nobody named were removed: before {before:?}, after {after:?}"
    );
}

/// Check 3: deleting one node removes its group instance (both VMs) and nothing else, and CA's
/// view loses exactly that node.
async fn deleting_one_node_removes_only_its_group_instance(pool: &mut Pool) {
    at_least(pool, 2).await;
    let before = pool.group_instances().await;
    let seen_before = pool.nodes().await;
    let (gi, vms) = before.iter().next().expect("a group instance");
    let worker = pool.member(vms, 0);
    pool.delete(std::slice::from_ref(&worker))
        .await
        .expect("delete");
    pool.settle().await;
    let after = pool.group_instances().await;
    let expected: BTreeSet<&String> = before.keys().filter(|g| *g != gi).collect();
    assert_eq!(after.keys().collect::<BTreeSet<_>>(), expected);
    let mut wanted = seen_before;
    wanted.remove(&worker);
    assert_eq!(
        pool.nodes().await,
        wanted,
        "CA asked for one node to go: exactly that one is gone from its view"
    );
    assert_eq!(pool.target().await as usize, after.len());
    assert_eq!(
        pool.verified_mismatches(1).await,
        0,
        "the storage VM leaving with its group instance is what was asked"
    );
}

/// Deployment `pairs`, group `workers` (`current` group instances), each a `workers_host` VM
/// with its port and a `workers_storage` VM.
fn pairs(current: u64) -> Scenario {
    let mut s = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(11);
    s.deployments = vec![DeploymentSpec {
        id: "pairs".into(),
        tenant: None,
        blueprint_id: None,
        labels: BTreeMap::new(),
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

/// The pool of [`pairs`] in the simulator, `workers_host` joining.
async fn simulated(current: u64) -> Pool {
    let sim = Simulator::start(pairs(current), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let manager = Manager {
        url: sim.url(),
        user: "admin".into(),
        password: "admin".into(),
        tenant: "default_tenant".into(),
    };
    let nodes = ["workers_host", "workers_storage"];
    Pool::start(manager, "pairs", "workers", nodes, Some(sim)).await
}

#[tokio::test]
async fn one_node_per_group_instance_so_target_size_equals_the_nodes_ca_sees() {
    let mut pool = simulated(3).await;
    one_node_per_group_instance(&mut pool).await;
    pool.increase(1).await;
    one_node_per_group_instance(&mut pool).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn deleting_both_vms_of_a_group_instance_never_removes_another_one() {
    let mut pool = simulated(3).await;
    deleting_both_vms_never_removes_another_group_instance(&mut pool).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn deleting_one_node_removes_its_group_instance_and_nothing_ca_did_not_name() {
    let mut pool = simulated(3).await;
    deleting_one_node_removes_only_its_group_instance(&mut pool).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn the_min_check_counts_group_instances() {
    let mut pool = simulated(2).await;
    let nodes: Vec<String> = pool.nodes().await.into_iter().collect();
    let refused = pool.delete(&nodes).await.expect_err("below min 1");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn without_a_joining_node_a_group_of_two_vms_is_left_out_saying_what_to_set() {
    // Cloudify lists a group's members in no particular order (the real manager did), so the
    // provider does not guess which VM is the Node.
    let yaml = "refresh: {interval: 1h, max_age: 0s}\ncloudify: [{name: main, url: \"{url}\"}]\n\
                node_groups: {static: [\"1:10:pairs/workers\"]}\n";
    let mut env = crate::provider_support::start_with(pairs(2), yaml).await;
    let groups = env.groups().await;
    assert!(groups.is_empty(), "{groups:?}");
    let snap = env.app.inventory.snapshot();
    let refused = snap.refused_groups();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].reason.contains("joining_node"),
        "{:?}",
        refused[0]
    );
    env.shutdown().await;
}

/// A real manager from the environment (`tests/manager/manager.sh env`), holding deployment
/// `TWO_VM_DEPLOYMENT` of `two-vm.yaml` (group `workers`: `worker_host` joins, `storage_host`
/// is its infrastructure).
async fn real_manager() -> Pool {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let manager = Manager {
        url: var("CLOUDIFY_MANAGER_URL"),
        user: var("CLOUDIFY_MANAGER_USER"),
        password: var("CLOUDIFY_MANAGER_PASSWORD"),
        tenant: var("CLOUDIFY_MANAGER_TENANT"),
    };
    let deployment = var("TWO_VM_DEPLOYMENT");
    let nodes = ["worker_host", "storage_host"];
    Pool::start(manager, &deployment, "workers", nodes, None).await
}

#[tokio::test]
#[ignore = "needs a real Cloudify Manager with a two-vm.yaml deployment (tests/manager)"]
async fn real_manager_one_node_per_group_instance() {
    let mut pool = real_manager().await;
    one_node_per_group_instance(&mut pool).await;
    pool.shutdown().await;
}

#[tokio::test]
#[ignore = "needs a real Cloudify Manager with a two-vm.yaml deployment it may scale (tests/manager)"]
async fn real_manager_deletions_remove_only_the_named_group_instances() {
    let mut pool = real_manager().await;
    deleting_one_node_removes_only_its_group_instance(&mut pool).await;
    deleting_both_vms_never_removes_another_group_instance(&mut pool).await;
    pool.shutdown().await;
}
