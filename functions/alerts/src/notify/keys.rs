//! The channel key: webhook signing secrets are sealed with it before they
//! are written to `plantd_alert_channels`, so reading the bucket (a NATS
//! operator, a backup, `nats kv get`) does not give them away.
//!
//! **Envelope.** A stored webhook's `secret` is an [`Envelope`]
//! `{"v": 1, "kid", "nonce", "ct"}`: AES-256-GCM (`ring`) under the key
//! `kid` names, a random 96-bit nonce per write, and the record's KV key
//! `<org>.<name>` as associated data — a ciphertext copied into another
//! channel, or another organisation's, does not open. A plain string
//! there is a record written before sealing: read as it is and sealed the
//! next time it is written ([`super::Channels::reseal`] does every one).
//!
//! **Key home** ([`KeySource::load`]), never the KV it protects:
//! * AWS: field `channel_key` of the alerts secret in Secrets Manager,
//!   named by `PLANTD_ALERTS_SECRET_ID` — the notifier reads it, and so
//!   does the proxy, which writes channels. Missing: a start-up error.
//! * Locally: a key file (`PLANTD_CHANNEL_KEY_FILE`; `plantd up` keeps
//!   `<data dir>/alerts/channel-keys.json`), created with mode 0600 on
//!   first start and kept. Refused under Lambda (its disk is not kept).
//!
//! Both hold the same document ([`KeyDoc`]): `channel_key` seals;
//! `previous_channel_keys` still open what they sealed, so a key can be
//! replaced without losing channels (docs/security.md, "Notification
//! channels"). A key is a random string of at least [`MIN_KEY_CHARS`]
//! characters (`openssl rand -base64 32`, or what Secrets Manager
//! generates); the AES key is its SHA-256 under a plantd label, so any
//! such string works and none is padded or truncated.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;
/// The shortest channel key accepted, in characters (of a random string:
/// 32 base64 or alphanumeric characters carry well over 128 bits).
pub const MIN_KEY_CHARS: usize = 32;
/// What a key's text is hashed under to make the AES key.
const KDF_LABEL: &[u8] = b"plantd alert channel key v1\0";
/// The variable naming the alerts secret in Secrets Manager.
pub const SECRET_ID_ENV: &str = "PLANTD_ALERTS_SECRET_ID";
/// The variable naming the local key file.
pub const KEY_FILE_ENV: &str = "PLANTD_CHANNEL_KEY_FILE";
/// What the associated data starts with (then `<org>.<name>`).
const AAD_PREFIX: &str = "plantd_alert_channels/";

/// The envelope format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Version {
    /// AES-256-GCM, 96-bit random nonce, AAD `plantd_alert_channels/<org>.<name>`.
    V1,
}

impl From<Version> for u8 {
    fn from(v: Version) -> Self {
        match v {
            Version::V1 => 1,
        }
    }
}

impl TryFrom<u8> for Version {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Self::V1),
            other => Err(format!(
                "envelope version {other} is not known to this plantd"
            )),
        }
    }
}

/// A sealed webhook secret as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The format.
    pub v: Version,
    /// The id of the key that sealed it ([`ChannelKeys::kid`]).
    pub kid: String,
    /// The nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ct: String,
}

/// Why a sealed secret did not open. Never carries the secret.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SealError {
    /// No key with that id is configured.
    #[error(
        "sealed with channel key {kid}, which is neither channel_key nor one of previous_channel_keys"
    )]
    UnknownKey {
        /// The envelope's key id.
        kid: String,
    },
    /// The key is known but the ciphertext does not authenticate: altered,
    /// or copied from another channel.
    #[error(
        "does not authenticate under channel key {kid}: altered, or copied from another channel"
    )]
    Rejected {
        /// The envelope's key id.
        kid: String,
    },
    /// Not an envelope this plantd reads.
    #[error("not a sealed secret: {0}")]
    Malformed(String),
}

/// Why the channel key could not be loaded. Messages name where it was
/// looked for and what to fix, never the key.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Neither a secret nor a key file is configured.
    #[error(
        "no channel key: set {SECRET_ID_ENV} (AWS: the alerts secret with channel_key) or {KEY_FILE_ENV} (a local file, created on first start)"
    )]
    NoHome,
    /// A key file under Lambda, whose disk is not kept.
    #[error(
        "{KEY_FILE_ENV} under Lambda: a file there is lost with the instance, and with it every channel's secret; use {SECRET_ID_ENV}"
    )]
    FileOnLambda,
    /// The secret has no `channel_key`.
    #[error(
        "secret `{id}` ({SECRET_ID_ENV}) has no channel_key: add a random string of at least {MIN_KEY_CHARS} characters (`openssl rand -base64 32`; docs/deploy.md)"
    )]
    MissingInSecret {
        /// The secret id.
        id: String,
    },
    /// A key is too short to be a random key.
    #[error(
        "{place}: {field} is shorter than {MIN_KEY_CHARS} characters: use a random string (`openssl rand -base64 32`)"
    )]
    BadKey {
        /// The file or secret.
        place: String,
        /// `channel_key` or `previous_channel_keys[i]`.
        field: String,
    },
    /// The key file cannot be read, written or parsed.
    #[error("channel key file {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Secrets Manager refused or the document is not the alerts secret.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Secret(#[from] plantd_shared::secrets::SecretsError),
    /// A secret id was given to a build without AWS.
    #[cfg(not(feature = "aws"))]
    #[error("{SECRET_ID_ENV} is set but this plantd-alerts was built without feature aws")]
    NoAws,
}

/// The document holding the channel keys: the local key file, and the
/// fields of the alerts secret in Secrets Manager.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct KeyDoc {
    /// The key that seals: a random string of at least [`MIN_KEY_CHARS`]
    /// characters.
    #[serde(default)]
    pub channel_key: Option<String>,
    /// Keys that only open (what they sealed before a key change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_channel_keys: Vec<String>,
}

impl std::fmt::Debug for KeyDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDoc")
            .field(
                "channel_key",
                &self.channel_key.as_ref().map(|_| "<redacted>"),
            )
            .field("previous_channel_keys", &self.previous_channel_keys.len())
            .finish()
    }
}

#[cfg(feature = "aws")]
impl plantd_shared::secrets::FunctionSecret for KeyDoc {
    const ID_ENV: &'static str = SECRET_ID_ENV;
    const SHAPE: &'static str = "{\"channel_key\", \"previous_channel_keys\"?}";
}

/// One key: its id and the AEAD key.
struct Key {
    kid: String,
    aead: LessSafeKey,
}

impl Key {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(bytes);
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        // 32 bytes is AES-256's key length: `new` cannot refuse it.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        Self {
            kid,
            aead: LessSafeKey::new(unbound),
        }
    }

    fn parse(text: &str, place: &str, field: String) -> Result<Self, KeyError> {
        use sha2::Digest as _;
        let text = text.trim();
        if text.chars().count() < MIN_KEY_CHARS {
            return Err(KeyError::BadKey {
                place: place.to_owned(),
                field,
            });
        }
        let mut hash = sha2::Sha256::new();
        hash.update(KDF_LABEL);
        hash.update(text.as_bytes());
        Ok(Self::new(&hash.finalize().into()))
    }
}

/// The channel keys: one seals, all open. Cheap to share behind an `Arc`.
pub struct ChannelKeys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelKeys")
            .field("kid", &self.current.kid)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A new `channel_key`: 32 random bytes, base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_LEN];
    fill_random(&mut bytes);
    B64.encode(bytes)
}

fn fill_random(buf: &mut [u8]) {
    // The system's random source failing is not something to carry on
    // from: a predictable nonce or key would be worse than stopping.
    if SystemRandom::new().fill(buf).is_err() {
        panic!("the system random number generator failed");
    }
}

/// The associated data binding a sealed secret to channel `<org>.<name>`.
fn aad(channel_key: &str) -> String {
    format!("{AAD_PREFIX}{channel_key}")
}

impl ChannelKeys {
    /// A fresh random key (tests; a first start writes one with
    /// [`KeySource::load`]).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes);
        Self {
            current: Key::new(&bytes),
            previous: Vec::new(),
        }
    }

    /// The keys of `doc`, read from `place` (for messages).
    ///
    /// # Errors
    /// [`KeyError::BadKey`] naming a key too short; [`KeyError::NoHome`] when
    /// `channel_key` is missing (callers say where).
    pub fn from_doc(doc: &KeyDoc, place: &str) -> Result<Self, KeyError> {
        let current = doc.channel_key.as_deref().ok_or(KeyError::NoHome)?;
        let current = Key::parse(current, place, "channel_key".to_owned())?;
        let previous = doc
            .previous_channel_keys
            .iter()
            .enumerate()
            .map(|(i, k)| Key::parse(k, place, format!("previous_channel_keys[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self { current, previous })
    }

    /// The id of the key that seals (16 hex digits of its SHA-256; names
    /// the key in envelopes and logs without revealing it).
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// `secret` sealed for channel `channel_key` (`<org>.<name>`) with the
    /// current key and a fresh nonce.
    pub fn seal(&self, channel_key: &str, secret: &str) -> Envelope {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut buf = secret.as_bytes().to_vec();
        let aad = aad(channel_key);
        // Sealing fails only past GCM's message size limit (64 GiB).
        if self
            .current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            unreachable!("a webhook secret is far below AES-GCM's message limit");
        }
        Envelope {
            v: Version::V1,
            kid: self.current.kid.clone(),
            nonce: B64.encode(nonce),
            ct: B64.encode(buf),
        }
    }

    /// The secret `envelope` holds, if it was sealed for `channel_key`
    /// (`<org>.<name>`) under one of these keys.
    ///
    /// # Errors
    /// [`SealError`]: unknown key, not authentic, or malformed.
    pub fn open(&self, channel_key: &str, envelope: &Envelope) -> Result<String, SealError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.kid == envelope.kid)
            .ok_or_else(|| SealError::UnknownKey {
                kid: envelope.kid.clone(),
            })?;
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&envelope.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| SealError::Malformed(format!("nonce is not {NONCE_LEN} bytes")))?;
        let mut buf = B64
            .decode(&envelope.ct)
            .map_err(|_| SealError::Malformed("ct is not base64".to_owned()))?;
        let aad = aad(channel_key);
        let clear = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Rejected {
                kid: envelope.kid.clone(),
            })?;
        String::from_utf8(clear.to_vec())
            .map_err(|_| SealError::Malformed("the secret is not UTF-8".to_owned()))
    }

    /// Whether `envelope` is sealed with the current key (else a write
    /// re-seals it).
    pub fn is_current(&self, envelope: &Envelope) -> bool {
        envelope.kid == self.current.kid
    }
}

/// Where the channel keys are read from: one per process, from its
/// configuration (`PLANTD_ALERTS_SECRET_ID`, `PLANTD_CHANNEL_KEY_FILE`).
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// The alerts secret in Secrets Manager (AWS). Wins over the file.
    pub secret_id: Option<String>,
    /// The local key file.
    pub key_file: Option<PathBuf>,
    /// Running under Lambda (`AWS_LAMBDA_RUNTIME_API`): a key file is
    /// refused.
    pub on_lambda: bool,
}

impl KeySource {
    /// The channel keys (module docs): the secret's when a secret id is
    /// set, else the key file's (created with a new key, mode 0600, when
    /// missing).
    ///
    /// # Errors
    /// [`KeyError`]: nothing configured, a key file under Lambda, a secret
    /// without `channel_key`, a key too short, a file
    /// or Secrets Manager failing.
    pub async fn load(&self) -> Result<ChannelKeys, KeyError> {
        if let Some(id) = self.secret_id.as_deref().filter(|s| !s.is_empty()) {
            return from_secret(id).await;
        }
        match &self.key_file {
            Some(_) if self.on_lambda => Err(KeyError::FileOnLambda),
            Some(path) => open_file(path),
            None => Err(KeyError::NoHome),
        }
    }
}

#[cfg(feature = "aws")]
async fn from_secret(id: &str) -> Result<ChannelKeys, KeyError> {
    // One signed request, not the SDK's Secrets Manager client: the
    // bootstrap stays under its size budget (decision 0065).
    let http = crate::notify::webhook::client().map_err(|e| {
        KeyError::Secret(plantd_shared::secrets::SecretsError::Unavailable {
            id: id.to_owned(),
            env: <KeyDoc as plantd_shared::secrets::FunctionSecret>::ID_ENV,
            detail: format!("no HTTPS client: {e}"),
        })
    })?;
    let config = plantd_shared::aws::sdk_config().await;
    let text = plantd_shared::secrets::read(
        &http,
        &config,
        id,
        <KeyDoc as plantd_shared::secrets::FunctionSecret>::ID_ENV,
    )
    .await?;
    let doc: KeyDoc = plantd_shared::secrets::parse(id, &text)?;
    let keys = ChannelKeys::from_doc(&doc, &format!("secret `{id}`")).map_err(|e| match e {
        KeyError::NoHome => KeyError::MissingInSecret { id: id.to_owned() },
        e => e,
    })?;
    tracing::info!(secret = %id, kid = %keys.kid(), "channel key from Secrets Manager");
    Ok(keys)
}

#[cfg(not(feature = "aws"))]
async fn from_secret(_id: &str) -> Result<ChannelKeys, KeyError> {
    Err(KeyError::NoAws)
}

/// The keys of key file `path`, written with a new key (mode 0600) when
/// it does not exist.
///
/// # Errors
/// [`KeyError::File`] or [`KeyError::BadKey`].
pub fn open_file(path: &Path) -> Result<ChannelKeys, KeyError> {
    let file_error = |detail: String| KeyError::File {
        path: path.to_owned(),
        detail,
    };
    let fresh = KeyDoc {
        channel_key: Some(generate_key()),
        previous_channel_keys: Vec::new(),
    };
    let text = serde_json::to_string_pretty(&fresh).map_err(|e| file_error(e.to_string()))?;
    let doc = match plantd_shared::private_file::create_once(path, &text)
        .map_err(|e| file_error(e.to_string()))?
    {
        plantd_shared::private_file::Created::New => {
            tracing::info!(path = %path.display(), "created a new channel key");
            fresh
        }
        plantd_shared::private_file::Created::Existing(text) => serde_json::from_str(&text)
            .map_err(|e| {
                file_error(format!(
                    "not {{\"channel_key\", \"previous_channel_keys\"?}}: {e}"
                ))
            })?,
    };
    let place = path.display().to_string();
    ChannelKeys::from_doc(&doc, &place).map_err(|e| match e {
        KeyError::NoHome => file_error("has no channel_key".to_owned()),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_channel_and_key() {
        let keys = ChannelKeys::generate();
        let sealed = keys.seal("acme.ops", "a secret of some length");
        assert_eq!(
            keys.open("acme.ops", &sealed).as_deref(),
            Ok("a secret of some length")
        );
        assert_ne!(
            keys.seal("acme.ops", "x").nonce,
            keys.seal("acme.ops", "x").nonce
        );
        assert_eq!(
            keys.open("globex.ops", &sealed),
            Err(SealError::Rejected {
                kid: keys.kid().to_owned()
            })
        );
        let other = ChannelKeys::generate();
        assert!(matches!(
            other.open("acme.ops", &sealed),
            Err(SealError::UnknownKey { .. })
        ));
        let json = serde_json::to_value(&sealed).expect("json");
        assert_eq!(json["v"], 1);
        assert!(
            serde_json::from_value::<Envelope>(
                serde_json::json!({"v": 2, "kid": "k", "nonce": "", "ct": ""})
            )
            .is_err()
        );
    }

    #[test]
    fn previous_keys_still_open() {
        let old = generate_key();
        let old_keys = ChannelKeys::from_doc(
            &KeyDoc {
                channel_key: Some(old.clone()),
                previous_channel_keys: vec![],
            },
            "test",
        )
        .expect("keys");
        let sealed = old_keys.seal("acme.ops", "s");
        let new_keys = ChannelKeys::from_doc(
            &KeyDoc {
                channel_key: Some(generate_key()),
                previous_channel_keys: vec![old],
            },
            "test",
        )
        .expect("keys");
        assert_eq!(new_keys.open("acme.ops", &sealed).as_deref(), Ok("s"));
        assert!(!new_keys.is_current(&sealed));
        let err = ChannelKeys::from_doc(
            &KeyDoc {
                channel_key: Some("c2hvcnQ=".to_owned()),
                previous_channel_keys: vec![],
            },
            "file f",
        )
        .expect_err("short");
        assert!(
            err.to_string()
                .starts_with("file f: channel_key is shorter than 32 characters"),
            "{err}"
        );
    }

    #[test]
    fn the_key_file_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("alerts").join("channel-keys.json");
        let first = open_file(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(open_file(&path).expect("kept").kid(), first.kid());
        let source = KeySource {
            secret_id: None,
            key_file: Some(path),
            on_lambda: true,
        };
        let err = futures::executor::block_on(source.load()).expect_err("refused");
        assert!(matches!(err, KeyError::FileOnLambda), "{err}");
        let err = futures::executor::block_on(KeySource::default().load()).expect_err("none");
        assert!(err.to_string().contains(SECRET_ID_ENV), "{err}");
    }
}
