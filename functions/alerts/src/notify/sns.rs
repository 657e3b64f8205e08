//! SNS delivery (feature `aws`): one `Publish` per notification to the
//! channel's topic — `Subject` the notification's title (SNS allows 100
//! printable ASCII characters), `Message` the [`Notification`] JSON,
//! message attributes `severity`, `site`, `rule`, `event` and
//! `notification_id` (for subscription filter policies). The SDK retries
//! throttling and 5xx itself; a failed publish fails the item, which the
//! trigger retries and finally parks.
//!
//! The AWS configuration is `plantd_shared::aws`'s (the environment:
//! region, credentials, `AWS_ENDPOINT_URL*`); the channel's region, or its
//! topic ARN's, overrides the region.

use thiserror::Error;

use super::channel::Sns;
use super::payload::Notification;

/// An SNS publish that failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("SNS publish to {topic_arn}: {detail}")]
pub struct SnsError {
    /// The topic.
    pub topic_arn: String,
    /// What AWS (or this build) said.
    pub detail: String,
}

/// `title` as an SNS subject: printable ASCII only, at most 100
/// characters.
pub fn subject(title: &str) -> String {
    let clean: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let clean = clean.trim();
    if clean.len() <= 100 {
        clean.to_owned()
    } else {
        format!("{}...", &clean[..97])
    }
}

#[cfg(feature = "aws")]
pub use enabled::Publisher;

#[cfg(not(feature = "aws"))]
pub use disabled::Publisher;

#[cfg(feature = "aws")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use aws_config::{Region, SdkConfig};
    use aws_sdk_sns::types::MessageAttributeValue;

    use super::{Notification, Sns, SnsError, subject};

    /// Publishes to SNS topics; one SDK client per region, made on first
    /// use.
    #[derive(Debug)]
    pub struct Publisher {
        /// The shared AWS configuration (`None`: load it from the
        /// environment on first use).
        config: tokio::sync::OnceCell<SdkConfig>,
        /// Clients by region.
        clients: Mutex<HashMap<String, aws_sdk_sns::Client>>,
    }

    impl Publisher {
        /// A publisher reading the AWS configuration from the environment
        /// when it first publishes.
        pub fn from_env() -> Self {
            Self {
                config: tokio::sync::OnceCell::new(),
                clients: Mutex::new(HashMap::new()),
            }
        }

        /// A publisher with `config` (tests point it at moto).
        pub fn with_config(config: SdkConfig) -> Self {
            Self {
                config: tokio::sync::OnceCell::new_with(Some(config)),
                clients: Mutex::new(HashMap::new()),
            }
        }

        async fn client(&self, region: &str) -> aws_sdk_sns::Client {
            if let Ok(clients) = self.clients.lock()
                && let Some(c) = clients.get(region)
            {
                return c.clone();
            }
            let config = self
                .config
                .get_or_init(plantd_shared::aws::sdk_config)
                .await;
            let sns_config = aws_sdk_sns::config::Builder::from(config)
                .region(Region::new(region.to_owned()))
                .build();
            let client = aws_sdk_sns::Client::from_conf(sns_config);
            if let Ok(mut clients) = self.clients.lock() {
                clients.insert(region.to_owned(), client.clone());
            }
            client
        }

        /// Publishes `notification` to `sns`'s topic; the SNS message id.
        ///
        /// # Errors
        /// [`SnsError`] with AWS's answer.
        pub async fn publish(
            &self,
            sns: &Sns,
            notification: &Notification,
        ) -> Result<String, SnsError> {
            let fail = |detail: String| SnsError {
                topic_arn: sns.topic_arn.clone(),
                detail,
            };
            let region = sns
                .region()
                .ok_or_else(|| fail("no region (set sns.region)".to_owned()))?;
            let message = serde_json::to_string(notification).map_err(|e| fail(e.to_string()))?;
            let record = &notification.record;
            let severity = serde_json::to_value(record.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut request = self
                .client(region)
                .await
                .publish()
                .topic_arn(&sns.topic_arn)
                .subject(subject(&notification.title()))
                .message(message);
            for (name, value) in [
                ("severity", severity.as_str()),
                ("site", record.site.as_str()),
                ("rule", record.rule.as_str()),
                ("event", notification.event.as_str()),
                ("notification_id", notification.id.as_str()),
            ] {
                if value.is_empty() {
                    continue;
                }
                let attribute = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                request = request.message_attributes(name, attribute);
            }
            let out = request
                .send()
                .await
                .map_err(|e| fail(aws_sdk_sns::error::DisplayErrorContext(&e).to_string()))?;
            Ok(out.message_id().unwrap_or_default().to_owned())
        }
    }
}

#[cfg(not(feature = "aws"))]
mod disabled {
    use super::{Notification, Sns, SnsError};

    /// This build has no AWS SDK (feature `aws` off): every publish fails,
    /// saying so.
    #[derive(Debug, Default)]
    pub struct Publisher;

    impl Publisher {
        /// The publisher of a build without AWS.
        pub fn from_env() -> Self {
            Self
        }

        /// Always fails: built without the `aws` feature.
        ///
        /// # Errors
        /// Always [`SnsError`].
        pub async fn publish(
            &self,
            sns: &Sns,
            _notification: &Notification,
        ) -> Result<String, SnsError> {
            Err(SnsError {
                topic_arn: sns.topic_arn.clone(),
                detail: "this plantd was built without the aws feature".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_short_printable_ascii() {
        assert_eq!(
            subject("[FIRING] Überhitzung on s1"),
            "[FIRING] ?berhitzung on s1"
        );
        assert_eq!(subject("a\nb"), "a?b");
        let long = subject(&"x".repeat(300));
        assert_eq!(long.len(), 100);
        assert!(long.ends_with("..."));
    }
}
