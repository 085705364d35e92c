//! The leadership gate the domain consults before every Cloudify mutation (issue #13).
//!
//! With several replicas, only the leader may mutate: two replicas could each pass the max check
//! and together scale past max. The domain does not know how leadership is decided (the
//! composition root plugs in the Kubernetes Lease from `crate::kube::lease`); it only asks, right
//! before each POST, whether this process may mutate now.

use std::fmt;
use std::time::Instant;

/// Why this process may not mutate now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLeader {
    /// The identity holding the lease, if known (for the `UNAVAILABLE` message, so an operator
    /// or CA's logs name where mutations go).
    pub holder: Option<String>,
    /// Why (another replica leads, the lease expired locally, the API server is unreachable).
    pub reason: String,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this replica is not the leader ({})", self.reason)?;
        match &self.holder {
            Some(h) => write!(f, "; the leader is {h:?}"),
            None => write!(f, "; no leader is known"),
        }
    }
}

/// The current leadership term of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTerm {
    /// When this term began, `None` for a sole replica. Another replica may have mutated before
    /// it, so the domain mutates only on a snapshot fetched after this instant (Cloudify is the
    /// source of truth; the overlay of a former term, or of no term, is not).
    pub since: Option<Instant>,
    /// The earliest instant another replica could take over (the lease's expiry as others
    /// compute it), `None` for a sole replica. A Cloudify call started in this term must be
    /// answered before it, or its outcome is unknown to the next leader's catch-up refresh.
    pub expires: Option<Instant>,
}

/// Whether this process may mutate Cloudify now.
pub trait Leadership: Send + Sync {
    /// The current term, or why there is none. Must be cheap: it runs on every mutation, right
    /// before the Cloudify call.
    fn check(&self) -> Result<LeaderTerm, NotLeader>;
}

/// A single process without Kubernetes: always the leader, and nobody else ever mutated.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoleReplica;

impl Leadership for SoleReplica {
    fn check(&self) -> Result<LeaderTerm, NotLeader> {
        Ok(LeaderTerm {
            since: None,
            expires: None,
        })
    }
}
