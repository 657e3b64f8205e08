//! The signing keys and their rotation.
//!
//! One key signs. The JWKS publishes it together with
//!
//! * the **next** key, generated ahead of time, so that edges and proxies
//!   that refreshed their copy of the JWKS since the last rotation already
//!   know the key that will sign after the next one (a rotation is then
//!   seamless, even for an edge that refreshes every few minutes), and
//! * **previous** keys, each kept until the last token it signed has
//!   expired (rotation time + access-token lifetime + the verifiers' clock
//!   leeway), then dropped.
//!
//! [`Keys::rotate`] makes the next key the signing one, generates a new
//! next key, and keeps the old signing key as a previous one. The whole set
//! (a [`Ring`]) is saved, before it is used, where the signing key lives
//! ([`KeyHome`]): a ring file next to the key file (`plantd up`, local
//! runs), or the Secrets Manager secret (AWS: other warm instances see the
//! new ring within [`SECRET_RECHECK`] through [`Keys::refresh`]). A key
//! given in `PLANTD_IDENTITY_SIGNING_KEY` cannot be rotated by identity
//! (rotate by changing the variable).
//!
//! Each key set is built once and kept for the life of the process
//! (`Box::leak`): a rotation is a rare, deliberate act (a few kilobytes
//! each), and this lets every caller borrow `&SigningKey` / `&JwkSet`
//! without holding a lock.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plantd_shared::jwt::{Algorithm, JwkSet, SigningKey, jwks_of, now_secs};
use serde::{Deserialize, Serialize};

use crate::AppError;

/// How long after a rotation a previous key is kept beyond the access-token
/// lifetime: the verifiers' clock leeway (30 s) and some margin.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(60);

/// How often an instance whose keys live in Secrets Manager looks for a
/// ring rotated by another instance.
pub const SECRET_RECHECK: Duration = Duration::from_secs(30);

/// A key kept for verification until `retire_at`.
#[derive(Debug, Clone)]
pub struct Retiring {
    /// The key.
    pub key: SigningKey,
    /// Seconds since the epoch after which no token it signed is valid.
    pub retire_at: u64,
}

/// One generation of keys.
#[derive(Debug)]
pub struct KeySet {
    /// Signs new tokens.
    signing: SigningKey,
    /// Published ahead, signs after the next rotation.
    next: Option<SigningKey>,
    /// Older keys still published.
    previous: Vec<Retiring>,
    /// The JWKS document of all of them.
    jwks: JwkSet,
}

impl KeySet {
    fn new(
        signing: SigningKey,
        next: Option<SigningKey>,
        mut previous: Vec<Retiring>,
    ) -> Result<Self, AppError> {
        let now = now_secs();
        previous.retain(|p| p.retire_at > now);
        let jwks = jwks_of(
            std::iter::once(&signing)
                .chain(next.iter())
                .chain(previous.iter().map(|p| &p.key)),
        )
        .map_err(AppError::internal)?;
        Ok(Self {
            signing,
            next,
            previous,
            jwks,
        })
    }

    fn leak(self) -> &'static KeySet {
        Box::leak(Box::new(self))
    }
}

/// The saved form of a key set (PEMs), in the ring file or the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Ring {
    /// The signing key.
    pub signing_key_pem: String,
    /// The next key.
    #[serde(default)]
    pub next_key_pem: Option<String>,
    /// Previous keys.
    #[serde(default)]
    pub previous_keys: Vec<SavedKey>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("keys", &(2 + self.previous_keys.len()))
            .finish_non_exhaustive()
    }
}

/// A previous key as saved.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedKey {
    /// PKCS#8 PEM.
    pub pem: String,
    /// Seconds since the epoch when it is dropped.
    pub retire_at: u64,
}

impl Ring {
    fn of(set: &KeySet) -> Self {
        Self {
            signing_key_pem: set.signing.private_pem().to_owned(),
            next_key_pem: set.next.as_ref().map(|k| k.private_pem().to_owned()),
            previous_keys: set
                .previous
                .iter()
                .map(|p| SavedKey {
                    pem: p.key.private_pem().to_owned(),
                    retire_at: p.retire_at,
                })
                .collect(),
        }
    }

    fn load(&self) -> Result<KeySet, AppError> {
        let next = self
            .next_key_pem
            .as_deref()
            .map(Keys::from_pem)
            .transpose()?;
        let previous = self
            .previous_keys
            .iter()
            .map(|s| {
                Ok(Retiring {
                    key: Keys::from_pem(&s.pem)?,
                    retire_at: s.retire_at,
                })
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        KeySet::new(Keys::from_pem(&self.signing_key_pem)?, next, previous)
    }
}

/// Where the keys are kept, and so where a rotation is saved.
#[derive(Debug, Clone)]
pub enum KeyHome {
    /// Given in the environment: not rotatable here.
    Fixed,
    /// The key file (PEM) and the ring file beside it
    /// ([`ring_path`]): the ring, when present, is the truth.
    File(PathBuf),
    /// The identity function's Secrets Manager secret.
    Secret {
        /// The client.
        client: aws_sdk_secretsmanager::Client,
        /// The secret id.
        id: String,
    },
}

/// The ring file of key file `pem`: `signing-key.pem` → `signing-key.ring.json`.
pub fn ring_path(pem: &Path) -> PathBuf {
    pem.with_extension("ring.json")
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    /// The key that signs from now on.
    pub signing_kid: String,
    /// The key published for the rotation after this one.
    pub next_kid: String,
    /// The key that signed until now, and when it leaves the JWKS.
    pub retired_kid: String,
    /// Seconds since the epoch.
    pub retire_at: u64,
}

/// One published key as administrators see it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// `signing`, `next` or `previous`.
    pub role: &'static str,
    /// For previous keys: when they leave the JWKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<u64>,
}

/// The service's keys: the current [`KeySet`] and where it is saved.
#[derive(Debug)]
pub struct Keys {
    /// The current generation.
    current: RwLock<&'static KeySet>,
    /// Where rotations are saved.
    home: KeyHome,
    /// Serialises rotations and reloads in this process.
    changing: tokio::sync::Mutex<()>,
    /// When the home was last looked at for a newer ring (ms).
    checked_ms: AtomicU64,
}

impl Keys {
    /// Keys from one signing key and older ones kept for verification (no
    /// next key, not rotatable: [`KeyHome::Fixed`]).
    ///
    /// # Errors
    /// 500 if a public key cannot be put in the JWKS.
    pub fn new(signing: SigningKey, previous: Vec<SigningKey>) -> Result<Self, AppError> {
        let previous = previous
            .into_iter()
            .map(|key| Retiring {
                key,
                retire_at: u64::MAX,
            })
            .collect();
        Ok(Self::with_home(
            KeySet::new(signing, None, previous)?,
            KeyHome::Fixed,
        ))
    }

    fn with_home(set: KeySet, home: KeyHome) -> Self {
        Self {
            current: RwLock::new(set.leak()),
            home,
            changing: tokio::sync::Mutex::new(()),
            checked_ms: AtomicU64::new(plantd_shared::headers::now_ms()),
        }
    }

    /// The keys of key file `pem`: its ring file if there is one, else the
    /// key file (created, mode 0600, if missing) with a fresh next key —
    /// the ring file is written then, so a restart keeps both.
    ///
    /// # Errors
    /// 500 if a file cannot be read, parsed or written.
    pub fn open_file(pem: &Path) -> Result<Self, AppError> {
        let ring_file = ring_path(pem);
        let set = match std::fs::read_to_string(&ring_file) {
            Ok(text) => serde_json::from_str::<Ring>(&text)
                .map_err(|e| AppError::internal(format!("{}: {e}", ring_file.display())))?
                .load()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let set = KeySet::new(Self::load_or_create(pem)?, Some(generate()?), Vec::new())?;
                save_file(pem, &Ring::of(&set))?;
                set
            }
            Err(e) => return Err(AppError::internal(format!("{}: {e}", ring_file.display()))),
        };
        Ok(Self::with_home(set, KeyHome::File(pem.to_owned())))
    }

    /// The keys of a ring read from the function's secret, saved back
    /// there on rotation.
    ///
    /// # Errors
    /// 500 if a key in the ring is not usable.
    pub fn from_secret(
        ring: &Ring,
        client: aws_sdk_secretsmanager::Client,
        id: String,
    ) -> Result<Self, AppError> {
        Ok(Self::with_home(
            ring.load()?,
            KeyHome::Secret { client, id },
        ))
    }

    fn set(&self) -> &'static KeySet {
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs.
    pub fn signing(&self) -> &SigningKey {
        &self.set().signing
    }

    /// The JWKS document: signing, next and unexpired previous keys.
    pub fn jwks(&self) -> &JwkSet {
        let set = self.set();
        let now = now_secs();
        if set.previous.iter().all(|p| p.retire_at > now) {
            return &set.jwks;
        }
        // A previous key's last token has expired: publish without it.
        match KeySet::new(set.signing.clone(), set.next.clone(), set.previous.clone()) {
            Ok(fresh) => {
                let fresh = fresh.leak();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                &fresh.jwks
            }
            Err(_) => &set.jwks,
        }
    }

    /// The published keys and their roles.
    pub fn describe(&self) -> Vec<KeyView> {
        let set = self.set();
        let mut out = vec![KeyView {
            kid: set.signing.kid().to_owned(),
            role: "signing",
            retire_at: None,
        }];
        out.extend(set.next.iter().map(|k| KeyView {
            kid: k.kid().to_owned(),
            role: "next",
            retire_at: None,
        }));
        out.extend(set.previous.iter().map(|p| KeyView {
            kid: p.key.kid().to_owned(),
            role: "previous",
            retire_at: Some(p.retire_at),
        }));
        out
    }

    /// How many keys are published.
    pub fn len(&self) -> usize {
        let set = self.set();
        1 + usize::from(set.next.is_some()) + set.previous.len()
    }

    /// Never true: there is always a signing key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Rotates: the next key signs from now on, a new next key is
    /// published, the old signing key stays published for `access_ttl`
    /// plus [`RETIRE_MARGIN`]. Saved to the key home before it takes
    /// effect.
    ///
    /// # Errors
    /// 409 when the keys come from the environment, 500/503 when the ring
    /// cannot be saved (nothing changes then).
    pub async fn rotate(&self, access_ttl: Duration) -> Result<Rotated, AppError> {
        if matches!(self.home, KeyHome::Fixed) {
            return Err(AppError::conflict(
                "the signing key comes from PLANTD_IDENTITY_SIGNING_KEY: rotate it by changing that variable",
            ));
        }
        let _guard = self.changing.lock().await;
        // Another instance may have rotated since we last looked.
        self.reload_from_home().await?;
        let cur = self.set();
        let signing = match &cur.next {
            Some(k) => k.clone(),
            None => generate()?,
        };
        let next = generate()?;
        let retire_at = now_secs() + access_ttl.as_secs() + RETIRE_MARGIN.as_secs();
        let mut previous = cur.previous.clone();
        previous.push(Retiring {
            key: cur.signing.clone(),
            retire_at,
        });
        let set = KeySet::new(signing, Some(next), previous)?;
        self.save(&Ring::of(&set)).await?;
        let rotated = Rotated {
            signing_kid: set.signing.kid().to_owned(),
            next_kid: set
                .next
                .as_ref()
                .map(|k| k.kid().to_owned())
                .unwrap_or_default(),
            retired_kid: cur.signing.kid().to_owned(),
            retire_at,
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = set.leak();
        tracing::warn!(
            signing = %rotated.signing_kid,
            retired = %rotated.retired_kid,
            retire_at,
            "signing key rotated"
        );
        Ok(rotated)
    }

    /// Picks up a ring rotated by another instance (keys in Secrets
    /// Manager), at most every [`SECRET_RECHECK`]; does nothing for other
    /// homes. Errors are logged and the current keys kept.
    pub async fn refresh(&self) {
        if !matches!(self.home, KeyHome::Secret { .. }) {
            return;
        }
        let now = plantd_shared::headers::now_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        let due = u64::try_from(SECRET_RECHECK.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < due
            || self
                .checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let _guard = self.changing.lock().await;
        if let Err(e) = self.reload_from_home().await {
            tracing::warn!(error = %e, "cannot re-read the signing keys; keeping the current ones");
        }
    }

    /// Re-reads the ring from the home and adopts it if its signing key
    /// differs. Callers hold `changing`.
    async fn reload_from_home(&self) -> Result<(), AppError> {
        let ring = match &self.home {
            KeyHome::Fixed => return Ok(()),
            KeyHome::File(pem) => match std::fs::read_to_string(ring_path(pem)) {
                Ok(text) => serde_json::from_str::<Ring>(&text).map_err(AppError::internal)?,
                Err(e) => return Err(AppError::internal(e)),
            },
            KeyHome::Secret { client, id } => crate::secrets::fetch(client, id)
                .await
                .map_err(AppError::unavailable)?
                .ring(),
        };
        let set = ring.load()?;
        if set.signing.kid() != self.signing().kid() {
            tracing::info!(signing = %set.signing.kid(), "adopting signing keys rotated elsewhere");
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = set.leak();
        }
        Ok(())
    }

    async fn save(&self, ring: &Ring) -> Result<(), AppError> {
        match &self.home {
            KeyHome::Fixed => Err(AppError::conflict("keys are not rotatable here")),
            KeyHome::File(pem) => save_file(pem, ring),
            KeyHome::Secret { client, id } => crate::secrets::save_ring(client, id, ring)
                .await
                .map_err(AppError::unavailable),
        }
    }

    /// Reads a PEM key; the key id is derived from the public key so the
    /// same key always has the same `kid`.
    ///
    /// # Errors
    /// 500 if the PEM is not an Ed25519 or P-256 PKCS#8 key.
    pub fn from_pem(pem: &str) -> Result<SigningKey, AppError> {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            if let Ok(k) = SigningKey::from_pkcs8_pem("probe", alg, pem) {
                let kid = crate::model::sha256_hex(&k.public_jwk().to_string())[..16].to_owned();
                return SigningKey::from_pkcs8_pem(kid, alg, pem).map_err(AppError::internal);
            }
        }
        Err(AppError::internal(
            "signing key is neither Ed25519 nor P-256 PKCS#8 PEM",
        ))
    }

    /// Reads the key from `path`, or creates an Ed25519 key there (mode
    /// 0600) if the file does not exist.
    ///
    /// # Errors
    /// 500 if the file cannot be read or written.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, AppError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate()?;
                write_secret(path, key.private_pem())?;
                tracing::info!(path = %path.display(), "created a new signing key");
                Ok(key)
            }
            Err(e) => Err(AppError::internal(format!("{}: {e}", path.display()))),
        }
    }
}

/// A new Ed25519 key with its derived `kid`.
fn generate() -> Result<SigningKey, AppError> {
    let key = SigningKey::generate_ed25519("new").map_err(AppError::internal)?;
    Keys::from_pem(key.private_pem())
}

/// Saves `ring` beside key file `pem` (written whole and renamed into
/// place, mode 0600), then the signing key to `pem` itself so the key file
/// always holds the key that signs.
fn save_file(pem: &Path, ring: &Ring) -> Result<(), AppError> {
    let ring_file = ring_path(pem);
    let text = serde_json::to_string_pretty(ring).map_err(AppError::internal)?;
    let tmp = ring_file.with_extension("json.tmp");
    write_secret(&tmp, &text)?;
    std::fs::rename(&tmp, &ring_file)
        .map_err(|e| AppError::internal(format!("{}: {e}", ring_file.display())))?;
    let tmp = pem.with_extension("pem.tmp");
    write_secret(&tmp, &ring.signing_key_pem)?;
    std::fs::rename(&tmp, pem).map_err(|e| AppError::internal(format!("{}: {e}", pem.display())))
}

/// Writes `contents` to `path` with mode 0600 (created that way, never
/// world-readable even for an instant).
///
/// # Errors
/// 500 if the file cannot be written.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), AppError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(AppError::internal)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AppError::internal(format!("{}: {e}", path.display())))?;
    f.write_all(contents.as_bytes()).map_err(AppError::internal)
}
