//! Reliability suite: the provider refreshing through the hostile manager under random programs
//! (issue 20, "Done when"). The decoding fuzz of `cloudify_input.rs` feeds bodies to the decoder;
//! here the whole provider (in-process: the same `app::start` as the binary, real HTTP to the
//! test kit's hostile manager in front of the simulator) meets mutated, truncated, huge, slow,
//! stalled and lying answers on every route a refresh reads, a few faults at a time.
//!
//! After every refresh: no panic on any thread, the refresh ended within a bound, a failed
//! refresh left the served snapshot untouched (the same one, not a copy), `/readyz` says what
//! happened (ready on the old snapshot, the error in its detail), CA's reads still answer; at the
//! end of each program a clean refresh gives back the true inventory; and the provider's logs
//! (trace level) hold no secret, while a marker logged where a secret would be is found.
//!
//! `HOSTILE_FUZZ_CASES` (programs, default 40) and `HOSTILE_FUZZ_SECS` (no new program after
//! this, default 25) size it; `RELIABILITY_SOAK=1` raises the defaults to 2000 and 900 s
//! (docs/reliability.md).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cloudify_input::{arb_json, mutate, test_config};
use crate::reliability_support::hostile::{HostileManager, Rule};
use crate::reliability_support::*;
use autoscaler_cloudify::app::{App, start};
use autoscaler_cloudify::inventory::Snapshot;
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{SimulatorHandle, Timing};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use serde_json::Value;
use tonic::transport::Channel;

/// The routes a refresh reads: (method, path prefix).
const ROUTES: [(&str, &str); 6] = [
    ("POST", "/api/v3.1/searches/deployments"),
    ("GET", "/api/v3.1/deployments"),
    ("GET", "/api/v3.1/nodes"),
    ("GET", "/api/v3.1/node-instances"),
    ("GET", "/api/v3.1/executions"),
    ("GET", "/api/v3.1/deployment-modifications"),
];

/// A refresh must end within this: `request_timeout` (1 s here) times three read attempts plus
/// their back-off, for each of the few routes a step can make stall, with room to spare.
const REFRESH_BOUND: Duration = Duration::from_secs(30);

/// What the hostile manager does to one route's answers.
#[derive(Debug, Clone)]
enum Fault {
    /// An HTML error page from a proxy (200 included).
    Html(u16),
    /// This status with this body as JSON's content type (garbage, empty, `null`, `{}`, ...).
    Body(u16, String),
    /// A lying answer: the real one with the value at a path replaced.
    Mutate(Vec<usize>, Value),
    /// The real answer cut after this many bytes.
    Truncate(usize),
    /// A 20 MiB answer, over the client's 16 MiB cap.
    Huge,
    /// The real answer, this many milliseconds late.
    Slow(u64),
    /// No answer at all.
    Stall,
    /// `_offset` ignored: every page is the first one.
    IgnoreOffset,
}

/// One fault on one route, for every request (`once`: only the next one, a transient fault).
#[derive(Debug, Clone)]
struct Hostility {
    route: usize,
    fault: Fault,
    once: bool,
}

impl Hostility {
    fn rule(&self) -> Rule {
        let (method, prefix) = ROUTES[self.route % ROUTES.len()];
        let rule = match method {
            "POST" => Rule::post(prefix),
            _ => Rule::get(prefix),
        };
        let rule = match &self.fault {
            Fault::Html(status) => rule.html(*status),
            Fault::Body(status, body) => rule.respond(*status, "application/json", body.clone()),
            Fault::Mutate(path, with) => {
                let (path, with) = (path.clone(), with.clone());
                rule.mutate_json(move |v| mutate(v, path.clone(), with.clone()))
            }
            Fault::Truncate(keep) => rule.truncate(*keep),
            Fault::Huge => rule.huge(20 * 1024 * 1024),
            Fault::Slow(ms) => rule.delay(Duration::from_millis(*ms)).pass(),
            Fault::Stall => rule.stall(),
            Fault::IgnoreOffset => rule.ignore_offset(),
        };
        if self.once { rule.times(1) } else { rule }
    }
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    // No 401: it starts the client's 60 s back-off (tested in the client suite), which would
    // turn the rest of the program into back-off refusals.
    let status = prop::sample::select(vec![200u16, 400, 403, 404, 429, 500, 502, 503]);
    let body = prop::sample::select(vec![
        "",
        "null",
        "{}",
        "[]",
        "\u{1}garbage{{{",
        r#"{"items":{"a":1}}"#,
        r#"{"items":[1,"x",null]}"#,
        r#"{"items":[{"id":42}],"metadata":{"pagination":{"total":1}}}"#,
        r#"{"message":"boom","error_code":"internal_server_error"}"#,
    ]);
    prop_oneof![
        3 => status.clone().prop_map(Fault::Html),
        3 => (status, body).prop_map(|(s, b)| Fault::Body(s, b.to_owned())),
        6 => (proptest::collection::vec(any::<usize>(), 0..6), arb_json())
            .prop_map(|(p, v)| Fault::Mutate(p, v)),
        3 => (0usize..4000).prop_map(Fault::Truncate),
        1 => Just(Fault::Huge),
        2 => (50u64..400).prop_map(Fault::Slow),
        1 => Just(Fault::Stall),
        1 => Just(Fault::IgnoreOffset),
    ]
}

/// A program: steps of one or two faults, each step ending with a refresh.
fn arb_program() -> impl Strategy<Value = Vec<Vec<Hostility>>> {
    let hostility = (0..ROUTES.len(), arb_fault(), any::<bool>())
        .prop_map(|(route, fault, once)| Hostility { route, fault, once });
    proptest::collection::vec(proptest::collection::vec(hostility, 1..3), 1..4)
}

/// Log lines of the provider, written by a subscriber set on the fuzz's own threads only.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The provider's events at trace level, to this buffer.
    fn dispatch(&self) -> tracing::Dispatch {
        let logs = self.clone();
        tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "autoscaler_cloudify=trace",
                ))
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }
}

/// What CA's reads and an operator's `/readyz` show: comparable across refreshes.
fn shape(s: &Snapshot) -> Vec<(String, i32, i32, i32, Vec<String>)> {
    let mut groups: Vec<_> = s
        .groups
        .iter()
        .map(|g| {
            let mut ids: Vec<String> = g.instances.iter().map(|i| i.provider_id.clone()).collect();
            ids.sort();
            (g.id.clone(), g.min, g.max, g.cloudify_target(), ids)
        })
        .collect();
    groups.sort();
    groups
}

struct Env {
    _sim: SimulatorHandle,
    hostile: HostileManager,
    app: App,
    ca: CloudProviderClient<Channel>,
    http: reqwest::Client,
    truth: Vec<(String, i32, i32, i32, Vec<String>)>,
}

/// Counts of what the steps did, for the figure.
#[derive(Default)]
struct Tally {
    programs: usize,
    refreshes: usize,
    failed: usize,
    slowest: Duration,
}

async fn env() -> Env {
    // 1,200 instances: the instance list takes two pages, so `_offset` matters.
    let sim = start_sim(scenario(Timing::instant()).with_instances(1200)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let mut config = test_config(&hostile.url());
    for c in &mut config.cloudify {
        c.request_timeout = Duration::from_secs(1);
    }
    let app = start(&config, ServiceSettings::default())
        .await
        .expect("provider");
    tokio::time::timeout(Duration::from_secs(20), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    let truth = shape(&app.inventory.snapshot());
    let ca = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20);
    Env {
        _sim: sim,
        hostile,
        app,
        ca,
        http: reqwest::Client::new(),
        truth,
    }
}

/// One refresh through `faults`, and every property that must hold after it.
async fn step(env: &mut Env, faults: &[Hostility], tally: &mut Tally) -> Result<(), TestCaseError> {
    env.hostile.clear_rules();
    for f in faults {
        env.hostile.add(f.rule());
    }
    let before = env.app.inventory.snapshot();
    let started = Instant::now();
    let result = tokio::time::timeout(REFRESH_BOUND, env.app.inventory.refresh())
        .await
        .map_err(|_| {
            TestCaseError::fail(format!("refresh still running after {REFRESH_BOUND:?}"))
        })?;
    tally.slowest = tally.slowest.max(started.elapsed());
    tally.refreshes += 1;
    if let Err(e) = &result {
        tally.failed += 1;
        prop_assert!(
            Arc::ptr_eq(&before, &env.app.inventory.snapshot()),
            "a failed refresh ({e}) replaced the served snapshot"
        );
    }
    let readyz: Value = env
        .http
        .get(format!("http://{}/readyz", env.app.http_addr))
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("/readyz: {e}")))?
        .json()
        .await
        .map_err(|e| TestCaseError::fail(format!("/readyz body: {e}")))?;
    prop_assert_eq!(
        &readyz["ready"],
        &Value::Bool(true),
        "serving the last snapshot: {}",
        readyz
    );
    prop_assert_eq!(
        readyz["detail"]["last_refresh_error"].is_null(),
        result.is_ok(),
        "/readyz tells the last refresh's outcome: {}",
        readyz
    );
    // CA's reads answer from whatever snapshot is served.
    let groups = env
        .ca
        .node_groups(req(proto::NodeGroupsRequest {}))
        .await
        .map_err(|s| TestCaseError::fail(format!("NodeGroups: {s}")))?
        .into_inner()
        .node_groups;
    for g in groups {
        env.ca
            .node_group_nodes(req(proto::NodeGroupNodesRequest { id: g.id.clone() }))
            .await
            .map_err(|s| TestCaseError::fail(format!("NodeGroupNodes {}: {s}", g.id)))?;
        env.ca
            .node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id: g.id.clone() }))
            .await
            .map_err(|s| TestCaseError::fail(format!("TargetSize {}: {s}", g.id)))?;
    }
    Ok(())
}

/// A program's steps, then a clean refresh that must give the truth back.
async fn program(
    env: &mut Env,
    steps: &[Vec<Hostility>],
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    tally.programs += 1;
    for faults in steps {
        step(env, faults, tally).await?;
    }
    env.hostile.clear_rules();
    let clean = env.app.inventory.refresh().await;
    prop_assert!(
        clean.is_ok(),
        "a clean refresh after the program: {:?}",
        clean.err()
    );
    prop_assert_eq!(
        &shape(&env.app.inventory.snapshot()),
        &env.truth,
        "a clean refresh gives the true inventory back"
    );
    prop_assert_eq!(worker_panics(), 0, "a provider thread panicked");
    Ok(())
}

fn knob(name: &str, default: u64, soak_default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if soak() { soak_default } else { default })
}

#[test]
fn the_provider_survives_random_hostile_manager_programs() {
    count_worker_panics();
    let cases = knob("HOSTILE_FUZZ_CASES", 40, 2000);
    let budget = Duration::from_secs(knob("HOSTILE_FUZZ_SECS", 25, 900));
    let logs = Logs::default();
    let dispatch = logs.dispatch();
    let _test_thread = tracing::dispatcher::set_default(&dispatch);
    let rt = {
        let dispatch = dispatch.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                // For the life of the thread: these threads run only this test's provider.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("runtime")
    };
    let fuzz_env = rt.block_on(env());
    let marker = "positive-control-5c2e-logged-as-a-secret-would-be";
    rt.block_on(async {
        // The control: an error message of the manager's own is logged where a secret would be.
        let body = format!(r#"{{"message":"{marker}","error_code":"internal_server_error"}}"#);
        fuzz_env
            .hostile
            .add(Rule::get("/api/v3.1/nodes").respond(500, "application/json", body));
        assert!(fuzz_env.app.inventory.refresh().await.is_err());
        fuzz_env.hostile.clear_rules();
        fuzz_env
            .app
            .inventory
            .refresh()
            .await
            .expect("clean refresh");
    });
    // The runner's closure is `Fn`: the environment is lent to each case through a lock.
    let env = Mutex::new(fuzz_env);
    let started = Instant::now();
    let tally = Mutex::new(Tally::default());
    let mut runner = TestRunner::new(PtConfig {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..PtConfig::default()
    });
    let outcome = runner.run(&arb_program(), |steps| {
        if started.elapsed() > budget {
            return Ok(());
        }
        let env = &mut *env.lock().expect("env");
        let tally = &mut *tally.lock().expect("tally");
        rt.block_on(program(env, &steps, tally))
    });
    let t = tally.into_inner().expect("tally");
    figure(
        "fuzz/hostile-manager",
        &format!(
            "{} programs, {} refreshes through the hostile manager ({} failed, each keeping the \
             served snapshot) in {:.1} s; slowest refresh {:.1} s; 0 panics; a clean refresh \
             gave the truth back after every program; trace logs {} bytes, no secret",
            t.programs,
            t.refreshes,
            t.failed,
            started.elapsed().as_secs_f64(),
            t.slowest.as_secs_f64(),
            logs.text().len(),
        ),
    );
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let text = logs.text();
    assert_would_find("provider trace logs", &text, marker);
    assert_no_secrets("provider trace logs", &text, &[PASSWORD]);
    rt.block_on(env.into_inner().expect("env").app.shutdown());
}
