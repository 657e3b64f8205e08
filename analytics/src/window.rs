//! The per-rule machinery: keys (interned), per-key windows, the rule's
//! watermark and its timers. [`crate::Engine`] holds one [`RuleRun`] per rule.
//! Patterns and detectors keep a [`Track`] per key instead of windows; their
//! part of the run is in `track/run.rs`.
//!
//! Invariants (decision 0027):
//! - a key's `last_seq` is the stream sequence of the last event applied to
//!   it; an event at or below it is a redelivery and changes nothing;
//! - a window is *pending* until first emitted; a pending window has a
//!   timer at its `end`, an emitted one a timer at `end + lateness` (when it
//!   is forgotten). Timers fire in time order, and within one instant in key
//!   order, so a run restored from a checkpoint (timers rebuilt from the
//!   windows) emits exactly what an uninterrupted run emits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::accumulate::{Acc, Needs, Values};
use crate::field::{FieldPath, Payload, Scalar};
use crate::rule::{AggFn, GroupBy, Rule, Window};
use crate::track::Track;
use crate::{Event, Output};

/// One window of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Win {
    /// Inclusive start (ms since the epoch).
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
    /// Readings applied (`count(*)`).
    pub readings: u64,
    /// The revision last emitted; `None` before the first emission.
    pub emitted: Option<u32>,
    /// Whether it waits for its first emission at `end`.
    pub pending: bool,
    /// One accumulator per distinct field of the rule.
    pub accs: Vec<Acc>,
    /// With `stale_after`: the latest event time applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_t: Option<i64>,
    /// With `stale_after`: the longest silence inside the window longer
    /// than `stale_after` (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_ms: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One key of one rule.
#[derive(Debug, Clone)]
pub(crate) struct KeyState {
    /// The key (a topic, a field's value, or `*`).
    pub name: Arc<str>,
    /// Stream sequence of the last event applied (exactly once).
    pub last_seq: Option<u64>,
    /// Readings of this key dropped as later than the allowed lateness.
    pub dropped_late: u64,
    /// Open and retained windows, by start.
    pub windows: Vec<Win>,
    /// With an aggregate's `stale_after`: the latest event time applied.
    pub last_at: Option<i64>,
    /// A pattern's or detector's state (`None` for aggregates).
    pub track: Option<Box<Track>>,
}

/// Counters per rule; kept in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMetrics {
    /// Events applied to a window (or dropped as late) once.
    pub applied: u64,
    /// Redeliveries ignored: their sequence was already applied.
    pub duplicates: u64,
    /// Readings later than the allowed lateness: counted, never silently lost.
    pub dropped_late: u64,
    /// Late readings that updated an emitted window (a new revision).
    pub late_updates: u64,
    /// Results emitted, revisions included.
    pub outputs: u64,
}

/// The compiled form of a rule's aggregate (empty, with no window, for a
/// pattern or detector).
#[derive(Debug)]
pub(crate) struct Plan {
    /// The windows; `None` for a pattern or detector.
    pub window: Option<Window>,
    /// The aggregate's `stale_after`.
    stale_after: Option<i64>,
    /// Distinct fields read, each with one accumulator per window.
    fields: Vec<FieldPath>,
    /// What each field's accumulator keeps.
    needs: Vec<Needs>,
    /// Output name, function, index into `fields`.
    select: Vec<(String, AggFn, usize)>,
}

impl Plan {
    fn new(rule: &Rule) -> Self {
        let mut fields: Vec<FieldPath> = Vec::new();
        let mut needs: Vec<Needs> = Vec::new();
        let mut select = Vec::new();
        let agg = rule.aggregate();
        for s in agg.iter().flat_map(|a| &a.select) {
            let i = match fields.iter().position(|f| *f == s.field) {
                Some(i) => i,
                None => {
                    fields.push(s.field.clone());
                    needs.push(Needs::default());
                    fields.len() - 1
                }
            };
            match s.func {
                AggFn::Percentile(_) => needs[i].sketch = true,
                AggFn::DistinctCount => needs[i].distinct = true,
                _ => {}
            }
            select.push((s.name.clone(), s.func, i));
        }
        Self {
            window: agg.map(|a| a.window),
            stale_after: agg.and_then(|a| a.stale_after).map(|d| d.0),
            fields,
            needs,
            select,
        }
    }
}

/// A rule at run time.
#[derive(Debug)]
pub(crate) struct RuleRun {
    /// The rule.
    pub rule: Arc<Rule>,
    /// Its compiled aggregate.
    pub plan: Plan,
    /// Key name → index in `keys` (interning: one allocation per key, ever).
    index: HashMap<Arc<str>, u32>,
    /// Per-key state.
    pub keys: Vec<KeyState>,
    /// The latest event time seen (or advanced to); the watermark is this
    /// minus the rule's delay.
    pub max_event: Option<i64>,
    /// Due time → keys to look at then.
    pub timers: BTreeMap<i64, Vec<u32>>,
    /// Counters.
    pub metrics: RuleMetrics,
}

impl RuleRun {
    pub fn new(rule: Rule) -> Self {
        let plan = Plan::new(&rule);
        Self {
            rule: Arc::new(rule),
            plan,
            index: HashMap::new(),
            keys: Vec::new(),
            max_event: None,
            timers: BTreeMap::new(),
            metrics: RuleMetrics::default(),
        }
    }

    /// Restores keys from a checkpoint and rebuilds the timers from them.
    pub fn restore(&mut self, keys: Vec<KeyState>, max_event: Option<i64>, metrics: RuleMetrics) {
        self.max_event = max_event;
        self.metrics = metrics;
        let lateness = self.rule.time.lateness.0;
        for (id, mut key) in keys.into_iter().enumerate() {
            let id = id as u32;
            if let Some(track) = &mut key.track {
                for due in track.wakes(&self.rule.operator) {
                    self.timers.entry(due).or_default().push(id);
                }
                track.armed = track.due(&self.rule.operator);
            }
            for w in &key.windows {
                let due = if w.pending { w.end } else { w.end + lateness };
                self.timers.entry(due).or_default().push(id);
            }
            self.index.insert(key.name.clone(), id);
            self.keys.push(key);
        }
    }

    pub(crate) fn watermark(&self) -> Option<i64> {
        self.max_event
            .map(|m| m.saturating_sub(self.rule.time.delay.0))
    }

    /// Applies one event (already known to match nothing else); pushes the
    /// results it causes.
    pub fn process(&mut self, event: &Event<'_>, payload: &Payload<'_>, out: &mut Vec<Output>) {
        if !self.rule.from.matches(event.topic) {
            return;
        }
        if let Some(cond) = &self.rule.filter
            && !cond.holds(payload)
        {
            return;
        }
        let id = match &self.rule.group_by {
            GroupBy::Topic => self.intern(event.topic),
            GroupBy::None => self.intern("*"),
            GroupBy::Level(n) => match event.topic.split('/').nth(*n as usize) {
                Some(level) => self.intern(level),
                None => return,
            },
            GroupBy::Field(path) => match payload.get(path) {
                Some(Scalar::Str(s)) => self.intern(s),
                Some(Scalar::Num(n)) => self.intern(&n.to_string()),
                None => return,
            },
        };
        let key = &mut self.keys[id as usize];
        if key.last_seq.is_some_and(|last| event.stream_seq <= last) {
            self.metrics.duplicates += 1;
            return;
        }
        key.last_seq = Some(event.stream_seq);
        self.metrics.applied += 1;
        let t = self.event_time(event, payload);
        if self.plan.window.is_none() {
            self.process_signal(id, t, event, payload, out);
            return;
        }
        self.apply(id, t, payload, event, out);
        if self.max_event.is_none_or(|m| t > m) {
            self.max_event = Some(t);
            self.fire(out);
        }
    }

    /// Moves event time forward to `now` (never back) and fires what is due.
    pub(crate) fn advance(&mut self, now: i64, out: &mut Vec<Output>) {
        if self.max_event.is_none_or(|m| now > m) {
            self.max_event = Some(now);
            self.fire(out);
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let id = self.keys.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.index.insert(name.clone(), id);
        self.keys.push(KeyState {
            name,
            last_seq: None,
            dropped_late: 0,
            windows: Vec::new(),
            last_at: None,
            track: None,
        });
        id
    }

    fn event_time(&self, event: &Event<'_>, payload: &Payload<'_>) -> i64 {
        let Some(path) = &self.rule.time.event_time else {
            return event.received_at;
        };
        match payload.get(path) {
            Some(Scalar::Num(ms)) if ms.abs() < 9.0e15 => ms as i64,
            Some(Scalar::Str(text)) => {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap_or(event.received_at)
            }
            _ => event.received_at,
        }
    }

    fn apply(
        &mut self,
        id: u32,
        t: i64,
        payload: &Payload<'_>,
        event: &Event<'_>,
        out: &mut Vec<Output>,
    ) {
        let wm = self.watermark();
        let lateness = self.rule.time.lateness.0;
        let too_late = |end: i64| wm.is_some_and(|wm| end.saturating_add(lateness) <= wm);
        // Read each field once for all windows of this reading.
        let mut values: [Option<Scalar<'_>>; 4] = [None; 4];
        let mut more: Vec<Option<Scalar<'_>>> = Vec::new();
        for (i, f) in self.plan.fields.iter().enumerate() {
            let v = payload.get(f);
            if i < values.len() {
                values[i] = v;
            } else {
                more.push(v);
            }
        }
        let field = |i: usize| if i < 4 { values[i] } else { more[i - 4] };
        // With stale_after: the silence since the key's latest reading.
        let silence = self.plan.stale_after.and_then(|after| {
            let key = &mut self.keys[id as usize];
            let last = key.last_at;
            if last.is_none_or(|l| t > l) {
                key.last_at = Some(t);
            }
            last.filter(|l| t - l > after)
        });
        let mut accepted = false;
        let Some(window) = self.plan.window else {
            return;
        };
        match window {
            Window::Tumbling { size } => {
                let start = t.div_euclid(size.0) * size.0;
                if !too_late(start + size.0) {
                    self.apply_fixed(id, start, start + size.0, t, silence, &field, out);
                    accepted = true;
                }
            }
            Window::Hopping { size, slide } => {
                let mut start = t.div_euclid(slide.0) * slide.0;
                // Oldest first, so outputs come in window order.
                while start - slide.0 > t - size.0 {
                    start -= slide.0;
                }
                while start <= t {
                    if !too_late(start + size.0) {
                        self.apply_fixed(id, start, start + size.0, t, silence, &field, out);
                        accepted = true;
                    }
                    start += slide.0;
                }
            }
            Window::Session { gap } => {
                accepted = self.apply_session(id, t, gap.0, too_late(t + gap.0), &field, out);
            }
        }
        if !accepted {
            let key = &mut self.keys[id as usize];
            key.dropped_late += 1;
            self.metrics.dropped_late += 1;
            tracing::warn!(
                rule = %self.rule.name, key = %key.name, event_time = t,
                watermark = wm, stream_seq = event.stream_seq,
                "analytics: reading later than the allowed lateness dropped"
            );
        }
    }

    fn new_window(&self, start: i64, end: i64) -> Win {
        Win {
            start,
            end,
            readings: 0,
            emitted: None,
            pending: true,
            accs: self.plan.needs.iter().map(|n| Acc::new(*n)).collect(),
            last_t: None,
            gap_ms: 0,
        }
    }

    /// A tumbling or hopping window: find or make it, add the reading,
    /// and emit a new revision at once if it was already emitted.
    /// `silence`: with `stale_after`, the key's latest reading before a
    /// silence longer than it that this reading ends.
    #[allow(clippy::too_many_arguments)]
    fn apply_fixed<'p>(
        &mut self,
        id: u32,
        start: i64,
        end: i64,
        t: i64,
        silence: Option<i64>,
        field: &impl Fn(usize) -> Option<Scalar<'p>>,
        out: &mut Vec<Output>,
    ) {
        let wm = self.watermark();
        let windows = &self.keys[id as usize].windows;
        let pos = windows.iter().rposition(|w| w.start <= start);
        let at = match pos {
            Some(i) if windows[i].start == start => i,
            _ => {
                let at = pos.map_or(0, |i| i + 1);
                let win = self.new_window(start, end);
                self.keys[id as usize].windows.insert(at, win);
                self.timers.entry(end).or_default().push(id);
                at
            }
        };
        let win = &mut self.keys[id as usize].windows[at];
        add(win, t, field);
        if self.plan.stale_after.is_some() {
            win.last_t = win.last_t.max(Some(t));
            if let Some(last) = silence {
                // The part of the silence inside this window.
                let inside = t - last.max(start);
                if self.plan.stale_after.is_some_and(|a| inside > a) {
                    win.gap_ms = win.gap_ms.max(inside);
                }
            }
        }
        if !win.pending {
            self.metrics.late_updates += 1;
            self.emit(id, at, out);
        } else if wm.is_some_and(|wm| end <= wm) {
            // New, but its end has passed: late within lateness; emit now.
            self.emit(id, at, out);
            self.after_emit(id, at);
        }
    }

    /// A session window: join (and merge) the sessions within `gap`, or
    /// open one; returns whether the reading was accepted.
    fn apply_session<'p>(
        &mut self,
        id: u32,
        t: i64,
        gap: i64,
        too_late: bool,
        field: &impl Fn(usize) -> Option<Scalar<'p>>,
        out: &mut Vec<Output>,
    ) -> bool {
        let wm = self.watermark();
        let (lo, hi) = (t, t + gap);
        let windows = &mut self.keys[id as usize].windows;
        let touching: Vec<usize> = windows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.start < hi && lo < w.end)
            .map(|(i, _)| i)
            .collect();
        let at = if let Some(&first) = touching.first() {
            // Merge the later ones into the first, newest last.
            for &i in touching[1..].iter().rev() {
                let other = windows.remove(i);
                let w = &mut windows[first];
                w.start = w.start.min(other.start);
                w.end = w.end.max(other.end);
                w.readings += other.readings;
                w.emitted = w.emitted.max(other.emitted);
                w.pending &= other.pending;
                for (a, b) in w.accs.iter_mut().zip(&other.accs) {
                    a.merge(b);
                }
            }
            let w = &mut windows[first];
            w.start = w.start.min(lo);
            w.end = w.end.max(hi);
            first
        } else if too_late {
            return false;
        } else {
            let win = self.new_window(lo, hi);
            let windows = &mut self.keys[id as usize].windows;
            let at = windows
                .iter()
                .position(|w| w.start > lo)
                .unwrap_or(windows.len());
            windows.insert(at, win);
            at
        };
        let win = &mut self.keys[id as usize].windows[at];
        add(win, t, field);
        let end = win.end;
        if wm.is_some_and(|wm| end <= wm) {
            if win.emitted.is_some() {
                self.metrics.late_updates += 1;
            }
            self.emit(id, at, out);
            self.after_emit(id, at);
        } else {
            // (Re)opened: emitted again when the watermark passes its end.
            win.pending = true;
            self.timers.entry(end).or_default().push(id);
        }
        true
    }

    /// After a first (or session) emission: forget it now when there is no
    /// lateness, else keep it until `end + lateness`.
    fn after_emit(&mut self, id: u32, at: usize) {
        let lateness = self.rule.time.lateness.0;
        let key = &mut self.keys[id as usize];
        if lateness == 0 {
            key.windows.remove(at);
        } else {
            let w = &mut key.windows[at];
            w.pending = false;
            self.timers.entry(w.end + lateness).or_default().push(id);
        }
    }

    /// Fires every timer at or below the watermark, in time then key order.
    pub(crate) fn fire(&mut self, out: &mut Vec<Output>) {
        let Some(wm) = self.watermark() else { return };
        let lateness = self.rule.time.lateness.0;
        while let Some(entry) = self.timers.first_entry() {
            let due = *entry.key();
            if due > wm {
                break;
            }
            let mut ids = entry.remove();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if self.plan.window.is_none() {
                    self.wake(id, due, out);
                    continue;
                }
                let mut at = 0;
                while at < self.keys[id as usize].windows.len() {
                    let w = &self.keys[id as usize].windows[at];
                    if w.pending && w.end == due {
                        self.emit(id, at, out);
                        let len = self.keys[id as usize].windows.len();
                        self.after_emit(id, at);
                        if self.keys[id as usize].windows.len() < len {
                            continue;
                        }
                    } else if !w.pending && w.end + lateness == due {
                        self.keys[id as usize].windows.remove(at);
                        continue;
                    }
                    at += 1;
                }
            }
        }
    }

    /// Emits window `at` of key `id` as its next revision.
    fn emit(&mut self, id: u32, at: usize, out: &mut Vec<Output>) {
        let key = &mut self.keys[id as usize];
        let win = &mut key.windows[at];
        let revision = win.emitted.map_or(0, |r| r + 1);
        win.emitted = Some(revision);
        let mut values = Values::new();
        for (name, func, i) in &self.plan.select {
            // A value that overflowed (e.g. the sum of readings near
            // f64::MAX) is undefined, like avg of text: absent, never `null`.
            if let Some(v) = win.accs[*i]
                .value(*func, win.readings)
                .filter(|v| v.is_finite())
            {
                values.insert(name.clone(), v);
            }
        }
        if let (Some(after), Some(last)) = (self.plan.stale_after, win.last_t) {
            // A silence from the last reading to the window's end.
            let trailing = win.end - last;
            let gap = if trailing > after {
                win.gap_ms.max(trailing)
            } else {
                win.gap_ms
            };
            if gap > 0 {
                values.insert("stale".to_owned(), 1.0);
                values.insert("gap_ms".to_owned(), gap as f64);
            }
        }
        self.metrics.outputs += 1;
        out.push(Output {
            rule: self.rule.name.clone(),
            key: key.name.to_string(),
            window_start: win.start,
            window_end: win.end,
            revision,
            values,
            dropped_late: key.dropped_late,
            signal: None,
        });
    }
}

#[inline]
fn add<'p>(win: &mut Win, t: i64, field: &impl Fn(usize) -> Option<Scalar<'p>>) {
    win.readings += 1;
    for (i, acc) in win.accs.iter_mut().enumerate() {
        if let Some(v) = field(i) {
            acc.add(t, v);
        }
    }
}
