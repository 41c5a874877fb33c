//! Elasticsearch/OpenSearch operations: a source's settings from the config
//! file, the environment and the flags, in one order of precedence.

use std::path::PathBuf;
use std::time::Duration;

use lifeboat_elastic::{Auth, Connection, Mode};

use crate::config::{EsSource, FileConfig};
use crate::secrets::first_line_of;
use crate::{Error, Result};

/// What the command line says about the cluster (each over the config).
#[derive(Clone, Debug, Default)]
pub struct EsFlags {
    /// A source named in the config file.
    pub source: Option<String>,
    /// `--es-url`.
    pub url: Option<String>,
    /// `--es-ca`.
    pub ca_file: Option<PathBuf>,
    /// `--mode`.
    pub mode: Option<String>,
    /// `--repository`.
    pub repository: Option<String>,
    /// `--staging-dir`.
    pub staging_dir: Option<PathBuf>,
    /// `--staging-location`.
    pub staging_location: Option<String>,
    /// `--timeout` in seconds.
    pub timeout: Option<u64>,
}

/// A source's settings, resolved.
#[derive(Clone, Debug)]
pub struct EsSettings {
    /// How to reach the cluster.
    pub connection: Connection,
    /// Ingest or orchestrate.
    pub mode: Mode,
    /// The snapshot repository in the cluster.
    pub repository: String,
    /// The staging directory (ingest).
    pub staging_dir: Option<PathBuf>,
    /// The staging directory as the nodes see it.
    pub staging_location: Option<String>,
    /// Index patterns of the source.
    pub indices: Vec<String>,
    /// Whether the source takes the global state.
    pub include_global_state: bool,
    /// The recovery time objective restores report against.
    pub rto: Duration,
}

/// The source's settings: flags, then `LIFEBOAT_ES_*` variables, then the
/// config file's `[elasticsearch.NAME]`.
pub fn settings(file: &FileConfig, flags: &EsFlags) -> Result<EsSettings> {
    let named: Option<&EsSource> = flags
        .source
        .as_deref()
        .map(|n| file.es_source(n))
        .transpose()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let url = flags
        .url
        .clone()
        .or_else(|| env("LIFEBOAT_ES_URL"))
        .or_else(|| named.and_then(|s| s.url.clone()))
        .ok_or_else(|| {
            Error::usage(match &flags.source {
                Some(n) => format!(
                    "give the cluster with --es-url (or LIFEBOAT_ES_URL); the config file's [elasticsearch.{n}] has no url"
                ),
                None => "give the cluster with --es-url (or LIFEBOAT_ES_URL), or name a source from the config file".into(),
            })
        })?;
    let api_key = match env("LIFEBOAT_ES_API_KEY") {
        Some(k) => Some(k),
        None => match named.and_then(|s| s.api_key_file.as_ref()) {
            Some(p) => Some(first_line_of(p, "API key file")?),
            None => None,
        },
    };
    let password = match env("LIFEBOAT_ES_PASSWORD") {
        Some(p) => Some(p),
        None => match named.and_then(|s| s.password_file.as_ref()) {
            Some(p) => Some(first_line_of(p, "Elasticsearch password file")?),
            None => None,
        },
    };
    let user = env("LIFEBOAT_ES_USER").or_else(|| named.and_then(|s| s.username.clone()));
    let auth = match (api_key, user, password) {
        (Some(k), _, _) => Auth::ApiKey(k),
        (None, Some(user), None) => {
            return Err(Error::usage(format!(
                "user {user:?} is set for the cluster but no password: give it in password_file or LIFEBOAT_ES_PASSWORD"
            )))
        }
        // A password alone is the built-in superuser's, as Elasticsearch
        // sets it up.
        (None, user, Some(password)) => Auth::Basic {
            user: user.unwrap_or_else(|| "elastic".into()),
            password,
        },
        (None, None, None) => Auth::None,
    };
    let mode = match flags
        .mode
        .as_deref()
        .or_else(|| named.and_then(|s| s.mode.as_deref()))
    {
        Some(m) => m.parse::<Mode>().map_err(Error::usage)?,
        None => Mode::Ingest,
    };
    let repository = flags
        .repository
        .clone()
        .or_else(|| named.and_then(|s| s.repository.clone()))
        .unwrap_or_else(|| match &flags.source {
            Some(n) => format!("lifeboat-{}", n.to_ascii_lowercase()),
            None => "lifeboat".into(),
        });
    let rto = match named.and_then(|s| s.rto.as_deref()) {
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            Error::usage(format!(
                "rto = {t:?} in [elasticsearch.{}]: {e} (e.g. \"4h\")",
                flags.source.as_deref().unwrap_or_default()
            ))
        })?,
        None => Duration::from_secs(4 * 3600),
    };
    let mut connection = Connection::new(&url);
    connection.auth = auth;
    connection.ca_file = flags
        .ca_file
        .clone()
        .or_else(|| named.and_then(|s| s.ca_file.clone()));
    if let Some(t) = flags.timeout {
        connection.timeout = Duration::from_secs(t.max(1));
    }
    Ok(EsSettings {
        connection,
        mode,
        repository,
        staging_dir: flags
            .staging_dir
            .clone()
            .or_else(|| named.and_then(|s| s.staging_dir.clone())),
        staging_location: flags
            .staging_location
            .clone()
            .or_else(|| named.and_then(|s| s.staging_location.clone())),
        indices: named.map(|s| s.indices.clone()).unwrap_or_default(),
        include_global_state: named.is_some_and(|s| s.include_global_state),
        rto,
    })
}
