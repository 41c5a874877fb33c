//! Replicas on local disk: a replica opens with the same key and restores
//! byte for byte; a run stopped at any store leaves a replica that
//! verifies; damage on the primary is not copied; deletions wait for the
//! delay; a location holding anything else is refused.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::{
    Overwrite, PruneOptions, ReplicateOptions, ReplicateReport, RepoError, SnapshotId,
};
use lifeboat_storage::{ErrorKind, FaultAction, FaultRule, FaultStorage, Op};

use super::*;

/// Where the replica of a scratch repository lives.
fn replica_dir(s: &Scratch) -> PathBuf {
    s.path().join("replica")
}

fn replica_store(s: &Scratch) -> DynStorage {
    Arc::new(LocalStorage::new(replica_dir(s)))
}

fn options(delay: Duration) -> ReplicateOptions {
    ReplicateOptions {
        delete_delay: delay,
        workers: 4,
        bandwidth: None,
        archive: None,
    }
}

fn replicate(repo: &Repository, target: &DynStorage) -> ReplicateReport {
    repo.replicate(target, &options(Duration::from_secs(86_400)), &NoProgress)
        .unwrap()
}

/// Three MB over several packs, backed up twice with a change between.
fn two_backups(s: &Scratch, repo: &Repository) -> (PathBuf, Vec<SnapshotId>) {
    let src = s.dir("src");
    for i in 0..3u64 {
        fs::write(src.join(format!("f{i}")), noise(70 + i, 1_000_000)).unwrap();
    }
    let first = backup_files(repo, &[&src]).unwrap();
    fs::write(src.join("f1"), noise(99, 700_000)).unwrap();
    let second = backup_files(repo, &[&src]).unwrap();
    (src, vec![first.id, second.id])
}

/// The replica, opened with the primary's passphrase, verifies with every
/// pack read, and `latest` restores to `src` byte for byte.
fn assert_replica_restores(s: &Scratch, src: &Path, name: &str) {
    let replica = s.open_on(replica_store(s));
    let report = replica.verify(true, &NoProgress).unwrap();
    assert!(report.is_clean(), "the replica verifies: {report:?}");
    let latest = replica.find_snapshot("latest").unwrap();
    let target = s.path().join(name);
    restore_into(&replica, &latest.snapshot, &target, Overwrite::Refuse, &[]).unwrap();
    assert_same_tree(src, &restored(&target, src));
}

#[test]
fn a_replica_opens_with_the_same_key_and_restores_byte_for_byte() {
    let s = Scratch::new();
    let repo = s.init();
    let (src, ids) = two_backups(&s, &repo);
    repo.hold(&ids[0].to_hex(), "audit", None, "test").unwrap();
    let target = replica_store(&s);

    let first = replicate(&repo, &target);
    assert!(first.created, "{first:?}");
    assert!(first.damaged.is_empty());
    let kinds: Vec<&str> = first.copied.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "keys",
            "keyring",
            "config",
            "packs",
            "index",
            "snapshots",
            "holds"
        ]
    );
    assert_replica_restores(&s, &src, "restored");
    let replica = s.open_on(target.clone());
    let mut theirs: Vec<SnapshotId> = replica.snapshots().unwrap().iter().map(|e| e.id).collect();
    let mut ours = ids.clone();
    theirs.sort();
    ours.sort();
    assert_eq!(theirs, ours, "the same snapshots, by id");
    assert_eq!(replica.holds().unwrap().len(), 1, "the hold came along");

    // Nothing new: nothing copied, everything counted as there.
    let again = replicate(&repo, &target);
    assert_eq!(again.total_copied(), (0, 0), "{again:?}");
    assert!(!again.created);
    assert!(again.present >= first.total_copied().0, "{again:?}");

    // A new data key on the primary: the keyring goes first, and what is
    // sealed with the new epoch reads from the replica.
    let mut repo = repo;
    repo.rotate_data_key().unwrap();
    fs::write(src.join("f3"), noise(123, 300_000)).unwrap();
    backup_files(&repo, &[&src]).unwrap();
    let third = replicate(&repo, &target);
    assert_eq!(third.copied[0].kind, "keyring", "{third:?}");
    assert_replica_restores(&s, &src, "after-rotation");

    let status = repo
        .replica_status(&target, Duration::from_secs(86_400), None)
        .unwrap();
    assert!(status.exists);
    assert!(status.missing.is_empty(), "{status:?}");
    assert_eq!(status.lag_seconds, 0.0);
    assert_eq!(status.snapshots, (3, 3));
}

/// A replicate stopped at every store it makes, one run per stopping
/// point: each time the replica is either not made yet (no config) or a
/// repository that opens and verifies with no damage; the run after it
/// finishes the copy.
#[test]
fn a_replicate_stopped_at_any_store_leaves_a_replica_that_verifies() {
    let s = Scratch::new();
    let repo = s.init();
    let (src, _) = two_backups(&s, &repo);
    let faults = Arc::new(FaultStorage::new(replica_store(&s)));
    let target: DynStorage = faults.clone();

    // How many stores a whole first run makes.
    let whole = {
        let probe = Scratch::new();
        let r = probe.init();
        let _ = two_backups(&probe, &r);
        let f = Arc::new(FaultStorage::new(replica_store(&probe)));
        let t: DynStorage = f.clone();
        r.replicate(&t, &options(Duration::ZERO), &NoProgress)
            .unwrap();
        f.calls(Op::Put)
    };
    assert!(whole >= 10, "{whole} stores");

    let mut trials = 0;
    for stop_at in 0..whole as u32 {
        faults.clear();
        faults.add(FaultRule {
            op: Op::Put,
            key_prefix: String::new(),
            skip: stop_at,
            times: None,
            action: FaultAction::Fail(ErrorKind::Permanent),
        });
        let err = repo
            .replicate(&target, &options(Duration::ZERO), &NoProgress)
            .err();
        trials += 1;
        faults.clear();
        if replica_dir(&s).join("config").exists() {
            let replica = s.open_on(replica_store(&s));
            let report = replica.verify(false, &NoProgress).unwrap();
            assert!(
                report.damaged.is_empty() && report.broken_snapshots.is_empty(),
                "stopped after {stop_at} stores ({err:?}): {report:?}"
            );
        }
    }
    assert!(trials >= 10);
    let last = repo
        .replicate(&target, &options(Duration::ZERO), &NoProgress)
        .unwrap();
    assert!(last.damaged.is_empty());
    assert_replica_restores(&s, &src, "restored");
}

#[test]
fn an_object_damaged_on_the_primary_is_not_copied_and_is_named() {
    let s = Scratch::new();
    let repo = s.init();
    let (_, _) = two_backups(&s, &repo);
    let pack = s.repo_files("packs").into_iter().next().unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    let target = replica_store(&s);
    let report = replicate(&repo, &target);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(report.damaged[0].key.ends_with(&name), "{report:?}");
    assert!(
        report.damaged[0].reason.contains("BLAKE3"),
        "{}",
        report.damaged[0].reason
    );
    assert!(
        !files_below(&replica_dir(&s).join("packs"))
            .iter()
            .any(|p| p.ends_with(&name)),
        "the damaged pack is not in the replica"
    );
    // The rest is there: the snapshots too.
    let replica = s.open_on(target);
    assert_eq!(replica.snapshots().unwrap().len(), 2);
}

#[test]
fn a_location_holding_anything_else_is_refused_and_left_as_it_is() {
    let s = Scratch::new();
    let repo = s.init();
    let _ = two_backups(&s, &repo);

    // Another repository.
    let other_dir = s.path().join("other");
    let other: DynStorage = Arc::new(LocalStorage::new(&other_dir));
    let _ = s.init_on(other.clone());
    let before = files_below(&other_dir);
    let err = repo
        .replicate(&other, &options(Duration::ZERO), &NoProgress)
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("another repository"), "{err}");
    assert_eq!(files_below(&other_dir), before, "nothing written there");

    // Files that are no repository.
    let junk_dir = s.dir("junk");
    fs::write(junk_dir.join("notes.txt"), b"mine").unwrap();
    let junk: DynStorage = Arc::new(LocalStorage::new(&junk_dir));
    let err = repo
        .replicate(&junk, &options(Duration::ZERO), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(files_below(&junk_dir), [PathBuf::from("notes.txt")]);
}

/// Everything forgotten and pruned on the primary: the replica keeps it
/// all (and restores) while the delay runs, and deletes it once it has
/// passed — snapshots before packs, leaving a repository that verifies.
#[test]
fn deletions_reach_the_replica_only_after_the_delay() {
    let s = Scratch::new();
    let repo = s.init();
    let (src, ids) = two_backups(&s, &repo);
    let target = replica_store(&s);
    replicate(&repo, &target);

    repo.delete_snapshots(&ids).unwrap();
    repo.prune(&PruneOptions::default(), &NoProgress).unwrap();
    assert!(repo.snapshots().unwrap().is_empty());
    assert!(s.repo_files("packs").is_empty(), "the primary is empty");

    let week = Duration::from_secs(7 * 86_400);
    let r = repo
        .replicate(&target, &options(week), &NoProgress)
        .unwrap();
    assert!(r.deletions.deleted.is_empty(), "{r:?}");
    assert!(r.deletions.newly_seen > 0);
    assert_eq!(r.deletions.pending_snapshots, 2, "{r:?}");
    let due = r.deletions.next_due.unwrap();
    let secs = due.as_second() - lifeboat_repo::Timestamp::now().as_second();
    assert!(
        (6 * 86_400..=7 * 86_400).contains(&secs),
        "due in about a week: {due}"
    );
    assert_replica_restores(&s, &src, "while-the-delay-runs");
    // A second run records nothing twice.
    let again = repo
        .replicate(&target, &options(week), &NoProgress)
        .unwrap();
    assert_eq!(again.deletions.newly_seen, 0);
    assert_eq!(again.deletions.pending, r.deletions.pending);

    // The delay over (a run with none): every deletion is applied.
    let done = repo
        .replicate(&target, &options(Duration::ZERO), &NoProgress)
        .unwrap();
    let deleted: Vec<&str> = done
        .deletions
        .deleted
        .iter()
        .map(|k| k.kind.as_str())
        .collect();
    assert_eq!(deleted.first(), Some(&"snapshots"), "{done:?}");
    assert_eq!(deleted.last(), Some(&"packs"), "{done:?}");
    assert_eq!(done.deletions.pending, 0);
    let replica = s.open_on(target.clone());
    assert!(replica.snapshots().unwrap().is_empty());
    assert!(files_below(&replica_dir(&s).join("packs")).is_empty());
    assert!(files_below(&replica_dir(&s).join("deletions")).is_empty());
    assert!(replica.verify(false, &NoProgress).unwrap().is_clean());
}

/// A keyring on the primary that lacks an epoch the replica's has (put
/// back from an old copy, by mistake or by an attacker) does not replace
/// the replica's: the data sealed with that epoch would be unreadable.
#[test]
fn a_keyring_that_lost_an_epoch_does_not_replace_the_replicas() {
    let s = Scratch::new();
    let mut repo = s.init();
    let _ = two_backups(&s, &repo);
    let old = fs::read(s.repo_dir().join("keyring")).unwrap();
    repo.rotate_data_key().unwrap();
    let target = replica_store(&s);
    replicate(&repo, &target);
    let replica_ring = fs::read(replica_dir(&s).join("keyring")).unwrap();

    fs::write(s.repo_dir().join("keyring"), &old).unwrap();
    let repo = s.open_on(s.local());
    let err = repo
        .replicate(&target, &options(Duration::ZERO), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("lacks key epoch 2"), "{err}");
    assert_eq!(
        fs::read(replica_dir(&s).join("keyring")).unwrap(),
        replica_ring,
        "the replica's keyring is kept"
    );
}

/// An archive replica in a cold class (through the cold-storage stand-in):
/// it takes only the snapshot selected, the packs holding its chunks and
/// index objects of its own, and verifies; a restore from it meets frozen
/// packs and says to thaw; once the snapshot's packs are thawed it
/// restores byte for byte; when the primary forgets the snapshot, the
/// archive deletes it after the delay and collects its packs.
#[test]
fn an_archive_replica_takes_the_selected_snapshot_cold_and_restores_once_thawed() {
    use lifeboat_repo::ArchiveSelection;
    use lifeboat_storage::{ColdSimStorage, ThawTier};

    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("a"), noise(1, 900_000)).unwrap();
    let first = backup_files(&repo, &[&src]).unwrap();
    // Kept for the archive: this state of the files.
    let kept_tree = s.dir("kept");
    fs::write(kept_tree.join("a"), noise(1, 900_000)).unwrap();
    fs::write(src.join("b"), noise(2, 900_000)).unwrap();
    let second = backup_files(&repo, &[&src]).unwrap();

    // Two WAL-like named objects: the archive takes the one selected.
    repo.put_named("wal:1", "000000010000000000000001", &noise(3, 50_000))
        .unwrap();
    repo.put_named("wal:1", "000000010000000000000002", &noise(4, 50_000))
        .unwrap();
    let wanted_wal = repo.named_key("wal:1", "000000010000000000000001");
    let other_wal = repo.named_key("wal:1", "000000010000000000000002");

    let journal = s.path().join("cold-journal");
    let cold = |thaw_after: Duration| -> DynStorage {
        Arc::new(ColdSimStorage::new(
            replica_store(&s),
            Some("DEEP_ARCHIVE".into()),
            journal.clone(),
            thaw_after,
        ))
    };
    let target = cold(Duration::from_secs(3600));
    let mut opts = options(Duration::ZERO);
    opts.archive = Some(ArchiveSelection {
        snapshots: [first.id].into_iter().collect(),
        named: [wanted_wal.clone()].into_iter().collect(),
    });
    let r = repo.replicate(&target, &opts, &NoProgress).unwrap();
    assert!(r.damaged.is_empty(), "{r:?}");
    let archive = s.open_on(target.clone());
    let ids: Vec<SnapshotId> = archive.snapshots().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, [first.id], "only the selected snapshot");
    let primary_packs = s.repo_files("packs").len();
    let archive_packs = files_below(&replica_dir(&s).join("packs")).len();
    assert!(
        archive_packs < primary_packs,
        "{archive_packs} packs in the archive, {primary_packs} in the primary"
    );
    let report = archive.verify(false, &NoProgress).unwrap();
    assert!(report.is_clean(), "the archive verifies: {report:?}");
    assert!(replica_dir(&s).join(&wanted_wal).exists());
    assert!(
        !replica_dir(&s).join(&other_wal).exists(),
        "only the WAL selected"
    );
    let frozen = archive.get_named("wal:1", "000000010000000000000001");
    assert!(
        lifeboat_repo::report(&frozen.unwrap_err()).contains("lifeboat thaw"),
        "the WAL is cold too"
    );

    // Frozen: the restore says what to do, with the usage class (exit 2).
    let snap = archive.find_snapshot(&first.id.to_hex()).unwrap();
    let err = restore_into(
        &archive,
        &snap.snapshot,
        &s.path().join("early"),
        Overwrite::Refuse,
        &[],
    )
    .unwrap_err();
    let text = lifeboat_repo::report(&err);
    assert!(
        text.contains("cold storage") && text.contains("lifeboat thaw"),
        "{text}"
    );
    assert_eq!(
        lifeboat_repo::Classify::class(&err),
        lifeboat_repo::ErrorClass::Usage,
        "{text}"
    );
    assert!(!s.path().join("early").exists(), "nothing made");

    // Thawed (here at once), it restores byte for byte.
    let keys = archive.snapshot_pack_keys(&snap.snapshot).unwrap();
    assert_eq!(keys.len(), archive_packs);
    let thawed = cold(Duration::ZERO);
    for k in &keys {
        let st = s.rt.block_on(thawed.thaw(k, 1, ThawTier::Bulk)).unwrap();
        assert!(st.is_readable(), "{k}: {st:?}");
    }
    s.rt.block_on(thawed.thaw(&wanted_wal, 1, ThawTier::Bulk))
        .unwrap();
    let archive = s.open_on(thawed.clone());
    assert_eq!(
        archive
            .get_named("wal:1", "000000010000000000000001")
            .unwrap()
            .unwrap(),
        noise(3, 50_000)
    );
    let out = s.path().join("restored");
    restore_into(&archive, &snap.snapshot, &out, Overwrite::Refuse, &[]).unwrap();
    assert!(
        fs::read(restored(&out, &src).join("a")).unwrap() == fs::read(kept_tree.join("a")).unwrap()
    );
    assert!(
        !restored(&out, &src).join("b").exists(),
        "the first snapshot's files only"
    );

    // Forgotten on the primary: gone from the archive, packs collected.
    repo.delete_snapshots(&[first.id]).unwrap();
    let _ = second;
    let r = repo.replicate(&thawed, &opts, &NoProgress).unwrap();
    assert_eq!(r.deletions.deleted[0].kind, "snapshots", "{r:?}");
    let archive = s.open_on(thawed);
    assert!(archive.snapshots().unwrap().is_empty());
    assert!(
        files_below(&replica_dir(&s).join("packs")).is_empty(),
        "the archive's packs were collected"
    );
    assert!(archive.verify(false, &NoProgress).unwrap().is_clean());
}

/// An object gone from the primary and back again leaves its deletion
/// record; gone once more, it waits the whole delay from then, not from
/// the first time.
#[test]
fn an_object_back_on_the_primary_leaves_its_deletion_record() {
    let s = Scratch::new();
    let repo = s.init();
    let (_, ids) = two_backups(&s, &repo);
    let target = replica_store(&s);
    replicate(&repo, &target);
    let key = s.repo_dir().join(format!("snapshots/{}", ids[0].to_hex()));
    let bytes = fs::read(&key).unwrap();
    let week = Duration::from_secs(7 * 86_400);
    let records = || files_below(&replica_dir(&s).join("deletions")).len();

    fs::remove_file(&key).unwrap();
    let first = repo
        .replicate(&target, &options(week), &NoProgress)
        .unwrap();
    assert_eq!(first.deletions.pending_snapshots, 1, "{first:?}");
    assert_eq!(records(), 1);
    let first_due = first.deletions.next_due.unwrap();

    fs::write(&key, &bytes).unwrap();
    let back = repo
        .replicate(&target, &options(week), &NoProgress)
        .unwrap();
    assert_eq!(back.deletions.pending, 0, "{back:?}");
    assert_eq!(records(), 0, "the record went with the key");

    fs::remove_file(&key).unwrap();
    let again = repo
        .replicate(&target, &options(week), &NoProgress)
        .unwrap();
    assert_eq!(again.deletions.newly_seen, 1, "{again:?}");
    assert!(
        again.deletions.next_due.unwrap() > first_due,
        "due a week from the second time: {again:?}"
    );
}
