//! Prune against real repositories (local disk and Garage S3): killed at any
//! point, failing on storage errors midway, and running beside backups and
//! verifies, it loses nothing a kept snapshot needs and reports no false
//! damage; the next prune finishes what a killed one began.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::{Credential, MaxUnused, NoProgress, PruneOptions, Repository};
use lifeboat_storage::{ErrorKind, FaultAction, FaultRule, FaultStorage, Op};

use crate::harness::*;

/// Trials of a killed prune per backend.
const KILL_TRIALS: u64 = 26;

/// Writes generation `i` of a source directory: five files of 300 KiB, file
/// `k` changing every `k + 1` generations, so consecutive backups share most
/// chunks and a prune finds packs both wholly and partly unused.
fn generation(dir: &Path, i: u64) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for k in 0..5u64 {
        fs::write(dir.join(format!("f{k}")), content(i, k)).unwrap();
    }
}

fn content(i: u64, k: u64) -> Vec<u8> {
    random_bytes(300 << 10, k * 1000 + i / (k + 1))
}

/// A series of backups of one directory and the generations they hold.
struct Series {
    src: PathBuf,
    kept: Vec<(String, u64)>,
    next: u64,
}

impl Series {
    fn new(env: &Env, name: &str) -> Series {
        Series {
            src: env.path(name),
            kept: Vec::new(),
            next: 0,
        }
    }

    fn backup(&mut self, env: &Env) {
        generation(&self.src, self.next);
        let j = env.json(&["files", "backup", self.src.to_str().unwrap()]);
        self.kept.push((snapshot_id(&j), self.next));
        self.next += 1;
    }

    /// Removes the oldest snapshot object, as `forget` does.
    fn forget_oldest(&mut self, env: &Env) {
        let (id, _) = self.kept.remove(0);
        env.block(env.storage().delete(&format!("snapshots/{id}")))
            .unwrap();
    }

    /// `verify --read-data` is clean and every kept snapshot restores byte
    /// for byte.
    fn check(&self, env: &Env, what: &str) {
        let v = env.json(&["verify", "--read-data"]);
        assert_eq!(v["clean"], true, "{what}: {v}");
        for (id, i) in &self.kept {
            let target = env.path("check");
            let _ = fs::remove_dir_all(&target);
            env.ok(&["files", "restore", id, "--target", target.to_str().unwrap()]);
            let root = restored(&target, &self.src);
            for k in 0..5u64 {
                assert!(
                    fs::read(root.join(format!("f{k}"))).unwrap() == content(*i, k),
                    "{what}: snapshot {id} (generation {i}) file f{k} differs"
                );
            }
        }
    }
}

/// A small deterministic generator (xorshift), so a failing trial can be
/// replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const POINTS: &[&str] = &[
    "prune-after-repack=abort",
    "prune-after-index=abort",
    "prune-after-mark=abort",
    "prune-delete-pack=abort@1",
    "prune-delete-pack=abort@3",
    "prune-after-packs-deleted=abort",
];

/// Runs `lifeboat args` with failpoints set; it dies there or, when the
/// prune never reaches the point, ends normally.
fn run_to_failpoint(env: &Env, points: &str, args: &[&str]) {
    let mut c = Command::new("sh");
    c.args(["-c", "ulimit -c 0 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_lifeboat"));
    let out = env
        .with_env(c)
        .env("LIFEBOAT_FAILPOINTS", points)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        assert_aborted(&out, points, args);
    }
}

/// Prune killed at failpoints, and `forget --prune` killed at random
/// moments (SIGKILL), trial after trial: after each kill `verify
/// --read-data` is clean and every kept snapshot restores byte for byte;
/// the next forget and prune then finish the job (no mark left, the policy's
/// three snapshots).
fn a_prune_killed_anywhere_loses_nothing_and_the_next_one_finishes(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let mut s = Series::new(env, "src");
    let mut rng = Rng(0x5eed_0f9e);
    for _ in 0..3 {
        s.backup(env);
    }
    let forget = ["forget", "--keep-last", "3", "--prune"];
    for trial in 0..KILL_TRIALS {
        s.backup(env);
        let max_unused = if trial % 2 == 0 { "0%" } else { "5%" };
        let args = ["prune", "--delete-delay", "0s", "--max-unused", max_unused];
        let how = if trial % 4 == 3 {
            // `forget --prune` (the policy keeps the newest 3) killed by
            // SIGKILL at a random moment: before, during or after it deletes
            // the oldest snapshot, or in its prune.
            s.kept.remove(0);
            let ms = rng.below(600);
            let mut child = env.spawn(&forget);
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill();
            let _ = child.wait();
            format!("trial {trial}: forget --prune, SIGKILL after {ms} ms")
        } else {
            s.forget_oldest(env);
            let point = POINTS[rng.below(POINTS.len() as u64) as usize];
            run_to_failpoint(env, point, &args);
            format!("trial {trial}: {point}")
        };
        s.check(env, &how);
        env.ok(&["forget", "--keep-last", "3"]);
        env.ok(&args);
        assert!(
            env.keys("marks/").is_empty(),
            "{how}: the next prune left a mark"
        );
        assert_eq!(env.keys("snapshots/").len(), 3, "{how}");
    }
    s.check(env, "at the end");
}
on_every_backend!(a_prune_killed_anywhere_loses_nothing_and_the_next_one_finishes);

/// Storage errors in the middle of a prune (a put or a delete of a pack, an
/// index object or the mark fails for good): the prune fails, nothing kept
/// is lost, and the next prune finishes.
fn a_prune_that_meets_storage_errors_loses_nothing(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let mut s = Series::new(env, "src");
    for _ in 0..3 {
        s.backup(env);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let faults: &[(Op, &str, u32)] = &[
        (Op::Put, "index/", 0),
        (Op::Put, "marks/", 0),
        (Op::Delete, "packs/", 0),
        (Op::Delete, "packs/", 2),
        (Op::Delete, "index/", 0),
        (Op::Delete, "marks/", 0),
        (Op::Put, "packs/", 0),
    ];
    let mut failed = 0;
    for (trial, &(op, prefix, skip)) in faults.iter().enumerate() {
        s.backup(env);
        s.forget_oldest(env);
        let f = Arc::new(FaultStorage::new(env.storage()));
        let repo = Repository::open(
            f.clone(),
            rt.handle().clone(),
            &[Credential::passphrase(PASSWORD.as_bytes().to_vec())],
        )
        .unwrap();
        f.add(FaultRule {
            op,
            key_prefix: prefix.into(),
            skip,
            times: None,
            action: FaultAction::Fail(ErrorKind::Permanent),
        });
        let r = repo.prune(
            &PruneOptions {
                max_unused: MaxUnused::Fraction(0.0),
                ..PruneOptions::default()
            },
            &NoProgress,
        );
        let what = format!("trial {trial}: {op:?} {prefix} after {skip}");
        // (A rule whose calls never come — fewer pack deletions than its
        // skip — lets the prune succeed.)
        if r.is_err() {
            failed += 1;
        }
        drop(repo);
        s.check(env, &what);
        env.ok(&["prune", "--delete-delay", "0s"]);
        assert!(env.keys("marks/").is_empty(), "{what}");
    }
    assert!(
        failed >= 4,
        "only {failed} of {} prunes met their storage error",
        faults.len()
    );
    s.check(env, "at the end");
}
on_every_backend!(a_prune_that_meets_storage_errors_loses_nothing);

/// Backups, verifies and prunes at once: two series are backed up over and
/// over while their oldest snapshots are forgotten and pruned and `verify`
/// runs; `verify` never reports damage, and at the end every kept snapshot
/// restores byte for byte.
fn backups_verifies_and_prunes_at_once_lose_nothing(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let series: Vec<Arc<std::sync::Mutex<Series>>> = ["a", "b"]
        .iter()
        .map(|n| Arc::new(std::sync::Mutex::new(Series::new(env, n))))
        .collect();
    for s in &series {
        s.lock().unwrap().backup(env);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for s in &series {
            let s = s.clone();
            let done = &done;
            scope.spawn(move || {
                for _ in 0..15 {
                    s.lock().unwrap().backup(env);
                }
                done.store(true, Ordering::SeqCst);
            });
        }
        scope.spawn(|| {
            let mut rounds = 0;
            while !done.load(Ordering::SeqCst) || rounds < 3 {
                let v = env.json(&["verify", "--read-data"]);
                assert_eq!(v["clean"], true, "verify racing backups and prunes: {v}");
                rounds += 1;
            }
        });
        let mut prunes = 0;
        let mut deleted = 0;
        while !done.load(Ordering::SeqCst) || prunes < 3 {
            for s in &series {
                let mut s = s.lock().unwrap();
                if s.kept.len() > 2 {
                    s.forget_oldest(env);
                }
            }
            let r = env.json(&["prune", "--delete-delay", "0s", "--max-unused", "0%"]);
            deleted += r["packs_deleted"]["count"].as_u64().unwrap();
            prunes += 1;
        }
        assert!(deleted > 0, "the prunes racing the backups deleted nothing");
    });
    env.ok(&["prune", "--delete-delay", "0s"]);
    for s in &series {
        s.lock()
            .unwrap()
            .check(env, "after backups and prunes at once");
    }
}
on_every_backend!(backups_verifies_and_prunes_at_once_lose_nothing);

/// Bad input: `--max-unused` out of range, a bad delay: exit 2, named.
#[test]
fn prune_refuses_bad_settings_with_exit_2() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    for (args, says) in [
        (&["prune", "--max-unused", "150%"][..], "out of range"),
        (&["prune", "--max-unused", "lots"][..], "--max-unused"),
        (&["prune", "--delete-delay", "soon"][..], "--delete-delay"),
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
