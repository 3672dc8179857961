//! Sealing tenants' secrets at rest: ChaCha20-Poly1305 (`ring`) with a
//! 256-bit key from `REINS_SECRET_KEY` (base64), a key file, or a file the
//! control plane generates on first start (mode 0600). The tenant and name
//! are the associated data, so a sealed value copied to another row does
//! not open. Several control planes on one database need the same key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Environment variable with the base64 key; wins over any file.
pub const KEY_ENV: &str = "REINS_SECRET_KEY";
const VERSION: &str = "v1:";

/// The key that seals and opens secrets.
pub struct SealingKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// A sealed value that does not open: wrong key, or tampered with.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret does not open with this server's key (was REINS_SECRET_KEY changed?)")]
pub struct Unsealable;

impl SealingKey {
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok().context("the secret key must be 32 bytes")?;
        Ok(Self { key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    fn decode(text: &str, origin: &str) -> Result<Self> {
        let bytes = B64.decode(text.trim()).with_context(|| format!("{origin} is not base64"))?;
        Self::from_bytes(&bytes).with_context(|| format!("{origin}: 32 bytes of base64 expected"))
    }

    /// The key from [`KEY_ENV`], else from `file`, which is created with a
    /// new random key when it does not exist.
    pub fn load(file: &Path) -> Result<Self> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return Self::decode(&v, KEY_ENV);
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Self::decode(&text, &file.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::generate(file),
            Err(e) => Err(e).with_context(|| format!("reading the secret key {}", file.display())),
        }
    }

    fn generate(file: &Path) -> Result<Self> {
        let mut bytes = [0u8; 32];
        if SystemRandom::new().fill(&mut bytes).is_err() {
            bail!("no randomness for a secret key");
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("creating the secret key {}", file.display()))?;
        writeln!(f, "{}", B64.encode(bytes)).with_context(|| format!("writing {}", file.display()))?;
        f.sync_all()?;
        tracing::info!(file = %file.display(), "generated the key that seals secrets at rest");
        Self::from_bytes(&bytes)
    }

    /// Seals `value` for the secret `name` of `tenant`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String, Unsealable> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Unsealable)?;
        let mut data = value.as_bytes().to_vec();
        let aad = format!("{tenant}/{name}");
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut data)
            .map_err(|_| Unsealable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{VERSION}{}", B64.encode(out)))
    }

    /// Opens what [`Self::seal`] made for the same tenant and name.
    pub fn open(&self, tenant: &str, name: &str, sealed: &str) -> Result<String, Unsealable> {
        let raw = sealed.strip_prefix(VERSION).and_then(|b| B64.decode(b).ok()).ok_or(Unsealable)?;
        if raw.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut data = data.to_vec();
        let aad = format!("{tenant}/{name}");
        let plain = self.key.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data).map_err(|_| Unsealable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_bytes(&[7u8; 32]).expect("key")
    }

    #[test]
    fn seals_and_opens_only_for_the_same_row_and_key() {
        let k = key();
        let sealed = k.seal("tn_a", "openai", "sk-123").expect("seal");
        assert!(!sealed.contains("sk-123"));
        assert_eq!(k.open("tn_a", "openai", &sealed).expect("open"), "sk-123");
        assert!(k.open("tn_b", "openai", &sealed).is_err(), "another tenant's row");
        assert!(k.open("tn_a", "other", &sealed).is_err(), "another name");
        let other = SealingKey::from_bytes(&[8u8; 32]).expect("key");
        assert!(other.open("tn_a", "openai", &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(k.open("tn_a", "openai", &tampered).is_err());
        assert!(k.open("tn_a", "openai", "garbage").is_err());
        assert_ne!(sealed, k.seal("tn_a", "openai", "sk-123").expect("seal"), "fresh nonce each time");
    }

    #[test]
    fn a_generated_key_file_is_private_and_reloads() {
        let dir = std::env::temp_dir().join(format!("reins-sealing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("secret.key");
        let a = SealingKey::generate(&file).expect("generate");
        let mode = std::fs::metadata(&file).expect("file").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let sealed = a.seal("t", "n", "v").expect("seal");
        let text = std::fs::read_to_string(&file).expect("read");
        let b = SealingKey::decode(&text, "file").expect("reload");
        assert_eq!(b.open("t", "n", &sealed).expect("open"), "v");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
