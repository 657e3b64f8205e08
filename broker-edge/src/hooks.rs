//! Extension points: the journal ([`PublishHook`]) and authorisation
//! ([`Authorizer`]).
//!
//! Token permissions are not an `Authorizer`: they belong to the
//! connection ([`ClientInfo::identity`], compiled at CONNECT by
//! [`crate::auth`]) and are always enforced first, so replacing the
//! authoriser can only narrow what a token allows, never widen it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use plantd_shared::topic::Filter;

use crate::auth::Identity;
use crate::message::Publication;

/// Who is asking, for authorisation decisions.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client identifier of the session.
    pub client_id: Arc<str>,
    /// User name from CONNECT, if any (not a credential).
    pub username: Option<String>,
    /// The verified token's identity and compiled permissions; `None` for
    /// an anonymous client (only possible with `--allow-anonymous`).
    pub identity: Option<Arc<Identity>>,
    /// The common name of the verified client certificate, on a TLS
    /// listener with a client CA (`--tls-client-ca`); an identity beside
    /// the token (see `docs/decisions/0014-edge-tls.md`), or instead of it
    /// for a device registered with the certificate's fingerprint
    /// (`docs/decisions/0043-edge-certificate-login.md`).
    pub certificate: Option<Arc<str>>,
}

impl ClientInfo {
    /// Whether the connection's token (if any) allows a PUBLISH to
    /// `topic`. Anonymous clients are limited by the [`Authorizer`] only.
    pub fn token_allows_publish(&self, topic: &str) -> bool {
        self.identity.as_ref().is_none_or(|i| i.can_publish(topic))
    }

    /// Whether the connection's token (if any) allows a SUBSCRIBE to
    /// `filter`.
    pub fn token_allows_subscribe(&self, filter: &Filter) -> bool {
        self.identity
            .as_ref()
            .is_none_or(|i| i.can_subscribe(filter))
    }
}

/// Boxed future returned by [`PublishHook::accept`].
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send + 'a>>;

/// Why a hook refused a publication; the publisher gets reason 0x80 (v5)
/// or its connection closed (v3).
#[derive(Debug, Clone, thiserror::Error)]
#[error("publish hook refused the message: {0}")]
pub struct HookError(pub String);

/// What [`PublishHook::begin`] may hand back: a future that resolves when
/// the publication may be routed and acknowledged (for example when the
/// journal has made it durable).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send + 'static>>;

/// Boxed future returned by [`PublishHook::begin`].
pub type BeginFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Pending>, HookError>> + Send + 'a>>;

/// Called for every accepted PUBLISH *before* it is acknowledged or routed:
/// the durable journal appends here so that PUBACK/PUBREC waits on it.
pub trait PublishHook: Send + Sync + 'static {
    /// Takes the publication over; the broker acknowledges only after the
    /// returned future resolves `Ok`.
    fn accept<'a>(&'a self, client: &'a ClientInfo, publication: &'a Publication)
    -> HookFuture<'a>;

    /// Two-phase form of [`accept`](Self::accept): queue the publication
    /// quickly and return what to wait for. The link queues every
    /// publication of one read before waiting, so a journal can make them
    /// durable with one fsync; it routes and acknowledges them (in order)
    /// only when every pending future has resolved. The default waits for
    /// `accept` and returns nothing pending.
    fn begin<'a>(
        &'a self,
        client: &'a ClientInfo,
        publication: &'a Publication,
    ) -> BeginFuture<'a> {
        Box::pin(async move {
            self.accept(client, publication).await?;
            Ok(None)
        })
    }
}

/// Decides whether a client may publish to a topic or subscribe to a filter.
pub trait Authorizer: Send + Sync + 'static {
    /// May `client` publish to `topic`?
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool;
    /// May `client` subscribe to `filter` (without any `$share/` prefix)?
    fn can_subscribe(&self, client: &ClientInfo, filter: &Filter) -> bool;
}

/// The default rule set: allow everything except the static
/// `--deny-subscribe` filters (a subscription covered by one is refused).
#[derive(Debug, Clone, Default)]
pub struct StaticRules {
    /// Filters nobody may subscribe to.
    pub deny_subscribe: Vec<Filter>,
}

impl Authorizer for StaticRules {
    fn can_publish(&self, _client: &ClientInfo, _topic: &str) -> bool {
        true
    }

    fn can_subscribe(&self, _client: &ClientInfo, filter: &Filter) -> bool {
        !self
            .deny_subscribe
            .iter()
            .any(|deny| filter.is_covered_by(deny))
    }
}
