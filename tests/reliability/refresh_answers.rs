//! Reliability suite, part 5 (issue 20, items 5-7): answers that are well-formed but cannot all
//! be true, through the test kit's hostile manager in front of the simulator. Paging that makes
//! no progress, parts of a refresh that contradict each other, and a manager behind gunicorn's
//! 4 KiB request line: the refresh fails with a typed error and the last complete snapshot stays
//! (or, for a short-lived contradiction, the pass is read again), and no request grows with the
//! number of deployments.

use std::collections::BTreeMap;
use std::time::Duration;

use autoscaler_cloudify::app::{App, start};
use autoscaler_cloudify::cloudify::CloudifyError;
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::inventory::{InventoryError, Snapshot};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use cloudify_sim::{DeploymentSpec, GroupSpec, LabelValues, Scenario, Timing};
use serde_json::{Value, json};
use testkit::reliability::hostile::{HostileManager, Rule};
use testkit::reliability::*;

const NODE_INSTANCES: &str = "/api/v3.1/node-instances";

/// The provider's configuration: `full_every: 0s` makes every refresh read every route (a
/// refresh of a quiet manager reads no nodes or instances, and so meets no lie about them).
fn config(url: &str, node_groups: &str, full_every: &str) -> Config {
    let overrides = Overrides {
        node_controller: Some(false),
        ..Overrides::default()
    };
    let yaml = format!(
        "refresh: {{interval: 1h, max_age: 0s, full_every: {full_every}}}\n\
         cloudify:\n  - {{name: main, url: \"{url}\", tenant: default_tenant, username: admin, \
         request_timeout: 5s}}\n\
         node_groups:\n  {node_groups}\n"
    );
    loopback_config(&yaml, overrides)
}

const DISCOVERY: &str = "auto_discovery: [\"cloudify:label=k8s-cluster=demo\"]";

/// The provider in-process against `url`, ready (its first snapshot loaded).
async fn provider(url: &str, node_groups: &str, full_every: &str) -> App {
    let settings = ServiceSettings {
        refresh_max_age: Duration::ZERO,
        ..ServiceSettings::default()
    };
    let app = start(&config(url, node_groups, full_every), settings)
        .await
        .expect("provider");
    if tokio::time::timeout(Duration::from_secs(60), app.inventory.wait_ready())
        .await
        .is_err()
    {
        panic!("no first snapshot: {:?}", app.inventory.status().last_error);
    }
    app
}

/// Group ids with their instances' provider ids: what CA sees of a snapshot.
fn shape(s: &Snapshot) -> Vec<(String, usize, Vec<String>)> {
    s.groups
        .iter()
        .map(|g| {
            (
                g.id.clone(),
                g.planned as usize,
                g.instances.iter().map(|i| i.provider_id.clone()).collect(),
            )
        })
        .collect()
}

/// Sets `metadata.pagination.total` of a list answer.
fn total(v: &mut Value, n: u64) {
    v["metadata"]["pagination"]["total"] = json!(n);
}

/// Issue 20, item 5: with `_offset` ignored, a large total made the refresh page for ever
/// (while `/readyz` stayed green on the old snapshot), and the true total made it keep the first
/// page and drop every instance past it without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_ignores_the_offset_fails_the_refresh_instead_of_looping_or_dropping() {
    let sim = start_sim(scenario(Timing::instant()).with_instances(1500)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let app = provider(&hostile.url(), DISCOVERY, "0s").await;
    let good = shape(&app.inventory.snapshot());
    assert_eq!(app.inventory.snapshot().instance_count(), 1500);

    let cases: [(&str, Rule); 2] = [
        (
            "ignored offset, huge total",
            Rule::get(NODE_INSTANCES)
                .ignore_offset()
                .mutate_json(|v| total(v, 1_000_000_000)),
        ),
        (
            "ignored offset, true total",
            Rule::get(NODE_INSTANCES).ignore_offset(),
        ),
    ];
    for (name, rule) in cases {
        hostile.add(rule);
        let result = tokio::time::timeout(Duration::from_secs(30), app.inventory.refresh())
            .await
            .unwrap_or_else(|_| panic!("{name}: the refresh did not end"));
        let e = result
            .err()
            .unwrap_or_else(|| panic!("{name}: refresh accepted"));
        assert!(
            matches!(e.cloudify(), Some(CloudifyError::Paging { .. })),
            "{name}: {e}"
        );
        assert!(e.to_string().contains("_offset"), "{name}: {e}");
        assert_eq!(
            shape(&app.inventory.snapshot()),
            good,
            "{name}: snapshot kept"
        );
        let st = app.inventory.status();
        assert!(
            st.last_error.is_some_and(|m| m.contains("_offset")),
            "{name}"
        );
        hostile.clear_rules();
        app.inventory.refresh().await.expect("good refresh");
    }
    app.shutdown().await;
}

/// Issue 20, item 6: well-formed answers that contradict the rest of the refresh made groups or
/// instances vanish from CA's view with no refresh error. Each one, answered for as long as the
/// refresh reads again, now fails the refresh and keeps the last snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_contradict_the_rest_of_the_refresh_keep_the_last_snapshot() {
    let sim = start_sim(scenario(Timing::instant()).with_instances(3)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let app = provider(&hostile.url(), DISCOVERY, "0s").await;
    let good = shape(&app.inventory.snapshot());
    assert_eq!(app.inventory.snapshot().instance_count(), 3);

    let no_groups = |v: &mut Value| {
        for d in v["items"].as_array_mut().into_iter().flatten() {
            d["scaling_groups"] = Value::Null;
        }
    };
    let cases: Vec<(&str, Vec<Rule>)> = vec![
        (
            "no nodes",
            vec![Rule::get("/api/v3.1/nodes").mutate_json(|v| {
                v["items"] = json!([]);
                total(v, 0);
            })],
        ),
        (
            "no node instances",
            vec![Rule::get(NODE_INSTANCES).mutate_json(|v| {
                v["items"] = json!([]);
                total(v, 0);
            })],
        ),
        (
            "fewer node instances than the group's count",
            vec![Rule::get(NODE_INSTANCES).mutate_json(|v| {
                if let Some(items) = v["items"].as_array_mut() {
                    items.truncate(2);
                }
                let n = v["items"].as_array().map_or(0, Vec::len) as u64;
                total(v, n);
            })],
        ),
        (
            "scaling_groups: null",
            vec![
                Rule::post("/api/v3.1/searches/deployments").mutate_json(no_groups),
                Rule::get("/api/v3.1/deployments").mutate_json(no_groups),
            ],
        ),
    ];
    for (name, rules) in cases {
        for r in rules {
            hostile.add(r);
        }
        let e = app
            .inventory
            .refresh()
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: refresh accepted"));
        assert!(
            matches!(e, InventoryError::Inconsistent { .. }),
            "{name}: {e}"
        );
        assert_eq!(
            shape(&app.inventory.snapshot()),
            good,
            "{name}: snapshot kept"
        );
        let st = app.inventory.status();
        assert!(st.last_error.is_some(), "{name}: reported in /readyz");
        hostile.clear_rules();
        app.inventory.refresh().await.expect("good refresh");
        assert_eq!(shape(&app.inventory.snapshot()), good);
    }
    app.shutdown().await;
}

/// The real manager's reads are not atomic with each other: a contradiction that the next read
/// no longer shows is one of those windows, not a lie. The refresh reads the pass again and
/// serves the second, consistent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contradiction_that_does_not_last_is_read_again() {
    let sim = start_sim(scenario(Timing::instant()).with_instances(3)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let app = provider(&hostile.url(), DISCOVERY, "0s").await;
    let good = shape(&app.inventory.snapshot());
    hostile.take_requests();
    hostile.add(Rule::get(NODE_INSTANCES).times(1).mutate_json(|v| {
        v["items"] = json!([]);
        total(v, 0);
    }));
    app.inventory
        .refresh()
        .await
        .expect("the second pass is consistent");
    assert_eq!(shape(&app.inventory.snapshot()), good);
    let reads = hostile
        .requests()
        .iter()
        .filter(|s| s.path == NODE_INSTANCES)
        .count();
    assert_eq!(reads, 2, "the instances were read again");
    app.shutdown().await;
}

/// `count` deployments labelled `k8s-cluster=demo`, each with one group of one VM, with ids
/// of about 50 characters.
fn many_deployments(count: usize) -> Scenario {
    let mut s = scenario(Timing::instant());
    s.deployments = (0..count)
        .map(|i| DeploymentSpec {
            id: format!("k8s-worker-pool-production-europe-west-zone-b-{i:04}"),
            tenant: None,
            blueprint_id: None,
            labels: BTreeMap::from([("k8s-cluster".into(), LabelValues::One("demo".into()))]),
            scaling_groups: vec![GroupSpec {
                name: "workers".into(),
                min: 0,
                max: 10,
                current: 1,
                default: None,
                extra_vms: Vec::new(),
            }],
            standalone_vms: 0,
            standalone_node: "control_plane_host".into(),
        })
        .collect();
    s
}

/// Issue 20, item 7: every list request named every deployment (`deployment_id=` once each), so
/// past about 93 deployments its request line passed gunicorn's 4 KiB and the provider never
/// became ready behind the real manager. With 160 deployments behind the same limit, it is ready
/// with every group, no request line comes near the limit and none names more than ten
/// deployments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refresh_request_outgrows_gunicorns_request_line_with_160_deployments() {
    let sim = start_sim(many_deployments(160)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    hostile.limit_request_line(Some(4094));
    for node_groups in [
        DISCOVERY.to_owned(),
        format!(
            "static: [{}]",
            (0..160)
                .map(|i| format!(
                    "\"0:10:k8s-worker-pool-production-europe-west-zone-b-{i:04}/workers\""
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ] {
        let app = provider(&hostile.url(), &node_groups, "5m").await;
        let snap = app.inventory.snapshot();
        assert_eq!((snap.groups.len(), snap.instance_count()), (160, 160));
        let seen = hostile.take_requests();
        let refused: Vec<_> = seen.iter().filter(|s| s.status >= 400).collect();
        assert!(
            refused.is_empty(),
            "refused: {:?}",
            refused.first().map(|s| &s.path)
        );
        let longest = seen.iter().map(|s| s.request_line).max().unwrap_or(0);
        assert!(longest <= 3072, "request line of {longest} bytes");
        // The real manager's cost grows faster than the number of ids a filter names
        // (tests/manager/FINDINGS.md): ten at most.
        let most = seen
            .iter()
            .map(|s| s.param("deployment_id").len().max(s.param("id").len()))
            .max()
            .unwrap_or(0);
        assert!(most <= 10, "a request named {most} deployments");
        app.shutdown().await;
    }
}

/// Issue 19, item 7: on the real manager each `deployment_id=` of a filter is one more nested
/// subquery, so reading the VM instances of 50 deployments ten at a time cost 5-6 s where the
/// tenant's, filtered by node name only, cost under 1 s (BENCHMARKS.md section 12). A refresh
/// that reads many deployments (here the first: 160 of a tenant of 200) reads the tenant's
/// nodes and instances once, names no deployment, and serves only the selected deployments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_of_many_deployments_reads_the_tenants_nodes_and_instances_once() {
    let mut scenario = many_deployments(200);
    for d in scenario.deployments.iter_mut().skip(160) {
        d.id = d.id.replace("production", "staging");
        d.labels = BTreeMap::from([("k8s-cluster".into(), LabelValues::One("other".into()))]);
    }
    let sim = start_sim(scenario).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let app = provider(&hostile.url(), DISCOVERY, "5m").await;
    let snap = app.inventory.snapshot();
    assert_eq!((snap.groups.len(), snap.instance_count()), (160, 160));
    assert!(
        snap.groups.iter().all(|g| g.id.contains("production")),
        "a deployment outside the selection is served"
    );
    let seen = hostile.take_requests();
    for path in ["/api/v3.1/nodes", NODE_INSTANCES] {
        let reads: Vec<usize> = seen
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.param("deployment_id").len())
            .collect();
        assert_eq!(reads, [0], "{path}: deployments named by each request");
    }
    app.shutdown().await;
}
