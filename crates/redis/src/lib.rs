//! Redis backups into a lifeboat repository.
//!
//! - [`backup()`]: the RDB pulled over the replication protocol (`SYNC`, as
//!   `redis-cli --rdb` does), so the server's files need not be reachable;
//!   both framings (`$<length>` and the diskless `$EOF:<mark>`), checked
//!   (magic, version, EOF opcode, CRC-64) before the snapshot is recorded.
//! - [`restore()`]: `dump.rdb` (and the AOF files) written into a directory
//!   a server starts on; `lifeboat_scenarios::sandbox::redis` proves it.
//! - [`restore_to_url`]: the backup loaded into a live server key by key
//!   with `RESTORE` (TTLs kept), from [`keys`], which reads an RDB key by key.
//! - [`resp`]: a small blocking RESP client; [`rdb`]: the RDB checks;
//!   [`url`]: `redis://` URLs.
#![deny(missing_docs)]

mod backup;
mod error;
pub mod keys;
pub mod meta;
pub mod rdb;
pub mod resp;
mod restore;
pub mod url;

pub use backup::{backup, keyspace, Keyspace, RedisBackupOptions, RDB_ITEM, SOURCE_KIND};
pub use error::{RedisError, Result};
pub use restore::{
    restore, restore_to_url, LoadReport, RedisRestoreOptions, RedisRestoreReport, AOF_DIR,
};
