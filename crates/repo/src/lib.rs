//! The lifeboat repository: where every backup is stored.
//!
//! It knows nothing of databases: sources hand it files, directories and
//! streams, and it stores them deduplicated, compressed and encrypted in any
//! [`lifeboat_storage::Storage`].
//!
//! Roles of the types:
//! - [`Repository`]: an open repository. [`Repository::init`] creates one,
//!   [`Repository::open`] opens one with a [`Credential`]; key slots, snapshots,
//!   backup ([`Repository::backup_files`], [`Repository::backup_stream`]),
//!   restore ([`Repository::restore`], [`Repository::restore_stream`]) and
//!   [`Repository::verify`] hang off it.
//! - [`Writer`]: the deduplicating writer that every backup streams chunks into;
//!   it owns the compressor threads, packs and index objects.
//! - [`Snapshot`], [`Node`], [`ContentRef`]: the immutable manifest of a backup.
//! - [`Index`]: the in-memory map chunk id → pack location.
//! - [`format`](mod@format): the byte layouts of stored objects (see `docs/format.md`).
//! - [`Progress`]: how long operations report progress; the binary draws it.
//!
//! Invariants: a snapshot is written last and references only chunks in packs
//! that are durably stored and listed by a stored index object; nothing is
//! written in clear but key slots' derivation parameters and objects' framing.
#![deny(missing_docs)]

pub mod audit;
mod backup;
pub mod drills;
pub mod erasure;
mod error;
pub mod format;
mod fsat;
mod holds;
mod index;
mod index_cache;
pub mod jobs;
mod keys;
mod named;
mod parallel;
mod progress;
mod prune;
mod repair;
mod replicate;
mod repository;
mod restore;
pub mod retention;
mod sessions;
mod sink;
mod snapshot;
mod stats;
mod summary;
mod verify;
mod writer;

pub use audit::{
    AuditContext, AuditName, AuditOutcome, AuditProblem, AuditRecord, AuditVerifyReport, Auditor,
    AUDIT_VERSION,
};
pub use backup::{
    BackupOutcome, FilesBackupOptions, Filter, PlainFiles, SnapshotOptions, StreamBackupOptions,
    StreamDraft, TreeBackupOptions, TreeDraft, TreePolicy, TreeRoot,
};
pub use drills::{DrillCheck, DrillRecord, SourceDrill, DRILL_VERSION};
pub use erasure::{ErasureRequest, ERASURE_VERSION};
pub use error::{RepoError, Result};
pub use holds::{Hold, HOLD_VERSION};
pub use index::{Index, Location};
pub use jobs::{started_of_key, JobOutcome, JobRecord, JOB_VERSION};
pub use keys::{FileType, ObjectKey};
pub use named::PutNamed;
pub use progress::{NoProgress, Progress};
pub use prune::{Amount, Mark, MarkOutcome, MaxUnused, PruneOptions, PruneReport};
pub use repair::{Leftover, LeftoverSummary, RepairIndexReport};
pub use replicate::{
    ArchiveSelection, DamagedObject, DeletionReport, KindAmount, ReplicaStatus, ReplicateOptions,
    ReplicateReport,
};
pub use repository::{
    default_cache_dir, Credential, InitOptions, RepoConfig, Repository, INDEX_CACHE_MIN_CHUNKS,
};
pub use restore::{sync_filesystem_of as sync_filesystem, Overwrite, RestoreOptions, RestoreStats};
pub use sessions::{ListedSession, SessionGuard, SessionKind, SessionRecord, WalHold};
pub use snapshot::{
    metadata_entries, BackupStats, ContentRef, Node, NodeKind, Pages, Patch, Skipped, Snapshot,
    SnapshotEntry,
};
pub use stats::{RepoStats, SnapshotStats};
pub use summary::SnapshotSummary;
pub use verify::{BrokenSnapshot, Damage, DataSubset, VerifyReport};
pub use writer::{WriteStats, Writer};

pub use lifeboat_chunker::ChunkerConfig;
pub use lifeboat_crypto::{Kdf, KeySlot, SecretSource};
/// Crash-safe whole-file writes (temporary file, fsync, rename, fsync of
/// the directory), for sources writing files a restore must leave durable.
pub use lifeboat_storage::durable;
pub use lifeboat_types::{
    error::report, name, ByteSize, ChunkId, Classify, ErrorClass, PackId, SnapshotId, Timestamp,
};
