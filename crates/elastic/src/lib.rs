//! Elasticsearch and OpenSearch backups into a lifeboat repository, through
//! the cluster's own snapshot API (the only consistent way to back up a live
//! cluster: copying data directories is not).
//!
//! - [`backup()`]: a snapshot named `lifeboat-<source>-<UTC time>`, counted
//!   only when the cluster reports `SUCCESS` with no failed shard and every
//!   asked index; a red cluster, a closed index, a snapshot already running,
//!   a repository that fails `_verify` and an unreachable node are refused
//!   by name. Two modes ([`Mode`]): **ingest** stores the staging `fs`
//!   repository's files in the lifeboat repository (deduplicated,
//!   compressed, encrypted; the staging repository trimmed through the
//!   delete-snapshot API), **orchestrate** records snapshots the cluster
//!   keeps in a repository of its own.
//! - [`restore()`]: the snapshot's files staged and registered read-only
//!   (ingest), restored through the API with renames, `--replace` closing
//!   what it restores over, then waited for (yellow) and its document
//!   counts compared with those recorded.
//! - [`delete_remote`]: what forget calls for an orchestrate snapshot.
//! - [`client`]: the REST client; [`cluster`]: the calls, typed;
//!   [`meta`]: what a snapshot records; [`names`]: snapshot names, index
//!   patterns, renames.
#![deny(missing_docs)]

mod backup;
pub mod client;
pub mod cluster;
mod error;
pub mod meta;
pub mod names;
mod restore;

pub use backup::{
    backup, staging_location, EsBackupOptions, EsBackupOutcome, REPOSITORY_ITEM, SNAPSHOT_ITEM,
    SOURCE_KIND, STAGING_REPOSITORY_DIR,
};
pub use client::{Auth, Connection};
pub use error::{ElasticError, Result};
pub use meta::{EsMeta, IndexRecord, Mode};
pub use restore::{restore, EsRestoreOptions, EsRestoreReport, RestoredIndex};

/// Deletes the cluster's copy of an orchestrate snapshot (what `forget`
/// does before it drops the record); ingest snapshots hold their data in
/// the lifeboat repository and need nothing here.
pub fn delete_remote(conn: &Connection, meta: &EsMeta) -> Result<()> {
    if meta.mode != Mode::Orchestrate {
        return Ok(());
    }
    let c = client::Client::new(conn)?;
    // Only the cluster that took it: another one answering "no such
    // snapshot" would let the record go while the copy stays.
    let info = cluster::info(&c)?;
    if !meta.cluster.cluster_uuid.is_empty() && info.cluster_uuid != meta.cluster.cluster_uuid {
        return Err(ElasticError::Refused(format!(
            "{} is cluster {} ({}), not {} ({}) that took snapshot {}: point the source's url at that cluster",
            c.target(),
            info.cluster_name,
            info.cluster_uuid,
            meta.cluster.cluster_name,
            meta.cluster.cluster_uuid,
            meta.snapshot
        )));
    }
    cluster::delete_snapshot(&c, &meta.repository, &meta.snapshot)
}
