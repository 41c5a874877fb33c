//! The PostgreSQL crate's integration tests, in one binary: the fast tier,
//! which needs no server. WAL and history files are pushed and fetched
//! through the library calls `pg wal-push` and `pg wal-fetch` make, from a
//! stand-in data directory (a `global/pg_control` that holds the system
//! identifier, and `pg_wal/`), and base backups are recorded as `pg backup`
//! records them (a snapshot of kind `postgres` with its WAL range in the
//! metadata); `pg info`'s walk of the archive is then checked against what
//! was pushed.
//!
//! - `archive`: wal-push and wal-fetch, the archive walked per timeline,
//!   gaps, the recoverable window.

#![allow(clippy::unwrap_used)]

mod archive;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifeboat_postgres::archive::{namespace, wal_push, PushReport};
use lifeboat_postgres::meta::{BackupMeta, BackupType, Timeline};
use lifeboat_postgres::wal::{Lsn, Segment};
use lifeboat_repo::{
    BackupOutcome, Credential, InitOptions, Kdf, NoProgress, PlainFiles, Repository,
    TreeBackupOptions, TreeRoot,
};
use lifeboat_storage::LocalStorage;

/// PostgreSQL's default WAL segment size, which the names below assume.
const SEGMENT_SIZE: u64 = 16 << 20;

/// A temporary directory with a repository on local disk in `repo/`.
struct Scratch {
    repo: Repository,
    // Dropped after the repository, whose storage runs on it.
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            Arc::new(LocalStorage::new(dir.path().join("repo"))),
            rt.handle().clone(),
            &Credential::passphrase(b"a test passphrase".to_vec()),
            &InitOptions {
                passphrase_kdf: Kdf::Argon2id {
                    memory_kib: 8,
                    iterations: 1,
                    parallelism: 1,
                },
                ..InitOptions::default()
            },
        )
        .unwrap();
        Scratch { repo, _rt: rt, dir }
    }

    /// The file on disk of the repository's object `key`.
    fn object(&self, key: &str) -> PathBuf {
        self.dir.path().join("repo").join(key)
    }
}

/// The name of segment `number` of timeline `timeline`.
fn seg(timeline: u32, number: u64) -> String {
    Segment {
        timeline,
        number,
        size: SEGMENT_SIZE,
    }
    .name()
}

/// A stand-in for a cluster's data directory: what wal-push and wal-fetch
/// read of it (the system identifier in `global/pg_control`) and `pg_wal/`.
struct Cluster {
    pgdata: PathBuf,
    system_identifier: String,
}

impl Cluster {
    fn new(s: &Scratch, name: &str, system_identifier: u64) -> Cluster {
        let pgdata = s.dir.path().join(name);
        fs::create_dir_all(pgdata.join("global")).unwrap();
        fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
        let mut control = system_identifier.to_ne_bytes().to_vec();
        control.resize(8192, 0);
        fs::write(pgdata.join("global/pg_control"), control).unwrap();
        Cluster {
            pgdata,
            system_identifier: system_identifier.to_string(),
        }
    }

    /// What the cluster writes as WAL file `name` (small: the archive does
    /// not look inside).
    fn content(&self, name: &str) -> Vec<u8> {
        format!("{} {name}\n", self.system_identifier)
            .repeat(50)
            .into_bytes()
    }

    /// `pg wal-push pg_wal/NAME` of a file with `content`, as the archiver
    /// runs it (from the data directory, with a relative path).
    fn push_bytes(
        &self,
        repo: &Repository,
        name: &str,
        content: &[u8],
    ) -> lifeboat_postgres::Result<PushReport> {
        fs::write(self.pgdata.join("pg_wal").join(name), content).unwrap();
        wal_push(repo, &self.pgdata, &Path::new("pg_wal").join(name))
    }

    /// Pushes each WAL file named.
    fn push(&self, repo: &Repository, names: &[String]) {
        for n in names {
            let r = self.push_bytes(repo, n, &self.content(n)).unwrap();
            assert_eq!(r.stored, std::slice::from_ref(n));
        }
    }

    /// Records a base backup of timeline 1 whose WAL runs from segment
    /// `start` to segment `stop`, as `pg backup` records one.
    fn base_backup(&self, repo: &Repository, start: u64, stop: u64) -> BackupOutcome {
        let opts = TreeBackupOptions {
            roots: vec![TreeRoot {
                path: self.pgdata.join("global"),
                prefix: Some("global".into()),
            }],
            source_kind: lifeboat_postgres::SOURCE_KIND.into(),
            source_name: "main".into(),
            paths: vec![self.pgdata.display().to_string()],
            hostname: "test".into(),
            ..Default::default()
        };
        repo.backup_tree(&opts, &PlainFiles, &NoProgress, |draft| {
            let meta = BackupMeta {
                backup_type: if draft.parent().is_some() {
                    BackupType::Incr
                } else {
                    BackupType::Full
                },
                pg_version: "15.8".into(),
                pg_version_num: 150008,
                system_identifier: self.system_identifier.parse().unwrap(),
                timeline: Timeline(1),
                start_lsn: Lsn(start * SEGMENT_SIZE + 40),
                stop_lsn: Lsn(stop * SEGMENT_SIZE + 256),
                wal_start: seg(1, start),
                wal_stop: seg(1, stop),
                wal_segment_size: SEGMENT_SIZE,
                data_checksums: true,
                databases: Vec::new(),
                label: "test".into(),
                copy_start_ns: 0,
                duration_ms: 0,
                checksum_errors: Vec::new(),
                tablespaces: Vec::new(),
                stop_time: None,
            };
            for (k, v) in meta.entries().unwrap() {
                draft.set_metadata(&k, v);
            }
            Ok(())
        })
        .unwrap()
    }

    /// Sets when the stored WAL file `name` was stored, as the store says.
    fn set_stored_time(&self, s: &Scratch, name: &str, t: SystemTime) {
        let key = s.repo.named_key(&namespace(&self.system_identifier), name);
        fs::File::options()
            .write(true)
            .open(s.object(&key))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// `2030-01-01T00:00:00Z` plus `days`.
fn day(days: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000 + days * 86_400)
}
