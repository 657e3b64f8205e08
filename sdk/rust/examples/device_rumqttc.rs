//! A device with a standard MQTT client (rumqttc, MQTT 5): it publishes
//! readings and a log line, and answers service calls on its Response
//! Topic with the request's Correlation Data. Its token comes from
//! `POST /v1/auth/token` with its client id and secret (see docs/sdk.md).
//!
//! ```text
//! PLANTD_MQTT=127.0.0.1:1883 PLANTD_DEVICE_ID=dev-… PLANTD_DEVICE_TOKEN=… \
//!   cargo run -p plantd-client --example device_rumqttc -- line1/oven [READINGS]
//! ```
//!
//! Publishes `<prefix>/temp` readings (QoS 1), one line on
//! `$plantd/log/<client id>`, serves `<prefix>/status` until it has sent
//! its readings and answered one call.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let address = env("PLANTD_MQTT")?;
    let (host, port) = address.rsplit_once(':').ok_or("PLANTD_MQTT is host:port")?;
    let id = env("PLANTD_DEVICE_ID")?;
    let mut args = std::env::args().skip(1);
    let prefix = args.next().unwrap_or_else(|| "line1/oven".to_owned());
    let readings: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);

    let mut options = MqttOptions::new(id.clone(), host, port.parse()?);
    options.set_credentials(id.clone(), env("PLANTD_DEVICE_TOKEN")?);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 64);
    let service = format!("{prefix}/status");
    client.subscribe(service.as_str(), QoS::AtLeastOnce).await?;
    client
        .publish(
            format!("$plantd/log/{id}"),
            QoS::AtLeastOnce,
            false,
            "device started",
        )
        .await?;

    let publisher = client.clone();
    let topic = format!("{prefix}/temp");
    let readings_done = tokio::spawn(async move {
        for i in 0..readings {
            let value = format!("{:.1}", 20.0 + f64::from(i) / 2.0);
            publisher
                .publish(topic.as_str(), QoS::AtLeastOnce, false, value)
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, rumqttc::v5::ClientError>(())
    });

    let mut answered = 0;
    while answered == 0 || !readings_done.is_finished() {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(60), events.poll()).await else {
            return Err("no service call within a minute".into());
        };
        let Event::Incoming(Packet::Publish(request)) = event? else {
            continue;
        };
        let props = request.properties.unwrap_or_default();
        let Some(reply_to) = props.response_topic else {
            continue;
        };
        let answer = PublishProperties {
            correlation_data: props.correlation_data,
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        };
        let body = format!(
            r#"{{"running":true,"asked":{:?}}}"#,
            String::from_utf8_lossy(&request.payload)
        );
        client
            .publish_with_properties(reply_to, QoS::AtLeastOnce, false, body, answer)
            .await?;
        answered += 1;
        println!("answered a call on {service}");
    }
    readings_done.await??;
    client.disconnect().await?;
    // Let the DISCONNECT go out.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await {}
    Ok(())
}
