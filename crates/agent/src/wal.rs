//! The WAL archive of each PostgreSQL source as the agent watches it: when
//! the newest segment reached the repository, and how far the server's
//! archiver is behind. Blocking.

use std::collections::BTreeMap;

use jiff::Timestamp;
use lifeboat_repo::Repository;

use crate::plan::Plan;
use crate::state::WalFigures;

/// The WAL figures of every PostgreSQL source of `plan`; what cannot be
/// read (a server down, a data directory not readable here) is left out
/// and logged.
pub fn figures(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    plan: &Plan,
) -> BTreeMap<String, WalFigures> {
    let mut out = BTreeMap::new();
    for src in plan.sources.iter().filter(|s| s.kind == "postgres") {
        let mut f = WalFigures::default();
        if let Some(pgdata) = &src.pgdata {
            match lifeboat_postgres::inspect::newest_archived(repo, pgdata) {
                Ok(t) => f.newest = t.and_then(|t| t.parse::<Timestamp>().ok()),
                Err(e) => {
                    tracing::warn!(source = %src.name, error = %lifeboat_repo::report(&e), "the WAL archive could not be read")
                }
            }
        }
        if let Some(url) = &src.pg_url {
            match lifeboat_postgres::inspect::archiver_state(rt, url) {
                Ok(a) => {
                    f.archiver_lag_seconds = Some(a.lag_seconds);
                    f.archiver_failed = Some(a.failed_count);
                }
                Err(e) => {
                    tracing::warn!(source = %src.name, error = %crate::redact(&lifeboat_repo::report(&e)), "the archiver's state could not be read")
                }
            }
        }
        out.insert(src.name.clone(), f);
    }
    out
}
