//! Observability: Prometheus metrics, the plain HTTP port (`/healthz`, `/readyz`, `/metrics`) and
//! tracing setup.

pub mod http;
pub mod metrics;
pub mod process;

use std::io::IsTerminal;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`; the error says which values exist.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown format {other:?} (text or json)")),
        }
    }
}

/// Installs the global tracing subscriber (`RUST_LOG` overrides `level`). Safe to call twice.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        // Colour codes only for a person at a terminal, not in files, pipes or `kubectl logs`.
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
}
