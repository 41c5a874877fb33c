//! [`Kdf`]: how a key slot turns its secret into a wrapping key.

use serde::{Deserialize, Serialize};

use crate::{CryptoError, Key};

/// How a key slot turns its secret into the key that wraps the master key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Kdf {
    /// Argon2id, for passphrases a person chose.
    Argon2id {
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Number of passes.
        iterations: u32,
        /// Degree of parallelism.
        parallelism: u32,
    },
    /// BLAKE3 key derivation, for high-entropy key material of at least 32 bytes
    /// (a key file, a key in an environment variable, a KMS or Vault answer).
    /// It costs microseconds, so short-lived commands such as `wal-push` start fast.
    Blake3,
}

impl Kdf {
    /// The default Argon2id parameters: 64 MiB, 3 passes, 1 lane.
    pub fn default_passphrase() -> Self {
        Kdf::Argon2id {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }

    /// The key that wraps a slot's master key, from the slot's secret and salt.
    pub(crate) fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<Key, CryptoError> {
        match self {
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } => {
                let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|e| CryptoError::Malformed {
                        what: "key slot",
                        reason: format!("bad Argon2id parameters: {e}"),
                    })?;
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = [0u8; 32];
                argon
                    .hash_password_into(secret, salt, &mut out)
                    .map_err(|e| CryptoError::Malformed {
                        what: "key slot",
                        reason: format!("Argon2id failed: {e}"),
                    })?;
                Ok(Key::from_bytes(out))
            }
            Kdf::Blake3 => {
                if secret.len() < 32 {
                    return Err(CryptoError::KeyMaterialTooShort(secret.len()));
                }
                let mut hasher = blake3::Hasher::new_derive_key("lifeboat key slot v1");
                hasher.update(salt);
                hasher.update(secret);
                Ok(Key::from_bytes(*hasher.finalize().as_bytes()))
            }
        }
    }
}
