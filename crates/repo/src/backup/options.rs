//! What a backup is asked to do: files by path, trees under a policy,
//! streams, and what a snapshot built from streams records.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lifeboat_types::Timestamp;

use super::walk::TreeRoot;

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
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention over years), as restic's `backup --time`.
    pub time: Option<Timestamp>,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A backup of trees of files with a [`TreePolicy`](super::TreePolicy) (`files backup`, and
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
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention over years), as restic's `backup --time`.
    pub time: Option<Timestamp>,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Named objects the backup needs while it runs (a `pg backup`'s WAL
    /// from its start), held from WAL expiry by its session.
    pub wal_hold: Option<crate::sessions::WalHold>,
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
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention over years), as restic's `backup --time`.
    pub time: Option<Timestamp>,
    /// Free-form metadata for the snapshot.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// What a snapshot built by [`Repository::stream_snapshot`](crate::Repository::stream_snapshot) records about
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
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention over years), as restic's `backup --time`.
    pub time: Option<Timestamp>,
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
            time: None,
            metadata: BTreeMap::new(),
        }
    }
}
