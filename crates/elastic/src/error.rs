//! The Elasticsearch/OpenSearch source's error type.

use lifeboat_repo::{Classify, ErrorClass, RepoError};

/// Everything an Elasticsearch or OpenSearch operation can fail with. Each
/// message names the cause and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ElasticError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The URL does not parse.
    #[error("invalid Elasticsearch/OpenSearch URL {url:?}: {reason}; use http(s)://host:port")]
    BadUrl {
        /// What was given (without credentials).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// No node answered.
    #[error("cannot reach the cluster at {target}: {reason}. Check --es-url (or the source's url) and that a node is running and reachable from here")]
    Unreachable {
        /// The URL tried, without credentials.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The cluster refused the credentials.
    #[error("the cluster at {target} refused the credentials of {who} (HTTP 401): check the user and password (username, password_file; LIFEBOAT_ES_USER, LIFEBOAT_ES_PASSWORD) or the API key (api_key_file, LIFEBOAT_ES_API_KEY)")]
    Auth {
        /// The URL, without credentials.
        target: String,
        /// Who was tried: `user "elastic"`, `an API key`, `no credentials`.
        who: String,
    },
    /// The user lacks a privilege.
    #[error("the cluster at {target} refused to {what} (HTTP 403: {reason}): the user needs the cluster privileges manage_snapshot and monitor, and on the indices monitor, read and maintenance (for the refresh before counting; restores also need manage)")]
    Forbidden {
        /// The URL, without credentials.
        target: String,
        /// What lifeboat asked.
        what: String,
        /// What the cluster said.
        reason: String,
    },
    /// A call failed with the cluster's own explanation.
    #[error("the cluster at {target} could not {what}: {reason}")]
    Api {
        /// The URL, without credentials.
        target: String,
        /// What lifeboat asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The cluster's error type and reason.
        reason: String,
    },
    /// The cluster is not in a state to do what was asked (red, a snapshot
    /// running, a closed index, a repository that fails its check); the
    /// message says which and what to do.
    #[error("{0}")]
    NotReady(String),
    /// The request is wrong (an index that does not exist, a setting that
    /// means nothing); the message says what to give.
    #[error("{0}")]
    Refused(String),
    /// The snapshot did not succeed; nothing was recorded.
    #[error("snapshot {snapshot} did not succeed: {reason}; nothing was recorded")]
    SnapshotFailed {
        /// The snapshot's name.
        snapshot: String,
        /// Its state and failures.
        reason: String,
    },
    /// A restored index does not hold what was recorded at backup time.
    #[error("restored index {index} holds {restored} documents, but {recorded} were recorded at backup time: the restore is not what was backed up. Run `lifeboat verify --read-data` and check the cluster's log")]
    CountMismatch {
        /// The restored index.
        index: String,
        /// What the snapshot recorded.
        recorded: String,
        /// What the cluster counts now.
        restored: u64,
    },
    /// Reading or writing a local file failed.
    #[error("cannot {op} {path}")]
    Io {
        /// The verb.
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ElasticError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ElasticError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// The failure's class: damage for a restore whose counts differ from
    /// the recorded ones (or stored data that fails its checks), usage for
    /// a URL, a request or a setting that is wrong, transient for a node
    /// that cannot be reached or a cluster not ready yet.
    pub fn class(&self) -> ErrorClass {
        match self {
            ElasticError::Repo(e) => e.class(),
            ElasticError::CountMismatch { .. } => ErrorClass::Damage,
            ElasticError::BadUrl { .. }
            | ElasticError::Refused(_)
            | ElasticError::Auth { .. }
            | ElasticError::Forbidden { .. } => ErrorClass::Usage,
            ElasticError::Unreachable { .. } => ErrorClass::Transient,
            ElasticError::Api { status, .. } if *status > 500 => ErrorClass::Transient,
            ElasticError::Api { .. }
            | ElasticError::NotReady(_)
            | ElasticError::SnapshotFailed { .. }
            | ElasticError::Io { .. } => ErrorClass::Failure,
        }
    }
}

impl ElasticError {
    /// A repository's error, or the error of this crate's own step that it
    /// carried back ([`RepoError::Source`]).
    pub fn from_repo(e: RepoError) -> ElasticError {
        match e {
            RepoError::Source(b) => match b.downcast::<ElasticError>() {
                Ok(e) => *e,
                Err(b) => ElasticError::Repo(RepoError::Source(b)),
            },
            e => ElasticError::Repo(e),
        }
    }
}

impl Classify for ElasticError {
    fn class(&self) -> ErrorClass {
        ElasticError::class(self)
    }
}

/// Shorthand.
pub type Result<T, E = ElasticError> = std::result::Result<T, E>;
