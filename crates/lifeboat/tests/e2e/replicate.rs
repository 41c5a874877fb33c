//! Replicas end to end: two real Garage servers as two regions. Back up
//! and archive WAL to the first, `replicate` to the second, lose the first
//! for good, and restore from the second with only its URL, its
//! credentials and the key — PostgreSQL to a point in time, Redis, files.
//! `replicate` killed at random points leaves a replica that verifies; a
//! faulty network between the regions is survived with retries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_testkit::garage::Garage;
use lifeboat_testkit::netfault::{FaultPlan, FaultyLink};
use lifeboat_testkit::postgres::{give_to_owner, LocalServer, PgCluster};

use crate::harness::succeeded;

/// Two regions: a Garage each, a key, and two config files: `primary.toml`
/// (the repository in the first region, its replica `dr` in the second)
/// and `dr.toml` (what an operator writes once the first region is gone:
/// the replica as the repository).
pub struct Regions {
    pub dir: tempfile::TempDir,
    pub primary: Garage,
    pub dr: Garage,
    pub exe: PathBuf,
    pub config: PathBuf,
    pub dr_config: PathBuf,
    /// The faulty network between the regions, when the test has one.
    pub link: Option<FaultyLink>,
}

fn s3_section(g: &Garage, endpoint: &str) -> String {
    format!(
        "endpoint = \"{endpoint}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        g.region, g.access_key_id, g.secret_access_key
    )
}

impl Regions {
    /// Two Garages and the config files; the replica's deletions wait
    /// `delete_delay`; with `faults`, the replica is reached through a
    /// faulty link.
    pub fn new(delete_delay: &str, faults: Option<FaultPlan>) -> Regions {
        let dir = tempfile::tempdir().unwrap();
        let primary = Garage::start().expect("start the first region's Garage");
        let dr = Garage::start().expect("start the second region's Garage");
        let link = faults.map(|plan| {
            let upstream = dr
                .endpoint
                .trim_start_matches("http://")
                .parse()
                .expect("Garage's address");
            FaultyLink::start(upstream, plan).expect("start the faulty link")
        });
        let key = dir.path().join("key");
        fs::write(&key, "0123456789abcdef0123456789abcdef-replica-tests\n").unwrap();
        // archive_command runs as the postgres user: a copy of the binary
        // beside the config files, all of it readable by that user.
        let exe = dir.path().join("lifeboat");
        fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &exe).unwrap();
        let replica_endpoint = link.as_ref().map_or(dr.endpoint.clone(), |l| l.url());
        let config = dir.path().join("primary.toml");
        fs::write(
            &config,
            format!(
                "repo = \"s3://{}/prod\"\nkey_file = \"{}\"\n\n[s3]\n{}\n[storage]\ntimeout_secs = 3\nmax_attempts = 10\n\n[[replica]]\nname = \"dr\"\nrepo = \"s3://{}/prod\"\ndelete_delay = \"{delete_delay}\"\n\n[replica.s3]\n{}",
                primary.bucket,
                key.display(),
                s3_section(&primary, &primary.endpoint),
                dr.bucket,
                s3_section(&dr, &replica_endpoint),
            ),
        )
        .unwrap();
        let dr_config = dir.path().join("dr.toml");
        fs::write(
            &dr_config,
            format!(
                "repo = \"s3://{}/prod\"\nkey_file = \"{}\"\n\n[s3]\n{}",
                dr.bucket,
                key.display(),
                s3_section(&dr, &dr.endpoint),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        give_to_owner(dir.path()).unwrap();
        let r = Regions {
            dir,
            primary,
            dr,
            exe,
            config,
            dr_config,
            link,
        };
        r.ok(&["repo", "init"]);
        r
    }

    fn with(&self, config: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null());
        c
    }

    /// lifeboat on the primary (its config names the replica).
    pub fn cmd(&self) -> Command {
        self.with(&self.config)
    }

    /// lifeboat on the replica, as the repository.
    pub fn dr_cmd(&self) -> Command {
        self.with(&self.dr_config)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.cmd().args(args).output().unwrap())
    }

    pub fn dr_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.dr_cmd().args(args).output().unwrap())
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn dr_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.dr_ok(&a)).unwrap()
    }

    /// `replicate --json`, asserted to succeed with nothing damaged; the
    /// report of the replica.
    pub fn replicate(&self) -> serde_json::Value {
        let v = self.json(&["replicate"]);
        let r = v["replicas"][0].clone();
        assert_eq!(r["damaged"], serde_json::json!([]), "{v}");
        r
    }

    /// `verify --read-data` on the replica, asserted clean.
    pub fn dr_verify(&self) {
        let v = self.dr_json(&["verify", "--read-data"]);
        assert_eq!(v["damaged"], serde_json::json!([]), "{v}");
        assert_eq!(v["broken_snapshots"], serde_json::json!([]), "{v}");
    }
}

/// The newest WAL segment of the first cluster on (primary, replica), as
/// `replicate --status --json` says.
fn wal_ends(r: &Regions) -> (Option<String>, Option<String>) {
    let v = r.json(&["replicate", "--status"]);
    let w = &v["replicas"][0]["wal"][0];
    let s = |x: &serde_json::Value| x.as_str().map(String::from);
    (s(&w["primary"]), s(&w["replica"]))
}

/// Waits until the replica holds the primary's newest WAL segment, which
/// must be at least `segment`; fails after a minute naming both.
fn wait_shipped(r: &Regions, segment: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (primary, replica) = wal_ends(r);
        if primary.as_deref() >= Some(segment) && primary == replica {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "WAL {segment} did not reach the replica: newest {primary:?} on the primary, {replica:?} on the replica"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `replicate --follow` ships each new WAL segment to the replica without
/// a full pass; while the second region is down, `wal-push` (the archiver)
/// goes on unharmed and the follower reports the failure and tries again;
/// once the region is back, it catches up.
#[test]
fn follow_ships_new_wal_and_wal_push_never_waits_on_the_replica() {
    let mut r = Regions::new("7d", None);
    let archive = format!(
        "archive_mode = on\narchive_command = '{} --config {} pg wal-push %p'\narchive_timeout = 0\n",
        r.exe.display(),
        r.config.display()
    );
    let pg = PgCluster::start(&archive).unwrap();
    crate::pg::users_table(&pg);
    let url = pg.conninfo("postgres");
    r.ok(&[
        "pg",
        "backup",
        "--pgdata",
        pg.pgdata.to_str().unwrap(),
        "--pg-url",
        &url,
    ]);
    // A whole pass every hour: WAL can only come by the follower's
    // quick look.
    let mut follower = r
        .cmd()
        .args([
            "--json",
            "replicate",
            "--follow",
            "--interval",
            "300ms",
            "--full-every",
            "1h",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, events) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let first = events.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first["event"], "pass", "{first}");

    crate::pg::insert_users(&pg, 1001, 1100);
    let segment =
        lifeboat_scenarios::sandbox::pg::archive_now(&pg, Duration::from_secs(60)).unwrap();
    wait_shipped(&r, &segment);
    let shipped = events
        .try_iter()
        .find(|e| e["event"] == "wal")
        .expect("the segment came by a WAL event");
    assert!(shipped["objects"].as_u64().unwrap() >= 1, "{shipped}");

    // The second region goes down: archiving does not notice.
    r.dr.stop();
    crate::pg::insert_users(&pg, 1101, 1200);
    let during =
        lifeboat_scenarios::sandbox::pg::archive_now(&pg, Duration::from_secs(60)).unwrap();
    let failure = loop {
        let e = events.recv_timeout(Duration::from_secs(120)).unwrap();
        if e["event"] == "error" {
            break e;
        }
    };
    assert_eq!(failure["error"]["class"], "transient", "{failure}");
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower keeps going"
    );

    // Back: the follower catches up.
    r.dr.restart().unwrap();
    wait_shipped(&r, &during);
    follower.kill().unwrap();
    let _ = follower.wait();
    r.dr_verify();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The commands of `docs/runbooks/region-loss.md`: every line of its `sh`
/// blocks that runs `lifeboat`, split into words, comments dropped, the
/// runbook's paths and `$VARIABLES` replaced by `vars`.
fn runbook_commands(vars: &[(&str, String)]) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbooks/region-loss.md");
    let text = fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || !line.starts_with("lifeboat ") {
            continue;
        }
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        let mut any = false;
        for c in line.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                '#' if !quoted && word.is_empty() => break,
                c if c.is_whitespace() && !quoted => {
                    if any || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                        any = false;
                    }
                }
                c => word.push(c),
            }
        }
        if any || !word.is_empty() {
            words.push(word);
        }
        let words = words
            .into_iter()
            .skip(1)
            .map(|w| {
                vars.iter()
                    .fold(w, |w, (name, value)| w.replace(name, value))
            })
            .collect();
        out.push(words);
    }
    out
}

/// The first region is lost for good after backups of PostgreSQL, Redis
/// and files, some more writes and a replicate. The runbook's commands,
/// word for word, restore everything from the second region with only the
/// replica's URL, its credentials and the key (`dr.toml`): PostgreSQL to a
/// point in time, WAL fetched from the replica — every row committed
/// before the target and none after; Redis key for key; files byte for
/// byte.
#[test]
fn the_region_loss_runbook_restores_everything_from_the_replica() {
    let mut r = Regions::new("7d", None);
    let archive = format!(
        "archive_mode = on\narchive_command = '{} --config {} pg wal-push %p'\narchive_timeout = 0\n",
        r.exe.display(),
        r.config.display()
    );
    let mut pg = PgCluster::start(&archive).unwrap();
    crate::pg::users_table(&pg);
    let url = pg.conninfo("postgres");
    r.ok(&[
        "pg",
        "backup",
        "--pgdata",
        pg.pgdata.to_str().unwrap(),
        "--pg-url",
        &url,
    ]);
    let src = r.dir.path().join("data");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..4u8 {
        let bytes: Vec<u8> = (0..700_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 3)) as u8)
            .collect();
        fs::write(src.join(format!("sub/f{i}")), bytes).unwrap();
    }
    let files = r.json(&["files", "backup", src.to_str().unwrap()]);
    let (_redis_dir, redis) = crate::redis::server(&[]);
    crate::redis::fill(&redis.url());
    let want = crate::redis::contents(&redis.url());
    let rb = r.json(&["redis", "backup", "--redis-url", &redis.url()]);
    crate::pg::insert_users(&pg, 1001, 1100);
    let target_time = crate::pg::server_now(&pg);
    crate::pg::insert_users(&pg, 1101, 1200);
    crate::pg::archive_now(&pg);

    let report = r.replicate();
    assert_eq!(report["created"], true, "{report}");
    let status = r.json(&["replicate", "--status"]);
    let s = &status["replicas"][0];
    assert_eq!(s["up"], true, "{status}");
    assert_eq!(s["lag_seconds"], 0.0, "{status}");
    assert_eq!(s["missing"], serde_json::json!([]), "{status}");
    let wal = &s["wal"][0];
    assert!(wal["primary"].is_string(), "{status}");
    assert_eq!(wal["primary"], wal["replica"], "{status}");

    // The first region is gone.
    r.primary.stop();
    pg.stop().unwrap();
    let down = r.cmd().args(["snapshots"]).output().unwrap();
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));

    // The runbook, from the second region.
    let restore = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(restore.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_owner(restore.path()).unwrap();
    let pgdata = restore.path().join("data");
    let target = r.dir.path().join("restored");
    let rdir = tempfile::tempdir().unwrap();
    let commands = runbook_commands(&[
        ("/etc/lifeboat/dr.toml", r.dr_config.display().to_string()),
        ("$PGDATA", pgdata.display().to_string()),
        ("$TARGET_TIME", target_time.clone()),
        (
            "$REDIS_SNAPSHOT",
            rb["snapshot"].as_str().unwrap().to_string(),
        ),
        ("$REDIS_DIR", rdir.path().display().to_string()),
        (
            "$FILES_SNAPSHOT",
            files["snapshot"].as_str().unwrap().to_string(),
        ),
        ("$TARGET_DIR", target.display().to_string()),
    ]);
    assert!(commands.len() >= 6, "{commands:?}");
    for c in &commands {
        assert!(!c.iter().any(|w| w.contains('$')), "a variable left: {c:?}");
        let out = Command::new(&r.exe)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", r.dir.path())
            .args(c)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        succeeded(&c.iter().map(String::as_str).collect::<Vec<_>>(), out);
    }

    let mut server = LocalServer::running_in(None, &pgdata).unwrap();
    assert_eq!(
        server
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    let ids = crate::pg::ids_of(&server);
    assert_eq!(
        (ids.len(), ids.last().copied()),
        (1100, Some(1100)),
        "rows up to the target and none after; log:\n{}",
        server.log()
    );
    server.stop().unwrap();
    for i in 0..4u8 {
        let name = format!("sub/f{i}");
        let got = fs::read(target.join(src.strip_prefix("/").unwrap()).join(&name)).unwrap();
        assert!(got == fs::read(src.join(&name)).unwrap(), "{name} differs");
    }
    let restored = lifeboat_scenarios::sandbox::redis::LocalRedis::start(
        rdir.path(),
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        crate::redis::contents(&restored.url()) == want,
        "the restored keys are the source's"
    );
}

/// xorshift64 for the kill points (the seed is printed to replay a run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 >> 24
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `replicate` killed (SIGKILL) at random points, 32 times, while the
/// primary gains backups and loses some to forget + prune (deletions
/// reach the replica at once: delete_delay 0s): after every kill the
/// replica is either not made yet or a repository that verifies; a last
/// run makes it whole.
#[test]
fn replicate_killed_at_random_points_leaves_a_replica_that_verifies() {
    let r = Regions::new("0s", None);
    let src = r.dir.path().join("data");
    fs::create_dir_all(&src).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill points seeded with {seed}");
    let mut rng = Rng(seed);
    let mut made = false;
    let mut kills_mid_run = 0;
    for trial in 0..32u64 {
        if trial % 2 == 0 {
            // A new file of 1.5 MB and a backup of the whole directory.
            let mut noise = Rng(seed ^ (trial + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let bytes: Vec<u8> = (0..1_500_000u64).map(|_| noise.next() as u8).collect();
            fs::write(src.join(format!("f{trial}")), bytes).unwrap();
            r.ok(&["files", "backup", src.to_str().unwrap()]);
        }
        if trial % 8 == 7 {
            r.ok(&["forget", "--keep-last", "2", "--prune"]);
        }
        let mut child = r
            .cmd()
            .args(["replicate", "--bandwidth-limit", "1MiB", "--parallel", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.below(1200));
        let deadline = Instant::now() + after;
        let mut finished = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !finished {
            child.kill().unwrap();
            kills_mid_run += 1;
        }
        let _ = child.wait();
        let out = r.dr_cmd().args(["--json", "verify"]).output().unwrap();
        if out.status.code() == Some(2) && stderr(&out).contains("no lifeboat repository") {
            assert!(
                !made,
                "trial {trial}: the replica vanished: {}",
                stderr(&out)
            );
            continue;
        }
        made = true;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("trial {trial} (seed {seed}): {}", stderr(&out)));
        assert!(
            out.status.success() && v["damaged"] == serde_json::json!([]),
            "trial {trial} (seed {seed}), killed after {after:?}: the replica does not verify: {v}\n{}",
            stderr(&out)
        );
    }
    eprintln!("{kills_mid_run} of 32 kills landed mid-run");
    assert!(
        kills_mid_run >= 10,
        "only {kills_mid_run} kills landed mid-run"
    );
    r.replicate();
    r.dr_verify();
    let ours = r.json(&["snapshots"]);
    let theirs = r.dr_json(&["snapshots"]);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        let mut x: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        x.sort();
        x
    };
    assert_eq!(ids(&ours), ids(&theirs));
}

/// Between the regions, a network that resets a fifth of the connections,
/// cuts a tenth part way and stalls a few past the storage timeout:
/// `replicate` gets everything across with retries, and the replica,
/// read directly, verifies every byte.
#[test]
fn a_faulty_network_between_the_regions_is_survived_with_retries() {
    let r = Regions::new(
        "7d",
        Some(FaultPlan {
            reset_percent: 20,
            cut_percent: 10,
            stall_percent: 5,
            stall: Duration::from_secs(5),
            max_stalls: 2,
            seed: 0x5eed,
        }),
    );
    let src = r.dir.path().join("data");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        let bytes: Vec<u8> = (0..1_500_000u64)
            .map(|j| ((j + i * 7).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8)
            .collect();
        fs::write(src.join(format!("f{i}")), bytes).unwrap();
    }
    r.ok(&["files", "backup", src.to_str().unwrap()]);
    r.replicate();
    let link = r.link.as_ref().unwrap();
    let c = link.counts();
    assert!(
        c.resets > 0 && c.cuts > 0,
        "the link did fault ({c:?}), or the test proves nothing"
    );
    r.dr_verify();
    let ours = r.json(&["snapshots"]);
    let theirs = r.dr_json(&["snapshots"]);
    assert_eq!(ours.as_array().unwrap().len(), 1);
    assert_eq!(ours[0]["id"], theirs[0]["id"]);
    // The status through the same link answers too.
    let status = r.json(&["replicate", "--status"]);
    assert_eq!(
        status["replicas"][0]["missing"],
        serde_json::json!([]),
        "{status}"
    );
}

/// The cold tier: an archive replica in the second region takes the
/// snapshots the retention policy keeps as monthly and that are over 90
/// days old, their data in DEEP_ARCHIVE (through the cold-storage stand-in:
/// Garage has no storage classes), their index and snapshots readable at
/// once. A restore from it meets frozen packs and says to thaw; `thaw
/// --status` counts them; `thaw` asks for them; once ready, the restore
/// gives the files back byte for byte.
#[test]
fn an_archive_replica_keeps_old_monthlies_cold_and_restores_them_once_thawed() {
    let r = Regions::new("0s", None);
    let key = r.dir.path().join("key");
    let s3 = |g: &Garage| s3_section(g, &g.endpoint);
    fs::write(
        &r.config,
        format!(
            "repo = \"s3://{}/prod\"\nkey_file = \"{}\"\n\n[s3]\n{}\n[retention.files]\nkeep_monthly = 3\n\n[[replica]]\nname = \"archive\"\nrepo = \"s3://{}/archive\"\nstorage_class = \"DEEP_ARCHIVE\"\narchive_keep = [\"monthly\"]\narchive_older_than = \"90d\"\ndelete_delay = \"0s\"\n\n[replica.s3]\n{}",
            r.primary.bucket,
            key.display(),
            s3(&r.primary),
            r.dr.bucket,
            s3(&r.dr),
        ),
    )
    .unwrap();
    let archive_cfg = r.dir.path().join("archive.toml");
    fs::write(
        &archive_cfg,
        format!(
            "repo = \"s3://{}/archive\"\nkey_file = \"{}\"\n\n[s3]\n{}",
            r.dr.bucket,
            key.display(),
            s3(&r.dr)
        ),
    )
    .unwrap();
    let journal = r.dir.path().join("cold-journal");
    let run = |config: &Path, thaw_secs: &str, args: &[&str]| -> Output {
        r.with(config)
            .env("LIFEBOAT_COLD_SIMULATION", &journal)
            .env("LIFEBOAT_COLD_SIMULATION_THAW", thaw_secs)
            .args(args)
            .output()
            .unwrap()
    };
    let json = |config: &Path, thaw_secs: &str, args: &[&str]| -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = run(config, thaw_secs, &a);
        serde_json::from_str(&succeeded(&a, out)).unwrap()
    };

    // Four backups: two the same day 200 days ago (the later one is that
    // month's), one 150 days ago, one yesterday (too young to archive).
    // keep_monthly = 3 over three months: no extra oldest one is kept (as
    // restic keeps it while a rule's count is not reached).
    let day = |days_ago: i64| {
        let d = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24 * days_ago))
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        d.at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
    };
    let src = r.dir.path().join("data");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    let mut contents = Vec::new();
    for (i, t) in [
        day(200),
        day(200) + jiff::SignedDuration::from_mins(1),
        day(150),
        day(1),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes: Vec<u8> = (0..600_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).rotate_left(i as u32 + 3) >> 7) as u8)
            .collect();
        fs::write(src.join(format!("f{i}")), &bytes).unwrap();
        contents.push(bytes);
        let v = json(
            &r.config,
            "0",
            &[
                "files",
                "backup",
                src.to_str().unwrap(),
                "--time",
                &t.to_string(),
            ],
        );
        ids.push(v["snapshot"].as_str().unwrap().to_string());
    }

    let v = json(&r.config, "0", &["replicate"]);
    assert_eq!(v["replicas"][0]["damaged"], serde_json::json!([]), "{v}");
    let listed = json(&archive_cfg, "0", &["snapshots"]);
    let mut archived: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    archived.sort();
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(
        archived,
        want,
        "the old monthlies only (of {ids:?}): {}",
        json(&r.config, "0", &["forget", "--dry-run"])
    );
    let status = json(&r.config, "0", &["replicate", "--status"]);
    assert_eq!(
        status["replicas"][0]["missing"],
        serde_json::json!([]),
        "{status}"
    );
    let out = run(&archive_cfg, "0", &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // What it costs: the archive's data in DEEP_ARCHIVE, the rest in
    // STANDARD; a full restore from it priced per tier; the plain dumps of
    // the four backups would store more than the repository does.
    let c = json(&r.config, "0", &["cost"]);
    let repos = c["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 2, "{c}");
    assert_eq!(repos[0]["name"], "default");
    assert_eq!(repos[0]["classes"][0]["class"], "STANDARD", "{c}");
    let archive = &repos[1];
    let classes: Vec<&str> = archive["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["DEEP_ARCHIVE", "STANDARD"], "{c}");
    let tiers: Vec<&str> = archive["full_restore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["bulk", "standard"], "{c}");
    assert!(c["monthly_total"].as_f64().unwrap() > 0.0, "{c}");
    assert_eq!(c["baseline"]["backups"], 4, "{c}");
    assert!(c["baseline"]["ratio"].as_f64().unwrap() > 1.5, "{c}");

    // Frozen: the restore says what to do, exit 2.
    let target = r.dir.path().join("restored");
    let snap = ids[2].as_str();
    let out = run(
        &archive_cfg,
        "3600",
        &[
            "files",
            "restore",
            snap,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cold storage") && stderr(&out).contains("lifeboat thaw"),
        "{}",
        stderr(&out)
    );
    assert!(
        !target.exists(),
        "nothing made before the frozen pack was met"
    );
    let st = json(&archive_cfg, "3600", &["thaw", snap, "--status"]);
    assert!(st["frozen"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["ready"], 0, "{st}");
    assert_eq!(st["classes"]["DEEP_ARCHIVE"], st["objects"], "{st}");
    let asked = json(
        &archive_cfg,
        "3600",
        &["thaw", snap, "--tier", "bulk", "--days", "3"],
    );
    assert_eq!(asked["requested"], st["frozen"], "{asked}");
    let st = json(&archive_cfg, "3600", &["thaw", snap, "--status"]);
    assert_eq!(st["thawing"], st["objects"], "{st}");
    // The restores done (here: a thaw that takes no time).
    let st = json(&archive_cfg, "0", &["thaw", snap, "--status"]);
    assert_eq!(st["ready"], st["objects"], "{st}");
    succeeded(
        &["files", "restore"],
        run(
            &archive_cfg,
            "0",
            &[
                "files",
                "restore",
                snap,
                "--target",
                target.to_str().unwrap(),
            ],
        ),
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    for (i, want) in contents.iter().enumerate().take(3) {
        assert!(
            fs::read(restored.join(format!("f{i}"))).unwrap() == *want,
            "f{i} differs"
        );
    }
    assert!(!restored.join("f3").exists(), "the snapshot's files only");
}

/// A pack damaged on the primary (a flipped byte, same name and size):
/// the streamed copy holds its last piece back until the hash is checked,
/// so the replica never stores it; `replicate` names it and exits 3, and
/// copies everything else.
#[test]
fn a_pack_damaged_on_the_primary_never_reaches_the_replica() {
    let r = Regions::new("7d", None);
    // Two backups of incompressible data: two packs at least (a backup
    // writes its own).
    for i in 0..2u64 {
        let src = r.dir.path().join(format!("data{i}"));
        fs::create_dir_all(&src).unwrap();
        let mut noise = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1));
        let bytes: Vec<u8> = (0..1_000_000u64).map(|_| noise.next() as u8).collect();
        fs::write(src.join("f"), bytes).unwrap();
        r.ok(&["files", "backup", src.to_str().unwrap()]);
    }
    let store = |g: &Garage, prefix: &str| -> lifeboat_storage::DynStorage {
        std::sync::Arc::new(
            lifeboat_storage::S3Storage::new(
                &g.bucket,
                prefix,
                &lifeboat_storage::S3Options {
                    endpoint: Some(g.endpoint.clone()),
                    region: Some(g.region.clone()),
                    access_key_id: Some(g.access_key_id.clone()),
                    secret_access_key: Some(g.secret_access_key.clone()),
                    virtual_host_style: false,
                    storage_class: None,
                },
            )
            .unwrap(),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let primary = store(&r.primary, "prod");
    let packs = rt.block_on(primary.list("packs/")).unwrap();
    assert!(packs.len() >= 2, "{packs:?}");
    let victim = packs[0].key.clone();
    let mut bytes = rt.block_on(primary.get(&victim)).unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    rt.block_on(primary.put(&victim, bytes.into())).unwrap();

    let out = r.cmd().args(["--json", "replicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = &v["replicas"][0]["damaged"];
    assert_eq!(damaged[0]["key"], victim.as_str(), "{v}");
    assert!(stderr(&out).contains(&victim), "{}", stderr(&out));
    let replica = store(&r.dr, "prod");
    assert!(
        rt.block_on(replica.stat(&victim)).unwrap().is_none(),
        "the damaged pack is not in the replica"
    );
    let copied = rt.block_on(replica.list("packs/")).unwrap();
    assert_eq!(copied.len(), packs.len() - 1, "every other pack is");
}

/// `cost` with a replica whose store does not answer: the primary is
/// still measured and shown, the replica says why it is not, and the
/// command fails (exit 1: its total lacks that replica).
#[test]
fn cost_measures_what_answers_and_names_the_replica_that_does_not() {
    use crate::harness::{Backend, Env};
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), vec![7u8; 200_000]).unwrap();
    env.ok(&["files", "backup", data.to_str().unwrap()]);
    let cfg = env.path("lifeboat.toml");
    fs::write(
        &cfg,
        "[[replica]]\nname = \"dr\"\nrepo = \"s3://gone/prod\"\n[replica.s3]\nendpoint = \"http://127.0.0.1:1\"\nregion = \"x\"\naccess_key_id = \"AKIDNOTREAL\"\nsecret_access_key = \"not-a-real-secret\"\n\n[storage]\nmax_attempts = 1\ntimeout_secs = 2\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "--json", "cost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repositories"][0]["name"], "default", "{v}");
    assert!(v["repositories"][0]["bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["repositories"][1]["name"], "dr", "{v}");
    assert!(v["repositories"][1]["error"].is_string(), "{v}");
    assert!(
        stderr(&out).contains("replica dr could not be measured"),
        "{}",
        stderr(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-a-real-secret"));
}
