//! The size mutations: IncreaseSize and DecreaseTargetSize (DeleteNodes is in `delete.rs`).
//!
//! Each mutation runs in its own spawned task: if CA's deadline expires and the RPC future is
//! dropped, the Cloudify call still completes and is recorded in the overlay, so a retry sees the
//! raised target instead of scaling twice.

use std::sync::Arc;

use super::overlay::{LocalChange, ScaleExecution};
use super::{DomainError, NodeGroupService};
use crate::cloudify::{Cloudify, ScaleRequest};
use crate::inventory::NodeGroup;
use crate::observability::metrics::{ScaleDirection, ScaleResult};

async fn run_detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, DomainError>> + Send + 'static,
) -> Result<T, DomainError> {
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(DomainError::Unavailable {
            message: format!("internal task failed: {e}"),
            source: None,
        }),
    }
}

impl NodeGroupService {
    /// NodeGroupIncreaseSize: raise the target by `delta` (> 0) without waiting for VMs.
    pub async fn increase_size(self: &Arc<Self>, id: &str, delta: i32) -> Result<(), DomainError> {
        if delta <= 0 {
            return Err(DomainError::InvalidArgument(format!(
                "delta must be positive, got {delta}"
            )));
        }
        let this = Arc::clone(self);
        let id = id.to_owned();
        run_detached(async move { this.increase_locked(&id, delta).await }).await
    }

    async fn increase_locked(&self, id: &str, delta: i32) -> Result<(), DomainError> {
        // Unknown ids never get runtime state (the map would grow with every bad request).
        Self::group(&self.inventory.peek(), id)?;
        let rt = self.runtime(id);
        let _mutation = rt.mutation.lock().await;
        // A follower refuses here; a new leader first catches up with what its predecessor
        // queued (the overlay then reads that snapshot).
        self.leader_snapshot().await?;
        let cloudify = {
            let snap = self.inventory.snapshot();
            self.source(Self::group(&snap, id)?)?
        };
        // An earlier scale-out whose answer was lost and that CA could not see answers a retry.
        let credit = {
            let g = rt.with_overlay(&self.inventory, |_, snap| Self::group(snap, id).cloned())?;
            self.settle(&rt, &g, cloudify.as_ref())
                .await?
                .unseen_scale_out
        };
        let (g, target, upper) = rt.with_overlay(&self.inventory, |o, snap| {
            Self::group(snap, id).map(|g| (g.clone(), o.target_wide(g), o.upper_bound(g)))
        })?;
        let Some(delta) = i32::try_from(i64::from(delta) - credit)
            .ok()
            .filter(|d| *d > 0)
        else {
            tracing::info!(
                group = id,
                target,
                "IncreaseSize answered by the scale-out Cloudify stored from its lost attempt"
            );
            return Ok(());
        };
        if upper.saturating_add(i64::from(delta)) > i64::from(g.max) {
            self.metrics
                .scale(ScaleDirection::Up, ScaleResult::Rejected);
            return Err(DomainError::AboveMax {
                group: id.to_owned(),
                target: i32::try_from(upper).unwrap_or(i32::MAX),
                delta,
                max: g.max,
            });
        }
        let request = scale_out_request(&g, delta);
        // The leadership is asked again right before the POST: it may have lapsed meanwhile.
        let execution = self
            .post_scale(&rt, &g, cloudify.as_ref(), &request, Vec::new())
            .await
            .map_err(|e| {
                self.metrics.scale(ScaleDirection::Up, ScaleResult::Error);
                tracing::warn!(group = id, delta, error = %e, "scale-out refused by Cloudify");
                e
            })?;
        rt.with_overlay(&self.inventory, |o, _| {
            o.changes.push(LocalChange::started(
                ScaleExecution {
                    id: execution.id.clone(),
                    delta,
                },
                Vec::new(),
            ))
        });
        self.metrics
            .scale(ScaleDirection::Up, ScaleResult::Accepted);
        tracing::info!(
            group = id, delta, from = target, to = target.saturating_add(i64::from(delta)),
            execution = %execution.id, status = %execution.status, "scale-out queued in Cloudify"
        );
        // Freshness for CA's next loop: refresh now, and again when the execution ends.
        self.inventory.trigger_refresh();
        self.follow_execution(cloudify, execution.id);
        Ok(())
    }

    /// NodeGroupDecreaseTargetSize: remove `-delta` units of capacity that does not exist yet
    /// (cancel or shrink waiting scale-outs). Never removes existing instances.
    pub async fn decrease_target_size(
        self: &Arc<Self>,
        id: &str,
        delta: i32,
    ) -> Result<(), DomainError> {
        if delta >= 0 {
            return Err(DomainError::InvalidArgument(format!(
                "delta must be negative, got {delta}"
            )));
        }
        let this = Arc::clone(self);
        let id = id.to_owned();
        run_detached(async move { this.decrease_locked(&id, delta).await }).await
    }

    async fn decrease_locked(&self, id: &str, delta: i32) -> Result<(), DomainError> {
        // Unknown ids never get runtime state (the map would grow with every bad request).
        Self::group(&self.inventory.peek(), id)?;
        let rt = self.runtime(id);
        let _mutation = rt.mutation.lock().await;
        self.leader_snapshot().await?;
        {
            // An earlier scale-out whose answer was lost may be one to cancel.
            let g = rt.with_overlay(&self.inventory, |_, snap| Self::group(snap, id).cloned())?;
            let cloudify = self.source(&g)?;
            self.settle(&rt, &g, cloudify.as_ref()).await?;
        }
        let need = delta.saturating_neg();
        // Newest first: local scale-outs the snapshot does not show yet, then waiting ones.
        let (g, target, candidates) = rt.with_overlay(&self.inventory, |o, snap| {
            let g = Self::group(snap, id)?;
            let mut c: Vec<ScaleExecution> = o
                .changes
                .iter()
                .rev()
                .filter_map(|ch| ch.started.clone())
                // Listed by the snapshot too (as waiting, below): offer it once.
                .filter(|s| {
                    s.delta > 0 && !o.is_cancelled(&s.id) && !g.seen_executions.contains(&s.id)
                })
                .collect();
            c.extend(
                g.waiting
                    .iter()
                    .filter(|w| w.delta > 0 && w.cancellable && !o.is_cancelled(&w.id))
                    .map(|w| ScaleExecution {
                        id: w.id.clone(),
                        delta: w.delta,
                    }),
            );
            // Scale-ins asked for but not recorded yet are already out of the target
            // (issue 11: the min check ignored a pending delete batch).
            let target = o.target_wide(g).saturating_sub(o.pending_removals());
            Ok::<_, DomainError>((g.clone(), target, c))
        })?;
        let available: i64 = candidates.iter().map(|c| i64::from(c.delta)).sum();
        if available < i64::from(need) {
            return Err(DomainError::FailedPrecondition(format!(
                "node group {id:?}: cannot decrease target by {need}: only {available} requested \
                 instance(s) are not created yet, and DecreaseTargetSize never removes existing \
                 instances (use DeleteNodes)"
            )));
        }
        if target.saturating_sub(i64::from(need)) < i64::from(g.min) {
            return Err(DomainError::FailedPrecondition(format!(
                "node group {id:?}: target {target} - {need} would go below min size {}",
                g.min
            )));
        }
        let cloudify = self.source(&g)?;
        let mut remaining = need;
        let mut applied: i64 = 0;
        for candidate in candidates {
            if remaining == 0 {
                break;
            }
            let removed = self
                .within_term(self.cancel_or_shrink(
                    &rt,
                    cloudify.as_ref(),
                    &g,
                    &candidate,
                    remaining,
                ))
                .await?;
            remaining -= removed;
            applied += i64::from(removed);
        }
        if applied > 0 {
            tracing::info!(
                group = id,
                by = applied,
                "target decreased by cancelling waiting scale-outs"
            );
            self.inventory.trigger_refresh();
        }
        Ok(())
    }

    /// Cancels one waiting scale-out; if it adds more than needed, queues a smaller one in its
    /// place. Each step Cloudify accepted is recorded at once, so TargetSize stays true even when
    /// the replacement fails after the cancel (issue 11). Returns how much capacity was removed.
    async fn cancel_or_shrink(
        &self,
        rt: &super::GroupRuntime,
        cloudify: &dyn Cloudify,
        g: &NodeGroup,
        waiting: &ScaleExecution,
        need: i32,
    ) -> Result<i32, DomainError> {
        let (exec_id, exec_delta) = (waiting.id.as_str(), waiting.delta);
        // Cancelling a started scale could leave a half-applied deployment modification: check
        // the execution is still waiting right before cancelling.
        let current = cloudify.execution(exec_id).await?;
        if !current.is_waiting() {
            return Err(DomainError::FailedPrecondition(format!(
                "execution {exec_id} is already {}; its instances are being created",
                current.status
            )));
        }
        cloudify.cancel_execution(exec_id).await.map_err(|e| {
            self.metrics
                .scale(ScaleDirection::Cancel, ScaleResult::Error);
            DomainError::from(e)
        })?;
        rt.with_overlay(&self.inventory, |o, _| {
            o.changes.push(LocalChange::cancelled(exec_id, exec_delta))
        });
        self.metrics
            .scale(ScaleDirection::Cancel, ScaleResult::Accepted);
        if exec_delta > need {
            let replacement = exec_delta - need;
            let request = scale_out_request(g, replacement);
            let execution = match self.post_scale(rt, g, cloudify, &request, Vec::new()).await {
                Ok(e) => e,
                Err(e) => {
                    self.metrics.scale(ScaleDirection::Up, ScaleResult::Error);
                    tracing::warn!(
                        group = %g.id, cancelled = exec_id, lost = replacement, error = %e,
                        "scale-out cancelled but its smaller replacement was refused: the target \
                         is lower than asked"
                    );
                    return Err(e);
                }
            };
            rt.with_overlay(&self.inventory, |o, _| {
                o.changes.push(LocalChange::started(
                    ScaleExecution {
                        id: execution.id.clone(),
                        delta: replacement,
                    },
                    Vec::new(),
                ))
            });
            self.metrics
                .scale(ScaleDirection::Up, ScaleResult::Accepted);
        }
        Ok(exec_delta.min(need))
    }
}

/// The scale-out that adds `delta` group instances to `g`.
fn scale_out_request(g: &NodeGroup, delta: i32) -> ScaleRequest {
    ScaleRequest::scale_out(
        &g.deployment,
        &g.group,
        i64::from(delta),
        g.orphan_modification,
    )
}
