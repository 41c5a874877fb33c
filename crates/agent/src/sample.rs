//! The metric catalogue and the samples of it.
//!
//! Everything the agent knows (job history, snapshots, the WAL archive, the
//! repository) is rendered once into a list of [`Sample`]s. The Prometheus
//! encoder (`GET /metrics`, `lifeboat metrics --textfile`) writes them; the
//! agent's own alert evaluator reads the same samples, so an alert fires in
//! the agent exactly when the generated Prometheus rule fires on what
//! Prometheus scraped.
//!
//! Names follow Prometheus' conventions: base units, `_seconds`, `_bytes`,
//! `_timestamp_seconds`, and `_total` for counters. Label names:
//!
//! - `source`: the source's name in the config file (`main` for
//!   `[postgres.main]`); `kind`: `postgres`, `redis`, `files`,
//!   `elasticsearch`; `type`: `full`, `incr`, `dump`, `backup`.
//! - `job`: a scheduled job's id, `<kind>.<source>.<type>` (`postgres.main.full`,
//!   `redis.cache.backup`, `repository.forget`, `repository.verify`).
//! - `repository`: the repository's name (`default` for the one the config's
//!   `repo` names).
//!
//! `docs/metrics.md` documents every metric; a test keeps it in step with
//! [`CATALOGUE`].

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// A value that goes up and down (or a timestamp).
    Gauge,
    /// A count that only grows while the process lives; its name ends in
    /// `_total`.
    Counter,
}

/// One metric of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// The full name, `_total` included for counters.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricType,
    /// Its label names, in order.
    pub labels: &'static [&'static str],
    /// One line of help.
    pub help: &'static str,
}

/// One labelled value of a metric in [`CATALOGUE`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric's name (a [`MetricDef::name`]).
    pub name: &'static str,
    /// Label names and values, in the metric's label order.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

const SERIES: &[&str] = &["source", "kind", "type"];

macro_rules! metrics {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: &str = $name;
        )*
        /// Every metric lifeboat exports, in the order they are written.
        pub const CATALOGUE: &[MetricDef] = &[
            $(MetricDef { name: $name, kind: MetricType::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

metrics! {
    BACKUP_LAST_SUCCESS = "lifeboat_backup_last_success_timestamp_seconds", Gauge, ["source", "kind", "type"],
        "When the last successful backup of this source and type ended (Unix time; 0: never).";
    BACKUP_LAST_FAILURE = "lifeboat_backup_last_failure_timestamp_seconds", Gauge, ["source", "kind", "type"],
        "When the last failed backup of this source and type ended (Unix time; 0: never).";
    BACKUP_FAILURES = "lifeboat_backup_failures_total", Counter, ["source", "kind", "type"],
        "Failed backups of this source and type: seen by this agent since it started (the agent), or in the job history (lifeboat metrics --textfile).";
    BACKUP_DURATION = "lifeboat_backup_last_duration_seconds", Gauge, ["source", "kind", "type"],
        "How long the last successful backup of this source and type took.";
    BACKUP_READ = "lifeboat_backup_last_read_bytes", Gauge, ["source", "kind", "type"],
        "Bytes the last successful backup read from the source.";
    BACKUP_STORED = "lifeboat_backup_last_stored_bytes", Gauge, ["source", "kind", "type"],
        "Bytes the last successful backup added to the repository (new data, after deduplication and compression).";
    BACKUP_SIZE = "lifeboat_backup_last_size_bytes", Gauge, ["source", "kind", "type"],
        "The size of what the last successful backup holds (the source's logical size).";
    BACKUP_SIZE_CHANGE = "lifeboat_backup_size_change_ratio", Gauge, ["source", "kind", "type"],
        "The last successful backup's size against the previous one of the same source and type, minus 1 (0.25: a quarter larger).";
    BACKUP_MAX_AGE = "lifeboat_backup_max_age_seconds", Gauge, ["source", "kind"],
        "The source's recovery point objective from the config: the age its newest backup must stay under.";
    JOB_RUNS = "lifeboat_job_runs_total", Counter, ["job", "outcome"],
        "Runs of a scheduled job by outcome (success, failed, cancelled, timeout) since the agent started.";
    JOB_SKIPPED = "lifeboat_job_skipped_total", Counter, ["job"],
        "Runs of a job skipped because its previous run was still going when it was due.";
    JOB_RUNNING = "lifeboat_job_running", Gauge, ["job"],
        "1 while a run of the job is going.";
    JOB_NEXT_RUN = "lifeboat_job_next_run_timestamp_seconds", Gauge, ["job"],
        "When the job is next due (Unix time).";
    JOB_LAST_RUN = "lifeboat_job_last_run_timestamp_seconds", Gauge, ["job"],
        "When the job's last run ended (Unix time; 0: never).";
    JOB_LAST_SUCCESS = "lifeboat_job_last_success_timestamp_seconds", Gauge, ["job"],
        "When the job last ended in success (Unix time; 0: never).";
    WAL_NEWEST = "lifeboat_wal_archive_newest_timestamp_seconds", Gauge, ["source"],
        "When the newest WAL segment of the source's cluster reached the repository (Unix time).";
    WAL_ARCHIVER_LAG = "lifeboat_wal_archiver_lag_seconds", Gauge, ["source"],
        "How far PostgreSQL's archiver is behind: the age of the oldest segment waiting to be archived (0: none waiting), from pg_stat_archiver and pg_ls_archive_statusdir.";
    WAL_ARCHIVER_FAILED = "lifeboat_wal_archiver_failed_count", Gauge, ["source"],
        "pg_stat_archiver.failed_count: archive_command failures since the statistics were reset.";
    REPOSITORY_UP = "lifeboat_repository_up", Gauge, ["repository"],
        "1 when the repository took a small write and read it back (a canary) at the last check, 0 when it did not; one series per replica too (repository=<replica name>).";
    REPOSITORY_OBJECTS = "lifeboat_repository_objects", Gauge, ["repository", "type"],
        "Objects in the repository by type (packs, index, snapshots, wal, ...).";
    REPOSITORY_BYTES = "lifeboat_repository_bytes", Gauge, ["repository", "type"],
        "Bytes stored in the repository by object type.";
    REPOSITORY_SNAPSHOTS = "lifeboat_repository_snapshots", Gauge, ["repository"],
        "Snapshots in the repository.";
    KEY_EPOCH_AGE = "lifeboat_key_epoch_age_seconds", Gauge, ["repository"],
        "Age of the repository's current data-key epoch.";
    REPLICA_LAG = "lifeboat_replica_lag_seconds", Gauge, ["repository", "replica"],
        "How far a replica is behind its primary: the age of the oldest object of the primary it lacks (0: up to date), from `replicate --status`.";
    DRILL_LAST_SUCCESS = "lifeboat_drill_last_success_timestamp_seconds", Gauge, ["source", "kind"],
        "When the last successful restore drill of the source ended (Unix time), from the drill history.";
    DRILL_LAST_PASSED = "lifeboat_drill_last_passed", Gauge, ["source", "kind"],
        "1 when the source's newest restore drill passed, 0 when it failed.";
    DRILL_RTO = "lifeboat_drill_rto_seconds", Gauge, ["source", "kind"],
        "The recovery time the source's newest drill measured (restore and recovery).";
    DRILL_RPO = "lifeboat_drill_rpo_seconds", Gauge, ["source", "kind"],
        "The data a loss at the time of the source's newest drill would have cost: the age of the newest point its restore reached.";
    NOTIFICATIONS = "lifeboat_notifications_total", Counter, ["target", "outcome"],
        "Notifications sent (delivered, failed) per [[notify]] target since the agent started.";
    ALERTS_FIRING = "lifeboat_alerts_firing", Gauge, ["alertname"],
        "Alerts the agent's own evaluation finds firing, by name.";
    CONFIG_RELOAD_OK = "lifeboat_agent_config_last_reload_successful", Gauge, [],
        "1 when the last load of the config file succeeded, 0 when it failed (the agent keeps the schedule it had).";
    CONFIG_RELOAD_TIME = "lifeboat_agent_config_last_reload_success_timestamp_seconds", Gauge, [],
        "When the config file was last loaded successfully (Unix time).";
    AGENT_START = "lifeboat_agent_start_time_seconds", Gauge, [],
        "When the agent started (Unix time).";
    BUILD_INFO = "lifeboat_build_info", Gauge, ["version"],
        "Always 1; the version of lifeboat in its label.";
}

/// The catalogue entry of `name`.
pub fn def(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|d| d.name == name)
}

/// The labels of a backup series, in [`BACKUP_LAST_SUCCESS`]'s order.
pub fn series_labels(source: &str, kind: &str, ty: &str) -> Vec<(&'static str, String)> {
    SERIES
        .iter()
        .zip([source, kind, ty])
        .map(|(n, v)| (*n, v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("lifeboat_"), "{}", d.name);
            assert_eq!(
                d.kind == MetricType::Counter,
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                d.name
            );
        }
        assert_eq!(
            def(BACKUP_LAST_SUCCESS).map(|d| d.labels),
            Some(&["source", "kind", "type"][..])
        );
        assert_eq!(
            def(BACKUP_FAILURES).map(|d| d.labels),
            Some(&["source", "kind", "type"][..])
        );
    }
}

#[cfg(test)]
mod doc_tests {
    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../../docs/metrics.md");
        for d in super::CATALOGUE {
            assert!(
                doc.contains(&format!("`{}`", d.name)),
                "{} is missing from docs/metrics.md",
                d.name
            );
        }
    }
}
