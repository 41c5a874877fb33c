//! The status page (`GET /`): one self-contained HTML page, inline CSS, no
//! JavaScript, that answers "are we protected?" in ten seconds.
//!
//! From top to bottom: a headline ("All sources protected" / "2 sources
//! need attention"), the alerts firing, a card per source (a badge —
//! colour *and* word: Protected, At risk, Unprotected — the reason, the last
//! good backup, RPO, next run, WAL age and archiver lag for PostgreSQL, the
//! last failure, a chart of 90 days of backup sizes and durations as inline
//! SVG), the schedule, and the recent job log, newest first, with failures'
//! messages in full.
//!
//! Every text from the model is HTML-escaped, and messages pass through
//! [`crate::redact`] first ([`Status::redacted`]). The figures are also in
//! stable `data-*` attributes, which tests (and scrapers) read instead of
//! the prose:
//!
//! | element | attributes |
//! |---|---|
//! | `<body>` | `data-generated` (RFC 3339), `data-hostname`, `data-version`, `data-repository-up` (`true`/`false`) |
//! | headline `<h1>` | `data-headline`, `data-attention` (sources not green) |
//! | alert `<li>` | `data-alert` (alertname), `data-severity`, `data-alert-source`, `data-since` |
//! | source `<section>` | `data-source` (`kind/name`), `data-kind`, `data-name`, `data-health` (`green`/`amber`/`red`), `data-rpo-seconds`; with a good backup `data-age-seconds`, `data-size-bytes`, `data-stored-bytes`, `data-duration-seconds`, `data-backup-type`, `data-backup-time`; `data-next-run`; `data-wal-age-seconds`, `data-wal-lag-seconds`; `data-history-points` |
//! | chart `<svg>` | `data-chart` (`kind/name`), `data-points`; an empty chart is a `<p data-chart-empty="kind/name">` |
//! | schedule `<tr>` | `data-scheduled-job`, `data-next-run`, `data-running` |
//! | log `<tr>` | `data-job`, `data-job-outcome`, `data-started`, `data-duration-seconds`; its message `data-job-error` |
//!
//! Numbers are written as Rust prints an `f64` or `u64` (shortest form that
//! reads back exactly); an attribute is left out when the model has no value.

use std::fmt::{self, Display, Write};

use jiff::Timestamp;
use lifeboat_ops::fmt::size;

use crate::state::{words, CHART_DAYS};
use crate::status::{AlertStatus, Health, JobStatus, RunSummary, SourceStatus, Status};

/// The page for `status` (messages redacted here).
pub fn render(status: &Status) -> String {
    let s = status.redacted();
    let mut out = String::with_capacity(64 * 1024);
    // Writing to a String cannot fail.
    let _ = page(&mut out, &s);
    out
}

/// HTML-escaped text, for element content and quoted attribute values.
struct E<'a>(&'a str);

impl Display for E<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

fn health_class(h: Health) -> &'static str {
    match h {
        Health::Green => "green",
        Health::Amber => "amber",
        Health::Red => "red",
    }
}

/// The badge's word: the colour is never the only sign.
fn health_word(h: Health) -> &'static str {
    match h {
        Health::Green => "Protected",
        Health::Amber => "At risk",
        Health::Red => "Unprotected",
    }
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Green => 0,
        Health::Amber => 1,
        Health::Red => 2,
    }
}

fn kind_name(kind: &str) -> &str {
    match kind {
        "postgres" => "PostgreSQL",
        "redis" => "Redis",
        "files" => "Files",
        "elasticsearch" => "Elasticsearch",
        other => other,
    }
}

/// `2026-11-28 16:05 UTC`.
fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn secs_of(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// `in 2 h 10 min`, or `due now` when the time has passed.
fn until(t: Timestamp, now: Timestamp) -> String {
    let d = secs_of(t) - secs_of(now);
    if d < 1.0 {
        "due now".into()
    } else {
        format!("in {}", words(d))
    }
}

/// An outcome's colour class in the job log.
fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "success" => "green",
        "failed" | "timeout" => "red",
        "cancelled" => "amber",
        _ => "grey",
    }
}

const STYLE: &str = r#"
:root { --green:#1a7f37; --green-bg:#dafbe1; --amber:#9a6700; --amber-bg:#fff8c5;
  --red:#cf222e; --red-bg:#ffebe9; --grey:#57606a; --grey-bg:#eaeef2; --line:#d0d7de;
  --ink:#1f2328; --muted:#59636e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;
  color:var(--ink); background:#f6f8fa; }
main { max-width:1100px; margin:0 auto; padding:0 20px 40px; }
header.top { padding:22px 20px 18px; margin:0 auto 18px; max-width:1100px; }
header.top .brand { color:var(--muted); font-size:13px; letter-spacing:.02em; }
header.top h1 { margin:4px 0 6px; font-size:30px; line-height:1.2; display:flex; align-items:center; gap:12px; }
header.top .meta, header.top .counts { margin:2px 0; color:var(--muted); font-size:14px; }
.mark { display:inline-block; width:18px; height:18px; border-radius:50%; flex:none; }
.mark.green { background:var(--green); } .mark.amber { background:#d4a72c; } .mark.red { background:var(--red); }
h2 { font-size:18px; margin:26px 0 10px; }
.badge { display:inline-flex; align-items:center; gap:6px; padding:2px 10px 2px 8px; border-radius:999px;
  font-weight:600; font-size:13px; border:1px solid transparent; white-space:nowrap; }
.badge::before { content:""; width:9px; height:9px; border-radius:50%; background:currentColor; }
.badge.green { color:var(--green); background:var(--green-bg); border-color:#aceebb; }
.badge.amber { color:var(--amber); background:var(--amber-bg); border-color:#f0d574; }
.badge.red { color:var(--red); background:var(--red-bg); border-color:#ffcecb; }
.badge.grey { color:var(--grey); background:var(--grey-bg); border-color:var(--line); }
.down { color:var(--red); font-weight:600; }
ul.alerts { list-style:none; padding:0; margin:0; }
ul.alerts li { background:#fff; border:1px solid var(--line); border-left:5px solid var(--red);
  border-radius:6px; padding:8px 12px; margin:0 0 8px; }
ul.alerts li.warning { border-left-color:#d4a72c; }
ul.alerts .name { font-weight:600; margin:0 6px; }
ul.alerts .labels, ul.alerts .since { color:var(--muted); font-size:13px; }
.none { color:var(--muted); margin:0; }
.source { background:#fff; border:1px solid var(--line); border-left:6px solid var(--line);
  border-radius:8px; padding:14px 18px 16px; margin:0 0 16px; }
.source.green { border-left-color:var(--green); } .source.amber { border-left-color:#d4a72c; }
.source.red { border-left-color:var(--red); }
.source .head { display:flex; align-items:center; gap:12px; flex-wrap:wrap; }
.source h3 { margin:0; font-size:20px; overflow-wrap:anywhere; }
.source h3 .kind { color:var(--muted); font-weight:400; font-size:15px; margin-left:6px; }
.source .reason { margin:6px 0 10px; overflow-wrap:anywhere; }
dl.facts { display:grid; grid-template-columns:repeat(auto-fill,minmax(230px,1fr)); gap:10px 22px; margin:0 0 10px; }
dl.facts dt { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
dl.facts dd { margin:1px 0 0; font-weight:600; }
dl.facts dd small { display:block; font-weight:400; color:var(--muted); font-size:13px; }
.failure { background:var(--red-bg); border:1px solid #ffcecb; border-radius:6px; padding:8px 10px; margin:6px 0 10px; }
.failure b { color:var(--red); }
pre { white-space:pre-wrap; overflow-wrap:anywhere; margin:4px 0 0; font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace; }
.source-alerts { margin:0 0 8px; font-size:14px; }
.source-alerts .name { font-weight:600; }
figure.chart { margin:6px 0 0; }
svg.chart { display:block; width:100%; height:auto; }
svg.key { vertical-align:middle; margin-right:4px; }
svg.chart text { font:11px system-ui,"Liberation Sans",sans-serif; fill:var(--muted); }
svg.chart text.dur { fill:#d9480f; }
figcaption { font-size:13px; color:var(--muted); display:flex; gap:14px; flex-wrap:wrap; margin-top:2px; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; vertical-align:-1px; margin-right:4px; }
p.empty { color:var(--muted); background:#f6f8fa; border:1px dashed var(--line); border-radius:6px; padding:18px; text-align:center; margin:6px 0 0; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); border-radius:8px; font-size:14px; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid #eaeef2; vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); background:#f6f8fa; }
td.num { white-space:nowrap; }
td .job { font-weight:600; overflow-wrap:anywhere; }
td .err { color:var(--red); }
code { font:12.5px ui-monospace,"DejaVu Sans Mono",monospace; }
footer { color:var(--muted); font-size:13px; margin-top:24px; }
"#;

/// Dollars as people read them: cents for small sums.
fn dollars(x: f64) -> String {
    if x >= 100.0 {
        format!("${x:.0}")
    } else if x >= 0.01 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// Bytes as people read them.
fn bytes_text(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A duration ago, as people read it.
fn ago(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{:.1} d", s as f64 / 86_400.0),
    }
}

fn page(out: &mut String, s: &Status) -> fmt::Result {
    let attention = s
        .sources
        .iter()
        .filter(|x| x.health != Health::Green)
        .count();
    let worst = s
        .sources
        .iter()
        .map(|x| x.health)
        .max_by_key(|h| rank(*h))
        .unwrap_or(Health::Green);
    let headline = match (s.sources.len(), attention) {
        (0, _) => "No sources configured".to_string(),
        (_, 0) => "All sources protected".to_string(),
        (_, 1) => "1 source needs attention".to_string(),
        (_, n) => format!("{n} sources need attention"),
    };
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"60\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>{} — lifeboat on {}</title>\n<style>{STYLE}</style>\n</head>\n",
        E(&headline),
        E(&s.hostname)
    )?;
    writeln!(
        out,
        "<body data-generated=\"{}\" data-hostname=\"{}\" data-version=\"{}\" data-repository-up=\"{}\">",
        s.generated,
        E(&s.hostname),
        E(&s.version),
        s.repository_up
    )?;
    // The headline.
    write!(
        out,
        "<header class=\"top\">\n<div class=\"brand\">lifeboat · {}</div>\n\
         <h1 data-headline data-attention=\"{attention}\"><span class=\"mark {}\"></span>{}</h1>\n",
        E(&s.hostname),
        health_class(worst),
        E(&headline)
    )?;
    let count = |h: Health| s.sources.iter().filter(|x| x.health == h).count();
    writeln!(
        out,
        "<p class=\"counts\">{} protected · {} at risk · {} unprotected · {} alert{} firing</p>",
        count(Health::Green),
        count(Health::Amber),
        count(Health::Red),
        s.alerts.len(),
        if s.alerts.len() == 1 { "" } else { "s" }
    )?;
    write!(
        out,
        "<p class=\"meta\">{} · lifeboat {} · repository {} · this page refreshes every minute</p>\n</header>\n<main>\n",
        when(s.generated),
        E(&s.version),
        if s.repository_up {
            "reachable"
        } else {
            "<span class=\"down\">unreachable</span>"
        }
    )?;

    // Alerts.
    out.push_str("<section class=\"alerts\">\n<h2>Alerts firing</h2>\n");
    if s.alerts.is_empty() {
        out.push_str("<p class=\"none\">No alert is firing.</p>\n");
    } else {
        out.push_str("<ul class=\"alerts\">\n");
        for a in &s.alerts {
            alert(out, a, s.generated)?;
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");

    // Sources.
    out.push_str("<section class=\"sources\">\n<h2>Sources</h2>\n");
    if s.sources.is_empty() {
        out.push_str("<p class=\"none\">The config file names no source.</p>\n");
    }
    for src in &s.sources {
        source(out, src, s)?;
    }
    out.push_str("</section>\n");

    // Replicas and cost.
    if !s.replicas.is_empty() {
        out.push_str("<section class=\"replicas\">\n<h2>Replicas</h2>\n<table>\n<thead><tr><th>Replica</th><th>Store</th><th>Behind by</th></tr></thead>\n<tbody>\n");
        for r in &s.replicas {
            let (state, text) = match r.up {
                Some(true) => ("up", "answers"),
                Some(false) => ("down", "<span class=\"down\">unreachable</span>"),
                None => ("unknown", "<span class=\"none\">not measured yet</span>"),
            };
            let lag = match r.lag_seconds {
                Some(l) if l < 1.0 => "up to date".to_string(),
                Some(l) => ago(l),
                None => "—".to_string(),
            };
            writeln!(
                out,
                "<tr data-replica=\"{}\" data-state=\"{state}\" data-lag-seconds=\"{}\"><td>{}</td><td>{text}</td><td>{}</td></tr>",
                E(&r.name),
                r.lag_seconds.map(|l| format!("{l:.0}")).unwrap_or_default(),
                E(&r.name),
                E(&lag)
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }
    if let Some(c) = &s.cost {
        writeln!(
            out,
            "<section class=\"cost\" data-cost-monthly=\"{:.6}\">\n<h2>Cost <small class=\"none\">measured {}</small></h2>\n<table>\n<thead><tr><th>Repository</th><th>Stored</th><th>Per month</th></tr></thead>\n<tbody>",
            c.monthly_total,
            when(c.measured)
        )?;
        for (name, monthly, bytes) in &c.repositories {
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                E(name),
                E(&bytes_text(*bytes)),
                dollars(*monthly)
            )?;
        }
        writeln!(
            out,
            "</tbody>\n</table>\n<p>All repositories: <strong>{}</strong> a month. Plain compressed dumps of every backup kept would cost {} a month: the repository stores {:.1}× less.</p>\n<p class=\"none\">{}</p>\n</section>",
            dollars(c.monthly_total),
            dollars(c.baseline_monthly),
            c.baseline_ratio,
            E(&c.prices_source)
        )?;
    }

    // The schedule.
    if !s.jobs.is_empty() {
        out.push_str("<section class=\"schedule\">\n<h2>Schedule</h2>\n<table>\n<thead><tr><th>Job</th><th>Schedule</th><th>Next run</th><th>Last run</th></tr></thead>\n<tbody>\n");
        for j in &s.jobs {
            job(out, j, s.generated)?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }

    // The job log.
    out.push_str("<section class=\"log\">\n<h2>Recent runs <small class=\"none\">newest first</small></h2>\n");
    if s.recent.is_empty() {
        out.push_str("<p class=\"none\">No run recorded yet.</p>\n");
    } else {
        out.push_str("<table>\n<thead><tr><th>Started</th><th>Job</th><th>Outcome</th><th>Took</th><th>Host</th><th>Snapshot</th></tr></thead>\n<tbody>\n");
        for r in &s.recent {
            run(out, r)?;
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
    write!(
        out,
        "<footer>Badges: <b>Protected</b> — the newest good backup is inside the RPO and the last run succeeded; \
         <b>At risk</b> — inside the RPO, but the last run failed or over 80 % of the RPO is used; \
         <b>Unprotected</b> — no good backup inside the RPO. Also as JSON: <code>/api/status</code>; metrics: <code>/metrics</code>.</footer>\n\
         </main>\n</body>\n</html>\n"
    )
}

fn alert(out: &mut String, a: &AlertStatus, now: Timestamp) -> fmt::Result {
    let source = a.labels.get("source").map(String::as_str).unwrap_or("");
    let class = if a.severity == "critical" {
        "red"
    } else {
        "amber"
    };
    write!(
        out,
        "<li class=\"{}\" data-alert=\"{}\" data-severity=\"{}\" data-alert-source=\"{}\" data-since=\"{}\">\
         <span class=\"badge {class}\">{}</span><span class=\"name\">{}</span>{}",
        E(&a.severity),
        E(&a.alertname),
        E(&a.severity),
        E(source),
        a.since,
        E(&a.severity),
        E(&a.alertname),
        E(&a.summary),
    )?;
    let labels: Vec<String> = a
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", E(k), E(v)))
        .collect();
    writeln!(
        out,
        "<br><span class=\"labels\">{}</span> <span class=\"since\">· firing for {} (since {})</span></li>",
        labels.join(" "),
        words(secs_of(now) - secs_of(a.since)),
        when(a.since)
    )
}

fn source(out: &mut String, src: &SourceStatus, s: &Status) -> fmt::Result {
    let key = format!("{}/{}", src.kind, src.name);
    let h = health_class(src.health);
    write!(
        out,
        "<section class=\"source {h}\" data-source=\"{}\" data-kind=\"{}\" data-name=\"{}\" data-health=\"{h}\" data-rpo-seconds=\"{}\" data-history-points=\"{}\"",
        E(&key),
        E(&src.kind),
        E(&src.name),
        src.rpo_seconds,
        src.history.len()
    )?;
    if let Some(g) = &src.last_good {
        write!(
            out,
            " data-age-seconds=\"{}\" data-size-bytes=\"{}\" data-stored-bytes=\"{}\" data-duration-seconds=\"{}\" data-backup-type=\"{}\" data-backup-time=\"{}\"",
            g.age_seconds,
            g.size_bytes,
            g.stored_bytes,
            g.duration_seconds,
            E(&g.ty),
            g.time
        )?;
    }
    if let Some(t) = src.next_run {
        write!(out, " data-next-run=\"{t}\"")?;
    }
    if let Some(a) = src.wal_age_seconds {
        write!(out, " data-wal-age-seconds=\"{a}\"")?;
    }
    if let Some(l) = src.wal_archiver_lag_seconds {
        write!(out, " data-wal-lag-seconds=\"{l}\"")?;
    }
    write!(
        out,
        ">\n<div class=\"head\"><span class=\"badge {h}\">{}</span><h3>{}<span class=\"kind\">{}</span></h3></div>\n\
         <p class=\"reason\">{}</p>\n<dl class=\"facts\">\n",
        health_word(src.health),
        E(&src.name),
        E(kind_name(&src.kind)),
        E(&src.reason)
    )?;
    match &src.last_good {
        Some(g) => writeln!(
            out,
            "<div><dt>Last good backup</dt><dd>{} ago<small>{} · {} · took {} · {}</small></dd></div>",
            words(g.age_seconds),
            E(&g.ty),
            size(g.size_bytes),
            words(g.duration_seconds),
            when(g.time)
        )?,
        None => out.push_str("<div><dt>Last good backup</dt><dd>none yet</dd></div>\n"),
    }
    writeln!(
        out,
        "<div><dt>RPO</dt><dd>{}<small>the newest good backup must be younger</small></dd></div>",
        words(src.rpo_seconds as f64)
    )?;
    match src.next_run {
        Some(t) => writeln!(
            out,
            "<div><dt>Next run</dt><dd>{}<small>{}</small></dd></div>",
            until(t, s.generated),
            when(t)
        )?,
        None => out.push_str("<div><dt>Next run</dt><dd>not scheduled</dd></div>\n"),
    }
    if src.kind == "postgres" {
        let age = src
            .wal_age_seconds
            .map_or("unknown".to_string(), |a| format!("{} ago", words(a)));
        let lag = src
            .wal_archiver_lag_seconds
            .map_or("archiver lag unknown".to_string(), |l| {
                format!("archiver lag {}", words(l))
            });
        writeln!(
            out,
            "<div><dt>WAL archive: newest segment</dt><dd>{age}<small>{lag}</small></dd></div>"
        )?;
    }
    out.push_str("</dl>\n");
    if let Some(f) = &src.last_failure {
        writeln!(
            out,
            "<div class=\"failure\"><b>Last run failed</b> ({}, {}, {} ago)<pre>{}</pre></div>",
            E(&f.ty),
            when(f.time),
            words(secs_of(s.generated) - secs_of(f.time)),
            E(&f.error)
        )?;
    }
    let mine: Vec<&AlertStatus> = s
        .alerts
        .iter()
        .filter(|a| {
            a.labels.get("source") == Some(&src.name)
                && a.labels.get("kind").is_none_or(|k| k == &src.kind)
        })
        .collect();
    if !mine.is_empty() {
        out.push_str("<p class=\"source-alerts\">Firing: ");
        for (i, a) in mine.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            write!(
                out,
                "<span class=\"name\" data-source-alert=\"{}\">{}</span> — {}",
                E(&a.alertname),
                E(&a.alertname),
                E(&a.summary)
            )?;
        }
        out.push_str("</p>\n");
    }
    chart(out, src, &key, s.generated)?;
    out.push_str("</section>\n");
    Ok(())
}

fn job(out: &mut String, j: &JobStatus, now: Timestamp) -> fmt::Result {
    write!(
        out,
        "<tr data-scheduled-job=\"{}\" data-running=\"{}\"",
        E(&j.job),
        j.running
    )?;
    if let Some(t) = j.next_run {
        write!(out, " data-next-run=\"{t}\"")?;
    }
    write!(
        out,
        "><td><span class=\"job\">{}</span></td><td><code>{}</code></td><td class=\"num\">",
        E(&j.job),
        E(&j.schedule)
    )?;
    if j.running {
        out.push_str("<span class=\"badge grey\">running now</span><br>");
    }
    match j.next_run {
        Some(t) => write!(
            out,
            "{} <small class=\"none\">{}</small>",
            until(t, now),
            when(t)
        )?,
        None => out.push('—'),
    }
    out.push_str("</td><td class=\"num\">");
    match (&j.last_outcome, j.last_run) {
        (Some(o), Some(t)) => write!(
            out,
            "<span class=\"badge {}\">{}</span> {} ago",
            outcome_class(o),
            E(o),
            words(secs_of(now) - secs_of(t))
        )?,
        (Some(o), None) => write!(
            out,
            "<span class=\"badge {}\">{}</span>",
            outcome_class(o),
            E(o)
        )?,
        _ => out.push_str("never"),
    }
    out.push_str("</td></tr>\n");
    Ok(())
}

fn run(out: &mut String, r: &RunSummary) -> fmt::Result {
    write!(
        out,
        "<tr data-job=\"{}\" data-job-outcome=\"{}\" data-started=\"{}\" data-duration-seconds=\"{}\">\
         <td class=\"num\">{}</td><td><span class=\"job\">{}</span>",
        E(&r.job),
        E(&r.outcome),
        r.started,
        r.duration_seconds,
        when(r.started),
        E(&r.job)
    )?;
    if let Some(e) = &r.error {
        write!(out, "<pre class=\"err\" data-job-error>{}</pre>", E(e))?;
    }
    writeln!(
        out,
        "</td><td><span class=\"badge {}\">{}</span></td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
        outcome_class(&r.outcome),
        E(&r.outcome),
        words(r.duration_seconds),
        E(&r.hostname),
        E(r.snapshot.as_deref().map_or("—", |s| s.get(..8).unwrap_or(s)))
    )
}

/// A bar colour per backup type.
fn type_colour(ty: &str, index: usize) -> &'static str {
    const OTHERS: [&str; 4] = ["#2a9d8f", "#7b5cc7", "#8d6e63", "#5c7cfa"];
    match ty {
        "full" => "#2f6fdb",
        "incr" => "#93b8f5",
        "dump" => "#7b5cc7",
        "backup" => "#2a9d8f",
        _ => OTHERS[index % OTHERS.len()],
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is >= `x`.
fn nice_step(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= x * (1.0 - 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

/// A step of the size axis (4 steps reach the top) and its unit.
fn size_axis(max: u64) -> (f64, f64, &'static str) {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut scale = 1.0f64;
    while max as f64 >= scale * 1024.0 && unit < UNITS.len() - 1 {
        scale *= 1024.0;
        unit += 1;
    }
    let step = nice_step(max as f64 / scale / 4.0);
    let step = if unit == 0 {
        step.max(1.0).ceil()
    } else {
        step
    };
    (step, scale, UNITS[unit])
}

/// A step of the duration axis in seconds (4 steps reach the top).
fn duration_step(max: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0,
    ];
    let want = max / 4.0;
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= want)
        .unwrap_or_else(|| (want / 86400.0).ceil() * 86400.0)
}

/// A number without trailing zeros: `2.5`, `10`, `0.25`.
fn plain(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Sizes as bars (coloured by type, left axis) and durations as a line
/// (right axis) over the last [`CHART_DAYS`] days.
fn chart(out: &mut String, src: &SourceStatus, key: &str, now: Timestamp) -> fmt::Result {
    let points = &src.history;
    if points.is_empty() {
        return writeln!(
            out,
            "<p class=\"empty\" data-chart-empty=\"{}\">no backups in the last {CHART_DAYS} days</p>",
            E(key)
        );
    }
    const W: f64 = 1000.0;
    const H: f64 = 240.0;
    const L: f64 = 74.0;
    const R: f64 = 64.0;
    const T: f64 = 12.0;
    const B: f64 = 30.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let end = secs_of(now);
    let span = CHART_DAYS as f64 * 86400.0;
    let start = end - span;
    let x = |t: Timestamp| L + ((secs_of(t) - start) / span).clamp(0.0, 1.0) * pw;
    let max_size = points.iter().map(|p| p.size_bytes).max().unwrap_or(0);
    let (sstep, scale, unit) = size_axis(max_size);
    let smax = 4.0 * sstep * scale;
    let max_dur = points
        .iter()
        .map(|p| p.duration_seconds)
        .fold(0.0, f64::max);
    let dstep = duration_step(max_dur);
    let dmax = 4.0 * dstep;
    let ys = |b: u64| T + ph - (b as f64 / smax).min(1.0) * ph;
    let yd = |d: f64| T + ph - (d / dmax).clamp(0.0, 1.0) * ph;
    writeln!(
        out,
        "<figure class=\"chart\"><svg class=\"chart\" data-chart=\"{}\" data-points=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"Backup sizes and durations of {} over the last {CHART_DAYS} days\" xmlns=\"http://www.w3.org/2000/svg\">",
        E(key),
        points.len(),
        E(key)
    )?;
    // Grid and the two value axes.
    for i in 0..=4 {
        let y = T + ph - ph * f64::from(i) / 4.0;
        writeln!(
            out,
            "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"1\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text class=\"dur\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            L + pw,
            if i == 0 { "#8c959f" } else { "#eaeef2" },
            L - 6.0,
            y + 4.0,
            if i == 0 {
                "0".to_string()
            } else {
                format!("{} {unit}", plain(sstep * f64::from(i)))
            },
            L + pw + 6.0,
            y + 4.0,
            if i == 0 {
                "0".to_string()
            } else {
                words(dstep * f64::from(i))
            }
        )?;
    }
    // Time axis: a tick every 30 days, the date under it.
    let mut d = 0;
    while d <= CHART_DAYS {
        let t = now - jiff::SignedDuration::from_hours(24 * (CHART_DAYS - d));
        let xt = x(t);
        let anchor = match d {
            0 => "start",
            _ if d == CHART_DAYS => "end",
            _ => "middle",
        };
        writeln!(
            out,
            "<line x1=\"{xt:.1}\" x2=\"{xt:.1}\" y1=\"{T}\" y2=\"{:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{xt:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            T + ph + 4.0,
            H - 10.0,
            if d == CHART_DAYS {
                "today".to_string()
            } else {
                t.strftime("%b %d").to_string()
            }
        )?;
        d += 30;
    }
    // Sizes as bars.
    let mut types: Vec<&str> = Vec::new();
    for p in points {
        if !types.contains(&p.ty.as_str()) {
            types.push(&p.ty);
        }
    }
    let bw = (pw / (points.len() as f64 * 1.6)).clamp(2.0, 12.0);
    let mut by_size: Vec<_> = points.iter().collect();
    by_size.sort_by_key(|p| std::cmp::Reverse(p.size_bytes));
    for p in by_size {
        let xc = x(p.time).clamp(L + bw / 2.0, L + pw - bw / 2.0);
        let top = ys(p.size_bytes).min(T + ph - 1.0);
        let colour = type_colour(&p.ty, types.iter().position(|t| *t == p.ty).unwrap_or(0));
        writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} · {} · {} · took {}</title></rect>",
            xc - bw / 2.0,
            T + ph - top,
            E(&p.ty),
            when(p.time),
            size(p.size_bytes),
            words(p.duration_seconds)
        )?;
    }
    // Durations: a line per type (a full and an incremental take very
    // different times), with points when they are few enough to see.
    for (i, t) in types.iter().enumerate() {
        let mine: Vec<_> = points.iter().filter(|p| p.ty == *t).collect();
        let line: Vec<String> = mine
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.time), yd(p.duration_seconds)))
            .collect();
        writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{DURATION}\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-dasharray=\"{}\"/>",
            line.join(" "),
            DASHES[i % DASHES.len()]
        )?;
        if mine.len() <= 40 {
            for p in mine {
                writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{DURATION}\" stroke=\"#fff\" stroke-width=\"1\"><title>{} took {}</title></circle>",
                    x(p.time),
                    yd(p.duration_seconds),
                    E(&p.ty),
                    words(p.duration_seconds)
                )?;
            }
        }
    }
    out.push_str("</svg>\n<figcaption>");
    for (i, t) in types.iter().enumerate() {
        write!(
            out,
            "<span><span class=\"swatch\" style=\"background:{}\"></span>{} size</span>",
            type_colour(t, i),
            E(t)
        )?;
    }
    for (i, t) in types.iter().enumerate() {
        write!(
            out,
            "<span><svg class=\"key\" width=\"22\" height=\"8\" aria-hidden=\"true\"><line x1=\"1\" x2=\"21\" y1=\"4\" y2=\"4\" stroke=\"{DURATION}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/></svg>{} duration (right axis)</span>",
            DASHES[i % DASHES.len()],
            E(t)
        )?;
    }
    writeln!(
        out,
        "<span>{} good backup{} in {CHART_DAYS} days</span></figcaption></figure>",
        points.len(),
        if points.len() == 1 { "" } else { "s" }
    )
}

/// The colour of the duration lines.
const DURATION: &str = "#d9480f";
/// Their dash patterns, one per backup type.
const DASHES: [&str; 3] = ["none", "6 3", "2 3"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackupPoint, FailurePoint};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn status() -> Status {
        let now = 1_800_000_000;
        Status {
            generated: ts(now),
            hostname: "db1".into(),
            version: "0.1.0".into(),
            repository_up: true,
            sources: vec![SourceStatus {
                kind: "postgres".into(),
                name: "<script>alert(1)</script>".into(),
                health: Health::Amber,
                reason: "last run failed: postgresql://u:secret@h/db refused".into(),
                rpo_seconds: 90000,
                last_good: None,
                last_failure: Some(FailurePoint {
                    ty: "full".into(),
                    time: ts(now - 60),
                    error: "connect to host=h password=secret failed".into(),
                }),
                next_run: Some(ts(now + 3600)),
                wal_age_seconds: Some(12.5),
                wal_archiver_lag_seconds: None,
                history: vec![BackupPoint {
                    ty: "full".into(),
                    time: ts(now - 86400),
                    age_seconds: 86400.0,
                    size_bytes: 3 << 30,
                    stored_bytes: 1 << 20,
                    duration_seconds: 250.0,
                    snapshot: None,
                }],
            }],
            jobs: vec![],
            alerts: vec![],
            recent: vec![],
            replicas: vec![crate::status::ReplicaView {
                name: "dr <eu>".into(),
                up: Some(false),
                lag_seconds: Some(4000.0),
            }],
            cost: Some(crate::status::CostView {
                prices_source: "list <prices>".into(),
                repositories: vec![("default".into(), 1.25, 3 << 30)],
                monthly_total: 1.25,
                baseline_monthly: 9.5,
                baseline_ratio: 7.6,
                measured: "2026-01-01T00:00:00Z".parse().unwrap(),
            }),
            key_epoch: None,
        }
    }

    #[test]
    fn replicas_and_cost_are_shown_escaped() {
        let html = render(&status());
        assert!(
            html.contains(
                "data-replica=\"dr &lt;eu&gt;\" data-state=\"down\" data-lag-seconds=\"4000\""
            ),
            "{html}"
        );
        assert!(html.contains("1.1 h"), "{html}");
        assert!(html.contains("data-cost-monthly=\"1.250000\""), "{html}");
        assert!(
            html.contains("$1.25") && html.contains("$9.50") && html.contains("7.6×"),
            "{html}"
        );
        assert!(html.contains("list &lt;prices&gt;"), "{html}");
    }

    #[test]
    fn text_is_escaped_and_secrets_redacted() {
        let html = render(&status());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("secret"), "{html}");
        assert!(html.contains("postgresql://u:***@h/db"));
        assert!(html.contains("password=***"));
        assert!(html.contains("data-health=\"amber\""));
        assert!(html.contains("data-wal-age-seconds=\"12.5\""));
        assert!(html.contains("At risk"));
    }

    #[test]
    fn headline_counts_sources_that_need_attention() {
        let mut s = status();
        assert!(render(&s).contains("1 source needs attention"));
        s.sources[0].health = Health::Green;
        assert!(render(&s).contains("All sources protected"));
        s.sources.push(s.sources[0].clone());
        s.sources[0].health = Health::Red;
        s.sources[1].health = Health::Amber;
        assert!(render(&s).contains("2 sources need attention"));
    }

    #[test]
    fn an_empty_history_says_so() {
        let mut s = status();
        s.sources[0].history.clear();
        let html = render(&s);
        assert!(html.contains("no backups in the last 90 days"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn axes_step_nicely() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(7.0), 10.0);
        let (step, scale, unit) = size_axis(3 << 30);
        assert_eq!((step * 4.0, scale, unit), (4.0, f64::from(1 << 30), "GiB"));
        assert_eq!(duration_step(250.0), 120.0);
        assert_eq!(plain(2.50), "2.5");
        assert_eq!(plain(10.0), "10");
    }
}
