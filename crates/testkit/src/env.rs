//! The provider suite's environment (tests/provider): a simulator on 127.0.0.1:0 over real HTTP,
//! the provider (gRPC + HTTP) in-process on 127.0.0.1:0, and a tonic client over a real socket,
//! with CA's RPCs as methods of [`Env`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autoscaler_cloudify::app::{App, start};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{Scenario, Simulator, SimulatorHandle, Timing};
use serde_json::Value;
use tonic::transport::Channel;

// What the provider suite's tests use beside the environment (`use testkit::env::*`).
pub use crate::hostile;
pub use crate::reliability::{node, state_of};
pub use crate::sim::{DEMO_PASSWORD, GPU, SimCtl, WORKERS, cloudify_get};
pub use crate::wait::{eventually, until};

/// Test configuration: a long background interval (tests refresh explicitly with
/// [`Env::refresh`]).
pub const TEST_CONFIG: &str = r#"
refresh: {interval: 1h, max_age: 0s}
cloudify:
  - {name: main, url: "{url}", tenant: default_tenant, username: admin, request_timeout: 2s}
node_groups:
  auto_discovery: ["cloudify:label=k8s-cluster=demo"]
  groups:
    "k8s-pool-a/workers":
      price_per_hour: 0.12
      template:
        labels: {node.kubernetes.io/instance-type: m1.large, cloudify.co/gpu-type: none-really}
        taints: [{key: dedicated, value: batch, effect: NoSchedule}]
        capacity: {cpu: "4", memory: 16Gi, ephemeral-storage: 100Gi}
        allocatable: {cpu: 3800m}
      options:
        scale_down_unneeded_time: 20s
        scale_down_utilization_threshold: 0.4
"#;

/// The simulator, the provider in-process before it, and CA's side of both.
pub struct Env {
    /// The simulator (demo password).
    pub sim: SimulatorHandle,
    /// The simulator's control: faults, request log, REST reads.
    pub ctl: SimCtl,
    /// The provider in-process.
    pub app: App,
    /// CA's gRPC client over a real socket.
    pub client: CloudProviderClient<Channel>,
    /// A plain HTTP client (the provider's HTTP port, raw REST calls).
    pub http: reqwest::Client,
}

/// `yaml` (with `{url}` replaced by `url`) as the provider's configuration, demo password.
pub fn config(url: &str, yaml: &str) -> Config {
    config_with_password(url, yaml, "admin")
}

/// [`config`] for a manager whose `CLOUDIFY_PASSWORD` is `password` (a real one).
pub fn config_with_password(url: &str, yaml: &str, password: &str) -> Config {
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), password.to_owned())]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        // Hermetic: never start the node controller against a developer's kubeconfig.
        node_controller: Some(false),
        ..Overrides::default()
    };
    Config::from_yaml(&yaml.replace("{url}", url), &overrides, &env).expect("valid test config")
}

/// The domain's settings of the suite: a short delete batch window, fast scale-in checks.
pub fn settings() -> ServiceSettings {
    ServiceSettings {
        delete_batch_window: Duration::from_millis(300),
        refresh_max_age: Duration::ZERO,
        verify_poll: Duration::from_millis(50),
        ..ServiceSettings::default()
    }
}

/// The simulator serving `scenario` and the provider on `yaml` (see [`config`]) before it.
pub async fn start_with(scenario: Scenario, yaml: &str) -> Env {
    let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    let (app, client) = start_app(&config(&sim.url(), yaml)).await;
    Env {
        app,
        client,
        ctl: SimCtl::with_password(&sim.url(), DEMO_PASSWORD),
        sim,
        http: reqwest::Client::new(),
    }
}

/// The provider in-process on `cfg` with [`settings`], once its first snapshot is in, and a
/// client over a real socket.
pub async fn start_app(cfg: &Config) -> (App, CloudProviderClient<Channel>) {
    let app = start(cfg, settings()).await.expect("provider starts");
    tokio::time::timeout(Duration::from_secs(30), app.inventory.wait_ready())
        .await
        .expect("first snapshot within 30 s");
    let client = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("gRPC connects");
    (app, client)
}

/// Two managers, `east` (the [`Env`]'s simulator) and `west`, discovered by the demo label;
/// `groups` is appended under `node_groups` (per-group settings, or nothing).
pub async fn start_two_managers(
    east: Scenario,
    west: Scenario,
    groups: &str,
) -> (Env, SimulatorHandle) {
    let west = Simulator::start(west, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("second sim");
    let yaml = format!(
        "refresh: {{interval: 1h, max_age: 0s}}\ncloudify:\n  - {{name: east, url: \"{{url}}\"}}\n  \
         - {{name: west, url: \"{}\"}}\nnode_groups:\n  auto_discovery: \
         [\"cloudify:label=k8s-cluster=demo\"]\n{groups}",
        west.url()
    );
    (start_with(east, &yaml).await, west)
}

/// [`start_with`] the demo scenario (instant timing) and [`TEST_CONFIG`].
pub async fn start_default() -> Env {
    start_with(
        Scenario::default_demo()
            .with_timing(Timing::instant())
            .with_seed(7),
        TEST_CONFIG,
    )
    .await
}

impl Env {
    /// The simulator's request log, as JSON.
    pub async fn requests(&self) -> Value {
        self.ctl.requests().await
    }

    /// REST requests the simulator has answered so far.
    pub async fn request_total(&self) -> u64 {
        self.ctl.total().await
    }

    /// Requests of one route so far.
    pub async fn route_count(&self, route: &str) -> u64 {
        self.ctl.route(route).await
    }

    /// Merges `body` (a `/_sim/faults` patch as JSON) into the simulator's faults.
    pub async fn faults(&self, body: Value) {
        self.ctl.faults(body).await;
    }

    /// Back to a healthy simulator.
    pub async fn clear_faults(&self) {
        self.ctl.clear_faults().await;
    }

    /// GET on the simulator's REST API as admin, whatever the status.
    pub async fn cfy_get(&self, path_and_query: &str) -> Value {
        self.ctl.get_any(path_and_query).await
    }

    /// Waits until the simulator has no scale execution left in a non-final state.
    pub async fn wait_executions_done(&self) {
        self.ctl.wait_executions_done(Duration::from_secs(20)).await;
    }

    /// CA's Refresh RPC, then a wait until the background refresh it asked for has finished
    /// (ok or not): the RPC itself never waits on Cloudify (issue #13), and tests read right
    /// after. TEST_CONFIG's `max_age: 0s` makes every Refresh ask for one.
    pub async fn refresh(&mut self) {
        let done = |app: &App| {
            use autoscaler_cloudify::observability::metrics::{RefreshResult, ResultLabels};
            [
                RefreshResult::Ok,
                RefreshResult::Error,
                RefreshResult::Inconsistent,
            ]
            .into_iter()
            .map(|result| {
                app.metrics
                    .refreshes
                    .get_or_create(&ResultLabels { result })
                    .get()
            })
            .sum::<u64>()
        };
        let before = done(&self.app);
        let asked = Instant::now();
        self.client
            .refresh(proto::RefreshRequest {})
            .await
            .expect("refresh");
        let deadline = Instant::now() + Duration::from_secs(20);
        // A snapshot fetched after the call, or a refresh that failed since.
        while self.app.inventory.snapshot().fetched_at < asked
            && !(done(&self.app) > before && self.app.inventory.status().last_error.is_some())
        {
            assert!(
                Instant::now() < deadline,
                "no refresh after the Refresh RPC"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// NodeGroups: every group CA sees.
    pub async fn groups(&mut self) -> Vec<proto::NodeGroup> {
        self.client
            .node_groups(proto::NodeGroupsRequest {})
            .await
            .expect("groups")
            .into_inner()
            .node_groups
    }

    /// NodeGroupTargetSize of `id`.
    pub async fn target(&mut self, id: &str) -> i32 {
        self.client
            .node_group_target_size(proto::NodeGroupTargetSizeRequest { id: id.into() })
            .await
            .expect("target size")
            .into_inner()
            .target_size
    }

    /// NodeGroupNodes of `id`.
    pub async fn nodes(&mut self, id: &str) -> Vec<proto::Instance> {
        self.client
            .node_group_nodes(proto::NodeGroupNodesRequest { id: id.into() })
            .await
            .expect("nodes")
            .into_inner()
            .instances
    }

    /// NodeGroupIncreaseSize of `id` by `delta`.
    pub async fn increase(&mut self, id: &str, delta: i32) -> Result<(), tonic::Status> {
        self.client
            .node_group_increase_size(proto::NodeGroupIncreaseSizeRequest {
                delta,
                id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// NodeGroupDeleteNodes of `id` for these provider ids (each node named as its id).
    pub async fn delete(&mut self, id: &str, provider_ids: &[&str]) -> Result<(), tonic::Status> {
        self.client
            .node_group_delete_nodes(proto::NodeGroupDeleteNodesRequest {
                id: id.into(),
                nodes: provider_ids.iter().map(|p| node(p, p)).collect(),
            })
            .await
            .map(|_| ())
    }

    /// NodeGroupForNode: the id of the group of the node (empty for none).
    pub async fn group_for(&mut self, provider_id: &str, name: &str) -> String {
        self.client
            .node_group_for_node(proto::NodeGroupForNodeRequest {
                node: Some(node(provider_id, name)),
            })
            .await
            .expect("group for node")
            .into_inner()
            .node_group
            .unwrap_or_default()
            .id
    }

    /// Refreshes until every instance of `id` is running and there are `n` of them.
    pub async fn wait_running(&mut self, id: &str, n: usize) -> Vec<proto::Instance> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.refresh().await;
            let list = self.nodes(id).await;
            if list.len() == n && list.iter().all(|i| state_of(i) == 1) {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {n} running: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The provider ids of `id`'s instances once `n` of them are running.
    pub async fn wait_running_ids<C: FromIterator<String>>(&mut self, id: &str, n: usize) -> C {
        self.wait_running(id, n)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// Stops the provider, then the simulator.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
    }
}
