//! `stats`: what the repository holds, and what forgetting each snapshot
//! would free.

use lifeboat_types::{SnapshotId, Timestamp};
use serde::Serialize;

use crate::error::Result;
use crate::progress::Progress;
use crate::repository::Repository;

/// One snapshot's share of the repository.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStats {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken.
    pub time: Timestamp,
    /// Its source kind and name.
    pub source_kind: String,
    /// Its source name.
    pub source_name: String,
    /// The bytes of its items (logical size).
    pub logical_bytes: u64,
    /// Distinct chunks it uses.
    pub chunks: u64,
    /// Stored bytes of the chunks no other snapshot uses: what forgetting it
    /// (then a prune) would free, at most.
    pub unique_stored_bytes: u64,
}

/// Repository totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Chunks some snapshot uses.
    pub chunks_used: u64,
    /// Packs indexed.
    pub packs: u64,
    /// Bytes of the stored packs.
    pub stored_bytes: u64,
    /// Plaintext bytes of the indexed chunks.
    pub raw_bytes: u64,
    /// The logical bytes of every snapshot together.
    pub logical_bytes: u64,
    /// `logical_bytes / stored_bytes`: what deduplication and compression
    /// save together.
    pub dedup_ratio: f64,
    /// Per snapshot, oldest first.
    pub per_snapshot: Vec<SnapshotStats>,
}

const NOBODY: u32 = u32::MAX;
const SHARED: u32 = u32::MAX - 1;

impl Repository {
    /// Totals and, per snapshot, the stored bytes only it holds. Memory: 4
    /// bytes per indexed chunk beside the index.
    pub fn stats(&self, progress: &dyn Progress) -> Result<RepoStats> {
        let ids = self.snapshot_ids()?;
        let index = self.load_index()?;
        let stored = self.stored_packs()?;
        let mut owner = vec![NOBODY; index.len()];
        let mut out = RepoStats {
            chunks: index.len() as u64,
            packs: index.packs().len() as u64,
            stored_bytes: stored.values().sum(),
            ..RepoStats::default()
        };
        for e in index.iter() {
            out.raw_bytes += u64::from(e?.1.raw_len);
        }
        let mut per = Vec::new();
        progress.start("stats", None);
        self.for_each_snapshot(&ids, |id, _, snap, size| {
            let me = per.len() as u32;
            let mut seen = std::collections::HashSet::new();
            for c in snap.chunks() {
                if !seen.insert(c) {
                    continue;
                }
                if let Some(o) = index.ordinal(&c) {
                    owner[o] = match owner[o] {
                        NOBODY => me,
                        _ => SHARED,
                    };
                }
            }
            let chunks = seen.len() as u64;
            let logical: u64 = snap.nodes.iter().map(|n| n.size).sum();
            out.logical_bytes += logical;
            per.push(SnapshotStats {
                id,
                time: snap.start_time,
                source_kind: snap.source_kind,
                source_name: snap.source_name,
                logical_bytes: logical,
                chunks,
                unique_stored_bytes: 0,
            });
            progress.advance(size as u64);
            Ok(())
        })?;
        progress.finish();
        for (o, e) in index.iter().enumerate() {
            let (_, loc) = e?;
            match owner[o] {
                NOBODY => {}
                SHARED => out.chunks_used += 1,
                s => {
                    out.chunks_used += 1;
                    per[s as usize].unique_stored_bytes += u64::from(loc.len);
                }
            }
        }
        per.sort_by_key(|s| s.time);
        out.snapshots = per.len() as u64;
        out.per_snapshot = per;
        out.dedup_ratio = if out.stored_bytes == 0 {
            0.0
        } else {
            out.logical_bytes as f64 / out.stored_bytes as f64
        };
        Ok(out)
    }
}

impl Repository {
    /// Objects and bytes per object type, from listings only (cheap enough
    /// for a metrics refresh): `packs`, `index`, `snapshots`, `named`,
    /// `sessions`, `marks`, `holds`, `jobs`, `keys`.
    pub fn object_counts(&self) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        use crate::keys::FileType;
        let mut out = std::collections::BTreeMap::new();
        for ft in [
            FileType::Pack,
            FileType::Index,
            FileType::Snapshot,
            FileType::Named,
            FileType::Session,
            FileType::Mark,
            FileType::Hold,
            FileType::Job,
            FileType::KeySlot,
        ] {
            let listed = self.inner.block(self.inner.storage.list(ft.prefix()))?;
            let bytes = listed.iter().map(|o| o.size).sum();
            out.insert(
                ft.prefix().trim_end_matches('/').to_string(),
                (listed.len() as u64, bytes),
            );
        }
        Ok(out)
    }

    /// When the current data-key epoch was made (Unix seconds).
    pub fn current_epoch_created(&self) -> Option<i64> {
        Some(self.inner.keyring.current().created_unix).filter(|t| *t > 0)
    }
}
