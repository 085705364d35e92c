//! [`LeaderClock`]: when this replica may mutate, from what the Lease and kube-lease-manager
//! say and the local monotonic clock. Pure state (every method takes the time), so the renew
//! deadline logic is tested with tokio's paused time.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::nodegroup::{LeaderTerm, NotLeader};

/// What the gate knows. Pure state: every method takes the current time, so the clock logic is
/// tested with tokio's paused time.
#[derive(Debug)]
pub struct LeaderClock {
    identity: String,
    renew_deadline: Duration,
    duration: Duration,
    /// kube-lease-manager says this replica holds the lease.
    elected: bool,
    /// The holder the Lease names (as last seen).
    holder: Option<String>,
    /// This replica's last renewal seen in the Lease (`renewTime`, on the monotonic clock).
    renewed_at: Option<Instant>,
    /// When the current term began (the gate last opened).
    term_since: Option<std::time::Instant>,
    /// Whether the gate was open at the last [`LeaderClock::tick`].
    was_open: bool,
    /// The Kubernetes API problem, if any (for logs and `/readyz`).
    problem: Option<String>,
}

impl LeaderClock {
    /// A clock for `identity`; the gate is closed until a renewal is seen.
    pub fn new(identity: impl Into<String>, renew_deadline: Duration, duration: Duration) -> Self {
        LeaderClock {
            identity: identity.into(),
            renew_deadline,
            duration,
            elected: false,
            holder: None,
            renewed_at: None,
            term_since: None,
            was_open: false,
            problem: None,
        }
    }

    /// kube-lease-manager reported a change: this replica now holds (or no longer holds) the
    /// lease.
    pub fn set_elected(&mut self, elected: bool) {
        self.elected = elected;
        if !elected {
            self.renewed_at = None;
        }
    }

    /// The Lease as the API server has it now. A renewal by this replica at `renew_time` (its
    /// own wall clock, as written by kube-lease-manager) opens the gate until `renew_time +
    /// renew_deadline`, measured on the monotonic clock from `now`/`wall_now`.
    pub fn observe(
        &mut self,
        holder: Option<String>,
        renew_time: Option<SystemTime>,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let mine = holder.as_deref() == Some(self.identity.as_str());
        self.holder = holder;
        if !mine {
            self.renewed_at = None;
            return;
        }
        if let Some(renewed) = renew_time {
            // A renewTime in the future (a clock step) counts as "just now", never as more.
            let age = wall_now.duration_since(renewed).unwrap_or(Duration::ZERO);
            let at = now.checked_sub(age).unwrap_or(now);
            self.renewed_at = Some(self.renewed_at.map_or(at, |v| v.max(at)));
        }
    }

    /// Records a Kubernetes API problem (`None` when it works again).
    pub fn set_problem(&mut self, problem: Option<String>) {
        self.problem = problem;
    }

    /// Whether this replica may mutate at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        self.elected && self.valid_until().is_some_and(|v| now < v)
    }

    /// `renewTime + renew_deadline`: until when the last renewal lets this replica mutate.
    fn valid_until(&self) -> Option<Instant> {
        self.renewed_at.map(|r| r + self.renew_deadline)
    }

    /// When the gate closes by itself, if it is open.
    pub fn closes_at(&self, now: Instant) -> Option<Instant> {
        self.valid_until().filter(|_| self.is_open(now))
    }

    /// Re-evaluates the gate at `now`: starts a new term when it opens, and returns
    /// `Some(open)` when it changed since the last tick.
    pub fn tick(&mut self, now: Instant) -> Option<bool> {
        let open = self.is_open(now);
        if open == self.was_open {
            return None;
        }
        self.was_open = open;
        if open {
            self.term_since = Some(std::time::Instant::now());
        }
        Some(open)
    }

    /// The gate's answer at `now`.
    pub fn check(&self, now: Instant) -> Result<LeaderTerm, NotLeader> {
        // `was_open` too: a term begins only at a tick, so `since` is always set when open.
        if self.is_open(now) && self.was_open {
            return Ok(LeaderTerm {
                since: self.term_since,
                // Others may take over `duration` after the renewal (their clocks agreeing).
                expires: self.renewed_at.map(|r| (r + self.duration).into_std()),
            });
        }
        let reason = if let Some(p) = &self.problem {
            p.clone()
        } else if self.elected {
            format!(
                "the lease was not renewed within {:?}; not mutating until it is",
                self.renew_deadline
            )
        } else {
            "another replica holds the lease".to_owned()
        };
        Err(NotLeader {
            holder: self.holder.clone().filter(|h| *h != self.identity),
            reason,
        })
    }

    /// The holder named by the Lease, if any.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// The current Kubernetes API problem, if any.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);
    const LEASE: Duration = Duration::from_secs(15);

    fn renewed_now(c: &mut LeaderClock, id: &str) {
        let wall = SystemTime::now();
        c.observe(Some(id.into()), Some(wall), Instant::now(), wall);
    }

    /// The gate closes when the local renew deadline passes without a renewal, even though
    /// kube-lease-manager still says "leader" (it does when the API server is unreachable), and
    /// strictly before the lease could expire for another replica.
    #[tokio::test(start_paused = true)]
    async fn gate_closes_at_the_renew_deadline_before_the_lease_expires() {
        let mut c = LeaderClock::new("me", DEADLINE, LEASE);
        assert!(c.check(Instant::now()).is_err(), "closed before election");
        c.set_elected(true);
        assert!(
            c.check(Instant::now()).is_err(),
            "closed until a renewal is seen"
        );
        renewed_now(&mut c, "me");
        let renewed = Instant::now();
        assert_eq!(c.tick(Instant::now()), Some(true));
        let term = c.check(Instant::now()).expect("open after a renewal");
        assert!(term.since.is_some());
        assert_eq!(
            term.expires,
            Some((renewed + LEASE).into_std()),
            "calls end by expiry"
        );

        tokio::time::advance(DEADLINE - Duration::from_millis(1)).await;
        assert_eq!(c.tick(Instant::now()), None);
        assert!(
            c.check(Instant::now()).is_ok(),
            "still open just before the deadline"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            c.tick(Instant::now()),
            Some(false),
            "closed at the deadline"
        );
        let e = c.check(Instant::now()).expect_err("closed");
        assert!(e.reason.contains("not renewed"), "{e}");
        assert!(
            Instant::now() < renewed + LEASE,
            "closed before others may take the lease"
        );
        assert_eq!(c.closes_at(Instant::now()), None);

        // A later renewal reopens it, as a new term.
        renewed_now(&mut c, "me");
        assert_eq!(c.tick(Instant::now()), Some(true));
        let again = c.check(Instant::now()).expect("open");
        assert_ne!(again.since, term.since, "a new term after a gap");
    }

    /// An old renewTime only buys what is left of the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_late_observed_renewal_counts_from_its_renew_time() {
        let mut c = LeaderClock::new("me", DEADLINE, LEASE);
        c.set_elected(true);
        let wall = SystemTime::now();
        c.observe(
            Some("me".into()),
            Some(wall - Duration::from_secs(7)),
            Instant::now(),
            wall,
        );
        c.tick(Instant::now());
        assert_eq!(
            c.closes_at(Instant::now()),
            Some(Instant::now() + Duration::from_secs(3))
        );
    }

    /// Another holder in the Lease closes the gate at once and is named to the caller.
    #[tokio::test(start_paused = true)]
    async fn another_holder_closes_the_gate_and_is_named() {
        let mut c = LeaderClock::new("me", DEADLINE, LEASE);
        c.set_elected(true);
        renewed_now(&mut c, "me");
        c.tick(Instant::now());
        renewed_now(&mut c, "pod-b-1234");
        assert_eq!(c.tick(Instant::now()), Some(false));
        let e = c.check(Instant::now()).expect_err("closed");
        assert_eq!(e.holder.as_deref(), Some("pod-b-1234"));
        assert!(e.to_string().contains("pod-b-1234"), "{e}");
    }

    /// The manager reporting loss closes the gate even with a fresh renewal.
    #[tokio::test(start_paused = true)]
    async fn loss_reported_by_the_manager_closes_the_gate() {
        let mut c = LeaderClock::new("me", DEADLINE, LEASE);
        c.set_elected(true);
        renewed_now(&mut c, "me");
        c.tick(Instant::now());
        c.set_elected(false);
        assert_eq!(c.tick(Instant::now()), Some(false));
        assert!(c.check(Instant::now()).is_err());
    }
}
