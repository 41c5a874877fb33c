//! The WAL archive: wal-push and wal-fetch, and `pg info`'s walk of it.

use std::fs;
use std::path::Path;

use lifeboat_postgres::archive::wal_fetch;
use lifeboat_postgres::inspect::{self, Gap};
use lifeboat_postgres::PgError;
use lifeboat_repo::RepoError;

use super::*;

fn gap(first: &str, last: &str) -> Gap {
    Gap {
        first: first.into(),
        last: last.into(),
    }
}

/// Two backups, a lost segment between them, a second timeline: `pg info`
/// finds each timeline from where it starts (the oldest backup's first
/// segment; the branch point in the history file), the segments and the
/// gap, and a recoverable window from the end of the oldest backup to the
/// last segment stored after the newest. WAL of another cluster in the
/// same repository neither shows nor fills a gap.
#[test]
fn the_archive_is_walked_per_timeline_with_its_gaps_and_window() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_001);
    let other = Cluster::new(&s, "other", 7_301_000_000_000_000_002);

    c.push(repo, &[seg(1, 2)]);
    let oldest = c.base_backup(repo, 2, 2);
    c.push(repo, &[seg(1, 3), seg(1, 5)]); // 4 never arrives
    let newest = c.base_backup(repo, 5, 5);
    c.push(repo, &[seg(1, 6), seg(1, 7)]);
    let history = "1\t0/8000000\tno recovery target specified\n";
    let r = c
        .push_bytes(repo, "00000002.history", history.as_bytes())
        .unwrap();
    assert_eq!(r.stored, ["00000002.history"]);
    c.push(repo, &[seg(2, 8), seg(2, 9)]);
    other.push(repo, &[seg(1, 4), seg(1, 8)]);
    c.set_stored_time(&s, &seg(1, 7), day(0));
    c.set_stored_time(&s, &seg(2, 9), day(1));

    let info = inspect::info(repo).unwrap();
    let ids: Vec<_> = info.backups.iter().map(|b| b.id.clone()).collect();
    assert_eq!(ids, [oldest.id.to_hex(), newest.id.to_hex()]);
    assert_eq!(info.backups[0].kind, "full");
    assert_eq!(info.backups[1].kind, "incr");
    assert_eq!(info.backups[1].wal_start, seg(1, 5));
    assert_eq!(info.archives.len(), 1, "only clusters with backups");
    let a = &info.archives[0];
    assert_eq!(a.system_identifier, c.system_identifier);
    assert_eq!(a.timelines.len(), 2, "{a:?}");

    let t1 = &a.timelines[0];
    assert_eq!(t1.timeline, 1);
    assert!(t1.history.is_none());
    assert_eq!(t1.first.as_deref(), Some(seg(1, 2).as_str()));
    assert_eq!(t1.last.as_deref(), Some(seg(1, 7).as_str()));
    assert_eq!(t1.segments, 5);
    assert_eq!(t1.gaps, [gap(&seg(1, 4), &seg(1, 4))]);
    assert_eq!(t1.last_stored.as_deref(), Some("2030-01-01T00:00:00Z"));

    let t2 = &a.timelines[1];
    assert_eq!(t2.timeline, 2);
    let h = t2.history.as_ref().unwrap();
    assert_eq!(h.parent, Some(1));
    assert_eq!(h.branch_lsn.unwrap().to_string(), "0/8000000");
    assert_eq!(h.reason.as_deref(), Some("no recovery target specified"));
    assert_eq!(t2.first.as_deref(), Some(seg(2, 8).as_str()));
    assert_eq!(t2.last.as_deref(), Some(seg(2, 9).as_str()));
    assert_eq!(t2.segments, 2);
    assert!(t2.gaps.is_empty());

    assert_eq!(
        a.recoverable_from,
        Some(oldest.snapshot.end_time.to_string())
    );
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-02T00:00:00Z"));

    // `pg check`'s view: the segment the server just finished (0A on
    // timeline 1) must be there; everything from the end of the archive to
    // it is missing.
    let upto = Segment::parse(&seg(1, 10), SEGMENT_SIZE);
    let backups = inspect::backups(repo).unwrap();
    let checked = inspect::archive_info(repo, &c.system_identifier, &backups, upto).unwrap();
    assert_eq!(
        checked.timelines[0].gaps,
        [gap(&seg(1, 4), &seg(1, 4)), gap(&seg(1, 8), &seg(1, 10))]
    );
    assert!(checked.timelines[1].gaps.is_empty());
}

/// A gap after the newest backup ends the recoverable window at the last
/// segment before it: WAL past a gap cannot be replayed.
#[test]
fn a_gap_after_the_newest_backup_ends_the_window_before_it() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_003);
    c.push(repo, &[seg(1, 2), seg(1, 3)]);
    c.base_backup(repo, 2, 3);
    c.push(repo, &[seg(1, 4), seg(1, 5), seg(1, 7)]); // 6 never arrives
    c.set_stored_time(&s, &seg(1, 5), day(0));
    c.set_stored_time(&s, &seg(1, 7), day(1));

    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert_eq!(a.timelines[0].gaps, [gap(&seg(1, 6), &seg(1, 6))]);
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-01T00:00:00Z"));
}

/// A gap on a timeline after the backup's ends the window there too: the
/// WAL stored past it cannot be replayed.
#[test]
fn a_gap_on_a_later_timeline_ends_the_window_before_it() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_006);
    c.push(repo, &[seg(1, 2), seg(1, 3)]);
    c.base_backup(repo, 2, 3);
    c.push(repo, &[seg(1, 4)]);
    c.push_bytes(
        repo,
        "00000002.history",
        b"1\t0/5000000\tno recovery target specified\n",
    )
    .unwrap();
    c.push(repo, &[seg(2, 5), seg(2, 7)]); // 6 never arrives
    c.set_stored_time(&s, &seg(1, 4), day(0));
    c.set_stored_time(&s, &seg(2, 5), day(1));
    c.set_stored_time(&s, &seg(2, 7), day(2));

    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert_eq!(a.timelines[1].gaps, [gap(&seg(2, 6), &seg(2, 6))]);
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-02T00:00:00Z"));
}

/// Recovery reaches a later timeline through its parent up to the branch
/// point: when the parent's WAL stops before it, the window ends where the
/// parent's WAL ends, however much the later timeline holds, and the
/// parent's missing segments show as its gap (`pg check` fails on them).
/// Once they are there, the window runs on along the later timeline.
#[test]
fn a_parent_timeline_that_stops_before_the_branch_point_ends_the_window() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_007);
    c.push(repo, &[seg(1, 2), seg(1, 3)]);
    c.base_backup(repo, 2, 3);
    c.push(repo, &[seg(1, 4)]); // 5 and 6 never arrive
    c.push_bytes(
        repo,
        "00000002.history",
        b"1\t0/7000100\tno recovery target specified\n",
    )
    .unwrap();
    c.push(repo, &[seg(2, 7), seg(2, 8)]);
    c.set_stored_time(&s, &seg(1, 4), day(0));
    c.set_stored_time(&s, &seg(2, 7), day(1));
    c.set_stored_time(&s, &seg(2, 8), day(2));

    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert_eq!(a.timelines.len(), 2, "{a:?}");
    assert_eq!(a.timelines[0].last.as_deref(), Some(seg(1, 4).as_str()));
    assert_eq!(a.timelines[0].gaps, [gap(&seg(1, 5), &seg(1, 6))]);
    assert_eq!(a.timelines[1].first.as_deref(), Some(seg(2, 7).as_str()));
    assert!(a.timelines[1].gaps.is_empty());
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-01T00:00:00Z"));
    let backups = inspect::backups(repo).unwrap();
    let upto = Segment::parse(&seg(2, 9), SEGMENT_SIZE);
    let checked = inspect::archive_info(repo, &c.system_identifier, &backups, upto).unwrap();
    assert_eq!(checked.timelines[0].gaps, [gap(&seg(1, 5), &seg(1, 6))]);
    assert_eq!(checked.timelines[1].gaps, [gap(&seg(2, 9), &seg(2, 9))]);

    c.push(repo, &[seg(1, 5), seg(1, 6)]);
    c.set_stored_time(&s, &seg(1, 5), day(0));
    c.set_stored_time(&s, &seg(1, 6), day(0));
    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert!(a.timelines[0].gaps.is_empty(), "{a:?}");
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-03T00:00:00Z"));
}

/// A timeline that left the backup's before the backup began (a trial
/// restore of an older point) is not one recovery from the backup can
/// follow: the WAL stored on it does not stretch the window.
#[test]
fn a_timeline_branched_before_the_newest_backup_is_not_in_its_window() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_008);
    c.push(
        repo,
        &[seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6)],
    );
    c.push_bytes(
        repo,
        "00000002.history",
        b"1\t0/4000000\tbefore 2029-12-01 00:00:00+00\n",
    )
    .unwrap();
    c.push(repo, &[seg(2, 4), seg(2, 5), seg(2, 6), seg(2, 7)]);
    c.base_backup(repo, 5, 6);
    c.push(repo, &[seg(1, 7)]);
    c.set_stored_time(&s, &seg(1, 7), day(0));
    c.set_stored_time(&s, &seg(2, 7), day(1));

    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert_eq!(a.timelines.len(), 2, "{a:?}");
    assert_eq!(a.timelines[1].last.as_deref(), Some(seg(2, 7).as_str()));
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-01T00:00:00Z"));
}

/// A newest backup whose own WAL is no longer all there restores nothing:
/// the window runs from the newest backup that has all of its, to the
/// first missing segment.
#[test]
fn a_newest_backup_missing_its_own_wal_leaves_the_window_to_an_older_one() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_009);
    c.push(repo, &[seg(1, 2), seg(1, 3)]);
    c.base_backup(repo, 2, 3);
    c.push(repo, &[seg(1, 4), seg(1, 5), seg(1, 7)]); // 6, the newest's last, is lost
    c.base_backup(repo, 5, 6);
    c.set_stored_time(&s, &seg(1, 5), day(0));
    c.set_stored_time(&s, &seg(1, 7), day(1));

    let info = inspect::info(repo).unwrap();
    let a = &info.archives[0];
    assert_eq!(a.timelines[0].gaps, [gap(&seg(1, 6), &seg(1, 6))]);
    assert_eq!(a.recoverable_to.as_deref(), Some("2030-01-01T00:00:00Z"));

    // Without a backup whose WAL is whole, nothing is recoverable.
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_010);
    c.push(repo, &[seg(1, 2), seg(1, 4)]);
    c.base_backup(repo, 2, 3);
    let info = inspect::info(repo).unwrap();
    assert_eq!(info.archives[0].recoverable_to, None);
    assert_eq!(info.archives[0].recoverable_from, None, "nor from");

    // An oldest backup missing its own WAL is not where the window starts.
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_011);
    c.push(repo, &[seg(1, 2), seg(1, 4), seg(1, 5)]); // 3, the oldest's last, is lost
    c.base_backup(repo, 2, 3);
    let newer = c.base_backup(repo, 4, 5);
    let info = inspect::info(repo).unwrap();
    assert_eq!(
        info.archives[0].recoverable_from,
        Some(newer.snapshot.end_time.to_string())
    );
}

/// wal-push stores a file once (the same file again is success, another
/// file of that name is refused); wal-fetch brings back the bytes pushed,
/// says "not there" for what is not (another cluster's WAL included), and
/// names a stored segment that is damaged, as `verify --read-data` does.
#[test]
fn wal_push_stores_once_and_wal_fetch_returns_the_same_bytes() {
    let s = Scratch::new();
    let repo = &s.repo;
    let c = Cluster::new(&s, "pgdata", 7_301_000_000_000_000_004);
    let other = Cluster::new(&s, "other", 7_301_000_000_000_000_005);
    let name = seg(1, 3);
    let content = c.content(&name);

    let first = c.push_bytes(repo, &name, &content).unwrap();
    assert_eq!(first.stored, std::slice::from_ref(&name));
    assert!(first.bytes > 0);
    let again = c.push_bytes(repo, &name, &content).unwrap();
    assert_eq!(again.already, std::slice::from_ref(&name));
    assert!(again.stored.is_empty());
    let err = c.push_bytes(repo, &name, b"other bytes").unwrap_err();
    assert!(
        matches!(err, PgError::Repo(RepoError::Conflict { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&name), "{err}");
    let err = c.push_bytes(repo, "not-a-wal-file", b"x").unwrap_err();
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Usage, "{err}");

    let dest = Path::new("pg_wal/RECOVERYXLOG");
    assert!(wal_fetch(repo, &c.pgdata, &name, dest).unwrap());
    assert!(fs::read(c.pgdata.join(dest)).unwrap() == content);
    assert!(!wal_fetch(repo, &c.pgdata, &seg(1, 4), dest).unwrap());
    assert!(!wal_fetch(repo, &other.pgdata, &name, dest).unwrap());

    let key = repo.named_key(&namespace(&c.system_identifier), &name);
    let mut stored = fs::read(s.object(&key)).unwrap();
    let mid = stored.len() / 2;
    stored[mid] ^= 1;
    fs::write(s.object(&key), stored).unwrap();
    let err = wal_fetch(repo, &c.pgdata, &name, dest).unwrap_err();
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Damage, "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    let report = repo.verify(true, &NoProgress).unwrap();
    assert_eq!(report.named_checked, 1);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].object, key);
}
