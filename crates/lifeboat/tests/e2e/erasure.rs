//! The erasure ledger and the audit log end to end, on a real PostgreSQL
//! cluster: a person erased after the backups is absent from every restore,
//! and the log says who did what.

use std::fs;

use lifeboat_testkit::postgres::{LocalServer, PgCluster};
use serde_json::json;

use crate::drill::{json, ok, run, stderr};
use crate::pg::{archive_now, PgEnv};

/// A config file naming the repository, its key and source `main` with
/// `erase` as its erase_sql (none when `None`).
fn write_config(env: &PgEnv, pg: &PgCluster, erase: Option<&str>) -> std::path::PathBuf {
    let config = env.dir.path().join("lifeboat.toml");
    let mut text = format!(
        "repo = \"{}\"\nkey_file = \"{}\"\n\n[postgres.main]\npgdata = \"{}\"\npg_url = \"{}\"\n",
        env.repo.display(),
        env.key.display(),
        pg.pgdata.display(),
        pg.conninfo("postgres")
    );
    if let Some(sql) = erase {
        text.push_str(&format!("erase_sql = \"{sql}\"\n"));
    }
    fs::write(&config, text).unwrap();
    config
}

/// (users, orders of user 42, user 42 present, user 7 present, user 101 present)
fn people(query: impl Fn(&str) -> String) -> (i64, i64, bool, bool, bool) {
    let n = |sql: &str| query(sql).trim().parse::<i64>().unwrap();
    (
        n("select count(*) from users"),
        n("select count(*) from orders where user_id = 42"),
        n("select count(*) from users where id = 42") == 1,
        n("select count(*) from users where id = 7") == 1,
        n("select count(*) from users where id = 101") == 1,
    )
}

#[test]
fn a_subject_erased_after_the_backups_is_absent_after_pitr_and_after_a_dump_restore() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start(&env.archive_command()).unwrap();
    pg.psql(
        "postgres",
        "create table users (id bigint primary key, email text); \
         create table orders (id serial primary key, user_id bigint references users(id)); \
         insert into users select g, 'u' || g || '@example.com' from generate_series(1, 100) g; \
         insert into orders (user_id) values (42), (42), (42), (7)",
    )
    .unwrap();
    // Refused first: requests without an erase_sql to carry them out.
    let bare = write_config(&env, &pg, None);
    ok(&env, &bare, &["pg", "backup", "main"]);
    ok(&env, &bare, &["pg", "dump", "main"]);
    // After the backups: a new user, then the erasure requests.
    pg.psql(
        "postgres",
        "insert into users values (101, 'late@example.com')",
    )
    .unwrap();
    pg.psql("postgres", "select pg_create_restore_point('after_101')")
        .unwrap();
    archive_now(&pg);
    let added = json(&ok(
        &env,
        &bare,
        &[
            "--json",
            "erasure",
            "add",
            "--source",
            "main",
            "--subject",
            "42",
            "--reason",
            "ticket 7731",
        ],
    ));
    assert_eq!(added["erase_sql_missing"], true, "{added}");
    ok(
        &env,
        &bare,
        &["erasure", "add", "--source", "main", "--subject", "7"],
    );
    let out = run(
        &env,
        &bare,
        &["erasure", "add", "--source", "nope", "--subject", "1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let restore = env.restore_dir();
    let target = restore.path().join("data");
    let pitr = [
        "--json",
        "pg",
        "restore",
        "--start",
        "--pgdata",
        target.to_str().unwrap(),
        "--target-name",
        "after_101",
        "--target-action",
        "promote",
    ];
    let out = run(&env, &bare, &pitr);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("erase_sql") && stderr(&out).contains("2 request(s)"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists(), "nothing is restored when refused");

    // With erase_sql, every restore re-applies the ledger.
    let config = write_config(
        &env,
        &pg,
        Some("DELETE FROM orders WHERE user_id = $1; DELETE FROM users WHERE id = $1"),
    );
    // The dump restore re-applies it (the source still runs).
    pg.psql("postgres", "create database copy").unwrap();
    let copy = pg.conninfo("copy");
    let out = json(&ok(
        &env,
        &config,
        &[
            "--json",
            "pg",
            "restore-dump",
            "latest",
            "--pg-url",
            &copy,
            "--database",
            "postgres",
        ],
    ));
    assert_eq!(out["erased"]["subjects"], 2, "{out}");
    let (users, orders_42, has_42, has_7, has_101) = people(|sql| pg.psql("copy", sql).unwrap());
    assert_eq!((users, orders_42), (98, 0), "the dump predates user 101");
    assert!(!has_42 && !has_7 && !has_101);

    // The PITR restore re-applies it before the server opens to clients.
    // The restored server takes the source's port and socket: stop it.
    pg.stop().unwrap();
    let report = json(&ok(&env, &config, &pitr));
    let recovery = &report["recovery"];
    assert_eq!(recovery["state"], "promoted", "{report}");
    // Subject 42: 3 orders and the user; subject 7: 1 order and the user.
    assert_eq!(recovery["erased"]["subjects"], 2, "{report}");
    assert_eq!(recovery["erased"]["rows"], 6, "{report}");
    let restored = LocalServer::running(&target).unwrap();
    let (users, orders_42, has_42, has_7, has_101) =
        people(|sql| restored.psql("postgres", sql).unwrap());
    assert_eq!((users, orders_42), (99, 0), "101 users less 42 and 7");
    assert!(!has_42 && !has_7 && has_101);
    // The server was opened as configured afterwards: not on the private
    // socket any more.
    assert!(
        !restored
            .socket_dir
            .to_string_lossy()
            .contains("lifeboat-private-"),
        "{:?}",
        restored.socket_dir
    );
    drop(restored);

    // The compliance view: both requests, each held by the base backup and
    // the dump taken before it, with the date the default policy lets them go.
    let list = json(&ok(&env, &config, &["--json", "erasure", "list"]));
    let requests = list["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{list}");
    assert_eq!(requests[0]["subject"], "42");
    assert_eq!(requests[0]["reason"], "ticket 7731");
    let report = json(&ok(&env, &config, &["--json", "erasure", "report"]));
    for r in report["requests"].as_array().unwrap() {
        let kinds: Vec<&str> = r["holding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.len(), 2, "{r}");
        assert!(
            kinds.contains(&"postgres") && kinds.contains(&"pg_dump"),
            "{r}"
        );
        assert!(r["gone_from_backups_by"].is_string(), "{r}");
    }

    // The audit log: who asked for the erasure (the subject never in it),
    // who read which snapshot, and the chain intact.
    let log = json(&ok(&env, &config, &["--json", "audit"]));
    let records = log["records"].as_array().unwrap();
    let add = records
        .iter()
        .find(|r| r["command"] == "erasure add" && r["outcome"] == "success")
        .unwrap();
    assert!(add["detail"]["erasure_request"].is_string(), "{add}");
    let args = add["args"].to_string();
    assert!(
        args.contains("\"***\"") && !args.contains("\"42\""),
        "{args}"
    );
    let reads: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["outcome"] == "reading")
        .collect();
    assert!(
        reads.iter().any(|r| r["command"] == "pg restore")
            && reads.iter().any(|r| r["command"] == "pg restore-dump"),
        "{log}"
    );
    let refused = records
        .iter()
        .find(|r| r["command"] == "pg restore" && r["outcome"] == "refused")
        .unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("erase_sql"),
        "{refused}"
    );
    assert!(records
        .iter()
        .all(|r| !r["user"].as_str().unwrap().is_empty()));
    let verified = ok(&env, &config, &["audit", "verify"]);
    assert!(verified.contains("audit log intact"), "{verified}");
}

/// Key hygiene: each slot's age and last use (from the audit log), the
/// data key rotated only past its age, and the age shown by status.
#[test]
fn key_slots_show_their_age_and_last_use_and_rotation_follows_the_policy() {
    let env = PgEnv::new();
    let pass = env.dir.path().join("restore-host.pass");
    fs::write(&pass, "a long passphrase for the restore host\n").unwrap();
    let added = json(&env.ok(&[
        "--json",
        "repo",
        "key",
        "add",
        "--label",
        "restore host",
        "--new-password-file",
        pass.to_str().unwrap(),
        "--kdf-memory",
        "8MiB",
    ]));
    let second = added["added"].as_str().unwrap().to_string();
    let list = || {
        json(&env.ok(&["--json", "repo", "key", "list"]))["slots"]
            .as_array()
            .unwrap()
            .clone()
    };
    let slots = list();
    let other = slots.iter().find(|s| s["id"] == second.as_str()).unwrap();
    assert!(other["last_used"].is_null(), "never opened yet: {other}");
    assert!(other["age_seconds"].as_i64().unwrap() >= 0);
    // The restore host opens the repository with its own slot once.
    let out = env
        .bare()
        .args(["--repo", env.repo.to_str().unwrap(), "--password-file"])
        .arg(&pass)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let slots = list();
    let other = slots.iter().find(|s| s["id"] == second.as_str()).unwrap();
    let used: lifeboat_repo::Timestamp = other["last_used"].as_str().unwrap().parse().unwrap();
    assert!(
        lifeboat_repo::Timestamp::now()
            .duration_since(used)
            .as_secs()
            < 120,
        "{other}"
    );
    let first = slots.iter().find(|s| s["current"] == true).unwrap();
    assert!(first["last_used"].is_string(), "{first}");

    // Rotation by age: not before, then at once.
    let r = json(&env.ok(&["--json", "repo", "key", "rotate", "--if-older-than", "90d"]));
    assert_eq!(r["rotated"], false, "{r}");
    let before = r["epoch"].as_u64().unwrap();
    let r = json(&env.ok(&["--json", "repo", "key", "rotate", "--if-older-than", "0s"]));
    assert_eq!(
        (r["rotated"].clone(), r["epoch"].clone()),
        (json!(true), json!(before + 1))
    );
    let bad = env.run(&["repo", "key", "rotate", "--if-older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // The policy the agent carries out, and the age status shows.
    let config = env.dir.path().join("lifeboat.toml");
    fs::write(
        &config,
        format!(
            "repo = \"{}\"\nkey_file = \"{}\"\n\n[repository]\nrotate_after = \"90d\"\n",
            env.repo.display(),
            env.key.display()
        ),
    )
    .unwrap();
    let st = json(&crate::harness::succeeded(
        &["status"],
        env.bare()
            .arg("--config")
            .arg(&config)
            .args(["--json", "status"])
            .output()
            .unwrap(),
    ));
    let k = &st["key_epoch"];
    assert!(k["age_seconds"].as_f64().unwrap() < 120.0, "{st}");
    assert_eq!(k["rotate_after_seconds"], 90.0 * 86400.0);
    let jobs: Vec<String> = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, ["repository.rotate"]);
}
