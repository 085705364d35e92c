//! `autoscaler-cloudify demo`: the embedded Cloudify simulator (default scenario) plus the provider
//! on loopback. `--walkthrough` drives a scale-up and a scale-down through CA's own RPCs and logs
//! every step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use prost::Message;

use crate::config::{Config, LogFormat, Overrides};
use crate::observability::init_tracing;
use crate::proto;
use crate::proto::instance_status::InstanceState;
use cloudify_sim::{Scenario, Simulator};

/// The demo's configuration; `{url}` is replaced by the simulator URL.
pub const DEMO_CONFIG: &str = r#"
refresh: {interval: 2s, max_age: 1s}
# A demo is one process on a laptop: never elect on whatever cluster ~/.kube/config points to.
lease: {enabled: false}
cloudify:
  - name: demo
    url: "{url}"
    tenant: default_tenant
    username: admin
    password_env: DEMO_CLOUDIFY_PASSWORD
    request_timeout: 4s
node_groups:
  auto_discovery: ["cloudify:label=k8s-cluster=demo"]
  unbounded_max: 20
  groups:
    "k8s-pool-a/workers":
      price_per_hour: 0.12
      template:
        labels: {node.kubernetes.io/instance-type: m1.large, topology.kubernetes.io/zone: zone-a}
        capacity: {cpu: "4", memory: 16Gi, pods: "110", ephemeral-storage: 100Gi}
        allocatable: {cpu: 3800m, memory: 15Gi}
      options: {scale_down_unneeded_time: 1m}
    "k8s-pool-b/gpu-workers":
      price_per_hour: 0.90
      template:
        labels: {node.kubernetes.io/instance-type: g1.xlarge, topology.kubernetes.io/zone: zone-a, cloudify.co/gpu-type: nvidia-t4}
        taints: [{key: nvidia.com/gpu, value: "present", effect: NoSchedule}]
        capacity: {cpu: "8", memory: 32Gi, pods: "110", ephemeral-storage: 200Gi, nvidia.com/gpu: "1"}
"#;

/// `demo` flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// gRPC listen address (plaintext on loopback).
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8087")]
    pub http_listen: SocketAddr,
    /// Simulator listen address.
    #[arg(long, default_value = "127.0.0.1:8100")]
    pub cloudify_listen: SocketAddr,
    /// Start k8s-pool-a/workers with N instances.
    #[arg(long)]
    pub instances: Option<u64>,
    /// Drive a scale-up then a scale-down and log each step, then exit.
    #[arg(long)]
    pub walkthrough: bool,
    /// Use this configuration file instead of the built-in one (its Cloudify URL and listen
    /// addresses are replaced by the demo's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The demo configuration for a simulator URL (credentials are the simulator's defaults).
pub fn demo_config(
    url: &str,
    file: Option<&str>,
    listen: SocketAddr,
    http_listen: SocketAddr,
) -> Result<Config, crate::config::ConfigError> {
    let text = match file {
        Some(t) => t.to_owned(),
        None => DEMO_CONFIG.replace("{url}", url),
    };
    let env = BTreeMap::from([
        ("DEMO_CLOUDIFY_PASSWORD".to_owned(), "admin".to_owned()),
        ("CLOUDIFY_PASSWORD".to_owned(), "admin".to_owned()),
    ]);
    let overrides = Overrides {
        listen: Some(listen.to_string()),
        http_listen: Some(http_listen.to_string()),
        cloudify_url: file.map(|_| url.to_owned()),
        // The demo's simulated VMs are no cluster's Nodes: never touch a kubeconfig's cluster.
        node_controller: Some(false),
        ..Overrides::default()
    };
    Config::from_yaml(&text, &overrides, &env)
}

pub(super) async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_tracing(args.log_format, "info");
    let mut scenario = Scenario::default_demo();
    if let Some(n) = args.instances {
        scenario = scenario.with_instances(n);
    }
    let sim = Simulator::start(scenario, args.cloudify_listen).await?;
    tracing::info!(url = %sim.url(), "Cloudify simulator started (default demo scenario)");
    let file = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p)?),
        None => None,
    };
    let config = demo_config(&sim.url(), file.as_deref(), args.listen, args.http_listen)?;
    let app = crate::app::start(&config, crate::app::service_settings(&config)).await?;
    if !crate::app::wait_ready(&app.inventory, Duration::from_secs(30)).await {
        return Err("the first inventory refresh did not complete within 30 s".into());
    }
    tracing::info!(grpc = %app.grpc.addr, http = %app.http_addr, "demo ready");
    if !args.walkthrough {
        print_banner(&sim.url(), &app);
    }
    let result = if args.walkthrough {
        walkthrough(app.grpc.addr).await
    } else {
        super::shutdown_signal().await.map_err(Into::into)
    };
    app.shutdown().await;
    sim.shutdown().await;
    result
}

/// What a person who just typed `demo` needs: what runs where, and what to try next, as commands
/// that work from where the demo was started (issue 21): the same binary, on the ports this demo
/// listens on. Plain stdout lines, so they read the same with `--log-format json`.
fn print_banner(sim_url: &str, app: &crate::app::App) {
    let grpc = app.grpc.addr;
    let http = app.http_addr;
    let me = invocation(
        std::env::args_os().next().as_deref(),
        std::env::var_os("CARGO_PKG_NAME").as_deref(),
        std::env::current_exe().ok().as_deref(),
    );
    // `inspect` defaults to 127.0.0.1:8086 and 127.0.0.1:8087; name an address only when this
    // demo listens elsewhere.
    let grpc_flag = if grpc.to_string() == "127.0.0.1:8086" {
        String::new()
    } else {
        format!(" --grpc {grpc}")
    };
    let http_flag = if http.to_string() == "127.0.0.1:8087" {
        String::new()
    } else {
        format!(" --http {http}")
    };
    let snap = app.inventory.snapshot();
    let mut lines = vec![
        String::new(),
        "autoscaler-cloudify demo is running".to_owned(),
        format!(
            "  Cloudify simulator  {sim_url}  (user admin / password admin, tenant default_tenant)"
        ),
        format!(
            "  provider gRPC       {grpc}  (plaintext on loopback; CA's cloud-config: address: \"{grpc}\")"
        ),
        format!(
            "  provider HTTP       http://{http}/healthz  http://{http}/readyz  http://{http}/metrics"
        ),
        format!("  node groups         {}:", snap.groups.len()),
    ];
    for g in &snap.groups {
        lines.push(format!(
            "    {:<28} min {:>2}  max {:>2}  instances {}",
            g.id,
            g.min,
            g.max,
            g.instances.len()
        ));
    }
    lines.extend([
        String::new(),
        "Try, in another shell (from this directory):".to_owned(),
        format!("  {me} inspect groups{grpc_flag}"),
        format!("  {me} inspect nodes k8s-pool-a/workers{grpc_flag}"),
        format!("  {me} inspect node{http_flag}"),
        format!("  curl -s http://{http}/metrics | grep autoscaler_cloudify_"),
        format!(
            "  {me} demo --walkthrough --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --cloudify-listen 127.0.0.1:0"
        ),
        "      (a scripted scale-up and scale-down on its own ports)".to_owned(),
        "Ctrl-C stops the demo.".to_owned(),
        String::new(),
    ]);
    println!("{}", lines.join("\n"));
}

/// How to start this binary again from the directory it was started in: `cargo run --release --`
/// (or `cargo run --`) when cargo ran it from its `target/` directory, the path it was started by
/// when that has a `/`, else its name (it was found on `PATH`).
fn invocation(
    argv0: Option<&std::ffi::OsStr>,
    cargo_package: Option<&std::ffi::OsStr>,
    exe: Option<&std::path::Path>,
) -> String {
    let profile_dir = exe
        .and_then(|p| p.parent())
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str());
    // `cargo run` sets CARGO_PKG_NAME for the program it runs.
    if cargo_package.is_some_and(|p| p == env!("CARGO_PKG_NAME")) {
        match profile_dir {
            Some("release") => return "cargo run --release --".to_owned(),
            Some("debug") => return "cargo run --".to_owned(),
            _ => {}
        }
    }
    match argv0.map(|a| a.to_string_lossy()) {
        Some(path) if path.contains('/') => shell_word(&path),
        _ => env!("CARGO_PKG_NAME").to_owned(),
    }
}

/// `s` as one shell word: as is when it holds nothing the shell would split or expand.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn state_name(i: &proto::Instance) -> &'static str {
    match i.status.as_ref().map(|s| s.instance_state) {
        Some(s) if s == InstanceState::InstanceRunning as i32 => "running",
        Some(s) if s == InstanceState::InstanceCreating as i32 => "creating",
        Some(s) if s == InstanceState::InstanceDeleting as i32 => "deleting",
        _ => "unspecified",
    }
}

/// Drives CA's calls step by step against a running provider.
pub async fn walkthrough(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut c = super::inspect::connect(&addr.to_string(), None, None, None).await?;
    let group = "k8s-pool-a/workers".to_owned();
    let step = |n: u32, what: &str| tracing::info!(step = n, "=== {what}");

    step(1, "CA: Refresh + NodeGroups");
    c.refresh(proto::RefreshRequest {}).await?;
    for g in c
        .node_groups(proto::NodeGroupsRequest {})
        .await?
        .into_inner()
        .node_groups
    {
        tracing::info!(group = %g.id, min = g.min_size, max = g.max_size, "node group: {}", g.debug);
    }

    step(2, "CA: NodeGroupTargetSize + NodeGroupNodes before scaling");
    let nodes = |c: &mut crate::proto::cloud_provider_client::CloudProviderClient<
        tonic::transport::Channel,
    >,
                 id: String| {
        let mut c = c.clone();
        async move {
            Ok::<_, tonic::Status>(
                c.node_group_nodes(proto::NodeGroupNodesRequest { id })
                    .await?
                    .into_inner()
                    .instances,
            )
        }
    };
    let target = |c: &mut crate::proto::cloud_provider_client::CloudProviderClient<
        tonic::transport::Channel,
    >,
                  id: String| {
        let mut c = c.clone();
        async move {
            Ok::<_, tonic::Status>(
                c.node_group_target_size(proto::NodeGroupTargetSizeRequest { id })
                    .await?
                    .into_inner()
                    .target_size,
            )
        }
    };
    let before = nodes(&mut c, group.clone()).await?;
    tracing::info!(
        target = target(&mut c, group.clone()).await?,
        instances = before.len(),
        "{group}"
    );
    for i in &before {
        tracing::info!(instance = %i.id, state = state_name(i), "instance");
    }

    step(
        3,
        "CA: pending pods need 2 more workers -> NodeGroupIncreaseSize(2)",
    );
    let t0 = Instant::now();
    c.node_group_increase_size(proto::NodeGroupIncreaseSizeRequest {
        delta: 2,
        id: group.clone(),
    })
    .await?;
    tracing::info!(
        answered_in_ms = t0.elapsed().as_millis() as u64,
        target = target(&mut c, group.clone()).await?,
        "IncreaseSize answered at once (the target is raised; VMs are created in the background)"
    );

    step(4, "CA loop: Refresh + NodeGroupNodes until the new VMs run");
    let want = before.len() + 2;
    wait_for(&mut c, &group, |list| {
        list.len() == want && list.iter().all(|i| state_name(i) == "running")
    })
    .await?;

    step(
        5,
        "CA: two workers are unneeded -> NodeGroupDeleteNodes (one node per call, in parallel)",
    );
    let after_up = nodes(&mut c, group.clone()).await?;
    let victims: Vec<String> = after_up
        .iter()
        .filter(|i| !before.iter().any(|b| b.id == i.id))
        .map(|i| i.id.clone())
        .collect();
    let calls = victims.iter().map(|id| {
        let mut c = c.clone();
        let req = proto::NodeGroupDeleteNodesRequest {
            id: group.clone(),
            nodes: vec![proto::ExternalGrpcNode {
                provider_id: id.clone(),
                name: id.clone(),
                ..Default::default()
            }],
        };
        async move { c.node_group_delete_nodes(req).await }
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    tracing::info!(
        deleted = ?victims,
        target = target(&mut c, group.clone()).await?,
        "DeleteNodes answered; both calls went out as one Cloudify scale execution naming these instances"
    );

    step(
        6,
        "CA loop: NodeGroupNodes until exactly the named instances are gone",
    );
    wait_for(&mut c, &group, |list| {
        list.len() == before.len() && !list.iter().any(|i| victims.contains(&i.id))
    })
    .await?;

    step(
        7,
        "CA: the control plane belongs to no group; a GPU template for scale-from-zero",
    );
    let cp = c
        .node_group_for_node(proto::NodeGroupForNodeRequest {
            node: Some(proto::ExternalGrpcNode {
                provider_id: "cloudify://default_tenant/k8s-control-plane/control_plane_host_x"
                    .into(),
                name: "k8s-control-plane".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .node_group
        .unwrap_or_default();
    tracing::info!(group = %cp.id, "NodeGroupForNode(control plane) -> empty id = not autoscaled");
    let tpl = c
        .node_group_template_node_info(proto::NodeGroupTemplateNodeInfoRequest {
            id: "k8s-pool-b/gpu-workers".into(),
        })
        .await?
        .into_inner();
    let node = k8s_pb::api::core::v1::Node::decode(tpl.node_bytes.as_slice())?;
    let capacity: Vec<String> = node
        .status
        .iter()
        .flat_map(|s| s.capacity.iter())
        .map(|(k, v)| format!("{k}={}", v.string.clone().unwrap_or_default()))
        .collect();
    tracing::info!(capacity = ?capacity, "template node of k8s-pool-b/gpu-workers");
    tracing::info!("walkthrough complete");
    Ok(())
}

async fn wait_for(
    c: &mut crate::proto::cloud_provider_client::CloudProviderClient<tonic::transport::Channel>,
    group: &str,
    done: impl Fn(&[proto::Instance]) -> bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        c.refresh(proto::RefreshRequest {}).await?;
        let list = c
            .node_group_nodes(proto::NodeGroupNodesRequest {
                id: group.to_owned(),
            })
            .await?
            .into_inner()
            .instances;
        let target = c
            .node_group_target_size(proto::NodeGroupTargetSizeRequest {
                id: group.to_owned(),
            })
            .await?
            .into_inner()
            .target_size;
        let summary: Vec<String> = list
            .iter()
            .map(|i| format!("{}={}", short(&i.id), state_name(i)))
            .collect();
        let line = format!("target={target} {}", summary.join(" "));
        if line != last {
            tracing::info!("{group}: {line}");
            last = line;
        }
        if done(&list) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{group} did not reach the expected state within 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use super::invocation;

    #[test]
    fn the_banner_names_the_binary_as_it_was_started() {
        let debug = Path::new("/src/project/target/debug/autoscaler-cloudify");
        let release = Path::new("/src/project/target/release/autoscaler-cloudify");
        let pkg = Some(OsStr::new("autoscaler-cloudify"));
        let argv0 = Some(OsStr::new("target/release/autoscaler-cloudify"));
        assert_eq!(
            invocation(argv0, pkg, Some(release)),
            "cargo run --release --"
        );
        assert_eq!(invocation(argv0, pkg, Some(debug)), "cargo run --");
        // Not run by cargo: the path it was started by, or its name when found on PATH.
        assert_eq!(
            invocation(argv0, None, Some(release)),
            "target/release/autoscaler-cloudify"
        );
        assert_eq!(
            invocation(Some(OsStr::new("autoscaler-cloudify")), None, None),
            "autoscaler-cloudify"
        );
        assert_eq!(
            invocation(
                Some(OsStr::new("/opt/my tools/autoscaler-cloudify")),
                None,
                None
            ),
            "'/opt/my tools/autoscaler-cloudify'"
        );
        // An installed binary run while another package's cargo variables are set.
        assert_eq!(
            invocation(
                Some(OsStr::new("/usr/local/bin/autoscaler-cloudify")),
                Some(OsStr::new("other")),
                Some(Path::new("/usr/local/bin/autoscaler-cloudify"))
            ),
            "/usr/local/bin/autoscaler-cloudify"
        );
    }
}
