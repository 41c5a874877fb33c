//! `pg dump`: every database chosen through `pg_dump` (custom format
//! streamed in, or directory format through a temporary directory) and the
//! globals through `pg_dumpall`, into one snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use lifeboat_repo::{BackupOutcome, Progress, Repository, SnapshotOptions, StreamDraft};
use tokio::runtime::Handle;
use tokio_postgres::Config;

use super::pipes::{read_ahead, READ_AHEAD_BLOCK, READ_AHEAD_BLOCKS};
use super::programs::{client, client_program, conninfo_for};
use super::{major_of, DumpOptions, DUMP_KIND, GLOBALS};
use crate::error::{PgError, Result};
use crate::meta::{DumpFormat, DumpMeta};
use crate::process::run_streaming;
use crate::session::{parse_conninfo, redact, DatabaseInfo, Session};

/// Dumps are cut into content-defined chunks of 256 KiB on average (a
/// quarter of the repository's default): a change of a few rows then costs
/// a quarter as much, and the index a few more entries.
const DUMP_CHUNKS: lifeboat_repo::ChunkerConfig = lifeboat_repo::ChunkerConfig::Cdc {
    min: 64 * 1024,
    avg: 256 * 1024,
    max: 1024 * 1024,
};

/// Dumps databases and globals into one snapshot; see the module documentation.
pub fn dump(
    repo: &Repository,
    rt: &Handle,
    opts: &DumpOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let cfg = parse_conninfo(&opts.conninfo)?;
    let (version_num, version, all) = server_facts(rt, &cfg)?;
    let chosen = choose_databases(&all, &opts.databases)?;
    let major = major_of(version_num);
    let (pg_dump, dump_major) = client_program("pg_dump", major)?;
    let (pg_dumpall, _) = client_program("pg_dumpall", major)?;

    let source_name = if opts.source_name.is_empty() {
        redact(&opts.conninfo)
    } else {
        opts.source_name.clone()
    };
    let mut draft = repo.stream_snapshot(&SnapshotOptions {
        time: opts.time,
        ..SnapshotOptions::named(DUMP_KIND, &source_name, &opts.hostname, &opts.tags)
    })?;
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
    let mut items = BTreeMap::new();
    for db in &chosen {
        let name = match (opts.jobs, &scratch) {
            (Some(jobs), Some(dir)) => {
                dump_directory(&pg_dump, &cfg, db, jobs, dir.path(), &mut draft, progress)?
            }
            _ => dump_custom(&pg_dump, &cfg, db, &mut draft, progress)?,
        };
        items.insert(db.name.clone(), name);
    }
    let without_passwords = dump_globals(&pg_dumpall, &cfg, &mut draft, progress)?;
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

/// The server's version (number and text) and its databases, on a session
/// closed again before anything is dumped.
fn server_facts(rt: &Handle, cfg: &Config) -> Result<(u32, String, Vec<DatabaseInfo>)> {
    let session = Session::connect_with(rt, cfg)?;
    let (version_num, version) = session.server_version()?;
    let all = session.databases(cfg)?;
    drop(session);
    Ok((version_num, version, all))
}

/// The databases to dump: those `asked` for, in that order, each of which
/// the server must have; every one when none is asked for.
fn choose_databases(all: &[DatabaseInfo], asked: &[String]) -> Result<Vec<DatabaseInfo>> {
    let chosen: Vec<DatabaseInfo> = if asked.is_empty() {
        all.to_vec()
    } else {
        let mut out = Vec::new();
        for name in asked {
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
    Ok(chosen)
}

/// Dumps `db` in directory format with `jobs` jobs into `scratch`, then
/// adds its files as `databases/<name>/…`; returns that item prefix.
fn dump_directory(
    pg_dump: &Path,
    cfg: &Config,
    db: &DatabaseInfo,
    jobs: u32,
    scratch: &Path,
    draft: &mut StreamDraft<'_>,
    progress: &dyn Progress,
) -> Result<String> {
    let mut cmd = client(pg_dump, cfg);
    cmd.arg("--no-password").arg("--compress=0");
    let out = scratch.join(&db.name);
    cmd.arg("--format=directory")
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg(format!("--file={}", out.display()))
        .arg(format!("--dbname={}", conninfo_for(cfg, &db.name)));
    run_streaming(cmd, |_| Ok(()))?;
    let name = format!("databases/{}", db.name);
    draft.add_dir(&name, &out, progress)?;
    std::fs::remove_dir_all(&out).map_err(|e| PgError::io("remove", &out, e))?;
    Ok(name)
}

/// Streams `db` in custom format from pg_dump's output into the item
/// `databases/<name>.dump`; returns that name.
fn dump_custom(
    pg_dump: &Path,
    cfg: &Config,
    db: &DatabaseInfo,
    draft: &mut StreamDraft<'_>,
    progress: &dyn Progress,
) -> Result<String> {
    let mut cmd = client(pg_dump, cfg);
    cmd.arg("--no-password").arg("--compress=0");
    cmd.arg("--format=custom")
        .arg(format!("--dbname={}", conninfo_for(cfg, &db.name)));
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
    Ok(name)
}

/// Roles and tablespaces, through `pg_dumpall --globals-only`, as the item
/// [`GLOBALS`]. Reading role passwords needs a superuser; a less privileged
/// role still gets the roles, without passwords (returns true then).
fn dump_globals(
    pg_dumpall: &Path,
    cfg: &Config,
    draft: &mut StreamDraft<'_>,
    progress: &dyn Progress,
) -> Result<bool> {
    let globals = |no_passwords: bool| {
        let mut cmd = client(pg_dumpall, cfg);
        cmd.arg("--globals-only")
            .arg("--no-password")
            .arg(format!("--dbname={}", conninfo_for(cfg, "postgres")));
        if no_passwords {
            cmd.arg("--no-role-passwords");
        }
        run_streaming(cmd, |out| {
            let mut text = Vec::new();
            out.read_to_end(&mut text)
                .map_err(|e| PgError::io("read the output of", pg_dumpall, e))?;
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
    Ok(without_passwords)
}
