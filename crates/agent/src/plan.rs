//! The agent's plan: its settings and the jobs the config file schedules,
//! checked as a whole before anything runs (a bad schedule is refused with
//! the line it is on).

use std::time::Duration;

use jiff::tz::TimeZone;
use lifeboat_ops::config::{FileConfig, ScheduleText};
use lifeboat_ops::Error;

use crate::cron::Schedule;

/// The strategy's default recovery point objective: the strategy alerts
/// when the newest backup is older than 25 hours.
pub const DEFAULT_RPO: Duration = Duration::from_secs(25 * 3600);

/// How the agent runs (`[agent]`, with defaults filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// The listener's address.
    pub listen: String,
    /// The bearer token file, when set.
    pub listen_token_file: Option<std::path::PathBuf>,
    /// Whether a run missed while the agent was down runs at start.
    pub catch_up: bool,
    /// Jobs running at once at most.
    pub max_parallel: usize,
    /// How long one run may take.
    pub job_timeout: Duration,
    /// Retries of a run that failed in a way that may be transient.
    pub retries: u32,
    /// The first retry's delay (doubled for each next one).
    pub retry_backoff: Duration,
    /// Up to this much random delay before each scheduled run.
    pub jitter: Duration,
    /// How long running jobs may go on after SIGTERM.
    pub grace: Duration,
    /// How long job records are kept.
    pub history: Duration,
    /// How often the agent refreshes what it reads for metrics.
    pub refresh: Duration,
    /// How often it measures the replicas' lag.
    pub replica_refresh: Duration,
    /// How often it measures what the backups cost.
    pub cost_refresh: Duration,
    /// The time zone schedules are read in.
    pub timezone: TimeZone,
}

/// What a job does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `pg backup --type full|incr`.
    PgBackup {
        /// `full` or `incr`.
        full: bool,
    },
    /// `pg dump`.
    PgDump,
    /// `redis backup`.
    RedisBackup,
    /// `es backup`.
    EsBackup,
    /// `forget --prune`.
    Forget,
    /// `verify`, with a data subset per run.
    Verify {
        /// `1/7`, `10%`, `all`, or none (structure only).
        subset: Option<String>,
    },
    /// `replicate`: a whole pass over every replica.
    Replicate,
    /// `drill --all`: a restore drill of every source.
    Drill,
    /// `repo key rotate --if-older-than AGE`: the data key rotated once its
    /// epoch is older than `rotate_after`.
    Rotate {
        /// `rotate_after` as written (`90d`).
        after: String,
    },
}

/// One scheduled job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// `postgres.main.full`, `redis.cache.backup`, `repository.forget`.
    pub id: String,
    /// `postgres`, `redis`; none for repository jobs.
    pub source_kind: Option<String>,
    /// The source's config name.
    pub source: Option<String>,
    /// `full`, `incr`, `dump`, `backup`, `forget`, `verify`.
    pub job_type: String,
    /// What it runs.
    pub kind: JobKind,
    /// When.
    pub schedule: Schedule,
    /// How long one run may take: `[agent.timeouts]`, else `job_timeout`.
    pub timeout: Duration,
}

impl JobSpec {
    /// The `lifeboat` arguments that run it (after the global ones).
    /// `last_part` is the data subset the job's last good run read
    /// (`3/7`), which verify's rotation goes on from: kept in the job
    /// records, so it never stalls however the history is trimmed.
    pub fn args(&self, last_part: Option<&str>) -> Vec<String> {
        let src = self.source.clone().unwrap_or_default();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match &self.kind {
            JobKind::PgBackup { full } => v(&[
                "pg",
                "backup",
                &src,
                "--type",
                if *full { "full" } else { "incr" },
            ]),
            JobKind::PgDump => v(&["pg", "dump", &src]),
            JobKind::RedisBackup => v(&["redis", "backup", &src]),
            JobKind::EsBackup => v(&["es", "backup", &src]),
            JobKind::Forget => v(&["forget", "--prune"]),
            JobKind::Replicate => v(&["replicate"]),
            JobKind::Drill => v(&["drill", "--all", "--trigger", "schedule"]),
            JobKind::Rotate { after } => v(&["repo", "key", "rotate", "--if-older-than", after]),
            JobKind::Verify { subset } => match subset.as_deref() {
                None => v(&["verify"]),
                Some("all") => v(&["verify", "--read-data"]),
                Some(s) => match rotate(s, last_part) {
                    Some(part) => v(&["verify", "--read-data-subset", &part]),
                    None => v(&["verify", "--read-data-subset", s]),
                },
            },
        }
    }

    /// The data subset the run with these arguments reads (`--read-data-subset`
    /// or `all`), recorded in its job record.
    pub fn subset_of(args: &[String]) -> Option<String> {
        if args.iter().any(|a| a == "--read-data") {
            return Some("all".into());
        }
        args.iter()
            .position(|a| a == "--read-data-subset")
            .and_then(|i| args.get(i + 1).cloned())
    }

    /// True for the jobs that make a backup of a source.
    pub fn is_backup(&self) -> bool {
        matches!(
            self.kind,
            JobKind::PgBackup { .. } | JobKind::PgDump | JobKind::RedisBackup | JobKind::EsBackup
        )
    }
}

/// `n/t` as a different part for each run: the part after `last` (of the
/// same `t`), from 1, when `n` is `*` or the subset is written `1/t` — so
/// that `verify_read_data_subset = "1/7"` on a daily verify reads every
/// pack once a week. Other forms stay as written.
fn rotate(subset: &str, last: Option<&str>) -> Option<String> {
    let (n, t) = subset.split_once('/')?;
    let t: u64 = t.trim().parse().ok()?;
    if t == 0 || !(n.trim() == "1" || n.trim() == "*") {
        return None;
    }
    let previous = last
        .and_then(|l| l.split_once('/'))
        .filter(|(_, lt)| lt.trim().parse::<u64>().ok() == Some(t))
        .and_then(|(k, _)| k.trim().parse::<u64>().ok());
    Some(format!("{}/{t}", previous.map_or(1, |k| k % t + 1)))
}

/// A configured source: its RPO and, for PostgreSQL, where the agent
/// reads the WAL archive's state.
#[derive(Clone, PartialEq)]
pub struct SourcePlan {
    /// `postgres`, `redis`.
    pub kind: String,
    /// Its config name.
    pub name: String,
    /// Its RPO.
    pub rpo: Duration,
    /// PostgreSQL: the data directory.
    pub pgdata: Option<std::path::PathBuf>,
    /// PostgreSQL: the connection string (may hold a password: never
    /// printed, so no `Debug` shows it).
    pub pg_url: Option<String>,
}

impl std::fmt::Debug for SourcePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcePlan")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("rpo", &self.rpo)
            .field("pgdata", &self.pgdata)
            .finish_non_exhaustive()
    }
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The agent's settings.
    pub settings: AgentSettings,
    /// Every scheduled job, in a stable order (sources by kind and name).
    pub jobs: Vec<JobSpec>,
    /// Every configured source.
    pub sources: Vec<SourcePlan>,
    /// The names of the configured replicas.
    pub replicas: Vec<String>,
    /// Whether the agent keeps `replicate --follow` running.
    pub follow: bool,
    /// `[repository] rotate_after`: the data-key epoch age the agent
    /// rotates at.
    pub rotate_after: Option<Duration>,
}

/// A duration setting: `25h`, `90m`, `7d`.
pub fn duration(
    cfg: &FileConfig,
    key: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, Error> {
    match v {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            Error::usage(format!(
                "{key} = {t:?} in {}: {e}; give a duration such as 90s, 30m, 6h or 7d",
                cfg.origin
                    .as_ref()
                    .map(|(p, _)| format!("config file {}", p.display()))
                    .unwrap_or_else(|| "the configuration".into())
            ))
        }),
    }
}

fn schedule(cfg: &FileConfig, key: &str, text: &ScheduleText) -> Result<Schedule, Error> {
    text.get_ref().parse::<Schedule>().map_err(|e| {
        Error::usage(format!(
            "{}: {key} = {:?} is not a schedule: {e}",
            cfg.place(text.span()),
            text.get_ref()
        ))
    })
}

impl Plan {
    /// The plan `cfg` says, or a usage error naming the setting (and its
    /// line) that is wrong.
    pub fn from_config(cfg: &FileConfig) -> Result<Plan, Error> {
        let a = &cfg.agent;
        let timezone = match cfg.repository.timezone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| {
                Error::usage(format!(
                    "[repository] timezone = {name:?}: unknown time zone; give an IANA name such as UTC or Europe/Paris ({e})"
                ))
            })?,
        };
        let settings = AgentSettings {
            listen: a.listen.clone().unwrap_or_else(|| "127.0.0.1:9847".into()),
            listen_token_file: a.listen_token_file.clone(),
            catch_up: a.catch_up.unwrap_or(true),
            max_parallel: a.max_parallel.unwrap_or(2).max(1),
            job_timeout: duration(
                cfg,
                "job_timeout",
                a.job_timeout.as_deref(),
                Duration::from_secs(6 * 3600),
            )?,
            retries: a.retries.unwrap_or(3),
            retry_backoff: duration(
                cfg,
                "retry_backoff",
                a.retry_backoff.as_deref(),
                Duration::from_secs(60),
            )?,
            jitter: duration(cfg, "jitter", a.jitter.as_deref(), Duration::ZERO)?,
            grace: duration(cfg, "grace", a.grace.as_deref(), Duration::from_secs(300))?,
            history: duration(
                cfg,
                "history",
                a.history.as_deref(),
                Duration::from_secs(400 * 86400),
            )?,
            refresh: duration(
                cfg,
                "refresh",
                a.refresh.as_deref(),
                Duration::from_secs(60),
            )?
            .max(Duration::from_secs(1)),
            replica_refresh: duration(
                cfg,
                "replica_refresh",
                a.replica_refresh.as_deref(),
                Duration::from_secs(600),
            )?
            .max(Duration::from_secs(1)),
            cost_refresh: duration(
                cfg,
                "cost_refresh",
                a.cost_refresh.as_deref(),
                Duration::from_secs(6 * 3600),
            )?
            .max(Duration::from_secs(1)),
            timezone,
        };
        if settings.job_timeout.is_zero() {
            return Err(Error::usage("[agent] job_timeout must be more than 0"));
        }
        let default_rpo = duration(
            cfg,
            "backup_max_age",
            cfg.alerts.backup_max_age.as_deref(),
            DEFAULT_RPO,
        )?;
        let mut jobs = Vec::new();
        let mut sources = Vec::new();
        for (name, src) in &cfg.postgres {
            let s = &src.schedule;
            for (ty, text, kind) in [
                ("full", &s.full, JobKind::PgBackup { full: true }),
                ("incr", &s.incr, JobKind::PgBackup { full: false }),
                ("dump", &s.dump, JobKind::PgDump),
            ] {
                if let Some(text) = text {
                    jobs.push(JobSpec {
                        id: format!("postgres.{name}.{ty}"),
                        source_kind: Some("postgres".into()),
                        source: Some(name.clone()),
                        job_type: ty.into(),
                        kind,
                        schedule: schedule(cfg, &format!("[postgres.{name}] schedule.{ty}"), text)?,
                        timeout: settings.job_timeout,
                    });
                }
            }
            sources.push(SourcePlan {
                kind: "postgres".into(),
                name: name.clone(),
                rpo: duration(
                    cfg,
                    &format!("[postgres.{name}] rpo"),
                    src.rpo.as_deref(),
                    default_rpo,
                )?,
                pgdata: src.pgdata.clone(),
                pg_url: src.pg_url.clone(),
            });
        }
        for (name, src) in &cfg.redis {
            if let Some(text) = &src.schedule.backup {
                jobs.push(JobSpec {
                    id: format!("redis.{name}.backup"),
                    source_kind: Some("redis".into()),
                    source: Some(name.clone()),
                    job_type: "backup".into(),
                    kind: JobKind::RedisBackup,
                    schedule: schedule(cfg, &format!("[redis.{name}] schedule.backup"), text)?,
                    timeout: settings.job_timeout,
                });
            }
            sources.push(SourcePlan {
                kind: "redis".into(),
                name: name.clone(),
                rpo: duration(
                    cfg,
                    &format!("[redis.{name}] rpo"),
                    src.rpo.as_deref(),
                    default_rpo,
                )?,
                pgdata: None,
                pg_url: None,
            });
        }
        for (name, src) in &cfg.elasticsearch {
            if let Some(text) = &src.schedule.backup {
                jobs.push(JobSpec {
                    id: format!("elasticsearch.{name}.backup"),
                    source_kind: Some("elasticsearch".into()),
                    source: Some(name.clone()),
                    job_type: "backup".into(),
                    kind: JobKind::EsBackup,
                    schedule: schedule(
                        cfg,
                        &format!("[elasticsearch.{name}] schedule.backup"),
                        text,
                    )?,
                    timeout: settings.job_timeout,
                });
            }
            sources.push(SourcePlan {
                kind: "elasticsearch".into(),
                name: name.clone(),
                rpo: duration(
                    cfg,
                    &format!("[elasticsearch.{name}] rpo"),
                    src.rpo.as_deref(),
                    default_rpo,
                )?,
                pgdata: None,
                pg_url: None,
            });
        }
        let r = &cfg.repository;
        if let Some(text) = &r.schedule.forget {
            jobs.push(JobSpec {
                id: "repository.forget".into(),
                source_kind: None,
                source: None,
                job_type: "forget".into(),
                kind: JobKind::Forget,
                schedule: schedule(cfg, "[repository] schedule.forget", text)?,
                timeout: settings.job_timeout,
            });
        }
        if let Some(text) = &r.schedule.replicate {
            if cfg.replica.is_empty() {
                return Err(Error::usage(format!(
                    "[repository] schedule.replicate is set ({}), but the config file names no [[replica]]",
                    cfg.place(text.span())
                )));
            }
            jobs.push(JobSpec {
                id: "repository.replicate".into(),
                source_kind: None,
                source: None,
                job_type: "replicate".into(),
                kind: JobKind::Replicate,
                schedule: schedule(cfg, "[repository] schedule.replicate", text)?,
                timeout: settings.job_timeout,
            });
        }
        if let Some(after) = &r.rotate_after {
            humantime::parse_duration(after).map_err(|e| {
                Error::usage(format!(
                    "[repository] rotate_after = {after:?}: {e}; give a duration such as 90d"
                ))
            })?;
            let sched = match &r.schedule.rotate {
                Some(text) => schedule(cfg, "[repository] schedule.rotate", text)?,
                None => "0 3 * * *"
                    .parse()
                    .map_err(|e| Error::usage(format!("the default rotate schedule: {e}")))?,
            };
            jobs.push(JobSpec {
                id: "repository.rotate".into(),
                source_kind: None,
                source: None,
                job_type: "rotate".into(),
                kind: JobKind::Rotate {
                    after: after.clone(),
                },
                schedule: sched,
                timeout: settings.job_timeout,
            });
        }
        if let Some(text) = &r.schedule.drill {
            jobs.push(JobSpec {
                id: "repository.drill".into(),
                source_kind: None,
                source: None,
                job_type: "drill".into(),
                kind: JobKind::Drill,
                schedule: schedule(cfg, "[repository] schedule.drill", text)?,
                timeout: settings.job_timeout,
            });
        }
        if let Some(text) = &r.schedule.verify {
            let subset = r.verify_read_data_subset.clone();
            if let Some(s) = subset.as_deref() {
                if s != "all" && !s.contains('/') && !s.ends_with('%') {
                    return Err(Error::usage(format!(
                        "[repository] verify_read_data_subset = {s:?}: give n/t (1/7: a seventh, another each run), a percentage (10%) or all"
                    )));
                }
            }
            jobs.push(JobSpec {
                id: "repository.verify".into(),
                source_kind: None,
                source: None,
                job_type: "verify".into(),
                kind: JobKind::Verify { subset },
                schedule: schedule(cfg, "[repository] schedule.verify", text)?,
                timeout: settings.job_timeout,
            });
        }
        for (id, t) in &a.timeouts {
            let d = duration(
                cfg,
                &format!("[agent.timeouts] {id:?}"),
                Some(t),
                settings.job_timeout,
            )?;
            match jobs.iter_mut().find(|j| &j.id == id) {
                Some(j) if !d.is_zero() => j.timeout = d,
                Some(_) => {
                    return Err(Error::usage(format!(
                        "[agent.timeouts] {id:?} must be more than 0"
                    )))
                }
                None => {
                    let known: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                    return Err(Error::usage(format!(
                        "[agent.timeouts] names {id:?}, which is not a scheduled job; the jobs are: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        let replicas = cfg
            .replicas(&[], cfg.repo.as_deref())?
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let follow = cfg.repository.replicate_follow.unwrap_or(false);
        if follow && cfg.replica.is_empty() {
            return Err(Error::usage(
                "[repository] replicate_follow = true, but the config file names no [[replica]]",
            ));
        }
        let rotate_after = r
            .rotate_after
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok());
        Ok(Plan {
            settings,
            jobs,
            sources,
            replicas,
            follow,
            rotate_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> FileConfig {
        let mut c: FileConfig = toml::from_str(text).unwrap();
        c.origin = Some(("/etc/lifeboat.toml".into(), text.to_string()));
        c
    }

    #[test]
    fn the_strategy_becomes_jobs() {
        let p = Plan::from_config(&cfg(r#"
[postgres.main]
schedule.full = "0 2 * * *"
schedule.incr = "0 */4 * * *"
[redis.cache]
schedule.backup = "0 */6 * * *"
rpo = "7h"
[elasticsearch.logs]
url = "http://127.0.0.1:9200"
schedule.backup = "0 1 * * *"
[repository]
schedule.forget = "0 5 * * *"
schedule.verify = "0 6 * * 0"
verify_read_data_subset = "1/4"
"#))
        .unwrap();
        let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "postgres.main.full",
                "postgres.main.incr",
                "redis.cache.backup",
                "elasticsearch.logs.backup",
                "repository.forget",
                "repository.verify"
            ]
        );
        assert_eq!(p.jobs[3].args(None), ["es", "backup", "logs"]);
        assert!(p
            .sources
            .iter()
            .any(|s| s.kind == "elasticsearch" && s.name == "logs"));
        assert_eq!(
            p.jobs[0].args(None),
            ["pg", "backup", "main", "--type", "full"]
        );
        assert_eq!(p.jobs[2].args(None), ["redis", "backup", "cache"]);
        assert_eq!(p.jobs[4].args(None), ["forget", "--prune"]);
        let mut last: Option<String> = None;
        let parts: Vec<String> = (0..5)
            .map(|_| {
                let a = p.jobs[5].args(last.as_deref());
                last = JobSpec::subset_of(&a);
                a[2].clone()
            })
            .collect();
        assert_eq!(parts, ["1/4", "2/4", "3/4", "4/4", "1/4"]);
        assert_eq!(p.sources[0].rpo, DEFAULT_RPO);
        assert_eq!(p.sources[1].rpo, Duration::from_secs(7 * 3600));
        assert!(p.settings.catch_up);
        assert_eq!(p.settings.listen, "127.0.0.1:9847");
        assert!(p.jobs.iter().all(|j| j.timeout == p.settings.job_timeout));
    }

    #[test]
    fn a_job_may_have_its_own_timeout() {
        let text = "[postgres.main]\nschedule.full = \"0 2 * * *\"\nschedule.incr = \"0 */4 * * *\"\n[agent]\njob_timeout = \"2h\"\n[agent.timeouts]\n\"postgres.main.full\" = \"10h\"\n";
        let p = Plan::from_config(&cfg(text)).unwrap();
        assert_eq!(p.jobs[0].timeout, Duration::from_secs(10 * 3600));
        assert_eq!(p.jobs[1].timeout, Duration::from_secs(2 * 3600));
        let e = Plan::from_config(&cfg(
            &text.replace("postgres.main.full\" =", "postgres.other.full\" =")
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not a scheduled job"), "{e}");
        assert!(e.to_string().contains("postgres.main.full"), "{e}");
    }

    #[test]
    fn a_bad_schedule_is_refused_with_its_line() {
        let e = Plan::from_config(&cfg(
            "[postgres.main]\npg_url = \"x\"\nschedule.full = \"0 25 * * *\"\n",
        ))
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 3"), "{m}");
        assert!(m.contains("schedule.full"), "{m}");
        assert_eq!(e.class(), lifeboat_repo::ErrorClass::Usage);
        let e = Plan::from_config(&cfg("[agent]\njob_timeout = \"soon\"\n")).unwrap_err();
        assert!(e.to_string().contains("job_timeout"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_strategy_loads_and_schedules_the_seed() {
        let text = include_str!("../../../examples/strategy.toml");
        let cfg: FileConfig = toml::from_str(text).expect("examples/strategy.toml parses");
        let p = Plan::from_config(&cfg).unwrap();
        let ids: Vec<String> = p
            .jobs
            .iter()
            .map(|j| format!("{} {}", j.id, j.schedule))
            .collect();
        assert_eq!(
            ids,
            [
                "postgres.main.full 0 2 * * *",
                "postgres.main.incr 0 */4 * * *",
                "postgres.main.dump 30 3 * * *",
                "redis.cache.backup 0 */6 * * *",
                "elasticsearch.search.backup 0 1 * * *",
                "repository.forget 0 5 * * *",
                "repository.replicate 15 * * * *",
                "repository.drill 0 4 1 * *",
                "repository.verify 0 6 * * 0",
            ]
        );
        assert_eq!(p.replicas, ["dr-us-west"]);
        assert!(p.follow);
        assert_eq!(p.sources[0].rpo, Duration::from_secs(25 * 3600));
        assert_eq!(p.sources[1].rpo, Duration::from_secs(7 * 3600));
    }
}
