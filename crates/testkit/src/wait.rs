//! Condition waits instead of sleeps (issue 24): a test waits for what it needs to be true,
//! as long as a loaded 2-core CI machine may take, and fails with the last thing it saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again: the old kits' 50 ms. Faster polling let
/// `invariants::foreign_or_unknown_node_is_refused_without_any_cloudify_call` take its request
/// count before the provider's own follow-up of a finished scale (its last `GET /executions/{id}`
/// and the refresh it triggers) had happened: a race of that test, not of the kit (2 failures in 3
/// runs at 20 ms, left for its owner: the test should wait for the provider's follow-up itself).
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Ok`, at most for `limit`, and returns its value; panics with
/// `what` and the last `Err` (what the probe saw instead) when time runs out.
pub async fn eventually<T, E, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let end = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < end,
                "waited {limit:?} for {what}; last seen: {last:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a synchronous condition; `state` says what was seen instead.
pub async fn until<S: Debug>(
    limit: Duration,
    what: &str,
    mut state: impl FnMut() -> Result<(), S>,
) {
    eventually(limit, what, || std::future::ready(state())).await;
}
