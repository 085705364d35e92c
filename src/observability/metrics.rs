//! Prometheus metrics (prefix `autoscaler_cloudify_`), with bounded label sets (`labels.rs`):
//! RPC methods and codes, Cloudify route templates (never raw paths with ids), group ids (bounded
//! by configuration and discovery, escaped) and closed vocabularies of result words.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub use super::labels::*;

/// Metrics of the node controller (`node_controller_*`).
#[derive(Default)]
pub struct NodeControllerMetrics {
    /// Nodes initialized (uninitialized taint removed).
    pub initialized: Counter,
    /// Nodes deleted because their VM is gone.
    pub deleted: Counter,
    /// Shutdown taints added or removed.
    pub shutdown_taints: Family<ActionLabels, Counter>,
    /// Nodes that carry the uninitialized taint and match no instance, now.
    pub unmatched: Gauge,
    /// Warning Events sent for unmatched Nodes (one per Node and reason).
    pub unmatched_events: Counter,
    /// Deletions the per-refresh cap postponed.
    pub held_back: Counter,
    /// Kubernetes API writes that failed.
    pub errors: Counter,
}

/// Metrics of the service controller (`load_balancer_*`, issue 23).
pub struct LoadBalancerMetrics {
    /// Services with a Cloudify load balancer, by the phase of its deployment.
    pub services: Family<PhaseLabels, Gauge>,
    /// Cloudify calls that change a load balancer, by action (`create`, `install`, `update`,
    /// `uninstall`, `delete`) and `status` writes.
    pub actions: Family<LbActionLabels, Counter>,
    /// Reconciles that failed (Cloudify or the API server unreachable, refused) or reported a
    /// failed execution; each one backs the Service off.
    pub failures: Counter,
    /// From the first look that found a Service's ports or Nodes changed to the look that found
    /// the deployment updated and quiet: what a user waits for a change to reach the load
    /// balancer (queueing behind a running execution included).
    pub update_duration: Histogram,
}

impl Default for LoadBalancerMetrics {
    fn default() -> Self {
        LoadBalancerMetrics {
            services: Family::default(),
            actions: Family::default(),
            failures: Counter::default(),
            // 0.5 s .. ~40 min: a real manager takes tens of seconds per update.
            update_duration: Histogram::new(exponential_buckets(0.5, 2.0, 13)),
        }
    }
}

/// The RPCs of CA's `CloudProvider` service, as the gRPC facade names them in `method`: each has
/// its `code="Ok"` counter and its latency histogram from the start (issue 21), so a rate or an
/// absent-series alert works before the first call.
pub const RPC_METHODS: [&str; 15] = [
    "NodeGroups",
    "NodeGroupForNode",
    "PricingNodePrice",
    "PricingPodPrice",
    "GPULabel",
    "GetAvailableGPUTypes",
    "Cleanup",
    "Refresh",
    "NodeGroupTargetSize",
    "NodeGroupIncreaseSize",
    "NodeGroupDeleteNodes",
    "NodeGroupDecreaseTargetSize",
    "NodeGroupNodes",
    "NodeGroupTemplateNodeInfo",
    "NodeGroupGetOptions",
];

/// Every `action` of `load_balancer_actions_total` (issue 23).
pub const LB_ACTIONS: [LbAction; 6] = [
    LbAction::Create,
    LbAction::Install,
    LbAction::Update,
    LbAction::Uninstall,
    LbAction::Delete,
    LbAction::Status,
];

/// Every `phase` of `load_balancer_services` (issue 23): the service controller's phases, here so
/// that each series exists at 0 from the start.
pub const LB_PHASES: [&str; 10] = [
    "creating",
    "installing",
    "updating",
    "active",
    "busy",
    "failed",
    "invalid",
    "uninstalling",
    "deleting",
    "disowned",
];

/// Every `direction`/`result` pair the domain records (docs/operations.md, Metrics).
const SCALE_OUTCOMES: [(ScaleDirection, &[ScaleResult]); 3] = [
    (
        ScaleDirection::Up,
        &[
            ScaleResult::Accepted,
            ScaleResult::Rejected,
            ScaleResult::Error,
        ],
    ),
    (
        ScaleDirection::Down,
        &[
            ScaleResult::Accepted,
            ScaleResult::Error,
            ScaleResult::Terminated,
            ScaleResult::Failed,
            ScaleResult::Cancelled,
            ScaleResult::Mismatch,
            ScaleResult::Other,
        ],
    ),
    (
        ScaleDirection::Cancel,
        &[ScaleResult::Accepted, ScaleResult::Error],
    ),
];

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

/// All metrics of the process. Cheap to clone through `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Always 1, labelled with the running version (join target for dashboards).
    pub build_info: Family<BuildLabels, Gauge>,
    /// 1 once the first complete snapshot is loaded (the same condition as `/readyz`'s
    /// `snapshot_loaded`), else 0.
    pub ready: Gauge,
    /// 1 while this process may mutate: the Lease leader, or the only replica (no election).
    pub leader: Gauge,
    /// gRPC requests by method and code.
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// gRPC request durations by method.
    pub grpc_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Cloudify requests by route and status.
    pub cloudify_requests: Family<CloudifyLabels, Counter>,
    /// Cloudify request durations by route.
    pub cloudify_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Inventory refresh durations.
    pub refresh_duration: Histogram,
    /// Inventory refreshes by result.
    pub refreshes: Family<ResultLabels, Counter>,
    /// Age of the served snapshot in seconds (updated on scrape and refresh).
    pub snapshot_age: Gauge<f64, AtomicU64>,
    /// Instances in the snapshot.
    pub instances: Gauge,
    /// Node groups in the snapshot.
    pub groups: Gauge,
    /// Target size per group.
    pub target_size: Family<GroupLabels, Gauge>,
    /// Scale executions by direction and result.
    pub scale_executions: Family<ScaleLabels, Counter>,
    /// NodeGroupForNode lookups that matched no group.
    pub lookup_misses: Counter,
    /// Scale-ins that removed other instances than the ones named.
    pub scale_down_mismatches: Counter,
    /// Provider ids several instances render in the snapshot (never acted on; issue 20).
    pub ambiguous_provider_ids: Gauge,
    /// The `node_controller_*` metrics; they stay 0 when the controller does not run.
    pub node_controller: NodeControllerMetrics,
    /// The `load_balancer_*` metrics; they stay 0 when the service controller does not run.
    pub load_balancers: LoadBalancerMetrics,
    /// Open client connections per port.
    pub connections_open: Family<PortLabels, Gauge>,
    /// Connections closed at once because the port was at its `max_connections`.
    pub connections_rejected: Family<PortLabels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("autoscaler_cloudify");
        let m = Metrics {
            build_info: Family::default(),
            ready: Gauge::default(),
            leader: Gauge::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            cloudify_requests: Family::default(),
            cloudify_duration: Family::new_with_constructor(latency_histogram),
            refresh_duration: latency_histogram(),
            refreshes: Family::default(),
            snapshot_age: Gauge::default(),
            instances: Gauge::default(),
            groups: Gauge::default(),
            target_size: Family::default(),
            scale_executions: Family::default(),
            lookup_misses: Counter::default(),
            scale_down_mismatches: Counter::default(),
            ambiguous_provider_ids: Gauge::default(),
            node_controller: NodeControllerMetrics::default(),
            load_balancers: LoadBalancerMetrics::default(),
            connections_open: Family::default(),
            connections_rejected: Family::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        m.zero_known_label_sets();
        registry.register(
            "build_info",
            "Running version (always 1)",
            m.build_info.clone(),
        );
        registry.register(
            "ready",
            "1 once the first complete inventory snapshot is loaded",
            m.ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica may mutate (Lease leader, or the only replica)",
            m.leader.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request durations",
            m.grpc_duration.clone(),
        );
        registry.register(
            "cloudify_requests",
            "Cloudify REST requests by route and status",
            m.cloudify_requests.clone(),
        );
        registry.register(
            "cloudify_request_duration_seconds",
            "Cloudify REST request durations",
            m.cloudify_duration.clone(),
        );
        registry.register(
            "refresh_duration_seconds",
            "Inventory refresh durations",
            m.refresh_duration.clone(),
        );
        registry.register(
            "refreshes",
            "Inventory refreshes by result",
            m.refreshes.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Age of the inventory snapshot",
            m.snapshot_age.clone(),
        );
        registry.register(
            "instances",
            "Instances in the snapshot",
            m.instances.clone(),
        );
        registry.register(
            "node_groups",
            "Node groups in the snapshot",
            m.groups.clone(),
        );
        registry.register(
            "target_size",
            "Target size per node group",
            m.target_size.clone(),
        );
        registry.register(
            "scale_executions",
            "Scale executions by direction and result",
            m.scale_executions.clone(),
        );
        registry.register(
            "lookup_misses",
            "NodeGroupForNode lookups that matched no group",
            m.lookup_misses.clone(),
        );
        registry.register(
            "scale_down_mismatches",
            "Scale-ins that removed other instances than the named ones",
            m.scale_down_mismatches.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections per port",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed at once because the port had max_connections open",
            m.connections_rejected.clone(),
        );
        registry.register(
            "ambiguous_provider_ids",
            "Provider ids several instances render: lookups and DeleteNodes refuse them",
            m.ambiguous_provider_ids.clone(),
        );
        let nc = &m.node_controller;
        registry.register(
            "node_controller_initialized",
            "Nodes initialized from the inventory (uninitialized taint removed)",
            nc.initialized.clone(),
        );
        registry.register(
            "node_controller_deleted",
            "Nodes deleted because their Cloudify instance is gone",
            nc.deleted.clone(),
        );
        registry.register(
            "node_controller_shutdown_taints",
            "Shutdown taints added or removed",
            nc.shutdown_taints.clone(),
        );
        registry.register(
            "node_controller_unmatched_nodes",
            "Nodes with the uninitialized taint that match no instance",
            nc.unmatched.clone(),
        );
        registry.register(
            "node_controller_unmatched_events",
            "Warning Events sent for unmatched Nodes",
            nc.unmatched_events.clone(),
        );
        registry.register(
            "node_controller_deletions_held_back",
            "Node deletions postponed by the per-refresh cap",
            nc.held_back.clone(),
        );
        registry.register(
            "node_controller_api_errors",
            "Kubernetes API writes of the node controller that failed",
            nc.errors.clone(),
        );
        let lb = &m.load_balancers;
        registry.register(
            "load_balancer_services",
            "Services with a Cloudify load balancer, by deployment phase",
            lb.services.clone(),
        );
        registry.register(
            "load_balancer_actions",
            "Cloudify calls that change a load balancer, and status writes, by action",
            lb.actions.clone(),
        );
        registry.register(
            "load_balancer_failures",
            "Service reconciles that failed or reported a failed Cloudify execution",
            lb.failures.clone(),
        );
        registry.register(
            "load_balancer_update_duration_seconds",
            "From a change of a Service's ports or Nodes seen to its deployment updated",
            lb.update_duration.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Creates every series whose labels are known in advance at 0 (issue 21): the RPCs' `Ok`
    /// counters and latencies, the scale outcomes, both refresh results, both taint actions and
    /// the connection series of both ports.
    /// Series whose labels come from the data (groups, Cloudify routes and statuses, error codes)
    /// appear with their first value.
    fn zero_known_label_sets(&self) {
        for method in RPC_METHODS {
            let _ = self.grpc_requests.get_or_create(&GrpcLabels {
                method,
                code: GrpcCode::Ok,
            });
            let _ = self.grpc_duration.get_or_create(&MethodLabels { method });
        }
        for (direction, results) in SCALE_OUTCOMES {
            for &result in results {
                let _ = self
                    .scale_executions
                    .get_or_create(&ScaleLabels { direction, result });
            }
        }
        for result in [
            RefreshResult::Ok,
            RefreshResult::Error,
            RefreshResult::Inconsistent,
        ] {
            let _ = self.refreshes.get_or_create(&ResultLabels { result });
        }
        for phase in LB_PHASES {
            let _ = self
                .load_balancers
                .services
                .get_or_create(&PhaseLabels { phase });
        }
        for action in LB_ACTIONS {
            let _ = self
                .load_balancers
                .actions
                .get_or_create(&LbActionLabels { action });
        }
        for action in [TaintAction::Added, TaintAction::Removed] {
            let _ = self
                .node_controller
                .shutdown_taints
                .get_or_create(&ActionLabels { action });
        }
        for port in [Port::Grpc, Port::Http] {
            let _ = self.connections_open.get_or_create(&PortLabels { port });
            let _ = self
                .connections_rejected
                .get_or_create(&PortLabels { port });
        }
    }

    /// Counts one scale execution outcome.
    pub fn scale(&self, direction: ScaleDirection, result: ScaleResult) {
        self.scale_executions
            .get_or_create(&ScaleLabels { direction, result })
            .inc();
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail for lack of space; a formatter error would be a bug
        // in prometheus-client, and an empty scrape is the safe answer then.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The process_* metrics (Linux /proc) go before the exposition's closing `# EOF`.
        if let Some(stats) = super::process::read()
            && let Some(body) = out.strip_suffix("# EOF\n")
        {
            out = format!("{body}{}# EOF\n", super::process::encode(&stats));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21: a fresh process exports every series whose labels are known at 0 (a `rate()`
    /// or an alert on them needs the series before the first event), and the process metrics.
    #[test]
    fn known_label_sets_and_process_metrics_are_exported_from_the_start() {
        let text = Metrics::new().encode();
        for line in [
            "autoscaler_cloudify_grpc_requests_total{method=\"NodeGroupIncreaseSize\",code=\"Ok\"} 0",
            "autoscaler_cloudify_grpc_request_duration_seconds_count{method=\"Refresh\"} 0",
            "autoscaler_cloudify_scale_executions_total{direction=\"down\",result=\"mismatch\"} 0",
            "autoscaler_cloudify_scale_executions_total{direction=\"up\",result=\"error\"} 0",
            "autoscaler_cloudify_refreshes_total{result=\"error\"} 0",
            "autoscaler_cloudify_node_controller_shutdown_taints_total{action=\"added\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
        assert!(text.ends_with("# EOF\n"), "one closing EOF");
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
