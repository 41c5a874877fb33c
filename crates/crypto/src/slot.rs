//! [`KeySlot`]: the master key wrapped under one secret, and where that
//! secret comes from ([`SecretSource`]).

use serde::{Deserialize, Serialize};

use crate::{fill_random, CryptoError, Kdf, Key};

/// Where a slot's secret comes from; recorded so `repo key list` can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretSource {
    /// A passphrase (from `LIFEBOAT_PASSWORD`, a password file or a password command).
    Passphrase,
    /// Key material read from a file.
    KeyFile,
    /// Key material in an environment variable.
    KeyEnv,
    /// Key material printed by an external command (KMS, Vault).
    KeyCommand,
}

impl SecretSource {
    /// True for sources of high-entropy key material (BLAKE3 slots).
    pub fn is_key_material(self) -> bool {
        !matches!(self, SecretSource::Passphrase)
    }
}

/// A key slot: the master key wrapped under one secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    /// Format version of the slot document.
    pub version: u32,
    /// The slot's id (16 hexadecimal characters), also its object name.
    pub id: String,
    /// Where the secret that opens it comes from.
    pub source: SecretSource,
    /// A free-form label given when the slot was added.
    #[serde(default)]
    pub label: String,
    /// When the slot was added, in seconds since the Unix epoch.
    pub created_unix: i64,
    /// The key derivation applied to the secret.
    pub kdf: Kdf,
    /// The salt for the key derivation, hexadecimal.
    pub salt: String,
    /// The sealed master key, hexadecimal.
    pub wrapped_master_key: String,
    /// A checksum of the fields above (see [`KeySlot::checksum_matches`]):
    /// a damaged slot is then told from a wrong secret. Absent in slots
    /// written before it existed; builds that predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The key slot format version this build writes and reads.
pub const KEY_SLOT_VERSION: u32 = 1;

impl KeySlot {
    /// Wraps `master` under `secret`.
    pub fn create(
        master: &Key,
        secret: &[u8],
        source: SecretSource,
        kdf: Kdf,
        label: &str,
        now_unix: i64,
    ) -> Result<Self, CryptoError> {
        let mut id = [0u8; 8];
        fill_random(&mut id)?;
        let id = hex::encode(id);
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let wrapping = kdf.derive(secret, &salt)?;
        let wrapped = wrapping.seal(id.as_bytes(), master.as_bytes())?;
        let mut slot = KeySlot {
            version: KEY_SLOT_VERSION,
            id,
            source,
            label: label.to_string(),
            created_unix: now_unix,
            kdf,
            salt: hex::encode(salt),
            wrapped_master_key: hex::encode(wrapped),
            checksum: None,
        };
        slot.checksum = Some(slot.compute_checksum());
        Ok(slot)
    }

    /// BLAKE3 (derived key "lifeboat key slot checksum v1") of the slot's
    /// fields as the JSON array `[version, id, source, label, created_unix,
    /// kdf, salt, wrapped_master_key]`, hexadecimal.
    fn compute_checksum(&self) -> String {
        let fields = serde_json::to_vec(&(
            self.version,
            &self.id,
            self.source,
            &self.label,
            self.created_unix,
            &self.kdf,
            &self.salt,
            &self.wrapped_master_key,
        ))
        .unwrap_or_default();
        let mut h = blake3::Hasher::new_derive_key("lifeboat key slot checksum v1");
        h.update(&fields);
        h.finalize().to_hex().to_string()
    }

    /// Whether the slot is as it was written: `Some(true)` or `Some(false)`
    /// for a slot with a checksum, `None` for one written before slots had
    /// one (its damage cannot be told from a wrong secret).
    pub fn checksum_matches(&self) -> Option<bool> {
        self.checksum
            .as_ref()
            .map(|c| c.eq_ignore_ascii_case(&self.compute_checksum()))
    }

    /// Unwraps the master key with `secret`.
    pub fn open(&self, secret: &[u8]) -> Result<Key, CryptoError> {
        let salt = hex::decode(&self.salt).map_err(|e| CryptoError::Malformed {
            what: "key slot",
            reason: format!("bad salt: {e}"),
        })?;
        let wrapped =
            hex::decode(&self.wrapped_master_key).map_err(|e| CryptoError::Malformed {
                what: "key slot",
                reason: format!("bad wrapped key: {e}"),
            })?;
        let wrapping = self.kdf.derive(secret, &salt)?;
        let master =
            wrapping
                .open(self.id.as_bytes(), &wrapped)
                .map_err(|_| CryptoError::WrongSecret {
                    slot: self.id.clone(),
                })?;
        let bytes: [u8; 32] = master
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed {
                what: "key slot",
                reason: "wrapped key has the wrong length".into(),
            })?;
        Ok(Key::from_bytes(bytes))
    }

    /// Serialises the slot as JSON (stored in clear: it holds only what is needed
    /// to find and open the slot).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a slot document.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let slot: KeySlot = serde_json::from_slice(bytes).map_err(|e| CryptoError::Malformed {
            what: "key slot",
            reason: e.to_string(),
        })?;
        if slot.version != KEY_SLOT_VERSION {
            return Err(CryptoError::Malformed {
                what: "key slot",
                reason: format!(
                    "key slot version {} is not known to this build (it reads version {KEY_SLOT_VERSION})",
                    slot.version
                ),
            });
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CryptoError, Key};

    fn fast_kdf() -> Kdf {
        Kdf::Argon2id {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn passphrase_slot_opens_with_its_passphrase_only() {
        let master = Key::generate().unwrap();
        let slot = KeySlot::create(
            &master,
            b"correct horse",
            SecretSource::Passphrase,
            fast_kdf(),
            "",
            0,
        )
        .unwrap();
        let slot = KeySlot::from_bytes(&slot.to_bytes()).unwrap();
        assert_eq!(
            slot.open(b"correct horse").unwrap().as_bytes(),
            master.as_bytes()
        );
        assert!(matches!(
            slot.open(b"wrong"),
            Err(CryptoError::WrongSecret { .. })
        ));
    }

    #[test]
    fn key_material_slot_refuses_short_material() {
        let master = Key::generate().unwrap();
        let err = KeySlot::create(&master, b"short", SecretSource::KeyFile, Kdf::Blake3, "", 0)
            .unwrap_err();
        assert!(matches!(err, CryptoError::KeyMaterialTooShort(5)));
        let slot = KeySlot::create(
            &master,
            &[9u8; 32],
            SecretSource::KeyEnv,
            Kdf::Blake3,
            "",
            0,
        )
        .unwrap();
        assert_eq!(slot.open(&[9u8; 32]).unwrap().as_bytes(), master.as_bytes());
    }

    #[test]
    fn a_changed_key_slot_fails_its_checksum() {
        let master = Key::generate().unwrap();
        let slot = KeySlot::create(
            &master,
            b"a passphrase",
            SecretSource::Passphrase,
            fast_kdf(),
            "l",
            1,
        )
        .unwrap();
        let back = KeySlot::from_bytes(&slot.to_bytes()).unwrap();
        assert_eq!(back.checksum_matches(), Some(true));
        let mut changed = back.clone();
        let last = changed.wrapped_master_key.pop().unwrap();
        changed
            .wrapped_master_key
            .push(if last == '0' { '1' } else { '0' });
        assert_eq!(changed.checksum_matches(), Some(false));
        let mut old = back.clone();
        old.checksum = None;
        let old = KeySlot::from_bytes(&old.to_bytes()).unwrap();
        assert_eq!(
            old.checksum_matches(),
            None,
            "slots from before checksums still read"
        );
        assert!(old.open(b"a passphrase").is_ok());
    }
}
