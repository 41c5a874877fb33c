//! `forget`: each series' retention policy applied, and the snapshots it
//! does not keep deleted (their data stays until `prune`).
//!
//! A *series* is the snapshots of one source of one kind on one host:
//! `(source_kind, hostname, source_name)` — for a configured source the
//! name is its config NAME (`[postgres.main]` → `main`), for files the
//! paths backed up. A base backup and a dump of one cluster are two series.
//!
//! Its policy, rule by rule: the `--keep-*` flags, over the source's
//! `retention` table, else `[retention.<kind>]`, else the kind's built-in
//! default ([`kind_default`]); files and streams have none, and a series
//! without any policy keeps everything ("no policy: nothing forgotten").
//! Holds are read before the plan and again right before deleting.
//!
//! For PostgreSQL base backups, `forget` then expires the archived WAL
//! (`lifeboat_postgres::expire`) per cluster: what the kept backups need
//! to become consistent, and everything from the base of the
//! point-in-time-recovery window on. The window is the source's
//! `pitr_window`, else the span of its `keep_daily` rule (in days), else of
//! its `keep_within`, else none (recovery from the newest backup on). The
//! WAL plan is made from the final kept set (after the second look at the
//! holds) and before the snapshots are deleted; the WAL goes after them.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use lifeboat_postgres::expire::{self, WalExpiryPlan, WalExpiryReport};

use lifeboat_repo::retention::{self, Candidate, Policy, Reason, TimeZone, Within};
use lifeboat_repo::{Hold, Repository, SnapshotId, Timestamp};
use serde::Serialize;

use crate::config::FileConfig;
use crate::{Error, Result};

/// The built-in policy of a source kind when the config names none: the
/// strategy's defaults (`None`: keep everything).
pub fn kind_default(kind: &str) -> Option<Policy> {
    let w = |s: &str| s.parse::<Within>().ok();
    match kind {
        "postgres" | "pg_dump" => Some(Policy {
            keep_daily: Some(30),
            keep_weekly: Some(12),
            keep_monthly: Some(12),
            keep_yearly: Some(7),
            ..Policy::default()
        }),
        "redis" => Some(Policy {
            keep_within: w("7d"),
            ..Policy::default()
        }),
        "elasticsearch" => Some(Policy {
            keep_within: w("90d"),
            keep_monthly: Some(84),
            ..Policy::default()
        }),
        _ => None,
    }
}

/// What `forget` is asked.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// Only these sources (series whose source name is one of them); all
    /// when empty.
    pub sources: Vec<String>,
    /// Rules given as flags: each set one replaces the configured one.
    pub flags: Policy,
    /// A time zone given as a flag, over `[retention] timezone`.
    pub timezone: Option<String>,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// Where a series' policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyFrom {
    /// The source's own `retention` table (flags may override rules).
    Source,
    /// `[retention.<kind>]` (flags may override rules).
    Kind,
    /// The kind's built-in default (flags may override rules).
    Default,
    /// Flags alone.
    Flags,
    /// Nothing: the series keeps everything.
    None,
}

/// One snapshot's fate.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: Timestamp,
    /// Its tags.
    pub tags: Vec<String>,
    /// Kept (true) or forgotten.
    pub keep: bool,
    /// Why it is kept, as people read it (`daily 2026-11-27`, `hold: case
    /// 42`); empty when forgotten.
    pub reasons: Vec<String>,
}

/// One series and what its policy decided, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// Source kind.
    pub kind: String,
    /// Host.
    pub hostname: String,
    /// Source name.
    pub source: String,
    /// The policy applied, as `keep_daily=30 keep_weekly=12 …`, or `none`.
    pub policy: String,
    /// Where it came from.
    pub policy_from: PolicyFrom,
    /// The snapshots, newest first.
    pub snapshots: Vec<Entry>,
}

/// What `forget` decided and did.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    /// The time zone buckets were counted in.
    pub timezone: String,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Every series considered.
    pub series: Vec<Series>,
    /// Snapshots kept.
    pub kept: usize,
    /// Snapshots forgotten (deleted unless `dry_run`).
    pub forgotten: usize,
    /// Snapshots the plan forgot but a hold placed since protected.
    pub held_since_plan: Vec<SnapshotId>,
    /// WAL expiry per PostgreSQL cluster whose base backups were in scope.
    pub wal: Vec<WalExpiry>,
    /// Orchestrate-mode Elasticsearch/OpenSearch snapshots whose copy in
    /// the cluster could not be deleted: their records are kept (the next
    /// forget tries again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_failed: Vec<RemoteFailure>,
}

/// A snapshot kept because its cluster's copy could not be deleted.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteFailure {
    /// The lifeboat snapshot.
    pub id: SnapshotId,
    /// The snapshot's name in the cluster.
    pub snapshot: String,
    /// Why it could not be deleted.
    pub error: String,
}

/// The WAL expiry of one cluster: the window, the plan, and (unless a dry
/// run) what was deleted.
#[derive(Clone, Debug, Serialize)]
pub struct WalExpiry {
    /// The point-in-time-recovery window, as configured or derived
    /// (`30d`), and where it came from.
    pub window: String,
    /// What is kept and deleted, per timeline, and the recoverable window
    /// before and after.
    pub plan: WalExpiryPlan,
    /// What was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<WalExpiryReport>,
}

/// The point-in-time-recovery window of a PostgreSQL series: `pitr_window`,
/// else the span of `keep_daily`, else `keep_within`, else none.
fn pitr_window(cfg: &FileConfig, source: &str, policy: &Policy) -> Result<(Within, String)> {
    if let Some(w) = cfg
        .postgres
        .get(source)
        .map(|s| s.pitr_window())
        .transpose()?
        .flatten()
    {
        return Ok((w, format!("{w} (pitr_window)")));
    }
    if let Some(d) = policy.keep_daily.filter(|&d| d > 0) {
        let w = Within {
            days: d,
            ..Within::default()
        };
        return Ok((w, format!("{w} (the span of keep_daily)")));
    }
    if let Some(w) = policy.keep_within.filter(|w| !w.is_zero()) {
        return Ok((w, format!("{w} (the span of keep_within)")));
    }
    Ok((
        Within::default(),
        "none (no pitr_window, keep_daily or keep_within)".into(),
    ))
}

/// Plans the WAL expiry of every cluster a PostgreSQL series in `series`
/// belongs to: kept are all its base backups but those `forgotten`.
fn plan_wal(
    repo: &Repository,
    series: &[Series],
    windows: &BTreeMap<(String, String), (Within, String)>,
    members: &BTreeMap<(String, String), Vec<SnapshotId>>,
    forgotten: &HashSet<SnapshotId>,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Vec<WalExpiry>> {
    if !series
        .iter()
        .any(|s| s.kind == lifeboat_postgres::SOURCE_KIND)
    {
        return Ok(Vec::new());
    }
    let backups = lifeboat_postgres::inspect::backups(repo)?;
    let mut system_of: BTreeMap<SnapshotId, String> = BTreeMap::new();
    for b in &backups {
        let meta = lifeboat_postgres::meta::BackupMeta::of(b)?;
        system_of.insert(b.id, meta.system_identifier.to_string());
    }
    // The clusters of the series in scope; for each, the widest window of
    // every base-backup series of that cluster, in scope or not (a
    // `--source` must not shorten another source's window).
    let in_scope: BTreeSet<&String> = series
        .iter()
        .filter(|s| s.kind == lifeboat_postgres::SOURCE_KIND)
        .flat_map(|s| s.snapshots.iter().filter_map(|e| system_of.get(&e.id)))
        .collect();
    let mut per_system: BTreeMap<String, (Within, String)> = BTreeMap::new();
    for (group, ids) in members {
        let Some(w) = windows.get(group) else {
            continue;
        };
        for id in ids {
            let Some(system) = system_of.get(id).filter(|s| in_scope.contains(s)) else {
                continue;
            };
            let start = |w: &Within| {
                now.to_zoned(tz.clone())
                    .checked_sub(w.span())
                    .map(|z| z.timestamp())
                    .unwrap_or(Timestamp::MIN)
            };
            per_system
                .entry(system.clone())
                .and_modify(|cur| {
                    if start(&w.0) < start(&cur.0) {
                        *cur = w.clone();
                    }
                })
                .or_insert_with(|| w.clone());
        }
    }
    let mut out = Vec::new();
    for (system, (within, why)) in per_system {
        let kept: Vec<_> = backups
            .iter()
            .filter(|b| system_of.get(&b.id) == Some(&system) && !forgotten.contains(&b.id))
            .cloned()
            .collect();
        let window_start = now
            .to_zoned(tz.clone())
            .checked_sub(within.span())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN);
        let plan = expire::plan_wal_expiry(repo, &system, &kept, window_start)?;
        out.push(WalExpiry {
            window: why,
            plan,
            deleted: None,
        });
    }
    Ok(out)
}

/// The policy of series `(kind, name)` and where it came from: flags
/// over the source's table, else the kind's table, else the built-in.
pub(crate) fn policy_for(
    cfg: &FileConfig,
    kind: &str,
    name: &str,
    flags: &Policy,
) -> Result<(Policy, PolicyFrom)> {
    let source = match kind {
        "postgres" | "pg_dump" => cfg.postgres.get(name).and_then(|s| s.retention.as_ref()),
        "redis" => cfg.redis.get(name).and_then(|s| s.retention.as_ref()),
        "elasticsearch" => cfg
            .elasticsearch
            .get(name)
            .and_then(|s| s.retention.as_ref()),
        _ => None,
    };
    let section = match kind {
        "files" => cfg.retention.files.as_ref(),
        "stream" => cfg.retention.stream.as_ref(),
        "postgres" => cfg.retention.postgres.as_ref(),
        "pg_dump" => cfg.retention.pg_dump.as_ref(),
        "redis" => cfg.retention.redis.as_ref(),
        "elasticsearch" => cfg.retention.elasticsearch.as_ref(),
        _ => None,
    };
    for (r, what) in [
        (
            cfg.redis.get(name).and_then(|s| s.retention.as_ref()),
            format!("[redis.{name}.retention]"),
        ),
        (
            cfg.elasticsearch
                .get(name)
                .and_then(|s| s.retention.as_ref()),
            format!("[elasticsearch.{name}.retention]"),
        ),
        (section, format!("[retention.{kind}]")),
    ] {
        if r.is_some_and(|r| r.pitr_window.is_some()) {
            return Err(Error::usage(format!(
                "pitr_window in {what}: it belongs in a [postgres.NAME.retention] table"
            )));
        }
    }
    let (base, from) = if let Some(r) = source {
        let section = match kind {
            "redis" | "elasticsearch" => kind,
            _ => "postgres",
        };
        (
            r.policy(&format!("[{section}.{name}.retention]"))?,
            PolicyFrom::Source,
        )
    } else if let Some(r) = section {
        (r.policy(&format!("[retention.{kind}]"))?, PolicyFrom::Kind)
    } else if let Some(p) = kind_default(kind) {
        (p, PolicyFrom::Default)
    } else if flags.any_set() {
        (Policy::default(), PolicyFrom::Flags)
    } else {
        return Ok((Policy::default(), PolicyFrom::None));
    };
    Ok((base.overridden_by(flags), from))
}

/// Holds active at `now`, by snapshot.
fn active_holds(holds: &[Hold], now: Timestamp) -> BTreeMap<SnapshotId, String> {
    holds
        .iter()
        .filter(|h| h.is_active(now))
        .map(|h| (h.snapshot, h.reason.clone()))
        .collect()
}

/// Plans `forget` over `repo` with config `cfg`, and deletes the snapshots
/// no rule keeps unless `opts.dry_run`. A `--source` that names no series
/// and no configured source, a policy that keeps nothing, a bad time zone
/// are usage errors, found before anything is deleted.
pub fn forget(repo: &Repository, cfg: &FileConfig, opts: &ForgetOptions) -> Result<ForgetReport> {
    let tz: TimeZone = match &opts.timezone {
        Some(name) => crate::config::time_zone(name)?,
        None => cfg.retention.time_zone()?,
    };
    let tz_name = tz.iana_name().unwrap_or("UTC").to_string();
    let snapshots = repo.snapshot_summaries()?;
    let now = Timestamp::now();
    let holds = active_holds(&repo.holds()?, now);

    let mut groups: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        groups
            .entry((
                s.source_kind.clone(),
                s.hostname.clone(),
                s.source_name.clone(),
            ))
            .or_default()
            .push(i);
    }
    // Every base-backup series' window and members, in scope or not: the
    // WAL of a cluster is shared by all its series.
    let mut windows: BTreeMap<(String, String), (Within, String)> = BTreeMap::new();
    let mut pg_members: BTreeMap<(String, String), Vec<SnapshotId>> = BTreeMap::new();
    for ((kind, hostname, source), idx) in &groups {
        if kind != lifeboat_postgres::SOURCE_KIND {
            continue;
        }
        let in_scope = opts.sources.is_empty() || opts.sources.contains(source);
        let flags = if in_scope {
            opts.flags.clone()
        } else {
            Policy::default()
        };
        let (policy, _) = policy_for(cfg, kind, source, &flags)?;
        windows.insert(
            (hostname.clone(), source.clone()),
            pitr_window(cfg, source, &policy)?,
        );
        pg_members.insert(
            (hostname.clone(), source.clone()),
            idx.iter().map(|&i| snapshots[i].id).collect(),
        );
    }
    if !opts.sources.is_empty() {
        let known: BTreeSet<&str> = groups
            .keys()
            .map(|(_, _, n)| n.as_str())
            .chain(cfg.postgres.keys().map(String::as_str))
            .chain(cfg.redis.keys().map(String::as_str))
            .chain(cfg.elasticsearch.keys().map(String::as_str))
            .collect();
        for s in &opts.sources {
            if !known.contains(s.as_str()) {
                return Err(Error::usage(format!(
                    "no source {s:?} in the repository or the config file; {}",
                    if known.is_empty() {
                        "there are none".to_string()
                    } else {
                        format!(
                            "there are: {}",
                            known
                                .iter()
                                .map(|k| format!("{k:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )));
            }
        }
        groups.retain(|(_, _, n), _| opts.sources.contains(n));
    }

    let mut series = Vec::with_capacity(groups.len());
    let (mut kept, mut forgotten) = (0, 0);
    for ((kind, hostname, source), members) in groups {
        let (policy, from) = policy_for(cfg, &kind, &source, &opts.flags)?;

        if from != PolicyFrom::None && policy.is_empty() {
            return Err(Error::usage(format!(
                "the retention policy of {kind} source {source:?} on {hostname} would keep nothing (every keep_* rule is zero or absent); set one, e.g. --keep-daily 7"
            )));
        }
        let candidates: Vec<Candidate<'_>> = members
            .iter()
            .map(|&i| {
                let s = &snapshots[i];
                Candidate {
                    id: s.id,
                    time: s.start_time,
                    tags: &s.tags,
                    hold: holds.get(&s.id).map(String::as_str),
                }
            })
            .collect();
        let by_id: BTreeMap<SnapshotId, &Vec<String>> = members
            .iter()
            .map(|&i| (snapshots[i].id, &snapshots[i].tags))
            .collect();
        let decisions = retention::apply_at(&policy, &tz, &candidates, now);
        let entries: Vec<Entry> = decisions
            .into_iter()
            .map(|d| {
                let keep = d.keep();
                if keep {
                    kept += 1;
                } else {
                    forgotten += 1;
                }
                Entry {
                    id: d.id,
                    time: d.time,
                    tags: by_id.get(&d.id).map(|t| (*t).clone()).unwrap_or_default(),
                    keep,
                    reasons: d.reasons.iter().map(Reason::to_string).collect(),
                }
            })
            .collect();
        series.push(Series {
            kind,
            hostname,
            source,
            policy: policy.to_string(),
            policy_from: from,
            snapshots: entries,
        });
    }

    let mut report = ForgetReport {
        timezone: tz_name,
        dry_run: opts.dry_run,
        series,
        kept,
        forgotten,
        held_since_plan: Vec::new(),
        wal: Vec::new(),
        remote_failed: Vec::new(),
    };
    if opts.dry_run {
        let doomed: HashSet<SnapshotId> = report
            .series
            .iter()
            .flat_map(|s| s.snapshots.iter().filter(|e| !e.keep).map(|e| e.id))
            .collect();
        report.wal = plan_wal(
            repo,
            &report.series,
            &windows,
            &pg_members,
            &doomed,
            &tz,
            now,
        )?;
        return Ok(report);
    }
    // A hold placed while the plan was made still protects.
    let holds = active_holds(&repo.holds()?, Timestamp::now());
    let mut doomed = Vec::new();
    for s in &mut report.series {
        for e in &mut s.snapshots {
            if e.keep {
                continue;
            }
            if let Some(r) = holds.get(&e.id) {
                e.keep = true;
                e.reasons.push(Reason::Hold(r.clone()).to_string());
                report.held_since_plan.push(e.id);
                report.kept += 1;
                report.forgotten -= 1;
            } else {
                doomed.push(e.id);
            }
        }
    }
    // The WAL plan from the final kept set, before the snapshots go (the
    // `.backup` files of forgotten backups are found by their names).
    let doomed_set: HashSet<SnapshotId> = doomed.iter().copied().collect();
    report.wal = plan_wal(
        repo,
        &report.series,
        &windows,
        &pg_members,
        &doomed_set,
        &tz,
        now,
    )?;
    delete_in_clusters(repo, cfg, &mut report, &mut doomed)?;
    repo.delete_snapshots(&doomed)?;
    for w in &mut report.wal {
        w.deleted = Some(expire::expire_wal(repo, &w.plan, None)?);
    }
    Ok(report)
}

/// Orchestrate-mode Elasticsearch/OpenSearch snapshots about to be
/// forgotten: their copy in the cluster goes first, through its delete API
/// (the cluster's own repository holds their data). One that cannot be
/// deleted keeps its record, so the next forget tries again.
fn delete_in_clusters(
    repo: &Repository,
    cfg: &FileConfig,
    report: &mut ForgetReport,
    doomed: &mut Vec<SnapshotId>,
) -> Result<()> {
    let es: HashSet<SnapshotId> = report
        .series
        .iter()
        .filter(|s| s.kind == lifeboat_elastic::SOURCE_KIND)
        .flat_map(|s| s.snapshots.iter().filter(|e| !e.keep).map(|e| e.id))
        .filter(|id| doomed.contains(id))
        .collect();
    if es.is_empty() {
        return Ok(());
    }
    for entry in repo.snapshots()?.into_iter().filter(|e| es.contains(&e.id)) {
        let meta = lifeboat_elastic::EsMeta::of(&entry)?;
        if meta.mode != lifeboat_elastic::Mode::Orchestrate {
            continue;
        }
        let flags = crate::elastic::EsFlags {
            source: Some(entry.snapshot.source_name.clone()),
            ..Default::default()
        };
        let deleted = crate::elastic::settings(cfg, &flags).and_then(|s| {
            lifeboat_elastic::delete_remote(&s.connection, &meta).map_err(Error::from)
        });
        if let Err(e) = deleted {
            doomed.retain(|d| *d != entry.id);
            for s in &mut report.series {
                for x in s.snapshots.iter_mut().filter(|x| x.id == entry.id) {
                    x.keep = true;
                    x.reasons.push(format!(
                        "its snapshot in the cluster could not be deleted: {e}"
                    ));
                }
            }
            report.kept += 1;
            report.forgotten -= 1;
            report.remote_failed.push(RemoteFailure {
                id: entry.id,
                snapshot: meta.snapshot.clone(),
                error: e.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn policies_come_from_flags_over_the_source_over_the_kind_over_the_default() {
        let c = cfg(r#"
            [retention]
            timezone = "Europe/Paris"
            [retention.files]
            keep_last = 3
            [postgres.main]
            pgdata = "/d"
            [postgres.main.retention]
            keep_daily = 7
            keep_monthly = -1
            pitr_window = "30d"
            [redis.cache]
            redis_url = "redis://x"
        "#);
        assert_eq!(
            c.retention.time_zone().unwrap().iana_name(),
            Some("Europe/Paris")
        );
        let none = Policy::default();
        let (p, from) = policy_for(&c, "pg_dump", "main", &none).unwrap();
        assert_eq!(
            (p.to_string().as_str(), from),
            ("keep_daily=7 keep_monthly=all", PolicyFrom::Source)
        );
        let w = c.postgres["main"].pitr_window().unwrap().unwrap();
        assert_eq!(w.to_string(), "30d");
        let (p, from) = policy_for(&c, "postgres", "other", &none).unwrap();
        assert_eq!(from, PolicyFrom::Default);
        assert_eq!(
            p.to_string(),
            "keep_daily=30 keep_weekly=12 keep_monthly=12 keep_yearly=7"
        );
        let (p, from) = policy_for(&c, "redis", "cache", &none).unwrap();
        assert_eq!(
            (p.to_string().as_str(), from),
            ("keep_within=7d", PolicyFrom::Default)
        );
        let flags = Policy {
            keep_last: Some(1),
            keep_daily: Some(2),
            ..Policy::default()
        };
        let (p, from) = policy_for(&c, "files", "/srv", &flags).unwrap();
        assert_eq!(
            (p.to_string().as_str(), from),
            ("keep_last=1 keep_daily=2", PolicyFrom::Kind)
        );
        let (p, from) = policy_for(&c, "stream", "s", &none).unwrap();
        assert_eq!((p.is_empty(), from), (true, PolicyFrom::None));
        let (_, from) = policy_for(&c, "stream", "s", &flags).unwrap();
        assert_eq!(from, PolicyFrom::Flags);
    }

    #[test]
    fn bad_retention_settings_are_usage_errors() {
        assert!(toml::from_str::<FileConfig>("[retention.files]\nkeep_dayly = 1\n").is_err());
        assert!(toml::from_str::<FileConfig>("[retention]\nzone = \"UTC\"\n").is_err());
        let c = cfg("[retention]\ntimezone = \"Nowhere/City\"\n");
        let e = c.retention.time_zone().unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Usage);
        assert!(e.to_string().contains("Nowhere/City"), "{e}");
        let c = cfg("[retention.files]\nkeep_daily = -2\n");
        let e = policy_for(&c, "files", "x", &Policy::default()).unwrap_err();
        assert!(e.to_string().contains("keep_daily = -2"), "{e}");
        let c = cfg("[retention.files]\nkeep_within = \"7 days\"\n");
        assert!(policy_for(&c, "files", "x", &Policy::default()).is_err());
        let c = cfg("[redis.c]\n[redis.c.retention]\npitr_window = \"1d\"\n");
        let e = policy_for(&c, "redis", "c", &Policy::default()).unwrap_err();
        assert!(e.to_string().contains("pitr_window"), "{e}");
    }
}
