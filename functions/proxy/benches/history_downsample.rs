//! Downsampled telemetry for charts (issue 14's speed line: 1,000,000
//! readings into 1,000 buckets, p99 < 100 ms).
//!
//! * `downsample`: the fold alone — 1,000,000 payloads (`"21.5"`-style
//!   text) parsed to numbers and folded into 1,000 min/max/avg buckets, and
//!   into LTTB; in memory, no NATS.
//! * `stream read`: the proxy's read of the same 1,000,000 messages from
//!   `PLANTD_TELEMETRY` (file storage) with the ordered consumer it uses,
//!   folding nothing — what every request pays before downsampling.
//! * `route`: `GET /v1/sites/{site}/series?…&buckets=1000` over HTTP
//!   (`axum::serve` on loopback, reqwest with keep-alive), one request at
//!   a time, `agg=minmaxavg` and `agg=lttb`. The first request of the
//!   topic (`first`: its readings read from the stream into the proxy's
//!   columns) is reported apart from the rest (the columns brought up to
//!   date, then folded).
//!
//! ```sh
//! scripts/setup   # nats-server in .venv
//! cargo bench -p plantd-proxy --bench history_downsample -- [--points 1000000] [--runs 20]
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use plantd_proxy::downsample::{Buckets, Grid, Lttb};
use plantd_proxy::{AppState, Settings, app, reading};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::streams::{self, TELEMETRY};
use plantd_testkit::Nats;

const SITE: &str = "plant-1";
const SUBJECT: &str = "plantd.plant-1.up.line1.temp";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<28} n={:<4} p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
        h.max() as f64 / 1e6,
    );
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).context("histogram")
}

fn payload(i: u64) -> String {
    format!("{:.1}", 20.0 + ((i * 7919) % 1000) as f64 / 100.0)
}

/// The fold alone over `points` payloads: parse, bucket or LTTB.
fn bench_fold(points: u64, runs: u64) -> Result<()> {
    let payloads: Vec<(u64, bytes::Bytes)> = (0..points)
        .map(|i| (1_700_000_000_000 + i, bytes::Bytes::from(payload(i))))
        .collect();
    let grid = Grid::new(1_700_000_000_000, 1_700_000_000_000 + points - 1, 1000);
    let mut mma = histogram()?;
    let mut lttb = histogram()?;
    for _ in 0..runs {
        let start = Instant::now();
        let mut b = Buckets::new(grid);
        for (t, p) in &payloads {
            if let Some(v) = reading::number(p, None) {
                b.push(*t, v);
            }
        }
        let out = b.finish();
        mma.record(start.elapsed().as_nanos() as u64)?;
        assert_eq!(out.len(), 1000);
        let start = Instant::now();
        let mut l = Lttb::new(grid);
        for (t, p) in &payloads {
            if let Some(v) = reading::number(p, None) {
                l.push(*t, v);
            }
        }
        let out = l.finish();
        lttb.record(start.elapsed().as_nanos() as u64)?;
        assert_eq!(out.len(), 1002);
    }
    report("downsample minmaxavg", &mma);
    report("downsample lttb", &lttb);
    Ok(())
}

/// Stores `points` readings on [`SUBJECT`] (core publishes in batches,
/// then waits for the stream to hold them all).
async fn fill(nats: &Nats, points: u64) -> Result<()> {
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let start = Instant::now();
    let mut stored = 0;
    for i in 0..points {
        client.publish(SUBJECT, payload(i).into()).await?;
        if i % 50_000 == 49_999 {
            client.flush().await?;
            // Let the stream catch up so nothing is dropped for backlog.
            loop {
                stored = js
                    .get_stream(TELEMETRY)
                    .await?
                    .get_info()
                    .await?
                    .state
                    .messages;
                if stored + 10_000 >= i {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    client.flush().await?;
    while stored < points {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = js
            .get_stream(TELEMETRY)
            .await?
            .get_info()
            .await?
            .state
            .messages;
    }
    println!(
        "stored {stored} readings in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn token(key: &SigningKey) -> Result<String> {
    let now = now_secs();
    let claims = Claims {
        iss: "plantd-identity".into(),
        sub: "bench".into(),
        aud: Audience::One(API_AUDIENCE.into()),
        exp: now + 3600,
        iat: now,
        nbf: None,
        jti: "bench".into(),
        org: "acme".into(),
        kind: PrincipalKind::User,
        roles: Vec::new(),
        perms: vec![format!("telemetry:{SITE}:read")],
        mqtt: Default::default(),
    };
    Ok(key.sign(&claims)?)
}

async fn bench_route(points: u64, runs: u64) -> Result<()> {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &streams::Settings::default()).await?;
    let key = SigningKey::generate_ed25519("bench")?;
    let state = AppState::new(
        nats.client().await,
        jwks_of([&key])?,
        Settings::default(),
        std::sync::Arc::new(plantd_alerts::notify::ChannelKeys::generate()),
    )
    .await?;
    state
        .sites
        .register(&plantd_shared::subject::Site::new(SITE)?, "acme", SITE)
        .await?;
    fill(&nats, points).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let token = token(&key)?;

    // The read alone: the same ordered consumer, nothing folded.
    let stream = js.get_stream(TELEMETRY).await?;
    let mut read = histogram()?;
    for _ in 0..runs.min(10) {
        let start = Instant::now();
        let n = plantd_proxy::scan::scan(
            &state.client,
            &stream,
            async_nats::jetstream::consumer::push::OrderedConfig {
                filter_subject: SUBJECT.into(),
                ..Default::default()
            },
            1,
            |_| (false, true),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        read.record(start.elapsed().as_nanos() as u64)?;
        assert!(n.is_empty());
    }
    report("stream read (no fold)", &read);

    for agg in ["minmaxavg", "lttb"] {
        let url =
            format!("http://{addr}/v1/sites/{SITE}/series?topic=line1/temp&buckets=1000&agg={agg}");
        let mut h = histogram()?;
        let mut first = histogram()?;
        let mut last = serde_json::Value::Null;
        for run in 0..=runs {
            let start = Instant::now();
            let resp = http.get(&url).bearer_auth(&token).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            // The first request of a topic reads it from the stream; the
            // rest fold the proxy's columns after reading what is new.
            let took = start.elapsed().as_nanos() as u64;
            if run == 0 {
                first.record(took)?
            } else {
                h.record(took)?
            }
            anyhow::ensure!(
                status.is_success(),
                "{status}: {}",
                String::from_utf8_lossy(&body)
            );
            last = serde_json::from_slice(&body)?;
        }
        anyhow::ensure!(last["read"] == points, "read {}", last["read"]);
        report(&format!("route agg={agg} first"), &first);
        report(&format!("route agg={agg}"), &h);
    }
    Ok(())
}

fn main() -> Result<()> {
    let points = arg("--points", 1_000_000);
    let runs = arg("--runs", 20);
    bench_fold(points, runs)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench_route(points, runs))
}
