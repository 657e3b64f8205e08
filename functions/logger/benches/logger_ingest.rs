//! Log ingest through the trigger and the logger against a raw async-nats
//! pull consumer on the same stream, in one run (issue 13's speed line:
//! target ≥ 80 % of raw).
//!
//! 1. `n` log lines of 200 bytes (JSON, logfmt and text, 4 sites × 8
//!    sources) are published to `PLANTD_LOGS` (file storage);
//! 2. **raw**: a durable pull consumer (batches of 1000 like the logger's
//!    binding, explicit ack of every message, like the trigger) reads them
//!    all;
//! 3. **plantd**, as `plantd up` runs it: the trigger hands them to the
//!    logger (parse, per-minute aggregates written exactly once with one CAS
//!    per key per batch — the bucket emptied first, so every round writes),
//!    which feeds the log index the records it parsed; the index's follower
//!    runs too (it hydrates and fills gaps) — timed until both the logger
//!    and the index have every line.
//!
//! ```sh
//! scripts/setup
//! cargo bench -p plantd-logger --bench logger_ingest -- [--n 200000] [--rounds 3]
//! ```
//!
//! `BENCH_NO_AGGREGATES=1`: the logger parses only. `BENCH_FOLLOWER_ONLY=1`:
//! the logger does not feed the index, its follower reads and parses every
//! line itself (how it was before decision 0019's addendum).
//! `BENCH_NO_INDEX=1`: no index at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use plantd_logger::{AggregateSettings, Aggregates, IndexSettings, LogIndex, Logger, follow};
use plantd_shared::streams;
use plantd_testkit::Nats;
use plantd_testkit::load::{Usage, raw_consume};
use plantd_trigger::{BatchOutcome, Handler, Item, Trigger};

/// The allocator of the `plantd` binary that runs the logger in `plantd up`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Opts {
    n: u64,
    rounds: u32,
}

fn opts() -> Opts {
    let mut o = Opts {
        n: 200_000,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--n", Some(v)) => o.n = v,
            ("--rounds", Some(v)) => o.rounds = v as u32,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A 200-byte line of one of the three formats.
fn line(i: u64) -> String {
    let mut l = match i % 3 {
        0 => format!(
            r#"{{"level":"info","msg":"cycle {i} done","temp":{},"unit":"C","line":"l{}"}}"#,
            60 + i % 40,
            i % 8
        ),
        1 => format!(
            r#"level=warn msg="valve {} slow" latency_ms={} zone=north"#,
            i % 16,
            i % 1000
        ),
        _ => format!(
            "ERROR pump {} tripped at {}C after {} cycles",
            i % 8,
            80 + i % 20,
            i
        ),
    };
    let pad = 200usize.saturating_sub(l.len());
    if i.is_multiple_of(3) {
        // Inside the JSON object.
        l.truncate(l.len() - 1);
        l.push_str(&format!(
            r#","pad":"{}"}}"#,
            "x".repeat(pad.saturating_sub(10))
        ));
    } else {
        l.push(' ');
        l.push_str(&"x".repeat(pad.saturating_sub(1)));
    }
    l
}

async fn publish(js: &jetstream::Context, n: u64) {
    let mut pending = Vec::with_capacity(4096);
    for i in 0..n {
        let subject = format!("plantd.site{}.log.line{}.src{}", i % 4, i % 8, i % 2);
        pending.push(js.publish(subject, line(i).into()).await.expect("publish"));
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

/// Counts the items the logger handled and the time it spent on them.
struct Counting {
    inner: Logger,
    handled: Arc<AtomicU64>,
    busy_us: Arc<AtomicU64>,
}

impl Handler for Counting {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let started = Instant::now();
        let outcome = self.inner.handle(batch).await;
        self.busy_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        let failed = outcome.failures().count() as u64;
        self.handled.fetch_add(batch.len() as u64 - failed, Relaxed);
        outcome
    }
}

/// The trigger with the logger (aggregates) and the index following the
/// stream, until both have `n` lines.
async fn plantd(js: &jetstream::Context, function: &str, n: u64) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    let busy_us = Arc::new(AtomicU64::new(0));
    // Every round counts every line again: an earlier round's aggregates
    // already hold these sequences and would make the writes no-ops.
    js.get_stream(format!("KV_{}", streams::LOG_AGGREGATES_BUCKET))
        .await
        .expect("aggregates bucket")
        .purge()
        .await
        .expect("purge");
    let aggregates = Aggregates::open(js, AggregateSettings::default())
        .await
        .expect("bucket");
    let index = Arc::new(LogIndex::new(IndexSettings {
        max_lines: n as usize + 1,
        max_bytes: usize::MAX,
        retention: Duration::from_secs(3600),
    }));
    let start = Instant::now();
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            function,
            streams::LOGS,
            Arc::new(Counting {
                inner: {
                    let logger = if std::env::var_os("BENCH_NO_AGGREGATES").is_some() {
                        Logger::new(0)
                    } else {
                        Logger::new(0).with_aggregates(aggregates)
                    };
                    // As in `plantd up`: the logger feeds the index it
                    // parsed the lines for; the follower hydrates and
                    // fills gaps.
                    if std::env::var_os("BENCH_FOLLOWER_ONLY").is_some() {
                        logger
                    } else {
                        logger.with_index(index.clone())
                    }
                },
                handled: handled.clone(),
                busy_us: busy_us.clone(),
            }),
            plantd_logger::consumer_settings(),
        )
        .await
        .expect("bind");
    let no_index = std::env::var_os("BENCH_NO_INDEX").is_some();
    let follower = follow(index.clone(), js.clone());
    if no_index {
        follower.abort();
    }
    let (mut logger_done, mut index_done) = (None, None);
    while logger_done.is_none() || index_done.is_none() {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if logger_done.is_none() && handled.load(Relaxed) >= n {
            logger_done = Some(start.elapsed());
        }
        if index_done.is_none() && (no_index || index.len() as u64 >= n) {
            index_done = Some(start.elapsed());
        }
    }
    let took = start.elapsed();
    println!(
        "    (trigger+logger done in {:.2?}, index in {:.2?}; the logger's handler busy {:.2?}; {} lines fed to the index by the logger)",
        logger_done.unwrap_or_default(),
        index_done.unwrap_or_default(),
        Duration::from_micros(busy_us.load(Relaxed)),
        index.stats().fed
    );
    follower.abort();
    trigger.shutdown().await;
    took
}

#[tokio::main]
async fn main() {
    let o = opts();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let t = Instant::now();
    publish(&js, o.n).await;
    println!(
        "published {} lines of 200 bytes in {:.2?} ({:.0}/s)",
        o.n,
        t.elapsed(),
        o.n as f64 / t.elapsed().as_secs_f64()
    );
    let rate = |d: Duration| o.n as f64 / d.as_secs_f64();
    let (mut raws, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let before = Usage::now();
        let r = raw_consume(
            &js,
            streams::LOGS,
            &format!("raw_{round}"),
            plantd_logger::consumer_settings().max_ack_pending,
            plantd_logger::handler::BATCH_SIZE,
            o.n,
        )
        .await;
        before.print("raw", o.n, "line");
        let before = Usage::now();
        let p = plantd(&js, &format!("logger{round}"), o.n).await;
        before.print("trigger+logger+index", o.n, "line");
        println!(
            "round {round}: raw {:>9.0} lines/s ({:.2?})   trigger+logger+index {:>9.0} lines/s ({:.2?})   {:.0} %",
            rate(r),
            r,
            rate(p),
            p,
            100.0 * r.as_secs_f64() / p.as_secs_f64()
        );
        raws.push(rate(r));
        ours.push(rate(p));
        ratios.push(100.0 * r.as_secs_f64() / p.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, p) = (median(&mut raws), median(&mut ours));
    println!(
        "median: raw {r:.0} lines/s, trigger+logger+index {p:.0} lines/s = {:.0} % of raw (target ≥ 80 %); median of the rounds' own ratios {:.0} %",
        100.0 * p / r,
        median(&mut ratios)
    );
}
