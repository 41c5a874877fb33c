//! Opening, creating and describing a repository.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use lifeboat_chunker::ChunkerConfig;
use lifeboat_crypto::{Kdf, Key, KeySlot, Keyring, SecretSource};
use lifeboat_storage::{DynStorage, StorageError};
use lifeboat_types::{SnapshotId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use zeroize::Zeroizing;

use crate::error::{RepoError, Result};
use crate::format::{
    self, FORMAT_VERSION, MAGIC_CONFIG, MAGIC_KEYRING, MAGIC_KEYSLOT, MAGIC_SNAPSHOT,
};
use crate::index::Index;
use crate::keys::{FileType, ObjectKey};
use crate::snapshot::{Snapshot, SnapshotEntry};

/// The keys of the two singletons.
const CONFIG: &str = FileType::Config.prefix();
const KEYRING: &str = FileType::Keyring.prefix();

/// A secret given to open or create a key slot.
pub struct Credential {
    source: SecretSource,
    secret: Zeroizing<Vec<u8>>,
}

impl Credential {
    /// A passphrase (stretched with Argon2id).
    pub fn passphrase(bytes: Vec<u8>) -> Self {
        Credential {
            source: SecretSource::Passphrase,
            secret: Zeroizing::new(bytes),
        }
    }

    /// High-entropy key material of at least 32 bytes from `source`.
    pub fn key_material(source: SecretSource, bytes: Vec<u8>) -> Self {
        Credential {
            source,
            secret: Zeroizing::new(bytes),
        }
    }

    /// Where the secret came from.
    pub fn source(&self) -> SecretSource {
        self.source
    }

    /// The secret's length in bytes (a passphrase's length, for advice).
    pub fn len(&self) -> usize {
        self.secret.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }

    fn kdf(&self, passphrase_kdf: &Kdf) -> Kdf {
        if self.source.is_key_material() {
            Kdf::Blake3
        } else {
            passphrase_kdf.clone()
        }
    }
}

/// Settings fixed when a repository is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Config document version.
    pub version: u32,
    /// A random id for this repository.
    pub id: String,
    /// When it was created.
    pub created: Timestamp,
    /// How streams and ordinary files are chunked.
    pub chunker: ChunkerConfig,
    /// Target size of a pack in bytes.
    pub pack_size: u64,
    /// zstd level for chunks (0 stores them raw).
    pub compression_level: i32,
}

/// Choices for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunking of streams and ordinary files.
    pub chunker: ChunkerConfig,
    /// Target pack size in bytes (at least 1 MiB).
    pub pack_size: u64,
    /// zstd level, 0–19.
    pub compression_level: i32,
    /// Key derivation for passphrase slots.
    pub passphrase_kdf: Kdf,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerConfig::default(),
            pack_size: 16 << 20,
            compression_level: 1,
            passphrase_kdf: Kdf::default_passphrase(),
        }
    }
}

/// The parts of an open repository that worker threads share.
pub(crate) struct Inner {
    pub(crate) storage: DynStorage,
    pub(crate) rt: Handle,
    pub(crate) keyring: Keyring,
    pub(crate) config: RepoConfig,
    /// What the command touched, for its audit record (`audit.rs`).
    pub(crate) audit: crate::audit::SharedAudit,
}

impl Inner {
    /// Runs a storage future to completion from a thread outside the runtime.
    pub(crate) fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// An open repository.
///
/// All methods block: they drive the async storage on the runtime `Handle` given
/// at open, and must be called from outside that runtime's worker threads.
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
    master: Key,
    slot_id: String,
    /// Key slots found damaged when it was opened: (key, what is wrong).
    damaged_slots: Vec<(String, String)>,
    /// Where the local index cache lives ([`Repository::set_index_cache`]).
    index_cache: IndexCacheConfig,
    /// Threads that compress and seal a backup's chunks; `None`: one per
    /// core ([`Repository::set_compressors`]).
    pub(crate) compressors: Option<usize>,
}

/// Where and from what size the index is kept in a local cache file.
#[derive(Clone, Debug)]
struct IndexCacheConfig {
    /// The directory holding one subdirectory per repository id; `None`:
    /// the index is always held in memory.
    dir: Option<std::path::PathBuf>,
    /// Indexes with fewer chunks are held in memory.
    min_chunks: usize,
}

/// Indexes with fewer chunks than this stay in memory (about 56 bytes a
/// chunk: 5.6 MB); larger ones go to the local cache file.
pub const INDEX_CACHE_MIN_CHUNKS: usize = 100_000;

/// Entries sorted in memory at a time while the cache file is built (48
/// bytes each in the run buffer: about 48 MB).
const INDEX_CACHE_RUN: usize = 1_000_000;

/// At most this many index objects newer than the cache file are read into
/// the in-memory overlay; more, and the file is rebuilt.
const INDEX_CACHE_OVERLAY_MAX: usize = 64;

/// At most this many bytes of index objects newer than the cache file are
/// read into the overlay (an entry is 44 bytes: ~380 000 chunks, ~21 MB in
/// memory); more, and the file is rebuilt.
const INDEX_CACHE_OVERLAY_MAX_BYTES: u64 = 16 << 20;

/// Index objects fetched at a time while the cache is built (an index
/// object of tiny chunks can list 200 000 of them: ~20 MB decoded).
const INDEX_READ_BATCH: usize = 8;

/// The default index cache directory: `$LIFEBOAT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/lifeboat`, else `$HOME/.cache/lifeboat`; `None` when
/// none is set.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("LIFEBOAT_CACHE_DIR") {
        return Some(d.into());
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(std::path::PathBuf::from(d).join("lifeboat"));
    }
    var("HOME").map(|h| std::path::PathBuf::from(h).join(".cache").join("lifeboat"))
}

impl Default for IndexCacheConfig {
    fn default() -> Self {
        IndexCacheConfig {
            dir: default_cache_dir(),
            min_chunks: INDEX_CACHE_MIN_CHUNKS,
        }
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn slot_key(id: &str) -> String {
    ObjectKey::KeySlot(id).to_string()
}

fn encode_slot(slot: &KeySlot) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC_KEYSLOT);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&slot.to_bytes());
    out
}

/// A key slot as read: the slot, and whether it carried a checksum (that
/// matched).
pub(crate) struct ReadSlot {
    pub(crate) slot: KeySlot,
    pub(crate) checked: bool,
}

/// Decodes a stored key slot. A slot that does not parse or whose checksum
/// does not match is [`RepoError::Corrupt`] naming it.
pub(crate) fn decode_slot(key: &str, bytes: &[u8]) -> Result<ReadSlot> {
    format::check_header(key, MAGIC_KEYSLOT, bytes)?;
    let corrupt = |reason: String| RepoError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let slot = KeySlot::from_bytes(&bytes[10..]).map_err(|e| corrupt(e.to_string()))?;
    match slot.checksum_matches() {
        Some(false) => Err(corrupt(
            "its checksum does not match: the slot changed after it was written".into(),
        )),
        Some(true) => Ok(ReadSlot {
            slot,
            checked: true,
        }),
        None => Ok(ReadSlot {
            slot,
            checked: false,
        }),
    }
}

impl Repository {
    /// Creates a repository in an empty store, with one key slot for `credential`.
    pub fn init(
        storage: DynStorage,
        rt: Handle,
        credential: &Credential,
        options: &InitOptions,
    ) -> Result<Repository> {
        options
            .chunker
            .validate()
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        if options.pack_size < (1 << 20) || options.pack_size > (1 << 30) {
            return Err(RepoError::Invalid(format!(
                "pack size {} is out of range: use 1 MiB to 1 GiB",
                options.pack_size
            )));
        }
        if !(0..=19).contains(&options.compression_level) {
            return Err(RepoError::Invalid(format!(
                "compression level {} is out of range: use 0 (none) to 19",
                options.compression_level
            )));
        }
        let location = storage.location();
        let exists = rt.block_on(storage.stat(CONFIG))?.is_some()
            || !rt
                .block_on(storage.list(FileType::KeySlot.prefix()))?
                .is_empty();
        if exists {
            return Err(RepoError::AlreadyExists { location });
        }
        let now = now_unix();
        let master = Key::generate()?;
        let keyring = Keyring::generate(now)?;
        let mut id = [0u8; 16];
        lifeboat_crypto::fill_random(&mut id)?;
        let config = RepoConfig {
            version: 1,
            id: hex::encode(id),
            created: Timestamp::now(),
            chunker: options.chunker,
            pack_size: options.pack_size,
            compression_level: options.compression_level,
        };
        let slot = KeySlot::create(
            &master,
            &credential.secret,
            credential.source,
            credential.kdf(&options.passphrase_kdf),
            "initial",
            now,
        )?;
        // The key slot and keyring first, the config last: a repository is
        // initialised once its config exists, never half.
        rt.block_on(storage.put(&slot_key(&slot.id), Bytes::from(encode_slot(&slot))))?;
        let ring = format::seal_object(MAGIC_KEYRING, 0, &master, &keyring.to_bytes())?;
        rt.block_on(storage.put(KEYRING, Bytes::from(ring)))?;
        let cfg_json = serde_json::to_vec(&config).map_err(|e| RepoError::Failed(e.to_string()))?;
        let cfg = format::seal_object(MAGIC_CONFIG, 0, &master, &cfg_json)?;
        rt.block_on(storage.put(CONFIG, Bytes::from(cfg)))?;
        Ok(Repository {
            inner: Arc::new(Inner {
                storage,
                rt,
                keyring,
                config,
                audit: Default::default(),
            }),
            master,
            slot_id: slot.id,
            damaged_slots: Vec::new(),
            index_cache: IndexCacheConfig::default(),
            compressors: None,
        })
    }

    /// Opens a repository with the first of `credentials` that opens a key slot.
    pub fn open(storage: DynStorage, rt: Handle, credentials: &[Credential]) -> Result<Repository> {
        let location = storage.location();
        let config_bytes = match rt.block_on(storage.get(CONFIG)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(RepoError::NoRepository { location }),
            Err(e) => return Err(e.into()),
        };
        if credentials.is_empty() {
            return Err(RepoError::NoSecret { location });
        }
        let mut slots = Vec::new();
        let mut damaged: Vec<(String, String)> = Vec::new();
        let mut newer: Vec<RepoError> = Vec::new();
        for obj in rt.block_on(storage.list(FileType::KeySlot.prefix()))? {
            let bytes = rt.block_on(storage.get(&obj.key))?;
            match decode_slot(&obj.key, &bytes) {
                Ok(s) => slots.push(s),
                Err(RepoError::Corrupt { key, reason }) => damaged.push((key, reason)),
                // A slot of a newer format: this build cannot use it, the
                // others may still open the repository.
                Err(e @ RepoError::UnknownVersion { .. }) => newer.push(e),
                Err(e) => return Err(e),
            }
        }
        // Cheap key-material slots first, then the Argon2id ones.
        let mut opened = None;
        'outer: for cred in credentials {
            for slot in slots
                .iter()
                .map(|s| &s.slot)
                .filter(|s| s.source.is_key_material() == cred.source.is_key_material())
            {
                if let Ok(master) = slot.open(&cred.secret) {
                    opened = Some((master, slot.id.clone()));
                    break 'outer;
                }
            }
        }
        let Some((master, slot_id)) = opened else {
            let given = credentials
                .iter()
                .map(|c| {
                    if c.source.is_key_material() {
                        "key"
                    } else {
                        "password"
                    }
                })
                .collect::<Vec<_>>()
                .join(" and ");
            if let Some(e) = newer.into_iter().next() {
                return Err(e);
            }
            if !damaged.is_empty() {
                return Err(RepoError::DamagedKeySlots {
                    location,
                    intact: slots.len(),
                    given,
                    damaged: damaged
                        .iter()
                        .map(|(k, r)| format!("{k} ({r})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            return Err(RepoError::WrongSecret {
                location,
                slots: slots.len(),
                given,
                unchecked: slots.iter().filter(|s| !s.checked).count(),
            });
        };
        let ring_bytes = rt.block_on(storage.get(KEYRING))?;
        let ring = format::open_object(KEYRING, MAGIC_KEYRING, &ring_bytes, &master, None)?;
        let keyring = Keyring::from_bytes(&ring).map_err(|e| RepoError::Corrupt {
            key: KEYRING.into(),
            reason: e.to_string(),
        })?;
        let cfg = format::open_object(CONFIG, MAGIC_CONFIG, &config_bytes, &master, None)?;
        let config: RepoConfig = serde_json::from_slice(&cfg).map_err(|e| RepoError::Corrupt {
            key: CONFIG.into(),
            reason: e.to_string(),
        })?;
        Ok(Repository {
            inner: Arc::new(Inner {
                storage,
                rt,
                keyring,
                config,
                audit: Default::default(),
            }),
            master,
            slot_id,
            damaged_slots: damaged,
            index_cache: IndexCacheConfig::default(),
            compressors: None,
        })
    }

    /// Makes the repository one that only prune-aware builds open (config
    /// envelope version [`format::CONFIG_VERSION`]): called by a prune
    /// before it marks anything, so no older build can deduplicate against
    /// packs it deletes. Idempotent; one put, atomic.
    pub(crate) fn ensure_prune_format(&self) -> Result<()> {
        let bytes = self.block(self.inner.storage.get(CONFIG))?;
        format::check_header(CONFIG, MAGIC_CONFIG, &bytes)?;
        if format::header_version(&bytes) >= format::CONFIG_VERSION {
            return Ok(());
        }
        let json = format::open_object(CONFIG, MAGIC_CONFIG, &bytes, &self.master, None)?;
        let sealed = format::seal_object(MAGIC_CONFIG, 0, &self.master, &json)?;
        self.block(self.inner.storage.put(CONFIG, Bytes::from(sealed)))?;
        Ok(())
    }

    /// The same repository (keys, config) over another store: a replica,
    /// which holds the same objects. No index cache (it would be keyed by
    /// the same repository id as the primary's).
    pub(crate) fn view(&self, storage: DynStorage) -> Repository {
        Repository {
            inner: Arc::new(Inner {
                storage,
                rt: self.inner.rt.clone(),
                keyring: self.inner.keyring.clone(),
                config: self.inner.config.clone(),
                audit: Default::default(),
            }),
            master: self.master.clone(),
            slot_id: self.slot_id.clone(),
            damaged_slots: Vec::new(),
            index_cache: IndexCacheConfig {
                dir: None,
                min_chunks: INDEX_CACHE_MIN_CHUNKS,
            },
            compressors: self.compressors,
        }
    }

    /// The repository's settings.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// Where the repository lives.
    pub fn location(&self) -> String {
        self.inner.storage.location()
    }

    /// The storage under the repository.
    pub fn storage(&self) -> &DynStorage {
        &self.inner.storage
    }

    /// The keyring's epochs: (number, created unix seconds).
    pub fn key_epochs(&self) -> Vec<(u32, i64)> {
        self.inner
            .keyring
            .epochs()
            .iter()
            .map(|e| (e.number, e.created_unix))
            .collect()
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.inner.block(f)
    }

    pub(crate) fn master_key(&self) -> &Key {
        &self.master
    }

    /// The id of the key slot this session opened with.
    pub fn opened_slot(&self) -> &str {
        &self.slot_id
    }

    /// Every key slot that reads; damaged ones are left out (see
    /// [`Repository::damaged_key_slots`]).
    pub fn key_slots(&self) -> Result<Vec<KeySlot>> {
        let mut out = Vec::new();
        for obj in self.block(self.inner.storage.list(FileType::KeySlot.prefix()))? {
            let bytes = self.block(self.inner.storage.get(&obj.key))?;
            match decode_slot(&obj.key, &bytes) {
                Ok(s) => out.push(s.slot),
                Err(RepoError::Corrupt { .. } | RepoError::UnknownVersion { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|s| s.created_unix);
        Ok(out)
    }

    /// The key slots found damaged when the repository was opened: (key,
    /// what is wrong). The repository opened with another one.
    pub fn damaged_slots_at_open(&self) -> &[(String, String)] {
        &self.damaged_slots
    }

    /// The key slots whose object is damaged: (key, what is wrong).
    pub fn damaged_key_slots(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for obj in self.block(self.inner.storage.list(FileType::KeySlot.prefix()))? {
            let bytes = self.block(self.inner.storage.get(&obj.key))?;
            if let Err(RepoError::Corrupt { key, reason }) = decode_slot(&obj.key, &bytes) {
                out.push((key, reason));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Adds a key slot that opens with `credential`.
    pub fn add_key_slot(
        &self,
        credential: &Credential,
        label: &str,
        passphrase_kdf: &Kdf,
    ) -> Result<KeySlot> {
        let slot = KeySlot::create(
            &self.master,
            &credential.secret,
            credential.source,
            credential.kdf(passphrase_kdf),
            label,
            now_unix(),
        )?;
        self.block(
            self.inner
                .storage
                .put(&slot_key(&slot.id), Bytes::from(encode_slot(&slot))),
        )?;
        Ok(slot)
    }

    /// Removes the key slot whose id starts with `id_prefix`. The last slot is
    /// never removed.
    pub fn remove_key_slot(&self, id_prefix: &str) -> Result<KeySlot> {
        let slots = self.key_slots()?;
        let matching: Vec<_> = slots
            .iter()
            .filter(|s| s.id.starts_with(id_prefix))
            .collect();
        let slot = match matching.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(RepoError::KeySlotNotFound(id_prefix.to_string())),
            _ => {
                return Err(RepoError::Invalid(format!(
                    "{id_prefix:?} matches {} key slots; give more characters",
                    matching.len()
                )))
            }
        };
        if slots.len() <= 1 {
            return Err(RepoError::LastKeySlot);
        }
        self.block(self.inner.storage.delete(&slot_key(&slot.id)))?;
        Ok(slot)
    }

    /// Adds a data-key epoch: new data is sealed with a fresh key, old data
    /// stays readable, nothing is re-uploaded. Returns the new epoch number.
    pub fn rotate_data_key(&mut self) -> Result<u32> {
        let mut keyring = self.inner.keyring.clone();
        let number = keyring.rotate(now_unix())?;
        let ring = format::seal_object(MAGIC_KEYRING, 0, &self.master, &keyring.to_bytes())?;
        self.block(self.inner.storage.put(KEYRING, Bytes::from(ring)))?;
        self.inner = Arc::new(Inner {
            storage: self.inner.storage.clone(),
            rt: self.inner.rt.clone(),
            keyring,
            config: self.inner.config.clone(),
            audit: self.inner.audit.clone(),
        });
        Ok(number)
    }

    /// Fetches many objects concurrently (bounded by the storage's limit).
    pub(crate) fn get_many(&self, keys: &[String]) -> Vec<Result<Bytes, StorageError>> {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                let s = self.inner.storage.clone();
                let k = k.clone();
                self.inner.rt.spawn(async move { s.get(&k).await })
            })
            .collect();
        handles
            .into_iter()
            .zip(keys)
            .map(|(h, k)| {
                self.block(h).unwrap_or_else(|e| {
                    Err(StorageError::new(
                        lifeboat_storage::ErrorKind::Permanent,
                        "get",
                        k,
                        &self.location(),
                        format!("task failed: {e}"),
                    ))
                })
            })
            .collect()
    }

    /// Loads every index object that reads. A damaged one is left out (and
    /// logged): a restore then fails only if it needs a chunk only that
    /// object listed, and says to run `verify` and `repair index`; one
    /// deleted since the listing (a prune) is skipped.
    ///
    /// A chunk stored in several packs is located in one a prune has not
    /// marked for deletion whenever there is one: the marks are listed
    /// first, and their packs added last (the index keeps a chunk's first
    /// location). A marked pack is then only read for a chunk no other pack
    /// holds (a snapshot written while the mark was made, which the next
    /// prune indexes again).
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_marked(&crate::prune::marked_packs(&self.marks()?))
    }

    /// [`Repository::load_index`] with the marked packs already listed.
    pub(crate) fn load_index_marked(
        &self,
        marked: &std::collections::HashSet<lifeboat_types::PackId>,
    ) -> Result<Index> {
        let mut listed: Vec<(String, u64)> = self
            .block(self.inner.storage.list(FileType::Index.prefix()))?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        listed.sort();
        let keys: Vec<String> = listed.iter().map(|(k, _)| k.clone()).collect();
        let path = self.index_cache_path();
        if let Some(path) = &path {
            match crate::index_cache::CacheFile::open(path) {
                Ok(file) => {
                    let same_marks = file.marks_hash() == &crate::index_cache::marks_hash(marked);
                    let gone = file
                        .sources()
                        .iter()
                        .any(|s| keys.binary_search(s).is_err());
                    let (new, new_bytes): (Vec<String>, Vec<u64>) = listed
                        .iter()
                        .filter(|(k, _)| file.sources().binary_search(k).is_err())
                        .cloned()
                        .unzip();
                    if same_marks
                        && !gone
                        && new.len() <= INDEX_CACHE_OVERLAY_MAX
                        && new_bytes.iter().sum::<u64>() <= INDEX_CACHE_OVERLAY_MAX_BYTES
                    {
                        let mut index = Index::from_cache(file, marked.clone());
                        // Unmarked packs first: a chunk keeps the first
                        // location it is found at.
                        let mut later = Vec::new();
                        for r in self.stream_index_objects(&new) {
                            for ip in r?.1 {
                                if marked.contains(&ip.pack) {
                                    later.push(ip);
                                } else {
                                    index.add_pack(ip.pack, ip.epoch, &ip.entries);
                                }
                            }
                        }
                        index.add_all(&later);
                        return Ok(index);
                    }
                }
                Err(RepoError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding the local index cache");
                }
            }
            match crate::index_cache::build(
                path,
                self.stream_index_objects(&keys),
                marked,
                INDEX_CACHE_RUN,
                self.index_cache.min_chunks,
            ) {
                Ok(built) => return Ok(Index::from_built(built, marked.clone())),
                Err(RepoError::Io { op, path, source }) => {
                    tracing::warn!(%path, %op, error = %source, "cannot write the local index cache; holding the index in memory");
                }
                Err(e) => return Err(e),
            }
        }
        let built = crate::index_cache::build(
            std::path::Path::new("unused"),
            self.stream_index_objects(&keys),
            marked,
            usize::MAX,
            usize::MAX,
        )?;
        Ok(Index::from_built(built, marked.clone()))
    }

    /// Where the index cache file of this repository is, if it has one.
    pub fn index_cache_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.index_cache.dir.as_ref()?;
        let id = &self.inner.config.id;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return None;
        }
        Some(dir.join(id).join("index"))
    }

    /// Sets how many threads compress and seal a backup's chunks (default:
    /// one per core). Each fills packs of its own, so with one the packs
    /// follow the order the chunks came in: what tests of pack layouts
    /// need, and a host that must leave cores to its database may want.
    pub fn set_compressors(&mut self, n: usize) {
        self.compressors = Some(n.max(1));
    }

    /// Sets where the local index cache lives (`None`: always in memory)
    /// and the number of chunks from which the index goes there. The
    /// default is [`default_cache_dir`] and [`INDEX_CACHE_MIN_CHUNKS`].
    pub fn set_index_cache(&mut self, dir: Option<std::path::PathBuf>, min_chunks: usize) {
        self.index_cache = IndexCacheConfig { dir, min_chunks };
    }

    /// Reads index objects a batch at a time, in `keys`' order. Gone or
    /// damaged ones are skipped (a damaged one with a warning).
    fn stream_index_objects<'a>(
        &'a self,
        keys: &'a [String],
    ) -> impl Iterator<Item = Result<(String, Vec<format::IndexedPack>)>> + 'a {
        keys.chunks(INDEX_READ_BATCH).flat_map(move |batch| {
            let got = self.get_many(batch);
            let mut out = Vec::with_capacity(batch.len());
            for (key, bytes) in batch.iter().zip(got) {
                match bytes
                    .map_err(RepoError::from)
                    .and_then(|b| self.decode_index(key, &b))
                {
                    Ok(p) => out.push(Ok((key.clone(), p))),
                    Err(RepoError::Storage(e)) if e.is_not_found() => {}
                    Err(e @ RepoError::Corrupt { .. }) => {
                        tracing::warn!(%key, error = %e, "skipping a damaged index object; `lifeboat repair index` rebuilds it");
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            out
        })
    }

    /// Reads and decodes every index object, each result separately.
    pub(crate) fn read_indexes(&self) -> Result<Vec<(String, Result<Vec<format::IndexedPack>>)>> {
        let keys: Vec<String> = self
            .block(self.inner.storage.list(FileType::Index.prefix()))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for (key, bytes) in keys.iter().zip(self.get_many(&keys)) {
            let parsed = bytes
                .map_err(RepoError::from)
                .and_then(|b| self.decode_index(key, &b));
            out.push((key.clone(), parsed));
        }
        Ok(out)
    }

    /// Every stored pack and its size.
    pub(crate) fn stored_packs(
        &self,
    ) -> Result<std::collections::HashMap<lifeboat_types::PackId, u64>> {
        Ok(self
            .block(self.inner.storage.list(FileType::Pack.prefix()))?
            .into_iter()
            .filter_map(|o| {
                let id: lifeboat_types::PackId = o.key.rsplit('/').next()?.parse().ok()?;
                Some((id, o.size))
            })
            .collect())
    }

    /// Opens and decodes one stored index object.
    pub(crate) fn decode_index(&self, key: &str, bytes: &[u8]) -> Result<Vec<format::IndexedPack>> {
        let body = format::open_object(
            key,
            format::MAGIC_INDEX,
            bytes,
            &self.master,
            Some(&self.inner.keyring),
        )?;
        let body = format::decompress(key, &body, body.len())?;
        format::decode_index(key, &body)
    }

    /// Stores a snapshot and returns its id. Call only once everything it
    /// references is durably stored and indexed.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let json = serde_json::to_vec(snapshot).map_err(|e| RepoError::Failed(e.to_string()))?;
        let body = format::compress(&json, 3);
        let epoch = self.inner.keyring.current();
        let obj = format::seal_object(MAGIC_SNAPSHOT, epoch.number, &epoch.key, &body)?;
        let id = SnapshotId(*blake3::hash(&obj).as_bytes());
        lifeboat_types::failpoint!("before-snapshot-stored");
        self.block(
            self.inner
                .storage
                .put(&ObjectKey::Snapshot(id).to_string(), Bytes::from(obj)),
        )?;
        self.note_written(id);
        Ok(id)
    }

    pub(crate) fn decode_snapshot(&self, key: &str, bytes: &[u8]) -> Result<Snapshot> {
        let body = format::open_object(
            key,
            MAGIC_SNAPSHOT,
            bytes,
            &self.master,
            Some(&self.inner.keyring),
        )?;
        let json = format::decompress_document(key, &body)?;
        // One parse. A newer document is refused by its version, whether or
        // not it parses as this build's; only when it does not parse is the
        // version looked up on its own, to say which it is.
        #[derive(serde::Deserialize)]
        struct Version {
            version: u32,
        }
        let newer = |found: u32| RepoError::UnknownVersion {
            key: key.to_string(),
            what: "snapshot document",
            found: u16::try_from(found).unwrap_or(u16::MAX),
            supported: crate::snapshot::SNAPSHOT_VERSION as u16,
        };
        match serde_json::from_slice::<Snapshot>(&json) {
            Ok(s) if s.version > crate::snapshot::SNAPSHOT_VERSION => Err(newer(s.version)),
            Ok(mut s) => {
                s.upgrade();
                s.loaded_as = key
                    .strip_prefix(FileType::Snapshot.prefix())
                    .and_then(|id| id.parse().ok());
                Ok(s)
            }
            Err(e) => match serde_json::from_slice::<Version>(&json) {
                Ok(v) if v.version > crate::snapshot::SNAPSHOT_VERSION => Err(newer(v.version)),
                _ => Err(RepoError::Corrupt {
                    key: key.to_string(),
                    reason: format!("snapshot document does not parse: {e}"),
                }),
            },
        }
    }

    /// Reads the snapshots `ids` (8 at a time, in parallel) and calls `f`
    /// with each id, key, snapshot and stored size, in order; one deleted
    /// since it was listed (forgotten) is skipped. Holds at most 8 stored and one decoded in memory (a big base backup lists millions of chunks).
    pub(crate) fn for_each_snapshot(
        &self,
        ids: &[SnapshotId],
        mut f: impl FnMut(SnapshotId, String, Snapshot, usize) -> Result<()>,
    ) -> Result<()> {
        for batch in ids.chunks(8) {
            let keys: Vec<String> = batch
                .iter()
                .map(|id| ObjectKey::Snapshot(*id).to_string())
                .collect();
            let fetched = self.get_many(&keys);
            for ((id, key), bytes) in batch.iter().zip(keys).zip(fetched) {
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let snap = self.decode_snapshot(&key, &bytes)?;
                f(*id, key, snap, bytes.len())?;
            }
        }
        Ok(())
    }

    /// Every snapshot id, without reading the snapshots.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let mut ids = Vec::new();
        for obj in self.block(self.inner.storage.list(FileType::Snapshot.prefix()))? {
            let name = obj.key.trim_start_matches(FileType::Snapshot.prefix());
            match name.parse() {
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!(key = %obj.key, "ignoring a stray object among snapshots"),
            }
        }
        Ok(ids)
    }

    /// Every snapshot, oldest first, each result separately (a damaged snapshot
    /// does not hide the others).
    pub fn read_snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let ids = self.snapshot_ids()?;
        let keys: Vec<String> = ids
            .iter()
            .map(|id| ObjectKey::Snapshot(*id).to_string())
            .collect();
        let mut out: Vec<(SnapshotId, Result<Snapshot>)> = ids
            .iter()
            .zip(&keys)
            .zip(self.get_many(&keys))
            .map(|((id, key), bytes)| {
                let snap = bytes
                    .map_err(RepoError::from)
                    .and_then(|b| self.decode_snapshot(key, &b));
                (*id, snap)
            })
            .collect();
        out.sort_by(|a, b| {
            let ta = a.1.as_ref().map(|s| s.start_time).ok();
            let tb = b.1.as_ref().map(|s| s.start_time).ok();
            ta.cmp(&tb).then(a.0.cmp(&b.0))
        });
        Ok(out)
    }

    /// Every snapshot, oldest first; fails on the first damaged one. One
    /// deleted since the listing (`forget` running meanwhile) is left out:
    /// a backup choosing its parent, or a listing, must not fail on it.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        self.read_snapshots()?
            .into_iter()
            .filter_map(|(id, s)| match s {
                Err(RepoError::Storage(e)) if e.is_not_found() => None,
                s => Some(s.map(|snapshot| SnapshotEntry { id, snapshot })),
            })
            .collect()
    }

    /// The snapshot `spec` names, where `latest` means the newest of source
    /// kind `kind` (`None` when the repository has none of that kind).
    pub fn find_snapshot_of(&self, spec: &str, kind: &str) -> Result<Option<SnapshotEntry>> {
        if spec == "latest" {
            return Ok(self
                .snapshots()?
                .into_iter()
                .rev()
                .find(|s| s.snapshot.source_kind == kind));
        }
        self.find_snapshot(spec).map(Some)
    }

    /// The snapshot `spec` names: a full id, a unique id prefix, or `latest`.
    pub fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        let id = if spec == "latest" {
            let all = self.snapshots()?;
            return all
                .into_iter()
                .next_back()
                .ok_or_else(|| RepoError::SnapshotNotFound {
                    spec: spec.to_string(),
                });
        } else {
            let spec_l = spec.to_ascii_lowercase();
            let ids: Vec<_> = self
                .snapshot_ids()?
                .into_iter()
                .filter(|id| id.to_hex().starts_with(&spec_l))
                .collect();
            match (spec_l.is_empty(), ids.as_slice()) {
                (false, [one]) => *one,
                (false, []) | (true, _) => {
                    return Err(RepoError::SnapshotNotFound {
                        spec: spec.to_string(),
                    })
                }
                (false, many) => {
                    return Err(RepoError::AmbiguousSnapshot {
                        spec: spec.to_string(),
                        count: many.len(),
                    })
                }
            }
        };
        let key = ObjectKey::Snapshot(id).to_string();
        let bytes = self.block(self.inner.storage.get(&key))?;
        Ok(SnapshotEntry {
            id,
            snapshot: self.decode_snapshot(&key, &bytes)?,
        })
    }
}
