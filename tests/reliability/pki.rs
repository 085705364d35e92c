//! Throwaway certificate authorities and leaf certificates (rcgen) for the TLS tests of the
//! reliability suite.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A throwaway certificate authority.
pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        Pki {
            issuer: CertifiedIssuer::self_signed(p, key).expect("CA"),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for a server (`localhost`, 127.0.0.1) or a client.
    pub fn leaf(&self, cn: &str, client: bool) -> (String, String) {
        let sans: &[&str] = if client {
            &[cn]
        } else {
            &["localhost", "127.0.0.1"]
        };
        self.leaf_with(cn, client, sans, false)
    }

    /// A leaf with these subject alternative names; `expired`: valid in 2020 only.
    pub fn leaf_with(
        &self,
        cn: &str,
        client: bool,
        sans: &[&str],
        expired: bool,
    ) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}
