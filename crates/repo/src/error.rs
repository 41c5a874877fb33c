//! The repository's error type.

use lifeboat_crypto::CryptoError;
use lifeboat_storage::StorageError;
use lifeboat_types::{Classify, ErrorClass};

/// Everything a repository operation can fail with. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A storage call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// There is no repository at the location.
    #[error("no lifeboat repository at {location}: create one with `lifeboat repo init`, or check --repo / LIFEBOAT_REPO")]
    NoRepository {
        /// The store's location.
        location: String,
    },
    /// `init` found a repository already there.
    #[error("a lifeboat repository already exists at {location}; refusing to overwrite it")]
    AlreadyExists {
        /// The store's location.
        location: String,
    },
    /// No secret was given, or none opened any key slot.
    #[error("wrong password or key: none of the {slots} key slot(s) of {location} opens with the {given} given; check LIFEBOAT_PASSWORD, --password-file, --password-command, --key-file or LIFEBOAT_KEY{}", if *unchecked > 0 { format!(". ({unchecked} of the slots were written before key slots carried a checksum, so damage to them cannot be told from a wrong secret: if the secret is right, open with another key and add a new slot with `lifeboat repo key add`)") } else { String::new() })]
    WrongSecret {
        /// The store's location.
        location: String,
        /// How many slots the repository has.
        slots: usize,
        /// What was tried, e.g. "passphrase".
        given: String,
        /// Slots without a checksum, whose damage looks like a wrong secret.
        unchecked: usize,
    },
    /// No intact key slot opens, and some are damaged.
    #[error("no intact key slot of {location} opens with the {given} given ({intact} intact), and key slot(s) are damaged: {damaged}. If the secret is right, its slot is among the damaged ones: restore that object from a copy of the repository, or open with another key and add a slot with `lifeboat repo key add`")]
    DamagedKeySlots {
        /// The store's location.
        location: String,
        /// Slots that read and did not open.
        intact: usize,
        /// What was tried.
        given: String,
        /// The damaged slots and what is wrong with each.
        damaged: String,
    },
    /// No secret was given at all.
    #[error("the repository at {location} is encrypted and no password or key was given: set LIFEBOAT_PASSWORD, or use --password-file, --password-command, --key-file or LIFEBOAT_KEY")]
    NoSecret {
        /// The store's location.
        location: String,
    },
    /// A stored object has a format version this build does not read.
    #[error("{key} is a {what} of format version {found}, but this build of lifeboat reads version {supported}: use a newer lifeboat")]
    UnknownVersion {
        /// The object key.
        key: String,
        /// What kind of object.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A stored object is damaged or not what its name says.
    #[error("{key} is damaged: {reason}")]
    Corrupt {
        /// The object key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No snapshot matches.
    #[error("no snapshot matches {spec:?}; list them with `lifeboat snapshots`")]
    SnapshotNotFound {
        /// What was asked for.
        spec: String,
    },
    /// More than one snapshot id starts with the prefix.
    #[error("{spec:?} matches {count} snapshots; give more characters of the id")]
    AmbiguousSnapshot {
        /// What was asked for.
        spec: String,
        /// How many matched.
        count: usize,
    },
    /// A named object exists with different content.
    #[error("{name} is already in the repository with different content; refusing to overwrite it. Two clusters may be archiving into one repository: give each its own repository or source name")]
    Conflict {
        /// The object's name.
        name: String,
    },
    /// Refused: removing the last key slot would lock everyone out.
    #[error("refusing to remove the last key slot: the repository would become unreadable; add another key first")]
    LastKeySlot,
    /// No key slot matches.
    #[error("no key slot matches {0:?}; list them with `lifeboat repo key list`")]
    KeySlotNotFound(String),
    /// Reading a source or writing a restore target failed.
    #[error("{op} {path}")]
    Io {
        /// The verb: "read", "create", …
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Some files could not be backed up and `allow_partial` was off.
    #[error("{count} item(s) could not be backed up (first: {first}); no snapshot was written. Fix the cause, or pass --allow-partial to write a snapshot marked partial")]
    Incomplete {
        /// How many items were skipped.
        count: usize,
        /// The first of them, with its reason.
        first: String,
    },
    /// A source (a database) failed while its backup was being finished; the
    /// source's own error, for it to take back.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// A restore stopped, or could not make some items: every file it left
    /// under its final name is complete, and `missing` names the rest.
    #[error("{}{}", lifeboat_types::error::report(cause.as_ref()), missing_text(missing))]
    RestoreIncomplete {
        /// Why.
        cause: Box<RepoError>,
        /// The items not restored, as listings show them.
        missing: Vec<String>,
    },
    /// A restore refused to proceed.
    #[error("{0}")]
    Refused(String),
    /// Another operation that must run alone is under way (a prune).
    #[error("{0}")]
    Busy(String),
    /// Invalid settings.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Something failed inside lifeboat (a worker thread that panicked, a
    /// document that would not encode): neither the request's fault nor the
    /// data's.
    #[error("{0}")]
    Failed(String),
    /// A cryptographic operation failed outside of reading a stored object.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl RepoError {
    /// True when writing a restore's output failed because its reader went
    /// away (a program fed from the repository stopped reading): the cause
    /// is then the reader's, not the repository's.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// True when trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The failure's class: usage for what the caller asked or configured
    /// wrongly (a missing repository, a wrong secret, a snapshot that does
    /// not exist, a refused request, a newer format), damage for stored data
    /// that fails its checks, and the storage error's own class for a storage
    /// call that failed.
    pub fn class(&self) -> ErrorClass {
        match self {
            RepoError::Storage(e) => e.class(),
            RepoError::Crypto(e) => e.class(),
            RepoError::NoRepository { .. }
            | RepoError::AlreadyExists { .. }
            | RepoError::WrongSecret { .. }
            | RepoError::NoSecret { .. }
            | RepoError::SnapshotNotFound { .. }
            | RepoError::AmbiguousSnapshot { .. }
            | RepoError::KeySlotNotFound(_)
            | RepoError::LastKeySlot
            | RepoError::Refused(_)
            | RepoError::UnknownVersion { .. }
            | RepoError::Invalid(_) => ErrorClass::Usage,
            RepoError::Corrupt { .. } | RepoError::DamagedKeySlots { .. } => ErrorClass::Damage,
            RepoError::RestoreIncomplete { cause, .. } => cause.class(),
            // A source's own error is taken back by the source (see
            // `lifeboat_postgres`) before anyone asks its class.
            RepoError::Conflict { .. }
            | RepoError::Io { .. }
            | RepoError::Failed(_)
            | RepoError::Incomplete { .. }
            | RepoError::Source(_) => ErrorClass::Failure,
            RepoError::Busy(_) => ErrorClass::Transient,
        }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RepoError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

impl Classify for RepoError {
    fn class(&self) -> ErrorClass {
        RepoError::class(self)
    }
}

/// "; 3 item(s) were not restored: a, b, c; every file the target holds is complete".
fn missing_text(missing: &[String]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    const SHOWN: usize = 10;
    let mut list = missing
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        list.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    format!(
        "; {} item(s) were not restored: {list}. Every file the target holds under its own name is complete",
        missing.len()
    )
}

/// Shorthand.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;
