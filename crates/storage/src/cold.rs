//! A stand-in for cold storage classes, in the fault-injection style (test
//! builds only: the `testing` feature). Garage and local disk have no
//! storage classes, so the archive tier is tested through this layer: what
//! is stored with [`Storage::put_cold`] in a class that needs a restore
//! (GLACIER, DEEP_ARCHIVE) cannot be read — a read fails with
//! [`ErrorKind::Frozen`], as S3 answers 403 InvalidObjectState — until
//! [`Storage::thaw`] is asked for it and `thaw_after` has passed.
//!
//! What it knows is kept in a journal file (one line per event: an object
//! put cold, put hot or deleted, a thaw asked for), so that every process
//! of a test — the `replicate` that stored the objects, the `thaw`, the
//! restore — sees the same store. [`open`](crate::open) puts it over a
//! store when `LIFEBOAT_COLD_SIMULATION` names the journal
//! (`LIFEBOAT_COLD_SIMULATION_THAW`: the seconds a thaw takes, 2 by
//! default).

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    class_needs_thaw, ColdState, DynStorage, ErrorKind, ObjectInfo, Storage, StorageError, ThawTier,
};

/// A store whose cold objects read only once thawed.
#[derive(Debug)]
pub struct ColdSimStorage {
    inner: DynStorage,
    /// The class of cold puts.
    class: Option<String>,
    journal: PathBuf,
    thaw_after: Duration,
    lock: Mutex<()>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl ColdSimStorage {
    /// `inner` with cold puts in `class`, its journal at `journal`, thaws
    /// done after `thaw_after`.
    pub fn new(
        inner: DynStorage,
        class: Option<String>,
        journal: PathBuf,
        thaw_after: Duration,
    ) -> ColdSimStorage {
        ColdSimStorage {
            inner,
            class,
            journal,
            thaw_after,
            lock: Mutex::new(()),
        }
    }

    fn id(&self, key: &str) -> String {
        format!("{}/{key}", self.inner.location())
    }

    fn record(&self, event: &str, key: &str, value: &str) -> Result<(), StorageError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .and_then(|f| {
                rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
                Ok(f)
            })
            .map_err(|e| {
                StorageError::new(ErrorKind::Permanent, "put", key, &self.location(), e)
            })?;
        writeln!(f, "{event}\t{}\t{value}", self.id(key))
            .map_err(|e| StorageError::new(ErrorKind::Permanent, "put", key, &self.location(), e))
    }

    /// The object's state from the journal.
    fn state(&self, key: &str) -> ColdState {
        let id = self.id(key);
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        let mut class: Option<String> = None;
        let mut thawed_at: Option<u128> = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(event), Some(k), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if k != id {
                continue;
            }
            match event {
                "cold" => {
                    class = Some(value.to_string());
                    thawed_at = None;
                }
                "hot" => {
                    class = None;
                    thawed_at = None;
                }
                "thaw" if class.is_some() && thawed_at.is_none() => thawed_at = value.parse().ok(),
                _ => {}
            }
        }
        match (class, thawed_at) {
            (None, _) => ColdState::Hot,
            (Some(class), None) => ColdState::Frozen { class },
            (Some(class), Some(t)) if now_ms() >= t + self.thaw_after.as_millis() => {
                ColdState::Thawed {
                    class,
                    expiry: None,
                }
            }
            (Some(class), Some(_)) => ColdState::Thawing { class },
        }
    }

    fn readable(&self, key: &str) -> Result<(), StorageError> {
        if self.state(key).is_readable() {
            return Ok(());
        }
        Err(StorageError::new(
            ErrorKind::Frozen,
            "get",
            key,
            &self.location(),
            crate::FROZEN_MESSAGE,
        ))
    }
}

#[async_trait]
impl Storage for ColdSimStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn may_be_cold(&self) -> bool {
        true
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, data).await?;
        if !self.state(key).eq(&ColdState::Hot) {
            self.record("hot", key, "-")?;
        }
        Ok(())
    }
    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, data).await?;
        match self.class.as_deref() {
            Some(c) if class_needs_thaw(c) => self.record("cold", key, c),
            _ => Ok(()),
        }
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.readable(key)?;
        self.inner.get(key).await
    }
    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        self.readable(key)?;
        self.inner.get_parts(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.readable(key)?;
        self.inner.get_range(key, range).await
    }
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        self.readable(key)?;
        self.inner.get_range_into(key, range, buf).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.inner.stat(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await?;
        if self.state(key) != ColdState::Hot {
            self.record("hot", key, "-")?;
        }
        Ok(())
    }
    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list_leftovers().await
    }
    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete_leftover(key).await
    }
    async fn thaw(
        &self,
        key: &str,
        _days: u32,
        _tier: ThawTier,
    ) -> Result<ColdState, StorageError> {
        if self.inner.stat(key).await?.is_none() {
            return Err(StorageError::new(
                ErrorKind::NotFound,
                "thaw",
                key,
                &self.location(),
                "no such object",
            ));
        }
        if let ColdState::Frozen { .. } = self.state(key) {
            self.record("thaw", key, &now_ms().to_string())?;
        }
        Ok(self.state(key))
    }
    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        if self.inner.stat(key).await?.is_none() {
            return Err(StorageError::new(
                ErrorKind::NotFound,
                "stat",
                key,
                &self.location(),
                "no such object",
            ));
        }
        Ok(self.state(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStorage;
    use std::sync::Arc;

    #[test]
    fn a_cold_object_reads_only_once_thawed() {
        let dir = tempfile::tempdir().unwrap();
        let inner: DynStorage = Arc::new(LocalStorage::new(dir.path().join("store")));
        let journal = dir.path().join("journal");
        let s = ColdSimStorage::new(
            inner,
            Some("DEEP_ARCHIVE".into()),
            journal.clone(),
            Duration::from_secs(3600),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            s.put("hot", Bytes::from_static(b"h")).await.unwrap();
            s.put_cold("cold", Bytes::from_static(b"c")).await.unwrap();
            assert_eq!(&s.get("hot").await.unwrap()[..], b"h");
            let e = s.get("cold").await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Frozen);
            assert!(e.to_string().contains("lifeboat thaw"), "{e}");
            assert_eq!(s.cold_state("cold").await.unwrap().name(), "frozen");
            assert_eq!(
                s.thaw("cold", 1, ThawTier::Bulk).await.unwrap().name(),
                "thawing"
            );
            assert!(s.get_range("cold", 0..1).await.is_err(), "not yet");
            // Another process sees the same journal; there a thaw takes
            // no time, so it is done.
            let other = ColdSimStorage::new(
                Arc::new(LocalStorage::new(dir.path().join("store"))),
                None,
                journal,
                Duration::ZERO,
            );
            assert_eq!(other.cold_state("cold").await.unwrap().name(), "thawed");
            assert_eq!(&other.get("cold").await.unwrap()[..], b"c");
            // Stored again hot (a repair), or deleted: no longer cold.
            s.put("cold", Bytes::from_static(b"c")).await.unwrap();
            assert_eq!(s.cold_state("cold").await.unwrap(), ColdState::Hot);
            assert!(s
                .thaw("gone", 1, ThawTier::Bulk)
                .await
                .unwrap_err()
                .is_not_found());
        });
    }
}
