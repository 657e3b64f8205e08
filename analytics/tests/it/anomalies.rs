//! Anomaly detectors as a rule's user sees them: a spike or dip against
//! the EWMA (z-score), a lasting shift (CUSUM), with the score in the
//! result and a clear when the readings are back.

use plantd_analytics::{Engine, Event, Output, Rule, Signal};

fn run(sql: &str, readings: &[(i64, f64)]) -> Vec<Output> {
    let mut engine = Engine::new(vec![Rule::from_sql("r", sql).expect("rule")]).expect("engine");
    let mut out = Vec::new();
    for (i, (at, v)) in readings.iter().enumerate() {
        out.extend(engine.process(&Event {
            topic: "line1/m1/temp",
            payload: v.to_string().as_bytes(),
            received_at: *at,
            stream_seq: i as u64 + 1,
        }));
    }
    out
}

/// 20 ± 0.5, alternating, one reading a second.
fn steady(from: i64, n: usize) -> Vec<(i64, f64)> {
    (0..n)
        .map(|i| {
            (
                (from + i as i64) * 1_000,
                20.0 + if i % 2 == 0 { 0.5 } else { -0.5 },
            )
        })
        .collect()
}

#[test]
fn zscore_flags_a_spike_and_a_dip_and_clears_when_back() {
    let mut readings = steady(0, 30);
    readings.push((30_000, 30.0)); // spike
    readings.push((31_000, 20.0));
    readings.extend(steady(32, 30));
    readings.push((62_000, 12.0)); // dip
    readings.push((63_000, 19.5));
    let out = run(
        r#"SELECT zscore(value, 0.1, 3) FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    let got: Vec<(Signal, i64, i64)> = out
        .iter()
        .map(|o| (o.signal.expect("signal"), o.window_start, o.window_end))
        .collect();
    assert_eq!(
        got,
        [
            (Signal::Fire, 30_000, 30_000),
            (Signal::Clear, 30_000, 31_000),
            (Signal::Fire, 62_000, 62_000),
            (Signal::Clear, 62_000, 63_000),
        ],
        "{out:?}"
    );
    assert!(out[0].values["score"] > 3.0, "{:?}", out[0].values);
    assert_eq!(out[0].values["value"], 30.0);
    assert!((out[0].values["mean"] - 20.0).abs() < 0.5);
    assert!(out[2].values["score"] < -3.0, "a dip scores below 0");
    assert!(out[1].values["score"].abs() <= 3.0);

    // Spikes only: the dip is not reported.
    let up = run(
        r#"SELECT zscore(value, 0.1, 3, 10, 'up') FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    assert_eq!(up.len(), 2, "{up:?}");
    // Too few samples: nothing is scored.
    let early = run(
        r#"SELECT zscore(value, 0.1, 3, 50) FROM "line1/+/temp" GROUP BY topic"#,
        &readings[..32],
    );
    assert!(early.is_empty());
}

#[test]
fn zscore_hysteresis_holds_the_anomaly_until_well_within() {
    let mut readings = steady(0, 30);
    // A jump to a new level: the EWMA catches up over several readings.
    readings.extend((30..40).map(|i| (i * 1_000, 26.0)));
    let sharp = run(
        r#"SELECT zscore(value, 0.3, 3) FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    let held = run(
        r#"SELECT zscore(value, 0.3, 3, 10, 'both', 0.5) FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    let clear_at = |out: &[Output]| {
        out.iter()
            .find(|o| o.signal == Some(Signal::Clear))
            .map(|o| o.window_end)
    };
    assert_eq!(sharp[0].signal, Some(Signal::Fire));
    let (a, b) = (clear_at(&sharp), clear_at(&held));
    assert!(a.is_some() && b.is_some() && b > a, "{a:?} {b:?}");
}

#[test]
fn cusum_finds_a_small_lasting_shift_and_its_start() {
    // Baseline 20 ± 0.5 (standard deviation 0.5); then a shift of +0.75
    // (1.5 standard deviations): too small for a z-score of 3, found by
    // CUSUM.
    let mut readings = steady(0, 20);
    readings.extend((20..40).map(|i| (i * 1_000, 20.75 + if i % 2 == 0 { 0.5 } else { -0.5 })));
    readings.extend(steady(40, 100));
    let out = run(
        r#"SELECT cusum(value, 0.5, 4, 20) FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].signal, Some(Signal::Fire));
    assert_eq!(out[0].window_start, 20_000, "the change began at 20 s");
    assert!(out[0].window_end > 20_000 && out[0].window_end < 30_000);
    assert_eq!(out[0].values["direction"], 1.0);
    assert!(out[0].values["score"] > 4.0);
    assert_eq!(out[1].signal, Some(Signal::Clear));
    assert!(out[1].window_end > 40_000, "back after the shift ends");
    let z = run(
        r#"SELECT zscore(value, 0.1, 3) FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    assert!(z.is_empty(), "the z-score misses it: {z:?}");
    // Falls only: the rise is not reported.
    let down = run(
        r#"SELECT cusum(value, 0.5, 4, 20, 'down') FROM "line1/+/temp" GROUP BY topic"#,
        &readings,
    );
    assert!(down.is_empty(), "{down:?}");
}

#[test]
fn anomaly_json_form() {
    let rule = Rule::from_json(
        br#"{"name":"spikes","from":"line1/+/temp","group_by":"topic",
             "operator":{"anomaly":{"zscore":{"field":["temp","c"],"alpha":0.1,"threshold":3,
               "min_samples":20,"direction":"up","clear":2}}}}"#,
    )
    .expect("rule");
    assert_eq!(
        Rule::from_sql(
            "spikes",
            r#"SELECT zscore(payload.temp.c, 0.1, 3, 20, 'up', 2) FROM "line1/+/temp" GROUP BY topic"#
        )
        .expect("sql"),
        rule
    );
    let cusum = Rule::from_json(
        br#"{"name":"shift","from":"line1/+/temp",
             "operator":{"anomaly":{"cusum":{"drift":0.5,"threshold":5}}}}"#,
    )
    .expect("rule");
    assert_eq!(
        Rule::from_sql(
            "shift",
            r#"SELECT cusum(value, 0.5, 5) FROM "line1/+/temp""#
        )
        .expect("sql"),
        cusum
    );
}

#[test]
fn absurd_readings_leave_detectors_checkpointable() {
    let mut readings = steady(0, 30);
    readings.push((30_000, 1e300));
    readings.push((31_000, -1e300));
    readings.extend(steady(32, 5));
    for sql in [
        r#"SELECT zscore(value, 0.1, 3) FROM "line1/+/temp" GROUP BY topic"#,
        r#"SELECT cusum(value, 0.5, 5) FROM "line1/+/temp" GROUP BY topic"#,
    ] {
        let rule = Rule::from_sql("r", sql).expect("rule");
        let mut engine = Engine::new(vec![rule.clone()]).expect("engine");
        for (i, (at, v)) in readings.iter().enumerate() {
            engine.process(&Event {
                topic: "line1/m1/temp",
                payload: v.to_string().as_bytes(),
                received_at: *at,
                stream_seq: i as u64 + 1,
            });
        }
        let json = serde_json::to_string(&engine.checkpoint()).expect("encode");
        let state = serde_json::from_str(&json).expect("decode: no infinities");
        Engine::restore(vec![rule], state).expect("restore");
    }
}
