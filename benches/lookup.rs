//! NodeGroupForNode's in-process cost: snapshot lookups by provider id (hit), by node name, and
//! misses (control plane), at 1k, 10k and 100k instances. Should be flat in the instance count.

use std::time::{Instant, SystemTime};

use autoscaler_cloudify::cloudify::{Deployment, Node, NodeInstance};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::inventory::{SourceData, build_snapshot};
use criterion::{BenchmarkId, Criterion, criterion_main};
use serde_json::json;

fn snapshot(n: usize) -> autoscaler_cloudify::inventory::Snapshot {
    let env = std::collections::BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "x".to_owned())]);
    let cfg = Config::from_yaml(
        "node_groups: {auto_discovery: [\"cloudify:label=k=v\"]}",
        &Overrides::default(),
        &env,
    )
    .expect("config");
    let dep: Deployment = serde_json::from_value(json!({"id": "d", "scaling_groups": {"g": {"members": ["vm"],
        "properties": {"min_instances": 0, "max_instances": -1, "current_instances": n, "planned_instances": n}}}}))
    .expect("deployment");
    let node: Node = serde_json::from_value(
        json!({"id": "vm", "deployment_id": "d", "type_hierarchy": ["cloudify.nodes.Compute"]}),
    )
    .expect("node");
    let instances: Vec<NodeInstance> = (0..n)
        .map(|i| {
            serde_json::from_value(
                json!({"id": format!("vm_{i:06}"), "node_id": "vm", "deployment_id": "d",
                "host_id": format!("vm_{i:06}"), "state": "started",
                "runtime_properties": {"hostname": format!("d-vm-{i:06}")},
                "scaling_groups": [{"name": "g", "id": format!("g_{i:06}")}]}),
            )
            .expect("instance")
        })
        .collect();
    let data = SourceData {
        source: 0,
        name: "main".into(),
        tenant: "t".into(),
        discovered: vec![dep],
        nodes: vec![node],
        instances,
        ..SourceData::default()
    };
    build_snapshot(
        Instant::now(),
        SystemTime::now(),
        &[data],
        &cfg.node_groups,
        false,
    )
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_group_for_node");
    for n in [1_000usize, 10_000, 100_000] {
        let snap = snapshot(n);
        let hit = format!("cloudify://t/d/vm_{:06}", n / 2);
        let name = format!("d-vm-{:06}", n / 3);
        group.bench_with_input(BenchmarkId::new("provider_id_hit", n), &n, |b, _| {
            b.iter(|| snap.lookup(std::hint::black_box(&hit), ""))
        });
        group.bench_with_input(BenchmarkId::new("name_hit", n), &n, |b, _| {
            b.iter(|| snap.lookup("", std::hint::black_box(&name)))
        });
        group.bench_with_input(BenchmarkId::new("miss_control_plane", n), &n, |b, _| {
            b.iter(|| {
                snap.lookup(
                    std::hint::black_box("cloudify://t/k8s-control-plane/control_plane_host_x"),
                    std::hint::black_box("k8s-control-plane-x"),
                )
            })
        });
    }
    group.finish();
}

/// The benchmarks of this file. `criterion_group!` defines an undocumented `pub fn`: inside a
/// private module it is no public item, so the workspace's `missing_docs` leaves it alone.
mod group {
    criterion::criterion_group!(benches, super::lookups);
}
criterion_main!(group::benches);
