//! Checking a repository: structure always, data on request.

use std::collections::{BTreeMap, HashMap, HashSet};

use lifeboat_types::{ChunkId, PackId, SnapshotId};
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::format::{self, IndexedPack};
use crate::index::Index;
use crate::keys::{FileType, ObjectKey};
use crate::parallel::{cores, Pool};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Patch, Snapshot};

/// A damaged or missing object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// The object key.
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// A snapshot that cannot be fully restored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BrokenSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// Why.
    pub reason: String,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Index objects read.
    pub indexes: usize,
    /// Snapshots read.
    pub snapshots: usize,
    /// Packs indexed.
    pub packs: usize,
    /// Packs stored but in no index (left by interrupted backups; harmless).
    pub unindexed_packs: usize,
    /// Prune marks in flight (packs waiting for deletion; not damage).
    pub marks: usize,
    /// Packs those marks list (missing ones are not damage).
    pub marked_packs: usize,
    /// Chunks decrypted and hash-checked (`--read-data`).
    pub chunks_checked: u64,
    /// Packs downloaded and checked (all of them with `--read-data`, a
    /// part with `--read-data-subset`).
    pub packs_read: usize,
    /// The subset read, when not every pack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// Bytes downloaded to check data.
    pub bytes_read: u64,
    /// Named objects (WAL segments, history files) decrypted and
    /// hash-checked (`--read-data`).
    pub named_checked: u64,
    /// Patched pieces rebuilt from base and page patch and checked against
    /// their ids (`--read-data`).
    pub pieces_rebuilt: u64,
    /// Damaged or missing objects.
    pub damaged: Vec<Damage>,
    /// Snapshots that reference damaged or missing data.
    pub broken_snapshots: Vec<BrokenSnapshot>,
    /// What to do about what was found, when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Temporary files of writes that never finished (not damage: nothing
    /// reads them; `repair leftovers` removes them).
    pub leftovers: crate::repair::LeftoverSummary,
}

/// Which packs (and WAL objects) `verify` reads and checks, as restic's
/// `--read-data-subset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// Group `n` (from 1) of `of` groups made by the objects' ids: reading
    /// the groups 1..=of in turn reads every object once.
    Part {
        /// The group, from 1.
        n: u32,
        /// Groups in all.
        of: u32,
    },
    /// A random share of the objects, in percent (0 < p ≤ 100).
    Percent(f64),
}

impl std::str::FromStr for DataSubset {
    type Err = RepoError;

    fn from_str(s: &str) -> Result<DataSubset> {
        let bad = || {
            RepoError::Invalid(format!(
                "--read-data-subset {s:?}: give n/t (group n of t, 1 <= n <= t: 2/7), a percentage (10%) or all"
            ))
        };
        let t = s.trim();
        if t == "all" {
            return Ok(DataSubset::All);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return if p > 0.0 && p <= 100.0 {
                Ok(DataSubset::Percent(p))
            } else {
                Err(bad())
            };
        }
        let (n, of) = t.split_once('/').ok_or_else(bad)?;
        let (n, of): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            of.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || of == 0 || n > of {
            return Err(bad());
        }
        Ok(DataSubset::Part { n, of })
    }
}

impl std::fmt::Display for DataSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSubset::All => f.write_str("all"),
            DataSubset::Part { n, of } => write!(f, "{n}/{of}"),
            DataSubset::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl DataSubset {
    /// Whether the object whose id starts with `id` is in the subset;
    /// `salt` varies the random share from run to run.
    fn contains(&self, id: &[u8], salt: u64) -> bool {
        let mut b = [0u8; 8];
        let k = id.len().min(8);
        b[..k].copy_from_slice(&id[..k]);
        let v = u64::from_be_bytes(b);
        match *self {
            DataSubset::All => true,
            DataSubset::Part { n, of } => v % u64::from(of) == u64::from(n - 1),
            DataSubset::Percent(p) => {
                // A keyed mix of the id: uniform, and another share each run.
                let mixed = (v ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((mixed >> 11) as f64 / (1u64 << 53) as f64) < p / 100.0
            }
        }
    }
}

fn broken(id: SnapshotId, damaged: usize, missing: usize) -> BrokenSnapshot {
    BrokenSnapshot {
        id,
        reason: format!("{damaged} chunk(s) in damaged packs, {missing} chunk(s) in no index"),
    }
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.broken_snapshots.is_empty()
    }
}

/// The workers of `verify`'s reads: every core, at least two.
fn readers() -> Pool {
    Pool::new(cores().max(2))
}

/// A patched piece that did not rebuild: its id, base and patch, the
/// snapshots using it, and why.
type FailedPiece = (ChunkId, Patch, Vec<SnapshotId>, String);

/// The result of reading one pack.
struct PackCheck {
    pack: PackId,
    /// What is wrong, or empty.
    problem: String,
    /// Chunks that failed.
    bad: Vec<ChunkId>,
    checked: u64,
    bytes: u64,
    /// Not found when read (it was listed as stored).
    missing: bool,
}

/// What the index objects list.
struct IndexObjects {
    /// Every pack listed, with its entries (once per index object listing it).
    packs: Vec<IndexedPack>,
    /// The keys of the index objects read.
    keys: HashSet<String>,
    /// The index objects listing each pack.
    listed_by: HashMap<PackId, Vec<String>>,
}

/// The indexed packs compared with the store.
struct Stored {
    /// The packs to look at: those listed, less those a prune removed.
    packs: Vec<IndexedPack>,
    /// The size of every pack stored.
    sizes: HashMap<PackId, u64>,
    /// Packs missing or truncated, with why.
    bad_packs: BTreeMap<PackId, String>,
}

/// What the look at the snapshots leaves for later checks.
struct SnapshotChecks {
    /// Patched pieces by their rebuilt id, with the snapshots using them
    /// (`--read-data` only).
    patched: HashMap<ChunkId, (Patch, Vec<SnapshotId>)>,
    /// Snapshots with chunks no index lists, for a second look: (snapshot,
    /// chunks missing, chunks damaged).
    unlisted: Vec<(SnapshotId, usize, usize)>,
}

/// Looks at every snapshot: a damaged one is reported; one whose chunks are
/// all indexed is broken when some are in damaged packs; one with chunks
/// no index lists is left for a second look. With `read_data`, the
/// patched pieces are gathered to be rebuilt.
fn check_snapshots(
    snapshots: &[(SnapshotId, Result<Snapshot>)],
    index: &Index,
    bad_chunks: &HashSet<ChunkId>,
    read_data: bool,
    report: &mut VerifyReport,
) -> SnapshotChecks {
    let mut patched: HashMap<ChunkId, (Patch, Vec<SnapshotId>)> = HashMap::new();
    let mut unlisted: Vec<(SnapshotId, usize, usize)> = Vec::new();
    for (id, snap) in snapshots {
        let id = *id;
        let snap = match snap {
            // Forgotten since it was listed: not damage.
            Err(RepoError::Storage(e)) if e.is_not_found() => continue,
            Ok(s) => {
                report.snapshots += 1;
                s
            }
            Err(e) => {
                report.snapshots += 1;
                report.damaged.push(Damage {
                    object: ObjectKey::Snapshot(id).to_string(),
                    problem: lifeboat_types::error::report(&e),
                });
                report.broken_snapshots.push(BrokenSnapshot {
                    id,
                    reason: "the snapshot object itself is damaged".into(),
                });
                continue;
            }
        };
        let mut missing = 0usize;
        let mut damaged = 0usize;
        let mut seen = HashSet::new();
        if read_data {
            for c in snap.nodes.iter().flat_map(|n| &n.content) {
                if let (Some(whole), Some(p)) = (c.chunk(), c.patch()) {
                    patched
                        .entry(whole)
                        .or_insert_with(|| (p, Vec::new()))
                        .1
                        .push(id);
                }
            }
        }
        for c in snap.chunks() {
            if !seen.insert(c) {
                continue;
            }
            if !index.contains(&c) {
                missing += 1;
            } else if bad_chunks.contains(&c) {
                damaged += 1;
            }
        }
        if missing > 0 {
            unlisted.push((id, missing, damaged));
        } else if damaged > 0 {
            report.broken_snapshots.push(broken(id, damaged, 0));
        }
    }
    SnapshotChecks { patched, unlisted }
}

impl Repository {
    /// Checks every index and snapshot, and that every pack they need exists
    /// with a plausible size. With `read_data`, also downloads every pack,
    /// checks its name against its contents, and decrypts and hash-checks every
    /// chunk. Returns a report; only failures to run at all are errors.
    pub fn verify(&self, read_data: bool, progress: &dyn Progress) -> Result<VerifyReport> {
        self.verify_data(read_data.then_some(DataSubset::All), progress)
    }

    /// [`Repository::verify`], reading the data of `subset`'s packs and WAL
    /// objects only (`None`: structure only).
    pub fn verify_data(
        &self,
        subset: Option<DataSubset>,
        progress: &dyn Progress,
    ) -> Result<VerifyReport> {
        let read_data = subset.is_some();
        let salt = {
            let mut b = [0u8; 8];
            lifeboat_crypto::fill_random(&mut b)?;
            u64::from_le_bytes(b)
        };
        let mut report = VerifyReport {
            leftovers: self.leftover_summary()?,
            ..VerifyReport::default()
        };
        for (key, reason) in self.damaged_key_slots()? {
            report.damaged.push(Damage {
                object: key,
                problem: format!("{reason}; this key slot no longer opens the repository"),
            });
        }

        // Snapshots first, then index objects, then packs. A backup stores
        // its packs, then the index objects that list them, then its
        // snapshot; read in the opposite order, every snapshot seen here had
        // its index objects stored before they were listed, and every pack
        // they name before packs were listed. A backup that finishes
        // meanwhile adds objects this pass does not look at, never a
        // snapshot whose chunks it cannot find.
        let snapshots = self.snapshots_to_check()?;
        let indexed = self.read_index_objects(&mut report)?;
        let Stored {
            packs,
            sizes,
            mut bad_packs,
        } = self.check_stored(indexed.packs, &indexed.listed_by, &mut report)?;
        let mut packs = packs;
        let mut index = Index::default();
        index.add_all(&packs);

        let structurally_bad: HashSet<PackId> = bad_packs.keys().copied().collect();
        let mut bad_chunks: HashSet<ChunkId> = HashSet::new();
        if let Some(subset) = subset {
            let chosen: Vec<IndexedPack> = packs
                .iter()
                .filter(|p| subset.contains(&p.pack.0, salt))
                .cloned()
                .collect();
            report.packs_read = chosen.len();
            if subset != DataSubset::All {
                report.read_data_subset = Some(subset.to_string());
            }
            let checks = self.read_packs(&chosen, &sizes, &bad_packs, progress)?;
            // A pack gone between the listing and its reading is damage only
            // if it should still be there: not when a prune deletes it (a
            // mark lists it now, or no index object lists it any more).
            let vanished: Vec<PackId> = checks
                .iter()
                .filter(|c| c.missing)
                .map(|c| c.pack)
                .collect();
            let excused = self.deleted_by_prune(&vanished, &indexed.listed_by)?;
            for check in checks {
                report.chunks_checked += check.checked;
                report.bytes_read += check.bytes;
                if excused.contains(&check.pack) {
                    continue;
                }
                if !check.problem.is_empty() {
                    bad_packs.insert(check.pack, check.problem);
                    bad_chunks.extend(check.bad);
                }
            }
            if !excused.is_empty() {
                packs.retain(|p| !excused.contains(&p.pack));
                index = Index::default();
                index.add_all(&packs);
            }
        }
        // Every chunk of a missing or truncated pack is lost.
        for p in &packs {
            if structurally_bad.contains(&p.pack) {
                bad_chunks.extend(p.entries.iter().map(|e| e.id));
            }
        }
        for (pack, problem) in &bad_packs {
            report.damaged.push(Damage {
                object: format::pack_key(pack),
                problem: problem.clone(),
            });
        }

        if let Some(subset) = subset {
            self.check_named(subset, salt, &mut report, progress)?;
        }

        let SnapshotChecks { patched, unlisted } =
            check_snapshots(&snapshots, &index, &bad_chunks, read_data, &mut report);
        if !unlisted.is_empty() {
            self.second_look(&snapshots, unlisted, &indexed.keys, &mut index, &mut report)?;
        }
        if read_data {
            // A subset reads its share of the patched pieces too (by the
            // whole piece's id): the groups 1..=t in turn rebuild each once.
            let patched = match subset {
                Some(subset) => patched
                    .into_iter()
                    .filter(|(whole, _)| subset.contains(whole.as_bytes(), salt))
                    .collect(),
                None => patched,
            };
            self.check_patched(&index, &bad_chunks, patched, &mut report, progress)?;
        }
        Ok(report)
    }

    /// Every snapshot, read or not. A snapshot that could not be read for
    /// another reason than damage (a store that did not answer, a newer
    /// version): the check cannot be made, and that is said as it is, not
    /// as damage.
    fn snapshots_to_check(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let mut snapshots = self.read_snapshots()?;
        if let Some(i) = snapshots.iter().position(|(_, r)| match r {
            Err(RepoError::Corrupt { .. }) | Ok(_) => false,
            Err(RepoError::Storage(e)) => !e.is_not_found(),
            Err(_) => true,
        }) {
            if let (_, Err(e)) = snapshots.swap_remove(i) {
                return Err(e);
            }
        }
        Ok(snapshots)
    }

    /// Reads every index object: the packs they list, and by which. A
    /// damaged one is reported; one that cannot be read for another reason
    /// stops the check.
    fn read_index_objects(&self, report: &mut VerifyReport) -> Result<IndexObjects> {
        let mut packs: Vec<IndexedPack> = Vec::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut listed_by: HashMap<PackId, Vec<String>> = HashMap::new();
        for (key, parsed) in self.read_indexes()? {
            match parsed {
                Ok(p) => {
                    for ip in &p {
                        listed_by.entry(ip.pack).or_default().push(key.clone());
                    }
                    packs.extend(p);
                }
                // Deleted since it was listed (a prune rewrote it): its
                // replacement is looked for below, where it matters.
                Err(RepoError::Storage(e)) if e.is_not_found() => continue,
                Err(e @ RepoError::Corrupt { .. }) => report.damaged.push(Damage {
                    object: key.clone(),
                    problem: e.to_string(),
                }),
                // Not damage: a store that did not answer, an object of a
                // newer version. The check cannot be made: say why.
                Err(e) => return Err(e),
            }
            report.indexes += 1;
            keys.insert(key);
        }
        Ok(IndexObjects {
            packs,
            keys,
            listed_by,
        })
    }

    /// Compares the indexed packs with the packs stored: counts both, finds
    /// the missing and the truncated, and leaves out the packs a prune
    /// removed with every index object listing them (a snapshot still
    /// needing their chunks is then found with chunks in no index).
    fn check_stored(
        &self,
        mut packs: Vec<IndexedPack>,
        listed_by: &HashMap<PackId, Vec<String>>,
        report: &mut VerifyReport,
    ) -> Result<Stored> {
        let mut bad_packs: BTreeMap<PackId, String> = BTreeMap::new();
        let stored: HashMap<PackId, u64> = self.stored_packs()?;
        let indexed: HashSet<PackId> = packs.iter().map(|p| p.pack).collect();
        report.packs = indexed.len();
        report.unindexed_packs = stored.keys().filter(|p| !indexed.contains(p)).count();
        // A pack an index lists but the store lacks is damage, unless a
        // prune deletes it: a mark lists it (phase 2 under way), or every
        // index object listing it is gone too (the prune is done). Marks
        // are listed before the index objects: a mark gone by then had its
        // index objects deleted first.
        let marks = self.marks()?;
        report.marks = marks.len();
        let marked = crate::prune::marked_packs(&marks);
        report.marked_packs = marked.len();
        let now_indexed: HashSet<String> = if packs.iter().any(|p| !stored.contains_key(&p.pack)) {
            self.index_keys()?
        } else {
            HashSet::new()
        };
        let mut excused: HashSet<PackId> = HashSet::new();
        for p in &packs {
            match stored.get(&p.pack) {
                None => {
                    let still_listed = !marked.contains(&p.pack)
                        && listed_by
                            .get(&p.pack)
                            .is_some_and(|keys| keys.iter().any(|k| now_indexed.contains(k)));
                    if still_listed {
                        bad_packs.insert(
                            p.pack,
                            "missing: the index lists it but the store does not have it".into(),
                        );
                    } else {
                        excused.insert(p.pack);
                    }
                }
                Some(&size) => {
                    let end = p
                        .entries
                        .iter()
                        .map(|e| u64::from(e.offset) + u64::from(e.len))
                        .max()
                        .unwrap_or(0);
                    if end > size {
                        bad_packs.insert(
                            p.pack,
                            format!("truncated: {size} bytes stored, the index needs {end}"),
                        );
                    }
                }
            }
        }
        if !excused.is_empty() {
            packs.retain(|p| !excused.contains(&p.pack));
        }
        Ok(Stored {
            packs,
            sizes: stored,
            bad_packs,
        })
    }

    /// Downloads and checks every pack not already known to be bad, in
    /// parallel (`--read-data`).
    fn read_packs(
        &self,
        packs: &[IndexedPack],
        sizes: &HashMap<PackId, u64>,
        bad_packs: &BTreeMap<PackId, String>,
        progress: &dyn Progress,
    ) -> Result<Vec<PackCheck>> {
        let todo: Vec<&IndexedPack> = packs
            .iter()
            .filter(|p| !bad_packs.contains_key(&p.pack))
            .collect();
        let total: u64 = todo
            .iter()
            .map(|p| sizes.get(&p.pack).copied().unwrap_or(0))
            .sum();
        progress.start("verify", Some(total));
        let checks = readers().try_map(&todo, |p| -> Result<PackCheck> {
            let check = self.check_pack(p)?;
            progress.advance(check.bytes);
            Ok(check)
        });
        progress.finish();
        checks
    }

    /// Of the packs `gone` (listed, then not found), those a prune deletes:
    /// a mark lists them now, or no index object that listed them is there
    /// any more.
    fn deleted_by_prune(
        &self,
        gone: &[PackId],
        listed_by: &HashMap<PackId, Vec<String>>,
    ) -> Result<HashSet<PackId>> {
        if gone.is_empty() {
            return Ok(HashSet::new());
        }
        let marked = crate::prune::marked_packs(&self.marks()?);
        let now_indexed = self.index_keys()?;
        Ok(gone
            .iter()
            .filter(|p| {
                marked.contains(p)
                    || !listed_by
                        .get(p)
                        .is_some_and(|keys| keys.iter().any(|k| now_indexed.contains(k)))
            })
            .copied()
            .collect())
    }

    /// The keys of the index objects stored now.
    fn index_keys(&self) -> Result<HashSet<String>> {
        Ok(self
            .inner
            .block(self.inner.storage.list(FileType::Index.prefix()))?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// Looks again at snapshots with chunks no index listed: a prune may have
    /// replaced index objects since they were listed, or forgotten the
    /// snapshot. Only what is still missing from a snapshot still stored is
    /// reported, with a pointer to `repair index` when packs hold chunks no
    /// index lists.
    fn second_look(
        &self,
        snapshots: &[(SnapshotId, Result<Snapshot>)],
        unlisted: Vec<(SnapshotId, usize, usize)>,
        read: &HashSet<String>,
        index: &mut Index,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let keys: Vec<String> = self
            .index_keys()?
            .into_iter()
            .filter(|k| !read.contains(k))
            .collect();
        for (key, bytes) in keys.iter().zip(self.get_many(&keys)) {
            if let Ok(packs) = bytes
                .map_err(RepoError::from)
                .and_then(|b| self.decode_index(key, &b))
            {
                index.add_all(&packs);
            }
        }
        let mut repairable = false;
        for (id, _, damaged) in unlisted {
            let still = self
                .inner
                .block(
                    self.inner
                        .storage
                        .stat(&ObjectKey::Snapshot(id).to_string()),
                )?
                .is_some();
            if !still {
                continue;
            }
            let Some(Ok(snap)) = snapshots.iter().find(|(i, _)| *i == id).map(|(_, s)| s) else {
                continue;
            };
            let mut seen = HashSet::new();
            let missing = snap
                .chunks()
                .filter(|c| seen.insert(*c))
                .filter(|c| !index.contains(c))
                .count();
            repairable |= missing > 0;
            if missing + damaged > 0 {
                report.broken_snapshots.push(broken(id, damaged, missing));
            }
        }
        if repairable
            && (report.unindexed_packs > 0
                || report
                    .damaged
                    .iter()
                    .any(|d| d.object.starts_with(FileType::Index.prefix())))
        {
            report.hint = Some(format!(
                "{} pack(s) are in no index object and may hold the missing chunks: `lifeboat repair index` rebuilds the index from the packs",
                report.unindexed_packs
            ));
        }
        Ok(())
    }

    /// Rebuilds every patched piece whose base and patch are sound and
    /// checks it against its id: both chunks can pass their own checks and
    /// still not make the piece (a page mark that missed a change).
    fn check_patched(
        &self,
        index: &Index,
        bad_chunks: &HashSet<ChunkId>,
        patched: HashMap<ChunkId, (Patch, Vec<SnapshotId>)>,
        report: &mut VerifyReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let todo: Vec<(ChunkId, Patch, Vec<SnapshotId>)> = patched
            .into_iter()
            .filter(|(_, (p, _))| {
                [p.base, p.pages]
                    .iter()
                    .all(|c| index.contains(c) && !bad_chunks.contains(c))
            })
            .map(|(whole, (p, snaps))| (whole, p, snaps))
            .collect();
        report.pieces_rebuilt += todo.len() as u64;
        progress.start("verify patched pieces", Some(todo.len() as u64));
        let failed = self.rebuild_pieces(index, todo, progress);
        progress.finish();
        let failed = self.look_again_at_pieces(failed?)?;
        let mut broken: BTreeMap<SnapshotId, usize> = BTreeMap::new();
        for (whole, _, snaps, problem) in failed {
            report.damaged.push(Damage {
                object: format!("chunk {}", whole.short()),
                problem,
            });
            for s in snaps {
                *broken.entry(s).or_default() += 1;
            }
        }
        for (id, n) in broken {
            report.broken_snapshots.push(BrokenSnapshot {
                id,
                reason: format!("{n} patched piece(s) do not rebuild to their ids"),
            });
        }
        Ok(())
    }

    /// Rebuilds each piece with `index`; returns those that failed (damage
    /// or a pack not found), with why.
    fn rebuild_pieces(
        &self,
        index: &Index,
        todo: Vec<(ChunkId, Patch, Vec<SnapshotId>)>,
        progress: &dyn Progress,
    ) -> Result<Vec<FailedPiece>> {
        let found = readers().try_map(&todo, |(whole, p, _)| {
            let r = self.rebuild(index, whole, p);
            progress.advance(1);
            match r {
                Ok(_) => Ok(None),
                Err(e @ RepoError::Corrupt { .. }) => Ok(Some(e.to_string())),
                Err(e) => Err(e),
            }
        })?;
        Ok(todo
            .into_iter()
            .zip(found)
            .filter_map(|((whole, p, snaps), problem)| problem.map(|why| (whole, p, snaps, why)))
            .collect())
    }

    /// Pieces that failed to rebuild are looked at again with the index as
    /// it is now: a prune may have repacked their base or patch (and
    /// deleted the pack this pass's index named) or forgotten every
    /// snapshot using them since the index was read. Only a piece that
    /// still fails, for a snapshot still stored, is damage. A prune may run
    /// again meanwhile: three looks at most.
    fn look_again_at_pieces(&self, mut failed: Vec<FailedPiece>) -> Result<Vec<FailedPiece>> {
        for _ in 0..3 {
            if failed.is_empty() {
                break;
            }
            let mut stored: HashMap<SnapshotId, bool> = HashMap::new();
            for (_, _, snaps, _) in &mut failed {
                for id in snaps.iter() {
                    if !stored.contains_key(id) {
                        let key = ObjectKey::Snapshot(*id).to_string();
                        let there = self.inner.block(self.inner.storage.stat(&key))?.is_some();
                        stored.insert(*id, there);
                    }
                }
                snaps.retain(|id| stored[id]);
            }
            failed.retain(|(_, _, snaps, _)| !snaps.is_empty());
            if failed.is_empty() {
                break;
            }
            let index = self.load_index()?;
            let todo = failed
                .into_iter()
                .map(|(whole, p, snaps, _)| (whole, p, snaps))
                .collect();
            failed = self.rebuild_pieces(&index, todo, &crate::progress::NoProgress)?;
        }
        Ok(failed)
    }

    /// Downloads every named object (the WAL archive) and checks that it
    /// decrypts and that its content matches the hash stored with it: a
    /// damaged segment would stop point-in-time recovery at that point.
    fn check_named(
        &self,
        subset: DataSubset,
        salt: u64,
        report: &mut VerifyReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut objects = self
            .inner
            .block(self.inner.storage.list(FileType::Named.prefix()))?;
        objects.retain(|o| {
            let name = o.key.rsplit('/').next().unwrap_or("");
            let id = hex::decode(name.get(..16).unwrap_or("")).unwrap_or_default();
            subset.contains(&id, salt)
        });
        progress.start("verify WAL", Some(objects.iter().map(|o| o.size).sum()));
        let found = readers().try_map(&objects, |o| -> Result<_> {
            let problem = match self.inner.block(self.inner.storage.get(&o.key)) {
                Ok(bytes) => self.check_named_object(&o.key, &bytes).err(),
                // Deleted since the listing (a prune): not damage.
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            progress.advance(o.size);
            Ok(Some((
                o.key.clone(),
                o.size,
                problem.map(|e| lifeboat_types::error::report(&e)),
            )))
        });
        progress.finish();
        let mut found: Vec<_> = found?.into_iter().flatten().collect();
        found.sort();
        for (key, size, problem) in found {
            report.named_checked += 1;
            report.bytes_read += size;
            if let Some(problem) = problem {
                report.damaged.push(Damage {
                    object: key,
                    problem: format!(
                        "{problem}; this WAL (or history) file cannot be restored, and point-in-time recovery through it will stop"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Downloads one pack and checks its name, table of contents and chunks.
    /// For each of `entries` of the pack `bytes`, whether its blob decrypts
    /// (sealed with its chunk id) and hash-checks.
    pub(crate) fn sound_blobs(
        &self,
        key: &str,
        bytes: &[u8],
        epoch: u32,
        entries: &[format::BlobEntry],
    ) -> Vec<bool> {
        let data_key = self.inner.keyring.epoch(epoch);
        // One copy of the pack to decrypt in place, one decompression buffer.
        let mut work = bytes.to_vec();
        let mut scratch = Vec::new();
        entries
            .iter()
            .map(|e| {
                let start = e.offset as usize;
                match (work.get_mut(start..start + e.len as usize), data_key) {
                    (Some(sealed), Some(k)) => format::open_blob_in_place(
                        key,
                        k,
                        &self.inner.keyring,
                        e,
                        sealed,
                        &mut scratch,
                    )
                    .is_ok(),
                    _ => false,
                }
            })
            .collect()
    }

    fn check_pack(&self, p: &IndexedPack) -> Result<PackCheck> {
        let key = format::pack_key(&p.pack);
        let bytes = match self.inner.block(self.inner.storage.get(&key)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Ok(PackCheck {
                    pack: p.pack,
                    problem: "missing".into(),
                    bad: p.entries.iter().map(|e| e.id).collect(),
                    checked: 0,
                    bytes: 0,
                    missing: true,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let size = bytes.len() as u64;
        let mut problems = Vec::new();
        if *blake3::hash(&bytes).as_bytes() != p.pack.0 {
            problems.push(
                "its contents do not match its name (the bytes changed after it was written)"
                    .to_string(),
            );
        }
        if let Err(e) = format::read_pack_toc(&key, &bytes, &self.inner.keyring) {
            problems.push(format!("table of contents: {e}"));
        }
        let checked = p.entries.len() as u64;
        let bad: Vec<ChunkId> = self
            .sound_blobs(&key, &bytes, p.epoch, &p.entries)
            .into_iter()
            .zip(&p.entries)
            .filter(|(ok, _)| !ok)
            .map(|(_, e)| e.id)
            .collect();
        if !bad.is_empty() {
            problems.push(format!(
                "{} of {} chunk(s) fail decryption or their hash check",
                bad.len(),
                p.entries.len()
            ));
        }
        Ok(PackCheck {
            pack: p.pack,
            problem: problems.join("; "),
            bad,
            checked,
            bytes: size,
            missing: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DataSubset;
    use proptest::prelude::*;

    #[test]
    fn subsets_parse_as_restic_writes_them() {
        assert_eq!(
            "2/7".parse::<DataSubset>().unwrap(),
            DataSubset::Part { n: 2, of: 7 }
        );
        assert_eq!(
            "10%".parse::<DataSubset>().unwrap(),
            DataSubset::Percent(10.0)
        );
        assert_eq!("all".parse::<DataSubset>().unwrap(), DataSubset::All);
        for bad in ["0/3", "4/3", "1/0", "150%", "0%", "abc", "1/x"] {
            let e = bad.parse::<DataSubset>().unwrap_err().to_string();
            assert!(e.contains("n/t"), "{bad}: {e}");
        }
        assert_eq!(DataSubset::Part { n: 2, of: 7 }.to_string(), "2/7");
    }

    proptest! {
        #[test]
        fn the_groups_of_a_partition_cover_every_object_once(
            ids in prop::collection::vec(any::<[u8; 32]>(), 1..200), of in 1u32..12, salt in any::<u64>(),
        ) {
            for id in &ids {
                let groups = (1..=of)
                    .filter(|n| DataSubset::Part { n: *n, of }.contains(id, salt))
                    .count();
                prop_assert_eq!(groups, 1);
            }
            prop_assert!(ids.iter().all(|id| DataSubset::All.contains(id, salt)));
            prop_assert!(ids.iter().all(|id| DataSubset::Percent(100.0).contains(id, salt)));
        }
    }

    #[test]
    fn a_percentage_reads_about_that_share() {
        let ids: Vec<[u8; 32]> = (0..4000u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let n = ids
            .iter()
            .filter(|id| DataSubset::Percent(10.0).contains(&id[..], 42))
            .count();
        assert!((250..550).contains(&n), "{n} of 4000 for 10%");
    }
}
