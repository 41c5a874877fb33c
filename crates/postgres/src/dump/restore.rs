//! `pg restore-dump`: one database of a dump snapshot through
//! `pg_restore` (and its globals through `psql` first, when asked),
//! streamed from the repository or through a temporary copy.

use std::process::{Command, Stdio};

use lifeboat_repo::{Progress, Repository, SnapshotEntry};
use tokio::runtime::Handle;
use tokio_postgres::Config;

use super::programs::{client, client_program, conninfo_for};
use super::{major_of, RestoreDumpOptions, RestoreDumpReport, DUMP_KIND, GLOBALS};
use crate::error::{PgError, Result};
use crate::meta::DumpMeta;
use crate::process::{feed, run_feeding, run_streaming};
use crate::session::{parse_conninfo, Session};

/// Restores one database of a dump snapshot with `pg_restore` (and the
/// globals with `psql` first, when asked).
pub fn restore_dump(
    repo: &Repository,
    rt: &Handle,
    snapshot: &SnapshotEntry,
    opts: &RestoreDumpOptions,
    progress: &dyn Progress,
) -> Result<RestoreDumpReport> {
    let meta = dump_meta(snapshot)?;
    let database = choose_database(snapshot, &meta, opts.database.as_ref())?;
    let item = meta.items[&database].clone();
    let cfg = parse_conninfo(&opts.conninfo)?;
    let target_db = cfg.get_dbname().unwrap_or("postgres").to_string();
    let min = client_major(rt, &cfg, meta.pg_dump_major)?;

    let mut report = RestoreDumpReport {
        database: database.clone(),
        source: snapshot.snapshot.source_name.clone(),
        bytes: 0,
        globals: false,
        globals_notices: Vec::new(),
    };
    if opts.globals {
        report.globals_notices = apply_globals(
            repo,
            snapshot,
            &cfg,
            &target_db,
            min,
            opts.no_tablespaces,
            progress,
        )?;
        report.globals = true;
    }

    let cmd = pg_restore_command(&cfg, &target_db, min, opts)?;
    report.bytes = if !item.ends_with(".dump") || opts.jobs.is_some() {
        restore_through_scratch(repo, snapshot, &item, cmd, opts.jobs, progress)?
    } else {
        // Custom format, one job: streamed from the repository into pg_restore.
        let node = dump_node(snapshot, &item)?;
        repo.note_read(Some(snapshot.id));
        let (fed, _) = run_feeding(cmd, |pipe| Ok(repo.restore_item(node, pipe, progress)?))?;
        fed
    };
    Ok(report)
}

/// The dump's metadata, when the snapshot is a dump.
fn dump_meta(snapshot: &SnapshotEntry) -> Result<DumpMeta> {
    let snap = &snapshot.snapshot;
    if snap.source_kind != DUMP_KIND {
        return Err(PgError::Refused(format!(
            "snapshot {} is a {} backup, not a pg dump; `lifeboat pg restore` restores physical backups",
            snapshot.id.short(),
            snap.source_kind
        )));
    }
    DumpMeta::of(snapshot)
}

/// The database of the dump to restore: the one asked for, which the dump
/// must hold, or its only one.
fn choose_database(
    snapshot: &SnapshotEntry,
    meta: &DumpMeta,
    asked: Option<&String>,
) -> Result<String> {
    let databases = meta.database_names();
    Ok(match (asked, databases.as_slice()) {
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
    })
}

/// The major version of the client programs: the target server's version
/// decides, as for dumps; they must also read what the dump's pg_dump
/// (of major `dump_major`) wrote.
fn client_major(rt: &Handle, cfg: &Config, dump_major: u32) -> Result<u32> {
    let session = Session::connect_with(rt, cfg)?;
    let (version_num, _) = session.server_version()?;
    drop(session);
    Ok(major_of(version_num).max(dump_major))
}

/// Applies the dump's globals (roles, tablespaces) with psql, carrying on
/// past errors (a role that exists); returns what psql said, line by line.
fn apply_globals(
    repo: &Repository,
    snapshot: &SnapshotEntry,
    cfg: &Config,
    target_db: &str,
    min: u32,
    no_tablespaces: bool,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let node = snapshot.snapshot.item(GLOBALS).ok_or_else(|| {
        PgError::Refused(format!("snapshot {} holds no globals", snapshot.id.short()))
    })?;
    let mut sql = Vec::new();
    repo.note_read(Some(snapshot.id));
    repo.restore_item(node, &mut sql, progress)?;
    if no_tablespaces {
        sql = without_tablespaces(&sql);
    }
    let (psql, _) = client_program("psql", min)?;
    let mut cmd = client(&psql, cfg);
    cmd.args([
        "-X",
        "-q",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=0",
        "-f",
        "-",
    ])
    .arg(format!("--dbname={}", conninfo_for(cfg, target_db)))
    .stdin(Stdio::piped());
    let notices = feed(cmd, &sql)?;
    Ok(notices
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// `globals.sql` without its tablespace statements (pg_dumpall writes each
/// `CREATE TABLESPACE` / `ALTER TABLESPACE` on one line).
fn without_tablespaces(sql: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(sql);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("CREATE TABLESPACE") || l.starts_with("ALTER TABLESPACE") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// The `pg_restore` command for the options, without its input.
fn pg_restore_command(
    cfg: &Config,
    target_db: &str,
    min: u32,
    opts: &RestoreDumpOptions,
) -> Result<Command> {
    let (pg_restore, _) = client_program("pg_restore", min)?;
    let mut cmd = client(&pg_restore, cfg);
    cmd.arg("--no-password")
        .arg("--exit-on-error")
        .arg(format!("--dbname={}", conninfo_for(cfg, target_db)));
    if opts.create {
        cmd.arg("--create");
    }
    if opts.no_tablespaces {
        cmd.arg("--no-tablespaces");
    }
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    for t in &opts.tables {
        cmd.arg(format!("--table={t}"));
    }
    Ok(cmd)
}

/// Restores `item` (a directory-format dump, or a custom-format one for
/// parallel jobs) into a temporary directory pg_restore can seek in, then
/// runs `cmd` on it; returns the dump's bytes.
fn restore_through_scratch(
    repo: &Repository,
    snapshot: &SnapshotEntry,
    item: &str,
    mut cmd: Command,
    jobs: Option<u32>,
    progress: &dyn Progress,
) -> Result<u64> {
    let scratch = tempfile::Builder::new()
        .prefix("lifeboat-restore-dump")
        .tempdir()
        .map_err(|e| PgError::io("create a temporary directory in", &std::env::temp_dir(), e))?;
    let (input, bytes) = if !item.ends_with(".dump") {
        let stats = repo.restore(
            &snapshot.snapshot,
            &lifeboat_repo::RestoreOptions {
                target: scratch.path().to_path_buf(),
                include: vec![lifeboat_repo::name::encode(item.as_bytes())],
                page_cache: true,
                ..Default::default()
            },
            progress,
        )?;
        (scratch.path().join(item), stats.bytes)
    } else {
        let path = scratch.path().join("dump");
        let node = dump_node(snapshot, item)?;
        let mut f = std::fs::File::create(&path).map_err(|e| PgError::io("create", &path, e))?;
        repo.note_read(Some(snapshot.id));
        let bytes = repo.restore_item(node, &mut f, progress)?;
        (path, bytes)
    };
    if let Some(j) = jobs {
        cmd.arg(format!("--jobs={}", j.max(1)));
    }
    cmd.arg(&input);
    run_streaming(cmd, |_| Ok(()))?;
    Ok(bytes)
}

fn dump_node<'a>(snapshot: &'a SnapshotEntry, item: &str) -> Result<&'a lifeboat_repo::Node> {
    snapshot.snapshot.item(item).ok_or_else(|| {
        PgError::Repo(lifeboat_repo::RepoError::Corrupt {
            key: lifeboat_repo::ObjectKey::Snapshot(snapshot.id).to_string(),
            reason: format!("it names {item} but holds no such item"),
        })
    })
}
