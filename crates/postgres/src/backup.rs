//! `lifeboat pg backup`: a physical base backup through the non-exclusive
//! backup API, recorded only once the WAL it needs is in the repository.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use lifeboat_repo::{
    BackupOutcome, ChunkerConfig, Progress, Repository, TreeBackupOptions, TreeRoot,
};
use tokio::runtime::Handle;

use crate::archive::namespace;
use crate::error::{PgError, Result};
use crate::layout::DataDirPolicy;
use crate::meta::{BackupMeta, BackupType, TablespaceMeta, Timeline};
use crate::session::{parse_conninfo, Session};
use crate::wal::Segment;

/// The snapshot source kind of physical backups.
pub const SOURCE_KIND: &str = "postgres";

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The data directory.
    pub pgdata: PathBuf,
    /// How to connect (libpq key=value or URL).
    pub conninfo: String,
    /// The source's name in snapshots (a configured name, or the data directory).
    pub source_name: String,
    /// The host name recorded.
    pub hostname: String,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Read every file (`--type full`) instead of reusing unchanged ones.
    pub full: bool,
    /// Ask for an immediate checkpoint instead of waiting for a spread one.
    pub fast_checkpoint: bool,
    /// Record a backup even when pages fail their checksums.
    pub allow_checksum_errors: bool,
    /// How long to wait for the backup's WAL to reach the repository.
    pub archive_timeout: Duration,
    /// How relation files are cut.
    pub relation_chunker: ChunkerConfig,
    /// Record the snapshot under this time (imports, tests of retention
    /// over years); the real one stays in the metadata (`stop_time`), which
    /// restores choose a backup by.
    pub time: Option<lifeboat_repo::Timestamp>,
}

impl BackupOptions {
    /// Defaults for a data directory and connection string.
    pub fn new(pgdata: PathBuf, conninfo: String) -> Self {
        BackupOptions {
            source_name: pgdata.display().to_string(),
            pgdata,
            conninfo,
            hostname: String::new(),
            tags: Vec::new(),
            full: false,
            fast_checkpoint: true,
            allow_checksum_errors: false,
            archive_timeout: Duration::from_secs(60),
            relation_chunker: ChunkerConfig::pages(),
            time: None,
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Takes a base backup of the cluster at `opts.pgdata`.
pub fn backup(
    repo: &Repository,
    rt: &Handle,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let cfg = parse_conninfo(&opts.conninfo)?;
    let session = Session::connect_with(rt, &cfg)?;
    let info = session.server_info()?;
    if !same_dir(Path::new(&info.data_directory), &opts.pgdata) {
        return Err(PgError::Misconfigured(format!(
            "--pgdata {} is not the data directory of the server lifeboat connected to (it reports {}); point --pgdata and --pg-url at the same cluster",
            opts.pgdata.display(),
            info.data_directory
        )));
    }
    if info.archive_mode == "off" || info.wal_level == "minimal" {
        return Err(PgError::NotArchiving {
            archive_mode: info.archive_mode.clone(),
            wal_level: info.wal_level.clone(),
        });
    }
    let owner = std::fs::metadata(opts.pgdata.join("PG_VERSION"))
        .map(|m| (m.uid(), m.gid()))
        .map_err(|e| PgError::io("read", &opts.pgdata.join("PG_VERSION"), e))?;
    let databases = session.databases(&cfg)?;
    let started = Instant::now();
    let label = format!("lifeboat backup {}", lifeboat_repo::Timestamp::now());
    let (start_lsn, timeline) = session.backup_start(&info, &label, opts.fast_checkpoint)?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, lsn = %start_lsn, "backup started");
    let copy_start_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);

    let policy = DataDirPolicy {
        root: opts.pgdata.clone(),
        verify_checksums: info.data_checksums,
        start_lsn,
        relation_chunker: opts.relation_chunker,
        bad_pages: Mutex::new(Vec::new()),
    };
    // Tablespaces: each link's directory is walked under pg_tblspc/<oid>.
    let spaces = crate::layout::tablespaces(&opts.pgdata)
        .map_err(|e| PgError::io("list the tablespaces in", &opts.pgdata.join("pg_tblspc"), e))?;
    let mut roots = vec![TreeRoot {
        path: opts.pgdata.clone(),
        prefix: Some(String::new()),
    }];
    for (oid, location) in &spaces {
        roots.push(TreeRoot {
            path: location.clone(),
            prefix: Some(format!("pg_tblspc/{oid}")),
        });
    }
    let tablespaces: Vec<TablespaceMeta> = spaces
        .iter()
        .map(|(oid, loc)| TablespaceMeta {
            oid: oid.clone(),
            location: loc.display().to_string(),
        })
        .collect();
    let metadata = std::collections::BTreeMap::new();
    let tree = TreeBackupOptions {
        roots,
        source_kind: SOURCE_KIND.into(),
        source_name: opts.source_name.clone(),
        paths: vec![opts.pgdata.display().to_string()],
        tags: opts.tags.clone(),
        allow_partial: false,
        force_read: opts.full,
        hostname: opts.hostname.clone(),
        // Restores choose a base backup by when it really ended
        // (`stop_time` below), not by the time it is recorded under.
        time: opts.time,
        metadata,
        // While it runs, WAL expiry keeps every segment from its start.
        wal_hold: Some(lifeboat_repo::WalHold {
            namespace: namespace(&info.system_identifier),
            first: Segment::containing(timeline, start_lsn, info.wal_segment_size).name(),
        }),
    };
    let ns = namespace(&info.system_identifier);
    let mut checksum_errors: Vec<String> = Vec::new();
    let outcome = repo.backup_tree(&tree, &policy, progress, |draft| {
        let to_repo = |e: PgError| lifeboat_repo::RepoError::Source(Box::new(e));
        // pg_control last, after every other file, as pg_basebackup sends it.
        let control_path = opts.pgdata.join("global/pg_control");
        let control = std::fs::read(&control_path)
            .map_err(|e| to_repo(PgError::io("read", &control_path, e)))?;
        draft.add_file("global/pg_control", &control, 0o600, owner)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "files read");
        let stop = session.backup_stop(&info).map_err(to_repo)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, lsn = %stop.lsn, "backup stopped");
        draft.add_file("backup_label", stop.labelfile.as_bytes(), 0o600, owner)?;
        if !stop.spcmapfile.trim().is_empty() {
            draft.add_file("tablespace_map", stop.spcmapfile.as_bytes(), 0o600, owner)?;
        }
        let bad = policy.take_bad_pages();
        if !bad.is_empty() {
            if !opts.allow_checksum_errors {
                return Err(to_repo(PgError::Checksums {
                    count: bad.len(),
                    first: bad[0].to_string(),
                }));
            }
            for b in &bad {
                progress.warn(&format!("checksum failure: {b}"));
            }
            checksum_errors = bad.iter().map(|b| b.to_string()).collect();
        }
        // The backup is complete only once every segment from start to stop
        // is in the repository.
        let first = Segment::containing(timeline, start_lsn, info.wal_segment_size);
        let last = Segment::containing(timeline, stop.lsn, info.wal_segment_size);
        wait_for_wal(repo, &ns, first, last, opts.archive_timeout, progress).map_err(to_repo)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "wal archived");
        let meta = BackupMeta {
            backup_type: if draft.parent().is_some() {
                BackupType::Incr
            } else {
                BackupType::Full
            },
            pg_version: info.version.clone(),
            pg_version_num: info.version_num,
            system_identifier: info.system_identifier.parse().map_err(|e: String| {
                to_repo(PgError::Query {
                    what: "read the system identifier".into(),
                    reason: e,
                })
            })?,
            timeline: Timeline(timeline),
            start_lsn,
            stop_lsn: stop.lsn,
            wal_start: first.name(),
            wal_stop: last.name(),
            wal_segment_size: info.wal_segment_size,
            data_checksums: info.data_checksums,
            databases: databases.clone(),
            label: label.clone(),
            copy_start_ns,
            duration_ms: started.elapsed().as_millis() as u64,
            checksum_errors: std::mem::take(&mut checksum_errors),
            tablespaces: tablespaces.clone(),
            stop_time: Some(lifeboat_repo::Timestamp::now()),
        };
        for (k, v) in meta.entries().map_err(to_repo)? {
            draft.set_metadata(&k, v);
        }
        Ok(())
    });
    match outcome {
        Ok(o) => Ok(o),
        // The source's own errors come back as themselves.
        Err(lifeboat_repo::RepoError::Source(e)) => match e.downcast::<PgError>() {
            Ok(pg) => Err(*pg),
            Err(other) => Err(PgError::Failed(other.to_string())),
        },
        Err(e) => Err(e.into()),
    }
}

/// Waits until every segment from `first` to `last` is stored.
fn wait_for_wal(
    repo: &Repository,
    ns: &str,
    first: Segment,
    last: Segment,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut reported = false;
    // One listing finds what is there; a segment it misses is then looked up
    // by itself (the archiver may have stored it since).
    let stored = repo.list_named()?;
    let mut first = first;
    loop {
        let mut seg = first;
        let missing = loop {
            if !stored.contains(&repo.named_key(ns, &seg.name()))
                && repo.stat_named(ns, &seg.name())?.is_none()
            {
                break Some(seg);
            }
            if seg >= last {
                break None;
            }
            seg = seg.next();
        };
        let Some(missing) = missing else {
            return Ok(());
        };
        first = missing;
        if Instant::now() >= deadline {
            return Err(PgError::ArchiveTimeout {
                segment: missing.name(),
                seconds: timeout.as_secs(),
            });
        }
        if !reported {
            progress.warn(&format!(
                "waiting for WAL segment {} to be archived",
                missing.name()
            ));
            reported = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
