//! Prune: reclaiming the space no snapshot needs, without stopping backups.
//!
//! Two phases, no exclusive lock (the design and the argument that no
//! interleaving loses a referenced chunk are in `docs/format.md`, "Prune"):
//!
//! 1. **Mark.** Snapshots are listed first, then the index: every chunk a
//!    listed snapshot needs is then indexed. The chunks they use are set in a
//!    bitmap by index ordinal. Packs no used chunk lives in are to be deleted;
//!    packs with too much unused data have their live chunks copied into new
//!    packs (repacked) and are deleted too. The index objects listing any of
//!    those packs are rewritten without them (superseded). Then a *mark*
//!    (`marks/<id>`) records the packs to delete and the index objects
//!    superseded. Until the mark is done, backups that know of it do not
//!    deduplicate against its packs.
//! 2. **Delete.** A mark's packs are deleted once it is older than the delete
//!    delay and no backup session that may have built on them (one that did
//!    not see the mark when it loaded its index) is running; a pack a
//!    snapshot written meanwhile still needs is indexed again instead. Then
//!    the superseded index objects, then the mark. Every step is idempotent,
//!    so a prune killed anywhere is finished by the next one.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lifeboat_types::{ChunkId, PackId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::format::{self, BlobEntry, IndexedPack, PackBuilder, MAGIC_MARK};
use crate::index::Index;
use crate::keys::{FileType, ObjectKey};
use crate::parallel::Pool;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sessions::{hostname, human_secs, random_id, seal_document, ListedSession, SessionKind};

/// The mark document's version.
const MARK_VERSION: u32 = 1;
/// Entries per consolidated index object.
const INDEX_TARGET_ENTRIES: usize = 250_000;

/// How much unused space a prune may leave in packs it keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// A share (0 ≤ f < 1) of the repository's pack bytes after the prune.
    Fraction(f64),
    /// A number of bytes.
    Bytes(u64),
    /// Any: only packs nothing uses are deleted; nothing is repacked.
    Unlimited,
}

impl MaxUnused {
    /// Parses `5%`, `0%`, `100M`, `unlimited` (as restic's `--max-unused`).
    pub fn parse(s: &str) -> std::result::Result<MaxUnused, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("--max-unused {s:?} is not a percentage"))?;
            if !(0.0..100.0).contains(&v) {
                return Err(format!(
                    "--max-unused {s} is out of range: give a percentage from 0% to below 100%, a size (500M), or `unlimited`"
                ));
            }
            return Ok(MaxUnused::Fraction(v / 100.0));
        }
        s.parse::<lifeboat_types::ByteSize>()
            .map(|b| MaxUnused::Bytes(b.0))
            .map_err(|_| {
                format!("--max-unused {s:?}: give a percentage (5%), a size (500M) or `unlimited`")
            })
    }

    /// The unused bytes tolerated when `used` bytes are kept.
    fn limit(self, used: u64) -> u64 {
        match self {
            // As restic: f of the total after the prune, total = used + unused.
            MaxUnused::Fraction(f) => (f / (1.0 - f) * used as f64) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

/// What a prune is asked to do.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Only report what would be done.
    pub dry_run: bool,
    /// Unused space tolerated in kept packs (default 5 %).
    pub max_unused: MaxUnused,
    /// At most this many bytes of packs are repacked (default: no limit).
    pub max_repack: Option<u64>,
    /// A mark's packs are deleted only once the mark is this old (time for a
    /// lagging store listing to show every session and snapshot). Zero on
    /// stores whose listings are consistent.
    pub delete_delay: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: MaxUnused::Fraction(0.05),
            max_repack: None,
            delete_delay: Duration::ZERO,
        }
    }
}

/// A prune's mark: packs to delete and index objects superseded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Document version.
    pub version: u32,
    /// Random id (hex), also the object's name.
    pub id: String,
    /// When it was written.
    pub created: Timestamp,
    /// The machine of the prune that wrote it.
    pub hostname: String,
    /// The packs to delete: no chunk a snapshot uses lives only there.
    pub packs: Vec<PackId>,
    /// Stored packs no index listed when the mark was made (left by killed
    /// backups); deleted with the others unless an index lists them by then.
    #[serde(default)]
    pub unindexed: Vec<PackId>,
    /// Index objects (keys) rewritten without the packs; deleted after them.
    pub indexes: Vec<String>,
    /// When the store says it was written (not stored in the document).
    #[serde(skip)]
    pub stored_at: Option<SystemTime>,
}

/// Bytes and counts of one kind of object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    /// Objects.
    pub count: u64,
    /// Stored bytes.
    pub bytes: u64,
}

impl Amount {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What became of the marks a prune found or made.
#[derive(Clone, Debug, Serialize)]
pub struct MarkOutcome {
    /// The mark's id.
    pub id: String,
    /// When it was made.
    pub created: Timestamp,
    /// Packs it lists.
    pub packs: u64,
    /// True when its packs were deleted (or, in a dry run, would be).
    pub done: bool,
    /// Why not, when not done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Packs indexed again because a snapshot written meanwhile needs them.
    pub recovered: u64,
}

/// What a prune found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// True for a dry run: nothing was written or deleted.
    pub dry_run: bool,
    /// Snapshots read.
    pub snapshots: u64,
    /// Chunks indexed, and how many some snapshot uses.
    pub chunks: u64,
    /// Chunks some snapshot uses.
    pub chunks_used: u64,
    /// Packs before the prune (indexed and stored).
    pub packs_before: Amount,
    /// Bytes in kept packs that snapshots use.
    pub used_bytes: u64,
    /// Packs nothing uses, marked for deletion now.
    pub unused_packs: Amount,
    /// Packs repacked: their live chunks copied, the packs marked.
    pub repacked_packs: Amount,
    /// Live bytes copied into new packs.
    pub repacked_live_bytes: u64,
    /// New packs written by the repack.
    pub new_packs: Amount,
    /// Stored packs no index lists (left by killed backups), marked.
    pub unindexed_packs: Amount,
    /// Unused bytes left in kept packs (under `--max-unused`).
    pub unused_left: u64,
    /// Index objects superseded now.
    pub indexes_superseded: Amount,
    /// Index objects written (consolidated).
    pub indexes_written: Amount,
    /// Packs deleted in this run (this run's mark and older ones).
    pub packs_deleted: Amount,
    /// Index objects deleted in this run.
    pub indexes_deleted: Amount,
    /// Finished or stale session records removed.
    pub sessions_removed: u64,
    /// Temporary files of interrupted writes (a killed backup or wal-push)
    /// older than [`LEFTOVER_AGE`] removed (found, in a dry run).
    pub leftovers_removed: Amount,
    /// Every mark found or made, and what became of it.
    pub marks: Vec<MarkOutcome>,
}

/// How old a temporary file of an interrupted write must be before prune
/// removes it: no write in progress takes that long to rename its file.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Repository {
    /// Removes what interrupted writes left, once old enough.
    fn remove_old_leftovers(&self, report: &mut PruneReport) -> Result<()> {
        for l in self.remove_leftovers(LEFTOVER_AGE)? {
            report.leftovers_removed.add(l.size);
        }
        Ok(())
    }
}

impl PruneReport {
    /// Pack bytes that will be free once every mark is done.
    pub fn bytes_to_free(&self) -> u64 {
        self.unused_packs.bytes + self.repacked_packs.bytes + self.unindexed_packs.bytes
    }
}

/// A bitmap over index ordinals.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let was = self.0[w] & b != 0;
        self.0[w] |= b;
        !was
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }
}

/// Every pack the marks list (to delete, indexed or not).
pub(crate) fn marked_packs(marks: &[Mark]) -> HashSet<PackId> {
    marks
        .iter()
        .flat_map(|m| m.packs.iter().chain(&m.unindexed).copied())
        .collect()
}

fn not_found_ok(r: std::result::Result<(), lifeboat_storage::StorageError>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

impl Repository {
    /// Every prune mark in the repository, oldest first.
    pub fn marks(&self) -> Result<Vec<Mark>> {
        let mut out = Vec::new();
        for (info, mark) in self.read_documents::<Mark>(FileType::Mark, MAGIC_MARK)? {
            let mut m = mark?;
            m.stored_at = info.modified;
            out.push(m);
        }
        out.sort_by_key(|m| m.created);
        Ok(out)
    }

    /// The index a backup deduplicates against: every index object, less the
    /// packs marked for deletion. `seen` receives the ids of the marks known.
    pub(crate) fn load_index_for_backup(&self) -> Result<(Index, Vec<String>)> {
        let marks = self.marks()?;
        let marked = marked_packs(&marks);
        let mut index = self.load_index_marked(&marked)?;
        if !marked.is_empty() {
            index.exclude_packs(&marked);
        }
        Ok((index, marks.into_iter().map(|m| m.id).collect()))
    }

    /// Deletes the packs no snapshot needs and repacks those with too much
    /// unused data; see the module documentation. Backups and `wal-push` may
    /// run meanwhile. A second prune at once is refused (naming the first).
    pub fn prune(&self, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..PruneReport::default()
        };
        let session = if opts.dry_run {
            None
        } else {
            self.ensure_prune_format()?;
            let s = self.begin_session(SessionKind::Prune)?;
            Some(s)
        };
        let my_id = session.as_ref().map(|s| s.id());
        // "Now" by the store's clock: the time it gave our own session
        // record. Sessions' and marks' ages are measured against it with the
        // store's times of their writes, so no host's clock matters.
        let now = match &my_id {
            Some(id) => self.store_time(&ObjectKey::Session(id).to_string())?,
            None => SystemTime::now(),
        };
        if let Some(id) = &my_id {
            self.refuse_second_prune(id, now)?;
        }

        // Phase 2 of the marks earlier prunes left, first: their packs are
        // then out of the way of this run's accounting.
        for mark in self.marks()? {
            let outcome =
                self.finish_mark(&mark, my_id.as_ref(), now, opts, &mut report, progress)?;
            report.marks.push(outcome);
        }
        let pending = marked_packs(&self.marks()?);

        // Phase 1. Snapshots before the index: every chunk a listed snapshot
        // uses is in an index object stored before it, so listed after.
        let snapshot_ids = self.snapshot_ids()?;
        let index = self.load_index()?;
        let stored = self.stored_packs()?;
        report.chunks = index.len() as u64;
        let mut used = Bits::new(index.len());
        progress.start("prune: reading snapshots", None);
        self.for_each_snapshot(&snapshot_ids, |_, key, snap, size| {
            report.snapshots += 1;
            for chunk in snap.chunks() {
                match index.ordinal(&chunk) {
                    Some(o) => {
                        if used.set(o) {
                            report.chunks_used += 1;
                        }
                    }
                    None => {
                        return Err(RepoError::Corrupt {
                            key,
                            reason: format!(
                                "it uses chunk {} that no index object lists; prune changes nothing until this is resolved: run `lifeboat verify` and `lifeboat repair index`",
                                chunk.short()
                            ),
                        })
                    }
                }
            }
            progress.advance(size as u64);
            Ok(())
        })?;
        progress.finish();

        // Per pack: live bytes and chunks (each chunk counts in the pack its
        // index location names; other copies are garbage).
        let packs = index.packs();
        let mut live_bytes = vec![0u64; packs.len()];
        let mut live_chunks = vec![0u32; packs.len()];
        let mut located = vec![0u32; packs.len()];
        for (o, e) in index.iter().enumerate() {
            let (_, loc) = e?;
            located[loc.pack as usize] += 1;
            if used.get(o) {
                live_bytes[loc.pack as usize] += u64::from(loc.len);
                live_chunks[loc.pack as usize] += 1;
            }
        }
        let mut remove: HashSet<PackId> = HashSet::new();
        let mut repack: Vec<(u32, u64)> = Vec::new();
        let mut candidates: Vec<(u32, u64, u64)> = Vec::new();
        for (pos, (pack, _)) in packs.iter().enumerate() {
            let size = stored.get(pack).copied();
            let pos32 = pos as u32;
            match size {
                None if live_chunks[pos] > 0 => {
                    return Err(RepoError::Corrupt {
                        key: format::pack_key(pack),
                        reason: "an index lists it and snapshots use its chunks, but it is not stored; prune changes nothing until this is resolved: run `lifeboat verify`".into(),
                    });
                }
                // Listed but gone and unused: dropped with its index objects.
                None => {
                    remove.insert(*pack);
                }
                Some(size) => {
                    report.packs_before.add(size);
                    if pending.contains(pack) {
                        // An earlier mark holds it; chunks still used there
                        // (a backup built on them before it knew) are copied.
                        if live_chunks[pos] > 0 {
                            repack.push((pos32, size));
                        }
                        continue;
                    }
                    if live_chunks[pos] == 0 {
                        report.unused_packs.add(size);
                        remove.insert(*pack);
                    } else {
                        // Unused: the blobs no snapshot uses (the pack's
                        // header and table of contents are not counted).
                        let unused = size
                            .saturating_sub(pack_overhead(located[pos]))
                            .saturating_sub(live_bytes[pos]);
                        report.used_bytes += live_bytes[pos];
                        if unused > 0 {
                            candidates.push((pos32, size, unused));
                        }
                    }
                }
            }
        }
        // Repack the emptiest packs first until what stays unused is within
        // the limit (as restic's --max-unused), and within --max-repack.
        candidates.sort_by(|a, b| {
            let ra = a.2 as f64 / a.1 as f64;
            let rb = b.2 as f64 / b.1 as f64;
            rb.total_cmp(&ra)
        });
        let mut unused_left: u64 = candidates.iter().map(|c| c.2).sum();
        let limit = opts.max_unused.limit(report.used_bytes);
        let mut repack_budget = opts.max_repack.unwrap_or(u64::MAX);
        for &(pos, size, unused) in &candidates {
            if unused_left <= limit || size > repack_budget {
                continue;
            }
            repack_budget -= size;
            unused_left -= unused;
            report.repacked_packs.add(size);
            report.repacked_live_bytes += live_bytes[pos as usize];
            repack.push((pos, size));
        }
        report.unused_left = unused_left;
        for &(pos, _) in &repack {
            remove.insert(packs[pos as usize].0);
        }
        // Stored packs no index lists: left by killed backups (or being
        // written by running ones: the sessions protect those).
        let indexed: HashSet<PackId> = packs.iter().map(|(p, _)| *p).collect();
        let mut unindexed = Vec::new();
        for (pack, size) in &stored {
            if !indexed.contains(pack) && !pending.contains(pack) {
                report.unindexed_packs.add(*size);
                unindexed.push(*pack);
            }
        }

        if opts.dry_run {
            for l in self.leftovers()? {
                if l.age_s.is_some_and(|a| a >= LEFTOVER_AGE.as_secs()) {
                    report.leftovers_removed.add(l.size);
                }
            }
            return Ok(report);
        }
        if remove.is_empty() && unindexed.is_empty() {
            self.remove_old_sessions(now, opts, &mut report)?;
            self.remove_old_leftovers(&mut report)?;
            if let Some(s) = session {
                s.finish()?;
            }
            return Ok(report);
        }

        // Copy the live chunks of the packs to repack into new packs.
        if !repack.is_empty() {
            self.repack(&index, &repack, &used, &mut report, progress)?;
        }
        lifeboat_types::failpoint!("prune-after-repack");

        // Rewrite every index object that lists a removed pack, without it.
        let superseded = self.rewrite_indexes(&remove, &pending, &mut report)?;
        lifeboat_types::failpoint!("prune-after-index");

        let mut mark_packs: Vec<PackId> = remove
            .iter()
            .filter(|p| stored.contains_key(p))
            .copied()
            .collect();
        mark_packs.sort();
        let mark = Mark {
            version: MARK_VERSION,
            id: random_id()?,
            created: Timestamp::now(),
            hostname: hostname(),
            packs: mark_packs,
            unindexed,
            indexes: superseded,
            stored_at: None,
        };
        let obj = seal_document(&self.inner, MAGIC_MARK, &mark)?;
        self.inner.block(
            self.inner
                .storage
                .put(&ObjectKey::Mark(&mark.id).to_string(), Bytes::from(obj)),
        )?;
        lifeboat_types::failpoint!("prune-after-mark");
        let outcome = self.finish_mark(&mark, my_id.as_ref(), now, opts, &mut report, progress)?;
        report.marks.push(outcome);
        self.remove_old_sessions(now, opts, &mut report)?;
        self.remove_old_leftovers(&mut report)?;
        if let Some(s) = session {
            s.finish()?;
        }
        Ok(report)
    }

    /// The store's modification time of `key` (the local clock when the
    /// store gives none).
    fn store_time(&self, key: &str) -> Result<SystemTime> {
        Ok(self
            .inner
            .block(self.inner.storage.stat(key))?
            .and_then(|i| i.modified)
            .unwrap_or_else(SystemTime::now))
    }

    /// Refuses when another prune runs: whichever started first (two that
    /// start together may both refuse; neither goes on alone with the other).
    fn refuse_second_prune(&self, mine: &str, now: SystemTime) -> Result<()> {
        for s in &self.sessions()? {
            let Some(r) = &s.record else { continue };
            if r.id == mine || r.kind != SessionKind::Prune || !s.is_running(now) {
                continue;
            }
            {
                return Err(RepoError::Busy(format!(
                    "another prune is running: {}. Two prunes at once are refused; run this one after it ends (a prune that was killed stops counting {} after its last heartbeat)",
                    s.describe(now),
                    human_secs(crate::sessions::STALE_AFTER.as_secs())
                )));
            }
        }
        Ok(())
    }

    /// Copies the used chunks of the packs `repack` into new packs. Blobs
    /// move sealed as they are (a blob's seal names its chunk, not its pack),
    /// into new packs of the same key epoch, each checked on the way (opened
    /// and hash-checked: damage is never copied). Reads go blob run by blob
    /// run, so memory is one pack being built and a few MiB.
    fn repack(
        &self,
        index: &Index,
        repack: &[(u32, u64)],
        used: &Bits,
        report: &mut PruneReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.start("prune: repacking", Some(repack.iter().map(|r| r.1).sum()));
        let mut by_epoch: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &(pos, _) in repack {
            by_epoch.entry(index.pack(pos).1).or_default().push(pos);
        }
        let pack_size = self.inner.config.pack_size as usize;
        let keyring = &self.inner.keyring;
        let mut unindexed: Vec<IndexedPack> = Vec::new();
        // Buffers reused from pack to pack and run to run: fresh ones each
        // time would leave the allocator holding several packs' worth.
        let mut scratch: Vec<u8> = Vec::new();
        let mut run_buf: Vec<u8> = Vec::new();
        let mut spare: Option<Vec<u8>> = None;
        let store = |b: PackBuilder,
                     unindexed: &mut Vec<IndexedPack>,
                     report: &mut PruneReport,
                     key: &lifeboat_crypto::Key,
                     spare: &mut Option<Vec<u8>>|
         -> Result<()> {
            let epoch = b.epoch();
            let (id, bytes, entries) = b.finish(key)?;
            let size = bytes.len() as u64;
            let bytes = Bytes::from(bytes);
            self.inner.block(
                self.inner
                    .storage
                    .put(&format::pack_key(&id), bytes.clone()),
            )?;
            if let Ok(b) = bytes.try_into_mut() {
                *spare = Some(b.into());
            }
            report.new_packs.add(size);
            unindexed.push(IndexedPack {
                pack: id,
                epoch,
                entries,
            });
            if unindexed.len() >= 4 {
                let n = crate::writer::write_index(&self.inner, unindexed)?;
                report.indexes_written.add(n);
                unindexed.clear();
            }
            Ok(())
        };
        for (epoch, positions) in by_epoch {
            let data_key = keyring.epoch(epoch).ok_or_else(|| RepoError::Corrupt {
                key: format!("key epoch {epoch}"),
                reason: "a pack is sealed with a key epoch the keyring does not have".into(),
            })?;
            let mut builder: Option<PackBuilder> = None;
            for pos in positions {
                let (pack, _) = index.pack(pos);
                let key = format::pack_key(&pack);
                // The live blobs of this pack, from its own table of
                // contents (three ranged reads): memory is one pack's
                // entries, whatever the size of the repository.
                let size = index_pack_size(repack, pos);
                let toc = self.pack_toc(&pack, &key, size)?;
                let mut entries: Vec<BlobEntry> = Vec::new();
                for e in toc.entries {
                    if let Some((o, loc)) = index.locate(&e.id) {
                        if used.get(o) && loc.pack == pos && loc.offset == e.offset {
                            entries.push(e);
                        }
                    }
                }
                entries.sort_by_key(|e| e.offset);
                let mut i = 0;
                while i < entries.len() {
                    // A run of blobs close together, read at once (≤ 4 MiB
                    // beyond its first blob).
                    let start = u64::from(entries[i].offset);
                    let mut end = start + u64::from(entries[i].len);
                    let mut j = i + 1;
                    while j < entries.len() {
                        let e = &entries[j];
                        let (o, l) = (u64::from(e.offset), u64::from(e.len));
                        if o > end + (64 << 10) || o + l - start > (4 << 20) {
                            break;
                        }
                        end = end.max(o + l);
                        j += 1;
                    }
                    let mut run = self.inner.block(self.inner.storage.get_range_into(
                        &key,
                        start..end,
                        std::mem::take(&mut run_buf),
                    ))?;
                    if run.len() as u64 != end - start {
                        return Err(RepoError::Corrupt {
                            key: key.clone(),
                            reason: format!(
                                "{} bytes read of the {} asked at offset {start}: truncated",
                                run.len(),
                                end - start
                            ),
                        });
                    }
                    for e in &entries[i..j] {
                        let at = (u64::from(e.offset) - start) as usize;
                        let sealed = &mut run[at..at + e.len as usize];
                        let b = builder.get_or_insert_with(|| match spare.take() {
                            Some(buf) => PackBuilder::with_buffer(epoch, buf),
                            None => PackBuilder::new(epoch, pack_size + (4 << 20)),
                        });
                        b.push_sealed(e, sealed)?;
                        // Then check it (this decrypts the read copy in place).
                        scratch.resize(e.raw_len as usize, 0);
                        format::open_blob_to(
                            &key,
                            data_key,
                            Some(keyring),
                            e,
                            sealed,
                            &mut scratch,
                        )?;
                        if b.len() >= pack_size {
                            if let Some(full) = builder.take() {
                                store(full, &mut unindexed, report, data_key, &mut spare)?;
                            }
                        }
                    }
                    run_buf = run;
                    i = j;
                }
                progress.advance(index_pack_size(repack, pos));
            }
            if let Some(last) = builder.take().filter(|b| !b.is_empty()) {
                store(last, &mut unindexed, report, data_key, &mut spare)?;
            }
        }
        if !unindexed.is_empty() {
            let n = crate::writer::write_index(&self.inner, &unindexed)?;
            report.indexes_written.add(n);
        }
        progress.finish();
        Ok(())
    }

    /// Rewrites the index objects that list a pack in `remove`: their other
    /// packs go into new objects, every entry kept (a chunk stored twice
    /// keeps both locations: a backup may have built on either); packs an
    /// earlier mark holds are left out too (that mark alone decides whether
    /// they come back). Returns the keys of the objects superseded.
    fn rewrite_indexes(
        &self,
        remove: &HashSet<PackId>,
        pending: &HashSet<PackId>,
        report: &mut PruneReport,
    ) -> Result<Vec<String>> {
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Index.prefix()))?;
        let mut superseded = Vec::new();
        let mut out: Vec<IndexedPack> = Vec::new();
        let mut out_entries = 0usize;
        let mut emitted: HashSet<PackId> = HashSet::new();
        let flush = |out: &mut Vec<IndexedPack>, report: &mut PruneReport| -> Result<()> {
            if !out.is_empty() {
                let size = crate::writer::write_index(&self.inner, out)?;
                report.indexes_written.add(size);
                out.clear();
            }
            Ok(())
        };
        for info in listed {
            let bytes = match self.inner.block(self.inner.storage.get(&info.key)) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let packs = match self.decode_index(&info.key, &bytes) {
                Ok(p) => p,
                // A damaged index object is left for `repair index`.
                Err(RepoError::Corrupt { .. }) => continue,
                Err(e) => return Err(e),
            };
            if !packs.iter().any(|p| remove.contains(&p.pack)) {
                continue;
            }
            for p in packs {
                if remove.contains(&p.pack) || pending.contains(&p.pack) || !emitted.insert(p.pack)
                {
                    continue;
                }
                out_entries += p.entries.len();
                out.push(p);
                if out_entries >= INDEX_TARGET_ENTRIES {
                    flush(&mut out, report)?;
                    out_entries = 0;
                }
            }
            report.indexes_superseded.add(info.size);
            superseded.push(info.key);
        }
        flush(&mut out, report)?;
        Ok(superseded)
    }

    /// Phase 2 of a mark: deletes its packs, then its superseded index
    /// objects, then the mark — when it is old enough and no backup that may
    /// have built on its packs is running. Packs a snapshot needs are indexed
    /// again instead of deleted.
    #[allow(clippy::too_many_arguments)]
    fn finish_mark(
        &self,
        mark: &Mark,
        me: Option<&String>,
        now: SystemTime,
        opts: &PruneOptions,
        report: &mut PruneReport,
        progress: &dyn Progress,
    ) -> Result<MarkOutcome> {
        let mut outcome = MarkOutcome {
            id: mark.id.clone(),
            created: mark.created,
            packs: (mark.packs.len() + mark.unindexed.len()) as u64,
            done: false,
            waiting_for: None,
            recovered: 0,
        };
        let age = now
            .duration_since(mark.stored_at.unwrap_or(SystemTime::from(mark.created)))
            .unwrap_or_default();
        if age < opts.delete_delay {
            outcome.waiting_for = Some(format!(
                "the delete delay: it is {} old, deleted by a prune from {} on",
                human_secs(age.as_secs()),
                mark.created
                    .checked_add(opts.delete_delay)
                    .unwrap_or(mark.created)
            ));
            return Ok(outcome);
        }
        if let Some(blocker) = self.blocking_session(mark, opts, now, me)? {
            outcome.waiting_for = Some(format!(
                "{}, which may build on its packs; the next prune after it ends deletes them",
                blocker.describe(now)
            ));
            return Ok(outcome);
        }
        if opts.dry_run {
            outcome.done = true;
            return Ok(outcome);
        }
        // Snapshots written since the mark may use its packs' chunks (a backup
        // that started before it): those packs are indexed again.
        let snapshot_ids = self.snapshot_ids()?;
        let mut index = self.load_index()?;
        let indexed_now: HashSet<PackId> = index.packs().iter().map(|(p, _)| *p).collect();
        let doomed: HashSet<PackId> = mark.packs.iter().copied().collect();
        index.exclude_packs(&doomed);
        let mut missing: HashSet<ChunkId> = HashSet::new();
        self.for_each_snapshot(&snapshot_ids, |_, _, snap, _| {
            missing.extend(snap.chunks().filter(|c| !index.contains(c)));
            Ok(())
        })?;
        if !missing.is_empty() {
            // The index keeps one location per chunk; a chunk stored twice
            // (repacked, or stored again by a backup that knew the mark) may
            // have its other copy in a pack that stays.
            let superseded: HashSet<&String> = mark.indexes.iter().collect();
            self.drop_listed_elsewhere(&mut missing, &doomed, &superseded)?;
        }
        let mut keep: HashSet<PackId> = HashSet::new();
        if !missing.is_empty() {
            let stored = self.stored_packs()?;
            let mut again = Vec::new();
            for pack in &mark.packs {
                let Some(&size) = stored.get(pack) else {
                    continue;
                };
                let toc = self.pack_toc(pack, &format::pack_key(pack), size)?;
                if toc.entries.iter().any(|e| missing.contains(&e.id)) {
                    keep.insert(*pack);
                    again.push(toc);
                }
            }
            if !again.is_empty() {
                crate::writer::write_index(&self.inner, &again)?;
                outcome.recovered = again.len() as u64;
                tracing::warn!(
                    mark = %mark.id,
                    packs = again.len(),
                    "packs marked for deletion are used by a snapshot written since; indexed again"
                );
            }
        }
        // Unindexed packs an index lists by now (a backup finished them).
        for p in &mark.unindexed {
            if indexed_now.contains(p) {
                keep.insert(*p);
            }
        }
        let delete: Vec<PackId> = mark
            .packs
            .iter()
            .chain(&mark.unindexed)
            .filter(|p| !keep.contains(p))
            .copied()
            .collect();
        let stored = self.stored_packs()?;
        progress.start("prune: deleting", Some(delete.len() as u64));
        let pool = Pool::new(8);
        pool.try_map(&delete, |p| {
            lifeboat_types::failpoint!("prune-delete-pack");
            let r = not_found_ok(
                self.inner
                    .block(self.inner.storage.delete(&format::pack_key(p))),
            );
            progress.advance(1);
            r
        })?;
        progress.finish();
        for p in &delete {
            if let Some(&size) = stored.get(p) {
                report.packs_deleted.add(size);
            }
        }
        lifeboat_types::failpoint!("prune-after-packs-deleted");
        pool.try_map(&mark.indexes, |k| {
            not_found_ok(self.inner.block(self.inner.storage.delete(k)))
        })?;
        report.indexes_deleted.count += mark.indexes.len() as u64;
        not_found_ok(
            self.inner.block(
                self.inner
                    .storage
                    .delete(&ObjectKey::Mark(&mark.id).to_string()),
            ),
        )?;
        outcome.done = true;
        Ok(outcome)
    }

    /// Removes from `chunks` those an index object lists in a pack not in
    /// `doomed`.
    fn drop_listed_elsewhere(
        &self,
        chunks: &mut HashSet<ChunkId>,
        doomed: &HashSet<PackId>,
        superseded: &HashSet<&String>,
    ) -> Result<()> {
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Index.prefix()))?;
        for info in listed {
            if chunks.is_empty() {
                break;
            }
            // Objects this mark supersedes go with it: what only they list
            // is not listed elsewhere.
            if superseded.contains(&info.key) {
                continue;
            }
            let bytes = match self.inner.block(self.inner.storage.get(&info.key)) {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(packs) = self.decode_index(&info.key, &bytes) else {
                continue;
            };
            for p in packs.iter().filter(|p| !doomed.contains(&p.pack)) {
                for e in &p.entries {
                    chunks.remove(&e.id);
                }
            }
        }
        Ok(())
    }

    /// A backup session that may have built on the packs of `mark`: running
    /// (or finished within the delete delay), and did not know the mark when
    /// it loaded its index.
    fn blocking_session(
        &self,
        mark: &Mark,
        opts: &PruneOptions,
        now: SystemTime,
        me: Option<&String>,
    ) -> Result<Option<ListedSession>> {
        for s in self.sessions()? {
            let blocks = match &s.record {
                None => s.is_running(now),
                Some(r) => {
                    let knew = r
                        .marks_seen
                        .as_ref()
                        .is_some_and(|seen| seen.contains(&mark.id));
                    let recent = s.finished_at().is_some_and(|f| {
                        now.duration_since(f).unwrap_or_default() < opts.delete_delay
                    });
                    match r.kind {
                        SessionKind::Backup => !knew && (s.is_running(now) || recent),
                        // Another prune (two at once are refused; this is
                        // the second line): its repacked packs may not be
                        // indexed yet.
                        SessionKind::Prune => Some(&r.id) != me && s.is_running(now),
                    }
                }
            };
            if blocks {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Removes session records that no longer matter: finished ones older
    /// than the delete delay, and stale ones (killed) a day old.
    fn remove_old_sessions(
        &self,
        now: SystemTime,
        opts: &PruneOptions,
        report: &mut PruneReport,
    ) -> Result<()> {
        for s in self.sessions()? {
            let seen = s
                .modified
                .or_else(|| s.record.as_ref().map(|r| SystemTime::from(r.refreshed)));
            let old = match &s.record {
                Some(_) => match s.finished_at() {
                    Some(f) => now.duration_since(f).unwrap_or_default() >= opts.delete_delay,
                    None => {
                        s.is_dead_here()
                            || s.is_stale(now)
                                && seen.is_some_and(|t| {
                                    now.duration_since(t).unwrap_or_default()
                                        > Duration::from_secs(86_400)
                                })
                    }
                },
                None => false,
            };
            if old {
                not_found_ok(self.inner.block(self.inner.storage.delete(&s.key)))?;
                report.sessions_removed += 1;
            }
        }
        Ok(())
    }
}

/// A pack's bytes that are not blobs: its header, and its sealed table of
/// contents of `entries` entries with its length.
fn pack_overhead(entries: u32) -> u64 {
    (format::PACK_HEADER_LEN + 4 + 12 + 16 + 4) as u64 + 44 * u64::from(entries)
}

/// The stored size of the pack at `pos` among those to repack.
fn index_pack_size(repack: &[(u32, u64)], pos: u32) -> u64 {
    repack.iter().find(|r| r.0 == pos).map(|r| r.1).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unused_reads_as_restic_does_and_refuses_what_is_out_of_range() {
        assert_eq!(MaxUnused::parse("5%").unwrap(), MaxUnused::Fraction(0.05));
        assert_eq!(MaxUnused::parse("0%").unwrap(), MaxUnused::Fraction(0.0));
        assert_eq!(MaxUnused::parse("unlimited").unwrap(), MaxUnused::Unlimited);
        assert!(matches!(MaxUnused::parse("100M").unwrap(), MaxUnused::Bytes(b) if b == 100 << 20));
        for bad in ["100%", "-1%", "150%", "x%", "lots"] {
            let e = MaxUnused::parse(bad).unwrap_err();
            assert!(e.contains("max-unused"), "{bad}: {e}");
        }
        // 5 % of the total after the prune: used 95 → 5 unused.
        assert_eq!(MaxUnused::Fraction(0.05).limit(95), 5);
    }

    #[test]
    fn the_bitmap_sets_each_bit_once() {
        let mut b = Bits::new(130);
        assert!(b.set(129));
        assert!(!b.set(129));
        assert!(b.get(129) && !b.get(128));
    }
}
