//! The two KV buckets of notifications: channels (`plantd_alert_channels`,
//! `<org>.<name>`) and delivery markers (`plantd_notifications`,
//! `<org>.<channel>.<record id, escaped>`).

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt as _;
use plantd_shared::streams::{ALERT_CHANNELS_BUCKET, NOTIFICATIONS_BUCKET};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use super::channel::{Channel, check_name};

/// A store could not be read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The bucket is missing or JetStream is unreachable.
    #[error("{bucket}: {detail}")]
    Unavailable {
        /// Which bucket.
        bucket: &'static str,
        /// What NATS said.
        detail: String,
    },
    /// A stored channel is not valid JSON (written by hand?).
    #[error("channel {key} is malformed: {detail}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

fn unavailable(bucket: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError::Unavailable {
        bucket,
        detail: e.to_string(),
    }
}

/// The KV key of channel `name` in `org`.
pub fn channel_key(org: &str, name: &str) -> String {
    format!("{org}.{name}")
}

/// The notification channels of every organisation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `plantd_alert_channels`.
    kv: kv::Store,
}

impl Channels {
    /// Opens the bucket (it must exist: `plantd_shared::streams::ensure`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        let kv = js
            .get_key_value(ALERT_CHANNELS_BUCKET)
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(Self { kv })
    }

    /// Channel `name` of `org`, or `None` (also for a name that cannot
    /// be a channel's).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn get(&self, org: &str, name: &str) -> Result<Option<Channel>, StoreError> {
        if check_name(name).is_err() || org.is_empty() || org.contains(['.', '*', '>']) {
            return Ok(None);
        }
        let key = channel_key(org, name);
        match self
            .kv
            .entry(&key)
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?
        {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|err| StoreError::Corrupt {
                    key,
                    detail: err.to_string(),
                }),
            _ => Ok(None),
        }
    }

    /// Stores `channel` (created or replaced).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put(&self, channel: &Channel) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(channel).map_err(|e| StoreError::Corrupt {
            key: channel_key(&channel.org, &channel.name),
            detail: e.to_string(),
        })?;
        self.kv
            .put(channel_key(&channel.org, &channel.name), bytes.into())
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(())
    }

    /// Removes channel `name` of `org`; false when there was none.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn delete(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        if self.get(org, name).await?.is_none() {
            return Ok(false);
        }
        self.kv
            .delete(channel_key(org, name))
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(true)
    }

    /// Every channel of `org`, by name. A malformed entry is logged and
    /// skipped.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn list(&self, org: &str) -> Result<Vec<Channel>, StoreError> {
        let prefix = format!("{org}.");
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(k) => k
                .try_collect()
                .await
                .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?,
            Err(e) => return Err(unavailable(ALERT_CHANNELS_BUCKET)(&e)),
        };
        let mut names: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .collect();
        names.sort_unstable();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.get(org, name).await {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(StoreError::Corrupt { key, detail }) => {
                    tracing::warn!(%key, %detail, "skipping a malformed channel");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// What a delivery marker records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// When the channel accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The HTTP status (webhook) or SNS message id.
    pub receipt: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// Which (channel, record) pairs have been notified: a marker is written
/// after the channel accepted the notification and checked before
/// sending, so a redelivered record is not notified twice. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Markers {
    /// `plantd_notifications`.
    kv: kv::Store,
}

/// `record_id` as one KV key token: ASCII letters, digits, `-` and `_` as
/// they are, every other byte as `=XX` (hex) — `rule:ab12:3` becomes
/// `rule=3Aab12=3A3`. Reversible, so no two ids share a key.
pub fn key_safe(record_id: &str) -> String {
    let mut out = String::with_capacity(record_id.len());
    for b in record_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The marker key of `record_id` on channel `name` of `org`.
pub fn marker_key(org: &str, name: &str, record_id: &str) -> String {
    format!("{org}.{name}.{}", key_safe(record_id))
}

impl Markers {
    /// Opens the bucket (it must exist).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        let kv = js
            .get_key_value(NOTIFICATIONS_BUCKET)
            .await
            .map_err(|e| unavailable(NOTIFICATIONS_BUCKET)(&e))?;
        Ok(Self { kv })
    }

    /// The marker under `key`, if the notification was delivered.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn get(&self, key: &str) -> Result<Option<Marker>, StoreError> {
        match self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable(NOTIFICATIONS_BUCKET)(&e))?
        {
            Some(e) if e.operation == kv::Operation::Put => {
                // A marker we cannot read still says "sent".
                Ok(Some(serde_json::from_slice(&e.value).unwrap_or(Marker {
                    at: OffsetDateTime::UNIX_EPOCH,
                    receipt: String::new(),
                    attempts: 0,
                })))
            }
            _ => Ok(None),
        }
    }

    /// Records that `key` was delivered.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put(&self, key: &str, marker: &Marker) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(marker).unwrap_or_default();
        self.kv
            .put(key, bytes.into())
            .await
            .map_err(|e| unavailable(NOTIFICATIONS_BUCKET)(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_become_one_key_token() {
        assert_eq!(key_safe("rule-1:ab12:3:ack"), "rule-1=3Aab12=3A3=3Aack");
        assert_eq!(key_safe("a.b/c=d"), "a=2Eb=2Fc=3Dd");
        assert_eq!(marker_key("acme", "ops", "r:1"), "acme.ops.r=3A1");
        assert_ne!(key_safe("a:b"), key_safe("a=3Ab"));
    }
}
