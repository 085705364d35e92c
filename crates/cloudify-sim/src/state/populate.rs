//! Building the initial model from a scenario: tenants and user accounts, then per deployment
//! its record (labels, scaling groups), its nodes, and its `started` node instances.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{
    Deployment, Model, Node, NodeInstance, PORT_HIERARCHY, PORT_TYPE, Runtime, SERVER_HIERARCHY,
    SERVER_TYPE, ScalingGroup, User, hostname_for, now_stamp,
};
use crate::error::SimError;
use crate::scenario::{DeploymentSpec, GroupSpec, LabelValues, Scenario, UserSpec};

impl Model {
    /// Builds the initial state of a scenario. The scenario is validated first (a hand-built
    /// one may not have been), so a bad one fails with [`SimError::ScenarioInvalid`] naming
    /// what is wrong.
    pub fn from_scenario(scenario: &Scenario) -> Result<Model, SimError> {
        scenario.validate()?;
        let mut model = Model::without_deployments(scenario);
        let creator = scenario_creator(scenario);
        let created_at = now_stamp();
        // In scenario order: with a seed, every id and IP depends on it.
        for spec in &scenario.deployments {
            let deployment = deployment_record(scenario, spec, &creator, &created_at);
            model.nodes.extend(deployment_nodes(&deployment, spec));
            model.add_deployment(deployment);
            let di = model.deployments.len() - 1;
            let creator: Arc<str> = Arc::from(creator.as_str());
            model.add_started_group_instances(di, &creator)?;
            model.add_standalone_vms(di, spec, &creator);
        }
        Ok(model)
    }

    /// The scenario's tenants, users and lockout policy, with no deployment yet; the id index
    /// is sized for every node instance the scenario will add.
    fn without_deployments(scenario: &Scenario) -> Model {
        let rng = match scenario.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Model {
            auth: scenario.auth,
            tenants: scenario.tenants.iter().cloned().collect(),
            users: user_accounts(&scenario.users),
            tokens: Vec::new(),
            deployments: Vec::new(),
            deployment_lookup: HashMap::new(),
            nodes: Vec::new(),
            instances: BTreeMap::new(),
            instance_keys: HashMap::with_capacity(
                usize::try_from(scenario.node_instance_count()).unwrap_or(0),
            ),
            instances_by_deployment: HashMap::new(),
            instances_by_tenant: HashMap::new(),
            next_key: 0,
            executions: Vec::new(),
            execution_index: HashMap::new(),
            modifications: Vec::new(),
            runners: HashSet::new(),
            rng,
            ip_counter: 0,
        }
    }

    /// Stores a deployment and indexes it under its tenant.
    fn add_deployment(&mut self, deployment: Deployment) {
        let (tenant, id) = (deployment.tenant.to_string(), deployment.id.to_string());
        self.deployments.push(deployment);
        let di = self.deployments.len() - 1;
        self.deployment_lookup
            .entry(tenant)
            .or_default()
            .insert(id, di);
    }

    /// Inserts every scaling group's `current` group instances, `started` with their runtime
    /// properties filled, as if a scale had already brought them up.
    fn add_started_group_instances(
        &mut self,
        di: usize,
        creator: &Arc<str>,
    ) -> Result<(), SimError> {
        for gi in 0..self.deployments[di].groups.len() {
            let count = self.deployments[di].groups[gi].current;
            let name = self.deployments[di].groups[gi].name.clone();
            for _ in 0..count {
                let gid = self.add_group_instance(di, &name, creator, "started")?;
                self.set_started_runtime(di, &name, &gid);
            }
        }
        Ok(())
    }

    /// Inserts the deployment's `standalone_vms` instances of its standalone node, `started`,
    /// indexed from 1, outside any group.
    fn add_standalone_vms(&mut self, di: usize, spec: &DeploymentSpec, creator: &Arc<str>) {
        let (tenant, dep_id) = {
            let d = &self.deployments[di];
            (d.tenant.clone(), d.id.clone())
        };
        for index in 1..=spec.standalone_vms {
            let id = self.fresh_instance_id(&spec.standalone_node);
            let ip = self.next_ip();
            let hostname = hostname_for(&spec.id, &id);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.insert_instance(NodeInstance {
                id: id.clone(),
                node_id: Arc::from(spec.standalone_node.as_str()),
                deployment_id: dep_id.clone(),
                tenant: tenant.clone(),
                host_id: Some(id),
                state: "started",
                runtime: Runtime::Vm {
                    external_id: uuid::Uuid::new_v4().to_string(),
                    ip,
                    hostname,
                },
                group: None,
                index,
                version: 1,
                relationships: Vec::new(),
                created_by: creator.clone(),
                ip,
            });
        }
    }
}

/// User accounts keyed by lower-cased username (logins match case-insensitively), with no
/// failed logins yet.
fn user_accounts(users: &[UserSpec]) -> BTreeMap<String, User> {
    users
        .iter()
        .map(|u| {
            let account = User {
                username: u.username.clone(),
                password: u.password.clone(),
                role: u.role.clone(),
                tenants: u.tenants.iter().cloned().collect(),
                failed_logins: 0,
                last_failed_login: None,
            };
            (u.username.to_lowercase(), account)
        })
        .collect()
}

/// `created_by` of everything the scenario starts with: its first user, `admin` if it has none.
fn scenario_creator(scenario: &Scenario) -> String {
    scenario
        .users
        .first()
        .map(|u| u.username.clone())
        .unwrap_or_else(|| "admin".to_string())
}

/// A deployment as the scenario describes it: its tenant (the scenario's first by default),
/// blueprint (the deployment id by default), labels and scaling groups, no executions yet.
fn deployment_record(
    scenario: &Scenario,
    spec: &DeploymentSpec,
    creator: &str,
    created_at: &str,
) -> Deployment {
    let tenant = spec
        .tenant
        .clone()
        .unwrap_or_else(|| scenario.tenants[0].clone());
    Deployment {
        tenant: Arc::from(tenant),
        id: Arc::from(spec.id.as_str()),
        blueprint_id: spec.blueprint_id.clone().unwrap_or_else(|| spec.id.clone()),
        created_at: created_at.to_string(),
        created_by: creator.to_string(),
        labels: deployment_labels(&spec.labels),
        groups: spec.scaling_groups.iter().map(scaling_group).collect(),
        modification: None,
        executions: Vec::new(),
    }
}

/// One `(key, value)` per label value, keys lower-cased as Cloudify stores them.
fn deployment_labels(labels: &BTreeMap<String, LabelValues>) -> Vec<(String, String)> {
    labels
        .iter()
        .flat_map(|(k, v)| {
            v.values()
                .into_iter()
                .map(move |value| (k.to_lowercase(), value))
        })
        .collect()
}

/// A scaling group with no group instances yet: `current` and `planned` are the scenario's
/// `current`, `default_instances` defaults to it.
fn scaling_group(spec: &GroupSpec) -> ScalingGroup {
    let current = i64::try_from(spec.current).unwrap_or(i64::MAX);
    let mut group = ScalingGroup {
        name: spec.name.clone(),
        members: Vec::new(),
        default_instances: spec
            .default
            .map_or(current, |d| i64::try_from(d).unwrap_or(i64::MAX)),
        min: spec.min,
        max: spec.max,
        current,
        planned: current,
        instances: BTreeMap::new(),
        max_index: vec![0; 2 + spec.extra_vms.len()],
        extra_vms: spec.extra_vms.clone(),
    };
    group.members = group.member_nodes();
    group
}

/// The deployment's nodes: a VM node (its own host) and a port node per scaling group, one
/// instance per group instance; then the standalone VM node, if it has standalone VMs.
fn deployment_nodes(deployment: &Deployment, spec: &DeploymentSpec) -> Vec<Node> {
    let node = |id: String, server: bool, group: Option<String>, number_of_instances: i64| Node {
        tenant: deployment.tenant.clone(),
        deployment_id: deployment.id.clone(),
        blueprint_id: deployment.blueprint_id.clone(),
        host_id: server.then(|| id.clone()),
        id,
        type_name: if server { SERVER_TYPE } else { PORT_TYPE },
        hierarchy: if server {
            SERVER_HIERARCHY
        } else {
            PORT_HIERARCHY
        },
        group,
        number_of_instances,
        created_by: deployment.created_by.clone(),
    };
    let mut nodes = Vec::new();
    for g in &deployment.groups {
        nodes.push(node(g.host_node(), true, Some(g.name.clone()), 1));
        nodes.push(node(g.port_node(), false, Some(g.name.clone()), 1));
        for extra in g.member_nodes().into_iter().skip(2) {
            nodes.push(node(extra, true, Some(g.name.clone()), 1));
        }
    }
    if spec.standalone_vms > 0 {
        let count = i64::try_from(spec.standalone_vms).unwrap_or(i64::MAX);
        nodes.push(node(spec.standalone_node.clone(), true, None, count));
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        Scenario::from_yaml_str(yaml).expect("scenario")
    }

    #[test]
    fn accounts_are_keyed_by_lower_cased_username_with_no_failed_logins() {
        let s = scenario(
            "tenants: [t1, t2]
users:
  - {username: Bob, password: x, tenants: [t2, t1]}
  - {username: al, password: y, role: default}",
        );
        let users = user_accounts(&s.users);
        assert_eq!(users.keys().collect::<Vec<_>>(), ["al", "bob"]);
        let bob = &users["bob"];
        assert_eq!(
            (bob.username.as_str(), bob.role.as_str()),
            ("Bob", "sys_admin")
        );
        assert_eq!(bob.tenants.iter().collect::<Vec<_>>(), ["t1", "t2"]);
        assert_eq!((bob.failed_logins, bob.last_failed_login), (0, None));
        assert_eq!(users["al"].role, "default");
        assert_eq!(scenario_creator(&s), "Bob");
        assert_eq!(scenario_creator(&scenario("users: []")), "admin");
    }

    #[test]
    fn a_deployment_defaults_to_the_first_tenant_and_its_own_id_as_blueprint() {
        let s = scenario(
            "tenants: [t1, t2]
users: [{username: bob, password: x}]
deployments:
  - {id: a}
  - {id: b, tenant: t2, blueprint_id: bp}",
        );
        let a = deployment_record(&s, &s.deployments[0], "bob", "2024-01-01T00:00:00.000Z");
        assert_eq!(
            (&*a.tenant, &*a.id, a.blueprint_id.as_str()),
            ("t1", "a", "a")
        );
        assert_eq!(
            (a.created_by.as_str(), a.created_at.as_str()),
            ("bob", "2024-01-01T00:00:00.000Z")
        );
        assert!(a.groups.is_empty() && a.executions.is_empty() && a.modification.is_none());
        let b = deployment_record(&s, &s.deployments[1], "bob", "");
        assert_eq!((&*b.tenant, b.blueprint_id.as_str()), ("t2", "bp"));
    }

    #[test]
    fn labels_become_one_pair_per_value_with_lower_cased_keys() {
        let s = scenario("deployments: [{id: a, labels: {Zone: [b, a], env: prod}}]");
        assert_eq!(
            deployment_labels(&s.deployments[0].labels),
            [
                ("zone".to_string(), "b".to_string()),
                ("zone".to_string(), "a".to_string()),
                ("env".to_string(), "prod".to_string()),
            ]
        );
    }

    #[test]
    fn a_group_starts_planned_at_current_with_default_instances_defaulting_to_current() {
        let s = scenario(
            "deployments:
  - id: a
    scaling_groups:
      - {name: w, current: 3}
      - {name: x, min: 1, max: 9, current: 2, default: 4}",
        );
        let groups = &s.deployments[0].scaling_groups;
        let w = scaling_group(&groups[0]);
        assert_eq!(w.members, ["w_host", "w_port"]);
        assert_eq!(
            (w.min, w.max, w.current, w.planned, w.default_instances),
            (0, -1, 3, 3, 3)
        );
        assert!(w.instances.is_empty());
        let x = scaling_group(&groups[1]);
        assert_eq!(
            (x.min, x.max, x.current, x.planned, x.default_instances),
            (1, 9, 2, 2, 4)
        );
    }

    #[test]
    fn each_group_has_a_vm_node_and_a_port_node_and_standalone_vms_share_one_node() {
        let s = scenario(
            "deployments:
  - {id: a, blueprint_id: bp, scaling_groups: [{name: w}], standalone_vms: 3, standalone_node: cp}
  - {id: b, scaling_groups: [{name: w}]}",
        );
        let d = deployment_record(&s, &s.deployments[0], "admin", "");
        let nodes = deployment_nodes(&d, &s.deployments[0]);
        let summary: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.id.as_str(),
                    n.type_name,
                    n.host_id.as_deref(),
                    n.group.as_deref(),
                    n.number_of_instances,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("w_host", SERVER_TYPE, Some("w_host"), Some("w"), 1),
                ("w_port", PORT_TYPE, None, Some("w"), 1),
                ("cp", SERVER_TYPE, Some("cp"), None, 3),
            ]
        );
        assert_eq!(nodes[1].hierarchy, PORT_HIERARCHY);
        assert!(
            nodes
                .iter()
                .all(|n| n.blueprint_id == "bp" && &*n.deployment_id == "a")
        );
        let d = deployment_record(&s, &s.deployments[1], "admin", "");
        assert_eq!(
            deployment_nodes(&d, &s.deployments[1]).len(),
            2,
            "no standalone node"
        );
    }

    #[test]
    fn group_instances_start_started_as_a_vm_connected_to_a_port() {
        let model = Model::from_scenario(&scenario(
            "deployments: [{id: a, scaling_groups: [{name: w, current: 2}]}]",
        ))
        .expect("model");
        let group = model.deployments[0].group("w").expect("group");
        assert_eq!(group.instances.len(), 2);
        assert_eq!(group.max_index, [2, 2]);
        let mut vm_indexes = Vec::new();
        for (gid, keys) in &group.instances {
            let [vm, port] = [&model.instances[&keys[0]], &model.instances[&keys[1]]];
            assert_eq!((&*vm.node_id, &*port.node_id), ("w_host", "w_port"));
            assert_eq!((vm.state, port.state), ("started", "started"));
            assert_eq!(vm.group, Some((Arc::from("w"), gid.clone())));
            assert_eq!(
                vm.relationships,
                [(
                    "cloudify.openstack.server_connected_to_port",
                    "w_port".to_string(),
                    port.id.clone()
                )]
            );
            assert!(matches!(&vm.runtime, Runtime::Vm { hostname, .. }
                if *hostname == hostname_for("a", &vm.id)));
            assert!(matches!(port.runtime, Runtime::Port { ip, .. } if ip == vm.ip));
            vm_indexes.push(vm.index);
        }
        vm_indexes.sort_unstable();
        assert_eq!(vm_indexes, [1, 2]);
    }

    #[test]
    fn extra_vms_are_compute_members_of_every_group_instance_after_the_port() {
        let s = scenario(
            "deployments: [{id: a, scaling_groups: [{name: w, current: 2, extra_vms: [storage]}]}]",
        );
        assert_eq!(s.node_instance_count(), 6);
        let model = Model::from_scenario(&s).expect("model");
        let group = model.deployments[0].group("w").expect("group");
        assert_eq!(group.members, ["w_host", "w_port", "w_storage"]);
        assert_eq!(group.max_index, [2, 2, 2]);
        let storage = model
            .nodes
            .iter()
            .find(|n| n.id == "w_storage")
            .expect("node");
        assert_eq!(
            (storage.type_name, storage.host_id.as_deref()),
            (SERVER_TYPE, Some("w_storage"))
        );
        for (gid, keys) in &group.instances {
            let nodes: Vec<&str> = keys.iter().map(|k| &*model.instances[k].node_id).collect();
            assert_eq!(nodes, ["w_host", "w_port", "w_storage"]);
            let extra = &model.instances[&keys[2]];
            assert_eq!(extra.group, Some((Arc::from("w"), gid.clone())));
            assert_eq!(extra.host_id.as_deref(), Some(extra.id.as_str()));
            assert!(extra.relationships.is_empty(), "no port of its own");
            assert!(matches!(&extra.runtime, Runtime::Vm { hostname, ip, .. }
                if *hostname == hostname_for("a", &extra.id) && *ip != model.instances[&keys[0]].ip));
        }
    }

    #[test]
    fn standalone_vms_are_started_outside_any_group_indexed_from_one() {
        let model = Model::from_scenario(&scenario("deployments: [{id: cp, standalone_vms: 2}]"))
            .expect("model");
        let vms: Vec<&NodeInstance> = model.instances.values().collect();
        assert_eq!(vms.iter().map(|i| i.index).collect::<Vec<_>>(), [1, 2]);
        for vm in vms {
            assert_eq!(
                (&*vm.node_id, vm.state, &vm.group),
                ("control_plane_host", "started", &None)
            );
            assert_eq!(vm.host_id.as_deref(), Some(vm.id.as_str()));
            assert!(matches!(&vm.runtime, Runtime::Vm { hostname, ip, .. }
                if *hostname == hostname_for("cp", &vm.id) && *ip == vm.ip));
        }
    }

    #[test]
    fn the_same_id_in_two_tenants_is_two_deployments() {
        let model = Model::from_scenario(&scenario(
            "tenants: [t1, t2]
users: [{username: bob, password: x}]
deployments: [{id: a, scaling_groups: [{name: w}]}, {id: a, tenant: t2, scaling_groups: [{name: w}]}]",
        ))
        .expect("model");
        assert_eq!(model.deployment_index("t1", "a"), Some(0));
        assert_eq!(model.deployment_index("t2", "a"), Some(1));
        assert_eq!(model.instance_candidates("t2", None).len(), 2);
        assert_eq!(model.nodes.len(), 4);
    }

    #[test]
    fn a_seed_makes_every_id_reproducible() {
        let s = scenario(
            "seed: 3\ndeployments: [{id: a, scaling_groups: [{name: w, current: 4}], standalone_vms: 1}]",
        );
        let ids = |m: Model| {
            m.instances
                .into_values()
                .map(|i| (i.id, i.ip))
                .collect::<Vec<_>>()
        };
        let first = ids(Model::from_scenario(&s).expect("model"));
        assert_eq!(first.len(), 9);
        assert_eq!(first, ids(Model::from_scenario(&s).expect("model")));
    }

    #[test]
    fn a_hand_built_invalid_scenario_is_refused_with_what_is_wrong() {
        let mut s = Scenario::default_demo();
        s.deployments[1].tenant = Some("nope".into());
        match Model::from_scenario(&s) {
            Err(SimError::ScenarioInvalid(message)) => {
                assert_eq!(message, "deployment k8s-pool-b names unknown tenant nope")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
