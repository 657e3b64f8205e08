//! Verifying credentials: a CONNECT's token (as the password, or as
//! Authentication Data with [`AUTH_METHOD_TOKEN`]), the choice between a
//! token and certificate-only login, and a live connection's
//! re-authentication with a fresh token (see the table in [`crate::auth`]).

use std::sync::Arc;

use plantd_bridge::trust::Refusal;
use plantd_shared::jwt::TokenError;
use plantd_shared::sites::{self, Access};
use tracing::{debug, info, warn};

use super::{AUTH_METHOD_TOKEN, Authenticator, Identity, Refused};
use crate::mailbox::Mailbox;
use crate::protocol::ReasonCode;

impl Authenticator {
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
    /// decided by [`certificates`](super::certificates); everything else by
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
}
