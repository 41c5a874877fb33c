//! `lifeboat runbook`: this deployment's recovery procedures.

use std::path::PathBuf;

use clap::Args;
use lifeboat_ops::runbook::{self, Deployment};
use lifeboat_ops::{Error, Result};

use crate::context::Ctx;

/// `lifeboat runbook`.
#[derive(Args, Debug)]
pub(crate) struct RunbookArgs {
    /// One scenario: pitr, database-corruption, redis-loss, region-loss,
    /// ransomware (default: all of them)
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// md (Markdown) or html (one self-contained page)
    #[arg(long, value_name = "FORMAT", default_value = "md", value_parser = ["md", "html"])]
    format: String,
    /// Write to this file instead of standard output
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
}

pub(crate) fn run(ctx: &Ctx, args: &RunbookArgs) -> Result<()> {
    let file = &ctx.session.file;
    let Some((path, _)) = &file.origin else {
        return Err(Error::usage(
            "a runbook is written for a deployment: give its config file (--config PATH or LIFEBOAT_CONFIG)",
        ));
    };
    let config_path = std::path::absolute(path)
        .map_err(|e| Error::io(format!("make {} absolute", path.display()), e))?;
    // The measured RTOs come from the drill history; a repository that
    // does not answer leaves them out, with a warning.
    let drills = match ctx.open().and_then(|r| Ok(r.drills()?)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "warning: the drill history does not read ({}): the runbook has no measured RTO",
                lifeboat_repo::report(&e)
            );
            Vec::new()
        }
    };
    let d = Deployment {
        config_path: &config_path,
        file,
        drills: &drills,
    };
    let names: Vec<&str> = match &args.scenario {
        Some(s) => vec![s.as_str()],
        None => runbook::SCENARIOS.to_vec(),
    };
    let books = names
        .iter()
        .map(|s| d.runbook(s))
        .collect::<Result<Vec<_>>>()?;
    let text = if args.format == "html" {
        runbook::html(&books)
    } else {
        books
            .iter()
            .map(runbook::markdown)
            .collect::<Vec<_>>()
            .join("\n---\n\n")
    };
    match &args.output {
        Some(p) => lifeboat_repo::durable::write_file(p, text.as_bytes(), 0o644)
            .map_err(|e| Error::io(format!("write {}", p.display()), e))?,
        None => outln!("{}", text.trim_end()),
    }
    Ok(())
}
