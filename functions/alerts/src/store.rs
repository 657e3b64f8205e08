//! The alert manager's stores on JetStream, shared by the engine and the
//! proxy: rules (`plantd_alert_rules`, `<org>.<rule>`), silences
//! (`plantd_alert_silences`, `<org>.<id>`), instance state
//! (`plantd_alert_state`, `<rule>.<key hash>`, compare-and-set), and the
//! outbox protocol that writes each record to `PLANTD_ALERTS` once:
//! the state is stored with its new records (CAS), the records are
//! published with `Nats-Msg-Id = AlertRecord::id` awaiting the stream's
//! ack, then the outbox is cleared (CAS). A crash between any two steps
//! republishes from the outbox, and the stream's de-duplication drops
//! what was stored already.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use plantd_shared::streams;
use thiserror::Error;
use time::OffsetDateTime;

use crate::instance::InstanceState;
use crate::record::{Ack, AlertRecord};
use crate::rule::{Rule, valid_id};
use crate::silence::Silence;

/// What went wrong with a store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// JetStream is unreachable or a bucket is missing.
    #[error("alert store unavailable: {0}")]
    Unavailable(String),
    /// Someone else changed the record first (compare-and-set lost).
    #[error("changed concurrently")]
    Conflict,
    /// A stored value is not what this version reads.
    #[error("stored {key} is unreadable: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        detail: String,
    },
    /// No such record (or another organisation's).
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not apply in the record's state.
    #[error("{0}")]
    Refused(String),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The alert manager's buckets and the alerts stream.
#[derive(Clone)]
pub struct Stores {
    js: jetstream::Context,
    rules: kv::Store,
    state: kv::Store,
    silences: kv::Store,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

impl Stores {
    /// Opens the buckets (made by `plantd_shared::streams::ensure`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when a bucket is missing or JetStream
    /// is unreachable.
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        Ok(Self {
            js: js.clone(),
            rules: js
                .get_key_value(streams::ALERT_RULES_BUCKET)
                .await
                .map_err(unavailable)?,
            state: js
                .get_key_value(streams::ALERT_STATE_BUCKET)
                .await
                .map_err(unavailable)?,
            silences: js
                .get_key_value(streams::ALERT_SILENCES_BUCKET)
                .await
                .map_err(unavailable)?,
        })
    }

    /// The rules bucket (the engine watches it).
    pub fn rules_bucket(&self) -> &kv::Store {
        &self.rules
    }

    /// The silences bucket (the engine watches it).
    pub fn silences_bucket(&self) -> &kv::Store {
        &self.silences
    }

    async fn keys(store: &kv::Store, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = store.keys().await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if k.starts_with(prefix) {
                out.push(k);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn read<T: serde::de::DeserializeOwned>(
        store: &kv::Store,
        key: &str,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let Some(entry) = store.entry(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = serde_json::from_slice(&entry.value).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Some((value, entry.revision)))
    }

    /// Every rule of `org`, by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn rules(&self, org: &str) -> Result<Vec<Rule>, StoreError> {
        let mut out = Vec::new();
        for key in Self::keys(&self.rules, &format!("{org}.")).await? {
            if let Some((rule, _)) = Self::read::<Rule>(&self.rules, &key).await? {
                out.push(rule);
            }
        }
        Ok(out)
    }

    /// Every rule of every organisation: `(org, rule)`. An unreadable
    /// rule is skipped with a warning.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn all_rules(&self) -> Result<Vec<(String, Rule)>, StoreError> {
        let mut out = Vec::new();
        for key in Self::keys(&self.rules, "").await? {
            let Some((org, _)) = key.rsplit_once('.') else {
                continue;
            };
            match Self::read::<Rule>(&self.rules, &key).await {
                Ok(Some((rule, _))) => out.push((org.to_owned(), rule)),
                Ok(None) => {}
                Err(StoreError::Corrupt { key, detail }) => {
                    tracing::warn!(%key, %detail, "skipping an unreadable alert rule");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `org`'s rule `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn rule(&self, org: &str, id: &str) -> Result<Option<Rule>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(Self::read(&self.rules, &format!("{org}.{id}"))
            .await?
            .map(|(r, _)| r))
    }

    /// Stores `org`'s (validated) rule; true when it is new.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put_rule(&self, org: &str, rule: &Rule) -> Result<bool, StoreError> {
        let existed = self.rule(org, &rule.id).await?.is_some();
        let body = serde_json::to_vec(rule).map_err(unavailable)?;
        self.rules
            .put(format!("{org}.{}", rule.id), body.into())
            .await
            .map_err(unavailable)?;
        Ok(!existed)
    }

    /// Deletes `org`'s rule `id`; false when there was none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn delete_rule(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        if self.rule(org, id).await?.is_none() {
            return Ok(false);
        }
        self.rules
            .delete(format!("{org}.{id}"))
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// `org`'s silences (expired ones included), by id.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn silences(&self, org: &str) -> Result<Vec<Silence>, StoreError> {
        let mut out = Vec::new();
        for key in Self::keys(&self.silences, &format!("{org}.")).await? {
            if let Some((s, _)) = Self::read::<Silence>(&self.silences, &key).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Stores `org`'s (validated) silence under its id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put_silence(&self, org: &str, silence: &Silence) -> Result<(), StoreError> {
        let body = serde_json::to_vec(silence).map_err(unavailable)?;
        self.silences
            .put(format!("{org}.{}", silence.id), body.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// `org`'s silence `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn silence(&self, org: &str, id: &str) -> Result<Option<Silence>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(Self::read(&self.silences, &format!("{org}.{id}"))
            .await?
            .map(|(s, _)| s))
    }

    /// Deletes `org`'s silence `id`; false when there was none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn delete_silence(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        if self.silence(org, id).await?.is_none() {
            return Ok(false);
        }
        self.silences
            .delete(format!("{org}.{id}"))
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// Every instance (all organisations) with its revision.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; unreadable records are skipped.
    pub async fn instances(&self) -> Result<Vec<(InstanceState, u64)>, StoreError> {
        let mut out = Vec::new();
        for key in Self::keys(&self.state, "").await? {
            match Self::read::<InstanceState>(&self.state, &key).await {
                Ok(Some(x)) => out.push(x),
                Ok(None) => {}
                Err(StoreError::Corrupt { key, detail }) => {
                    tracing::warn!(%key, %detail, "skipping an unreadable alert instance");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The instance `id` with its revision.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn instance(&self, id: &str) -> Result<Option<(InstanceState, u64)>, StoreError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Ok(None);
        }
        Self::read(&self.state, id).await
    }

    /// Stores `state` if its stored revision is still `revision` (`None`:
    /// it must not exist); the new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another writer won,
    /// [`StoreError::Unavailable`].
    pub async fn cas(
        &self,
        state: &InstanceState,
        revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let body: bytes::Bytes = serde_json::to_vec(state).map_err(unavailable)?.into();
        match revision {
            Some(rev) => self.state.update(&state.id, body, rev).await.map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    StoreError::Conflict
                } else {
                    unavailable(e)
                }
            }),
            None => self.state.create(&state.id, body).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    StoreError::Conflict
                } else {
                    unavailable(e)
                }
            }),
        }
    }

    /// Removes an instance (its rule is gone).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn delete_instance(&self, id: &str) -> Result<(), StoreError> {
        self.state.delete(id).await.map_err(unavailable)
    }

    /// Publishes `record` to `PLANTD_ALERTS` with its id as `Nats-Msg-Id`
    /// and waits for the stream's acknowledgement (a duplicate counts as
    /// stored).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it was not confirmed stored.
    pub async fn publish(&self, record: &AlertRecord) -> Result<(), StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", record.id.as_str());
        headers.insert("Content-Type", "application/json");
        let body = serde_json::to_vec(record).map_err(unavailable)?;
        let ack = self
            .js
            .publish_with_headers(record.subject(), headers, body.into())
            .await
            .map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        Ok(())
    }

    /// Publishes the outbox of `state` (stored at `revision`) and clears
    /// it with compare-and-set, retrying on a concurrent change (the
    /// records published are removed from whatever is stored then). The
    /// state and revision after.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: the records stay in the outbox and are
    /// published by the next flush (at the latest when the engine starts).
    pub async fn flush(
        &self,
        mut state: InstanceState,
        mut revision: u64,
    ) -> Result<(InstanceState, u64), StoreError> {
        if state.outbox.is_empty() {
            return Ok((state, revision));
        }
        let published: Vec<String> = state.outbox.iter().map(|r| r.id.clone()).collect();
        for record in &state.outbox {
            self.publish(record).await?;
            tracing::info!(id = %record.id, site = %record.site, rule = %record.rule, kind = ?record.kind, from = ?record.from, to = ?record.to, silenced = record.silenced, "alert record stored");
        }
        for _ in 0..10 {
            state.outbox.retain(|r| !published.contains(&r.id));
            match self.cas(&state, Some(revision)).await {
                Ok(rev) => return Ok((state, rev)),
                Err(StoreError::Conflict) => {
                    let Some((fresh, rev)) = self.instance(&state.id).await? else {
                        return Err(StoreError::NotFound(state.id));
                    };
                    state = fresh;
                    revision = rev;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Acknowledges `org`'s firing instance `id` as `by` with `note`: an
    /// `Ack` record stored once, through the outbox. The record.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id or another
    /// organisation's, [`StoreError::Refused`] when it is not firing or is
    /// acknowledged already, [`StoreError::Unavailable`].
    pub async fn acknowledge(
        &self,
        org: &str,
        id: &str,
        by: &str,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<AlertRecord, StoreError> {
        for _ in 0..10 {
            let Some((mut state, rev)) = self.instance(id).await? else {
                return Err(StoreError::NotFound(format!("alert {id}")));
            };
            if state.org != org {
                return Err(StoreError::NotFound(format!("alert {id}")));
            }
            let Some(rule) = self.rule(org, &state.rule).await? else {
                return Err(StoreError::NotFound(format!("alert {id}")));
            };
            let silences = self.silences(org).await?;
            let ack = Ack {
                by: by.to_owned(),
                at: now,
                note: note.to_owned(),
            };
            state
                .acknowledge(&rule, ack, &silences, now)
                .map_err(StoreError::Refused)?;
            let record = state.outbox.last().cloned().ok_or(StoreError::Conflict)?;
            match self.cas(&state, Some(rev)).await {
                Ok(rev) => {
                    self.flush(state, rev).await?;
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// The records of instance `id` in `PLANTD_ALERTS`, oldest first (at
    /// most `limit`, the newest kept).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn history(
        &self,
        state: &InstanceState,
        limit: usize,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        use async_nats::jetstream::consumer;
        let stream = self
            .js
            .get_stream(streams::ALERTS)
            .await
            .map_err(unavailable)?;
        let subject = format!("plantd.{}.alert.{}", state.site, state.rule);
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let pending = consumer.cached_info().num_pending;
        let prefix = format!("{}:{}:", state.rule, crate::instance::key_hash(&state.id));
        let mut out = std::collections::VecDeque::new();
        if pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let mut seen = 0;
        while seen < pending {
            let next =
                tokio::time::timeout(std::time::Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            seen += 1;
            if let Ok(record) = serde_json::from_slice::<AlertRecord>(&msg.payload)
                && record.id.starts_with(&prefix)
            {
                out.push_back(record);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }
}
