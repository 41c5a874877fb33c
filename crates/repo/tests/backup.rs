//! Library-level backup tests where timing must be controlled exactly.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lifeboat_repo::{
    Credential, FilesBackupOptions, InitOptions, Kdf, NoProgress, Progress, RepoError, Repository,
    SnapshotOptions,
};
use lifeboat_storage::LocalStorage;

struct DeleteOnStart(Mutex<Option<PathBuf>>, Mutex<Vec<String>>);

impl Progress for DeleteOnStart {
    /// Called after the walk listed every file and before any is read: the
    /// moment a file can vanish "mid-backup".
    fn start(&self, _phase: &str, _total: Option<u64>) {
        if let Some(p) = self.0.lock().unwrap().take() {
            fs::remove_file(p).unwrap();
        }
    }
    fn warn(&self, message: &str) {
        self.1.lock().unwrap().push(message.to_string());
    }
}

/// A temporary directory and a runtime for a repository in it.
fn scratch() -> (tempfile::TempDir, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (tempfile::tempdir().unwrap(), rt)
}

fn repo(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Repository {
    let storage = Arc::new(LocalStorage::new(dir.join("repo")));
    let opts = InitOptions {
        passphrase_kdf: Kdf::Argon2id {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(
        storage,
        rt.handle().clone(),
        &Credential::passphrase(b"pw".to_vec()),
        &opts,
    )
    .unwrap()
}

#[test]
fn file_vanishing_mid_backup_is_named_and_needs_allow_partial() {
    let (dir, rt) = scratch();
    let repo = repo(dir.path(), &rt);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("stays"), b"kept").unwrap();
    let opts = |allow_partial| FilesBackupOptions {
        paths: vec![src.clone()],
        allow_partial,
        hostname: "test".into(),
        ..Default::default()
    };

    fs::write(src.join("goes"), b"gone").unwrap();
    let progress = DeleteOnStart(Mutex::new(Some(src.join("goes"))), Mutex::new(Vec::new()));
    let err = repo.backup_files(&opts(false), &progress).unwrap_err();
    match &err {
        RepoError::Incomplete { count, first } => {
            assert_eq!(*count, 1);
            assert!(
                first.contains("goes") && first.contains("vanished"),
                "{first}"
            );
        }
        other => panic!("expected Incomplete, got {other}"),
    }
    assert!(err.to_string().contains("--allow-partial"));
    assert!(progress
        .1
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("vanished")));
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "no snapshot without allow_partial"
    );

    fs::write(src.join("goes"), b"gone").unwrap();
    let progress = DeleteOnStart(Mutex::new(Some(src.join("goes"))), Mutex::new(Vec::new()));
    let out = repo.backup_files(&opts(true), &progress).unwrap();
    assert!(out.snapshot.partial);
    assert_eq!(out.snapshot.skipped.len(), 1);
    assert!(out
        .snapshot
        .nodes
        .iter()
        .any(|n| n.path.ends_with("src/stays")));
    assert!(!out
        .snapshot
        .nodes
        .iter()
        .any(|n| n.path.ends_with("src/goes")));
}

/// A source cut into 16-page chunks of 8 KiB pages, as PostgreSQL's relation
/// files are.
struct Paged;

impl lifeboat_repo::TreePolicy for Paged {
    fn chunker(
        &self,
        _name: &str,
        _default: lifeboat_repo::ChunkerConfig,
    ) -> lifeboat_repo::ChunkerConfig {
        lifeboat_repo::ChunkerConfig::Fixed {
            size: 16 * PAGE as u32,
        }
    }
    fn page_size(&self, _name: &str) -> Option<usize> {
        Some(PAGE)
    }
}

const PAGE: usize = 8192;

/// Overwrites page `i` of `data` with bytes no other page has.
fn scribble(data: &mut [u8], i: usize, salt: u8) {
    for (k, b) in data[i * PAGE..(i + 1) * PAGE].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(13).wrapping_add(salt) ^ (i as u8);
    }
}

#[test]
fn changed_pages_are_stored_as_patches_and_restore_byte_identical() {
    let (dir, rt) = scratch();
    let repo = repo(dir.path(), &rt);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("rel");
    // Eight whole chunks and a 5-page tail, every page distinct; over 1 MiB,
    // so a restore writes it directly (decompressing and patching in place).
    let mut data: Vec<u8> = (0..133 * PAGE)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    let opts = lifeboat_repo::TreeBackupOptions {
        roots: vec![lifeboat_repo::TreeRoot {
            path: src.clone(),
            prefix: Some(String::new()),
        }],
        source_kind: "paged".into(),
        source_name: "paged".into(),
        hostname: "test".into(),
        ..Default::default()
    };
    let backup = |data: &[u8]| {
        fs::write(&file, data).unwrap();
        repo.backup_tree(&opts, &Paged, &lifeboat_repo::NoProgress, |_| Ok(()))
            .unwrap()
    };
    let pieces = |s: &lifeboat_repo::Snapshot| {
        s.nodes
            .iter()
            .find(|n| n.path == "rel")
            .unwrap()
            .content
            .clone()
    };

    let full = backup(&data);
    let first = pieces(&full.snapshot);
    assert_eq!(first.len(), 9);
    assert!(first
        .iter()
        .all(|c| c.pages.is_some() && c.patch().is_none()));
    let v1 = data.clone();

    // Two pages in two chunks change: two patches of one page each.
    scribble(&mut data, 3, 1);
    scribble(&mut data, 20, 2);
    let incr = backup(&data);
    let second = pieces(&incr.snapshot);
    let v2 = data.clone();
    assert_eq!(second[0].patch().unwrap().base, first[0].chunk().unwrap());
    assert_eq!(second[1].patch().unwrap().base, first[1].chunk().unwrap());
    assert_eq!(second[2], first[2]);
    assert_eq!(second[8], first[8]);
    assert_eq!(incr.snapshot.stats.chunks_new, 2);
    assert!(
        incr.snapshot.stats.bytes_new < 3 * PAGE as u64,
        "stored {} new bytes for two changed pages",
        incr.snapshot.stats.bytes_new
    );

    // Another page of chunk 0: its patch is against the first base still
    // (two pages now); ten of chunk 2's sixteen: a new base, no patch.
    scribble(&mut data, 5, 3);
    for i in 32..42 {
        scribble(&mut data, i, 4);
    }
    let third_backup = backup(&data);
    let third = pieces(&third_backup.snapshot);
    let v3 = data.clone();
    assert_eq!(third[0].patch().unwrap().base, first[0].chunk().unwrap());
    assert_eq!(third[1], second[1]);
    assert!(third[2].patch().is_none());
    assert_ne!(third[2].chunk(), first[2].chunk());

    // Back to the first version of chunk 0: its base, unpatched.
    data[..16 * PAGE].copy_from_slice(&v1[..16 * PAGE]);
    let fourth = pieces(&backup(&data).snapshot);
    assert_eq!(fourth[0].chunk(), first[0].chunk());
    assert!(fourth[0].patch().is_none());

    for (snap, want) in [(&full, &v1), (&incr, &v2), (&third_backup, &v3)] {
        for page_cache in [false, true] {
            let target = dir
                .path()
                .join(format!("restore-{}-{page_cache}", snap.id.short()));
            repo.restore(
                &snap.snapshot,
                &lifeboat_repo::RestoreOptions {
                    target: target.clone(),
                    page_cache,
                    ..Default::default()
                },
                &lifeboat_repo::NoProgress,
            )
            .unwrap();
            assert!(
                fs::read(target.join("rel")).unwrap() == **want,
                "restore of {} (page cache: {page_cache})",
                snap.id.short()
            );
        }
        let mut streamed = Vec::new();
        repo.restore_stream(&snap.snapshot, &mut streamed, &lifeboat_repo::NoProgress)
            .unwrap();
        assert!(streamed == **want, "stream of {}", snap.id.short());
    }
    let report = repo.verify(true, &lifeboat_repo::NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");

    assert!(report.pieces_rebuilt >= 2, "{report:?}");

    // A patched piece that does not rebuild to its id (as if a page mark had
    // missed a change) is damage: verify names it and its snapshot, and a
    // restore refuses rather than writing wrong bytes.
    let mut forged = third_backup.snapshot.clone();
    let node = forged.nodes.iter_mut().find(|n| n.path == "rel").unwrap();
    node.content[0].id = first[1].chunk();
    let forged_id = repo.save_snapshot(&forged).unwrap();
    let report = repo.verify(true, &lifeboat_repo::NoProgress).unwrap();
    assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
    assert_eq!(report.broken_snapshots[0].id, forged_id);
    assert!(
        report.damaged[0].problem.contains("does not match its id"),
        "{report:?}"
    );
    let err = repo
        .restore(
            &forged,
            &lifeboat_repo::RestoreOptions {
                target: dir.path().join("forged"),
                ..Default::default()
            },
            &lifeboat_repo::NoProgress,
        )
        .unwrap_err();
    assert!(err.to_string().contains("does not match its id"), "{err}");

    // A snapshot document newer than this build is refused by its version.
    let mut newer = third_backup.snapshot.clone();
    newer.version = 99;
    let newer_id = repo.save_snapshot(&newer).unwrap();
    let err = repo
        .find_snapshot(&newer_id.to_hex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 99") && err.contains("newer lifeboat"),
        "{err}"
    );

    // The snapshot document keeps pages and patches as they were.
    let reread = repo.find_snapshot(&third_backup.id.to_hex()).unwrap();
    assert_eq!(pieces(&reread.snapshot), third);
}

/// A snapshot of streams: each item restores byte for byte, a stream added
/// again under its name replaces the first (counted once), and a directory
/// comes in file by file under its prefix.
#[test]
fn a_stream_snapshot_holds_streams_and_a_directory() {
    let (dir, rt) = scratch();
    let repo = repo(dir.path(), &rt);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let dumped = dir.path().join("dumped");
    fs::create_dir_all(dumped.join("sub")).unwrap();
    fs::write(dumped.join("toc.dat"), b"table of contents").unwrap();
    fs::write(dumped.join("sub/3001.dat"), &big[..100_000]).unwrap();

    let mut draft = repo
        .stream_snapshot(&SnapshotOptions::named("test", "src", "host", &[]))
        .unwrap();
    draft
        .add_stream("first.bin", &b"an early version"[..], &NoProgress)
        .unwrap();
    draft
        .add_stream("first.bin", big.as_slice(), &NoProgress)
        .unwrap();
    draft
        .add_stream("globals.sql", &b"create role x;"[..], &NoProgress)
        .unwrap();
    draft.add_dir("db", &dumped, &NoProgress).unwrap();
    draft.set_metadata("answer", serde_json::json!(42));
    let out = draft.commit().unwrap();

    let snap = &out.snapshot;
    let paths: Vec<&str> = snap.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(
        paths,
        ["db/sub/3001.dat", "db/toc.dat", "first.bin", "globals.sql"]
    );
    let want_total = (big.len() + 100_000 + 17 + 14) as u64;
    assert_eq!(
        snap.stats.bytes_total, want_total,
        "the replaced stream counted once"
    );
    assert_eq!(snap.stats.bytes_read, want_total + 16, "what was read");
    assert_eq!(snap.metadata["answer"], 42);
    let item = |path: &str| {
        let node = snap.nodes.iter().find(|n| n.path == path).unwrap();
        let mut bytes = Vec::new();
        repo.restore_item(node, &mut bytes, &NoProgress).unwrap();
        bytes
    };
    assert!(item("first.bin") == big);
    assert_eq!(item("globals.sql"), b"create role x;");
    assert!(item("db/sub/3001.dat") == big[..100_000]);
    assert_eq!(item("db/toc.dat"), b"table of contents");
}

/// `repair index` removes damaged index objects only: one it cannot read
/// for another reason (a newer version) stops it before anything changes,
/// and a damaged one stays while some pack cannot be indexed again.
#[test]
fn repair_index_removes_only_what_it_has_replaced() {
    let (dir, rt) = scratch();
    let storage = Arc::new(LocalStorage::new(dir.path().join("repo")));
    let repo = Repository::init(
        storage,
        rt.handle().clone(),
        &Credential::passphrase(b"pw".to_vec()),
        &InitOptions {
            pack_size: 1 << 20,
            passphrase_kdf: Kdf::Argon2id {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        },
    )
    .unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..6u8 {
        let data: Vec<u8> = (0..1_500_000u32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    repo.backup_files(
        &FilesBackupOptions {
            paths: vec![src.clone()],
            hostname: "h".into(),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let root = dir.path().join("repo");
    let list = |sub: &str| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.join(sub)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    out.push(p)
                }
            }
        }
        out.sort();
        out
    };
    let indexes = list("index");
    assert!(indexes.len() >= 2, "{indexes:?}");

    // A newer version: refused, nothing changed.
    let original = fs::read(&indexes[0]).unwrap();
    let mut newer = original.clone();
    newer[4] = 9;
    fs::write(&indexes[0], &newer).unwrap();
    let err = repo.repair_index(false, &NoProgress).unwrap_err();
    assert!(matches!(err, RepoError::UnknownVersion { .. }), "{err}");
    assert_eq!(list("index"), indexes, "nothing removed or added");
    fs::write(&indexes[0], &original).unwrap();

    // Damaged, and one of its packs cut: the damaged object stays.
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&indexes[0], &damaged).unwrap();
    for p in list("packs") {
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    }
    let r = repo.repair_index(false, &NoProgress).unwrap();
    assert!(!r.unreadable_packs.is_empty(), "{r:?}");
    assert!(r.indexes_removed.is_empty(), "{r:?}");
    assert_eq!(r.indexes_kept_damaged.len(), 1, "{r:?}");
    assert!(indexes[0].exists());
}
