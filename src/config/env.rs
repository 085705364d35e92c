//! Where secrets come from: the process environment, or a map in tests (so tests never mutate
//! the process environment, which other test threads share).

use std::collections::BTreeMap;

/// Source of environment variables (the process environment, or a map in tests).
pub trait Env {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}
