//! Version compatibility on the wire: our answers decode with messages that have only the legacy
//! fields (CA <= 1.34.1) and with messages that have only the new fields (CA >= 1.35).

use autoscaler_cloudify::proto;
use k8s_pb::api::core::v1::Node;
use prost::Message;
use testkit::env::*;

/// CA <= 1.34.1: `k8s.io.api.core.v1.Node nodeInfo = 1` (embedded message).
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyTemplateResponse {
    #[prost(message, optional, tag = "1")]
    node_info: Option<Node>,
}

/// CA >= 1.35: `bytes nodeBytes = 2` only.
#[derive(Clone, PartialEq, prost::Message)]
struct NewTemplateResponse {
    #[prost(bytes = "vec", tag = "2")]
    node_bytes: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetaDuration {
    #[prost(int64, tag = "1")]
    duration: i64,
}

/// CA 1.29 .. 1.34.1 options: apimachinery Durations in 3/4/5.
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyOptions {
    #[prost(double, tag = "1")]
    scale_down_utilization_threshold: f64,
    #[prost(message, optional, tag = "3")]
    scale_down_unneeded_time: Option<MetaDuration>,
    #[prost(message, optional, tag = "4")]
    scale_down_unready_time: Option<MetaDuration>,
    #[prost(message, optional, tag = "5")]
    max_node_provision_time: Option<MetaDuration>,
}

/// CA >= 1.35 options: google Durations in 8/9/10 only.
#[derive(Clone, PartialEq, prost::Message)]
struct NewOptions {
    #[prost(double, tag = "1")]
    scale_down_utilization_threshold: f64,
    #[prost(message, optional, tag = "8")]
    scale_down_unneeded_duration: Option<prost_types::Duration>,
    #[prost(message, optional, tag = "9")]
    scale_down_unready_duration: Option<prost_types::Duration>,
    #[prost(message, optional, tag = "10")]
    max_node_provision_duration: Option<prost_types::Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LegacyOptionsResponse {
    #[prost(message, optional, tag = "1")]
    options: Option<LegacyOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NewOptionsResponse {
    #[prost(message, optional, tag = "1")]
    options: Option<NewOptions>,
}

#[tokio::test]
async fn template_response_decodes_as_legacy_and_as_new() {
    let mut env = start_default().await;
    let r = env
        .client
        .node_group_template_node_info(proto::NodeGroupTemplateNodeInfoRequest {
            id: WORKERS.into(),
        })
        .await
        .expect("template")
        .into_inner();
    let wire = r.encode_to_vec();
    let legacy = LegacyTemplateResponse::decode(wire.as_slice()).expect("legacy decode");
    let new = NewTemplateResponse::decode(wire.as_slice()).expect("new decode");
    let from_new = Node::decode(new.node_bytes.as_slice()).expect("node bytes");
    let from_legacy = legacy.node_info.expect("legacy node present");
    assert_eq!(from_legacy, from_new);
    let labels = from_new.metadata.expect("meta").labels;
    assert_eq!(labels["cloudify.co/scaling-group"], "workers");
    env.shutdown().await;
}

#[tokio::test]
async fn options_response_decodes_as_legacy_and_as_new() {
    let mut env = start_default().await;
    // A CA 1.29 request: legacy defaults only.
    let legacy_request = proto::NodeGroupAutoscalingOptions {
        scale_down_utilization_threshold: 0.5,
        scale_down_unready_time: Some(proto::LegacyDuration {
            duration: 1_200_000_000_000,
        }),
        max_node_provision_time: Some(proto::LegacyDuration {
            duration: 900_000_000_000,
        }),
        ..Default::default()
    };
    let r = env
        .client
        .node_group_get_options(proto::NodeGroupAutoscalingOptionsRequest {
            id: WORKERS.into(),
            defaults: Some(legacy_request),
        })
        .await
        .expect("options")
        .into_inner();
    let wire = r.encode_to_vec();
    let old = LegacyOptionsResponse::decode(wire.as_slice())
        .expect("legacy")
        .options
        .expect("present");
    let new = NewOptionsResponse::decode(wire.as_slice())
        .expect("new")
        .options
        .expect("present");
    assert_eq!(old.scale_down_utilization_threshold, 0.4);
    assert_eq!(new.scale_down_utilization_threshold, 0.4);
    assert_eq!(
        old.scale_down_unneeded_time.map(|d| d.duration),
        Some(20_000_000_000)
    );
    assert_eq!(
        new.scale_down_unneeded_duration.map(|d| d.seconds),
        Some(20)
    );
    assert_eq!(
        old.scale_down_unready_time.map(|d| d.duration),
        Some(1_200_000_000_000)
    );
    assert_eq!(
        new.scale_down_unready_duration.map(|d| d.seconds),
        Some(1200)
    );
    assert_eq!(
        old.max_node_provision_time.map(|d| d.duration),
        Some(900_000_000_000)
    );
    assert_eq!(
        new.max_node_provision_duration.map(|d| d.seconds),
        Some(900)
    );
    env.shutdown().await;
}

#[test]
fn legacy_pricing_times_and_pod_are_read() {
    // apimachinery Time {seconds=1, nanos=2} is wire-identical to google Timestamp; a legacy
    // request with fields 2/3 decodes into our message.
    let req = proto::PricingNodePriceRequest {
        start_time: Some(prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 3610,
            nanos: 0,
        }),
        ..Default::default()
    };
    let back =
        proto::PricingNodePriceRequest::decode(req.encode_to_vec().as_slice()).expect("decode");
    assert_eq!(back.end_time.map(|t| t.seconds), Some(3610));
}
