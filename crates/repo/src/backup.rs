//! Backing up files, directories and streams into a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lifeboat_chunker::ChunkerConfig;
use lifeboat_types::{name, SnapshotId, Timestamp};

use crate::error::{RepoError, Result};
use crate::format;
use crate::parallel::{cores, Pool};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{
    BackupStats, ContentRef, Node, NodeKind, Pages, Patch, Skipped, Snapshot, SNAPSHOT_VERSION,
};
use crate::writer::{is_hole, WriteStats, Writer};

/// What to back up and how.
#[derive(Clone, Debug, Default)]
pub struct FilesBackupOptions {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Write a snapshot marked partial when some items cannot be read, instead
    /// of failing.
    pub allow_partial: bool,
    /// Read every file even when the parent snapshot says it is unchanged.
    pub force_read: bool,
    /// The host name recorded (and used to find the parent snapshot).
    pub hostname: String,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A backup of trees of files with a [`TreePolicy`] (`files backup`, and
/// sources such as a PostgreSQL data directory).
#[derive(Clone, Debug, Default)]
pub struct TreeBackupOptions {
    /// Where the walk starts and how items are named.
    pub roots: Vec<TreeRoot>,
    /// The snapshot's source kind (`files`, `postgres`, …).
    pub source_kind: String,
    /// The snapshot's source name.
    pub source_name: String,
    /// The paths recorded in the snapshot (and compared to find the parent).
    pub paths: Vec<String>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Write a snapshot marked partial when some items cannot be read.
    pub allow_partial: bool,
    /// Read every file even when the parent snapshot says it is unchanged.
    pub force_read: bool,
    /// The host name recorded (and used to find the parent snapshot).
    pub hostname: String,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A tree backup about to be committed: every file is stored; what is added
/// here goes into the snapshot too.
pub struct TreeDraft<'a> {
    writer: &'a Writer,
    parent: Option<SnapshotId>,
    nodes: &'a mut Vec<Node>,
    metadata: &'a mut BTreeMap<String, serde_json::Value>,
    bytes_total: &'a mut u64,
}

impl TreeDraft<'_> {
    /// Adds a file with the given content, mode and owner (e.g. a
    /// `backup_label` a database returned at the end of its backup), replacing
    /// any item of that name.
    pub fn add_file(
        &mut self,
        path: &str,
        content: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<()> {
        let mut refs = Vec::new();
        for piece in content.chunks(1 << 20) {
            refs.push(self.writer.write_chunk(piece.to_vec())?);
        }
        let path = name::encode(path.as_bytes());
        self.nodes.retain(|n| n.path != path);
        *self.bytes_total += content.len() as u64;
        self.nodes.push(Node {
            path,
            kind: NodeKind::File,
            mode: 0o100000 | (mode & 0o7777),
            uid: owner.0,
            gid: owner.1,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: content.len() as u64,
            target: None,
            rdev: 0,
            content: refs,
        });
        Ok(())
    }

    /// Sets a metadata entry.
    pub fn set_metadata(&mut self, key: &str, value: serde_json::Value) {
        self.metadata.insert(key.to_string(), value);
    }

    /// The parent snapshot whose unchanged files were reused, if any.
    pub fn parent(&self) -> Option<SnapshotId> {
        self.parent
    }
}

/// How to record a stream backup.
#[derive(Clone, Debug, Default)]
pub struct StreamBackupOptions {
    /// The stream's name in the snapshot.
    pub name: String,
    /// The snapshot's source kind (`stream`, later `pg_dump`, `redis`, …).
    pub source_kind: String,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// The host name recorded.
    pub hostname: String,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The outcome of reading one file: its content and size, or why it was skipped.
type FileRead = std::result::Result<(Vec<ContentRef>, u64), String>;

/// What a backup produced.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
}

/// The path of `p` inside a snapshot: absolute, without the leading `/`,
/// spelled as `lifeboat_types::name` says (Linux names are bytes).
fn snapshot_path(p: &Path) -> String {
    let mut b = p.as_os_str().as_bytes();
    while let Some(rest) = b.strip_prefix(b"/") {
        b = rest;
    }
    name::encode(b)
}

fn node_from_meta(path: String, meta: &fs::Metadata, kind: NodeKind) -> Node {
    Node {
        path,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        size: if kind == NodeKind::File {
            meta.len()
        } else {
            0
        },
        target: None,
        rdev: if kind.is_special() { meta.rdev() } else { 0 },
        content: Vec::new(),
    }
}

struct Walk {
    nodes: Vec<Node>,
    sources: HashMap<String, PathBuf>,
    skipped: Vec<Skipped>,
}

/// Where a walk starts and how its items are named in the snapshot.
#[derive(Clone, Debug)]
pub struct TreeRoot {
    /// The directory (or file) on disk.
    pub path: PathBuf,
    /// `None`: items keep their absolute path (without the leading `/`) and the
    /// root's ancestors are recorded too, as `files backup` does. `Some(p)`:
    /// items are named relative to the root under `p` (`""` for the top), and
    /// the root itself is not an item.
    pub prefix: Option<String>,
}

/// What a [`TreePolicy`] decides for one item of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Back it up.
    Keep,
    /// A directory kept as an empty directory: its contents are not backed up.
    Empty,
    /// Leave it out entirely.
    Skip,
}

/// How a tree backup treats what it finds. Sources with rules of their own (a
/// PostgreSQL data directory) implement it; the defaults back up everything
/// with the repository's chunking, as `files backup` does.
pub trait TreePolicy: Sync {
    /// Whether and how to back up the item at `name` (its snapshot path).
    fn filter(&self, _name: &str, _meta: &fs::Metadata) -> Filter {
        Filter::Keep
    }
    /// How to cut the file at `name` into chunks.
    fn chunker(&self, _name: &str, default: ChunkerConfig) -> ChunkerConfig {
        default
    }
    /// Looks at each chunk of the file at `name` as it is read, e.g. to check
    /// page checksums: `data` starts at byte `offset` of the file, and `file`
    /// is open for reading again.
    fn inspect(&self, _name: &str, _file: &File, _offset: u64, _data: &[u8]) {}
    /// The page size of the file at `name` when its chunks are whole pages
    /// (its chunker must cut at page boundaries): each chunk then records
    /// page fingerprints, and a chunk that changed in at most half its pages
    /// since the parent snapshot is stored as the parent's chunk (its base)
    /// plus a patch of the changed pages. `None`: chunks are stored whole.
    fn page_size(&self, _name: &str) -> Option<usize> {
        None
    }
    /// Whether `old`, unchanged by size, times and inode since the parent
    /// snapshot, may reuse the parent's content without being read.
    fn reusable(&self, _old: &Node, _parent: &Snapshot) -> bool {
        true
    }
}

/// The policy of `files backup`: everything, as it is.
pub struct PlainFiles;
impl TreePolicy for PlainFiles {}

fn name_in(root: &TreeRoot, abs_root: &Path, path: &Path) -> Option<String> {
    match &root.prefix {
        None => Some(snapshot_path(path)),
        Some(prefix) => {
            let rel = name::encode(path.strip_prefix(abs_root).ok()?.as_os_str().as_bytes());
            Some(match (prefix.is_empty(), rel.is_empty()) {
                (true, _) => rel,
                (false, true) => prefix.clone(),
                (false, false) => format!("{prefix}/{rel}"),
            })
        }
    }
}

fn walk(roots: &[TreeRoot], policy: &dyn TreePolicy) -> Result<Walk> {
    let mut w = Walk {
        nodes: Vec::new(),
        sources: HashMap::new(),
        skipped: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        let abs =
            std::path::absolute(&root.path).map_err(|e| RepoError::io("resolve", &root.path, e))?;
        // The root must exist: a typo in a path is an error, not a partial backup.
        fs::symlink_metadata(&abs).map_err(|e| RepoError::io("read", &abs, e))?;
        // Ancestors first, so a restore recreates them with their modes.
        let mut ancestors: Vec<&Path> = abs.ancestors().skip(1).collect();
        ancestors.reverse();
        for a in ancestors.into_iter().filter(|_| root.prefix.is_none()) {
            let p = snapshot_path(a);
            if p.is_empty() || !seen.insert(p.clone()) {
                continue;
            }
            if let Ok(meta) = fs::symlink_metadata(a) {
                w.nodes.push(node_from_meta(p, &meta, NodeKind::Dir));
            }
        }
        let mut stack = vec![abs.clone()];
        while let Some(path) = stack.pop() {
            let Some(p) = name_in(root, &abs, &path) else {
                continue;
            };
            if !seen.insert(p.clone()) {
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    w.skipped.push(Skipped {
                        path: p,
                        reason: "it vanished during the backup".into(),
                    });
                    continue;
                }
                Err(e) => {
                    w.skipped.push(Skipped {
                        path: p,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let is_top = root.prefix.as_deref() == Some(p.as_str()) && path == abs;
            let filter = if is_top {
                Filter::Keep
            } else {
                policy.filter(&p, &meta)
            };
            let ft = meta.file_type();
            if filter == Filter::Skip {
                // Skipped here, it may still come from another root (a
                // tablespace link skipped in the data directory is walked as
                // its own root under the same name).
                seen.remove(&p);
                continue;
            }
            if filter == Filter::Empty && !ft.is_dir() {
                // A directory kept empty may be a symlink elsewhere (pg_wal on
                // another disk): it comes back as a plain empty directory,
                // never as a link into the original's files.
                let mut n = node_from_meta(p, &meta, NodeKind::Dir);
                n.mode = 0o040700;
                w.nodes.push(n);
                continue;
            }
            if ft.is_dir() {
                // The top of a relative root is the snapshot's root: not an item.
                if !p.is_empty() {
                    w.nodes
                        .push(node_from_meta(p.clone(), &meta, NodeKind::Dir));
                }
                if filter == Filter::Empty {
                    continue;
                }
                match fs::read_dir(&path) {
                    Ok(entries) => {
                        for entry in entries {
                            match entry {
                                Ok(e) => stack.push(e.path()),
                                Err(e) => w.skipped.push(Skipped {
                                    path: p.clone(),
                                    reason: format!("listing failed: {e}"),
                                }),
                            }
                        }
                    }
                    // The directory itself is kept; its contents are what is lost.
                    Err(e) => w.skipped.push(Skipped {
                        path: p,
                        reason: format!("cannot list the directory: {e}"),
                    }),
                }
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) => {
                        let mut n = node_from_meta(p, &meta, NodeKind::Symlink);
                        n.target = Some(name::encode(t.as_os_str().as_bytes()));
                        w.nodes.push(n);
                    }
                    Err(e) => w.skipped.push(Skipped {
                        path: p,
                        reason: e.to_string(),
                    }),
                }
            } else if ft.is_file() {
                w.sources.insert(p.clone(), path.clone());
                w.nodes.push(node_from_meta(p, &meta, NodeKind::File));
            } else {
                let kind = if ft.is_fifo() {
                    NodeKind::Fifo
                } else if ft.is_socket() {
                    NodeKind::Socket
                } else if ft.is_char_device() {
                    NodeKind::CharDevice
                } else if ft.is_block_device() {
                    NodeKind::BlockDevice
                } else {
                    w.skipped.push(Skipped {
                        path: p,
                        reason: format!("an unknown kind of file (mode {:o})", meta.mode()),
                    });
                    continue;
                };
                w.nodes.push(node_from_meta(p, &meta, kind));
            }
        }
    }
    w.nodes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(w)
}

/// Files up to this size are read whole into an exact-size buffer and cut in
/// memory; larger ones are streamed through the chunker's buffer.
const READ_WHOLE: u64 = 4 << 20;

/// Reads one file through the chunker into the writer.
#[allow(clippy::too_many_arguments)]
fn read_file(
    path: &Path,
    name: &str,
    size_hint: u64,
    policy: &dyn TreePolicy,
    default_chunker: ChunkerConfig,
    writer: &Writer,
    old: Option<&[ContentRef]>,
    progress: &dyn Progress,
) -> Result<FileRead> {
    let chunker = &policy.chunker(name, default_chunker);
    let mut pieces = Pieces {
        writer,
        page: policy.page_size(name),
        old: old.unwrap_or_default(),
        old_at: 0,
        old_offset: 0,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err("it vanished during the backup".into()))
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut content = Vec::new();
    let mut size = 0u64;
    if size_hint <= READ_WHOLE {
        let mut data = Vec::with_capacity(size_hint as usize);
        if let Err(e) = (&file).read_to_end(&mut data) {
            return Ok(Err(format!("read failed: {e}")));
        }
        policy.inspect(name, &file, 0, &data);
        let cuts = chunker
            .cut(&data)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        if cuts.len() == 1 {
            // The common case for small files: hand over the buffer itself.
            size = data.len() as u64;
            content.push(pieces.write(0, data)?);
        } else {
            for r in cuts {
                let at = size;
                size += r.len() as u64;
                content.push(pieces.write(at, data[r].to_vec())?);
            }
        }
        progress.advance(size);
        return Ok(Ok((content, size)));
    }
    let chunks = chunker
        .chunker(&file)
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    for chunk in chunks {
        match chunk {
            Ok(data) => {
                let n = data.len() as u64;
                policy.inspect(name, &file, size, &data);
                content.push(pieces.write(size, data)?);
                size += n;
                progress.advance(n);
            }
            Err(e) => return Ok(Err(format!("read failed: {e}"))),
        }
    }
    Ok(Ok((content, size)))
}

/// Writes the pieces of one file, in order, patching paged ones against the
/// parent's pieces at the same offsets.
struct Pieces<'a> {
    writer: &'a Writer,
    page: Option<usize>,
    old: &'a [ContentRef],
    old_at: usize,
    old_offset: u64,
}

impl Pieces<'_> {
    /// The parent's piece starting at `offset`, if one does.
    fn old_at(&mut self, offset: u64) -> Option<&ContentRef> {
        while self.old_offset < offset && self.old_at < self.old.len() {
            self.old_offset += self.old[self.old_at].len;
            self.old_at += 1;
        }
        self.old
            .get(self.old_at)
            .filter(|_| self.old_offset == offset)
    }

    fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<ContentRef> {
        let Some(page) = self.page else {
            return self.writer.write_chunk(data);
        };
        let len = data.len() as u64;
        if is_hole(&data) {
            return Ok(ContentRef::plain(None, len));
        }
        let writer = self.writer;
        let mut marks = Vec::with_capacity(data.len() / page);
        let Some(id) = writer
            .keyring()
            .chunk_id_with_pages(&data, page, &mut marks)
        else {
            return writer.write_chunk(data);
        };
        let old = self.old_at(offset).filter(|o| o.len == len);
        // The same bytes as the parent's piece: its reference, as it is.
        if let Some(o) = old.filter(|o| o.id == Some(id) && o.pages.is_some()) {
            writer.reused();
            return Ok(o.clone());
        }
        // At most half the pages changed since the parent's base: store
        // those pages only. Bases are always whole chunks, so a restore
        // reads at most two chunks for a piece, however long the chain of
        // incremental backups.
        let based = old.and_then(|o| {
            let p = o.pages.as_deref()?;
            let base = o.base()?;
            (p.size as usize == page && p.marks.len() == marks.len() && writer.indexed(&base))
                .then_some((base, p))
        });
        if let Some((base, p)) = based {
            let changed: Vec<usize> = (0..marks.len())
                .filter(|&i| marks[i] != p.marks[i])
                .collect();
            if !changed.is_empty() && changed.len() * 2 <= marks.len() {
                let patch = format::encode_patch(&data, page, &changed);
                let pages = writer.keyring().chunk_id(&patch);
                writer.store(pages, patch)?;
                return Ok(ContentRef {
                    id: Some(id),
                    len,
                    pages: Some(Box::new(Pages {
                        size: page as u32,
                        marks: p.marks.clone(),
                        patch: Some(Patch { base, pages }),
                    })),
                });
            }
        }
        writer.store(id, data)?;
        Ok(ContentRef {
            id: Some(id),
            len,
            pages: Some(Box::new(Pages {
                size: page as u32,
                marks,
                patch: None,
            })),
        })
    }
}

fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
}

impl Repository {
    fn writer(&self) -> Result<(Writer, Arc<crate::index::Index>)> {
        let index = Arc::new(self.load_index()?);
        Ok((Writer::new(self.inner.clone(), index.clone()), index))
    }

    /// Backs up files and directories; see [`FilesBackupOptions`].
    ///
    /// Files whose size, mtime, ctime and inode match the newest snapshot of the
    /// same paths from the same host are not read again. A snapshot is written
    /// only after every chunk it references is durably stored and indexed.
    pub fn backup_files(
        &self,
        opts: &FilesBackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        let paths: Vec<String> = opts
            .paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect();
        let tree = TreeBackupOptions {
            roots: opts
                .paths
                .iter()
                .map(|p| TreeRoot {
                    path: p.clone(),
                    prefix: None,
                })
                .collect(),
            source_kind: "files".into(),
            source_name: paths.join(" "),
            paths,
            tags: opts.tags.clone(),
            allow_partial: opts.allow_partial,
            force_read: opts.force_read,
            hostname: opts.hostname.clone(),
            metadata: opts.metadata.clone(),
        };
        self.backup_tree(&tree, &PlainFiles, progress, |_| Ok(()))
    }

    /// Backs up trees of files under the rules of `policy`; see
    /// [`TreeBackupOptions`]. The parent snapshot (whose unchanged files are
    /// reused without reading) is the newest one of the same source kind, name,
    /// paths and host. Once every file is stored, `finish` may add items and
    /// metadata (and fail the backup); only then is the snapshot written.
    pub fn backup_tree(
        &self,
        opts: &TreeBackupOptions,
        policy: &dyn TreePolicy,
        progress: &dyn Progress,
        finish: impl FnOnce(&mut TreeDraft<'_>) -> Result<()>,
    ) -> Result<BackupOutcome> {
        let started = Instant::now();
        let start_time = Timestamp::now();
        let walked = walk(&opts.roots, policy)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            items = walked.nodes.len(),
            "walked"
        );
        let mut nodes = walked.nodes;
        let mut skipped = walked.skipped;

        let parent = if opts.force_read {
            None
        } else {
            self.snapshots()?.into_iter().rev().find(|s| {
                s.snapshot.source_kind == opts.source_kind
                    && s.snapshot.source_name == opts.source_name
                    && s.snapshot.hostname == opts.hostname
                    && s.snapshot.paths == opts.paths
            })
        };
        let parent_nodes: HashMap<&str, &Node> = parent
            .as_ref()
            .map(|p| {
                p.snapshot
                    .nodes
                    .iter()
                    .map(|n| (n.path.as_str(), n))
                    .collect()
            })
            .unwrap_or_default();

        let mut jobs = Vec::new();
        let mut bytes_total = 0u64;
        let mut to_read = 0u64;
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.kind != NodeKind::File {
                continue;
            }
            bytes_total += node.size;
            match (parent_nodes.get(node.path.as_str()), &parent) {
                (Some(old), Some(p))
                    if unchanged(old, node) && policy.reusable(old, &p.snapshot) =>
                {
                    node.content = old.content.clone()
                }
                _ => {
                    to_read += node.size;
                    jobs.push(i);
                }
            }
        }
        progress.start("backup", Some(to_read));
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            to_read,
            parent = parent.is_some(),
            "reading"
        );

        let (writer, _index) = self.writer()?;
        let chunker = self.inner.config.chunker;
        let readers = Pool::new(cores().min(jobs.len().max(1)));
        // The first error stops every reader: the backup has failed.
        let read = readers.try_map(&jobs, |&i| {
            let node = &nodes[i];
            let Some(src) = walked.sources.get(&node.path) else {
                return Ok(None);
            };
            let old = parent_nodes
                .get(node.path.as_str())
                .filter(|o| o.kind == NodeKind::File)
                .map(|o| o.content.as_slice());
            read_file(
                src, &node.path, node.size, policy, chunker, &writer, old, progress,
            )
            .map(Some)
        });
        let results = match read {
            Ok(r) => r,
            Err(e) => {
                drop(writer);
                return Err(e);
            }
        };
        let mut bytes_read = 0u64;
        let mut failed = std::collections::HashSet::new();
        for (&i, r) in jobs.iter().zip(results) {
            let Some(r) = r else { continue };
            match r {
                Ok((content, size)) => {
                    bytes_read += size;
                    bytes_total = bytes_total - nodes[i].size + size;
                    nodes[i].size = size;
                    nodes[i].content = content;
                }
                Err(reason) => {
                    progress.warn(&format!("{}: {reason}", nodes[i].path));
                    skipped.push(Skipped {
                        path: nodes[i].path.clone(),
                        reason,
                    });
                    failed.insert(i);
                }
            }
        }
        let mut i = 0;
        nodes.retain(|_| {
            let keep = !failed.contains(&i);
            i += 1;
            keep
        });
        let mut metadata = opts.metadata.clone();
        let finished = if skipped.is_empty() || opts.allow_partial {
            let mut draft = TreeDraft {
                writer: &writer,
                parent: parent.as_ref().map(|p| p.id),
                nodes: &mut nodes,
                metadata: &mut metadata,
                bytes_total: &mut bytes_total,
            };
            finish(&mut draft)
        } else {
            Err(RepoError::Incomplete {
                count: skipped.len(),
                first: format!("{}: {}", skipped[0].path, skipped[0].reason),
            })
        };
        // Whatever else happens, finish the writer: what was uploaded gets
        // indexed, so a retry reuses it.
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "finishing the writer"
        );
        let stats = writer.finish()?;
        progress.finish();
        finished?;
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        let files = nodes.iter().filter(|n| n.kind == NodeKind::File).count() as u64;
        let dirs = nodes.iter().filter(|n| n.kind == NodeKind::Dir).count() as u64;
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            source_kind: opts.source_kind.clone(),
            source_name: opts.source_name.clone(),
            hostname: opts.hostname.clone(),
            paths: opts.paths.clone(),
            tags: opts.tags.clone(),
            start_time,
            end_time: Timestamp::now(),
            partial: !skipped.is_empty(),
            skipped,
            parent: parent.map(|p| p.id),
            metadata,
            stats: stats_of(&stats, files, dirs, bytes_total, bytes_read, started),
            nodes,
        };
        let id = self.save_snapshot(&snapshot)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "snapshot saved");
        Ok(BackupOutcome { id, snapshot })
    }

    /// Backs up one stream (standard input, a dump) as a snapshot holding a
    /// single item named `name`.
    pub fn backup_stream(
        &self,
        opts: &StreamBackupOptions,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        let mut draft = self.stream_snapshot(&SnapshotOptions {
            metadata: opts.metadata.clone(),
            ..SnapshotOptions::named(&opts.source_kind, &opts.name, &opts.hostname, &opts.tags)
        })?;
        progress.start("backup", None);
        draft.add_stream(&opts.name, reader, progress)?;
        progress.finish();
        draft.commit()
    }

    /// Starts a snapshot whose items are added one by one
    /// ([`StreamDraft::add_stream`]): dumps that arrive as streams. Nothing
    /// is recorded unless [`StreamDraft::commit`] is called.
    pub fn stream_snapshot(&self, opts: &SnapshotOptions) -> Result<StreamDraft<'_>> {
        let (writer, _index) = self.writer()?;
        Ok(StreamDraft {
            repo: self,
            writer,
            opts: opts.clone(),
            nodes: Vec::new(),
            started: Instant::now(),
            start_time: Timestamp::now(),
            bytes_read: 0,
        })
    }
}

/// What a snapshot built by [`Repository::stream_snapshot`] records about
/// its source.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// The source kind (`stream`, `pg_dump`, `redis`, …).
    pub source_kind: String,
    /// The source's name.
    pub source_name: String,
    /// The paths recorded.
    pub paths: Vec<String>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// The host name recorded.
    pub hostname: String,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl SnapshotOptions {
    /// A snapshot of kind `kind` of the source `name` (also its one path).
    pub fn named(kind: &str, name: &str, hostname: &str, tags: &[String]) -> Self {
        SnapshotOptions {
            source_kind: kind.to_string(),
            source_name: name.to_string(),
            paths: vec![name.to_string()],
            tags: tags.to_vec(),
            hostname: hostname.to_string(),
            metadata: BTreeMap::new(),
        }
    }
}

/// A snapshot being built from streams; see [`Repository::stream_snapshot`].
/// Dropped without [`StreamDraft::commit`], it records nothing (what was
/// already uploaded is indexed and reused by the next backup).
pub struct StreamDraft<'r> {
    repo: &'r Repository,
    writer: Writer,
    opts: SnapshotOptions,
    nodes: Vec<Node>,
    started: Instant,
    start_time: Timestamp,
    /// Bytes read from the streams, a replaced one's too (the snapshot's
    /// total is its items' sizes).
    bytes_read: u64,
}

impl StreamDraft<'_> {
    /// Reads `reader` to its end into an item named `name` (content-defined
    /// chunks, so a slowly changing stream deduplicates against earlier
    /// ones); returns its length. A read error fails the item.
    pub fn add_stream(
        &mut self,
        name: &str,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let chunker = self.repo.inner.config.chunker;
        self.add_stream_with(name, reader, chunker, progress)
    }

    /// [`StreamDraft::add_stream`] cut by `chunker` instead of the
    /// repository's (smaller chunks for dumps whose changes are small).
    pub fn add_stream_with(
        &mut self,
        name: &str,
        reader: impl Read,
        chunker: ChunkerConfig,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let mut content = Vec::new();
        let mut size = 0u64;
        let chunks = chunker
            .chunker(reader)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        for chunk in chunks {
            let data = chunk.map_err(|e| RepoError::io("read", Path::new(name), e))?;
            let n = data.len() as u64;
            size += n;
            content.push(self.writer.write_chunk(data)?);
            progress.advance(n);
        }
        let path = name::encode(name.trim_start_matches('/').as_bytes());
        self.nodes.retain(|n| n.path != path);
        self.nodes.push(Node {
            path,
            kind: NodeKind::Stream,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size,
            target: None,
            rdev: 0,
            content,
        });
        self.bytes_read += size;
        Ok(size)
    }

    /// Adds every file below `dir` (a dump in directory format) as an item
    /// named `prefix/<path below dir>`; returns the bytes read.
    pub fn add_dir(&mut self, prefix: &str, dir: &Path, progress: &dyn Progress) -> Result<u64> {
        let mut stack = vec![dir.to_path_buf()];
        let mut files = Vec::new();
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).map_err(|e| RepoError::io("list", &d, e))? {
                let path = e.map_err(|e| RepoError::io("list", &d, e))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        let mut total = 0;
        for f in files {
            let rel = f.strip_prefix(dir).unwrap_or(&f).to_string_lossy();
            let file = File::open(&f).map_err(|e| RepoError::io("open", &f, e))?;
            total += self.add_stream(&format!("{prefix}/{rel}"), file, progress)?;
        }
        Ok(total)
    }

    /// Sets a metadata entry.
    pub fn set_metadata(&mut self, key: &str, value: serde_json::Value) {
        self.opts.metadata.insert(key.to_string(), value);
    }

    /// Waits until everything added is stored and indexed, then writes the
    /// snapshot.
    pub fn commit(self) -> Result<BackupOutcome> {
        let StreamDraft {
            repo,
            writer,
            opts,
            mut nodes,
            started,
            start_time,
            bytes_read,
        } = self;
        let stats = writer.finish()?;
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        let files = nodes.len() as u64;
        let total = nodes.iter().map(|n| n.size).sum();
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            source_kind: opts.source_kind,
            source_name: opts.source_name,
            hostname: opts.hostname,
            paths: opts.paths,
            tags: opts.tags,
            start_time,
            end_time: Timestamp::now(),
            partial: false,
            skipped: Vec::new(),
            parent: None,
            metadata: opts.metadata,
            stats: stats_of(&stats, files, 0, total, bytes_read, started),
            nodes,
        };
        let id = repo.save_snapshot(&snapshot)?;
        Ok(BackupOutcome { id, snapshot })
    }
}

fn stats_of(
    w: &WriteStats,
    files: u64,
    dirs: u64,
    total: u64,
    read: u64,
    started: Instant,
) -> BackupStats {
    BackupStats {
        files,
        dirs,
        bytes_total: total,
        bytes_read: read,
        bytes_new: w.bytes_new,
        bytes_stored: w.bytes_stored,
        chunks: w.chunks,
        chunks_new: w.chunks_new,
        packs: w.packs,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}
