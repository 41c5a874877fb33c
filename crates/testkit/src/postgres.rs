//! A throwaway PostgreSQL cluster for tests: a sandbox [`Cluster`] (see
//! `lifeboat_scenarios::sandbox::pg`) in a temporary directory (data
//! directory and Unix socket), stopped (immediate) when dropped. As root,
//! PostgreSQL runs as the `postgres` OS user.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use lifeboat_postgres::server::prepare_dir;
pub use lifeboat_postgres::server::{as_owner, bindir, give_to_owner, LocalServer};
pub use lifeboat_scenarios::sandbox::pg::Cluster;

/// A running cluster in its own temporary directory.
pub struct PgCluster {
    server: Cluster,
    /// Holds the data directory and the socket directory. Declared after the
    /// server so the server stops before the directory goes.
    pub dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates a cluster (with data checksums, fsync off) whose
    /// `postgresql.conf` gets `settings` appended, and starts it.
    pub fn start(settings: &str) -> Result<PgCluster, String> {
        let bindir = bindir().map_err(|e| e.to_string())?;
        PgCluster::start_in(&bindir, settings, &[])
    }

    /// [`PgCluster::start`] with the server programs in `bindir` and more
    /// `initdb` arguments.
    pub fn start_in(
        bindir: &Path,
        settings: &str,
        initdb_args: &[&str],
    ) -> Result<PgCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        prepare_dir(dir.path()).map_err(|e| e.to_string())?;
        let pgdata = dir.path().join("data");
        let server = Cluster::init_in(
            bindir,
            &pgdata,
            dir.path(),
            &format!("fsync = off\n{settings}"),
            initdb_args,
        )
        .map_err(|e| e.to_string())?;
        let mut c = PgCluster { server, dir };
        c.start_server()?;
        Ok(c)
    }

    /// A cluster on an existing data directory (a restore), with its port and
    /// sockets moved to fresh ones, not started.
    pub fn adopt(dir: tempfile::TempDir, pgdata: PathBuf) -> Result<PgCluster, String> {
        PgCluster::adopt_in(None, dir, pgdata)
    }

    /// [`PgCluster::adopt`] with the server programs in `bindir`.
    pub fn adopt_in(
        bindir: Option<&Path>,
        dir: tempfile::TempDir,
        pgdata: PathBuf,
    ) -> Result<PgCluster, String> {
        let server = Cluster::adopt_in(bindir, &pgdata, dir.path()).map_err(|e| e.to_string())?;
        give_to_owner(dir.path()).map_err(|e| e.to_string())?;
        Ok(PgCluster { server, dir })
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    pub fn start_server(&mut self) -> Result<(), String> {
        self.server.start().map_err(|e| e.to_string())
    }

    /// Runs SQL with psql (tuples only, unaligned) and returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.server.psql(db, sql).map_err(|e| e.to_string())
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) -> Result<(), String> {
        self.server.stop().map_err(|e| e.to_string())
    }
}

impl Deref for PgCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.server
    }
}

impl DerefMut for PgCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.server
    }
}
