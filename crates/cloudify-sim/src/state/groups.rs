//! Group instances: inserting a VM + port pair, walking their states, filling runtime
//! properties, removing them.

use std::sync::Arc;

use super::{Model, NodeInstance, Runtime, hostname_for};
use crate::error::SimError;

/// Which members of a group instance a state change applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Members {
    /// Every member.
    All,
    /// The VMs (instances whose `host_id` is themselves).
    Vms,
    /// Every member but the VMs (the ports).
    Others,
}

impl Model {
    /// Recomputes the highest indexes of a group (after removals took the top one).
    fn refresh_max_index(&mut self, di: usize, group: &str) {
        let Some(g) = self.deployments[di].group(group) else {
            return;
        };
        let mut max = [0u32; 2];
        for keys in g.instances.values() {
            for (slot, key) in keys.iter().take(2).enumerate() {
                if let Some(inst) = self.instances.get(key) {
                    max[slot] = max[slot].max(inst.index);
                }
            }
        }
        if let Some(g) = self.deployments[di].group_mut(group) {
            g.max_index = max;
        }
    }

    /// Inserts one group instance (a port and a VM connected to it) in `state`, with empty
    /// runtime properties; returns the group-instance id.
    pub fn add_group_instance(
        &mut self,
        di: usize,
        group: &str,
        creator: &Arc<str>,
        state: &'static str,
    ) -> Result<String, SimError> {
        let (tenant, dep_id) = {
            let d = &self.deployments[di];
            (d.tenant.clone(), d.id.clone())
        };
        // Group-instance ids are `<group>_<6>`: unique within the group (node-instance ids carry
        // the longer `<group>_host_` / `<group>_port_` prefixes, so they cannot clash).
        let gid = loop {
            let candidate = self.fresh_instance_id(group);
            let taken = self.deployments[di]
                .group(group)
                .is_some_and(|g| g.instances.contains_key(&candidate));
            if !taken {
                break candidate;
            }
        };
        let host_node = format!("{group}_host");
        let port_node = format!("{group}_port");
        let vm_id = self.fresh_instance_id(&host_node);
        let port_id = self.fresh_instance_id(&port_node);
        // A new instance gets max(existing indexes) + 1, as the manager does.
        let [vm_index, port_index] = self.deployments[di]
            .group(group)
            .map_or([1, 1], |g| [g.max_index[0] + 1, g.max_index[1] + 1]);
        let group_name: Arc<str> = Arc::from(group);
        let ip = self.next_ip();
        let vm_key = self.insert_instance(NodeInstance {
            id: vm_id.clone(),
            node_id: Arc::from(host_node.as_str()),
            deployment_id: dep_id.clone(),
            tenant: tenant.clone(),
            host_id: Some(vm_id),
            state,
            runtime: Runtime::Empty,
            group: Some((group_name.clone(), gid.clone())),
            index: vm_index,
            version: 1,
            relationships: vec![(
                "cloudify.openstack.server_connected_to_port",
                port_node.clone(),
                port_id.clone(),
            )],
            created_by: creator.clone(),
            ip,
        });
        let port_key = self.insert_instance(NodeInstance {
            id: port_id,
            node_id: Arc::from(port_node.as_str()),
            deployment_id: dep_id,
            tenant,
            host_id: None,
            state,
            runtime: Runtime::Empty,
            group: Some((group_name, gid.clone())),
            index: port_index,
            version: 1,
            relationships: Vec::new(),
            created_by: creator.clone(),
            ip,
        });
        let g = self.deployments[di]
            .group_mut(group)
            .ok_or_else(|| SimError::Internal(format!("group {group} vanished")))?;
        g.instances.insert(gid.clone(), vec![vm_key, port_key]);
        g.max_index = [vm_index, port_index];
        Ok(gid)
    }

    /// Fills the runtime properties a `started` VM and port have (cloud id, ip, hostname).
    pub fn set_started_runtime(&mut self, di: usize, group: &str, gid: &str) {
        let dep_id = self.deployments[di].id.clone();
        let keys = self.deployments[di]
            .group(group)
            .and_then(|g| g.instances.get(gid))
            .cloned()
            .unwrap_or_default();
        for key in keys {
            if let Some(inst) = self.instances.get_mut(&key) {
                let external_id = uuid::Uuid::new_v4().to_string();
                inst.runtime = if inst.host_id.as_deref() == Some(inst.id.as_str()) {
                    Runtime::Vm {
                        external_id,
                        ip: inst.ip,
                        hostname: hostname_for(&dep_id, &inst.id),
                    }
                } else {
                    Runtime::Port {
                        external_id,
                        ip: inst.ip,
                    }
                };
            }
        }
    }

    /// Sets the state of every member of the given group instances (bumping `version`).
    pub fn set_group_instances_state(
        &mut self,
        di: usize,
        group: &str,
        gids: &[String],
        state: &'static str,
    ) {
        self.set_members_state(di, group, gids, Members::All, state);
    }

    /// Sets the state of the chosen members of the given group instances (bumping `version`).
    /// A manager walks each node instance on its own: the port, which has no operation and
    /// which the VM depends on, is `started` before the VM begins, and is removed after it.
    pub fn set_members_state(
        &mut self,
        di: usize,
        group: &str,
        gids: &[String],
        members: Members,
        state: &'static str,
    ) {
        let Some(g) = self.deployments[di].group(group) else {
            return;
        };
        let keys: Vec<u64> = gids
            .iter()
            .filter_map(|gid| g.instances.get(gid))
            .flatten()
            .copied()
            .collect();
        for key in keys {
            if let Some(inst) = self.instances.get_mut(&key) {
                let is_vm = inst.host_id.as_deref() == Some(inst.id.as_str());
                let chosen = match members {
                    Members::All => true,
                    Members::Vms => is_vm,
                    Members::Others => !is_vm,
                };
                if chosen {
                    inst.state = state;
                    inst.version += 1;
                }
            }
        }
    }

    /// Deletes the rows of the given group instances.
    pub fn remove_group_instances(&mut self, di: usize, group: &str, gids: &[String]) {
        let mut keys = Vec::new();
        if let Some(g) = self.deployments[di].group_mut(group) {
            for gid in gids {
                if let Some(members) = g.instances.remove(gid) {
                    keys.extend(members);
                }
            }
        }
        let max = self.deployments[di].group(group).map(|g| g.max_index);
        let top_removed = keys.iter().any(|key| {
            matches!((self.instances.get(key), max), (Some(inst), Some(max)) if max.contains(&inst.index))
        });
        self.remove_instances(&keys);
        if top_removed {
            self.refresh_max_index(di, group);
        }
    }
}
