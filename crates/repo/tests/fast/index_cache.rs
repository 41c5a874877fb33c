//! The local index cache (issue #14 §4): a repository opens from it, a new
//! backup extends it without a rebuild, a removed index object or a
//! garbled file makes it rebuilt, and restores stay byte-identical.

use std::collections::HashMap;

use lifeboat_repo::{Index, Location, PackId};

use super::*;

/// Every chunk → (pack id, offset, len) of an index.
fn locations(index: &Index) -> HashMap<ChunkId, (PackId, u32, u32)> {
    index
        .iter()
        .map(|r| {
            let (id, l): (ChunkId, Location) = r.unwrap();
            (id, (index.pack(l.pack).0, l.offset, l.len))
        })
        .collect()
}

/// The index as it is without a cache: every index object read into memory.
fn in_memory(s: &Scratch) -> HashMap<ChunkId, (PackId, u32, u32)> {
    let mut repo = s.open_on(s.local());
    repo.set_index_cache(None, 0);
    let index = repo.load_index().unwrap();
    assert!(!index.is_cached());
    locations(&index)
}

/// The repository opened with its index cache below `cache`, from the
/// first chunk on.
fn open_cached(s: &Scratch, cache: &Path) -> Repository {
    let mut repo = s.open_on(s.local());
    repo.set_index_cache(Some(cache.to_path_buf()), 0);
    repo
}

fn inode(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

fn backup_and_cache(s: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let cache = s.dir("cache");
    let src = s.dir("src");
    fs::write(src.join("a.bin"), noise(1, 3_000_000)).unwrap();
    fs::write(src.join("b.txt"), b"small").unwrap();
    let mut repo = s.init();
    repo.set_index_cache(Some(cache.clone()), 0);
    backup_files(&repo, &[&src]).unwrap();
    // The backup built the file from an empty index and its own index
    // object is in the overlay: start again from a file holding it.
    let file = repo.index_cache_path().unwrap();
    assert!(file.starts_with(&cache));
    fs::remove_file(&file).unwrap();
    let index = repo.load_index().unwrap();
    assert!(index.is_cached());
    assert!(!index.is_empty());
    (cache, src, file)
}

/// After a backup the index is built into the cache file (private to the
/// user), a second open uses that same file, and it answers exactly like
/// the in-memory index.
#[test]
fn a_repository_opens_from_its_index_cache() {
    let s = Scratch::new();
    let (cache, _src, file) = backup_and_cache(&s);
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = inode(&file);
    let repo = open_cached(&s, &cache);
    let index = repo.load_index().unwrap();
    assert!(index.is_cached());
    assert_eq!(inode(&file), before, "the cache was rebuilt, not reused");
    let want = in_memory(&s);
    assert!(!want.is_empty());
    assert_eq!(locations(&index), want);
    for (o, r) in index.iter().enumerate() {
        assert_eq!(index.ordinal(&r.unwrap().0), Some(o));
    }
}

/// A second backup's index object is read into the overlay on top of the
/// same file; the new snapshot restores byte-identical through it.
#[test]
fn a_new_backup_extends_the_cached_index() {
    let s = Scratch::new();
    let (cache, src, file) = backup_and_cache(&s);
    let before = inode(&file);
    fs::write(src.join("c.bin"), noise(2, 2_000_000)).unwrap();
    let repo = open_cached(&s, &cache);
    let out = backup_files(&repo, &[&src]).unwrap();
    let index = repo.load_index().unwrap();
    assert!(index.is_cached());
    assert_eq!(inode(&file), before);
    assert_eq!(locations(&index), in_memory(&s));
    let target = s.dir("target");
    restore_into(
        &repo,
        &out.snapshot,
        &target,
        lifeboat_repo::Overwrite::Never,
        &[],
    )
    .unwrap();
    assert_same_tree(&src, &restored(&target, &src));
}

/// An index object that disappeared (a prune consolidated it, or it was
/// deleted) makes the cache rebuilt, matching the objects that remain.
#[test]
fn a_removed_index_object_rebuilds_the_cache() {
    let s = Scratch::new();
    let (cache, src, file) = backup_and_cache(&s);
    // The cache was built from these.
    let first = s.repo_files("index");
    fs::write(src.join("c.bin"), noise(3, 2_000_000)).unwrap();
    backup_files(&open_cached(&s, &cache), &[&src]).unwrap();
    assert!(s.repo_files("index").len() > first.len());
    let before = inode(&file);
    fs::remove_file(&first[0]).unwrap();
    let index = open_cached(&s, &cache).load_index().unwrap();
    assert!(index.is_cached());
    assert_ne!(inode(&file), before, "the stale cache was used");
    assert_eq!(locations(&index), in_memory(&s));
}

/// A garbled cache never gives a wrong location: damage to its header,
/// fan-out or pack table is found at open and the file rebuilt; damage to
/// a record is found when that record is read (it reads as absent, so a
/// restore fails loudly instead of writing wrong bytes) and the file is
/// removed, so the next open rebuilds it. Restores are then byte-identical.
#[test]
fn a_garbled_index_cache_is_rebuilt_and_restores_stay_identical() {
    let s = Scratch::new();
    let (cache, src, file) = backup_and_cache(&s);
    let snap = backup_files(&open_cached(&s, &cache), &[&src])
        .unwrap()
        .snapshot;
    let want = in_memory(&s);

    // The fan-out table.
    let mut bytes = fs::read(&file).unwrap();
    bytes[128 + 4 * 1000] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    let repo = open_cached(&s, &cache);
    let index = repo.load_index().unwrap();
    assert_eq!(locations(&index), want);
    let target = s.dir("t1");
    restore_into(&repo, &snap, &target, lifeboat_repo::Overwrite::Never, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));

    // Every record (a few bytes of each: offsets, lengths, ids).
    let mut bytes = fs::read(&file).unwrap();
    let n = want.len();
    let records = bytes.len() - n * 52;
    for i in 0..n {
        bytes[records + i * 52 + 38] ^= 0x11;
    }
    fs::write(&file, &bytes).unwrap();
    let repo = open_cached(&s, &cache);
    let target = s.dir("t2");
    let err = restore_into(&repo, &snap, &target, lifeboat_repo::Overwrite::Never, &[]);
    assert!(err.is_err(), "a restore through garbled records succeeded");
    assert!(!file.exists(), "the damaged cache was kept");
    let repo = open_cached(&s, &cache);
    assert_eq!(locations(&repo.load_index().unwrap()), want);
    let target = s.dir("t3");
    restore_into(&repo, &snap, &target, lifeboat_repo::Overwrite::Never, &[]).unwrap();
    assert_same_tree(&src, &restored(&target, &src));

    // A truncated file.
    let len = fs::metadata(&file).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    assert_eq!(
        locations(&open_cached(&s, &cache).load_index().unwrap()),
        want
    );
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
}

/// Below the size threshold the index stays in memory and no file is
/// written.
#[test]
fn a_small_index_stays_in_memory() {
    let s = Scratch::new();
    let cache = s.dir("cache");
    let src = s.dir("src");
    fs::write(src.join("a"), b"tiny").unwrap();
    let mut repo = s.init();
    repo.set_index_cache(Some(cache.clone()), 1_000_000);
    backup_files(&repo, &[&src]).unwrap();
    assert!(!repo.load_index().unwrap().is_cached());
    assert!(files_below(&cache).is_empty());
}
