//! Running a PostgreSQL server on this machine with the distribution's
//! programs: `initdb` for a throwaway cluster (`lifeboat demo`, tests),
//! `pg_ctl` to start a restored data directory and wait until recovery has
//! reached its target (`pg restore --start`).
//!
//! PostgreSQL refuses to run as root: when lifeboat runs as root, every
//! PostgreSQL program runs as the data directory's owner (the `postgres` OS
//! user for new clusters) through `setpriv`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{PgError, Result};
use crate::process;

fn server_err(msg: impl Into<String>) -> PgError {
    PgError::Server(msg.into())
}

/// The environment variable that names the server programs' directory,
/// for installations outside the distribution's layout.
pub const BINDIR_ENV: &str = "LIFEBOAT_PG_BINDIR";

/// Server program directories found on this machine, by major version:
/// `pg_config --bindir`, Debian's `/usr/lib/postgresql/N/bin` and the PGDG
/// RPMs' `/usr/pgsql-N/bin`.
pub(crate) fn installed() -> Vec<(u32, PathBuf)> {
    installed_with("initdb")
}

/// Those of the same directories that hold `program` (a client-only
/// package has pg_dump there, but no initdb).
pub(crate) fn installed_with(program: &str) -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    // One call: pg_config prints what each option asks for, a line each.
    if let Ok(out) = Command::new("pg_config")
        .args(["--version", "--bindir"])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        // "PostgreSQL 15.18 (Debian …)"
        let major = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok());
        let dir = lines.next().map(|l| PathBuf::from(l.trim()));
        if let (Some(major), Some(dir)) = (major, dir) {
            if dir.join(program).exists() {
                found.push((major, dir));
            }
        }
    }
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(major) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join(program).exists() && !found.iter().any(|(_, d)| d == &bin) {
                found.push((major, bin));
            }
        }
    }
    found.sort();
    found
}

/// The directory of the PostgreSQL server programs for new clusters:
/// `$LIFEBOAT_PG_BINDIR`, else the newest installed version.
pub fn bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    installed().pop().map(|(_, b)| b).ok_or_else(|| {
        server_err("no PostgreSQL server programs found (no pg_config, nothing in /usr/lib/postgresql/*/bin or /usr/pgsql-*/bin); install them, e.g. `apt-get install postgresql`, or name their directory in LIFEBOAT_PG_BINDIR")
    })
}

/// The major version a data directory was made by (its `PG_VERSION`).
pub fn data_dir_major(pgdata: &Path) -> Result<u32> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| PgError::io("read", &path, e))?;
    text.trim().parse().map_err(|_| {
        PgError::Refused(format!(
            "{} says {:?}, not a PostgreSQL major version",
            path.display(),
            text.trim()
        ))
    })
}

/// The server programs that can run a data directory of PostgreSQL
/// `major`: `$LIFEBOAT_PG_BINDIR`, else the installed version that matches.
pub fn bindir_for(major: u32) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let found = installed();
    match found.iter().find(|(m, _)| *m == major) {
        Some((_, dir)) => Ok(dir.clone()),
        None => Err(server_err(format!(
            "the data directory is PostgreSQL {major}, and no server programs of that version are installed (found: {}); install them (e.g. `apt-get install postgresql-{major}`) or name their directory in LIFEBOAT_PG_BINDIR",
            if found.is_empty() {
                "none".to_string()
            } else {
                found
                    .iter()
                    .map(|(m, d)| format!("{m} in {}", d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(server_err(format!(
            "there is no `{user}` OS user to run PostgreSQL as (PostgreSQL refuses to run as root); create it or run lifeboat as an ordinary user"
        ))),
    }
}

/// The OS user PostgreSQL programs run as: the current user, or `postgres`
/// when root.
pub fn server_user() -> String {
    if is_root() {
        "postgres".into()
    } else {
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                Command::new("id")
                    .arg("-un")
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            })
            .unwrap_or_else(|| "postgres".into())
    }
}

/// A command that runs `program` as `user` when root (environment reset, as
/// a login would), else as this process.
pub fn as_user(user: &str, program: &Path) -> Command {
    if is_root() && user != "root" {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args(["--init-groups", "--reset-env"]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// [`as_user`] for the `postgres` user.
pub fn as_owner(program: &Path) -> Command {
    as_user("postgres", program)
}

/// Hands `path` (recursively) to the `postgres` user when running as root.
pub fn give_to_owner(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = user_ids("postgres")?;
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .map_err(|e| server_err(format!("chown {}: {e}", path.display())))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| server_err(format!("chown {} failed", path.display())))
}

/// Makes `dir` a directory only OS user `user` enters (mode 0700, owned by
/// it when root): a server's private socket directory.
pub fn private_dir_for(dir: &Path, user: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io("set the mode of", dir, e))?;
    if is_root() {
        let (uid, gid) = user_ids(user)?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| PgError::io("chown", dir, e))?;
    }
    Ok(())
}

/// Gives file `path` to OS user `user` when root (a server reads it).
pub fn give_file_to(path: &Path, user: &str) -> Result<()> {
    if is_root() {
        let (uid, gid) = user_ids(user)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| PgError::io("chown", path, e))?;
    }
    Ok(())
}

/// A PostgreSQL server on a local data directory, listening on a Unix
/// socket only. Stopped (immediately) when dropped if this value started it.
#[derive(Debug)]
pub struct LocalServer {
    /// The data directory.
    pub pgdata: PathBuf,
    /// The directory of the Unix socket (and of the server log).
    pub socket_dir: PathBuf,
    /// The port (names the socket).
    pub port: u16,
    /// The OS user the server runs as.
    pub user: String,
    /// The database superuser lifeboat connects as: `postgres` for clusters
    /// made by `lifeboat_scenarios`' sandboxes, else the data directory owner's name
    /// (what `initdb` names it by default).
    pub superuser: String,
    log: PathBuf,
    bindir: PathBuf,
    running: bool,
}

/// How a restored server ends its recovery, and so what
/// [`LocalServer::wait_for_recovery`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryAction {
    /// Replay pauses at the target (`recovery_target_action = 'pause'`).
    Pause,
    /// The server is promoted and accepts writes.
    Promote,
    /// The server shuts down at the target.
    Shutdown,
    /// The server keeps running as a standby.
    Standby,
}

impl RecoveryAction {
    /// What a restore ends with: a standby stays one; recovering to the end
    /// of the archive promotes; else the target action asked for.
    pub fn of_restore(standby: bool, to_the_end: bool, target_action: &str) -> RecoveryAction {
        if standby {
            RecoveryAction::Standby
        } else if to_the_end {
            RecoveryAction::Promote
        } else {
            match target_action {
                "promote" => RecoveryAction::Promote,
                "shutdown" => RecoveryAction::Shutdown,
                _ => RecoveryAction::Pause,
            }
        }
    }
}

impl LocalServer {
    /// A server on an existing data directory with its own settings; the port
    /// and socket are learnt from `postmaster.pid` once started.
    pub fn existing(pgdata: &Path) -> Result<LocalServer> {
        LocalServer::existing_in(None, pgdata)
    }

    /// [`LocalServer::existing`] with the server programs in `bindir` (else
    /// those that match the data directory's version).
    pub fn existing_in(bindir: Option<&Path>, pgdata: &Path) -> Result<LocalServer> {
        let bindir = match bindir {
            Some(b) => b.to_path_buf(),
            None => bindir_for(data_dir_major(pgdata)?)?,
        };
        let user = if is_root() {
            let owner = std::fs::metadata(pgdata)
                .map_err(|e| PgError::io("read", pgdata, e))?
                .uid();
            if owner == 0 {
                return Err(PgError::Refused(format!(
                    "{} belongs to root, and PostgreSQL refuses to run as root; chown it to the server's OS user",
                    pgdata.display()
                )));
            }
            let out = Command::new("id")
                .args(["-nu", &owner.to_string()])
                .output()
                .map_err(|e| server_err(format!("id: {e}")))?;
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            server_user()
        };
        Ok(LocalServer {
            pgdata: pgdata.to_path_buf(),
            socket_dir: PathBuf::new(),
            port: 0,
            superuser: user.clone(),
            log: pgdata.join("lifeboat-start.log"),
            user,
            bindir,
            running: false,
        })
    }

    /// A server already running on `pgdata` (its address from
    /// `postmaster.pid`); stopped (immediately) when dropped.
    pub fn running(pgdata: &Path) -> Result<LocalServer> {
        LocalServer::running_in(None, pgdata)
    }

    /// [`LocalServer::running`] with the server programs in `bindir`.
    pub fn running_in(bindir: Option<&Path>, pgdata: &Path) -> Result<LocalServer> {
        let mut s = LocalServer::existing_in(bindir, pgdata)?;
        s.learn_address();
        s.running = true;
        Ok(s)
    }

    /// The server log written by [`LocalServer::start`]: beside the socket
    /// for clusters made or adopted here, `lifeboat-start.log` in the data
    /// directory for [`LocalServer::existing`].
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// `pg_ctl start`, waiting until the server accepts connections (or, for
    /// a recovering server that shuts down at its target, until it exits).
    pub fn start(&mut self) -> Result<()> {
        self.pg_ctl_start(true, None)
    }

    /// [`LocalServer::start`] closed to clients: no TCP listener, and the
    /// Unix socket in `socket_dir` only (a directory only its owner can
    /// enter) — what a restore does before it re-applies the erasure
    /// ledger. Stop it, then start it normally to open it.
    /// Lifeboat connects there as the superuser through `hba_file` (a
    /// `local ... trust` file of its own in that directory): the data
    /// directory's own `pg_hba.conf` is neither read nor changed.
    pub fn start_private(&mut self, socket_dir: &Path, hba_file: &Path) -> Result<()> {
        let (dir, hba) = (
            socket_dir.display().to_string(),
            hba_file.display().to_string(),
        );
        if [&dir, &hba].iter().any(|p| p.contains(['\'', '"', ' '])) {
            return Err(PgError::Refused(format!(
                "the private socket directory {dir} has a quote or a space in its name"
            )));
        }
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{dir}' -c hba_file='{hba}'"
        );
        self.pg_ctl_start(true, Some(&options))
    }

    /// `pg_ctl start` without waiting: for a recovery that shuts the server
    /// down at its target, which `pg_ctl -w` would take for a failed start.
    /// Follow with [`LocalServer::wait_for_recovery`].
    pub fn start_no_wait(&mut self) -> Result<()> {
        self.pg_ctl_start(false, None)
    }

    fn pg_ctl_start(&mut self, wait: bool, options: Option<&str>) -> Result<()> {
        let mut cmd = as_user(&self.user, &self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(self.log_path());
        if let Some(o) = options {
            cmd.arg("-o").arg(o);
        }
        cmd.args([if wait { "-w" } else { "-W" }, "-t", "3600", "start"]);
        let out = process::output(&mut cmd, "pg_ctl")?;
        self.running = true;
        process::checked(out, "pg_ctl start").map_err(|e| {
            server_err(format!(
                "{e}\nthe server log ({}) ends with:\n{}",
                self.log_path().display(),
                self.log_tail(20)
            ))
        })?;
        self.learn_address();
        Ok(())
    }

    /// Reads the port and socket directory from `postmaster.pid`.
    fn learn_address(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pgdata.join("postmaster.pid")) {
            let lines: Vec<&str> = pid.lines().collect();
            if let Some(p) = lines.get(3).and_then(|p| p.trim().parse().ok()) {
                self.port = p;
            }
            if let Some(d) = lines.get(4).filter(|d| !d.trim().is_empty()) {
                self.socket_dir = PathBuf::from(d.trim());
            }
        }
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A libpq connection string for database `db` as the superuser.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.socket_dir.display(),
            self.port,
            self.superuser
        )
    }

    /// Runs SQL with psql (tuples only, unaligned) and returns its output.
    /// When the superuser role does not exist (a cluster made with
    /// `initdb -U postgres` by another OS user), retries as `postgres`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let run = |conninfo: String| -> Result<String> {
            let out = process::output(
                as_user(&self.user, &self.bindir.join("psql"))
                    .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                    .arg(conninfo)
                    .args(["-c", sql]),
                "psql",
            )?;
            process::checked(out, &format!("psql {sql:?}")).map(|s| s.trim().to_string())
        };
        match run(self.conninfo(db)) {
            Err(PgError::Server(e))
                if self.superuser != "postgres"
                    && e.contains(&format!("role \"{}\" does not exist", self.superuser)) =>
            {
                run(self
                    .conninfo(db)
                    .replace(&format!("user={}", self.superuser), "user=postgres"))
            }
            r => r,
        }
    }

    /// `Database cluster state` as `pg_controldata` reports it (`in
    /// production`, `shut down in recovery`, …).
    pub fn cluster_state(&self) -> Result<String> {
        let out = process::checked(
            process::output(
                as_user(&self.user, &self.bindir.join("pg_controldata"))
                    .arg("-D")
                    .arg(&self.pgdata)
                    .env("LC_ALL", "C"),
                "pg_controldata",
            )?,
            "pg_controldata",
        )?;
        Ok(out
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// True while the postmaster runs (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        as_user(&self.user, &self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.pgdata)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until recovery has ended the way `action` says: `promote` (or
    /// no target): the server accepts writes; `pause`: replay paused at the
    /// target; `shutdown`: the server has exited; `standby`: the server
    /// accepts read-only connections. Fails when the server exits otherwise,
    /// naming the log's last lines.
    pub fn wait_for_recovery(
        &mut self,
        action: RecoveryAction,
        timeout: Duration,
    ) -> Result<String> {
        let began = Instant::now();
        let deadline = began + timeout;
        let mut seen_running = false;
        loop {
            let running = self.is_running();
            seen_running |= running;
            if !running {
                if action == RecoveryAction::Shutdown
                    && self.cluster_state()? == "shut down in recovery"
                {
                    self.running = false;
                    return Ok("shut down at the target".into());
                }
                // Started without waiting: the postmaster may not be up yet.
                if !seen_running && began.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                self.running = false;
                return Err(server_err(format!(
                    "the server stopped during recovery; the log ({}) ends with:\n{}",
                    self.log_path().display(),
                    self.log_tail(15)
                )));
            }
            if action != RecoveryAction::Shutdown {
                // pg_get_wal_replay_pause_state() is PostgreSQL 14+; before,
                // pg_is_wal_replay_paused() is true only once paused.
                let query = if data_dir_major(&self.pgdata).is_ok_and(|m| m < 14) {
                    "select case when pg_is_in_recovery() then 'true ' || case when pg_is_wal_replay_paused() then 'paused' else 'not paused' end else 'false' end"
                } else {
                    "select case when pg_is_in_recovery() then 'true ' || pg_get_wal_replay_pause_state() else 'false' end"
                };
                if let Ok(state) = self.psql("postgres", query) {
                    match (action, state.as_str()) {
                        (_, s) if s.starts_with("false") => return Ok("promoted".into()),
                        (RecoveryAction::Pause, "true paused") => {
                            return Ok("paused at the target".into())
                        }
                        (RecoveryAction::Standby, s) if s.starts_with("true") => {
                            return Ok("running as a standby".into())
                        }
                        _ => {}
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(server_err(format!(
                    "recovery did not finish within {} s; the server still runs. The log ({}) ends with:\n{}",
                    timeout.as_secs(),
                    self.log_path().display(),
                    self.log_tail(10)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server the way a crash would (immediate shutdown: no
    /// checkpoint, the archiver gets no chance to finish).
    pub fn crash(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// `pg_ctl stop` in `mode`, waiting, when this value started the server.
    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let out = process::output(
            as_user(&self.user, &self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-w", "-m", mode, "stop"]),
            "pg_ctl",
        )?;
        process::checked(out, "pg_ctl stop").map(|_| ())
    }

    /// Makes the server listen on a socket in `socket_dir` named by `port`
    /// (set in `postgresql.conf` by the caller), with its log beside the
    /// socket, and `superuser` as the role to connect as.
    pub fn listen_on(&mut self, socket_dir: &Path, port: u16, superuser: &str) {
        self.socket_dir = socket_dir.to_path_buf();
        self.port = port;
        self.superuser = superuser.to_string();
        self.log = socket_dir.join("server.log");
    }

    /// Leaves the server running when this value is dropped.
    pub fn detach(mut self) {
        self.running = false;
    }

    /// The directory of the server programs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.running {
            let _ = as_user(&self.user, &self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// Makes `dir` reachable by the server user (mode 0755, owned by it when
/// root).
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| PgError::io("create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| PgError::io("set mode of", dir, e))?;
    give_to_owner(dir)
}
