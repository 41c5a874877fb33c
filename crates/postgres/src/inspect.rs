//! `pg info` and `pg check`: what the repository holds for PostgreSQL (base
//! backups, the WAL archive per timeline and its gaps, the recoverable
//! window) and whether a running cluster archives into it.
//!
//! WAL is stored under keyed hashes of its names, so the archive cannot be
//! listed by name: it is walked instead. One listing of the named objects
//! gives the set of keys; each timeline is followed from where it starts
//! (the oldest backup's first segment, or its history file's switch point),
//! segment by segment, probing ahead past a missing segment to tell a gap
//! from the end.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use lifeboat_repo::{Repository, SnapshotEntry};
use tokio::runtime::Handle;

use crate::archive::namespace;
use crate::backup::SOURCE_KIND;
use crate::error::Result;
use crate::session::Session;
use crate::wal::Segment;

/// How far past a missing segment the walk looks for later ones (a gap)
/// before it calls the timeline ended: 16384 segments, 256 GiB of 16 MiB WAL.
const PROBE_AHEAD: u64 = 16_384;

/// One base backup, as `pg info` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupInfo {
    /// Snapshot id.
    pub id: String,
    /// `full` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the backup started and ended (RFC 3339).
    pub start_time: String,
    /// When the backup ended: the earliest time it restores to.
    pub end_time: String,
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// PostgreSQL version.
    pub pg_version: String,
    /// Timeline at the start.
    pub timeline: u64,
    /// Start and stop LSN.
    pub start_lsn: String,
    /// Stop LSN.
    pub stop_lsn: String,
    /// First and last WAL segment the backup needs.
    pub wal_start: String,
    /// Last WAL segment the backup needs.
    pub wal_stop: String,
    /// Size of the data directory.
    pub bytes_original: u64,
    /// Bytes this backup added to the repository (after dedup and compression).
    pub bytes_stored: u64,
    /// Bytes of new (not deduplicated) data before compression.
    pub bytes_new: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Snapshot tags.
    pub tags: Vec<String>,
}

/// A missing run of segments on a timeline.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Gap {
    /// First missing segment.
    pub first: String,
    /// Last missing segment.
    pub last: String,
}

/// The archived WAL of one timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TimelineWal {
    /// The timeline.
    pub timeline: u32,
    /// Where it came from: parent, branch point, reason, which restore made
    /// it (`None` for the first timeline).
    pub history: Option<crate::timelines::Timeline>,
    /// First and last segment found.
    pub first: Option<String>,
    /// Last segment found.
    pub last: Option<String>,
    /// Segments found.
    pub segments: u64,
    /// Missing runs between the first and the last.
    pub gaps: Vec<Gap>,
    /// When the last segment was stored.
    pub last_stored: Option<String>,
    #[serde(skip)]
    last_stored_time: Option<SystemTime>,
    #[serde(skip)]
    last_segment: Option<Segment>,
}

/// The WAL archive of one cluster.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ArchiveInfo {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// Each timeline found, in order.
    pub timelines: Vec<TimelineWal>,
    /// The earliest and latest time one can recover to, as far as the
    /// repository shows: the end of the oldest backup, and when the last
    /// segment of WAL continuous from the newest backup was stored.
    pub recoverable_from: Option<String>,
    /// See `recoverable_from`.
    pub recoverable_to: Option<String>,
}

/// What `pg info` reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PgInfo {
    /// Base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The WAL archive of each cluster with backups.
    pub archives: Vec<ArchiveInfo>,
}

pub(crate) fn meta_str(e: &SnapshotEntry, k: &str) -> String {
    match e.snapshot.metadata.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn meta_u64(e: &SnapshotEntry, k: &str) -> u64 {
    e.snapshot
        .metadata
        .get(k)
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The PostgreSQL base backups in the repository, oldest first.
pub fn backups(repo: &Repository) -> Result<Vec<SnapshotEntry>> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.snapshot.source_kind == SOURCE_KIND && !s.snapshot.partial)
        .collect())
}

fn backup_info(e: &SnapshotEntry) -> BackupInfo {
    let st = &e.snapshot.stats;
    BackupInfo {
        id: e.id.to_hex(),
        kind: meta_str(e, "backup_type"),
        start_time: e.snapshot.start_time.to_string(),
        end_time: e.snapshot.end_time.to_string(),
        system_identifier: meta_str(e, "system_identifier"),
        pg_version: meta_str(e, "pg_version"),
        timeline: meta_u64(e, "timeline"),
        start_lsn: meta_str(e, "start_lsn"),
        stop_lsn: meta_str(e, "stop_lsn"),
        wal_start: meta_str(e, "wal_start"),
        wal_stop: meta_str(e, "wal_stop"),
        bytes_original: st.bytes_total,
        bytes_stored: st.bytes_stored,
        bytes_new: st.bytes_new,
        duration_ms: st.duration_ms,
        tags: e.snapshot.tags.clone(),
    }
}

/// Follows `timeline` from `start`: the segments present, and the gaps
/// before the last one (or before `upto`, which must be there).
fn walk(
    repo: &Repository,
    ns: &str,
    keys: &HashSet<String>,
    start: Segment,
    upto: Option<Segment>,
) -> Result<TimelineWal> {
    let has = |s: &Segment| keys.contains(&repo.named_key(ns, &s.name()));
    let mut t = TimelineWal {
        timeline: start.timeline,
        history: None,
        first: None,
        last: None,
        segments: 0,
        gaps: Vec::new(),
        last_stored: None,
        last_stored_time: None,
        last_segment: None,
    };
    let mut seg = start;
    let mut last: Option<Segment> = None;
    loop {
        if has(&seg) {
            if t.first.is_none() {
                t.first = Some(seg.name());
            }
            t.segments += 1;
            last = Some(seg);
            seg = seg.next();
            continue;
        }
        // Missing: a gap if a later segment (or `upto`) is there.
        let mut probe = seg.next();
        let limit = seg.number + PROBE_AHEAD;
        let mut found = None;
        while probe.number <= limit {
            if has(&probe) {
                found = Some(probe);
                break;
            }
            probe = probe.next();
        }
        match (found, upto) {
            (Some(next), _) => {
                t.gaps.push(Gap {
                    first: seg.name(),
                    last: Segment {
                        number: next.number - 1,
                        ..next
                    }
                    .name(),
                });
                seg = next;
            }
            (None, Some(u)) if u.number >= seg.number => {
                t.gaps.push(Gap {
                    first: seg.name(),
                    last: u.name(),
                });
                break;
            }
            _ => break,
        }
    }
    if let Some(l) = last {
        t.last = Some(l.name());
        t.last_segment = Some(l);
        if let Some(info) = repo.stat_named(ns, &l.name())? {
            t.last_stored_time = info.modified;
            t.last_stored = info.modified.map(rfc3339);
        }
    }
    Ok(t)
}

/// The archive of the cluster `system_identifier`, walked from the oldest
/// backup's first segment; `upto` is a segment that must be there (the last
/// one the server finished, for `pg check`).
pub fn archive_info(
    repo: &Repository,
    system_identifier: &str,
    backups: &[SnapshotEntry],
    upto: Option<Segment>,
) -> Result<ArchiveInfo> {
    let ns = namespace(system_identifier);
    let mine: Vec<&SnapshotEntry> = backups
        .iter()
        .filter(|b| meta_str(b, "system_identifier") == system_identifier)
        .collect();
    let mut out = ArchiveInfo {
        system_identifier: system_identifier.to_string(),
        timelines: Vec::new(),
        recoverable_from: None,
        recoverable_to: None,
    };
    let Some(oldest) = mine.first() else {
        return Ok(out);
    };
    let size = meta_u64(oldest, "wal_segment_size").max(1 << 20);
    let Some(first) = Segment::parse(&meta_str(oldest, "wal_start"), size) else {
        return Ok(out);
    };
    let keys = repo.list_named()?;
    let mut starts = vec![(first, None)];
    for t in crate::timelines::timelines(repo, &ns, &keys)? {
        if let (true, Some(lsn)) = (t.timeline > first.timeline, t.branch_lsn) {
            starts.push((Segment::containing(t.timeline, lsn, size), Some(t)));
        }
    }
    for (start, history) in starts {
        let until = upto.filter(|u| u.timeline == start.timeline);
        let mut wal = walk(repo, &ns, &keys, start, until)?;
        wal.history = history;
        out.timelines.push(wal);
    }
    // Recoverable: from the end of the oldest backup to the last segment
    // stored without a gap after the newest backup, on its timeline or later.
    out.recoverable_from = Some(oldest.snapshot.end_time.to_string());
    let newest = mine.last().expect("non-empty");
    let stop = Segment::parse(&meta_str(newest, "wal_stop"), size);
    let to = out
        .timelines
        .iter()
        .filter(|t| stop.is_some_and(|s| t.timeline >= s.timeline))
        .filter(|t| {
            // On the backup's own timeline, only WAL up to the first gap after it counts.
            t.gaps.iter().all(|g| {
                Segment::parse(&g.first, size)
                    .zip(stop)
                    .is_none_or(|(g, s)| g.timeline != s.timeline || g.number <= s.number)
            })
        })
        .filter(|t| {
            t.last_segment
                .zip(stop)
                .is_some_and(|(l, s)| l.timeline != s.timeline || l.number >= s.number)
        })
        .filter_map(|t| t.last_stored_time)
        .max();
    out.recoverable_to = to.map(rfc3339);
    Ok(out)
}

/// `pg info`: the backups and, per cluster, the archive.
pub fn info(repo: &Repository) -> Result<PgInfo> {
    let list = backups(repo)?;
    let mut systems: Vec<String> = Vec::new();
    for b in &list {
        let id = meta_str(b, "system_identifier");
        if !systems.contains(&id) {
            systems.push(id);
        }
    }
    let archives = systems
        .iter()
        .map(|s| archive_info(repo, s, &list, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(PgInfo {
        backups: list.iter().map(backup_info).collect(),
        archives,
    })
}

/// The outcome of one check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: &'static str,
    /// What was found, and what to do when it is not ok.
    pub detail: String,
}

/// What `pg check` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    /// Each check, in order.
    pub checks: Vec<Check>,
    /// The archive as seen after the forced switch.
    pub archive: Option<ArchiveInfo>,
    /// Seconds since the newest segment was archived (the server's
    /// `pg_stat_archiver.last_archived_time`): the WAL at risk now.
    pub newest_archived_age_s: Option<f64>,
}

impl CheckReport {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != "fail")
    }
    fn push(&mut self, name: &str, status: &'static str, detail: String) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail,
        });
    }
}

/// `pg check`: the server's archiving settings, a forced WAL switch that must
/// reach the repository and be fetched back within `timeout`, WAL gaps per
/// timeline since the oldest backup, and the age of the newest archived
/// segment.
pub fn check(
    repo: &Repository,
    rt: &Handle,
    conninfo: &str,
    timeout: Duration,
) -> Result<CheckReport> {
    let mut r = CheckReport {
        checks: Vec::new(),
        archive: None,
        newest_archived_age_s: None,
    };
    let session = Session::connect(rt, conninfo)?;
    let info = session.server_info()?;
    r.push(
        "connection",
        "ok",
        format!(
            "PostgreSQL {} (system identifier {}), data directory {}",
            info.version, info.system_identifier, info.data_directory
        ),
    );
    let archive_on = matches!(info.archive_mode.as_str(), "on" | "always");
    r.push(
        "archive_mode",
        if archive_on { "ok" } else { "fail" },
        if archive_on {
            info.archive_mode.clone()
        } else {
            format!("archive_mode is {:?}: set archive_mode = on in postgresql.conf and restart the server", info.archive_mode)
        },
    );
    let level_ok = matches!(info.wal_level.as_str(), "replica" | "logical");
    r.push(
        "wal_level",
        if level_ok { "ok" } else { "fail" },
        if level_ok {
            info.wal_level.clone()
        } else {
            format!(
                "wal_level is {:?}: set wal_level = replica and restart the server",
                info.wal_level
            )
        },
    );
    let cmd = info.archive_command.trim();
    let (status, detail) = if cmd.is_empty() || cmd == "(disabled)" {
        (
            "fail",
            "archive_command is empty: set archive_command = 'lifeboat --repo … pg wal-push %p'"
                .to_string(),
        )
    } else if !cmd.contains("wal-push") || !cmd.contains("%p") {
        ("fail", format!("archive_command {cmd:?} does not run `lifeboat pg wal-push %p`, so WAL does not reach this repository"))
    } else {
        ("ok", cmd.to_string())
    };
    r.push("archive_command", status, detail);
    let timeout_s = info.archive_timeout_s;
    let (status, detail) = if timeout_s == 0 || timeout_s > 300 {
        ("warn", format!("archive_timeout is {timeout_s} s: on a quiet server WAL may wait {} to be archived; 60 s keeps the RPO under the strategy's 5 minutes", if timeout_s == 0 { "indefinitely".to_string() } else { format!("{timeout_s} s") }))
    } else {
        ("ok", format!("{timeout_s} s"))
    };
    r.push("archive_timeout", status, detail);

    // The archiver's own view: failures since the last success.
    let rows = session.rows(
        "read pg_stat_archiver",
        "select coalesce(last_archived_wal, ''), coalesce(extract(epoch from now() - last_archived_time)::float8::text, ''), \
                failed_count::text, coalesce(last_failed_wal, ''), \
                (coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false))::text \
         from pg_stat_archiver",
    )?;
    let row = rows.first().cloned().unwrap_or_default();
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    r.newest_archived_age_s = col(1).parse().ok();
    if col(4) == "true" {
        r.push(
            "archiver",
            "fail",
            format!(
                "archive_command is failing: the last attempt, for {}, failed ({} failures in all) and nothing was archived since; the server log says why",
                col(3),
                col(2)
            ),
        );
    } else {
        r.push(
            "archiver",
            "ok",
            format!(
                "last archived {} ({} failures in all)",
                if col(0).is_empty() {
                    "nothing yet".into()
                } else {
                    col(0)
                },
                col(2)
            ),
        );
    }

    // A forced switch: a restore point makes sure there is WAL to switch.
    let ns = namespace(&info.system_identifier);
    let seg_name = session.value(
        "switch WAL",
        "select pg_walfile_name(lsn) from (select pg_create_restore_point('lifeboat check') as lsn, pg_switch_wal()) s",
    )?;
    let deadline = Instant::now() + timeout;
    let began = Instant::now();
    let fetched = loop {
        if let Some(bytes) = repo.get_named(&ns, &seg_name)? {
            break Some(bytes.len());
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match fetched {
        Some(n) => r.push(
            "wal switch",
            "ok",
            format!(
                "segment {seg_name} reached the repository {:.1} s after the switch and was fetched back ({n} bytes, checksum good)",
                began.elapsed().as_secs_f64()
            ),
        ),
        None => r.push(
            "wal switch",
            "fail",
            format!(
                "segment {seg_name} did not reach the repository within {} s of a forced WAL switch: check archive_command (it must use this repository and key) and the server log",
                timeout.as_secs()
            ),
        ),
    }

    // Gaps since the oldest backup, up to the segment just switched.
    let list = backups(repo)?;
    let upto = Segment::parse(&seg_name, info.wal_segment_size);
    if list
        .iter()
        .any(|b| meta_str(b, "system_identifier") == info.system_identifier)
    {
        let a = archive_info(repo, &info.system_identifier, &list, upto)?;
        let gaps: Vec<String> = a
            .timelines
            .iter()
            .flat_map(|t| {
                t.gaps
                    .iter()
                    .map(move |g| format!("timeline {}: {} to {}", t.timeline, g.first, g.last))
            })
            .collect();
        if gaps.is_empty() {
            r.push(
                "wal gaps",
                "ok",
                format!(
                    "no gaps from the oldest backup to now ({} timeline(s))",
                    a.timelines.len()
                ),
            );
        } else {
            r.push(
                "wal gaps",
                "fail",
                format!(
                    "WAL is missing, so recovery cannot pass: {}. Take a new backup (`lifeboat pg backup --type full`) to recover past it",
                    gaps.join("; ")
                ),
            );
        }
        r.archive = Some(a);
    } else {
        r.push(
            "backups",
            "warn",
            "the repository holds no backup of this cluster yet: take one with `lifeboat pg backup`".into(),
        );
    }
    if let Some(age) = r.newest_archived_age_s {
        r.push(
            "rpo exposure",
            if age > 300.0 { "warn" } else { "ok" },
            format!(
                "the newest archived segment was archived {age:.0} s ago (strategy target: 5 min)"
            ),
        );
    }
    drop(session);
    Ok(r)
}
