//! Settings: the TOML config file, overridden by `LIFEBOAT_*` variables, overridden by flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::UsageError;

/// The config file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) repo: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_command: Option<String>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) key_command: Option<String>,
    #[serde(default)]
    pub s3: S3Section,
    #[serde(default)]
    pub(crate) storage: StorageSection,
    /// PostgreSQL sources by name: `[postgres.main]`.
    #[serde(default)]
    pub(crate) postgres: std::collections::BTreeMap<String, PgSource>,
    /// Redis sources by name: `[redis.cache]`.
    #[serde(default)]
    pub(crate) redis: std::collections::BTreeMap<String, RedisSource>,
}

/// A Redis source named in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSource {
    /// `redis://[user:password@]host:port`.
    pub(crate) redis_url: Option<String>,
    /// A file whose first line is the URL (keeps the password out of the
    /// config file).
    pub(crate) redis_url_file: Option<PathBuf>,
}

/// A PostgreSQL source named in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgSource {
    /// The data directory.
    pub(crate) pgdata: Option<PathBuf>,
    /// The connection string.
    pub(crate) pg_url: Option<String>,
    /// Seconds `pg backup` waits for its WAL.
    pub(crate) archive_timeout: Option<u64>,
}

impl FileConfig {
    /// The Redis source `name`, or a usage error listing the ones there are.
    pub(crate) fn redis_source(&self, name: &str) -> Result<&RedisSource> {
        source(&self.redis, name, "Redis", "redis", "redis_url")
    }

    /// The source `name`, or a usage error listing the ones there are.
    pub(crate) fn pg_source(&self, name: &str) -> Result<&PgSource> {
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
        UsageError(format!(
            "no {kind} source {name:?} in the config file (a [{section}.{name}] section with {keys}); {}",
            if known.is_empty() {
                "it names none".to_string()
            } else {
                format!("it names: {}", known.join(", "))
            }
        ))
        .into()
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3Section {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    #[serde(default)]
    pub(crate) virtual_host_style: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageSection {
    /// Calls in flight at most.
    pub(crate) max_concurrency: Option<usize>,
    /// Attempts per storage call, the first included.
    pub(crate) max_attempts: Option<u32>,
    /// Seconds one storage call may take.
    pub(crate) timeout_secs: Option<u64>,
}

/// The config file to read: `--config`/`LIFEBOAT_CONFIG`, else the first that
/// exists of `$XDG_CONFIG_HOME/lifeboat/lifeboat.toml` (or
/// `~/.config/lifeboat/lifeboat.toml`) and `/etc/lifeboat/lifeboat.toml`.
pub(crate) fn default_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        out.push(Path::new(&x).join("lifeboat/lifeboat.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        out.push(Path::new(&home).join(".config/lifeboat/lifeboat.toml"));
    }
    out.push(PathBuf::from("/etc/lifeboat/lifeboat.toml"));
    out
}

pub(crate) fn load(explicit: Option<&Path>) -> Result<FileConfig> {
    let path = match explicit {
        Some(p) => {
            if !p.exists() {
                return Err(UsageError(format!(
                    "config file {} does not exist; check --config / LIFEBOAT_CONFIG",
                    p.display()
                ))
                .into());
            }
            p.to_path_buf()
        }
        None => match default_paths().into_iter().find(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(FileConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| UsageError(format!("config file {} is invalid: {e}", path.display())).into())
}

impl StorageSection {
    pub(crate) fn retry_policy(&self) -> lifeboat_storage::RetryPolicy {
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
