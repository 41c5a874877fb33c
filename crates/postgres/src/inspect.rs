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
//!
//! The recoverable window is what recovery can replay, which the per-timeline
//! view alone does not say: from a backup, recovery reads segment by segment
//! along a path of timelines, the backup's own and then each one of a later
//! timeline's history after it (a segment from the newest timeline of the
//! path that has begun by then: the parent's up to the segment holding the
//! branch point, the child's from there), and it stops at the first segment
//! missing on that path, whatever is stored past it.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use lifeboat_repo::{RepoError, Repository, SnapshotEntry};
use tokio::runtime::Handle;

use crate::archive::namespace;
use crate::backup::SOURCE_KIND;
use crate::error::{PgError, Result};
use crate::meta::BackupMeta;
use crate::session::{ServerInfo, Session};
use crate::timelines::Timeline;
use crate::wal::{Lsn, Segment};

/// How far past a missing segment the walk looks for later ones (a gap)
/// before it calls the timeline ended: 16384 segments, 256 GiB of 16 MiB WAL.
pub(crate) const PROBE_AHEAD: u64 = 16_384;

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
    /// Missing runs between the first and the last, or before a segment
    /// that must be there: the last one before a later timeline branches
    /// off (recovery along that timeline reads it from this one) and, for
    /// `pg check`, the one the server just finished.
    pub gaps: Vec<Gap>,
    /// When the last segment was stored.
    pub last_stored: Option<String>,
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
    /// segment recovery from the newest backup can replay was stored (on
    /// any timeline it can follow, up to the first segment missing on the
    /// way; from the newest backup whose own WAL is all there, when the
    /// newest's is not).
    pub recoverable_from: Option<String>,
    /// See `recoverable_from`; `None` when no backup has all its WAL.
    pub recoverable_to: Option<String>,
}

/// What `pg info` reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PgInfo {
    /// Base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The WAL archive of each cluster with backups.
    pub archives: Vec<ArchiveInfo>,
    /// Per cluster, what a WAL expiry by a retention policy keeps and
    /// deletes, and the recoverable window before and after it (filled by
    /// the caller with [`crate::expire::plan_wal_expiry`]; empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wal_expiry: Vec<crate::expire::WalExpiryPlan>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The PostgreSQL base backups in the repository, oldest first by when
/// they really ended (a backup recorded under another time with `pg backup
/// --time` sorts by its real end).
pub fn backups(repo: &Repository) -> Result<Vec<SnapshotEntry>> {
    let mut list: Vec<SnapshotEntry> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.snapshot.source_kind == SOURCE_KIND && !s.snapshot.partial)
        .collect();
    list.sort_by_key(crate::meta::real_end);
    Ok(list)
}

fn backup_info(e: &SnapshotEntry) -> Result<BackupInfo> {
    let st = &e.snapshot.stats;
    let m = BackupMeta::of(e)?;
    Ok(BackupInfo {
        id: e.id.to_hex(),
        kind: m.backup_type.to_string(),
        start_time: e.snapshot.start_time.to_string(),
        end_time: e.snapshot.end_time.to_string(),
        system_identifier: m.system_identifier.to_string(),
        pg_version: m.pg_version,
        timeline: u64::from(m.timeline.0),
        start_lsn: m.start_lsn.to_string(),
        stop_lsn: m.stop_lsn.to_string(),
        wal_start: m.wal_start,
        wal_stop: m.wal_stop,
        bytes_original: st.bytes_total,
        bytes_stored: st.bytes_stored,
        bytes_new: st.bytes_new,
        duration_ms: st.duration_ms,
        tags: e.snapshot.tags.clone(),
    })
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
        if let Some(info) = repo.stat_named(ns, &l.name())? {
            t.last_stored = info.modified.map(rfc3339);
        }
    }
    Ok(t)
}

/// The timelines recovery from a backup on timeline `base` that began at
/// `start` follows to reach `target`, each with the number of the first
/// segment read from it: `base` from the start, then each later timeline of
/// `target`'s history from the segment holding its branch point (PostgreSQL
/// reads a segment from the newest timeline of the path that has begun by
/// then). `None` when `target`'s history does not leave `base` after the
/// backup began: recovery from the backup cannot reach `target`.
pub(crate) fn recovery_path(
    base: u32,
    start: Lsn,
    target: &Timeline,
    size: u64,
) -> Option<Vec<(u32, u64)>> {
    if target.timeline == base {
        return Some(vec![(base, 0)]);
    }
    let i = target.history.iter().position(|(t, _)| *t == base)?;
    if target.history[i].1 <= start {
        return None;
    }
    let mut path = vec![(base, 0)];
    for (j, (_, at)) in target.history.iter().enumerate().skip(i) {
        let next = target
            .history
            .get(j + 1)
            .map_or(target.timeline, |(t, _)| *t);
        path.push((next, at.0 / size));
    }
    Some(path)
}

/// The last segment recovery reads along `path` (from `recovery_path`)
/// from `first` on before one is missing, or `None` when `first` is.
fn path_end(
    has: &dyn Fn(&Segment) -> bool,
    path: &[(u32, u64)],
    first: Segment,
) -> Option<Segment> {
    let mut last = None;
    let mut number = first.number;
    loop {
        let timeline = path
            .iter()
            .rev()
            .find(|(_, from)| *from <= number)
            .map_or(first.timeline, |(t, _)| *t);
        let seg = Segment {
            timeline,
            number,
            ..first
        };
        if !has(&seg) {
            return last;
        }
        last = Some(seg);
        number += 1;
    }
}

/// Where a backup's WAL begins and ends: its first and last segment, and its
/// start LSN; damage, named, when the segment names it records are not ones.
pub(crate) fn backup_wal(
    e: &SnapshotEntry,
    m: &BackupMeta,
    size: u64,
) -> Result<(Segment, Segment, Lsn)> {
    let segment = |name: &str| {
        Segment::parse(name, size).ok_or_else(|| {
            PgError::Repo(RepoError::Corrupt {
                key: lifeboat_repo::ObjectKey::Snapshot(e.id).to_string(),
                reason: format!("its WAL segment {name:?} is not a WAL file name"),
            })
        })
    };
    Ok((segment(&m.wal_start)?, segment(&m.wal_stop)?, m.start_lsn))
}

/// The backups of `backups` that belong to the cluster `system_identifier`,
/// with their metadata.
pub(crate) fn of_system<'a>(
    backups: &'a [SnapshotEntry],
    system_identifier: &str,
) -> Result<Vec<(&'a SnapshotEntry, BackupMeta)>> {
    let mut out = Vec::new();
    for b in backups {
        let m = BackupMeta::of(b)?;
        if m.system_identifier.to_string() == system_identifier {
            out.push((b, m));
        }
    }
    Ok(out)
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
    archive_info_with(repo, system_identifier, backups, upto, &repo.list_named()?)
}

/// [`archive_info`] over `keys`, a listing of the named objects (or what a
/// WAL expiry would leave of one).
pub(crate) fn archive_info_with(
    repo: &Repository,
    system_identifier: &str,
    backups: &[SnapshotEntry],
    upto: Option<Segment>,
    keys: &HashSet<String>,
) -> Result<ArchiveInfo> {
    let ns = namespace(system_identifier);
    let mine = of_system(backups, system_identifier)?;
    let mut out = ArchiveInfo {
        system_identifier: system_identifier.to_string(),
        timelines: Vec::new(),
        recoverable_from: None,
        recoverable_to: None,
    };
    let Some((oldest, oldest_meta)) = mine.first() else {
        return Ok(out);
    };
    let size = oldest_meta.wal_segment_size.max(1 << 20);
    let (first, _, _) = backup_wal(oldest, oldest_meta, size)?;
    let all = crate::timelines::timelines(repo, &ns, keys)?;
    let mut starts = vec![(first, None)];
    for t in &all {
        if let (true, Some(lsn)) = (t.timeline > first.timeline, t.branch_lsn) {
            starts.push((Segment::containing(t.timeline, lsn, size), Some(t.clone())));
        }
    }
    for (start, history) in starts {
        // What must be there: for each later timeline branching off this
        // one after the walk's start, the segment before the one holding
        // the branch point; for `pg check`, the segment just finished.
        let mut until = upto.filter(|u| u.timeline == start.timeline);
        for child in &all {
            if let (Some(parent), Some(lsn)) = (child.parent, child.branch_lsn) {
                let holding = lsn.0 / size;
                if parent == start.timeline
                    && holding > start.number
                    && until.is_none_or(|u| u.number < holding - 1)
                {
                    until = Some(Segment {
                        number: holding - 1,
                        ..start
                    });
                }
            }
        }
        let mut wal = walk(repo, &ns, keys, start, until)?;
        wal.history = history;
        out.timelines.push(wal);
    }
    let has = |s: &Segment| keys.contains(&repo.named_key(&ns, &s.name()));
    // Recoverable from: the end of the oldest backup whose own WAL, from its
    // first segment to its last, is all there (one that lacks it restores
    // nothing).
    for (b, m) in &mine {
        let (first, stop, _) = backup_wal(b, m, size)?;
        // A backup's WAL is on the timeline it started on (pg backup names
        // both ends on it).
        let whole = (first.number..=stop.number).all(|number| has(&Segment { number, ..first }));
        if whole {
            out.recoverable_from = Some(crate::meta::real_end(b).to_string());
            break;
        }
    }
    // Recoverable to: from the newest backup, along each timeline recovery
    // can follow from it (its own, and every one whose history leaves it
    // after the backup began), to the first segment missing on the way; the
    // latest time the last segment of such a path was stored. A backup
    // whose own WAL is not all there restores nothing: then the newest one
    // whose WAL is.
    for (b, m) in mine.iter().rev() {
        let (first, stop, start) = backup_wal(b, m, size)?;
        let base = first.timeline;
        let mut paths = vec![vec![(base, 0)]];
        paths.extend(
            all.iter()
                .filter(|t| t.timeline != base)
                .filter_map(|t| recovery_path(base, start, t, size)),
        );
        let mut ends: Vec<Segment> = paths
            .iter()
            .filter_map(|p| path_end(&has, p, first))
            .filter(|end| end.number >= stop.number)
            .collect();
        if ends.is_empty() {
            continue;
        }
        ends.sort_unstable();
        ends.dedup();
        let mut to: Option<SystemTime> = None;
        for end in ends {
            if let Some(info) = repo.stat_named(&ns, &end.name())? {
                to = to.max(info.modified);
            }
        }
        out.recoverable_to = to.map(rfc3339);
        break;
    }
    Ok(out)
}

/// `pg info`: the backups and, per cluster, the archive.
pub fn info(repo: &Repository) -> Result<PgInfo> {
    let list = backups(repo)?;
    let mut systems: Vec<String> = Vec::new();
    for b in &list {
        let id = BackupMeta::of(b)?.system_identifier.to_string();
        if !systems.contains(&id) {
            systems.push(id);
        }
    }
    let archives = systems
        .iter()
        .map(|s| archive_info(repo, s, &list, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(PgInfo {
        backups: list.iter().map(backup_info).collect::<Result<_>>()?,
        archives,
        wal_expiry: Vec::new(),
    })
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// As it should be.
    Ok,
    /// Works, but needs attention.
    Warn,
    /// Broken: backups or recovery will fail.
    Fail,
}

impl CheckStatus {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
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
        self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }
    fn push(&mut self, name: &str, status: CheckStatus, detail: String) {
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
        CheckStatus::Ok,
        format!(
            "PostgreSQL {} (system identifier {}), data directory {}",
            info.version, info.system_identifier, info.data_directory
        ),
    );
    check_settings(&mut r, &info);
    check_archiver(&mut r, &session)?;
    let segment = check_wal_switch(&mut r, repo, &session, &info, timeout)?;
    check_gaps(&mut r, repo, &info, &segment)?;
    if let Some(age) = r.newest_archived_age_s {
        r.push(
            "rpo exposure",
            if age > 300.0 {
                CheckStatus::Warn
            } else {
                CheckStatus::Ok
            },
            format!(
                "the newest archived segment was archived {age:.0} s ago (strategy target: 5 min)"
            ),
        );
    }
    Ok(r)
}

/// The archiving settings: archive_mode, wal_level, archive_command,
/// archive_timeout.
fn check_settings(r: &mut CheckReport, info: &ServerInfo) {
    let archive_on = matches!(info.archive_mode.as_str(), "on" | "always");
    r.push(
        "archive_mode",
        if archive_on { CheckStatus::Ok } else { CheckStatus::Fail },
        if archive_on {
            info.archive_mode.clone()
        } else {
            format!("archive_mode is {:?}: set archive_mode = on in postgresql.conf and restart the server", info.archive_mode)
        },
    );
    let level_ok = matches!(info.wal_level.as_str(), "replica" | "logical");
    r.push(
        "wal_level",
        if level_ok {
            CheckStatus::Ok
        } else {
            CheckStatus::Fail
        },
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
            CheckStatus::Fail,
            "archive_command is empty: set archive_command = 'lifeboat --repo … pg wal-push %p'"
                .to_string(),
        )
    } else if !cmd.contains("wal-push") || !cmd.contains("%p") {
        (CheckStatus::Fail, format!("archive_command {cmd:?} does not run `lifeboat pg wal-push %p`, so WAL does not reach this repository"))
    } else {
        (CheckStatus::Ok, cmd.to_string())
    };
    r.push("archive_command", status, detail);
    let timeout_s = info.archive_timeout_s;
    let (status, detail) = if timeout_s == 0 || timeout_s > 300 {
        (CheckStatus::Warn, format!("archive_timeout is {timeout_s} s: on a quiet server WAL may wait {} to be archived; 60 s keeps the RPO under the strategy's 5 minutes", if timeout_s == 0 { "indefinitely".to_string() } else { format!("{timeout_s} s") }))
    } else {
        (CheckStatus::Ok, format!("{timeout_s} s"))
    };
    r.push("archive_timeout", status, detail);
}

/// The archiver's own view (`pg_stat_archiver`): failures since the last
/// success, and how old the newest archived segment is.
fn check_archiver(r: &mut CheckReport, session: &Session) -> Result<()> {
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
            CheckStatus::Fail,
            format!(
                "archive_command is failing: the last attempt, for {}, failed ({} failures in all) and nothing was archived since; the server log says why",
                col(3),
                col(2)
            ),
        );
    } else {
        r.push(
            "archiver",
            CheckStatus::Ok,
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
    Ok(())
}

/// A forced WAL switch (after a restore point, so there is WAL to switch)
/// whose segment must reach the repository and be fetched back within
/// `timeout`; returns the segment's name.
fn check_wal_switch(
    r: &mut CheckReport,
    repo: &Repository,
    session: &Session,
    info: &ServerInfo,
    timeout: Duration,
) -> Result<String> {
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
            CheckStatus::Ok,
            format!(
                "segment {seg_name} reached the repository {:.1} s after the switch and was fetched back ({n} bytes, checksum good)",
                began.elapsed().as_secs_f64()
            ),
        ),
        None => r.push(
            "wal switch",
            CheckStatus::Fail,
            format!(
                "segment {seg_name} did not reach the repository within {} s of a forced WAL switch: check archive_command (it must use this repository and key) and the server log",
                timeout.as_secs()
            ),
        ),
    }
    Ok(seg_name)
}

/// Gaps in the archive since the oldest backup, up to `segment` (the one
/// just switched).
fn check_gaps(
    r: &mut CheckReport,
    repo: &Repository,
    info: &ServerInfo,
    segment: &str,
) -> Result<()> {
    let list = backups(repo)?;
    let upto = Segment::parse(segment, info.wal_segment_size);
    if of_system(&list, &info.system_identifier)?.is_empty() {
        r.push(
            "backups",
            CheckStatus::Warn,
            "the repository holds no backup of this cluster yet: take one with `lifeboat pg backup`".into(),
        );
        return Ok(());
    }
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
            CheckStatus::Ok,
            format!(
                "no gaps from the oldest backup to now ({} timeline(s))",
                a.timelines.len()
            ),
        );
    } else {
        r.push(
            "wal gaps",
            CheckStatus::Fail,
            format!(
                "WAL is missing, so recovery cannot pass: {}. Take a new backup (`lifeboat pg backup --type full`) to recover past it",
                gaps.join("; ")
            ),
        );
    }
    r.archive = Some(a);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 16 << 20;

    fn timeline(timeline: u32, history: &[(u32, u64)]) -> Timeline {
        Timeline {
            timeline,
            parent: history.last().map(|h| h.0),
            branch_lsn: history.last().map(|h| Lsn(h.1)),
            reason: None,
            stored: None,
            origin: None,
            history: history.iter().map(|&(t, l)| (t, Lsn(l))).collect(),
            stored_time: None,
        }
    }

    /// Timeline 3 branched from 2 at 0/9000028, which branched from 1 at
    /// 0/6000000: from a backup on 1, recovery reads 1 up to segment 5, 2
    /// from 6 to 8 and 3 from 9 (the segment holding the branch point comes
    /// from the child), and stops at the first segment missing on that
    /// path, on whichever timeline.
    #[test]
    fn recovery_follows_the_history_and_stops_at_the_first_missing_segment() {
        let t3 = timeline(3, &[(1, 0x600_0000), (2, 0x900_0028)]);
        let path = recovery_path(1, Lsn(0x200_0028), &t3, SIZE).unwrap();
        assert_eq!(path, [(1, 0), (2, 6), (3, 9)]);
        assert_eq!(
            recovery_path(2, Lsn(0x700_0028), &t3, SIZE).unwrap(),
            [(2, 0), (3, 9)]
        );
        // Branched off before the backup began: not reachable from it.
        assert_eq!(recovery_path(1, Lsn(0x600_0028), &t3, SIZE), None);
        assert_eq!(recovery_path(4, Lsn(0x200_0028), &t3, SIZE), None);
        assert_eq!(
            recovery_path(3, Lsn(0xA00_0028), &t3, SIZE).unwrap(),
            [(3, 0)]
        );

        let first = Segment {
            timeline: 1,
            number: 2,
            size: SIZE,
        };
        let stored = |set: &[(u32, u64)]| {
            let set: HashSet<(u32, u64)> = set.iter().copied().collect();
            move |s: &Segment| set.contains(&(s.timeline, s.number))
        };
        let all = [
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (2, 6),
            (2, 7),
            (2, 8),
            (3, 9),
            (3, 10),
        ];
        let end = |set: &[(u32, u64)]| {
            path_end(&stored(set), &path, first).map(|s| (s.timeline, s.number))
        };
        assert_eq!(end(&all), Some((3, 10)));
        // Another timeline's copy of a segment does not stand in for the
        // path's: 1's segment 6 (it went on) is not 2's.
        let mut lost = all.to_vec();
        lost.retain(|s| *s != (2, 6));
        lost.push((1, 6));
        lost.push((1, 7));
        assert_eq!(end(&lost), Some((1, 5)));
        lost.retain(|s| *s != (1, 4));
        assert_eq!(end(&lost), Some((1, 3)));
        assert_eq!(end(&[]), None);
    }
}

/// When the newest WAL segment of the cluster whose data directory is
/// `pgdata` reached the repository (RFC 3339), as `pg info` shows it per
/// timeline; `None` when none is there yet.
pub fn newest_archived(repo: &Repository, pgdata: &std::path::Path) -> Result<Option<String>> {
    let system = crate::archive::system_identifier(pgdata)?;
    let list = backups(repo)?;
    let info = archive_info(repo, &system, &list, None)?;
    Ok(info
        .timelines
        .iter()
        .filter_map(|t| t.last_stored.clone())
        .max())
}

/// The storage keys of the named objects a base backup needs to restore
/// to its end: its WAL segments from the first to the last, and the
/// history file of its timeline (after the first). An archive replica
/// takes them with the backup; `thaw` restores them with its packs.
pub fn backup_wal_keys(repo: &Repository, b: &SnapshotEntry) -> Result<Vec<String>> {
    let m = BackupMeta::of(b)?;
    let size = m.wal_segment_size.max(1 << 20);
    let (first, stop, _) = backup_wal(b, &m, size)?;
    let ns = namespace(&m.system_identifier.to_string());
    let mut out: Vec<String> = (first.number..=stop.number)
        .map(|number| repo.named_key(&ns, &Segment { number, ..first }.name()))
        .collect();
    if first.timeline > 1 {
        out.push(repo.named_key(&ns, &format!("{:08X}.history", first.timeline)));
    }
    Ok(out)
}

/// The newest WAL segment of each cluster with a backup, in a store whose
/// named objects are `keys` (a replica's listing, or the repository's own):
/// by system identifier, the last segment found on each timeline walked,
/// the highest first; `None` when none is there.
pub fn newest_segments(
    repo: &Repository,
    keys: &HashSet<String>,
) -> Result<Vec<(String, Option<String>)>> {
    let list = backups(repo)?;
    let mut systems: Vec<String> = Vec::new();
    for b in &list {
        let id = BackupMeta::of(b)?.system_identifier.to_string();
        if !systems.contains(&id) {
            systems.push(id);
        }
    }
    let mut out = Vec::new();
    for system in systems {
        let info = archive_info_with(repo, &system, &list, None, keys)?;
        let newest = info.timelines.iter().filter_map(|t| t.last.clone()).max();
        out.push((system, newest));
    }
    Ok(out)
}

/// What PostgreSQL's archiver says of itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiverState {
    /// The age of the oldest WAL file waiting to be archived (a `.ready`
    /// file in `pg_wal/archive_status`), in seconds; 0 when none waits.
    pub lag_seconds: f64,
    /// `pg_stat_archiver.failed_count`.
    pub failed_count: u64,
}

/// Asks the server at `conninfo` how far its archiver is behind (needs
/// `pg_monitor` or a superuser: `pg_ls_archive_statusdir`, PostgreSQL 12+).
pub fn archiver_state(rt: &Handle, conninfo: &str) -> Result<ArchiverState> {
    let session = Session::connect(rt, conninfo)?;
    let rows = session.rows(
        "read the archiver's state",
        "select coalesce((select extract(epoch from now() - min(modification))::float8 \
                           from pg_ls_archive_statusdir() where name like '%.ready'), 0)::text, \
                failed_count::text \
         from pg_stat_archiver",
    )?;
    let row = rows.first().cloned().unwrap_or_default();
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(ArchiverState {
        lag_seconds: col(0).parse().unwrap_or(0.0),
        failed_count: col(1).parse().unwrap_or(0),
    })
}

/// The WAL file name of every named object the archive of each cluster
/// with a backup may hold, by storage key: every segment of each timeline
/// up to the last one found on it (gaps included), history files and
/// origin records. Lets `verify` name a
/// damaged WAL object by its segment (`00000001000000000000002A`) rather
/// than by its keyed hash, which says nothing.
pub fn wal_names_by_key(repo: &Repository) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    let list = backups(repo)?;
    let keys = repo.list_named()?;
    let mut systems: Vec<String> = Vec::new();
    for b in &list {
        let id = BackupMeta::of(b)?.system_identifier.to_string();
        if !systems.contains(&id) {
            systems.push(id);
        }
    }
    for system in systems {
        let ns = namespace(&system);
        let size = of_system(&list, &system)?
            .first()
            .map(|(_, m)| m.wal_segment_size.max(1 << 20))
            .unwrap_or(16 << 20);
        let info = archive_info_with(repo, &system, &list, None, &keys)?;
        for t in &info.timelines {
            for name in [
                format!("{:08X}.history", t.timeline),
                crate::timelines::origin_name(t.timeline),
            ] {
                out.insert(repo.named_key(&ns, &name), name);
            }
            let (Some(first), Some(last)) = (
                t.first.as_deref().and_then(|n| Segment::parse(n, size)),
                t.last.as_deref().and_then(|n| Segment::parse(n, size)),
            ) else {
                continue;
            };
            // From the timeline's beginning: segments older than the
            // oldest backup stay until WAL expiry removes them.
            let mut seg = Segment { number: 0, ..first };
            while seg.number <= last.number {
                let name = seg.name();
                out.insert(repo.named_key(&ns, &name), name);
                seg = seg.next();
            }
        }
    }
    Ok(out)
}
