//! Backing up files, directories and streams into a snapshot.
//!
//! - [`options`]: what a backup is asked to do ([`FilesBackupOptions`],
//!   [`TreeBackupOptions`], [`StreamBackupOptions`], [`SnapshotOptions`]).
//! - [`policy`]: how a tree backup treats what it finds ([`TreePolicy`],
//!   [`Filter`], [`PlainFiles`]).
//! - [`walk`]: what is below each root, named as the snapshot names it.
//! - [`read`]: each file through the chunker into the writer, on parallel
//!   readers; [`pieces`]: a paged file's changed chunks as page patches.
//! - [`tree`]: `backup_tree`, step by step, and [`TreeDraft`].
//! - [`stream`]: `backup_stream` and [`StreamDraft`].

mod options;
mod pieces;
mod policy;
mod read;
mod stream;
mod tree;
mod walk;

use std::sync::Arc;
use std::time::Instant;

use lifeboat_types::{SnapshotId, Timestamp};

pub use options::{FilesBackupOptions, SnapshotOptions, StreamBackupOptions, TreeBackupOptions};
pub use policy::{Filter, PlainFiles, TreePolicy};
pub use stream::StreamDraft;
pub use tree::TreeDraft;
pub use walk::TreeRoot;

use crate::error::Result;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sessions::SessionGuard;
use crate::snapshot::{BackupStats, Snapshot};
use crate::writer::{WriteStats, Writer};

/// What a backup produced.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
}

impl Repository {
    /// A writer for a new backup, on the repository's index as it is now
    /// less the packs prunes marked for deletion, and the backup's session
    /// (hold it until the snapshot is stored). The session is written before
    /// the marks are listed: a prune that marks packs after this listing
    /// sees the session and does not delete them while it runs.
    fn writer(
        &self,
        wal_hold: Option<crate::sessions::WalHold>,
    ) -> Result<(Writer, Arc<crate::index::Index>, SessionGuard)> {
        let session = self.begin_backup_session(wal_hold)?;
        let (index, seen) = self.load_index_for_backup()?;
        session.set_marks_seen(seen)?;
        let index = Arc::new(index);
        Ok((
            Writer::new(self.inner.clone(), index.clone(), self.compressors),
            index,
            session,
        ))
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
            time: opts.time,
            metadata: opts.metadata.clone(),
            wal_hold: None,
        };
        self.backup_tree(&tree, &PlainFiles, progress, |_| Ok(()))
    }
}

/// When a backup that started at `start` (its recorded time: now, or the
/// time asked for) and has run since `started` ends.
fn end_time(start: Timestamp, started: Instant) -> Timestamp {
    start.checked_add(started.elapsed()).unwrap_or(start)
}

/// A snapshot's statistics from its writer's and its own counts.
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
