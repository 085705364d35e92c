//! The service controller's decisions, without an API server or a manager.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, Service, ServicePort, ServiceSpec, ServiceStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Map, Value, json};

use super::ingress::{self, Address};
use super::plan::{self, DeploymentState, FailureKind, Observed, Run, RunStatus, Step};
use super::spec::{self, Backend, BackendSet, Ownership};
use crate::config::{BackendAddressType, LbBlueprint, LoadBalancersConfig};

const CLASS: &str = "autoscaler-cloudify.io/cloudify";

fn settings() -> LoadBalancersConfig {
    LoadBalancersConfig {
        enabled: true,
        blueprints: vec![
            blueprint(0, "lb-main", &["TCP"]),
            blueprint(1, "lb-edge", &["TCP", "UDP"]),
        ],
        ..LoadBalancersConfig::default()
    }
}

fn blueprint(source: usize, id: &str, protocols: &[&str]) -> LbBlueprint {
    LbBlueprint {
        source,
        blueprint_id: id.into(),
        protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
        inputs: BTreeMap::from([("flavor".to_owned(), json!("m1.small"))]),
    }
}

fn managers() -> Vec<String> {
    vec!["main".into(), "edge".into()]
}

fn port(name: &str, protocol: &str, port: i32, node_port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port,
        node_port: Some(node_port),
        ..ServicePort::default()
    }
}

fn service(class: Option<&str>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("0b5e2a0c-1111-2222-3333-444455556666".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: class.map(str::to_owned),
            ports: Some(vec![port("http", "TCP", 80, 30080)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn with_finalizer(mut svc: Service) -> Service {
    svc.metadata.finalizers = Some(vec![spec::FINALIZER.into()]);
    svc
}

fn node(name: &str, ip: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

fn backends(names: &[(&str, &str)]) -> BackendSet {
    BackendSet {
        backends: names
            .iter()
            .map(|(n, a)| Backend {
                node: (*n).into(),
                address: (*a).into(),
            })
            .collect(),
        without_address: Vec::new(),
    }
}

#[test]
fn only_our_class_is_ours_and_class_less_only_when_configured() {
    let s = settings();
    assert_eq!(spec::ownership(&service(Some(CLASS)), &s), Ownership::Ours);
    assert_eq!(
        spec::ownership(&service(Some("metallb.io/metallb")), &s),
        Ownership::NotOurs
    );
    assert_eq!(spec::ownership(&service(None), &s), Ownership::NotOurs);
    let class_less = LoadBalancersConfig {
        class_less: true,
        ..settings()
    };
    assert_eq!(
        spec::ownership(&service(None), &class_less),
        Ownership::Ours
    );
    assert_eq!(
        spec::ownership(&service(Some("metallb.io/metallb")), &class_less),
        Ownership::NotOurs,
        "a default implementation ignores classed Services"
    );
    let mut cluster_ip = service(Some(CLASS));
    if let Some(spec) = cluster_ip.spec.as_mut() {
        spec.type_ = Some("ClusterIP".into());
    }
    assert_eq!(spec::ownership(&cluster_ip, &s), Ownership::NotOurs);
}

#[test]
fn our_finalizer_means_cleanup_on_deletion_and_type_change_but_not_on_a_config_change() {
    let s = settings();
    let mut deleting = with_finalizer(service(Some(CLASS)));
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    assert_eq!(
        spec::ownership(&deleting, &s),
        Ownership::CleanUp {
            clear_status: false
        }
    );
    let mut retyped = with_finalizer(service(None));
    if let Some(spec) = retyped.spec.as_mut() {
        // The API server wipes loadBalancerClass on a change to another type.
        spec.type_ = Some("NodePort".into());
    }
    assert_eq!(
        spec::ownership(&retyped, &s),
        Ownership::CleanUp { clear_status: true }
    );
    // Served class-less before, the configuration no longer serves it: keep, do not delete.
    assert_eq!(
        spec::ownership(&with_finalizer(service(None)), &s),
        Ownership::Disowned
    );
    // Deleted without our finalizer: nothing left to do.
    let mut gone = service(Some(CLASS));
    gone.metadata.deletion_timestamp = Some(Time(Default::default()));
    assert_eq!(spec::ownership(&gone, &s), Ownership::NotOurs);
}

#[test]
fn backends_follow_the_upstream_node_predicates() {
    let mut excluded = node("excluded", "10.0.0.2");
    excluded.metadata.labels = Some(BTreeMap::from([(
        spec::EXCLUDE_LABEL.to_owned(),
        String::new(),
    )]));
    let mut leaving = node("leaving", "10.0.0.3");
    if let Some(s) = leaving.spec.as_mut() {
        s.taints = Some(vec![Taint {
            key: spec::CA_DELETION_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }]);
    }
    let mut deleting = node("deleting", "10.0.0.4");
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    let mut not_ready = node("not-ready", "10.0.0.5");
    if let Some(s) = not_ready.status.as_mut() {
        s.conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            ..NodeCondition::default()
        }]);
    }
    let mut no_ip = node("no-ip", "");
    if let Some(s) = no_ip.status.as_mut() {
        s.addresses = None;
    }
    let nodes = [
        node("b", "10.0.0.11"),
        node("a", "10.0.0.10"),
        excluded,
        leaving,
        deleting,
        not_ready,
        no_ip,
    ];
    let set = spec::backends(&nodes, BackendAddressType::InternalIp, false);
    let names: Vec<&str> = set.backends.iter().map(|b| b.node.as_str()).collect();
    assert_eq!(names, ["a", "b", "not-ready"], "sorted; Ready not required");
    assert_eq!(set.backends[0].address, "10.0.0.10");
    assert_eq!(set.without_address, ["no-ip"]);
    let set = spec::backends(&nodes, BackendAddressType::InternalIp, true);
    assert_eq!(set.backends.len(), 2, "exclude_not_ready drops not-ready");
    let set = spec::backends(&nodes, BackendAddressType::ExternalIp, false);
    assert!(set.backends.is_empty(), "no ExternalIP on these Nodes");
}

#[test]
fn inputs_carry_ports_backends_and_the_service_and_changes_show_per_input() {
    let s = settings();
    let svc = service(Some(CLASS));
    let d = spec::desired(
        &svc,
        &backends(&[("a", "10.0.0.10")]),
        &s.blueprints[0],
        "prod",
    );
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!((d.usable_ports, d.backend_count), (1, 1));
    let want = json!({
        "service": {"namespace": "shop", "name": "web",
                    "uid": "0b5e2a0c-1111-2222-3333-444455556666", "cluster": "prod"},
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "node_port": 30080}],
        "backends": [{"node": "a", "address": "10.0.0.10"}],
        "health_check": {"type": "tcp", "port": 0, "path": ""},
        "source_ranges": [],
        "load_balancer_ip": "",
        "session_affinity": "None",
        "dns_names": [],
        "flavor": "m1.small",
    });
    assert_eq!(Value::Object(d.inputs.clone()), want);

    // A node more: only `backends` differs, so one update carries it.
    let more = spec::desired(
        &svc,
        &backends(&[("a", "10.0.0.10"), ("b", "10.0.0.11")]),
        &s.blueprints[0],
        "prod",
    );
    assert_eq!(spec::changed_inputs(&more.inputs, &d.inputs), ["backends"]);
    // Inputs the blueprint defaults (absent from ours) are not compared.
    let mut current = d.inputs.clone();
    current.insert("image".into(), json!("ubuntu"));
    assert!(spec::changed_inputs(&d.inputs, &current).is_empty());
}

#[test]
fn local_traffic_policy_checks_the_health_check_node_port() {
    let s = settings();
    let mut svc = service(Some(CLASS));
    if let Some(spec) = svc.spec.as_mut() {
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32001);
        spec.load_balancer_source_ranges = Some(vec!["203.0.113.0/24".into()]);
        spec.load_balancer_ip = Some("198.51.100.7".into());
        spec.session_affinity = Some("ClientIP".into());
    }
    svc.metadata.annotations = Some(BTreeMap::from([(
        spec::EXTERNAL_DNS_HOSTNAME.to_owned(),
        "shop.example.com, www.shop.example.com".to_owned(),
    )]));
    let d = spec::desired(
        &svc,
        &backends(&[("a", "10.0.0.10")]),
        &s.blueprints[0],
        "c",
    );
    assert_eq!(
        d.inputs["health_check"],
        json!({"type": "http", "port": 32001, "path": "/healthz"})
    );
    assert_eq!(d.inputs["source_ranges"], json!(["203.0.113.0/24"]));
    assert_eq!(d.inputs["load_balancer_ip"], json!("198.51.100.7"));
    assert_eq!(d.inputs["session_affinity"], json!("ClientIP"));
    assert_eq!(
        d.inputs["dns_names"],
        json!(["shop.example.com", "www.shop.example.com"])
    );
}

#[test]
fn unsupported_ports_and_ranges_are_left_out_with_a_warning() {
    let s = settings();
    let mut svc = service(Some(CLASS));
    if let Some(spec) = svc.spec.as_mut() {
        spec.ports = Some(vec![
            port("dns", "UDP", 53, 30053),
            port("http", "TCP", 80, 0),
            port("https", "TCP", 443, 30443),
        ]);
    }
    svc.metadata.annotations = Some(BTreeMap::from([(
        spec::SOURCE_RANGES_ANNOTATION.to_owned(),
        "10.0.0.0/8,everyone".to_owned(),
    )]));
    let d = spec::desired(&svc, &BackendSet::default(), &s.blueprints[0], "c");
    assert_eq!(d.usable_ports, 1);
    assert_eq!(d.inputs["ports"][0]["name"], "https");
    assert_eq!(
        d.inputs["source_ranges"],
        json!(["10.0.0.0/8"]),
        "the annotation"
    );
    let texts: Vec<String> = d
        .warnings
        .iter()
        .map(|w| format!("{}: {}", w.reason, w.text))
        .collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(
        texts.iter().any(|t| t.contains(
            "UnsupportedLoadBalancerPort: port dns (53/UDP): blueprint lb-main implements TCP only"
        )),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("port http (80/TCP) has no nodePort")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("UnAvailableLoadBalancer: There are no available nodes")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\"everyone\" is not a CIDR")),
        "{texts:#?}"
    );
    // The blueprint of the other manager implements UDP.
    let d = spec::desired(&svc, &BackendSet::default(), &s.blueprints[1], "c");
    assert_eq!(d.usable_ports, 2);
}

#[test]
fn placement_from_the_annotation_the_default_or_the_recorded_deployment() {
    let s = settings();
    let mut svc = service(Some(CLASS));
    let p = spec::placement(&svc, &s, &managers()).expect("default");
    assert_eq!(p.blueprint, 0);
    assert_eq!(
        p.deployment_id,
        "k8s-lb-0b5e2a0c-1111-2222-3333-444455556666"
    );
    assert_eq!(
        p.annotation,
        "main/k8s-lb-0b5e2a0c-1111-2222-3333-444455556666"
    );
    svc.metadata.annotations = Some(BTreeMap::from([(
        spec::MANAGER_ANNOTATION.to_owned(),
        "edge".to_owned(),
    )]));
    assert_eq!(
        spec::placement(&svc, &s, &managers())
            .expect("edge")
            .blueprint,
        1
    );
    svc.metadata.annotations = Some(BTreeMap::from([(
        spec::MANAGER_ANNOTATION.to_owned(),
        "nowhere".to_owned(),
    )]));
    let e = spec::placement(&svc, &s, &managers()).expect_err("unknown");
    assert!(
        e.0.contains(
            "names no cloudify entry with an LB blueprint (configured: [\"main\", \"edge\"])"
        ),
        "{}",
        e.0
    );
    // Once recorded, the recorded place wins over the annotation and the prefix.
    let mut annotations = BTreeMap::from([
        (spec::MANAGER_ANNOTATION.to_owned(), "main".to_owned()),
        (
            spec::DEPLOYMENT_ANNOTATION.to_owned(),
            "edge/old-prefix-x".to_owned(),
        ),
    ]);
    svc.metadata.annotations = Some(annotations.clone());
    let p = spec::placement(&svc, &s, &managers()).expect("recorded");
    assert_eq!((p.blueprint, p.deployment_id.as_str()), (1, "old-prefix-x"));
    annotations.insert(spec::DEPLOYMENT_ANNOTATION.to_owned(), "gone/x".to_owned());
    svc.metadata.annotations = Some(annotations);
    let e = spec::placement(&svc, &s, &managers()).expect_err("manager gone");
    assert!(
        e.0.contains("cloudify entry \"gone\", which has no load_balancers.blueprints entry"),
        "{}",
        e.0
    );
}

#[test]
fn labels_name_the_cluster_and_the_service_without_the_discovery_key() {
    let labels = spec::deployment_labels(&service(Some(CLASS)), "prod");
    assert_eq!(labels["k8s-lb-cluster"], "prod");
    assert_eq!(labels["k8s-lb-service"], "web");
    assert_eq!(labels["k8s-lb-namespace"], "shop");
    assert!(
        !labels.contains_key("k8s-cluster"),
        "node-group discovery uses k8s-cluster"
    );
    assert!(
        labels
            .keys()
            .all(|k| !k.contains('/') && k.to_lowercase() == *k)
    );
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn the_address_comes_from_capabilities_then_outputs_in_any_contract_shape() {
    let caps = map(json!({"ingress": [{"ip": "203.0.113.7", "hostname": "lb-1.example.com"}]}));
    let outs = map(json!({"ingress": "198.51.100.1"}));
    let Address::Known(i) = ingress::address(Some(&caps), Some(&outs)) else {
        panic!("known");
    };
    assert_eq!(i[0].ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(i[0].hostname.as_deref(), Some("lb-1.example.com"));
    let Address::Known(i) = ingress::address(None, Some(&outs)) else {
        panic!("known");
    };
    assert_eq!(i[0].ip.as_deref(), Some("198.51.100.1"));
    let host = map(json!({"ingress": "lb.example.com"}));
    let Address::Known(i) = ingress::address(None, Some(&host)) else {
        panic!("known");
    };
    assert_eq!(
        (i[0].ip.as_deref(), i[0].hostname.as_deref()),
        (None, Some("lb.example.com"))
    );
    let proxy = map(json!({"ingress": {"ip": "203.0.113.9", "ip_mode": "Proxy"}}));
    let Address::Known(i) = ingress::address(Some(&proxy), None) else {
        panic!("known");
    };
    assert_eq!(i[0].ip_mode.as_deref(), Some("Proxy"));
    // A runtime property not set yet evaluates to null or "".
    for pending in [
        json!({"ingress": null}),
        json!({"ingress": [{"ip": ""}]}),
        json!({"ingress": []}),
    ] {
        assert_eq!(ingress::address(None, Some(&map(pending))), Address::NotYet);
    }
    for (bad, why) in [
        (
            json!({"ingress": {"ip": "300.1.1.1"}}),
            "is not an IP address",
        ),
        (
            json!({"ingress": {"hostname": "LB_1"}}),
            "is not a DNS name",
        ),
        (json!({"ingress": 7}), "neither an address"),
        (
            json!({"ingress": {"ip": "203.0.113.9", "ip_mode": "Direct"}}),
            "expected VIP or Proxy",
        ),
        (
            json!({"address": "203.0.113.9"}),
            "no capability or output named \"ingress\"",
        ),
    ] {
        match ingress::address(None, Some(&map(bad.clone()))) {
            Address::Invalid(t) => assert!(t.contains(why), "{bad}: {t}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn status_is_patched_only_when_what_we_write_differs() {
    let wanted = vec![LoadBalancerIngress {
        ip: Some("203.0.113.7".into()),
        ..LoadBalancerIngress::default()
    }];
    let mut svc = service(Some(CLASS));
    assert!(ingress::differs(&ingress::current(&svc), &wanted));
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("203.0.113.7".into()),
                ports: Some(Vec::new()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        conditions: None,
    });
    assert!(
        !ingress::differs(&ingress::current(&svc), &wanted),
        "ports are not ours"
    );
    assert_eq!(ingress::describe(&wanted), "203.0.113.7");
}

fn run(id: &str, workflow: &str, status: RunStatus) -> Run {
    Run {
        id: id.into(),
        workflow: workflow.into(),
        status,
        error: if status == RunStatus::Failed {
            "Traceback...\nRuntimeError: no quota".into()
        } else {
            String::new()
        },
    }
}

fn present(inputs: &Map<String, Value>, installed: bool, runs: Vec<Run>) -> Observed {
    Observed::Present(DeploymentState {
        inputs: inputs.clone(),
        installed,
        runs,
    })
}

fn desired_now() -> spec::Desired {
    spec::desired(
        &service(Some(CLASS)),
        &backends(&[("a", "10.0.0.10")]),
        &settings().blueprints[0],
        "c",
    )
}

#[test]
fn ensure_goes_finalizer_create_install_address() {
    let d = desired_now();
    assert_eq!(
        plan::ensure(false, &d, &Observed::Absent, None),
        Step::AddFinalizer
    );
    assert_eq!(
        plan::ensure(true, &d, &Observed::Absent, None),
        Step::Create
    );
    let env = run("e0", "create_deployment_environment", RunStatus::Active);
    assert_eq!(
        plan::ensure(true, &d, &present(&d.inputs, false, vec![env]), None),
        Step::Wait {
            workflow: "create_deployment_environment".into()
        }
    );
    let env = run("e0", "create_deployment_environment", RunStatus::Terminated);
    assert_eq!(
        plan::ensure(
            true,
            &d,
            &present(&d.inputs, false, vec![env.clone()]),
            None
        ),
        Step::Install
    );
    let install = run("e1", "install", RunStatus::Terminated);
    let ready = present(&d.inputs, true, vec![install, env]);
    assert_eq!(plan::ensure(true, &d, &ready, None), Step::ReadAddress);
    assert_eq!(Step::ReadAddress.phase(), "active");
}

#[test]
fn changes_wait_for_quiet_and_then_go_as_one_update() {
    let before = desired_now();
    let after = spec::desired(
        &service(Some(CLASS)),
        &backends(&[("a", "10.0.0.10"), ("b", "10.0.0.11")]),
        &settings().blueprints[0],
        "c",
    );
    // An update runs: whatever changed meanwhile waits for it.
    let busy = present(
        &before.inputs,
        true,
        vec![
            run("u1", "update", RunStatus::Active),
            run("i", "install", RunStatus::Terminated),
        ],
    );
    assert_eq!(
        plan::ensure(true, &after, &busy, None),
        Step::Wait {
            workflow: "update".into()
        }
    );
    // Quiet again: one update with the inputs as they are now.
    let quiet = present(
        &before.inputs,
        true,
        vec![
            run("u1", "update", RunStatus::Terminated),
            run("i", "install", RunStatus::Terminated),
        ],
    );
    assert_eq!(
        plan::ensure(true, &after, &quiet, None),
        Step::Update {
            changed: vec!["backends".into()]
        }
    );
    // Changed before the install: the inputs go in first, then the install.
    let created = present(&before.inputs, false, Vec::new());
    assert_eq!(
        plan::ensure(true, &after, &created, None),
        Step::Update {
            changed: vec!["backends".into()]
        }
    );
}

#[test]
fn a_failed_execution_is_reported_once_then_retried() {
    let d = desired_now();
    let failed_install = present(
        &d.inputs,
        false,
        vec![run("i1", "install", RunStatus::Failed)],
    );
    let step = plan::ensure(true, &d, &failed_install, None);
    let Step::ReportFailure { run: r, kind } = &step else {
        panic!("{step:?}");
    };
    assert_eq!((r.id.as_str(), *kind), ("i1", FailureKind::Sync));
    assert_eq!(kind.reason(), "SyncLoadBalancerFailed");
    assert_eq!(
        plan::ensure(true, &d, &failed_install, Some("i1")),
        Step::Install
    );

    let failed_update = present(
        &d.inputs,
        true,
        vec![
            run("u1", "update", RunStatus::Failed),
            run("i1", "install", RunStatus::Terminated),
        ],
    );
    let step = plan::ensure(true, &d, &failed_update, None);
    assert!(
        matches!(
            step,
            Step::ReportFailure {
                kind: FailureKind::Update,
                ..
            }
        ),
        "{step:?}"
    );
    // The retry repeats the update (its drift check re-runs the update operation).
    assert_eq!(
        plan::ensure(true, &d, &failed_update, Some("u1")),
        Step::Update { changed: vec![] }
    );

    let failed_env = present(
        &Map::new(),
        false,
        vec![run(
            "c1",
            "create_deployment_environment",
            RunStatus::Failed,
        )],
    );
    assert!(matches!(
        plan::ensure(true, &d, &failed_env, None),
        Step::ReportFailure { .. }
    ));
    assert_eq!(
        plan::ensure(true, &d, &failed_env, Some("c1")),
        Step::Create
    );
}

#[test]
fn no_usable_port_creates_and_changes_nothing() {
    let mut svc = service(Some(CLASS));
    if let Some(s) = svc.spec.as_mut() {
        s.ports = Some(vec![port("q", "SCTP", 9, 30009)]);
    }
    let d = spec::desired(
        &svc,
        &backends(&[("a", "10.0.0.10")]),
        &settings().blueprints[0],
        "c",
    );
    assert_eq!(
        plan::ensure(true, &d, &Observed::Absent, None),
        Step::NoUsablePorts
    );
    let installed = present(
        &Map::new(),
        true,
        vec![run("i", "install", RunStatus::Terminated)],
    );
    assert_eq!(
        plan::ensure(true, &d, &installed, None),
        Step::NoUsablePorts
    );
}

#[test]
fn cleanup_uninstalls_deletes_waits_and_drops_the_finalizer() {
    let none = Map::new();
    let installed = present(
        &none,
        true,
        vec![run("i", "install", RunStatus::Terminated)],
    );
    assert_eq!(plan::cleanup(&installed, None), Step::Uninstall);
    // A failed install left something: uninstall too.
    let partial = present(&none, false, vec![run("i", "install", RunStatus::Failed)]);
    assert_eq!(plan::cleanup(&partial, None), Step::Uninstall);
    // Still installing: wait for it, then uninstall.
    let installing = present(&none, false, vec![run("i", "install", RunStatus::Active)]);
    assert_eq!(
        plan::cleanup(&installing, None),
        Step::Wait {
            workflow: "install".into()
        }
    );
    let uninstalled = present(
        &none,
        false,
        vec![
            run("u", "uninstall", RunStatus::Terminated),
            run("i", "install", RunStatus::Terminated),
        ],
    );
    assert_eq!(plan::cleanup(&uninstalled, None), Step::Delete);
    // Created but never installed.
    let bare = present(
        &none,
        false,
        vec![run(
            "c",
            "create_deployment_environment",
            RunStatus::Terminated,
        )],
    );
    assert_eq!(plan::cleanup(&bare, None), Step::Delete);
    let deleting = present(
        &none,
        false,
        vec![run("d", "delete_deployment_environment", RunStatus::Active)],
    );
    assert_eq!(plan::cleanup(&deleting, None), Step::WaitGone);
    assert_eq!(
        plan::cleanup(&Observed::Absent, None),
        Step::RemoveFinalizer
    );
    // A failed uninstall: reported, then retried.
    let failed = present(
        &none,
        false,
        vec![
            run("u", "uninstall", RunStatus::Failed),
            run("i", "install", RunStatus::Terminated),
        ],
    );
    assert!(matches!(
        plan::cleanup(&failed, None),
        Step::ReportFailure {
            kind: FailureKind::Delete,
            ..
        }
    ));
    assert_eq!(plan::cleanup(&failed, Some("u")), Step::Uninstall);
}

#[test]
fn every_phase_a_step_names_is_listed() {
    let steps = [
        Step::AddFinalizer,
        Step::Create,
        Step::Install,
        Step::Update { changed: vec![] },
        Step::ReadAddress,
        Step::Wait {
            workflow: "x".into(),
        },
        Step::NoUsablePorts,
        Step::Uninstall,
        Step::Delete,
        Step::WaitGone,
        Step::RemoveFinalizer,
        Step::ReportFailure {
            run: run("x", "install", RunStatus::Failed),
            kind: FailureKind::Sync,
        },
    ];
    for s in steps {
        assert!(plan::PHASES.contains(&s.phase()), "{s:?}");
    }
    for w in [
        "create_deployment_environment",
        "install",
        "update",
        "uninstall",
        "delete_deployment_environment",
    ] {
        assert!(plan::PHASES.contains(&Step::Wait { workflow: w.into() }.phase()));
    }
}
