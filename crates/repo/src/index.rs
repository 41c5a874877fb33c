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
    /// Chunk → its ordinal in `entries`.
    chunks: HashMap<ChunkId, u32>,
    entries: Vec<(ChunkId, Location)>,
    /// Packs whose chunks lookups do not return (marked for deletion by a prune).
    excluded: Vec<bool>,
}

impl Index {
    /// Adds the entries of one pack. A chunk already indexed keeps its first
    /// location (concurrent backups may store the same chunk twice).
    pub fn add_pack(&mut self, pack: PackId, epoch: u32, entries: &[BlobEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push((pack, epoch));
            self.excluded.push(false);
            (self.packs.len() - 1) as u32
        });
        self.chunks.reserve(entries.len());
        for e in entries {
            if let std::collections::hash_map::Entry::Vacant(v) = self.chunks.entry(e.id) {
                v.insert(self.entries.len() as u32);
                self.entries.push((
                    e.id,
                    Location {
                        pack: pos,
                        offset: e.offset,
                        len: e.len,
                        raw_len: e.raw_len,
                    },
                ));
            }
        }
    }

    /// Adds everything an index object lists.
    pub fn add_all(&mut self, packs: &[IndexedPack]) {
        for p in packs {
            self.add_pack(p.pack, p.epoch, &p.entries);
        }
    }

    /// Where `id` is stored (never in an excluded pack).
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        let loc = self.entries[*self.chunks.get(id)? as usize].1;
        (!self.excluded[loc.pack as usize]).then_some(loc)
    }

    /// True when `id` is indexed (and not in an excluded pack).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.get(id).is_some()
    }

    /// The chunk's ordinal and location, whether or not its pack is excluded
    /// (prune copies live chunks out of packs it is about to delete).
    pub fn locate(&self, id: &ChunkId) -> Option<(usize, Location)> {
        let o = *self.chunks.get(id)? as usize;
        Some((o, self.entries[o].1))
    }

    /// The chunk's ordinal: a dense number in `0..len()`, its position in
    /// [`Index::iter`]'s order, for bitmaps over the index (prune marks the
    /// chunks snapshots use in one bit each). Chunks of excluded packs keep
    /// theirs.
    pub fn ordinal(&self, id: &ChunkId) -> Option<usize> {
        self.chunks.get(id).map(|&o| o as usize)
    }

    /// From now on lookups ([`Index::get`], [`Index::contains`]) do not return
    /// chunks stored in these packs: a prune marked them for deletion, so a
    /// backup must not build on them. Iteration and ordinals still see them.
    pub fn exclude_packs(&mut self, packs: &std::collections::HashSet<PackId>) {
        for (pos, (id, _)) in self.packs.iter().enumerate() {
            if packs.contains(id) {
                self.excluded[pos] = true;
            }
        }
    }

    /// True when the pack at `pos` is excluded.
    pub fn is_excluded(&self, pos: u32) -> bool {
        self.excluded[pos as usize]
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
        self.entries.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every chunk with its location, in ordinal order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.entries.iter().map(|(id, loc)| (id, loc))
    }
}
