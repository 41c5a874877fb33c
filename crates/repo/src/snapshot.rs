//! Snapshots: immutable manifests of one backup.

use std::collections::BTreeMap;

use lifeboat_types::{ChunkId, SnapshotId};
use serde::{Deserialize, Serialize};

/// A piece of an item's content: a chunk and its length, or a hole (zeros that
/// are not stored and are restored as a sparse region).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef(pub Option<ChunkId>, pub u64);

impl ContentRef {
    /// The chunk, or `None` for a hole.
    pub fn chunk(&self) -> Option<ChunkId> {
        self.0
    }
    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.1
    }
    /// True for a zero-length piece (never produced by the writer).
    pub fn is_empty(&self) -> bool {
        self.1 == 0
    }
}

/// What kind of item a [`Node`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A stream with no file metadata (`files backup --stdin`, a dump).
    Stream,
}

/// One item of a snapshot's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The path inside the snapshot, `/`-separated, without a leading `/`.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Unix permission bits and file type bits as `st_mode` has them.
    #[serde(default)]
    pub mode: u32,
    /// Owner user id.
    #[serde(default)]
    pub uid: u32,
    /// Owner group id.
    #[serde(default)]
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch (change detection).
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode number (change detection).
    #[serde(default)]
    pub inode: u64,
    /// Size in bytes (files and streams).
    #[serde(default)]
    pub size: u64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Content, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentRef>,
}

/// An item that could not be backed up, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path.
    pub path: String,
    /// Why, as the OS or lifeboat said it.
    pub reason: String,
}

/// Figures of one backup, stored with its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Files (and streams) in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of content the snapshot describes.
    pub bytes_total: u64,
    /// Bytes actually read (files unchanged since the parent are not read).
    pub bytes_read: u64,
    /// Bytes of chunks that were new to the repository, before compression.
    pub bytes_new: u64,
    /// Bytes uploaded for new chunks, after compression and encryption.
    pub bytes_stored: u64,
    /// Chunks referenced.
    pub chunks: u64,
    /// Chunks that were new.
    pub chunks_new: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

/// The current snapshot document version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A snapshot: what was backed up, from where, when, and the tree of items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Document version.
    pub version: u32,
    /// The kind of source: `files`, `stream`, and later `postgres`, `redis`, ….
    pub source_kind: String,
    /// The source's name (a configured source, or the paths backed up).
    pub source_name: String,
    /// The host that made the backup.
    pub hostname: String,
    /// The paths given to the backup.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Tags given by the user.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Start time, RFC 3339.
    pub start_time: String,
    /// End time, RFC 3339.
    pub end_time: String,
    /// True when some items were skipped (`--allow-partial`).
    #[serde(default)]
    pub partial: bool,
    /// The items skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// The snapshot whose unchanged files were reused without reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Free-form facts from the source (LSNs, versions, row counts, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Figures of the backup.
    pub stats: BackupStats,
    /// The items, sorted by path; parents come before their children.
    pub nodes: Vec<Node>,
}

impl Snapshot {
    /// Every chunk the snapshot references.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.nodes
            .iter()
            .flat_map(|n| n.content.iter().filter_map(|c| c.chunk()))
    }
}

/// A snapshot with its id, as listed.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// The id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
}
