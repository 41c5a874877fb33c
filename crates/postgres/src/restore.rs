//! `lifeboat pg restore`: a base backup into a data directory, set up for
//! recovery to a target through `restore_command`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::os::unix::ffi::OsStrExt;

use lifeboat_repo::{
    NodeKind, Overwrite, Progress, Repository, RestoreOptions as RepoRestore, RestoreStats,
    SnapshotEntry,
};

use crate::backup::SOURCE_KIND;
use crate::error::{PgError, Result};
use crate::wal::Lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    End,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// Stop at a time (UTC).
    Time(SystemTime),
    /// Stop at an LSN.
    Lsn(Lsn),
    /// Stop at a transaction id.
    Xid(u64),
    /// Stop at a restore point made with `pg_create_restore_point`.
    Name(String),
}

/// What to restore and how recovery proceeds.
#[derive(Clone, Debug)]
pub struct PgRestoreOptions {
    /// The data directory to create.
    pub pgdata: PathBuf,
    /// A snapshot id, prefix or `latest`; `None` chooses by the target.
    pub snapshot: Option<String>,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// `recovery_target_action`: `pause`, `promote` or `shutdown`.
    pub target_action: String,
    /// `recovery_target_timeline` (`latest` when `None`).
    pub target_timeline: Option<String>,
    /// Restore a standby (`standby.signal`) instead of a recovering primary.
    pub standby: bool,
    /// `primary_conninfo` for a standby.
    pub primary_conninfo: Option<String>,
    /// Restore into a non-empty directory, replacing what differs.
    pub delta: bool,
    /// The `restore_command` PostgreSQL will run (`… pg wal-fetch %f %p`).
    pub restore_command: String,
    /// Tablespaces restored elsewhere than where they were: (old directory
    /// or OID, new directory).
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Whether the restored server archives WAL as the source did.
    pub archive_mode: ArchiveMode,
}

impl PgRestoreOptions {
    /// A restore of the newest backup into `pgdata`, recovering to the end
    /// of the archived WAL and promoting, fetching WAL with
    /// `restore_command`; the rest as `pg restore` defaults it.
    pub fn new(pgdata: PathBuf, restore_command: String) -> Self {
        PgRestoreOptions {
            pgdata,
            snapshot: None,
            target: RecoveryTarget::End,
            target_action: "promote".into(),
            target_timeline: None,
            standby: false,
            primary_conninfo: None,
            delta: false,
            restore_command,
            tablespace_map: Vec::new(),
            archive_mode: ArchiveMode::Off,
        }
    }
}

/// Whether a restored server archives its WAL (pgBackRest's
/// `--archive-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// `archive_mode = off` in `postgresql.auto.conf`: a restored server
    /// (a trial, a copy, a drill) writes nothing into the source's archive,
    /// where a new timeline of its own would be one more history for later
    /// restores to choose from. The default.
    #[default]
    Off,
    /// The source's archiving settings, as they were: for a server that
    /// replaces the source.
    Preserve,
}

/// The file the restored server's first `wal-push` of a timeline history
/// reads to record which restore made the timeline (see
/// `archive::record_origin`); it is never backed up.
pub const RESTORE_MARKER: &str = "lifeboat_restore.json";

/// The control file, restored last: PostgreSQL does not start without it, so
/// a data directory whose restore did not finish is never started by mistake.
const PG_CONTROL: &str = "global/pg_control";

/// Parses a target time: RFC 3339 (`2026-11-24T10:00:00Z`) or
/// `YYYY-MM-DD HH:MM:SS[.frac]` with an optional `+00`/`Z`/`UTC`, in UTC.
pub fn parse_target_time(text: &str) -> Result<SystemTime> {
    let t = text.trim();
    let t = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix("+00:00"))
        .or_else(|| t.strip_suffix("+00"))
        .unwrap_or(t);
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).map_err(|_| {
        PgError::Refused(format!(
            "--target-time {text:?} is not a time lifeboat reads: give it in UTC as 2026-11-24T10:00:00Z or '2026-11-24 10:00:00.123+00'"
        ))
    })
}

fn end_time(e: &SnapshotEntry) -> SystemTime {
    SystemTime::from(crate::meta::real_end(e))
}

/// The snapshot to restore: the one named, else for a time target the newest
/// backup that ended before it, else the newest backup.
pub fn choose_snapshot(repo: &Repository, opts: &PgRestoreOptions) -> Result<SnapshotEntry> {
    if let Some(spec) = &opts.snapshot {
        let e = repo.find_snapshot(spec)?;
        if e.snapshot.source_kind != SOURCE_KIND {
            return Err(PgError::Refused(format!(
                "snapshot {} is a {} backup, not a PostgreSQL physical backup; list them with `lifeboat pg info`",
                e.id.short(),
                e.snapshot.source_kind
            )));
        }
        return Ok(e);
    }
    let backups = crate::inspect::backups(repo)?;
    let Some(oldest) = backups.first() else {
        return Err(PgError::NoBackup);
    };
    if let RecoveryTarget::Time(t) = &opts.target {
        if end_time(oldest) > *t {
            return Err(PgError::Refused(format!(
                "the target time {} is before the end of the oldest backup ({}), so no backup can reach it",
                humantime::format_rfc3339_micros(*t),
                crate::meta::real_end(oldest)
            )));
        }
        return backups
            .into_iter()
            .rev()
            .find(|b| end_time(b) <= *t)
            .ok_or_else(|| PgError::Refused("no backup ends before the target time".into()));
    }
    backups.into_iter().next_back().ok_or(PgError::NoBackup)
}

/// A time as PostgreSQL's `recovery_target_time` takes it:
/// `2026-11-24 10:00:00.123456+00` (it refuses the `T…Z` form).
pub fn pg_timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_micros(t).to_string();
    format!("{}+00", s.trim_end_matches('Z').replacen('T', " ", 1))
}

/// `v` as a value of `postgresql.conf` (and `postgresql.auto.conf`): in
/// single quotes, a quote doubled.
pub fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The recovery settings for `postgresql.auto.conf`.
pub fn recovery_settings(opts: &PgRestoreOptions) -> Vec<(String, String)> {
    let mut s = vec![(
        "restore_command".to_string(),
        conf_quote(&opts.restore_command),
    )];
    match &opts.target {
        RecoveryTarget::End => {}
        RecoveryTarget::Immediate => s.push(("recovery_target".into(), conf_quote("immediate"))),
        RecoveryTarget::Time(t) => {
            s.push(("recovery_target_time".into(), conf_quote(&pg_timestamp(*t))))
        }
        RecoveryTarget::Lsn(l) => {
            s.push(("recovery_target_lsn".into(), conf_quote(&l.to_string())))
        }
        RecoveryTarget::Xid(x) => {
            s.push(("recovery_target_xid".into(), conf_quote(&x.to_string())))
        }
        RecoveryTarget::Name(n) => s.push(("recovery_target_name".into(), conf_quote(n))),
    }
    if opts.target != RecoveryTarget::End && !opts.standby {
        s.push((
            "recovery_target_action".into(),
            conf_quote(&opts.target_action),
        ));
    }
    let timeline = match (&opts.target_timeline, &opts.target) {
        (Some(t), _) => Some(t.clone()),
        (None, RecoveryTarget::Immediate) => Some("current".to_string()),
        _ => None,
    };
    if let Some(t) = timeline {
        s.push(("recovery_target_timeline".into(), conf_quote(&t)));
    }
    if let Some(c) = &opts.primary_conninfo {
        s.push(("primary_conninfo".into(), conf_quote(c)));
    }
    if opts.archive_mode == ArchiveMode::Off {
        s.push(("archive_mode".into(), conf_quote("off")));
    }
    s
}

/// Keys lifeboat writes; older settings of these names are commented out.
const RECOVERY_KEYS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
    "primary_conninfo",
];

fn write_auto_conf(pgdata: &Path, settings: &[(String, String)], label: &str) -> Result<()> {
    let path = pgdata.join("postgresql.auto.conf");
    let old = fs::read_to_string(&path).unwrap_or_default();
    let mut out = String::new();
    for line in old.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        // The recovery keys always; others (archive_mode) only when this
        // restore sets them: `--archive-mode preserve` keeps the source's.
        if RECOVERY_KEYS.contains(&key) || settings.iter().any(|(k, _)| k == key) {
            out.push_str(&format!(
                "# Removed by lifeboat restore of {label}: {line}\n"
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "# Recovery settings written by lifeboat restore of {label}\n"
    ));
    for (k, v) in settings {
        out.push_str(&format!("{k} = {v}\n"));
    }
    write_durably(&path, out.as_bytes(), "write")
}

/// Writes a whole file of the data directory crash-safely (temporary file,
/// fsync, rename, fsync of the directory): a crash leaves the old file or
/// the new one, never a torn one. The file it replaces keeps its
/// permissions; a new one is the owner's alone, as PostgreSQL's own files.
fn write_durably(path: &Path, data: &[u8], op: &'static str) -> Result<()> {
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0o600, |m| m.permissions().mode() & 0o7777);
    lifeboat_repo::durable::write_file(path, data, mode).map_err(|e| PgError::io(op, path, e))
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PgRestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// The source it was taken from (its config name): whose erasure
    /// ledger applies.
    pub source: String,
    /// Files and bytes written.
    pub stats: RestoreStats,
    /// The recovery settings written.
    pub settings: Vec<(String, String)>,
}

/// Restores a base backup into `opts.pgdata` and sets up recovery.
///
/// `global/pg_control` is written last, after everything else is synced: a
/// restore that fails or is killed leaves a directory PostgreSQL refuses to
/// start, and `--delta` (which first removes `pg_control`) finishes it.
pub fn restore(
    repo: &Repository,
    opts: &PgRestoreOptions,
    progress: &dyn Progress,
) -> Result<PgRestoreReport> {
    let pgdata = &opts.pgdata;
    if pgdata.join("postmaster.pid").exists() {
        return Err(PgError::ServerRunning {
            pgdata: pgdata.clone(),
        });
    }
    let non_empty = has_entries(pgdata);
    if non_empty && !opts.delta {
        return Err(PgError::TargetNotEmpty {
            pgdata: pgdata.clone(),
        });
    }
    let entry = choose_snapshot(repo, opts)?;
    crate::timelines::check_target(repo, &entry, opts)?;
    let spaces = tablespace_locations(&entry, opts)?;
    entry.snapshot.item(PG_CONTROL).ok_or_else(|| {
        PgError::Repo(lifeboat_repo::RepoError::Corrupt {
            key: lifeboat_repo::ObjectKey::Snapshot(entry.id).to_string(),
            reason: format!("the backup holds no {PG_CONTROL}"),
        })
    })?;
    let incomplete = |cause: PgError| PgError::RestoreIncomplete {
        pgdata: pgdata.display().to_string(),
        cause: Box::new(cause),
    };
    if non_empty {
        // First of all: from here until the end the directory must not be
        // startable.
        let control_path = pgdata.join(PG_CONTROL);
        match fs::remove_file(&control_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io("remove", &control_path, e)),
        }
        // Delta: what the backup does not hold goes, the rest is rewritten.
        let keep: std::collections::HashSet<&str> = entry
            .snapshot
            .nodes
            .iter()
            .map(|n| n.path.as_str())
            .collect();
        remove_extra(pgdata, pgdata, &keep).map_err(incomplete)?;
    }
    let stats = repo
        .restore(
            &entry.snapshot,
            &RepoRestore {
                target: pgdata.clone(),
                exclude: vec![PG_CONTROL.to_string()],
                relocate: spaces
                    .iter()
                    .map(|(oid, loc)| (format!("pg_tblspc/{oid}"), loc.clone()))
                    .collect(),
                overwrite: if non_empty {
                    Overwrite::Always
                } else {
                    Overwrite::Refuse
                },
                ..Default::default()
            },
            progress,
        )
        .map_err(|e| incomplete(e.into()))?;
    let settings = recovery_settings(opts);
    let finish = || -> Result<()> {
        let archive_status = pgdata.join("pg_wal/archive_status");
        fs::create_dir_all(&archive_status)
            .map_err(|e| PgError::io("create", &archive_status, e))?;
        fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::io("set mode of", pgdata, e))?;
        link_tablespaces(pgdata, &spaces)?;
        write_auto_conf(pgdata, &settings, &entry.id.short())?;
        let marker = pgdata.join(RESTORE_MARKER);
        if opts.archive_mode == ArchiveMode::Preserve {
            let record = crate::timelines::RestoreRecord::new(&entry, opts)?;
            let text = serde_json::to_vec_pretty(&record).unwrap_or_default();
            write_durably(&marker, &text, "write")?;
        } else {
            let _ = fs::remove_file(&marker);
        }
        let signal = pgdata.join(if opts.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        });
        write_durably(&signal, b"", "create")?;
        // Everything belongs to the cluster's owner, like PG_VERSION in the backup.
        if let Some(owner) = entry
            .snapshot
            .nodes
            .iter()
            .find(|n| n.path == "PG_VERSION" && n.kind == NodeKind::File)
            .map(|n| (n.uid, n.gid))
        {
            chown_tree(pgdata, owner)?;
            for (_, loc) in &spaces {
                chown_tree(loc, owner)?;
            }
        }
        write_control(repo, &entry, pgdata, &spaces)
    };
    finish().map_err(incomplete)?;
    Ok(PgRestoreReport {
        snapshot: entry.id.to_hex(),
        source: entry.snapshot.source_name.clone(),
        stats,
        settings,
    })
}

/// Restores `global/pg_control` from the backup: the last file, once
/// everything else is durable (the tablespaces' file systems are synced
/// here; the data directory's by the restore of this file, before it gives
/// the file its name).
fn write_control(
    repo: &Repository,
    entry: &SnapshotEntry,
    pgdata: &Path,
    spaces: &[(String, PathBuf)],
) -> Result<()> {
    for (_, loc) in spaces {
        lifeboat_repo::sync_filesystem(loc)?;
    }
    repo.restore(
        &entry.snapshot,
        &RepoRestore {
            target: pgdata.to_path_buf(),
            include: vec![PG_CONTROL.to_string()],
            overwrite: Overwrite::Always,
            page_cache: true,
            ..Default::default()
        },
        &lifeboat_repo::NoProgress,
    )?;
    Ok(())
}

/// Where each tablespace of the backup goes: its old location, or the one
/// `--tablespace-map` gives. Refuses unknown mappings and (without
/// `--delta`) locations that are not empty, before anything is written.
fn tablespace_locations(
    entry: &SnapshotEntry,
    opts: &PgRestoreOptions,
) -> Result<Vec<(String, PathBuf)>> {
    let mut spaces: Vec<(String, PathBuf)> = crate::meta::BackupMeta::of(entry)?
        .tablespaces
        .into_iter()
        .map(|t| (t.oid, PathBuf::from(t.location)))
        .collect();
    for (old, new) in &opts.tablespace_map {
        let old_path = Path::new(old.trim_end_matches('/'));
        let Some(space) = spaces
            .iter_mut()
            .find(|(oid, loc)| oid == old || loc.as_path() == old_path)
        else {
            let known: Vec<String> = spaces
                .iter()
                .map(|(oid, loc)| format!("{oid} ({})", loc.display()))
                .collect();
            return Err(PgError::Refused(format!(
                "--tablespace-map {old}=…: backup {} has no tablespace {old}; its tablespaces are: {}",
                entry.id.short(),
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )));
        };
        if !new.is_absolute() {
            return Err(PgError::Refused(format!(
                "--tablespace-map …={}: give the new directory as an absolute path",
                new.display()
            )));
        }
        space.1 = new.clone();
    }
    for (oid, loc) in &spaces {
        if has_entries(loc) && !opts.delta {
            return Err(PgError::Refused(format!(
                "the directory of tablespace {oid}, {}, is not empty (a running cluster may use it); restore it elsewhere with --tablespace-map {}=NEW_DIR, or pass --delta",
                loc.display(),
                loc.display()
            )));
        }
    }
    Ok(spaces)
}

/// Links `pg_tblspc/<oid>` to each tablespace's directory and writes
/// `tablespace_map` to match (PostgreSQL remakes the links from it when
/// recovery starts).
fn link_tablespaces(pgdata: &Path, spaces: &[(String, PathBuf)]) -> Result<()> {
    if spaces.is_empty() {
        return Ok(());
    }
    let dir = pgdata.join("pg_tblspc");
    fs::create_dir_all(&dir).map_err(|e| PgError::io("create", &dir, e))?;
    let mut map = String::new();
    for (oid, loc) in spaces {
        fs::create_dir_all(loc).map_err(|e| PgError::io("create", loc, e))?;
        fs::set_permissions(loc, fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::io("set mode of", loc, e))?;
        let link = dir.join(oid);
        match fs::symlink_metadata(&link) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&link),
            Ok(_) => fs::remove_file(&link),
            Err(_) => Ok(()),
        }
        .map_err(|e| PgError::io("replace", &link, e))?;
        std::os::unix::fs::symlink(loc, &link).map_err(|e| PgError::io("link", &link, e))?;
        map.push_str(&format!("{oid} {}\n", loc.display()));
    }
    let path = pgdata.join("tablespace_map");
    if path.exists() {
        write_durably(&path, map.as_bytes(), "write")?;
    }
    Ok(())
}

/// True when `dir` exists and holds anything.
fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn remove_extra(root: &Path, dir: &Path, keep: &std::collections::HashSet<&str>) -> Result<()> {
    for e in fs::read_dir(dir).map_err(|e| PgError::io("list", dir, e))? {
        let e = e.map_err(|e| PgError::io("list", dir, e))?;
        let path = e.path();
        let rel = lifeboat_repo::name::encode(
            path.strip_prefix(root)
                .map(|p| p.as_os_str().as_bytes())
                .unwrap_or_default(),
        );
        let rel = rel.as_str();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if keep.contains(rel) {
            if is_dir {
                remove_extra(root, &path, keep)?;
            }
        } else if is_dir {
            fs::remove_dir_all(&path).map_err(|e| PgError::io("remove", &path, e))?;
        } else {
            fs::remove_file(&path).map_err(|e| PgError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, owner: (u32, u32)) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)) {
        Ok(()) => {}
        // Unprivileged restores keep the restorer as owner.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) => return Err(PgError::io("chown", path, e)),
    }
    if fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        for e in fs::read_dir(path).map_err(|e| PgError::io("list", path, e))? {
            let e = e.map_err(|e| PgError::io("list", path, e))?;
            chown_tree(&e.path(), owner)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times_in_utc_parse_and_others_are_refused() {
        let a = parse_target_time("2026-11-24T10:00:00Z").unwrap();
        let b = parse_target_time("2026-11-24 10:00:00+00").unwrap();
        assert_eq!(a, b);
        assert!(parse_target_time("yesterday").is_err());
        assert_eq!(pg_timestamp(a), "2026-11-24 10:00:00.000000+00");
        assert_eq!(parse_target_time(&pg_timestamp(a)).unwrap(), a);
    }

    #[test]
    fn preserve_keeps_the_sources_archive_mode_and_off_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.auto.conf");
        let original = "archive_mode = 'on'\narchive_command = 'x %p'\n";
        let mut opts = PgRestoreOptions {
            archive_mode: ArchiveMode::Preserve,
            ..PgRestoreOptions::new(
                dir.path().to_path_buf(),
                "lifeboat pg wal-fetch %f %p".into(),
            )
        };
        fs::write(&conf, original).unwrap();
        write_auto_conf(dir.path(), &recovery_settings(&opts), "x").unwrap();
        let kept = fs::read_to_string(&conf).unwrap();
        assert!(kept.lines().any(|l| l == "archive_mode = 'on'"), "{kept}");
        opts.archive_mode = ArchiveMode::Off;
        fs::write(&conf, original).unwrap();
        write_auto_conf(dir.path(), &recovery_settings(&opts), "x").unwrap();
        let off = fs::read_to_string(&conf).unwrap();
        assert!(!off.lines().any(|l| l == "archive_mode = 'on'"), "{off}");
        assert!(off.lines().any(|l| l == "archive_mode = 'off'"), "{off}");
        assert!(
            off.lines().any(|l| l == "archive_command = 'x %p'"),
            "{off}"
        );
    }

    #[test]
    fn settings_quote_values_and_name_the_target() {
        let opts = PgRestoreOptions {
            target: RecoveryTarget::Name("before 'drop'".into()),
            ..PgRestoreOptions::new(PathBuf::from("/x"), "lifeboat pg wal-fetch %f %p".into())
        };
        let s = recovery_settings(&opts);
        assert!(s.contains(&("recovery_target_name".into(), "'before ''drop'''".into())));
        assert!(s.contains(&("recovery_target_action".into(), "'promote'".into())));
    }
}
