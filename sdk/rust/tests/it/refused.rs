//! A revoked token ends the stream with a typed refusal instead of a
//! reconnect loop: a password session that logs out, and a fixed token
//! that is revoked while a subscription uses it.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{Error, LinkState, Options, Plantd};

use crate::common::{SITE, Stack, next, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_the_stream_with_refused_not_a_reconnect_loop() {
    let stack = Stack::start().await;

    // A fixed token (another session's access token) in use by a stream.
    let other = stack.login(Options::default()).await;
    let token = other.rest().auth().token().await.expect("a token");
    let fixed = Plantd::with_token(&stack.up.url, token).expect("client");
    let mut fixed_states = fixed.live().states();
    let mut fixed_sub = fixed.live().subscribe(SITE, "sdk/#");
    until(&mut fixed_states, LinkState::Connected).await;

    // A password session's own stream.
    let mut states = stack.admin.live().states();
    let mut sub = stack.admin.live().subscribe(SITE, "sdk/#");
    until(&mut states, LinkState::Connected).await;

    // Logging out revokes the access token and the refresh family: the
    // server closes the socket ("token revoked") and renewing is refused.
    stack.admin.logout().await.expect("logout");
    let ended = next(&mut sub, "the refusal")
        .await
        .expect_err("a refusal, not a message");
    assert!(matches!(ended, Error::Refused(_)), "{ended:?}");
    assert_eq!(ended.status(), Some(401));
    assert!(
        sub.next().await.is_none(),
        "the stream ends after the refusal"
    );
    until(&mut states, LinkState::Refused).await;
    // No reconnect loop: the state stays refused.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), states.next())
            .await
            .is_err(),
        "the state changed after the refusal"
    );
    let call = stack
        .admin
        .get_state::<serde_json::Value>("sdk", "x")
        .await
        .expect_err("a logged-out session");
    assert!(matches!(call, Error::Refused(_)), "{call:?}");

    // The fixed token's owner logs out: that token is revoked too.
    other.logout().await.expect("logout");
    let ended = next(&mut fixed_sub, "the fixed token's refusal")
        .await
        .expect_err("a refusal, not a message");
    assert!(matches!(ended, Error::Refused(_)), "{ended:?}");
    until(&mut fixed_states, LinkState::Refused).await;
}
