//! `lifeboat erasure add|list|report|apply`: the erasure ledger.

use clap::{Args, Subcommand};
use lifeboat_ops::erasure;
use lifeboat_ops::{Error, Result};
use lifeboat_repo::ErasureRequest;
use serde_json::json;

use crate::context::Ctx;

/// `lifeboat erasure`.
#[derive(Subcommand, Debug)]
pub(crate) enum ErasureCommand {
    /// Record a request to erase one subject from a source: every restore
    /// of it (pg restore --start, pg restore-dump, drills) re-applies the
    /// whole ledger with the source's erase_sql before clients see the data
    Add(AddArgs),
    /// List the requests
    List {
        /// Only this source's
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// The compliance view: each request, the backups still holding its
    /// subject, and the date the retention policy lets each go by
    Report,
    /// Re-apply a source's ledger on a server now (a server restored by
    /// hand, or one that ended recovery paused)
    Apply(ApplyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
    /// The source (its config name: [postgres.NAME])
    #[arg(long, value_name = "NAME")]
    source: String,
    /// The subject's id, as erase_sql takes it ($1)
    #[arg(long, value_name = "ID")]
    subject: String,
    /// Why (a ticket number)
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
    /// The source whose ledger to apply
    #[arg(long, value_name = "NAME")]
    source: String,
    /// The server (default: the source's pg_url)
    #[arg(long, env = "LIFEBOAT_PG_URL", value_name = "URL")]
    pg_url: Option<String>,
    /// The database (default: erase_database, else the URL's)
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
}

fn request_json(r: &ErasureRequest) -> serde_json::Value {
    json!({"id": r.id, "source": r.source, "subject": r.subject, "reason": r.reason,
        "requested": r.requested, "user": r.user, "host": r.host})
}

pub(crate) fn run(ctx: &Ctx, cmd: ErasureCommand) -> Result<()> {
    match cmd {
        ErasureCommand::Add(args) => add(ctx, &args),
        ErasureCommand::List { source } => list(ctx, source.as_deref()),
        ErasureCommand::Report => report(ctx),
        ErasureCommand::Apply(args) => apply(ctx, &args),
    }
}

fn add(ctx: &Ctx, args: &AddArgs) -> Result<()> {
    let file = &ctx.session.file;
    if !file.postgres.contains_key(&args.source) {
        // The ledger serves restores of a configured source: a name that
        // is not one would never be applied.
        file.pg_source(&args.source)?;
    }
    let repo = ctx.open()?;
    let request = ErasureRequest::new(
        &args.source,
        &args.subject,
        args.reason.clone(),
        &lifeboat_ops::os_user(),
        &lifeboat_ops::hostname(),
    )?;
    repo.add_erasure(&request)?;
    crate::audit::detail(ctx, "erasure_request", request.id.clone());
    let missing_sql = file
        .postgres
        .get(&args.source)
        .is_none_or(|s| s.erase_sql.is_none());
    if ctx.json {
        outln!(
            "{}",
            json!({"request": request_json(&request), "erase_sql_missing": missing_sql})
        );
    } else {
        outln!(
            "recorded erasure request {} for source {}: every restore of it re-applies the ledger before clients see the data",
            request.id,
            args.source
        );
    }
    if missing_sql {
        eprintln!(
            "warning: [postgres.{}] has no erase_sql: restores of it are refused until it is set (the SQL that erases one subject, given as $1)",
            args.source
        );
    }
    Ok(())
}

fn list(ctx: &Ctx, source: Option<&str>) -> Result<()> {
    let repo = ctx.open()?;
    let requests: Vec<ErasureRequest> = repo
        .erasures()?
        .into_iter()
        .filter(|r| source.is_none_or(|s| r.source == s))
        .collect();
    if ctx.json {
        let list: Vec<_> = requests.iter().map(request_json).collect();
        outln!("{}", json!({"requests": list}));
    } else if requests.is_empty() {
        outln!("no erasure requests");
    } else {
        for r in &requests {
            outln!(
                "{}  {}  source {}  subject {}  by {}@{}{}",
                r.id,
                r.requested.strftime("%Y-%m-%dT%H:%M:%SZ"),
                r.source,
                r.subject,
                r.user,
                r.host,
                r.reason
                    .as_deref()
                    .map(|x| format!("  ({x})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn report(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open()?;
    let views = erasure::report(&repo, &ctx.session.file)?;
    if ctx.json {
        outln!("{}", json!({"requests": views}));
        return Ok(());
    }
    if views.is_empty() {
        outln!("no erasure requests");
        return Ok(());
    }
    for v in &views {
        let r = &v.request;
        outln!(
            "request {} ({}): subject {} of source {}; {} backup(s) taken before it still hold the subject{}",
            r.id,
            r.requested.strftime("%Y-%m-%d"),
            r.subject,
            r.source,
            v.holding.len(),
            match v.gone_from_backups_by {
                Some(t) => format!("; gone from every backup by {}", t.strftime("%Y-%m-%d")),
                None if v.holding.is_empty() => String::new(),
                None => "; some stay until released or outnumbered (below)".into(),
            }
        );
        for h in &v.holding {
            outln!(
                "  {} {:<8} {}  {}",
                h.snapshot.short(),
                h.kind,
                h.time.strftime("%Y-%m-%d"),
                match (&h.expires_by, &h.note) {
                    (Some(t), _) => format!("goes by {}", t.strftime("%Y-%m-%d")),
                    (None, Some(n)) => n.clone(),
                    (None, None) => String::new(),
                }
            );
        }
    }
    outln!("every restore re-applies the ledger, so no restored server shows these subjects");
    Ok(())
}

fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<()> {
    let repo = ctx.open()?;
    let file = &ctx.session.file;
    let Some(ledger) = erasure::ledger(&repo, file, &args.source)? else {
        outln!("the ledger holds no request for source {}", args.source);
        return Ok(());
    };
    let url = args
        .pg_url
        .clone()
        .or_else(|| ledger.pg_url.clone())
        .ok_or_else(|| {
            Error::usage(format!(
                "give the server with --pg-url (or LIFEBOAT_PG_URL); [postgres.{}] has no pg_url",
                args.source
            ))
        })?;
    let mut cfg = lifeboat_postgres::session::parse_conninfo(&url)?;
    let database = match (&args.database, &args.pg_url) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => cfg
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| ledger.database()),
        (None, None) => ledger.database(),
    };
    cfg.dbname(&database);
    let erased = erasure::apply(ctx.handle(), &ledger, &cfg)?;
    if ctx.json {
        outln!("{}", json!({"source": args.source, "erased": erased}));
    } else {
        outln!(
            "erasure ledger re-applied to {}: {} subject(s), {} row(s) erased",
            lifeboat_postgres::session::redact(&url),
            erased.subjects,
            erased.rows
        );
    }
    Ok(())
}
