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
//!
//! | module | what it holds |
//! |---|---|
//! | this one | [`Authenticator`]: its settings and the site's owner; [`Refused`], the reason codes |
//! | `verify` | a CONNECT's credentials: token, enhanced authentication, re-authentication |
//! | `live` | live connections: [`Authenticator::admit`], expiry timers, revocation, a change of owner; [`Admission`] |
//! | [`certificates`] | certificate-only login: the site's registered device certificates |
//! | `identity` | [`Identity`]: a connection's principal and compiled permissions |
//! | `trust` | [`EdgeTrust`]: the trust store and the tasks keeping it fresh |

pub mod certificates;
mod identity;
mod live;
mod trust;
mod verify;

pub use identity::Identity;
pub use live::Admission;
pub use trust::{EdgeTrust, TrustSetupError};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use plantd_bridge::trust::Trust;
use plantd_shared::subject::Site;

use crate::protocol::ReasonCode;
use live::{LiveMap, Registered};

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
}
