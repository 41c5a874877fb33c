//! `lifeboat demo`: the whole job on the embedded default, with a report.
//!
//! Makes a temporary local repository and an identity-platform-like dataset,
//! backs it up, changes 1 % of it, backs it up again, verifies every chunk,
//! restores into a fresh directory, compares every byte and reports the figures.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lifeboat_repo::{
    Credential, FilesBackupOptions, InitOptions, NoProgress, Progress, Repository, RestoreOptions,
};
use lifeboat_storage::{LocalStorage, Storage};
use serde_json::json;

use crate::output::{print_json, rate, secs, size, TermProgress};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

/// Writes users, sessions and audit events as CSV/JSON lines, plus uploads.
fn make_dataset(dir: &Path, scale: usize) -> Result<u64> {
    fs::create_dir_all(dir.join("uploads")).context("create the dataset directory")?;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut total = 0u64;
    let mut users = std::io::BufWriter::new(fs::File::create(dir.join("users.csv"))?);
    for i in 0..scale * 20_000 {
        let line = format!(
            "{},user{i}@example.com,$argon2id$v=19${},{} {},2026-0{}-1{}T0{}:00:00Z,{{\"locale\":\"en\",\"mfa\":{}}}\n",
            rng.hex(32),
            rng.hex(60),
            ["Ada", "Grace", "Linus", "Barbara", "Ken"][i % 5],
            ["Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson"][(i / 5) % 5],
            1 + i % 9,
            i % 10,
            i % 10,
            i % 2 == 0
        );
        total += line.len() as u64;
        users.write_all(line.as_bytes())?;
    }
    users.flush()?;
    let mut audit = std::io::BufWriter::new(fs::File::create(dir.join("audit_events.jsonl"))?);
    for i in 0..scale * 60_000 {
        let line = format!(
            "{{\"id\":\"{}\",\"action\":\"{}\",\"ip\":\"10.{}.{}.{}\",\"at\":\"2026-11-{:02}T12:{:02}:00Z\",\"session\":\"{}\"}}\n",
            rng.hex(32),
            ["login", "logout", "token.refresh", "password.change", "mfa.verify"][i % 5],
            i % 256,
            (i / 256) % 256,
            i % 7,
            1 + i % 28,
            i % 60,
            rng.hex(24)
        );
        total += line.len() as u64;
        audit.write_all(line.as_bytes())?;
    }
    audit.flush()?;
    for f in 0..scale * 4 {
        let mut buf = Vec::with_capacity(1 << 20);
        while buf.len() < 1 << 20 {
            buf.extend_from_slice(&rng.next().to_le_bytes());
        }
        fs::write(dir.join(format!("uploads/avatar-{f}.bin")), &buf)?;
        total += buf.len() as u64;
    }
    Ok(total)
}

/// Rewrites 1 % of the users file in place (a batch of profile updates).
fn change_one_percent(dir: &Path) -> Result<()> {
    let path = dir.join("users.csv");
    let mut data = fs::read(&path)?;
    let n = data.len() / 100;
    let start = data.len() / 3;
    for b in &mut data[start..start + n] {
        if b.is_ascii_lowercase() {
            *b = b.to_ascii_uppercase();
        }
    }
    fs::write(&path, data)?;
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(a.join(&rel))? {
            let entry = entry?;
            let r = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(r);
            } else {
                let x = fs::read(a.join(&r))?;
                let y = fs::read(b.join(&r))
                    .with_context(|| format!("read restored {}", r.display()))?;
                if x != y {
                    bail!("restored {} differs from the original", r.display());
                }
                files += 1;
                bytes += x.len() as u64;
            }
        }
    }
    Ok((files, bytes))
}

pub(crate) fn run(json_out: bool, quiet: bool, keep: bool, scale: usize) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("lifeboat-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    let root = work.path().to_path_buf();
    let say = |s: &str| {
        if !json_out {
            outln!("{s}");
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let progress: Box<dyn Progress> = if json_out || quiet {
        Box::new(NoProgress)
    } else {
        Box::new(TermProgress::new(false))
    };

    say(&format!("lifeboat demo in {}", root.display()));
    let data = root.join("identity-platform");
    let t = Instant::now();
    let dataset = make_dataset(&data, scale)?;
    say(&format!(
        "1. made a dataset: users, audit events, uploads — {} in {}",
        size(dataset),
        secs(t.elapsed().as_millis() as u64)
    ));

    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(root.join("repo")));
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).context("get random bytes for the demo key")?;
    let cred = Credential::key_material(lifeboat_repo::SecretSource::KeyEnv, secret.to_vec());
    let repo = Repository::init(storage, rt.handle().clone(), &cred, &InitOptions::default())?;
    say(&format!(
        "2. created an encrypted repository at {}",
        repo.location()
    ));

    let opts = FilesBackupOptions {
        paths: vec![data.clone()],
        tags: vec!["demo".into()],
        hostname: "demo".into(),
        ..Default::default()
    };
    let full = repo.backup_files(&opts, progress.as_ref())?;
    let fs_ = &full.snapshot.stats;
    say(&format!(
        "3. full backup {}: {} read, {} stored (compressed, encrypted) in {} ({})",
        full.id.short(),
        size(fs_.bytes_read),
        size(fs_.bytes_stored),
        secs(fs_.duration_ms),
        rate(fs_.bytes_read, fs_.duration_ms)
    ));

    change_one_percent(&data)?;
    let incr = repo.backup_files(&opts, progress.as_ref())?;
    let is = &incr.snapshot.stats;
    say(&format!(
        "4. changed 1 % of users.csv; next backup {} read {}, stored {} ({:.1} % of the full backup) in {}",
        incr.id.short(),
        size(is.bytes_read),
        size(is.bytes_stored),
        100.0 * is.bytes_stored as f64 / fs_.bytes_stored.max(1) as f64,
        secs(is.duration_ms)
    ));

    let t = Instant::now();
    let report = repo.verify(true, progress.as_ref())?;
    let verify_ms = t.elapsed().as_millis() as u64;
    if !report.is_clean() {
        bail!(
            "verify found damage in a fresh repository: {:?}",
            report.damaged
        );
    }
    say(&format!(
        "5. verified every chunk ({} chunks, {}) in {}: no damage",
        report.chunks_checked,
        size(report.bytes_read),
        secs(verify_ms)
    ));

    let target = root.join("restore");
    let rs = repo.restore(
        &incr.snapshot,
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        progress.as_ref(),
    )?;
    let restored_dir = target.join(data.strip_prefix("/").unwrap_or(&data));
    let (files, bytes) = same_bytes(&data, &restored_dir)?;
    say(&format!(
        "6. restored snapshot {} in {} ({}); {files} files, {} compared byte for byte: identical",
        incr.id.short(),
        secs(rs.duration_ms),
        rate(rs.bytes, rs.duration_ms),
        size(bytes)
    ));

    if json_out {
        print_json(&json!({
            "workdir": root, "dataset_bytes": dataset,
            "full": {"snapshot": full.id.to_hex(), "stats": fs_},
            "incremental": {"snapshot": incr.id.to_hex(), "stats": is},
            "verify": {"chunks": report.chunks_checked, "bytes": report.bytes_read, "duration_ms": verify_ms, "clean": true},
            "restore": {"stats": rs, "identical_files": files, "identical_bytes": bytes},
            "kept": keep,
        }));
    }
    if keep {
        let kept = work.keep();
        say(&format!(
            "kept {} (repository in repo/, restore in restore/)",
            kept.display()
        ));
    } else {
        say("cleaned up; run with --keep to look around");
    }
    Ok(())
}
