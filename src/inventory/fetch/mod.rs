//! The fetch: the REST reads of one refresh, per Cloudify entry (source), and the checks that
//! decide whether what they read can be served.
//!
//! A source's refresh reads passes ([`pass`]) until one is consistent (no scale started or
//! ended while it was read) and free of contradictions (`build::contradictions`, and scaling
//! groups that vanished from a deployment nobody updated), at most [`COLLECT_ATTEMPTS`]
//! times. What a pass reads follows what changed since the last complete refresh
//! ([`cache`]): steady state is a constant number of requests (executions twice, started
//! modifications, one search per discovery rule), each bounded in size whatever the number
//! of deployments.

mod cache;
mod pass;

use std::collections::HashSet;
use std::time::{Duration, Instant};

pub use cache::SourceCache;
use pass::Pass;

use super::InventoryError;
use super::build::{SourceData, contradictions};
use crate::cloudify::{Cloudify, CloudifyError};
use crate::config::NodeGroupsConfig;

/// Passes a refresh reads before it gives up on a view in which something moved or
/// contradicted itself.
const COLLECT_ATTEMPTS: u32 = 5;

/// Pause before reading again a pass that contradicted itself (times the attempt): the real
/// manager's reads are not atomic with each other, and a window between two of them closes
/// within a workflow step.
const CONTRADICTION_PAUSE: Duration = Duration::from_millis(100);

/// How the refresh reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Every deployment's nodes and instances are read again at least this often, whatever
    /// the change markers say (`refresh.full_every`; zero: every refresh reads everything).
    pub full_every: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            full_every: Duration::from_secs(5 * 60),
        }
    }
}

/// What one source's refresh read, and the cache the next one starts from.
pub(super) struct Fetched {
    /// What the snapshot is built from.
    pub data: SourceData,
    /// The cache after this refresh (kept only if the whole refresh succeeds).
    pub cache: SourceCache,
}

/// One source's refresh: passes until one can be served, then its data and the next cache.
pub(super) async fn fetch_source(
    source: usize,
    c: &dyn Cloudify,
    config: &NodeGroupsConfig,
    cache: &SourceCache,
    options: FetchOptions,
) -> Result<Fetched, InventoryError> {
    let err = |source: CloudifyError| InventoryError::Cloudify {
        manager: c.name().to_owned(),
        source,
    };
    let started = Instant::now();
    let full = cache.full_due(started, options.full_every);
    let mut forced: HashSet<String> = HashSet::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let pass = Pass::read(c, config, source, cache, full, &forced)
            .await
            .map_err(err)?;
        if !pass.consistent() {
            if attempt >= COLLECT_ATTEMPTS {
                // Counting from an unsettled pass could count a scale twice or not at all;
                // the previous snapshot (plus this process's own changes) is the safer answer.
                return Err(InventoryError::Unsettled {
                    manager: c.name().to_owned(),
                    attempts: attempt,
                });
            }
            tracing::debug!(
                manager = c.name(),
                attempt,
                "a scale moved during the refresh; reading again"
            );
            continue;
        }
        let data = pass.source_data(source, c);
        let mut found = contradictions(&data, config);
        found.extend(cache.vanished_groups(&pass.read));
        if found.is_empty() {
            tracing::debug!(
                manager = c.name(),
                full,
                deployments = pass.read.len(),
                nodes_read = pass.nodes_read.len(),
                instances_read = pass.instances_read,
                "refresh read"
            );
            let cache = pass.into_cache(cache, full.then_some(started));
            return Ok(Fetched { data, cache });
        }
        if attempt >= COLLECT_ATTEMPTS {
            return Err(InventoryError::Inconsistent {
                manager: c.name().to_owned(),
                attempts: attempt,
                contradictions: found,
            });
        }
        tracing::debug!(
            manager = c.name(),
            attempt,
            first = %found[0],
            "the answers of the refresh contradict each other; reading them again"
        );
        // What the contradiction names is read again whole, whatever the cache holds.
        forced.extend(found.iter().map(|c| c.deployment().to_owned()));
        tokio::time::sleep(CONTRADICTION_PAUSE * attempt).await;
    }
}
