//! Shared fixtures of the benchmarks: Cloudify answers shaped like a manager's (and the
//! simulator's) JSON pages, the library's in-memory `FakeCloudify` serving them, and a provider
//! built on it.
//!
//! Ids follow the simulator's naming (docs/simulator.md) so the provider ids, aliases and node
//! names hash like real ones: deployment `pool-007`, group `workers`, VM node `workers_host`,
//! VM instance `workers_host_<6 chars>`, hostname `pool-007-workers-host-<6 chars>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use autoscaler_cloudify::cloudify::fake::FakeCloudify;
use autoscaler_cloudify::cloudify::models::ListPage;
use autoscaler_cloudify::cloudify::{Deployment, Node, NodeInstance};
use autoscaler_cloudify::config::{Discovery, GroupSettings, NodeGroupsConfig, TemplateSpec};
use autoscaler_cloudify::grpc::Provider;
use autoscaler_cloudify::inventory::{Inventory, Snapshot, SourceData, build_snapshot};
use autoscaler_cloudify::nodegroup::{NodeGroupService, ServiceSettings};
use autoscaler_cloudify::observability::metrics::Metrics;
use serde_json::json;

/// Node groups in every fixture (as in the load test: CA clusters spread nodes over pools).
pub const GROUPS: usize = 100;
/// Cloudify's page size.
pub const PAGE: usize = 1000;

/// True when the binary runs as `cargo bench` (criterion's `--bench`), false in `cargo test`'s
/// quick pass, where the largest fixtures are skipped to keep the test suite fast.
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The sizes to measure: 1k, 10k, 100k instances (100k only under `cargo bench`).
pub fn sizes() -> Vec<usize> {
    if benching() {
        vec![1_000, 10_000, 100_000]
    } else {
        vec![1_000, 10_000]
    }
}

/// A 6-character id suffix like Cloudify's (`[a-z0-9]`), unique per `i`.
pub fn suffix(i: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Scramble so neighbouring instances do not share prefixes (as random ids do not).
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 36u64.pow(6);
    let mut s = [b'a'; 6];
    for c in s.iter_mut() {
        *c = ALPHABET[(x % 36) as usize];
        x /= 36;
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// Deployment of instance `i` when `n` instances are spread over [`GROUPS`] groups.
pub fn deployment_of(i: usize, n: usize, groups: usize) -> String {
    let per = n.div_ceil(groups).max(1);
    format!("pool-{:03}", i / per)
}

/// One instance as the node name, provider id and VM instance id CA and Cloudify know it by.
pub struct NodeKeys {
    /// `cloudify://default_tenant/<deployment>/<vm instance>`.
    pub provider_id: String,
    /// The VM instance id (what a normalized id resolves).
    pub vm_instance: String,
    /// The Kubernetes node name (runtime property `hostname`).
    pub name: String,
}

/// The keys of instance `i` of `n` (in [`GROUPS`] groups).
pub fn keys(i: usize, n: usize) -> NodeKeys {
    keys_in(i, n, GROUPS)
}

/// The keys of instance `i` of `n` in `groups` groups.
pub fn keys_in(i: usize, n: usize, groups: usize) -> NodeKeys {
    let dep = deployment_of(i, n, groups);
    let vm = format!("workers_host_{}", suffix(i));
    NodeKeys {
        provider_id: format!("cloudify://default_tenant/{dep}/{vm}"),
        name: format!("{dep}-{}", vm.replace('_', "-")),
        vm_instance: vm,
    }
}

/// The node-instance list pages (`_include` projection as the client asks) for `n` started VMs.
pub fn instance_pages(n: usize, groups: usize) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    for start in (0..n).step_by(PAGE) {
        let end = (start + PAGE).min(n);
        let items: Vec<serde_json::Value> = (start..end)
            .map(|i| {
                let k = keys_in(i, n, groups);
                let dep = deployment_of(i, n, groups);
                json!({
                    "id": k.vm_instance,
                    "node_id": "workers_host",
                    "deployment_id": dep,
                    "host_id": k.vm_instance,
                    "state": "started",
                    "runtime_properties": {
                        "external_id": format!("7c1e{:08x}-4a52-4b7e-9f3d-2c5a1b{:06x}", i, i % 0xffffff),
                        "external_name": k.name,
                        "external_type": "server",
                        "ip": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                        "ipv4_address": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                        "networks": {"private": [format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)]},
                        "hostname": k.name,
                    },
                    "scaling_groups": [{"name": "workers", "id": format!("workers_{}", suffix(i + 7))}],
                })
            })
            .collect();
        let page = json!({
            "items": items,
            "metadata": {"pagination": {"total": n, "offset": start, "size": PAGE}},
        });
        pages.push(serde_json::to_vec(&page).unwrap_or_default());
    }
    pages
}

/// The deployments page (label search answer) for `n` instances in [`GROUPS`] groups.
pub fn deployments_page(n: usize, groups: usize) -> Vec<u8> {
    let per = n.div_ceil(groups).max(1);
    let items: Vec<serde_json::Value> = (0..groups)
        .map(|g| {
            json!({
                "id": format!("pool-{g:03}"),
                "labels": [{"key": "k8s-cluster", "value": "bench"}],
                "scaling_groups": {"workers": {
                    "members": ["workers_host", "workers_port"],
                    "properties": {"min_instances": 0, "max_instances": -1,
                        "current_instances": per, "planned_instances": per, "default_instances": per},
                }},
            })
        })
        .collect();
    serde_json::to_vec(&json!({"items": items, "metadata": {"pagination": {"total": groups}}}))
        .unwrap_or_default()
}

/// The nodes page for the [`GROUPS`] deployments.
pub fn nodes_page(groups: usize) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..groups)
        .flat_map(|g| {
            let dep = format!("pool-{g:03}");
            [
                json!({"id": "workers_host", "deployment_id": dep, "host_id": "workers_host",
                       "type_hierarchy": ["cloudify.nodes.Root", "cloudify.nodes.Compute",
                                          "cloudify.openstack.nodes.Server"]}),
                json!({"id": "workers_port", "deployment_id": dep, "host_id": null,
                       "type_hierarchy": ["cloudify.nodes.Root", "cloudify.openstack.nodes.Port"]}),
            ]
        })
        .collect();
    serde_json::to_vec(&json!({"items": items, "metadata": {"pagination": {"total": groups * 2}}}))
        .unwrap_or_default()
}

/// The raw JSON one refresh reads for `n` instances.
pub struct Pages {
    /// Label search answer.
    pub deployments: Vec<u8>,
    /// Nodes answer.
    pub nodes: Vec<u8>,
    /// Node-instance pages.
    pub instances: Vec<Vec<u8>>,
}

/// Builds the pages for `n` instances in [`GROUPS`] groups.
pub fn pages(n: usize) -> Pages {
    pages_in(n, GROUPS)
}

/// Builds the pages for `n` instances in `groups` groups.
pub fn pages_in(n: usize, groups: usize) -> Pages {
    Pages {
        deployments: deployments_page(n, groups),
        nodes: nodes_page(groups),
        instances: instance_pages(n, groups),
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    serde_json::from_slice::<ListPage<T>>(bytes)
        .map(|p| p.items)
        .unwrap_or_default()
}

/// Decodes the pages as the client does (into the tolerant models).
pub fn decode_pages(p: &Pages) -> SourceData {
    let mut instances: Vec<NodeInstance> = Vec::new();
    for page in &p.instances {
        instances.extend(decode::<NodeInstance>(page));
    }
    SourceData {
        source: 0,
        name: "main".into(),
        tenant: "default_tenant".into(),
        discovered: decode::<Deployment>(&p.deployments),
        static_deployments: Vec::new(),
        nodes: decode::<Node>(&p.nodes),
        instances,
        active: Vec::new(),
        failed: Vec::new(),
        ended: Vec::new(),
        modifications: Vec::new(),
    }
}

/// The node-group configuration of the fixtures: discovery by `k8s-cluster=bench`, defaults.
pub fn config() -> NodeGroupsConfig {
    NodeGroupsConfig {
        static_groups: Vec::new(),
        discovery: vec![Discovery {
            labels: vec![("k8s-cluster".into(), "bench".into())],
        }],
        unbounded_max: 100_000,
        defaults: GroupSettings {
            template: Some(TemplateSpec {
                labels: BTreeMap::from([
                    ("node.kubernetes.io/instance-type".into(), "m1.large".into()),
                    ("topology.kubernetes.io/zone".into(), "zone-a".into()),
                ]),
                taints: Vec::new(),
                capacity: BTreeMap::from([
                    ("cpu".into(), "4".into()),
                    ("memory".into(), "16Gi".into()),
                    ("pods".into(), "110".into()),
                    ("ephemeral-storage".into(), "100Gi".into()),
                ]),
                allocatable: BTreeMap::from([("cpu".into(), "3800m".into())]),
            }),
            ..GroupSettings::default()
        },
        groups: BTreeMap::new(),
    }
}

/// Decode + build: what a refresh does with the pages once they arrived.
pub fn build_from_pages(p: &Pages, cfg: &NodeGroupsConfig) -> Snapshot {
    let data = decode_pages(p);
    build_snapshot(Instant::now(), SystemTime::now(), &[data], cfg, false)
}

/// A snapshot of `n` instances.
pub fn snapshot(n: usize) -> Snapshot {
    build_from_pages(&pages(n), &config())
}

/// Our real provider (metrics, domain, inventory) over a fake Cloudify of `n` instances in
/// [`GROUPS`] groups, with its first snapshot loaded.
pub async fn provider(n: usize) -> (Provider, Arc<NodeGroupService>) {
    provider_in(n, GROUPS).await
}

/// Like [`provider`], with `groups` groups.
pub async fn provider_in(n: usize, groups: usize) -> (Provider, Arc<NodeGroupService>) {
    let metrics = Metrics::new();
    let data = decode_pages(&pages_in(n, groups));
    let fake = FakeCloudify::new(&data.name, &data.tenant)
        .with_deployments(data.discovered)
        .with_nodes(data.nodes)
        .with_instances(data.instances);
    let inventory = Inventory::new(
        vec![Arc::new(fake)],
        Arc::new(config()),
        Arc::clone(&metrics),
    );
    if let Err(e) = inventory.refresh().await {
        panic!("fixture refresh failed: {e}");
    }
    let service =
        NodeGroupService::new(inventory, Arc::clone(&metrics), ServiceSettings::default());
    (Provider::new(Arc::clone(&service), metrics), service)
}

/// A deterministic shuffle (no `rand` needed in benches): every index once, scattered.
pub fn scattered(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}
