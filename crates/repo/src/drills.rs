//! Drill history: one record per restore drill — each source's latest
//! backup restored into a sandbox and checked, with the RTO and RPO
//! measured against the source's targets. Stored as
//! `drills/<start ms>-<id>`, a sealed JSON document like job records
//! (`docs/format.md` "Drill records"), so every host sees every drill and an
//! auditor gets the history from the repository itself.

use serde::{Deserialize, Serialize};

use crate::format::MAGIC_DRILL;
use crate::keys::{FileType, ObjectKey};
use crate::sessions::random_id;
use crate::{Repository, Result};
use lifeboat_types::Timestamp;

/// The drill record version this build writes and reads.
pub const DRILL_VERSION: u32 = 1;

/// One check of a source's drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheck {
    /// What was checked: `restore`, `recovery`, `pg_amcheck`, `rows
    /// public.users`, `keys db0`, `files`, `erasure ledger`, `rto`, `rpo`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// One source's drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceDrill {
    /// The source's name.
    pub source: String,
    /// The snapshot kind drilled: `postgres`, `pg_dump`, `redis`, `files`.
    pub kind: String,
    /// The snapshot restored (hex id).
    pub snapshot: String,
    /// When that backup was taken.
    pub snapshot_time: Timestamp,
    /// Every check passed (and the RTO and RPO within their targets).
    pub passed: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<DrillCheck>,
    /// Restoring the files, ms.
    pub restore_ms: u64,
    /// Recovery or loading after that, ms.
    pub recovery_ms: u64,
    /// Restore and recovery: the measured recovery time.
    pub rto_ms: u64,
    /// The source's RTO target, seconds.
    pub rto_target_s: u64,
    /// The newest point the restore reached, against the drill's start,
    /// seconds: the data a loss now would cost.
    #[serde(default)]
    pub rpo_s: Option<u64>,
    /// The source's RPO target, seconds.
    pub rpo_target_s: u64,
    /// The newest point the restore reached.
    #[serde(default)]
    pub recovered_to: Option<Timestamp>,
    /// Bytes restored.
    pub bytes: u64,
    /// The server's version, when a server ran.
    #[serde(default)]
    pub version: Option<String>,
    /// Why the drill could not finish, if it could not.
    #[serde(default)]
    pub error: Option<String>,
}

/// One drill run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Document version.
    pub version: u32,
    /// A random id (hex).
    pub id: String,
    /// `local`, or `region-loss` (from a replica).
    pub scenario: String,
    /// The repository the backups were restored from (its location).
    pub repository: String,
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub finished: Timestamp,
    /// The host it ran on.
    pub host: String,
    /// The OS user who ran it.
    pub user: String,
    /// `manual` or `schedule`.
    pub trigger: String,
    /// Every source passed.
    pub passed: bool,
    /// Each source's drill.
    pub sources: Vec<SourceDrill>,
}

impl DrillRecord {
    /// A new record with a fresh id, started now.
    pub fn new(
        scenario: &str,
        repository: &str,
        host: &str,
        user: &str,
        trigger: &str,
    ) -> Result<Self> {
        let now = Timestamp::now();
        Ok(DrillRecord {
            version: DRILL_VERSION,
            id: random_id()?,
            scenario: scenario.to_string(),
            repository: repository.to_string(),
            started: now,
            finished: now,
            host: host.to_string(),
            user: user.to_string(),
            trigger: trigger.to_string(),
            passed: false,
            sources: Vec::new(),
        })
    }

    /// Its name under `drills/`.
    pub fn name(&self) -> String {
        format!("{:014}-{}", self.started.as_millisecond().max(0), self.id)
    }
}

impl Repository {
    /// Stores a drill record; returns its key.
    pub fn record_drill(&self, record: &DrillRecord) -> Result<String> {
        let name = record.name();
        let key = ObjectKey::Drill(&name).to_string();
        self.put_document(&key, MAGIC_DRILL, record)?;
        Ok(key)
    }

    /// Every drill record, oldest first; one that does not read is skipped
    /// with a warning (a history is not worth failing a listing over).
    pub fn drills(&self) -> Result<Vec<DrillRecord>> {
        let mut out = Vec::new();
        for (key, r) in self.documents::<DrillRecord>(FileType::Drill, MAGIC_DRILL)? {
            match r {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable drill record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_document_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<DrillRecord>(&bytes);
        }
    }
}
