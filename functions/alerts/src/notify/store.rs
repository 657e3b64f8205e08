//! The two KV buckets of notifications: channels (`plantd_alert_channels`,
//! `<org>.<name>`) and delivery markers (`plantd_notifications`,
//! `<org>.<channel>.<record id, escaped>`).
//!
//! A channel's webhook secret is stored sealed ([`super::keys`]): [`Channels`]
//! seals it on every write and opens it on every read, so the rest of the
//! code sees [`Channel`] with the secret in clear and the bucket never
//! holds it.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt as _;
use plantd_shared::streams::{ALERT_CHANNELS_BUCKET, NOTIFICATIONS_BUCKET};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use time::OffsetDateTime;

use super::channel::{Channel, Target, check_name};
use super::keys::{ChannelKeys, Envelope, SealError};

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
    /// A stored channel's webhook secret does not open with the channel
    /// keys: sealed with a key this process does not have, or altered.
    #[error(
        "channel {key}: its webhook secret does not open ({reason}); restore the channel key that sealed it, or give the channel its secret again"
    )]
    Sealed {
        /// Its key (`<org>.<name>`).
        key: String,
        /// Why not (never the secret).
        reason: SealError,
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

/// How a stored webhook secret was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// No secret (an SNS channel).
    NoSecret,
    /// In clear: written before secrets were sealed.
    Clear,
    /// Sealed with a previous key.
    OldKey,
    /// Sealed with the current key.
    Current,
}

/// What [`Channels::reseal`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Webhook secrets found in clear, now sealed.
    pub clear: usize,
    /// Webhook secrets sealed with a previous key, now with the current one.
    pub old_key: usize,
    /// Channels that could not be read or opened (logged, left as they are).
    pub failed: usize,
}

/// The notification channels of every organisation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `plantd_alert_channels`.
    kv: kv::Store,
    /// Seal and open webhook secrets.
    keys: Arc<ChannelKeys>,
}

impl Channels {
    /// Opens the bucket (it must exist: `plantd_shared::streams::ensure`);
    /// webhook secrets are sealed and opened with `keys`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn open(js: &jetstream::Context, keys: Arc<ChannelKeys>) -> Result<Self, StoreError> {
        let kv = js
            .get_key_value(ALERT_CHANNELS_BUCKET)
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(Self { kv, keys })
    }

    /// Channel `name` of `org`, or `None` (also for a name that cannot
    /// be a channel's). A webhook's secret is opened (or read as it is
    /// when stored in clear by an older plantd).
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::Sealed`] when the secret does not open.
    pub async fn get(&self, org: &str, name: &str) -> Result<Option<Channel>, StoreError> {
        if check_name(name).is_err() || org.is_empty() || org.contains(['.', '*', '>']) {
            return Ok(None);
        }
        let key = channel_key(org, name);
        match self.entry(&key).await? {
            Some(e) => self.decode(&key, &e.value).map(|(c, _)| Some(c)),
            None => Ok(None),
        }
    }

    /// The live entry under `key`.
    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, StoreError> {
        Ok(self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?
            .filter(|e| e.operation == kv::Operation::Put))
    }

    /// The channel stored under `key` as `bytes`, its secret opened.
    fn decode(&self, key: &str, bytes: &[u8]) -> Result<(Channel, Stored), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            key: key.to_owned(),
            detail,
        };
        let mut value: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut stored = Stored::NoSecret;
        if let Some(secret) = value.get_mut("webhook").and_then(|w| w.get_mut("secret")) {
            stored = match secret {
                Value::String(_) => Stored::Clear,
                Value::Object(_) => {
                    let envelope: Envelope =
                        serde_json::from_value(secret.take()).map_err(|e| StoreError::Sealed {
                            key: key.to_owned(),
                            reason: SealError::Malformed(e.to_string()),
                        })?;
                    let clear =
                        self.keys
                            .open(key, &envelope)
                            .map_err(|reason| StoreError::Sealed {
                                key: key.to_owned(),
                                reason,
                            })?;
                    *secret = Value::String(clear);
                    if self.keys.is_current(&envelope) {
                        Stored::Current
                    } else {
                        Stored::OldKey
                    }
                }
                _ => {
                    return Err(corrupt(
                        "webhook.secret is neither sealed nor a string".into(),
                    ));
                }
            };
        }
        let channel = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        Ok((channel, stored))
    }

    /// `channel` as stored: its webhook secret sealed for its key.
    fn encode(&self, channel: &Channel) -> Result<Vec<u8>, StoreError> {
        let key = channel_key(&channel.org, &channel.name);
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        };
        let mut value = serde_json::to_value(channel).map_err(corrupt)?;
        if let Target::Webhook(w) = &channel.target
            && let Some(secret) = value.get_mut("webhook").and_then(|w| w.get_mut("secret"))
        {
            *secret = serde_json::to_value(self.keys.seal(&key, &w.secret)).map_err(corrupt)?;
        }
        serde_json::to_vec(&value).map_err(corrupt)
    }

    /// Stores `channel` (created or replaced), its webhook secret sealed
    /// with the current key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put(&self, channel: &Channel) -> Result<(), StoreError> {
        let bytes = self.encode(channel)?;
        self.kv
            .put(channel_key(&channel.org, &channel.name), bytes.into())
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(())
    }

    /// Seals, with the current key, every webhook secret stored in clear
    /// (by a plantd before sealing) or with a previous key: the one-time
    /// migration `plantd up`, `plantd functions` and the notifier's cold
    /// start run. Each rewrite is compare-and-set on the revision read, so
    /// a channel written meanwhile is left to its writer (already sealed).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the bucket cannot be listed; a
    /// channel that cannot be read or opened is logged and counted.
    pub async fn reseal(&self) -> Result<Resealed, StoreError> {
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(k) => k
                .try_collect()
                .await
                .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?,
            Err(e) => return Err(unavailable(ALERT_CHANNELS_BUCKET)(&e)),
        };
        let mut done = Resealed::default();
        for key in keys {
            let Some(entry) = self.entry(&key).await? else {
                continue;
            };
            let stored = match self.decode(&key, &entry.value) {
                Ok((channel, stored @ (Stored::Clear | Stored::OldKey))) => {
                    let bytes = self.encode(&channel)?;
                    match self.kv.update(&key, bytes.into(), entry.revision).await {
                        Ok(_) => stored,
                        // Written meanwhile: by a writer that seals.
                        Err(_) => continue,
                    }
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reseal a channel; left as it is");
                    done.failed += 1;
                    continue;
                }
            };
            match stored {
                Stored::Clear => done.clear += 1,
                _ => done.old_key += 1,
            }
        }
        if done.clear + done.old_key > 0 {
            tracing::info!(clear = done.clear, old_key = done.old_key, kid = %self.keys.kid(), "webhook secrets sealed with the current channel key");
        }
        Ok(done)
    }

    /// Removes channel `name` of `org`; false when there was none.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn delete(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        // Existence only: a channel whose secret does not open can still
        // be deleted.
        if check_name(name).is_err()
            || org.is_empty()
            || org.contains(['.', '*', '>'])
            || self.entry(&channel_key(org, name)).await?.is_none()
        {
            return Ok(false);
        }
        self.kv
            .delete(channel_key(org, name))
            .await
            .map_err(|e| unavailable(ALERT_CHANNELS_BUCKET)(&e))?;
        Ok(true)
    }

    /// Every channel of `org`, by name. A malformed entry, or one whose
    /// secret does not open, is logged and skipped.
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
                Err(e @ StoreError::Sealed { .. }) => {
                    tracing::error!(error = %e, "skipping a channel whose secret does not open");
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
