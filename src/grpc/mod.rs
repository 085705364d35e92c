//! The gRPC facade for CA's `CloudProvider` service: decode the request, call the domain, encode
//! the answer. Domain errors become `tonic::Status` in exactly one place, [`to_status`].

mod convert;
mod error;
pub mod server;
mod tls;

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::nodegroup::{DomainError, NodeGroupService};
use crate::observability::metrics::{GrpcCode, GrpcLabels, MethodLabels, Metrics};
use crate::proto;
use crate::proto::cloud_provider_server::CloudProvider;

pub use server::{ServeError, ServerHandle, serve};

/// The one mapping from domain errors to gRPC statuses. `UNIMPLEMENTED` only ever comes from
/// `NotImplemented`, which the domain raises only for the four optional RPCs.
pub fn to_status(e: &DomainError) -> Status {
    let msg = e.to_string();
    match e {
        DomainError::InvalidArgument(_) => Status::invalid_argument(msg),
        DomainError::GroupNotFound(_) => Status::not_found(msg),
        DomainError::FailedPrecondition(_) => Status::failed_precondition(msg),
        DomainError::AboveMax { .. } => Status::resource_exhausted(msg),
        DomainError::NotImplemented(_) => Status::unimplemented(msg),
        DomainError::Unavailable { .. } | DomainError::NotLeader(_) => Status::unavailable(msg),
        DomainError::Cloudify(inner) => match inner.code() {
            Some(_) => Status::failed_precondition(msg),
            None => Status::internal(msg),
        },
    }
}

/// A gRPC status code as a metric label.
fn code_label(code: tonic::Code) -> GrpcCode {
    use tonic::Code as C;
    match code {
        C::Ok => GrpcCode::Ok,
        C::Cancelled => GrpcCode::Cancelled,
        C::Unknown => GrpcCode::Unknown,
        C::InvalidArgument => GrpcCode::InvalidArgument,
        C::DeadlineExceeded => GrpcCode::DeadlineExceeded,
        C::NotFound => GrpcCode::NotFound,
        C::AlreadyExists => GrpcCode::AlreadyExists,
        C::PermissionDenied => GrpcCode::PermissionDenied,
        C::ResourceExhausted => GrpcCode::ResourceExhausted,
        C::FailedPrecondition => GrpcCode::FailedPrecondition,
        C::Aborted => GrpcCode::Aborted,
        C::OutOfRange => GrpcCode::OutOfRange,
        C::Unimplemented => GrpcCode::Unimplemented,
        C::Internal => GrpcCode::Internal,
        C::Unavailable => GrpcCode::Unavailable,
        C::DataLoss => GrpcCode::DataLoss,
        C::Unauthenticated => GrpcCode::Unauthenticated,
    }
}

/// The tonic `CloudProvider` service: decodes each request, calls the domain, and maps its
/// errors through [`to_status`].
pub struct Provider {
    service: Arc<NodeGroupService>,
    metrics: Arc<Metrics>,
}

impl Provider {
    /// Wraps the domain service.
    pub fn new(service: Arc<NodeGroupService>, metrics: Arc<Metrics>) -> Self {
        Provider { service, metrics }
    }

    fn record(&self, method: &'static str, started: Instant, code: tonic::Code) {
        self.metrics
            .grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_label(code),
            })
            .inc();
        self.metrics
            .grpc_duration
            .get_or_create(&MethodLabels { method })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Runs a handler, records metrics, maps errors, logs failures.
    ///
    /// Every RPC runs in one span carrying the method and the group id (`""` when the RPC has
    /// none). Mutations log at info; the frequent reads use a debug span, which costs next to
    /// nothing when debug logging is off.
    async fn call<T>(
        &self,
        method: &'static str,
        group: &str,
        fut: impl std::future::Future<Output = Result<T, DomainError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let span = if matches!(
            method,
            "NodeGroupIncreaseSize"
                | "NodeGroupDeleteNodes"
                | "NodeGroupDecreaseTargetSize"
                | "Cleanup"
        ) {
            tracing::info_span!("rpc", method, group)
        } else {
            tracing::debug_span!("rpc", method, group)
        };
        let result = fut.instrument(span.clone()).await;
        let _entered = span.enter();
        match result {
            Ok(v) => {
                self.record(method, started, tonic::Code::Ok);
                Ok(Response::new(v))
            }
            Err(e) => {
                let status = to_status(&e);
                self.record(method, started, status.code());
                if status.code() != tonic::Code::Unimplemented {
                    tracing::warn!(rpc = method, error = %e, code = ?status.code(), "request failed");
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl CloudProvider for Provider {
    async fn node_groups(
        &self,
        _req: Request<proto::NodeGroupsRequest>,
    ) -> Result<Response<proto::NodeGroupsResponse>, Status> {
        self.call("NodeGroups", "", async {
            Ok(proto::NodeGroupsResponse {
                node_groups: self
                    .service
                    .node_groups()
                    .into_iter()
                    .map(convert::node_group)
                    .collect(),
            })
        })
        .await
    }

    async fn node_group_for_node(
        &self,
        req: Request<proto::NodeGroupForNodeRequest>,
    ) -> Result<Response<proto::NodeGroupForNodeResponse>, Status> {
        let node = req.into_inner().node.unwrap_or_default();
        self.call("NodeGroupForNode", "", async {
            let group = self
                .service
                .node_group_for_node(&node.provider_id, &node.name)
                .map(convert::node_group)
                // "No group" is an empty id (CA checks `GetNodeGroup().GetId() == ""`).
                .unwrap_or_default();
            Ok(proto::NodeGroupForNodeResponse {
                node_group: Some(group),
            })
        })
        .await
    }

    async fn pricing_node_price(
        &self,
        req: Request<proto::PricingNodePriceRequest>,
    ) -> Result<Response<proto::PricingNodePriceResponse>, Status> {
        let r = req.into_inner();
        let node = r.node.clone().unwrap_or_default();
        let hours = convert::hours(
            r.start_timestamp.as_ref().or(r.start_time.as_ref()),
            r.end_timestamp.as_ref().or(r.end_time.as_ref()),
        );
        self.call("PricingNodePrice", "", async {
            let price = self.service.catalog().node_price(
                &node.provider_id,
                &node.name,
                &node.labels,
                hours?,
            )?;
            Ok(proto::PricingNodePriceResponse { price })
        })
        .await
    }

    async fn pricing_pod_price(
        &self,
        req: Request<proto::PricingPodPriceRequest>,
    ) -> Result<Response<proto::PricingPodPriceResponse>, Status> {
        let r = req.into_inner();
        let hours = convert::hours(
            r.start_timestamp.as_ref().or(r.start_time.as_ref()),
            r.end_timestamp.as_ref().or(r.end_time.as_ref()),
        );
        let pod = if r.pod_bytes.is_empty() {
            r.pod
        } else {
            r.pod_bytes
        };
        self.call("PricingPodPrice", "", async {
            let price = self.service.catalog().pod_price(&pod, hours?)?;
            Ok(proto::PricingPodPriceResponse { price })
        })
        .await
    }

    async fn gpu_label(
        &self,
        _req: Request<proto::GpuLabelRequest>,
    ) -> Result<Response<proto::GpuLabelResponse>, Status> {
        self.call("GPULabel", "", async {
            Ok(proto::GpuLabelResponse {
                label: self.service.catalog().gpu_label(),
            })
        })
        .await
    }

    async fn get_available_gpu_types(
        &self,
        _req: Request<proto::GetAvailableGpuTypesRequest>,
    ) -> Result<Response<proto::GetAvailableGpuTypesResponse>, Status> {
        self.call("GetAvailableGPUTypes", "", async {
            Ok(proto::GetAvailableGpuTypesResponse {
                gpu_types: self
                    .service
                    .catalog()
                    .gpu_types()
                    .into_iter()
                    .map(|t| (t, prost_types::Any::default()))
                    .collect(),
            })
        })
        .await
    }

    async fn cleanup(
        &self,
        _req: Request<proto::CleanupRequest>,
    ) -> Result<Response<proto::CleanupResponse>, Status> {
        // CA calls Cleanup when it exits; a CA restart or leader change must not tear down
        // provider state, so this is deliberately a no-op.
        self.call("Cleanup", "", async { Ok(proto::CleanupResponse {}) })
            .await
    }

    async fn refresh(
        &self,
        _req: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        // Answered from the snapshot, never waiting on Cloudify (see NodeGroupService::refresh).
        self.call("Refresh", "", async {
            self.service.refresh()?;
            Ok(proto::RefreshResponse {})
        })
        .await
    }

    async fn node_group_target_size(
        &self,
        req: Request<proto::NodeGroupTargetSizeRequest>,
    ) -> Result<Response<proto::NodeGroupTargetSizeResponse>, Status> {
        let id = req.into_inner().id;
        self.call("NodeGroupTargetSize", &id, async {
            Ok(proto::NodeGroupTargetSizeResponse {
                target_size: self.service.target_size(&id)?,
            })
        })
        .await
    }

    async fn node_group_increase_size(
        &self,
        req: Request<proto::NodeGroupIncreaseSizeRequest>,
    ) -> Result<Response<proto::NodeGroupIncreaseSizeResponse>, Status> {
        let r = req.into_inner();
        self.call("NodeGroupIncreaseSize", &r.id, async {
            self.service.increase_size(&r.id, r.delta).await?;
            Ok(proto::NodeGroupIncreaseSizeResponse {})
        })
        .await
    }

    async fn node_group_delete_nodes(
        &self,
        req: Request<proto::NodeGroupDeleteNodesRequest>,
    ) -> Result<Response<proto::NodeGroupDeleteNodesResponse>, Status> {
        let r = req.into_inner();
        let nodes = convert::node_refs(&r.nodes);
        self.call("NodeGroupDeleteNodes", &r.id, async {
            self.service.delete_nodes(&r.id, &nodes).await?;
            Ok(proto::NodeGroupDeleteNodesResponse {})
        })
        .await
    }

    async fn node_group_decrease_target_size(
        &self,
        req: Request<proto::NodeGroupDecreaseTargetSizeRequest>,
    ) -> Result<Response<proto::NodeGroupDecreaseTargetSizeResponse>, Status> {
        let r = req.into_inner();
        self.call("NodeGroupDecreaseTargetSize", &r.id, async {
            self.service.decrease_target_size(&r.id, r.delta).await?;
            Ok(proto::NodeGroupDecreaseTargetSizeResponse {})
        })
        .await
    }

    async fn node_group_nodes(
        &self,
        req: Request<proto::NodeGroupNodesRequest>,
    ) -> Result<Response<proto::NodeGroupNodesResponse>, Status> {
        let id = req.into_inner().id;
        self.call("NodeGroupNodes", &id, async {
            Ok(proto::NodeGroupNodesResponse {
                instances: self
                    .service
                    .nodes(&id)?
                    .into_iter()
                    .map(convert::instance)
                    .collect(),
            })
        })
        .await
    }

    async fn node_group_template_node_info(
        &self,
        req: Request<proto::NodeGroupTemplateNodeInfoRequest>,
    ) -> Result<Response<proto::NodeGroupTemplateNodeInfoResponse>, Status> {
        let id = req.into_inner().id;
        self.call("NodeGroupTemplateNodeInfo", &id, async {
            let bytes = self.service.catalog().template_node_info(&id)?;
            // The same encoded v1.Node in the legacy field 1 (CA <= 1.34.1) and nodeBytes (2).
            Ok(proto::NodeGroupTemplateNodeInfoResponse {
                node_info: bytes.as_ref().clone(),
                node_bytes: bytes.as_ref().clone(),
            })
        })
        .await
    }

    async fn node_group_get_options(
        &self,
        req: Request<proto::NodeGroupAutoscalingOptionsRequest>,
    ) -> Result<Response<proto::NodeGroupAutoscalingOptionsResponse>, Status> {
        let r = req.into_inner();
        self.call("NodeGroupGetOptions", &r.id, async {
            let defaults = convert::options_from_proto(r.defaults.as_ref());
            let merged = self.service.catalog().options(&r.id, defaults)?;
            Ok(proto::NodeGroupAutoscalingOptionsResponse {
                node_group_autoscaling_options: Some(convert::options_to_proto(&merged)),
            })
        })
        .await
    }
}
