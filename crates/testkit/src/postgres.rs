//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, a free
//! port, Unix sockets in the same directory, stopped (immediate) when dropped.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every
//! PostgreSQL program runs as the `postgres` OS user (through `setpriv`) and
//! the cluster's directory is handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::garage::free_port;

/// The directory of the PostgreSQL server programs: `pg_config --bindir`,
/// else the newest `/usr/lib/postgresql/*/bin`.
pub fn bindir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server found (pg_config, /usr/lib/postgresql: {e}); install postgresql"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no PostgreSQL server found in /usr/lib/postgresql/*/bin".into())
}

fn is_root() -> bool {
    // The effective uid, without unsafe code: /proc/self/status "Uid:" line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32), String> {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .map_err(|e| e.to_string())?;
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            "there is no `postgres` OS user to run PostgreSQL as (PostgreSQL refuses root)"
                .to_string()
        })?;
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .map_err(|e| e.to_string())?;
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "no group for the postgres user".to_string())?;
    Ok((uid, gid))
}

/// A command that runs as the cluster's owner: `postgres` when we are root.
pub fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Hands `path` (recursively) to the cluster's owner when running as root, so
/// PostgreSQL and the lifeboat it runs can use it.
pub fn give_to_owner(path: &Path) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = postgres_ids()?;
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("chown {} failed", path.display()))
}

/// A running cluster.
pub struct PgCluster {
    /// Holds the data directory and the socket directory.
    pub dir: tempfile::TempDir,
    /// The data directory.
    pub pgdata: PathBuf,
    /// The port.
    pub port: u16,
    bindir: PathBuf,
    running: bool,
}

fn check(out: Output, what: &str) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl PgCluster {
    /// Creates a cluster (with data checksums) whose `postgresql.conf` gets
    /// `settings` appended, and starts it.
    pub fn start(settings: &str) -> Result<PgCluster, String> {
        let bindir = bindir()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        give_to_owner(dir.path())?;
        let pgdata = dir.path().join("data");
        check(
            as_owner(&bindir.join("initdb"))
                .args(["-D"])
                .arg(&pgdata)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-k",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ])
                .output()
                .map_err(|e| e.to_string())?,
            "initdb",
        )?;
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_wal_senders = 2\nwal_level = replica\n{settings}\n",
            dir.path().display()
        );
        let conf_path = pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).map_err(|e| e.to_string())?;
        let mut c = PgCluster {
            dir,
            pgdata,
            port,
            bindir,
            running: false,
        };
        c.start_server()?;
        Ok(c)
    }

    /// A cluster on an existing data directory (a restore), with its port and
    /// sockets moved to fresh ones, not started.
    pub fn adopt(dir: tempfile::TempDir, pgdata: PathBuf) -> Result<PgCluster, String> {
        let port = free_port();
        let conf_path = pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        text.push_str(&format!(
            "\nport = {port}\nunix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        std::fs::write(&conf_path, text).map_err(|e| e.to_string())?;
        give_to_owner(dir.path())?;
        Ok(PgCluster {
            dir,
            pgdata,
            port,
            bindir: bindir()?,
            running: false,
        })
    }

    /// `pg_ctl start`, waiting until the server accepts connections (or, for a
    /// recovering server that shuts down at its target, until it exits).
    pub fn start_server(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let out = as_owner(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"])
            .output()
            .map_err(|e| e.to_string())?;
        self.running = true;
        check(out, "pg_ctl start").map_err(|e| format!("{e}\nserver log:\n{}", self.log()))?;
        Ok(())
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A libpq connection string for database `db`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    /// Runs SQL with psql (tuples only, unaligned) and returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = as_owner(&self.bindir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo(db))
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        check(out, &format!("psql {sql:?}")).map(|s| s.trim().to_string())
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let out = as_owner(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-w", "-m", "fast", "stop"])
            .output()
            .map_err(|e| e.to_string())?;
        check(out, "pg_ctl stop").map(|_| ())
    }

    /// The directory of the server programs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_owner(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}
