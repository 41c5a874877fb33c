//! `verify` and `repair index`: what they find, and what comes back.

use std::fs;

use lifeboat_repo::{InitOptions, NoProgress, RepoError, Repository};

use super::*;

/// A repository with two snapshots of unrelated data, so each has packs of
/// its own: (repository, source of the first, first, second).
fn two_snapshots(s: &Scratch) -> (Repository, PathBuf, BackupOutcome, BackupOutcome) {
    let repo = s.init();
    let one = s.dir("one");
    let two = s.dir("two");
    for i in 0..3u64 {
        fs::write(one.join(format!("f{i}")), noise(10 + i, 700_000)).unwrap();
        fs::write(two.join(format!("g{i}")), noise(20 + i, 500_000)).unwrap();
    }
    let a = backup_files(&repo, &[&one]).unwrap();
    let b = backup_files(&repo, &[&two]).unwrap();
    (repo, one, a, b)
}

/// A repository just written is clean, with its data read or not.
#[test]
fn a_clean_repository_verifies_clean() {
    let s = Scratch::new();
    let (repo, _, a, b) = two_snapshots(&s);
    let quick = repo.verify(false, &NoProgress).unwrap();
    assert!(quick.is_clean(), "{quick:?}");
    assert_eq!(quick.snapshots, 2);
    assert_eq!(
        quick.packs as u64,
        a.snapshot.stats.packs + b.snapshot.stats.packs
    );
    assert_eq!(quick.unindexed_packs, 0);
    assert_eq!(quick.chunks_checked, 0, "no data read without read_data");
    assert_eq!(quick.hint, None);

    let full = repo.verify(true, &NoProgress).unwrap();
    assert!(full.is_clean(), "{full:?}");
    assert_eq!(
        full.chunks_checked,
        a.snapshot.stats.chunks_new + b.snapshot.stats.chunks_new
    );
    assert!(full.bytes_read >= 3 * 700_000 + 3 * 500_000, "{full:?}");
}

/// A byte flipped inside a pack is invisible to the quick check (the pack
/// is there, at its size) and found by reading the data: the pack is named
/// as damaged, and the snapshot using it, only that one, as broken.
#[test]
fn a_flipped_byte_in_a_pack_is_found_with_read_data() {
    let s = Scratch::new();
    let (repo, _, a, b) = two_snapshots(&s);
    let chunk = node(&a.snapshot, "/f1").content[0].chunk().unwrap();
    let pack = damage_chunk(&s, &repo, &chunk);

    let quick = repo.verify(false, &NoProgress).unwrap();
    assert!(quick.is_clean(), "{quick:?}");

    let full = repo.verify(true, &NoProgress).unwrap();
    assert!(!full.is_clean());
    assert_eq!(full.damaged.len(), 1, "{full:?}");
    assert_eq!(full.damaged[0].object, pack);
    assert!(
        full.damaged[0]
            .problem
            .contains("contents do not match its name"),
        "{full:?}"
    );
    assert!(
        full.damaged[0].problem.contains("1 of")
            && full.damaged[0]
                .problem
                .contains("fail decryption or their hash check"),
        "{full:?}"
    );
    let broken: Vec<_> = full.broken_snapshots.iter().map(|b| b.id).collect();
    assert_eq!(broken, [a.id], "{full:?}");
    assert_ne!(broken[0], b.id);
}

/// A pack deleted from the store: the quick check names it missing and
/// the snapshot that needs it broken; the other snapshot is sound and
/// still restores.
#[test]
fn a_deleted_pack_breaks_the_snapshot_that_needs_it() {
    let s = Scratch::new();
    let (repo, _, a, b) = two_snapshots(&s);
    let index = repo.load_index().unwrap();
    let chunk = node(&a.snapshot, "/f2").content[0].chunk().unwrap();
    let (pack, _) = index.pack(index.get(&chunk).unwrap().pack);
    let key = lifeboat_repo::format::pack_key(&pack);
    fs::remove_file(s.repo_dir().join(&key)).unwrap();

    let report = repo.verify(false, &NoProgress).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].object, key);
    assert!(report.damaged[0].problem.contains("missing"), "{report:?}");
    assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
    assert_eq!(report.broken_snapshots[0].id, a.id);
    assert!(
        report.broken_snapshots[0]
            .reason
            .contains("in damaged packs"),
        "{report:?}"
    );

    let target = s.path().join("restore-b");
    restore_into(&repo, &b.snapshot, &target, Default::default(), &[]).unwrap();
    assert_same_tree(
        &s.path().join("two"),
        &restored(&target, &s.path().join("two")),
    );
}

/// An index object damaged, then one lost: `verify` reports each (the
/// damaged object by name, the snapshot whose chunks no index lists as
/// broken, with a hint to `repair index`); a restore says the same; `repair
/// index` rebuilds the index from the packs, after which the repository is
/// clean and restores byte for byte.
#[test]
fn a_lost_index_is_reported_and_repair_index_rebuilds_it() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("data"), noise(1, 600_000)).unwrap();
    let out = backup_files(&repo, &[&src]).unwrap();
    let indexes = s.repo_files("index");
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    let index_key = indexes[0]
        .strip_prefix(s.repo_dir())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    // Damaged.
    let mut bytes = fs::read(&indexes[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&indexes[0], &bytes).unwrap();
    let report = repo.verify(false, &NoProgress).unwrap();
    assert!(
        report.damaged.iter().any(|d| d.object == index_key),
        "{report:?}"
    );
    assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
    assert!(report.hint.as_deref().unwrap().contains("repair index"));
    let repaired = repo.repair_index(false, &NoProgress).unwrap();
    assert_eq!(repaired.indexes_removed, [index_key], "{repaired:?}");
    assert_eq!(repaired.packs_indexed as u64, out.snapshot.stats.packs);
    let report = repo.verify(true, &NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // Lost.
    for f in s.repo_files("index") {
        fs::remove_file(f).unwrap();
    }
    let report = repo.verify(false, &NoProgress).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.unindexed_packs as u64, out.snapshot.stats.packs);
    assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
    assert_eq!(report.broken_snapshots[0].id, out.id);
    assert!(
        report.broken_snapshots[0].reason.contains("in no index"),
        "{report:?}"
    );
    assert!(report.hint.as_deref().unwrap().contains("repair index"));
    let err = restore_into(
        &repo,
        &out.snapshot,
        &s.path().join("before-repair"),
        Default::default(),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Damage, "{err}");
    assert!(err.to_string().contains("repair index"), "{err}");
    assert!(partial_files(&s.path().join("before-repair")).is_empty());

    let repaired = repo.repair_index(true, &NoProgress).unwrap();
    assert_eq!(repaired.packs_read as u64, out.snapshot.stats.packs);
    assert_eq!(repaired.packs_indexed as u64, out.snapshot.stats.packs);
    assert!(repaired.bad_chunks.is_empty(), "{repaired:?}");
    let report = repo.verify(true, &NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let target = s.path().join("restore");
    restore_into(&repo, &out.snapshot, &target, Default::default(), &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

/// `repair index` removes damaged index objects only: one it cannot read
/// for another reason (a newer version) stops it before anything changes,
/// and a damaged one stays while some pack cannot be indexed again.
#[test]
fn repair_index_removes_only_what_it_has_replaced() {
    let s = Scratch::new();
    let dir = &s.dir;
    let repo = s.init_on_with(
        s.local(),
        &InitOptions {
            pack_size: 1 << 20,
            passphrase_kdf: cheap_kdf(),
            ..InitOptions::default()
        },
    );
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
    let list = |sub: &str| s.repo_files(sub);
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

/// `repair index --read-data` indexes only blobs that decrypt and
/// hash-check: a damaged one is left out and counted, so verify then names
/// the snapshot that needs it instead of an index pointing at bad data.
#[test]
fn repair_index_with_read_data_leaves_out_a_damaged_blob() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("data"), noise(3, 600_000)).unwrap();
    let out = backup_files(&repo, &[&src]).unwrap();
    let chunks = out.snapshot.stats.chunks;
    assert!(chunks > 1, "{chunks} chunk(s)");
    for f in s.repo_files("index") {
        fs::remove_file(f).unwrap();
    }
    // A byte just after the 10-byte header: inside blob 0.
    let packs = s.repo_files("packs");
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[20] ^= 1;
    fs::write(&packs[0], &bytes).unwrap();
    let repaired = repo.repair_index(true, &NoProgress).unwrap();
    assert_eq!(repaired.bad_chunks.len(), 1, "{repaired:?}");
    assert_eq!(repaired.bad_chunks[0].1, 1, "{repaired:?}");
    let indexed_before: u64 = out.snapshot.stats.chunks_new;
    assert_eq!(repaired.chunks_indexed, indexed_before - 1, "{repaired:?}");
    let report = repo.verify(false, &NoProgress).unwrap();
    assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
    assert!(
        report.broken_snapshots[0]
            .reason
            .contains("1 chunk(s) in no index"),
        "{report:?}"
    );
}

/// `verify --read-data` (and its subsets) racing WAL pushes and the
/// archive's expiry — named objects written and deleted while it lists and
/// reads them — for at least 20 rounds reports nothing that is not there.
#[test]
fn verify_racing_wal_pushes_and_expiry_reports_no_false_damage() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Scratch::new();
    let (repo, _, _, _) = two_snapshots(&s);
    let segment = |i: u64| format!("000000010000000000{i:06X}");
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..300u64 {
                repo.put_named("wal-system", &segment(i), &noise(900 + i, 48 << 10))
                    .unwrap();
                // The expiry: only the newest eight stay.
                if i >= 8 {
                    repo.delete_named("wal-system", &segment(i - 8)).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut rounds = 0u32;
        let mut named = 0;
        while !done.load(Ordering::SeqCst) || rounds < 20 {
            let subset = match rounds % 3 {
                0 => lifeboat_repo::DataSubset::All,
                n => lifeboat_repo::DataSubset::Part { n, of: 2 },
            };
            let r = repo.verify_data(Some(subset), &NoProgress).unwrap();
            assert!(r.is_clean(), "round {rounds}: {r:?}");
            named += r.named_checked;
            rounds += 1;
        }
        assert!(named > 0, "no WAL object was read in {rounds} rounds");
    });
    let last = repo.verify(true, &NoProgress).unwrap();
    assert!(last.is_clean() && last.named_checked == 8, "{last:?}");
}
