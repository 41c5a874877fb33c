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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lifeboat_repo::{BackupOutcome, Progress, Repository, SnapshotEntry, SnapshotOptions};
use tokio::runtime::Handle;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{PgError, Result};
use crate::meta::{DumpFormat, DumpMeta};
use crate::process::{feed, run_feeding, run_streaming};
use crate::session::{parse_conninfo, redact, DatabaseInfo, Session};

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
}

/// What a restore of a dump did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreDumpReport {
    /// The database of the snapshot restored.
    pub database: String,
    /// Bytes of dump fed to pg_restore.
    pub bytes: u64,
    /// Whether globals were applied.
    pub globals: bool,
    /// What psql said while applying globals (e.g. roles that already exist).
    pub globals_notices: Vec<String>,
}

/// A libpq connection string for `cfg` with database `db`, password left
/// out (it goes in `PGPASSWORD`, not on a command line others can read).
fn conninfo_for(cfg: &Config, db: &str) -> String {
    fn q(v: &str) -> String {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    let mut parts = Vec::new();
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", q(&hosts.join(","))));
    }
    let ports: Vec<String> = cfg.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", q(&ports.join(","))));
    }
    if let Some(u) = cfg.get_user() {
        parts.push(format!("user={}", q(u)));
    }
    parts.push(format!("dbname={}", q(db)));
    if let Some(t) = cfg.get_connect_timeout() {
        parts.push(format!("connect_timeout={}", t.as_secs().max(1)));
    }
    let ssl = match cfg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    parts.push(format!("sslmode={ssl}"));
    parts.push("application_name='lifeboat'".into());
    parts.join(" ")
}

/// A PostgreSQL client program (`pg_dump`, `pg_dumpall`, `pg_restore`,
/// `psql`) of major version `min` or newer, and its major: the same major
/// when installed, else the oldest newer one. `LIFEBOAT_PG_BINDIR` first,
/// then the distribution's directories, then `PATH`.
pub fn client_program(name: &str, min: u32) -> Result<(PathBuf, u32)> {
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let asked = |c: PathBuf| -> Option<(u32, PathBuf)> {
        let out = Command::new(&c).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())?;
        Some((major, c))
    };
    // LIFEBOAT_PG_BINDIR wins a tie; the distribution's directories say
    // their major (a client-only package has no initdb there); PATH last.
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Some(dir) = std::env::var_os(crate::server::BINDIR_ENV) {
        found.extend(asked(PathBuf::from(dir).join(name)));
    }
    found.extend(
        crate::server::installed_with(name)
            .into_iter()
            .map(|(major, dir)| (major, dir.join(name))),
    );
    found.extend(asked(PathBuf::from(name)));
    if let Some((m, p)) = found
        .iter()
        .filter(|(m, _)| *m >= min)
        .min_by_key(|(m, _)| *m)
    {
        return Ok((p.clone(), *m));
    }
    Err(PgError::Misconfigured(if found.is_empty() {
        format!("{name} was not found; install the PostgreSQL {min} client programs (e.g. `apt-get install postgresql-client-{min}`) or name their directory in {}", crate::server::BINDIR_ENV)
    } else {
        format!(
            "{name} {} is older than the server (PostgreSQL {min}) and cannot dump or restore it correctly; install the PostgreSQL {min} client programs (e.g. `apt-get install postgresql-client-{min}`) or name their directory in {}",
            {
                let mut majors: Vec<u32> = found.iter().map(|(m, _)| *m).collect();
                majors.sort_unstable();
                majors.dedup();
                majors.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            },
            crate::server::BINDIR_ENV
        )
    }))
}

/// A client program's command with the connection's password in the
/// environment.
fn client(program: &Path, cfg: &Config) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("PGPASSWORD");
    if let Some(pw) = cfg.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Dumps are cut into content-defined chunks of 256 KiB on average (a
/// quarter of the repository's default): a change of a few rows then costs
/// a quarter as much, and the index a few more entries.
const DUMP_CHUNKS: lifeboat_repo::ChunkerConfig = lifeboat_repo::ChunkerConfig::Cdc {
    min: 64 * 1024,
    avg: 256 * 1024,
    max: 1024 * 1024,
};

/// Read-ahead between pg_dump and the repository: up to 32 × 4 MiB.
const READ_AHEAD_BLOCK: usize = 4 << 20;
const READ_AHEAD_BLOCKS: usize = 32;

/// Hands `consume` a reader of `source` that is read ahead on another
/// thread, up to `blocks` blocks of `block` bytes, so the producer on the
/// other side of a pipe keeps going while the consumer is busy.
fn read_ahead<T>(
    source: &mut (dyn Read + Send),
    block: usize,
    blocks: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(blocks);
    std::thread::scope(|s| {
        s.spawn(move || loop {
            let mut buf = vec![0u8; block];
            let mut filled = 0;
            let r = loop {
                match source.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == block {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            let end = filled < block;
            // The consumer gone (it failed) ends the reading too.
            let sent = match r {
                Ok(()) => tx.send(Ok(buf)),
                Err(e) => tx.send(Err(e)),
            };
            if sent.is_err() || end {
                return;
            }
        });
        let mut reader = ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        };
        consume(&mut reader)
    })
}

/// The consuming end of [`read_ahead`].
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(block)) if block.is_empty() => return Ok(0),
                Ok(Ok(block)) => {
                    self.current = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The major version of a `server_version_num`.
fn major_of(version_num: u32) -> u32 {
    version_num / 10_000
}

/// Dumps databases and globals into one snapshot; see the module documentation.
pub fn dump(
    repo: &Repository,
    rt: &Handle,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let cfg = parse_conninfo(&opts.conninfo)?;
    let session = Session::connect_with(rt, &cfg)?;
    let (version_num, version) = session.server_version()?;
    let all = session.databases(&cfg)?;
    drop(session);
    let chosen: Vec<DatabaseInfo> = if opts.databases.is_empty() {
        all.clone()
    } else {
        let mut out = Vec::new();
        for name in &opts.databases {
            match all.iter().find(|d| &d.name == name) {
                Some(d) => out.push(d.clone()),
                None => {
                    return Err(PgError::Refused(format!(
                    "the server has no database {name:?} to dump (it has: {}); check --database",
                    all.iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
                }
            }
        }
        out
    };
    if chosen.is_empty() {
        return Err(PgError::Refused(
            "the server has no database to dump (none allows connections)".into(),
        ));
    }
    let major = major_of(version_num);
    let (pg_dump, dump_major) = client_program("pg_dump", major)?;
    let (pg_dumpall, _) = client_program("pg_dumpall", major)?;

    let source_name = if opts.source_name.is_empty() {
        redact(&opts.conninfo)
    } else {
        opts.source_name.clone()
    };
    let mut draft = repo.stream_snapshot(&SnapshotOptions::named(
        DUMP_KIND,
        &source_name,
        &opts.hostname,
        &opts.tags,
    ))?;
    progress.start("dump", Some(chosen.iter().map(|d| d.size).sum::<u64>()));
    let scratch = match opts.jobs {
        Some(_) => Some(
            tempfile::Builder::new()
                .prefix("lifeboat-dump")
                .tempdir()
                .map_err(|e| {
                    PgError::io("create a temporary directory in", &std::env::temp_dir(), e)
                })?,
        ),
        None => None,
    };
    let mut items = std::collections::BTreeMap::new();
    for db in &chosen {
        let mut cmd = client(&pg_dump, &cfg);
        cmd.arg("--no-password").arg("--compress=0");
        match (opts.jobs, &scratch) {
            (Some(jobs), Some(dir)) => {
                let out = dir.path().join(&db.name);
                cmd.arg("--format=directory")
                    .arg(format!("--jobs={}", jobs.max(1)))
                    .arg(format!("--file={}", out.display()))
                    .arg(format!("--dbname={}", conninfo_for(&cfg, &db.name)));
                run_streaming(cmd, |_| Ok(()))?;
                let name = format!("databases/{}", db.name);
                draft.add_dir(&name, &out, progress)?;
                std::fs::remove_dir_all(&out).map_err(|e| PgError::io("remove", &out, e))?;
                items.insert(db.name.clone(), name.to_string());
            }
            _ => {
                cmd.arg("--format=custom")
                    .arg(format!("--dbname={}", conninfo_for(&cfg, &db.name)));
                let name = format!("databases/{}.dump", db.name);
                run_streaming(cmd, |out| {
                    // pg_dump's output is read ahead into memory on a thread
                    // that does nothing else, so the server's COPY (what
                    // limits a dump) never waits for lifeboat's compression
                    // to catch up; it is re-chunked (a row per data chunk
                    // costs 6.5 % stored, see custom.rs) on the way in.
                    read_ahead(out, READ_AHEAD_BLOCK, READ_AHEAD_BLOCKS, |ahead| {
                        let rechunked = crate::custom::Rechunk::new(ahead);
                        Ok(draft.add_stream_with(&name, rechunked, DUMP_CHUNKS, progress)?)
                    })
                })?;
                items.insert(db.name.clone(), name.to_string());
            }
        }
    }
    // Roles and tablespaces. Reading role passwords needs a superuser; a
    // less privileged role still gets the roles, without passwords.
    let globals = |no_passwords: bool| {
        let mut cmd = client(&pg_dumpall, &cfg);
        cmd.arg("--globals-only")
            .arg("--no-password")
            .arg(format!("--dbname={}", conninfo_for(&cfg, "postgres")));
        if no_passwords {
            cmd.arg("--no-role-passwords");
        }
        run_streaming(cmd, |out| {
            let mut text = Vec::new();
            out.read_to_end(&mut text)
                .map_err(|e| PgError::io("read the output of", &pg_dumpall, e))?;
            Ok(text)
        })
    };
    let (text, without_passwords) = match globals(false) {
        Ok(t) => (t, false),
        Err(PgError::Tool { stderr, .. }) if stderr.contains("pg_authid") => {
            progress.warn("pg_dumpall cannot read role passwords (not a superuser): roles are dumped without them");
            (globals(true)?, true)
        }
        Err(e) => return Err(e),
    };
    draft.add_stream(GLOBALS, text.as_slice(), progress)?;
    progress.finish();

    let meta = DumpMeta {
        pg_version: version,
        pg_version_num: version_num,
        pg_dump_major: dump_major,
        format: if opts.jobs.is_some() {
            DumpFormat::Directory
        } else {
            DumpFormat::Custom
        },
        items,
        databases: chosen,
        globals_without_passwords: without_passwords,
    };
    for (k, v) in meta.entries()? {
        draft.set_metadata(&k, v);
    }
    Ok(draft.commit()?)
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

/// Restores one database of a dump snapshot with `pg_restore` (and the
/// globals with `psql` first, when asked).
pub fn restore_dump(
    repo: &Repository,
    rt: &Handle,
    snapshot: &SnapshotEntry,
    opts: &RestoreDumpOptions,
    progress: &dyn Progress,
) -> Result<RestoreDumpReport> {
    let snap = &snapshot.snapshot;
    if snap.source_kind != DUMP_KIND {
        return Err(PgError::Refused(format!(
            "snapshot {} is a {} backup, not a pg dump; `lifeboat pg restore` restores physical backups",
            snapshot.id.short(),
            snap.source_kind
        )));
    }
    let meta = DumpMeta::of(snapshot)?;
    let databases = meta.database_names();
    let database = match (&opts.database, databases.as_slice()) {
        (Some(d), _) if databases.contains(d) => d.clone(),
        (Some(d), _) => {
            return Err(PgError::Refused(format!(
                "snapshot {} has no dump of database {d:?} (it has: {})",
                snapshot.id.short(),
                databases.join(", ")
            )))
        }
        (None, [one]) => one.clone(),
        (None, _) => {
            return Err(PgError::Refused(format!(
                "snapshot {} holds {} databases ({}); name one with --database",
                snapshot.id.short(),
                databases.len(),
                databases.join(", ")
            )))
        }
    };
    let item = meta.items[&database].clone();
    let cfg = parse_conninfo(&opts.conninfo)?;
    let target_db = cfg.get_dbname().unwrap_or("postgres").to_string();
    // The target server's version decides the client programs, as for dumps;
    // they must also read what the dump's pg_dump wrote.
    let session = Session::connect_with(rt, &cfg)?;
    let (version_num, _) = session.server_version()?;
    drop(session);
    let dump_major = meta.pg_dump_major;
    let min = major_of(version_num).max(dump_major);

    let mut report = RestoreDumpReport {
        database: database.clone(),
        bytes: 0,
        globals: false,
        globals_notices: Vec::new(),
    };
    if opts.globals {
        let node = snap.item(GLOBALS).ok_or_else(|| {
            PgError::Refused(format!("snapshot {} holds no globals", snapshot.id.short()))
        })?;
        let mut sql = Vec::new();
        repo.restore_item(node, &mut sql, progress)?;
        let (psql, _) = client_program("psql", min)?;
        let mut cmd = client(&psql, &cfg);
        cmd.args([
            "-X",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            "-",
        ])
        .arg(format!("--dbname={}", conninfo_for(&cfg, &target_db)))
        .stdin(Stdio::piped());
        let notices = feed(cmd, &sql)?;
        report.globals = true;
        report.globals_notices = notices
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
    }

    let (pg_restore, _) = client_program("pg_restore", min)?;
    let mut cmd = client(&pg_restore, &cfg);
    cmd.arg("--no-password")
        .arg("--exit-on-error")
        .arg(format!("--dbname={}", conninfo_for(&cfg, &target_db)));
    if opts.create {
        cmd.arg("--create");
    }
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    for t in &opts.tables {
        cmd.arg(format!("--table={t}"));
    }
    let directory = !item.ends_with(".dump");
    if directory || opts.jobs.is_some() {
        // Parallel restores need a file or directory pg_restore can seek in.
        let scratch = tempfile::Builder::new()
            .prefix("lifeboat-restore-dump")
            .tempdir()
            .map_err(|e| {
                PgError::io("create a temporary directory in", &std::env::temp_dir(), e)
            })?;
        let input = if directory {
            let stats = repo.restore(
                snap,
                &lifeboat_repo::RestoreOptions {
                    target: scratch.path().to_path_buf(),
                    include: vec![lifeboat_repo::name::encode(item.as_bytes())],
                    page_cache: true,
                    ..Default::default()
                },
                progress,
            )?;
            report.bytes = stats.bytes;
            scratch.path().join(&item)
        } else {
            let path = scratch.path().join("dump");
            let node = dump_node(snapshot, &item)?;
            let mut f =
                std::fs::File::create(&path).map_err(|e| PgError::io("create", &path, e))?;
            report.bytes = repo.restore_item(node, &mut f, progress)?;
            path
        };
        if let Some(j) = opts.jobs {
            cmd.arg(format!("--jobs={}", j.max(1)));
        }
        cmd.arg(&input);
        run_streaming(cmd, |_| Ok(()))?;
    } else {
        // Custom format, one job: streamed from the repository into pg_restore.
        let node = dump_node(snapshot, &item)?;
        let (fed, _) = run_feeding(cmd, |pipe| Ok(repo.restore_item(node, pipe, progress)?))?;
        report.bytes = fed;
    }
    Ok(report)
}

fn dump_node<'a>(snapshot: &'a SnapshotEntry, item: &str) -> Result<&'a lifeboat_repo::Node> {
    snapshot.snapshot.item(item).ok_or_else(|| {
        PgError::Repo(lifeboat_repo::RepoError::Corrupt {
            key: lifeboat_repo::ObjectKey::Snapshot(snapshot.id).to_string(),
            reason: format!("it names {item} but holds no such item"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_programs_older_than_the_server_are_refused_by_name() {
        // This machine's pg_dump (the distribution's) is found for its own
        // major and refused, with a message naming both versions and what
        // to install, for a server newer than any installed.
        let (path, major) = client_program("pg_dump", 12).expect("a pg_dump is installed");
        assert!(major >= 12 && path.ends_with("pg_dump"), "{path:?} {major}");
        let err = client_program("pg_dump", 99).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pg_dump {major}"))
                && err.contains("older than the server (PostgreSQL 99)"),
            "{err}"
        );
        assert!(err.contains("postgresql-client-99"), "{err}");
        let err = client_program("no_such_program_here", 15)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("was not found") && err.contains("LIFEBOAT_PG_BINDIR"),
            "{err}"
        );
    }

    #[test]
    fn conninfo_keeps_the_target_and_leaves_the_password_out() {
        let cfg = parse_conninfo("postgresql://alice:s3cret@db.example:6432/app?sslmode=require")
            .unwrap();
        let s = conninfo_for(&cfg, "other db");
        assert!(
            s.contains("host='db.example'") && s.contains("port='6432'"),
            "{s}"
        );
        assert!(
            s.contains("user='alice'") && s.contains("dbname='other db'"),
            "{s}"
        );
        assert!(s.contains("sslmode=require"), "{s}");
        assert!(!s.contains("s3cret"), "{s}");
        let cfg = parse_conninfo("host=/tmp user=o'brien").unwrap();
        assert!(conninfo_for(&cfg, "x").contains(r"user='o\'brien'"));
    }
}
