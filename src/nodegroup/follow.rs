//! After a scale-out is accepted: watch its execution and refresh the inventory the moment it
//! ends (issue #13), so CA sees new instances (or a failure) without waiting for the next
//! periodic refresh, while its Refresh RPC never waits on Cloudify.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::NodeGroupService;
use crate::cloudify::Cloudify;

/// Longest pause between two polls of one execution: the worst extra staleness after it ends.
const MAX_POLL: Duration = Duration::from_secs(10);

impl NodeGroupService {
    /// Polls the execution (one `GET /executions/{id}` each time, backing off from
    /// `verify_poll` to [`MAX_POLL`]) until it ends or `verify_timeout` passes, then triggers
    /// a refresh. Errors only delay the poll: the periodic refresh still covers freshness.
    pub(super) fn follow_execution(&self, cloudify: Arc<dyn Cloudify>, exec_id: String) {
        let inventory = Arc::clone(&self.inventory);
        let (mut poll, limit) = (self.settings.verify_poll, self.settings.verify_timeout);
        tokio::spawn(async move {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                tokio::time::sleep(poll).await;
                match cloudify.execution(&exec_id).await {
                    Ok(e) if e.is_ended() => {
                        tracing::debug!(execution = %exec_id, status = %e.status, "scale execution ended; refreshing");
                        inventory.trigger_refresh();
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(execution = %exec_id, error = %e, "cannot poll scale-out")
                    }
                }
                poll = (poll * 2).min(MAX_POLL);
            }
        });
    }
}
