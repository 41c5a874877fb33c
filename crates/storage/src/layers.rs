//! Decorators over [`Storage`]: retry with backoff and timeouts, concurrency limits.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::{
    ByteStream, ColdState, DynStorage, ErrorKind, ObjectInfo, Storage, StorageError, ThawTier,
};

/// When and how often a failed call is tried again.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles each time after.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take before it counts as a transient failure.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // About 30 s of waiting in all: enough to ride out a restarting server or
        // a network blip, short enough that a dead store fails the job visibly.
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Retries calls that fail with a retryable error, with exponential backoff and
/// a timeout per attempt.
#[derive(Debug)]
pub struct RetryStorage {
    inner: DynStorage,
    policy: RetryPolicy,
}

impl RetryStorage {
    /// Wraps `inner`.
    pub fn new(inner: DynStorage, policy: RetryPolicy) -> Self {
        RetryStorage { inner, policy }
    }

    /// One attempt of `call`, bounded by the policy's timeout (a timeout
    /// is transient).
    async fn within<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.policy.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::new(
                ErrorKind::Transient,
                op,
                key,
                &self.inner.location(),
                format!("timed out after {:?}", self.policy.timeout),
            )),
        }
    }

    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut call: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut backoff = self.policy.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.policy.timeout, call()).await {
                Ok(r) => r,
                Err(_) => Err(StorageError::new(
                    ErrorKind::Transient,
                    op,
                    key,
                    &self.inner.location(),
                    format!("timed out after {:?}", self.policy.timeout),
                )),
            };
            match result {
                Err(e) if e.is_retryable() && attempt < self.policy.max_attempts => {
                    tracing::warn!(op, key, attempt, error = %e, "storage call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                    attempt += 1;
                }
                Err(mut e) if e.is_retryable() => {
                    e.message = format!(
                        "{} (gave up after {attempt} attempts; check that the store is reachable)",
                        e.message
                    );
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Storage for RetryStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn may_be_cold(&self) -> bool {
        self.inner.may_be_cold()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.run("put", key, || self.inner.put(key, data.clone()))
            .await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.run("get", key, || self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.run("get", key, || self.inner.get_range(key, range.clone()))
            .await
    }
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        // The first attempt gets the caller's buffer; a failed attempt consumed
        // it, so later ones start with a fresh one.
        let first = std::sync::Mutex::new(Some(buf));
        self.run("get", key, || {
            let b = first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            self.inner.get_range_into(key, range.clone(), b)
        })
        .await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.run("stat", key, || self.inner.stat(key)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.run("delete", key, || self.inner.delete(key)).await
    }
    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.run("list", "", || self.inner.list_leftovers()).await
    }
    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        self.run("delete", key, || self.inner.delete_leftover(key))
            .await
    }
    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.run("put", key, || self.inner.put_cold(key, data.clone()))
            .await
    }
    async fn thaw(&self, key: &str, days: u32, tier: ThawTier) -> Result<ColdState, StorageError> {
        self.run("thaw", key, || self.inner.thaw(key, days, tier))
            .await
    }
    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        self.run("stat", key, || self.inner.cold_state(key)).await
    }
    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        self.run("get", key, || self.inner.get_parts(key)).await
    }
    // Streams are not retried here (a stream cannot be read twice): the
    // caller starts the copy again. They are bounded by the same timeout.
    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StorageError> {
        self.within("get", key, self.inner.get_stream(key)).await
    }
    fn streams_puts(&self) -> bool {
        self.inner.streams_puts()
    }
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        stream: ByteStream,
        cold: bool,
    ) -> Result<(), StorageError> {
        self.within("put", key, self.inner.put_stream(key, len, stream, cold))
            .await
    }
    async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        cold: bool,
    ) -> Result<(), StorageError> {
        self.run("put", key, || {
            self.inner.put_parts(key, parts.clone(), cold)
        })
        .await
    }
}

/// Bounds the number of calls in flight to the wrapped store.
#[derive(Debug)]
pub struct LimitStorage {
    inner: DynStorage,
    permits: Arc<Semaphore>,
}

impl LimitStorage {
    /// Wraps `inner`, allowing at most `limit` calls at once.
    pub fn new(inner: DynStorage, limit: usize) -> Self {
        LimitStorage {
            inner,
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so acquiring only fails if it were.
        self.permits.acquire().await.ok()
    }
}

#[async_trait]
impl Storage for LimitStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn may_be_cold(&self) -> bool {
        self.inner.may_be_cold()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let _p = self.permit().await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let _p = self.permit().await;
        self.inner.get_range(key, range).await
    }
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let _p = self.permit().await;
        self.inner.get_range_into(key, range, buf).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let _p = self.permit().await;
        self.inner.list(prefix).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let _p = self.permit().await;
        self.inner.stat(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.delete(key).await
    }
    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let _p = self.permit().await;
        self.inner.list_leftovers().await
    }
    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.delete_leftover(key).await
    }
    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.put_cold(key, data).await
    }
    async fn thaw(&self, key: &str, days: u32, tier: ThawTier) -> Result<ColdState, StorageError> {
        let _p = self.permit().await;
        self.inner.thaw(key, days, tier).await
    }
    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        let _p = self.permit().await;
        self.inner.cold_state(key).await
    }
    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        let _p = self.permit().await;
        self.inner.get_parts(key).await
    }
    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StorageError> {
        // The permit is held while the stream is read: it goes with it.
        let permit = self.permits.clone().acquire_owned().await.ok();
        Ok(self.inner.get_stream(key).await?.map(|s| {
            use futures_util::StreamExt;
            Box::pin(s.map(move |x| {
                let _held = &permit;
                x
            })) as ByteStream
        }))
    }
    fn streams_puts(&self) -> bool {
        self.inner.streams_puts()
    }
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        stream: ByteStream,
        cold: bool,
    ) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.put_stream(key, len, stream, cold).await
    }
    async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        cold: bool,
    ) -> Result<(), StorageError> {
        let _p = self.permit().await;
        self.inner.put_parts(key, parts, cold).await
    }
}
