//! Restoring snapshots to a directory or a stream.
//!
//! A restore into a directory goes in four steps, so that what it leaves is
//! never a tree that only looks complete:
//!
//! 1. **Place**: every item gets a root (the target, or a relocated
//!    directory) and a plain relative path below it; anything else in a
//!    snapshot is damage. A target that is not empty is refused unless an
//!    [`Overwrite`] rule says what to do with what is there.
//! 2. **Create**, in path order: directories, and each file as an empty
//!    file of its final size under a temporary name
//!    (`.lifeboat-partial-<restore>-<n>`) in its final directory. Every
//!    path is reached from the root's open handle without following a link
//!    (`fsat`): a link planted in the target is never a way out of it.
//! 3. **Write** the contents (parallel ranged reads of packs, see
//!    `run_reads`), then sync the file systems.
//! 4. **Finish**: each complete file gets its owner, mode and times and is
//!    renamed to its final name; links, FIFOs and device nodes are made;
//!    directories get their metadata, deepest first; a last sync makes the
//!    renames durable. When writing failed, the complete files are still
//!    finished, the incomplete ones removed, and the error names them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use lifeboat_types::{name, ChunkId};

use crate::error::{RepoError, Result};
use crate::format;
use crate::fsat::{self, Meta, Root};
use crate::index::{Index, Location};
use crate::parallel::{cores, Pool};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sink::{sync_filesystem, DirectMode, FileSink};
use crate::snapshot::{ContentRef, Node, NodeKind, Patch, Snapshot};

/// What a restore does with what is already where an item goes (restic's
/// words for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Nothing: the target must be empty or not exist yet.
    #[default]
    Refuse,
    /// Every item is restored, replacing what is there.
    Always,
    /// A file whose size and modification time are the snapshot's is left as
    /// it is; everything else is replaced.
    IfChanged,
    /// What exists is left as it is; only what is missing is restored.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!("{s:?}: use always, if-changed or never")),
        }
    }
}

/// Where and what to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The directory items are restored under.
    pub target: PathBuf,
    /// Restore only these paths (and what is below them); everything when
    /// empty. Spelled as snapshot paths are ([`lifeboat_types::name`]).
    pub include: Vec<String>,
    /// Leave these paths (and what is below them) out, e.g. a file the
    /// caller restores last itself.
    pub exclude: Vec<String>,
    /// Items at or below a snapshot path go to another directory instead of
    /// under `target`: (`pg_tblspc/16385`, `/srv/ts1`) puts
    /// `pg_tblspc/16385/PG_15_…` at `/srv/ts1/PG_15_…`.
    pub relocate: Vec<(String, PathBuf)>,
    /// Write every file through the page cache. By default large files are
    /// written past it (`O_DIRECT`) where the file system allows; either way
    /// the restore is synced to disk before it returns.
    pub page_cache: bool,
    /// What to do with what is already there.
    pub overwrite: Overwrite,
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
    /// FIFOs and device nodes restored.
    pub specials: u64,
    /// Items left as they were, by the overwrite rule.
    pub unchanged: u64,
    /// Sockets in the snapshot, which are never restored.
    pub sockets_skipped: u64,
    /// Bytes of content restored.
    pub bytes: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

/// Reads are merged when blobs are this close in a pack…
const MERGE_GAP: u64 = 256 * 1024;
/// …up to this many bytes per read.
const MAX_READ: u64 = 4 << 20;

/// The item path `spelled` as a plain relative path (`a/b`), or `None` when
/// it is not one: empty, absolute, with `.` or `..`, or not a spelling.
fn plain_path(spelled: &str) -> Option<PathBuf> {
    let bytes = name::decode(spelled).ok()?;
    // Each name between slashes must be a name: not empty (`a//b`, `/a`,
    // `a/`), not `.` or `..` (Path::components would quietly drop some).
    let names_ok = bytes
        .split(|&b| b == b'/')
        .all(|n| !n.is_empty() && n != b"." && n != b"..");
    (names_ok && !bytes.contains(&0)).then(|| PathBuf::from(OsStr::from_bytes(&bytes)))
}

fn under(node: &str, prefix: &str) -> bool {
    node == prefix
        || node
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

fn included(node: &str, include: &[String]) -> bool {
    include.is_empty()
        || include
            .iter()
            .any(|inc| under(node, inc) || under(inc, node))
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
        reason: format!(
            "{path} needs it but no index lists it; run `lifeboat verify`, and `lifeboat repair index` if packs hold chunks no index lists"
        ),
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

/// What the restore does for one item.
enum Action {
    /// Left as it is, by the overwrite rule.
    Keep,
    /// A directory made sure of.
    Dir,
    /// A file being written under a temporary name in its final directory,
    /// and which file that is.
    File { temp: OsString, id: fsat::FileId },
    /// A link, FIFO or device node, made under a temporary name when
    /// everything else is done, then renamed.
    Later { temp: OsString },
    /// A socket: not restored.
    Socket,
}

/// One item of a restore: where it goes and what is done for it.
struct Item<'a> {
    node: &'a Node,
    root: usize,
    /// The path below the root; empty for the root itself.
    rel: PathBuf,
    action: Action,
}

impl Item<'_> {
    fn parent(&self) -> &Path {
        self.rel.parent().unwrap_or(Path::new(""))
    }
    fn file_name(&self) -> &OsStr {
        self.rel.file_name().unwrap_or_default()
    }
    fn meta(&self) -> Meta {
        let n = self.node;
        match n.kind {
            // Streams have no file metadata of their own: private files, now.
            NodeKind::Stream => Meta {
                uid: n.uid,
                gid: n.gid,
                mode: if n.mode & 0o777 == 0 { 0o600 } else { n.mode },
                mtime_ns: None,
            },
            _ => Meta {
                uid: n.uid,
                gid: n.gid,
                mode: n.mode,
                mtime_ns: Some(n.mtime_ns),
            },
        }
    }
}

/// The open directory of the items being worked on: items come in path
/// order, so consecutive ones mostly share it.
#[derive(Default)]
struct Parent {
    at: Option<(usize, PathBuf)>,
    fd: Option<OwnedFd>,
}

impl Parent {
    /// The directory `rel` below root `root`, created when missing (with the
    /// umask's default mode: it is not an item of the snapshot).
    fn get(&mut self, roots: &[Root], root: usize, rel: &Path) -> io::Result<&OwnedFd> {
        let same = self
            .at
            .as_ref()
            .is_some_and(|(r, p)| *r == root && p == rel);
        if !same || self.fd.is_none() {
            self.fd = None;
            self.fd = Some(fsat::ensure_dir(roots[root].fd(), rel, 0o777)?);
            self.at = Some((root, rel.to_path_buf()));
        }
        self.fd
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn forget(&mut self) {
        self.at = None;
        self.fd = None;
    }
}

/// True when an error means something that is not a directory (a link
/// included) is where a directory was needed.
/// The temporary name of item `i` of restore `restore_id`.
fn temp_name(restore_id: &str, i: usize) -> OsString {
    OsString::from(format!(".lifeboat-partial-{restore_id}-{i}"))
}

fn in_the_way(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::NOTDIR | Errno::LOOP | Errno::XDEV)
    )
}

fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
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
        let len = u64::from(loc.len);
        let sealed = self
            .inner
            .block(self.inner.storage.get_range(&key, start..start + len))
            .map_err(|e| pack_error(&key, e))?;
        check_length(&key, sealed.len(), len)?;
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
    /// (when permitted), modification times, symlinks, FIFOs, device nodes
    /// (when permitted), empty directories and holes of sparse files; see
    /// the module documentation for the steps and what a failure leaves.
    pub fn restore(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreStats> {
        self.note_read(snapshot.loaded_as);
        let started = Instant::now();
        let trim = |v: &[String]| -> Vec<String> {
            v.iter().map(|i| i.trim_matches('/').to_string()).collect()
        };
        let (include, exclude) = (trim(&opts.include), trim(&opts.exclude));
        let nodes: Vec<&Node> = snapshot
            .nodes
            .iter()
            .filter(|n| included(&n.path, &include))
            .filter(|n| !exclude.iter().any(|x| under(&n.path, x)))
            .collect();
        if nodes.is_empty() {
            return Err(RepoError::Refused(format!(
                "nothing in the snapshot matches {:?}; see its contents with `lifeboat ls`",
                opts.include
            )));
        }
        self.refuse_frozen(&nodes)?;

        // 1. Place every item. Relocated directories no item goes to are
        // neither made nor checked.
        let relocate: Vec<(String, &PathBuf)> = opts
            .relocate
            .iter()
            .map(|(p, d)| (name::encode(p.trim_matches('/').as_bytes()), d))
            .filter(|(p, _)| nodes.iter().any(|n| under(&n.path, p)))
            .collect();
        let mut items = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let bad = || RepoError::Corrupt {
                key: "snapshot".into(),
                reason: format!("item path {:?} is not a plain relative path", n.path),
            };
            let moved = relocate.iter().enumerate().find_map(|(i, (p, _))| {
                if n.path == *p {
                    Some(Ok((i + 1, PathBuf::new())))
                } else {
                    n.path
                        .strip_prefix(p.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .map(|r| plain_path(r).map(|r| (i + 1, r)).ok_or_else(bad))
                }
            });
            let (root, rel) = match moved {
                Some(r) => r?,
                None => (0, plain_path(&n.path).ok_or_else(bad)?),
            };
            // A link whose target does not decode is damage found now,
            // before anything is written.
            if let Some(t) = &n.target {
                name::decode(t).map_err(|e| RepoError::Corrupt {
                    key: "snapshot".into(),
                    reason: format!("the link target of {:?}: {e}", n.path),
                })?;
            }
            items.push(Item {
                node: n,
                root,
                rel,
                action: Action::Keep,
            });
        }
        let mut roots = Vec::with_capacity(1 + relocate.len());
        for dir in std::iter::once(&opts.target).chain(relocate.iter().map(|(_, d)| *d)) {
            let root = Root::create(dir).map_err(|e| RepoError::io("create", dir, e))?;
            if opts.overwrite == Overwrite::Refuse
                && root
                    .has_entries()
                    .map_err(|e| RepoError::io("list", dir, e))?
            {
                return Err(RepoError::Refused(format!(
                    "{} is not empty: restore into an empty or new directory, or say what to do with what is there: --overwrite always (replace it), if-changed (replace files whose size or modification time differ), never (restore only what is missing)",
                    dir.display()
                )));
            }
            roots.push(root);
        }

        // 2. Create directories and empty files under temporary names.
        let mut restore_id = [0u8; 4];
        lifeboat_crypto::fill_random(&mut restore_id)?;
        let restore_id = hex::encode(restore_id);
        let mut stats = RestoreStats::default();
        let created =
            self.create_items(&mut items, &roots, opts.overwrite, &restore_id, &mut stats);
        if let Err(e) = created {
            remove_temporaries(&items, &roots);
            return Err(e);
        }

        // 3. Write the contents.
        let writing: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(items[i].action, Action::File { .. }))
            .collect();
        let write_nodes: Vec<&Node> = writing.iter().map(|&i| items[i].node).collect();
        let targets: Vec<crate::sink::Target> = writing
            .iter()
            .filter_map(|&i| match &items[i].action {
                Action::File { temp, id } => Some(crate::sink::Target {
                    root: items[i].root,
                    rel: items[i].parent().join(temp),
                    id: *id,
                }),
                _ => None,
            })
            .collect();
        let total: u64 = write_nodes.iter().map(|n| n.size).sum();
        progress.start("restore", Some(total));
        let (mut result, mut complete) =
            self.write_contents(&write_nodes, &roots, &targets, opts, progress);
        progress.finish();
        // Durable before anything gets its final name.
        if let Err(e) = sync_roots(&roots) {
            complete.iter_mut().for_each(|c| *c = false);
            result = result.and(Err(e));
        }

        // 4. Finish.
        let mut done = vec![true; items.len()];
        for (k, &i) in writing.iter().enumerate() {
            done[i] = complete[k];
        }
        let finished = finish_items(&items, &roots, &done, &mut stats);
        let synced = sync_roots(&roots);
        match (result, finished.unrestorable) {
            (Ok(()), None) => {}
            (Ok(()), Some(cause)) => {
                return Err(RepoError::RestoreIncomplete {
                    cause: Box::new(cause),
                    missing: finished.missing,
                })
            }
            (Err(e), _) => {
                return Err(RepoError::RestoreIncomplete {
                    cause: Box::new(e),
                    missing: finished.missing,
                })
            }
        }
        synced?;
        stats.bytes = total;
        stats.files = write_nodes.len() as u64;
        stats.duration_ms = started.elapsed().as_millis() as u64;
        Ok(stats)
    }

    /// Step 2: directories made, files created empty at their final size
    /// under temporary names, what the overwrite rule keeps left alone.
    fn create_items(
        &self,
        items: &mut [Item<'_>],
        roots: &[Root],
        overwrite: Overwrite,
        restore_id: &str,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let mut parent = Parent::default();
        for (i, item) in items.iter_mut().enumerate() {
            let root = &roots[item.root];
            let shown = || root.show(&item.rel);
            let kind = item.node.kind;
            if item.rel.as_os_str().is_empty() {
                // A root itself (a relocated tablespace directory): it is
                // there; its metadata is the item's, unless what is there
                // is to be kept.
                item.action = if kind == NodeKind::Dir && overwrite != Overwrite::Never {
                    Action::Dir
                } else {
                    Action::Keep
                };
                continue;
            }
            let dir = match parent.get(roots, item.root, item.parent()) {
                Ok(fd) => fd,
                // Something not a directory is where one is needed: under
                // `never` what is there stays, and so does what is below.
                Err(e) if overwrite == Overwrite::Never && in_the_way(&e) => {
                    parent.forget();
                    stats.unchanged += 1;
                    continue;
                }
                Err(e) => {
                    return Err(RepoError::io(
                        "create the directory of",
                        &shown(),
                        way_error(e, &root.show(item.parent())),
                    ))
                }
            };
            let name = item.rel.file_name().unwrap_or_default().to_os_string();
            let there =
                fsat::stat(dir.as_fd(), &name).map_err(|e| RepoError::io("read", &shown(), e))?;
            let is_dir = there
                .as_ref()
                .is_some_and(|st| fsat::kind_of(st.st_mode) == rustix::fs::FileType::Directory);
            if there.is_some() && overwrite == Overwrite::Never {
                item.action = Action::Keep;
                stats.unchanged += 1;
                continue;
            }
            item.action = match kind {
                NodeKind::Dir => {
                    if !is_dir {
                        if there.is_some() {
                            fsat::remove(dir.as_fd(), &name)
                                .map_err(|e| RepoError::io("replace", &shown(), e))?;
                        }
                        rustix::fs::mkdirat(dir, &name, rustix::fs::Mode::from_raw_mode(0o700))
                            .map_err(|e| RepoError::io("create", &shown(), e.into()))?;
                    }
                    Action::Dir
                }
                NodeKind::File | NodeKind::Stream => {
                    let unchanged = overwrite == Overwrite::IfChanged
                        && there.as_ref().is_some_and(|st| {
                            fsat::kind_of(st.st_mode) == rustix::fs::FileType::RegularFile
                                && st.st_size as u64 == item.node.size
                                && mtime_ns(st) == item.node.mtime_ns
                        });
                    if unchanged {
                        stats.unchanged += 1;
                        Action::Keep
                    } else {
                        if is_dir {
                            fsat::remove(dir.as_fd(), &name)
                                .map_err(|e| RepoError::io("replace", &shown(), e))?;
                        }
                        let temp = temp_name(restore_id, i);
                        let id =
                            fsat::create_file(dir.as_fd(), &temp, item.node.size).map_err(|e| {
                                RepoError::io("create", &root.show(&item.parent().join(&temp)), e)
                            })?;
                        Action::File { temp, id }
                    }
                }
                NodeKind::Socket => {
                    stats.sockets_skipped += 1;
                    Action::Socket
                }
                NodeKind::Symlink
                | NodeKind::Fifo
                | NodeKind::CharDevice
                | NodeKind::BlockDevice => {
                    let same_link = overwrite == Overwrite::IfChanged
                        && kind == NodeKind::Symlink
                        && rustix::fs::readlinkat(dir, &name, Vec::new())
                            .is_ok_and(|t| Some(name::encode(t.as_bytes())) == item.node.target);
                    if same_link {
                        stats.unchanged += 1;
                        Action::Keep
                    } else {
                        if is_dir {
                            fsat::remove(dir.as_fd(), &name)
                                .map_err(|e| RepoError::io("replace", &shown(), e))?;
                        }
                        Action::Later {
                            temp: temp_name(restore_id, i),
                        }
                    }
                }
            };
            if kind == NodeKind::Dir {
                // The next items are inside it.
                parent.forget();
            }
        }
        Ok(())
    }

    /// Step 3: every file's contents, read from packs in parallel. Returns
    /// the outcome and, per file, whether all of it was written.
    fn write_contents(
        &self,
        nodes: &[&Node],
        roots: &[Root],
        targets: &[crate::sink::Target],
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> (Result<()>, Vec<bool>) {
        let mut complete = vec![false; nodes.len()];
        let sizes: Vec<u64> = nodes.iter().map(|n| n.size).collect();
        let direct = DirectMode::new(!opts.page_cache);
        let dests = crate::sink::Dests {
            roots,
            targets,
            sizes: &sizes,
        };
        // A prune running beside the restore may repack chunks and delete
        // the packs the loaded index named: the files not yet complete are
        // then read again with the index as it is now (three tries; a pack
        // that is really missing fails each of them and is reported).
        let mut tries = 0;
        loop {
            tries += 1;
            let (index, tasks) = match self.plan_reads(nodes, &complete) {
                Ok(p) => p,
                Err(e) => return (Err(e), complete),
            };
            // Pieces still to write per file (holes need no writing).
            let remaining: Vec<AtomicU32> = nodes
                .iter()
                .zip(&complete)
                .map(|(n, &done)| {
                    let pieces = n.content.iter().filter(|c| c.chunk().is_some()).count();
                    AtomicU32::new(if done { 0 } else { pieces as u32 })
                })
                .collect();
            let (result, failed) =
                self.run_reads(tasks, &index, &dests, &direct, &remaining, progress);
            for (k, c) in complete.iter_mut().enumerate() {
                *c = *c || (remaining[k].load(Ordering::Relaxed) == 0 && !failed.contains(&k));
            }
            match result {
                Err(e) if tries < 3 && is_missing_pack(&e) => {
                    tracing::info!(error = %e, "a pack is gone (a prune beside this restore?): reading the rest again with the index as it is now");
                }
                result => return (result, complete),
            }
        }
    }

    /// The reads that write `nodes` but those already `complete`.
    fn plan_reads(&self, nodes: &[&Node], complete: &[bool]) -> Result<(Index, Vec<ReadTask>)> {
        let index = self.load_index()?;
        let mut by_chunk: HashMap<ChunkId, (Location, Vec<Dest>)> = HashMap::new();
        let mut patches: HashMap<ChunkId, Location> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if complete[i] {
                continue;
            }
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

    /// Runs the read tasks on parallel workers, each with its own buffers
    /// and file sink; returns the outcome and the files whose staged bytes
    /// could not be written.
    fn run_reads(
        &self,
        tasks: Vec<ReadTask>,
        index: &Index,
        dests: &crate::sink::Dests<'_>,
        direct: &DirectMode,
        remaining: &[AtomicU32],
        progress: &dyn Progress,
    ) -> (Result<()>, Vec<usize>) {
        // Each worker starts on its own contiguous stretch of the plan (equal
        // bytes), so workers write different files: ext4 serialises buffered
        // writes to one inode, and workers sharing a file would wait on each
        // other. A worker that finishes its stretch helps with the others.
        let weights: Vec<u64> = tasks.iter().map(|t| t.end - t.start).collect();
        let pool = Pool::stretched(cores().max(4), &weights);
        let (lost, result) = pool.run(
            &tasks,
            || (WorkerBuffers::default(), FileSink::new(dests, direct)),
            |(bufs, sink), _, task| self.run_read(task, index, sink, remaining, progress, bufs),
            |(_, mut sink)| {
                // Whatever happened, what was staged goes out: a file
                // that is complete is kept even when the restore fails.
                let mut lost = Vec::new();
                let flushed = sink.flush(&mut lost);
                (lost, flushed)
            },
        );
        (result, lost.into_iter().flatten().collect())
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
        *buf = self
            .inner
            .block(self.inner.storage.get_range_into(
                &key,
                task.start..task.end,
                std::mem::take(buf),
            ))
            .map_err(|e| pack_error(&key, e))?;
        check_length(&key, buf.len(), task.end - task.start)?;
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
        remaining: &[AtomicU32],
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
                    remaining[*node].fetch_sub(1, Ordering::Relaxed);
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
                remaining[d.node].fetch_sub(1, Ordering::Relaxed);
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

    /// In a store whose objects may be in a cold class: the pack of the
    /// first chunk to restore must be readable, or the restore stops
    /// before it creates anything (with the store's "thaw it first"),
    /// rather than leave a half-made target behind. One HEAD: an archive's
    /// packs are all thawed together (`thaw`).
    fn refuse_frozen(&self, nodes: &[&Node]) -> Result<()> {
        if !self.inner.storage.may_be_cold() {
            return Ok(());
        }
        let Some(first) = nodes
            .iter()
            .flat_map(|n| n.content.iter())
            .find_map(|c| c.stored().next())
        else {
            return Ok(());
        };
        let index = self.load_index()?;
        let Some(loc) = index.get(&first) else {
            return Ok(());
        };
        let key = crate::keys::ObjectKey::Pack(index.pack(loc.pack).0).to_string();
        // Only a store that says "cold" refuses here; any other answer (a
        // missing pack: damage) is for the restore itself to report.
        let Ok(state) = self.inner.block(self.inner.storage.cold_state(&key)) else {
            return Ok(());
        };
        if state.is_readable() {
            return Ok(());
        }
        Err(lifeboat_storage::StorageError::new(
            lifeboat_storage::ErrorKind::Frozen,
            "get",
            &key,
            &self.location(),
            format!(
                "the object is in cold storage ({}) and not readable yet: run `lifeboat thaw SNAPSHOT` for this snapshot, and restore once `lifeboat thaw SNAPSHOT --status` says every object is ready",
                match &state {
                    lifeboat_storage::ColdState::Thawing { class } => format!("{class}, restore under way"),
                    lifeboat_storage::ColdState::Frozen { class } => class.clone(),
                    _ => String::new(),
                }
            ),
        )
        .into())
    }

    /// Writes the content of a snapshot's single stream (or single file) to `out`.
    pub fn restore_stream(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        self.note_read(snapshot.loaded_as);
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
        let mut index = self.load_index()?;
        self.copy_item(&mut index, node, out, progress)
    }

    /// The BLAKE3 hash and length of each item's content as the snapshot
    /// holds it (every piece read and checked; the index loaded once): what
    /// a drill compares restored files with.
    pub fn hash_items(&self, nodes: &[&Node]) -> Result<Vec<(blake3::Hash, u64)>> {
        struct Hashing(blake3::Hasher);
        impl Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut index = self.load_index()?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let mut h = Hashing(blake3::Hasher::new());
            let n = self.copy_item(&mut index, node, &mut h, &crate::NoProgress)?;
            out.push((h.0.finalize(), n));
        }
        Ok(out)
    }

    /// [`Repository::restore_item`] with an index already loaded.
    fn copy_item(
        &self,
        index: &mut Index,
        node: &Node,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        progress.start("restore", Some(node.size));
        let mut written = 0u64;
        // A prune beside the restore may delete a pack the index named
        // (repacking its chunks): a piece is then read again with the index
        // as it is now, twice at most.
        let mut reloads = 0;
        // Fetch a few chunks at once, write them in order.
        for batch in node.content.chunks(8) {
            let mut fetched = self.read_pieces(index, batch);
            while reloads < 2
                && fetched
                    .iter()
                    .any(|r| r.as_ref().is_err_and(is_missing_pack))
            {
                reloads += 1;
                *index = self.load_index()?;
                fetched = self.read_pieces(index, batch);
            }
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

impl Repository {
    /// Reads `batch`'s pieces at once, one thread each.
    fn read_pieces(&self, index: &Index, batch: &[ContentRef]) -> Vec<Result<Vec<u8>>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|c| s.spawn(move || self.read_piece(index, c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RepoError::Failed("a reader thread panicked".into()))
                    })
                })
                .collect()
        })
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

/// Why a pack the index names is damage when the store does not have it.
const MISSING_PACK: &str =
    "missing: an index lists it but the store does not have it; run `lifeboat verify`";

/// Whether `e` is a pack the index named that the store does not have: damage,
/// or a prune that deleted it since the index was loaded.
pub(crate) fn is_missing_pack(e: &RepoError) -> bool {
    matches!(e, RepoError::Corrupt { reason, .. } if reason == MISSING_PACK)
}

/// A storage error reading a pack, as damage when the pack is missing or
/// shorter than the index says (the index lists it: it was stored whole).
fn pack_error(key: &str, e: lifeboat_storage::StorageError) -> RepoError {
    if e.is_not_found() {
        RepoError::Corrupt {
            key: key.to_string(),
            reason: MISSING_PACK.into(),
        }
    } else if e.kind == lifeboat_storage::ErrorKind::Truncated {
        RepoError::Corrupt {
            key: key.to_string(),
            reason: "truncated: it is shorter than its index says; run `lifeboat verify`".into(),
        }
    } else {
        e.into()
    }
}

fn check_length(key: &str, got: usize, want: u64) -> Result<()> {
    if (got as u64) < want {
        return Err(RepoError::Corrupt {
            key: key.to_string(),
            reason: "truncated: it is shorter than its index says; run `lifeboat verify`".into(),
        });
    }
    Ok(())
}

/// An error meeting something that is not a directory where one is needed,
/// said so.
fn way_error(e: io::Error, dir: &Path) -> io::Error {
    if in_the_way(&e) {
        io::Error::new(
            e.kind(),
            format!(
                "something that is not a directory (a symbolic link?) is in the way at or above {}; a restore never follows links: move it, or pass --overwrite always to replace it",
                dir.display()
            ),
        )
    } else {
        e
    }
}

/// Makes everything written to the file system holding `dir` durable
/// (`syncfs(2)`), for callers that finish a restore with files of their own.
pub fn sync_filesystem_of(dir: &Path) -> Result<()> {
    sync_filesystem(dir)
}

/// Syncs the file system of every root, once per file system.
fn sync_roots(roots: &[Root]) -> Result<()> {
    let mut synced: Vec<u64> = Vec::new();
    for r in roots {
        let dev = match rustix::fs::fstat(r.fd()) {
            Ok(st) => st.st_dev,
            Err(e) => return Err(RepoError::io("read", &r.path, e.into())),
        };
        if !synced.contains(&dev) {
            sync_filesystem(&r.path)?;
            synced.push(dev);
        }
    }
    Ok(())
}

/// Removes the temporary files of a restore that failed before writing.
fn remove_temporaries(items: &[Item<'_>], roots: &[Root]) {
    for item in items {
        if let Action::File { temp, .. } = &item.action {
            if let Ok(dir) = fsat::open_dir(roots[item.root].fd(), item.parent()) {
                let _ = rustix::fs::unlinkat(&dir, temp.as_os_str(), rustix::fs::AtFlags::empty());
            }
        }
    }
}

/// What step 4 could not do.
#[derive(Default)]
struct Finished {
    /// Items not restored, as listings show them.
    missing: Vec<String>,
    /// Why (the first reason), when some item could not be finished.
    unrestorable: Option<RepoError>,
}

/// Step 4: complete files get their metadata and final names, incomplete
/// ones go; links, FIFOs and device nodes are made; directories get their
/// metadata, deepest first. An item that cannot be finished is removed and
/// listed (the first reason kept); the others are still finished.
fn finish_items(
    items: &[Item<'_>],
    roots: &[Root],
    done: &[bool],
    stats: &mut RestoreStats,
) -> Finished {
    let mut f = Finished::default();
    let mut parent = Parent::default();
    for (i, item) in items.iter().enumerate() {
        let temp = match &item.action {
            Action::File { temp, .. } | Action::Later { temp } => temp,
            Action::Dir | Action::Keep | Action::Socket => continue,
        };
        let shown = roots[item.root].show(&item.rel);
        let dir = match parent.get(roots, item.root, item.parent()) {
            Ok(d) => d,
            Err(e) => {
                f.missing.push(name::display(&item.node.path));
                f.unrestorable
                    .get_or_insert_with(|| RepoError::io("open the directory of", &shown, e));
                continue;
            }
        };
        if matches!(item.action, Action::File { .. }) && !done[i] {
            let _ = rustix::fs::unlinkat(dir, temp, rustix::fs::AtFlags::empty());
            f.missing.push(name::display(&item.node.path));
            continue;
        }
        match finish_one(item, dir.as_fd(), temp, stats) {
            Ok(true) => {}
            Ok(false) => f.missing.push(name::display(&item.node.path)),
            Err((op, e)) => {
                let _ = rustix::fs::unlinkat(dir, temp, rustix::fs::AtFlags::empty());
                f.missing.push(name::display(&item.node.path));
                f.unrestorable
                    .get_or_insert_with(|| RepoError::io(op, &shown, e));
            }
        }
    }
    for item in items.iter().rev() {
        if let Action::Dir = item.action {
            stats.dirs += 1;
            let shown = roots[item.root].show(&item.rel);
            let set = fsat::open_dir(roots[item.root].fd(), &item.rel)
                .map_err(|e| ("open", e))
                .and_then(|fd| {
                    fsat::set_meta_fd(fd.as_fd(), &item.meta())
                        .map_err(|e| ("set the metadata of", e))
                });
            if let Err((op, e)) = set {
                f.unrestorable
                    .get_or_insert_with(|| RepoError::io(op, &shown, e));
            }
        }
    }
    f
}

/// Finishes one item whose temporary name is `temp` in `dir`: its
/// metadata, then its final name. `Ok(false)`: not made, for want of
/// privileges (a device node as another user than root).
fn finish_one(
    item: &Item<'_>,
    dir: std::os::fd::BorrowedFd<'_>,
    temp: &OsStr,
    stats: &mut RestoreStats,
) -> std::result::Result<bool, (&'static str, io::Error)> {
    use rustix::fs::{FileType, Mode, OFlags};
    let meta = item.meta();
    let io = |op: &'static str| move |e: rustix::io::Errno| (op, io::Error::from(e));
    match (&item.action, item.node.kind) {
        (Action::File { id, .. }, _) => {
            let fd = rustix::fs::openat(
                dir,
                temp,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io("open"))?;
            fsat::check_same(fd.as_fd(), *id).map_err(|e| ("check", e))?;
            fsat::set_meta_fd(fd.as_fd(), &meta).map_err(|e| ("set the metadata of", e))?;
        }
        (_, NodeKind::Symlink) => {
            // Decoded when the item was placed; empty is what is stored.
            let target = item
                .node
                .target
                .as_deref()
                .and_then(|t| name::decode(t).ok())
                .unwrap_or_default();
            rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, temp)
                .map_err(io("create symlink"))?;
            fsat::set_link_meta(dir, temp, &meta).map_err(|e| ("set the metadata of", e))?;
            stats.symlinks += 1;
        }
        (_, NodeKind::Fifo) => {
            rustix::fs::mknodat(dir, temp, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                .map_err(io("create FIFO"))?;
            let fd = rustix::fs::openat(
                dir,
                temp,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io("open"))?;
            fsat::set_meta_fd(fd.as_fd(), &meta).map_err(|e| ("set the metadata of", e))?;
            stats.specials += 1;
        }
        (_, kind @ (NodeKind::CharDevice | NodeKind::BlockDevice)) => {
            let kind = if kind == NodeKind::CharDevice {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            match rustix::fs::mknodat(dir, temp, kind, Mode::from_raw_mode(0o600), item.node.rdev) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) => return Err((
                    "create device node",
                    io::Error::other(
                        "creating device nodes needs root (CAP_MKNOD); restore as root to get them",
                    ),
                )),
                Err(e) => return Err(io("create device node")(e)),
            }
            fsat::set_node_meta(dir, temp, &meta).map_err(|e| ("set the metadata of", e))?;
            stats.specials += 1;
        }
        _ => return Ok(true),
    }
    fsat::rename(dir, temp, item.file_name()).map_err(|e| ("rename into place", e))?;
    Ok(true)
}
