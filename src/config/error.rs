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
    #[error("{}{key}: {problem}", file_prefix(path.as_deref()))]
    Invalid {
        /// The file that holds the key (`--config`); `None` for a flag (`--listen`), an
        /// environment variable or text that came from no file.
        path: Option<PathBuf>,
        /// Dotted key, e.g. `refresh.interval`, or the flag that gave the value (`--nodes[0]`).
        key: String,
        /// What is wrong, and the expected form.
        problem: String,
    },
}

fn file_prefix(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: None,
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Names the file a key's value came from: an operator reads `config.yaml: refresh.interval:
    /// ...` and knows where to look. Flags and environment variables name themselves instead.
    pub(crate) fn in_file(self, file: &std::path::Path) -> Self {
        match self {
            ConfigError::Invalid {
                path: None,
                key,
                problem,
            } if !key.starts_with("--") && key != "RUST_LOG" => ConfigError::Invalid {
                path: Some(file.to_owned()),
                key,
                problem,
            },
            other => other,
        }
    }

    /// Renames a key whose value a flag wrote into the file's place (`--nodes` replaces
    /// `node_groups.static`), so the message names what the operator typed.
    pub(crate) fn given_by_flag(self, file_key: &str, flag: &str) -> Self {
        match self {
            ConfigError::Invalid { path, key, problem } if key.starts_with(file_key) => {
                ConfigError::Invalid {
                    path,
                    key: format!("{flag}{}", &key[file_key.len()..]),
                    problem,
                }
            }
            other => other,
        }
    }
}
