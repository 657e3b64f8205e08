//! A dashboard feed: the site's health, then every live value of a filter
//! as one JSON line each, across reconnects, until the token is refused.
//!
//! ```text
//! PLANTD_URL=http://127.0.0.1:8080 PLANTD_EMAIL=admin@plantd.local PLANTD_PASSWORD=… \
//!   cargo run -p plantd-client --example dashboard_feed -- local 'line1/#' [COUNT]
//! ```

use futures::StreamExt as _;
use plantd_client::{Error, Plantd};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).map_err(|_| Error::Invalid(format!("set {name}")));
    let mut args = std::env::args().skip(1);
    let site = args.next().unwrap_or_else(|| "local".to_owned());
    let filter = args.next().unwrap_or_else(|| "#".to_owned());
    let count: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);

    let plantd = Plantd::login(
        &env("PLANTD_URL")?,
        &env("PLANTD_EMAIL")?,
        env("PLANTD_PASSWORD")?,
    )
    .await?;
    let health = plantd.rest().get_sites_site_health(&site).await?.value;
    eprintln!("{site}: connected {}", health.connected);

    let mut states = plantd.live().states();
    tokio::spawn(async move {
        while let Some(s) = states.next().await {
            eprintln!("link {s:?}");
        }
    });
    let mut sub = plantd.live().subscribe(&site, &filter);
    for _ in 0..count {
        let Some(m) = sub.next().await else { break };
        let m = m?;
        let line = serde_json::json!({
            "sequence": m.sequence, "topic": m.topic, "time": m.time, "value": m.text(),
        });
        println!("{line}");
    }
    Ok(())
}
