//! Object storage for lifeboat repositories.
//!
//! Everything a repository stores goes through one async trait, [`Storage`]: whole
//! objects put atomically, read whole or by byte range, listed by prefix, deleted.
//! Object keys are `/`-separated relative paths such as `snapshots/<id>`.
//!
//! Backends:
//! - [`LocalStorage`]: a directory on local disk, lifeboat's embedded default.
//!   Writes are crash-safe: temporary file, fsync, rename, fsync of the directory.
//! - [`S3Storage`]: any S3-compatible store (AWS S3, Garage, MinIO, Ceph RGW)
//!   through Apache OpenDAL, path-style addressing unless asked otherwise.
//!
//! Layers, each itself a [`Storage`] wrapping another:
//! - [`RetryStorage`]: per-call timeout and retry with exponential backoff for
//!   errors that [`StorageError::is_retryable`] says may pass.
//! - [`LimitStorage`]: bounds the number of calls in flight.
//! - [`FaultStorage`]: fails or delays chosen calls, for tests.
//!
//! [`open`] turns a repository URL into a ready, layered storage.
#![deny(missing_docs)]

#[cfg(feature = "testing")]
mod cold;
pub mod direct;
pub mod durable;
mod fault;
mod layers;
mod local;
mod s3;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
pub use lifeboat_types::{Classify, ErrorClass};

#[cfg(feature = "testing")]
pub use cold::ColdSimStorage;
pub use fault::{FaultAction, FaultRule, FaultStorage, Hook, Op};
pub use layers::{LimitStorage, RetryPolicy, RetryStorage};
pub use local::LocalStorage;
pub use s3::{S3Options, S3Storage};

/// What kind of failure a storage call met; decides whether it is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The credentials do not allow the call.
    PermissionDenied,
    /// The failure may pass: a timeout, a refused connection, a 5xx, throttling.
    Transient,
    /// Retrying will not help: bad configuration, a full disk, a malformed answer.
    Permanent,
    /// The object is shorter than the range asked for: it was cut after it
    /// was written.
    Truncated,
    /// The store is named or configured wrongly (an unknown URL scheme, no
    /// credentials, a file where a directory should be): fix the settings.
    Config,
    /// The object is in a cold storage class (S3 Glacier Flexible Retrieval,
    /// Deep Archive) and has not been restored: it cannot be read until it
    /// is thawed ([`Storage::thaw`]).
    Frozen,
}

/// A failed storage call, naming the operation, the object and the store.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key:?} on {location}: {message}")]
pub struct StorageError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The operation (`put`, `get`, `list`, …).
    pub op: &'static str,
    /// The object key or prefix.
    pub key: String,
    /// The store, as [`Storage::location`] names it.
    pub location: String,
    /// What went wrong, from the backend.
    pub message: String,
}

impl StorageError {
    /// A new error.
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        key: &str,
        location: &str,
        message: impl fmt::Display,
    ) -> Self {
        StorageError {
            kind,
            op,
            key: key.to_string(),
            location: location.to_string(),
            message: message.to_string(),
        }
    }

    /// True when the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The failure's class: a wrong setting or credential is usage, a cut
    /// object damage, a timeout transient. A missing object is a failure
    /// here; the caller that expected it knows whether that is damage.
    pub fn class(&self) -> ErrorClass {
        match self.kind {
            ErrorKind::Transient => ErrorClass::Transient,
            // Something to do before it reads: thaw it.
            ErrorKind::PermissionDenied | ErrorKind::Config | ErrorKind::Frozen => {
                ErrorClass::Usage
            }
            ErrorKind::Truncated => ErrorClass::Damage,
            ErrorKind::NotFound | ErrorKind::Permanent => ErrorClass::Failure,
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        StorageError::class(self)
    }
}

/// An object's key and size, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the storage root.
    pub key: String,
    /// The size in bytes.
    pub size: u64,
    /// When the object was stored, where the store says.
    pub modified: Option<std::time::SystemTime>,
}

/// An object store. Implementations are cheap to share (`Arc<dyn Storage>`).
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where the objects live, for messages (`/srv/repo`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Stores `data` under `key`, replacing any object there. When this returns
    /// `Ok`, the object is durable and readers see either nothing or all of it.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;

    /// Reads `range` of an object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError>;

    /// Reads `range` of an object into `buf` (its contents are replaced) and
    /// returns it, so a caller reading many ranges reuses one allocation. The
    /// default reads with [`Storage::get_range`] and copies.
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let bytes = self.get_range(key, range).await?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Ok(buf)
    }

    /// Lists every object whose key starts with `prefix` (recursively), in no
    /// particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// The object's size, or `None` when it does not exist.
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// What writes that never finished left behind (a process killed in a
    /// `put`): invisible to [`Storage::list`] and never read, but taking
    /// space. Local disk has them (`*.tmp-*` files); an S3 put is atomic and
    /// leaves none, so the default is an empty list.
    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(Vec::new())
    }

    /// Reads a whole object as the pieces it arrived in, not copied into
    /// one buffer: what a copy to another store hashes and passes on. The
    /// default reads it whole.
    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        Ok(vec![self.get(key).await?])
    }

    /// Stores an object given in pieces ([`Storage::get_parts`]), in the
    /// cold class when `cold` ([`Storage::put_cold`]). The default joins
    /// them.
    async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        cold: bool,
    ) -> Result<(), StorageError> {
        let data = match parts.len() {
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(parts.concat()),
        };
        if cold {
            self.put_cold(key, data).await
        } else {
            self.put(key, data).await
        }
    }

    /// Reads a whole object as a stream; `None` when this store does not
    /// stream (read it with [`Storage::get_parts`]). Not retried: the
    /// caller starts again.
    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// True when [`Storage::put_stream`] stores.
    fn streams_puts(&self) -> bool {
        false
    }

    /// Stores the `len` bytes `stream` gives as `key` (in the cold class
    /// when `cold`): the object is stored only when the stream ends after
    /// exactly `len` bytes with no error — a stream that fails (a check
    /// that did not pass on its last piece) leaves nothing. Not retried.
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        stream: ByteStream,
        cold: bool,
    ) -> Result<(), StorageError> {
        let _ = (len, stream, cold);
        Err(StorageError::new(
            ErrorKind::Permanent,
            "put",
            key,
            &self.location(),
            "this store does not take streams",
        ))
    }

    /// True when objects of this store may be in a cold class (an S3
    /// bucket: a lifecycle rule may have moved them), so a reader checks
    /// before it starts writing what it reads somewhere.
    fn may_be_cold(&self) -> bool {
        false
    }

    /// Stores `data` as [`Storage::put`] does, in the store's cold storage
    /// class when it has one ([`S3Options::storage_class`]): an archive
    /// replica's data. Stores without classes put it as any other object.
    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put(key, data).await
    }

    /// Asks the store to make the cold object `key` readable for `days`
    /// (S3 RestoreObject) at `tier`; returns its state after the request.
    /// Stores without cold classes have nothing to do.
    async fn thaw(&self, key: &str, days: u32, tier: ThawTier) -> Result<ColdState, StorageError> {
        let _ = (key, days, tier);
        Ok(ColdState::Hot)
    }

    /// Whether the object `key` can be read now (a HEAD on S3).
    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        let _ = key;
        Ok(ColdState::Hot)
    }

    /// Removes one leftover [`Storage::list_leftovers`] found; refuses keys
    /// that are not leftovers.
    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Permanent,
            "delete",
            key,
            &self.location(),
            "this store has no leftovers",
        ))
    }
}

/// A shared storage handle.
pub type DynStorage = Arc<dyn Storage>;

/// An object's bytes as they arrive.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// What a read of an object in cold storage says.
pub(crate) const FROZEN_MESSAGE: &str = "the object is in cold storage (Glacier or Deep Archive) and not restored: run `lifeboat thaw SNAPSHOT` for the snapshot you read, and read again once `lifeboat thaw SNAPSHOT --status` says every object is ready";

/// Whether an object can be read now, as far as cold storage goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColdState {
    /// Not in a cold class (or a class that reads at once: STANDARD_IA,
    /// GLACIER_IR): readable.
    Hot,
    /// In a cold class, not restored: not readable.
    Frozen {
        /// The storage class.
        class: String,
    },
    /// A restore was asked for and is under way.
    Thawing {
        /// The storage class.
        class: String,
    },
    /// Restored: readable until `expiry` (the store's words, when it says).
    Thawed {
        /// The storage class.
        class: String,
        /// When the restored copy goes away.
        expiry: Option<String>,
    },
}

impl ColdState {
    /// True when a read succeeds now.
    pub fn is_readable(&self) -> bool {
        matches!(self, ColdState::Hot | ColdState::Thawed { .. })
    }

    /// `hot`, `frozen`, `thawing`, `thawed`.
    pub fn name(&self) -> &'static str {
        match self {
            ColdState::Hot => "hot",
            ColdState::Frozen { .. } => "frozen",
            ColdState::Thawing { .. } => "thawing",
            ColdState::Thawed { .. } => "thawed",
        }
    }
}

/// How fast (and at what price) a cold object is restored: S3's retrieval
/// tiers (Glacier Flexible Retrieval: minutes with expedited, 3–5 hours
/// standard, 5–12 hours bulk; Deep Archive: 12 hours standard, 48 hours
/// bulk, no expedited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawTier {
    /// Cheapest, slowest.
    Bulk,
    /// The default.
    Standard,
    /// Fastest, dearest (not for Deep Archive).
    Expedited,
}

impl ThawTier {
    /// The tier as S3 spells it.
    pub fn as_s3(self) -> &'static str {
        match self {
            ThawTier::Bulk => "Bulk",
            ThawTier::Standard => "Standard",
            ThawTier::Expedited => "Expedited",
        }
    }
}

impl std::str::FromStr for ThawTier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "bulk" => Ok(ThawTier::Bulk),
            "standard" => Ok(ThawTier::Standard),
            "expedited" => Ok(ThawTier::Expedited),
            _ => Err(format!(
                "{s:?} is not a retrieval tier: use bulk, standard or expedited"
            )),
        }
    }
}

/// The storage classes a replica may write its data in, as S3 names them.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// True for the classes whose objects must be restored before a read.
pub fn class_needs_thaw(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

/// How to reach and treat a store; the defaults suit a local repository.
#[derive(Clone, Debug, Default)]
pub struct StorageOptions {
    /// S3 settings, used when the URL is `s3://…`.
    pub s3: S3Options,
    /// Retry and timeout policy for every call.
    pub retry: RetryPolicy,
    /// Calls in flight at most (0: a default of 8 for S3, 32 for local disk).
    pub max_concurrency: usize,
}

/// Opens the store a repository URL names: a path, `file://PATH` or
/// `s3://BUCKET[/PREFIX]`. The result has the retry and concurrency layers.
pub fn open(url: &str, options: &StorageOptions) -> Result<DynStorage, StorageError> {
    let inner: DynStorage = if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::new(
                ErrorKind::Config,
                "open",
                "",
                url,
                "an S3 repository URL needs a bucket: s3://BUCKET[/PREFIX]",
            ));
        }
        Arc::new(S3Storage::new(bucket, prefix, &options.s3)?)
    } else if url.contains("://") && !url.starts_with("file://") {
        return Err(StorageError::new(
            ErrorKind::Config,
            "open",
            "",
            url,
            "unknown repository URL scheme: use a path, file://PATH or s3://BUCKET/PREFIX",
        ));
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
            return Err(StorageError::new(
                ErrorKind::Config,
                "open",
                "",
                path,
                "this is a file, not a repository directory: give the directory a repository is in (or a new path for `lifeboat repo init`)",
            ));
        }
        Arc::new(LocalStorage::new(path))
    };
    #[cfg(feature = "testing")]
    let inner: DynStorage = match std::env::var_os("LIFEBOAT_COLD_SIMULATION") {
        Some(journal) if !journal.is_empty() => {
            let secs = std::env::var("LIFEBOAT_COLD_SIMULATION_THAW")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2);
            Arc::new(ColdSimStorage::new(
                inner,
                options.s3.storage_class.clone(),
                journal.into(),
                std::time::Duration::from_secs(secs),
            ))
        }
        _ => inner,
    };
    let default_limit = if url.starts_with("s3://") { 8 } else { 32 };
    let limit = if options.max_concurrency == 0 {
        default_limit
    } else {
        options.max_concurrency
    };
    let retried: DynStorage = Arc::new(RetryStorage::new(inner, options.retry.clone()));
    Ok(Arc::new(LimitStorage::new(retried, limit)))
}
