//! The SQL form: what compiles, and where errors point.

use super::*;
use crate::duration::Millis;
use crate::rule::Condition;

#[test]
fn tumble_avg_max_by_topic() {
    let r = Rule::from_sql(
        "t",
        r#"SELECT avg(value), max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#,
    )
    .expect("ok");
    assert_eq!(r.from.as_str(), "line1/+/temp");
    assert_eq!(r.group_by, GroupBy::Topic);
    let a = r.aggregate().expect("aggregate");
    assert_eq!(
        a.window,
        Window::Tumbling {
            size: Millis(60_000)
        }
    );
    let names: Vec<&str> = a.select.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["avg_value", "max_value"]);
}

#[test]
fn hop_session_where_with_fields() {
    let r = Rule::from_sql(
        "t",
        "SELECT percentile(payload.temp.c, 0.95) AS p95, count(*), count(DISTINCT payload.dev)\n\
         FROM \"a/#\" WITH (event_time = payload.ts, delay = '2s', lateness = '30s')\n\
         WHERE value > 0 AND NOT payload.unit = 'F'\n\
         GROUP BY payload.dev, HOP(1m, 10s)",
    )
    .expect("ok");
    assert_eq!(
        r.time,
        TimePolicy {
            event_time: Some(FieldPath::Json(vec!["ts".into()])),
            delay: Millis(2_000),
            lateness: Millis(30_000)
        }
    );
    assert_eq!(
        r.group_by,
        GroupBy::Field(FieldPath::Json(vec!["dev".into()]))
    );
    let a = r.aggregate().expect("aggregate");
    assert_eq!(
        a.window,
        Window::Hopping {
            size: Millis(60_000),
            slide: Millis(10_000)
        }
    );
    assert_eq!(a.select[0].func, AggFn::Percentile(0.95));
    assert_eq!(a.select[1].name, "count");
    assert_eq!(a.select[2].func, AggFn::DistinctCount);
    assert!(matches!(r.filter, Some(Condition::All { .. })));
    let s = Rule::from_sql(
        "s",
        "SELECT last(payload.\"t.c\") FROM \"x\" GROUP BY '*', SESSION(30s)",
    )
    .expect("ok");
    assert_eq!(s.group_by, GroupBy::None);
    assert_eq!(
        s.aggregate().expect("aggregate").select[0].field,
        FieldPath::Json(vec!["t.c".into()])
    );
    assert_eq!(
        s.aggregate().expect("aggregate").window,
        Window::Session {
            gap: Millis(30_000)
        }
    );
    // The JSON form is the source of truth: it round-trips.
    assert_eq!(Rule::from_json(r.to_json().as_bytes()).expect("ok"), r);
}

#[test]
fn errors_point_at_line_and_column() {
    let e = Rule::from_sql(
        "t",
        "SELECT avg(value)\nFROM \"a\" GROUP BY TUMBLE(1 minute)",
    )
    .expect_err("refused");
    assert_eq!(e.line, 2, "{e}");
    let e = Rule::from_sql("t", "SELECT mean2(value) FROM \"a\" GROUP BY TUMBLE(1m)")
        .expect_err("refused");
    assert_eq!((e.line, e.column), (1, 8), "{e}");
    let e = Rule::from_sql("t", "SELECT avg(value) FROM \"a\"\n  GROUP BY TUMBLE(1y)")
        .expect_err("refused");
    assert_eq!((e.line, e.column), (2, 19), "{e}");
    let e = Rule::from_sql("t", "SELECT avg(temp) FROM \"a\" GROUP BY TUMBLE(1m)")
        .expect_err("refused");
    assert_eq!((e.line, e.column), (1, 12), "{e}");
    let e = Rule::from_sql("t", "SELECT avg(value) FROM \"a\"").expect_err("refused");
    assert!(e.message.contains("window"), "{e}");
    let e = Rule::from_sql("t", "SELECT avg(value) FROM \"a/#/b\" GROUP BY TUMBLE(1m)")
        .expect_err("refused");
    assert_eq!((e.line, e.column), (1, 24), "{e}");
    let e = Rule::from_sql(
        "t",
        "SELECT avg(value) FROM \"a\" WHERE value > GROUP BY TUMBLE(1m)",
    )
    .expect_err("refused");
    assert_eq!(e.line, 1, "{e}");
    assert!(e.column > 30, "{e}");
}
