//! Replicas as the CLI and the agent run them: the config's `[[replica]]`
//! sections opened, `replicate` run on each, their lag and health.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lifeboat_repo::{
    ObjectKey, Progress, ReplicaStatus, ReplicateOptions, ReplicateReport, Repository,
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
            Ok(Target {
                storage: session.replica_storage(section)?,
                options: ReplicateOptions {
                    delete_delay: section.delete_delay()?,
                    workers: overrides.workers.unwrap_or(8).max(1),
                    bandwidth: overrides.bandwidth.or(section.bandwidth()?),
                },
                section,
            })
        })
        .collect()
}

/// Brings one replica up to date.
pub fn replicate(
    repo: &Repository,
    target: &Target<'_>,
    progress: &dyn Progress,
) -> Result<ReplicateReport> {
    Ok(repo.replicate(&target.storage, &target.options, progress)?)
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
    canary(session.handle(), &target.storage)?;
    let status = repo.replica_status(&target.storage, target.options.delete_delay)?;
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
    rt.block_on(storage.put(&key, body.clone()))?;
    let back = rt.block_on(storage.get(&key))?;
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
