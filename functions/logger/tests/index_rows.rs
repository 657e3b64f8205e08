//! The index keeps records in a compact form (labels held once, message
//! and fields packed: `src/row.rs`); what a query finds and returns must
//! be exactly what the filter finds among the records as parsed, and a
//! stored line must take a fraction of the heap a parsed record does.

use plantd_logger::{Direction, IndexSettings, LogIndex, LogQuery, LogRecord, parse, parse_filter};
use time::OffsetDateTime;

/// Lines of every shape the parser knows, with nested, numeric, boolean
/// and null fields, on two sites and three sources.
fn records() -> Vec<LogRecord> {
    let lines = [
        r#"{"level":"error","msg":"overheat","temp":91,"zone":{"name":"a","rack":{"u":7}},"tags":["hot",3,true,null]}"#,
        r#"{"level":"warn","msg":"overheat","temp":70.5,"neg":-3,"big":18446744073709551615,"ok":false}"#,
        r#"{"msg":"cycle done","temp":1e300,"zone.name":"dotted","empty":{},"list":[]}"#,
        r#"{"msg": "cut"#,
        r#"time=2026-12-06T09:00:00Z lvl=warn msg="valve 7 stuck" valve=7 manual"#,
        r#"level=info msg="quoted \"value\"" path=/a/b"#,
        "2026-12-06T08:00:00Z [ERROR] pump 2 tripped at 91C",
        "WARN: low pressure ünïcode",
        "plain text with 42 in it",
        "[1,2]",
    ];
    let sources = ["line1.plc", "line2.plc", "gw"];
    let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    (0..120u64)
        .map(|i| {
            let line = lines[(i as usize) % lines.len()];
            let subject = format!(
                "plantd.site{}.log.{}",
                i % 2,
                sources[(i as usize / 2) % sources.len()]
            );
            parse(
                "PLANTD_LOGS",
                i + 1,
                &subject,
                &async_nats::HeaderMap::new(),
                line.as_bytes(),
                t0 + time::Duration::seconds(i as i64),
            )
        })
        .collect()
}

#[test]
fn queries_find_and_return_exactly_what_the_filter_finds_in_the_parsed_records() {
    let all = records();
    let index = LogIndex::new(IndexSettings::default());
    index.insert(all.clone());
    for filter in [
        "",
        r#"|= "overheat""#,
        r#"|= "hot""#,
        r#"|= "true""#,
        r#"|= "18446744073709551615""#,
        r#"|= "1e300""#,
        r#"|= "-3""#,
        r#"|= "dotted""#,
        r#"|= "\"value\"""#,
        r#"!= "overheat""#,
        r#"|~ "pump [0-3] .* 9\dC""#,
        r#"|~ "^/a""#,
        r#"{site="site1"} |= "overheat""#,
        r#"{source=~"line.*"} | level >= warn"#,
        "| temp > 80",
        "| temp < 80",
        "| temp != 91",
        "| neg < 0",
        "| big >= 18446744073709551615",
        "| ok = false",
        "| manual = true",
        "| valve = 7",
        r#"| zone.name = "a""#,
        r#"| zone.name = "dotted""#,
        "| zone.rack.u = 7",
        "| zone.rack = 7",
        "| tags = 3",
        r#"| zone.name =~ "d.*""#,
        r#"| zone.name !~ "d.*""#,
        r#"| path = "/a/b""#,
        r#"| missing != "x""#,
        r#"| msg = "overheat" or message = "overheat""#,
        r#"| format = "logfmt" and level = warn"#,
    ] {
        let f = parse_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        for direction in [Direction::Forward, Direction::Backward] {
            let page = index.query(&LogQuery {
                filter: f.clone(),
                direction,
                limit: 1000,
                ..LogQuery::default()
            });
            let mut expected: Vec<LogRecord> =
                all.iter().filter(|r| f.matches(r)).cloned().collect();
            if direction == Direction::Backward {
                expected.reverse();
            }
            assert_eq!(page.records, expected, "{filter} {direction:?}");
        }
    }
    let some = parse_filter(r#"|= "overheat""#).expect("filter");
    assert!(all.iter().any(|r| some.matches(r)), "the lines are varied");
}

#[test]
fn the_byte_estimate_of_a_stored_line_is_its_compact_size() {
    // 10,000 lines of 200 bytes: the estimate per line is the message and
    // a row's fixed cost, not five owned strings and a map per line.
    let index = LogIndex::new(IndexSettings::default());
    let text = format!("INFO cycle done {}", "x".repeat(183));
    index.insert((0..10_000u64).map(|i| {
        parse(
            "PLANTD_LOGS",
            i + 1,
            &format!("plantd.site{}.log.line{}.plc", i % 4, i % 16),
            &async_nats::HeaderMap::new(),
            text.as_bytes(),
            OffsetDateTime::UNIX_EPOCH,
        )
    }));
    let per_line = index.stats().bytes / 10_000;
    println!("{per_line} bytes per stored line by the estimate");
    assert!(
        (200..300).contains(&per_line),
        "{per_line} bytes per stored 200-byte line"
    );
}
