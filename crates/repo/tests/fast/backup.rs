//! Backups: files, incremental reuse, partial backups, streams, page patches.

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use lifeboat_repo::{
    FilesBackupOptions, InitOptions, NoProgress, Progress, RepoError, Repository, SnapshotOptions,
};

use super::*;

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

/// A repository with the default chunking and pack size (16 MiB), as
/// `repo init` makes, and a cheap key derivation.
fn default_repo(s: &Scratch) -> Repository {
    s.init_on_with(
        s.local(),
        &InitOptions {
            passphrase_kdf: cheap_kdf(),
            ..InitOptions::default()
        },
    )
}

#[test]
fn file_vanishing_mid_backup_is_named_and_needs_allow_partial() {
    let s = Scratch::new();
    let dir = &s.dir;
    let repo = default_repo(&s);
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
pub(super) struct Paged;

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

pub(super) const PAGE: usize = 8192;

/// A backup of the directory `src` as a [`Paged`] source.
pub(super) fn paged_options(src: &Path) -> lifeboat_repo::TreeBackupOptions {
    lifeboat_repo::TreeBackupOptions {
        roots: vec![lifeboat_repo::TreeRoot {
            path: src.to_path_buf(),
            prefix: Some(String::new()),
        }],
        source_kind: "paged".into(),
        source_name: "paged".into(),
        hostname: "test".into(),
        ..Default::default()
    }
}

/// Overwrites page `i` of `data` with bytes no other page has.
pub(super) fn scribble(data: &mut [u8], i: usize, salt: u8) {
    for (k, b) in data[i * PAGE..(i + 1) * PAGE].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(13).wrapping_add(salt) ^ (i as u8);
    }
}

#[test]
fn changed_pages_are_stored_as_patches_and_restore_byte_identical() {
    let s = Scratch::new();
    let dir = &s.dir;
    let repo = default_repo(&s);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("rel");
    // Eight whole chunks and a 5-page tail, every page distinct; over 1 MiB,
    // so a restore writes it directly (decompressing and patching in place).
    let mut data: Vec<u8> = (0..133 * PAGE)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    let opts = paged_options(&src);
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
    let s = Scratch::new();
    let dir = &s.dir;
    let repo = default_repo(&s);
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

/// An incremental files backup reads only the files whose size, times or
/// inode changed, reuses the others' content as it is, and stores only
/// what is new; each snapshot restores to the tree as it was.
#[test]
fn an_incremental_reads_only_changed_files_and_stores_only_new_data() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("kept.bin"), noise(1, 300_000)).unwrap();
    fs::write(src.join("sub/grows.bin"), noise(2, 200_000)).unwrap();
    fs::write(src.join("touched.bin"), noise(3, 100_000)).unwrap();
    let first = backup_files(&repo, &[&src]).unwrap();
    assert_eq!(first.snapshot.parent, None);
    assert_eq!(first.snapshot.stats.bytes_read, 600_000);
    let copy_v1 = s.dir("copy-v1");
    for f in ["kept.bin", "sub/grows.bin", "touched.bin"] {
        fs::create_dir_all(copy_v1.join(f).parent().unwrap()).unwrap();
        fs::copy(src.join(f), copy_v1.join(f)).unwrap();
    }

    // grows.bin grows (its size changes, whatever the clock says),
    // touched.bin gets another modification time and the same bytes, and a
    // new file appears; kept.bin is left alone.
    let mut grown = fs::read(src.join("sub/grows.bin")).unwrap();
    grown.extend_from_slice(&noise(4, 50_000));
    fs::write(src.join("sub/grows.bin"), &grown).unwrap();
    fs::File::options()
        .write(true)
        .open(src.join("touched.bin"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
    fs::write(src.join("new.bin"), noise(5, 10_000)).unwrap();

    let second = backup_files(&repo, &[&src]).unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    let stats = &second.snapshot.stats;
    assert_eq!(
        stats.bytes_read,
        250_000 + 100_000 + 10_000,
        "kept.bin is not read again: {stats:?}"
    );
    assert_eq!(stats.bytes_total, 300_000 + 250_000 + 100_000 + 10_000);
    assert_eq!(
        node(&second.snapshot, "/kept.bin").content,
        node(&first.snapshot, "/kept.bin").content
    );
    // touched.bin was read again, and stored nothing new.
    assert_eq!(
        node(&second.snapshot, "/touched.bin").content,
        node(&first.snapshot, "/touched.bin").content
    );
    // New: the appended bytes, the chunk they joined and new.bin; not the
    // rest of grows.bin, nor anything of the other files.
    assert!(
        stats.bytes_new >= 60_000 && stats.bytes_new <= 50_000 + (256 << 10) + 10_000,
        "{stats:?}"
    );

    // Forced to read everything, a backup finds nothing new to store.
    let forced = repo
        .backup_files(
            &FilesBackupOptions {
                paths: vec![src.clone()],
                hostname: "test".into(),
                force_read: true,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
    assert_eq!(forced.snapshot.parent, None);
    assert_eq!(forced.snapshot.stats.bytes_read, 660_000);
    assert_eq!(forced.snapshot.stats.bytes_new, 0);

    let target = s.path().join("restore-2");
    restore_into(&repo, &second.snapshot, &target, Default::default(), &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
    let target = s.path().join("restore-1");
    restore_into(&repo, &first.snapshot, &target, Default::default(), &[]).unwrap();
    let old = restored(&target, &src);
    assert_eq!(files_below(&old), files_below(&copy_v1));
    for f in files_below(&copy_v1) {
        assert!(fs::read(old.join(&f)).unwrap() == fs::read(copy_v1.join(&f)).unwrap());
    }
}

/// Once the walk has listed it, replaces a file with a directory: reading it
/// then fails (EISDIR), as reading a file that cannot be read does, and for
/// root too, whom permissions do not stop.
struct BecomesUnreadable(Mutex<Option<PathBuf>>, Mutex<Vec<String>>);

impl Progress for BecomesUnreadable {
    fn start(&self, _phase: &str, _total: Option<u64>) {
        if let Some(p) = self.0.lock().unwrap().take() {
            fs::remove_file(&p).unwrap();
            fs::create_dir(&p).unwrap();
        }
    }
    fn warn(&self, message: &str) {
        self.1.lock().unwrap().push(message.to_string());
    }
}

/// A file that cannot be read fails the backup, naming it, and nothing is
/// recorded; with `allow_partial` the snapshot is written, marked partial,
/// says which file is missing and why, and restores the rest.
#[test]
fn an_unreadable_file_fails_the_backup_unless_partial_is_allowed() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("good.bin"), noise(1, 70_000)).unwrap();
    let bad = src.join("bad.bin");
    let opts = |allow_partial| FilesBackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        allow_partial,
        ..Default::default()
    };

    fs::write(&bad, b"unreadable").unwrap();
    let progress = BecomesUnreadable(Mutex::new(Some(bad.clone())), Mutex::default());
    let err = repo.backup_files(&opts(false), &progress).unwrap_err();
    match &err {
        RepoError::Incomplete { count: 1, first } => {
            assert!(
                first.contains("bad.bin") && first.contains("read failed"),
                "{first}"
            )
        }
        other => panic!("expected Incomplete, got {other}"),
    }
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Failure, "{err}");
    assert!(repo.snapshots().unwrap().is_empty(), "nothing recorded");

    fs::remove_dir(&bad).unwrap();
    fs::write(&bad, b"unreadable").unwrap();
    let progress = BecomesUnreadable(Mutex::new(Some(bad.clone())), Mutex::default());
    let out = repo.backup_files(&opts(true), &progress).unwrap();
    assert!(out.snapshot.partial);
    assert_eq!(out.snapshot.skipped.len(), 1);
    assert!(out.snapshot.skipped[0].path.ends_with("src/bad.bin"));
    assert!(out.snapshot.skipped[0].reason.contains("read failed"));
    let warned = progress.1.lock().unwrap().clone();
    assert!(warned.iter().any(|w| w.contains("bad.bin")), "{warned:?}");
    assert!(!out
        .snapshot
        .nodes
        .iter()
        .any(|n| n.path.ends_with("bad.bin")));

    let target = s.path().join("restore");
    restore_into(&repo, &out.snapshot, &target, Default::default(), &[]).unwrap();
    let back = restored(&target, &src);
    assert_eq!(files_below(&back), [PathBuf::from("good.bin")]);
    assert!(fs::read(back.join("good.bin")).unwrap() == noise(1, 70_000));
}

/// A stream comes back byte for byte, from the snapshot and as a file; a
/// second backup of it with a few bytes inserted stores only the chunks
/// around the change, and the first still restores as it was.
#[test]
fn a_stream_restores_byte_identical_and_a_changed_one_stores_little() {
    let s = Scratch::new();
    let repo = s.init();
    let opts = lifeboat_repo::StreamBackupOptions {
        name: "app.dump".into(),
        source_kind: "stream".into(),
        hostname: "test".into(),
        ..Default::default()
    };
    let v1 = noise(7, 3_000_000);
    let first = repo
        .backup_stream(&opts, v1.as_slice(), &NoProgress)
        .unwrap();
    assert_eq!(first.snapshot.stats.bytes_total, 3_000_000);

    let mut v2 = v1[..1_500_000].to_vec();
    v2.extend_from_slice(&[b'x'; 100]);
    v2.extend_from_slice(&v1[1_500_000..]);
    let second = repo
        .backup_stream(&opts, v2.as_slice(), &NoProgress)
        .unwrap();
    let stats = &second.snapshot.stats;
    assert!(
        stats.bytes_new > 0 && stats.bytes_new <= 2 * (256 << 10) + 100,
        "content-defined chunks around the insertion only: {stats:?}"
    );

    for (snap, want) in [(&first, &v1), (&second, &v2)] {
        let mut out = Vec::new();
        let n = repo
            .restore_stream(&snap.snapshot, &mut out, &NoProgress)
            .unwrap();
        assert_eq!(n, want.len() as u64);
        assert!(out == *want, "stream of {}", snap.id.short());
    }
    let target = s.path().join("restore");
    restore_into(&repo, &second.snapshot, &target, Default::default(), &[]).unwrap();
    let file = target.join("app.dump");
    assert!(fs::read(&file).unwrap() == v2);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "a stream restores as a private file"
    );
}

/// A live database's policy: files removed while the backup runs are left
/// out (WAL replay recreates what they held).
struct Live;
impl lifeboat_repo::TreePolicy for Live {
    fn vanished_is_fine(&self) -> bool {
        true
    }
}

#[test]
fn a_file_vanishing_from_a_live_database_is_left_out_quietly() {
    let s = Scratch::new();
    let repo = default_repo(&s);
    let src = s.dir.path().join("pgdata");
    fs::create_dir_all(src.join("pg_logical")).unwrap();
    fs::write(src.join("PG_VERSION"), b"15\n").unwrap();
    let tmp = src.join("pg_logical/replorigin_checkpoint.tmp");
    fs::write(&tmp, b"checkpoint in progress").unwrap();
    let opts = lifeboat_repo::TreeBackupOptions {
        roots: vec![lifeboat_repo::TreeRoot {
            path: src.clone(),
            prefix: Some(String::new()),
        }],
        source_kind: "live".into(),
        source_name: "live".into(),
        hostname: "test".into(),
        ..Default::default()
    };
    let progress = DeleteOnStart(Mutex::new(Some(tmp.clone())), Mutex::new(Vec::new()));
    let out = repo
        .backup_tree(&opts, &Live, &progress, |_| Ok(()))
        .expect("a vanished file of a live database does not fail the backup");
    let paths: Vec<&str> = out.snapshot.nodes.iter().map(|n| n.path.as_str()).collect();
    assert!(paths.contains(&"PG_VERSION"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("replorigin")), "{paths:?}");
    assert!(progress.1.lock().unwrap().is_empty(), "no warning for it");
    // Plain files still count it as missing.
    fs::write(&tmp, b"again").unwrap();
    let progress = DeleteOnStart(Mutex::new(Some(tmp)), Mutex::new(Vec::new()));
    let err = repo
        .backup_tree(&opts, &lifeboat_repo::PlainFiles, &progress, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err, RepoError::Incomplete { .. }), "{err}");
}

/// A source that changes its tree once the new files are read (a cluster
/// deleting its previous snapshot while the backup reads the new one's
/// blobs): `settle` makes the change and reports it, or fails.
/// The change a [`Settling`] source makes.
type Change = Box<dyn FnOnce() -> Result<(), String> + Send>;

struct Settling(Mutex<Option<Change>>);

impl lifeboat_repo::TreePolicy for Settling {
    fn vanished_is_fine(&self) -> bool {
        true
    }
    fn immutable(&self, name: &str) -> bool {
        name.rsplit('/').next().is_some_and(|f| f.starts_with("__"))
    }
    fn settle(&self) -> lifeboat_repo::Result<bool> {
        match self.0.lock().unwrap().take() {
            Some(change) => change()
                .map(|()| true)
                .map_err(|e| RepoError::Source(e.into())),
            None => Ok(false),
        }
    }
}

/// What is recorded is the tree once the source has settled: files it
/// removed meanwhile are gone, files it added or replaced are read, and the
/// files read before it changed anything are not read twice.
#[test]
fn a_tree_changed_while_it_is_read_is_recorded_as_it_is_once_settled() {
    let s = Scratch::new();
    let repo = default_repo(&s);
    let src = s.dir.path().join("staging");
    fs::create_dir_all(src.join("indices/a/0")).unwrap();
    fs::create_dir_all(src.join("indices/gone/0")).unwrap();
    let blob = noise(7, 3 << 20);
    fs::write(src.join("indices/a/0/__new"), &blob).unwrap();
    fs::write(src.join("indices/a/0/__old"), noise(8, 1 << 20)).unwrap();
    fs::write(src.join("indices/gone/0/__x"), b"only the old snapshot's").unwrap();
    fs::write(src.join("index-1"), b"generation one").unwrap();
    // Not immutable: read again after the change however unchanged it looks.
    let notes = noise(9, 1 << 20);
    fs::write(src.join("notes"), &notes).unwrap();
    fs::write(src.join("index.latest"), b"1").unwrap();
    let opts = lifeboat_repo::TreeBackupOptions {
        roots: vec![lifeboat_repo::TreeRoot {
            path: src.clone(),
            prefix: Some("repository".into()),
        }],
        source_kind: "settling".into(),
        source_name: "settling".into(),
        hostname: "test".into(),
        ..Default::default()
    };
    let dir = src.clone();
    let policy = Settling(Mutex::new(Some(Box::new(move || {
        fs::remove_file(dir.join("indices/a/0/__old")).unwrap();
        fs::remove_dir_all(dir.join("indices/gone")).unwrap();
        fs::write(dir.join("index-2"), b"generation two").unwrap();
        fs::remove_file(dir.join("index-1")).unwrap();
        // Replaced as a cluster writes it: a new file renamed over it.
        fs::write(dir.join("index.latest.tmp"), b"2").unwrap();
        fs::rename(dir.join("index.latest.tmp"), dir.join("index.latest")).unwrap();
        Ok(())
    }))));
    let out = repo
        .backup_tree(&opts, &policy, &NoProgress, |_| Ok(()))
        .unwrap();
    let paths: Vec<&str> = out
        .snapshot
        .nodes
        .iter()
        .filter(|n| n.kind == lifeboat_repo::NodeKind::File)
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "repository/index-2",
            "repository/index.latest",
            "repository/indices/a/0/__new",
            "repository/notes"
        ]
    );
    let dirs: Vec<&str> = out
        .snapshot
        .nodes
        .iter()
        .filter(|n| n.kind == lifeboat_repo::NodeKind::Dir)
        .map(|n| n.path.as_str())
        .collect();
    assert!(!dirs.iter().any(|d| d.contains("gone")), "{dirs:?}");
    let st = &out.snapshot.stats;
    // First every file (3 + 1 + 1 MiB and a few bytes), then the notes
    // again and the small root files: not the blob.
    let first_pass = (blob.len() + (1 << 20) + notes.len()) as u64;
    assert!(
        st.bytes_read >= first_pass + notes.len() as u64,
        "a file not immutable was not read again after the change: {st:?}"
    );
    assert!(
        st.bytes_read < first_pass + notes.len() as u64 + 4096,
        "the blob read before the change was read again: {st:?}"
    );
    let target = s.path().join("restored");
    restore_into(&repo, &out.snapshot, &target, Default::default(), &[]).unwrap();
    let r = target.join("repository");
    assert!(fs::read(r.join("indices/a/0/__new")).unwrap() == blob);
    assert_eq!(fs::read(r.join("index.latest")).unwrap(), b"2");
    assert_eq!(fs::read(r.join("index-2")).unwrap(), b"generation two");
    assert!(!r.join("index-1").exists() && !r.join("indices/gone").exists());

    // A source that fails to settle fails the backup, which writes nothing.
    let before = repo.snapshots().unwrap().len();
    let failing = Settling(Mutex::new(Some(Box::new(|| {
        Err("the cluster refused the deletion".to_string())
    }))));
    fs::write(src.join("indices/a/0/__newer"), b"another day").unwrap();
    let err = repo
        .backup_tree(&opts, &failing, &NoProgress, |_| Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("refused the deletion"), "{err}");
    assert_eq!(repo.snapshots().unwrap().len(), before);
}
