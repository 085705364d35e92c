//! What a Service asks of its load balancer, as pure functions of the Service, the Nodes and the
//! configuration: whether the Service is ours, which Nodes are backends, and the deployment
//! inputs of the blueprint contract (docs/configuration.md, "Load balancers"), with a Warning for
//! every part of the spec the blueprint cannot honour. No I/O: every rule is a unit test.
//!
//! The rules follow the upstream service controller (`kubernetes/cloud-provider`
//! `controllers/service`): a Service is handled iff `type: LoadBalancer` and its
//! `loadBalancerClass` is ours (class-less ones only when configured, as a default implementation
//! must ignore classed Services); the backends are every Node not being deleted, without the
//! `node.kubernetes.io/exclude-from-external-load-balancers` label and without CA's
//! `ToBeDeletedByClusterAutoscaler` taint (Ready is not required upstream; optional here).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use serde_json::{Map, Value, json};

use crate::config::{BackendAddressType, LbBlueprint, LoadBalancersConfig};

/// This controller's finalizer: added before anything is created in Cloudify, removed after the
/// deployment is gone. Not the upstream `service.kubernetes.io/load-balancer-cleanup`: the
/// upstream controller strips that one from any deleting Service, classed or not, so a running
/// cloud controller manager could drop our cleanup.
pub const FINALIZER: &str = "autoscaler-cloudify.io/load-balancer-cleanup";
/// Set by the user: which `cloudify` entry (manager/tenant) holds the Service's load balancer.
pub const MANAGER_ANNOTATION: &str = "autoscaler-cloudify.io/load-balancer-manager";
/// Set by the controller with its finalizer: `<cloudify entry>/<deployment id>` of the Service's
/// load balancer, so cleanup finds it whatever the configuration says later.
pub const DEPLOYMENT_ANNOTATION: &str = "autoscaler-cloudify.io/load-balancer-deployment";
/// A Node with this label (any value) is never a backend (upstream, KEP 1143).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The taint CA puts on a Node it is about to delete: the LB stops sending to it first.
pub const CA_DELETION_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// external-dns' hostname annotation: the names are passed to the blueprint as `dns_names`.
pub const EXTERNAL_DNS_HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";
/// The source-range annotation that predates `spec.loadBalancerSourceRanges` (the field wins).
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// What the controller does with a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// `type: LoadBalancer` with our class (or none, when configured): ensure its load balancer.
    Ours,
    /// It carries our finalizer but is being deleted or is no longer `type: LoadBalancer`:
    /// uninstall and delete the deployment, then drop the finalizer. `clear_status` when the
    /// Service stays (a type change): its `status.loadBalancer` is emptied too.
    CleanUp {
        /// The Service stays, so its status must lose the address.
        clear_status: bool,
    },
    /// It carries our finalizer and is still `type: LoadBalancer`, but the configuration no
    /// longer serves its class (e.g. `class_less` turned off): its load balancer is kept, not
    /// deleted, because a configuration change must not tear down every address at once.
    Disowned,
    /// Not ours: nothing to do.
    NotOurs,
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether and how the Service is ours under this configuration.
pub fn ownership(svc: &Service, settings: &LoadBalancersConfig) -> Ownership {
    let spec = svc.spec.as_ref();
    let is_lb = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let class_ok = match spec.and_then(|s| s.load_balancer_class.as_deref()) {
        Some(c) => c == settings.class,
        None => settings.class_less,
    };
    let deleting = svc.metadata.deletion_timestamp.is_some();
    match (has_finalizer(svc), is_lb && class_ok, deleting) {
        (true, _, true) => Ownership::CleanUp {
            clear_status: false,
        },
        (true, false, false) if !is_lb => Ownership::CleanUp { clear_status: true },
        (true, false, false) => Ownership::Disowned,
        (_, true, false) => Ownership::Ours,
        (false, _, _) => Ownership::NotOurs,
    }
}

/// One backend of a load balancer: a Node and the address the LB sends to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// `metadata.name`.
    pub node: String,
    /// Its address of the configured type (`InternalIP` by default).
    pub address: String,
}

/// The backend set, and the Nodes left out for lack of an address (logged, never silent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSet {
    /// Sorted by node name, so the inputs do not change with the watch's order.
    pub backends: Vec<Backend>,
    /// Eligible Nodes without an address of the configured type.
    pub without_address: Vec<String>,
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Node may carry LB traffic (upstream's predicates, plus Ready when configured).
pub fn eligible(node: &Node, exclude_not_ready: bool) -> bool {
    let excluded = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
    let leaving = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == CA_DELETION_TAINT));
    node.metadata.deletion_timestamp.is_none()
        && !excluded
        && !leaving
        && (!exclude_not_ready || is_ready(node))
}

/// The backends among these Nodes.
pub fn backends<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    address_type: BackendAddressType,
    exclude_not_ready: bool,
) -> BackendSet {
    let mut set = BackendSet::default();
    for node in nodes {
        if !eligible(node, exclude_not_ready) {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == address_type.as_str()))
            .map(|a| a.address.clone())
            .filter(|a| !a.is_empty());
        match address {
            Some(address) => set.backends.push(Backend {
                node: name,
                address,
            }),
            None => set.without_address.push(name),
        }
    }
    set.backends.sort();
    set.without_address.sort();
    set
}

/// A Warning the Service's spec earns (an Event on the Service, once per distinct text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecWarning {
    /// The Event's reason.
    pub reason: &'static str,
    /// What is wrong and what the controller does about it.
    pub text: String,
}

/// The inputs a Service's deployment should have now.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The contract's inputs, then the blueprint's static ones.
    pub inputs: Map<String, Value>,
    /// Ports the blueprint can serve (the others are left out, with a Warning).
    pub usable_ports: usize,
    /// Backends in the inputs.
    pub backend_count: usize,
    /// Parts of the spec the blueprint cannot honour.
    pub warnings: Vec<SpecWarning>,
}

fn name_of(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `a.b.c.d/n` or `x::y/n`, as the LB and the API server want it.
fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// The deployment inputs for this Service (docs/configuration.md lists the contract):
///
/// - `service`: `{namespace, name, uid, cluster}`;
/// - `ports`: `[{name, protocol, port, node_port}]` in the Service's order, without the ports the
///   blueprint cannot serve (no nodePort, a protocol it does not implement);
/// - `backends`: `[{node, address}]`;
/// - `health_check`: `{type: http, port: <healthCheckNodePort>, path: /healthz}` with
///   `externalTrafficPolicy: Local` (kube-proxy answers 200 there only on Nodes with a local
///   endpoint, so the LB skips the others), else `{type: tcp, port: 0, path: ""}`: a TCP check
///   on each port's own node port;
/// - `source_ranges`: `spec.loadBalancerSourceRanges`, else the older annotation; `[]` = all;
/// - `load_balancer_ip`: `spec.loadBalancerIP` or `""`;
/// - `session_affinity`: `None` or `ClientIP`;
/// - `dns_names`: the external-dns hostname annotation, split at commas.
pub fn desired(
    svc: &Service,
    backends: &BackendSet,
    blueprint: &LbBlueprint,
    cluster_name: &str,
) -> Desired {
    let spec = svc.spec.clone().unwrap_or_default();
    let (namespace, name) = name_of(svc);
    let mut warnings = Vec::new();
    let ports = usable_ports(
        spec.ports.as_deref().unwrap_or_default(),
        blueprint,
        &mut warnings,
    );
    if backends.backends.is_empty() {
        // Upstream's words for the same situation.
        warnings.push(SpecWarning {
            reason: "UnAvailableLoadBalancer",
            text: "There are no available nodes for LoadBalancer".into(),
        });
    }
    let health_check = health_check(&spec);
    let source_ranges = source_ranges(svc, spec.load_balancer_source_ranges, &mut warnings);
    let dns_names = annotation(svc, EXTERNAL_DNS_HOSTNAME)
        .map(comma_list)
        .unwrap_or_default();
    let backend_list: Vec<Value> = backends
        .backends
        .iter()
        .map(|b| json!({"node": b.node, "address": b.address}))
        .collect();
    let mut inputs = Map::new();
    inputs.insert(
        "service".into(),
        json!({
            "namespace": namespace,
            "name": name,
            "uid": svc.metadata.uid.clone().unwrap_or_default(),
            "cluster": cluster_name,
        }),
    );
    let usable_ports = ports.len();
    inputs.insert("ports".into(), Value::Array(ports));
    inputs.insert("backends".into(), Value::Array(backend_list));
    inputs.insert("health_check".into(), health_check);
    inputs.insert("source_ranges".into(), Value::Array(source_ranges));
    inputs.insert(
        "load_balancer_ip".into(),
        json!(spec.load_balancer_ip.unwrap_or_default()),
    );
    inputs.insert(
        "session_affinity".into(),
        json!(spec.session_affinity.unwrap_or_else(|| "None".into())),
    );
    inputs.insert("dns_names".into(), json!(dns_names));
    for (k, v) in &blueprint.inputs {
        inputs.insert(k.clone(), v.clone());
    }
    warnings.sort();
    warnings.dedup();
    Desired {
        inputs,
        usable_ports,
        backend_count: backends.backends.len(),
        warnings,
    }
}

/// The `ports` input: the Service's ports in its order, each `{name, protocol, port, node_port}`,
/// leaving out (with a warning) a port without a node port (the LB sends to node ports) and one
/// whose protocol the blueprint does not implement.
fn usable_ports(
    service_ports: &[ServicePort],
    blueprint: &LbBlueprint,
    warnings: &mut Vec<SpecWarning>,
) -> Vec<Value> {
    let mut ports = Vec::new();
    for p in service_ports {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let label = match &p.name {
            Some(n) if !n.is_empty() => format!("port {n} ({}/{protocol})", p.port),
            _ => format!("port {}/{protocol}", p.port),
        };
        let node_port = p.node_port.unwrap_or(0);
        if node_port == 0 {
            warnings.push(SpecWarning {
                reason: "UnsupportedLoadBalancerPort",
                text: format!(
                    "{label} has no nodePort (allocateLoadBalancerNodePorts: false?): left out of \
                     the load balancer, which sends to node ports"
                ),
            });
            continue;
        }
        if !blueprint.protocols.contains(&protocol) {
            warnings.push(SpecWarning {
                reason: "UnsupportedLoadBalancerPort",
                text: format!(
                    "{label}: blueprint {} implements {} only: left out of the load balancer",
                    blueprint.blueprint_id,
                    blueprint.protocols.join(", ")
                ),
            });
            continue;
        }
        ports.push(json!({
            "name": p.name.clone().unwrap_or_default(),
            "protocol": protocol,
            "port": p.port,
            "node_port": node_port,
        }));
    }
    ports
}

/// The `health_check` input: kube-proxy's HTTP check on the health check node port with
/// `externalTrafficPolicy: Local` (only Nodes with a local endpoint answer 200), else a TCP
/// check on each port's own node port.
fn health_check(spec: &ServiceSpec) -> Value {
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    match spec.health_check_node_port {
        Some(port) if local && port > 0 => {
            json!({"type": "http", "port": port, "path": "/healthz"})
        }
        _ => json!({"type": "tcp", "port": 0, "path": ""}),
    }
}

/// The `source_ranges` input: `spec.loadBalancerSourceRanges` (`field`), else the older
/// annotation; an entry that is not a CIDR is left out, with a warning that names it.
fn source_ranges(
    svc: &Service,
    field: Option<Vec<String>>,
    warnings: &mut Vec<SpecWarning>,
) -> Vec<Value> {
    let ranges = match field.filter(|r| !r.is_empty()) {
        Some(r) => r,
        None => annotation(svc, SOURCE_RANGES_ANNOTATION)
            .map(comma_list)
            .unwrap_or_default(),
    };
    let mut source_ranges = Vec::new();
    for r in ranges {
        let r = r.trim().to_owned();
        if is_cidr(&r) {
            source_ranges.push(Value::String(r));
        } else {
            warnings.push(SpecWarning {
                reason: "UnsupportedLoadBalancerSourceRange",
                text: format!("source range {r:?} is not a CIDR (e.g. 203.0.113.0/24): ignored"),
            });
        }
    }
    source_ranges
}

/// Where a Service's load balancer lives: the blueprint entry and the deployment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into `LoadBalancersConfig::blueprints`.
    pub blueprint: usize,
    /// The Cloudify deployment id.
    pub deployment_id: String,
    /// The value of [`DEPLOYMENT_ANNOTATION`] for it.
    pub annotation: String,
}

/// Why a Service's load balancer cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError(pub String);

/// Where the Service's load balancer is (from [`DEPLOYMENT_ANNOTATION`], once written) or is to be
/// (the [`MANAGER_ANNOTATION`], else the default blueprint; id `<prefix><uid>`). `managers` are
/// the `cloudify` entry names, by index.
pub fn placement(
    svc: &Service,
    settings: &LoadBalancersConfig,
    managers: &[String],
) -> Result<Placement, PlacementError> {
    let by_name = |name: &str| {
        settings
            .blueprints
            .iter()
            .position(|b| managers.get(b.source).is_some_and(|m| m == name))
    };
    if let Some(recorded) = annotation(svc, DEPLOYMENT_ANNOTATION) {
        let (manager, id) = recorded.split_once('/').ok_or_else(|| {
            PlacementError(format!(
                "annotation {DEPLOYMENT_ANNOTATION}={recorded:?} is not <manager>/<deployment id>"
            ))
        })?;
        let blueprint = by_name(manager).ok_or_else(|| {
            PlacementError(format!(
                "its load balancer is deployment {id} on cloudify entry {manager:?}, which has no \
                 load_balancers.blueprints entry any more"
            ))
        })?;
        return Ok(Placement {
            blueprint,
            deployment_id: id.to_owned(),
            annotation: recorded.to_owned(),
        });
    }
    let blueprint = match annotation(svc, MANAGER_ANNOTATION) {
        Some(m) => by_name(m).ok_or_else(|| {
            let known: Vec<&str> = settings
                .blueprints
                .iter()
                .filter_map(|b| managers.get(b.source).map(String::as_str))
                .collect();
            PlacementError(format!(
                "annotation {MANAGER_ANNOTATION}={m:?} names no cloudify entry with an LB \
                 blueprint (configured: {known:?})"
            ))
        })?,
        None => settings.default_blueprint,
    };
    let Some(entry) = settings.blueprints.get(blueprint) else {
        return Err(PlacementError(
            "no LB blueprint is configured (load_balancers.blueprints)".into(),
        ));
    };
    let manager = managers.get(entry.source).cloned().unwrap_or_default();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let deployment_id = format!("{}{uid}", settings.deployment_prefix);
    Ok(Placement {
        blueprint,
        annotation: format!("{manager}/{deployment_id}"),
        deployment_id,
    })
}

/// The labels of a Service's deployment: the cluster, and the Service's namespace, name and
/// UID, so an operator (or an orphan search, `POST /searches/deployments`) finds the deployments
/// of a cluster and the Service each one serves. Keys are lower case without `/`, as Cloudify
/// wants them; a separate `k8s-lb-cluster` key keeps LB deployments out of node-group discovery
/// rules on `k8s-cluster`.
pub fn deployment_labels(svc: &Service, cluster_name: &str) -> BTreeMap<String, String> {
    let (namespace, name) = name_of(svc);
    BTreeMap::from([
        ("k8s-lb-cluster".to_owned(), cluster_name.to_owned()),
        ("k8s-lb-namespace".to_owned(), namespace),
        ("k8s-lb-service".to_owned(), name),
        (
            "k8s-lb-uid".to_owned(),
            svc.metadata.uid.clone().unwrap_or_default(),
        ),
    ])
}

/// The inputs of `desired` that differ from what the deployment has (the contract's keys and the
/// static ones; inputs the blueprint defaults are not compared). Empty when nothing changed.
pub fn changed_inputs(desired: &Map<String, Value>, current: &Map<String, Value>) -> Vec<String> {
    desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}
