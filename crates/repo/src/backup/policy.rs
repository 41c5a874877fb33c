//! How a tree backup treats what it finds: [`TreePolicy`], its [`Filter`]
//! for each item, and [`PlainFiles`], the policy of `files backup`.

use std::fs::{self, File};

use lifeboat_chunker::ChunkerConfig;

use crate::snapshot::{Node, Snapshot};

/// What a [`TreePolicy`] decides for one item of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Back it up.
    Keep,
    /// A directory kept as an empty directory: its contents are not backed up.
    Empty,
    /// Leave it out entirely.
    Skip,
}

/// How a tree backup treats what it finds. Sources with rules of their own (a
/// PostgreSQL data directory) implement it; the defaults back up everything
/// with the repository's chunking, as `files backup` does.
pub trait TreePolicy: Sync {
    /// Whether and how to back up the item at `name` (its snapshot path).
    fn filter(&self, _name: &str, _meta: &fs::Metadata) -> Filter {
        Filter::Keep
    }
    /// How to cut the file at `name` into chunks.
    fn chunker(&self, _name: &str, default: ChunkerConfig) -> ChunkerConfig {
        default
    }
    /// Looks at each chunk of the file at `name` as it is read, e.g. to check
    /// page checksums: `data` starts at byte `offset` of the file, and `file`
    /// is open for reading again.
    fn inspect(&self, _name: &str, _file: &File, _offset: u64, _data: &[u8]) {}
    /// The page size of the file at `name` when its chunks are whole pages
    /// (its chunker must cut at page boundaries): each chunk then records
    /// page fingerprints, and a chunk that changed in at most half its pages
    /// since the parent snapshot is stored as the parent's chunk (its base)
    /// plus a patch of the changed pages. `None`: chunks are stored whole.
    fn page_size(&self, _name: &str) -> Option<usize> {
        None
    }
    /// Whether `old`, unchanged by size, times and inode since the parent
    /// snapshot, may reuse the parent's content without being read.
    fn reusable(&self, _old: &Node, _parent: &Snapshot) -> bool {
        true
    }
    /// Whether an item that disappears between the listing and its read is
    /// simply left out (a running database's files: WAL replay recreates
    /// what they hold) rather than a skipped item that makes the backup
    /// partial (plain files: a file the user asked for is missing).
    fn vanished_is_fine(&self) -> bool {
        false
    }
    /// Waits until the source has stopped changing the tree, and says
    /// whether it changed it meanwhile. Called once the files the walk found
    /// new or changed have been read, so that a source still at work on its
    /// tree (a cluster deleting an old snapshot from its repository while
    /// the backup reads the new one's files) costs no time of its own. When
    /// it returns `true` the tree is walked again and that walk is what the
    /// snapshot records: a file whose size, times and inode are as the
    /// first walk saw them keeps what was read, any other is read now (or
    /// reused from the parent), one gone is left out. An error stops the
    /// backup.
    fn settle(&self) -> crate::error::Result<bool> {
        Ok(false)
    }
    /// Whether the file at `name` never changes once written (a cluster's
    /// uniquely named blob): after [`TreePolicy::settle`], such a file that
    /// looks unchanged keeps what was read of it; any other is read again,
    /// however unchanged it looks (a file deleted and rewritten within the
    /// same second, on an inode used again, looks the same; a shared mount
    /// may show attributes it cached).
    fn immutable(&self, _name: &str) -> bool {
        false
    }
}

/// The reason given for an item that disappeared while the backup ran.
pub(crate) const VANISHED: &str = "it vanished during the backup";

/// The policy of `files backup`: everything, as it is.
pub struct PlainFiles;
impl TreePolicy for PlainFiles {}
