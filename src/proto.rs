//! The generated externalgrpc protocol (`proto/externalgrpc.proto`).

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("clusterautoscaler.cloudprovider.v1.externalgrpc");
}

pub use generated::*;

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("externalgrpc_descriptor");

/// The largest message CA's externalgrpc client receives: grpc-go's default, which CA does not
/// raise. NodeGroupNodes lists every instance of a group in one answer, so this bounds the size
/// of a group (issue 20: about 65k instances passed it).
pub const CA_MAX_RECEIVE_BYTES: usize = 4 * 1024 * 1024;

/// The longest `errorInfo.errorCode` sent (ours are short words such as `CLOUDIFY_SCALE_FAILED`).
pub const MAX_ERROR_CODE_BYTES: usize = 64;

/// The longest `errorInfo.errorMessage` sent: the domain already keeps the execution id and 512
/// bytes of Cloudify's error (a workflow's traceback can run to kilobytes); the facade cuts
/// anything longer to this, so every instance of an answer has a known bound.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 640;

/// How many instances with ids of `id_len` bytes, each carrying the longest error info sent, fit
/// in one NodeGroupNodes answer that CA accepts. Measured on the encoding itself: the answer is
/// its instances' entries one after the other.
pub fn instances_per_answer(id_len: usize) -> usize {
    use prost::Message;
    let one = NodeGroupNodesResponse {
        instances: vec![Instance {
            id: "i".repeat(id_len),
            status: Some(InstanceStatus {
                instance_state: instance_status::InstanceState::InstanceCreating as i32,
                error_info: Some(InstanceErrorInfo {
                    error_code: "c".repeat(MAX_ERROR_CODE_BYTES),
                    error_message: "m".repeat(MAX_ERROR_MESSAGE_BYTES),
                    instance_error_class: 99,
                }),
            }),
        }],
    };
    CA_MAX_RECEIVE_BYTES / one.encoded_len().max(1)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn an_answer_of_the_counted_instances_fits_and_one_more_does_not() {
        for id_len in [20, 64, 546, 3000] {
            let n = instances_per_answer(id_len);
            let instance = Instance {
                id: "i".repeat(id_len),
                status: Some(InstanceStatus {
                    instance_state: 1,
                    error_info: Some(InstanceErrorInfo {
                        error_code: "c".repeat(MAX_ERROR_CODE_BYTES),
                        error_message: "m".repeat(MAX_ERROR_MESSAGE_BYTES),
                        instance_error_class: 99,
                    }),
                }),
            };
            let mut answer = NodeGroupNodesResponse {
                instances: vec![instance.clone(); n],
            };
            assert!(answer.encoded_len() <= CA_MAX_RECEIVE_BYTES, "{id_len}");
            answer.instances.push(instance);
            assert!(answer.encoded_len() > CA_MAX_RECEIVE_BYTES, "{id_len}");
        }
    }
}
