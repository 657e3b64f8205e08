//! The signing keys. One key signs; every key (the signing one and any
//! kept for rotation) is published in the JWKS so tokens signed before a
//! rotation still verify until they expire.
//!
//! Sources, in order: `PLANTD_IDENTITY_SIGNING_KEY` (PKCS#8 PEM in the
//! environment; in Lambda it is read from Secrets Manager first),
//! `PLANTD_IDENTITY_SIGNING_KEY_FILE`, or — for `plantd up` and tests — a
//! fresh key written to a file of mode 0600 under the data directory.

use std::path::Path;

use plantd_shared::jwt::{Algorithm, JwkSet, SigningKey, jwks_of};

use crate::AppError;

/// The service's keys.
#[derive(Debug)]
pub struct Keys {
    /// Signs new tokens.
    signing: SigningKey,
    /// Older keys, still published for verification.
    previous: Vec<SigningKey>,
    /// The JWKS document of all of them.
    jwks: JwkSet,
}

impl Keys {
    /// Keys from one signing key and older ones kept for verification.
    ///
    /// # Errors
    /// 500 if a public key cannot be put in the JWKS.
    pub fn new(signing: SigningKey, previous: Vec<SigningKey>) -> Result<Self, AppError> {
        let jwks = jwks_of(std::iter::once(&signing).chain(previous.iter()))
            .map_err(AppError::internal)?;
        Ok(Self {
            signing,
            previous,
            jwks,
        })
    }

    /// The key that signs.
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// How many keys are published.
    pub fn len(&self) -> usize {
        1 + self.previous.len()
    }

    /// Never true: there is always a signing key.
    pub fn is_empty(&self) -> bool {
        false
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
                let key = SigningKey::generate_ed25519("new").map_err(AppError::internal)?;
                write_secret(path, key.private_pem())?;
                tracing::info!(path = %path.display(), "created a new signing key");
                Self::from_pem(key.private_pem())
            }
            Err(e) => Err(AppError::internal(format!("{}: {e}", path.display()))),
        }
    }
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
