//! Certificate reload on SIGHUP, against the real binary: new TLS and WSS
//! handshakes use the new certificate, connections made before the reload
//! keep working, a broken file keeps the previous certificate (and the
//! process), and a broker without TLS survives SIGHUP. Events are awaited
//! through `/metrics` and the log, never by sleeping.

use crate::common;
use crate::pki;
use crate::ws_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pki::{Ca, Files, client_config};
use plantd_edge::protocol::{QoS as Q, v4};
use plantd_shared::process::ManagedProcess;
use rumqttc::{QoS, TlsConfiguration, Transport};
use tokio::process::Command;

/// The binary, and the addresses from its "listening" line.
struct Edge {
    proc: ManagedProcess,
    http: SocketAddr,
    tls: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    wss: Option<SocketAddr>,
}

/// `name=ADDR` from a log line.
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    rest[..rest.find(' ').unwrap_or(rest.len())].parse().ok()
}

async fn start(args: &[&str]) -> Edge {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantd-edge"));
    cmd.args([
        "--mqtt-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--allow-anonymous",
    ])
    .args(args)
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    let mut listening = None;
    let proc = ManagedProcess::spawn("plantd-edge", cmd, Duration::from_secs(30), |line| {
        if line.contains("plantd-edge listening") {
            listening = Some(line.to_owned());
        }
        listening.is_some()
    })
    .await
    .expect("plantd-edge starts");
    let line = listening.expect("listening line");
    Edge {
        proc,
        http: field(&line, "http").expect("http= in the listening line"),
        tls: field(&line, "tls"),
        ws: field(&line, "ws"),
        wss: field(&line, "wss"),
    }
}

impl Edge {
    fn hangup(&self) {
        let pid = self.proc.pid().expect("plantd-edge is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("send SIGHUP");
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = plantd_testkit::http::get(self.http.port(), "/metrics")
            .await
            .ok()?
            .text();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until metric `name` reads `value`.
    async fn await_metric(&self, name: &str, value: f64) {
        let reached = plantd_testkit::wait::at_most(WAIT, || async {
            (self.metric(name).await == Some(value)).then_some(())
        })
        .await;
        if reached.is_none() {
            panic!(
                "{name} did not reach {value} (now {:?}); log:\n{}",
                self.metric(name).await,
                self.proc.tail().join("\n")
            );
        }
    }

    /// Waits until a log line contains `text`.
    async fn await_log(&self, text: &str) {
        let seen = plantd_testkit::wait::at_most(WAIT, || async {
            self.proc
                .tail()
                .iter()
                .any(|l| l.contains(text))
                .then_some(())
        })
        .await;
        if seen.is_none() {
            panic!(
                "no log line with {text:?}:\n{}",
                self.proc.tail().join("\n")
            );
        }
    }
}

const OK: &str = "plantd_edge_tls_reloads_total{result=\"ok\"}";
const FAILED: &str = "plantd_edge_tls_reloads_total{result=\"error\"}";
const LAST_FAILED: &str = "plantd_edge_tls_reload_failed";

/// A rumqttc 3.1.1 client over TLS to `addr`, not yet connected.
fn tls_client(addr: SocketAddr, id: &str, ca: &Ca) -> V4 {
    let config = client_config(&ca.pem, None);
    v4_unchecked(&TestBroker::external(addr, addr), id, move |o| {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    })
}

async fn tls_connected(addr: SocketAddr, id: &str, ca: &Ca) -> V4 {
    let mut c = tls_client(addr, id, ca);
    let ack = c.connack().await.expect("TLS client connects");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    c
}

async fn tls_refused(addr: SocketAddr, id: &str, ca: &Ca) {
    let err = tls_client(addr, id, ca)
        .connack()
        .await
        .expect_err("a client trusting only the old CA is refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "{err}"
    );
}

/// The old TLS client still publishes and receives.
async fn still_alive(old: &mut V4, new: &mut V4, round: &str) {
    let topic = format!("plant/old/{round}");
    old.client
        .publish(
            topic.as_str(),
            QoS::AtLeastOnce,
            false,
            round.as_bytes().to_vec(),
        )
        .await
        .expect("queue publish");
    // Its own message comes back too, maybe before the PUBACK.
    let (_, echo) = old.puback_and_echo().await;
    assert_eq!(echo.topic, topic, "own message back");
    let p = new.publish().await;
    assert_eq!(&p.topic[..], topic);
    new.client
        .publish(
            "plant/new",
            QoS::AtLeastOnce,
            false,
            round.as_bytes().to_vec(),
        )
        .await
        .expect("queue publish");
    let p = old.publish().await;
    assert_eq!(&p.topic[..], "plant/new");
    assert_eq!(&p.payload[..], round.as_bytes());
    assert_eq!(new.publish().await.topic, "plant/new", "own message back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_connections() {
    let files = Files::new();
    let ca1 = Ca::new("plantd test CA 1");
    let ca2 = Ca::new("plantd test CA 2");
    let (cert_a, key_a) = ca1.server();
    let cert = files.write("server.pem", &cert_a);
    let key = files.write("server.key", &key_a);
    let (cert, key) = (
        cert.to_str().expect("UTF-8 path").to_owned(),
        key.to_str().expect("UTF-8 path").to_owned(),
    );
    let edge = start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])
    .await;
    let tls = edge.tls.expect("tls= in the listening line");
    let wss = edge.wss.expect("wss= in the listening line");
    assert!(edge.ws.is_some(), "ws= in the listening line");
    assert_eq!(edge.metric(OK).await, Some(0.0));

    // Before: clients trusting CA 1, over TLS and WSS.
    let mut old = tls_connected(tls, "old", &ca1).await;
    old.sub("plant/#", QoS::AtLeastOnce).await;
    let mut old_wss = ws_client::wss(wss, client_config(&ca1.pem, None))
        .await
        .expect("WSS with certificate A");
    assert_eq!(old_wss.connect4("old-wss", None).await.code, 0);

    // Certificate B, from CA 2; SIGHUP.
    let (cert_b, key_b) = ca2.server();
    files.write("server.pem", &cert_b);
    files.write("server.key", &key_b);
    edge.hangup();
    edge.await_metric(OK, 1.0).await;
    assert_eq!(edge.metric(LAST_FAILED).await, Some(0.0));

    // New handshakes use B: CA 2 clients get in, CA 1 clients do not.
    let mut new = tls_connected(tls, "new", &ca2).await;
    new.sub("plant/#", QoS::AtLeastOnce).await;
    tls_refused(tls, "stale", &ca1).await;
    let mut new_wss = ws_client::wss(wss, client_config(&ca2.pem, None))
        .await
        .expect("WSS with certificate B");
    assert_eq!(new_wss.connect4("new-wss", None).await.code, 0);
    let err = ws_client::wss(wss, client_config(&ca1.pem, None))
        .await
        .err()
        .expect("WSS trusting only CA 1 is refused");
    assert!(err.contains("TLS"), "{err}");

    // The connections made with A are still up, both ways.
    still_alive(&mut old, &mut new, "after-reload").await;
    old_wss
        .send4(ws_client::publish(
            1,
            "plant/wss",
            Q::AtLeastOnce,
            b"old-wss",
        ))
        .await;
    assert_eq!(old_wss.recv4().await, Some(v4::Packet::PubAck(1)));
    assert_eq!(&new.publish().await.payload[..], b"old-wss");
    assert_eq!(&old.publish().await.payload[..], b"old-wss");

    // A broken certificate file: the reload fails, B stays, nothing drops.
    files.write("server.pem", "-----BEGIN GARBAGE-----\nnot a certificate\n");
    edge.hangup();
    edge.await_metric(FAILED, 1.0).await;
    assert_eq!(edge.metric(LAST_FAILED).await, Some(1.0));
    assert_eq!(edge.metric(OK).await, Some(1.0));
    let mut newer = tls_connected(tls, "newer", &ca2).await;
    newer.publish1("plant/newer", false, "still B").await;
    assert_eq!(&old.publish().await.payload[..], b"still B");
    assert_eq!(&new.publish().await.payload[..], b"still B");
    still_alive(&mut old, &mut new, "after-failed-reload").await;
    let mut wss_b = ws_client::wss(wss, client_config(&ca2.pem, None))
        .await
        .expect("WSS still with certificate B");
    assert_eq!(wss_b.connect4("wss-b", None).await.code, 0);
    assert!(edge.proc.pid().is_some(), "still running");

    // Fixed again: the next SIGHUP succeeds and clears the failure gauge.
    files.write("server.pem", &cert_b);
    edge.hangup();
    edge.await_metric(OK, 2.0).await;
    assert_eq!(edge.metric(LAST_FAILED).await, Some(0.0));
    drop((old, new, newer, old_wss, new_wss, wss_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_neither_kills_nor_disturbs_the_broker() {
    let edge = start(&[]).await;
    assert_eq!(edge.tls, None);
    edge.hangup();
    edge.await_log("nothing to reload").await;
    let r = plantd_testkit::http::get(edge.http.port(), "/healthz")
        .await
        .expect("still serving HTTP");
    assert_eq!(r.status, 200);
    assert!(edge.proc.pid().is_some());
}
