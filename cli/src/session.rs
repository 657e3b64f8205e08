//! Talking to a plantd deployment as a person or a script: profiles, login,
//! tokens refreshed automatically, and [`Session::client`] — the
//! `plantd-client` every API command goes through ([`api_error`] turns its
//! typed errors into exit codes and advice).
//!
//! * Profiles live in `<config dir>/config.toml` (`~/.config/plantd`, or
//!   `$PLANTD_CONFIG_DIR`, or `$XDG_CONFIG_HOME/plantd`):
//!   `current = "default"` and `[profiles.<name>] url = "…" email = "…"`.
//! * Tokens live in `<config dir>/tokens/<profile>.json`, mode 0600.
//! * Exit codes mean something: see [`ExitKind`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use plantd_client::Secret;
use plantd_client::credentials::{self, IssuedTokens};
use plantd_client::identity::types::LogoutRequest;
use serde::{Deserialize, Serialize};

/// What went wrong, as a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Anything else (1).
    Failure = 1,
    /// The request itself is wrong: a bad filter, topic or argument (2,
    /// as for a command-line usage error).
    Usage = 2,
    /// Not logged in, or the credentials were refused (3).
    Unauthorized = 3,
    /// Logged in but not allowed (4).
    Forbidden = 4,
    /// No such thing (5).
    NotFound = 5,
    /// A concurrent change won, or it exists already (6).
    Conflict = 6,
    /// The service, a device or the site is unavailable or timed out (7).
    Unavailable = 7,
}

/// An error with the exit code it should produce.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The exit code.
    pub kind: ExitKind,
    /// What to tell the user, including what to do next.
    pub message: String,
}

/// An error that exits with `kind` and tells the user `message`.
pub fn fail(kind: ExitKind, message: impl Into<String>) -> anyhow::Error {
    CliError {
        kind,
        message: message.into(),
    }
    .into()
}

/// One named deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Base URL of the functions (identity and proxy).
    pub url: String,
    /// The email last used to log in.
    #[serde(default)]
    pub email: String,
}

/// `config.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The profile used when `--profile` is not given.
    #[serde(default)]
    pub current: String,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Stored tokens of a profile (`Debug` shows neither token).
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// Access JWT.
    pub access_token: String,
    /// Refresh token.
    pub refresh_token: Option<String>,
    /// When the access token expires (seconds since the epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"…")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl From<IssuedTokens> for Tokens {
    fn from(t: IssuedTokens) -> Self {
        Tokens {
            access_token: t.access_token.expose().to_owned(),
            refresh_token: t.refresh_token.map(|r| r.expose().to_owned()),
            expires_at: now() + t.expires_in,
        }
    }
}

/// Time limit of a login or refresh.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The configuration directory.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PLANTD_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(x).join("plantd");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("plantd")
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

impl CliConfig {
    /// Reads the configuration (empty when there is none yet).
    ///
    /// # Errors
    /// When the file exists but does not parse.
    pub fn load() -> Result<Self> {
        let path = config_dir().join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t)
                .with_context(|| format!("{} is not valid: fix or delete it", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the configuration.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn save(&self) -> Result<()> {
        write_private(
            &config_dir().join("config.toml"),
            &toml::to_string_pretty(self)?,
        )
    }

    /// The profile name to use.
    pub fn profile_name(&self, requested: Option<&str>) -> String {
        requested
            .map(str::to_owned)
            .or_else(|| (!self.current.is_empty()).then(|| self.current.clone()))
            .unwrap_or_else(|| "default".into())
    }
}

/// An access token with this little left (seconds) counts as expired.
const EXPIRY_MARGIN_SECS: u64 = 5;

/// Takes the exclusive lock of a profile's tokens (`<profile>.lock` beside
/// them), waiting while another `plantd` holds it; released on drop.
async fn lock_tokens(tokens: &Path) -> Result<std::fs::File> {
    let path = tokens.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .context("the token lock's task failed")?;
    locked.with_context(|| format!("cannot lock {}", path.display()))
}

fn tokens_path(profile: &str) -> PathBuf {
    config_dir().join("tokens").join(format!("{profile}.json"))
}

fn now() -> u64 {
    plantd_shared::jwt::now_secs()
}

/// An authenticated connection to a deployment.
pub struct Session {
    /// Profile name.
    profile: String,
    /// Base URL.
    url: String,
    /// HTTP client.
    http: reqwest::Client,
    /// Current tokens.
    tokens: Tokens,
}

fn http_client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(70))
        .build()
        .context("cannot build an HTTP client")
}

/// Maps an HTTP error status and the server's message to an exit code and
/// a message saying what to do (shared by the REST calls and the
/// WebSocket handshake).
pub fn error_for_status(status: u16, msg: String) -> anyhow::Error {
    match status {
        401 => fail(
            ExitKind::Unauthorized,
            format!("not authorised ({msg}); run `plantd login`"),
        ),
        403 => fail(
            ExitKind::Forbidden,
            format!("forbidden: {msg}; ask an administrator for the permission"),
        ),
        404 => fail(ExitKind::NotFound, format!("not found: {msg}")),
        409 => fail(
            ExitKind::Conflict,
            format!("conflict: {msg}; read the current value and try again"),
        ),
        429 => fail(ExitKind::Unauthorized, msg),
        503 | 504 => fail(
            ExitKind::Unavailable,
            format!("unavailable ({status}): {msg}"),
        ),
        _ => fail(ExitKind::Failure, format!("HTTP {status}: {msg}")),
    }
}

/// A `plantd-client` error as an exit code and what to do: the API's
/// `{error, message}` by its status (as [`error_for_status`]), a refused
/// token as 3, no answer as 7.
pub fn api_error(e: plantd_client::Error) -> anyhow::Error {
    use plantd_client::Error;
    match e {
        Error::Api {
            status, message, ..
        } => error_for_status(status, message),
        Error::Refused(message) => error_for_status(401, message),
        Error::Timeout(_) | Error::Transport(_) => fail(
            ExitKind::Unavailable,
            format!("{e}; is `plantd up` running?"),
        ),
        Error::Invalid(_) => fail(ExitKind::Usage, e.to_string()),
        other => fail(ExitKind::Failure, other.to_string()),
    }
}

impl Session {
    /// Logs in and stores the profile and its tokens.
    ///
    /// # Errors
    /// Exit code 3 for refused credentials, 7 when the service is
    /// unreachable.
    pub async fn login(
        profile: Option<&str>,
        url: &str,
        email: &str,
        password: &str,
        sites: &[String],
    ) -> Result<Self> {
        let mut config = CliConfig::load()?;
        let name = config.profile_name(profile);
        let http = http_client()?;
        let url = url.trim_end_matches('/').to_owned();
        let issued = credentials::login(
            &http,
            &url,
            email,
            &Secret::new(password),
            sites,
            EXCHANGE_TIMEOUT,
        )
        .await
        .map_err(|e| match e {
            plantd_client::Error::Transport(why) => fail(
                ExitKind::Unavailable,
                format!("cannot reach {url}: {why}; is `plantd up` running?"),
            ),
            other => api_error(other),
        })?;
        let tokens = Tokens::from(issued);
        write_private(&tokens_path(&name), &serde_json::to_string(&tokens)?)?;
        config.profiles.insert(
            name.clone(),
            Profile {
                url: url.clone(),
                email: email.to_owned(),
            },
        );
        config.current.clone_from(&name);
        config.save()?;
        Ok(Self {
            profile: name,
            url,
            http,
            tokens,
        })
    }

    /// Opens the stored session of a profile, refreshing its access token
    /// when it is about to expire.
    ///
    /// # Errors
    /// Exit code 3 when not logged in or the refresh is refused.
    pub async fn open(profile: Option<&str>) -> Result<Self> {
        let config = CliConfig::load()?;
        let name = config.profile_name(profile);
        let p = config.profiles.get(&name).ok_or_else(|| {
            fail(
                ExitKind::Unauthorized,
                format!("no profile {name:?}; run `plantd login --url URL --email EMAIL`"),
            )
        })?;
        let text = std::fs::read_to_string(tokens_path(&name)).map_err(|_| {
            fail(
                ExitKind::Unauthorized,
                format!("not logged in to {name:?}; run `plantd login`"),
            )
        })?;
        let tokens: Tokens =
            serde_json::from_str(&text).context("stored tokens are damaged; run `plantd login`")?;
        let mut s = Self {
            profile: name,
            url: p.url.clone(),
            http: http_client()?,
            tokens,
        };
        if s.tokens.expires_at <= now() + 30 {
            s.refresh().await?;
        }
        Ok(s)
    }

    /// Exchanges the refresh token for a new access token now and stores
    /// both (long-running commands such as `plantd sub` call it when the
    /// server closes their socket because the token expired).
    ///
    /// # Errors
    /// Exit code 3 when there is no refresh token or it is refused, 7 when
    /// the service is unreachable.
    pub async fn refresh(&mut self) -> Result<()> {
        let path = tokens_path(&self.profile);
        // One refresh at a time across every `plantd` of this profile: a
        // refresh token works once, and identity revokes the whole login
        // when one is used twice.
        let _lock = lock_tokens(&path).await?;
        // Another process (a second `plantd sub`, any command run meanwhile)
        // may have rotated them since this one read them: use its tokens,
        // and its refresh token if they too need renewing.
        if let Some(stored) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Tokens>(&text).ok())
            && stored.refresh_token != self.tokens.refresh_token
        {
            self.tokens = stored;
            if !self.token_expired() {
                return Ok(());
            }
        }
        let rt = self.tokens.refresh_token.clone().ok_or_else(|| {
            fail(
                ExitKind::Unauthorized,
                "session expired; run `plantd login`",
            )
        })?;
        let issued =
            credentials::refresh(&self.http, &self.url, &Secret::new(rt), EXCHANGE_TIMEOUT)
                .await
                .map_err(|e| match e {
                    plantd_client::Error::Api { .. } | plantd_client::Error::Refused(_) => fail(
                        ExitKind::Unauthorized,
                        "session expired or revoked; run `plantd login`",
                    ),
                    plantd_client::Error::Transport(why) => fail(
                        ExitKind::Unavailable,
                        format!("cannot reach {}: {why}", self.url),
                    ),
                    other => api_error(other),
                })?;
        self.tokens = Tokens::from(issued);
        write_private(&path, &serde_json::to_string(&self.tokens)?)
    }

    /// The deployment's base URL (`http://…` or `https://…`, no trailing
    /// slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The deployment as a `plantd-client` with the session's current
    /// token (refreshed by [`Session::open`] when it was about to expire).
    ///
    /// # Errors
    /// Exit code 2 when the profile's URL cannot be used.
    pub fn client(&self) -> Result<plantd_client::Plantd> {
        plantd_client::Plantd::with_token(&self.url, self.tokens.access_token.as_str())
            .map_err(api_error)
    }

    /// Whether the access token has expired (or will within a few
    /// seconds): a live connection the server ended then is renewed with
    /// [`Session::refresh`], not reported as a revocation.
    pub fn token_expired(&self) -> bool {
        self.tokens.expires_at <= now() + EXPIRY_MARGIN_SECS
    }

    /// The access token (for MQTT passwords and scripts).
    pub fn access_token(&self) -> &str {
        &self.tokens.access_token
    }

    /// Logs out: revokes the tokens and forgets them.
    ///
    /// # Errors
    /// When the stored tokens cannot be removed.
    pub async fn logout(self) -> Result<()> {
        // Best effort: the tokens are forgotten here whatever the server says.
        if let Ok(plantd) = self.client() {
            let body = LogoutRequest {
                refresh_token: self.tokens.refresh_token.clone(),
            };
            let _ = plantd.rest().post_auth_logout(&body).await;
        }
        let path = tokens_path(&self.profile);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &anyhow::Error) -> Option<ExitKind> {
        e.downcast_ref::<CliError>().map(|c| c.kind)
    }

    #[test]
    fn stored_tokens_never_show_in_debug() {
        let t = Tokens {
            access_token: "eyJ.access-secret".into(),
            refresh_token: Some("refresh-secret".into()),
            expires_at: 7,
        };
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("access-secret") && !shown.contains("refresh-secret"),
            "{shown}"
        );
    }

    #[test]
    fn sdk_errors_keep_the_exit_codes_and_the_servers_message() {
        let api = |status: u16, code: &str| plantd_client::Error::Api {
            status,
            code: code.into(),
            message: "the server says why".into(),
        };
        for (status, code, want) in [
            (401, "unauthorized", ExitKind::Unauthorized),
            (403, "forbidden", ExitKind::Forbidden),
            (404, "not_found", ExitKind::NotFound),
            (409, "conflict", ExitKind::Conflict),
            (503, "unavailable", ExitKind::Unavailable),
            (400, "bad_request", ExitKind::Failure),
        ] {
            let e = api_error(api(status, code));
            assert_eq!(kind(&e), Some(want), "{status}");
            assert!(e.to_string().contains("the server says why"), "{e}");
        }
        let refused = api_error(plantd_client::Error::Refused("revoked".into()));
        assert_eq!(kind(&refused), Some(ExitKind::Unauthorized));
        let down = api_error(plantd_client::Error::Transport("refused".into()));
        assert_eq!(kind(&down), Some(ExitKind::Unavailable));
    }
}
