//! Request/reply to services on the site: a NATS request on
//! `plantd.<site>.svc.<topic>` becomes an MQTT 5 request to `<topic>` (with
//! Response Topic and Correlation Data, made by the broker through
//! [`ServiceSink`]), and the device's answer is the NATS reply.
//!
//! Outcomes other than an answer are replies with an empty payload and a
//! `Plantd-Status` header: `503 …` when no device serves the topic (at
//! once), `504 …` when none answered in time. Callers (the proxy) turn
//! these into HTTP 503 and 504.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_shared::headers;
use plantd_shared::subject::{Channel, Site, prefix, subject_to_topic};
use plantd_shared::topic::Topic;
use tokio::sync::Semaphore;

/// A request for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    /// The MQTT topic the device serves.
    pub topic: Topic,
    /// The request payload.
    pub payload: Bytes,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Content type of the request, if given.
    pub content_type: Option<String>,
}

/// A device's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceReply {
    /// The answer's payload, byte for byte.
    pub payload: Bytes,
    /// Its MQTT 5 content type.
    pub content_type: Option<String>,
    /// Its MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
}

/// Why there is no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No device is subscribed to the topic.
    #[error("no device serves {0}")]
    NoResponders(String),
    /// No answer within the timeout.
    #[error("no answer from {0} in time")]
    Timeout(String),
}

/// Boxed future of [`ServiceSink::request`].
pub type RequestFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ServiceReply, ServiceError>> + Send + 'a>>;

/// The broker side of request/reply.
pub trait ServiceSink: Send + Sync + 'static {
    /// Publishes the request to the topic's subscribers as an MQTT 5
    /// request and resolves with the first answer, or
    /// [`ServiceError::NoResponders`] at once when nobody subscribes, or
    /// [`ServiceError::Timeout`].
    fn request(&self, request: ServiceRequest) -> RequestFuture<'_>;
}

/// Settings of the service bridge.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// This edge's site.
    pub site: Site,
    /// Timeout when the request does not carry `Plantd-Timeout-Ms`.
    pub default_timeout: Duration,
    /// Longest timeout a request may ask for.
    pub max_timeout: Duration,
    /// Requests handled at once; more wait.
    pub concurrency: usize,
}

impl ServiceConfig {
    /// Defaults for `site`: 10 s timeout (at most 60 s), 256 at once.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            concurrency: 256,
        }
    }
}

/// The service bridge of one site: a queue subscription on
/// `plantd.<site>.svc.>` (several edges of a site share the load).
pub struct Service<S> {
    /// The NATS connection replies go out on.
    client: async_nats::Client,
    /// Settings.
    cfg: ServiceConfig,
    /// The broker.
    sink: Arc<S>,
    /// Incoming requests.
    requests: async_nats::Subscriber,
}

impl<S: ServiceSink> Service<S> {
    /// Subscribes; when this returns the server knows the subscription, so
    /// requests sent afterwards reach it.
    ///
    /// # Errors
    /// When the subscription cannot be made or confirmed.
    pub async fn bind(
        client: async_nats::Client,
        cfg: ServiceConfig,
        sink: Arc<S>,
    ) -> Result<Self, async_nats::Error> {
        let subject = format!("{}.>", prefix(&cfg.site, Channel::Svc));
        let group = format!("plantd-edge-{}", cfg.site);
        let requests = client.queue_subscribe(subject.clone(), group).await?;
        round_trip(&client).await?;
        tracing::info!(%subject, "serving site requests");
        Ok(Self {
            client,
            cfg,
            sink,
            requests,
        })
    }

    /// Answers requests until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        tokio::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                _ = &mut shutdown => break,
                m = self.requests.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let Some(reply_to) = msg.reply.clone() else {
                tracing::debug!(subject = %msg.subject, "service request without a reply subject ignored");
                continue;
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let client = self.client.clone();
            let sink = self.sink.clone();
            let cfg = self.cfg.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let (headers, payload) = answer(&cfg, sink.as_ref(), &msg).await;
                if let Err(e) = client
                    .publish_with_headers(reply_to, headers, payload)
                    .await
                {
                    tracing::warn!(error = %e, "could not send a service reply");
                }
            });
        }
    }
}

async fn answer<S: ServiceSink>(
    cfg: &ServiceConfig,
    sink: &S,
    msg: &async_nats::Message,
) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|hm| hm.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let topic = match subject_to_topic(msg.subject.as_str()) {
        Ok(p) => p.topic,
        Err(e) => {
            h.insert(headers::STATUS, format!("400 {e}").as_str());
            return (h, Bytes::new());
        }
    };
    let timeout = header(headers::TIMEOUT_MS)
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(cfg.default_timeout)
        .min(cfg.max_timeout);
    let request = ServiceRequest {
        topic: topic.clone(),
        payload: msg.payload.clone(),
        timeout,
        content_type: header(headers::CONTENT_TYPE),
    };
    let outcome = match tokio::time::timeout(timeout, sink.request(request)).await {
        Ok(r) => r,
        Err(_) => Err(ServiceError::Timeout(topic.to_string())),
    };
    match outcome {
        Ok(reply) => {
            // What the device sent becomes valid headers whatever it holds.
            let esc = crate::message::Escaping::for_values(
                reply
                    .content_type
                    .as_deref()
                    .into_iter()
                    .chain(reply.user_properties.iter().map(|(_, v)| v.as_str())),
            );
            let value = |v: &str| esc.value(v);
            if let Some(ct) = &reply.content_type {
                h.insert(headers::CONTENT_TYPE, value(ct));
            }
            for (k, v) in &reply.user_properties {
                h.append(headers::user_property(k), value(v));
            }
            esc.mark(&mut h);
            (h, reply.payload)
        }
        Err(e) => {
            let code = match e {
                ServiceError::NoResponders(_) => 503,
                ServiceError::Timeout(_) => 504,
            };
            h.insert(headers::STATUS, format!("{code} {e}").as_str());
            (h, Bytes::new())
        }
    }
}

/// Returns once the server has processed everything this connection sent
/// before (a message to a fresh inbox comes back after it), so a
/// subscription made before is in place for every other client.
async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::Error> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the NATS connection closed during start-up".into()),
        Err(_) => Err("NATS did not answer a round trip within 10 s".into()),
    }
}
