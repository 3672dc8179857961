//! Random identifiers and secrets, and how secrets are stored.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use sha2::{Digest, Sha256};

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A sandbox id: 20 lowercase letters and digits (no `-`, as E2B clients expect).
pub fn sandbox_id() -> String {
    let mut rng = rand::rng();
    (0..20).map(|_| LOWER_ALNUM[rng.random_range(0..LOWER_ALNUM.len())] as char).collect()
}

/// An object id: `prefix` + `_` + 16 lowercase letters and digits.
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..16).map(|_| LOWER_ALNUM[rng.random_range(0..LOWER_ALNUM.len())] as char).collect();
    format!("{prefix}_{tail}")
}

/// A secret: `prefix` + `_` + 40 alphanumerics (≈238 bits from the OS CSPRNG).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// How a secret is stored: its SHA-256, hex. Secrets are long random strings,
/// so a fast hash is enough (there is nothing to brute-force).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shape() {
        let id = sandbox_id();
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| LOWER_ALNUM.contains(&b)));
        assert_ne!(sandbox_id(), sandbox_id());
        assert!(new_id("tn").starts_with("tn_"));
        let s = new_secret("reins");
        assert_eq!(s.len(), 46);
        assert_eq!(hash_secret(&s).len(), 64);
        assert_ne!(hash_secret(&s), hash_secret("reins_other"));
    }
}
