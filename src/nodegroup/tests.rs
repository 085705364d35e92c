//! Domain unit tests with a fake Cloudify (no HTTP).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::cloudify::fake::FakeCloudify;
use crate::cloudify::{Deployment, Node, NodeInstance};

/// One deployment `d` with group `g` (VM node `g_host`, `n` started instances), one deployment
/// `other` with group `o`, both labelled for the discovery rule below. A scale POST takes 5 ms,
/// so concurrent callers interleave there (without the per-group mutation lock, every one of
/// them would pass the max check).
fn fake_with_instances(n: usize) -> Arc<FakeCloudify> {
    let instance = |id: &str, group: &str, dep: &str, runtime: serde_json::Value| -> NodeInstance {
        serde_json::from_value(json!({
            "id": id, "node_id": format!("{group}_host"), "deployment_id": dep, "host_id": id,
            "state": "started", "runtime_properties": runtime,
            "scaling_groups": [{"name": group, "id": format!("{group}_gi_{id}")}],
        }))
        .expect("instance")
    };
    let mut instances: Vec<NodeInstance> = (0..n)
        .map(|i| {
            instance(
                &format!("g_host_{i}"),
                "g",
                "d",
                json!({"hostname": format!("node-{i}")}),
            )
        })
        .collect();
    instances.push(instance("o_host_0", "o", "other", json!({})));
    let dep = |id: &str, g: &str, planned: usize| -> Deployment {
        serde_json::from_value(json!({"id": id, "labels": [{"key": "k", "value": "v"}],
            "scaling_groups": {g: {"members": [format!("{g}_host")],
                "properties": {"min_instances": 1, "max_instances": 5,
                               "current_instances": planned, "planned_instances": planned}}}}))
        .expect("deployment")
    };
    let node = |id: &str, dep: &str| -> Node {
        serde_json::from_value(json!({"id": id, "deployment_id": dep,
            "type_hierarchy": ["cloudify.nodes.Root", "cloudify.nodes.Compute"]}))
        .expect("node")
    };
    Arc::new(
        FakeCloudify::new("fake", "t")
            .with_deployments(vec![dep("d", "g", n), dep("other", "o", 1)])
            .with_nodes(vec![node("g_host", "d"), node("o_host", "other")])
            .with_instances(instances)
            .with_scale_latency(Duration::from_millis(5)),
    )
}

const YAML: &str = r#"
cloudify: [{url: "http://fake"}]
node_groups:
  auto_discovery: ["cloudify:label=k=v"]
  groups:
    "other/o": {provider_id_template: "openstack:///{runtime.external_id}"}
"#;

async fn service(fake: Arc<FakeCloudify>) -> Arc<NodeGroupService> {
    service_with(fake, ServiceSettings::default()).await
}

async fn service_with(fake: Arc<FakeCloudify>, settings: ServiceSettings) -> Arc<NodeGroupService> {
    let cfg = crate::inventory::testkit::config(YAML);
    let metrics = Metrics::new();
    let inv = Inventory::new(
        vec![fake as Arc<dyn Cloudify>],
        Arc::new(cfg.node_groups),
        Arc::clone(&metrics),
    );
    inv.refresh().await.expect("refresh");
    NodeGroupService::new(inv, metrics, settings)
}

#[tokio::test(start_paused = true)]
async fn increase_is_bounded_by_max_and_raises_target_at_once() {
    let fake = fake_with_instances(2);
    let svc = service(Arc::clone(&fake)).await;
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
    assert!(matches!(
        svc.increase_size("d/g", 4).await,
        Err(DomainError::AboveMax { .. })
    ));
    assert!(matches!(
        svc.increase_size("d/g", 0).await,
        Err(DomainError::InvalidArgument(_))
    ));
    assert!(matches!(
        svc.increase_size("x/y", 1).await,
        Err(DomainError::GroupNotFound(_))
    ));
    assert!(fake.scales().is_empty(), "nothing sent");
    svc.increase_size("d/g", 3).await.expect("2 + 3 = max");
    assert_eq!(svc.target_size("d/g").expect("target"), 5);
    assert!(matches!(
        svc.increase_size("d/g", 1).await,
        Err(DomainError::AboveMax { .. })
    ));
    // After a refresh the queued execution (not started) carries the delta: same target.
    svc.inventory().refresh().await.expect("refresh");
    assert_eq!(svc.target_size("d/g").expect("target"), 5);
    assert_eq!(fake.scales().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bounds_are_frozen_at_target_while_cloudify_is_unreachable() {
    let fake = fake_with_instances(2);
    let svc = service(Arc::clone(&fake)).await;
    let bounds = |svc: &NodeGroupService| -> Vec<(String, i32, i32)> {
        svc.node_groups()
            .into_iter()
            .map(|g| (g.id, g.min, g.max))
            .collect()
    };
    assert!(bounds(&svc).contains(&("d/g".to_owned(), 1, 5)));
    fake.fail_reads(true);
    assert!(svc.inventory().refresh().await.is_err());
    // CA must see no room to scale either way (it would only get UNAVAILABLE and back off).
    assert!(
        bounds(&svc).contains(&("d/g".to_owned(), 2, 2)),
        "{:?}",
        bounds(&svc)
    );
    let g = svc
        .node_group_for_node("", "node-0")
        .expect("node-0 is in d/g");
    assert_eq!((g.min, g.max), (2, 2));
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
    // CA's Refresh RPC still answers from the snapshot.
    svc.refresh().expect("stale snapshot served");
    // The first good refresh gives the real bounds back.
    fake.fail_reads(false);
    svc.inventory().refresh().await.expect("refresh");
    assert!(bounds(&svc).contains(&("d/g".to_owned(), 1, 5)));
    let g = svc.node_group_for_node("", "node-0").expect("node-0");
    assert_eq!((g.min, g.max), (1, 5));
}

#[tokio::test(start_paused = true)]
async fn concurrent_increases_are_serialized() {
    let fake = fake_with_instances(1);
    let svc = service(Arc::clone(&fake)).await;
    let calls = (0..20).map(|_| {
        let svc = Arc::clone(&svc);
        async move { svc.increase_size("d/g", 1).await }
    });
    let ok = futures::future::join_all(calls)
        .await
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(ok, 4, "1 + 4 = max 5");
    assert_eq!(svc.target_size("d/g").expect("target"), 5);
}

#[tokio::test(start_paused = true)]
async fn cloudify_failure_on_increase_is_unavailable_and_changes_nothing() {
    let fake = fake_with_instances(2);
    let svc = service(Arc::clone(&fake)).await;
    fake.fail_scales(true);
    assert!(matches!(
        svc.increase_size("d/g", 1).await,
        Err(DomainError::Unavailable { .. })
    ));
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_deletes_become_one_scale_naming_exact_instances() {
    let fake = fake_with_instances(5);
    let svc = service(Arc::clone(&fake)).await;
    let ids = ["g_host_1", "g_host_3", "g_host_4"];
    let calls = ids.iter().map(|vm| {
        let svc = Arc::clone(&svc);
        let node = NodeRef {
            provider_id: format!("cloudify://t/d/{vm}"),
            name: String::new(),
        };
        async move { svc.delete_nodes("d/g", &[node]).await }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("accepted");
    }
    let scales = fake.scales();
    assert_eq!(scales.len(), 1, "one batched execution");
    assert_eq!(scales[0].delta, -3);
    let mut named = scales[0].include_instances.clone();
    named.sort();
    assert_eq!(named, ids);
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
    let nodes = svc.nodes("d/g").expect("nodes");
    let deleting = nodes
        .iter()
        .filter(|n| n.state == InstanceState::Deleting)
        .count();
    assert_eq!(deleting, 3);
    // Deleting an instance already being deleted is a no-op.
    svc.delete_nodes(
        "d/g",
        &[NodeRef {
            provider_id: "cloudify://t/d/g_host_1".into(),
            name: String::new(),
        }],
    )
    .await
    .expect("skipped");
    assert_eq!(fake.scales().len(), 1);
    // Below min (1): 2 left, deleting both is refused.
    let both: Vec<NodeRef> = ["g_host_0", "g_host_2"]
        .iter()
        .map(|v| NodeRef {
            provider_id: format!("cloudify://t/d/{v}"),
            name: String::new(),
        })
        .collect();
    assert!(matches!(
        svc.delete_nodes("d/g", &both).await,
        Err(DomainError::FailedPrecondition(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn foreign_and_unknown_nodes_are_refused_before_any_call() {
    let fake = fake_with_instances(3);
    let svc = service(Arc::clone(&fake)).await;
    for bad in [
        "openstack:///nope",
        "cloudify://t/other/o_host_0",
        "cloudify-pending://t/other/o_host_0",
    ] {
        let nodes = [
            NodeRef {
                provider_id: "cloudify://t/d/g_host_0".into(),
                name: String::new(),
            },
            NodeRef {
                provider_id: bad.into(),
                name: String::new(),
            },
        ];
        assert!(
            matches!(
                svc.delete_nodes("d/g", &nodes).await,
                Err(DomainError::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    assert!(fake.scales().is_empty());
}

#[tokio::test(start_paused = true)]
async fn lookups_by_provider_id_normalized_id_and_name() {
    let svc = service(fake_with_instances(2)).await;
    let g = |p: &str, n: &str| svc.node_group_for_node(p, n).map(|v| v.id);
    assert_eq!(g("cloudify://t/d/g_host_0", "").as_deref(), Some("d/g"));
    assert_eq!(g("foo:///g_host_1", "").as_deref(), Some("d/g"));
    assert_eq!(g("", "node-1").as_deref(), Some("d/g"));
    assert_eq!(g("aws:///z/i-1", "ip-1"), None);
    // `other/o` needs runtime.external_id, which is not set: placeholder id, creating.
    let o = svc.nodes("other/o").expect("nodes");
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].id, "cloudify-pending://t/other/o_host_0");
    assert_eq!(o[0].state, InstanceState::Creating);
}

/// With the node controller running, a Node without a provider id is not initialized yet: CA
/// must see it in no group (its instance stays upcoming), or it scales up once more.
#[tokio::test]
async fn nodes_without_provider_id_match_no_group_while_the_node_controller_initializes() {
    let settings = ServiceSettings {
        name_lookup_without_provider_id: false,
        ..ServiceSettings::default()
    };
    let svc = service_with(fake_with_instances(2), settings).await;
    let g = |p: &str, n: &str| svc.node_group_for_node(p, n).map(|v| v.id);
    assert_eq!(g("", "node-1"), None);
    // Once initialized (provider id set), the same Node is in its group.
    assert_eq!(
        g("cloudify://t/d/g_host_1", "node-1").as_deref(),
        Some("d/g")
    );
}

#[tokio::test(start_paused = true)]
async fn decrease_cancels_or_shrinks_waiting_scale_outs_only() {
    let fake = fake_with_instances(1);
    let svc = service(Arc::clone(&fake)).await;
    assert!(matches!(
        svc.decrease_target_size("d/g", -1).await,
        Err(DomainError::FailedPrecondition(_))
    ));
    assert!(matches!(
        svc.decrease_target_size("d/g", 1).await,
        Err(DomainError::InvalidArgument(_))
    ));
    svc.increase_size("d/g", 3).await.expect("increase");
    assert_eq!(svc.target_size("d/g").expect("target"), 4);
    svc.decrease_target_size("d/g", -2).await.expect("shrink");
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
    assert_eq!(fake.cancels().len(), 1);
    let scales = fake.scales();
    assert_eq!(
        scales.iter().map(|s| s.delta).collect::<Vec<_>>(),
        vec![3, 1],
        "replaced by a scale of 1"
    );
    svc.inventory().refresh().await.expect("refresh");
    assert_eq!(
        svc.target_size("d/g").expect("target"),
        2,
        "Cloudify agrees after refresh"
    );
    assert!(matches!(
        svc.decrease_target_size("d/g", -2).await,
        Err(DomainError::FailedPrecondition(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn failed_scale_out_shows_errored_instances_until_deleted() {
    let fake = fake_with_instances(2);
    fake.push_execution(
        serde_json::from_value(json!({"id": "ef", "workflow_id": "scale", "deployment_id": "d", "status": "failed",
            "error": "Quota exceeded for cores", "parameters": {"scalable_entity_name": "g", "delta": 2}}))
        .expect("execution"),
    );
    let svc = service(Arc::clone(&fake)).await;
    assert_eq!(svc.target_size("d/g").expect("target"), 4);
    let failed: Vec<InstanceView> = svc
        .nodes("d/g")
        .expect("nodes")
        .into_iter()
        .filter(|n| n.error.is_some())
        .collect();
    assert_eq!(failed.len(), 2);
    let e = failed[0].error.as_ref().expect("error");
    assert_eq!(e.class, ErrorClass::OutOfResources);
    assert!(!e.code.is_empty());
    assert_eq!(failed[0].state, InstanceState::Creating);
    let fake_nodes: Vec<NodeRef> = failed
        .iter()
        .map(|f| NodeRef {
            provider_id: f.id.clone(),
            name: f.id.clone(),
        })
        .collect();
    svc.delete_nodes("d/g", &fake_nodes)
        .await
        .expect("fake nodes");
    assert!(fake.scales().is_empty(), "nothing to remove in Cloudify");
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
    svc.inventory().refresh().await.expect("refresh");
    assert_eq!(
        svc.target_size("d/g").expect("target"),
        2,
        "stays dropped across refreshes"
    );
    assert_eq!(svc.nodes("d/g").expect("nodes").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn optional_features_are_unimplemented_unless_configured() {
    let svc = service(fake_with_instances(1)).await;
    assert!(matches!(
        svc.catalog().template_node_info("d/g"),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(matches!(
        svc.catalog().template_node_info("x/y"),
        Err(DomainError::GroupNotFound(_))
    ));
    assert!(matches!(
        svc.catalog()
            .options("d/g", template::AutoscalingOptions::default()),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(matches!(
        svc.catalog()
            .node_price("cloudify://t/d/g_host_0", "", &Default::default(), 1.0),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(svc.catalog().gpu_types().is_empty());
}

#[test]
fn failure_message_is_the_last_line_of_the_traceback() {
    use super::overlay::failure_message;
    let traceback = "Traceback (most recent call last):\n  File \"/opt/mgmtworker/env/lib/python3.11/site-packages/cloudify/dispatch.py\", line 1125, in main\n    payload = handler.handle()\nNonRecoverableError: Quota exceeded for cores: Requested 4, but already used 20 of 20 cores\n\n";
    assert_eq!(
        failure_message("ef", traceback),
        "Cloudify scale execution ef failed: NonRecoverableError: Quota exceeded for cores: \
         Requested 4, but already used 20 of 20 cores"
    );
    assert_eq!(
        failure_message("e2", "  \n"),
        "Cloudify scale execution e2 failed: no error text"
    );
    let long = format!("x\n{}", "é".repeat(600));
    let m = failure_message("e3", &long);
    assert!(m.ends_with('…'), "{m}");
    assert!(m.len() <= "Cloudify scale execution e3 failed: ".len() + 512 + '…'.len_utf8());
}

/// Issue 21 part 6: the template's zone is the deployment's Cloudify site when no zone is
/// configured; a deployment moved to another site gets a template in its new zone, not the one
/// cached before the move.
#[tokio::test(start_paused = true)]
async fn the_template_follows_a_deployment_to_its_new_site() {
    let fake = fake_with_instances(1);
    fake.set_site("d", Some("site-a"));
    let yaml = format!("{YAML}    \"d/g\": {{template: {{capacity: {{cpu: \"2\"}}}}}}\n");
    let cfg = crate::inventory::testkit::config(&yaml);
    let metrics = Metrics::new();
    let inv = Inventory::new(
        vec![Arc::clone(&fake) as Arc<dyn Cloudify>],
        Arc::new(cfg.node_groups),
        Arc::clone(&metrics),
    );
    inv.refresh().await.expect("refresh");
    let svc = NodeGroupService::new(Arc::clone(&inv), metrics, ServiceSettings::default());
    let zone = |svc: &NodeGroupService| {
        let bytes = svc.catalog().template_node_info("d/g").expect("template");
        let node = <k8s_pb::api::core::v1::Node as prost::Message>::decode(bytes.as_slice())
            .expect("node");
        node.metadata
            .and_then(|m| m.labels.get(template::ZONE_LABEL).cloned())
    };
    assert_eq!(zone(&svc).as_deref(), Some("site-a"));
    fake.set_site("d", Some("site-b"));
    inv.refresh().await.expect("refresh");
    assert_eq!(zone(&svc).as_deref(), Some("site-b"));
}
