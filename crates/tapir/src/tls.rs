//! SIP over TLS (RFC 3261 §26): the listener's certificate, and how tapir verifies the
//! targets it connects to (a CA bundle or a pinned certificate per route).
//!
//! rustls with the `ring` provider. The listener's certificate and key are read from files at
//! start and again on SIGHUP ([`TlsServer::reload`]); a connection keeps the configuration it
//! was accepted with. Framing and idle rules of a TLS connection are those of TCP (the
//! engine's stream connection runs over either).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .with_context(|| format!("{}: bad CA certificate", path.display()))?;
    }
    Ok(roots)
}

/// Where the listener's certificate, key and client CAs are read from.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are verified against these CAs; a client without one is still
    /// accepted unless `require_client_cert`.
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

/// The listener side, reloadable.
pub struct TlsServer {
    files: ServerFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    pub fn load(files: ServerFiles) -> Result<Self> {
        let config = Self::build(&files)?;
        Ok(Self {
            files,
            config: RwLock::new(Arc::new(config)),
        })
    }

    fn build(f: &ServerFiles) -> Result<ServerConfig> {
        let chain = read_certs(&f.cert)?;
        let key = read_key(&f.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &f.client_ca {
            Some(ca) => {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider(),
                );
                let v = if f.require_client_cert {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(v.build().context("sip.tls_client_ca")?)
            }
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(chain, key)
            .context("certificate and key do not match")
    }

    /// Reads the files again (SIGHUP). On error the previous certificate stays in force.
    pub fn reload(&self) -> Result<()> {
        let cfg = Self::build(&self.files)?;
        *self.config.write().unwrap() = Arc::new(cfg);
        Ok(())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().unwrap().clone())
    }
}

/// How tapir verifies one target (a route's `tls` table).
pub use b2bua::RouteTls as TargetTls;

/// Accepts only the pinned end-entity certificate; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client configurations for the TLS targets, by target address.
#[derive(Default)]
pub struct TlsClients {
    targets: HashMap<SocketAddr, (Arc<ClientConfig>, ServerName<'static>)>,
}

impl TlsClients {
    /// One client configuration per TLS target; a target without `ca_file` or
    /// `pinned_cert` is a configuration error (tapir has no default trust store).
    pub fn build(targets: &[(SocketAddr, TargetTls)]) -> Result<Self> {
        let mut out = HashMap::new();
        for (addr, t) in targets {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?;
            let builder = match (&t.ca_file, &t.pinned_cert) {
                (Some(ca), None) => builder.with_root_certificates(roots(ca)?),
                (None, Some(pin)) => {
                    let cert = read_certs(pin)?.remove(0);
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(Pinned {
                            cert,
                            provider: provider(),
                        }))
                }
                (Some(_), Some(_)) => bail!("target {addr}: tls has both ca_file and pinned_cert"),
                (None, None) => {
                    bail!("target {addr} uses TLS: its route needs tls.ca_file or tls.pinned_cert")
                }
            };
            let cfg = match (&t.client_cert, &t.client_key) {
                (Some(c), Some(k)) => builder
                    .with_client_auth_cert(read_certs(c)?, read_key(k)?)
                    .with_context(|| format!("target {addr}: client certificate and key"))?,
                (None, None) => builder.with_no_client_auth(),
                _ => bail!("target {addr}: tls.client_cert and tls.client_key go together"),
            };
            let name = match &t.server_name {
                Some(n) => ServerName::try_from(n.clone())
                    .with_context(|| format!("target {addr}: bad server_name '{n}'"))?,
                None => ServerName::IpAddress(addr.ip().into()),
            };
            out.insert(*addr, (Arc::new(cfg), name));
        }
        Ok(Self { targets: out })
    }

    pub fn get(
        &self,
        addr: SocketAddr,
    ) -> Option<(tokio_rustls::TlsConnector, ServerName<'static>)> {
        self.targets
            .get(&addr)
            .map(|(c, n)| (tokio_rustls::TlsConnector::from(c.clone()), n.clone()))
    }
}

/// The TLS side of the engine: the listener's configuration (when listening) and the
/// targets' client configurations (swapped on SIGHUP).
pub struct Tls {
    pub server: Option<TlsServer>,
    pub clients: RwLock<Arc<TlsClients>>,
}

impl Tls {
    /// Reloads the certificate files; a failure leaves what was in force and is reported.
    pub fn reload(&self, targets: &[(SocketAddr, TargetTls)]) -> Result<()> {
        if let Some(s) = &self.server {
            s.reload()?;
        }
        let c = TlsClients::build(targets)?;
        *self.clients.write().unwrap() = Arc::new(c);
        Ok(())
    }
}
