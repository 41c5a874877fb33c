//! "Are we protected?": the status of every source, the shape `lifeboat
//! status --json`, `GET /api/status` and the status page share.

use jiff::Timestamp;
use serde::Serialize;

/// The whole status at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// When it was computed.
    pub generated: Timestamp,
    /// The host the agent (or the command) runs on.
    pub hostname: String,
    /// lifeboat's version.
    pub version: String,
    /// Whether the repository answered.
    pub repository_up: bool,
    /// Every configured source, in config order (PostgreSQL, Redis, ...).
    pub sources: Vec<SourceStatus>,
    /// Every scheduled job.
    pub jobs: Vec<JobStatus>,
    /// Alerts firing now.
    pub alerts: Vec<AlertStatus>,
    /// The most recent job runs, newest first.
    pub recent: Vec<RunSummary>,
    /// Every replica: up or down, and how far behind.
    pub replicas: Vec<ReplicaView>,
    /// What the backups cost, once measured (`lifeboat cost`).
    pub cost: Option<CostView>,
    /// The current data-key epoch's age and the rotation policy.
    pub key_epoch: Option<KeyEpochView>,
}

/// The data key as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyEpochView {
    /// How old the current data-key epoch is.
    pub age_seconds: f64,
    /// `[repository] rotate_after`, when set.
    pub rotate_after_seconds: Option<f64>,
}

/// One replica as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaView {
    /// Its name.
    pub name: String,
    /// Its store answered the canary; `None`: not measured yet.
    pub up: Option<bool>,
    /// The age of the oldest object of the primary it lacks.
    pub lag_seconds: Option<f64>,
}

/// What the backups cost, from the last `lifeboat cost --json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CostView {
    /// Where the prices come from.
    pub prices_source: String,
    /// Per repository (`default`, then replicas): dollars a month and
    /// bytes.
    pub repositories: Vec<(String, f64, u64)>,
    /// Dollars a month, every repository.
    pub monthly_total: f64,
    /// What plain compressed dumps of every backup kept would cost a month.
    pub baseline_monthly: f64,
    /// How many times less the repository stores than those dumps.
    pub baseline_ratio: f64,
    /// When it was measured.
    pub measured: Timestamp,
}

impl Status {
    /// This status with every message a job or an alert wrote passed
    /// through [`crate::redact`]: the reasons, failures' errors, alerts'
    /// summaries and labels, the job log's errors. What `GET /api/status`
    /// and the status page show (job records are redacted when stored;
    /// this also covers older records and messages from elsewhere).
    pub fn redacted(&self) -> Status {
        let mut s = self.clone();
        for src in &mut s.sources {
            src.reason = crate::redact(&src.reason);
            if let Some(f) = &mut src.last_failure {
                f.error = crate::redact(&f.error);
            }
        }
        for a in &mut s.alerts {
            a.summary = crate::redact(&a.summary);
            for v in a.labels.values_mut() {
                *v = crate::redact(v);
            }
        }
        for r in &mut s.recent {
            if let Some(e) = &mut r.error {
                *e = crate::redact(e);
            }
        }
        s
    }
}

/// Green, amber or red.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The newest good backup is inside the RPO and the last run succeeded.
    Green,
    /// Inside the RPO, but the last run failed or the RPO is close (over
    /// 80 % used).
    Amber,
    /// No good backup inside the RPO.
    Red,
}

/// One source's protection.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    /// `postgres`, `redis`, `files`, `elasticsearch`.
    pub kind: String,
    /// The config name.
    pub name: String,
    /// Its badge.
    pub health: Health,
    /// Why the badge is what it is, in a few words ("last backup 3 h ago",
    /// "last run failed: ...", "no backup yet").
    pub reason: String,
    /// The recovery point objective: the age the newest good backup must
    /// stay under, in seconds.
    pub rpo_seconds: u64,
    /// The newest good backup of any type.
    pub last_good: Option<BackupPoint>,
    /// The last failed run, when it is newer than the last good one.
    pub last_failure: Option<FailurePoint>,
    /// When the next backup of this source is due.
    pub next_run: Option<Timestamp>,
    /// PostgreSQL: seconds since the newest WAL segment reached the
    /// repository.
    pub wal_age_seconds: Option<f64>,
    /// PostgreSQL: how far the archiver is behind, in seconds.
    pub wal_archiver_lag_seconds: Option<f64>,
    /// Good backups of the last 90 days, oldest first: the charts.
    pub history: Vec<BackupPoint>,
}

/// One good backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupPoint {
    /// `full`, `incr`, `dump`, `backup`.
    #[serde(rename = "type")]
    pub ty: String,
    /// When it ended.
    pub time: Timestamp,
    /// Its age at [`Status::generated`], in seconds.
    pub age_seconds: f64,
    /// What it holds (logical bytes).
    pub size_bytes: u64,
    /// What it added to the repository.
    pub stored_bytes: u64,
    /// How long it took.
    pub duration_seconds: f64,
    /// Its snapshot id (hex), when known.
    pub snapshot: Option<String>,
}

/// One failed run.
#[derive(Clone, Debug, Serialize)]
pub struct FailurePoint {
    /// The job's type.
    #[serde(rename = "type")]
    pub ty: String,
    /// When it ended.
    pub time: Timestamp,
    /// The error message.
    pub error: String,
}

/// One scheduled job.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    /// `postgres.main.full`.
    pub job: String,
    /// Its schedule as written.
    pub schedule: String,
    /// When it is next due.
    pub next_run: Option<Timestamp>,
    /// Whether a run is going now.
    pub running: bool,
    /// The last run's outcome, if any.
    pub last_outcome: Option<String>,
    /// When the last run ended.
    pub last_run: Option<Timestamp>,
}

/// One firing alert.
#[derive(Clone, Debug, Serialize)]
pub struct AlertStatus {
    /// `LifeboatBackupFailed`.
    pub alertname: String,
    /// `critical` or `warning`.
    pub severity: String,
    /// Its labels (source, kind, type ...).
    pub labels: std::collections::BTreeMap<String, String>,
    /// One sentence for a person.
    pub summary: String,
    /// Since when it fires (holding: when it was looked at).
    pub since: Timestamp,
    /// True when it fires (its condition held for its `for:`, as the
    /// agent watched); false when its condition holds at one look
    /// (`lifeboat status`, which does not watch over time).
    pub firing: bool,
}

/// One run of the job log.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The job id.
    pub job: String,
    /// `success`, `failed`, `skipped`, `cancelled`, `timeout`.
    pub outcome: String,
    /// When it started.
    pub started: Timestamp,
    /// How long it took.
    pub duration_seconds: f64,
    /// The error, for failures.
    pub error: Option<String>,
    /// The snapshot it made.
    pub snapshot: Option<String>,
    /// The host it ran on.
    pub hostname: String,
}
