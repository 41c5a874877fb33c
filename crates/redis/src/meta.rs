//! What a Redis snapshot records about its backup, typed: the contract
//! between `redis backup`, which writes it, and restores, their proof and
//! listings, which read it. Keys and JSON shapes are those of snapshot
//! format 3 (`docs/format.md`); a snapshot that lacks what a Redis backup
//! records is reported as damaged, by name.

use std::collections::BTreeMap;

use lifeboat_repo::{Snapshot, SnapshotEntry, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::rdb::RdbFacts;
use crate::Result;

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
        Ok(snapshot.metadata_as(id, "Redis backup")?)
    }

    /// The entries to record in the snapshot's metadata.
    pub fn entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        Ok(lifeboat_repo::metadata_entries(self)?)
    }

    /// Keys in all databases.
    pub fn keys(&self) -> u64 {
        self.keyspace.values().map(|d| d.keys).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot_with(metadata: Vec<(String, serde_json::Value)>) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 3, "source_kind": "redis", "source_name": "cache",
            "hostname": "db1", "start_time": "2026-11-24T13:52:40Z",
            "end_time": "2026-11-24T13:52:44Z", "nodes": [],
            "stats": serde_json::to_value(lifeboat_repo::BackupStats::default()).unwrap(),
        }))
        .unwrap();
        s.metadata = metadata.into_iter().collect();
        s
    }

    const KEYS: &[&str] = &["redis_version", "rdb", "keyspace", "diskless", "aof_files"];

    proptest! {
        /// Stored metadata of any shape reads or is refused as damage.
        #[test]
        fn any_metadata_reads_or_is_damage(
            entries in proptest::collection::vec((0..KEYS.len(), ".{0,12}"), 0..10)
        ) {
            let s = snapshot_with(
                entries
                    .into_iter()
                    .map(|(k, v)| (KEYS[k].to_string(), serde_json::Value::from(v)))
                    .collect(),
            );
            if let Err(e) = RedisMeta::of_snapshot(&SnapshotId([7; 32]), &s) {
                prop_assert_eq!(e.class(), lifeboat_repo::ErrorClass::Damage);
            }
        }
    }

    #[test]
    fn what_a_backup_writes_reads_back() {
        let meta = RedisMeta {
            redis_version: "7.0.15".into(),
            rdb: RdbFacts {
                magic: "REDIS".into(),
                version: 10,
                bytes: 120,
                checksummed: true,
            },
            diskless: false,
            keyspace: [(
                "db0".to_string(),
                DbKeys {
                    keys: 3,
                    expires: 1,
                },
            )]
            .into(),
            used_memory: Some(1),
            rdb_last_save_time: None,
            aof_files: None,
        };
        let s = snapshot_with(meta.entries().unwrap());
        let back = RedisMeta::of_snapshot(&SnapshotId([1; 32]), &s).unwrap();
        assert_eq!(back.keys(), 3);
        assert_eq!(back.rdb, meta.rdb);
        let mut missing = s.clone();
        missing.metadata.remove("keyspace");
        let err = RedisMeta::of_snapshot(&SnapshotId([1; 32]), &missing).unwrap_err();
        assert!(err.to_string().contains("keyspace"), "{err}");
    }
}
