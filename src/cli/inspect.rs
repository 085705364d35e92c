//! `autoscaler-cloudify inspect`: a small gRPC client for a running provider, speaking exactly what
//! CA speaks (same cloud-config file, same mTLS).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::tls_diagnosis::{TlsPaths, tls_failure, tls_probe};
use crate::proto;
use crate::proto::cloud_provider_client::CloudProviderClient;

/// `inspect` flags. They are global, so they go before or after the query
/// (`inspect groups --grpc 127.0.0.1:9086`, issue 21).
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The provider's gRPC address (what CA's cloud-config calls `address`)
    #[arg(
        long = "grpc",
        visible_alias = "address",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8086",
        global = true
    )]
    pub address: String,
    /// CA's cloud-config file (address, cert, key, cacert); its values win over the flags
    #[arg(long, value_name = "FILE", global = true)]
    pub cloud_config: Option<PathBuf>,
    /// Client certificate (PEM); without it, plaintext
    #[arg(long, value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM)
    #[arg(long, value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,
    /// CA of the provider's certificate (PEM)
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,
    /// What to ask.
    #[command(subcommand)]
    pub query: Query,
}

/// What `inspect` asks the provider (one RPC each, as CA would ask).
#[derive(Debug, Clone, Subcommand)]
pub enum Query {
    /// List node groups with target sizes.
    Groups,
    /// The group of a node.
    GroupFor {
        /// The node's spec.providerID.
        #[arg(long, default_value = "")]
        provider_id: String,
        /// The node name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Instances of a group.
    Nodes {
        /// Group id as `groups` prints it (`[<name>:]<deployment>/<group>`).
        group: String,
    },
    /// The node controller's view of a Node (or of every Node without a name), read from the
    /// provider's HTTP port (`GET /nodes[/{name}]`).
    Node {
        /// Node name; omitted: every Node.
        name: Option<String>,
        /// The provider's HTTP address (`http.listen`).
        #[arg(long, default_value = "127.0.0.1:8087")]
        http: String,
    },
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CloudConfig {
    address: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cacert: Option<PathBuf>,
}

/// Connects like CA does: plaintext without a certificate, else mTLS verifying the server name
/// against the host part of the address.
pub async fn connect(
    address: &str,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    cacert: Option<&PathBuf>,
) -> Result<CloudProviderClient<Channel>, Box<dyn std::error::Error + Send + Sync>> {
    // tonic's own message is "transport error"; the cause (refused, no route, a name that does
    // not resolve) is further down the chain.
    let unreachable = |e: tonic::transport::Error| {
        format!(
            "cannot connect to the provider at {address}: {}",
            error_chain(&e)
        )
    };
    let channel = match cert {
        None => Endpoint::from_shared(format!("http://{address}"))?
            .connect()
            .await
            .map_err(unreachable)?,
        Some(cert) => {
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let mut tls = ClientTlsConfig::new().domain_name(host.to_owned());
            if let Some(ca) = cacert {
                tls = tls.ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
            }
            let key = key.ok_or("--key is required with --cert")?;
            tls = tls.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
            Endpoint::from_shared(format!("https://{address}"))?
                .tls_config(tls)?
                .connect()
                .await
                .map_err(unreachable)?
        }
    };
    Ok(CloudProviderClient::new(channel))
}

/// An error and its causes, `: `-joined, without repeating a cause its parent already quotes.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

pub(super) async fn run(args: InspectArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut address = args.address.clone();
    let (mut cert, mut key, mut cacert) =
        (args.cert.clone(), args.key.clone(), args.cacert.clone());
    if let Some(path) = &args.cloud_config {
        let cc: CloudConfig = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
        address = cc.address.unwrap_or(address);
        cert = cc.cert.or(cert);
        key = cc.key.or(key);
        cacert = cc.cacert.or(cacert);
    }
    if let Query::Node { name, http } = &args.query {
        return node_view(http, name.as_deref()).await;
    }
    let tls = TlsPaths {
        cert: cert.clone(),
        cacert: cacert.clone(),
    };
    let result = async {
        let client = connect(&address, cert.as_ref(), key.as_ref(), cacert.as_ref()).await?;
        ask(client, args.query).await
    }
    .await;
    let Err(e) = result else {
        return Ok(());
    };
    if cert.is_none() {
        return Err(e);
    }
    // The error of the call may show its TLS cause, or only a broken pipe when the provider
    // closed the connection before its alert was read: a handshake of our own says which.
    let why = match tls_failure(&*e, &address, &tls) {
        Some(why) => Some(why),
        None => {
            let (address, key) = (address.clone(), key.clone());
            tokio::task::spawn_blocking(move || tls_probe(&address, &tls, key.as_ref()))
                .await
                .ok()
                .flatten()
        }
    };
    Err(match why {
        Some(why) => format!("cannot talk to the provider at {address} over TLS: {why}").into(),
        None => e,
    })
}

/// Asks the provider one query and prints the answer.
async fn ask(
    mut client: CloudProviderClient<Channel>,
    query: Query,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match query {
        Query::Groups => {
            let groups = client
                .node_groups(proto::NodeGroupsRequest {})
                .await?
                .into_inner()
                .node_groups;
            println!(
                "{:<40} {:>5} {:>5} {:>6}  DEBUG",
                "GROUP", "MIN", "MAX", "TARGET"
            );
            for g in groups {
                let target = client
                    .node_group_target_size(proto::NodeGroupTargetSizeRequest { id: g.id.clone() })
                    .await?
                    .into_inner()
                    .target_size;
                println!(
                    "{:<40} {:>5} {:>5} {:>6}  {}",
                    g.id, g.min_size, g.max_size, target, g.debug
                );
            }
        }
        Query::GroupFor { provider_id, name } => {
            let g = client
                .node_group_for_node(proto::NodeGroupForNodeRequest {
                    node: Some(proto::ExternalGrpcNode {
                        provider_id,
                        name,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner()
                .node_group
                .unwrap_or_default();
            if g.id.is_empty() {
                println!("(no node group: CA does not autoscale this node)");
            } else {
                // One self-describing line (scripts match its `<id> ` prefix).
                println!("{} (min {}, max {})", g.id, g.min_size, g.max_size);
            }
        }
        Query::Nodes { group } => {
            let instances = client
                .node_group_nodes(proto::NodeGroupNodesRequest { id: group })
                .await?
                .into_inner()
                .instances;
            println!("{:<60} {:<18} ERROR", "INSTANCE", "STATE");
            for i in instances {
                let status = i.status.unwrap_or_default();
                let state = proto::instance_status::InstanceState::try_from(status.instance_state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| status.instance_state.to_string());
                let error = status
                    .error_info
                    .filter(|e| !e.error_code.is_empty())
                    .map(|e| format!("{}: {}", e.error_code, e.error_message))
                    .unwrap_or_default();
                println!("{:<60} {state:<18} {error}", i.id);
            }
        }
        Query::Node { .. } => {}
    }
    Ok(())
}

/// Prints the node controller's view of one Node (or all) from the provider's HTTP port.
async fn node_view(
    http: &str,
    name: Option<&str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let base = if http.contains("://") {
        http.trim_end_matches('/').to_owned()
    } else {
        format!("http://{http}")
    };
    let url = match name {
        Some(n) => format!("{base}/nodes/{}", percent_encode(n)),
        None => format!("{base}/nodes"),
    };
    let resp = reqwest::get(&url).await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| body.to_string(), str::to_owned);
        return Err(format!("{url}: {status}: {msg}").into());
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// Node names are DNS labels, but a typo must not turn into another path.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
