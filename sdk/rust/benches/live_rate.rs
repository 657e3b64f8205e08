//! The SDKs' live subscribers against a raw WebSocket client in the same
//! language, in the same run (issue 17's speed item; figures in
//! docs/performance.md, "The Rust and TypeScript SDKs' live subscribers").
//!
//! ```text
//! PLANTD_BIN=target/debug/plantd \
//!   cargo bench -p plantd-client --bench live_rate -- --messages 50000 --rounds 3 [--samples 200] [--ts|--no-ts]
//! ```
//!
//! Starts `plantd up` (`plantd_testkit::up::Up`; `$PLANTD_BIN` picks the
//! binary), logs the administrator in and registers a sensor device.
//!
//! * **Replay rate.** The sensor stores `--messages` readings first (MQTT
//!   QoS 1, 50 in flight); a sequenced SDK subscription watching them
//!   arrive gives the first and last stored sequence. Then, per round,
//!   alternating: a raw `tokio-tungstenite` client (authenticates with the
//!   first frame, subscribes `from_sequence` = the first stored, decodes
//!   each `message` frame into a struct and counts) against the SDK
//!   (`Live::subscribe_with` a `from_sequence`, counting the `Message`s
//!   its stream yields). The proxy paces a sequenced replay to the socket,
//!   so this is as fast as each client reads: messages per second from
//!   the `subscribe` to the last message, each with its socket already
//!   open and authenticated.
//! * **Added latency.** Both clients subscribed at once to a fresh topic;
//!   the sensor publishes one reading at a time (QoS 1, acknowledged);
//!   the time from the publish to each client's receipt; the SDK's median
//!   minus the raw client's.
//!
//! Then, with `--ts` (the default when `node` runs and
//! `sdk/typescript/dist` is built), `node --experimental-websocket
//! sdk/typescript/benches/live_rate.mjs` measures the TypeScript SDK the
//! same way against Node's global `WebSocket`, given the stack in
//! `$PLANTD_BENCH` (JSON) and the stored range.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use plantd_client::identity::types::{CreateDevice, TokenRequest};
use plantd_client::{Options, Plantd, Secret, SubscribeOptions, TokenSource};
use plantd_testkit::up::Up;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

/// The site `plantd up` registers.
const SITE: &str = "local";
/// Where the stored readings go.
const REPLAY_TOPIC: &str = "bench/replay/temp";
/// How long one step may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Command-line options (after `--`).
struct Args {
    messages: u64,
    rounds: usize,
    samples: usize,
    ts: Option<bool>,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut args = Args {
            messages: 50_000,
            rounds: 3,
            samples: 200,
            ts: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .ok_or_else(|| format!("{name} needs a value"))
                    .and_then(|v| v.parse::<u64>().map_err(|e| format!("{name} {v}: {e}")))
            };
            match a.as_str() {
                "--messages" => args.messages = value("--messages")?,
                "--rounds" => args.rounds = usize::try_from(value("--rounds")?)?,
                "--samples" => args.samples = usize::try_from(value("--samples")?)?,
                "--ts" => args.ts = Some(true),
                "--no-ts" => args.ts = Some(false),
                "--bench" => {}
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        Ok(args)
    }
}

/// A `message` frame as a hand-written client would decode it: a plain
/// struct with the fields the SDK's `Message` carries.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawFrame {
    op: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    sequence: Option<u64>,
    #[serde(default)]
    time: Option<String>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw socket, authenticated with its first frame.
async fn raw_socket(url: &str, token: &str) -> Res<Socket> {
    let ws_url = format!("{}/v1/ws", url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
    ws.send(Frame::Text(
        json!({"op": "auth", "token": token}).to_string().into(),
    ))
    .await?;
    let first = raw_next(&mut ws).await?;
    if first.op != "authenticated" {
        return Err(format!("the socket answered {} to auth", first.op).into());
    }
    Ok(ws)
}

/// The next text frame, decoded.
async fn raw_next(ws: &mut Socket) -> Res<RawFrame> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return Err("no frame within the time limit".into()),
            Ok(None) => return Err("the socket ended".into()),
            Ok(Some(frame)) => {
                if let Frame::Text(text) = frame? {
                    return Ok(serde_json::from_str(text.as_str())?);
                }
            }
        }
    }
}

/// The raw client's replay rate (messages per second).
async fn raw_round(url: &str, token: &str, first: u64, count: u64) -> Res<f64> {
    let mut ws = raw_socket(url, token).await?;
    let t0 = Instant::now();
    let subscribe = json!({"op": "subscribe", "id": "raw", "site": SITE,
        "filter": REPLAY_TOPIC, "from_sequence": first});
    ws.send(Frame::Text(subscribe.to_string().into())).await?;
    // One time limit for the whole replay, not a timer per frame.
    let counted = tokio::time::timeout(WAIT, async {
        let mut got = 0;
        while got < count {
            let frame = match ws.next().await {
                None => return Err("the socket ended".into()),
                Some(frame) => frame?,
            };
            let Frame::Text(text) = frame else { continue };
            let frame: RawFrame = serde_json::from_str(text.as_str())?;
            match frame.op.as_str() {
                "message" => got += 1,
                "error" => {
                    return Err(format!("the raw subscription failed: {:?}", frame.id).into());
                }
                _ => {}
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    counted.await??;
    let rate = count as f64 / t0.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    Ok(rate)
}

/// The SDK's replay rate (messages per second), its socket already open.
async fn sdk_round(sdk: &Plantd, first: u64, count: u64) -> Res<f64> {
    let t0 = Instant::now();
    let mut sub = sdk.live().subscribe_with(
        SITE,
        REPLAY_TOPIC,
        SubscribeOptions {
            from_sequence: Some(first),
        },
    );
    // One time limit for the whole replay, not a timer per message.
    let counted = tokio::time::timeout(WAIT, async {
        let mut got = 0;
        while got < count {
            match sub.next().await {
                None => return Err("the SDK's subscription ended".into()),
                Some(m) => {
                    m?;
                    got += 1;
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    counted.await??;
    Ok(count as f64 / t0.elapsed().as_secs_f64())
}

/// The sensor over rumqttc (MQTT 3.1.1): publishes go in through
/// `client`, acknowledgements come out of `acks`.
struct Device {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    events: tokio::task::JoinHandle<()>,
}

impl Device {
    fn connect(port: u16, id: &str, token: &str) -> Device {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_credentials(id, token);
        o.set_inflight(50);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(o, 1000);
        let (tx, acks) = mpsc::unbounded_channel();
        let events = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("the sensor's connection: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Device {
            client,
            acks,
            events,
        }
    }

    /// Disconnects (the TypeScript half connects with the same identity).
    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.events.abort();
    }

    /// Publishes one reading and waits for its PUBACK.
    async fn publish1(&mut self, topic: &str, payload: String) -> Res<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        tokio::time::timeout(WAIT, self.acks.recv())
            .await?
            .ok_or("the sensor's connection ended")?;
        Ok(())
    }
}

/// Stores `count` readings on [`REPLAY_TOPIC`]: `(first, last)` stored
/// sequence, as a sequenced subscription sees them arrive.
async fn store(sdk: &Plantd, device: &mut Device, count: u64) -> Res<(u64, u64)> {
    let mut watch = sdk.live().subscribe(SITE, REPLAY_TOPIC);
    // The subscription starts at the next message stored once it is in
    // place: publish a marker until one arrives.
    let mut marker = None;
    for i in 0..60 {
        device.publish1(REPLAY_TOPIC, format!("warm-{i}")).await?;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
            marker = Some(m?.sequence);
            break;
        }
    }
    marker.ok_or("the watching subscription never received a marker")?;
    let t0 = Instant::now();
    let client = device.client.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..count {
            let payload = format!(r#"{{"n":{i},"temp":21.5,"unit":"C"}}"#);
            client
                .publish(REPLAY_TOPIC, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(())
    });
    let (mut first, mut last, mut got) = (0, 0, 0);
    while got < count {
        let m = tokio::time::timeout(WAIT, watch.next())
            .await?
            .ok_or("the watching subscription ended")??;
        if m.text().is_some_and(|t| t.starts_with("{\"n\":")) {
            if got == 0 {
                first = m.sequence;
            }
            last = m.sequence;
            got += 1;
        }
    }
    publisher.await??;
    while device.acks.try_recv().is_ok() {}
    eprintln!(
        "stored {count} readings (sequences {first}..={last}) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok((first, last))
}

/// Median publish → receipt (ms) of (raw, SDK), both subscribed at once.
async fn latency(
    url: &str,
    token: &str,
    sdk: &Plantd,
    device: &mut Device,
    samples: usize,
) -> Res<(f64, f64)> {
    let topic = "bench/latency/temp";
    let mut ws = raw_socket(url, token).await?;
    let subscribe =
        json!({"op": "subscribe", "id": "raw", "site": SITE, "filter": topic, "sequenced": true});
    ws.send(Frame::Text(subscribe.to_string().into())).await?;
    let mut sub = sdk.live().subscribe(SITE, topic);
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let (sdk_tx, mut sdk_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let raw_reader = tokio::spawn(async move {
        while let Ok(f) = raw_next(&mut ws).await {
            if f.op == "message"
                && raw_tx
                    .send((f.payload.unwrap_or_default(), Instant::now()))
                    .is_err()
            {
                return;
            }
        }
    });
    let sdk_reader = tokio::spawn(async move {
        while let Some(Ok(m)) = sub.next().await {
            let at = Instant::now();
            if sdk_tx
                .send((m.text().unwrap_or_default().to_owned(), at))
                .is_err()
            {
                return;
            }
        }
    });
    // Both subscriptions in place: warm up until each has had one.
    let (mut raw_warm, mut sdk_warm) = (false, false);
    for i in 0..100 {
        device.publish1(topic, format!("warm-{i}")).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        raw_warm |= raw_rx.try_recv().is_ok();
        sdk_warm |= sdk_rx.try_recv().is_ok();
        if raw_warm && sdk_warm {
            break;
        }
    }
    if !(raw_warm && sdk_warm) {
        return Err("the latency subscriptions never warmed up".into());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while raw_rx.try_recv().is_ok() || sdk_rx.try_recv().is_ok() {}
    let (mut raw_ms, mut sdk_ms) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let key = format!("s-{i}");
        let sent = Instant::now();
        device.publish1(topic, key.clone()).await?;
        let raw_at =
            tokio::time::timeout(Duration::from_secs(10), arrival(&mut raw_rx, &key)).await;
        let sdk_at =
            tokio::time::timeout(Duration::from_secs(10), arrival(&mut sdk_rx, &key)).await;
        if let (Ok(Some(r)), Ok(Some(s))) = (raw_at, sdk_at) {
            raw_ms.push((r - sent).as_secs_f64() * 1000.0);
            sdk_ms.push((s - sent).as_secs_f64() * 1000.0);
        }
    }
    raw_reader.abort();
    sdk_reader.abort();
    if raw_ms.is_empty() {
        return Err("no latency sample arrived at both clients".into());
    }
    Ok((median(&mut raw_ms), median(&mut sdk_ms)))
}

/// When `key` arrived (skipping earlier ones); `None` once the reader ended.
async fn arrival(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    key: &str,
) -> Option<Instant> {
    loop {
        match rx.recv().await {
            Some((k, at)) if k == key => return Some(at),
            Some(_) => {}
            None => return None,
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `sdk/typescript` (from this crate's manifest directory).
fn typescript_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../typescript")
}

/// Whether the TypeScript half can run: `node` starts and the SDK is built.
fn typescript_ready() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    node && typescript_dir().join("dist/index.js").exists()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args = Args::parse()?;
    let up = Up::start().await;
    // As the SDK's own HTTP client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let password = Secret::from(up.admin_password.as_str());
    let auth = TokenSource::login(
        &http,
        &up.url,
        &up.admin_email,
        &password,
        Duration::from_secs(30),
    )
    .await?;
    let sdk = Plantd::new(&up.url, auth.clone(), Options::default())?;

    let creds = sdk
        .rest()
        .post_devices(&CreateDevice {
            name: "bench-sensor".to_owned(),
            site: SITE.to_owned(),
            publish: Some(vec!["bench/#".to_owned()]),
            subscribe: Some(Vec::new()),
            certificate_sha256: None,
        })
        .await?;
    let token = sdk
        .rest()
        .post_auth_token(&TokenRequest {
            grant_type: "client_credentials".to_owned(),
            client_id: creds.value.client_id.clone(),
            client_secret: creds.value.client_secret.clone(),
            sites: None,
        })
        .await?;
    let sensor_id = creds.value.client_id.clone();
    let sensor_token = token.value.access_token.clone();
    let mut device = Device::connect(up.mqtt_port, &sensor_id, &sensor_token);

    println!("load before: {}", load());
    let (first, last) = store(&sdk, &mut device, args.messages).await?;
    let count = last - first + 1;
    if count != args.messages {
        return Err(format!("{count} sequences for {} readings", args.messages).into());
    }

    // Keeps the SDK's socket open across rounds.
    let _idle = sdk.live().subscribe(SITE, "bench/idle");
    println!("## Rust: replay of {count} stored messages (messages/s)");
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let token = auth.token().await?;
        let raw = raw_round(&up.url, token.expose(), first, count).await?;
        let sdk_rate = sdk_round(&sdk, first, count).await?;
        let ratio = sdk_rate / raw;
        ratios.push(ratio);
        println!(
            "round {round}: raw {raw:.0} msg/s, SDK {sdk_rate:.0} msg/s -> SDK/raw {:.0} %",
            ratio * 100.0
        );
    }
    println!(
        "median SDK/raw: {:.0} %",
        median(&mut ratios.clone()) * 100.0
    );
    let token = auth.token().await?;
    let (raw_lat, sdk_lat) =
        latency(&up.url, token.expose(), &sdk, &mut device, args.samples).await?;
    println!(
        "latency (median of {}): raw {raw_lat:.2} ms, SDK {sdk_lat:.2} ms, added {:+.2} ms",
        args.samples,
        sdk_lat - raw_lat
    );
    println!("load after Rust: {}", load());

    device.close().await;
    if args.ts.unwrap_or_else(typescript_ready) {
        let token = auth.token().await?;
        let config = json!({
            "url": up.url,
            "site": SITE,
            "mqtt": up.mqtt_port,
            "admin": {"email": up.admin_email, "password": up.admin_password},
            "token": token.expose(),
            "sensor": {"id": sensor_id, "token": sensor_token},
            "replay": {"topic": REPLAY_TOPIC, "first": first, "count": count},
            "rounds": args.rounds,
            "samples": args.samples,
        });
        println!("## TypeScript (node --experimental-websocket)");
        let status = tokio::process::Command::new("node")
            .arg("--experimental-websocket")
            .arg("benches/live_rate.mjs")
            .current_dir(typescript_dir())
            .env("PLANTD_BENCH", config.to_string())
            .status()
            .await?;
        if !status.success() {
            return Err(format!("the TypeScript bench failed: {status}").into());
        }
        println!("load after TypeScript: {}", load());
    }
    sdk.live().close();
    drop(up);
    Ok(())
}
