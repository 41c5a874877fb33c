//! Continuous WAL archiving: `archive_command` and `restore_command`.
//!
//! WAL files are stored as named objects of the repository, in a namespace of
//! the cluster's system identifier, so clusters sharing a repository never mix
//! their WAL. Storing or fetching one needs neither the index nor the list of
//! snapshots: a push or fetch costs a handful of small reads besides the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use lifeboat_repo::{PutNamed, Repository};

use crate::error::{PgError, Result};
use crate::wal::{Segment, WalFileKind};

/// Segments already `.ready` that one push uploads ahead of PostgreSQL asking.
const PUSH_AHEAD: usize = 8;
/// Segments one fetch downloads ahead of recovery asking.
const FETCH_AHEAD: usize = 4;
/// Where fetched-ahead segments wait, inside `pg_wal`.
const SPOOL: &str = "lifeboat-prefetch";

/// The namespace of a cluster's WAL in the repository.
pub fn namespace(system_identifier: &str) -> String {
    format!("wal:{system_identifier}")
}

/// The system identifier of the cluster in `pgdata`, from `global/pg_control`
/// (its first eight bytes, a prefix every PostgreSQL version keeps).
pub fn system_identifier(pgdata: &Path) -> Result<String> {
    let path = pgdata.join("global/pg_control");
    let bytes = fs::read(&path).map_err(|e| {
        PgError::Misconfigured(format!(
            "cannot read {} ({e}): run from the data directory (PostgreSQL runs archive_command and restore_command there) or pass --pgdata",
            path.display()
        ))
    })?;
    let id: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PgError::Misconfigured(format!("{} is too short", path.display())))?;
    Ok(u64::from_ne_bytes(id).to_string())
}

/// What a push did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushReport {
    /// Files stored now.
    pub stored: Vec<String>,
    /// Files that were already stored with the same content.
    pub already: Vec<String>,
    /// Bytes uploaded.
    pub bytes: u64,
}

fn push_one(repo: &Repository, ns: &str, path: &Path, report: &mut PushReport) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let data = fs::read(path).map_err(|e| PgError::io("read", path, e))?;
    match repo.put_named(ns, &name, &data)? {
        PutNamed::Stored { bytes } => {
            report.stored.push(name);
            report.bytes += bytes;
        }
        PutNamed::AlreadyStored => report.already.push(name),
    }
    Ok(())
}

/// `archive_command`: stores the WAL file at `path` (relative paths are taken
/// from `pgdata`, PostgreSQL's working directory for the command) and returns
/// once it is durably stored. The same file already stored is success; a
/// different file of the same name is [`lifeboat_repo::RepoError::Conflict`].
/// Segments after it that are already `.ready` are pushed too, in parallel, so
/// archiving keeps up with heavy writes; their failures are left for
/// PostgreSQL's own call to report.
pub fn wal_push(repo: &Repository, pgdata: &Path, path: &Path) -> Result<PushReport> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let kind = WalFileKind::of(&name).ok_or_else(|| {
        PgError::Refused(format!(
            "{name:?} is not a WAL file name; archive_command must pass %p (e.g. archive_command = 'lifeboat pg wal-push %p')"
        ))
    })?;
    let ns = namespace(&system_identifier(pgdata)?);
    let mut report = PushReport::default();
    push_one(repo, &ns, &full, &mut report)?;
    // Stored, not yet acknowledged: PostgreSQL will push it again.
    lifeboat_types::failpoint!("wal-push-after-store");
    if kind == WalFileKind::History {
        // Never a reason for the push to fail: the history is stored.
        if let Err(e) = record_origin(repo, &ns, pgdata, &name) {
            tracing::debug!(error = %e, "recording which restore made the timeline failed");
        }
    }
    if kind == WalFileKind::Segment {
        let ahead = ready_after(&full, &name);
        let results: Vec<PushReport> = std::thread::scope(|s| {
            let handles: Vec<_> = ahead
                .iter()
                .map(|p| {
                    let ns = ns.as_str();
                    s.spawn(move || {
                        let mut r = PushReport::default();
                        // A failure here is retried when PostgreSQL asks for it.
                        if let Err(e) = push_one(repo, ns, p, &mut r) {
                            tracing::debug!(path = %p.display(), error = %e, "push ahead failed");
                        }
                        r
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for r in results {
            report.stored.extend(r.stored);
            report.already.extend(r.already);
            report.bytes += r.bytes;
        }
    }
    Ok(report)
}

/// When the server is a restore that kept the source's archiving, its first
/// history file after the backup's timeline is the timeline the restore
/// made: the restore's marker is stored beside the history, for `pg info`
/// and later restores to name it, and then removed.
fn record_origin(repo: &Repository, ns: &str, pgdata: &Path, history: &str) -> Result<()> {
    let marker = pgdata.join(crate::restore::RESTORE_MARKER);
    let Ok(text) = fs::read(&marker) else {
        return Ok(());
    };
    let Ok(record) = serde_json::from_slice::<crate::timelines::RestoreRecord>(&text) else {
        let _ = fs::remove_file(&marker);
        return Ok(());
    };
    let tli = history
        .strip_suffix(".history")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    if tli <= record.backup_timeline {
        return Ok(());
    }
    match repo.put_named(ns, &crate::timelines::origin_name(tli), &text) {
        Ok(_) | Err(lifeboat_repo::RepoError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    fs::remove_file(&marker).map_err(|e| PgError::io("remove", &marker, e))
}

/// Segments after `name` that PostgreSQL has marked ready to archive.
fn ready_after(segment_path: &Path, name: &str) -> Vec<PathBuf> {
    let Some(dir) = segment_path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(str::to_string)
        })
        .filter(|n| n.as_str() > name && WalFileKind::of(n) == Some(WalFileKind::Segment))
        .collect();
    names.sort();
    names.truncate(PUSH_AHEAD);
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Writes `data` to `dest` so that PostgreSQL sees all of it or nothing.
fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = dest.with_extension("lifeboat-tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| PgError::io("create", &tmp, e))?;
    f.write_all(data)
        .map_err(|e| PgError::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, dest).map_err(|e| PgError::io("rename", dest, e))
}

/// `restore_command`: writes WAL file `name` to `dest` (relative to `pgdata`).
/// Returns `false` when the repository does not have it, which PostgreSQL
/// takes as the end of the archive. Fetches the next few segments ahead into
/// `pg_wal/lifeboat-prefetch`, where later calls find them.
pub fn wal_fetch(repo: &Repository, pgdata: &Path, name: &str, dest: &Path) -> Result<bool> {
    let kind = WalFileKind::of(name).ok_or_else(|| {
        PgError::Refused(format!(
            "{name:?} is not a WAL file name; restore_command must pass %f and %p"
        ))
    })?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    let spool = pgdata.join("pg_wal").join(SPOOL);
    let spooled = spool.join(name);
    if spooled.is_file() {
        fs::rename(&spooled, &dest).map_err(|e| PgError::io("move", &dest, e))?;
        clean_spool(&spool, name);
        return Ok(true);
    }
    let ns = namespace(&system_identifier(pgdata)?);
    if kind != WalFileKind::Segment {
        return match repo.get_named(&ns, name)? {
            Some(data) => write_atomic(&dest, &data).map(|_| true),
            None => Ok(false),
        };
    }
    // The segment asked for and the next few, fetched in parallel. Segment
    // names count in units of the segment size, which pg_control holds at no
    // stable offset: the size seen in an earlier call (remembered in the
    // spool), else the default 16 MiB.
    let size = remembered_segment_size(&spool).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let mut names = vec![name.to_string()];
    names.extend(following(name, size));
    let mut results = names.iter().zip(fetch_all(repo, &ns, &names));
    let first = match results.next() {
        Some((_, r)) => r?,
        None => None,
    };
    let Some(data) = first else {
        return Ok(false);
    };
    write_atomic(&dest, &data)?;
    let mut ahead: Vec<(String, Vec<u8>)> = results
        .filter_map(|(n, r)| r.ok().flatten().map(|d| (n.clone(), d)))
        .collect();
    // A segment is as long as the cluster's segment size. Another size than
    // the one guessed means the names after a log file boundary were wrong:
    // remember the size, and fetch the right ones now.
    let seen = data.len() as u64;
    if seen != size && valid_segment_size(seen) {
        if fs::create_dir_all(&spool).is_ok() {
            let _ = write_atomic(&spool.join(SEGMENT_SIZE), seen.to_string().as_bytes());
        }
        let right = following(name, seen);
        ahead.retain(|(n, _)| right.contains(n));
        let missed: Vec<String> = right.into_iter().filter(|n| !names.contains(n)).collect();
        for (n, r) in missed.iter().zip(fetch_all(repo, &ns, &missed)) {
            if let Ok(Some(d)) = r {
                ahead.push((n.clone(), d));
            }
        }
    }
    for (n, data) in ahead {
        if fs::create_dir_all(&spool).is_ok() {
            let _ = write_atomic(&spool.join(n), &data);
        }
    }
    clean_spool(&spool, name);
    Ok(true)
}

/// PostgreSQL's default WAL segment size.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;
/// The file in the spool remembering the segment size wal-fetch has seen.
const SEGMENT_SIZE: &str = "segment-size";

/// A size `initdb --wal-segsize` allows: a power of two from 1 MiB to 1 GiB.
fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)
}

fn remembered_segment_size(spool: &Path) -> Option<u64> {
    let text = fs::read_to_string(spool.join(SEGMENT_SIZE)).ok()?;
    let size: u64 = text.trim().parse().ok()?;
    valid_segment_size(size).then_some(size)
}

/// The names of the `FETCH_AHEAD` segments after `name`, for segments of
/// `size` bytes.
fn following(name: &str, size: u64) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(mut seg) = Segment::parse(name, size) {
        for _ in 0..FETCH_AHEAD {
            seg = seg.next();
            out.push(seg.name());
        }
    }
    out
}

/// Fetches the named WAL files in parallel.
fn fetch_all(repo: &Repository, ns: &str, names: &[String]) -> Vec<Result<Option<Vec<u8>>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| s.spawn(move || repo.get_named(ns, n).map_err(PgError::from)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PgError::Failed("a fetch thread panicked".into())))
            })
            .collect()
    })
}

/// Removes spooled segments at or before `name`: recovery has moved past them.
fn clean_spool(spool: &Path, name: &str) {
    if let Ok(entries) = fs::read_dir(spool) {
        for e in entries.filter_map(|e| e.ok()) {
            if let Some(n) = e.file_name().to_str() {
                if n <= name || n.ends_with(".lifeboat-tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}
