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
//! * **Enhanced authentication** (MQTT 5 §4.12, method
//!   [`AUTH_METHOD_TOKEN`] `plantd-token`): a CONNECT may carry the token as
//!   Authentication Data instead of the password; such a connection can
//!   **re-authenticate** at any time with AUTH 0x19 and a fresh token
//!   ([`Authenticator::reauthenticate`]): the same principal's new token
//!   replaces the old one's permissions, expiry and revocation id, and the
//!   broker answers AUTH 0x00; a token that is not accepted closes the
//!   connection with DISCONNECT 0x87. Any other method gets 0x8C.
//!
//! Reason codes at CONNECT (v5 / 3.1.1):
//!
//! | case | v5 | 3.1.1 |
//! |---|---|---|
//! | no password and anonymous access off | 0x87 Not authorized | 5 |
//! | token malformed, bad signature, unknown key, wrong algorithm, wrong audience, expired, not yet valid | 0x86 Bad user name or password | 4 |
//! | token revoked | 0x87 Not authorized | 5 |
//! | token of another organisation than the site's owner (`--org`, [`crate::owner`]; the bootstrap superadmin excepted) | 0x87 Not authorized | 5 |
//! | the edge does not know its site's owner (only when embedded without [`crate::owner::resolve`]) | 0x87 Not authorized | 5 |
//! | will topic outside the token's publish grants | 0x87 Not authorized | 5 |
//! | no signing keys known yet (nothing fetched, cached or configured) | 0x88 Server unavailable | 3 |
//!
//! See `docs/decisions/0012-edge-auth.md`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use plantd_bridge::trust::{Refusal, Trust};
use plantd_shared::claims::{Claims, Permissions};
use plantd_shared::jwt::{TokenError, now_secs};
use plantd_shared::sites::{self, Access};
use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};
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
/// v5 reason closing a connection whose token was revoked.
pub const REASON_REVOKED: u8 = ReasonCode::NotAuthorized.code();

/// A connection's proven identity: who the token names and what it may do
/// on this site, compiled once at CONNECT.
#[derive(Debug)]
pub struct Identity {
    /// The token's subject (user, service account or device id).
    pub subject: String,
    /// The token's organisation.
    pub org: String,
    /// The token id, the key of a revocation.
    pub jti: Arc<str>,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires: u64,
    /// The enhanced authentication method of the CONNECT
    /// ([`AUTH_METHOD_TOKEN`]); `None` for a token sent as the password.
    /// Only a connection with a method may re-authenticate.
    pub auth_method: Option<&'static str>,
    /// The site the permissions are checked for.
    site: Site,
    /// The token's MQTT grants, parsed.
    permissions: Permissions,
}

impl Identity {
    /// Compiles `claims` for `site`.
    pub fn new(site: Site, claims: &Claims) -> Self {
        Self {
            subject: claims.sub.clone(),
            org: claims.org.clone(),
            jti: Arc::from(claims.jti.as_str()),
            expires: claims.exp,
            auth_method: None,
            permissions: Permissions::from_claims(claims),
            site,
        }
    }

    /// May this identity PUBLISH to `topic` on the site? An invalid topic
    /// is never allowed. Answers to site service requests — the Response
    /// Topic `$plantd/reply/<id>` the broker put in a request this device
    /// received — are always allowed: the 128-bit id is known only to the
    /// devices the request went to.
    pub fn can_publish(&self, topic: &str) -> bool {
        if topic
            .strip_prefix(crate::inject::REPLY_PREFIX)
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        {
            return true;
        }
        Topic::new(topic).is_ok_and(|t| self.permissions.can_publish(&self.site, &t))
    }

    /// May this identity SUBSCRIBE to `filter` (without `$share/`) on the
    /// site?
    pub fn can_subscribe(&self, filter: &Filter) -> bool {
        self.permissions.can_subscribe(&self.site, filter)
    }
}

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

/// Decides who may connect and closes connections whose authority ends.
/// One per broker, shared by every link.
#[derive(Debug)]
pub struct Authenticator {
    /// The site tokens must be issued for.
    site: Site,
    /// The organisation that owns the site: tokens of any other (but the
    /// bootstrap superadmin's) are refused. `None`: unknown, and every
    /// token is refused.
    org: Option<String>,
    /// Keys and revocations; `None` when no `--jwks-url`/`--jwks-file` is
    /// configured (then only anonymous access is possible).
    trust: Option<Arc<Trust>>,
    /// Whether clients without a password are let in.
    allow_anonymous: bool,
    /// Authenticated connections by token id (touched at connect, at
    /// disconnect and on a revocation; never on the publish path).
    live: Mutex<LiveMap>,
    /// Each registered connection's current token id and expiry timer
    /// (a re-authentication replaces both).
    registered: Mutex<HashMap<u64, (Arc<str>, AbortHandle)>>,
}

impl Authenticator {
    /// An authenticator for `site`.
    /// Its site's owner is unknown until [`with_org`](Self::with_org).
    pub fn new(site: Site, trust: Option<Arc<Trust>>, allow_anonymous: bool) -> Self {
        Self {
            site,
            org: None,
            trust,
            allow_anonymous,
            live: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the organisation that owns the site (see [`crate::owner`]).
    #[must_use]
    pub fn with_org(mut self, org: Option<String>) -> Self {
        self.org = org;
        self
    }

    /// The site tokens must be issued for.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The organisation that owns the site, if known.
    pub fn org(&self) -> Option<&str> {
        self.org.as_deref()
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
        let Some(owner) = &self.org else {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "this edge does not know which organisation owns its site",
            ));
        };
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

    /// Re-authentication of a live connection (AUTH 0x19 with `token` as
    /// Authentication Data, MQTT 5 §4.12.1): verified like a CONNECT's;
    /// it must name the same subject and organisation as `current`. On
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
        if identity.subject != current.subject || identity.org != current.org {
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
    /// starts its expiry timer.
    fn register(&self, identity: &Identity, conn_id: u64, mailbox: &Arc<Mailbox>) {
        let jti = identity.jti.clone();
        if let Ok(mut live) = self.live.lock() {
            live.entry(jti.clone())
                .or_default()
                .push((conn_id, Arc::downgrade(mailbox)));
        }
        // The connection may have been revoked between verify and here.
        if self.trust.as_ref().is_some_and(|t| t.is_revoked(&jti)) {
            mailbox.push_ctl(
                conn_id,
                LinkCtl::Kick {
                    reason: REASON_REVOKED,
                },
            );
        }
        let deadline = identity.expires.saturating_add(EXPIRY_LEEWAY_SECS);
        let wait = Duration::from_secs(deadline.saturating_sub(now_secs()));
        let weak = Arc::downgrade(mailbox);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(m) = weak.upgrade() {
                m.push_ctl(
                    conn_id,
                    LinkCtl::Kick {
                        reason: REASON_EXPIRED,
                    },
                );
            }
        });
        if let Ok(mut registered) = self.registered.lock()
            && let Some((_, old)) = registered.insert(conn_id, (jti, timer.abort_handle()))
        {
            old.abort();
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
        if let Some((jti, timer)) = entry {
            timer.abort();
            self.remove(&jti, conn_id);
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

/// Why the edge's trust store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("signing keys: {0}")]
pub struct TrustSetupError(String);

/// The edge's trust store and the tasks that keep it fresh: the JWKS
/// refresh from `--jwks-url` and the revocation mirror from
/// `plantd_revoked`. Owns its tasks: [`stop`](Self::stop) ends and awaits
/// them.
#[derive(Debug)]
pub struct EdgeTrust {
    /// Keys and revocations, shared with the broker.
    trust: Arc<Trust>,
    /// Stops the tasks.
    stop: CancellationToken,
    /// The refresh and mirror tasks.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EdgeTrust {
    /// Sets up the trust store of `config`: `None` when neither
    /// `jwks_url` nor `jwks_file` is configured. The cache lives in
    /// `<data-dir>/trust` (so a site that lost its uplink, or restarts
    /// offline, keeps its keys and revocations).
    ///
    /// # Errors
    /// [`TrustSetupError`] for an invalid site, `--jwks-url` without
    /// `--data-dir`, or a JWKS file that cannot be read.
    pub fn start(config: &crate::Config) -> Result<Option<Self>, TrustSetupError> {
        if config.jwks_url.is_none() && config.jwks_file.is_none() {
            return Ok(None);
        }
        let site = Site::new(config.site.as_str()).map_err(|e| TrustSetupError(e.to_string()))?;
        let cache = match (&config.data_dir, &config.jwks_url) {
            (Some(dir), _) => dir.join("trust"),
            (None, Some(_)) => {
                return Err(TrustSetupError(
                    "--jwks-url needs --data-dir (fetched keys are cached there)".into(),
                ));
            }
            // A key file is its own cache; keep the (unused) copy private
            // to this process.
            (None, None) => {
                std::env::temp_dir().join(format!("plantd-edge-trust-{}", std::process::id()))
            }
        };
        let trust = Trust::new(site, cache);
        if let Some(file) = &config.jwks_file {
            trust
                .load_file(file)
                .map_err(|e| TrustSetupError(e.to_string()))?;
            info!(file = %file.display(), "signing keys loaded from file");
        }
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(url) = config.jwks_url.clone() {
            let every = Duration::from_secs(config.jwks_refresh_secs.max(1));
            info!(%url, cached = trust.has_keys(), "fetching signing keys");
            tasks.push(tokio::spawn(trust.clone().refresh_keys(
                url,
                every,
                stop.clone().cancelled_owned(),
            )));
        }
        Ok(Some(Self { trust, stop, tasks }))
    }

    /// `broker`, verifying tokens with `this` trust store when there is one.
    pub fn install(this: Option<&Self>, broker: crate::Broker) -> crate::Broker {
        match this {
            Some(t) => broker.with_trust(t.trust()),
            None => broker,
        }
    }

    /// The trust store.
    pub fn trust(&self) -> Arc<Trust> {
        self.trust.clone()
    }

    /// Mirrors revocations from `plantd_revoked` over `client` until
    /// [`stop`](Self::stop).
    pub fn mirror_revocations(&mut self, client: &async_nats::Client) {
        let js = async_nats::jetstream::new(client.clone());
        self.tasks.push(tokio::spawn(
            self.trust
                .clone()
                .mirror_revocations(js, self.stop.clone().cancelled_owned()),
        ));
    }

    /// Stops the refresh and mirror tasks and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod reply_tests {
    use plantd_shared::claims::{Audience, Claims, PrincipalKind};

    use super::*;

    #[test]
    fn devices_may_answer_service_requests_but_nothing_else_under_plantd() {
        let claims = Claims {
            iss: "t".into(),
            sub: "dev".into(),
            aud: Audience::One("plantd:site:s".into()),
            exp: u64::MAX,
            iat: 0,
            nbf: None,
            jti: "j".into(),
            org: "o".into(),
            kind: PrincipalKind::Device,
            roles: vec![],
            perms: vec![],
            mqtt: Default::default(),
        };
        let id = Identity::new(Site::new("s").expect("site"), &claims);
        assert!(id.can_publish("$plantd/reply/0123456789abcdef0123456789abcdef"));
        assert!(!id.can_publish("$plantd/reply/"), "an id is needed");
        assert!(!id.can_publish("$plantd/reply/a/b"), "one level only");
        assert!(!id.can_publish("$plantd/other"));
        assert!(!id.can_publish("line1/temp"), "no grants, no publish");
    }
}
