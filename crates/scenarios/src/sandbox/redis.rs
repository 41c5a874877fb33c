//! A throwaway `redis-server` on loopback, and the proof of a Redis restore:
//! such a server loads the restored files and its key counts are compared
//! with those the backup recorded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_redis::meta::RedisMeta;
use lifeboat_redis::resp::{Conn, Reply};
use lifeboat_redis::url::RedisUrl;
use lifeboat_redis::{keyspace, Keyspace, RedisError, RedisRestoreReport, Result};
use lifeboat_repo::SnapshotEntry;

/// The environment variable naming the redis-server program.
pub const SERVER_ENV: &str = "LIFEBOAT_REDIS_SERVER";

/// The redis-server program: `$LIFEBOAT_REDIS_SERVER`, else `redis-server`
/// on `PATH` or in `/usr/bin`, `/usr/local/bin`.
pub fn server_program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(SERVER_ENV) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RedisError::Server(format!(
                "redis-server was not found (to verify the restore); install it (e.g. `apt-get install redis-server`) or name it in {SERVER_ENV}"
            ))
        })
}

/// A redis-server started on a directory, stopped when dropped.
pub struct LocalRedis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
    /// The password it asks (a private server: restored data).
    password: Option<String>,
    /// Its pid file, removed when it is stopped.
    pidfile: Option<PathBuf>,
}

impl LocalRedis {
    /// Starts `redis-server` on `dir` (its `dump.rdb` is loaded), on a free
    /// loopback port, saving nothing, with `extra` arguments; waits up to
    /// `timeout` until it has loaded its data and answers.
    pub fn start(dir: &Path, extra: &[&str], timeout: Duration) -> Result<LocalRedis> {
        LocalRedis::start_with(dir, extra, None, timeout)
    }

    /// [`LocalRedis::start`] for restored data: it asks a random password
    /// (other users of the machine reach its loopback port, not its data)
    /// and writes its pid to `redis.pid` in `dir` (what a drill stopped by
    /// a signal stops).
    pub fn start_private(dir: &Path, extra: &[&str], timeout: Duration) -> Result<LocalRedis> {
        let mut secret = [0u8; 16];
        getrandom::getrandom(&mut secret)
            .map_err(|e| RedisError::Server(format!("no random bytes for a password: {e}")))?;
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let pidfile = dir.join("redis.pid");
        let pidfile = pidfile.to_string_lossy().into_owned();
        let mut args = vec![
            "--pidfile",
            pidfile.as_str(),
            "--requirepass",
            password.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut server = LocalRedis::start_with(dir, &args, Some(password.clone()), timeout)?;
        server.pidfile = Some(dir.join("redis.pid"));
        Ok(server)
    }

    fn start_with(
        dir: &Path,
        extra: &[&str],
        password: Option<String>,
        timeout: Duration,
    ) -> Result<LocalRedis> {
        let program = server_program()?;
        let port = super::free_port()
            .map_err(|e| RedisError::Server(format!("no free port on 127.0.0.1: {e}")))?;
        let log = dir.join(format!("redis-{port}.log"));
        let child = Command::new(&program)
            .arg("--port")
            .arg(port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RedisError::Server(format!("cannot start {}: {e}", program.display())))?;
        let mut server = LocalRedis {
            child,
            port,
            log,
            password,
            pidfile: None,
        };
        server.wait_ready(timeout)?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>` (with its password, when it asks one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let url = RedisUrl::parse(&self.url())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RedisError::Server(format!(
                    "redis-server exited ({status}) instead of loading the restored data:\n{}",
                    self.log_tail()
                )));
            }
            // LOADING until the dataset is in memory; a server with a
            // password answers NOAUTH once it is up.
            match Conn::connect(&url, Duration::from_secs(5)) {
                Ok(mut c) => {
                    if matches!(c.command(&[b"PING"]), Ok(Reply::Simple(_))) {
                        return Ok(());
                    }
                }
                Err(RedisError::Auth { reason, .. }) if reason.starts_with("NOAUTH") => {
                    return Ok(())
                }
                Err(_) => {}
            }
            if started.elapsed() > timeout {
                return Err(RedisError::Server(format!(
                    "redis-server did not finish loading within {} s:\n{}",
                    timeout.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its keyspace now.
    pub fn keyspace(&self) -> Result<Keyspace> {
        let mut c = Conn::connect(&RedisUrl::parse(&self.url())?, Duration::from_secs(30))?;
        Ok(keyspace(&c.info("keyspace")?))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its log sits in the directory it served (a restore's target):
        // what a failure needed from it is in the error already.
        let _ = std::fs::remove_file(&self.log);
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Proves a restore [`lifeboat_redis::restore`] wrote: a throwaway
/// redis-server loads its files, and the keys per database must be those
/// the backup recorded; fills `report.verified` and `report.load_ms`.
pub fn verify_restore(report: &mut RedisRestoreReport, snapshot: &SnapshotEntry) -> Result<()> {
    let dir = report.path.parent().unwrap_or(Path::new("."));
    let started = Instant::now();
    let mut args = vec!["--dbfilename", lifeboat_redis::RDB_ITEM];
    if report.aof {
        args.extend([
            "--appendonly",
            "yes",
            "--appenddirname",
            lifeboat_redis::AOF_DIR,
        ]);
    }
    let server = LocalRedis::start_private(dir, &args, Duration::from_secs(3600))?;
    lifeboat_types::failpoint!("drill-redis-up");
    report.load_ms = Some(started.elapsed().as_millis() as u64);
    let loaded = server.keyspace()?;
    drop(server);
    let recorded: Keyspace = RedisMeta::of(snapshot)?
        .keyspace
        .into_iter()
        .map(|(db, k)| (db, (k.keys, k.expires)))
        .collect();
    let mut rows = Vec::new();
    let mut dbs: Vec<&String> = recorded.keys().chain(loaded.keys()).collect();
    dbs.sort();
    dbs.dedup();
    let mut wrong = Vec::new();
    for db in dbs {
        let want = recorded.get(db).map_or(0, |v| v.0);
        let got = loaded.get(db).map_or(0, |v| v.0);
        if want != got {
            wrong.push(format!("{db}: {got} keys loaded, {want} recorded"));
        }
        rows.push((db.clone(), want, got));
    }
    if !wrong.is_empty() {
        return Err(RedisError::Server(format!(
            "the restored {} loads, but its key counts differ from the backup's: {} (keys with a TTL that has since passed are dropped on load; otherwise the data changed between INFO and SYNC at backup time)",
            report.path.display(),
            wrong.join("; ")
        )));
    }
    report.verified = Some(rows);
    Ok(())
}
