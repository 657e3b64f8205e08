//! Live connections: an admitted connection is registered under its token
//! id and organisation with an expiry timer ([`Authenticator::admit`],
//! unregistered when its [`Admission`] drops), and is closed when its token
//! expires (0xA0) or is revoked, its certificate is unregistered, or the
//! site changes hands (0x87).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use plantd_shared::jwt::now_secs;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Authenticator, EXPIRY_LEEWAY_SECS, Identity, NEVER_EXPIRES, REASON_EXPIRED, REASON_REVOKED,
    certificates,
};
use crate::mailbox::{LinkCtl, Mailbox};

/// Live authenticated connections by token id, for revocation.
pub(super) type LiveMap = HashMap<Arc<str>, Vec<(u64, Weak<Mailbox>)>>;

/// A registered connection, by connection id.
#[derive(Debug)]
pub(super) struct Registered {
    /// Its current identity (a re-authentication replaces it): its token
    /// id for revocation, its organisation for a change of owner.
    identity: Arc<Identity>,
    /// Where a kick goes.
    mailbox: Weak<Mailbox>,
    /// Its expiry timer; `None` for an identity that [`NEVER_EXPIRES`].
    timer: Option<AbortHandle>,
}

impl Authenticator {
    /// Switches the organisation that owns the site to `owner` (`None`: the
    /// site was deleted, or its owner contradicts `--org`: nobody's tokens
    /// are admitted) and closes every registered connection the new owner
    /// does not admit ([`Identity::admitted_by`]) with 0x87, exactly as a
    /// revocation does. Anonymous connections are not registered and
    /// stay. Returns how many connections were told to close.
    pub fn set_owner(&self, owner: Option<&str>) -> usize {
        match self.org.write() {
            Ok(mut o) => *o = owner.map(Arc::from),
            Err(poisoned) => *poisoned.into_inner() = owner.map(Arc::from),
        }
        let doomed: Vec<(u64, Weak<Mailbox>)> = self
            .registered
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, reg)| !reg.identity.admitted_by(owner))
                    .map(|(conn, reg)| (*conn, reg.mailbox.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut n = 0;
        for (conn_id, mailbox) in doomed {
            if let Some(m) = mailbox.upgrade() {
                m.push_ctl(
                    conn_id,
                    LinkCtl::Kick {
                        reason: REASON_REVOKED,
                    },
                );
                n += 1;
            }
        }
        n
    }
    /// Registers a connection that authenticated with `identity`, so that
    /// expiry and revocation close it. Dropping the returned guard (when the
    /// connection ends) unregisters it.
    pub fn admit(
        self: &Arc<Self>,
        identity: &Arc<Identity>,
        conn_id: u64,
        mailbox: &Arc<Mailbox>,
    ) -> Admission {
        self.register(identity, conn_id, mailbox);
        Admission {
            auth: self.clone(),
            conn_id,
        }
    }

    /// Registers `conn_id` under `identity`'s token id (revocation) and
    /// organisation (change of owner), and starts its expiry timer.
    pub(super) fn register(&self, identity: &Arc<Identity>, conn_id: u64, mailbox: &Arc<Mailbox>) {
        let jti = identity.jti.clone();
        if let Ok(mut live) = self.live.lock() {
            live.entry(jti.clone())
                .or_default()
                .push((conn_id, Arc::downgrade(mailbox)));
        }
        let timer = (identity.expires != NEVER_EXPIRES).then(|| {
            let deadline = identity.expires.saturating_add(EXPIRY_LEEWAY_SECS);
            let wait = Duration::from_secs(deadline.saturating_sub(now_secs()));
            let weak = Arc::downgrade(mailbox);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(m) = weak.upgrade() {
                    m.push_ctl(
                        conn_id,
                        LinkCtl::Kick {
                            reason: REASON_EXPIRED,
                        },
                    );
                }
            })
            .abort_handle()
        });
        let entry = Registered {
            identity: identity.clone(),
            mailbox: Arc::downgrade(mailbox),
            timer,
        };
        if let Ok(mut registered) = self.registered.lock()
            && let Some(old) = registered.insert(conn_id, entry)
            && let Some(t) = old.timer
        {
            t.abort();
        }
        // The token may have been revoked, the site may have changed hands
        // or the certificate been unregistered between the check at
        // CONNECT and here (after the registration, so a change that
        // comes now finds the connection registered).
        let revoked = self.trust.as_ref().is_some_and(|t| t.is_revoked(&jti));
        let owner = self.owner();
        let unregistered = jti.starts_with(certificates::JTI_PREFIX)
            && self
                .certificates
                .get()
                .is_none_or(|d| !d.still_admits(identity));
        if revoked || !identity.admitted_by(owner.as_deref()) || unregistered {
            mailbox.push_ctl(
                conn_id,
                LinkCtl::Kick {
                    reason: REASON_REVOKED,
                },
            );
        }
    }

    /// Unregisters `conn_id`: its expiry timer stops, revocations no longer
    /// reach it.
    pub(super) fn release(&self, conn_id: u64) {
        let entry = self
            .registered
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&conn_id));
        if let Some(reg) = entry {
            if let Some(t) = reg.timer {
                t.abort();
            }
            self.remove(&reg.identity.jti, conn_id);
        }
    }

    fn remove(&self, jti: &Arc<str>, conn_id: u64) {
        if let Ok(mut live) = self.live.lock()
            && let Some(conns) = live.get_mut(jti)
        {
            conns.retain(|(c, _)| *c != conn_id);
            if conns.is_empty() {
                live.remove(jti);
            }
        }
    }

    /// Closes every live connection using token id `jti`.
    pub(super) fn kick(&self, jti: &str) -> usize {
        let conns = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(jti).cloned())
            .unwrap_or_default();
        let mut n = 0;
        for (conn_id, mailbox) in conns {
            if let Some(m) = mailbox.upgrade() {
                m.push_ctl(
                    conn_id,
                    LinkCtl::Kick {
                        reason: REASON_REVOKED,
                    },
                );
                n += 1;
            }
        }
        n
    }

    /// Closes live connections whose token gets revoked, until `stop`.
    /// Subscribes to the revocations at once (not when first polled), so
    /// none is missed between spawning and running. Does nothing without a
    /// trust store.
    pub fn watch_revocations(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let watch = self.trust.clone().map(|t| (t.revocations(), t));
        async move {
            let Some((mut rx, trust)) = watch else {
                return;
            };
            loop {
                let jti = tokio::select! {
                    () = stop.cancelled() => return,
                    r = rx.recv() => r,
                };
                match jti {
                    Ok(jti) => {
                        let n = self.kick(&jti);
                        if n > 0 {
                            info!(jti = %jti, connections = n, "token revoked: closing its connections");
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Too many at once: check every live token instead.
                        warn!(
                            missed,
                            "revocations arrived faster than handled; rechecking all connections"
                        );
                        let jtis: Vec<Arc<str>> = self
                            .live
                            .lock()
                            .map(|l| l.keys().cloned().collect())
                            .unwrap_or_default();
                        for jti in jtis.iter().filter(|j| trust.is_revoked(j)) {
                            self.kick(jti);
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// A registered authenticated connection; unregisters on drop (its
/// expiry timer, cancelled when the connection ends first, and its
/// revocation entry, under whichever token id it holds by then).
#[derive(Debug)]
pub struct Admission {
    /// Where it is registered.
    auth: Arc<Authenticator>,
    /// Its connection id.
    conn_id: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.auth.release(self.conn_id);
    }
}
