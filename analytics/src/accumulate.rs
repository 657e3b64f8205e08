//! [`Acc`]: the running state of one field in one window — count, sum,
//! mean and variance (Welford), min, max, first, last, and when a rule asks
//! for them a DDSketch (percentiles) and a HyperLogLog++ (distinct count).
//! Every part merges, which session windows need when two sessions join.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, DefaultHasher};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use crate::field::Scalar;
use crate::rule::AggFn;

/// HyperLogLog++ precision: 2^12 registers, about 1.6% standard error, at
/// most 3 KiB per window once dense (sparse and far smaller below a few
/// hundred distinct values).
const HLL_PRECISION: u8 = 12;

/// The hasher behind distinct counts: SipHash-1-3 with fixed keys, so a
/// checkpointed sketch restored by another process keeps counting the same
/// values as the same (a per-process random seed would not).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StableHash;

impl BuildHasher for StableHash {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        DefaultHasher::new()
    }
}

type Hll = HyperLogLogPlus<u64, StableHash>;

/// What one field's accumulator must keep, from the rule's functions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// A percentile reads this field.
    pub sketch: bool,
    /// A distinct count reads this field.
    pub distinct: bool,
}

/// Serde for an `f64` that may have overflowed to ±infinity (a sum of
/// readings near `f64::MAX`): JSON has no infinities and serde_json would
/// write `null`, which reads back as an error — the checkpoint would be
/// lost. Finite values stay JSON numbers; the others are the strings
/// `"inf"`, `"-inf"`, `"nan"`.
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(D::Error::custom(format!("not a number: {other:?}"))),
            },
        }
    }
}

/// One field's state in one window.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Acc {
    /// Numeric readings.
    count: u64,
    /// Their sum.
    #[serde(with = "any_f64")]
    sum: f64,
    /// Running mean (Welford).
    #[serde(with = "any_f64")]
    mean: f64,
    /// Sum of squared deviations from the mean (Welford).
    #[serde(with = "any_f64")]
    m2: f64,
    /// Minimum (meaningful when `count > 0`).
    min: f64,
    /// Maximum (meaningful when `count > 0`).
    max: f64,
    /// Earliest reading: (event time, value); ties keep the first applied.
    first: (i64, f64),
    /// Latest reading: (event time, value); ties keep the last applied.
    last: (i64, f64),
    /// Readings of any kind, text included.
    seen: u64,
    /// Whether a percentile reads this field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    wants_sketch: bool,
    /// Percentiles; made with the first number (an empty sketch holds
    /// infinities, which JSON cannot carry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sketch: Option<Box<DDSketch>>,
    /// Distinct values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hll: Option<Box<Hll>>,
}

impl std::fmt::Debug for Acc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acc")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("sketch", &self.sketch.is_some())
            .field("hll", &self.hll.is_some())
            .finish_non_exhaustive()
    }
}

impl Acc {
    /// An empty accumulator keeping what `needs` says.
    pub fn new(needs: Needs) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: 0.0,
            max: 0.0,
            first: (0, 0.0),
            last: (0, 0.0),
            seen: 0,
            wants_sketch: needs.sketch,
            sketch: None,
            // Precision 12 is within the crate's bounds (4..=18).
            hll: needs
                .distinct
                .then(|| Hll::new(HLL_PRECISION, StableHash).ok().map(Box::new))
                .flatten(),
        }
    }

    /// Adds one reading taken at event time `t`.
    #[inline]
    pub fn add(&mut self, t: i64, value: Scalar<'_>) {
        self.seen += 1;
        if let Some(hll) = self.hll.as_deref_mut() {
            hll.insert(&distinct_hash(value));
        }
        let Scalar::Num(x) = value else { return };
        if self.count == 0 {
            self.min = x;
            self.max = x;
            self.first = (t, x);
            self.last = (t, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            if t < self.first.0 {
                self.first = (t, x);
            }
            if t >= self.last.0 {
                self.last = (t, x);
            }
        }
        self.count += 1;
        self.sum += x;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        if self.wants_sketch {
            self.sketch
                .get_or_insert_with(|| Box::new(DDSketch::new(Config::defaults())))
                .add(x);
        }
    }

    /// Folds `other` (a later session) into `self`.
    pub fn merge(&mut self, other: &Acc) {
        self.seen += other.seen;
        if let (Some(a), Some(b)) = (self.hll.as_deref_mut(), other.hll.as_deref()) {
            // Same precision by construction: merging cannot fail.
            let _ = a.merge(b);
        }
        match (self.sketch.as_deref_mut(), other.sketch.as_deref()) {
            // Same config by construction: merging cannot fail.
            (Some(a), Some(b)) => _ = a.merge(b),
            (None, Some(b)) => self.sketch = Some(Box::new(b.clone())),
            _ => {}
        }
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            let (hll, sketch, seen) = (self.hll.take(), self.sketch.take(), self.seen);
            *self = other.clone();
            (self.hll, self.sketch, self.seen) = (hll, sketch, seen);
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 >= self.last.0 {
            self.last = other.last;
        }
    }

    /// The value of `func`, or `None` when it is undefined (no numeric
    /// reading; a rate from fewer than two instants).
    pub fn value(&mut self, func: AggFn, readings: u64) -> Option<f64> {
        let defined = self.count > 0;
        match func {
            AggFn::CountAll => Some(readings as f64),
            AggFn::Count => Some(self.seen as f64),
            AggFn::Sum => Some(self.sum),
            AggFn::Avg => defined.then(|| self.sum / self.count as f64),
            AggFn::Min => defined.then_some(self.min),
            AggFn::Max => defined.then_some(self.max),
            AggFn::Stddev => defined.then(|| (self.m2 / self.count as f64).max(0.0).sqrt()),
            AggFn::First => defined.then_some(self.first.1),
            AggFn::Last => defined.then_some(self.last.1),
            AggFn::Rate => {
                let seconds = (self.last.0 - self.first.0) as f64 / 1000.0;
                (defined && seconds > 0.0).then(|| (self.last.1 - self.first.1) / seconds)
            }
            AggFn::Percentile(q) => self
                .sketch
                .as_deref()
                .and_then(|s| s.quantile(q).ok().flatten()),
            AggFn::DistinctCount => self.hll.as_deref_mut().map(|h| h.count().round()),
        }
    }
}

/// The 64 bits a distinct count hashes: a number's bits (with -0 as 0),
/// or text hashed with [`StableHash`].
fn distinct_hash(value: Scalar<'_>) -> u64 {
    match value {
        Scalar::Num(x) => (if x == 0.0 { 0.0f64 } else { x }).to_bits(),
        Scalar::Str(s) => StableHash.hash_one(s),
    }
}

/// The values of one window, by output name.
pub type Values = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    fn acc_of(values: &[(i64, f64)], needs: Needs) -> Acc {
        let mut a = Acc::new(needs);
        for (t, v) in values {
            a.add(*t, Scalar::Num(*v));
        }
        a
    }

    #[test]
    fn moments_first_last_rate() {
        let mut a = acc_of(&[(1000, 2.0), (0, 4.0), (3000, 8.0)], Needs::default());
        assert_eq!(a.value(AggFn::Avg, 3), Some(14.0 / 3.0));
        assert_eq!(a.value(AggFn::First, 3), Some(4.0));
        assert_eq!(a.value(AggFn::Last, 3), Some(8.0));
        assert_eq!(a.value(AggFn::Rate, 3), Some((8.0 - 4.0) / 3.0));
        let sd = a.value(AggFn::Stddev, 3).expect("ok");
        assert!((sd - 2.494_438_257_849_294).abs() < 1e-12, "{sd}");
    }

    #[test]
    fn merge_equals_one_pass() {
        let needs = Needs {
            sketch: true,
            distinct: true,
        };
        let xs: Vec<(i64, f64)> = (0..100).map(|i| (i, (i * 7 % 13) as f64)).collect();
        let mut whole = acc_of(&xs, needs);
        let mut left = acc_of(&xs[..40], needs);
        left.merge(&acc_of(&xs[40..], needs));
        for f in [
            AggFn::Avg,
            AggFn::Min,
            AggFn::Max,
            AggFn::Sum,
            AggFn::First,
            AggFn::Last,
        ] {
            assert_eq!(left.value(f, 100), whole.value(f, 100), "{f:?}");
        }
        let (a, b) = (
            left.value(AggFn::Stddev, 100).expect("ok"),
            whole.value(AggFn::Stddev, 100).expect("ok"),
        );
        assert!((a - b).abs() < 1e-9);
        assert_eq!(left.value(AggFn::DistinctCount, 100), Some(13.0));
        let p50 = whole.value(AggFn::Percentile(0.5), 100).expect("ok");
        assert!((p50 - 6.0).abs() <= 6.0 * 0.02, "{p50}");
    }
}
