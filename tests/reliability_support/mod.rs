//! Harness for the reliability suite (issue #7): the simulator on 127.0.0.1:0, the provider either
//! as the real binary (spawned with its output captured to files, so the tests can grep it for
//! secrets) or in-process, a tonic client that plays Cluster Autoscaler's calls with CA's 5 s
//! deadline, and small measurement helpers (latency percentiles, RSS/threads/fds of a child).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoscaler_cloudify::app::{App, start};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{Scenario, Simulator, SimulatorHandle, Timing};
use serde_json::Value;
use tonic::transport::Channel;

#[path = "../kit/hostile.rs"]
pub mod hostile;
#[path = "../kit/procfs.rs"]
mod procfs;
/// Resident memory, OS threads and open file descriptors of a child (Linux `/proc`).
pub use procfs::ProcStats;

pub const WORKERS: &str = "k8s-pool-a/workers";
pub const GPU: &str = "k8s-pool-b/gpu-workers";
/// CA's default `grpc_timeout` in the cloud-config.
pub const CA_DEADLINE: Duration = Duration::from_secs(5);
/// The simulator's admin password in every reliability test: distinctive, so the secret greps
/// cannot match anything by accident.
pub const PASSWORD: &str = "Rel-Pw-7f3c9e1d-do-not-log";

/// Panics on tokio worker threads (where the provider's handlers and tasks run), counted from
/// the first call of [`count_worker_panics`]. Test assertions run on the test's own thread and
/// are not counted.
static WORKER_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts counting worker panics (once per process; later calls do nothing).
pub fn count_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                WORKER_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Worker panics so far (see [`count_worker_panics`]).
pub fn worker_panics() -> usize {
    WORKER_PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

/// True when the long soak variants should run (`RELIABILITY_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("RELIABILITY_SOAK").is_ok_and(|v| v == "1")
}

/// The default demo scenario with our password and the given timing.
pub fn scenario(timing: Timing) -> Scenario {
    let mut s = Scenario::default_demo().with_timing(timing).with_seed(7);
    for u in &mut s.users {
        u.password = PASSWORD.to_owned();
    }
    s
}

/// Sets `k8s-pool-a/workers` to `current` instances with bounds `min..=max`.
pub fn with_workers(mut s: Scenario, min: i64, max: i64, current: u64) -> Scenario {
    for d in &mut s.deployments {
        for g in &mut d.scaling_groups {
            if g.name == "workers" {
                g.min = min;
                g.max = max;
                g.current = current;
                g.default = Some(current);
            }
        }
    }
    s
}

/// The provider in-process (`app::start`, the binary's wiring, real gRPC and HTTP sockets) in
/// front of the manager at `url` (the simulator, or a hostile manager before it), with the
/// background refresh off (1 h), and a client over a real socket.
pub async fn start_provider(
    url: &str,
    settings: ServiceSettings,
) -> (App, CloudProviderClient<Channel>) {
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), PASSWORD.to_owned())]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        node_controller: Some(false),
        ..Overrides::default()
    };
    let cfg = Config::from_yaml(&provider_yaml(url, "1h", "0s", ""), &overrides, &env)
        .expect("valid test config");
    let app = start(&cfg, settings).await.expect("provider starts");
    tokio::time::timeout(Duration::from_secs(20), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    let client = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect");
    (app, client)
}

/// The simulator (workers: `workers` instances, bounds 1..=10, instant timing), a hostile
/// manager in front of it, and the provider in-process talking to the hostile one (scale-ins
/// verified every 50 ms).
pub struct BehindHostile {
    pub sim: SimulatorHandle,
    pub hostile: hostile::HostileManager,
    pub app: App,
    pub client: CloudProviderClient<Channel>,
}

impl BehindHostile {
    pub async fn start(workers: u64) -> BehindHostile {
        let sim = start_sim(with_workers(scenario(Timing::instant()), 1, 10, workers)).await;
        let hostile = hostile::HostileManager::start(&sim.url()).await;
        let settings = ServiceSettings {
            verify_poll: Duration::from_millis(50),
            ..ServiceSettings::default()
        };
        let (app, client) = start_provider(&hostile.url(), settings).await;
        BehindHostile {
            sim,
            hostile,
            app,
            client,
        }
    }

    /// The provider ids of the workers CA sees.
    pub async fn worker_ids(&mut self) -> Vec<String> {
        instances(&mut self.client, WORKERS)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
    }
}

pub async fn start_sim(s: Scenario) -> SimulatorHandle {
    Simulator::start(s, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// Test-side control of the simulator: faults and request counts through its typed control
/// client, REST reads as admin.
#[derive(Clone)]
pub struct SimCtl {
    pub url: String,
    pub http: reqwest::Client,
    control: cloudify_sim::SimControl,
}

impl SimCtl {
    pub fn new(url: &str) -> SimCtl {
        SimCtl {
            url: url.to_owned(),
            control: cloudify_sim::SimControl::new(url),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Merges `body` (a `/_sim/faults` patch as JSON) into the simulator's faults.
    pub async fn faults(&self, body: Value) {
        let patch: cloudify_sim::FaultsPatch =
            serde_json::from_value(body).expect("a /_sim/faults patch");
        self.control.set_faults(&patch).await.expect("faults");
    }

    pub async fn clear_faults(&self) {
        self.control.clear_faults().await.expect("faults");
    }

    pub async fn requests(&self) -> Value {
        serde_json::to_value(self.control.requests().await.expect("sim requests")).expect("json")
    }

    pub async fn total(&self) -> u64 {
        self.requests().await["total"].as_u64().unwrap_or(0)
    }

    pub async fn route(&self, route: &str) -> u64 {
        self.requests().await["routes"][route].as_u64().unwrap_or(0)
    }

    pub async fn get(&self, path_and_query: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api/v3.1{path_and_query}", self.url))
            .basic_auth("admin", Some(PASSWORD))
            .header("Tenant", "default_tenant")
            .send()
            .await
            .expect("cloudify get");
        assert!(
            r.status().is_success(),
            "GET {path_and_query}: {}",
            r.status()
        );
        r.json().await.expect("json")
    }

    /// Every `scale` execution, oldest first.
    pub async fn scale_executions(&self) -> Vec<Value> {
        let v = self
            .get("/executions?workflow_id=scale&_sort=created_at&_size=1000")
            .await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// VM instance ids of `k8s-pool-a/workers` that still exist.
    pub async fn worker_vms(&self) -> Vec<String> {
        let v = self
            .get("/node-instances?deployment_id=k8s-pool-a&node_id=workers_host&_size=1000")
            .await;
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|i| i["state"].as_str() != Some("deleted"))
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// `scaling_groups.workers.properties` of k8s-pool-a.
    pub async fn workers_props(&self) -> Value {
        let v = self.get("/deployments/k8s-pool-a").await;
        v["scaling_groups"]["workers"]["properties"].clone()
    }

    /// Waits until no scale execution is in a non-final state.
    pub async fn wait_executions_done(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let busy = self.scale_executions().await.iter().any(|e| {
                !matches!(
                    e["status"].as_str(),
                    Some("terminated" | "failed" | "cancelled")
                )
            });
            if !busy {
                return;
            }
            assert!(
                Instant::now() < end,
                "executions still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A provider configuration file for the simulator at `url`.
pub fn provider_yaml(url: &str, refresh: &str, max_age: &str, extra_cloudify: &str) -> String {
    format!(
        r#"
refresh: {{interval: {refresh}, max_age: {max_age}}}
cloudify:
  - {{name: main, url: "{url}", tenant: default_tenant, username: admin, request_timeout: 10s{extra_cloudify}}}
node_groups:
  auto_discovery: ["cloudify:label=k8s-cluster=demo"]
  groups:
    "k8s-pool-b/gpu-workers":
      template:
        capacity: {{cpu: "8", memory: 32Gi, nvidia.com/gpu: "1"}}
"#
    )
}

/// A configuration for the in-process provider: `yaml` as the file, the test password, both
/// ports on 127.0.0.1:0 unless `overrides` says otherwise.
pub fn loopback_config(yaml: &str, overrides: Overrides) -> Config {
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), PASSWORD.to_owned())]);
    let overrides = Overrides {
        listen: overrides.listen.or_else(|| Some("127.0.0.1:0".into())),
        http_listen: overrides.http_listen.or_else(|| Some("127.0.0.1:0".into())),
        ..overrides
    };
    Config::from_yaml(yaml, &overrides, &env).expect("valid test config")
}

/// The provider in-process (`app::start`, the binary's wiring), once its first snapshot is
/// loaded.
pub async fn start_inprocess(config: &Config, settings: ServiceSettings) -> App {
    let app = autoscaler_cloudify::app::start(config, settings)
        .await
        .expect("provider starts");
    tokio::time::timeout(Duration::from_secs(30), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    app
}

/// A free loopback port (bound, then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The provider binary, running as a child process.
pub struct Proc {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub started: Instant,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_autoscaler-cloudify")
}

/// A command for the binary with a clean environment (no `AUTOSCALER_CLOUDIFY_*` leaking in from
/// the developer's shell) and its output captured to `dir/<name>.{out,err}`.
pub fn command(dir: &Path, name: &str, env: &[(&str, &str)]) -> (Command, PathBuf, PathBuf) {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTOSCALER_CLOUDIFY") || k.starts_with("CLOUDIFY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    (cmd, out, err)
}

impl Proc {
    /// `serve --config FILE --listen 127.0.0.1:P --http-listen 127.0.0.1:Q [args]`.
    pub fn serve(
        dir: &Path,
        name: &str,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Proc::serve_on(dir, name, config, grpc, http, args, env)
    }

    pub fn serve_on(
        dir: &Path,
        name: &str,
        config: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let (mut cmd, stdout, stderr) = command(dir, name, env);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(grpc.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .args(args);
        let child = cmd.spawn().expect("spawn provider");
        Proc {
            child,
            grpc,
            http,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/readyz`: (status, detail JSON); `None` while the port is not up.
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        let r = reqwest::Client::new()
            .get(format!("http://{}/readyz", self.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits for `/readyz` 200; panics with the captured log otherwise.
    pub async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let end = Instant::now() + limit;
        loop {
            if let Some((200, _)) = self.readyz().await {
                return self.started.elapsed();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("provider exited with {st}: {}", self.log());
            }
            assert!(Instant::now() < end, "provider not ready: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `/readyz` to answer at all (ready or not).
    pub async fn wait_http(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.readyz().await.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("provider exited with {st}: {}", self.log());
            }
            assert!(
                Instant::now() < end,
                "provider HTTP port not up: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> CloudProviderClient<Channel> {
        CloudProviderClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connects")
    }

    pub fn log(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }

    /// SIGKILL, as a node failure or OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn proc_stats(&self) -> ProcStats {
        ProcStats::of(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request with CA's deadline (tonic sends it as `grpc-timeout`).
pub fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CA_DEADLINE);
    r
}

pub fn node(provider_id: &str, name: &str) -> proto::ExternalGrpcNode {
    proto::ExternalGrpcNode {
        provider_id: provider_id.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    }
}

pub async fn target(c: &mut CloudProviderClient<Channel>, id: &str) -> i32 {
    c.node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id: id.into() }))
        .await
        .expect("target size")
        .into_inner()
        .target_size
}

pub async fn instances(c: &mut CloudProviderClient<Channel>, id: &str) -> Vec<proto::Instance> {
    c.node_group_nodes(req(proto::NodeGroupNodesRequest { id: id.into() }))
        .await
        .expect("nodes")
        .into_inner()
        .instances
}

pub fn state_of(i: &proto::Instance) -> i32 {
    i.status.as_ref().map_or(0, |s| s.instance_state)
}

pub async fn refresh(c: &mut CloudProviderClient<Channel>) -> Result<(), tonic::Status> {
    c.refresh(req(proto::RefreshRequest {})).await.map(|_| ())
}

pub async fn increase(
    c: &mut CloudProviderClient<Channel>,
    id: &str,
    delta: i32,
) -> Result<(), tonic::Status> {
    c.node_group_increase_size(req(proto::NodeGroupIncreaseSizeRequest {
        id: id.into(),
        delta,
    }))
    .await
    .map(|_| ())
}

pub async fn delete(
    c: &mut CloudProviderClient<Channel>,
    id: &str,
    nodes: Vec<proto::ExternalGrpcNode>,
) -> Result<(), tonic::Status> {
    c.node_group_delete_nodes(req(proto::NodeGroupDeleteNodesRequest {
        id: id.into(),
        nodes,
    }))
    .await
    .map(|_| ())
}

/// Latencies of one kind of call, for percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    pub samples: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
}

impl Latencies {
    pub fn add<T>(&mut self, d: Duration, result: Result<T, tonic::Code>) {
        self.samples.push(d);
        if let Err(code) = result {
            *self.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    pub fn pct(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * p).round() as usize;
        s[i.min(s.len() - 1)]
    }

    pub fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms errors={:?}",
            self.samples.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
            ms(self.max()),
            self.errors
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pass of CA's per-loop read pattern: Refresh, NodeGroups, NodeGroupForNode for every known
/// node (plus one node of no group), TargetSize and Nodes for every group. Returns the provider
/// ids seen, to ask NodeGroupForNode about next time.
pub async fn ca_loop(
    c: &mut CloudProviderClient<Channel>,
    known_nodes: &[String],
    reads: &mut Latencies,
    refreshes: &mut Latencies,
) -> Vec<String> {
    let t = Instant::now();
    let r = refresh(c).await;
    refreshes.add(t.elapsed(), r.map_err(|s| s.code()));

    let t = Instant::now();
    let groups = c.node_groups(req(proto::NodeGroupsRequest {})).await;
    reads.add(
        t.elapsed(),
        groups.as_ref().map(|_| ()).map_err(|s| s.code()),
    );
    let groups: Vec<String> = groups
        .map(|g| {
            g.into_inner()
                .node_groups
                .into_iter()
                .map(|g| g.id)
                .collect()
        })
        .unwrap_or_default();

    let mut probe: Vec<(String, String)> = known_nodes
        .iter()
        .map(|p| (p.clone(), String::new()))
        .collect();
    probe.push((String::new(), "k8s-control-plane".into()));
    for (p, n) in probe {
        let t = Instant::now();
        let r = c
            .node_group_for_node(req(proto::NodeGroupForNodeRequest {
                node: Some(node(&p, &n)),
            }))
            .await;
        reads.add(t.elapsed(), r.map(|_| ()).map_err(|s| s.code()));
    }
    let mut seen = Vec::new();
    for g in &groups {
        let t = Instant::now();
        let r = c
            .node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id: g.clone() }))
            .await;
        reads.add(t.elapsed(), r.map(|_| ()).map_err(|s| s.code()));
        let t = Instant::now();
        let r = c
            .node_group_nodes(req(proto::NodeGroupNodesRequest { id: g.clone() }))
            .await;
        reads.add(t.elapsed(), r.as_ref().map(|_| ()).map_err(|s| s.code()));
        if let Ok(r) = r {
            seen.extend(
                r.into_inner()
                    .instances
                    .into_iter()
                    .map(|i| i.id)
                    .filter(|id| id.starts_with("cloudify://")),
            );
        }
    }
    seen
}

/// A scratch directory for config files, certificates and captured output. Kept (and printed)
/// when `RELIABILITY_KEEP=1`.
pub fn workdir(name: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(&format!("reliability-{name}-"))
        .tempdir()
        .expect("tempdir");
    if std::env::var("RELIABILITY_KEEP").is_ok_and(|v| v == "1") {
        eprintln!("{name}: output in {}", d.path().display());
    }
    d
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// Appends one result line to `target/reliability/figures.txt` (and stderr), the raw material of
/// `docs/reliability.md`.
pub fn figure(scenario: &str, text: &str) {
    let line = format!("{scenario}: {text}");
    eprintln!("FIGURE {line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("figures.txt"))
    {
        let _ = writeln!(f, "{} {line}", chrono_now());
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("t={secs}")
}

/// Whether any of `secrets`, or the basic-auth header it would form, occurs in `text`: the one
/// grep of [`assert_no_secrets`] and of its positive control [`assert_would_find`].
fn leaks(text: &str, secrets: &[&str]) -> bool {
    use base64::Engine;
    secrets.iter().any(|s| {
        assert!(!s.is_empty());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{s}"));
        text.contains(*s) || text.contains(&basic)
    })
}

/// The positive control of [`assert_no_secrets`]: the same grep, given `marker` as a secret,
/// finds it in `text`. Without it a capture that lost its logs would look clean.
pub fn assert_would_find(what: &str, text: &str, marker: &str) {
    assert!(
        leaks(text, &[marker]),
        "{what}: the positive control {marker:?} is not in the {} captured bytes, so a secret \
         would not be seen either",
        text.len()
    );
}

/// Asserts that none of `secrets` (nor the basic-auth header they would form) occurs in `text`.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[&str]) {
    assert!(
        !leaks(text, secrets),
        "{what} leaks a secret ({} chars of output)",
        text.len()
    );
}
