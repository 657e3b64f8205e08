//! Patterns and stale sources as a rule's user sees them: which signals
//! come out, when (the watermark, not the key's next message), with which
//! windows, evidence and ids.

use plantd_analytics::{Engine, Event, Output, Rule, Signal};

struct Feed {
    engine: Engine,
    seq: u64,
}

impl Feed {
    fn sql(sql: &str) -> Self {
        Self::rule(Rule::from_sql("r", sql).expect("rule"))
    }
    fn rule(rule: Rule) -> Self {
        Self {
            engine: Engine::new(vec![rule]).expect("engine"),
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

/// (key, signal, window_start, window_end, revision)
fn brief(out: &[Output]) -> Vec<(&str, Signal, i64, i64, u32)> {
    out.iter()
        .map(|o| {
            (
                o.key.as_str(),
                o.signal.expect("a signal"),
                o.window_start,
                o.window_end,
                o.revision,
            )
        })
        .collect()
}

#[test]
fn threshold_fires_when_the_watermark_passes_start_plus_duration() {
    let mut f = Feed::sql(r#"SELECT threshold(value > 8, 30s) FROM "p/+/bar" GROUP BY topic"#);
    assert!(f.send("p/a/bar", 0, "9").is_empty());
    assert!(f.send("p/a/bar", 10_000, "9.5").is_empty());
    assert!(f.send("p/b/bar", 29_999, "1").is_empty());
    // Another key's reading moves the watermark to 30 s: `a` has held for
    // 30 s — it fires now, without waiting for its own next reading.
    let out = f.send("p/b/bar", 30_000, "1");
    assert_eq!(
        brief(&out),
        [("p/a/bar", Signal::Fire, 0, 30_000, 0)],
        "{out:?}"
    );
    assert_eq!(out[0].values["value"], 9.5);
    assert_eq!(out[0].values["duration_ms"], 30_000.0);
    assert_eq!(out[0].id(), "r:p/a/bar:0:0");
    assert!(
        f.send("p/a/bar", 35_000, "12").is_empty(),
        "still held: no repeat"
    );
    let out = f.send("p/a/bar", 40_000, "7");
    assert_eq!(brief(&out), [("p/a/bar", Signal::Clear, 0, 40_000, 1)]);
    assert_eq!(out[0].values["duration_ms"], 40_000.0);
    assert_eq!(out[0].id(), "r:p/a/bar:0:1", "fire and clear: two ids");

    // A break before the duration: nothing.
    assert!(f.send("p/a/bar", 50_000, "9").is_empty());
    assert!(f.send("p/a/bar", 79_999, "8").is_empty());
    assert!(f.engine.advance(200_000).is_empty());

    // An idle stream: `advance` fires it.
    assert!(f.send("p/b/bar", 300_000, "10").is_empty());
    let out = f.engine.advance(330_000);
    assert_eq!(
        brief(&out),
        [("p/b/bar", Signal::Fire, 300_000, 330_000, 0)]
    );
    // Its own next reading after a long silence: the fire comes first, at
    // start + duration, then the clear.
    let mut f = Feed::sql(r#"SELECT threshold(value > 8, 30s) FROM "p/+/bar" GROUP BY topic"#);
    f.send("p/a/bar", 0, "9");
    let out = f.send("p/a/bar", 90_000, "1");
    assert_eq!(
        brief(&out),
        [
            ("p/a/bar", Signal::Fire, 0, 30_000, 0),
            ("p/a/bar", Signal::Clear, 0, 90_000, 1)
        ]
    );
}

#[test]
fn threshold_waits_delay_for_out_of_order_readings_and_drops_later_ones() {
    let mut f = Feed::sql(
        r#"SELECT threshold(payload.bar >= 8 AND payload.ok = true, 10s)
           FROM "p/+/s" WITH (event_time = payload.ts, delay = '5s') GROUP BY topic"#,
    );
    let r = |ts: i64, bar: f64| format!(r#"{{"ts": {ts}, "bar": {bar}, "ok": true}}"#);
    assert!(f.send("p/a/s", 99, &r(0, 9.0)).is_empty());
    assert!(f.send("p/a/s", 99, &r(3_000, 9.0)).is_empty());
    // Out of order, within the delay: it breaks the run at 1 s.
    assert!(f.send("p/a/s", 99, &r(1_000, 2.0)).is_empty());
    assert!(f.send("p/a/s", 99, &r(6_000, 9.0)).is_empty());
    let out = f.send("p/a/s", 99, &r(14_000, 9.0));
    assert!(
        out.is_empty(),
        "watermark 9 s: 3 s + 10 s not reached: {out:?}"
    );
    let out = f.send("p/a/s", 99, &r(18_000, 9.0));
    assert_eq!(brief(&out), [("p/a/s", Signal::Fire, 3_000, 13_000, 0)]);
    // Earlier than the watermark (13 s): dropped and counted, not applied.
    assert!(f.send("p/a/s", 99, &r(12_000, 1.0)).is_empty());
    assert_eq!(f.engine.metrics("r").expect("rule").dropped_late, 1);
    assert!(f.engine.advance(40_000).is_empty());
    // Held until the watermark reaches it (40.001 s + 5 s).
    assert!(f.send("p/a/s", 99, &r(40_001, 1.0)).is_empty());
    let out = f.engine.advance(45_001);
    assert_eq!(brief(&out), [("p/a/s", Signal::Clear, 3_000, 40_001, 1)]);
    assert_eq!(out[0].dropped_late, 1);
}

#[test]
fn stale_sources_fire_on_silence_and_clear_on_data() {
    let mut f = Feed::sql(r#"SELECT stale(1m) FROM "dev/+/hb" GROUP BY topic"#);
    f.send("dev/a/hb", 0, "1");
    f.send("dev/b/hb", 50_000, "1");
    let out = f.send("dev/b/hb", 60_000, "1");
    assert_eq!(brief(&out), [("dev/a/hb", Signal::Fire, 0, 60_000, 0)]);
    assert_eq!(out[0].values["last_seen"], 0.0);
    assert_eq!(out[0].values["after_ms"], 60_000.0);
    let out = f.send("dev/a/hb", 95_000, "1");
    assert_eq!(brief(&out), [("dev/a/hb", Signal::Clear, 0, 95_000, 1)]);
    assert_eq!(out[0].values["gap_ms"], 95_000.0);
    // Nobody sends: the caller's clock moves event time on.
    let out = f.engine.advance(200_000);
    assert_eq!(
        brief(&out),
        [
            ("dev/b/hb", Signal::Fire, 60_000, 120_000, 0),
            ("dev/a/hb", Signal::Fire, 95_000, 155_000, 0),
        ]
    );
    assert_eq!(
        Rule::from_sql("r", r#"SELECT stale(1m) FROM "dev/+/hb" GROUP BY topic"#)
            .expect("rule")
            .to_json(),
        r#"{"name":"r","from":"dev/+/hb","group_by":"topic","time":{"delay":"0s","lateness":"0s"},"operator":{"pattern":{"stale":{"after":"1m"}}}}"#
    );
}

#[test]
fn windows_across_a_silence_longer_than_stale_after_are_marked() {
    let mut f2 = Feed::sql(
        r#"SELECT avg(value) FROM "t/+" WITH (stale_after = '20s') GROUP BY topic, TUMBLE(1m)"#,
    );
    f2.send("t/a", 0, "10");
    f2.send("t/a", 10_000, "10");
    f2.send("t/a", 50_000, "40");
    let out = f2.send("t/a", 60_000, "1");
    assert_eq!(out[0].values["avg_value"], 20.0);
    assert_eq!(out[0].values["stale"], 1.0);
    assert_eq!(out[0].values["gap_ms"], 40_000.0);
    // [60, 120): readings at 60 s and 65 s, then silence to the end: 55 s.
    f2.send("t/a", 65_000, "1");
    let out = f2.send("t/a", 130_000, "1");
    assert_eq!(out[0].window_start, 60_000);
    assert_eq!(out[0].values["gap_ms"], 55_000.0);
    // [120, 180): the silence reaches 10 s into it — within 20 s; a
    // reading every 10 s after: not stale.
    f2.send("t/a", 140_000, "1");
    f2.send("t/a", 150_000, "1");
    f2.send("t/a", 160_000, "1");
    f2.send("t/a", 170_000, "1");
    let out = f2.send("t/a", 180_000, "1");
    assert_eq!(out[0].window_start, 120_000);
    assert!(!out[0].values.contains_key("stale"), "{out:?}");
    // Without stale_after nothing is marked.
    let mut f3 = Feed::sql(r#"SELECT avg(value) FROM "t/+" GROUP BY topic, TUMBLE(1m)"#);
    f3.send("t/a", 0, "10");
    let out = f3.send("t/a", 60_000, "1");
    assert!(!out[0].values.contains_key("stale"));
}

#[test]
fn a_start_command_not_followed_by_running_fires_on_the_watermark() {
    let mut f = Feed::sql(
        "SELECT not_followed_by(topic = 'cmd/+/start',\n\
                                topic = 'status/+' AND payload.state = 'running', 10s)\n\
         FROM \"#\" GROUP BY topic_level(1)",
    );
    assert!(f.send("cmd/m1/start", 0, "{}").is_empty());
    assert!(
        f.send("status/m1", 5_000, r#"{"state":"running"}"#)
            .is_empty()
    );
    assert!(f.send("cmd/m2/start", 10_000, "{}").is_empty());
    assert!(
        f.send("status/m2", 12_000, r#"{"state":"starting"}"#)
            .is_empty()
    );
    // No message for m2 at all: the watermark (here, `advance`) fires it.
    let out = f.engine.advance(19_999);
    assert!(out.is_empty());
    let out = f.engine.advance(20_000);
    assert_eq!(brief(&out), [("m2", Signal::Fire, 10_000, 20_000, 0)]);
    assert_eq!(out[0].values["within_ms"], 10_000.0);
    // A second start while it fires changes nothing; running clears it.
    assert!(f.send("cmd/m2/start", 21_000, "{}").is_empty());
    let out = f.send("status/m2", 25_000, r#"{"state":"running"}"#);
    assert_eq!(brief(&out), [("m2", Signal::Clear, 10_000, 25_000, 1)]);
    assert_eq!(out[0].values["elapsed_ms"], 15_000.0);
    // Running exactly `within` after the start is too late.
    f.send("cmd/m3/start", 30_000, "{}");
    let out = f.send("status/m3", 40_000, r#"{"state":"running"}"#);
    assert_eq!(
        brief(&out),
        [
            ("m3", Signal::Fire, 30_000, 40_000, 0),
            ("m3", Signal::Clear, 30_000, 40_000, 1)
        ]
    );
}

#[test]
fn sequences_key_on_a_payload_field_in_json() {
    let rule = Rule::from_json(
        br#"{"name":"door_then_heat","from":"plant/#",
             "group_by":{"field":["room"]},
             "operator":{"pattern":{"sequence":{"mode":"followed_by","within":"5m",
               "first":{"from":"plant/door","when":{"field":["open"],"op":"eq","value":1}},
               "then":{"from":"plant/temp","when":{"field":["c"],"op":"gt","value":30}}}}}}"#,
    )
    .expect("rule");
    let mut f = Feed::rule(rule);
    assert!(
        f.send("plant/temp", 0, r#"{"room":"r1","c":35}"#)
            .is_empty(),
        "B before any A"
    );
    assert!(
        f.send("plant/door", 1_000, r#"{"room":"r1","open":true}"#)
            .is_empty()
    );
    assert!(
        f.send("plant/temp", 2_000, r#"{"room":"r2","c":35}"#)
            .is_empty()
    );
    let out = f.send("plant/temp", 61_000, r#"{"room":"r1","c":31}"#);
    assert_eq!(
        brief(&out),
        [
            ("r1", Signal::Fire, 1_000, 61_000, 0),
            ("r1", Signal::Clear, 1_000, 61_000, 1)
        ],
        "a match is an event: fire, then clear at once"
    );
    assert_eq!(out[0].values["elapsed_ms"], 60_000.0);
    assert_eq!(out[0].values["value"], 31.0);
    // Too late: the wait expired quietly.
    f.send("plant/door", 100_000, r#"{"room":"r1","open":true}"#);
    assert!(
        f.send("plant/temp", 400_001, r#"{"room":"r1","c":40}"#)
            .is_empty()
    );
}

#[test]
fn rate_of_change_between_consecutive_readings() {
    let mut f = Feed::sql(r#"SELECT rate_of_change(value, 2, 1s, 'up') FROM "t/+" GROUP BY topic"#);
    assert!(f.send("t/a", 0, "10").is_empty());
    assert!(f.send("t/a", 1_000, "11").is_empty());
    assert!(f.send("t/a", 1_500, "0").is_empty(), "a fall: not watched");
    let out = f.send("t/a", 2_000, "5");
    assert_eq!(brief(&out), [("t/a", Signal::Fire, 1_500, 2_000, 0)]);
    assert_eq!(out[0].values["rate"], 10.0);
    assert!(f.send("t/a", 3_000, "9").is_empty(), "still rising 4/s");
    let out = f.send("t/a", 4_000, "10");
    assert_eq!(brief(&out), [("t/a", Signal::Clear, 1_500, 4_000, 1)]);
    assert_eq!(out[0].values["rate"], 1.0);
}

#[test]
fn pattern_sql_errors_point_at_line_and_column() {
    let e = Rule::from_sql(
        "r",
        "SELECT threshold(value > 8, 30s)\nFROM \"a\" GROUP BY topic, TUMBLE(1m)",
    )
    .expect_err("refused");
    assert_eq!((e.line, e.column), (2, 26), "{e}");
    let e = Rule::from_sql("r", "SELECT threshold(value > 8, 30 s) FROM \"a\"").expect_err("x");
    assert_eq!(e.line, 1, "{e}");
    let e = Rule::from_sql("r", "SELECT threshold(value > 8) FROM \"a\"").expect_err("x");
    assert_eq!((e.line, e.column), (1, 8), "{e}");
    assert!(e.message.contains("threshold(condition, for)"), "{e}");
    let e = Rule::from_sql("r", "SELECT zscore(value, 0.1, 3, 1) FROM \"a\"").expect_err("x");
    assert_eq!((e.line, e.column), (1, 30), "{e}");
    let e = Rule::from_sql("r", "SELECT zscore(value, 1.5, 3) FROM \"a\"").expect_err("x");
    assert!(e.message.contains("alpha"), "{e}");
    let e = Rule::from_sql("r", "SELECT avg(value), stale(1m) FROM \"a\"").expect_err("x");
    assert_eq!((e.line, e.column), (1, 8), "{e}");
    let e = Rule::from_sql(
        "r",
        "SELECT cusum(value, 0.5, 5, 10, 'sideways') FROM \"a\"",
    )
    .expect_err("x");
    assert_eq!((e.line, e.column), (1, 33), "{e}");
    let e = Rule::from_sql(
        "r",
        "SELECT stale(1m) FROM \"a\" WITH (lateness = '5s') GROUP BY topic",
    )
    .expect_err("x");
    assert!(e.message.contains("time.lateness"), "{e}");
    let e = Rule::from_sql(
        "r",
        "SELECT followed_by(topic = 'a/#/b', value > 1, 5s) FROM \"#\"",
    )
    .expect_err("x");
    assert_eq!((e.line, e.column), (1, 28), "{e}");
}

#[test]
fn pattern_json_errors_name_the_field() {
    let e = Rule::from_json(
        br#"{"name":"r","from":"a","operator":{"pattern":{"threshold":{"when":{"field":"value","op":"gt","value":1},"for":"0s"}}}}"#,
    )
    .expect_err("refused");
    assert_eq!(e.field, "operator.pattern.threshold.for", "{e}");
    let e = Rule::from_json(
        br#"{"name":"r","from":"a","operator":{"pattern":{"sequence":{"mode":"after","within":"1s","first":{},"then":{}}}}}"#,
    )
    .expect_err("refused");
    assert_eq!(e.field, "operator.pattern.sequence.mode", "{e}");
    let e = Rule::from_json(
        br#"{"name":"r","from":"a","operator":{"pattern":{"sequence":{"mode":"followed_by","within":"1s","first":{},"then":{"from":"b"}}}}}"#,
    )
    .expect_err("refused");
    assert_eq!(e.field, "operator.pattern.sequence.first", "{e}");
    let e = Rule::from_json(
        br#"{"name":"r","from":"a","operator":{"anomaly":{"zscore":{"alpha":0.1,"threshold":3,"clear":4}}}}"#,
    )
    .expect_err("refused");
    assert_eq!(e.field, "operator.anomaly.zscore.clear", "{e}");
    let e = Rule::from_json(
        br#"{"name":"r","from":"a","operator":{"aggregate":{"window":{"session":{"gap":"1m"}},"select":[{"name":"n","fn":"count"}],"stale_after":"10s"}}}"#,
    )
    .expect_err("refused");
    assert_eq!(e.field, "operator.aggregate.stale_after", "{e}");
}

#[test]
fn a_reading_is_late_only_for_what_its_own_key_has_done() {
    let mut f = Feed::sql(r#"SELECT threshold(value > 8, 10s) FROM "p/+/bar" GROUP BY topic"#);
    assert!(f.send("p/a/bar", 10_000, "9").is_empty());
    // b's clock runs behind a's: its reading is older than a's, and on
    // time for b.
    assert!(f.send("p/b/bar", 5_000, "9").is_empty());
    assert!(f.engine.advance(14_999).is_empty());
    let out = f.engine.advance(15_000);
    assert_eq!(brief(&out), [("p/b/bar", Signal::Fire, 5_000, 15_000, 0)]);
    // A runner's clock moved event time on; a reading received just before
    // it still counts for a key that has not acted since…
    assert!(f.send("p/a/bar", 14_000, "9.5").is_empty());
    // …not for a key whose deadline has passed after it: b fired at 15 s
    // on the strength of having held; a reading of 14 s would rewrite that.
    assert!(f.send("p/b/bar", 14_000, "1").is_empty());
    let m = f.engine.metrics("r").expect("rule");
    assert_eq!(m.dropped_late, 1);
    let out = f.engine.advance(20_000);
    assert_eq!(brief(&out), [("p/a/bar", Signal::Fire, 10_000, 20_000, 0)]);
    assert_eq!(out[0].values["value"], 9.5);
}
