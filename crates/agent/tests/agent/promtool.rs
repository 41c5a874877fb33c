//! The strategy's alerts, one table of scenarios checked twice: by
//! Prometheus' own `promtool test rules` on the generated rule file, and by
//! the agent's [`Evaluator`] fed the same series minute by minute. Both
//! must fire the same alerts, with the same labels and annotations, at the
//! same evaluations — so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use jiff::Timestamp;
use lifeboat_agent::rules::{self, AlertSettings, Evaluator};
use lifeboat_agent::sample::{self as m, Sample};
use serde_json::json;

/// Debian's promtool (package `prometheus`), or a failure saying how to
/// get it.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool not found: run scripts/test.sh (it installs Debian's prometheus package)")
    })
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One input series: its value for runs of one-minute steps.
struct Series {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    /// (value, steps).
    runs: Vec<(f64, u32)>,
}

impl Series {
    fn new(
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        runs: &[(f64, u32)],
    ) -> Series {
        Series {
            name,
            labels: labels.to_vec(),
            runs: runs.to_vec(),
        }
    }

    fn selector(&self) -> String {
        let l: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.name, l.join(","))
    }

    /// promtool's expanding notation: `1000x4` is five values of 1000.
    fn values(&self) -> String {
        self.runs
            .iter()
            .map(|(v, n)| {
                if *n == 1 {
                    format!("{v}")
                } else {
                    format!("{v}x{}", n - 1)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn at(&self, step: u32) -> Option<f64> {
        let mut start = 0;
        for (v, n) in &self.runs {
            if step < start + n {
                return Some(*v);
            }
            start += n;
        }
        None
    }
}

/// An alert expected to fire: its name, its series' labels, the
/// expression's value (for the annotations).
struct Firing {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    value: f64,
}

fn fires(name: &'static str, labels: &[(&'static str, &'static str)], value: f64) -> Firing {
    Firing {
        name,
        labels: labels.to_vec(),
        value,
    }
}

struct Scenario {
    name: &'static str,
    settings: AlertSettings,
    series: Vec<Series>,
    /// (minute, every alert firing then).
    checks: Vec<(u32, Vec<Firing>)>,
}

const MAIN_FULL: &[(&str, &str)] = &[("source", "main"), ("kind", "postgres"), ("type", "full")];
const MAIN_INCR: &[(&str, &str)] = &[("source", "main"), ("kind", "postgres"), ("type", "incr")];
const OLD_FULL: &[(&str, &str)] = &[("source", "old"), ("kind", "postgres"), ("type", "full")];
const CACHE: &[(&str, &str)] = &[("source", "cache"), ("kind", "redis"), ("type", "backup")];
const MAIN: &[(&str, &str)] = &[("source", "main"), ("kind", "postgres")];
const OLD: &[(&str, &str)] = &[("source", "old"), ("kind", "postgres")];
const CACHE_SRC: &[(&str, &str)] = &[("source", "cache"), ("kind", "redis")];
const REPO: &[(&str, &str)] = &[("repository", "default")];
const DR: &[(&str, &str)] = &[("repository", "default"), ("replica", "dr")];
const AGENT: &[(&str, &str)] = &[("job", "lifeboat"), ("instance", "agent:9847")];

fn scenarios() -> Vec<Scenario> {
    let d = AlertSettings::default;
    let size_series = || {
        vec![
            Series::new(m::BACKUP_SIZE_CHANGE, MAIN_FULL, &[(0.1, 5), (-0.35, 10)]),
            Series::new(m::BACKUP_SIZE_CHANGE, CACHE, &[(0.15, 5), (0.6, 10)]),
        ]
    };
    vec![
        Scenario {
            name: "a failed run fires at once; the next good run resolves it",
            settings: d(),
            series: vec![
                Series::new(
                    m::BACKUP_LAST_SUCCESS,
                    MAIN_FULL,
                    &[(1000.0, 10), (3000.0, 10)],
                ),
                Series::new(m::BACKUP_LAST_FAILURE, MAIN_FULL, &[(0.0, 5), (2000.0, 15)]),
                Series::new(m::BACKUP_LAST_SUCCESS, CACHE, &[(500.0, 20)]),
                Series::new(m::BACKUP_LAST_FAILURE, CACHE, &[(0.0, 20)]),
                Series::new(m::BACKUP_MAX_AGE, MAIN, &[(90000.0, 20)]),
            ],
            checks: vec![
                (3, vec![]),
                (5, vec![fires(rules::BACKUP_FAILED, MAIN_FULL, 2000.0)]),
                (9, vec![fires(rules::BACKUP_FAILED, MAIN_FULL, 2000.0)]),
                (10, vec![]),
                (15, vec![]),
            ],
        },
        Scenario {
            name: "the newest backup of any type against the source's RPO; never backed up counts",
            settings: d(),
            series: vec![
                Series::new(m::BACKUP_LAST_SUCCESS, MAIN_FULL, &[(600.0, 60)]),
                Series::new(m::BACKUP_LAST_SUCCESS, MAIN_INCR, &[(2400.0, 60)]),
                Series::new(m::BACKUP_LAST_SUCCESS, OLD_FULL, &[(600.0, 60)]),
                Series::new(m::BACKUP_LAST_SUCCESS, CACHE, &[(0.0, 60)]),
                Series::new(m::BACKUP_MAX_AGE, MAIN, &[(1800.0, 60)]),
                Series::new(m::BACKUP_MAX_AGE, OLD, &[(1800.0, 60)]),
                Series::new(m::BACKUP_MAX_AGE, CACHE_SRC, &[(1800.0, 60)]),
            ],
            checks: vec![
                // cache's age passes 1800 s at 31m, old's at 41m; each
                // fires after the 10m of `for`.
                (40, vec![]),
                (41, vec![fires(rules::BACKUP_TOO_OLD, CACHE_SRC, 2460.0)]),
                (
                    51,
                    vec![
                        fires(rules::BACKUP_TOO_OLD, CACHE_SRC, 3060.0),
                        fires(rules::BACKUP_TOO_OLD, OLD, 2460.0),
                    ],
                ),
            ],
        },
        Scenario {
            name: "a size change over 20 % either way",
            settings: d(),
            series: size_series(),
            checks: vec![
                (4, vec![]),
                (
                    5,
                    vec![
                        fires(rules::BACKUP_SIZE_CHANGED, CACHE, 0.6),
                        fires(rules::BACKUP_SIZE_CHANGED, MAIN_FULL, 0.35),
                    ],
                ),
            ],
        },
        Scenario {
            name: "size_change = 0.5",
            settings: AlertSettings {
                size_change: 0.5,
                ..d()
            },
            series: size_series(),
            checks: vec![
                (4, vec![]),
                (5, vec![fires(rules::BACKUP_SIZE_CHANGED, CACHE, 0.6)]),
            ],
        },
        Scenario {
            name: "replication lag over 1h for 5m",
            settings: d(),
            series: vec![Series::new(m::REPLICA_LAG, DR, &[(100.0, 5), (4000.0, 15)])],
            checks: vec![
                (9, vec![]),
                (10, vec![fires(rules::REPLICATION_LAG, DR, 4000.0)]),
            ],
        },
        Scenario {
            name: "replication_lag = 2h",
            settings: AlertSettings {
                replication_lag: std::time::Duration::from_secs(7200),
                ..d()
            },
            series: vec![Series::new(m::REPLICA_LAG, DR, &[(100.0, 5), (4000.0, 15)])],
            checks: vec![(12, vec![])],
        },
        Scenario {
            name: "the repository unreachable for 5m, then back",
            settings: d(),
            series: vec![Series::new(
                m::REPOSITORY_UP,
                REPO,
                &[(1.0, 3), (0.0, 12), (1.0, 5)],
            )],
            checks: vec![
                (7, vec![]),
                (8, vec![fires(rules::REPOSITORY_UNREACHABLE, REPO, 0.0)]),
                (14, vec![fires(rules::REPOSITORY_UNREACHABLE, REPO, 0.0)]),
                (15, vec![]),
            ],
        },
        Scenario {
            name: "repository_unreachable_for = 10m",
            settings: AlertSettings {
                repository_unreachable_for: std::time::Duration::from_secs(600),
                ..d()
            },
            series: vec![Series::new(
                m::REPOSITORY_UP,
                REPO,
                &[(1.0, 3), (0.0, 12), (1.0, 5)],
            )],
            checks: vec![
                (12, vec![]),
                (13, vec![fires(rules::REPOSITORY_UNREACHABLE, REPO, 0.0)]),
            ],
        },
        Scenario {
            name: "the WAL archive older than 1h",
            settings: d(),
            series: vec![Series::new(
                m::WAL_NEWEST,
                &[("source", "main")],
                &[(600.0, 80)],
            )],
            checks: vec![
                (70, vec![]),
                (
                    71,
                    vec![fires(
                        rules::WAL_ARCHIVE_STALE,
                        &[("source", "main")],
                        3660.0,
                    )],
                ),
            ],
        },
        Scenario {
            name: "no successful drill for longer than drill_max_age = 1h",
            settings: AlertSettings {
                drill_max_age: std::time::Duration::from_secs(3600),
                ..d()
            },
            series: vec![Series::new(
                m::DRILL_LAST_SUCCESS,
                &[("source", "main"), ("kind", "postgres")],
                &[(600.0, 80)],
            )],
            checks: vec![
                (70, vec![]),
                (
                    71,
                    vec![fires(
                        rules::DRILL_STALE,
                        &[("source", "main"), ("kind", "postgres")],
                        3660.0,
                    )],
                ),
            ],
        },
        Scenario {
            name: "the newest drill failed, then one passed",
            settings: d(),
            series: vec![Series::new(
                m::DRILL_LAST_PASSED,
                &[("source", "cache"), ("kind", "redis")],
                &[(1.0, 3), (0.0, 5), (1.0, 5)],
            )],
            checks: vec![
                (2, vec![]),
                (
                    3,
                    vec![fires(
                        rules::DRILL_FAILED,
                        &[("source", "cache"), ("kind", "redis")],
                        0.0,
                    )],
                ),
                (9, vec![]),
            ],
        },
        Scenario {
            name: "the agent not scraped for 5m (Prometheus only)",
            settings: d(),
            series: vec![Series::new("up", AGENT, &[(1.0, 5), (0.0, 10)])],
            checks: vec![
                (9, vec![]),
                (10, vec![fires(rules::AGENT_DOWN, AGENT, 0.0)]),
            ],
        },
        Scenario {
            name: "prometheus_job = backup-agents: another job's up is not ours",
            settings: AlertSettings {
                prometheus_job: "backup-agents".into(),
                ..d()
            },
            series: vec![Series::new("up", AGENT, &[(1.0, 5), (0.0, 10)])],
            checks: vec![(10, vec![])],
        },
    ]
}

/// What an expected alert looks like: labels (severity included,
/// alertname not) and rendered annotations.
fn expected(s: &AlertSettings, f: &Firing) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let rule = rules::rules(s)
        .into_iter()
        .find(|r| r.name == f.name)
        .expect("a rule of that name");
    let mut labels: BTreeMap<String, String> = f
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let annotations = BTreeMap::from([
        (
            "summary".to_string(),
            rules::render(rule.summary, &labels, f.value),
        ),
        (
            "description".to_string(),
            rules::render(rule.description, &labels, f.value),
        ),
    ]);
    labels.insert("severity".into(), rule.severity.as_str().into());
    (labels, annotations)
}

fn all_alert_names(s: &AlertSettings) -> Vec<&'static str> {
    rules::rules(s).iter().map(|r| r.name).collect()
}

#[test]
fn promtool_checks_the_rule_file_with_default_and_other_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let other = AlertSettings::from_config(&lifeboat_ops::config::AlertsSection {
        backup_max_age: Some("26h 30m".into()),
        size_change: Some(0.35),
        replication_lag: Some("90m".into()),
        repository_unreachable_for: Some("0s".into()),
        wal_max_age: Some("45s".into()),
        drill_max_age: Some("40d".into()),
        repeat_interval: Some("1h".into()),
        prometheus_job: Some("backup-agents".into()),
    })
    .unwrap();
    for (file, settings) in [
        ("default.yml", AlertSettings::default()),
        ("other.yml", other),
    ] {
        let text = rules::prometheus_rules(&settings);
        std::fs::write(dir.path().join(file), &text).unwrap();
        run_promtool(&["check", "rules", file], dir.path());
        for name in all_alert_names(&settings) {
            assert!(
                text.contains(&format!("alert: {name}\n")),
                "{name} in\n{text}"
            );
        }
    }
}

#[test]
fn promtool_test_rules_fires_each_alert_as_the_scenarios_say() {
    let dir = tempfile::tempdir().unwrap();
    for (i, sc) in scenarios().iter().enumerate() {
        let rules_file = format!("rules-{i}.yml");
        std::fs::write(
            dir.path().join(&rules_file),
            rules::prometheus_rules(&sc.settings),
        )
        .unwrap();
        let mut tests = Vec::new();
        for (minute, firing) in &sc.checks {
            // Every rule at every check: those not listed must not fire.
            for name in all_alert_names(&sc.settings) {
                let exp: Vec<_> = firing
                    .iter()
                    .filter(|f| f.name == name)
                    .map(|f| {
                        let (labels, annotations) = expected(&sc.settings, f);
                        json!({"exp_labels": labels, "exp_annotations": annotations})
                    })
                    .collect();
                tests.push(json!({
                    "eval_time": format!("{minute}m"),
                    "alertname": name,
                    "exp_alerts": exp,
                }));
            }
        }
        let series: Vec<_> = sc
            .series
            .iter()
            .map(|s| json!({"series": s.selector(), "values": s.values()}))
            .collect();
        let test = json!({
            "rule_files": [rules_file],
            "evaluation_interval": "1m",
            "tests": [{
                "name": sc.name,
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": tests,
            }],
        });
        let test_file = format!("test-{i}.yml");
        std::fs::write(
            dir.path().join(&test_file),
            serde_json::to_string_pretty(&test).unwrap(),
        )
        .unwrap();
        run_promtool(&["test", "rules", &test_file], dir.path());
    }
}

#[test]
fn the_agents_evaluator_fires_what_prometheus_fires() {
    for sc in scenarios() {
        assert!(
            sc.checks.windows(2).all(|w| w[0].0 < w[1].0),
            "{}: checks in time order, one per minute",
            sc.name
        );
        let mut ev = Evaluator::new(&sc.settings);
        let last = sc.checks.iter().map(|(t, _)| *t).max().unwrap_or(0);
        for minute in 0..=last {
            let samples: Vec<Sample> = sc
                .series
                .iter()
                .filter_map(|s| {
                    Some(Sample {
                        name: s.name,
                        labels: s.labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                        value: s.at(minute)?,
                    })
                })
                .collect();
            let now = Timestamp::from_second(i64::from(minute) * 60).unwrap();
            ev.evaluate(&samples, now);
            let Some((_, want)) = sc.checks.iter().find(|(t, _)| *t == minute) else {
                continue;
            };
            let mut want: Vec<_> = want
                .iter()
                .filter(|f| f.name != rules::AGENT_DOWN)
                .map(|f| (f.name, expected(&sc.settings, f)))
                .collect();
            want.sort_by(|a, b| (a.0, &a.1 .0).cmp(&(b.0, &b.1 .0)));
            let got: Vec<_> = ev
                .firing_alerts()
                .into_iter()
                .map(|a| {
                    let mut labels = a.labels.clone();
                    labels.remove("alertname");
                    (a.name, (labels, a.annotations))
                })
                .collect();
            assert_eq!(got, want, "{} at {minute}m", sc.name);
        }
    }
}
