//! The TLS listener's connections: the server configuration (certificate,
//! key, optional client CA) and its reload ([`Certificates`], shared with
//! the WSS listener and re-read on SIGHUP), the handshake within a timeout,
//! and the client certificate's common name.
//!
//! After the handshake the link serves the TLS session itself
//! ([`crate::link::TlsSocket`]: rustls driven over the TCP socket under the
//! link's readiness model), without a bridge, socket pair or copy buffers
//! (`docs/decisions/0034-edge-tls-in-link.md`).
//!
//! Client certificates: with a client CA, clients *may* present a
//! certificate; a valid one puts its common name in
//! [`ClientInfo::certificate`](crate::hooks::ClientInfo::certificate). The
//! token is still required (unless anonymous access is on), except for a
//! device registered with the certificate's fingerprint, which may log in
//! without one ([`crate::auth::certificates`], decision 0043).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why the TLS listener cannot be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} from {path}: {detail}")]
    Pem {
        /// Certificate, key or client CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Files of the TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    /// Server certificate chain (PEM, leaf first).
    pub cert: &'a Path,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
    /// CA whose client certificates are verified (PEM); `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<&'a Path>,
}

/// Builds the acceptor for `files` with rustls' ring provider.
///
/// # Errors
/// [`TlsError`] when a file is missing or invalid.
pub fn acceptor(files: &TlsFiles<'_>) -> Result<TlsAcceptor, TlsError> {
    server_config(files).map(TlsAcceptor::from)
}

/// Builds the rustls server configuration for `files` (ring provider, safe
/// default protocol versions, optional client certificates).
///
/// # Errors
/// [`TlsError`] when a file is missing or invalid.
pub fn server_config(files: &TlsFiles<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |what: &'static str, path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(files.cert)
        .map_err(|e| pem("certificates", files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificates", files.cert, &e))?;
    if certs.is_empty() {
        return Err(pem("certificates", files.cert, &"no CERTIFICATE section"));
    }
    let key =
        PrivateKeyDer::from_pem_file(files.key).map_err(|e| pem("private key", files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| pem("client CA", path, &e))?
            {
                let cert = cert.map_err(|e| pem("client CA", path, &e))?;
                roots.add(cert).map_err(|e| pem("client CA", path, &e))?;
            }
            if roots.is_empty() {
                return Err(pem("client CA", path, &"no CERTIFICATE section"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The live TLS configuration shared by the TLS and WSS listeners, and the
/// files it was read from.
///
/// Contract: [`acceptor`](Certificates::acceptor) hands out the
/// configuration current at that moment, so a handshake uses one
/// configuration from start to end; [`reload`](Certificates::reload)
/// re-reads the files and replaces it only when all of them are valid.
/// Established connections keep the configuration they were accepted with
/// (rustls holds it by `Arc`), so a reload never drops a client.
#[derive(Debug)]
pub struct Certificates {
    /// Server certificate chain (PEM).
    cert: PathBuf,
    /// Server private key (PEM).
    key: PathBuf,
    /// Client CA (PEM), if client certificates are asked for.
    client_ca: Option<PathBuf>,
    /// The configuration new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Reads `files` once.
    ///
    /// # Errors
    /// [`TlsError`] when a file is missing or invalid.
    pub fn load(files: &TlsFiles<'_>) -> Result<Self, TlsError> {
        let config = server_config(files)?;
        Ok(Certificates {
            cert: files.cert.to_path_buf(),
            key: files.key.to_path_buf(),
            client_ca: files.client_ca.map(Path::to_path_buf),
            current: RwLock::new(config),
        })
    }

    /// The files, as given at load.
    pub fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            cert: &self.cert,
            key: &self.key,
            client_ca: self.client_ca.as_deref(),
        }
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The configuration current now.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            // A panic while swapping an `Arc` leaves a valid `Arc` behind.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the certificate, key and client CA. On success new
    /// handshakes use them; on error the previous configuration stays in
    /// force and the error says which file is wrong.
    ///
    /// # Errors
    /// [`TlsError`] when a file is missing or invalid.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files())?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

/// Runs the TLS handshake on `tcp` within `timeout`; returns the stream and
/// the common name of the client's verified certificate, if it sent one.
///
/// # Errors
/// A message for the log when the handshake fails or times out.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Option<Arc<str>>), String> {
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake within the connect timeout".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| common_name(leaf.as_ref()))
        .map(Arc::from);
    Ok((tls, cn))
}

/// One DER element: tag, contents, what follows.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, after) = rest.split_at_checked(len)?;
    Some((tag, contents, after))
}

/// The subject common name (OID 2.5.4.3) of a DER certificate, if it has
/// one in a string type. The certificate is already verified by rustls;
/// this only reads it.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature, issuer, validity, subject.
    let (tag, _, mut rest) = der(tbs)?;
    let skip = if tag == 0xa0 { 4 } else { 3 };
    for _ in 0..skip {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = der(rest)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (SET, mut set, after) = der(rdns)? else {
            return None;
        };
        rdns = after;
        while !set.is_empty() {
            let (SEQUENCE, attribute, after) = der(set)? else {
                return None;
            };
            set = after;
            let (OID, oid, value) = der(attribute)? else {
                return None;
            };
            if oid == CN {
                let (tag, text, _) = der(value)?;
                // UTF8String, PrintableString, IA5String.
                return matches!(tag, 0x0c | 0x13 | 0x16)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
}
