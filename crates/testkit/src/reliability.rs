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
use cloudify_sim::{SimulatorHandle, Timing};
use serde_json::Value;
use tonic::transport::Channel;

pub use crate::hostile;
/// Resident memory, OS threads and open file descriptors of a child (Linux `/proc`).
pub use crate::procfs::ProcStats;
pub use crate::sim::*;
pub use crate::wait::{eventually, until};

/// CA's default `grpc_timeout` in the cloud-config.
pub const CA_DEADLINE: Duration = Duration::from_secs(5);
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
    /// The simulator.
    pub sim: SimulatorHandle,
    /// The hostile manager in front of it.
    pub hostile: hostile::HostileManager,
    /// The provider in-process, talking to the hostile manager.
    pub app: App,
    /// CA's client of the provider.
    pub client: CloudProviderClient<Channel>,
}

impl BehindHostile {
    /// Starts the three; the provider once its first snapshot is in.
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

    /// Stops the provider, then the simulator.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
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
    /// The running binary.
    pub child: Child,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP (health, metrics) address.
    pub http: SocketAddr,
    /// Where its stdout goes.
    pub stdout: PathBuf,
    /// Where its stderr goes.
    pub stderr: PathBuf,
    /// When it was spawned.
    pub started: Instant,
}

/// The provider binary cargo built beside the running test (`target/<profile>/`, one level
/// above the test's own `deps/`): a kit crate has no `CARGO_BIN_EXE_*` of its own, and a
/// package's integration tests and benches always have its binary built.
pub fn bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary under target/<profile>/deps");
    let bin = profile_dir.join("autoscaler-cloudify");
    assert!(
        bin.is_file(),
        "{} not built (run the tests through cargo)",
        bin.display()
    );
    bin
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

    /// [`Proc::serve`] on given addresses (a restart on the same ports).
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

    /// The child's process id.
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

    /// `/metrics` as text.
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

    /// CA's gRPC client of the binary.
    pub async fn client(&self) -> CloudProviderClient<Channel> {
        CloudProviderClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connects")
    }

    /// Everything the binary wrote so far (stdout, then stderr).
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

    /// Memory, threads and fds of the child now.
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

/// A node as CA sends it in NodeGroupForNode and DeleteNodes.
pub fn node(provider_id: &str, name: &str) -> proto::ExternalGrpcNode {
    proto::ExternalGrpcNode {
        provider_id: provider_id.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    }
}

/// NodeGroupTargetSize with CA's deadline.
pub async fn target(c: &mut CloudProviderClient<Channel>, id: &str) -> i32 {
    c.node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id: id.into() }))
        .await
        .expect("target size")
        .into_inner()
        .target_size
}

/// NodeGroupNodes with CA's deadline.
pub async fn instances(c: &mut CloudProviderClient<Channel>, id: &str) -> Vec<proto::Instance> {
    c.node_group_nodes(req(proto::NodeGroupNodesRequest { id: id.into() }))
        .await
        .expect("nodes")
        .into_inner()
        .instances
}

/// The instance state CA reads (0 when the status is missing; 1 running, 2 creating, 3 deleting).
pub fn state_of(i: &proto::Instance) -> i32 {
    i.status.as_ref().map_or(0, |s| s.instance_state)
}

/// Refresh with CA's deadline.
pub async fn refresh(c: &mut CloudProviderClient<Channel>) -> Result<(), tonic::Status> {
    c.refresh(req(proto::RefreshRequest {})).await.map(|_| ())
}

/// NodeGroupIncreaseSize with CA's deadline.
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

/// NodeGroupDeleteNodes with CA's deadline.
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
    /// Every call's latency.
    pub samples: Vec<Duration>,
    /// Failed calls per gRPC code.
    pub errors: BTreeMap<String, u64>,
}

impl Latencies {
    /// Records one call: its latency and, if it failed, its code.
    pub fn add<T>(&mut self, d: Duration, result: Result<T, tonic::Code>) {
        self.samples.push(d);
        if let Err(code) = result {
            *self.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    /// The `p` quantile (0.0..=1.0) of the latencies, zero without samples.
    pub fn pct(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * p).round() as usize;
        s[i.min(s.len() - 1)]
    }

    /// The slowest call.
    pub fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }

    /// `n`, p50, p99, max and errors on one line.
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

/// A duration in milliseconds, for figures.
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

/// Writes `text` to `dir/name` and returns the path.
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability");
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
