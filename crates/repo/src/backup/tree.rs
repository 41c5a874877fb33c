//! A tree backup (`backup_tree`), step by step: walk the roots, find the
//! parent snapshot, reuse what did not change, read the rest on parallel
//! readers, record what was read, let the source finish the draft, then
//! write the snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use lifeboat_types::{name, SnapshotId, Timestamp};

use super::options::TreeBackupOptions;
use super::policy::TreePolicy;
use super::read::{FileRead, FileReader};
use super::walk::{walk, Walk};
use super::{stats_of, BackupOutcome};
use crate::error::{RepoError, Result};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Node, NodeKind, Skipped, Snapshot, SnapshotEntry, SNAPSHOT_VERSION};
use crate::writer::{WriteStats, Writer};

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

    /// The items the snapshot will hold, as they stand.
    pub fn nodes(&self) -> &[Node] {
        self.nodes
    }

    /// The parent snapshot whose unchanged files were reused, if any.
    pub fn parent(&self) -> Option<SnapshotId> {
        self.parent
    }
}

/// A tree backup's items as the steps leave them.
struct Tree {
    /// Every item, sorted by path after the walk; files get their content
    /// as they are reused or read.
    nodes: Vec<Node>,
    /// What could not be backed up, and why.
    skipped: Vec<Skipped>,
    /// The files' bytes, as last seen.
    bytes_total: u64,
    /// Bytes read from files.
    bytes_read: u64,
    /// The policy's [`TreePolicy::vanished_is_fine`].
    vanished_is_fine: bool,
}

/// The files a backup must read: positions in the tree's items.
struct ReadPlan {
    jobs: Vec<usize>,
    /// Their bytes, as the walk saw them.
    to_read: u64,
}

impl Repository {
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
        let start_time = opts.time.unwrap_or_else(Timestamp::now);
        let Walk {
            nodes,
            sources,
            skipped,
        } = walk(&opts.roots, policy)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            items = nodes.len(),
            "walked"
        );
        let mut tree = Tree {
            nodes,
            skipped,
            bytes_total: 0,
            bytes_read: 0,
            vanished_is_fine: policy.vanished_is_fine(),
        };
        let parent = self.tree_parent(opts)?;
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
        // The writer (and the backup's session) first: a file is reused from
        // the parent only when every chunk it needs is indexed now and in no
        // pack a prune marked for deletion.
        let (writer, index, session) = self.writer(opts.wal_hold.clone())?;
        let plan = tree.reuse_unchanged(parent.as_ref(), &parent_nodes, policy, &index);
        progress.start("backup", Some(plan.to_read));
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            to_read = plan.to_read,
            parent = parent.is_some(),
            "reading"
        );

        let reader = FileReader {
            policy,
            chunker: self.inner.config.chunker,
            writer: &writer,
            progress,
        };
        let read = match reader.read_all(&plan.jobs, &tree.nodes, &sources, &parent_nodes) {
            Ok(r) => r,
            Err(e) => {
                drop(writer);
                return Err(e);
            }
        };
        tree.record_reads(&plan.jobs, read, progress);
        // The source may have changed the tree while it was read: then the
        // tree as it is now is what is recorded.
        let settled = policy.settle().and_then(|changed| {
            if !changed {
                return Ok(());
            }
            let again = walk(&opts.roots, policy)?;
            let plan = tree.rewalk(
                again.nodes,
                again.skipped,
                parent.as_ref(),
                &parent_nodes,
                policy,
                &index,
            );
            progress.set_total(tree.bytes_read + plan.to_read);
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                to_read = plan.to_read,
                "walked again"
            );
            let read = reader.read_all(&plan.jobs, &tree.nodes, &again.sources, &parent_nodes)?;
            tree.record_reads(&plan.jobs, read, progress);
            Ok(())
        });
        if let Err(e) = settled {
            drop(writer);
            return Err(e);
        }
        let mut metadata = opts.metadata.clone();
        let parent_id = parent.as_ref().map(|p| p.id);
        let finished = tree.finish(
            &writer,
            parent_id,
            &mut metadata,
            opts.allow_partial,
            finish,
        );
        // Whatever else happens, finish the writer: what was uploaded gets
        // indexed, so a retry reuses it.
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "finishing the writer"
        );
        let stats = writer.finish()?;
        progress.finish();
        finished?;
        let snapshot = tree.into_snapshot(opts, start_time, parent_id, metadata, &stats, started);
        session.check_alive()?;
        let id = self.save_snapshot(&snapshot)?;
        drop(session);
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "snapshot saved");
        Ok(BackupOutcome { id, snapshot })
    }

    /// The parent of a tree backup: the newest snapshot of the same source
    /// kind, name, host and paths (none when every file is to be read).
    fn tree_parent(&self, opts: &TreeBackupOptions) -> Result<Option<SnapshotEntry>> {
        Ok(if opts.force_read {
            None
        } else {
            self.snapshots()?.into_iter().rev().find(|s| {
                s.snapshot.source_kind == opts.source_kind
                    && s.snapshot.source_name == opts.source_name
                    && s.snapshot.hostname == opts.hostname
                    && s.snapshot.paths == opts.paths
            })
        })
    }
}

impl Tree {
    /// Gives every file unchanged since the parent snapshot (and reusable
    /// under the policy) the parent's content; counts the files' bytes.
    /// Returns the files left to read.
    fn reuse_unchanged(
        &mut self,
        parent: Option<&SnapshotEntry>,
        parent_nodes: &HashMap<&str, &Node>,
        policy: &dyn TreePolicy,
        index: &crate::index::Index,
    ) -> ReadPlan {
        let files: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind == NodeKind::File)
            .map(|(i, _)| i)
            .collect();
        self.reuse_unchanged_of(&files, parent, parent_nodes, policy, index)
    }

    /// [`Tree::reuse_unchanged`] for the files at `positions`.
    fn reuse_unchanged_of(
        &mut self,
        positions: &[usize],
        parent: Option<&SnapshotEntry>,
        parent_nodes: &HashMap<&str, &Node>,
        policy: &dyn TreePolicy,
        index: &crate::index::Index,
    ) -> ReadPlan {
        let mut jobs = Vec::new();
        let mut to_read = 0u64;
        for &i in positions {
            let node = &mut self.nodes[i];
            self.bytes_total += node.size;
            match (parent_nodes.get(node.path.as_str()), parent) {
                (Some(old), Some(p))
                    if unchanged(old, node)
                        && policy.reusable(old, &p.snapshot)
                        && old
                            .content
                            .iter()
                            .flat_map(|c| c.stored())
                            .all(|c| index.contains(&c)) =>
                {
                    node.content = old.content.clone()
                }
                _ => {
                    to_read += node.size;
                    jobs.push(i);
                }
            }
        }
        ReadPlan { jobs, to_read }
    }

    /// Takes a second walk's items in place of the first's: each file the
    /// policy calls immutable and unchanged (size, times, inode) since the
    /// first walk keeps what it was given then, read or reused; the others
    /// are reused from the parent when unchanged since it, else left to
    /// read. The first walk's skipped
    /// items give way to the second's.
    fn rewalk(
        &mut self,
        nodes: Vec<Node>,
        skipped: Vec<Skipped>,
        parent: Option<&SnapshotEntry>,
        parent_nodes: &HashMap<&str, &Node>,
        policy: &dyn TreePolicy,
        index: &crate::index::Index,
    ) -> ReadPlan {
        let first: HashMap<String, Node> = std::mem::replace(&mut self.nodes, nodes)
            .into_iter()
            .filter(|n| n.kind == NodeKind::File)
            .map(|n| (n.path.clone(), n))
            .collect();
        self.skipped = skipped;
        self.bytes_total = 0;
        let mut left = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if node.kind != NodeKind::File {
                continue;
            }
            match first.get(&node.path) {
                Some(seen) if unchanged(seen, node) && policy.immutable(&node.path) => {
                    self.bytes_total += node.size;
                    node.content = seen.content.clone();
                }
                _ => left.push(i),
            }
        }
        self.reuse_unchanged_of(&left, parent, parent_nodes, policy, index)
    }

    /// Records what reading the files `jobs` gave: each file's content and
    /// size as read; a file that could not be read is left out, with why
    /// (and a warning).
    fn record_reads(
        &mut self,
        jobs: &[usize],
        read: Vec<Option<FileRead>>,
        progress: &dyn Progress,
    ) {
        let nodes = &mut self.nodes;
        let mut failed = HashSet::new();
        for (&i, r) in jobs.iter().zip(read) {
            let Some(r) = r else { continue };
            match r {
                Ok((content, size)) => {
                    self.bytes_read += size;
                    self.bytes_total = self.bytes_total - nodes[i].size + size;
                    nodes[i].size = size;
                    nodes[i].content = content;
                }
                Err(reason) if reason == super::policy::VANISHED && self.vanished_is_fine => {
                    tracing::debug!(path = %nodes[i].path, "removed while the backup ran: left out");
                    failed.insert(i);
                }
                Err(reason) => {
                    progress.warn(&format!("{}: {reason}", nodes[i].path));
                    self.skipped.push(Skipped {
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
    }

    /// Hands the draft to the source's `finish` when nothing was skipped or
    /// a partial backup is allowed; else the backup is incomplete.
    fn finish(
        &mut self,
        writer: &Writer,
        parent: Option<SnapshotId>,
        metadata: &mut BTreeMap<String, serde_json::Value>,
        allow_partial: bool,
        finish: impl FnOnce(&mut TreeDraft<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.skipped.is_empty() || allow_partial {
            let mut draft = TreeDraft {
                writer,
                parent,
                nodes: &mut self.nodes,
                metadata,
                bytes_total: &mut self.bytes_total,
            };
            finish(&mut draft)
        } else {
            Err(RepoError::Incomplete {
                count: self.skipped.len(),
                first: format!("{}: {}", self.skipped[0].path, self.skipped[0].reason),
            })
        }
    }

    /// The snapshot of the tree, once everything it references is stored.
    fn into_snapshot(
        mut self,
        opts: &TreeBackupOptions,
        start_time: Timestamp,
        parent: Option<SnapshotId>,
        metadata: BTreeMap<String, serde_json::Value>,
        stats: &WriteStats,
        started: Instant,
    ) -> Snapshot {
        self.nodes.sort_by(|a, b| a.path.cmp(&b.path));
        let nodes = self.nodes;
        let files = nodes.iter().filter(|n| n.kind == NodeKind::File).count() as u64;
        let dirs = nodes.iter().filter(|n| n.kind == NodeKind::Dir).count() as u64;
        Snapshot {
            version: SNAPSHOT_VERSION,
            source_kind: opts.source_kind.clone(),
            source_name: opts.source_name.clone(),
            hostname: opts.hostname.clone(),
            paths: opts.paths.clone(),
            tags: opts.tags.clone(),
            start_time,
            end_time: super::end_time(start_time, started),
            partial: !self.skipped.is_empty(),
            skipped: self.skipped,
            parent,
            metadata,
            stats: stats_of(
                stats,
                files,
                dirs,
                self.bytes_total,
                self.bytes_read,
                started,
            ),
            nodes,
            loaded_as: None,
        }
    }
}

fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
}
