//! Restore drills end to end: a PostgreSQL cluster (base backup with WAL
//! archiving, and a dump), a redis-server and a directory, all backed up
//! into one repository, then drilled into sandboxes on this machine; the
//! report opened in headless Chromium.

use std::fs;
use std::path::Path;
use std::process::Output;

use lifeboat_testkit::postgres::PgCluster;
use serde_json::Value;

use crate::pg::{archive_now, PgEnv};

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON: {e}\n{text}"))
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn run(env: &PgEnv, config: &Path, args: &[&str]) -> Output {
    env.bare()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn ok(env: &PgEnv, config: &Path, args: &[&str]) -> String {
    crate::harness::succeeded(args, run(env, config, args))
}

/// `config`: the repository, its key, `[drill] workdir` and source
/// `main` (the cluster `pg`), then `rest`.
fn write_config(env: &PgEnv, pg: &PgCluster, config: &Path, workdir: &Path, rest: &str) {
    fs::write(
        config,
        format!(
            "repo = \"{}\"\nkey_file = \"{}\"\n\n[drill]\nworkdir = \"{}\"\n\n[postgres.main]\npgdata = \"{}\"\npg_url = \"{}\"\n{rest}",
            env.repo.display(),
            env.key.display(),
            workdir.display(),
            pg.pgdata.display(),
            pg.conninfo("postgres"),
        ),
    )
    .unwrap();
}

/// The entries of `dir` (a drill's work directory).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_drill_restores_every_source_checks_it_and_reports_what_an_auditor_reads() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key, email text unique); \
         insert into users select g, 'u' || g || '@example.com' from generate_series(1, 5000) g; \
         create table orders (id bigint primary key, user_id bigint references users(id)); \
         insert into orders select g, 1 + g % 5000 from generate_series(1, 20000) g; \
         analyze",
    )
    .unwrap();
    let (_redis_dir, redis) = crate::redis::server(&[]);
    crate::redis::fill(&redis.url());
    let files = env.dir.path().join("files");
    fs::create_dir_all(files.join("sub")).unwrap();
    fs::write(files.join("a.txt"), b"hello drill").unwrap();
    fs::write(files.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();

    let config = env.dir.path().join("lifeboat.toml");
    let workdir = env.dir.path().join("drills");
    write_config(
        &env,
        &pg,
        &config,
        &workdir,
        &format!("erase_sql = \"DELETE FROM orders WHERE user_id = $1; DELETE FROM users WHERE id = $1\"\n\n[redis.cache]\nredis_url = \"{}\"\n", redis.url()),
    );
    ok(&env, &config, &["pg", "backup", "main"]);
    ok(&env, &config, &["pg", "dump", "main"]);
    ok(&env, &config, &["redis", "backup", "cache"]);
    ok(&env, &config, &["files", "backup", files.to_str().unwrap()]);
    pg.psql(
        "postgres",
        "insert into users values (6000, 'late@example.com')",
    )
    .unwrap();
    archive_now(&pg);
    ok(
        &env,
        &config,
        &["erasure", "add", "--source", "main", "--subject", "17"],
    );
    // A sandbox a killed drill left behind is swept first; what another
    // user could plant there (not mode 0700) is left alone.
    let stale = workdir.join("lifeboat-drill-999999999-stale");
    let planted = workdir.join("lifeboat-drill-999999998-planted");
    fs::create_dir_all(stale.join("data")).unwrap();
    fs::create_dir_all(&planted).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&workdir, fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o755)).unwrap();
    }

    let report_dir = env.dir.path().join("report");
    let out = run(
        &env,
        &config,
        &[
            "--json",
            "drill",
            "--all",
            "--report",
            report_dir.to_str().unwrap(),
        ],
    );
    let text = crate::harness::succeeded(&["drill", "--all"], out);
    let record = json(&text);
    assert_eq!(record["passed"], true, "{record:#}");
    let sources = record["sources"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = sources
        .iter()
        .map(|s| (s["source"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    for want in [
        ("main", "postgres"),
        ("main", "pg_dump"),
        ("cache", "redis"),
    ] {
        assert!(kinds.contains(&want), "{want:?} in {kinds:?}");
    }
    assert!(kinds.iter().any(|(_, k)| *k == "files"), "{kinds:?}");
    let check = |kind: &str, name: &str| -> Value {
        let s = sources.iter().find(|s| s["kind"] == kind).unwrap();
        s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} for {kind}: {s:#}"))
            .clone()
    };
    // PostgreSQL: recovered to the newest WAL (user 6000 there), amcheck
    // clean, the largest tables as recorded, the ledger re-applied.
    assert_eq!(check("postgres", "pg_amcheck")["passed"], true);
    let rows = check("postgres", "rows postgres.public.orders");
    assert_eq!(rows["passed"], true, "{rows}");
    assert!(
        rows["detail"]
            .as_str()
            .unwrap()
            .starts_with("19996 rows restored"),
        "user 17's four orders erased: {rows}"
    );
    let users = check("postgres", "rows postgres.public.users");
    assert!(
        users["detail"]
            .as_str()
            .unwrap()
            .starts_with("5000 rows restored"),
        "5000 + user 6000 - user 17: {users}"
    );
    assert!(check("postgres", "erasure ledger")["detail"]
        .as_str()
        .unwrap()
        .contains("1 subject(s), 5 row(s)"));
    let pgd = sources.iter().find(|s| s["kind"] == "postgres").unwrap();
    assert!(pgd["rto_ms"].as_u64().unwrap() > 0, "{pgd}");
    assert_eq!(pgd["rto_target_s"], 3600);
    assert_eq!(pgd["rpo_target_s"], 300);
    assert!(pgd["rpo_s"].as_u64().unwrap() < 300, "{pgd}");
    assert!(pgd["version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    // The dump, Redis and files.
    assert_eq!(check("pg_dump", "pg_amcheck")["passed"], true);
    assert_eq!(
        check("pg_dump", "rows postgres.public.users")["passed"],
        true
    );
    assert_eq!(check("redis", "keys db0")["passed"], true);
    assert!(check("files", "files")["detail"]
        .as_str()
        .unwrap()
        .contains("all 2 file(s) restored identical"));
    // Every sandbox is gone, the stale one too; the planted one stays.
    assert_eq!(entries(&workdir), ["lifeboat-drill-999999998-planted"]);
    fs::remove_dir(&planted).unwrap();

    // The history, from the repository.
    let drills = json(&ok(&env, &config, &["--json", "drills"]));
    let list = drills["drills"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], record["id"]);
    assert_eq!(list[0]["sources"].as_array().unwrap().len(), sources.len());

    // The report: JSON, Markdown and a self-contained HTML page Chromium
    // shows as the record says.
    let id = record["id"].as_str().unwrap();
    let md = fs::read_to_string(report_dir.join(format!("drill-{id}.md"))).unwrap();
    assert!(
        md.contains("**PASSED**") && md.contains("pg_amcheck"),
        "{md}"
    );
    let html = report_dir.join(format!("drill-{id}.html"));
    let shot = env.dir.path().join("drill-report.png");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/browser/check-report.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(format!("file://{}", html.display()))
        .arg(&shot)
        .output()
        .expect("node (scripts/test.sh installs Chromium and playwright-core)");
    assert!(out.status.success(), "check-report.mjs: {}", stderr(&out));
    let page = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(page["drill"], id);
    assert_eq!(page["passed"], true);
    assert_eq!(page["script_elements"], 0);
    assert_eq!(
        page["console_errors"].as_array().unwrap().len(),
        0,
        "{page}"
    );
    let shown = page["sources"].as_array().unwrap();
    assert_eq!(shown.len(), sources.len());
    for s in shown {
        assert_eq!(s["visible"], true, "{s}");
        let want = sources
            .iter()
            .find(|x| x["source"] == s["source"] && x["kind"] == s["kind"])
            .unwrap();
        assert_eq!(s["passed"], want["passed"]);
        assert_eq!(s["rto_ms"], want["rto_ms"]);
        assert_eq!(
            s["checks"].as_array().unwrap().len(),
            want["checks"].as_array().unwrap().len()
        );
    }
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artefacts");
    fs::create_dir_all(&keep).unwrap();
    fs::copy(&shot, keep.join("drill-report.png")).unwrap();

    // The metrics the agent exports (and `lifeboat metrics` prints) come
    // from the drill history.
    let metrics = ok(&env, &config, &["metrics"]);
    let line = |name: &str| -> f64 {
        let prefix = format!("{name}{{source=\"main\",kind=\"postgres\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(line("lifeboat_drill_last_passed"), 1.0);
    assert_eq!(
        line("lifeboat_drill_rto_seconds"),
        pgd["rto_ms"].as_f64().unwrap() / 1000.0
    );
    let finished: lifeboat_repo::Timestamp = record["finished"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        line("lifeboat_drill_last_success_timestamp_seconds"),
        finished.as_millisecond() as f64 / 1000.0
    );

    // A drill that would not fit is not started, is recorded as failed,
    // and exits 1 naming why.
    let out = run(&env, &config, &["drill", "main", "--max-disk", "1KiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("FAIL disk") && said.contains("--max-disk allows"),
        "{said}"
    );
    assert!(
        stderr(&out).contains("the drill failed for main"),
        "{}",
        stderr(&out)
    );
    let drills = json(&ok(&env, &config, &["--json", "drills"]));
    let last = drills["drills"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["passed"], false, "{last}");
    assert_eq!(entries(&workdir), Vec::<String>::new());
    let status = json(&ok(&env, &config, &["--json", "status"]));
    let alerts = status["alerts"].to_string();
    assert!(
        alerts.contains("LifeboatDrillFailed") && alerts.contains("\"postgres\""),
        "{alerts}"
    );
    let metrics = ok(&env, &config, &["metrics"]);
    assert!(
        metrics.contains("lifeboat_drill_last_passed{source=\"main\",kind=\"postgres\"} 0"),
        "{metrics}"
    );
    // Nothing named: a usage error.
    let out = run(&env, &config, &["drill"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `--scenario region-loss`: the primary's store gone, every source drilled
/// from the replica, WAL fetched from it; the record kept there.
#[test]
fn a_region_loss_drill_restores_from_the_replica_alone() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key); \
         insert into users select generate_series(1, 3000); analyze",
    )
    .unwrap();
    let (_redis_dir, redis) = crate::redis::server(&[]);
    crate::redis::fill(&redis.url());
    let replica = env.dir.path().join("replica");
    let config = env.dir.path().join("lifeboat.toml");
    let workdir = env.dir.path().join("drills");
    write_config(
        &env,
        &pg,
        &config,
        &workdir,
        &format!(
            "\n[redis.cache]\nredis_url = \"{}\"\n\n[[replica]]\nname = \"dr\"\nrepo = \"{}\"\n",
            redis.url(),
            replica.display()
        ),
    );
    ok(&env, &config, &["pg", "backup", "main"]);
    ok(&env, &config, &["redis", "backup", "cache"]);
    pg.psql("postgres", "insert into users values (3001)")
        .unwrap();
    archive_now(&pg);
    ok(&env, &config, &["replicate"]);
    // The restored server's restore_command runs as the postgres user, as
    // the archive_command does: the replica is its to read too.
    lifeboat_testkit::postgres::give_to_owner(&replica).unwrap();
    // The region is lost: the primary's store is gone.
    let lost = env.dir.path().join("lost-region");
    fs::rename(&env.repo, &lost).unwrap();
    let out = run(&env, &config, &["--json", "drill", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let record = json(&ok(
        &env,
        &config,
        &["--json", "drill", "--all", "--scenario", "region-loss"],
    ));
    assert_eq!(record["passed"], true, "{record:#}");
    assert_eq!(record["scenario"], "region-loss");
    assert!(
        record["repository"].as_str().unwrap().contains("replica"),
        "{record}"
    );
    let pgd = record["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "postgres")
        .unwrap();
    let rows = pgd["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rows postgres.public.users")
        .unwrap();
    assert!(
        rows["detail"]
            .as_str()
            .unwrap()
            .starts_with("3001 rows restored"),
        "WAL after the backup came from the replica: {rows}"
    );
    // The primary is gone, so the history went to the replica.
    let drills = json(&ok(
        &env,
        &config,
        &["--json", "--repo", replica.to_str().unwrap(), "drills"],
    ));
    let list = drills["drills"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{drills}");
    assert_eq!(list[0]["scenario"], "region-loss");
    assert_eq!(entries(&workdir), Vec::<String>::new());
}

/// The PITR runbook `lifeboat runbook` writes for this deployment, its
/// commands run word for word (with the variables it asks for set): the
/// table deleted by mistake comes back, the rows after the target do not.
#[test]
fn the_pitr_runbook_run_word_for_word_brings_back_a_deleted_table() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key); \
         insert into users select generate_series(1, 1000); analyze",
    )
    .unwrap();
    let config = env.dir.path().join("lifeboat.toml");
    let workdir = env.dir.path().join("drills");
    write_config(&env, &pg, &config, &workdir, "rto = \"30m\"\n");
    ok(&env, &config, &["pg", "backup", "main"]);
    pg.psql(
        "postgres",
        "insert into users select generate_series(1001, 1100)",
    )
    .unwrap();
    let target = pg
        .psql(
            "postgres",
            "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap();
    // The mistake.
    pg.psql(
        "postgres",
        "delete from users; insert into users values (9999)",
    )
    .unwrap();
    archive_now(&pg);
    // A drill to the newest WAL sees the table gone (fewer than half the
    // rows recorded at backup time): it fails, naming the table.
    let out = run(&env, &config, &["drill", "main"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("FAIL rows postgres.public.users: 1 rows restored, 1000 recorded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // To the time before the mistake, it passes: that is the target.
    ok(&env, &config, &["drill", "main", "--target-time", &target]);

    let book = ok(&env, &config, &["runbook", "--scenario", "pitr"]);
    assert!(book.contains("RTO target 30m"), "{book}");
    assert!(book.contains("the last drill ("), "{book}");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in book.lines() {
        match line {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh => commands.push(l.to_string()),
            _ => {}
        }
    }
    assert!(
        commands.iter().any(|c| c.contains("pg restore")),
        "{commands:?}"
    );
    // Step 2 of the runbook, in words: the damaged server is stopped (the
    // restore takes its port on this host).
    pg.stop().unwrap();
    let restore = env.restore_dir();
    let restore_dir = restore.path().join("data");
    let bin = env.exe.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for c in &commands {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", env.dir.path())
            .env("TARGET_TIME", &target)
            .env("RESTORE_DIR", &restore_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    let restored = lifeboat_testkit::postgres::LocalServer::running(&restore_dir).unwrap();
    let got = restored
        .psql("postgres", "select count(*), min(id), max(id) from users")
        .unwrap();
    assert_eq!(
        got, "1100|1|1100",
        "every row before the mistake, none after"
    );
}

/// `drill SOURCE` held at `failpoint` (paused), once its server wrote the
/// pid file `rel` (below its sandbox): the drill's process, and the pid.
#[allow(
    clippy::zombie_processes,
    reason = "the child is handed to the caller, who waits on it"
)]
fn held_drill(
    env: &PgEnv,
    config: &Path,
    workdir: &Path,
    source: &str,
    failpoint: &str,
    rel: &str,
) -> (std::process::Child, u32) {
    use std::time::{Duration, Instant};
    let mut child = env
        .bare()
        .arg("--config")
        .arg(config)
        .args(["drill", source])
        .env("LIFEBOAT_FAILPOINTS", format!("{failpoint}=pause"))
        .env(
            "LIFEBOAT_FAILPOINT_RELEASE",
            env.dir.path().join("never-released"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // The pid file's first line: postmaster.pid's and redis.pid's.
        let found = entries(workdir).into_iter().find_map(|e| {
            fs::read_to_string(workdir.join(e).join(rel))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        });
        if let Some(pid) = found {
            return (child, pid);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the drill never started its server ({rel})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill SIGNAL` the process of `child`.
fn signal_to(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (a minute at most) until process `pid` is gone (or a zombie).
fn wait_gone(pid: u32) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A drill stopped by SIGTERM removes its sandbox and stops its server; one
/// killed outright leaves them, and the next drill sweeps them.
#[test]
fn an_interrupted_drill_leaves_no_sandbox_and_no_server() {
    let env = PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table t (id int); insert into t select generate_series(1, 100)",
    )
    .unwrap();
    let config = env.dir.path().join("lifeboat.toml");
    let workdir = env.dir.path().join("drills");
    write_config(&env, &pg, &config, &workdir, "");
    ok(&env, &config, &["pg", "backup", "main"]);
    archive_now(&pg);
    // The drill held once its restored server runs; its pid read back.
    let held = |signal: &str| -> (Option<i32>, u32) {
        let (mut child, postmaster) = held_drill(
            &env,
            &config,
            &workdir,
            "main",
            "drill-server-up",
            "data/postmaster.pid",
        );
        signal_to(&child, signal);
        (child.wait().unwrap().code(), postmaster)
    };
    let (code, postmaster) = held("-TERM");
    assert_eq!(code, Some(130));
    wait_gone(postmaster);
    assert_eq!(entries(&workdir), Vec::<String>::new());

    let (code, postmaster) = held("-KILL");
    assert_eq!(code, None, "killed");
    assert!(
        Path::new(&format!("/proc/{postmaster}")).exists(),
        "left running"
    );
    assert_eq!(entries(&workdir).len(), 1);
    let out = run(&env, &config, &["drill", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("which a drill that was stopped left behind"),
        "{}",
        stderr(&out)
    );
    wait_gone(postmaster);
    assert_eq!(entries(&workdir), Vec::<String>::new());
}

/// The redis-server a drill loads the restored RDB into asks a password
/// (its port is on loopback, its data is customer data), and a drill
/// stopped by SIGTERM stops it and removes its sandbox.
#[test]
fn a_redis_drill_stopped_by_a_signal_leaves_no_server() {
    let env = PgEnv::new();
    let (_redis_dir, redis) = crate::redis::server(&[]);
    crate::redis::fill(&redis.url());
    let config = env.dir.path().join("lifeboat.toml");
    let workdir = env.dir.path().join("drills");
    fs::write(
        &config,
        format!(
            "repo = \"{}\"\nkey_file = \"{}\"\n\n[drill]\nworkdir = \"{}\"\n\n[redis.cache]\nredis_url = \"{}\"\n",
            env.repo.display(),
            env.key.display(),
            workdir.display(),
            redis.url()
        ),
    )
    .unwrap();
    ok(&env, &config, &["redis", "backup", "cache"]);
    let (mut child, pid) = held_drill(
        &env,
        &config,
        &workdir,
        "cache",
        "drill-redis-up",
        "redis/redis.pid",
    );
    // Its port answers only with the password.
    // redis-server shows "redis-server 127.0.0.1:PORT" as its title.
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let port: String = cmdline
        .split("127.0.0.1:")
        .nth(1)
        .unwrap_or_else(|| panic!("{cmdline:?}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port, "DBSIZE"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOAUTH"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    signal_to(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    wait_gone(pid);
    assert_eq!(entries(&workdir), Vec::<String>::new());
}
