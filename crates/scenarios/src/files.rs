//! The files promise on the embedded default (`lifeboat demo --files`): a
//! generated dataset backed up, 1 % of it changed and backed up again,
//! every chunk verified, restored into a fresh directory and compared byte
//! for byte.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lifeboat_ops::fmt::{rate, secs, size};
use lifeboat_ops::{Error, Result};
use lifeboat_repo::{
    BackupStats, Credential, FilesBackupOptions, InitOptions, Progress, Repository, RestoreOptions,
    RestoreStats,
};
use lifeboat_storage::{LocalStorage, Storage};
use serde::Serialize;

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

/// Writes users, sessions and audit events as CSV/JSON lines, plus
/// uploads: about 30 MB per unit of `scale`. The same bytes every time.
pub fn make_dataset(dir: &Path, scale: usize) -> std::io::Result<u64> {
    fs::create_dir_all(dir.join("uploads"))?;
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
pub fn change_one_percent(dir: &Path) -> std::io::Result<()> {
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

/// Compares every file below `a` with the same path below `b`: the files
/// and bytes compared, or the first that differs or is missing.
pub fn same_bytes(a: &Path, b: &Path) -> Result<(u64, u64)> {
    let io = |what: String| move |e| Error::io(what, e);
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = a.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(io(format!("list {}", dir.display())))?;
            let r = rel.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(io(format!("stat {}", r.display())))?;
            if kind.is_dir() {
                stack.push(r);
            } else {
                let x =
                    fs::read(a.join(&r)).map_err(io(format!("read {}", a.join(&r).display())))?;
                let y =
                    fs::read(b.join(&r)).map_err(io(format!("read restored {}", r.display())))?;
                if x != y {
                    return Err(Error::Failed(format!(
                        "restored {} differs from the original",
                        r.display()
                    )));
                }
                files += 1;
                bytes += x.len() as u64;
            }
        }
    }
    Ok((files, bytes))
}

/// A backup's figures.
#[derive(Clone, Debug, Serialize)]
pub struct BackupFigures {
    /// Its snapshot id.
    pub snapshot: String,
    /// Its figures.
    pub stats: BackupStats,
}

/// The verify run.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyFigures {
    /// Chunks decrypted and hash-checked.
    pub chunks: u64,
    /// Bytes read.
    pub bytes: u64,
    /// How long.
    pub duration_ms: u64,
    /// No damage.
    pub clean: bool,
}

/// The restore and the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreFigures {
    /// The restore's figures.
    pub stats: RestoreStats,
    /// Files compared, all identical.
    pub identical_files: u64,
    /// Bytes compared, all identical.
    pub identical_bytes: u64,
}

/// Everything the files scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct FilesReport {
    /// The work directory.
    pub workdir: PathBuf,
    /// The dataset's size.
    pub dataset_bytes: u64,
    /// The first backup.
    pub full: BackupFigures,
    /// The backup after 1 % changed.
    pub incremental: BackupFigures,
    /// Verify with every chunk read.
    pub verify: VerifyFigures,
    /// The restore.
    pub restore: RestoreFigures,
}

/// Runs the scenario in `root`; `say` gets each step's narration.
pub fn run(
    root: &Path,
    scale: usize,
    progress: &dyn Progress,
    say: &mut dyn FnMut(String),
) -> Result<FilesReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    say(format!("lifeboat demo in {}", root.display()));
    let data = root.join("identity-platform");
    let t = Instant::now();
    let dataset = make_dataset(&data, scale.max(1))
        .map_err(|e| Error::io(format!("write the dataset in {}", data.display()), e))?;
    say(format!(
        "1. made a dataset: users, audit events, uploads — {} in {}",
        size(dataset),
        secs(t.elapsed().as_millis() as u64)
    ));

    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(root.join("repo")));
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| Error::Failed(format!("get random bytes for the demo key: {e}")))?;
    let cred = Credential::key_material(lifeboat_repo::SecretSource::KeyEnv, secret.to_vec());
    let repo = Repository::init(storage, rt.handle().clone(), &cred, &InitOptions::default())?;
    say(format!(
        "2. created an encrypted repository at {}",
        repo.location()
    ));

    let opts = FilesBackupOptions {
        paths: vec![data.clone()],
        tags: vec!["demo".into()],
        hostname: "demo".into(),
        ..Default::default()
    };
    let full = repo.backup_files(&opts, progress)?;
    let fs_ = &full.snapshot.stats;
    say(format!(
        "3. full backup {}: {} read, {} stored (compressed, encrypted) in {} ({})",
        full.id.short(),
        size(fs_.bytes_read),
        size(fs_.bytes_stored),
        secs(fs_.duration_ms),
        rate(fs_.bytes_read, fs_.duration_ms)
    ));

    change_one_percent(&data).map_err(|e| Error::io(format!("change {}", data.display()), e))?;
    let incr = repo.backup_files(&opts, progress)?;
    let is = &incr.snapshot.stats;
    say(format!(
        "4. changed 1 % of users.csv; next backup {} read {}, stored {} ({:.1} % of the full backup) in {}",
        incr.id.short(),
        size(is.bytes_read),
        size(is.bytes_stored),
        100.0 * is.bytes_stored as f64 / fs_.bytes_stored.max(1) as f64,
        secs(is.duration_ms)
    ));

    let t = Instant::now();
    let report = repo.verify(true, progress)?;
    let verify_ms = t.elapsed().as_millis() as u64;
    if !report.is_clean() {
        return Err(Error::Failed(format!(
            "verify found damage in a fresh repository: {:?}",
            report.damaged
        )));
    }
    say(format!(
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
        progress,
    )?;
    let restored_dir = target.join(data.strip_prefix("/").unwrap_or(&data));
    let (files, bytes) = same_bytes(&data, &restored_dir)?;
    say(format!(
        "6. restored snapshot {} in {} ({}); {files} files, {} compared byte for byte: identical",
        incr.id.short(),
        secs(rs.duration_ms),
        rate(rs.bytes, rs.duration_ms),
        size(bytes)
    ));
    Ok(FilesReport {
        workdir: root.to_path_buf(),
        dataset_bytes: dataset,
        full: BackupFigures {
            snapshot: full.id.to_hex(),
            stats: full.snapshot.stats.clone(),
        },
        incremental: BackupFigures {
            snapshot: incr.id.to_hex(),
            stats: incr.snapshot.stats.clone(),
        },
        verify: VerifyFigures {
            chunks: report.chunks_checked,
            bytes: report.bytes_read,
            duration_ms: verify_ms,
            clean: true,
        },
        restore: RestoreFigures {
            stats: rs,
            identical_files: files,
            identical_bytes: bytes,
        },
    })
}
