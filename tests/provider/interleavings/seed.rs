//! One seed of the interleaving checker (see `tests/provider/interleavings.rs`): the simulator, a
//! restartable provider, CA-like actors, a chaos task, a monitor of Cloudify's own state, and
//! the end-state checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoscaler_cloudify::app;
use autoscaler_cloudify::cloudify::Cloudify;
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::inventory::{Inventory, normalize_provider_id};
use autoscaler_cloudify::nodegroup::{DomainError, NodeGroupService, NodeRef, ServiceSettings};
use autoscaler_cloudify::observability::metrics::Metrics;
use cloudify_sim::{Scenario, Simulator, SimulatorHandle, Timing};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The group under test: the demo's `k8s-pool-a/workers` (2 VMs), with tight bounds so the
/// actors run into both edges.
const GROUP: &str = "k8s-pool-a/workers";
const MIN: i64 = 1;
const MAX: i64 = 5;
const ACTORS: u64 = 3;
const OPS_PER_ACTOR: usize = 10;

const CONFIG: &str = r#"
refresh: {interval: 1h, max_age: 0s}
cloudify:
  - {name: main, url: "{url}", tenant: default_tenant, username: admin, request_timeout: 10s}
node_groups:
  static: ["1:5:k8s-pool-a/workers"]
"#;

/// What one seed found.
pub struct Report {
    /// Broken invariants, empty when the seed passed.
    pub violations: Vec<String>,
    /// The seed's events (operations, their answers, chaos), for the failure report.
    pub events: Vec<String>,
}

/// Panics on the provider's own runtime threads since the hook was installed (tokio turns a task
/// panic into a JoinError, which would otherwise go unnoticed). Only those threads: another test
/// of the binary failing an assertion meanwhile is not this seed's panic.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The name of the provider runtime's threads, which the panic hook counts.
const PROVIDER_THREAD: &str = "interleaving-provider";

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(PROVIDER_THREAD) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// A provider process: its own runtime (shut down on restart, killing its tasks) and service.
struct Provider {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    service: Arc<NodeGroupService>,
}

impl Provider {
    async fn start(url: &str, rng: &mut StdRng) -> Option<Arc<Provider>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(PROVIDER_THREAD)
            .enable_all()
            .build()
            .ok()?;
        let handle = runtime.handle().clone();
        let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "admin".to_owned())]);
        let config =
            Config::from_yaml(&CONFIG.replace("{url}", url), &Overrides::default(), &env).ok()?;
        let settings = ServiceSettings {
            delete_batch_window: Duration::from_millis(rng.random_range(1..25)),
            refresh_max_age: Duration::ZERO,
            verify_poll: Duration::from_millis(5),
            verify_timeout: Duration::from_secs(3),
            ..ServiceSettings::default()
        };
        let service = handle
            .spawn(async move {
                let metrics = Metrics::new();
                let sources: Vec<Arc<dyn Cloudify>> = app::clients(&config, &metrics)
                    .ok()?
                    .into_iter()
                    .map(|c| c as Arc<dyn Cloudify>)
                    .collect();
                let inventory =
                    Inventory::new(sources, Arc::new(config.node_groups), Arc::clone(&metrics));
                // The manager may be down or erroring: a real provider retries too.
                let deadline = Instant::now() + Duration::from_secs(10);
                while inventory.refresh().await.is_err() {
                    if Instant::now() > deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Some(NodeGroupService::new(inventory, metrics, settings))
            })
            .await
            .ok()??;
        Some(Arc::new(Provider {
            runtime: Mutex::new(Some(runtime)),
            handle,
            service,
        }))
    }

    /// Kills the process: every task it runs stops at its next await.
    fn kill(&self) {
        if let Some(rt) = self.runtime.lock().ok().and_then(|mut r| r.take()) {
            rt.shutdown_background();
        }
    }

    /// Runs an operation on the provider's runtime; `None` if the provider died meanwhile.
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.handle.spawn(f).await.ok()
    }
}

/// What the actors were told, for the end-state checks.
#[derive(Default)]
struct Ledger {
    /// VM ids named by a DeleteNodes that answered OK.
    named: BTreeSet<String>,
    /// VM ids named by a DeleteNodes whose answer was lost (provider killed).
    maybe_named: BTreeSet<String>,
    accepted_increases: u64,
    unknown_increases: u64,
    decrease_calls: u64,
    violations: Vec<String>,
    /// What happened, in order, for the failure report.
    events: Vec<String>,
}

struct Shared {
    sim_url: String,
    http: reqwest::Client,
    provider: Mutex<Arc<Provider>>,
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
    /// VM ids seen `started` by the monitor, and every VM id seen at all.
    seen_running: Mutex<BTreeSet<String>>,
    started: Instant,
}

impl Shared {
    fn event(&self, e: String) {
        if let Ok(mut l) = self.ledger.lock() {
            let at = self.started.elapsed().as_millis();
            l.events.push(format!("{at:>5} ms {e}"));
        }
    }

    fn provider(&self) -> Arc<Provider> {
        Arc::clone(&self.provider.lock().expect("provider lock"))
    }

    fn violation(&self, v: String) {
        self.event(format!("VIOLATION {v}"));
        if let Ok(mut l) = self.ledger.lock()
            && !l.violations.contains(&v)
            && l.violations.len() < 20
        {
            l.violations.push(v);
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Value> {
        let mut r = self
            .http
            .request(method, format!("{}/api/v3.1{path}", self.sim_url))
            .basic_auth("admin", Some("admin"))
            .header("Tenant", "default_tenant");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn faults(&self, body: Value) {
        self.event(format!("faults {body}"));
        let _ = self
            .http
            .post(format!("{}/_sim/faults", self.sim_url))
            .json(&body)
            .send()
            .await;
    }

    /// Cloudify's own view: (planned, current, VM id → state). `None` while it does not answer.
    async fn cloudify_state(&self) -> Option<(i64, i64, BTreeMap<String, String>)> {
        let d = self
            .api(
                reqwest::Method::GET,
                "/deployments/k8s-pool-a?_include=scaling_groups",
                None,
            )
            .await?;
        let p = &d["scaling_groups"]["workers"]["properties"];
        let planned = p["planned_instances"].as_i64()?;
        let current = p["current_instances"].as_i64()?;
        let vms = self
            .api(
                reqwest::Method::GET,
                "/node-instances?deployment_id=k8s-pool-a&node_id=workers_host&_include=id,state&_get_all_results=true",
                None,
            )
            .await?;
        let vms = vms["items"]
            .as_array()?
            .iter()
            .filter_map(|i| {
                Some((
                    i["id"].as_str()?.to_owned(),
                    i["state"].as_str()?.to_owned(),
                ))
            })
            .collect();
        Some((planned, current, vms))
    }

    fn check_cloudify(&self, planned: i64, current: i64, when: &str) {
        for (name, v) in [("planned", planned), ("current", current)] {
            if !(MIN..=MAX).contains(&v) {
                self.violation(format!(
                    "{when}: Cloudify's {name}_instances is {v}, outside [{MIN}, {MAX}]"
                ));
            }
        }
    }

    fn check_target(&self, svc: &NodeGroupService, when: &str) {
        match svc.target_size(GROUP) {
            Ok(t) if (MIN..=MAX).contains(&i64::from(t)) => {}
            Ok(t) => self.violation(format!(
                "{when}: TargetSize read {t}, outside [{MIN}, {MAX}]"
            )),
            Err(e) => self.violation(format!("{when}: TargetSize failed: {e}")),
        }
    }
}

/// One CA-like actor: random mutations and reads on the group, each result recorded.
async fn actor(shared: Arc<Shared>, mut rng: StdRng) {
    let mut recent: Vec<String> = Vec::new();
    for op in 0..OPS_PER_ACTOR {
        let p = shared.provider();
        let svc = Arc::clone(&p.service);
        let roll = rng.random_range(0..100);
        let what = if roll < 30 {
            let delta = rng.random_range(1..=3);
            let s = Arc::clone(&svc);
            let r = p
                .run(async move { s.increase_size(GROUP, delta).await })
                .await;
            shared.event(format!("IncreaseSize({delta}) -> {r:?}"));
            let mut l = shared.ledger.lock().expect("ledger");
            match r {
                Some(Ok(())) => l.accepted_increases += 1,
                Some(Err(_)) => {}
                None => l.unknown_increases += 1,
            }
            format!("IncreaseSize({delta})")
        } else if roll < 65 {
            // Nodes as CA sees them; now and then a retry or duplicate of an earlier one.
            let nodes = svc.nodes(GROUP).unwrap_or_default();
            let real: Vec<String> = nodes
                .iter()
                .map(|n| n.id.clone())
                .filter(|id| id.starts_with("cloudify://"))
                .collect();
            let mut chosen: Vec<String> = if !recent.is_empty() && rng.random_bool(0.25) {
                vec![recent.choose(&mut rng).cloned().unwrap_or_default()]
            } else {
                let k = rng.random_range(1..=2).min(real.len());
                real.choose_multiple(&mut rng, k).cloned().collect()
            };
            chosen.retain(|c| !c.is_empty());
            if chosen.is_empty() {
                continue;
            }
            recent.extend(chosen.iter().cloned());
            let refs: Vec<NodeRef> = chosen
                .iter()
                .map(|id| NodeRef {
                    provider_id: id.clone(),
                    name: String::new(),
                })
                .collect();
            let s = Arc::clone(&svc);
            let r = p
                .run(async move { s.delete_nodes(GROUP, &refs).await })
                .await;
            let vms = chosen.iter().map(|c| normalize_provider_id(c).to_owned());
            shared.event(format!(
                "DeleteNodes({:?}) -> {r:?}",
                chosen
                    .iter()
                    .map(|c| normalize_provider_id(c).to_owned())
                    .collect::<Vec<_>>()
            ));
            let mut l = shared.ledger.lock().expect("ledger");
            match r {
                Some(Ok(())) => l.named.extend(vms),
                Some(Err(DomainError::InvalidArgument(_))) => {} // gone meanwhile
                Some(Err(_)) => {}
                None => l.maybe_named.extend(vms),
            }
            format!("DeleteNodes({chosen:?})")
        } else if roll < 75 {
            let delta = -rng.random_range(1..=2);
            let s = Arc::clone(&svc);
            let r = p
                .run(async move { s.decrease_target_size(GROUP, delta).await })
                .await;
            shared.event(format!("DecreaseTargetSize({delta}) -> {r:?}"));
            shared.ledger.lock().expect("ledger").decrease_calls += 1;
            format!("DecreaseTargetSize({delta})")
        } else {
            let s = Arc::clone(&svc);
            let r = p
                .run(async move { s.inventory().refresh().await.map(|_| ()) })
                .await;
            shared.event(format!(
                "Refresh -> {}",
                match r {
                    Some(Ok(())) => "ok".to_owned(),
                    Some(Err(e)) => e.to_string(),
                    None => "lost".to_owned(),
                }
            ));
            "Refresh".to_owned()
        };
        shared.event(format!("  TargetSize {:?}", svc.target_size(GROUP).ok()));
        shared.check_target(&svc, &format!("after op {op} {what}"));
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        }
    }
}

/// Changes the manager's behaviour and kills things while the actors run.
async fn chaos(shared: Arc<Shared>, mut rng: StdRng) {
    while !shared.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        match rng.random_range(0..100) {
            0..=24 => {
                shared
                    .faults(json!({"latency_ms": rng.random_range(0..20),
                        "started_window_ms": rng.random_range(0..40)}))
                    .await
            }
            25..=34 => {
                let rate = [0.0, 0.05, 0.2][rng.random_range(0..3)];
                shared.faults(json!({ "error_rate": rate })).await
            }
            35..=42 => {
                // A short outage.
                shared.faults(json!({"down": true})).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
                shared.faults(json!({"down": false})).await;
            }
            43..=52 => shared.faults(json!({"fail_next_executions": 1})).await,
            53..=62 => {
                shared
                    .faults(json!({"hold_executions": rng.random_bool(0.5)}))
                    .await
            }
            63..=67 => {
                shared
                    .faults(json!({"reject_next_execution_posts": 1}))
                    .await
            }
            68..=75 => {
                // The manager kills a running scale (a mgmtworker restart).
                let list = shared
                    .api(
                        reqwest::Method::GET,
                        "/executions?workflow_id=scale&status=started&_include=id",
                        None,
                    )
                    .await;
                let ids: Vec<String> = list
                    .and_then(|v| v["items"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned))
                    .collect();
                if let Some(id) = ids.choose(&mut rng) {
                    shared.event(format!("kill execution {id}"));
                    let _ = shared
                        .api(
                            reqwest::Method::POST,
                            &format!("/executions/{id}"),
                            Some(json!({"action": "kill"})),
                        )
                        .await;
                }
            }
            76..=81 => {
                // The provider restarts: its in-flight work dies with it.
                let old = shared.provider();
                shared.event("provider restart".into());
                old.kill();
                match Provider::start(&shared.sim_url, &mut rng).await {
                    Some(p) => *shared.provider.lock().expect("provider lock") = p,
                    None => shared.violation("the provider did not come back".into()),
                }
            }
            _ => {}
        }
    }
}

/// Reads Cloudify's own state until stopped, checking it and noting every running VM.
async fn monitor(shared: Arc<Shared>) {
    let mut last = (0, 0);
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some((planned, current, vms)) = shared.cloudify_state().await {
            if (planned, current) != last {
                last = (planned, current);
                shared.event(format!("Cloudify planned {planned} current {current}"));
            }
            shared.check_cloudify(planned, current, "while running");
            let mut seen = shared.seen_running.lock().expect("seen");
            seen.extend(
                vms.iter()
                    .filter(|(_, s)| s.as_str() == "started")
                    .map(|(id, _)| id.clone()),
            );
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn wait_executions_done(shared: &Shared) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let v = shared
            .api(
                reqwest::Method::GET,
                "/executions?workflow_id=scale&_include=id,status&_get_all_results=true",
                None,
            )
            .await;
        let busy = v
            .as_ref()
            .and_then(|v| v["items"].as_array())
            .map(|a| a.iter().any(|e| !testkit::sim::is_final(e)));
        if busy == Some(false) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Runs one seed and checks everything.
pub async fn run_seed(seed: u64) -> Report {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let mut rng = StdRng::seed_from_u64(seed);
    let timing = Timing {
        execution_start_ms: rng.random_range(0..8),
        step_ms: rng.random_range(0..6),
    };
    let sim: SimulatorHandle = Simulator::start(
        Scenario::default_demo().with_timing(timing).with_seed(seed),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("simulator starts");
    let http = reqwest::Client::new();
    let Some(provider) = Provider::start(&sim.url(), &mut rng).await else {
        return Report {
            violations: vec!["the provider did not start".into()],
            events: Vec::new(),
        };
    };
    let shared = Arc::new(Shared {
        sim_url: sim.url(),
        http,
        provider: Mutex::new(provider),
        ledger: Mutex::new(Ledger::default()),
        stop: AtomicBool::new(false),
        seen_running: Mutex::new(BTreeSet::new()),
        started: Instant::now(),
    });
    shared
        .faults(json!({"started_window_ms": rng.random_range(0..40)}))
        .await;
    let monitor = tokio::spawn(monitor(Arc::clone(&shared)));
    let chaos = tokio::spawn(chaos(
        Arc::clone(&shared),
        StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(7)),
    ));
    let actors: Vec<_> = (0..ACTORS)
        .map(|a| {
            tokio::spawn(actor(
                Arc::clone(&shared),
                StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(a)),
            ))
        })
        .collect();
    for a in actors {
        if a.await.is_err() {
            shared.violation("an actor panicked".into());
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let _ = chaos.await;
    let _ = monitor.await;

    settle_and_check(&shared).await;
    shared.provider().kill();
    sim.shutdown().await;
    let (mut violations, events) = {
        let mut l = shared.ledger.lock().expect("ledger");
        (
            std::mem::take(&mut l.violations),
            std::mem::take(&mut l.events),
        )
    };
    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    if panics > 0 {
        violations.push(format!("{panics} panic(s)"));
    }
    Report { violations, events }
}

/// Clears the faults, lets every execution end, deletes what CA still wants gone (as CA keeps
/// doing for nodes that did not go), then checks the end state.
async fn settle_and_check(shared: &Arc<Shared>) {
    let _ = shared
        .http
        .delete(format!("{}/_sim/faults", shared.sim_url))
        .send()
        .await;
    if !wait_executions_done(shared).await {
        shared.violation("executions did not end after the faults were cleared".into());
        return;
    }
    let mut named = shared.ledger.lock().expect("ledger").named.clone();
    for round in 0..6 {
        let p = shared.provider();
        let svc = Arc::clone(&p.service);
        let s = Arc::clone(&svc);
        let _ = p
            .run(async move { s.inventory().refresh().await.map(|_| ()) })
            .await;
        let Some((_, _, vms)) = shared.cloudify_state().await else {
            continue;
        };
        let left: Vec<&String> = named.iter().filter(|v| vms.contains_key(*v)).collect();
        if left.is_empty() {
            break;
        }
        if round == 5 {
            shared.violation(format!(
                "VMs named by an accepted DeleteNodes are still there: {left:?} ({vms:?})"
            ));
            break;
        }
        let refs: Vec<NodeRef> = left
            .iter()
            .map(|v| NodeRef {
                provider_id: format!("cloudify://default_tenant/k8s-pool-a/{v}"),
                name: String::new(),
            })
            .collect();
        // One call per VM, as CA sends them. A scale-in that was killed or failed is rolled
        // back by the next scale (`abort_started`), so its VMs count again; CA asks again, and
        // only the min size may refuse.
        for (r, v) in refs
            .into_iter()
            .zip(left.iter().map(|v| (*v).clone()).collect::<Vec<_>>())
        {
            let s = Arc::clone(&svc);
            let answer = p
                .run(async move { s.delete_nodes(GROUP, &[r]).await })
                .await;
            shared.event(format!("clean-up DeleteNodes([{v}]) -> {answer:?}"));
            if let Some(Err(DomainError::FailedPrecondition(_))) = answer {
                named.remove(&v);
            }
        }
        if !wait_executions_done(shared).await {
            shared.violation("a clean-up scale-in did not end".into());
            return;
        }
    }
    let Some((planned, current, vms)) = shared.cloudify_state().await else {
        shared.violation("Cloudify does not answer after the faults were cleared".into());
        return;
    };
    // planned may still differ from current: a scale killed at the end leaves its modification
    // started until the provider's next scale aborts it.
    shared.check_cloudify(planned, current, "at rest");
    let allowed = allowed_owned(shared);
    // Never the wrong VM: every running VM that went was named by CA.
    let seen = shared.seen_running.lock().expect("seen").clone();
    let wrong: Vec<&String> = seen
        .iter()
        .filter(|v| !vms.contains_key(*v) && !allowed.contains(*v))
        .collect();
    if !wrong.is_empty() {
        shared.violation(format!("VMs removed that no DeleteNodes named: {wrong:?}"));
    }
    check_executions(shared, &allowed).await;
    // Cloudify is the source of truth: a fresh provider agrees with the one that did it all.
    let p = shared.provider();
    let s = Arc::clone(&p.service);
    let _ = p
        .run(async move { s.inventory().refresh().await.map(|_| ()) })
        .await;
    let old = p.service.target_size(GROUP).ok();
    let mut rng = StdRng::seed_from_u64(0);
    match Provider::start(&shared.sim_url, &mut rng).await {
        Some(fresh) => {
            let new = fresh.service.target_size(GROUP).ok();
            if old != new {
                shared.violation(format!(
                    "at rest: TargetSize {old:?}, but a restarted provider reads {new:?}"
                ));
            }
            fresh.kill();
        }
        None => shared.violation("a fresh provider did not start".into()),
    }
}

fn allowed_owned(shared: &Shared) -> BTreeSet<String> {
    let l = shared.ledger.lock().expect("ledger");
    l.named.iter().chain(&l.maybe_named).cloned().collect()
}

/// Every scale-in names exactly its victims and only ones CA named; scale-outs match the
/// increases CA was told were accepted (none lost, none doubled).
async fn check_executions(shared: &Shared, allowed: &BTreeSet<String>) {
    let Some(v) = shared
        .api(
            reqwest::Method::GET,
            "/executions?workflow_id=scale&_include=id,status,parameters&_get_all_results=true",
            None,
        )
        .await
    else {
        shared.violation("cannot list executions at rest".into());
        return;
    };
    let mut scale_outs = 0u64;
    for e in v["items"].as_array().cloned().unwrap_or_default() {
        let delta = e["parameters"]["delta"].as_i64().unwrap_or(1);
        let include: Vec<String> = e["parameters"]["include_instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect();
        if delta > 0 {
            scale_outs += 1;
        } else if delta < 0 {
            let unique: BTreeSet<&String> = include.iter().collect();
            if unique.len() as i64 != -delta {
                shared.violation(format!(
                    "scale-in {} has delta {delta} but names {include:?}",
                    e["id"]
                ));
            }
            let foreign: Vec<&String> = include.iter().filter(|i| !allowed.contains(*i)).collect();
            if !foreign.is_empty() {
                shared.violation(format!(
                    "scale-in {} names VMs no accepted DeleteNodes named: {foreign:?}",
                    e["id"]
                ));
            }
        }
    }
    let l = shared.ledger.lock().expect("ledger");
    // One execution per accepted increase, plus at most one smaller replacement per
    // DecreaseTargetSize, plus those whose answer a restart lost.
    let low = l.accepted_increases;
    let high = l.accepted_increases + l.unknown_increases + l.decrease_calls;
    if scale_outs < low || scale_outs > high {
        let msg = format!(
            "{scale_outs} scale-out execution(s) for {} accepted IncreaseSize ({} unknown, {} \
             DecreaseTargetSize)",
            l.accepted_increases, l.unknown_increases, l.decrease_calls
        );
        drop(l);
        shared.violation(msg);
    }
}
