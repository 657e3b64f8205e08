//! `count_over_time` and `rate` over the [`LogIndex`], grouped by labels,
//! for charts.
//!
//! The range `[from, to)` is cut into steps of `step`; each series (one per
//! distinct value of the `by` labels) has one point per step: the number of
//! matching records whose time falls in it (`count_over_time`), or that
//! number divided by the step in seconds (`rate`, lines per second).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use crate::index::{Direction, LogIndex, RecordTest, SourceMatch};
use crate::query::Filter;
use crate::record::Level;

/// Most points per series.
pub const MAX_POINTS: i64 = 11_000;

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsFunction {
    /// Lines per step.
    #[default]
    CountOverTime,
    /// Lines per second, averaged over each step.
    Rate,
}

/// A label to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupLabel {
    /// The site.
    Site,
    /// The source.
    Source,
    /// The level.
    Level,
}

impl GroupLabel {
    /// Reads `site`, `source` or `level`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "site" => Some(Self::Site),
            "source" => Some(Self::Source),
            "level" => Some(Self::Level),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Source => "source",
            Self::Level => "level",
        }
    }
}

/// A stats request.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Sites (`None`: all — superadmin only, the caller decides).
    pub sites: Option<Vec<String>>,
    /// Only this source (exact or glob).
    pub source: Option<String>,
    /// Only this level and above.
    pub min_level: Option<Level>,
    /// The filter.
    pub filter: Filter,
    /// Range start (inclusive).
    pub from: OffsetDateTime,
    /// Range end (exclusive).
    pub to: OffsetDateTime,
    /// Step length.
    pub step: Duration,
    /// Group by these labels (none: one series).
    pub by: Vec<GroupLabel>,
    /// What to compute.
    pub function: StatsFunction,
}

/// Why a stats request is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatsError {
    /// `to` is not after `from`, or the step is not positive.
    #[error("the range is empty: `to` must be after `from` and `step` positive")]
    EmptyRange,
    /// Too many points.
    #[error("{points} points per series; at most {MAX_POINTS}: use a longer step")]
    TooManyPoints {
        /// Points it would take.
        points: i64,
    },
}

/// One point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The step's start.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The value.
    pub value: f64,
}

/// One series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Its labels (the `by` labels and their values).
    pub labels: BTreeMap<String, String>,
    /// A point for every step, oldest first.
    pub points: Vec<Point>,
}

impl LogIndex {
    /// Computes the series of a stats request.
    pub fn stats_over_time(&self, q: &StatsQuery) -> Result<Vec<Series>, StatsError> {
        if q.to <= q.from || q.step <= Duration::ZERO {
            return Err(StatsError::EmptyRange);
        }
        let step_ns = q.step.whole_nanoseconds();
        let span = (q.to - q.from).whole_nanoseconds();
        let points = ((span + step_ns - 1) / step_ns) as i64;
        if points > MAX_POINTS {
            return Err(StatsError::TooManyPoints { points });
        }
        let test = RecordTest {
            source: SourceMatch::new(q.source.as_deref()),
            min_level: q.min_level,
            from: Some(q.from),
            to: Some(q.to),
            filter: &q.filter,
        };
        let mut by_labels: BTreeMap<Vec<String>, Vec<u64>> = BTreeMap::new();
        self.scan(q.sites.as_deref(), &test, Direction::Forward, None, |r| {
            let r = r.view();
            let key: Vec<String> =
                q.by.iter()
                    .map(|l| match l {
                        GroupLabel::Site => r.site.to_owned(),
                        GroupLabel::Source => r.source.to_owned(),
                        GroupLabel::Level => r.level.as_str().to_owned(),
                    })
                    .collect();
            let i = ((r.time - q.from).whole_nanoseconds() / step_ns) as usize;
            let counts = by_labels
                .entry(key)
                .or_insert_with(|| vec![0; points as usize]);
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
            true
        });
        let secs = q.step.as_seconds_f64();
        Ok(by_labels
            .into_iter()
            .map(|(values, counts)| Series {
                labels: q
                    .by
                    .iter()
                    .map(|l| l.name().to_owned())
                    .zip(values)
                    .collect(),
                points: counts
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| Point {
                        time: q.from + q.step * i as u32,
                        value: match q.function {
                            StatsFunction::CountOverTime => c as f64,
                            StatsFunction::Rate => c as f64 / secs,
                        },
                    })
                    .collect(),
            })
            .collect())
    }
}
