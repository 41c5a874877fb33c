//! Sessions: what a running backup or prune tells a prune.
//!
//! A backup writes a session record (`sessions/<id>`) before it lists the
//! prune marks and loads the index it deduplicates against, then records
//! which marks it saw (`marks_seen`). A prune deletes the packs of a mark
//! only when no backup session that may have built on them is still running:
//! one that does not list the mark among those it saw started loading its
//! index before the mark could be known (see `docs/format.md`, "Prune"). The
//! record is refreshed every minute by a heartbeat; a record not refreshed
//! for [`STALE_AFTER`] belongs to a killed process and no longer counts.
//! When the backup ends, its record is rewritten as finished (its snapshot,
//! if any, is stored by then); a prune removes finished records once they no
//! longer matter.
//!
//! Nothing waits on a session: it is not a lock. Only prunes look at them.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lifeboat_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::format::{self, MAGIC_SESSION};
use crate::keys::{FileType, ObjectKey};
use crate::repository::{Inner, Repository};

/// How often a running session's record is rewritten.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// A session not refreshed for this long belongs to a process that died.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// The session record's document version.
const SESSION_VERSION: u32 = 1;

/// What a session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A backup: it deduplicates against the index and writes a snapshot.
    Backup,
    /// A prune: it marks and deletes packs.
    Prune,
}

/// A session's stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Document version.
    pub version: u32,
    /// Random id (hex), also the object's name.
    pub id: String,
    /// What it does.
    pub kind: SessionKind,
    /// The machine it runs on.
    pub hostname: String,
    /// Its process id there.
    pub pid: u32,
    /// When that process started (clock ticks since boot): a reused pid is
    /// told from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The kernel and process-id namespace it runs in (`boot id/pid ns`):
    /// only a prune with the same can tell from the pid that it is gone.
    #[serde(default)]
    pub machine: String,
    /// When it began.
    pub started: Timestamp,
    /// When its record was last written.
    pub refreshed: Timestamp,
    /// When it ended (its snapshot, if any, stored before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Named objects it needs from a given name on, while it runs (a running
    /// `pg backup`: its WAL from its start segment), which WAL expiry keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_hold: Option<WalHold>,
    /// The ids of the prune marks it knew of when it loaded its index; `None`
    /// until it has loaded it (then it may build on any pack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marks_seen: Option<Vec<String>>,
}

/// Named objects a running backup needs: every name of `namespace` from
/// `first` on (WAL segments in name order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHold {
    /// The named objects' namespace (`wal:<system identifier>`).
    pub namespace: String,
    /// The first name needed.
    pub first: String,
}

/// A session as listed: its record and when the store last saw it written.
#[derive(Clone, Debug)]
pub struct ListedSession {
    /// The record (`None` when it could not be read: it then counts as
    /// running until it is stale by the store's time).
    pub record: Option<SessionRecord>,
    /// The object's key.
    pub key: String,
    /// When the store says it was last written.
    pub modified: Option<SystemTime>,
}

impl ListedSession {
    /// The newest of the record's refresh time and the store's modification
    /// time: a clock that runs late on either side never makes a running
    /// session look stale sooner.
    pub(crate) fn last_seen(&self) -> Option<SystemTime> {
        // The store's clock when it gives one: a prune compares it with the
        // store's time of its own session, so no host's clock matters.
        self.modified
            .or_else(|| self.record.as_ref().map(|r| SystemTime::from(r.refreshed)))
    }

    /// When it finished, by the store's clock when it gives one (the
    /// finished record is the session's last write).
    pub fn finished_at(&self) -> Option<SystemTime> {
        let r = self.record.as_ref()?;
        let f = r.finished?;
        Some(self.modified.unwrap_or(SystemTime::from(f)))
    }

    /// True when the process behind it is gone without ending it: it
    /// stopped refreshing the record, or (as restic decides for its locks)
    /// it ran on this machine and no process has its id any more.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        let unfinished = self.record.as_ref().is_none_or(|r| r.finished.is_none());
        let silent = self
            .last_seen()
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER);
        unfinished && (silent || self.is_dead_here())
    }

    /// True when it ran on this machine — the same kernel and process-id
    /// namespace, not merely the same host name — and no process has its id
    /// any more.
    pub fn is_dead_here(&self) -> bool {
        self.record.as_ref().is_some_and(|r| {
            r.finished.is_none()
                && !r.machine.is_empty()
                && r.machine == machine()
                && process_gone(r.pid, r.pid_start)
        })
    }

    /// True while it runs: not finished and not stale.
    pub fn is_running(&self, now: SystemTime) -> bool {
        self.record.as_ref().is_none_or(|r| r.finished.is_none()) && !self.is_stale(now)
    }

    /// One line for messages: `backup on db1 (pid 42) since 2026-11-28T10:00:00Z`.
    pub fn describe(&self, now: SystemTime) -> String {
        match &self.record {
            Some(r) => {
                let age = now
                    .duration_since(SystemTime::from(r.started))
                    .unwrap_or_default()
                    .as_secs();
                format!(
                    "{} on {} (pid {}) started {} ({} ago, session {})",
                    match r.kind {
                        SessionKind::Backup => "a backup",
                        SessionKind::Prune => "a prune",
                    },
                    r.hostname,
                    r.pid,
                    r.started,
                    human_secs(age),
                    r.id
                )
            }
            None => format!("an unreadable session record {}", self.key),
        }
    }
}

/// "3h 2m", "45s".
pub(crate) fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// This kernel's boot id and this process's pid namespace: where a pid
/// means one process.
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{}/{ns}", boot.trim())
}

/// When process `pid` started (field 22 of `/proc/PID/stat`, clock ticks
/// since boot): with the pid, it names one process even when pids are
/// reused.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True only when it is certain that process `pid` (started at `start`)
/// is gone from this machine: `/proc` shows other processes (not mounted
/// with `hidepid`, which hides them) and has no such pid, or the pid now
/// belongs to a process that started at another time.
fn process_gone(pid: u32, start: Option<u64>) -> bool {
    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return match (start, process_start(pid)) {
            (Some(want), Some(now)) => want != now,
            _ => false,
        };
    }
    // Can this process see others at all? If not, a missing pid says nothing.
    std::path::Path::new("/proc/1/stat").exists() && std::process::id() != 1
}

/// This machine's name, as session records and marks record it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A random 128-bit id, hex (session and mark names).
pub(crate) fn random_id() -> Result<String> {
    let mut raw = [0u8; 16];
    lifeboat_crypto::fill_random(&mut raw)?;
    Ok(hex::encode(raw))
}

/// Seals a JSON document into an envelope of `magic`.
pub(crate) fn seal_document<T: Serialize>(
    inner: &Inner,
    magic: &[u8; 4],
    doc: &T,
) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(doc).map_err(|e| RepoError::Failed(e.to_string()))?;
    let body = format::compress(&json, 3);
    let epoch = inner.keyring.current();
    format::seal_object(magic, epoch.number, &epoch.key, &body)
}

/// A running session: its record, kept fresh by a heartbeat thread until
/// [`SessionGuard::finish`] or drop.
pub struct SessionGuard {
    inner: Arc<Inner>,
    key: String,
    /// When the record was last written successfully, by the monotonic
    /// clock and by the wall clock (the monotonic one stops while the
    /// machine sleeps; the wall clock does not).
    last_written: Arc<Mutex<(std::time::Instant, SystemTime)>>,
    record: Arc<Mutex<SessionRecord>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<JoinHandle<()>>,
    done: bool,
}

fn write_record(inner: &Inner, key: &str, record: &SessionRecord) -> Result<()> {
    let obj = seal_document(inner, MAGIC_SESSION, record)?;
    inner.block(inner.storage.put(key, Bytes::from(obj)))?;
    Ok(())
}

impl SessionGuard {
    /// Writes a new session record and starts its heartbeat.
    pub(crate) fn begin(
        inner: &Arc<Inner>,
        kind: SessionKind,
        wal_hold: Option<WalHold>,
    ) -> Result<SessionGuard> {
        let id = random_id()?;
        let key = ObjectKey::Session(&id).to_string();
        let now = Timestamp::now();
        let record = SessionRecord {
            version: SESSION_VERSION,
            id,
            kind,
            hostname: hostname(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            machine: machine(),
            started: now,
            refreshed: now,
            finished: None,
            wal_hold,
            marks_seen: None,
        };
        write_record(inner, &key, &record)?;
        let record = Arc::new(Mutex::new(record));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let last_written = Arc::new(Mutex::new((std::time::Instant::now(), SystemTime::now())));
        let heartbeat = {
            let (inner, key, record, stop, written) = (
                inner.clone(),
                key.clone(),
                record.clone(),
                stop.clone(),
                last_written.clone(),
            );
            std::thread::spawn(move || heartbeat(&inner, &key, &record, &stop, &written))
        };
        Ok(SessionGuard {
            inner: inner.clone(),
            key,
            last_written,
            record,
            stop,
            heartbeat: Some(heartbeat),
            done: false,
        })
    }

    /// The session's id (hex).
    pub fn id(&self) -> String {
        lock(&self.record).id.clone()
    }

    /// Records the marks known when the index was loaded.
    pub(crate) fn set_marks_seen(&self, marks: Vec<String>) -> Result<()> {
        let snapshot = {
            let mut r = lock(&self.record);
            r.marks_seen = Some(marks);
            r.refreshed = Timestamp::now();
            r.clone()
        };
        write_record(&self.inner, &self.key, &snapshot)?;
        *lock(&self.last_written) = (std::time::Instant::now(), SystemTime::now());
        Ok(())
    }

    /// Fails when the record has not been written for so long that a prune
    /// may take the session for dead (half of [`STALE_AFTER`]): the backup
    /// then must not store its snapshot, whose chunks a prune may be
    /// deleting. Called just before the snapshot is stored.
    pub(crate) fn check_alive(&self) -> Result<()> {
        let (mono, wall) = *lock(&self.last_written);
        let quiet = mono
            .elapsed()
            .max(SystemTime::now().duration_since(wall).unwrap_or_default());
        if quiet > STALE_AFTER / 2 {
            return Err(RepoError::Failed(format!(
                "this backup could not refresh its session record for {} (the store did not answer, or the process was paused), so a prune may have taken it for dead and deleted data it builds on; its snapshot is not written. Run the backup again",
                human_secs(quiet.as_secs())
            )));
        }
        Ok(())
    }

    /// Ends the session: its record says finished. Call after the snapshot
    /// is stored (dropping it does the same, logging a failure).
    pub fn finish(mut self) -> Result<()> {
        self.end()
    }

    fn end(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let snapshot = {
            let mut r = lock(&self.record);
            let now = Timestamp::now();
            r.refreshed = now;
            r.finished = Some(now);
            r.clone()
        };
        write_record(&self.inner, &self.key, &snapshot)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::warn!(key = %self.key, error = %e, "could not mark the session finished; a prune will wait until it is stale");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn heartbeat(
    inner: &Inner,
    key: &str,
    record: &Mutex<SessionRecord>,
    stop: &(Mutex<bool>, Condvar),
    written: &Mutex<(std::time::Instant, SystemTime)>,
) {
    let (m, cv) = stop;
    let mut stopped = lock(m);
    loop {
        let (guard, timeout) = cv
            .wait_timeout_while(stopped, REFRESH_EVERY, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        if timeout.timed_out() {
            let snapshot = {
                let mut r = lock(record);
                r.refreshed = Timestamp::now();
                r.clone()
            };
            drop(stopped);
            match write_record(inner, key, &snapshot) {
                Ok(()) => *lock(written) = (std::time::Instant::now(), SystemTime::now()),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "could not refresh the session record")
                }
            }
            stopped = lock(m);
        }
    }
}

impl Repository {
    /// Every session record in the repository.
    pub fn sessions(&self) -> Result<Vec<ListedSession>> {
        Ok(self
            .read_documents::<SessionRecord>(FileType::Session, MAGIC_SESSION)?
            .into_iter()
            .map(|(info, record)| ListedSession {
                record: record
                    .map_err(|e| {
                        tracing::warn!(key = %info.key, error = %e, "an unreadable session record counts as running until it is stale");
                    })
                    .ok(),
                key: info.key,
                modified: info.modified,
            })
            .collect())
    }

    /// Every sealed JSON document of kind `ft` (sessions, marks), each with
    /// its listing and what decoding it gave; one removed between the
    /// listing and the read is left out.
    pub(crate) fn read_documents<T: serde::de::DeserializeOwned>(
        &self,
        ft: FileType,
        magic: &[u8; 4],
    ) -> Result<Vec<(lifeboat_storage::ObjectInfo, Result<T>)>> {
        let listed = self.inner.block(self.inner.storage.list(ft.prefix()))?;
        let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (info, bytes) in listed.into_iter().zip(self.get_many(&keys)) {
            match bytes {
                Ok(b) => {
                    let doc = self.decode_document::<T>(&info.key, magic, &b);
                    out.push((info, doc));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Begins a session of `kind`: backups begin theirs when they load the
    /// index, prunes at their start.
    pub fn begin_session(&self, kind: SessionKind) -> Result<SessionGuard> {
        SessionGuard::begin(&self.inner, kind, None)
    }

    /// Begins a backup session that also holds named objects (a running `pg
    /// backup`'s WAL) from WAL expiry.
    pub(crate) fn begin_backup_session(&self, wal_hold: Option<WalHold>) -> Result<SessionGuard> {
        SessionGuard::begin(&self.inner, SessionKind::Backup, wal_hold)
    }

    /// The first name of `namespace` that a running backup needs kept, the
    /// lowest of all: unfinished backup sessions that hold WAL and were
    /// written within a day (a killed one stops holding after that).
    pub fn wal_holds(&self, namespace: &str) -> Result<Vec<String>> {
        let now = SystemTime::now();
        Ok(self
            .sessions()?
            .into_iter()
            .filter(|s| {
                s.record.as_ref().is_some_and(|r| r.finished.is_none())
                    && !s.is_dead_here()
                    && s.last_seen().is_none_or(|t| {
                        now.duration_since(t).unwrap_or_default() < Duration::from_secs(86_400)
                    })
            })
            .filter_map(|s| s.record.and_then(|r| r.wal_hold))
            .filter(|h| h.namespace == namespace)
            .map(|h| h.first)
            .collect())
    }

    /// Opens a sealed JSON document of `magic`.
    /// Seals `doc` and stores it under `key`.
    pub(crate) fn put_document<T: Serialize>(
        &self,
        key: &str,
        magic: &[u8; 4],
        doc: &T,
    ) -> Result<()> {
        let obj = seal_document(&self.inner, magic, doc)?;
        self.inner
            .block(self.inner.storage.put(key, bytes::Bytes::from(obj)))?;
        Ok(())
    }

    /// Every document of kind `ft`, in key order, each decoded or its
    /// error; one deleted since the listing is left out, a store that fails
    /// is the call's error.
    pub(crate) fn documents<T: serde::de::DeserializeOwned>(
        &self,
        ft: crate::keys::FileType,
        magic: &[u8; 4],
    ) -> Result<Vec<(String, Result<T>)>> {
        let mut keys: Vec<String> = self
            .inner
            .block(self.inner.storage.list(ft.prefix()))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(64) {
            for (key, bytes) in batch.iter().zip(self.get_many(batch)) {
                match bytes {
                    Ok(b) => out.push((key.clone(), self.decode_document::<T>(key, magic, &b))),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn decode_document<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        magic: &[u8; 4],
        bytes: &[u8],
    ) -> Result<T> {
        let body = format::open_object(
            key,
            magic,
            bytes,
            self.master_key(),
            Some(&self.inner.keyring),
        )?;
        let json = format::decompress_document(key, &body)?;
        serde_json::from_slice(&json).map_err(|e| RepoError::Corrupt {
            key: key.to_string(),
            reason: format!("the document does not parse: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(finished: bool, refreshed_ago: u64, now: SystemTime) -> ListedSession {
        let t = Timestamp::try_from(now - Duration::from_secs(refreshed_ago)).unwrap();
        ListedSession {
            record: Some(SessionRecord {
                version: 1,
                id: "ab".into(),
                kind: SessionKind::Backup,
                hostname: "another host".into(),
                pid: 1,
                pid_start: None,
                machine: String::new(),
                started: t,
                refreshed: t,
                finished: finished.then_some(t),
                wal_hold: None,
                marks_seen: None,
            }),
            key: "sessions/ab".into(),
            modified: None,
        }
    }

    #[test]
    fn a_session_not_refreshed_for_long_is_stale_and_a_finished_one_is_not_running() {
        let now = SystemTime::now();
        assert!(listed(false, 10, now).is_running(now));
        assert!(!listed(false, 10, now).is_stale(now));
        let old = STALE_AFTER.as_secs() + 1;
        assert!(listed(false, old, now).is_stale(now));
        assert!(!listed(false, old, now).is_running(now));
        assert!(!listed(true, 10, now).is_running(now));
        assert!(!listed(true, old, now).is_stale(now));
        // The store's newer time keeps it alive whatever the record says.
        let mut l = listed(false, old, now);
        l.modified = Some(now);
        assert!(l.is_running(now));
        // On this machine, a session whose process is gone is stale at once.
        let mut here = listed(false, 10, now);
        if let Some(r) = here.record.as_mut() {
            r.machine = machine();
            r.pid = std::process::id();
        }
        assert!(here.is_running(now), "this process runs");
        if let Some(r) = here.record.as_mut() {
            r.pid = u32::MAX - 7;
        }
        assert!(here.is_stale(now), "no process has that id");
        // Another kernel or pid namespace: the pid says nothing.
        if let Some(r) = here.record.as_mut() {
            r.machine = "another boot/pid:[1]".into();
        }
        assert!(here.is_running(now));
    }
}
