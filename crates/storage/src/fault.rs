//! Fault injection for tests: a storage that fails or delays chosen calls.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    ByteStream, ColdState, DynStorage, ErrorKind, ObjectInfo, Storage, StorageError, ThawTier,
};

/// A storage operation, for choosing which calls a [`FaultRule`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`Storage::put`].
    Put,
    /// [`Storage::get`] and [`Storage::get_range`].
    Get,
    /// [`Storage::list`].
    List,
    /// [`Storage::stat`].
    Stat,
    /// [`Storage::delete`].
    Delete,
}

/// What a matching call suffers.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// The call fails with this kind of error without reaching the inner store.
    Fail(ErrorKind),
    /// The call waits this long, then proceeds.
    Delay(Duration),
    /// The call runs this first (blocking), then proceeds: something that
    /// happens beside the caller at that very moment (another process's
    /// prune).
    Run(Hook),
}

/// A function a [`FaultAction::Run`] calls.
#[derive(Clone)]
pub struct Hook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Hits calls of `op` whose key starts with `key_prefix`: lets `skip` of them
/// through, then applies `action` to the next `times` (or all, when `None`).
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// The operation hit.
    pub op: Op,
    /// Only keys starting with this.
    pub key_prefix: String,
    /// Matching calls let through before the fault starts.
    pub skip: u32,
    /// Matching calls hit after that; `None` for every one.
    pub times: Option<u32>,
    /// What happens to them.
    pub action: FaultAction,
}

/// Wraps a storage and injects the faults its rules describe; counts the
/// calls that reach it.
#[derive(Debug)]
pub struct FaultStorage {
    inner: DynStorage,
    rules: Mutex<Vec<FaultRule>>,
    /// Calls that reached this layer, by [`Op`] (`op as usize`).
    calls: [AtomicU64; 5],
}

impl FaultStorage {
    /// Wraps `inner` with no rules.
    pub fn new(inner: DynStorage) -> Self {
        FaultStorage {
            inner,
            rules: Mutex::new(Vec::new()),
            calls: Default::default(),
        }
    }

    /// The rules, even after a thread panicked holding them: a fault a
    /// test asked for is never silently left out.
    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls of `op` that reached this layer so far, failed by a rule or
    /// passed on: a layer above that retries shows here as several calls.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op as usize].load(Ordering::SeqCst)
    }

    /// Adds a rule.
    pub fn add(&self, rule: FaultRule) {
        self.rules().push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules().clear();
    }

    async fn check(&self, op: Op, key: &str, name: &'static str) -> Result<(), StorageError> {
        self.calls[op as usize].fetch_add(1, Ordering::SeqCst);
        let action = {
            let mut rules = self.rules();
            let mut hit = None;
            for rule in rules.iter_mut() {
                if rule.op != op || !key.starts_with(&rule.key_prefix) {
                    continue;
                }
                if rule.skip > 0 {
                    rule.skip -= 1;
                    continue;
                }
                match rule.times {
                    Some(0) => continue,
                    Some(ref mut n) => *n -= 1,
                    None => {}
                }
                hit = Some(rule.action.clone());
                break;
            }
            hit
        };
        match action {
            None => Ok(()),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Some(FaultAction::Run(hook)) => {
                (hook.0)();
                Ok(())
            }
            Some(FaultAction::Fail(kind)) => Err(StorageError::new(
                kind,
                name,
                key,
                &self.inner.location(),
                "injected fault",
            )),
        }
    }
}

#[async_trait]
impl Storage for FaultStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn may_be_cold(&self) -> bool {
        self.inner.may_be_cold()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.check(Op::Put, key, "put").await?;
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.check(Op::Get, key, "get").await?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.check(Op::Get, key, "get").await?;
        self.inner.get_range(key, range).await
    }
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        self.check(Op::Get, key, "get").await?;
        self.inner.get_range_into(key, range, buf).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.check(Op::List, prefix, "list").await?;
        self.inner.list(prefix).await
    }
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.check(Op::Stat, key, "stat").await?;
        self.inner.stat(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.check(Op::Delete, key, "delete").await?;
        self.inner.delete(key).await
    }
    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.check(Op::List, "", "list").await?;
        self.inner.list_leftovers().await
    }
    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        self.check(Op::Delete, key, "delete").await?;
        self.inner.delete_leftover(key).await
    }
    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.check(Op::Put, key, "put").await?;
        self.inner.put_cold(key, data).await
    }
    async fn thaw(&self, key: &str, days: u32, tier: ThawTier) -> Result<ColdState, StorageError> {
        self.check(Op::Stat, key, "thaw").await?;
        self.inner.thaw(key, days, tier).await
    }
    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        self.check(Op::Stat, key, "stat").await?;
        self.inner.cold_state(key).await
    }
    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        self.check(Op::Get, key, "get").await?;
        self.inner.get_parts(key).await
    }
    async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        cold: bool,
    ) -> Result<(), StorageError> {
        self.check(Op::Put, key, "put").await?;
        self.inner.put_parts(key, parts, cold).await
    }
    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StorageError> {
        self.check(Op::Get, key, "get").await?;
        self.inner.get_stream(key).await
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
        self.check(Op::Put, key, "put").await?;
        self.inner.put_stream(key, len, stream, cold).await
    }
}
