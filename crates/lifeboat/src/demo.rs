//! `lifeboat demo`: the scenarios of `lifeboat_scenarios` in a temporary
//! directory, narrated and reported.
//!
//! The PostgreSQL demo runs as the `postgres` user when root (PostgreSQL
//! refuses root, and its archive_command must write the repository): it
//! re-runs this program as that user, from a copy in the work directory.

use std::path::{Path, PathBuf};

use lifeboat_ops::{Error, Result};
use lifeboat_postgres::server;
use lifeboat_repo::{NoProgress, Progress};
use lifeboat_scenarios::{files, pitr};
use serde_json::json;

use crate::output::{print_json, TermProgress};

/// What `lifeboat demo` was asked.
pub(crate) struct DemoArgs {
    pub json: bool,
    pub quiet: bool,
    pub keep: bool,
    pub scale: usize,
    pub files: bool,
    pub incident: pitr::Incident,
    pub workdir: Option<PathBuf>,
}

fn progress(args: &DemoArgs) -> Box<dyn Progress> {
    if args.json || args.quiet {
        Box::new(NoProgress)
    } else {
        Box::new(TermProgress::new(false))
    }
}

fn narrator(json: bool) -> impl FnMut(String) {
    move |line: String| {
        if !json {
            outln!("{line}");
        }
    }
}

fn work_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("lifeboat-demo-")
        .tempdir()
        .map_err(|e| Error::io("create a temporary directory", e))
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.files {
        return run_files(&args);
    }
    if let Some(dir) = &args.workdir {
        return run_pitr(&args, dir);
    }
    if server::bindir().is_err() {
        return Err(Error::usage(
            "the PostgreSQL demo needs the distribution's PostgreSQL server programs (initdb, pg_ctl), and none were found via pg_config or /usr/lib/postgresql/*/bin. Run scripts/demo.sh (installs them), or `apt-get install postgresql`; `lifeboat demo --files` runs without PostgreSQL",
        ));
    }
    let work = work_dir()?;
    let root = work.path().to_path_buf();
    let result = if server::is_root() {
        as_postgres(&args, &root)
    } else {
        run_pitr(&args, &root)
    };
    if args.keep || result.is_err() {
        let kept = work.keep();
        if !args.json {
            outln!(
                "kept {} (repository in repo/, the clusters in primary/ and restored/)",
                kept.display()
            );
        }
    } else if !args.json {
        outln!("cleaned up; run with --keep to look around");
    }
    result
}

/// Runs the PostgreSQL demo as the postgres user from a copy of this
/// program it can execute.
fn as_postgres(args: &DemoArgs, root: &Path) -> Result<()> {
    let exe = root.join("lifeboat");
    let this = std::env::current_exe().map_err(|e| Error::io("find this program's path", e))?;
    std::fs::copy(&this, &exe).map_err(|e| Error::io("copy lifeboat for the postgres user", e))?;
    server::prepare_dir(root)?;
    let mut cmd = server::as_owner(&exe);
    cmd.args(["demo", "--workdir"]).arg(root);
    if args.json {
        cmd.arg("--json");
    }
    if args.quiet {
        cmd.arg("--quiet");
    }
    if args.incident == pitr::Incident::LostPrimary {
        cmd.args(["--incident", "lost-primary"]);
    }
    cmd.arg("--scale").arg(args.scale.to_string());
    let status = cmd
        .status()
        .map_err(|e| Error::io("run the demo as the postgres user", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "the demo failed (run as the postgres user, {status}); see above. Its files are in {}",
            root.display()
        )))
    }
}

fn run_pitr(args: &DemoArgs, root: &Path) -> Result<()> {
    let exe = {
        let copy = root.join("lifeboat");
        if copy.exists() {
            copy
        } else {
            std::env::current_exe().map_err(|e| Error::io("find this program's path", e))?
        }
    };
    let opts = pitr::PitrOptions {
        root: root.to_path_buf(),
        exe,
        scale: args.scale,
        incident: args.incident,
    };
    let progress = progress(args);
    let report = pitr::run(&opts, progress.as_ref(), &mut narrator(args.json))?;
    drop(progress);
    if args.json {
        print_json(&json!(report));
    } else {
        outln!("\nReport");
        for line in report.summary() {
            outln!("{line}");
        }
    }
    let v = &report.verify;
    if !v.as_expected {
        return Err(Error::Failed(format!(
            "the restored cluster does not hold exactly the rows it should: {} users of {} expected (identical: {}), {} rows lost, {} later rows present",
            v.users, v.expected_users, v.identical_users, v.rows_lost, v.rows_after_target
        )));
    }
    Ok(())
}

fn run_files(args: &DemoArgs) -> Result<()> {
    let work = work_dir()?;
    let progress = progress(args);
    let mut say = narrator(args.json);
    let report = files::run(work.path(), args.scale, progress.as_ref(), &mut say)?;
    drop(progress);
    if args.json {
        let mut v = json!(report);
        v["kept"] = json!(args.keep);
        print_json(&v);
    }
    if args.keep {
        let kept = work.keep();
        say(format!(
            "kept {} (repository in repo/, restore in restore/)",
            kept.display()
        ));
    } else {
        say("cleaned up; run with --keep to look around".into());
    }
    Ok(())
}
