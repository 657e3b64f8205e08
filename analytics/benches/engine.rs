//! The analytics engine alone, on one core: events per second for a
//! tumbling average over 1,000 keys (numbers as text, the sensors' usual
//! payload) and over JSON payloads, a pattern (threshold held) and a
//! detector (EWMA z-score) over 1,000 keys, the memory one key costs, and
//! 100,000 keys held at once. Run: `cargo bench -p plantd-analytics`
//! (figures in docs/performance.md, "Analytics engine").
//!
//! The pattern's and the detector's 100,000 keys are measured each in a
//! child process of this bench (`--held <case>`), so memory one case freed
//! does not hide the next one's growth.
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

/// The pattern and detector cases: (name, SQL).
const SIGNALS: [(&str, &str); 2] = [
    (
        "threshold",
        r#"SELECT threshold(value > 20, 5s) FROM "line1/+/temp" GROUP BY topic"#,
    ),
    (
        "zscore",
        r#"SELECT zscore(value, 0.1, 2) FROM "line1/+/temp" GROUP BY topic"#,
    ),
];

/// In a child process: 100,000 keys of one pattern or detector held, the
/// memory per key, the rate at that size.
fn held(case: &str, numbers: &[Vec<u8>], n: usize) {
    let Some((_, sql)) = SIGNALS.iter().find(|(name, _)| *name == case) else {
        eprintln!("unknown case {case:?}");
        std::process::exit(2);
    };
    let topics: Vec<String> = (0..100_000).map(|k| format!("line1/m{k}/temp")).collect();
    let before = rss_kib();
    let mut engine = rule(sql);
    // Two readings per key: its state is made and in use.
    let (first, _) = run(&mut engine, &topics, numbers, 2 * topics.len(), 0);
    let after = rss_kib();
    let keys = engine.keys("bench");
    let (rate, emitted) = run(&mut engine, &topics, numbers, n, 2 * topics.len() as u64);
    println!(
        "{case}, 100,000 keys held ({keys}): {rate:>12.0} events/s ({emitted} signals); first readings {first:.0} events/s"
    );
    if let (Some(b), Some(a)) = (before, after) {
        let per_key = (a.saturating_sub(b) * 1024) as f64 / keys as f64;
        println!("{case}: memory per key (RSS): {per_key:>8.0} bytes");
    }
    let state = serde_json::to_vec(&engine.checkpoint()).expect("checkpoint");
    println!(
        "{case}: checkpoint (JSON), 100,000 keys: {} bytes, {:.0} bytes per key",
        state.len(),
        state.len() as f64 / keys as f64
    );
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
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--held") {
        let case = args.get(at + 1).map_or("", String::as_str);
        held(case, &numbers, n);
        return;
    }

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

    // 4. A pattern and a detector over 1,000 keys.
    for (case, sql) in SIGNALS {
        let mut engine = rule(sql);
        run(&mut engine, &topics, &numbers, n / 10, 0); // warm up
        let (rate, emitted) = run(&mut engine, &topics, &numbers, n, n as u64 / 10);
        println!("{case}, 1,000 keys, number payloads: {rate:>12.0} events/s ({emitted} signals)");
    }

    // 5. 100,000 keys held: memory per key, and the rate at that size.
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
    drop(engine);

    // 6. The pattern and the detector with 100,000 keys, each in a fresh
    // process.
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    for (case, _) in SIGNALS {
        match std::process::Command::new(&me)
            .args(["--held", case])
            .env("PLANTD_BENCH_EVENTS", n.to_string())
            .output()
        {
            Ok(o) => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Err(e) => println!("{case}: could not run the 100,000-key case: {e}"),
        }
    }
}
