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

/// Flags shared by `serve` (they override the configuration file).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LISTEN")]
    pub listen: Option<String>,
    /// HTTP listen address (/healthz /readyz /metrics).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Server certificate (PEM).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// Server key (PEM).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_KEY")]
    pub tls_key: Option<String>,
    /// CA for client certificates (mTLS).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<String>,
    /// Allow plaintext gRPC on a non-loopback address.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_INSECURE")]
    pub insecure: bool,
    /// Log format: text or json.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log level (tracing filter directive).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Background refresh period, e.g. 10s.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_REFRESH_INTERVAL")]
    pub refresh_interval: Option<String>,
    /// Leader election on a Kubernetes Lease: auto (when credentials are present), true, false.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LEADER_ELECT")]
    pub leader_elect: Option<String>,
    /// Name of the Lease (default autoscaler-cloudify).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the client's namespace).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Cloudify manager URL (first entry).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_URL")]
    pub cloudify_url: Option<String>,
    /// Cloudify tenant (first entry).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_TENANT")]
    pub cloudify_tenant: Option<String>,
    /// Cloudify user (first entry); the password comes from CLOUDIFY_PASSWORD or a file.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_CLOUDIFY_USERNAME")]
    pub cloudify_username: Option<String>,
    /// Static node group `<min>:<max>:<deployment>/<group>` (repeatable; the environment
    /// variable holds one).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_NODES")]
    pub nodes: Vec<String>,
    /// Auto-discovery `cloudify:label=<k>=<v>[,label=…]` (repeatable; the environment variable
    /// holds one, since `,` already joins labels).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_NODE_GROUP_AUTO_DISCOVERY")]
    pub node_group_auto_discovery: Vec<String>,
    /// Run the node controller (initialize joining Nodes, remove Nodes whose VM is gone) when
    /// Kubernetes credentials are present: true or false (default true).
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_NODE_CONTROLLER", num_args = 0..=1, default_missing_value = "true")]
    pub node_controller: Option<bool>,
}

impl ServeArgs {
    /// The flags as [`Overrides`] of the file; an unset flag leaves the file's value.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            http_listen: self.http_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            insecure: self.insecure,
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            refresh_interval: self.refresh_interval.clone(),
            leader_elect: self.leader_elect.clone(),
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            cloudify_url: self.cloudify_url.clone(),
            cloudify_tenant: self.cloudify_tenant.clone(),
            cloudify_username: self.cloudify_username.clone(),
            nodes: self.nodes.clone(),
            auto_discovery: self.node_group_auto_discovery.clone(),
            node_controller: self.node_controller,
        }
    }

    /// Loads and validates the configuration, secrets from the process environment.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        self.load_with_env(&ProcessEnv)
    }

    /// Loads and validates the configuration, secrets from `env` (tests pass a map).
    pub fn load_with_env(&self, env: &dyn Env) -> Result<Config, crate::config::ConfigError> {
        let config = Config::load(self.config.as_deref(), &self.overrides(), env)?;
        if config.cloudify.is_empty() {
            return Err(crate::config::ConfigError::Invalid {
                key: "cloudify".into(),
                problem: "no Cloudify manager configured (cloudify: [...] or --cloudify-url)"
                    .into(),
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
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
