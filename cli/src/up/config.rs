//! The configuration of `plantd up` ([`UpConfig`]: file `--config`,
//! `PLANTD_*` env, flags as [`UpOverrides`]), its defaults, and the checks
//! that turn it into the components' own settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Configuration of `plantd up` (file `--config`, `PLANTD_*` env, flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpConfig {
    /// Where every component keeps its data.
    pub data_dir: PathBuf,
    /// The local nats-server.
    pub nats: NatsConfig,
    /// The local functions server.
    pub http: HttpConfig,
    /// The edge broker.
    pub edge: EdgeConfig,
}

/// The local edge broker's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Site name of this machine's edge.
    pub site: String,
    /// MQTT listener; `127.0.0.1:0` picks a free port.
    pub mqtt_listen: String,
    /// Health and metrics listener.
    pub http_listen: String,
    /// Let MQTT clients in without a token (loudly logged).
    pub allow_anonymous: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            site: "local".into(),
            mqtt_listen: "127.0.0.1:1883".into(),
            http_listen: "127.0.0.1:9090".into(),
            allow_anonymous: false,
        }
    }
}

/// The longest `http.access_token_ttl_secs` accepted (a day).
const MAX_ACCESS_TTL_SECS: u64 = 24 * 60 * 60;

/// The local functions server's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub listen: String,
    /// Email of the local administrator created on first start.
    pub admin_email: String,
    /// The built web app served at `/` (`app/dist`); unset: `app/dist`
    /// under the working directory, else the repository's this binary was
    /// built from, when either has an `index.html` (docs/app.md).
    pub app_dir: Option<PathBuf>,
    /// Lifetime of the access tokens identity issues, in seconds (default
    /// 900; 1 to 86,400). Sessions renew theirs with the refresh token; a
    /// live socket is closed when its token expires, and the SDKs and
    /// `plantd sub` resume it with a renewed one (docs/sdk.md).
    pub access_token_ttl_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_email: "admin@plantd.local".into(),
            app_dir: None,
            access_token_ttl_secs: plantd_identity::Settings::default().access_ttl.as_secs(),
        }
    }
}

/// The local nats-server's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Address to bind; loopback unless you mean to expose it.
    pub host: String,
    /// Client port; `0` picks a free one.
    pub port: u16,
    /// The nats-server binary; empty finds it in `.venv/bin` or `PATH`.
    pub binary: Option<PathBuf>,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(super::DEFAULT_DATA_DIR),
            nats: NatsConfig::default(),
            http: HttpConfig::default(),
            edge: EdgeConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 4222,
            binary: None,
        }
    }
}

/// Command-line overrides for [`UpConfig`]; `None` leaves the file's or the
/// default value.
#[derive(Debug, Default, Serialize)]
pub struct UpOverrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--nats-*` flags.
    #[serde(skip_serializing_if = "NatsOverrides::is_empty")]
    pub nats: NatsOverrides,
    /// `--http-listen`.
    #[serde(skip_serializing_if = "HttpOverrides::is_empty")]
    pub http: HttpOverrides,
    /// `--mqtt-listen`, `--edge-http-listen`, `--allow-anonymous`.
    #[serde(skip_serializing_if = "EdgeOverrides::is_empty")]
    pub edge: EdgeOverrides,
}

/// Edge flags.
#[derive(Debug, Default, Serialize)]
pub struct EdgeOverrides {
    /// `--mqtt-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_listen: Option<String>,
    /// `--edge-http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// `--allow-anonymous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
}

impl EdgeOverrides {
    fn is_empty(&self) -> bool {
        self.mqtt_listen.is_none() && self.http_listen.is_none() && self.allow_anonymous.is_none()
    }
}

/// `--http-listen`.
#[derive(Debug, Default, Serialize)]
pub struct HttpOverrides {
    /// `--http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--app-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_dir: Option<PathBuf>,
}

impl HttpOverrides {
    fn is_empty(&self) -> bool {
        self.listen.is_none() && self.app_dir.is_none()
    }
}

/// `--nats-host`, `--nats-port`.
#[derive(Debug, Default, Serialize)]
pub struct NatsOverrides {
    /// `--nats-host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `--nats-port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl NatsOverrides {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.port.is_none()
    }
}

/// Loads the configuration for `plantd up`.
///
/// # Errors
/// A one-line error naming the bad key and its file.
pub fn load_config(file: Option<&Path>, overrides: &UpOverrides) -> Result<UpConfig> {
    Ok(plantd_shared::config::load(file, overrides)?)
}

/// Identity's settings from the `http` table.
///
/// # Errors
/// `http.access_token_ttl_secs` out of 1..=86,400.
pub(super) fn identity_settings(http: &HttpConfig) -> Result<plantd_identity::Settings> {
    let ttl = http.access_token_ttl_secs;
    if !(1..=MAX_ACCESS_TTL_SECS).contains(&ttl) {
        anyhow::bail!(
            "http.access_token_ttl_secs is {ttl}: give 1 to {MAX_ACCESS_TTL_SECS} seconds"
        );
    }
    Ok(plantd_identity::Settings {
        access_ttl: Duration::from_secs(ttl),
        ..plantd_identity::Settings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let c = load_config(
            None,
            &UpOverrides {
                data_dir: Some("/tmp/x".into()),
                nats: NatsOverrides {
                    port: Some(5222),
                    host: None,
                },
                http: HttpOverrides::default(),
                edge: EdgeOverrides::default(),
            },
        )
        .expect("config");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.nats.port, 5222);
        assert_eq!(c.nats.host, "127.0.0.1");
    }

    #[test]
    fn the_access_token_lifetime_is_identitys_and_bounded() {
        let mut http = HttpConfig::default();
        assert_eq!(
            identity_settings(&http).expect("default").access_ttl,
            plantd_identity::Settings::default().access_ttl
        );
        http.access_token_ttl_secs = 3;
        assert_eq!(
            identity_settings(&http).expect("3 s").access_ttl,
            Duration::from_secs(3)
        );
        for bad in [0, MAX_ACCESS_TTL_SECS + 1] {
            http.access_token_ttl_secs = bad;
            let e = identity_settings(&http).expect_err("out of range");
            assert!(e.to_string().contains("http.access_token_ttl_secs"), "{e}");
        }
    }
}
