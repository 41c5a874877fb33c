//! PostgreSQL operations: where a source's data directory and connection
//! come from, and starting a restored server until its recovery ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_postgres::server::{LocalServer, RecoveryAction};

use crate::config::FileConfig;
use crate::{Error, Result};

/// A PostgreSQL source, its settings settled.
#[derive(Clone, Debug)]
pub struct PgSource {
    /// The data directory (empty when the operation needs none).
    pub pgdata: PathBuf,
    /// The connection string.
    pub pg_url: String,
    /// Seconds `pg backup` waits for its WAL, when the config file says.
    pub archive_timeout: Option<u64>,
}

/// The data directory, connection string and WAL timeout: flags (and their
/// environment variables) over the config file's `[postgres.NAME]`.
pub fn resolve_source(
    file: &FileConfig,
    source: Option<&str>,
    pgdata: Option<PathBuf>,
    pg_url: Option<String>,
    need_pgdata: bool,
) -> Result<PgSource> {
    let named = source.map(|n| file.pg_source(n)).transpose()?;
    let pgdata = pgdata.or_else(|| named.and_then(|s| s.pgdata.clone()));
    let pg_url = pg_url.or_else(|| named.and_then(|s| s.pg_url.clone()));
    let what = match source {
        Some(n) => format!("the config file's [postgres.{n}] has none"),
        None => "or name a source from the config file".to_string(),
    };
    let pgdata = match pgdata {
        Some(p) => p,
        None if !need_pgdata => PathBuf::new(),
        None => {
            return Err(Error::usage(format!(
                "give the data directory with --pgdata (or PGDATA); {what}"
            )))
        }
    };
    let Some(pg_url) = pg_url else {
        return Err(Error::usage(format!(
            "give the connection with --pg-url (or LIFEBOAT_PG_URL); {what}"
        )));
    };
    Ok(PgSource {
        pgdata,
        pg_url,
        archive_timeout: named.and_then(|s| s.archive_timeout),
    })
}

/// A restored server started and recovered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Recovered {
    /// How recovery ended: "promoted", "paused at the target", …
    pub state: String,
    /// From the start of the server to the end of recovery.
    pub duration_ms: u64,
}

/// Starts the server of a restored data directory (as its owner) and waits
/// until recovery ends the way `action` says, then leaves it running.
pub fn start_restored(
    pgdata: &Path,
    action: RecoveryAction,
    timeout: Duration,
) -> Result<Recovered> {
    let began = Instant::now();
    let mut server = LocalServer::existing(pgdata)?;
    if action == RecoveryAction::Shutdown {
        server.start_no_wait()?;
    } else {
        server.start()?;
    }
    let state = server.wait_for_recovery(action, timeout)?;
    let duration_ms = began.elapsed().as_millis() as u64;
    server.detach();
    Ok(Recovered { state, duration_ms })
}
