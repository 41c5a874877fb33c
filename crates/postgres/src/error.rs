//! The PostgreSQL source's error type.

use lifeboat_repo::{Classify, ErrorClass, RepoError};

/// Everything a PostgreSQL operation can fail with. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The connection string does not parse.
    #[error("invalid PostgreSQL connection string {conninfo:?}: {reason}; use key=value pairs (host=/var/run/postgresql port=5432 user=postgres dbname=postgres) or a postgresql:// URL")]
    BadConninfo {
        /// What was given (without the password).
        conninfo: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL ({target}): {reason}. Check --pg-url (or the source's pg_url), that the server is running, and pg_hba.conf")]
    Connect {
        /// Host and port tried.
        target: String,
        /// What the client or server said.
        reason: String,
    },
    /// A statement failed.
    #[error("PostgreSQL refused to {what}: {reason}")]
    Query {
        /// What lifeboat was doing, as a verb phrase.
        what: String,
        /// What the server said.
        reason: String,
    },
    /// The backup session ended before the backup did.
    #[error("the session that started the backup was lost ({reason}); PostgreSQL aborts a backup whose session ends, so this backup cannot be completed on a new session: run it again")]
    SessionLost {
        /// What was observed.
        reason: String,
    },
    /// The server is not set up for what was asked.
    #[error("{0}")]
    Misconfigured(String),
    /// WAL the backup needs did not reach the repository in time.
    #[error("WAL segment {segment} did not reach the repository within {seconds} s after the backup stopped, so the backup cannot be restored consistently and was not recorded. Check that archive_command runs `lifeboat pg wal-push %p` against this repository (see `lifeboat pg check`) and the server log for archiver errors")]
    ArchiveTimeout {
        /// The first missing segment.
        segment: String,
        /// How long lifeboat waited.
        seconds: u64,
    },
    /// Data pages failed their checksums.
    #[error("{count} data page(s) failed checksum verification (first: {first}); the backup was not recorded. Check the storage of the cluster (and `pg_amcheck`), or pass --allow-checksum-errors to back up the damaged pages as they are")]
    Checksums {
        /// How many pages failed.
        count: usize,
        /// The first failure, with file and block.
        first: String,
    },
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
    /// Running a local PostgreSQL server (initdb, pg_ctl, psql) failed.
    #[error("{0}")]
    Server(String),
    /// A PostgreSQL client program (pg_dump, pg_restore, psql) failed; its
    /// own words follow.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(":\n{stderr}") })]
    Tool {
        /// The command line (no password: that is passed in the environment).
        command: String,
        /// How it ended.
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// The operation was refused as unsafe or impossible.
    #[error("{0}")]
    Refused(String),
    /// The repository holds no PostgreSQL base backup.
    #[error("the repository holds no PostgreSQL backup; take one with `lifeboat pg backup`")]
    NoBackup,
    /// A server may be running on the data directory to restore into.
    #[error("{} holds postmaster.pid: a server may be running on it. Stop it first (pg_ctl stop -D {}); remove postmaster.pid only if no server runs there", pgdata.display(), pgdata.display())]
    ServerRunning {
        /// The data directory.
        pgdata: std::path::PathBuf,
    },
    /// The data directory to restore into is not empty (and `--delta` was
    /// not given).
    #[error("{} is not empty; restore into an empty or new directory, or pass --delta to replace what differs", pgdata.display())]
    TargetNotEmpty {
        /// The data directory.
        pgdata: std::path::PathBuf,
    },
    /// More than one timeline could be followed to the target.
    #[error("the archive holds more than one history after backup {backup} that parts before the target, so which to recover along is not clear (PostgreSQL would follow the newest, timeline {newest}, and could stop at the target on it without the rows written on the other):\n{listing}\nSay which with {flags}; `lifeboat pg info` shows every timeline")]
    AmbiguousTimelines {
        /// The backup (short id).
        backup: String,
        /// The timeline PostgreSQL would follow.
        newest: u32,
        /// Each timeline, described.
        listing: String,
        /// The `--target-timeline` choices.
        flags: String,
    },
    /// The server is not archiving WAL, which a backup needs.
    #[error("the server has archive_mode = {archive_mode} and wal_level = {wal_level}: a backup needs its WAL archived. Set archive_mode = on, wal_level = replica and archive_command = 'lifeboat pg wal-push %p' (with this repository), then restart PostgreSQL")]
    NotArchiving {
        /// `archive_mode`.
        archive_mode: String,
        /// `wal_level`.
        wal_level: String,
    },
    /// Something failed that is neither the request's fault nor the data's
    /// (a worker thread that panicked).
    #[error("{0}")]
    Failed(String),
    /// A restore into a data directory failed part way: PostgreSQL will not
    /// start on what it left (`global/pg_control` is written last).
    #[error("{}\nThe data directory {pgdata} is incomplete, and PostgreSQL will not start on it: global/pg_control is written last, once everything else is. Run the same `lifeboat pg restore` with --delta to finish it", lifeboat_repo::report(cause.as_ref()))]
    RestoreIncomplete {
        /// The data directory.
        pgdata: String,
        /// Why it failed.
        cause: Box<PgError>,
    },
}

impl PgError {
    /// See [`RepoError::is_broken_pipe`].
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, PgError::Repo(e) if e.is_broken_pipe())
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        PgError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// The failure's class: damage for stored data or cluster pages that
    /// fail their checks, usage for a connection string, server setting or
    /// request that is wrong, transient for a server that cannot be reached
    /// or a session lost on the way.
    pub fn class(&self) -> ErrorClass {
        match self {
            PgError::Repo(e) => e.class(),
            PgError::RestoreIncomplete { cause, .. } => cause.class(),
            PgError::Checksums { .. } => ErrorClass::Damage,
            PgError::BadConninfo { .. }
            | PgError::Misconfigured(_)
            | PgError::Refused(_)
            | PgError::NoBackup
            | PgError::ServerRunning { .. }
            | PgError::TargetNotEmpty { .. }
            | PgError::AmbiguousTimelines { .. }
            | PgError::NotArchiving { .. } => ErrorClass::Usage,
            PgError::Connect { .. } | PgError::SessionLost { .. } => ErrorClass::Transient,
            PgError::Query { .. }
            | PgError::ArchiveTimeout { .. }
            | PgError::Io { .. }
            | PgError::Server(_)
            | PgError::Tool { .. }
            | PgError::Failed(_) => ErrorClass::Failure,
        }
    }
}

impl Classify for PgError {
    fn class(&self) -> ErrorClass {
        PgError::class(self)
    }
}

/// Shorthand.
pub type Result<T, E = PgError> = std::result::Result<T, E>;
