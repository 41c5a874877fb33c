//! `lifeboat drill` and `lifeboat drills`: restore drills on this machine,
//! their history in the repository, and their reports.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lifeboat_ops::{Error, Result};
use lifeboat_repo::{DrillRecord, Repository, SnapshotEntry, SourceDrill, Timestamp};
use lifeboat_scenarios::drill::{self, DrillOptions};
use serde_json::json;

use crate::context::Ctx;

/// `lifeboat drill`.
#[derive(Args, Debug)]
pub(crate) struct DrillArgs {
    /// The sources to drill (their names, as snapshots list them)
    sources: Vec<String>,
    /// Every source with backups in the repository
    #[arg(long, conflicts_with = "sources")]
    all: bool,
    /// Recover PostgreSQL to this time (RFC 3339) instead of the newest archived WAL
    #[arg(long, value_name = "TIME")]
    target_time: Option<String>,
    /// Also write the report here: drill-<id>.html, .md and .json
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Where the sandboxes go (default: [drill] workdir, else the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The most disk one source's drill may take (e.g. 50GiB); a restore needing more is not started
    #[arg(long, value_name = "SIZE")]
    max_disk: Option<String>,
    /// `region-loss`: restore from a replica ([[replica]]; --replica picks one), as after losing the primary's region
    #[arg(long, value_name = "NAME", value_parser = ["local", "region-loss"], default_value = "local")]
    scenario: String,
    /// The replica of --scenario region-loss (default: the first)
    #[arg(long, value_name = "NAME")]
    replica: Option<String>,
    /// How the run was started, for the record (the agent says `schedule`)
    #[arg(long, hide = true, default_value = "manual")]
    trigger: String,
}

/// `lifeboat drills`.
#[derive(Args, Debug)]
pub(crate) struct DrillsArgs {
    /// The newest N drills (0: all)
    #[arg(long, default_value_t = 20, value_name = "N")]
    last: usize,
}

/// The newest backup of each source to drill: (kind, source) → snapshot.
fn choose(repo: &Repository, args: &DrillArgs) -> Result<Vec<SnapshotEntry>> {
    if args.sources.is_empty() && !args.all {
        return Err(Error::usage(
            "name the sources to drill (as `lifeboat snapshots` lists them), or give --all",
        ));
    }
    let mut newest: std::collections::BTreeMap<(String, String), SnapshotEntry> =
        std::collections::BTreeMap::new();
    for s in repo.snapshots()? {
        let key = (
            s.snapshot.source_name.clone(),
            s.snapshot.source_kind.clone(),
        );
        if !drill::drillable(&key.1) {
            continue;
        }
        if !args.sources.is_empty() && !args.sources.contains(&key.0) {
            continue;
        }
        // Snapshots come oldest first.
        newest.insert(key, s);
    }
    for name in &args.sources {
        if !newest.keys().any(|(s, _)| s == name) {
            return Err(Error::usage(format!(
                "no backup of source {name:?} that a drill can restore (PostgreSQL base backups and dumps, Redis, files): `lifeboat snapshots` lists the sources"
            )));
        }
    }
    if newest.is_empty() {
        return Err(Error::usage(
            "the repository holds no backup a drill can restore yet",
        ));
    }
    Ok(newest.into_values().collect())
}

/// The RTO and RPO targets of a source: its `rto` and `rpo` in the config,
/// else the strategy's for its kind (PostgreSQL 1 h / 5 min, Redis 30 min
/// / 1 h, Elasticsearch 4 h / 24 h). A base backup's RPO is the WAL
/// archive's (5 min: what recovery reaches), never the source's `rpo`,
/// which is how old its newest backup may be — what a dump's, an RDB's or
/// a snapshot's drill measures.
fn targets(ctx: &Ctx, kind: &str, source: &str) -> Result<(Duration, Duration)> {
    let (mut rto, mut rpo) = drill::default_targets(kind);
    let file = &ctx.session.file;
    let (rto_text, rpo_text) = match kind {
        "postgres" => (file.postgres.get(source).and_then(|s| s.rto.clone()), None),
        "pg_dump" => file
            .postgres
            .get(source)
            .map_or((None, None), |s| (s.rto.clone(), s.rpo.clone())),
        "redis" => file
            .redis
            .get(source)
            .map_or((None, None), |s| (s.rto.clone(), s.rpo.clone())),
        "elasticsearch" => file
            .elasticsearch
            .get(source)
            .map_or((None, None), |s| (s.rto.clone(), s.rpo.clone())),
        _ => (None, None),
    };
    let parse = |what: &str, t: &str| {
        humantime::parse_duration(t)
            .map_err(|e| Error::usage(format!("{what} {t:?} of source {source}: {e}")))
    };
    if let Some(t) = rto_text {
        rto = parse("rto", &t)?;
    }
    if let Some(t) = rpo_text {
        rpo = parse("rpo", &t)?;
    }
    Ok((rto, rpo))
}

/// The repository the drill restores from: the primary, or with
/// `region-loss` a replica (and the `restore_command` that fetches WAL from
/// it).
fn source_repo(ctx: &Ctx, args: &DrillArgs) -> Result<(Repository, String, Option<String>)> {
    if args.scenario == "local" {
        let repo = ctx.open()?;
        let location = repo.location();
        return Ok((repo, location, None));
    }
    let replicas = &ctx.session.file.replica;
    let replica = match &args.replica {
        Some(name) => replicas.iter().find(|r| &r.name == name),
        None => replicas.first(),
    }
    .ok_or_else(|| {
        Error::usage(match &args.replica {
            Some(n) => format!("no [[replica]] named {n:?} in the config file"),
            None => "--scenario region-loss restores from a replica, and the config file names none ([[replica]])".into(),
        })
    })?;
    let repo = ctx.open_replica(replica)?;
    let location = repo.location();
    Ok((repo, location, Some(replica.name.clone())))
}

/// The `restore_command` a drilled PostgreSQL server fetches WAL with:
/// this program on this repository, or on the replica drilled.
fn restore_command(ctx: &Ctx, replica: Option<&str>) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find this program's path", e))?;
    let command = ctx.session.restore_command(&exe)?;
    Ok(match replica {
        None => command,
        Some(name) => command.replace(
            " pg wal-fetch %f %p",
            &format!(
                " pg wal-fetch --replica {} %f %p",
                lifeboat_ops::secrets::shell_quote(name)
            ),
        ),
    })
}

/// `lifeboat drill`.
pub(crate) fn run(ctx: &Ctx, args: &DrillArgs) -> Result<()> {
    let target_time = args
        .target_time
        .as_deref()
        .map(|t| {
            lifeboat_postgres::parse_target_time(t)
                .map_err(|e| Error::usage(format!("--target-time: {}", lifeboat_repo::report(&e))))
        })
        .transpose()?;
    let max_disk = args
        .max_disk
        .as_deref()
        .map(|s| {
            s.parse::<lifeboat_repo::ByteSize>()
                .map(|b| b.0)
                .map_err(|e| Error::usage(format!("--max-disk {s:?}: {e}")))
        })
        .transpose()?;
    let workdir = args
        .workdir
        .clone()
        .or_else(|| ctx.session.file.drill.workdir.clone())
        .unwrap_or_else(drill::default_workdir);
    drill::private_workdir(&workdir).map_err(Error::usage)?;
    for gone in drill::sweep(&workdir) {
        eprintln!(
            "removed {}, which a drill that was stopped left behind",
            gone.display()
        );
    }
    interrupt_cleans(ctx, &workdir);
    let (repo, location, replica) = source_repo(ctx, args)?;
    let entries = choose(&repo, args)?;
    // Only a base backup's recovery fetches WAL.
    let restore_command = if entries.iter().any(|e| e.snapshot.source_kind == "postgres") {
        restore_command(ctx, replica.as_deref())?
    } else {
        String::new()
    };
    let mut record = DrillRecord::new(
        &args.scenario,
        &location,
        &lifeboat_ops::hostname(),
        &lifeboat_ops::os_user(),
        &args.trigger,
    )?;
    for entry in &entries {
        let kind = entry.snapshot.source_kind.clone();
        let source = entry.snapshot.source_name.clone();
        if !ctx.json && !ctx.quiet {
            eprintln!(
                "drilling {source} ({kind}): restoring backup {} of {}",
                entry.id.short(),
                entry.snapshot.start_time
            );
        }
        let (rto, rpo) = targets(ctx, &kind, &source)?;
        let (ledger, ledger_error) = if matches!(kind.as_str(), "postgres" | "pg_dump") {
            match lifeboat_ops::erasure::ledger(&repo, &ctx.session.file, &source) {
                Ok(l) => (l, None),
                Err(e) => (None, Some(lifeboat_repo::report(&e))),
            }
        } else {
            (None, None)
        };
        let progress = ctx.progress();
        let opts = DrillOptions {
            workdir: workdir.clone(),
            target_time,
            max_disk,
            restore_command: restore_command.clone(),
            ledger,
            rto,
            rpo,
            progress: &progress,
        };
        let mut result = drill::drill(&repo, ctx.handle(), entry, &opts);
        drop(progress);
        if let Some(e) = ledger_error {
            result.checks.push(lifeboat_repo::DrillCheck {
                name: "erasure ledger".into(),
                passed: false,
                detail: e,
            });
            result.passed = false;
        }
        if !ctx.json {
            print_source(&result);
        }
        record.sources.push(result);
    }
    record.finished = Timestamp::now();
    record.passed = record.sources.iter().all(|s| s.passed);
    // The history goes to the primary; after a region loss it may be gone,
    // and the replica drilled keeps it instead.
    let stored = match ctx.open().map(|p| p.record_drill(&record)) {
        Ok(Ok(key)) => Ok(key),
        _ if args.scenario != "local" => repo.record_drill(&record).map_err(Error::from),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    };
    if let Err(e) = &stored {
        eprintln!(
            "warning: the drill's record could not be stored in the repository: {}",
            lifeboat_repo::report(e)
        );
    }
    crate::audit::detail(ctx, "drill", record.id.clone());
    crate::audit::detail(ctx, "drill_passed", record.passed.to_string());
    if let Some(dir) = &args.report {
        write_report(dir, &record)?;
    }
    if ctx.json {
        outln!("{}", serde_json::to_string(&record).unwrap_or_default());
    } else {
        outln!(
            "drill {}: {} ({} source(s)){}",
            record.id,
            if record.passed { "PASSED" } else { "FAILED" },
            record.sources.len(),
            match &args.report {
                Some(d) => format!("; report in {}", d.display()),
                None => String::new(),
            }
        );
    }
    if record.passed {
        return Ok(());
    }
    let damaged = record.sources.iter().any(|s| {
        s.checks
            .iter()
            .any(|c| !c.passed && (c.name == "pg_amcheck" || c.name == "files"))
    });
    let failed: Vec<String> = record
        .sources
        .iter()
        .filter(|s| !s.passed)
        .map(|s| {
            let why: Vec<&str> = s
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            format!("{} ({}: {})", s.source, s.kind, why.join(", "))
        })
        .collect();
    let msg = format!("the drill failed for {}", failed.join("; "));
    if damaged {
        eprintln!("error: {msg}: the restored data fails its checks");
        Err(Error::DamageFound(msg))
    } else {
        Err(Error::Failed(msg))
    }
}

fn print_source(d: &SourceDrill) {
    outln!(
        "{} {} ({}) from backup {}: RTO {} (target {}), RPO {} (target {})",
        if d.passed { "PASS" } else { "FAIL" },
        d.source,
        d.kind,
        &d.snapshot[..8.min(d.snapshot.len())],
        lifeboat_ops::fmt::secs(d.rto_ms),
        lifeboat_ops::fmt::secs(d.rto_target_s * 1000),
        d.rpo_s
            .map_or("-".to_string(), |s| lifeboat_ops::fmt::secs(s * 1000)),
        lifeboat_ops::fmt::secs(d.rpo_target_s * 1000),
    );
    for c in &d.checks {
        outln!(
            "  {} {}: {}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}

/// `drill-<id>.html`, `.md` and `.json` in `dir`.
fn write_report(dir: &std::path::Path, record: &DrillRecord) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let base = dir.join(format!("drill-{}", record.id));
    let json = serde_json::to_vec_pretty(record).unwrap_or_default();
    for (ext, bytes) in [
        ("html", drill::html(record).into_bytes()),
        ("md", drill::markdown(record).into_bytes()),
        ("json", json),
    ] {
        let path = base.with_extension(ext);
        lifeboat_repo::durable::write_file(&path, &bytes, 0o644)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(())
}

/// On SIGINT or SIGTERM: this drill's servers stopped and sandboxes
/// removed, then exit 130 (a drill killed outright is swept by the next).
fn interrupt_cleans(ctx: &Ctx, workdir: &std::path::Path) {
    let workdir = workdir.to_path_buf();
    ctx.handle().spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        let removed = drill::remove_own(&workdir);
        eprintln!(
            "drill interrupted: {} sandbox(es) removed, their servers stopped",
            removed.len()
        );
        std::process::exit(130);
    });
}

/// `lifeboat drills`.
pub(crate) fn list(ctx: &Ctx, args: &DrillsArgs) -> Result<()> {
    let repo = ctx.open()?;
    let mut all = repo.drills()?;
    if args.last > 0 && all.len() > args.last {
        all.drain(..all.len() - args.last);
    }
    if ctx.json {
        outln!("{}", json!({"drills": all}));
        return Ok(());
    }
    if all.is_empty() {
        outln!("no drills yet: `lifeboat drill --all` runs one");
        return Ok(());
    }
    for r in &all {
        let sources: Vec<String> = r
            .sources
            .iter()
            .map(|s| {
                format!(
                    "{} {} RTO {}{}",
                    s.source,
                    if s.passed { "pass" } else { "FAIL" },
                    lifeboat_ops::fmt::secs(s.rto_ms),
                    s.rpo_s
                        .map(|x| format!(" RPO {}", lifeboat_ops::fmt::secs(x * 1000)))
                        .unwrap_or_default()
                )
            })
            .collect();
        outln!(
            "{}  {}  {:<6} {:<11} {}@{}  {}",
            r.id,
            r.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            if r.passed { "PASSED" } else { "FAILED" },
            r.scenario,
            r.user,
            r.host,
            sources.join("; ")
        );
    }
    Ok(())
}
