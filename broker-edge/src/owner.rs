//! Which organisation owns the edge's site.
//!
//! Every site belongs to one organisation (its record in the KV bucket
//! `plantd_sites`, [`plantd_shared::sites`]); the edge refuses a CONNECT
//! whose token belongs to another one ([`crate::auth`]), so it must know
//! the owner before it accepts anybody. [`resolve`] decides it once, at
//! start:
//!
//! 1. **The site record**, read over the uplink's NATS (`--nats-url`, at
//!    most [`REGISTRY_WAIT`]) and cached in `<data-dir>/site.json` so that a
//!    restart without the uplink still knows it.
//! 2. **`--org`** (config key `org`) states it. When the registry answers
//!    with another owner the edge does not start (a misconfiguration that
//!    would let the wrong organisation in); when the site is not
//!    registered it is only warned about.
//! 3. Without `--org`: the registry's answer; if the registry cannot be
//!    reached, the cached record. A registry that answers "not registered"
//!    removes the cached copy (a deleted site admits nobody's tokens).
//!
//! With token authentication on (`--jwks-url`/`--jwks-file`) and no owner
//! found, the edge does not start: [`OwnerError::Unknown`] says how to fix
//! it. Without token authentication (anonymous-only edges) the owner is
//! not needed.
//!
//! While the edge runs with its uplink, [`watch`] follows the site's
//! record: a site re-registered to another organisation or deleted takes
//! effect at once — the cached record follows, the new owner is the one
//! CONNECTs are checked against, and live connections of an organisation
//! that no longer owns the site are closed (a deleted site, or one whose
//! record contradicts `--org`, admits nobody's tokens).

pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use plantd_shared::sites::{SiteRecord, Sites, SitesError};
use plantd_shared::subject::Site;
use tracing::{info, warn};

use crate::config::Config;

/// The cached site record under `--data-dir`.
pub const CACHE_FILE: &str = "site.json";

/// How long start-up waits for the site registry over NATS before falling
/// back on the cached record.
pub const REGISTRY_WAIT: Duration = Duration::from_secs(3);

/// Why the owner of the site is not settled.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Token authentication is on and nothing says who owns the site.
    #[error(
        "token authentication is on but the organisation that owns site {site} is unknown: \
         pass --org <org> (config key `org`), or register the site (`plantd sites create {site}`) \
         and give the edge --nats-url so it reads the owner from plantd_sites"
    )]
    Unknown {
        /// The site.
        site: String,
    },
    /// `--org` and the site registry disagree.
    #[error(
        "site {site} belongs to organisation {registered} in plantd_sites, but the edge was \
         told --org {configured}: fix the flag (or the site record)"
    )]
    Mismatch {
        /// The site.
        site: String,
        /// The owner in the registry.
        registered: String,
        /// The owner given to the edge.
        configured: String,
    },
    /// The site name is invalid.
    #[error("site {0:?}: {1}")]
    Site(String, String),
}

/// What the registry said about the site.
#[derive(Debug)]
enum Lookup {
    /// Its record.
    Found(SiteRecord),
    /// Nobody registered it.
    NotRegistered,
    /// No answer (no NATS configured, not reachable, no bucket).
    Unknown,
}

/// Decides the owner of `config.site` as the module describes: `nats` is
/// the uplink's URL with connection options (`None` without an uplink),
/// `verifies_tokens` whether token authentication is on.
///
/// # Errors
/// [`OwnerError`] when the edge must not start.
pub async fn resolve(
    config: &Config,
    nats: Option<(String, async_nats::ConnectOptions)>,
    verifies_tokens: bool,
) -> Result<Option<String>, OwnerError> {
    let site = Site::new(config.site.as_str())
        .map_err(|e| OwnerError::Site(config.site.clone(), e.to_string()))?;
    let cache = config.data_dir.as_deref().map(|d| d.join(CACHE_FILE));
    let lookup = match nats {
        Some((url, options)) => look_up(&site, &url, options).await,
        None => Lookup::Unknown,
    };
    match (&lookup, &cache) {
        (Lookup::Found(record), Some(path)) => write_cache(path, record),
        (Lookup::NotRegistered, Some(path)) => remove_cache(path),
        _ => {}
    }
    let owner = match (&config.org, lookup) {
        (Some(configured), Lookup::Found(record)) if record.org != *configured => {
            return Err(OwnerError::Mismatch {
                site: site.to_string(),
                registered: record.org,
                configured: configured.clone(),
            });
        }
        (Some(configured), Lookup::NotRegistered) => {
            warn!(site = %site, org = %configured, "the site is not registered in plantd_sites: tokens for it cannot be issued until it is (plantd sites create)");
            Some(configured.clone())
        }
        (Some(configured), _) => Some(configured.clone()),
        (None, Lookup::Found(record)) => {
            info!(site = %site, org = %record.org, "site owner read from plantd_sites");
            Some(record.org)
        }
        (None, Lookup::NotRegistered) => None,
        (None, Lookup::Unknown) => {
            let cached = cache.as_deref().and_then(|p| read_cache(p, &site));
            if let Some(org) = &cached {
                info!(site = %site, %org, "site owner from the cached site record");
            }
            cached
        }
    };
    match owner {
        Some(org) => Ok(Some(org)),
        None if verifies_tokens => Err(OwnerError::Unknown {
            site: site.to_string(),
        }),
        None => Ok(None),
    }
}

/// Reads the site's record over a connection of its own (closed again),
/// waiting at most [`REGISTRY_WAIT`].
async fn look_up(site: &Site, url: &str, options: async_nats::ConnectOptions) -> Lookup {
    let read = async {
        let client = plantd_shared::nats_urls::connect(url, options)
            .await
            .map_err(|e| SitesError::Unavailable(e.to_string()))?;
        let sites = Sites::open(&async_nats::jetstream::new(client)).await?;
        sites.get(site.as_str()).await
    };
    match tokio::time::timeout(REGISTRY_WAIT, read).await {
        Ok(Ok(Some((record, _)))) => Lookup::Found(record),
        Ok(Ok(None)) => Lookup::NotRegistered,
        Ok(Err(e)) => {
            warn!(site = %site, error = %e, "cannot read the site record at start");
            Lookup::Unknown
        }
        Err(_) => {
            warn!(site = %site, wait = ?REGISTRY_WAIT, "the site registry did not answer at start");
            Lookup::Unknown
        }
    }
}

fn read_cache(path: &Path, site: &Site) -> Option<String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the cached site record");
            return None;
        }
    };
    match serde_json::from_slice::<SiteRecord>(&text) {
        Ok(r) if r.id == site.as_str() => Some(r.org),
        Ok(r) => {
            warn!(path = %path.display(), cached = %r.id, site = %site, "the cached site record is for another site; ignored");
            None
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the cached site record is malformed; ignored");
            None
        }
    }
}

/// Writes the record atomically (temp file, then rename), creating the
/// data directory if needed.
pub(crate) fn write_cache(path: &Path, record: &SiteRecord) {
    let tmp: PathBuf = path.with_extension("json.tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    let written = serde_json::to_vec_pretty(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::create_dir_all(dir).map(|()| bytes))
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot cache the site record");
    }
}

pub(crate) fn remove_cache(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => info!(path = %path.display(), "site not registered: cached record removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove the cached site record"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, org: Option<&str>) -> Config {
        Config {
            site: "plant-1".into(),
            org: org.map(str::to_owned),
            data_dir: Some(dir.to_owned()),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn flag_then_cache_else_a_clear_error_when_tokens_are_verified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let got = resolve(&config(dir.path(), Some("acme")), None, true).await;
        assert_eq!(got.expect("from the flag").as_deref(), Some("acme"));

        let err = resolve(&config(dir.path(), None), None, true)
            .await
            .expect_err("nothing says who owns it");
        assert!(err.to_string().contains("--org"), "{err}");
        assert_eq!(
            resolve(&config(dir.path(), None), None, false)
                .await
                .expect("anonymous edges need no owner"),
            None
        );

        let site = Site::new("plant-1").expect("site");
        write_cache(
            &dir.path().join(CACHE_FILE),
            &SiteRecord::new(&site, "initech"),
        );
        let got = resolve(&config(dir.path(), None), None, true).await;
        assert_eq!(got.expect("from the cache").as_deref(), Some("initech"));
        let mut other = config(dir.path(), None);
        other.site = "plant-2".into();
        assert!(
            resolve(&other, None, true).await.is_err(),
            "a cached record of another site counts for nothing"
        );
    }
}
