//! The `autoscaler-cloudify` command line.

mod check;
#[cfg(feature = "simulator")]
mod demo;
mod inspect;
mod tls_diagnosis;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[cfg(feature = "simulator")]
pub use demo::{DEMO_CONFIG, demo_config};

use crate::config::{Config, Env, Overrides, ProcessEnv};
use crate::observability::init_tracing;

/// Kubernetes Cluster Autoscaler externalgrpc provider for Cloudify scaling groups.
#[derive(Debug, Parser)]
#[command(name = "autoscaler-cloudify", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; [`run`] dispatches each to its module (`serve` to [`crate::app`]).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve CA's CloudProvider gRPC service.
    Serve(ServeArgs),
    /// Run against the embedded simulator on loopback (optionally drive a scale-up/down).
    #[cfg(feature = "simulator")]
    Demo(demo::DemoArgs),
    /// Run the Cloudify Manager simulator alone.
    #[cfg(feature = "simulator")]
    Simulator(cloudify_sim::SimulatorArgs),
    /// Load the configuration, connect to Cloudify, print the node groups.
    Check(CheckArgs),
    /// Query a running provider over gRPC.
    Inspect(inspect::InspectArgs),
}

/// `serve` flags: the configuration file and the flags that override it.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML, docs/configuration.md); without it, flags and defaults only
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The overriding flags, declared once on [`Overrides`].
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ServeArgs {
    /// Loads and validates the configuration, secrets from the process environment.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        self.load_with_env(&ProcessEnv)
    }

    /// Loads and validates the configuration, secrets from `env` (tests pass a map).
    pub fn load_with_env(&self, env: &dyn Env) -> Result<Config, crate::config::ConfigError> {
        let config = Config::load(self.config.as_deref(), &self.overrides, env)?;
        if config.cloudify.is_empty() {
            let e = crate::config::ConfigError::Invalid {
                path: None,
                key: "cloudify".into(),
                problem: "no Cloudify manager configured (cloudify: [{url: https://...}] in \
                          the file, or --cloudify-url)"
                    .into(),
            };
            return Err(match &self.config {
                Some(file) => e.in_file(file),
                None => e,
            });
        }
        Ok(config)
    }
}

/// `check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Same flags as `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_failure(&*e);
            ExitCode::FAILURE
        }
    }
}

/// Says once why the command failed (issue 21: a start-up error used to come out twice, as a log
/// line and on stderr): as a log line when logging is set up (the error then sits with the logs
/// and reaches a log collector in JSON), else on stderr (a configuration error comes before
/// logging).
fn report_failure(e: &(dyn std::error::Error + Send + Sync)) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{e}");
    } else {
        eprintln!("error: {e}");
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        #[cfg(feature = "simulator")]
        Command::Demo(args) => demo::run(args).await,
        #[cfg(feature = "simulator")]
        Command::Simulator(args) => {
            init_tracing(crate::observability::LogFormat::Text, "info");
            cloudify_sim::run(args).await.map_err(Into::into)
        }
        Command::Check(args) => check::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = args.load()?;
    init_tracing(config.log_format, &config.log_level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        managers = config.cloudify.len(),
        static_groups = config.node_groups.static_groups.len(),
        discovery_rules = config.node_groups.discovery.len(),
        "starting autoscaler-cloudify"
    );
    let app = crate::app::start(&config, crate::app::service_settings(&config)).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down");
    app.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends before killing the pod).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::*;

    /// The help text names the configuration's defaults (a clap default would hide the file's
    /// value, see [`Overrides`]): they must be the values an empty configuration gets.
    #[test]
    fn the_defaults_serve_help_shows_are_the_configurations() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let shown = |id: &str| -> String {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            help.split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(d, _)| d.to_owned())
                .unwrap_or_else(|| panic!("{id}: no default in {help:?}"))
        };
        let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "x".to_owned())]);
        let c = Config::from_yaml(
            "cloudify: [{url: \"http://x\"}]",
            &Overrides::default(),
            &env,
        )
        .expect("valid");
        fn value_name(v: &impl clap::ValueEnum) -> String {
            v.to_possible_value()
                .map(|p| p.get_name().to_owned())
                .unwrap_or_default()
        }
        assert_eq!(shown("listen"), c.grpc_listen.to_string());
        assert_eq!(shown("http_listen"), c.http_listen.to_string());
        assert_eq!(shown("log_format"), value_name(&c.log_format));
        assert_eq!(shown("log_level"), c.log_level);
        assert_eq!(
            shown("refresh_interval"),
            humantime::format_duration(c.refresh_interval).to_string()
        );
        assert_eq!(shown("leader_elect"), value_name(&c.lease.mode));
        assert_eq!(shown("lease_name"), c.lease.name);
        assert_eq!(shown("cloudify_tenant"), c.cloudify[0].tenant);
        assert_eq!(
            shown("node_controller"),
            c.node_controller.enabled.to_string()
        );
        match &c.cloudify[0].auth {
            crate::cloudify::Auth::Basic { username, .. } => {
                assert_eq!(&shown("cloudify_username"), username);
            }
            other => panic!("basic auth expected, got {other:?}"),
        }
    }

    /// `serve` and `check` take the same flags, from one declaration.
    #[test]
    fn check_takes_every_serve_flag() {
        let cli = Cli::command();
        let ids = |name: &str| -> Vec<String> {
            let mut v: Vec<String> = cli
                .find_subcommand(name)
                .expect("subcommand")
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids("serve"), ids("check"));
        assert!(ids("serve").contains(&"auto_discovery".to_owned()));
    }
}
