//! The one error type of the configuration layer.

use std::path::PathBuf;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file as given (`--config`), so the message points at what the user typed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{path}: {key}: {message}")]
    Parse {
        /// The file as given (`<inline>` for text that came from no file).
        path: PathBuf,
        /// Key path of the value the parser was reading, e.g. `cloudify[0].pasword_env`.
        key: String,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `refresh.interval`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
