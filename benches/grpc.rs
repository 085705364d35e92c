//! `NodeGroupForNode` end to end over tonic, next to a no-op RPC (`GPULabel`) of the same server,
//! so their ratio is what the lookup costs on top of a gRPC round trip (issue #8). The same two
//! RPCs on a *bare* tonic server of the same service (one `HashMap` lookup, no metrics, no
//! tracing, no health/reflection) show what our layers cost.
//!
//! Transports: in-memory (`tokio::io::duplex`, as in tonic's examples) and loopback TCP (our real
//! `grpc::serve`, plaintext on 127.0.0.1). Two shapes: one call at a time (latency) and 64 calls
//! in flight on one HTTP/2 connection (throughput).
//!
//! `cargo bench --bench grpc`; numbers in BENCHMARKS.md. Under `cargo test` each benchmark runs
//! once and only the 5k fixture is built.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoscaler_cloudify::grpc::Provider;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use autoscaler_cloudify::proto::cloud_provider_server::{CloudProvider, CloudProviderServer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Request, Response, Status};

/// Calls in flight in the throughput shape (CA itself is mostly sequential; this is the
/// capacity of one connection).
const IN_FLIGHT: usize = 64;

/// The bare server: the same service with the least possible work per call.
struct Bare {
    by_provider_id: HashMap<String, proto::NodeGroup>,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("bare benchmark server"))
}

#[tonic::async_trait]
impl CloudProvider for Bare {
    async fn node_groups(
        &self,
        _r: Request<proto::NodeGroupsRequest>,
    ) -> Result<Response<proto::NodeGroupsResponse>, Status> {
        unimplemented()
    }
    async fn node_group_for_node(
        &self,
        r: Request<proto::NodeGroupForNodeRequest>,
    ) -> Result<Response<proto::NodeGroupForNodeResponse>, Status> {
        let node = r.into_inner().node.unwrap_or_default();
        let group = self
            .by_provider_id
            .get(&node.provider_id)
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(proto::NodeGroupForNodeResponse {
            node_group: Some(group),
        }))
    }
    async fn pricing_node_price(
        &self,
        _r: Request<proto::PricingNodePriceRequest>,
    ) -> Result<Response<proto::PricingNodePriceResponse>, Status> {
        unimplemented()
    }
    async fn pricing_pod_price(
        &self,
        _r: Request<proto::PricingPodPriceRequest>,
    ) -> Result<Response<proto::PricingPodPriceResponse>, Status> {
        unimplemented()
    }
    async fn gpu_label(
        &self,
        _r: Request<proto::GpuLabelRequest>,
    ) -> Result<Response<proto::GpuLabelResponse>, Status> {
        Ok(Response::new(proto::GpuLabelResponse {
            label: "cloudify.co/gpu-type".into(),
        }))
    }
    async fn get_available_gpu_types(
        &self,
        _r: Request<proto::GetAvailableGpuTypesRequest>,
    ) -> Result<Response<proto::GetAvailableGpuTypesResponse>, Status> {
        unimplemented()
    }
    async fn cleanup(
        &self,
        _r: Request<proto::CleanupRequest>,
    ) -> Result<Response<proto::CleanupResponse>, Status> {
        unimplemented()
    }
    async fn refresh(
        &self,
        _r: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        unimplemented()
    }
    async fn node_group_target_size(
        &self,
        _r: Request<proto::NodeGroupTargetSizeRequest>,
    ) -> Result<Response<proto::NodeGroupTargetSizeResponse>, Status> {
        unimplemented()
    }
    async fn node_group_increase_size(
        &self,
        _r: Request<proto::NodeGroupIncreaseSizeRequest>,
    ) -> Result<Response<proto::NodeGroupIncreaseSizeResponse>, Status> {
        unimplemented()
    }
    async fn node_group_delete_nodes(
        &self,
        _r: Request<proto::NodeGroupDeleteNodesRequest>,
    ) -> Result<Response<proto::NodeGroupDeleteNodesResponse>, Status> {
        unimplemented()
    }
    async fn node_group_decrease_target_size(
        &self,
        _r: Request<proto::NodeGroupDecreaseTargetSizeRequest>,
    ) -> Result<Response<proto::NodeGroupDecreaseTargetSizeResponse>, Status> {
        unimplemented()
    }
    async fn node_group_nodes(
        &self,
        _r: Request<proto::NodeGroupNodesRequest>,
    ) -> Result<Response<proto::NodeGroupNodesResponse>, Status> {
        unimplemented()
    }
    async fn node_group_template_node_info(
        &self,
        _r: Request<proto::NodeGroupTemplateNodeInfoRequest>,
    ) -> Result<Response<proto::NodeGroupTemplateNodeInfoResponse>, Status> {
        unimplemented()
    }
    async fn node_group_get_options(
        &self,
        _r: Request<proto::NodeGroupAutoscalingOptionsRequest>,
    ) -> Result<Response<proto::NodeGroupAutoscalingOptionsResponse>, Status> {
        unimplemented()
    }
}

fn bare(n: usize) -> Bare {
    let by_provider_id = (0..n)
        .map(|i| {
            let dep = common::deployment_of(i, n, common::GROUPS);
            (
                common::keys(i, n).provider_id,
                proto::NodeGroup {
                    id: format!("{dep}/workers"),
                    min_size: 0,
                    max_size: 100_000,
                    debug: String::new(),
                },
            )
        })
        .collect();
    Bare { by_provider_id }
}

/// Serves `svc` over in-memory duplex pipes and returns a client channel.
async fn in_memory<S: CloudProvider>(svc: S) -> Channel {
    let (tx, rx) = mpsc::channel::<Result<tokio::io::DuplexStream, std::io::Error>>(4);
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        let _ = Server::builder()
            .add_service(CloudProviderServer::new(svc))
            .serve_with_incoming(incoming)
            .await;
    });
    let connector = tower::service_fn(move |_: Uri| {
        let tx = tx.clone();
        async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            tx.send(Ok(server))
                .await
                .map_err(|_| std::io::Error::other("in-memory server gone"))?;
            Ok::<_, std::io::Error>(TokioIo::new(client))
        }
    });
    match Endpoint::from_static("http://in-memory.invalid")
        .connect_with_connector(connector)
        .await
    {
        Ok(c) => c,
        Err(e) => panic!("in-memory connect: {e}"),
    }
}

/// Serves `svc` on 127.0.0.1 with a plain tonic server and returns a client channel.
async fn loopback_bare(svc: Bare) -> Channel {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(CloudProviderServer::new(svc))
            // As `Server::serve` does: `serve_with_incoming` ignores the builder's
            // `tcp_nodelay`, and without it every answer waits ~40 ms for a delayed ACK.
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    connect(addr).await
}

/// Serves our provider exactly as the binary does (`grpc::serve`: health, reflection, metrics).
async fn loopback_ours(p: Provider) -> Channel {
    let listen = "127.0.0.1:0".parse().ok();
    let Some(listen) = listen else {
        panic!("address")
    };
    match autoscaler_cloudify::grpc::serve(listen, None, false, &Default::default(), p).await {
        Ok(handle) => {
            let addr = handle.addr;
            // Keep serving for the life of the benchmark process.
            std::mem::forget(handle);
            connect(Some(addr)).await
        }
        Err(e) => panic!("serve: {e}"),
    }
}

async fn connect(addr: Option<std::net::SocketAddr>) -> Channel {
    let Some(addr) = addr else {
        panic!("no address")
    };
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.tcp_nodelay(true),
        Err(e) => panic!("endpoint: {e}"),
    };
    match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => panic!("connect {addr}: {e}"),
    }
}

fn for_node(k: &common::NodeKeys) -> proto::NodeGroupForNodeRequest {
    proto::NodeGroupForNodeRequest {
        node: Some(proto::ExternalGrpcNode {
            provider_id: k.provider_id.clone(),
            name: k.name.clone(),
            ..Default::default()
        }),
    }
}

async fn call_for_node(mut c: CloudProviderClient<Channel>, req: proto::NodeGroupForNodeRequest) {
    match c.node_group_for_node(req).await {
        Ok(r) => {
            black_box(r);
        }
        Err(s) => panic!("NodeGroupForNode: {s}"),
    }
}

async fn call_gpu_label(mut c: CloudProviderClient<Channel>) {
    match c.gpu_label(proto::GpuLabelRequest {}).await {
        Ok(r) => {
            black_box(r);
        }
        Err(s) => panic!("GPULabel: {s}"),
    }
}

fn sizes() -> Vec<usize> {
    if common::benching() {
        vec![5_000, 100_000]
    } else {
        vec![5_000]
    }
}

fn end_to_end(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    for n in sizes() {
        let (ours_mem, ours_tcp, bare_mem, bare_tcp) = rt.block_on(async {
            let (p1, _) = common::provider(n).await;
            let (p2, _) = common::provider(n).await;
            (
                in_memory(p1).await,
                loopback_ours(p2).await,
                in_memory(bare(n)).await,
                loopback_bare(bare(n)).await,
            )
        });
        let keys: Arc<Vec<common::NodeKeys>> = Arc::new(
            common::scattered(n)
                .into_iter()
                .map(|i| common::keys(i, n))
                .collect(),
        );
        let servers = [
            ("ours", "memory", ours_mem),
            ("ours", "tcp", ours_tcp),
            ("bare", "memory", bare_mem),
            ("bare", "tcp", bare_tcp),
        ];

        let mut group = c.benchmark_group(format!("grpc_latency/{n}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (server, transport, channel) in &servers {
            let client = CloudProviderClient::new(channel.clone());
            let id = |rpc: &str| BenchmarkId::new(format!("{server}/{transport}"), rpc);
            group.bench_function(id("GPULabel"), |b| {
                b.to_async(&rt).iter(|| call_gpu_label(client.clone()))
            });
            let mut i = 0usize;
            group.bench_function(id("NodeGroupForNode"), |b| {
                b.to_async(&rt).iter(|| {
                    i += 1;
                    call_for_node(client.clone(), for_node(&keys[i % n]))
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("grpc_throughput/{n}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20)
            .throughput(Throughput::Elements(IN_FLIGHT as u64));
        for (server, transport, channel) in &servers {
            let client = CloudProviderClient::new(channel.clone());
            let id = |rpc: &str| BenchmarkId::new(format!("{server}/{transport}"), rpc);
            group.bench_function(id("GPULabel"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let client = client.clone();
                    async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let calls = (0..IN_FLIGHT)
                                .map(|_| tokio::spawn(call_gpu_label(client.clone())));
                            for r in futures::future::join_all(calls).await {
                                if let Err(e) = r {
                                    panic!("task: {e}");
                                }
                            }
                        }
                        start.elapsed()
                    }
                })
            });
            group.bench_function(id("NodeGroupForNode"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let client = client.clone();
                    let keys = Arc::clone(&keys);
                    async move {
                        let start = Instant::now();
                        let mut i = 0usize;
                        for _ in 0..iters {
                            let calls = (0..IN_FLIGHT).map(|_| {
                                i += 1;
                                tokio::spawn(call_for_node(client.clone(), for_node(&keys[i % n])))
                            });
                            let calls: Vec<_> = calls.collect();
                            for r in futures::future::join_all(calls).await {
                                if let Err(e) = r {
                                    panic!("task: {e}");
                                }
                            }
                        }
                        start.elapsed()
                    }
                })
            });
        }
        group.finish();
    }
}

/// The benchmarks of this file. `criterion_group!` defines an undocumented `pub fn`: inside a
/// private module it is no public item, so the workspace's `missing_docs` leaves it alone.
mod group {
    criterion::criterion_group!(benches, super::end_to_end);
}
criterion_main!(group::benches);
