//! The AWS SDK set up as every plantd function uses it (feature `aws`):
//! the standard configuration from the environment (region, credentials,
//! `AWS_ENDPOINT_URL*`, which is how tests point it at the `moto`
//! emulator), with an HTTPS client on rustls with ring (no aws-lc C build,
//! and the same crypto provider as the rest of the workspace; see
//! docs/decisions/0011-lambda.md). Lambda builds take the configuration
//! from Lambda's environment alone (feature `aws-lambda-env`,
//! [`lambda_env`]).

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
///
/// With feature `aws-lambda-env` (Lambda builds only): [`lambda_env`].
pub async fn sdk_config() -> SdkConfig {
    #[cfg(feature = "aws-lambda-env")]
    {
        lambda_env(|name| std::env::var(name).ok())
    }
    #[cfg(not(feature = "aws-lambda-env"))]
    {
        config_loader().load().await
    }
}

/// The configuration Lambda's environment gives a function, read through
/// `var`: region `AWS_REGION` (or `AWS_DEFAULT_REGION`), the execution
/// role's credentials `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN` (read on each refresh), and `AWS_ENDPOINT_URL` for
/// an emulator; the SDK's defaults for retries, timeouts and the identity
/// cache. It reads no profile file and asks no metadata service, so the
/// default credential and region chains are not linked in
/// (`AWS_ENDPOINT_URL_<SERVICE>` is not read either). Empty values count
/// as unset.
pub fn lambda_env(var: impl Fn(&str) -> Option<String>) -> SdkConfig {
    use aws_config::Region;
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_sdk_secretsmanager::config::SharedCredentialsProvider;
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ));
    builder.set_region(
        var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .map(Region::new),
    );
    builder.set_endpoint_url(var("AWS_ENDPOINT_URL"));
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lambda configuration takes the region, the endpoint and the
    /// credentials provider from the environment, and nothing else.
    #[test]
    fn the_lambda_configuration_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = lambda_env(env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]));
        assert_eq!(c.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(c.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert!(c.credentials_provider().is_some());
        assert!(c.http_client().is_some());
        assert!(c.behavior_version().is_some());
        let c = lambda_env(env(&[
            ("AWS_REGION", ""),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]));
        assert_eq!(c.region().map(|r| r.as_ref()), Some("us-east-1"));
        assert_eq!(c.endpoint_url(), None, "no emulator: AWS's own endpoints");
        assert_eq!(lambda_env(env(&[])).region(), None);
    }
}
