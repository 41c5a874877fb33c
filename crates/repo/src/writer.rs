//! The deduplicating writer: chunks in, sealed packs and index objects out.
//!
//! Callers (any number of threads) hand chunks to [`Writer::write_chunk`]. A
//! chunk whose id is already indexed, or already claimed by this writer, costs
//! nothing more. New chunks go through a bounded channel to compressor threads,
//! each of which compresses and seals them into its own open pack (no lock,
//! one copy). Full packs go to the
//! uploader thread, which uploads several at once on the async runtime and,
//! every few packs and at the end, writes an index object listing the packs it
//! has durably stored. An index object therefore never names a pack that is not
//! stored, and a killed backup leaves indexed packs the next backup reuses.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use lifeboat_chunker::is_zero;
use lifeboat_types::{ChunkId, IndexId};

use crate::error::{RepoError, Result};
use crate::format::{self, IndexedPack, PackBuilder, MAGIC_INDEX};
use crate::index::Index;
use crate::keys::ObjectKey;
use crate::parallel::lock;
use crate::repository::Inner;
use crate::snapshot::ContentRef;

/// Packs in one index object at most; a killed backup loses at most this many
/// packs' worth of reuse.
const PACKS_PER_INDEX: usize = 4;
/// Pack uploads in flight at once.
const UPLOADS_IN_FLIGHT: usize = 2;
/// Zero chunks at least this long are stored as holes.
const MIN_HOLE: usize = 4096;

/// True when `data` is restored as a hole rather than stored.
pub(crate) fn is_hole(data: &[u8]) -> bool {
    data.len() >= MIN_HOLE && is_zero(data)
}

#[derive(Default)]
pub(crate) struct Counters {
    pub chunks: AtomicU64,
    pub chunks_new: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_stored: AtomicU64,
    pub packs: AtomicU64,
}

struct Shared {
    inner: Arc<Inner>,
    index: Arc<Index>,
    claimed: Mutex<HashSet<ChunkId>>,
    /// Pack buffers back from finished uploads. Reusing them keeps peak memory
    /// flat: fresh 16 MiB buffers freed on another thread pile up in glibc's
    /// per-thread arenas.
    buffers: Mutex<Vec<Vec<u8>>>,
    error: Mutex<Option<RepoError>>,
    counters: Counters,
}

// A thread that panicked holding one of these locks does not lose what is
// behind it: an error recorded stays recorded (and fails the backup), a
// claimed chunk stays claimed (and is stored once).
impl Shared {
    fn fail(&self, e: RepoError) {
        lock(&self.error).get_or_insert(e);
    }

    fn failed(&self) -> bool {
        lock(&self.error).is_some()
    }

    fn take_buffer(&self, capacity: usize) -> Vec<u8> {
        lock(&self.buffers)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    fn return_buffer(&self, buf: Vec<u8>) {
        let mut b = lock(&self.buffers);
        if b.len() < UPLOADS_IN_FLIGHT + 2 {
            b.push(buf);
        }
    }

    fn take_error(&self) -> Option<RepoError> {
        lock(&self.error).take()
    }
}

type FinishedPack = (lifeboat_types::PackId, u32, Vec<u8>, Vec<format::BlobEntry>);

/// Writes chunks into packs; see the module documentation.
pub struct Writer {
    shared: Arc<Shared>,
    chunk_tx: Option<Sender<(ChunkId, Vec<u8>)>>,
    pack_tx: Option<Sender<FinishedPack>>,
    compressors: Vec<JoinHandle<()>>,
    uploader: Option<JoinHandle<Vec<IndexedPack>>>,
}

/// What a writer stored.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    /// Chunks written (deduplicated or not).
    pub chunks: u64,
    /// Chunks that were new.
    pub chunks_new: u64,
    /// Plaintext bytes of new chunks.
    pub bytes_new: u64,
    /// Bytes uploaded: packs and index objects.
    pub bytes_stored: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// The packs this writer stored and indexed.
    pub indexed: Vec<IndexedPack>,
}

impl Writer {
    pub(crate) fn new(inner: Arc<Inner>, index: Arc<Index>, compressors: Option<usize>) -> Writer {
        let threads = compressors.unwrap_or_else(crate::parallel::cores);
        let (chunk_tx, chunk_rx) = bounded::<(ChunkId, Vec<u8>)>(threads * 2);
        // A rendezvous channel: a compressor hands a full pack straight to the
        // uploader, so no pack waits in between (each is 16 MiB of memory).
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        let shared = Arc::new(Shared {
            inner,
            index,
            claimed: Mutex::new(HashSet::new()),
            buffers: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            counters: Counters::default(),
        });
        let compressors = (0..threads)
            .map(|_| {
                let shared = shared.clone();
                let rx = chunk_rx.clone();
                let tx = pack_tx.clone();
                std::thread::spawn(move || compress_loop(&shared, &rx, &tx))
            })
            .collect();
        let uploader = {
            let shared = shared.clone();
            std::thread::spawn(move || upload_loop(&shared, &pack_rx))
        };
        Writer {
            shared,
            chunk_tx: Some(chunk_tx),
            pack_tx: Some(pack_tx),
            compressors,
            uploader: Some(uploader),
        }
    }

    /// Stores one chunk (unless the repository has it) and returns its reference.
    /// Zero-filled chunks become holes and are not stored.
    pub fn write_chunk(&self, data: Vec<u8>) -> Result<ContentRef> {
        let len = data.len() as u64;
        if is_hole(&data) {
            return Ok(ContentRef::plain(None, len));
        }
        let id = self.shared.inner.keyring.chunk_id(&data);
        self.store(id, data)?;
        Ok(ContentRef::plain(Some(id), len))
    }

    /// Stores a chunk whose id the caller computed (unless the repository
    /// has it).
    pub(crate) fn store(&self, id: ChunkId, data: Vec<u8>) -> Result<()> {
        let len = data.len() as u64;
        self.shared.counters.chunks.fetch_add(1, Ordering::Relaxed);
        if !self.shared.index.contains(&id) {
            let fresh = lock(&self.shared.claimed).insert(id);
            if fresh {
                self.shared
                    .counters
                    .chunks_new
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .counters
                    .bytes_new
                    .fetch_add(len, Ordering::Relaxed);
                let sent = self
                    .chunk_tx
                    .as_ref()
                    .map(|tx| tx.send((id, data)).is_ok())
                    .unwrap_or(false);
                if !sent {
                    return Err(self.error_or("the writer stopped"));
                }
            }
        }
        if self.shared.failed() {
            return Err(self.error_or("the writer stopped"));
        }
        Ok(())
    }

    /// Counts a piece referenced again without being stored (the parent's).
    pub(crate) fn reused(&self) {
        self.shared.counters.chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// The repository's keyring (chunk ids).
    pub(crate) fn keyring(&self) -> &lifeboat_crypto::Keyring {
        &self.shared.inner.keyring
    }

    /// True when the repository's index lists `id`, so a piece may be built on it.
    pub(crate) fn indexed(&self, id: &ChunkId) -> bool {
        self.shared.index.contains(id)
    }

    fn error_or(&self, what: &str) -> RepoError {
        self.shared
            .take_error()
            .unwrap_or_else(|| RepoError::Failed(what.to_string()))
    }

    /// Flushes the open pack, waits for every upload and the last index object,
    /// and reports what was stored. Only after this returns `Ok` may a snapshot
    /// reference the chunks written.
    pub fn finish(mut self) -> Result<WriteStats> {
        drop(self.chunk_tx.take());
        for h in self.compressors.drain(..) {
            if h.join().is_err() {
                self.shared
                    .fail(RepoError::Failed("a compressor thread panicked".into()));
            }
        }
        drop(self.pack_tx.take());
        let indexed = match self.uploader.take().map(|h| h.join()) {
            Some(Ok(indexed)) => indexed,
            _ => {
                self.shared
                    .fail(RepoError::Failed("the uploader thread panicked".into()));
                Vec::new()
            }
        };
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        let c = &self.shared.counters;
        Ok(WriteStats {
            chunks: c.chunks.load(Ordering::Relaxed),
            chunks_new: c.chunks_new.load(Ordering::Relaxed),
            bytes_new: c.bytes_new.load(Ordering::Relaxed),
            bytes_stored: c.bytes_stored.load(Ordering::Relaxed),
            packs: c.packs.load(Ordering::Relaxed),
            indexed,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // An abandoned writer (an error elsewhere) still stops its threads.
        drop(self.chunk_tx.take());
        for h in self.compressors.drain(..) {
            let _ = h.join();
        }
        drop(self.pack_tx.take());
        if let Some(h) = self.uploader.take() {
            let _ = h.join();
        }
    }
}

fn compress_loop(shared: &Shared, rx: &Receiver<(ChunkId, Vec<u8>)>, tx: &Sender<FinishedPack>) {
    let inner = &shared.inner;
    let epoch = inner.keyring.current();
    let level = inner.config.compression_level;
    let pack_size = inner.config.pack_size as usize;
    // Room for a full pack plus one more chunk at its worst (zstd's bound), so
    // the buffer never grows (a grown buffer is a second copy of the pack).
    let max_chunk = inner.config.chunker.max_chunk();
    let capacity = pack_size + max_chunk + max_chunk / 64 + 4096;
    let send = |pack: PackBuilder| match pack.finish(&epoch.key) {
        Ok((id, bytes, entries)) => {
            if tx.send((id, epoch.number, bytes, entries)).is_err() {
                shared.fail(RepoError::Failed("the uploader stopped".into()));
            }
        }
        Err(e) => shared.fail(e),
    };
    // Each compressor fills a pack of its own, so sealing needs no lock.
    let mut pack: Option<PackBuilder> = None;
    for (id, data) in rx.iter() {
        if shared.failed() {
            continue;
        }
        let p = pack.get_or_insert_with(|| {
            PackBuilder::with_buffer(epoch.number, shared.take_buffer(capacity))
        });
        if let Err(e) = p.push_chunk(&epoch.key, id, &data, level) {
            shared.fail(e);
            continue;
        }
        if p.len() >= pack_size {
            if let Some(full) = pack.take() {
                send(full);
            }
        }
    }
    if let Some(last) = pack.take().filter(|p| !p.is_empty()) {
        if !shared.failed() {
            send(last);
        }
    }
}

/// A pack upload under way: the task, what the pack holds, its size.
struct Upload {
    handle: tokio::task::JoinHandle<Result<(), lifeboat_storage::StorageError>>,
    pack: IndexedPack,
    size: u64,
    /// Our reference to the uploaded bytes, to recycle the buffer afterwards.
    bytes: Bytes,
}

fn upload_loop(shared: &Shared, rx: &Receiver<FinishedPack>) -> Vec<IndexedPack> {
    let inner = &shared.inner;
    let mut in_flight: VecDeque<Upload> = VecDeque::new();
    let mut pending: Vec<IndexedPack> = Vec::new();
    let mut all: Vec<IndexedPack> = Vec::new();

    let complete_one = |in_flight: &mut VecDeque<_>, pending: &mut Vec<IndexedPack>| {
        let Some(Upload {
            handle,
            pack: packed,
            size,
            bytes,
        }) = in_flight.pop_front()
        else {
            return;
        };
        match inner.block(handle) {
            Ok(Ok(())) => {
                lifeboat_types::failpoint!("after-pack-stored");
                if let Ok(unique) = bytes.try_into_mut() {
                    shared.return_buffer(unique.into());
                }
                shared.counters.packs.fetch_add(1, Ordering::Relaxed);
                shared
                    .counters
                    .bytes_stored
                    .fetch_add(size, Ordering::Relaxed);
                pending.push(packed);
            }
            Ok(Err(e)) => shared.fail(e.into()),
            Err(e) => shared.fail(RepoError::Failed(format!("upload task failed: {e}"))),
        }
    };

    let flush_index = |pending: &mut Vec<IndexedPack>, all: &mut Vec<IndexedPack>| {
        if pending.is_empty() || shared.failed() {
            return;
        }
        match write_index(inner, pending) {
            Ok(size) => {
                shared
                    .counters
                    .bytes_stored
                    .fetch_add(size, Ordering::Relaxed);
                all.append(pending);
            }
            Err(e) => shared.fail(e),
        }
    };

    for (id, epoch, bytes, entries) in rx.iter() {
        if shared.failed() {
            continue;
        }
        let size = bytes.len() as u64;
        let storage = inner.storage.clone();
        let key = format::pack_key(&id);
        let bytes = Bytes::from(bytes);
        let ours = bytes.clone();
        let handle = inner
            .rt
            .spawn(async move { storage.put(&key, bytes).await });
        in_flight.push_back(Upload {
            handle,
            pack: IndexedPack {
                pack: id,
                epoch,
                entries,
            },
            size,
            bytes: ours,
        });
        while in_flight.len() >= UPLOADS_IN_FLIGHT {
            complete_one(&mut in_flight, &mut pending);
        }
        if pending.len() >= PACKS_PER_INDEX {
            flush_index(&mut pending, &mut all);
        }
    }
    while !in_flight.is_empty() {
        complete_one(&mut in_flight, &mut pending);
    }
    flush_index(&mut pending, &mut all);
    all
}

/// Seals and stores an index object for `packs`; returns its stored size.
pub(crate) fn write_index(inner: &Inner, packs: &[IndexedPack]) -> Result<u64> {
    // Index bodies are ids and offsets: random bytes that do not compress.
    let body = format::compress(&format::encode_index(packs), 0);
    let epoch = inner.keyring.current();
    let obj = format::seal_object(MAGIC_INDEX, epoch.number, &epoch.key, &body)?;
    let id = IndexId(*blake3::hash(&obj).as_bytes());
    let size = obj.len() as u64;
    inner.block(
        inner
            .storage
            .put(&ObjectKey::Index(id).to_string(), Bytes::from(obj)),
    )?;
    lifeboat_types::failpoint!("after-index-stored");
    Ok(size)
}
