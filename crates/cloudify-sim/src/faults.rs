//! Fault injection (`/_sim/faults`) and request accounting (`/_sim/requests`): the test-only
//! surface outside `/api/v3.1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The faults currently injected. Every field is optional in `POST /_sim/faults` and merged
/// into the current set; `DELETE /_sim/faults` resets to this type's default (no faults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Delay added before every `/api/v3.1` answer.
    pub latency_ms: u64,
    /// Probability (0.0-1.0) that a request is answered `500 internal_server_error`.
    pub error_rate: f64,
    /// Answer every request with `503 maintenance_mode_active`.
    pub down: bool,
    /// The next N executions that start fail (a scale-out after creating its VMs, then rolls
    /// back unless `rollback_if_failed` is false).
    pub fail_next_executions: u64,
    /// Error text of those failures, e.g. `Quota exceeded for instances`.
    pub fail_reason: Option<String>,
    /// Keep new executions `pending`/`queued` without starting them until set back to false.
    pub hold_executions: bool,
    /// How long a `scale` stays `started` before it validates its parameters and starts its
    /// deployment modification (a manager's workflow start-up); `planned_instances` does not
    /// show it meanwhile.
    pub started_window_ms: u64,
    /// The next N `POST /executions` are answered `500 internal_server_error` (nothing stored),
    /// to fail one call of a sequence (e.g. a replacement scale after a cancel).
    pub reject_next_execution_posts: u64,
    /// The next N unsorted `GET /node-instances` pages after the first (`_offset > 0`) are
    /// served as if an instance had been inserted ahead of them since the previous page: they
    /// start one row later (that row is skipped by offset paging) and `total` is one higher.
    pub churn_next_pages: u64,
}

/// A partial update of [`Faults`] (`POST /_sim/faults`): the fields that are set replace the
/// current ones, the others stay. [`crate::SimControl::set_faults`] sends one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    /// See [`Faults::latency_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// See [`Faults::error_rate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// See [`Faults::down`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
    /// See [`Faults::fail_next_executions`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_next_executions: Option<u64>,
    /// See [`Faults::fail_reason`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// See [`Faults::hold_executions`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_executions: Option<bool>,
    /// See [`Faults::started_window_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_window_ms: Option<u64>,
    /// See [`Faults::reject_next_execution_posts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_next_execution_posts: Option<u64>,
    /// See [`Faults::churn_next_pages`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn_next_pages: Option<u64>,
}

/// Failure text used when a test injects failures without saying why.
pub(crate) const DEFAULT_FAIL_REASON: &str = "Simulated failure injected through /_sim/faults";

impl Faults {
    /// Merges a patch; `error_rate` must lie in 0.0..=1.0.
    pub(crate) fn apply(&mut self, patch: FaultsPatch) -> Result<(), String> {
        if let Some(rate) = patch.error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("error_rate must be within 0.0-1.0, got {rate}"));
            }
            self.error_rate = rate;
        }
        if let Some(v) = patch.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = patch.down {
            self.down = v;
        }
        if let Some(v) = patch.fail_next_executions {
            self.fail_next_executions = v;
        }
        if let Some(v) = patch.fail_reason {
            self.fail_reason = Some(v);
        }
        if let Some(v) = patch.hold_executions {
            self.hold_executions = v;
        }
        if let Some(v) = patch.started_window_ms {
            self.started_window_ms = v;
        }
        if let Some(v) = patch.reject_next_execution_posts {
            self.reject_next_execution_posts = v;
        }
        if let Some(v) = patch.churn_next_pages {
            self.churn_next_pages = v;
        }
        Ok(())
    }

    /// Consumes one injected page churn.
    pub(crate) fn take_page_churn(&mut self) -> bool {
        if self.churn_next_pages == 0 {
            return false;
        }
        self.churn_next_pages -= 1;
        true
    }

    /// Consumes one injected `POST /executions` rejection.
    pub(crate) fn take_post_rejection(&mut self) -> bool {
        if self.reject_next_execution_posts == 0 {
            return false;
        }
        self.reject_next_execution_posts -= 1;
        true
    }

    /// Consumes one injected execution failure, returning its reason.
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        if self.fail_next_executions == 0 {
            return None;
        }
        self.fail_next_executions -= 1;
        Some(
            self.fail_reason
                .clone()
                .unwrap_or_else(|| DEFAULT_FAIL_REASON.to_string()),
        )
    }
}

/// Counts of REST calls per `METHOD /templated/route` since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Calls counted over every route (the sum of `routes`).
    pub total: u64,
    /// Per route, e.g. `GET /api/v3.1/deployments/{id}`.
    pub routes: BTreeMap<String, u64>,
}

impl RequestLog {
    pub(crate) fn record(&mut self, route: String) {
        self.total += 1;
        *self.routes.entry(route).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_merge_and_failures_count_down() {
        let mut f = Faults::default();
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"fail_next_executions": 2, "latency_ms": 5}"#).expect("json");
        f.apply(patch).expect("valid");
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"fail_reason": "Quota exceeded for instances"}"#)
                .expect("json");
        f.apply(patch).expect("valid");
        assert_eq!(f.latency_ms, 5);
        assert_eq!(
            f.take_failure().as_deref(),
            Some("Quota exceeded for instances")
        );
        assert!(f.take_failure().is_some());
        assert!(f.take_failure().is_none());
        let bad: FaultsPatch = serde_json::from_str(r#"{"error_rate": 1.5}"#).expect("json");
        assert!(f.apply(bad).is_err());
        assert!(serde_json::from_str::<FaultsPatch>(r#"{"nope": 1}"#).is_err());
    }
}
