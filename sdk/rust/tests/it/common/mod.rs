//! What the suite shares: `plantd up`, the administrator's client, devices
//! registered and given tokens through the SDK's own identity calls.

#![allow(dead_code)]

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use plantd_client::identity::types::{CreateDevice, TokenRequest};
use plantd_client::{LinkState, Options, Plantd};
use plantd_testkit::up::Up;

/// The site `plantd up` registers.
pub const SITE: &str = "local";

/// How long one step may take on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running stack and its administrator.
pub struct Stack {
    /// `plantd up`.
    pub up: Up,
    /// The administrator, logged in with a password.
    pub admin: Plantd,
}

impl Stack {
    /// Starts `plantd up` and logs the administrator in.
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    /// [`Stack::start`] with the administrator's client options.
    pub async fn start_with(options: Options) -> Stack {
        Self::start_with_env(options, &[]).await
    }

    /// [`Stack::start_with`], `plantd up` running with these `PLANTD_*`
    /// variables ([`Up::start_with_env`]).
    pub async fn start_with_env(options: Options, env: &[(&str, &str)]) -> Stack {
        let up = Up::start_with_env(env).await;
        let admin = Plantd::login_with(
            &up.url,
            &up.admin_email,
            up.admin_password.as_str(),
            options,
        )
        .await
        .expect("the administrator logs in");
        Stack { up, admin }
    }

    /// Another password session of the administrator.
    pub async fn login(&self, options: Options) -> Plantd {
        Plantd::login_with(
            &self.up.url,
            &self.up.admin_email,
            self.up.admin_password.as_str(),
            options,
        )
        .await
        .expect("the administrator logs in")
    }

    /// Registers device `name` on [`SITE`] with MQTT grants and gets its
    /// token: `(client id, access token)`, through the generated identity
    /// operations.
    pub async fn device(
        &self,
        name: &str,
        publish: &[&str],
        subscribe: &[&str],
    ) -> (String, String) {
        let creds = self
            .admin
            .rest()
            .post_devices(&CreateDevice {
                name: name.to_owned(),
                site: SITE.to_owned(),
                publish: Some(publish.iter().map(|s| (*s).to_owned()).collect()),
                subscribe: Some(subscribe.iter().map(|s| (*s).to_owned()).collect()),
                certificate_sha256: None,
            })
            .await
            .expect("the device is registered");
        assert_eq!(creds.status, 201);
        let token = self
            .admin
            .rest()
            .post_auth_token(&TokenRequest {
                grant_type: "client_credentials".to_owned(),
                client_id: creds.value.client_id.clone(),
                client_secret: creds.value.client_secret.clone(),
                sites: None,
            })
            .await
            .expect("the device gets a token");
        (creds.value.client_id, token.value.access_token)
    }

    /// A connected MQTT 3.1.1 device (its CONNACK received).
    pub async fn mqtt(&self, id: &str, token: &str) -> plantd_testkit::mqtt::V4 {
        plantd_testkit::mqtt::v4(self.up.mqtt_port, id, |o| {
            o.set_credentials(id, token);
        })
        .await
    }
}

/// The next item of `stream`, or a failure naming `what` after [`WAIT`].
pub async fn next<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("nothing within {WAIT:?}: {what}"))
        .unwrap_or_else(|| panic!("the stream ended: {what}"))
}

/// Waits until the state stream reports `want`.
pub async fn until(states: &mut (impl Stream<Item = LinkState> + Unpin), want: LinkState) {
    loop {
        if next(states, &format!("the link state {want:?}")).await == want {
            return;
        }
    }
}
