//! Domain unit tests with a fake Cloudify (no HTTP).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::cloudify::{CloudifyError, Deployment, Execution, Node, NodeInstance, ScaleRequest};
use crate::config::{Config, Overrides};

/// An in-memory Cloudify: one deployment `d` with group `g` (VM node `g_host`), one deployment
/// `other` with group `o`. Scale requests are recorded and left queued.
#[derive(Default)]
struct FakeCloudify {
    instances: Mutex<Vec<NodeInstance>>,
    executions: Mutex<Vec<Execution>>,
    scales: Mutex<Vec<ScaleRequest>>,
    cancels: Mutex<Vec<String>>,
    planned: Mutex<i64>,
    fail_scale: Mutex<bool>,
    /// Every read fails as with a manager in maintenance mode.
    fail_reads: Mutex<bool>,
}

fn instance(
    id: &str,
    group: &str,
    dep: &str,
    state: &str,
    runtime: serde_json::Value,
) -> NodeInstance {
    serde_json::from_value(json!({
        "id": id, "node_id": format!("{group}_host"), "deployment_id": dep, "host_id": id,
        "state": state, "runtime_properties": runtime,
        "scaling_groups": [{"name": group, "id": format!("{group}_gi_{id}")}],
    }))
    .expect("instance")
}

impl FakeCloudify {
    fn with_instances(n: usize) -> Arc<Self> {
        let f = FakeCloudify::default();
        {
            let mut list = f.instances.lock().expect("lock");
            for i in 0..n {
                let id = format!("g_host_{i}");
                list.push(instance(
                    &id,
                    "g",
                    "d",
                    "started",
                    json!({"hostname": format!("node-{i}")}),
                ));
            }
            list.push(instance("o_host_0", "o", "other", "started", json!({})));
        }
        *f.planned.lock().expect("lock") = n as i64;
        Arc::new(f)
    }

    fn scales(&self) -> Vec<ScaleRequest> {
        self.scales.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Cloudify for FakeCloudify {
    fn name(&self) -> &str {
        "fake"
    }
    fn tenant(&self) -> &str {
        "t"
    }
    async fn deployments_by_id(&self, _ids: &[String]) -> Result<Vec<Deployment>, CloudifyError> {
        Ok(Vec::new())
    }
    async fn search_deployments(
        &self,
        _l: &[(String, String)],
    ) -> Result<Vec<Deployment>, CloudifyError> {
        if *self.fail_reads.lock().expect("lock") {
            // A failing manager costs the client's retries.
            tokio::time::sleep(Duration::from_millis(600)).await;
            return Err(CloudifyError::Timeout {
                route: "GET /deployments".into(),
                timeout: Duration::from_secs(1),
            });
        }
        let planned = *self.planned.lock().expect("lock");
        let dep = |id: &str, g: &str, planned: i64| -> Deployment {
            serde_json::from_value(json!({"id": id, "scaling_groups": {g: {
                "members": [format!("{g}_host")],
                "properties": {"min_instances": 1, "max_instances": 5,
                               "current_instances": planned, "planned_instances": planned}}}}))
            .expect("deployment")
        };
        Ok(vec![dep("d", "g", planned), dep("other", "o", 1)])
    }
    async fn nodes(&self, _d: &[String]) -> Result<Vec<Node>, CloudifyError> {
        let node = |id: &str, dep: &str| -> Node {
            serde_json::from_value(json!({"id": id, "deployment_id": dep,
                "type_hierarchy": ["cloudify.nodes.Root", "cloudify.nodes.Compute"]}))
            .expect("node")
        };
        Ok(vec![node("g_host", "d"), node("o_host", "other")])
    }
    async fn node_instances(
        &self,
        _d: &[String],
        _n: &[String],
    ) -> Result<Vec<NodeInstance>, CloudifyError> {
        Ok(self.instances.lock().expect("lock").clone())
    }
    async fn scale_executions(
        &self,
        _d: &[String],
        statuses: &[&str],
        _limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        Ok(self
            .executions
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| statuses.contains(&e.status.as_str()))
            .cloned()
            .collect())
    }
    async fn start_scale(&self, r: &ScaleRequest) -> Result<Execution, CloudifyError> {
        if *self.fail_scale.lock().expect("lock") {
            return Err(CloudifyError::Timeout {
                route: "POST /executions".into(),
                timeout: Duration::from_secs(1),
            });
        }
        let mut execs = self.executions.lock().expect("lock");
        let e: Execution = serde_json::from_value(json!({
            "id": format!("e{}", execs.len()), "workflow_id": "scale", "deployment_id": r.deployment_id,
            "status": "queued",
            "parameters": {"scalable_entity_name": r.group, "delta": r.delta, "include_instances": r.include_instances},
        }))
        .expect("execution");
        execs.push(e.clone());
        self.scales.lock().expect("lock").push(r.clone());
        Ok(e)
    }
    async fn execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        self.executions
            .lock()
            .expect("lock")
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or(CloudifyError::Api {
                route: "GET".into(),
                status: 404,
                code: "not_found_error".into(),
                message: id.into(),
            })
    }
    async fn cancel_execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        self.cancels.lock().expect("lock").push(id.to_owned());
        let mut execs = self.executions.lock().expect("lock");
        let e = execs
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(CloudifyError::Api {
                route: "POST".into(),
                status: 404,
                code: "not_found_error".into(),
                message: id.into(),
            })?;
        e.status = "cancelled".into();
        Ok(e.clone())
    }
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
    let env = std::collections::BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "x".to_owned())]);
    let cfg = Config::from_yaml(YAML, &Overrides::default(), &env).expect("config");
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
    let fake = FakeCloudify::with_instances(2);
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
    let fake = FakeCloudify::with_instances(2);
    // max age 0: every Refresh RPC tries Cloudify, as CA's loop does with the e2e settings.
    let settings = ServiceSettings {
        refresh_max_age: Duration::ZERO,
        ..ServiceSettings::default()
    };
    let svc = service_with(Arc::clone(&fake), settings).await;
    let bounds = |svc: &NodeGroupService| -> Vec<(String, i32, i32)> {
        svc.node_groups()
            .into_iter()
            .map(|g| (g.id, g.min, g.max))
            .collect()
    };
    assert!(bounds(&svc).contains(&("d/g".to_owned(), 1, 5)));
    *fake.fail_reads.lock().expect("lock") = true;
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
    // CA's Refresh RPC does not wait for the retries of a manager known to be down.
    let t0 = tokio::time::Instant::now();
    svc.refresh(Duration::from_secs(4))
        .await
        .expect("stale snapshot served");
    assert!(
        t0.elapsed() <= UNREACHABLE_REFRESH_WAIT,
        "{:?}",
        t0.elapsed()
    );
    // The first good refresh gives the real bounds back.
    *fake.fail_reads.lock().expect("lock") = false;
    svc.inventory().refresh().await.expect("refresh");
    assert!(bounds(&svc).contains(&("d/g".to_owned(), 1, 5)));
    let g = svc.node_group_for_node("", "node-0").expect("node-0");
    assert_eq!((g.min, g.max), (1, 5));
}

#[tokio::test(start_paused = true)]
async fn concurrent_increases_are_serialized() {
    let fake = FakeCloudify::with_instances(1);
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
    let fake = FakeCloudify::with_instances(2);
    let svc = service(Arc::clone(&fake)).await;
    *fake.fail_scale.lock().expect("lock") = true;
    assert!(matches!(
        svc.increase_size("d/g", 1).await,
        Err(DomainError::Unavailable { .. })
    ));
    assert_eq!(svc.target_size("d/g").expect("target"), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_deletes_become_one_scale_naming_exact_instances() {
    let fake = FakeCloudify::with_instances(5);
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
    let fake = FakeCloudify::with_instances(3);
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
    let svc = service(FakeCloudify::with_instances(2)).await;
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

#[tokio::test(start_paused = true)]
async fn decrease_cancels_or_shrinks_waiting_scale_outs_only() {
    let fake = FakeCloudify::with_instances(1);
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
    assert_eq!(fake.cancels.lock().expect("lock").len(), 1);
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
    let fake = FakeCloudify::with_instances(2);
    fake.executions.lock().expect("lock").push(
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
    let svc = service(FakeCloudify::with_instances(1)).await;
    assert!(matches!(
        svc.template_node_info("d/g"),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(matches!(
        svc.template_node_info("x/y"),
        Err(DomainError::GroupNotFound(_))
    ));
    assert!(matches!(
        svc.options("d/g", template::AutoscalingOptions::default()),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(matches!(
        svc.node_price("cloudify://t/d/g_host_0", "", &Default::default(), 1.0),
        Err(DomainError::NotImplemented(_))
    ));
    assert!(svc.gpu_types().is_empty());
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
