//! Restores: byte-identical round trips, include filters, the overwrite
//! rules, and what a damaged pack leaves.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use lifeboat_repo::{Overwrite, RepoError};

use super::*;

fn set_mtime(p: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// A tree with what a files backup must bring back exactly: nested and
/// empty directories, an empty file, a file larger than one read (streamed
/// through the chunker), one with a long run of zeros (a hole), modes, old
/// modification times, links (one dangling), and names that are not UTF-8
/// or hold a newline.
fn varied_tree(src: &Path) {
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("a/small.txt"), b"hello, lifeboat\n").unwrap();
    fs::write(src.join("a/b/empty-file"), b"").unwrap();
    fs::write(src.join("a/b/c/big.bin"), noise(11, 5_000_000)).unwrap();
    let mut sparse = noise(12, 100_000);
    sparse.extend(std::iter::repeat_n(0u8, 1 << 20));
    sparse.extend(noise(13, 100_000));
    fs::write(src.join("sparse.bin"), &sparse).unwrap();
    fs::write(src.join("private"), b"secret").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("script.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&src.join("a/small.txt"), 1_000_000_000);
    let odd = src.join(OsStr::from_bytes(b"caf\xe9 \nname"));
    fs::write(&odd, b"bytes, not text").unwrap();
    symlink("a/small.txt", src.join("link")).unwrap();
    symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// Everything of a files backup comes back as it was.
#[test]
fn a_files_backup_restores_byte_identical() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    varied_tree(&src);
    let out = backup_files(&repo, &[&src]).unwrap();
    assert!(!out.snapshot.partial);
    assert!(out.snapshot.stats.packs >= 2, "{:?}", out.snapshot.stats);

    let target = s.path().join("restore");
    let stats = restore_into(&repo, &out.snapshot, &target, Overwrite::Refuse, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));
    assert_eq!(stats.files, 7, "{stats:?}");
    assert_eq!(stats.symlinks, 2, "{stats:?}");
    assert!(partial_files(&target).is_empty());

    // The same through the page cache, and item by item as streams.
    let target = s.path().join("restore-cached");
    repo.restore(
        &out.snapshot,
        &RestoreOptions {
            target: target.clone(),
            page_cache: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_same_tree(&src, &restored(&target, &src));
    let big = node(&out.snapshot, "/a/b/c/big.bin");
    let mut streamed = Vec::new();
    repo.restore_item(big, &mut streamed, &NoProgress).unwrap();
    assert!(streamed == noise(11, 5_000_000));
}

/// Only the paths included (and what is below them, and the directories
/// above them) are restored; an include that matches nothing, not even a
/// directory above it, is refused.
#[test]
fn include_restores_only_what_it_names() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    varied_tree(&src);
    let out = backup_files(&repo, &[&src]).unwrap();

    let target = s.path().join("restore");
    let include = [
        snapshot_path(&src.join("a/b")),
        snapshot_path(&src.join("private")),
    ];
    restore_into(&repo, &out.snapshot, &target, Overwrite::Refuse, &include).unwrap();
    let back = restored(&target, &src);
    assert_eq!(
        files_below(&back),
        [
            PathBuf::from("a/b/c/big.bin"),
            PathBuf::from("a/b/empty-file"),
            PathBuf::from("private"),
        ]
    );
    assert_same_tree(&src.join("a/b"), &back.join("a/b"));
    assert!(fs::read(back.join("private")).unwrap() == b"secret");

    let err = restore_into(
        &repo,
        &out.snapshot,
        &s.path().join("nothing"),
        Overwrite::Refuse,
        &["nowhere/at/all".to_string()],
    )
    .unwrap_err();
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Usage, "{err}");
    assert!(err.to_string().contains("nothing in the snapshot matches"));
}

/// A target that differs from the snapshot in every way the overwrite rules
/// tell apart: `edited` (other size), `sneaky` (other bytes, same size and
/// modification time), `gone` (deleted), `extra` (not in the snapshot),
/// `same` (as restored).
struct Target {
    dir: PathBuf,
    back: PathBuf,
}

impl Target {
    fn prepare(s: &Scratch, repo: &Repository, snap: &Snapshot, src: &Path, name: &str) -> Self {
        let dir = s.path().join(name);
        restore_into(repo, snap, &dir, Overwrite::Refuse, &[]).unwrap();
        let back = restored(&dir, src);
        fs::write(back.join("edited"), b"edited, and longer now").unwrap();
        let mtime = fs::metadata(back.join("sneaky"))
            .unwrap()
            .modified()
            .unwrap();
        fs::write(back.join("sneaky"), b"SNEAKY v1").unwrap();
        fs::File::options()
            .write(true)
            .open(back.join("sneaky"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::remove_file(back.join("gone")).unwrap();
        fs::write(back.join("extra"), b"not in the snapshot").unwrap();
        Target { dir, back }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.back.join(name)).unwrap()
    }
}

/// `Refuse` leaves a target that is not empty as it is; `Always` replaces
/// everything; `IfChanged` replaces what differs in size or modification
/// time; `Never` only adds what is missing. None of them removes what the
/// snapshot does not have.
#[test]
fn overwrite_rules_decide_what_is_replaced() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    for name in ["edited", "sneaky", "gone", "same"] {
        fs::write(src.join(name), format!("{name} v1")).unwrap();
    }
    let out = backup_files(&repo, &[&src]).unwrap();
    let snap = &out.snapshot;
    let v1 = |name: &str| format!("{name} v1").into_bytes();

    let t = Target::prepare(&s, &repo, snap, &src, "refuse");
    let err = restore_into(&repo, snap, &t.dir, Overwrite::Refuse, &[]).unwrap_err();
    assert!(matches!(err, RepoError::Refused(_)), "{err}");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(t.read("edited"), b"edited, and longer now");
    assert!(!t.back.join("gone").exists());

    let t = Target::prepare(&s, &repo, snap, &src, "always");
    restore_into(&repo, snap, &t.dir, Overwrite::Always, &[]).unwrap();
    for name in ["edited", "sneaky", "gone", "same"] {
        assert_eq!(t.read(name), v1(name), "{name}");
    }
    assert_eq!(t.read("extra"), b"not in the snapshot");

    let t = Target::prepare(&s, &repo, snap, &src, "if-changed");
    let stats = restore_into(&repo, snap, &t.dir, Overwrite::IfChanged, &[]).unwrap();
    assert_eq!(t.read("edited"), v1("edited"));
    assert_eq!(
        t.read("sneaky"),
        b"SNEAKY v1",
        "same size and modification time: left as it is"
    );
    assert_eq!(t.read("gone"), v1("gone"));
    assert_eq!(t.read("same"), v1("same"));
    assert_eq!(t.read("extra"), b"not in the snapshot");
    assert_eq!(stats.unchanged, 2, "sneaky and same: {stats:?}");
    assert_eq!(stats.files, 2, "edited and gone: {stats:?}");

    let t = Target::prepare(&s, &repo, snap, &src, "never");
    let stats = restore_into(&repo, snap, &t.dir, Overwrite::Never, &[]).unwrap();
    assert_eq!(t.read("edited"), b"edited, and longer now");
    assert_eq!(t.read("sneaky"), b"SNEAKY v1");
    assert_eq!(t.read("gone"), v1("gone"));
    assert_eq!(t.read("extra"), b"not in the snapshot");
    assert_eq!(stats.files, 1, "only gone: {stats:?}");

    for t in ["refuse", "always", "if-changed", "never"] {
        assert!(partial_files(&s.path().join(t)).is_empty(), "{t}");
    }
}

/// A restore that meets a damaged pack fails as damage naming the pack;
/// every file it leaves under its own name is complete, the files it could
/// not finish are listed (the one whose chunk is damaged among them) and
/// removed, and no temporary file is left.
#[test]
fn a_damaged_pack_is_named_and_only_complete_files_are_left() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    let files: Vec<(String, Vec<u8>)> = (0..8u64)
        .map(|i| (format!("f{i}"), noise(100 + i, 400_000)))
        .collect();
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    let out = backup_files(&repo, &[&src]).unwrap();
    assert!(out.snapshot.stats.packs >= 2, "{:?}", out.snapshot.stats);
    let victim = node(&out.snapshot, "/f5");
    let chunk = victim.content[0].chunk().unwrap();
    let pack = damage_chunk(&s, &repo, &chunk);

    let target = s.path().join("restore");
    let err = restore_into(&repo, &out.snapshot, &target, Overwrite::Refuse, &[]).unwrap_err();
    assert_eq!(err.class(), lifeboat_repo::ErrorClass::Damage, "{err}");
    let text = err.to_string();
    assert!(text.contains(&pack), "the pack is named: {text}");
    let RepoError::RestoreIncomplete { missing, .. } = &err else {
        panic!("expected RestoreIncomplete, got {err}");
    };
    assert!(missing.iter().any(|m| m.ends_with("src/f5")), "{missing:?}");

    assert!(
        partial_files(&target).is_empty(),
        "{:?}",
        files_below(&target)
    );
    let back = restored(&target, &src);
    for (name, data) in &files {
        let path = back.join(name);
        if path.exists() {
            assert!(fs::read(&path).unwrap() == *data, "{name} is complete");
        } else {
            assert!(
                missing.iter().any(|m| m.ends_with(&format!("src/{name}"))),
                "{name} is neither restored nor listed: {missing:?}"
            );
        }
    }
    assert!(!back.join("f5").exists());
}

/// A snapshot whose item paths would lead out of the target (`..`, an
/// absolute path) is damage, found before anything is written: not even
/// the target is made.
#[test]
fn a_path_leading_out_of_the_target_is_refused_before_anything_is_written() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::write(src.join("file"), b"inside").unwrap();
    let out = backup_files(&repo, &[&src]).unwrap();
    let file = node(&out.snapshot, "/file").clone();

    for bad in [
        "../../escape",
        "a/../../escape",
        "/escape",
        "a//b",
        "./escape",
    ] {
        let mut forged = out.snapshot.clone();
        let mut n = file.clone();
        n.path = bad.into();
        forged.nodes.push(n);
        let target = s.path().join("target");
        let err = restore_into(&repo, &forged, &target, Overwrite::Always, &[]).unwrap_err();
        assert_eq!(
            err.class(),
            lifeboat_repo::ErrorClass::Damage,
            "{bad}: {err}"
        );
        assert!(
            err.to_string().contains("is not a plain relative path"),
            "{bad}: {err}"
        );
        assert!(!target.exists(), "{bad}: nothing is written");
        assert!(!s.path().join("escape").exists(), "{bad}");
    }
}

/// A symbolic link planted in the target where the snapshot has a
/// directory is never written through: `Never` leaves it (and restores
/// nothing below it), `Always` replaces it with the directory.
#[test]
fn a_link_planted_in_the_target_is_never_followed() {
    let s = Scratch::new();
    let repo = s.init();
    let src = s.dir("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/file"), b"restored").unwrap();
    let out = backup_files(&repo, &[&src]).unwrap();
    let outside = s.dir("outside");

    for overwrite in [Overwrite::Never, Overwrite::Always] {
        let target = s.path().join(format!("target-{overwrite:?}"));
        let back = restored(&target, &src);
        fs::create_dir_all(&back).unwrap();
        symlink(&outside, back.join("dir")).unwrap();
        restore_into(&repo, &out.snapshot, &target, overwrite, &[]).unwrap();
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "{overwrite:?}: nothing written through the link"
        );
        let kind = fs::symlink_metadata(back.join("dir")).unwrap().file_type();
        match overwrite {
            Overwrite::Never => assert!(kind.is_symlink()),
            _ => {
                assert!(kind.is_dir());
                assert_same_tree(&src, &back);
            }
        }
        assert!(partial_files(&target).is_empty());
    }
}
