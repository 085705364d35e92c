//! Mutations: IncreaseSize, DecreaseTargetSize, DeleteNodes.
//!
//! Each mutation runs in its own spawned task: if CA's deadline expires and the RPC future is
//! dropped, the Cloudify call still completes and is recorded in the overlay, so a retry sees the
//! raised target instead of scaling twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::overlay::{DeleteBatch, LocalChange};
use super::{DomainError, NodeGroupService};
use crate::cloudify::{Cloudify, ScaleRequest};
use crate::inventory::{InstanceState, NodeGroup};

/// A node CA asks to delete.
#[derive(Debug, Clone, Default)]
pub struct NodeRef {
    /// `spec.providerID` (for fake nodes: the instance id we reported).
    pub provider_id: String,
    /// Node name.
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
        let snap = self.leader_snapshot().await?;
        let g = Self::group(&snap, id)?;
        let target = rt.target(g, &snap);
        if i64::from(target) + i64::from(delta) > i64::from(g.max) {
            self.metrics.scale("up", "rejected");
            return Err(DomainError::AboveMax {
                group: id.to_owned(),
                target,
                delta,
                max: g.max,
            });
        }
        let cloudify = self.source(g)?;
        let request = ScaleRequest {
            deployment_id: g.deployment.clone(),
            group: g.group.clone(),
            delta: i64::from(delta),
            include_instances: Vec::new(),
        };
        // Asked again right before the POST: the lease may have lapsed while we waited.
        let execution = self
            .within_term(async {
                cloudify.start_scale(&request).await.map_err(|e| {
                    self.metrics.scale("up", "error");
                    tracing::warn!(group = id, delta, error = %e, "scale-out refused by Cloudify");
                    DomainError::from(e)
                })
            })
            .await?;
        rt.with_overlay(&snap, |o| {
            o.changes.push(LocalChange {
                accepted_at: Instant::now(),
                delta,
                started: Some((execution.id.clone(), delta)),
                deleting: Vec::new(),
                cancelled: Vec::new(),
            })
        });
        self.metrics.scale("up", "accepted");
        tracing::info!(
            group = id, delta, from = target, to = target + delta, execution = %execution.id,
            status = %execution.status, "scale-out queued in Cloudify"
        );
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
        let snap = self.leader_snapshot().await?;
        let g = Self::group(&snap, id)?;
        let need = delta.saturating_neg();
        // Newest first: local scale-outs the snapshot does not show yet, then waiting ones.
        let (target, candidates) = rt.with_overlay(&snap, |o| {
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
                    .filter(|w| w.delta > 0 && !o.is_cancelled(&w.id))
                    .map(|w| (w.id.clone(), w.delta)),
            );
            (o.target(g), c)
        });
        let available: i32 = candidates.iter().map(|(_, d)| *d).sum();
        if available < need {
            return Err(DomainError::FailedPrecondition(format!(
                "node group {id:?}: cannot decrease target by {need}: only {available} requested \
                 instance(s) are not created yet, and DecreaseTargetSize never removes existing \
                 instances (use DeleteNodes)"
            )));
        }
        if target - need < g.min {
            return Err(DomainError::FailedPrecondition(format!(
                "node group {id:?}: target {target} - {need} would go below min size {}",
                g.min
            )));
        }
        let cloudify = self.source(g)?;
        let mut remaining = need;
        let mut cancelled = Vec::new();
        let mut applied = 0;
        let mut outcome = Ok(());
        for (exec_id, exec_delta) in candidates {
            if remaining == 0 {
                break;
            }
            match self
                .within_term(self.cancel_or_shrink(
                    cloudify.as_ref(),
                    g,
                    &exec_id,
                    exec_delta,
                    remaining,
                ))
                .await
            {
                Ok(removed) => {
                    cancelled.push(exec_id);
                    remaining -= removed;
                    applied += removed;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if applied > 0 {
            rt.with_overlay(&snap, |o| {
                o.changes.push(LocalChange {
                    accepted_at: Instant::now(),
                    delta: -applied,
                    started: None,
                    deleting: Vec::new(),
                    cancelled,
                })
            });
            tracing::info!(
                group = id,
                by = applied,
                "target decreased by cancelling waiting scale-outs"
            );
            self.inventory.trigger_refresh();
        }
        outcome
    }

    /// Cancels one waiting scale-out; if it adds more than needed, queues a smaller one in its
    /// place. Returns how much capacity was removed.
    async fn cancel_or_shrink(
        &self,
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
        cloudify.cancel_execution(exec_id).await?;
        self.metrics.scale("cancel", "accepted");
        if exec_delta > need {
            let request = ScaleRequest {
                deployment_id: g.deployment.clone(),
                group: g.group.clone(),
                delta: i64::from(exec_delta - need),
                include_instances: Vec::new(),
            };
            cloudify.start_scale(&request).await?;
            self.metrics.scale("up", "accepted");
        }
        Ok(exec_delta.min(need))
    }

    /// NodeGroupDeleteNodes: remove exactly these nodes. Concurrent calls on one group within the
    /// batching window become one `scale` execution with `include_instances`.
    pub async fn delete_nodes(
        self: &Arc<Self>,
        id: &str,
        nodes: &[NodeRef],
    ) -> Result<(), DomainError> {
        // A follower refuses before batching (the flush asks again before its POST).
        self.leader_term()?;
        let snap = self.inventory.snapshot();
        let g = Self::group(&snap, id)?;
        if nodes.is_empty() {
            return Err(DomainError::InvalidArgument("no nodes to delete".into()));
        }
        // Resolve everything first: one foreign or unknown node refuses the whole call before
        // any Cloudify call.
        let mut real: Vec<(String, String, InstanceState)> = Vec::new();
        let mut synthetic: BTreeSet<String> = BTreeSet::new();
        for n in nodes {
            if g.failed
                .iter()
                .any(|f| f.synthetic_ids.contains(&n.provider_id))
            {
                synthetic.insert(n.provider_id.clone());
                continue;
            }
            let r = snap
                .by_instance_id(&n.provider_id)
                .or_else(|| snap.lookup(&n.provider_id, &n.name));
            let Some((owner, inst)) = r.and_then(|r| snap.instance(r)) else {
                return Err(DomainError::InvalidArgument(format!(
                    "node {:?} (provider id {:?}) is not an instance of node group {id:?}",
                    n.name, n.provider_id
                )));
            };
            if owner.id != g.id {
                return Err(DomainError::InvalidArgument(format!(
                    "node {:?} belongs to node group {:?}, not {id:?}",
                    n.name, owner.id
                )));
            }
            if !real.iter().any(|(p, _, _)| *p == inst.provider_id) {
                real.push((
                    inst.provider_id.clone(),
                    inst.vm_instance.clone(),
                    inst.state,
                ));
            }
        }

        let rt = self.runtime(id);
        let window = self.settings.delete_batch_window;
        let joined = rt.with_overlay(&snap, |o| {
            let fresh: Vec<(String, String)> = real
                .iter()
                .filter(|(p, _, s)| {
                    *s != InstanceState::Deleting && !o.is_deleting(p) && !o.batched(p)
                })
                .map(|(p, v, _)| (p.clone(), v.clone()))
                .collect();
            let removing = i32::try_from(fresh.len() + synthetic.len()).unwrap_or(i32::MAX);
            let target = o.target(g) - o.batch_len();
            if removing > 0 && target - removing < g.min {
                return Err(DomainError::FailedPrecondition(format!(
                    "node group {id:?}: deleting {removing} node(s) would take target {target} \
                     below min size {}",
                    g.min
                )));
            }
            let now = Instant::now();
            for s in &synthetic {
                o.acked_failed.insert(s.clone(), now);
            }
            if fresh.is_empty() {
                return Ok(None);
            }
            let (tx, rx) = oneshot::channel();
            let start_flush = o.batch.is_none();
            let batch = o.batch.get_or_insert_with(DeleteBatch::default);
            batch.instances.extend(fresh);
            batch.waiters.push(tx);
            Ok(Some((rx, start_flush)))
        })?;
        if !synthetic.is_empty() {
            tracing::info!(group = id, ids = ?synthetic, "failed-instance records dropped at CA's request");
        }
        let Some((rx, start_flush)) = joined else {
            return Ok(());
        };
        if start_flush {
            let this = Arc::clone(self);
            let gid = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                this.flush_deletes(&gid).await;
            });
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(DomainError::Unavailable {
                message: "delete batch was dropped".into(),
                source: None,
            }),
        }
    }

    /// Sends one scale-in for the group's batch and answers every waiting call.
    async fn flush_deletes(self: &Arc<Self>, id: &str) {
        let rt = self.runtime(id);
        let _mutation = rt.mutation.lock().await;
        let snap = self.inventory.snapshot();
        let Some(batch) = rt.with_overlay(&snap, |o| o.batch.take()) else {
            return;
        };
        let result = self.send_scale_in(id, &batch.instances).await;
        match &result {
            Ok((exec_id, g_snapshot)) => {
                rt.with_overlay(&snap, |o| {
                    o.changes.push(LocalChange {
                        accepted_at: Instant::now(),
                        delta: -i32::try_from(batch.instances.len()).unwrap_or(i32::MAX),
                        // The execution id lets the overlay see when the snapshot counts it.
                        started: Some((
                            exec_id.clone(),
                            -i32::try_from(batch.instances.len()).unwrap_or(i32::MAX),
                        )),
                        deleting: batch.instances.iter().map(|(p, _)| p.clone()).collect(),
                        cancelled: Vec::new(),
                    });
                    o.requested_removals
                        .extend(batch.instances.iter().map(|(_, v)| v.clone()));
                });
                self.metrics.scale("down", "accepted");
                self.inventory.trigger_refresh();
                let named: Vec<String> = batch.instances.iter().map(|(_, v)| v.clone()).collect();
                tracing::info!(group = id, execution = %exec_id, instances = ?named, "scale-in queued in Cloudify");
                let this = Arc::clone(self);
                let (exec_id, before) = (exec_id.clone(), g_snapshot.clone());
                let gid = id.to_owned();
                tokio::spawn(
                    async move { this.verify_scale_in(&gid, &exec_id, before, named).await },
                );
            }
            Err(e) => {
                self.metrics.scale("down", "error");
                tracing::warn!(group = id, error = %e, "scale-in refused by Cloudify");
            }
        }
        for w in batch.waiters {
            // A waiter that went away (RPC cancelled) needs no answer.
            let _ = w.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
        }
    }

    async fn send_scale_in(
        &self,
        id: &str,
        instances: &[(String, String)],
    ) -> Result<(String, NodeGroup), DomainError> {
        let snap = self.leader_snapshot().await?;
        let g = Self::group(&snap, id)?;
        let cloudify = self.source(g)?;
        let include: Vec<String> = instances.iter().map(|(_, v)| v.clone()).collect();
        let request = ScaleRequest {
            deployment_id: g.deployment.clone(),
            group: g.group.clone(),
            delta: -i64::try_from(include.len()).unwrap_or(i64::MAX),
            include_instances: include,
        };
        let execution = self
            .within_term(async { Ok(cloudify.start_scale(&request).await?) })
            .await?;
        Ok((execution.id, g.clone()))
    }
}
