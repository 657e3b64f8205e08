//! AUTH from a client: re-authentication with a fresh token (MQTT 5
//! §4.12.1, method [`AUTH_METHOD_TOKEN`]). The connection keeps running on
//! the new token's permissions and expiry; a refused token closes it.
//!
//! Narrower permissions take effect on everything the connection holds
//! (`docs/decisions/0051-edge-reauthentication-narrows.md`): the router
//! removes the session's subscriptions the new token does not allow before
//! the client reads AUTH 0x00, deliveries queued under the old token are
//! written only if the new one lets the connection read their topic
//! (`outbound.rs`), and the will is published at the end only if the token
//! in force then allows its topic (`admission.rs`).

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::info;

use super::{Exit, Link, Step};
use crate::auth::AUTH_METHOD_TOKEN;
use crate::hooks::{Authorizer, ClientInfo};
use crate::protocol::ReasonCode;
use crate::protocol::v5::{self, Disconnect};
use crate::router::{RouterCmd, SubscriptionCheck};

/// The SUBSCRIBE rule: may `client` subscribe to `filter` — its token's
/// grants, then the configured [`Authorizer`]. The one place the link
/// decides it: for a SUBSCRIBE, for subscriptions already made, and for
/// deliveries after the connection's permissions narrowed.
pub(super) fn may_subscribe(
    client: &ClientInfo,
    auth: &Arc<dyn Authorizer>,
    filter: &plantd_shared::topic::Filter,
) -> bool {
    client.token_allows_subscribe(filter) && auth.can_subscribe(client, filter)
}

/// The SUBSCRIBE rule of `client` ([`may_subscribe`]) as the router
/// applies it to subscriptions already made.
pub(super) fn subscription_check(
    client: &ClientInfo,
    auth: &Arc<dyn Authorizer>,
) -> SubscriptionCheck {
    let (client, auth) = (client.clone(), auth.clone());
    SubscriptionCheck::new(move |f| may_subscribe(&client, &auth, f))
}

/// The router command that removes the subscriptions of `client`'s
/// session its permissions no longer allow.
pub(super) fn recheck(client: &ClientInfo, conn_id: u64, auth: &Arc<dyn Authorizer>) -> RouterCmd {
    RouterCmd::Recheck {
        client_id: client.client_id.clone(),
        conn_id,
        check: subscription_check(client, auth),
        removed: None,
    }
}

/// [`recheck`], and the router's answer: whether it removed any
/// subscription.
pub(super) fn recheck_answered(
    client: &ClientInfo,
    conn_id: u64,
    auth: &Arc<dyn Authorizer>,
) -> (RouterCmd, oneshot::Receiver<bool>) {
    let (tx, rx) = oneshot::channel();
    let mut cmd = recheck(client, conn_id, auth);
    if let RouterCmd::Recheck { removed, .. } = &mut cmd {
        *removed = Some(tx);
    }
    (cmd, rx)
}

impl Link {
    /// Handles an AUTH packet from the client.
    pub(super) fn on_auth(&mut self, a: Disconnect) -> Step {
        let current = self.info.identity.clone();
        let Some(current) = current.filter(|i| i.auth_method.is_some()) else {
            // [MQTT-4.12.0-6]-style: no method at CONNECT, no AUTH.
            return Step::Exit(Exit::Violation(
                ReasonCode::ProtocolError.code(),
                "AUTH without an Authentication Method at CONNECT".into(),
            ));
        };
        if a.reason != ReasonCode::ReAuthenticate.code() {
            return Step::Exit(Exit::Violation(
                ReasonCode::ProtocolError.code(),
                "a client's AUTH must ask to re-authenticate (0x19)".into(),
            ));
        }
        // [MQTT-4.12.1-1]: the method of a re-authentication is the
        // CONNECT's.
        if a.properties.authentication_method.as_deref() != current.auth_method {
            return Step::Exit(Exit::Violation(
                ReasonCode::ProtocolError.code(),
                "Authentication Method differs from the CONNECT's".into(),
            ));
        }
        let token = a.properties.authentication_data.unwrap_or_default();
        match self
            .ctx
            .authn
            .reauthenticate(self.conn_id, &self.mailbox, &current, &token)
        {
            Ok(identity) => {
                self.info.identity = Some(identity);
                // What was routed under the old token and is still queued
                // (or in flight, if the connection breaks and resumes) is
                // judged by the new one from here on.
                self.check_reads = true;
                let mut ok = Disconnect::new(ReasonCode::Success.code());
                ok.properties.authentication_method = Some(AUTH_METHOD_TOKEN.into());
                self.send(&v5::Packet::Auth(ok));
                // Routed before the AUTH 0x00 is written: nothing the
                // router fans out after the client reads it reaches a
                // subscription the new token does not allow.
                Step::Route(recheck(&self.info, self.conn_id, &self.ctx.auth))
            }
            Err(refused) => {
                info!(client_id = %self.info.client_id, why = %refused.why, "re-authentication refused; closing");
                // Like a revoked token: DISCONNECT 0x87, no will.
                Step::Exit(Exit::Kicked(ReasonCode::NotAuthorized.code()))
            }
        }
    }
}
