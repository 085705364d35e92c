//! The design's invariants, each one a test, over real sockets against the simulator.

use std::collections::BTreeSet;
use std::time::Duration;

use autoscaler_cloudify::proto;
use cloudify_sim::{Scenario, Timing};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use testkit::env::*;
use tonic::Code;

#[tokio::test]
async fn fifty_concurrent_increases_of_one_end_at_exactly_max() {
    let mut env = start_default().await;
    let calls = (0..50).map(|_| {
        let mut c = env.client.clone();
        async move {
            c.node_group_increase_size(proto::NodeGroupIncreaseSizeRequest {
                delta: 1,
                id: WORKERS.into(),
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!((ok, exhausted), (8, 42), "2 + 8 = max 10, the rest refused");
    assert_eq!(env.target(WORKERS).await, 10);
    env.wait_executions_done().await;
    let nodes = env.wait_running(WORKERS, 10).await;
    assert_eq!(nodes.len(), 10, "Cloudify really has 10, never more");
    assert_eq!(env.target(WORKERS).await, 10);
    let dep = env.cfy_get("/deployments/k8s-pool-a").await;
    assert_eq!(
        dep["scaling_groups"]["workers"]["properties"]["current_instances"],
        10
    );
    env.shutdown().await;
}

#[tokio::test]
async fn delete_nodes_removes_exactly_the_named_instances_over_random_trials() {
    let scenario = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(11)
        .with_instances(30);
    let mut env = start_with(scenario, TEST_CONFIG).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let mut current: BTreeSet<String> = env.wait_running_ids(WORKERS, 30).await;
    for trial in 0..8 {
        let k = rng.random_range(1..=3);
        let pool: Vec<String> = current.iter().cloned().collect();
        let victims: Vec<String> = pool.choose_multiple(&mut rng, k).cloned().collect();
        // CA sends one node per call, concurrently.
        let calls = victims.iter().map(|v| {
            let mut c = env.client.clone();
            let req = proto::NodeGroupDeleteNodesRequest {
                id: WORKERS.into(),
                nodes: vec![node(v, v)],
            };
            async move { c.node_group_delete_nodes(req).await }
        });
        for r in futures::future::join_all(calls).await {
            r.expect("delete accepted");
        }
        for v in &victims {
            current.remove(v);
        }
        env.wait_executions_done().await;
        let after: BTreeSet<String> = env.wait_running_ids(WORKERS, current.len()).await;
        assert_eq!(after, current, "trial {trial}: exactly {victims:?} removed");
        assert_eq!(env.target(WORKERS).await as usize, current.len());
    }
    // The concurrent calls of each trial went out as one scale execution each.
    let execs = env
        .cfy_get("/executions?workflow_id=scale&_size=1000")
        .await;
    let n = execs["items"].as_array().map_or(0, |a| a.len());
    assert_eq!(n, 8, "one execution per trial: {execs}");
    // The provider checks every scale-in after it ends: wait until all 8 checks are done, then
    // none may have found a mismatch.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = env.app.metrics.encode();
        let checked = metric(
            &metrics,
            "autoscaler_cloudify_scale_executions_total",
            &["direction=\"down\"", "result=\"terminated\""],
        ) + metric(
            &metrics,
            "autoscaler_cloudify_scale_executions_total",
            &["direction=\"down\"", "result=\"mismatch\""],
        );
        if checked >= 8.0 {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scale-ins never all checked: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric(
            &metrics,
            "autoscaler_cloudify_scale_down_mismatches_total",
            &[]
        ),
        0.0,
        "{metrics}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn foreign_or_unknown_node_is_refused_without_any_cloudify_call() {
    let mut env = start_default().await;
    env.increase(GPU, 1).await.expect("gpu instance");
    env.wait_executions_done().await;
    let gpu = env.wait_running(GPU, 1).await[0].id.clone();
    let worker = env.nodes(WORKERS).await[0].id.clone();
    let before = env.request_total().await;
    for (nodes, why) in [
        (vec![gpu.as_str()], "node of another group"),
        (
            vec!["cloudify://default_tenant/k8s-control-plane/control_plane_host_x"],
            "control plane",
        ),
        (vec!["aws:///zone/i-0"], "unknown"),
        (
            vec![worker.as_str(), gpu.as_str()],
            "one foreign node among valid ones",
        ),
    ] {
        let e = env.delete(WORKERS, &nodes).await.expect_err(why);
        assert_eq!(e.code(), Code::InvalidArgument, "{why}: {e:?}");
    }
    // Nothing joined a delete batch (a batched instance shows as deleting at once), so no
    // scale-in can follow later.
    assert!(
        env.nodes(WORKERS).await.iter().all(|i| state_of(i) != 3),
        "nothing is being deleted"
    );
    assert_eq!(env.request_total().await, before, "no Cloudify call at all");
    assert_eq!(env.target(WORKERS).await, 2);
    env.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_lookups_make_zero_rest_calls() {
    let mut env = start_default().await;
    let ids: Vec<String> = env.nodes(WORKERS).await.into_iter().map(|i| i.id).collect();
    let before = env.request_total().await;
    for i in 0..10_000 {
        let (pid, want) = match i % 3 {
            0 => (ids[i % ids.len()].clone(), WORKERS),
            1 => (
                "cloudify://default_tenant/k8s-control-plane/control_plane_host_x".to_owned(),
                "",
            ),
            _ => (format!("aws:///zone/i-{i}"), ""),
        };
        assert_eq!(env.group_for(&pid, "").await, want);
    }
    // Other reads too.
    for _ in 0..100 {
        env.target(WORKERS).await;
        env.nodes(WORKERS).await;
        env.client
            .node_groups(proto::NodeGroupsRequest {})
            .await
            .expect("groups");
        env.client
            .node_group_template_node_info(proto::NodeGroupTemplateNodeInfoRequest {
                id: WORKERS.into(),
            })
            .await
            .expect("template");
    }
    assert_eq!(
        env.request_total().await,
        before,
        "reads never call Cloudify"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn failed_scale_out_reports_errored_instances_until_ca_deletes_them() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"fail_next_executions": 1, "fail_reason": "Quota exceeded for instances: Requested 2, but already used 20 of 20"}))
        .await;
    env.increase(WORKERS, 2).await.expect("accepted");
    env.wait_executions_done().await;
    env.refresh().await;
    let nodes = env.nodes(WORKERS).await;
    let failed: Vec<&proto::Instance> = nodes
        .iter()
        .filter(|i| {
            i.status
                .as_ref()
                .and_then(|s| s.error_info.as_ref())
                .is_some()
        })
        .collect();
    assert_eq!(failed.len(), 2, "{nodes:?}");
    for f in &failed {
        let s = f.status.as_ref().expect("status");
        assert_eq!(s.instance_state, 2, "creating");
        let e = s.error_info.as_ref().expect("error");
        assert!(!e.error_code.is_empty());
        assert_eq!(e.instance_error_class, 1, "quota => OutOfResources");
    }
    assert_eq!(
        env.target(WORKERS).await,
        4,
        "the failed instances still count until deleted"
    );
    // CA deletes them as fake nodes (name == providerID == instance id).
    // Writes only: reads go on in the background (the refresh after an execution ends, #13),
    // and `POST /searches/deployments` is one of them (discovery's label search).
    let writes = |v: serde_json::Value| -> u64 {
        v["routes"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| !k.starts_with("GET ") && !k.contains(" /api/v3.1/searches/"))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let routes_before = env.requests().await;
    let before = writes(routes_before.clone());
    let ids: Vec<String> = failed.iter().map(|f| f.id.clone()).collect();
    env.delete(WORKERS, &[&ids[0], &ids[1]])
        .await
        .expect("fake nodes accepted");
    let routes_after = env.requests().await;
    assert_eq!(
        writes(routes_after.clone()),
        before,
        "nothing to remove in Cloudify: {routes_before} -> {routes_after}"
    );
    assert_eq!(env.target(WORKERS).await, 2);
    env.refresh().await;
    assert_eq!(env.target(WORKERS).await, 2);
    assert_eq!(env.nodes(WORKERS).await.len(), 2);
    env.shutdown().await;
}

#[tokio::test]
async fn a_restarted_provider_agrees_on_target_size() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"hold_executions": true}))
        .await;
    env.increase(WORKERS, 3).await.expect("increase");
    assert_eq!(env.target(WORKERS).await, 5);
    // A second replica (or a restart) derives the same target from Cloudify alone.
    let cfg = config(&env.sim.url(), TEST_CONFIG);
    let second = autoscaler_cloudify::app::start(&cfg, settings())
        .await
        .expect("second");
    second.inventory.wait_ready().await;
    assert_eq!(second.service.target_size(WORKERS).expect("target"), 5);
    // And it refuses to go above max as well.
    let e = second
        .service
        .increase_size(WORKERS, 6)
        .await
        .expect_err("5 + 6 > 10");
    assert!(e.to_string().contains("max"), "{e}");
    second.shutdown().await;
    env.clear_faults().await;
    env.wait_executions_done().await;
    env.shutdown().await;
}

/// Issue 19: a refresh reads what changed. Reading everything costs a constant number of calls
/// plus one per page of 1,000 instances; a refresh of a manager where nothing happened costs
/// the constant part only (executions before and after, started modifications, the search),
/// whatever the number of instances; a scale on one deployment adds the pages of its instances.
#[tokio::test]
async fn a_refresh_costs_a_constant_plus_one_call_per_thousand_instances_that_changed() {
    let mut costs = Vec::new();
    for n in [10u64, 999, 2500] {
        let scenario = Scenario::default_demo()
            .with_timing(Timing::instant())
            .with_instances(n);
        for full_every in ["1h", "0s"] {
            let yaml = TEST_CONFIG.replace(
                "max_age: 0s}",
                &format!("max_age: 0s, full_every: {full_every}}}"),
            );
            let mut env = start_with(scenario.clone(), &yaml).await;
            let before = env.requests().await;
            env.refresh().await;
            let after = env.requests().await;
            let delta = |route: &str| {
                after["routes"][route].as_u64().unwrap_or(0)
                    - before["routes"][route].as_u64().unwrap_or(0)
            };
            let total =
                after["total"].as_u64().unwrap_or(0) - before["total"].as_u64().unwrap_or(0);
            costs.push((n, full_every, total, delta("GET /api/v3.1/node-instances")));
            env.shutdown().await;
        }
    }
    // Quiet: executions, started modifications, the search, executions again = 4. Everything:
    // those, the nodes, and a call per page of 1000 instances.
    assert_eq!(
        costs,
        vec![
            (10, "1h", 4, 0),
            (10, "0s", 6, 1),
            (999, "1h", 4, 0),
            (999, "0s", 6, 1),
            (2500, "1h", 4, 0),
            (2500, "0s", 8, 3)
        ],
        "(instances, full_every, calls, instance pages)"
    );
}

/// The value of one sample in Prometheus text: the line of `name` whose labels contain every
/// one of `labels` (0 when absent).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Seed 114 of the interleaving checker: CA's retry of a node whose scale-in was on its way,
/// together with a new node, got the failed POST's error while the new node stayed in the next
/// batch and was removed anyway. CA had un-tainted it on the error: a VM removed that no
/// accepted DeleteNodes named. A call that answers an error must have removed none of its nodes.
#[tokio::test]
async fn a_delete_that_fails_because_its_node_in_flight_failed_removes_none_of_its_nodes() {
    let scenario = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(114)
        .with_instances(4);
    let mut env = start_with(scenario, TEST_CONFIG).await;
    let ids: Vec<String> = env.wait_running_ids(WORKERS, 4).await;
    let (x, y, z) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    const POST: &str = "POST /api/v3.1/executions";
    let posts_before = env.route_count(POST).await;
    // x's scale-in is refused (500, nothing stored); the latency keeps its POST on its way
    // while the retry comes in.
    env.faults(json!({"latency_ms": 500, "reject_next_execution_posts": 1}))
        .await;
    let mut first = env.client.clone();
    let x_only = proto::NodeGroupDeleteNodesRequest {
        id: WORKERS.into(),
        nodes: vec![node(&x, &x)],
    };
    let a = tokio::spawn(async move { first.node_group_delete_nodes(x_only).await });
    // The simulator counts a request before its latency: x's POST is on its way.
    while env.route_count(POST).await == posts_before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retry = env.delete(WORKERS, &[&x, &y]).await;
    let a = a.await.expect("first call");
    assert!(a.is_err(), "x's scale-in was refused: {a:?}");
    assert!(
        retry.is_err(),
        "x, on its way, was not removed: the retry cannot succeed: {retry:?}"
    );
    env.clear_faults().await;
    // A later scale-in goes after any the retry left behind (one flush at a time, in order).
    env.delete(WORKERS, &[&z]).await.expect("z goes");
    env.wait_executions_done().await;
    let executions = env
        .cfy_get("/executions?workflow_id=scale&_include=id,parameters&_size=1000")
        .await;
    let y_vm = y.rsplit('/').next().unwrap_or_default().to_owned();
    let naming_y: Vec<&serde_json::Value> = executions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["parameters"]["include_instances"]
                .as_array()
                .is_some_and(|i| i.iter().any(|v| v.as_str() == Some(y_vm.as_str())))
        })
        .collect();
    assert!(
        naming_y.is_empty(),
        "the retry answered {retry:?}, yet a scale-in removes {y_vm}: {naming_y:?}"
    );
    env.shutdown().await;
}
