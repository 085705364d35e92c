//! `autoscaler-cloudify inspect`: a small gRPC client for a running provider, speaking exactly what
//! CA speaks (same cloud-config file, same mTLS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto;
use crate::proto::cloud_provider_client::CloudProviderClient;

/// `inspect` flags.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Provider address host:port.
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub address: String,
    /// CA's cloud-config file (address, cert, key, cacert); overrides the flags below.
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// CA of the server certificate (PEM).
    #[arg(long)]
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
    let channel = match cert {
        None => {
            Endpoint::from_shared(format!("http://{address}"))?
                .connect()
                .await?
        }
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
                .await?
        }
    };
    Ok(CloudProviderClient::new(channel))
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

/// One TLS handshake with the provider, as CA's client makes it, and one read (the provider's
/// first HTTP/2 frame, or its alert): what went wrong, if anything did.
fn tls_probe(address: &str, files: &TlsPaths, key: Option<&PathBuf>) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::Read;
    let pem = |p: &PathBuf| std::fs::read(p).ok();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem(files.cacert.as_ref()?)?) {
        roots.add(c.ok()?).ok()?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem(files.cert.as_ref()?)?)
            .collect::<Result<_, _>>()
            .ok()?;
    let key = PrivateKeyDer::from_pem_slice(&pem(key?)?).ok()?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .ok()?
        .to_owned();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .ok()?
        .next()?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut first = [0u8; 1];
    let outcome = match conn.complete_io(&mut sock) {
        Err(e) => Err(e),
        Ok(_) => rustls::Stream::new(&mut conn, &mut sock)
            .read(&mut first)
            .map(|_| ()),
    };
    outcome.err().and_then(|e| tls_failure(&e, address, files))
}

/// The files a TLS failure may be about.
struct TlsPaths {
    cert: Option<PathBuf>,
    cacert: Option<PathBuf>,
}

/// What a failed TLS connection means in the operator's terms (issue 20: tonic says only
/// `transport error`), from the rustls error somewhere in its causes; `None` when none is there.
fn tls_failure(
    e: &(dyn std::error::Error + 'static),
    address: &str,
    files: &TlsPaths,
) -> Option<String> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    let shown = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    };
    let date = |t: &rustls::pki_types::UnixTime| {
        i64::try_from(t.as_secs())
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map_or_else(
                || format!("{} s after 1970", t.as_secs()),
                |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            )
    };
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let refused = || {
        format!(
            "the provider refused the client certificate {} (cert): it must be signed by the \
             provider's grpc.tls.client_ca_file, and be valid now",
            shown(&files.cert)
        )
    };
    let Some(error) = rustls_error(e) else {
        // An alert read after the handshake reaches us as text (tokio-rustls turns it into an
        // io::Error of kind InvalidData): with TLS 1.3 a refused client certificate is only
        // known at the first read.
        let text = crate::observability::error_chain(e);
        let refused_alerts = [
            "BadCertificate",
            "UnknownCA",
            "CertificateRequired",
            "CertificateUnknown",
            "CertificateExpired",
            "AccessDenied",
            "DecryptError",
        ];
        return refused_alerts
            .iter()
            .any(|a| text.contains(&format!("received fatal alert: {a}")))
            .then(refused);
    };
    let why = match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => format!(
            "the provider's certificate is not signed by the CA in {} (cacert): use the CA \
             that signed the provider's certificate",
            shown(&files.cacert)
        ),
        rustls::Error::InvalidCertificate(Cert::NotValidForNameContext { presented, .. }) => {
            // rustls spells them `DnsName("a.b")`, `IpAddress(...)`: the names alone.
            let names: Vec<&str> = presented
                .iter()
                .map(|n| {
                    n.split_once("(\"")
                        .and_then(|(_, rest)| rest.strip_suffix("\")"))
                        .unwrap_or(n)
                })
                .collect();
            format!(
                "the provider's certificate is not valid for {host:?}: it names {}; connect \
                 with one of those names, or add {host:?} to the certificate",
                names.join(", ")
            )
        }
        rustls::Error::InvalidCertificate(Cert::NotValidForName) => format!(
            "the provider's certificate is not valid for {host:?}: connect with a name it \
             carries, or add {host:?} to it"
        ),
        rustls::Error::InvalidCertificate(Cert::ExpiredContext { not_after, .. }) => format!(
            "the provider's certificate expired on {}: renew it and restart the provider",
            date(not_after)
        ),
        rustls::Error::InvalidCertificate(Cert::Expired) => {
            "the provider's certificate has expired: renew it and restart the provider".into()
        }
        rustls::Error::InvalidCertificate(Cert::NotValidYetContext { not_before, .. }) => {
            format!(
                "the provider's certificate is not valid before {} (check both clocks)",
                date(not_before)
            )
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateRequired
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::AccessDenied
            | Alert::DecryptError,
        ) => refused(),
        other => format!("{other}"),
    };
    Some(why)
}

/// The rustls error among the causes of `e`. An `io::Error` shows the error it wraps in its
/// text but not as a source, so it is opened here.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        next = err.source();
    }
    None
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
                println!("(no node group)");
            } else {
                println!("{} (min {}, max {})", g.id, g.min_size, g.max_size);
            }
        }
        Query::Nodes { group } => {
            let instances = client
                .node_group_nodes(proto::NodeGroupNodesRequest { id: group })
                .await?
                .into_inner()
                .instances;
            for i in instances {
                let status = i.status.unwrap_or_default();
                let state = proto::instance_status::InstanceState::try_from(status.instance_state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| status.instance_state.to_string());
                match status.error_info.filter(|e| !e.error_code.is_empty()) {
                    Some(e) => println!(
                        "{}  {state}  error {}: {}",
                        i.id, e.error_code, e.error_message
                    ),
                    None => println!("{}  {state}", i.id),
                }
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
