//! After a scale-in: wait for its execution to end, then check what *it* removed. Cloudify
//! removes arbitrary instances when hints are missing or wrong, so this is the last line of
//! defence for "never delete the wrong VM".
//!
//! Each removal is attributed to its own execution (issue 20 item 11: a before/after diff of the
//! whole group blamed a scale-in for the removals of the one sent a few seconds after it). A
//! group instance that vanished while the scale-in ran is its doing when it named it, another
//! execution's when that one named it (Cloudify keeps every execution's parameters, whoever sent
//! it), and nobody's fault when it was already leaving. A mismatch is what nothing explains, a
//! named group instance still there, or an execution whose stored parameters do not remove
//! exactly the named group instances (`delta` counts group instances, issue 20 item 1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::NodeGroupService;
use super::overlay::Removal;
use crate::cloudify::{Cloudify, CloudifyError, Execution, ExecutionStatus};
use crate::inventory::{InstanceState, NodeGroup};
use crate::observability::metrics::{ScaleDirection, ScaleResult};

/// How many of the deployment's newest scale executions are read to attribute removals: far
/// more than can run while one scale-in does.
const RECENT_EXECUTIONS: usize = 100;

/// What one scale-in removed, compared with what it named.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Named group instances still there after the execution terminated.
    pub survivors: Vec<String>,
    /// Group instances that vanished and that no execution named (nor were leaving already).
    pub unexplained: Vec<String>,
    /// `(group instance, execution)`: vanished while a scale-in without hints ran, so possibly
    /// its victim (not this scale-in's doing; logged, not counted).
    pub unhinted_victims: Vec<(String, String)>,
    /// The execution's stored parameters do not remove exactly the named group instances.
    pub parameters: Option<String>,
}

impl Verdict {
    fn is_exact(&self) -> bool {
        self.survivors.is_empty() && self.unexplained.is_empty() && self.parameters.is_none()
    }
}

impl NodeGroupService {
    /// Waits for the scale-in to end, then checks that it removed exactly the named group
    /// instances (log + metric if not). `before` is the group as the scale-in was sent.
    pub(super) async fn verify_scale_in(
        &self,
        id: &str,
        exec_id: &str,
        before: NodeGroup,
        named: Vec<Removal>,
    ) {
        let Some(cloudify) = self.inventory.sources().get(before.source).cloned() else {
            return;
        };
        if before.vm_nodes.is_empty() {
            tracing::warn!(
                group = id,
                execution = exec_id,
                "cannot verify scale-in: no VM node known"
            );
            return;
        }
        let Some(ended) = self.wait_for_end(cloudify.as_ref(), id, exec_id).await else {
            return;
        };
        // The scale-in ended: CA should see its outcome without waiting for the next period.
        self.inventory.trigger_refresh();
        if ended.status != ExecutionStatus::Terminated {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::from(&ended.status));
            tracing::warn!(group = id, execution = exec_id, status = %ended.status, "scale-in did not complete");
            return;
        }
        let (present, recent) = match read_outcome(cloudify.as_ref(), &before).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(group = id, execution = exec_id, error = %e, "cannot verify scale-in");
                return;
            }
        };
        let verdict = attribute(&before, &ended, &named, &present, &recent);
        self.report(id, exec_id, &verdict);
    }

    /// Polls the execution until it ends (backing off from `verify_poll` to 15 s), or `None`
    /// after `verify_timeout`.
    async fn wait_for_end(
        &self,
        cloudify: &dyn Cloudify,
        id: &str,
        exec_id: &str,
    ) -> Option<Execution> {
        let deadline = Instant::now() + self.settings.verify_timeout;
        let mut poll = self.settings.verify_poll;
        loop {
            tokio::time::sleep(poll).await;
            match cloudify.execution(exec_id).await {
                Ok(e) if e.is_ended() => return Some(e),
                Ok(_) => {}
                Err(e) => tracing::debug!(execution = exec_id, error = %e, "cannot poll scale-in"),
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    group = id,
                    execution = exec_id,
                    "gave up waiting for scale-in to end"
                );
                return None;
            }
            poll = (poll * 2).min(Duration::from_secs(15));
        }
    }

    fn report(&self, id: &str, exec_id: &str, v: &Verdict) {
        for (gi, other) in &v.unhinted_victims {
            tracing::warn!(
                group = id, execution = exec_id, group_instance = %gi, other_execution = %other,
                "a group instance vanished while a scale-in without hints ran: its victim, not this scale-in's"
            );
        }
        if v.is_exact() {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::Terminated);
            tracing::info!(
                group = id,
                execution = exec_id,
                "scale-in removed exactly the named instances"
            );
        } else {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::Mismatch);
            self.metrics.scale_down_mismatches.inc();
            tracing::error!(
                group = id, execution = exec_id, survivors = ?v.survivors,
                unexplained = ?v.unexplained, parameters = ?v.parameters,
                "scale-in removed other instances than the ones named"
            );
        }
    }
}

/// The group instances of the group still there (any VM not `deleted`), and the deployment's
/// newest scale executions.
async fn read_outcome(
    cloudify: &dyn Cloudify,
    before: &NodeGroup,
) -> Result<(BTreeSet<String>, Vec<Execution>), CloudifyError> {
    let deployment = std::slice::from_ref(&before.deployment);
    let vms = cloudify
        .node_instances(deployment, &before.vm_nodes)
        .await?;
    let present = vms
        .iter()
        .filter(|v| v.state != "deleted")
        .filter_map(|v| v.scaling_groups.iter().find(|r| r.name == before.group))
        .map(|r| r.id.clone())
        .collect();
    let recent = cloudify
        .scale_executions(deployment, &[], Some(RECENT_EXECUTIONS))
        .await?;
    Ok((present, recent))
}

/// Attributes what vanished from the group while `execution` ran. Pure, so every rule is a unit
/// test. `present`: the group instances left; `recent`: the deployment's scale executions.
pub(super) fn attribute(
    before: &NodeGroup,
    execution: &Execution,
    named: &[Removal],
    present: &BTreeSet<String>,
    recent: &[Execution],
) -> Verdict {
    // What a hint names, as of `before`: a group instance, by its id or one of its VMs'.
    let mut group_instance_of: HashMap<&str, &str> = HashMap::new();
    for i in &before.instances {
        let gi = i.group_instance.as_str();
        group_instance_of.insert(gi, gi);
        group_instance_of.insert(&i.vm_instance, gi);
        for vm in &i.infrastructure {
            group_instance_of.insert(&vm.vm_instance, gi);
        }
    }
    let resolve = |hints: Vec<String>| -> BTreeSet<String> {
        hints
            .iter()
            .filter_map(|h| group_instance_of.get(h.as_str()))
            .map(|g| (*g).to_owned())
            .collect()
    };
    let named_gis: BTreeSet<String> = named.iter().map(|r| r.group_instance.clone()).collect();
    let mut v = Verdict::default();
    let hints = execution.include_instances();
    let removes = resolve(hints.clone());
    let wanted = -i64::try_from(named_gis.len()).unwrap_or(i64::MAX);
    if removes != named_gis || execution.delta() != wanted {
        v.parameters = Some(format!(
            "Cloudify ran it with delta {} and hints {hints:?} (group instances {removes:?}), \
             not delta {wanted} for exactly {named_gis:?}",
            execution.delta()
        ));
    }
    v.survivors = named_gis
        .iter()
        .filter(|g| present.contains(*g))
        .cloned()
        .collect();
    // The other scale-ins of the group: what each named, and any that named nothing.
    let others = recent.iter().filter(|e| {
        e.id != execution.id && e.delta() < 0 && e.scaled_group() == Some(before.group.as_str())
    });
    let mut named_elsewhere: BTreeMap<String, String> = BTreeMap::new();
    let mut unhinted: Option<&Execution> = None;
    for e in others {
        let hints = e.include_instances();
        if hints.is_empty() {
            unhinted = unhinted.or(Some(e));
        }
        for gi in resolve(hints) {
            named_elsewhere.entry(gi).or_insert_with(|| e.id.clone());
        }
    }
    for i in &before.instances {
        let gi = &i.group_instance;
        let leaving = i.being_removed || i.state == InstanceState::Deleting;
        if present.contains(gi) || named_gis.contains(gi) || leaving {
            continue;
        }
        if named_elsewhere.contains_key(gi) {
            continue;
        }
        match unhinted {
            Some(e) => v.unhinted_victims.push((gi.clone(), e.id.clone())),
            None => v.unexplained.push(gi.clone()),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inventory::GroupInstance;

    fn instance(gi: &str, vm: &str) -> GroupInstance {
        GroupInstance {
            provider_id: format!("cloudify://t/d/{vm}"),
            vm_instance: vm.into(),
            group_instance: gi.into(),
            node_name: None,
            state: InstanceState::Running,
            cloudify_state: "started".into(),
            addresses: Default::default(),
            being_removed: false,
            infrastructure: Vec::new(),
        }
    }

    /// Group `d/g` with group instances `g_1`..`g_4`, VMs `vm_1`..`vm_4`.
    fn before() -> NodeGroup {
        let mut g = crate::inventory::testkit::group("d", "g");
        g.instances = (1..=4)
            .map(|n| instance(&format!("g_{n}"), &format!("vm_{n}")))
            .collect();
        g
    }

    fn scale_in(id: &str, delta: i64, include: &[&str]) -> Execution {
        serde_json::from_value(
            json!({"id": id, "workflow_id": "scale", "deployment_id": "d",
            "status": "terminated", "parameters": {"scalable_entity_name": "g", "delta": delta,
            "include_instances": include}}),
        )
        .expect("execution")
    }

    fn removal(n: u32) -> Removal {
        Removal {
            provider_id: format!("cloudify://t/d/vm_{n}"),
            vm_instance: format!("vm_{n}"),
            group_instance: format!("g_{n}"),
        }
    }

    fn present(gis: &[&str]) -> BTreeSet<String> {
        gis.iter().map(|g| (*g).to_owned()).collect()
    }

    #[test]
    fn another_scale_in_s_removals_are_its_own() {
        // Issue 20 item 11: `b` ran right after `a`; a's check sees both gone.
        let a = scale_in("a", -1, &["vm_1"]);
        let b = scale_in("b", -1, &["vm_2"]);
        let v = attribute(
            &before(),
            &a,
            &[removal(1)],
            &present(&["g_3", "g_4"]),
            &[b, a.clone()],
        );
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn a_vanished_instance_nothing_named_is_a_mismatch_and_a_survivor_too() {
        let a = scale_in("a", -1, &["vm_1"]);
        let v = attribute(
            &before(),
            &a,
            &[removal(1)],
            &present(&["g_1", "g_4"]),
            std::slice::from_ref(&a),
        );
        assert_eq!(v.survivors, ["g_1"]);
        assert_eq!(v.unexplained, ["g_2", "g_3"]);
        assert!(v.parameters.is_none());
    }

    #[test]
    fn stored_parameters_must_remove_exactly_the_named_group_instances() {
        // Two hints for one group instance with delta -2 (issue 20 item 1): one more goes.
        let mut b = before();
        b.instances[0]
            .infrastructure
            .push(crate::inventory::InfrastructureVm {
                vm_instance: "st_1".into(),
                provider_id: None,
            });
        let e = scale_in("a", -2, &["vm_1", "st_1"]);
        let v = attribute(&b, &e, &[removal(1)], &present(&["g_3", "g_4"]), &[]);
        assert!(
            v.parameters
                .as_deref()
                .is_some_and(|p| p.contains("delta -2")),
            "{v:?}"
        );
        assert_eq!(v.unexplained, ["g_2"]);
        let by_group_instance = scale_in("a", -1, &["g_1"]);
        let v = attribute(
            &b,
            &by_group_instance,
            &[removal(1)],
            &present(&["g_2", "g_3", "g_4"]),
            &[],
        );
        assert!(v.is_exact(), "a group-instance hint names it too: {v:?}");
    }

    #[test]
    fn leaving_instances_and_unhinted_scale_ins_are_no_mismatch_of_this_one() {
        let mut b = before();
        b.instances[1].state = InstanceState::Deleting;
        let a = scale_in("a", -1, &["vm_1"]);
        let other = scale_in("x", -1, &[]);
        let v = attribute(&b, &a, &[removal(1)], &present(&["g_4"]), &[other]);
        assert!(v.is_exact(), "{v:?}");
        assert_eq!(v.unhinted_victims, [("g_3".to_owned(), "x".to_owned())]);
    }
}
