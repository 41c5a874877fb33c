//! The commands: turn parsed arguments into library calls and print results.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use lifeboat_repo::{
    ByteSize, ChunkerConfig, Credential, FilesBackupOptions, InitOptions, Kdf, Repository,
    RestoreOptions, SecretSource, Snapshot, SnapshotEntry, StreamBackupOptions,
};
use lifeboat_storage::{S3Options, StorageOptions};
use serde_json::json;

use crate::config::{self, FileConfig};
use crate::output::{print_json, rate, secs, size, TermProgress};
use crate::{
    BackupArgs, Cli, Command, DamageFound, FilesCommand, Global, KeyAddArgs, KeyCommand,
    RepairCommand, RepoCommand, RestoreArgs, UsageError,
};

/// Everything a command needs from the environment, settled once.
pub(crate) struct Ctx {
    pub(crate) global: Global,
    pub(crate) file: FileConfig,
    pub(crate) rt: tokio::runtime::Runtime,
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    if let Command::Demo {
        keep,
        scale,
        files,
        workdir,
    } = cli.command
    {
        if files {
            return crate::demo::run(cli.global.json, cli.global.quiet, keep, scale.max(1));
        }
        return crate::pgdemo::run(crate::pgdemo::DemoArgs {
            json: cli.global.json,
            quiet: cli.global.quiet,
            keep,
            scale: scale.max(1),
            workdir,
        });
    }
    let file = config::load(cli.global.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let ctx = Ctx {
        global: cli.global,
        file,
        rt,
    };
    match cli.command {
        Command::Repo(RepoCommand::Init(args)) => init(&ctx, &args),
        Command::Repo(RepoCommand::Key(k)) => key(&ctx, k),
        Command::Files(FilesCommand::Backup(args)) => backup(&ctx, &args),
        Command::Files(FilesCommand::Restore(args)) => restore(&ctx, &args),
        Command::Pg(cmd) => crate::pg::run(&ctx, cmd),
        Command::Redis(cmd) => crate::redis::run(&ctx, cmd),
        Command::Snapshots => snapshots(&ctx),
        Command::Ls { snapshot } => ls(&ctx, &snapshot),
        Command::Verify { read_data } => verify(&ctx, read_data),
        Command::Repair(cmd) => repair(&ctx, cmd),
        Command::Demo { .. } => Ok(()),
    }
}

fn parse_size(what: &str, text: &str) -> Result<u64> {
    text.parse::<ByteSize>()
        .map(|b| b.0)
        .map_err(|e| UsageError(format!("{what}: {e}")).into())
}

impl Ctx {
    fn storage(&self) -> Result<lifeboat_storage::DynStorage> {
        let url = self
            .global
            .repo
            .clone()
            .or_else(|| self.file.repo.clone())
            .ok_or_else(|| UsageError("no repository given: use --repo URL, LIFEBOAT_REPO, or `repo = ...` in the config file".into()))?;
        let s3 = &self.file.s3;
        let options = StorageOptions {
            s3: S3Options {
                endpoint: self
                    .global
                    .s3_endpoint
                    .clone()
                    .or_else(|| s3.endpoint.clone()),
                region: self.global.s3_region.clone().or_else(|| s3.region.clone()),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                virtual_host_style: s3.virtual_host_style,
            },
            retry: self.file.storage.retry_policy(),
            max_concurrency: self.file.storage.max_concurrency.unwrap_or(0),
        };
        lifeboat_storage::open(&url, &options).map_err(|e| UsageError(e.to_string()).into())
    }

    pub(crate) fn file_has_secret(&self) -> bool {
        self.file.key_file.is_some()
            || self.file.key_command.is_some()
            || self.file.password_file.is_some()
            || self.file.password_command.is_some()
    }

    pub(crate) fn progress(&self) -> TermProgress {
        TermProgress::new(self.global.quiet || self.global.json)
    }

    /// Every credential given, key material first (it opens without Argon2id).
    fn credentials(&self) -> Result<Vec<Credential>> {
        let key = self.key_credential();
        let password = self.password_credential()?;
        let mut out = Vec::new();
        match key {
            Ok(Some(k)) => out.push(k),
            Ok(None) => {}
            // Key material that cannot be a key: with a password given as
            // well, said and passed over; alone, the error.
            Err(e) if password.is_some() => eprintln!("warning: {e}; trying the password"),
            Err(e) => return Err(e),
        }
        out.extend(password);
        Ok(out)
    }

    /// The key material given (file, command, LIFEBOAT_KEY), if any.
    fn key_credential(&self) -> Result<Option<Credential>> {
        let g = &self.global;
        if let Some(p) = g.key_file.clone().or_else(|| self.file.key_file.clone()) {
            return Ok(Some(Credential::key_material(
                SecretSource::KeyFile,
                read_key_file(&p)?,
            )));
        }
        if let Some(c) = g
            .key_command
            .clone()
            .or_else(|| self.file.key_command.clone())
        {
            return Ok(Some(Credential::key_material(
                SecretSource::KeyCommand,
                key_material(run_secret_command(&c, false)?, "the key command's output")?,
            )));
        }
        if let Some(k) = std::env::var_os("LIFEBOAT_KEY").filter(|v| !v.is_empty()) {
            return Ok(Some(Credential::key_material(
                SecretSource::KeyEnv,
                key_material(
                    k.to_string_lossy().trim().as_bytes().to_vec(),
                    "LIFEBOAT_KEY",
                )?,
            )));
        }
        Ok(None)
    }

    /// The passphrase given (file, command, LIFEBOAT_PASSWORD), if any.
    fn password_credential(&self) -> Result<Option<Credential>> {
        let g = &self.global;
        if let Some(p) = g
            .password_file
            .clone()
            .or_else(|| self.file.password_file.clone())
        {
            return Ok(Some(Credential::passphrase(read_password_file(&p)?)));
        }
        if let Some(c) = g
            .password_command
            .clone()
            .or_else(|| self.file.password_command.clone())
        {
            return Ok(Some(Credential::passphrase(run_secret_command(&c, true)?)));
        }
        Ok(std::env::var_os("LIFEBOAT_PASSWORD")
            .filter(|v| !v.is_empty())
            .map(|p| Credential::passphrase(p.to_string_lossy().as_bytes().to_vec())))
    }

    pub(crate) fn open(&self) -> Result<Repository> {
        let storage = self.storage()?;
        let creds = self.credentials()?;
        let repo = Repository::open(storage, self.rt.handle().clone(), &creds)?;
        if let Some(root) = self.local_root() {
            warn_exposed_key_slots(&root);
        }
        for (key, reason) in repo.damaged_slots_at_open() {
            eprintln!("warning: key slot {key} is damaged ({reason}); `lifeboat verify` reports it, `lifeboat repo key add` makes a new slot");
        }
        Ok(repo)
    }

    /// The repository's directory when it is on local disk.
    fn local_root(&self) -> Option<std::path::PathBuf> {
        let url = self
            .global
            .repo
            .clone()
            .or_else(|| self.file.repo.clone())?;
        if url.contains("://") && !url.starts_with("file://") {
            return None;
        }
        Some(std::path::PathBuf::from(url.trim_start_matches("file://")))
    }
}

/// The first line of a file holding one secret setting (a URL with a
/// password), or a usage error naming the file.
pub(crate) fn first_line_of(p: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| UsageError(format!("cannot read {what} {}: {e}", p.display())))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(UsageError(format!("{what} {} is empty", p.display())).into());
    }
    Ok(line)
}

fn read_password_file(p: &Path) -> Result<Vec<u8>> {
    Ok(first_line_of(p, "password file")?.into_bytes())
}

/// Key material must be at least this long (BLAKE3 slots need 32 bytes).
const KEY_MIN: usize = 32;

/// Key material from `what`, refused when it is too short to be a key.
fn key_material(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if bytes.len() < KEY_MIN {
        return Err(UsageError(format!(
            "{what} holds {} bytes of key material; a key must be at least {KEY_MIN} bytes (make one with `head -c 32 /dev/urandom | base64 > KEYFILE`), or use a passphrase (LIFEBOAT_PASSWORD, --password-file)",
            bytes.len()
        ))
        .into());
    }
    Ok(bytes)
}

fn read_key_file(p: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(p)
        .map_err(|e| UsageError(format!("cannot read key file {}: {e}", p.display())))?;
    // A text key file (hex, base64) may end with a newline that is not part of the key.
    let bytes = match std::str::from_utf8(&bytes) {
        Ok(s) => s.trim_end().as_bytes().to_vec(),
        Err(_) => bytes,
    };
    key_material(bytes, &format!("key file {}", p.display()))
}

/// A passphrase shorter than this gets a warning when a slot is made for it.
const PASSPHRASE_ADVISED: usize = 12;

fn warn_short_passphrase(cred: &Credential, len: usize) {
    if !cred.source().is_key_material() && len < PASSPHRASE_ADVISED {
        eprintln!(
            "warning: the passphrase is only {len} bytes long; anyone who gets a copy of the repository can try passphrases offline, so use at least {PASSPHRASE_ADVISED} characters (a few random words), or key material (--key-file)"
        );
    }
}

/// Warns when other users may read a local repository's key slots: with a
/// copy of one, a passphrase can be guessed offline.
fn warn_exposed_key_slots(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(root.join("keys")) else {
        return;
    };
    let exposed: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !exposed.is_empty() {
        eprintln!(
            "warning: {} key slot(s) of {} can be read by every user of this machine ({}); with a copy, anyone can guess the passphrase offline. Fix it with: chmod -R o-rwx {}",
            exposed.len(),
            root.display(),
            exposed.join(", "),
            root.display()
        );
    }
}

fn run_secret_command(cmd: &str, first_line: bool) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| UsageError(format!("cannot run secret command {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(
            UsageError(format!("secret command {cmd:?} failed with {}", out.status)).into(),
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let secret = if first_line {
        text.lines().next().unwrap_or_default().to_string()
    } else {
        text.trim_end().to_string()
    };
    if secret.is_empty() {
        return Err(UsageError(format!("secret command {cmd:?} printed nothing")).into());
    }
    Ok(secret.into_bytes())
}

fn kdf_with_memory(text: &str) -> Result<Kdf> {
    let mem = parse_size("--kdf-memory", text)?;
    if mem < 8 * 1024 {
        return Err(UsageError("--kdf-memory must be at least 8KiB".into()).into());
    }
    match Kdf::default_passphrase() {
        Kdf::Argon2id {
            iterations,
            parallelism,
            ..
        } => Ok(Kdf::Argon2id {
            memory_kib: (mem / 1024) as u32,
            iterations,
            parallelism,
        }),
        other => Ok(other),
    }
}

fn init(ctx: &Ctx, args: &crate::InitArgs) -> Result<()> {
    let avg = parse_size("--chunk-size", &args.chunk_size)? as u32;
    let options = InitOptions {
        chunker: ChunkerConfig::Cdc {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        },
        pack_size: parse_size("--pack-size", &args.pack_size)?,
        compression_level: args.compression_level,
        passphrase_kdf: kdf_with_memory(&args.kdf_memory)?,
    };
    let creds = ctx.credentials()?;
    let Some(cred) = creds.first() else {
        return Err(UsageError(
            "a new repository needs a secret: set LIFEBOAT_PASSWORD, or use --password-file, --password-command, --key-file or LIFEBOAT_KEY".into(),
        )
        .into());
    };
    let storage = ctx.storage()?;
    if let Some(root) = ctx.local_root() {
        let exists = std::fs::read_dir(root.join("keys")).is_ok() || root.join("config").exists();
        if !exists {
            lifeboat_storage::LocalStorage::new(&root)
                .create_root(args.group_readable)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", root.display())))?;
        }
    }
    warn_short_passphrase(cred, cred.len());
    let repo = Repository::init(storage, ctx.rt.handle().clone(), cred, &options)?;
    if ctx.global.json {
        print_json(&json!({
            "repository": repo.location(),
            "id": repo.config().id,
            "key_slot": repo.opened_slot(),
            "config": repo.config(),
        }));
    } else {
        outln!(
            "created lifeboat repository {} at {}",
            repo.config().id,
            repo.location()
        );
        outln!(
            "key slot {} opens it; keep that secret safe: without it the data is lost",
            repo.opened_slot()
        );
    }
    Ok(())
}

fn key(ctx: &Ctx, cmd: KeyCommand) -> Result<()> {
    let mut repo = ctx.open()?;
    match cmd {
        KeyCommand::List => {
            let slots = repo.key_slots()?;
            let epochs = repo.key_epochs();
            if ctx.global.json {
                let list: Vec<_> = slots
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id, "source": s.source, "label": s.label,
                            "created_unix": s.created_unix, "kdf": s.kdf,
                            "current": s.id == repo.opened_slot(),
                        })
                    })
                    .collect();
                let ep: Vec<_> = epochs
                    .iter()
                    .map(|(n, c)| json!({"epoch": n, "created_unix": c}))
                    .collect();
                print_json(&json!({ "slots": list, "data_key_epochs": ep }));
            } else {
                outln!(
                    "{:<2}{:<18}{:<13}{:<22}label",
                    "",
                    "slot",
                    "source",
                    "created"
                );
                for s in &slots {
                    let mark = if s.id == repo.opened_slot() { "*" } else { "" };
                    let source = serde_json::to_value(s.source)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    outln!(
                        "{mark:<2}{:<18}{:<13}{:<22}{}",
                        s.id,
                        source,
                        fmt_unix(s.created_unix),
                        s.label
                    );
                }
                outln!(
                    "data-key epochs: {} (current: {})",
                    epochs.len(),
                    epochs.last().map(|e| e.0).unwrap_or(0)
                );
            }
        }
        KeyCommand::Add(args) => {
            let cred = new_credential(&args)?;
            warn_short_passphrase(&cred, cred.len());
            let kdf = kdf_with_memory(&args.kdf_memory)?;
            let slot = repo.add_key_slot(&cred, &args.label, &kdf)?;
            if ctx.global.json {
                print_json(&json!({ "added": slot.id, "source": slot.source }));
            } else {
                outln!("added key slot {}", slot.id);
            }
        }
        KeyCommand::Remove { id } => {
            let slot = repo.remove_key_slot(&id)?;
            if ctx.global.json {
                print_json(&json!({ "removed": slot.id }));
            } else {
                outln!("removed key slot {}", slot.id);
            }
        }
        KeyCommand::Rotate => {
            let epoch = repo.rotate_data_key()?;
            if ctx.global.json {
                print_json(&json!({ "epoch": epoch }));
            } else {
                outln!("data-key epoch {epoch} is now used for new data; older data stays readable with its own epoch");
            }
        }
    }
    Ok(())
}

fn new_credential(args: &KeyAddArgs) -> Result<Credential> {
    if let Some(p) = &args.new_key_file {
        return Ok(Credential::key_material(
            SecretSource::KeyFile,
            read_key_file(p)?,
        ));
    }
    if let Some(c) = &args.new_key_command {
        return Ok(Credential::key_material(
            SecretSource::KeyCommand,
            key_material(run_secret_command(c, false)?, "the key command's output")?,
        ));
    }
    if let Some(k) = std::env::var_os("LIFEBOAT_NEW_KEY").filter(|v| !v.is_empty()) {
        return Ok(Credential::key_material(
            SecretSource::KeyEnv,
            key_material(
                k.to_string_lossy().trim().as_bytes().to_vec(),
                "LIFEBOAT_NEW_KEY",
            )?,
        ));
    }
    if let Some(p) = &args.new_password_file {
        return Ok(Credential::passphrase(read_password_file(p)?));
    }
    if let Some(c) = &args.new_password_command {
        return Ok(Credential::passphrase(run_secret_command(c, true)?));
    }
    if let Some(p) = std::env::var_os("LIFEBOAT_NEW_PASSWORD").filter(|v| !v.is_empty()) {
        return Ok(Credential::passphrase(
            p.to_string_lossy().as_bytes().to_vec(),
        ));
    }
    Err(UsageError("no new secret given: use --new-password-file, --new-password-command, LIFEBOAT_NEW_PASSWORD, --new-key-file, --new-key-command or LIFEBOAT_NEW_KEY".into()).into())
}

fn fmt_unix(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    short_time(&lifeboat_repo::format_time(t))
}

/// `2026-11-24T13:52:40.123456Z` → `2026-11-24T13:52:40Z` for listings.
fn short_time(t: &str) -> String {
    match t.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => t.to_string(),
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn backup(ctx: &Ctx, args: &BackupArgs) -> Result<()> {
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let host = args.host.clone().unwrap_or_else(hostname);
    let outcome = if args.stdin {
        let opts = StreamBackupOptions {
            name: args.name.clone().unwrap_or_else(|| "stdin".into()),
            source_kind: "stream".into(),
            tags: args.tags.clone(),
            hostname: host,
            metadata: Default::default(),
        };
        let stdin = std::io::stdin();
        let reader: Box<dyn Read> = Box::new(stdin.lock());
        repo.backup_stream(&opts, reader, &progress)?
    } else {
        let opts = FilesBackupOptions {
            paths: args.paths.clone(),
            tags: args.tags.clone(),
            allow_partial: args.allow_partial,
            force_read: args.force,
            hostname: host,
            metadata: Default::default(),
        };
        repo.backup_files(&opts, &progress)?
    };
    let s = &outcome.snapshot;
    let st = &s.stats;
    if ctx.global.json {
        print_json(&json!({
            "snapshot": outcome.id.to_hex(),
            "partial": s.partial,
            "skipped": s.skipped,
            "parent": s.parent.map(|p| p.to_hex()),
            "stats": st,
            "throughput_bytes_per_sec": (st.bytes_read * 1000).checked_div(st.duration_ms).unwrap_or(0),
        }));
    } else {
        for sk in &s.skipped {
            eprintln!(
                "skipped {}: {}",
                lifeboat_repo::name::display(&sk.path),
                sk.reason
            );
        }
        let partial = if s.partial {
            " (PARTIAL: some items were skipped)"
        } else {
            ""
        };
        outln!("snapshot {} saved{partial}", outcome.id.short());
        outln!(
            "  {} files, {} dirs, {} in all; read {}, new {}, stored {} in {} pack(s)",
            st.files,
            st.dirs,
            size(st.bytes_total),
            size(st.bytes_read),
            size(st.bytes_new),
            size(st.bytes_stored),
            st.packs
        );
        outln!(
            "  took {} ({})",
            secs(st.duration_ms),
            rate(st.bytes_read, st.duration_ms)
        );
    }
    Ok(())
}

fn restore(ctx: &Ctx, args: &RestoreArgs) -> Result<()> {
    let repo = ctx.open()?;
    let entry = repo.find_snapshot(&args.snapshot)?;
    let progress = ctx.progress();
    if args.stdout {
        let started = std::time::Instant::now();
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let n = repo.restore_stream(&entry.snapshot, &mut lock, &progress)?;
        let ms = started.elapsed().as_millis() as u64;
        if !ctx.global.quiet {
            eprintln!(
                "restored {} from snapshot {} in {} ({})",
                size(n),
                entry.id.short(),
                secs(ms),
                rate(n, ms)
            );
        }
        return Ok(());
    }
    let target = args
        .target
        .clone()
        .ok_or_else(|| UsageError("--target DIR is required".into()))?;
    let opts = RestoreOptions {
        target: target.clone(),
        include: args
            .include
            .iter()
            .map(|p| lifeboat_repo::name::encode(p.as_os_str().as_encoded_bytes()))
            .collect(),
        overwrite: match args.overwrite.as_deref() {
            Some(w) => w.parse().map_err(UsageError)?,
            None => Default::default(),
        },
        ..Default::default()
    };
    let stats = repo.restore(&entry.snapshot, &opts, &progress)?;
    if ctx.global.json {
        print_json(&json!({ "snapshot": entry.id.to_hex(), "target": target, "stats": stats }));
    } else {
        let mut extra = String::new();
        if stats.specials > 0 {
            extra.push_str(&format!(", {} FIFOs and device nodes", stats.specials));
        }
        if stats.unchanged > 0 {
            extra.push_str(&format!(", {} left as they were", stats.unchanged));
        }
        outln!(
            "restored {} files, {} dirs, {} symlinks{extra}, {} from snapshot {} to {} in {} ({})",
            stats.files,
            stats.dirs,
            stats.symlinks,
            size(stats.bytes),
            entry.id.short(),
            target.display(),
            secs(stats.duration_ms),
            rate(stats.bytes, stats.duration_ms)
        );
        if stats.sockets_skipped > 0 {
            outln!(
                "  {} socket(s) in the snapshot were not restored (a socket is made by the program that listens on it)",
                stats.sockets_skipped
            );
        }
    }
    Ok(())
}

fn snapshot_json(e: &SnapshotEntry) -> serde_json::Value {
    let s = &e.snapshot;
    json!({
        "id": e.id.to_hex(), "short_id": e.id.short(), "source_kind": s.source_kind,
        "source_name": s.source_name, "hostname": s.hostname, "paths": s.paths, "tags": s.tags,
        "start_time": s.start_time, "end_time": s.end_time, "partial": s.partial,
        "parent": s.parent.map(|p| p.to_hex()), "metadata": s.metadata, "stats": s.stats,
    })
}

fn snapshots(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open()?;
    let all = repo.snapshots()?;
    if ctx.global.json {
        print_json(&serde_json::Value::Array(
            all.iter().map(snapshot_json).collect(),
        ));
        return Ok(());
    }
    outln!(
        "{:<10}{:<22}{:<16}{:<8}{:>11}{:>11}  {:<14}paths",
        "id",
        "time",
        "host",
        "kind",
        "size",
        "stored",
        "tags"
    );
    for e in &all {
        let s = &e.snapshot;
        let partial = if s.partial { " (partial)" } else { "" };
        outln!(
            "{:<10}{:<22}{:<16}{:<8}{:>11}{:>11}  {:<14}{}{partial}",
            e.id.short(),
            short_time(&s.start_time),
            s.hostname,
            s.source_kind,
            size(s.stats.bytes_total),
            size(s.stats.bytes_stored),
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    outln!("{} snapshot(s)", all.len());
    Ok(())
}

fn ls(ctx: &Ctx, spec: &str) -> Result<()> {
    let repo = ctx.open()?;
    let e = repo.find_snapshot(spec)?;
    let s: &Snapshot = &e.snapshot;
    if ctx.global.json {
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|n| json!({
                "path": format!("/{}", n.path), "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target,
            }))
            .collect();
        print_json(&json!({ "snapshot": e.id.to_hex(), "nodes": nodes }));
        return Ok(());
    }
    for n in &s.nodes {
        let target = n
            .target
            .as_deref()
            .map(|t| format!(" -> {}", lifeboat_repo::name::display(t)))
            .unwrap_or_default();
        outln!(
            "{}{:04o} {:>6}:{:<6} {:>12} /{}{target}",
            n.kind.letter(),
            n.mode & 0o7777,
            n.uid,
            n.gid,
            n.size,
            lifeboat_repo::name::display(&n.path)
        );
    }
    Ok(())
}

fn verify(ctx: &Ctx, read_data: bool) -> Result<()> {
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let started = std::time::Instant::now();
    let report = repo.verify(read_data, &progress)?;
    let ms = started.elapsed().as_millis() as u64;
    if ctx.global.json {
        let mut v = serde_json::to_value(&report).context("encode the report")?;
        if let Some(o) = v.as_object_mut() {
            o.insert("clean".into(), json!(report.is_clean()));
            o.insert("duration_ms".into(), json!(ms));
        }
        print_json(&v);
    } else {
        outln!(
            "checked {} index object(s), {} snapshot(s), {} pack(s){}",
            report.indexes,
            report.snapshots,
            report.packs,
            if read_data {
                format!(
                    ", {} chunk(s), {} patched piece(s), {} WAL/history file(s), {} read in {} ({})",
                    report.chunks_checked,
                    report.pieces_rebuilt,
                    report.named_checked,
                    size(report.bytes_read),
                    secs(ms),
                    rate(report.bytes_read, ms)
                )
            } else {
                String::new()
            }
        );
        let l = &report.leftovers;
        if l.count > 0 {
            outln!(
                "{} temporary file(s) of interrupted writes, {} in all, the oldest {} old (not damage; `lifeboat repair leftovers` removes those older than an hour)",
                l.count,
                size(l.bytes),
                l.oldest_s
                    .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        if report.unindexed_packs > 0 {
            outln!(
                "{} pack(s) are in no index (left by interrupted backups; harmless)",
                report.unindexed_packs
            );
        }
        for d in &report.damaged {
            outln!("DAMAGED {}: {}", d.object, d.problem);
        }
        for b in &report.broken_snapshots {
            outln!("BROKEN snapshot {}: {}", b.id.short(), b.reason);
        }
        if let Some(hint) = &report.hint {
            outln!("{hint}");
        }
        if report.is_clean() {
            outln!("no damage found");
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(DamageFound(format!(
            "{} damaged object(s), {} broken snapshot(s)",
            report.damaged.len(),
            report.broken_snapshots.len()
        ))
        .into())
    }
}

fn repair(ctx: &Ctx, cmd: RepairCommand) -> Result<()> {
    let repo = ctx.open()?;
    match cmd {
        RepairCommand::Index { read_data } => {
            let progress = ctx.progress();
            let r = repo.repair_index(read_data, &progress)?;
            if ctx.global.json {
                print_json(&json!(r));
            } else {
                outln!(
                    "read the tables of {} pack(s) no intact index listed: {} pack(s) and {} chunk(s) indexed in {} new index object(s); {} index object(s) kept",
                    r.packs_read,
                    r.packs_indexed,
                    r.chunks_indexed,
                    r.indexes_written,
                    r.indexes_kept
                );
                for k in &r.indexes_removed {
                    outln!("removed the damaged index object {k}");
                }
                for (k, why) in &r.unreadable_packs {
                    outln!("DAMAGED {k}: {why} (left as it is)");
                }
                for (k, n) in &r.bad_chunks {
                    outln!("DAMAGED {k}: {n} chunk(s) fail decryption or their hash check (left out of the index)");
                }
                outln!("run `lifeboat verify` to see what every snapshot needs");
            }
            if r.unreadable_packs.is_empty() && r.bad_chunks.is_empty() {
                Ok(())
            } else {
                Err(DamageFound(format!(
                    "{} pack(s) could not be indexed, {} with damaged chunks",
                    r.unreadable_packs.len(),
                    r.bad_chunks.len()
                ))
                .into())
            }
        }
        RepairCommand::Leftovers {
            older_than,
            dry_run,
        } => {
            let min_age = humantime::parse_duration(&older_than)
                .map_err(|e| UsageError(format!("--older-than {older_than:?}: {e}")))?;
            let list = if dry_run {
                repo.leftovers()?
                    .into_iter()
                    .filter(|l| l.age_s.is_some_and(|a| a >= min_age.as_secs()))
                    .collect()
            } else {
                repo.remove_leftovers(min_age)?
            };
            let bytes: u64 = list.iter().map(|l| l.size).sum();
            if ctx.global.json {
                print_json(&json!({ "removed": !dry_run, "leftovers": list, "bytes": bytes }));
            } else {
                for l in &list {
                    outln!(
                        "{} {} ({})",
                        if dry_run { "would remove" } else { "removed" },
                        l.key,
                        size(l.size)
                    );
                }
                outln!(
                    "{} {} leftover(s), {}",
                    if dry_run { "would remove" } else { "removed" },
                    list.len(),
                    size(bytes)
                );
            }
            Ok(())
        }
    }
}
