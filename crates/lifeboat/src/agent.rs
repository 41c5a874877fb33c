//! `agent`, `jobs`, `status`, `metrics`: the strategy run unattended, and
//! what it did.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;
use jiff::Timestamp;
use lifeboat_agent::plan::Plan;
use lifeboat_agent::state::Knowledge;
use lifeboat_ops::{Error, Result};
use lifeboat_repo::{JobOutcome, JobRecord};
use serde_json::json;

use crate::context::Ctx;
use crate::output::print_json;
use crate::Global;

/// `lifeboat jobs`.
#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    /// Only the runs of this source (its config name)
    #[arg(long, value_name = "NAME")]
    source: Vec<String>,
    /// Only failed runs (failed, timeout, cancelled)
    #[arg(long)]
    failed: bool,
    /// The newest N runs (default 50; 0: all)
    #[arg(long, default_value_t = 50, value_name = "N")]
    last: usize,
}

/// `lifeboat metrics`.
#[derive(Args, Debug)]
pub(crate) struct MetricsArgs {
    /// Write them to this file (atomically, for node_exporter's textfile
    /// collector) instead of standard output
    #[arg(long, value_name = "PATH")]
    textfile: Option<PathBuf>,
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plan of the config file, or exit 2 naming what is wrong.
fn plan(ctx: &Ctx) -> Result<Plan> {
    Plan::from_config(&ctx.session.file)
}

/// The global flags a child needs to act as this process does: the same
/// config file, repository and secret sources (never a secret itself: those
/// are files, commands or inherited environment variables).
fn child_args(ctx: &Ctx, g: &Global) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, v: Option<OsString>| {
        if let Some(v) = v {
            out.push(format!("--{name}").into());
            out.push(v);
        }
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    flag(
        "config",
        ctx.session
            .file
            .origin
            .as_ref()
            .map(|(p, _)| abs(p).into_os_string()),
    );
    flag("repo", g.repo.clone().map(Into::into));
    flag("s3-endpoint", g.s3_endpoint.clone().map(Into::into));
    flag("s3-region", g.s3_region.clone().map(Into::into));
    flag(
        "password-file",
        g.password_file.as_deref().map(|p| abs(p).into_os_string()),
    );
    flag(
        "password-command",
        g.password_command.clone().map(Into::into),
    );
    flag(
        "key-file",
        g.key_file.as_deref().map(|p| abs(p).into_os_string()),
    );
    flag("key-command", g.key_command.clone().map(Into::into));
    out
}

/// Tells systemd the agent is ready (`Type=notify`), when it runs under it.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let path = PathBuf::from(path);
    // An abstract socket ("@name") is left to systemd's other ways.
    if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        return;
    }
    let _ = sock.send_to(b"READY=1\nSTATUS=running the schedule\n", &path);
}

/// Set by the agent when it limited malloc arenas for itself: its children
/// (backups with parallel workers) get glibc's default back.
pub(crate) const ARENAS_SET: &str = "LIFEBOAT_AGENT_ARENAS";

/// A process that runs for months with threads that come and go keeps, with
/// glibc's default of up to 8 malloc arenas per core, memory it freed long
/// ago: the agent runs with two (`MALLOC_ARENA_MAX=2`, set by re-executing
/// itself at start unless the variable is set already). Its live heap is
/// flat; this keeps its RSS flat too (docs/benchmarks.md, "Agent soak").
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if !cfg!(target_env = "gnu") || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // exec returns only when it failed: then run as we are.
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .env(ARENAS_SET, "1")
        .exec();
    tracing::warn!(error = %err, "could not limit malloc arenas; running with the default");
}

/// `lifeboat agent`.
pub(crate) fn agent(ctx: Ctx, g: &Global) -> Result<()> {
    limit_malloc_arenas();
    let plan = plan(&ctx)?;
    if plan.jobs.is_empty() && !plan.follow {
        return Err(Error::usage(
            "the config file schedules nothing: add schedule.full / schedule.incr / schedule.dump to a [postgres.NAME], schedule.backup to a [redis.NAME] or [elasticsearch.NAME], or schedule.forget / schedule.verify / schedule.replicate (or replicate_follow = true) to [repository] (see examples/strategy.toml)",
        ));
    }
    // The repository must at least be named; reaching it can wait.
    ctx.session.repo_url()?;
    let program = std::env::current_exe()
        .map_err(|e| Error::io("find the lifeboat binary the jobs run", e))?;
    let opts = lifeboat_agent::agent::AgentOptions {
        program: program.into_os_string(),
        global_args: child_args(&ctx, g),
        config_path: ctx.session.file.origin.as_ref().map(|(p, _)| p.clone()),
        version: VERSION.to_string(),
    };
    eprintln!(
        "lifeboat agent: {} job(s): {}",
        plan.jobs.len(),
        plan.jobs
            .iter()
            .map(|j| format!("{} ({})", j.id, j.schedule))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let listen = lifeboat_agent::http::check_listen(
        &plan.settings.listen,
        plan.settings.listen_token_file.as_deref(),
    )?;
    crate::context::warn(&listen.warnings);
    let Ctx { session, .. } = ctx;
    let serve = move |shared: std::sync::Arc<lifeboat_agent::agent::Shared>,
                      handle: &tokio::runtime::Handle,
                      stop| {
        let addr = lifeboat_agent::http::start(handle, &listen, shared, stop)?;
        eprintln!("lifeboat agent: listening on http://{addr}/ (metrics, status page)");
        Ok(())
    };
    lifeboat_agent::agent::run(session, plan, opts, serve, || {
        eprintln!("lifeboat agent: running the schedule");
        notify_ready();
    })
}

/// The job history, oldest first.
fn history(ctx: &Ctx) -> Result<Vec<JobRecord>> {
    let repo = ctx.open()?;
    Ok(repo.jobs()?)
}

/// `lifeboat jobs`.
pub(crate) fn jobs(ctx: &Ctx, args: &JobsArgs) -> Result<()> {
    let all = history(ctx)?;
    let mut shown: Vec<&JobRecord> = all
        .iter()
        .filter(|r| {
            args.source.is_empty() || r.source.as_ref().is_some_and(|s| args.source.contains(s))
        })
        .filter(|r| !args.failed || r.outcome.is_failure())
        .collect();
    if args.last > 0 && shown.len() > args.last {
        shown.drain(..shown.len() - args.last);
    }
    if ctx.json {
        print_json(&json!(shown));
        return Ok(());
    }
    if shown.is_empty() {
        outln!(
            "no job runs recorded{}",
            if all.is_empty() { "" } else { " match" }
        );
        return Ok(());
    }
    outln!(
        "{:<20}  {:<26}  {:<9}  {:>9}  {:<8}  {}",
        "started (UTC)",
        "job",
        "outcome",
        "duration",
        "snapshot",
        "detail"
    );
    for r in shown {
        let detail = match r.outcome {
            JobOutcome::Success => r
                .bytes_stored
                .map(|b| format!("stored {}", lifeboat_ops::fmt::size(b)))
                .unwrap_or_default(),
            _ => r.error.clone().unwrap_or_default(),
        };
        let when = r.started.strftime("%Y-%m-%d %H:%M:%S").to_string();
        outln!(
            "{:<20}  {:<26}  {:<9}  {:>9}  {:<8}  {}{}",
            when,
            r.job,
            r.outcome.as_str(),
            lifeboat_ops::fmt::secs((r.duration_seconds() * 1000.0) as u64),
            r.snapshot.as_deref().map_or("", |s| &s[..s.len().min(8)]),
            if r.attempt > 1 {
                format!("(attempt {}) ", r.attempt)
            } else {
                String::new()
            },
            detail
        );
    }
    Ok(())
}

/// What the repository and the config say, as the agent would know it.
fn knowledge(ctx: &Ctx) -> Result<Knowledge> {
    let plan = plan(ctx)?;
    let now = Timestamp::now();
    let mut k = Knowledge::new(plan.clone(), lifeboat_ops::hostname());
    for j in &plan.jobs {
        if let Some(n) = j.schedule.next_after(now, &plan.settings.timezone) {
            k.next_run.insert(j.id.clone(), n);
        }
    }
    match ctx.session.open() {
        Ok(o) => {
            crate::context::warn(&o.warnings);
            ctx.audited(&o.repo);
            k.add_records(o.repo.jobs()?);
            k.repository_up = Some(true);
            k.repo = Some(lifeboat_agent::state::RepoFigures {
                objects: o.repo.object_counts()?,
                snapshots: 0,
                key_epoch_created: o
                    .repo
                    .current_epoch_created()
                    .and_then(|s| Timestamp::from_second(s).ok()),
            });
            if let Some(f) = k.repo.as_mut() {
                f.snapshots = f.objects.get("snapshots").map_or(0, |(n, _)| *n);
            }
            k.wal = lifeboat_agent::wal::figures(&o.repo, ctx.handle(), &k.plan);
            match o.repo.drills() {
                Ok(d) => k.drills = lifeboat_agent::state::drill_figures(&d),
                Err(e) => eprintln!(
                    "warning: the drill history does not read: {}",
                    lifeboat_repo::report(&e)
                ),
            }
        }
        // A wrong password or setting is the operator's to fix now; an
        // unreachable store is what the status must show.
        Err(e) if e.class() == lifeboat_repo::ErrorClass::Usage => return Err(e),
        Err(e) => {
            eprintln!("warning: {}", lifeboat_repo::report(&e));
            k.repository_up = Some(false);
        }
    }
    Ok(k)
}

/// `lifeboat status`.
pub(crate) fn status(ctx: &Ctx) -> Result<()> {
    let mut k = knowledge(ctx)?;
    // One look, not a watch: the alerts whose conditions hold now.
    let settings = lifeboat_agent::rules::AlertSettings::from_config(&ctx.session.file.alerts)?;
    k.alerts = lifeboat_agent::rules::Evaluator::new(&settings)
        .holding(&k.samples(VERSION), Timestamp::now());
    let st = k.status(Timestamp::now(), VERSION).redacted();
    if ctx.json {
        print_json(&json!(st));
        return Ok(());
    }
    if !st.repository_up {
        outln!("repository: UNREACHABLE");
    }
    if st.sources.is_empty() {
        outln!("no sources in the config file ([postgres.NAME], [redis.NAME])");
    }
    for s in &st.sources {
        let badge = match s.health {
            lifeboat_agent::status::Health::Green => "OK   ",
            lifeboat_agent::status::Health::Amber => "WARN ",
            lifeboat_agent::status::Health::Red => "ALERT",
        };
        outln!("{badge} {}/{}: {}", s.kind, s.name, s.reason);
        if let Some(g) = &s.last_good {
            outln!(
                "      last good: {} {} ago, {}, took {}",
                g.ty,
                lifeboat_agent::state::words(g.age_seconds),
                lifeboat_ops::fmt::size(g.size_bytes),
                lifeboat_agent::state::words(g.duration_seconds)
            );
        }
        outln!(
            "      RPO {}; next run {}",
            lifeboat_agent::state::words(s.rpo_seconds as f64),
            s.next_run
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "not scheduled".into())
        );
    }
    if let Some(k) = &st.key_epoch {
        outln!(
            "data key: current epoch {} old{}",
            lifeboat_agent::state::words(k.age_seconds),
            match k.rotate_after_seconds {
                Some(r) if k.age_seconds > r => format!(
                    " — past rotate_after ({}): the agent rotates it at its next check",
                    lifeboat_agent::state::words(r)
                ),
                Some(r) => format!(
                    " (rotated by the agent after {})",
                    lifeboat_agent::state::words(r)
                ),
                None => " (no rotate_after: `repo key rotate` by hand)".into(),
            }
        );
    }
    for a in &st.alerts {
        // One look cannot tell how long a condition has held: the agent
        // fires the alert once it held for the rule's `for:`.
        let state = if a.firing { "firing" } else { "holds now" };
        outln!("{state}: {} — {}", a.alertname, a.summary);
    }
    Ok(())
}

/// `lifeboat metrics`.
pub(crate) fn metrics(ctx: &Ctx, args: &MetricsArgs) -> Result<()> {
    let k = knowledge(ctx)?;
    let text = lifeboat_agent::metrics::encode(&k.samples(VERSION));
    match &args.textfile {
        None => {
            for line in text.lines() {
                outln!("{line}");
            }
        }
        Some(path) => {
            // node_exporter must never read a half-written file: write a
            // temporary file beside it and rename it over.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::Builder::new()
                .prefix(".lifeboat-metrics-")
                .tempfile_in(dir)
                .map_err(|e| {
                    Error::usage_because(format!("cannot write in {}", dir.display()), e)
                })?;
            use std::io::Write;
            tmp.write_all(text.as_bytes())
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            let f = tmp
                .persist(path)
                .map_err(|e| Error::io(format!("write {}", path.display()), e.error))?;
            // Readable by node_exporter, like the files it usually reads.
            use std::os::unix::fs::PermissionsExt;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
        }
    }
    Ok(())
}

/// A backup of a configured source run by hand (or by cron): its job id,
/// kind, source and type.
pub(crate) struct ManualJob {
    job: String,
    kind: &'static str,
    source: String,
    ty: &'static str,
}

/// The job a command is, when it backs up a source named in the config
/// file and the agent did not start it (the agent records its own runs).
pub(crate) fn manual_job(command: &crate::Command) -> Option<ManualJob> {
    if std::env::var_os("LIFEBOAT_AGENT_JOB").is_some() {
        return None;
    }
    let (kind, source, ty) = match command {
        crate::Command::Pg(crate::pg::PgCommand::Backup(a)) => (
            "postgres",
            a.source.clone()?,
            if a.backup_type == "full" {
                "full"
            } else {
                "incr"
            },
        ),
        crate::Command::Pg(crate::pg::PgCommand::Dump(a)) => {
            ("postgres", a.source.clone()?, "dump")
        }
        crate::Command::Redis(crate::redis::RedisCommand::Backup(a)) => {
            ("redis", a.source.clone()?, "backup")
        }
        crate::Command::Es(crate::es::EsCommand::Backup(a)) => {
            ("elasticsearch", a.source.clone()?, "backup")
        }
        _ => return None,
    };
    Some(ManualJob {
        job: format!("{kind}.{source}.{ty}"),
        kind,
        source,
        ty,
    })
}

/// Records a manual run in the job history. Never changes the command's
/// outcome: a record that cannot be stored is a warning.
pub(crate) fn record_manual(ctx: &Ctx, job: &ManualJob, started: Timestamp, result: &Result<u8>) {
    // A wrong setting stopped it before it began: nothing ran to record.
    if let Err(e) = result {
        if e.class() == lifeboat_repo::ErrorClass::Usage {
            return;
        }
    }
    let record = (|| -> Result<()> {
        let repo = ctx.session.open()?.repo;
        let mut r = JobRecord::new(&job.job, job.ty, started)?;
        r.source_kind = Some(job.kind.to_string());
        r.source = Some(job.source.clone());
        r.trigger = "manual".into();
        r.finished = Timestamp::now();
        match result {
            Ok(_) => {
                r.outcome = JobOutcome::Success;
                if let Some(m) = ctx.made.borrow().as_ref() {
                    r.snapshot = Some(m.snapshot.clone());
                    r.bytes_read = Some(m.bytes_read);
                    r.bytes_stored = Some(m.bytes_stored);
                    r.size_bytes = Some(m.bytes_total);
                }
            }
            Err(e) => {
                r.outcome = JobOutcome::Failed;
                r.error_class = Some(e.class().as_str().into());
                r.error = Some(lifeboat_agent::redact(&lifeboat_repo::report(e)));
            }
        }
        repo.record_job(&r)?;
        Ok(())
    })();
    if let Err(e) = record {
        eprintln!(
            "warning: the run could not be recorded in the job history: {}",
            lifeboat_repo::report(&e)
        );
    }
}

/// `lifeboat alerts rules`: the strategy's alerts as a Prometheus rule file.
pub(crate) fn alert_rules(ctx: &Ctx) -> Result<()> {
    use lifeboat_agent::rules::{prometheus_rules, AlertSettings};
    let settings = AlertSettings::from_config(&ctx.session.file.alerts)?;
    for line in prometheus_rules(&settings).lines() {
        outln!("{line}");
    }
    Ok(())
}
