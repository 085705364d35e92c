//! Observability: Prometheus metrics, the plain HTTP port (`/healthz`, `/readyz`, `/metrics`) and
//! tracing setup.

pub mod http;
mod labels;
pub mod listener;
pub mod metrics;
pub mod process;

use std::io::IsTerminal;

/// An error and its causes on one line, each cause once. Library errors often hide the reason an
/// operator needs in their sources: reqwest's "error sending request for url ..." the
/// `invalid peer certificate: UnknownIssuer` under it, tonic's "transport error" the rustls
/// error that says which certificate did not fit.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Log output format (`--log-format`, `log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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

/// The levels a directive may name, for error messages.
const LEVELS: &str = "trace, debug, info, warn, error, off";

/// Checks a tracing filter (`--log-level`, `log.level`, `RUST_LOG`) and returns it unchanged.
///
/// Stricter than tracing's own parser on purpose (issue 21): tracing reads a bare word that is no
/// level as a *target* enabled at every level, so `infoo` parses, enables only a target named
/// `infoo`, and silently turns all other logging off. Here every directive is either a level or
/// `target[span{field=value}]=level`, and the whole filter must also parse as tracing's.
pub fn parse_log_filter(filter: &str) -> Result<String, String> {
    use std::str::FromStr;
    use tracing_subscriber::filter::LevelFilter;
    let example = "e.g. \"info\" or \"info,autoscaler_cloudify=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("empty filter ({example})"));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() && !level.contains(['}', ']']) => level,
            _ => directive,
        };
        if LevelFilter::from_str(level.trim()).is_err() {
            let why = if level == directive {
                format!("{directive:?} is not a level ({LEVELS}); a target needs one: target=level")
            } else {
                format!("{level:?} in {directive:?} is not a level ({LEVELS})")
            };
            return Err(format!("{why} ({example})"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| format!("{e} ({example})"))
}

/// Installs the global tracing subscriber (`RUST_LOG` overrides `level`). Safe to call twice.
///
/// An invalid `RUST_LOG` is not used (it could turn all logging off, see [`parse_log_filter`]):
/// the process says so on stderr and logs at `level`. `serve` and `check` refuse it earlier, at
/// configuration time.
pub fn init_tracing(format: LogFormat, level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = match rust_log.as_deref().map(parse_log_filter) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("warning: RUST_LOG ignored: {e}; logging at {level:?}");
            level.to_owned()
        }
        None => level.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

#[cfg(test)]
mod tests {
    use super::parse_log_filter;

    #[test]
    fn a_log_filter_is_levels_and_target_level_pairs() {
        for ok in [
            "info",
            "INFO",
            "warn,autoscaler_cloudify=debug",
            "autoscaler_cloudify::inventory=trace",
            "info,kube_runtime=off,",
            "info,[refresh{source=main}]=debug",
        ] {
            assert_eq!(parse_log_filter(ok).as_deref(), Ok(ok), "{ok}");
        }
        // Each of these parses as tracing's own filter and would silently log nothing or less.
        for (bad, says) in [
            ("infoo", "\"infoo\" is not a level"),
            (
                "info,autoscaler_cloudify",
                "\"autoscaler_cloudify\" is not a level",
            ),
            ("autoscaler_cloudify=loud", "\"loud\" in"),
            ("", "empty filter"),
            (" ", "empty filter"),
        ] {
            let e = parse_log_filter(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(
                e.contains("trace, debug, info") || e.contains("empty"),
                "{e}"
            );
        }
    }
}
