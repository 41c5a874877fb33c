//! The strategy's alerts, written once and used twice: as a Prometheus rule
//! file ([`prometheus_rules`], `lifeboat alerts rules`) and as the agent's
//! own [`Evaluator`], for teams that run no Prometheus. Both read the same
//! metrics ([`crate::sample`]) with the same conditions, `for:` durations
//! and annotations, so an alert fires in the agent exactly when Prometheus
//! would fire it on what it scraped. `LifeboatAgentDown` is the exception:
//! an agent cannot see itself down, so only Prometheus has it.
//!
//! | alert | condition | threshold | `for` |
//! |---|---|---|---|
//! | `LifeboatBackupFailed` | the last run failed after the last success | — | 0m |
//! | `LifeboatBackupTooOld` | newest good backup older than the source's RPO | `backup_max_age`, `rpo` | 10m |
//! | `LifeboatBackupSizeChanged` | size against the previous backup | `size_change` | 0m |
//! | `LifeboatReplicationLag` | a replica repository behind | `replication_lag` | 5m |
//! | `LifeboatRepositoryUnreachable` | the repository did not answer | — | `repository_unreachable_for` |
//! | `LifeboatWalArchiveStale` | newest archived WAL segment too old | `wal_max_age` | 0m |
//! | `LifeboatDrillStale` | last successful restore drill too old | `drill_max_age` | 0m |
//! | `LifeboatDrillFailed` | the newest restore drill failed | — | 0m |
//! | `LifeboatAgentDown` | Prometheus cannot scrape the agent | `prometheus_job` | 5m |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_ops::config::AlertsSection;
use lifeboat_ops::Error;

use crate::sample::{self as m, Sample};
use crate::status::AlertStatus;

/// `LifeboatBackupFailed`.
pub const BACKUP_FAILED: &str = "LifeboatBackupFailed";
/// `LifeboatBackupTooOld`.
pub const BACKUP_TOO_OLD: &str = "LifeboatBackupTooOld";
/// `LifeboatBackupSizeChanged`.
pub const BACKUP_SIZE_CHANGED: &str = "LifeboatBackupSizeChanged";
/// `LifeboatReplicationLag`.
pub const REPLICATION_LAG: &str = "LifeboatReplicationLag";
/// `LifeboatRepositoryUnreachable`.
pub const REPOSITORY_UNREACHABLE: &str = "LifeboatRepositoryUnreachable";
/// `LifeboatWalArchiveStale`.
pub const WAL_ARCHIVE_STALE: &str = "LifeboatWalArchiveStale";
/// `LifeboatDrillStale`.
pub const DRILL_STALE: &str = "LifeboatDrillStale";
/// `LifeboatDrillFailed`.
pub const DRILL_FAILED: &str = "LifeboatDrillFailed";
/// `LifeboatAgentDown` (Prometheus only).
pub const AGENT_DOWN: &str = "LifeboatAgentDown";

/// How long `LifeboatBackupTooOld` must hold before it fires: long enough
/// that an agent just started, still reading the job history (its series
/// at 0 until then), does not page anyone.
pub const TOO_OLD_FOR: Duration = Duration::from_secs(600);
/// How long a replication lag must stay over its threshold: one refresh
/// of a lagging figure is not yet an alert.
pub const REPLICATION_LAG_FOR: Duration = Duration::from_secs(300);
/// How long Prometheus must fail to scrape the agent.
pub const AGENT_DOWN_FOR: Duration = Duration::from_secs(300);

/// The thresholds of the strategy's alerts (`[alerts]`, defaults filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    /// The default RPO: a source's newest good backup older than this
    /// alerts (a source's own `rpo` wins; both reach the rules as the
    /// metric `lifeboat_backup_max_age_seconds`).
    pub backup_max_age: Duration,
    /// The size change against the previous backup that alerts (0.2:
    /// 20 %, either way).
    pub size_change: f64,
    /// The replication lag that alerts.
    pub replication_lag: Duration,
    /// How long the repository must stay unreachable before it alerts.
    pub repository_unreachable_for: Duration,
    /// The age of the newest archived WAL segment that alerts.
    pub wal_max_age: Duration,
    /// The age of a source's last successful drill that alerts.
    pub drill_max_age: Duration,
    /// How often a notification of an alert still firing is repeated.
    pub repeat_interval: Duration,
    /// The Prometheus job name lifeboat's metrics are scraped under.
    pub prometheus_job: String,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            backup_max_age: Duration::from_secs(25 * 3600),
            size_change: 0.2,
            replication_lag: Duration::from_secs(3600),
            repository_unreachable_for: Duration::from_secs(300),
            wal_max_age: Duration::from_secs(3600),
            drill_max_age: Duration::from_secs(35 * 86400),
            repeat_interval: Duration::from_secs(4 * 3600),
            prometheus_job: "lifeboat".into(),
        }
    }
}

fn setting(key: &str, v: Option<&str>, default: Duration) -> Result<Duration, Error> {
    let Some(t) = v else { return Ok(default) };
    let d = humantime::parse_duration(t.trim()).map_err(|e| {
        Error::usage(format!(
            "[alerts] {key} = {t:?}: {e}; give a duration such as 90s, 30m, 25h or 7d"
        ))
    })?;
    if d < Duration::from_secs(1) && key != "repository_unreachable_for" {
        return Err(Error::usage(format!(
            "[alerts] {key} = {t:?}: give at least 1s"
        )));
    }
    Ok(d)
}

impl AlertSettings {
    /// The settings `[alerts]` says, or a usage error naming the key that
    /// is wrong.
    pub fn from_config(a: &AlertsSection) -> Result<AlertSettings, Error> {
        let d = AlertSettings::default();
        let size_change = a.size_change.unwrap_or(d.size_change);
        if !size_change.is_finite() || size_change <= 0.0 {
            return Err(Error::usage(format!(
                "[alerts] size_change = {size_change}: give a fraction more than 0 (0.2: 20 %)"
            )));
        }
        let prometheus_job = a.prometheus_job.clone().unwrap_or(d.prometheus_job);
        if prometheus_job.is_empty()
            || prometheus_job
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(Error::usage(format!(
                "[alerts] prometheus_job = {prometheus_job:?}: give the job name of Prometheus' scrape config (no quotes or backslashes)"
            )));
        }
        Ok(AlertSettings {
            backup_max_age: setting(
                "backup_max_age",
                a.backup_max_age.as_deref(),
                d.backup_max_age,
            )?,
            size_change,
            replication_lag: setting(
                "replication_lag",
                a.replication_lag.as_deref(),
                d.replication_lag,
            )?,
            repository_unreachable_for: setting(
                "repository_unreachable_for",
                a.repository_unreachable_for.as_deref(),
                d.repository_unreachable_for,
            )?,
            wal_max_age: setting("wal_max_age", a.wal_max_age.as_deref(), d.wal_max_age)?,
            drill_max_age: setting("drill_max_age", a.drill_max_age.as_deref(), d.drill_max_age)?,
            repeat_interval: setting(
                "repeat_interval",
                a.repeat_interval.as_deref(),
                d.repeat_interval,
            )?,
            prometheus_job,
        })
    }
}

/// An alert's severity label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Someone must act now: data is not protected.
    Critical,
    /// Worth a look during the day.
    Warning,
}

impl Severity {
    /// `critical` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// One alerting rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The alert's name (`LifeboatBackupFailed`).
    pub name: &'static str,
    /// Its severity label.
    pub severity: Severity,
    /// The PromQL expression.
    pub expr: String,
    /// How long the expression must hold before the alert fires.
    pub for_: Duration,
    /// The `summary` annotation (a Prometheus template).
    pub summary: &'static str,
    /// The `description` annotation (a Prometheus template).
    pub description: &'static str,
}

/// Seconds as a PromQL number.
fn num(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// A Prometheus duration (`25h`, `90m`, `30s`), rounded up to seconds.
pub fn prom_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if s == 0 {
        "0m".into()
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Every rule, with `s`'s thresholds, in the order of the rule file.
pub fn rules(s: &AlertSettings) -> Vec<Rule> {
    vec![
        Rule {
            name: BACKUP_FAILED,
            severity: Severity::Critical,
            expr: format!("{} > {}", m::BACKUP_LAST_FAILURE, m::BACKUP_LAST_SUCCESS),
            for_: Duration::ZERO,
            summary: "{{ $labels.type }} backup of {{ $labels.kind }} source {{ $labels.source }} failed",
            description: "The last {{ $labels.type }} backup of {{ $labels.kind }} source {{ $labels.source }} failed after its last success. See lifeboat jobs --source {{ $labels.source }} --failed; the next good run resolves this.",
        },
        Rule {
            name: BACKUP_TOO_OLD,
            severity: Severity::Critical,
            expr: format!(
                "time() - max by (source, kind) ({}) > on (source, kind) {}",
                m::BACKUP_LAST_SUCCESS,
                m::BACKUP_MAX_AGE
            ),
            for_: TOO_OLD_FOR,
            summary: "Newest backup of {{ $labels.kind }} source {{ $labels.source }} is older than its RPO",
            description: "The newest good backup of {{ $labels.kind }} source {{ $labels.source }} is {{ $value | humanizeDuration }} old, more than its recovery point objective (rpo, or [alerts] backup_max_age).",
        },
        Rule {
            name: BACKUP_SIZE_CHANGED,
            severity: Severity::Warning,
            expr: format!("abs({}) > {}", m::BACKUP_SIZE_CHANGE, s.size_change),
            for_: Duration::ZERO,
            summary: "{{ $labels.type }} backup of {{ $labels.kind }} source {{ $labels.source }} changed size suspiciously",
            description: "The last {{ $labels.type }} backup of {{ $labels.kind }} source {{ $labels.source }} differs in size from the previous one by {{ $value | humanizePercentage }}.",
        },
        Rule {
            name: REPLICATION_LAG,
            severity: Severity::Critical,
            expr: format!("{} > {}", m::REPLICA_LAG, num(s.replication_lag)),
            for_: REPLICATION_LAG_FOR,
            summary: "Replica {{ $labels.replica }} of repository {{ $labels.repository }} lags",
            description: "Replica {{ $labels.replica }} of repository {{ $labels.repository }} is {{ $value | humanizeDuration }} behind its primary.",
        },
        Rule {
            name: REPOSITORY_UNREACHABLE,
            severity: Severity::Critical,
            expr: format!("{} == 0", m::REPOSITORY_UP),
            for_: s.repository_unreachable_for,
            summary: "Repository {{ $labels.repository }} is unreachable",
            description: "Repository {{ $labels.repository }} has not answered the agent's checks: backups cannot be stored there and restores cannot read from it.",
        },
        Rule {
            name: WAL_ARCHIVE_STALE,
            severity: Severity::Critical,
            expr: format!("time() - {} > {}", m::WAL_NEWEST, num(s.wal_max_age)),
            for_: Duration::ZERO,
            summary: "WAL archive of PostgreSQL source {{ $labels.source }} is stale",
            description: "The newest WAL segment of PostgreSQL source {{ $labels.source }} reached the repository {{ $value | humanizeDuration }} ago: point-in-time recovery cannot reach past it. Check archive_command and lifeboat pg check.",
        },
        Rule {
            name: DRILL_STALE,
            severity: Severity::Warning,
            expr: format!("time() - {} > {}", m::DRILL_LAST_SUCCESS, num(s.drill_max_age)),
            for_: Duration::ZERO,
            summary: "No successful restore drill of {{ $labels.kind }} source {{ $labels.source }} lately",
            description: "The last successful restore drill of {{ $labels.kind }} source {{ $labels.source }} ended {{ $value | humanizeDuration }} ago: nobody has proven lately that its backups restore. Run lifeboat drill {{ $labels.source }} (or schedule.drill in [repository]).",
        },
        Rule {
            name: DRILL_FAILED,
            severity: Severity::Warning,
            expr: format!("{} == 0", m::DRILL_LAST_PASSED),
            for_: Duration::ZERO,
            summary: "The newest restore drill of {{ $labels.kind }} source {{ $labels.source }} failed",
            description: "The newest restore drill of {{ $labels.kind }} source {{ $labels.source }} failed: lifeboat drills --json names the checks that did not pass; the next passing drill resolves this.",
        },
        Rule {
            name: AGENT_DOWN,
            severity: Severity::Critical,
            expr: format!("up{{job=\"{}\"}} == 0", s.prometheus_job),
            for_: AGENT_DOWN_FOR,
            summary: "lifeboat agent {{ $labels.instance }} is down",
            description: "Prometheus cannot scrape the lifeboat agent {{ $labels.instance }}: no backups are scheduled and no alerts are evaluated there.",
        },
    ]
}

/// A string as a YAML double-quoted scalar (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The Prometheus rule file: one group `lifeboat` with every rule, each
/// with its `severity` label and `summary`/`description` annotations.
pub fn prometheus_rules(s: &AlertSettings) -> String {
    let mut out = String::from(
        "# lifeboat's alerting rules: lifeboat alerts rules > lifeboat-rules.yml\n\
         # Thresholds come from [alerts] of the config file; see docs/alerts.md.\n\
         groups:\n  - name: lifeboat\n    rules:\n",
    );
    for r in rules(s) {
        out.push_str(&format!("      - alert: {}\n", r.name));
        out.push_str(&format!("        expr: {}\n", quoted(&r.expr)));
        out.push_str(&format!("        for: {}\n", prom_duration(r.for_)));
        out.push_str("        labels:\n");
        out.push_str(&format!("          severity: {}\n", r.severity.as_str()));
        out.push_str("        annotations:\n");
        out.push_str(&format!("          summary: {}\n", quoted(r.summary)));
        out.push_str(&format!(
            "          description: {}\n",
            quoted(r.description)
        ));
    }
    out
}

/// Go's `%.4g`: four significant digits, trailing zeros dropped.
fn g4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    // The exponent after rounding to four digits (9999.5 is 1.000e4).
    let sci = format!("{v:.3e}");
    let (mant, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    if !(-4..4).contains(&exp) {
        return format!(
            "{}e{}{:02}",
            trim_zeros(mant),
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    let decimals = (3 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Prometheus' `humanizeDuration`.
fn humanize_duration(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{}s", g4(v));
    }
    if v.abs() < 1.0 {
        return format!("{}ms", g4(v * 1000.0));
    }
    let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
    let d = v as i64;
    let (s, mi, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
    if days != 0 {
        format!("{sign}{days}d {h}h {mi}m {s}s")
    } else if h != 0 {
        format!("{sign}{h}h {mi}m {s}s")
    } else if mi != 0 {
        format!("{sign}{mi}m {s}s")
    } else {
        format!("{sign}{}s", g4(v))
    }
}

/// Renders the annotation templates this module writes — `{{ $labels.X }}`,
/// `{{ $value }}`, `{{ $value | humanizeDuration }}` and
/// `{{ $value | humanizePercentage }}` — as Prometheus renders them.
pub fn render(template: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            break;
        };
        let inner = rest[i + 2..i + j].trim();
        rest = &rest[i + j + 2..];
        if let Some(name) = inner.strip_prefix("$labels.") {
            out.push_str(labels.get(name).map_or("", String::as_str));
            continue;
        }
        match inner.split('|').map(str::trim).collect::<Vec<_>>()[..] {
            ["$value"] => out.push_str(&format!("{value}")),
            ["$value", "humanizeDuration"] => out.push_str(&humanize_duration(value)),
            ["$value", "humanizePercentage"] => out.push_str(&format!("{}%", g4(value * 100.0))),
            _ => out.push_str(inner),
        }
    }
    out.push_str(rest);
    out
}

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds (and has for the rule's `for`).
    Firing,
    /// It held and no longer does.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`, as Alertmanager writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert instance: a rule and the labels of the series it fired on.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The rule's name.
    pub name: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// Every label, as Prometheus gives them to Alertmanager: the series'
    /// labels, `alertname` and `severity`.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description`, rendered.
    pub annotations: BTreeMap<String, String>,
    /// The expression's value when last evaluated.
    pub value: f64,
    /// When it started firing.
    pub starts_at: Timestamp,
    /// When it was resolved; none while it fires.
    pub ends_at: Option<Timestamp>,
    /// Its identity: a hash of the sorted labels, 16 hex digits.
    pub fingerprint: String,
}

impl Alert {
    /// The `summary` annotation.
    pub fn summary(&self) -> &str {
        self.annotations.get("summary").map_or("", String::as_str)
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Firing while `ends_at` is none, resolved after.
    pub fn state(&self) -> AlertState {
        match self.ends_at {
            None => AlertState::Firing,
            Some(_) => AlertState::Resolved,
        }
    }
}

/// A change of an alert: it started firing, or it was resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    /// Firing or resolved.
    pub state: AlertState,
    /// The alert (with `ends_at` set when resolved).
    pub alert: Alert,
}

/// The identity of a label set: FNV-1a 64 over the sorted names and
/// values, as 16 hex digits (Alertmanager's fingerprints are of the same
/// kind).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

struct Tracked {
    alert: Alert,
    active_since: Timestamp,
    firing: bool,
}

/// The agent's own evaluation of the rules over its samples: the same
/// conditions as [`prometheus_rules`], with pending and firing state kept
/// across calls (the `for:` durations). `LifeboatAgentDown` has no
/// equivalent here. Call [`Evaluator::evaluate`] after each refresh of the
/// samples (Prometheus evaluates every minute by default).
pub struct Evaluator {
    rules: Vec<Rule>,
    settings: AlertSettings,
    tracked: HashMap<String, Tracked>,
}

fn secs(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn labels_of(s: &Sample) -> BTreeMap<String, String> {
    s.labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

type Active = Vec<(BTreeMap<String, String>, f64)>;

impl Evaluator {
    /// An evaluator of the rules with `settings`' thresholds.
    pub fn new(settings: &AlertSettings) -> Evaluator {
        Evaluator {
            rules: rules(settings),
            settings: settings.clone(),
            tracked: HashMap::new(),
        }
    }

    /// The series on which `rule`'s expression holds at `now` (Unix
    /// seconds), each with the expression's value — the PromQL of
    /// [`rules`], over samples.
    fn active(&self, rule: &str, samples: &[Sample], now: f64) -> Active {
        let of = |name: &'static str| samples.iter().filter(move |s| s.name == name);
        let s = &self.settings;
        match rule {
            // a > b: one-to-one on every label.
            BACKUP_FAILED => of(m::BACKUP_LAST_FAILURE)
                .filter_map(|f| {
                    let ok = of(m::BACKUP_LAST_SUCCESS).find(|o| o.labels == f.labels)?;
                    (f.value > ok.value).then(|| (labels_of(f), f.value))
                })
                .collect(),
            // time() - max by (source, kind) (a) > on (source, kind) b.
            BACKUP_TOO_OLD => {
                let key = |s: &Sample| {
                    (
                        s.label("source").unwrap_or("").to_string(),
                        s.label("kind").unwrap_or("").to_string(),
                    )
                };
                let mut newest: BTreeMap<(String, String), f64> = BTreeMap::new();
                for o in of(m::BACKUP_LAST_SUCCESS) {
                    let e = newest.entry(key(o)).or_insert(f64::NEG_INFINITY);
                    *e = e.max(o.value);
                }
                of(m::BACKUP_MAX_AGE)
                    .filter_map(|max| {
                        let k = key(max);
                        let age = now - newest.get(&k)?;
                        (age > max.value).then(|| {
                            let l = BTreeMap::from([
                                ("source".to_string(), k.0),
                                ("kind".to_string(), k.1),
                            ]);
                            (l, age)
                        })
                    })
                    .collect()
            }
            BACKUP_SIZE_CHANGED => of(m::BACKUP_SIZE_CHANGE)
                .filter(|x| x.value.abs() > s.size_change)
                .map(|x| (labels_of(x), x.value.abs()))
                .collect(),
            REPLICATION_LAG => of(m::REPLICA_LAG)
                .filter(|x| x.value > s.replication_lag.as_secs_f64())
                .map(|x| (labels_of(x), x.value))
                .collect(),
            REPOSITORY_UNREACHABLE => of(m::REPOSITORY_UP)
                .filter(|x| x.value == 0.0)
                .map(|x| (labels_of(x), x.value))
                .collect(),
            WAL_ARCHIVE_STALE => of(m::WAL_NEWEST)
                .filter(|x| now - x.value > s.wal_max_age.as_secs_f64())
                .map(|x| (labels_of(x), now - x.value))
                .collect(),
            DRILL_STALE => of(m::DRILL_LAST_SUCCESS)
                .filter(|x| now - x.value > s.drill_max_age.as_secs_f64())
                .map(|x| (labels_of(x), now - x.value))
                .collect(),
            DRILL_FAILED => of(m::DRILL_LAST_PASSED)
                .filter(|x| x.value == 0.0)
                .map(|x| (labels_of(x), x.value))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Evaluates every rule over `samples` at `now`; returns the alerts
    /// that started firing and those resolved since the last call.
    pub fn evaluate(&mut self, samples: &[Sample], now: Timestamp) -> Vec<AlertEvent> {
        let t = secs(now);
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        for rule in &self.rules {
            for (mut labels, value) in self.active(rule.name, samples, t) {
                let annotations = BTreeMap::from([
                    ("summary".to_string(), render(rule.summary, &labels, value)),
                    (
                        "description".to_string(),
                        render(rule.description, &labels, value),
                    ),
                ]);
                labels.insert("alertname".into(), rule.name.into());
                labels.insert("severity".into(), rule.severity.as_str().into());
                let fp = fingerprint(&labels);
                seen.insert(fp.clone());
                let tr = self.tracked.entry(fp.clone()).or_insert_with(|| Tracked {
                    alert: Alert {
                        name: rule.name,
                        severity: rule.severity,
                        labels,
                        annotations: BTreeMap::new(),
                        value,
                        starts_at: now,
                        ends_at: None,
                        fingerprint: fp,
                    },
                    active_since: now,
                    firing: false,
                });
                tr.alert.annotations = annotations;
                tr.alert.value = value;
                let held = now.duration_since(tr.active_since).unsigned_abs();
                if !tr.firing && held >= rule.for_ {
                    tr.firing = true;
                    tr.alert.starts_at = now;
                    events.push(AlertEvent {
                        state: AlertState::Firing,
                        alert: tr.alert.clone(),
                    });
                }
            }
        }
        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(tr) = self.tracked.remove(&k) {
                if tr.firing {
                    let mut alert = tr.alert;
                    alert.ends_at = Some(now);
                    events.push(AlertEvent {
                        state: AlertState::Resolved,
                        alert,
                    });
                }
            }
        }
        events
            .sort_by(|a, b| (a.alert.name, &a.alert.labels).cmp(&(b.alert.name, &b.alert.labels)));
        events
    }

    /// The alerts whose conditions hold over `samples` at `now`, whatever
    /// their `for:` — what a one-shot command (`lifeboat status`) can say
    /// without watching over time.
    pub fn holding(&self, samples: &[Sample], now: Timestamp) -> Vec<AlertStatus> {
        let t = secs(now);
        let mut out = Vec::new();
        for rule in &self.rules {
            for (labels, value) in self.active(rule.name, samples, t) {
                out.push(AlertStatus {
                    alertname: rule.name.to_string(),
                    severity: rule.severity.as_str().to_string(),
                    summary: render(rule.summary, &labels, value),
                    labels,
                    since: now,
                    firing: false,
                });
            }
        }
        out
    }

    /// The alerts firing now, by name then labels.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .tracked
            .values()
            .filter(|t| t.firing)
            .map(|t| t.alert.clone())
            .collect();
        v.sort_by(|a, b| (a.name, &a.labels).cmp(&(b.name, &b.labels)));
        v
    }

    /// The alerts firing now, as the status shows them (labels without
    /// `alertname` and `severity`).
    pub fn firing(&self) -> Vec<AlertStatus> {
        self.firing_alerts()
            .into_iter()
            .map(|a| AlertStatus {
                alertname: a.name.to_string(),
                severity: a.severity.as_str().to_string(),
                summary: a.summary().to_string(),
                labels: a
                    .labels
                    .into_iter()
                    .filter(|(k, _)| k != "alertname" && k != "severity")
                    .collect(),
                since: a.starts_at,
                firing: true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_from_config() {
        let s = AlertSettings::from_config(&AlertsSection::default()).unwrap();
        assert_eq!(s, AlertSettings::default());
        assert_eq!(s.backup_max_age, Duration::from_secs(90_000));
        let s = AlertSettings::from_config(&AlertsSection {
            backup_max_age: Some("90m".into()),
            size_change: Some(0.5),
            prometheus_job: Some("backup-agents".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.backup_max_age, Duration::from_secs(5400));
        assert_eq!(s.size_change, 0.5);
        let rules = prometheus_rules(&s);
        assert!(rules.contains("> 0.5"), "{rules}");
        assert!(
            rules.contains(r#"up{job=\"backup-agents\"} == 0"#),
            "{rules}"
        );
    }

    #[test]
    fn bad_settings_are_usage_errors_naming_the_key() {
        for (a, key) in [
            (
                AlertsSection {
                    wal_max_age: Some("soon".into()),
                    ..Default::default()
                },
                "wal_max_age",
            ),
            (
                AlertsSection {
                    size_change: Some(-1.0),
                    ..Default::default()
                },
                "size_change",
            ),
            (
                AlertsSection {
                    prometheus_job: Some("a\"b".into()),
                    ..Default::default()
                },
                "prometheus_job",
            ),
            (
                AlertsSection {
                    repeat_interval: Some("0s".into()),
                    ..Default::default()
                },
                "repeat_interval",
            ),
        ] {
            let e = AlertSettings::from_config(&a).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
            assert_eq!(e.class(), lifeboat_repo::ErrorClass::Usage);
        }
    }

    #[test]
    fn templates_render_as_prometheus_does() {
        let l = BTreeMap::from([("source".to_string(), "main".to_string())]);
        assert_eq!(render("{{ $labels.source }} x", &l, 0.0), "main x");
        let d = |v| render("{{ $value | humanizeDuration }}", &l, v);
        assert_eq!(d(90000.0), "1d 1h 0m 0s");
        assert_eq!(d(2520.0), "42m 0s");
        assert_eq!(d(30.5), "30.5s");
        let p = |v| render("{{ $value | humanizePercentage }}", &l, v);
        assert_eq!(p(0.35), "35%");
        assert_eq!(p(1.0 / 3.0), "33.33%");
        assert_eq!(g4(12345.0), "1.234e+04");
        assert_eq!(prom_duration(Duration::from_secs(90_000)), "25h");
        assert_eq!(prom_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(prom_duration(Duration::ZERO), "0m");
    }

    fn sample(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Sample {
        Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        }
    }

    #[test]
    fn a_failure_fires_once_and_the_next_good_run_resolves_it() {
        let mut ev = Evaluator::new(&AlertSettings::default());
        let l = [("source", "main"), ("kind", "postgres"), ("type", "full")];
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let failed = [
            sample(m::BACKUP_LAST_SUCCESS, &l, 999_000.0),
            sample(m::BACKUP_LAST_FAILURE, &l, 999_500.0),
        ];
        let e = ev.evaluate(&failed, at(0));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].state, AlertState::Firing);
        assert_eq!(e[0].alert.label("source"), Some("main"));
        assert_eq!(
            e[0].alert.summary(),
            "full backup of postgres source main failed"
        );
        assert!(ev.evaluate(&failed, at(60)).is_empty(), "not twice");
        assert_eq!(ev.firing().len(), 1);
        assert_eq!(ev.firing()[0].since, at(0));
        let ok = [
            sample(m::BACKUP_LAST_SUCCESS, &l, 999_900.0),
            sample(m::BACKUP_LAST_FAILURE, &l, 999_500.0),
        ];
        let e = ev.evaluate(&ok, at(120));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].state, AlertState::Resolved);
        assert_eq!(e[0].alert.ends_at, Some(at(120)));
        assert!(ev.firing().is_empty());
    }
}
