//! Maintenance of a repository: prune's settings as the CLI and the agent
//! settle them.

use std::time::Duration;

use lifeboat_repo::{MaxUnused, PruneOptions, Repository};

use crate::{Error, Result};

/// The delete delay when none is given: none on a local disk, whose
/// listings show every write at once; 15 minutes on S3, where a listing may
/// lag behind a write (the time for a session or snapshot written just
/// before a prune to show).
pub fn default_delete_delay(repo: &Repository) -> Duration {
    if repo.location().starts_with("s3://") {
        Duration::from_secs(15 * 60)
    } else {
        Duration::ZERO
    }
}

/// Prune's options from the command line's words.
pub fn prune_options(
    repo: &Repository,
    dry_run: bool,
    max_unused: Option<&str>,
    max_repack: Option<&str>,
    delete_delay: Option<&str>,
) -> Result<PruneOptions> {
    let mut opts = PruneOptions {
        dry_run,
        delete_delay: default_delete_delay(repo),
        ..PruneOptions::default()
    };
    if let Some(m) = max_unused {
        opts.max_unused = MaxUnused::parse(m).map_err(Error::usage)?;
    }
    if let Some(m) = max_repack {
        opts.max_repack = Some(
            m.parse::<lifeboat_repo::ByteSize>()
                .map_err(|e| Error::usage(format!("--max-repack: {e}")))?
                .0,
        );
    }
    if let Some(d) = delete_delay {
        opts.delete_delay = humantime::parse_duration(d).map_err(|e| {
            Error::usage(format!(
                "--delete-delay {d:?}: {e}; give a duration such as 0s, 15m or 1h"
            ))
        })?;
    }
    Ok(opts)
}
