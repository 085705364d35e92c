//! Contract tests of the provider's Cloudify client against the REAL Cloudify Manager (issue 19):
//! every request the provider makes (label search, deployments, nodes, node-instance paging,
//! scale executions listed, started and cancelled, deployment modifications), basic and token
//! authentication, tenants, and the error bodies of every refusal the provider can meet, each
//! answered by the real REST service and decoded by the provider's own models.
//!
//! Run by the manager tier (`tests/manager/run.sh`, which creates the deployments of
//! `tests/manager/scenarios/contract.yaml` first and sets `MANAGER_CONTRACT_REQUIRED=1`). Without
//! `CLOUDIFY_MANAGER_URL` every test prints why it is skipped and passes, unless the tier asked
//! for it. Each test scales its own deployment, so they run side by side.

mod support;

use std::time::{Duration, Instant};

use autoscaler_cloudify::cloudify::models::{ACTIVE_STATUSES, ErrorBody};
use autoscaler_cloudify::cloudify::{
    Auth, Cloudify, CloudifyClient, CloudifyError, ExecutionStatus, NodeInstance, ScaleRequest,
};
use reqwest::Method;
use serde_json::json;
use support::*;
use testkit::hostile::{HostileManager, Rule};

/// The statuses of an execution that has not started its workflow yet.
const WAITING: [ExecutionStatus; 3] = [
    ExecutionStatus::Queued,
    ExecutionStatus::Pending,
    ExecutionStatus::Scheduled,
];

fn scale(deployment: &str, delta: i64, include: &[&str], abort_started: bool) -> ScaleRequest {
    ScaleRequest {
        deployment_id: deployment.into(),
        group: GROUP.into(),
        delta,
        include_instances: include.iter().map(|s| (*s).to_owned()).collect(),
        abort_started,
    }
}

fn ids<T: AsRef<str>>(v: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut out: Vec<String> = v.into_iter().map(|s| s.as_ref().to_owned()).collect();
    out.sort();
    out
}

fn label(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// `POST /searches/deployments` with the provider's filter rules: one `any_of` label rule per
/// discovery label, all of which must match; the fields the provider projects come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_search_finds_exactly_the_labelled_deployments() {
    let Some(m) = manager("label_search_finds_exactly_the_labelled_deployments") else {
        return;
    };
    let c = m.client();
    require_deployments(&c, &[LIFE, QUEUE, FAIL, OTHER]).await;
    let found = c
        .search_deployments(&[label("k8s-cluster", CLUSTER)])
        .await
        .expect("POST /searches/deployments");
    assert_eq!(ids(found.iter().map(|d| &d.id)), ids([FAIL, LIFE, QUEUE]));
    let both = c
        .search_deployments(&[label("k8s-cluster", CLUSTER), label("k8s-role", "worker")])
        .await
        .expect("two labels");
    assert_eq!(ids(both.iter().map(|d| &d.id)), ids([FAIL, LIFE, QUEUE]));
    let none = c
        .search_deployments(&[
            label("k8s-cluster", CLUSTER),
            label("k8s-role", "control-plane"),
        ])
        .await
        .expect("two labels, one unmatched");
    assert!(none.is_empty(), "every rule must match: {none:?}");

    let other = c
        .search_deployments(&[label("k8s-cluster", "realmgr-contract-other")])
        .await
        .expect("search");
    assert_eq!(ids(other.iter().map(|d| &d.id)), ids([OTHER]));
    let d = &other[0];
    // The search's projection leaves `labels` out (src/cloudify/api.rs, DEPLOYMENT_FIELDS: the
    // manager matched them server-side, and reading them costs it a relationship per row); what
    // the refresh tracks changes by comes back instead.
    assert!(
        d.labels.is_empty(),
        "labels were not asked for: {:?}",
        d.labels
    );
    assert!(d.updated_at.is_some(), "updated_at is projected: {d:?}");
    let g = d.scaling_groups.get(GROUP).expect("scaling group workers");
    assert_eq!(
        ids(&g.members),
        ids(["worker_floating_ip", "worker_host", "worker_port"])
    );
    let p = &g.properties;
    assert_eq!(
        (
            p.min_instances,
            p.max_instances,
            p.current_instances,
            p.planned_instances
        ),
        (Some(0), Some(10), Some(0), Some(0))
    );
    assert_eq!(d.site_name, None);
}

/// `GET /deployments?id=…&id=…`: the ids present in the tenant, nothing for a missing id or a
/// deployment of another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_by_id_answer_the_present_ids_only() {
    let Some(m) = manager("deployments_by_id_answer_the_present_ids_only") else {
        return;
    };
    let c = m.client();
    let found = c
        .deployments_by_id(&ids([OTHER, "realmgr-contract-missing", TENANT_DEP, LIFE]))
        .await
        .expect("GET /deployments");
    assert_eq!(ids(found.iter().map(|d| &d.id)), ids([LIFE, OTHER]));
    let life = found.iter().find(|d| d.id == LIFE).expect("life");
    let p = &life.scaling_groups[GROUP].properties;
    assert_eq!((p.min_instances, p.max_instances), (Some(1), Some(8)));
}

/// `GET /nodes`: the VM nodes (Compute in the type hierarchy, their own host) are told from
/// the port, the floating IP and the software contained in the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_tell_vms_from_ports_and_contained_software() {
    let Some(m) = manager("nodes_tell_vms_from_ports_and_contained_software") else {
        return;
    };
    let c = m.client();
    let nodes = c.nodes(&ids([OTHER])).await.expect("GET /nodes");
    let compute: Vec<&str> = nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(ids(compute), ids(["control_plane_host", VM]));
    let by_id = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("node {id}: {nodes:?}"))
    };
    assert_eq!(by_id(VM).host_id.as_deref(), Some(VM));
    assert!(
        by_id(VM)
            .type_hierarchy
            .iter()
            .any(|t| t == "cloudify.nodes.Compute")
    );
    assert_eq!(
        by_id("kubelet").host_id.as_deref(),
        Some(VM),
        "contained in the VM"
    );
    assert_eq!(by_id("worker_port").host_id, None);
    assert!(nodes.iter().all(|n| n.deployment_id == OTHER));
}

/// `GET /node-instances` paged by `_size`/`_offset` until `metadata.pagination.total`: a proxy
/// makes the real manager answer pages of 2 to the client's pages of 1000, so the client really
/// walks the offsets, in the second tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_instances_are_paged_by_the_real_offsets() {
    let Some(m) = manager("node_instances_are_paged_by_the_real_offsets") else {
        return;
    };
    let direct = m.client_for(&m.url, &m.second_tenant, m.auth.clone());
    let nodes: Vec<String> = direct
        .nodes(&ids([TENANT_DEP]))
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(nodes.len(), 5, "worker-pool has 5 nodes: {nodes:?}");
    let whole = direct
        .node_instances(&ids([TENANT_DEP]), &nodes)
        .await
        .expect("one page");
    assert_eq!(
        whole.len(),
        5,
        "1 worker (VM, port, floating IP, kubelet) + control plane"
    );

    let proxy = HostileManager::start(&m.url).await;
    proxy.add(Rule::get("/api/v3.1/node-instances").set_param("_size", "2"));
    let paged_client = m.client_for(&proxy.url(), &m.second_tenant, m.auth.clone());
    let paged = paged_client
        .node_instances(&ids([TENANT_DEP]), &nodes)
        .await
        .expect("pages of 2");
    assert_eq!(
        ids(paged.iter().map(|i| &i.id)),
        ids(whole.iter().map(|i| &i.id))
    );
    let pages: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v3.1/node-instances")
        .collect();
    let offsets: Vec<Vec<String>> = pages.iter().map(|r| r.param("_offset")).collect();
    assert_eq!(offsets, [["0"], ["2"], ["4"]], "three real pages");
    for p in &pages {
        assert_eq!(p.status, 200);
        assert_eq!(
            p.headers.get("tenant").and_then(|v| v.to_str().ok()),
            Some(m.second_tenant.as_str())
        );
        assert_eq!(p.param("deployment_id"), [TENANT_DEP]);
        eprintln!("node-instances page: {}", p.query);
    }
    // Every field the provider reads.
    let vm = paged.iter().find(|i| i.node_id == VM).expect("the VM");
    assert_eq!(vm.host_id.as_deref(), Some(vm.id.as_str()));
    assert_eq!(vm.state, "started");
    assert_eq!(vm.scaling_groups.len(), 1);
    assert_eq!(vm.scaling_groups[0].name, GROUP);
    assert!(
        vm.scaling_groups[0].id.starts_with("workers_"),
        "{:?}",
        vm.scaling_groups
    );
    let host = vm.runtime_str("hostname").expect("hostname");
    assert_eq!(host, format!("{TENANT_DEP}-{}", vm.id).replace('_', "-"));
    assert!(vm.runtime_str("ip").is_some() && vm.runtime_str("external_id").is_some());
    let kubelet = paged
        .iter()
        .find(|i| i.node_id == "kubelet")
        .expect("kubelet");
    assert_eq!(kubelet.host_id.as_deref(), Some(vm.id.as_str()));
    assert!(
        kubelet.scaling_groups.is_empty(),
        "contained software names no group"
    );
}

/// The provider's scale-out and exact scale-in, the executions list it reads (filters, newest
/// first, limit) and the finished modifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_then_exact_scale_in() {
    let Some(m) = manager("scale_out_then_exact_scale_in") else {
        return;
    };
    let c = m.client();
    require_deployments(&c, &[LIFE]).await;
    let before = vms(&c, LIFE).await;
    let (cur, planned) = group_counts(&c, LIFE).await;
    assert_eq!(cur, planned);
    assert_eq!(before.len() as i64, cur);

    let e = c
        .start_scale(&scale(LIFE, 1, &[], false))
        .await
        .expect("POST /executions");
    assert!(!e.id.is_empty());
    assert_eq!(
        (e.workflow_id.as_str(), e.deployment_id.as_str()),
        ("scale", LIFE)
    );
    assert_eq!((e.scaled_group(), e.delta()), (Some(GROUP), 1));
    assert!(
        ACTIVE_STATUSES.contains(&e.status),
        "answered status {}",
        e.status
    );
    eprintln!(
        "POST /executions answered: status {} parameters {:?}",
        e.status, e.parameters
    );
    let done = wait_ended(&c, &e.id).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Terminated,
        "error: {:?}",
        done.error
    );
    assert!(done.ended_at.is_some() && done.created_at.is_some());

    let after = vms(&c, LIFE).await;
    assert_eq!(after.len(), before.len() + 1);
    let added: Vec<_> = after
        .iter()
        .filter(|v| !before.iter().any(|b| b.id == v.id))
        .collect();
    assert_eq!(added.len(), 1);
    let added = added[0].clone();
    assert_eq!(added.state, "started");
    assert!(added.runtime_str("hostname").is_some());
    assert_eq!(group_counts(&c, LIFE).await, (cur + 1, cur + 1));

    // The executions the refresh reads: newest first, by status, for every deployment.
    let newest = c
        .scale_executions(&ids([LIFE]), &[], Some(1))
        .await
        .expect("limit 1");
    assert_eq!(ids(newest.iter().map(|e| &e.id)), ids([&e.id]));
    let ended = c
        .scale_executions(
            &ids([LIFE]),
            &[ExecutionStatus::Terminated, ExecutionStatus::Failed],
            None,
        )
        .await
        .expect("by status");
    assert!(ended.iter().any(|x| x.id == e.id));
    assert!(
        ended
            .iter()
            .all(|x| x.workflow_id == "scale" && x.is_ended())
    );
    let waiting = c
        .scale_executions(&ids([LIFE]), &WAITING, None)
        .await
        .expect("waiting");
    assert!(waiting.is_empty(), "{waiting:?}");
    let everywhere = c
        .scale_executions(&[], &[ExecutionStatus::Terminated], None)
        .await
        .expect("all deployments");
    assert!(everywhere.iter().any(|x| x.id == e.id));

    // Exact scale-in: exactly the named VM (and its group instance) goes.
    let e2 = c
        .start_scale(&scale(LIFE, -1, &[added.id.as_str()], false))
        .await
        .expect("scale-in");
    assert_eq!(e2.include_instances(), vec![added.id.clone()]);
    assert_eq!(e2.delta(), -1);
    let done2 = wait_ended(&c, &e2.id).await;
    assert_eq!(
        done2.status,
        ExecutionStatus::Terminated,
        "error: {:?}",
        done2.error
    );
    let last = vms(&c, LIFE).await;
    assert_eq!(
        ids(last.iter().map(|v| &v.id)),
        ids(before.iter().map(|v| &v.id))
    );
    assert_eq!(group_counts(&c, LIFE).await, (cur, cur));
    let newest = c
        .scale_executions(&ids([LIFE]), &[], Some(2))
        .await
        .expect("limit 2");
    assert_eq!(
        newest.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [e2.id.as_str(), e.id.as_str()],
        "newest first"
    );

    let finished = c
        .deployment_modifications(&ids([LIFE]), "finished")
        .await
        .expect("GET /deployment-modifications");
    let of = |id: &str| finished.iter().find(|x| x.execution_id() == Some(id));
    assert_eq!(
        of(&e.id).and_then(|x| x.target_of(GROUP)),
        Some(cur + 1),
        "{finished:?}"
    );
    assert_eq!(of(&e2.id).and_then(|x| x.target_of(GROUP)), Some(cur));
}

/// A running scale's started modification (what tells the provider its delta is in
/// `planned_instances`), `queue: true` queueing the next one, its cancel, and the refusal a
/// second workflow meets without `queue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_scale_shows_its_modification_and_queues_the_next() {
    let Some(m) = manager("a_running_scale_shows_its_modification_and_queues_the_next") else {
        return;
    };
    let c = m.client();
    require_deployments(&c, &[QUEUE]).await;
    let (base, _) = group_counts(&c, QUEUE).await;
    let before = vms(&c, QUEUE).await;
    m.set_fault(QUEUE, json!({"delay_s": 8, "nodes": [VM]}))
        .await;
    let e1 = c
        .start_scale(&scale(QUEUE, 1, &[], false))
        .await
        .expect("first scale");
    // The modification appears once the workflow has validated its parameters.
    let deadline = Instant::now() + Duration::from_secs(90);
    let started = loop {
        let mods = c
            .deployment_modifications(&ids([QUEUE]), "started")
            .await
            .expect("GET /deployment-modifications");
        if let Some(x) = mods
            .into_iter()
            .find(|x| x.execution_id() == Some(e1.id.as_str()))
        {
            break x;
        }
        assert!(
            Instant::now() < deadline,
            "no started modification for {}",
            e1.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(started.target_of(GROUP), Some(base + 1));
    assert_eq!(started.deployment_id, QUEUE);
    let (cur, planned) = group_counts(&c, QUEUE).await;
    assert_eq!(
        (cur, planned),
        (base, base + 1),
        "planned moves when the modification starts"
    );

    // Without queue, a second workflow is refused; with it, it waits.
    let (status, body) = m
        .start_raw(
            QUEUE,
            json!({"scalable_entity_name": GROUP, "delta": 1}),
            false,
        )
        .await;
    let refusal: ErrorBody = serde_json::from_value(body.clone()).expect("error body");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        refusal.error_code.as_deref(),
        Some("existing_running_execution_error"),
        "{body}"
    );
    assert!(refusal.message.is_some_and(|t| !t.is_empty()));
    let e2 = c
        .start_scale(&scale(QUEUE, 1, &[], false))
        .await
        .expect("queued scale");
    assert_eq!(e2.status, ExecutionStatus::Queued);
    let waiting = c
        .scale_executions(&ids([QUEUE]), &WAITING, None)
        .await
        .expect("waiting");
    assert_eq!(ids(waiting.iter().map(|x| &x.id)), ids([&e2.id]));
    let active = c
        .scale_executions(&ids([QUEUE]), &ACTIVE_STATUSES, None)
        .await
        .expect("active");
    assert_eq!(ids(active.iter().map(|x| &x.id)), ids([&e1.id, &e2.id]));

    let cancelled = c
        .cancel_execution(&e2.id)
        .await
        .expect("POST /executions/{id} cancel");
    assert_eq!(cancelled.id, e2.id);
    eprintln!(
        "cancel of a queued execution answered status {}",
        cancelled.status
    );
    let e2_end = wait_ended(&c, &e2.id).await;
    assert_eq!(e2_end.status, ExecutionStatus::Cancelled);
    let e1_end = wait_ended(&c, &e1.id).await;
    m.set_fault(QUEUE, json!({})).await;
    assert_eq!(
        e1_end.status,
        ExecutionStatus::Terminated,
        "error: {:?}",
        e1_end.error
    );
    assert_eq!(
        group_counts(&c, QUEUE).await,
        (base + 1, base + 1),
        "the cancelled one added nothing"
    );
    let mods = c
        .deployment_modifications(&ids([QUEUE]), "started")
        .await
        .expect("mods");
    assert!(mods.is_empty(), "{mods:?}");
    back_to(&c, QUEUE, &before).await;
}

/// Scales a deployment back to the VMs it had, naming the others, so that the next run on a
/// kept manager finds it as tests/manager/fixtures.py made it.
async fn back_to(c: &CloudifyClient, deployment: &str, before: &[NodeInstance]) {
    let extra: Vec<String> = vms(c, deployment)
        .await
        .into_iter()
        .filter(|v| !before.iter().any(|b| b.id == v.id))
        .map(|v| v.id)
        .collect();
    if extra.is_empty() {
        return;
    }
    let names: Vec<&str> = extra.iter().map(String::as_str).collect();
    let delta = -i64::try_from(extra.len()).expect("a few VMs");
    let e = c
        .start_scale(&scale(deployment, delta, &names, false))
        .await
        .expect("scale back");
    assert_eq!(
        wait_ended(c, &e.id).await.status,
        ExecutionStatus::Terminated
    );
    let now = vms(c, deployment).await;
    assert_eq!(
        ids(now.iter().map(|v| &v.id)),
        ids(before.iter().map(|v| &v.id))
    );
}

/// A failed scale-out: the quota text in `error`, the rollback; without rollback (an operator's
/// scale: the provider never sends `rollback_if_failed`) the started modification left behind,
/// the next scale failing on it, and `abort_started` clearing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scale_outs_with_and_without_rollback() {
    let Some(m) = manager("failed_scale_outs_with_and_without_rollback") else {
        return;
    };
    let c = m.client();
    require_deployments(&c, &[FAIL]).await;
    let (base, _) = group_counts(&c, FAIL).await;
    let before = vms(&c, FAIL).await;
    let once = |n: &str| format!("{n}-{}", uuid::Uuid::new_v4());

    m.set_fault(
        FAIL,
        json!({"fail": "quota", "once": once("rollback"), "nodes": [VM]}),
    )
    .await;
    let e = c
        .start_scale(&scale(FAIL, 1, &[], false))
        .await
        .expect("scale");
    let failed = wait_ended(&c, &e.id).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let text = failed.error.clone().unwrap_or_default();
    assert!(text.contains(QUOTA), "error text: {text}");
    eprintln!(
        "failed scale error, last line: {:?}",
        text.trim().lines().last()
    );
    assert_eq!(group_counts(&c, FAIL).await, (base, base));
    assert_eq!(
        ids(vms(&c, FAIL).await.iter().map(|v| &v.id)),
        ids(before.iter().map(|v| &v.id))
    );
    let rolled = c
        .deployment_modifications(&ids([FAIL]), "rolledback")
        .await
        .expect("mods");
    assert!(
        rolled
            .iter()
            .any(|x| x.execution_id() == Some(e.id.as_str())),
        "{rolled:?}"
    );

    m.set_fault(
        FAIL,
        json!({"fail": "quota", "once": once("keep"), "nodes": [VM]}),
    )
    .await;
    let (status, body) = m
        .start_raw(
            FAIL,
            json!({"scalable_entity_name": GROUP, "delta": 1, "rollback_if_failed": false}),
            true,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let raw_id = body["id"].as_str().expect("execution id").to_owned();
    assert_eq!(
        wait_ended(&c, &raw_id).await.status,
        ExecutionStatus::Failed
    );
    let left = c
        .deployment_modifications(&ids([FAIL]), "started")
        .await
        .expect("mods");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].execution_id(), Some(raw_id.as_str()));
    assert_eq!(left[0].target_of(GROUP), Some(base + 1));
    assert_eq!(group_counts(&c, FAIL).await, (base, base + 1));
    let half: Vec<_> = vms(&c, FAIL)
        .await
        .into_iter()
        .filter(|v| !before.iter().any(|b| b.id == v.id))
        .collect();
    assert_eq!(half.len(), 1, "the half-created VM stays");
    assert_ne!(half[0].state, "started");
    eprintln!(
        "left behind without rollback: {} in state {}",
        half[0].id, half[0].state
    );

    m.set_fault(FAIL, json!({})).await;
    let blocked = c
        .start_scale(&scale(FAIL, 1, &[], false))
        .await
        .expect("accepted, fails inside");
    let blocked = wait_ended(&c, &blocked.id).await;
    assert_eq!(blocked.status, ExecutionStatus::Failed);
    assert!(
        blocked
            .error
            .as_deref()
            .unwrap_or("")
            .contains("existing started deployment modifications"),
        "{:?}",
        blocked.error
    );
    let ok = c
        .start_scale(&scale(FAIL, 1, &[], true))
        .await
        .expect("abort_started");
    assert_eq!(ok.parameters.get("abort_started"), Some(&json!(true)));
    let ok = wait_ended(&c, &ok.id).await;
    assert_eq!(ok.status, ExecutionStatus::Terminated, "{:?}", ok.error);
    assert!(
        c.deployment_modifications(&ids([FAIL]), "started")
            .await
            .expect("mods")
            .is_empty()
    );
    let now = vms(&c, FAIL).await;
    assert!(
        !now.iter().any(|v| v.id == half[0].id),
        "abort_started rolled the half-created VM back"
    );
    assert_eq!(now.len() as i64, base + 1);
    assert_eq!(group_counts(&c, FAIL).await, (base + 1, base + 1));
    back_to(&c, FAIL, &before).await;
}

/// Basic auth (the environment's), a token minted through REST, and the 401s the provider can
/// meet: a wrong token (then the client's back-off: no further call reaches the manager) and an
/// unknown user. Nobody's password is tried wrongly: Cloudify locks an account after 4 failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_token_auth_and_their_refusals() {
    let Some(m) = manager("basic_and_token_auth_and_their_refusals") else {
        return;
    };
    let (status, token) = m
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"description": "autoscaler-cloudify contract test", "expiration_date": "+1h"})),
        )
        .await;
    assert_eq!(status, 200, "POST /tokens: {token}");
    let value = token["value"].as_str().expect("token value").to_owned();
    let tc = m.client_for(&m.url, &m.tenant, Auth::Token(value));
    let found = tc
        .deployments_by_id(&ids([OTHER]))
        .await
        .expect("token auth");
    assert_eq!(found.len(), 1);
    if let Some(id) = token["id"].as_str() {
        let (s, _) = m.call(Method::DELETE, &format!("/tokens/{id}"), None).await;
        assert!(s == 200 || s == 204, "DELETE /tokens/{id}: {s}");
    }

    let proxy = HostileManager::start(&m.url).await;
    let bad = m.client_for(
        &proxy.url(),
        &m.tenant,
        Auth::Token("ctok-autoscaler-cloudify-bad".into()),
    );
    match bad.deployments_by_id(&ids([OTHER])).await {
        Err(e @ CloudifyError::Unauthorized { .. }) => {
            assert!(e.is_auth());
            assert!(e.to_string().contains("User unauthorized"), "{e}");
        }
        other => panic!("a wrong token: {other:?}"),
    }
    assert!(bad.auth_problem().is_some());
    match bad.deployments_by_id(&ids([OTHER])).await {
        Err(CloudifyError::AuthBackoff { .. }) => {}
        other => panic!("after a 401: {other:?}"),
    }
    assert_eq!(
        proxy.requests().len(),
        1,
        "the back-off keeps the client away from the manager"
    );

    let nobody = m.client_for(
        &m.url,
        &m.tenant,
        Auth::Basic {
            username: "autoscaler-cloudify-nobody".into(),
            password: "x".into(),
        },
    );
    let err = nobody
        .search_deployments(&[label("k8s-cluster", CLUSTER)])
        .await
        .expect_err("unknown user");
    assert!(err.is_auth(), "{err}");
}

/// The second tenant sees its own deployments only; a tenant that does not exist is a 403
/// `forbidden_error`, not an authentication failure (no back-off) and not a transient one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_isolate_and_a_wrong_tenant_is_forbidden() {
    let Some(m) = manager("tenants_isolate_and_a_wrong_tenant_is_forbidden") else {
        return;
    };
    let cb = m.client_for(&m.url, &m.second_tenant, m.auth.clone());
    let found = cb
        .search_deployments(&[label("k8s-cluster", CLUSTER)])
        .await
        .expect("second tenant");
    assert_eq!(ids(found.iter().map(|d| &d.id)), ids([TENANT_DEP]));
    assert!(
        m.client()
            .deployments_by_id(&ids([TENANT_DEP]))
            .await
            .expect("default")
            .is_empty()
    );

    let wrong = m.client_for(&m.url, "autoscaler_cloudify_no_such_tenant", m.auth.clone());
    match wrong
        .search_deployments(&[label("k8s-cluster", CLUSTER)])
        .await
    {
        Err(e @ CloudifyError::Api { status: 403, .. }) => {
            assert_eq!(e.code(), Some("forbidden_error"));
            assert!(e.to_string().contains("invalid tenant name"), "{e}");
            assert!(!e.is_auth() && !e.is_unavailable(), "{e}");
        }
        other => panic!("a wrong tenant: {other:?}"),
    }
    assert!(wrong.auth_problem().is_none());
}

/// The refusals of the REST service, each with Cloudify's JSON error body decoded by the
/// provider's model: 404 for an unknown execution or deployment, 400 for undeclared
/// parameters and an unknown workflow (requests the provider never sends, decoded here so the
/// model is proven on the real bodies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_cloudify_error_bodies() {
    let Some(m) = manager("refusals_carry_cloudify_error_bodies") else {
        return;
    };
    let c = m.client();
    for (what, result) in [
        (
            "execution",
            c.execution("autoscaler-cloudify-no-such-execution").await,
        ),
        (
            "cancel",
            c.cancel_execution("autoscaler-cloudify-no-such-execution")
                .await,
        ),
        (
            "scale",
            c.start_scale(&scale("realmgr-contract-missing", 1, &[], false))
                .await,
        ),
    ] {
        match result {
            Err(e @ CloudifyError::Api { status: 404, .. }) => {
                assert_eq!(e.code(), Some("not_found_error"), "{what}: {e}");
                assert!(e.to_string().contains("was not found"), "{what}: {e}");
                assert!(!e.is_unavailable() && !e.is_auth());
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    for (params, workflow, code) in [
        (
            json!({"scalable_entity_name": GROUP, "delta": 1, "bogus": 1}),
            "scale",
            "illegal_execution_parameters_error",
        ),
        (
            json!({"scalable_entity_name": GROUP, "delta": "abc"}),
            "scale",
            "illegal_execution_parameters_error",
        ),
        (
            json!({}),
            "autoscaler-cloudify-no-such-workflow",
            "nonexistent_workflow_error",
        ),
    ] {
        let (status, body) = m
            .call(
                Method::POST,
                "/executions",
                Some(json!({"deployment_id": OTHER, "workflow_id": workflow, "parameters": params, "queue": true})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let b: ErrorBody = serde_json::from_value(body.clone()).expect("error body");
        assert_eq!(b.error_code.as_deref(), Some(code), "{body}");
        assert!(b.message.is_some_and(|t| !t.is_empty()), "{body}");
    }
}
