//! Building the initial model from a scenario.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{
    Deployment, Model, Node, NodeInstance, PORT_HIERARCHY, PORT_TYPE, Runtime, SERVER_HIERARCHY,
    SERVER_TYPE, ScalingGroup, User, hostname_for, now_stamp,
};
use crate::error::SimError;
use crate::scenario::Scenario;

impl Model {
    /// Builds the initial state of a scenario (already validated).
    pub fn from_scenario(scenario: &Scenario) -> Result<Model, SimError> {
        scenario.validate()?;
        let rng = match scenario.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut model = Model {
            auth: scenario.auth,
            tenants: scenario.tenants.iter().cloned().collect(),
            users: BTreeMap::new(),
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
        };
        for u in &scenario.users {
            model.users.insert(
                u.username.to_lowercase(),
                User {
                    username: u.username.clone(),
                    password: u.password.clone(),
                    role: u.role.clone(),
                    tenants: u.tenants.iter().cloned().collect(),
                    failed_logins: 0,
                    last_failed_login: None,
                },
            );
        }
        let creator = scenario
            .users
            .first()
            .map(|u| u.username.clone())
            .unwrap_or_else(|| "admin".to_string());
        let created_at = now_stamp();
        for spec in &scenario.deployments {
            let tenant: Arc<str> = Arc::from(
                spec.tenant
                    .clone()
                    .unwrap_or_else(|| scenario.tenants[0].clone()),
            );
            let dep_id: Arc<str> = Arc::from(spec.id.as_str());
            let blueprint_id = spec.blueprint_id.clone().unwrap_or_else(|| spec.id.clone());
            let mut labels = Vec::new();
            for (k, v) in &spec.labels {
                for value in v.values() {
                    labels.push((k.to_lowercase(), value));
                }
            }
            let groups = spec
                .scaling_groups
                .iter()
                .map(|g| {
                    let current = i64::try_from(g.current).unwrap_or(i64::MAX);
                    ScalingGroup {
                        name: g.name.clone(),
                        members: vec![format!("{}_host", g.name), format!("{}_port", g.name)],
                        default_instances: g
                            .default
                            .map_or(current, |d| i64::try_from(d).unwrap_or(i64::MAX)),
                        min: g.min,
                        max: g.max,
                        current,
                        planned: current,
                        instances: BTreeMap::new(),
                        max_index: [0, 0],
                    }
                })
                .collect::<Vec<_>>();
            for g in &groups {
                let host = g.host_node();
                model.nodes.push(Node {
                    tenant: tenant.clone(),
                    deployment_id: dep_id.clone(),
                    blueprint_id: blueprint_id.clone(),
                    id: host.clone(),
                    type_name: SERVER_TYPE,
                    hierarchy: SERVER_HIERARCHY,
                    host_id: Some(host),
                    group: Some(g.name.clone()),
                    number_of_instances: 1,
                    created_by: creator.clone(),
                });
                model.nodes.push(Node {
                    tenant: tenant.clone(),
                    deployment_id: dep_id.clone(),
                    blueprint_id: blueprint_id.clone(),
                    id: g.port_node(),
                    type_name: PORT_TYPE,
                    hierarchy: PORT_HIERARCHY,
                    host_id: None,
                    group: Some(g.name.clone()),
                    number_of_instances: 1,
                    created_by: creator.clone(),
                });
            }
            if spec.standalone_vms > 0 {
                model.nodes.push(Node {
                    tenant: tenant.clone(),
                    deployment_id: dep_id.clone(),
                    blueprint_id: blueprint_id.clone(),
                    id: spec.standalone_node.clone(),
                    type_name: SERVER_TYPE,
                    hierarchy: SERVER_HIERARCHY,
                    host_id: Some(spec.standalone_node.clone()),
                    group: None,
                    number_of_instances: i64::try_from(spec.standalone_vms).unwrap_or(i64::MAX),
                    created_by: creator.clone(),
                });
            }
            model.deployments.push(Deployment {
                tenant: tenant.clone(),
                id: dep_id.clone(),
                blueprint_id,
                created_at: created_at.clone(),
                created_by: creator.clone(),
                labels,
                groups,
                modification: None,
                executions: Vec::new(),
            });
            let di = model.deployments.len() - 1;
            model
                .deployment_lookup
                .entry(tenant.to_string())
                .or_default()
                .insert(spec.id.clone(), di);
            let creator: Arc<str> = Arc::from(creator.as_str());
            for gi in 0..model.deployments[di].groups.len() {
                let count = model.deployments[di].groups[gi].current;
                let name = model.deployments[di].groups[gi].name.clone();
                for _ in 0..count {
                    let gid = model.add_group_instance(di, &name, &creator, "started")?;
                    model.set_started_runtime(di, &name, &gid);
                }
            }
            for index in 1..=spec.standalone_vms {
                let id = model.fresh_instance_id(&spec.standalone_node);
                let ip = model.next_ip();
                let hostname = hostname_for(&spec.id, &id);
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                model.insert_instance(NodeInstance {
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
        Ok(model)
    }
}
