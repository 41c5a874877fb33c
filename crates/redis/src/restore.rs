//! `redis restore`: the RDB written where a server can start on it, and
//! optionally proven: a throwaway `redis-server` loads it and its key counts
//! are compared with those recorded at backup time.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_repo::durable::{self, NewFile, Replace};
use lifeboat_repo::{Progress, Repository, SnapshotEntry};

use crate::backup::{keyspace, AOF_PREFIX, RDB_ITEM, SOURCE_KIND};

/// The directory a restore writes the AOF files into (Redis 7's default
/// `appenddirname`).
pub const AOF_DIR: &str = "appendonlydir";
use crate::error::{RedisError, Result};
use crate::resp::{Conn, Reply};
use crate::url::RedisUrl;

/// Where to restore.
#[derive(Clone, Debug, Default)]
pub struct RedisRestoreOptions {
    /// The directory to write `dump.rdb` into (created when missing).
    pub target_dir: PathBuf,
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RedisRestoreReport {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Whether AOF files were written too (into [`AOF_DIR`]).
    pub aof: bool,
    /// When the restore was proven (`lifeboat_scenarios::sandbox::redis`):
    /// per database, the keys recorded and the keys loaded.
    pub verified: Option<Vec<(String, u64, u64)>>,
    /// When proven: how long a server took to load the files.
    pub load_ms: Option<u64>,
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
            repo.note_read(Some(snapshot.id));
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
    let in_use = || {
        RedisError::Refused(format!(
            "{} exists; restore into an empty directory (a running server may be using it)",
            path.display()
        ))
    };
    if path.symlink_metadata().is_ok() {
        return Err(in_use());
    }
    // What this restore creates, it removes again when it fails: a broken
    // repository or a full disk must not leave a dump.rdb a server would
    // try to load. Each file is written under a temporary name and gets
    // its own only once complete and fsynced (its directory fsynced too):
    // a crash leaves no torn file under the name a server loads.
    let prefix = format!("{AOF_PREFIX}/");
    let aof: Vec<&lifeboat_repo::Node> = snap
        .nodes
        .iter()
        .filter(|n| n.path.starts_with(&prefix))
        .collect();
    let aof_dir = dir.join(AOF_DIR);
    let mut placed = false;
    let mut aof_created = false;
    let mut write = || -> Result<u64> {
        let mut file =
            NewFile::create(&path, 0o666).map_err(|e| RedisError::io("create", &path, e))?;
        progress.start("restore", Some(node.size));
        repo.note_read(Some(snapshot.id));
        let bytes = repo.restore_item(node, &mut file, progress)?;
        progress.finish();
        file.commit(Replace::No).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => in_use(),
            _ => RedisError::io("write", &path, e),
        })?;
        placed = true;
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
            durable::sync_dir(dir).map_err(|e| RedisError::io("sync", dir, e))?;
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
                    NewFile::create(&p, 0o666).map_err(|e| RedisError::io("create", &p, e))?;
                repo.note_read(Some(snapshot.id));
                repo.restore_item(n, &mut f, progress)?;
                f.commit(Replace::No)
                    .map_err(|e| RedisError::io("write", &p, e))?;
            }
        }
        Ok(bytes)
    };
    let bytes = match write() {
        Ok(bytes) => bytes,
        Err(e) => {
            if placed {
                let _ = std::fs::remove_file(&path);
            }
            if aof_created {
                let _ = std::fs::remove_dir_all(&aof_dir);
            }
            return Err(e);
        }
    };
    Ok(RedisRestoreReport {
        path,
        bytes,
        aof: !aof.is_empty(),
        verified: None,
        load_ms: None,
    })
}
