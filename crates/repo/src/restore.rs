//! Restoring snapshots to a directory or a stream.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use filetime::FileTime;
use lifeboat_types::ChunkId;

use crate::error::{RepoError, Result};
use crate::format;
use crate::index::{Index, Location};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sink::{sync_filesystem, DirectMode, FileSink};
use crate::snapshot::{ContentRef, Node, NodeKind, Patch, Snapshot};

/// Where and what to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The directory items are restored under.
    pub target: PathBuf,
    /// Restore only these paths (and what is below them); everything when empty.
    pub include: Vec<String>,
    /// Items at or below a snapshot path go to another directory instead of
    /// under `target`: (`pg_tblspc/16385`, `/srv/ts1`) puts
    /// `pg_tblspc/16385/PG_15_…` at `/srv/ts1/PG_15_…`.
    pub relocate: Vec<(String, PathBuf)>,
    /// Write every file through the page cache. By default large files are
    /// written past it (`O_DIRECT`) where the file system allows; either way
    /// the restore is synced to disk before it returns.
    pub page_cache: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Files and streams restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symbolic links restored.
    pub symlinks: u64,
    /// Bytes of content restored.
    pub bytes: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

/// Reads are merged when blobs are this close in a pack…
const MERGE_GAP: u64 = 256 * 1024;
/// …up to this many bytes per read.
const MAX_READ: u64 = 4 << 20;

fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.components().all(|c| matches!(c, Component::Normal(_))) && !path.is_empty() {
        Some(p.to_path_buf())
    } else {
        None
    }
}

fn included(node: &str, include: &[String]) -> bool {
    include.is_empty()
        || include.iter().any(|inc| {
            node == inc
                || node
                    .strip_prefix(inc.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || inc.strip_prefix(node).is_some_and(|r| r.starts_with('/'))
        })
}

/// Where a chunk is written: item, offset, and the patch that completes it
/// there when the piece is patched.
struct Dest {
    node: usize,
    offset: u64,
    patch: Option<PatchDest>,
}

/// A patched piece: the chunk holding its replaced pages, and the id its
/// rebuilt bytes must have.
#[derive(Clone, Copy)]
struct PatchDest {
    pages: ChunkId,
    whole: ChunkId,
}

/// A chunk to restore and everywhere it is written.
struct BlobTarget {
    id: ChunkId,
    loc: Location,
    dests: Vec<Dest>,
}

/// One ranged read of a pack and the blobs it yields, with the reads of the
/// page patches those blobs need (read first, kept in memory for the task).
struct ReadTask {
    pack: u32,
    start: u64,
    end: u64,
    blobs: Vec<BlobTarget>,
    patches: Vec<ReadTask>,
}

/// Groups blobs, sorted by pack and offset, into ranged reads.
fn group_reads(blobs: impl IntoIterator<Item = BlobTarget>) -> Vec<ReadTask> {
    let mut tasks: Vec<ReadTask> = Vec::new();
    for b in blobs {
        let start = u64::from(b.loc.offset);
        let end = start + u64::from(b.loc.len);
        match tasks.last_mut() {
            Some(t)
                if t.pack == b.loc.pack
                    && start >= t.end
                    && start - t.end <= MERGE_GAP
                    && end - t.start <= MAX_READ =>
            {
                t.end = end;
                t.blobs.push(b);
            }
            _ => tasks.push(ReadTask {
                pack: b.loc.pack,
                start,
                end,
                blobs: vec![b],
                patches: Vec::new(),
            }),
        }
    }
    tasks
}

fn unindexed(id: &ChunkId, path: &str) -> RepoError {
    RepoError::Corrupt {
        key: format!("chunk {}", id.short()),
        reason: format!("{path} needs it but no index lists it; run `lifeboat verify`"),
    }
}

fn mismatch(whole: &ChunkId, patch: &ChunkId) -> RepoError {
    RepoError::Corrupt {
        key: format!("chunk {}", whole.short()),
        reason: format!(
            "rebuilt from its base and page patch {}, it does not match its id; run `lifeboat verify --read-data`",
            patch.short()
        ),
    }
}

impl Repository {
    /// Reads and checks one chunk.
    pub(crate) fn read_chunk(&self, index: &Index, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| RepoError::Corrupt {
            key: format!("chunk {}", id.short()),
            reason: "it is not in any index; run `lifeboat verify`".into(),
        })?;
        let (pack, epoch) = index.pack(loc.pack);
        let key = format::pack_key(&pack);
        let start = u64::from(loc.offset);
        let sealed = self.inner.block(
            self.inner
                .storage
                .get_range(&key, start..start + u64::from(loc.len)),
        )?;
        let data_key = self
            .inner
            .keyring
            .epoch(epoch)
            .ok_or_else(|| RepoError::Corrupt {
                key: key.clone(),
                reason: format!("unknown key epoch {epoch}"),
            })?;
        let entry = format::BlobEntry {
            id: *id,
            offset: loc.offset,
            len: loc.len,
            raw_len: loc.raw_len,
        };
        format::open_blob(&key, data_key, &self.inner.keyring, &entry, &sealed)
    }

    /// Restores a snapshot's items under `opts.target`: contents, modes, owners
    /// (when permitted), modification times, symlinks, empty directories and
    /// holes of sparse files.
    pub fn restore(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreStats> {
        let started = Instant::now();
        let include: Vec<String> = opts
            .include
            .iter()
            .map(|i| i.trim_matches('/').to_string())
            .collect();
        let nodes: Vec<&Node> = snapshot
            .nodes
            .iter()
            .filter(|n| included(&n.path, &include))
            .collect();
        if nodes.is_empty() {
            return Err(RepoError::Refused(format!(
                "nothing in the snapshot matches {:?}; see its contents with `lifeboat ls`",
                opts.include
            )));
        }
        let mut dests = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let rel = safe_relative(&n.path).ok_or_else(|| RepoError::Corrupt {
                key: "snapshot".into(),
                reason: format!("item path {:?} is not a plain relative path", n.path),
            })?;
            let moved = opts.relocate.iter().find_map(|(prefix, dest)| {
                let p = prefix.trim_matches('/');
                if n.path == p {
                    Some(dest.clone())
                } else {
                    n.path
                        .strip_prefix(p)
                        .and_then(|r| r.strip_prefix('/'))
                        .and_then(safe_relative)
                        .map(|r| dest.join(r))
                }
            });
            dests.push(moved.unwrap_or_else(|| opts.target.join(rel)));
        }
        fs::create_dir_all(&opts.target).map_err(|e| RepoError::io("create", &opts.target, e))?;

        let mut stats = RestoreStats::default();
        let total: u64 = nodes.iter().map(|n| n.size).sum();
        progress.start("restore", Some(total));
        // Directories, then files at their final size (holes stay holes), then links.
        for (n, d) in nodes.iter().zip(&dests) {
            match n.kind {
                NodeKind::Dir => {
                    fs::create_dir_all(d).map_err(|e| RepoError::io("create", d, e))?;
                    stats.dirs += 1;
                }
                NodeKind::File | NodeKind::Stream => {
                    if let Some(parent) = d.parent() {
                        fs::create_dir_all(parent)
                            .map_err(|e| RepoError::io("create", parent, e))?;
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(d)
                        .map_err(|e| RepoError::io("create", d, e))?;
                    f.set_len(n.size)
                        .map_err(|e| RepoError::io("resize", d, e))?;
                    stats.files += 1;
                    stats.bytes += n.size;
                }
                NodeKind::Symlink => {
                    if let Some(parent) = d.parent() {
                        fs::create_dir_all(parent)
                            .map_err(|e| RepoError::io("create", parent, e))?;
                    }
                    match fs::symlink_metadata(d) {
                        Ok(m) if m.is_dir() => fs::remove_dir_all(d),
                        Ok(_) => fs::remove_file(d),
                        Err(_) => Ok(()),
                    }
                    .map_err(|e| RepoError::io("replace", d, e))?;
                    let target = n.target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(target, d)
                        .map_err(|e| RepoError::io("create symlink", d, e))?;
                    stats.symlinks += 1;
                }
            }
        }

        let tasks = self.plan_reads(&nodes)?;
        let sizes: Vec<u64> = nodes.iter().map(|n| n.size).collect();
        let direct = DirectMode::new(!opts.page_cache);
        self.run_reads(tasks.1, &tasks.0, &dests, &sizes, &direct, progress)?;

        // Metadata last, directories deepest first so writing into them does not
        // disturb their times.
        for (n, d) in nodes.iter().zip(&dests).rev() {
            apply_metadata(n, d)?;
        }
        // Durable before it is reported done, as pgBackRest's restore is: one
        // sync per file system written to.
        let mut synced: Vec<u64> = Vec::new();
        for dir in std::iter::once(&opts.target).chain(opts.relocate.iter().map(|(_, d)| d)) {
            let dev = match fs::metadata(dir) {
                Ok(m) => std::os::unix::fs::MetadataExt::dev(&m),
                Err(_) => continue,
            };
            if !synced.contains(&dev) {
                sync_filesystem(dir)?;
                synced.push(dev);
            }
        }
        progress.finish();
        stats.duration_ms = started.elapsed().as_millis() as u64;
        Ok(stats)
    }

    fn plan_reads(&self, nodes: &[&Node]) -> Result<(Index, Vec<ReadTask>)> {
        let index = self.load_index()?;
        let mut by_chunk: HashMap<ChunkId, (Location, Vec<Dest>)> = HashMap::new();
        let mut patches: HashMap<ChunkId, Location> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let mut offset = 0u64;
            for c in &n.content {
                let (base, patch) = match (c.chunk(), c.patch()) {
                    (Some(whole), Some(p)) => {
                        let loc = index
                            .get(&p.pages)
                            .ok_or_else(|| unindexed(&p.pages, &n.path))?;
                        patches.insert(p.pages, loc);
                        let patch = PatchDest {
                            pages: p.pages,
                            whole,
                        };
                        (Some(p.base), Some(patch))
                    }
                    (id, _) => (id, None),
                };
                if let Some(id) = base {
                    let loc = index.get(&id).ok_or_else(|| unindexed(&id, &n.path))?;
                    by_chunk
                        .entry(id)
                        .or_insert_with(|| (loc, Vec::new()))
                        .1
                        .push(Dest {
                            node: i,
                            offset,
                            patch,
                        });
                }
                offset += c.len();
            }
        }
        let mut blobs: Vec<_> = by_chunk.into_iter().collect();
        blobs.sort_by_key(|(_, (loc, _))| (loc.pack, loc.offset));
        let mut tasks =
            group_reads(
                blobs
                    .into_iter()
                    .map(|(id, (loc, dests))| BlobTarget { id, loc, dests }),
            );
        for t in &mut tasks {
            let mut needed: Vec<ChunkId> = t
                .blobs
                .iter()
                .flat_map(|b| b.dests.iter().filter_map(|d| d.patch.map(|p| p.pages)))
                .collect();
            if needed.is_empty() {
                continue;
            }
            needed.sort_unstable();
            needed.dedup();
            let mut reads: Vec<BlobTarget> = needed
                .into_iter()
                .filter_map(|id| {
                    patches.get(&id).map(|&loc| BlobTarget {
                        id,
                        loc,
                        dests: Vec::new(),
                    })
                })
                .collect();
            reads.sort_by_key(|b| (b.loc.pack, b.loc.offset));
            t.patches = group_reads(reads);
        }
        Ok((index, tasks))
    }

    fn run_reads(
        &self,
        tasks: Vec<ReadTask>,
        index: &Index,
        dests: &[PathBuf],
        sizes: &[u64],
        direct: &DirectMode,
        progress: &dyn Progress,
    ) -> Result<()> {
        let error: Mutex<Option<RepoError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(4)
            .min(tasks.len().max(1));
        // Each worker starts on its own contiguous stretch of the plan (equal
        // bytes), so workers write different files: ext4 serialises buffered
        // writes to one inode, and workers sharing a file would wait on each
        // other. A worker that finishes its stretch helps with the others.
        let total: u64 = tasks.iter().map(|t| t.end - t.start).sum();
        let mut starts = vec![0usize];
        let mut acc = 0u64;
        for (i, t) in tasks.iter().enumerate() {
            acc += t.end - t.start;
            if starts.len() < threads && acc * threads as u64 >= total * starts.len() as u64 {
                starts.push(i + 1);
            }
        }
        let ends: Vec<usize> = starts
            .iter()
            .skip(1)
            .copied()
            .chain([tasks.len()])
            .collect();
        let cursors: Vec<AtomicUsize> = starts.iter().map(|&s| AtomicUsize::new(s)).collect();
        let segments = cursors.len();
        std::thread::scope(|s| {
            for k in 0..segments {
                let (tasks, cursors, ends, stop, error) = (&tasks, &cursors, &ends, &stop, &error);
                s.spawn(move || {
                    let mut bufs = WorkerBuffers::default();
                    let mut sink = FileSink::new(dests, sizes, direct);
                    let fail = |e: RepoError| {
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        stop.store(true, Ordering::Relaxed);
                    };
                    for seg in (0..segments).map(|j| (k + j) % segments) {
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let i = cursors[seg].fetch_add(1, Ordering::Relaxed);
                            if i >= ends[seg] {
                                break;
                            }
                            if let Err(e) =
                                self.run_read(&tasks[i], index, &mut sink, progress, &mut bufs)
                            {
                                fail(e);
                                return;
                            }
                        }
                    }
                    if let Err(e) = sink.flush() {
                        fail(e);
                    }
                });
            }
        });
        match error.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads a pack range into `buf` and returns the pack's key and data key.
    fn read_range<'k>(
        &'k self,
        task: &ReadTask,
        index: &Index,
        buf: &mut Vec<u8>,
    ) -> Result<(String, &'k lifeboat_crypto::Key)> {
        let (pack, epoch) = index.pack(task.pack);
        let key = format::pack_key(&pack);
        *buf = self.inner.block(self.inner.storage.get_range_into(
            &key,
            task.start..task.end,
            std::mem::take(buf),
        ))?;
        let data_key = self
            .inner
            .keyring
            .epoch(epoch)
            .ok_or_else(|| RepoError::Corrupt {
                key: key.clone(),
                reason: format!("unknown key epoch {epoch}"),
            })?;
        Ok((key, data_key))
    }

    /// The sealed bytes of `blob` in the read buffer of `task`.
    fn sealed_in<'b>(
        key: &str,
        task: &ReadTask,
        blob: &BlobTarget,
        read: &'b mut [u8],
    ) -> Result<(&'b mut [u8], format::BlobEntry)> {
        let from = (u64::from(blob.loc.offset) - task.start) as usize;
        let sealed = read
            .get_mut(from..from + blob.loc.len as usize)
            .ok_or_else(|| RepoError::Corrupt {
                key: key.to_string(),
                reason: "the pack is shorter than its index says".into(),
            })?;
        let entry = format::BlobEntry {
            id: blob.id,
            offset: blob.loc.offset,
            len: blob.loc.len,
            raw_len: blob.loc.raw_len,
        };
        Ok((sealed, entry))
    }

    fn run_read(
        &self,
        task: &ReadTask,
        index: &Index,
        sink: &mut FileSink<'_>,
        progress: &dyn Progress,
        bufs: &mut WorkerBuffers,
    ) -> Result<()> {
        let WorkerBuffers {
            read,
            plain,
            patched,
            patches,
            patch_bytes,
        } = bufs;
        // The page patches this task's pieces need, opened and checked, one
        // after another in one reused buffer.
        patches.clear();
        patch_bytes.clear();
        for p in &task.patches {
            let (key, data_key) = self.read_range(p, index, read)?;
            for blob in &p.blobs {
                let (sealed, entry) = Self::sealed_in(&key, p, blob, read)?;
                let data = format::open_blob_in_place(
                    &key,
                    data_key,
                    &self.inner.keyring,
                    &entry,
                    sealed,
                    plain,
                )?;
                patches.insert(blob.id, patch_bytes.len()..patch_bytes.len() + data.len());
                patch_bytes.extend_from_slice(data);
            }
        }
        let keyring = &self.inner.keyring;
        // Applies a piece's patch to its base's bytes and checks the result.
        let complete = |p: &PatchDest, data: &mut [u8]| -> Result<()> {
            let patch = patches
                .get(&p.pages)
                .and_then(|r| patch_bytes.get(r.clone()))
                .ok_or_else(|| unindexed(&p.pages, "a patched piece"))?;
            format::apply_patch(&format!("chunk {}", p.pages.short()), patch, data)?;
            if keyring.chunk_id(data) != p.whole {
                return Err(mismatch(&p.whole, &p.pages));
            }
            Ok(())
        };
        let (key, data_key) = self.read_range(task, index, read)?;
        for blob in &task.blobs {
            let (sealed, entry) = Self::sealed_in(&key, task, blob, read)?;
            // One destination (the rule for database files): decompress
            // straight into the writer's buffer, patch it there.
            if let [Dest {
                node,
                offset,
                patch,
            }] = blob.dests.as_slice()
            {
                let len = blob.loc.raw_len as usize;
                if let Some(slot) = sink.reserve(*node, *offset, len)? {
                    // A patched piece is checked whole, after patching.
                    let check = patch.is_none().then_some(keyring);
                    match format::open_blob_to(&key, data_key, check, &entry, sealed, slot)? {
                        format::Opened::Written => {}
                        format::Opened::InPlace(data) => slot.copy_from_slice(data),
                    }
                    if let Some(p) = patch {
                        complete(p, slot)?;
                    }
                    sink.commit(*node, *offset, len)?;
                    progress.advance(len as u64);
                    continue;
                }
            }
            let data = format::open_blob_in_place(&key, data_key, keyring, &entry, sealed, plain)?;
            for d in &blob.dests {
                let bytes = match &d.patch {
                    None => data,
                    Some(p) => {
                        patched.clear();
                        patched.extend_from_slice(data);
                        complete(p, patched)?;
                        patched.as_slice()
                    }
                };
                sink.write(d.node, d.offset, bytes)?;
                progress.advance(bytes.len() as u64);
            }
        }
        Ok(())
    }

    /// Reads one piece of content: a chunk, a hole, or a base chunk with its
    /// page patch applied, checked against the piece's id.
    pub(crate) fn read_piece(&self, index: &Index, c: &ContentRef) -> Result<Vec<u8>> {
        match (c.chunk(), c.patch()) {
            (None, _) => Ok(vec![0u8; c.len() as usize]),
            (Some(id), None) => self.read_chunk(index, &id),
            (Some(whole), Some(p)) => self.rebuild(index, &whole, &p),
        }
    }

    /// Reads a patched piece's base and patch, applies the patch and checks
    /// the result against the piece's id.
    pub(crate) fn rebuild(&self, index: &Index, whole: &ChunkId, p: &Patch) -> Result<Vec<u8>> {
        let mut data = self.read_chunk(index, &p.base)?;
        let patch = self.read_chunk(index, &p.pages)?;
        format::apply_patch(&format!("chunk {}", p.pages.short()), &patch, &mut data)?;
        if self.inner.keyring.chunk_id(&data) != *whole {
            return Err(mismatch(whole, &p.pages));
        }
        Ok(data)
    }

    /// Writes the content of a snapshot's single stream (or single file) to `out`.
    pub fn restore_stream(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let items: Vec<&Node> = snapshot
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Stream | NodeKind::File))
            .collect();
        match items.as_slice() {
            [one] => self.restore_item(one, out, progress),
            _ => Err(RepoError::Refused(format!(
                "this snapshot holds {} files, not one stream; restore it with --target DIR",
                items.len()
            ))),
        }
    }

    /// Writes the content of one item (a stream or a file) of a snapshot to
    /// `out`, in order, checking every piece.
    pub fn restore_item(
        &self,
        node: &Node,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let index = self.load_index()?;
        progress.start("restore", Some(node.size));
        let mut written = 0u64;
        // Fetch a few chunks at once, write them in order.
        for batch in node.content.chunks(8) {
            let fetched: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|c| {
                        let index = &index;
                        s.spawn(move || self.read_piece(index, c))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(RepoError::Invalid("a reader thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for data in fetched {
                let data = data?;
                out.write_all(&data)
                    .map_err(|e| RepoError::io("write", Path::new("standard output"), e))?;
                written += data.len() as u64;
                progress.advance(data.len() as u64);
            }
        }
        out.flush()
            .map_err(|e| RepoError::io("write", Path::new("standard output"), e))?;
        progress.finish();
        Ok(written)
    }
}

/// What one restore worker reuses from one read to the next: the read buffer
/// (blobs are decrypted in place there) and the decompression buffer. Reusing them keeps the restore free of per-chunk
/// allocations and page faults, and its memory flat.
#[derive(Default)]
struct WorkerBuffers {
    read: Vec<u8>,
    plain: Vec<u8>,
    /// A patched copy of a chunk written to several places.
    patched: Vec<u8>,
    /// Where the current task's page patches are in `patch_bytes`, by id.
    patches: HashMap<ChunkId, std::ops::Range<usize>>,
    patch_bytes: Vec<u8>,
}

fn apply_metadata(n: &Node, d: &Path) -> Result<()> {
    let mtime = FileTime::from_unix_time(
        n.mtime_ns.div_euclid(1_000_000_000),
        n.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    // Ownership needs privileges; an unprivileged restore keeps the restorer's.
    match std::os::unix::fs::lchown(d, Some(n.uid), Some(n.gid)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(RepoError::io("chown", d, e)),
    }
    match n.kind {
        NodeKind::Symlink => {
            filetime::set_symlink_file_times(d, mtime, mtime)
                .map_err(|e| RepoError::io("set times of", d, e))?;
        }
        NodeKind::Stream => {}
        NodeKind::File | NodeKind::Dir => {
            fs::set_permissions(d, fs::Permissions::from_mode(n.mode & 0o7777))
                .map_err(|e| RepoError::io("set mode of", d, e))?;
            filetime::set_file_times(d, mtime, mtime)
                .map_err(|e| RepoError::io("set times of", d, e))?;
        }
    }
    Ok(())
}
