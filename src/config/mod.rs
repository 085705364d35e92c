//! Configuration: a YAML file (PLAN.md Contract 2), overridden by command-line flags (which fall
//! back to `AUTOSCALER_CLOUDIFY_*` environment variables through clap), validated once at start.
//! Secrets come only from environment variables or files, read through the [`Env`] trait so tests
//! feed a map instead of mutating the process environment.
//!
//! Every validation error names the key and says what is wrong, e.g.
//! `node_groups.groups."a/b".options.scale_down_unneeded_time: invalid duration "2x"`.

mod groups;
mod provider_id;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use provider_id::{DEFAULT_PROVIDER_ID_TEMPLATE, ProviderIdParts, ProviderIdTemplate, Segment};
pub use validate::key_path;

use crate::cloudify::ClientSettings;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{path}: {key}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in the document.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `refresh.interval`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Source of environment variables (the process environment, or a map in tests).
pub trait Env {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// mTLS files; `None` = plaintext (loopback or `insecure` only).
    pub tls: Option<TlsFiles>,
    /// Allow plaintext on a non-loopback address.
    pub insecure: bool,
    /// Plain HTTP listen address for /healthz, /readyz, /metrics.
    pub http_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level / filter directive.
    pub log_level: String,
    /// Background refresh period.
    pub refresh_interval: Duration,
    /// The Refresh RPC refreshes when the snapshot is older than this.
    pub refresh_max_age: Duration,
    /// One entry per manager/tenant.
    pub cloudify: Vec<ClientSettings>,
    /// Node group selection and per-group settings.
    pub node_groups: NodeGroupsConfig,
    /// Label whose value names a node's GPU type.
    pub gpu_label: String,
    /// Leader election on a Kubernetes Lease (several replicas).
    pub lease: LeaseConfig,
}

/// Whether to elect a leader on a Kubernetes Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseMode {
    /// When Kubernetes credentials are present (in-cluster or a kubeconfig); otherwise a sole
    /// replica, as `demo` and tests run.
    Auto,
    /// Always; no credentials is a start-up error.
    On,
    /// Never: this process is the only replica and always mutates.
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
        }
    }
}

/// A statically configured group (`--nodes=<min>:<max>:<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticGroup {
    /// Index of the cloudify entry.
    pub source: usize,
    /// Deployment id.
    pub deployment: String,
    /// Scaling group name.
    pub group: String,
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
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
    /// Max used when Cloudify says `max_instances: -1`.
    pub unbounded_max: i32,
    /// Settings applied to every group.
    pub defaults: GroupSettings,
    /// Per-group settings by group id.
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
                price_per_hour: g.price_per_hour.or(self.defaults.price_per_hour),
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
    /// Minimum size override.
    pub min: Option<i32>,
    /// Maximum size override.
    pub max: Option<i32>,
    /// Provider-id template.
    pub provider_id_template: Option<ProviderIdTemplate>,
    /// Runtime property holding the Kubernetes node name.
    pub node_name_property: Option<String>,
    /// Hourly price of one node.
    pub price_per_hour: Option<f64>,
    /// Template node for scale-from-zero.
    pub template: Option<TemplateSpec>,
    /// Autoscaling options overrides.
    pub options: Option<OptionsSpec>,
}

/// A taint of the template node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintSpec {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// The template node of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateSpec {
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<TaintSpec>,
    /// Capacity (Kubernetes quantities as text).
    pub capacity: BTreeMap<String, String>,
    /// Allocatable; missing keys default to capacity.
    pub allocatable: BTreeMap<String, String>,
}

/// Autoscaling option overrides; unset fields keep CA's defaults from the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionsSpec {
    /// Scale-down utilization threshold.
    pub scale_down_utilization_threshold: Option<f64>,
    /// Scale-down GPU utilization threshold.
    pub scale_down_gpu_utilization_threshold: Option<f64>,
    /// Scale-down unneeded time.
    pub scale_down_unneeded_time: Option<Duration>,
    /// Scale-down unready time.
    pub scale_down_unready_time: Option<Duration>,
    /// Max node provision time.
    pub max_node_provision_time: Option<Duration>,
    /// Zero-or-max scaling.
    pub zero_or_max_node_scaling: Option<bool>,
    /// Ignore DaemonSet utilization.
    pub ignore_daemonsets_utilization: Option<bool>,
}

/// Values given on the command line (or their env fallbacks); they override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<String>,
    /// `--tls-key`.
    pub tls_key: Option<String>,
    /// `--tls-client-ca`.
    pub tls_client_ca: Option<String>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--refresh-interval`.
    pub refresh_interval: Option<String>,
    /// `--leader-elect` (`auto`, `true`, `false`).
    pub leader_elect: Option<String>,
    /// `--lease-name`.
    pub lease_name: Option<String>,
    /// `--lease-namespace`.
    pub lease_namespace: Option<String>,
    /// `--cloudify-url` (first entry).
    pub cloudify_url: Option<String>,
    /// `--cloudify-tenant` (first entry).
    pub cloudify_tenant: Option<String>,
    /// `--cloudify-username` (first entry).
    pub cloudify_username: Option<String>,
    /// `--nodes` (replace the file's list when given).
    pub nodes: Vec<String>,
    /// `--node-group-auto-discovery` (replace the file's list when given).
    pub auto_discovery: Vec<String>,
}

impl Config {
    /// Reads the optional file, applies the overrides and validates everything.
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                validate::parse_yaml(&text, path)?
            }
            None => raw::RawConfig::default(),
        };
        validate::build(raw, overrides, env)
    }

    /// Validates YAML text (used by tests and `demo`).
    pub fn from_yaml(
        text: &str,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let raw = validate::parse_yaml(text, Path::new("<inline>"))?;
        validate::build(raw, overrides, env)
    }

    /// True when group ids carry the `<name>:` prefix (several managers/tenants configured).
    pub fn prefixed_ids(&self) -> bool {
        self.cloudify.len() > 1
    }
}
