//! Prune: what no snapshot uses goes, every kept snapshot stays whole, and
//! the interleavings with backups that close the race between a backup's
//! deduplication and a prune's deletion.

use lifeboat_repo::{
    MaxUnused, NoProgress, PruneOptions, RepoError, Repository, SessionKind, SnapshotId,
    SnapshotOptions,
};

use super::*;

/// Removes a snapshot object, as `forget` does.
fn forget(s: &Scratch, repo: &Repository, id: SnapshotId) {
    let key = format!("snapshots/{}", id.to_hex());
    s.rt.block_on(repo.storage().delete(&key)).unwrap();
}

fn prune(repo: &Repository) -> lifeboat_repo::PruneReport {
    repo.prune(&PruneOptions::default(), &NoProgress).unwrap()
}

/// A stream snapshot of `data` named `name`.
fn stream(repo: &Repository, name: &str, data: &[u8]) -> lifeboat_repo::BackupOutcome {
    let mut d = repo
        .stream_snapshot(&SnapshotOptions::named("test", name, "host", &[]))
        .unwrap();
    d.add_stream("data", data, &NoProgress).unwrap();
    d.commit().unwrap()
}

fn restored_stream(repo: &Repository, snap: &lifeboat_repo::Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    repo.restore_stream(snap, &mut out, &NoProgress).unwrap();
    out
}

fn assert_clean(repo: &Repository) {
    let v = repo.verify(true, &NoProgress).unwrap();
    assert!(
        v.is_clean(),
        "verify found damage: {:?} {:?}",
        v.damaged,
        v.broken_snapshots
    );
}

#[test]
fn prune_deletes_what_no_snapshot_uses_and_every_kept_snapshot_restores_whole() {
    let s = Scratch::new();
    let repo = s.init();
    let a = s.dir("a");
    let b = s.dir("b");
    fs::write(a.join("a.bin"), noise(1, 3 << 20)).unwrap();
    fs::write(b.join("b.bin"), noise(2, 3 << 20)).unwrap();
    let first = backup_files(&repo, &[&a]).unwrap();
    let second = backup_files(&repo, &[&b]).unwrap();
    let packs_before = s.repo_files("packs").len();
    forget(&s, &repo, first.id);

    let r = prune(&repo);
    assert!(r.unused_packs.count >= 3, "{r:?}");
    assert_eq!(r.packs_deleted.count, r.unused_packs.count);
    assert!(r.marks.iter().all(|m| m.done), "{:?}", r.marks);
    assert_eq!(
        s.repo_files("packs").len() as u64,
        packs_before as u64 - r.packs_deleted.count
    );
    assert!(s.repo_files("marks").is_empty());
    // Nothing of the forgotten snapshot is indexed any more.
    let index = repo.load_index().unwrap();
    assert!(first.snapshot.chunks().all(|c| !index.contains(&c)));
    assert_clean(&repo);
    let target = s.dir("target");
    restore_into(&repo, &second.snapshot, &target, Default::default(), &[]).unwrap();
    assert_same_tree(&b, &restored(&target, &b));

    // A second prune finds nothing to do.
    let again = prune(&repo);
    assert_eq!(again.unused_packs.count + again.repacked_packs.count, 0);
    assert_eq!(again.packs_deleted.count, 0);
}

#[test]
fn prune_repacks_packs_mostly_unused_and_keeps_their_live_chunks() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), noise(100 + i, 100 << 10)).unwrap();
    }
    let first = backup_files(&repo, &[&src]).unwrap();
    for i in 0..36 {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let second = backup_files(&repo, &[&src]).unwrap();
    forget(&s, &repo, first.id);

    let dry = repo
        .prune(
            &PruneOptions {
                dry_run: true,
                max_unused: MaxUnused::Fraction(0.0),
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
    let stored_before: u64 = s
        .repo_files("packs")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let r = repo
        .prune(
            &PruneOptions {
                max_unused: MaxUnused::Fraction(0.0),
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
    assert!(r.repacked_packs.count > 0, "{r:?}");
    assert_eq!(
        dry.repacked_packs, r.repacked_packs,
        "the dry run said the same"
    );
    assert!(r.new_packs.count > 0);
    assert!(
        r.marks.iter().all(|m| m.done && m.recovered == 0),
        "{:?}",
        r.marks
    );
    assert_eq!(r.unused_left, 0);
    let stored_after: u64 = s
        .repo_files("packs")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    // About 4 of 40 files are left: far less than half is stored after.
    assert!(
        stored_after * 4 < stored_before,
        "{stored_after} of {stored_before}"
    );
    assert_clean(&repo);
    let target = s.dir("target");
    restore_into(&repo, &second.snapshot, &target, Default::default(), &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn a_dry_run_changes_nothing() {
    let s = Scratch::new();
    let repo = s.init();
    let first = stream(&repo, "one", &noise(3, 2 << 20));
    stream(&repo, "two", &noise(4, 2 << 20));
    forget(&s, &repo, first.id);
    let before = files_below(&s.repo_dir());
    let r = repo
        .prune(
            &PruneOptions {
                dry_run: true,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
    assert!(r.dry_run && r.unused_packs.count > 0);
    assert_eq!(r.packs_deleted.count, 0);
    assert_eq!(files_below(&s.repo_dir()), before);
}

/// The race to close: a backup that loaded the index before the prune
/// deduplicates against chunks whose packs the prune marks. Its session
/// holds the deletion back; its snapshot, stored later, gets the packs
/// indexed again by the next prune. It restores byte for byte.
#[test]
fn a_backup_that_loaded_the_index_before_the_mark_keeps_the_chunks_it_reuses() {
    let s = Scratch::new();
    let repo = s.init();
    let data = noise(5, 3 << 20);
    let old = stream(&repo, "old", &data);
    // The backup starts: its index holds the old snapshot's chunks.
    let mut draft = repo
        .stream_snapshot(&SnapshotOptions::named("test", "new", "host", &[]))
        .unwrap();
    forget(&s, &repo, old.id);
    let r = prune(&repo);
    assert!(r.unused_packs.count > 0, "{r:?}");
    assert_eq!(r.packs_deleted.count, 0, "the running backup holds them");
    let waiting = r.marks.iter().find(|m| !m.done).expect("a waiting mark");
    assert!(
        waiting
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.contains("a backup") && w.contains("pid")),
        "{waiting:?}"
    );
    // What prune leaves in flight is not damage.
    assert_clean(&repo);

    // The backup deduplicates against the marked packs and commits.
    draft
        .add_stream("data", data.as_slice(), &NoProgress)
        .unwrap();
    let new = draft.commit().unwrap();
    assert_eq!(
        new.snapshot.stats.chunks_new, 0,
        "it built on the old chunks"
    );

    let r = prune(&repo);
    let done = r.marks.iter().find(|m| m.id == waiting.id).unwrap();
    assert!(done.done, "{done:?}");
    assert!(done.recovered > 0, "its packs were indexed again: {done:?}");
    assert_clean(&repo);
    assert_eq!(restored_stream(&repo, &new.snapshot), data);
    // And the next prune has nothing to undo.
    let r = prune(&repo);
    assert_eq!(r.packs_deleted.count, 0);
    assert_eq!(restored_stream(&repo, &new.snapshot), data);
}

/// A backup that starts once a mark exists does not build on its packs: it
/// stores the chunks again, and the marked packs go.
#[test]
fn a_backup_that_starts_after_the_mark_does_not_build_on_marked_packs() {
    let s = Scratch::new();
    let repo = s.init();
    let data = noise(6, 3 << 20);
    let old = stream(&repo, "old", &data);
    // A backup running since before the prune keeps the mark waiting.
    let early = repo
        .stream_snapshot(&SnapshotOptions::named("test", "early", "host", &[]))
        .unwrap();
    forget(&s, &repo, old.id);
    let r = prune(&repo);
    assert_eq!(r.packs_deleted.count, 0);
    let late = stream(&repo, "late", &data);
    assert!(late.snapshot.stats.chunks_new > 0, "stored again");
    drop(early);

    let r = prune(&repo);
    assert!(r.packs_deleted.count > 0, "{r:?}");
    assert!(
        r.marks.iter().all(|m| m.done && m.recovered == 0),
        "{:?}",
        r.marks
    );
    assert!(s.repo_files("marks").is_empty());
    assert_clean(&repo);
    assert_eq!(restored_stream(&repo, &late.snapshot), data);
}

#[test]
fn a_second_prune_is_refused_naming_the_first() {
    let s = Scratch::new();
    let repo = s.init();
    stream(&repo, "one", &noise(8, 1 << 20));
    let first = repo.begin_session(SessionKind::Prune).unwrap();
    let e = repo
        .prune(&PruneOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, RepoError::Busy(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("another prune is running") && msg.contains("pid"),
        "{msg}"
    );
    first.finish().unwrap();
    prune(&repo);
}

/// Packs deleted by a prune whose superseded index objects and mark are
/// still there (a prune killed between the two) are not damage, and the
/// next prune finishes the job.
#[test]
fn verify_does_not_report_what_a_prune_left_in_flight_and_the_next_prune_finishes() {
    let s = Scratch::new();
    let repo = s.init();
    let old = stream(&repo, "old", &noise(9, 3 << 20));
    let kept = stream(&repo, "kept", &noise(10, 2 << 20));
    let early = repo
        .stream_snapshot(&SnapshotOptions::named("test", "early", "host", &[]))
        .unwrap();
    forget(&s, &repo, old.id);
    prune(&repo);
    // Delete the marked packs as phase 2 does, then stop there.
    let marks = repo.marks().unwrap();
    assert_eq!(marks.len(), 1);
    for p in &marks[0].packs {
        s.rt.block_on(repo.storage().delete(&lifeboat_repo::format::pack_key(p)))
            .unwrap();
    }
    let v = repo.verify(true, &NoProgress).unwrap();
    assert!(v.is_clean(), "{:?} {:?}", v.damaged, v.broken_snapshots);
    assert_eq!(v.marks, 1);
    drop(early);
    let r = prune(&repo);
    assert!(r.marks.iter().all(|m| m.done));
    assert!(repo.marks().unwrap().is_empty());
    assert_clean(&repo);
    assert_eq!(restored_stream(&repo, &kept.snapshot), noise(10, 2 << 20));
}

#[test]
fn stats_say_what_only_each_snapshot_holds() {
    let s = Scratch::new();
    let repo = s.init();
    let shared = noise(11, 1 << 20);
    let mut one = shared.clone();
    one.extend(noise(12, 2 << 20));
    let a = stream(&repo, "a", &one);
    let b = stream(&repo, "b", &shared);
    let st = repo.stats(&NoProgress).unwrap();
    assert_eq!(st.snapshots, 2);
    let of = |id| st.per_snapshot.iter().find(|p| p.id == id).unwrap();
    // `b` is shared with `a` but for its last chunk (at most 256 KiB);
    // `a` alone holds about 2 MiB.
    assert!(of(b.id).unique_stored_bytes <= 256 << 10);
    let only_a = of(a.id).unique_stored_bytes;
    assert!(only_a > (3 << 20) / 2 && only_a < (5 << 20) / 2, "{only_a}");
    assert!(st.dedup_ratio > 1.0, "{}", st.dedup_ratio);
    // Forgetting `a` and pruning frees about what stats said.
    forget(&s, &repo, a.id);
    let r = prune(&repo);
    let freed = r.packs_deleted.bytes - r.new_packs.bytes;
    assert!(
        freed as f64 > only_a as f64 * 0.8,
        "freed {freed}, stats said {only_a}"
    );
}

/// A running backup that holds WAL (as `pg backup` does from its start
/// segment) is seen by WAL expiry while it runs, and no longer once it
/// ends.
#[test]
fn a_running_backup_holds_its_wal_until_it_ends() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("f"), b"x").unwrap();
    let hold = lifeboat_repo::WalHold {
        namespace: "wal:7".into(),
        first: "000000010000000000000003".into(),
    };
    let opts = lifeboat_repo::TreeBackupOptions {
        roots: vec![lifeboat_repo::TreeRoot {
            path: src.clone(),
            prefix: None,
        }],
        source_kind: "postgres-like".into(),
        source_name: "src".into(),
        hostname: "test".into(),
        wal_hold: Some(hold.clone()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    repo.backup_tree(&opts, &lifeboat_repo::PlainFiles, &NoProgress, |_| {
        seen = repo.wal_holds("wal:7")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![hold.first.clone()]);
    assert!(repo.wal_holds("wal:7").unwrap().is_empty(), "it ended");
}

#[test]
fn prune_removes_what_interrupted_writes_left_once_it_is_an_hour_old() {
    let s = Scratch::new();
    let repo = s.init();
    stream(&repo, "a", &noise(7, 1 << 20));
    // A killed backup's half-written pack, two hours old, and a write in
    // progress right now.
    let old = s.repo_dir().join("packs/ab.tmp-killed");
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    fs::write(&old, vec![7u8; 4096]).unwrap();
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let fresh = s.repo_dir().join("index/cd.tmp-running");
    fs::write(&fresh, b"in progress").unwrap();
    let dry = repo
        .prune(
            &PruneOptions {
                dry_run: true,
                ..PruneOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
    assert_eq!(dry.leftovers_removed.count, 1);
    assert!(old.exists(), "a dry run removes nothing");
    let r = prune(&repo);
    assert_eq!(
        (r.leftovers_removed.count, r.leftovers_removed.bytes),
        (1, 4096)
    );
    assert!(!old.exists());
    assert!(fresh.exists(), "a write in progress is left alone");
    assert_clean(&repo);
}

/// Two snapshots of a paged file (PostgreSQL's relation files): the
/// second has two patched pieces over the first's chunks, and the first
/// also holds a tail only it has (its pack is repacked once it goes).
/// Returns the snapshots and the second's file content.
fn patched_pair(
    s: &Scratch,
    repo: &Repository,
) -> (
    lifeboat_repo::BackupOutcome,
    lifeboat_repo::BackupOutcome,
    Vec<u8>,
) {
    use super::backup::{paged_options, scribble, Paged, PAGE};
    let src = s.dir("src");
    let mut data: Vec<u8> = (0..64 * PAGE)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    // The first version is longer: its tail, which only the first
    // snapshot holds, sits in the same pack (one file, one pack under the
    // pack size), so that pack is repacked once the first snapshot goes.
    let mut longer = data.clone();
    longer.extend(noise(7, 40 * PAGE));
    fs::write(src.join("rel"), &longer).unwrap();
    let opts = paged_options(&src);
    let first = repo
        .backup_tree(&opts, &Paged, &NoProgress, |_| Ok(()))
        .unwrap();
    scribble(&mut data, 3, 1);
    scribble(&mut data, 40, 2);
    fs::write(src.join("rel"), &data).unwrap();
    let second = repo
        .backup_tree(&opts, &Paged, &NoProgress, |_| Ok(()))
        .unwrap();
    let patched = second
        .snapshot
        .nodes
        .iter()
        .flat_map(|n| &n.content)
        .filter(|c| c.patch().is_some())
        .count();
    assert_eq!(patched, 2, "two changed pages: two patched pieces");
    (first, second, data)
}

/// Restores `snap` into a new directory `restored`; returns it.
fn restored_tree(
    s: &Scratch,
    repo: &Repository,
    snap: &lifeboat_repo::Snapshot,
) -> lifeboat_repo::Result<PathBuf> {
    let target = s.dir("restored");
    let opts = lifeboat_repo::RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    repo.restore(snap, &opts, &NoProgress).map(|_| target)
}

/// What another process's prune reported.
type Pruned = Arc<std::sync::Mutex<Option<lifeboat_repo::Result<lifeboat_repo::PruneReport>>>>;

/// Makes the next call of `op` on a key under `prefix` through `faults`
/// wait for a prune (`max_unused` 0 %, no delete delay) by another handle
/// on the repository, as if another process ran it at that very moment.
fn prune_when(
    s: &Scratch,
    faults: &lifeboat_storage::FaultStorage,
    op: lifeboat_storage::Op,
    prefix: &str,
) -> Pruned {
    use lifeboat_storage::{FaultAction, FaultRule, Hook};
    let other = s.open_on(s.local());
    let pruned: Pruned = Arc::new(std::sync::Mutex::new(None));
    let hook = {
        let pruned = pruned.clone();
        Hook(Arc::new(move || {
            // Outside the runtime's workers, as every Repository call must be.
            let r = std::thread::scope(|sc| {
                sc.spawn(|| {
                    other.prune(
                        &PruneOptions {
                            max_unused: MaxUnused::Fraction(0.0),
                            ..PruneOptions::default()
                        },
                        &NoProgress,
                    )
                })
                .join()
                .unwrap()
            });
            *pruned.lock().unwrap() = Some(r);
        }))
    };
    faults.add(FaultRule {
        op,
        key_prefix: prefix.into(),
        skip: 0,
        times: Some(1),
        action: FaultAction::Run(hook),
    });
    pruned
}

/// The prune that ran, checked to have repacked and deleted packs.
fn ran(pruned: &Pruned) -> lifeboat_repo::PruneReport {
    let r = pruned
        .lock()
        .unwrap()
        .take()
        .expect("the prune ran")
        .unwrap();
    assert!(
        r.packs_deleted.count > 0 && r.repacked_packs.count > 0,
        "the prune repacked or deleted no pack: {r:?}"
    );
    r
}

/// A verify that read the index before a prune repacked the bases of
/// patched pieces (and deleted the packs its index named) rebuilds those
/// pieces from where they are now: no false damage. Found by the agent
/// soak, where a scheduled `verify --read-data-subset` beside `forget
/// --prune` reported thousands of damaged chunks of PostgreSQL page
/// patches. The prune runs when verify lists the WAL archive: after it read
/// the index and the packs, before it rebuilds the patched pieces.
#[test]
fn a_verify_beside_a_prune_that_moves_patched_pieces_reports_no_damage() {
    use lifeboat_repo::DataSubset;
    use lifeboat_storage::{FaultStorage, Op};

    let s = Scratch::new();
    let faults = Arc::new(FaultStorage::new(s.local()));
    let mut repo = s.init_on(faults.clone());
    // One compressor: the packs follow the data's order, so the first
    // version's tail always shares a pack with kept chunks (with one per
    // core, a thread could take the whole tail and its pack would simply
    // go, with nothing repacked for the race to meet).
    repo.set_compressors(1);
    let (first, second, data) = patched_pair(&s, &repo);

    // Each group of a subset rebuilds its share of the pieces; together,
    // every piece once.
    let whole = repo.verify(true, &NoProgress).unwrap();
    assert!(whole.is_clean(), "{whole:?}");
    let shares: u64 = (1..=3)
        .map(|n| {
            let r = repo
                .verify_data(Some(DataSubset::Part { n, of: 3 }), &NoProgress)
                .unwrap();
            assert!(r.is_clean(), "{r:?}");
            r.pieces_rebuilt
        })
        .sum();
    assert_eq!(shares, whole.pieces_rebuilt);
    assert_eq!(whole.pieces_rebuilt, 2);

    forget(&s, &repo, first.id);
    let pruned = prune_when(&s, &faults, Op::List, "named/");
    let report = repo.verify(true, &NoProgress).unwrap();
    ran(&pruned);
    assert!(report.is_clean(), "a verify beside a prune: {report:?}");
    assert_eq!(report.pieces_rebuilt, 2, "{report:?}");
    // Nothing was lost: the kept snapshot restores byte for byte.
    let target = restored_tree(&s, &repo, &second.snapshot).unwrap();
    assert!(fs::read(target.join("rel")).unwrap() == data);
    assert_clean(&repo);
}

/// A restore that loaded the index before a prune repacked its chunks (and
/// deleted the packs the index named) reads them from where they are now:
/// files and streams restore byte for byte, where before a restore beside a
/// prune failed as if the repository were damaged (exit 3).
#[test]
fn a_restore_beside_a_prune_that_moves_its_chunks_succeeds() {
    use lifeboat_storage::{FaultStorage, Op};

    let s = Scratch::new();
    let faults = Arc::new(FaultStorage::new(s.local()));
    let mut repo = s.init_on(faults.clone());
    // One compressor: the packs follow the data's order, so the first
    // version's tail always shares a pack with kept chunks (with one per
    // core, a thread could take the whole tail and its pack would simply
    // go, with nothing repacked for the race to meet).
    repo.set_compressors(1);
    let (first, second, data) = patched_pair(&s, &repo);
    forget(&s, &repo, first.id);
    let pruned = prune_when(&s, &faults, Op::Get, "packs/");
    let target = restored_tree(&s, &repo, &second.snapshot).expect("a restore beside a prune");
    ran(&pruned);
    assert!(fs::read(target.join("rel")).unwrap() == data);

    // A stream whose pack also holds what only a forgotten snapshot used:
    // one stream (one pack, under the pack size) of the kept data and then
    // more; the next snapshot's stream is the kept data alone, so it uses
    // all but the tail of that pack's chunks.
    let kept: Vec<u8> = noise(11, 700_000);
    let mut longer = kept.clone();
    longer.extend(noise(12, 200_000));
    let old = stream(&repo, "dump", &longer);
    let new = stream(&repo, "dump", &kept);
    forget(&s, &repo, old.id);
    let pruned = prune_when(&s, &faults, Op::Get, "packs/");
    let out = restored_stream(&repo, &new.snapshot);
    ran(&pruned);
    assert!(out == kept, "the stream restored beside a prune differs");
    assert_clean(&repo);
}
