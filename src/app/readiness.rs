//! `/readyz`: what makes a replica Ready (issue 21; issue 24 item 6 asked for it to leave the
//! composition root).
//!
//! Every healthy replica is Ready: its first snapshot is loaded, no Cloudify entry has an
//! authentication problem, and, with leader election, it can reach the Lease. Leadership is not
//! part of readiness: a Deployment whose followers were never Ready never became Available, so
//! `kubectl rollout status` and `helm upgrade --wait` never finished and the PodDisruptionBudget
//! refused every eviction (a drain of the leader's node hung on 429). CA reaches the leader
//! through the Pod label the leader sets ([`crate::kube::lease::label`]); a replica that still
//! carries that label after losing the lease is the one case where leadership makes it unready,
//! so the Service stops sending CA to a replica that refuses mutations.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cloudify::{Cloudify, CloudifyClient};
use crate::inventory::Inventory;
use crate::kube::lease::label::LabelWritten;
use crate::kube::lease::{LeaseElection, LeaseGate};
use crate::observability::http::{Readiness, ReadinessFn};
use crate::observability::metrics::Metrics;

/// What `/readyz` says about the Lease and the leader label.
pub(super) struct LeaseView {
    gate: Arc<LeaseGate>,
    leading: watch::Receiver<bool>,
    identity: String,
    name: String,
    label: Option<(String, LabelWritten)>,
}

/// The Lease part of readiness: whether it keeps the replica out of the Service, and why.
struct LeaseStatus {
    leader: bool,
    blocks_ready: bool,
    detail: serde_json::Value,
}

impl LeaseView {
    /// The view of a running election; `label` = the leader label's key and its written state,
    /// when this replica labels its Pod.
    pub(super) fn of(
        e: &LeaseElection,
        name: &str,
        label: Option<(String, LabelWritten)>,
    ) -> LeaseView {
        LeaseView {
            gate: Arc::clone(&e.gate),
            leading: e.leading.clone(),
            identity: e.identity.clone(),
            name: name.to_owned(),
            label,
        }
    }

    /// Whether this replica leads, whether the Lease keeps it unready (an API problem, or a stale
    /// leader label), and the details: the holder, the problem, and, while not leading, the
    /// gate's own words (another holder, a lapsed renewal).
    fn status(&self) -> LeaseStatus {
        let (holder, problem) = self.gate.describe();
        let leader = *self.leading.borrow();
        let reason = crate::nodegroup::Leadership::check(self.gate.as_ref())
            .err()
            .map(|e| e.to_string());
        let written = self.label.as_ref().and_then(|(_, w)| *w.borrow());
        let stale_label = written == Some(true) && !leader;
        let detail = serde_json::json!({
            "name": self.name,
            "identity": self.identity,
            "leader": leader,
            "holder": holder,
            "problem": problem,
            "reason": if leader { None } else { reason },
            "leader_label": self.label.as_ref().map(|(key, _)| serde_json::json!({
                "key": key,
                "written": written,
                "stale": stale_label,
            })),
        });
        LeaseStatus {
            leader,
            blocks_ready: problem.is_some() || stale_label,
            detail,
        }
    }
}

/// `/readyz`: Ready once the first snapshot is loaded and no Cloudify entry has an authentication
/// problem, and, with an election, while the Lease is reachable and no stale leader label is left
/// on this replica's Pod. Followers are Ready too (see the module comment).
pub(super) fn readiness(
    inventory: Arc<Inventory>,
    metrics: Arc<Metrics>,
    clients: Vec<Arc<CloudifyClient>>,
    lease: Option<LeaseView>,
) -> ReadinessFn {
    Arc::new(move || {
        let st = inventory.status();
        metrics.snapshot_age.set(st.snapshot_age.as_secs_f64());
        let auth: Vec<String> = clients
            .iter()
            .filter_map(|c| c.auth_problem().map(|m| format!("{}: {m}", c.name())))
            .collect();
        let lease = lease.as_ref().map(LeaseView::status);
        let leader = lease.as_ref().is_none_or(|l| l.leader);
        let lease_blocks = lease.as_ref().is_some_and(|l| l.blocks_ready);
        Readiness {
            ready: st.ready && auth.is_empty() && !lease_blocks,
            detail: serde_json::json!({
                "leader": leader,
                "lease": lease.map(|l| l.detail),
                "snapshot_loaded": st.ready,
                "snapshot_age_seconds": if st.ready { Some(st.snapshot_age.as_secs_f64()) } else { None },
                "groups": st.groups,
                "instances": st.instances,
                "cloudify_reachable": st.last_error.is_none(),
                "last_refresh_error": st.last_error,
                "auth_problem": st.auth_problem || !auth.is_empty(),
                "auth_errors": auth,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cloudify::fake::FakeCloudify;

    fn inventory(metrics: &Arc<Metrics>) -> Arc<Inventory> {
        let fake: Arc<dyn Cloudify> = Arc::new(FakeCloudify::new("fake", "t"));
        let config = crate::inventory::testkit::config("cloudify: [{url: \"http://fake\"}]");
        Inventory::new(
            vec![fake],
            Arc::new(config.node_groups),
            Arc::clone(metrics),
        )
    }

    async fn loaded(metrics: &Arc<Metrics>) -> Arc<Inventory> {
        let inv = inventory(metrics);
        inv.refresh().await.expect("refresh");
        inv
    }

    /// A replica in an election: `leading` as given, the leader label last written as `written`.
    fn view(
        leading: bool,
        written: Option<bool>,
    ) -> (LeaseView, watch::Sender<bool>, watch::Sender<Option<bool>>) {
        let (lead_tx, lead_rx) = watch::channel(leading);
        let (label_tx, label_rx) = watch::channel(written);
        let view = LeaseView {
            gate: Arc::new(LeaseGate::new(
                "me",
                Duration::from_secs(10),
                Duration::from_secs(15),
            )),
            leading: lead_rx,
            identity: "me".into(),
            name: "lease".into(),
            label: Some(("autoscaler-cloudify.io/leader".into(), label_rx)),
        };
        (view, lead_tx, label_tx)
    }

    #[tokio::test]
    async fn a_sole_replica_is_ready_once_the_first_snapshot_is_loaded() {
        let metrics = Metrics::new();
        let inv = inventory(&metrics);
        let ready = readiness(Arc::clone(&inv), Arc::clone(&metrics), Vec::new(), None);
        let before = ready();
        assert!(!before.ready);
        assert_eq!(before.detail["snapshot_loaded"], false);
        assert_eq!(
            before.detail["snapshot_age_seconds"],
            serde_json::Value::Null
        );
        inv.refresh().await.expect("refresh");
        let after = ready();
        assert!(after.ready, "{}", after.detail);
        assert_eq!(
            after.detail["leader"], true,
            "no election: the only replica leads"
        );
        assert_eq!(after.detail["lease"], serde_json::Value::Null);
        assert_eq!(after.detail["cloudify_reachable"], true);
    }

    /// Issue 21: with only the leader Ready, a two-replica Deployment never became Available and
    /// the PDB refused to evict the leader. A follower with a loaded snapshot is Ready now.
    #[tokio::test]
    async fn a_follower_is_ready_and_says_it_does_not_lead() {
        let metrics = Metrics::new();
        let (view, _lead, _label) = view(false, Some(false));
        let ready = readiness(loaded(&metrics).await, metrics, Vec::new(), Some(view));
        let r = ready();
        assert!(r.ready, "{}", r.detail);
        assert_eq!(r.detail["leader"], false);
        assert_eq!(r.detail["lease"]["leader_label"]["written"], false);
    }

    /// The Service selects the leader label: a replica that lost the lease but could not remove
    /// its label must leave the Service through readiness, and come back once the label is gone.
    #[tokio::test]
    async fn a_stale_leader_label_makes_a_follower_unready_until_it_is_removed() {
        let metrics = Metrics::new();
        let (view, lead, label) = view(true, Some(true));
        let ready = readiness(loaded(&metrics).await, metrics, Vec::new(), Some(view));
        assert!(ready().ready, "the labelled leader");
        lead.send_replace(false);
        let r = ready();
        assert!(!r.ready, "lost the lease, label still on: {}", r.detail);
        assert_eq!(r.detail["lease"]["leader_label"]["stale"], true);
        label.send_replace(Some(false));
        assert!(ready().ready, "label removed");
    }
}
