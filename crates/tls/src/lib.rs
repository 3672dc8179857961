//! `reins-tls` makes the TLS set-ups of Reins.
//!
//! The node protocol uses *pinned* mutual TLS, like SSH keys: every party has
//! a self-signed certificate, and trust is the exact certificate (the node
//! pins the gateway's certificate it received when joining; the gateway knows
//! each node by the SHA-256 of its certificate, recorded at join). No CA key
//! exists that could mint new identities. The public API can use a real
//! certificate, or a generated CA + leaf for testing ([`self_signed_ca`]).

mod verify;

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};
use sha2::{Digest, Sha256};

pub use rustls;

/// The name in every node's certificate (identity is the fingerprint, not the name).
pub const NODE_NAME: &str = "node.reins.internal";
/// The name in the gateway's certificate, and the server name nodes dial.
pub const GATEWAY_NAME: &str = "gateway.reins.internal";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("fingerprint", &fingerprint_pem(&self.cert_pem).ok()).finish()
    }
}

impl Identity {
    /// A new self-signed identity named `name` (also its DNS name).
    pub fn generate(name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Loads `cert.pem` and `key.pem` from `dir`, creating them (key mode 0600) if absent.
    pub fn load_or_generate(dir: &Path, name: &str) -> Result<Self, Error> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Ok(Self { cert_pem: read(&cert)?, key_pem: read(&key)? });
        }
        let id = Self::generate(name)?;
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write_private(&key, &id.key_pem)?;
        std::fs::write(&cert, &id.cert_pem).map_err(|e| io(&cert, e))?;
        Ok(id)
    }

    pub fn cert_der(&self) -> Result<CertificateDer<'static>, Error> {
        cert_der(&self.cert_pem)
    }

    fn key_der(&self) -> Result<PrivateKeyDer<'static>, Error> {
        rustls_pemfile::private_key(&mut BufReader::new(self.key_pem.as_bytes()))
            .map_err(|e| Error::Pem(e.to_string()))?
            .ok_or_else(|| Error::Pem("no private key".into()))
    }

    /// The certificate chain: the certificate alone, or leaf then CA.
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        rustls_pemfile::certs(&mut BufReader::new(self.cert_pem.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(e.to_string()))
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(contents.as_bytes()).map_err(|e| io(path, e))
}

/// The first certificate of a PEM text, DER.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, Error> {
    rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes()))
        .next()
        .ok_or_else(|| Error::Pem("no certificate".into()))?
        .map_err(|e| Error::Pem(e.to_string()))
}

/// SHA-256 of a DER certificate, hex: a node's identity.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

pub fn fingerprint_pem(pem: &str) -> Result<String, Error> {
    Ok(fingerprint(&cert_der(pem)?))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The gateway's side: its identity, and a client certificate required from
/// every peer (signature checked here; the caller checks its fingerprint).
pub fn gateway_server(identity: &Identity) -> Result<ServerConfig, Error> {
    let p = provider();
    let verifier = Arc::new(verify::AnyClientCert(Arc::clone(&p)));
    let mut cfg = ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain()?, identity.key_der()?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The node's side: its identity, trusting exactly the pinned gateway certificate.
pub fn node_client(identity: &Identity, gateway_cert_pem: &str) -> Result<ClientConfig, Error> {
    let p = provider();
    let pinned = verify::Pinned { der: cert_der(gateway_cert_pem)?, provider: Arc::clone(&p) };
    let mut cfg = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_client_auth_cert(identity.chain()?, identity.key_der()?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A public API server configuration for `identity` (chain PEM + key PEM).
pub fn api_server(identity: &Identity) -> Result<ServerConfig, Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain()?, identity.key_der()?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client of the public API: the Mozilla roots (`webpki-roots`), plus
/// `extra_ca_pem` when given (a private or test CA).
pub fn api_client(extra_ca_pem: Option<&str>) -> Result<ClientConfig, Error> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_ca_pem {
        roots.add(cert_der(pem)?)?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A test CA and a leaf for `hosts` signed by it: (leaf chain + key, CA PEM).
/// Clients trust the CA PEM (`curl --cacert`, `REINS_CA_CERT`).
pub fn self_signed_ca(hosts: &[String]) -> Result<(Identity, String), Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "Reins test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(hosts.to_vec())?;
    leaf_params.distinguished_name.push(DnType::CommonName, "reins");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    Ok((Identity { cert_pem: chain, key_pem: leaf_key.serialize_pem() }, ca.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_distinct_and_round_trip() {
        let a = Identity::generate("node.reins.internal").expect("a");
        let b = Identity::generate("node.reins.internal").expect("b");
        assert_ne!(fingerprint_pem(&a.cert_pem).expect("fp"), fingerprint_pem(&b.cert_pem).expect("fp"));
        assert!(gateway_server(&a).is_ok());
        assert!(node_client(&b, &a.cert_pem).is_ok());
        assert!(node_client(&b, "garbage").is_err());
        let dir = std::env::temp_dir().join(format!("reins-tls-{}", std::process::id()));
        let x = Identity::load_or_generate(&dir, "n").expect("create");
        let y = Identity::load_or_generate(&dir, "n").expect("load");
        assert_eq!(x.cert_pem, y.cert_pem);
        let _ = std::fs::remove_dir_all(dir);
        let (leaf, ca) = self_signed_ca(&["localhost".into()]).expect("ca");
        assert!(api_server(&leaf).is_ok());
        assert!(ca.contains("BEGIN CERTIFICATE"));
    }
}
