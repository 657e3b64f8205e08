//! The broker from inside the process: the JetStream downlink delivers
//! cloud commands through it, and site service requests (NATS request →
//! MQTT 5 request with Response Topic and Correlation Data) go out and come
//! back through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use plantd_bridge::downlink::DeliverFuture;
use plantd_bridge::service::RequestFuture;
use plantd_bridge::{
    Command, CommandSink, ServiceError, ServiceReply, ServiceRequest, ServiceSink, SinkError,
};
use plantd_shared::topic::SubscriptionFilter;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::mailbox::Mailbox;
use crate::message::{MessageProperties, Publication};
use crate::protocol::QoS;
use crate::protocol::v5::{RetainHandling, SubscriptionOptions};
use crate::router::subscriptions::SubEntry;
use crate::router::{ConnectOutcome, ConnectRequest, RouterCmd};

/// The broker has stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the broker has stopped")]
pub struct Stopped;

/// A handle on a running broker. Holds only a weak reference to the
/// router, so it never keeps a stopping broker alive.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    /// The router's command channel.
    router: mpsc::WeakSender<RouterCmd>,
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl BrokerHandle {
    pub(crate) fn new(router: mpsc::WeakSender<RouterCmd>) -> Self {
        Self { router }
    }

    async fn send(&self, cmd: RouterCmd) -> Result<(), Stopped> {
        let tx = self.router.upgrade().ok_or(Stopped)?;
        tx.send(cmd).await.map_err(|_| Stopped)
    }

    /// Routes `publication` like a client's and returns the v5 reason: 0
    /// delivered or queued, 0x10 no subscriber, 0x97 every subscriber's
    /// queue full.
    ///
    /// # Errors
    /// [`Stopped`] when the broker is gone.
    pub async fn inject(&self, publication: Publication) -> Result<u8, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(RouterCmd::Inject {
            publication: Arc::new(publication),
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| Stopped)
    }

    /// Opens an internal session `client_id` subscribed (QoS 0, no retained
    /// messages) to `filter`; deliveries arrive in the returned mailbox.
    ///
    /// # Errors
    /// [`Stopped`] when the broker is gone or refuses.
    pub async fn internal_session(
        &self,
        client_id: &str,
        filter: &str,
    ) -> Result<Arc<Mailbox>, Stopped> {
        let client_id: Arc<str> = Arc::from(client_id);
        let (reply, rx) = oneshot::channel();
        self.send(RouterCmd::Connect(ConnectRequest {
            conn_id: u64::MAX,
            client_id: client_id.clone(),
            clean_start: true,
            session_expiry: 0,
            reply,
        }))
        .await?;
        let mailbox = match rx.await.map_err(|_| Stopped)? {
            ConnectOutcome::Accepted { mailbox, .. } => mailbox,
            ConnectOutcome::Refused(_) => return Err(Stopped),
        };
        let sub = SubscriptionFilter::parse(filter).map_err(|_| Stopped)?;
        let entry = SubEntry {
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::Never,
            },
            id: None,
        };
        self.send(RouterCmd::Subscribe {
            client_id,
            pkid: 1,
            items: vec![Ok((sub, entry))],
        })
        .await?;
        Ok(mailbox)
    }
}

/// Cloud commands into the broker (the downlink's sink). A command is
/// routed like a client's PUBLISH: accepted when at least one subscription
/// matches — a persistent session that is offline included, whose queue
/// keeps it like any MQTT message until the device returns;
/// [`SinkError::NoSubscribers`] when none matches (the downlink then holds
/// it, and later commands to its topic, without holding up other topics);
/// [`SinkError::Refused`] when every subscriber's queue is full. A retained
/// command is always accepted: the broker keeps it for whoever subscribes.
#[derive(Debug, Clone)]
pub struct EdgeCommands {
    /// The broker.
    pub broker: BrokerHandle,
}

impl CommandSink for EdgeCommands {
    fn deliver(&self, command: Command) -> DeliverFuture<'_> {
        Box::pin(async move {
            let properties = MessageProperties {
                content_type: command.content_type.clone(),
                ..MessageProperties::default()
            };
            let publication = Publication {
                topic: Arc::from(command.topic.as_str()),
                payload: command.payload.clone(),
                qos: qos_of(command.qos),
                retain: command.retain,
                // No Message Expiry Interval: nothing counts from here.
                received: None,
                properties,
                origin: None,
            };
            match self.broker.inject(publication).await {
                // Retained commands are kept by the broker for whoever comes.
                Ok(0x10) if !command.retain => Err(SinkError::NoSubscribers),
                Ok(0x97) => Err(SinkError::Refused(
                    "every subscriber's queue is full".into(),
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(SinkError::Refused(e.to_string())),
            }
        })
    }
}

type Waiters = Arc<Mutex<HashMap<Bytes, oneshot::Sender<ServiceReply>>>>;

/// Site service requests through the broker (the service bridge's sink):
/// each request is published to its topic as an MQTT 5 request whose
/// Response Topic is `$plantd/reply/<id>` and Correlation Data `<id>`; an
/// internal session subscribed to `$plantd/reply/#` hands answers back.
#[derive(Debug, Clone)]
pub struct EdgeServices {
    /// The broker.
    broker: BrokerHandle,
    /// Requests waiting for their answer, by correlation data.
    waiters: Waiters,
}

/// The prefix of response topics.
pub const REPLY_PREFIX: &str = "$plantd/reply/";

impl EdgeServices {
    /// Starts the internal reply session (once the broker runs) and
    /// returns the sink; the session task stops with `stop`.
    pub fn start(broker: BrokerHandle, stop: CancellationToken) -> Self {
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let this = Self {
            broker: broker.clone(),
            waiters: waiters.clone(),
        };
        tokio::spawn(async move {
            let mailbox = tokio::select! {
                _ = stop.cancelled() => return,
                m = broker.internal_session("$plantd-edge/services", "$plantd/reply/#") => match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "service replies unavailable");
                        return;
                    }
                },
            };
            let mut out = Vec::new();
            let mut ctl = Vec::new();
            loop {
                mailbox.pop_ctl(u64::MAX, &mut ctl);
                ctl.clear();
                mailbox.pop_ready(&mut out, 0, 256);
                for d in out.drain(..) {
                    let p = &d.publication;
                    let Some(corr) = p.properties.correlation_data.clone() else {
                        continue;
                    };
                    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&corr));
                    if let Some(tx) = waiter {
                        let _ = tx.send(ServiceReply {
                            payload: p.payload.clone(),
                            content_type: p.properties.content_type.clone(),
                            user_properties: p.properties.user_properties.clone(),
                        });
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    () = mailbox.notified() => {}
                }
            }
        });
        this
    }
}

impl ServiceSink for EdgeServices {
    fn request(&self, req: ServiceRequest) -> RequestFuture<'_> {
        Box::pin(async move {
            let id = format!("{:032x}", rand::random::<u128>());
            let corr = Bytes::from(id.clone());
            let (tx, rx) = oneshot::channel();
            if let Ok(mut w) = self.waiters.lock() {
                w.insert(corr.clone(), tx);
            }
            let forget = || {
                if let Ok(mut w) = self.waiters.lock() {
                    w.remove(&corr);
                }
            };
            let properties = MessageProperties {
                content_type: req.content_type.clone(),
                response_topic: Some(format!("{REPLY_PREFIX}{id}")),
                correlation_data: Some(corr.clone()),
                ..MessageProperties::default()
            };
            let publication = Publication {
                topic: Arc::from(req.topic.as_str()),
                payload: req.payload,
                qos: QoS::AtLeastOnce,
                retain: false,
                // No Message Expiry Interval: nothing counts from here.
                received: None,
                properties,
                origin: None,
            };
            match self.broker.inject(publication).await {
                Ok(0x10) | Err(_) => {
                    forget();
                    return Err(ServiceError::NoResponders(req.topic.to_string()));
                }
                Ok(_) => {}
            }
            match tokio::time::timeout(req.timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                _ => {
                    forget();
                    Err(ServiceError::Timeout(req.topic.to_string()))
                }
            }
        })
    }
}
