//! The command line as an attacker and a tired operator meet it: secrets in
//! help, closed pipes, relative paths, file modes, damaged and wrong keys.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use crate::harness::*;

/// The subcommand paths under `path` (`["pg"]` → `["pg", "backup"]`, …),
/// read from each `--help`'s "Commands:" section.
fn subcommands(env: &Env, path: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = env.run(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                in_commands = !line.trim().is_empty() && line.starts_with(' ');
                if !in_commands {
                    break;
                }
                continue;
            }
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if name == "help" || line.starts_with("   ") {
                continue;
            }
            let mut p = path.to_vec();
            p.push(name.to_string());
            found.push(p.clone());
            found.extend(subcommands(env, &p));
        }
    }
    found
}

/// No `--help` of any command shows the value of an environment variable
/// that may hold a secret (clap shows them unless told not to).
#[test]
fn help_never_shows_a_secret() {
    const MARK: &str = "S3CRET-do-not-print";
    let env = Env::new(Backend::Local);
    let commands = subcommands(&env, &[]);
    assert!(commands.len() > 15, "found the subcommands: {commands:?}");
    assert!(commands.iter().any(|c| c == &["redis", "backup"]));
    let vars = [
        ("LIFEBOAT_PASSWORD", MARK.to_string()),
        ("LIFEBOAT_KEY", format!("{MARK}-0123456789abcdef0123456789")),
        ("LIFEBOAT_NEW_PASSWORD", MARK.to_string()),
        ("LIFEBOAT_NEW_KEY", MARK.to_string()),
        ("LIFEBOAT_PASSWORD_COMMAND", format!("echo {MARK}")),
        ("LIFEBOAT_KEY_COMMAND", format!("echo {MARK}")),
        ("LIFEBOAT_PASSWORD_FILE", format!("/tmp/{MARK}")),
        ("LIFEBOAT_KEY_FILE", format!("/tmp/{MARK}")),
        ("LIFEBOAT_PG_URL", format!("postgresql://app:{MARK}@db/app")),
        ("LIFEBOAT_REDIS_URL", format!("redis://:{MARK}@cache:6379")),
        ("LIFEBOAT_REPO", format!("s3://bucket/{MARK}")),
        ("AWS_SECRET_ACCESS_KEY", MARK.to_string()),
        ("PGPASSWORD", MARK.to_string()),
    ];
    let mut all = vec![Vec::new()];
    all.extend(commands);
    // Hidden commands are not listed by --help; their own --help must hide
    // secrets too.
    all.push(vec!["pg".into(), "wal-expire".into()]);
    for c in &all {
        let mut cmd = env.cmd();
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = cmd.args(c).arg("--help").output().unwrap();
        assert!(out.status.success(), "{c:?} --help failed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(MARK),
            "`lifeboat {} --help` shows a secret:\n{text}",
            c.join(" ")
        );
    }
    // The variables are still named, so one knows they exist.
    let out = env.run(&["redis", "backup", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("LIFEBOAT_REDIS_URL"));
}

/// `lifeboat snapshots --json | head -1`: a reader that leaves ends the
/// output quietly, with the command's own exit code, never a panic.
#[test]
fn a_closed_standard_output_ends_quietly() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    for _ in 0..3 {
        env.ok(&["files", "backup", src.to_str().unwrap()]);
    }
    for args in [
        &["--json", "snapshots"][..],
        &["snapshots"],
        &["ls", "latest"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd()
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
    // A verify that finds damage still says so by its exit code.
    let packs = env.keys("packs/");
    fs::write(Path::new(&env.repo).join(&packs[0].0), b"garbage").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env
        .cmd()
        .args(["verify"])
        .stdout(Stdio::from(writer))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// `repo init --repo myrepo` (a bare relative path) works like `./myrepo`;
/// a repository path that is a file is a plain usage error.
#[test]
fn relative_and_wrong_repository_paths() {
    let env = Env::new(Backend::Local);
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .current_dir(env.dir.path())
        .args(["--repo", "myrepo", "repo", "init", "--kdf-memory", "8MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.path("myrepo/config").is_file());
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .current_dir(env.dir.path())
        .args(["--repo", "myrepo", "--json", "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let file = env.path("not-a-dir");
    fs::write(&file, b"x").unwrap();
    for args in [&["snapshots"][..], &["repo", "init"]] {
        let out = env
            .cmd()
            .env("LIFEBOAT_REPO", &file)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is a file, not a repository directory"),
            "{}",
            stderr(&out)
        );
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A local repository is its owner's alone (0700/0600 whatever the umask
/// lets through), its group's too with `--group-readable`, and opening one
/// whose key slots every user can read warns how to fix it.
#[test]
fn repository_files_are_private() {
    for (group, dir_mode, file_mode) in [(false, 0o700, 0o600), (true, 0o750, 0o640)] {
        let env = Env::new(Backend::Local);
        let mut args = vec!["repo", "init", "--kdf-memory", "8MiB"];
        if group {
            args.push("--group-readable");
        }
        env.ok(&args);
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), random_bytes(100_000, 1)).unwrap();
        env.ok(&["files", "backup", src.to_str().unwrap()]);
        let root = Path::new(&env.repo);
        assert_eq!(mode(root), dir_mode);
        let entries = entries_below(root);
        assert!(entries.len() > 6);
        for e in &entries {
            let want = if e.is_dir() { dir_mode } else { file_mode };
            assert_eq!(mode(e), want, "{}", e.display());
        }
        let out = env.run(&["snapshots"]);
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    }
    // An older repository, or a careless chmod: a warning that says what to do.
    let env = Env::new(Backend::Local);
    env.init(&[]);
    for e in fs::read_dir(Path::new(&env.repo).join("keys")).unwrap() {
        fs::set_permissions(e.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = env.run(&["snapshots"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("can be read by every user")
            && stderr(&out).contains("chmod -R o-rwx"),
        "{}",
        stderr(&out)
    );
    // A short passphrase gets advice when its slot is made.
    let short = Env::new(Backend::Local);
    let out = short
        .cmd()
        .env("LIFEBOAT_PASSWORD", "hunter2")
        .args(["repo", "init", "--kdf-memory", "8MiB"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("only 7 bytes long"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "no secret in any output");
}

/// A damaged key slot is not a wrong password: with the right password, the
/// error names the damaged slot (exit 3); another slot still opens the
/// repository (with a warning) and `verify` reports the damage. A key file
/// that is too short says so (exit 2).
#[test]
fn a_damaged_key_slot_is_told_from_a_wrong_password() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let key = env.path("key");
    fs::write(&key, "0123456789abcdef0123456789abcdef-second-slot\n").unwrap();
    env.cmd()
        .env("LIFEBOAT_NEW_KEY", fs::read_to_string(&key).unwrap().trim())
        .args(["repo", "key", "add", "--label", "spare"])
        .output()
        .unwrap();
    let slots = env.keys("keys/");
    assert_eq!(slots.len(), 2);
    // Find the passphrase slot and change one character of its wrapped key.
    let root = Path::new(&env.repo);
    let pass_slot = slots
        .iter()
        .map(|(k, _)| root.join(k))
        .find(|p| String::from_utf8_lossy(&fs::read(p).unwrap()).contains("passphrase"))
        .unwrap();
    let mut bytes = fs::read(&pass_slot).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("wrapped_master_key").unwrap() + 30;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(&pass_slot, &bytes).unwrap();

    let out = env.run(&["snapshots"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let name = pass_slot
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(err.contains("damaged") && err.contains(&name), "{err}");
    assert!(!err.contains("wrong password"), "{err}");

    let wrong = env
        .cmd()
        .env("LIFEBOAT_PASSWORD", "not the password at all")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(
        wrong.status.code(),
        Some(3),
        "the damaged slot is still named: {}",
        stderr(&wrong)
    );

    let with_key = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", key.to_str().unwrap(), "--json", "snapshots"])
        .output()
        .unwrap();
    assert!(with_key.status.success(), "{}", stderr(&with_key));
    assert!(
        stderr(&with_key).contains("damaged"),
        "{}",
        stderr(&with_key)
    );
    let verify = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", key.to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&name));

    let short = env.path("short-key");
    fs::write(&short, b"0123456789").unwrap();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", short.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds 10 bytes") && stderr(&out).contains("at least 32"),
        "{}",
        stderr(&out)
    );
}

/// Killed backups leave temporary files; `verify` reports them (count,
/// size, age) without calling them damage, and `repair leftovers` removes
/// those old enough that no write in progress owns them.
/// A backup killed in a pack's write, its temporary file written and
/// fsynced but not yet renamed (failpoint `local-put-before-rename`), leaves
/// a temporary file that `verify` reports and `repair leftovers` removes
/// once it is old.
#[test]
fn leftovers_of_killed_writes_are_reported_and_removed() {
    let env = Env::new(Backend::Local);
    env.init(&["--pack-size", "4MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(16 << 20, 77)).unwrap();
    let root = Path::new(&env.repo).to_path_buf();
    let temporaries = |root: &Path| {
        entries_below(root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect::<Vec<_>>()
    };
    env.crash(
        "local-put-before-rename=abort",
        &["files", "backup", src.to_str().unwrap()],
    );
    let left = temporaries(&root);
    assert!(!left.is_empty(), "no kill landed inside a write");
    assert!(
        env.keys("snapshots/").is_empty(),
        "the killed backup recorded nothing"
    );
    let v = env.json(&["verify"]);
    assert_eq!(v["clean"], true, "leftovers are not damage: {v}");
    assert_eq!(
        v["leftovers"]["count"].as_u64().unwrap() as usize,
        left.len(),
        "{v}"
    );
    let bytes: u64 = left.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(v["leftovers"]["bytes"].as_u64().unwrap(), bytes, "{v}");
    let text = env.ok(&["verify"]);
    assert!(
        text.contains("temporary file(s) of interrupted writes")
            && text.contains("repair leftovers"),
        "{text}"
    );

    // Fresh ones are kept (a write may own them); old ones go.
    let out = env.json(&["repair", "leftovers"]);
    assert_eq!(out["leftovers"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(temporaries(&root).len(), left.len());
    for p in &left {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // Their age is reported: two hours.
    let v = env.json(&["verify"]);
    let oldest = v["leftovers"]["oldest_s"].as_u64().unwrap();
    assert!((7200..7300).contains(&oldest), "{v}");
    let text = env.ok(&["verify"]);
    assert!(text.contains("the oldest 2h old"), "{text}");
    let dry = env.json(&["repair", "leftovers", "--dry-run"]);
    assert_eq!(
        dry["leftovers"].as_array().unwrap().len(),
        left.len(),
        "{dry}"
    );
    assert_eq!(temporaries(&root).len(), left.len());
    let out = env.json(&["repair", "leftovers"]);
    assert_eq!(
        out["leftovers"].as_array().unwrap().len(),
        left.len(),
        "{out}"
    );
    assert!(temporaries(&root).is_empty());
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["leftovers"]["count"], 0, "{v}");
}

/// A write that fails after its temporary file is written (failpoint
/// `local-put-before-rename=error`) fails the backup and leaves neither a
/// snapshot nor a temporary file.
#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let env = Env::new(Backend::Local);
    env.init(&["--pack-size", "4MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(16 << 20, 79)).unwrap();
    let out = env
        .cmd()
        .env(FAILPOINTS, "local-put-before-rename=error")
        .args(["files", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failpoint local-put-before-rename"),
        "the failed write is named: {}",
        stderr(&out)
    );
    assert!(env.keys("snapshots/").is_empty());
    let temporaries: Vec<_> = entries_below(Path::new(&env.repo))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert_eq!(temporaries, Vec::<std::path::PathBuf>::new());
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["leftovers"]["count"], 0, "{v}");
}

#[test]
fn config_file_supplies_repository_and_password() {
    let env = Env::new(Backend::Local);
    let pw = env.path("pw");
    fs::write(&pw, "from a file\n").unwrap();
    let cfg = env.path("lifeboat.toml");
    fs::write(
        &cfg,
        format!(
            "repo = {:?}\npassword_file = {:?}\n",
            env.repo,
            pw.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        env.cmd()
            .env_remove("LIFEBOAT_REPO")
            .env_remove("LIFEBOAT_PASSWORD")
            .env("LIFEBOAT_CONFIG", &cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["repo", "init", "--kdf-memory", "8MiB"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // A bad config file is a configuration error naming the file.
    fs::write(&cfg, "repo = [unclosed").unwrap();
    let out = run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lifeboat.toml"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new(Backend::Local);
    let out = env.run(&["files", "restore", "latest"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --target is a usage error"
    );
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no repository given"),
        "{}",
        stderr(&out)
    );
    env.init(&[]);
    let out = env.run(&["repo", "init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = env.run(&["ls", "ffffffff"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        stderr(&out)
    );
}

/// As PostgreSQL's restore_command, `pg wal-fetch` exits above 125 for any
/// failure to run at all (a config file that is not there, a malformed
/// command line): PostgreSQL then stops recovery instead of taking the
/// segment for missing, ending recovery early and promoting a server that
/// lacks data. Other commands keep their usage exit code.
#[test]
fn wal_fetch_that_cannot_start_stops_recovery() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let dest = env.path("segment");
    let missing = env.path("no-such.toml");
    let out = env.run(&[
        "--config",
        missing.to_str().unwrap(),
        "pg",
        "wal-fetch",
        "000000010000000000000001",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such.toml"), "{}", stderr(&out));
    let out = env.run(&["pg", "wal-fetch", "000000010000000000000001"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let out = env.run(&["--config", missing.to_str().unwrap(), "snapshots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dest.exists(), "nothing written");
}

/// `files backup --time` records the snapshot under the time given (as
/// restic's `backup --time`): listings show and sort by it; a time that does
/// not read is a usage error naming it, and records nothing.
#[test]
fn a_backup_can_be_recorded_under_another_time() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let src = src.to_str().unwrap();
    env.json(&["files", "backup", src]);
    env.json(&["files", "backup", src, "--time", "2020-02-29T23:59:59Z"]);
    env.json(&[
        "files",
        "backup",
        src,
        "--time",
        "2021-06-01T12:00:00+02:00",
    ]);
    let list = env.json(&["snapshots"]);
    let times: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start_time"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 3, "{list}");
    assert_eq!(times[0], "2020-02-29T23:59:59Z", "{list}");
    assert_eq!(times[1], "2021-06-01T10:00:00Z", "in UTC: {list}");
    assert!(times[2] > "2026", "now: {list}");
    let out = env.run(&["files", "backup", src, "--time", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"yesterday\""), "{}", stderr(&out));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
}

#[test]
fn verify_reads_a_subset_of_the_packs_and_finds_damage_in_the_group_that_holds_it() {
    let env = Env::new(Backend::Local);
    env.init(&["--pack-size", "1MiB"]);
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..8 {
        fs::write(data.join(format!("f{i}")), random_bytes(700_000, i)).unwrap();
    }
    env.ok(&["files", "backup", data.to_str().unwrap()]);
    let packs = files_below(&Path::new(&env.repo).join("packs"));
    assert!(packs.len() >= 4, "{packs:?}");
    // The groups of 1/3..3/3 together read every pack once.
    let read: usize = (1..=3)
        .map(|n| {
            let v = env.json(&["verify", "--read-data-subset", &format!("{n}/3")]);
            assert_eq!(v["clean"], true, "{v}");
            assert_eq!(v["read_data_subset"], format!("{n}/3"));
            v["packs_read"].as_u64().unwrap() as usize
        })
        .sum();
    assert_eq!(read, packs.len());
    // Damage one pack: the group that holds it finds it (exit 3), another
    // group reads clean.
    let victim = &packs[0];
    let name = victim.file_name().unwrap().to_str().unwrap();
    let group = u64::from_str_radix(&name[..16], 16).unwrap() % 3 + 1;
    let mut b = fs::read(victim).unwrap();
    for x in b.iter_mut().step_by(16) {
        *x ^= 1;
    }
    fs::write(victim, b).unwrap();
    let out = env.run(&["verify", "--read-data-subset", &format!("{group}/3")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let other = group % 3 + 1;
    let out = env.run(&["verify", "--read-data-subset", &format!("{other}/3")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("(subset {other}/3)")), "{text}");
    // A subset that means nothing is refused.
    let out = env.run(&["verify", "--read-data-subset", "4/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("n/t"), "{}", stderr(&out));
}

/// Secrets given in a way that is too weak are named: a short passphrase
/// added as a key slot gets a warning, key material under 32 bytes (from
/// the environment or a command) is refused with its length.
#[test]
fn weak_secrets_are_named_wherever_they_come_from() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let out = env
        .cmd()
        .env("LIFEBOAT_NEW_PASSWORD", "short1")
        .args(["repo", "key", "add", "--kdf-memory", "8MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only 6 bytes long"),
        "{}",
        stderr(&out)
    );
    for (var, value) in [
        ("LIFEBOAT_KEY", "too-short-key".to_string()),
        ("LIFEBOAT_KEY_COMMAND", "echo too-short-key".to_string()),
    ] {
        let out = env
            .cmd()
            .env_remove("LIFEBOAT_PASSWORD")
            .env(var, &value)
            .arg("snapshots")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("at least 32 bytes"),
            "{var}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("too-short-key"),
            "the secret is shown"
        );
    }
}

/// A wrong password on a repository whose key slots predate slot
/// checksums (written by an older release) says that damage cannot be told
/// from a wrong secret there, and what to do.
#[test]
fn a_wrong_password_on_old_key_slots_says_damage_cannot_be_told_apart() {
    let env = Env::new(Backend::Local);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let copy = Path::new(&env.repo);
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(copy)
        .status()
        .unwrap();
    assert!(status.success());
    let out = env
        .cmd()
        .env("LIFEBOAT_PASSWORD", "not the fixture passphrase")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("wrong password or key"), "{e}");
    assert!(e.contains("cannot be told from a wrong secret"), "{e}");
    assert!(e.contains("repo key add"), "{e}");
}
