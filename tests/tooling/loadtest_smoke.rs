//! Runs the load test (benches/loadtest) with `--quick`, in this process, against the real
//! binary and the simulator, and checks the invariants of issue #8 that do not depend on timing:
//! lookups and other reads cost zero Cloudify REST calls, and a refresh costs the same REST calls
//! whatever the number of CA calls and nodes (below one page of 1,000 instances). Timings are
//! reported, never asserted. In the Refresh phase, Refresh never fails whatever the manager does
//! (issue #13).

use testkit::loadtest;

use std::ffi::OsStr;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_loop_reads_never_call_cloudify_and_refresh_cost_is_constant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("loadtest.json");
    let args = loadtest::Args::parse_from([
        OsStr::new("loadtest"),
        OsStr::new("--quick"),
        OsStr::new("--json"),
        json.as_os_str(),
    ]);
    if let Err(e) = loadtest::run(args).await {
        panic!("loadtest failed: {e}");
    }
    let text = std::fs::read_to_string(&json).expect("loadtest JSON");
    let reports: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(reports.len(), 2, "one report per node count");

    let mut per_loop_by_size = Vec::new();
    for r in &reports {
        let nodes = r["nodes"].as_u64().expect("nodes");
        // Every node was asked for, plus the unmanaged repeats, sizes and instance lists.
        let for_node = r["latency"]["NodeGroupForNode"]["calls"]
            .as_u64()
            .unwrap_or(0);
        let loops = r["loops"].as_u64().expect("loops");
        assert!(
            for_node >= nodes * loops,
            "{nodes} nodes: {for_node} lookups"
        );
        assert_eq!(
            r["rest_calls_read_path"].as_u64(),
            Some(0),
            "{nodes} nodes: reads must not call Cloudify"
        );
        let per_loop: Vec<u64> = r["rest_calls_per_loop"]
            .as_array()
            .expect("rest_calls_per_loop")
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        assert_eq!(per_loop.len() as u64, loops);
        assert!(per_loop[0] > 0, "each loop's Refresh reads Cloudify");
        assert!(
            per_loop.iter().all(|c| *c == per_loop[0]),
            "{nodes} nodes: REST calls differ between identical loops: {per_loop:?}"
        );
        per_loop_by_size.push(per_loop[0]);
        // The Refresh phase (issue #13): Refresh never fails once a snapshot is loaded, whatever
        // the manager does (healthy, down, slow, failing).
        let conditions = r["refresh_conditions"]
            .as_array()
            .expect("refresh_conditions");
        assert_eq!(conditions.len(), 4, "{conditions:?}");
        for c in conditions {
            assert!(c["refresh"]["calls"].as_u64() > Some(0), "{c}");
            assert_eq!(c["refresh_errors"].as_u64(), Some(0), "{c}");
        }
    }
    // 200 and 800 nodes both fit one page: the same calls, although the second loop makes four
    // times as many NodeGroupForNode calls.
    assert_eq!(
        per_loop_by_size[0], per_loop_by_size[1],
        "REST calls per loop must not grow with nodes or CA calls"
    );
}
