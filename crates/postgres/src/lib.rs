//! PostgreSQL physical backups, continuous WAL archiving and point-in-time
//! recovery, stored in a lifeboat repository.
//!
//! This crate knows PostgreSQL and nothing of packs, S3 or keys: it streams a
//! data directory into [`lifeboat_repo::Repository::backup_tree`] with a
//! [`layout::DataDirPolicy`], and WAL files into the repository's named
//! objects.
//!
//! Roles of the modules:
//! - [`session`]: one connection kept for a whole backup (the non-exclusive
//!   backup API ties the backup to it), server facts, start/stop.
//! - [`layout`]: which files a base backup copies, page-aligned chunking of
//!   relation files, page checksum verification, the unchanged-file rule.
//! - [`checksum`]: PostgreSQL's data page checksum.
//! - [`wal`]: LSNs, timelines, WAL file names.
//! - [`archive`]: `wal-push` and `wal-fetch` for `archive_command` and
//!   `restore_command`.
//! - [`inspect`]: `pg info` (backups, the archive per timeline, the
//!   recoverable window) and `pg check` (is a cluster archiving here).
//! - [`expire`]: WAL expiry: what the kept backups and the
//!   point-in-time-recovery window need, and deleting the rest.
//! - [`timelines`]: the archive's timelines, where each branched and which
//!   restore made it; the refusal of a target two histories could reach.
//! - [`server`]: running the distribution's PostgreSQL on a local data
//!   directory (initdb, pg_ctl, waiting for recovery).
//! - [`backup()`]: `pg backup`, from `pg_backup_start` to the WAL wait.
//! - [`dump`]: `pg dump` and `pg restore-dump`: logical backups through
//!   pg_dump, pg_dumpall and pg_restore.
#![deny(missing_docs)]

pub mod archive;
mod backup;
pub mod checksum;
pub mod custom;
pub mod dump;
pub mod erase;
mod error;
pub mod expire;
pub mod inspect;
pub mod layout;
pub mod meta;
mod process;
mod restore;
pub mod server;
pub mod session;
pub mod timelines;
pub mod wal;

pub use backup::{backup, BackupOptions, SOURCE_KIND};
pub use error::{PgError, Result};
pub use restore::{
    choose_snapshot, conf_quote, parse_target_time, pg_timestamp, recovery_settings, restore,
    ArchiveMode, PgRestoreOptions, PgRestoreReport, RecoveryTarget, RESTORE_MARKER,
};
