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

#[test]
fn patterns_compile_to_their_json_form() {
    let cases = [
        (
            r#"SELECT threshold(value > 8 AND payload.ok = true, 30s) FROM "a/+" GROUP BY topic"#,
            r#"{"pattern":{"threshold":{"when":{"all":[{"field":"value","op":"gt","value":8.0},{"field":["ok"],"op":"eq","value":1.0}]},"for":"30s"}}}"#,
        ),
        (
            r#"SELECT stale(5m) FROM "a/+""#,
            r#"{"pattern":{"stale":{"after":"5m"}}}"#,
        ),
        (
            r#"SELECT rate_of_change(payload.t, 2.5) FROM "a/+""#,
            r#"{"pattern":{"rate_of_change":{"field":["t"],"above":2.5,"per":"1s","direction":"both"}}}"#,
        ),
        (
            "SELECT followed_by(topic = 'cmd/+' AND value = 1, value > 2, 1m) FROM \"#\" GROUP BY topic_level(1)",
            r#"{"pattern":{"sequence":{"mode":"followed_by","first":{"from":"cmd/+","when":{"field":"value","op":"eq","value":1.0}},"then":{"when":{"field":"value","op":"gt","value":2.0}},"within":"1m"}}}"#,
        ),
        (
            r#"SELECT zscore(value, 0.1, 3) FROM "a/+""#,
            r#"{"anomaly":{"zscore":{"field":"value","alpha":0.1,"threshold":3.0,"min_samples":10,"direction":"both"}}}"#,
        ),
        (
            r#"SELECT cusum(value, 0.5, 5, 30, down) FROM "a/+""#,
            r#"{"anomaly":{"cusum":{"field":"value","drift":0.5,"threshold":5.0,"min_samples":30,"direction":"down"}}}"#,
        ),
    ];
    for (sql, json) in cases {
        let rule = Rule::from_sql("p", sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            serde_json::to_string(&rule.operator).expect("json"),
            json,
            "{sql}"
        );
        assert!(rule.aggregate().is_none());
    }
    let r = Rule::from_sql("p", "SELECT stale(1m) FROM \"#\" GROUP BY topic_level(2)").expect("ok");
    assert_eq!(r.group_by, GroupBy::Level(2));
    let r = Rule::from_sql(
        "p",
        r#"SELECT avg(value) FROM "a" WITH (stale_after = '30s') GROUP BY topic, TUMBLE(1m)"#,
    )
    .expect("ok");
    assert_eq!(
        r.aggregate().expect("aggregate").stale_after,
        Some(Millis(30_000))
    );
}
