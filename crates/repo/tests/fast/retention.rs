//! Retention on a real repository: summaries read what `forget` needs,
//! holds are stored and released, and the benchmark generator.

use super::*;
use lifeboat_repo::retention::{apply, Candidate, Policy, TimeZone};
use lifeboat_repo::Timestamp;

/// Snapshots of one small directory, recorded at `times`.
fn snapshots_at(
    s: &Scratch,
    repo: &Repository,
    times: &[Timestamp],
) -> Vec<lifeboat_repo::SnapshotId> {
    let src = s.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"retention").unwrap();
    times
        .iter()
        .map(|t| {
            let opts = FilesBackupOptions {
                paths: vec![src.clone()],
                hostname: "h".into(),
                time: Some(*t),
                ..FilesBackupOptions::default()
            };
            repo.backup_files(&opts, &NoProgress).unwrap().id
        })
        .collect()
}

#[test]
fn summaries_holds_and_deletes_are_what_forget_needs() {
    let s = Scratch::new();
    let repo = s.init();
    let t = |x: &str| x.parse::<Timestamp>().unwrap();
    let times = [
        t("2026-11-27T10:00:00Z"),
        t("2026-11-26T10:00:00Z"),
        t("2026-11-26T09:00:00Z"),
    ];
    let ids = snapshots_at(&s, &repo, &times);
    let sums = repo.snapshot_summaries().unwrap();
    assert_eq!(sums.len(), 3);
    assert_eq!(sums[0].start_time, times[2], "oldest first");
    assert!(sums
        .iter()
        .all(|x| x.source_kind == "files" && x.hostname == "h"));

    let hold = repo
        .hold(&ids[2].to_hex()[..10], "case 42", None, "h")
        .unwrap();
    assert_eq!(hold.snapshot, ids[2]);
    assert_eq!(repo.holds().unwrap(), vec![hold.clone()]);
    let none: Vec<String> = Vec::new();
    let c: Vec<Candidate<'_>> = sums
        .iter()
        .map(|x| Candidate {
            id: x.id,
            time: x.start_time,
            tags: &none,
            hold: (x.id == hold.snapshot).then_some(hold.reason.as_str()),
        })
        .collect();
    let p = Policy {
        keep_last: Some(1),
        ..Policy::default()
    };
    let d = apply(&p, &TimeZone::UTC, &c);
    let doomed: Vec<_> = d.iter().filter(|x| !x.keep()).map(|x| x.id).collect();
    assert_eq!(doomed, vec![ids[1]]);
    repo.delete_snapshots(&doomed).unwrap();
    let left: Vec<_> = repo
        .snapshot_summaries()
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(left, vec![ids[2], ids[0]]);
    // A deleted snapshot cannot be held; the held one is released.
    assert!(repo.hold(&ids[1].to_hex(), "x", None, "h").is_err());
    assert_eq!(
        repo.release(&ids[2].to_hex()[..8]).unwrap().reason,
        "case 42"
    );
    assert!(repo.holds().unwrap().is_empty());
    assert!(repo.release(&ids[2].to_hex()).is_err());
}

/// The `forget` benchmark's repository: `LIFEBOAT_BENCH_DIR/repo`, 10 000
/// small snapshots 2.6 hours apart (about 3 years) in 4 series, passphrase
/// "a test passphrase". Run: `LIFEBOAT_BENCH_DIR=/tmp/fb cargo test
/// --release -p lifeboat-repo --test fast -- --ignored forget_bench`.
#[test]
#[ignore = "benchmark generator"]
fn forget_bench_generate() {
    let Some(dir) = std::env::var_os("LIFEBOAT_BENCH_DIR") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::new(Path::new(&dir).join("repo")));
    let repo =
        Repository::init(storage, rt.handle().clone(), &password(), &small_options()).unwrap();
    let src = Path::new(&dir).join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"bench").unwrap();
    let base = repo
        .backup_files(
            &FilesBackupOptions {
                paths: vec![src],
                hostname: "bench".into(),
                ..FilesBackupOptions::default()
            },
            &NoProgress,
        )
        .unwrap()
        .id;
    let template: Snapshot = repo.find_snapshot(&base.to_hex()).unwrap().snapshot;
    let start: Timestamp = "2023-12-01T00:00:00Z".parse().unwrap();
    for i in 1..10_000i64 {
        let mut s = template.clone();
        s.start_time = start.checked_add(jiff_minutes(i * 156)).unwrap();
        s.end_time = s.start_time;
        s.source_name = format!("series-{}", i % 4);
        repo.save_snapshot(&s).unwrap();
    }
}

fn jiff_minutes(m: i64) -> lifeboat_repo::retention::Span {
    lifeboat_repo::retention::Span::new().minutes(m)
}

/// The agent lists only the stretch of job records it still takes in:
/// `job_keys_since` gives exactly the records of runs started from then on
/// (block by block over a day and a half, or over weeks whole), and
/// `trim_jobs` deletes exactly those before its cutoff.
#[test]
fn job_keys_since_lists_only_the_stretch_asked_for() {
    let s = Scratch::new();
    let repo = s.init();
    let now = Timestamp::now().as_second();
    let hours = [24 * 40, 24 * 10, 50, 37, 35, 20, 3, 0];
    let mut keys = Vec::new();
    for h in hours {
        let started = Timestamp::from_second(now - h * 3600).unwrap();
        let r = lifeboat_repo::JobRecord::new("redis.cache.backup", "backup", started).unwrap();
        keys.push(repo.record_job(&r).unwrap());
    }
    let since = |h: i64| {
        repo.job_keys_since(Timestamp::from_second(now - h * 3600).unwrap())
            .unwrap()
    };
    // 36 h: the runs 35, 20, 3 and 0 hours ago.
    assert_eq!(since(36), keys[4..].to_vec());
    // 11 days (listed whole, then filtered): all but the oldest.
    assert_eq!(since(24 * 11), keys[1..].to_vec());
    assert_eq!(repo.job_keys().unwrap(), keys);
    let cutoff = Timestamp::from_second(now - 48 * 3600).unwrap();
    assert_eq!(repo.trim_jobs(cutoff).unwrap(), 3);
    assert_eq!(repo.job_keys().unwrap(), keys[3..].to_vec());
}
