//! The extension points later issues plug into: the publish hook (journal)
//! runs before the acknowledgement, and the authoriser sees every PUBLISH
//! and SUBSCRIBE.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use plantd_edge::hooks::{Authorizer, ClientInfo, HookError, HookFuture, PublishHook};
use plantd_edge::message::Publication;
use plantd_shared::topic::Filter;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::Notify;

/// Records topics; refuses `reject/...`; holds `slow/...` until released.
#[derive(Default)]
struct Journal {
    seen: Mutex<Vec<String>>,
    release: Notify,
}

impl PublishHook for Journal {
    fn accept<'a>(&'a self, _client: &'a ClientInfo, p: &'a Publication) -> HookFuture<'a> {
        Box::pin(async move {
            if p.topic.starts_with("slow/") {
                self.release.notified().await;
            }
            if p.topic.starts_with("reject/") {
                return Err(HookError("journal full".into()));
            }
            self.seen.lock().expect("lock").push(p.topic.to_string());
            Ok(())
        })
    }
}

struct NoWritesToPlc;

impl Authorizer for NoWritesToPlc {
    fn can_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        !topic.starts_with("plc/")
    }
    fn can_subscribe(&self, client: &ClientInfo, filter: &Filter) -> bool {
        !(filter.as_str().starts_with("audit/") && &*client.client_id != "auditor")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_waits_for_the_publish_hook_and_reports_its_refusal() {
    let journal = Arc::new(Journal::default());
    let j = journal.clone();
    let b = TestBroker::custom(|_| {}, move |br| br.with_publish_hook(j)).await;
    let (mut s, _) = v5(&b, "reader", |_| {}).await;
    s.sub("#", QoS::AtLeastOnce).await;
    let (mut p, _) = v5(&b, "writer", |_| {}).await;

    p.client
        .publish("slow/1", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    // Not acknowledged nor delivered while the hook holds it.
    s.no_publish().await;
    assert!(journal.seen.lock().expect("lock").is_empty());
    journal.release.notify_one();
    assert_eq!(p.puback().await.reason, m5::PubAckReason::Success);
    assert_eq!(&s.publish().await.topic[..], b"slow/1");
    assert_eq!(
        *journal.seen.lock().expect("lock"),
        vec!["slow/1".to_string()]
    );

    p.client
        .publish("reject/1", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(p.puback().await.reason, m5::PubAckReason::UnspecifiedError);
    s.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoriser_is_asked_on_every_publish_and_subscribe() {
    let b = TestBroker::custom(|_| {}, |br| br.with_authorizer(Arc::new(NoWritesToPlc))).await;
    let (mut s, _) = v5(&b, "anyone", |_| {}).await;
    let ack = s.sub("audit/#", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized]
    );
    s.sub("plc/#", QoS::AtMostOnce).await;
    let (mut auditor, _) = v5(&b, "auditor", |_| {}).await;
    let ack = auditor.sub("audit/#", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    let (mut p, _) = v5(&b, "hmi", |_| {}).await;
    p.client
        .publish("plc/setpoint", QoS::AtLeastOnce, false, "99")
        .await
        .expect("publish");
    assert_eq!(p.puback().await.reason, m5::PubAckReason::NotAuthorized);
    s.no_publish().await;
    b.stop().await;
}
