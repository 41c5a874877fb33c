//! What retention needs of each snapshot, read without its tree: a
//! snapshot's items can be many, and `forget` reads every snapshot.

use lifeboat_types::{SnapshotId, Timestamp};
use serde::Deserialize;

use crate::format::{self, MAGIC_SNAPSHOT};
use crate::keys::ObjectKey;
use crate::{RepoError, Repository, Result};

/// A snapshot's header: who, where, when, tags — not its items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The id.
    pub id: SnapshotId,
    /// The source kind.
    pub source_kind: String,
    /// The source name.
    pub source_name: String,
    /// The host.
    pub hostname: String,
    /// Tags.
    pub tags: Vec<String>,
    /// When the backup started.
    pub start_time: Timestamp,
}

// The fields read; the rest of the document (its items) is skipped as it
// parses, never built.
#[derive(Deserialize)]
struct Header {
    version: u32,
    source_kind: String,
    source_name: String,
    hostname: String,
    #[serde(default)]
    tags: Vec<String>,
    start_time: Timestamp,
}

impl Repository {
    /// Every snapshot's summary, oldest first (by time, then id); fails on
    /// the first damaged one. One deleted since the listing is skipped.
    pub fn snapshot_summaries(&self) -> Result<Vec<SnapshotSummary>> {
        let ids = self.snapshot_ids()?;
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(256) {
            let keys: Vec<String> = batch
                .iter()
                .map(|id| ObjectKey::Snapshot(*id).to_string())
                .collect();
            for ((id, key), bytes) in batch.iter().zip(&keys).zip(self.get_many(&keys)) {
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                out.push(self.decode_summary(*id, key, &bytes)?);
            }
        }
        out.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn decode_summary(&self, id: SnapshotId, key: &str, bytes: &[u8]) -> Result<SnapshotSummary> {
        let body = format::open_object(
            key,
            MAGIC_SNAPSHOT,
            bytes,
            self.master_key(),
            Some(&self.inner.keyring),
        )?;
        let json = format::decompress_document(key, &body)?;
        let h: Header = match serde_json::from_slice(&json) {
            Ok(h) => h,
            // The whole reading says what is wrong (or which version).
            Err(_) => {
                let s = self.decode_snapshot(key, bytes)?;
                return Ok(SnapshotSummary {
                    id,
                    source_kind: s.source_kind,
                    source_name: s.source_name,
                    hostname: s.hostname,
                    tags: s.tags,
                    start_time: s.start_time,
                });
            }
        };
        if h.version > crate::snapshot::SNAPSHOT_VERSION {
            return Err(RepoError::UnknownVersion {
                key: key.to_string(),
                what: "snapshot document",
                found: u16::try_from(h.version).unwrap_or(u16::MAX),
                supported: crate::snapshot::SNAPSHOT_VERSION as u16,
            });
        }
        Ok(SnapshotSummary {
            id,
            source_kind: h.source_kind,
            source_name: h.source_name,
            hostname: h.hostname,
            tags: h.tags,
            start_time: h.start_time,
        })
    }

    /// Deletes the snapshot objects `ids` (concurrently, bounded by the
    /// storage's limit); ones already gone are not an error.
    pub fn delete_snapshots(&self, ids: &[SnapshotId]) -> Result<()> {
        self.note_deleted(ids);
        for batch in ids.chunks(256) {
            let handles: Vec<_> = batch
                .iter()
                .map(|id| {
                    let s = self.inner.storage.clone();
                    let k = ObjectKey::Snapshot(*id).to_string();
                    self.inner.rt.spawn(async move { s.delete(&k).await })
                })
                .collect();
            for h in handles {
                match self.inner.block(h) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.is_not_found() => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(RepoError::Failed(format!("delete task failed: {e}"))),
                }
            }
        }
        Ok(())
    }
}
