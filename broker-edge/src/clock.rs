//! The broker's one time source for the deadlines MQTT defines: session
//! expiry, will delay, message expiry and keep-alive
//! (`docs/decisions/0056-edge-clock.md`).
//!
//! Every such deadline is read from the [`Clock`] in [`Config::clock`]
//! (the router's timers, [`Publication::stamp`] and
//! [`Publication::remaining_expiry`], the keep-alive checker, the session
//! store's conversion to and from wall-clock deadlines). The default is
//! the system clock. A [`Clock::manual`] clock stands still until
//! [`Clock::advance`] moves it, and an advance wakes whatever sleeps on the
//! clock ([`Clock::sleep_until`]: the router's timers, the keep-alive
//! sweep), so a test of a two-second expiry takes no two seconds and
//! cannot be early or late by scheduling noise.
//!
//! Everything else — socket timeouts, the `$SYS` interval, token expiry,
//! the uplink's backoff — stays on tokio's and the system's time: those
//! are not MQTT deadlines a client can observe through the broker's
//! state.
//!
//! [`Config::clock`]: crate::Config::clock
//! [`Publication::stamp`]: crate::message::Publication::stamp
//! [`Publication::remaining_expiry`]: crate::message::Publication::remaining_expiry

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A time source: the system's, or a manual one for tests (see the module
/// docs). Cloning shares the source.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<Manual>>,
}

/// A clock that moves only when told.
struct Manual {
    /// The monotonic reading at creation.
    start: Instant,
    /// The wall-clock reading at creation, Unix milliseconds.
    start_unix_ms: u64,
    /// How far the clock has been advanced since creation; receivers wake
    /// on every advance.
    offset: watch::Sender<Duration>,
    /// The deadlines of everything sleeping on the clock now, one entry
    /// per sleeper (see [`Clock::sleeper_at`]).
    sleepers: watch::Sender<Vec<Instant>>,
}

/// Takes a sleeper's deadline off the list when its sleep ends or is
/// dropped.
struct Sleeping<'a> {
    /// The clock slept on.
    manual: &'a Manual,
    /// Its deadline.
    at: Instant,
}

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.manual.sleepers.send_modify(|v| {
            if let Some(i) = v.iter().position(|t| *t == self.at) {
                v.swap_remove(i);
            }
        });
    }
}

/// One reading of a [`Clock`]: the monotonic instant deadlines are kept in
/// and the wall-clock time the session store writes deadlines as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines in memory.
    pub at: Instant,
    /// Milliseconds since the Unix epoch, for deadlines that outlive the
    /// process.
    pub unix_ms: u64,
}

impl Now {
    /// The system clock's reading.
    pub fn system() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: system_unix_ms(),
        }
    }
}

/// The system's wall clock in Unix milliseconds (0 before 1970).
fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Clock {
    /// The system clock (also [`Clock::default`]).
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that starts at the current time and stands still until
    /// [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(Manual {
                start: Instant::now(),
                start_unix_ms: system_unix_ms(),
                offset: watch::Sender::new(Duration::ZERO),
                sleepers: watch::Sender::new(Vec::new()),
            })),
        }
    }

    /// True for a [`Clock::manual`] clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// The current monotonic time.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.start + *m.offset.borrow(),
        }
    }

    /// The current monotonic and wall-clock time, read together.
    pub fn read(&self) -> Now {
        match &self.manual {
            None => Now::system(),
            Some(m) => {
                let offset = *m.offset.borrow();
                Now {
                    at: m.start + offset,
                    unix_ms: m
                        .start_unix_ms
                        .saturating_add(u64::try_from(offset.as_millis()).unwrap_or(u64::MAX)),
                }
            }
        }
    }

    /// Moves a manual clock forward by `by` and wakes everything sleeping
    /// on it ([`Clock::sleep_until`]) to look at the new time.
    ///
    /// # Panics
    /// On the system clock, which nobody moves.
    pub fn advance(&self, by: Duration) {
        let Some(m) = &self.manual else {
            panic!("Clock::advance on the system clock");
        };
        m.offset.send_modify(|o| *o += by);
    }

    /// Waits until the clock reads `at` or later: a tokio sleep on the
    /// system clock, an [`advance`](Clock::advance) that reaches `at` on a
    /// manual one.
    pub async fn sleep_until(&self, at: Instant) {
        match &self.manual {
            None => tokio::time::sleep_until(at.into()).await,
            Some(m) => {
                m.sleepers.send_modify(|v| v.push(at));
                let _sleeping = Sleeping { manual: m, at };
                let mut advanced = m.offset.subscribe();
                // The sender lives as long as `m`, which this borrows.
                while m.start + *advanced.borrow_and_update() < at {
                    if advanced.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

impl Clock {
    /// Waits until something sleeps on this manual clock until exactly
    /// `at` ([`Clock::sleep_until`]): the point where a test knows the
    /// broker has armed a deadline and may [`advance`](Clock::advance) past
    /// it. A manual clock stands still, so a deadline set `d` after
    /// [`Clock::now`] is exactly `now + d`. The router sleeps on its
    /// earliest deadline only: a test advances past an older one (say of a
    /// session that has reconnected since) before waiting for a later one.
    ///
    /// # Panics
    /// On the system clock.
    pub async fn sleeper_at(&self, at: Instant) {
        let Some(m) = &self.manual else {
            panic!("Clock::sleeper_at on the system clock");
        };
        let mut sleepers = m.sleepers.subscribe();
        // The sender lives as long as `m`: `wait_for` cannot fail.
        let _ = sleepers.wait_for(|v| v.contains(&at)).await;
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(m) => write!(f, "Clock::manual(+{:?})", *m.offset.borrow()),
        }
    }
}

/// Two clocks are equal when they are the same source.
impl PartialEq for Clock {
    fn eq(&self, other: &Clock) -> bool {
        match (&self.manual, &other.manual) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_advanced() {
        let c = Clock::manual();
        let (t0, r0) = (c.now(), c.read());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0, "no drift with wall time");
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), t0 + Duration::from_millis(1500));
        assert_eq!(c.read().unix_ms, r0.unix_ms + 1500, "wall time moves too");
        assert_eq!(c.clone(), c, "clones share the source");
        assert_ne!(Clock::manual(), c);
        assert_eq!(Clock::system(), Clock::default());
    }

    #[tokio::test]
    async fn an_advance_wakes_a_sleeper_once_its_deadline_is_reached() {
        let c = Clock::manual();
        let at = c.now() + Duration::from_secs(2);
        let sleeper = tokio::spawn({
            let c = c.clone();
            async move { c.sleep_until(at).await }
        });
        tokio::time::timeout(Duration::from_secs(5), c.sleeper_at(at))
            .await
            .expect("the sleeper is seen");
        c.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woken early");
        c.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the advance")
            .expect("sleeper ran");
    }
}
