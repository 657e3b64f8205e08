//! Sequenced subscriptions on AWS (`"sequenced": true` / `"from_sequence"`):
//! the `websocket` function's handler hands them over NATS to a `fanout`
//! process's [`Sequencer`], which posts `subscribed` and then every stored
//! message with its stream sequence through the real
//! `aws-sdk-apigatewaymanagement` client — to a stand-in of the management
//! endpoint that records the posts (`aws_common::Stub`) — over a real
//! nats-server with `PLANTD_TELEMETRY`, and the registry in DynamoDB
//! (`moto`).

use crate::aws_common;
use crate::common;

use std::sync::Arc;
use std::time::Duration;

use aws_common::{Stub, claims, event, registry, sdk, with_body};
use plantd_proxy::aws::Registry;
use plantd_proxy::aws::fanout::{Fanout, management_client};
use plantd_proxy::aws::registry::{Interest, Subscribed};
use plantd_proxy::aws::sequenced::{self, Sequencer};
use plantd_proxy::aws::websocket::{Handler, WsResponse};
use plantd_proxy::routes::resume::Start;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use plantd_testkit::{Moto, eventually};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How long the fan-out gets for what a test waits for.
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    f: common::Fixture,
    moto: Moto,
    reg: Registry,
    ws: Handler,
    stub: Stub,
    fanout: Arc<Fanout>,
}

async fn setup() -> Setup {
    let f = common::fixture().await;
    let moto = Moto::start().await;
    let reg = registry(&moto, "conns").await;
    let ws = Handler::new(f.state.clone(), reg.clone(), 10);
    let stub = Stub::start(&[]).await;
    let config = sdk(&moto.endpoint()).await;
    let fanout = Arc::new(Fanout::new(
        reg.clone(),
        management_client(&config, &format!("{}/prod", stub.endpoint)),
    ));
    Setup {
        f,
        moto,
        reg,
        ws,
        stub,
        fanout,
    }
}

/// Runs a sequencer named `owner` until the returned token is cancelled.
fn run_sequencer(
    s: &Setup,
    owner: &str,
) -> (
    Arc<Sequencer>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let sequencer = Arc::new(Sequencer::new(
        owner,
        s.fanout.clone(),
        s.f.state.client.clone(),
    ));
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (sequencer, stop) = (sequencer.clone(), stop.clone());
        async move {
            sequenced::serve(sequencer, stop).await.expect("serve");
        }
    });
    (sequencer, stop, task)
}

/// Waits until process `owner` answers on its alive subject (its
/// subscriptions are on the server).
async fn answering(s: &Setup, owner: &str) {
    eventually(WAIT, "the sequencer answers", || async {
        s.f.state
            .client
            .request(sequenced::alive_subject(owner), "".into())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Stores a telemetry message as the edge's uplink does; its sequence.
async fn store(s: &Setup, subject: &str, payload: &'static [u8]) -> u64 {
    s.f.state
        .js
        .publish(subject.to_owned(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

/// The frames posted to connection `conn`, in order.
fn posted(stub: &Stub, conn: &str) -> Vec<Value> {
    let path = format!("/prod/@connections/{conn}");
    stub.seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path == path)
        .map(|s| serde_json::from_slice(&s.body).expect("JSON"))
        .collect()
}

/// Waits until `n` frames were posted to `conn`; all of them.
async fn posted_n(stub: &Stub, conn: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, "the posts", || async {
        let p = posted(stub, conn);
        (p.len() >= n).then_some(p)
    })
    .await
}

/// Connects `conn` with a token of `alice` (acme) that may read `line1/#`.
async fn connect(s: &Setup, conn: &str) {
    let token =
        s.f.key
            .sign(&claims("alice", 600, &[("plant-1", &["line1/#"])]))
            .expect("sign");
    let r =
        s.ws.handle_value(event("connect-query.json", conn, &token))
            .await;
    assert_eq!(r.status_code, 200);
}

async fn subscribe(s: &Setup, conn: &str, body: Value) -> WsResponse {
    s.ws.handle_value(with_body(event("subscribe.json", conn, ""), &body))
        .await
}

/// `(sequence, payload)` of message frames.
fn messages(frames: &[Value]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter(|f| f["op"] == "message")
        .map(|f| {
            assert!(f["time"].is_string(), "a stored time: {f}");
            (
                f["sequence"].as_u64().expect("sequence"),
                f["payload"].as_str().expect("payload").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_sequenced_subscription_on_aws_delivers_every_stored_message_in_order_and_resumes() {
    let s = setup().await;
    let (_p1, stop, task) = run_sequencer(&s, "p1");
    answering(&s, "p1").await;
    connect(&s, "c1").await;

    let first = store(&s, "plantd.plant-1.up.line1.temp", b"1").await;
    store(&s, "plantd.plant-1.up.line2.flow", b"not mine").await;
    let third = store(&s, "plantd.plant-1.up.line1.temp", b"3").await;

    // From the second stored message: the fan-out posts the answer (the
    // route response is empty), then the stored matching ones, in order.
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "from_sequence": first + 1}),
    )
    .await;
    assert_eq!(
        r,
        WsResponse {
            status_code: 200,
            body: None
        }
    );
    let frames = posted_n(&s.stub, "c1", 2).await;
    assert_eq!(
        frames[0],
        json!({"op": "subscribed", "id": "s", "from_sequence": first + 1})
    );
    assert_eq!(messages(&frames), [(third, "3".to_owned())]);
    // Not in the site index: the per-message fan-out never posts to it.
    let site = Site::new("plant-1").expect("site");
    assert!(s.reg.by_site(&site).await.expect("query").is_empty());
    let item = s
        .reg
        .sequenced("c1", "s")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (item.owner.as_deref(), item.from_sequence),
        (Some("p1"), first + 1)
    );

    // Live: new messages follow with their sequences; the frame is the
    // local one.
    let fourth = store(&s, "plantd.plant-1.up.line1.temp", b"4").await;
    let frames = posted_n(&s.stub, "c1", 3).await;
    assert_eq!(
        messages(&frames),
        [(third, "3".to_owned()), (fourth, "4".to_owned())]
    );
    let m = &frames[2];
    assert_eq!(
        (
            m["id"].as_str(),
            m["site"].as_str(),
            m["topic"].as_str(),
            m["headers"].is_object()
        ),
        (Some("s"), Some("plant-1"), Some("line1/temp"), true),
        "{m}"
    );

    // Unsubscribe: the process stops before the answer; nothing follows.
    let r =
        s.ws.handle_value(with_body(
            event("unsubscribe.json", "c1", ""),
            &json!({"op": "unsubscribe", "id": "s"}),
        ))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(r.body.as_deref().expect("a frame")).expect("JSON"),
        json!({"op": "unsubscribed", "id": "s"})
    );
    let fifth = store(&s, "plantd.plant-1.up.line1.temp", b"5").await;
    let sixth = store(&s, "plantd.plant-1.up.line1.temp", b"6").await;

    // A client that saw up to `fourth` resumes at `fourth + 1`: exactly
    // what it missed, then live, none twice.
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "again", "site": "plant-1", "filter": "line1/#", "from_sequence": fourth + 1}),
    )
    .await;
    assert_eq!(r.body, None);
    let frames = posted_n(&s.stub, "c1", 6).await;
    assert_eq!(
        frames[3],
        json!({"op": "subscribed", "id": "again", "from_sequence": fourth + 1})
    );
    assert_eq!(
        messages(&frames[4..]),
        [(fifth, "5".to_owned()), (sixth, "6".to_owned())]
    );
    assert!(
        frames.iter().skip(4).all(|f| f["id"] == "again"),
        "nothing more for `s`: {frames:?}"
    );

    // `sequenced: true` starts at the next message stored.
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "next", "site": "plant-1", "filter": "line1/temp", "sequenced": true}),
    )
    .await;
    assert_eq!(r.body, None);
    let frames = posted_n(&s.stub, "c1", 7).await;
    assert_eq!(
        frames[6],
        json!({"op": "subscribed", "id": "next", "from_sequence": sixth + 1})
    );
    let seventh = store(&s, "plantd.plant-1.up.line1.temp", b"7").await;
    let frames = posted_n(&s.stub, "c1", 9).await;
    let mut last: Vec<(Value, u64)> = frames[7..]
        .iter()
        .map(|f| (f["id"].clone(), f["sequence"].as_u64().expect("sequence")))
        .collect();
    last.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    assert_eq!(last, [(json!("again"), seventh), (json!("next"), seventh)]);

    // Retention dropped what a client asks for: it says so.
    s.f.state
        .js
        .get_stream(plantd_shared::streams::TELEMETRY)
        .await
        .expect("stream")
        .purge()
        .sequence(seventh)
        .await
        .expect("purge");
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "old", "site": "plant-1", "filter": "line1/#", "from_sequence": 1}),
    )
    .await;
    assert_eq!(r.body, None);
    let frames = posted_n(&s.stub, "c1", 10).await;
    let ack = frames
        .iter()
        .find(|f| f["op"] == "subscribed" && f["id"] == "old")
        .expect("the answer");
    assert_eq!(
        (ack["from_sequence"].as_u64(), ack["missed"].as_bool()),
        (Some(seventh), Some(true)),
        "{ack}"
    );
    // And `from_sequence` 0 is refused like locally.
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "z", "site": "plant-1", "filter": "line1/#", "from_sequence": 0}),
    )
    .await;
    let e: Value = serde_json::from_str(r.body.as_deref().expect("a frame")).expect("JSON");
    assert_eq!(
        (e["id"].as_str(), e["error"].as_str()),
        (Some("z"), Some("bad_request"))
    );
    stop.cancel();
    task.await.expect("sequencer");
}

#[tokio::test]
async fn without_a_fanout_process_a_sequenced_subscribe_is_unavailable_and_leaves_nothing() {
    let s = setup().await;
    connect(&s, "c1").await;
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "sequenced": true}),
    )
    .await;
    let e: Value = serde_json::from_str(r.body.as_deref().expect("a frame")).expect("JSON");
    assert_eq!(
        (e["id"].as_str(), e["error"].as_str()),
        (Some("s"), Some("unavailable")),
        "{e}"
    );
    assert!(s.reg.sequenced("c1", "s").await.expect("get").is_none());
    // The id is free again.
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#"}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(r.body.as_deref().expect("a frame")).expect("JSON"),
        json!({"op": "subscribed", "id": "s"})
    );
}

#[tokio::test]
async fn a_stopping_or_dead_fanout_process_closes_the_sockets_it_delivered_so_clients_resume() {
    let s = setup().await;
    let (p1, stop1, task1) = run_sequencer(&s, "p1");
    answering(&s, "p1").await;
    connect(&s, "c1").await;
    let r = subscribe(
        &s,
        "c1",
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "sequenced": true}),
    )
    .await;
    assert_eq!(r.body, None);
    posted_n(&s.stub, "c1", 1).await;
    assert_eq!(p1.delivering(), 1);

    // A process that stops closes its sockets: their clients reconnect and
    // resume from their last sequence on another one.
    stop1.cancel();
    task1.await.expect("sequencer");
    let deletes: Vec<String> = s
        .stub
        .seen()
        .into_iter()
        .filter(|x| x.method == "DELETE")
        .map(|x| x.path)
        .collect();
    assert_eq!(deletes, ["/prod/@connections/c1"]);
    assert!(s.reg.connection("c1").await.expect("get").is_none());

    // A process that died (owns subscriptions, answers nothing): another
    // closes their sockets; a living owner's are left alone.
    let (p2, stop2, task2) = run_sequencer(&s, "p2");
    let (_p3, stop3, task3) = run_sequencer(&s, "p3");
    answering(&s, "p2").await;
    answering(&s, "p3").await;
    let c = claims("bob", 600, &[("plant-1", &["#"])]);
    let site = Site::new("plant-1").expect("site");
    let filter = Filter::new("#").expect("filter");
    for (conn, owner) in [("orphan", "ghost"), ("kept", "p3")] {
        s.reg.connect(conn, &c).await.expect("connect");
        let added = s
            .reg
            .subscribe_sequenced(
                conn,
                "x",
                &Interest {
                    site: &site,
                    site_org: "acme",
                    filter: &filter,
                },
                c.exp,
                10,
                Start {
                    sequence: 1,
                    missed: false,
                },
            )
            .await
            .expect("subscribe");
        assert_eq!(added, Subscribed::Added);
        assert!(s.reg.claim(conn, "x", owner).await.expect("claim"));
        // One owner, ever.
        assert!(!s.reg.claim(conn, "x", "p4").await.expect("claim"));
    }
    // (A process also sweeps as it starts: p3's may have been first.)
    let closed = p2.adopt_orphans().await.expect("adopt");
    assert!(closed.is_empty() || closed == ["orphan"], "{closed:?}");
    assert!(s.reg.connection("orphan").await.expect("get").is_none());
    assert!(s.reg.connection("kept").await.expect("get").is_some());
    assert!(
        s.stub
            .seen()
            .iter()
            .any(|x| x.method == "DELETE" && x.path == "/prod/@connections/orphan")
    );
    stop2.cancel();
    task2.await.expect("sequencer");
    stop3.cancel();
    task3.await.expect("sequencer");
}

/// The `fanout` role of the real binary takes sequenced subscriptions (its
/// sequencer runs beside the per-message fan-out) and, stopped with
/// SIGTERM as ECS stops a task, closes the sockets it delivered so their
/// clients resume on another process.
#[tokio::test]
async fn the_fanout_binary_delivers_sequenced_subscriptions_and_closes_them_on_sigterm() {
    let s = setup().await;
    let mut process =
        crate::aws_fanout::start_fanout_on(&s.f.nats, &s.moto, &s.stub, "conns").await;
    connect(&s, "c1").await;
    let stored = store(&s, "plantd.plant-1.up.line1.temp", b"21.5").await;
    let body = json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "from_sequence": stored});
    // Until its sequencer listens, a subscribe is `unavailable` (and leaves
    // nothing behind, so it can be repeated).
    eventually(
        WAIT,
        "the fan-out process takes the subscription",
        || async {
            subscribe(&s, "c1", body.clone())
                .await
                .body
                .is_none()
                .then_some(())
        },
    )
    .await;
    let frames = posted_n(&s.stub, "c1", 2).await;
    assert_eq!(
        frames[0],
        json!({"op": "subscribed", "id": "s", "from_sequence": stored})
    );
    assert_eq!(messages(&frames[1..]), [(stored, "21.5".to_owned())]);

    process
        .terminate(Duration::from_secs(20))
        .await
        .expect("the process exits on SIGTERM");
    assert!(
        s.stub
            .seen()
            .iter()
            .any(|x| x.method == "DELETE" && x.path == "/prod/@connections/c1"),
        "{:?}",
        s.stub.seen()
    );
    assert!(s.reg.connection("c1").await.expect("get").is_none());
}
