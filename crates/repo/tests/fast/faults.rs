//! Storage faults injected under the repository (`FaultStorage`), with and
//! without the retry layer above them (`RetryStorage`).

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::{Overwrite, RepoError, Repository};
use lifeboat_storage::{
    DynStorage, ErrorKind, FaultAction, FaultRule, FaultStorage, Op, RetryPolicy, RetryStorage,
};

use super::*;

/// A repository on local disk reached through a fault injector, itself
/// reached directly (`bare`) or through a retry layer (`retried`).
struct Faulty {
    faults: Arc<FaultStorage>,
    bare: DynStorage,
    retried: DynStorage,
}

impl Faulty {
    fn new(s: &Scratch) -> Faulty {
        let faults = Arc::new(FaultStorage::new(s.local()));
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(60),
        };
        Faulty {
            bare: faults.clone(),
            retried: Arc::new(RetryStorage::new(faults.clone(), policy)),
            faults,
        }
    }

    /// The next `times` calls of `op` on keys starting with `prefix` fail
    /// with `kind` (every one when `None`).
    fn fail(&self, op: Op, prefix: &str, kind: ErrorKind, times: Option<u32>) {
        self.faults.clear();
        self.faults.add(FaultRule {
            op,
            key_prefix: prefix.into(),
            skip: 0,
            times,
            action: FaultAction::Fail(kind),
        });
    }
}

/// A tree of six files over several packs; returns the source directory.
fn some_files(s: &Scratch) -> PathBuf {
    let src = s.dir("src");
    for i in 0..6u64 {
        fs::write(src.join(format!("f{i}")), noise(40 + i, 500_000)).unwrap();
    }
    src
}

/// Pack reads that fail twice with a transient error: without the retry
/// layer the restore fails (the fault is real, and named), with it the
/// restore succeeds byte for byte.
#[test]
fn a_transient_read_failure_is_retried_and_the_restore_succeeds() {
    let s = Scratch::new();
    let f = Faulty::new(&s);
    let repo = s.init_on(f.retried.clone());
    let src = some_files(&s);
    let out = backup_files(&repo, &[&src]).unwrap();

    f.fail(Op::Get, "packs/", ErrorKind::Transient, Some(2));
    let bare = s.open_on(f.bare.clone());
    let target = s.path().join("without-retry");
    let err = restore_into(&bare, &out.snapshot, &target, Overwrite::Refuse, &[]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("injected fault") && text.contains("packs/"),
        "{text}"
    );
    assert!(partial_files(&target).is_empty());

    f.fail(Op::Get, "packs/", ErrorKind::Transient, Some(2));
    let target = s.path().join("restore");
    restore_into(&repo, &out.snapshot, &target, Overwrite::Refuse, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

/// A pack read that fails once with a permanent error is not retried (a
/// second attempt would have succeeded): the restore fails naming the
/// object, leaves every file under its own name complete and no temporary
/// file; run again once the store answers, it finishes the job.
#[test]
fn a_permanent_read_failure_names_the_object_and_leaves_only_complete_files() {
    let s = Scratch::new();
    let f = Faulty::new(&s);
    let repo = s.init_on(f.retried.clone());
    let src = some_files(&s);
    let out = backup_files(&repo, &[&src]).unwrap();

    f.fail(Op::Get, "packs/", ErrorKind::Permanent, Some(1));
    let target = s.path().join("restore");
    let err = restore_into(&repo, &out.snapshot, &target, Overwrite::Refuse, &[]).unwrap_err();
    let RepoError::RestoreIncomplete { cause, missing } = &err else {
        panic!("expected RestoreIncomplete, got {err}");
    };
    let RepoError::Storage(e) = cause.as_ref() else {
        panic!("expected a storage error, got {cause}");
    };
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.key.starts_with("packs/"), "{e}");
    assert!(err.to_string().contains(&e.key), "{err}");
    assert!(!err.is_retryable());
    assert!(!missing.is_empty());

    assert!(
        partial_files(&target).is_empty(),
        "{:?}",
        files_below(&target)
    );
    let back = restored(&target, &src);
    for i in 0..6u64 {
        let name = format!("f{i}");
        match fs::read(back.join(&name)) {
            Ok(bytes) => assert!(bytes == noise(40 + i, 500_000), "{name} is complete"),
            Err(_) => assert!(
                missing.iter().any(|m| m.ends_with(&format!("src/{name}"))),
                "{name} is neither restored nor listed: {missing:?}"
            ),
        }
    }

    // The rule is spent: the store answers again.
    restore_into(&repo, &out.snapshot, &target, Overwrite::Always, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

/// Pack uploads that fail: a transient failure is retried and the backup
/// succeeds; a permanent one fails the backup naming the object, and no
/// snapshot is recorded. Once the store takes writes again, a backup
/// succeeds and the repository verifies clean.
#[test]
fn a_failed_upload_fails_the_backup_and_records_nothing() {
    let s = Scratch::new();
    let f = Faulty::new(&s);
    let repo: Repository = s.init_on(f.retried.clone());
    let src = some_files(&s);

    f.fail(Op::Put, "packs/", ErrorKind::Transient, Some(2));
    let first = backup_files(&repo, &[&src]).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1);

    fs::write(src.join("new"), noise(99, 300_000)).unwrap();
    f.fail(Op::Put, "packs/", ErrorKind::Permanent, None);
    let err = backup_files(&repo, &[&src]).unwrap_err();
    let RepoError::Storage(e) = &err else {
        panic!("expected a storage error, got {err}");
    };
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.key.starts_with("packs/"), "{e}");
    assert_eq!(e.op, "put");
    let ids: Vec<_> = repo.snapshots().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, [first.id], "no snapshot for the failed backup");

    f.faults.clear();
    let second = backup_files(&repo, &[&src]).unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    let report = repo.verify(true, &NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let target = s.path().join("restore");
    restore_into(&repo, &second.snapshot, &target, Overwrite::Refuse, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

/// A pack that cannot be read while `verify --read-data` checks the packs
/// in parallel (the second one read fails; the others read fine): verify
/// fails with that error, naming the pack, and no report (which would
/// look clean with one pack's worth of checks missing) comes back. Once
/// the store answers again, the repository verifies clean.
#[test]
fn a_pack_that_cannot_be_read_fails_verify_instead_of_a_partial_report() {
    let s = Scratch::new();
    let f = Faulty::new(&s);
    let repo = s.init_on(f.bare.clone());
    let src = some_files(&s);
    backup_files(&repo, &[&src]).unwrap();
    assert!(s.repo_files("packs").len() > 2);

    f.faults.clear();
    f.faults.add(FaultRule {
        op: Op::Get,
        key_prefix: "packs/".into(),
        skip: 1,
        times: Some(1),
        action: FaultAction::Fail(ErrorKind::Permanent),
    });
    let err = repo.verify(true, &NoProgress).unwrap_err();
    let RepoError::Storage(e) = &err else {
        panic!("expected a storage error, got {err}");
    };
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.key.starts_with("packs/"), "{e}");

    f.faults.clear();
    let report = repo.verify(true, &NoProgress).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// A snapshot deleted between the listing and its read (a `forget` running
/// meanwhile) is left out of `snapshots()`: a backup choosing its parent
/// then does not fail (found by `prune::backups_verifies_and_prunes_at_once_lose_nothing`).
#[test]
fn a_snapshot_forgotten_while_it_is_listed_is_left_out() {
    let s = Scratch::new();
    let f = Faulty::new(&s);
    let repo = s.init_on(f.bare.clone());
    let src = some_files(&s);
    let first = backup_files(&repo, &[&src]).unwrap();
    backup_files(&repo, &[&src]).unwrap();
    // Listed, then gone when read.
    f.fail(
        Op::Get,
        &format!("snapshots/{}", first.id.to_hex()),
        ErrorKind::NotFound,
        None,
    );
    let list = repo.snapshots().unwrap();
    assert_eq!(list.len(), 1);
    assert_ne!(list[0].id, first.id);
    let third =
        backup_files(&repo, &[&src]).expect("a backup does not fail on a forgotten snapshot");
    assert!(third.snapshot.parent.is_some());
}
