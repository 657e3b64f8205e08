//! MQTT test clients over rumqttc — a 3.1.1 client ([`V4`]) and a 5.0
//! client ([`V5`]) whose event loops run in a task and whose packets the
//! test reads in order (`connack`, `suback`, `publish`, `puback`,
//! `no_publish`, how the connection `ended`), for any broker on a
//! loopback port: the edge in-process or as a process, Mosquitto.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// MQTT 5 packet types, as the tests name them.
pub use rumqttc::v5::mqttbytes::v5 as m5;

/// How long a client waits for a packet before calling it a timeout.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------- rumqttc v4

/// A rumqttc 3.1.1 client with its events.
pub struct V4 {
    /// The client handle.
    pub client: rumqttc::AsyncClient,
    /// Every event, and the error that ended the loop.
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
    /// The event loop.
    task: JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects a rumqttc 3.1.1 client and waits for its CONNACK.
pub async fn v4(port: u16, id: &str, f: impl FnOnce(&mut rumqttc::MqttOptions)) -> V4 {
    let mut c = v4_unchecked(port, id, f);
    let ack = c.connack().await.expect("v4 client connects");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    c
}

/// Starts a rumqttc 3.1.1 client without waiting for anything.
pub fn v4_unchecked(port: u16, id: &str, f: impl FnOnce(&mut rumqttc::MqttOptions)) -> V4 {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    f(&mut o);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    V4 {
        client,
        events,
        task,
    }
}

impl V4 {
    /// The next incoming packet (outgoing events skipped); `Err` when the
    /// connection ended.
    pub async fn incoming(&mut self) -> Result<rumqttc::Packet, String> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Err(_) => return Err("timeout".into()),
                Ok(None) => return Err("event loop ended".into()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(rumqttc::Event::Incoming(p)))) => return Ok(p),
                Ok(Some(Ok(rumqttc::Event::Outgoing(_)))) => {}
            }
        }
    }

    /// The CONNACK.
    pub async fn connack(&mut self) -> Result<rumqttc::ConnAck, String> {
        loop {
            if let rumqttc::Packet::ConnAck(a) = self.incoming().await? {
                return Ok(a);
            }
        }
    }

    /// The next PUBLISH.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn publish(&mut self) -> rumqttc::Publish {
        loop {
            match self.incoming().await {
                Ok(rumqttc::Packet::Publish(p)) => return p,
                Ok(_) => {}
                Err(e) => panic!("expected a PUBLISH, got {e}"),
            }
        }
    }

    /// The next SUBACK.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn suback(&mut self) -> rumqttc::SubAck {
        loop {
            match self.incoming().await {
                Ok(rumqttc::Packet::SubAck(s)) => return s,
                Ok(_) => {}
                Err(e) => panic!("expected a SUBACK, got {e}"),
            }
        }
    }

    /// The PUBACK of a QoS 1 publication and the PUBLISH of the same
    /// message back (the client subscribed to its own topic), in either
    /// order: the broker may deliver before it acknowledges.
    ///
    /// # Panics
    /// When the connection ends before both arrived.
    pub async fn puback_and_echo(&mut self) -> (u16, rumqttc::Publish) {
        let (mut ack, mut echo) = (None, None);
        loop {
            match self.incoming().await {
                Ok(rumqttc::Packet::PubAck(a)) => ack = Some(a.pkid),
                Ok(rumqttc::Packet::Publish(p)) if echo.is_none() => echo = Some(p),
                Ok(_) => {}
                Err(e) => panic!(
                    "expected a PUBACK and a PUBLISH, got {e} (PUBACK so far: {ack:?}, PUBLISH so far: {:?})",
                    echo.as_ref().map(|p: &rumqttc::Publish| &p.topic)
                ),
            }
            // Both must be in hand before the echo is taken out: taking
            // it while the PUBACK is still to come would lose it.
            if let (Some(a), Some(p)) = (ack, echo.as_ref()) {
                return (a, p.clone());
            }
        }
    }

    /// The next PUBACK.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn puback(&mut self) -> u16 {
        loop {
            match self.incoming().await {
                Ok(rumqttc::Packet::PubAck(a)) => return a.pkid,
                Ok(_) => {}
                Err(e) => panic!("expected a PUBACK, got {e}"),
            }
        }
    }

    /// Publishes `payload` to `topic` at QoS 1 and waits for the PUBACK;
    /// its packet id.
    pub async fn publish1(
        &mut self,
        topic: &str,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> u16 {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish");
        self.puback().await
    }

    /// Disconnects cleanly and waits until the DISCONNECT is sent (the
    /// event loop ends).
    pub async fn disconnect(&mut self) {
        self.client.disconnect().await.expect("disconnect");
        while self.incoming().await.is_ok() {}
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn sub(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe queued");
        self.suback().await
    }

    /// Asserts that no PUBLISH arrives for a short while.
    pub async fn no_publish(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))))) => {
                    panic!("unexpected PUBLISH on {}: {:?}", p.topic, p.payload)
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return,
            }
        }
    }
}

// ---------------------------------------------------------------- rumqttc v5

/// A rumqttc 5.0 client with its events.
pub struct V5 {
    /// The client handle.
    pub client: rumqttc::v5::AsyncClient,
    /// Every event, and the error that ended the loop.
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, String>>,
    /// The event loop.
    task: JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects a rumqttc 5.0 client and returns it with its CONNACK.
pub async fn v5(
    port: u16,
    id: &str,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (V5, m5::ConnAck) {
    let mut c = v5_unchecked(port, id, f);
    let ack = c.connack().await.expect("v5 client connects");
    assert_eq!(ack.code, m5::ConnectReturnCode::Success);
    (c, ack)
}

/// Starts a rumqttc 5.0 client without waiting for anything.
pub fn v5_unchecked(port: u16, id: &str, f: impl FnOnce(&mut rumqttc::v5::MqttOptions)) -> V5 {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    f(&mut o);
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 1000);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    V5 {
        client,
        events,
        task,
    }
}

impl V5 {
    /// The next incoming packet (outgoing events skipped); `Err` when the connection ended or after [`WAIT`].
    pub async fn incoming(&mut self) -> Result<m5::Packet, String> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Err(_) => return Err("timeout".into()),
                Ok(None) => return Err("event loop ended".into()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(rumqttc::v5::Event::Incoming(p)))) => return Ok(p),
                Ok(Some(Ok(rumqttc::v5::Event::Outgoing(_)))) => {}
            }
        }
    }

    /// The CONNACK.
    pub async fn connack(&mut self) -> Result<m5::ConnAck, String> {
        loop {
            if let m5::Packet::ConnAck(a) = self.incoming().await? {
                return Ok(a);
            }
        }
    }

    /// The next PUBLISH.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn publish(&mut self) -> m5::Publish {
        loop {
            match self.incoming().await {
                Ok(m5::Packet::Publish(p)) => return p,
                Ok(_) => {}
                Err(e) => panic!("expected a PUBLISH, got {e}"),
            }
        }
    }

    /// The next SUBACK.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn suback(&mut self) -> m5::SubAck {
        loop {
            match self.incoming().await {
                Ok(m5::Packet::SubAck(s)) => return s,
                Ok(_) => {}
                Err(e) => panic!("expected a SUBACK, got {e}"),
            }
        }
    }

    /// The next PUBACK.
    ///
    /// # Panics
    /// When the connection ends first.
    pub async fn puback(&mut self) -> m5::PubAck {
        loop {
            match self.incoming().await {
                Ok(m5::Packet::PubAck(a)) => return a,
                Ok(_) => {}
                Err(e) => panic!("expected a PUBACK, got {e}"),
            }
        }
    }

    /// Publishes `payload` to `topic` at QoS 1 and waits for the PUBACK.
    pub async fn publish1(
        &mut self,
        topic: &str,
        retain: bool,
        payload: impl Into<bytes::Bytes>,
    ) -> m5::PubAck {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain,
                payload,
            )
            .await
            .expect("publish");
        self.puback().await
    }

    /// Disconnects cleanly and waits until the DISCONNECT is sent (the
    /// event loop ends).
    pub async fn disconnect(&mut self) {
        self.client.disconnect().await.expect("disconnect");
        while self.incoming().await.is_ok() {}
    }

    /// How the connection ended: rumqttc reports a server DISCONNECT as an
    /// error naming its reason code (e.g. `SessionTakenOver`).
    pub async fn ended(&mut self) -> String {
        loop {
            if let Err(e) = self.incoming().await {
                return e;
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn sub(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) -> m5::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe queued");
        self.suback().await
    }

    /// Subscribes with a full filter (options) and an optional subscription identifier, and waits for the SUBACK.
    pub async fn sub_filter(&mut self, filter: m5::Filter, id: Option<usize>) -> m5::SubAck {
        let props = id.map(|id| m5::SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        });
        match props {
            Some(p) => self
                .client
                .subscribe_many_with_properties([filter], p)
                .await
                .expect("subscribe queued"),
            None => self
                .client
                .subscribe_many([filter])
                .await
                .expect("subscribe queued"),
        }
        self.suback().await
    }

    /// Asserts that no PUBLISH arrives for [`QUIET`].
    pub async fn no_publish(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(rumqttc::v5::Event::Incoming(m5::Packet::Publish(p))))) => {
                    panic!("unexpected PUBLISH on {:?}: {:?}", p.topic, p.payload)
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return,
            }
        }
    }
}
