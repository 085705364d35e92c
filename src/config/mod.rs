//! Configuration: a YAML file (docs/configuration.md), overridden by command-line flags (which
//! fall back to `AUTOSCALER_CLOUDIFY_*` environment variables through clap), validated once at
//! start.
//! Secrets come only from environment variables or files, read through the [`Env`] trait so tests
//! feed a map instead of mutating the process environment.
//!
//! Every validation error names the key and says what is wrong, e.g.
//! `node_groups.groups."a/b".options.scale_down_unneeded_time: invalid duration "2x"`.
//!
//! Inside, imports point one way: `validate` (the whole file, one step per part) uses `groups`
//! (node groups) and `answer_size` (the largest group CA can be told about), all use `fields`
//! (single values), and everything uses `model`, `error` and `raw` (the file as written), which
//! use nothing of the module.

mod answer_size;
mod env;
mod error;
mod fields;
mod groups;
mod model;
mod provider_id;
mod quantity;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::path::Path;

pub use answer_size::{longest_provider_id, max_instances_in_answer};
pub use env::{Env, ProcessEnv};
pub use error::ConfigError;
pub use fields::key_path;
pub use model::{
    AddressProperties, Config, Discovery, GroupSettings, GrpcConnections, LeaseConfig, LeaseMode,
    NodeControllerConfig, NodeGroupsConfig, OptionsSpec, Overrides, StaticGroup, TaintSpec,
    TemplateSpec, TlsFiles,
};
pub use provider_id::{DEFAULT_PROVIDER_ID_TEMPLATE, ProviderIdParts, ProviderIdTemplate, Segment};
pub use quantity::{QUANTITY_FORMS, Quantity, QuantityError, QuantityFormat};

/// Re-exported: the format belongs to the logging, the configuration only chooses it.
pub use crate::observability::LogFormat;
/// Re-exported: the HTTP port's connection handling, which the configuration only sets.
pub use crate::observability::http::HttpConnections;

impl Config {
    /// Reads the optional file, applies the overrides and validates everything.
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let raw = validate::parse_yaml(&text, path)?;
                return validate::build(raw, overrides, env).map_err(|e| e.in_file(path));
            }
            None => raw::RawConfig::default(),
        };
        validate::build(raw, overrides, env)
    }

    /// Validates YAML text (used by tests and `demo`).
    pub fn from_yaml(
        text: &str,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let raw = validate::parse_yaml(text, Path::new("<inline>"))?;
        validate::build(raw, overrides, env)
    }
}
