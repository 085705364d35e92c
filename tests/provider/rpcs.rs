//! Every RPC of CA's CloudProvider service, over a real socket, against the simulator over real
//! HTTP.

use std::time::Duration;

use autoscaler_cloudify::proto;
use k8s_pb::api::core::v1::Node;
use prost::Message;
use testkit::env::*;
use tonic::Code;

#[tokio::test]
async fn node_groups_lists_discovered_scaling_groups_only() {
    let mut env = start_default().await;
    let groups = env
        .client
        .node_groups(proto::NodeGroupsRequest {})
        .await
        .expect("node groups")
        .into_inner()
        .node_groups;
    let summary: Vec<(String, i32, i32)> = groups
        .iter()
        .map(|g| (g.id.clone(), g.min_size, g.max_size))
        .collect();
    assert_eq!(
        summary,
        vec![(WORKERS.to_owned(), 1, 10), (GPU.to_owned(), 0, 4)],
        "the control plane deployment has no scaling group"
    );
    assert!(groups.iter().all(|g| !g.debug.is_empty()));
    env.shutdown().await;
}

#[tokio::test]
async fn node_group_for_node_by_provider_id_normalized_id_and_name() {
    let mut env = start_default().await;
    let nodes = env.nodes(WORKERS).await;
    assert_eq!(nodes.len(), 2);
    let id = nodes[0].id.clone();
    assert!(
        id.starts_with("cloudify://default_tenant/k8s-pool-a/workers_host_"),
        "{id}"
    );
    let vm = id.rsplit('/').next().expect("vm id").to_owned();
    assert_eq!(env.group_for(&id, "whatever").await, WORKERS);
    // Normalized: another scheme, same last segment.
    assert_eq!(env.group_for(&format!("other:///{vm}"), "").await, WORKERS);
    // By node name (runtime property `hostname` = <deployment>-<vm id> with '-').
    let hostname = format!("k8s-pool-a-{}", vm.replace('_', "-"));
    assert_eq!(env.group_for("", &hostname).await, WORKERS);
    // Control plane and foreign nodes: empty id.
    assert_eq!(
        env.group_for(
            "cloudify://default_tenant/k8s-control-plane/control_plane_host_abc",
            "k8s-control-plane-x"
        )
        .await,
        ""
    );
    assert_eq!(
        env.group_for("aws:///eu-west-1a/i-0123", "ip-10-0-0-1")
            .await,
        ""
    );
    assert_eq!(env.group_for("", "").await, "");
    env.shutdown().await;
}

#[tokio::test]
async fn target_size_and_nodes_of_each_group() {
    let mut env = start_default().await;
    assert_eq!(env.target(WORKERS).await, 2);
    assert_eq!(env.target(GPU).await, 0);
    let nodes = env.nodes(WORKERS).await;
    assert!(nodes.iter().all(|i| state_of(i) == 1), "running: {nodes:?}");
    assert!(env.nodes(GPU).await.is_empty());
    let e = env
        .client
        .node_group_target_size(proto::NodeGroupTargetSizeRequest {
            id: "nope/x".into(),
        })
        .await
        .expect_err("unknown group");
    assert_eq!(e.code(), Code::NotFound);
    let e = env
        .client
        .node_group_nodes(proto::NodeGroupNodesRequest {
            id: "nope/x".into(),
        })
        .await
        .expect_err("unknown group");
    assert_eq!(e.code(), Code::NotFound);
    env.shutdown().await;
}

#[tokio::test]
async fn increase_size_validates_then_raises_target_at_once() {
    let mut env = start_default().await;
    let posts = env.route_count("POST /api/v3.1/executions").await;
    assert_eq!(
        env.increase(WORKERS, 0).await.expect_err("zero").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        env.increase(WORKERS, -1)
            .await
            .expect_err("negative")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        env.increase(WORKERS, 9)
            .await
            .expect_err("2 + 9 > 10")
            .code(),
        Code::ResourceExhausted
    );
    assert_eq!(
        env.increase("nope/x", 1).await.expect_err("unknown").code(),
        Code::NotFound
    );
    assert_eq!(
        env.route_count("POST /api/v3.1/executions").await,
        posts,
        "nothing sent"
    );

    env.faults(serde_json::json!({"hold_executions": true}))
        .await;
    env.increase(WORKERS, 3).await.expect("increase");
    assert_eq!(
        env.target(WORKERS).await,
        5,
        "target raised before any VM exists"
    );
    env.refresh().await;
    assert_eq!(
        env.target(WORKERS).await,
        5,
        "derived from Cloudify's queued execution after refresh"
    );
    env.clear_faults().await;
    env.wait_executions_done().await;
    let nodes = env.wait_running(WORKERS, 5).await;
    assert_eq!(nodes.len(), 5);
    assert_eq!(env.target(WORKERS).await, 5);
    env.shutdown().await;
}

#[tokio::test]
async fn decrease_target_size_only_cancels_capacity_not_yet_created() {
    let mut env = start_default().await;
    assert_eq!(
        env.client
            .node_group_decrease_target_size(proto::NodeGroupDecreaseTargetSizeRequest {
                delta: 1,
                id: WORKERS.into()
            })
            .await
            .expect_err("positive")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        env.client
            .node_group_decrease_target_size(proto::NodeGroupDecreaseTargetSizeRequest {
                delta: -1,
                id: WORKERS.into()
            })
            .await
            .expect_err("nothing pending: existing instances are never removed")
            .code(),
        Code::FailedPrecondition
    );
    env.faults(serde_json::json!({"hold_executions": true}))
        .await;
    env.increase(WORKERS, 3).await.expect("increase");
    env.refresh().await;
    assert_eq!(env.target(WORKERS).await, 5);
    env.client
        .node_group_decrease_target_size(proto::NodeGroupDecreaseTargetSizeRequest {
            delta: -2,
            id: WORKERS.into(),
        })
        .await
        .expect("decrease within the queued scale-out");
    assert_eq!(env.target(WORKERS).await, 3);
    env.refresh().await;
    assert_eq!(
        env.target(WORKERS).await,
        3,
        "Cloudify agrees: cancelled 3, queued 1"
    );
    assert_eq!(
        env.client
            .node_group_decrease_target_size(proto::NodeGroupDecreaseTargetSizeRequest {
                delta: -2,
                id: WORKERS.into()
            })
            .await
            .expect_err("only 1 not created")
            .code(),
        Code::FailedPrecondition
    );
    env.clear_faults().await;
    env.wait_executions_done().await;
    env.wait_running(WORKERS, 3).await;
    env.shutdown().await;
}

#[tokio::test]
async fn delete_nodes_removes_named_instance_and_lowers_target() {
    let mut env = start_default().await;
    env.increase(WORKERS, 2).await.expect("increase");
    env.wait_executions_done().await;
    let nodes = env.wait_running(WORKERS, 4).await;
    let victim = nodes[2].id.clone();
    env.delete(WORKERS, &[&victim]).await.expect("delete");
    assert_eq!(env.target(WORKERS).await, 3, "target lowered at once");
    let now = env.nodes(WORKERS).await;
    let v = now.iter().find(|i| i.id == victim).expect("still listed");
    assert_eq!(state_of(v), 3, "reported deleting");
    env.wait_executions_done().await;
    let after = env.wait_running(WORKERS, 3).await;
    assert!(after.iter().all(|i| i.id != victim));
    // Deleting below min is refused.
    let ids: Vec<String> = after.iter().map(|i| i.id.clone()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        env.delete(WORKERS, &refs)
            .await
            .expect_err("below min")
            .code(),
        Code::FailedPrecondition
    );
    env.shutdown().await;
}

#[tokio::test]
async fn template_node_info_carries_the_node_in_both_fields() {
    let mut env = start_default().await;
    let r = env
        .client
        .node_group_template_node_info(proto::NodeGroupTemplateNodeInfoRequest {
            id: WORKERS.into(),
        })
        .await
        .expect("template")
        .into_inner();
    assert!(!r.node_bytes.is_empty());
    assert_eq!(r.node_info, r.node_bytes);
    let node = Node::decode(r.node_bytes.as_slice()).expect("v1.Node");
    let meta = node.metadata.expect("metadata");
    assert_eq!(meta.labels["kubernetes.io/os"], "linux");
    assert_eq!(meta.labels["kubernetes.io/arch"], "amd64");
    assert_eq!(meta.labels["cloudify.co/deployment"], "k8s-pool-a");
    assert_eq!(meta.labels["cloudify.co/scaling-group"], "workers");
    assert_eq!(meta.labels["node.kubernetes.io/instance-type"], "m1.large");
    let spec = node.spec.expect("spec");
    assert_eq!(spec.taints[0].effect.as_deref(), Some("NoSchedule"));
    let status = node.status.expect("status");
    let q = |m: &std::collections::BTreeMap<
        String,
        k8s_pb::apimachinery::pkg::api::resource::Quantity,
    >,
             k: &str| { m.get(k).and_then(|q| q.string.clone()).unwrap_or_default() };
    assert_eq!(q(&status.capacity, "cpu"), "4");
    assert_eq!(q(&status.capacity, "pods"), "110", "pods defaulted");
    assert_eq!(q(&status.allocatable, "cpu"), "3800m");
    assert_eq!(
        q(&status.allocatable, "memory"),
        "16Gi",
        "allocatable defaults to capacity"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.r#type.as_deref() == Some("Ready") && c.status.as_deref() == Some("True"))
    );

    let e = env
        .client
        .node_group_template_node_info(proto::NodeGroupTemplateNodeInfoRequest { id: GPU.into() })
        .await
        .expect_err("no template configured");
    assert_eq!(e.code(), Code::Unimplemented);
    env.shutdown().await;
}

#[tokio::test]
async fn get_options_echoes_defaults_and_overrides_configured_fields() {
    let mut env = start_default().await;
    let defaults = proto::NodeGroupAutoscalingOptions {
        scale_down_utilization_threshold: 0.5,
        scale_down_gpu_utilization_threshold: 0.5,
        scale_down_unneeded_duration: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        scale_down_unready_duration: Some(prost_types::Duration {
            seconds: 1200,
            nanos: 0,
        }),
        max_node_provision_duration: Some(prost_types::Duration {
            seconds: 900,
            nanos: 0,
        }),
        zero_or_max_node_scaling: true,
        ..Default::default()
    };
    let o = env
        .client
        .node_group_get_options(proto::NodeGroupAutoscalingOptionsRequest {
            id: WORKERS.into(),
            defaults: Some(defaults),
        })
        .await
        .expect("options")
        .into_inner()
        .node_group_autoscaling_options
        .expect("options present");
    assert_eq!(o.scale_down_utilization_threshold, 0.4, "configured");
    assert_eq!(
        o.scale_down_gpu_utilization_threshold, 0.5,
        "default echoed"
    );
    assert_eq!(
        o.scale_down_unneeded_duration.as_ref().map(|d| d.seconds),
        Some(20)
    );
    assert_eq!(
        o.scale_down_unneeded_time.as_ref().map(|d| d.duration),
        Some(20_000_000_000)
    );
    assert_eq!(
        o.max_node_provision_duration.as_ref().map(|d| d.seconds),
        Some(900)
    );
    assert_eq!(
        o.max_node_provision_time.as_ref().map(|d| d.duration),
        Some(900_000_000_000)
    );
    assert_eq!(
        o.scale_down_unready_duration.as_ref().map(|d| d.seconds),
        Some(1200)
    );
    assert!(o.zero_or_max_node_scaling);

    // A CA <= 1.34.1 sends only the legacy durations 3/4/5: read them as fallback.
    let legacy = proto::NodeGroupAutoscalingOptions {
        max_node_provision_time: Some(proto::LegacyDuration {
            duration: 300_000_000_000,
        }),
        ..Default::default()
    };
    let o = env
        .client
        .node_group_get_options(proto::NodeGroupAutoscalingOptionsRequest {
            id: WORKERS.into(),
            defaults: Some(legacy),
        })
        .await
        .expect("options")
        .into_inner()
        .node_group_autoscaling_options
        .expect("present");
    assert_eq!(
        o.max_node_provision_duration.as_ref().map(|d| d.seconds),
        Some(300)
    );

    let e = env
        .client
        .node_group_get_options(proto::NodeGroupAutoscalingOptionsRequest {
            id: GPU.into(),
            defaults: None,
        })
        .await
        .expect_err("not configured");
    assert_eq!(e.code(), Code::Unimplemented);
    env.shutdown().await;
}

#[tokio::test]
async fn pricing_gpu_cleanup_and_refresh() {
    let mut env = start_default().await;
    let id = env.nodes(WORKERS).await[0].id.clone();
    let hour = |s: i64| {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    };
    let price = env
        .client
        .pricing_node_price(proto::PricingNodePriceRequest {
            node: Some(node(&id, "")),
            start_timestamp: hour(0),
            end_timestamp: hour(7200),
            ..Default::default()
        })
        .await
        .expect("price")
        .into_inner()
        .price;
    assert!((price - 0.24).abs() < 1e-9, "{price}");
    let e = env
        .client
        .pricing_node_price(proto::PricingNodePriceRequest {
            node: Some(node("aws:///x/i-1", "foreign")),
            ..Default::default()
        })
        .await
        .expect_err("no price");
    assert_eq!(e.code(), Code::Unimplemented);
    // Pod price: 1 CPU for one hour at 0.12/4 per core.
    let pod = k8s_pb::api::core::v1::Pod {
        spec: Some(k8s_pb::api::core::v1::PodSpec {
            containers: vec![k8s_pb::api::core::v1::Container {
                resources: Some(k8s_pb::api::core::v1::ResourceRequirements {
                    requests: [(
                        "cpu".to_owned(),
                        k8s_pb::apimachinery::pkg::api::resource::Quantity {
                            string: Some("1".into()),
                        },
                    )]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = env
        .client
        .pricing_pod_price(proto::PricingPodPriceRequest {
            pod_bytes: pod.encode_to_vec(),
            start_timestamp: hour(0),
            end_timestamp: hour(3600),
            ..Default::default()
        })
        .await
        .expect("pod price")
        .into_inner()
        .price;
    assert!((p - 0.03).abs() < 1e-9, "{p}");

    let label = env
        .client
        .gpu_label(proto::GpuLabelRequest {})
        .await
        .expect("gpu label")
        .into_inner()
        .label;
    assert_eq!(label, "cloudify.co/gpu-type");
    let types = env
        .client
        .get_available_gpu_types(proto::GetAvailableGpuTypesRequest {})
        .await
        .expect("gpu types")
        .into_inner()
        .gpu_types;
    assert_eq!(
        types.keys().cloned().collect::<Vec<_>>(),
        vec!["none-really".to_owned()]
    );
    env.client
        .cleanup(proto::CleanupRequest {})
        .await
        .expect("cleanup");
    env.client
        .refresh(proto::RefreshRequest {})
        .await
        .expect("refresh");
    // Cleanup tore nothing down.
    assert_eq!(env.target(WORKERS).await, 2);
    env.shutdown().await;
}

#[tokio::test]
async fn cloudify_down_reads_still_answer_mutations_unavailable() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"down": true})).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        env.client.refresh(proto::RefreshRequest {}),
    )
    .await
    .expect("Refresh answers within the deadline");
    assert!(r.is_ok(), "Refresh keeps the last snapshot: {r:?}");
    assert_eq!(env.target(WORKERS).await, 2);
    assert_eq!(env.nodes(WORKERS).await.len(), 2);
    let e = env.increase(WORKERS, 1).await.expect_err("Cloudify down");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        env.target(WORKERS).await,
        2,
        "a refused increase does not raise the target"
    );
    // The Refresh above asked for a background refresh; /readyz shows its failure once it ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = env
            .http
            .get(format!("http://{}/readyz", env.app.http_addr))
            .send()
            .await
            .expect("readyz");
        let body: serde_json::Value = ready.json().await.expect("json");
        if body["detail"]["cloudify_reachable"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.shutdown().await;
}
