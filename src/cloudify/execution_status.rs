//! The status of a Cloudify execution as a closed vocabulary (issue 24): Cloudify's ten
//! statuses, and [`ExecutionStatus::Unknown`] for one a later Cloudify may add (or none at all),
//! which is never taken for any of the ten: an unknown status neither waits, runs nor ends.

use serde::{Deserialize, Deserializer};

use crate::observability::metrics::ScaleResult;

/// `status` of an execution (`GET /executions`), as Cloudify names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// Accepted, its workflow not started yet.
    Pending,
    /// The workflow runs (a `scale` may or may not have started its deployment modification).
    Started,
    /// A cancel was asked and is in progress.
    Cancelling,
    /// A force-cancel was asked and is in progress.
    ForceCancelling,
    /// A kill-cancel was asked and is in progress.
    KillCancelling,
    /// Ended by a cancel.
    Cancelled,
    /// Ended successfully.
    Terminated,
    /// Ended with an error.
    Failed,
    /// Waiting for another execution of the deployment (`queue: true`).
    Queued,
    /// Waiting for its scheduled time.
    Scheduled,
    /// A status this client does not know, kept as sent (`""` when the answer had none).
    Unknown(String),
}

impl Default for ExecutionStatus {
    fn default() -> Self {
        ExecutionStatus::Unknown(String::new())
    }
}

impl ExecutionStatus {
    /// Every status Cloudify documents, in its own order.
    pub const KNOWN: [ExecutionStatus; 10] = [
        ExecutionStatus::Pending,
        ExecutionStatus::Started,
        ExecutionStatus::Cancelling,
        ExecutionStatus::ForceCancelling,
        ExecutionStatus::KillCancelling,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Terminated,
        ExecutionStatus::Failed,
        ExecutionStatus::Queued,
        ExecutionStatus::Scheduled,
    ];

    /// The status as Cloudify spells it (`Unknown` as it was sent).
    pub fn as_str(&self) -> &str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Started => "started",
            ExecutionStatus::Cancelling => "cancelling",
            ExecutionStatus::ForceCancelling => "force_cancelling",
            ExecutionStatus::KillCancelling => "kill_cancelling",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Terminated => "terminated",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Scheduled => "scheduled",
            ExecutionStatus::Unknown(s) => s,
        }
    }

    /// Cloudify's word for a status; anything else is `Unknown`.
    pub fn parse(text: &str) -> ExecutionStatus {
        ExecutionStatus::KNOWN
            .into_iter()
            .find(|s| s.as_str() == text)
            .unwrap_or_else(|| ExecutionStatus::Unknown(text.to_owned()))
    }

    /// Not started yet: a scale's delta is not in `planned_instances` yet.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            ExecutionStatus::Queued | ExecutionStatus::Pending | ExecutionStatus::Scheduled
        )
    }

    /// May still change the group: waiting, running or being cancelled.
    pub fn is_active(&self) -> bool {
        self.is_waiting()
            || matches!(
                self,
                ExecutionStatus::Started
                    | ExecutionStatus::Cancelling
                    | ExecutionStatus::ForceCancelling
                    | ExecutionStatus::KillCancelling
            )
    }

    /// Will never change the group again.
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            ExecutionStatus::Terminated | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_str() {
            "" => f.write_str("(no status)"),
            text => f.write_str(text),
        }
    }
}

/// The metric result of a scale execution that ended in this status: a closed set, whatever
/// Cloudify sent.
impl From<&ExecutionStatus> for ScaleResult {
    fn from(s: &ExecutionStatus) -> Self {
        match s {
            ExecutionStatus::Terminated => ScaleResult::Terminated,
            ExecutionStatus::Failed => ScaleResult::Failed,
            ExecutionStatus::Cancelled => ScaleResult::Cancelled,
            _ => ScaleResult::Other,
        }
    }
}

impl<'de> Deserialize<'de> for ExecutionStatus {
    /// Any string; a `null` or another type is `Unknown("")` (the models are tolerant: one
    /// odd field must not fail a whole page).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => ExecutionStatus::parse(&s),
            _ => ExecutionStatus::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus as S;

    #[test]
    fn every_known_status_reads_back_and_an_unknown_one_is_kept() {
        for s in S::KNOWN {
            assert_eq!(S::parse(s.as_str()), s);
        }
        assert_eq!(S::parse("exploded"), S::Unknown("exploded".into()));
        assert_eq!(S::parse(""), S::default());
        let decoded: Vec<S> =
            serde_json::from_str(r#"["queued", "Terminated", null, 3]"#).expect("decode");
        assert_eq!(
            decoded,
            [
                S::Queued,
                S::Unknown("Terminated".into()),
                S::default(),
                S::default()
            ]
        );
    }

    #[test]
    fn a_metric_result_is_one_of_four_words_whatever_the_status() {
        use crate::observability::metrics::ScaleResult as R;
        let results: Vec<R> = [S::Terminated, S::Failed, S::Cancelled, S::Started]
            .iter()
            .chain(&[S::Unknown("x\"} 1".into())])
            .map(R::from)
            .collect();
        assert_eq!(
            results,
            [R::Terminated, R::Failed, R::Cancelled, R::Other, R::Other]
        );
    }

    #[test]
    fn waiting_active_and_ended_cover_cloudify_s_statuses_and_nothing_else() {
        let waiting: Vec<&str> = S::KNOWN
            .iter()
            .filter(|s| s.is_waiting())
            .map(S::as_str)
            .collect();
        assert_eq!(waiting, ["pending", "queued", "scheduled"]);
        let ended: Vec<&str> = S::KNOWN
            .iter()
            .filter(|s| s.is_ended())
            .map(S::as_str)
            .collect();
        assert_eq!(ended, ["cancelled", "terminated", "failed"]);
        for s in S::KNOWN {
            assert_ne!(
                s.is_active(),
                s.is_ended(),
                "{s}: active or ended, never both"
            );
        }
        for odd in [S::Unknown("exploded".into()), S::default()] {
            assert!(
                !odd.is_waiting() && !odd.is_active() && !odd.is_ended(),
                "{odd}"
            );
        }
    }
}
