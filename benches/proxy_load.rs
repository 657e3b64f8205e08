//! Proxy and identity through the local HTTP server, with real parts: a
//! real nats-server (from `.venv`), the identity and proxy functions
//! in-process behind `axum::serve` on loopback (as `plantd up` runs them),
//! and clients over TCP (reqwest with keep-alive; tokio-tungstenite).
//!
//! * `state get`: p50/p99 of `GET /v1/state/{scope}/{key}` (one small JSON
//!   value), one request at a time.
//! * `last value`: p50/p99 of `GET /v1/sites/{site}/last?topic=…`, one at a
//!   time (a direct get of the last message on the subject in
//!   `PLANTD_TELEMETRY`).
//! * `login`: p50/p99 of `POST /v1/auth/login` (argon2 verification
//!   dominates), one at a time.
//! * `fan-out`: 100 WebSocket subscribers on the same filter; messages are
//!   published on NATS as the edge does (`plantd.<site>.up.…`) in rounds
//!   of `PLANTD_BENCH_ROUND` (default 100), each round published once every
//!   subscriber received the previous one (no loss, no slow-consumer
//!   closes); the figure is messages delivered to clients per second.
//!
//! ```sh
//! scripts/setup
//! cargo bench -p plantd-e2e --bench proxy_load
//! ```
//!
//! `PLANTD_BENCH_N` (default 5000) sets the HTTP request count per read
//! benchmark, `PLANTD_BENCH_LOGINS` (default 200) the logins,
//! `PLANTD_BENCH_FANOUT_MSGS` (default 2000) the messages per subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use plantd_e2e::{ADMIN, ADMIN_PASSWORD, Options, SITE, Stack};
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

fn env_n(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<12} n={:<6} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}

/// Times `n` sequential GETs of `path` (after `n / 10` untimed ones).
async fn time_gets(stack: &Stack, token: &str, path: &str, n: u64) -> Result<Histogram<u64>> {
    let url = format!("{}{path}", stack.url());
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for i in 0..(n + n / 10) {
        let started = Instant::now();
        let resp = stack.client.get(&url).bearer_auth(token).send().await?;
        let status = resp.status();
        let _ = resp.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        if i >= n / 10 {
            h.record(took.as_nanos() as u64)?;
        }
    }
    Ok(h)
}

async fn fan_out(stack: &Stack, token: &str, subscribers: usize, msgs: u64) -> Result<()> {
    let round = env_n("PLANTD_BENCH_ROUND", 100);
    let delivered = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut req = stack.ws_url().into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        ws.send(Message::Text(
            json!({"op": "subscribe", "id": format!("s{i}"), "site": SITE, "filter": "line1/#"})
                .to_string()
                .into(),
        ))
        .await?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("subscribed") => {}
            other => bail!("subscriber {i}: {other:?}"),
        }
        let delivered = delivered.clone();
        let notify = notify.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < msgs {
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => {
                        got += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                        notify.notify_waiters();
                    }
                    Some(Ok(_)) => {}
                    other => return Err(format!("subscriber ended after {got}: {other:?}")),
                }
            }
            Ok(())
        }));
    }
    let publisher = stack.nats.client().await;
    let payload = bytes_of(64);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < msgs {
        let batch = round.min(msgs - sent);
        for _ in 0..batch {
            publisher
                .publish("plantd.plant-1.up.line1.temp", payload.clone().into())
                .await?;
        }
        publisher.flush().await?;
        sent += batch;
        let target = sent * subscribers as u64;
        loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if delivered.load(Ordering::Relaxed) >= target {
                break;
            }
            tokio::time::timeout(Duration::from_secs(30), woken)
                .await
                .context("subscribers stalled")?;
        }
    }
    let took = started.elapsed();
    for t in tasks {
        t.await?.map_err(anyhow::Error::msg)?;
    }
    let total = delivered.load(Ordering::Relaxed);
    println!(
        "fan-out      {subscribers} subscribers x {msgs} msgs (64 B, rounds of {round}): {total} deliveries in {:.2} s = {:.0} msg/s delivered ({:.0} msg/s published)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        msgs as f64 / took.as_secs_f64()
    );
    Ok(())
}

fn bytes_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "proxy_load: load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let n = env_n("PLANTD_BENCH_N", 5000);
    let logins = env_n("PLANTD_BENCH_LOGINS", 200);
    let fanout_msgs = env_n("PLANTD_BENCH_FANOUT_MSGS", 2000);

    let stack = Stack::start(Options::default()).await?;
    let token = stack.login(&[SITE]).await?;

    // A scope with one small JSON value.
    let (status, v) = stack
        .call(
            reqwest::Method::POST,
            "/v1/state/scopes",
            Some(&token),
            Some(&json!({"scope": "bench"})),
        )
        .await?;
    if status != 201 {
        bail!("create scope: {status} {v}");
    }
    let resp = stack
        .client
        .put(format!("{}/v1/state/bench/speed", stack.url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"rpm": 1450, "ok": true}"#)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("put: {}", resp.status());
    }
    // One telemetry message, stored as the edge's uplink stores it.
    let js = stack.nats.jetstream().await;
    let mut h = async_nats::HeaderMap::new();
    h.insert(plantd_shared::headers::QOS, "1");
    h.insert(plantd_shared::headers::TOPIC, "line1/temp");
    js.publish_with_headers("plantd.plant-1.up.line1.temp", h, "21.5".into())
        .await?
        .await?;

    let state = time_gets(&stack, &token, "/v1/state/bench/speed", n).await?;
    report("state get", &state);
    let last = time_gets(
        &stack,
        &token,
        &format!("/v1/sites/{SITE}/last?topic=line1/temp"),
        n,
    )
    .await?;
    report("last value", &last);

    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let body = json!({"email": ADMIN, "password": ADMIN_PASSWORD, "sites": [SITE]});
    let url = format!("{}/v1/auth/login", stack.url());
    for _ in 0..logins {
        let started = Instant::now();
        let resp = stack.client.post(&url).json(&body).send().await?;
        let status = resp.status();
        let _ = resp.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("login: {status}");
        }
        h.record(took.as_nanos() as u64)?;
    }
    report("login", &h);

    fan_out(&stack, &token, 100, fanout_msgs).await?;
    stack.stop().await;
    Ok(())
}
