//! The reconnect storm: `n` MQTT 3.1.1 clients connect at once (every
//! connection opened concurrently by this one process, as after a power cut
//! at a site), then stay idle. The broker's resident memory is read from
//! `/proc` before, right after the last CONNACK, and after an idle period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use plantd_edge::protocol::v4;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// A server certificate for 127.0.0.1 signed by a fresh CA, written to
/// `dir`, and a client configuration that trusts the CA.
pub struct Pki {
    /// Server certificate chain (PEM file).
    pub cert: std::path::PathBuf,
    /// Server key (PEM file).
    pub key: std::path::PathBuf,
    /// Clients' configuration.
    pub connector: TlsConnector,
}

impl Pki {
    pub fn new(dir: &std::path::Path) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "bench CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let leaf = params.signed_by(&key, &issuer).expect("server cert");
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, leaf.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_cert.pem().as_bytes()).expect("CA PEM"))
            .expect("trust CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Pki {
            cert: cert_path,
            key: key_path,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }
}

/// One idle client: only its socket is kept.
pub enum Idle {
    Tcp(#[allow(dead_code)] TcpStream),
    Tls(#[allow(dead_code)] Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Sends CONNECT and waits for CONNACK.
async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    id: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    v4::Packet::Connect(v4::Connect {
        level: 4,
        client_id: id.into(),
        clean_session: true,
        keep_alive: 0,
        will: None,
        username: None,
        password: None,
    })
    .write(&mut out);
    s.write_all(&out).await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other(format!("CONNACK {connack:?}")));
    }
    Ok(())
}

/// Connects client `i` (from its own loopback address) and sends CONNECT.
pub async fn one(addr: SocketAddr, i: usize, tls: Option<TlsConnector>) -> std::io::Result<Idle> {
    let ip = std::net::Ipv4Addr::new(
        127,
        1 + (i / 60_000) as u8,
        ((i / 250) % 240) as u8,
        (i % 250 + 1) as u8,
    );
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip.into(), 0))?;
    let mut tcp = sock.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let id = format!("storm-{i}");
    match tls {
        None => {
            mqtt_connect(&mut tcp, &id).await?;
            Ok(Idle::Tcp(tcp))
        }
        Some(c) => {
            let name = ServerName::try_from("127.0.0.1").expect("server name");
            let mut s = c.connect(name, tcp).await?;
            mqtt_connect(&mut s, &id).await?;
            Ok(Idle::Tls(Box::new(s)))
        }
    }
}

/// What a storm measured.
pub struct Storm {
    /// Connections that got their CONNACK.
    pub held: usize,
    /// Time from the first connect to the last CONNACK.
    pub took: Duration,
    /// Broker RSS growth per connection one second after the storm, bytes.
    pub after_storm: f64,
    /// The same after `idle` more.
    pub after_idle: f64,
}

/// Opens `n` connections to `addr` at once (over TLS with `tls`), then
/// keeps them idle for `idle`; `rss_kb` reads the broker's RSS.
pub async fn storm(
    addr: SocketAddr,
    n: usize,
    tls: Option<TlsConnector>,
    idle: Duration,
    rss_kb: impl Fn() -> u64,
) -> Storm {
    let before = rss_kb();
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(one(addr, i, tls.clone())))
        .collect();
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("storm connection failed: {e}");
                }
            }
            Err(e) => eprintln!("storm task: {e}"),
        }
    }
    let took = start.elapsed();
    let held = conns.len().max(1) as f64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_storm = (rss_kb().saturating_sub(before) * 1024) as f64 / held;
    tokio::time::sleep(idle).await;
    let after_idle = (rss_kb().saturating_sub(before) * 1024) as f64 / held;
    let held = conns.len();
    drop(conns);
    Storm {
        held,
        took,
        after_storm,
        after_idle,
    }
}
