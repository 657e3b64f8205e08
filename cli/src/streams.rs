//! `plantd streams`: create or update plantd's streams and KV buckets on a
//! NATS server — the step a cloud cluster needs before edges and functions
//! connect (`plantd up` does it for the local server by itself).

use std::path::Path;

use anyhow::{Context as _, Result};
use plantd_shared::streams::{self, Settings};

/// Connects to `url` (with `creds` if given) and ensures every stream and
/// bucket with `replicas` replicas, printing what was created or updated.
///
/// # Errors
/// When the server cannot be reached or refuses a stream or bucket.
pub async fn ensure(url: &str, creds: Option<&Path>, replicas: usize) -> Result<()> {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(c) = creds {
        opts = opts
            .credentials_file(c)
            .await
            .with_context(|| format!("cannot read credentials {}", c.display()))?;
    }
    let client = opts
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let js = async_nats::jetstream::new(client);
    let settings = Settings {
        replicas,
        ..Settings::default()
    };
    let report = streams::ensure(&js, &settings).await?;
    for name in &report.created {
        println!("created  {name}");
    }
    for name in &report.updated {
        println!("updated  {name}");
    }
    Ok(())
}
