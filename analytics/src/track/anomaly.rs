//! The anomaly detectors: EWMA z-score and two-sided CUSUM, per key.

use serde::{Deserialize, Serialize};

use super::{Emit, Held, Machine, Track};
use crate::engine::Signal;
use crate::pattern::{Cusum, Direction, Zscore};

/// The smallest standard deviation a score divides by, relative to the
/// mean's magnitude: a constant signal that moves scores very high, not
/// infinite (results are JSON: no infinities).
const SD_FLOOR: f64 = 1e-9;

fn floor_sd(sd: f64, mean: f64) -> f64 {
    sd.max(SD_FLOOR * mean.abs().max(1.0))
}

/// Exponentially weighted mean and variance of the readings so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ewma {
    /// Readings seen.
    n: u64,
    /// Weighted mean.
    mean: f64,
    /// Weighted variance.
    var: f64,
    /// Start of the anomaly being reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
}

/// Scores a reading against the readings before it, then learns it
/// (`mean += α·d`, `var = (1 − α)(var + α·d²)`, d = x − mean).
pub(super) fn zscore_step(track: &mut Track, z: &Zscore, h: Held, emit: &mut Emit<'_>) {
    let Machine::Zscore(s) = &mut track.machine else {
        return;
    };
    let Some(x) = h.v else { return };
    if s.n == 0 {
        s.n = 1;
        s.mean = x;
        s.var = 0.0;
        return;
    }
    let (mean, sd) = (s.mean, s.var.sqrt());
    let d = x - s.mean;
    let score = d / floor_sd(sd, s.mean);
    let scored = s.n >= u64::from(z.min_samples);
    let incr = z.alpha * d;
    let (new_mean, new_var) = (s.mean + incr, (1.0 - z.alpha) * (s.var + d * incr));
    if !(new_mean.is_finite() && new_var.is_finite() && score.is_finite()) {
        // Beyond what f64 holds (|x| near 1e154 and up): not a reading a
        // sensor sends; ignored so the state stays checkpointable.
        return;
    }
    (s.mean, s.var) = (new_mean, new_var);
    s.n += 1;
    if !scored {
        return;
    }
    let evidence = [
        ("value", x),
        ("score", score),
        ("mean", mean),
        ("stddev", sd),
    ];
    match s.since {
        None if z.direction.beyond(score, z.threshold) => {
            s.since = Some(h.t);
            track.signal(emit, Signal::Fire, h.t, h.t, &evidence);
        }
        Some(start) if !z.direction.beyond(score, z.clear.unwrap_or(z.threshold)) => {
            s.since = None;
            track.signal(emit, Signal::Clear, start, h.t, &evidence);
        }
        _ => {}
    }
}

/// CUSUM: the baseline (Welford over the first readings), the two sums and
/// when each last left 0, the side reporting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CusumState {
    /// Baseline readings seen (stops at `min_samples`).
    n: u64,
    /// Baseline mean.
    mean: f64,
    /// Baseline sum of squared deviations.
    m2: f64,
    /// Upper sum (rises).
    hi: f64,
    /// Lower sum (falls).
    lo: f64,
    /// When `hi` last left 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hi_from: Option<i64>,
    /// When `lo` last left 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lo_from: Option<i64>,
    /// The change reported: its start and side (+1 rise, −1 fall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<(i64, i8)>,
}

pub(super) fn cusum_step(track: &mut Track, c: &Cusum, h: Held, emit: &mut Emit<'_>) {
    let Machine::Cusum(s) = &mut track.machine else {
        return;
    };
    let Some(x) = h.v else { return };
    if s.n < u64::from(c.min_samples) {
        let n = s.n + 1;
        let d = x - s.mean;
        let mean = s.mean + d / n as f64;
        let m2 = s.m2 + d * (x - mean);
        // Beyond what f64 holds: ignored, the state stays checkpointable.
        if mean.is_finite() && m2.is_finite() {
            (s.n, s.mean, s.m2) = (n, mean, m2);
        }
        return;
    }
    let sd = (s.m2 / s.n as f64).sqrt();
    let z = (x - s.mean) / floor_sd(sd, s.mean);
    if !z.is_finite() || !(s.hi + z.abs()).is_finite() || !(s.lo + z.abs()).is_finite() {
        return;
    }
    let up = c.direction != Direction::Down;
    let down = c.direction != Direction::Up;
    if up {
        s.hi = (s.hi + z - c.drift).max(0.0);
        s.hi_from = if s.hi > 0.0 {
            s.hi_from.or(Some(h.t))
        } else {
            None
        };
    }
    if down {
        s.lo = (s.lo - z - c.drift).max(0.0);
        s.lo_from = if s.lo > 0.0 {
            s.lo_from.or(Some(h.t))
        } else {
            None
        };
    }
    let evidence = |score: f64, side: i8| {
        [
            ("value", x),
            ("score", score),
            ("direction", f64::from(side)),
            ("mean", s.mean),
            ("stddev", sd),
        ]
    };
    match s.since {
        None => {
            let (score, side, from) = if s.hi > c.threshold {
                (s.hi, 1, s.hi_from)
            } else if s.lo > c.threshold {
                (s.lo, -1, s.lo_from)
            } else {
                return;
            };
            let start = from.unwrap_or(h.t);
            s.since = Some((start, side));
            let ev = evidence(score, side);
            track.signal(emit, Signal::Fire, start, h.t, &ev);
        }
        Some((start, side)) => {
            let score = if side > 0 { s.hi } else { s.lo };
            if score <= 0.0 {
                s.since = None;
                let ev = evidence(score, side);
                track.signal(emit, Signal::Clear, start, h.t, &ev);
            }
        }
    }
}
