//! The TLS listener with real clients: rumqttc over rustls (ring) and
//! mosquitto_pub with `--cafile`, certificates made by rcgen. A client that
//! does not trust the CA fails; a client certificate's common name reaches
//! the authoriser as the connection's certificate identity; a silent TLS
//! socket does not hold up the accept loop.

use crate::common;
use crate::pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use pki::{Ca, client_config};
use plantd_edge::hooks::Authorizer;
use plantd_edge::{Broker, Config};
use rumqttc::{QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::AsyncReadExt;

/// Test certificates on disk.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let server_ca = Ca::new("plantd test server CA");
        let client_ca = Ca::new("plantd test device CA");
        let (cert, key) = server_ca.leaf("plantd-edge", &["127.0.0.1", "localhost"]);
        let pki = Pki {
            dir,
            server_ca,
            client_ca,
        };
        pki.write("ca.pem", &pki.server_ca.pem);
        pki.write("client-ca.pem", &pki.client_ca.pem);
        pki.write("server.pem", &cert);
        pki.write("server.key", &key);
        pki
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

struct TlsBroker {
    tls: SocketAddr,
    metrics: Arc<plantd_edge::metrics::Metrics>,
    running: Running,
}

impl TlsBroker {
    async fn start(
        pki: &Pki,
        client_ca: bool,
        f: impl FnOnce(&mut Config),
        auth: Option<Arc<dyn Authorizer>>,
    ) -> TlsBroker {
        init_tracing();
        let mut c = Config {
            mqtt_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            tls_listen: Some("127.0.0.1:0".into()),
            tls_cert: Some(pki.path("server.pem")),
            tls_key: Some(pki.path("server.key")),
            tls_client_ca: client_ca.then(|| pki.path("client-ca.pem")),
            allow_anonymous: true,
            ..Config::default()
        };
        f(&mut c);
        let mut broker = Broker::bind(c).await.expect("broker binds with TLS");
        if let Some(a) = auth {
            broker = broker.with_authorizer(a);
        }
        let tls = broker.tls_addr().expect("TLS listener bound");
        let metrics = broker.metrics();
        TlsBroker {
            tls,
            metrics,
            running: Running::spawn(broker),
        }
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

/// A rumqttc 3.1.1 client over TLS to `b`.
fn tls_client(b: &TlsBroker, id: &str, config: rustls::ClientConfig) -> V4 {
    tls_client_at(b.tls, id, config)
}

/// A rumqttc 3.1.1 client over TLS to `addr`.
fn tls_client_at(addr: SocketAddr, id: &str, config: rustls::ClientConfig) -> V4 {
    // The common helper connects to 127.0.0.1 at the handle's MQTT port.
    let at = TestBroker::external(addr, addr);
    v4_unchecked(&at, id, move |o| {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        o.set_max_packet_size(512 * 1024, 512 * 1024);
    })
}

async fn connected(mut c: V4) -> V4 {
    let ack = c.connack().await.expect("TLS client connects");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    c
}

/// mosquitto_pub over TLS trusting `cafile`, optionally with a client
/// certificate; returns whether it succeeded.
async fn mosquitto_pub_tls(b: &TlsBroker, cafile: &Path, extra: &[&str], topic: &str) -> bool {
    mosquitto_pub_tls_at(b.tls, cafile, extra, topic).await
}

async fn mosquitto_pub_tls_at(
    addr: SocketAddr,
    cafile: &Path,
    extra: &[&str],
    topic: &str,
) -> bool {
    let status = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(mosquitto("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .arg("--cafile")
            .arg(cafile)
            .args(extra)
            .args(["-i", "mosq-tls", "-t", topic, "-m", "over-tls", "-q", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status(),
    )
    .await
    .expect("mosquitto_pub finishes in time")
    .expect("mosquitto_pub runs");
    status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_and_mosquitto_over_tls_deliver_to_a_subscriber() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false, |_| {}, None).await;
    let mut sub = connected(tls_client(
        &b,
        "tls-sub",
        client_config(&pki.server_ca.pem, None),
    ))
    .await;
    sub.sub("plant/#", QoS::AtLeastOnce).await;

    let mut publisher = connected(tls_client(
        &b,
        "tls-pub",
        client_config(&pki.server_ca.pem, None),
    ))
    .await;
    publisher.publish1("plant/line1/temp", false, "21.5").await;
    let p = sub.publish().await;
    assert_eq!(&p.topic[..], "plant/line1/temp");
    assert_eq!(&p.payload[..], b"21.5");

    // A bigger burst crosses the bridge in both directions intact.
    let payload = vec![b'x'; 200 * 1024];
    publisher
        .client
        .publish("plant/big", QoS::AtLeastOnce, false, payload.clone())
        .await
        .expect("queue big publish");
    let p = sub.publish().await;
    assert_eq!(p.payload.len(), payload.len());

    assert!(
        mosquitto_pub_tls(&b, &pki.path("ca.pem"), &[], "plant/mosquitto").await,
        "mosquitto_pub --cafile publishes over TLS"
    );
    let p = sub.publish().await;
    assert_eq!(&p.topic[..], "plant/mosquitto");
    assert_eq!(&p.payload[..], b"over-tls");
    drop(publisher);
    drop(sub);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_fails() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false, |_| {}, None).await;
    let stranger = Ca::new("someone else");
    let mut c = tls_client(&b, "distrustful", client_config(&stranger.pem, None));
    let err = c.connack().await.expect_err("handshake must fail");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "unexpected error: {err}"
    );
    // mosquitto_pub with the wrong CA file fails too.
    let wrong = pki.write("other-ca.pem", &stranger.pem);
    assert!(!mosquitto_pub_tls(&b, &wrong, &[], "plant/x").await);
    // And the broker still serves a trusting client.
    connected(tls_client(
        &b,
        "trusting",
        client_config(&pki.server_ca.pem, None),
    ))
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_common_name_becomes_the_certificate_identity() {
    let pki = Pki::new();
    let seen = Arc::new(SeenCertificates::default());
    let b = TlsBroker::start(&pki, true, |_| {}, Some(seen.clone())).await;
    let (cert, key) = pki.client_ca.leaf("press-7", &[]);

    let mut device = connected(tls_client(
        &b,
        "device",
        client_config(&pki.server_ca.pem, Some((&cert, &key))),
    ))
    .await;
    device.publish1("plant/press", false, "1").await;

    // Client certificates are optional: a client without one is served,
    // with no certificate identity.
    let mut plain = connected(tls_client(
        &b,
        "no-cert",
        client_config(&pki.server_ca.pem, None),
    ))
    .await;
    plain.publish1("plant/other", false, "2").await;

    // mosquitto_pub with a client certificate is identified the same way.
    let cert_path = pki.write("device.pem", &cert);
    let key_path = pki.write("device.key", &key);
    let (cert_arg, key_arg) = (
        cert_path.to_str().expect("UTF-8 temp path"),
        key_path.to_str().expect("UTF-8 temp path"),
    );
    assert!(
        mosquitto_pub_tls(
            &b,
            &pki.path("ca.pem"),
            &["--cert", cert_arg, "--key", key_arg],
            "plant/mosq"
        )
        .await
    );

    // A certificate from a CA the broker does not trust is refused.
    let rogue = Ca::new("rogue");
    let (rcert, rkey) = rogue.leaf("press-7", &[]);
    let mut impostor = tls_client(
        &b,
        "impostor",
        client_config(&pki.server_ca.pem, Some((&rcert, &rkey))),
    );
    impostor
        .connack()
        .await
        .expect_err("an untrusted client certificate is refused");

    let seen = seen.0.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![Some("press-7".to_owned()), None, Some("press-7".to_owned())]
    );
    drop((device, plain));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_socket_neither_blocks_accepting_nor_stays_open() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false, |c| c.limits.connect_timeout_ms = 500, None).await;
    let mut silent = tokio::net::TcpStream::connect(b.tls)
        .await
        .expect("TCP connect to the TLS port");
    // Another client completes its handshake while the first says nothing.
    connected(tls_client(
        &b,
        "prompt",
        client_config(&pki.server_ca.pem, None),
    ))
    .await;
    // The silent one is closed after the connect timeout.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("silent TLS socket closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a TLS answer");
    // Counted once the handshake's task has ended, which may be just
    // after the socket closed.
    let counted = plantd_testkit::wait::at_most(WAIT, || async {
        (b.metrics
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1)
            .then_some(())
    })
    .await;
    assert!(counted.is_some(), "the refused handshake is counted");
    b.stop().await;
}

#[tokio::test]
async fn a_tls_listener_without_certificate_or_key_does_not_start() {
    let pki = Pki::new();
    let c = Config {
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        tls_listen: Some("127.0.0.1:0".into()),
        tls_cert: Some(pki.path("server.pem")),
        ..Config::default()
    };
    let err = Broker::bind(c).await.err().expect("refused without a key");
    assert!(err.to_string().contains("--tls-key"), "{err}");
    let c = Config {
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        tls_listen: Some("127.0.0.1:0".into()),
        tls_cert: Some(pki.path("missing.pem")),
        tls_key: Some(pki.path("server.key")),
        ..Config::default()
    };
    let err = Broker::bind(c)
        .await
        .err()
        .expect("refused with a missing file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn common_name_is_read_from_a_certificate() {
    let ca = Ca::new("a CA");
    let (cert, _) = ca.leaf("gateway-42", &["localhost"]);
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("PEM");
    assert_eq!(
        plantd_edge::tls::common_name(der.as_ref()).as_deref(),
        Some("gateway-42")
    );
    assert_eq!(plantd_edge::tls::common_name(b"\x30\x03\x02\x01"), None);
    assert_eq!(plantd_edge::tls::common_name(&[]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_tls_flags_and_logs_the_tls_address() {
    use tokio::io::AsyncBufReadExt;
    let pki = Pki::new();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let ca = pki.path("client-ca.pem");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--tls-listen", "127.0.0.1:0", "--allow-anonymous"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-client-ca")
        .arg(&ca)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn plantd-edge");
    // Logs go to standard error (`plantd_shared::logging`).
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let tls: SocketAddr = loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("listening line in time")
            .expect("read stderr")
            .expect("plantd-edge exited before listening");
        if line.contains("plantd-edge listening") {
            let start = line.find("tls=").expect("tls= in the listening line") + 4;
            let rest = &line[start..];
            break rest[..rest.find(' ').unwrap_or(rest.len())]
                .parse()
                .expect("TLS socket address");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut sub = tls_client_at(tls, "bin-sub", client_config(&pki.server_ca.pem, None));
    let ack = sub
        .connack()
        .await
        .expect("TLS client connects to the binary");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    sub.sub("plant/#", QoS::AtLeastOnce).await;
    assert!(mosquitto_pub_tls_at(tls, &pki.path("ca.pem"), &[], "plant/bin").await);
    let p = sub.publish().await;
    assert_eq!(&p.payload[..], b"over-tls");
    let _ = child.kill().await;
}
