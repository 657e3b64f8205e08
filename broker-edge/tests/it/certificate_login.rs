//! Certificate-only login (decision 0043) with the whole edge
//! (`plantd_edge::edge::run`: TLS listener with a device CA, token trust,
//! uplink to a real nats-server) and rumqttc 5.0 and 3.1.1 clients over
//! rustls with certificates rcgen makes: a device registered in
//! `plantd_device_certs` with its certificate's SHA-256 connects without a
//! token and gets exactly its grants; an unregistered certificate, one of
//! another organisation's device and an inactive one are refused with
//! 0x87 (3.1.1: 5), over TLS and over a secure WebSocket alike; a token
//! still works; the record deleted closes the live connection with 0x87;
//! and an edge restarted without its uplink admits the device from its
//! cache.

use crate::common;
use crate::pki;
use crate::site_owner::Issuer;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pki::{Ca, client_config};
use plantd_edge::Config;
use plantd_shared::device_certs::{DEVICE_CERTS_BUCKET, DeviceCert, Fingerprint, key};
use plantd_shared::sites::Sites;
use plantd_shared::subject::Site;
use plantd_testkit::{Nats, eventually, http};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::oneshot;

const SITE: &str = crate::edge_proc::SITE;

/// The edge in this process, as the binary runs it.
struct Edge {
    /// Its listeners.
    at: plantd_edge::server::Listening,
    /// Ends it.
    stop: Option<oneshot::Sender<()>>,
    /// Its task.
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    async fn start(config: Config) -> Edge {
        init_tracing();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            plantd_edge::edge::run(
                config,
                async move {
                    let _ = stop_rx.await;
                },
                move |listening| {
                    let _ = ready_tx.send(listening);
                },
            )
            .await
            .expect("edge runs");
        });
        let at = tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("edge ready in time")
            .expect("edge started");
        Edge {
            at,
            stop: Some(stop),
            task,
        }
    }

    fn tls(&self) -> SocketAddr {
        self.at.tls.expect("TLS listener")
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = http::get(self.at.http.port(), "/metrics")
            .await
            .ok()?
            .text();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("edge stops in time")
            .expect("edge task");
    }
}

/// The test's certificates: a server CA and leaf, a device CA and its
/// device leaves (certificate PEM, key PEM).
struct Pki {
    files: pki::Files,
    server_ca: Ca,
    device_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let files = pki::Files::new();
        let server_ca = Ca::new("plantd test server CA");
        let device_ca = Ca::new("plantd test device CA");
        let (cert, key) = server_ca.server();
        files.write("server.pem", &cert);
        files.write("server.key", &key);
        files.write("device-ca.pem", &device_ca.pem);
        Pki {
            files,
            server_ca,
            device_ca,
        }
    }

    fn config(&self, data: &Path, nats: Option<&Nats>, jwks: &Path) -> Config {
        let mut c = Config {
            site: SITE.into(),
            mqtt_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            tls_listen: Some("127.0.0.1:0".into()),
            tls_cert: Some(self.files.path("server.pem")),
            tls_key: Some(self.files.path("server.key")),
            tls_client_ca: Some(self.files.path("device-ca.pem")),
            data_dir: Some(data.to_owned()),
            jwks_file: Some(jwks.to_owned()),
            ..Config::default()
        };
        c.uplink.nats_url = nats.map(Nats::url);
        c
    }
}

fn fingerprint(cert_pem: &str) -> Fingerprint {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    Fingerprint::of_der(der.as_ref())
}

fn record(device: &str, org: &str, active: bool) -> DeviceCert {
    DeviceCert {
        device: device.into(),
        org: org.into(),
        site: SITE.into(),
        publish: vec!["line1/#".into()],
        subscribe: vec!["line1/#".into()],
        active,
    }
}

/// rumqttc 5.0 over TLS to `addr`, presenting `identity` (certificate
/// PEM, key PEM) if any; `f` adds options.
fn tls5(
    addr: SocketAddr,
    id: &str,
    rustls: rustls::ClientConfig,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> V5 {
    plantd_testkit::mqtt::v5_unchecked(addr.port(), id, move |o| {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(rustls))));
        f(o);
    })
}

/// rumqttc 3.1.1 over TLS to `addr`.
fn tls4(addr: SocketAddr, id: &str, rustls: rustls::ClientConfig) -> V4 {
    plantd_testkit::mqtt::v4_unchecked(addr.port(), id, move |o| {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(rustls))));
    })
}

/// Both protocol versions refuse the certificate `leaf` without a token.
async fn refused(edge: &Edge, pki: &Pki, who: &str, leaf: &(String, String)) {
    let id = Some((leaf.0.as_str(), leaf.1.as_str()));
    match tls5(
        edge.tls(),
        &format!("{who}-5"),
        client_config(&pki.server_ca.pem, id),
        |_| {},
    )
    .connack()
    .await
    {
        Ok(a) => panic!("{who}: v5 accepted: {a:?}"),
        Err(e) => assert!(
            e.contains("ConnectionRefused(NotAuthorized)"),
            "{who}: v5 0x87: {e}"
        ),
    }
    match tls4(
        edge.tls(),
        &format!("{who}-4"),
        client_config(&pki.server_ca.pem, id),
    )
    .connack()
    .await
    {
        Ok(a) => panic!("{who}: 3.1.1 accepted: {a:?}"),
        Err(e) => assert!(e.contains("NotAuthorized"), "{who}: return code 5: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_certificate_logs_in_without_a_token_and_nothing_else_does() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("plantd_sites")
        .register(&Site::new(SITE).expect("site"), "acme", SITE)
        .await
        .expect("register the site");
    let certs = js
        .get_key_value(DEVICE_CERTS_BUCKET)
        .await
        .expect("plantd_device_certs");
    let site = Site::new(SITE).expect("site");
    let pki = Pki::new();
    let press = pki.device_ca.leaf("press-1", &[]);
    let stranger = pki.device_ca.leaf("stranger", &[]);
    let spy = pki.device_ca.leaf("spy", &[]);
    let idle = pki.device_ca.leaf("idle", &[]);
    for (leaf, rec) in [
        (&press, record("dev-press-1", "acme", true)),
        (&spy, record("dev-spy", "initech", true)),
        (&idle, record("dev-idle", "acme", false)),
    ] {
        certs
            .put(
                key(&site, &fingerprint(&leaf.0)),
                serde_json::to_vec(&rec).expect("JSON").into(),
            )
            .await
            .expect("register the certificate");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer = Issuer::new(dir.path());
    let data = dir.path().join("edge");
    let mut config = pki.config(&data, Some(&nats), &issuer.jwks);
    config.wss_listen = Some("127.0.0.1:0".into());
    let edge = Edge::start(config).await;
    eventually(
        Duration::from_secs(10),
        "the edge to follow the site's three certificates",
        || async { (edge.metric("plantd_device_certificates").await == Some(3.0)).then_some(()) },
    )
    .await;

    // The registered device: in without a token, with its grants only.
    let press_id = Some((press.0.as_str(), press.1.as_str()));
    let mut dev = tls5(
        edge.tls(),
        "press-1",
        client_config(&pki.server_ca.pem, press_id),
        |_| {},
    );
    let ack = dev.connack().await.expect("certificate login");
    assert_eq!(ack.code, m5::ConnectReturnCode::Success);
    assert_eq!(
        dev.sub("line1/#", Q5::AtLeastOnce).await.return_codes,
        vec![m5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    assert_eq!(
        dev.sub("secret/#", Q5::AtLeastOnce).await.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized]
    );
    assert_eq!(
        dev.publish1("line1/temp", false, "21.5").await.reason,
        m5::PubAckReason::Success
    );
    assert_eq!(
        dev.publish1("line2/temp", false, "x").await.reason,
        m5::PubAckReason::NotAuthorized
    );
    // 3.1.1 too.
    let mut dev4 = tls4(
        edge.tls(),
        "press-1-v4",
        client_config(&pki.server_ca.pem, press_id),
    );
    assert_eq!(
        dev4.connack().await.expect("3.1.1 certificate login").code,
        rumqttc::ConnectReturnCode::Success
    );

    // MQTT over a secure WebSocket: the same certificate, the same login
    // (the link serves the bridge's socket, not the TLS session).
    let wss = edge.at.wss.expect("WSS listener");
    let mut over_wss = crate::ws_client::wss(wss, client_config(&pki.server_ca.pem, press_id))
        .await
        .expect("WSS upgrade");
    assert_eq!(over_wss.connect4("press-1-wss", None).await.code, 0);
    let stranger_id = Some((stranger.0.as_str(), stranger.1.as_str()));
    let mut stranger_wss =
        crate::ws_client::wss(wss, client_config(&pki.server_ca.pem, stranger_id))
            .await
            .expect("WSS upgrade");
    assert_eq!(
        stranger_wss.connect4("stranger-wss", None).await.code,
        5,
        "an unregistered certificate is refused over WSS too"
    );

    // Not registered, another organisation's device, an inactive one.
    refused(&edge, &pki, "stranger", &stranger).await;
    refused(&edge, &pki, "spy", &spy).await;
    refused(&edge, &pki, "idle", &idle).await;
    // No certificate and no token: as before, not authorised.
    match tls5(
        edge.tls(),
        "nobody",
        client_config(&pki.server_ca.pem, None),
        |_| {},
    )
    .connack()
    .await
    {
        Ok(a) => panic!("no credentials accepted: {a:?}"),
        Err(e) => assert!(e.contains("NotAuthorized"), "{e}"),
    }
    // A token still works, with or without a certificate.
    let token = issuer.token("operator", "acme", &["operator"]);
    let stranger_id = Some((stranger.0.as_str(), stranger.1.as_str()));
    let mut with_token = tls5(
        edge.tls(),
        "with-token",
        client_config(&pki.server_ca.pem, stranger_id),
        token_creds5(&token),
    );
    assert_eq!(
        with_token.connack().await.expect("token login").code,
        m5::ConnectReturnCode::Success
    );
    // press-1 over TLS (v5 and 3.1.1) and over WSS.
    assert_eq!(
        edge.metric("plantd_certificate_logins_total{result=\"accepted\"}")
            .await,
        Some(3.0)
    );

    // Unregistered while connected: closed with 0x87, and refused after.
    certs
        .delete(key(&site, &fingerprint(&press.0)))
        .await
        .expect("unregister");
    let why = dev.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    let e = loop {
        if let Err(e) = dev4.incoming().await {
            break e;
        }
    };
    assert!(!e.contains("timeout"), "3.1.1 connection closed: {e}");
    refused(&edge, &pki, "press-1 unregistered", &press).await;
    edge.stop().await;

    // Registered again, then an edge without its uplink: from the cache.
    certs
        .put(
            key(&site, &fingerprint(&press.0)),
            serde_json::to_vec(&record("dev-press-1", "acme", true))
                .expect("JSON")
                .into(),
        )
        .await
        .expect("register again");
    let edge = Edge::start(pki.config(&data, Some(&nats), &issuer.jwks)).await;
    eventually(
        Duration::from_secs(10),
        "the edge to follow the certificate registered again",
        || async { (edge.metric("plantd_device_certificates").await == Some(3.0)).then_some(()) },
    )
    .await;
    edge.stop().await;
    let offline = Edge::start(pki.config(&data, None, &issuer.jwks)).await;
    let mut dev = tls5(
        offline.tls(),
        "press-1-offline",
        client_config(&pki.server_ca.pem, press_id),
        |_| {},
    );
    assert_eq!(
        dev.connack().await.expect("certificate login offline").code,
        m5::ConnectReturnCode::Success
    );
    refused(&offline, &pki, "stranger offline", &stranger).await;
    offline.stop().await;
}
