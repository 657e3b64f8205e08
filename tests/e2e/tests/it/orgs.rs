//! The scenario of issue 11, end to end with tokens the identity service
//! issues: the bootstrap administrator creates organisation `initech` with
//! its own admin; that admin asks for a token for the bootstrap
//! organisation's site and is refused (403), and with its plain API token
//! reads nothing of the site and sends it no command (403). Its own
//! device, registered on its own site, gets nowhere at the other site's
//! edge. The owner's admin and devices keep working.

use plantd_e2e::{Options, SITE, Stack};
use reqwest::Method;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use serde_json::json;

const PASSWORD: &str = "initech admin password, long enough";

/// Whether an MQTT 5 client with `token` gets a CONNACK success from the
/// stack's edge (`Err` with the refusal otherwise).
async fn connects(stack: &Stack, id: &str, token: &str) -> Result<(), String> {
    let mqtt = stack.mqtt();
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_credentials(id, token);
    let (_client, mut events): (AsyncClient, _) = AsyncClient::new(o, 10);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))) => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(format!("{code:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    answer.unwrap_or_else(|_| Err("no answer in 10 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisation_cannot_reach_our_site() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let root = stack.login(&[]).await.expect("root login");
    let (s, v) = stack
        .call(
            Method::POST,
            "/v1/orgs",
            Some(&root),
            Some(&json!({"id": "initech", "name": "Initech",
                "admin_email": "admin@initech.test", "admin_password": PASSWORD})),
        )
        .await
        .expect("create org");
    assert_eq!(s, 201, "{v}");

    // A token for our site: refused, with the reason.
    let err = stack
        .login_as("admin@initech.test", PASSWORD, &[SITE])
        .await
        .expect_err("no token for another organisation's site");
    let err = err.to_string();
    assert!(
        err.contains("403") && err.contains("another organisation"),
        "{err}"
    );

    // Its API token reads nothing of our site and commands nothing there.
    let initech = stack
        .login_as("admin@initech.test", PASSWORD, &[])
        .await
        .expect("login");
    for (method, path, body) in [
        (
            Method::GET,
            format!("/v1/sites/{SITE}/history?filter=%23"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/sites/{SITE}/last?topic=line1/temp"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/sites/{SITE}/commands"),
            Some(json!({"topic": "valve/7/set", "payload": "open"})),
        ),
    ] {
        let (s, v) = stack
            .call(method, &path, Some(&initech), body.as_ref())
            .await
            .expect("call");
        assert_eq!(s, 403, "{path}: {v}");
    }

    // Its own device on its own site has no business at our edge.
    let (s, v) = stack
        .call(
            Method::POST,
            "/v1/sites",
            Some(&initech),
            Some(&json!({"id": "initech-1"})),
        )
        .await
        .expect("create site");
    assert_eq!(s, 201, "{v}");
    let (s, creds) = stack
        .call(
            Method::POST,
            "/v1/devices",
            Some(&initech),
            Some(&json!({"name": "spy", "site": "initech-1", "subscribe": ["#"]})),
        )
        .await
        .expect("create device");
    assert_eq!(s, 201, "{creds}");
    let (s, t) = stack
        .call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(&json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})),
        )
        .await
        .expect("device token");
    assert_eq!(s, 200, "{t}");
    let spy = t["access_token"].as_str().expect("token").to_owned();
    assert!(connects(&stack, "spy", &spy).await.is_err());

    // The owner's admin and device still get in.
    let ours = stack.login(&[SITE]).await.expect("owner login");
    let (s, v) = stack
        .call(
            Method::GET,
            &format!("/v1/sites/{SITE}/history?filter=%23"),
            Some(&ours),
            None,
        )
        .await
        .expect("history");
    assert_eq!(s, 200, "{v}");
    let (_, device) = stack
        .device(&ours, "press", &["line1/#"], &["line1/#"])
        .await
        .expect("device");
    connects(&stack, "press", &device)
        .await
        .expect("the owner's device connects");
    stack.stop().await;
}
