//! Logical backups: `pg_dump` streamed into the repository, and
//! `pg_restore` fed back from it.
//!
//! A dump snapshot (`source_kind = "pg_dump"`) holds, per database, either
//! `databases/<name>.dump` (custom format, streamed from `pg_dump`'s standard
//! output with no temporary file) or `databases/<name>/…` (directory format,
//! for `--jobs`), plus `globals.sql` from `pg_dumpall --globals-only`. Dumps
//! are written uncompressed (`--compress=0`) so that the repository's
//! content-defined chunks find what two dumps share and zstd compresses the
//! rest.
//!
//! - `programs`: the client programs of the right version, with the
//!   connection's settings; `pipes`: read-ahead between pg_dump and the
//!   repository; `backup`: [`dump()`]; `restore`: [`restore_dump`].
//!   Running the programs is `crate::process`'s.

mod backup;
mod pipes;
mod programs;
mod restore;

use lifeboat_repo::{Repository, SnapshotEntry};

pub use backup::dump;
pub use programs::client_program;
pub use restore::restore_dump;

use crate::error::{PgError, Result};

/// The snapshot source kind of logical dumps.
pub const DUMP_KIND: &str = "pg_dump";
/// The item holding roles and tablespaces.
pub const GLOBALS: &str = "globals.sql";

/// What to dump.
#[derive(Clone, Debug, Default)]
pub struct DumpOptions {
    /// How to connect (libpq key=value or URL); its database is ignored.
    pub conninfo: String,
    /// The databases to dump; empty: every database that allows connections
    /// and is not a template.
    pub databases: Vec<String>,
    /// Dump each database in directory format with this many parallel jobs
    /// (through a temporary directory); `None`: custom format, streamed.
    pub jobs: Option<u32>,
    /// The source's name in the snapshot (default: the connection without
    /// its password).
    pub source_name: String,
    /// Host name recorded.
    pub hostname: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention), as restic's `backup --time`.
    pub time: Option<lifeboat_repo::Timestamp>,
}

/// What to restore from a dump snapshot, and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreDumpOptions {
    /// The server and database to restore into (with `create`: the database
    /// to connect to first).
    pub conninfo: String,
    /// The snapshot's database to restore (required when it holds several).
    pub database: Option<String>,
    /// Restore only these tables.
    pub tables: Vec<String>,
    /// Parallel `pg_restore` jobs (the dump goes through a temporary file).
    pub jobs: Option<u32>,
    /// Create the database under its own name (`pg_restore --create`).
    pub create: bool,
    /// Drop objects before recreating them (`--clean --if-exists`).
    pub clean: bool,
    /// Apply roles and tablespaces (`globals.sql`, through psql) first.
    pub globals: bool,
    /// Leave tablespaces out: no `CREATE TABLESPACE` of the globals, and
    /// `pg_restore --no-tablespaces` (everything in the default one) — a
    /// drill's sandbox must not write where the source's tablespaces are.
    pub no_tablespaces: bool,
}

/// What a restore of a dump did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreDumpReport {
    /// The database of the snapshot restored.
    pub database: String,
    /// The source the dump was taken from (its config name): whose erasure
    /// ledger applies.
    pub source: String,
    /// Bytes of dump fed to pg_restore.
    pub bytes: u64,
    /// Whether globals were applied.
    pub globals: bool,
    /// What psql said while applying globals (e.g. roles that already exist).
    pub globals_notices: Vec<String>,
}

/// The major version of a `server_version_num`.
fn major_of(version_num: u32) -> u32 {
    version_num / 10_000
}

/// The dump snapshot `spec` names: an id, a unique prefix, or `latest` (the
/// newest dump snapshot).
pub fn find_dump(repo: &Repository, spec: &str) -> Result<SnapshotEntry> {
    repo.find_snapshot_of(spec, DUMP_KIND)?.ok_or_else(|| {
        PgError::Refused(
            "the repository holds no pg dump yet; take one with `lifeboat pg dump`".into(),
        )
    })
}
