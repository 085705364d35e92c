//! After a scale-in: wait for the execution to end and check that exactly the named instances
//! were removed (log + metric if not). Cloudify removes arbitrary instances when hints are
//! missing or wrong, so this is the last line of defence for "never delete the wrong VM".

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::NodeGroupService;
use crate::cloudify::ExecutionStatus;
use crate::inventory::{InstanceState, NodeGroup};
use crate::observability::metrics::{ScaleDirection, ScaleResult};

impl NodeGroupService {
    /// Waits for the scale-in to end, then checks that exactly the named VM instances are gone.
    pub(super) async fn verify_scale_in(
        &self,
        id: &str,
        exec_id: &str,
        before: NodeGroup,
        named: Vec<String>,
    ) {
        self.check_scale_in(id, exec_id, &before, &named).await;
        // Whatever the outcome, these removals are no longer ours to expect (issue 11: early
        // returns used to leave them here for ever).
        self.runtime(id).with_overlay(&self.inventory, |o, _| {
            for n in &named {
                o.requested_removals.remove(n);
            }
        });
    }

    async fn check_scale_in(&self, id: &str, exec_id: &str, before: &NodeGroup, named: &[String]) {
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
        let deadline = Instant::now() + self.settings.verify_timeout;
        let mut poll = self.settings.verify_poll;
        let status = loop {
            tokio::time::sleep(poll).await;
            match cloudify.execution(exec_id).await {
                Ok(e) if e.is_ended() => break e.status,
                Ok(_) => {}
                Err(e) => tracing::debug!(execution = exec_id, error = %e, "cannot poll scale-in"),
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    group = id,
                    execution = exec_id,
                    "gave up waiting for scale-in to end"
                );
                return;
            }
            poll = (poll * 2).min(Duration::from_secs(15));
        };
        // The scale-in ended: CA should see its outcome without waiting for the next period.
        self.inventory.trigger_refresh();
        if status != ExecutionStatus::Terminated {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::from(&status));
            tracing::warn!(group = id, execution = exec_id, %status, "scale-in did not complete");
            return;
        }
        let after = match cloudify
            .node_instances(std::slice::from_ref(&before.deployment), &before.vm_nodes)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(group = id, error = %e, "cannot verify scale-in");
                return;
            }
        };
        let after: BTreeSet<&str> = after.iter().map(|i| i.id.as_str()).collect();
        let removed: BTreeSet<&str> = before
            .instances
            .iter()
            .map(|i| i.vm_instance.as_str())
            .filter(|v| !after.contains(v))
            .collect();
        let named_set: BTreeSet<&str> = named.iter().map(String::as_str).collect();
        // Other scale-ins (ours, or instances already leaving) may have removed further instances
        // meanwhile; those are expected. What must never happen: a named instance survives, or an
        // instance nobody named disappears.
        let unexpected: Vec<&str> = self.runtime(id).with_overlay(&self.inventory, |o, _| {
            removed
                .iter()
                .filter(|v| !named_set.contains(*v) && !o.requested_removals.contains(**v))
                .filter(|v| {
                    !before
                        .instances
                        .iter()
                        .any(|i| i.vm_instance == **v && i.state == InstanceState::Deleting)
                })
                .copied()
                .collect()
        });
        let survivors: Vec<&str> = named_set.difference(&removed).copied().collect();
        if survivors.is_empty() && unexpected.is_empty() {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::Terminated);
            tracing::info!(group = id, execution = exec_id, removed = ?named_set, "scale-in removed exactly the named instances");
        } else {
            self.metrics
                .scale(ScaleDirection::Down, ScaleResult::Mismatch);
            self.metrics.scale_down_mismatches.inc();
            tracing::error!(
                group = id, execution = exec_id, named = ?named_set, survivors = ?survivors,
                unexpected = ?unexpected,
                "scale-in removed other instances than the ones named"
            );
        }
    }
}
