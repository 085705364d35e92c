//! Scenarios: what a simulated manager holds when it starts (tenants, users, deployments,
//! scaling groups) and how fast its workflows run. The YAML form is documented in
//! `docs/simulator.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::SimError;

/// How long the `scale` workflow's steps take.
///
/// A scale-out walks every new instance through seven lifecycle states (`initializing` ...
/// `started`), a scale-in through four (`stopping` ... `deleted`); each state lasts `step_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Milliseconds between an execution becoming `pending` and `started`.
    pub execution_start_ms: u64,
    /// Milliseconds each lifecycle state an instance walks through lasts (all instances of a
    /// scale walk together, so a scale's duration does not grow with its delta).
    pub step_ms: u64,
}

impl Timing {
    /// No delays at all: executions still run asynchronously, but finish within a few
    /// scheduler ticks. For tests.
    pub fn instant() -> Timing {
        Timing {
            execution_start_ms: 0,
            step_ms: 0,
        }
    }

    /// The demo pace: a scale-out of any size completes in about 3 s, a scale-in in about 2 s.
    pub fn demo() -> Timing {
        Timing {
            execution_start_ms: 300,
            step_ms: 400,
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::demo()
    }
}

/// Account lockout policy (Cloudify's `failed_logins_before_account_lock` and
/// `account_lock_period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthPolicy {
    /// An account is locked once it has *more* failed logins than this (Cloudify's default: 4,
    /// so the 5th bad password locks it).
    pub failed_logins_before_account_lock: u32,
    /// Minutes a lock lasts after the last failed login; `-1` disables locking (as on a manager).
    pub account_lock_period_minutes: i64,
}

impl Default for AuthPolicy {
    fn default() -> AuthPolicy {
        AuthPolicy {
            failed_logins_before_account_lock: 4,
            account_lock_period_minutes: 30,
        }
    }
}

/// A user of the simulated manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Login name (matched case-insensitively, as Cloudify does).
    pub username: String,
    /// Password for basic auth.
    pub password: String,
    /// Tenants the user belongs to (a `sys_admin` may use every tenant anyway).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// System role: `sys_admin` or `default`.
    #[serde(default = "default_role")]
    pub role: String,
}

fn default_role() -> String {
    "sys_admin".to_string()
}

/// One or several values of a deployment label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelValues {
    /// `key: value`
    One(String),
    /// `key: [v1, v2]` (Cloudify allows a key to carry several values)
    Many(Vec<String>),
}

impl LabelValues {
    /// The values as a list.
    pub fn values(&self) -> Vec<String> {
        match self {
            LabelValues::One(v) => vec![v.clone()],
            LabelValues::Many(vs) => vs.clone(),
        }
    }
}

/// A scaling group of a deployment: each group instance is one compute VM plus one port (and
/// any `extra_vms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name (`workers`); its nodes are `<name>_host` and `<name>_port`.
    pub name: String,
    /// Further Compute members of every group instance, each its own VM without a port:
    /// `[storage]` adds node `<name>_storage`, listed after `<name>_host` and `<name>_port` in
    /// the group's `members` (a worker pool whose group instance holds two VMs, as
    /// tests/manager/blueprints/two-vm.yaml; issue 20). None by default.
    #[serde(default)]
    pub extra_vms: Vec<String>,
    /// `min_instances` (not enforced, as on a real manager).
    #[serde(default)]
    pub min: i64,
    /// `max_instances`; `-1` means UNBOUNDED (not enforced either).
    #[serde(default = "unbounded")]
    pub max: i64,
    /// Group instances present at start (`current_instances` = `planned_instances`).
    #[serde(default = "one")]
    pub current: u64,
    /// `default_instances`; defaults to `current`.
    #[serde(default)]
    pub default: Option<u64>,
}

fn unbounded() -> i64 {
    -1
}

fn one() -> u64 {
    1
}

/// A deployment of the simulated manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// The deployment's id, unique within its tenant; its VMs' hostnames (the Kubernetes node
    /// names) are `<id>-<VM instance id>`, lower-cased with `_` turned into `-`.
    pub id: String,
    /// Owning tenant; defaults to the first tenant of the scenario.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Blueprint id shown on the deployment; defaults to the deployment id.
    #[serde(default)]
    pub blueprint_id: Option<String>,
    /// Labels (keys are lower-cased, as Cloudify does).
    #[serde(default)]
    pub labels: BTreeMap<String, LabelValues>,
    /// The deployment's scaling groups (Cloudify `scaling_groups`), each scaled as one unit of
    /// a VM and a port; none by default.
    #[serde(default)]
    pub scaling_groups: Vec<GroupSpec>,
    /// Number of compute instances outside any scaling group (e.g. a control plane).
    #[serde(default)]
    pub standalone_vms: u64,
    /// Node name of those standalone VMs.
    #[serde(default = "default_standalone_node")]
    pub standalone_node: String,
}

fn default_standalone_node() -> String {
    "control_plane_host".to_string()
}

/// Everything a simulated manager starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How long executions take to start and each lifecycle step lasts; [`Timing::demo`] by
    /// default.
    #[serde(default)]
    pub timing: Timing,
    /// The manager's tenants; deployments that name none belong to the first. Default:
    /// `[default_tenant]`.
    #[serde(default = "default_tenants")]
    pub tenants: Vec<String>,
    /// The accounts that can log in. Default: `admin`/`admin`, `sys_admin`, in
    /// `default_tenant`.
    #[serde(default = "default_users")]
    pub users: Vec<UserSpec>,
    /// The deployments the manager holds at start, with their group instances `started`; none
    /// by default.
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// When failed logins lock an account; Cloudify's defaults (locked at the 5th bad password,
    /// for 30 minutes) if absent.
    #[serde(default)]
    pub auth: AuthPolicy,
    /// Seed for the simulator's randomness (ids, victims of unhinted scale-ins); random if unset.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Longest request line (`GET /api/v3.1/...?query HTTP/1.1`, without CRLF) accepted; a
    /// longer one is answered 414 with an HTML body, as a manager's gunicorn does past its
    /// `limit_request_line` of 4094 bytes (a client that lists many deployment ids in one
    /// query hits it). Unlimited when absent, the default.
    #[serde(default)]
    pub max_request_line: Option<usize>,
}

fn default_tenants() -> Vec<String> {
    vec!["default_tenant".to_string()]
}

fn default_users() -> Vec<UserSpec> {
    vec![UserSpec {
        username: "admin".to_string(),
        password: "admin".to_string(),
        tenants: default_tenants(),
        role: default_role(),
    }]
}

/// The deployment and group that `--instances N` resizes.
const DEMO_DEPLOYMENT: &str = "k8s-pool-a";
const DEMO_GROUP: &str = "workers";

impl Scenario {
    /// The built-in default (docs/simulator.md): two worker pools and a control plane, all labelled
    /// `k8s-cluster=demo`, user `admin`/`admin` in `default_tenant`, demo timing.
    pub fn default_demo() -> Scenario {
        let demo_labels = || {
            BTreeMap::from([(
                "k8s-cluster".to_string(),
                LabelValues::One("demo".to_string()),
            )])
        };
        let deployment = |id: &str, groups: Vec<GroupSpec>, standalone_vms: u64| DeploymentSpec {
            id: id.to_string(),
            tenant: Some("default_tenant".to_string()),
            blueprint_id: None,
            labels: demo_labels(),
            scaling_groups: groups,
            standalone_vms,
            standalone_node: default_standalone_node(),
        };
        let group = |name: &str, min: i64, max: i64, current: u64| GroupSpec {
            name: name.to_string(),
            extra_vms: Vec::new(),
            min,
            max,
            current,
            default: None,
        };
        Scenario {
            timing: Timing::demo(),
            tenants: default_tenants(),
            users: default_users(),
            deployments: vec![
                deployment("k8s-pool-a", vec![group("workers", 1, 10, 2)], 0),
                deployment("k8s-pool-b", vec![group("gpu-workers", 0, 4, 0)], 0),
                deployment("k8s-control-plane", vec![], 1),
            ],
            auth: AuthPolicy::default(),
            seed: None,
            max_request_line: None,
        }
    }

    /// Parses a scenario from YAML text and validates it.
    pub fn from_yaml_str(text: &str) -> Result<Scenario, SimError> {
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(SimError::ScenarioParse)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Scenario, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ScenarioRead {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_yaml_str(&text)
    }

    /// Sets `k8s-pool-a/workers` (or, if the scenario has no such group, the first scaling
    /// group it has) to `n` instances, raising its max to at least `n`.
    pub fn with_instances(mut self, n: u64) -> Scenario {
        let wanted = self.deployments.iter().position(|d| {
            d.id == DEMO_DEPLOYMENT && d.scaling_groups.iter().any(|g| g.name == DEMO_GROUP)
        });
        let target = wanted
            .and_then(|di| {
                let gi = self.deployments[di]
                    .scaling_groups
                    .iter()
                    .position(|g| g.name == DEMO_GROUP)?;
                Some((di, gi))
            })
            .or_else(|| {
                self.deployments
                    .iter()
                    .enumerate()
                    .find(|(_, d)| !d.scaling_groups.is_empty())
                    .map(|(di, _)| (di, 0))
            });
        if let Some((di, gi)) = target {
            let group = &mut self.deployments[di].scaling_groups[gi];
            group.current = n;
            let n_signed = i64::try_from(n).unwrap_or(i64::MAX);
            if group.max != -1 && group.max < n_signed {
                group.max = n_signed;
            }
        }
        self
    }

    /// Replaces the workflow pace.
    pub fn with_timing(mut self, timing: Timing) -> Scenario {
        self.timing = timing;
        self
    }

    /// Fixes the random seed (reproducible ids and victim choices).
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = Some(seed);
        self
    }

    /// Total node instances this scenario starts with (two per group instance, one per
    /// standalone VM).
    pub fn node_instance_count(&self) -> u64 {
        self.deployments
            .iter()
            .map(|d| {
                d.standalone_vms
                    + d.scaling_groups
                        .iter()
                        .map(|g| {
                            let members = 2 + u64::try_from(g.extra_vms.len()).unwrap_or(0);
                            g.current.saturating_mul(members)
                        })
                        .sum::<u64>()
            })
            .sum()
    }

    /// Checks references and bounds; the errors name what is wrong.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::ScenarioInvalid(msg));
        if self.tenants.is_empty() {
            return invalid("at least one tenant is required".into());
        }
        let tenants: BTreeSet<&str> = self.tenants.iter().map(String::as_str).collect();
        if tenants.len() != self.tenants.len() {
            return invalid("duplicate tenant names".into());
        }
        let mut usernames = BTreeSet::new();
        for user in &self.users {
            if !usernames.insert(user.username.to_lowercase()) {
                return invalid(format!("duplicate user {}", user.username));
            }
            if let Some(t) = user.tenants.iter().find(|t| !tenants.contains(t.as_str())) {
                return invalid(format!("user {} names unknown tenant {t}", user.username));
            }
            if user.role != "sys_admin" && user.role != "default" {
                return invalid(format!(
                    "user {}: role must be sys_admin or default",
                    user.username
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for d in &self.deployments {
            let tenant = d.tenant.as_deref().unwrap_or(&self.tenants[0]);
            if !tenants.contains(tenant) {
                return invalid(format!("deployment {} names unknown tenant {tenant}", d.id));
            }
            if d.id.is_empty() || !ids.insert((tenant.to_string(), d.id.clone())) {
                return invalid(format!("empty or duplicate deployment id {:?}", d.id));
            }
            let mut names = BTreeSet::new();
            for g in &d.scaling_groups {
                if g.name.is_empty() || !names.insert(g.name.as_str()) {
                    return invalid(format!("deployment {}: duplicate group {:?}", d.id, g.name));
                }
                let mut members = BTreeSet::from(["host", "port"]);
                for v in &g.extra_vms {
                    let valid = !v.is_empty()
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if !valid || !members.insert(v.as_str()) {
                        return invalid(format!(
                            "deployment {} group {}: extra_vms entry {v:?} must be a unique \
                             name of [A-Za-z0-9_-], not host or port",
                            d.id, g.name
                        ));
                    }
                }
                if g.min < 0 || g.max < -1 || (g.max != -1 && g.min > g.max) {
                    return invalid(format!(
                        "deployment {} group {}: need 0 <= min <= max (max -1 = unbounded)",
                        d.id, g.name
                    ));
                }
            }
            if d.standalone_vms > 0
                && d.scaling_groups.iter().any(|g| {
                    d.standalone_node == format!("{}_host", g.name)
                        || g.extra_vms
                            .iter()
                            .any(|v| d.standalone_node == format!("{}_{v}", g.name))
                })
            {
                return invalid(format!(
                    "deployment {}: standalone_node clashes with a group node",
                    d.id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_demo_is_valid_and_matches_the_plan() {
        let s = Scenario::default_demo();
        s.validate().expect("valid");
        assert_eq!(s.deployments.len(), 3);
        assert_eq!(s.deployments[0].scaling_groups[0].current, 2);
        assert_eq!(s.node_instance_count(), 2 * 2 + 1);
    }

    #[test]
    fn extra_vms_must_be_unique_names_other_than_host_and_port() {
        for bad in ["[port]", "[s, s]", "[\"\"]", "[\"a b\"]"] {
            let text = format!(
                "deployments: [{{id: a, scaling_groups: [{{name: w, extra_vms: {bad}}}]}}]"
            );
            let err = Scenario::from_yaml_str(&text).expect_err(bad).to_string();
            assert!(err.contains("extra_vms entry"), "{bad}: {err}");
        }
        let clash = "deployments: [{id: a, scaling_groups: [{name: w, extra_vms: [s]}], \
                     standalone_vms: 1, standalone_node: w_s}]";
        assert!(Scenario::from_yaml_str(clash).is_err());
    }

    #[test]
    fn with_instances_raises_max() {
        let s = Scenario::default_demo().with_instances(5000);
        let g = &s.deployments[0].scaling_groups[0];
        assert_eq!((g.current, g.max), (5000, 5000));
        let s = Scenario::default_demo().with_instances(3);
        let g = &s.deployments[0].scaling_groups[0];
        assert_eq!((g.current, g.max), (3, 10));
    }

    #[test]
    fn yaml_from_the_plan_parses() {
        let text = r#"
timing: {execution_start_ms: 200, step_ms: 250}
tenants: [default_tenant]
users: [{username: admin, password: admin, tenants: [default_tenant]}]
deployments:
  - id: k8s-pool-a
    tenant: default_tenant
    labels: {k8s-cluster: demo}
    scaling_groups: [{name: workers, min: 1, max: 10, current: 2}]
  - id: k8s-control-plane
    labels: {k8s-cluster: demo}
    standalone_vms: 1
"#;
        let s = Scenario::from_yaml_str(text).expect("parses");
        assert_eq!(s.timing.step_ms, 250);
        assert_eq!(s.deployments[1].standalone_vms, 1);
    }

    #[test]
    fn unknown_tenant_is_rejected() {
        let text = "deployments: [{id: a, tenant: nope}]";
        assert!(matches!(
            Scenario::from_yaml_str(text),
            Err(SimError::ScenarioInvalid(_))
        ));
        assert!(matches!(
            Scenario::from_yaml_str("bogus_key: 1"),
            Err(SimError::ScenarioParse(_))
        ));
    }

    #[test]
    fn each_invalid_scenario_is_refused_with_what_is_wrong() {
        for (yaml, message) in [
            ("tenants: []\nusers: []", "at least one tenant is required"),
            ("tenants: [a, a]\nusers: []", "duplicate tenant names"),
            (
                "users: [{username: Al, password: x}, {username: al, password: y}]",
                "duplicate user al",
            ),
            (
                "users: [{username: al, password: x, tenants: [nope]}]",
                "user al names unknown tenant nope",
            ),
            (
                "users: [{username: al, password: x, role: root}]",
                "user al: role must be sys_admin or default",
            ),
            (
                "deployments: [{id: a, tenant: nope}]",
                "deployment a names unknown tenant nope",
            ),
            (
                "deployments: [{id: ''}]",
                "empty or duplicate deployment id \"\"",
            ),
            (
                "deployments: [{id: a}, {id: a}]",
                "empty or duplicate deployment id \"a\"",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: w}, {name: w}]}]",
                "deployment a: duplicate group \"w\"",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: ''}]}]",
                "deployment a: duplicate group \"\"",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: w, min: -1}]}]",
                "deployment a group w: need 0 <= min <= max (max -1 = unbounded)",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: w, min: 3, max: 2}]}]",
                "deployment a group w: need 0 <= min <= max (max -1 = unbounded)",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: w, max: -2}]}]",
                "deployment a group w: need 0 <= min <= max (max -1 = unbounded)",
            ),
            (
                "deployments: [{id: a, scaling_groups: [{name: w}], standalone_vms: 1, \
                 standalone_node: w_host}]",
                "deployment a: standalone_node clashes with a group node",
            ),
        ] {
            match Scenario::from_yaml_str(yaml) {
                Err(SimError::ScenarioInvalid(got)) => assert_eq!(got, message, "{yaml}"),
                other => panic!("{yaml}: unexpected {other:?}"),
            }
        }
        // The same id in two tenants, a standalone node named like a group's node but with no
        // standalone VMs, and an unbounded group with a min: all fine.
        Scenario::from_yaml_str(
            "tenants: [t1, t2]
users: []
deployments:
  - {id: a, tenant: t1, scaling_groups: [{name: w, min: 5}], standalone_node: w_host}
  - {id: a, tenant: t2}",
        )
        .expect("valid");
    }
}
