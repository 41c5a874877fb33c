//! `lifeboat agent`: the schedule, run unattended.
//!
//! - Each job fires at its schedule's times ([`crate::cron`], in `[repository]
//!   timezone`). A job never overlaps itself: a run due while the previous
//!   one is still going is recorded as `skipped`. At most `[agent]
//!   max_parallel` runs go at once; the others wait their turn.
//! - A run missed while the agent was down runs once at start (`catch_up`):
//!   when the job's latest fire time is after its latest recorded run.
//! - Each run is a child `lifeboat` process ([`crate::runner`]); a failure
//!   the child classes as transient (an unreachable store) is retried with
//!   a doubling backoff, up to `retries`; damage and wrong settings are not.
//!   A run past `job_timeout` is stopped and recorded as `timeout`.
//! - Every run (skipped ones too) is recorded in the repository's job
//!   history ([`lifeboat_repo::JobRecord`]); a record that cannot be
//!   stored (the store is down) is kept and stored at the next refresh.
//! - SIGHUP, or a change of the config file, reloads the schedule; a config
//!   that does not load is logged and the old schedule kept
//!   (`lifeboat_agent_config_last_reload_successful` turns 0).
//! - SIGTERM or SIGINT: no new run starts; running ones have `grace` to
//!   finish, then are stopped (recorded `cancelled`); the agent exits 0.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use lifeboat_ops::{Error, Session};
use lifeboat_repo::{JobOutcome, JobRecord, Repository};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::plan::{JobSpec, Plan};
use crate::runner::{self, RunEnd, RunRequest, RunResult};
use crate::state::Knowledge;

/// How the agent starts its children and what it reports.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The `lifeboat` binary the jobs run.
    pub program: OsString,
    /// The global arguments every child gets (`--config PATH`, `--repo
    /// URL`, secret files), before `--json --quiet` and the job's own.
    pub global_args: Vec<OsString>,
    /// The config file to watch and reload.
    pub config_path: Option<PathBuf>,
    /// lifeboat's version, for metrics and the status page.
    pub version: String,
}

/// What the agent shares between its tasks and the listener.
pub struct Shared {
    /// The knowledge behind metrics and status.
    pub knowledge: Mutex<Knowledge>,
    /// The repository, once opened.
    repo: Mutex<Option<Arc<Repository>>>,
    /// Records not stored yet (the store was down).
    unsaved: Mutex<Vec<JobRecord>>,
    /// A private copy of the last config file that loaded, which children
    /// are given: a broken edit of the file keeps the schedule *and* the
    /// settings the runs use, until it is fixed.
    config_copy: Mutex<Option<PathBuf>>,
    /// Keys of job records that could not be read: not fetched again.
    unreadable: Mutex<std::collections::BTreeSet<String>>,
    /// When old job records were last trimmed.
    trimmed: Mutex<Option<std::time::Instant>>,
    /// When the replicas' lag was last measured.
    replicas_checked: Mutex<Option<std::time::Instant>>,
    /// When the cost was last measured.
    cost_checked: Mutex<Option<std::time::Instant>>,
    /// lifeboat's version.
    pub version: String,
}

impl Shared {
    /// The metrics text now.
    pub fn metrics(&self) -> String {
        let k = lock(&self.knowledge);
        crate::metrics::encode(&k.samples(&self.version))
    }

    /// The status now.
    pub fn status(&self) -> crate::status::Status {
        lock(&self.knowledge).status(Timestamp::now(), &self.version)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job as the scheduler holds it.
struct Slot {
    spec: JobSpec,
    next: Option<Timestamp>,
    busy: bool,
}

/// A run's end, sent back to the scheduler.
struct Done {
    job: String,
}

/// Loads the config file again and checks its plan; with the file's text.
fn reload(path: Option<&std::path::Path>) -> Result<(Plan, Option<String>), Error> {
    let cfg = lifeboat_ops::config::load(path)?;
    Ok((Plan::from_config(&cfg)?, cfg.origin.map(|(_, t)| t)))
}

/// Writes `text` (a config that loaded) to a new private file in `dir` and
/// makes it the one children get.
fn keep_copy(shared: &Shared, dir: &std::path::Path, text: &str) {
    use std::io::Write;
    let written = tempfile::Builder::new()
        .prefix("config-")
        .suffix(".toml")
        .tempfile_in(dir)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.into_temp_path().keep().map_err(|e| e.error)
        });
    match written {
        Ok(path) => *lock(&shared.config_copy) = Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "the config copy for jobs could not be written; they read the file itself")
        }
    }
}

/// The global arguments of a child: the agent's, with the config file
/// replaced by the copy of the last one that loaded.
fn child_global_args(shared: &Shared, opts: &AgentOptions) -> Vec<OsString> {
    let mut args = opts.global_args.clone();
    if let Some(copy) = lock(&shared.config_copy).clone() {
        if let Some(i) = args.iter().position(|a| a == "--config") {
            if let Some(v) = args.get_mut(i + 1) {
                *v = copy.into_os_string();
            }
        }
    }
    args
}

fn mtime(path: Option<&std::path::Path>) -> Option<SystemTime> {
    path.and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// Runs the agent until SIGTERM or SIGINT. `ready` is called once the
/// schedule is loaded and the listener bound (systemd's READY=1). The plan
/// must have been checked ([`Plan::from_config`]) by the caller, which
/// refuses a bad config before anything starts.
pub fn run(
    session: Session,
    plan: Plan,
    opts: AgentOptions,
    serve: impl FnOnce(Arc<Shared>, &tokio::runtime::Handle, watch::Receiver<bool>) -> Result<(), Error>,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let alert_settings = crate::rules::AlertSettings::from_config(&session.file.alerts)?;
    let targets = crate::notify::Target::from_config(&session.file.notify)?;
    let session = Arc::new(session);
    let handle = session.handle().clone();
    let notifier = crate::notify::Notifier::start(
        targets,
        crate::notify::NotifierSettings {
            repeat_interval: alert_settings.repeat_interval,
            external_url: format!("http://{}/", plan.settings.listen),
            ..Default::default()
        },
        &handle,
    )?;
    let alerts = Alerts {
        evaluator: crate::rules::Evaluator::new(&alert_settings),
        notifier,
    };
    let now = Timestamp::now();
    let mut knowledge = Knowledge::new(plan.clone(), lifeboat_ops::hostname());
    knowledge.count_since = Some(now);
    knowledge.agent_start = Some(now);
    knowledge.config_reload = Some((true, now));
    let shared = Arc::new(Shared {
        knowledge: Mutex::new(knowledge),
        repo: Mutex::new(None),
        unsaved: Mutex::new(Vec::new()),
        config_copy: Mutex::new(None),
        unreadable: Mutex::new(Default::default()),
        trimmed: Mutex::new(None),
        // Not measured in the refresh before the agent says it is ready
        // (a slow replica must not hold its start): the first time after
        // one interval.
        replicas_checked: Mutex::new(Some(std::time::Instant::now())),
        cost_checked: Mutex::new(Some(std::time::Instant::now())),
        version: opts.version.clone(),
    });
    // Where the copies of the config file go (private, removed at exit).
    let copies = tempfile::Builder::new()
        .prefix("lifeboat-agent-")
        .tempdir()
        .map_err(|e| Error::io("create the agent's private directory", e))?;
    if let Some((_, text)) = &session.file.origin {
        keep_copy(&shared, copies.path(), text);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // The listener stays up until the agent exits (the grace period
    // included): its own stop.
    let (listener_tx, listener_rx) = watch::channel(false);
    serve(shared.clone(), &handle, listener_rx)?;
    let result = handle.block_on(main_loop(
        session.clone(),
        shared,
        plan,
        opts,
        stop_tx,
        ready,
        alerts,
        copies.path().to_path_buf(),
    ));
    drop(stop_rx);
    let _ = listener_tx.send(true);
    result
}

/// Opens the repository if it is not open, reads the job records it does
/// not know yet, stores the ones kept back, and — every `figures` call —
/// the repository's figures. Blocking: run it off the async threads.
fn refresh(session: &Session, shared: &Shared, figures: bool, child: &AgentOptions) {
    let repo = {
        let mut r = lock(&shared.repo);
        if r.is_none() {
            match session.open() {
                Ok(o) => {
                    for w in o.warnings {
                        tracing::warn!("{w}");
                    }
                    *r = Some(Arc::new(o.repo));
                }
                Err(e) => {
                    tracing::warn!(error = %lifeboat_repo::report(&e), "the repository cannot be opened");
                }
            }
        }
        r.clone()
    };
    let Some(repo) = repo else {
        lock(&shared.knowledge).repository_up = Some(false);
        return;
    };
    let keep = lock(&shared.knowledge).plan.settings.history;
    let read = (|| -> Result<(), lifeboat_repo::RepoError> {
        let pending: Vec<JobRecord> = std::mem::take(&mut *lock(&shared.unsaved));
        let mut failed = Vec::new();
        for r in pending {
            if repo.record_job(&r).is_err() {
                failed.push(r);
            }
        }
        let had_failures = !failed.is_empty();
        lock(&shared.unsaved).extend(failed);
        // Once the history is read, only the stretch still taken in is
        // listed: a listing of months of keys at every refresh would grow
        // with the history kept.
        let floor = lock(&shared.knowledge).seen_floor();
        let keys = match floor {
            Some(floor) => repo.job_keys_since(floor)?,
            None => repo.job_keys()?,
        };
        let new: Vec<String> = {
            let knowledge = lock(&shared.knowledge);
            let unreadable = lock(&shared.unreadable);
            keys.into_iter()
                .filter(|k| knowledge.wants(k) && !unreadable.contains(k))
                .collect()
        };
        let records = repo.read_jobs(&new)?;
        // What did not read (damaged, warned about once) is not fetched
        // again at every refresh.
        let read: std::collections::BTreeSet<String> = records.iter().map(|r| r.key()).collect();
        lock(&shared.unreadable).extend(new.into_iter().filter(|k| !read.contains(k)));
        let cutoff = Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MIN);
        {
            let mut k = lock(&shared.knowledge);
            k.add_records(records);
            k.trim(cutoff);
        }
        if figures {
            let f = repo_figures(&repo)?;
            lock(&shared.knowledge).repo = Some(f);
            // A few records a month: read whole at each refresh.
            match repo.drills() {
                Ok(d) => lock(&shared.knowledge).drills = crate::state::drill_figures(&d),
                Err(e) => {
                    tracing::warn!(error = %lifeboat_repo::report(&e), "the drill history does not read")
                }
            }
            let plan = lock(&shared.knowledge).plan.clone();
            if plan.sources.iter().any(|s| s.kind == "postgres") {
                let newest = pg_info(shared, child, session.handle())
                    .map(|v| crate::wal::newest_by_system(&v));
                let wal = crate::wal::figures_with(session.handle(), &plan, |src| {
                    let system = crate::wal::system_of(src.pgdata.as_deref()?)?;
                    // Known and empty: nothing ever archived (time 0, so the
                    // stale-archive alert fires); unknown: no figure.
                    let newest = newest.as_ref()?;
                    Some(
                        newest
                            .get(&system)
                            .copied()
                            .unwrap_or(Timestamp::UNIX_EPOCH),
                    )
                });
                lock(&shared.knowledge).wal = wal;
            }
            // Trimming lists every key: once an hour is enough.
            let due = lock(&shared.trimmed)
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(3600));
            if due {
                match repo.trim_jobs(cutoff) {
                    Ok(_) => *lock(&shared.trimmed) = Some(std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "old job records could not be trimmed"),
                }
            }
        }
        if had_failures {
            return Err(lifeboat_repo::RepoError::Failed(
                "job records could not be stored".into(),
            ));
        }
        Ok(())
    })();
    let up = match read {
        Ok(()) => match lifeboat_ops::replicate::canary(session.handle(), repo.storage()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %lifeboat_repo::report(&e), "the repository did not take the canary write and read");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %lifeboat_repo::report(&e), "the repository did not answer");
            false
        }
    };
    lock(&shared.knowledge).repository_up = Some(up);
    replica_figures(shared, child, session.handle());
    if up {
        cost_figures(shared, child, session.handle());
    }
}

/// Every `cost_refresh`, what the backups cost, from `lifeboat cost
/// --json` run as a child (it reads every snapshot), for the status page.
fn cost_figures(shared: &Shared, child: &AgentOptions, rt: &tokio::runtime::Handle) {
    let every = lock(&shared.knowledge).plan.settings.cost_refresh;
    if !lock(&shared.cost_checked).is_none_or(|t| t.elapsed() >= every) {
        return;
    }
    *lock(&shared.cost_checked) = Some(std::time::Instant::now());
    let mut args = child_global_args(shared, child);
    args.extend(["--json".into(), "--quiet".into(), "cost".into()]);
    let req = RunRequest {
        program: child.program.clone(),
        args,
        env: vec![("LIFEBOAT_AGENT_JOB".into(), "cost".into())],
        timeout: REPLICA_STATUS_TIMEOUT,
        keep_stdout: true,
    };
    let (_never, cancel) = watch::channel(false);
    let result = rt.block_on(runner::run(&req, cancel));
    let ok = result.succeeded();
    let Some(r) = result.report.clone().filter(|_| ok) else {
        tracing::warn!(
            error = %crate::redact(&result.error_message().unwrap_or_default()),
            "lifeboat cost failed: the status page shows no cost"
        );
        return;
    };
    let view = crate::status::CostView {
        prices_source: r["prices_source"].as_str().unwrap_or_default().to_string(),
        repositories: r["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["name"].as_str().unwrap_or_default().to_string(),
                    x["monthly"].as_f64().unwrap_or(0.0),
                    x["bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
        monthly_total: r["monthly_total"].as_f64().unwrap_or(0.0),
        baseline_monthly: r["baseline"]["monthly"].as_f64().unwrap_or(0.0),
        baseline_ratio: r["baseline"]["ratio"].as_f64().unwrap_or(0.0),
        measured: Timestamp::now(),
    };
    lock(&shared.knowledge).cost = Some(view);
}

/// The first wait before a follower that ended is started again (doubled
/// after each quick end, up to [`FOLLOW_BACKOFF_MAX`]).
const FOLLOW_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between follower starts.
const FOLLOW_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Keeps `lifeboat replicate --follow` running while the plan asks for it
/// (`[repository] replicate_follow`): started again when it ends, after a
/// wait that grows while it keeps ending quickly; stopped (SIGTERM, then
/// SIGKILL) when the agent stops or the config turns it off. Its output
/// goes nowhere but the end of its standard error, logged when it ends.
async fn follower(shared: Arc<Shared>, opts: AgentOptions, stopping: watch::Receiver<bool>) {
    let mut backoff = FOLLOW_BACKOFF;
    loop {
        if *stopping.borrow() {
            return;
        }
        let wanted = lock(&shared.knowledge).plan.follow;
        if !wanted {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut args = child_global_args(&shared, &opts);
        args.extend(["--quiet".into(), "replicate".into(), "--follow".into()]);
        let req = RunRequest {
            program: opts.program.clone(),
            args,
            env: vec![("LIFEBOAT_AGENT_JOB".into(), "replicate-follow".into())],
            timeout: Duration::from_secs(100 * 365 * 86_400),
            keep_stdout: false,
        };
        // Cancelled when the agent stops or the plan changes (the config
        // reloaded: replicas, their settings, or no more following): it is
        // started again with the new config copy.
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let plan_at_start = lock(&shared.knowledge).plan.clone();
        let watcher = {
            let (shared, mut stopping) = (shared.clone(), stopping.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopping.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    if *stopping.borrow() || lock(&shared.knowledge).plan != plan_at_start {
                        let _ = cancel_tx.send(true);
                        return;
                    }
                }
            })
        };
        tracing::info!("starting replicate --follow");
        let started = std::time::Instant::now();
        let result = runner::run(&req, cancel_rx).await;
        watcher.abort();
        if *stopping.borrow() {
            return;
        }
        if result.end != RunEnd::Cancelled {
            tracing::warn!(
                end = ?result.end,
                stderr = %crate::redact(result.stderr.trim()),
                "replicate --follow ended; it is started again in {backoff:?}"
            );
            let mut stop = stopping.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
        }
        backoff = if started.elapsed() > FOLLOW_BACKOFF_MAX * 2 {
            FOLLOW_BACKOFF
        } else {
            (backoff * 2).min(FOLLOW_BACKOFF_MAX)
        };
    }
}

/// How long the `replicate --status` child of a refresh may take.
const REPLICA_STATUS_TIMEOUT: Duration = Duration::from_secs(300);

/// Every `replica_refresh`, each replica's lag and health from `lifeboat
/// replicate --status --json`, run as a child (it lists both sides).
fn replica_figures(shared: &Shared, child: &AgentOptions, rt: &tokio::runtime::Handle) {
    let (names, every) = {
        let k = lock(&shared.knowledge);
        (k.plan.replicas.clone(), k.plan.settings.replica_refresh)
    };
    if names.is_empty() {
        lock(&shared.knowledge).replicas.clear();
        return;
    }
    let due = lock(&shared.replicas_checked).is_none_or(|t| t.elapsed() >= every);
    if !due {
        return;
    }
    *lock(&shared.replicas_checked) = Some(std::time::Instant::now());
    let mut args = child_global_args(shared, child);
    args.extend([
        "--json".into(),
        "--quiet".into(),
        "replicate".into(),
        "--status".into(),
    ]);
    let req = RunRequest {
        program: child.program.clone(),
        args,
        env: vec![("LIFEBOAT_AGENT_JOB".into(), "replicate-status".into())],
        timeout: REPLICA_STATUS_TIMEOUT,
        keep_stdout: true,
    };
    let (_never, cancel) = watch::channel(false);
    let result = rt.block_on(runner::run(&req, cancel));
    let listed = result
        .report
        .as_ref()
        .and_then(|r| r["replicas"].as_array().cloned());
    let Some(listed) = listed else {
        tracing::warn!(
            error = %crate::redact(&result.error_message().unwrap_or_default()),
            "replicate --status failed: the replicas' lag is not known"
        );
        // Not known is not up: the alerts must see it.
        lock(&shared.knowledge).replicas = names
            .into_iter()
            .map(|n| (n, crate::state::ReplicaFigures::default()))
            .collect();
        return;
    };
    let mut figures = std::collections::BTreeMap::new();
    for r in listed {
        let Some(name) = r["name"].as_str() else {
            continue;
        };
        let up = r["up"].as_bool().unwrap_or(false);
        if !up {
            tracing::warn!(replica = name, error = %crate::redact(r["error"]["message"].as_str().unwrap_or("")), "the replica did not answer");
        }
        figures.insert(
            name.to_string(),
            crate::state::ReplicaFigures {
                up,
                lag_seconds: r["lag_seconds"].as_f64(),
            },
        );
    }
    lock(&shared.knowledge).replicas = figures;
}

/// How long the `pg info` child of a refresh may take.
const PG_INFO_TIMEOUT: Duration = Duration::from_secs(300);

/// `lifeboat pg info --json`, run as a child (see [`crate::wal::newest_by_system`]).
fn pg_info(
    shared: &Shared,
    child: &AgentOptions,
    rt: &tokio::runtime::Handle,
) -> Option<serde_json::Value> {
    let mut args = child_global_args(shared, child);
    args.extend([
        "--json".into(),
        "--quiet".into(),
        "pg".into(),
        "info".into(),
        // Only the archives: a full `pg info` of a repository with many
        // backups is megabytes of JSON, which parsed here would raise the
        // agent's memory to a new high-water mark.
        "--archives-only".into(),
    ]);
    // Bounded: a stalled store must not stall every later refresh.
    let req = RunRequest {
        program: child.program.clone(),
        args,
        env: vec![("LIFEBOAT_AGENT_JOB".into(), "pg-info".into())],
        timeout: PG_INFO_TIMEOUT,
        keep_stdout: true,
    };
    let (_never, cancel) = watch::channel(false);
    let result = rt.block_on(runner::run(&req, cancel));
    if result.succeeded() {
        return result.report;
    }
    tracing::warn!(
        error = %crate::redact(&result.error_message().unwrap_or_default()),
        "pg info failed: the WAL archive's newest segment is not known"
    );
    None
}

/// Objects and bytes per type, snapshots, and the key epoch's age.
fn repo_figures(repo: &Repository) -> Result<crate::state::RepoFigures, lifeboat_repo::RepoError> {
    let mut f = crate::state::RepoFigures {
        objects: repo.object_counts()?,
        ..Default::default()
    };
    f.snapshots = f.objects.get("snapshots").map_or(0, |(n, _)| *n);
    f.key_epoch_created = repo
        .current_epoch_created()
        .and_then(|s| Timestamp::from_second(s).ok());
    Ok(f)
}

/// Stores `record` (or keeps it for the next refresh) and adds it to what
/// the agent knows.
fn save(shared: &Shared, record: JobRecord) {
    let repo = lock(&shared.repo).clone();
    let stored = match &repo {
        Some(r) => match r.record_job(&record) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(job = %record.job, error = %lifeboat_repo::report(&e), "the job record could not be stored; it is kept and stored later");
                false
            }
        },
        None => false,
    };
    if !stored {
        lock(&shared.unsaved).push(record.clone());
    }
    lock(&shared.knowledge).add_own(record);
}

fn ts(t: Timestamp) -> tokio::time::Instant {
    let now = Timestamp::now();
    let wait = t.duration_since(now).as_secs_f64().max(0.0);
    tokio::time::Instant::now() + Duration::from_secs_f64(wait.min(86400.0 * 366.0))
}

fn random_below(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    Duration::from_nanos(u64::from_le_bytes(b) % max.as_nanos().max(1) as u64)
}

/// The agent's own alerting: the rules evaluated over its samples, and
/// the notifications of what fires and resolves.
struct Alerts {
    evaluator: crate::rules::Evaluator,
    notifier: crate::notify::Notifier,
}

impl Alerts {
    /// Evaluates the rules over what is known now, notifies, and records
    /// the firing alerts and notification counts for metrics and status.
    fn evaluate(&mut self, shared: &Shared) {
        let now = Timestamp::now();
        let samples = lock(&shared.knowledge).samples(&shared.version);
        self.evaluator.evaluate(&samples, now);
        self.notifier.send(now, &self.evaluator.firing_alerts());
        let mut k = lock(&shared.knowledge);
        k.alerts = self.evaluator.firing();
        k.notifications = self.notifier.counts();
    }
}

#[allow(clippy::too_many_arguments)]
async fn main_loop(
    session: Arc<Session>,
    shared: Arc<Shared>,
    mut plan: Plan,
    opts: AgentOptions,
    stop_tx: watch::Sender<bool>,
    ready: impl FnOnce(),
    mut alerts: Alerts,
    copies: PathBuf,
) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(|e| Error::io("install a signal handler", e));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;

    // What the repository holds first: the history decides catch-up.
    {
        let (s, sh) = (session.clone(), shared.clone());
        let o = opts.clone();
        let _ = tokio::task::spawn_blocking(move || refresh(&s, &sh, true, &o)).await;
    }
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let semaphore = Arc::new(Semaphore::new(plan.settings.max_parallel));
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let now = Timestamp::now();
    let mut catch_up: Vec<(String, Timestamp)> = Vec::new();
    for spec in &plan.jobs {
        let tz = &plan.settings.timezone;
        if plan.settings.catch_up {
            let last_run = lock(&shared.knowledge).last_started(&spec.id);
            if let (Some(due), Some(ran)) = (spec.schedule.last_at_or_before(now, tz), last_run) {
                if ran < due {
                    catch_up.push((spec.id.clone(), due));
                }
            }
        }
        slots.insert(
            spec.id.clone(),
            Slot {
                spec: spec.clone(),
                next: spec.schedule.next_after(now, tz),
                busy: false,
            },
        );
    }
    let mut config_mtime = mtime(opts.config_path.as_deref());
    let mut next_refresh = tokio::time::Instant::now() + plan.settings.refresh;
    let mut refreshes: u64 = 0;
    let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
    let ctx = RunCtx {
        shared: shared.clone(),
        opts: opts.clone(),
        semaphore: semaphore.clone(),
        cancel: cancel_rx.clone(),
        stopping: stop_tx.subscribe(),
        done: done_tx.clone(),
    };
    let follow_task = tokio::spawn(follower(shared.clone(), opts.clone(), stop_tx.subscribe()));
    for (job, due) in catch_up {
        if let Some(slot) = slots.get_mut(&job) {
            tracing::info!(%job, due = %due, "a run was missed while the agent was down: running it now");
            fire(&ctx, slot, "catch-up", Some(due), &plan);
        }
    }
    publish(&shared, &slots);
    alerts.evaluate(&shared);
    ready();
    let mut running_tasks = 0usize;
    loop {
        let wake = slots
            .values()
            .filter_map(|s| s.next)
            .min()
            .map(ts)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
            .min(next_refresh)
            .min(tokio::time::Instant::now() + Duration::from_secs(2));
        let mut reload_now = false;
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload_now = true,
            Some(d) = done_rx.recv() => {
                if let Some(s) = slots.get_mut(&d.job) { s.busy = false; }
                running_tasks = running_tasks.saturating_sub(1);
            }
        }
        let new_mtime = mtime(opts.config_path.as_deref());
        if new_mtime != config_mtime {
            config_mtime = new_mtime;
            reload_now = true;
        }
        if reload_now {
            match reload(opts.config_path.as_deref()) {
                Ok((new, text)) => {
                    tracing::info!(jobs = new.jobs.len(), "config reloaded");
                    if let Some(text) = text {
                        keep_copy(&shared, &copies, &text);
                    }
                    let now = Timestamp::now();
                    let tz = new.settings.timezone.clone();
                    let mut next_slots = BTreeMap::new();
                    for spec in &new.jobs {
                        let busy = slots.get(&spec.id).is_some_and(|s| s.busy);
                        let next = match slots.get(&spec.id) {
                            Some(s)
                                if s.spec.schedule == spec.schedule
                                    && plan.settings.timezone == tz =>
                            {
                                s.next
                            }
                            _ => spec.schedule.next_after(now, &tz),
                        };
                        next_slots.insert(
                            spec.id.clone(),
                            Slot {
                                spec: spec.clone(),
                                next,
                                busy,
                            },
                        );
                    }
                    // A job removed while it runs finishes (and is waited
                    // for at shutdown); it is not scheduled again. Added
                    // back meanwhile, it is still busy: never run twice.
                    for (id, old) in std::mem::take(&mut slots) {
                        if old.busy && !next_slots.contains_key(&id) {
                            next_slots.insert(id, Slot { next: None, ..old });
                        }
                    }
                    slots = next_slots;
                    let mut k = lock(&shared.knowledge);
                    k.plan = new.clone();
                    k.config_reload = Some((true, now));
                    drop(k);
                    plan = new;
                }
                Err(e) => {
                    tracing::error!(error = %lifeboat_repo::report(&e), "the config file does not load; the schedule stays as it was");
                    let mut k = lock(&shared.knowledge);
                    let last_ok = k
                        .config_reload
                        .map(|(_, t)| t)
                        .unwrap_or_else(Timestamp::now);
                    k.config_reload = Some((false, last_ok));
                }
            }
        }
        let now = Timestamp::now();
        let tz = plan.settings.timezone.clone();
        for slot in slots.values_mut() {
            while let Some(due) = slot.next.filter(|n| *n <= now) {
                slot.next = slot.spec.schedule.next_after(now.max(due), &tz);
                if slot.busy {
                    skipped(&shared, &slot.spec, due);
                } else {
                    fire(&ctx, slot, "schedule", Some(due), &plan);
                    running_tasks += 1;
                }
            }
        }
        if tokio::time::Instant::now() >= next_refresh
            && refreshing.as_ref().is_none_or(|h| h.is_finished())
        {
            refreshes += 1;
            let (s, sh, o) = (session.clone(), shared.clone(), opts.clone());
            let figures = refreshes.is_multiple_of(10);
            refreshing = Some(tokio::task::spawn_blocking(move || {
                refresh(&s, &sh, figures, &o)
            }));
            next_refresh = tokio::time::Instant::now() + plan.settings.refresh;
        }
        publish(&shared, &slots);
        alerts.evaluate(&shared);
    }

    // Shutting down: nothing new starts; running jobs get the grace period.
    tracing::info!(
        "stopping: no new runs; running ones have {:?} to finish",
        plan.settings.grace
    );
    let _ = stop_tx.send(true);
    let busy = |slots: &BTreeMap<String, Slot>| slots.values().filter(|s| s.busy).count();
    let deadline = tokio::time::Instant::now() + plan.settings.grace;
    while busy(&slots) > 0 {
        tokio::select! {
            Some(d) = done_rx.recv() => { if let Some(s) = slots.get_mut(&d.job) { s.busy = false; } }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if busy(&slots) > 0 {
        tracing::warn!("the grace period is over: stopping the running jobs");
        let _ = cancel_tx.send(true);
        while busy(&slots) > 0 {
            match done_rx.recv().await {
                Some(d) => {
                    if let Some(s) = slots.get_mut(&d.job) {
                        s.busy = false;
                    }
                }
                None => break,
            }
        }
    }
    publish(&shared, &slots);
    let _ = follow_task.await;
    if let Some(h) = refreshing {
        let _ = h.await;
    }
    // Records kept back while the store was down: one last try.
    let (s, sh, o) = (session.clone(), shared.clone(), opts.clone());
    let _ = tokio::task::spawn_blocking(move || {
        if !lock(&sh.unsaved).is_empty() {
            refresh(&s, &sh, false, &o)
        }
    })
    .await;
    let _ = running_tasks;
    Ok(())
}

/// Next runs and running jobs into the knowledge.
fn publish(shared: &Shared, slots: &BTreeMap<String, Slot>) {
    let mut k = lock(&shared.knowledge);
    k.next_run = slots
        .iter()
        .filter_map(|(id, s)| s.next.map(|n| (id.clone(), n)))
        .collect();
    k.running = slots
        .iter()
        .filter(|(_, s)| s.busy)
        .map(|(id, _)| id.clone())
        .collect();
}

fn skipped(shared: &Arc<Shared>, spec: &JobSpec, due: Timestamp) {
    tracing::warn!(job = %spec.id, "due while its previous run still goes: skipped");
    let now = Timestamp::now();
    let Ok(mut r) = JobRecord::new(&spec.id, &spec.job_type, now) else {
        return;
    };
    r.source_kind = spec.source_kind.clone();
    r.source = spec.source.clone();
    r.trigger = "schedule".into();
    r.scheduled = Some(due);
    r.outcome = JobOutcome::Skipped;
    r.error = Some("the previous run was still going".into());
    // Storing blocks: off the scheduler's thread.
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || save(&shared, r));
}

struct RunCtx {
    shared: Arc<Shared>,
    opts: AgentOptions,
    semaphore: Arc<Semaphore>,
    cancel: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
    done: mpsc::UnboundedSender<Done>,
}

fn fire(ctx: &RunCtx, slot: &mut Slot, trigger: &str, due: Option<Timestamp>, plan: &Plan) {
    slot.busy = true;
    let spec = slot.spec.clone();
    let shared = ctx.shared.clone();
    let opts = ctx.opts.clone();
    let semaphore = ctx.semaphore.clone();
    let cancel = ctx.cancel.clone();
    let mut stopping = ctx.stopping.clone();
    let done = ctx.done.clone();
    let settings = plan.settings.clone();
    let trigger = trigger.to_string();
    tokio::spawn(async move {
        let job = spec.id.clone();
        let stopped = |s: &watch::Receiver<bool>| *s.borrow();
        let run_one = async {
            let Ok(_permit) = semaphore.acquire().await else {
                return;
            };
            if stopped(&stopping) {
                return;
            }
            let jitter = random_below(settings.jitter);
            if !jitter.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(jitter) => {}
                    _ = stopping.changed() => return,
                }
            }
            // Verify's rotation goes on from the part its last good run read.
            let last_part = lock(&shared.knowledge).last_subset(&spec.id);
            let job_args = spec.args(last_part.as_deref());
            let subset = JobSpec::subset_of(&job_args);
            let mut attempt = 1u32;
            let mut trigger = trigger.clone();
            loop {
                let mut args = child_global_args(&shared, &opts);
                args.extend(["--json".into(), "--quiet".into()]);
                args.extend(job_args.iter().map(OsString::from));
                let req = RunRequest {
                    program: opts.program.clone(),
                    args,
                    env: vec![("LIFEBOAT_AGENT_JOB".into(), spec.id.clone())],
                    timeout: spec.timeout,
                    keep_stdout: true,
                };
                tracing::info!(job = %spec.id, attempt, "starting");
                let result = runner::run(&req, cancel.clone()).await;
                let mut record = record_of(&spec, &result, &trigger, attempt, due);
                record.subset = subset.clone();
                let transient = record.error_class.as_deref() == Some("transient")
                    && matches!(
                        result.end,
                        RunEnd::Exited(_) | RunEnd::NotStarted(_) | RunEnd::Killed(_)
                    );
                tracing::info!(job = %spec.id, outcome = record.outcome.as_str(), error = record.error.as_deref().unwrap_or(""), "finished");
                {
                    let shared = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || save(&shared, record)).await;
                }
                if !transient || attempt > settings.retries || stopped(&stopping) {
                    break;
                }
                let backoff = settings
                    .retry_backoff
                    .saturating_mul(1u32 << (attempt - 1).min(16));
                tracing::info!(job = %spec.id, ?backoff, "may be transient: retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.changed() => break,
                }
                attempt += 1;
                trigger = "retry".into();
            }
        };
        run_one.await;
        let _ = done.send(Done { job });
    });
}

/// The job record of one attempt.
fn record_of(
    spec: &JobSpec,
    result: &RunResult,
    trigger: &str,
    attempt: u32,
    due: Option<Timestamp>,
) -> JobRecord {
    let mut r = JobRecord::new(&spec.id, &spec.job_type, result.started).unwrap_or_else(|_| {
        let id = format!("{:032x}", result.started.as_nanosecond());
        JobRecord::with_id(&spec.id, &spec.job_type, result.started, id)
    });
    r.source_kind = spec.source_kind.clone();
    r.source = spec.source.clone();
    r.trigger = trigger.to_string();
    r.attempt = attempt;
    r.scheduled = due;
    r.finished = result.finished;
    r.outcome = match result.end {
        RunEnd::Exited(0) => JobOutcome::Success,
        RunEnd::TimedOut => JobOutcome::Timeout,
        RunEnd::Cancelled => JobOutcome::Cancelled,
        _ => JobOutcome::Failed,
    };
    r.error_class = result.error_class();
    r.error = result.error_message().map(|m| crate::redact(&m));
    if let Some(rep) = &result.report {
        let stat = |k: &str| {
            rep.get("stats")
                .and_then(|s| s.get(k))
                .and_then(|v| v.as_u64())
        };
        r.bytes_read = stat("bytes_read");
        r.bytes_stored = stat("bytes_stored");
        r.size_bytes = stat("bytes_total");
        r.snapshot = rep
            .get("snapshot")
            .and_then(|s| s.as_str())
            .map(str::to_string);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_spreads() {
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_secs(60);
        let draws: Vec<Duration> = (0..2000).map(|_| random_below(max)).collect();
        assert!(draws.iter().all(|d| *d < max));
        // Spread over the range, not bunched at one end.
        let early = draws.iter().filter(|d| **d < max / 2).count();
        assert!(
            (800..1200).contains(&early),
            "{early} of 2000 in the first half"
        );
    }
}
