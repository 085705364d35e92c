//! The state every handler and workflow task shares: the model, the injected faults and the
//! request counts, each behind its own lock, and the shutdown signal. A file of its own so that
//! the routes, the workflow runner and the server all depend on it and not on each other.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::faults::{Faults, RequestLog};
use super::scenario::Timing;
use super::state::Model;

/// State shared by every handler and workflow task.
///
/// Each piece sits behind a `std::sync::Mutex`, not a tokio one: every critical section is
/// short, synchronous and never held across an `.await` (handlers render JSON under the lock
/// and serialize after releasing it; workflow tasks lock only between sleeps), which is the
/// case the tokio docs recommend the std mutex for. One mutex for the whole model keeps every
/// request and workflow step atomic, as a manager's database transaction would.
#[derive(Debug)]
pub(crate) struct Shared {
    model: Mutex<Model>,
    faults: Mutex<Faults>,
    requests: Mutex<RequestLog>,
    pub timing: Timing,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The state of a simulator that starts with `model`, no faults and no requests counted.
    pub fn new(model: Model, timing: Timing, shutdown: watch::Receiver<bool>) -> Shared {
        Shared {
            model: Mutex::new(model),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(RequestLog::default()),
            timing,
            shutdown,
        }
    }

    /// The model, locked. A poisoned lock (a panic elsewhere) is recovered rather than
    /// propagated: the simulator must keep answering.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The injected faults, locked.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request counters, locked.
    pub fn requests(&self) -> MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps `ms` (or just yields when 0); false if the simulator is shutting down.
    pub async fn pause(&self, ms: u64) -> bool {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return false;
        }
        if ms == 0 {
            tokio::task::yield_now().await;
            return !*shutdown.borrow();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => !*self.shutdown.borrow(),
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Waits while `hold_executions` is set; false if the simulator is shutting down.
    pub async fn wait_while_held(&self) -> bool {
        // Polling keeps this free of lost-wakeup races; 10 ms is far below any step time.
        while self.faults().hold_executions {
            if !self.pause(10).await {
                return false;
            }
        }
        !*self.shutdown.borrow()
    }
}
