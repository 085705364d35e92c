//! What an operator reads in the logs about the refresh itself (issue 21 part 5): one line per
//! node group found or lost between two complete snapshots, a warning for `node_groups.groups`
//! settings that no group uses, and progress lines while a long first refresh runs (100k
//! instances took 29 s of silence).

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use super::Snapshot;
use crate::config::NodeGroupsConfig;

/// How often a refresh that is still running says so, while no snapshot was ever served.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Logs each group of `current` that `previous` did not have (every group on the first complete
/// snapshot) and each one it lost; on the first snapshot also the configured settings whose id
/// no group has (their min/max, template and price apply to nothing; `check` reports them too).
pub(super) fn log_group_changes(
    previous: &Snapshot,
    current: &Snapshot,
    config: &NodeGroupsConfig,
) {
    let before: HashSet<&str> = previous.groups.iter().map(|g| g.id.as_str()).collect();
    let after: HashSet<&str> = current.groups.iter().map(|g| g.id.as_str()).collect();
    for g in current
        .groups
        .iter()
        .filter(|g| !before.contains(g.id.as_str()))
    {
        tracing::info!(
            group = %g.id, min = g.min, max = g.max, instances = g.instances.len(),
            "node group found"
        );
    }
    for g in previous
        .groups
        .iter()
        .filter(|g| !after.contains(g.id.as_str()))
    {
        tracing::warn!(
            group = %g.id,
            "node group lost: Cloudify no longer has it, or it no longer matches the selection \
             (CA stops scaling it)"
        );
    }
    if !previous.complete {
        for id in config
            .groups
            .keys()
            .filter(|id| !after.contains(id.as_str()))
        {
            tracing::warn!(
                group = %id,
                "node_groups.groups has settings for this id but no node group has it: they \
                 apply to no group (a typo? `autoscaler-cloudify check` lists the ids)"
            );
        }
    }
}

/// Runs `refresh`; while it runs and `first` is true, logs every [`PROGRESS_EVERY`] that the first
/// refresh is still reading Cloudify, so a long first load is not silence.
pub(super) async fn with_progress<T>(first: bool, refresh: impl Future<Output = T>) -> T {
    if !first {
        return refresh.await;
    }
    let started = Instant::now();
    let mut refresh = std::pin::pin!(refresh);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut refresh => {
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "first refresh from Cloudify done"
                );
                return out;
            }
            _ = tick.tick() => tracing::info!(
                seconds = started.elapsed().as_secs(),
                "first refresh from Cloudify still running (not ready until it ends)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what is logged while `f` runs, as text lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            self.0
                .lock()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        }
    }

    /// Virtual time: a first refresh of 12 s says twice that it still runs, then that it is done;
    /// a later refresh says nothing.
    #[tokio::test(start_paused = true)]
    async fn a_long_first_refresh_reports_progress() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(12)).await;
            7
        };
        assert_eq!(with_progress(true, slow).await, 7);
        let later = async {
            tokio::time::sleep(Duration::from_secs(12)).await;
        };
        with_progress(false, later).await;
        let text = lines.text();
        assert_eq!(text.matches("still running").count(), 2, "{text}");
        assert_eq!(
            text.matches("first refresh from Cloudify done").count(),
            1,
            "{text}"
        );
    }
}
