//! The load test: plays Cluster Autoscaler's call mix for one loop against the real
//! `autoscaler-cloudify serve` binary and the in-process Cloudify simulator, and reports latency
//! per RPC, throughput, server CPU per loop and the simulator's REST calls per loop (issue #8).
//!
//! One CA loop, as CA 1.36's `core/static_autoscaler.go` `RunOnce` makes it: `Refresh`, `NodeGroups`, one
//! `NodeGroupForNode` per node (CA caches known nodes' answers for the loop) plus repeats for the
//! nodes of no group (CA never caches "no group"), `NodeGroupTargetSize` several times per group
//! and `NodeGroupNodes` once per group. The calls after `Refresh` are spread over several HTTP/2
//! connections with a few calls in flight on each.
//!
//! The provider runs as a separate process so its CPU time can be read from
//! `/proc/<pid>/stat`; the simulator runs inside this process and counts REST calls
//! (`GET /_sim/requests`). `--throughput-secs` adds a saturation run comparing `NodeGroupForNode`
//! with the no-op `GPULabel` on the same server.
//!
//! This file is the bench target `loadtest` (`benches/loadtest/main.rs` parses the flags) and is
//! included by `tests/tooling/loadtest_smoke.rs`, which runs `--quick` in-process:
//!
//! `--refresh-loops` adds the Refresh phase (issue #13, [`refresh`]): CA's loop against a provider
//! with a production-like refresh configuration while the simulated manager is healthy, down,
//! slow (2 s per call) and failing 30 % of calls; it reports the Refresh latency and the snapshot
//! age CA sees at each Refresh.
//!
//! ```text
//! cargo bench --bench loadtest -- --nodes 1000,5000,20000 --loops 10 --throughput-secs 6
//! cargo test --test tooling loadtest_smoke::
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{
    DeploymentSpec, GroupSpec, LabelValues, Scenario, Simulator, SimulatorHandle, Timing,
};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::procfs::{ProcStats, cpu_ms};

// The Refresh phase (issue #13); beside this file, so the smoke test's include finds it too.
#[path = "refresh.rs"]
mod refresh;

/// What the load test's steps fail with (any error ends the run).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Command-line flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "loadtest",
    about = "Plays CA's call mix against autoscaler-cloudify"
)]
pub struct Args {
    /// Node counts to test (comma-separated); the nodes are spread over `--groups` groups.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    nodes: Vec<usize>,
    /// Node groups (one Cloudify deployment with one scaling group each).
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Measured CA loops per node count (after one warm-up loop).
    #[arg(long, default_value_t = 10)]
    loops: usize,
    /// HTTP/2 connections to the provider.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Nodes of no group (control plane, other providers) in the cluster.
    #[arg(long, default_value_t = 3)]
    unmanaged: usize,
    /// NodeGroupForNode calls per unmanaged node per loop.
    #[arg(long, default_value_t = 6)]
    unmanaged_repeats: usize,
    /// NodeGroupTargetSize calls per group per loop.
    #[arg(long, default_value_t = 3)]
    target_size_per_group: usize,
    /// After the loops, saturate the server with NodeGroupForNode and with GPULabel for this many
    /// seconds in total (alternating rounds) and report both rates. 0 = skip.
    #[arg(long, default_value_t = 0.0)]
    throughput_secs: f64,
    /// Node counts for an extra throughput-only run (no CA loops), e.g. 100000.
    #[arg(long, value_delimiter = ',')]
    throughput_only_nodes: Vec<usize>,
    /// The provider binary (default: the one Cargo built with this target).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Small and fast: 200 and 800 nodes in 10 groups, 3 loops (used by tests/tooling/loadtest_smoke.rs).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Set by `cargo bench`; without it (`cargo test --benches`) the run is skipped.
    #[arg(long, hide = true)]
    #[allow(dead_code)] // read by main.rs; the smoke test includes this file without it
    pub bench: bool,
    /// CA loops per manager condition in the Refresh phase (0 = skip it).
    #[arg(long, default_value_t = 20)]
    pub refresh_loops: usize,
    /// Period of CA's loop in the Refresh phase (CA's default `--scan-interval` is 10 s; shorter
    /// here to keep the run short, with the refresh interval scaled alike).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh_ca_period: Duration,
    /// `refresh.interval` of the provider in the Refresh phase (`max_age` is half of it).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
}

/// Latency summary of one RPC.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    calls: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Results at one node count.
#[derive(Debug, Clone, Serialize, Default)]
struct RunReport {
    nodes: usize,
    groups: usize,
    loops: usize,
    connections: usize,
    in_flight: usize,
    /// gRPC calls per loop.
    calls_per_loop: usize,
    /// Latency per RPC over all measured loops.
    latency: BTreeMap<String, Latency>,
    /// Calls per second during the read phase (everything after Refresh).
    read_phase_calls_per_sec: f64,
    /// Mean wall time of one loop.
    loop_wall_ms: f64,
    /// Mean server CPU time (user + system) per loop, and its parts.
    server_cpu_ms_per_loop: f64,
    server_cpu_ms_refresh: f64,
    server_cpu_ms_read_phase: f64,
    /// Simulator REST calls per loop (each loop), and those during the read phases (total).
    rest_calls_per_loop: Vec<u64>,
    rest_calls_read_path: u64,
    rest_routes_per_loop: BTreeMap<String, f64>,
    /// Server memory after the loops.
    server_rss_kib: u64,
    server_hwm_kib: u64,
    /// Saturation: calls per second for each RPC, and the ratio.
    throughput: Option<Throughput>,
    /// The Refresh phase, one entry per manager condition.
    refresh_conditions: Vec<refresh::ConditionReport>,
}

/// Saturation comparison on one server.
#[derive(Debug, Clone, Serialize)]
struct Throughput {
    seconds: f64,
    connections: usize,
    in_flight: usize,
    node_group_for_node_per_sec: f64,
    gpu_label_per_sec: f64,
    ratio: f64,
    /// Server CPU (user + system) per call: the server's own cost, without this client's.
    node_group_for_node_server_cpu_us: f64,
    gpu_label_server_cpu_us: f64,
}

impl Args {
    /// `--quick` replaces the sizes with small ones (what the smoke test runs).
    pub fn resolved(mut self) -> Args {
        if self.quick {
            self.nodes = vec![200, 800];
            self.groups = 10;
            self.loops = 3;
            self.connections = 2;
            self.in_flight = 2;
            self.refresh_loops = self.refresh_loops.min(3);
            self.refresh_ca_period = Duration::from_millis(300);
            self.refresh_interval = Duration::from_millis(600);
        }
        self
    }
}

/// Runs every configured node count and prints (and optionally writes) the reports.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let args = args.resolved();
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_autoscaler-cloudify")));
    let mut reports = Vec::new();
    for &n in &args.nodes {
        let report = run_one(&args, &server_bin, n, true).await?;
        print_report(&report);
        reports.push(report);
    }
    for &n in &args.throughput_only_nodes {
        let report = run_one(&args, &server_bin, n, false).await?;
        print_report(&report);
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    Ok(())
}

/// The scenario: `groups` deployments labelled `k8s-cluster=load`, one scaling group each, the
/// nodes spread evenly, plus a control plane with the unmanaged VMs.
fn scenario(nodes: usize, groups: usize, unmanaged: usize) -> Scenario {
    let per = nodes / groups;
    let extra = nodes % groups;
    let labels = BTreeMap::from([("k8s-cluster".to_string(), LabelValues::One("load".into()))]);
    let mut deployments: Vec<DeploymentSpec> = (0..groups)
        .map(|g| DeploymentSpec {
            id: format!("pool-{g:03}"),
            tenant: None,
            blueprint_id: None,
            labels: labels.clone(),
            scaling_groups: vec![GroupSpec {
                name: "workers".into(),
                extra_vms: Vec::new(),
                min: 0,
                max: -1,
                current: (per + usize::from(g < extra)) as u64,
                default: None,
            }],
            standalone_vms: 0,
            standalone_node: "control_plane_host".into(),
        })
        .collect();
    deployments.push(DeploymentSpec {
        id: "k8s-control-plane".into(),
        tenant: None,
        blueprint_id: None,
        labels,
        scaling_groups: Vec::new(),
        standalone_vms: unmanaged as u64,
        standalone_node: "control_plane_host".into(),
    });
    let mut s = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(8);
    s.deployments = deployments;
    s
}

fn free_port() -> Result<SocketAddr, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The provider's configuration. `refresh` is the refresh block: for the CA loops
/// `{interval: 1h, max_age: 0s}`, so every Refresh asks for exactly one refresh and none happens
/// otherwise (REST calls per loop are exact).
fn provider_config(sim: &str, grpc: SocketAddr, http: SocketAddr, refresh: &str) -> String {
    format!(
        r#"grpc: {{listen: "{grpc}"}}
http: {{listen: "{http}"}}
log: {{format: text, level: warn}}
refresh: {refresh}
lease: {{enabled: false}}
cloudify:
  - name: main
    url: "{sim}"
    tenant: default_tenant
    username: admin
    password_env: LOADTEST_CLOUDIFY_PASSWORD
    request_timeout: 60s
node_groups:
  auto_discovery: ["cloudify:label=k8s-cluster=load"]
  unbounded_max: 3000
"#
    )
}

/// A started provider process; killed (by its own pid) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &PathBuf, sim: &SimulatorHandle, refresh: &str) -> Result<Server, BoxError> {
    let grpc = free_port()?;
    let http = free_port()?;
    let dir = tempfile::Builder::new().prefix("loadtest-").tempdir()?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, provider_config(&sim.url(), grpc, http, refresh))?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("LOADTEST_CLOUDIFY_PASSWORD", "admin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok(Server {
        child,
        addr: grpc,
        http,
        _dir: dir,
    })
}

async fn connect(addr: SocketAddr, deadline: Duration) -> Result<Channel, BoxError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let start = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!("provider at {addr} not reachable: {e}").into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The simulator's request counts (`/_sim/*` is never counted).
async fn rest_counts(
    http: &reqwest::Client,
    sim: &str,
) -> Result<(u64, BTreeMap<String, u64>), BoxError> {
    let v: serde_json::Value = http
        .get(format!("{sim}/_sim/requests"))
        .send()
        .await?
        .json()
        .await?;
    let total = v
        .get("total")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let routes = v
        .get("routes")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Ok((total, routes))
}

/// One call of the read phase.
#[derive(Debug, Clone)]
enum Call {
    ForNode { provider_id: String, name: String },
    TargetSize(String),
    Nodes(String),
}

impl Call {
    fn rpc(&self) -> &'static str {
        match self {
            Call::ForNode { .. } => "NodeGroupForNode",
            Call::TargetSize(_) => "NodeGroupTargetSize",
            Call::Nodes(_) => "NodeGroupNodes",
        }
    }
}

/// CA's question for one node, as its externalgrpc client sends it.
fn for_node_request(provider_id: &str, name: &str) -> proto::NodeGroupForNodeRequest {
    proto::NodeGroupForNodeRequest {
        node: Some(proto::ExternalGrpcNode {
            provider_id: provider_id.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }),
    }
}

async fn invoke(client: &mut CloudProviderClient<Channel>, call: &Call) -> Result<(), BoxError> {
    match call {
        Call::ForNode { provider_id, name } => {
            client
                .node_group_for_node(for_node_request(provider_id, name))
                .await?;
        }
        Call::TargetSize(id) => {
            client
                .node_group_target_size(proto::NodeGroupTargetSizeRequest { id: id.clone() })
                .await?;
        }
        Call::Nodes(id) => {
            client
                .node_group_nodes(proto::NodeGroupNodesRequest { id: id.clone() })
                .await?;
        }
    }
    Ok(())
}

/// Runs `calls` over `channels` with `in_flight` sequential workers per channel; returns the
/// latency of each call, in microseconds, keyed by RPC.
async fn run_calls(
    channels: &[Channel],
    in_flight: usize,
    calls: Arc<Vec<Call>>,
) -> Result<BTreeMap<&'static str, Vec<f64>>, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for ch in channels {
        for _ in 0..in_flight.max(1) {
            let mut client = CloudProviderClient::new(ch.clone());
            let calls = Arc::clone(&calls);
            let next = Arc::clone(&next);
            tasks.push(tokio::spawn(async move {
                let mut out: Vec<(&'static str, f64)> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(call) = calls.get(i) else { break };
                    let t = Instant::now();
                    invoke(&mut client, call).await?;
                    out.push((call.rpc(), t.elapsed().as_secs_f64() * 1e6));
                }
                Ok::<_, BoxError>(out)
            }));
        }
    }
    let mut by_rpc: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for t in tasks {
        for (rpc, us) in t.await?? {
            by_rpc.entry(rpc).or_default().push(us);
        }
    }
    Ok(by_rpc)
}

fn summarize(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    Latency {
        calls: v.len(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        max_us: pick(1.0),
    }
}

async fn run_one(args: &Args, bin: &PathBuf, n: usize, loops: bool) -> Result<RunReport, BoxError> {
    eprintln!(
        "== {n} nodes in {} groups: starting simulator and provider",
        args.groups
    );
    let sim = Simulator::start(
        scenario(n, args.groups, args.unmanaged),
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let sim_url = sim.url();
    let server = start_server(bin, &sim, "{interval: 1h, max_age: 0s}")?;
    let pid = server.child.id();
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connect(server.addr, Duration::from_secs(30)).await?);
    }
    let mut client = CloudProviderClient::new(channels[0].clone());
    let http = reqwest::Client::new();

    // Ready = the first refresh found every group.
    let started = Instant::now();
    let groups: Vec<String> = loop {
        let mut req = tonic::Request::new(proto::RefreshRequest {});
        req.set_timeout(Duration::from_secs(60));
        if client.refresh(req).await.is_ok() {
            let g = client
                .node_groups(proto::NodeGroupsRequest {})
                .await?
                .into_inner()
                .node_groups;
            if g.len() == args.groups {
                break g.into_iter().map(|g| g.id).collect();
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("provider did not load every group within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every node as CA knows it: provider id (= instance id) and node name.
    let mut nodes: Vec<(String, String)> = Vec::with_capacity(n);
    for g in &groups {
        let instances = client
            .node_group_nodes(proto::NodeGroupNodesRequest { id: g.clone() })
            .await?
            .into_inner()
            .instances;
        for i in instances {
            let vm = i.id.rsplit('/').next().unwrap_or_default().to_owned();
            let dep = g.split('/').next().unwrap_or_default();
            nodes.push((
                i.id,
                format!("{dep}-{}", vm.replace('_', "-")).to_lowercase(),
            ));
        }
    }
    if nodes.len() != n {
        return Err(format!("provider reports {} instances, expected {n}", nodes.len()).into());
    }

    let mut report = RunReport {
        nodes: n,
        groups: args.groups,
        connections: channels.len(),
        in_flight: args.in_flight,
        ..RunReport::default()
    };

    if loops {
        ca_loops(
            args,
            &mut report,
            &mut client,
            &channels,
            &http,
            &sim_url,
            pid,
            server.http,
            &groups,
            &nodes,
        )
        .await?;
    }
    if args.throughput_secs > 0.0 {
        report.throughput = Some(throughput(args, &channels, &nodes, pid).await?);
    }
    let memory = ProcStats::of(pid);
    report.server_rss_kib = memory.rss_kib;
    report.server_hwm_kib = memory.hwm_kib;
    drop(server);
    if loops && args.refresh_loops > 0 {
        report.refresh_conditions = refresh::run(args, bin, &sim, &groups).await?;
    }
    sim.shutdown().await;
    Ok(report)
}

/// Plays `args.loops` CA loops (after one warm-up loop) and fills the loop figures.
#[allow(clippy::too_many_arguments)]
async fn ca_loops(
    args: &Args,
    report: &mut RunReport,
    client: &mut CloudProviderClient<Channel>,
    channels: &[Channel],
    http: &reqwest::Client,
    sim_url: &str,
    pid: u32,
    server_http: SocketAddr,
    groups: &[String],
    nodes: &[(String, String)],
) -> Result<(), BoxError> {
    // The read phase of one loop, in a fixed interleaved order.
    let mut calls: Vec<Call> = Vec::new();
    for (provider_id, name) in nodes {
        calls.push(Call::ForNode {
            provider_id: provider_id.clone(),
            name: name.clone(),
        });
    }
    for r in 0..args.unmanaged_repeats {
        for u in 0..args.unmanaged {
            // The control plane (ours, but in no group) and a node of another provider.
            let (pid_, name) = if u % 2 == 0 {
                (
                    format!("cloudify://default_tenant/k8s-control-plane/control_plane_host_cp{u}"),
                    format!("k8s-control-plane-cp{u}"),
                )
            } else {
                (
                    format!("aws:///us-east-1a/i-0{u:016x}"),
                    format!("ip-10-200-0-{u}"),
                )
            };
            let _ = r;
            calls.push(Call::ForNode {
                provider_id: pid_,
                name,
            });
        }
    }
    for g in groups {
        for _ in 0..args.target_size_per_group {
            calls.push(Call::TargetSize(g.clone()));
        }
        calls.push(Call::Nodes(g.clone()));
    }
    let calls = Arc::new(calls);
    report.calls_per_loop = calls.len() + 2;

    let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut loop_wall = 0.0;
    let mut read_wall = 0.0;
    let mut read_calls = 0usize;
    let (mut cpu_total, mut cpu_refresh) = (0.0, 0.0);
    let mut route_totals: BTreeMap<String, u64> = BTreeMap::new();
    for l in 0..=args.loops {
        let measured = l > 0;
        let (rest0, routes0) = rest_counts(http, sim_url).await?;
        let cpu0 = cpu_ms(pid)?;
        let t0 = Instant::now();

        let mut req = tonic::Request::new(proto::RefreshRequest {});
        req.set_timeout(Duration::from_secs(60));
        client.refresh(req).await?;
        let refresh_us = t0.elapsed().as_secs_f64() * 1e6;
        // Refresh only asks the background refresher (issue #13): wait for the snapshot it
        // builds, so the read phase below sees this loop's data and the REST calls stay apart.
        refresh::wait_rebuilt(http, server_http, t0).await?;
        let rebuild_us = t0.elapsed().as_secs_f64() * 1e6;
        let cpu1 = cpu_ms(pid)?;
        let (rest1, _) = rest_counts(http, sim_url).await?;

        let t1 = Instant::now();
        client.node_groups(proto::NodeGroupsRequest {}).await?;
        let node_groups_us = t1.elapsed().as_secs_f64() * 1e6;
        let by_rpc = run_calls(channels, args.in_flight, Arc::clone(&calls)).await?;
        let read_elapsed = t1.elapsed().as_secs_f64();
        let wall = t0.elapsed().as_secs_f64();
        let cpu2 = cpu_ms(pid)?;
        let (rest2, routes2) = rest_counts(http, sim_url).await?;
        if !measured {
            continue;
        }
        latencies
            .entry("Refresh".into())
            .or_default()
            .push(refresh_us);
        latencies
            .entry("(snapshot rebuilt)".into())
            .or_default()
            .push(rebuild_us);
        latencies
            .entry("NodeGroups".into())
            .or_default()
            .push(node_groups_us);
        for (rpc, v) in by_rpc {
            latencies.entry(rpc.into()).or_default().extend(v);
        }
        loop_wall += wall;
        read_wall += read_elapsed;
        read_calls += calls.len() + 1;
        cpu_total += cpu2 - cpu0;
        cpu_refresh += cpu1 - cpu0;
        report.rest_calls_per_loop.push(rest2 - rest0);
        report.rest_calls_read_path += rest2 - rest1;
        for (route, c) in routes2 {
            let before = routes0.get(&route).copied().unwrap_or(0);
            *route_totals.entry(route).or_default() += c - before;
        }
    }
    let loops = args.loops.max(1) as f64;
    report.loops = args.loops;
    report.latency = latencies
        .into_iter()
        .map(|(k, v)| (k, summarize(v)))
        .collect();
    report.loop_wall_ms = loop_wall * 1000.0 / loops;
    report.read_phase_calls_per_sec = read_calls as f64 / read_wall.max(1e-9);
    report.server_cpu_ms_per_loop = cpu_total / loops;
    report.server_cpu_ms_refresh = cpu_refresh / loops;
    report.server_cpu_ms_read_phase = (cpu_total - cpu_refresh) / loops;
    report.rest_routes_per_loop = route_totals
        .into_iter()
        .map(|(k, v)| (k, v as f64 / loops))
        .collect();
    Ok(())
}

/// Saturates the server with one RPC for `secs`, `in_flight` workers per connection.
async fn saturate(
    channels: &[Channel],
    in_flight: usize,
    secs: f64,
    rpc: &str,
    nodes: &Arc<Vec<(String, String)>>,
) -> Result<f64, BoxError> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        for w in 0..in_flight.max(1) {
            let mut client = CloudProviderClient::new(ch.clone());
            let done = Arc::clone(&done);
            let nodes = Arc::clone(nodes);
            let for_node = rpc == "NodeGroupForNode";
            let mut i = (c * 7919 + w * 104_729) % nodes.len().max(1);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if for_node {
                        let (provider_id, name) = &nodes[i % nodes.len()];
                        i = i.wrapping_add(7);
                        client
                            .node_group_for_node(for_node_request(provider_id, name))
                            .await?;
                    } else {
                        client.gpu_label(proto::GpuLabelRequest {}).await?;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, BoxError>(())
            }));
        }
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Alternating rounds of NodeGroupForNode and GPULabel (so drift in the shared machine's load
/// hits both alike); the rates are the means over rounds.
async fn throughput(
    args: &Args,
    channels: &[Channel],
    nodes: &[(String, String)],
    pid: u32,
) -> Result<Throughput, BoxError> {
    let nodes = Arc::new(nodes.to_vec());
    let rounds = 3;
    let per = args.throughput_secs / (2.0 * rounds as f64);
    // Warm-up of both paths.
    saturate(channels, args.in_flight, 0.3, "GPULabel", &nodes).await?;
    saturate(channels, args.in_flight, 0.3, "NodeGroupForNode", &nodes).await?;
    // Per RPC: summed rate over rounds, server CPU ms and calls (for CPU per call).
    let (mut f, mut g) = (0.0, 0.0);
    let (mut f_cpu, mut g_cpu, mut f_calls, mut g_calls) = (0.0, 0.0, 0.0, 0.0);
    for r in 0..rounds {
        // Alternate which goes first.
        for for_node in [r % 2 == 0, r % 2 != 0] {
            let rpc = if for_node {
                "NodeGroupForNode"
            } else {
                "GPULabel"
            };
            let cpu0 = cpu_ms(pid)?;
            let rate = saturate(channels, args.in_flight, per, rpc, &nodes).await?;
            let cpu = cpu_ms(pid)? - cpu0;
            if for_node {
                f += rate;
                f_cpu += cpu;
                f_calls += rate * per;
            } else {
                g += rate;
                g_cpu += cpu;
                g_calls += rate * per;
            }
        }
    }
    let (f, g) = (f / rounds as f64, g / rounds as f64);
    Ok(Throughput {
        seconds: args.throughput_secs,
        connections: channels.len(),
        in_flight: args.in_flight,
        node_group_for_node_per_sec: f,
        gpu_label_per_sec: g,
        ratio: if g > 0.0 { f / g } else { 0.0 },
        node_group_for_node_server_cpu_us: f_cpu * 1000.0 / f_calls.max(1.0),
        gpu_label_server_cpu_us: g_cpu * 1000.0 / g_calls.max(1.0),
    })
}

fn print_report(r: &RunReport) {
    println!(
        "\n## {} nodes, {} groups ({} connections x {} in flight)",
        r.nodes, r.groups, r.connections, r.in_flight
    );
    if r.loops > 0 {
        println!(
            "loops: {}  calls/loop: {}  loop wall: {:.1} ms  read-phase throughput: {:.0} calls/s",
            r.loops, r.calls_per_loop, r.loop_wall_ms, r.read_phase_calls_per_sec
        );
        println!(
            "server CPU/loop: {:.2} ms (refresh {:.2} ms, read phase {:.2} ms) = {:.3} % of a 10 s CA loop",
            r.server_cpu_ms_per_loop,
            r.server_cpu_ms_refresh,
            r.server_cpu_ms_read_phase,
            r.server_cpu_ms_per_loop / 100.0
        );
        println!(
            "REST calls/loop: {:?}  REST calls on the read path: {}",
            r.rest_calls_per_loop, r.rest_calls_read_path
        );
        for (route, c) in &r.rest_routes_per_loop {
            println!("  {c:>6.1}  {route}");
        }
        println!(
            "{:<22} {:>8} {:>10} {:>10} {:>10}",
            "rpc", "calls", "p50 us", "p99 us", "max us"
        );
        for (rpc, l) in &r.latency {
            println!(
                "{rpc:<22} {:>8} {:>10.0} {:>10.0} {:>10.0}",
                l.calls, l.p50_us, l.p99_us, l.max_us
            );
        }
    }
    if let Some(t) = &r.throughput {
        println!(
            "saturation ({:.0} s, {}x{}): NodeGroupForNode {:.0}/s  GPULabel {:.0}/s  ratio {:.3}",
            t.seconds,
            t.connections,
            t.in_flight,
            t.node_group_for_node_per_sec,
            t.gpu_label_per_sec,
            t.ratio
        );
        println!(
            "server CPU per call: NodeGroupForNode {:.1} us  GPULabel {:.1} us",
            t.node_group_for_node_server_cpu_us, t.gpu_label_server_cpu_us
        );
    }
    println!(
        "server memory: VmRSS {} KiB, VmHWM {} KiB",
        r.server_rss_kib, r.server_hwm_kib
    );
    refresh::print(&r.refresh_conditions);
}
