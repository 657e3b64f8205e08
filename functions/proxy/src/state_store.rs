//! Scoped state on the JetStream KV bucket `plantd_state`.
//!
//! # Keys
//! Scopes belong to an organisation, so every KV key starts with the
//! caller's organisation id: value `<key>` of scope `<scope>` in
//! organisation `<org>` is KV key `<org>.<scope>.<key>`, and the scope
//! itself is the record `<org>.<scope>._scope` (keys starting with `_` are
//! reserved for plantd). One organisation can therefore never name — let
//! alone read — another's keys.
//!
//! # Values
//! Values are stored byte for byte; their content type travels in the
//! message header `Plantd-Content-Type`. Writes are published straight to
//! the bucket's subject (`$KV.plantd_state.<key>`) so the header can be
//! set, with `Nats-Expected-Last-Subject-Sequence` for compare-and-set;
//! reads are direct gets of the last message for the key's subject. Any
//! KV client still sees plain values.
//!
//! The revision of a value is its stream sequence, used as the `ETag`.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use plantd_shared::headers::CONTENT_TYPE;
use plantd_shared::streams::STATE_BUCKET;
use serde::Serialize;

use crate::AppError;
use crate::scan::{Scanned, millis, scan};

/// The reserved key naming a scope's own record.
pub const SCOPE_RECORD: &str = "_scope";

/// The content type of a value stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

const KV_OPERATION: &str = "KV-Operation";

/// The longest key accepted (KV keys are subjects; keep them sane).
pub const MAX_KEY_LEN: usize = 256;

/// One stored value.
#[derive(Debug, Clone)]
pub struct Value {
    /// The bytes, as written.
    pub bytes: Bytes,
    /// Their content type.
    pub content_type: String,
    /// The KV revision (stream sequence): the `ETag`.
    pub revision: u64,
    /// When it was written, milliseconds since the Unix epoch.
    pub written_ms: u64,
}

/// One entry of a key's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The revision.
    pub revision: u64,
    /// `put`, `delete` or `purge`.
    pub operation: &'static str,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The content type of a `put`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The value of a `put`: JSON when the content type is JSON and it
    /// parses, else text when it is UTF-8 ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// ... else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

/// What a write requires of the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing: last writer wins.
    None,
    /// The key must not exist (`If-None-Match: *`).
    Absent,
    /// The key must exist (`If-Match: *`).
    Exists,
    /// The current revision must be this one (`If-Match: "<rev>"`).
    Revision(u64),
}

/// Checks a scope name: 1–64 of `A-Z a-z 0-9 _ -`, not starting with `_`.
///
/// # Errors
/// 400 naming the rule.
pub fn check_scope(scope: &str) -> Result<(), AppError> {
    let ok = !scope.is_empty()
        && scope.len() <= 64
        && !scope.starts_with('_')
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "invalid scope {scope:?}: use 1-64 letters, digits, '_' or '-', not starting with '_'"
        )))
    }
}

/// Checks a key: 1–256 of `A-Z a-z 0-9 _ - = / .`, no empty `.`-separated
/// part, not starting with `_`.
///
/// # Errors
/// 400 naming the rule.
pub fn check_key(key: &str) -> Result<(), AppError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.starts_with('_')
        && key.split('.').all(|part| !part.is_empty())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'/' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "invalid key {key:?}: use 1-256 letters, digits, '_', '-', '=', '/' or '.', \
             no empty '.'-separated part, not starting with '_'"
        )))
    }
}

fn check_org(org: &str) -> Result<(), AppError> {
    let ok = !org.is_empty()
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the token's organisation cannot hold state",
        ))
    }
}

fn operation(headers: &HeaderMap) -> &'static str {
    match headers.get(KV_OPERATION).map(|v| v.as_str()) {
        Some("DEL") => "delete",
        Some("PURGE") => "purge",
        _ => "put",
    }
}

/// The state bucket, reached through its stream.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// The NATS client (inboxes for scans).
    client: async_nats::Client,
    /// The JetStream context (publishes with headers).
    js: async_nats::jetstream::Context,
    /// The bucket.
    kv: kv::Store,
}

impl StateStore {
    /// Opens `plantd_state`.
    ///
    /// # Errors
    /// 503 when the bucket does not exist or JetStream is unreachable.
    pub async fn open(
        client: async_nats::Client,
        js: async_nats::jetstream::Context,
    ) -> Result<Self, AppError> {
        let kv = js
            .get_key_value(STATE_BUCKET)
            .await
            .map_err(AppError::unavailable)?;
        Ok(Self { client, js, kv })
    }

    fn subject(&self, full_key: &str) -> String {
        format!("{}{full_key}", self.kv.prefix)
    }

    fn full_key(org: &str, scope: &str, key: &str) -> Result<String, AppError> {
        check_org(org)?;
        check_scope(scope)?;
        check_key(key)?;
        Ok(format!("{org}.{scope}.{key}"))
    }

    fn record_key(org: &str, scope: &str) -> Result<String, AppError> {
        check_org(org)?;
        check_scope(scope)?;
        Ok(format!("{org}.{scope}.{SCOPE_RECORD}"))
    }

    /// The last message for a KV key, puts and delete markers alike.
    async fn last(&self, full_key: &str) -> Result<Option<Scanned>, AppError> {
        match self
            .kv
            .stream
            .direct_get_last_for_subject(self.subject(full_key))
            .await
        {
            Ok(m) => Ok(Some(Scanned {
                subject: m.subject.to_string(),
                sequence: m.sequence,
                time_ms: millis(m.time),
                headers: m.headers,
                payload: m.payload,
            })),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(AppError::unavailable(e)),
        }
    }

    /// The current value of a key, `None` when absent or deleted.
    ///
    /// # Errors
    /// 400 for an invalid scope or key; 503 when JetStream fails.
    pub async fn get(&self, org: &str, scope: &str, key: &str) -> Result<Option<Value>, AppError> {
        let full = Self::full_key(org, scope, key)?;
        Ok(self.last(&full).await?.and_then(|m| {
            (operation(&m.headers) == "put").then(|| Value {
                content_type: m
                    .headers
                    .get(CONTENT_TYPE)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
                bytes: m.payload,
                revision: m.sequence,
                written_ms: m.time_ms,
            })
        }))
    }

    /// Writes a value under `precondition`, returning the new revision.
    ///
    /// # Errors
    /// 409 when the precondition fails; 400 for an invalid scope or key;
    /// 503 when JetStream fails.
    pub async fn put(
        &self,
        org: &str,
        scope: &str,
        key: &str,
        content_type: &str,
        bytes: Bytes,
        precondition: Precondition,
    ) -> Result<u64, AppError> {
        let full = Self::full_key(org, scope, key)?;
        self.write(&full, key, content_type, bytes, precondition)
            .await
    }

    async fn write(
        &self,
        full: &str,
        key: &str,
        content_type: &str,
        bytes: Bytes,
        precondition: Precondition,
    ) -> Result<u64, AppError> {
        let expected = match precondition {
            Precondition::None => None,
            Precondition::Revision(r) => Some(r),
            Precondition::Exists => match self.last(full).await? {
                Some(m) if operation(&m.headers) == "put" => Some(m.sequence),
                _ => return Err(AppError::not_found(format!("key {key}"))),
            },
            Precondition::Absent => match self.last(full).await? {
                None => Some(0),
                Some(m) if operation(&m.headers) != "put" => Some(m.sequence),
                Some(_) => return Err(AppError::conflict(format!("key {key} exists"))),
            },
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type);
        if let Some(rev) = expected {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                rev.to_string().as_str(),
            );
        }
        self.publish(full, headers, bytes, key).await
    }

    async fn publish(
        &self,
        full_key: &str,
        headers: HeaderMap,
        bytes: Bytes,
        key: &str,
    ) -> Result<u64, AppError> {
        let ack = self
            .js
            .publish_with_headers(self.subject(full_key), headers, bytes)
            .await
            .map_err(AppError::unavailable)?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(AppError::conflict(
                format!("key {key} changed since the revision given; read it again"),
            )),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(crate::json::too_large())
            }
            Err(e) => Err(AppError::unavailable(e)),
        }
    }

    /// Deletes a key (a delete marker; history is kept), optionally only at
    /// `revision`.
    ///
    /// # Errors
    /// 404 when absent; 409 when the revision does not match; 400/503 as
    /// [`StateStore::put`].
    pub async fn delete(
        &self,
        org: &str,
        scope: &str,
        key: &str,
        revision: Option<u64>,
    ) -> Result<(), AppError> {
        let full = Self::full_key(org, scope, key)?;
        let current = self
            .get(org, scope, key)
            .await?
            .ok_or_else(|| AppError::not_found(format!("key {key}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            revision.unwrap_or(current.revision).to_string().as_str(),
        );
        self.publish(&full, headers, Bytes::new(), key).await?;
        Ok(())
    }

    /// Every revision of a key still kept by the bucket, oldest first.
    ///
    /// # Errors
    /// 400/503 as [`StateStore::get`].
    pub async fn history(
        &self,
        org: &str,
        scope: &str,
        key: &str,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        let full = Self::full_key(org, scope, key)?;
        let msgs = scan(
            &self.client,
            &self.kv.stream,
            OrderedConfig {
                filter_subject: self.subject(&full),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
            usize::MAX,
            |_| (true, true),
        )
        .await?;
        Ok(msgs.into_iter().map(history_entry).collect())
    }

    /// The current keys under `<org>.<pattern>` (a subject pattern), with
    /// their revisions.
    async fn live_keys(&self, org: &str, pattern: &str) -> Result<Vec<(String, u64)>, AppError> {
        check_org(org)?;
        let prefix = self.kv.prefix.clone();
        let msgs = scan(
            &self.client,
            &self.kv.stream,
            OrderedConfig {
                filter_subject: format!("{prefix}{org}.{pattern}"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                headers_only: true,
                ..Default::default()
            },
            usize::MAX,
            |m| (operation(&m.headers) == "put", true),
        )
        .await?;
        let org_prefix = format!("{prefix}{org}.");
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                m.subject
                    .strip_prefix(&org_prefix)
                    .map(|k| (k.to_owned(), m.sequence))
            })
            .collect())
    }

    /// Creates a scope; 409 when it exists.
    ///
    /// # Errors
    /// 409, 400, 503.
    pub async fn create_scope(&self, org: &str, scope: &str) -> Result<u64, AppError> {
        let record = serde_json::json!({ "scope": scope, "created": plantd_shared::headers::format_time(plantd_shared::headers::now_ms()) });
        let full = Self::record_key(org, scope)?;
        self.write(
            &full,
            SCOPE_RECORD,
            "application/json",
            Bytes::from(record.to_string()),
            Precondition::Absent,
        )
        .await
        .map_err(|e| {
            if e.status == axum::http::StatusCode::CONFLICT {
                AppError::conflict(format!("scope {scope} exists"))
            } else {
                e
            }
        })
    }

    /// Whether a scope exists.
    ///
    /// # Errors
    /// 400, 503.
    pub async fn scope_exists(&self, org: &str, scope: &str) -> Result<bool, AppError> {
        let full = Self::record_key(org, scope)?;
        Ok(self
            .last(&full)
            .await?
            .is_some_and(|m| operation(&m.headers) == "put"))
    }

    /// The organisation's scopes, sorted.
    ///
    /// # Errors
    /// 503.
    pub async fn scopes(&self, org: &str) -> Result<Vec<String>, AppError> {
        let mut scopes: Vec<String> = self
            .live_keys(org, &format!("*.{SCOPE_RECORD}"))
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.split_once('.').map(|(s, _)| s.to_owned()))
            .collect();
        scopes.sort();
        Ok(scopes)
    }

    /// The keys of a scope with their revisions, sorted.
    ///
    /// # Errors
    /// 400, 503.
    pub async fn keys(&self, org: &str, scope: &str) -> Result<Vec<(String, u64)>, AppError> {
        check_scope(scope)?;
        let mut keys: Vec<(String, u64)> = self
            .live_keys(org, &format!("{scope}.>"))
            .await?
            .into_iter()
            .filter_map(|(k, rev)| {
                k.split_once('.')
                    .map(|(_, key)| (key.to_owned(), rev))
                    .filter(|(key, _)| key != SCOPE_RECORD)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes a scope and every key in it, with their history (a purge of
    /// `<org>.<scope>.>`).
    ///
    /// # Errors
    /// 404 when the scope does not exist; 400, 503.
    pub async fn delete_scope(&self, org: &str, scope: &str) -> Result<u64, AppError> {
        if !self.scope_exists(org, scope).await? {
            return Err(AppError::not_found(format!("scope {scope}")));
        }
        let filter = self.subject(&format!("{org}.{scope}.>"));
        let purged = self
            .kv
            .stream
            .purge()
            .filter(filter)
            .await
            .map_err(AppError::unavailable)?;
        Ok(purged.purged)
    }
}

fn history_entry(m: Scanned) -> HistoryEntry {
    let op = operation(&m.headers);
    let time = plantd_shared::headers::format_time(m.time_ms);
    if op != "put" {
        return HistoryEntry {
            revision: m.sequence,
            operation: op,
            time,
            content_type: None,
            value: None,
            value_base64: None,
        };
    }
    let content_type = m
        .headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    let (value, value_base64) = crate::payload::render(&content_type, &m.payload);
    HistoryEntry {
        revision: m.sequence,
        operation: op,
        time,
        content_type: Some(content_type),
        value,
        value_base64,
    }
}
