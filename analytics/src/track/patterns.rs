//! The pattern machines: threshold held, sequence and absence, rate of
//! change, stale source. Each is a step (one reading, in time order) and,
//! for those with a deadline, a due handler (the watermark passed it).

use super::{Emit, FIRST, Held, Machine, THEN, Track};
use crate::engine::Signal;
use crate::pattern::{RateOfChange, Sequence, SequenceMode, Stale};

/// Threshold: a reading that satisfies the condition starts an episode
/// (if none), one that does not ends it — with a Clear if it had fired.
pub(super) fn threshold_step(track: &mut Track, h: Held, emit: &mut Emit<'_>) {
    let Machine::Threshold {
        since,
        fired,
        value,
    } = &mut track.machine
    else {
        return;
    };
    if h.m & FIRST != 0 {
        since.get_or_insert(h.t);
        *value = h.v;
        return;
    }
    let (Some(start), was_fired) = (since.take(), std::mem::take(fired)) else {
        return;
    };
    *value = None;
    if was_fired {
        let evidence = [
            ("value", h.v.unwrap_or(f64::NAN)),
            ("duration_ms", (h.t - start) as f64),
        ];
        track.signal(emit, Signal::Clear, start, h.t, &evidence);
    }
}

/// Threshold: held for `for` — fire at `start + for`.
pub(super) fn threshold_due(track: &mut Track, d: i64, emit: &mut Emit<'_>) {
    let Machine::Threshold {
        since: Some(start),
        fired,
        value,
    } = &mut track.machine
    else {
        return;
    };
    *fired = true;
    let start = *start;
    let evidence = [
        ("value", value.unwrap_or(f64::NAN)),
        ("duration_ms", (d - start) as f64),
    ];
    track.signal(emit, Signal::Fire, start, d, &evidence);
}

/// Sequence: a B ends the wait of the pending A (a match when followed-by
/// is wanted; when absence is wanted, it clears an absence that fired);
/// an A starts a wait when none is pending and no absence is firing.
pub(super) fn sequence_step(track: &mut Track, s: &Sequence, h: Held, emit: &mut Emit<'_>) {
    let Machine::Sequence { waiting, fired } = &mut track.machine else {
        return;
    };
    if h.m & THEN != 0 {
        if let Some(a) = waiting.take() {
            if s.mode == SequenceMode::FollowedBy {
                let evidence = [
                    ("elapsed_ms", (h.t - a) as f64),
                    ("value", h.v.unwrap_or(f64::NAN)),
                ];
                track.signal(emit, Signal::Fire, a, h.t, &evidence);
                track.signal(emit, Signal::Clear, a, h.t, &evidence);
            }
        } else if let Some(a) = fired.take() {
            let evidence = [
                ("elapsed_ms", (h.t - a) as f64),
                ("value", h.v.unwrap_or(f64::NAN)),
            ];
            track.signal(emit, Signal::Clear, a, h.t, &evidence);
        }
    }
    if h.m & FIRST != 0
        && let Machine::Sequence {
            waiting: waiting @ None,
            fired: None,
        } = &mut track.machine
    {
        *waiting = Some(h.t);
    }
}

/// Sequence: `A + within` passed without a B.
pub(super) fn sequence_due(track: &mut Track, s: &Sequence, d: i64, emit: &mut Emit<'_>) {
    let Machine::Sequence { waiting, fired } = &mut track.machine else {
        return;
    };
    let Some(a) = waiting.take() else { return };
    if s.mode == SequenceMode::NotFollowedBy {
        *fired = Some(a);
        let evidence = [("within_ms", s.within.0 as f64)];
        track.signal(emit, Signal::Fire, a, d, &evidence);
    }
}

/// Rate of change between this reading and the previous one.
pub(super) fn rate_step(track: &mut Track, r: &RateOfChange, h: Held, emit: &mut Emit<'_>) {
    let Machine::Rate { prev, since } = &mut track.machine else {
        return;
    };
    let Some(v) = h.v else { return };
    let Some((tp, vp)) = prev.replace((h.t, v)) else {
        return;
    };
    if h.t == tp {
        // Same instant: no derivative; the newer value stands.
        return;
    }
    let rate = (v - vp) / ((h.t - tp) as f64 / r.per.0 as f64);
    let beyond = r.direction.beyond(rate, r.above);
    match (beyond, *since) {
        (true, None) => {
            *since = Some(tp);
            let evidence = [("rate", rate), ("value", v), ("previous", vp)];
            track.signal(emit, Signal::Fire, tp, h.t, &evidence);
        }
        (false, Some(start)) => {
            *since = None;
            let evidence = [("rate", rate), ("value", v), ("previous", vp)];
            track.signal(emit, Signal::Clear, start, h.t, &evidence);
        }
        _ => {}
    }
}

/// Stale: a reading clears a stale key.
pub(super) fn stale_step(track: &mut Track, h: Held, emit: &mut Emit<'_>) {
    let Machine::Stale { last, stale } = &mut track.machine else {
        return;
    };
    let before = last.replace(h.t);
    if std::mem::take(stale)
        && let Some(before) = before
    {
        let evidence = [
            ("last_seen", before as f64),
            ("gap_ms", (h.t - before) as f64),
        ];
        track.signal(emit, Signal::Clear, before, h.t, &evidence);
    }
}

/// Stale: silent for `after`.
pub(super) fn stale_due(track: &mut Track, s: &Stale, d: i64, emit: &mut Emit<'_>) {
    let Machine::Stale {
        last: Some(last),
        stale,
    } = &mut track.machine
    else {
        return;
    };
    *stale = true;
    let last = *last;
    let evidence = [("last_seen", last as f64), ("after_ms", s.after.0 as f64)];
    track.signal(emit, Signal::Fire, last, d, &evidence);
}
