//! The validated configuration as the rest of the provider reads it, and the flag values that
//! override the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::provider_id::ProviderIdTemplate;
use crate::cloudify::ClientSettings;
use crate::observability::LogFormat;
use crate::observability::http::HttpConnections;

/// Files for mTLS on the gRPC port.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server key (PEM).
    pub key_file: PathBuf,
    /// CA that client certificates must chain to (mTLS); `None` = server TLS only.
    pub client_ca_file: Option<PathBuf>,
}

/// How the gRPC port treats its connections (`grpc.*`; issue 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcConnections {
    /// After the Lease is lost (and at shutdown) connections get this long to finish their calls
    /// after the GOAWAY; what is still open then is closed (`grpc.drain_timeout`, default 5 s:
    /// CA's default call deadline, after which CA has given up on the call anyway).
    pub drain_timeout: Duration,
    /// An HTTP/2 PING goes to a connection that has sent nothing for this long
    /// (`grpc.keepalive_interval`, default 10 s).
    pub keepalive_interval: Duration,
    /// A PING not answered within this closes the connection (`grpc.keepalive_timeout`, default
    /// 10 s). A connection that sends nothing for interval + timeout (no request, no PING
    /// answer, not even its TLS or HTTP/2 greeting) is closed.
    pub keepalive_timeout: Duration,
    /// Open connections at most; more are closed at once (`grpc.max_connections`, default 100:
    /// CA keeps one).
    pub max_connections: usize,
}

impl Default for GrpcConnections {
    fn default() -> Self {
        GrpcConnections {
            drain_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: 100,
        }
    }
}

impl GrpcConnections {
    /// How long a connection may send nothing: a live client answers the keepalive PINGs
    /// within this, a silent or half-greeted one does not.
    pub fn read_idle(&self) -> Duration {
        self.keepalive_interval + self.keepalive_timeout
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where CA connects (`grpc.listen`, `--listen`; default `0.0.0.0:8086`).
    pub grpc_listen: SocketAddr,
    /// mTLS files; `None` = plaintext (loopback or `insecure` only).
    pub tls: Option<TlsFiles>,
    /// Allow plaintext, or TLS without a client CA, on a non-loopback address.
    pub insecure: bool,
    /// Drain, keepalive and connection limit of the gRPC port.
    pub grpc_connections: GrpcConnections,
    /// Plain HTTP for /healthz, /readyz, /metrics (`http.listen`; default `0.0.0.0:8087`).
    pub http_listen: SocketAddr,
    /// Header timeout and connection limit of the HTTP port.
    pub http_connections: HttpConnections,
    /// Text for people, JSON for log collectors.
    pub log_format: LogFormat,
    /// A tracing filter directive (`info,autoscaler_cloudify=debug`), already checked to parse.
    pub log_level: String,
    /// Background refresh period (`refresh.interval`; default 10 s, at least 100 ms).
    pub refresh_interval: Duration,
    /// The Refresh RPC refreshes when the snapshot is older than this (`refresh.max_age`;
    /// default 5 s).
    pub refresh_max_age: Duration,
    /// Every refresh reads every deployment's nodes and instances again at least this often,
    /// whatever the change markers say (`refresh.full_every`; default 5 min, zero: always).
    pub refresh_full_every: Duration,
    /// One entry per manager/tenant.
    pub cloudify: Vec<ClientSettings>,
    /// Node group selection and per-group settings.
    pub node_groups: NodeGroupsConfig,
    /// Label whose value names a node's GPU type (`gpu_label`; default `cloudify.co/gpu-type`).
    pub gpu_label: String,
    /// The node controller (initialize joining Nodes, remove Nodes whose VM is gone).
    pub node_controller: NodeControllerConfig,
    /// Leader election on a Kubernetes Lease (several replicas).
    pub lease: LeaseConfig,
    /// The service controller: Services of type LoadBalancer served by Cloudify deployments
    /// (issue 23; off by default).
    pub load_balancers: LoadBalancersConfig,
    /// `pools:`: the CloudifyNodePool controller (issue 22).
    pub pools: PoolsConfig,
}

/// The `pools:` section: whether the `CloudifyNodePool` controller runs (it needs Kubernetes
/// credentials and the CRD), and the labels every pool deployment gets besides the pool's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolsConfig {
    /// `pools.enabled` (default false).
    pub enabled: bool,
    /// `pools.cluster_labels`: e.g. `{k8s-cluster: prod}`, the labels a discovery rule matches,
    /// so `inspect` and label searches see pool deployments too.
    pub cluster_labels: Vec<(String, String)>,
    /// `pools.flavors`: what each flavor holds (`cpu`, `memory`, `nvidia.com/gpu`, ... as
    /// quantities), the capacity of a pool's scale-from-zero template for its `compute.flavor`
    /// where the pool's own `template.capacity` does not say.
    pub flavors: BTreeMap<String, BTreeMap<String, String>>,
}

/// Whether to elect a leader on a Kubernetes Lease (`--leader-elect`, `lease.enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeaseMode {
    /// When Kubernetes credentials are present (in-cluster or a kubeconfig); otherwise a sole
    /// replica, as `demo` and tests run.
    Auto,
    /// Always; no credentials is a start-up error.
    #[value(name = "true", alias = "on")]
    On,
    /// Never: this process is the only replica and always mutates.
    #[value(name = "false", alias = "off")]
    Off,
}

/// Leader election settings (`lease.*`). Times are whole seconds: the Lease stores
/// `leaseDurationSeconds` and kube-lease-manager counts in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// On, off, or when credentials are present.
    pub mode: LeaseMode,
    /// The Lease object's name.
    pub name: String,
    /// Its namespace; `None` = `POD_NAMESPACE`, else the client's default namespace.
    pub namespace: Option<String>,
    /// How long a lease stays valid after its last renewal; another replica takes over after it.
    pub duration: Duration,
    /// The leader stops mutating when it has not renewed for this long: strictly less than
    /// `duration`, so it stops before another replica can take the lease.
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// The label the leader puts on its own Pod (`POD_NAMESPACE`/`POD_NAME`) and removes when it
    /// stops leading, so a Service selecting it sends CA to the leader while every replica is
    /// Ready (issue 21). `None`: no Pod is labelled (outside Kubernetes, tests).
    pub leader_label: Option<String>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            mode: LeaseMode::Auto,
            name: "autoscaler-cloudify".into(),
            namespace: None,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_period: Duration::from_secs(4),
            leader_label: None,
        }
    }
}

/// Settings of the node controller (`node_controller:` in the file, `--node-controller`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeControllerConfig {
    /// Run it when Kubernetes credentials are present (`false` turns it off).
    pub enabled: bool,
    /// At most this many Node deletions per completed refresh; the rest wait for the next one.
    pub max_deletions_per_refresh: usize,
    /// Nodes younger than this are never deleted (a VM lookup can lag its registration).
    pub min_node_age: Duration,
    /// Provider-id prefixes that are managed even when no group's template yields a prefix
    /// (e.g. `openstack:///`): a Node with such an id and no instance may be deleted.
    pub managed_provider_id_prefixes: Vec<String>,
}

impl Default for NodeControllerConfig {
    fn default() -> Self {
        NodeControllerConfig {
            enabled: true,
            max_deletions_per_refresh: 3,
            min_node_age: Duration::from_secs(120),
            managed_provider_id_prefixes: Vec::new(),
        }
    }
}

/// The Node address an LB blueprint gets as a backend's `address` (`load_balancers.address_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendAddressType {
    /// `InternalIP` (the default, as the 2018 provider and most cloud LBs use).
    InternalIp,
    /// `ExternalIP`, for a load balancer outside the nodes' private network.
    ExternalIp,
}

impl BackendAddressType {
    /// The `status.addresses[].type` value it selects.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendAddressType::InternalIp => "InternalIP",
            BackendAddressType::ExternalIp => "ExternalIP",
        }
    }
}

/// The inputs every LB deployment gets from the service controller (the blueprint contract,
/// docs/configuration.md "Load balancers"): an LB blueprint declares all of them, and a
/// blueprint's static `inputs` may not name them.
pub const LB_CONTRACT_INPUTS: [&str; 8] = [
    "service",
    "ports",
    "backends",
    "health_check",
    "source_ranges",
    "load_balancer_ip",
    "session_affinity",
    "dns_names",
];

/// The LB blueprint of one manager/tenant (`load_balancers.blueprints.<cloudify entry name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct LbBlueprint {
    /// Index into [`Config::cloudify`]: where this blueprint is uploaded and the deployments live.
    pub source: usize,
    /// The uploaded blueprint's id (the operator uploads it; the controller never does).
    pub blueprint_id: String,
    /// Service port protocols the blueprint implements (`TCP`, `UDP`, `SCTP`); a port with
    /// another protocol is left out with a Warning Event.
    pub protocols: Vec<String>,
    /// Inputs passed as written to every deployment of this blueprint (flavor, image, network),
    /// next to the contract's inputs, which they may not name.
    pub inputs: BTreeMap<String, serde_json::Value>,
}

/// Settings of the service controller (`load_balancers:`; docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancersConfig {
    /// Run it (needs Kubernetes credentials; default false).
    pub enabled: bool,
    /// The `spec.loadBalancerClass` this controller serves.
    pub class: String,
    /// Serve Services without a `loadBalancerClass` too: only when no other load-balancer
    /// implementation (a cloud controller manager, MetalLB) runs in the cluster.
    pub class_less: bool,
    /// The `k8s-lb-cluster` label of every deployment, so one manager can serve several clusters
    /// and an operator can find a cluster's LB deployments.
    pub cluster_name: String,
    /// Deployment ids are `<prefix><Service UID>`.
    pub deployment_prefix: String,
    /// The blueprint a Service's deployment is made from when its annotation names no manager.
    pub default_blueprint: usize,
    /// One LB blueprint per manager/tenant that may hold LB deployments.
    pub blueprints: Vec<LbBlueprint>,
    /// Which Node address is a backend's address.
    pub address_type: BackendAddressType,
    /// Leave Nodes whose Ready condition is not True out of the backends (upstream keeps them and
    /// relies on the LB's health checks: kubernetes/cloud-provider#76).
    pub exclude_not_ready: bool,
    /// How soon a Service is looked at again while its deployment runs an execution.
    pub poll_interval: Duration,
    /// How often a settled load balancer is compared with Cloudify again (its address, its
    /// deployment gone by hand).
    pub resync_interval: Duration,
    /// At most this many Services are reconciled at once (each reconcile is a few short Cloudify
    /// calls; no reconcile waits for an execution).
    pub concurrency: u16,
}

impl Default for LoadBalancersConfig {
    fn default() -> Self {
        LoadBalancersConfig {
            enabled: false,
            class: "autoscaler-cloudify.io/cloudify".into(),
            class_less: false,
            cluster_name: "kubernetes".into(),
            deployment_prefix: "k8s-lb-".into(),
            default_blueprint: 0,
            blueprints: Vec::new(),
            address_type: BackendAddressType::InternalIp,
            exclude_not_ready: false,
            poll_interval: Duration::from_secs(5),
            resync_interval: Duration::from_secs(300),
            concurrency: 8,
        }
    }
}

/// Runtime properties of the VM instance that hold a Node's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressProperties {
    /// `InternalIP` (default `ip`).
    pub internal_ip: String,
    /// `ExternalIP` (default `public_ip`).
    pub external_ip: String,
    /// `Hostname` (default `hostname`).
    pub hostname: String,
}

impl Default for AddressProperties {
    fn default() -> Self {
        AddressProperties {
            internal_ip: "ip".into(),
            external_ip: "public_ip".into(),
            hostname: "hostname".into(),
        }
    }
}

/// A statically configured group (`--nodes=<min>:<max>:<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticGroup {
    /// Index into [`Config::cloudify`]: the manager/tenant holding the deployment.
    pub source: usize,
    /// Cloudify deployment id; a group it does not have is warned about and skipped.
    pub deployment: String,
    /// Scaling group name inside the deployment.
    pub group: String,
    /// Bounds from the flag; they replace the group policy's `min_instances`/`max_instances`
    /// (`0 <= min <= max`, checked).
    pub min: i32,
    /// See `min`.
    pub max: i32,
}

/// An auto-discovery rule: deployments carrying all these labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `(key, value)` pairs, all required.
    pub labels: Vec<(String, String)>,
}

/// Node group selection and settings.
#[derive(Debug, Clone)]
pub struct NodeGroupsConfig {
    /// Statically configured groups.
    pub static_groups: Vec<StaticGroup>,
    /// Label discovery rules (applied to every cloudify entry).
    pub discovery: Vec<Discovery>,
    /// Max used when the policy's `max_instances` is `-1` (unbounded) or absent (default 100).
    pub unbounded_max: i32,
    /// `node_groups.defaults`: what a group's own settings leave unset.
    pub defaults: GroupSettings,
    /// `node_groups.groups`, by group id (ids checked against the configured entries).
    pub groups: BTreeMap<String, GroupSettings>,
}

impl NodeGroupsConfig {
    /// The effective settings of a group: its own fields, else the defaults'.
    pub fn settings_for(&self, group_id: &str) -> GroupSettings {
        match self.groups.get(group_id) {
            None => self.defaults.clone(),
            Some(g) => GroupSettings {
                min: g.min.or(self.defaults.min),
                max: g.max.or(self.defaults.max),
                provider_id_template: g
                    .provider_id_template
                    .clone()
                    .or_else(|| self.defaults.provider_id_template.clone()),
                node_name_property: g
                    .node_name_property
                    .clone()
                    .or_else(|| self.defaults.node_name_property.clone()),
                joining_node: g
                    .joining_node
                    .clone()
                    .or_else(|| self.defaults.joining_node.clone()),
                price_per_hour: g.price_per_hour.or(self.defaults.price_per_hour),
                instance_type: g
                    .instance_type
                    .clone()
                    .or_else(|| self.defaults.instance_type.clone()),
                region: g.region.clone().or_else(|| self.defaults.region.clone()),
                zone: g.zone.clone().or_else(|| self.defaults.zone.clone()),
                address_properties: g
                    .address_properties
                    .clone()
                    .or_else(|| self.defaults.address_properties.clone()),
                template: g
                    .template
                    .clone()
                    .or_else(|| self.defaults.template.clone()),
                options: g.options.clone().or_else(|| self.defaults.options.clone()),
            },
        }
    }
}

/// Per-group settings (every field optional; `defaults` fill the gaps).
#[derive(Debug, Clone, Default)]
pub struct GroupSettings {
    /// Replaces the scaling policy's `min_instances` (Cloudify does not enforce it; we do).
    pub min: Option<i32>,
    /// Replaces the scaling policy's `max_instances`.
    pub max: Option<i32>,
    /// How an instance's id is rendered; must match the kubelet's `--provider-id`. Unset:
    /// [`DEFAULT_PROVIDER_ID_TEMPLATE`](super::DEFAULT_PROVIDER_ID_TEMPLATE).
    pub provider_id_template: Option<ProviderIdTemplate>,
    /// Runtime property holding the Kubernetes node name (default `hostname`); the name is a
    /// fallback for finding a Node whose provider id does not match.
    pub node_name_property: Option<String>,
    /// The Cloudify node whose VM joins Kubernetes in each group instance, when a group instance
    /// holds several VMs (a worker and a storage VM): exactly one Kubernetes Node per group
    /// instance, the other VMs are its infrastructure (issue 20). Unset: the group's only VM
    /// member; a group with several is left out until this is set (Cloudify lists members in no
    /// particular order, so there is nothing to guess from).
    pub joining_node: Option<String>,
    /// Price of one node per hour (any unit, the same for every group); unset: PricingNodePrice
    /// answers `Unimplemented` for the group's nodes.
    pub price_per_hour: Option<f64>,
    /// `node.kubernetes.io/instance-type` of the group's Nodes (and template).
    pub instance_type: Option<String>,
    /// `topology.kubernetes.io/region` of the group's Nodes (and template).
    pub region: Option<String>,
    /// `topology.kubernetes.io/zone`; default: the deployment's Cloudify site, when it has one.
    pub zone: Option<String>,
    /// Runtime properties holding the Node addresses (default `ip`, `public_ip`, `hostname`).
    pub address_properties: Option<AddressProperties>,
    /// Template node for scale-from-zero; unset: `NodeGroupTemplateNodeInfo` is `Unimplemented`.
    pub template: Option<TemplateSpec>,
    /// Option overrides; unset: `NodeGroupGetOptions` is `Unimplemented` (CA keeps its defaults).
    pub options: Option<OptionsSpec>,
}

/// A taint of the template node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintSpec {
    /// Taint key (not empty, checked).
    pub key: String,
    /// Taint value; may be empty.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute` (checked).
    pub effect: String,
}

/// The template node of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateSpec {
    /// Labels added to the ones every template node gets (group id, instance type, ...), so
    /// scale-from-zero matches pods' node selectors.
    pub labels: BTreeMap<String, String>,
    /// Taints a new node will carry, so CA does not scale up for pods that would not tolerate it.
    pub taints: Vec<TaintSpec>,
    /// Capacity (Kubernetes quantities as text, shape checked); `pods` is added when missing.
    pub capacity: BTreeMap<String, String>,
    /// Allocatable; missing keys default to capacity.
    pub allocatable: BTreeMap<String, String>,
}

/// Autoscaling option overrides; unset fields keep CA's defaults from the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionsSpec {
    /// CA's `--scale-down-utilization-threshold` for this group, between 0 and 1 (checked).
    pub scale_down_utilization_threshold: Option<f64>,
    /// CA's `--scale-down-gpu-utilization-threshold`, between 0 and 1 (checked).
    pub scale_down_gpu_utilization_threshold: Option<f64>,
    /// CA's `--scale-down-unneeded-time`: how long a node must be unneeded before removal.
    pub scale_down_unneeded_time: Option<Duration>,
    /// CA's `--scale-down-unready-time`: how long an unready node is kept.
    pub scale_down_unready_time: Option<Duration>,
    /// CA's `--max-node-provision-time`: how long CA waits for a new node to register before it
    /// gives up on it (a Cloudify scale-out includes the agent install and the kubelet join).
    pub max_node_provision_time: Option<Duration>,
    /// Scale the group to 0 or to max only (CA's `--zero-or-max-node-scaling`).
    pub zero_or_max_node_scaling: Option<bool>,
    /// CA's `--ignore-daemonsets-utilization` for this group.
    pub ignore_daemonsets_utilization: Option<bool>,
}

/// The flags of `serve` and `check` (each falls back to an `AUTOSCALER_CLOUDIFY_*` environment
/// variable), declared once here and flattened into both commands (issue 24); an unset flag leaves
/// the file's value, so none has a clap default: the defaults in the help text are the
/// configuration's own (a unit test compares them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// gRPC listen address (CA connects here) [default: 0.0.0.0:8086]
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// HTTP listen address for /healthz, /readyz and /metrics [default: 0.0.0.0:8087]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_HTTP_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub http_listen: Option<String>,
    /// Server certificate of the gRPC port (PEM)
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Server key of the gRPC port (PEM)
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// CA that CA's client certificate must chain to (mTLS)
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// Allow plaintext gRPC (or TLS without a client CA) on a non-loopback address
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_INSECURE")]
    pub insecure: bool,
    /// Log format [default: text]
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter: a level, or target=level pairs ("info,autoscaler_cloudify=debug");
    /// RUST_LOG wins when set [default: info]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_LOG_LEVEL",
        value_name = "FILTER",
        value_parser = crate::observability::parse_log_filter
    )]
    pub log_level: Option<String>,
    /// Background refresh period, e.g. 10s or 1m30s [default: 10s]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_REFRESH_INTERVAL",
        value_name = "DURATION"
    )]
    pub refresh_interval: Option<String>,
    /// Leader election on a Kubernetes Lease; auto: when Kubernetes credentials are present
    /// [default: auto]
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LEADER_ELECT", value_enum)]
    pub leader_elect: Option<LeaseMode>,
    /// Name of the Lease [default: autoscaler-cloudify]
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LEASE_NAME", value_name = "NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease [default: POD_NAMESPACE, else the kubeconfig's namespace]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_LEASE_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub lease_namespace: Option<String>,
    /// Cloudify manager URL of the first `cloudify` entry (created when the file has none)
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_URL", value_name = "URL")]
    pub cloudify_url: Option<String>,
    /// Cloudify tenant of the first entry [default: default_tenant]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_TENANT",
        value_name = "TENANT"
    )]
    pub cloudify_tenant: Option<String>,
    /// Cloudify user of the first entry; the password comes from CLOUDIFY_PASSWORD or a file,
    /// never from a flag [default: admin]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_USERNAME",
        value_name = "USER"
    )]
    pub cloudify_username: Option<String>,
    /// Static node group <min>:<max>:<deployment>/<group>, CA's own convention (repeatable; the
    /// environment variable holds one); replaces node_groups.static
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_NODES",
        value_name = "MIN:MAX:DEPLOYMENT/GROUP"
    )]
    pub nodes: Vec<String>,
    /// Auto-discovery rule cloudify:label=<key>=<value>[,label=...] (repeatable; the environment
    /// variable holds one, since `,` already joins labels); replaces node_groups.auto_discovery
    #[arg(
        long = "node-group-auto-discovery",
        env = "AUTOSCALER_CLOUDIFY_NODE_GROUP_AUTO_DISCOVERY",
        value_name = "RULE"
    )]
    pub auto_discovery: Vec<String>,
    /// Run the node controller (initialize joining Nodes, remove Nodes whose VM is gone) when
    /// Kubernetes credentials are present [default: true]
    #[arg(
        long,
        env = "AUTOSCALER_CLOUDIFY_NODE_CONTROLLER",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub node_controller: Option<bool>,
}

impl Config {
    /// True when group ids carry the `<name>:` prefix (several managers/tenants configured).
    pub fn prefixed_ids(&self) -> bool {
        self.cloudify.len() > 1
    }
}
