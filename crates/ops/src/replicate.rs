//! Replicas as the CLI and the agent run them: the config's `[[replica]]`
//! sections opened, `replicate` run on each, their lag and health.

use std::time::{Duration, Instant};

use lifeboat_storage::{ColdState, ThawTier};

use bytes::Bytes;
use lifeboat_repo::{
    ArchiveSelection, ObjectKey, Progress, ReplicaStatus, ReplicateOptions, ReplicateReport,
    Repository, SnapshotId,
};
use lifeboat_storage::DynStorage;
use serde::Serialize;

use crate::config::ReplicaSection;
use crate::{Error, Result, Session};

/// A replica ready to be brought up to date.
pub struct Target<'a> {
    /// Its section of the config file.
    pub section: &'a ReplicaSection,
    /// Its store.
    pub storage: DynStorage,
    /// How `replicate` copies into it.
    pub options: ReplicateOptions,
}

impl Target<'_> {
    /// True for an archive replica (it selects what it takes).
    pub fn is_archive(&self) -> bool {
        self.section.archive_keep.is_some() || self.section.archive_older_than.is_some()
    }
}

/// What the command line may change of each replica's settings.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Copies in flight (`--parallel`).
    pub workers: Option<usize>,
    /// Bytes a second (`--bandwidth-limit`), over the config's.
    pub bandwidth: Option<u64>,
}

/// The replicas `only` names (all when empty), opened.
pub fn targets<'a>(
    session: &'a Session,
    only: &[String],
    overrides: &Overrides,
) -> Result<Vec<Target<'a>>> {
    let primary = session.repo_url().ok();
    let sections = session.file.replicas(only, primary.as_deref())?;
    if sections.is_empty() {
        return Err(Error::usage(
            "the config file names no replica: add a [[replica]] section with name = \"dr\" and repo = \"s3://BUCKET/PREFIX\" (and its [replica.s3] settings)",
        ));
    }
    sections
        .into_iter()
        .map(|section| {
            if let Some(class) = &section.storage_class {
                if !lifeboat_storage::STORAGE_CLASSES.contains(&class.as_str()) {
                    return Err(Error::usage(format!(
                        "replica {:?}: storage_class = {class:?} is not an S3 storage class; use one of {}",
                        section.name,
                        lifeboat_storage::STORAGE_CLASSES.join(", ")
                    )));
                }
            }
            archive_rule(section)?;
            Ok(Target {
                storage: session.replica_storage(section)?,
                options: ReplicateOptions {
                    delete_delay: section.delete_delay()?,
                    workers: overrides.workers.unwrap_or(16).max(1),
                    bandwidth: overrides.bandwidth.or(section.bandwidth()?),
                    archive: None,
                },
                section,
            })
        })
        .collect()
}

/// The words `archive_keep` takes: the retention rules that keep a
/// snapshot, as `forget` names them.
const KEEP_RULES: &[&str] = &[
    "newest",
    "last",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "within",
    "tag",
    "hold",
    "within-hourly",
    "within-daily",
    "within-weekly",
    "within-monthly",
    "within-yearly",
];

/// An archive replica's rule: the retention rules that select, and the
/// age a snapshot must reach; `None` for a full replica.
fn archive_rule(section: &ReplicaSection) -> Result<Option<(Vec<String>, Duration)>> {
    if section.archive_keep.is_none() && section.archive_older_than.is_none() {
        return Ok(None);
    }
    let keep = section.archive_keep.clone().unwrap_or_default();
    for k in &keep {
        if !KEEP_RULES.contains(&k.as_str()) {
            return Err(Error::usage(format!(
                "replica {:?}: archive_keep names {k:?}, which is not a retention rule; use some of {}",
                section.name,
                KEEP_RULES.join(", ")
            )));
        }
    }
    let age = match &section.archive_older_than {
        None => Duration::ZERO,
        Some(d) => humantime::parse_duration(d).map_err(|e| {
            Error::usage(format!(
                "replica {:?}: archive_older_than = {d:?} is not a duration ({e}); give one such as 90d",
                section.name
            ))
        })?,
    };
    Ok(Some((keep, age)))
}

/// What an archive replica takes now: the snapshots that the retention
/// policies keep by one of `keep`'s rules (every snapshot when `keep` is
/// empty) and that are at least `age` old, and the WAL each selected
/// PostgreSQL base backup needs to restore to its end.
pub fn archive_selection(
    repo: &Repository,
    session: &Session,
    keep: &[String],
    age: Duration,
) -> Result<ArchiveSelection> {
    let report = crate::retention::forget(
        repo,
        &session.file,
        &crate::retention::ForgetOptions {
            dry_run: true,
            ..Default::default()
        },
    )?;
    let now = lifeboat_repo::Timestamp::now();
    let mut snapshots: std::collections::HashSet<SnapshotId> = Default::default();
    for series in &report.series {
        for e in &series.snapshots {
            let old = now.duration_since(e.time).as_secs_f64() >= age.as_secs_f64();
            let kept_by = |r: &String| {
                let rule = r.split([' ', ':']).next().unwrap_or("");
                keep.iter().any(|k| k == rule)
            };
            if old && e.keep && (keep.is_empty() || e.reasons.iter().any(kept_by)) {
                snapshots.insert(e.id);
            }
        }
    }
    let mut named = std::collections::HashSet::new();
    for b in lifeboat_postgres::inspect::backups(repo)? {
        if snapshots.contains(&b.id) {
            named.extend(lifeboat_postgres::inspect::backup_wal_keys(repo, &b)?);
        }
    }
    Ok(ArchiveSelection { snapshots, named })
}

/// Brings one replica up to date (an archive replica: with what its rule
/// selects now).
pub fn replicate(
    session: &Session,
    repo: &Repository,
    target: &Target<'_>,
    progress: &dyn Progress,
) -> Result<ReplicateReport> {
    let mut options = target.options.clone();
    if let Some((keep, age)) = archive_rule(target.section)? {
        options.archive = Some(archive_selection(repo, session, &keep, age)?);
    }
    Ok(repo.replicate(&target.storage, &options, progress)?)
}

/// The newest WAL segment of one cluster on each side.
#[derive(Clone, Debug, Serialize)]
pub struct WalEnd {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// The newest segment in the primary.
    pub primary: Option<String>,
    /// The newest segment in the replica.
    pub replica: Option<String>,
}

/// A replica's state: its lag and the newest WAL on each side.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The replica's name.
    pub name: String,
    /// Its lag and pending deletions.
    #[serde(flatten)]
    pub status: ReplicaStatus,
    /// Per PostgreSQL cluster, the newest WAL segment on each side.
    pub wal: Vec<WalEnd>,
}

/// The status of one replica; an error when its store does not answer
/// (a replica that cannot be reached has no lag to tell).
pub fn status(session: &Session, repo: &Repository, target: &Target<'_>) -> Result<Status> {
    // A store that does not answer in half a minute is down for this
    // check (the store's own retries would wait for minutes).
    session
        .handle()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                canary_async(&target.storage).await
            })
            .await
        })
        .unwrap_or_else(|_| {
            Err(lifeboat_storage::StorageError::new(
                lifeboat_storage::ErrorKind::Transient,
                "put",
                "canary",
                &target.storage.location(),
                "no answer within 30 s",
            ))
        })?;
    let selection = match archive_rule(target.section)? {
        Some((keep, age)) => Some(archive_selection(repo, session, &keep, age)?),
        None => None,
    };
    let status = repo.replica_status(
        &target.storage,
        target.options.delete_delay,
        selection.as_ref(),
    )?;
    let mut wal = Vec::new();
    if status.exists {
        let ours = repo.list_named()?;
        let theirs = repo.replica_named_keys(&target.storage)?;
        let primary = lifeboat_postgres::inspect::newest_segments(repo, &ours)?;
        let replica = lifeboat_postgres::inspect::newest_segments(repo, &theirs)?;
        for (system, newest) in primary {
            let on_replica = replica
                .iter()
                .find(|(s, _)| *s == system)
                .and_then(|(_, n)| n.clone());
            wal.push(WalEnd {
                system_identifier: system,
                primary: newest,
                replica: on_replica,
            });
        }
    }
    Ok(Status {
        name: target.section.name.clone(),
        status,
        wal,
    })
}

/// Writes a few random bytes to `canary/<host>` in `storage` and reads
/// them back: the store answers, and lets this host write. Returns how
/// long it took.
pub fn canary(
    rt: &tokio::runtime::Handle,
    storage: &DynStorage,
) -> std::result::Result<Duration, lifeboat_storage::StorageError> {
    rt.block_on(canary_async(storage))
}

async fn canary_async(
    storage: &DynStorage,
) -> std::result::Result<Duration, lifeboat_storage::StorageError> {
    let started = Instant::now();
    let host = crate::hostname();
    let key = ObjectKey::Canary(&host).to_string();
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let body = Bytes::from(nonce.into_bytes());
    storage.put(&key, body.clone()).await?;
    let back = storage.get(&key).await?;
    if back != body {
        return Err(lifeboat_storage::StorageError::new(
            lifeboat_storage::ErrorKind::Permanent,
            "get",
            &key,
            &storage.location(),
            "the canary read back is not what was written: the store does not keep what it is given",
        ));
    }
    Ok(started.elapsed())
}

/// What `thaw` found or asked for, per object a snapshot needs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThawReport {
    /// The snapshot.
    pub snapshot: String,
    /// The objects a restore of it reads (packs, and a base backup's WAL).
    pub objects: u64,
    /// Readable now: not in a cold class, or restored.
    pub ready: u64,
    /// Restores under way.
    pub thawing: u64,
    /// Cold and not asked for (only with `--status`).
    pub frozen: u64,
    /// Restore requests this run made.
    pub requested: u64,
    /// The storage classes met, and how many objects each.
    pub classes: std::collections::BTreeMap<String, u64>,
}

/// `thaw`: asks the store to restore (for `days`, at `tier`) every cold
/// object the snapshot `spec` needs — its packs and, for a PostgreSQL base
/// backup, its WAL — or, with `status_only`, says how many are ready.
pub fn thaw(
    session: &Session,
    repo: &Repository,
    spec: &str,
    tier: ThawTier,
    days: u32,
    status_only: bool,
) -> Result<ThawReport> {
    let snap = repo.find_snapshot(spec)?;
    let mut keys = repo.snapshot_pack_keys(&snap.snapshot)?;
    if snap.snapshot.source_kind == lifeboat_postgres::SOURCE_KIND {
        if let Ok(wal) = lifeboat_postgres::inspect::backup_wal_keys(repo, &snap) {
            keys.extend(wal);
        }
    }
    let storage = repo.storage().clone();
    let states: Vec<std::result::Result<ColdState, lifeboat_storage::StorageError>> =
        session.handle().block_on(async {
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
            let mut set = tokio::task::JoinSet::new();
            for (i, key) in keys.iter().cloned().enumerate() {
                let (storage, sem) = (storage.clone(), sem.clone());
                set.spawn(async move {
                    let _permit = sem.acquire().await;
                    let state = if status_only {
                        storage.cold_state(&key).await
                    } else {
                        storage.thaw(&key, days, tier).await
                    };
                    (i, state)
                });
            }
            let mut out: Vec<Option<_>> = (0..keys.len()).map(|_| None).collect();
            while let Some(done) = set.join_next().await {
                if let Ok((i, s)) = done {
                    out[i] = Some(s);
                }
            }
            out.into_iter()
                .map(|s| {
                    s.unwrap_or_else(|| {
                        Err(lifeboat_storage::StorageError::new(
                            lifeboat_storage::ErrorKind::Permanent,
                            "thaw",
                            "",
                            &storage.location(),
                            "a task failed",
                        ))
                    })
                })
                .collect()
        });
    let mut report = ThawReport {
        snapshot: snap.id.to_hex(),
        objects: keys.len() as u64,
        ..ThawReport::default()
    };
    for (key, state) in keys.iter().zip(states) {
        let state = match state {
            Ok(s) => s,
            // A base backup's WAL segment the archive does not hold (it
            // took what the backup needs; the rest is not there).
            Err(e) if e.is_not_found() && key.starts_with("named/") => {
                report.objects -= 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match &state {
            ColdState::Hot => report.ready += 1,
            ColdState::Thawed { class, .. } => {
                report.ready += 1;
                *report.classes.entry(class.clone()).or_default() += 1;
            }
            ColdState::Thawing { class } => {
                report.thawing += 1;
                if !status_only {
                    report.requested += 1;
                }
                *report.classes.entry(class.clone()).or_default() += 1;
            }
            ColdState::Frozen { class } => {
                report.frozen += 1;
                *report.classes.entry(class.clone()).or_default() += 1;
            }
        }
    }
    Ok(report)
}
