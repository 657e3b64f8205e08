//! Request/reply to site services over a real nats-server: an answer comes
//! back as the reply; no device → 503 at once; a slow device → 504.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use plantd_bridge::service::RequestFuture;
use plantd_bridge::{
    Service, ServiceConfig, ServiceError, ServiceReply, ServiceRequest, ServiceSink,
};
use plantd_shared::headers;
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use tokio::sync::oneshot;

/// Devices: `pump/1/status` answers, `slow/device` never does, nothing
/// else is served.
struct Devices;

impl ServiceSink for Devices {
    fn request(&self, req: ServiceRequest) -> RequestFuture<'_> {
        Box::pin(async move {
            match req.topic.as_str() {
                "pump/1/status" => Ok(ServiceReply {
                    payload: Bytes::from(format!(
                        "running; you said {}",
                        String::from_utf8_lossy(&req.payload)
                    )),
                    content_type: Some("text/plain".into()),
                    user_properties: vec![("rpm".into(), "1450".into())],
                }),
                "slow/device" => {
                    tokio::time::sleep(req.timeout * 10).await;
                    Err(ServiceError::Timeout(req.topic.to_string()))
                }
                other => Err(ServiceError::NoResponders(other.to_owned())),
            }
        })
    }
}

#[tokio::test]
async fn requests_reach_devices_and_failures_have_a_status() {
    let nats = Nats::start().await;
    let client = nats.client().await;
    let site = Site::new("plant-1").expect("site");
    let service = Service::bind(
        nats.client().await,
        ServiceConfig::new(site),
        Arc::new(Devices),
    )
    .await
    .expect("bind");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async move {
        let _ = stop_rx.await;
    }));

    let answer = client
        .request("plantd.plant-1.svc.pump.1.status", "hello".into())
        .await
        .expect("the service answers");
    assert_eq!(&answer.payload[..], b"running; you said hello");
    let h = answer.headers.expect("headers");
    assert_eq!(
        h.get(headers::CONTENT_TYPE).map(|v| v.as_str()),
        Some("text/plain")
    );
    assert_eq!(h.get("Plantd-User-rpm").map(|v| v.as_str()), Some("1450"));
    assert!(h.get(headers::STATUS).is_none());

    let started = Instant::now();
    let none = client
        .request("plantd.plant-1.svc.nobody.home", "x".into())
        .await
        .expect("reply");
    let status = none
        .headers
        .and_then(|h| h.get(headers::STATUS).map(|v| v.as_str().to_owned()));
    assert!(
        status.as_deref().is_some_and(|s| s.starts_with("503")),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no device → answered at once"
    );

    let mut h = HeaderMap::new();
    h.insert(headers::TIMEOUT_MS, "200");
    let slow = client
        .request_with_headers("plantd.plant-1.svc.slow.device", h, "x".into())
        .await
        .expect("reply");
    let status = slow
        .headers
        .and_then(|h| h.get(headers::STATUS).map(|v| v.as_str().to_owned()));
    assert!(
        status.as_deref().is_some_and(|s| s.starts_with("504")),
        "{status:?}"
    );

    let _ = stop.send(());
    task.await.expect("service task");
}
