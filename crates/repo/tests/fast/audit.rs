//! The audit log on a real repository: what a command's record holds, many
//! writers at once, and tampering with the stored objects found and named.

use std::collections::BTreeMap;

use super::*;
use lifeboat_repo::{AuditContext, AuditOutcome, AuditProblem};

/// The repository opened again as one command: its own handle, the test's
/// witness directory, a context.
fn as_command(s: &Scratch, command: &str, args: &[&str]) -> Repository {
    let repo = s.open_on(s.local());
    repo.set_audit_witness_dir(Some(s.path().join("cache")));
    repo.set_audit_context(AuditContext {
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        user: "alice".into(),
        host: "db1".into(),
    });
    repo
}

fn record(repo: &Repository) {
    repo.append_audit(AuditOutcome::Success, BTreeMap::new())
        .unwrap()
        .unwrap();
}

/// The files of the log, by sequence number (their keys sort so).
fn log_files(s: &Scratch) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let root = s.repo_dir().join("audit");
    for block in fs::read_dir(&root).unwrap() {
        for f in fs::read_dir(block.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files.sort();
    files
}

#[test]
fn a_record_says_who_read_wrote_and_deleted_what_and_the_chain_verifies() {
    let s = Scratch::new();
    s.init();
    let src = s.dir("src");
    fs::write(src.join("customers.csv"), b"alice,bob\n").unwrap();

    let backup = as_command(&s, "files backup", &["src"]);
    let made = backup_files(&backup, &[&src]).unwrap();
    backup
        .auditor()
        .finish(AuditOutcome::Success, None, BTreeMap::new())
        .unwrap();

    let restore = as_command(&s, "files restore", &["--target", "out", "latest"]);
    let entry = restore.find_snapshot("latest").unwrap();
    restore_into(
        &restore,
        &entry.snapshot,
        &s.dir("out"),
        lifeboat_repo::Overwrite::Never,
        &[],
    )
    .unwrap();
    restore
        .auditor()
        .finish(AuditOutcome::Success, None, BTreeMap::new())
        .unwrap();

    let forget = as_command(&s, "forget", &["--keep-last", "0"]);
    forget.delete_snapshots(&[made.id]).unwrap();
    forget
        .auditor()
        .finish(
            AuditOutcome::Failed,
            Some("a later step failed".into()),
            BTreeMap::new(),
        )
        .unwrap();

    let reader = as_command(&s, "audit", &[]);
    let records: Vec<_> = reader
        .audit_records(None)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect();
    // The backup; the restore's `reading` record before its data, then its
    // end; the forget.
    let seen: Vec<(&str, AuditOutcome)> = records
        .iter()
        .map(|r| (r.command.as_str(), r.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            ("files backup", AuditOutcome::Success),
            ("files restore", AuditOutcome::Reading),
            ("files restore", AuditOutcome::Success),
            ("forget", AuditOutcome::Failed),
        ]
    );
    assert_eq!(records[0].written, [made.id]);
    assert!(records[0].read.is_empty());
    assert_eq!(records[1].read, [made.id]);
    assert_eq!(records[2].read, [made.id]);
    assert_eq!(records[2].args, ["--target", "out", "latest"]);
    assert_eq!(records[3].deleted, [made.id]);
    assert_eq!(records[3].error.as_deref(), Some("a later step failed"));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.parents.len(), usize::from(i > 0));
        assert_eq!((r.user.as_str(), r.host.as_str()), ("alice", "db1"));
        assert_eq!(r.key_slot, reader.opened_slot());
    }
    // The stored bytes say nothing in clear.
    for f in log_files(&s) {
        let bytes = fs::read(&f).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"alice"), "{f:?}");
    }
    let report = reader.verify_audit().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.records, report.max_seq, report.heads), (4, 4, 1));
    assert_eq!(report.witnessed.map(|w| w.0), Some(4));
}

#[test]
fn writers_at_once_lose_no_record_and_the_chain_joins_again() {
    let s = Scratch::new();
    s.init();
    std::thread::scope(|scope| {
        for w in 0..4 {
            let s = &s;
            scope.spawn(move || {
                let repo = as_command(s, "pg wal-push", &[&format!("writer-{w}")]);
                for _ in 0..10 {
                    record(&repo);
                }
            });
        }
    });
    let repo = as_command(&s, "status", &[]);
    let report = repo.verify_audit().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, 40);
    // One more record follows every head: one head again.
    record(&repo);
    let report = repo.verify_audit().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.records, report.heads), (41, 1));
    let names = repo.audit_names().unwrap();
    assert_eq!(names.last().unwrap().seq, report.max_seq);
    for w in 0..4 {
        let arg = format!("writer-{w}");
        let n = repo
            .audit_records(None)
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.as_ref().unwrap().args == [arg.clone()])
            .count();
        assert_eq!(n, 10, "{arg}");
    }
}

#[test]
fn a_removed_altered_reordered_or_truncated_record_is_found_and_named() {
    let s = Scratch::new();
    s.init();
    let repo = as_command(&s, "backup", &[]);
    for _ in 0..6 {
        record(&repo);
    }
    let clean = |repo: &Repository| {
        let r = repo.verify_audit().unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    };
    clean(&repo);
    let files = log_files(&s);
    assert_eq!(files.len(), 6);
    let key = |p: &Path| {
        p.strip_prefix(s.repo_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let original: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let put_back = || {
        for (f, b) in files.iter().zip(&original) {
            fs::write(f, b).unwrap();
        }
    };

    // Removed from the middle: the next record names it.
    fs::remove_file(&files[2]).unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert!(
        problems.iter().any(|p| matches!(p, AuditProblem::Removed { seq: 3, named_by, .. } if *named_by == key(&files[3]))),
        "{problems:?}"
    );
    put_back();
    clean(&repo);

    // Altered: one byte of the sealed body.
    let mut bytes = original[1].clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&files[1], &bytes).unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert_eq!(
        problems,
        [AuditProblem::Altered {
            key: key(&files[1]),
            reason: "its bytes do not hash to its name".into()
        }]
    );
    assert!(problems[0].to_string().contains("was altered"));
    put_back();

    // Reordered: records 2 and 4 swap places.
    fs::write(&files[1], &original[3]).unwrap();
    fs::write(&files[3], &original[1]).unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    for (at, other) in [(1, 3), (3, 1)] {
        assert!(
            problems.contains(&AuditProblem::Moved {
                key: key(&files[at]),
                reason: format!("it holds the bytes of record {}", key(&files[other])),
            }),
            "{problems:?}"
        );
    }
    put_back();
    clean(&repo);

    // Moved under a later sequence number: its own seq says otherwise.
    let renamed = files[4]
        .to_string_lossy()
        .replace("/000000000005-", "/000000000009-");
    fs::rename(&files[4], &renamed).unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert!(
        problems.iter().any(
            |p| matches!(p, AuditProblem::Moved { key: k, .. } if k.contains("/000000000009-"))
        ),
        "{problems:?}"
    );
    fs::rename(&renamed, &files[4]).unwrap();
    clean(&repo);

    // The newest record removed: no later record names it, the witness does.
    fs::remove_file(&files[5]).unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert!(
        matches!(
            problems.as_slice(),
            [AuditProblem::Truncated { seq: 6, .. }]
        ),
        "{problems:?}"
    );
    assert!(problems[0].to_string().contains("removed from the end"));
    put_back();
    clean(&repo);

    // Stray objects are named too, and nothing was ever lost.
    fs::write(s.repo_dir().join("audit/00000000/notes.txt"), b"x").unwrap();
    let problems = repo.verify_audit().unwrap().problems;
    assert_eq!(
        problems,
        [AuditProblem::Stray {
            key: "audit/00000000/notes.txt".into()
        }]
    );
}
