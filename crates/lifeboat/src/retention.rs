//! The retention commands: forget, hold, release.

use lifeboat_ops::retention::{ForgetOptions, ForgetReport, PolicyFrom};
use lifeboat_ops::{Error, Result};
use lifeboat_repo::retention::{Policy, Within, ALL};
use lifeboat_repo::{Hold, Timestamp};
use serde_json::json;

use crate::context::Ctx;
use crate::output::print_json;

/// `lifeboat forget`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ForgetArgs {
    /// Only this source (a config NAME, or the paths of a files source, as
    /// `snapshots --json` shows `source_name`); repeatable
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Say what would be forgotten, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Then prune: reclaim the space the forgotten snapshots held
    #[arg(long)]
    pub prune: bool,
    /// Keep the newest N snapshots (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the newest N hours (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// … of each of the newest N days
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// … of each of the newest N ISO weeks
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// … of each of the newest N months
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// … of each of the newest N years
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within this span of the newest (7d, 1y6m, 2d12h; m = months)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within this span of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// … of each day
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// … of each ISO week
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// … of each month
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// … of each year
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots carrying these tags (`a,b`: all of them); repeatable
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Count days, weeks, months and years in this IANA time zone
    /// (default: `[retention] timezone`, else UTC)
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
}

impl ForgetArgs {
    /// The rules the flags set.
    fn policy(&self) -> Result<Policy> {
        let count = |flag: &str, v: Option<i64>| -> Result<Option<u32>> {
            match v {
                None => Ok(None),
                Some(-1) => Ok(Some(ALL)),
                Some(n) if (0..i64::from(ALL)).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(Error::usage(format!(
                    "--{flag} {n}: give a count, 0 or more, or -1 for no limit"
                ))),
            }
        };
        let span = |flag: &str, v: &Option<String>| -> Result<Option<Within>> {
            v.as_deref()
                .map(|t| {
                    t.parse::<Within>()
                        .map_err(|e| Error::usage(format!("--{flag}: {e}")))
                })
                .transpose()
        };
        Ok(Policy {
            keep_last: count("keep-last", self.keep_last)?,
            keep_hourly: count("keep-hourly", self.keep_hourly)?,
            keep_daily: count("keep-daily", self.keep_daily)?,
            keep_weekly: count("keep-weekly", self.keep_weekly)?,
            keep_monthly: count("keep-monthly", self.keep_monthly)?,
            keep_yearly: count("keep-yearly", self.keep_yearly)?,
            keep_within: span("keep-within", &self.keep_within)?,
            keep_within_hourly: span("keep-within-hourly", &self.keep_within_hourly)?,
            keep_within_daily: span("keep-within-daily", &self.keep_within_daily)?,
            keep_within_weekly: span("keep-within-weekly", &self.keep_within_weekly)?,
            keep_within_monthly: span("keep-within-monthly", &self.keep_within_monthly)?,
            keep_within_yearly: span("keep-within-yearly", &self.keep_within_yearly)?,
            keep_tags: lifeboat_ops::config::tag_lists(&self.keep_tags),
        })
    }
}

pub(crate) fn forget(ctx: &Ctx, args: &ForgetArgs) -> Result<()> {
    let opts = ForgetOptions {
        sources: args.sources.clone(),
        flags: args.policy()?,
        timezone: args.timezone.clone(),
        dry_run: args.dry_run,
    };
    // Checked before the repository is opened: a bad zone is a usage error.
    if let Some(tz) = &opts.timezone {
        lifeboat_ops::config::time_zone(tz)?;
    }
    lifeboat_ops::config::RetentionSection::time_zone(&ctx.session.file.retention)?;
    let repo = ctx.open()?;
    let report = lifeboat_ops::retention::forget(&repo, &ctx.session.file, &opts)?;
    if !ctx.json {
        print_forget(&report);
    }
    let mut v = json!(report);
    if args.prune {
        // `forget --prune`: then prune with its defaults, as `lifeboat
        // prune` (a dry run says what it would free).
        let prune = crate::maintenance::PruneArgs {
            dry_run: args.dry_run,
            max_unused: None,
            max_repack: None,
            delete_delay: None,
        };
        let (pr, pv) = crate::maintenance::prune_open(ctx, &repo, &prune)?;
        if ctx.json {
            v["prune"] = pv;
        } else {
            crate::maintenance::print_prune(&pr);
        }
    }
    if ctx.json {
        print_json(&v);
    }
    if !report.remote_failed.is_empty() {
        return Err(Error::Failed(format!(
            "{} orchestrate snapshot(s) kept because the cluster did not delete its copy: {}; fix the cause and run forget again",
            report.remote_failed.len(),
            report
                .remote_failed
                .iter()
                .map(|f| format!("{} ({}): {}", f.snapshot, f.id.short(), f.error))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    Ok(())
}

fn print_forget(r: &ForgetReport) {
    for s in &r.series {
        let from = match s.policy_from {
            PolicyFrom::Source => "the source's retention table",
            PolicyFrom::Kind => "[retention] of its kind",
            PolicyFrom::Default => "the kind's default",
            PolicyFrom::Flags => "flags",
            PolicyFrom::None => "",
        };
        if s.policy_from == PolicyFrom::None {
            outln!(
                "{} {:?} on {}: no policy: nothing forgotten",
                s.kind,
                s.source,
                s.hostname
            );
        } else {
            outln!(
                "{} {:?} on {}: {} (from {from})",
                s.kind,
                s.source,
                s.hostname,
                s.policy
            );
        }
        for e in &s.snapshots {
            outln!(
                "  {:<10}{:<22}{}",
                e.id.short(),
                e.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                if e.keep {
                    e.reasons.join(", ")
                } else {
                    "forget".to_string()
                }
            );
        }
    }
    let verb = if r.dry_run {
        "would be forgotten"
    } else {
        "forgotten"
    };
    outln!(
        "{} snapshot(s) kept, {} {verb} (buckets in {})",
        r.kept,
        r.forgotten,
        r.timezone
    );
    if !r.held_since_plan.is_empty() {
        outln!(
            "{} snapshot(s) held while forget ran: kept",
            r.held_since_plan.len()
        );
    }
    for w in &r.wal {
        crate::pg::print_expiry(&w.plan, &w.window);
        match &w.deleted {
            Some(d) => outln!(
                "  deleted {} WAL file(s), {}",
                d.deleted,
                crate::output::size(d.bytes)
            ),
            None if r.dry_run => outln!("  dry run: no WAL deleted"),
            None => {}
        }
    }
}

/// `--until`: a date (`2027-01-31`, the start of that day in UTC) or an
/// RFC 3339 instant.
fn parse_until(text: &str) -> Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            Error::usage(format!(
                "--until {text:?} is not a date lifeboat reads: give 2027-01-31 (UTC) or an RFC 3339 time"
            ))
        })
}

fn hold_json(h: &Hold, now: Timestamp) -> serde_json::Value {
    json!({
        "snapshot": h.snapshot, "reason": h.reason, "until": h.until, "created": h.created,
        "hostname": h.hostname, "active": h.is_active(now),
    })
}

/// How `snapshots` shows a hold.
pub(crate) fn hold_text(h: &Hold, now: Timestamp) -> String {
    match (h.until, h.is_active(now)) {
        (None, _) => format!("hold: {}", h.reason),
        (Some(u), true) => format!("hold: {} (until {})", h.reason, u),
        (Some(u), false) => format!("hold expired {}: {}", u, h.reason),
    }
}

pub(crate) fn hold(ctx: &Ctx, snapshot: &str, reason: &str, until: Option<&str>) -> Result<()> {
    let until = until.map(parse_until).transpose()?;
    let repo = ctx.open()?;
    let h = repo.hold(snapshot, reason, until, &lifeboat_ops::hostname())?;
    let now = Timestamp::now();
    if ctx.json {
        print_json(&hold_json(&h, now));
    } else {
        outln!(
            "snapshot {} held: {}",
            h.snapshot.short(),
            hold_text(&h, now)
        );
    }
    Ok(())
}

pub(crate) fn release(ctx: &Ctx, snapshot: &str) -> Result<()> {
    let repo = ctx.open()?;
    let h = repo.release(snapshot)?;
    if ctx.json {
        print_json(&hold_json(&h, Timestamp::now()));
    } else {
        outln!(
            "snapshot {} released (was held: {})",
            h.snapshot.short(),
            h.reason
        );
    }
    Ok(())
}

/// The hold of each snapshot, for `snapshots`.
pub(crate) fn holds_json(holds: &[Hold], id: &lifeboat_repo::SnapshotId) -> serde_json::Value {
    holds
        .iter()
        .find(|h| h.snapshot == *id)
        .map(|h| hold_json(h, Timestamp::now()))
        .unwrap_or(serde_json::Value::Null)
}
