//! Who may connect and what a connection may do.
//!
//! * **At CONNECT** the password is an access token (JWT) issued by the
//!   identity service; [`Authenticator::authenticate`] verifies it with the
//!   edge's [`Trust`] (signature against the cached JWKS, expiry,
//!   not-before, audience `plantd:site:<site>`, revocation) and compiles
//!   its permissions **once** into an [`Identity`]. The user name is not a
//!   credential: it may be empty, the token's subject, or anything a client
//!   insists on sending; the identity is the token's `sub`.
//! * **On every PUBLISH and SUBSCRIBE** the link asks the connection's
//!   [`Identity`] (compiled filters from `plantd_shared::claims`, no token
//!   parsing, no shared lock), then the configured
//!   [`Authorizer`](crate::hooks::Authorizer) (`--deny-subscribe`).
//! * **While connected** a connection is closed when its token expires
//!   (v5 DISCONNECT 0xA0, *Maximum connect time*) or when its token id is
//!   revoked (0x87, *Not authorized*): [`Authenticator::admit`] registers the
//!   connection; a timer per connection and one revocation watcher push a
//!   kick into the session's mailbox.
//! * **When the site changes hands** ([`crate::owner::watch`] follows its
//!   record in `plantd_sites`): [`Authenticator::set_owner`] switches the
//!   owner every later CONNECT is checked against and closes every live
//!   connection the new owner would not admit (v5 DISCONNECT 0x87, 3.1.1
//!   close); a deleted site admits no token at all.
//! * **Certificate-only login** ([`certificates`],
//!   `docs/decisions/0043-edge-certificate-login.md`): on the TLS and WSS
//!   listeners with `--tls-client-ca`, a CONNECT without password whose verified
//!   client certificate's SHA-256 fingerprint is registered (and active)
//!   for a device of the site's owner gets that device's identity and
//!   grants; the record disappearing or turning inactive closes it (0x87).
//! * **Enhanced authentication** (MQTT 5 §4.12, method
//!   [`AUTH_METHOD_TOKEN`] `plantd-token`): a CONNECT may carry the token as
//!   Authentication Data instead of the password; such a connection can
//!   **re-authenticate** at any time with AUTH 0x19 and a fresh token
//!   ([`Authenticator::reauthenticate`]): the same principal's new token
//!   replaces the old one's permissions, expiry and revocation id, and the
//!   broker answers AUTH 0x00; a token that is not accepted closes the
//!   connection with DISCONNECT 0x87. Subscriptions the new token does not
//!   allow are removed and a will it does not allow is not published
//!   (`docs/decisions/0051-edge-reauthentication-narrows.md`). Any other
//!   method gets 0x8C.
//!
//! Reason codes at CONNECT (v5 / 3.1.1):
//!
//! | case | v5 | 3.1.1 |
//! |---|---|---|
//! | no password and anonymous access off | 0x87 Not authorized | 5 |
//! | no password, a verified client certificate not registered for a device of this site (anonymous access off) | 0x87 Not authorized | 5 |
//! | no password, the certificate's device is inactive or of another organisation than the site's owner | 0x87 Not authorized | 5 |
//! | token malformed, bad signature, unknown key, wrong algorithm, wrong audience, expired, not yet valid | 0x86 Bad user name or password | 4 |
//! | token revoked | 0x87 Not authorized | 5 |
//! | token of another organisation than the site's owner (`--org`, [`crate::owner`]; the bootstrap superadmin excepted) | 0x87 Not authorized | 5 |
//! | the edge does not know its site's owner (only when embedded without [`crate::owner::resolve`]), or the site was deleted from `plantd_sites` or re-registered to another organisation than `--org` while the edge runs | 0x87 Not authorized | 5 |
//! | will topic outside the token's publish grants | 0x87 Not authorized | 5 |
//! | no signing keys known yet (nothing fetched, cached or configured) | 0x88 Server unavailable | 3 |
//!
//! See `docs/decisions/0012-edge-auth.md`.

pub mod certificates;
mod identity;
mod trust;

pub use identity::Identity;
pub use trust::{EdgeTrust, TrustSetupError};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use plantd_bridge::trust::{Refusal, Trust};
use plantd_shared::jwt::{TokenError, now_secs};
use plantd_shared::sites::{self, Access};
use plantd_shared::subject::Site;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::mailbox::{LinkCtl, Mailbox};
use crate::protocol::ReasonCode;

/// Clock skew tolerated on `exp`, as in `plantd_shared::jwt::VerifyOptions`:
/// a live connection is closed when its token would no longer be accepted
/// at CONNECT, not earlier.
pub const EXPIRY_LEEWAY_SECS: u64 = 30;

/// The enhanced authentication method this edge offers: the token (JWT)
/// as Authentication Data, at CONNECT and in a re-authenticating AUTH.
pub const AUTH_METHOD_TOKEN: &str = "plantd-token";

/// v5 reason closing a connection whose token expired.
pub const REASON_EXPIRED: u8 = ReasonCode::MaximumConnectTime.code();
/// v5 reason closing a connection whose token was revoked (and one whose
/// organisation no longer owns the site, or whose certificate was
/// unregistered).
pub const REASON_REVOKED: u8 = ReasonCode::NotAuthorized.code();

/// The `expires` of an identity that does not expire (a registered client
/// certificate: its registration, not a clock, ends it).
pub const NEVER_EXPIRES: u64 = u64::MAX;

/// A refused CONNECT: the v5 reason (the 3.1.1 return code is derived from
/// it) and why, for the log and the v5 reason string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// v5 CONNACK reason code.
    pub reason: u8,
    /// Human-readable cause (kept generic: no key material, no claims).
    pub why: String,
}

impl Refused {
    fn new(reason: ReasonCode, why: impl Into<String>) -> Self {
        Self {
            reason: reason.code(),
            why: why.into(),
        }
    }
}

/// Live authenticated connections by token id, for revocation.
type LiveMap = HashMap<Arc<str>, Vec<(u64, Weak<Mailbox>)>>;

/// A registered connection, by connection id.
#[derive(Debug)]
struct Registered {
    /// Its current identity (a re-authentication replaces it): its token
    /// id for revocation, its organisation for a change of owner.
    identity: Arc<Identity>,
    /// Where a kick goes.
    mailbox: Weak<Mailbox>,
    /// Its expiry timer; `None` for an identity that [`NEVER_EXPIRES`].
    timer: Option<AbortHandle>,
}

/// Decides who may connect and closes connections whose authority ends.
/// One per broker, shared by every link.
#[derive(Debug)]
pub struct Authenticator {
    /// The site tokens must be issued for.
    site: Site,
    /// The organisation that owns the site: tokens of any other (but the
    /// bootstrap superadmin's) are refused. `None`: unknown or deleted, and
    /// every token is refused. Read at CONNECT only (never on the publish
    /// path); [`set_owner`](Self::set_owner) replaces it.
    org: RwLock<Option<Arc<str>>>,
    /// Keys and revocations; `None` when no `--jwks-url`/`--jwks-file` is
    /// configured (then only anonymous access is possible).
    trust: Option<Arc<Trust>>,
    /// Whether clients without a password are let in.
    allow_anonymous: bool,
    /// Authenticated connections by token id (touched at connect, at
    /// disconnect and on a revocation; never on the publish path).
    live: Mutex<LiveMap>,
    /// Each registered connection's current identity, mailbox and expiry
    /// timer (a re-authentication replaces identity and timer).
    registered: Mutex<HashMap<u64, Registered>>,
    /// The devices that may log in with their client certificate, when
    /// certificate-only login is on ([`enable_certificates`](Self::enable_certificates)).
    certificates: OnceLock<Arc<certificates::Directory>>,
}

impl Authenticator {
    /// An authenticator for `site`.
    /// Its site's owner is unknown until [`with_org`](Self::with_org).
    pub fn new(site: Site, trust: Option<Arc<Trust>>, allow_anonymous: bool) -> Self {
        Self {
            site,
            org: RwLock::new(None),
            trust,
            allow_anonymous,
            live: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            certificates: OnceLock::new(),
        }
    }

    /// Sets the organisation that owns the site (see [`crate::owner`]).
    #[must_use]
    pub fn with_org(self, org: Option<String>) -> Self {
        if let Ok(mut o) = self.org.write() {
            *o = org.map(Arc::from);
        }
        self
    }

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

    /// Turns certificate-only login on with `directory` (once; later calls
    /// are ignored and return `false`).
    pub fn enable_certificates(&self, directory: Arc<certificates::Directory>) -> bool {
        self.certificates.set(directory).is_ok()
    }

    /// Whether certificate-only login is on: the link then asks the TLS
    /// session for its peer certificate's fingerprint when a CONNECT has
    /// no password.
    pub fn logs_in_certificates(&self) -> bool {
        self.certificates.get().is_some()
    }

    /// The site tokens must be issued for.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The organisation that owns the site, if known.
    pub fn org(&self) -> Option<String> {
        self.owner().map(|o| o.to_string())
    }

    /// The current owner (a cheap clone).
    fn owner(&self) -> Option<Arc<str>> {
        match self.org.read() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether tokens can be verified (a trust store is configured).
    pub fn verifies_tokens(&self) -> bool {
        self.trust.is_some()
    }

    /// Whether clients without credentials are let in.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Checks the credentials of a CONNECT. `Ok(None)` is an anonymous
    /// client (only with anonymous access on); `Ok(Some)` a verified token.
    ///
    /// # Errors
    /// [`Refused`] with the CONNACK reason (see the module table).
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Option<Arc<Identity>>, Refused> {
        let password = password.filter(|p| !p.is_empty());
        let Some(password) = password else {
            return if self.allow_anonymous {
                Ok(None)
            } else {
                Err(Refused::new(
                    ReasonCode::NotAuthorized,
                    "a token is required (send it as the password)",
                ))
            };
        };
        let Some(trust) = &self.trust else {
            if self.allow_anonymous {
                // Nothing to verify against: the password means nothing.
                return Ok(None);
            }
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "this edge has no signing keys configured",
            ));
        };
        let Ok(token) = std::str::from_utf8(password) else {
            return Err(Refused::new(
                ReasonCode::BadUserNameOrPassword,
                "malformed token",
            ));
        };
        let claims = trust.verify(token.trim()).map_err(|e| match e {
            Refusal::Token(TokenError::Expired) => {
                Refused::new(ReasonCode::BadUserNameOrPassword, "token has expired")
            }
            Refusal::Token(TokenError::NotYetValid) => {
                Refused::new(ReasonCode::BadUserNameOrPassword, "token is not valid yet")
            }
            Refusal::Token(TokenError::WrongAudience(_)) => Refused::new(
                ReasonCode::BadUserNameOrPassword,
                "token is not for this site",
            ),
            Refusal::Token(TokenError::Malformed(_)) => {
                Refused::new(ReasonCode::BadUserNameOrPassword, "malformed token")
            }
            Refusal::Token(_) => Refused::new(
                ReasonCode::BadUserNameOrPassword,
                "token signature or key is not accepted",
            ),
            Refusal::Revoked => Refused::new(ReasonCode::NotAuthorized, "token has been revoked"),
            Refusal::NoKeys => Refused::new(
                ReasonCode::ServerUnavailable,
                "no signing keys are known yet",
            ),
        })?;
        // Whatever the audience and grants say, the site's organisation
        // decides (plantd_shared::sites, the rule every door applies).
        let Some(owner) = self.owner() else {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "no organisation owns this site for the edge (unknown, deleted, or contradicting --org)",
            ));
        };
        let owner: &str = &owner;
        match sites::authorize_org(&claims, owner) {
            Ok(Access::Own) => {}
            Ok(Access::AsSuperadmin) => {
                warn!(subject = %claims.sub, org = %owner, actor_org = %claims.org, cross_org = true, "superadmin connected to another organisation's site");
            }
            Err(_) => {
                info!(subject = %claims.sub, token_org = %claims.org, org = %owner, "refused: token of another organisation");
                return Err(Refused::new(
                    ReasonCode::NotAuthorized,
                    "token belongs to another organisation than this site's",
                ));
            }
        }
        if let Some(u) = username.filter(|u| !u.is_empty() && *u != claims.sub) {
            debug!(username = %u, subject = %claims.sub, "user name differs from the token subject; the subject is used");
        }
        Ok(Some(Arc::new(Identity::new(self.site.clone(), &claims))))
    }

    /// [`authenticate`](Self::authenticate) for a CONNECT that may name an
    /// enhanced authentication method: with [`AUTH_METHOD_TOKEN`] the
    /// token is the Authentication Data (the link passes it as
    /// `password`), and the identity remembers the method so that the
    /// connection may re-authenticate.
    ///
    /// # Errors
    /// As [`authenticate`](Self::authenticate); a method other than
    /// [`AUTH_METHOD_TOKEN`] is refused with 0x8C Bad authentication
    /// method.
    pub fn authenticate_with_method(
        &self,
        method: Option<&str>,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Option<Arc<Identity>>, Refused> {
        let Some(method) = method else {
            return self.authenticate(username, password);
        };
        if method != AUTH_METHOD_TOKEN {
            return Err(Refused::new(
                ReasonCode::BadAuthenticationMethod,
                format!("unsupported authentication method; this edge offers {AUTH_METHOD_TOKEN}"),
            ));
        }
        if password.is_none_or(<[u8]>::is_empty) {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "plantd-token needs the token as Authentication Data",
            ));
        }
        let Some(identity) = self.authenticate(username, password)? else {
            // Anonymous access without a trust store: nothing to verify.
            return Ok(None);
        };
        let mut identity = Arc::try_unwrap(identity).map_err(|_| {
            Refused::new(
                ReasonCode::ServerUnavailable,
                "identity shared unexpectedly",
            )
        })?;
        identity.auth_method = Some(AUTH_METHOD_TOKEN);
        Ok(Some(Arc::new(identity)))
    }

    /// The credentials of a CONNECT, whatever they are: with
    /// certificate-only login on, a CONNECT without password and without
    /// an authentication method whose TLS client certificate has the
    /// fingerprint `certificate` (computed by the link only then) is
    /// decided by [`certificates`]; everything else by
    /// [`authenticate_with_method`](Self::authenticate_with_method).
    ///
    /// # Errors
    /// [`Refused`] with the CONNACK reason (see the module table).
    pub fn authenticate_connect(
        &self,
        method: Option<&str>,
        username: Option<&str>,
        password: Option<&[u8]>,
        certificate: Option<plantd_shared::device_certs::Fingerprint>,
    ) -> Result<Option<Arc<Identity>>, Refused> {
        if method.is_none()
            && password.is_none_or(<[u8]>::is_empty)
            && let (Some(fingerprint), Some(directory)) = (certificate, self.certificates.get())
        {
            return self.authenticate_certificate(directory, &fingerprint);
        }
        self.authenticate_with_method(method, username, password)
    }

    /// Re-authentication of a live connection (AUTH 0x19 with `token` as
    /// Authentication Data, MQTT 5 §4.12.1): verified like a CONNECT's;
    /// it must name the same principal as `current`
    /// ([`Identity::same_principal`]: kind, subject, organisation). On
    /// success the connection's registration moves to the new token id and
    /// its expiry timer to the new `exp`; the returned identity replaces
    /// the connection's permissions.
    ///
    /// # Errors
    /// [`Refused`] when the connection did not authenticate with
    /// [`AUTH_METHOD_TOKEN`], the token is not accepted, or it names
    /// another principal.
    pub fn reauthenticate(
        self: &Arc<Self>,
        conn_id: u64,
        mailbox: &Arc<Mailbox>,
        current: &Identity,
        token: &[u8],
    ) -> Result<Arc<Identity>, Refused> {
        let Some(method) = current.auth_method else {
            return Err(Refused::new(
                ReasonCode::ProtocolError,
                "re-authentication needs an Authentication Method at CONNECT",
            ));
        };
        let Some(identity) = self.authenticate_with_method(Some(method), None, Some(token))? else {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "this edge cannot verify tokens",
            ));
        };
        if !identity.same_principal(current) {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "a re-authentication token must name the same principal",
            ));
        }
        self.release(conn_id);
        self.register(&identity, conn_id, mailbox);
        info!(subject = %identity.subject, jti = %identity.jti, expires = identity.expires, "connection re-authenticated");
        Ok(identity)
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
    fn register(&self, identity: &Arc<Identity>, conn_id: u64, mailbox: &Arc<Mailbox>) {
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
    fn release(&self, conn_id: u64) {
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
    fn kick(&self, jti: &str) -> usize {
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
