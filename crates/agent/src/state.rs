//! What the agent knows — the job history, the repository's figures, the
//! WAL archive, its own running jobs — and the two views of it: metric
//! [`Sample`]s and the [`Status`]. Pure: the agent and `lifeboat
//! metrics`/`lifeboat status` fill it in; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use lifeboat_repo::{JobOutcome, JobRecord};

use crate::plan::Plan;
use crate::sample::{self as m, series_labels, Sample};
use crate::status::{
    AlertStatus, BackupPoint, FailurePoint, Health, JobStatus, RunSummary, SourceStatus, Status,
};

/// How far back the charts go.
pub const CHART_DAYS: i64 = 90;
/// Runs in the status' recent log.
pub const RECENT_RUNS: usize = 50;

/// The repository's figures, refreshed now and then.
#[derive(Clone, Debug, Default)]
pub struct RepoFigures {
    /// Objects and bytes per object type.
    pub objects: BTreeMap<String, (u64, u64)>,
    /// Snapshots.
    pub snapshots: u64,
    /// When the current data-key epoch was created.
    pub key_epoch_created: Option<Timestamp>,
}

/// One PostgreSQL source's WAL archive figures.
#[derive(Clone, Debug, Default)]
pub struct WalFigures {
    /// When the newest segment reached the repository.
    pub newest: Option<Timestamp>,
    /// The archiver's lag in seconds, when the server answered.
    pub archiver_lag_seconds: Option<f64>,
    /// `pg_stat_archiver.failed_count`.
    pub archiver_failed: Option<u64>,
}

/// One source's restore drills, from the drill history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrillFigures {
    /// When its last successful drill ended.
    pub last_success: Option<Timestamp>,
    /// Whether its newest drill passed.
    pub last_passed: bool,
    /// The RTO its newest drill measured, seconds.
    pub rto_seconds: f64,
    /// The RPO its newest drill measured, seconds.
    pub rpo_seconds: Option<f64>,
}

/// Per (source, kind), what the drill history `records` (oldest first)
/// says of its drills.
pub fn drill_figures(
    records: &[lifeboat_repo::DrillRecord],
) -> BTreeMap<(String, String), DrillFigures> {
    let mut out: BTreeMap<(String, String), DrillFigures> = BTreeMap::new();
    for r in records {
        for s in &r.sources {
            let f = out.entry((s.source.clone(), s.kind.clone())).or_default();
            f.last_passed = s.passed;
            f.rto_seconds = s.rto_ms as f64 / 1000.0;
            f.rpo_seconds = s.rpo_s.map(|x| x as f64);
            if s.passed {
                f.last_success = Some(r.finished);
            }
        }
    }
    out
}

/// One replica's figures, from `replicate --status`.
#[derive(Clone, Debug, Default)]
pub struct ReplicaFigures {
    /// Its store took a canary write and read it back.
    pub up: bool,
    /// The age of the oldest object of the primary it lacks, when known.
    pub lag_seconds: Option<f64>,
}

/// Records kept whole in memory, newest first out: the status' recent log
/// and what a rule or page shows of single runs. Everything else is kept as
/// per-job and per-series aggregates, so the agent's memory stays flat
/// however often its jobs run.
pub const WINDOW: usize = 100;
/// Points of each source's chart, at most: older points are thinned out.
pub const CHART_POINTS: usize = 240;
/// How far back the keys of records already read are remembered, at
/// least: a record stored later than this (or than the longest a run may
/// take with its retries, when that is longer) after its run started is not
/// taken in by a running agent (`lifeboat jobs` still lists it). The
/// agent's own records are always taken in.
pub const SEEN_HOURS: i64 = 36;

/// What is kept of one job's runs.
#[derive(Clone, Debug, Default)]
struct JobAgg {
    /// Runs counted (ended at or after `count_since`), by outcome, but
    /// skipped ones.
    runs: BTreeMap<&'static str, u64>,
    /// Skipped runs counted.
    skipped: u64,
    /// The newest run (by start, then id) that was not skipped.
    last_ran: Option<Summary>,
    /// The newest successful run (by start, then id).
    last_success: Option<Summary>,
    /// The latest end of a run that was not skipped.
    last_end: Option<Timestamp>,
    /// The latest end of a successful run.
    last_success_end: Option<Timestamp>,
}

/// What is kept of one backup series' runs.
#[derive(Clone, Debug, Default)]
struct SeriesAgg {
    /// The two newest successful runs (by end), newest first.
    ok: Vec<JobRecord>,
    /// The newest failed run (by end).
    failed: Option<JobRecord>,
    /// Failed runs counted.
    failures: u64,
}

/// A run in brief.
#[derive(Clone, Debug)]
struct Summary {
    started: Timestamp,
    id: String,
    finished: Timestamp,
    outcome: JobOutcome,
    subset: Option<String>,
}

/// Keeps `r` in `slot` when it is newer (by start, then id).
fn newer(slot: &mut Option<Summary>, r: &JobRecord) {
    if slot
        .as_ref()
        .is_none_or(|s| (r.started, r.id.as_str()) >= (s.started, s.id.as_str()))
    {
        *slot = Some(Summary {
            started: r.started,
            id: r.id.clone(),
            finished: r.finished,
            outcome: r.outcome,
            subset: r.subset.clone(),
        });
    }
}

/// One point of a source's chart.
#[derive(Clone, Debug)]
struct ChartPoint {
    ty: String,
    finished: Timestamp,
    started: Timestamp,
    size_bytes: u64,
    stored_bytes: u64,
    snapshot: Option<String>,
}

/// Everything known, at one moment.
#[derive(Clone, Debug)]
pub struct Knowledge {
    /// The plan (sources and jobs).
    pub plan: Plan,
    /// The newest [`WINDOW`] job records, oldest first (by start).
    records: Vec<JobRecord>,
    /// Per job.
    jobs: BTreeMap<String, JobAgg>,
    /// Per backup series.
    series: BTreeMap<Series, SeriesAgg>,
    /// Successful runs per source (kind, name), for the charts.
    charts: BTreeMap<(String, String), Vec<ChartPoint>>,
    /// The records taken in, as (start in ms, hash of the key): small,
    /// and those started before `seen_floor` are forgotten.
    seen: BTreeSet<(i64, u64)>,
    /// Records of runs started before this are not taken in again.
    seen_floor: Option<Timestamp>,
    /// Counters count records that ended at or after this (the agent's
    /// start); `None`: every record (`lifeboat metrics --textfile`).
    pub count_since: Option<Timestamp>,
    /// Whether the repository answered the last check.
    pub repository_up: Option<bool>,
    /// The repository's figures.
    pub repo: Option<RepoFigures>,
    /// WAL figures by PostgreSQL source name.
    pub wal: BTreeMap<String, WalFigures>,
    /// Restore drills by (source, kind).
    pub drills: BTreeMap<(String, String), DrillFigures>,
    /// Replica figures by replica name.
    pub replicas: BTreeMap<String, ReplicaFigures>,
    /// The last cost measured.
    pub cost: Option<crate::status::CostView>,
    /// Jobs running now (agent only).
    pub running: BTreeSet<String>,
    /// When each job is next due (agent only, or computed from the plan).
    pub next_run: BTreeMap<String, Timestamp>,
    /// Notifications by (target, outcome) (agent only).
    pub notifications: BTreeMap<(String, String), u64>,
    /// Whether the last load of the config file succeeded, and when the
    /// last good one was (agent only).
    pub config_reload: Option<(bool, Timestamp)>,
    /// When the agent started (agent only).
    pub agent_start: Option<Timestamp>,
    /// Alerts firing now.
    pub alerts: Vec<AlertStatus>,
    /// The host.
    pub hostname: String,
}

/// A backup series: (kind, source, type).
type Series = (String, String, String);

fn series_of(r: &JobRecord) -> Option<Series> {
    Some((
        r.source_kind.clone()?,
        r.source.clone()?,
        r.job_type.clone(),
    ))
}

fn secs(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Knowledge {
    /// Knowledge of `plan` with nothing read yet.
    pub fn new(plan: Plan, hostname: String) -> Knowledge {
        Knowledge {
            plan,
            records: Vec::new(),
            jobs: BTreeMap::new(),
            series: BTreeMap::new(),
            charts: BTreeMap::new(),
            seen: BTreeSet::new(),
            seen_floor: None,
            count_since: None,
            repository_up: None,
            repo: None,
            wal: BTreeMap::new(),
            drills: BTreeMap::new(),
            replicas: BTreeMap::new(),
            cost: None,
            running: BTreeSet::new(),
            next_run: BTreeMap::new(),
            notifications: BTreeMap::new(),
            config_reload: None,
            agent_start: None,
            alerts: Vec::new(),
            hostname,
        }
    }

    /// Whether the record stored under `key` is still to be taken in: not
    /// taken in yet, and not older than what is remembered.
    pub fn wants(&self, key: &str) -> bool {
        if self.seen.contains(&seen_key(key)) {
            return false;
        }
        match (self.seen_floor, lifeboat_repo::started_of_key(key)) {
            (Some(floor), Some(started)) => started >= floor,
            _ => true,
        }
    }

    /// Records of runs started before this are not taken in again (`None`
    /// until the first trim: everything is).
    pub fn seen_floor(&self) -> Option<Timestamp> {
        self.seen_floor
    }

    /// Adds the agent's own record of a run it just ended, however long
    /// ago the run started (once).
    pub fn add_own(&mut self, r: JobRecord) {
        if self.seen.insert(seen_key(&r.key())) {
            self.take_in(&r);
            self.keep(r);
        }
    }

    /// Keeps `r` in the window of the newest records.
    fn keep(&mut self, r: JobRecord) {
        let at = self
            .records
            .partition_point(|x| (x.started, &x.id) <= (r.started, &r.id));
        self.records.insert(at, r);
        let extra = self.records.len().saturating_sub(WINDOW);
        self.records.drain(..extra);
    }

    /// Adds records not taken in yet (by key): each counts once.
    pub fn add_records(&mut self, new: impl IntoIterator<Item = JobRecord>) {
        for r in new {
            let key = r.key();
            if !self.wants(&key) {
                continue;
            }
            self.seen.insert(seen_key(&key));
            self.take_in(&r);
            self.keep(r);
        }
    }

    /// Adds `r` to the aggregates.
    fn take_in(&mut self, r: &JobRecord) {
        let counted = self.counted(r);
        let job = self.jobs.entry(r.job.clone()).or_default();
        if r.outcome == JobOutcome::Skipped {
            job.skipped += u64::from(counted);
            return;
        }
        if counted {
            *job.runs.entry(r.outcome.as_str()).or_default() += 1;
        }
        newer(&mut job.last_ran, r);
        job.last_end = job.last_end.max(Some(r.finished));
        if r.outcome == JobOutcome::Success {
            newer(&mut job.last_success, r);
            job.last_success_end = job.last_success_end.max(Some(r.finished));
        }
        let Some(series) = series_of(r) else {
            return;
        };
        let agg = self.series.entry(series.clone()).or_default();
        if r.outcome == JobOutcome::Success {
            agg.ok.push(r.clone());
            agg.ok.sort_by_key(|r| std::cmp::Reverse(r.finished));
            agg.ok.truncate(2);
            let chart = self.charts.entry((series.0, series.1)).or_default();
            let at = chart.partition_point(|p| p.finished <= r.finished);
            chart.insert(
                at,
                ChartPoint {
                    ty: r.job_type.clone(),
                    finished: r.finished,
                    started: r.started,
                    size_bytes: r.size_bytes.unwrap_or(0),
                    stored_bytes: r.bytes_stored.unwrap_or(0),
                    snapshot: r.snapshot.clone(),
                },
            );
            if chart.len() > CHART_POINTS {
                thin(chart);
            }
        } else if r.outcome.is_failure() {
            agg.failures += u64::from(counted);
            if agg.failed.as_ref().is_none_or(|f| r.finished >= f.finished) {
                agg.failed = Some(r.clone());
            }
        }
    }

    /// Forgets chart points older than the chart shows or than `cutoff`
    /// (the history kept), and the keys of records of runs started longer
    /// ago than [`Knowledge::lookback`] (those are not taken in again; the
    /// floor never moves back, so nothing forgotten counts twice).
    pub fn trim(&mut self, cutoff: Timestamp) {
        let now = Timestamp::now();
        let chart_from = (now - jiff::SignedDuration::from_hours(24 * CHART_DAYS)).max(cutoff);
        for chart in self.charts.values_mut() {
            chart.retain(|p| p.finished >= chart_from);
        }
        let floor = now
            .checked_sub(self.lookback())
            .unwrap_or(Timestamp::MIN)
            .max(cutoff)
            .max(self.seen_floor.unwrap_or(Timestamp::MIN));
        let ms = floor.as_millisecond();
        self.seen.retain(|(start, _)| *start >= ms);
        self.seen_floor = Some(floor);
    }

    /// How far back records are still taken in: [`SEEN_HOURS`], or the
    /// longest a run of the plan may take with its retries and their
    /// backoff, and an hour more, when that is longer.
    fn lookback(&self) -> jiff::SignedDuration {
        let s = &self.plan.settings;
        let longest = self
            .plan
            .jobs
            .iter()
            .map(|j| j.timeout)
            .max()
            .unwrap_or(s.job_timeout);
        let attempts = s.retries.saturating_add(1);
        let backoff = s
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(s.retries.min(16)));
        let run = longest
            .saturating_mul(attempts)
            .saturating_add(backoff)
            .saturating_add(std::time::Duration::from_secs(3600));
        let floor = jiff::SignedDuration::from_hours(SEEN_HOURS);
        jiff::SignedDuration::try_from(run).map_or(floor, |r| r.max(floor))
    }

    /// When `job` last started a run that was not skipped.
    pub fn last_started(&self, job: &str) -> Option<Timestamp> {
        Some(self.jobs.get(job)?.last_ran.as_ref()?.started)
    }

    /// The verify subset the last successful run of `job` read.
    pub fn last_subset(&self, job: &str) -> Option<String> {
        self.jobs.get(job)?.last_success.as_ref()?.subset.clone()
    }

    /// Every backup series: the scheduled ones and those in the history.
    fn series(&self) -> BTreeSet<Series> {
        let mut s: BTreeSet<Series> = self
            .plan
            .jobs
            .iter()
            .filter(|j| j.is_backup())
            .filter_map(|j| {
                Some((
                    j.source_kind.clone()?,
                    j.source.clone()?,
                    j.job_type.clone(),
                ))
            })
            .collect();
        s.extend(self.series.keys().cloned());
        s
    }

    fn counted(&self, r: &JobRecord) -> bool {
        self.count_since.is_none_or(|t| r.finished >= t)
    }

    /// The metric samples, in catalogue order.
    pub fn samples(&self, version: &str) -> Vec<Sample> {
        let mut out: Vec<Sample> = Vec::new();
        let mut push = |name: &'static str, labels: Vec<(&'static str, String)>, value: f64| {
            out.push(Sample {
                name,
                labels,
                value,
            })
        };
        let none = SeriesAgg::default();
        for s in self.series() {
            let labels = series_labels(&s.1, &s.0, &s.2);
            let agg = self.series.get(&s).unwrap_or(&none);
            let ok = &agg.ok;
            push(
                m::BACKUP_LAST_SUCCESS,
                labels.clone(),
                ok.first().map_or(0.0, |r| secs(r.finished)),
            );
            push(
                m::BACKUP_LAST_FAILURE,
                labels.clone(),
                agg.failed.as_ref().map_or(0.0, |r| secs(r.finished)),
            );
            push(m::BACKUP_FAILURES, labels.clone(), agg.failures as f64);
            if let Some(r) = ok.first() {
                push(m::BACKUP_DURATION, labels.clone(), r.duration_seconds());
                if let Some(b) = r.bytes_read {
                    push(m::BACKUP_READ, labels.clone(), b as f64);
                }
                if let Some(b) = r.bytes_stored {
                    push(m::BACKUP_STORED, labels.clone(), b as f64);
                }
                if let Some(b) = r.size_bytes {
                    push(m::BACKUP_SIZE, labels.clone(), b as f64);
                }
                if let (Some(now), Some(prev)) =
                    (r.size_bytes, ok.get(1).and_then(|p| p.size_bytes))
                {
                    if prev > 0 {
                        push(
                            m::BACKUP_SIZE_CHANGE,
                            labels.clone(),
                            now as f64 / prev as f64 - 1.0,
                        );
                    }
                }
            }
        }
        // Catalogue order: the series metrics above are interleaved; sort
        // them into families below.
        for src in &self.plan.sources {
            push(
                m::BACKUP_MAX_AGE,
                vec![("source", src.name.clone()), ("kind", src.kind.clone())],
                src.rpo.as_secs_f64(),
            );
        }
        let mut jobs: BTreeSet<String> = self.plan.jobs.iter().map(|j| j.id.clone()).collect();
        jobs.extend(self.jobs.keys().cloned());
        let no_job = JobAgg::default();
        for job in &jobs {
            let agg = self.jobs.get(job).unwrap_or(&no_job);
            for o in ["success", "failed", "cancelled", "timeout"] {
                push(
                    m::JOB_RUNS,
                    vec![("job", job.clone()), ("outcome", o.to_string())],
                    agg.runs.get(o).copied().unwrap_or(0) as f64,
                );
            }
            push(
                m::JOB_SKIPPED,
                vec![("job", job.clone())],
                agg.skipped as f64,
            );
            if self.agent_start.is_some() {
                push(
                    m::JOB_RUNNING,
                    vec![("job", job.clone())],
                    f64::from(u8::from(self.running.contains(job))),
                );
            }
            if let Some(t) = self.next_run.get(job) {
                push(m::JOB_NEXT_RUN, vec![("job", job.clone())], secs(*t));
            }
            push(
                m::JOB_LAST_RUN,
                vec![("job", job.clone())],
                agg.last_end.map_or(0.0, secs),
            );
            push(
                m::JOB_LAST_SUCCESS,
                vec![("job", job.clone())],
                agg.last_success_end.map_or(0.0, secs),
            );
        }
        for (source, w) in &self.wal {
            if let Some(t) = w.newest {
                push(m::WAL_NEWEST, vec![("source", source.clone())], secs(t));
            }
            if let Some(l) = w.archiver_lag_seconds {
                push(m::WAL_ARCHIVER_LAG, vec![("source", source.clone())], l);
            }
            if let Some(n) = w.archiver_failed {
                push(
                    m::WAL_ARCHIVER_FAILED,
                    vec![("source", source.clone())],
                    n as f64,
                );
            }
        }
        // Sources the plan drills that no drill passed yet: a last success
        // of 0, so `LifeboatDrillStale` fires for them too.
        if self.plan.jobs.iter().any(|j| j.id == "repository.drill") {
            for s in &self.plan.sources {
                let kind = match s.kind.as_str() {
                    "postgres" | "redis" | "elasticsearch" => s.kind.clone(),
                    _ => continue,
                };
                let key = (s.name.clone(), kind.clone());
                if self
                    .drills
                    .get(&key)
                    .is_none_or(|d| d.last_success.is_none())
                {
                    push(
                        m::DRILL_LAST_SUCCESS,
                        vec![("source", s.name.clone()), ("kind", kind)],
                        0.0,
                    );
                }
            }
        }
        for ((source, kind), d) in &self.drills {
            let l = || vec![("source", source.clone()), ("kind", kind.clone())];
            if let Some(t) = d.last_success {
                push(m::DRILL_LAST_SUCCESS, l(), secs(t));
            }
            push(
                m::DRILL_LAST_PASSED,
                l(),
                f64::from(u8::from(d.last_passed)),
            );
            push(m::DRILL_RTO, l(), d.rto_seconds);
            if let Some(rpo) = d.rpo_seconds {
                push(m::DRILL_RPO, l(), rpo);
            }
        }
        let repo = || vec![("repository", "default".to_string())];
        if let Some(up) = self.repository_up {
            push(m::REPOSITORY_UP, repo(), f64::from(u8::from(up)));
        }
        for (name, r) in &self.replicas {
            push(
                m::REPOSITORY_UP,
                vec![("repository", name.clone())],
                f64::from(u8::from(r.up)),
            );
            if let Some(lag) = r.lag_seconds {
                push(
                    m::REPLICA_LAG,
                    vec![
                        ("repository", "default".to_string()),
                        ("replica", name.clone()),
                    ],
                    lag,
                );
            }
        }
        if let Some(f) = &self.repo {
            for (ty, (n, bytes)) in &f.objects {
                let l = vec![("repository", "default".to_string()), ("type", ty.clone())];
                push(m::REPOSITORY_OBJECTS, l.clone(), *n as f64);
                push(m::REPOSITORY_BYTES, l, *bytes as f64);
            }
            push(m::REPOSITORY_SNAPSHOTS, repo(), f.snapshots as f64);
            if let Some(t) = f.key_epoch_created {
                let age = Timestamp::now().duration_since(t).as_secs_f64().max(0.0);
                push(m::KEY_EPOCH_AGE, repo(), age);
            }
        }
        for ((target, outcome), n) in &self.notifications {
            push(
                m::NOTIFICATIONS,
                vec![("target", target.clone()), ("outcome", outcome.clone())],
                *n as f64,
            );
        }
        if self.agent_start.is_some() {
            let mut firing: BTreeMap<&str, u64> = BTreeMap::new();
            for a in &self.alerts {
                *firing.entry(a.alertname.as_str()).or_default() += 1;
            }
            for (name, n) in firing {
                push(
                    m::ALERTS_FIRING,
                    vec![("alertname", name.to_string())],
                    n as f64,
                );
            }
        }
        if let Some((ok, t)) = self.config_reload {
            push(m::CONFIG_RELOAD_OK, vec![], f64::from(u8::from(ok)));
            push(m::CONFIG_RELOAD_TIME, vec![], secs(t));
        }
        if let Some(t) = self.agent_start {
            push(m::AGENT_START, vec![], secs(t));
        }
        push(m::BUILD_INFO, vec![("version", version.to_string())], 1.0);
        // Families in catalogue order, samples in the order they came.
        let order = |name: &str| m::CATALOGUE.iter().position(|d| d.name == name);
        out.sort_by_key(|s| order(s.name));
        out
    }

    /// The status at `now`.
    pub fn status(&self, now: Timestamp, version: &str) -> Status {
        let chart_from = now - jiff::SignedDuration::from_hours(24 * CHART_DAYS);
        let point = |r: &JobRecord| BackupPoint {
            ty: r.job_type.clone(),
            time: r.finished,
            age_seconds: now.duration_since(r.finished).as_secs_f64().max(0.0),
            size_bytes: r.size_bytes.unwrap_or(0),
            stored_bytes: r.bytes_stored.unwrap_or(0),
            duration_seconds: r.duration_seconds(),
            snapshot: r.snapshot.clone(),
        };
        let mut sources = Vec::new();
        for src in &self.plan.sources {
            let mine = || {
                self.series
                    .iter()
                    .filter(|((kind, name, _), _)| kind == &src.kind && name == &src.name)
                    .map(|(_, agg)| agg)
            };
            let last_good = mine()
                .filter_map(|a| a.ok.first())
                .max_by_key(|r| r.finished)
                .map(point);
            let last_fail = mine()
                .filter_map(|a| a.failed.as_ref())
                .max_by_key(|r| r.finished)
                .filter(|f| last_good.as_ref().is_none_or(|g| f.finished > g.time));
            let rpo = src.rpo.as_secs_f64();
            let (health, reason) = match (&last_good, last_fail) {
                (None, None) => (Health::Red, "no backup yet".to_string()),
                (None, Some(f)) => (
                    Health::Red,
                    format!(
                        "no good backup; last run failed: {}",
                        f.error.as_deref().unwrap_or("?")
                    ),
                ),
                (Some(g), _) if g.age_seconds > rpo => (
                    Health::Red,
                    format!(
                        "last good backup {} ago, over the RPO of {}",
                        words(g.age_seconds),
                        words(rpo)
                    ),
                ),
                (Some(_), Some(f)) => (
                    Health::Amber,
                    format!("last run failed: {}", f.error.as_deref().unwrap_or("?")),
                ),
                (Some(g), None) if g.age_seconds > 0.8 * rpo => (
                    Health::Amber,
                    format!(
                        "last good backup {} ago, near the RPO of {}",
                        words(g.age_seconds),
                        words(rpo)
                    ),
                ),
                (Some(g), None) => (
                    Health::Green,
                    format!("last good backup {} ago", words(g.age_seconds)),
                ),
            };
            let next_run = self
                .plan
                .jobs
                .iter()
                .filter(|j| {
                    j.source_kind.as_deref() == Some(src.kind.as_str())
                        && j.source.as_deref() == Some(src.name.as_str())
                })
                .filter_map(|j| self.next_run.get(&j.id).copied())
                .min();
            let wal = self.wal.get(&src.name).filter(|_| src.kind == "postgres");
            let history: Vec<BackupPoint> = self
                .charts
                .get(&(src.kind.clone(), src.name.clone()))
                .map(|c| {
                    c.iter()
                        .filter(|p| p.finished >= chart_from)
                        .map(|p| BackupPoint {
                            ty: p.ty.clone(),
                            time: p.finished,
                            age_seconds: now.duration_since(p.finished).as_secs_f64().max(0.0),
                            size_bytes: p.size_bytes,
                            stored_bytes: p.stored_bytes,
                            duration_seconds: p
                                .finished
                                .duration_since(p.started)
                                .as_secs_f64()
                                .max(0.0),
                            snapshot: p.snapshot.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            sources.push(SourceStatus {
                kind: src.kind.clone(),
                name: src.name.clone(),
                health,
                reason,
                rpo_seconds: src.rpo.as_secs(),
                last_good,
                last_failure: last_fail.map(|f| FailurePoint {
                    ty: f.job_type.clone(),
                    time: f.finished,
                    error: f.error.clone().unwrap_or_default(),
                }),
                next_run,
                wal_age_seconds: wal
                    .and_then(|w| w.newest)
                    .map(|t| now.duration_since(t).as_secs_f64().max(0.0)),
                wal_archiver_lag_seconds: wal.and_then(|w| w.archiver_lag_seconds),
                history,
            });
        }
        let jobs = self
            .plan
            .jobs
            .iter()
            .map(|j| {
                let last = self.jobs.get(&j.id).and_then(|a| a.last_ran.as_ref());
                JobStatus {
                    job: j.id.clone(),
                    schedule: j.schedule.to_string(),
                    next_run: self.next_run.get(&j.id).copied(),
                    running: self.running.contains(&j.id),
                    last_outcome: last.map(|r| r.outcome.as_str().to_string()),
                    last_run: last.map(|r| r.finished),
                }
            })
            .collect();
        let recent = self
            .records
            .iter()
            .rev()
            .take(RECENT_RUNS)
            .map(|r| RunSummary {
                job: r.job.clone(),
                outcome: r.outcome.as_str().to_string(),
                started: r.started,
                duration_seconds: r.duration_seconds(),
                error: r.error.clone(),
                snapshot: r.snapshot.clone(),
                hostname: r.hostname.clone(),
            })
            .collect();
        Status {
            generated: now,
            hostname: self.hostname.clone(),
            version: version.to_string(),
            repository_up: self.repository_up.unwrap_or(false),
            sources,
            jobs,
            alerts: self.alerts.clone(),
            recent,
            replicas: self
                .plan
                .replicas
                .iter()
                .map(|name| {
                    let f = self.replicas.get(name);
                    crate::status::ReplicaView {
                        name: name.clone(),
                        up: f.map(|f| f.up),
                        lag_seconds: f.and_then(|f| f.lag_seconds),
                    }
                })
                .collect(),
            cost: self.cost.clone(),
            key_epoch: self
                .repo
                .as_ref()
                .and_then(|f| f.key_epoch_created)
                .map(|t| crate::status::KeyEpochView {
                    age_seconds: now.duration_since(t).as_secs_f64().max(0.0),
                    rotate_after_seconds: self.plan.rotate_after.map(|d| d.as_secs_f64()),
                }),
        }
    }
}

/// The form a record's key is remembered in: when its run started (ms),
/// and a hash of the key.
fn seen_key(key: &str) -> (i64, u64) {
    use std::hash::{Hash, Hasher};
    let start = lifeboat_repo::started_of_key(key).map_or(i64::MAX, |t| t.as_millisecond());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (start, h.finish())
}

/// Keeps `chart` [`CHART_POINTS`] long: the point whose going leaves the
/// smallest gap between its neighbours goes, so years of frequent backups
/// are drawn by points spread evenly over them; the oldest and the newest
/// stay.
fn thin(chart: &mut Vec<ChartPoint>) {
    while chart.len() > CHART_POINTS.max(2) {
        let ms = |i: usize| chart[i].finished.as_millisecond();
        let Some(i) = (1..chart.len() - 1).min_by_key(|&i| ms(i + 1) - ms(i - 1)) else {
            return;
        };
        chart.remove(i);
    }
}

/// A duration in words: `45 s`, `12 min`, `3 h 12 min`, `2 d 4 h`.
pub fn words(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86400) / 3600 {
            0 => format!("{} d", s / 86400),
            h => format!("{} d {h} h", s / 86400),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    fn plan() -> Plan {
        let text = r#"
[postgres.main]
schedule.full = "0 2 * * *"
[redis.cache]
schedule.backup = "@every 6h"
rpo = "7h"
"#;
        let cfg: lifeboat_ops::config::FileConfig = toml::from_str(text).unwrap();
        Plan::from_config(&cfg).unwrap()
    }

    fn rec(
        job: &str,
        kind: &str,
        src: &str,
        ty: &str,
        end: i64,
        outcome: JobOutcome,
        size: u64,
    ) -> JobRecord {
        let mut r = JobRecord::new(job, ty, Timestamp::from_second(end - 60).unwrap()).unwrap();
        r.finished = Timestamp::from_second(end).unwrap();
        r.source_kind = Some(kind.into());
        r.source = Some(src.into());
        r.outcome = outcome;
        r.size_bytes = Some(size);
        if outcome.is_failure() {
            r.error = Some("store unreachable".into());
        }
        r
    }

    fn value(samples: &[Sample], name: &str, label: (&str, &str)) -> Option<f64> {
        samples
            .iter()
            .find(|s| s.name == name && s.label(label.0) == Some(label.1))
            .map(|s| s.value)
    }

    #[test]
    fn samples_and_status_follow_the_history() {
        let now = 1_800_000_000;
        let mut k = Knowledge::new(plan(), "h".into());
        k.add_records([
            rec(
                "postgres.main.full",
                "postgres",
                "main",
                "full",
                now - 3 * 86400,
                JobOutcome::Success,
                1000,
            ),
            rec(
                "postgres.main.full",
                "postgres",
                "main",
                "full",
                now - 2 * 86400,
                JobOutcome::Success,
                1300,
            ),
            rec(
                "postgres.main.full",
                "postgres",
                "main",
                "full",
                now - 3600,
                JobOutcome::Failed,
                0,
            ),
            rec(
                "redis.cache.backup",
                "redis",
                "cache",
                "backup",
                now - 600,
                JobOutcome::Success,
                50,
            ),
        ]);
        let s = k.samples("0.1.0");
        let t = |x: i64| x as f64;
        assert_eq!(
            value(&s, m::BACKUP_LAST_SUCCESS, ("source", "main")),
            Some(t(now - 2 * 86400))
        );
        assert_eq!(
            value(&s, m::BACKUP_LAST_FAILURE, ("source", "main")),
            Some(t(now - 3600))
        );
        assert_eq!(value(&s, m::BACKUP_FAILURES, ("source", "main")), Some(1.0));
        let change = value(&s, m::BACKUP_SIZE_CHANGE, ("source", "main")).unwrap();
        assert!((change - 0.3).abs() < 1e-9, "{change}");
        assert_eq!(
            value(&s, m::BACKUP_MAX_AGE, ("source", "cache")),
            Some(7.0 * 3600.0)
        );
        assert_eq!(
            value(&s, m::BACKUP_LAST_FAILURE, ("source", "cache")),
            Some(0.0)
        );
        // Families come in catalogue order.
        let pos: Vec<usize> = s
            .iter()
            .map(|x| m::CATALOGUE.iter().position(|d| d.name == x.name).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] <= w[1]));

        let st = k.status(Timestamp::from_second(now).unwrap(), "0.1.0");
        let main = &st.sources[0];
        assert_eq!(main.name, "main");
        // Two days old against a 25 h RPO: red, and it says why.
        assert_eq!(main.health, Health::Red);
        assert!(main.reason.contains("over the RPO"), "{}", main.reason);
        assert_eq!(main.history.len(), 2);
        let cache = &st.sources[1];
        assert_eq!(cache.health, Health::Green);
        assert_eq!(cache.last_good.as_ref().unwrap().age_seconds, 600.0);
        assert_eq!(st.recent[0].job, "redis.cache.backup");
    }

    #[test]
    fn a_failure_after_a_recent_good_backup_is_amber() {
        let now = 1_800_000_000;
        let mut k = Knowledge::new(plan(), "h".into());
        k.add_records([
            rec(
                "postgres.main.full",
                "postgres",
                "main",
                "full",
                now - 3600,
                JobOutcome::Success,
                10,
            ),
            rec(
                "postgres.main.full",
                "postgres",
                "main",
                "full",
                now - 60,
                JobOutcome::Failed,
                0,
            ),
        ]);
        let st = k.status(Timestamp::from_second(now).unwrap(), "v");
        assert_eq!(st.sources[0].health, Health::Amber);
        assert!(st.sources[0].reason.contains("store unreachable"));
        assert_eq!(st.sources[1].health, Health::Red);
        assert_eq!(st.sources[1].reason, "no backup yet");
    }

    /// A year of runs every ten minutes: what is kept stays bounded (the
    /// window, the chart), the counters count every run once (a record
    /// read again is not counted again), and the chart still spans them.
    #[test]
    fn memory_stays_bounded_however_many_runs() {
        let now = Timestamp::now().as_second();
        let mut k = Knowledge::new(plan(), "h".into());
        k.count_since = Some(Timestamp::from_second(now - 400 * 86400).unwrap());
        let runs: Vec<JobRecord> = (0..52_560i64)
            .map(|i| {
                let outcome = if i % 100 == 0 {
                    JobOutcome::Failed
                } else {
                    JobOutcome::Success
                };
                let end = now - 365 * 86400 + i * 600;
                rec(
                    "redis.cache.backup",
                    "redis",
                    "cache",
                    "backup",
                    end,
                    outcome,
                    50 + i as u64,
                )
            })
            .collect();
        for chunk in runs.chunks(1000) {
            k.add_records(chunk.iter().cloned());
        }
        // Read again (another refresh listing them): not counted twice.
        k.add_records(runs[runs.len() - 500..].iter().cloned());
        assert!(k.records.len() <= WINDOW);
        let chart = &k.charts[&("redis".to_string(), "cache".to_string())];
        assert!(chart.len() <= CHART_POINTS, "{}", chart.len());
        assert!(
            chart.first().unwrap().finished < Timestamp::from_second(now - 300 * 86400).unwrap()
        );
        let s = k.samples("v");
        let runs_of = |o: &str| {
            s.iter()
                .find(|x| {
                    x.name == m::JOB_RUNS
                        && x.label("job") == Some("redis.cache.backup")
                        && x.label("outcome") == Some(o)
                })
                .map(|x| x.value)
        };
        assert_eq!(runs_of("success"), Some(52_560.0 - 526.0));
        assert_eq!(runs_of("failed"), Some(526.0));
        assert_eq!(
            value(&s, m::BACKUP_FAILURES, ("source", "cache")),
            Some(526.0)
        );
        let last = runs.last().unwrap();
        assert_eq!(
            value(&s, m::BACKUP_LAST_SUCCESS, ("source", "cache")),
            Some(secs(last.finished))
        );
        let change = value(&s, m::BACKUP_SIZE_CHANGE, ("source", "cache")).unwrap();
        assert!(change > 0.0 && change < 0.001, "{change}");
        let st = k.status(Timestamp::from_second(now).unwrap(), "v");
        assert_eq!(st.recent.len(), RECENT_RUNS);
        // The chart of the last 90 days reaches back most of them.
        let history = &st.sources[1].history;
        assert!(history.len() > 10, "{}", history.len());
        assert!(history[0].age_seconds > 60.0 * 86400.0, "{:?}", history[0]);
        assert!(history[0].age_seconds <= 90.0 * 86400.0, "{:?}", history[0]);
        // Keys of runs long ago are forgotten and not taken in again.
        k.trim(Timestamp::from_second(now - 400 * 86400).unwrap());
        assert!(k.seen.len() <= 36 * 6 + 1, "{}", k.seen.len());
        assert!(!k.wants(&runs[0].key()));
        k.add_records([runs[0].clone()]);
        assert_eq!(
            value(&k.samples("v"), m::BACKUP_FAILURES, ("source", "cache")),
            Some(526.0)
        );
    }

    /// A run that started long ago (a two-day verify) is taken in when
    /// the agent records it; a record read again after the floor moved is
    /// not counted twice; the floor never moves back; the last run's end
    /// is the latest end, whatever order the records come in.
    #[test]
    fn own_records_count_once_however_old_their_start() {
        let now = Timestamp::now().as_second();
        let mut k = Knowledge::new(plan(), "h".into());
        k.count_since = Some(Timestamp::from_second(now - 10 * 86400).unwrap());
        k.trim(Timestamp::from_second(now - 400 * 86400).unwrap());
        let floor = k.seen_floor.unwrap();
        let mut long = rec(
            "redis.cache.backup",
            "redis",
            "cache",
            "backup",
            now,
            JobOutcome::Success,
            5,
        );
        long.started = Timestamp::from_second(now - 3 * 86400).unwrap();
        long.subset = Some("2/7".into());
        assert!(!k.wants(&long.key()), "older than the floor");
        k.add_own(long.clone());
        k.add_own(long.clone());
        k.add_records([long.clone()]);
        assert_eq!(k.last_subset("redis.cache.backup").as_deref(), Some("2/7"));
        let s = k.samples("v");
        assert_eq!(
            value(&s, m::JOB_RUNS, ("job", "redis.cache.backup")),
            Some(1.0)
        );
        // A shorter run that started later but ended earlier: the last
        // run's end stays the latest end.
        let short = rec(
            "redis.cache.backup",
            "redis",
            "cache",
            "backup",
            now - 3600,
            JobOutcome::Success,
            5,
        );
        k.add_own(short);
        let s = k.samples("v");
        assert_eq!(
            value(&s, m::JOB_LAST_SUCCESS, ("job", "redis.cache.backup")),
            Some(now as f64)
        );
        // A smaller cutoff does not move the floor back.
        k.trim(Timestamp::from_second(now - 800 * 86400).unwrap());
        assert!(k.seen_floor.unwrap() >= floor);
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(words(45.0), "45 s");
        assert_eq!(words(720.0), "12 min");
        assert_eq!(words(3.0 * 3600.0 + 720.0), "3 h 12 min");
        assert_eq!(words(2.0 * 86400.0 + 4.0 * 3600.0), "2 d 4 h");
    }
}
