//! The `scale` workflow's semantics over real HTTP: lifecycle walk, planned/current timing,
//! victim choice with and without hints, no min/max enforcement, failures and rollback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{Api, start, start_default};
use cloudify_sim::{Scenario, Timing};
use serde_json::{Value, json};

const OUT_ORDER: &[&str] = &[
    "uninitialized",
    "initializing",
    "creating",
    "created",
    "configuring",
    "configured",
    "starting",
    "started",
];
const IN_ORDER: &[&str] = &["started", "stopping", "stopped", "deleting", "deleted"];

fn paced(step_ms: u64) -> Scenario {
    Scenario::default_demo()
        .with_timing(Timing {
            execution_start_ms: 0,
            step_ms,
        })
        .with_seed(3)
}

fn error_text(e: &Value) -> String {
    e["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn scale_out_sets_planned_then_walks_new_instances_to_started() {
    let sim = start(paced(200)).await;
    let api = &sim.api;
    let before: BTreeSet<String> = api
        .vms("k8s-pool-a", "workers")
        .await
        .iter()
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 2}),
        )
        .await;
    let mut seen: Vec<String> = Vec::new();
    let mut saw_planned_before_current = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let props = api.group("k8s-pool-a", "workers").await;
        let new_vm = api
            .vms("k8s-pool-a", "workers")
            .await
            .into_iter()
            .find(|v| !before.contains(v["id"].as_str().unwrap_or_default()));
        if let Some(vm) = new_vm {
            let state = vm["state"].as_str().unwrap_or_default().to_string();
            if state != "started" {
                assert_eq!(
                    vm["runtime_properties"],
                    json!({}),
                    "props only once started"
                );
                if props["planned_instances"] == 4 && props["current_instances"] == 2 {
                    saw_planned_before_current = true;
                }
            }
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        let e = api.get_ok(&format!("/executions/{id}")).await;
        if e["status"] == "terminated" {
            break;
        }
        assert!(Instant::now() < deadline, "scale did not finish: {e}");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(
        saw_planned_before_current,
        "planned is set when the execution starts"
    );
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| {
            OUT_ORDER
                .iter()
                .position(|o| o == s)
                .expect("lifecycle state")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.len() >= 3,
        "several lifecycle states observed: {seen:?}"
    );
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["current_instances"],
        4
    );
    let vms = api.vms("k8s-pool-a", "workers").await;
    assert_eq!(vms.len(), 4);
    for vm in &vms {
        assert_eq!(vm["state"], "started");
        assert!(vm["runtime_properties"]["hostname"].is_string());
        assert!(vm["runtime_properties"]["ip"].is_string());
        assert!(vm["runtime_properties"]["external_id"].is_string());
    }
    // New instances get the next index.
    let indexes: BTreeSet<u64> = vms.iter().filter_map(|v| v["index"].as_u64()).collect();
    assert_eq!(indexes, BTreeSet::from([1, 2, 3, 4]));
}

#[tokio::test]
async fn scale_in_walks_down_then_removes_the_rows() {
    let sim = start(paced(200)).await;
    let api = &sim.api;
    let victim = api.vms("k8s-pool-a", "workers").await[0].clone();
    let victim_id = victim["id"].as_str().expect("id").to_string();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -1,
                   "include_instances": [victim_id]}),
        )
        .await;
    let mut seen: Vec<String> = Vec::new();
    let mut saw_planned = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Group first: if the row still exists afterwards, the scale had not finished when
        // the group was read (finishing updates current and drops the rows atomically).
        let props = api.group("k8s-pool-a", "workers").await;
        let (status, body) = api.get(&format!("/node-instances/{victim_id}")).await;
        if status.is_success() {
            let s = body["state"].as_str().unwrap_or_default().to_string();
            assert_eq!(props["current_instances"], 2);
            if s != "started" && props["planned_instances"] == 1 {
                saw_planned = true;
            }
            if seen.last() != Some(&s) {
                seen.push(s);
            }
        }
        let e = api.get_ok(&format!("/executions/{id}")).await;
        if e["status"] == "terminated" {
            break;
        }
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| IN_ORDER.iter().position(|o| o == s).expect("state"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.iter().any(|s| s == "stopping" || s == "stopped"),
        "{seen:?}"
    );
    assert!(
        saw_planned,
        "planned_instances drops when the scale-in starts"
    );
    assert_eq!(
        api.get(&format!("/node-instances/{victim_id}")).await.0,
        404
    );
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        api.instances("k8s-pool-a").await.len(),
        2,
        "VM and port both gone"
    );
}

async fn grow(api: &Api, to: i64) {
    let current = api.group("k8s-pool-a", "workers").await["current_instances"]
        .as_i64()
        .expect("current");
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": to - current}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
}

#[tokio::test]
async fn include_instances_chooses_exactly_the_named_victims() {
    let sim = start_default().await;
    let api = &sim.api;
    grow(api, 6).await;
    let vms = api.vms("k8s-pool-a", "workers").await;
    // One named by VM node-instance id, one by group-instance id.
    let by_vm = vms[1]["id"].as_str().expect("id").to_string();
    let by_group = vms[4]["scaling_groups"][0]["id"]
        .as_str()
        .expect("gid")
        .to_string();
    let expected_gone: BTreeSet<String> = [
        vms[1]["scaling_groups"][0]["id"]
            .as_str()
            .expect("gid")
            .to_string(),
        by_group.clone(),
    ]
    .into();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -2,
                   "include_instances": [by_vm, by_group]}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    let left: BTreeSet<String> = api
        .group_instance_ids("k8s-pool-a")
        .await
        .into_iter()
        .collect();
    assert_eq!(left.len(), 4);
    assert!(
        left.is_disjoint(&expected_gone),
        "{left:?} vs {expected_gone:?}"
    );

    // More hints than |delta|: only the first |delta| are removed.
    let vms = api.vms("k8s-pool-a", "workers").await;
    let first = vms[0]["scaling_groups"][0]["id"]
        .as_str()
        .expect("gid")
        .to_string();
    let second = vms[2]["scaling_groups"][0]["id"]
        .as_str()
        .expect("gid")
        .to_string();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -1,
                   "include_instances": [first, second]}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    let left = api.group_instance_ids("k8s-pool-a").await;
    assert!(!left.contains(&first) && left.contains(&second), "{left:?}");
}

#[tokio::test]
async fn victims_without_hints_are_arbitrary() {
    // Same starting point, different seeds: a client that relies on "newest first" or "oldest
    // first" would be wrong on some of these runs.
    let mut positions = BTreeSet::new();
    for seed in 1..=8 {
        let sim = start(
            Scenario::default_demo()
                .with_instances(8)
                .with_timing(Timing::instant())
                .with_seed(seed),
        )
        .await;
        let before = sim.api.group_instance_ids("k8s-pool-a").await;
        let id = sim
            .api
            .scale_ok(
                "k8s-pool-a",
                json!({"scalable_entity_name": "workers", "delta": -1}),
            )
            .await;
        assert_eq!(sim.api.wait_execution(&id).await["status"], "terminated");
        let after = sim.api.group_instance_ids("k8s-pool-a").await;
        assert_eq!(after.len(), 7);
        let removed = before
            .iter()
            .position(|g| !after.contains(g))
            .expect("one removed");
        positions.insert(removed);
        sim.handle.shutdown().await;
    }
    assert!(positions.len() >= 3, "victims vary: {positions:?}");

    // exclude_instances is honoured.
    let sim = start_default().await;
    grow(&sim.api, 5).await;
    let before = sim.api.group_instance_ids("k8s-pool-a").await;
    let keep = &before[..3];
    let id = sim
        .api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -2, "exclude_instances": keep}),
        )
        .await;
    assert_eq!(sim.api.wait_execution(&id).await["status"], "terminated");
    assert_eq!(sim.api.group_instance_ids("k8s-pool-a").await, keep);
}

#[tokio::test]
async fn delta_zero_succeeds_and_negative_total_fails_inside_the_execution() {
    let sim = start_default().await;
    let api = &sim.api;
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 0}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    assert_eq!(api.group_instance_ids("k8s-pool-a").await.len(), 2);

    // Accepted by POST (201), failed by the workflow.
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -3}),
        )
        .await;
    let e = api.wait_execution(&id).await;
    assert_eq!(e["status"], "failed");
    assert!(
        error_text(&e).contains(
            "Provided delta: -3 is illegal. current number of instances of entity workers is 2"
        ),
        "{e}"
    );
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(2), Some(2))
    );

    for (params, text) in [
        (
            json!({"scalable_entity_name": "workers", "delta": 1, "include_instances": ["x"]}),
            "cannot be included or excluded when scaling up",
        ),
        (
            json!({"scalable_entity_name": "nope", "delta": 1}),
            "No scalable entity named nope",
        ),
        (
            json!({"scalable_entity_name": "workers", "delta": i64::MAX}),
            "caps a group",
        ),
        (
            json!({"scalable_entity_name": "workers", "delta": i64::MIN}),
            "is illegal",
        ),
        (
            json!({"scalable_entity_name": "workers", "delta": u64::MAX}),
            "must be a number",
        ),
        (
            json!({"scalable_entity_name": "workers", "delta": -1, "include_instances": ["workers_zzzzzz"]}),
            "did not exist",
        ),
    ] {
        let id = api.scale_ok("k8s-pool-a", params.clone()).await;
        let e = api.wait_execution(&id).await;
        assert_eq!(e["status"], "failed", "{params}");
        assert!(error_text(&e).contains(text), "{params}: {e}");
    }
}

#[tokio::test]
async fn min_and_max_are_not_enforced() {
    let sim = start_default().await;
    let api = &sim.api;
    grow(api, 13).await; // max is 10
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(props["current_instances"], 13);
    assert_eq!(props["max_instances"], 10);
    grow(api, 0).await; // min is 1
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["current_instances"],
        0
    );
    assert!(api.instances("k8s-pool-a").await.is_empty());
}

#[tokio::test]
async fn failed_scale_out_rolls_back_with_the_error_text() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"fail_next_executions": 1,
                          "fail_reason": "Quota exceeded for instances: Requested 3, but already used 10 of 10 instances"}))
        .await;
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 3}),
        )
        .await;
    let e = api.wait_execution(&id).await;
    assert_eq!(e["status"], "failed");
    assert!(
        error_text(&e).contains("Quota exceeded for instances"),
        "{e}"
    );
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        api.instances("k8s-pool-a").await.len(),
        4,
        "added instances rolled back"
    );
    // The failure was consumed: the next scale works.
    grow(api, 3).await;
}

#[tokio::test]
async fn failure_without_rollback_leaves_a_started_modification() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"fail_next_executions": 1})).await;
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 2, "rollback_if_failed": false}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "failed");
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(2), Some(4))
    );
    let stuck = api
        .vms("k8s-pool-a", "workers")
        .await
        .into_iter()
        .filter(|v| v["state"] != "started")
        .count();
    assert_eq!(stuck, 2, "half-created instances stay");
    // As on a manager: the VMs failed in their `create`; their ports, which have no operation
    // and which the VMs depend on, were `started` before the VMs began.
    let instances = api.instances("k8s-pool-a").await;
    let half: Vec<&Value> = instances
        .iter()
        .filter(|i| i["state"] != "started")
        .collect();
    assert!(
        half.len() == 2
            && half
                .iter()
                .all(|i| i["state"] == "creating" && i["host_id"] == i["id"]),
        "only the VMs are half-created, `creating`: {half:?}"
    );
    // The next scale fails until it aborts the started modification.
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 1}),
        )
        .await;
    let e = api.wait_execution(&id).await;
    assert_eq!(e["status"], "failed");
    assert!(
        error_text(&e).contains("ExistingStartedDeploymentModificationError"),
        "{e}"
    );
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 1, "abort_started": true}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(api.vms("k8s-pool-a", "workers").await.len(), 3);
}

#[tokio::test]
async fn scale_in_failure_is_ignored_with_ignore_failure() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"fail_next_executions": 2})).await;
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -1}),
        )
        .await;
    let e = api.wait_execution(&id).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(
        api.vms("k8s-pool-a", "workers").await.len(),
        2,
        "rolled back"
    );
    assert!(
        api.vms("k8s-pool-a", "workers")
            .await
            .iter()
            .all(|v| v["state"] == "started")
    );
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -1, "ignore_failure": true}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    assert_eq!(api.vms("k8s-pool-a", "workers").await.len(), 1);
}
