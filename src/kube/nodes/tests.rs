//! The node controller's matching and safety rules, on hand-built snapshots and Nodes.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::plan::*;
use crate::config::{NodeControllerConfig, NodeGroupsConfig};
use crate::inventory::{Snapshot, SourceData, build_snapshot, testkit};

const YAML: &str = r#"
cloudify: [{url: "http://127.0.0.1:1", username: u, password_env: P}]
node_groups:
  auto_discovery: ["cloudify:label=k=v"]
  groups:
    "d/workers":
      joining_node: vm
      instance_type: m1.small
      region: eu-1
      template:
        labels: {pool: small}
        taints: [{key: dedicated, value: batch, effect: NoSchedule}]
"#;

fn config() -> NodeGroupsConfig {
    testkit::node_groups(YAML)
}

/// One deployment `d` (site `site-a`) with group `workers`; `vms` are (id, state, runtime).
fn snapshot(vms: &[(&str, &str, Value)], current: i64) -> Snapshot {
    let mut dep = testkit::deployment(
        "d",
        json!({"workers": {"members": ["vm"], "properties": {"min_instances": 0,
            "max_instances": 9, "current_instances": current, "planned_instances": current}}}),
    );
    dep.site_name = Some("site-a".into());
    let node = testkit::compute_node("d", "vm");
    let instances = vms
        .iter()
        .map(|(id, state, rt)| testkit::vm(id, "d", "workers", state, rt.clone()))
        .collect();
    let src = SourceData {
        source: 0,
        name: "main".into(),
        tenant: "t".into(),
        discovered: vec![dep],
        nodes: vec![node],
        instances,
        ..SourceData::default()
    };
    build_snapshot(Instant::now(), SystemTime::now(), &[src], &config(), false)
}

fn vm(id: &str) -> (&str, &'static str, Value) {
    (
        id,
        "started",
        json!({"hostname": format!("host-{id}"), "ip": "10.1.0.5", "public_ip": "203.0.113.5"}),
    )
}

/// A Node as kubelet `--cloud-provider=external` registers it: tainted, no provider id.
fn joining(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7",
                     "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}]},
        "status": {"addresses": [{"type": "Hostname", "address": name}]}
    }))
    .expect("node")
}

/// An initialized Node with `ready` and a provider id.
fn joined(name: &str, pid: &str, ready: Option<&str>, taints: Value) -> Node {
    let conditions = match ready {
        Some(s) => json!([{"type": "Ready", "status": s}]),
        None => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "9"},
        "spec": {"providerID": pid, "taints": taints},
        "status": {"conditions": conditions}
    }))
    .expect("node")
}

fn view(s: &Snapshot) -> InventoryView<'_> {
    InventoryView::new(s, &config(), &["main".to_owned()])
}

fn settings() -> NodeControllerConfig {
    NodeControllerConfig {
        max_deletions_per_refresh: 2,
        min_node_age: Duration::from_secs(60),
        ..NodeControllerConfig::default()
    }
}

fn old(_: &Node) -> Option<Duration> {
    Some(Duration::from_secs(3600))
}

fn patch(d: InitDecision) -> InitPatch {
    match d {
        InitDecision::Initialize(p) => p,
        other => panic!("expected Initialize, got {other:?}"),
    }
}

#[test]
fn joining_node_is_matched_by_name_and_gets_id_addresses_labels_and_taints() {
    let s = snapshot(&[vm("vm_1"), vm("vm_2")], 2);
    let p = patch(plan_init(&joining("host-vm_1"), &view(&s)));
    assert_eq!(p.group, "d/workers");
    assert_eq!(p.provider_id.as_deref(), Some("cloudify://t/d/vm_1"));
    let addrs: Vec<(String, String)> = p
        .addresses
        .expect("addresses")
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            ("InternalIP".into(), "10.1.0.5".into()),
            ("ExternalIP".into(), "203.0.113.5".into()),
            ("Hostname".into(), "host-vm_1".into())
        ]
    );
    assert_eq!(
        p.labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m1.small")
    );
    assert_eq!(
        p.labels
            .get("topology.kubernetes.io/region")
            .map(String::as_str),
        Some("eu-1")
    );
    // No zone configured: the deployment's Cloudify site.
    assert_eq!(
        p.labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("site-a")
    );
    assert_eq!(p.labels.get("pool").map(String::as_str), Some("small"));
    assert_eq!(
        p.labels
            .get("cloudify.co/scaling-group")
            .map(String::as_str),
        Some("workers")
    );
    // The uninitialized taint is gone, the template's taint is there.
    let keys: Vec<&str> = p.taints.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["dedicated"]);
}

#[test]
fn labels_the_operator_set_are_kept_but_topology_labels_follow_cloudify() {
    let s = snapshot(&[vm("vm_1")], 1);
    let mut n = joining("host-vm_1");
    let labels = n.metadata.labels.get_or_insert_default();
    labels.insert("pool".into(), "from-kubelet".into());
    labels.insert("topology.kubernetes.io/region".into(), "wrong".into());
    labels.insert("node.kubernetes.io/instance-type".into(), "m1.small".into());
    let p = patch(plan_init(&n, &view(&s)));
    assert!(!p.labels.contains_key("pool"));
    assert!(!p.labels.contains_key("node.kubernetes.io/instance-type"));
    assert_eq!(
        p.labels
            .get("topology.kubernetes.io/region")
            .map(String::as_str),
        Some("eu-1")
    );
}

#[test]
fn a_node_with_a_provider_id_keeps_it_and_is_matched_by_it() {
    let s = snapshot(&[vm("vm_1")], 1);
    let mut n = joining("unrelated-name");
    n.spec.get_or_insert_default().provider_id = Some("cloudify://t/d/vm_1".into());
    let p = patch(plan_init(&n, &view(&s)));
    assert_eq!(p.vm_instance, "vm_1");
    assert_eq!(p.provider_id, None, "a set providerID is never rewritten");
}

#[test]
fn unmatched_node_keeps_the_taint_and_says_why() {
    let s = snapshot(&[vm("vm_1")], 1);
    match plan_init(&joining("stranger"), &view(&s)) {
        InitDecision::Unmatched(why) => assert!(why.contains("\"stranger\""), "{why}"),
        other => panic!("expected Unmatched, got {other:?}"),
    }
}

#[test]
fn untainted_nodes_are_not_initialized() {
    let s = snapshot(&[vm("vm_1")], 1);
    let n = joined("host-vm_1", "cloudify://t/d/vm_1", Some("True"), json!([]));
    assert_eq!(plan_init(&n, &view(&s)), InitDecision::NotTainted);
}

#[test]
fn an_instance_without_its_provider_id_yet_is_not_written_as_a_placeholder() {
    let yaml = YAML.replace(
        "instance_type: m1.small",
        "instance_type: m1.small\n      provider_id_template: \"openstack:///{runtime.external_id}\"",
    );
    let cfg = testkit::node_groups(&yaml);
    let dep = testkit::deployment(
        "d",
        json!({"workers": {"members": ["vm"],
        "properties": {"current_instances": 1, "planned_instances": 1}}}),
    );
    let node = testkit::compute_node("d", "vm");
    let inst = testkit::vm(
        "vm_1",
        "d",
        "workers",
        "configured",
        json!({"hostname": "h1"}),
    );
    let src = SourceData {
        tenant: "t".into(),
        name: "main".into(),
        discovered: vec![dep],
        nodes: vec![node],
        instances: vec![inst],
        ..SourceData::default()
    };
    let s = build_snapshot(Instant::now(), SystemTime::now(), &[src], &cfg, false);
    let v = InventoryView::new(&s, &cfg, &["main".to_owned()]);
    assert!(matches!(
        plan_init(&joining("h1"), &v),
        InitDecision::Unmatched(_)
    ));
}

#[test]
fn kubelet_node_ip_must_be_among_the_reported_addresses() {
    let s = snapshot(&[vm("vm_1")], 1);
    let with_node_ip = |ip: &str| {
        let mut n = joining("host-vm_1");
        n.metadata
            .annotations
            .get_or_insert_default()
            .insert(PROVIDED_NODE_IP_ANNOTATION.into(), ip.into());
        plan_init(&n, &view(&s))
    };
    assert!(matches!(
        with_node_ip("192.168.9.9"),
        InitDecision::Unmatched(_)
    ));
    assert!(matches!(
        with_node_ip("10.1.0.5"),
        InitDecision::Initialize(_)
    ));
}

fn gone(name: &str, ready: Option<&str>) -> Node {
    joined(name, &format!("cloudify://t/d/{name}"), ready, json!([]))
}

/// Two completed refreshes in a row with the same Nodes: what the second one deletes.
fn deleted_on_second_pass(
    nodes: &[&Node],
    v: &InventoryView<'_>,
    previous: Option<usize>,
    cfg: &NodeControllerConfig,
) -> Vec<String> {
    let mut t = AbsenceTracker::default();
    plan_lifecycle(nodes, v, previous, cfg, &old, &mut t);
    let p = plan_lifecycle(nodes, v, previous, cfg, &old, &mut t);
    deletions(&p).into_iter().map(str::to_owned).collect()
}

fn deletions(p: &LifecyclePlan) -> Vec<&str> {
    p.actions
        .iter()
        .filter(|a| matches!(a.action, LifecycleAction::Delete { .. }))
        .map(|a| a.node.as_str())
        .collect()
}

#[test]
fn a_not_ready_node_is_deleted_only_after_two_complete_snapshots_without_its_instance() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let n = gone("vm_7", Some("Unknown"));
    let mut t = AbsenceTracker::default();
    let first = plan_lifecycle(&[&n], &v, Some(1), &settings(), &old, &mut t);
    assert!(deletions(&first).is_empty());
    assert_eq!(first.refused.len(), 1);
    let second = plan_lifecycle(&[&n], &v, Some(1), &settings(), &old, &mut t);
    assert_eq!(deletions(&second), ["vm_7"]);
    assert_eq!(
        second.actions[0].uid, "uid-vm_7",
        "the UID goes into the delete precondition"
    );
}

#[test]
fn ready_nodes_and_nodes_whose_instance_exists_are_never_deleted() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let ready = gone("vm_7", Some("True"));
    let present = joined("x", "cloudify://t/d/vm_1", Some("False"), json!([]));
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        let p = plan_lifecycle(&[&ready, &present], &v, Some(1), &settings(), &old, &mut t);
        assert!(p.actions.is_empty(), "{p:?}");
    }
}

#[test]
fn a_missing_ready_condition_counts_as_not_ready() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let n = gone("vm_7", None);
    assert_eq!(
        deleted_on_second_pass(&[&n], &v, Some(1), &settings()),
        ["vm_7"]
    );
}

#[test]
fn nodes_outside_the_managed_id_space_are_never_deleted() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let other_cloud = joined("a", "aws:///eu-1a/i-1", Some("False"), json!([]));
    let other_deployment = joined("b", "cloudify://t/other/vm_1", Some("False"), json!([]));
    let no_id = joined("c", "", Some("False"), json!([]));
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        let p = plan_lifecycle(
            &[&other_cloud, &other_deployment, &no_id],
            &v,
            Some(1),
            &settings(),
            &old,
            &mut t,
        );
        assert!(p.actions.is_empty() && p.refused.is_empty(), "{p:?}");
    }
    // A configured prefix brings other ids into the managed space.
    let cfg = NodeControllerConfig {
        managed_provider_id_prefixes: vec!["aws:///eu-1a/".into()],
        ..settings()
    };
    assert_eq!(
        deleted_on_second_pass(&[&other_cloud], &v, Some(1), &cfg),
        ["a"]
    );
}

#[test]
fn becoming_ready_or_reappearing_resets_the_count() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let mut t = AbsenceTracker::default();
    plan_lifecycle(
        &[&gone("vm_7", Some("False"))],
        &v,
        Some(1),
        &settings(),
        &old,
        &mut t,
    );
    plan_lifecycle(
        &[&gone("vm_7", Some("True"))],
        &v,
        Some(1),
        &settings(),
        &old,
        &mut t,
    );
    let p = plan_lifecycle(
        &[&gone("vm_7", Some("False"))],
        &v,
        Some(1),
        &settings(),
        &old,
        &mut t,
    );
    assert!(
        deletions(&p).is_empty(),
        "one absence after a Ready pass is not two in a row"
    );
}

#[test]
fn the_cap_holds_back_deletions_beyond_it_and_says_which() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let nodes: Vec<Node> = (1..=5)
        .map(|i| gone(&format!("vm_g{i}"), Some("False")))
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let mut t = AbsenceTracker::default();
    plan_lifecycle(&refs, &v, Some(1), &settings(), &old, &mut t);
    let p = plan_lifecycle(&refs, &v, Some(1), &settings(), &old, &mut t);
    assert_eq!(deletions(&p), ["vm_g1", "vm_g2"]);
    assert_eq!(p.held_back, ["vm_g3", "vm_g4", "vm_g5"]);
}

#[test]
fn young_nodes_are_not_deleted() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let n = gone("vm_7", Some("False"));
    let young = |_: &Node| Some(Duration::from_secs(5));
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        let p = plan_lifecycle(&[&n], &v, Some(1), &settings(), &young, &mut t);
        assert!(deletions(&p).is_empty());
    }
}

#[test]
fn a_group_listing_fewer_instances_than_cloudify_counts_proves_nothing() {
    // Cloudify says the group has 2 instances but lists 1: a short read, not a scale-in.
    let s = snapshot(&[vm("vm_1")], 2);
    let v = view(&s);
    let n = gone("vm_7", Some("False"));
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        let p = plan_lifecycle(&[&n], &v, Some(1), &settings(), &old, &mut t);
        assert!(deletions(&p).is_empty(), "{p:?}");
    }
}

#[test]
fn no_instances_at_all_after_some_deletes_nothing() {
    let s = snapshot(&[], 0);
    let v = view(&s);
    let n = gone("vm_7", Some("False"));
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        let p = plan_lifecycle(&[&n], &v, Some(4), &settings(), &old, &mut t);
        assert!(deletions(&p).is_empty(), "{p:?}");
    }
    // A group legitimately scaled to zero (nothing listed before either) does delete.
    assert_eq!(
        deleted_on_second_pass(&[&n], &v, Some(0), &settings()),
        ["vm_7"]
    );
}

#[test]
fn an_instance_cloudify_reports_deleted_counts_as_gone() {
    let s = snapshot(&[("vm_7", "deleted", json!({}))], 1);
    let v = view(&s);
    let n = gone("vm_7", Some("False"));
    assert_eq!(
        deleted_on_second_pass(&[&n], &v, Some(1), &settings()),
        ["vm_7"]
    );
}

#[test]
fn a_stopped_vm_taints_its_node_until_it_is_ready_again() {
    let s = snapshot(&[("vm_1", "stopped", json!({"hostname": "h"}))], 1);
    let v = view(&s);
    let mut t = AbsenceTracker::default();
    let down = joined("h", "cloudify://t/d/vm_1", Some("False"), json!([]));
    let p = plan_lifecycle(&[&down], &v, Some(1), &settings(), &old, &mut t);
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].action, LifecycleAction::AddShutdownTaint);
    let tainted = json!([{"key": SHUTDOWN_TAINT, "effect": "NoSchedule"}]);
    let still_down = joined("h", "cloudify://t/d/vm_1", Some("False"), tainted.clone());
    let p = plan_lifecycle(&[&still_down], &v, Some(1), &settings(), &old, &mut t);
    assert!(p.actions.is_empty(), "stopped is never deleted: {p:?}");
    let back = joined("h", "cloudify://t/d/vm_1", Some("True"), tainted);
    let p = plan_lifecycle(&[&back], &v, Some(1), &settings(), &old, &mut t);
    assert_eq!(p.actions[0].action, LifecycleAction::RemoveShutdownTaint);
}

#[test]
fn uninitialized_nodes_are_left_to_initialization() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let mut n = gone("vm_7", Some("False"));
    n.spec.get_or_insert_default().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
        key: UNINITIALIZED_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }]);
    let mut t = AbsenceTracker::default();
    for _ in 0..3 {
        assert!(
            plan_lifecycle(&[&n], &v, Some(1), &settings(), &old, &mut t)
                .actions
                .is_empty()
        );
    }
}

// The steps of `plan_lifecycle`, one by one.

fn observed(node: &Node, v: &InventoryView<'_>) -> String {
    match observe(node, v, &settings()) {
        Observation::Nothing => "nothing".into(),
        Observation::Taint(a) => format!("{a:?}"),
        Observation::Gone { pid, owners } => {
            let ids: Vec<&str> = owners.iter().map(|(g, _)| g.id.as_str()).collect();
            format!("gone {pid} of {ids:?}")
        }
    }
}

#[test]
fn observe_sorts_nodes_into_nothing_taint_changes_and_gone() {
    let s = snapshot(&[vm("vm_1"), ("vm_2", "stopped", json!({}))], 2);
    let v = view(&s);
    let shutdown = json!([{"key": SHUTDOWN_TAINT, "effect": "NoSchedule"}]);
    let pid = |id: &str| format!("cloudify://t/d/{id}");
    let cases = [
        (
            joined("a", &pid("vm_1"), Some("True"), json!([])),
            "nothing",
        ),
        (
            joined("b", &pid("vm_1"), Some("True"), shutdown.clone()),
            "RemoveShutdownTaint",
        ),
        (
            joined("c", &pid("vm_1"), Some("False"), json!([])),
            "nothing",
        ),
        (
            joined("d", &pid("vm_2"), Some("False"), json!([])),
            "AddShutdownTaint",
        ),
        (
            joined("e", &pid("vm_2"), Some("False"), shutdown),
            "nothing",
        ),
        (
            joined("f", &pid("vm_9"), Some("False"), json!([])),
            "gone cloudify://t/d/vm_9 of [\"d/workers\"]",
        ),
        (
            joined("g", "aws:///i-1", Some("False"), json!([])),
            "nothing",
        ),
        (joined("h", "", Some("False"), json!([])), "nothing"),
        (joining("host-vm_1"), "nothing"),
    ];
    for (node, want) in &cases {
        assert_eq!(observed(node, &v), *want, "{}", node_name(node));
    }
}

#[test]
fn a_managed_prefix_makes_a_node_of_no_group_deletable() {
    let s = snapshot(&[vm("vm_1")], 1);
    let v = view(&s);
    let cfg = NodeControllerConfig {
        managed_provider_id_prefixes: vec!["aws:///".into()],
        ..settings()
    };
    let n = joined("g", "aws:///i-1", Some("False"), json!([]));
    assert!(matches!(
        observe(&n, &v, &cfg),
        Observation::Gone { owners, .. } if owners.is_empty()
    ));
    assert_eq!(
        deletion_reason("aws:///i-1", &[], 2),
        "its instance (aws:///i-1) of a managed provider-id prefix is gone from Cloudify \
         (2 consecutive complete snapshots) and the Node is not Ready"
    );
}

#[test]
fn refusals_come_in_order_streak_vanished_listing_age() {
    let s = snapshot(&[vm("vm_1")], 3); // lists 1 of 3: inconsistent
    let v = view(&s);
    let owners = v.owners("cloudify://t/d/vm_9");
    let cfg = settings();
    let hour = Some(Duration::from_secs(3600));
    let why = |streak, vanished, owners: &[_], age| refusal(streak, vanished, owners, age, &cfg);
    let first = why(1, true, &owners, None).expect("kept");
    assert!(first.starts_with("instance missing from 1 of 2"), "{first}");
    let second = why(2, true, &owners, None).expect("kept");
    assert!(
        second.starts_with("Cloudify lists no instances"),
        "{second}"
    );
    let third = why(2, false, &owners, None).expect("kept");
    assert!(
        third.contains("lists 1 instances while Cloudify counts current=3"),
        "{third}"
    );
    let fourth = why(2, false, &[], Some(Duration::from_secs(5))).expect("kept");
    assert!(
        fourth.contains("younger than node_controller.min_node_age"),
        "{fourth}"
    );
    assert!(why(2, false, &[], None).is_some(), "unknown age: kept");
    assert_eq!(why(2, false, &[], hour), None, "old enough: deletable");
}

#[test]
fn the_cap_takes_nodes_by_name_and_holds_back_the_rest() {
    let action = |n: &str| PlannedAction {
        node: n.into(),
        uid: format!("uid-{n}"),
        action: LifecycleAction::Delete { reason: "x".into() },
    };
    let mut plan = LifecyclePlan::default();
    cap_deletions(vec![action("c"), action("a"), action("b")], 2, &mut plan);
    let taken: Vec<&str> = plan.actions.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(taken, ["a", "b"]);
    assert_eq!(plan.held_back, ["c"]);
}

/// Group instance `gi` of `d/workers` holding `vm_1` (node `vm`, joins) and `st_1` (node
/// `storage`): a group instance of two VMs (issue 20).
fn two_vm_snapshot() -> Snapshot {
    let dep = testkit::deployment(
        "d",
        json!({"workers": {"members": ["vm", "storage"], "properties": {"current_instances": 1}}}),
    );
    let (nodes, instances) = testkit::two_vm_group_instance("d", "workers", "gi", vm("vm_1").2);
    let src = SourceData {
        tenant: "t".into(),
        discovered: vec![dep],
        nodes,
        instances,
        ..SourceData::default()
    };
    build_snapshot(Instant::now(), SystemTime::now(), &[src], &config(), false)
}

#[test]
fn a_node_of_an_infrastructure_vm_is_neither_initialized_nor_deleted() {
    let s = two_vm_snapshot();
    let v = view(&s);
    let mut storage_node = joining("st-1");
    storage_node.spec.get_or_insert_default().provider_id = Some("cloudify://t/d/st_1".into());
    match plan_init(&storage_node, &v) {
        InitDecision::Unmatched(why) => {
            assert!(
                why.contains("infrastructure VM of group instance gi"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        plan_init(&joining("host-vm_1"), &v),
        InitDecision::Initialize(_)
    ));
    let not_ready = joined("st-1", "cloudify://t/d/st_1", Some("False"), json!([]));
    assert!(
        deleted_on_second_pass(&[&not_ready], &v, Some(1), &settings()).is_empty(),
        "its VM is there"
    );
}
