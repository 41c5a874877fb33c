//! `lifeboat replicate`: bring the config's replicas up to date, follow the
//! primary, or say how far behind they are.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lifeboat_ops::replicate::{self as ops, Overrides, Target};
use lifeboat_ops::{Error, Result};
use lifeboat_repo::{KindAmount, ReplicateReport, Repository};
use serde_json::json;

use crate::context::Ctx;
use crate::output::{print_json, size};

/// `lifeboat replicate`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplicateArgs {
    /// Only this replica (repeat for several); every [[replica]] of the
    /// config file when absent
    #[arg(long = "replica", value_name = "NAME")]
    replicas: Vec<String>,
    /// Keep running: new WAL reaches the replicas within --interval of
    /// `wal-push`, new snapshots too, and everything else every --full-every
    #[arg(long, conflicts_with = "status")]
    follow: bool,
    /// How often --follow looks for new WAL and snapshots
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    interval: String,
    /// How often --follow runs a whole pass (deletions included)
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    full_every: String,
    /// Say how far each replica is behind (and whether it answers) instead
    /// of copying
    #[arg(long)]
    status: bool,
    /// At most this many bytes a second into each replica (e.g. 50MiB);
    /// over the config's bandwidth_limit
    #[arg(long, value_name = "RATE")]
    bandwidth_limit: Option<String>,
    /// Objects copied at once into each replica (each read whole from the
    /// primary, checked, then stored: twice rclone's default of 4 transfers
    /// keeps both stores busy)
    #[arg(long, default_value_t = 16, value_name = "N")]
    parallel: usize,
}

fn duration(flag: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| {
        Error::usage(format!(
            "{flag} {s:?}: {e}; give a duration such as 2s or 5m"
        ))
    })
}

pub(crate) fn run(ctx: &Ctx, args: &ReplicateArgs) -> Result<()> {
    let overrides = Overrides {
        workers: Some(args.parallel.max(1)),
        bandwidth: args
            .bandwidth_limit
            .as_deref()
            .map(|b| {
                lifeboat_ops::config::parse_rate(b)
                    .map_err(|e| Error::usage(format!("--bandwidth-limit {e}")))
            })
            .transpose()?,
    };
    let targets = ops::targets(&ctx.session, &args.replicas, &overrides)?;
    let repo = ctx.open()?;
    if args.status {
        return status(ctx, &repo, &targets);
    }
    if args.follow {
        return follow(
            ctx,
            &repo,
            &targets,
            duration("--interval", &args.interval)?,
            duration("--full-every", &args.full_every)?,
        );
    }
    let results = once(ctx, &repo, &targets);
    let mut out = Vec::new();
    let mut first_error: Option<Error> = None;
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok((report, ms)) => {
                if !ctx.json {
                    print_report(&t.section.name, &report, t.options.delete_delay);
                }
                let mut v = json!(report);
                v["name"] = json!(t.section.name);
                v["duration_ms"] = json!(ms);
                out.push(v);
                if let Some(e) = damage(&t.section.name, &report) {
                    first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                let message = lifeboat_repo::report(&e);
                if !ctx.json {
                    eprintln!("replica {}: {message}", t.section.name);
                }
                out.push(json!({
                    "name": t.section.name,
                    "replica": t.storage.location(),
                    "error": {"class": e.class().as_str(), "message": message},
                }));
                first_error.get_or_insert(e);
            }
        }
    }
    if ctx.json {
        print_json(&json!({ "replicas": out }));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One pass over every target: each report and how long it took (ms).
fn once(
    ctx: &Ctx,
    repo: &Repository,
    targets: &[Target<'_>],
) -> Vec<Result<(ReplicateReport, u64)>> {
    targets
        .iter()
        .map(|t| {
            let started = Instant::now();
            let progress = ctx.progress();
            ops::replicate(&ctx.session, repo, t, &progress)
                .map(|r| (r, started.elapsed().as_millis() as u64))
        })
        .collect()
}

/// Objects damaged on the primary are an error of their own (exit 3): the
/// replica has all else, but the primary needs a look.
fn damage(name: &str, report: &ReplicateReport) -> Option<Error> {
    let first = report.damaged.first()?;
    Some(Error::from(lifeboat_repo::RepoError::Corrupt {
        key: first.key.clone(),
        reason: format!(
            "{} ({} object(s) of the primary failed their check on every read and were not copied to replica {name}; run `lifeboat verify --read-data` on the primary)",
            first.reason,
            report.damaged.len()
        ),
    }))
}

/// An instant to the second, as people read it.
fn when(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn kinds(k: &[KindAmount]) -> String {
    k.iter()
        .map(|a| format!("{} {} ({})", a.kind, a.objects, size(a.bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_report(name: &str, r: &ReplicateReport, delay: Duration) {
    let (objects, bytes) = r.total_copied();
    let made = if r.created { " (new replica)" } else { "" };
    if objects == 0 {
        outln!(
            "replica {name} ({}){made}: up to date, {} object(s) already there",
            r.replica,
            r.present
        );
    } else {
        outln!(
            "replica {name} ({}){made}: copied {objects} object(s), {}: {}; {} already there",
            r.replica,
            size(bytes),
            kinds(&r.copied),
            r.present
        );
    }
    if r.replaced > 0 {
        outln!(
            "  {} object(s) in the replica differed from the primary's and were stored again",
            r.replaced
        );
    }
    for d in &r.damaged {
        outln!(
            "  DAMAGED on the primary, not copied: {}: {}",
            d.key,
            d.reason
        );
    }
    let del = &r.deletions;
    if !del.deleted.is_empty() {
        outln!(
            "  deleted what the primary deleted over {} ago: {}",
            humantime::format_duration(delay),
            kinds(&del.deleted)
        );
    }
    if del.pending > 0 {
        outln!(
            "  kept back: {} object(s) the primary deleted ({} snapshot(s)), until {} (delete_delay {})",
            del.pending,
            del.pending_snapshots,
            when(del.next_due),
            humantime::format_duration(delay)
        );
    }
}

fn status(ctx: &Ctx, repo: &Repository, targets: &[Target<'_>]) -> Result<()> {
    let mut out = Vec::new();
    let mut first_error: Option<Error> = None;
    for t in targets {
        match ops::status(&ctx.session, repo, t) {
            Ok(s) => {
                if !ctx.json {
                    print_status(&s);
                }
                let mut v = json!(s);
                v["up"] = json!(true);
                out.push(v);
            }
            Err(e) => {
                let message = lifeboat_repo::report(&e);
                if !ctx.json {
                    eprintln!(
                        "replica {} ({}): DOWN: {message}",
                        t.section.name,
                        t.storage.location()
                    );
                }
                out.push(json!({
                    "name": t.section.name,
                    "replica": t.storage.location(),
                    "up": false,
                    "error": {"class": e.class().as_str(), "message": message},
                }));
                first_error.get_or_insert(e);
            }
        }
    }
    if ctx.json {
        print_json(&json!({ "replicas": out }));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_status(s: &ops::Status) {
    let st = &s.status;
    if !st.exists {
        outln!(
            "replica {} ({}): not made yet; `lifeboat replicate --replica {}` makes it",
            s.name,
            st.replica,
            s.name
        );
        return;
    }
    let (primary, replica) = st.snapshots;
    if st.missing.is_empty() {
        outln!(
            "replica {} ({}): up to date; {replica} snapshot(s), {primary} on the primary",
            s.name,
            st.replica
        );
    } else {
        outln!(
            "replica {} ({}): behind by {} (the oldest object it lacks was stored then): lacks {}; {replica} snapshot(s), {primary} on the primary",
            s.name,
            st.replica,
            humantime::format_duration(Duration::from_secs(st.lag_seconds as u64)),
            kinds(&st.missing)
        );
    }
    for w in &s.wal {
        outln!(
            "  WAL of cluster {}: newest {} on the primary, {} on the replica",
            w.system_identifier,
            w.primary.as_deref().unwrap_or("none"),
            w.replica.as_deref().unwrap_or("none")
        );
    }
    let d = &st.deletions;
    if d.pending > 0 || d.newly_seen > 0 {
        outln!(
            "  deletions kept back: {} object(s) ({} snapshot(s)) until {}; {} more the next run will record",
            d.pending,
            d.pending_snapshots,
            when(d.next_due),
            d.newly_seen
        );
    }
}

/// `--follow`: a whole pass, then WAL and snapshots every `interval`, and
/// a whole pass again every `full_every` or when the primary's snapshots
/// change. A failed pass is reported and tried again at the next turn; a
/// usage error (a replica that is another repository) ends it.
fn follow(
    ctx: &Ctx,
    repo: &Repository,
    targets: &[Target<'_>],
    interval: Duration,
    full_every: Duration,
) -> Result<()> {
    let interval = interval.max(Duration::from_millis(100));
    let mut known: Vec<Option<HashSet<String>>> = vec![None; targets.len()];
    let mut last_full: Option<Instant> = None;
    let mut snapshots = snapshot_keys(repo)?;
    loop {
        let current = snapshot_keys(repo);
        let changed = current.as_ref().is_ok_and(|c| *c != snapshots);
        if last_full.is_none_or(|t| t.elapsed() >= full_every) || changed {
            if let Ok(c) = current {
                snapshots = c;
            }
            for (i, (t, r)) in targets.iter().zip(once(ctx, repo, targets)).enumerate() {
                match r {
                    Ok((report, ms)) => {
                        event(
                            ctx,
                            &t.section.name,
                            "pass",
                            &json!({"report": report, "duration_ms": ms}),
                            || print_report(&t.section.name, &report, t.options.delete_delay),
                        );
                        // An archive replica takes only the WAL its
                        // snapshots need: whole passes only.
                        if !t.is_archive() {
                            known[i] = repo.replica_named_keys(&t.storage).ok();
                        }
                    }
                    Err(e) => failed(ctx, &t.section.name, e)?,
                }
            }
            last_full = Some(Instant::now());
        } else {
            for (i, t) in targets.iter().enumerate() {
                let Some(k) = known[i].as_mut() else { continue };
                match repo.replicate_named(&t.storage, k, &t.options) {
                    Ok((0, _, _)) => {}
                    Ok((objects, bytes, damaged)) => {
                        event(
                            ctx,
                            &t.section.name,
                            "wal",
                            &json!({"objects": objects, "bytes": bytes, "damaged": damaged}),
                            || {
                                outln!(
                                    "replica {}: shipped {objects} WAL object(s), {}",
                                    t.section.name,
                                    size(bytes)
                                )
                            },
                        );
                    }
                    Err(e) => failed(ctx, &t.section.name, Error::from(e))?,
                }
            }
        }
        std::thread::sleep(interval);
    }
}

fn snapshot_keys(repo: &Repository) -> Result<HashSet<String>> {
    Ok(repo.snapshot_ids()?.iter().map(|id| id.to_hex()).collect())
}

/// One line of `--follow`'s output: JSON with `--json`, else `text`.
fn event(ctx: &Ctx, name: &str, what: &str, v: &serde_json::Value, text: impl FnOnce()) {
    if ctx.json {
        let mut line =
            json!({"time": jiff::Timestamp::now().to_string(), "replica": name, "event": what});
        if let (Some(o), Some(extra)) = (line.as_object_mut(), v.as_object()) {
            o.extend(extra.clone());
        }
        outln!("{line}");
    } else {
        text();
    }
}

/// A failure while following: a usage error ends it, anything else is
/// reported and tried again.
fn failed(ctx: &Ctx, name: &str, e: Error) -> Result<()> {
    if e.class() == lifeboat_ops::ErrorClass::Usage {
        return Err(e);
    }
    let message = lifeboat_repo::report(&e);
    event(
        ctx,
        name,
        "error",
        &json!({"error": {"class": e.class().as_str(), "message": message}}),
        || eprintln!("replica {name}: {message} (trying again)"),
    );
    Ok(())
}

/// `lifeboat thaw`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ThawArgs {
    /// Snapshot id, unique prefix or `latest`
    snapshot: String,
    /// Retrieval tier: bulk (cheapest, slowest), standard, expedited
    /// (fastest, dearest; not for DEEP_ARCHIVE)
    #[arg(long, default_value = "standard", value_name = "TIER")]
    tier: String,
    /// How many days the restored copies stay readable
    #[arg(long, default_value_t = 7, value_name = "N")]
    days: u32,
    /// Say how many of the snapshot's objects are ready instead of asking
    #[arg(long)]
    status: bool,
}

pub(crate) fn thaw(ctx: &Ctx, args: &ThawArgs) -> Result<()> {
    let tier: lifeboat_storage::ThawTier = args.tier.parse().map_err(Error::usage)?;
    if args.days == 0 {
        return Err(Error::usage("--days must be at least 1"));
    }
    let repo = ctx.open()?;
    let r = ops::thaw(
        &ctx.session,
        &repo,
        &args.snapshot,
        tier,
        args.days,
        args.status,
    )?;
    if ctx.json {
        print_json(&json!(r));
        return Ok(());
    }
    let classes = r
        .classes
        .iter()
        .map(|(c, n)| format!("{n} in {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let short = &r.snapshot[..8.min(r.snapshot.len())];
    if r.ready == r.objects {
        outln!(
            "snapshot {short}: all {} object(s) it needs are ready to read{}; restore it now",
            r.objects,
            if classes.is_empty() {
                String::new()
            } else {
                format!(" ({classes})")
            }
        );
    } else if args.status {
        outln!(
            "snapshot {short}: {} of {} object(s) ready, {} thawing, {} frozen ({classes}){}",
            r.ready,
            r.objects,
            r.thawing,
            r.frozen,
            if r.frozen > 0 {
                format!("; `lifeboat thaw {short}` asks for the frozen ones")
            } else {
                String::new()
            }
        );
    } else {
        outln!(
            "snapshot {short}: restore asked for {} object(s) at the {} tier for {} day(s); {} of {} ready ({classes}). `lifeboat thaw {short} --status` says when all are",
            r.requested,
            args.tier,
            args.days,
            r.ready,
            r.objects
        );
    }
    Ok(())
}

/// `lifeboat cost`.
pub(crate) fn cost(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open()?;
    let r = lifeboat_ops::cost::cost(&ctx.session, &repo)?;
    // Every figure is printed; a repository that could not be measured
    // then fails the command (the total lacks it).
    let unmeasured = r.repositories.iter().find_map(|x| {
        x.error
            .as_ref()
            .map(|e| Error::Failed(format!("replica {} could not be measured: {e}", x.name)))
    });
    if ctx.json {
        print_json(&json!(r));
        return unmeasured.map_or(Ok(()), Err);
    }
    let usd = |x: f64| {
        let (sign, x) = if x < 0.0 { ("-", -x) } else { ("", x) };
        if x >= 100.0 {
            format!("{sign}${x:.0}")
        } else if x >= 1.0 {
            format!("{sign}${x:.2}")
        } else {
            format!("{sign}${x:.4}")
        }
    };
    outln!("prices: {}", r.prices_source);
    for repo in &r.repositories {
        let what = if repo.name == "default" {
            "repository".to_string()
        } else {
            format!("replica {}", repo.name)
        };
        if let Some(e) = &repo.error {
            outln!("{what} ({}): NOT MEASURED: {e}", repo.location);
            continue;
        }
        outln!(
            "{what} ({}): {} in {} object(s), {}/month",
            repo.location,
            size(repo.bytes),
            repo.objects,
            usd(repo.monthly)
        );
        for c in &repo.classes {
            outln!(
                "  {:<20} {:>10}  {:>8} object(s)  {}/month",
                c.class,
                size(c.bytes),
                c.objects,
                usd(c.monthly)
            );
        }
        let restores = repo
            .full_restore
            .iter()
            .map(|x| {
                if x.tier == "none" {
                    usd(x.total)
                } else {
                    format!("{} ({} tier)", usd(x.total), x.tier)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        outln!("  a full restore (every object read once): {restores}");
    }
    outln!("all repositories: {}/month", usd(r.monthly_total));
    let b = &r.baseline;
    outln!(
        "a plain compressed dump of each of the {} backups kept (the strategy's pg_dump | gzip) would store {} ({}/month); the repository stores {}: {:.1}x less, {}/month saved",
        b.backups,
        size(b.compressed_bytes),
        usd(b.monthly),
        size(b.lifeboat_bytes),
        b.ratio,
        usd(b.monthly_saving)
    );
    unmeasured.map_or(Ok(()), Err)
}
