//! Snapshots built from streams: `backup_stream` (one stream) and
//! [`StreamDraft`], a snapshot built item by item (dumps).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use lifeboat_chunker::ChunkerConfig;
use lifeboat_types::{name, Timestamp};

use super::options::{SnapshotOptions, StreamBackupOptions};
use super::{stats_of, BackupOutcome};
use crate::error::{RepoError, Result};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Node, NodeKind, Snapshot, SNAPSHOT_VERSION};
use crate::writer::Writer;

impl Repository {
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
            time: opts.time,
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
        let (writer, _index, session) = self.writer(None)?;
        Ok(StreamDraft {
            repo: self,
            writer,
            session,
            opts: opts.clone(),
            nodes: Vec::new(),
            started: Instant::now(),
            start_time: opts.time.unwrap_or_else(Timestamp::now),
            bytes_read: 0,
        })
    }
}

/// A snapshot being built from streams; see [`Repository::stream_snapshot`].
/// Dropped without [`StreamDraft::commit`], it records nothing (what was
/// already uploaded is indexed and reused by the next backup).
pub struct StreamDraft<'r> {
    repo: &'r Repository,
    writer: Writer,
    /// The backup's session, ended once the snapshot is stored (or dropped).
    session: crate::sessions::SessionGuard,
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
            session,
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
            end_time: super::end_time(start_time, started),
            partial: false,
            skipped: Vec::new(),
            parent: None,
            metadata: opts.metadata,
            stats: stats_of(&stats, files, 0, total, bytes_read, started),
            nodes,
            loaded_as: None,
        };
        session.check_alive()?;
        let id = repo.save_snapshot(&snapshot)?;
        drop(session);
        Ok(BackupOutcome { id, snapshot })
    }
}
