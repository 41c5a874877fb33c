//! What a PostgreSQL snapshot records about its backup, typed: the contract
//! between `pg backup` and `pg dump`, which write it, and `pg restore`,
//! `pg info`, the timeline checks and incremental backups, which read it.
//!
//! The keys and JSON shapes are those of snapshot format 3
//! (`docs/format.md`), so snapshots older builds wrote read the same; a
//! snapshot that lacks a key its kind needs is reported as damaged, by
//! name, instead of being read as an empty string or a zero.

use std::fmt;
use std::str::FromStr;

use lifeboat_repo::{Snapshot, SnapshotEntry, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::session::DatabaseInfo;
use crate::wal::Lsn;
use crate::Result;

/// A timeline: 1 for a cluster's first, one more for each promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cluster's system identifier (`pg_control_system()`), set by `initdb`
/// and kept by every copy of the cluster; in JSON, its decimal digits as a
/// string (JSON numbers lose precision past 2^53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SystemId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse()
            .map(SystemId)
            .map_err(|_| format!("{s:?} is not a system identifier (decimal digits)"))
    }
}

impl Serialize for SystemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SystemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `full`: every file read; `incr`: files unchanged since the parent reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file read.
    Full,
    /// Unchanged files reused from the parent snapshot.
    Incr,
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupType::Full => "full",
            BackupType::Incr => "incr",
        })
    }
}

/// A tablespace of a base backup: its OID (the link under `pg_tblspc`) and
/// where it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceMeta {
    /// The OID, as text.
    pub oid: String,
    /// Its directory on the source.
    pub location: String,
}

/// What a base backup's snapshot records (`source_kind = "postgres"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupMeta {
    /// Full or incremental.
    pub backup_type: BackupType,
    /// `server_version`.
    pub pg_version: String,
    /// `server_version_num`.
    pub pg_version_num: u32,
    /// The cluster.
    pub system_identifier: SystemId,
    /// The timeline the backup started on.
    pub timeline: Timeline,
    /// Where the backup started.
    pub start_lsn: Lsn,
    /// Where it stopped: recovery must replay at least to here.
    pub stop_lsn: Lsn,
    /// The first WAL segment the backup needs.
    pub wal_start: String,
    /// The last.
    pub wal_stop: String,
    /// The cluster's WAL segment size.
    pub wal_segment_size: u64,
    /// Whether data pages carry checksums (and were checked).
    pub data_checksums: bool,
    /// The databases, their sizes and row estimates.
    #[serde(default)]
    pub databases: Vec<DatabaseInfo>,
    /// The label given to `pg_backup_start`.
    #[serde(default)]
    pub label: String,
    /// When the copy of the files began, nanoseconds since the epoch: a file
    /// changed within 2 s before it is never trusted as unchanged.
    #[serde(rename = "copy_start_unix_ns")]
    pub copy_start_ns: i64,
    /// How long the backup took.
    #[serde(default)]
    pub duration_ms: u64,
    /// Pages that failed their checksums (with `--allow-checksum-errors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_errors: Vec<String>,
    /// The tablespaces, each restored under `pg_tblspc/<oid>`.
    #[serde(default)]
    pub tablespaces: Vec<TablespaceMeta>,
    /// When the backup really ended (its WAL archived): what restores
    /// choose a backup by, whatever time the snapshot is recorded under
    /// (`pg backup --time`). Absent in backups before it was written: the
    /// snapshot's end time is then the real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<lifeboat_repo::Timestamp>,
}

/// When a base backup really ended: its `stop_time`, else (older backups,
/// always recorded when they ran) its snapshot's end time.
pub fn real_end(e: &SnapshotEntry) -> lifeboat_repo::Timestamp {
    e.snapshot
        .metadata
        .get("stop_time")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(e.snapshot.end_time)
}

impl BackupMeta {
    /// The metadata of a base backup's snapshot; damage, by name, when it
    /// lacks what a base backup records.
    pub fn of(entry: &SnapshotEntry) -> Result<BackupMeta> {
        BackupMeta::of_snapshot(&entry.id, &entry.snapshot)
    }

    /// [`BackupMeta::of`] for a snapshot and its id.
    pub fn of_snapshot(id: &SnapshotId, snapshot: &Snapshot) -> Result<BackupMeta> {
        read(id, snapshot, "PostgreSQL backup")
    }

    /// The entries to record in the snapshot's metadata.
    pub fn entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        entries(self)
    }
}

/// Reads a snapshot's metadata as `T` (see [`Snapshot::metadata_as`]).
fn read<T: serde::de::DeserializeOwned>(
    id: &SnapshotId,
    snapshot: &Snapshot,
    what: &str,
) -> Result<T> {
    Ok(snapshot.metadata_as(id, what)?)
}

/// A typed metadata value as snapshot metadata entries.
fn entries<T: Serialize>(meta: &T) -> Result<Vec<(String, serde_json::Value)>> {
    Ok(lifeboat_repo::metadata_entries(meta)?)
}

/// How a pg dump snapshot holds its dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// pg_dump's custom format, one stream per database.
    Custom,
    /// pg_dump's directory format (parallel), one prefix per database.
    Directory,
}

/// What a pg dump snapshot records (`source_kind = "pg_dump"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DumpMeta {
    /// The server's `server_version`.
    pub pg_version: String,
    /// Its `server_version_num`.
    pub pg_version_num: u32,
    /// The major version of the pg_dump that wrote the dumps: pg_restore
    /// must be at least as new.
    pub pg_dump_major: u32,
    /// Custom or directory format.
    pub format: DumpFormat,
    /// Per database, its item (custom) or its directory prefix.
    pub items: std::collections::BTreeMap<String, String>,
    /// The databases dumped, their sizes and row estimates.
    #[serde(default)]
    pub databases: Vec<DatabaseInfo>,
    /// True when pg_dumpall could not read role passwords.
    #[serde(default)]
    pub globals_without_passwords: bool,
}

impl DumpMeta {
    /// The metadata of a dump snapshot; damage, by name, when it lacks what
    /// a dump records.
    pub fn of(entry: &SnapshotEntry) -> Result<DumpMeta> {
        DumpMeta::of_snapshot(&entry.id, &entry.snapshot)
    }

    /// [`DumpMeta::of`] for a snapshot and its id.
    pub fn of_snapshot(id: &SnapshotId, snapshot: &Snapshot) -> Result<DumpMeta> {
        read(id, snapshot, "pg dump")
    }

    /// The entries to record in the snapshot's metadata.
    pub fn entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        entries(self)
    }

    /// The databases it holds, by name.
    pub fn database_names(&self) -> Vec<String> {
        self.items.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot_with(metadata: Vec<(String, serde_json::Value)>) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 3, "source_kind": "postgres", "source_name": "main",
            "hostname": "db1", "start_time": "2026-11-24T13:52:40Z",
            "end_time": "2026-11-24T13:52:44Z", "nodes": [],
            "stats": serde_json::to_value(lifeboat_repo::BackupStats::default()).unwrap(),
        }))
        .unwrap();
        s.metadata = metadata.into_iter().collect();
        s
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            ".{0,24}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([{"oid": "1", "location": "/x"}])),
        ]
    }

    const KEYS: &[&str] = &[
        "backup_type",
        "pg_version",
        "pg_version_num",
        "system_identifier",
        "timeline",
        "start_lsn",
        "stop_lsn",
        "wal_start",
        "wal_stop",
        "wal_segment_size",
        "data_checksums",
        "copy_start_unix_ns",
        "tablespaces",
        "items",
        "format",
        "pg_dump_major",
    ];

    proptest! {
        /// Stored metadata of any shape reads or is refused as damage; it
        /// never panics.
        #[test]
        fn any_metadata_reads_or_is_damage(
            entries in proptest::collection::vec((0..KEYS.len(), value()), 0..20)
        ) {
            let s = snapshot_with(
                entries.into_iter().map(|(k, v)| (KEYS[k].to_string(), v)).collect(),
            );
            let id = SnapshotId([7; 32]);
            for r in [BackupMeta::of_snapshot(&id, &s).err(), DumpMeta::of_snapshot(&id, &s).err()]
                .into_iter()
                .flatten()
            {
                prop_assert_eq!(r.class(), lifeboat_repo::ErrorClass::Damage);
            }
        }
    }

    #[test]
    fn what_a_backup_writes_reads_back() {
        let meta = BackupMeta {
            backup_type: BackupType::Incr,
            pg_version: "15.8".into(),
            pg_version_num: 150008,
            system_identifier: "7300000000000000001".parse().unwrap(),
            timeline: Timeline(3),
            start_lsn: "16/B374D848".parse().unwrap(),
            stop_lsn: "16/B5000000".parse().unwrap(),
            wal_start: "000000030000001600000059".into(),
            wal_stop: "00000003000000160000005A".into(),
            wal_segment_size: 16 << 20,
            data_checksums: true,
            databases: Vec::new(),
            label: "x".into(),
            copy_start_ns: 1,
            duration_ms: 2,
            checksum_errors: Vec::new(),
            tablespaces: vec![TablespaceMeta {
                oid: "16400".into(),
                location: "/srv/ts".into(),
            }],
            stop_time: None,
        };
        let s = snapshot_with(meta.entries().unwrap());
        // The identifier is text in JSON: numbers lose digits past 2^53.
        assert_eq!(s.metadata["system_identifier"], "7300000000000000001");
        let back = BackupMeta::of_snapshot(&SnapshotId([1; 32]), &s).unwrap();
        assert_eq!(back.start_lsn, meta.start_lsn);
        assert_eq!(back.system_identifier, meta.system_identifier);
        assert_eq!(back.tablespaces, meta.tablespaces);
        let mut missing = s.clone();
        missing.metadata.remove("start_lsn");
        let err = BackupMeta::of_snapshot(&SnapshotId([1; 32]), &missing).unwrap_err();
        assert!(err.to_string().contains("start_lsn"), "{err}");
        assert!(err.to_string().contains("snapshots/0101"), "{err}");
    }
}
