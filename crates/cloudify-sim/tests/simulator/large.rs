//! Benchmark-scale scenario: 100,000 group instances (200,000 node instances). Startup and
//! paging must stay fast (no O(n^2)); the bounds here are loose enough for a debug build on a
//! busy 2-core machine and only catch algorithmic regressions.

use std::time::{Duration, Instant};

use crate::support::start;
use cloudify_sim::{Scenario, Timing};
use serde_json::json;

#[tokio::test]
async fn hundred_thousand_instances_start_and_page_quickly() {
    let t = Instant::now();
    let sim = start(
        Scenario::default_demo()
            .with_instances(100_000)
            .with_timing(Timing::instant())
            .with_seed(11),
    )
    .await;
    let startup = t.elapsed();
    let api = &sim.api;

    let t = Instant::now();
    let first = api.get_ok("/node-instances?_size=1000").await;
    let first_page = t.elapsed();
    assert_eq!(first["metadata"]["pagination"]["total"], 200_001);
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1000));

    let t = Instant::now();
    let deep = api
        .get_ok(
            "/node-instances?deployment_id=k8s-pool-a&_size=1000&_offset=150000&_include=id,state",
        )
        .await;
    let deep_page = t.elapsed();
    assert_eq!(deep["items"].as_array().map(Vec::len), Some(1000));

    // A scale on the big group touches only what it needs.
    let t = Instant::now();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": 10}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    let victim = first["items"][0]["id"].as_str().expect("id").to_string();
    let id = api
        .scale_ok(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": -1, "include_instances": [victim]}),
        )
        .await;
    assert_eq!(api.wait_execution(&id).await["status"], "terminated");
    let scales = t.elapsed();
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["current_instances"],
        100_009
    );
    println!(
        "startup {startup:?}, first page {first_page:?}, deep filtered page {deep_page:?}, two scales {scales:?}"
    );
    assert!(startup < Duration::from_secs(30), "startup {startup:?}");
    assert!(
        first_page < Duration::from_secs(2),
        "first page {first_page:?}"
    );
    assert!(
        deep_page < Duration::from_secs(2),
        "deep page {deep_page:?}"
    );
    assert!(scales < Duration::from_secs(10), "scales {scales:?}");
}
