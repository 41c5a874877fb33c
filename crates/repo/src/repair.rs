//! Repairs: an index rebuilt from the packs, and what interrupted writes
//! left behind.
//!
//! Every pack ends with a sealed table of contents listing its chunks, so the
//! index is derived data: losing an index object loses no chunk, only the
//! way to find it. [`Repository::repair_index`] reads the tables of the
//! packs no intact index object lists (with `read_data`, every blob of them
//! too), stores index objects for them, and then removes the index objects
//! that are damaged. [`Repository::remove_leftovers`] removes the temporary
//! files of writes a killed process never finished, once they are old enough
//! that no write in progress can own them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use lifeboat_types::PackId;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::format::{self, IndexedPack};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::writer::write_index;

/// Packs per index object a repair writes (as many as a backup puts in one).
const PACKS_PER_INDEX: usize = 4;

/// What `repair index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexReport {
    /// Index objects that read and were kept.
    pub indexes_kept: usize,
    /// Damaged index objects removed (after their packs were indexed anew).
    pub indexes_removed: Vec<String>,
    /// Damaged index objects left in place because some pack could not be
    /// indexed (they may be all that lists its readable chunks).
    pub indexes_kept_damaged: Vec<String>,
    /// Packs stored but in no intact index object: their tables were read.
    pub packs_read: usize,
    /// Packs indexed by the index objects written now.
    pub packs_indexed: usize,
    /// Chunks those packs hold.
    pub chunks_indexed: u64,
    /// Index objects written.
    pub indexes_written: usize,
    /// Packs that could not be indexed, and why (left as they are).
    pub unreadable_packs: Vec<(String, String)>,
    /// With `read_data`: chunks that failed decryption or their hash check,
    /// by pack; they are left out of the index.
    pub bad_chunks: Vec<(String, usize)>,
}

/// A temporary file a write that never finished left behind.
#[derive(Clone, Debug, Serialize)]
pub struct Leftover {
    /// Its key below the repository.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Seconds since it was last written (`None`: the store does not say).
    pub age_s: Option<u64>,
}

/// What interrupted writes left behind, in all.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LeftoverSummary {
    /// How many.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The age of the oldest, in seconds.
    pub oldest_s: Option<u64>,
}

impl LeftoverSummary {
    fn of(list: &[Leftover]) -> Self {
        LeftoverSummary {
            count: list.len(),
            bytes: list.iter().map(|l| l.size).sum(),
            oldest_s: list.iter().filter_map(|l| l.age_s).max(),
        }
    }
}

impl Repository {
    /// The temporary files of writes that never finished.
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        let now = SystemTime::now();
        let mut out: Vec<Leftover> = self
            .inner
            .block(self.inner.storage.list_leftovers())?
            .into_iter()
            .map(|o| Leftover {
                key: o.key,
                size: o.size,
                age_s: o
                    .modified
                    .and_then(|m| now.duration_since(m).ok())
                    .map(|d| d.as_secs()),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// [`Repository::leftovers`], summed.
    pub fn leftover_summary(&self) -> Result<LeftoverSummary> {
        Ok(LeftoverSummary::of(&self.leftovers()?))
    }

    /// Removes the leftovers last written at least `min_age` ago: a write in
    /// progress touches its file all along, so one that old belongs to no
    /// running process. Returns what was removed.
    pub fn remove_leftovers(&self, min_age: Duration) -> Result<Vec<Leftover>> {
        let mut removed = Vec::new();
        for l in self.leftovers()? {
            if l.age_s.is_some_and(|a| a >= min_age.as_secs()) {
                match self.inner.block(self.inner.storage.delete_leftover(&l.key)) {
                    Ok(()) => removed.push(l),
                    // Finished (renamed) or removed by another cleanup meanwhile.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
    }

    /// Rebuilds the index of every pack no intact index object lists, from
    /// the packs' own tables of contents; with `read_data` every blob of
    /// those packs is decrypted and hash-checked first and only sound ones
    /// are indexed. Damaged index objects are removed once the packs are
    /// indexed again. Safe while backups run: it only adds index objects
    /// naming packs that are stored.
    pub fn repair_index(
        &self,
        read_data: bool,
        progress: &dyn Progress,
    ) -> Result<RepairIndexReport> {
        let mut report = RepairIndexReport::default();
        let mut covered: HashSet<PackId> = HashSet::new();
        let mut damaged: Vec<String> = Vec::new();
        for (key, parsed) in self.read_indexes()? {
            match parsed {
                Ok(packs) => {
                    report.indexes_kept += 1;
                    covered.extend(packs.iter().map(|p| p.pack));
                }
                Err(RepoError::Storage(e)) if e.is_not_found() => {}
                // Only damage is repaired; an index this build cannot read
                // (a newer version) or a store that did not answer stops
                // the repair before anything is changed.
                Err(RepoError::Corrupt { .. }) => damaged.push(key),
                Err(e) => return Err(e),
            }
        }
        let stored: HashMap<PackId, u64> = self.stored_packs()?;
        let mut todo: Vec<(PackId, u64)> = stored
            .iter()
            .filter(|(p, _)| !covered.contains(p))
            .map(|(p, s)| (*p, *s))
            .collect();
        todo.sort();
        report.packs_read = todo.len();
        progress.start("repair index", Some(todo.iter().map(|(_, s)| *s).sum()));
        let mut found: Vec<IndexedPack> = Vec::new();
        for (pack, size) in todo {
            let key = format::pack_key(&pack);
            let read = if read_data {
                self.pack_checked(&pack, &key)
            } else {
                self.pack_toc(&pack, &key, size).map(|p| (p, 0))
            };
            progress.advance(size);
            match read {
                Ok((indexed, bad)) => {
                    if bad > 0 {
                        report.bad_chunks.push((key, bad));
                    }
                    if !indexed.entries.is_empty() {
                        report.chunks_indexed += indexed.entries.len() as u64;
                        found.push(indexed);
                    }
                }
                Err(RepoError::Storage(e)) if e.is_not_found() => {}
                Err(e @ RepoError::Corrupt { .. }) => {
                    report.unreadable_packs.push((key, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        progress.finish();
        for group in found.chunks(PACKS_PER_INDEX) {
            write_index(&self.inner, group)?;
            report.indexes_written += 1;
            report.packs_indexed += group.len();
        }
        // Only now, and only when every stored pack is indexed again: then
        // nothing the damaged objects listed is lost with them.
        if report.unreadable_packs.is_empty() {
            for key in damaged {
                self.inner.block(self.inner.storage.delete(&key))?;
                report.indexes_removed.push(key);
            }
        } else {
            report.indexes_kept_damaged = damaged;
        }
        Ok(report)
    }

    /// A pack's table of contents, read with three ranged reads.
    pub(crate) fn pack_toc(&self, pack: &PackId, key: &str, size: u64) -> Result<IndexedPack> {
        let head_len = format::PACK_HEADER_LEN as u64;
        if size < head_len + 4 {
            return Err(RepoError::Corrupt {
                key: key.to_string(),
                reason: "truncated".into(),
            });
        }
        let storage = &self.inner.storage;
        let header = self.inner.block(storage.get_range(key, 0..head_len))?;
        let last4 = self.inner.block(storage.get_range(key, size - 4..size))?;
        let toc_len = format::pack_toc_len(key, &last4, size)?;
        let toc = self
            .inner
            .block(storage.get_range(key, size - 4 - toc_len..size - 4))?;
        let entries = format::read_pack_toc_parts(key, &header, &toc, &self.inner.keyring)?;
        let epoch = format::check_header(key, format::MAGIC_PACK, &header)?;
        Ok(IndexedPack {
            pack: *pack,
            epoch,
            entries,
        })
    }

    /// A pack read whole: its table of contents, and each blob decrypted
    /// and hash-checked (a blob is sealed with its chunk id, so a sound one
    /// is sound whatever else in the pack changed); returns the sound blobs
    /// and how many were not.
    fn pack_checked(&self, pack: &PackId, key: &str) -> Result<(IndexedPack, usize)> {
        let bytes = self.inner.block(self.inner.storage.get(key))?;
        let entries = format::read_pack_toc(key, &bytes, &self.inner.keyring)?;
        let epoch = format::check_header(key, format::MAGIC_PACK, &bytes)?;
        let sound = self.sound_blobs(key, &bytes, epoch, &entries);
        let bad = sound.iter().filter(|ok| !**ok).count();
        let good: Vec<format::BlobEntry> = entries
            .into_iter()
            .zip(sound)
            .filter(|(_, ok)| *ok)
            .map(|(e, _)| e)
            .collect();
        Ok((
            IndexedPack {
                pack: *pack,
                epoch,
                entries: good,
            },
            bad,
        ))
    }
}
