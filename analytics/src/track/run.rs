//! The part of [`RuleRun`] that drives patterns and detectors: a reading is
//! checked against the watermark, applied at once or held, and the key's
//! next deadline is put on the rule's timers.

use super::{Emit, Track};
use crate::field::Payload;
use crate::window::RuleRun;
use crate::{Event, Output};

impl RuleRun {
    /// One reading of key `id` at event time `t` for a pattern or detector.
    ///
    /// A reading earlier than what its key has already acted on (a reading
    /// applied, a deadline passed) is late: a signal is never revised, so
    /// it is dropped and counted (as an aggregate's reading beyond its
    /// lateness). Otherwise it is applied now when the watermark has
    /// reached it and the key holds nothing, else held until the watermark
    /// reaches it.
    pub(crate) fn process_signal(
        &mut self,
        id: u32,
        t: i64,
        event: &Event<'_>,
        payload: &Payload<'_>,
        out: &mut Vec<Output>,
    ) {
        if self.max_event.is_none_or(|m| t > m) {
            self.max_event = Some(t);
        }
        if let Some(held) = Track::observe(&self.rule.operator, event.topic, payload, t) {
            let wm = self.watermark();
            let Self {
                rule,
                keys,
                metrics,
                timers,
                ..
            } = self;
            let key = &mut keys[id as usize];
            if key.track.is_none() {
                key.track = Track::new(&rule.operator).map(Box::new);
            }
            if let Some(track) = &mut key.track {
                if track.too_late(t) {
                    key.dropped_late += 1;
                    metrics.dropped_late += 1;
                    tracing::warn!(
                        rule = %rule.name, key = %key.name, event_time = t,
                        watermark = wm, stream_seq = event.stream_seq,
                        "analytics: reading earlier than its key's last signal step dropped (patterns wait `delay`, not `lateness`)"
                    );
                } else if !track.holding() && wm.is_some_and(|wm| t <= wm) {
                    let mut emit = Emit {
                        rule: &rule.name,
                        key: &key.name,
                        dropped_late: key.dropped_late,
                        out,
                        outputs: &mut metrics.outputs,
                    };
                    track.apply(&rule.operator, held, &mut emit);
                } else {
                    track.hold(held);
                    timers.entry(t).or_default().push(id);
                }
            }
            self.arm(id);
        }
        // Deadlines the new watermark passed, and a reading just held at
        // or before it.
        self.fire(out);
    }

    /// A rule timer at `due` for key `id`: the watermark has passed it.
    pub(crate) fn wake(&mut self, id: u32, due: i64, out: &mut Vec<Output>) {
        let Self {
            rule,
            keys,
            metrics,
            ..
        } = self;
        let key = &mut keys[id as usize];
        let Some(track) = &mut key.track else { return };
        if track.armed == Some(due) {
            track.armed = None;
        }
        let mut emit = Emit {
            rule: &rule.name,
            key: &key.name,
            dropped_late: key.dropped_late,
            out,
            outputs: &mut metrics.outputs,
        };
        track.run_to(&rule.operator, due, &mut emit);
        self.arm(id);
    }

    /// Sets a timer at key `id`'s next deadline unless one is set.
    fn arm(&mut self, id: u32) {
        let Some(track) = &mut self.keys[id as usize].track else {
            return;
        };
        let due = track.due(&self.rule.operator);
        if let Some(d) = due
            && track.armed != due
        {
            self.timers.entry(d).or_default().push(id);
            track.armed = due;
        }
    }
}
