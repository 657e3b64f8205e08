//! Will delays and session expiries of offline sessions, by deadline.
//!
//! A timer names its session and the session's generation when it was set;
//! a session that reconnected since (a new generation) or is connected
//! ignores it, so stale timers are never removed, only skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tracing::debug;

use super::Router;
use crate::clock::Clock;

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy)]
pub(super) enum TimerKind {
    /// Publish the session's will, which waited out its delay.
    WillDelay,
    /// End the session: its expiry interval ran out while offline.
    SessionExpiry,
}

/// One deadline.
#[derive(Debug, Clone)]
pub(super) struct Timer {
    /// What to do.
    kind: TimerKind,
    /// Whose session.
    client_id: Arc<str>,
    /// The session's generation when the timer was set.
    generation: u64,
}

/// Deadlines in order.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Timers by deadline, with a tie-breaker for equal deadlines.
    by_deadline: BTreeMap<(Instant, u64), Timer>,
    /// The last tie-breaker handed out.
    seq: u64,
}

impl Timers {
    /// Sets a timer for `id`'s session at `at`.
    pub(super) fn add(&mut self, at: Instant, kind: TimerKind, id: &Arc<str>, generation: u64) {
        self.seq += 1;
        self.by_deadline.insert(
            (at, self.seq),
            Timer {
                kind,
                client_id: id.clone(),
                generation,
            },
        );
    }

    /// The earliest deadline, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|((t, _), _)| *t)
    }

    /// Removes and returns the earliest timer due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let entry = self.by_deadline.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }
}

impl Router {
    /// Runs every timer that is due by the broker's clock.
    pub(super) fn fire_timers(&mut self) {
        let now = self.config.clock.now();
        while let Some(t) = self.timers.pop_due(now) {
            let Some(rec) = self.sessions.get_mut(&t.client_id) else {
                continue;
            };
            if rec.generation != t.generation || rec.conn.is_some() {
                continue;
            }
            match t.kind {
                TimerKind::WillDelay => {
                    if let Some(w) = rec.pending_will.take() {
                        self.persist.will_gone(&t.client_id, rec.persisted);
                        let p =
                            (*w).into_publication(Some(t.client_id.clone()), &self.config.clock);
                        self.publish(Arc::new(p));
                    }
                }
                TimerKind::SessionExpiry => {
                    debug!(client_id = %t.client_id, "session expired");
                    if let Some(rec) = self.sessions.remove(&t.client_id) {
                        self.discard(&t.client_id, *rec);
                    }
                    self.metrics
                        .sessions
                        .store(self.sessions.len() as u64, Relaxed);
                }
            }
        }
    }
}

/// Sleeps until `clock` reads `at`, or forever without a deadline.
pub(super) async fn sleep_until_opt(clock: &Clock, at: Option<Instant>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
