//! Samples written in Prometheus' text exposition format (version 0.0.4):
//! what `GET /metrics` serves and `lifeboat metrics --textfile` writes for
//! node_exporter's textfile collector.
//!
//! Written here rather than with `prometheus-client`: that crate writes
//! OpenMetrics only (a counter's family typed under its name without
//! `_total`, and a closing `# EOF`), which node_exporter's textfile
//! collector does not read as counters; and the values are not
//! instruments updated in place but a view rendered from the job history
//! on every scrape. The format is a few lines of escaping; the tests run
//! `promtool check metrics` on real output.

use std::fmt::Write;

use crate::sample::{MetricType, Sample, CATALOGUE};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The samples in the text format; families in catalogue order, each with
/// its HELP and TYPE lines, the ones without samples left out.
pub fn encode(samples: &[Sample]) -> String {
    let mut out = String::new();
    for def in CATALOGUE {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.name == def.name).collect();
        if mine.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", def.name, escape_help(def.help));
        let _ = writeln!(
            out,
            "# TYPE {} {}",
            def.name,
            match def.kind {
                MetricType::Gauge => "gauge",
                MetricType::Counter => "counter",
            }
        );
        for s in mine {
            out.push_str(def.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&value(s.value));
            out.push('\n');
        }
    }
    out
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{self as m, series_labels};

    #[test]
    fn families_labels_and_values_are_written_as_prometheus_reads_them() {
        let samples = vec![
            Sample {
                name: m::BACKUP_LAST_SUCCESS,
                labels: series_labels("ma\"in\\x\n", "postgres", "full"),
                value: 1_764_295_200.5,
            },
            Sample {
                name: m::BACKUP_FAILURES,
                labels: series_labels("main", "postgres", "full"),
                value: 2.0,
            },
            Sample {
                name: m::CONFIG_RELOAD_OK,
                labels: vec![],
                value: 1.0,
            },
        ];
        let text = encode(&samples);
        assert!(text.contains("# TYPE lifeboat_backup_last_success_timestamp_seconds gauge\n"));
        assert!(text.contains(
            "lifeboat_backup_last_success_timestamp_seconds{source=\"ma\\\"in\\\\x\\n\",kind=\"postgres\",type=\"full\"} 1764295200.5\n"
        ));
        assert!(text.contains("# TYPE lifeboat_backup_failures_total counter\n"));
        assert!(text.contains(
            "lifeboat_backup_failures_total{source=\"main\",kind=\"postgres\",type=\"full\"} 2\n"
        ));
        assert!(text.contains("lifeboat_agent_config_last_reload_successful 1\n"));
        assert!(!text.contains("lifeboat_job_running"));
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(0.25), "0.25");
    }
}
