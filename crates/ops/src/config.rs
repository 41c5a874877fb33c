//! Settings: the TOML config file, overridden by `LIFEBOAT_*` variables, overridden by flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
