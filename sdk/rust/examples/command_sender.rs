//! A command sender: one command to a device topic over the live socket
//! (or REST with `--rest`), then the pending list of the site.
//!
//! ```text
//! PLANTD_URL=… PLANTD_EMAIL=… PLANTD_PASSWORD=… \
//!   cargo run -p plantd-client --example command_sender -- local line1/valve/set open [--rest]
//! ```

use plantd_client::proxy::{params, types};
use plantd_client::{Error, Plantd};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).map_err(|_| Error::Invalid(format!("set {name}")));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [site, topic, payload, rest @ ..] = args.as_slice() else {
        return Err(Error::Invalid(
            "usage: command_sender SITE TOPIC PAYLOAD [--rest]".to_owned(),
        ));
    };
    let plantd = Plantd::login(
        &env("PLANTD_URL")?,
        &env("PLANTD_EMAIL")?,
        env("PLANTD_PASSWORD")?,
    )
    .await?;
    let command = types::Command {
        topic: topic.clone(),
        payload: Some(payload.clone()),
        qos: Some(1),
        ttl_secs: Some(60),
        ..Default::default()
    };
    let sent = if rest.iter().any(|a| a == "--rest") {
        plantd.send_command(site, &command).await?
    } else {
        plantd.live().publish(site, &command).await?
    };
    println!("stored in {} as #{}", sent.stream, sent.sequence);
    let pending = plantd
        .rest()
        .get_sites_site_commands(site, &params::GetSitesSiteCommandsParams::default())
        .await?
        .value;
    for c in pending.commands {
        println!("pending #{} {} {}", c.id, c.state, c.topic);
    }
    Ok(())
}
