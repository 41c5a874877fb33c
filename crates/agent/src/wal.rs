//! The WAL archive of each PostgreSQL source as the agent watches it: when
//! the newest segment reached the repository, and how far the server's
//! archiver is behind. Blocking.

use std::collections::BTreeMap;

use jiff::Timestamp;
use lifeboat_repo::Repository;

use crate::plan::{Plan, SourcePlan};
use crate::state::WalFigures;

/// The WAL figures of every PostgreSQL source of `plan`, reading the
/// archive in this process (a one-shot command); what cannot be read (a
/// server down, a data directory not readable here) is left out and
/// logged.
pub fn figures(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    plan: &Plan,
) -> BTreeMap<String, WalFigures> {
    figures_with(rt, plan, |src| {
        let pgdata = src.pgdata.as_ref()?;
        match lifeboat_postgres::inspect::newest_archived(repo, pgdata) {
            // Nothing ever archived: time 0, so the stale-archive alert fires.
            Ok(t) => Some(
                t.and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            ),
            Err(e) => {
                tracing::warn!(source = %src.name, error = %lifeboat_repo::report(&e), "the WAL archive could not be read");
                None
            }
        }
    })
}

/// When the newest WAL segment of each cluster reached the repository, by
/// system identifier, from the JSON of `lifeboat pg info` (the agent runs
/// it as a child: reading every base backup's snapshot is a burst of memory
/// a process that runs for months should not keep).
pub fn newest_by_system(pg_info: &serde_json::Value) -> BTreeMap<String, Timestamp> {
    let mut out = BTreeMap::new();
    for a in pg_info["archives"].as_array().into_iter().flatten() {
        let Some(system) = a["system_identifier"].as_str() else {
            continue;
        };
        let newest = a["timelines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["last_stored"].as_str()?.parse::<Timestamp>().ok())
            .max();
        if let Some(t) = newest {
            out.insert(system.to_string(), t);
        }
    }
    out
}

/// The system identifier of the cluster in `pgdata` (from pg_control).
pub fn system_of(pgdata: &std::path::Path) -> Option<String> {
    lifeboat_postgres::archive::system_identifier(pgdata).ok()
}

/// The WAL figures of every PostgreSQL source of `plan`: the newest
/// segment's time from `newest`, the archiver's state asked of the server.
pub fn figures_with(
    rt: &tokio::runtime::Handle,
    plan: &Plan,
    newest: impl Fn(&SourcePlan) -> Option<Timestamp>,
) -> BTreeMap<String, WalFigures> {
    let mut out = BTreeMap::new();
    for src in plan.sources.iter().filter(|s| s.kind == "postgres") {
        let mut f = WalFigures {
            newest: newest(src),
            ..WalFigures::default()
        };
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_newest_segment_per_cluster_comes_from_pg_info() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"archives":[{"system_identifier":"77","timelines":[
                {"timeline":1,"last_stored":"2026-11-28T10:00:00Z"},
                {"timeline":2,"last_stored":"2026-11-28T11:00:00Z"},
                {"timeline":3,"last_stored":null}]}]}"#,
        )
        .unwrap();
        let m = super::newest_by_system(&v);
        assert_eq!(m["77"].to_string(), "2026-11-28T11:00:00Z");
    }
}
