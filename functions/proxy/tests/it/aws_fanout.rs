//! Fan-out on AWS: [`Fanout::fan_out`] reads the registry (DynamoDB in the
//! `moto` emulator) and posts to the matching connections with the real
//! `aws-sdk-apigatewaymanagement` client — to moto's management API, and
//! to a stand-in that answers 410 Gone like API Gateway does for a client
//! that left (moto never does; see `aws_common::Stub`).

use crate::aws_common;

use std::collections::BTreeMap;

use aws_common::{Stub, claims, registry, sdk};
use plantd_proxy::aws::fanout::{Fanout, management_client};
use plantd_proxy::aws::registry::{Interest, Subscribed};
use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};
use plantd_testkit::{Moto, eventually};

/// How long the fan-out gets for what a test waits for.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
use serde_json::{Value, json};

fn site(s: &str) -> Site {
    Site::new(s).expect("a site")
}

async fn subscribe(
    reg: &plantd_proxy::aws::Registry,
    conn: &str,
    id: &str,
    s: &str,
    f: &str,
    exp: u64,
) {
    let added = reg
        .subscribe(
            conn,
            id,
            &Interest {
                site: &site(s),
                site_org: "acme",
                filter: &Filter::new(f).expect("filter"),
            },
            exp,
            100,
        )
        .await
        .expect("subscribe");
    assert_eq!(added, Subscribed::Added);
}

#[tokio::test]
async fn fan_out_posts_to_matching_connections_and_closes_expired_ones() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let live = claims("alice", 600, &[("*", &["#"])]);
    let old = claims("olga", -5, &[("*", &["#"])]);
    for (conn, c) in [
        ("conn-a", &live),
        ("conn-b", &live),
        ("conn-c", &live),
        ("conn-old", &old),
    ] {
        reg.connect(conn, c).await.expect("connect");
    }
    subscribe(&reg, "conn-a", "temps", "plant-1", "line1/+/temp", live.exp).await;
    subscribe(&reg, "conn-b", "line2", "plant-1", "line2/#", live.exp).await;
    subscribe(&reg, "conn-c", "other-site", "plant-2", "#", live.exp).await;
    subscribe(&reg, "conn-old", "all", "plant-1", "#", old.exp).await;

    let config = sdk(&moto.endpoint()).await;
    let fanout = Fanout::new(reg.clone(), management_client(&config, &moto.endpoint()));
    let report = fanout
        .fan_out(
            &site("plant-1"),
            &Topic::new("line1/press/temp").expect("topic"),
            b"21.5",
            &BTreeMap::new(),
        )
        .await
        .expect("fan-out");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(report.failed, 0);
    assert!(report.gone.is_empty());
    assert_eq!(report.expired, vec!["conn-old".to_owned()]);

    // moto's management API received one post, to conn-a, and the
    // expired connection was closed; moto keeps the posted bytes to itself,
    // so its request log is the evidence.
    let log = moto.tail().join("\n");
    assert_eq!(log.matches("POST /@connections/").count(), 1, "{log}");
    assert!(log.contains("POST /@connections/conn-a "), "{log}");
    assert!(log.contains("DELETE /@connections/conn-old "), "{log}");
    // The expired connection is gone from the registry; the others stay.
    assert!(reg.connection("conn-old").await.expect("get").is_none());
    assert_eq!(reg.by_site(&site("plant-1")).await.expect("query").len(), 2);

    // A `$` topic is not matched by a leading wildcard (MQTT's rule), and a
    // topic nobody subscribed to posts nothing.
    subscribe(&reg, "conn-b", "everything", "plant-1", "#", live.exp).await;
    let report = fanout
        .fan_out(
            &site("plant-1"),
            &Topic::new("$SYS/uptime").expect("topic"),
            b"1",
            &BTreeMap::new(),
        )
        .await
        .expect("fan-out");
    assert_eq!(report.delivered, 0, "{report:?}");
}

#[tokio::test]
async fn connections_that_answer_410_gone_are_removed_and_frames_match_the_local_protocol() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let c = claims("bob", 600, &[("*", &["#"])]);
    for conn in ["alive", "gone"] {
        reg.connect(conn, &c).await.expect("connect");
        subscribe(&reg, conn, "s1", "plant-1", "line1/#", c.exp).await;
    }
    subscribe(&reg, "alive", "s2", "plant-1", "#", c.exp).await;

    // The API's endpoint includes the stage, as PLANTD_WS_ENDPOINT does.
    let stub = Stub::start(&["gone"]).await;
    let config = sdk(&moto.endpoint()).await;
    let api = management_client(&config, &format!("{}/prod", stub.endpoint));
    let fanout = Fanout::new(reg.clone(), api);
    let headers = BTreeMap::from([("Plantd-Qos".to_owned(), "1".to_owned())]);
    let report = fanout
        .fan_out(
            &site("plant-1"),
            &Topic::new("line1/valve").expect("topic"),
            &[0, 255],
            &headers,
        )
        .await
        .expect("fan-out");
    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(report.gone, vec!["gone".to_owned()]);
    assert!(report.expired.is_empty());
    assert!(reg.connection("gone").await.expect("get").is_none());
    assert!(reg.connection("alive").await.expect("get").is_some());
    let left = reg.by_site(&site("plant-1")).await.expect("query");
    assert!(left.iter().all(|s| s.connection == "alive"), "{left:?}");
    assert_eq!(left.len(), 2);

    // Every frame is the local /v1/ws "message" frame, once per matching
    // subscription; bytes that are not UTF-8 travel as base64.
    let mut frames: Vec<(String, Value)> = stub
        .seen()
        .into_iter()
        .map(|s| {
            assert_eq!(s.method, "POST");
            (
                s.path,
                serde_json::from_slice(&s.body).expect("a JSON frame"),
            )
        })
        .collect();
    frames.sort_by(|a, b| (&a.0, a.1["id"].as_str()).cmp(&(&b.0, b.1["id"].as_str())));
    let frame = |id: &str| {
        json!({"op": "message", "id": id, "site": "plant-1", "topic": "line1/valve",
               "payload_base64": "AP8=", "headers": {"Plantd-Qos": "1"}})
    };
    assert_eq!(
        frames,
        vec![
            ("/prod/@connections/alive".to_owned(), frame("s1")),
            ("/prod/@connections/alive".to_owned(), frame("s2")),
            ("/prod/@connections/gone".to_owned(), frame("s1")),
        ]
    );

    // Now that it is removed, the gone connection is not posted to again.
    let before = stub.seen().len();
    let report = fanout
        .fan_out(
            &site("plant-1"),
            &Topic::new("line1/valve").expect("topic"),
            b"open",
            &headers,
        )
        .await
        .expect("fan-out");
    assert_eq!(report.delivered, 2);
    assert!(report.gone.is_empty());
    assert_eq!(stub.seen().len(), before + 2);
}

#[tokio::test]
async fn an_unreadable_registry_fails_the_fan_out_and_posts_nothing() {
    let moto = Moto::start().await;
    let config = sdk(&moto.endpoint()).await;
    let reg = plantd_proxy::aws::Registry::new(aws_sdk_dynamodb::Client::new(&config), "missing");
    let stub = Stub::start(&[]).await;
    let fanout = Fanout::new(reg, management_client(&config, &stub.endpoint));
    let err = fanout
        .fan_out(
            &site("plant-1"),
            &Topic::new("a").expect("topic"),
            b"x",
            &BTreeMap::new(),
        )
        .await
        .expect_err("no table");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(stub.seen().is_empty());
}

/// Registers `site` to `org` in `plantd_sites` on `nats`, as identity's
/// `POST /v1/sites` does: the fan-out posts only for a site owned by the
/// organisation a subscription was authorised for.
async fn register_site(nats: &plantd_testkit::Nats, site_id: &str, org: &str) {
    let sites = plantd_shared::sites::Sites::open(&nats.jetstream().await)
        .await
        .expect("plantd_sites");
    sites
        .register(&site(site_id), org, site_id)
        .await
        .expect("register");
}

/// The real `plantd-proxy` binary in the `fanout` role, over `nats`, with
/// the registry table `plantd-connections` in `moto` and `stub` as the
/// management endpoint; started once it consumes. Killed on drop.
async fn start_fanout(
    nats: &plantd_testkit::Nats,
    moto: &Moto,
    stub: &Stub,
) -> plantd_shared::process::ManagedProcess {
    start_fanout_on(nats, moto, stub, "plantd-connections").await
}

/// [`start_fanout`] with the registry table `table`.
pub(crate) async fn start_fanout_on(
    nats: &plantd_testkit::Nats,
    moto: &Moto,
    stub: &Stub,
    table: &str,
) -> plantd_shared::process::ManagedProcess {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-proxy"));
    cmd.env_clear()
        .env(plantd_proxy::aws::MODE_ENV, "fanout")
        .env("PLANTD_NATS_URL", nats.url())
        .env(plantd_proxy::aws::TABLE_ENV, table)
        .env(
            plantd_proxy::aws::ENDPOINT_ENV,
            format!("{}/prod", stub.endpoint),
        )
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PLANTD_LOG", "info");
    plantd_shared::process::ManagedProcess::spawn(
        "plantd-proxy (fanout)",
        cmd,
        std::time::Duration::from_secs(60),
        |l| l.contains("fan-out consuming"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The `fanout` role of the binary: NATS messages in, posts out.
#[tokio::test]
async fn the_fanout_process_posts_what_the_edge_publishes() {
    use std::time::Duration;

    use plantd_testkit::Nats;

    let nats = Nats::start_with_streams().await;
    register_site(&nats, "plant-1", "acme").await;
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let c = claims("dora", 600, &[("*", &["#"])]);
    reg.connect("viewer", &c).await.expect("connect");
    subscribe(&reg, "viewer", "temps", "plant-1", "line1/+/temp", c.exp).await;
    let stub = Stub::start(&[]).await;

    let _fanout = start_fanout(&nats, &moto, &stub).await;

    // What the edge publishes for a device's PUBLISH (a topic nobody
    // watches, then one that matches).
    let client = nats.client().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Plantd-Qos", "1");
    client
        .publish_with_headers("plantd.plant-1.up.line2.x", headers.clone(), "no".into())
        .await
        .expect("publish");
    client
        .publish_with_headers("plantd.plant-1.up.line1.oven.temp", headers, "180".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    eventually(WAIT, "the post to the matching socket", || async {
        (!stub.seen().is_empty()).then_some(())
    })
    .await;
    // Give a stray second post time to show up (proving an absence).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = stub.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/prod/@connections/viewer");
    let frame: Value = serde_json::from_slice(&seen[0].body).expect("JSON");
    assert_eq!(
        frame,
        json!({"op": "message", "id": "temps", "site": "plant-1", "topic": "line1/oven/temp",
               "payload": "180", "headers": {"Plantd-Qos": "1"}})
    );
}

/// The `fanout` role closes the sockets of revoked tokens: revoked before
/// it started (found by the re-check when its watch of `plantd_revoked`
/// is established) and while it runs (heard on the watch).
#[tokio::test]
async fn the_fanout_process_closes_the_connections_of_revoked_tokens() {
    use plantd_shared::streams::REVOKED_BUCKET;
    use plantd_testkit::Nats;

    let nats = Nats::start_with_streams().await;
    register_site(&nats, "plant-1", "acme").await;
    let js = nats.jetstream().await;
    let revoked = js.get_key_value(REVOKED_BUCKET).await.expect("bucket");
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let early = claims("erin", 600, &[("*", &["#"])]);
    let late = claims("luke", 600, &[("*", &["#"])]);
    let kept = claims("kim", 600, &[("*", &["#"])]);
    for (conn, c) in [
        ("early", &early),
        ("late-1", &late),
        ("late-2", &late),
        ("kept", &kept),
    ] {
        reg.connect(conn, c).await.expect("connect");
        subscribe(&reg, conn, "all", "plant-1", "#", c.exp).await;
    }
    // What identity's logout writes: the token id, its expiry as the value.
    revoked
        .put(&early.jti, early.exp.to_string().into())
        .await
        .expect("revoke");
    let stub = Stub::start(&[]).await;

    let _fanout = start_fanout(&nats, &moto, &stub).await;

    let deleted = |stub: &Stub| -> Vec<String> {
        let mut d: Vec<String> = stub
            .seen()
            .into_iter()
            .filter(|s| s.method == "DELETE")
            .map(|s| s.path)
            .collect();
        d.sort();
        d
    };
    // Revoked before the process started: closed once its watch is up.
    eventually(WAIT, "the early revocation closes its socket", || async {
        (!deleted(&stub).is_empty()).then_some(())
    })
    .await;
    assert_eq!(deleted(&stub), ["/prod/@connections/early"]);
    eventually(WAIT, "the early socket leaves the registry", || async {
        (reg.connection("early").await.expect("get").is_none()).then_some(())
    })
    .await;

    // Revoked while it runs: both sockets of that token close.
    revoked
        .put(&late.jti, late.exp.to_string().into())
        .await
        .expect("revoke");
    eventually(WAIT, "the late revocation closes both sockets", || async {
        (deleted(&stub).len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        deleted(&stub),
        [
            "/prod/@connections/early",
            "/prod/@connections/late-1",
            "/prod/@connections/late-2"
        ]
    );
    eventually(WAIT, "the late sockets leave the registry", || async {
        (reg.connection("late-1").await.expect("get").is_none()
            && reg.connection("late-2").await.expect("get").is_none())
        .then_some(())
    })
    .await;
    // Nothing else was touched: the other token's socket and subscription stay.
    assert!(reg.connection("kept").await.expect("get").is_some());
    let left: Vec<String> = reg
        .by_site(&site("plant-1"))
        .await
        .expect("query")
        .into_iter()
        .map(|s| s.connection)
        .collect();
    assert_eq!(left, ["kept"]);

    // Live data now reaches only the remaining socket. Two messages of one
    // site are fanned out in order, so once the second reached `kept` the
    // first has been fanned out completely.
    let client = nats.client().await;
    for payload in ["1", "2"] {
        client
            .publish("plantd.plant-1.up.line1.temp", payload.into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let posts = |stub: &Stub| -> Vec<(String, Value)> {
        stub.seen()
            .into_iter()
            .filter(|s| s.method == "POST")
            .map(|s| (s.path, serde_json::from_slice(&s.body).expect("JSON")))
            .collect()
    };
    eventually(
        WAIT,
        "the second message reaches the kept socket",
        || async { (posts(&stub).iter().any(|(_, f)| f["payload"] == "2")).then_some(()) },
    )
    .await;
    let posts = posts(&stub);
    assert!(
        posts
            .iter()
            .all(|(path, _)| path == "/prod/@connections/kept"),
        "{posts:?}"
    );
    assert_eq!(posts.len(), 2, "{posts:?}");
}
