//! Test harness: an in-process broker on port 0, real clients (rumqttc v4
//! and v5, mosquitto_pub/sub, paho-mqtt) and a raw socket client for the
//! cases a well-behaved client cannot produce (silence, malformed bytes).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use plantd_edge::protocol::{self, v4, v5};
use plantd_edge::{Broker, Clock, Config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for something that must NOT happen.
pub const QUIET: Duration = Duration::from_millis(400);

pub struct TestBroker {
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub metrics: std::sync::Arc<plantd_edge::metrics::Metrics>,
    running: Running,
}

/// An in-process broker's task and the switch that stops it. Dropping it
/// stops the broker too, without waiting.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Runs `broker` in a task until [`Running::stop`] (or drop).
    pub fn spawn(broker: Broker) -> Self {
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(broker.run(async move {
            let _ = rx.await;
        }));
        Running {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Nothing to stop: a broker running elsewhere.
    pub fn none() -> Self {
        Running {
            stop: None,
            task: None,
        }
    }

    /// Graceful shutdown; waits until the broker has stopped.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("broker stops in time")
                .expect("broker task ends cleanly");
        }
    }
}

/// An authorizer that allows everything and records the certificate
/// identity seen on each PUBLISH.
#[derive(Default)]
pub struct SeenCertificates(pub std::sync::Mutex<Vec<Option<String>>>);

impl plantd_edge::hooks::Authorizer for SeenCertificates {
    fn can_publish(&self, client: &plantd_edge::hooks::ClientInfo, _topic: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .push(client.certificate.as_deref().map(str::to_owned));
        true
    }
    fn can_subscribe(
        &self,
        _client: &plantd_edge::hooks::ClientInfo,
        _filter: &plantd_shared::topic::Filter,
    ) -> bool {
        true
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(f: impl FnOnce(&mut Config)) -> Self {
        Self::custom(f, |b| b).await
    }

    /// Like [`with`](Self::with), and lets the test install hooks.
    pub async fn custom(f: impl FnOnce(&mut Config), g: impl FnOnce(Broker) -> Broker) -> Self {
        init_tracing();
        let mut c = Config {
            mqtt_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            // These tests are about MQTT, not tokens (tests/auth.rs is).
            allow_anonymous: true,
            ..Config::default()
        };
        f(&mut c);
        let broker = g(Broker::bind(c).await.expect("broker binds to port 0"));
        let mqtt = broker.mqtt_addr();
        let http = broker.http_addr();
        let metrics = broker.metrics();
        TestBroker {
            mqtt,
            http,
            metrics,
            running: Running::spawn(broker),
        }
    }

    /// A broker whose session expiry, will delay, message expiry and
    /// keep-alive run on a manual clock (decision 0056): they move only
    /// when the test advances the clock, so a test of a two-second expiry
    /// neither sleeps nor depends on the machine's load.
    pub async fn on_manual_clock() -> (Self, Clock) {
        let clock = Clock::manual();
        let b = Self::with(|c| c.clock = clock.clone()).await;
        (b, clock)
    }

    /// Waits (at most [`WAIT`]) until the broker of
    /// [`on_manual_clock`](Self::on_manual_clock) sleeps until `at` on
    /// `clock`: it has armed that deadline (see [`Clock::sleeper_at`]).
    pub async fn armed(clock: &Clock, at: std::time::Instant) {
        tokio::time::timeout(WAIT, clock.sleeper_at(at))
            .await
            .expect("the broker arms the deadline");
    }

    /// A handle on a broker running elsewhere (e.g. the spawned binary).
    pub fn external(mqtt: SocketAddr, http: SocketAddr) -> Self {
        TestBroker {
            mqtt,
            http,
            metrics: Default::default(),
            running: Running::none(),
        }
    }

    pub fn port(&self) -> u16 {
        self.mqtt.port()
    }

    /// Graceful shutdown; waits until the broker has stopped.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Claims of device `sub` at `site` as the identity service issues them:
/// the site's audience, MQTT `publish` and `subscribe` grants there, valid
/// from a minute ago for ten minutes, token id `jti-<sub>`. Tests change
/// fields with struct update syntax.
pub fn device_claims(
    sub: &str,
    site: &str,
    publish: &[&str],
    subscribe: &[&str],
) -> plantd_shared::claims::Claims {
    use plantd_shared::claims::{Audience, Claims, MqttGrant, PrincipalKind, site_audience};
    let now = plantd_shared::jwt::now_secs();
    let mqtt = [(
        site.to_owned(),
        MqttGrant {
            publish: publish.iter().map(|s| (*s).to_owned()).collect(),
            subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        },
    )]
    .into_iter()
    .collect();
    let site = plantd_shared::subject::Site::new(site).expect("site");
    Claims {
        iss: "test-identity".into(),
        sub: sub.into(),
        aud: Audience::One(site_audience(&site)),
        exp: now + 600,
        iat: now.saturating_sub(60),
        nbf: None,
        jti: format!("jti-{sub}"),
        org: "acme".into(),
        kind: PrincipalKind::Device,
        roles: vec!["device".into()],
        perms: vec![],
        mqtt,
    }
}

// ------------------------------------------------------- rumqttc v4 and v5
// The clients are plantd_testkit::mqtt's; these open them on a TestBroker.

pub use plantd_testkit::mqtt::{V4, V5, m5};

/// Connects a rumqttc 3.1.1 client and waits for its CONNACK.
pub async fn v4(b: &TestBroker, id: &str, f: impl FnOnce(&mut rumqttc::MqttOptions)) -> V4 {
    plantd_testkit::mqtt::v4(b.port(), id, f).await
}

/// Starts a rumqttc 3.1.1 client without waiting for anything.
pub fn v4_unchecked(b: &TestBroker, id: &str, f: impl FnOnce(&mut rumqttc::MqttOptions)) -> V4 {
    plantd_testkit::mqtt::v4_unchecked(b.port(), id, f)
}

/// Connects a rumqttc 5.0 client and returns it with its CONNACK.
pub async fn v5(
    b: &TestBroker,
    id: &str,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (V5, m5::ConnAck) {
    plantd_testkit::mqtt::v5(b.port(), id, f).await
}

/// Starts a rumqttc 5.0 client without waiting for anything.
pub fn v5_unchecked(b: &TestBroker, id: &str, f: impl FnOnce(&mut rumqttc::v5::MqttOptions)) -> V5 {
    plantd_testkit::mqtt::v5_unchecked(b.port(), id, f)
}

/// Leaves a persistent 3.1.1 session `id` (clean session off) on the
/// broker, subscribed to `filter` at QoS 1 and offline after a clean
/// DISCONNECT.
pub async fn offline_v4_session(b: &TestBroker, id: &str, filter: &str) {
    let mut s = v4(b, id, |o| {
        o.set_clean_session(false);
    })
    .await;
    s.sub(filter, rumqttc::QoS::AtLeastOnce).await;
    s.disconnect().await;
}

/// Reconnects persistent 3.1.1 session `id`, which the broker must still
/// hold, and checks that the `n` messages queued for it meanwhile (`0`,
/// `1`, …) arrive in order at QoS 1.
pub async fn resumed_v4_session(b: &TestBroker, id: &str, n: usize) -> V4 {
    let mut s = v4_unchecked(b, id, |o| {
        o.set_clean_session(false);
    });
    let ack = s.connack().await.expect("reconnect");
    assert!(ack.session_present, "the session was kept");
    for i in 0..n {
        let m = s.publish().await;
        assert_eq!(&m.payload[..], format!("{i}").as_bytes(), "queued in order");
        assert_eq!(m.qos, rumqttc::QoS::AtLeastOnce);
    }
    s
}

// ------------------------------------------------------------ raw socket

/// A socket speaking MQTT through the broker's own codec, for silence and
/// malformed input.
pub struct Raw {
    pub stream: TcpStream,
    rbuf: BytesMut,
    pub v5: bool,
}

impl Raw {
    pub async fn open(b: &TestBroker) -> Raw {
        let stream = TcpStream::connect(b.mqtt).await.expect("tcp connect");
        Raw {
            stream,
            rbuf: BytesMut::new(),
            v5: false,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send4(&mut self, p: v4::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out);
        self.write(&out).await;
    }

    pub async fn send5(&mut self, p: v5::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out);
        self.write(&out).await;
    }

    /// Next frame as (header, body), or None when the broker closed.
    pub async fn frame(&mut self) -> Option<(protocol::FixedHeader, bytes::Bytes)> {
        let fut = async {
            loop {
                if let Some(f) = protocol::split_frame(&mut self.rbuf, usize::MAX)
                    .expect("broker sends valid frames")
                {
                    return Some(f);
                }
                self.rbuf.reserve(4096);
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("broker answers or closes in time")
    }

    pub async fn recv4(&mut self) -> Option<v4::Packet> {
        let (h, b) = self.frame().await?;
        Some(v4::Packet::read(&h, b).expect("valid 3.1.1 packet from broker"))
    }

    pub async fn recv5(&mut self) -> Option<v5::Packet> {
        let (h, b) = self.frame().await?;
        Some(v5::Packet::read(&h, b).expect("valid 5.0 packet from broker"))
    }

    pub async fn connect4(
        b: &TestBroker,
        id: &str,
        clean: bool,
        keep_alive: u16,
    ) -> (Raw, v4::ConnAck) {
        let mut r = Raw::open(b).await;
        r.send4(v4::Packet::Connect(v4::Connect {
            level: 4,
            client_id: id.into(),
            clean_session: clean,
            keep_alive,
            will: None,
            username: None,
            password: None,
        }))
        .await;
        match r.recv4().await {
            Some(v4::Packet::ConnAck(a)) => (r, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn connect5(b: &TestBroker, c: v5::Connect) -> (Raw, v5::ConnAck) {
        let mut r = Raw::open(b).await;
        r.v5 = true;
        r.send5(v5::Packet::Connect(Box::new(c))).await;
        match r.recv5().await {
            Some(v5::Packet::ConnAck(a)) => (r, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Asserts that the broker neither sends anything nor closes the
    /// socket for [`QUIET`].
    pub async fn stays_open(&mut self) {
        if let Ok(f) = tokio::time::timeout(QUIET, self.frame()).await {
            panic!("expected silence, got {f:?}");
        }
    }

    /// Waits until the broker closes the socket, returning the 5.0
    /// DISCONNECT reason if one came first.
    pub async fn closed5(&mut self) -> Option<u8> {
        let mut reason = None;
        while let Some((h, b)) = self.frame().await {
            if let Ok(v5::Packet::Disconnect(d)) = v5::Packet::read(&h, b) {
                reason = Some(d.reason);
            }
        }
        reason
    }
}

pub fn v5_connect(id: &str) -> v5::Connect {
    v5::Connect {
        client_id: id.into(),
        clean_start: true,
        keep_alive: 30,
        properties: v5::Properties::default(),
        will: None,
        username: None,
        password: None,
    }
}

// ------------------------------------------------------- external clients

/// A Debian mosquitto client binary; fails (never skips) when missing.
pub fn mosquitto(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: run scripts/setup (installs Debian's mosquitto-clients)");
}

/// mosquitto_sub running with `-d`; ready once it printed its SUBACK.
pub struct MosquittoSub {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl MosquittoSub {
    pub async fn start(b: &TestBroker, version: &str, args: &[&str]) -> MosquittoSub {
        // stdbuf: mosquitto_sub's debug lines are block-buffered on a pipe,
        // and the SUBACK line is the readiness event.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(mosquitto("mosquitto_sub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &b.port().to_string(),
                "-V",
                version,
                "-d",
                "-v",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut s = MosquittoSub {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        loop {
            let line = s.line().await.expect("mosquitto_sub prints its SUBACK");
            if line.contains("SUBACK") {
                return s;
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("mosquitto_sub output in time")
            .ok()
            .flatten()
    }

    /// The next `topic payload` line (debug lines skipped).
    pub async fn message(&mut self) -> String {
        loop {
            let line = self.line().await.expect("mosquitto_sub prints a message");
            if !line.starts_with("Client ") && !line.starts_with("Subscribed (mid") {
                return line;
            }
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Runs mosquitto_pub to completion and asserts success.
pub async fn mosquitto_pub(b: &TestBroker, version: &str, args: &[&str]) {
    let out = Command::new(mosquitto("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port().to_string(),
            "-V",
            version,
        ])
        .args(args)
        .output()
        .await
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The project's Python with paho-mqtt; fails (never skips) when missing.
pub fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if !p.exists() {
        panic!(
            "{} not found: run scripts/setup (installs paho-mqtt into .venv)",
            p.display()
        );
    }
    p
}

/// Runs a Python script with `PORT` set; returns stdout, asserting success.
pub async fn paho(b: &TestBroker, script: &str) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(python())
            .arg("-c")
            .arg(script)
            .env("PORT", b.port().to_string())
            .output(),
    )
    .await
    .expect("python script finishes")
    .expect("run python");
    assert!(
        out.status.success(),
        "python script failed (is paho-mqtt installed? run scripts/setup):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// rumqttc v5 options with `token` as the password (empty user name).
pub fn token_creds5(token: &str) -> impl FnOnce(&mut rumqttc::v5::MqttOptions) {
    let token = token.to_owned();
    move |o| {
        o.set_credentials("", token);
    }
}

/// rumqttc 3.1.1 options with `token` as the password.
pub fn token_creds4(token: &str) -> impl FnOnce(&mut rumqttc::MqttOptions) {
    let token = token.to_owned();
    move |o| {
        o.set_credentials("x", token);
    }
}

/// Asserts that both protocol versions refuse `token` as not authorised
/// (v5 CONNACK 0x87, 3.1.1 return code 5).
pub async fn refused_by_both_versions(b: &TestBroker, who: &str, token: &str) {
    match v5_unchecked(b, &format!("{who}-5"), token_creds5(token))
        .connack()
        .await
    {
        Ok(a) => panic!("{who}: v5 accepted: {a:?}"),
        Err(e) => assert!(
            e.contains("ConnectionRefused(NotAuthorized)"),
            "{who}: v5 0x87: {e}"
        ),
    }
    match v4_unchecked(b, &format!("{who}-4"), token_creds4(token))
        .connack()
        .await
    {
        Ok(a) => panic!("{who}: 3.1.1 accepted: {a:?}"),
        Err(e) => assert!(e.contains("NotAuthorized"), "{who}: return code 5: {e}"),
    }
}
