//! Certificate-only login: devices registered with the SHA-256 fingerprint
//! of their TLS client certificate connect without a token
//! (`docs/decisions/0043-edge-certificate-login.md`).
//!
//! * **Where the edge learns them.** The identity service writes one
//!   record per registered certificate in `plantd_device_certs`
//!   ([`plantd_shared::device_certs`], key `<site>.<sha256 hex>`). The
//!   edge follows `<site>.>` — its own site's records only ([`follow`]: a
//!   KV watch with history, re-established with backoff) — into a
//!   [`Directory`] held in memory and written to
//!   `<data-dir>/`[`CACHE_FILE`] once caught up, so an edge started
//!   without its uplink still admits its devices.
//! * **At CONNECT** (TLS listener with `--tls-client-ca`, so rustls has
//!   verified the chain): no password and no authentication method, and
//!   the link hands over the leaf certificate's fingerprint. A registered,
//!   active fingerprint of a device of the site's current owner becomes an
//!   [`Identity`] with the device's id as subject and its grants on this
//!   site — checked on every PUBLISH and SUBSCRIBE like a token's. It
//!   never expires by the clock; its registration ends it.
//! * **Refusals**: an unregistered certificate is 0x87 *Not authorized*
//!   (3.1.1: 5) — the certificate itself is valid (rustls verified it), it
//!   is the principal that is not allowed, which is what 0x87 means; 0x86
//!   *Bad user name or password* would blame credentials the client never
//!   sent. With anonymous access on, an unregistered certificate connects
//!   anonymously, as without a certificate. An inactive device, or one of
//!   another organisation than the site's owner, is 0x87 too.
//! * **While connected**: the record deleted, deactivated or changed (its
//!   grants, organisation or device) closes the connection with 0x87 —
//!   the revocation path, under the token id `cert:<hex>` — and the site
//!   changing hands closes it like any token connection.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt as _;
use plantd_shared::claims::{MqttGrant, Permissions, PrincipalKind};
use plantd_shared::device_certs::{
    self, DEVICE_CERTS_BUCKET, DeviceCert, Fingerprint, fingerprint_of_key,
};
use plantd_shared::subject::Site;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Authenticator, Identity, NEVER_EXPIRES, Refused};
use crate::protocol::ReasonCode;

/// The cached directory under `--data-dir`.
pub const CACHE_FILE: &str = "device-certs.json";

/// The token-id prefix of a certificate login: `cert:<hex>` is what a
/// change of the record kicks.
pub const JTI_PREFIX: &str = "cert:";

/// The cache file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cached {
    /// The site they were followed for.
    site: String,
    /// By fingerprint (hex).
    certificates: BTreeMap<String, DeviceCert>,
}

/// The devices of this site registered with a certificate fingerprint.
#[derive(Debug)]
pub struct Directory {
    /// The edge's site.
    site: Site,
    /// Where the directory is cached (`None` without a data directory).
    cache: Option<PathBuf>,
    /// The records, by fingerprint. Read at CONNECT, written by [`follow`].
    records: RwLock<HashMap<Fingerprint, Arc<DeviceCert>>>,
    /// CONNECTs admitted by certificate.
    accepted: AtomicU64,
    /// CONNECTs with a certificate refused (unregistered, inactive,
    /// another organisation).
    refused: AtomicU64,
}

impl Directory {
    /// A directory for `site`, loaded from `cache` when it holds this
    /// site's records (missing, unreadable, malformed or another site's:
    /// empty, with a warning).
    pub fn new(site: Site, cache: Option<PathBuf>) -> Self {
        let records = cache
            .as_deref()
            .map(|p| load_cache(p, &site))
            .unwrap_or_default();
        Self {
            site,
            cache,
            records: RwLock::new(records),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The record of `fingerprint`, if registered.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<Arc<DeviceCert>> {
        self.records
            .read()
            .ok()
            .and_then(|r| r.get(fingerprint).cloned())
    }

    /// How many certificates are registered.
    pub fn len(&self) -> usize {
        self.records.read().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the record behind a certificate `identity` still stands as
    /// it was when it connected (registered, active, same device and
    /// organisation).
    pub(super) fn still_admits(&self, identity: &Identity) -> bool {
        let Some(fingerprint) = identity
            .jti
            .strip_prefix(JTI_PREFIX)
            .and_then(|hex| Fingerprint::parse(hex).ok())
        else {
            return false;
        };
        self.get(&fingerprint)
            .is_some_and(|r| r.active && r.org == identity.org && r.device == identity.subject)
    }

    /// Sets (`Some`) or removes (`None`) the record of `fingerprint`;
    /// whether a record that existed changed or went (its connections must
    /// close).
    fn apply(&self, fingerprint: Fingerprint, record: Option<DeviceCert>) -> bool {
        let Ok(mut records) = self.records.write() else {
            return false;
        };
        let before = match record {
            Some(r) => records
                .insert(fingerprint, Arc::new(r.clone()))
                .filter(|b| **b != r),
            None => records.remove(&fingerprint),
        };
        before.is_some()
    }

    /// Writes the directory to its cache file (atomically).
    fn write_cache(&self) {
        let Some(path) = &self.cache else { return };
        let certificates = self
            .records
            .read()
            .map(|r| {
                r.iter()
                    .map(|(f, c)| (f.hex(), (**c).clone()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        let cached = Cached {
            site: self.site.as_str().to_owned(),
            certificates,
        };
        let written = serde_json::to_vec_pretty(&cached)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::analytics::write_atomically(path, &bytes));
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "cannot cache the device certificates");
        }
    }

    /// The figures in the Prometheus text format.
    pub fn prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP plantd_certificate_logins_total CONNECTs without a token decided by the client certificate.\n# TYPE plantd_certificate_logins_total counter\nplantd_certificate_logins_total{{result=\"accepted\"}} {}\nplantd_certificate_logins_total{{result=\"refused\"}} {}",
            self.accepted.load(Relaxed),
            self.refused.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP plantd_device_certificates Device certificates registered for this site.\n# TYPE plantd_device_certificates gauge\nplantd_device_certificates {}",
            self.len()
        );
    }
}

fn load_cache(path: &Path, site: &Site) -> HashMap<Fingerprint, Arc<DeviceCert>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the cached device certificates");
            return HashMap::new();
        }
    };
    match serde_json::from_slice::<Cached>(&bytes) {
        Ok(c) if c.site == site.as_str() => {
            let records: HashMap<_, _> = c
                .certificates
                .into_iter()
                .filter_map(|(hex, r)| Some((Fingerprint::parse(&hex).ok()?, Arc::new(r))))
                .filter(|(_, r)| r.site == site.as_str())
                .collect();
            info!(path = %path.display(), certificates = records.len(), "device certificates from the cache");
            records
        }
        Ok(c) => {
            warn!(path = %path.display(), cached = %c.site, %site, "the cached device certificates are for another site; ignored");
            HashMap::new()
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the cached device certificates are malformed; ignored");
            HashMap::new()
        }
    }
}

impl Identity {
    /// The identity of the device registered with `fingerprint` on `site`:
    /// its id, organisation and grants on this site; token id
    /// `cert:<hex>`; no expiry.
    fn for_certificate(site: Site, fingerprint: &Fingerprint, record: &DeviceCert) -> Self {
        let mqtt = [(
            site.as_str().to_owned(),
            MqttGrant {
                publish: record.publish.clone(),
                subscribe: record.subscribe.clone(),
            },
        )]
        .into_iter()
        .collect();
        Self {
            subject: record.device.clone(),
            org: record.org.clone(),
            kind: PrincipalKind::Device,
            jti: Arc::from(format!("{JTI_PREFIX}{}", fingerprint.hex())),
            expires: NEVER_EXPIRES,
            auth_method: None,
            superadmin: false,
            permissions: Permissions::new(&[], &mqtt),
            site,
        }
    }
}

impl Authenticator {
    /// Decides a CONNECT without password by its client certificate's
    /// `fingerprint` (see the module documentation).
    pub(super) fn authenticate_certificate(
        &self,
        directory: &Directory,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Arc<Identity>>, Refused> {
        let refuse = |why: &str| -> Result<Option<Arc<Identity>>, Refused> {
            directory.refused.fetch_add(1, Relaxed);
            info!(fingerprint = %fingerprint, why, "refused: certificate login");
            Err(Refused::new(ReasonCode::NotAuthorized, why))
        };
        let Some(record) = directory.get(fingerprint) else {
            if self.allow_anonymous {
                debug!(fingerprint = %fingerprint, "unregistered client certificate without a token: anonymous");
                return Ok(None);
            }
            return refuse("the client certificate is not registered for a device of this site");
        };
        if !record.active {
            return refuse("the certificate's device is deactivated");
        }
        let identity = Identity::for_certificate(self.site.clone(), fingerprint, &record);
        if !identity.admitted_by(self.owner().as_deref()) {
            return refuse(
                "the certificate's device belongs to another organisation than this site's",
            );
        }
        directory.accepted.fetch_add(1, Relaxed);
        info!(device = %record.device, org = %record.org, fingerprint = %fingerprint, "certificate login");
        Ok(Some(Arc::new(identity)))
    }
}

/// Keeps `directory` equal to `plantd_device_certs`' records of its site
/// until `stop`, closing (0x87) the connections of a record that goes or
/// changes. NATS down, or no bucket yet: retried with backoff, the
/// directory kept as it is.
pub async fn follow(
    js: jetstream::Context,
    directory: Arc<Directory>,
    authn: Arc<Authenticator>,
    stop: CancellationToken,
) {
    let mut revisions: HashMap<String, u64> = HashMap::new();
    let mut delay = Duration::from_millis(200);
    loop {
        let run = follow_once(&js, &directory, &authn, &mut revisions, &mut delay);
        let error = tokio::select! {
            () = stop.cancelled() => return,
            e = run => e,
        };
        warn!(error = %error, retry_in = ?delay, "following the device certificates interrupted; the edge keeps the ones it has");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One watch: every record's newest state, then each change. Returns why
/// it ended.
async fn follow_once(
    js: &jetstream::Context,
    directory: &Directory,
    authn: &Authenticator,
    revisions: &mut HashMap<String, u64>,
    delay: &mut Duration,
) -> String {
    let kv = match js.get_key_value(DEVICE_CERTS_BUCKET).await {
        Ok(kv) => kv,
        Err(e) => return format!("bucket {DEVICE_CERTS_BUCKET}: {e}"),
    };
    // With history: the newest entry of every key first — a delete
    // marker for a record deleted while the edge was away — then changes.
    let mut changes = match kv
        .watch_with_history(device_certs::site_filter(&directory.site))
        .await
    {
        Ok(w) => w,
        Err(e) => return format!("watching {DEVICE_CERTS_BUCKET}: {e}"),
    };
    *delay = Duration::from_millis(200);
    let mut dirty = false;
    while let Some(entry) = changes.next().await {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return format!("watching {DEVICE_CERTS_BUCKET}: {e}"),
        };
        if revisions
            .get(&entry.key)
            .is_some_and(|&seen| seen >= entry.revision)
        {
            continue;
        }
        revisions.insert(entry.key.clone(), entry.revision);
        dirty |= apply(directory, authn, &entry);
        // Caught up (nothing pending): persist what changed.
        if entry.delta == 0 && dirty {
            directory.write_cache();
            dirty = false;
        }
    }
    "the watch ended".to_owned()
}

/// One entry from the watch; whether the directory changed.
fn apply(directory: &Directory, authn: &Authenticator, entry: &Entry) -> bool {
    let Some(fingerprint) = fingerprint_of_key(&directory.site, &entry.key) else {
        warn!(key = %entry.key, "malformed key in {DEVICE_CERTS_BUCKET}; ignored");
        return false;
    };
    let record = match entry.operation {
        Operation::Put => match serde_json::from_slice::<DeviceCert>(&entry.value) {
            Ok(r) if r.site == directory.site.as_str() && !r.device.is_empty() => Some(r),
            Ok(r) => {
                warn!(key = %entry.key, site = %r.site, "device certificate record for another site or without a device; ignored");
                None
            }
            Err(e) => {
                warn!(key = %entry.key, error = %e, "malformed device certificate record; ignored");
                None
            }
        },
        Operation::Delete | Operation::Purge => None,
    };
    let before = directory.get(&fingerprint);
    if before.as_deref() == record.as_ref() {
        return false;
    }
    let summary = record
        .as_ref()
        .map(|r| (r.device.clone(), r.org.clone(), r.active));
    let closes = directory.apply(fingerprint, record);
    let closed = if closes {
        authn.kick(&format!("{JTI_PREFIX}{}", fingerprint.hex()))
    } else {
        0
    };
    match summary {
        Some((device, org, active)) => {
            info!(%fingerprint, %device, %org, active, connections_closed = closed, "device certificate registered or changed");
        }
        None => {
            info!(%fingerprint, connections_closed = closed, "device certificate unregistered");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(device: &str, org: &str, active: bool) -> DeviceCert {
        DeviceCert {
            device: device.into(),
            org: org.into(),
            site: "plant-1".into(),
            publish: vec!["line1/#".into()],
            subscribe: vec!["cmd/#".into()],
            active,
        }
    }

    #[test]
    fn the_directory_survives_a_restart_through_its_cache_for_its_site_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(CACHE_FILE);
        let site = Site::new("plant-1").expect("site");
        let d = Directory::new(site.clone(), Some(path.clone()));
        let f = Fingerprint::of_der(b"device one");
        assert!(!d.apply(f, Some(record("dev-1", "acme", true))), "new");
        assert!(d.apply(f, Some(record("dev-1", "acme", false))), "changed");
        d.write_cache();
        let again = Directory::new(site, Some(path.clone()));
        assert_eq!(again.get(&f).map(|r| r.active), Some(false));
        let other = Directory::new(Site::new("plant-2").expect("site"), Some(path));
        assert!(other.is_empty(), "another site's cache counts for nothing");
    }

    #[test]
    fn a_certificate_identity_has_the_devices_grants_on_this_site_and_no_expiry() {
        let site = Site::new("plant-1").expect("site");
        let f = Fingerprint::of_der(b"d");
        let id = Identity::for_certificate(site, &f, &record("dev-1", "acme", true));
        assert_eq!(id.subject, "dev-1");
        assert!(id.can_publish("line1/temp"));
        assert!(!id.can_publish("line2/temp"));
        assert_eq!(id.expires, NEVER_EXPIRES);
        assert!(id.admitted_by(Some("acme")));
        assert!(!id.admitted_by(Some("initech")));
        assert!(!id.admitted_by(None));
    }
}
