//! The Redis source's error type.

use lifeboat_repo::{Classify, ErrorClass, RepoError};

/// Everything a Redis operation can fail with. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The URL does not parse.
    #[error("invalid Redis URL {url:?}: {reason}; use redis://[user:password@]host:port[/db]")]
    BadUrl {
        /// What was given (without the password).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to Redis at {target}: {reason}. Check --redis-url and that the server is running and reachable from here")]
    Connect {
        /// Host and port tried.
        target: String,
        /// What the OS said.
        reason: String,
    },
    /// The server refused the credentials.
    #[error("Redis at {target} refused the login: {reason}. Check the password (and the ACL user name) in --redis-url")]
    Auth {
        /// Host and port.
        target: String,
        /// What the server said.
        reason: String,
    },
    /// The server would not send its data set.
    #[error("Redis at {target} refused to send its data set (SYNC): {reason}. {hint}")]
    SyncRefused {
        /// Host and port.
        target: String,
        /// What the server said.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// The conversation went wrong (timeout, closed connection, a reply that
    /// makes no sense).
    #[error("Redis at {target}: {what}: {reason}")]
    Protocol {
        /// Host and port.
        target: String,
        /// What lifeboat was doing.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The RDB failed its checks; nothing was recorded.
    #[error("the RDB from {target} is damaged: {reason}; the backup was not recorded. Run it again; if it fails again, check the server's persistence with redis-check-rdb")]
    BadRdb {
        /// Host and port.
        target: String,
        /// Which check failed.
        reason: String,
    },
    /// The operation was refused as unsafe or impossible.
    #[error("{0}")]
    Refused(String),
    /// Running a local redis-server (to verify a restore) failed.
    #[error("{0}")]
    Server(String),
    /// Reading or writing a local file failed.
    #[error("{op} {path}")]
    Io {
        /// The verb.
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RedisError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RedisError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// The failure's class: damage for an RDB that fails its checks or
    /// stored data that does, usage for a URL or request that is wrong,
    /// transient for a server that cannot be reached or a conversation cut
    /// short.
    pub fn class(&self) -> ErrorClass {
        match self {
            RedisError::Repo(e) => e.class(),
            RedisError::BadRdb { .. } => ErrorClass::Damage,
            RedisError::BadUrl { .. } | RedisError::Refused(_) => ErrorClass::Usage,
            RedisError::Connect { .. } | RedisError::Protocol { .. } => ErrorClass::Transient,
            RedisError::Auth { .. }
            | RedisError::SyncRefused { .. }
            | RedisError::Server(_)
            | RedisError::Io { .. } => ErrorClass::Failure,
        }
    }
}

impl Classify for RedisError {
    fn class(&self) -> ErrorClass {
        RedisError::class(self)
    }
}

/// Shorthand.
pub type Result<T, E = RedisError> = std::result::Result<T, E>;
