//! A seeded, randomized interleaving checker for the product's core promise (issue 11): never
//! past max, never below min, never the wrong VM, no accepted increase lost or doubled, no panic.
//!
//! Each seed starts a simulator on 127.0.0.1:0 with random workflow pace and a random window
//! between a scale's `started` and its deployment modification, then runs CA-like actors
//! (IncreaseSize, DeleteNodes with retries and duplicates, DecreaseTargetSize, Refresh) against
//! the node-group service over real HTTP, while a chaos task changes latency, errors, outages,
//! held and failed executions, kills running scales and restarts the provider (its runtime is
//! shut down, so its tasks die as a process would). Invariants are checked on every read and on
//! Cloudify's own state; then everything settles and the end state is checked.
//!
//! - `cargo test --test provider interleavings::` runs `INTERLEAVING_SEEDS` seeds (default 120) from
//!   `INTERLEAVING_FIRST_SEED` (default 0).
//! - `INTERLEAVING_SEEDS=5000 cargo test --release --test provider -- --nocapture` runs
//!   thousands.
//! - `INTERLEAVING_SEED=N cargo test --test provider interleavings:: -- --nocapture` replays seed N
//!   (`INTERLEAVING_REPEAT` times, default 10: the seed fixes the operations, faults and pace,
//!   not the thread schedule).
//!
//! A failure prints its seed and what broke.

use std::time::Instant;

use seed::run_seed;

mod seed;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_the_invariants() {
    let seeds: Vec<u64> = match env_u64("INTERLEAVING_SEED") {
        Some(seed) => vec![seed; env_u64("INTERLEAVING_REPEAT").unwrap_or(10) as usize],
        None => {
            let first = env_u64("INTERLEAVING_FIRST_SEED").unwrap_or(0);
            let n = env_u64("INTERLEAVING_SEEDS").unwrap_or(120);
            (first..first + n).collect()
        }
    };
    let started = Instant::now();
    for (i, seed) in seeds.iter().enumerate() {
        let report = run_seed(*seed).await;
        if !report.violations.is_empty() {
            panic!(
                "seed {seed} broke the invariants after {} seed(s) ({:?}):\n  {}\n\
                 events:\n  {}\n\
                 replay: INTERLEAVING_SEED={seed} cargo test --test provider interleavings:: -- --nocapture",
                i + 1,
                started.elapsed(),
                report.violations.join("\n  "),
                report.events.join("\n  ")
            );
        }
    }
    println!(
        "{} seed(s) kept the invariants in {:?}",
        seeds.len(),
        started.elapsed()
    );
}
