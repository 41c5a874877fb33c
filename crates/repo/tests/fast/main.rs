//! The repository's integration tests, in one binary: the fast tier, which
//! needs no server. Backups of temporary directories into a repository on
//! local disk (`LocalStorage` in a temporary directory), restores, `verify`
//! and `repair index`, and the same through injected storage faults
//! (`FaultStorage` under `RetryStorage`).
//!
//! - `audit`: the audit log — records, writers at once, tampering found.
//! - `backup`: files backups, incremental reuse, partial backups, streams,
//!   page patches.
//! - `restore`: byte-identical round trips, include filters, the overwrite
//!   rules, a damaged pack.
//! - `verify`: what `verify` finds and what `repair index` rebuilds.
//! - `faults`: transient storage failures retried, permanent ones named.
//! - `prune`: what no snapshot uses goes; the races with running backups.
//! - `replicate`: replicas on local disk — restores from them, runs stopped
//!   at every store, damage not copied, deletions after the delay.
//! - `retention`: summaries, holds and deletes as `forget` uses them; the
//!   `forget` benchmark's generator.

#![allow(clippy::unwrap_used)]

mod audit;
mod backup;
mod faults;
mod index_cache;
mod prune;
mod replicate;
mod restore;
mod retention;
mod verify;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_repo::{
    BackupOutcome, ChunkId, ChunkerConfig, Credential, FilesBackupOptions, InitOptions, Kdf,
    NoProgress, Repository, RestoreOptions, RestoreStats, Result, Snapshot,
};
use lifeboat_storage::{DynStorage, LocalStorage};

/// A temporary directory (the repository goes in `repo/` below it) and a
/// runtime for the repository's storage.
struct Scratch {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Scratch {
    fn new() -> Scratch {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            rt,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the local repository's files are.
    fn repo_dir(&self) -> PathBuf {
        self.path().join("repo")
    }

    /// The local store of the repository.
    fn local(&self) -> DynStorage {
        Arc::new(LocalStorage::new(self.repo_dir()))
    }

    /// A new repository on local disk, with [`small_options`].
    fn init(&self) -> Repository {
        self.init_on(self.local())
    }

    /// A new repository in `storage`, with [`small_options`].
    fn init_on(&self, storage: DynStorage) -> Repository {
        self.init_on_with(storage, &small_options())
    }

    /// A new repository in `storage`, with `options`.
    fn init_on_with(&self, storage: DynStorage, options: &InitOptions) -> Repository {
        Repository::init(storage, self.rt.handle().clone(), &password(), options).unwrap()
    }

    /// The repository in `storage`, opened again.
    fn open_on(&self, storage: DynStorage) -> Repository {
        Repository::open(storage, self.rt.handle().clone(), &[password()]).unwrap()
    }

    /// A directory `name` below the scratch directory, created.
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// The files of the repository below `sub` (`packs`, `index`, …), sorted.
    fn repo_files(&self, sub: &str) -> Vec<PathBuf> {
        let root = self.repo_dir().join(sub);
        files_below(&root)
            .into_iter()
            .map(|p| root.join(p))
            .collect()
    }
}

fn password() -> Credential {
    Credential::passphrase(b"a test passphrase".to_vec())
}

/// Small chunks (16–256 KiB) so that small files make several, 1 MiB packs
/// so that a few MiB make several, and a cheap key derivation.
fn small_options() -> InitOptions {
    InitOptions {
        chunker: ChunkerConfig::Cdc {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        pack_size: 1 << 20,
        passphrase_kdf: cheap_kdf(),
        ..InitOptions::default()
    }
}

/// Argon2id at its cheapest: tests open repositories in microseconds.
fn cheap_kdf() -> Kdf {
    Kdf::Argon2id {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    }
}

/// `len` bytes that neither compress nor deduplicate (xorshift64 from `seed`).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `files backup` of `paths`, from host `test`.
fn backup_files(repo: &Repository, paths: &[&Path]) -> Result<BackupOutcome> {
    repo.backup_files(
        &FilesBackupOptions {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            hostname: "test".into(),
            ..Default::default()
        },
        &NoProgress,
    )
}

/// Restores `snapshot` into `target` with the given overwrite rule and
/// include list.
fn restore_into(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    overwrite: lifeboat_repo::Overwrite,
    include: &[String],
) -> Result<RestoreStats> {
    repo.restore(
        snapshot,
        &RestoreOptions {
            target: target.to_path_buf(),
            include: include.to_vec(),
            overwrite,
            ..Default::default()
        },
        &NoProgress,
    )
}

/// Where a files backup of `src` (named by its absolute path) is restored
/// below `target`.
fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// The snapshot path of `p` (absolute, without the leading `/`), for
/// include filters.
fn snapshot_path(p: &Path) -> String {
    p.strip_prefix("/").unwrap().to_str().unwrap().to_string()
}

/// Every file (not directory) below `root`, relative to it, sorted; links
/// are not followed.
fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Temporary files of a restore left below `root` (there must be none
/// once a restore has returned, whatever its outcome).
fn partial_files(root: &Path) -> Vec<PathBuf> {
    files_below(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".lifeboat-partial-"))
        })
        .collect()
}

/// Asserts that the tree at `got` is the tree at `want`: the same names,
/// kinds, permission bits, file contents and modification times, and link
/// targets.
fn assert_same_tree(want: &Path, got: &Path) {
    let w = fs::symlink_metadata(want).unwrap();
    let g = fs::symlink_metadata(got)
        .unwrap_or_else(|e| panic!("{} was not restored: {e}", got.display()));
    assert_eq!(w.file_type(), g.file_type(), "kind of {}", got.display());
    assert_eq!(
        w.permissions().mode() & 0o7777,
        g.permissions().mode() & 0o7777,
        "mode of {}",
        got.display()
    );
    if w.is_symlink() {
        assert_eq!(
            fs::read_link(want).unwrap(),
            fs::read_link(got).unwrap(),
            "target of {}",
            got.display()
        );
    } else if w.is_file() {
        assert!(
            fs::read(want).unwrap() == fs::read(got).unwrap(),
            "contents of {}",
            got.display()
        );
        assert_eq!(
            (w.mtime(), w.mtime_nsec()),
            (g.mtime(), g.mtime_nsec()),
            "mtime of {}",
            got.display()
        );
    } else if w.is_dir() {
        let names = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (wn, gn) = (names(want), names(got));
        assert_eq!(wn, gn, "entries of {}", got.display());
        for n in wn {
            assert_same_tree(&want.join(&n), &got.join(&n));
        }
    }
}

/// Flips a byte in the middle of chunk `id`'s sealed blob in its pack, on
/// disk; returns the pack's key.
fn damage_chunk(s: &Scratch, repo: &Repository, id: &ChunkId) -> String {
    let index = repo.load_index().unwrap();
    let loc = index.get(id).unwrap();
    let (pack, _) = index.pack(loc.pack);
    let key = lifeboat_repo::format::pack_key(&pack);
    let path = s.repo_dir().join(&key);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.offset + loc.len / 2) as usize] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    key
}

/// The content of the item whose path ends with `suffix`.
fn node<'a>(snapshot: &'a Snapshot, suffix: &str) -> &'a lifeboat_repo::Node {
    snapshot
        .nodes
        .iter()
        .find(|n| n.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no item {suffix} in the snapshot"))
}
