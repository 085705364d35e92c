//! Leader election on a `coordination.k8s.io/v1` Lease (issue #13).
//!
//! The lease algorithm (acquire an orphaned or expired lease with server-side apply, renew,
//! release) is kube-lease-manager's. It reports a change of holder, but not a failed renewal: with
//! the API server unreachable its "leader" flag stays up. So this module keeps its own clock,
//! [`LeaderClock`]: it watches the Lease and, each time it sees a renewal by this replica, opens the
//! gate until `renewTime + renew_deadline`. `renew_deadline < duration`, so the leader stops
//! mutating strictly before any other replica may take the lease (others wait `duration` after the
//! last renewal). The gate is what the domain consults ([`Leadership`]).
//!
//! Every replica keeps its snapshot warm, answers reads and is Ready; [`LeaseElection::leading`] tells the
//! composition root when to label its Pod as the leader (`label`) and when to drop CA's gRPC
//! connections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::LeaseConfig;
use crate::nodegroup::{LeaderTerm, Leadership, NotLeader};

mod clock;
pub mod label;
pub use clock::LeaderClock;

/// This replica's identity in the Lease: the pod name (`POD_NAME`, else `HOSTNAME`) plus a random
/// suffix, so a restarted pod with the same name is a new holder and never mistakes the old
/// holder's lease for its own.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "autoscaler-cloudify".into());
    format!("{base}-{}", random_suffix())
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mixing in the time and pid makes two
    // processes started in the same instant differ too.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}

/// The gate the domain consults: a [`LeaderClock`] behind a mutex held only for a few field
/// reads (never across an await), so mutations pay nanoseconds for it.
#[derive(Debug)]
pub struct LeaseGate {
    clock: Mutex<LeaderClock>,
}

impl LeaseGate {
    /// A closed gate for `identity`: it opens when the election sees this replica's renewals.
    pub fn new(identity: &str, renew_deadline: Duration, duration: Duration) -> LeaseGate {
        LeaseGate {
            clock: Mutex::new(LeaderClock::new(identity, renew_deadline, duration)),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut LeaderClock) -> R) -> R {
        let mut guard = match self.clock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// The holder named by the Lease and the current problem, for `/readyz`.
    pub fn describe(&self) -> (Option<String>, Option<String>) {
        self.with(|c| {
            (
                c.holder().map(str::to_owned),
                c.problem().map(str::to_owned),
            )
        })
    }
}

impl Leadership for LeaseGate {
    fn check(&self) -> Result<LeaderTerm, NotLeader> {
        self.with(|c| c.check(Instant::now()))
    }
}

/// A running election.
pub struct LeaseElection {
    /// This replica's `holderIdentity` in the Lease (see [`identity`]).
    pub identity: String,
    /// The Lease's namespace (`lease.namespace`, else `POD_NAMESPACE`, else the client's).
    pub namespace: String,
    /// What the domain asks right before every mutation; also answers `/readyz`'s lease details.
    pub gate: Arc<LeaseGate>,
    /// True while this replica leads (the gate is open); changes when it opens or closes.
    pub leading: watch::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseElection {
    /// Stops mutating at once, then releases the lease (so another replica takes over without
    /// waiting for it to expire) and stops, waiting at most `limit`.
    pub async fn stop(mut self, limit: Duration) {
        self.gate.with(|c| c.set_elected(false));
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Starts the election in the background. Never fails: an unreachable or forbidden API server is
/// logged, shown by [`LeaseGate::describe`], and retried.
pub fn start(client: kube::Client, settings: &LeaseConfig, identity: String) -> LeaseElection {
    let namespace = settings
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let gate = Arc::new(LeaseGate::new(
        &identity,
        settings.renew_deadline,
        settings.duration,
    ));
    let (leading_tx, leading) = watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    tracing::info!(
        lease = %settings.name, %namespace, %identity,
        duration = ?settings.duration, renew_deadline = ?settings.renew_deadline,
        renew_period = ?settings.renew_period,
        "leader election on a Kubernetes Lease: only the leader mutates"
    );
    let task = tokio::spawn(run(
        client,
        settings.clone(),
        namespace.clone(),
        identity.clone(),
        Arc::clone(&gate),
        leading_tx,
        stop_rx,
    ));
    LeaseElection {
        identity,
        namespace,
        gate,
        leading,
        stop: Some(stop_tx),
        task,
    }
}

/// A Kubernetes API error in words an operator can act on.
fn explain(e: &kube::Error, lease: &str, namespace: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "Kubernetes API forbids access to Lease {namespace}/{lease} (the service account \
             needs get, list, watch, create, update and patch on leases.coordination.k8s.io): {}",
            s.message
        ),
        kube::Error::Api(s) => format!(
            "Kubernetes API refused Lease {namespace}/{lease}: {} ({})",
            s.message, s.code
        ),
        other => format!("Kubernetes API server unreachable: {other}"),
    }
}

fn lease_error(e: &kube_lease_manager::LeaseManagerError, lease: &str, namespace: &str) -> String {
    use kube_lease_manager::LeaseManagerError as E;
    match e {
        E::KubeError(k) => explain(k, lease, namespace),
        other => format!("Lease {namespace}/{lease}: {other}"),
    }
}

/// Records a problem, logging it when it is new (not on every retry).
fn report(gate: &LeaseGate, problem: Option<String>) {
    gate.with(|c| {
        if c.problem() != problem.as_deref() {
            match &problem {
                Some(p) => tracing::warn!(problem = %p, "leader election: Kubernetes API problem"),
                None => tracing::info!("leader election: Kubernetes API reachable again"),
            }
        }
        c.set_problem(problem);
    });
}

async fn build_manager(
    client: &kube::Client,
    s: &LeaseConfig,
    namespace: &str,
    identity: &str,
    gate: &LeaseGate,
) -> LeaseManager {
    let mut backoff = Duration::from_secs(1);
    loop {
        // kube-lease-manager renews `grace` seconds before expiry: renew every renew_period.
        let grace = s.duration.saturating_sub(s.renew_period).as_secs().max(1);
        let params = LeaseParams::new(identity, s.duration.as_secs(), grace);
        match LeaseManagerBuilder::new(client.clone(), &s.name)
            .with_namespace(namespace)
            .with_parameters(params)
            .build()
            .await
        {
            Ok(m) => return m,
            Err(e) => report(gate, Some(lease_error(&e, &s.name, namespace))),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn renew_time(l: &Lease) -> Option<SystemTime> {
    let t = l.spec.as_ref()?.renew_time.as_ref()?;
    let ns = t.0.as_nanosecond();
    let since_epoch = Duration::from_nanos(u64::try_from(ns).ok()?);
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// What one event of the Lease watch meant for the election loop.
#[derive(Debug, PartialEq, Eq)]
enum Watched {
    /// Recorded in the gate (a renewal, a new holder, a deletion, a watch error).
    Noted,
    /// Another holder released the lease: try to take it now.
    Released,
    /// The watch stream ended.
    Ended,
}

/// True when the Lease shows no holder while another replica held it and this one is not
/// elected: a clean shutdown of that holder (rolling update, drain). kube-lease-manager would
/// only notice when that holder's last term expires; a fresh manager reads the Lease now and
/// takes it at once.
fn released_by_other(
    new_holder: Option<&str>,
    elected: bool,
    known_holder: Option<&str>,
    identity: &str,
) -> bool {
    new_holder.is_none() && !elected && known_holder.is_some_and(|h| h != identity)
}

/// Records one event of the Lease watch in the gate (and a problem in the report).
fn on_event(
    ev: Option<Result<watcher::Event<Lease>, watcher::Error>>,
    gate: &LeaseGate,
    identity: &str,
    elected: bool,
    name: &str,
    namespace: &str,
) -> Watched {
    match ev {
        Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => {
            let holder = l.spec.as_ref().and_then(|sp| sp.holder_identity.clone());
            let released =
                gate.with(|c| released_by_other(holder.as_deref(), elected, c.holder(), identity));
            gate.with(|c| c.observe(holder, renew_time(&l), Instant::now(), SystemTime::now()));
            if gate.with(|c| c.problem().is_some()) {
                report(gate, None);
            }
            if released {
                Watched::Released
            } else {
                Watched::Noted
            }
        }
        Some(Ok(watcher::Event::Delete(_))) => {
            gate.with(|c| c.observe(None, None, Instant::now(), SystemTime::now()));
            Watched::Noted
        }
        Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => Watched::Noted,
        Some(Err(e)) => {
            let msg = match &e {
                watcher::Error::InitialListFailed(k)
                | watcher::Error::WatchStartFailed(k)
                | watcher::Error::WatchFailed(k) => explain(k, name, namespace),
                other => format!("watching Lease {namespace}/{name}: {other}"),
            };
            report(gate, Some(msg));
            Watched::Noted
        }
        None => {
            report(gate, Some("the Lease watch ended".into()));
            Watched::Ended
        }
    }
}

async fn run(
    client: kube::Client,
    s: LeaseConfig,
    namespace: String,
    identity: String,
    gate: Arc<LeaseGate>,
    leading: watch::Sender<bool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let publish = |gate: &LeaseGate| {
        if let Some(open) = gate.with(|c| c.tick(Instant::now())) {
            let holder = gate.with(|c| c.holder().map(str::to_owned));
            if open {
                tracing::info!(%identity, "leader: this replica holds the lease; accepting mutations");
            } else {
                tracing::warn!(%identity, ?holder, "no longer the leader: mutations refused, closing CA's connections");
            }
            leading.send_replace(open);
        }
    };
    // The Lease watch: every renewal (ours or another's) is an event. It starts before the
    // manager so a problem reaching the API server shows at once.
    let api: kube::Api<Lease> = kube::Api::namespaced(client.clone(), &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", s.name));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    let manager = tokio::select! {
        m = build_manager(&client, &s, &namespace, &identity, &gate) => m,
        _ = &mut stop => return,
    };
    report(&gate, None);
    let (mut elected, mut manager_task) = manager.watch().await;
    loop {
        let closes = gate.with(|c| c.closes_at(Instant::now()));
        let mut released = false;
        tokio::select! {
            _ = &mut stop => break,
            changed = elected.changed() => {
                if changed.is_err() {
                    report(&gate, Some("lease manager stopped".into()));
                    gate.with(|c| c.set_elected(false));
                    publish(&gate);
                    return;
                }
                let now_elected = *elected.borrow_and_update();
                gate.with(|c| c.set_elected(now_elected));
            }
            ev = events.next() => match on_event(ev, &gate, &identity, *elected.borrow(), &s.name, &namespace) {
                Watched::Released => released = true,
                Watched::Noted => {}
                Watched::Ended => break,
            },
            // The renew deadline passed without a renewal: close now, before the lease expires
            // for others.
            () = async { match closes { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
        }
        publish(&gate);
        if released {
            tracing::info!(%identity, "the leader released the lease; trying to take it now");
            // Dropping the receiver stops the old manager (it holds nothing to release).
            drop(elected);
            if tokio::time::timeout(Duration::from_secs(5), &mut manager_task)
                .await
                .is_err()
            {
                manager_task.abort();
            }
            let manager = tokio::select! {
                m = build_manager(&client, &s, &namespace, &identity, &gate) => m,
                _ = &mut stop => return,
            };
            (elected, manager_task) = manager.watch().await;
        }
    }
    gate.with(|c| c.set_elected(false));
    publish(&gate);
    // Dropping the receiver makes kube-lease-manager release the lease and stop.
    drop(elected);
    match manager_task.await {
        Ok(Ok(_)) => tracing::info!("lease released"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not release the lease; it expires by itself")
        }
        Err(e) => tracing::warn!(error = %e, "lease manager task failed"),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    #[test]
    fn identities_differ_per_call() {
        assert_ne!(super::identity(), super::identity());
    }

    fn gate() -> LeaseGate {
        LeaseGate::new("me", Duration::from_secs(4), Duration::from_secs(6))
    }

    fn lease(holder: Option<&str>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    fn apply(g: &LeaseGate, holder: Option<&str>, elected: bool) -> Watched {
        let ev = Some(Ok(watcher::Event::Apply(lease(holder))));
        on_event(ev, g, "me", elected, "l", "ns")
    }

    #[test]
    fn only_another_holders_release_is_one_to_take_over() {
        assert!(released_by_other(None, false, Some("other"), "me"));
        assert!(
            !released_by_other(None, false, Some("me"), "me"),
            "our own release"
        );
        assert!(
            !released_by_other(None, true, Some("other"), "me"),
            "elected already"
        );
        assert!(
            !released_by_other(None, false, None, "me"),
            "nobody held it"
        );
        assert!(
            !released_by_other(Some("x"), false, Some("other"), "me"),
            "a new holder"
        );
    }

    #[test]
    fn watch_events_update_the_holder_and_a_release_is_told() {
        let g = gate();
        assert_eq!(apply(&g, Some("other"), false), Watched::Noted);
        assert_eq!(g.describe().0.as_deref(), Some("other"));
        assert_eq!(apply(&g, None, false), Watched::Released);
        assert_eq!(g.describe().0, None);
        let deleted = Some(Ok(watcher::Event::Delete(lease(Some("x")))));
        assert_eq!(
            on_event(deleted, &g, "me", false, "l", "ns"),
            Watched::Noted
        );
        assert_eq!(on_event(None, &g, "me", false, "l", "ns"), Watched::Ended);
        assert_eq!(
            g.describe().1.as_deref(),
            Some("the Lease watch ended"),
            "reported for /readyz"
        );
    }
}
