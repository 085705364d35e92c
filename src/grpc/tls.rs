//! The gRPC port's TLS files, checked at start-up so that a misconfiguration names the file and
//! what is wrong with it (issue 20: tonic reports every one of them as `transport error`): no
//! certificate or key in a file, a key of another certificate, a client CA file without a
//! certificate, a server certificate outside its validity period. The certificate's names and end
//! date are logged, to compare with the host CA dials.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::error::ServeError;
use crate::config::TlsFiles;

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

fn problem(key: &'static str, path: &Path, problem: impl Into<String>) -> ServeError {
    ServeError::Tls {
        key,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// The certificates of a PEM file; an error when there is none.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(key, path, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            key,
            path,
            "no certificate in it (a PEM block \"-----BEGIN CERTIFICATE-----\")",
        ));
    }
    Ok(certs)
}

/// The server's TLS configuration from checked files; the handshake must end within `timeout`.
/// `client_ca` is read and checked here; whether it is required is the caller's rule.
pub(super) fn server_config(
    files: &TlsFiles,
    timeout: Duration,
) -> Result<ServerTlsConfig, ServeError> {
    let cert_pem = read(&files.cert_file)?;
    let key_pem = read(&files.key_file)?;
    let certs = certificates("grpc.tls.cert_file", &files.cert_file, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        problem(
            "grpc.tls.key_file",
            &files.key_file,
            "no private key in it (PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")",
        )
    })?;
    check_validity(&files.cert_file, &certs[0])?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // The same check rustls makes when tonic builds its configuration, here so that the error
    // can name both files.
    let certified = rustls::sign::CertifiedKey::from_der(certs, key, &provider);
    match certified {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(problem(
                "grpc.tls.key_file",
                &files.key_file,
                format!(
                    "the key does not belong to the certificate in {} (grpc.tls.cert_file)",
                    files.cert_file.display()
                ),
            ));
        }
        Err(e) => {
            return Err(problem(
                "grpc.tls.key_file",
                &files.key_file,
                format!("unusable key: {e}"),
            ));
        }
    }
    let mut cfg = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(timeout);
    if let Some(ca) = &files.client_ca_file {
        let pem = read(ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("grpc.tls.client_ca_file", ca, &pem)? {
            roots.add(cert).map_err(|e| {
                problem(
                    "grpc.tls.client_ca_file",
                    ca,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
        cfg = cfg.client_ca_root(Certificate::from_pem(pem));
    }
    Ok(cfg)
}

/// Refuses a server certificate outside its validity period (CA would refuse it at every
/// handshake), and logs the names and end date of a good one.
fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<(), ServeError> {
    let key = "grpc.tls.cert_file";
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
        problem(
            key,
            path,
            format!("the first certificate cannot be read: {e}"),
        )
    })?;
    let validity = cert.validity();
    let date = |t: &x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(t.timestamp(), 0).map_or_else(
            || t.to_string(),
            |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if validity.not_after.timestamp() < now {
        return Err(problem(
            key,
            path,
            format!(
                "the certificate expired on {}: CA refuses it (renew it)",
                date(&validity.not_after)
            ),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(problem(
            key,
            path,
            format!(
                "the certificate is not valid before {} (check the clock)",
                date(&validity.not_before)
            ),
        ));
    }
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(
        cert_file = %path.display(),
        names = ?names,
        not_after = %date(&validity.not_after),
        "gRPC server certificate: CA's address must use one of these names"
    );
    Ok(())
}
