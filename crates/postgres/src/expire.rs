//! WAL expiry: which archived WAL the kept base backups and the
//! point-in-time-recovery window need, and deleting the rest.
//!
//! [`plan_wal_expiry`] decides from the backups that remain after a forget
//! (whether the forget ran or was a dry run makes no difference) and the
//! start of the window; [`expire_wal`] deletes what a plan lists, oldest
//! first. docs/format.md "WAL retention" states the rules; in short, per
//! cluster (system identifier):
//!
//! - **The window**: its base is the newest kept backup that ended at or
//!   before the window start (so every instant of the window is
//!   recoverable), else the oldest kept backup. From the first segment of
//!   the base, or of any kept backup after it if one starts lower, every
//!   segment of every timeline is kept: nothing newer than the oldest kept
//!   thing of the window is ever deleted. A running `pg backup` and a
//!   running `wal-push` only write WAL past the newest kept backup's start,
//!   so they never lose a segment to an expiry beside them.
//! - **A timeline born in the window** (its history file stored after the
//!   window start: a promote, a restore that archives here) keeps all its
//!   segments and its parent's segment holding the branch point.
//! - **An older kept backup** (weekly, monthly, …) keeps its own segments
//!   from start to stop, on its timeline and on each timeline recovery from
//!   it may switch to within that range: what it needs to become consistent.
//! - **History files** (and lifeboat's origin records) are never deleted:
//!   PostgreSQL looks for the newest timeline by probing history files
//!   upward and stops at the first missing one, so deleting one could hide
//!   every later timeline; each is a few hundred bytes.
//! - Everything else below the window that the archive holds is deleted:
//!   segments, `.partial` segments of old timelines, and the `.backup`
//!   history files of backups the repository lists (their names hold the
//!   start LSN, which only a snapshot records).
//!
//! With no kept backup of the cluster, nothing is deleted (an archive is
//! never emptied). Named objects are keyed hashes, so what is deleted is
//! found by name: each timeline is walked down from the window's start,
//! skipping kept ranges, until [`PROBE_AHEAD`] names in a row are missing.
//! Deleting oldest first keeps the archive contiguous up to the window at
//! every instant; a run killed midway leaves a shorter tail of old WAL that
//! the next run (from a fresh listing) finds and deletes.

use std::collections::{BTreeSet, HashMap, HashSet};

use lifeboat_repo::{Repository, SnapshotEntry};
use lifeboat_types::Timestamp;

use crate::archive::namespace;
use crate::backup::SOURCE_KIND;
use crate::error::Result;
use crate::inspect::{
    archive_info_with, backup_wal, backups, of_system, recovery_path, ArchiveInfo, PROBE_AHEAD,
};
use crate::timelines::{timelines, Timeline};
use crate::wal::{Lsn, Segment};

/// A kept backup, as planning sees it.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    /// Short snapshot id, for the reasons.
    pub id: String,
    /// The timeline its WAL is on.
    pub timeline: u32,
    /// Its first segment's number.
    pub first: u64,
    /// Its last segment's number.
    pub stop: u64,
    /// Its start LSN.
    pub start: Lsn,
    /// When it ended.
    pub end: Timestamp,
}

/// Segments of one timeline kept, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// The timeline.
    pub timeline: u32,
    /// First segment number kept.
    pub from: u64,
    /// Last, or `None`: everything after `from`.
    pub to: Option<u64>,
    /// Why.
    pub reason: String,
}

impl Range {
    fn holds(&self, timeline: u32, number: u64) -> bool {
        self.timeline == timeline && number >= self.from && self.to.is_none_or(|t| number <= t)
    }
}

/// One object to delete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Doomed {
    /// The segment number it belongs to (its order: oldest first).
    pub number: u64,
    /// Its timeline.
    pub timeline: u32,
    /// Its name.
    pub name: String,
}

/// What planning decided, before sizes and windows: pure.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    /// The kept ranges.
    pub ranges: Vec<Range>,
    /// What to delete, oldest first.
    pub doomed: Vec<Doomed>,
}

/// The first segment number of timeline `t` (the one holding its branch
/// point; 0 for the first timeline).
fn floor(t: &Timeline, size: u64) -> u64 {
    t.branch_lsn.map_or(0, |l| l.0 / size)
}

/// The planning rules over facts: the timelines (with histories and when
/// each history was stored), the kept backups, the window start, the start
/// LSN and timeline of every backup whose `.backup` file may be stored, and
/// which names the archive holds. No I/O.
pub(crate) fn plan_core(
    size: u64,
    all: &[Timeline],
    kept: &[Kept],
    window_start: Timestamp,
    backup_starts: &[(u32, Lsn)],
    has: &dyn Fn(&str) -> bool,
) -> Core {
    let mut kept: Vec<&Kept> = kept.iter().collect();
    kept.sort_by_key(|k| (k.end, k.start));
    let Some(base) = kept
        .iter()
        .rposition(|k| k.end <= window_start)
        .or(if kept.is_empty() { None } else { Some(0) })
    else {
        return Core {
            ranges: Vec::new(),
            doomed: Vec::new(),
        };
    };
    let window_from = kept[base..].iter().map(|k| k.first).min().unwrap_or(0);
    let mut tls: BTreeSet<u32> = all.iter().map(|t| t.timeline).collect();
    tls.extend(kept.iter().map(|k| k.timeline));
    let floor_of = |tl: u32| {
        all.iter()
            .find(|t| t.timeline == tl)
            .map_or(0, |t| floor(t, size))
    };
    let mut ranges = Vec::new();
    for &tl in &tls {
        ranges.push(Range {
            timeline: tl,
            from: window_from.max(floor_of(tl)),
            to: None,
            reason: format!("window from backup {}", kept[base].id),
        });
    }
    for t in all {
        let born = t.stored_time.and_then(|s| Timestamp::try_from(s).ok());
        if let (Some(born), Some(parent), Some(lsn)) = (born, t.parent, t.branch_lsn) {
            if born > window_start {
                ranges.push(Range {
                    timeline: t.timeline,
                    from: floor(t, size),
                    to: None,
                    reason: format!("timeline {} began in the window", t.timeline),
                });
                let at = lsn.0 / size;
                ranges.push(Range {
                    timeline: parent,
                    from: at,
                    to: Some(at),
                    reason: format!("branch point of timeline {}", t.timeline),
                });
            }
        }
    }
    for k in &kept[..base] {
        let reason = format!("backup {} start..stop", k.id);
        ranges.push(Range {
            timeline: k.timeline,
            from: k.first,
            to: Some(k.stop),
            reason: reason.clone(),
        });
        for t in all.iter().filter(|t| t.timeline != k.timeline) {
            let Some(path) = recovery_path(k.timeline, k.start, t, size) else {
                continue;
            };
            for &(tl, from) in path.iter().skip(1) {
                if from <= k.stop {
                    ranges.push(Range {
                        timeline: tl,
                        from: from.max(k.first),
                        to: Some(k.stop),
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    ranges.sort_by(|a, b| {
        (a.timeline, a.from, a.to, &a.reason).cmp(&(b.timeline, b.from, b.to, &b.reason))
    });
    ranges.dedup();
    let is_kept = |tl: u32, n: u64| ranges.iter().any(|r| r.holds(tl, n));
    let mut doomed = Vec::new();
    for &tl in &tls {
        let bottom = floor_of(tl);
        let mut misses = 0;
        let mut n = window_from;
        while n > bottom {
            n -= 1;
            if is_kept(tl, n) {
                misses = 0;
                continue;
            }
            let name = Segment {
                timeline: tl,
                number: n,
                size,
            }
            .name();
            if has(&name) {
                misses = 0;
                doomed.push(Doomed {
                    number: n,
                    timeline: tl,
                    name,
                });
            } else {
                misses += 1;
                if misses > PROBE_AHEAD {
                    break;
                }
            }
        }
    }
    let mut extra = |seg: Segment, name: String| {
        if seg.number < window_from && !is_kept(seg.timeline, seg.number) && has(&name) {
            doomed.push(Doomed {
                number: seg.number,
                timeline: seg.timeline,
                name,
            });
        }
    };
    for t in all {
        if let (Some(parent), Some(lsn)) = (t.parent, t.branch_lsn) {
            let seg = Segment::containing(parent, lsn, size);
            extra(seg, format!("{}.partial", seg.name()));
        }
    }
    for &(tl, start) in backup_starts {
        let seg = Segment::containing(tl, start, size);
        extra(seg, format!("{}.{:08X}.backup", seg.name(), start.0 % size));
    }
    doomed.sort();
    doomed.dedup();
    Core { ranges, doomed }
}

/// Segments of one timeline that the policy keeps, and why.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct KeptRange {
    /// The first segment kept.
    pub first: String,
    /// The last, or `None`: every later one (the window).
    pub last: Option<String>,
    /// Why: `window from backup 1a2b3c4d`, `backup 5e6f7a8b start..stop`,
    /// `timeline 2 began in the window`, `branch point of timeline 2`.
    pub reason: String,
}

/// One archived file a plan deletes.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct ExpiredFile {
    /// Its name in the archive (a segment, `.partial` or `.backup`).
    pub name: String,
    /// Its stored size.
    pub bytes: u64,
}

/// What a plan keeps and deletes on one timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TimelineExpiry {
    /// The timeline.
    pub timeline: u32,
    /// The segment ranges kept, and why.
    pub kept: Vec<KeptRange>,
    /// The files to delete, oldest first.
    pub delete: Vec<ExpiredFile>,
    /// How many.
    pub delete_count: u64,
    /// Their stored bytes.
    pub delete_bytes: u64,
}

/// What a WAL expiry of one cluster keeps and deletes: made by
/// [`plan_wal_expiry`], carried out by [`expire_wal`], shown by `pg info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WalExpiryPlan {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// The start of the point-in-time-recovery window (RFC 3339).
    pub window_start: String,
    /// Why nothing is deleted, when that is a refusal (no kept backup).
    pub refused: Option<String>,
    /// Per timeline, in order.
    pub timelines: Vec<TimelineExpiry>,
    /// Files to delete in all.
    pub delete_count: u64,
    /// Their stored bytes.
    pub delete_bytes: u64,
    /// The archive and recoverable window now (with every backup the
    /// repository lists).
    pub before: ArchiveInfo,
    /// The archive and recoverable window after the expiry, with the kept
    /// backups only.
    pub after: ArchiveInfo,
    /// Deletion order, oldest first: (timeline, name).
    #[serde(skip)]
    order: Vec<(u32, String)>,
}

impl WalExpiryPlan {
    /// The files to delete, oldest first, with their timelines.
    pub fn deletions(&self) -> impl Iterator<Item = (u32, &str)> {
        self.order.iter().map(|(t, n)| (*t, n.as_str()))
    }
}

/// Plans the WAL expiry of the cluster `system_identifier`: `kept_backups`
/// are the base backups that remain after a forget (others, and other
/// clusters', are ignored), `window_start` the start of the
/// point-in-time-recovery window (now − `pitr_window`). Reads the listing
/// of named objects afresh; deletes nothing.
pub fn plan_wal_expiry(
    repo: &Repository,
    system_identifier: &str,
    kept_backups: &[SnapshotEntry],
    window_start: Timestamp,
) -> Result<WalExpiryPlan> {
    let ns = namespace(system_identifier);
    let listing = repo.list_named_info()?;
    let keys: HashSet<String> = listing.keys().cloned().collect();
    let every = backups(repo)?;
    let before = archive_info_with(repo, system_identifier, &every, None, &keys)?;
    let kept_backups: Vec<SnapshotEntry> = kept_backups
        .iter()
        .filter(|s| s.snapshot.source_kind == SOURCE_KIND && !s.snapshot.partial)
        .cloned()
        .collect();
    let mine = of_system(&kept_backups, system_identifier)?;
    let mut plan = WalExpiryPlan {
        system_identifier: system_identifier.to_string(),
        window_start: window_start.to_string(),
        refused: None,
        timelines: Vec::new(),
        delete_count: 0,
        delete_bytes: 0,
        after: before.clone(),
        before,
        order: Vec::new(),
    };
    let Some((_, m0)) = mine.first() else {
        plan.refused = Some(format!(
            "no base backup of system {system_identifier} is kept: its WAL archive is left whole"
        ));
        return Ok(plan);
    };
    let size = m0.wal_segment_size.max(1 << 20);
    let mut kept = Vec::new();
    for (e, m) in &mine {
        let (first, stop, start) = backup_wal(e, m, size)?;
        kept.push(Kept {
            id: e.id.short(),
            timeline: first.timeline,
            first: first.number,
            stop: stop.number,
            start,
            end: crate::meta::real_end(e),
        });
    }
    // A `pg backup` running now needs every segment from its start on: it
    // counts as a kept backup that has not ended.
    for first in repo.wal_holds(&ns)? {
        if let Some(seg) = Segment::parse(&first, size) {
            kept.push(Kept {
                id: format!("running backup from {first}"),
                timeline: seg.timeline,
                first: seg.number,
                stop: seg.number,
                start: Lsn(seg.number * size),
                end: Timestamp::MAX,
            });
        }
    }
    let mut starts = Vec::new();
    for (_, m) in of_system(&every, system_identifier)?.iter().chain(&mine) {
        starts.push((m.timeline.0, m.start_lsn));
    }
    let all = timelines(repo, &ns, &keys)?;
    let has = |name: &str| keys.contains(&repo.named_key(&ns, name));
    let core = plan_core(size, &all, &kept, window_start, &starts, &has);
    let mut tls: BTreeSet<u32> = core.ranges.iter().map(|r| r.timeline).collect();
    tls.extend(core.doomed.iter().map(|d| d.timeline));
    let mut left = keys.clone();
    for tl in tls {
        let seg = |number| {
            Segment {
                timeline: tl,
                number,
                size,
            }
            .name()
        };
        let mut t = TimelineExpiry {
            timeline: tl,
            kept: core
                .ranges
                .iter()
                .filter(|r| r.timeline == tl)
                .map(|r| KeptRange {
                    first: seg(r.from),
                    last: r.to.map(seg),
                    reason: r.reason.clone(),
                })
                .collect(),
            delete: Vec::new(),
            delete_count: 0,
            delete_bytes: 0,
        };
        for d in core.doomed.iter().filter(|d| d.timeline == tl) {
            let key = repo.named_key(&ns, &d.name);
            let bytes = listing.get(&key).map_or(0, |o| o.size);
            left.remove(&key);
            t.delete.push(ExpiredFile {
                name: d.name.clone(),
                bytes,
            });
            t.delete_count += 1;
            t.delete_bytes += bytes;
        }
        plan.delete_count += t.delete_count;
        plan.delete_bytes += t.delete_bytes;
        plan.timelines.push(t);
    }
    plan.order = core
        .doomed
        .iter()
        .map(|d| (d.timeline, d.name.clone()))
        .collect();
    let kept_entries: Vec<SnapshotEntry> = mine.iter().map(|(e, _)| (*e).clone()).collect();
    plan.after = archive_info_with(repo, system_identifier, &kept_entries, None, &left)?;
    Ok(plan)
}

/// What [`expire_wal`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WalExpiryReport {
    /// Files deleted.
    pub deleted: u64,
    /// Their stored bytes, as the plan listed them.
    pub bytes: u64,
}

/// Deletes what `plan` lists, oldest first, calling `progress` with (done,
/// total) after each deletion. A plan must come from a fresh listing (made
/// just before, by [`plan_wal_expiry`]); killed midway, the archive keeps
/// every kept range whole and the next plan lists what is left.
pub fn expire_wal(
    repo: &Repository,
    plan: &WalExpiryPlan,
    progress: Option<&mut dyn FnMut(u64, u64)>,
) -> Result<WalExpiryReport> {
    let ns = namespace(&plan.system_identifier);
    let mut report = WalExpiryReport::default();
    if plan.refused.is_some() {
        return Ok(report);
    }
    let sizes: HashMap<&str, u64> = plan
        .timelines
        .iter()
        .flat_map(|t| t.delete.iter().map(|f| (f.name.as_str(), f.bytes)))
        .collect();
    let total = plan.order.len() as u64;
    let mut progress = progress;
    for (_, name) in &plan.order {
        lifeboat_types::failpoint!("wal-expire-delete");
        repo.delete_named(&ns, name)?;
        report.deleted += 1;
        report.bytes += sizes.get(name.as_str()).copied().unwrap_or(0);
        if let Some(p) = progress.as_mut() {
            p(report.deleted, total);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 16 << 20;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tl(timeline: u32, history: &[(u32, u64)], stored: Option<&str>) -> Timeline {
        Timeline {
            timeline,
            parent: history.last().map(|h| h.0),
            branch_lsn: history.last().map(|h| Lsn(h.1)),
            reason: None,
            stored: None,
            origin: None,
            history: history.iter().map(|&(t, l)| (t, Lsn(l))).collect(),
            stored_time: stored.map(|s| ts(s).into()),
        }
    }

    fn kept(id: &str, timeline: u32, first: u64, stop: u64, end: &str) -> Kept {
        Kept {
            id: id.into(),
            timeline,
            first,
            stop,
            start: Lsn(first * SIZE + 0x28),
            end: ts(end),
        }
    }

    fn name(t: u32, n: u64) -> String {
        Segment {
            timeline: t,
            number: n,
            size: SIZE,
        }
        .name()
    }

    fn archive(list: &[(u32, std::ops::RangeInclusive<u64>)]) -> HashSet<String> {
        list.iter()
            .flat_map(|(t, r)| r.clone().map(move |n| name(*t, n)))
            .collect()
    }

    fn doomed(core: &Core) -> Vec<(u32, u64)> {
        core.doomed.iter().map(|d| (d.timeline, d.number)).collect()
    }

    /// Two backups, only the newer kept, the window after the older: the
    /// WAL before the newer one's start goes, oldest first; from its start
    /// on everything stays.
    #[test]
    fn wal_before_the_window_base_goes_oldest_first() {
        let set = archive(&[(1, 2..=20)]);
        let has = |n: &str| set.contains(n);
        let k = [kept("new", 1, 10, 11, "2026-11-10T00:00:00Z")];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None)],
            &k,
            ts("2026-11-20T00:00:00Z"),
            &[],
            &has,
        );
        assert_eq!(doomed(&core), (2..10).map(|n| (1, n)).collect::<Vec<_>>());
        assert_eq!(
            core.ranges,
            [Range {
                timeline: 1,
                from: 10,
                to: None,
                reason: "window from backup new".into()
            }]
        );
    }

    /// The window's base is the newest backup that ended before the window
    /// start; an older kept backup keeps exactly its start..stop; a backup
    /// inside the window changes nothing below the base.
    #[test]
    fn an_old_backup_keeps_start_to_stop_and_the_window_reaches_back_to_its_start() {
        let set = archive(&[(1, 1..=40)]);
        let has = |n: &str| set.contains(n);
        let k = [
            kept("month", 1, 3, 5, "2026-09-01T00:00:00Z"),
            kept("week", 1, 20, 21, "2026-11-01T00:00:00Z"),
            kept("day", 1, 30, 30, "2026-11-27T00:00:00Z"),
        ];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None)],
            &k,
            ts("2026-11-10T00:00:00Z"),
            &[(1, Lsn(3 * SIZE + 0x28)), (1, Lsn(12 * SIZE + 0x60))],
            &|n: &str| has(n) || n == "00000001000000000000000C.00000060.backup",
        );
        // Segment 12 twice: itself and the .backup file of a forgotten
        // backup that started in it.
        let mut want: Vec<(u32, u64)> = [1, 2].iter().map(|&n| (1, n)).collect();
        want.extend((6..=12).map(|n| (1, n)));
        want.extend((12..20).map(|n| (1, n)));
        assert_eq!(doomed(&core), want);
        assert!(core
            .doomed
            .iter()
            .any(|d| d.name == "00000001000000000000000C.00000060.backup"));
        assert!(core.ranges.contains(&Range {
            timeline: 1,
            from: 3,
            to: Some(5),
            reason: "backup month start..stop".into()
        }));
        // No backup ended before the window: the oldest is the base.
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None)],
            &k,
            ts("2026-01-01T00:00:00Z"),
            &[],
            &has,
        );
        assert_eq!(doomed(&core), [(1, 1), (1, 2)]);
    }

    /// A backup on timeline 1, a promote onto timeline 2 at 0/C000028 (in
    /// segment 12): the window from the backup keeps timeline 1 from its
    /// start, the branch segment on both timelines and timeline 2 whole;
    /// the old timeline-1 WAL before the backup goes.
    #[test]
    fn across_a_timeline_switch_both_timelines_keep_what_recovery_reads() {
        let set = archive(&[(1, 2..=12), (2, 12..=16)]);
        let partial = "00000001000000000000000C.partial";
        let has = |n: &str| set.contains(n) || n == partial;
        let t2 = tl(2, &[(1, 0xC00_0028)], Some("2026-11-01T00:00:00Z"));
        let k = [kept("b", 1, 8, 8, "2026-10-01T00:00:00Z")];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None), t2.clone()],
            &k,
            ts("2026-11-10T00:00:00Z"),
            &[],
            &has,
        );
        assert_eq!(doomed(&core), (2..8).map(|n| (1, n)).collect::<Vec<_>>());
        // A newer backup on timeline 2 as the window base, timeline 1's
        // backup older: timeline 1 keeps only its start..stop; its
        // segments up to the branch and the .partial go; timeline 2 stays
        // from its branch segment.
        let k = [
            kept("b", 1, 8, 8, "2026-10-01T00:00:00Z"),
            kept("c", 2, 14, 14, "2026-11-05T00:00:00Z"),
        ];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None), t2],
            &k,
            ts("2026-11-10T00:00:00Z"),
            &[],
            &has,
        );
        let mut want: Vec<(u32, u64)> = (2..8).map(|n| (1, n)).collect();
        want.extend([(1, 9), (1, 10), (1, 11), (1, 12), (1, 12), (1, 13)]);
        want.retain(|w| *w != (1, 13));
        want.extend([(2, 12), (2, 13)]);
        want.sort();
        assert_eq!(doomed(&core), want);
        assert!(core.doomed.iter().any(|d| d.name == partial));
    }

    /// A timeline whose history was stored in the window (a restore of an
    /// old backup that archives here) keeps all its WAL, even below the
    /// window base, and its parent's branch segment.
    #[test]
    fn a_timeline_born_in_the_window_is_kept_whole() {
        let set = archive(&[(1, 2..=30), (3, 4..=6)]);
        let has = |n: &str| set.contains(n);
        let t3 = tl(3, &[(1, 0x400_0100)], Some("2026-11-25T00:00:00Z"));
        let k = [
            kept("old", 1, 3, 3, "2026-09-01T00:00:00Z"),
            kept("new", 1, 20, 20, "2026-11-01T00:00:00Z"),
        ];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None), t3],
            &k,
            ts("2026-11-10T00:00:00Z"),
            &[],
            &has,
        );
        let mut want = vec![(1, 2)];
        want.extend((5..20).map(|n| (1, n)));
        assert_eq!(doomed(&core), want);
    }

    /// No kept backup: nothing is deleted.
    #[test]
    fn without_a_kept_backup_nothing_goes() {
        let set = archive(&[(1, 2..=30)]);
        let has = |n: &str| set.contains(n);
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None)],
            &[],
            ts("2026-11-10T00:00:00Z"),
            &[],
            &has,
        );
        assert!(core.doomed.is_empty());
    }

    /// After a run killed midway (the oldest gone), the next plan finds the
    /// rest; a long gap below ends the walk down.
    #[test]
    fn the_walk_down_finds_what_a_killed_run_left_and_stops_after_a_long_gap() {
        let far = PROBE_AHEAD + 100;
        let set = archive(&[(1, 1..=1), (1, far + 5..=far + 20)]);
        let has = |n: &str| set.contains(n);
        let k = [kept("b", 1, far + 15, far + 15, "2026-11-01T00:00:00Z")];
        let core = plan_core(
            SIZE,
            &[tl(1, &[], None)],
            &k,
            ts("2026-11-10T00:00:00Z"),
            &[],
            &has,
        );
        assert_eq!(
            doomed(&core),
            (far + 5..far + 15).map(|n| (1, n)).collect::<Vec<_>>()
        );
    }
}
