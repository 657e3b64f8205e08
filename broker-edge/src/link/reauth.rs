//! AUTH from a client: re-authentication with a fresh token (MQTT 5
//! §4.12.1, method [`AUTH_METHOD_TOKEN`]). The connection keeps running on
//! the new token's permissions and expiry; a refused token closes it.

use tracing::info;

use super::{Exit, Link, Step};
use crate::auth::AUTH_METHOD_TOKEN;
use crate::protocol::ReasonCode;
use crate::protocol::v5::{self, Disconnect};

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
                let mut ok = Disconnect::new(ReasonCode::Success.code());
                ok.properties.authentication_method = Some(AUTH_METHOD_TOKEN.into());
                self.send(&v5::Packet::Auth(ok));
                Step::Done
            }
            Err(refused) => {
                info!(client_id = %self.info.client_id, why = %refused.why, "re-authentication refused; closing");
                // Like a revoked token: DISCONNECT 0x87, no will.
                Step::Exit(Exit::Kicked(ReasonCode::NotAuthorized.code()))
            }
        }
    }
}
