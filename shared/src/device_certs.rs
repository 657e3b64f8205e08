//! Devices that log in with their TLS client certificate instead of a
//! token (`docs/decisions/0043-edge-certificate-login.md`).
//!
//! A device registered with the SHA-256 fingerprint of its client
//! certificate (`POST /v1/devices` with `certificate_sha256`) gets a record
//! in the KV bucket [`DEVICE_CERTS_BUCKET`] (`plantd_device_certs`), key
//! [`key`]`(site, fingerprint)` = `<site>.<64 lower-case hex digits>`,
//! value a JSON [`DeviceCert`]. The identity service writes it (create,
//! activate/deactivate, delete); the edge of the site follows
//! `<site>.>` — only its own site's records, never the identity records
//! (secret hashes, users) — and admits a CONNECT without a password whose
//! verified client certificate has a registered, active fingerprint of a
//! device of the site's owner, with that device's grants.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::subject::Site;

pub use crate::streams::DEVICE_CERTS_BUCKET;

/// The SHA-256 digest of a DER certificate: what a device is registered
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Why a fingerprint does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a certificate fingerprint is the SHA-256 of the DER certificate: 64 hexadecimal digits, \
     optionally separated by ':' (as `openssl x509 -noout -fingerprint -sha256` prints it)"
)]
pub struct BadFingerprint;

impl Fingerprint {
    /// The fingerprint of the DER certificate `der`.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses 64 hexadecimal digits, upper or lower case, optionally
    /// separated by `:` (OpenSSL's `SHA256 Fingerprint=AB:CD:…` form, with
    /// or without its prefix).
    ///
    /// # Errors
    /// [`BadFingerprint`] for anything else.
    pub fn parse(text: &str) -> Result<Self, BadFingerprint> {
        let text = text.trim();
        let text = text
            .split_once('=')
            .filter(|(prefix, _)| prefix.to_ascii_lowercase().contains("fingerprint"))
            .map_or(text, |(_, rest)| rest);
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(BadFingerprint)?;
            let lo = hex_value(pair[1]).ok_or(BadFingerprint)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// 64 lower-case hexadecimal digits (the canonical form in keys and
    /// records).
    pub fn hex(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The KV key of `fingerprint` on `site`: `<site>.<hex>`.
pub fn key(site: &Site, fingerprint: &Fingerprint) -> String {
    format!("{}.{}", site.as_str(), fingerprint.hex())
}

/// The key filter of every record of `site`: `<site>.>`.
pub fn site_filter(site: &Site) -> String {
    format!("{}.>", site.as_str())
}

/// The fingerprint in a key of `site` (`None` for a key of another site or
/// a malformed one).
pub fn fingerprint_of_key(site: &Site, key: &str) -> Option<Fingerprint> {
    let hex = key.strip_prefix(site.as_str())?.strip_prefix('.')?;
    Fingerprint::parse(hex).ok()
}

/// A device that may log in with the certificate of the record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCert {
    /// The device's id (`dev-<uuid>`): the connection's subject.
    pub device: String,
    /// The device's organisation; the edge admits it only while it owns
    /// the site.
    pub org: String,
    /// The site the device lives on (the key's first token).
    pub site: String,
    /// Filters it may publish to on the site.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters it may subscribe within on the site.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Inactive devices are refused (and their connections closed).
    pub active: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let f = Fingerprint::of_der(b"not really DER");
        let hex = f.hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Fingerprint::parse(&hex), Ok(f));
        let upper_colons =
            f.0.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
        assert_eq!(Fingerprint::parse(&upper_colons), Ok(f));
        assert_eq!(
            Fingerprint::parse(&format!("sha256 Fingerprint={upper_colons}\n")),
            Ok(f)
        );
        assert_eq!(Fingerprint::parse(&hex[..62]), Err(BadFingerprint));
        assert_eq!(
            Fingerprint::parse(&format!("{}zz", &hex[..62])),
            Err(BadFingerprint)
        );
        assert_eq!(Fingerprint::parse(""), Err(BadFingerprint));
    }

    #[test]
    fn keys_name_the_site_and_round_trip() {
        let site = Site::new("plant-1").expect("site");
        let f = Fingerprint::of_der(b"x");
        let k = key(&site, &f);
        assert!(k.starts_with("plant-1."));
        assert_eq!(fingerprint_of_key(&site, &k), Some(f));
        let other = Site::new("plant-2").expect("site");
        assert_eq!(fingerprint_of_key(&other, &k), None);
        assert_eq!(site_filter(&site), "plant-1.>");
    }
}
