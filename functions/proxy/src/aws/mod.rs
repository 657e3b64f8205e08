//! The proxy on AWS: the parts that only exist there.
//!
//! Locally one process holds every WebSocket ([`crate::routes::live`]). On
//! AWS, API Gateway holds them and the proxy is split in three roles of the
//! same binary (`PLANTD_PROXY_MODE`, see `docs/decisions/0017-proxy-aws-websocket.md`):
//!
//! | mode | runs as | module |
//! |---|---|---|
//! | `http` | Lambda behind the HTTP API (`lambda_http`) | [`crate::app`] |
//! | `websocket` | Lambda behind the WebSocket API: `$connect`, `$disconnect`, `auth`, `subscribe`, `unsubscribe`, `command`, `$default` | [`websocket`] |
//! | `fanout` | a long-lived process next to NATS: live messages → `post_to_connection`; revoked tokens → `delete_connection`; sequenced subscriptions, one ordered consumer each | [`fanout`], [`sequenced`] |
//!
//! Shared state between them is the connection registry in DynamoDB
//! ([`registry`]). Tokens are verified with the same [`crate::ApiTrust`] as the
//! REST routes, and subscriptions are authorised with the same
//! `plantd_shared::claims::Permissions::can_subscribe` as MQTT SUBSCRIBEs.
//!
//! The AWS SDK clients are configured the standard way (region,
//! credentials, `AWS_ENDPOINT_URL*`, which is how the tests point them at
//! the `moto` emulator) with an HTTPS client of rustls with ring, like
//! every other AWS client in the workspace (no aws-lc build):
//! [`plantd_shared::aws::sdk_config`].

pub mod fanout;
pub mod registry;
pub mod secrets;
pub mod sequenced;
pub mod websocket;

use thiserror::Error;

pub use fanout::Fanout;
pub use registry::Registry;

/// Which role the `plantd-proxy` binary plays (`PLANTD_PROXY_MODE`).
pub const MODE_ENV: &str = "PLANTD_PROXY_MODE";
/// The DynamoDB table of WebSocket connections (`websocket` and `fanout`).
pub const TABLE_ENV: &str = "PLANTD_CONNECTIONS_TABLE";
/// The WebSocket API's management endpoint, `https://<api>.execute-api.<region>.amazonaws.com/<stage>` (`fanout`).
pub const ENDPOINT_ENV: &str = "PLANTD_WS_ENDPOINT";

/// What failed talking to AWS. Messages name the operation and the
/// resource; they never carry tokens or payloads.
#[derive(Debug, Error)]
pub enum AwsError {
    /// A DynamoDB call failed.
    #[error("DynamoDB {operation} on table `{table}` failed: {detail}")]
    Dynamo {
        /// The operation (`PutItem`, `Query`, …).
        operation: &'static str,
        /// The table.
        table: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// An item in the table is not what this code writes.
    #[error("table `{table}`: item of connection `{connection}` is malformed: {what}")]
    Corrupt {
        /// The table.
        table: String,
        /// The connection id of the item.
        connection: String,
        /// What is wrong.
        what: String,
    },
    /// `post_to_connection` or `delete_connection` failed (other than 410 Gone).
    #[error("API Gateway {operation} to connection `{connection}` failed: {detail}")]
    Management {
        /// The operation.
        operation: &'static str,
        /// The connection id.
        connection: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// Reading `plantd_revoked` on NATS JetStream failed.
    #[error("JetStream {operation} failed: {detail}")]
    Backbone {
        /// What was attempted.
        operation: &'static str,
        /// The client's error.
        detail: String,
    },
    /// A required setting is missing.
    #[error("{0} is not set")]
    Missing(&'static str),
}

/// The value of a required environment variable.
///
/// # Errors
/// [`AwsError::Missing`] when it is unset or empty.
pub fn required_env(name: &'static str) -> Result<String, AwsError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(AwsError::Missing(name))
}
