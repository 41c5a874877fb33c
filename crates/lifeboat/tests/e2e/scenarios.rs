//! Scenarios every backend must pass: each runs against local disk and
//! against a real Garage S3 server, as `NAME::local` and `NAME::s3`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::*;

fn set_mtime(p: &std::path::Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).expect("set mtime");
}

/// A tree with every kind of item the format must carry.
fn make_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/nested")).unwrap();
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    fs::write(src.join("text.txt"), text_bytes(300_000, 1)).unwrap();
    fs::write(src.join("random.bin"), random_bytes(5_000_000, 2)).unwrap();
    fs::write(src.join("empty-file"), b"").unwrap();
    fs::write(src.join("dir/nested/small"), b"tiny").unwrap();
    fs::write(src.join("dir/exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(src.join("dir/exec.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(src.join("text.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("text.txt", src.join("link-to-text")).unwrap();
    symlink("/nonexistent/target", src.join("dangling-link")).unwrap();
    // A sparse file: 64 MiB with data only at its start, middle and end.
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"head", 0).unwrap();
    sparse
        .write_all_at(&random_bytes(10_000, 3), 32 << 20)
        .unwrap();
    sparse.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    drop(sparse);
    set_mtime(&src.join("text.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("link-to-text"), 1_500_000_000, 0);
    src
}

fn round_trip_is_byte_identical(env: &Env) {
    env.init(&[]);
    let src = make_tree(env);
    let b = env.json(&["files", "backup", src.to_str().unwrap(), "--tag", "first"]);
    let id = snapshot_id(&b);
    let target = env.restore_dir(&id[..10], "restore");
    let restored_src = restored(&target, &src);
    assert_eq!(diff_trees(&src, &restored_src), None);
    // Holes stay holes: the restored sparse file does not occupy 64 MiB.
    use std::os::unix::fs::MetadataExt;
    let blocks = fs::metadata(restored_src.join("sparse.img"))
        .unwrap()
        .blocks();
    assert!(
        blocks * 512 < 8 << 20,
        "sparse file restored dense: {} bytes allocated",
        blocks * 512
    );
    // The snapshot lists the items with their metadata.
    let ls = env.json(&["ls", "latest"]);
    let nodes = ls["nodes"].as_array().unwrap();
    let link = nodes
        .iter()
        .find(|n| n["path"].as_str().unwrap().ends_with("/src/link-to-text"))
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "text.txt");
    assert!(nodes
        .iter()
        .any(|n| n["path"].as_str().unwrap().ends_with("/src/empty-dir") && n["type"] == "dir"));
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["tags"][0], "first");
    // --include restores only what is asked.
    let partial = env.path("partial");
    let inc = format!("{}/dir", src.display());
    env.ok(&[
        "files",
        "restore",
        "latest",
        "--target",
        partial.to_str().unwrap(),
        "--include",
        &inc,
    ]);
    let p = restored(&partial, &src);
    assert_eq!(fs::read(p.join("dir/nested/small")).unwrap(), b"tiny");
    assert!(!p.join("text.txt").exists());
}
on_every_backend!(round_trip_is_byte_identical);

fn stream_round_trip(env: &Env) {
    env.init(&[]);
    let data = text_bytes(3_000_000, 9);
    let mut child = env
        .cmd()
        .args(["--json", "files", "backup", "--stdin", "--name", "dump.sql"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = snapshot_id(&v);
    let restored = env
        .cmd()
        .args(["files", "restore", &id, "--stdout"])
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(restored.stdout, data);
}
on_every_backend!(stream_round_trip);

fn unchanged_data_stores_under_one_percent(env: &Env) {
    env.init(&[]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(40 << 20, 4)).unwrap();
    fs::write(src.join("text.txt"), text_bytes(2 << 20, 5)).unwrap();
    let first = env.json(&["files", "backup", src.to_str().unwrap()]);
    let total = first["stats"]["bytes_total"].as_u64().unwrap();
    // Unchanged files are not even read the second time…
    let second = env.json(&["files", "backup", src.to_str().unwrap()]);
    let stored = second["stats"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored * 100 < total,
        "unchanged backup stored {stored} of {total}"
    );
    assert_eq!(second["stats"]["bytes_read"].as_u64(), Some(0));
    // …and when forced to read them, deduplication stores nothing new either.
    let forced = env.json(&["files", "backup", "--force", src.to_str().unwrap()]);
    let stored = forced["stats"]["bytes_stored"].as_u64().unwrap();
    assert_eq!(forced["stats"]["bytes_read"].as_u64(), Some(total));
    assert!(
        stored * 100 < total,
        "forced re-read stored {stored} of {total}"
    );
}
on_every_backend!(unchanged_data_stores_under_one_percent);

fn one_percent_change_stores_under_five_percent(env: &Env) {
    env.init(&[]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let size = 100 << 20;
    let mut data = random_bytes(size, 6);
    fs::write(src.join("big.bin"), &data).unwrap();
    env.json(&["files", "backup", src.to_str().unwrap()]);
    // Change 1 % of the file in place, in the middle.
    let start = size / 2;
    data[start..start + size / 100].copy_from_slice(&random_bytes(size / 100, 7));
    fs::write(src.join("big.bin"), &data).unwrap();
    let second = env.json(&["files", "backup", src.to_str().unwrap()]);
    let stored = second["stats"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored * 20 < size as u64,
        "1 % change stored {stored} of {size}"
    );
    let id = snapshot_id(&second);
    let target = env.restore_dir(&id, "restore");
    assert_eq!(
        fs::read(restored(&target, &src).join("big.bin")).unwrap(),
        data
    );
}
on_every_backend!(one_percent_change_stores_under_five_percent);

fn wrong_password_is_named_and_writes_nothing(env: &Env) {
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let before = env.keys("");
    let out = env
        .cmd()
        .env("LIFEBOAT_PASSWORD", "not the password")
        .args(["files", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("wrong password"), "{err}");
    assert!(err.contains("LIFEBOAT_PASSWORD"), "{err}");
    assert_eq!(env.keys(""), before, "a failed open must write nothing");
    // No password at all is its own message.
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no password or key was given"),
        "{}",
        stderr(&out)
    );
}
on_every_backend!(wrong_password_is_named_and_writes_nothing);

fn flipped_byte_is_found_and_other_snapshots_still_restore(env: &Env) {
    env.init(&[]);
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("fa"), random_bytes(3 << 20, 10)).unwrap();
    fs::write(b.join("fb"), random_bytes(3 << 20, 11)).unwrap();
    let snap_a = snapshot_id(&env.json(&["files", "backup", a.to_str().unwrap()]));
    let packs_before = env.keys("packs/");
    let snap_b = snapshot_id(&env.json(&["files", "backup", b.to_str().unwrap()]));
    let new_pack = env
        .keys("packs/")
        .into_iter()
        .find(|p| !packs_before.contains(p))
        .expect("snapshot b wrote a pack")
        .0;
    let s = env.storage();
    let mut bytes = env.block(s.get(&new_pack)).unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    env.block(s.put(&new_pack, Bytes::from(bytes))).unwrap();

    // Structure alone looks fine; reading the data finds the damage.
    env.ok(&["verify"]);
    let out = env.run(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&new_pack),
        "verify must name the pack:\n{text}"
    );
    assert!(
        text.contains(&snap_b[..8]),
        "verify must name the broken snapshot:\n{text}"
    );
    assert!(
        !text.contains(&snap_a[..8]),
        "snapshot a is intact:\n{text}"
    );
    let json_out = env
        .cmd()
        .args(["--json", "verify", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(json_out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["broken_snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(v["broken_snapshots"][0]["id"], snap_b.as_str());

    // The intact snapshot restores; the broken one fails loudly with exit 3.
    let t = env.restore_dir(&snap_a, "ra");
    assert_eq!(
        fs::read(restored(&t, &a).join("fa")).unwrap(),
        random_bytes(3 << 20, 10)
    );
    let out = env.run(&[
        "files",
        "restore",
        &snap_b,
        "--target",
        env.path("rb").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
}
on_every_backend!(flipped_byte_is_found_and_other_snapshots_still_restore);

/// A backup killed just after its first index object is stored (failpoint
/// `after-index-stored`): no snapshot, a clean repository, and the next
/// backup reuses what the killed one indexed.
fn killed_backup_leaves_a_clean_repository_and_is_reused(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let size = 16usize << 20;
    fs::write(src.join("big.bin"), random_bytes(size, 12)).unwrap();
    // Some packs are stored and indexed when the process dies.
    env.crash(
        "after-index-stored=abort",
        &["files", "backup", src.to_str().unwrap()],
    );
    assert_eq!(
        env.keys("index/").len(),
        1,
        "killed just after its first index object"
    );
    assert!(
        env.keys("snapshots/").is_empty(),
        "a killed backup wrote no snapshot"
    );
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let second = env.json(&["files", "backup", src.to_str().unwrap()]);
    let stored = second["stats"]["bytes_stored"].as_u64().unwrap();
    let new = second["stats"]["chunks_new"].as_u64().unwrap();
    let all = second["stats"]["chunks"].as_u64().unwrap();
    assert!(
        stored < size as u64,
        "the retry re-uploaded everything: {stored}"
    );
    assert!(new < all, "no chunk of the killed backup was reused");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let t = env.restore_dir("latest", "restore");
    assert_eq!(
        fs::read(restored(&t, &src).join("big.bin")).unwrap(),
        random_bytes(size, 12)
    );
}
on_every_backend!(killed_backup_leaves_a_clean_repository_and_is_reused);

/// A backup killed once a pack is stored but before any index object lists
/// it (failpoint `after-pack-stored`), then one killed when everything is
/// stored and indexed but its snapshot (`before-snapshot-stored`): neither
/// records a snapshot, the repository stays clean, and the next backup
/// stores nothing new.
fn a_backup_killed_before_its_index_or_its_snapshot_records_nothing(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let size = 16usize << 20;
    fs::write(src.join("big.bin"), random_bytes(size, 31)).unwrap();
    let backup = ["files", "backup", src.to_str().unwrap()];

    env.crash("after-pack-stored=abort@1", &backup);
    assert!(
        env.keys("index/").is_empty(),
        "killed before any index object"
    );
    assert!(env.keys("snapshots/").is_empty(), "no snapshot recorded");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "a pack in no index is not damage: {v}");
    assert!(
        v["unindexed_packs"].as_u64().unwrap() >= 1,
        "the stored pack is there, in no index: {v}"
    );

    env.crash("before-snapshot-stored=abort", &backup);
    assert!(
        env.keys("snapshots/").is_empty(),
        "a backup killed before its snapshot records none"
    );
    assert!(!env.keys("index/").is_empty(), "its packs are indexed");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");

    let b = env.json(&backup);
    assert_eq!(
        b["stats"]["chunks_new"], 0,
        "everything the killed backup stored is reused: {b}"
    );
    assert!(b["stats"]["chunks"].as_u64().unwrap() > 0, "{b}");
    let t = env.restore_dir("latest", "restore");
    assert_eq!(
        fs::read(restored(&t, &src).join("big.bin")).unwrap(),
        random_bytes(size, 31)
    );
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
}
on_every_backend!(a_backup_killed_before_its_index_or_its_snapshot_records_nothing);

fn concurrent_backups_both_restore(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    // Shared content in both, so they race to store the same chunks.
    let shared = random_bytes(8 << 20, 13);
    fs::write(a.join("shared"), &shared).unwrap();
    fs::write(b.join("shared"), &shared).unwrap();
    fs::write(a.join("own"), random_bytes(6 << 20, 14)).unwrap();
    fs::write(b.join("own"), random_bytes(6 << 20, 15)).unwrap();
    let ca = env.spawn(&["--json", "files", "backup", a.to_str().unwrap()]);
    let cb = env.spawn(&["--json", "files", "backup", b.to_str().unwrap()]);
    let oa = ca.wait_with_output().unwrap();
    let ob = cb.wait_with_output().unwrap();
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    let ia = snapshot_id(&serde_json::from_slice(&oa.stdout).unwrap());
    let ib = snapshot_id(&serde_json::from_slice(&ob.stdout).unwrap());
    let ta = env.restore_dir(&ia, "ra");
    let tb = env.restore_dir(&ib, "rb");
    assert_eq!(diff_trees(&a, &restored(&ta, &a)), None);
    assert_eq!(diff_trees(&b, &restored(&tb, &b)), None);
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
}
on_every_backend!(concurrent_backups_both_restore);

fn unknown_format_version_is_refused_by_name(env: &Env) {
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let id = snapshot_id(&env.json(&["files", "backup", src.to_str().unwrap()]));
    let key = format!("snapshots/{id}");
    let s = env.storage();
    let mut bytes = env.block(s.get(&key)).unwrap().to_vec();
    bytes[4] = 7; // format version 7
    env.block(s.put(&key, Bytes::from(bytes))).unwrap();
    let out = env.run(&["ls", &id]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("format version 7") && err.contains("reads version 1"),
        "{err}"
    );
    assert!(err.contains(&key), "{err}");
    // verify cannot check what this build cannot read: it says so (exit
    // 2), and does not call a newer object damage (exit 3).
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("newer lifeboat"), "{}", stderr(&out));
}
on_every_backend!(unknown_format_version_is_refused_by_name);

fn key_slots_add_list_remove(env: &Env) {
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(100_000, 16)).unwrap();
    let first = snapshot_id(&env.json(&["files", "backup", src.to_str().unwrap()]));
    // A key-file slot and a second passphrase slot.
    let keyfile = env.path("key");
    fs::write(&keyfile, hex_key()).unwrap();
    env.ok(&[
        "repo",
        "key",
        "add",
        "--label",
        "kms",
        "--new-key-file",
        keyfile.to_str().unwrap(),
    ]);
    let out = env
        .cmd()
        .env("LIFEBOAT_NEW_PASSWORD", "second passphrase")
        .args(["repo", "key", "add", "--kdf-memory", "8MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list = env.json(&["repo", "key", "list"]);
    let slots = list["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3);
    // Each secret opens the repository on its own.
    let by_key = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", keyfile.to_str().unwrap(), "ls", &first])
        .output()
        .unwrap();
    assert!(by_key.status.success(), "{}", stderr(&by_key));
    let by_env_key = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_KEY", hex_key())
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(by_env_key.status.success(), "{}", stderr(&by_env_key));
    let by_cmd = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--password-command", "echo second passphrase", "snapshots"])
        .output()
        .unwrap();
    assert!(by_cmd.status.success(), "{}", stderr(&by_cmd));
    // Rotating the data key keeps old data readable and new data restorable.
    env.ok(&["repo", "key", "rotate"]);
    fs::write(src.join("g"), random_bytes(100_000, 17)).unwrap();
    env.ok(&["files", "backup", src.to_str().unwrap()]);
    let t = env.restore_dir(&first, "old");
    assert_eq!(
        fs::read(restored(&t, &src).join("f")).unwrap(),
        random_bytes(100_000, 16)
    );
    let t = env.restore_dir("latest", "new");
    assert_eq!(diff_trees(&src, &restored(&t, &src)), None);
    // Remove two slots; the last one is refused.
    let ids: Vec<String> = slots
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let current = slots.iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in ids.iter().filter(|i| **i != current) {
        env.ok(&["repo", "key", "remove", id]);
    }
    let out = env.run(&["repo", "key", "remove", &current]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("last key slot"), "{}", stderr(&out));
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true);
    // The removed key file no longer opens it.
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", keyfile.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
on_every_backend!(key_slots_add_list_remove);

fn hex_key() -> String {
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into()
}

fn missing_repository_is_named(env: &Env) {
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no lifeboat repository at"), "{err}");
    assert!(err.contains("lifeboat repo init"), "{err}");
}
on_every_backend!(missing_repository_is_named);

/// Root reads everything, so as root the backup runs as `nobody` to meet a
/// file it cannot read.
fn unreadable_file_needs_allow_partial(env: &Env) {
    let root = is_root();
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"hidden").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    if root {
        make_world_writable(env.dir.path());
    }
    let run = |extra: &[&str]| {
        let mut c = env.cmd();
        let mut args: Vec<String> = vec!["--json".into(), "files".into(), "backup".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(src.display().to_string());
        if root {
            let mut w = std::process::Command::new("setpriv");
            w.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
            w.arg(c.get_program());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => w.env(k, v),
                    None => w.env_remove(k),
                };
            }
            w.env_remove("HOME").env("HOME", env.dir.path());
            w.args(&args);
            c = w;
        } else {
            c.args(&args);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("secret") && err.contains("--allow-partial"),
        "{err}"
    );
    assert!(
        env.keys("snapshots/").is_empty(),
        "no snapshot without --allow-partial"
    );
    let out = run(&["--allow-partial"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partial"], true);
    assert!(v["skipped"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("secret"));
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["partial"], true);
}
on_every_backend!(unreadable_file_needs_allow_partial);

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn make_world_writable(dir: &std::path::Path) {
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status();
    // …but keep the unreadable file unreadable.
    let _ = fs::set_permissions(dir.join("src/secret"), fs::Permissions::from_mode(0o000));
    // The temp dir's parents must be traversable.
    let mut p = dir.parent();
    while let Some(d) = p {
        if let Ok(m) = fs::metadata(d) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o001));
            }
        }
        p = d.parent();
    }
}

/// Every file under `dir`, relative, with its contents.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

/// A restore that meets a missing or a truncated pack exits 3 naming the
/// pack, lists the files it could not restore, and leaves every other file
/// complete under its name: no file sits at its final name half written,
/// and no temporary file stays behind.
fn a_failed_restore_leaves_only_complete_files(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        fs::write(
            src.join(format!("f{i}.bin")),
            random_bytes(900_000, 100 + i),
        )
        .unwrap();
    }
    fs::write(src.join("small.txt"), b"small and whole").unwrap();
    let snap = snapshot_id(&env.json(&["files", "backup", src.to_str().unwrap()]));
    let packs = env.keys("packs/");
    assert!(packs.len() >= 3, "several packs: {packs:?}");
    let s = env.storage();
    // The two largest packs are the victims: each certainly holds chunks of
    // the big files, and half of each is chunk data (in a pack holding only
    // the small file's chunk, the table of contents at its end can be more
    // than half of it: cut there, or deleted, it cost no big file, and the
    // test failed now and then depending on the packs' random names).
    let mut by_size = packs.clone();
    by_size.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    let largest = by_size[0].0.clone();
    let other = by_size[1].0.clone();
    for (damage, word) in [("truncate", "truncated"), ("delete", "missing")] {
        let victim = if damage == "truncate" {
            &largest
        } else {
            &other
        };
        let original = env.block(s.get(victim)).unwrap();
        if damage == "truncate" {
            env.block(s.put(victim, original.slice(..original.len() / 2)))
                .unwrap();
        } else {
            env.block(s.delete(victim)).unwrap();
        }
        let target = env.path(&format!("restore-{damage}"));
        let out = env.run(&[
            "files",
            "restore",
            &snap,
            "--target",
            target.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{damage}: {err}");
        assert!(
            err.contains(victim.as_str()) && err.contains(word),
            "{damage}: {err}"
        );
        assert!(
            err.contains("not restored"),
            "{damage}: the rest is listed: {err}"
        );
        let restored_dir = restored(&target, &src);
        let got = if restored_dir.exists() {
            files_under(&restored_dir)
        } else {
            Vec::new()
        };
        let mut lost = 0;
        for i in 0..6u64 {
            let name = format!("f{i}.bin");
            match got.iter().find(|(p, _)| p == std::path::Path::new(&name)) {
                Some((_, bytes)) => assert!(
                    *bytes == random_bytes(900_000, 100 + i),
                    "{damage}: {name} is under its name, so it must be complete"
                ),
                None => {
                    lost += 1;
                    assert!(
                        err.contains(&name),
                        "{damage}: {name} is named as lost: {err}"
                    );
                }
            }
        }
        assert!(lost > 0, "{damage}: the damage cost some file");
        assert!(
            got.iter()
                .all(|(p, _)| !p.to_string_lossy().contains("lifeboat-partial")),
            "{damage}: no temporary file is left: {got:?}",
        );
        // Put the pack back: the next round damages another.
        env.block(s.put(victim, original)).unwrap();
    }
    env.ok(&["verify", "--read-data"]);
}
on_every_backend!(a_failed_restore_leaves_only_complete_files);

/// `verify --read-data` racing backups (and a stream backup) for 20 rounds
/// reports nothing that is not there: every run exits 0, names no broken
/// snapshot, and after the race the repository is clean.
fn verify_racing_backups_reports_no_false_damage(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut verifies = 0;
    for round in 0..20u64 {
        // New data every round, so each backup stores packs, index objects
        // and a snapshot while verify reads.
        fs::write(src.join("data.bin"), random_bytes(3 << 20, 1000 + round)).unwrap();
        let files = env.spawn(&["files", "backup", src.to_str().unwrap()]);
        let mut stream = env
            .cmd()
            .args(["files", "backup", "--stdin", "--name", "s"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut input = stream.stdin.take().unwrap();
            input
                .write_all(&random_bytes(2 << 20, 5000 + round))
                .unwrap();
        }
        let mut files = Some(files);
        loop {
            let done = files
                .as_mut()
                .map(|c| c.try_wait().unwrap().is_some())
                .unwrap_or(true);
            let out = env.run(&["verify", "--read-data"]);
            verifies += 1;
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: verify raced a backup and reported damage:\n{text}{}",
                stderr(&out)
            );
            assert!(!text.contains("BROKEN"), "round {round}:\n{text}");
            if done {
                break;
            }
        }
        let out = files.take().unwrap().wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let out = stream.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(verifies >= 20);
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["snapshots"], 40, "{v}");
}
on_every_backend!(verify_racing_backups_reports_no_false_damage);

/// Losing or damaging an index object loses no data: restores that need
/// its chunks fail naming them (exit 3), verify says to run `repair index`,
/// which rebuilds the index from the packs' own tables of contents, after
/// which every snapshot restores byte for byte.
fn a_lost_index_object_is_rebuilt_from_the_packs(env: &Env) {
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}")), random_bytes(2 << 20, 200 + i)).unwrap();
    }
    let snap = snapshot_id(&env.json(&["files", "backup", src.to_str().unwrap()]));
    let indexes = env.keys("index/");
    assert!(indexes.len() >= 2, "{indexes:?}");
    let s = env.storage();

    // Lost: one index object deleted.
    env.block(s.delete(&indexes[0].0)).unwrap();
    let out = env.run(&[
        "files",
        "restore",
        &snap,
        "--target",
        env.path("r1").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair index"), "{}", stderr(&out));
    let out = env.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("BROKEN") && text.contains("lifeboat repair index"),
        "{text}"
    );
    let r = env.json(&["repair", "index"]);
    assert!(r["packs_indexed"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["chunks_indexed"].as_u64().unwrap() >= 1, "{r}");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let t = env.restore_dir(&snap, "r2");
    assert_eq!(diff_trees(&src, &restored(&t, &src)), None);

    // Damaged: a byte flipped in an index object.
    let key = env.keys("index/")[0].0.clone();
    let mut bytes = env.block(s.get(&key)).unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    env.block(s.put(&key, Bytes::from(bytes))).unwrap();
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&key));
    let r = env.json(&["repair", "index", "--read-data"]);
    assert_eq!(r["indexes_removed"][0], key.as_str(), "{r}");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let t = env.restore_dir(&snap, "r3");
    assert_eq!(diff_trees(&src, &restored(&t, &src)), None);
}
on_every_backend!(a_lost_index_object_is_rebuilt_from_the_packs);

#[test]
fn s3_server_stopped_mid_backup_then_restarted() {
    let mut env = Env::new(Backend::S3);
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let size = 48usize << 20;
    fs::write(src.join("big.bin"), random_bytes(size, 21)).unwrap();
    let child = env.spawn(&["--json", "files", "backup", src.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.keys("packs/").is_empty() {
        assert!(Instant::now() < deadline, "no pack was uploaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The outage: stop the server for a few seconds, then bring it back.
    env.garage.as_mut().unwrap().stop();
    std::thread::sleep(Duration::from_secs(3));
    env.garage
        .as_mut()
        .unwrap()
        .restart()
        .expect("restart Garage");
    let out = child.wait_with_output().unwrap();
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(
        v["clean"], true,
        "never a snapshot that points at missing data: {v}"
    );
    if out.status.success() {
        let t = env.restore_dir("latest", "restore");
        assert_eq!(
            fs::read(restored(&t, &src).join("big.bin")).unwrap(),
            random_bytes(size, 21)
        );
    } else {
        let err = stderr(&out);
        assert!(err.contains("s3://"), "the failure names the store: {err}");
        assert!(env.keys("snapshots/").is_empty());
    }
}

/// The audit log and a drill on every store: commands from several
/// processes at once all on record with the chain intact, and a drill that
/// restores and hashes every file (its read on record too). Tampering is
/// tested on the stored objects in `repo`'s fast tier (`fast::audit`).
fn the_audit_log_and_a_drill_hold_on_the_store(env: &Env) {
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), random_bytes(300_000, 21)).unwrap();
    fs::write(src.join("d/g"), random_bytes(5_000, 22)).unwrap();
    env.ok(&["files", "backup", src.to_str().unwrap()]);
    let children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            env.cmd()
                .arg("snapshots")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let log = env.json(&["audit"]);
    let records = log["records"].as_array().unwrap();
    let listed = records
        .iter()
        .filter(|r| r["command"] == "snapshots")
        .count();
    assert_eq!(listed, 4, "{log}");
    assert!(records.iter().any(|r| r["command"] == "repo init"), "{log}");
    let intact = env.ok(&["audit", "verify"]);
    assert!(intact.contains("audit log intact"), "{intact}");

    let record = env.json(&[
        "drill",
        "--all",
        "--workdir",
        env.path("drills").to_str().unwrap(),
    ]);
    assert_eq!(record["passed"], true, "{record:#}");
    let files = record["sources"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "files")
        .unwrap()
        .clone();
    assert!(
        files["detail"]
            .as_str()
            .unwrap()
            .contains("all 2 file(s) restored identical"),
        "{files}"
    );
    let log = env.json(&["audit"]);
    let reads = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "drill" && r["outcome"] == "reading")
        .count();
    assert_eq!(reads, 1, "the drill's read is on record: {log}");
}
on_every_backend!(the_audit_log_and_a_drill_hold_on_the_store);
