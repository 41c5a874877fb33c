//! PostgreSQL operations: where a source's data directory and connection
//! come from, and starting a restored server until its recovery ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_postgres::erase::Erased;
use lifeboat_postgres::server::{LocalServer, RecoveryAction};

use crate::erasure::Ledger;

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
    /// From the start of the server to the end of recovery (and the
    /// erasure ledger re-applied, and the server opened to clients).
    pub duration_ms: u64,
    /// The erasure ledger re-applied before clients could connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased: Option<Erased>,
    /// Why a ledger was not re-applied (the server does not end recovery
    /// writable), and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure_pending: Option<String>,
}

/// Starts the server of a restored data directory (as its owner) and waits
/// until recovery ends the way `action` says, then leaves it running.
///
/// With a `ledger` and a recovery that promotes, the server is first
/// started closed to clients (no TCP, its socket in a private directory),
/// the ledger re-applied through that socket, then stopped and started as
/// configured: no client sees an erased person. If the ledger fails, the
/// server is stopped, never opened.
pub fn start_restored(
    rt: &tokio::runtime::Handle,
    pgdata: &Path,
    action: RecoveryAction,
    timeout: Duration,
    ledger: Option<&Ledger>,
) -> Result<Recovered> {
    let began = Instant::now();
    let mut server = LocalServer::existing(pgdata)?;
    let mut erased = None;
    let mut erasure_pending = None;
    let state = match ledger {
        Some(ledger) if action == RecoveryAction::Promote => {
            let private = tempfile::Builder::new()
                .prefix("lifeboat-private-")
                .tempdir()
                .map_err(|e| Error::io("create a private socket directory", e))?;
            let hba = private.path().join("pg_hba.conf");
            std::fs::write(&hba, "local all all trust\n")
                .map_err(|e| Error::io(format!("write {}", hba.display()), e))?;
            lifeboat_postgres::server::private_dir_for(private.path(), &server.user)?;
            lifeboat_postgres::server::give_file_to(&hba, &server.user)?;
            server.start_private(private.path(), &hba)?;
            let state = server.wait_for_recovery(action, timeout)?;
            // As the superuser the data directory's owner made (initdb's
            // default), else `postgres`.
            let apply = |user: &str| {
                let cfg = crate::erasure::private_config(
                    private.path(),
                    server.port,
                    user,
                    &ledger.database(),
                );
                crate::erasure::apply(rt, ledger, &cfg)
            };
            let result = match apply(&server.superuser) {
                Err(e)
                    if server.superuser != "postgres"
                        && lifeboat_repo::report(&e)
                            .contains(&format!("role \"{}\" does not exist", server.superuser)) =>
                {
                    apply("postgres")
                }
                r => r,
            };
            match result {
                Ok(e) => erased = Some(e),
                Err(e) => {
                    let _ = server.stop();
                    return Err(Error::Failed(format!(
                        "the erasure ledger of source {:?} could not be re-applied, so the restored server was stopped before any client could connect: {}. Fix erase_sql, then restore again with --start (or start it by hand and run `lifeboat erasure apply --source {}` before clients use it)",
                        ledger.source,
                        lifeboat_repo::report(&e),
                        ledger.source
                    )));
                }
            }
            server.stop()?;
            server.start()?;
            state
        }
        _ => {
            if action == RecoveryAction::Shutdown {
                server.start_no_wait()?;
            } else {
                server.start()?;
            }
            let state = server.wait_for_recovery(action, timeout)?;
            if let Some(ledger) = ledger {
                erasure_pending = Some(format!(
                    "the erasure ledger ({} subject(s) of source {:?}) was not re-applied: the server ends recovery {state}, not writable. Once it is promoted, run `lifeboat erasure apply --source {} --pg-url URL` before clients use it",
                    ledger.subjects.len(),
                    ledger.source,
                    ledger.source
                ));
            }
            state
        }
    };
    let duration_ms = began.elapsed().as_millis() as u64;
    server.detach();
    Ok(Recovered {
        state,
        duration_ms,
        erased,
        erasure_pending,
    })
}
