//! Why a TLS connection to the provider failed, as `inspect` tells it (issue 20): which CA,
//! which of the certificate's names, its end date, or the client certificate the provider
//! refused. From the rustls error among the causes of the call's error, or, when the call only
//! saw a broken pipe, from a handshake of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription as Alert, CertificateError as Cert};

/// One TLS handshake with the provider, as CA's client makes it, and one read (the provider's
/// first HTTP/2 frame, or its alert): what went wrong, if anything did.
pub(super) fn tls_probe(address: &str, files: &TlsPaths, key: Option<&PathBuf>) -> Option<String> {
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
pub(super) struct TlsPaths {
    /// The client certificate (`cert`).
    pub cert: Option<PathBuf>,
    /// The CA the provider's certificate must chain to (`cacert`).
    pub cacert: Option<PathBuf>,
}

/// What a failed TLS connection means in the operator's terms (issue 20: tonic says only
/// `transport error`), from the rustls error somewhere in its causes; `None` when none is there.
pub(super) fn tls_failure(
    e: &(dyn std::error::Error + 'static),
    address: &str,
    files: &TlsPaths,
) -> Option<String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    match rustls_error(e) {
        Some(error) => Some(explain(error, host, files)),
        // An alert read after the handshake reaches us as text (tokio-rustls turns it into an
        // io::Error of kind InvalidData): with TLS 1.3 a refused client certificate is only
        // known at the first read.
        None => {
            let text = crate::observability::error_chain(e);
            REFUSED_ALERTS
                .iter()
                .any(|a| text.contains(&format!("received fatal alert: {a:?}")))
                .then(|| refused(files))
        }
    }
}

/// The alerts a server sends when it refuses the client's certificate.
const REFUSED_ALERTS: [Alert; 7] = [
    Alert::BadCertificate,
    Alert::UnknownCA,
    Alert::CertificateRequired,
    Alert::CertificateUnknown,
    Alert::CertificateExpired,
    Alert::AccessDenied,
    Alert::DecryptError,
];

fn refused(files: &TlsPaths) -> String {
    format!(
        "the provider refused the client certificate {} (cert): it must be signed by the \
         provider's grpc.tls.client_ca_file, and be valid now",
        shown(&files.cert)
    )
}

fn shown(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or("(none)".into(), |p| p.display().to_string())
}

fn date(t: &UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || format!("{} s after 1970", t.as_secs()),
            |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// The certificate's names without rustls's spelling (`DnsName("a.b")`, `IpAddress(...)`).
fn names(presented: &[String]) -> String {
    let names: Vec<&str> = presented
        .iter()
        .map(|n| {
            n.split_once("(\"")
                .and_then(|(_, rest)| rest.strip_suffix("\")"))
                .unwrap_or(n)
        })
        .collect();
    names.join(", ")
}

/// One rustls error, explained with the names and files it is about.
fn explain(error: &rustls::Error, host: &str, files: &TlsPaths) -> String {
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => format!(
            "the provider's certificate is not signed by the CA in {} (cacert): use the CA \
             that signed the provider's certificate",
            shown(&files.cacert)
        ),
        rustls::Error::InvalidCertificate(Cert::NotValidForNameContext { presented, .. }) => {
            format!(
                "the provider's certificate is not valid for {host:?}: it names {}; connect \
                 with one of those names, or add {host:?} to the certificate",
                names(presented)
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
        rustls::Error::AlertReceived(alert) if REFUSED_ALERTS.contains(alert) => refused(files),
        other => format!("{other}"),
    }
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
