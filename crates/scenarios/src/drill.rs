//! Restore drills: a source's latest backup restored into a sandbox on this
//! machine and checked, without touching the source — what the strategy's
//! monthly restore test asks, as a library call that returns what it found.
//!
//! - **PostgreSQL base backups**: restored and recovered (WAL fetched from
//!   the repository) to the newest archived WAL or a target time, in a
//!   directory of the sandbox, started on a free port with no TCP listener
//!   and a socket only the server's user reaches, as that unprivileged user;
//!   the erasure ledger re-applied; `pg_amcheck` (heap and B-tree indexes)
//!   on every database; the row counts of the largest tables against those
//!   recorded at backup time; RTO (restore + recovery) and RPO (the newest
//!   point reached against the drill's start).
//! - **PostgreSQL dumps**: every database `pg_restore`d into a throwaway
//!   cluster made with `initdb`, the ledger re-applied, the same checks.
//! - **Redis**: the RDB (and AOF) written and loaded by a throwaway
//!   redis-server; keys per database against the backup's.
//! - **Files**: restored, and every file's BLAKE3 hash and size compared
//!   with the content the snapshot holds.
//!
//! Each drill's sandbox is a directory `lifeboat-drill-<pid>-*` of the work
//! directory, removed when the drill ends, fails or panics; one a killed
//! drill left is swept (its servers stopped) by the next drill
//! ([`sweep`]). The repository is only read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use lifeboat_ops::erasure::Ledger;
use lifeboat_postgres::meta::{BackupMeta, DumpMeta};
use lifeboat_postgres::server::{as_user, give_to_owner, server_user, RecoveryAction};
use lifeboat_postgres::{self as pg, PgRestoreOptions, RecoveryTarget};
use lifeboat_repo::{
    DrillCheck, Progress, Repository, RestoreOptions, SnapshotEntry, SourceDrill, Timestamp,
};

use crate::sandbox::pg::Cluster;

/// What a drill is asked.
pub struct DrillOptions<'a> {
    /// Where sandboxes go (a directory with room for the restore).
    pub workdir: PathBuf,
    /// Recover PostgreSQL to this time instead of the newest archived WAL.
    pub target_time: Option<SystemTime>,
    /// The most disk a drill may take; a restore that needs more is not
    /// started.
    pub max_disk: Option<u64>,
    /// The `restore_command` the restored PostgreSQL server fetches WAL
    /// with (this program, this repository, a secret it can read).
    pub restore_command: String,
    /// The erasure ledger of the source, when it has requests.
    pub ledger: Option<Ledger>,
    /// The source's RTO target.
    pub rto: Duration,
    /// The source's RPO target.
    pub rpo: Duration,
    /// Restore progress.
    pub progress: &'a dyn Progress,
}

/// The checks of one source's drill as they are made.
struct Run {
    drill: SourceDrill,
}

impl Run {
    fn new(entry: &SnapshotEntry, kind: &str, opts: &DrillOptions<'_>) -> Run {
        Run {
            drill: SourceDrill {
                source: entry.snapshot.source_name.clone(),
                kind: kind.to_string(),
                snapshot: entry.id.to_hex(),
                snapshot_time: entry.snapshot.start_time,
                passed: false,
                checks: Vec::new(),
                restore_ms: 0,
                recovery_ms: 0,
                rto_ms: 0,
                rto_target_s: opts.rto.as_secs(),
                rpo_s: None,
                rpo_target_s: opts.rpo.as_secs(),
                recovered_to: None,
                bytes: 0,
                version: None,
                error: None,
            },
        }
    }

    /// The disk check: a restore that would not fit stops the drill here.
    fn room(
        &mut self,
        workdir: &Path,
        need: u64,
        max: Option<u64>,
    ) -> std::result::Result<(), String> {
        match room_for(workdir, need, max) {
            Ok(detail) => {
                self.check("disk", true, detail);
                Ok(())
            }
            Err(e) => {
                self.check("disk", false, e.clone());
                Err(e)
            }
        }
    }

    fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.drill.checks.push(DrillCheck {
            name: name.into(),
            passed,
            detail: detail.into(),
        });
    }

    /// The drill as it ended: `result` an error that stopped it, if any;
    /// RTO and RPO judged against their targets.
    fn finish(
        mut self,
        result: std::result::Result<(), String>,
        started: SystemTime,
    ) -> SourceDrill {
        if let Err(e) = result {
            // A check that stopped the drill has said why already.
            if !self
                .drill
                .checks
                .last()
                .is_some_and(|c| !c.passed && c.detail == e)
            {
                self.check("drill", false, e.clone());
            }
            self.drill.error = Some(e);
        } else {
            let d = &self.drill;
            let rto_ok = d.rto_ms <= d.rto_target_s * 1000;
            let rto_detail = format!(
                "{} (restore {} + recovery {}) against a target of {}",
                secs(d.rto_ms),
                secs(d.restore_ms),
                secs(d.recovery_ms),
                secs(d.rto_target_s * 1000)
            );
            self.check("rto", rto_ok, rto_detail);
            let at = self.drill.recovered_to.map(|t| {
                let t: SystemTime = t.into();
                started.duration_since(t).unwrap_or_default().as_secs()
            });
            self.drill.rpo_s = at;
            if let Some(rpo) = at {
                let ok = rpo <= self.drill.rpo_target_s;
                let detail = format!(
                    "the newest point reached is {} old against a target of {}",
                    secs(rpo * 1000),
                    secs(self.drill.rpo_target_s * 1000)
                );
                self.check("rpo", ok, detail);
            }
        }
        self.drill.passed = self.drill.checks.iter().all(|c| c.passed);
        self.drill
    }
}

fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 7_200_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

fn report(e: &dyn std::error::Error) -> String {
    lifeboat_repo::report(e)
}

/// Free bytes of the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Refuses a restore of `need` bytes the disk or `--max-disk` would not
/// hold, naming both figures.
fn room_for(workdir: &Path, need: u64, max: Option<u64>) -> std::result::Result<String, String> {
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    if let Some(max) = max {
        if need > max {
            return Err(format!(
                "the restore needs about {} and --max-disk allows {}: not started",
                gib(need),
                gib(max)
            ));
        }
    }
    match free_bytes(workdir) {
        Some(free) if free < need => Err(format!(
            "the restore needs about {} and {} has {} free: not started (give another --workdir)",
            gib(need),
            workdir.display(),
            gib(free)
        )),
        Some(free) => Ok(format!("about {} needed, {} free", gib(need), gib(free))),
        None => Ok(format!("about {} needed", gib(need))),
    }
}

/// The default work directory: `lifeboat-drills-<uid>` in the system's
/// temporary directory (made private by [`private_workdir`]).
pub fn default_workdir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "lifeboat-drills-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// Makes sure `workdir` is ours and nobody else can create entries in it
/// (created mode 0711 when missing: the server's user may pass through to
/// its sandbox, no one may list or write): another local user must not be
/// able to plant a "sandbox" a sweep would act on.
pub fn private_workdir(workdir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if std::fs::symlink_metadata(workdir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(workdir)
            .map_err(|e| {
                format!(
                    "cannot create the work directory {}: {e}",
                    workdir.display()
                )
            })?;
    }
    let m = std::fs::symlink_metadata(workdir)
        .map_err(|e| format!("cannot read {}: {e}", workdir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(format!(
            "the drill work directory {} is not a directory of this user's that only it can write (it is {}owned by uid {}, mode {:o}): give a private one with --workdir or [drill] workdir",
            workdir.display(),
            if m.is_dir() { "" } else { "not a directory, " },
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// True for a sandbox a drill of ours made: a real directory (not a link),
/// mode 0700, owned by this user or the server's.
fn ours(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    let me = rustix::process::geteuid().as_raw();
    let server = std::process::Command::new("id")
        .args(["-u", &server_user()])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        });
    m.is_dir() && m.mode() & 0o077 == 0 && (m.uid() == me || Some(m.uid()) == server)
}

/// A sandbox directory of the work directory, removed on drop; the
/// server's OS user owns it when root.
fn sandbox(workdir: &Path) -> std::result::Result<tempfile::TempDir, String> {
    private_workdir(workdir)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("lifeboat-drill-{}-", std::process::id()))
        .tempdir_in(workdir)
        .map_err(|e| format!("cannot create a sandbox in {}: {e}", workdir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.path().display()))?;
    give_to_owner(dir.path()).map_err(|e| report(&e))?;
    Ok(dir)
}

/// Stops the servers and removes the sandboxes earlier drills left when
/// they were killed (their process is gone); returns what it removed. Only
/// in a private work directory, and only sandboxes of ours.
pub fn sweep(workdir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if private_workdir(workdir).is_err() {
        return removed;
    }
    let Ok(entries) = std::fs::read_dir(workdir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("lifeboat-drill-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = e.path();
        if Path::new(&format!("/proc/{pid}")).exists() || !ours(&dir) {
            continue;
        }
        stop_servers_in(&dir);
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// Stops the servers and removes the sandboxes of this process's drills
/// (on SIGINT or SIGTERM); returns what it removed.
pub fn remove_own(workdir: &Path) -> Vec<PathBuf> {
    let prefix = format!("lifeboat-drill-{}-", std::process::id());
    let mut removed = Vec::new();
    for e in std::fs::read_dir(workdir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) && ours(&e.path()) {
            let dir = e.path();
            stop_servers_in(&dir);
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed.push(dir);
            }
        }
    }
    removed
}

/// Sends `signal` to process `pid` (its group with `group`) when its
/// command line holds `needle`: a pid file is never trusted alone.
fn kill_if(pid: &str, needle: &str, group: bool) {
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if pid <= 1 || !String::from_utf8_lossy(&cmdline).contains(needle) {
        return;
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let sig = rustix::process::Signal::KILL;
        let _ = if group {
            rustix::process::kill_process_group(p, sig)
        } else {
            rustix::process::kill_process(p, sig)
        };
    }
}

/// Stops the PostgreSQL server (immediately) a sandbox holds — only one
/// whose `postmaster.pid` names that same data directory — and its
/// redis-server or OpenSearch node (by their pid files, checked against
/// the process's command line).
fn stop_servers_in(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("redis/redis.pid")) {
        kill_if(&pid, "redis-server", false);
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("opensearch.pid")) {
        kill_if(&pid, "OpenSearchNode", true);
    }
    let data = dir.join("data");
    let names_it = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|p| p.lines().nth(1).map(|l| Path::new(l.trim()) == data));
    if names_it == Some(true) {
        if let Ok(bindir) = pg::server::data_dir_major(&data).and_then(pg::server::bindir_for) {
            let _ = as_user(&server_user(), &bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// The trust `hba_file` of a sandboxed server: its socket is reachable by
/// its own user (and root) only, and lifeboat connects as the superuser
/// whatever the source's `pg_hba.conf` says.
fn private_settings(dir: &Path) -> std::result::Result<String, String> {
    let hba = dir.join("drill_hba.conf");
    std::fs::write(&hba, "local all all trust\n")
        .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
    give_to_owner(&hba).map_err(|e| report(&e))?;
    Ok(format!("hba_file = '{}'\n", hba.display()))
}

/// Drills `entry`, the newest backup of one source, by its kind (see the
/// module documentation; [`drillable`] says which kinds): never fails —
/// what went wrong is a failed check of the result.
pub fn drill(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
) -> SourceDrill {
    let kind = entry.snapshot.source_kind.as_str();
    drilled(entry, kind, opts, |run| match kind {
        "postgres" => drill_postgres(repo, rt, entry, opts, run),
        "pg_dump" => drill_dump(repo, rt, entry, opts, run),
        "redis" => drill_redis(repo, entry, opts, run),
        "elasticsearch" => drill_elastic(repo, entry, opts, run),
        "files" => drill_files(repo, entry, opts, run),
        other => Err(format!("a {other} backup cannot be drilled")),
    })
}

/// One source's drill: `steps` make its checks; an error they return
/// stops it, and the RTO and RPO are judged at the end.
fn drilled(
    entry: &SnapshotEntry,
    kind: &str,
    opts: &DrillOptions<'_>,
    steps: impl FnOnce(&mut Run) -> std::result::Result<(), String>,
) -> SourceDrill {
    let started = SystemTime::now();
    let mut run = Run::new(entry, kind, opts);
    let result = steps(&mut run);
    run.finish(result, started)
}

/// The checks of a restored PostgreSQL server (a base backup's or a
/// dump's): the erasure ledger re-applied, `pg_amcheck`, the largest
/// tables' rows; then the server is stopped.
fn check_server(
    rt: &tokio::runtime::Handle,
    mut server: Cluster,
    ledger: Option<&Ledger>,
    tables: &[(String, String, i64)],
    run: &mut Run,
) -> std::result::Result<(), String> {
    if let Some(ledger) = ledger {
        let socket = server.socket_dir.clone();
        erase(rt, ledger, &socket, server.port, &ledger.database(), run);
    }
    amcheck(&server, run);
    compare_rows(&server, tables, run);
    server.stop().map_err(|e| report(&e))
}

fn drill_postgres(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
    run: &mut Run,
) -> std::result::Result<(), String> {
    let meta = BackupMeta::of(entry).map_err(|e| report(&e))?;
    run.drill.version = Some(meta.pg_version.clone());
    let need = entry.snapshot.stats.bytes_total + 2 * meta.wal_segment_size + (64 << 20);
    run.room(&opts.workdir, need, opts.max_disk)?;
    let dir = sandbox(&opts.workdir)?;
    let pgdata = dir.path().join("data");
    let began = Instant::now();
    let ropts = PgRestoreOptions {
        snapshot: Some(entry.id.to_hex()),
        target: opts
            .target_time
            .map_or(RecoveryTarget::End, RecoveryTarget::Time),
        archive_mode: pg::ArchiveMode::Off,
        // Every tablespace inside the sandbox, never where the source's are.
        tablespace_map: meta
            .tablespaces
            .iter()
            .map(|t| (t.oid.clone(), dir.path().join("tblspc").join(&t.oid)))
            .collect(),
        ..PgRestoreOptions::new(pgdata.clone(), opts.restore_command.clone())
    };
    let restored = pg::restore(repo, &ropts, opts.progress).map_err(|e| report(&e))?;
    run.drill.restore_ms = began.elapsed().as_millis() as u64;
    run.drill.bytes = restored.stats.bytes;
    run.check(
        "restore",
        true,
        format!(
            "{} files, {} bytes",
            restored.stats.files, restored.stats.bytes
        ),
    );
    let settings = private_settings(dir.path())?;
    let mut server =
        Cluster::adopt_with(None, &pgdata, dir.path(), &settings).map_err(|e| report(&e))?;
    let recovery = Instant::now();
    server.start().map_err(|e| report(&e))?;
    let state = server
        // Bounded by the RTO (twice it, 10 min at least): a recovery that
        // stalls is a failed drill, not a hung one.
        .wait_for_recovery(
            RecoveryAction::Promote,
            (opts.rto * 2).max(Duration::from_secs(600)),
        )
        .map_err(|e| report(&e))?;
    run.drill.recovery_ms = recovery.elapsed().as_millis() as u64;
    run.drill.rto_ms = began.elapsed().as_millis() as u64;
    run.check(
        "recovery",
        true,
        format!("{state} after {}", secs(run.drill.recovery_ms)),
    );
    lifeboat_types::failpoint!("drill-server-up");
    run.drill.recovered_to = recovered_to(repo, &meta, &server, opts.target_time);

    check_server(
        rt,
        server,
        opts.ledger.as_ref(),
        &largest_tables(&meta.databases),
        run,
    )?;
    drop(dir);
    Ok(())
}

/// The newest point a recovery reached: the target when one was given,
/// else the time the last WAL segment recovery replays was stored (what a
/// loss now would cost), else the backup's end.
fn recovered_to(
    repo: &Repository,
    meta: &BackupMeta,
    server: &Cluster,
    target: Option<SystemTime>,
) -> Option<Timestamp> {
    if let Some(t) = target {
        return Timestamp::try_from(t).ok();
    }
    let system = meta.system_identifier.to_string();
    let from_archive = pg::inspect::info(repo).ok().and_then(|info| {
        info.archives
            .into_iter()
            .find(|a| a.system_identifier == system)
            .and_then(|a| a.recoverable_to)
            .and_then(|t| t.parse::<Timestamp>().ok())
    });
    // What the server itself says it replayed last, when it tells.
    let replayed = server
        .psql(
            "postgres",
            "select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '')",
        )
        .ok()
        .and_then(|t| t.parse::<Timestamp>().ok());
    from_archive.or(replayed).or(meta.stop_time)
}

/// Re-applies the erasure ledger through the sandbox's socket.
fn erase(
    rt: &tokio::runtime::Handle,
    ledger: &Ledger,
    socket: &Path,
    port: u16,
    db: &str,
    run: &mut Run,
) {
    let cfg = lifeboat_ops::erasure::private_config(socket, port, "postgres", db);
    match lifeboat_ops::erasure::apply(rt, ledger, &cfg) {
        Ok(e) => run.check(
            "erasure ledger",
            true,
            format!(
                "re-applied: {} subject(s), {} row(s) erased",
                e.subjects, e.rows
            ),
        ),
        Err(e) => run.check("erasure ledger", false, report(&e)),
    }
}

/// `pg_amcheck` on every database: heap and B-tree indexes (the amcheck
/// extension installed in the sandbox where missing).
fn amcheck(server: &Cluster, run: &mut Run) {
    let program = server.bindir().join("pg_amcheck");
    if !program.exists() {
        run.check(
            "pg_amcheck (tool)",
            false,
            format!(
                "{} is missing (PostgreSQL 14 or later ships it)",
                program.display()
            ),
        );
        return;
    }
    let out = as_user(&server.user, &program)
        .args(["-h"])
        .arg(&server.socket_dir)
        .args([
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "--all",
            "--install-missing",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => run.check(
            "pg_amcheck",
            true,
            "every database: heap and B-tree indexes consistent",
        ),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // What pg_amcheck reports of corruption names the relation
            // ("heap table …", "btree index …"); anything else is the tool
            // not running (no amcheck extension, a connection refused).
            let corrupt = text
                .lines()
                .any(|l| l.starts_with("heap table") || l.starts_with("btree index"));
            let lines: Vec<&str> = text.lines().take(20).collect();
            run.check(
                if corrupt {
                    "pg_amcheck"
                } else {
                    "pg_amcheck (tool)"
                },
                false,
                format!("{}: {}", o.status, lines.join(" | ")),
            );
        }
        Err(e) => run.check(
            "pg_amcheck (tool)",
            false,
            format!("cannot run {}: {e}", program.display()),
        ),
    }
}

/// The five largest tables of each database by the rows recorded at
/// backup time (tables never analyzed, recorded as -1, left out).
fn largest_tables(databases: &[pg::session::DatabaseInfo]) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for db in databases {
        let mut tables: Vec<(&String, &i64)> = db.tables.iter().filter(|(_, n)| **n > 0).collect();
        tables.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (t, n) in tables.into_iter().take(5) {
            out.push((db.name.clone(), t.clone(), *n));
        }
    }
    out
}

/// Counts each table's rows in the restore: fewer than half the rows
/// recorded at backup time fails (rows only grow while WAL is replayed,
/// or shrink a little by deletes; half gone is a lost table).
fn compare_rows(server: &Cluster, tables: &[(String, String, i64)], run: &mut Run) {
    if tables.is_empty() {
        run.check(
            "rows",
            true,
            "no analyzed table recorded at backup time to compare",
        );
        return;
    }
    for (db, table, recorded) in tables {
        let quoted: Vec<String> = table
            .splitn(2, '.')
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect();
        let sql = format!("select count(*) from {}", quoted.join("."));
        match server.psql(db, &sql).map(|s| s.trim().parse::<i64>()) {
            Ok(Ok(n)) => run.check(
                format!("rows {db}.{table}"),
                n * 2 >= *recorded,
                format!("{n} rows restored, {recorded} recorded at backup time"),
            ),
            Ok(Err(e)) => run.check(format!("rows {db}.{table}"), false, e.to_string()),
            Err(e) => run.check(format!("rows {db}.{table}"), false, report(&e)),
        }
    }
}

fn drill_dump(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
    run: &mut Run,
) -> std::result::Result<(), String> {
    let meta = DumpMeta::of(entry).map_err(|e| report(&e))?;
    run.drill.version = Some(meta.pg_version.clone());
    let size: u64 = meta.databases.iter().map(|d| d.size).sum();
    let need = size.max(entry.snapshot.stats.bytes_total) * 2 + (64 << 20);
    run.room(&opts.workdir, need, opts.max_disk)?;
    let dir = sandbox(&opts.workdir)?;
    let settings = private_settings(dir.path())?;
    let mut server =
        Cluster::init(&dir.path().join("data"), dir.path(), &settings).map_err(|e| report(&e))?;
    server.start().map_err(|e| report(&e))?;
    let began = Instant::now();
    let conninfo = server.conninfo("postgres");
    let mut bytes = 0;
    for (i, db) in meta.database_names().iter().enumerate() {
        let ropts = pg::dump::RestoreDumpOptions {
            conninfo: conninfo.clone(),
            database: Some(db.clone()),
            tables: Vec::new(),
            jobs: None,
            create: db != "postgres",
            clean: false,
            globals: i == 0,
            no_tablespaces: true,
        };
        let r = pg::dump::restore_dump(repo, rt, entry, &ropts, opts.progress)
            .map_err(|e| report(&e))?;
        bytes += r.bytes;
    }
    run.drill.restore_ms = began.elapsed().as_millis() as u64;
    run.drill.rto_ms = run.drill.restore_ms;
    run.drill.bytes = bytes;
    run.drill.recovered_to = Some(entry.snapshot.end_time);
    run.check(
        "restore",
        true,
        format!(
            "{} database(s) restored with pg_restore",
            meta.database_names().len()
        ),
    );
    check_server(
        rt,
        server,
        opts.ledger.as_ref(),
        &largest_tables(&meta.databases),
        run,
    )?;
    drop(dir);
    Ok(())
}

fn drill_redis(
    repo: &Repository,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
    run: &mut Run,
) -> std::result::Result<(), String> {
    let meta = lifeboat_redis::meta::RedisMeta::of(entry).map_err(|e| report(&e))?;
    run.drill.version = Some(meta.redis_version.clone());
    let need = entry.snapshot.stats.bytes_total * 2 + (16 << 20);
    run.room(&opts.workdir, need, opts.max_disk)?;
    let dir = sandbox(&opts.workdir)?;
    let began = Instant::now();
    let ropts = lifeboat_redis::RedisRestoreOptions {
        target_dir: dir.path().join("redis"),
    };
    let mut report_ =
        lifeboat_redis::restore(repo, entry, &ropts, opts.progress).map_err(|e| report(&e))?;
    run.drill.restore_ms = began.elapsed().as_millis() as u64;
    run.drill.bytes = report_.bytes;
    run.check(
        "restore",
        true,
        format!(
            "{} bytes of RDB{}",
            report_.bytes,
            if report_.aof { " and AOF" } else { "" }
        ),
    );
    match crate::sandbox::redis::verify_restore(&mut report_, entry) {
        Ok(()) => {
            for (db, want, got) in report_.verified.iter().flatten() {
                run.check(
                    format!("keys {db}"),
                    want == got,
                    format!("{got} keys loaded, {want} recorded at backup time"),
                );
            }
        }
        Err(e) => run.check("keys", false, report(&e)),
    }
    run.drill.recovery_ms = report_.load_ms.unwrap_or(0);
    run.drill.rto_ms = run.drill.restore_ms + run.drill.recovery_ms;
    run.drill.recovered_to = Some(entry.snapshot.end_time);
    run.check(
        "digest",
        true,
        "no dataset digest recorded at backup time (a replica's RDB is not the live dataset DEBUG DIGEST sees): key counts compared instead",
    );
    drop(dir);
    Ok(())
}

fn drill_files(
    repo: &Repository,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
    run: &mut Run,
) -> std::result::Result<(), String> {
    let need = entry.snapshot.stats.bytes_total + (16 << 20);
    run.room(&opts.workdir, need, opts.max_disk)?;
    let dir = sandbox(&opts.workdir)?;
    let target = dir.path().join("files");
    let began = Instant::now();
    let stats = repo
        .restore(
            &entry.snapshot,
            &RestoreOptions {
                target: target.clone(),
                ..RestoreOptions::default()
            },
            opts.progress,
        )
        .map_err(|e| report(&e))?;
    run.drill.restore_ms = began.elapsed().as_millis() as u64;
    run.drill.rto_ms = run.drill.restore_ms;
    run.drill.bytes = stats.bytes;
    run.drill.recovered_to = Some(entry.snapshot.end_time);
    run.check(
        "restore",
        true,
        format!("{} files, {} bytes", stats.files, stats.bytes),
    );
    let files: Vec<&lifeboat_repo::Node> = entry
        .snapshot
        .nodes
        .iter()
        .filter(|n| n.kind == lifeboat_repo::NodeKind::File)
        .collect();
    let stored = repo.hash_items(&files).map_err(|e| report(&e))?;
    let mut wrong = Vec::new();
    for (node, (hash, len)) in files.iter().zip(&stored) {
        let path = target.join(node.path.trim_start_matches('/'));
        match hash_file(&path) {
            Ok((h, n)) if h == *hash && n == *len => {}
            Ok((_, n)) => wrong.push(format!(
                "{} ({n} bytes restored, {len} in the snapshot, contents differ)",
                node.path
            )),
            Err(e) => wrong.push(format!("{}: {e}", node.path)),
        }
    }
    let detail = if wrong.is_empty() {
        format!(
            "all {} file(s) restored identical to the snapshot (BLAKE3)",
            files.len()
        )
    } else {
        format!(
            "{} of {} differ: {}",
            wrong.len(),
            files.len(),
            wrong
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    run.check("files", wrong.is_empty(), detail);
    drop(dir);
    Ok(())
}

fn hash_file(path: &Path) -> std::io::Result<(blake3::Hash, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((h.finalize(), n))
}

/// An Elasticsearch/OpenSearch snapshot: a throwaway OpenSearch node
/// ([`crate::sandbox::opensearch::LocalOpenSearch`], built by
/// `scripts/install-opensearch.sh`) on a free loopback port, the snapshot's
/// files staged under its `path.repo` and restored through the API (yellow
/// awaited, every index's documents counted against the snapshot's).
fn drill_elastic(
    repo: &Repository,
    entry: &SnapshotEntry,
    opts: &DrillOptions<'_>,
    run: &mut Run,
) -> std::result::Result<(), String> {
    let meta = lifeboat_elastic::EsMeta::of(entry).map_err(|e| report(&e))?;
    run.drill.version = Some(format!(
        "{} {}",
        meta.cluster.distribution, meta.cluster.version
    ));
    if meta.mode == lifeboat_elastic::Mode::Orchestrate {
        return Err(
            "an orchestrate-mode snapshot lives in the cluster's own repository, which a sandbox cannot read: drill it with `es restore` into a scratch cluster, or back the source up in ingest mode".into(),
        );
    }
    let need = entry.snapshot.stats.bytes_total * 3 + (512 << 20);
    run.room(&std::env::temp_dir(), need, opts.max_disk)?;
    // The node lives in its own temporary directory; the sandbox records
    // its pid, so a drill stopped by a signal (or swept) stops it.
    let dir = sandbox(&opts.workdir)?;
    let began = Instant::now();
    let node = crate::sandbox::opensearch::LocalOpenSearch::start().map_err(|e| {
        format!(
            "cannot start a throwaway OpenSearch node ({}); scripts/install-opensearch.sh builds it",
            report(&e)
        )
    })?;
    let pidfile = dir.path().join("opensearch.pid");
    std::fs::write(&pidfile, node.pid().to_string())
        .map_err(|e| format!("cannot write {}: {e}", pidfile.display()))?;
    let node_ms = began.elapsed().as_millis() as u64;
    let mut ropts = lifeboat_elastic::EsRestoreOptions::new(&node.url());
    ropts.staging_dir = Some(node.repo_dir());
    ropts.timeout = Duration::from_secs(24 * 3600);
    let restored =
        lifeboat_elastic::restore(repo, entry, &ropts, opts.progress).map_err(|e| report(&e))?;
    run.drill.restore_ms = restored.duration_ms;
    run.drill.rto_ms = restored.duration_ms;
    run.drill.bytes = restored.staged_bytes;
    run.drill.recovered_to = Some(entry.snapshot.end_time);
    run.check(
        "restore",
        true,
        format!(
            "{} index(es) restored into a throwaway node (started in {}), yellow or green",
            restored.indices.len(),
            secs(node_ms)
        ),
    );
    for i in &restored.indices {
        run.check(
            format!("docs {}", i.index),
            true,
            format!(
                "{} documents, as recorded ({}), health {}",
                i.docs, i.expected, i.health
            ),
        );
    }
    drop(node);
    drop(dir);
    Ok(())
}

/// The kinds a drill knows, by snapshot kind.
pub fn drillable(kind: &str) -> bool {
    matches!(
        kind,
        "postgres" | "pg_dump" | "redis" | "files" | "elasticsearch"
    )
}

/// What each kind's targets default to (the strategy's table): RTO, RPO.
pub fn default_targets(kind: &str) -> (Duration, Duration) {
    match kind {
        "postgres" => (Duration::from_secs(3600), Duration::from_secs(300)),
        // A daily dump: its RPO is the dump's age.
        "pg_dump" => (Duration::from_secs(3600), Duration::from_secs(25 * 3600)),
        "redis" => (Duration::from_secs(1800), Duration::from_secs(3600)),
        "elasticsearch" => (
            Duration::from_secs(4 * 3600),
            Duration::from_secs(24 * 3600),
        ),
        _ => (Duration::from_secs(3600), Duration::from_secs(24 * 3600)),
    }
}

/// Per source, the drills' results as a table for people (Markdown).
pub fn markdown(record: &lifeboat_repo::DrillRecord) -> String {
    let mut s = format!(
        "# Restore drill {}\n\n- Result: **{}**\n- Scenario: {}\n- Repository: {}\n- Ran on {} as {}, {} to {}\n\n",
        record.id,
        if record.passed { "PASSED" } else { "FAILED" },
        record.scenario,
        record.repository,
        record.host,
        record.user,
        at(record.started),
        at(record.finished)
    );
    s.push_str("| Source | Kind | Snapshot | Result | RTO (target) | RPO (target) |\n|---|---|---|---|---|---|\n");
    for d in &record.sources {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} ({}) | {} ({}) |\n",
            d.source,
            d.kind,
            &d.snapshot[..8.min(d.snapshot.len())],
            at(d.snapshot_time),
            if d.passed { "pass" } else { "FAIL" },
            secs(d.rto_ms),
            secs(d.rto_target_s * 1000),
            d.rpo_s.map_or("-".into(), |s| secs(s * 1000)),
            secs(d.rpo_target_s * 1000),
        ));
    }
    for d in &record.sources {
        s.push_str(&format!("\n## {} ({})\n\n", d.source, d.kind));
        if let Some(v) = &d.version {
            s.push_str(&format!(
                "Server version {v}; {} bytes restored.\n\n",
                d.bytes
            ));
        }
        for c in &d.checks {
            s.push_str(&format!(
                "- {} **{}**: {}\n",
                if c.passed { "✔" } else { "✘" },
                c.name,
                c.detail
            ));
        }
    }
    s
}

/// A time to the second, in UTC.
fn at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The drill as one self-contained HTML page (no script, no external
/// resource): what an auditor is handed.
pub fn html(record: &lifeboat_repo::DrillRecord) -> String {
    let mut rows = String::new();
    for d in &record.sources {
        rows.push_str(&format!(
            "<tr class=\"{}\" data-source=\"{}\" data-kind=\"{}\" data-passed=\"{}\" data-rto-ms=\"{}\" data-rpo-s=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code><br><small>{}</small></td><td>{}</td><td>{} <small>(target {})</small></td><td>{} <small>(target {})</small></td></tr>\n",
            if d.passed { "pass" } else { "fail" },
            esc(&d.source),
            esc(&d.kind),
            d.passed,
            d.rto_ms,
            d.rpo_s.map(|s| s.to_string()).unwrap_or_default(),
            esc(&d.source),
            esc(&d.kind),
            esc(&d.snapshot[..8.min(d.snapshot.len())]),
            at(d.snapshot_time),
            if d.passed { "pass" } else { "FAIL" },
            secs(d.rto_ms),
            secs(d.rto_target_s * 1000),
            d.rpo_s.map_or("-".into(), |s| secs(s * 1000)),
            secs(d.rpo_target_s * 1000),
        ));
    }
    let mut details = String::new();
    for d in &record.sources {
        details.push_str(&format!(
            "<h2>{} <small>({})</small></h2>\n<ul data-checks-of=\"{}/{}\">\n",
            esc(&d.source),
            esc(&d.kind),
            esc(&d.source),
            esc(&d.kind)
        ));
        for c in &d.checks {
            details.push_str(&format!(
                "<li class=\"{}\" data-check=\"{}\" data-passed=\"{}\"><b>{}</b>: {}</li>\n",
                if c.passed { "pass" } else { "fail" },
                esc(&c.name),
                c.passed,
                esc(&c.name),
                esc(&c.detail)
            ));
        }
        details.push_str("</ul>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lifeboat restore drill {id}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}}table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4em;text-align:left}}tr.pass td:nth-child(4),li.pass b{{color:#176f2c}}tr.fail td:nth-child(4),li.fail b{{color:#b00020}}.verdict{{font-size:1.4em;font-weight:bold}}</style></head>\n<body data-drill=\"{id}\" data-passed=\"{passed}\">\n<h1>Restore drill {id}</h1>\n<p class=\"verdict\" id=\"verdict\">{verdict}</p>\n<p>Scenario <b>{scenario}</b>, repository <code>{repo}</code>. Ran on <b>{host}</b> as <b>{user}</b> ({trigger}), {started} to {finished}. Sources: {n}.</p>\n<table><thead><tr><th>Source</th><th>Kind</th><th>Snapshot</th><th>Result</th><th>RTO</th><th>RPO</th></tr></thead><tbody>\n{rows}</tbody></table>\n{details}</body></html>\n",
        id = esc(&record.id),
        verdict = if record.passed { "PASSED: every source restored and checked" } else { "FAILED: see the sources marked FAIL" },
        scenario = esc(&record.scenario),
        repo = esc(&record.repository),
        host = esc(&record.host),
        user = esc(&record.user),
        trigger = esc(&record.trigger),
        started = at(record.started),
        finished = at(record.finished),
        n = record.sources.len(),
        passed = record.passed,
    )
}
