//! Signing and verifying plantd access tokens.
//!
//! Only asymmetric algorithms exist here: **EdDSA (Ed25519)** and **ES256
//! (P-256)**. A token whose header names any other algorithm — HS256 above
//! all — is refused before any key is looked at, so a public key can never be
//! abused as an HMAC secret.
//!
//! Verifiers hold a [`JwkSet`] (the identity service's
//! `/.well-known/jwks.json`), pick the key by the token's `kid`, and check
//! signature, expiry, not-before and audience.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use thiserror::Error;

use crate::claims::Claims;

/// Why a token was refused. The variants are distinct so the edge can pick
/// the right MQTT reason code and the API the right status, but messages to
/// clients should stay generic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Not three base64url parts, or the header or claims are not JSON of the
    /// expected shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than EdDSA or ES256.
    #[error("token algorithm {0} is not accepted (only EdDSA and ES256)")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`, or no key in the set has it.
    #[error("token key id {0:?} is not in the key set")]
    UnknownKey(Option<String>),
    /// The signature does not verify under the key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The audience does not include the one required.
    #[error("token audience does not include {0}")]
    WrongAudience(String),
    /// A signing key could not be made or read.
    #[error("signing key: {0}")]
    Key(String),
}

/// The algorithms plantd accepts.
pub const ACCEPTED: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

/// What a verifier requires beyond a good signature.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The audience the token must include (`plantd:site:<site>` on an
    /// edge, `plantd:api` for the HTTP API).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl VerifyOptions {
    /// Requires `audience`, with a 30 s leeway for clock skew.
    pub fn for_audience(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            leeway_secs: 30,
        }
    }
}

/// Verifies `token` against the keys in `jwks` and returns its claims.
///
/// # Errors
/// A [`TokenError`] saying why the token was refused.
pub fn verify(token: &str, jwks: &JwkSet, opts: &VerifyOptions) -> Result<Claims, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(TokenError::UnsupportedAlgorithm(format!(
            "{:?}",
            header.alg
        )));
    }
    let kid = header.kid.clone();
    let jwk = kid
        .as_deref()
        .and_then(|k| jwks.find(k))
        .ok_or(TokenError::UnknownKey(kid))?;
    // A key published for one algorithm is never used with another.
    if let Some(key_alg) = jwk.common.key_algorithm
        && format!("{key_alg:?}") != format!("{:?}", header.alg)
    {
        return Err(TokenError::UnsupportedAlgorithm(format!(
            "{:?}",
            header.alg
        )));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Key(e.to_string()))?;
    let mut v = Validation::new(header.alg);
    v.leeway = opts.leeway_secs;
    v.validate_nbf = true;
    v.set_audience(&[opts.audience.as_str()]);
    v.set_required_spec_claims(&["exp", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience(opts.audience.clone()),
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => {
            TokenError::UnsupportedAlgorithm(format!("{:?}", header.alg))
        }
        _ => TokenError::Malformed(e.to_string()),
    })?;
    Ok(data.claims)
}

/// Seconds since the Unix epoch, for `iat`/`exp`.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A private key that signs tokens, with its key id. `Debug` never prints
/// the key material.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id, put in every token header and in the JWKS.
    kid: String,
    /// EdDSA or ES256.
    alg: Algorithm,
    /// The private key in PKCS#8 PEM, for storage in a secret store.
    pem: String,
    /// Ready-to-use signing key.
    encoding: EncodingKey,
    /// The public half as a JWK (JSON).
    public_jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh Ed25519 key from the operating system's random source.
    ///
    /// # Errors
    /// [`TokenError::Key`] if the key cannot be encoded.
    pub fn generate_ed25519(kid: impl Into<String>) -> Result<Self, TokenError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = sk
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Self::from_pkcs8_pem(kid, Algorithm::EdDSA, &pem)
    }

    /// Reads a PKCS#8 PEM private key for `alg` (EdDSA or ES256).
    ///
    /// # Errors
    /// [`TokenError::UnsupportedAlgorithm`] for other algorithms and
    /// [`TokenError::Key`] for a key that does not parse.
    pub fn from_pkcs8_pem(
        kid: impl Into<String>,
        alg: Algorithm,
        pem: &str,
    ) -> Result<Self, TokenError> {
        let kid = kid.into();
        let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
        let (encoding, public_jwk) = match alg {
            Algorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                let x = URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
                let enc = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| key_err(&e))?;
                let jwk = serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": x,
                    "kid": kid, "alg": "EdDSA", "use": "sig",
                });
                (enc, jwk)
            }
            Algorithm::ES256 => {
                use p256::pkcs8::DecodePrivateKey;
                let sk = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &sk.public_key(),
                    false,
                );
                let (Some(x), Some(y)) = (point.x(), point.y()) else {
                    return Err(TokenError::Key(
                        "P-256 public key has no coordinates".into(),
                    ));
                };
                let enc = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| key_err(&e))?;
                let jwk = serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                    "kid": kid, "alg": "ES256", "use": "sig",
                });
                (enc, jwk)
            }
            other => return Err(TokenError::UnsupportedAlgorithm(format!("{other:?}"))),
        };
        Ok(Self {
            kid,
            alg,
            pem: pem.to_owned(),
            encoding,
            public_jwk,
        })
    }

    /// A fresh P-256 (ES256) key from the operating system's random source.
    ///
    /// # Errors
    /// [`TokenError::Key`] if the key cannot be encoded.
    pub fn generate_es256(kid: impl Into<String>) -> Result<Self, TokenError> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = sk
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Self::from_pkcs8_pem(kid, Algorithm::ES256, &pem)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The private key as PKCS#8 PEM. Handle as a secret.
    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// The public key as a JWK, for the JWKS document.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// Signs `claims` into a compact JWT with this key's `kid`.
    ///
    /// # Errors
    /// [`TokenError::Key`] if signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))
    }
}

/// A JWKS document holding the public halves of `keys`.
///
/// # Errors
/// [`TokenError::Key`] if a public key does not form a valid JWK.
pub fn jwks_of<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Result<JwkSet, TokenError> {
    let keys: Vec<serde_json::Value> = keys.into_iter().map(|k| k.public_jwk.clone()).collect();
    serde_json::from_value(serde_json::json!({ "keys": keys }))
        .map_err(|e| TokenError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::claims::{Audience, PrincipalKind};

    fn claims(aud: &str, exp_offset: i64) -> Claims {
        let now = now_secs();
        Claims {
            iss: "test".into(),
            sub: "user-1".into(),
            aud: Audience::One(aud.into()),
            exp: now.saturating_add_signed(exp_offset),
            iat: now,
            nbf: None,
            jti: "jti-1".into(),
            org: "acme".into(),
            kind: PrincipalKind::User,
            roles: vec!["operator".into()],
            perms: vec![],
            mqtt: BTreeMap::new(),
        }
    }

    #[test]
    fn eddsa_and_es256_round_trip() {
        for key in [
            SigningKey::generate_ed25519("k-ed").expect("ed key"),
            SigningKey::generate_es256("k-ec").expect("ec key"),
        ] {
            let jwks = jwks_of([&key]).expect("jwks");
            let token = key.sign(&claims("plantd:api", 300)).expect("sign");
            let c =
                verify(&token, &jwks, &VerifyOptions::for_audience("plantd:api")).expect("verify");
            assert_eq!(c.sub, "user-1");
            // Re-reading the stored PEM gives the same public key.
            let again =
                SigningKey::from_pkcs8_pem("k2", key.algorithm(), key.private_pem()).expect("pem");
            assert_eq!(again.public_jwk()["x"], key.public_jwk()["x"]);
        }
    }

    #[test]
    fn refusals_have_distinct_reasons() {
        let key = SigningKey::generate_ed25519("k1").expect("key");
        let other = SigningKey::generate_ed25519("k1").expect("key");
        let jwks = jwks_of([&key]).expect("jwks");
        let api = VerifyOptions::for_audience("plantd:api");

        let expired = key.sign(&claims("plantd:api", -3600)).expect("sign");
        assert_eq!(verify(&expired, &jwks, &api), Err(TokenError::Expired));

        let wrong_aud = key.sign(&claims("plantd:site:x", 300)).expect("sign");
        assert!(matches!(
            verify(&wrong_aud, &jwks, &api),
            Err(TokenError::WrongAudience(_))
        ));

        let forged = other.sign(&claims("plantd:api", 300)).expect("sign");
        assert_eq!(verify(&forged, &jwks, &api), Err(TokenError::BadSignature));

        let unknown = SigningKey::generate_ed25519("k9")
            .expect("key")
            .sign(&claims("plantd:api", 300))
            .expect("sign");
        assert_eq!(
            verify(&unknown, &jwks, &api),
            Err(TokenError::UnknownKey(Some("k9".into())))
        );

        let mut future = claims("plantd:api", 600);
        future.nbf = Some(now_secs() + 300);
        let early = key.sign(&future).expect("sign");
        assert_eq!(verify(&early, &jwks, &api), Err(TokenError::NotYetValid));

        assert!(matches!(
            verify("not.a.token", &jwks, &api),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn hs256_is_refused_even_with_the_public_key_as_secret() {
        let key = SigningKey::generate_ed25519("k1").expect("key");
        let jwks = jwks_of([&key]).expect("jwks");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = key.public_jwk()["x"]
            .as_str()
            .expect("x")
            .as_bytes()
            .to_vec();
        let token = jsonwebtoken::encode(
            &header,
            &claims("plantd:api", 300),
            &EncodingKey::from_secret(&secret),
        )
        .expect("hs256 sign");
        assert_eq!(
            verify(&token, &jwks, &VerifyOptions::for_audience("plantd:api")),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let key = SigningKey::generate_ed25519("k1").expect("key");
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("PRIVATE"));
        assert!(dbg.contains("k1"));
    }
}
