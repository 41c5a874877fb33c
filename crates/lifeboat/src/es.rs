//! `lifeboat es …`: Elasticsearch/OpenSearch snapshots through the
//! cluster's snapshot API, ingested into the repository or orchestrated in
//! the cluster's own, and checked restores.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lifeboat_elastic as es;
use lifeboat_ops::elastic::{settings, EsFlags};
use lifeboat_ops::{Error, Result};
use serde_json::json;

use crate::context::Ctx;
use crate::output::{print_json, secs, size, stream_stats};

#[derive(Subcommand, Debug)]
pub(crate) enum EsCommand {
    /// Snapshot a cluster through its snapshot API: counted only when it
    /// succeeds on every shard and holds every asked index; ingest mode
    /// stores the snapshot's files in the repository (encrypted,
    /// deduplicated), orchestrate mode records a snapshot the cluster keeps
    Backup(EsBackupArgs),
    /// Restore a recorded snapshot into a cluster, wait until its indices
    /// are at least yellow, and compare their document counts with those
    /// recorded
    Restore(EsRestoreArgs),
}

/// How to reach the cluster (flags over LIFEBOAT_ES_* over the config).
#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    /// `http(s)://host:port` of a node (a user and password here show in
    /// `ps`: prefer the config file's username and password_file, or
    /// LIFEBOAT_ES_USER and LIFEBOAT_ES_PASSWORD; LIFEBOAT_ES_API_KEY for an
    /// API key)
    #[arg(long, value_name = "URL")]
    es_url: Option<String>,
    /// CA certificates (PEM) of the cluster's HTTPS certificate
    #[arg(long, env = "LIFEBOAT_ES_CA", value_name = "FILE")]
    es_ca: Option<PathBuf>,
    /// Ingest: the staging directory (in path.repo of every node) as seen
    /// from here
    #[arg(long, value_name = "DIR")]
    staging_dir: Option<PathBuf>,
    /// Ingest: the staging directory as the nodes see it, when it differs
    #[arg(long, value_name = "PATH")]
    staging_location: Option<String>,
    /// Seconds one call to the cluster may take
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    http_timeout: u64,
}

#[derive(Args, Debug)]
pub(crate) struct EsBackupArgs {
    /// A source named in the config file ([elasticsearch.NAME] with url)
    pub(crate) source: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Index patterns (repeatable; `logs-*`, `-logs-old`): over the
    /// source's indices; every open index when none
    #[arg(long = "index", value_name = "PATTERN")]
    indices: Vec<String>,
    /// Take the cluster's global state too (templates, persistent settings;
    /// on Elasticsearch 8 the feature states)
    #[arg(long)]
    include_global_state: bool,
    /// `ingest` (default: the snapshot's files stored in the repository) or
    /// `orchestrate` (kept in --repository, a repository the cluster owns)
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// The snapshot repository in the cluster (default `lifeboat-SOURCE`)
    #[arg(long, value_name = "NAME")]
    repository: Option<String>,
    /// Seconds the snapshot may take
    #[arg(long, default_value_t = 86400, value_name = "SECS")]
    timeout: u64,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record the snapshot under this time instead of now (RFC 3339)
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct EsRestoreArgs {
    /// Snapshot id, unique prefix or `latest` (the newest Elasticsearch
    /// snapshot)
    snapshot: String,
    /// The source whose settings (cluster, staging directory) to use
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Index patterns over the snapshot's indices (repeatable); every one
    /// when none
    #[arg(long = "index", value_name = "PATTERN")]
    indices: Vec<String>,
    /// Rename restored indices: a regular expression over each name …
    #[arg(long, value_name = "REGEX", requires = "rename_replacement")]
    rename_pattern: Option<String>,
    /// … and its replacement (`restored-$1`)
    #[arg(long, value_name = "TEXT", requires = "rename_pattern")]
    rename_replacement: Option<String>,
    /// Restore the cluster's global state too
    #[arg(long)]
    include_global_state: bool,
    /// Close existing indices of the restored names and restore over them
    /// (their documents are replaced)
    #[arg(long)]
    replace: bool,
    /// Seconds the restored indices may take to become yellow
    #[arg(long, default_value_t = 4 * 3600, value_name = "SECS")]
    timeout: u64,
}

pub(crate) fn run(ctx: &Ctx, cmd: EsCommand) -> Result<()> {
    match cmd {
        EsCommand::Backup(args) => backup(ctx, &args),
        EsCommand::Restore(args) => restore(ctx, &args),
    }
}

fn flags(source: Option<&String>, c: &ClusterArgs) -> EsFlags {
    EsFlags {
        source: source.cloned(),
        url: c.es_url.clone(),
        ca_file: c.es_ca.clone(),
        staging_dir: c.staging_dir.clone(),
        staging_location: c.staging_location.clone(),
        timeout: Some(c.http_timeout),
        ..EsFlags::default()
    }
}

fn backup(ctx: &Ctx, args: &EsBackupArgs) -> Result<()> {
    let mut f = flags(args.source.as_ref(), &args.cluster);
    f.mode = args.mode.clone();
    f.repository = args.repository.clone();
    let s = settings(&ctx.session.file, &f)?;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let mut opts = es::EsBackupOptions::new(&s.connection.url, &s.repository);
    opts.connection = s.connection.clone();
    opts.source_name = args.source.clone().unwrap_or_default();
    opts.hostname = lifeboat_ops::hostname();
    opts.tags = args.tags.clone();
    opts.mode = s.mode;
    opts.indices = if args.indices.is_empty() {
        s.indices.clone()
    } else {
        args.indices.clone()
    };
    opts.include_global_state = args.include_global_state || s.include_global_state;
    opts.staging_dir = s.staging_dir.clone();
    opts.staging_location = s.staging_location.clone();
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    opts.time = args
        .time
        .as_deref()
        .map(crate::commands::parse_time)
        .transpose()?;
    let done = es::backup(&repo, &opts, &progress)?;
    let out = &done.outcome;
    let st = &out.snapshot.stats;
    let m = &done.meta;
    *ctx.made.borrow_mut() = Some(crate::context::Made::of(&out.id, st));
    if ctx.json {
        print_json(&json!({
            "snapshot": out.id.to_hex(),
            "mode": m.mode,
            "cluster": m.cluster,
            "repository": m.repository,
            "es_snapshot": m.snapshot,
            "state": m.state,
            "shards": m.shards,
            "indices": m.indices,
            "data_streams": m.data_streams,
            "trimmed": done.trimmed,
            "stats": st,
        }));
    } else {
        outln!(
            "es backup {} saved: snapshot {} of {} ({}), {} indices, {} documents, {} shards, {}",
            out.id.short(),
            m.snapshot,
            m.cluster.cluster_name,
            m.cluster.product(),
            m.indices.len(),
            m.docs(),
            m.shards,
            m.state
        );
        match m.mode {
            es::Mode::Ingest => outln!("  {}", stream_stats("of repository files", st)),
            es::Mode::Orchestrate => outln!(
                "  kept by the cluster in its repository {} (orchestrate: not in lifeboat's repository, not encrypted by lifeboat)",
                m.repository
            ),
        }
        if !done.trimmed.is_empty() {
            outln!(
                "  staging repository trimmed through the cluster: {}",
                done.trimmed.join(", ")
            );
        }
    }
    Ok(())
}

fn restore(ctx: &Ctx, args: &EsRestoreArgs) -> Result<()> {
    let s = settings(
        &ctx.session.file,
        &flags(args.source.as_ref(), &args.cluster),
    )?;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    // `latest` of the source asked for, when one is: never another
    // cluster's data restored (with --replace, over this one's).
    let snapshot = match (&args.snapshot[..], &args.source) {
        ("latest", Some(src)) => repo
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.snapshot.source_kind == es::SOURCE_KIND && &s.snapshot.source_name == src)
            .ok_or_else(|| {
                Error::usage(format!(
                    "the repository holds no Elasticsearch/OpenSearch snapshot of source {src:?} yet; take one with `lifeboat es backup {src}`"
                ))
            })?,
        _ => repo
            .find_snapshot_of(&args.snapshot, es::SOURCE_KIND)?
            .ok_or_else(|| {
                Error::usage(
                    "the repository holds no Elasticsearch/OpenSearch snapshot yet; take one with `lifeboat es backup`",
                )
            })?,
    };
    if snapshot.snapshot.source_kind != es::SOURCE_KIND {
        return Err(Error::usage(format!(
            "snapshot {} is a {} backup, not an Elasticsearch/OpenSearch one",
            snapshot.id.short(),
            snapshot.snapshot.source_kind
        )));
    }
    let mut opts = es::EsRestoreOptions::new(&s.connection.url);
    opts.connection = s.connection.clone();
    opts.indices = args.indices.clone();
    opts.rename = args
        .rename_pattern
        .clone()
        .zip(args.rename_replacement.clone());
    opts.include_global_state = args.include_global_state;
    opts.replace = args.replace;
    opts.staging_dir = s.staging_dir.clone();
    opts.staging_location = s.staging_location.clone();
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    let report = es::restore(&repo, &snapshot, &opts, &progress)?;
    let within = report.duration_ms <= s.rto.as_millis() as u64;
    if ctx.json {
        let mut v = json!(report);
        v["snapshot"] = json!(snapshot.id.to_hex());
        v["es_snapshot"] = json!(report.snapshot);
        v["rto_target_ms"] = json!(s.rto.as_millis() as u64);
        v["within_rto"] = json!(within);
        print_json(&v);
    } else {
        let docs: u64 = report.indices.iter().map(|i| i.docs).sum();
        outln!(
            "restored snapshot {} (es backup {}) into {}: {} indices, {} documents, counts as recorded",
            report.snapshot,
            snapshot.id.short(),
            lifeboat_elastic::client::redact(&s.connection.url),
            report.indices.len(),
            docs
        );
        for i in &report.indices {
            let name = if i.from == i.index {
                i.index.clone()
            } else {
                format!("{} (from {})", i.index, i.from)
            };
            outln!("  {name}: {} documents, {}", i.docs, i.health);
        }
        if !report.closed.is_empty() {
            outln!(
                "  closed first and restored over: {}",
                report.closed.join(", ")
            );
        }
        if report.staged_bytes > 0 {
            outln!("  {} of repository files staged", size(report.staged_bytes));
        }
        outln!(
            "  time to restore {} against an RTO of {}: {}",
            secs(report.duration_ms),
            humantime::format_duration(s.rto),
            if within { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
