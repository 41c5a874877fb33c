//! Timelines in the WAL archive: where each branched, what made it, and
//! whether a point-in-time restore would have to guess which to follow.
//!
//! Every promotion starts a timeline and archives a history file naming the
//! parent and the LSN where it branched. PostgreSQL's default,
//! `recovery_target_timeline = 'latest'`, follows the newest one. That is
//! right after a failover, when the old timeline ended where the new one
//! began; it is silently wrong when the old timeline went on (a trial
//! restore, a drill, a split brain archived into the same repository):
//! recovery then follows the branch and stops at the target on it, without
//! the rows the source wrote after the branch. So before writing recovery
//! settings, a restore looks at the histories that part after the backup and
//! before the target; when more than one of them has WAL past the parting, it
//! refuses and lists them, and `--target-timeline` says which.
//!
//! lifeboat records which restore made a timeline: a restore that keeps the
//! source's archiving (`--archive-mode preserve`) leaves a marker in the data
//! directory, and the restored server's `wal-push` of its first history file
//! stores it next to the history as `<TLI>.lifeboat-origin`.

use std::collections::HashSet;
use std::time::SystemTime;

use lifeboat_repo::{Repository, SnapshotEntry};
use serde::{Deserialize, Serialize};

use crate::archive::namespace;
use crate::error::{PgError, Result};
use crate::meta::BackupMeta;
use crate::restore::{PgRestoreOptions, RecoveryTarget};
use crate::wal::{Lsn, Segment};

/// The highest timeline whose history file is looked for.
const MAX_TIMELINE: u32 = 4096;
/// Missing history files in a row after which the search stops.
const MISSES: u32 = 64;

/// Which restore made a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// What made it: `lifeboat pg restore`.
    pub tool: String,
    /// The backup restored (snapshot id).
    pub snapshot: String,
    /// The backup's timeline; the record is for the first timeline after it.
    pub backup_timeline: u32,
    /// The recovery target, as a person reads it.
    pub target: String,
    /// The host it ran on.
    pub host: String,
    /// The data directory restored into.
    pub pgdata: String,
    /// When, RFC 3339.
    pub restored_at: String,
}

impl RestoreRecord {
    /// The record of a restore of `entry` with `opts`, now.
    pub fn new(entry: &SnapshotEntry, opts: &PgRestoreOptions) -> Result<RestoreRecord> {
        let meta = BackupMeta::of(entry)?;
        let target = match &opts.target {
            RecoveryTarget::End => "the end of the archived WAL".to_string(),
            RecoveryTarget::Immediate => "consistency (immediate)".to_string(),
            RecoveryTarget::Time(t) => format!("time {}", crate::restore::pg_timestamp(*t)),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
        };
        Ok(RestoreRecord {
            tool: "lifeboat pg restore".into(),
            snapshot: entry.id.to_hex(),
            backup_timeline: meta.timeline.0,
            target,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            pgdata: opts.pgdata.display().to_string(),
            restored_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        })
    }

    /// One line: `lifeboat pg restore of backup 1a2b3c4d into /srv/x on db1 at …, to …`.
    pub fn describe(&self) -> String {
        format!(
            "made by `{}` of backup {} into {} on {} at {}, to {}",
            self.tool,
            self.snapshot.get(..8).unwrap_or(&self.snapshot),
            self.pgdata,
            if self.host.is_empty() {
                "?"
            } else {
                &self.host
            },
            self.restored_at,
            self.target
        )
    }
}

/// The name of the record of which restore made timeline `tli`.
pub fn origin_name(tli: u32) -> String {
    format!("{tli:08X}.lifeboat-origin")
}

/// One timeline of the archive.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    /// Its number.
    pub timeline: u32,
    /// The timeline it branched from (`None` for the first).
    pub parent: Option<u32>,
    /// Where it branched from its parent.
    pub branch_lsn: Option<Lsn>,
    /// Why, as PostgreSQL wrote it (`before 2026-11-24 10:00:00+00`, `no
    /// recovery target specified`, …).
    pub reason: Option<String>,
    /// When its history file was stored.
    pub stored: Option<String>,
    /// Which restore made it, when lifeboat knows.
    pub origin: Option<RestoreRecord>,
    /// Every (ancestor, branch point) of its history, oldest first.
    #[serde(skip)]
    pub history: Vec<(u32, Lsn)>,
    /// When its history file was stored, as a time.
    #[serde(skip)]
    pub stored_time: Option<SystemTime>,
}

/// The lines of a history file: `parent TLI, switch LSN, reason`.
pub fn parse_history(text: &str) -> Vec<(u32, Lsn, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.splitn(3, |c: char| c.is_ascii_whitespace());
            let tli = parts.next()?.parse().ok()?;
            let lsn = parts.next()?.trim().parse().ok()?;
            let reason = parts.next().unwrap_or("").trim().to_string();
            Some((tli, lsn, reason))
        })
        .collect()
}

/// Every timeline of the archive in namespace `ns`: the first, and each one
/// whose history file is stored. `keys` is the listing of named objects.
pub fn timelines(repo: &Repository, ns: &str, keys: &HashSet<String>) -> Result<Vec<Timeline>> {
    let mut out = vec![Timeline {
        timeline: 1,
        parent: None,
        branch_lsn: None,
        reason: None,
        stored: None,
        origin: None,
        history: Vec::new(),
        stored_time: None,
    }];
    let mut misses = 0;
    for tl in 2..=MAX_TIMELINE {
        let name = format!("{tl:08X}.history");
        if !keys.contains(&repo.named_key(ns, &name)) {
            misses += 1;
            if misses > MISSES {
                break;
            }
            continue;
        }
        misses = 0;
        let Some(text) = repo.get_named(ns, &name)? else {
            continue;
        };
        let lines = parse_history(&String::from_utf8_lossy(&text));
        let Some((parent, lsn, reason)) = lines.last().cloned() else {
            continue;
        };
        let origin_key = repo.named_key(ns, &origin_name(tl));
        let origin = if keys.contains(&origin_key) {
            repo.get_named(ns, &origin_name(tl))?
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        let info = repo.stat_named(ns, &name)?;
        let stored_time = info.and_then(|i| i.modified);
        out.push(Timeline {
            timeline: tl,
            parent: Some(parent),
            branch_lsn: Some(lsn),
            reason: Some(reason),
            stored: stored_time.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            origin,
            history: lines.iter().map(|(t, l, _)| (*t, *l)).collect(),
            stored_time,
        });
    }
    Ok(out)
}

/// When a timeline branched, as far as the archive tells: the time in its
/// history's reason (`before 2026-11-24 10:00:00.123+00`), else no later
/// than its history file was stored.
fn branch_time(t: &Timeline) -> (Option<SystemTime>, bool) {
    if let Some(r) = &t.reason {
        for word in ["before ", "after "] {
            if let Some(ts) = r.strip_prefix(word) {
                if let Ok(time) = crate::restore::parse_target_time(ts) {
                    return (Some(time), true);
                }
            }
        }
    }
    (t.stored_time, false)
}

/// True when timeline `t` branched before `target` (or may have: what the
/// archive cannot tell counts as before).
fn branched_before(t: &Timeline, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Lsn(l) => t.branch_lsn.is_none_or(|b| b < *l),
        RecoveryTarget::Time(when) => match branch_time(t) {
            (Some(at), true) => at < *when,
            // The branch came before its history was stored: certainly
            // before a target after that, perhaps before one earlier.
            _ => true,
        },
        _ => true,
    }
}

/// For `pg restore` without `--target-timeline`: refuses (listing the
/// candidates) when more than one history with WAL past the parting leaves
/// the backup's before the target, so that PostgreSQL's `latest` would be a
/// guess.
pub fn check_target(
    repo: &Repository,
    entry: &SnapshotEntry,
    opts: &PgRestoreOptions,
) -> Result<()> {
    if opts.target_timeline.is_some() || opts.target == RecoveryTarget::Immediate {
        return Ok(());
    }
    let meta = BackupMeta::of(entry)?;
    let ns = namespace(&meta.system_identifier.to_string());
    let keys = repo.list_named()?;
    let all = timelines(repo, &ns, &keys)?;
    if all.len() < 2 {
        return Ok(());
    }
    let base = meta.timeline.0;
    let start: Lsn = meta.start_lsn;
    let size = meta.wal_segment_size.max(1 << 20);
    // The timelines recovery from this backup can take: its own, and every
    // one whose history leaves it (or a descendant) after the backup began.
    let reachable: Vec<&Timeline> = all
        .iter()
        .filter(|t| {
            t.timeline == base
                || t.history
                    .iter()
                    .any(|(parent, at)| *parent == base && *at >= start)
        })
        .collect();
    let mut parting: Vec<(u32, Vec<&Timeline>, bool)> = Vec::new();
    for p in &reachable {
        let children: Vec<&Timeline> = reachable
            .iter()
            .copied()
            .filter(|c| c.parent == Some(p.timeline))
            .filter(|c| branched_before(c, &opts.target))
            .collect();
        let Some(first) = children.iter().filter_map(|c| c.branch_lsn).min() else {
            continue;
        };
        // Does the parent go on past the first branch? Only a whole segment
        // after the one holding the branch point says so: a failover leaves
        // at most that segment (or its .partial) on the old timeline.
        let branch_seg = Segment::containing(p.timeline, first, size);
        let next = branch_seg.next();
        let continues = keys.contains(&repo.named_key(&ns, &next.name()));
        if children.len() + usize::from(continues) >= 2 {
            parting.push((p.timeline, children, continues));
        }
    }
    if parting.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    let mut choices: Vec<u32> = Vec::new();
    for (parent, children, continues) in &parting {
        if *continues {
            choices.push(*parent);
            lines.push(format!(
                "  timeline {parent}: {}; it goes on past the branch{}",
                if *parent == base {
                    "the backup's own".to_string()
                } else {
                    describe_short(&all, *parent)
                },
                if *parent == base {
                    " (the source's own history)"
                } else {
                    ""
                }
            ));
        }
        for c in children {
            choices.push(c.timeline);
            lines.push(format!("  timeline {}: {}", c.timeline, describe(c)));
        }
    }
    choices.sort_unstable();
    choices.dedup();
    let flags: Vec<String> = choices
        .iter()
        .map(|t| format!("--target-timeline {t}"))
        .collect();
    Err(PgError::AmbiguousTimelines {
        backup: entry.id.short(),
        newest: reachable.iter().map(|t| t.timeline).max().unwrap_or(base),
        listing: lines.join("\n"),
        flags: flags.join(" or "),
    })
}

fn describe_short(all: &[Timeline], tli: u32) -> String {
    all.iter()
        .find(|t| t.timeline == tli)
        .map(describe)
        .unwrap_or_default()
}

/// `branched from timeline 1 at 0/5000028 (before …); made by …`.
pub fn describe(t: &Timeline) -> String {
    let mut s = match (t.parent, t.branch_lsn) {
        (Some(p), Some(l)) => format!(
            "branched from timeline {p} at {l}{}",
            t.reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        _ => "the first timeline".to_string(),
    };
    if let Some(stored) = &t.stored {
        s.push_str(&format!(", its history stored {stored}"));
    }
    match &t.origin {
        Some(o) => s.push_str(&format!("; {}", o.describe())),
        None if t.parent.is_some() => s.push_str("; not made by a lifeboat restore lifeboat knows of (a failover, or a restore by other means)"),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_parse_with_their_reasons() {
        let h = parse_history(
            "1\t0/3000060\tno recovery target specified\n\n2\t0/5000028\tbefore 2026-11-24 10:00:00.123+00\n",
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].0, 2);
        assert_eq!(h[1].1, "0/5000028".parse().unwrap());
        assert_eq!(h[1].2, "before 2026-11-24 10:00:00.123+00");
    }

    #[test]
    fn a_time_in_the_reason_dates_the_branch() {
        let t = Timeline {
            timeline: 2,
            parent: Some(1),
            branch_lsn: Some(Lsn(0x5000028)),
            reason: Some("before 2026-11-24 10:00:00.123+00".into()),
            stored: None,
            origin: None,
            history: vec![(1, Lsn(0x5000028))],
            stored_time: None,
        };
        let when = |s| RecoveryTarget::Time(crate::restore::parse_target_time(s).unwrap());
        assert!(branched_before(&t, &when("2026-11-24T10:00:01Z")));
        assert!(!branched_before(&t, &when("2026-11-24T09:59:59Z")));
        assert!(branched_before(&t, &RecoveryTarget::Lsn(Lsn(0x6000000))));
        assert!(!branched_before(&t, &RecoveryTarget::Lsn(Lsn(0x4000000))));
        assert!(branched_before(&t, &RecoveryTarget::End));
    }
}
