//! `redis restore`: the RDB written where a server can start on it, and
//! optionally proven: a throwaway `redis-server` loads it and its key counts
//! are compared with those recorded at backup time.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_repo::{Progress, Repository, SnapshotEntry};

use crate::backup::{keyspace, Keyspace, AOF_PREFIX, RDB_ITEM, SOURCE_KIND};

/// The directory a restore writes the AOF files into (Redis 7's default
/// `appenddirname`).
pub const AOF_DIR: &str = "appendonlydir";
use crate::error::{RedisError, Result};
use crate::resp::{Conn, Reply};
use crate::url::RedisUrl;

/// The environment variable naming the redis-server program to verify with.
pub const SERVER_ENV: &str = "LIFEBOAT_REDIS_SERVER";

/// Where to restore.
#[derive(Clone, Debug, Default)]
pub struct RedisRestoreOptions {
    /// The directory to write `dump.rdb` into (created when missing).
    pub target_dir: PathBuf,
    /// Start a throwaway redis-server on it and compare key counts.
    pub verify: bool,
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RedisRestoreReport {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// With `verify`: per database, the keys recorded and the keys loaded.
    pub verified: Option<Vec<(String, u64, u64)>>,
    /// With `verify`: how long the server took to load the file.
    pub load_ms: Option<u64>,
}

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

/// A free TCP port on loopback.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| RedisError::Server(format!("no free port on 127.0.0.1: {e}")))
}

/// A redis-server started on a directory, stopped when dropped.
pub struct LocalRedis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl LocalRedis {
    /// Starts `redis-server` on `dir` (its `dump.rdb` is loaded), on a free
    /// loopback port, saving nothing, with `extra` arguments; waits up to
    /// `timeout` until it has loaded its data and answers.
    pub fn start(dir: &Path, extra: &[&str], timeout: Duration) -> Result<LocalRedis> {
        let program = server_program()?;
        let port = free_port()?;
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
        let mut server = LocalRedis { child, port, log };
        server.wait_ready(timeout)?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
    }
}

/// What loading a backup into a live server did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadReport {
    /// Keys restored, per database (`db0` …).
    pub keys: std::collections::BTreeMap<String, u64>,
    /// Keys whose TTL had passed: not restored.
    pub expired: u64,
    /// Function libraries in the RDB (not loaded; `FUNCTION RESTORE` them
    /// from the dump.rdb if needed).
    pub functions: u64,
}

/// Keys per RESTORE batch: sent together, then their replies read.
const BATCH: usize = 512;

/// Loads a Redis snapshot into a live server key by key with `RESTORE`
/// (TTLs kept as absolute times). A server that holds keys already is
/// refused unless `replace` (then `RESTORE … REPLACE`).
pub fn restore_to_url(
    repo: &Repository,
    snapshot: &SnapshotEntry,
    url: &str,
    replace: bool,
    timeout: Duration,
    ca_file: Option<&Path>,
    progress: &dyn Progress,
) -> Result<LoadReport> {
    let node = rdb_node(snapshot)?;
    let target = RedisUrl::parse(url)?;
    let mut conn = Conn::connect_with(&target, timeout, ca_file)?;
    let present = keyspace(&conn.info("keyspace")?);
    let held: u64 = present.values().map(|v| v.0).sum();
    if held > 0 && !replace {
        return Err(RedisError::Refused(format!(
            "{} holds {held} key(s) already ({}); load into an empty server, or pass --replace to overwrite keys of the same name",
            conn.target(),
            present.iter().map(|(db, (k, _))| format!("{db}: {k}")).collect::<Vec<_>>().join(", ")
        )));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut report = LoadReport {
        keys: Default::default(),
        expired: 0,
        functions: 0,
    };
    progress.start("load", Some(node.size));
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| RedisError::Server(format!("cannot make a pipe: {e}")))?;
    let loaded: Result<()> = std::thread::scope(|s| {
        let feeder = s.spawn(move || {
            let r = repo.restore_item(node, &mut writer, progress);
            drop(writer);
            r
        });
        let parsed = load_keys(&mut conn, reader, replace, now_ms, &mut report);
        let fed = feeder.join().unwrap_or_else(|_| {
            Err(lifeboat_repo::RepoError::Invalid(
                "the reading thread panicked".into(),
            ))
        });
        // A parse error closes the pipe, which fails the feeder too: then
        // the parse error is the one to report. A feeder that failed on its
        // own (a damaged repository) cut the RDB short: its error is.
        match fed {
            Err(e) if !e.is_broken_pipe() => Err(e.into()),
            fed => {
                parsed?;
                fed?;
                Ok(())
            }
        }
    });
    progress.finish();
    loaded?;
    Ok(report)
}

/// Sends `RESTORE` for every key of the RDB on `reader`, in batches.
fn load_keys(
    conn: &mut Conn,
    reader: impl std::io::Read,
    replace: bool,
    now_ms: i64,
    report: &mut LoadReport,
) -> Result<()> {
    let bad = |e: std::io::Error| {
        RedisError::Refused(format!(
            "the backup's RDB cannot be loaded key by key: {e}; restore it with --target-dir and start a server on it instead"
        ))
    };
    let mut keys = crate::keys::KeyReader::new(std::io::BufReader::with_capacity(1 << 20, reader))
        .map_err(bad)?;
    let mut db = None;
    // What each reply pending is for (a key, or a SELECT).
    let mut expect: Vec<Vec<u8>> = Vec::new();
    loop {
        let next = keys.next_key().map_err(bad)?;
        if next.is_none() || expect.len() >= BATCH {
            for key in expect.drain(..) {
                if let Reply::Error(e) = conn.reply("RESTORE")? {
                    return Err(
                        conn.protocol(&format!("RESTORE {}", String::from_utf8_lossy(&key)), &e)
                    );
                }
            }
        }
        let Some(k) = next else { break };
        if k.expire_ms.is_some_and(|t| t <= now_ms) {
            report.expired += 1;
            continue;
        }
        if db != Some(k.db) {
            conn.send(&[b"SELECT", k.db.to_string().as_bytes()])?;
            expect.push(b"(SELECT)".to_vec());
            db = Some(k.db);
        }
        let ttl = k.expire_ms.unwrap_or(0).to_string();
        let mut args: Vec<&[u8]> = vec![b"RESTORE", &k.key, ttl.as_bytes(), &k.payload];
        if k.expire_ms.is_some() {
            args.push(b"ABSTTL");
        }
        if replace {
            args.push(b"REPLACE");
        }
        conn.send(&args)?;
        expect.push(k.key.clone());
        *report.keys.entry(format!("db{}", k.db)).or_default() += 1;
    }
    report.functions = keys.functions;
    Ok(())
}

fn rdb_node(snapshot: &SnapshotEntry) -> Result<&lifeboat_repo::Node> {
    let snap = &snapshot.snapshot;
    if snap.source_kind != SOURCE_KIND {
        return Err(RedisError::Refused(format!(
            "snapshot {} is a {} backup, not a Redis one",
            snapshot.id.short(),
            snap.source_kind
        )));
    }
    snap.item(RDB_ITEM).ok_or_else(|| {
        RedisError::Refused(format!(
            "snapshot {} holds no {RDB_ITEM}",
            snapshot.id.short()
        ))
    })
}

/// Restores a Redis snapshot; see the module documentation.
pub fn restore(
    repo: &Repository,
    snapshot: &SnapshotEntry,
    opts: &RedisRestoreOptions,
    progress: &dyn Progress,
) -> Result<RedisRestoreReport> {
    let snap = &snapshot.snapshot;
    let node = rdb_node(snapshot)?;
    let dir = &opts.target_dir;
    std::fs::create_dir_all(dir).map_err(|e| RedisError::io("create", dir, e))?;
    let path = dir.join(RDB_ITEM);
    // Never over a file a server may be using.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RedisError::Refused(format!(
                "{} exists; restore into an empty directory (a running server may be using it)",
                path.display()
            )),
            _ => RedisError::io("create", &path, e),
        })?;
    // What this restore creates, it removes again when it fails: a broken
    // repository or a full disk must not leave a dump.rdb a server would
    // try to load.
    let prefix = format!("{AOF_PREFIX}/");
    let aof: Vec<&lifeboat_repo::Node> = snap
        .nodes
        .iter()
        .filter(|n| n.path.starts_with(&prefix))
        .collect();
    let aof_dir = dir.join(AOF_DIR);
    let mut aof_created = false;
    let mut write = || -> Result<u64> {
        progress.start("restore", Some(node.size));
        let bytes = repo.restore_item(node, &mut file, progress)?;
        progress.finish();
        file.flush()
            .and_then(|_| file.sync_all())
            .map_err(|e| RedisError::io("write", &path, e))?;
        // The AOF directory, when the backup has one: the server loads it
        // (it is newer than the RDB) when started with appendonly yes.
        if !aof.is_empty() {
            std::fs::create_dir(&aof_dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => RedisError::Refused(format!(
                    "{} exists; restore into an empty directory",
                    aof_dir.display()
                )),
                _ => RedisError::io("create", &aof_dir, e),
            })?;
            aof_created = true;
            for n in &aof {
                let bytes = n.path_bytes().unwrap_or_default();
                let name = bytes.get(prefix.len()..).unwrap_or_default();
                if name.is_empty() || name.contains(&b'/') || name.starts_with(b".") {
                    return Err(RedisError::Refused(format!(
                        "the backup names an odd AOF file {:?}",
                        n.path
                    )));
                }
                let p = aof_dir.join(std::ffi::OsStr::from_bytes(name));
                let mut f =
                    std::fs::File::create(&p).map_err(|e| RedisError::io("create", &p, e))?;
                repo.restore_item(n, &mut f, progress)?;
                f.sync_all().map_err(|e| RedisError::io("write", &p, e))?;
            }
        }
        Ok(bytes)
    };
    let bytes = match write() {
        Ok(bytes) => bytes,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&path);
            if aof_created {
                let _ = std::fs::remove_dir_all(&aof_dir);
            }
            return Err(e);
        }
    };
    drop(file);
    let mut report = RedisRestoreReport {
        path: path.clone(),
        bytes,
        verified: None,
        load_ms: None,
    };
    if opts.verify {
        let started = Instant::now();
        let mut args = vec!["--dbfilename", RDB_ITEM];
        if !aof.is_empty() {
            args.extend(["--appendonly", "yes", "--appenddirname", AOF_DIR]);
        }
        let server = LocalRedis::start(dir, &args, Duration::from_secs(3600))?;
        report.load_ms = Some(started.elapsed().as_millis() as u64);
        let loaded = server.keyspace()?;
        drop(server);
        let recorded: Keyspace = snap
            .metadata
            .get("keyspace")
            .and_then(|k| k.as_object())
            .map(|o| {
                o.iter()
                    .map(|(db, v)| {
                        let n = |f: &str| v.get(f).and_then(|x| x.as_u64()).unwrap_or(0);
                        (db.clone(), (n("keys"), n("expires")))
                    })
                    .collect()
            })
            .unwrap_or_default();
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
                path.display(),
                wrong.join("; ")
            )));
        }
        report.verified = Some(rows);
    }
    Ok(report)
}
