//! What a base backup copies from a data directory and how: the files
//! PostgreSQL documents as excluded, page-aligned chunking of relation files,
//! page checksum verification as files stream past, and the rule that decides
//! when an unchanged-looking file may be taken from the previous backup.

use std::fs::{self, File};

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use lifeboat_repo::{ChunkerConfig, Filter, Node, Snapshot, TreePolicy};

use crate::checksum::{check_page, PageCheck, PAGES_PER_SEGMENT, PAGE_SIZE};
use crate::wal::Lsn;

/// Top-level directories whose contents are never copied (`basebackup.c`
/// `excludeDirContents`, and `pg_wal`, whose WAL comes from the archive).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files never copied, at any level (`excludeFiles`).
const SKIP_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];

/// Files never copied from the top of the data directory.
const SKIP_TOP: &[&str] = &[
    crate::restore::RESTORE_MARKER,
    "recovery.signal",
    "standby.signal",
    "backup_label.old",
    "backup_manifest.tmp",
    "recovery.conf",
];

/// The metadata key under which a base backup records when it began reading.
pub const COPY_START_KEY: &str = "copy_start_unix_ns";

/// Files that are written during the backup may carry an mtime that a later
/// write in the same clock tick does not change; a file modified this close to
/// the copy start is read again by the next backup rather than trusted.
const MTIME_MARGIN_NS: i64 = 2_000_000_000;

/// A relation file name: `<relfilenode>[_fsm|_vm|_init][.<segment>]`.
/// Returns the relfilenode, the fork and the segment number.
pub fn relation_file(name: &str) -> Option<(&str, &str, u32)> {
    let (base, seg) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse::<u32>().ok().filter(|&n| n > 0)?),
        None => (name, 0),
    };
    let (node, fork) = match base.split_once('_') {
        Some((n, f)) if matches!(f, "fsm" | "vm" | "init") => (n, f),
        Some(_) => return None,
        None => (base, "main"),
    };
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some((node, fork, seg))
}

/// True for a temporary relation's file: `t<backend>_<relfilenode>…`.
fn temp_relation(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|r| r.split_once('_'))
        .is_some_and(|(b, rest)| {
            !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) && relation_file(rest).is_some()
        })
}

/// True when `name` (a snapshot path) is inside a database directory:
/// `base/<oid>/…`, `global/…` or a tablespace's `PG_<version>_<catalog>/<oid>/…`.
fn in_relation_dir(name: &str) -> bool {
    name.starts_with("base/") || name.starts_with("global/") || name.starts_with("pg_tblspc/")
}

/// The tablespace OID when `name` is a link `pg_tblspc/<oid>`.
pub fn tablespace_link(name: &str) -> Option<&str> {
    name.strip_prefix("pg_tblspc/").filter(|oid| is_oid(oid))
}

fn is_oid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The tablespaces of a data directory: each `pg_tblspc/<oid>` link and the
/// directory it points to (in-place tablespaces, plain directories, are part
/// of the data directory's own walk).
pub fn tablespaces(pgdata: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let dir = pgdata.join("pg_tblspc");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_symlink() && is_oid(&name) {
            let target = fs::read_link(e.path())?;
            out.push((name, dir.join(target)));
        }
    }
    out.sort();
    Ok(out)
}

/// A page that failed its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPage {
    /// The file, relative to the data directory.
    pub file: String,
    /// The block number within the relation.
    pub block: u32,
    /// The checksum on the page.
    pub stored: u16,
    /// The checksum of its contents.
    pub computed: u16,
}

impl std::fmt::Display for BadPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} block {}: checksum {:#06x}, contents give {:#06x}",
            self.file, self.block, self.stored, self.computed
        )
    }
}

/// The policy of a base backup of one data directory.
pub struct DataDirPolicy {
    /// The data directory.
    pub root: PathBuf,
    /// Verify page checksums (the cluster has them on).
    pub verify_checksums: bool,
    /// The backup's start LSN: pages at or after it are not verified.
    pub start_lsn: Lsn,
    /// How relation files are cut.
    pub relation_chunker: ChunkerConfig,
    /// Pages that failed verification.
    pub bad_pages: Mutex<Vec<BadPage>>,
}

impl DataDirPolicy {
    /// The pages that failed verification, in file and block order. A
    /// reader that panicked while recording one loses none of them.
    pub fn take_bad_pages(&self) -> Vec<BadPage> {
        let mut v = std::mem::take(
            &mut *self
                .bad_pages
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        v.sort_by(|a, b| (&a.file, a.block).cmp(&(&b.file, b.block)));
        v
    }

    fn unlogged(&self, name: &str) -> bool {
        let file = name.rsplit('/').next().unwrap_or(name);
        let Some((node, fork, _)) = relation_file(file) else {
            return false;
        };
        if fork == "init" {
            return false;
        }
        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
        self.root
            .join(dir)
            .join(format!("{node}_init"))
            .symlink_metadata()
            .is_ok()
    }
}

impl TreePolicy for DataDirPolicy {
    /// A file of the running cluster removed while the backup reads it (a
    /// dropped table, a checkpoint's temporary file such as
    /// `pg_logical/replorigin_checkpoint.tmp`) needs no copy: replaying the
    /// WAL from the backup's start brings the cluster to what it holds at
    /// the end. pg_basebackup and pgBackRest leave such files out too.
    fn vanished_is_fine(&self) -> bool {
        true
    }

    fn filter(&self, name: &str, meta: &fs::Metadata) -> Filter {
        let file = name.rsplit('/').next().unwrap_or(name);
        if EMPTY_DIRS.contains(&name) {
            return Filter::Empty;
        }
        // A tablespace's link: its contents are walked as their own root
        // under this name, and the restore makes the link again.
        if meta.file_type().is_symlink() && tablespace_link(name).is_some() {
            return Filter::Skip;
        }
        if file.starts_with("pgsql_tmp") {
            return Filter::Skip;
        }
        if !meta.is_dir() {
            if SKIP_FILES.contains(&file)
                || file.starts_with("pg_internal.init")
                || (!name.contains('/') && SKIP_TOP.contains(&name))
                // pg_control is read last, after every other file.
                || name == "global/pg_control"
            {
                return Filter::Skip;
            }
            if in_relation_dir(name) && (temp_relation(file) || self.unlogged(name)) {
                return Filter::Skip;
            }
        }
        Filter::Keep
    }

    fn chunker(&self, name: &str, default: ChunkerConfig) -> ChunkerConfig {
        let file = name.rsplit('/').next().unwrap_or(name);
        if in_relation_dir(name) && relation_file(file).is_some() {
            // Page checks need chunks cut at page boundaries.
            match self.relation_chunker {
                c @ ChunkerConfig::Fixed { .. } => c,
                ChunkerConfig::Cdc { .. } => ChunkerConfig::pages(),
            }
        } else {
            default
        }
    }

    fn page_size(&self, name: &str) -> Option<usize> {
        // Relation files are cut at page boundaries (`chunker`): a piece
        // that changed in a few pages stores only those.
        let file = name.rsplit('/').next().unwrap_or(name);
        (in_relation_dir(name) && relation_file(file).is_some()).then_some(PAGE_SIZE)
    }

    fn inspect(&self, name: &str, file: &File, offset: u64, data: &[u8]) {
        if !self.verify_checksums || !in_relation_dir(name) {
            return;
        }
        let base = name.rsplit('/').next().unwrap_or(name);
        let Some((_, _, segment)) = relation_file(base) else {
            return;
        };
        // Relation files are cut at page boundaries (see `chunker`); a
        // trailing partial page is not checked, as PostgreSQL never writes one.
        let first_block = segment.saturating_mul(PAGES_PER_SEGMENT);
        let first_page = (offset / PAGE_SIZE as u64) as u32;
        for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
            if let Ok(page) = <&[u8; PAGE_SIZE]>::try_from(page) {
                self.check(name, file, first_block, first_page + i as u32, page);
            }
        }
    }

    fn reusable(&self, old: &Node, parent: &Snapshot) -> bool {
        parent
            .metadata
            .get(COPY_START_KEY)
            .and_then(|v| v.as_i64())
            .is_some_and(|start| old.mtime_ns < start - MTIME_MARGIN_NS)
    }
}

impl DataDirPolicy {
    /// Checks page `page_no` of a relation segment file whose first page is
    /// block `first_block` of the relation.
    fn check(
        &self,
        name: &str,
        file: &File,
        first_block: u32,
        page_no: u32,
        page: &[u8; PAGE_SIZE],
    ) {
        let block = first_block.wrapping_add(page_no);
        if let PageCheck::Invalid { .. } = check_page(page, block, self.start_lsn) {
            // A page being written while it was read can look torn: read it
            // once more before calling it damaged, as pg_basebackup does.
            let mut again = [0u8; PAGE_SIZE];
            let offset = u64::from(page_no) * PAGE_SIZE as u64;
            let verdict = match file.read_exact_at(&mut again, offset) {
                Ok(()) => check_page(&again, block, self.start_lsn),
                Err(_) => PageCheck::Skipped,
            };
            if let PageCheck::Invalid { stored, computed } = verdict {
                // Recorded even when another reader panicked holding the
                // lock: a damaged page is never dropped.
                self.bad_pages
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(BadPage {
                        file: name.to_string(),
                        block,
                        stored,
                        computed,
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_file_names() {
        assert_eq!(relation_file("16384"), Some(("16384", "main", 0)));
        assert_eq!(relation_file("16384.2"), Some(("16384", "main", 2)));
        assert_eq!(relation_file("16384_fsm"), Some(("16384", "fsm", 0)));
        assert_eq!(relation_file("16384_vm.1"), Some(("16384", "vm", 1)));
        assert_eq!(relation_file("16384_init"), Some(("16384", "init", 0)));
        assert_eq!(relation_file("16384.0"), None);
        assert_eq!(relation_file("PG_VERSION"), None);
        assert_eq!(relation_file("pg_filenode.map"), None);
        assert!(temp_relation("t3_16384"));
        assert!(!temp_relation("16384"));
    }

    fn policy(root: &std::path::Path) -> DataDirPolicy {
        DataDirPolicy {
            root: root.to_path_buf(),
            verify_checksums: true,
            start_lsn: Lsn(1 << 40),
            relation_chunker: ChunkerConfig::pages(),
            bad_pages: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn documented_exclusions_and_unlogged_relations() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("base/5");
        fs::create_dir_all(&db).unwrap();
        for f in ["100", "100_init", "200", "200_fsm"] {
            fs::write(db.join(f), b"").unwrap();
        }
        fs::write(dir.path().join("postmaster.pid"), b"").unwrap();
        let p = policy(dir.path());
        let file_meta = fs::metadata(db.join("100")).unwrap();
        let dir_meta = fs::metadata(&db).unwrap();
        assert_eq!(
            p.filter("base/5/100", &file_meta),
            Filter::Skip,
            "unlogged main fork"
        );
        assert_eq!(
            p.filter("base/5/100_init", &file_meta),
            Filter::Keep,
            "init fork kept"
        );
        assert_eq!(p.filter("base/5/200", &file_meta), Filter::Keep);
        assert_eq!(p.filter("base/5/t3_200", &file_meta), Filter::Skip);
        assert_eq!(p.filter("postmaster.pid", &file_meta), Filter::Skip);
        assert_eq!(p.filter("global/pg_control", &file_meta), Filter::Skip);
        assert_eq!(p.filter("pg_wal", &dir_meta), Filter::Empty);
        assert_eq!(p.filter("base/pgsql_tmp", &dir_meta), Filter::Skip);
        assert_eq!(
            p.filter("base/5/pg_internal.init", &file_meta),
            Filter::Skip
        );
        assert_eq!(p.filter("recovery.signal", &file_meta), Filter::Skip);
        assert_eq!(p.filter("postgresql.conf", &file_meta), Filter::Keep);
    }

    #[test]
    fn verifier_names_file_and_block_of_a_bad_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384.1");
        let mut data = Vec::new();
        for b in 0..3u32 {
            let block = PAGES_PER_SEGMENT + b;
            let mut page = [b as u8 + 1; PAGE_SIZE];
            page[..8].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            page[14..16].copy_from_slice(&4096u16.to_ne_bytes());
            let c = crate::checksum::page_checksum(&page, block);
            page[8..10].copy_from_slice(&c.to_ne_bytes());
            data.extend_from_slice(&page);
        }
        data[PAGE_SIZE + 100] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let p = policy(dir.path());
        let file = File::open(&path).unwrap();
        // Chunks of one page each and of the rest, as the chunker cuts them.
        p.inspect("base/5/16384.1", &file, 0, &data[..PAGE_SIZE]);
        p.inspect(
            "base/5/16384.1",
            &file,
            PAGE_SIZE as u64,
            &data[PAGE_SIZE..],
        );
        // Not a relation file: not checked.
        p.inspect("base/5/PG_VERSION", &file, 0, &data);
        let bad = p.take_bad_pages();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].file, "base/5/16384.1");
        assert_eq!(bad[0].block, PAGES_PER_SEGMENT + 1);
    }

    #[test]
    fn a_bad_page_is_reported_even_after_a_reader_panicked_holding_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        let mut data = Vec::new();
        for block in 0..2u32 {
            let mut page = [block as u8 + 1; PAGE_SIZE];
            page[..8].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            page[14..16].copy_from_slice(&4096u16.to_ne_bytes());
            let c = crate::checksum::page_checksum(&page, block);
            page[8..10].copy_from_slice(&c.to_ne_bytes());
            data.extend_from_slice(&page);
        }
        data[100] ^= 0xff;
        data[PAGE_SIZE + 100] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let p = policy(dir.path());
        let file = File::open(&path).unwrap();
        p.inspect("base/5/16384", &file, 0, &data[..PAGE_SIZE]);
        // Another backup reader panics while it holds the list.
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = p.bad_pages.lock().unwrap();
                panic!("a reader panics holding the list of bad pages");
            })
            .join()
        });
        assert!(p.bad_pages.is_poisoned());
        p.inspect("base/5/16384", &file, PAGE_SIZE as u64, &data[PAGE_SIZE..]);
        let bad = p.take_bad_pages();
        let blocks: Vec<u32> = bad.iter().map(|b| b.block).collect();
        assert_eq!(blocks, vec![0, 1], "{bad:?}");
    }
}
