//! Typed access to the `plantd_identity` bucket with compare-and-set.
//!
//! Every update reads the entry with its revision and writes it back with
//! `update(key, value, revision)`; if another writer got there first the
//! write fails with a wrong-revision error and [`Store::modify`] re-reads
//! and applies the change again — so two concurrent writers never lose an
//! update.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AppError;

/// How often a compare-and-set is retried before giving up with 409.
pub const CAS_ATTEMPTS: usize = 32;

/// The identity, revocation and device certificate buckets.
#[derive(Clone, Debug)]
pub struct Store {
    /// `plantd_identity`.
    kv: kv::Store,
    /// `plantd_revoked`.
    revoked: kv::Store,
    /// `plantd_device_certs`: devices that log in with their certificate,
    /// followed by their site's edge ([`plantd_shared::device_certs`]).
    certs: kv::Store,
}

/// The outcome of one [`Store::modify`] step.
pub enum Change<T> {
    /// Write this value.
    Put(T),
    /// Leave the entry as it is.
    Keep,
}

impl Store {
    /// Opens the buckets (they must exist: `plantd_shared::streams::ensure`).
    ///
    /// # Errors
    /// 503 when a bucket is missing or JetStream is unreachable.
    pub async fn open(js: &async_nats::jetstream::Context) -> Result<Self, AppError> {
        let kv = js
            .get_key_value(plantd_shared::streams::IDENTITY_BUCKET)
            .await
            .map_err(AppError::unavailable)?;
        let revoked = js
            .get_key_value(plantd_shared::streams::REVOKED_BUCKET)
            .await
            .map_err(AppError::unavailable)?;
        let certs = js
            .get_key_value(plantd_shared::streams::DEVICE_CERTS_BUCKET)
            .await
            .map_err(AppError::unavailable)?;
        Ok(Self { kv, revoked, certs })
    }

    /// Reads `key` with its revision; `None` if absent or deleted.
    ///
    /// # Errors
    /// 503 on storage errors, 500 on a record that does not parse.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, AppError> {
        let entry = self.kv.entry(key).await.map_err(AppError::unavailable)?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                let v = serde_json::from_slice(&e.value).map_err(AppError::internal)?;
                Ok(Some((v, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Creates `key`; 409 if it exists.
    ///
    /// # Errors
    /// 409 when the key exists, 503 on storage errors.
    pub async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, AppError> {
        let bytes = Bytes::from(serde_json::to_vec(value).map_err(AppError::internal)?);
        self.kv
            .create(key, bytes)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    AppError::conflict(format!("{key} already exists"))
                }
                _ => AppError::unavailable(e),
            })
    }

    /// Writes `key` only if its revision is still `revision`.
    ///
    /// # Errors
    /// 409 when another write came first, 503 on storage errors.
    pub async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<u64, AppError> {
        let bytes = Bytes::from(serde_json::to_vec(value).map_err(AppError::internal)?);
        self.kv
            .update(key, bytes, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    AppError::conflict(format!("{key} changed concurrently"))
                }
                _ => AppError::unavailable(e),
            })
    }

    /// Applies `f` to the current value of `key` with compare-and-set,
    /// re-reading and re-applying on conflict. Returns the value written
    /// (or kept), or 404 if the key does not exist.
    ///
    /// # Errors
    /// 404 when absent, the error `f` returns, 409 after too many
    /// conflicts, 503 on storage errors.
    pub async fn modify<T, F>(&self, key: &str, mut f: F) -> Result<T, AppError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(&mut T) -> Result<Change<()>, AppError>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut value, rev)) = self.get::<T>(key).await? else {
                return Err(AppError::not_found(key));
            };
            match f(&mut value)? {
                Change::Keep => return Ok(value),
                Change::Put(()) => match self.update(key, &value, rev).await {
                    Ok(_) => return Ok(value),
                    Err(e) if e.status == axum::http::StatusCode::CONFLICT => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        Err(AppError::conflict(format!(
            "{key}: too many concurrent changes"
        )))
    }

    /// Deletes `key` (idempotent).
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn delete(&self, key: &str) -> Result<(), AppError> {
        self.kv.delete(key).await.map_err(AppError::unavailable)
    }

    /// Every live value whose key starts with `prefix`.
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, AppError> {
        let mut out = Vec::new();
        for k in &self.keys(prefix).await? {
            if let Some((v, _)) = self.get::<T>(k).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Every live key that starts with `prefix`.
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, AppError> {
        use futures::TryStreamExt as _;
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(k) => k.try_collect().await.map_err(AppError::unavailable)?,
            Err(e) => return Err(AppError::unavailable(e)),
        };
        Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
    }

    /// Records access token `jti` as revoked (mirrored by every edge).
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), AppError> {
        self.revoked
            .put(jti, Bytes::from(exp.to_string()))
            .await
            .map(|_| ())
            .map_err(AppError::unavailable)
    }

    /// Registers a device certificate under `key`
    /// ([`plantd_shared::device_certs::key`]); 409 when that certificate
    /// is registered on the site already.
    ///
    /// # Errors
    /// 409 when the key exists, 503 on storage errors.
    pub async fn create_device_cert(
        &self,
        key: &str,
        record: &plantd_shared::device_certs::DeviceCert,
    ) -> Result<(), AppError> {
        let bytes = Bytes::from(serde_json::to_vec(record).map_err(AppError::internal)?);
        self.certs
            .create(key, bytes)
            .await
            .map(|_| ())
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => AppError::conflict(
                    "this certificate is registered for another device on the site",
                ),
                _ => AppError::unavailable(e),
            })
    }

    /// Replaces the device certificate record under `key`.
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn put_device_cert(
        &self,
        key: &str,
        record: &plantd_shared::device_certs::DeviceCert,
    ) -> Result<(), AppError> {
        let bytes = Bytes::from(serde_json::to_vec(record).map_err(AppError::internal)?);
        self.certs
            .put(key, bytes)
            .await
            .map(|_| ())
            .map_err(AppError::unavailable)
    }

    /// Removes the device certificate record under `key` (idempotent).
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn delete_device_cert(&self, key: &str) -> Result<(), AppError> {
        self.certs.delete(key).await.map_err(AppError::unavailable)
    }

    /// Whether access token `jti` is revoked.
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, AppError> {
        match self.revoked.entry(jti).await {
            Ok(Some(e)) => Ok(e.operation == Operation::Put),
            Ok(None) => Ok(false),
            Err(e) => Err(AppError::unavailable(e)),
        }
    }
}
