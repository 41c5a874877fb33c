//! [`Keyring`]: the chunk-id key and the data keys by epoch.

use lifeboat_types::ChunkId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::{fill_random, CryptoError, Key};

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

/// The keyring document version this build writes and reads.
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
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
    }
}
