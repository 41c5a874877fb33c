//! The in-memory index: chunk id → pack, offset, length.

use std::collections::HashMap;

use lifeboat_types::{ChunkId, PackId};

use crate::format::{BlobEntry, IndexedPack};

/// Where a chunk is stored. 16 bytes; with its 32-byte key and the hash table's
/// overhead an indexed chunk costs about 56 bytes of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

/// Every chunk the repository's index objects list.
#[derive(Default, Debug)]
pub struct Index {
    packs: Vec<(PackId, u32)>,
    pack_pos: HashMap<PackId, u32>,
    chunks: HashMap<ChunkId, Location>,
}

impl Index {
    /// Adds the entries of one pack. A chunk already indexed keeps its first
    /// location (concurrent backups may store the same chunk twice).
    pub fn add_pack(&mut self, pack: PackId, epoch: u32, entries: &[BlobEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push((pack, epoch));
            (self.packs.len() - 1) as u32
        });
        self.chunks.reserve(entries.len());
        for e in entries {
            self.chunks.entry(e.id).or_insert(Location {
                pack: pos,
                offset: e.offset,
                len: e.len,
                raw_len: e.raw_len,
            });
        }
    }

    /// Adds everything an index object lists.
    pub fn add_all(&mut self, packs: &[IndexedPack]) {
        for p in packs {
            self.add_pack(p.pack, p.epoch, &p.entries);
        }
    }

    /// Where `id` is stored.
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        self.chunks.get(id).copied()
    }

    /// True when `id` is indexed.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// The pack at position `pos` and its key epoch.
    pub fn pack(&self, pos: u32) -> (PackId, u32) {
        self.packs[pos as usize]
    }

    /// All packs with their key epochs.
    pub fn packs(&self) -> &[(PackId, u32)] {
        &self.packs
    }

    /// Number of chunks indexed.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Every chunk with its location.
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.chunks.iter()
    }
}
