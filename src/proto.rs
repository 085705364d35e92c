//! The generated externalgrpc protocol (`proto/externalgrpc.proto`).

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("clusterautoscaler.cloudprovider.v1.externalgrpc");
}

pub use generated::*;

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("externalgrpc_descriptor");
