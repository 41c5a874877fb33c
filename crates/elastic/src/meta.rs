//! What an Elasticsearch/OpenSearch snapshot records, typed: the contract
//! between `es backup`, which writes it, and `es restore`, forget and the
//! listings, which read it. Keys and JSON shapes are those of snapshot
//! format 3 (`docs/format.md` "Elasticsearch and OpenSearch snapshots"); a
//! snapshot that lacks them is reported as damaged, by name.

use std::collections::BTreeMap;

use lifeboat_repo::{Snapshot, SnapshotEntry, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterInfo;
use crate::Result;

/// How a source's snapshots are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The cluster writes into a staging `fs` repository; lifeboat stores
    /// its files in the lifeboat repository (deduplicated, encrypted).
    #[default]
    Ingest,
    /// The cluster writes into a repository it owns (`s3`, …); lifeboat
    /// creates, checks, records and deletes the snapshots there. Their
    /// data is not in the lifeboat repository and not encrypted by it.
    Orchestrate,
}

impl Mode {
    /// `ingest` or `orchestrate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ingest => "ingest",
            Mode::Orchestrate => "orchestrate",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ingest" => Ok(Mode::Ingest),
            "orchestrate" => Ok(Mode::Orchestrate),
            other => Err(format!(
                "unknown mode {other:?}: give ingest (the cluster writes to a staging fs repository lifeboat stores) or orchestrate (the cluster writes to its own repository)"
            )),
        }
    }
}

/// One index as the snapshot holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Documents counted just before the snapshot started.
    pub docs: u64,
    /// Documents counted just after it ended: a restore must count between
    /// the two (the same when nothing was written meanwhile).
    pub docs_after: u64,
    /// Primary shards.
    pub primaries: u32,
    /// Replicas per primary.
    pub replicas: u32,
    /// Bytes the cluster stored for it, replicas included.
    pub store_bytes: u64,
    /// Its UUID in the cluster.
    #[serde(default)]
    pub uuid: String,
}

impl IndexRecord {
    /// Whether `n` documents after a restore agree with what was counted
    /// around the snapshot.
    pub fn agrees(&self, n: u64) -> bool {
        let (lo, hi) = if self.docs <= self.docs_after {
            (self.docs, self.docs_after)
        } else {
            (self.docs_after, self.docs)
        };
        (lo..=hi).contains(&n)
    }

    /// "N" or "between N and M".
    pub fn expected(&self) -> String {
        if self.docs == self.docs_after {
            self.docs.to_string()
        } else {
            format!(
                "between {} and {}",
                self.docs.min(self.docs_after),
                self.docs.max(self.docs_after)
            )
        }
    }
}

/// What an Elasticsearch/OpenSearch backup's snapshot records
/// (`source_kind = "elasticsearch"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EsMeta {
    /// Ingest or orchestrate.
    pub mode: Mode,
    /// Who the cluster was.
    pub cluster: ClusterInfo,
    /// The snapshot repository in the cluster (ingest: the staging one).
    pub repository: String,
    /// The snapshot's name in the cluster (`lifeboat-<source>-<UTC time>`).
    pub snapshot: String,
    /// Its UUID in the cluster.
    pub snapshot_uuid: String,
    /// Its state (only `SUCCESS` is recorded).
    pub state: String,
    /// Start and end in ms since the epoch, as the cluster reports them.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
    /// Shards snapshotted.
    pub shards: u64,
    /// Whether the cluster's global state is in it.
    pub include_global_state: bool,
    /// The index patterns asked for (empty: every open index).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Each index it holds, by name (the backing indices of its data
    /// streams included).
    pub indices: BTreeMap<String, IndexRecord>,
    /// Its data streams: name → backing indices (each in `indices`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data_streams: BTreeMap<String, Vec<String>>,
}

impl EsMeta {
    /// The metadata of an Elasticsearch snapshot; damage, by name, when it
    /// lacks what an Elasticsearch backup records.
    pub fn of(entry: &SnapshotEntry) -> Result<EsMeta> {
        EsMeta::of_snapshot(&entry.id, &entry.snapshot)
    }

    /// [`EsMeta::of`] for a snapshot and its id.
    pub fn of_snapshot(id: &SnapshotId, snapshot: &Snapshot) -> Result<EsMeta> {
        Ok(snapshot.metadata_as(id, "Elasticsearch backup")?)
    }

    /// The entries to record in the snapshot's metadata.
    pub fn entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        Ok(lifeboat_repo::metadata_entries(self)?)
    }

    /// Documents in all indices, as counted before the snapshot.
    pub fn docs(&self) -> u64 {
        self.indices.values().map(|i| i.docs).sum()
    }

    /// What a restore selects from, by name: the indices that back no
    /// data stream, and the data streams.
    pub fn restorable(&self) -> Vec<String> {
        let backing: std::collections::BTreeSet<&String> =
            self.data_streams.values().flatten().collect();
        let mut out: Vec<String> = self
            .indices
            .keys()
            .filter(|i| !backing.contains(i))
            .cloned()
            .collect();
        out.extend(self.data_streams.keys().cloned());
        out.sort();
        out
    }

    /// The record of `name` (an index, or a data stream as the sum of its
    /// backing indices).
    pub fn record_of(&self, name: &str) -> Option<IndexRecord> {
        if let Some(r) = self.indices.get(name) {
            return Some(r.clone());
        }
        let backing = self.data_streams.get(name)?;
        let mut sum = IndexRecord::default();
        for b in backing {
            let r = self.indices.get(b)?;
            sum.docs += r.docs;
            sum.docs_after += r.docs_after;
            sum.primaries += r.primaries;
            sum.store_bytes += r.store_bytes;
            sum.replicas = r.replicas;
        }
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> EsMeta {
        EsMeta {
            mode: Mode::Ingest,
            cluster: ClusterInfo {
                cluster_name: "logs".into(),
                cluster_uuid: "u".into(),
                distribution: "opensearch".into(),
                version: "2.19.6".into(),
            },
            repository: "lifeboat-logs".into(),
            snapshot: "lifeboat-logs-2026.11.28-22.00.00".into(),
            snapshot_uuid: "s".into(),
            state: "SUCCESS".into(),
            start_ms: 1,
            end_ms: 2,
            shards: 3,
            include_global_state: false,
            patterns: vec!["logs-*".into()],
            indices: [(
                "logs-1".to_string(),
                IndexRecord {
                    docs: 10,
                    docs_after: 12,
                    primaries: 1,
                    replicas: 0,
                    store_bytes: 100,
                    uuid: "i".into(),
                },
            )]
            .into(),
            data_streams: BTreeMap::new(),
        }
    }

    fn snapshot_with(metadata: Vec<(String, serde_json::Value)>) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 3, "source_kind": "elasticsearch", "source_name": "logs",
            "hostname": "h", "start_time": "2026-11-28T22:00:00Z",
            "end_time": "2026-11-28T22:00:04Z", "nodes": [],
            "stats": serde_json::to_value(lifeboat_repo::BackupStats::default()).unwrap(),
        }))
        .unwrap();
        s.metadata = metadata.into_iter().collect();
        s
    }

    #[test]
    fn metadata_round_trips_and_a_missing_key_is_damage_by_name() {
        let m = sample();
        let entries = m.entries().unwrap();
        let back =
            EsMeta::of_snapshot(&SnapshotId([1; 32]), &snapshot_with(entries.clone())).unwrap();
        assert_eq!(back.indices, m.indices);
        assert_eq!(back.snapshot, m.snapshot);
        let without: Vec<_> = entries
            .into_iter()
            .filter(|(k, _)| k != "indices")
            .collect();
        let e = EsMeta::of_snapshot(&SnapshotId([1; 32]), &snapshot_with(without)).unwrap_err();
        assert_eq!(e.class(), lifeboat_repo::ErrorClass::Damage);
        assert!(e.to_string().contains("indices"), "{e}");
    }

    #[test]
    fn counts_agree_between_before_and_after() {
        let r = &sample().indices["logs-1"];
        assert!(r.agrees(10) && r.agrees(11) && r.agrees(12));
        assert!(!r.agrees(9) && !r.agrees(13));
        assert_eq!(r.expected(), "between 10 and 12");
    }

    proptest! {
        #[test]
        fn any_metadata_parses_or_is_damage(v in proptest::collection::vec(("[a-z_]{1,12}", any::<i64>()), 0..8)) {
            let entries = v.into_iter().map(|(k, n)| (k, serde_json::json!(n))).collect();
            match EsMeta::of_snapshot(&SnapshotId([2; 32]), &snapshot_with(entries)) {
                Ok(_) => {}
                Err(e) => prop_assert_eq!(e.class(), lifeboat_repo::ErrorClass::Damage),
            }
        }
    }
}
