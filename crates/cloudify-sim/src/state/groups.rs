//! Group instances: inserting a VM + port pair (and the group's extra VMs), walking their
//! states, filling runtime properties, removing them.

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
        let mut max = vec![0u32; g.max_index.len()];
        for keys in g.instances.values() {
            for (slot, key) in keys.iter().enumerate().take(max.len()) {
                if let Some(inst) = self.instances.get(key) {
                    max[slot] = max[slot].max(inst.index);
                }
            }
        }
        if let Some(g) = self.deployments[di].group_mut(group) {
            g.max_index = max;
        }
    }

    /// Inserts one group instance (a VM connected to a port, and the group's extra VMs) in
    /// `state`, with empty runtime properties; returns the group-instance id.
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
        let vanished = || SimError::Internal(format!("group {group} vanished"));
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
        let g = self.deployments[di].group(group).ok_or_else(vanished)?;
        let members = g.member_nodes();
        // A new instance gets max(existing indexes) + 1, as the manager does.
        let indexes: Vec<u32> = g.max_index.iter().map(|m| m + 1).collect();
        let ids: Vec<String> = members.iter().map(|n| self.fresh_instance_id(n)).collect();
        let group_name: Arc<str> = Arc::from(group);
        // The VM and its port share an address; each extra VM has its own.
        let port_ip = self.next_ip();
        let mut keys = Vec::with_capacity(members.len());
        for (slot, node) in members.iter().enumerate() {
            let id = ids[slot].clone();
            let (host_id, relationships, ip) = match slot {
                0 => (
                    Some(id.clone()),
                    vec![(
                        "cloudify.openstack.server_connected_to_port",
                        members[1].clone(),
                        ids[1].clone(),
                    )],
                    port_ip,
                ),
                1 => (None, Vec::new(), port_ip),
                _ => (Some(id.clone()), Vec::new(), self.next_ip()),
            };
            keys.push(self.insert_instance(NodeInstance {
                id,
                node_id: Arc::from(node.as_str()),
                deployment_id: dep_id.clone(),
                tenant: tenant.clone(),
                host_id,
                state,
                runtime: Runtime::Empty,
                group: Some((group_name.clone(), gid.clone())),
                index: indexes.get(slot).copied().unwrap_or(1),
                version: 1,
                relationships,
                created_by: creator.clone(),
                ip,
            }));
        }
        let g = self.deployments[di].group_mut(group).ok_or_else(vanished)?;
        g.instances.insert(gid.clone(), keys);
        g.max_index = indexes;
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
        let max = self.deployments[di]
            .group(group)
            .map(|g| g.max_index.clone());
        let top_removed = keys.iter().any(|key| {
            matches!((self.instances.get(key), &max), (Some(inst), Some(max)) if max.contains(&inst.index))
        });
        self.remove_instances(&keys);
        if top_removed {
            self.refresh_max_index(di, group);
        }
    }
}
