//! A session: settings settled once (flags over environment over the config
//! file), the async runtime the repository drives storage on, and the
//! repository opened from them.

use std::path::{Path, PathBuf};

use lifeboat_repo::{Credential, FileType, InitOptions, Repository};
use lifeboat_storage::{DynStorage, S3Options, StorageOptions};

use crate::config::{self, FileConfig};
use crate::secrets::{self, SecretRef, SecretSettings};
use crate::{Error, Result};

/// What the command line (flags and their environment variables) gave; the
/// config file fills what it leaves unset.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The config file (`--config`), else the default paths.
    pub config: Option<PathBuf>,
    /// The repository URL.
    pub repo: Option<String>,
    /// The S3 endpoint.
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    pub s3_region: Option<String>,
    /// The secret.
    pub secrets: SecretSettings,
    /// Threads the runtime keeps for blocking work (local file I/O) at
    /// most; `None`: tokio's default (512). A long-running process (the
    /// agent) keeps it small: every thread that ever ran may keep a malloc
    /// arena of its own, and memory that only grows.
    pub max_blocking_threads: Option<usize>,
}

/// A repository opened, and what the operator should be warned of.
pub struct Opened {
    /// The repository.
    pub repo: Repository,
    /// Warnings: key slots others can read, damaged key slots, a key passed over.
    pub warnings: Vec<String>,
}

/// Settings, config file and runtime, settled once for any number of
/// operations.
pub struct Session {
    /// What the command line gave.
    pub settings: Settings,
    /// The config file read.
    pub file: FileConfig,
    rt: tokio::runtime::Runtime,
}

impl Session {
    /// Reads the config file and starts the runtime.
    pub fn new(settings: Settings) -> Result<Self> {
        let file = config::load(settings.config.as_deref())?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2).enable_all();
        if let Some(n) = settings.max_blocking_threads {
            builder.max_blocking_threads(n.max(1));
        }
        let rt = builder
            .build()
            .map_err(|e| Error::io("start the async runtime", e))?;
        Ok(Session { settings, file, rt })
    }

    /// The runtime's handle, for library calls that drive async clients.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }

    /// The config file's secret settings.
    pub fn file_secrets(&self) -> SecretSettings {
        SecretSettings {
            key_file: self.file.key_file.clone(),
            key_command: self.file.key_command.clone(),
            password_file: self.file.password_file.clone(),
            password_command: self.file.password_command.clone(),
        }
    }

    /// The repository URL, from the flags or the config file.
    pub fn repo_url(&self) -> Result<String> {
        self.settings
            .repo
            .clone()
            .or_else(|| self.file.repo.clone())
            .ok_or_else(|| {
                Error::usage(
                    "no repository given: use --repo URL, LIFEBOAT_REPO, or `repo = ...` in the config file",
                )
            })
    }

    /// The store the settings name, with retry and concurrency layers.
    pub fn storage(&self) -> Result<DynStorage> {
        let url = self.repo_url()?;
        let s3 = &self.file.s3;
        let options = self.storage_options(S3Options {
            endpoint: self
                .settings
                .s3_endpoint
                .clone()
                .or_else(|| s3.endpoint.clone()),
            region: self
                .settings
                .s3_region
                .clone()
                .or_else(|| s3.region.clone()),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: s3.secret_access_key.clone(),
            virtual_host_style: s3.virtual_host_style.unwrap_or(false),
            storage_class: None,
        });
        Ok(lifeboat_storage::open(&url, &options)?)
    }

    /// The store of a replica, with its own `[replica.s3]` settings (a key
    /// it leaves out is taken from `[s3]`) and the `[storage]` limits.
    pub fn replica_storage(&self, replica: &config::ReplicaSection) -> Result<DynStorage> {
        let (own, s3) = (&replica.s3, &self.file.s3);
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        let options = self.storage_options(S3Options {
            endpoint: pick(&own.endpoint, &s3.endpoint),
            region: pick(&own.region, &s3.region),
            access_key_id: pick(&own.access_key_id, &s3.access_key_id),
            secret_access_key: pick(&own.secret_access_key, &s3.secret_access_key),
            virtual_host_style: own
                .virtual_host_style
                .or(s3.virtual_host_style)
                .unwrap_or(false),
            storage_class: replica.storage_class.clone(),
        });
        lifeboat_storage::open(&replica.repo, &options).map_err(|e| {
            Error::usage(format!(
                "replica {:?}: {}",
                replica.name,
                lifeboat_repo::report(&e)
            ))
        })
    }

    fn storage_options(&self, s3: S3Options) -> StorageOptions {
        StorageOptions {
            s3,
            retry: self.file.storage.retry_policy(),
            max_concurrency: self.file.storage.max_concurrency.unwrap_or(0),
        }
    }

    /// Every credential given, key material first, with warnings.
    pub fn credentials(&self) -> Result<(Vec<Credential>, Vec<String>)> {
        secrets::credentials(&self.settings.secrets, &self.file_secrets())
    }

    /// Opens the repository.
    pub fn open(&self) -> Result<Opened> {
        let storage = self.storage()?;
        let (creds, mut warnings) = self.credentials()?;
        let repo = Repository::open(storage, self.handle().clone(), &creds)?;
        if let Some(root) = self.local_root() {
            warnings.extend(exposed_key_slots(&root));
        }
        for (key, reason) in repo.damaged_slots_at_open() {
            warnings.push(format!("key slot {key} is damaged ({reason}); `lifeboat verify` reports it, `lifeboat repo key add` makes a new slot"));
        }
        Ok(Opened { repo, warnings })
    }

    /// Creates a repository with the first credential given; a local one
    /// gets private modes (or group-readable ones).
    pub fn init(&self, options: &InitOptions, group_readable: bool) -> Result<Opened> {
        let (creds, mut warnings) = self.credentials()?;
        let Some(cred) = creds.first() else {
            return Err(Error::usage(
                "a new repository needs a secret: set LIFEBOAT_PASSWORD, or use --password-file, --password-command, --key-file or LIFEBOAT_KEY",
            ));
        };
        let storage = self.storage()?;
        if let Some(root) = self.local_root() {
            let exists = std::fs::read_dir(root.join(FileType::KeySlot.prefix())).is_ok()
                || root.join(FileType::Config.prefix()).exists();
            if !exists {
                lifeboat_storage::LocalStorage::new(&root)
                    .create_root(group_readable)
                    .map_err(|e| {
                        Error::usage_because(format!("cannot create {}", root.display()), e)
                    })?;
            }
        }
        warnings.extend(secrets::short_passphrase_warning(cred));
        let repo = Repository::init(storage, self.handle().clone(), cred, options)?;
        Ok(Opened { repo, warnings })
    }

    /// The repository's directory when it is on local disk.
    pub fn local_root(&self) -> Option<PathBuf> {
        let url = self.repo_url().ok()?;
        if url.contains("://") && !url.starts_with("file://") {
            return None;
        }
        Some(PathBuf::from(url.trim_start_matches("file://")))
    }

    /// The `restore_command` a restored PostgreSQL server runs on its own:
    /// `exe` with this repository and a secret it can read without us
    /// (LIFEBOAT_KEY / LIFEBOAT_PASSWORD are not passed to it): the secret
    /// of [`secrets::for_restore_command`]; the config file carries its own.
    pub fn restore_command(&self, exe: &Path) -> Result<String> {
        let q = secrets::shell_quote;
        let abs = |p: &Path| -> Result<String> {
            std::path::absolute(p)
                .map(|p| p.display().to_string())
                .map_err(|e| Error::io(format!("make {} absolute", p.display()), e))
        };
        let mut cmd = q(&exe.display().to_string());
        let s = &self.settings;
        if let Some(c) = &s.config {
            cmd.push_str(&format!(" --config {}", q(&abs(c)?)));
        }
        if let Some(r) = &s.repo {
            let r = if r.contains("://") {
                r.clone()
            } else {
                abs(Path::new(r))?
            };
            cmd.push_str(&format!(" --repo {}", q(&r)));
        }
        if let Some(e) = &s.s3_endpoint {
            cmd.push_str(&format!(" --s3-endpoint {}", q(e)));
        }
        let flag = match secrets::for_restore_command(&s.secrets) {
            Some(SecretRef::KeyFile(p)) => Some(format!(" --key-file {}", q(&abs(&p)?))),
            Some(SecretRef::PasswordFile(p)) => Some(format!(" --password-file {}", q(&abs(&p)?))),
            Some(SecretRef::KeyCommand(c)) => Some(format!(" --key-command {}", q(&c))),
            Some(SecretRef::PasswordCommand(c)) => Some(format!(" --password-command {}", q(&c))),
            Some(SecretRef::KeyEnv(_) | SecretRef::PasswordEnv(_)) | None => None,
        };
        match flag {
            Some(f) => cmd.push_str(&f),
            None if s.config.is_some() || self.file_secrets().any() => {}
            None => return Err(Error::usage(
                "the restored server's restore_command needs a key or password it can read on its own, and LIFEBOAT_KEY / LIFEBOAT_PASSWORD are not passed to it: use --key-file, --password-file or a config file, or give --restore-command",
            )),
        }
        cmd.push_str(" pg wal-fetch %f %p");
        Ok(cmd)
    }
}

/// Warnings when other users may read a local repository's key slots: with
/// a copy of one, a passphrase can be guessed offline.
fn exposed_key_slots(root: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(root.join(FileType::KeySlot.prefix())).ok()?;
    let exposed: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    (!exposed.is_empty()).then(|| format!(
        "{} key slot(s) of {} can be read by every user of this machine ({}); with a copy, anyone can guess the passphrase offline. Fix it with: chmod -R o-rwx {}",
        exposed.len(),
        root.display(),
        exposed.join(", "),
        root.display()
    ))
}
