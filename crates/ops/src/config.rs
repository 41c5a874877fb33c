//! Settings: the TOML config file, overridden by `LIFEBOAT_*` variables, overridden by flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_repo::retention::{self, Policy, TimeZone, Within};
use serde::Deserialize;

use crate::{Error, Result};

/// The config file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The repository URL.
    pub repo: Option<String>,
    /// A file whose first line is the passphrase.
    pub password_file: Option<PathBuf>,
    /// A command that prints the passphrase.
    pub password_command: Option<String>,
    /// A file of key material.
    pub key_file: Option<PathBuf>,
    /// A command that prints key material.
    pub key_command: Option<String>,
    /// `[s3]`.
    #[serde(default)]
    pub s3: S3Section,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageSection,
    /// PostgreSQL sources by name: `[postgres.main]`.
    #[serde(default)]
    pub postgres: std::collections::BTreeMap<String, PgSource>,
    /// Redis sources by name: `[redis.cache]`.
    #[serde(default)]
    pub redis: std::collections::BTreeMap<String, RedisSource>,
    /// Elasticsearch/OpenSearch sources by name: `[elasticsearch.logs]`.
    #[serde(default)]
    pub elasticsearch: std::collections::BTreeMap<String, EsSource>,
    /// `[retention]`: the time zone of retention buckets and per-kind
    /// default policies.
    #[serde(default)]
    pub retention: RetentionSection,
    /// `[repository]`: the repository's own scheduled jobs (forget + prune,
    /// verify) and the time zone of every schedule.
    #[serde(default)]
    pub repository: RepositorySection,
    /// `[agent]`: how `lifeboat agent` runs.
    #[serde(default)]
    pub agent: AgentSection,
    /// `[alerts]`: the thresholds of the strategy's alerts.
    #[serde(default)]
    pub alerts: AlertsSection,
    /// `[[notify]]`: where the agent sends alerts.
    #[serde(default)]
    pub notify: Vec<NotifySection>,
    /// `[[replica]]`: copies of the repository in other stores (regions).
    #[serde(default)]
    pub replica: Vec<ReplicaSection>,
    /// `[cost]`: the price table of `lifeboat cost`.
    #[serde(default)]
    pub cost: crate::cost::CostSection,
    /// `[drill]`: where restore drills put their sandboxes.
    #[serde(default)]
    pub drill: DrillSection,
    /// The file this was read from and its text (for messages that name a
    /// line); none for an empty configuration.
    #[serde(skip)]
    pub origin: Option<(PathBuf, String)>,
}

/// A schedule as written in the config file, with where it was written (so
/// a bad one is refused with its line): a 5-field cron expression
/// (`0 2 * * *`), `@daily`/`@hourly`/`@weekly`/`@monthly`/`@yearly`, or
/// `@every 30s`.
pub type ScheduleText = toml::Spanned<String>;

/// `[repository]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    /// `schedule.forget`, `schedule.verify`.
    #[serde(default)]
    pub schedule: RepositorySchedules,
    /// The IANA time zone schedules are read in (UTC when absent).
    pub timezone: Option<String>,
    /// The data-key epoch age past which the agent rotates the data key
    /// (`repo key rotate`): `90d`. None: never by itself.
    pub rotate_after: Option<String>,
    /// What part of the packs each scheduled verify reads (`1/7`: a
    /// seventh, a different one each run; `10%`; `all`); none when absent
    /// (structure only).
    pub verify_read_data_subset: Option<String>,
    /// The agent keeps `lifeboat replicate --follow` running (new WAL and
    /// snapshots reach the replicas within seconds), restarted when it
    /// ends; default false.
    pub replicate_follow: Option<bool>,
}

/// `[repository] schedule.*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySchedules {
    /// `forget` with `--prune`, by the retention policies.
    pub forget: Option<ScheduleText>,
    /// `verify`.
    pub verify: Option<ScheduleText>,
    /// `replicate`: a whole pass over every `[[replica]]`.
    pub replicate: Option<ScheduleText>,
    /// `drill --all`: every source's newest backup restored and checked.
    pub drill: Option<ScheduleText>,
    /// When the agent checks `rotate_after` (default `0 3 * * *`).
    pub rotate: Option<ScheduleText>,
}

/// `[postgres.NAME] schedule.*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSchedules {
    /// Full base backups.
    pub full: Option<ScheduleText>,
    /// Incremental base backups.
    pub incr: Option<ScheduleText>,
    /// Logical dumps.
    pub dump: Option<ScheduleText>,
}

/// `[redis.NAME] schedule.*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSchedules {
    /// Backups.
    pub backup: Option<ScheduleText>,
}

/// `[elasticsearch.NAME] schedule.*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsSchedules {
    /// Snapshots.
    pub backup: Option<ScheduleText>,
}

/// `[agent]`: every key optional; the defaults are in the agent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// `host:port` of the metrics and status page listener
    /// (`127.0.0.1:9847` when absent).
    pub listen: Option<String>,
    /// A file whose first line is the bearer token the listener requires;
    /// required when `listen` is not a loopback address.
    pub listen_token_file: Option<PathBuf>,
    /// Whether a run missed while the agent was down runs once at start
    /// (default true).
    pub catch_up: Option<bool>,
    /// Jobs running at once at most (default 2).
    pub max_parallel: Option<usize>,
    /// How long one run may take before it is cancelled (`6h` default).
    pub job_timeout: Option<String>,
    /// `[agent.timeouts]`: a job's own limit, by job id
    /// (`"postgres.main.full" = "10h"`), over `job_timeout`.
    #[serde(default)]
    pub timeouts: std::collections::BTreeMap<String, String>,
    /// Retries of a run that failed in a way that may be transient (an
    /// unreachable store), default 3; none for damage or a wrong setting.
    pub retries: Option<u32>,
    /// The first retry's delay, doubled for each next one (`1m` default).
    pub retry_backoff: Option<String>,
    /// Up to this much random delay before each scheduled run (`0s`
    /// default).
    pub jitter: Option<String>,
    /// On SIGTERM, how long running jobs may go on before they are
    /// cancelled (`5m` default).
    pub grace: Option<String>,
    /// How long job records are kept in the repository (`400d` default).
    pub history: Option<String>,
    /// How often the agent refreshes what it reads from the repository and
    /// the servers for metrics (`60s` default).
    pub refresh: Option<String>,
    /// How often the agent measures each replica's lag (`10m` default):
    /// it lists both sides, which costs requests on S3.
    pub replica_refresh: Option<String>,
    /// How often the agent measures what the backups cost for the status
    /// page (`6h` default): `lifeboat cost` reads every snapshot.
    pub cost_refresh: Option<String>,
}

/// `[alerts]`: the strategy's thresholds; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// The age past which a source's newest good backup is "too old"
    /// (`25h` default; a source's own `rpo` wins).
    pub backup_max_age: Option<String>,
    /// The size change against the previous backup of the same type that
    /// alerts (`0.2`: 20 %, default).
    pub size_change: Option<f64>,
    /// The replication lag that alerts (`1h` default).
    pub replication_lag: Option<String>,
    /// How long the repository must stay unreachable before it alerts
    /// (`5m` default).
    pub repository_unreachable_for: Option<String>,
    /// The age of the newest archived WAL segment that alerts (`1h`
    /// default).
    pub wal_max_age: Option<String>,
    /// The age of a source's last successful restore drill that alerts
    /// (`35d` default: the strategy drills monthly).
    pub drill_max_age: Option<String>,
    /// How often a notification of an alert still firing is repeated (`4h`
    /// default, as Alertmanager's `repeat_interval`).
    pub repeat_interval: Option<String>,
    /// The Prometheus job name the generated rules expect lifeboat's
    /// metrics under (`lifeboat` default).
    pub prometheus_job: Option<String>,
}

/// One `[[notify]]` target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// A name for logs and metrics (`webhook-1` when absent).
    pub name: Option<String>,
    /// `webhook` or `command`.
    pub kind: String,
    /// webhook: the URL to POST to.
    pub url: Option<String>,
    /// webhook: a file whose first line is the URL (keeps a token out of
    /// the config file).
    pub url_file: Option<PathBuf>,
    /// webhook: `alertmanager` (Alertmanager's webhook JSON, default) or
    /// `slack` (an incoming-webhook message).
    pub format: Option<String>,
    /// command: the program and its arguments; the alert arrives as JSON on
    /// standard input and in `LIFEBOAT_ALERT_*` variables.
    pub command: Option<Vec<String>>,
    /// How long one delivery may take (`10s` default).
    pub timeout: Option<String>,
    /// Whether resolved alerts are sent too (default true).
    pub send_resolved: Option<bool>,
}

/// `[retention]`: settings of `forget` shared by every source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// The IANA time zone days, weeks, months and years are counted in
    /// (`UTC` when absent).
    pub timezone: Option<String>,
    /// `[retention.files]`: the policy of files series (none when absent:
    /// nothing forgotten).
    pub files: Option<RetentionRules>,
    /// `[retention.stream]`: of `files backup --stdin` series.
    pub stream: Option<RetentionRules>,
    /// `[retention.postgres]`: of base backups, in place of the built-in
    /// default.
    pub postgres: Option<RetentionRules>,
    /// `[retention.pg_dump]`: of dumps, in place of the built-in default.
    pub pg_dump: Option<RetentionRules>,
    /// `[retention.redis]`: of Redis backups, in place of the built-in
    /// default.
    pub redis: Option<RetentionRules>,
    /// `[retention.elasticsearch]`: of Elasticsearch/OpenSearch snapshots,
    /// in place of the built-in default.
    pub elasticsearch: Option<RetentionRules>,
}

/// A retention policy as the config file writes it: restic's `keep_*`
/// rules. Counts are numbers (`-1`: no limit); spans are restic's
/// (`7d`, `1y6m`, `2d12h`; `m` is months); `keep_tag` lists tag lists,
/// each `a,b` (a snapshot carrying all of them is kept).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRules {
    /// `keep_last = N`.
    pub keep_last: Option<i64>,
    /// `keep_hourly = N`.
    pub keep_hourly: Option<i64>,
    /// `keep_daily = N`.
    pub keep_daily: Option<i64>,
    /// `keep_weekly = N`.
    pub keep_weekly: Option<i64>,
    /// `keep_monthly = N`.
    pub keep_monthly: Option<i64>,
    /// `keep_yearly = N`.
    pub keep_yearly: Option<i64>,
    /// `keep_within = "7d"`.
    pub keep_within: Option<String>,
    /// `keep_within_hourly = "2d"`.
    pub keep_within_hourly: Option<String>,
    /// `keep_within_daily = "30d"`.
    pub keep_within_daily: Option<String>,
    /// `keep_within_weekly = "3m"`.
    pub keep_within_weekly: Option<String>,
    /// `keep_within_monthly = "1y"`.
    pub keep_within_monthly: Option<String>,
    /// `keep_within_yearly = "7y"`.
    pub keep_within_yearly: Option<String>,
    /// `keep_tag = ["legal", "db,final"]`.
    #[serde(default)]
    pub keep_tag: Vec<String>,
    /// PostgreSQL only: how far back point-in-time recovery must reach
    /// (`30d`); WAL older than the oldest base backup inside it may expire.
    pub pitr_window: Option<String>,
}

impl RetentionRules {
    /// The policy these rules say; `what` names the table in messages.
    pub fn policy(&self, what: &str) -> Result<Policy> {
        let count = |key: &str, v: Option<i64>| -> Result<Option<u32>> {
            match v {
                None => Ok(None),
                Some(-1) => Ok(Some(retention::ALL)),
                Some(n) if (0..i64::from(retention::ALL)).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(Error::usage(format!(
                    "{key} = {n} in {what} is not a count: give 0 or more, or -1 for no limit"
                ))),
            }
        };
        let span = |key: &str, v: &Option<String>| -> Result<Option<Within>> {
            v.as_deref()
                .map(|t| {
                    t.parse::<Within>()
                        .map_err(|e| Error::usage(format!("{key} in {what}: {e}")))
                })
                .transpose()
        };
        Ok(Policy {
            keep_last: count("keep_last", self.keep_last)?,
            keep_hourly: count("keep_hourly", self.keep_hourly)?,
            keep_daily: count("keep_daily", self.keep_daily)?,
            keep_weekly: count("keep_weekly", self.keep_weekly)?,
            keep_monthly: count("keep_monthly", self.keep_monthly)?,
            keep_yearly: count("keep_yearly", self.keep_yearly)?,
            keep_within: span("keep_within", &self.keep_within)?,
            keep_within_hourly: span("keep_within_hourly", &self.keep_within_hourly)?,
            keep_within_daily: span("keep_within_daily", &self.keep_within_daily)?,
            keep_within_weekly: span("keep_within_weekly", &self.keep_within_weekly)?,
            keep_within_monthly: span("keep_within_monthly", &self.keep_within_monthly)?,
            keep_within_yearly: span("keep_within_yearly", &self.keep_within_yearly)?,
            keep_tags: tag_lists(&self.keep_tag),
        })
    }
}

/// Tag lists as `keep_tag`/`--keep-tag` write them: each `a,b`.
pub fn tag_lists(items: &[String]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

impl RetentionSection {
    /// The time zone `timezone` names (UTC when absent), or a usage error.
    pub fn time_zone(&self) -> Result<TimeZone> {
        match self.timezone.as_deref() {
            None => Ok(TimeZone::UTC),
            Some(name) => time_zone(name),
        }
    }
}

/// The time zone `name` (an IANA name from the system tz database), or a
/// usage error saying what to give.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|e| {
        Error::usage(format!(
            "unknown time zone {name:?} for retention: give an IANA name such as UTC or Europe/Paris, as in /usr/share/zoneinfo ({e})"
        ))
    })
}

/// A Redis source named in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// `redis://[user:password@]host:port`.
    pub redis_url: Option<String>,
    /// A file whose first line is the URL (keeps the password out of the
    /// config file).
    pub redis_url_file: Option<PathBuf>,
    /// `[redis.NAME.retention]`: the policy of its backups.
    pub retention: Option<RetentionRules>,
    /// `schedule.backup`: when the agent backs it up.
    #[serde(default)]
    pub schedule: RedisSchedules,
    /// The recovery point objective: the age its newest good backup must
    /// stay under (`[alerts] backup_max_age` when absent).
    pub rpo: Option<String>,
    /// The recovery time objective a drill measures against (default 30 min).
    pub rto: Option<String>,
}

/// An Elasticsearch/OpenSearch source named in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsSource {
    /// `http(s)://host:port` of a node.
    pub url: Option<String>,
    /// The user (basic auth); its password comes from `password_file` or
    /// `LIFEBOAT_ES_PASSWORD`.
    pub username: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// A file whose first line is an API key, encoded as the
    /// create-API-key call returns it (`encoded`).
    pub api_key_file: Option<PathBuf>,
    /// CA certificates (PEM) of the cluster's HTTPS certificate.
    pub ca_file: Option<PathBuf>,
    /// `ingest` (default) or `orchestrate`.
    pub mode: Option<String>,
    /// The snapshot repository in the cluster (`lifeboat-NAME` default):
    /// ingest registers it at the staging directory; orchestrate uses the
    /// cluster's own.
    pub repository: Option<String>,
    /// Ingest: a directory in `path.repo` of every node, as seen from here.
    pub staging_dir: Option<PathBuf>,
    /// Ingest: the same directory as the nodes see it, when it differs.
    pub staging_location: Option<String>,
    /// Index patterns (every open index when absent).
    #[serde(default)]
    pub indices: Vec<String>,
    /// Whether snapshots take the cluster's global state.
    #[serde(default)]
    pub include_global_state: bool,
    /// `[elasticsearch.NAME.retention]`: the policy of its snapshots.
    pub retention: Option<RetentionRules>,
    /// `schedule.backup`: when the agent snapshots it.
    #[serde(default)]
    pub schedule: EsSchedules,
    /// The recovery point objective (`24h` for this kind when absent).
    pub rpo: Option<String>,
    /// The recovery time objective a restore reports against (`4h`).
    pub rto: Option<String>,
}

/// `[drill]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSection {
    /// The directory drills restore into (default: the system's temporary
    /// directory); it needs room for the largest source's restore.
    pub workdir: Option<PathBuf>,
}

/// A PostgreSQL source named in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSource {
    /// The data directory.
    pub pgdata: Option<PathBuf>,
    /// The connection string.
    pub pg_url: Option<String>,
    /// Seconds `pg backup` waits for its WAL.
    pub archive_timeout: Option<u64>,
    /// `[postgres.NAME.retention]`: the policy of its base backups and of
    /// its dumps (each a series of its own).
    pub retention: Option<RetentionRules>,
    /// `schedule.full`, `schedule.incr`, `schedule.dump`: when the agent
    /// backs it up.
    #[serde(default)]
    pub schedule: PgSchedules,
    /// The recovery point objective: the age its newest good backup must
    /// stay under (`[alerts] backup_max_age` when absent).
    pub rpo: Option<String>,
    /// The recovery time objective a drill measures against (default 1 h).
    pub rto: Option<String>,
    /// The SQL that erases one subject (`$1`): one string of statements
    /// separated by `;`, or a list. Every restore of this source re-applies
    /// the erasure ledger with it before clients see the data.
    pub erase_sql: Option<EraseSql>,
    /// The database `erase_sql` runs in (default: the one of `pg_url`,
    /// else `postgres`; a dump restore: the database restored).
    pub erase_database: Option<String>,
}

/// `erase_sql`: one string, or a list of statements.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EraseSql {
    /// Statements separated by `;`.
    One(String),
    /// One or more statements each.
    Many(Vec<String>),
}

impl EraseSql {
    /// The statements, split at the semicolons outside quotes.
    pub fn statements(&self) -> Vec<String> {
        match self {
            EraseSql::One(s) => lifeboat_postgres::erase::split_statements(s),
            EraseSql::Many(v) => v
                .iter()
                .flat_map(|s| lifeboat_postgres::erase::split_statements(s))
                .collect(),
        }
    }
}

impl PgSource {
    /// `pitr_window` of its retention table: how far back point-in-time
    /// recovery must reach (WAL expiry keeps what that needs).
    pub fn pitr_window(&self) -> Result<Option<Within>> {
        self.retention
            .as_ref()
            .and_then(|r| r.pitr_window.as_deref())
            .map(|t| {
                t.parse::<Within>().map_err(|e| {
                    Error::usage(format!("pitr_window in [postgres.*.retention]: {e}"))
                })
            })
            .transpose()
    }
}

impl FileConfig {
    /// The Elasticsearch/OpenSearch source `name`, or a usage error listing
    /// the ones there are.
    pub fn es_source(&self, name: &str) -> Result<&EsSource> {
        source(
            &self.elasticsearch,
            name,
            "Elasticsearch/OpenSearch",
            "elasticsearch",
            "url",
        )
    }

    /// The Redis source `name`, or a usage error listing the ones there are.
    pub fn redis_source(&self, name: &str) -> Result<&RedisSource> {
        source(&self.redis, name, "Redis", "redis", "redis_url")
    }

    /// The source `name`, or a usage error listing the ones there are.
    pub fn pg_source(&self, name: &str) -> Result<&PgSource> {
        source(
            &self.postgres,
            name,
            "PostgreSQL",
            "postgres",
            "pgdata and pg_url",
        )
    }
}

/// The source `name` of a config file's `[section.NAME]` tables, or a usage
/// error naming what to add and listing the sources there are.
fn source<'a, T>(
    sources: &'a std::collections::BTreeMap<String, T>,
    name: &str,
    kind: &str,
    section: &str,
    keys: &str,
) -> Result<&'a T> {
    sources.get(name).ok_or_else(|| {
        let known: Vec<&str> = sources.keys().map(String::as_str).collect();
        Error::usage(format!(
            "no {kind} source {name:?} in the config file (a [{section}.{name}] section with {keys}); {}",
            if known.is_empty() {
                "it names none".to_string()
            } else {
                format!("it names: {}", known.join(", "))
            }
        ))
    })
}

/// One `[[replica]]`: a copy of the repository in another store, kept up
/// to date by `lifeboat replicate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSection {
    /// Its name, in commands (`--replica NAME`), metrics and messages.
    pub name: String,
    /// Where it lives: a path, `file://PATH` or `s3://BUCKET[/PREFIX]`.
    pub repo: String,
    /// How long an object deleted from the primary (by forget or prune)
    /// stays in the replica (`7d` when absent).
    pub delete_delay: Option<String>,
    /// The most bytes a second `replicate` stores into it (`50MiB`); no
    /// cap when absent.
    pub bandwidth_limit: Option<String>,
    /// `[replica.s3]`: how to reach it; a key left out is taken from `[s3]`.
    #[serde(default)]
    pub s3: S3Section,
    /// The S3 storage class its data (packs, and the WAL of archived base
    /// backups) is written in: `STANDARD_IA`, `GLACIER_IR`, `GLACIER`,
    /// `DEEP_ARCHIVE`…; index, snapshots and key slots stay in the
    /// bucket's default, which reads at once.
    pub storage_class: Option<String>,
    /// An archive replica takes only the snapshots kept by these rules of
    /// their series' retention policy (`["monthly", "yearly"]`); every
    /// snapshot when absent.
    pub archive_keep: Option<Vec<String>>,
    /// An archive replica takes a snapshot only once it is this old
    /// (`90d`).
    pub archive_older_than: Option<String>,
}

/// The delete delay of a replica when its config gives none.
pub const DEFAULT_REPLICA_DELETE_DELAY: Duration = Duration::from_secs(7 * 86_400);

impl FileConfig {
    /// The replicas `only` names (every replica when empty), each checked:
    /// a name given that the config lacks, two replicas of one name, or a
    /// replica at the primary's own location is a usage error.
    pub fn replicas(&self, only: &[String], primary: Option<&str>) -> Result<Vec<&ReplicaSection>> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.replica {
            if r.name.trim().is_empty() {
                return Err(Error::usage(format!(
                    "a [[replica]] in the config file has no name (replica at {})",
                    r.repo
                )));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(Error::usage(format!(
                    "two [[replica]] sections are named {:?}: give each its own name",
                    r.name
                )));
            }
            if primary.is_some_and(|p| same_location(p, &r.repo)) {
                return Err(Error::usage(format!(
                    "replica {:?} is the repository itself ({}): a replica must live elsewhere, another bucket or region",
                    r.name, r.repo
                )));
            }
        }
        for name in only {
            if !self.replica.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = self.replica.iter().map(|r| r.name.as_str()).collect();
                return Err(Error::usage(format!(
                    "no replica {name:?} in the config file ({}); add a [[replica]] section with name = {name:?} and repo = URL",
                    if known.is_empty() {
                        "it names none".to_string()
                    } else {
                        format!("it names: {}", known.join(", "))
                    }
                )));
            }
        }
        Ok(self
            .replica
            .iter()
            .filter(|r| only.is_empty() || only.contains(&r.name))
            .collect())
    }
}

/// True when two repository URLs name the same place (trailing slashes
/// and `file://` aside).
fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.strip_prefix("file://")
            .unwrap_or(s)
            .trim_end_matches('/')
            .to_string()
    };
    norm(a) == norm(b)
}

impl ReplicaSection {
    /// Its delete delay.
    pub fn delete_delay(&self) -> Result<Duration> {
        match &self.delete_delay {
            None => Ok(DEFAULT_REPLICA_DELETE_DELAY),
            Some(d) => humantime::parse_duration(d).map_err(|e| {
                Error::usage(format!(
                    "replica {:?}: delete_delay = {d:?} is not a duration ({e}); give one such as 7d or 36h",
                    self.name
                ))
            }),
        }
    }

    /// Its bandwidth cap in bytes a second.
    pub fn bandwidth(&self) -> Result<Option<u64>> {
        self.bandwidth_limit
            .as_deref()
            .map(|b| {
                parse_rate(b).map_err(|e| {
                    Error::usage(format!("replica {:?}: bandwidth_limit: {e}", self.name))
                })
            })
            .transpose()
    }
}

/// A bandwidth such as `50MiB` or `10M` (a second), in bytes a second.
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().trim_end_matches("/s");
    match t.parse::<lifeboat_repo::ByteSize>() {
        Ok(b) if b.0 > 0 => Ok(b.0),
        Ok(_) => Err(format!(
            "{s:?} is zero: give a rate such as 50MiB (a second)"
        )),
        Err(e) => Err(format!("{s:?}: {e}; give a rate such as 50MiB (a second)")),
    }
}

/// `[s3]`: how to reach an S3 repository.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// The endpoint URL.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Virtual-host-style addressing.
    pub virtual_host_style: Option<bool>,
}

/// `[storage]`: limits and retries of storage calls.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Calls in flight at most.
    pub max_concurrency: Option<usize>,
    /// Attempts per storage call, the first included.
    pub max_attempts: Option<u32>,
    /// Seconds one storage call may take.
    pub timeout_secs: Option<u64>,
}

/// The config file to read: `--config`/`LIFEBOAT_CONFIG`, else the first that
/// exists of `$XDG_CONFIG_HOME/lifeboat/lifeboat.toml` (or
/// `~/.config/lifeboat/lifeboat.toml`) and `/etc/lifeboat/lifeboat.toml`.
pub fn default_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        out.push(Path::new(&x).join("lifeboat/lifeboat.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        out.push(Path::new(&home).join(".config/lifeboat/lifeboat.toml"));
    }
    out.push(PathBuf::from("/etc/lifeboat/lifeboat.toml"));
    out
}

/// Reads the config file `explicit` names, else the first of
/// [`default_paths`] that exists, else an empty configuration.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig> {
    let path = match explicit {
        Some(p) => {
            if !p.exists() {
                return Err(Error::usage(format!(
                    "config file {} does not exist; check --config / LIFEBOAT_CONFIG",
                    p.display()
                )));
            }
            p.to_path_buf()
        }
        None => match default_paths().into_iter().find(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(FileConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::usage_because(format!("cannot read config file {}", path.display()), e)
    })?;
    let mut cfg: FileConfig = toml::from_str(&text)
        .map_err(|e| Error::usage(format!("config file {} is invalid: {e}", path.display())))?;
    cfg.origin = Some((path, text));
    Ok(cfg)
}

impl FileConfig {
    /// "config file PATH, line N" for a value read at byte `span`, for
    /// messages about a setting that parsed but means nothing.
    pub fn place(&self, span: std::ops::Range<usize>) -> String {
        match &self.origin {
            Some((path, text)) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("config file {}, line {line}", path.display())
            }
            None => "the configuration".to_string(),
        }
    }
}

impl StorageSection {
    /// The retry policy these settings ask for.
    pub fn retry_policy(&self) -> lifeboat_storage::RetryPolicy {
        let mut p = lifeboat_storage::RetryPolicy::default();
        if let Some(n) = self.max_attempts {
            p.max_attempts = n.max(1);
        }
        if let Some(t) = self.timeout_secs {
            p.timeout = Duration::from_secs(t.max(1));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn replicas_are_checked_and_named_in_every_refusal() {
        let c = cfg(
            "repo = \"s3://b/prod\"\n[[replica]]\nname = \"dr\"\nrepo = \"s3://dr/prod\"\ndelete_delay = \"36h\"\nbandwidth_limit = \"50MiB\"\n[replica.s3]\nregion = \"eu-west-1\"\n",
        );
        let all = c.replicas(&[], c.repo.as_deref()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            all[0].delete_delay().unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(all[0].bandwidth().unwrap(), Some(50 << 20));
        let e = c.replicas(&["eu".into()], None).unwrap_err().to_string();
        assert!(
            e.contains("no replica \"eu\"") && e.contains("it names: dr"),
            "{e}"
        );

        let same = cfg("repo = \"/srv/r\"\n[[replica]]\nname = \"x\"\nrepo = \"file:///srv/r/\"\n");
        let e = same
            .replicas(&[], same.repo.as_deref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the repository itself"), "{e}");
        let twice = cfg(
            "[[replica]]\nname = \"a\"\nrepo = \"/x\"\n[[replica]]\nname = \"a\"\nrepo = \"/y\"\n",
        );
        let e = twice.replicas(&[], None).unwrap_err().to_string();
        assert!(
            e.contains("two [[replica]] sections are named \"a\""),
            "{e}"
        );
        let bad = cfg("[[replica]]\nname = \"a\"\nrepo = \"/x\"\ndelete_delay = \"a week\"\n");
        let e = bad.replica[0].delete_delay().unwrap_err().to_string();
        assert!(e.contains("delete_delay") && e.contains("7d"), "{e}");
        assert_eq!(
            cfg("[[replica]]\nname = \"a\"\nrepo = \"/x\"\n").replica[0]
                .delete_delay()
                .unwrap(),
            DEFAULT_REPLICA_DELETE_DELAY
        );
        assert!(parse_rate("0").is_err());
        let priced = cfg(
            "[cost]\nprices_source = \"contract 2026\"\ntransfer_out_gb = 0.05\n[cost.price.GLACIER]\nstorage_gb_month = 0.002\nput_per_1000 = 0.02\nget_per_1000 = 0.0004\nthaw_gb = { bulk = 0.0 }\nthaw_per_1000 = { bulk = 0.02 }\n",
        );
        assert_eq!(priced.cost.price["GLACIER"].storage_gb_month, 0.002);
        assert_eq!(priced.cost.transfer_out_gb, Some(0.05));
        assert!(toml::from_str::<FileConfig>("[cost.price.GLACIER]\nstorage = 1\n").is_err());
        assert_eq!(parse_rate("10MiB/s"), Ok(10 << 20));
    }
}
