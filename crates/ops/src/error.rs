//! The operations layer's error: every library error, and the few failures
//! of its own (a wrong setting, a check that found damage), each answering
//! [`Classify::class`]. The CLI maps the class to an exit code in one place;
//! the agent decides on it whether to retry.

use lifeboat_elastic::ElasticError;
use lifeboat_postgres::PgError;
use lifeboat_redis::RedisError;
use lifeboat_repo::{Classify, ErrorClass, RepoError};
use lifeboat_storage::StorageError;

/// Everything an operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A repository operation failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A PostgreSQL operation failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A Redis operation failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// An Elasticsearch/OpenSearch operation failed.
    #[error(transparent)]
    Elastic(#[from] ElasticError),
    /// A setting, argument or file given is wrong; the message says which
    /// and what to do.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// The cause, when there is one (the file that cannot be read).
        #[source]
        source: Option<std::io::Error>,
    },
    /// A check found damage; its report (returned or already shown) says
    /// what.
    #[error("{0}")]
    DamageFound(String),
    /// A check found problems that are not damage (`pg check`).
    #[error("{0}")]
    CheckFailed(String),
    /// Local I/O of the operation itself failed.
    #[error("{what}")]
    Io {
        /// What was being done: "create a temporary directory".
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else; the message says what failed.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// A usage error with no underlying cause.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            source: None,
        }
    }

    /// A usage error caused by `source` (a file that cannot be read).
    pub fn usage_because(message: impl Into<String>, source: std::io::Error) -> Self {
        Error::Usage {
            message: message.into(),
            source: Some(source),
        }
    }

    /// Local I/O failed while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The failure's class; see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Storage(e) => e.class(),
            Error::Repo(e) => e.class(),
            Error::Pg(e) => e.class(),
            Error::Redis(e) => e.class(),
            Error::Elastic(e) => e.class(),
            Error::Usage { .. } => ErrorClass::Usage,
            Error::DamageFound(_) => ErrorClass::Damage,
            Error::CheckFailed(_) | Error::Io { .. } | Error::Failed(_) => ErrorClass::Failure,
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        Error::class(self)
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_their_class_and_causes_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = Error::usage_because("cannot read key file /k", io);
        assert_eq!(e.class(), ErrorClass::Usage);
        assert_eq!(
            lifeboat_repo::report(&e),
            "cannot read key file /k: No such file"
        );
        let corrupt = Error::from(PgError::Repo(RepoError::Corrupt {
            key: "packs/ab".into(),
            reason: "bad tag".into(),
        }));
        assert_eq!(corrupt.class(), ErrorClass::Damage);
        let gone = RepoError::Io {
            op: "read",
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied"),
        };
        let text = lifeboat_repo::report(&Error::from(gone));
        assert_eq!(text, "read /x: Permission denied", "said once: {text}");
        let slow = Error::from(RepoError::Storage(StorageError::new(
            lifeboat_storage::ErrorKind::Transient,
            "get",
            "config",
            "s3://b",
            "timed out",
        )));
        assert_eq!(slow.class(), ErrorClass::Transient);
    }
}
