//! Mutations: IncreaseSize, DecreaseTargetSize, DeleteNodes.
//!
//! Each mutation runs in its own spawned task: if CA's deadline expires and the RPC future is
//! dropped, the Cloudify call still completes and is recorded in the overlay, so a retry sees the
//! raised target instead of scaling twice.

use std::sync::Arc;
use std::time::Instant;

use super::overlay::LocalChange;
use super::{DomainError, NodeGroupService, delete};
use crate::cloudify::{Cloudify, ScaleRequest};
use crate::inventory::NodeGroup;
use crate::observability::metrics::{ScaleDirection, ScaleResult};

/// A node CA asks to delete.
#[derive(Debug, Clone, Default)]
pub struct NodeRef {
    /// `spec.providerID` (for fake nodes: the instance id we reported).
    pub provider_id: String,
    /// `metadata.name`: finds the instance when the provider id does not.
    pub name: String,
}

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
    fn source(&self, g: &NodeGroup) -> Result<Arc<dyn Cloudify>, DomainError> {
        self.inventory
            .sources()
            .get(g.source)
            .cloned()
            .ok_or_else(|| DomainError::GroupNotFound(g.id.clone()))
    }

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
        let (g, target, upper) = rt.with_overlay(&self.inventory, |o, snap| {
            Self::group(snap, id).map(|g| (g.clone(), o.target_wide(g), o.upper_bound(g)))
        })?;
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
        let cloudify = self.source(&g)?;
        let request = ScaleRequest {
            deployment_id: g.deployment.clone(),
            group: g.group.clone(),
            delta: i64::from(delta),
            include_instances: Vec::new(),
            abort_started: g.orphan_modification,
        };
        // Asked again right before the POST: the lease may have lapsed while we waited.
        let execution = self
            .within_term(async {
                cloudify.start_scale(&request).await.map_err(|e| {
                    self.metrics.scale(ScaleDirection::Up, ScaleResult::Error);
                    tracing::warn!(group = id, delta, error = %e, "scale-out refused by Cloudify");
                    DomainError::from(e)
                })
            })
            .await?;
        rt.with_overlay(&self.inventory, |o, _| {
            o.changes.push(LocalChange {
                accepted_at: Instant::now(),
                delta,
                started: Some((execution.id.clone(), delta)),
                deleting: Vec::new(),
                cancelled: Vec::new(),
            })
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
        let need = delta.saturating_neg();
        // Newest first: local scale-outs the snapshot does not show yet, then waiting ones.
        let (g, target, candidates) = rt.with_overlay(&self.inventory, |o, snap| {
            let g = Self::group(snap, id)?;
            let mut c: Vec<(String, i32)> = o
                .changes
                .iter()
                .rev()
                .filter_map(|ch| ch.started.clone())
                // Listed by the snapshot too (as waiting, below): offer it once.
                .filter(|(e, d)| *d > 0 && !o.is_cancelled(e) && !g.seen_executions.contains(e))
                .collect();
            c.extend(
                g.waiting
                    .iter()
                    .filter(|w| w.delta > 0 && w.cancellable && !o.is_cancelled(&w.id))
                    .map(|w| (w.id.clone(), w.delta)),
            );
            // Scale-ins asked for but not recorded yet are already out of the target
            // (issue 11: the min check ignored a pending delete batch).
            let target = o.target_wide(g).saturating_sub(o.pending_removals());
            Ok::<_, DomainError>((g.clone(), target, c))
        })?;
        let available: i64 = candidates.iter().map(|(_, d)| i64::from(*d)).sum();
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
        for (exec_id, exec_delta) in candidates {
            if remaining == 0 {
                break;
            }
            let removed = self
                .within_term(self.cancel_or_shrink(
                    &rt,
                    cloudify.as_ref(),
                    &g,
                    &exec_id,
                    exec_delta,
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
        exec_id: &str,
        exec_delta: i32,
        need: i32,
    ) -> Result<i32, DomainError> {
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
            o.changes.push(LocalChange {
                accepted_at: Instant::now(),
                delta: -exec_delta,
                started: None,
                deleting: Vec::new(),
                cancelled: vec![exec_id.to_owned()],
            })
        });
        self.metrics
            .scale(ScaleDirection::Cancel, ScaleResult::Accepted);
        if exec_delta > need {
            let replacement = exec_delta - need;
            let request = ScaleRequest {
                deployment_id: g.deployment.clone(),
                group: g.group.clone(),
                delta: i64::from(replacement),
                include_instances: Vec::new(),
                abort_started: g.orphan_modification,
            };
            let execution = match cloudify.start_scale(&request).await {
                Ok(e) => e,
                Err(e) => {
                    self.metrics.scale(ScaleDirection::Up, ScaleResult::Error);
                    tracing::warn!(
                        group = %g.id, cancelled = exec_id, lost = replacement, error = %e,
                        "scale-out cancelled but its smaller replacement was refused: the target \
                         is lower than asked"
                    );
                    return Err(DomainError::from(e));
                }
            };
            rt.with_overlay(&self.inventory, |o, _| {
                o.changes.push(LocalChange {
                    accepted_at: Instant::now(),
                    delta: replacement,
                    started: Some((execution.id.clone(), replacement)),
                    deleting: Vec::new(),
                    cancelled: Vec::new(),
                })
            });
            self.metrics
                .scale(ScaleDirection::Up, ScaleResult::Accepted);
        }
        Ok(exec_delta.min(need))
    }

    /// NodeGroupDeleteNodes: remove exactly these nodes. Concurrent calls on one group within the
    /// batching window become one `scale` execution with `include_instances`. Answers OK only
    /// once the scale-in naming every node was accepted by Cloudify (a repeat of a node already
    /// on its way waits for that outcome), never while doing nothing.
    pub async fn delete_nodes(
        self: &Arc<Self>,
        id: &str,
        nodes: &[NodeRef],
    ) -> Result<(), DomainError> {
        // A follower refuses before batching (the flush asks again before its POST).
        self.leader_term()?;
        let deletion = {
            let snap = self.inventory.snapshot();
            delete::resolve(&snap, Self::group(&snap, id)?, nodes)?
        };
        let joined = self.runtime(id).with_overlay(&self.inventory, |o, snap| {
            delete::join(o, Self::group(snap, id)?, &deletion)
        })?;
        if !deletion.synthetic.is_empty() {
            tracing::info!(group = id, ids = ?deletion.synthetic, "failed-instance records dropped at CA's request");
        }
        if joined.start_flush {
            let this = Arc::clone(self);
            let gid = id.to_owned();
            let window = self.settings.delete_batch_window;
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                this.flush_deletes(&gid).await;
            });
        }
        delete::outcome(joined).await
    }

    /// Sends one scale-in for the group's batch and answers every waiting call.
    async fn flush_deletes(self: &Arc<Self>, id: &str) {
        let rt = self.runtime(id);
        let _mutation = rt.mutation.lock().await;
        // The batch becomes the in-flight removal in the same critical section, so no reader
        // ever sees it in neither place.
        let Some((instances, g)) = rt.with_overlay(&self.inventory, |o, snap| {
            let batch = o.batch.take()?;
            let instances = batch.instances.clone();
            o.inflight = Some(batch);
            Some((instances, snap.group(id).cloned()))
        }) else {
            return;
        };
        let result = match g {
            Some(g) => self.send_scale_in(&g, &instances).await.map(|e| (e, g)),
            None => Err(DomainError::GroupNotFound(id.to_owned())),
        };
        let named: Vec<String> = instances.iter().map(|(_, v)| v.clone()).collect();
        let waiters = rt.with_overlay(&self.inventory, |o, _| {
            let waiters = o.inflight.take().map(|b| b.waiters).unwrap_or_default();
            if let Ok((exec_id, _)) = &result {
                let delta = -i32::try_from(instances.len()).unwrap_or(i32::MAX);
                o.changes.push(LocalChange {
                    accepted_at: Instant::now(),
                    delta,
                    // The execution id lets the overlay see when the snapshot counts it.
                    started: Some((exec_id.clone(), delta)),
                    deleting: instances.iter().map(|(p, _)| p.clone()).collect(),
                    cancelled: Vec::new(),
                });
                o.requested_removals.extend(named.iter().cloned());
            }
            waiters
        });
        match &result {
            Ok((exec_id, before)) => {
                self.metrics
                    .scale(ScaleDirection::Down, ScaleResult::Accepted);
                self.inventory.trigger_refresh();
                tracing::info!(group = id, execution = %exec_id, instances = ?named, "scale-in queued in Cloudify");
                let this = Arc::clone(self);
                let (exec_id, before) = (exec_id.clone(), before.clone());
                let gid = id.to_owned();
                tokio::spawn(
                    async move { this.verify_scale_in(&gid, &exec_id, before, named).await },
                );
            }
            Err(e) => {
                self.metrics.scale(ScaleDirection::Down, ScaleResult::Error);
                tracing::warn!(group = id, error = %e, "scale-in refused by Cloudify");
            }
        }
        for w in waiters {
            // A waiter that went away (RPC cancelled) needs no answer.
            let _ = w.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
        }
    }

    async fn send_scale_in(
        &self,
        g: &NodeGroup,
        instances: &[(String, String)],
    ) -> Result<String, DomainError> {
        // A new leader catches up first: its predecessor may have queued a scale-in already.
        self.leader_snapshot().await?;
        let cloudify = self.source(g)?;
        let include: Vec<String> = instances.iter().map(|(_, v)| v.clone()).collect();
        let request = ScaleRequest {
            deployment_id: g.deployment.clone(),
            group: g.group.clone(),
            delta: -i64::try_from(include.len()).unwrap_or(i64::MAX),
            include_instances: include,
            abort_started: g.orphan_modification,
        };
        let execution = self
            .within_term(async { Ok(cloudify.start_scale(&request).await?) })
            .await?;
        Ok(execution.id)
    }
}
