//! `/v1/logs`' work over a full index: 1,000,000 stored lines, queries for
//! one source with a text filter, p50/p99 (issue 13's speed line: p99 <
//! 200 ms). Each query is the index scan plus the JSON of the page the
//! proxy sends (limit 100).
//!
//! Lines: 4 sites × 16 sources, ~200 bytes; per source "overheat" in 1
//! line of 100, "valve 7 jammed" in 1 of 20,000 (a near-full scan of the
//! site), one filter that never matches (the whole site scanned: 250,000
//! lines). Half the queries start at a cursor in the middle.
//!
//! ```sh
//! cargo bench -p plantd-logger --bench logger_query -- [--lines 1000000] [--queries 200]
//! ```

use std::time::{Duration, Instant};

use plantd_logger::{
    Cursor, Direction, IndexSettings, LogIndex, LogQuery, LogRecord, parse, parse_filter,
};
use time::OffsetDateTime;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn line(i: u64) -> String {
    // Per source (i % 16), one line in 100 and one in 20,000.
    let k = i / 16;
    let text = if k % 20_000 == 7 {
        format!("ERROR valve 7 jammed at step {i}")
    } else if k % 100 == 3 {
        format!("WARN overheat on pump {} at {}C", i % 8, 80 + i % 20)
    } else {
        format!(
            "INFO cycle {i} done in {} ms, temp {}C",
            i % 900,
            60 + i % 30
        )
    };
    format!(
        "{text} {}",
        "x".repeat(200usize.saturating_sub(text.len() + 1))
    )
}

/// The process's resident memory in bytes (Linux; 0 elsewhere).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let lines = arg("--lines", 1_000_000);
    let queries = arg("--queries", 200) as usize;
    let index = LogIndex::new(IndexSettings {
        max_lines: lines as usize,
        max_bytes: usize::MAX,
        ..IndexSettings::default()
    });
    let rss_before = resident();
    let t = Instant::now();
    let headers = async_nats::HeaderMap::new();
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut chunk: Vec<LogRecord> = Vec::with_capacity(10_000);
    for i in 0..lines {
        let subject = format!("plantd.site{}.log.line{}.plc", i % 4, i % 16);
        chunk.push(parse(
            "PLANTD_LOGS",
            i + 1,
            &subject,
            &headers,
            line(i).as_bytes(),
            start + time::Duration::milliseconds(i as i64 * 3),
        ));
        if chunk.len() == 10_000 {
            index.insert(chunk.drain(..));
        }
    }
    index.insert(chunk.drain(..));
    let took = t.elapsed();
    let s = index.stats();
    let grown = resident().saturating_sub(rss_before);
    println!(
        "indexed {} lines ({} MiB estimated, {} B per line; resident memory grew {} MiB, {} B per line) in {took:.2?}",
        s.lines,
        s.bytes >> 20,
        s.bytes / s.lines.max(1),
        grown >> 20,
        grown / s.lines.max(1) as u64,
    );

    for (name, filter) in [
        ("common match (1 %), limit 100", r#"|= "overheat""#),
        ("rare match (1 in 20,000)", r#"|= "valve 7 jammed""#),
        ("no match (full scan of the site)", r#"|= "never logged""#),
        ("regex (common)", r#"|~ "pump [0-3] at 9\dC""#),
        ("text + level predicate", r#"|= "overheat" | level >= warn"#),
    ] {
        let filter = parse_filter(filter).expect("filter");
        let mut times = Vec::with_capacity(queries);
        let mut found = 0;
        for q in 0..queries {
            let query = LogQuery {
                sites: Some(vec![format!("site{}", q % 4)]),
                source: Some(format!("line{}/plc", (q % 4) + 4 * (q % 4))),
                filter: filter.clone(),
                direction: Direction::Backward,
                limit: 100,
                cursor: (q % 2 == 1).then_some(Cursor { after: lines / 2 }),
                ..LogQuery::default()
            };
            let t = Instant::now();
            let page = index.query(&query);
            let body = serde_json::to_vec(&page.records).expect("json");
            times.push(t.elapsed());
            found += page.records.len();
            std::hint::black_box(body);
        }
        times.sort();
        println!(
            "{name:<36} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  ({} records over {queries} queries)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            found
        );
    }
}
