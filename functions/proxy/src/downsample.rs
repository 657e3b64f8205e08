//! Downsampling a time series for charts, in one pass, with no allocation
//! per point: the proxy feeds every reading of a range through one of
//! these and answers with at most a few thousand values, however many
//! readings the range holds.
//!
//! The range `[from, to]` (milliseconds) is cut into `n` buckets of equal
//! width `ceil((to - from + 1) / n)` ms; bucket `i` holds the readings at
//! `from + i·width ≤ t < from + (i+1)·width`.
//!
//! * [`Buckets`] (`agg=minmaxavg`): per bucket the count, min, max, mean,
//!   first and last reading, exact (the mean is the sum over the count in
//!   `f64`). **Empty buckets are omitted** from the answer — a chart draws
//!   a gap or joins the neighbours, its choice.
//! * [`Lttb`] (`agg=lttb`): largest-triangle-three-buckets over the same
//!   time buckets — the first and the last reading, and in each non-empty
//!   bucket between them the one reading that makes the largest triangle
//!   with the reading chosen before it and the mean of the next non-empty
//!   bucket. At most `n + 2` points, all of them real readings; spikes
//!   survive (a lone extreme makes the largest triangle in its bucket).
//!
//! Readings are expected in time order (a stream's order); a reading
//! earlier than the one before it is counted in the bucket of the one
//! before it by [`Lttb`] (min/max/avg do not care about order).

use serde::Serialize;

/// The bucket grid of a range: where bucket `i` starts and how wide it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// The range's first millisecond.
    pub from: u64,
    /// The range's last millisecond (inclusive).
    pub to: u64,
    /// Bucket width in ms (at least 1).
    pub width: u64,
    /// How many buckets.
    pub count: usize,
}

impl Grid {
    /// `buckets` equal buckets over `[from, to]` (`to < from` is taken as
    /// the one millisecond `from`; 0 buckets as 1). With a range shorter
    /// than `buckets` ms, buckets are 1 ms wide and fewer.
    pub fn new(from: u64, to: u64, buckets: usize) -> Self {
        let to = to.max(from);
        // Saturating: a range as wide as u64 is one millisecond short.
        let span = (to - from).saturating_add(1);
        let n = (buckets.max(1) as u64).min(span);
        let width = span.div_ceil(n);
        let count = usize::try_from(span.div_ceil(width)).unwrap_or(usize::MAX);
        Self {
            from,
            to,
            width,
            count,
        }
    }

    /// The bucket of time `t`, `None` outside the range.
    pub fn index(&self, t: u64) -> Option<usize> {
        if t < self.from || t > self.to {
            return None;
        }
        usize::try_from((t - self.from) / self.width).ok()
    }

    /// Where bucket `i` starts (ms).
    pub fn start(&self, i: usize) -> u64 {
        self.from
            .saturating_add((i as u64).saturating_mul(self.width))
    }
}

/// One bucket of [`Buckets`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Where the bucket starts, ms since the Unix epoch (it ends where the
    /// next starts: `t + bucket_ms`).
    pub t: u64,
    /// Readings in it (never 0: empty buckets are omitted).
    pub count: u64,
    /// The smallest reading.
    pub min: f64,
    /// The largest reading.
    pub max: f64,
    /// The mean of the readings.
    pub avg: f64,
    /// The earliest reading.
    pub first: f64,
    /// The latest reading.
    pub last: f64,
}

/// Running totals of one bucket.
#[derive(Debug, Clone, Copy)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: (u64, f64),
    last: (u64, f64),
}

impl Acc {
    const EMPTY: Self = Self {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        first: (u64::MAX, 0.0),
        last: (0, 0.0),
    };

    fn add(&mut self, t: u64, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if t < self.first.0 {
            self.first = (t, v);
        }
        if t >= self.last.0 {
            self.last = (t, v);
        }
    }
}

/// Min/max/avg/count/first/last per bucket (`agg=minmaxavg`). Holds one
/// small record per bucket, allocated once.
#[derive(Debug, Clone)]
pub struct Buckets {
    grid: Grid,
    accs: Vec<Acc>,
}

impl Buckets {
    /// Empty buckets over `grid`.
    pub fn new(grid: Grid) -> Self {
        Self {
            grid,
            accs: vec![Acc::EMPTY; grid.count],
        }
    }

    /// Adds reading `v` at `t` (ignored outside the range or when not
    /// finite).
    pub fn push(&mut self, t: u64, v: f64) {
        if !v.is_finite() {
            return;
        }
        if let Some(acc) = self.grid.index(t).and_then(|i| self.accs.get_mut(i)) {
            acc.add(t, v);
        }
    }

    /// The non-empty buckets, oldest first.
    pub fn finish(self) -> Vec<Bucket> {
        let grid = self.grid;
        self.accs
            .into_iter()
            .enumerate()
            .filter(|(_, a)| a.count > 0)
            .map(|(i, a)| Bucket {
                t: grid.start(i),
                count: a.count,
                min: a.min,
                max: a.max,
                avg: a.sum / a.count as f64,
                first: a.first.1,
                last: a.last.1,
            })
            .collect()
    }
}

/// One point of [`Lttb`]: a real reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// When, ms since the Unix epoch.
    pub t: u64,
    /// The reading.
    pub v: f64,
}

/// Largest-triangle-three-buckets over time buckets (`agg=lttb`), in one
/// pass: it keeps the readings of two buckets (the one waiting for its
/// choice and the one whose mean that choice needs) in two buffers that
/// are reused, so memory is two buckets' readings, not the range's.
#[derive(Debug, Clone)]
pub struct Lttb {
    grid: Grid,
    out: Vec<Point>,
    /// The reading seen last, not yet in a bucket (it may be the last
    /// reading of all, which is kept as it is).
    held: Option<Point>,
    /// The bucket waiting for the next one's mean.
    waiting: Vec<Point>,
    /// The bucket being filled, and its index.
    filling: Vec<Point>,
    filling_index: usize,
}

impl Lttb {
    /// An empty series over `grid`.
    pub fn new(grid: Grid) -> Self {
        Self {
            grid,
            out: Vec::with_capacity(grid.count.saturating_add(2).min(1 << 16)),
            held: None,
            waiting: Vec::new(),
            filling: Vec::new(),
            filling_index: 0,
        }
    }

    /// Adds reading `v` at `t` (ignored outside the range or when not
    /// finite).
    pub fn push(&mut self, t: u64, v: f64) {
        if !v.is_finite() || self.grid.index(t).is_none() {
            return;
        }
        let p = Point { t, v };
        if self.out.is_empty() {
            // The first reading is always kept.
            self.out.push(p);
            return;
        }
        if let Some(prev) = self.held.replace(p) {
            self.bucket(prev);
        }
    }

    /// Puts a middle reading in its bucket; a reading in a later bucket
    /// closes the one being filled.
    fn bucket(&mut self, p: Point) {
        let i = self
            .grid
            .index(p.t)
            .unwrap_or(self.filling_index)
            .max(self.filling_index);
        if i != self.filling_index && !self.filling.is_empty() {
            let next = mean(&self.filling);
            self.choose(next);
            std::mem::swap(&mut self.waiting, &mut self.filling);
            self.filling.clear();
        }
        self.filling_index = i;
        self.filling.push(p);
    }

    /// Chooses the reading of the waiting bucket (if any) with the
    /// largest triangle between the last chosen reading and `next`.
    fn choose(&mut self, next: Point) {
        let Some(a) = self.out.last().copied() else {
            return;
        };
        let mut best: Option<(f64, Point)> = None;
        for &b in &self.waiting {
            let area = triangle(a, b, next);
            if best.is_none_or(|(m, _)| area > m) {
                best = Some((area, b));
            }
        }
        if let Some((_, b)) = best {
            self.out.push(b);
        }
        self.waiting.clear();
    }

    /// The chosen readings, oldest first: the first, one per non-empty
    /// bucket between, the last.
    pub fn finish(mut self) -> Vec<Point> {
        let Some(last) = self.held.take() else {
            return self.out;
        };
        if !self.filling.is_empty() {
            let next = mean(&self.filling);
            self.choose(next);
            std::mem::swap(&mut self.waiting, &mut self.filling);
        }
        self.choose(last);
        self.out.push(last);
        self.out
    }
}

/// The mean point of a non-empty bucket.
fn mean(points: &[Point]) -> Point {
    let n = points.len().max(1) as f64;
    let (st, sv) = points
        .iter()
        .fold((0.0, 0.0), |(st, sv), p| (st + p.t as f64, sv + p.v));
    Point {
        t: (st / n) as u64,
        v: sv / n,
    }
}

/// Twice the area of triangle `a b c` (the factor does not change which
/// is largest). Times are taken relative to `a` so they stay small.
fn triangle(a: Point, b: Point, c: Point) -> f64 {
    let bx = b.t as f64 - a.t as f64;
    let cx = c.t as f64 - a.t as f64;
    ((bx * (c.v - a.v)) - (cx * (b.v - a.v))).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_the_range_with_equal_buckets() {
        let g = Grid::new(1000, 1999, 10);
        assert_eq!((g.width, g.count), (100, 10));
        assert_eq!(g.index(1000), Some(0));
        assert_eq!(g.index(1099), Some(0));
        assert_eq!(g.index(1100), Some(1));
        assert_eq!(g.index(1999), Some(9));
        assert_eq!(g.index(999), None);
        assert_eq!(g.index(2000), None);
        // Uneven: 1001 ms in 10 buckets of 101 ms; the last is shorter.
        let g = Grid::new(0, 1000, 10);
        assert_eq!((g.width, g.count), (101, 10));
        assert_eq!(g.index(1000), Some(9));
        // Shorter than the bucket count: 1 ms buckets.
        let g = Grid::new(5, 7, 1000);
        assert_eq!((g.width, g.count), (1, 3));
        assert_eq!(Grid::new(5, 5, 0).count, 1);
    }

    #[test]
    fn min_max_avg_first_last_are_exact_and_empty_buckets_omitted() {
        let g = Grid::new(0, 999, 10);
        let mut b = Buckets::new(g);
        // Buckets 0 and 2 only; bucket 2 out of order.
        for (t, v) in [(0, 3.0), (50, -1.0), (99, 7.0), (250, 10.0), (210, 2.0)] {
            b.push(t, v);
        }
        b.push(1000, 99.0); // outside
        b.push(20, f64::NAN); // not a number
        let out = b.finish();
        assert_eq!(
            out,
            vec![
                Bucket {
                    t: 0,
                    count: 3,
                    min: -1.0,
                    max: 7.0,
                    avg: 3.0,
                    first: 3.0,
                    last: 7.0
                },
                Bucket {
                    t: 200,
                    count: 2,
                    min: 2.0,
                    max: 10.0,
                    avg: 6.0,
                    first: 2.0,
                    last: 10.0
                },
            ]
        );
    }

    #[test]
    fn buckets_agree_with_a_naive_computation() {
        let g = Grid::new(0, 99_999, 37);
        let mut b = Buckets::new(g);
        let data: Vec<(u64, f64)> = (0..100_000u64)
            .map(|t| (t, ((t * 7919) % 1000) as f64 - 500.0))
            .collect();
        for &(t, v) in &data {
            b.push(t, v);
        }
        let out = b.finish();
        assert_eq!(out.len(), 37);
        for bucket in out {
            let vs: Vec<f64> = data
                .iter()
                .filter(|(t, _)| *t >= bucket.t && *t < bucket.t + g.width)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(bucket.count, vs.len() as u64);
            assert_eq!(bucket.min, vs.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(
                bucket.max,
                vs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
            assert_eq!(bucket.avg, vs.iter().sum::<f64>() / vs.len() as f64);
            assert_eq!(bucket.first, vs[0]);
            assert_eq!(bucket.last, vs[vs.len() - 1]);
        }
    }

    fn lttb(points: &[(u64, f64)], grid: Grid) -> Vec<Point> {
        let mut l = Lttb::new(grid);
        for &(t, v) in points {
            l.push(t, v);
        }
        l.finish()
    }

    #[test]
    fn lttb_keeps_first_last_and_a_lone_spike_and_dip() {
        let mut data: Vec<(u64, f64)> = (0..10_000u64).map(|t| (t, 1.0)).collect();
        data[4321].1 = 100.0;
        data[7000].1 = -50.0;
        let out = lttb(&data, Grid::new(0, 9_999, 100));
        assert_eq!(out.first(), Some(&Point { t: 0, v: 1.0 }));
        assert_eq!(out.last(), Some(&Point { t: 9_999, v: 1.0 }));
        assert!(out.contains(&Point { t: 4321, v: 100.0 }), "spike kept");
        assert!(out.contains(&Point { t: 7000, v: -50.0 }), "dip kept");
        assert!(out.len() <= 102, "{} points", out.len());
        assert!(out.windows(2).all(|w| w[0].t < w[1].t), "in time order");
        // One point per bucket between first and last.
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn lttb_follows_the_shape_of_a_sine() {
        let data: Vec<(u64, f64)> = (0..100_000u64)
            .map(|t| (t, (t as f64 / 10_000.0 * std::f64::consts::TAU).sin()))
            .collect();
        let out = lttb(&data, Grid::new(0, 99_999, 200));
        // Ten periods: every crest and trough is kept within 1 %.
        let crests = out.iter().filter(|p| p.v > 0.99).count();
        let troughs = out.iter().filter(|p| p.v < -0.99).count();
        assert!(crests >= 10 && troughs >= 10, "{crests} {troughs}");
        // Every chosen point is a real reading.
        for p in &out {
            assert_eq!(data[p.t as usize].1, p.v);
        }
    }

    #[test]
    fn lttb_with_few_readings_keeps_them_all() {
        assert!(lttb(&[], Grid::new(0, 10, 5)).is_empty());
        assert_eq!(
            lttb(&[(3, 1.0)], Grid::new(0, 10, 5)),
            vec![Point { t: 3, v: 1.0 }]
        );
        let two = lttb(&[(3, 1.0), (4, 2.0)], Grid::new(0, 10, 5));
        assert_eq!(two, vec![Point { t: 3, v: 1.0 }, Point { t: 4, v: 2.0 }]);
        // Gaps (empty buckets) are skipped, never invented.
        let out = lttb(
            &[(0, 0.0), (1, 5.0), (900, 1.0), (999, 0.0)],
            Grid::new(0, 999, 10),
        );
        assert_eq!(
            out.iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![0, 1, 900, 999]
        );
    }
}
