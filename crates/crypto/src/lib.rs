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
#![deny(missing_docs)]

use lifeboat_types::{ChunkId, Classify, ErrorClass};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Bytes a sealed message adds to its plaintext: the nonce and the GCM tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of the nonce that starts a sealed message.
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

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

/// 32 bytes of AES-256 key material, wiped from memory when dropped.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    cipher: LessSafeKey,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl Key {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // A 32-byte key is always valid for AES-256-GCM.
        let cipher = match UnboundKey::new(&AES_256_GCM, &bytes) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("AES-256-GCM accepts every 32-byte key"),
        };
        Key { bytes, cipher }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        Ok(Key::from_bytes(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Seals `plaintext`: returns `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals `plaintext`, appending `nonce ‖ ciphertext ‖ tag` to `out`.
    pub fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals, where it lies, a plaintext the caller appended to `out` after
    /// reserving [`NONCE_LEN`] bytes at `start`: `out[start..start + NONCE_LEN]`
    /// becomes the nonce, the rest is encrypted in place and the tag is
    /// appended. The result is what [`Key::seal_into`] would have appended,
    /// without the copy.
    pub fn seal_appended(
        &self,
        aad: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        if out.len() < start + NONCE_LEN {
            return Err(CryptoError::Malformed {
                what: "message to seal",
                reason: "no room was reserved for the nonce".into(),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out[start..start + NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start + NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a message made by [`Key::seal`] with the same associated data.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(aad, &mut buf)?.len();
        buf.truncate(NONCE_LEN + len);
        buf.drain(..NONCE_LEN);
        Ok(buf)
    }

    /// Opens a message made by [`Key::seal`] where it lies, without copying:
    /// returns the plaintext, which is the middle of `sealed` decrypted in place.
    /// On failure the contents of `sealed` are unspecified.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Authentication);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Authentication)?;
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = Tag::try_from(&tag[..]).map_err(|_| CryptoError::Authentication)?;
        self.cipher
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, ciphertext, 0..)
            .map_err(|_| CryptoError::Authentication)
    }
}

/// How many of `n` (two or more) page subtrees BLAKE3's tree puts on the
/// left: the largest power of two that leaves at least one on the right.
fn left_pages(n: usize) -> usize {
    n.div_ceil(2).next_power_of_two()
}

/// The chaining value of a run of page subtrees that is itself a subtree.
fn merge_pages(
    cvs: &[blake3::hazmat::ChainingValue],
    mode: blake3::hazmat::Mode,
) -> blake3::hazmat::ChainingValue {
    match cvs {
        [one] => *one,
        _ => {
            let (l, r) = cvs.split_at(left_pages(cvs.len()));
            blake3::hazmat::merge_subtrees_non_root(
                &merge_pages(l, mode),
                &merge_pages(r, mode),
                mode,
            )
        }
    }
}

/// One data-key epoch of a [`Keyring`].
#[derive(Clone, Debug)]
pub struct Epoch {
    /// The epoch number; the first is 1.
    pub number: u32,
    /// The AES-256 data key of this epoch.
    pub key: Key,
    /// When the epoch was created, in seconds since the Unix epoch.
    pub created_unix: i64,
}

/// The repository's secret state: the chunk-id key and the data keys by epoch.
#[derive(Clone, Debug)]
pub struct Keyring {
    id_key: [u8; 32],
    epochs: Vec<Epoch>,
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.id_key.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct KeyringDoc {
    version: u32,
    id_key: String,
    epochs: Vec<EpochDoc>,
}

#[derive(Serialize, Deserialize)]
struct EpochDoc {
    number: u32,
    key: String,
    created_unix: i64,
}

const KEYRING_VERSION: u32 = 1;

impl Keyring {
    /// A new keyring with a random id key and one data-key epoch.
    pub fn generate(now_unix: i64) -> Result<Self, CryptoError> {
        let mut id_key = [0u8; 32];
        fill_random(&mut id_key)?;
        Ok(Keyring {
            id_key,
            epochs: vec![Epoch {
                number: 1,
                key: Key::generate()?,
                created_unix: now_unix,
            }],
        })
    }

    /// The id of a chunk: BLAKE3 keyed with the repository's id key.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// The id of a chunk made of whole pages, as [`Keyring::chunk_id`]
    /// computes it, together with a fingerprint of each page (appended to
    /// `marks`): the first 8 bytes of the page's subtree in BLAKE3's hash
    /// tree. The ids come out the same; the fingerprints cost nothing more,
    /// because they are the tree's inner nodes, and tell which pages of two
    /// versions of a chunk differ (with probability 2^-64 of missing a change,
    /// which a restore then detects as a chunk that does not match its id).
    ///
    /// `None` (and nothing appended) unless `page` is a power of two of at
    /// least 1 KiB and `data` is two or more whole pages.
    pub fn chunk_id_with_pages(
        &self,
        data: &[u8],
        page: usize,
        marks: &mut Vec<u64>,
    ) -> Option<ChunkId> {
        use blake3::hazmat::{merge_subtrees_root, HasherExt, Mode};
        if !page.is_power_of_two()
            || page < blake3::CHUNK_LEN
            || data.len() < 2 * page
            || !data.len().is_multiple_of(page)
        {
            return None;
        }
        let cvs: Vec<blake3::hazmat::ChainingValue> = data
            .chunks_exact(page)
            .enumerate()
            .map(|(i, p)| {
                blake3::Hasher::new_keyed(&self.id_key)
                    .set_input_offset((i * page) as u64)
                    .update(p)
                    .finalize_non_root()
            })
            .collect();
        marks.extend(cvs.iter().map(|cv| {
            u64::from_le_bytes([cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7]])
        }));
        let mode = Mode::KeyedHash(&self.id_key);
        let (l, r) = cvs.split_at(left_pages(cvs.len()));
        let root = merge_subtrees_root(&merge_pages(l, mode), &merge_pages(r, mode), mode);
        Some(ChunkId(*root.as_bytes()))
    }

    /// The stored name of an object that callers know by a name of their own
    /// (a WAL segment's): BLAKE3 keyed with a key derived from the id key, so
    /// the store shows neither the name nor anything that matches across
    /// repositories.
    pub fn object_name(&self, namespace: &str, name: &str) -> [u8; 32] {
        let key = blake3::derive_key("lifeboat named objects v1", &self.id_key);
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(namespace.as_bytes());
        h.update(&[0]);
        h.update(name.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The newest epoch, used for everything written now.
    pub fn current(&self) -> &Epoch {
        // The constructor and the parser both guarantee at least one epoch.
        &self.epochs[self.epochs.len() - 1]
    }

    /// The data key of epoch `number`, if this keyring has it.
    pub fn epoch(&self, number: u32) -> Option<&Key> {
        self.epochs
            .iter()
            .find(|e| e.number == number)
            .map(|e| &e.key)
    }

    /// All epochs, oldest first.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// Adds a new epoch with a fresh data key and returns its number. Old epochs
    /// stay, so everything already stored remains readable.
    pub fn rotate(&mut self, now_unix: i64) -> Result<u32, CryptoError> {
        let number = self.current().number + 1;
        self.epochs.push(Epoch {
            number,
            key: Key::generate()?,
            created_unix: now_unix,
        });
        Ok(number)
    }

    /// Serialises the keyring (to be sealed with the master key before storing).
    pub fn to_bytes(&self) -> Vec<u8> {
        let doc = KeyringDoc {
            version: KEYRING_VERSION,
            id_key: hex::encode(self.id_key),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochDoc {
                    number: e.number,
                    key: hex::encode(e.key.as_bytes()),
                    created_unix: e.created_unix,
                })
                .collect(),
        };
        // Serialising plain strings and integers to JSON cannot fail.
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Parses bytes made by [`Keyring::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let malformed = |reason: String| CryptoError::Malformed {
            what: "keyring",
            reason,
        };
        let doc: KeyringDoc =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if doc.version != KEYRING_VERSION {
            return Err(malformed(format!(
                "keyring version {} is not known to this build (it reads version {KEYRING_VERSION})",
                doc.version
            )));
        }
        let id_key = decode_key(&doc.id_key).ok_or_else(|| malformed("bad id key".into()))?;
        let mut epochs = Vec::with_capacity(doc.epochs.len());
        for e in doc.epochs {
            let key = decode_key(&e.key).ok_or_else(|| malformed("bad data key".into()))?;
            epochs.push(Epoch {
                number: e.number,
                key: Key::from_bytes(key),
                created_unix: e.created_unix,
            });
        }
        if epochs.is_empty() {
            return Err(malformed("no data-key epoch".into()));
        }
        epochs.sort_by_key(|e| e.number);
        Ok(Keyring { id_key, epochs })
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

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

    fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<Key, CryptoError> {
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
    use proptest::prelude::*;

    fn fast_kdf() -> Kdf {
        Kdf::Argon2id {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_aad() {
        let k = Key::generate().unwrap();
        let sealed = k.seal(b"aad", b"hello").unwrap();
        assert_eq!(k.open(b"aad", &sealed).unwrap(), b"hello");
        assert!(matches!(
            k.open(b"other", &sealed),
            Err(CryptoError::Authentication)
        ));
        let other = Key::generate().unwrap();
        assert!(other.open(b"aad", &sealed).is_err());
    }

    /// The stored format is standard AES-256-GCM (`nonce ‖ ciphertext ‖ tag`):
    /// NIST's GCM test case 16 must open, whatever implementation is linked, so
    /// repositories written by any build stay readable.
    #[test]
    fn opens_the_nist_aes_256_gcm_test_vector() {
        let h = |s: &str| hex::decode(s).unwrap();
        let key: [u8; 32] = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .unwrap();
        let mut sealed = h("cafebabefacedbaddecaf888");
        sealed.extend(h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"));
        sealed.extend(h("76fc6ece0f4e1768cddf8853bb2d551b"));
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        assert_eq!(Key::from_bytes(key).open(&aad, &sealed).unwrap(), plain);
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let k = Key::generate().unwrap();
        assert_ne!(k.seal(b"", b"same").unwrap(), k.seal(b"", b"same").unwrap());
    }

    #[test]
    fn flipped_byte_fails_authentication() {
        let k = Key::generate().unwrap();
        let mut sealed = k.seal(b"", &[7u8; 100]).unwrap();
        sealed[40] ^= 1;
        assert!(k.open(b"", &sealed).is_err());
    }

    #[test]
    fn rotation_keeps_old_epochs_and_the_id_key() {
        let mut ring = Keyring::generate(1).unwrap();
        let id_before = ring.chunk_id(b"chunk");
        let sealed = ring.current().key.seal(b"", b"old").unwrap();
        assert_eq!(ring.rotate(2).unwrap(), 2);
        assert_eq!(ring.current().number, 2);
        assert_eq!(ring.chunk_id(b"chunk"), id_before);
        assert_eq!(ring.epoch(1).unwrap().open(b"", &sealed).unwrap(), b"old");
        let back = Keyring::from_bytes(&ring.to_bytes()).unwrap();
        assert_eq!(back.epochs().len(), 2);
        assert_eq!(back.chunk_id(b"chunk"), id_before);
    }

    #[test]
    fn chunk_ids_differ_between_keyrings() {
        let a = Keyring::generate(0).unwrap();
        let b = Keyring::generate(0).unwrap();
        assert_ne!(a.chunk_id(b"same content"), b.chunk_id(b"same content"));
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
    fn page_ids_need_whole_pages_of_a_power_of_two() {
        let ring = Keyring::generate(0).unwrap();
        let mut marks = Vec::new();
        assert!(ring
            .chunk_id_with_pages(&[0u8; 8192], 8192, &mut marks)
            .is_none());
        assert!(ring
            .chunk_id_with_pages(&[0u8; 8192 * 2 + 1], 8192, &mut marks)
            .is_none());
        assert!(ring
            .chunk_id_with_pages(&[0u8; 6000], 3000, &mut marks)
            .is_none());
        assert!(marks.is_empty());
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

    proptest! {
        #[test]
        fn seal_open_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let k = Key::from_bytes([3u8; 32]);
            let sealed = k.seal(&aad, &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(k.open(&aad, &sealed).unwrap(), data.clone());
            let mut appended = b"prefix".to_vec();
            appended.extend_from_slice(&[0u8; NONCE_LEN]);
            appended.extend_from_slice(&data);
            k.seal_appended(&aad, &mut appended, 6).unwrap();
            prop_assert_eq!(&appended[..6], b"prefix");
            prop_assert_eq!(k.open(&aad, &appended[6..]).unwrap(), data.clone());
            let mut in_place = sealed.clone();
            prop_assert_eq!(k.open_in_place(&aad, &mut in_place).unwrap(), &data[..]);
        }

        #[test]
        fn page_ids_are_chunk_ids(pages in 2usize..40, shift in 0u32..4, seed in any::<u8>()) {
            let ring = Keyring::generate(0).unwrap();
            let page = 1024usize << shift;
            let data: Vec<u8> = (0..pages * page).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut marks = Vec::new();
            let id = ring.chunk_id_with_pages(&data, page, &mut marks);
            prop_assert_eq!(id, Some(ring.chunk_id(&data)));
            prop_assert_eq!(marks.len(), pages);
            // A changed page changes its own mark and no other.
            let mut changed = data.clone();
            changed[page + 5] ^= 1;
            let mut after = Vec::new();
            ring.chunk_id_with_pages(&changed, page, &mut after).unwrap();
            let differ: Vec<usize> = (0..pages).filter(|&i| marks[i] != after[i]).collect();
            prop_assert_eq!(differ, vec![1]);
        }

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
