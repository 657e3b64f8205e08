//! The analytics engine alone, on one core: events per second for a
//! tumbling average over 1,000 keys (numbers as text, the sensors' usual
//! payload) and over JSON payloads, the memory one key costs, and 100,000
//! keys held at once. Run: `cargo bench -p plantd-analytics`
//! (figures in docs/performance.md, "Analytics engine").
//!
//! Knobs: `PLANTD_BENCH_EVENTS` (default 5,000,000).

use std::hint::black_box;
use std::time::Instant;

use plantd_analytics::{Engine, Event, Output, Rule};

fn rule(sql: &str) -> Engine {
    let rule = Rule::from_sql("bench", sql).expect("rule");
    Engine::new(vec![rule]).expect("engine")
}

/// Resident memory of this process in KiB (Linux), for memory per key.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Feeds `n` events round-robin over `keys` topics, one every 0.1 ms of
/// event time; returns (events/s, results emitted).
fn run(
    engine: &mut Engine,
    topics: &[String],
    payloads: &[Vec<u8>],
    n: usize,
    seq0: u64,
) -> (f64, usize) {
    let mut out: Vec<Output> = Vec::with_capacity(topics.len());
    let mut emitted = 0;
    let start = Instant::now();
    for i in 0..n {
        let event = Event {
            topic: &topics[i % topics.len()],
            payload: &payloads[i % payloads.len()],
            received_at: (seq0 as i64 + i as i64) / 10,
            stream_seq: seq0 + i as u64 + 1,
        };
        engine.process_into(black_box(&event), &mut out);
        emitted += out.len();
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    (n as f64 / secs, emitted)
}

fn main() {
    let n: usize = std::env::var("PLANTD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let numbers: Vec<Vec<u8>> = (0..97)
        .map(|i| format!("{}.{}", 20 + i % 7, i).into_bytes())
        .collect();
    let json: Vec<Vec<u8>> = (0..97)
        .map(|i| format!(r#"{{"temp": {}.{}, "unit": "C"}}"#, 20 + i % 7, i).into_bytes())
        .collect();

    // 1. Tumbling avg over 1,000 keys, numbers as text.
    let topics: Vec<String> = (0..1_000).map(|k| format!("line1/m{k}/temp")).collect();
    let mut engine = rule(r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#);
    run(&mut engine, &topics, &numbers, n / 10, 0); // warm up
    let (rate, emitted) = run(&mut engine, &topics, &numbers, n, n as u64);
    println!(
        "tumbling avg, 1,000 keys, number payloads: {rate:>12.0} events/s ({emitted} results)"
    );

    // 2. The same over JSON payloads (a field path: the payload is parsed).
    let mut engine =
        rule(r#"SELECT avg(payload.temp) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#);
    let (rate, _) = run(&mut engine, &topics, &json, n / 5, 0);
    println!("tumbling avg, 1,000 keys, JSON payloads:   {rate:>12.0} events/s");

    // 3. Several aggregates at once (avg, min, max, stddev, p95, distinct).
    let mut engine = rule(
        r#"SELECT avg(value), min(value), max(value), stddev(value), percentile(value, 0.95), count(DISTINCT value)
           FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#,
    );
    let (rate, _) = run(&mut engine, &topics, &numbers, n / 5, 0);
    println!("6 aggregates incl. p95 + distinct, 1,000 keys: {rate:>8.0} events/s");

    // 4. 100,000 keys held: memory per key, and the rate at that size.
    let before = rss_kib();
    let topics: Vec<String> = (0..100_000).map(|k| format!("line1/m{k}/temp")).collect();
    let topics_kib = rss_kib();
    let mut engine = rule(r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1h)"#);
    let (rate, _) = run(&mut engine, &topics, &numbers, topics.len(), 0);
    let after = rss_kib();
    let keys = engine.keys("bench");
    println!("100,000 keys: first event per key {rate:>12.0} events/s; keys held: {keys}");
    let (rate, _) = run(&mut engine, &topics, &numbers, n, topics.len() as u64);
    println!("tumbling avg, 100,000 keys held:           {rate:>12.0} events/s");
    if let (Some(b), Some(t), Some(a)) = (before, topics_kib, after) {
        let _ = b;
        let per_key = (a.saturating_sub(t) * 1024) as f64 / keys as f64;
        println!("memory per key (RSS, one open window, avg): {per_key:>8.0} bytes");
    }
    let state = serde_json::to_vec(&engine.checkpoint()).expect("checkpoint");
    println!(
        "checkpoint (JSON), 100,000 keys: {} bytes, {:.0} bytes per key",
        state.len(),
        state.len() as f64 / keys as f64
    );
}
