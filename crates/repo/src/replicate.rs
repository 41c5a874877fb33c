//! Replicas: a second, complete copy of the repository in another store
//! (another region), kept up to date by copying objects, never by
//! re-encrypting them — the same keys open both (restic's `copy` and
//! pgBackRest's multi-repo, with objects copied as they are).
//!
//! What a run does (docs/format.md, "Replicas"):
//!
//! 1. **The target is this repository's replica or empty.** Its `config`
//!    must open with this repository's master key and name the same
//!    repository id; an empty location becomes a replica.
//! 2. **Listings, the primary's newest-last**: snapshots first, then holds,
//!    index objects, packs, named objects, key slots — the reverse of the
//!    order they are written in, so every chunk a listed snapshot uses is in
//!    an index object and a pack listed after it.
//! 3. **Copies, in an order that leaves the replica consistent at every
//!    moment**: key slots, keyring, config (what opens the rest), packs,
//!    index objects, named objects (WAL), snapshots, holds. Nothing is
//!    stored before what it references; a run killed anywhere leaves a
//!    replica that opens and verifies, and the next run copies what is left.
//!    Every object read from the primary is checked before it is stored: a
//!    pack's, index object's or snapshot's name is the BLAKE3 hash of its
//!    bytes; a named object, hold, key slot, keyring and config decrypt and
//!    parse with this repository's keys. An object that fails the check is
//!    read again (a transfer may have cut it); one that fails three times
//!    is damage on the primary: it is not copied, and the run reports it.
//! 4. **Deletions wait** (`delete_delay`): an object the replica has and
//!    the primary no longer has is recorded (`deletions/<ms>-<id>`, in the
//!    replica) with the time it was first seen gone, and deleted from the
//!    replica only once the delay has passed and it is still gone —
//!    snapshots first, packs last. A primary emptied by mistake or by an
//!    attacker leaves the replica restorable for that long.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lifeboat_storage::{DynStorage, ObjectInfo};
use lifeboat_types::{SnapshotId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::format::{self, MAGIC_CONFIG, MAGIC_DELETION, MAGIC_HOLD, MAGIC_KEYRING};
use crate::holds::Hold;
use crate::keys::{FileType, ObjectKey};
use crate::parallel::{lock, Pool};
use crate::progress::Progress;
use crate::repository::{decode_slot, RepoConfig, Repository};
use crate::sessions::{hostname, random_id, seal_document};

/// The deletion record's version.
const DELETION_VERSION: u32 = 1;

/// Tries of a streamed copy that fails in a way that may pass (the store's
/// own retries do not cover streams): about 15 s of waiting in all.
const STREAM_TRIES: u32 = 6;

/// Packs per index object an archive replica writes.
const ARCHIVE_PACKS_PER_INDEX: usize = 64;

/// Reads of an object that fails its check before it counts as damaged.
const READS: usize = 3;

/// The kinds a replica holds, listed on the primary in this order.
const LISTED: [FileType; 9] = [
    FileType::Snapshot,
    FileType::Hold,
    FileType::Index,
    FileType::Pack,
    FileType::Named,
    FileType::KeySlot,
    FileType::Erasure,
    FileType::Drill,
    FileType::Audit,
];

/// The kinds copied by [`copy_phase`], in the order they are stored (key
/// slots, keyring and config are copied before these).
///
/// The ledgers — erasure requests, drill records, the audit log — are
/// copied and never deleted from a replica: a restore from it must
/// re-apply every erasure, and a log removed on the primary stays whole
/// there.
const COPIED: [FileType; 8] = [
    FileType::Pack,
    FileType::Index,
    FileType::Named,
    FileType::Snapshot,
    FileType::Hold,
    FileType::Erasure,
    FileType::Drill,
    FileType::Audit,
];

/// What an archive replica deletes when the primary did (after the delay):
/// its packs and index objects are its own, collected once its snapshots
/// go ([`Repository::archive_gc`]).
const ARCHIVE_DELETED: [FileType; 4] = [
    FileType::Snapshot,
    FileType::Hold,
    FileType::KeySlot,
    FileType::Named,
];

/// The order deletions are applied in: what references first.
const DELETED: [FileType; 6] = [
    FileType::Snapshot,
    FileType::Hold,
    FileType::KeySlot,
    FileType::Index,
    FileType::Named,
    FileType::Pack,
];

/// How a run copies.
#[derive(Clone, Debug)]
pub struct ReplicateOptions {
    /// How long an object gone from the primary stays in the replica.
    pub delete_delay: Duration,
    /// Copies in flight at most.
    pub workers: usize,
    /// Bytes per second stored into the replica at most (`None`: no cap).
    pub bandwidth: Option<u64>,
    /// An archive replica: only the snapshots selected, and what they
    /// need (`None`: every object, a full replica).
    pub archive: Option<ArchiveSelection>,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        ReplicateOptions {
            delete_delay: Duration::from_secs(7 * 86_400),
            workers: 16,
            bandwidth: None,
            archive: None,
        }
    }
}

/// What an archive replica takes: the snapshots a rule selected, the packs
/// holding their chunks (whole), index objects of its own for those packs,
/// and the named objects listed (the WAL an archived base backup needs).
#[derive(Clone, Debug, Default)]
pub struct ArchiveSelection {
    /// The snapshots to take.
    pub snapshots: HashSet<SnapshotId>,
    /// The named objects to take, by storage key.
    pub named: HashSet<String>,
}

/// Objects and bytes of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindAmount {
    /// The kind, as its prefix names it (`packs`, `index`, `snapshots`,
    /// `named`, `holds`, `keys`, `keyring`, `config`).
    pub kind: String,
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// An object of the primary that failed its check on every read, and was
/// not copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedObject {
    /// Its key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What one run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicateReport {
    /// The replica's location.
    pub replica: String,
    /// The replica was empty: this run made it.
    pub created: bool,
    /// What was copied, per kind (kinds with nothing copied left out).
    pub copied: Vec<KindAmount>,
    /// Objects the replica already had.
    pub present: u64,
    /// Objects the replica had with other bytes (damaged there, or cut),
    /// stored again.
    pub replaced: u64,
    /// Objects of the primary that are damaged, not copied.
    pub damaged: Vec<DamagedObject>,
    /// Deletions seen and applied.
    pub deletions: DeletionReport,
}

impl ReplicateReport {
    /// Objects and bytes copied, all kinds.
    pub fn total_copied(&self) -> (u64, u64) {
        self.copied
            .iter()
            .fold((0, 0), |(o, b), k| (o + k.objects, b + k.bytes))
    }
}

/// Objects gone from the primary: how many the replica still keeps, and
/// what the run deleted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeletionReport {
    /// Objects first seen gone by this run.
    pub newly_seen: u64,
    /// Objects deleted from the replica by this run (their delay passed).
    pub deleted: Vec<KindAmount>,
    /// Objects gone from the primary that the replica keeps until their
    /// delay passes.
    pub pending: u64,
    /// Of those, the snapshots.
    pub pending_snapshots: u64,
    /// When the next of them is due.
    pub next_due: Option<Timestamp>,
}

/// How far a replica is behind its primary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaStatus {
    /// The replica's location.
    pub replica: String,
    /// The replica has a config (it was made).
    pub exists: bool,
    /// What the primary has that the replica lacks (or has with other
    /// bytes), per kind.
    pub missing: Vec<KindAmount>,
    /// When the oldest of those was stored on the primary.
    pub oldest_missing: Option<Timestamp>,
    /// The age of the oldest object the replica lacks, in seconds (0: up
    /// to date).
    pub lag_seconds: f64,
    /// Snapshots on the primary and on the replica.
    pub snapshots: (u64, u64),
    /// Deletions the replica keeps back.
    pub deletions: DeletionReport,
}

/// A replica's record of objects first seen gone from the primary.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeletionRecord {
    version: u32,
    id: String,
    /// When the objects were first seen gone.
    observed: Timestamp,
    hostname: String,
    /// Their keys.
    keys: Vec<String>,
}

/// One side's objects, by kind, by key.
#[derive(Default)]
struct Listing {
    by_kind: HashMap<FileType, HashMap<String, ObjectInfo>>,
}

impl Listing {
    fn of(&self, ft: FileType) -> impl Iterator<Item = &ObjectInfo> {
        self.by_kind.get(&ft).into_iter().flat_map(|m| m.values())
    }

    fn get(&self, ft: FileType, key: &str) -> Option<&ObjectInfo> {
        self.by_kind.get(&ft).and_then(|m| m.get(key))
    }

    fn contains(&self, ft: FileType, key: &str) -> bool {
        self.get(ft, key).is_some()
    }
}

/// The kind's name in reports: its prefix without the slash.
fn kind_name(ft: FileType) -> String {
    ft.prefix().trim_end_matches('/').to_string()
}

fn add(amounts: &mut BTreeMap<FileType, (u64, u64)>, ft: FileType, bytes: u64) {
    let e = amounts.entry(ft).or_default();
    e.0 += 1;
    e.1 += bytes;
}

fn amounts(order: &[FileType], m: &BTreeMap<FileType, (u64, u64)>) -> Vec<KindAmount> {
    order
        .iter()
        .filter_map(|ft| {
            m.get(ft).map(|(o, b)| KindAmount {
                kind: kind_name(*ft),
                objects: *o,
                bytes: *b,
            })
        })
        .collect()
}

/// Spaces stores out so that, on average, no more than `rate` bytes a
/// second go to the replica (a token bucket without a burst).
struct Throttle {
    rate: Option<u64>,
    next: Mutex<Instant>,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the time to send `bytes` at `now`: returns when they may
    /// be sent (the end of what was reserved before, or now).
    fn reserve(&self, bytes: u64, now: Instant) -> Instant {
        let Some(rate) = self.rate else { return now };
        let mut next = lock(&self.next);
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        start
    }

    /// Waits until `bytes` may be sent.
    fn take(&self, bytes: u64) {
        let start = self.reserve(bytes, Instant::now());
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }
}

/// Passes an object's bytes on while hashing them, and holds back the
/// last piece until the hash is known: when it is not the object's name
/// (or the length is wrong), the stream fails instead of ending, and the
/// store that takes it stores nothing.
struct Checked {
    inner: lifeboat_storage::ByteStream,
    hasher: blake3::Hasher,
    seen: u64,
    len: u64,
    want: String,
    bad: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The source's own failure, when the stream failed there.
    source: std::sync::Arc<std::sync::Mutex<Option<(lifeboat_storage::ErrorKind, String)>>>,
    done: bool,
    key: String,
}

impl Checked {
    fn fail(&mut self, why: &str) -> lifeboat_storage::StorageError {
        self.done = true;
        self.bad.store(true, std::sync::atomic::Ordering::SeqCst);
        lifeboat_storage::StorageError::new(
            lifeboat_storage::ErrorKind::Permanent,
            "get",
            &self.key,
            "",
            why,
        )
    }
}

impl futures_util::Stream for Checked {
    type Item = std::result::Result<Bytes, lifeboat_storage::StorageError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                *lock(&self.source) = Some((e.kind, e.message.clone()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(b))) => {
                self.hasher.update(&b);
                self.seen += b.len() as u64;
                if self.seen > self.len {
                    return Poll::Ready(Some(Err(self.fail("longer than listed"))));
                }
                if self.seen == self.len {
                    let got = self.hasher.finalize().to_hex();
                    if got.as_str() != self.want {
                        return Poll::Ready(Some(Err(self.fail(
                            "its BLAKE3 hash is not its name: the bytes changed after it was written",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) if self.seen != self.len => {
                Poll::Ready(Some(Err(self.fail("shorter than listed"))))
            }
            // Nothing came, and nothing was listed: the hash of nothing
            // must still be the name.
            Poll::Ready(None)
                if self.len == 0 && blake3::hash(b"").to_hex().as_str() != self.want =>
            {
                Poll::Ready(Some(Err(self.fail(
                    "its BLAKE3 hash is not its name: the bytes changed after it was written",
                ))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

/// Where a run copies to and how: the same for every phase.
struct Sink<'a> {
    target: &'a DynStorage,
    /// The replica's listing at the run's start.
    replica: &'a Listing,
    opts: &'a ReplicateOptions,
    throttle: Throttle,
    progress: &'a dyn Progress,
}

/// What a copy worker did with one object.
enum Copied {
    Stored {
        bytes: u64,
        replaced: bool,
    },
    Damaged(DamagedObject),
    /// Gone from the primary since the listing (a prune, a forget).
    Gone(String),
}

/// True when `key`'s last part is the BLAKE3 hash of `bytes` (packs, index
/// objects, snapshots).
fn hash_matches(key: &str, bytes: &[u8]) -> bool {
    key.rsplit('/').next() == Some(blake3::hash(bytes).to_hex().as_str())
}

impl Repository {
    /// Brings the replica in `target` up to date (module docs).
    pub fn replicate(
        &self,
        target: &DynStorage,
        opts: &ReplicateOptions,
        progress: &dyn Progress,
    ) -> Result<ReplicateReport> {
        let mut report = ReplicateReport {
            replica: target.location(),
            ..ReplicateReport::default()
        };
        report.created = !self.check_replica(target)?;
        // A backup session on the primary, written before its marks are
        // listed: a prune there deletes nothing this run may still copy
        // (what a mark it saw deletes was replaced before the mark was
        // written, and is copied from the listings below).
        let session = self.begin_session(crate::SessionKind::Backup)?;
        session.set_marks_seen(self.marks()?.into_iter().map(|m| m.id).collect())?;
        // The replica first: an object in it was on the primary when it
        // was copied, so one the primary's later listing lacks is gone.
        let replica = self.list_side(target)?;
        let primary = self.list_side(&self.inner.storage)?;
        let sink = Sink {
            target,
            replica: &replica,
            opts,
            throttle: Throttle::new(opts.bandwidth),
            progress,
        };
        let mut copied: BTreeMap<FileType, (u64, u64)> = BTreeMap::new();

        // What opens the rest, first: key slots, the keyring, the config.
        let slots: Vec<(String, u64)> = primary
            .of(FileType::KeySlot)
            .filter(|o| replica.get(FileType::KeySlot, &o.key).map(|r| r.size) != Some(o.size))
            .map(|o| (o.key.clone(), o.size))
            .collect();
        report.present += primary.of(FileType::KeySlot).count() as u64 - slots.len() as u64;
        self.copy_phase(&sink, FileType::KeySlot, &slots, &mut report, &mut copied)?;
        for ft in [FileType::Keyring, FileType::Config] {
            match self.copy_single(target, ft)? {
                Some(bytes) => add(&mut copied, ft, bytes),
                None => report.present += 1,
            }
        }

        if let Some(sel) = &opts.archive {
            // A session on the archive too: its own prune (archive_gc)
            // keeps the packs this run copied until their index is stored.
            let view = self.view(target.clone());
            let archive_session = view.begin_session(crate::SessionKind::Backup)?;
            self.archive_data(&sink, sel, &primary, &mut report, &mut copied)?;
            // The erasure ledger too: a restore from the archive must
            // re-apply it.
            let ledger: Vec<(String, u64)> = primary
                .of(FileType::Erasure)
                .filter(|o| replica.get(FileType::Erasure, &o.key).map(|r| r.size) != Some(o.size))
                .map(|o| (o.key.clone(), o.size))
                .collect();
            self.copy_phase(&sink, FileType::Erasure, &ledger, &mut report, &mut copied)?;
            let mut order = vec![FileType::KeySlot, FileType::Keyring, FileType::Config];
            order.extend(COPIED);
            report.copied = amounts(&order, &copied);
            report.deletions =
                self.apply_deletions(target, &primary, &replica, opts, &ARCHIVE_DELETED, progress)?;
            archive_session.finish()?;
            session.finish()?;
            let deleted_snapshots = report
                .deletions
                .deleted
                .iter()
                .any(|k| k.kind == kind_name(FileType::Snapshot));
            if deleted_snapshots || !view.marks()?.is_empty() {
                self.archive_gc(target)?;
            }
            return Ok(report);
        }
        // Then the data, the index, the WAL, and the snapshots last.
        for ft in COPIED {
            let todo: Vec<(String, u64)> = primary
                .of(ft)
                .filter(|o| {
                    let there = replica.get(ft, &o.key).map(|r| r.size);
                    // Holds are replaced in place: compared by content below.
                    ft == FileType::Hold || there != Some(o.size)
                })
                .map(|o| (o.key.clone(), o.size))
                .collect();
            let todo = if ft == FileType::Hold {
                self.changed_holds(target, todo, &replica)?
            } else {
                todo
            };
            report.present += primary.of(ft).count() as u64 - todo.len() as u64;
            if !report.damaged.is_empty() && ft == FileType::Snapshot {
                // Snapshots are still copied: the replica is then what the
                // primary is, less the objects damaged there.
                tracing::warn!(
                    damaged = report.damaged.len(),
                    "objects damaged on the primary were not copied"
                );
            }
            self.copy_phase(&sink, ft, &todo, &mut report, &mut copied)?;
        }
        let mut order = vec![FileType::KeySlot, FileType::Keyring, FileType::Config];
        order.extend(COPIED);
        report.copied = amounts(&order, &copied);

        // Damage on the primary this run: no pack or index object is
        // deleted from the replica (the good copy it holds may be the only
        // one of what a damaged replacement should hold).
        let kinds: Vec<FileType> = if report.damaged.is_empty() {
            DELETED.to_vec()
        } else {
            DELETED
                .iter()
                .copied()
                .filter(|k| !matches!(k, FileType::Pack | FileType::Index))
                .collect()
        };
        report.deletions =
            self.apply_deletions(target, &primary, &replica, opts, &kinds, progress)?;
        session.finish()?;
        Ok(report)
    }

    /// Copies to `target` the named objects (WAL) of the primary that are
    /// not in `known` (the replica's named objects, kept up to date here):
    /// what `replicate --follow` does between full runs, so a segment
    /// reaches the replica seconds after `wal-push` stored it. Returns the
    /// objects and bytes copied, and the damaged ones skipped.
    pub fn replicate_named(
        &self,
        target: &DynStorage,
        known: &mut HashSet<String>,
        opts: &ReplicateOptions,
    ) -> Result<(u64, u64, Vec<DamagedObject>)> {
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Named.prefix()))?;
        let todo: Vec<(String, u64)> = listed
            .into_iter()
            .filter(|o| !known.contains(&o.key))
            .map(|o| (o.key, o.size))
            .collect();
        let mut report = ReplicateReport::default();
        let mut copied = BTreeMap::new();
        let nothing = Listing::default();
        let sink = Sink {
            target,
            replica: &nothing,
            opts,
            throttle: Throttle::new(opts.bandwidth),
            progress: &crate::progress::NoProgress,
        };
        self.copy_phase(&sink, FileType::Named, &todo, &mut report, &mut copied)?;
        let damaged: HashSet<&str> = report.damaged.iter().map(|d| d.key.as_str()).collect();
        known.extend(
            todo.iter()
                .filter(|(k, _)| !damaged.contains(k.as_str()))
                .map(|(k, _)| k.clone()),
        );
        let (objects, bytes) = copied.get(&FileType::Named).copied().unwrap_or_default();
        Ok((objects, bytes, report.damaged))
    }

    /// The storage keys of the packs holding the chunks of `snapshot` (what
    /// a restore of it reads, and what `thaw` asks the store to restore).
    pub fn snapshot_pack_keys(&self, snapshot: &crate::Snapshot) -> Result<Vec<String>> {
        let index = self.load_index()?;
        let mut packs: HashSet<u32> = HashSet::new();
        for chunk in snapshot.chunks() {
            let loc = index.get(&chunk).ok_or_else(|| RepoError::Corrupt {
                key: format!("chunk {}", chunk.short()),
                reason: "no index object lists it: run `lifeboat verify`".into(),
            })?;
            packs.insert(loc.pack);
        }
        let mut keys: Vec<String> = packs
            .into_iter()
            .map(|p| ObjectKey::Pack(index.pack(p).0).to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The keys of the named objects in `target`, for
    /// [`Repository::replicate_named`].
    pub fn replica_named_keys(&self, target: &DynStorage) -> Result<HashSet<String>> {
        Ok(self
            .inner
            .block(target.list(FileType::Named.prefix()))?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// How far the replica in `target` is behind, from listings of both
    /// sides (and the replica's deletion records); `delete_delay` dates
    /// the pending deletions.
    pub fn replica_status(
        &self,
        target: &DynStorage,
        delete_delay: Duration,
        archive: Option<&ArchiveSelection>,
    ) -> Result<ReplicaStatus> {
        let exists = self.check_replica(target)?;
        let primary = self.list_side(&self.inner.storage)?;
        let replica = self.list_side(target)?;
        let mut missing: BTreeMap<FileType, (u64, u64)> = BTreeMap::new();
        let mut oldest: Option<SystemTime> = None;
        // An archive replica lacks only what it selects (its packs and
        // index objects are its own: the snapshots stand for them).
        let wanted = |ft: FileType, key: &str| match archive {
            None => true,
            Some(sel) => match ft {
                FileType::Snapshot => key
                    .rsplit('/')
                    .next()
                    .and_then(|h| h.parse::<SnapshotId>().ok())
                    .is_some_and(|id| sel.snapshots.contains(&id)),
                FileType::Named => sel.named.contains(key),
                FileType::KeySlot | FileType::Erasure => true,
                _ => false,
            },
        };
        for ft in LISTED {
            for o in primary.of(ft).filter(|o| wanted(ft, &o.key)) {
                // Every command adds an audit record (this one too): one
                // not copied yet is neither missing nor lag; the next run
                // copies it.
                if ft == FileType::Audit {
                    continue;
                }
                if replica.get(ft, &o.key).map(|r| r.size) != Some(o.size) {
                    add(&mut missing, ft, o.size);
                    if let Some(m) = o.modified {
                        oldest = Some(oldest.map_or(m, |x| x.min(m)));
                    }
                }
            }
        }
        let now = SystemTime::now();
        let lag = oldest
            .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64())
            .unwrap_or(0.0);
        let records = if exists {
            self.deletion_records(target)?
        } else {
            Vec::new()
        };
        let kinds: &[FileType] = if archive.is_some() {
            &ARCHIVE_DELETED
        } else {
            &DELETED
        };
        let gone = gone_from_primary(&primary, &replica, kinds);
        let recorded: HashSet<&str> = records
            .iter()
            .flat_map(|(_, r)| r.keys.iter().map(String::as_str))
            .collect();
        let mut deletions = pending_of(&records, &gone, delete_delay);
        deletions.newly_seen = gone
            .iter()
            .filter(|(_, k)| !recorded.contains(k.as_str()))
            .count() as u64;
        Ok(ReplicaStatus {
            replica: target.location(),
            exists,
            missing: amounts(&LISTED, &missing),
            oldest_missing: oldest.and_then(|t| Timestamp::try_from(t).ok()),
            lag_seconds: lag,
            snapshots: (
                primary.of(FileType::Snapshot).count() as u64,
                replica.of(FileType::Snapshot).count() as u64,
            ),
            deletions,
        })
    }

    /// True when `target` holds this repository's replica, false when it
    /// is empty (or holds only the first key slots and keyring a killed
    /// first run copied); anything else is refused.
    fn check_replica(&self, target: &DynStorage) -> Result<bool> {
        let config = FileType::Config.prefix();
        let location = target.location();
        match self.inner.block(target.get(config)) {
            Ok(bytes) => {
                let cfg = format::open_object(config, MAGIC_CONFIG, &bytes, self.master_key(), None)
                    .map_err(|_| RepoError::Invalid(format!(
                        "{location} holds another repository (its config does not open with this repository's key): a replica must be this repository's copy or an empty location"
                    )))?;
                let cfg: RepoConfig =
                    serde_json::from_slice(&cfg).map_err(|e| RepoError::Corrupt {
                        key: format!("{location}/{config}"),
                        reason: e.to_string(),
                    })?;
                if cfg.id != self.inner.config.id {
                    return Err(RepoError::Invalid(format!(
                        "{location} holds another repository (id {}, this one is {}): a replica must be this repository's copy or an empty location",
                        cfg.id, self.inner.config.id
                    )));
                }
                Ok(true)
            }
            Err(e) if e.is_not_found() => {
                let all = self.inner.block(target.list(""))?;
                let foreign: Vec<&ObjectInfo> = all
                    .iter()
                    .filter(|o| {
                        !(o.key.starts_with(FileType::KeySlot.prefix())
                            || o.key == FileType::Keyring.prefix()
                            || o.key.starts_with(FileType::Canary.prefix()))
                    })
                    .collect();
                if let Some(first) = foreign.first() {
                    return Err(RepoError::Invalid(format!(
                        "{location} is not empty ({} objects, such as {}) and holds no repository: a replica must be this repository's copy or an empty location",
                        foreign.len(),
                        first.key
                    )));
                }
                // Key slots and a keyring alone: a first run killed before
                // the config; they must be this repository's.
                for o in all
                    .iter()
                    .filter(|o| !o.key.starts_with(FileType::Canary.prefix()))
                {
                    let theirs = self.inner.block(target.get(&o.key))?;
                    match self.inner.block(self.inner.storage.get(&o.key)) {
                        Ok(ours) if o.key.starts_with(FileType::KeySlot.prefix()) && ours == theirs => {}
                        Ok(_) if o.key == FileType::Keyring.prefix() => {
                            self.open_keyring(&o.key, &theirs).map_err(|_| {
                                RepoError::Invalid(format!(
                                    "{location} holds another repository's keyring: a replica must be this repository's copy or an empty location"
                                ))
                            })?;
                        }
                        _ => {
                            return Err(RepoError::Invalid(format!(
                                "{location} holds a key slot this repository does not have ({}): a replica must be this repository's copy or an empty location",
                                o.key
                            )))
                        }
                    }
                }
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists every kind a replica holds, snapshots first.
    fn list_side(&self, storage: &DynStorage) -> Result<Listing> {
        let mut out = Listing::default();
        for ft in LISTED {
            let listed = self.inner.block(storage.list(ft.prefix()))?;
            out.by_kind
                .insert(ft, listed.into_iter().map(|o| (o.key.clone(), o)).collect());
        }
        Ok(out)
    }

    fn open_keyring(&self, key: &str, bytes: &[u8]) -> Result<lifeboat_crypto::Keyring> {
        let ring = format::open_object(key, MAGIC_KEYRING, bytes, self.master_key(), None)?;
        lifeboat_crypto::Keyring::from_bytes(&ring).map_err(|e| RepoError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Checks an object read from the primary, by its kind.
    fn check_copy(&self, ft: FileType, key: &str, bytes: &[u8]) -> Result<()> {
        let corrupt = |reason: &str| RepoError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        match ft {
            FileType::Pack | FileType::Index | FileType::Snapshot => {
                if hash_matches(key, bytes) {
                    Ok(())
                } else {
                    Err(corrupt(
                        "its BLAKE3 hash is not its name: the bytes changed after it was written",
                    ))
                }
            }
            FileType::Named => self.check_named_object(key, bytes),
            FileType::KeySlot => decode_slot(key, bytes).map(|_| ()),
            FileType::Hold => self
                .decode_document::<Hold>(key, MAGIC_HOLD, bytes)
                .map(|_| ()),
            FileType::Erasure => self
                .decode_document::<crate::ErasureRequest>(key, format::MAGIC_ERASURE, bytes)
                .map(|_| ()),
            FileType::Drill => self
                .decode_document::<crate::DrillRecord>(key, format::MAGIC_DRILL, bytes)
                .map(|_| ()),
            FileType::Audit => {
                let named = crate::AuditName::parse(key).map(|n| n.hash);
                if named.as_deref() != Some(blake3::hash(bytes).to_hex().as_str()) {
                    return Err(corrupt(
                        "its BLAKE3 hash is not the one its name gives: the bytes changed after it was written",
                    ));
                }
                self.decode_document::<crate::AuditRecord>(key, format::MAGIC_AUDIT, bytes)
                    .map(|_| ())
            }
            FileType::Keyring => self.open_keyring(key, bytes).map(|_| ()),
            FileType::Config => {
                let json = format::open_object(key, MAGIC_CONFIG, bytes, self.master_key(), None)?;
                let cfg: RepoConfig =
                    serde_json::from_slice(&json).map_err(|e| corrupt(&e.to_string()))?;
                if cfg.id == self.inner.config.id {
                    Ok(())
                } else {
                    Err(corrupt("it names another repository"))
                }
            }
            _ => Err(corrupt("not a kind a replica holds")),
        }
    }

    /// Copies a hash-named object (pack, index object, snapshot) from a
    /// store that streams into one that takes streams: the download flows
    /// into the upload, the last piece held back until the hash is checked
    /// ([`Checked`]). `Ok(None)` when the stores do not stream (copy it
    /// whole); a transfer that failed is tried again, three times in all.
    fn copy_streamed(
        &self,
        target: &DynStorage,
        ft: FileType,
        key: &str,
        len: u64,
    ) -> Result<Option<std::result::Result<u64, DamagedObject>>> {
        // A size the listing did not give (0): copied whole, which needs none.
        if len == 0
            || !target.streams_puts()
            || !matches!(ft, FileType::Pack | FileType::Index | FileType::Snapshot)
        {
            return Ok(None);
        }
        let want = key.rsplit('/').next().unwrap_or_default().to_string();
        let (mut bad_reads, mut failures) = (0, 0);
        loop {
            let stream = match self.inner.block(self.inner.storage.get_stream(key)) {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(None),
                Err(e) if e.is_retryable() && failures + 1 < STREAM_TRIES => {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(250 << failures));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let bad = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let source = std::sync::Arc::new(Mutex::new(None));
            let checked = Checked {
                source: source.clone(),
                inner: stream,
                hasher: blake3::Hasher::new(),
                seen: 0,
                len,
                want: want.clone(),
                bad: bad.clone(),
                done: false,
                key: key.to_string(),
            };
            let cold = ft == FileType::Pack;
            let err = match self
                .inner
                .block(target.put_stream(key, len, Box::pin(checked), cold))
            {
                Ok(()) => return Ok(Some(Ok(len))),
                Err(e) => e,
            };
            if bad.load(std::sync::atomic::Ordering::SeqCst) {
                // The bytes read were not the object's: read again, then
                // call it damage.
                bad_reads += 1;
                if bad_reads >= READS {
                    return Ok(Some(Err(DamagedObject {
                        key: key.to_string(),
                        reason: err.message,
                    })));
                }
                continue;
            }
            // The primary's own failure, as the primary said it (gone since
            // the listing, frozen, denied): not the replica's.
            let source_failure = lock(&source).take();
            let err = match source_failure {
                Some((kind, message)) => {
                    lifeboat_storage::StorageError::new(kind, "get", key, &self.location(), message)
                }
                None => err,
            };
            if err.is_retryable() && failures + 1 < STREAM_TRIES {
                failures += 1;
                std::thread::sleep(Duration::from_millis(250 << failures));
                continue;
            }
            return Err(err.into());
        }
    }

    /// Reads `key` from the primary until it passes its check, at most
    /// [`READS`] times; `Ok(Err(..))` is damage. The object comes as the
    /// pieces it arrived in: a pack, index object or snapshot is hashed
    /// piece by piece and passed on as it is, never joined.
    fn read_checked(
        &self,
        ft: FileType,
        key: &str,
    ) -> Result<std::result::Result<Vec<Bytes>, DamagedObject>> {
        let mut last = String::new();
        for _ in 0..READS {
            let parts = self.inner.block(self.inner.storage.get_parts(key))?;
            let checked = match ft {
                FileType::Pack | FileType::Index | FileType::Snapshot => {
                    let mut h = blake3::Hasher::new();
                    for p in &parts {
                        h.update(p);
                    }
                    if key.rsplit('/').next() == Some(h.finalize().to_hex().as_str()) {
                        Ok(())
                    } else {
                        Err(RepoError::Corrupt {
                            key: key.to_string(),
                            reason: "its BLAKE3 hash is not its name: the bytes changed after it was written".into(),
                        })
                    }
                }
                _ => self.check_copy(ft, key, &parts.concat()),
            };
            match checked {
                Ok(()) => return Ok(Ok(parts)),
                Err(RepoError::Corrupt { reason, .. }) => last = reason,
                Err(e) => return Err(e),
            }
        }
        Ok(Err(DamagedObject {
            key: key.to_string(),
            reason: last,
        }))
    }

    /// Copies `todo` (keys and sizes of kind `ft`) in parallel; the first
    /// error stops the phase.
    fn copy_phase(
        &self,
        sink: &Sink<'_>,
        ft: FileType,
        todo: &[(String, u64)],
        report: &mut ReplicateReport,
        copied: &mut BTreeMap<FileType, (u64, u64)>,
    ) -> Result<HashSet<String>> {
        let Sink {
            target,
            replica,
            opts,
            progress,
            ..
        } = *sink;
        let throttle = &sink.throttle;
        let mut not_copied = HashSet::new();
        if todo.is_empty() {
            return Ok(not_copied);
        }
        let total: u64 = todo.iter().map(|(_, s)| s).sum();
        progress.start(&format!("replicate: {}", kind_name(ft)), Some(total));
        let done = Pool::new(opts.workers).try_map(todo, |(key, size)| -> Result<Copied> {
            throttle.take(*size);
            match self.copy_streamed(target, ft, key, *size) {
                Ok(None) => {}
                Ok(Some(Ok(len))) => {
                    progress.advance(len);
                    return Ok(Copied::Stored {
                        bytes: len,
                        replaced: replica.contains(ft, key),
                    });
                }
                Ok(Some(Err(damaged))) => return Ok(Copied::Damaged(damaged)),
                Err(RepoError::Storage(e)) if e.is_not_found() => {
                    return Ok(Copied::Gone(key.clone()))
                }
                Err(e) => return Err(e),
            }
            let bytes = match self.read_checked(ft, key) {
                Ok(Ok(b)) => b,
                Ok(Err(damaged)) => return Ok(Copied::Damaged(damaged)),
                // Gone since the listing (a prune, a forget): nothing to copy.
                Err(RepoError::Storage(e)) if e.is_not_found() => {
                    return Ok(Copied::Gone(key.clone()))
                }
                Err(e) => return Err(e),
            };
            let len = bytes.iter().map(|p| p.len() as u64).sum();
            // Data in the replica's storage class, when it has one.
            let cold = matches!(ft, FileType::Pack | FileType::Named);
            self.inner.block(target.put_parts(key, bytes, cold))?;
            progress.advance(len);
            Ok(Copied::Stored {
                bytes: len,
                replaced: replica.contains(ft, key),
            })
        });
        progress.finish();
        for c in done? {
            match c {
                Copied::Stored { bytes, replaced } => {
                    add(copied, ft, bytes);
                    if replaced {
                        report.replaced += 1;
                    }
                }
                Copied::Damaged(d) => {
                    not_copied.insert(d.key.clone());
                    report.damaged.push(d);
                }
                Copied::Gone(key) => {
                    not_copied.insert(key);
                }
            }
        }
        Ok(not_copied)
    }

    /// Copies the keyring or the config when the replica's differs, and
    /// returns the bytes copied. The replica's keyring is replaced only by
    /// one holding every epoch it has (a keyring that lost an epoch would
    /// make the replica's data unreadable), and its config never by an
    /// older envelope version.
    fn copy_single(&self, target: &DynStorage, ft: FileType) -> Result<Option<u64>> {
        let key = ft.prefix();
        let ours = self.inner.block(self.inner.storage.get(key))?;
        let theirs = match self.inner.block(target.get(key)) {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if theirs.as_ref() == Some(&ours) {
            return Ok(None);
        }
        self.check_copy(ft, key, &ours)?;
        if let Some(theirs) = &theirs {
            match ft {
                FileType::Keyring => {
                    let mine = self.open_keyring(key, &ours)?;
                    let replica = self.open_keyring(key, theirs).map_err(|e| {
                        RepoError::Invalid(format!(
                            "the replica's keyring does not open with this repository's key ({}); it is not replaced, to keep what the replica stores readable",
                            lifeboat_types::error::report(&e)
                        ))
                    })?;
                    if let Some(lost) = replica
                        .epochs()
                        .iter()
                        .find(|e| mine.epoch(e.number).is_none())
                    {
                        return Err(RepoError::Invalid(format!(
                            "the primary's keyring lacks key epoch {} that the replica's has: replacing it would make the replica's data sealed with that epoch unreadable; find out why the primary's keyring lost it before replicating",
                            lost.number
                        )));
                    }
                }
                FileType::Config
                    if format::header_version(theirs) > format::header_version(&ours) =>
                {
                    return Ok(None);
                }
                _ => {}
            }
        }
        let len = ours.len() as u64;
        self.inner.block(target.put(key, ours))?;
        Ok(Some(len))
    }

    /// Of the primary's holds `todo`, those the replica lacks or has with
    /// other bytes.
    fn changed_holds(
        &self,
        target: &DynStorage,
        todo: Vec<(String, u64)>,
        replica: &Listing,
    ) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for (key, size) in todo {
            if replica.contains(FileType::Hold, &key) {
                let ours = self.inner.block(self.inner.storage.get(&key));
                let theirs = self.inner.block(target.get(&key));
                if let (Ok(a), Ok(b)) = (&ours, &theirs) {
                    if a == b {
                        continue;
                    }
                }
            }
            out.push((key, size));
        }
        Ok(out)
    }

    /// An archive replica's data: the selected snapshots the replica lacks,
    /// the packs holding their chunks that its own index does not list
    /// (copied whole, in its storage class), an index object of its own
    /// for them, the named objects selected, then the snapshots and their
    /// holds.
    fn archive_data(
        &self,
        sink: &Sink<'_>,
        sel: &ArchiveSelection,
        primary: &Listing,
        report: &mut ReplicateReport,
        copied: &mut BTreeMap<FileType, (u64, u64)>,
    ) -> Result<()> {
        let (target, replica) = (sink.target, sink.replica);
        let wanted: Vec<SnapshotId> = primary
            .of(FileType::Snapshot)
            .filter_map(|o| o.key.rsplit('/').next()?.parse().ok())
            .filter(|id| sel.snapshots.contains(id))
            .collect();
        let missing: Vec<SnapshotId> = wanted
            .iter()
            .filter(|id| {
                let key = ObjectKey::Snapshot(**id).to_string();
                replica.get(FileType::Snapshot, &key).map(|r| r.size)
                    != primary.get(FileType::Snapshot, &key).map(|p| p.size)
            })
            .copied()
            .collect();
        report.present += (wanted.len() - missing.len()) as u64;
        // The snapshots taken this run: those whose packs all reached the
        // archive (a pack damaged or gone on the primary keeps out only the
        // snapshots using it).
        let mut taken: Vec<SnapshotId> = missing.clone();
        if !missing.is_empty() {
            // The packs their chunks are in, by the primary's index; those
            // the replica's own index does not list yet are copied.
            let index = self.load_index()?;
            let mut needed: HashSet<u32> = HashSet::new();
            let mut uses: HashMap<SnapshotId, HashSet<u32>> = HashMap::new();
            self.for_each_snapshot(&missing, |id, key, snap, _| {
                let mine = uses.entry(id).or_default();
                for chunk in snap.chunks() {
                    match index.get(&chunk) {
                        Some(loc) => {
                            needed.insert(loc.pack);
                            mine.insert(loc.pack);
                        }
                        None => {
                            return Err(RepoError::Corrupt {
                                key,
                                reason: format!(
                                    "it uses chunk {} that no index object of the primary lists: run `lifeboat verify` on the primary",
                                    chunk.short()
                                ),
                            })
                        }
                    }
                }
                Ok(())
            })?;
            let view = self.view(target.clone());
            let indexed: HashSet<lifeboat_types::PackId> =
                view.load_index()?.packs().iter().map(|(p, _)| *p).collect();
            let todo: Vec<(String, u64)> = needed
                .iter()
                .map(|pos| index.pack(*pos).0)
                .filter(|p| !indexed.contains(p))
                .map(|p| {
                    let key = ObjectKey::Pack(p).to_string();
                    let size = primary.get(FileType::Pack, &key).map_or(0, |o| o.size);
                    (key, size)
                })
                .collect();
            let not_copied = self.copy_phase(sink, FileType::Pack, &todo, report, copied)?;
            // Index objects of its own for the packs copied (one damaged or
            // gone was not: its chunks stay unindexed, and the snapshots
            // using them are not taken).
            let copied_packs: HashSet<u32> = needed
                .iter()
                .copied()
                .filter(|pos| {
                    let (p, _) = index.pack(*pos);
                    !indexed.contains(&p)
                        && !not_copied.contains(ObjectKey::Pack(p).to_string().as_str())
                })
                .collect();
            taken.retain(|id| {
                uses.get(id).is_some_and(|packs| {
                    packs.iter().all(|pos| {
                        indexed.contains(&index.pack(*pos).0) || copied_packs.contains(pos)
                    })
                })
            });
            let mut entries: BTreeMap<u32, Vec<format::BlobEntry>> = BTreeMap::new();
            for e in index.iter() {
                let (id, loc) = e?;
                if copied_packs.contains(&loc.pack) {
                    entries
                        .entry(loc.pack)
                        .or_default()
                        .push(format::BlobEntry {
                            id,
                            offset: loc.offset,
                            len: loc.len,
                            raw_len: loc.raw_len,
                        });
                }
            }
            let packs: Vec<format::IndexedPack> = entries
                .into_iter()
                .map(|(pos, mut entries)| {
                    entries.sort_by_key(|e| e.offset);
                    let (pack, epoch) = index.pack(pos);
                    format::IndexedPack {
                        pack,
                        epoch,
                        entries,
                    }
                })
                .collect();
            for group in packs.chunks(ARCHIVE_PACKS_PER_INDEX) {
                let size = crate::writer::write_index(&view.inner, group)?;
                add(copied, FileType::Index, size);
            }
        }
        let named: Vec<(String, u64)> = primary
            .of(FileType::Named)
            .filter(|o| sel.named.contains(&o.key))
            .filter(|o| replica.get(FileType::Named, &o.key).map(|r| r.size) != Some(o.size))
            .map(|o| (o.key.clone(), o.size))
            .collect();
        self.copy_phase(sink, FileType::Named, &named, report, copied)?;
        let snaps: Vec<(String, u64)> = taken
            .iter()
            .map(|id| {
                let key = ObjectKey::Snapshot(*id).to_string();
                let size = primary.get(FileType::Snapshot, &key).map_or(0, |o| o.size);
                (key, size)
            })
            .collect();
        self.copy_phase(sink, FileType::Snapshot, &snaps, report, copied)?;
        let holds: Vec<(String, u64)> = wanted
            .iter()
            .filter_map(|id| {
                let key = ObjectKey::Hold(*id).to_string();
                primary.get(FileType::Hold, &key).map(|o| (key, o.size))
            })
            .collect();
        let holds = self.changed_holds(target, holds, replica)?;
        self.copy_phase(sink, FileType::Hold, &holds, report, copied)?;
        Ok(())
    }

    /// After an archive replica deleted snapshots: a prune of the replica
    /// that deletes the packs no snapshot there uses any more and rewrites
    /// its index objects — never a repack, which would read (thaw) cold
    /// packs.
    ///
    /// It runs after this run's session on the replica has ended; another
    /// run still copying into the archive holds its own session there,
    /// which keeps its packs (not yet indexed) from this prune. A prune
    /// that cannot run now (another one runs) is left to the next run: its
    /// failure is a warning, never the run's.
    fn archive_gc(&self, target: &DynStorage) -> Result<()> {
        let view = self.view(target.clone());
        if let Err(e) = view.prune(
            &crate::PruneOptions {
                max_unused: crate::MaxUnused::Unlimited,
                delete_delay: Duration::ZERO,
                ..crate::PruneOptions::default()
            },
            &crate::progress::NoProgress,
        ) {
            tracing::warn!(replica = %target.location(), error = %lifeboat_types::error::report(&e), "the archive's unused packs were not collected this time");
        }
        Ok(())
    }

    /// The replica's deletion records, each with its key.
    fn deletion_records(&self, target: &DynStorage) -> Result<Vec<(String, DeletionRecord)>> {
        let listed = self.inner.block(target.list(FileType::Deletion.prefix()))?;
        let mut out = Vec::new();
        for o in listed {
            let bytes = match self.inner.block(target.get(&o.key)) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let rec: DeletionRecord = self.decode_document(&o.key, MAGIC_DELETION, &bytes)?;
            if rec.version > DELETION_VERSION {
                return Err(RepoError::UnknownVersion {
                    key: o.key,
                    what: "deletion record",
                    found: u16::try_from(rec.version).unwrap_or(u16::MAX),
                    supported: DELETION_VERSION as u16,
                });
            }
            out.push((o.key, rec));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Records what is newly gone from the primary, and deletes from the
    /// replica what has been gone for the delete delay.
    fn apply_deletions(
        &self,
        target: &DynStorage,
        primary: &Listing,
        replica: &Listing,
        opts: &ReplicateOptions,
        kinds: &[FileType],
        progress: &dyn Progress,
    ) -> Result<DeletionReport> {
        let gone = gone_from_primary(primary, replica, kinds);
        let records = self.deletion_records(target)?;
        let recorded: HashSet<&str> = records
            .iter()
            .flat_map(|(_, r)| r.keys.iter().map(String::as_str))
            .collect();
        let new: Vec<String> = gone
            .iter()
            .filter(|(_, k)| !recorded.contains(k.as_str()))
            .map(|(_, k)| k.clone())
            .collect();
        let mut report = DeletionReport {
            newly_seen: new.len() as u64,
            ..DeletionReport::default()
        };
        let mut records = records;
        if !new.is_empty() {
            let now = Timestamp::now();
            let rec = DeletionRecord {
                version: DELETION_VERSION,
                id: random_id()?,
                observed: now,
                hostname: hostname(),
                keys: new,
            };
            let name = format!("{:014}-{}", now.as_millisecond().max(0), rec.id);
            let key = ObjectKey::Deletion(&name).to_string();
            let obj = seal_document(&self.inner, MAGIC_DELETION, &rec)?;
            self.inner.block(target.put(&key, Bytes::from(obj)))?;
            records.push((key, rec));
        }

        // Due: recorded at least the delay ago, and still gone.
        let now = Timestamp::now();
        let gone_keys: HashMap<&str, FileType> =
            gone.iter().map(|(ft, k)| (k.as_str(), *ft)).collect();
        let mut due: Vec<(FileType, String, u64)> = Vec::new();
        let mut finished: Vec<String> = Vec::new();
        for (key, rec) in &records {
            if !is_due(rec.observed, opts.delete_delay, now) {
                continue;
            }
            for k in &rec.keys {
                if let Some(ft) = gone_keys.get(k.as_str()) {
                    let size = replica.get(*ft, k).map_or(0, |o| o.size);
                    due.push((*ft, k.clone(), size));
                }
            }
            finished.push(key.clone());
        }
        let mut deleted: BTreeMap<FileType, (u64, u64)> = BTreeMap::new();
        if !due.is_empty() {
            progress.start("replicate: deleting what the primary deleted", None);
        }
        for &ft in kinds {
            let keys: Vec<&(FileType, String, u64)> = due.iter().filter(|d| d.0 == ft).collect();
            Pool::new(opts.workers).try_map(&keys, |(_, k, _)| -> Result<()> {
                Ok(self.inner.block(target.delete(k))?)
            })?;
            for (_, _, size) in keys {
                add(&mut deleted, ft, *size);
            }
        }
        if !due.is_empty() {
            progress.finish();
        }
        for key in &finished {
            self.inner.block(target.delete(key))?;
        }
        report.deleted = amounts(kinds, &deleted);
        // A key back on the primary leaves its record: if it goes again, it
        // is seen gone again, and waits the whole delay from then.
        let mut left: Vec<(String, DeletionRecord)> = Vec::new();
        for (key, mut rec) in records.into_iter().filter(|(k, _)| !finished.contains(k)) {
            let before = rec.keys.len();
            rec.keys.retain(|k| gone_keys.contains_key(k.as_str()));
            if rec.keys.len() == before {
                left.push((key, rec));
                continue;
            }
            if !rec.keys.is_empty() {
                // The same date, the keys still gone; stored before the old
                // record goes (a key in two records is deleted once).
                rec.id = random_id()?;
                let name = format!("{:014}-{}", rec.observed.as_millisecond().max(0), rec.id);
                let new_key = ObjectKey::Deletion(&name).to_string();
                let obj = seal_document(&self.inner, MAGIC_DELETION, &rec)?;
                self.inner.block(target.put(&new_key, Bytes::from(obj)))?;
                left.push((new_key, rec));
            }
            self.inner.block(target.delete(&key))?;
        }
        let pending = pending_of(&left, &gone, opts.delete_delay);
        report.pending = pending.pending;
        report.pending_snapshots = pending.pending_snapshots;
        report.next_due = pending.next_due;
        Ok(report)
    }
}

/// True when a deletion seen at `observed` may be applied at `now`.
fn is_due(observed: Timestamp, delay: Duration, now: Timestamp) -> bool {
    let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
    observed.checked_add(delay).is_ok_and(|due| due <= now)
}

/// What the replica has and the primary no longer has, of `kinds`, with
/// its kind.
fn gone_from_primary(
    primary: &Listing,
    replica: &Listing,
    kinds: &[FileType],
) -> Vec<(FileType, String)> {
    let mut out = Vec::new();
    for &ft in kinds {
        for o in replica.of(ft) {
            if !primary.contains(ft, &o.key) {
                out.push((ft, o.key.clone()));
            }
        }
    }
    out
}

/// The deletions `records` hold back: objects still gone, and when the
/// next is due.
fn pending_of(
    records: &[(String, DeletionRecord)],
    gone: &[(FileType, String)],
    delay: Duration,
) -> DeletionReport {
    let kinds: HashMap<&str, FileType> = gone.iter().map(|(ft, k)| (k.as_str(), *ft)).collect();
    let mut out = DeletionReport::default();
    let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
    for (_, rec) in records {
        let mut any = false;
        for k in &rec.keys {
            if let Some(ft) = kinds.get(k.as_str()) {
                any = true;
                out.pending += 1;
                if *ft == FileType::Snapshot {
                    out.pending_snapshots += 1;
                }
            }
        }
        if any {
            let due = rec.observed.checked_add(delay).ok();
            out.next_due = match (out.next_due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_is_due_once_the_delay_has_passed() {
        let seen: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!is_due(seen, day, "2026-01-01T23:59:59Z".parse().unwrap()));
        assert!(is_due(seen, day, "2026-01-02T00:00:00Z".parse().unwrap()));
        assert!(is_due(seen, Duration::ZERO, seen));
        // A delay too long to add never comes due.
        assert!(!is_due(
            seen,
            Duration::MAX,
            "2100-01-01T00:00:00Z".parse().unwrap()
        ));
    }

    #[test]
    fn a_name_is_the_hash_of_its_bytes() {
        let bytes = b"pack bytes";
        let hex = blake3::hash(bytes).to_hex();
        assert!(hash_matches(&format!("packs/{}/{hex}", &hex[..2]), bytes));
        assert!(hash_matches(&format!("snapshots/{hex}"), bytes));
        assert!(!hash_matches(&format!("snapshots/{hex}"), b"other bytes"));
    }

    #[test]
    fn the_throttle_spaces_stores_by_the_rate() {
        let t = Throttle::new(Some(1_000_000));
        let now = Instant::now();
        // At 1 MB/s, 100 kB take a tenth of a second: the first goes at
        // once, the next two after the ones before.
        assert_eq!(t.reserve(100_000, now), now);
        assert_eq!(t.reserve(100_000, now), now + Duration::from_millis(100));
        assert_eq!(t.reserve(100_000, now), now + Duration::from_millis(200));
        // After an idle while, no credit is kept: it goes when asked.
        let later = now + Duration::from_secs(10);
        assert_eq!(t.reserve(1, later), later);
        let free = Throttle::new(None);
        assert_eq!(free.reserve(u64::MAX, now), now);
    }
}
