//! Logical PostgreSQL backups end to end: `pg dump` and `pg restore-dump`
//! against a real PostgreSQL cluster, with pg_dump, pg_dumpall, pg_restore
//! and psql as the server's distribution ships them.

use lifeboat_testkit::postgres::PgCluster;

use crate::pg::PgEnv;

/// An identity platform in database `app`: users, sessions, audit events
/// (`scale` thousand users), and a role with a password.
fn identity(pg: &PgCluster, scale: u32) {
    pg.psql("postgres", "create database app").unwrap();
    pg.psql(
        "app",
        &format!(
            "create table users (id bigint primary key, email text unique, profile jsonb, created_at timestamptz default now()); \
             create table sessions (id bigint primary key, user_id bigint references users, token text, expires_at timestamptz); \
             create table audit_events (id bigint primary key, user_id bigint, action text, detail text, at timestamptz); \
             insert into users select g, 'u' || g || '@example.com', jsonb_build_object('name', 'user ' || g, 'n', g % 7), timestamptz '2026-01-01' + g * interval '1 minute' from generate_series(1, {u}) g; \
             insert into sessions select g, 1 + g % {u}, md5(g::text), timestamptz '2026-06-01' + g * interval '1 second' from generate_series(1, {s}) g; \
             insert into audit_events select g, 1 + g % {u}, (array['login','logout','update','delete'])[1 + g % 4], repeat(md5(g::text), 2), timestamptz '2026-01-01' + g * interval '1 second' from generate_series(1, {a}) g; \
             create role auditor login password 'audit-pw'; analyze",
            u = scale * 1000,
            s = scale * 2000,
            a = scale * 10000,
        ),
    )
    .unwrap();
}

/// Row count and md5 of the ordered contents of each table of `db`.
fn fingerprint(pg: &PgCluster, db: &str) -> Vec<String> {
    ["users", "sessions", "audit_events"]
        .iter()
        .map(|t| {
            pg.psql(
                db,
                &format!("select count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' order by id)), '-') from {t} t"),
            )
            .unwrap()
            .trim()
            .to_string()
        })
        .collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON: {e}\n{text}"))
}

/// `pg dump --json` of the cluster at `url`, with `extra` arguments.
fn dump(env: &PgEnv, url: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "pg", "dump", "--pg-url", url];
    args.extend_from_slice(extra);
    json(&env.ok(&args))
}

/// The arguments of `pg restore-dump SNAPSHOT --pg-url URL EXTRA…`.
fn restore_dump<'a>(snapshot: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pg", "restore-dump", snapshot, "--pg-url", url];
    args.extend_from_slice(extra);
    args
}

fn dumps(env: &PgEnv) -> usize {
    json(&env.ok(&["--json", "snapshots"]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source_kind"] == "pg_dump")
        .count()
}

/// A dump of every database and the globals restores identical tables:
/// into another database, one table alone, under its own name with
/// `--create` and the roles with `--globals`, and through directory format
/// and parallel jobs.
#[test]
fn a_dump_restores_identical_tables_one_table_and_the_roles() {
    let env = PgEnv::new();
    let pg = PgCluster::start("").unwrap();
    identity(&pg, 5);
    let want = fingerprint(&pg, "app");
    assert!(want[0].starts_with("5000 "), "{want:?}");

    let v = dump(&env, &pg.conninfo("postgres"), &[]);
    let dbs: Vec<&str> = v["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(dbs, ["app", "postgres"], "{v}");
    assert_eq!(v["format"], "custom", "{v}");
    // The snapshot records the server version, the databases and per-table
    // row estimates, as physical backups do.
    let snaps = json(&env.ok(&["--json", "snapshots"]));
    let meta = &snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source_kind"] == "pg_dump")
        .unwrap()["metadata"];
    assert!(meta["pg_version_num"].as_u64().unwrap() >= 120000, "{meta}");
    let app = meta["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app")
        .unwrap();
    assert!(app["size"].as_u64().unwrap() > 0, "{app}");
    assert_eq!(app["tables"]["public.users"], 5000, "{app}");

    // Into another database.
    pg.psql("postgres", "create database copy").unwrap();
    let copy = pg.conninfo("copy");
    let again = restore_dump("latest", &copy, &["--database", "app"]);
    env.ok(&again);
    assert_eq!(fingerprint(&pg, "copy"), want);

    // pg_restore's own error reaches the user verbatim, with the command:
    // the tables are there already. --clean restores over them.
    pg.psql("copy", "truncate users cascade").unwrap();
    let out = env.run(&again);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pg_restore") && err.contains("already exists"),
        "{err}"
    );
    let mut clean = again.to_vec();
    clean.push("--clean");
    env.ok(&clean);
    assert_eq!(fingerprint(&pg, "copy"), want);
    // A snapshot of two databases needs --database to say which.
    let out = env.run(&again[..5]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds 2 databases (app, postgres); name one with --database"),
        "{err}"
    );

    // One table alone.
    pg.psql("postgres", "create database one").unwrap();
    env.ok(&restore_dump(
        "latest",
        &pg.conninfo("one"),
        &["--database", "app", "--table", "users"],
    ));
    assert_eq!(
        pg.psql(
            "one",
            "select count(*) || ' ' || md5(string_agg(t::text, ',' order by id)) from users t"
        )
        .unwrap()
        .trim(),
        want[0]
    );
    assert_eq!(
        pg.psql("one", "select to_regclass('public.sessions') is null")
            .unwrap()
            .trim(),
        "t"
    );

    // Gone: the database and the role. Back under their own names.
    pg.psql("postgres", "drop database app").unwrap();
    pg.psql("postgres", "drop role auditor").unwrap();
    let mut args = vec!["--json"];
    let postgres = pg.conninfo("postgres");
    args.extend(restore_dump(
        "latest",
        &postgres,
        &["--database", "app", "--create", "--globals"],
    ));
    let v = json(&env.ok(&args));
    assert_eq!(v["globals"], true, "{v}");
    assert_eq!(fingerprint(&pg, "app"), want);
    assert_eq!(
        pg.psql("postgres", "select rolcanlogin and rolpassword is not null from pg_authid where rolname = 'auditor'").unwrap().trim(),
        "t",
        "the role comes back, with its password"
    );

    // Directory format with parallel jobs, restored with parallel jobs; and
    // the custom-format dump restored with parallel jobs too.
    let v = dump(&env, &postgres, &["--database", "app", "--jobs", "2"]);
    assert_eq!(v["format"], "directory", "{v}");
    let dir_snapshot = v["snapshot"].as_str().unwrap().to_string();
    pg.psql("postgres", "create database par").unwrap();
    let par = pg.conninfo("par");
    let mut args = vec!["--json"];
    args.extend(restore_dump(&dir_snapshot, &par, &["--jobs", "2"]));
    let r = json(&env.ok(&args));
    assert!(r["bytes"].as_u64().unwrap() > 100_000, "{r}");
    assert_eq!(fingerprint(&pg, "par"), want);
    let v = dump(&env, &postgres, &["--database", "app"]);
    pg.psql("postgres", "create database par2").unwrap();
    env.ok(&restore_dump(
        v["snapshot"].as_str().unwrap(),
        &pg.conninfo("par2"),
        &["--jobs", "2"],
    ));
    assert_eq!(fingerprint(&pg, "par2"), want);

    // A damaged repository is named as such (exit 3), not as the cut-off
    // archive pg_restore then complains of.
    env.damage_every_pack();
    pg.psql("postgres", "create database broken").unwrap();
    let out = env.run(&restore_dump(
        v["snapshot"].as_str().unwrap(),
        &pg.conninfo("broken"),
        &[],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("packs/"), "the damaged object is named: {err}");
}

/// A second dump after a small change stores little: content-defined chunks
/// find what the two dumps share.
#[test]
fn a_dump_after_a_small_change_stores_little() {
    let env = PgEnv::new();
    let pg = PgCluster::start("").unwrap();
    identity(&pg, 30);
    let url = pg.conninfo("postgres");
    let first = dump(&env, &url, &["--database", "app"]);
    pg.psql(
        "app",
        "update users set profile = profile || '{\"changed\": true}' where id % 100 = 3; \
         insert into audit_events select g, 1, 'login', 'new', now() from generate_series(300001, 300300) g",
    )
    .unwrap();
    let second = dump(&env, &url, &["--database", "app"]);
    let stored = |v: &serde_json::Value| v["stats"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored(&first) > 5 << 20,
        "the first dump is big enough to mean something: {first}"
    );
    assert!(
        stored(&second) * 100 < stored(&first) * 20,
        "the second dump stored {} bytes, the first {}",
        stored(&second),
        stored(&first)
    );
}

/// A dump that cannot be made leaves no snapshot, and says why: a database
/// that does not exist, pg_dump's own error (in its words, with the command),
/// a server that is down.
#[test]
fn a_failing_dump_is_named_and_leaves_no_snapshot() {
    let env = PgEnv::new();
    let mut pg = PgCluster::start("").unwrap();
    identity(&pg, 1);

    let out = env.run(&[
        "pg",
        "dump",
        "--pg-url",
        &pg.conninfo("postgres"),
        "--database",
        "nope",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"nope\"") && err.contains("app"), "{err}");

    // pg_dump fails on a table the role may not read: its words, and the command.
    pg.psql(
        "app",
        "create table secret (x int); create role reader login",
    )
    .unwrap();
    let url = pg
        .conninfo("postgres")
        .replace("user=postgres", "user=reader");
    let out = env.run(&["pg", "dump", "--pg-url", &url, "--database", "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied for table"),
        "pg_dump's own words: {err}"
    );
    assert!(
        err.contains("pg_dump") && err.contains("--format=custom"),
        "the command: {err}"
    );

    pg.stop().unwrap();
    let out = env.run(&["pg", "dump", "--pg-url", &pg.conninfo("postgres")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");

    assert_eq!(dumps(&env), 0, "no dump snapshot was recorded");
}
