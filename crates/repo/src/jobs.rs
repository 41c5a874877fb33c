//! Job history: one record per run of a scheduled (or recorded) job —
//! backup, forget, verify — kept in the repository so that every host using
//! it sees every run. Stored as `jobs/<start>-<id>`, a sealed JSON document
//! like sessions and holds (`docs/format.md` "Job records"); the start time
//! in the key (milliseconds since the Unix epoch, 14 digits) lets a listing
//! sort and trim the history without reading it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::format::MAGIC_JOB;
use crate::keys::{FileType, ObjectKey};
use crate::sessions::{random_id, seal_document};
use crate::{Repository, Result};
use lifeboat_types::Timestamp;

/// The job record version this build writes and reads.
pub const JOB_VERSION: u32 = 1;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    /// It did what it was for.
    Success,
    /// It failed; the record says why.
    Failed,
    /// It was due while its previous run was still going, and did not run.
    Skipped,
    /// It was stopped (the agent shutting down past its grace period).
    Cancelled,
    /// It ran past its timeout and was stopped.
    Timeout,
}

impl JobOutcome {
    /// The word used in listings, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Timeout => "timeout",
        }
    }

    /// True for the outcomes that count as a failed run: failed, or past
    /// its timeout. Not skipped, and not cancelled (the agent stopping: a
    /// `systemctl restart` during a long backup must not page anyone; a
    /// backup missing because of it still ages into "too old").
    pub fn is_failure(self) -> bool {
        matches!(self, JobOutcome::Failed | JobOutcome::Timeout)
    }
}

/// One run of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Document version.
    pub version: u32,
    /// The run's random id (hex).
    pub id: String,
    /// The job: `postgres.main.full`, `redis.cache.backup`,
    /// `repository.forget`.
    pub job: String,
    /// The source's kind (`postgres`, `redis`, `files`); none for the
    /// repository's own jobs.
    #[serde(default)]
    pub source_kind: Option<String>,
    /// The source's config name.
    #[serde(default)]
    pub source: Option<String>,
    /// `full`, `incr`, `dump`, `backup`, `forget`, `verify`.
    pub job_type: String,
    /// What started it: `schedule`, `catch-up`, `retry`, `manual`.
    pub trigger: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The host it ran on.
    pub hostname: String,
    /// The fire time it was due at, for scheduled runs.
    #[serde(default)]
    pub scheduled: Option<Timestamp>,
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub finished: Timestamp,
    /// How it ended.
    pub outcome: JobOutcome,
    /// For failures: `transient`, `failure`, `usage`, `damage`.
    #[serde(default)]
    pub error_class: Option<String>,
    /// For failures: the error message (secrets redacted).
    #[serde(default)]
    pub error: Option<String>,
    /// Bytes read from the source.
    #[serde(default)]
    pub bytes_read: Option<u64>,
    /// Bytes added to the repository.
    #[serde(default)]
    pub bytes_stored: Option<u64>,
    /// The logical size of what the backup holds.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The snapshot it made (hex).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// For verify: the part of the data it read (`3/7`, `10%`, `all`); the
    /// next scheduled verify goes on from it.
    #[serde(default)]
    pub subset: Option<String>,
}

impl JobRecord {
    /// A record of a run of `job` that started at `started`, with a new id;
    /// the caller fills in the rest.
    pub fn new(job: &str, job_type: &str, started: Timestamp) -> Result<JobRecord> {
        Ok(JobRecord::with_id(job, job_type, started, random_id()?))
    }

    /// [`JobRecord::new`] with the id given (when no random one can be had).
    pub fn with_id(job: &str, job_type: &str, started: Timestamp, id: String) -> JobRecord {
        JobRecord {
            version: JOB_VERSION,
            id,
            job: job.to_string(),
            source_kind: None,
            source: None,
            job_type: job_type.to_string(),
            trigger: "manual".to_string(),
            attempt: 1,
            hostname: crate::sessions::hostname(),
            scheduled: None,
            started,
            finished: started,
            outcome: JobOutcome::Success,
            error_class: None,
            error: None,
            bytes_read: None,
            bytes_stored: None,
            size_bytes: None,
            snapshot: None,
            subset: None,
        }
    }

    /// How long it ran, in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.finished
            .duration_since(self.started)
            .as_secs_f64()
            .max(0.0)
    }

    /// The storage key: `jobs/<start ms, 14 digits>-<id>`.
    pub fn key(&self) -> String {
        ObjectKey::Job(&job_name(self.started, &self.id)).to_string()
    }
}

fn job_name(started: Timestamp, id: &str) -> String {
    format!("{:014}-{id}", started.as_millisecond().max(0))
}

/// When the run whose key is `key` started, from the key alone.
pub fn started_of_key(key: &str) -> Option<Timestamp> {
    let name = key.strip_prefix(FileType::Job.prefix())?;
    let ms: i64 = name.split('-').next()?.parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

impl Repository {
    /// Stores `record`; returns its key.
    pub fn record_job(&self, record: &JobRecord) -> Result<String> {
        let key = record.key();
        let obj = seal_document(&self.inner, MAGIC_JOB, record)?;
        self.inner
            .block(self.inner.storage.put(&key, Bytes::from(obj)))?;
        Ok(key)
    }

    /// The keys of every job record, oldest first.
    pub fn job_keys(&self) -> Result<Vec<String>> {
        let mut keys = self.job_keys_under(FileType::Job.prefix())?;
        keys.sort();
        Ok(keys)
    }

    /// The keys of the records under `prefix`, as listed.
    fn job_keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .block(self.inner.storage.list(prefix))?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// The keys of the records of runs started at or after `from` (and a
    /// few hours of a later clock), sorted. Keys sort by start time, so
    /// only the stretch asked for is listed — by key prefix, one listing
    /// per 10⁷ ms (2.8 h) — not a history of months; a stretch longer than
    /// a week is listed whole.
    pub fn job_keys_since(&self, from: Timestamp) -> Result<Vec<String>> {
        const BLOCK: i64 = 10_000_000;
        let first = from.as_millisecond().max(0) / BLOCK;
        let last = Timestamp::now().as_millisecond().max(0) / BLOCK + 1;
        if last - first > 60 {
            let mut keys = self.job_keys()?;
            keys.retain(|k| started_of_key(k).is_some_and(|t| t >= from));
            return Ok(keys);
        }
        let mut keys: Vec<String> = Vec::new();
        for block in first..=last {
            // Start times are 14 digits of ms: the first 7 name the block.
            let prefix = format!("{}{block:07}", FileType::Job.prefix());
            keys.extend(
                self.job_keys_under(&prefix)?
                    .into_iter()
                    .filter(|k| started_of_key(k).is_some_and(|t| t >= from)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    /// The records stored under `keys`, in that order; one removed since
    /// the listing is left out, one that does not decode is skipped with a
    /// warning (a history is not worth failing a status page over).
    pub fn read_jobs(&self, keys: &[String]) -> Result<Vec<JobRecord>> {
        let mut out = Vec::with_capacity(keys.len());
        for (key, bytes) in keys.iter().zip(self.get_many(keys)) {
            match bytes {
                Ok(b) => match self.decode_document::<JobRecord>(key, MAGIC_JOB, &b) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "skipping an unreadable job record")
                    }
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Every job record, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        let keys = self.job_keys()?;
        self.read_jobs(&keys)
    }

    /// Deletes the records of runs that started before `cutoff` (by their
    /// keys); returns how many.
    pub fn trim_jobs(&self, cutoff: Timestamp) -> Result<usize> {
        let mut n = 0;
        for key in self.job_keys()? {
            if started_of_key(&key).is_some_and(|t| t < cutoff) {
                match self.inner.block(self.inner.storage.delete(&key)) {
                    Ok(()) => n += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_start_and_give_it_back() {
        let t1 = Timestamp::from_second(1_700_000_000).unwrap();
        let t2 = Timestamp::from_second(1_800_000_000).unwrap();
        let a = job_name(t1, "ff");
        let b = job_name(t2, "00");
        assert!(a < b);
        let key = format!("jobs/{a}");
        assert_eq!(started_of_key(&key), Some(t1));
        assert_eq!(started_of_key("jobs/garbage"), None);
        assert_eq!(started_of_key("snapshots/00"), None);
    }

    #[test]
    fn a_record_reads_back_from_json_with_fields_it_lacks() {
        let json = r#"{"version":1,"id":"ab","job":"postgres.main.full","job_type":"full",
            "trigger":"schedule","attempt":1,"hostname":"h","started":"2026-11-28T02:00:00Z",
            "finished":"2026-11-28T02:05:00Z","outcome":"failed","error":"boom"}"#;
        let r: JobRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.outcome, JobOutcome::Failed);
        assert_eq!(r.duration_seconds(), 300.0);
        assert_eq!(r.snapshot, None);
        assert!(r.outcome.is_failure());
        assert!(!JobOutcome::Cancelled.is_failure());
    }
}
