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
    /// `[retention]`: the time zone of retention buckets and per-kind
    /// default policies.
    #[serde(default)]
    pub retention: RetentionSection,
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

/// `[s3]`: how to reach an S3 repository.
#[derive(Debug, Default, Deserialize)]
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
    #[serde(default)]
    pub virtual_host_style: bool,
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
    toml::from_str(&text)
        .map_err(|e| Error::usage(format!("config file {} is invalid: {e}", path.display())))
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
