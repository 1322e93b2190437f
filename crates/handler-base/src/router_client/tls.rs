//! TLS of our connections, built in this one place from PEM files: the rustls server
//! config of every listener ([`server_config`]) and the client side ([`ClientTls`]: the
//! CA every client verifies our servers against, for tonic channels and HTTP clients).
//!
//! One crypto provider (ring, as async-nats uses), chosen explicitly so that no process
//! depends on a process-wide default. Servers offer ALPN `h2` and `http/1.1` (gRPC needs
//! h2, the HTTP routes are served on either).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file that could not be used; `key` names the setting (`tls.cert`, ...).
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        key,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn certs(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// The server side of every listener: the chain of `cert` (PEM, leaf first) and its
/// private `key` (PEM: PKCS#8, PKCS#1 or SEC1). Reads the files (call it at startup).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs("tls.cert", cert, &read("tls.cert", cert)?)?;
    let private = PrivateKeyDer::from_pem_slice(&read("tls.key", key)?).map_err(|e| TlsError {
        key: "tls.key",
        path: key.to_owned(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: "tls.cert",
            path: cert.to_owned(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError {
            key: "tls.key",
            path: key.to_owned(),
            reason: format!("does not fit tls.cert: {e}"),
        })?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// The client side: servers are verified against this CA (and nothing else: the
/// system's roots are not trusted for our own listeners).
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Arc<[u8]>,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(ca)")
    }
}

impl ClientTls {
    /// The CA certificate(s) of `path` (PEM), setting `tls.ca`.
    pub fn from_ca_file(path: &Path) -> Result<ClientTls, TlsError> {
        let pem = read("tls.ca", path)?;
        ClientTls::from_ca_pem(path, &pem)
    }

    /// The CA certificate(s) `pem`, read from `path` (named in errors).
    pub fn from_ca_pem(path: &Path, pem: &[u8]) -> Result<ClientTls, TlsError> {
        let err = |reason: String| TlsError {
            key: "tls.ca",
            path: path.to_owned(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in certs("tls.ca", path, pem)? {
            roots
                .add(c)
                .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            ca_pem: pem.into(),
            config: Arc::new(config),
        })
    }

    /// A rustls client config (no ALPN: HTTP/1.1 clients) verifying against the CA.
    pub fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The CA as PEM (for clients that take it so, e.g. NATS).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The tonic channel's TLS (ALPN h2, verified against the CA, server name = the
    /// endpoint's host).
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&*self.ca_pem))
    }
}

/// Whether `host` (a URI's host: a name, an IP or a bracketed IPv6) is this machine
/// for sure: `localhost`, a loopback IP, or the unspecified address (which connects
/// to this machine).
pub fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.3.0.9",
            "[::1]",
            "::1",
            "0.0.0.0",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in ["10.0.0.1", "example.org", "[fe80::1]", "localhost.evil.org"] {
            assert!(!is_local_host(h), "{h}");
        }
    }

    #[test]
    fn a_file_without_certificates_is_an_error_naming_the_key() {
        let e = ClientTls::from_ca_pem(Path::new("/x/ca.pem"), b"nothing").unwrap_err();
        assert_eq!(e.key, "tls.ca");
        assert!(e.to_string().contains("/x/ca.pem"), "{e}");
    }
}
