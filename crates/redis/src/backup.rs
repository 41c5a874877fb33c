//! `redis backup`: the RDB pulled over the replication protocol, as
//! `redis-cli --rdb` does, checked, and recorded only when sound.

use std::collections::BTreeMap;
use std::time::Duration;

use lifeboat_repo::{BackupOutcome, Progress, Repository, SnapshotOptions};

use crate::error::{RedisError, Result};
use crate::meta::{DbKeys, RedisMeta};
use crate::rdb::{Framing, RdbStream};
use crate::resp::{Conn, Reply};
use crate::url::{redact, RedisUrl};

/// The snapshot source kind of Redis backups.
pub const SOURCE_KIND: &str = "redis";
/// The item holding the RDB.
pub const RDB_ITEM: &str = "dump.rdb";
/// The prefix of the AOF directory's files.
pub const AOF_PREFIX: &str = "aof";

/// What to back up.
#[derive(Clone, Debug)]
pub struct RedisBackupOptions {
    /// `redis://[user:password@]host:port`.
    pub url: String,
    /// The source's name in the snapshot (default: the URL without password).
    pub source_name: String,
    /// Host name recorded.
    pub hostname: String,
    /// Tags.
    pub tags: Vec<String>,
    /// How long to wait for any one reply, including the RDB's first byte
    /// (the server may wait `repl-diskless-sync-delay` before it starts).
    pub timeout: Duration,
    /// Also back up the AOF directory (lifeboat must run beside the server).
    pub aof: bool,
    /// The server's working directory, when its `CONFIG GET dir` is not the
    /// path seen from here (a container, a mount).
    pub aof_dir: Option<std::path::PathBuf>,
    /// For `rediss://`: the CA certificates (PEM) to check the server's
    /// certificate against, instead of the Mozilla roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Record the snapshot under this time instead of now (imports; tests
    /// of retention), as restic's `backup --time`.
    pub time: Option<lifeboat_repo::Timestamp>,
}

impl RedisBackupOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: &str) -> Self {
        RedisBackupOptions {
            url: url.to_string(),
            source_name: String::new(),
            hostname: String::new(),
            tags: Vec::new(),
            timeout: Duration::from_secs(120),
            aof: false,
            aof_dir: None,
            ca_file: None,
            time: None,
        }
    }
}

/// Per database: keys and keys with a TTL, as `INFO keyspace` reports them.
pub type Keyspace = BTreeMap<String, (u64, u64)>;

/// Parses `INFO keyspace` lines (`db0` → `keys=2,expires=1,avg_ttl=0`).
pub fn keyspace(info: &[(String, String)]) -> Keyspace {
    info.iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(db, v)| {
            let field = |name: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or(0)
            };
            (db.clone(), (field("keys"), field("expires")))
        })
        .collect()
}

fn sync_hint(reason: &str) -> String {
    if reason.contains("NOPERM") {
        "The ACL user needs permission to run SYNC (and REPLCONF): e.g. `ACL SETUSER backup +sync +replconf +info +ping`".into()
    } else if reason.to_ascii_lowercase().contains("unknown command") {
        "This server does not offer SYNC (managed services such as ElastiCache and Memorystore disable it, as does `rename-command SYNC \"\"`): back up with the service's own snapshots, or from a replica you run".into()
    } else {
        "Check the server log".into()
    }
}

/// Backs up one Redis server; see the module documentation.
pub fn backup(
    repo: &Repository,
    opts: &RedisBackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let url = RedisUrl::parse(&opts.url)?;
    let mut conn = Conn::connect_with(&url, opts.timeout, opts.ca_file.as_deref())?;
    let target = conn.target().to_string();
    let server = conn.info("server")?;
    let field = |info: &[(String, String)], k: &str| {
        info.iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let version = field(&server, "redis_version");
    let memory = conn.info("memory")?;
    let persistence = conn.info("persistence")?;
    let keys = keyspace(&conn.info("keyspace")?);

    // Ask for the RDB alone, delimited by a mark if the server streams it
    // (diskless); servers before 7 do not know rdb-only, which only means
    // the replication stream follows the RDB and is not read.
    for capa in [
        &[&b"REPLCONF"[..], b"capa", b"eof"][..],
        &[b"REPLCONF", b"rdb-only", b"1"],
    ] {
        if let Reply::Error(e) = conn.command(capa)? {
            if e.contains("NOPERM") {
                return Err(RedisError::SyncRefused {
                    hint: sync_hint(&e),
                    target,
                    reason: e,
                });
            }
        }
    }
    conn.send(&[b"SYNC"])?;
    // Newlines keep the connection alive while the server prepares the RDB.
    let framing = loop {
        let line = conn.line("wait for the RDB")?;
        if line.is_empty() {
            continue;
        }
        if let Some(e) = line.strip_prefix('-') {
            return Err(RedisError::SyncRefused {
                hint: sync_hint(e),
                target,
                reason: e.to_string(),
            });
        }
        match line.strip_prefix('$').and_then(Framing::parse) {
            Some(f) => break f,
            None => {
                return Err(conn.protocol("read the SYNC reply", &format!("unexpected {line:?}")))
            }
        }
    };
    let source_name = if opts.source_name.is_empty() {
        redact(&opts.url)
    } else {
        opts.source_name.clone()
    };
    let mut draft = repo.stream_snapshot(&SnapshotOptions {
        time: opts.time,
        ..SnapshotOptions::named(SOURCE_KIND, &source_name, &opts.hostname, &opts.tags)
    })?;
    progress.start(
        "backup",
        match framing {
            Framing::Length(n) => Some(n),
            Framing::Mark(_) => None,
        },
    );
    let diskless = matches!(framing, Framing::Mark(_));
    let mut stream = RdbStream::new(conn.reader(), framing);
    let added = draft.add_stream(RDB_ITEM, &mut stream, progress);
    progress.finish();
    added.map_err(|e| match e {
        lifeboat_repo::RepoError::Io { source, .. } => RedisError::Protocol {
            target: target.clone(),
            what: "read the RDB".into(),
            reason: source.to_string(),
        },
        other => other.into(),
    })?;
    // The checks come before the commit: a damaged RDB records nothing.
    let facts = stream.finish().map_err(|reason| RedisError::BadRdb {
        target: target.clone(),
        reason,
    })?;
    let aof_files = if opts.aof {
        Some(backup_aof(&url, opts, &mut draft, progress)?)
    } else {
        None
    };
    let meta = RedisMeta {
        redis_version: version,
        rdb: facts,
        diskless,
        keyspace: keys
            .iter()
            .map(|(db, (keys, expires))| {
                (
                    db.clone(),
                    DbKeys {
                        keys: *keys,
                        expires: *expires,
                    },
                )
            })
            .collect(),
        used_memory: field(&memory, "used_memory").parse().ok(),
        rdb_last_save_time: field(&persistence, "rdb_last_save_time").parse().ok(),
        aof_files,
    };
    for (k, v) in meta.entries()? {
        draft.set_metadata(&k, v);
    }
    Ok(draft.commit()?)
}

fn config_get(conn: &mut Conn, name: &str) -> Result<String> {
    match conn.command(&[b"CONFIG", b"GET", name.as_bytes()])? {
        Reply::Array(Some(items)) => Ok(items.get(1).and_then(Reply::text).unwrap_or_default()),
        Reply::Error(e) => Err(conn.protocol(&format!("CONFIG GET {name}"), &e)),
        other => Err(conn.protocol(
            &format!("CONFIG GET {name}"),
            &format!("unexpected reply {other:?}"),
        )),
    }
}

/// Copies the AOF directory into the snapshot as Redis documents it for
/// backups: automatic rewrites off (`auto-aof-rewrite-percentage 0`), no
/// rewrite in progress, copy, rewrites back as they were. Returns the files.
fn backup_aof(
    url: &RedisUrl,
    opts: &RedisBackupOptions,
    draft: &mut lifeboat_repo::StreamDraft<'_>,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let mut conn = Conn::connect_with(url, opts.timeout, opts.ca_file.as_deref())?;
    if config_get(&mut conn, "appendonly")? != "yes" {
        return Err(RedisError::Refused(format!(
            "{} has AOF off (appendonly no): back up without --aof, the RDB holds everything",
            conn.target()
        )));
    }
    let dir = match &opts.aof_dir {
        Some(d) => d.clone(),
        None => std::path::PathBuf::from(config_get(&mut conn, "dir")?),
    };
    let aof_dir = dir.join(config_get(&mut conn, "appenddirname")?);
    if !aof_dir.is_dir() {
        return Err(RedisError::Refused(format!(
            "the AOF directory {} is not here: --aof needs lifeboat beside the server (or --aof-dir naming the server's dir as seen from here)",
            aof_dir.display()
        )));
    }
    let before = config_get(&mut conn, "auto-aof-rewrite-percentage")?;
    if let Reply::Error(e) =
        conn.command(&[b"CONFIG", b"SET", b"auto-aof-rewrite-percentage", b"0"])?
    {
        return Err(conn.protocol(
            "pause AOF rewrites (CONFIG SET auto-aof-rewrite-percentage 0)",
            &e,
        ));
    }
    let copied = (|| -> Result<Vec<String>> {
        let deadline = std::time::Instant::now() + opts.timeout;
        loop {
            let p = conn.info("persistence")?;
            if p.iter()
                .any(|(k, v)| k == "aof_rewrite_in_progress" && v == "0")
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(conn.protocol(
                    "wait for the AOF rewrite in progress to finish",
                    "it did not end before the timeout",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        draft.add_dir(AOF_PREFIX, &aof_dir, progress)?;
        let mut files: Vec<String> = std::fs::read_dir(&aof_dir)
            .map_err(|e| RedisError::io("list", &aof_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        files.sort();
        Ok(files)
    })();
    // Rewrites back as they were, whatever happened.
    let restored = conn.command(&[
        b"CONFIG",
        b"SET",
        b"auto-aof-rewrite-percentage",
        before.as_bytes(),
    ]);
    let files = copied?;
    if let Reply::Error(e) = restored? {
        return Err(conn.protocol(
            &format!("set auto-aof-rewrite-percentage back to {before}"),
            &e,
        ));
    }
    Ok(files)
}
