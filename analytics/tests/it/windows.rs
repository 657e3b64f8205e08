//! Windows, watermarks, lateness and aggregates as a rule's user sees them:
//! which results come out, when, with which values and revisions.

use plantd_analytics::{Engine, Event, Output, Rule};

fn engine(sql: &str) -> Engine {
    Engine::new(vec![Rule::from_sql("r", sql).expect("rule")]).expect("engine")
}

struct Feed {
    engine: Engine,
    seq: u64,
}

impl Feed {
    fn new(sql: &str) -> Self {
        Self {
            engine: engine(sql),
            seq: 0,
        }
    }
    fn send(&mut self, topic: &str, at: i64, payload: &str) -> Vec<Output> {
        self.seq += 1;
        self.engine.process(&Event {
            topic,
            payload: payload.as_bytes(),
            received_at: at,
            stream_seq: self.seq,
        })
    }
}

#[test]
fn tumbling_windows_close_when_the_watermark_passes_their_end() {
    let mut f = Feed::new(
        r#"SELECT avg(value), max(value), count(*) FROM "l1/+/temp" GROUP BY topic, TUMBLE(10s)"#,
    );
    assert!(f.send("l1/a/temp", 1_000, "10").is_empty());
    assert!(f.send("l1/b/temp", 2_000, "100").is_empty());
    assert!(f.send("l1/a/temp", 9_999, "20").is_empty());
    assert!(
        f.send("other/a/temp", 50_000, "1").is_empty(),
        "not matched: no effect"
    );
    let out = f.send("l1/a/temp", 10_000, "30");
    assert_eq!(out.len(), 2, "{out:?}");
    let a = &out[0];
    assert_eq!(
        (a.key.as_str(), a.window_start, a.window_end, a.revision),
        ("l1/a/temp", 0, 10_000, 0)
    );
    assert_eq!(a.values["avg_value"], 15.0);
    assert_eq!(a.values["max_value"], 20.0);
    assert_eq!(a.values["count"], 2.0);
    assert_eq!(a.id(), "r:l1/a/temp:0:0");
    assert_eq!(out[1].key, "l1/b/temp");
    assert_eq!(out[1].values["avg_value"], 100.0);
    // Idle stream: advance closes the open window.
    let out = f.engine.advance(20_000);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].window_start, out[0].values["avg_value"]),
        (10_000, 30.0)
    );
}

#[test]
fn hopping_windows_hold_each_reading_size_over_slide_times() {
    let mut f = Feed::new(r#"SELECT sum(value) FROM "t" GROUP BY topic, HOP(30s, 10s)"#);
    let mut out = f.send("t", 25_000, "1");
    out.extend(f.send("t", 35_000, "2"));
    assert_eq!(out.len(), 1, "window [0, 30 s) closed at 35 s");
    out.extend(f.engine.advance(100_000));
    let got: Vec<(i64, f64)> = out
        .iter()
        .map(|o| (o.window_start, o.values["sum_value"]))
        .collect();
    assert_eq!(got, [(0, 1.0), (10_000, 3.0), (20_000, 3.0), (30_000, 2.0)]);
}

#[test]
fn session_windows_join_readings_within_the_gap_and_merge() {
    let mut f = Feed::new(
        r#"SELECT count(*), first(value), last(value) FROM "t" WITH (delay = '1m') GROUP BY topic, SESSION(10s)"#,
    );
    f.send("t", 0, "1");
    f.send("t", 18_000, "3");
    f.send("t", 9_000, "2"); // bridges the two sessions (within 10 s of each)
    f.send("t", 60_000, "9");
    let out = f.engine.advance(200_000);
    let got: Vec<(i64, i64, f64, f64, f64)> = out
        .iter()
        .map(|o| {
            (
                o.window_start,
                o.window_end,
                o.values["count"],
                o.values["first_value"],
                o.values["last_value"],
            )
        })
        .collect();
    assert_eq!(
        got,
        [(0, 28_000, 3.0, 1.0, 3.0), (60_000, 70_000, 1.0, 9.0, 9.0)]
    );
}

#[test]
fn out_of_order_readings_within_the_delay_are_on_time() {
    let mut f = Feed::new(
        r#"SELECT avg(value) FROM "t" WITH (event_time = payload.ts, delay = '5s') GROUP BY topic, TUMBLE(10s)"#,
    );
    // Event time from the payload (ms, or RFC 3339), not the receive time.
    assert!(
        f.send("t", 999_999, r#"{"ts": 9000, "value": 1}"#)
            .is_empty()
    );
    assert!(
        f.send("t", 999_999, r#"{"ts": 14000}"#).is_empty(),
        "watermark 9 s"
    );
    assert!(
        f.send("t", 999_999, r#"{"ts": "1970-01-01T00:00:08Z"}"#)
            .is_empty()
    );
    // value of a JSON payload is not a number: avg over nothing is absent.
    let out = f.send("t", 999_999, r#"{"ts": 15000}"#);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].values.get("avg_value"), None);
    assert_eq!((out[0].window_start, out[0].revision), (0, 0));
}

#[test]
fn a_late_reading_revises_its_window_and_beyond_lateness_is_counted() {
    let mut f = Feed::new(
        r#"SELECT avg(value), count(*) FROM "t" WITH (lateness = '30s') GROUP BY topic, TUMBLE(10s)"#,
    );
    f.send("t", 1_000, "10");
    let out = f.send("t", 12_000, "50");
    assert_eq!((out[0].revision, out[0].values["avg_value"]), (0, 10.0));
    // Late (watermark 12 s > end 10 s) but within 30 s: revision 1, at once.
    let out = f.send("t", 5_000, "20");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].window_start,
            out[0].revision,
            out[0].values["avg_value"]
        ),
        (0, 1, 15.0)
    );
    assert_eq!(out[0].id(), "r:t:0:1");
    // The watermark reaches 40 s: window [0, 10 s) is forgotten.
    f.send("t", 40_000, "1");
    let out = f.send("t", 6_000, "99");
    assert!(out.is_empty(), "{out:?}");
    let m = f.engine.metrics("r").expect("ok");
    assert_eq!((m.dropped_late, m.late_updates), (1, 1));
    // Every later result says readings were dropped for this key.
    let out = f.engine.advance(100_000);
    assert!(out.iter().all(|o| o.dropped_late == 1), "{out:?}");
}

#[test]
fn a_redelivered_event_changes_nothing() {
    let mut e = engine(r#"SELECT count(*) FROM "t" GROUP BY topic, TUMBLE(10s)"#);
    let ev = |seq, at| Event {
        topic: "t",
        payload: b"1",
        received_at: at,
        stream_seq: seq,
    };
    e.process(&ev(1, 1_000));
    e.process(&ev(2, 2_000));
    e.process(&ev(2, 2_000));
    e.process(&ev(1, 1_000));
    let out = e.advance(10_000);
    assert_eq!(out[0].values["count"], 2.0);
    assert_eq!(e.metrics("r").expect("ok").duplicates, 2);
}

#[test]
fn where_json_fields_keys_percentiles_distinct_and_rate() {
    let mut f = Feed::new(
        "SELECT percentile(payload.p, 0.5) AS med, count(DISTINCT payload.batch) AS batches, \
         rate(payload.p) AS slope, stddev(payload.p) \
         FROM \"press/#\" WHERE payload.p >= 0 AND payload.unit = 'bar' \
         GROUP BY payload.line, TUMBLE(1m)",
    );
    for i in 0..=100 {
        let body = format!(
            r#"{{"p": {i}, "unit": "bar", "line": "L1", "batch": "b{}"}}"#,
            i % 7
        );
        f.send("press/x", i * 100, &body);
    }
    f.send("press/x", 500, r#"{"p": -5, "unit": "bar", "line": "L1"}"#); // WHERE: no
    f.send(
        "press/x",
        500,
        r#"{"p": 1000, "unit": "psi", "line": "L1"}"#,
    ); // WHERE: no
    f.send("press/x", 500, r#"{"p": 1, "unit": "bar"}"#); // no key: ignored
    let out = f.engine.advance(60_000);
    assert_eq!(out.len(), 1, "{out:?}");
    let v = &out[0].values;
    assert_eq!(out[0].key, "L1");
    assert!((v["med"] - 50.0).abs() <= 1.0, "{v:?}");
    assert_eq!(v["batches"], 7.0);
    assert!((v["slope"] - 10.0).abs() < 1e-9, "100 per 10 s: {v:?}");
    assert!(
        (v["stddev_payload_p"] - 29.154_759_474_226_5).abs() < 1e-9,
        "{v:?}"
    );
}

#[test]
fn without_lateness_a_reading_for_a_closed_window_is_dropped_and_counted() {
    let mut f = Feed::new(r#"SELECT count(*) FROM "t" GROUP BY topic, HOP(20s, 10s)"#);
    f.send("t", 1_000, "1");
    let out = f.send("t", 25_000, "1");
    assert_eq!(
        out.iter().map(|o| o.window_start).collect::<Vec<_>>(),
        [-10_000, 0]
    );
    // 15 s: window [0, 20 s) is closed (dropped there), [10 s, 30 s) is open.
    assert!(f.send("t", 15_000, "1").is_empty());
    assert!(
        f.send("t", 5_000, "1").is_empty(),
        "both its windows are closed"
    );
    let m = f.engine.metrics("r").expect("rule");
    assert_eq!(m.dropped_late, 1);
    let out = f.engine.advance(60_000);
    let got: Vec<(i64, f64, u64)> = out
        .iter()
        .map(|o| (o.window_start, o.values["count"], o.dropped_late))
        .collect();
    assert_eq!(got, [(10_000, 2.0, 1), (20_000, 1.0, 1)]);
    // Event time never goes back: advancing to the past emits nothing.
    assert!(f.engine.advance(0).is_empty());
}

#[test]
fn rules_are_independent_and_names_unique() {
    let a = Rule::from_sql(
        "a",
        r#"SELECT max(value) FROM "x/#" GROUP BY topic, TUMBLE(1s)"#,
    )
    .expect("a");
    let b = Rule::from_sql(
        "b",
        r#"SELECT min(value) FROM "x/1" GROUP BY '*', TUMBLE(2s)"#,
    )
    .expect("b");
    assert!(Engine::new(vec![a.clone(), a.clone()]).is_err());
    let mut e = Engine::new(vec![a, b]).expect("engine");
    e.process(&Event {
        topic: "x/1",
        payload: b"5",
        received_at: 0,
        stream_seq: 1,
    });
    e.process(&Event {
        topic: "x/2",
        payload: b"7",
        received_at: 500,
        stream_seq: 2,
    });
    let out = e.advance(2_000);
    let got: Vec<(String, String, f64)> = out
        .iter()
        .map(|o| {
            (
                o.rule.clone(),
                o.key.clone(),
                *o.values.values().next().expect("value"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), "x/1".into(), 5.0),
            ("a".into(), "x/2".into(), 7.0),
            ("b".into(), "*".into(), 5.0)
        ]
    );
}
