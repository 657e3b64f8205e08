//! Sites and the organisations that own them.
//!
//! Every site belongs to exactly one organisation. Its record lives in the
//! JetStream KV bucket [`SITES_BUCKET`] (`plantd_sites`), key = the site
//! id, value = a JSON [`SiteRecord`]. Site ids are one global namespace —
//! subjects are `plantd.<site>.…` — so an id is registered once, by one
//! organisation ([`Sites::create`] fails with [`SitesError::Exists`]).
//!
//! The identity service writes the records (`/v1/sites`); the proxy reads
//! them on every site-scoped request ([`Sites::get`], or the TTL-cached
//! [`SiteCache`] on hot paths like the AWS fan-out); the edge reads its own
//! site's record at start to learn which organisation owns it.
//!
//! [`authorize`] (and [`authorize_org`] where only the owner is known) is
//! **the** rule for "may this caller act on this site": its organisation
//! must own the site, or it is the bootstrap `superadmin` (organisation
//! [`BOOTSTRAP_ORG`], role [`SUPERADMIN_ROLE`]), who may act for any
//! organisation — [`Access::AsSuperadmin`], which callers audit. Every door
//! (proxy REST and WebSockets, AWS WebSocket routes and fan-out, MQTT
//! CONNECT at the edge, token issuance) asks it, as well as checking the
//! permission strings, so an MQTT grant for site `*` means "every site of
//! my organisation".

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::claims::Claims;
use crate::subject::Site;

pub use crate::streams::SITES_BUCKET;

/// The organisation of the bootstrap administrator (and of site `local`
/// under `plantd up`).
pub const BOOTSTRAP_ORG: &str = "plantd";

/// The built-in role of the bootstrap administrator: every permission, in
/// every organisation.
pub const SUPERADMIN_ROLE: &str = "superadmin";
/// The pseudo-site of plantd's own site-less components (identity, proxy,
/// trigger, logger, alert manager): their warnings and errors go to
/// `plantd._plantd.log.plantd.<component>`. Owned by [`BOOTSTRAP_ORG`]
/// (so only its members and the superadmin read it); never registered in
/// `plantd_sites` and never a valid name for a real site (ids cannot
/// start with `_`).
pub const PLATFORM_SITE: &str = "_plantd";

/// Longest display name of a site, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// Most labels on one site.
pub const MAX_LABELS: usize = 32;
/// Longest label key (`[A-Za-z0-9_.-]`, non-empty), in bytes.
pub const MAX_LABEL_KEY: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;

/// A site as registered in [`SITES_BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// The site id: the `<site>` of `plantd.<site>.…` (see [`Site`]).
    pub id: String,
    /// The organisation that owns it.
    pub org: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What and where it is.
    #[serde(default)]
    pub description: String,
    /// Free-form labels (`line = "north"`), for operators and tooling.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was registered, ms since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
}

impl SiteRecord {
    /// A record for `id` owned by `org`, created now, with no name,
    /// description or labels.
    pub fn new(id: &Site, org: &str) -> Self {
        Self {
            id: id.as_str().to_owned(),
            org: org.to_owned(),
            name: String::new(),
            description: String::new(),
            labels: BTreeMap::new(),
            created_ms: crate::headers::now_ms(),
        }
    }

    /// Checks the fields a caller chooses: the id is a valid [`Site`], and
    /// name, description and labels are within the limits above.
    ///
    /// # Errors
    /// A message naming the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        Site::new(self.id.as_str()).map_err(|e| e.to_string())?;
        if self.org.is_empty() {
            return Err("org must not be empty".into());
        }
        validate_text(&self.name, &self.description)?;
        validate_labels(&self.labels)
    }
}

/// Checks a name and a description against [`MAX_NAME`] and
/// [`MAX_DESCRIPTION`].
///
/// # Errors
/// A message naming the field.
pub fn validate_text(name: &str, description: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!("name is longer than {MAX_NAME} bytes"));
    }
    if description.len() > MAX_DESCRIPTION {
        return Err(format!(
            "description is longer than {MAX_DESCRIPTION} bytes"
        ));
    }
    Ok(())
}

/// Checks labels: at most [`MAX_LABELS`], keys of `[A-Za-z0-9_.-]`
/// (1–[`MAX_LABEL_KEY`] bytes), values up to [`MAX_LABEL_VALUE`] bytes.
///
/// # Errors
/// A message naming the label.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in labels {
        let ok_key = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok_key {
            return Err(format!(
                "label key {k:?} must be 1-{MAX_LABEL_KEY} of A-Z, a-z, 0-9, _, ., -"
            ));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(format!(
                "label {k:?}: value is longer than {MAX_LABEL_VALUE} bytes"
            ));
        }
    }
    Ok(())
}

/// Whether `claims` are the bootstrap administrator's: organisation
/// [`BOOTSTRAP_ORG`] and role [`SUPERADMIN_ROLE`] (a built-in role, which no
/// custom role can shadow and only a superadmin can assign).
pub fn is_superadmin(claims: &Claims) -> bool {
    is_superadmin_principal(&claims.org, &claims.roles)
}

/// [`is_superadmin`] for a principal that has no token yet (at issuance).
pub fn is_superadmin_principal(org: &str, roles: &[String]) -> bool {
    org == BOOTSTRAP_ORG && roles.iter().any(|r| r == SUPERADMIN_ROLE)
}

/// How a caller may act on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller's organisation owns the site.
    Own,
    /// Another organisation owns it and the caller is the bootstrap
    /// superadmin acting for it: allowed, and to be audited.
    AsSuperadmin,
}

/// Why a caller may not act on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Denied {
    /// No such site is registered.
    #[error("site is not registered")]
    Unknown,
    /// Another organisation owns the site.
    #[error("site belongs to another organisation")]
    OtherOrg,
}

/// May `claims` act on the site whose record is `record` (`None`: not
/// registered)? Permission strings and MQTT grants are checked separately;
/// this decides the organisation, by [`authorize_principal`].
///
/// # Errors
/// [`Denied::Unknown`] for an unregistered site (even for the superadmin:
/// nothing can be done on a site nobody owns), [`Denied::OtherOrg`] for
/// another organisation's site.
pub fn authorize(claims: &Claims, record: Option<&SiteRecord>) -> Result<Access, Denied> {
    authorize_principal(&claims.org, &claims.roles, record.map(|r| r.org.as_str()))
}

/// [`authorize`] when only the owning organisation is known (the edge,
/// which is told or has cached which organisation owns its site).
///
/// # Errors
/// [`Denied::OtherOrg`] unless `claims` belong to `owner` or are the
/// superadmin's.
pub fn authorize_org(claims: &Claims, owner: &str) -> Result<Access, Denied> {
    authorize_principal(&claims.org, &claims.roles, Some(owner))
}

/// **The** rule, for a principal of organisation `org` with `roles`, on a
/// site owned by `owner` (`None`: not registered): the same organisation,
/// or the bootstrap superadmin acting for another. [`authorize`] and
/// [`authorize_org`] apply it to a token's claims; token issuance applies
/// it to a user, service account or device before a token exists.
///
/// # Errors
/// [`Denied::Unknown`] when `owner` is `None`, [`Denied::OtherOrg`] when
/// another organisation owns the site and the principal is not the
/// superadmin.
pub fn authorize_principal(
    org: &str,
    roles: &[String],
    owner: Option<&str>,
) -> Result<Access, Denied> {
    match owner {
        None => Err(Denied::Unknown),
        Some(owner) if owner == org => Ok(Access::Own),
        Some(_) if is_superadmin_principal(org, roles) => Ok(Access::AsSuperadmin),
        Some(_) => Err(Denied::OtherOrg),
    }
}

/// What failed reading or writing the registry. Messages name the site and
/// never carry claims.
#[derive(Debug, Clone, Error)]
pub enum SitesError {
    /// JetStream is unreachable or the bucket is missing.
    #[error("site registry unavailable: {0}")]
    Unavailable(String),
    /// Creating a site whose id is registered already.
    #[error("site {0} already exists")]
    Exists(String),
    /// Registering a site that another organisation owns.
    #[error("site {id} is registered to another organisation")]
    OwnedByOther {
        /// The site.
        id: String,
        /// Its owner.
        org: String,
    },
    /// A compare-and-set lost to a concurrent change.
    #[error("site {0} changed concurrently; try again")]
    Conflict(String),
    /// A stored record does not parse.
    #[error("site {id}: stored record is malformed: {detail}")]
    Corrupt {
        /// The site.
        id: String,
        /// The parser's complaint.
        detail: String,
    },
}

/// What [`Sites::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The record was created.
    Created,
    /// The organisation owned it already; nothing changed.
    Existed,
}

/// The registry in [`SITES_BUCKET`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sites {
    /// `plantd_sites`.
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> SitesError {
    SitesError::Unavailable(e.to_string())
}

impl Sites {
    /// Opens the bucket (it must exist: [`crate::streams::ensure`]).
    ///
    /// # Errors
    /// [`SitesError::Unavailable`] when it is missing or JetStream is
    /// unreachable.
    pub async fn open(js: &jetstream::Context) -> Result<Self, SitesError> {
        let kv = js.get_key_value(SITES_BUCKET).await.map_err(unavailable)?;
        Ok(Self { kv })
    }

    /// The record of `id` with its revision; `None` when not registered
    /// (or `id` cannot be a site id).
    ///
    /// # Errors
    /// [`SitesError::Unavailable`], [`SitesError::Corrupt`].
    pub async fn get(&self, id: &str) -> Result<Option<(SiteRecord, u64)>, SitesError> {
        if Site::new(id).is_err() {
            return Ok(None);
        }
        match self.kv.entry(id).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => {
                let record =
                    serde_json::from_slice(&e.value).map_err(|err| SitesError::Corrupt {
                        id: id.to_owned(),
                        detail: err.to_string(),
                    })?;
                Ok(Some((record, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Every registered site, by id.
    ///
    /// # Errors
    /// [`SitesError::Unavailable`]; malformed records are logged and
    /// skipped.
    pub async fn list(&self) -> Result<Vec<SiteRecord>, SitesError> {
        use futures::TryStreamExt as _;
        let mut keys: Vec<String> = match self.kv.keys().await {
            Ok(k) => k.try_collect().await.map_err(unavailable)?,
            Err(e) => return Err(unavailable(e)),
        };
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.get(&k).await {
                Ok(Some((r, _))) => out.push(r),
                Ok(None) => {}
                Err(SitesError::Corrupt { id, detail }) => {
                    tracing::warn!(site = %id, %detail, "skipping a malformed site record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Registers `record`; its revision.
    ///
    /// # Errors
    /// [`SitesError::Exists`] when the id is taken (by any organisation),
    /// [`SitesError::Unavailable`].
    pub async fn create(&self, record: &SiteRecord) -> Result<u64, SitesError> {
        let bytes = encode(record)?;
        self.kv
            .create(&record.id, bytes.into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => SitesError::Exists(record.id.clone()),
                _ => unavailable(e),
            })
    }

    /// Replaces the record of `record.id` if its revision is still
    /// `revision`; the new revision.
    ///
    /// # Errors
    /// [`SitesError::Conflict`] when another write came first,
    /// [`SitesError::Unavailable`].
    pub async fn update(&self, record: &SiteRecord, revision: u64) -> Result<u64, SitesError> {
        let bytes = encode(record)?;
        self.kv
            .update(&record.id, bytes.into(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => SitesError::Conflict(record.id.clone()),
                _ => unavailable(e),
            })
    }

    /// Removes the record of `id` (idempotent).
    ///
    /// # Errors
    /// [`SitesError::Unavailable`].
    pub async fn delete(&self, id: &str) -> Result<(), SitesError> {
        self.kv.delete(id).await.map_err(unavailable)
    }

    /// Makes sure `id` is registered to `org` (idempotent; `plantd up`
    /// registers `local` this way on every start).
    ///
    /// # Errors
    /// [`SitesError::OwnedByOther`] when another organisation owns `id`,
    /// [`SitesError::Unavailable`], [`SitesError::Corrupt`].
    pub async fn register(
        &self,
        id: &Site,
        org: &str,
        name: &str,
    ) -> Result<Registered, SitesError> {
        let mut record = SiteRecord::new(id, org);
        record.name = name.to_owned();
        for _ in 0..4 {
            if let Some((existing, _)) = self.get(id.as_str()).await? {
                return if existing.org == org {
                    Ok(Registered::Existed)
                } else {
                    Err(SitesError::OwnedByOther {
                        id: existing.id,
                        org: existing.org,
                    })
                };
            }
            match self.create(&record).await {
                Ok(_) => return Ok(Registered::Created),
                // Someone registered it meanwhile: look again.
                Err(SitesError::Exists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SitesError::Conflict(id.as_str().to_owned()))
    }
}

fn encode(record: &SiteRecord) -> Result<Vec<u8>, SitesError> {
    serde_json::to_vec(record).map_err(|e| SitesError::Corrupt {
        id: record.id.clone(),
        detail: e.to_string(),
    })
}

/// A site's cached record (`None`: not registered) and when it was read.
type Cached = (Instant, Option<SiteRecord>);

/// [`Sites::get`] with each answer (including "not registered") reused
/// for a fixed time: for paths that ask per message (the AWS fan-out), at
/// the price of a change taking up to that long to be seen.
#[derive(Debug)]
pub struct SiteCache {
    /// The registry.
    sites: Sites,
    /// How long an answer is reused.
    ttl: Duration,
    /// Site id → answer.
    entries: Mutex<HashMap<String, Cached>>,
}

impl SiteCache {
    /// A cache over `sites` keeping answers for `ttl` (zero: no caching).
    pub fn new(sites: Sites, ttl: Duration) -> Self {
        Self {
            sites,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The registry underneath.
    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// The record of `id`, from the cache when fresh.
    ///
    /// # Errors
    /// As [`Sites::get`]; errors are not cached.
    pub async fn get(&self, id: &str) -> Result<Option<SiteRecord>, SitesError> {
        if !self.ttl.is_zero()
            && let Ok(entries) = self.entries.lock()
            && let Some((at, record)) = entries.get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(record.clone());
        }
        let record = self.sites.get(id).await?.map(|(r, _)| r);
        if !self.ttl.is_zero()
            && let Ok(mut entries) = self.entries.lock()
        {
            entries.insert(id.to_owned(), (Instant::now(), record.clone()));
        }
        Ok(record)
    }

    /// Forgets `id`, so the next [`get`](Self::get) reads the registry.
    pub fn forget(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(id);
        }
    }
}

#[cfg(feature = "http")]
mod http {
    use axum::http::StatusCode;

    use super::{Denied, SitesError};
    use crate::http::AppError;

    impl Denied {
        /// The HTTP error for `site`: 404 for an unregistered site, 403
        /// naming the rule for another organisation's.
        pub fn to_app_error(self, site: &str) -> AppError {
            match self {
                Denied::Unknown => AppError::not_found(format!("site {site}")),
                Denied::OtherOrg => AppError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("site {site} belongs to another organisation"),
                ),
            }
        }
    }

    impl From<SitesError> for AppError {
        fn from(e: SitesError) -> Self {
            match e {
                SitesError::Unavailable(detail) => AppError::unavailable(detail),
                SitesError::Exists(id) => {
                    AppError::conflict(format!("site {id} already exists (site ids are global)"))
                }
                SitesError::OwnedByOther { id, .. } => {
                    AppError::conflict(format!("site {id} is registered to another organisation"))
                }
                SitesError::Conflict(id) => {
                    AppError::conflict(format!("site {id} changed concurrently; try again"))
                }
                e @ SitesError::Corrupt { .. } => AppError::internal(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Audience, PrincipalKind};

    fn claims(org: &str, roles: &[&str]) -> Claims {
        Claims {
            iss: "t".into(),
            sub: "u".into(),
            aud: Audience::One("plantd:api".into()),
            exp: u64::MAX,
            iat: 0,
            nbf: None,
            jti: "j".into(),
            org: org.into(),
            kind: PrincipalKind::User,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            perms: vec!["*".into()],
            mqtt: BTreeMap::new(),
        }
    }

    fn record(org: &str) -> SiteRecord {
        SiteRecord::new(&Site::new("plant-1").expect("site"), org)
    }

    #[test]
    fn own_org_may_act_other_org_may_not() {
        let r = record("acme");
        assert_eq!(
            authorize(&claims("acme", &["viewer"]), Some(&r)),
            Ok(Access::Own)
        );
        assert_eq!(
            authorize(&claims("initech", &["admin"]), Some(&r)),
            Err(Denied::OtherOrg)
        );
        assert_eq!(
            authorize(&claims("acme", &["admin"]), None),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn only_the_bootstrap_superadmin_crosses_organisations() {
        let r = record("acme");
        assert_eq!(
            authorize(&claims(BOOTSTRAP_ORG, &[SUPERADMIN_ROLE]), Some(&r)),
            Ok(Access::AsSuperadmin)
        );
        assert_eq!(
            authorize(&claims(BOOTSTRAP_ORG, &["admin"]), Some(&r)),
            Err(Denied::OtherOrg),
            "an admin of the bootstrap org is not a superadmin"
        );
        assert_eq!(
            authorize(&claims("initech", &[SUPERADMIN_ROLE]), Some(&r)),
            Err(Denied::OtherOrg),
            "a role named superadmin elsewhere crosses nothing"
        );
        assert_eq!(
            authorize(&claims(BOOTSTRAP_ORG, &[SUPERADMIN_ROLE]), None),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn records_are_validated() {
        let mut r = record("acme");
        assert!(r.validate().is_ok());
        r.id = "a.b".into();
        assert!(r.validate().is_err());
        let mut r = record("acme");
        r.labels.insert("bad key".into(), "v".into());
        assert!(r.validate().is_err());
        let mut r = record("acme");
        r.name = "x".repeat(MAX_NAME + 1);
        assert!(r.validate().is_err());
        let mut r = record("acme");
        r.labels.insert("line".into(), "north".into());
        assert!(r.validate().is_ok());
    }

    #[test]
    fn record_json_shape() {
        let j = r#"{"id":"plant-1","org":"acme"}"#;
        let r: SiteRecord = serde_json::from_str(j).expect("minimal record");
        assert_eq!(r.org, "acme");
        assert!(r.labels.is_empty());
        let v = serde_json::to_value(record("acme")).expect("json");
        for field in ["id", "org", "name", "description", "labels", "created_ms"] {
            assert!(v.get(field).is_some(), "{field}");
        }
    }
}
