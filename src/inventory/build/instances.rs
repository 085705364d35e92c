//! Step 3: each group instance of a source, as CA and the node controller see it: one
//! Kubernetes Node per group instance, its joining VM (issue 20).

use super::executions::Removals;
use super::*;
use crate::cloudify::models::GroupRef;
use crate::config::{AddressProperties, ProviderIdParts, ProviderIdTemplate};

/// The settings an instance is rendered with, resolved once per group: `settings_for` clones
/// the group's template spec (maps of labels and capacities), which per instance was most of the
/// build time at 100k instances.
struct InstanceSettings {
    /// Renders the provider id.
    template: ProviderIdTemplate,
    /// Runtime property holding the Kubernetes node name.
    name_key: String,
    /// Runtime properties holding the addresses.
    address_keys: AddressProperties,
}

impl InstanceSettings {
    fn of(config: &NodeGroupsConfig, group_id: &str) -> InstanceSettings {
        let s = config.settings_for(group_id);
        InstanceSettings {
            template: s.provider_id_template.unwrap_or_default(),
            name_key: s
                .node_name_property
                .unwrap_or_else(|| "hostname".to_owned()),
            address_keys: s.address_properties.unwrap_or_default(),
        }
    }
}

/// What CA is told about a Cloudify node-instance state.
fn state_of(cloudify_state: &str) -> InstanceState {
    match cloudify_state {
        "started" => InstanceState::Running,
        "stopping" | "stopped" | "deleting" | "deleted" => InstanceState::Deleting,
        // uninitialized, initializing, creating, created, configuring, configured, starting,
        // and anything unknown: not ready yet.
        _ => InstanceState::Creating,
    }
}

/// True for an instance of a VM node (or one that is its own host: a VM whose node the refresh
/// did not list as compute). Ports, floating IPs and software are not CA's nodes.
fn is_vm(inst: &NodeInstance, compute: &ComputeNodes<'_>) -> bool {
    compute.contains(&(inst.deployment_id.as_str(), inst.node_id.as_str()))
        || inst.host_id.as_deref() == Some(inst.id.as_str())
}

/// The node group an instance belongs to and its group instance there: the first of its
/// scaling groups (outermost first) that is a node group.
fn group_of<'i>(
    inst: &'i NodeInstance,
    groups: &Groups<'_>,
) -> Option<(GroupKey<'i>, &'i GroupRef)> {
    inst.scaling_groups.iter().find_map(|r| {
        let key = (inst.deployment_id.as_str(), r.name.as_str());
        groups.contains_key(&key).then_some((key, r))
    })
}

/// The provider id and state of an instance in state `state`. When the id needs a runtime
/// property the VM has not reported yet, a placeholder CA can still echo back to DeleteNodes
/// (as clusterapi's `pending-machine-…`), and the instance is not reported running: no Node
/// can match it yet.
fn identify(
    template: &ProviderIdTemplate,
    parts: &ProviderIdParts<'_>,
    inst: &NodeInstance,
    state: InstanceState,
) -> (String, InstanceState) {
    match template.render(parts, |k| inst.runtime_str(k)) {
        Some(id) => (id, state),
        None => {
            let state = if state == InstanceState::Running {
                InstanceState::Creating
            } else {
                state
            };
            let id = format!(
                "cloudify-pending://{}/{}/{}",
                parts.tenant, parts.deployment, parts.vm_instance
            );
            (id, state)
        }
    }
}

/// `(state, being_removed)` once the active scale-ins are known. A named instance is leaving
/// even while its VM still says `started`. A deleting instance of a deployment whose scale-in
/// names nothing may be its victim, so it counts as being removed too; any other deleting
/// instance (a failed scale-in without rollback, a cancelled or killed one) may be deleted again.
fn removal(state: InstanceState, named: bool, unhinted_scale_in: bool) -> (InstanceState, bool) {
    if named {
        return (InstanceState::Deleting, true);
    }
    let being_removed = state == InstanceState::Deleting && unhinted_scale_in;
    (state, being_removed)
}

/// The VM of a group instance that is its Kubernetes Node: the instance of the group's joining
/// node, else (no member is a VM itself, or the configured node has no instance here) the VM of
/// the smallest node id, so that the choice is the same on every refresh.
fn joining_vm<'i>(
    vms: &[&'i NodeInstance],
    joining_node: Option<&str>,
) -> Option<&'i NodeInstance> {
    vms.iter()
        .copied()
        .find(|v| Some(v.node_id.as_str()) == joining_node)
        .or_else(|| {
            vms.iter()
                .copied()
                .min_by(|a, b| (&a.node_id, &a.id).cmp(&(&b.node_id, &b.id)))
        })
}

/// One group instance as CA and the node controller see it: its joining VM's provider id,
/// names, addresses and state, its other VMs as infrastructure, and whether an active scale-in
/// removes it (naming the group instance or any of its VMs).
fn group_instance(
    g: &NodeGroup,
    settings: &InstanceSettings,
    group_instance: &str,
    vms: &[&NodeInstance],
    joining: &NodeInstance,
    removals: &Removals<'_>,
) -> GroupInstance {
    let parts = |vm_instance| ProviderIdParts {
        tenant: &g.tenant,
        deployment: &g.deployment,
        group: &g.group,
        group_instance,
        vm_instance,
    };
    let (provider_id, state) = identify(
        &settings.template,
        &parts(&joining.id),
        joining,
        state_of(&joining.state),
    );
    let (state, being_removed) = removal(
        state,
        removals.names(
            &g.deployment,
            vms.iter().map(|v| v.id.as_str()),
            group_instance,
        ),
        removals.unhinted_in(&g.deployment),
    );
    let mut infrastructure: Vec<InfrastructureVm> = vms
        .iter()
        .filter(|v| v.id != joining.id)
        .map(|v| InfrastructureVm {
            vm_instance: v.id.clone(),
            provider_id: settings
                .template
                .render(&parts(&v.id), |k| v.runtime_str(k)),
        })
        .collect();
    infrastructure.sort_by(|a, b| a.vm_instance.cmp(&b.vm_instance));
    GroupInstance {
        provider_id,
        vm_instance: joining.id.clone(),
        group_instance: group_instance.to_owned(),
        node_name: joining.runtime_str(&settings.name_key),
        state,
        cloudify_state: joining.state.clone(),
        addresses: InstanceAddresses {
            internal_ip: joining.runtime_str(&settings.address_keys.internal_ip),
            external_ip: joining.runtime_str(&settings.address_keys.external_ip),
            hostname: joining.runtime_str(&settings.address_keys.hostname),
        },
        being_removed,
        infrastructure,
    }
}

/// Adds one instance per group instance of the source to its node group: the group instance
/// seen through its joining VM (issue 20: Cloudify counts `delta` in group instances, so a
/// group instance holding two VMs is still one Node).
pub(super) fn attach<'a>(
    src: &'a SourceData,
    config: &NodeGroupsConfig,
    compute: &ComputeNodes<'_>,
    removals: &Removals<'_>,
    groups: &mut Groups<'a>,
) {
    // Every VM of the source by (group, group instance): sorted, so the VMs of one group
    // instance sit together (one allocation, whatever the number of instances).
    let mut vms: Vec<(GroupKey<'a>, &'a str, &'a NodeInstance)> = src
        .instances
        .iter()
        .filter(|inst| is_vm(inst, compute) && !inst.id.is_empty())
        .filter_map(|inst| {
            let (key, gref) = group_of(inst, groups)?;
            Some((key, gref.id.as_str(), inst))
        })
        .collect();
    vms.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut resolved: HashMap<String, InstanceSettings> = HashMap::new();
    let mut members: Vec<&NodeInstance> = Vec::new();
    for same in vms.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (key, gi) = (same[0].0, same[0].1);
        let Some(group) = groups.get_mut(&key) else {
            continue;
        };
        if !resolved.contains_key(group.id.as_str()) {
            // Looked up before inserting: `entry` would copy the group id for every instance.
            resolved.insert(group.id.clone(), InstanceSettings::of(config, &group.id));
        }
        let Some(settings) = resolved.get(group.id.as_str()) else {
            continue;
        };
        members.clear();
        members.extend(same.iter().map(|(_, _, inst)| *inst));
        for m in &members {
            if !group.vm_nodes.contains(&m.node_id) {
                // The VM node may be contained in a listed member rather than listed itself.
                group.vm_nodes.push(m.node_id.clone());
            }
        }
        let Some(joining) = joining_vm(&members, group.joining_node.as_deref()) else {
            continue;
        };
        let instance = group_instance(group, settings, gi, &members, joining, removals);
        group.instances.push(instance);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::executions::apply_active;
    use super::super::fixtures::{self, config, groups_a_g, vm};
    use super::*;

    fn parts<'a>(vm_instance: &'a str) -> ProviderIdParts<'a> {
        ProviderIdParts {
            tenant: "t",
            deployment: "a",
            group: "g",
            group_instance: "g_1",
            vm_instance,
        }
    }

    #[test]
    fn cloudify_states_map_to_three_states_for_ca() {
        assert_eq!(state_of("started"), InstanceState::Running);
        for s in ["stopping", "stopped", "deleting", "deleted"] {
            assert_eq!(state_of(s), InstanceState::Deleting, "{s}");
        }
        for s in [
            "uninitialized",
            "creating",
            "configured",
            "starting",
            "whatever",
            "",
        ] {
            assert_eq!(state_of(s), InstanceState::Creating, "{s}");
        }
    }

    #[test]
    fn vms_are_instances_of_compute_nodes_or_their_own_host() {
        let compute = ComputeNodes::from([("a", "vm")]);
        let mut port = vm("port_1", "a", "started", json!({}));
        port.node_id = "port".into();
        port.host_id = Some("vm_1".into());
        assert!(!is_vm(&port, &compute));
        let mut own_host = port.clone();
        own_host.host_id = Some("port_1".into());
        assert!(is_vm(&own_host, &compute));
        let mut listed = vm("vm_1", "a", "started", json!({}));
        listed.host_id = None;
        assert!(is_vm(&listed, &compute));
    }

    #[test]
    fn an_instance_belongs_to_its_first_scaling_group_that_is_a_node_group() {
        let groups = groups_a_g();
        let mut inst = vm("vm_1", "a", "started", json!({}));
        inst.scaling_groups = serde_json::from_value(
            json!([{"name": "outer", "id": "outer_1"}, {"name": "g", "id": "g_1"}]),
        )
        .expect("refs");
        let (key, r) = group_of(&inst, &groups).expect("in a/g");
        assert_eq!((key, r.id.as_str()), (("a", "g"), "g_1"));
        inst.deployment_id = "b".into();
        assert!(group_of(&inst, &groups).is_none(), "b/g is no node group");
    }

    #[test]
    fn a_rendered_id_keeps_the_state() {
        let template = ProviderIdTemplate::default();
        let inst = vm("vm_1", "a", "started", json!({}));
        let (id, state) = identify(&template, &parts("vm_1"), &inst, InstanceState::Running);
        assert_eq!(
            (id.as_str(), state),
            ("cloudify://t/a/vm_1", InstanceState::Running)
        );
    }

    #[test]
    fn an_id_waiting_for_a_runtime_property_is_a_placeholder_and_not_running() {
        let template = ProviderIdTemplate::parse("aws:///{runtime.zone}/{runtime.external_id}")
            .expect("template");
        let half = vm("vm_1", "a", "started", json!({"zone": "eu-1a"}));
        let (id, state) = identify(&template, &parts("vm_1"), &half, InstanceState::Running);
        assert_eq!(
            (id.as_str(), state),
            ("cloudify-pending://t/a/vm_1", InstanceState::Creating)
        );
        let (_, deleting) = identify(&template, &parts("vm_1"), &half, InstanceState::Deleting);
        assert_eq!(
            deleting,
            InstanceState::Deleting,
            "a leaving VM stays leaving"
        );
        let full = vm(
            "vm_1",
            "a",
            "started",
            json!({"zone": "eu-1a", "external_id": "i-9"}),
        );
        assert_eq!(
            identify(&template, &parts("vm_1"), &full, InstanceState::Running).0,
            "aws:///eu-1a/i-9"
        );
    }

    #[test]
    fn named_instances_leave_and_unhinted_scale_ins_claim_the_deleting_ones() {
        use InstanceState::*;
        assert_eq!(removal(Running, true, false), (Deleting, true));
        assert_eq!(removal(Running, false, true), (Running, false));
        assert_eq!(removal(Deleting, false, true), (Deleting, true));
        assert_eq!(
            removal(Deleting, false, false),
            (Deleting, false),
            "nothing removes it: deletable again"
        );
        assert_eq!(removal(Creating, false, false), (Creating, false));
    }

    #[test]
    fn attach_adds_vms_with_names_addresses_and_removal_state() {
        let cfg = config(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], defaults: {node_name_property: name, address_properties: {internal_ip: private}}}",
        );
        let mut inner = vm("inner_1", "a", "creating", json!({}));
        inner.node_id = "inner".into();
        let src = SourceData {
            tenant: "t".into(),
            instances: vec![
                vm(
                    "vm_1",
                    "a",
                    "started",
                    json!({"name": "n1", "private": "10.0.0.1", "hostname": "h1"}),
                ),
                vm("vm_2", "a", "started", json!({})),
                vm("", "a", "started", json!({})),
                inner,
            ],
            active: vec![fixtures::scale("s", "a", "started", -1, &["vm_2"])],
            ..Default::default()
        };
        let compute = ComputeNodes::from([("a", "vm")]);
        let mut groups = groups_a_g();
        let removals = apply_active(&src.active, &HashSet::new(), &HashSet::new(), &mut groups);
        attach(&src, &cfg, &compute, &removals, &mut groups);
        let g = &groups[&("a", "g")];
        let ids: Vec<&str> = g.instances.iter().map(|i| i.vm_instance.as_str()).collect();
        assert_eq!(
            ids,
            ["inner_1", "vm_1", "vm_2"],
            "by group instance; an instance without an id is skipped"
        );
        let vm1 = &g.instances[1];
        assert_eq!(vm1.provider_id, "cloudify://t/a/vm_1");
        assert_eq!(vm1.group_instance, "g_vm_1");
        assert_eq!(vm1.node_name.as_deref(), Some("n1"));
        assert_eq!(vm1.addresses.internal_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(vm1.addresses.hostname.as_deref(), Some("h1"));
        assert_eq!(
            (vm1.state, vm1.being_removed),
            (InstanceState::Running, false)
        );
        let vm2 = &g.instances[2];
        assert_eq!(
            (vm2.state, vm2.being_removed),
            (InstanceState::Deleting, true)
        );
        assert_eq!(vm2.cloudify_state, "started");
        assert_eq!(
            g.vm_nodes,
            ["vm", "inner"],
            "a VM node inside a listed member joins the group's VM nodes"
        );
    }

    /// Group instance `g_1` of `a/g` holding `vm_1` (node `vm`) and `st_1` (node `storage`),
    /// and `vm_2` alone in its own.
    fn two_vm_source(active: Vec<Execution>) -> SourceData {
        let worker = json!({"hostname": "n1"});
        let (_, mut instances) =
            crate::inventory::testkit::two_vm_group_instance("a", "g", "g_1", worker);
        instances.push(vm("vm_2", "a", "started", json!({})));
        SourceData {
            tenant: "t".into(),
            instances,
            active,
            ..Default::default()
        }
    }

    fn attach_two_vm(src: &SourceData, joining: Option<&str>) -> NodeGroup {
        let cfg = config("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}");
        let compute = ComputeNodes::from([("a", "vm"), ("a", "storage")]);
        let mut groups = groups_a_g();
        if let Some(g) = groups.get_mut(&("a", "g")) {
            g.joining_node = joining.map(str::to_owned);
        }
        let removals = apply_active(&src.active, &HashSet::new(), &HashSet::new(), &mut groups);
        attach(src, &cfg, &compute, &removals, &mut groups);
        groups.remove(&("a", "g")).expect("a/g")
    }

    #[test]
    fn a_group_instance_of_two_vms_is_one_instance_seen_through_its_joining_vm() {
        let g = attach_two_vm(&two_vm_source(Vec::new()), Some("vm"));
        assert_eq!(g.instances.len(), 2, "one per group instance");
        let gi = g
            .instances
            .iter()
            .find(|i| i.group_instance == "g_1")
            .expect("g_1");
        assert_eq!(
            (gi.vm_instance.as_str(), gi.provider_id.as_str()),
            ("vm_1", "cloudify://t/a/vm_1")
        );
        assert_eq!(gi.node_name.as_deref(), Some("n1"));
        assert_eq!(
            gi.infrastructure,
            [InfrastructureVm {
                vm_instance: "st_1".into(),
                provider_id: Some("cloudify://t/a/st_1".into()),
            }]
        );
        assert!(g.vm_nodes.contains(&"storage".to_owned()));
        let other = attach_two_vm(&two_vm_source(Vec::new()), Some("storage"));
        let gi = other
            .instances
            .iter()
            .find(|i| i.group_instance == "g_1")
            .expect("g_1");
        assert_eq!(gi.vm_instance, "st_1", "the configured node joins");
    }

    #[test]
    fn without_a_joining_vm_the_smallest_node_id_joins() {
        let src = two_vm_source(Vec::new());
        let g1: Vec<&NodeInstance> = src.instances[..2].iter().collect();
        assert_eq!(joining_vm(&g1, None).map(|v| v.id.as_str()), Some("st_1"));
        assert_eq!(
            joining_vm(&g1, Some("nowhere")).map(|v| v.id.as_str()),
            Some("st_1")
        );
        assert_eq!(
            joining_vm(&g1, Some("vm")).map(|v| v.id.as_str()),
            Some("vm_1")
        );
    }

    #[test]
    fn a_scale_in_naming_an_infrastructure_vm_removes_its_group_instance() {
        let src = two_vm_source(vec![fixtures::scale("s", "a", "started", -1, &["st_1"])]);
        let g = attach_two_vm(&src, Some("vm"));
        let states: Vec<(&str, InstanceState, bool)> = g
            .instances
            .iter()
            .map(|i| (i.vm_instance.as_str(), i.state, i.being_removed))
            .collect();
        assert_eq!(
            states,
            [
                ("vm_1", InstanceState::Deleting, true),
                ("vm_2", InstanceState::Running, false)
            ]
        );
    }
}
