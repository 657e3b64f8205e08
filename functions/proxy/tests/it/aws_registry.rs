//! The WebSocket connection registry against DynamoDB — the real AWS SDK
//! against the `moto` emulator: connections and subscriptions are stored,
//! found by site through the index, and removed.

use crate::aws_common;

use aws_common::{claims, registry};
use plantd_proxy::aws::registry::{Interest, Subscribed, Subscription};
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use plantd_testkit::Moto;

fn site(s: &str) -> Site {
    Site::new(s).expect("a site")
}

fn filter(f: &str) -> Filter {
    Filter::new(f).expect("a filter")
}

#[tokio::test]
async fn connections_and_subscriptions_are_stored_found_by_site_and_removed() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;

    let alice = claims("alice", 600, &[("plant-1", &["line1/#"])]);
    let bob = claims("bob", 600, &[("*", &["#"])]);
    reg.connect("conn-a", &alice).await.expect("put");
    reg.connect("conn-b", &bob).await.expect("put");

    // The connection item carries the claims (never the token) and the expiry.
    let a = reg
        .connection("conn-a")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(a.claims, alice);
    assert_eq!(a.expires, alice.exp);
    assert!(reg.connection("conn-x").await.expect("get").is_none());

    let sub = |conn: &'static str, id: &'static str, s: &'static str, f: &'static str, exp| {
        let reg = reg.clone();
        async move {
            reg.subscribe(
                conn,
                id,
                &Interest {
                    site: &site(s),
                    site_org: "acme",
                    filter: &filter(f),
                },
                exp,
                3,
            )
            .await
            .expect("subscribe")
        }
    };
    assert_eq!(
        sub("conn-a", "t", "plant-1", "line1/+/temp", alice.exp).await,
        Subscribed::Added
    );
    assert_eq!(
        sub("conn-a", "p", "plant-1", "line1/press/#", alice.exp).await,
        Subscribed::Added
    );
    assert_eq!(
        sub("conn-b", "all", "plant-1", "#", bob.exp).await,
        Subscribed::Added
    );
    assert_eq!(
        sub("conn-b", "two", "plant-2", "#", bob.exp).await,
        Subscribed::Added
    );
    // An id is unique per connection, not across connections.
    assert_eq!(
        sub("conn-a", "t", "plant-2", "x", alice.exp).await,
        Subscribed::Exists
    );
    assert_eq!(
        sub("conn-b", "t", "plant-1", "line1/+/temp", bob.exp).await,
        Subscribed::Added
    );
    // conn-b now holds 3: the limit.
    assert_eq!(
        sub("conn-b", "four", "plant-1", "#", bob.exp).await,
        Subscribed::TooMany
    );

    // One query finds every subscription of a site, and only that site's.
    let mut found = reg.by_site(&site("plant-1")).await.expect("query");
    found.sort_by(|x, y| (&x.connection, &x.id).cmp(&(&y.connection, &y.id)));
    let expect = |c: &str, id: &str, f: &str, exp: u64| Subscription {
        connection: c.into(),
        id: id.into(),
        site: "plant-1".into(),
        site_org: Some("acme".into()),
        filter: f.into(),
        expires: exp,
    };
    assert_eq!(
        found,
        vec![
            expect("conn-a", "p", "line1/press/#", alice.exp),
            expect("conn-a", "t", "line1/+/temp", alice.exp),
            expect("conn-b", "all", "#", bob.exp),
            expect("conn-b", "t", "line1/+/temp", bob.exp),
        ]
    );
    let two = reg.by_site(&site("plant-2")).await.expect("query");
    assert_eq!(two.len(), 1);
    assert_eq!(
        (two[0].connection.as_str(), two[0].id.as_str()),
        ("conn-b", "two")
    );
    assert!(
        reg.by_site(&site("plant-9"))
            .await
            .expect("query")
            .is_empty()
    );

    // Unsubscribe: once.
    assert!(reg.unsubscribe("conn-a", "t").await.expect("delete"));
    assert!(!reg.unsubscribe("conn-a", "t").await.expect("delete"));
    assert_eq!(reg.by_site(&site("plant-1")).await.expect("query").len(), 3);

    // Disconnect removes the connection and all its subscriptions.
    assert_eq!(reg.remove("conn-b").await.expect("remove"), 4);
    assert!(reg.connection("conn-b").await.expect("get").is_none());
    let left = reg.by_site(&site("plant-1")).await.expect("query");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].connection, "conn-a");
    assert!(
        reg.by_site(&site("plant-2"))
            .await
            .expect("query")
            .is_empty()
    );
    // Removing what is not there is not an error.
    assert_eq!(reg.remove("conn-b").await.expect("remove"), 0);
}

#[tokio::test]
async fn removing_a_connection_with_many_subscriptions_deletes_in_batches() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let c = claims("carol", 600, &[("plant-1", &["#"])]);
    reg.connect("conn-c", &c).await.expect("put");
    for i in 0..60 {
        let added = reg
            .subscribe(
                "conn-c",
                &format!("s{i}"),
                &Interest {
                    site: &site("plant-1"),
                    site_org: "acme",
                    filter: &filter("#"),
                },
                c.exp,
                100,
            )
            .await
            .expect("subscribe");
        assert_eq!(added, Subscribed::Added);
    }
    assert_eq!(
        reg.by_site(&site("plant-1")).await.expect("query").len(),
        60
    );
    // 61 items: three BatchWriteItem calls of at most 25.
    assert_eq!(reg.remove("conn-c").await.expect("remove"), 61);
    assert!(
        reg.by_site(&site("plant-1"))
            .await
            .expect("query")
            .is_empty()
    );
    assert!(reg.connection("conn-c").await.expect("get").is_none());
}

#[tokio::test]
async fn an_unreachable_table_is_a_clear_error() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let missing = plantd_proxy::aws::Registry::new(
        aws_sdk_dynamodb::Client::new(&aws_common::sdk(&moto.endpoint()).await),
        "no-such-table",
    );
    let err = missing
        .connection("conn-a")
        .await
        .expect_err("no such table");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-table") && msg.contains("GetItem"),
        "{msg}"
    );
    drop(reg);
}

#[tokio::test]
async fn connections_are_found_by_token_id() {
    let moto = Moto::start().await;
    let reg = registry(&moto, "plantd-connections").await;
    let alice = claims("alice", 600, &[("plant-1", &["#"])]);
    let bob = claims("bob", 600, &[("plant-1", &["#"])]);
    // Two sockets of one token, one of another; subscriptions are not
    // connections and do not show up by token id.
    for (conn, c) in [("a1", &alice), ("a2", &alice), ("b1", &bob)] {
        reg.connect(conn, c).await.expect("put");
    }
    reg.subscribe(
        "a1",
        "s",
        &Interest {
            site: &site("plant-1"),
            site_org: "acme",
            filter: &filter("#"),
        },
        alice.exp,
        3,
    )
    .await
    .expect("subscribe");

    let mut found = reg.by_jti(&alice.jti).await.expect("query");
    found.sort();
    assert_eq!(found, ["a1", "a2"]);
    assert!(reg.by_jti("jti-nobody").await.expect("query").is_empty());
    let mut expected = vec![
        (alice.jti.clone(), "a1".to_owned()),
        (alice.jti.clone(), "a2".to_owned()),
        (bob.jti.clone(), "b1".to_owned()),
    ];
    expected.sort();
    assert_eq!(reg.tokens().await.expect("scan"), expected);

    // Removing a connection removes it from the index too.
    reg.remove("a1").await.expect("remove");
    assert_eq!(reg.by_jti(&alice.jti).await.expect("query"), ["a2"]);
    assert_eq!(reg.tokens().await.expect("scan").len(), 2);
}
