//! The AWS SDK set up as every plantd function uses it (feature `aws`):
//! the standard configuration from the environment (region, credentials,
//! `AWS_ENDPOINT_URL*`, which is how tests point it at the `moto`
//! emulator), with an HTTPS client on rustls with ring (no aws-lc C build,
//! and the same crypto provider as the rest of the workspace; see
//! docs/decisions/0011-lambda.md).

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The configuration loader with plantd's HTTPS client, before anything
/// is read from the environment; tests set an endpoint, region and
/// credentials on it.
pub fn config_loader() -> ConfigLoader {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(https)
}

/// The AWS configuration from the environment, with plantd's HTTPS client.
pub async fn sdk_config() -> SdkConfig {
    config_loader().load().await
}
