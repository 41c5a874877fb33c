//! The chunk index: chunk id → pack, offset, length.
//!
//! A small index lives in memory. A large one lives in a sorted on-disk
//! cache file ([`crate::index_cache`]) read with positioned reads, plus a
//! small in-memory overlay for index objects written after the file was
//! built and for what is added while the value lives; memory then does not
//! grow with the repository.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use lifeboat_types::{ChunkId, PackId};

use crate::error::Result;
use crate::format::{BlobEntry, IndexedPack};
use crate::index_cache::CacheFile;

/// Where a chunk is stored. 16 bytes; with its 32-byte key and the hash table's
/// overhead a chunk held in memory costs about 56 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
///
/// Ordinals: the chunks of the cache file (if any) come first, in chunk-id
/// order, then the in-memory ones in the order they were added.
#[derive(Default, Debug)]
pub struct Index {
    /// The sorted on-disk part; its pack table is the start of `packs`.
    base: Option<CacheFile>,
    base_len: usize,
    packs: Vec<(PackId, u32)>,
    pack_pos: HashMap<PackId, u32>,
    /// In-memory chunk → its ordinal (≥ `base_len`).
    chunks: HashMap<ChunkId, u32>,
    /// In-memory entries; ordinal `base_len + i`.
    entries: Vec<(ChunkId, Location)>,
    /// Packs whose chunks lookups do not return (marked for deletion by a prune).
    excluded: Vec<bool>,
    /// Packs a prune marked: a chunk of the base found there is relocated
    /// to an unmarked pack added later.
    marked: HashSet<PackId>,
    /// Base chunks whose location an added unmarked pack replaces.
    relocated: HashMap<ChunkId, Location>,
    /// Set once a damaged cache record was met (the file is then removed so
    /// that the next open rebuilds it).
    damaged: AtomicBool,
}

impl Index {
    /// An index over a cache file; `marked` are the packs a prune marked
    /// for deletion (the file was built preferring other packs).
    pub(crate) fn from_cache(file: CacheFile, marked: HashSet<PackId>) -> Index {
        let packs = file.packs().to_vec();
        let pack_pos = packs
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (*p, i as u32))
            .collect();
        Index {
            base_len: file.len() as usize,
            excluded: vec![false; packs.len()],
            packs,
            pack_pos,
            base: Some(file),
            marked,
            ..Index::default()
        }
    }

    /// An in-memory index of entries already deduplicated, with their pack
    /// table.
    pub(crate) fn from_entries(
        entries: Vec<(ChunkId, Location)>,
        packs: Vec<(PackId, u32)>,
        marked: HashSet<PackId>,
    ) -> Index {
        let pack_pos = packs
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (*p, i as u32))
            .collect();
        let chunks = entries
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (*c, i as u32))
            .collect();
        Index {
            excluded: vec![false; packs.len()],
            packs,
            pack_pos,
            chunks,
            entries,
            marked,
            ..Index::default()
        }
    }

    /// The index [`crate::index_cache::build`] made.
    pub(crate) fn from_built(built: crate::index_cache::Built, marked: HashSet<PackId>) -> Index {
        match built {
            crate::index_cache::Built::Small(e, p) => Index::from_entries(e, p, marked),
            crate::index_cache::Built::File(f) => Index::from_cache(f, marked),
        }
    }

    /// True when the index is backed by a cache file.
    pub fn is_cached(&self) -> bool {
        self.base.is_some()
    }

    /// True when a damaged cache record was met: such a record reads as
    /// absent, and the file was removed so the next open rebuilds it.
    pub fn cache_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// The base record of `id` (a damaged record reads as absent).
    fn base_lookup(&self, id: &ChunkId) -> Option<(usize, Location)> {
        let base = self.base.as_ref()?;
        match base.lookup(id) {
            Ok(Some((o, loc))) => {
                Some((o as usize, self.relocated.get(id).copied().unwrap_or(loc)))
            }
            Ok(None) => None,
            Err(e) => {
                self.on_damage(base, &e);
                None
            }
        }
    }

    fn on_damage(&self, base: &CacheFile, e: &crate::error::RepoError) {
        if !self.damaged.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "the local index cache is damaged; removing it, the next run rebuilds it");
            let _ = std::fs::remove_file(base.path());
        }
    }

    /// Adds the entries of one pack. A chunk already indexed keeps its first
    /// location (concurrent backups may store the same chunk twice), unless
    /// that one is in a pack a prune marked and this pack is not.
    pub fn add_pack(&mut self, pack: PackId, epoch: u32, entries: &[BlobEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push((pack, epoch));
            self.excluded.push(false);
            (self.packs.len() - 1) as u32
        });
        let unmarked = !self.marked.contains(&pack);
        self.chunks.reserve(entries.len());
        for e in entries {
            let loc = Location {
                pack: pos,
                offset: e.offset,
                len: e.len,
                raw_len: e.raw_len,
            };
            if self.chunks.contains_key(&e.id) {
                continue;
            }
            if let Some((_, old)) = self.base_lookup(&e.id) {
                let old_pack = self.packs[old.pack as usize].0;
                if unmarked && self.marked.contains(&old_pack) {
                    self.relocated.insert(e.id, loc);
                }
                continue;
            }
            self.chunks
                .insert(e.id, (self.base_len + self.entries.len()) as u32);
            self.entries.push((e.id, loc));
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
        let (_, loc) = self.locate(id)?;
        (!self.excluded[loc.pack as usize]).then_some(loc)
    }

    /// True when `id` is indexed (and not in an excluded pack).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.get(id).is_some()
    }

    /// The chunk's ordinal and location, whether or not its pack is excluded
    /// (prune copies live chunks out of packs it is about to delete).
    pub fn locate(&self, id: &ChunkId) -> Option<(usize, Location)> {
        if let Some(&o) = self.chunks.get(id) {
            return Some((o as usize, self.entries[o as usize - self.base_len].1));
        }
        self.base_lookup(id)
    }

    /// The chunk's ordinal: a dense number in `0..len()`, its position in
    /// [`Index::iter`]'s order, for bitmaps over the index (prune marks the
    /// chunks snapshots use in one bit each). Chunks of excluded packs keep
    /// theirs. Stable for the life of the value.
    pub fn ordinal(&self, id: &ChunkId) -> Option<usize> {
        self.locate(id).map(|(o, _)| o)
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
        self.base_len + self.entries.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every chunk with its location, in ordinal order. Reading the cache
    /// file can fail (an I/O error, a damaged record): the item is then an
    /// error and the iteration ends.
    pub fn iter(&self) -> impl Iterator<Item = Result<(ChunkId, Location)>> + '_ {
        let base = self.base.iter().flat_map(move |b| {
            b.iter().map(move |r| match r {
                Ok((id, loc)) => Ok((id, self.relocated.get(&id).copied().unwrap_or(loc))),
                Err(e) => {
                    self.on_damage(b, &e);
                    Err(e)
                }
            })
        });
        base.chain(self.entries.iter().map(|e| Ok(*e)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::index_cache::{build, Built};
    use proptest::prelude::*;

    fn id(b: (u8, u8)) -> ChunkId {
        let mut id = [0u8; 32];
        id[0] = b.0;
        id[5] = b.1;
        ChunkId(id)
    }

    fn pack(p: u8, ids: &[(u8, u8)]) -> IndexedPack {
        IndexedPack {
            pack: PackId([p; 32]),
            epoch: 0,
            entries: ids
                .iter()
                .enumerate()
                .map(|(j, &c)| BlobEntry {
                    id: id(c),
                    offset: u32::from(p) * 1000 + j as u32,
                    len: 5,
                    raw_len: 6,
                })
                .collect(),
        }
    }

    type Spec = Vec<(u8, Vec<(u8, u8)>)>;

    fn spec() -> impl Strategy<Value = Spec> {
        prop::collection::vec(
            (0u8..12, prop::collection::vec((0u8..3, 0u8..30), 0..20)),
            0..6,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A cached base plus an in-memory overlay answers like a HashMap
        /// oracle; ordinals are dense and equal to iteration order;
        /// excluded packs hide their chunks from lookups only.
        #[test]
        fn cached_plus_overlay_matches_oracle(base in spec(), overlay in spec(), excl in 0u8..12, cached in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let objs: Vec<(String, Vec<IndexedPack>)> = base.iter().enumerate()
                .map(|(i, (p, ids))| (format!("index/{i}"), vec![pack(*p, ids)])).collect();
            let min = if cached { 0 } else { usize::MAX };
            let run = if cached { 7 } else { usize::MAX };
            let built = build(&dir.path().join("index"), objs.iter().cloned().map(Ok), &HashSet::new(), run, min).unwrap();
            prop_assert_eq!(matches!(built, Built::File(_)), cached);
            let mut index = Index::from_built(built, HashSet::new());
            // Oracle: in the base, the smallest (pack id, offset); then the
            // first overlay occurrence of a chunk not seen yet.
            let mut oracle: HashMap<ChunkId, (PackId, u32)> = HashMap::new();
            for (_, ips) in &objs {
                for ip in ips {
                    for e in &ip.entries {
                        let c = (ip.pack, e.offset);
                        let s = oracle.entry(e.id).or_insert(c);
                        if c < *s { *s = c; }
                    }
                }
            }
            for (p, ids) in &overlay {
                let ip = pack(*p, ids);
                for e in &ip.entries {
                    oracle.entry(e.id).or_insert((ip.pack, e.offset));
                }
                index.add_pack(ip.pack, ip.epoch, &ip.entries);
            }
            prop_assert_eq!(index.len(), oracle.len());
            prop_assert_eq!(index.is_cached(), cached);
            let all: Vec<(ChunkId, Location)> = index.iter().map(|r| r.unwrap()).collect();
            prop_assert_eq!(all.len(), index.len());
            for (o, (c, loc)) in all.iter().enumerate() {
                prop_assert_eq!(index.ordinal(c), Some(o));
                prop_assert_eq!(index.get(c), Some(*loc));
                let want = oracle[c];
                prop_assert_eq!((index.pack(loc.pack).0, loc.offset), want);
            }
            prop_assert!(!index.contains(&id((9, 9))));
            let gone = PackId([excl; 32]);
            index.exclude_packs(&[gone].into());
            for (o, (c, loc)) in all.iter().enumerate() {
                let hidden = index.pack(loc.pack).0 == gone;
                prop_assert_eq!(index.contains(c), !hidden);
                prop_assert_eq!(index.ordinal(c), Some(o));
            }
            prop_assert!(!index.cache_damaged());
        }
    }

    #[test]
    fn overlay_relocates_a_chunk_out_of_a_marked_pack() {
        let dir = tempfile::tempdir().unwrap();
        let marked: HashSet<PackId> = [PackId([1; 32])].into();
        let objs = vec![("index/a".to_string(), vec![pack(1, &[(0, 1), (0, 2)])])];
        let built = build(
            &dir.path().join("index"),
            objs.into_iter().map(Ok),
            &marked,
            10,
            0,
        )
        .unwrap();
        let mut index = Index::from_built(built, marked);
        let fresh = pack(2, &[(0, 1)]);
        index.add_pack(fresh.pack, 0, &fresh.entries);
        let loc = index.get(&id((0, 1))).unwrap();
        assert_eq!(index.pack(loc.pack).0, PackId([2; 32]));
        assert_eq!(index.len(), 2);
        let via_iter: Vec<_> = index.iter().map(|r| r.unwrap()).collect();
        assert!(via_iter.contains(&(id((0, 1)), loc)));
    }
}
