//! What every command gets: the session (settings settled once, the config
//! file, the runtime) and how to print. `main.rs` dispatches to
//! `commands` (repository, files, verify, repair), `pg` and `redis`, which
//! all use this and nothing of each other.

use lifeboat_ops::secrets::SecretSettings;
use lifeboat_ops::{Result, Session, Settings};
use lifeboat_repo::Repository;

use crate::output::TermProgress;
use crate::Global;

/// Everything a command needs: the session (settings, config file, runtime)
/// and how to print.
pub(crate) struct Ctx {
    pub(crate) session: Session,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    /// What a backup command made, for its job record.
    pub(crate) made: std::cell::RefCell<Option<Made>>,
    /// What the audit log says of this command (`None`: left out of it).
    pub(crate) audit: Option<lifeboat_repo::AuditContext>,
    /// The handle that writes its final record, once a repository opened.
    pub(crate) auditor: std::cell::RefCell<Option<lifeboat_repo::Auditor>>,
    /// Facts the command adds to its final record.
    pub(crate) audit_detail: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

/// What a backup made: the figures of its job record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Made {
    pub(crate) snapshot: String,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_stored: u64,
    pub(crate) bytes_total: u64,
}

impl Made {
    /// The figures of a snapshot's stats.
    pub(crate) fn of(id: &lifeboat_repo::SnapshotId, st: &lifeboat_repo::BackupStats) -> Made {
        Made {
            snapshot: id.to_hex(),
            bytes_read: st.bytes_read,
            bytes_stored: st.bytes_stored,
            bytes_total: st.bytes_total,
        }
    }
}

/// The session's settings from the global flags.
pub(crate) fn settings(g: &Global) -> Settings {
    Settings {
        config: g.config.clone(),
        repo: g.repo.clone(),
        s3_endpoint: g.s3_endpoint.clone(),
        s3_region: g.s3_region.clone(),
        secrets: SecretSettings {
            key_file: g.key_file.clone(),
            key_command: g.key_command.clone(),
            password_file: g.password_file.clone(),
            password_command: g.password_command.clone(),
        },
        max_blocking_threads: None,
    }
}

/// Prints warnings the operations layer returned.
pub(crate) fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

impl Ctx {
    pub(crate) fn progress(&self) -> TermProgress {
        TermProgress::new(self.quiet || self.json)
    }

    /// Opens the repository, printing the warnings that came with it.
    pub(crate) fn open(&self) -> Result<Repository> {
        let opened = self.session.open()?;
        warn(&opened.warnings);
        self.audited(&opened.repo);
        Ok(opened.repo)
    }

    /// Opens a replica of the config file as a repository (the same keys,
    /// its own store), printing the warnings that came with it.
    pub(crate) fn open_replica(
        &self,
        replica: &lifeboat_ops::config::ReplicaSection,
    ) -> Result<Repository> {
        let storage = self.session.replica_storage(replica)?;
        let (creds, warnings) = self.session.credentials()?;
        warn(&warnings);
        let repo = Repository::open(storage, self.handle().clone(), &creds)?;
        self.audited(&repo);
        Ok(repo)
    }

    /// Puts the command in the audit log of `repo` (the first repository
    /// it opens): what it reads is recorded as the reading starts, the
    /// rest when it ends ([`crate::audit::finish`]).
    pub(crate) fn audited(&self, repo: &Repository) {
        let Some(context) = &self.audit else { return };
        let mut auditor = self.auditor.borrow_mut();
        if auditor.is_none() {
            repo.set_audit_context(context.clone());
            *auditor = Some(repo.auditor());
        }
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.session.handle()
    }
}
