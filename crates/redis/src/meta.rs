//! What a Redis snapshot records about its backup, typed: the contract
//! between `redis backup`, which writes it, and restores, their proof and
//! listings, which read it. Keys and JSON shapes are those of snapshot
//! format 3 (`docs/format.md`); a snapshot that lacks what a Redis backup
//! records is reported as damaged, by name.

use std::collections::BTreeMap;

use lifeboat_repo::{RepoError, Snapshot, SnapshotEntry, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::rdb::RdbFacts;
use crate::{RedisError, Result};

/// The keys of one database at backup time (`INFO keyspace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbKeys {
    /// Keys.
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
}

/// What a Redis backup's snapshot records (`source_kind = "redis"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedisMeta {
    /// The server's `redis_version`.
    pub redis_version: String,
    /// What the RDB checks found.
    pub rdb: RdbFacts,
    /// True when the server sent the RDB without writing it to disk.
    #[serde(default)]
    pub diskless: bool,
    /// Keys per database (`db0` …).
    pub keyspace: BTreeMap<String, DbKeys>,
    /// `used_memory`, when the server said.
    #[serde(default)]
    pub used_memory: Option<u64>,
    /// `rdb_last_save_time`, when the server said.
    #[serde(default)]
    pub rdb_last_save_time: Option<i64>,
    /// With `--aof`: the AOF files backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aof_files: Option<Vec<String>>,
}

impl RedisMeta {
    /// The metadata of a Redis snapshot; damage, by name, when it lacks what
    /// a Redis backup records.
    pub fn of(entry: &SnapshotEntry) -> Result<RedisMeta> {
        RedisMeta::of_snapshot(&entry.id, &entry.snapshot)
    }

    /// [`RedisMeta::of`] for a snapshot and its id.
    pub fn of_snapshot(id: &SnapshotId, snapshot: &Snapshot) -> Result<RedisMeta> {
        let map: serde_json::Map<String, serde_json::Value> = snapshot
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            RedisError::Repo(RepoError::Corrupt {
                key: lifeboat_repo::ObjectKey::Snapshot(*id).to_string(),
                reason: format!("its Redis backup metadata does not read: {e}"),
            })
        })
    }

    /// The entries to record in the snapshot's metadata.
    pub fn entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => Ok(map.into_iter().collect()),
            other => Err(RedisError::Repo(RepoError::Invalid(format!(
                "Redis metadata does not encode as an object: {other:?}"
            )))),
        }
    }

    /// Keys in all databases.
    pub fn keys(&self) -> u64 {
        self.keyspace.values().map(|d| d.keys).sum()
    }
}
