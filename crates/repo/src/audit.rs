//! The audit log: who did what with the repository — every command that
//! opens it, with its arguments (secrets redacted by the caller), the OS
//! user and host, the key slot used, the snapshots it read, wrote and
//! deleted, and how it ended.
//!
//! **Stored** as `audit/<block>/<seq>-<ms>-<hash>[.<parent>]*`, one sealed
//! JSON document per record (`LBAU`, `docs/format.md` "The audit log"):
//! encrypted and authenticated like every other document, never rewritten
//! and never deleted by lifeboat (neither prune, nor forget, nor a replica's
//! deletions touch `audit/`).
//!
//! **Hash-chained.** A record names the BLAKE3 hash of the stored bytes of
//! each record it follows (its parents: every record no other record
//! followed yet, the *heads*), and its `seq` is one more than theirs. The
//! key repeats the record's own hash, its sequence number and time, and the
//! first 16 hex digits of each parent's hash, so a writer finds the heads
//! from one listing of the newest blocks without reading a record.
//!
//! **Concurrent writers** never lose a record: each writes an object of its
//! own. Two writers that saw the same heads both write the same `seq`; the
//! next record follows both, and the chain is a graph that joins again.
//!
//! **What [`Repository::verify_audit`] finds**: a record altered (its bytes
//! no longer hash to its name, or no longer decrypt), one moved or
//! reordered (stored under another record's name, or its sequence not
//! following its parents'), one removed (a later record names it), a
//! missing sequence number, and — from the witness this host keeps in its
//! cache directory (the newest record it wrote or checked) — records
//! removed from the end. What no chain can show on its own: the newest
//! records removed on a store nobody witnessed; S3 Object Lock on `audit/`
//! closes that (README "Audit").

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::format::MAGIC_AUDIT;
use crate::keys::FileType;
use crate::repository::Inner;
use crate::sessions::seal_document;
use crate::{RepoError, Repository, Result};
use lifeboat_types::{SnapshotId, Timestamp};

/// The audit record version this build writes and reads.
pub const AUDIT_VERSION: u32 = 1;

/// Records per block (`audit/<block>/`): a writer lists the newest two.
pub const AUDIT_BLOCK: u64 = 1000;

/// A record follows at most this many heads (the newest); others wait for
/// the next record. With 8, a key's last part stays under 255 bytes with a
/// local store's temporary suffix (91 + 17 × 8 + 21).
const MAX_PARENTS: usize = 8;

/// Hex digits of a parent's hash repeated in a key.
const SHORT: usize = 16;

/// How a command ended, or that it began reading data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It began reading a snapshot's data (written as the reading starts,
    /// so a read is on record even when the command is killed).
    Reading,
    /// It did what it was asked.
    Success,
    /// It failed.
    Failed,
    /// It was refused: a usage or configuration error.
    Refused,
    /// It found damage.
    Damage,
}

impl AuditOutcome {
    /// The word used in listings and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Reading => "reading",
            AuditOutcome::Success => "success",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Damage => "damage",
        }
    }
}

/// Who runs what: what the caller knows of the command (the repository
/// adds the key slot, the snapshots and the chain).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditContext {
    /// The command: `files restore`, `pg backup`.
    pub command: String,
    /// Its arguments, secrets already redacted.
    pub args: Vec<String>,
    /// The OS user.
    pub user: String,
    /// The host.
    pub host: String,
}

/// One record of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Document version.
    pub version: u32,
    /// One more than the largest of its parents' (1 for the first record).
    pub seq: u64,
    /// The BLAKE3 hashes (hex) of the stored records it follows, sorted.
    pub parents: Vec<String>,
    /// When it was written.
    pub time: Timestamp,
    /// The command.
    pub command: String,
    /// Its arguments, secrets redacted.
    pub args: Vec<String>,
    /// The OS user.
    pub user: String,
    /// The host.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The key slot the repository was opened with.
    pub key_slot: String,
    /// Snapshots whose data it read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<SnapshotId>,
    /// Snapshots it wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<SnapshotId>,
    /// Snapshots it deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<SnapshotId>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Why it failed, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Facts a command adds (an erasure request's id, a drill's result).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// A record's key, parsed: what a listing tells without reading.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditName {
    /// Its sequence number.
    pub seq: u64,
    /// When it was written, in ms since the Unix epoch.
    pub ms: u64,
    /// The BLAKE3 hash (64 hex digits) of its stored bytes.
    pub hash: String,
    /// The first 16 hex digits of each parent's hash, sorted.
    pub parents: Vec<String>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl AuditName {
    /// The object's key.
    pub fn key(&self) -> String {
        let mut k = format!(
            "{}{:08}/{:012}-{:013}-{}",
            FileType::Audit.prefix(),
            self.seq / AUDIT_BLOCK,
            self.seq,
            self.ms,
            self.hash
        );
        for p in &self.parents {
            k.push('.');
            k.push_str(p);
        }
        k
    }

    /// Reads a key back; `None` for anything that is not a record's key.
    pub fn parse(key: &str) -> Option<AuditName> {
        let rest = key.strip_prefix(FileType::Audit.prefix())?;
        let (block, name) = rest.split_once('/')?;
        if block.len() != 8 || !block.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut parts = name.splitn(3, '-');
        let (seq, ms, tail) = (parts.next()?, parts.next()?, parts.next()?);
        if seq.len() != 12 || ms.len() != 13 {
            return None;
        }
        if !seq.bytes().chain(ms.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (seq, ms): (u64, u64) = (seq.parse().ok()?, ms.parse().ok()?);
        if seq == 0 || block.parse::<u64>().ok()? != seq / AUDIT_BLOCK {
            return None;
        }
        let mut pieces = tail.split('.');
        let hash = pieces.next()?;
        if !is_hex(hash, 64) {
            return None;
        }
        let parents: Vec<String> = pieces.map(str::to_string).collect();
        if parents.len() > MAX_PARENTS
            || !parents.iter().all(|p| is_hex(p, SHORT))
            || !parents.windows(2).all(|w| w[0] < w[1])
        {
            return None;
        }
        Some(AuditName {
            seq,
            ms,
            hash: hash.to_string(),
            parents,
        })
    }

    fn short(&self) -> &str {
        &self.hash[..SHORT]
    }
}

/// What a command touched and what the log should say of it, shared by the
/// repository's handles (a key rotation keeps it).
pub(crate) struct AuditState {
    /// Where this host keeps its witnesses (`<cache>/audit`).
    witness_dir: Option<PathBuf>,
    context: Option<AuditContext>,
    read: BTreeSet<SnapshotId>,
    written: BTreeSet<SnapshotId>,
    deleted: BTreeSet<SnapshotId>,
    /// Snapshots whose reading is already on record.
    reading_recorded: BTreeSet<SnapshotId>,
    /// Records that could not be stored, as messages for the operator.
    warnings: Vec<String>,
}

impl Default for AuditState {
    fn default() -> Self {
        AuditState {
            witness_dir: crate::repository::default_cache_dir().map(|d| d.join("audit")),
            context: None,
            read: BTreeSet::new(),
            written: BTreeSet::new(),
            deleted: BTreeSet::new(),
            reading_recorded: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }
}

pub(crate) type SharedAudit = Arc<Mutex<AuditState>>;

/// The problems [`Repository::verify_audit`] names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum AuditProblem {
    /// An object under `audit/` that is not a record's key.
    Stray {
        /// Its key.
        key: String,
    },
    /// A record whose bytes are not those it was written with.
    Altered {
        /// Its key.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// A record stored where another belongs: its bytes are those of the
    /// record named `belongs`, or its sequence does not follow its parents.
    Moved {
        /// Its key.
        key: String,
        /// What shows it.
        reason: String,
    },
    /// A record a later one follows is gone.
    Removed {
        /// The hash of the record that is gone.
        hash: String,
        /// Its sequence number (one less than the follower's, at least).
        seq: u64,
        /// The key of the record that names it.
        named_by: String,
    },
    /// No record holds this sequence number though later ones exist.
    Gap {
        /// The sequence number.
        seq: u64,
    },
    /// The newest record this host wrote or checked is gone.
    Truncated {
        /// Its sequence number.
        seq: u64,
        /// Its hash.
        hash: String,
    },
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Stray { key } => write!(f, "{key} is not an audit record's key"),
            AuditProblem::Altered { key, reason } => write!(f, "record {key} was altered: {reason}"),
            AuditProblem::Moved { key, reason } => {
                write!(f, "record {key} was moved or reordered: {reason}")
            }
            AuditProblem::Removed {
                hash,
                seq,
                named_by,
            } => write!(
                f,
                "record {} (seq {seq}) was removed: {named_by} follows it",
                &hash[..SHORT]
            ),
            AuditProblem::Gap { seq } => {
                write!(f, "no record has seq {seq}, though later records exist: removed")
            }
            AuditProblem::Truncated { seq, hash } => write!(
                f,
                "record {} (seq {seq}), the newest this host wrote or checked, is gone: records were removed from the end",
                &hash[..SHORT]
            ),
        }
    }
}

/// What [`Repository::verify_audit`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditVerifyReport {
    /// Records read.
    pub records: usize,
    /// The largest sequence number.
    pub max_seq: u64,
    /// Records no other follows yet (more than one: writers ran at once).
    pub heads: usize,
    /// The sequence number and hash this host had witnessed, if any.
    pub witnessed: Option<(u64, String)>,
    /// Everything wrong, in key order.
    pub problems: Vec<AuditProblem>,
}

/// This host's memory of one repository's log: where the newest block was
/// and the newest record it wrote or checked (`<cache>/audit/<id>.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Witness {
    block: u64,
    seq: u64,
    hash: String,
}

impl Inner {
    /// Where the witness of this repository in this store lives:
    /// `<cache>/audit/<repository id>-<store>.json`, `<store>` the first 16
    /// hex digits of the BLAKE3 hash of its location (a replica holds the
    /// same repository id, and a log of its own).
    fn witness_path(&self) -> Option<PathBuf> {
        let state = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let dir = state.witness_dir.clone()?;
        let store = blake3::hash(self.storage.location().as_bytes()).to_hex();
        Some(dir.join(format!("{}-{}.json", self.config.id, &store[..16])))
    }

    fn read_witness(&self) -> Option<Witness> {
        let bytes = std::fs::read(self.witness_path()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps the newest of what is known and what is given. A witness that
    /// cannot be written only weakens the check of the log's end.
    fn update_witness(&self, block: u64, seq: u64, hash: &str) {
        let Some(path) = self.witness_path() else {
            return;
        };
        update_witness_at(&path, self.read_witness(), block, seq, hash);
    }
}

fn update_witness_at(
    path: &std::path::Path,
    known: Option<Witness>,
    block: u64,
    seq: u64,
    hash: &str,
) {
    let mut w = known.unwrap_or_default();
    w.block = w.block.max(block);
    if seq >= w.seq {
        w.seq = seq;
        w.hash = hash.to_string();
    }
    let Ok(json) = serde_json::to_vec(&w) else {
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = lifeboat_storage::durable::write_file(path, &json, 0o600) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the audit witness");
    }
}

impl Inner {
    fn audit_block(&self, block: u64) -> Result<Vec<AuditName>> {
        let prefix = format!("{}{block:08}/", FileType::Audit.prefix());
        let listed = self.block(self.storage.list(&prefix))?;
        Ok(listed
            .iter()
            .filter_map(|o| AuditName::parse(&o.key))
            .collect())
    }

    /// The records of the newest two blocks: the newest block is found
    /// from this host's witness (then only forward), else by doubling and
    /// halving (blocks are contiguous: sequence numbers are).
    fn audit_tail(&self) -> Result<(u64, Vec<AuditName>)> {
        let mut seen: HashMap<u64, Vec<AuditName>> = HashMap::new();
        let nonempty = |b: u64, seen: &mut HashMap<u64, Vec<AuditName>>| -> Result<bool> {
            if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(b) {
                e.insert(self.audit_block(b)?);
            }
            Ok(!seen[&b].is_empty())
        };
        let hint = self.read_witness().map(|w| w.block);
        let mut top = match hint {
            Some(h) if nonempty(h, &mut seen)? => h,
            _ => {
                if !nonempty(0, &mut seen)? {
                    return Ok((0, Vec::new()));
                }
                let (mut lo, mut hi) = (0u64, 1u64);
                while nonempty(hi, &mut seen)? {
                    lo = hi;
                    hi = hi.saturating_mul(2);
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if nonempty(mid, &mut seen)? {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
        };
        while nonempty(top + 1, &mut seen)? {
            top += 1;
        }
        let mut names = Vec::new();
        if top > 0 {
            nonempty(top - 1, &mut seen)?;
            names.extend(seen.remove(&(top - 1)).unwrap_or_default());
        }
        names.extend(seen.remove(&top).unwrap_or_default());
        Ok((top, names))
    }

    /// Appends one record following the current heads; returns its name.
    fn append_audit(&self, record: &mut AuditRecord) -> Result<AuditName> {
        let (_, tail) = self.audit_tail()?;
        let followed: HashSet<&str> = tail
            .iter()
            .flat_map(|n| n.parents.iter().map(String::as_str))
            .collect();
        let mut heads: Vec<&AuditName> = tail
            .iter()
            .filter(|n| !followed.contains(n.short()))
            .collect();
        heads.sort_by(|a, b| b.seq.cmp(&a.seq).then(a.hash.cmp(&b.hash)));
        heads.truncate(MAX_PARENTS);
        record.seq = heads.iter().map(|n| n.seq).max().map_or(1, |s| s + 1);
        let mut parents: Vec<String> = heads.iter().map(|n| n.hash.clone()).collect();
        parents.sort();
        parents.dedup_by(|a, b| a[..SHORT] == b[..SHORT]);
        record.parents = parents;
        let sealed = seal_document(self, MAGIC_AUDIT, record)?;
        let hash = blake3::hash(&sealed).to_hex().to_string();
        let ms = u64::try_from(record.time.as_millisecond()).unwrap_or(0);
        let name = AuditName {
            seq: record.seq,
            ms,
            hash,
            parents: record
                .parents
                .iter()
                .map(|p| p[..SHORT].to_string())
                .collect(),
        };
        self.block(self.storage.put(&name.key(), Bytes::from(sealed)))?;
        self.update_witness(name.seq / AUDIT_BLOCK, name.seq, &name.hash);
        Ok(name)
    }

    /// A record of what the shared state holds, with `outcome`.
    fn audit_record(&self, slot: &str, outcome: AuditOutcome) -> Option<AuditRecord> {
        let state = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = state.context.clone()?;
        let (read, written, deleted) = match outcome {
            AuditOutcome::Reading => (Vec::new(), Vec::new(), Vec::new()),
            _ => (
                state.read.iter().copied().collect(),
                state.written.iter().copied().collect(),
                state.deleted.iter().copied().collect(),
            ),
        };
        Some(AuditRecord {
            version: AUDIT_VERSION,
            seq: 0,
            parents: Vec::new(),
            time: Timestamp::now(),
            command: ctx.command,
            args: ctx.args,
            user: ctx.user,
            host: ctx.host,
            pid: std::process::id(),
            key_slot: slot.to_string(),
            read,
            written,
            deleted,
            outcome,
            error: None,
            detail: BTreeMap::new(),
        })
    }

    fn audit_warn(&self, what: &str, e: &RepoError) {
        let msg = format!(
            "the audit record of {what} could not be stored ({}); the operation itself is not affected",
            crate::report(e)
        );
        tracing::warn!("{msg}");
        let mut state = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.warnings.push(msg);
    }
}

/// The handle that writes a command's final record once it has ended, after
/// the repository itself may be gone ([`Repository::auditor`]).
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
    slot: String,
}

impl Auditor {
    /// Appends the command's record: what it touched and how it ended
    /// (`error`: why, secrets already redacted). Nothing is written when
    /// no context was set.
    pub fn finish(
        &self,
        outcome: AuditOutcome,
        error: Option<String>,
        detail: BTreeMap<String, String>,
    ) -> Result<Option<AuditName>> {
        let Some(mut record) = self.inner.audit_record(&self.slot, outcome) else {
            return Ok(None);
        };
        record.error = error;
        record.detail = detail;
        self.inner.append_audit(&mut record).map(Some)
    }

    /// Records that could not be stored during the command, as messages.
    pub fn warnings(&self) -> Vec<String> {
        let state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.warnings.clone()
    }
}

impl Repository {
    /// Sets who runs what: from now on the repository gathers the
    /// snapshots the command reads, writes and deletes, and records the
    /// start of every snapshot read at once.
    pub fn set_audit_context(&self, context: AuditContext) {
        let mut state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.context = Some(context);
    }

    /// Keeps this host's audit witnesses in `dir` (default:
    /// `<cache>/audit`); `None`: none kept.
    pub fn set_audit_witness_dir(&self, dir: Option<PathBuf>) {
        let mut state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.witness_dir = dir;
    }

    /// The handle that writes the command's final record.
    pub fn auditor(&self) -> Auditor {
        Auditor {
            inner: self.inner.clone(),
            slot: self.opened_slot().to_string(),
        }
    }

    /// Notes that snapshot `id`'s data is being read; the first time, with
    /// a context set, a `reading` record is stored before the data is (a
    /// failure to store it is a warning, not a refusal: a restore in a
    /// disaster must not wait on the log).
    pub fn note_read(&self, id: Option<SnapshotId>) {
        let Some(id) = id else { return };
        let first = {
            let mut state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
            state.read.insert(id);
            state.context.is_some() && state.reading_recorded.insert(id)
        };
        if !first {
            return;
        }
        if let Some(mut record) = self
            .inner
            .audit_record(self.opened_slot(), AuditOutcome::Reading)
        {
            record.read = vec![id];
            if let Err(e) = self.inner.append_audit(&mut record) {
                self.inner.audit_warn("a read", &e);
            }
        }
    }

    pub(crate) fn note_written(&self, id: SnapshotId) {
        let mut state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.written.insert(id);
    }

    pub(crate) fn note_deleted(&self, ids: &[SnapshotId]) {
        let mut state = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        state.deleted.extend(ids.iter().copied());
    }

    /// Appends a record now (`outcome`, `detail`) with the context set:
    /// what a command records of itself beside its final record.
    pub fn append_audit(
        &self,
        outcome: AuditOutcome,
        detail: BTreeMap<String, String>,
    ) -> Result<Option<AuditName>> {
        self.auditor().finish(outcome, None, detail)
    }

    /// When each of the key slots `ids` last opened the repository, by the
    /// audit log (read newest first until every slot is found).
    pub fn audit_last_use(&self, ids: &[String]) -> Result<BTreeMap<String, Timestamp>> {
        let mut out = BTreeMap::new();
        let mut names = self.audit_names()?;
        names.reverse();
        for batch in names.chunks(64) {
            if out.len() == ids.len() {
                break;
            }
            let keys: Vec<String> = batch.iter().map(AuditName::key).collect();
            for (key, bytes) in keys.iter().zip(self.get_many(&keys)) {
                let Ok(bytes) = bytes else { continue };
                let Ok(r) = self.decode_document::<AuditRecord>(key, MAGIC_AUDIT, &bytes) else {
                    continue;
                };
                if ids.contains(&r.key_slot) {
                    let t = out.entry(r.key_slot).or_insert(r.time);
                    if r.time > *t {
                        *t = r.time;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The names of every record, in sequence order.
    pub fn audit_names(&self) -> Result<Vec<AuditName>> {
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Audit.prefix()))?;
        let mut names: Vec<AuditName> = listed
            .iter()
            .filter_map(|o| AuditName::parse(&o.key))
            .collect();
        names.sort_by(|a, b| {
            a.seq
                .cmp(&b.seq)
                .then(a.ms.cmp(&b.ms))
                .then(a.hash.cmp(&b.hash))
        });
        Ok(names)
    }

    /// The records written at or after `since` (every one when `None`), in
    /// sequence order; one that does not read is returned as its error.
    pub fn audit_records(
        &self,
        since: Option<Timestamp>,
    ) -> Result<Vec<(AuditName, Result<AuditRecord>)>> {
        let from = since.map_or(0, |t| u64::try_from(t.as_millisecond()).unwrap_or(0));
        let names: Vec<AuditName> = self
            .audit_names()?
            .into_iter()
            .filter(|n| n.ms >= from)
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for batch in names.chunks(64) {
            let keys: Vec<String> = batch.iter().map(AuditName::key).collect();
            for ((name, key), bytes) in batch.iter().zip(&keys).zip(self.get_many(&keys)) {
                // A store that fails to answer is the command's failure,
                // not a record's damage.
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let rec = self.decode_document::<AuditRecord>(key, MAGIC_AUDIT, &bytes);
                out.push((name.clone(), rec));
            }
        }
        Ok(out)
    }

    /// Reads every record and checks the chain; see the module
    /// documentation for what it finds.
    pub fn verify_audit(&self) -> Result<AuditVerifyReport> {
        // The witness first: a record this host appends while the log is
        // read must not look like one removed.
        let witness = self.inner.read_witness();
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Audit.prefix()))?;
        let mut report = AuditVerifyReport::default();
        let mut names: Vec<(String, AuditName)> = Vec::new();
        for o in &listed {
            match AuditName::parse(&o.key) {
                Some(n) => names.push((o.key.clone(), n)),
                None => report
                    .problems
                    .push(AuditProblem::Stray { key: o.key.clone() }),
            }
        }
        names.sort_by(|a, b| a.1.seq.cmp(&b.1.seq).then(a.0.cmp(&b.0)));
        let by_name_hash: HashMap<&str, &str> = names
            .iter()
            .map(|(k, n)| (n.hash.as_str(), k.as_str()))
            .collect();
        // Hash of the bytes → (key, record) for every record that reads.
        let mut good: HashMap<String, (String, AuditRecord)> = HashMap::new();
        let keys: Vec<String> = names.iter().map(|(k, _)| k.clone()).collect();
        let mut fetched = Vec::with_capacity(keys.len());
        for batch in keys.chunks(64) {
            fetched.extend(self.get_many(batch));
        }
        for ((key, name), bytes) in names.iter().zip(fetched) {
            report.records += 1;
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let hash = blake3::hash(&bytes).to_hex().to_string();
            if hash != name.hash {
                let problem = match by_name_hash.get(hash.as_str()) {
                    Some(other) => AuditProblem::Moved {
                        key: key.clone(),
                        reason: format!("it holds the bytes of record {other}"),
                    },
                    None => AuditProblem::Altered {
                        key: key.clone(),
                        reason: "its bytes do not hash to its name".into(),
                    },
                };
                report.problems.push(problem);
                continue;
            }
            let record = match self.decode_document::<AuditRecord>(key, MAGIC_AUDIT, &bytes) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(AuditProblem::Altered {
                        key: key.clone(),
                        reason: crate::report(&e),
                    });
                    continue;
                }
            };
            let short: Vec<String> = record
                .parents
                .iter()
                .map(|p| p[..SHORT.min(p.len())].to_string())
                .collect();
            let ms = u64::try_from(record.time.as_millisecond()).unwrap_or(0);
            if record.seq != name.seq || short != name.parents || ms != name.ms {
                report.problems.push(AuditProblem::Moved {
                    key: key.clone(),
                    reason: format!(
                        "it says seq {} at {}, its name seq {}",
                        record.seq, record.time, name.seq
                    ),
                });
                continue;
            }
            good.insert(hash, (key.clone(), record));
        }
        // The chain: every parent present, every seq one more than its
        // parents' largest, no sequence number missing.
        let mut followed: HashSet<&str> = HashSet::new();
        let mut seqs: BTreeSet<u64> = BTreeSet::new();
        let mut ordered: Vec<(&String, &(String, AuditRecord))> = good.iter().collect();
        ordered.sort_by(|a, b| a.1 .1.seq.cmp(&b.1 .1.seq).then(a.1 .0.cmp(&b.1 .0)));
        for (_, (key, record)) in &ordered {
            seqs.insert(record.seq);
            report.max_seq = report.max_seq.max(record.seq);
            let mut expected = 1;
            for p in &record.parents {
                followed.insert(p.as_str());
                match good.get(p) {
                    Some((_, parent)) => expected = expected.max(parent.seq + 1),
                    None if by_name_hash.contains_key(p.as_str()) => {
                        // Present but damaged: named above already.
                        expected = record.seq;
                    }
                    None => {
                        report.problems.push(AuditProblem::Removed {
                            hash: p.clone(),
                            seq: record.seq.saturating_sub(1),
                            named_by: key.clone(),
                        });
                        expected = record.seq;
                    }
                }
            }
            if record.seq != expected {
                report.problems.push(AuditProblem::Moved {
                    key: key.clone(),
                    reason: format!(
                        "its seq {} does not follow its parents' (expected {expected})",
                        record.seq
                    ),
                });
            }
        }
        let named: HashSet<u64> = names.iter().map(|(_, n)| n.seq).collect();
        let removed: HashSet<u64> = report
            .problems
            .iter()
            .filter_map(|p| match p {
                AuditProblem::Removed { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        for seq in 1..report.max_seq {
            if !seqs.contains(&seq) && !named.contains(&seq) && !removed.contains(&seq) {
                report.problems.push(AuditProblem::Gap { seq });
            }
        }
        report.heads = good
            .keys()
            .filter(|h| !followed.contains(h.as_str()))
            .count();
        if let Some(w) = &witness {
            if w.seq > 0 && !by_name_hash.contains_key(w.hash.as_str()) {
                report.problems.push(AuditProblem::Truncated {
                    seq: w.seq,
                    hash: w.hash.clone(),
                });
            }
            report.witnessed = Some((w.seq, w.hash.clone()));
        }
        if report.problems.is_empty() {
            if let Some((hash, (_, rec))) = good
                .iter()
                .max_by(|a, b| a.1 .1.seq.cmp(&b.1 .1.seq).then(a.0.cmp(b.0)))
            {
                self.inner
                    .update_witness(rec.seq / AUDIT_BLOCK, rec.seq, hash);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(seq: u64, parents: &[&str]) -> AuditName {
        AuditName {
            seq,
            ms: 1_764_400_000_123,
            hash: "ab".repeat(32),
            parents: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn keys_read_back_and_sort_by_block_and_seq() {
        let n = name(1234, &["0123456789abcdef", "fedcba9876543210"]);
        let key = n.key();
        assert!(key.starts_with("audit/00000001/000000001234-1764400000123-abab"));
        assert_eq!(AuditName::parse(&key), Some(n));
        let first = name(1, &[]);
        assert_eq!(AuditName::parse(&first.key()), Some(first.clone()));
        assert!(first.key() < name(2, &[]).key());
        // A block that does not match the seq, a seq of 0, upper case hex,
        // unsorted parents: not a record's key.
        let k = first.key().replace("audit/00000000/", "audit/00000001/");
        assert_eq!(AuditName::parse(&k), None);
        assert_eq!(AuditName::parse(&name(0, &[]).key()), None);
        assert_eq!(AuditName::parse(&first.key().to_uppercase()), None);
        let unsorted = name(5, &["fedcba9876543210", "0123456789abcdef"]).key();
        assert_eq!(AuditName::parse(&unsorted), None);
        assert_eq!(AuditName::parse("jobs/0001"), None);
    }

    proptest! {
        #[test]
        fn any_key_parses_or_is_refused_without_panic(s in "\\PC{0,160}") {
            let _ = AuditName::parse(&s);
            let _ = AuditName::parse(&format!("audit/{s}"));
        }

        #[test]
        fn every_name_reads_back(seq in 1u64..100_000_000_000, ms in 0u64..9_999_999_999_999,
                                 parents in proptest::collection::btree_set("[0-9a-f]{16}", 0..5)) {
            let n = AuditName {
                seq,
                ms,
                hash: "0f".repeat(32),
                parents: parents.into_iter().collect(),
            };
            prop_assert_eq!(AuditName::parse(&n.key()), Some(n));
        }

        #[test]
        fn any_document_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<AuditRecord>(&bytes);
        }
    }
}
