//! `lifeboat redis …`: RDB backups over the replication protocol and
//! checked restores.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lifeboat_ops::{Error, Result};
use lifeboat_redis as redis;
use serde_json::json;

use crate::context::Ctx;
use crate::output::{print_json, print_restore_json, secs, size, stream_stats};

#[derive(Subcommand, Debug)]
pub(crate) enum RedisCommand {
    /// Back up a Redis server: its RDB, pulled over the replication protocol
    /// (SYNC, as `redis-cli --rdb` does) and checked before it is recorded
    Backup(RedisBackupArgs),
    /// Write a backup's dump.rdb into a directory a server can start on
    /// (--verify starts a throwaway redis-server on it and compares key
    /// counts), or load it into a live server with RESTORE (--to-url)
    Restore(RedisRestoreArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RedisBackupArgs {
    /// A source named in the config file ([redis.NAME] with redis_url)
    pub(crate) source: Option<String>,
    /// `redis://[user:password@]host:port` (on a command line, `ps` shows the
    /// password: prefer --redis-url-file, LIFEBOAT_REDIS_URL or the config
    /// file)
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Read the URL from the first line of this file (the flags come before
    /// LIFEBOAT_REDIS_URL, which comes before the config file)
    #[arg(long, value_name = "PATH", conflicts_with = "redis_url")]
    redis_url_file: Option<PathBuf>,
    /// Seconds to wait for any reply, including the start of the RDB (the
    /// server may wait repl-diskless-sync-delay first)
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// For rediss://: CA certificates (PEM) to check the server's
    /// certificate against (default: the Mozilla roots)
    #[arg(long, env = "LIFEBOAT_REDIS_CA", value_name = "FILE")]
    redis_ca: Option<PathBuf>,
    /// Also back up the AOF directory (appendonlydir: manifest, base and
    /// increment files), with automatic rewrites paused for the copy; needs
    /// lifeboat beside the server
    #[arg(long)]
    aof: bool,
    /// With --aof: the server's working directory as seen from here, when it
    /// differs from its `CONFIG GET dir` (a container)
    #[arg(long, value_name = "DIR", requires = "aof")]
    aof_dir: Option<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// The source's name in snapshots (default: the source, or the URL
    /// without its password)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Record the snapshot under this time instead of now (RFC 3339, e.g.
    /// 2026-01-31T02:00:00Z): for imports, and tests of retention over years
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RedisRestoreArgs {
    /// Snapshot id, unique prefix or `latest` (the newest Redis backup)
    snapshot: String,
    /// The directory to write dump.rdb into (created when missing; an
    /// existing dump.rdb is never overwritten)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present_any = ["to_url", "to_url_file"],
        conflicts_with = "to_url"
    )]
    target_dir: Option<PathBuf>,
    /// Start a throwaway redis-server on the restored file (free loopback
    /// port) and compare its key counts with those recorded at backup time
    #[arg(long, requires = "target_dir")]
    verify: bool,
    /// Load the backup into this live server key by key with RESTORE (TTLs
    /// kept); refused when it holds keys, unless --replace
    #[arg(long, value_name = "URL", group = "live_target")]
    to_url: Option<String>,
    /// --to-url, read from the first line of this file (keeps the password
    /// off the command line)
    #[arg(
        long,
        value_name = "PATH",
        group = "live_target",
        conflicts_with = "target_dir"
    )]
    to_url_file: Option<PathBuf>,
    /// With --to-url: overwrite keys of the same name
    #[arg(long, requires = "live_target")]
    replace: bool,
    /// With a rediss:// --to-url: CA certificates (PEM) to check the
    /// server's certificate against (default: the Mozilla roots)
    #[arg(long, env = "LIFEBOAT_REDIS_CA", value_name = "FILE")]
    redis_ca: Option<PathBuf>,
    /// With --to-url: seconds to wait for any reply
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
}

pub(crate) fn run(ctx: &Ctx, cmd: RedisCommand) -> Result<()> {
    match cmd {
        RedisCommand::Backup(args) => backup(ctx, &args),
        RedisCommand::Restore(args) => restore(ctx, &args),
    }
}

fn backup(ctx: &Ctx, args: &RedisBackupArgs) -> Result<()> {
    let url = lifeboat_ops::redis::resolve_url(
        &ctx.session.file,
        args.source.as_deref(),
        args.redis_url.clone(),
        args.redis_url_file.clone(),
    )?;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let mut opts = redis::RedisBackupOptions::new(&url);
    opts.source_name = args
        .name
        .clone()
        .or(args.source.clone())
        .unwrap_or_default();
    opts.hostname = lifeboat_ops::hostname();
    opts.tags = args.tags.clone();
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    opts.aof = args.aof;
    opts.ca_file = args.redis_ca.clone();
    opts.aof_dir = args.aof_dir.clone();
    opts.time = args
        .time
        .as_deref()
        .map(crate::commands::parse_time)
        .transpose()?;
    let outcome = redis::backup(&repo, &opts, &progress)?;
    let s = &outcome.snapshot;
    let st = &s.stats;
    let m = redis::meta::RedisMeta::of_snapshot(&outcome.id, s)?;
    *ctx.made.borrow_mut() = Some(crate::context::Made::of(&outcome.id, st));
    if ctx.json {
        print_json(&json!({
            "snapshot": outcome.id.to_hex(),
            "redis_version": m.redis_version,
            "rdb": m.rdb,
            "diskless": m.diskless,
            "keyspace": m.keyspace,
            "aof_files": m.aof_files,
            "stats": st,
        }));
    } else {
        outln!(
            "redis backup {} saved: RDB version {} checked, {} keys",
            outcome.id.short(),
            m.rdb.version,
            m.keys()
        );
        outln!("  {}", stream_stats("RDB", st));
    }
    Ok(())
}

fn restore(ctx: &Ctx, args: &RedisRestoreArgs) -> Result<()> {
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let snapshot = repo
        .find_snapshot_of(&args.snapshot, redis::SOURCE_KIND)?
        .ok_or_else(|| {
            Error::usage(
                "the repository holds no Redis backup yet; take one with `lifeboat redis backup`",
            )
        })?;
    let to_url = match &args.to_url_file {
        Some(p) => Some(lifeboat_ops::secrets::first_line_of(p, "Redis URL file")?),
        None => args.to_url.clone(),
    };
    if let Some(url) = &to_url {
        let started = std::time::Instant::now();
        let report = redis::restore_to_url(
            &repo,
            &snapshot,
            url,
            args.replace,
            Duration::from_secs(args.timeout.max(1)),
            args.redis_ca.as_deref(),
            &progress,
        )?;
        let ms = started.elapsed().as_millis() as u64;
        if ctx.json {
            print_restore_json(&report, &snapshot, Some(ms));
        } else {
            let total: u64 = report.keys.values().sum();
            outln!(
                "loaded {total} keys from redis backup {} into {} in {}",
                snapshot.id.short(),
                redis::url::redact(url),
                secs(ms)
            );
            for (db, n) in &report.keys {
                outln!("  {db}: {n} keys");
            }
            if report.expired > 0 {
                outln!(
                    "  {} keys had expired since the backup and were left out",
                    report.expired
                );
            }
            if report.functions > 0 {
                outln!(
                    "  {} function libraries were not loaded: restore them with FUNCTION RESTORE",
                    report.functions
                );
            }
        }
        return Ok(());
    }
    let opts = redis::RedisRestoreOptions {
        target_dir: args.target_dir.clone().unwrap_or_default(),
    };
    let mut report = redis::restore(&repo, &snapshot, &opts, &progress)?;
    if args.verify {
        lifeboat_scenarios::sandbox::redis::verify_restore(&mut report, &snapshot)?;
    }
    if ctx.json {
        print_restore_json(&report, &snapshot, None);
    } else {
        outln!(
            "wrote {} ({}) from redis backup {}",
            report.path.display(),
            size(report.bytes),
            snapshot.id.short()
        );
        if let Some(rows) = &report.verified {
            for (db, want, got) in rows {
                outln!("  verified {db}: {got} keys loaded, {want} recorded");
            }
            outln!(
                "  a throwaway redis-server loaded it in {}",
                secs(report.load_ms.unwrap_or(0))
            );
        }
    }
    Ok(())
}
