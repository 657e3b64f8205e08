//! Patterns and detectors (threshold, stale, absence, z-score, rate of
//! change, CUSUM) against reference models the test computes
//! itself, over random in-order streams of several keys: the engine's
//! watermark timers (fired by other keys' readings and by `advance`) give
//! exactly the signals a batch computation over each key's readings gives.

use std::collections::BTreeMap;

use plantd_analytics::{Engine, Event, Output, Rule, Signal};
use proptest::prelude::*;

const HOLD: i64 = 3_000;
const AFTER: i64 = 5_000;
const WITHIN: i64 = 4_000;
const ALPHA: f64 = 0.3;
const K: f64 = 1.5;
const MIN: u64 = 3;

fn rules() -> Vec<Rule> {
    [
        (
            "threshold",
            r#"SELECT threshold(value >= 5, 3s) FROM "k/+" GROUP BY topic"#,
        ),
        ("stale", r#"SELECT stale(5s) FROM "k/+" GROUP BY topic"#),
        (
            "absence",
            r#"SELECT not_followed_by(value = 0, value = 9, 4s) FROM "k/+" GROUP BY topic"#,
        ),
        (
            "zscore",
            r#"SELECT zscore(value, 0.3, 1.5, 3) FROM "k/+" GROUP BY topic"#,
        ),
        (
            "rate",
            r#"SELECT rate_of_change(value, 3, 1s) FROM "k/+" GROUP BY topic"#,
        ),
        (
            "cusum",
            r#"SELECT cusum(value, 0.25, 2, 4) FROM "k/+" GROUP BY topic"#,
        ),
    ]
    .iter()
    .map(|(name, sql)| Rule::from_sql(name, sql).expect("rule"))
    .collect()
}

/// (rule, key, window_start, revision) → (signal, window_end, evidence)
type Signals = BTreeMap<(String, String, i64, u32), (Signal, i64, Vec<(String, f64)>)>;

fn put(
    into: &mut Signals,
    rule: &str,
    key: &str,
    (signal, start, end, rev): (Signal, i64, i64, u32),
    evidence: &[(&str, f64)],
) {
    let mut ev: Vec<(String, f64)> = evidence
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    ev.sort_by(|a, b| a.0.cmp(&b.0));
    let old = into.insert((rule.into(), key.into(), start, rev), (signal, end, ev));
    assert!(old.is_none(), "one signal per id");
}

fn from_engine(out: &[Output], keep: &[&str]) -> Signals {
    let mut s = Signals::new();
    for o in out {
        let ev: Vec<(&str, f64)> = keep
            .iter()
            .filter_map(|k| o.values.get(*k).map(|v| (*k, *v)))
            .collect();
        put(
            &mut s,
            &o.rule,
            &o.key,
            (
                o.signal.expect("signal"),
                o.window_start,
                o.window_end,
                o.revision,
            ),
            &ev,
        );
    }
    s
}

/// The threshold, in batch: each maximal run of readings ≥ 5 starting at
/// `s` and broken by a reading at `e` (or still open at `end`) fires at
/// `s + 3 s` if that is ≤ `e` (≤ `end`), and clears at `e` if it fired.
fn threshold(key: &str, readings: &[(i64, f64)], end: i64, into: &mut Signals) {
    let mut i = 0;
    while i < readings.len() {
        if readings[i].1 < 5.0 {
            i += 1;
            continue;
        }
        let s = readings[i].0;
        let mut j = i;
        while j < readings.len() && readings[j].1 >= 5.0 {
            j += 1;
        }
        let last_true = readings[j - 1].1;
        let broken = readings.get(j).copied();
        let until = broken.map_or(end, |(e, _)| e);
        if s + HOLD <= until {
            // The evidence: the latest reading before the fire (a reading
            // at the very instant comes after it).
            let v = readings[i..j]
                .iter()
                .take_while(|(t, _)| *t < s + HOLD)
                .last()
                .map_or(last_true, |r| r.1);
            put(
                into,
                "threshold",
                key,
                (Signal::Fire, s, s + HOLD, 0),
                &[("value", v)],
            );
            if let Some((e, ev)) = broken {
                put(
                    into,
                    "threshold",
                    key,
                    (Signal::Clear, s, e, 1),
                    &[("value", ev)],
                );
            }
        }
        i = j;
    }
}

/// Stale, in batch: between consecutive readings `p`, `n` with
/// `n − p ≥ 5 s`, fire at `p + 5 s` and clear at `n`; after the last, fire
/// if `end ≥ p + 5 s`.
fn stale(key: &str, readings: &[(i64, f64)], end: i64, into: &mut Signals) {
    for (i, (p, _)) in readings.iter().enumerate() {
        let next = readings.get(i + 1).map(|r| r.0);
        if next.unwrap_or(end) - p >= AFTER {
            put(into, "stale", key, (Signal::Fire, *p, p + AFTER, 0), &[]);
            if let Some(n) = next {
                put(into, "stale", key, (Signal::Clear, *p, n, 1), &[]);
            }
        }
    }
}

/// Absence, as a plain loop without timers: a 0 starts a wait (none
/// pending or firing), a 9 ends it; a wait reaching 4 s fires, the next 9
/// clears.
fn absence(key: &str, readings: &[(i64, f64)], end: i64, into: &mut Signals) {
    let (mut waiting, mut fired): (Option<i64>, Option<i64>) = (None, None);
    let mut expire = |waiting: &mut Option<i64>, fired: &mut Option<i64>, now: i64| {
        if let Some(a) = *waiting
            && a + WITHIN <= now
        {
            put(into, "absence", key, (Signal::Fire, a, a + WITHIN, 0), &[]);
            *fired = Some(a);
            *waiting = None;
        }
    };
    let mut clears = Vec::new();
    for (t, v) in readings {
        expire(&mut waiting, &mut fired, *t);
        if *v == 9.0
            && waiting.take().is_none()
            && let Some(a) = fired.take()
        {
            clears.push((a, *t));
        }
        if *v == 0.0 && waiting.is_none() && fired.is_none() {
            waiting = Some(*t);
        }
    }
    expire(&mut waiting, &mut fired, end);
    for (a, t) in clears {
        put(into, "absence", key, (Signal::Clear, a, t, 1), &[]);
    }
}

/// The z-score from its definition: EWMA mean and variance of the earlier
/// readings, scored from the 4th reading on.
fn zscore(key: &str, readings: &[(i64, f64)], into: &mut Signals) {
    let (mut n, mut mean, mut var) = (0u64, 0.0f64, 0.0f64);
    let mut since: Option<i64> = None;
    for (t, x) in readings {
        if n == 0 {
            (n, mean, var) = (1, *x, 0.0);
            continue;
        }
        let sd = var.sqrt().max(1e-9 * mean.abs().max(1.0));
        let z = (x - mean) / sd;
        let d = x - mean;
        mean += ALPHA * d;
        var = (1.0 - ALPHA) * (var + ALPHA * d * d);
        n += 1;
        if n - 1 < MIN {
            continue;
        }
        match since {
            None if z.abs() > K => {
                since = Some(*t);
                put(
                    into,
                    "zscore",
                    key,
                    (Signal::Fire, *t, *t, 0),
                    &[("value", *x), ("score", z)],
                );
            }
            Some(s) if z.abs() <= K => {
                since = None;
                put(
                    into,
                    "zscore",
                    key,
                    (Signal::Clear, s, *t, 1),
                    &[("value", *x), ("score", z)],
                );
            }
            _ => {}
        }
    }
}

/// Rate of change between consecutive readings, beyond 3 per second
/// either way.
fn rate(key: &str, readings: &[(i64, f64)], into: &mut Signals) {
    let mut since: Option<i64> = None;
    for pair in readings.windows(2) {
        let ((tp, vp), (t, v)) = (pair[0], pair[1]);
        let r = (v - vp) / ((t - tp) as f64 / 1_000.0);
        match since {
            None if r.abs() > 3.0 => {
                since = Some(tp);
                put(
                    into,
                    "rate",
                    key,
                    (Signal::Fire, tp, t, 0),
                    &[("value", v), ("rate", r)],
                );
            }
            Some(s) if r.abs() <= 3.0 => {
                since = None;
                put(
                    into,
                    "rate",
                    key,
                    (Signal::Clear, s, t, 1),
                    &[("value", v), ("rate", r)],
                );
            }
            _ => {}
        }
    }
}

/// CUSUM from its definition: the baseline of the first 4 readings, then
/// the two sums with drift 0.25 against 2; a fire dates from when its sum
/// last left 0.
fn cusum(key: &str, readings: &[(i64, f64)], into: &mut Signals) {
    let (mut n, mut mean, mut m2) = (0u64, 0.0f64, 0.0f64);
    let (mut hi, mut lo) = (0.0f64, 0.0f64);
    let (mut hi_from, mut lo_from): (Option<i64>, Option<i64>) = (None, None);
    let mut since: Option<(i64, bool)> = None;
    for (t, x) in readings {
        if n < 4 {
            n += 1;
            let d = x - mean;
            mean += d / n as f64;
            m2 += d * (x - mean);
            continue;
        }
        let sd = (m2 / n as f64).sqrt().max(1e-9 * mean.abs().max(1.0));
        let z = (x - mean) / sd;
        hi = (hi + z - 0.25).max(0.0);
        lo = (lo - z - 0.25).max(0.0);
        hi_from = if hi > 0.0 { hi_from.or(Some(*t)) } else { None };
        lo_from = if lo > 0.0 { lo_from.or(Some(*t)) } else { None };
        match since {
            None if hi > 2.0 || lo > 2.0 => {
                let up = hi > 2.0;
                let (score, from) = if up { (hi, hi_from) } else { (lo, lo_from) };
                let start = from.unwrap_or(*t);
                since = Some((start, up));
                put(
                    into,
                    "cusum",
                    key,
                    (Signal::Fire, start, *t, 0),
                    &[("value", *x), ("score", score)],
                );
            }
            Some((start, up)) => {
                let score = if up { hi } else { lo };
                if score <= 0.0 {
                    since = None;
                    put(
                        into,
                        "cusum",
                        key,
                        (Signal::Clear, start, *t, 1),
                        &[("value", *x), ("score", score)],
                    );
                }
            }
            None => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn signals_equal_the_reference_models(
        raw in prop::collection::vec((0..3u8, 1..3_000i64, 0..10u8), 1..200),
    ) {
        let mut engine = Engine::new(rules()).expect("engine");
        let mut out = Vec::new();
        let mut per_key: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        let mut t = 1_000_000i64;
        for (seq, (k, dt, v)) in raw.iter().enumerate() {
            t += dt;
            let topic = format!("k/{k}");
            let payload = v.to_string();
            out.extend(engine.process(&Event {
                topic: &topic,
                payload: payload.as_bytes(),
                received_at: t,
                stream_seq: seq as u64 + 1,
            }));
            per_key.entry(topic).or_default().push((t, f64::from(*v)));
        }
        let end = t + 10_000;
        out.extend(engine.advance(end));

        let mut want = Signals::new();
        for (key, readings) in &per_key {
            threshold(key, readings, end, &mut want);
            stale(key, readings, end, &mut want);
            absence(key, readings, end, &mut want);
            zscore(key, readings, &mut want);
            rate(key, readings, &mut want);
            cusum(key, readings, &mut want);
        }
        let mut got = from_engine(&out, &["rate", "score", "value"]);
        // Stale and absence carry no value; their other evidence is fixed.
        for ((rule, ..), (_, _, ev)) in got.iter_mut() {
            if rule == "stale" || rule == "absence" {
                ev.clear();
            }
        }
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.0, w.0);
            prop_assert_eq!(g.1.0, w.1.0, "{:?}", g.0);
            prop_assert_eq!(g.1.1, w.1.1, "{:?}", g.0);
            prop_assert_eq!(g.1.2.len(), w.1.2.len(), "{:?}", g.0);
            for ((gk, gv), (wk, wv)) in g.1.2.iter().zip(&w.1.2) {
                prop_assert_eq!(gk, wk);
                prop_assert!((gv - wv).abs() <= 1e-9 * wv.abs().max(1.0), "{:?} {} {} {}", g.0, gk, gv, wv);
            }
        }
    }
}
