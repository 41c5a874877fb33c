//! A throwaway PostgreSQL cluster: made with `initdb` or adopted from a
//! restored data directory, listening on a Unix socket only, as the
//! `postgres` OS user when root.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use lifeboat_postgres::server::{as_user, bindir, server_user, LocalServer};
use lifeboat_postgres::{PgError, Result};

fn sandbox_err(msg: impl Into<String>) -> PgError {
    PgError::Server(msg.into())
}

fn append_conf(pgdata: &Path, text: &str) -> Result<()> {
    let path = pgdata.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).map_err(|e| PgError::Io {
        op: "read",
        path: path.display().to_string(),
        source: e,
    })?;
    conf.push('\n');
    conf.push_str(text);
    conf.push('\n');
    std::fs::write(&path, conf).map_err(|e| PgError::Io {
        op: "write",
        path: path.display().to_string(),
        source: e,
    })
}

fn port() -> Result<u16> {
    super::free_port().map_err(|e| sandbox_err(format!("find a free port: {e}")))
}

/// A throwaway cluster; derefs to the [`LocalServer`] it runs as, and is
/// stopped (immediately) when dropped if it was started.
#[derive(Debug)]
pub struct Cluster {
    server: LocalServer,
}

impl Deref for Cluster {
    type Target = LocalServer;
    fn deref(&self) -> &LocalServer {
        &self.server
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalServer {
        &mut self.server
    }
}

impl Cluster {
    /// Creates a cluster with `initdb` (data checksums on, trust auth for
    /// local connections, superuser `postgres`) in `pgdata`, listening on a
    /// socket in `socket_dir` on a free port, with `settings` appended to
    /// `postgresql.conf`. Not started. `socket_dir` must exist and be
    /// writable by the server's OS user.
    pub fn init(pgdata: &Path, socket_dir: &Path, settings: &str) -> Result<Cluster> {
        Cluster::init_in(&bindir()?, pgdata, socket_dir, settings, &[])
    }

    /// [`Cluster::init`] with the server programs in `bindir` and more
    /// `initdb` arguments (e.g. `-X WALDIR`).
    pub fn init_in(
        bindir: &Path,
        pgdata: &Path,
        socket_dir: &Path,
        settings: &str,
        initdb_args: &[&str],
    ) -> Result<Cluster> {
        let out = as_user(&server_user(), &bindir.join("initdb"))
            .arg("-D")
            .arg(pgdata)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-k",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .args(initdb_args)
            .output()
            .map_err(|e| sandbox_err(format!("run initdb: {e}")))?;
        if !out.status.success() {
            return Err(sandbox_err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let port = port()?;
        append_conf(
            pgdata,
            &format!(
                "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nmax_wal_senders = 2\nwal_level = replica\n{settings}",
                socket_dir.display()
            ),
        )?;
        let mut server = LocalServer::existing_in(Some(bindir), pgdata)?;
        server.listen_on(socket_dir, port, "postgres");
        Ok(Cluster { server })
    }

    /// A cluster on an existing data directory (a restore), moved to a free
    /// port and a socket in `socket_dir`, listening on no TCP address. Not
    /// started.
    pub fn adopt(pgdata: &Path, socket_dir: &Path) -> Result<Cluster> {
        Cluster::adopt_in(None, pgdata, socket_dir)
    }

    /// [`Cluster::adopt`] with the server programs in `bindir` (else those
    /// that match the data directory's version).
    pub fn adopt_in(bindir: Option<&Path>, pgdata: &Path, socket_dir: &Path) -> Result<Cluster> {
        Cluster::adopt_with(bindir, pgdata, socket_dir, "")
    }

    /// [`Cluster::adopt_in`] with `settings` appended to `postgresql.conf`
    /// too (a drill's own `hba_file`).
    pub fn adopt_with(
        bindir: Option<&Path>,
        pgdata: &Path,
        socket_dir: &Path,
        settings: &str,
    ) -> Result<Cluster> {
        let port = port()?;
        append_conf(
            pgdata,
            &format!(
                "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n{settings}",
                socket_dir.display()
            ),
        )?;
        let mut server = LocalServer::existing_in(bindir, pgdata)?;
        server.listen_on(socket_dir, port, "postgres");
        Ok(Cluster { server })
    }

    /// See [`wait_archived`].
    pub fn wait_archived(&self, segment: &str, timeout: Duration) -> Result<()> {
        wait_archived(&self.server, segment, timeout)
    }

    /// See [`archive_now`].
    pub fn archive_now(&self, timeout: Duration) -> Result<String> {
        archive_now(&self.server, timeout)
    }

    /// The server this cluster runs as.
    pub fn into_server(self) -> LocalServer {
        self.server
    }
}

/// Waits until `server`'s archiver has stored `segment` (or a later one), as
/// `pg_stat_archiver` reports; fails at `timeout` naming the last archived
/// and failed files and the log's end.
pub fn wait_archived(server: &LocalServer, segment: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = server.psql(
            "postgres",
            "select coalesce(last_archived_wal, '') || '|' || coalesce(last_failed_wal, '') from pg_stat_archiver",
        )?;
        let (ok, failed) = last.split_once('|').unwrap_or((&last, ""));
        if ok >= segment {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(sandbox_err(format!(
                "WAL segment {segment} was not archived within {} s (last archived {ok:?}, last failed {failed:?}); the server log ends with:\n{}",
                timeout.as_secs(),
                server.log_tail(10)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forces a WAL switch on `server` and waits until the segment that held
/// everything written so far is archived; returns its name.
pub fn archive_now(server: &LocalServer, timeout: Duration) -> Result<String> {
    let segment = server.psql("postgres", "select pg_walfile_name(pg_switch_wal())")?;
    wait_archived(server, &segment, timeout)?;
    Ok(segment)
}
