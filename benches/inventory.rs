//! In-process costs of the read path (issue #8): index lookups at 1k/10k/100k instances,
//! building a snapshot from Cloudify JSON pages, and encoding the biggest answers.
//!
//! `cargo bench --bench inventory`; see BENCHMARKS.md for the numbers. Under `cargo test` each
//! benchmark runs once (criterion's test mode) and the 100k fixtures are skipped.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use autoscaler_cloudify::inventory::build_snapshot;
use autoscaler_cloudify::nodegroup::template::template_node;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_server::CloudProvider;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use prost::Message;
use tonic::Request;

/// Lookups walk every node in a scattered order, as CA does once per loop: at 100k instances
/// that is the cold-cache case, not one hot key.
fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for n in common::sizes() {
        let snap = common::snapshot(n);
        assert_eq!(snap.instance_count(), n, "fixture has every instance");
        let order = common::scattered(n);
        let keys: Vec<common::NodeKeys> = order.iter().map(|&i| common::keys(i, n)).collect();
        // A provider id another cloud set (normalized lookup finds the VM instance id).
        let foreign: Vec<String> = keys
            .iter()
            .map(|k| format!("openstack:///{}", k.vm_instance))
            .collect();
        // Nodes of no group: the control plane and nodes of another provider. CA asks for
        // these on every call (misses are not cached), so all three indexes are probed.
        let unmanaged: Vec<(String, String)> = (0..1024)
            .map(|i| {
                (
                    format!("aws:///us-east-1a/i-0{:016x}", i * 7919),
                    format!("ip-10-9-{}-{}", i / 256, i % 256),
                )
            })
            .collect();

        // The request's strings are fresh (just decoded), so each input is copied in the
        // untimed setup; the index itself is walked in a scattered order over every node, so
        // at 100k instances its probes miss the CPU caches as they would in production.
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("exact_id", n), |b| {
            b.iter_batched_ref(
                || {
                    i += 1;
                    let k = &keys[i % n];
                    (k.provider_id.clone(), k.name.clone())
                },
                |(id, name)| black_box(snap.lookup(id, name)),
                BatchSize::SmallInput,
            )
        });
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("normalized_id", n), |b| {
            b.iter_batched_ref(
                || {
                    i += 1;
                    foreign[i % n].clone()
                },
                |id| black_box(snap.lookup(id, "")),
                BatchSize::SmallInput,
            )
        });
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("node_name", n), |b| {
            b.iter_batched_ref(
                || {
                    i += 1;
                    keys[i % n].name.clone()
                },
                |name| black_box(snap.lookup("", name)),
                BatchSize::SmallInput,
            )
        });
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("unmanaged", n), |b| {
            b.iter_batched_ref(
                || {
                    i += 1;
                    unmanaged[i % unmanaged.len()].clone()
                },
                |(id, name)| black_box(snap.lookup(id, name)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The domain call behind `NodeGroupForNode` (snapshot load + lookup + the group view CA gets).
fn domain_lookup(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("node_group_for_node_domain");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for n in common::sizes() {
        let (_provider, service) = rt.block_on(common::provider(n));
        let keys: Vec<common::NodeKeys> = common::scattered(n)
            .into_iter()
            .map(|i| common::keys(i, n))
            .collect();
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("exact_id", n), |b| {
            b.iter(|| {
                let k = &keys[i % n];
                i += 1;
                black_box(service.node_group_for_node(&k.provider_id, &k.name))
            })
        });
        group.bench_function(BenchmarkId::new("unmanaged", n), |b| {
            b.iter(|| {
                black_box(service.node_group_for_node("aws:///us-east-1a/i-0abc", "ip-10-9-0-1"))
            })
        });
    }
    group.finish();
}

/// Decoding the node-instance pages (as the client does) and building the snapshot with its
/// indexes: the CPU side of one refresh.
fn snapshot_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_build");
    group
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let cfg = common::config();
    for n in common::sizes() {
        let pages = common::pages(n);
        let bytes: usize = pages.instances.iter().map(Vec::len).sum();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("decode_and_build", n), |b| {
            b.iter(|| black_box(common::build_from_pages(&pages, &cfg)))
        });
        group.bench_function(BenchmarkId::new("build_only", n), |b| {
            b.iter_batched(
                || common::decode_pages(&pages),
                |data| {
                    black_box(build_snapshot(
                        Instant::now(),
                        SystemTime::now(),
                        std::slice::from_ref(&data),
                        &cfg,
                        false,
                    ))
                },
                BatchSize::LargeInput,
            )
        });
        eprintln!(
            "snapshot_build/{n}: {} pages, {bytes} bytes of JSON",
            pages.instances.len()
        );
    }
    group.finish();
}

/// Encoding the largest answers: `NodeGroupNodes` of a 1k-instance group (handler + protobuf
/// encoding) and a template node (built and encoded, then the cached handler).
fn encoding(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("encode");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    // 10 groups of 1,000 instances.
    let (provider, service) = rt.block_on(common::provider_in(10_000, 10));
    let snap = service.inventory().snapshot();
    let g = snap.group("pool-000/workers").cloned();
    let Some(g) = g else {
        panic!("fixture group pool-000/workers missing");
    };
    assert_eq!(g.instances.len(), 1000);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("node_group_nodes_1k", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = provider
                .node_group_nodes(Request::new(proto::NodeGroupNodesRequest {
                    id: "pool-000/workers".into(),
                }))
                .await;
            let bytes = match resp {
                Ok(r) => r.into_inner().encode_to_vec(),
                Err(s) => panic!("NodeGroupNodes failed: {s}"),
            };
            black_box(bytes)
        })
    });
    let nodes_len = rt
        .block_on(
            provider.node_group_nodes(Request::new(proto::NodeGroupNodesRequest {
                id: "pool-000/workers".into(),
            })),
        )
        .map(|r| r.into_inner().encoded_len())
        .unwrap_or(0);
    eprintln!("encode/node_group_nodes_1k: {nodes_len} bytes");
    group.throughput(Throughput::Elements(1));
    let settings = common::config().defaults;
    let Some(spec) = settings.template.clone() else {
        panic!("fixture has a template");
    };
    group.bench_function("template_node_build", |b| {
        b.iter(|| black_box(template_node(&g, &settings, &spec, None).encode_to_vec()))
    });
    group.bench_function("template_node_info_cached", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = provider
                .node_group_template_node_info(Request::new(
                    proto::NodeGroupTemplateNodeInfoRequest {
                        id: "pool-000/workers".into(),
                    },
                ))
                .await;
            match resp {
                Ok(r) => black_box(r.into_inner().encode_to_vec()),
                Err(s) => panic!("TemplateNodeInfo failed: {s}"),
            }
        })
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

/// The benchmarks of this file. `criterion_group!` defines an undocumented `pub fn`: inside a
/// private module it is no public item, so the workspace's `missing_docs` leaves it alone.
mod group {
    criterion::criterion_group!(
        benches,
        super::lookups,
        super::domain_lookup,
        super::snapshot_build,
        super::encoding
    );
}
criterion_main!(group::benches);
