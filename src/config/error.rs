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
    /// A value only the file can set is not acceptable: the message names the file too.
    #[error("{path}: {key}: {problem}")]
    InvalidInFile {
        /// The file as given (`--config`).
        path: PathBuf,
        /// Dotted key, e.g. `node_groups.groups."a/b".provider_id_template`.
        key: String,
        /// What is wrong, with the expected form.
        problem: String,
    },
}

impl ConfigError {
    /// Names `path` in an error about a per-group setting (`node_groups.defaults` or
    /// `node_groups.groups`): no flag sets those, so the value came from that file.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            ConfigError::Invalid { key, problem }
                if key.starts_with("node_groups.defaults")
                    || key.starts_with("node_groups.groups") =>
            {
                ConfigError::InvalidInFile {
                    path: path.to_owned(),
                    key,
                    problem,
                }
            }
            other => other,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
