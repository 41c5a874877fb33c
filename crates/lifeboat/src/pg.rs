//! `lifeboat pg …`: PostgreSQL physical backups, WAL archiving and restores.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lifeboat_ops::pg::resolve_source;
use lifeboat_ops::{Error, Result};
use lifeboat_postgres::server::RecoveryAction;
use lifeboat_postgres::{self as pg, PgRestoreOptions, RecoveryTarget};
use serde_json::json;

use crate::context::Ctx;
use crate::output::{print_json, rate, restore_json, secs, size};

/// `pg info`'s options: a WAL expiry plan to show beside the archive.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PgInfoArgs {
    /// Also show what WAL expiry with this point-in-time-recovery window
    /// (e.g. 30d) keeps and deletes per timeline, and the recoverable window
    /// after it; every backup counts as kept unless --keep names some
    #[arg(long, value_name = "DUR")]
    pitr_window: Option<String>,
    /// With --pitr-window: the base backups a retention policy keeps
    /// (snapshot ids or prefixes; repeatable; default: all)
    #[arg(long, value_name = "ID", requires = "pitr_window")]
    keep: Vec<String>,
    /// Only the archive per cluster (the agent's watch of the newest WAL
    /// segment): no backups, no WAL expiry plan
    #[arg(long, hide = true, conflicts_with = "pitr_window")]
    archives_only: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PgCommand {
    /// Take a physical base backup (incremental when an earlier one exists)
    Backup(PgBackupArgs),
    /// Archive one WAL file: archive_command = 'lifeboat pg wal-push %p'
    WalPush {
        /// The file PostgreSQL hands over (%p), relative to the data directory
        path: PathBuf,
        /// The data directory (default: the working directory, as PostgreSQL runs it)
        #[arg(long, value_name = "DIR")]
        pgdata: Option<PathBuf>,
    },
    /// Fetch one WAL file: restore_command = 'lifeboat pg wal-fetch %f %p'.
    /// Exits 1 when the archive does not have it, 126 when the repository
    /// cannot be read (so recovery stops with an error instead of ending early)
    WalFetch {
        /// The file name PostgreSQL asks for (%f)
        name: String,
        /// Where to write it (%p), relative to the data directory
        dest: PathBuf,
        /// The data directory (default: the working directory)
        #[arg(long, value_name = "DIR")]
        pgdata: Option<PathBuf>,
        /// Fetch from this replica of the config file ([[replica]] name)
        /// instead of the repository (a drill of a region loss)
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
    },
    /// Restore a base backup into a data directory, set up to recover to a target
    Restore(PgRestoreArgs),
    /// List base backups, the WAL archive per timeline (with gaps) and the
    /// recoverable window
    Info(PgInfoArgs),
    /// Delete the archived WAL that the kept base backups and the
    /// point-in-time-recovery window do not need (what `forget` will run;
    /// for tests until then)
    #[command(hide = true)]
    WalExpire {
        #[command(flatten)]
        plan: PgInfoArgs,
        /// Show the plan, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Take a logical backup: pg_dump of each database (custom format,
    /// streamed into the repository; directory format with --jobs) and
    /// pg_dumpall --globals-only, in one snapshot
    Dump(PgDumpArgs),
    /// Restore one database of a pg dump snapshot with pg_restore (roles and
    /// tablespaces first with --globals)
    RestoreDump(PgRestoreDumpArgs),
    /// Check that a running cluster archives into this repository: settings,
    /// a forced WAL switch fetched back, WAL gaps, the age of the newest segment
    Check {
        /// A source named in the config file ([postgres.NAME])
        source: Option<String>,
        /// How to connect: key=value pairs or a postgresql:// URL
        #[arg(long, env = "LIFEBOAT_PG_URL", value_name = "CONNINFO")]
        pg_url: Option<String>,
        /// Seconds to wait for the switched segment to reach the repository
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
}

#[derive(Args, Debug)]
pub(crate) struct PgBackupArgs {
    /// A source named in the config file ([postgres.NAME] with pgdata and pg_url)
    pub(crate) source: Option<String>,
    /// The cluster's data directory
    #[arg(long, env = "PGDATA", value_name = "DIR")]
    pgdata: Option<PathBuf>,
    /// How to connect: key=value pairs or a postgresql:// URL (Unix sockets: host=/var/run/postgresql)
    #[arg(long, env = "LIFEBOAT_PG_URL", value_name = "CONNINFO")]
    pg_url: Option<String>,
    /// `full` reads every file; `incr` (default) reuses files unchanged since the last backup
    #[arg(long = "type", default_value = "incr", value_parser = ["full", "incr"])]
    pub(crate) backup_type: String,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record the backup even when data pages fail their checksums
    #[arg(long)]
    allow_checksum_errors: bool,
    /// Seconds to wait for the backup's WAL to reach the repository (default 60)
    #[arg(long, value_name = "SECS")]
    archive_timeout: Option<u64>,
    /// Wait for a spread checkpoint instead of asking for an immediate one
    #[arg(long)]
    no_fast_checkpoint: bool,
    /// The source's name in snapshots (default: the data directory)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Record the snapshot under this time (RFC 3339), as restic's
    /// `backup --time`: for imports and retention tests. Restores still
    /// choose a backup by when it really ended
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct PgDumpArgs {
    /// A source named in the config file ([postgres.NAME] with pg_url)
    pub(crate) source: Option<String>,
    /// How to connect: key=value pairs or a postgresql:// URL; its database is
    /// where lifeboat lists the others
    #[arg(long, env = "LIFEBOAT_PG_URL", value_name = "CONNINFO")]
    pg_url: Option<String>,
    /// Dump this database (repeatable; default: every database that allows
    /// connections and is not a template)
    #[arg(long = "database", value_name = "NAME")]
    databases: Vec<String>,
    /// Dump in directory format with N parallel jobs (through a temporary
    /// directory); default: custom format, streamed with no temporary file
    #[arg(long, value_name = "N")]
    jobs: Option<u32>,
    /// Run lifeboat and pg_dump this much nicer than now (0: not at all). The
    /// server's COPY, one core per database, limits a dump; at a lower
    /// priority lifeboat's compression fills the other cores instead of
    /// taking time from it
    #[arg(long, default_value_t = 10, value_name = "N")]
    nice: i32,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// The source's name in snapshots (default: the source, or the connection
    /// without its password)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Record the snapshot under this time instead of now (RFC 3339, e.g.
    /// 2026-01-31T02:00:00Z): for imports, and tests of retention over years
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct PgRestoreDumpArgs {
    /// Snapshot id, unique prefix or `latest` (the newest pg dump)
    snapshot: String,
    /// The server and database to restore into (with --create: the database
    /// to connect to first)
    #[arg(long, env = "LIFEBOAT_PG_URL", value_name = "CONNINFO")]
    pg_url: String,
    /// The snapshot's database to restore (required when it holds several)
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
    /// Restore only this table (repeatable)
    #[arg(long = "table", value_name = "TABLE")]
    tables: Vec<String>,
    /// Parallel pg_restore jobs (the dump is written to a temporary file first)
    #[arg(long, value_name = "N")]
    jobs: Option<u32>,
    /// Create the database under its own name (pg_restore --create)
    #[arg(long)]
    create: bool,
    /// Drop objects before recreating them (pg_restore --clean --if-exists)
    #[arg(long)]
    clean: bool,
    /// Apply the snapshot's roles and tablespaces (globals.sql, with psql) first
    #[arg(long)]
    globals: bool,
    /// Do not re-apply the erasure ledger after the restore (the audit log
    /// records that this was asked)
    #[arg(long)]
    skip_erasures: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PgRestoreArgs {
    /// Snapshot id, unique prefix or `latest` (default: chosen by the target)
    snapshot: Option<String>,
    /// The data directory to create
    #[arg(long, value_name = "DIR")]
    pgdata: PathBuf,
    /// Recover to this time (UTC): 2026-11-24T10:00:00Z
    #[arg(long, value_name = "TIME", group = "target")]
    target_time: Option<String>,
    /// Recover to this LSN: 0/3000060
    #[arg(long, value_name = "LSN", group = "target")]
    target_lsn: Option<String>,
    /// Recover to this transaction id
    #[arg(long, value_name = "XID", group = "target")]
    target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME", group = "target")]
    target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, group = "target")]
    immediate: bool,
    /// What the server does at the target
    #[arg(long, default_value = "pause", value_parser = ["pause", "promote", "shutdown"])]
    target_action: String,
    /// The timeline to recover along: a number, `current` or `latest`
    /// (default: latest, refused when histories that part before the target
    /// leave a choice; `pg info` lists the timelines)
    #[arg(long, value_name = "TLI")]
    target_timeline: Option<String>,
    /// `off` (default): the restored server does not archive WAL, so a
    /// trial restore adds no timeline to the source's archive; `preserve`
    /// (default with --standby, which is restored to take over): it
    /// archives as the source did, for a server that replaces the source
    #[arg(long, value_parser = ["off", "preserve"], value_name = "MODE")]
    archive_mode: Option<String>,
    /// Restore a standby (standby.signal)
    #[arg(long)]
    standby: bool,
    /// primary_conninfo for a standby
    #[arg(long, value_name = "CONNINFO", requires = "standby")]
    primary_conninfo: Option<String>,
    /// Restore into a non-empty directory, replacing what differs
    #[arg(long)]
    delta: bool,
    /// The restore_command to write (default: this lifeboat with this repository and key)
    #[arg(long, value_name = "CMD")]
    restore_command: Option<String>,
    /// Restore a tablespace into another directory: OLD (its directory or
    /// OID in the backup) = NEW (an absolute path). Repeatable
    #[arg(long, value_name = "OLD=NEW")]
    tablespace_map: Vec<String>,
    /// Start the server (pg_ctl, as the data directory's owner), wait until
    /// recovery reaches the target, and report how long restore and recovery took
    #[arg(long)]
    start: bool,
    /// With --start: do not re-apply the erasure ledger before the server
    /// opens to clients (the audit log records that this was asked)
    #[arg(long)]
    skip_erasures: bool,
    /// With --start: seconds to wait for recovery to finish
    #[arg(long, default_value_t = 3600, value_name = "SECS", requires = "start")]
    start_timeout: u64,
}

/// Runs a `pg` command; the exit code when it did not fail: `wal-fetch`
/// speaks to PostgreSQL's restore_command, for which 1 means "not in the
/// archive" (asked for as a matter of course, so said quietly) and 126 "the
/// repository cannot be read" (recovery stops rather than ending early).
pub(crate) fn run(ctx: &Ctx, cmd: PgCommand) -> Result<u8> {
    match cmd {
        PgCommand::Backup(args) => backup(ctx, &args),
        PgCommand::WalPush { path, pgdata } => {
            let pgdata = pgdata.unwrap_or_else(|| PathBuf::from("."));
            let repo = ctx.open()?;
            let report = pg::archive::wal_push(&repo, &pgdata, &path)?;
            if ctx.json {
                print_json(&json!(report));
            }
            Ok(())
        }
        PgCommand::WalFetch {
            name,
            dest,
            pgdata,
            replica,
        } => {
            let pgdata = pgdata.unwrap_or_else(|| PathBuf::from("."));
            let repo = match &replica {
                None => ctx.open(),
                Some(r) => ctx
                    .session
                    .file
                    .replica
                    .iter()
                    .find(|x| &x.name == r)
                    .ok_or_else(|| {
                        Error::usage(format!("no [[replica]] named {r:?} in the config file"))
                    })
                    .and_then(|section| ctx.open_replica(section)),
            };
            let found =
                repo.and_then(|repo| Ok(pg::archive::wal_fetch(&repo, &pgdata, &name, &dest)?));
            return Ok(match found {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!(
                        "error: {}; recovery stops here rather than treating the WAL as missing",
                        lifeboat_repo::report(&e)
                    );
                    126
                }
            });
        }
        PgCommand::Restore(args) => restore(ctx, &args),
        PgCommand::Dump(args) => dump(ctx, &args),
        PgCommand::RestoreDump(args) => restore_dump(ctx, &args),
        PgCommand::Info(args) => info(ctx, &args),
        PgCommand::WalExpire { plan, dry_run } => wal_expire(ctx, &plan, dry_run),
        PgCommand::Check {
            source,
            pg_url,
            timeout,
        } => {
            let src = resolve_source(&ctx.session.file, source.as_deref(), None, pg_url, false)?;
            check(ctx, &src.pg_url, timeout)
        }
    }
    .map(|()| 0)
}

fn backup(ctx: &Ctx, args: &PgBackupArgs) -> Result<()> {
    let src = resolve_source(
        &ctx.session.file,
        args.source.as_deref(),
        args.pgdata.clone(),
        args.pg_url.clone(),
        true,
    )?;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let pgdata = std::path::absolute(&src.pgdata)
        .map_err(|e| Error::io(format!("make {} absolute", src.pgdata.display()), e))?;
    let mut opts = pg::BackupOptions::new(pgdata, src.pg_url);
    if let Some(n) = args.name.as_ref().or(args.source.as_ref()) {
        opts.source_name = n.clone();
    }
    opts.hostname = lifeboat_ops::hostname();
    opts.tags = args.tags.clone();
    opts.full = args.backup_type == "full";
    opts.fast_checkpoint = !args.no_fast_checkpoint;
    opts.allow_checksum_errors = args.allow_checksum_errors;
    opts.time = args
        .time
        .as_deref()
        .map(crate::commands::parse_time)
        .transpose()?;
    opts.archive_timeout = Duration::from_secs(
        args.archive_timeout
            .or(src.archive_timeout)
            .unwrap_or(60)
            .max(1),
    );
    let outcome = pg::backup(&repo, ctx.handle(), &opts, &progress)?;
    let s = &outcome.snapshot;
    let st = &s.stats;
    let m = pg::meta::BackupMeta::of_snapshot(&outcome.id, s)?;
    *ctx.made.borrow_mut() = Some(crate::context::Made::of(&outcome.id, st));
    if ctx.json {
        print_json(&json!({
            "snapshot": outcome.id.to_hex(),
            "type": m.backup_type,
            "start_lsn": m.start_lsn,
            "stop_lsn": m.stop_lsn,
            "wal_start": m.wal_start,
            "wal_stop": m.wal_stop,
            "timeline": m.timeline,
            "parent": s.parent.map(|p| p.to_hex()),
            "stats": st,
        }));
    } else {
        outln!(
            "{} backup {} saved: LSN {} to {}, WAL {} to {}",
            m.backup_type,
            outcome.id.short(),
            m.start_lsn,
            m.stop_lsn,
            m.wal_start,
            m.wal_stop,
        );
        outln!(
            "  {} files, {} in all; read {}, new {}, stored {}; took {} ({})",
            st.files,
            size(st.bytes_total),
            size(st.bytes_read),
            size(st.bytes_new),
            size(st.bytes_stored),
            secs(st.duration_ms),
            rate(st.bytes_read, st.duration_ms)
        );
    }
    Ok(())
}

fn dump(ctx: &Ctx, args: &PgDumpArgs) -> Result<()> {
    let pg_url = resolve_source(
        &ctx.session.file,
        args.source.as_deref(),
        None,
        args.pg_url.clone(),
        false,
    )?
    .pg_url;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    if args.nice > 0 {
        // This thread's priority, inherited by the writer's threads and by
        // pg_dump, which are started after this; a refusal is not an error.
        if let Ok(now) = rustix::process::getpriority_process(None) {
            let _ = rustix::process::setpriority_process(None, (now + args.nice).min(19));
        }
    }
    let opts = pg::dump::DumpOptions {
        conninfo: pg_url,
        databases: args.databases.clone(),
        jobs: args.jobs,
        source_name: args
            .name
            .clone()
            .or(args.source.clone())
            .unwrap_or_default(),
        hostname: lifeboat_ops::hostname(),
        tags: args.tags.clone(),
        time: args
            .time
            .as_deref()
            .map(crate::commands::parse_time)
            .transpose()?,
    };
    let outcome = pg::dump::dump(&repo, ctx.handle(), &opts, &progress)?;
    let s = &outcome.snapshot;
    let st = &s.stats;
    let m = pg::meta::DumpMeta::of_snapshot(&outcome.id, s)?;
    *ctx.made.borrow_mut() = Some(crate::context::Made::of(&outcome.id, st));
    let databases = m.database_names();
    if ctx.json {
        print_json(&json!({
            "snapshot": outcome.id.to_hex(),
            "databases": databases,
            "format": m.format,
            "globals_without_passwords": m.globals_without_passwords,
            "stats": st,
        }));
    } else {
        outln!(
            "pg dump {} saved: {} and globals",
            outcome.id.short(),
            databases.join(", ")
        );
        outln!("  {}", crate::output::stream_stats("of dumps", st));
    }
    Ok(())
}

fn restore_dump(ctx: &Ctx, args: &PgRestoreDumpArgs) -> Result<()> {
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let snapshot = pg::dump::find_dump(&repo, &args.snapshot)?;
    // Refused before anything is restored when requests exist that the
    // config cannot carry out.
    let ledger = if args.skip_erasures {
        None
    } else {
        lifeboat_ops::erasure::ledger(&repo, &ctx.session.file, &snapshot.snapshot.source_name)?
    };
    let opts = pg::dump::RestoreDumpOptions {
        conninfo: args.pg_url.clone(),
        database: args.database.clone(),
        tables: args.tables.clone(),
        jobs: args.jobs,
        create: args.create,
        clean: args.clean,
        globals: args.globals,
        no_tablespaces: false,
    };
    let started = std::time::Instant::now();
    let report = pg::dump::restore_dump(&repo, ctx.handle(), &snapshot, &opts, &progress)?;
    drop(progress);
    // Not for a table-filtered restore (the statements would name tables
    // that are not there), nor a database other than erase_database.
    let skip = match &ledger {
        Some(_) if !args.tables.is_empty() => Some("a restore of some tables only"),
        Some(l) if l.database.as_deref().is_some_and(|d| d != report.database) => {
            Some("the database restored is not the source's erase_database")
        }
        _ => None,
    };
    if let (Some(why), Some(l)) = (skip, &ledger) {
        eprintln!(
            "warning: the erasure ledger ({} subject(s)) was not re-applied: {why}; run `lifeboat erasure apply --source {} --pg-url URL` where the subjects' rows are",
            l.subjects.len(),
            l.source
        );
    }
    let erased = match ledger.as_ref().filter(|_| skip.is_none()) {
        Some(ledger) => {
            let mut cfg = pg::session::parse_conninfo(&args.pg_url)?;
            if args.create {
                cfg.dbname(&report.database);
            }
            Some(lifeboat_ops::erasure::apply(ctx.handle(), ledger, &cfg).map_err(|e| {
                Error::Failed(format!(
                    "the dump was restored into database {}, but the erasure ledger of source {:?} could not be re-applied: {}. Keep clients away from it, fix erase_sql, then run `lifeboat erasure apply --source {} --pg-url URL`",
                    report.database,
                    ledger.source,
                    lifeboat_repo::report(&e),
                    ledger.source
                ))
            })?)
        }
        None => None,
    };
    let ms = started.elapsed().as_millis() as u64;
    if ctx.json {
        let mut v = restore_json(&report, &snapshot, Some(ms));
        if let Some(e) = &erased {
            v["erased"] = json!(e);
        }
        print_json(&v);
    } else {
        outln!(
            "restored database {} from pg dump {}{} in {}",
            report.database,
            snapshot.id.short(),
            if report.globals {
                " (with roles and tablespaces)"
            } else {
                ""
            },
            secs(ms)
        );
        for n in &report.globals_notices {
            outln!("  psql: {n}");
        }
        if let Some(e) = &erased {
            outln!(
                "  erasure ledger re-applied: {} subject(s), {} row(s) erased",
                e.subjects,
                e.rows
            );
        }
    }
    Ok(())
}

fn restore(ctx: &Ctx, args: &PgRestoreArgs) -> Result<()> {
    let target = if let Some(t) = &args.target_time {
        RecoveryTarget::Time(pg::parse_target_time(t)?)
    } else if let Some(l) = &args.target_lsn {
        RecoveryTarget::Lsn(
            l.parse()
                .map_err(|e| Error::usage(format!("--target-lsn: {e}")))?,
        )
    } else if let Some(x) = args.target_xid {
        RecoveryTarget::Xid(x)
    } else if let Some(n) = &args.target_name {
        RecoveryTarget::Name(n.clone())
    } else if args.immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::End
    };
    let restore_command = match &args.restore_command {
        Some(c) => c.clone(),
        None => {
            let exe =
                std::env::current_exe().map_err(|e| Error::io("find this program's path", e))?;
            ctx.session.restore_command(&exe)?
        }
    };
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let mut opts = PgRestoreOptions {
        pgdata: std::path::absolute(&args.pgdata)
            .map_err(|e| Error::io(format!("make {} absolute", args.pgdata.display()), e))?,
        snapshot: args.snapshot.clone(),
        target,
        target_action: args.target_action.clone(),
        target_timeline: args.target_timeline.clone(),
        standby: args.standby,
        primary_conninfo: args.primary_conninfo.clone(),
        delta: args.delta,
        restore_command,
        tablespace_map: args
            .tablespace_map
            .iter()
            .map(|m| {
                m.split_once('=')
                    .map(|(o, n)| (o.to_string(), PathBuf::from(n)))
                    .ok_or_else(|| Error::usage(format!("--tablespace-map {m:?}: give OLD=NEW")))
            })
            .collect::<Result<_, _>>()?,
        archive_mode: match args.archive_mode.as_deref() {
            Some("preserve") => pg::ArchiveMode::Preserve,
            Some(_) => pg::ArchiveMode::Off,
            None if args.standby => pg::ArchiveMode::Preserve,
            None => pg::ArchiveMode::Off,
        },
    };
    // The erasure ledger of the backup's source: refused before anything is
    // restored when requests exist that the config cannot carry out.
    let chosen = pg::choose_snapshot(&repo, &opts)?;
    opts.snapshot = Some(chosen.id.to_hex());
    let source = chosen.snapshot.source_name.clone();
    drop(chosen);
    let ledger = if args.start && !args.skip_erasures {
        lifeboat_ops::erasure::ledger(&repo, &ctx.session.file, &source)?
    } else {
        None
    };
    let report = pg::restore(&repo, &opts, &progress)?;
    drop(progress);
    let recovery = if args.start {
        let action = RecoveryAction::of_restore(
            args.standby,
            opts.target == RecoveryTarget::End,
            &args.target_action,
        );
        Some(lifeboat_ops::pg::start_restored(
            ctx.handle(),
            &opts.pgdata,
            action,
            Duration::from_secs(args.start_timeout.max(1)),
            ledger.as_ref(),
        )?)
    } else {
        None
    };
    let pending_subjects = if args.start || args.skip_erasures {
        0
    } else {
        repo.erasure_subjects(&source)?.len()
    };
    // primary_conninfo may hold a password: shown without it.
    let shown: Vec<(String, String)> = report
        .settings
        .iter()
        .map(|(k, v)| {
            let v = if k == "primary_conninfo" {
                pg::session::redact(v)
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    if ctx.json {
        let mut v = json!(report);
        v["settings"] = json!(shown);
        if let Some(r) = &recovery {
            v["recovery"] = json!({"state": r.state, "duration_ms": r.duration_ms,
                "total_ms": report.stats.duration_ms + r.duration_ms,
                "erased": r.erased, "erasure_pending": r.erasure_pending});
        }
        if pending_subjects > 0 {
            v["erasure_pending_subjects"] = json!(pending_subjects);
        }
        print_json(&v);
    } else {
        outln!(
            "restored backup {} into {}: {} files, {} in {}",
            &report.snapshot[..8],
            opts.pgdata.display(),
            report.stats.files,
            size(report.stats.bytes),
            secs(report.stats.duration_ms)
        );
        for (k, v) in &shown {
            outln!("  {k} = {v}");
        }
        if opts.archive_mode == pg::ArchiveMode::Off {
            outln!(
                "  archiving is off in the restored server (--archive-mode off): it adds nothing to this repository. If it replaces the source, turn it back on (ALTER SYSTEM RESET archive_mode; restart) or restore with --archive-mode preserve"
            );
        }
        match &recovery {
            Some(r) => outln!(
                "server started: {} after {} of recovery; restore and recovery took {} in all",
                r.state,
                secs(r.duration_ms),
                secs(report.stats.duration_ms + r.duration_ms)
            ),
            None => outln!(
                "  start the server (pg_ctl start -D {}) to recover, or restore with --start",
                opts.pgdata.display()
            ),
        }
        if let Some(e) = recovery.as_ref().and_then(|r| r.erased.as_ref()) {
            outln!(
                "  erasure ledger re-applied before clients could connect: {} subject(s), {} row(s) erased",
                e.subjects,
                e.rows
            );
        }
        if let Some(p) = recovery.as_ref().and_then(|r| r.erasure_pending.as_ref()) {
            eprintln!("warning: {p}");
        }
        if pending_subjects > 0 {
            eprintln!(
                "warning: the erasure ledger holds {pending_subjects} subject(s) of source {source:?}: restore with --start to re-apply it before clients connect, or run `lifeboat erasure apply --source {source}` before they do"
            );
        }
    }
    Ok(())
}

/// The WAL expiry plans `args` asks for, one per cluster with backups.
fn expiry_plans(
    repo: &lifeboat_repo::Repository,
    args: &PgInfoArgs,
) -> Result<Vec<pg::expire::WalExpiryPlan>> {
    let Some(window) = &args.pitr_window else {
        return Ok(Vec::new());
    };
    let span = humantime::parse_duration(window)
        .map_err(|e| Error::usage(format!("--pitr-window {window:?}: {e}")))?;
    let window_start = std::time::SystemTime::now()
        .checked_sub(span)
        .and_then(|t| lifeboat_repo::Timestamp::try_from(t).ok())
        .ok_or_else(|| Error::usage(format!("--pitr-window {window:?} is too long")))?;
    let all = pg::inspect::backups(repo)?;
    let kept = if args.keep.is_empty() {
        all.clone()
    } else {
        let mut kept = Vec::new();
        for spec in &args.keep {
            let e = repo.find_snapshot(spec)?;
            if e.snapshot.source_kind != pg::SOURCE_KIND {
                return Err(Error::usage(format!(
                    "--keep {spec}: snapshot {} is not a PostgreSQL base backup",
                    e.id.short()
                )));
            }
            kept.push(e);
        }
        kept
    };
    let mut systems: Vec<String> = Vec::new();
    for b in &all {
        let id = pg::meta::BackupMeta::of(b)?.system_identifier.to_string();
        if !systems.contains(&id) {
            systems.push(id);
        }
    }
    let mut plans = Vec::new();
    for s in systems {
        plans.push(pg::expire::plan_wal_expiry(repo, &s, &kept, window_start)?);
    }
    Ok(plans)
}

pub(crate) fn print_expiry(p: &pg::expire::WalExpiryPlan, window: &str) {
    outln!(
        "\nWAL expiry of system {} (point-in-time-recovery window {window}, from {}):",
        p.system_identifier,
        p.window_start
    );
    if let Some(r) = &p.refused {
        outln!("  nothing deleted: {r}");
    }
    for t in &p.timelines {
        let kept: Vec<String> = t
            .kept
            .iter()
            .map(|k| match &k.last {
                Some(l) if *l == k.first => format!("{} ({})", k.first, k.reason),
                Some(l) => format!("{} to {} ({})", k.first, l, k.reason),
                None => format!("{} onward ({})", k.first, k.reason),
            })
            .collect();
        outln!("  timeline {}: keeps {}", t.timeline, kept.join("; "));
        outln!(
            "    deletes {} file(s), {}",
            t.delete_count,
            size(t.delete_bytes)
        );
    }
    let window = |a: &pg::inspect::ArchiveInfo| {
        format!(
            "{} to {}",
            a.recoverable_from.as_deref().unwrap_or("?"),
            a.recoverable_to.as_deref().unwrap_or("?")
        )
    };
    outln!("  recoverable now:   {}", window(&p.before));
    outln!("  recoverable after: {}", window(&p.after));
}

fn wal_expire(ctx: &Ctx, args: &PgInfoArgs, dry_run: bool) -> Result<()> {
    if args.pitr_window.is_none() {
        return Err(Error::usage("pg wal-expire needs --pitr-window"));
    }
    let repo = ctx.open()?;
    let plans = expiry_plans(&repo, args)?;
    let mut reports = Vec::new();
    for p in &plans {
        if !dry_run {
            reports.push(pg::expire::expire_wal(&repo, p, None)?);
        }
    }
    if ctx.json {
        print_json(&json!({ "plans": plans, "reports": reports, "dry_run": dry_run }));
        return Ok(());
    }
    for p in &plans {
        print_expiry(p, args.pitr_window.as_deref().unwrap_or("?"));
    }
    for r in &reports {
        outln!("deleted {} file(s), {}", r.deleted, size(r.bytes));
    }
    Ok(())
}

fn info(ctx: &Ctx, args: &PgInfoArgs) -> Result<()> {
    let repo = ctx.open()?;
    let mut info = pg::inspect::info(&repo)?;
    if args.archives_only {
        print_json(&json!({ "archives": info.archives }));
        return Ok(());
    }
    // What WAL expiry would do: with --pitr-window as asked, else what the
    // retention policies would do now (a `forget --dry-run`).
    let mut windows: Vec<String> = Vec::new();
    let mut note = None;
    if args.pitr_window.is_some() {
        info.wal_expiry = expiry_plans(&repo, args)?;
        windows = vec![args.pitr_window.clone().unwrap_or_default(); info.wal_expiry.len()];
    } else if !info.backups.is_empty() {
        let opts = lifeboat_ops::retention::ForgetOptions {
            dry_run: true,
            ..Default::default()
        };
        match lifeboat_ops::retention::forget(&repo, &ctx.session.file, &opts) {
            Ok(r) => {
                for w in r.wal {
                    windows.push(w.window);
                    info.wal_expiry.push(w.plan);
                }
            }
            Err(e) => note = Some(format!("the retention policy cannot be applied: {e}")),
        }
    }
    let key_age = repo
        .current_epoch_created()
        .map(|c| (jiff::Timestamp::now().as_second() - c).max(0));
    if ctx.json {
        let mut v = json!(info);
        v["key_epoch_age_seconds"] = json!(key_age);
        print_json(&v);
        return Ok(());
    }
    if let Some(age) = key_age {
        outln!(
            "data key: current epoch {} old (repo key list; [repository] rotate_after)",
            lifeboat_agent::state::words(age as f64)
        );
    }
    if info.backups.is_empty() {
        outln!("no PostgreSQL backups in this repository; take one with `lifeboat pg backup`");
        return Ok(());
    }
    outln!(
        "{:<8}  {:<20}  {:<4}  {:>3}  {:<21}  {:<24}  {:>9}  {:>9}  {:>9}  {:>7}",
        "ID",
        "ENDED",
        "TYPE",
        "TL",
        "LSN",
        "WAL",
        "ORIGINAL",
        "STORED",
        "NEW",
        "TOOK"
    );
    for b in &info.backups {
        outln!(
            "{:<8}  {:<20}  {:<4}  {:>3}  {:<21}  {:<24}  {:>9}  {:>9}  {:>9}  {:>7}",
            &b.id[..8],
            b.end_time
                .get(..19)
                .unwrap_or(&b.end_time)
                .replace('T', " "),
            b.kind,
            b.timeline,
            format!("{}-{}", b.start_lsn, b.stop_lsn),
            if b.wal_start == b.wal_stop {
                b.wal_start.clone()
            } else {
                format!("{}+", b.wal_start)
            },
            size(b.bytes_original),
            size(b.bytes_stored),
            size(b.bytes_new),
            secs(b.duration_ms)
        );
    }
    for a in &info.archives {
        outln!("\nWAL archive of system {}:", a.system_identifier);
        for t in &a.timelines {
            outln!(
                "  timeline {}: {} segment(s), {} to {}{}",
                t.timeline,
                t.segments,
                t.first.as_deref().unwrap_or("-"),
                t.last.as_deref().unwrap_or("-"),
                t.last_stored
                    .as_ref()
                    .map(|s| format!(" (last stored {s})"))
                    .unwrap_or_default()
            );
            if let Some(h) = &t.history {
                outln!("    {}", pg::timelines::describe(h));
            }
            for g in &t.gaps {
                outln!(
                    "    GAP: {} to {} missing; recovery cannot pass it",
                    g.first,
                    g.last
                );
            }
        }
        outln!(
            "  recoverable from {} to about {}",
            a.recoverable_from.as_deref().unwrap_or("?"),
            a.recoverable_to
                .as_deref()
                .unwrap_or("? (no backup has all the WAL it needs)")
        );
    }
    for (p, w) in info.wal_expiry.iter().zip(&windows) {
        print_expiry(p, w);
    }
    if let Some(n) = note {
        outln!("\n{n}");
    }
    Ok(())
}

fn check(ctx: &Ctx, pg_url: &str, timeout: u64) -> Result<()> {
    let repo = ctx.open()?;
    let report = pg::inspect::check(
        &repo,
        ctx.handle(),
        pg_url,
        Duration::from_secs(timeout.max(1)),
    )?;
    if ctx.json {
        print_json(&json!(report));
    } else {
        for c in &report.checks {
            outln!(
                "{:<4}  {:<16} {}",
                c.status.as_str().to_uppercase(),
                c.name,
                c.detail
            );
        }
    }
    if report.ok() {
        Ok(())
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == pg::inspect::CheckStatus::Fail)
            .map(|c| c.name.as_str())
            .collect();
        Err(Error::CheckFailed(format!(
            "pg check failed: {}",
            failed.join(", ")
        )))
    }
}
