//! Redis end to end: real redis-server processes (the distribution's), each
//! in a temporary directory on a free loopback port, backed up over the
//! replication protocol and restored.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use lifeboat_redis::resp::{Conn, Reply};
use lifeboat_redis::url::RedisUrl;
use lifeboat_scenarios::sandbox::redis::LocalRedis;

use crate::pg::PgEnv;

pub(crate) fn server(extra: &[&str]) -> (tempfile::TempDir, LocalRedis) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalRedis::start(dir.path(), extra, Duration::from_secs(30)).unwrap();
    (dir, s)
}

fn conn(url: &str) -> Conn {
    Conn::connect(&RedisUrl::parse(url).unwrap(), Duration::from_secs(30)).unwrap()
}

fn ok(c: &mut Conn, args: &[&str]) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let r = c.command(&args).unwrap();
    assert!(!matches!(r, Reply::Error(_)), "{args:?}: {r:?}");
    r
}

/// Keys of every type, some with TTLs, in three databases.
pub(crate) fn fill(url: &str) {
    let mut c = conn(url);
    for db in ["0", "1", "5"] {
        ok(&mut c, &["SELECT", db]);
        for i in 0..200 {
            let i = i.to_string();
            ok(
                &mut c,
                &[
                    "SET",
                    &format!("str:{i}"),
                    &format!("value {i} {}", "x".repeat(i.len() * 10)),
                ],
            );
            ok(
                &mut c,
                &[
                    "HSET",
                    &format!("hash:{i}"),
                    "name",
                    &i,
                    "email",
                    &format!("{i}@example.com"),
                ],
            );
            ok(&mut c, &["RPUSH", &format!("list:{i}"), "a", "b", &i]);
            ok(&mut c, &["SADD", &format!("set:{i}"), "x", "y", &i]);
            ok(
                &mut c,
                &["ZADD", &format!("zset:{i}"), "1", "one", "2.5", &i],
            );
            ok(
                &mut c,
                &[
                    "XADD",
                    &format!("stream:{i}"),
                    "*",
                    "event",
                    "login",
                    "user",
                    &i,
                ],
            );
        }
        for i in 0..50 {
            ok(
                &mut c,
                &["SET", &format!("ttl:{i}"), "expiring", "EX", "3600"],
            );
        }
        // A big value, so the RDB has LZF-compressed strings and some size.
        ok(&mut c, &["SET", "big", &"lifeboat ".repeat(100_000)]);
        // A set and a hash too big for a listpack: stored as hash tables.
        let members: Vec<String> = (0..300).map(|i| format!("member-{i}")).collect();
        let mut sadd = vec!["SADD", "bigset"];
        sadd.extend(members.iter().map(String::as_str));
        ok(&mut c, &sadd);
        let mut hset = vec!["HSET", "bighash"];
        for m in &members {
            hset.extend([m.as_str(), m.as_str()]);
        }
        ok(&mut c, &hset);
    }
}

/// (database, key) → (type, value, has a TTL).
pub(crate) type Contents = BTreeMap<(u32, Vec<u8>), (String, Vec<Vec<u8>>, bool)>;

/// Every key of every database with its type, its value (members of sets
/// and fields of hashes sorted: their order is the hash table's, which
/// differs between processes) and whether it has a TTL.
pub(crate) fn contents(url: &str) -> Contents {
    let mut c = conn(url);
    let mut out = BTreeMap::new();
    let flat = |r: Reply| -> Vec<Vec<u8>> {
        fn walk(r: Reply, out: &mut Vec<Vec<u8>>) {
            match r {
                Reply::Bulk(Some(b)) => out.push(b),
                Reply::Simple(s) => out.push(s.into_bytes()),
                Reply::Int(i) => out.push(i.to_string().into_bytes()),
                Reply::Array(Some(items)) => items.into_iter().for_each(|i| walk(i, out)),
                other => out.push(format!("{other:?}").into_bytes()),
            }
        }
        let mut v = Vec::new();
        walk(r, &mut v);
        v
    };
    for_each_key(&mut c, |c, db, key| {
        let Some(kind) = c.command(&[b"TYPE", &key]).unwrap().text() else {
            panic!("TYPE")
        };
        let value = match kind.as_str() {
            "string" => flat(c.command(&[b"GET", &key]).unwrap()),
            "list" => flat(c.command(&[b"LRANGE", &key, b"0", b"-1"]).unwrap()),
            "zset" => flat(
                c.command(&[b"ZRANGE", &key, b"0", b"-1", b"WITHSCORES"])
                    .unwrap(),
            ),
            "stream" => flat(c.command(&[b"XRANGE", &key, b"-", b"+"]).unwrap()),
            "set" => {
                let mut v = flat(c.command(&[b"SMEMBERS", &key]).unwrap());
                v.sort();
                v
            }
            "hash" => {
                let v = flat(c.command(&[b"HGETALL", &key]).unwrap());
                let mut pairs: Vec<Vec<u8>> = v.chunks(2).map(|p| p.concat()).collect();
                pairs.sort();
                pairs
            }
            other => panic!("unexpected type {other}"),
        };
        let Reply::Int(ttl) = c.command(&[b"PTTL", &key]).unwrap() else {
            panic!("PTTL")
        };
        out.insert((db, key), (kind, value, ttl > 0));
    });
    out
}

/// Calls `each` with every key of every database, the connection on the
/// key's database.
fn for_each_key(c: &mut Conn, mut each: impl FnMut(&mut Conn, u32, Vec<u8>)) {
    for db in 0..16u32 {
        ok(c, &["SELECT", &db.to_string()]);
        let Reply::Array(Some(keys)) = ok(c, &["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for k in keys {
            let Reply::Bulk(Some(key)) = k else {
                panic!("key")
            };
            each(c, db, key);
        }
    }
}

/// (database, key) → the key's `DUMP` payload.
type Dumps = BTreeMap<(u32, Vec<u8>), Vec<u8>>;

/// (database, key) → `DUMP` of the key, for every key whose encoding
/// serialises in a fixed order; the count of the others (hash tables, which
/// `DUMP` lists in the order of the process's randomly seeded hash
/// function, so even the same data differs between two servers: those are
/// compared by `contents`).
fn dumps(url: &str) -> (Dumps, usize) {
    let mut c = conn(url);
    let mut out = BTreeMap::new();
    let mut unordered = 0;
    for_each_key(&mut c, |c, db, key| {
        let encoding = c
            .command(&[b"OBJECT", b"ENCODING", &key])
            .unwrap()
            .text()
            .unwrap_or_default();
        if encoding == "hashtable" {
            unordered += 1;
            return;
        }
        let Reply::Bulk(Some(dump)) = c.command(&[b"DUMP", &key]).unwrap() else {
            panic!("DUMP")
        };
        out.insert((db, key), dump);
    });
    (out, unordered)
}

/// The keys whose `DUMP` payloads differ between two servers.
fn dump_differences(want: &Dumps, url: &str) -> Vec<String> {
    let (got, _) = dumps(url);
    let mut differ: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|((db, k), _)| format!("db{db} {}", String::from_utf8_lossy(k)))
        .collect();
    if got.len() != want.len() {
        differ.push(format!("{} keys against {}", got.len(), want.len()));
    }
    differ
}

/// `redis restore latest --target-dir DIR`.
fn restore_latest_into(env: &PgEnv, dir: &std::path::Path) -> std::process::Output {
    env.run(&[
        "redis",
        "restore",
        "latest",
        "--target-dir",
        dir.to_str().unwrap(),
    ])
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON: {e}\n{text}"))
}

fn redis_snapshots(env: &PgEnv) -> usize {
    json(&env.ok(&["--json", "snapshots"]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source_kind"] == "redis")
        .count()
}

/// Keys of every type with TTLs in several databases come back identical
/// (the same `DUMP` payload, or for hash tables the same members; the same
/// TTLs) from backups taken both ways the server frames the RDB, from the
/// file and through RESTORE, and `restore --verify` proves the file loads
/// with the recorded key counts.
#[test]
fn every_type_comes_back_identical_through_both_framings() {
    let env = PgEnv::new();
    let (_dir, src) = server(&["--repl-diskless-sync-delay", "0"]);
    fill(&src.url());
    let want = contents(&src.url());
    assert_eq!(want.len(), 3 * (6 * 200 + 50 + 3));
    let (want_dumps, unordered) = dumps(&src.url());
    // Redis 7.0 keeps every set of strings in a hash table (7.2 small ones
    // in a listpack); everything but sets, bigset and bighash is ordered.
    assert_eq!(want_dumps.len() + unordered, want.len());
    assert!(unordered >= 6, "bigset and bighash in three databases");
    assert!(
        want_dumps.len() >= 3 * (5 * 200 + 50 + 1),
        "{}",
        want_dumps.len()
    );
    assert_eq!(want.values().filter(|(_, _, ttl)| *ttl).count(), 150);
    let mut c = conn(&src.url());
    for diskless in ["yes", "no"] {
        ok(&mut c, &["CONFIG", "SET", "repl-diskless-sync", diskless]);
        let v = json(&env.ok(&["--json", "redis", "backup", "--redis-url", &src.url()]));
        assert_eq!(v["diskless"], diskless == "yes", "{v}");
        assert_eq!(v["rdb"]["checksummed"], true, "{v}");
        assert_eq!(v["keyspace"]["db5"]["keys"], 1253, "{v}");
        // The snapshot records what the server said of itself.
        let snaps = json(&env.ok(&["--json", "snapshots"]));
        let meta = &snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == v["snapshot"])
            .unwrap()["metadata"];
        assert!(
            meta["redis_version"].as_str().unwrap().starts_with("7."),
            "{meta}"
        );
        assert!(meta["used_memory"].as_u64().unwrap() > 1 << 20, "{meta}");
        assert!(
            meta["rdb_last_save_time"].as_i64().unwrap() > 1_700_000_000,
            "{meta}"
        );
        assert_eq!(meta["keyspace"]["db1"]["expires"], 50, "{meta}");
        assert_eq!(v["keyspace"]["db5"]["expires"], 50, "{v}");
        let target = tempfile::tempdir().unwrap();
        let r = json(&env.ok(&[
            "--json",
            "redis",
            "restore",
            v["snapshot"].as_str().unwrap(),
            "--target-dir",
            target.path().to_str().unwrap(),
            "--verify",
        ]));
        let verified = r["verified"].as_array().unwrap();
        assert_eq!(verified.len(), 3, "{r}");
        assert!(verified.iter().all(|row| row[1] == row[2]), "{r}");
        let left: Vec<_> = std::fs::read_dir(target.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["dump.rdb"], "--verify leaves nothing of its own");
        // A server started on the restored file holds the same keys: the
        // same DUMP payload byte for byte (hash tables: the same members),
        // with their TTLs.
        let restored = LocalRedis::start(target.path(), &[], Duration::from_secs(30)).unwrap();
        let differ = dump_differences(&want_dumps, &restored.url());
        assert!(
            differ.is_empty(),
            "DUMP payloads differ after a restore from the file ({diskless}): {:?}",
            &differ[..differ.len().min(5)]
        );
        let got = contents(&restored.url());
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|((db, k), _)| format!("db{db} {}", String::from_utf8_lossy(k)))
            .take(5)
            .collect();
        assert!(
            got.len() == want.len() && differ.is_empty(),
            "restored contents differ ({diskless}): {} keys against {}; first differing: {differ:?}",
            got.len(),
            want.len()
        );
    }
    // Loaded key by key into a live, empty server: the same keys, values
    // and TTLs; a server holding keys is refused unless --replace.
    let (_d, live) = server(&[]);
    let v = json(&env.ok(&[
        "--json",
        "redis",
        "restore",
        "latest",
        "--to-url",
        &live.url(),
    ]));
    assert_eq!(v["keys"]["db5"], 1253, "{v}");
    assert_eq!(v["expired"], 0, "{v}");
    assert!(
        contents(&live.url()) == want,
        "contents loaded with RESTORE differ"
    );
    let differ = dump_differences(&want_dumps, &live.url());
    assert!(
        differ.is_empty(),
        "DUMP payloads differ after restore --to-url: {:?}",
        &differ[..differ.len().min(5)]
    );
    let out = env.run(&["redis", "restore", "latest", "--to-url", &live.url()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds 3759 key(s)") && err.contains("--replace"),
        "{err}"
    );
    ok(&mut conn(&live.url()), &["SET", "str:1", "changed"]);
    env.ok(&[
        "redis",
        "restore",
        "latest",
        "--to-url",
        &live.url(),
        "--replace",
    ]);
    assert!(
        contents(&live.url()) == want,
        "contents after --replace differ"
    );

    // The restore never writes over an existing dump.rdb.
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("dump.rdb"), b"in use").unwrap();
    let out = restore_latest_into(&env, target.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    assert_eq!(
        std::fs::read(target.path().join("dump.rdb")).unwrap(),
        b"in use"
    );
}

/// Password and ACL logins work; a wrong password, a user without SYNC, a
/// server that disables SYNC and an unreachable server each get a message
/// that names the cause, and record nothing.
#[test]
fn logins_and_refusals_are_named() {
    let env = PgEnv::new();
    let (_dir, src) = server(&["--requirepass", "s3cret"]);
    let port = src.port;
    let mut c = conn(&format!("redis://:s3cret@127.0.0.1:{port}"));
    ok(&mut c, &["SET", "k", "v"]);
    ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "backup",
            "on",
            ">backup-pw",
            "+@all",
            "~*",
        ],
    );
    ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "+@read",
            "+info",
            "+ping",
            "~*",
        ],
    );

    env.ok(&[
        "redis",
        "backup",
        "--redis-url",
        &format!("redis://:s3cret@127.0.0.1:{port}"),
    ]);
    // The password kept off the command line: a file with the URL.
    let url_file = env.dir.path().join("redis-url");
    fs::write(
        &url_file,
        format!("redis://backup:backup-pw@127.0.0.1:{port}\n"),
    )
    .unwrap();
    env.ok(&[
        "redis",
        "backup",
        "--redis-url-file",
        url_file.to_str().unwrap(),
    ]);
    assert_eq!(redis_snapshots(&env), 2);

    let fails = |url: String, code: i32, words: &[&str]| {
        let out = env.run(&["redis", "backup", "--redis-url", &url]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{url}: {err}");
        for w in words {
            assert!(err.contains(w), "{url}: expected {w:?} in: {err}");
        }
        assert!(
            !err.contains("wrong-pw") && !err.contains("reader-pw"),
            "no password in messages: {err}"
        );
    };
    fails(
        format!("redis://:wrong-pw@127.0.0.1:{port}"),
        1,
        &["refused the login", "password"],
    );
    fails(
        format!("redis://127.0.0.1:{port}"),
        1,
        &["refused the login"],
    );
    fails(
        format!("redis://reader:reader-pw@127.0.0.1:{port}"),
        1,
        &["SYNC", "permission"],
    );
    let (_d2, no_sync) = server(&["--rename-command", "SYNC", ""]);
    fails(no_sync.url(), 1, &["SYNC", "managed services"]);
    drop(no_sync);
    let gone = LocalRedis::start(
        tempfile::tempdir().unwrap().path(),
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    let gone_url = gone.url();
    drop(gone);
    fails(gone_url, 1, &["cannot connect to Redis"]);
    assert_eq!(redis_snapshots(&env), 2, "nothing more was recorded");
}

/// A damaged RDB is refused before anything is recorded. A real server does
/// not send damage on purpose, so a stand-in on loopback answers the
/// handshake and sends a real server's RDB with one byte flipped.
#[test]
fn a_damaged_rdb_is_refused_before_it_is_recorded() {
    let env = PgEnv::new();
    let (dir, src) = server(&[]);
    let mut c = conn(&src.url());
    ok(&mut c, &["SET", "k", "some value"]);
    ok(&mut c, &["SAVE"]);
    let mut rdb = std::fs::read(dir.path().join("dump.rdb")).unwrap();
    let at = rdb.len() / 2;
    rdb[at] ^= 0x20;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stand_in = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        let mut w = sock;
        loop {
            // One RESP array command per loop: *N, then N bulk strings.
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                return;
            }
            let n: usize = line.trim_start_matches('*').trim().parse().unwrap();
            let mut args = Vec::new();
            for _ in 0..n {
                let mut len = String::new();
                reader.read_line(&mut len).unwrap();
                let len: usize = len.trim_start_matches('$').trim().parse().unwrap();
                let mut arg = vec![0u8; len + 2];
                reader.read_exact(&mut arg).unwrap();
                args.push(String::from_utf8_lossy(&arg[..len]).to_uppercase());
            }
            match args[0].as_str() {
                "INFO" => {
                    let body = if args[1] == "KEYSPACE" {
                        "# Keyspace\r\ndb0:keys=1,expires=0\r\n"
                    } else {
                        "# x\r\n"
                    };
                    write!(w, "${}\r\n{body}\r\n", body.len()).unwrap();
                }
                "SYNC" => {
                    write!(w, "\n\n${}\r\n", rdb.len()).unwrap();
                    w.write_all(&rdb).unwrap();
                    return;
                }
                "PING" => w.write_all(b"+PONG\r\n").unwrap(),
                _ => w.write_all(b"+OK\r\n").unwrap(),
            }
        }
    });
    let out = env.run(&[
        "redis",
        "backup",
        "--redis-url",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    stand_in.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("damaged") && err.contains("CRC-64") && err.contains("not recorded"),
        "{err}"
    );
    assert_eq!(redis_snapshots(&env), 0);
}

/// `--aof` beside the server: the AOF directory goes into the snapshot with
/// rewrites paused for the copy and set back after; restored, a server with
/// appendonly on loads it and holds the same keys.
#[test]
fn the_aof_directory_is_backed_up_and_loads() {
    let env = PgEnv::new();
    let (_dir, src) = server(&["--appendonly", "yes", "--auto-aof-rewrite-percentage", "77"]);
    fill(&src.url());
    let mut c = conn(&src.url());
    // A rewrite makes a base file; later writes go to an increment file.
    ok(&mut c, &["BGREWRITEAOF"]);
    while !matches!(c.info("persistence").unwrap().iter().find(|(k, _)| k == "aof_rewrite_in_progress"), Some((_, v)) if v == "0")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&mut c, &["SET", "after-rewrite", "in the increment file"]);
    let want = contents(&src.url());

    let v = json(&env.ok(&[
        "--json",
        "redis",
        "backup",
        "--redis-url",
        &src.url(),
        "--aof",
    ]));
    let files: Vec<&str> = v["aof_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".manifest")), "{v}");
    assert!(files.iter().any(|f| f.contains(".incr.")), "{v}");
    let Reply::Array(Some(pct)) = ok(&mut c, &["CONFIG", "GET", "auto-aof-rewrite-percentage"])
    else {
        panic!()
    };
    assert_eq!(
        pct[1].text().as_deref(),
        Some("77"),
        "rewrites are set back as they were"
    );

    let target = tempfile::tempdir().unwrap();
    let r = json(&env.ok(&[
        "--json",
        "redis",
        "restore",
        "latest",
        "--target-dir",
        target.path().to_str().unwrap(),
        "--verify",
    ]));
    assert!(
        r["verified"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row[1] == row[2]),
        "{r}"
    );
    let restored = LocalRedis::start(
        target.path(),
        &["--appendonly", "yes", "--appenddirname", "appendonlydir"],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        contents(&restored.url()) == want,
        "the AOF restored differs"
    );

    // A server without AOF is refused for --aof, by name.
    let (_d2, plain) = server(&[]);
    let out = env.run(&["redis", "backup", "--redis-url", &plain.url(), "--aof"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("appendonly no"));

    // A damaged repository: the restore fails, by name, and leaves no
    // dump.rdb (or AOF directory) for a server to load.
    env.damage_every_pack();
    let target = tempfile::tempdir().unwrap();
    let out = restore_latest_into(&env, target.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("packs/"), "the damaged object is named: {err}");
    let left: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed restore left {left:?}");
    // Loading key by key, the damage is named too (not the RDB it cut short).
    let (_d3, live) = server(&[]);
    let out = env.run(&["redis", "restore", "latest", "--to-url", &live.url()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("packs/"), "the damaged object is named: {err}");
}

/// `rediss://`: TLS checked against the CA given with --redis-ca, for the
/// backup and for `restore --to-url`; a certificate lifeboat cannot check
/// is named as the cause.
#[test]
fn tls_is_checked_against_the_ca_given() {
    let env = PgEnv::new();
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=lifeboat-test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost");
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext && openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext");
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let file = |n: &str| d.join(n).to_str().unwrap().to_string();
    let tls_args = [
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &file("srv.crt"),
        "--tls-key-file",
        &file("srv.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
        "--tls-replication",
        "yes",
    ];
    let (_dir, src) = server(&tls_args);
    fill(&src.url());
    let want = contents(&src.url());
    let url = format!("rediss://localhost:{tls_port}");
    let ca = file("ca.crt");

    let out = env.run(&["redis", "backup", "--redis-url", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS handshake failed") && err.contains("--redis-ca"),
        "{err}"
    );

    let v = json(&env.ok(&[
        "--json",
        "redis",
        "backup",
        "--redis-url",
        &url,
        "--redis-ca",
        &ca,
    ]));
    assert_eq!(v["keyspace"]["db0"]["keys"], 1253, "{v}");
    // Loaded back over TLS into another server.
    let live_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut live_args = tls_args;
    live_args[1] = &live_port;
    let (_d2, live) = server(&live_args);
    env.ok(&[
        "redis",
        "restore",
        "latest",
        "--to-url",
        &format!("rediss://localhost:{live_port}"),
        "--redis-ca",
        &ca,
    ]);
    assert!(
        contents(&live.url()) == want,
        "contents loaded over TLS differ"
    );
}

/// `redis backup --time` records the snapshot under the time given; a time
/// that does not read is a usage error before the server is asked anything.
#[test]
fn a_backup_can_be_recorded_under_another_time() {
    let env = PgEnv::new();
    let (_dir, src) = server(&[]);
    ok(&mut conn(&src.url()), &["SET", "k", "v"]);
    env.ok(&[
        "redis",
        "backup",
        "--redis-url",
        &src.url(),
        "--time",
        "2019-12-31T23:00:00-01:00",
    ]);
    let list = json(&env.ok(&["--json", "snapshots"]));
    assert_eq!(list[0]["source_kind"], "redis", "{list}");
    assert_eq!(list[0]["start_time"], "2020-01-01T00:00:00Z", "{list}");
    let out = env.run(&[
        "redis",
        "backup",
        "--redis-url",
        &src.url(),
        "--time",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"soon\""));
    let out = env.run(&[
        "pg",
        "dump",
        "--pg-url",
        "host=/nonexistent",
        "--time",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"soon\""));
}
