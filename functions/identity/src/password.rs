//! Password hashing: argon2id with the crate's recommended parameters,
//! PHC-string encoded (the salt and parameters travel with the hash).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};

use crate::AppError;

/// What an unknown account's login (and an unknown client's token request)
/// verifies against, so that it costs what a known one costs: a real
/// argon2id hash of a password nobody has, made once, offline, with the
/// parameters [`hash`] uses (argon2id v19, m = 19 MiB, t = 2, p = 1, a
/// 16-byte salt, 32-byte output). Verification reads the parameters from
/// the string, so the work is the same as for a real user's hash; a test
/// fails if [`hash`]'s parameters ever drift from these. A constant rather
/// than a hash computed at start: that hash was most of identity's cold
/// start (~300 ms, `docs/performance.md`).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$BmIVTQxlCRFHZsjWiG4+UA$GoDb80sefS1ykmPmqgQopix1wE3Iky0ddLtMMuBEAzY";

/// Hashes `password` with a fresh random salt.
///
/// # Errors
/// Internal error if hashing fails (it does not for valid input).
pub fn hash(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AppError::internal)
}

/// Whether `password` matches the PHC string `hash` (constant time in the
/// password; a malformed hash never matches).
pub fn verify(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A random secret for service accounts and devices: 32 bytes, base64url.
pub fn random_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery").expect("hash");
        let b = hash("correct horse battery").expect("hash");
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &a));
        assert!(!verify("wrong", &a));
        assert!(!verify("anything", "not a hash"));
        assert_ne!(random_secret(), random_secret());
    }

    /// The unknown-user path does the same work as the known-user path:
    /// the dummy is a complete, valid hash (a malformed one would be
    /// refused before any hashing, and so answer faster), and it has
    /// exactly the algorithm, version, parameters, salt and output length
    /// of the hashes `hash` makes for real users.
    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a valid PHC string");
        let real_s = hash("a real user's password").expect("hash");
        let real = PasswordHash::new(&real_s).expect("parses");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params, "m, t, p and output length");
        assert_eq!(
            dummy.salt.map(|s| s.len()),
            real.salt.map(|s| s.len()),
            "salt length"
        );
        assert_eq!(
            dummy.hash.map(|h| h.len()),
            real.hash.map(|h| h.len()),
            "output length"
        );
        let params = argon2::Params::try_from(&dummy).expect("argon2 parameters");
        let default = Argon2::default();
        let default = default.params();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost()),
            "the crate's current defaults"
        );
        // It really is a hash (of a password nobody is given), so a
        // verification runs to the end and fails on the comparison.
        assert!(verify("plantd-dummy-password-for-timing", DUMMY_HASH));
        assert!(!verify("whatever password", DUMMY_HASH));
    }
}
