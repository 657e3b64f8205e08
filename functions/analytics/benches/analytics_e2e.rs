//! Analytics end to end — `PLANTD_TELEMETRY` → trigger → analytics
//! function (engine, results published and acknowledged, checkpoints
//! written) → results stored in `PLANTD_AGGREGATES` — against a raw
//! async-nats pull consumer on the same stream, in one run (issue 14's
//! speed line: target ≥ 80 % of raw).
//!
//! 1. `n` readings (1,000 machines on one site, 1 Hz each in event time,
//!    `Plantd-Received` set) are published to `PLANTD_TELEMETRY`;
//! 2. **raw**: a durable pull consumer (batches of `--batch`, 10,000 like the analytics
//!    binding, explicit ack of every message — the reference of the
//!    issue's line) reads them all; then another acknowledging only the
//!    last message of each batch (`AckPolicy::All`, as the analytics
//!    binding does since decision 0064), printed beside it;
//! 3. **plantd**: the trigger hands them to the analytics function running
//!    `SELECT avg(value), max(value), count(*) … GROUP BY topic,
//!    TUMBLE(10s)` (1,000 keys) — timed until every item is acknowledged,
//!    i.e. its results are stored and its checkpoint written. The state
//!    bucket and the results are emptied before each round. The function
//!    reads and writes on a connection of its own, as `plantd up` and
//!    `plantd functions` wire it (`--shared-connection`: on the one the
//!    trigger receives and acknowledges on, as before).
//!
//! ```sh
//! scripts/setup
//! cargo bench -p plantd-analytics-function --bench analytics_e2e -- [--n 200000] [--rounds 3] [--batch 10000] [--shared-connection]
//! ```
//!
//! `BENCH_ACK_PENDING_BATCHES=N`: the binding's `max_ack_pending` as `N`
//! batches instead of the function's own setting. `BENCH_TRIGGER_ONLY=1`:
//! the trigger with a handler that does nothing (what the trigger alone
//! costs; no results are stored).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_analytics::{Placement, Rule, Source, StoredRule};
use plantd_analytics_function::{Analytics, RuleBook, consumer_settings, results};
use plantd_shared::headers;
use plantd_shared::sites::{SiteCache, Sites};
use plantd_shared::streams;
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use plantd_testkit::load::{RawAck, Usage, raw_consume, raw_consume_with};
use plantd_trigger::{BatchOutcome, ConsumerSettings, Handler, Item, Trigger};

/// The allocator of the `plantd` binary that runs the function in `plantd up`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SITE: &str = "bench";
const KEYS: u64 = 1_000;
/// 2026-12-06T10:00:00Z.
const T0: i64 = 1_796_551_200_000;

struct Opts {
    n: u64,
    rounds: u32,
    batch: u64,
    /// The function's reads and writes on the connection the trigger
    /// receives and acknowledges on, not one of their own.
    shared_connection: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        n: 200_000,
        rounds: 3,
        batch: plantd_analytics_function::BATCH_SIZE as u64,
        shared_connection: false,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        if args[i] == "--shared-connection" {
            o.shared_connection = true;
            i += 1;
            continue;
        }
        match (args[i].as_str(), value) {
            ("--n", Some(v)) => o.n = v,
            ("--rounds", Some(v)) => o.rounds = v as u32,
            ("--batch", Some(v)) => o.batch = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

async fn publish(js: &jetstream::Context, n: u64) {
    let mut pending = Vec::with_capacity(4096);
    for i in 0..n {
        let key = i % KEYS;
        let at = T0 + (i / KEYS) as i64 * 1_000 + key as i64;
        let mut h = HeaderMap::new();
        h.insert(headers::RECEIVED, headers::format_time(at as u64).as_str());
        let subject = format!("plantd.{SITE}.up.line{}.m{key}.temp", key % 10);
        let body = format!("{}.{}", 20 + i % 17, i % 10);
        pending.push(
            js.publish_with_headers(subject, h, body.into())
                .await
                .expect("publish"),
        );
        if pending.len() == 4096 {
            for ack in pending.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in pending.drain(..) {
        ack.await.expect("stored");
    }
}

/// Counts the items the function finished and the time it spent.
struct Counting {
    inner: Analytics,
    handled: Arc<AtomicU64>,
    busy_us: Arc<AtomicU64>,
    /// Time between the end of one batch and the start of the next (the
    /// trigger waiting for deliveries), and how many batches.
    between: Arc<std::sync::Mutex<Between>>,
}

/// See [`Counting::between`].
#[derive(Default)]
struct Between {
    last_end: Option<Instant>,
    waited: Duration,
    batches: u32,
}

impl Handler for Counting {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let started = Instant::now();
        if let Ok(mut b) = self.between.lock() {
            if let Some(end) = b.last_end {
                b.waited += started.duration_since(end);
            }
            b.batches += 1;
        }
        let outcome = if std::env::var_os("BENCH_TRIGGER_ONLY").is_some() {
            BatchOutcome::success()
        } else {
            self.inner.handle(batch).await
        };
        if let Ok(mut b) = self.between.lock() {
            b.last_end = Some(Instant::now());
        }
        self.busy_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        let failed = outcome.failures().count() as u64;
        self.handled.fetch_add(batch.len() as u64 - failed, Relaxed);
        outcome
    }
}

/// The trigger with the analytics function until it finished `n` items.
/// `js` receives and acknowledges (the trigger); `fjs` is the function's.
async fn plantd(
    js: &jetstream::Context,
    fjs: &jetstream::Context,
    function: &str,
    n: u64,
    batch: u64,
) -> (Duration, usize) {
    // Every round from nothing: no checkpoints, and a new results stream
    // (a purge would keep the de-duplication window's ids).
    js.get_stream(format!("KV_{}", streams::ANALYTICS_STATE_BUCKET))
        .await
        .expect("state bucket")
        .purge()
        .await
        .expect("purge");
    js.delete_stream(streams::AGGREGATES)
        .await
        .expect("delete the results");
    streams::ensure(js, &streams::Settings::default())
        .await
        .expect("streams");
    let (book, watch) = RuleBook::open(fjs).await.expect("rules");
    let state = fjs
        .get_key_value(streams::ANALYTICS_STATE_BUCKET)
        .await
        .expect("state bucket");
    let sites = SiteCache::new(
        Sites::open(fjs).await.expect("sites"),
        Duration::from_secs(60),
    );
    let before = Usage::now();
    let handled = Arc::new(AtomicU64::new(0));
    let busy_us = Arc::new(AtomicU64::new(0));
    let between = Arc::new(std::sync::Mutex::new(Between::default()));
    let start = Instant::now();
    let analytics = Analytics::new(
        fjs.clone(),
        state,
        book,
        sites,
        plantd_trigger::durable_name(function, streams::TELEMETRY).expect("name"),
    );
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            function,
            streams::TELEMETRY,
            Arc::new(Counting {
                inner: analytics.clone(),
                handled: handled.clone(),
                busy_us: busy_us.clone(),
                between: between.clone(),
            }),
            settings(batch),
        )
        .await
        .expect("bind");
    while handled.load(Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    // Before the results are read back: that read is not the function's.
    before.print("analytics", n, "reading");
    let (waited, batches) = between
        .lock()
        .map(|b| (b.waited, b.batches))
        .unwrap_or_default();
    let m = analytics.metrics();
    println!(
        "    (the function's handler busy {:.2?} in {batches} batches; the trigger waited {waited:.2?} between them; results in {} fast-ingest batches, {} fell back)",
        Duration::from_micros(busy_us.load(Relaxed)),
        m.fast_batches.load(Relaxed),
        m.fast_fallbacks.load(Relaxed),
    );
    trigger.shutdown().await;
    watch.abort();
    let stored = results::read(js, &format!("plantd.{SITE}.agg.>"))
        .await
        .expect("results")
        .len();
    (took, stored)
}

/// The analytics binding's settings, with batches of `batch` items.
fn settings(batch: u64) -> ConsumerSettings {
    let mut s = consumer_settings(&ConsumerSettings::default());
    s.batch_size = batch as usize;
    // The binding's window in batches (`consumer_settings`), whatever the
    // batch size.
    s.max_ack_pending =
        s.max_ack_pending / plantd_analytics_function::BATCH_SIZE as i64 * batch as i64;
    if let Some(n) = std::env::var("BENCH_ACK_PENDING_BATCHES")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        s.max_ack_pending = n * batch as i64;
    }
    s
}

#[tokio::main]
async fn main() {
    let o = opts();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(SITE).expect("site"), "acme", "")
        .await
        .expect("register");
    let rule = Rule::from_sql(
        "temp_10s",
        r#"SELECT avg(value), max(value), count(*) FROM "+/+/temp" GROUP BY topic, TUMBLE(10s)"#,
    )
    .expect("rule");
    let stored = StoredRule {
        org: "acme".into(),
        sites: Vec::new(),
        at: Placement::Cloud,
        enabled: true,
        source: Source::Json,
        rule,
        updated_by: "bench".into(),
        updated_at: String::new(),
    };
    js.get_key_value(streams::ANALYTICS_RULES_BUCKET)
        .await
        .expect("bucket")
        .put(
            stored.key(),
            serde_json::to_vec(&stored).expect("json").into(),
        )
        .await
        .expect("rule");
    let t = Instant::now();
    publish(&js, o.n).await;
    println!(
        "published {} readings ({} keys) in {:.2?} ({:.0}/s)",
        o.n,
        KEYS,
        t.elapsed(),
        o.n as f64 / t.elapsed().as_secs_f64()
    );
    let fjs = if o.shared_connection {
        js.clone()
    } else {
        nats.jetstream().await
    };
    let mut ratios = Vec::new();
    for r in 1..=o.rounds {
        let before = Usage::now();
        let raw_took = {
            let settings = settings(o.batch);
            raw_consume(
                &js,
                streams::TELEMETRY,
                &format!("raw{r}"),
                settings.max_ack_pending,
                settings.batch_size,
                o.n,
            )
            .await
        };
        before.print("raw", o.n, "reading");
        let raw_rate = o.n as f64 / raw_took.as_secs_f64();
        let cumulative_took = {
            let settings = settings(o.batch);
            let before = Usage::now();
            let took = raw_consume_with(
                &js,
                streams::TELEMETRY,
                &format!("raw-all{r}"),
                settings.max_ack_pending,
                settings.batch_size,
                o.n,
                RawAck::PerBatch,
            )
            .await;
            before.print("raw, one ack per batch", o.n, "reading");
            took
        };
        let cumulative_rate = o.n as f64 / cumulative_took.as_secs_f64();
        let (took, results) = plantd(&js, &fjs, &format!("analytics-r{r}"), o.n, o.batch).await;
        let rate = o.n as f64 / took.as_secs_f64();
        let ratio = rate / raw_rate;
        ratios.push(ratio);
        println!(
            "round {r}: raw {raw_rate:.0}/s ({raw_took:.2?}); analytics {rate:.0}/s ({took:.2?}, {results} results stored) = {:.0} % of raw (raw with one ack per batch: {cumulative_rate:.0}/s, analytics {:.0} % of it)",
            ratio * 100.0,
            rate / cumulative_rate * 100.0
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median: analytics end to end at {:.0} % of the raw consume rate (target >= 80 %)",
        ratios[ratios.len() / 2] * 100.0
    );
}
