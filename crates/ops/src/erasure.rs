//! The erasure ledger as operations: what a restore of a source re-applies
//! (its requests and its `erase_sql`), re-applying it on a server, and the
//! compliance view — each request, and the backups still holding its
//! subject with the date the retention policy lets each go by.

use std::collections::BTreeMap;
use std::path::Path;

use lifeboat_postgres::erase::Erased;
use lifeboat_repo::retention::{Policy, Within};
use lifeboat_repo::{ErasureRequest, Repository, SnapshotId, Timestamp};
use serde::Serialize;

use crate::config::FileConfig;
use crate::{Error, Result};

/// What a restore of one source re-applies.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// The source.
    pub source: String,
    /// Its subjects, each once, oldest request first.
    pub subjects: Vec<String>,
    /// Its `erase_sql`, split into statements.
    pub statements: Vec<String>,
    /// Its `erase_database`.
    pub database: Option<String>,
    /// Its `pg_url` (for the database, when `erase_database` is not set).
    pub pg_url: Option<String>,
}

impl Ledger {
    /// The database the statements run in: `erase_database`, else the
    /// one of `pg_url`, else `postgres`.
    pub fn database(&self) -> String {
        self.database
            .clone()
            .or_else(|| {
                self.pg_url
                    .as_deref()
                    .and_then(|u| lifeboat_postgres::session::parse_conninfo(u).ok())
                    .and_then(|c| c.get_dbname().map(str::to_string))
            })
            .unwrap_or_else(|| "postgres".into())
    }
}

/// The ledger a restore of `source` must re-apply; `None` when it holds no
/// request for it. Requests without an `erase_sql` to carry them out are
/// refused before anything is restored: the person would come back.
pub fn ledger(repo: &Repository, file: &FileConfig, source: &str) -> Result<Option<Ledger>> {
    let subjects = repo.erasure_subjects(source)?;
    if subjects.is_empty() {
        return Ok(None);
    }
    let src = file.postgres.get(source);
    let statements = src
        .and_then(|s| s.erase_sql.as_ref())
        .map(|s| s.statements())
        .unwrap_or_default();
    if statements.is_empty() {
        return Err(Error::usage(format!(
            "the erasure ledger holds {} request(s) for source {source:?}, but [postgres.{source}] has no erase_sql to carry them out: set it (the SQL that erases one subject, given as $1), or restore with --skip-erasures (the audit log records it) and erase by hand",
            subjects.len()
        )));
    }
    Ok(Some(Ledger {
        source: source.to_string(),
        subjects,
        statements,
        database: src.and_then(|s| s.erase_database.clone()),
        pg_url: src.and_then(|s| s.pg_url.clone()),
    }))
}

/// Runs the ledger on the server `cfg` reaches.
pub fn apply(
    rt: &tokio::runtime::Handle,
    ledger: &Ledger,
    cfg: &tokio_postgres::Config,
) -> Result<Erased> {
    Ok(lifeboat_postgres::erase::apply(
        rt,
        cfg,
        &ledger.statements,
        &ledger.subjects,
    )?)
}

/// A connection to a server started closed to clients
/// ([`lifeboat_postgres::server::LocalServer::start_private`]): its socket
/// directory and port, as `user`, in `database`.
pub fn private_config(
    socket_dir: &Path,
    port: u16,
    user: &str,
    database: &str,
) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(socket_dir)
        .port(port)
        .user(user)
        .dbname(database)
        .application_name("lifeboat erasure")
        .connect_timeout(std::time::Duration::from_secs(10));
    cfg
}

/// One backup that still holds a subject.
#[derive(Clone, Debug, Serialize)]
pub struct Holding {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its kind: `postgres` (base backup) or `pg_dump`.
    pub kind: String,
    /// When it was taken.
    pub time: Timestamp,
    /// The latest it can be kept under its series' policy, backups going on
    /// as scheduled; `None`: held, or kept by a count of backups only.
    pub expires_by: Option<Timestamp>,
    /// Why it may stay longer (`held: case 42`, `keep_last 7`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One request and the backups still holding its subject.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    /// The request.
    pub request: ErasureRequest,
    /// Backups of its source taken before it.
    pub holding: Vec<Holding>,
    /// When the last of them goes, if every one has a date.
    pub gone_from_backups_by: Option<Timestamp>,
}

/// `lifeboat erasure report`: every request, the backups holding its
/// subject and when each goes.
pub fn report(repo: &Repository, file: &FileConfig) -> Result<Vec<RequestView>> {
    let requests = repo.erasures()?;
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let summaries = repo.snapshot_summaries()?;
    let holds: BTreeMap<SnapshotId, String> = repo
        .holds()?
        .into_iter()
        .filter(|h| h.is_active(Timestamp::now()))
        .map(|h| (h.snapshot, h.reason))
        .collect();
    let mut out = Vec::new();
    for request in requests {
        let mut holding = Vec::new();
        for s in &summaries {
            if s.source_name != request.source
                || !matches!(s.source_kind.as_str(), "postgres" | "pg_dump")
                || s.start_time >= request.requested
            {
                continue;
            }
            let (policy, _) = crate::retention::policy_for(
                file,
                &s.source_kind,
                &s.source_name,
                &Policy::default(),
            )?;
            let (expires_by, note) = if let Some(reason) = holds.get(&s.id) {
                (None, Some(format!("held: {reason}")))
            } else {
                match horizon(&policy, s.start_time) {
                    Some(t) => (Some(t), None),
                    None if policy.keep_last.is_some() => (
                        None,
                        Some(format!(
                            "kept by keep_last {}: goes after that many newer backups",
                            policy.keep_last.unwrap_or(0)
                        )),
                    ),
                    None => (
                        None,
                        Some("no retention policy: kept until forgotten".into()),
                    ),
                }
            };
            holding.push(Holding {
                snapshot: s.id,
                kind: s.source_kind.clone(),
                time: s.start_time,
                expires_by,
                note,
            });
        }
        let gone_from_backups_by = if holding.iter().all(|h| h.expires_by.is_some()) {
            holding.iter().filter_map(|h| h.expires_by).max()
        } else {
            None
        };
        out.push(RequestView {
            request,
            holding,
            gone_from_backups_by,
        });
    }
    Ok(out)
}

/// The latest a snapshot taken at `t` is kept by `policy`'s time rules
/// (each rule's span from `t`); `None` when only `keep_last` keeps it.
fn horizon(policy: &Policy, t: Timestamp) -> Option<Timestamp> {
    let add = |span: jiff::Span| -> Option<Timestamp> {
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .checked_add(span)
            .ok()
            .map(|z| z.timestamp())
    };
    let within = |w: &Option<Within>| w.as_ref().and_then(|w| add(w.span()));
    let count = |n: Option<u32>, unit: jiff::Unit| -> Option<Timestamp> {
        let n = i64::from(n.filter(|n| *n > 0)?);
        let span = match unit {
            jiff::Unit::Hour => jiff::Span::new().hours(n),
            jiff::Unit::Day => jiff::Span::new().days(n),
            jiff::Unit::Week => jiff::Span::new().weeks(n),
            jiff::Unit::Month => jiff::Span::new().months(n),
            _ => jiff::Span::new().years(n),
        };
        add(span)
    };
    [
        within(&policy.keep_within),
        within(&policy.keep_within_hourly),
        within(&policy.keep_within_daily),
        within(&policy.keep_within_weekly),
        within(&policy.keep_within_monthly),
        within(&policy.keep_within_yearly),
        count(policy.keep_hourly, jiff::Unit::Hour),
        count(policy.keep_daily, jiff::Unit::Day),
        count(policy.keep_weekly, jiff::Unit::Week),
        count(policy.keep_monthly, jiff::Unit::Month),
        count(policy.keep_yearly, jiff::Unit::Year),
    ]
    .into_iter()
    .flatten()
    .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_goes_by_its_longest_rule() {
        let t: Timestamp = "2026-01-31T00:00:00Z".parse().unwrap();
        let policy = Policy {
            keep_daily: Some(7),
            keep_monthly: Some(84),
            keep_within: Some("90d".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(
            horizon(&policy, t),
            Some("2033-01-31T00:00:00Z".parse().unwrap())
        );
        let last_only = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        assert_eq!(horizon(&last_only, t), None);
    }
}
