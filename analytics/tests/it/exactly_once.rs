//! Exactly once across restarts: an engine checkpointed at random points,
//! its checkpoint written as JSON and read back, restored, and fed the
//! stream again from any point before the checkpoint (a redelivery) emits
//! exactly the outputs of an engine that never stopped.

use plantd_analytics::{Engine, Event, Output, Rule, State};
use proptest::prelude::*;

fn rules() -> Vec<Rule> {
    let sql = [
        (
            "tumble",
            r#"SELECT avg(value), count(*), percentile(value, 0.9), count(DISTINCT value), rate(value), stddev(value)
               FROM "plant/+/v" WITH (delay = '1s', lateness = '5s') GROUP BY topic, TUMBLE(10s)"#,
        ),
        (
            "hop",
            r#"SELECT min(value), max(value), first(value), last(value)
               FROM "plant/#" WITH (lateness = '3s') WHERE value >= 2 GROUP BY '*', HOP(20s, 5s)"#,
        ),
        (
            "session",
            r#"SELECT sum(value), count(*) FROM "plant/+/v" WITH (delay = '2s', lateness = '4s')
               GROUP BY topic, SESSION(3s)"#,
        ),
        (
            "stale_windows",
            r#"SELECT avg(value) FROM "plant/+/v" WITH (delay = '1s', lateness = '5s', stale_after = '2s')
               GROUP BY topic, TUMBLE(10s)"#,
        ),
        (
            "threshold",
            r#"SELECT threshold(value >= 4, 3s) FROM "plant/+/v" WITH (delay = '4s') GROUP BY topic"#,
        ),
        (
            "stale",
            r#"SELECT stale(5s) FROM "plant/+/v" WITH (delay = '2s') GROUP BY topic"#,
        ),
        (
            "absence",
            r#"SELECT not_followed_by(value = 1, value >= 8, 6s) FROM "plant/+/v" WITH (delay = '3s')
               GROUP BY topic"#,
        ),
        (
            "followed",
            r#"SELECT followed_by(topic = 'plant/+/v' AND value < 2, value > 6, 4s) FROM "plant/#"
               GROUP BY topic_level(1)"#,
        ),
        (
            "rate",
            r#"SELECT rate_of_change(value, 5, 1s) FROM "plant/+/v" WITH (delay = '5s') GROUP BY topic"#,
        ),
        (
            "zscore",
            r#"SELECT zscore(value, 0.2, 1.5, 3) FROM "plant/+/v" WITH (delay = '1s') GROUP BY topic"#,
        ),
        (
            "cusum",
            r#"SELECT cusum(value, 0.25, 2, 4) FROM "plant/+/v" WITH (delay = '1s') GROUP BY '*'"#,
        ),
    ];
    sql.iter()
        .map(|(name, text)| Rule::from_sql(name, text).expect("rule"))
        .collect()
}

/// An owned event of the generated stream.
#[derive(Debug, Clone)]
struct Reading {
    topic: String,
    payload: String,
    at: i64,
    seq: u64,
}

impl Reading {
    fn event(&self) -> Event<'_> {
        Event {
            topic: &self.topic,
            payload: self.payload.as_bytes(),
            received_at: self.at,
            stream_seq: self.seq,
        }
    }
}

/// A stream: time moves forward ~700 ms a reading, with readings up to
/// 9 s out of order (some on time, some late, some beyond lateness).
fn stream() -> impl Strategy<Value = Vec<Reading>> {
    prop::collection::vec((0..4u8, 0..10u8, 0..9_000i64, 0..6u8), 20..300).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (key, value, back, kind))| Reading {
                topic: format!("plant/m{key}/v"),
                payload: if kind == 0 {
                    "n/a".to_owned()
                } else {
                    value.to_string()
                },
                at: i as i64 * 700 - if kind < 2 { back } else { 0 },
                seq: i as u64 + 1,
            })
            .collect()
    })
}

/// Feeds one reading; every 25th, the caller's clock also moves event
/// time on (`advance`), as an idle stream's driver does: patterns fire on
/// it. Re-fed after a restore, an `advance` at or before the restored
/// event time changes nothing.
fn feed(engine: &mut Engine, i: usize, r: &Reading, out: &mut Vec<Output>) {
    out.extend(engine.process(&r.event()));
    if i % 25 == 24 {
        out.extend(engine.advance(r.at + 7_000));
    }
}

fn run(stream: &[Reading], end: i64) -> Vec<Output> {
    let mut engine = Engine::new(rules()).expect("engine");
    let mut out = Vec::new();
    for (i, r) in stream.iter().enumerate() {
        feed(&mut engine, i, r, &mut out);
    }
    out.extend(engine.advance(end));
    out
}

fn round_trip(state: &State) -> State {
    let json = serde_json::to_string(state).expect("encode");
    serde_json::from_str(&json).expect("decode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn restored_engines_emit_what_an_uninterrupted_one_emits(
        stream in stream(),
        crashes in prop::collection::vec((any::<prop::sample::Index>(), 0..40usize), 1..5),
    ) {
        let end = stream.len() as i64 * 700 + 60_000;
        let reference = run(&stream, end);

        // Crash points in increasing order; each restart re-feeds from up to
        // 40 events before the checkpoint (the redelivery window).
        let mut cuts: Vec<(usize, usize)> = crashes
            .iter()
            .map(|(i, back)| (i.index(stream.len()), *back))
            .collect();
        cuts.sort();
        let mut engine = Engine::new(rules()).expect("engine");
        let mut out = Vec::new();
        let mut next = 0;
        for (cut, back) in cuts {
            for (i, r) in stream.iter().enumerate().take(cut).skip(next.min(cut)) {
                feed(&mut engine, i, r, &mut out);
            }
            next = next.max(cut);
            let state = round_trip(&engine.checkpoint());
            engine = Engine::restore(rules(), state).expect("restore");
            next = next.saturating_sub(back);
        }
        for (i, r) in stream.iter().enumerate().skip(next) {
            feed(&mut engine, i, r, &mut out);
        }
        out.extend(engine.advance(end));

        prop_assert_eq!(out.len(), reference.len());
        for (got, want) in out.iter().zip(&reference) {
            prop_assert_eq!(got, want);
        }
        let mut ids: Vec<String> = out.iter().map(Output::id).collect();
        ids.sort();
        let total = ids.len();
        ids.dedup();
        prop_assert_eq!(ids.len(), total, "an id names one result");
    }
}

#[test]
fn a_changed_rule_refuses_its_old_state() {
    let mut engine = Engine::new(rules()).expect("engine");
    engine.process(&Event {
        topic: "plant/m1/v",
        payload: b"3",
        received_at: 0,
        stream_seq: 1,
    });
    let mut state = engine.checkpoint();
    let mut changed = rules();
    changed[0] = Rule::from_sql(
        "tumble",
        r#"SELECT avg(value) FROM "plant/+/v" GROUP BY topic, TUMBLE(1m)"#,
    )
    .expect("rule");
    let err = Engine::restore(changed.clone(), state.clone()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "rule \"tumble\" changed since the checkpoint"
    );
    state.forget("tumble");
    let restored = Engine::restore(changed, state).expect("restore");
    assert_eq!(restored.keys("tumble"), 0);
    assert_eq!(restored.keys("session"), 1);
}

/// The generated streams reach the paths the property is about: late
/// readings that revise a window, readings dropped beyond lateness, and
/// redeliveries ignored after a restore.
#[test]
fn the_generated_streams_revise_drop_and_redeliver() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut revised, mut dropped, mut duplicates) = (0, 0, 0);
    let mut signals: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
    for _ in 0..16 {
        let stream = stream().new_tree(&mut runner).expect("stream").current();
        for o in run(&stream, stream.len() as i64 * 700 + 60_000) {
            let e = signals.entry(o.rule.clone()).or_default();
            match o.signal {
                Some(plantd_analytics::Signal::Fire) => e.0 += 1,
                Some(plantd_analytics::Signal::Clear) => e.1 += 1,
                None => {}
            }
        }
        let mut engine = Engine::new(rules()).expect("engine");
        let half = stream.len() / 2;
        for r in &stream[..half] {
            engine.process(&r.event());
        }
        let state = round_trip(&engine.checkpoint());
        let mut engine = Engine::restore(rules(), state).expect("restore");
        for r in &stream[half.saturating_sub(10)..] {
            engine.process(&r.event());
        }
        for rule in ["tumble", "hop", "session", "threshold", "absence"] {
            let m = engine.metrics(rule).expect("rule");
            revised += m.late_updates;
            dropped += m.dropped_late;
            duplicates += m.duplicates;
        }
    }
    assert!(
        revised > 0 && dropped > 0 && duplicates > 0,
        "{revised} {dropped} {duplicates}"
    );
    // Every pattern and detector fires and clears in these streams.
    for rule in [
        "threshold",
        "stale",
        "absence",
        "followed",
        "rate",
        "zscore",
        "cusum",
    ] {
        let (fire, clear) = signals.get(rule).copied().unwrap_or_default();
        assert!(
            fire > 0 && clear > 0,
            "{rule}: {fire} fires, {clear} clears"
        );
    }
}

/// Readings near `f64::MAX` overflow a window's sum to infinity: the
/// checkpoint still reads back (JSON has no infinity), the overflowed value
/// is absent from the result instead of `null`, and the rest is exact.
#[test]
fn an_overflowing_sum_keeps_its_checkpoint_and_is_left_out_of_the_result() {
    let rule = Rule::from_sql(
        "huge",
        r#"SELECT sum(value), max(value), count(*) FROM "t" GROUP BY topic, TUMBLE(1m)"#,
    )
    .expect("rule");
    let mut engine = Engine::new(vec![rule.clone()]).expect("engine");
    let ev = |seq, at, v: &'static str| plantd_analytics::Event {
        topic: "t",
        payload: v.as_bytes(),
        received_at: at,
        stream_seq: seq,
    };
    assert!(engine.process(&ev(1, 1_000, "1e308")).is_empty());
    assert!(engine.process(&ev(2, 2_000, "1e308")).is_empty());
    let state = round_trip(&engine.checkpoint());
    let mut engine = Engine::restore(vec![rule], state).expect("restores");
    let out = engine.process(&ev(3, 61_000, "1"));
    assert_eq!(out.len(), 1);
    let values = &out[0].values;
    assert!(!values.contains_key("sum_value"), "{values:?}");
    assert_eq!(values["max_value"], 1e308);
    assert_eq!(values["count"], 2.0);
    let json = serde_json::to_string(&out[0]).expect("json");
    let back: Output = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, out[0]);
}

/// A rule's keys borrowed from the engine ([`Engine::checkpoint_rule`],
/// what a commit encodes) serialise to exactly the JSON of the owned
/// checkpoint ([`Engine::checkpoint`], what a restore reads) — for every
/// kind of state: windows of each kind, sketches, stale tracking,
/// patterns and detectors.
#[test]
fn borrowed_key_checkpoints_encode_like_owned_ones() {
    let rules = rules();
    let mut engine = Engine::new(rules.clone()).expect("engine");
    for i in 0..200u64 {
        let topic = format!("plant/m{}/v", i % 3);
        let value = ((i * 7) % 11) as f64;
        engine.process(&Event {
            topic: &topic,
            payload: value.to_string().as_bytes(),
            received_at: 1_000 * i as i64,
            stream_seq: i + 1,
        });
    }
    let owned = engine.checkpoint();
    for (index, rs) in owned.rules.iter().enumerate() {
        let borrowed = engine.checkpoint_rule(index).expect("the rule");
        assert_eq!(borrowed.max_event, rs.max_event, "{}", rs.rule.name);
        assert_eq!(borrowed.keys.len(), rs.keys.len(), "{}", rs.rule.name);
        assert!(!rs.keys.is_empty(), "{} has state", rs.rule.name);
        for (b, o) in borrowed.keys.iter().zip(&rs.keys) {
            assert_eq!(
                serde_json::to_string(b).expect("encode"),
                serde_json::to_string(o).expect("encode"),
                "{}",
                rs.rule.name
            );
            assert_eq!((b.key(), b.last_seq()), (o.key.as_str(), o.last_seq));
        }
    }
    assert!(engine.checkpoint_rule(rules.len()).is_none());
}
