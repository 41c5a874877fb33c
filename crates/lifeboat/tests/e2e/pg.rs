//! PostgreSQL end to end: real clusters started by the harness, archiving
//! into a real repository through `lifeboat pg wal-push`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat_scenarios::sandbox::pg as sandbox;
use lifeboat_testkit::postgres::{as_owner, give_to_owner, LocalServer, PgCluster};

/// A repository the `postgres` user can write (its archive_command does),
/// opened with a key file, and a copy of the lifeboat binary it can run.
pub struct PgEnv {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub key: PathBuf,
    pub exe: PathBuf,
}

impl PgEnv {
    /// Damages every blob of every pack of the repository.
    pub fn damage_every_pack(&self) {
        let packs = crate::harness::files_below(&self.repo.join("packs"));
        assert!(!packs.is_empty(), "no packs to damage");
        for p in packs {
            let mut bytes = fs::read(&p).unwrap();
            // One flipped bit every 16 bytes: every sealed blob (at least
            // a 12-byte nonce and a 16-byte tag) is damaged, whichever
            // items share the pack and in whatever order they were packed.
            for b in bytes.iter_mut().step_by(16) {
                *b ^= 0x01;
            }
            fs::write(&p, bytes).unwrap();
        }
    }

    pub fn new() -> PgEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        let key = dir.path().join("key");
        fs::write(&key, "0123456789abcdef0123456789abcdef-pg-tests\n").unwrap();
        // The test binary's own path may sit where the postgres user cannot
        // reach: archive_command runs a copy beside the repository.
        let exe = dir.path().join("lifeboat");
        fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &exe).unwrap();
        let env = PgEnv {
            dir,
            repo,
            key,
            exe,
        };
        env.ok(&["repo", "init"]);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        give_to_owner(env.dir.path()).unwrap();
        env
    }

    /// lifeboat with a clean environment and no repository or key given.
    pub fn bare(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path());
        c
    }

    /// lifeboat on this repository with its key.
    pub fn cmd(&self) -> Command {
        let mut c = self.bare();
        c.arg("--repo")
            .arg(&self.repo)
            .arg("--key-file")
            .arg(&self.key);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run lifeboat")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        crate::harness::succeeded(args, self.run(args))
    }

    pub fn archive_command(&self) -> String {
        format!(
            "archive_mode = on\narchive_command = '{} --repo {} --key-file {} pg wal-push %p'\narchive_timeout = 0\n",
            self.exe.display(),
            self.repo.display(),
            self.key.display()
        )
    }

    /// A new empty directory the postgres user owns, for a restore.
    pub fn restore_dir(&self) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        give_to_owner(d.path()).unwrap();
        d
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Forces a WAL switch and waits until the archiver has stored the segment
/// that held everything written so far.
pub(crate) fn archive_now(pg: &LocalServer) {
    sandbox::archive_now(pg, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until the archiver has stored `seg` (or a later segment).
fn wait_archived(pg: &LocalServer, seg: &str) {
    sandbox::wait_archived(pg, seg, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

/// Starts a restored cluster and waits until recovery has ended (promoted).
fn start_restored(restore: tempfile::TempDir) -> PgCluster {
    let pgdata = restore.path().join("data");
    let mut pg = PgCluster::adopt(restore, pgdata).unwrap();
    pg.start_server().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("postgres", "select pg_is_in_recovery()").as_deref() != Ok("f") {
        assert!(
            Instant::now() < deadline,
            "recovery did not finish; server log:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg
}

fn ids(pg: &PgCluster) -> Vec<i64> {
    pg.psql("postgres", "select id from users order by id")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn pitr_to_a_named_restore_point_lands_exactly() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key, email text unique, profile jsonb); \
         insert into users select g, 'u' || g || '@example.com', '{\"a\": 1}' from generate_series(1, 1000) g",
    )
    .unwrap();
    let v = backup_ok(&env, &pg, &[]);
    assert_eq!(v["type"], "full", "{v}");
    // Committed before the restore point: must be there after recovery.
    pg.psql("postgres", "insert into users select g, 'u' || g || '@example.com', '{}' from generate_series(1001, 1100) g").unwrap();
    pg.psql(
        "postgres",
        "select pg_create_restore_point('before_delete')",
    )
    .unwrap();
    // The accident: after the restore point, must be absent after recovery.
    pg.psql("postgres", "delete from users where id <= 500; insert into users values (5000, 'late@example.com', '{}')").unwrap();
    archive_now(&pg);

    let restore = env.restore_dir();
    let target = restore.path().join("data");
    env.ok(&[
        "pg",
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
        "--target-name",
        "before_delete",
        "--target-action",
        "promote",
    ]);
    let restored = start_restored(restore);
    let got = ids(&restored);
    assert_eq!(
        got.len(),
        1100,
        "rows committed before the target are all there"
    );
    assert_eq!(got.first(), Some(&1));
    assert_eq!(
        got.last(),
        Some(&1100),
        "the row written after the target is absent"
    );
}

#[test]
fn wal_push_is_idempotent_and_refuses_different_content() {
    let env = PgEnv::new();
    // A data directory as archive_command sees it: pg_control (for the system
    // identifier) and a segment in pg_wal.
    let pgdata = env.dir.path().join("pgdata");
    fs::create_dir_all(pgdata.join("global")).unwrap();
    fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    fs::write(
        pgdata.join("global/pg_control"),
        7_345_012_345_u64.to_ne_bytes(),
    )
    .unwrap();
    let seg = "000000010000000000000003";
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(pgdata.join("pg_wal").join(seg), &content).unwrap();
    let push = |env: &PgEnv| {
        env.cmd()
            .current_dir(&pgdata)
            .args(["pg", "wal-push", &format!("pg_wal/{seg}")])
            .output()
            .unwrap()
    };
    assert!(push(&env).status.success(), "{}", stderr(&push(&env)));
    let again = push(&env);
    assert!(
        again.status.success(),
        "an identical re-push succeeds: {}",
        stderr(&again)
    );
    let mut changed = content.clone();
    changed[1000] ^= 1;
    fs::write(pgdata.join("pg_wal").join(seg), &changed).unwrap();
    let conflict = push(&env);
    assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
    assert!(
        stderr(&conflict).contains("different content"),
        "{}",
        stderr(&conflict)
    );
    // wal-fetch returns the stored (first) content, and 1 for a missing file.
    let fetched = pgdata.join("pg_wal/RECOVERYXLOG");
    let out = env
        .cmd()
        .current_dir(&pgdata)
        .args(["pg", "wal-fetch", seg, "pg_wal/RECOVERYXLOG"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(&fetched).unwrap(), content);
    let missing = env
        .cmd()
        .current_dir(&pgdata)
        .args([
            "pg",
            "wal-fetch",
            "000000010000000000000009",
            "pg_wal/RECOVERYXLOG",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).is_empty(),
        "a missing segment is quiet: {}",
        stderr(&missing)
    );
}

#[test]
fn restore_refuses_a_non_empty_directory_and_a_running_server() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    backup_ok(&env, &pg, &[]);
    let out = env.run(&["pg", "restore", "--pgdata", pg.pgdata.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("postmaster.pid"), "{}", stderr(&out));
    let busy = env.dir.path().join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("x"), b"x").unwrap();
    let out = env.run(&["pg", "restore", "--pgdata", busy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        fs::read(busy.join("x")).unwrap(),
        b"x",
        "nothing was touched"
    );
    let bad = env.run(&[
        "pg",
        "backup",
        "--pgdata",
        pg.pgdata.to_str().unwrap(),
        "--pg-url",
        "host=/nonexistent port=1 user=postgres",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("cannot connect to PostgreSQL"),
        "{}",
        stderr(&bad)
    );
}

fn backup_json(env: &PgEnv, pg: &PgCluster, extra: &[&str]) -> Output {
    let mut args = vec![
        "--json",
        "pg",
        "backup",
        "--pgdata",
        pg.pgdata.to_str().unwrap(),
        "--pg-url",
    ];
    let url = pg.conninfo("postgres");
    args.push(&url);
    args.extend_from_slice(extra);
    env.run(&args)
}

/// `pg backup --json`, asserted to succeed; its report.
fn backup_ok(env: &PgEnv, pg: &PgCluster, extra: &[&str]) -> serde_json::Value {
    let out = backup_json(env, pg, extra);
    let text = crate::harness::succeeded(&["pg", "backup"], out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON from pg backup: {e}\n{text}"))
}

#[test]
fn incremental_after_a_small_change_stores_little() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key, email text, profile text); \
         insert into users select g, 'u' || g || '@example.com', md5(g::text) from generate_series(1, 20000) g; \
         create table audit (id bigint primary key, payload text); \
         insert into audit select g, md5(g::text) || repeat(md5((g * 7)::text), 4) from generate_series(1, 200000) g",
    )
    .unwrap();
    // A table that has been around is vacuumed: its hint bits are set, and
    // the scan of the update below does not rewrite every page.
    pg.psql("postgres", "vacuum freeze").unwrap();
    pg.psql("postgres", "checkpoint").unwrap();
    let first = backup_ok(&env, &pg, &[]);
    // The 1 % change of BENCHMARKS.md: 1 % of users updated at random, 1 %
    // more audit events appended.
    pg.psql(
        "postgres",
        "update users set profile = 'changed' where id in \
           (select (random() * 19999)::bigint + 1 from generate_series(1, 200)); \
         insert into audit select g, md5(g::text) || repeat(md5((g * 7)::text), 4) from generate_series(200001, 202000) g; \
         checkpoint",
    )
    .unwrap();
    let second = backup_ok(&env, &pg, &[]);
    assert_eq!(second["type"], "incr", "{second}");
    let stored = |v: &serde_json::Value| v["stats"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored(&second) * 100 < stored(&first) * 15,
        "the incremental stored {} bytes, the full {}",
        stored(&second),
        stored(&first)
    );
}

#[test]
fn a_flipped_byte_in_a_relation_file_is_named_by_file_and_block() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table t (id int, v text); \
         insert into t select g, repeat('x', 100) from generate_series(1, 2000) g; checkpoint",
    )
    .unwrap();
    let rel = pg
        .psql("postgres", "select pg_relation_filepath('t')")
        .unwrap();
    // Damage block 3 on disk; its clean copy in shared buffers is never
    // written back, so only a reader of the file sees it.
    let path = pg.pgdata.join(&rel);
    let mut bytes = fs::read(&path).unwrap();
    bytes[3 * 8192 + 4000] ^= 0x5a;
    fs::write(&path, &bytes).unwrap();
    let out = backup_json(&env, &pg, &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "damage exits 3: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains(&format!("{rel} block 3")), "{err}");
    assert!(err.contains("--allow-checksum-errors"), "{err}");
    let none = env.run(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(
        list.as_array().map(|a| a.len()),
        Some(0),
        "no snapshot recorded: {list}"
    );
    backup_ok(&env, &pg, &["--allow-checksum-errors"]);
}

/// Inserts users `from..=to` in one transaction and returns its xid.
pub(crate) fn insert_users(pg: &PgCluster, from: i64, to: i64) -> String {
    pg.psql(
        "postgres",
        &format!(
            "begin; insert into users select g, 'u' || g || '@example.com', '{{}}' from generate_series({from}, {to}) g; \
             select txid_current(); commit;"
        ),
    )
    .unwrap()
}

pub(crate) fn users_table(pg: &PgCluster) {
    pg.psql(
        "postgres",
        "create table users (id bigint primary key, email text unique, profile jsonb); \
         insert into users select g, 'u' || g || '@example.com', '{}' from generate_series(1, 1000) g",
    )
    .unwrap();
}

/// `pg restore --start` into a new directory with `args`; the started
/// server (stopped when dropped) and the JSON report.
fn restore_and_start(
    env: &PgEnv,
    args: &[&str],
) -> (tempfile::TempDir, LocalServer, serde_json::Value) {
    let dir = env.restore_dir();
    let (server, report) = restore_and_start_in(env, &dir.path().join("data"), args);
    (dir, server, report)
}

/// `pg restore --start --json` into `pgdata` with `args`: the server (stopped
/// when dropped) and the report.
fn restore_and_start_in(
    env: &PgEnv,
    pgdata: &std::path::Path,
    args: &[&str],
) -> (LocalServer, serde_json::Value) {
    restore_and_start_with(env, None, pgdata, args)
}

/// [`restore_and_start_in`] with the server programs in `bindir` (given to
/// lifeboat as LIFEBOAT_PG_BINDIR), else those of the restored version.
fn restore_and_start_with(
    env: &PgEnv,
    bindir: Option<&std::path::Path>,
    pgdata: &std::path::Path,
    args: &[&str],
) -> (LocalServer, serde_json::Value) {
    let mut all = vec![
        "--json",
        "pg",
        "restore",
        "--start",
        "--start-timeout",
        "120",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let mut cmd = env.cmd();
    if let Some(b) = bindir {
        cmd.env(lifeboat_postgres::server::BINDIR_ENV, b);
    }
    let text = crate::harness::succeeded(&all, cmd.args(&all).output().expect("run lifeboat"));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let server = LocalServer::running_in(bindir, pgdata).unwrap();
    (server, report)
}

pub(crate) fn ids_of(server: &LocalServer) -> Vec<i64> {
    server
        .psql("postgres", "select id from users order by id")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Point-in-time recovery to an xid, an LSN and a time: each lands exactly,
/// with the rows committed up to the target and none after it.
#[test]
fn pitr_by_xid_lsn_and_time_lands_exactly() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    let xid = insert_users(&pg, 1001, 1100);
    insert_users(&pg, 1101, 1200);
    let lsn = pg
        .psql("postgres", "select pg_current_wal_insert_lsn()")
        .unwrap();
    insert_users(&pg, 1201, 1300);
    let time = pg
        .psql(
            "postgres",
            "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap();
    insert_users(&pg, 1301, 1400);
    archive_now(&pg);
    // The restores take the source's port and socket: stop it first.
    pg.stop().unwrap();

    for (flag, value, last) in [
        ("--target-xid", xid.as_str(), 1100),
        ("--target-lsn", lsn.as_str(), 1200),
        ("--target-time", time.as_str(), 1300),
    ] {
        let (_dir, mut server, report) =
            // Each restore promotes onto a new timeline that archives into the
            // same repository; "current" keeps the next one on timeline 1.
            restore_and_start(&env, &[flag, value, "--target-action", "promote", "--target-timeline", "current"]);
        assert_eq!(report["recovery"]["state"], "promoted", "{report}");
        assert!(
            report["recovery"]["duration_ms"].as_u64().is_some(),
            "{report}"
        );
        let got = ids_of(&server);
        assert_eq!(
            (got.len(), got.last().copied()),
            (last as usize, Some(last)),
            "{flag} {value}: rows up to {last} and none after; log:\n{}",
            server.log()
        );
        server.stop().unwrap();
    }
}

/// Restore, promote (timeline 2), write, and restore again to a point on
/// timeline 2: the archive follows the history file.
#[test]
fn pitr_to_a_point_on_a_second_timeline() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    pg.psql("postgres", "select pg_create_restore_point('tl1_point')")
        .unwrap();
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();

    // Timeline 2 starts at tl1_point: rows 1101..1200 are gone there. It
    // replaces the source, so it archives as the source did.
    let (_d2, mut tl2, _) = restore_and_start(
        &env,
        &[
            "--target-name",
            "tl1_point",
            "--target-action",
            "promote",
            "--archive-mode",
            "preserve",
        ],
    );
    assert_eq!(
        tl2.psql(
            "postgres",
            "select timeline_id from pg_control_checkpoint()"
        )
        .unwrap(),
        "2"
    );
    tl2.psql(
        "postgres",
        "insert into users values (5001, 'tl2a@example.com', '{}')",
    )
    .unwrap();
    tl2.psql("postgres", "select pg_create_restore_point('tl2_point')")
        .unwrap();
    tl2.psql(
        "postgres",
        "insert into users values (5002, 'tl2b@example.com', '{}')",
    )
    .unwrap();
    let seg = tl2
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(&tl2, &seg);
    tl2.stop().unwrap();

    let (_d3, mut again, _) = restore_and_start(
        &env,
        &[
            "--target-name",
            "tl2_point",
            "--target-action",
            "promote",
            "--target-timeline",
            "latest",
        ],
    );
    let got = ids_of(&again);
    assert_eq!(got.len(), 1101, "log:\n{}", again.log());
    assert_eq!(got[1099], 1100);
    assert_eq!(got.last(), Some(&5001), "the row after tl2_point is absent");
    assert!(
        !got.contains(&1101),
        "timeline 1's rows after the fork are absent"
    );
    assert_eq!(
        again
            .psql(
                "postgres",
                "select timeline_id from pg_control_checkpoint()"
            )
            .unwrap(),
        "3"
    );
    again.stop().unwrap();
}

/// Targets no backup can reach and unknown snapshots are refused, naming why.
#[test]
fn restore_refuses_unreachable_targets_and_unknown_snapshots() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    // A source named in the config file needs no flags.
    let config = env.dir.path().join("lifeboat.toml");
    fs::write(
        &config,
        format!(
            "repo = \"{}\"\nkey_file = \"{}\"\n\n[postgres.main]\npgdata = \"{}\"\npg_url = \"{}\"\n",
            env.repo.display(),
            env.key.display(),
            pg.pgdata.display(),
            pg.conninfo("postgres")
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        env.bare()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = with_config(&["--json", "pg", "backup", "main"]);
    let v: serde_json::Value =
        serde_json::from_str(&crate::harness::succeeded(&["pg", "backup", "main"], out)).unwrap();
    assert_eq!(v["type"], "full", "{v}");
    let out = with_config(&["pg", "backup", "replica"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no PostgreSQL source \"replica\"") && stderr(&out).contains("main"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["pg", "backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pgdata"), "{}", stderr(&out));
    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    let out = env.run(&[
        "pg",
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target-time",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("before the end of the oldest backup"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "pg",
        "restore",
        "deadbeef",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("deadbeef"), "{}", stderr(&out));
    assert!(
        !pgdata.exists() || fs::read_dir(&pgdata).unwrap().next().is_none(),
        "nothing restored"
    );
}

/// A target time past the recoverable window `pg info` shows: the restore
/// (which does not read the window) writes the target; recovery replays all
/// the WAL there is and PostgreSQL refuses to end short of the target, so
/// `--start` fails with the server's own words and leaves nothing running.
#[test]
fn a_target_time_past_the_window_fails_recovery_and_says_why() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    archive_now(&pg);
    pg.stop().unwrap();
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let to = info["archives"][0]["recoverable_to"]
        .as_str()
        .unwrap_or_else(|| panic!("no window: {info}"));
    let past = humantime::parse_rfc3339(to).unwrap() + Duration::from_secs(86_400);
    let past = humantime::format_rfc3339_seconds(past).to_string();

    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    let args = [
        "pg",
        "restore",
        "--start",
        "--start-timeout",
        "120",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target-time",
        past.as_str(),
    ];
    let out = env.run(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recovery ended before configured recovery target was reached"),
        "{err}"
    );
    let conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("recovery_target_time"), "{conf}");
    assert!(
        pgdata.join("global/pg_control").exists(),
        "the restore finished"
    );
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "no server left running"
    );
}

/// `pg info` lists backups, the archive and the recoverable window; a WAL
/// segment that never reached the repository shows as a gap in `pg info`
/// and fails `pg check`.
#[test]
fn info_and_check_see_the_archive_and_its_gaps() {
    let env = PgEnv::new();
    let skip = env.dir.path().join("skip-archiving");
    let pg = PgCluster::start(&format!(
        "archive_mode = on\narchive_command = 'test -f {} || {} --repo {} --key-file {} pg wal-push %p'\narchive_timeout = 60\n",
        skip.display(),
        env.exe.display(),
        env.repo.display(),
        env.key.display()
    ))
    .unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &["--type", "full"]);
    insert_users(&pg, 1001, 1100);
    backup_ok(&env, &pg, &[]);
    let url = pg.conninfo("postgres");
    let out = env.run(&["--json", "pg", "check", "--pg-url", &url, "--timeout", "30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let status = |r: &serde_json::Value, name: &str| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no check {name}: {r}"))
    };
    for name in [
        "archive_mode",
        "wal_level",
        "archive_command",
        "archiver",
        "wal switch",
        "wal gaps",
        "rpo exposure",
    ] {
        assert_eq!(status(&report, name), "ok", "{name}: {report}");
    }

    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let backups = info["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{info}");
    assert_eq!(backups[0]["type"], "full");
    assert_eq!(backups[1]["type"], "incr");
    assert!(
        backups[1]["bytes_stored"].as_u64().unwrap() < backups[0]["bytes_stored"].as_u64().unwrap()
    );
    assert!(
        backups[0]["bytes_original"].as_u64().unwrap() > 10 << 20,
        "{info}"
    );
    let archive = &info["archives"][0];
    assert_eq!(
        archive["timelines"][0]["gaps"].as_array().unwrap().len(),
        0,
        "{info}"
    );
    assert!(
        archive["recoverable_from"].is_string() && archive["recoverable_to"].is_string(),
        "{info}"
    );

    // A segment "archived" without reaching the repository.
    fs::write(&skip, b"").unwrap();
    insert_users(&pg, 1101, 1200);
    let lost = pg
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(&pg, &lost);
    fs::remove_file(&skip).unwrap();
    insert_users(&pg, 1201, 1300);
    archive_now(&pg);
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let gaps = &info["archives"][0]["timelines"][0]["gaps"];
    assert_eq!(
        gaps,
        &serde_json::json!([{"first": lost, "last": lost}]),
        "{info}"
    );
    let human = env.ok(&["pg", "info"]);
    assert!(human.contains(&format!("GAP: {lost} to {lost}")), "{human}");
    let out = env.run(&["--json", "pg", "check", "--pg-url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status(&report, "wal gaps"), "fail", "{report}");
    assert!(report.to_string().contains(&lost), "{report}");
    assert!(stderr(&out).contains("wal gaps"), "{}", stderr(&out));
}

/// An archive_command that fails (here: a key file that does not exist):
/// `pg backup` gives up at its timeout naming archive_command and records
/// nothing; `pg check` reports the failing archiver.
#[test]
fn a_failing_archive_command_fails_the_backup_and_check_names_it() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&format!(
        "archive_mode = on\narchive_command = '{} --repo {} --key-file /nonexistent/key pg wal-push %p'\narchive_timeout = 60\n",
        env.exe.display(),
        env.repo.display(),
    ))
    .unwrap();
    let out = backup_json(&env, &pg, &["--archive-timeout", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("did not reach the repository within 5 s"),
        "{err}"
    );
    assert!(err.contains("archive_command"), "{err}");
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(
        list.as_array().map(|a| a.len()),
        Some(0),
        "nothing recorded: {list}"
    );

    let url = pg.conninfo("postgres");
    let out = env.run(&["pg", "check", "--pg-url", &url, "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  archiver") && text.contains("archive_command is failing"),
        "{text}"
    );
    assert!(text.contains("FAIL  wal switch"), "{text}");
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A backup taken while pgbench writes restores, recovers to a consistent
/// point, passes `pg_amcheck --heapallindexed`, and balances: the sum of the
/// accounts equals the sum of the history.
#[test]
fn a_backup_under_pgbench_restores_and_passes_amcheck() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    let pgbench = pg.bindir().join("pgbench");
    let url = pg.conninfo("postgres");
    run_ok(
        {
            let mut c = as_owner(&pgbench);
            c.args(["-i", "-q", "-s", "3", &url]);
            c
        },
        "pgbench -i",
    );
    // Writes for as long as the backup runs; stopped once it is done.
    let mut load = as_owner(&pgbench)
        .args(["-c", "2", "-j", "2", "-T", "600", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let backup = backup_json(&env, &pg, &[]);
    let still_writing = load.try_wait().unwrap().is_none();
    let _ = load.kill();
    let _ = load.wait();
    crate::harness::succeeded(&["pg", "backup"], backup);
    assert!(still_writing, "pgbench ran through the whole backup");
    archive_now(&pg);
    pg.stop().unwrap();

    let (_dir, mut server, report) =
        restore_and_start(&env, &["--immediate", "--target-action", "promote"]);
    assert_eq!(report["recovery"]["state"], "promoted", "{report}");
    let amcheck = pg.bindir().join("pg_amcheck");
    run_ok(
        {
            let mut c = as_owner(&amcheck);
            c.args(["--heapallindexed", "--install-missing", "--all", "-h"])
                .arg(&server.socket_dir)
                .args(["-p", &server.port.to_string(), "-U", "postgres"]);
            c
        },
        "pg_amcheck --heapallindexed",
    );
    assert_eq!(
        server
            .psql(
                "postgres",
                "select (select count(*) from pgbench_accounts) || ' ' || \
                 ((select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)) || ' ' || \
                 ((select sum(bbalance) from pgbench_branches) = (select coalesce(sum(delta), 0) from pgbench_history))"
            )
            .unwrap(),
        "300000 true true",
        "a consistent point: every transfer in the history is in the balances"
    );
    let history: i64 = server
        .psql("postgres", "select count(*) from pgbench_history")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        history > 0,
        "transactions from during the backup were replayed"
    );
    server.stop().unwrap();
}

/// Relation files of every regular file under base/ and global/ (not
/// pg_control) restored from `snapshot`, by path.
fn restored_relations(env: &PgEnv, snapshot: &str) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    env.ok(&[
        "pg",
        "restore",
        snapshot,
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--immediate",
    ]);
    let mut out = Vec::new();
    let mut stack = vec![pgdata.join("base"), pgdata.join("global")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "pg_control" {
                let rel = p.strip_prefix(&pgdata).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    (dir, out)
}

/// An incremental backup after a small change restores relation files
/// byte-identical to a full backup taken right after it.
#[test]
fn an_incremental_restores_the_same_bytes_as_a_full() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&format!("{}autovacuum = off\n", env.archive_command())).unwrap();
    users_table(&pg);
    // Rows of ~250 bytes, ~30 to a page, like the benchmark's users: a 1 %
    // update then changes about a quarter of the pages.
    pg.psql(
        "postgres",
        "insert into users select g, 'u' || g || '@example.com', jsonb_build_object('n', repeat(md5(g::text), 6)) from generate_series(1001, 30000) g",
    )
    .unwrap();
    pg.psql("postgres", "vacuum freeze").unwrap();
    pg.psql("postgres", "checkpoint").unwrap();
    backup_ok(&env, &pg, &["--type", "full"]);
    pg.psql(
        "postgres",
        "update users set profile = '{\"n\": 2}' where id % 100 = 7; \
         insert into users select g, 'u' || g || '@example.com', '{}' from generate_series(30001, 30300) g; checkpoint",
    )
    .unwrap();
    let incr = backup_ok(&env, &pg, &[]);
    assert_eq!(incr["type"], "incr", "{incr}");
    // The 1 % update left most chunks of users with a few changed pages:
    // stored as page patches, each of which verify rebuilds and checks.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "verify", "--read-data"])).unwrap();
    assert_eq!(v["clean"], true, "{v}");
    assert!(v["pieces_rebuilt"].as_u64().unwrap() > 0, "{v}");
    let full = backup_ok(&env, &pg, &["--type", "full"]);
    let (_a, from_incr) = restored_relations(&env, incr["snapshot"].as_str().unwrap());
    let (_b, from_full) = restored_relations(&env, full["snapshot"].as_str().unwrap());
    assert!(from_incr.len() > 100, "{} files", from_incr.len());
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&from_incr), names(&from_full));
    for ((name, a), (_, b)) in from_incr.iter().zip(&from_full) {
        assert!(
            a == b,
            "{name} differs between the incremental and the full restore"
        );
    }
}

/// A wal-push killed before it acknowledged (the first attempt of every
/// WAL file dies at a failpoint) loses nothing: PostgreSQL retries, and the
/// archive restores every committed row. The failpoints, in turn: mid-put,
/// the temporary file written but not renamed (`local-put-before-rename`);
/// renamed, its directory not fsynced (`local-put-before-dir-sync`); stored
/// but not acknowledged (`wal-push-after-store`, which also ends the first
/// two kinds of push when there was no put: the file was pushed ahead by an
/// earlier call and is already stored).
#[test]
fn a_killed_wal_push_loses_nothing() {
    let env = PgEnv::new();
    let marks = env.dir.path().join("killed");
    fs::create_dir_all(&marks).unwrap();
    give_to_owner(&marks).unwrap();
    let lb = format!(
        "{} --repo {} --key-file {} pg wal-push",
        env.exe.display(),
        env.repo.display(),
        env.key.display()
    );
    let script = env.dir.path().join("archive.sh");
    fs::write(
        &script,
        format!(
            r#"# archive_command = 'sh archive.sh %p %f': the first push of each WAL
# file dies at a failpoint (no core file), its status is noted in {m}/%f,
# and PostgreSQL is told it failed; the next push of the file is a plain one.
ulimit -c 0
if [ -e {m}/"$2" ]; then exec {lb} "$1"; fi
case $(( $(ls {m} | wc -l) % 3 )) in
  0) points=local-put-before-rename=abort,wal-push-after-store=abort ;;
  1) points=local-put-before-dir-sync=abort,wal-push-after-store=abort ;;
  *) points=wal-push-after-store=abort ;;
esac
{fp}=$points {lb} "$1"
echo "$points $?" > {m}/"$2"
exit 1
"#,
            m = marks.display(),
            fp = crate::harness::FAILPOINTS,
        ),
    )
    .unwrap();
    let mut pg = PgCluster::start(&format!(
        "archive_mode = on\narchive_timeout = 0\narchive_command = 'sh {} %p %f'\n",
        script.display()
    ))
    .unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    for i in 0..4 {
        let from = 1001 + i * 1000;
        insert_users(&pg, from, from + 999);
        archive_now(&pg);
    }
    let failed: i64 = pg
        .psql("postgres", "select failed_count from pg_stat_archiver")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        failed >= 4,
        "every segment's first push was killed ({failed} failures)"
    );
    // 134: the shell's status for a process ended by SIGABRT (128 + 6).
    let noted: Vec<String> = fs::read_dir(&marks)
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(noted.len() >= 4, "{noted:?}");
    for note in &noted {
        assert!(
            note.trim_end().ends_with(" 134"),
            "a push did not die: {noted:?}"
        );
    }
    for point in [
        "local-put-before-rename",
        "local-put-before-dir-sync",
        "wal-push-after-store=abort ",
    ] {
        assert!(
            noted.iter().any(|n| n.starts_with(point)),
            "no push died at {point}: {noted:?}"
        );
    }
    // The pushes killed before their rename left temporary files: reported,
    // not damage.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "verify", "--read-data"])).unwrap();
    assert_eq!(v["clean"], true, "{v}");
    assert!(v["leftovers"]["count"].as_u64().unwrap() >= 1, "{v}");
    pg.stop().unwrap();
    let (_dir, mut server, _) = restore_and_start(&env, &[]);
    let got = ids_of(&server);
    assert_eq!(
        (got.len(), got.last().copied()),
        (5000, Some(5000)),
        "log:\n{}",
        server.log()
    );
    server.stop().unwrap();
}

/// Bad input to the pg commands: a wrong repository key, an unreachable
/// repository, a malformed connection string, a wrong database password.
/// Each is named, exits non-zero, and stores nothing.
#[test]
fn bad_input_to_pg_commands_is_named() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    let pgdata = pg.pgdata.to_str().unwrap().to_string();
    let url = pg.conninfo("postgres");
    let wrong_key = env.dir.path().join("wrong-key");
    fs::write(&wrong_key, "this is not the key of this repository").unwrap();
    let with_wrong_key = |args: &[&str]| {
        env.bare()
            .args([
                "--repo",
                env.repo.to_str().unwrap(),
                "--key-file",
                wrong_key.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = with_wrong_key(&["pg", "backup", "--pgdata", &pgdata, "--pg-url", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong"), "{}", stderr(&out));
    let out = with_wrong_key(&[
        "pg",
        "wal-fetch",
        "000000010000000000000001",
        "/tmp/x",
        "--pgdata",
        &pgdata,
    ]);
    assert_eq!(
        out.status.code(),
        Some(126),
        "an unreadable repository is not a missing segment: {}",
        stderr(&out)
    );

    let nowhere = env.dir.path().join("no-such-repo");
    let out = env
        .bare()
        .args([
            "--repo",
            nowhere.to_str().unwrap(),
            "--key-file",
            env.key.to_str().unwrap(),
        ])
        .args([
            "pg",
            "wal-push",
            "pg_wal/000000010000000000000001",
            "--pgdata",
            &pgdata,
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-repo"), "{}", stderr(&out));
    assert!(!nowhere.exists(), "nothing was created");

    let out = env.run(&[
        "pg",
        "backup",
        "--pgdata",
        &pgdata,
        "--pg-url",
        "host=/tmp port=notaport",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid PostgreSQL connection string"),
        "{}",
        stderr(&out)
    );

    // A role that logs in with a password, and a wrong one.
    pg.psql(
        "postgres",
        "create role backup login superuser password 'right'",
    )
    .unwrap();
    let hba = pg.pgdata.join("pg_hba.conf");
    let text = fs::read_to_string(&hba).unwrap();
    fs::write(&hba, format!("local all backup scram-sha-256\n{text}")).unwrap();
    pg.psql("postgres", "select pg_reload_conf()").unwrap();
    let bad = format!(
        "{} user=backup password=wrong",
        pg.conninfo("postgres").replace("user=postgres", "")
    );
    let out = env.run(&["pg", "backup", "--pgdata", &pgdata, "--pg-url", &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is not echoed: {err}");
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(
        list.as_array().map(|a| a.len()),
        Some(0),
        "nothing recorded: {list}"
    );
    let good = bad.replace("password=wrong", "password=right");
    backup_ok_url(&env, &pgdata, &good);
}

fn backup_ok_url(env: &PgEnv, pgdata: &str, url: &str) {
    let out = env.run(&["pg", "backup", "--pgdata", pgdata, "--pg-url", url]);
    crate::harness::succeeded(&["pg", "backup"], out);
}

/// `lifeboat demo`: the README's first command, end to end, with zero rows
/// lost versus the target and the strategy's RTO met.
#[test]
fn the_demo_restores_every_row_before_the_incident() {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["--json", "demo"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["verify"]["rows_lost"], 0, "{v}");
    assert_eq!(v["verify"]["rows_after_target"], 0, "{v}");
    assert_eq!(v["verify"]["identical_users"], true, "{v}");
    assert_eq!(v["verify"]["users"], v["verify"]["expected_users"], "{v}");
    assert!(v["incident"]["deleted_users"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(v["rto_met"], true, "{v}");
    assert_eq!(v["rpo_met"], true, "{v}");
    let workdir = v["workdir"].as_str().unwrap();
    assert!(
        !std::path::Path::new(workdir).exists(),
        "cleaned up without --keep"
    );
}

/// `lifeboat demo --incident lost-primary`: the primary goes with rows not
/// yet archived; the report counts exactly those as lost (measured, not
/// assumed), and the restore holds everything archived.
#[test]
fn the_demo_counts_the_rows_a_lost_primary_takes_with_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["--json", "demo", "--incident", "lost-primary"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["incident"]["kind"], "lost-primary", "{v}");
    // 50 users and 100 audit events were committed after the last archive.
    assert_eq!(v["incident"]["unarchived_rows"], 150, "{v}");
    assert_eq!(v["verify"]["rows_lost"], 150, "{v}");
    assert_eq!(v["rpo"]["rows_lost"], 150, "{v}");
    assert!(v["rpo"]["window_ms"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["verify"]["as_expected"], true,
        "everything archived is back: {v}"
    );
    assert_eq!(v["verify"]["identical_users"], true, "{v}");
    assert_eq!(v["rpo_met"], true, "well within 5 minutes: {v}");
}

/// A repository the release before typed snapshot metadata and times wrote
/// (`tests/fixtures/repo-v3`, made by `make-repo-v3.sh` with e792c75): its
/// base backup recovers with its WAL, its dump, Redis backup and files
/// restore, and `pg info` reads its metadata.
#[test]
fn a_repository_of_the_previous_release_reads_and_restores() {
    let env = PgEnv::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v3");
    fs::remove_dir_all(&env.repo).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(&env.repo)
        .status()
        .unwrap();
    assert!(copied.success());
    if lifeboat_postgres::server::is_root() {
        let owned = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&env.repo)
            .status()
            .unwrap();
        assert!(owned.success());
    }
    fs::write(
        &env.key,
        "fixture key material: 0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();

    let list: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "snapshots"])).unwrap();
    let id_of = |kind: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["source_kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} snapshot in {list}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");

    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let b = &info["backups"][0];
    assert_eq!(b["timeline"], 1, "{info}");
    assert_eq!(b["type"], "full", "{info}");
    assert!(b["start_lsn"].as_str().unwrap().contains('/'), "{info}");
    let tl = &info["archives"][0]["timelines"][0];
    assert_eq!(tl["segments"], 3, "{info}");
    assert_eq!(tl["gaps"].as_array().map(|g| g.len()), Some(0), "{info}");

    // The base backup recovers to the end of its archive: 1000 rows at the
    // backup, 100 written after it and archived.
    // Its settings name the fixture maker's socket directory: the sandbox
    // gives it a fresh one.
    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    env.ok(&[
        "pg",
        "restore",
        &id_of("postgres"),
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    let mut server = sandbox::Cluster::adopt(&pgdata, dir.path()).unwrap();
    server.start().unwrap();
    server
        .wait_for_recovery(
            lifeboat_postgres::server::RecoveryAction::Promote,
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(
        server.psql("app", "select count(*) from users").unwrap(),
        "1100"
    );
    drop(server);

    // The dump, into a fresh cluster.
    let pg = PgCluster::start("").unwrap();
    pg.psql("postgres", "create database copy").unwrap();
    env.ok(&[
        "pg",
        "restore-dump",
        &id_of("pg_dump"),
        "--pg-url",
        &pg.conninfo("copy"),
        "--database",
        "app",
    ]);
    assert_eq!(
        pg.psql("copy", "select count(*) from users").unwrap(),
        "1100"
    );

    // Redis: the keys per database, proven by a throwaway server.
    let target = tempfile::tempdir().unwrap();
    let r: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--json",
        "redis",
        "restore",
        &id_of("redis"),
        "--target-dir",
        target.path().to_str().unwrap(),
        "--verify",
    ]))
    .unwrap();
    assert_eq!(
        r["verified"],
        serde_json::json!([["db0", 2, 2], ["db1", 1, 1]]),
        "{r}"
    );

    // Files, byte for byte.
    let files = tempfile::tempdir().unwrap();
    env.ok(&[
        "files",
        "restore",
        &id_of("files"),
        "--target",
        files.path().to_str().unwrap(),
    ]);
    let hello = crate::harness::files_below(files.path())
        .into_iter()
        .find(|p| p.ends_with("docs/hello.txt"))
        .expect("hello.txt restored");
    assert_eq!(
        fs::read_to_string(hello).unwrap(),
        "written by the release of e792c75\n"
    );
}

fn listing(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path().display().to_string(),
                m.len(),
                m.modified().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// A tablespace outside the data directory is backed up through its link
/// and restored where --tablespace-map says; its old directory is never
/// touched, and restoring onto it is refused.
#[test]
fn tablespaces_are_backed_up_and_restored_where_mapped() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    let old_dir = env.restore_dir();
    let old = old_dir.path().join("ts1");
    fs::create_dir_all(&old).unwrap();
    give_to_owner(&old).unwrap();
    pg.psql(
        "postgres",
        &format!("create tablespace ts1 location '{}'", old.display()),
    )
    .unwrap();
    pg.psql(
        "postgres",
        "create table tsu (id int primary key, v text) tablespace ts1; \
         insert into tsu select g, md5(g::text) from generate_series(1, 1000) g",
    )
    .unwrap();
    let oid = pg
        .psql(
            "postgres",
            "select oid from pg_tablespace where spcname = 'ts1'",
        )
        .unwrap();
    backup_ok(&env, &pg, &[]);
    pg.psql(
        "postgres",
        "insert into tsu select g, md5(g::text) from generate_series(1001, 2000) g",
    )
    .unwrap();
    archive_now(&pg);
    pg.stop().unwrap();
    let before = listing(&old);

    // Onto the old, non-empty directory: refused before anything is written.
    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    let out = env.run(&["pg", "restore", "--pgdata", pgdata.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--tablespace-map"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "pg",
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--tablespace-map",
        "/no/such=/tmp/x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&oid),
        "names the tablespaces it has: {}",
        stderr(&out)
    );

    let new_dir = env.restore_dir();
    let new = new_dir.path().join("ts1-restored");
    let map = format!("{}={}", old.display(), new.display());
    let (dir, mut server, _) = restore_and_start(&env, &["--tablespace-map", &map]);
    assert_eq!(
        server.psql("postgres", "select count(*) from tsu").unwrap(),
        "2000"
    );
    assert_eq!(
        server
            .psql(
                "postgres",
                "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts1'"
            )
            .unwrap(),
        new.display().to_string()
    );
    assert_eq!(
        fs::read_link(dir.path().join("data/pg_tblspc").join(&oid)).unwrap(),
        new
    );
    server.stop().unwrap();
    assert_eq!(
        listing(&old),
        before,
        "the old tablespace directory was not touched"
    );
}

/// The other ways recovery can end: paused at the target (read-only, still
/// in recovery), shut down at the target, a standby that replays all WAL,
/// and a --delta restore over that standby's directory to an earlier point.
#[test]
fn recovery_can_pause_shut_down_run_as_standby_and_restore_over_itself() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    pg.psql("postgres", "select pg_create_restore_point('p')")
        .unwrap();
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();
    let target = ["--target-name", "p", "--target-timeline", "current"];

    let (_d, mut paused, report) =
        restore_and_start(&env, &[&target[..], &["--target-action", "pause"]].concat());
    assert_eq!(
        report["recovery"]["state"], "paused at the target",
        "{report}"
    );
    assert_eq!(
        paused
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(ids_of(&paused).len(), 1100, "log:\n{}", paused.log());
    paused.stop().unwrap();

    let (_d, down, report) = restore_and_start(
        &env,
        &[&target[..], &["--target-action", "shutdown"]].concat(),
    );
    assert_eq!(
        report["recovery"]["state"], "shut down at the target",
        "{report}"
    );
    assert!(!down.is_running(), "the server stopped at the target");
    assert!(
        down.log().contains("shutdown at recovery target"),
        "{}",
        down.log()
    );

    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    let (mut standby, report) = restore_and_start_in(&env, &pgdata, &["--standby"]);
    assert_eq!(
        report["recovery"]["state"], "running as a standby",
        "{report}"
    );
    assert_eq!(
        standby
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids_of(&standby).len() != 1200 {
        assert!(
            Instant::now() < deadline,
            "the standby did not replay all archived WAL; log:\n{}",
            standby.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pgdata.join("standby.signal").exists());
    let conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        !conf.contains("archive_mode = 'off'"),
        "a standby is restored to take over: it keeps archiving\n{conf}"
    );
    standby.stop().unwrap();

    // Over the standby's directory: what the backup lacks goes, the target holds.
    fs::write(pgdata.join("stray.txt"), b"not from the backup").unwrap();
    give_to_owner(&pgdata.join("stray.txt")).unwrap();
    let (mut again, _) = restore_and_start_in(
        &env,
        &pgdata,
        &[&target[..], &["--target-action", "promote", "--delta"]].concat(),
    );
    assert_eq!(ids_of(&again).len(), 1100, "log:\n{}", again.log());
    assert!(
        !pgdata.join("stray.txt").exists(),
        "--delta removed what the backup does not hold"
    );
    assert!(!pgdata.join("standby.signal").exists());
    again.stop().unwrap();
}

/// The backup's session ends while files are copied (its backend is
/// terminated): the backup fails naming the lost session, and nothing is
/// recorded.
#[test]
fn a_lost_backup_session_fails_the_backup() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    // Enough to copy that the copy outlasts the watcher's reaction.
    pg.psql(
        "postgres",
        "create table big as select g as id, md5(g::text) || md5((g * 3)::text) as v from generate_series(1, 2000000) g",
    )
    .unwrap();
    let mut backup = env
        .cmd()
        .args([
            "pg",
            "backup",
            "--pgdata",
            pg.pgdata.to_str().unwrap(),
            "--pg-url",
            &pg.conninfo("postgres"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the backup has started on its session (its last statement reads
    // the timeline from the start LSN's WAL file name), end that session.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let killed = pg
            .psql(
                "postgres",
                "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                 where application_name = 'lifeboat' and query like '%pg_walfile_name%'",
            )
            .unwrap();
        if killed == "1" {
            break;
        }
        assert!(
            backup.try_wait().unwrap().is_none(),
            "the backup ended before its session could be ended"
        );
        assert!(
            Instant::now() < deadline,
            "the backup session never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the session that started the backup was lost"),
        "{}",
        stderr(&out)
    );
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(
        list.as_array().map(|a| a.len()),
        Some(0),
        "nothing recorded: {list}"
    );
}

/// The server programs of PostgreSQL `major` that scripts/install-old-postgres.sh
/// installs (scripts/test.sh runs it and names the directory in
/// LIFEBOAT_TEST_OLD_PG).
fn old_bindir(major: u32) -> PathBuf {
    let root = std::env::var_os("LIFEBOAT_TEST_OLD_PG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if lifeboat_postgres::server::is_root() {
                PathBuf::from("/var/cache/lifeboat/postgresql")
            } else {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/lifeboat/postgresql")
            }
        });
    let bin = root.join(major.to_string()).join("bin");
    assert!(
        bin.join("postgres").exists(),
        "the PostgreSQL {major} server programs are not in {}; run scripts/install-old-postgres.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// PostgreSQL 12-14 (the older backup API, pg_start_backup/pg_stop_backup):
/// a full and an incremental backup, a named restore point, an accident,
/// and `pg restore --start` with that version's programs lands exactly.
fn an_older_version_backs_up_and_recovers_to_a_point(major: u32) {
    let bindir = old_bindir(major);
    let env = PgEnv::new();
    let mut pg = PgCluster::start_in(&bindir, &env.archive_command(), &[]).unwrap();
    let version: u32 = pg
        .psql("postgres", "show server_version_num")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        version / 10000,
        major,
        "the cluster runs PostgreSQL {version}"
    );
    users_table(&pg);
    assert_eq!(backup_ok(&env, &pg, &[])["type"], "full");
    insert_users(&pg, 1001, 1100);
    assert_eq!(backup_ok(&env, &pg, &[])["type"], "incr");
    insert_users(&pg, 1101, 1200);
    pg.psql(
        "postgres",
        "select pg_create_restore_point('before_delete')",
    )
    .unwrap();
    pg.psql("postgres", "delete from users where id <= 500; insert into users values (5000, 'late@example.com', '{}')")
        .unwrap();
    archive_now(&pg);
    let url = pg.conninfo("postgres");
    let check: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--json",
        "pg",
        "check",
        "--pg-url",
        &url,
        "--timeout",
        "30",
    ]))
    .unwrap();
    // Every check passes; archive_timeout = 0 in tests only warns.
    let checks = check["checks"].as_array().unwrap();
    for name in ["archiver", "wal switch", "wal gaps", "rpo exposure"] {
        assert!(
            checks
                .iter()
                .any(|c| c["name"] == name && c["status"] == "ok"),
            "PostgreSQL {major}, {name}: {check}"
        );
    }
    assert!(
        checks.iter().all(|c| c["status"] != "fail"),
        "PostgreSQL {major}: {check}"
    );
    pg.stop().unwrap();

    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let backups = info["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{info}");
    assert!(
        backups[1]["pg_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{major}."))),
        "{info}"
    );

    let dir = env.restore_dir();
    let (server, report) = restore_and_start_with(
        &env,
        Some(&bindir),
        &dir.path().join("data"),
        &[
            "--target-name",
            "before_delete",
            "--target-action",
            "promote",
        ],
    );
    assert_eq!(report["recovery"]["state"], "promoted", "{report}");
    let got = ids_of(&server);
    assert_eq!(
        (got.len(), got.first().copied(), got.last().copied()),
        (1200, Some(1), Some(1200)),
        "PostgreSQL {major}: rows 1..1200 and nothing of the accident; log:\n{}",
        server.log()
    );
}

#[test]
fn pg12_backs_up_and_recovers_to_a_point() {
    an_older_version_backs_up_and_recovers_to_a_point(12);
}

#[test]
fn pg13_backs_up_and_recovers_to_a_point() {
    an_older_version_backs_up_and_recovers_to_a_point(13);
}

#[test]
fn pg14_backs_up_and_recovers_to_a_point() {
    an_older_version_backs_up_and_recovers_to_a_point(14);
}

/// A cluster whose pg_wal is a link to another directory (`initdb -X`): the
/// backup holds no WAL and no link out of the data directory, and the
/// restore makes pg_wal a directory of its own, leaving the original's WAL
/// alone.
#[test]
fn a_pg_wal_link_is_restored_as_a_directory_of_its_own() {
    let env = PgEnv::new();
    let waldir = tempfile::tempdir().unwrap();
    give_to_owner(waldir.path()).unwrap();
    let wal = waldir.path().join("wal");
    let bindir = lifeboat_testkit::postgres::bindir().unwrap();
    let mut pg = PgCluster::start_in(
        &bindir,
        &env.archive_command(),
        &["-X", wal.to_str().unwrap()],
    )
    .unwrap();
    assert!(
        fs::symlink_metadata(pg.pgdata.join("pg_wal"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "initdb -X makes pg_wal a link"
    );
    users_table(&pg);
    let v = backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    archive_now(&pg);
    pg.stop().unwrap();
    let before = listing(&wal);

    let ls = env.ok(&["ls", v["snapshot"].as_str().unwrap()]);
    assert!(
        !ls.lines().any(|l| l.contains("pg_wal/0")),
        "no WAL segment in the backup:\n{ls}"
    );
    let (_dir, server, report) = restore_and_start(&env, &["--target-action", "promote"]);
    assert_eq!(report["recovery"]["state"], "promoted", "{report}");
    let restored_wal = fs::symlink_metadata(server.pgdata.join("pg_wal")).unwrap();
    assert!(
        restored_wal.is_dir() && !restored_wal.file_type().is_symlink(),
        "the restored pg_wal is a directory, not a link into the original's WAL"
    );
    assert_eq!(ids_of(&server).len(), 1100, "every archived row is back");
    assert_eq!(
        listing(&wal),
        before,
        "the original's WAL directory is untouched"
    );
}

/// `verify --read-data` checks the WAL archive too: a flipped byte in one
/// archived segment is named as damage (exit 3), and a clean archive passes.
#[test]
fn verify_read_data_finds_a_damaged_wal_segment() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    let backup = backup_ok(&env, &pg, &[]);
    archive_now(&pg);
    let clean: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "verify", "--read-data"])).unwrap();
    assert_eq!(clean["clean"], true, "{clean}");
    let named = clean["named_checked"].as_u64().unwrap();
    assert!(named >= 2, "every archived WAL file is checked: {clean}");

    // Damage the largest named object: a full segment.
    let mut objects: Vec<(u64, PathBuf)> = fs::read_dir(env.repo.join("named"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (fs::metadata(&p).unwrap().len(), p))
        .collect();
    objects.sort();
    let (_, victim) = objects.last().unwrap().clone();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&victim, bytes).unwrap();

    let out = env.run(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let key = format!("named/{}", victim.file_name().unwrap().to_str().unwrap());
    assert!(
        text.contains(&key) && text.contains("point-in-time recovery"),
        "verify must name the damaged WAL object:\n{text}"
    );
    // By its segment name too: the largest object is a full segment of
    // timeline 1.
    assert!(
        text.contains("WAL file 00000001"),
        "verify must give the damaged segment's name:\n{text}"
    );

    // Fetching a damaged segment names it by its segment name, not only by
    // the hash it is stored under, and stops recovery (126).
    for (_, p) in &objects {
        if p != &victim {
            let mut bytes = fs::read(p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            fs::write(p, bytes).unwrap();
        }
    }
    let segment = backup["wal_start"].as_str().unwrap();
    let out = env.run(&[
        "pg",
        "wal-fetch",
        segment,
        "pg_wal/RECOVERYXLOG",
        "--pgdata",
        pg.pgdata.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(segment) && stderr(&out).contains("damaged"),
        "{}",
        stderr(&out)
    );
}

/// A data directory holding no more than wal-push and wal-fetch read: a
/// pg_control (its system identifier) and the segments `names`, each of
/// `size` bytes of its own and marked `.ready`.
fn data_directory_with_ready_wal(env: &PgEnv, names: &[&str], size: usize) -> PathBuf {
    let pgdata = env.dir.path().join("data");
    fs::create_dir_all(pgdata.join("global")).unwrap();
    fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    fs::write(
        pgdata.join("global/pg_control"),
        7_424_242_424_242u64.to_ne_bytes(),
    )
    .unwrap();
    let page: Vec<u8> = (0..8192u32).map(|k| (k * 31) as u8).collect();
    for (i, n) in names.iter().enumerate() {
        let mut content = page.repeat(size / page.len());
        content[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        fs::write(pgdata.join("pg_wal").join(n), content).unwrap();
        fs::write(
            pgdata
                .join("pg_wal/archive_status")
                .join(format!("{n}.ready")),
            b"",
        )
        .unwrap();
    }
    pgdata
}

/// `wal-push --json` of one of `pgdata`'s segments.
fn wal_push(env: &PgEnv, pgdata: &Path, name: &str) -> serde_json::Value {
    let out = env.ok(&[
        "--json",
        "pg",
        "wal-push",
        &format!("pg_wal/{name}"),
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    serde_json::from_str(&out).unwrap()
}

/// `wal-fetch NAME pg_wal/RECOVERYXLOG` as recovery runs it: what it wrote
/// equals pg_wal's own copy of the segment.
fn wal_fetch_matches(env: &PgEnv, pgdata: &Path, name: &str) {
    env.ok(&[
        "pg",
        "wal-fetch",
        name,
        "pg_wal/RECOVERYXLOG",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    assert!(
        fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap()
            == fs::read(pgdata.join("pg_wal").join(name)).unwrap(),
        "wal-fetch {name} wrote other bytes"
    );
}

/// Each of `names` waits in wal-fetch's spool, with its bytes.
fn assert_spooled(pgdata: &Path, names: &[&str]) {
    let spool = pgdata.join("pg_wal/lifeboat-prefetch");
    for n in names {
        assert!(
            spool.join(n).exists()
                && fs::read(spool.join(n)).unwrap()
                    == fs::read(pgdata.join("pg_wal").join(n)).unwrap(),
            "{n} spooled, with its bytes"
        );
    }
}

/// `wal-push` pushes the segments already `.ready` after the one asked for,
/// and `wal-fetch` fetches the next segments ahead into a spool the
/// following calls take from: checked byte for byte on a data directory's
/// files (neither needs the server running).
#[test]
fn wal_push_and_fetch_work_ahead() {
    let env = PgEnv::new();
    let names = [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ];
    let pgdata = data_directory_with_ready_wal(&env, &names, 1 << 20);
    let v = wal_push(&env, &pgdata, names[0]);
    let stored: Vec<&str> = v["stored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        stored, names,
        "the .ready segments after the one asked for go along: {v}"
    );
    // PostgreSQL then asks for the next ones: already stored, success.
    let v = wal_push(&env, &pgdata, names[1]);
    assert!(
        v["already"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == names[1]),
        "{v}"
    );

    // Fetching the first brings the next two into the spool; the second
    // call is served from it, and the spool is cleaned behind recovery.
    let spool = pgdata.join("pg_wal/lifeboat-prefetch");
    wal_fetch_matches(&env, &pgdata, names[0]);
    assert_spooled(&pgdata, &names[1..]);
    wal_fetch_matches(&env, &pgdata, names[1]);
    assert!(
        !spool.join(names[1]).exists() && spool.join(names[2]).exists(),
        "taken from the spool, the rest kept"
    );
}

/// With segments of another size than the default 16 MiB, wal-fetch still
/// fetches the right segments ahead across a log file boundary (64 MiB
/// segments: 64 per log file, so ...3F is followed by 00000001/00000000).
#[test]
fn wal_fetch_works_ahead_with_64_mib_segments() {
    let env = PgEnv::new();
    let names = [
        "00000001000000000000003E",
        "00000001000000000000003F",
        "000000010000000100000000",
    ];
    let pgdata = data_directory_with_ready_wal(&env, &names, 64 << 20);
    wal_push(&env, &pgdata, names[0]);
    wal_fetch_matches(&env, &pgdata, names[0]);
    assert_spooled(&pgdata, &names[1..]);
    // Served from the spool on the other side of the boundary too.
    wal_fetch_matches(&env, &pgdata, names[1]);
    wal_fetch_matches(&env, &pgdata, names[2]);
    let spool = pgdata.join("pg_wal/lifeboat-prefetch");
    assert!(!spool.join(names[2]).exists(), "taken from the spool");
}

/// The time now as the server sees it, in UTC, as `--target-time` takes it.
pub(crate) fn server_now(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .unwrap()
}

/// A restore that fails part way leaves a data directory PostgreSQL will
/// not start (no `global/pg_control`), says so, and `--delta` finishes it.
#[test]
fn a_failed_restore_is_not_startable_and_delta_finishes_it() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    insert_users(&pg, 1001, 3000);
    backup_ok(&env, &pg, &[]);
    archive_now(&pg);
    pg.stop().unwrap();

    // Damage every blob of every pack (a flip at one offset of one pack
    // could land where no read looks, a pack's table of contents), keeping
    // the sound bytes to put back for --delta.
    let packs = crate::harness::files_below(&env.repo.join("packs"));
    let saved: Vec<(PathBuf, Vec<u8>)> = packs
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    env.damage_every_pack();

    let dir = env.restore_dir();
    let pgdata = dir.path().join("data");
    let out = env.run(&[
        "pg",
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target-action",
        "promote",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("incomplete") && err.contains("will not start") && err.contains("--delta"),
        "{err}"
    );
    assert!(
        !pgdata.join("global/pg_control").exists(),
        "pg_control is written last"
    );
    assert!(!pgdata.join("recovery.signal").exists());
    // PostgreSQL agrees: without its control file it knows no cluster there.
    let controldata = lifeboat_postgres::server::bindir()
        .unwrap()
        .join("pg_controldata");
    let out = as_owner(&controldata)
        .arg("-D")
        .arg(&pgdata)
        .output()
        .unwrap();
    assert!(!out.status.success(), "pg_controldata found a cluster");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_control"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the pack whole again, --delta finishes the same directory.
    for (p, b) in saved {
        fs::write(p, b).unwrap();
    }
    let (mut done, _) =
        restore_and_start_in(&env, &pgdata, &["--target-action", "promote", "--delta"]);
    assert_eq!(ids_of(&done).len(), 3000, "log:\n{}", done.log());
    done.stop().unwrap();
}

/// A trial restore that kept archiving into the source's repository adds a
/// timeline that parts from the source's before a later target: a restore
/// to that target refuses to guess (exit 2), names both histories and which
/// restore made the trial's, and recovers the source's rows once told
/// `--target-timeline 1`. `pg info` shows the branch and its origin; a
/// restore with the default `--archive-mode off` adds no timeline.
#[test]
fn a_trial_restore_archiving_here_is_never_followed_by_accident() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    let t1 = server_now(&pg);
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();

    // The trial: to t1, promoted, archiving into the same repository.
    let (_trial_dir, mut trial, _) = restore_and_start(
        &env,
        &[
            "--target-time",
            &t1,
            "--target-action",
            "promote",
            "--archive-mode",
            "preserve",
        ],
    );
    trial
        .psql(
            "postgres",
            "insert into users values (9001, 'trial@example.com', '{}')",
        )
        .unwrap();
    let seg = trial
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(&trial, &seg);
    trial.stop().unwrap();

    // The source goes on.
    pg.start_server().unwrap();
    insert_users(&pg, 1201, 1300);
    let t2 = server_now(&pg);
    insert_users(&pg, 1301, 1400);
    archive_now(&pg);
    pg.stop().unwrap();

    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    let tls = info["archives"][0]["timelines"].as_array().unwrap().clone();
    let tl2 = tls
        .iter()
        .find(|t| t["timeline"] == 2)
        .expect("timeline 2 listed");
    assert_eq!(tl2["history"]["parent"], 1, "{tl2}");
    assert!(tl2["history"]["branch_lsn"].is_string(), "{tl2}");
    assert_eq!(
        tl2["history"]["origin"]["tool"], "lifeboat pg restore",
        "{tl2}"
    );
    let text = env.ok(&["pg", "info"]);
    assert!(
        text.contains("branched from timeline 1") && text.contains("made by"),
        "{text}"
    );

    let dir = env.restore_dir();
    let out = env.run(&[
        "pg",
        "restore",
        "--pgdata",
        dir.path().join("data").to_str().unwrap(),
        "--target-time",
        &t2,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("timeline 1")
            && err.contains("timeline 2")
            && err.contains("made by `lifeboat pg restore`"),
        "{err}"
    );
    assert!(err.contains("--target-timeline 1"), "{err}");
    // The branch point is named as `pg info` shows it.
    let branch = tl2["history"]["branch_lsn"].as_str().unwrap();
    assert!(err.contains(branch), "the refusal names {branch}: {err}");
    assert!(
        !dir.path().join("data/global").exists(),
        "nothing was restored"
    );

    let (_d, mut right, report) = restore_and_start(
        &env,
        &[
            "--target-time",
            &t2,
            "--target-timeline",
            "1",
            "--target-action",
            "promote",
        ],
    );
    let got = ids_of(&right);
    assert_eq!(
        (got.len(), got.last().copied()),
        (1300, Some(1300)),
        "log:\n{}",
        right.log()
    );
    assert!(!got.contains(&9001), "the trial's row is not on timeline 1");
    assert!(
        report["settings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[0] == "archive_mode" && s[1] == "'off'"),
        "{report}"
    );
    let seg = right
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    assert!(!seg.is_empty());
    right.stop().unwrap();
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    assert_eq!(
        info["archives"][0]["timelines"].as_array().unwrap().len(),
        2,
        "a restore with archiving off added no timeline: {info}"
    );
}

/// `pg wal-expire --json` keeping `keep` (snapshot ids) with the window
/// `window`; asserted to succeed; its plans and reports.
fn wal_expire(env: &PgEnv, window: &str, keep: &[&str], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "pg", "wal-expire", "--pitr-window", window];
    for k in keep {
        args.extend(["--keep", k]);
    }
    args.extend_from_slice(extra);
    serde_json::from_str(&env.ok(&args)).unwrap()
}

/// Every file one expiry plan deletes, with its timeline.
fn expired_names(v: &serde_json::Value) -> Vec<(u64, String)> {
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 1, "{v}");
    plans[0]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            let tl = t["timeline"].as_u64().unwrap();
            t["delete"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |f| (tl, f["name"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// The (id, wal_start, wal_stop) of each base backup, oldest first.
fn backup_wal_ranges(env: &PgEnv) -> Vec<(String, String, String)> {
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap().to_string();
            (s("id"), s("wal_start"), s("wal_stop"))
        })
        .collect()
}

/// Two backups with WAL before, between and after them. Keeping both with
/// the window after the older: the older keeps exactly its start..stop and
/// still restores to consistency with its rows; the WAL between them goes.
/// An expiry killed after two deletions leaves both restorable, and the
/// next run finishes it. Keeping only the newer then deletes the older's
/// WAL too, and the newer still restores to the latest point.
#[test]
fn wal_expiry_keeps_what_kept_backups_and_the_window_need() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    backup_ok(&env, &pg, &[]);
    for i in 0..4 {
        insert_users(&pg, 1001 + i * 100, 1100 + i * 100);
        archive_now(&pg);
    }
    backup_ok(&env, &pg, &["--type", "full"]);
    insert_users(&pg, 1401, 1500);
    archive_now(&pg);
    pg.stop().unwrap();
    let ranges = backup_wal_ranges(&env);
    let [(old, old_start, old_stop), (new, new_start, _)] = &ranges[..] else {
        panic!("two backups: {ranges:?}")
    };

    let plan = wal_expire(&env, "0s", &[old, new], &["--dry-run"]);
    let doomed = expired_names(&plan);
    assert!(doomed.len() >= 4, "{plan}");
    for (tl, name) in &doomed {
        assert_eq!(*tl, 1, "{plan}");
        let seg = &name[..24];
        assert!(
            seg < old_start.as_str() || (seg > old_stop.as_str() && seg < new_start.as_str()),
            "{name} is needed by a kept backup: {plan}"
        );
    }
    let kept = plan["plans"][0]["timelines"][0]["kept"].to_string();
    assert!(
        kept.contains(&format!("backup {} start..stop", &old[..8])),
        "{kept}"
    );
    assert!(
        kept.contains(&format!("window from backup {}", &new[..8])),
        "{kept}"
    );
    assert!(
        plan["plans"][0]["after"]["recoverable_to"].is_string(),
        "{plan}"
    );

    // pg info shows the same plan per timeline, with the window after it.
    let text = env.ok(&[
        "pg",
        "info",
        "--pitr-window",
        "0s",
        "--keep",
        old,
        "--keep",
        new,
    ]);
    for want in [
        format!("backup {} start..stop", &old[..8]),
        format!("deletes {} file(s)", doomed.len()),
        "recoverable after:".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }

    // Killed before its third deletion: the two oldest are gone.
    let mut args = vec!["pg", "wal-expire", "--pitr-window", "0s"];
    args.extend(["--keep", old, "--keep", new]);
    let killed = env
        .cmd()
        .env(crate::harness::FAILPOINTS, "wal-expire-delete=abort@3")
        .args(&args)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "{}", stderr(&killed));
    let left = expired_names(&wal_expire(&env, "0s", &[old, new], &["--dry-run"]));
    assert_eq!(left[..], doomed[2..], "the oldest two went first");
    // Both backups restore as they are, killed run or not.
    for (snapshot, rows) in [(old.as_str(), 1000), (new.as_str(), 1400)] {
        let (_d, mut server, _) = restore_and_start(
            &env,
            &[
                snapshot,
                "--immediate",
                "--target-action",
                "promote",
                "--target-timeline",
                "current",
            ],
        );
        assert_eq!(ids_of(&server).len(), rows, "log:\n{}", server.log());
        server.stop().unwrap();
    }
    let done = wal_expire(&env, "0s", &[old, new], &[]);
    assert_eq!(
        done["reports"][0]["deleted"].as_u64(),
        Some(left.len() as u64),
        "{done}"
    );
    assert!(expired_names(&wal_expire(&env, "0s", &[old, new], &["--dry-run"])).is_empty());

    // The older backup restores to consistency: its rows and no later one.
    let (_d1, mut server, _) = restore_and_start(
        &env,
        &[
            old,
            "--immediate",
            "--target-action",
            "promote",
            "--target-timeline",
            "current",
        ],
    );
    assert_eq!(ids_of(&server).len(), 1000, "log:\n{}", server.log());
    server.stop().unwrap();

    // Only the newer kept: the older's WAL goes too; the newer restores
    // to the latest point.
    let v = wal_expire(&env, "0s", &[new], &[]);
    let doomed = expired_names(&v);
    assert!(
        doomed.iter().any(|(_, n)| n == old_start),
        "the older backup's WAL goes: {v}"
    );
    assert!(
        doomed
            .iter()
            .any(|(_, n)| n.starts_with(old_start.as_str()) && n.ends_with(".backup")),
        "and the backup history file PostgreSQL archived for it: {v}"
    );
    assert!(
        doomed.iter().all(|(_, n)| n[..24] < *new_start.as_str()),
        "{v}"
    );
    let (_d2, mut server, _) = restore_and_start(&env, &["--target-timeline", "current"]);
    let got = ids_of(&server);
    assert_eq!(
        (got.len(), got.last().copied()),
        (1500, Some(1500)),
        "log:\n{}",
        server.log()
    );
    server.stop().unwrap();
}

/// A backup on timeline 1, a restore to a point promoted onto timeline 2
/// that archives into the same repository, a backup there. Expiry keeping
/// the first backup only (the window's base) deletes only the WAL before
/// it, keeps timeline 1 from its start (the branch segment included), all
/// of timeline 2 and its history; a restore from it to the latest point on
/// timeline 2 works afterwards. Keeping both, the timeline-2 backup the
/// base: the timeline-1 backup keeps its start..stop and restores to
/// consistency, the WAL between them goes, and the timeline-2 backup
/// restores to the latest point.
#[test]
fn wal_expiry_across_a_timeline_switch_keeps_both_timelines() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    // WAL before the backup, for the expiry to delete.
    users_table(&pg);
    archive_now(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    pg.psql("postgres", "select pg_create_restore_point('tl1_point')")
        .unwrap();
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();
    let (_d2, mut tl2, _) = restore_and_start(
        &env,
        &[
            "--target-name",
            "tl1_point",
            "--target-action",
            "promote",
            "--archive-mode",
            "preserve",
        ],
    );
    tl2.psql(
        "postgres",
        "insert into users values (5001, 'tl2@example.com', '{}')",
    )
    .unwrap();
    let seg = tl2
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(&tl2, &seg);
    // A backup on timeline 2, and a row after it.
    let url = tl2.conninfo("postgres");
    let pgdata = tl2.pgdata.to_str().unwrap().to_string();
    env.ok(&[
        "--json", "pg", "backup", "--pgdata", &pgdata, "--pg-url", &url, "--type", "full",
    ]);
    tl2.psql(
        "postgres",
        "insert into users values (5002, 'tl2b@example.com', '{}')",
    )
    .unwrap();
    let seg = tl2
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(&tl2, &seg);
    tl2.stop().unwrap();

    let ranges = backup_wal_ranges(&env);
    let [(b1, b1_start, b1_stop), (b2, b2_start, _)] = &ranges[..] else {
        panic!("two backups: {ranges:?}")
    };
    assert!(b2_start.starts_with("00000002"), "{ranges:?}");
    // Only the timeline-1 backup kept: the window from it keeps both
    // timelines whole from its start.
    let v = wal_expire(&env, "0s", &[b1], &[]);
    let doomed = expired_names(&v);
    assert!(!doomed.is_empty(), "{v}");
    for (tl, name) in &doomed {
        assert_eq!(*tl, 1, "nothing of timeline 2 goes: {v}");
        assert!(name[..24] < *b1_start.as_str(), "{name}: {v}");
        assert!(!name.ends_with(".history"), "{v}");
    }
    let timelines = v["plans"][0]["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 2, "{v}");
    assert_eq!(
        v["reports"][0]["deleted"].as_u64(),
        Some(doomed.len() as u64)
    );
    // The archive is whole from the backup on, on both timelines.
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pg", "info"])).unwrap();
    for t in info["archives"][0]["timelines"].as_array().unwrap() {
        assert_eq!(t["gaps"].as_array().unwrap().len(), 0, "{info}");
    }
    assert!(
        info["archives"][0]["timelines"][1]["history"].is_object(),
        "{info}"
    );

    let (_d3, mut again, _) = restore_and_start(&env, &[b1, "--target-timeline", "latest"]);
    let got = ids_of(&again);
    assert_eq!(got.len(), 1102, "log:\n{}", again.log());
    assert_eq!(got.last(), Some(&5002));
    again.stop().unwrap();

    // Both kept, the timeline-2 backup the window's base: the timeline-1
    // backup keeps its start..stop; the WAL of both timelines between it
    // and the timeline-2 backup goes (timeline 1's past the branch too).
    let v = wal_expire(&env, "0s", &[b1, b2], &[]);
    let doomed = expired_names(&v);
    assert!(doomed.iter().any(|(tl, _)| *tl == 1), "{v}");
    for (tl, name) in &doomed {
        let seg = &name[..24];
        assert!(!name.ends_with(".history"), "{v}");
        match tl {
            1 => assert!(
                seg > b1_stop.as_str() || seg < b1_start.as_str(),
                "{name}: {v}"
            ),
            2 => assert!(seg[8..] < b2_start[8..], "{name}: {v}"),
            _ => panic!("{name}: {v}"),
        }
    }
    let (_d4, mut latest, _) = restore_and_start(&env, &[b2, "--target-timeline", "latest"]);
    let got = ids_of(&latest);
    assert_eq!(got.len(), 1102, "log:\n{}", latest.log());
    assert_eq!(got.last(), Some(&5002));
    latest.stop().unwrap();
    let (_d5, mut old, _) = restore_and_start(
        &env,
        &[
            b1,
            "--immediate",
            "--target-action",
            "promote",
            "--target-timeline",
            "current",
        ],
    );
    assert_eq!(ids_of(&old).len(), 1000, "log:\n{}", old.log());
    old.stop().unwrap();
}

/// `forget` itself expires WAL, across a timeline switch: a backup on
/// timeline 1, a restore promoted onto timeline 2 archiving into the same
/// repository, two backups there (one series), then `forget` keeping the
/// newest of each series and no point-in-time window. The older timeline-2
/// backup is forgotten; the WAL between the timeline-1 backup's stop and the
/// newest backup goes, the history file stays, the timeline-1 backup still
/// restores to consistency and the newest to the latest point. A dry run
/// first says the same and deletes nothing; `pg info` shows the policy's plan.
#[test]
fn forget_expires_wal_across_a_timeline_switch() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    archive_now(&pg);
    backup_ok(&env, &pg, &[]);
    insert_users(&pg, 1001, 1100);
    pg.psql("postgres", "select pg_create_restore_point('fork')")
        .unwrap();
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();
    let (_d2, mut tl2, _) = restore_and_start(
        &env,
        &[
            "--target-name",
            "fork",
            "--target-action",
            "promote",
            "--archive-mode",
            "preserve",
        ],
    );
    let url = tl2.conninfo("postgres");
    let pgdata = tl2.pgdata.to_str().unwrap().to_string();
    let switch = |s: &LocalServer| {
        let seg = s
            .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
            .unwrap();
        wait_archived(s, &seg);
    };
    for (id, email) in [(5001, "a@tl2"), (5002, "b@tl2")] {
        tl2.psql(
            "postgres",
            &format!("insert into users values ({id}, '{email}', '{{}}')"),
        )
        .unwrap();
        switch(&tl2);
        env.ok(&[
            "--json", "pg", "backup", "--pgdata", &pgdata, "--pg-url", &url,
        ]);
    }
    tl2.psql("postgres", "insert into users values (5003, 'c@tl2', '{}')")
        .unwrap();
    switch(&tl2);
    tl2.stop().unwrap();
    let ranges = backup_wal_ranges(&env);
    let [(b1, b1_start, b1_stop), (b2, _, _), (b3, b3_start, _)] = &ranges[..] else {
        panic!("three backups: {ranges:?}")
    };
    assert!(b3_start.starts_with("00000002"), "{ranges:?}");

    let policy = [
        "--keep-last",
        "1",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        "--keep-yearly",
        "0",
    ];
    let forget = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--json", "forget"];
        args.extend_from_slice(&policy);
        args.extend_from_slice(extra);
        serde_json::from_str(&env.ok(&args)).unwrap()
    };
    let doomed = |v: &serde_json::Value| -> Vec<(u64, String)> {
        let plan = &v["wal"][0]["plan"];
        plan["timelines"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                let tl = t["timeline"].as_u64().unwrap();
                t["delete"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |f| (tl, f["name"].as_str().unwrap().to_string()))
            })
            .collect()
    };
    let dry = forget(&["--dry-run"]);
    assert_eq!(
        dry["wal"].as_array().unwrap().len(),
        1,
        "one cluster: {dry}"
    );
    let planned = doomed(&dry);
    assert!(!planned.is_empty(), "{dry}");
    assert!(dry["wal"][0].get("deleted").is_none(), "{dry}");
    assert_eq!(
        backup_wal_ranges(&env).len(),
        3,
        "a dry run forgets nothing"
    );
    let info = env.ok(&["pg", "info"]);
    assert!(
        info.contains("WAL expiry of system") && info.contains("recoverable after:"),
        "{info}"
    );

    let done = forget(&[]);
    assert_eq!(doomed(&done), planned, "{done}");
    assert_eq!(
        done["wal"][0]["deleted"]["deleted"].as_u64(),
        Some(planned.len() as u64),
        "{done}"
    );
    let left: Vec<String> = backup_wal_ranges(&env).into_iter().map(|r| r.0).collect();
    assert_eq!(left, vec![b1.clone(), b3.clone()], "{b2} forgotten: {done}");
    for (tl, name) in &planned {
        assert!(!name.ends_with(".history"), "{name}");
        let seg = &name[..24];
        match tl {
            1 => assert!(
                seg < b1_start.as_str() || seg > b1_stop.as_str(),
                "{name} is needed by the timeline-1 backup"
            ),
            2 => assert!(seg[8..] < b3_start[8..], "{name} is needed by the newest"),
            _ => panic!("{name}"),
        }
    }
    let (_d3, mut latest, _) = restore_and_start(&env, &["--target-timeline", "latest"]);
    let got = ids_of(&latest);
    assert_eq!(got.last(), Some(&5003), "log:\n{}", latest.log());
    assert_eq!(got.len(), 1103, "log:\n{}", latest.log());
    latest.stop().unwrap();
    let (_d4, mut old, _) = restore_and_start(
        &env,
        &[
            b1,
            "--immediate",
            "--target-action",
            "promote",
            "--target-timeline",
            "current",
        ],
    );
    assert_eq!(ids_of(&old).len(), 1000, "log:\n{}", old.log());
    old.stop().unwrap();
}

/// `pg backup --time` records the snapshot under the time given (a future
/// one here), while restores still choose a backup by when it really ended:
/// a point-in-time restore to just now picks it and recovers every row to
/// that point. A time that does not read is a usage error.
#[test]
fn a_base_backup_recorded_under_another_time_restores_by_its_real_end() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    users_table(&pg);
    let bad = backup_json(&env, &pg, &["--time", "next tuesday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--time"), "{}", stderr(&bad));
    backup_ok(&env, &pg, &["--time", "2030-01-01T00:00:00Z"]);
    insert_users(&pg, 1001, 1100);
    let time = pg
        .psql(
            "postgres",
            "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap();
    insert_users(&pg, 1101, 1200);
    archive_now(&pg);
    pg.stop().unwrap();
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(list[0]["start_time"], "2030-01-01T00:00:00Z", "{list}");
    let (_d, mut server, _) = restore_and_start(
        &env,
        &[
            "--target-time",
            &time,
            "--target-action",
            "promote",
            "--target-timeline",
            "current",
        ],
    );
    let got = ids_of(&server);
    assert_eq!(got.len(), 1100, "log:\n{}", server.log());
    server.stop().unwrap();
}
