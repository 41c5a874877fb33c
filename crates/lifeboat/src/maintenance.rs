//! The maintenance commands: prune and stats.

use lifeboat_ops::Result;
use lifeboat_repo::{Amount, PruneReport};
use serde_json::json;

use crate::context::Ctx;
use crate::output::{print_json, size};

/// `lifeboat prune`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct PruneArgs {
    /// Only say what would be deleted and repacked
    #[arg(long)]
    pub dry_run: bool,
    /// Unused space to tolerate in kept packs: a percentage of the
    /// repository (5%), a size (500M) or `unlimited` (repack nothing)
    #[arg(long, value_name = "LIMIT")]
    pub max_unused: Option<String>,
    /// Repack at most this many bytes of packs (e.g. 10G)
    #[arg(long, value_name = "SIZE")]
    pub max_repack: Option<String>,
    /// Delete marked packs only once their mark is this old (default 0s on
    /// a local disk, 15m on S3, whose listings may lag)
    #[arg(long, value_name = "DURATION")]
    pub delete_delay: Option<String>,
}

fn amount(a: &Amount) -> String {
    format!("{} ({})", a.count, size(a.bytes))
}

pub(crate) fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<()> {
    let repo = ctx.open()?;
    let (report, v) = prune_open(ctx, &repo, args)?;
    if ctx.json {
        print_json(&v);
    } else {
        print_prune(&report);
    }
    Ok(())
}

/// Prunes the open `repo`; the report and its JSON (`forget --prune` puts
/// it inside its own).
pub(crate) fn prune_open(
    ctx: &Ctx,
    repo: &lifeboat_repo::Repository,
    args: &PruneArgs,
) -> Result<(PruneReport, serde_json::Value)> {
    let opts = lifeboat_ops::maintenance::prune_options(
        repo,
        args.dry_run,
        args.max_unused.as_deref(),
        args.max_repack.as_deref(),
        args.delete_delay.as_deref(),
    )?;
    let progress = ctx.progress();
    let started = std::time::Instant::now();
    let report = repo.prune(&opts, &progress)?;
    let ms = started.elapsed().as_millis() as u64;
    let mut v = json!(report);
    if let Some(o) = v.as_object_mut() {
        o.insert("bytes_to_free".into(), json!(report.bytes_to_free()));
        o.insert("duration_ms".into(), json!(ms));
    }
    Ok((report, v))
}

pub(crate) fn print_prune(r: &PruneReport) {
    let would = if r.dry_run { "would be " } else { "" };
    outln!(
        "{} snapshot(s) use {} of {} chunk(s); {} pack(s) before",
        r.snapshots,
        r.chunks_used,
        r.chunks,
        amount(&r.packs_before)
    );
    outln!(
        "  unused packs, {would}deleted:   {}",
        amount(&r.unused_packs)
    );
    outln!(
        "  packs {would}repacked:         {} ({} live copied into {} new)",
        amount(&r.repacked_packs),
        size(r.repacked_live_bytes),
        amount(&r.new_packs)
    );
    if r.unindexed_packs.count > 0 {
        outln!(
            "  packs in no index, {would}deleted: {} (left by interrupted backups)",
            amount(&r.unindexed_packs)
        );
    }
    if r.leftovers_removed.count > 0 {
        outln!(
            "  temporary files of interrupted writes, {would}removed: {} (over an hour old)",
            amount(&r.leftovers_removed)
        );
    }
    outln!("  unused left in kept packs: {}", size(r.unused_left));
    if r.indexes_superseded.count > 0 {
        outln!(
            "  index objects rewritten: {} replaced by {}",
            amount(&r.indexes_superseded),
            amount(&r.indexes_written)
        );
    }
    for m in &r.marks {
        match (&m.waiting_for, m.done) {
            (_, true) if !r.dry_run => outln!(
                "mark {} ({} pack(s)): deleted{}",
                &m.id[..8],
                m.packs,
                if m.recovered > 0 {
                    format!(
                        ", but {} pack(s) a newer snapshot uses were indexed again",
                        m.recovered
                    )
                } else {
                    String::new()
                }
            ),
            (_, true) => outln!(
                "mark {} ({} pack(s)): would be deleted now",
                &m.id[..8],
                m.packs
            ),
            (Some(w), false) => outln!("mark {} ({} pack(s)) waits for {w}", &m.id[..8], m.packs),
            (None, false) => {}
        }
    }
    if r.dry_run {
        outln!(
            "dry run: nothing changed; {} would be freed",
            size(r.bytes_to_free())
        );
    } else {
        outln!(
            "freed {} now ({} pack(s), {} index object(s) deleted){}",
            size(r.packs_deleted.bytes),
            r.packs_deleted.count,
            r.indexes_deleted.count,
            if r.marks.iter().any(|m| !m.done) {
                "; marked packs wait, as said above: run `lifeboat prune` again later to free them"
            } else {
                ""
            }
        );
    }
}

pub(crate) fn stats(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let s = repo.stats(&progress)?;
    if ctx.json {
        print_json(&json!(s));
        return Ok(());
    }
    outln!(
        "{} snapshot(s), {} chunk(s) ({} used), {} pack(s)",
        s.snapshots,
        s.chunks,
        s.chunks_used,
        s.packs
    );
    outln!(
        "stored {}, chunks {} raw, snapshots {} logical: dedup ratio {:.2} (logical / stored)",
        size(s.stored_bytes),
        size(s.raw_bytes),
        size(s.logical_bytes),
        s.dedup_ratio
    );
    outln!(
        "{:<10} {:<20} {:<9} {:>12} {:>12}  source",
        "ID",
        "TIME",
        "KIND",
        "SIZE",
        "ONLY IT HOLDS"
    );
    for p in &s.per_snapshot {
        outln!(
            "{:<10} {:<20} {:<9} {:>12} {:>12}  {}",
            p.id.short(),
            p.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            p.source_kind,
            size(p.logical_bytes),
            size(p.unique_stored_bytes),
            p.source_name
        );
    }
    Ok(())
}
