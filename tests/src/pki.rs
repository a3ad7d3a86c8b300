//! Certificates made for the TLS tests (rcgen): a CA of its own per test and a leaf it signed
//! for 127.0.0.1, as PEM. Nothing is read from the machine's trust store.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and a certificate it signed for 127.0.0.1, as PEM.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Pki {
    /// The leaf's certificate followed by its key, in one PEM (the form baresip's
    /// `sip_certificate` takes).
    pub fn cert_and_key(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }
}

/// A new CA named after `name` and a certificate it signed for 127.0.0.1.
pub fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{name} 127.0.0.1"));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Writes `text` to `dir/name`; its path.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// The environment that gives tapir a SIP over TLS listener on a free port of 127.0.0.1 with
/// `p`'s certificate (written to `dir/tapir.crt` and `dir/tapir.key`, where a test may
/// replace them before a SIGHUP), and that port.
pub fn tls_listener_env(dir: &std::path::Path, p: &Pki) -> (Vec<(String, String)>, u16) {
    let port = crate::free_port("127.0.0.1");
    let env = vec![
        (
            "TAPIR_SIP__LISTEN_TLS".into(),
            format!("[\"127.0.0.1:{port}\"]"),
        ),
        (
            "TAPIR_SIP__TLS_CERT".into(),
            write(dir, "tapir.crt", &p.cert),
        ),
        ("TAPIR_SIP__TLS_KEY".into(), write(dir, "tapir.key", &p.key)),
    ];
    (env, port)
}

/// A TLS client trusting `ca_pem`, presenting `client`'s certificate and key when given.
pub fn connector_with(ca_pem: &str, client: Option<&Pki>) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        Some(p) => cfg
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(p.cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => cfg.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}
