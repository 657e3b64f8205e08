//! Configuration loading: defaults, then a TOML file, then `PLANTD_*`
//! environment variables, then command-line overrides.
//!
//! Every binary describes its configuration as one struct that is
//! `Default + Serialize + DeserializeOwned` and `#[serde(deny_unknown_fields)]`,
//! and calls [`load`]. A bad value gives one line naming the key and the
//! file, e.g.
//!
//! ```text
//! config error: key `mqtt.max_packet_size` in /etc/plantd/edge.toml: invalid type: found string "big", expected u32
//! ```
//!
//! Environment variables: `PLANTD_<KEY>` sets top-level key `<key>`, and
//! `__` descends into tables (`PLANTD_MQTT__MAX_PACKET_SIZE`). Only
//! variables whose first segment names a key of the struct are read, so
//! process-wide settings like `PLANTD_LOG_FORMAT` never trip the unknown-key
//! check. A variable set to the empty string counts as unset (deployment
//! templates write `""` for an optional parameter left blank).
//!
//! Values are parsed (`PLANTD_LIMITS__MAX_INFLIGHT=64` is a number,
//! `PLANTD_DENY_SUBSCRIBE=[a/#,b]` a list). Keys holding free text that
//! must arrive exactly as typed — a password of digits, a PEM — are named
//! in [`load_verbatim`] and read unparsed and untrimmed.
//!
//! One precedence rule for every key: a later source replaces the whole
//! value of an earlier one (lists too), and tables merge key by key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The environment prefix every plantd binary reads.
pub const ENV_PREFIX: &str = "PLANTD_";

/// Why configuration could not be loaded. `Display` is the one line to show
/// the operator.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file named on the command line could not be read.
    #[error("config error: cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// A value is missing, unknown, of the wrong type or out of range.
    #[error("config error: {0}")]
    Invalid(String),
}

/// Loads `T` from its defaults, the optional TOML `file`, `PLANTD_*`
/// environment variables and finally `overrides` (typically the command
/// line: a struct whose `None` fields are skipped when serialised).
///
/// # Errors
/// [`ConfigError::Unreadable`] when `file` is given but cannot be read, and
/// [`ConfigError::Invalid`] naming the key and its source on any bad value.
pub fn load<T, O>(file: Option<&Path>, overrides: &O) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
    O: Serialize,
{
    load_from_env(file, overrides, ENV_PREFIX)
}

/// [`load`], reading the top-level keys named in `verbatim` from the
/// environment as plain text: not parsed (`PLANTD_X=007` stays `"007"`,
/// not the number 7) and not trimmed. For passwords, keys and PEMs.
///
/// # Errors
/// As [`load`].
pub fn load_verbatim<T, O>(
    file: Option<&Path>,
    overrides: &O,
    verbatim: &[&str],
) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
    O: Serialize,
{
    load_inner(file, overrides, ENV_PREFIX, verbatim)
}

/// [`load`] with a different environment prefix (used by tests so they do
/// not depend on the process environment).
///
/// # Errors
/// As [`load`].
pub fn load_from_env<T, O>(
    file: Option<&Path>,
    overrides: &O,
    prefix: &str,
) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
    O: Serialize,
{
    load_inner(file, overrides, prefix, &[])
}

/// Environment variables named `<prefix><KEY>` for `verbatim` keys, as
/// unparsed strings (see [`load_verbatim`]).
struct VerbatimEnv {
    /// The variables' prefix.
    prefix: String,
    /// The top-level keys read this way (lower case).
    keys: Vec<String>,
}

impl Provider for VerbatimEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for key in &self.keys {
            let name = format!("{}{}", self.prefix, key.to_ascii_uppercase());
            if let Some(value) = std::env::var_os(&name)
                && !value.is_empty()
            {
                let value = value
                    .into_string()
                    .map_err(|_| figment::Error::from(format!("{name} is not valid UTF-8")))?;
                dict.insert(key.clone(), Value::from(value));
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Whether environment variable `<prefix><key>` (`key` in figment's
/// dotted form) is set to something other than the empty string.
fn set_and_not_empty(prefix: &str, key: &str) -> bool {
    let name = format!("{prefix}{}", key.replace('.', "__"));
    std::env::vars_os()
        .any(|(k, v)| !v.is_empty() && k.to_str().is_some_and(|k| k.eq_ignore_ascii_case(&name)))
}

fn load_inner<T, O>(
    file: Option<&Path>,
    overrides: &O,
    prefix: &str,
    verbatim: &[&str],
) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
    O: Serialize,
{
    let defaults = Figment::from(Serialized::defaults(T::default()));
    let known: BTreeSet<String> = defaults
        .data()
        .ok()
        .and_then(|d| d.into_values().next())
        .map(|dict| dict.into_keys().collect())
        .unwrap_or_default();
    let mut fig = defaults;
    if let Some(path) = file {
        // figment silently skips a missing file; an operator who named one
        // must hear that it is not there.
        std::fs::read(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        fig = fig.merge(Toml::file_exact(path));
    }
    let verbatim: Vec<String> = verbatim.iter().map(|k| k.to_ascii_lowercase()).collect();
    let parsed = verbatim.clone();
    let owned_prefix = prefix.to_owned();
    let env = Env::prefixed(prefix).split("__").filter(move |k| {
        let first = k.as_str().split('.').next().unwrap_or_default();
        let first = first.to_ascii_lowercase();
        known.contains(&first)
            && !parsed.contains(&first)
            && set_and_not_empty(&owned_prefix, k.as_str())
    });
    fig = fig
        .merge(env)
        .merge(VerbatimEnv {
            prefix: prefix.to_owned(),
            keys: verbatim,
        })
        .merge(Serialized::defaults(overrides));
    fig.extract::<T>()
        .map_err(|e| ConfigError::Invalid(describe(e)))
}

fn describe(err: figment::Error) -> String {
    let count = err.count();
    let first = err.into_iter().next();
    let Some(e) = first else {
        return "unknown configuration error".into();
    };
    let mut key = e.path.join(".");
    if let figment::error::Kind::UnknownField(field, _) = &e.kind
        && !key.ends_with(field.as_str())
    {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
    }
    let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(Source::File(p)) => format!(" in {}", p.display()),
        Some(Source::Custom(s)) => format!(" in {s}"),
        _ => match e.metadata.as_ref() {
            Some(m) if m.name.contains("environment") => " in the environment (PLANTD_*)".into(),
            Some(m) => format!(" in {}", m.name),
            None => String::new(),
        },
    };
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`")
    };
    let more = if count > 1 {
        format!(" (and {} more)", count - 1)
    } else {
        String::new()
    };
    format!("{key}{source}: {}{more}", e.kind)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Mqtt {
        max_packet_size: u32,
        listen: String,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        site: String,
        mqtt: Mqtt,
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        site: Option<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn file_then_flags() {
        let f = file("site = \"a\"\n[mqtt]\nmax_packet_size = 1024\n");
        let c: Conf =
            load_from_env(Some(f.path()), &Flags::default(), "PLANTD_TEST_NONE_").expect("load");
        assert_eq!(c.site, "a");
        assert_eq!(c.mqtt.max_packet_size, 1024);
        let c: Conf = load_from_env(
            Some(f.path()),
            &Flags {
                site: Some("b".into()),
            },
            "PLANTD_TEST_NONE_",
        )
        .expect("load");
        assert_eq!(c.site, "b", "flags override the file");
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let f = file("[mqtt]\nmax_packet_size = \"big\"\n");
        let err = load_from_env::<Conf, _>(Some(f.path()), &Flags::default(), "PLANTD_TEST_NONE_")
            .expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("mqtt.max_packet_size"), "{line}");
        assert!(line.contains(&f.path().display().to_string()), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let f = file("[mqtt]\nmax_pakcet_size = 5\n");
        let err = load_from_env::<Conf, _>(Some(f.path()), &Flags::default(), "PLANTD_TEST_NONE_")
            .expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("max_pakcet_size"), "{line}");
        assert!(line.contains(&f.path().display().to_string()), "{line}");
    }

    #[test]
    fn unreadable_file_is_an_error_not_a_default() {
        let err = load_from_env::<Conf, _>(
            Some(Path::new("/nonexistent/plantd.toml")),
            &Flags::default(),
            "PLANTD_TEST_NONE_",
        )
        .expect_err("must fail");
        assert!(matches!(err, ConfigError::Unreadable { .. }));
        assert!(err.to_string().contains("/nonexistent/plantd.toml"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
    fn env_overrides_known_keys_and_ignores_others() {
        // Unique prefix: no other test reads these variables.
        let prefix = "PLANTD_CFGTEST_ENV_";
        // figment's Jail serialises environment changes across tests.
        figment::Jail::expect_with(|jail| {
            jail.set_env(format!("{prefix}SITE"), "from-env");
            jail.set_env(format!("{prefix}MQTT__MAX_PACKET_SIZE"), "77");
            jail.set_env(format!("{prefix}LOG_FORMAT"), "json");
            let c: Conf = load_from_env(None, &Flags::default(), prefix).expect("load");
            assert_eq!(c.site, "from-env");
            assert_eq!(c.mqtt.max_packet_size, 77);
            jail.set_env(format!("{prefix}MQTT__MAX_PACKET_SIZE"), "lots");
            let err =
                load_from_env::<Conf, _>(None, &Flags::default(), prefix).expect_err("bad env");
            assert!(err.to_string().contains("mqtt.max_packet_size"), "{err}");
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Secrets {
        password: Option<String>,
        user: Option<String>,
        retention_days: Option<i32>,
        tags: Vec<String>,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
    fn verbatim_keys_keep_their_text_and_empty_means_unset() {
        let prefix = "PLANTD_CFGTEST_VERBATIM_";
        figment::Jail::expect_with(|jail| {
            jail.set_env(format!("{prefix}PASSWORD"), " 007");
            jail.set_env(format!("{prefix}USER"), "ada");
            jail.set_env(format!("{prefix}RETENTION_DAYS"), "");
            jail.set_env(format!("{prefix}TAGS"), "[a, b]");
            let c: Secrets =
                load_inner(None, &Flags::default(), prefix, &["password"]).expect("load");
            assert_eq!(
                c.password.as_deref(),
                Some(" 007"),
                "not parsed, not trimmed"
            );
            assert_eq!(c.user.as_deref(), Some("ada"));
            assert_eq!(c.retention_days, None, "an empty variable is unset");
            assert_eq!(c.tags, ["a", "b"]);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
    fn one_precedence_file_then_env_then_flags() {
        let prefix = "PLANTD_CFGTEST_ORDER_";
        figment::Jail::expect_with(|jail| {
            let f = file("site = \"file\"\n[mqtt]\nmax_packet_size = 1\nlisten = \"f\"\n");
            jail.set_env(format!("{prefix}SITE"), "env");
            jail.set_env(format!("{prefix}MQTT__MAX_PACKET_SIZE"), "2");
            let c: Conf = load_from_env(Some(f.path()), &Flags::default(), prefix).expect("load");
            assert_eq!(c.site, "env", "the environment overrides the file");
            assert_eq!(c.mqtt.max_packet_size, 2);
            assert_eq!(c.mqtt.listen, "f", "tables merge key by key");
            let c: Conf = load_from_env(
                Some(f.path()),
                &Flags {
                    site: Some("flag".into()),
                },
                prefix,
            )
            .expect("load");
            assert_eq!(c.site, "flag", "flags override the environment");
            Ok(())
        });
    }
}
