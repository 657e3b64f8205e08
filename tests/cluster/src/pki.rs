//! Test certificates for the NATS nodes: one CA, and one certificate for
//! 127.0.0.1 and localhost that every node presents as a server and as a
//! client (routes and gateways are mutual TLS).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tempfile::TempDir;

/// The CA and the node certificate, written as PEM files.
#[derive(Debug)]
pub struct Pki {
    /// Owns the files.
    _dir: TempDir,
    /// The CA certificate (`NATS_TLS_CA`, and what clients trust).
    pub ca: PathBuf,
    /// The node certificate (`NATS_TLS_CERT`).
    pub cert: PathBuf,
    /// Its key (`NATS_TLS_KEY`).
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA and node certificate.
    ///
    /// # Panics
    /// When a key cannot be generated or a file written.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plantd-pki-")
            .tempdir()
            .expect("temporary directory for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "plantd test NATS CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("node key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, "nats.plantd.test");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign node certificate");

        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            cert: write("node.pem", &cert.pem()),
            key: write("node-key.pem", &key.serialize_pem()),
            _dir: dir,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
