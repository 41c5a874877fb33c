//! lifeboat's cryptography.
//!
//! Roles of the types:
//! - [`Key`] is 32 bytes of AES-256 key material; [`Key::seal`] and [`Key::open`]
//!   are AES-256-GCM with a fresh random 96-bit nonce per message and caller-given
//!   associated data. Every object lifeboat stores passes through them.
//! - [`Keyring`] is the repository's secret state: the *id key* that keys the
//!   BLAKE3 chunk ids (it never changes, so deduplication survives rotation) and the
//!   data keys, one per *epoch*. New data is written with the newest epoch; old data
//!   stays readable with its own epoch's key, so rotation re-uploads nothing.
//! - The keyring is sealed with a random *master key*. A [`KeySlot`] wraps that
//!   master key under a secret a person or a system holds: a passphrase (stretched
//!   with Argon2id) or high-entropy key material from a file, an environment variable
//!   or a command such as a KMS or Vault client (derived with BLAKE3). A repository
//!   has one or more slots; adding or removing one rewrites nothing else.
//!
//! Modules: `key` (sealing), `keyring` (ids and data keys), `kdf` (the
//! derivations), `slot` (key slots); everything is re-exported here.
#![deny(missing_docs)]

mod kdf;
mod key;
mod keyring;
mod slot;

use lifeboat_types::{Classify, ErrorClass};

pub use kdf::Kdf;
pub use key::{Key, NONCE_LEN, SEAL_OVERHEAD};
pub use keyring::{Epoch, Keyring};
pub use slot::{KeySlot, SecretSource, KEY_SLOT_VERSION};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: the bytes were altered, or the key is not the one
    /// they were sealed with.
    #[error("authentication failed: the data is damaged or was sealed with another key")]
    Authentication,
    /// The secret does not open this key slot.
    #[error("the secret does not open key slot {slot}")]
    WrongSecret {
        /// The slot's id.
        slot: String,
    },
    /// Bytes that should hold a keyring or key slot could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Key material given for a key slot is too short to be used without stretching.
    #[error(
        "key material must be at least 32 bytes (got {0}); use a passphrase slot for short secrets"
    )]
    KeyMaterialTooShort(usize),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl CryptoError {
    /// The failure's class: bytes that fail authentication or do not parse
    /// are damage, a secret that opens nothing or unusable key material is
    /// usage, a failed random number generator is a failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            CryptoError::Authentication | CryptoError::Malformed { .. } => ErrorClass::Damage,
            CryptoError::WrongSecret { .. } | CryptoError::KeyMaterialTooShort(_) => {
                ErrorClass::Usage
            }
            CryptoError::Random(_) => ErrorClass::Failure,
        }
    }
}

impl Classify for CryptoError {
    fn class(&self) -> ErrorClass {
        CryptoError::class(self)
    }
}

/// Fills `buf` with random bytes from the operating system.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Keyring::from_bytes(&bytes);
            let _ = KeySlot::from_bytes(&bytes);
            let _ = Key::from_bytes([0u8; 32]).open(b"", &bytes);
            let mut copy = bytes.clone();
            // Random bytes never authenticate (a forgery has odds of 2^-128).
            prop_assert!(Key::from_bytes([0u8; 32]).open_in_place(b"", &mut copy).is_err());
        }
    }
}
