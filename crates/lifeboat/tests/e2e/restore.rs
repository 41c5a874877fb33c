//! Files restores as an attacker and a tired operator meet them: targets
//! that are not empty, links planted in them, names that are bytes, special
//! files, and a repository an older release wrote.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::harness::*;

fn restore_into(env: &Env, snap: &str, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "files",
        "restore",
        snap,
        "--target",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// A target that is not empty is refused unless `--overwrite` says what to
/// do; links planted in it are never followed, whatever it says; `never`
/// keeps what is there, `always` replaces it, `if-changed` replaces only
/// files whose size or modification time differ.
#[test]
fn restore_refuses_a_busy_target_and_never_follows_planted_links() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/passwd"), b"root:x:0:0:restored\n").unwrap();
    fs::write(src.join("etc/shadow"), b"restored shadow\n").unwrap();
    fs::write(src.join("notes.txt"), b"notes v1").unwrap();
    let snap = snapshot_id(&env.json(&["files", "backup", src.to_str().unwrap()]));

    // What an attacker can write: the target, where links point outside.
    let victim = env.path("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("passwd"), b"victim's own passwd\n").unwrap();
    let target = env.path("target");
    let here = restored(&target, &src);
    fs::create_dir_all(&here).unwrap();
    symlink(&victim, here.join("etc")).unwrap();
    let victim_listing = || {
        let mut v: Vec<_> = fs::read_dir(&victim)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.clone(), fs::read(&p).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = victim_listing();

    let out = restore_into(&env, &snap, &target, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not empty") && stderr(&out).contains("--overwrite"),
        "{}",
        stderr(&out)
    );

    // never: the planted link stays, nothing goes through it.
    let out = restore_into(&env, &snap, &target, &["--overwrite", "never"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(here.join("etc"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(here.join("notes.txt")).unwrap(), b"notes v1");
    assert_eq!(victim_listing(), before, "nothing written through the link");

    // always: the link is replaced by the directory, and a link planted at
    // a file's place is replaced by the file, not written through.
    fs::write(here.join("notes.txt"), b"changed by someone").unwrap();
    let out = restore_into(&env, &snap, &target, &["--overwrite", "always"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(here.join("etc")).unwrap().is_dir());
    assert_eq!(
        fs::read(here.join("etc/passwd")).unwrap(),
        b"root:x:0:0:restored\n"
    );
    assert_eq!(fs::read(here.join("notes.txt")).unwrap(), b"notes v1");
    assert_eq!(victim_listing(), before);
    fs::remove_file(here.join("etc/shadow")).unwrap();
    symlink(victim.join("passwd"), here.join("etc/shadow")).unwrap();
    let out = restore_into(&env, &snap, &target, &["--overwrite", "always"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(here.join("etc/shadow"))
        .unwrap()
        .is_file());
    assert_eq!(
        fs::read(here.join("etc/shadow")).unwrap(),
        b"restored shadow\n"
    );
    assert_eq!(victim_listing(), before);

    // if-changed: same size and mtime is trusted as unchanged, anything
    // else is replaced.
    let notes = here.join("notes.txt");
    let mtime = fs::metadata(&notes).unwrap().modified().unwrap();
    fs::write(&notes, b"notes v2").unwrap();
    fs::File::options()
        .write(true)
        .open(&notes)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::write(
        here.join("etc/passwd"),
        b"longer than the restored passwd file\n",
    )
    .unwrap();
    let out = env.run(&[
        "--json",
        "files",
        "restore",
        &snap,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["stats"]["unchanged"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        fs::read(&notes).unwrap(),
        b"notes v2",
        "same size and time: kept"
    );
    assert_eq!(
        fs::read(here.join("etc/passwd")).unwrap(),
        b"root:x:0:0:restored\n"
    );
    assert_eq!(victim_listing(), before);
}

/// Names are bytes: invalid UTF-8, newlines, control characters, backslashes
/// and 255-byte names are backed up and restored exactly (no
/// `--allow-partial` needed), and `ls` shows them escaped, one line each.
/// FIFOs and device nodes come back; a socket is listed, not restored.
#[test]
fn names_are_bytes_and_special_files_come_back() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let src = env.path("src");
    let odd = src.join("odd");
    fs::create_dir_all(&odd).unwrap();
    let names: Vec<Vec<u8>> = vec![
        b"caf\xe9 latin-1".to_vec(),
        b"new\nline".to_vec(),
        b"tab\tbell\x07esc\x1b[31m".to_vec(),
        b"back\\slash \\xff not an escape".to_vec(),
        [b"long-".to_vec(), vec![b'n'; 250]].concat(),
        [vec![0xffu8; 3], vec![b'x'; 252]].concat(),
    ];
    for (i, n) in names.iter().enumerate() {
        assert!(n.len() <= 255);
        fs::write(odd.join(OsStr::from_bytes(n)), format!("content {i}")).unwrap();
    }
    let dir = odd.join(OsStr::from_bytes(b"dir \xfe\xfd"));
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("inside"), b"below a non-UTF-8 directory").unwrap();
    symlink(
        OsStr::from_bytes(b"caf\xe9 latin-1"),
        odd.join("link to \\xe9"),
    )
    .unwrap();
    let special = src.join("special");
    fs::create_dir_all(&special).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(special.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    // Device nodes need CAP_MKNOD; where the test cannot make one, it
    // checks the rest.
    let made_device = std::process::Command::new("mknod")
        .arg(special.join("null"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let sockets = src.join("sockets");
    fs::create_dir_all(&sockets).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(sockets.join("sock")).unwrap();

    let v = env.json(&["files", "backup", src.to_str().unwrap()]);
    assert_eq!(v["partial"], false, "{v}");
    let snap = snapshot_id(&v);

    let target = env.path("restore");
    let out = restore_into(&env, &snap, &target, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("socket"),
        "the socket left out is said: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let back = restored(&target, &src);
    assert_eq!(diff_trees(&odd, &back.join("odd")), None);
    assert_eq!(diff_trees(&special, &back.join("special")), None);
    assert!(fs::symlink_metadata(back.join("special/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    if made_device {
        let m = fs::symlink_metadata(back.join("special/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(
            m.rdev(),
            fs::symlink_metadata(special.join("null")).unwrap().rdev()
        );
        not_root_restores_all_but_the_device(&env, &snap, &special);
    }
    assert!(back.join("sockets").is_dir());
    assert!(
        !back.join("sockets/sock").exists(),
        "sockets are not restored"
    );

    // ls: one line per item, control characters escaped.
    let listing = env.ok(&["ls", &snap]);
    let odd_lines: Vec<&str> = listing.lines().filter(|l| l.contains("/odd/")).collect();
    assert_eq!(odd_lines.len(), names.len() + 3, "{listing}");
    assert!(listing.contains("new\\x0aline"), "{listing}");
    assert!(listing.contains("caf\\xe9 latin-1"), "{listing}");
    assert!(listing.contains("bell\\x07esc\\x1b[31m"), "{listing}");
    assert!(
        !listing.contains('\x1b') && !listing.contains('\x07'),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('p') && l.ends_with("/pipe")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('=') && l.ends_with("/sock")),
        "{listing}"
    );
    let json = env.json(&["ls", &snap]);
    assert!(json["nodes"].as_array().unwrap().len() > names.len());
}

/// A repository written by the release before snapshot format 3 (kept in
/// `tests/fixtures/repo-v1`, made by `make-repo-v1.sh`) still opens with its
/// passphrase and its key file, verifies, lists, restores byte for byte —
/// a backslash in a name included — and serves its WAL history file.
#[test]
fn a_repository_an_older_release_wrote_still_reads() {
    let env = Env::new(Backend::Local);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let copy = PathBuf::from(&env.repo);
    copy_tree(&fixture, &copy);
    let run = |args: &[&str]| {
        env.cmd()
            .env("LIFEBOAT_PASSWORD", "fixture passphrase, not a secret")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| succeeded(args, run(args));
    let list: serde_json::Value = serde_json::from_str(&ok(&["--json", "snapshots"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let files = list.iter().find(|s| s["source_kind"] == "files").unwrap();
    let stream = list.iter().find(|s| s["source_kind"] == "stream").unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "verify", "--read-data"])).unwrap();
    assert_eq!(v["clean"], true, "{v}");
    assert!(v["named_checked"].as_u64().unwrap() >= 1, "{v}");

    let target = env.path("restore");
    ok(&[
        "files",
        "restore",
        files["id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let tree = restored(&target, Path::new(files["paths"][0].as_str().unwrap()));
    assert_eq!(
        fs::read(tree.join("docs/hello.txt")).unwrap(),
        b"hello from an older lifeboat\n"
    );
    let m = fs::metadata(tree.join("docs/hello.txt")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o640);
    assert_eq!(m.mtime(), 1_704_164_645, "2024-01-02T03:04:05Z");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect();
    assert!(fs::read(tree.join("bin/data.bin")).unwrap() == data);
    assert_eq!(
        fs::read(tree.join("docs/back\\slash.txt")).unwrap(),
        b"a name with a backslash\n"
    );
    assert_eq!(
        fs::read(tree.join("docs/ünïcödé.txt")).unwrap(),
        "ünïcödé\n".as_bytes()
    );
    let sparse = fs::read(tree.join("bin/sparse")).unwrap();
    assert_eq!(sparse.len(), (1 << 20) + 4);
    assert!(sparse[..1 << 20].iter().all(|&b| b == 0) && sparse.ends_with(b"tail"));
    assert_eq!(
        fs::read_link(tree.join("docs/link")).unwrap(),
        Path::new("hello.txt")
    );
    assert!(tree.join("docs/empty").is_dir());
    let out = run(&[
        "files",
        "restore",
        stream["id"].as_str().unwrap(),
        "--stdout",
    ]);
    assert_eq!(out.stdout, b"a stream from standard input\n");

    // The key file's slot opens it too, and its WAL history comes back.
    let key = env.path("key");
    fs::write(
        &key,
        "fixture key material: 0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let pgdata = env.path("pgdata");
    fs::create_dir_all(pgdata.join("global")).unwrap();
    let mut control = 7_000_000_000_000_000_001u64.to_le_bytes().to_vec();
    control.resize(8192, 0);
    fs::write(pgdata.join("global/pg_control"), control).unwrap();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["--key-file", key.to_str().unwrap(), "pg", "wal-fetch"])
        .arg("00000002.history")
        .arg(pgdata.join("fetched"))
        .args(["--pgdata", pgdata.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(pgdata.join("fetched")).unwrap(),
        b"1\t0/3000060\tno recovery target specified\n"
    );

    // A prune makes it a repository only prune-aware builds open: the
    // config's envelope version goes from 1 (which every older build
    // requires) to 2; everything still reads.
    let config = copy.join("config");
    assert_eq!(fs::read(&config).unwrap()[4..6], [1, 0]);
    ok(&["prune"]);
    assert_eq!(fs::read(&config).unwrap()[4..6], [2, 0]);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "verify", "--read-data"])).unwrap();
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(ok(&["--json", "snapshots"]).matches("\"id\"").count(), 2);
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Restored by a user who may not make device nodes: everything else comes
/// back, the device node is named as not restored, and the exit is 1 (a
/// failure, not damage).
fn not_root_restores_all_but_the_device(env: &Env, snap: &str, special: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let exe = env.path("lifeboat-copy");
    fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &exe).unwrap();
    for p in [env.dir.path().to_path_buf(), PathBuf::from(&env.repo)] {
        let status = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let target = env.path("as-nobody");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&exe)
        .args(["--repo", &env.repo, "files", "restore", snap, "--target"])
        .arg(&target)
        .arg("--include")
        .arg(special)
        .env_clear()
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("HOME", &target)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root") && err.contains("special/null"),
        "{err}"
    );
    let back = restored(&target, special);
    assert!(fs::symlink_metadata(back.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(!back.join("null").exists());
    let partial: Vec<_> = fs::read_dir(&back)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("lifeboat-partial")
        })
        .collect();
    assert!(partial.is_empty(), "no temporary file left");
}
