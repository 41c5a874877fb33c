//! The agent (issue #15): schedules run unattended against a real
//! redis-server, with the job history read back through `lifeboat jobs`.
//! Runs are held in the middle, where a test needs one "still going", by
//! the `pause` failpoint before the snapshot is stored.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lifeboat_redis::resp::Conn;
use lifeboat_redis::url::RedisUrl;
use lifeboat_scenarios::sandbox::redis::LocalRedis;
use serde_json::Value;

use crate::harness::{random_bytes, stderr, Backend, Env};

/// A redis-server with 16 MiB of incompressible values, which starts a
/// replica's sync at once (not after the default 5 s wait for others).
fn redis() -> (tempfile::TempDir, LocalRedis) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalRedis::start(
        dir.path(),
        &["--repl-diskless-sync-delay", "0"],
        Duration::from_secs(30),
    )
    .unwrap();
    let mut c =
        Conn::connect(&RedisUrl::parse(&s.url()).unwrap(), Duration::from_secs(30)).unwrap();
    for i in 0..4000u64 {
        let v = random_bytes(4096, i);
        let key = format!("k{i}");
        let r = c.command(&[b"SET".as_slice(), key.as_bytes(), &v]).unwrap();
        assert!(!matches!(r, lifeboat_redis::resp::Reply::Error(_)), "{r:?}");
    }
    (dir, s)
}

/// Writes the config file: one Redis source on `schedule`, and `[agent]`
/// settings fast enough for a test (`agent` adds to them).
fn config(env: &Env, url: &str, schedule: &str, agent: &str) -> PathBuf {
    let path = env.path("lifeboat.toml");
    std::fs::write(
        &path,
        format!(
            "[redis.cache]\nredis_url = \"{url}\"\nschedule.backup = \"{schedule}\"\n\n[agent]\nlisten = \"127.0.0.1:0\"\nrefresh = \"1s\"\nretry_backoff = \"1s\"\n{agent}\n"
        ),
    )
    .unwrap();
    path
}

/// A running agent and what it printed so far.
struct Agent {
    /// The listener's base URL (`http://127.0.0.1:PORT/`).
    url: String,
    child: Child,
    err: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts the agent and waits until it runs its schedule (its signal
/// handlers are in place then).
fn start(env: &Env, cfg: &Path, extra: &[(&str, &str)]) -> Agent {
    start_with(env.cmd(), cfg, extra)
}

/// [`start`] with every backup held before its snapshot is stored until
/// the file returned is written.
fn start_held(env: &Env, cfg: &Path) -> (Agent, PathBuf) {
    let release = env.path("release");
    let agent = start(
        env,
        cfg,
        &[
            ("LIFEBOAT_FAILPOINTS", "before-snapshot-stored=pause"),
            ("LIFEBOAT_FAILPOINT_RELEASE", release.to_str().unwrap()),
        ],
    );
    (agent, release)
}

/// [`start`] with a command that already names the repository and key.
fn start_with(mut c: std::process::Command, cfg: &Path, extra: &[(&str, &str)]) -> Agent {
    c.arg("--config")
        .arg(cfg)
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("start the agent");
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = err.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut agent = Agent {
        url: String::new(),
        child,
        err,
        reader: Some(reader),
    };
    wait_until(
        "the agent runs its schedule",
        Duration::from_secs(60),
        || {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!(
                    "the agent exited with {status}: {}",
                    agent.err.lock().unwrap()
                );
            }
            agent
                .err
                .lock()
                .unwrap()
                .contains("running the schedule")
                .then_some(())
        },
    );
    agent.url = agent
        .err
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    agent.err.lock().unwrap().clear();
    agent
}

impl Agent {
    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }
}

/// SIGTERM, then its exit (within `within`) and what it printed.
fn stop(mut agent: Agent, within: Duration) -> (ExitStatus, String) {
    agent.signal(rustix::process::Signal::TERM);
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            // The reader ends with the pipe.
            if let Some(r) = agent.reader.take() {
                r.join().unwrap();
            }
            let err = agent.err.lock().unwrap().clone();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = agent.child.kill();
            panic!(
                "the agent did not stop within {within:?} of SIGTERM: {}",
                agent.err.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every job record, oldest first (read without the config file, which a
/// test may have broken on purpose).
fn jobs(env: &Env, _cfg: &Path) -> Vec<Value> {
    let v = env.json(&["jobs", "--last", "0"]);
    v.as_array().unwrap().clone()
}

/// Polls `f` until it gives a value or `timeout` passes (then fails with
/// `what`).
fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn outcomes(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

fn redis_snapshots(env: &Env) -> usize {
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source_kind"] == "redis")
        .count()
}

#[test]
fn the_agent_runs_the_schedule_and_records_every_run() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 2s", "");
    let agent = start(&env, &cfg, &[]);
    // It limits its malloc arenas (a flat RSS over months).
    let environ = std::fs::read(format!("/proc/{}/environ", agent.child.id())).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"MALLOC_ARENA_MAX=2"),
        "the agent runs without MALLOC_ARENA_MAX=2"
    );
    let done = wait_until(
        "two scheduled backups succeeded",
        Duration::from_secs(60),
        || {
            let j = jobs(&env, &cfg);
            let ok: Vec<Value> = j
                .into_iter()
                .filter(|r| r["outcome"] == "success")
                .collect();
            (ok.len() >= 2).then_some(ok)
        },
    );
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "the agent's exit: {status}\n{err}");
    for rec in &done {
        assert_eq!(rec["job"], "redis.cache.backup");
        assert_eq!(rec["source"], "cache");
        assert_eq!(rec["source_kind"], "redis");
        assert_eq!(rec["trigger"], "schedule");
        assert!(rec["scheduled"].is_string());
        assert!(rec["bytes_read"].as_u64().unwrap() > 16_000_000, "{rec}");
        let snap = rec["snapshot"].as_str().unwrap();
        // The snapshot the record names exists.
        env.ok(&["ls", snap]);
    }
    assert!(redis_snapshots(&env) >= 2);
    // The second backup of unchanged data stored little new (the chunk
    // holding the RDB header, which changes).
    let second = &done[1];
    assert!(
        second["bytes_stored"].as_u64().unwrap() < second["bytes_read"].as_u64().unwrap() / 4,
        "{second}"
    );
    // status: the source is protected; metrics: the success is exported.
    let st = env.json(&["--config", cfg.to_str().unwrap(), "status"]);
    let src = &st["sources"][0];
    assert_eq!(src["name"], "cache");
    assert_eq!(src["health"], "green", "{st}");
    let metrics = env.ok(&["--config", cfg.to_str().unwrap(), "metrics"]);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "lifeboat_backup_last_success_timestamp_seconds{source=\"cache\",kind=\"redis\",type=\"backup\"}",
            )
        })
        .unwrap_or_else(|| panic!("no last-success metric in:\n{metrics}"));
    let t: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(t > 1.7e9, "{line}");
    // --json listing of the failed runs only: none.
    let failed = env.json(&["--config", cfg.to_str().unwrap(), "jobs", "--failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 0, "{failed}");
}

#[test]
fn a_run_still_going_when_due_is_skipped_never_doubled() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 1s", "");
    let (agent, release) = start_held(&env, &cfg);
    // The first run waits before its snapshot; the next fire times find it
    // still going.
    wait_until("two runs were skipped", Duration::from_secs(60), || {
        let j = jobs(&env, &cfg);
        (outcomes(&j).iter().filter(|o| *o == "skipped").count() >= 2).then_some(())
    });
    std::fs::write(&release, "").unwrap();
    wait_until("a run succeeded", Duration::from_secs(60), || {
        outcomes(&jobs(&env, &cfg))
            .contains(&"success".to_string())
            .then_some(())
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // No two runs of the job overlapped.
    let runs: Vec<(String, String)> = jobs(&env, &cfg)
        .iter()
        .filter(|r| r["outcome"] != "skipped")
        .map(|r| {
            (
                r["started"].as_str().unwrap().to_string(),
                r["finished"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let parse = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
    for w in runs.windows(2) {
        assert!(
            parse(&w[1].0) >= parse(&w[0].1),
            "runs overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let skipped: Vec<Value> = jobs(&env, &cfg)
        .into_iter()
        .filter(|r| r["outcome"] == "skipped")
        .collect();
    assert!(skipped[0]["error"]
        .as_str()
        .unwrap()
        .contains("previous run was still going"));
}

#[test]
fn a_run_past_its_timeout_is_stopped_and_the_next_reuses_its_packs() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(
        &env,
        &r.url(),
        "@every 2s",
        "job_timeout = \"3s\"\nretries = 0",
    );
    let (agent, release) = start_held(&env, &cfg);
    let timed_out = wait_until("a run timed out", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .find(|r| r["outcome"] == "timeout")
    });
    assert!(
        timed_out["error"].as_str().unwrap().contains("job_timeout"),
        "{timed_out}"
    );
    // Stopped before its snapshot: none was recorded.
    assert_eq!(redis_snapshots(&env), 0);
    std::fs::write(&release, "").unwrap();
    let ok = wait_until("the next run succeeded", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .find(|r| r["outcome"] == "success")
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // Its packs were indexed before it was stopped: the next run stored
    // little of the 16 MiB it read (the chunk with the RDB header).
    let (read, stored) = (
        ok["bytes_read"].as_u64().unwrap(),
        ok["bytes_stored"].as_u64().unwrap(),
    );
    assert!(
        read > 16_000_000 && stored < read / 4,
        "read {read}, stored {stored}"
    );
    let successes = jobs(&env, &cfg)
        .iter()
        .filter(|r| r["outcome"] == "success")
        .count();
    assert_eq!(redis_snapshots(&env), successes);
}

#[test]
fn sigterm_lets_a_running_job_finish_within_grace_then_cancels_it() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 1s", "grace = \"2s\"");
    let (agent, release) = start_held(&env, &cfg);
    // A run is held; the next fire time records a skip, so the run is
    // surely going.
    wait_until("a run is going", Duration::from_secs(60), || {
        outcomes(&jobs(&env, &cfg))
            .contains(&"skipped".to_string())
            .then_some(())
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "the agent's exit: {status}\n{err}");
    let j = jobs(&env, &cfg);
    let last = j.iter().rev().find(|r| r["outcome"] != "skipped").unwrap();
    assert_eq!(last["outcome"], "cancelled", "{j:?}");
    assert!(last["error"].as_str().unwrap().contains("grace"), "{last}");
    assert_eq!(redis_snapshots(&env), 0);
    // Nothing of the run goes on after the agent: released now, no
    // snapshot appears.
    std::fs::write(&release, "").unwrap();
    assert_eq!(redis_snapshots(&env), 0);
}

#[test]
fn a_transient_failure_is_retried_and_damage_is_not() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    // Redis is not there: "connection refused" may pass, so it is retried.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(
        &env,
        &format!("redis://127.0.0.1:{closed}"),
        "@every 2s",
        "retries = 2",
    );
    let agent = start(&env, &cfg, &[]);
    let attempts = wait_until("three attempts of one run", Duration::from_secs(60), || {
        let j = jobs(&env, &cfg);
        let a: Vec<Value> = j.into_iter().filter(|r| r["outcome"] == "failed").collect();
        (a.iter().any(|r| r["attempt"] == 3)).then_some(a)
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    let first = attempts.iter().position(|r| r["attempt"] == 1).unwrap();
    let run = &attempts[first..first + 3];
    assert_eq!(
        run.iter()
            .map(|r| r["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(run[1]["trigger"], "retry");
    for r in run {
        assert_eq!(r["error_class"], "transient");
        assert!(
            r["error"].as_str().unwrap().contains("Connection refused"),
            "{r}"
        );
    }
    // No fourth attempt: retries = 2.
    assert!(!attempts.iter().any(|r| r["attempt"] == 4));

    // Damage is not retried: a verify of a repository with a broken pack.
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), random_bytes(100_000, 1)).unwrap();
    env.ok(&["files", "backup", data.to_str().unwrap()]);
    for p in crate::harness::files_below(&Path::new(&env.repo).join("packs")) {
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        std::fs::write(&p, b).unwrap();
    }
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        "[repository]\nschedule.verify = \"@every 2s\"\nverify_read_data_subset = \"all\"\n[agent]\nlisten = \"127.0.0.1:0\"\nrefresh = \"1s\"\nretry_backoff = \"1s\"\nretries = 3\n",
    )
    .unwrap();
    let agent = start(&env, &cfg, &[]);
    let damaged = wait_until("a verify found the damage", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .find(|r| r["outcome"] == "failed")
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_eq!(damaged["error_class"], "damage", "{damaged}");
    assert!(
        !jobs(&env, &cfg).iter().any(|r| r["trigger"] == "retry"),
        "damage was retried"
    );
}

#[test]
fn a_run_missed_while_the_agent_was_down_runs_once_at_start() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 3s", "");
    let agent = start(&env, &cfg, &[]);
    let first = wait_until("a run succeeded", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .find(|r| r["outcome"] == "success")
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // Down past a fire time: the next start catches up at once.
    let last_start = jobs(&env, &cfg)
        .iter()
        .map(|r| {
            r["started"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
        })
        .max()
        .unwrap();
    wait_until(
        "a fire time passed while the agent was down",
        Duration::from_secs(30),
        || {
            (jiff::Timestamp::now().duration_since(last_start) > jiff::SignedDuration::from_secs(4))
                .then_some(())
        },
    );
    let before = jobs(&env, &cfg).len();
    let agent = start(&env, &cfg, &[]);
    let caught = wait_until("the missed run ran", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .skip(before)
            .find(|r| r["outcome"] != "skipped")
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_eq!(caught["trigger"], "catch-up", "{caught}");
    assert_eq!(caught["outcome"], "success", "{caught}");
    assert_ne!(caught["id"], first["id"]);

    // With catch_up = false the first run after a start is a scheduled one.
    let cfg = config(&env, &r.url(), "@every 3s", "catch_up = false");
    let before = jobs(&env, &cfg).len();
    let agent = start(&env, &cfg, &[]);
    let next = wait_until("a run ran", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .into_iter()
            .skip(before)
            .find(|r| r["outcome"] != "skipped")
    });
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_eq!(next["trigger"], "schedule", "{next}");
}

#[test]
fn a_bad_config_is_refused_at_start_with_its_line_and_a_reload_keeps_the_schedule() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "0 25 * * *", "");
    let out = env
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "agent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("line 3") && e.contains("schedule.backup"), "{e}");
    // Nothing scheduled at all is refused too.
    std::fs::write(&cfg, "[agent]\nrefresh = \"1s\"\n").unwrap();
    let out = env
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "agent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("schedules nothing"),
        "{}",
        stderr(&out)
    );

    // Started with nothing due for an hour; SIGHUP after a change runs the
    // new schedule; a broken file on reload keeps it.
    let cfg = config(&env, &r.url(), "@every 1h", "");
    let agent = start(&env, &cfg, &[]);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("@every 1h", "@every 1s"),
    )
    .unwrap();
    agent.signal(rustix::process::Signal::HUP);
    wait_until("the reloaded schedule ran", Duration::from_secs(60), || {
        outcomes(&jobs(&env, &cfg))
            .contains(&"success".to_string())
            .then_some(())
    });
    std::fs::write(&cfg, "[redis.cache\nbroken").unwrap();
    agent.signal(rustix::process::Signal::HUP);
    let n = jobs(&env, &cfg).len();
    let later = wait_until(
        "runs go on under the old schedule",
        Duration::from_secs(60),
        || {
            let j = jobs(&env, &cfg);
            (j.len() >= n + 2).then(|| j[n..].to_vec())
        },
    );
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert!(err.contains("does not load"), "{err}");
    // And they work: the runs get the last config that loaded, not the
    // broken file.
    let ran: Vec<&Value> = later.iter().filter(|r| r["outcome"] != "skipped").collect();
    assert!(!ran.is_empty(), "{later:?}");
    assert!(
        ran.iter().all(|r| r["outcome"] == "success"),
        "runs after a broken edit failed: {ran:?}"
    );
}

#[test]
fn postgres_backups_run_on_schedule_and_the_wal_archive_is_watched() {
    use lifeboat_testkit::postgres::PgCluster;
    let env = crate::pg::PgEnv::new();
    let pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table t (id int primary key, v text); \
         insert into t select g, md5(g::text) from generate_series(1, 20000) g",
    )
    .unwrap();
    let cfg = env.dir.path().join("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[postgres.main]\npgdata = \"{}\"\npg_url = \"{}\"\nschedule.full = \"@every 4s\"\nschedule.incr = \"@every 2s\"\n[agent]\nlisten = \"127.0.0.1:0\"\nrefresh = \"1s\"\n",
            pg.pgdata.display(),
            pg.conninfo("postgres")
        ),
    )
    .unwrap();
    let jobs = || -> Vec<Value> {
        let out = env.ok(&["--json", "jobs", "--last", "0"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let agent = start_with(env.cmd(), &cfg, &[]);
    // An incremental needs a full before it (until then it is a full
    // itself): wait for one that started after a full ended.
    let ts = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    wait_until(
        "an incremental after a full succeeded",
        Duration::from_secs(120),
        || {
            let j = jobs();
            let ok = |r: &&Value, ty: &str| r["job_type"] == ty && r["outcome"] == "success";
            let first_full = j
                .iter()
                .filter(|r| ok(r, "full"))
                .map(|r| ts(&r["finished"]))
                .min()?;
            j.iter()
                .any(|r| ok(&r, "incr") && ts(&r["started"]) > first_full)
                .then_some(())
        },
    );
    // The running agent watches the archive too (every tenth refresh reads
    // it through a `pg info` child).
    wait_until(
        "the agent exports the WAL archive's newest segment",
        Duration::from_secs(60),
        || {
            let (_, m) = http_get(&format!("{}metrics", agent.url), None);
            m.lines()
                .any(|l| {
                    l.starts_with("lifeboat_wal_archive_newest_timestamp_seconds{source=\"main\"}")
                })
                .then_some(())
        },
    );
    let (status, err) = stop(agent, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    let j = jobs();
    // Every successful run names a base backup of its type.
    let info = env.ok(&["--json", "pg", "info"]);
    let info: Value = serde_json::from_str(&info).unwrap();
    let backup_of = |r: &Value| -> Value {
        let snap = r["snapshot"].as_str().unwrap();
        info["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"].as_str().is_some_and(|s| s == snap))
            .unwrap_or_else(|| panic!("{snap} is not a base backup: {info}"))
            .clone()
    };
    let first_full = j
        .iter()
        .filter(|r| r["job_type"] == "full" && r["outcome"] == "success")
        .map(|r| ts(&r["finished"]))
        .min()
        .unwrap();
    for r in j.iter().filter(|r| r["outcome"] == "success") {
        let b = backup_of(r);
        if r["job_type"] == "full" || ts(&r["started"]) > first_full {
            assert_eq!(b["type"], r["job_type"], "{b} / {r}");
        }
    }
    assert!(
        !j.iter().any(|r| r["outcome"] == "failed"),
        "failed runs: {j:?}"
    );
    // The WAL archive is watched: the newest segment's time and the
    // archiver's lag are exported for the source.
    let cfg_s = cfg.to_str().unwrap();
    let metrics = env.ok(&["--config", cfg_s, "metrics"]);
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{source=\"main\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(value("lifeboat_wal_archive_newest_timestamp_seconds") > 1.7e9);
    assert!(value("lifeboat_wal_archiver_lag_seconds") >= 0.0);
    assert_eq!(value("lifeboat_wal_archiver_failed_count"), 0.0);
    let st: Value =
        serde_json::from_str(&env.ok(&["--json", "--config", cfg_s, "status"])).unwrap();
    assert_eq!(st["sources"][0]["health"], "green", "{st}");
    assert!(
        st["sources"][0]["wal_age_seconds"].as_f64().is_some(),
        "{st}"
    );
    // The password of a connection string never reaches the status.
    assert!(!st.to_string().contains("password"), "{st}");
}

#[test]
fn backups_run_by_hand_or_cron_are_recorded_and_written_for_node_exporter() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 6h", "");
    let c = cfg.to_str().unwrap();
    env.ok(&["--config", c, "redis", "backup", "cache"]);
    // The same source, its server gone: a failed run, recorded too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&r.url(), &format!("redis://:hunter2@127.0.0.1:{closed}")),
    )
    .unwrap();
    let out = env.run(&["--config", c, "redis", "backup", "cache"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = jobs(&env, &cfg);
    assert_eq!(outcomes(&j), ["success", "failed"], "{j:?}");
    for rec in &j {
        assert_eq!(rec["job"], "redis.cache.backup");
        assert_eq!(rec["trigger"], "manual");
    }
    assert!(j[0]["snapshot"].is_string() && j[0]["bytes_read"].as_u64().unwrap() > 16_000_000);
    assert_eq!(j[1]["error_class"], "transient");
    assert!(
        !j[1].to_string().contains("hunter2"),
        "a password in the history: {}",
        j[1]
    );
    // A backup without a config source (an ad-hoc URL) is not a job.
    env.ok(&["redis", "backup", "--redis-url", &r.url()]);
    assert_eq!(jobs(&env, &cfg).len(), 2);

    // The textfile for node_exporter: written whole, in the text format
    // Prometheus reads (promtool checks it), with the runs above.
    let prom = env.path("textfile/lifeboat.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    env.ok(&[
        "--config",
        c,
        "metrics",
        "--textfile",
        prom.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&prom).unwrap();
    let series = "{source=\"cache\",kind=\"redis\",type=\"backup\"}";
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{series} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("lifeboat_backup_last_success_timestamp_seconds") > 1.7e9);
    assert!(
        value("lifeboat_backup_last_failure_timestamp_seconds")
            > value("lifeboat_backup_last_success_timestamp_seconds")
    );
    assert_eq!(value("lifeboat_backup_failures_total"), 1.0);
    assert!(
        text.contains("lifeboat_repository_up{repository=\"default\"} 1"),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the file itself: {leftovers:?}");
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // status says the source is not healthy: its last run failed.
    let st = env.json(&["--config", c, "status"]);
    assert_eq!(st["sources"][0]["health"], "amber", "{st}");
    assert!(!st.to_string().contains("hunter2"));
}

/// A webhook receiver on loopback: every JSON body POSTed to it.
struct Receiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

fn receiver() -> Receiver {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = bodies.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    sink.lock().unwrap().push(v);
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    Receiver { url, bodies }
}

#[test]
fn a_failing_backup_is_notified_and_the_next_good_run_resolves_it() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let hook = receiver();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bad_url = format!("redis://127.0.0.1:{closed}");
    let notify = format!(
        "retries = 0\n\n[[notify]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url
    );
    let cfg = config(&env, &bad_url, "@every 2s", &notify);
    let agent = start(&env, &cfg, &[]);
    let firing = wait_until("the failure was notified", Duration::from_secs(60), || {
        hook.bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b["status"] == "firing")
            .cloned()
    });
    let alert = &firing["alerts"][0];
    assert_eq!(
        alert["labels"]["alertname"], "LifeboatBackupFailed",
        "{firing}"
    );
    assert_eq!(alert["labels"]["source"], "cache");
    assert_eq!(firing["version"], "4");
    // lifeboat status says so too: its condition holds (one look cannot
    // tell for how long, so it is not called firing).
    let st = env.json(&["--config", cfg.to_str().unwrap(), "status"]);
    assert!(
        st["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alertname"] == "LifeboatBackupFailed" && a["firing"] == false),
        "{st}"
    );
    let text = env.ok(&["--config", cfg.to_str().unwrap(), "status"]);
    assert!(text.contains("holds now: LifeboatBackupFailed"), "{text}");
    // The server comes back (the config is fixed; the agent reloads it):
    // the next good run resolves the alert.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&bad_url, &r.url()),
    )
    .unwrap();
    let resolved = wait_until(
        "the resolution was notified",
        Duration::from_secs(60),
        || {
            hook.bodies
                .lock()
                .unwrap()
                .iter()
                .find(|b| b["status"] == "resolved")
                .cloned()
        },
    );
    assert_eq!(
        resolved["alerts"][0]["labels"]["alertname"],
        "LifeboatBackupFailed"
    );
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // Sent once while firing (repeat_interval is 4 h), not on every run.
    let firings = hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| {
            b["status"] == "firing"
                && b["alerts"][0]["labels"]["alertname"] == "LifeboatBackupFailed"
        })
        .count();
    assert_eq!(firings, 1);
}

/// `GET url` over plain HTTP/1.1 on loopback: (status, body).
fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The listener answers with a length or chunks; de-chunk if needed.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, body)
}

#[test]
fn the_running_agent_serves_metrics_and_a_status_page_chromium_reads_as_status_says() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 3s", "");
    let agent = start(&env, &cfg, &[]);
    assert!(agent.url.starts_with("http://127.0.0.1:"), "{}", agent.url);
    wait_until("two backups succeeded", Duration::from_secs(60), || {
        (outcomes(&jobs(&env, &cfg))
            .iter()
            .filter(|o| *o == "success")
            .count()
            >= 2)
            .then_some(())
    });
    // Prometheus' view: the success is there, in the text format.
    let (code, metrics) = http_get(&format!("{}metrics", agent.url), None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lifeboat_backup_last_success_timestamp_seconds{source=\"cache\",kind=\"redis\",type=\"backup\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_job_running{job=\"redis.cache.backup\"}"),
        "{metrics}"
    );
    // The same knowledge as `lifeboat status --json`, read now.
    let (code, api) = http_get(&format!("{}api/status", agent.url), None);
    assert_eq!(code, 200);
    let api: Value = serde_json::from_str(&api).unwrap();
    let shot = env.path("status-page.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/browser/check-page.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(&agent.url)
        .arg(&shot)
        .output()
        .expect("node (scripts/test.sh installs Chromium and playwright-core)");
    assert!(
        out.status.success(),
        "check-page.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // After the agent stopped, nothing changes: `lifeboat status` reads
    // the same history from the repository.
    let st = env.json(&["--config", cfg.to_str().unwrap(), "status"]);
    assert_eq!(page["http_status"], 200);
    assert_eq!(page["script_elements"], 0);
    assert_eq!(
        page["console_errors"].as_array().unwrap().len(),
        0,
        "{page}"
    );
    let src = &page["sources"][0];
    let want = &st["sources"][0];
    assert_eq!(src["name"], want["name"]);
    assert_eq!(src["health"], want["health"]);
    assert_eq!(src["health"], "green");
    // The last good backup the page shows is one status knows; the agent
    // may have finished another since the page was read.
    let page_time = src["backup_time"].as_str().unwrap();
    let history = want["history"].as_array().unwrap();
    let shown = history
        .iter()
        .find(|p| p["time"].as_str() == Some(page_time))
        .unwrap_or_else(|| {
            panic!("the page's last backup {page_time} is not in status' history: {want}")
        });
    assert_eq!(src["size_bytes"], shown["size_bytes"]);
    assert_eq!(src["backup_type"], shown["type"]);
    assert_eq!(api["sources"][0]["name"], "cache");
    assert!(src["chart"]["points"].as_u64().unwrap() >= 2, "{src}");
    assert!(page["log"].as_array().unwrap().len() >= 2);
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artefacts");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&shot, keep.join("agent-status-page.png")).unwrap();
    println!(
        "agent status page screenshot: {}",
        keep.join("agent-status-page.png").display()
    );
}

#[test]
fn a_listener_off_loopback_needs_a_token_and_checks_it() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let cfg = config(&env, &r.url(), "@every 1h", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", "0.0.0.0:0");
    std::fs::write(&cfg, &text).unwrap();
    let out = env
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "agent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("listen_token_file"),
        "{}",
        stderr(&out)
    );
    let token_file = env.path("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "[agent]\n",
            &format!(
                "[agent]\nlisten_token_file = \"{}\"\n",
                token_file.display()
            ),
        ),
    )
    .unwrap();
    let agent = start(&env, &cfg, &[]);
    let port = agent.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let base = format!("http://127.0.0.1:{port}/");
    assert_eq!(http_get(&format!("{base}metrics"), None).0, 401);
    assert_eq!(http_get(&format!("{base}metrics"), Some("wrong")).0, 401);
    let (code, page) = http_get(&base, Some("s3cret-token-0123456789"));
    assert_eq!(code, 200);
    assert!(page.contains("cache"));
    assert!(!page.contains("s3cret-token"), "the token is never shown");
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
}

/// A server process of the test, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `program`, or a failure saying what installs it.
fn debian_program(program: &str, package: &str) -> String {
    let path = format!("/usr/bin/{program}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: Debian's {package} package has it (scripts/test.sh installs it)"
    );
    path
}

#[test]
fn prometheus_scrapes_the_agent_and_alertmanager_delivers_the_strategy_s_alerts() {
    let prometheus = debian_program("prometheus", "prometheus");
    let alertmanager = debian_program("prometheus-alertmanager", "prometheus-alertmanager");
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let (_d, r) = redis();
    let hook = receiver();
    let bad_url = format!("redis://127.0.0.1:{}", free_port());
    let cfg = config(&env, &bad_url, "@every 2s", "retries = 0");
    let c = cfg.to_str().unwrap();
    // The rules Prometheus evaluates are the ones lifeboat writes.
    let rules = env.path("lifeboat-rules.yml");
    std::fs::write(&rules, env.ok(&["--config", c, "alerts", "rules"])).unwrap();
    let agent = start(&env, &cfg, &[]);
    let agent_addr = agent
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    let am_port = free_port();
    let am_dir = env.path("alertmanager");
    std::fs::create_dir_all(&am_dir).unwrap();
    std::fs::write(
        am_dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, source]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            hook.url
        ),
    )
    .unwrap();
    let _am = Server(
        std::process::Command::new(&alertmanager)
            .arg(format!(
                "--config.file={}",
                am_dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", am_dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(am_dir.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let p_dir = env.path("prometheus");
    std::fs::create_dir_all(&p_dir).unwrap();
    std::fs::write(
        p_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n  - job_name: lifeboat\n    static_configs:\n      - targets: ['{agent_addr}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prom = Server(
        std::process::Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                p_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                p_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
            .arg("--rules.alert.resend-delay=1s")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p_dir.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = |name: &str| std::fs::read_to_string(env.path(name)).unwrap_or_default();
    let from_alertmanager = |status: &str| {
        hook.bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| {
                b["status"] == status
                    && b["receiver"] == "hook"
                    && b["alerts"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|x| x["labels"]["alertname"] == "LifeboatBackupFailed")
                    })
            })
            .cloned()
    };
    let firing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "Alertmanager delivered the failure",
            Duration::from_secs(120),
            || from_alertmanager("firing"),
        )
    }))
    .unwrap_or_else(|_| {
        panic!(
            "no alert arrived; prometheus log:\n{}\nalertmanager log:\n{}",
            log("prometheus/log"),
            log("alertmanager/log")
        )
    });
    let a = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["labels"]["alertname"] == "LifeboatBackupFailed")
        .unwrap()
        .clone();
    assert_eq!(a["labels"]["source"], "cache", "{a}");
    assert_eq!(a["labels"]["job"], "lifeboat", "{a}");
    assert_eq!(a["labels"]["severity"], "critical", "{a}");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("cache"),
        "{a}"
    );
    // The server is back: the next good run resolves it.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&bad_url, &r.url()),
    )
    .unwrap();
    wait_until(
        "Alertmanager delivered the resolution",
        Duration::from_secs(120),
        || from_alertmanager("resolved"),
    );
    let (status, err) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{err}");
}

/// The value of the sample `series` (`name{labels}`) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The agent with a replica in a second region (a real Garage): it keeps
/// `replicate --follow` running, so a new backup reaches the replica
/// without a command; it runs the scheduled whole pass and records it;
/// and it exports the replica's lag and health — 0 lag and up, then down
/// (`lifeboat_repository_up{repository="dr"} 0`) once the region stops.
#[test]
fn the_agent_keeps_replicas_current_and_exports_their_lag_and_health() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let mut dr = lifeboat_testkit::garage::Garage::start().expect("start Garage");
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[replica]]\nname = \"dr\"\nrepo = \"s3://{}/prod\"\n\n[replica.s3]\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\n[storage]\ntimeout_secs = 2\nmax_attempts = 2\n\n[repository]\nreplicate_follow = true\nschedule.replicate = \"@every 4s\"\n\n[agent]\nlisten = \"127.0.0.1:0\"\nrefresh = \"1s\"\nreplica_refresh = \"1s\"\ncost_refresh = \"1s\"\nretries = 0\n",
            dr.bucket, dr.endpoint, dr.region, dr.access_key_id, dr.secret_access_key
        ),
    )
    .unwrap();
    let agent = start(&env, &cfg, &[]);

    // A backup made by hand reaches the replica through the follower.
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), random_bytes(300_000, 17)).unwrap();
    let made = env.json(&["files", "backup", data.to_str().unwrap()]);
    let id = made["snapshot"].as_str().unwrap().to_string();
    let replica = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("LIFEBOAT_REPO", format!("s3://{}/prod", dr.bucket))
            .env("LIFEBOAT_S3_ENDPOINT", &dr.endpoint)
            .env("AWS_REGION", &dr.region)
            .env("AWS_ACCESS_KEY_ID", &dr.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &dr.secret_access_key)
            .args(args)
            .output()
            .unwrap()
    };
    wait_until(
        "the backup reaches the replica",
        Duration::from_secs(60),
        || {
            let out = replica(&["--json", "snapshots"]);
            String::from_utf8_lossy(&out.stdout)
                .contains(&id)
                .then_some(())
        },
    );
    let out = replica(&["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Lag and health, as Prometheus reads them.
    let metrics = wait_until("the replica's figures", Duration::from_secs(60), || {
        let (_, m) = http_get(&format!("{}metrics", agent.url), None);
        (sample(
            &m,
            "lifeboat_replica_lag_seconds{repository=\"default\",replica=\"dr\"}",
        ) == Some(0.0)
            && sample(&m, "lifeboat_repository_up{repository=\"dr\"}") == Some(1.0))
        .then_some(m)
    });
    assert_eq!(
        sample(&metrics, "lifeboat_repository_up{repository=\"default\"}"),
        Some(1.0),
        "{metrics}"
    );
    // The status page shows the replica and what it all costs.
    let api = wait_until("the status has the cost", Duration::from_secs(60), || {
        let (_, body) = http_get(&format!("{}api/status", agent.url), None);
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["cost"]["repositories"].as_array()?.len() == 2).then_some(v)
    });
    assert_eq!(api["replicas"][0]["name"], "dr", "{api}");
    assert_eq!(api["replicas"][0]["up"], true, "{api}");
    assert!(
        api["cost"]["monthly_total"].as_f64().unwrap() > 0.0,
        "{api}"
    );
    let (_, html) = http_get(&agent.url, None);
    assert!(
        html.contains("data-replica=\"dr\" data-state=\"up\"")
            && html.contains("data-cost-monthly"),
        "{html}"
    );
    // The scheduled whole pass is a job like the others.
    wait_until("a recorded replicate run", Duration::from_secs(60), || {
        jobs(&env, &cfg)
            .iter()
            .any(|r| r["job"] == "repository.replicate" && r["outcome"] == "success")
            .then_some(())
    });

    // The second region goes down: its health says so.
    dr.stop();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, m) = http_get(&format!("{}metrics", agent.url), None);
        if sample(&m, "lifeboat_repository_up{repository=\"dr\"}") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica is not reported down:\n{}\nagent: {}",
            m.lines()
                .filter(|l| l.contains("repository_up") || l.contains("replica_lag"))
                .collect::<Vec<_>>()
                .join("\n"),
            agent.err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, _) = stop(agent, Duration::from_secs(60));
    assert!(status.success(), "{status}");
}
