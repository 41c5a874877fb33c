//! `lifeboat`: the command-line tool. It alone parses arguments, prints and
//! chooses exit codes; everything else lives in the library crates.
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error (including
//! a wrong password and a missing repository), 3 data damage found.

#[macro_use]
mod output;
mod agent;
mod audit;
mod commands;
mod context;
mod demo;
mod drill;
mod erasure;
mod es;
mod maintenance;
mod pg;
mod redis;
mod replicate;
mod retention;
mod runbook;

use std::path::PathBuf;
use std::process::ExitCode;

/// Heap profiling of the agent (feature `dhat-heap`, never in a normal
/// build): see the feature's note in Cargo.toml.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lifeboat_ops::{Error, ErrorClass};

#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    about = "Backup and disaster recovery that proves every backup restores",
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 data damage found."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Config file (default: $XDG_CONFIG_HOME/lifeboat/lifeboat.toml, then /etc/lifeboat/lifeboat.toml)
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Repository: a path, file://PATH, or s3://BUCKET[/PREFIX]
    #[arg(long, global = true, env = "LIFEBOAT_REPO", value_name = "URL")]
    pub(crate) repo: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:3900 (default: AWS)
    #[arg(long, global = true, env = "LIFEBOAT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1)
    #[arg(long, global = true, env = "LIFEBOAT_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Read the passphrase from the first line of this file (else LIFEBOAT_PASSWORD)
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub(crate) password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the passphrase
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_COMMAND",
        value_name = "CMD"
    )]
    pub(crate) password_command: Option<String>,
    /// Read key material (at least 32 bytes) from this file (else LIFEBOAT_KEY)
    #[arg(long, global = true, env = "LIFEBOAT_KEY_FILE", value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
    /// Run this shell command (a KMS or Vault client) and use what it prints as key material
    #[arg(long, global = true, env = "LIFEBOAT_KEY_COMMAND", value_name = "CMD")]
    pub(crate) key_command: Option<String>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress bars
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create and manage repositories and their keys
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Back up and restore files, directories and streams
    #[command(subcommand)]
    Files(FilesCommand),
    /// PostgreSQL: physical backups, WAL archiving, point-in-time restores
    #[command(subcommand)]
    Pg(pg::PgCommand),
    /// Redis: RDB backups over the replication protocol, checked restores
    #[command(subcommand)]
    Redis(redis::RedisCommand),
    /// Elasticsearch/OpenSearch: snapshots through the cluster's API,
    /// stored encrypted or orchestrated, restores with counts checked
    #[command(subcommand)]
    Es(es::EsCommand),
    /// List snapshots
    Snapshots,
    /// List the items of a snapshot
    Ls {
        /// Snapshot id, unique id prefix, or `latest`
        snapshot: String,
    },
    /// Run the whole job on the embedded default (a temporary local repository):
    /// a throwaway PostgreSQL cluster archiving into it, a base backup, an
    /// accidental DELETE, a point-in-time restore to just before it, and the
    /// measured RTO and RPO. With --files: back up a generated dataset, change
    /// 1 %, back up again, verify, restore, compare
    Demo {
        /// Keep the temporary directory (repository, clusters or dataset, restore)
        #[arg(long)]
        keep: bool,
        /// Dataset size factor (PostgreSQL: 1 ≈ 60 MB; files: 1 ≈ 30 MB)
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// The files demo instead of PostgreSQL
        #[arg(long)]
        files: bool,
        /// What goes wrong in the PostgreSQL demo: `delete` (an accidental
        /// DELETE, restored to just before it) or `lost-primary` (the
        /// primary lost with writes not yet archived: what the RPO costs)
        #[arg(long, default_value = "delete", value_parser = ["delete", "lost-primary"], conflicts_with = "files")]
        incident: String,
        /// Run in this directory (used when re-run as the postgres user)
        #[arg(long, hide = true, value_name = "DIR")]
        workdir: Option<PathBuf>,
    },
    /// Bring the replicas of the config file ([[replica]]) up to date: key
    /// slots and keyring, packs, index, WAL, snapshots last, every object
    /// checked; deletions only after each replica's delete_delay
    Replicate(replicate::ReplicateArgs),
    /// Ask the store to restore the cold objects (Glacier, Deep Archive) a
    /// snapshot needs, or say how many are ready (--status)
    Thaw(replicate::ThawArgs),
    /// What the backups cost: bytes per repository and storage class, a
    /// monthly figure from a price table, a full restore's cost per tier,
    /// and what plain compressed dumps of every backup kept would cost
    Cost,
    /// Check the repository; with --read-data, decrypt and hash-check every chunk
    Verify {
        /// Download and check every pack and chunk, not only the indexes and snapshots
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read and check only part of the data, as restic: `n/t` (group n of
        /// t groups by object id: 1/7..7/7 in turn read everything once), a
        /// random `x%`, or `all`
        #[arg(long, value_name = "SUBSET")]
        read_data_subset: Option<String>,
    },
    /// Repair what can be rebuilt: the index from the packs, and leftovers
    /// of interrupted writes
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Reclaim the space no snapshot needs: delete unused packs, repack
    /// mostly-unused ones, rewrite the index; safe while backups and WAL
    /// archiving run
    Prune(maintenance::PruneArgs),
    /// Repository totals and, per snapshot, the bytes only it holds
    Stats,
    /// Apply each source's retention policy: list every snapshot with the
    /// rules that keep it, delete the others' snapshot objects (space comes
    /// back with prune, or --prune)
    Forget(retention::ForgetArgs),
    /// Keep a snapshot whatever the retention policy says
    Hold {
        /// Snapshot id, unique id prefix, or `latest`
        snapshot: String,
        /// Why (shown by snapshots and forget)
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Stop protecting it at this date (2027-01-31, UTC) or time (RFC 3339)
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
    },
    /// Remove a snapshot's hold
    Release {
        /// Snapshot id or unique id prefix
        snapshot: String,
    },
    /// Run the schedule of the config file unattended: backups, forget and
    /// prune, verify; job history, metrics and status page on [agent] listen;
    /// SIGHUP reloads, SIGTERM stops after running jobs (within [agent] grace)
    Agent,
    /// List the job history: every run of a scheduled job, from every host
    Jobs(agent::JobsArgs),
    /// The audit log: every command that opened the repository — who, where,
    /// with which key slot, the snapshots it read, wrote and deleted, and
    /// how it ended; `audit verify` checks its hash chain
    Audit(audit::AuditArgs),
    /// Restore drills: each source's latest backup restored into a sandbox
    /// on this machine and checked (pg_amcheck and row counts, key counts,
    /// file hashes), RTO and RPO measured against the source's targets;
    /// stored in the repository's drill history
    Drill(drill::DrillArgs),
    /// The drill history: every drill, from every host
    Drills(drill::DrillsArgs),
    /// This deployment's recovery procedures (PITR, corruption, Redis loss,
    /// region loss, ransomware): the exact commands with this config's
    /// sources, repository and key location, the checks after each step,
    /// and the RTO the last drill measured
    Runbook(runbook::RunbookArgs),
    /// The erasure ledger (GDPR): requests to erase a subject, re-applied
    /// by every restore before clients see the data
    #[command(subcommand)]
    Erasure(erasure::ErasureCommand),
    /// Are we protected? Each source's last good backup against its RPO,
    /// next run, failures, firing alerts
    Status,
    /// Print the Prometheus metrics (or write them for node_exporter's
    /// textfile collector)
    Metrics(agent::MetricsArgs),
    /// The strategy's alerts (docs/alerts.md)
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlertsCommand {
    /// Print Prometheus alerting rules for every alert of the strategy,
    /// thresholds from [alerts]: lifeboat alerts rules > lifeboat-rules.yml
    Rules,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RepairCommand {
    /// Rebuild the index of every pack no intact index object lists, from
    /// the packs' own tables of contents, then remove damaged index objects
    Index {
        /// Decrypt and hash-check every chunk of those packs first; only
        /// sound ones are indexed
        #[arg(long)]
        read_data: bool,
    },
    /// Remove the temporary files of writes that never finished (a killed
    /// backup or wal-push), once they are old enough that no running write
    /// owns them
    Leftovers {
        /// Only those last written at least this long ago
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        older_than: String,
        /// List them, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RepoCommand {
    /// Create a new repository
    Init(InitArgs),
    /// Manage key slots and data keys
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Target pack size (at least 1MiB)
    #[arg(long, default_value = "16MiB", value_name = "SIZE")]
    pub(crate) pack_size: String,
    /// zstd level for chunks, 0 (none) to 19
    #[arg(long, default_value_t = 1)]
    pub(crate) compression_level: i32,
    /// Average content-defined chunk size (min is 1/4, max 4× of it)
    #[arg(long, default_value = "1MiB", value_name = "SIZE")]
    pub(crate) chunk_size: String,
    /// Argon2id memory for passphrase slots
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub(crate) kdf_memory: String,
    /// A local repository its group may read too (directories 0750, files
    /// 0640); by default only its owner may (0700, 0600)
    #[arg(long)]
    pub(crate) group_readable: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// List key slots and data-key epochs
    List,
    /// Add a key slot. The new secret comes from --new-password-file,
    /// --new-password-command or LIFEBOAT_NEW_PASSWORD (a passphrase), or from
    /// --new-key-file, --new-key-command or LIFEBOAT_NEW_KEY (key material)
    Add(KeyAddArgs),
    /// Remove a key slot (never the last one)
    Remove {
        /// The slot's id or a unique prefix of it
        id: String,
    },
    /// Start a new data-key epoch: new data gets a fresh key; nothing is re-uploaded
    Rotate {
        /// Only when the current epoch is older than this (90d): what the
        /// agent runs for [repository] rotate_after
        #[arg(long, value_name = "AGE")]
        if_older_than: Option<String>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct KeyAddArgs {
    /// A label to recognise the slot by
    #[arg(long, default_value = "")]
    pub(crate) label: String,
    /// Read the new passphrase from this file
    #[arg(long, value_name = "PATH")]
    pub(crate) new_password_file: Option<PathBuf>,
    /// Run this command for the new passphrase
    #[arg(long, value_name = "CMD")]
    pub(crate) new_password_command: Option<String>,
    /// Read new key material from this file
    #[arg(long, value_name = "PATH")]
    pub(crate) new_key_file: Option<PathBuf>,
    /// Run this command for new key material
    #[arg(long, value_name = "CMD")]
    pub(crate) new_key_command: Option<String>,
    /// Argon2id memory for a passphrase slot
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub(crate) kdf_memory: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FilesCommand {
    /// Back up files and directories, or standard input with --stdin
    Backup(BackupArgs),
    /// Restore a snapshot into a directory, or a stream to standard output
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Files and directories to back up
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub(crate) paths: Vec<PathBuf>,
    /// Back up standard input as one stream
    #[arg(long, requires = "name")]
    pub(crate) stdin: bool,
    /// The stream's name in the snapshot (with --stdin)
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Write a snapshot marked partial when some files cannot be read
    #[arg(long)]
    pub(crate) allow_partial: bool,
    /// Read every file, even those unchanged since the last snapshot
    #[arg(long)]
    pub(crate) force: bool,
    /// Host name to record (default: this machine's)
    #[arg(long, value_name = "NAME")]
    pub(crate) host: Option<String>,
    /// Record the snapshot under this time instead of now (RFC 3339, e.g.
    /// 2026-01-31T02:00:00Z): for imports of older backups, and tests of
    /// retention over years
    #[arg(long, value_name = "TIME")]
    pub(crate) time: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest`
    pub(crate) snapshot: String,
    /// Directory to restore into
    #[arg(
        long,
        required_unless_present = "stdout",
        conflicts_with = "stdout",
        value_name = "DIR"
    )]
    pub(crate) target: Option<PathBuf>,
    /// Restore only this path and what is below it (repeatable)
    #[arg(long, value_name = "PATH")]
    pub(crate) include: Vec<PathBuf>,
    /// What to do when the target is not empty: `always` replaces what is
    /// there, `if-changed` replaces files whose size or modification time
    /// differ from the snapshot's, `never` restores only what is missing.
    /// Without it, a target that is not empty is refused
    #[arg(long, value_name = "WHEN", value_parser = ["always", "if-changed", "never"])]
    pub(crate) overwrite: Option<String>,
    /// Write the snapshot's stream to standard output
    #[arg(long)]
    pub(crate) stdout: bool,
}

/// Runs the command; the exit code when it did not fail (`pg wal-fetch`
/// has codes of its own).
fn dispatch(cli: Cli, audit: Option<lifeboat_repo::AuditContext>) -> lifeboat_ops::Result<u8> {
    if let Command::Demo {
        keep,
        scale,
        files,
        incident,
        workdir,
    } = cli.command
    {
        demo::run(demo::DemoArgs {
            json: cli.global.json,
            quiet: cli.global.quiet,
            keep,
            scale: scale.max(1),
            files,
            incident: match incident.as_str() {
                "lost-primary" => lifeboat_scenarios::pitr::Incident::LostPrimary,
                _ => lifeboat_scenarios::pitr::Incident::Delete,
            },
            workdir,
        })?;
        return Ok(0);
    }
    let mut settings = context::settings(&cli.global);
    if let Command::Agent = cli.command {
        // Runs for months: few blocking threads, so few malloc arenas.
        settings.max_blocking_threads = Some(4);
    }
    let ctx = context::Ctx {
        session: lifeboat_ops::Session::new(settings)?,
        json: cli.global.json,
        quiet: cli.global.quiet,
        made: Default::default(),
        audit,
        auditor: Default::default(),
        audit_detail: Default::default(),
    };
    if let Command::Agent = cli.command {
        return agent::agent(ctx, &cli.global).map(|()| 0);
    }
    // A backup of a configured source run by hand (or by cron) is
    // recorded in the job history as the agent records its own runs.
    let manual = agent::manual_job(&cli.command);
    let started = jiff::Timestamp::now();
    let result = run(&ctx, cli.command);
    if let Some(job) = manual {
        agent::record_manual(&ctx, &job, started, &result);
    }
    audit::finish(&ctx, &result);
    result
}

/// Runs a command of the repository's (not the demo's, nor the agent's).
fn run(ctx: &context::Ctx, command: Command) -> lifeboat_ops::Result<u8> {
    use commands as c;
    match command {
        Command::Pg(cmd) => return pg::run(ctx, cmd),
        Command::Repo(RepoCommand::Init(args)) => c::init(ctx, &args),
        Command::Repo(RepoCommand::Key(k)) => c::key(ctx, k),
        Command::Files(FilesCommand::Backup(args)) => c::backup(ctx, &args),
        Command::Files(FilesCommand::Restore(args)) => c::restore(ctx, &args),
        Command::Redis(cmd) => redis::run(ctx, cmd),
        Command::Es(cmd) => es::run(ctx, cmd),
        Command::Snapshots => c::snapshots(ctx),
        Command::Ls { snapshot } => c::ls(ctx, &snapshot),
        Command::Verify {
            read_data,
            read_data_subset,
        } => c::verify(ctx, read_data, read_data_subset.as_deref()),
        Command::Repair(cmd) => c::repair(ctx, cmd),
        Command::Prune(args) => maintenance::prune(ctx, &args),
        Command::Replicate(args) => replicate::run(ctx, &args),
        Command::Thaw(args) => replicate::thaw(ctx, &args),
        Command::Cost => replicate::cost(ctx),
        Command::Stats => maintenance::stats(ctx),
        Command::Forget(args) => retention::forget(ctx, &args),
        Command::Hold {
            snapshot,
            reason,
            until,
        } => retention::hold(ctx, &snapshot, &reason, until.as_deref()),
        Command::Release { snapshot } => retention::release(ctx, &snapshot),
        Command::Jobs(args) => agent::jobs(ctx, &args),
        Command::Audit(args) => audit::run(ctx, &args),
        Command::Erasure(cmd) => erasure::run(ctx, cmd),
        Command::Drill(args) => drill::run(ctx, &args),
        Command::Drills(args) => drill::list(ctx, &args),
        Command::Runbook(args) => runbook::run(ctx, &args),
        Command::Status => agent::status(ctx),
        Command::Metrics(args) => agent::metrics(ctx, &args),
        Command::Alerts(AlertsCommand::Rules) => agent::alert_rules(ctx),
        Command::Demo { .. } | Command::Agent => Ok(()),
    }
    .map(|()| 0)
}

/// The exit code of a failure: its class decides, here and nowhere else.
fn exit_code(err: &Error) -> u8 {
    match err.class() {
        ErrorClass::Usage => 2,
        ErrorClass::Damage => 3,
        ErrorClass::Transient | ErrorClass::Failure => 1,
    }
}

/// The command line's definition, with the values of environment variables
/// never shown: clap prints `[env: LIFEBOAT_REDIS_URL=redis://:secret@…]` in
/// `--help` otherwise, and several of them hold passwords.
fn command() -> clap::Command {
    fn hide(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(hide)
    }
    hide(Cli::command())
}

/// `pg wal-fetch`'s exit code for "the archive cannot be read": above 125,
/// PostgreSQL stops recovery instead of taking the file for missing.
const FETCH_FAILED: u8 = 126;

fn main() -> ExitCode {
    // As PostgreSQL's restore_command, any failure to even start — a
    // malformed command line, a config file that does not read — must stop
    // recovery (above 125), never read as "not in the archive" (1, 2), which
    // would end recovery early and promote a server missing data.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut fetching = args.windows(2).any(|w| w[0] == "pg" && w[1] == "wal-fetch");
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, audit::context(&m, &args))));
    let (cli, audit) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if fetching && e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(FETCH_FAILED);
        }
        Err(e) => e.exit(),
    };
    fetching = matches!(cli.command, Command::Pg(pg::PgCommand::WalFetch { .. }));
    #[cfg(feature = "dhat-heap")]
    let _profiler = matches!(cli.command, Command::Agent).then(|| {
        dhat::Profiler::builder()
            .file_name(
                std::env::temp_dir()
                    .join(format!("lifeboat-dhat-heap-{}.json", std::process::id())),
            )
            .build()
    });
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = dispatch(cli, audit).and_then(|code| match output::stdout_failure() {
        Some(e) => Err(Error::Failed(format!("cannot write standard output: {e}"))),
        None => Ok(code),
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // A check that found damage has printed its report already.
            if !matches!(err, Error::DamageFound(_)) {
                eprintln!("error: {}", lifeboat_repo::report(&err));
            }
            // Run by the agent: the failure's class decides whether it
            // retries, so say it where the agent reads the report.
            if std::env::var_os("LIFEBOAT_AGENT_JOB").is_some() {
                outln!(
                    "{}",
                    serde_json::json!({"error": {"class": err.class().as_str(), "message": lifeboat_repo::report(&err)}})
                );
            }
            if fetching {
                return ExitCode::from(FETCH_FAILED);
            }
            ExitCode::from(exit_code(&err))
        }
    }
}
