//! One keep-alive checker for the whole broker, instead of a timer in every
//! connection (issue 12, `docs/decisions/0049-idle-connection-memory.md`).
//!
//! A connection with a keep-alive is registered here while it runs: its
//! connection id, its session's [`Mailbox`] and its limit (1.5 × the
//! keep-alive, [MQTT-3.1.2-24]). The link stamps the mailbox with the time
//! of every read ([`Mailbox::touch`], one relaxed store), and a single task
//! sweeps the registered connections every [`TICK`]: a connection whose
//! last read is at least its limit ago gets [`LinkCtl::KeepAliveExpired`]
//! through the mailbox — the same control path as a takeover or a revoked
//! token — and leaves the registry. So an idle connection's task holds no
//! timer and its event loop waits on one future less; a connection is
//! closed no earlier than its limit and at most one tick later.
//!
//! Time is the broker's [`Clock`] (`docs/decisions/0056-edge-clock.md`):
//! the stamps, the limit and the sweep's tick all read it, so a test that
//! advances a manual clock past a limit gets the close at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;

use tokio_util::sync::CancellationToken;

use crate::mailbox::{LinkCtl, Mailbox};

/// How often the registered connections are checked: the most a silent
/// client is kept beyond 1.5 × its keep-alive.
pub const TICK: Duration = Duration::from_millis(250);

/// A connection being watched.
struct Watched {
    /// Where its last read is stamped and where the close goes.
    mailbox: Arc<Mailbox>,
    /// 1.5 × keep-alive, milliseconds.
    limit_ms: u64,
}

/// The broker-wide keep-alive checker (see the module docs).
pub struct KeepAlive {
    /// The broker's time source.
    clock: Clock,
    /// Zero of the millisecond clock the mailboxes are stamped with.
    epoch: Instant,
    /// Running connections with a keep-alive, by connection id.
    watched: Mutex<HashMap<u64, Watched>>,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::new()
    }
}

impl KeepAlive {
    /// An empty checker on the system clock; [`KeepAlive::run`] does the
    /// sweeping.
    pub fn new() -> KeepAlive {
        KeepAlive::with_clock(Clock::system())
    }

    /// An empty checker on `clock` (the broker's, [`crate::Config::clock`]).
    pub fn with_clock(clock: Clock) -> KeepAlive {
        KeepAlive {
            epoch: clock.now(),
            clock,
            watched: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        // The map stays consistent whatever panicked while holding it.
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds since the checker was made, by the broker's clock: the
    /// clock of [`Mailbox::touch`].
    pub fn now_ms(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts watching connection `conn_id` with a keep-alive of
    /// `keep_alive_secs` (0: never expires, not registered). The clock
    /// starts now.
    pub fn watch(&self, conn_id: u64, mailbox: &Arc<Mailbox>, keep_alive_secs: u16) {
        if keep_alive_secs == 0 {
            return;
        }
        mailbox.touch(self.now_ms());
        let limit_ms = u64::from(keep_alive_secs) * 1500;
        self.lock().insert(
            conn_id,
            Watched {
                mailbox: mailbox.clone(),
                limit_ms,
            },
        );
    }

    /// Stops watching connection `conn_id` (it ended).
    pub fn forget(&self, conn_id: u64) {
        self.lock().remove(&conn_id);
    }

    /// How many connections are watched.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes, through their mailboxes, the connections that read nothing
    /// for their limit; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let mut expired = 0;
        self.lock().retain(|&conn_id, w| {
            if now.saturating_sub(w.mailbox.last_touch()) < w.limit_ms {
                return true;
            }
            w.mailbox.push_ctl(conn_id, LinkCtl::KeepAliveExpired);
            expired += 1;
            false
        });
        expired
    }

    /// Sweeps every `TICK` (250 ms) of the broker's clock until
    /// `shutdown`: a manual clock's advance wakes the sweep.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // The next sweep is due a tick after the time read *before*
            // this one: a manual clock advanced while this sweep runs
            // wakes the next at once (reading the time after the sweep
            // would miss that advance until the clock moves again).
            let swept_at = self.clock.now();
            let expired = self.sweep();
            if expired > 0 {
                tracing::debug!(expired, "keep-alive expired");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.clock.sleep_until(swept_at + TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_connection_expires_at_its_limit_not_before() {
        let clock = Clock::manual();
        let ka = KeepAlive::with_clock(clock.clone());
        let mailbox = Arc::new(Mailbox::new(8, Arc::new(Metrics::default())));
        ka.watch(7, &mailbox, 1);
        assert_eq!(ka.sweep(), 0, "fresh");
        // The last read 1.499 s ago: within 1.5 x keep-alive.
        clock.advance(Duration::from_millis(1499));
        assert_eq!(ka.sweep(), 0, "not before 1.5 x keep-alive");
        clock.advance(Duration::from_millis(1));
        assert_eq!(ka.sweep(), 1);
        let mut ctl = Vec::new();
        mailbox.pop_ctl(7, &mut ctl);
        assert!(matches!(ctl[..], [LinkCtl::KeepAliveExpired]));
        assert!(ka.is_empty(), "an expired connection leaves the registry");
    }

    #[test]
    fn no_keep_alive_is_not_watched_and_forget_removes() {
        let ka = KeepAlive::new();
        let mailbox = Arc::new(Mailbox::new(8, Arc::new(Metrics::default())));
        ka.watch(1, &mailbox, 0);
        assert!(ka.is_empty());
        ka.watch(2, &mailbox, 60);
        assert_eq!(ka.len(), 1);
        ka.forget(2);
        assert!(ka.is_empty());
    }
}
