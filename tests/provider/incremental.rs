//! Issue 19, item 7: a refresh reads again only what may have changed since the last one, and
//! still serves what a refresh that reads everything would.
//!
//! Two inventories over the same simulator, one incremental (the default) and one reading
//! everything on every refresh, while scales of every kind run (out, in with hints, failed
//! with and without rollback, queued behind each other, left-over modifications). Each sample
//! is a full read, an incremental read, and a full read again: when the two full reads agree
//! the manager did not move in between, and the incremental read must have served exactly the
//! same groups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autoscaler_cloudify::cloudify::{Cloudify, CloudifyClient};
use autoscaler_cloudify::inventory::{FetchOptions, Inventory, Snapshot};
use autoscaler_cloudify::observability::metrics::Metrics;
use cloudify_sim::{DeploymentSpec, GroupSpec, LabelValues, Scenario, Timing};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use testkit::env::hostile::{HostileManager, Seen};
use testkit::env::*;

const POOLS: usize = 6;

fn scenario() -> Scenario {
    let mut s = Scenario::default_demo()
        // Steps long enough for a sample (three refreshes) to fit between two of them, so
        // that most samples fall in the middle of a scale.
        .with_timing(Timing {
            execution_start_ms: 100,
            step_ms: 150,
        })
        .with_seed(19);
    s.deployments = (0..POOLS)
        .map(|i| DeploymentSpec {
            id: format!("pool-{i}"),
            tenant: None,
            blueprint_id: None,
            labels: [("k8s-cluster".to_owned(), LabelValues::One("demo".into()))].into(),
            scaling_groups: vec![GroupSpec {
                name: "workers".into(),
                min: 0,
                max: 20,
                current: 2,
                default: None,
                extra_vms: Vec::new(),
            }],
            standalone_vms: 0,
            standalone_node: "control_plane_host".into(),
        })
        .collect();
    s
}

fn inventory(url: &str, full_every: Duration) -> Arc<Inventory> {
    let cfg = config(url, TEST_CONFIG);
    let client = CloudifyClient::new(cfg.cloudify[0].clone(), None).expect("client");
    Inventory::with_options(
        vec![Arc::new(client) as Arc<dyn Cloudify>],
        Arc::new(cfg.node_groups),
        Metrics::new(),
        FetchOptions { full_every },
    )
}

/// What CA sees of a snapshot, and what the domain counts with: every field of every group.
fn groups(s: &Snapshot) -> Vec<String> {
    s.groups.iter().map(|g| format!("{g:?}")).collect()
}

/// The groups of `b` that differ from `a`'s (a failure shows them, not all six).
fn differences(a: &[String], b: &[String]) -> Vec<String> {
    b.iter()
        .enumerate()
        .filter(|(i, g)| a.get(*i) != Some(*g))
        .map(|(i, g)| format!("incremental: {g}\nfull:        {:?}", a.get(i)))
        .collect()
}

async fn post_scale(http: &reqwest::Client, url: &str, body: Value) {
    let r = http
        .post(format!("{url}/api/v3.1/executions"))
        .basic_auth("admin", Some("admin"))
        .header("Tenant", "default_tenant")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{}", r.status());
}

async fn vms(url: &str, deployment: &str) -> Vec<String> {
    let v = get(
        url,
        &format!("/node-instances?deployment_id={deployment}&node_id=workers_host"),
    )
    .await;
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["state"] == "started")
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect()
}

/// Scales of every kind on random pools until `stop`.
async fn activity(url: String, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let sim = cloudify_sim::SimControl::new(&url);
    let mut rng = StdRng::seed_from_u64(19);
    while !stop.load(Ordering::SeqCst) {
        let pool = format!("pool-{}", rng.random_range(0..POOLS));
        let mut parameters = json!({"scalable_entity_name": "workers"});
        match rng.random_range(0..6) {
            0 | 1 => parameters["delta"] = json!(rng.random_range(1..3)),
            2 | 3 => {
                let ids = vms(&url, &pool).await;
                let Some(victim) = ids.choose(&mut rng) else {
                    continue;
                };
                parameters["delta"] = json!(-1);
                parameters["include_instances"] = json!([victim]);
            }
            4 => {
                let patch = cloudify_sim::FaultsPatch {
                    fail_next_executions: Some(1),
                    ..Default::default()
                };
                sim.set_faults(&patch).await.expect("faults");
                parameters["delta"] = json!(1);
                parameters["rollback_if_failed"] = json!(rng.random_bool(0.5));
            }
            _ => {
                // A scale that aborts what a failure without rollback left started.
                parameters["delta"] = json!(1);
                parameters["abort_started"] = json!(true);
            }
        }
        post_scale(
            &http,
            &url,
            json!({"deployment_id": pool, "workflow_id": "scale", "parameters": parameters,
                   "queue": true}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_refresh_serves_what_a_full_one_reads_under_scale_activity() {
    let sim = cloudify_sim::Simulator::start(scenario(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    // The incremental inventory goes through a pass-through proxy that counts its reads.
    let proxy = HostileManager::start(&sim.url()).await;
    let incremental = inventory(&proxy.url(), Duration::from_secs(3600));
    let full = inventory(&sim.url(), Duration::ZERO);
    incremental.refresh().await.expect("first refresh");
    proxy.take_requests();

    let stop = Arc::new(AtomicBool::new(false));
    let chaos = tokio::spawn(activity(sim.url(), Arc::clone(&stop)));
    let (mut compared, mut samples, mut refreshes) = (0, 0, 0);
    let end = Instant::now() + Duration::from_secs(25);
    while Instant::now() < end || compared < 30 {
        assert!(
            Instant::now() < end + Duration::from_secs(60),
            "only {compared} of {samples} samples saw a manager that stood still"
        );
        samples += 1;
        let (Ok(a), Ok(b), Ok(c)) = (
            full.refresh().await,
            incremental.refresh().await,
            full.refresh().await,
        ) else {
            // A pass that never settled (scales moving all along): no sample.
            continue;
        };
        refreshes += 1;
        if groups(&a) == groups(&c) {
            compared += 1;
            let different = differences(&groups(&a), &groups(&b));
            assert!(
                different.is_empty() && groups(&a).len() == groups(&b).len(),
                "sample {samples}: the incremental refresh differs from a full one:\n{}",
                different.join("\n")
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    chaos.await.expect("activity task");

    // ...and it read less: the instances of the pools with activity only.
    let reads = |seen: &[Seen], path: &str| -> Vec<String> {
        seen.iter()
            .filter(|s| s.path == path)
            .flat_map(|s| s.param("deployment_id"))
            .collect()
    };
    let seen = proxy.take_requests();
    let instance_reads = reads(&seen, "/api/v3.1/node-instances").len();
    assert!(
        instance_reads < refreshes * POOLS,
        "{instance_reads} deployment reads of instances in {refreshes} refreshes of {POOLS} pools"
    );
    assert!(
        reads(&seen, "/api/v3.1/nodes").is_empty(),
        "nodes never change without a deployment update"
    );
    eprintln!(
        "{compared} of {samples} samples compared; {instance_reads} instance reads of a \
         deployment in {refreshes} incremental refreshes ({} for full ones)",
        refreshes * POOLS
    );

    // Once the manager is quiet, a refresh reads no instance but those of deployments where
    // something is still unfinished (a modification a failure left started, a VM not started).
    wait_quiet(&sim.url()).await;
    incremental.refresh().await.expect("refresh");
    proxy.take_requests();
    incremental.refresh().await.expect("refresh");
    let quiet = proxy.take_requests();
    let unfinished = unfinished(&sim.url()).await;
    let read = reads(&quiet, "/api/v3.1/node-instances");
    assert!(
        read.iter().all(|d| unfinished.contains(d)),
        "read {read:?}, unfinished {unfinished:?}"
    );
    assert_eq!(
        groups(&incremental.snapshot()),
        groups(&full.refresh().await.expect("full")),
    );
    sim.shutdown().await;
}

async fn get(url: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/api/v3.1{path}"))
        .basic_auth("admin", Some("admin"))
        .header("Tenant", "default_tenant")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn wait_quiet(url: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get(url, "/executions?workflow_id=scale&_include=id,status").await;
        let busy = v["items"].as_array().into_iter().flatten().any(|e| {
            !matches!(
                e["status"].as_str(),
                Some("terminated" | "failed" | "cancelled")
            )
        });
        if !busy {
            return;
        }
        assert!(Instant::now() < end, "executions still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deployments with a started modification or a VM that is not `started`.
async fn unfinished(url: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mods = get(url, "/deployment-modifications?status=started").await;
    let vms = get(url, "/node-instances?node_id=workers_host").await;
    for item in mods["items"].as_array().into_iter().flatten() {
        out.extend(item["deployment_id"].as_str().map(str::to_owned));
    }
    for item in vms["items"].as_array().into_iter().flatten() {
        if item["state"] != "started" {
            out.extend(item["deployment_id"].as_str().map(str::to_owned));
        }
    }
    out
}
