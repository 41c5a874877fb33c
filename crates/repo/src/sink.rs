//! Where a restore worker's writes go.
//!
//! Restored bytes are written past the page cache (`O_DIRECT`) where the file
//! system allows it: a restore writes each byte once and does not read it
//! back, so caching it only costs memory and, on virtual machines, the price
//! of touching fresh guest pages. Direct I/O wants the file offset, the length
//! and the memory address aligned, so writes to consecutive offsets of one
//! file are gathered in an aligned buffer, and only its aligned middle goes
//! out directly; a head or tail that is not aligned, and small files, go
//! through the page cache as before. Blocks of zeros are skipped either way
//! (files are created at their final size, so they stay holes).
//!
//! Nothing here makes the data durable by itself: the restore ends with
//! [`sync_filesystem`], which flushes the page-cache part and the file-system
//! metadata of both kinds of writes.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use lifeboat_storage::direct::{self, round_down, round_up, AlignedBuf, ALIGN, DIRECT_MIN};

use crate::error::{RepoError, Result};

/// Bytes gathered per file before a direct write: large writes keep the
/// device busy.
const STAGE: usize = 2 << 20;

/// Files a worker gathers bytes for at once: packs interleave the chunks of
/// the files that were read at the same time.
const STAGES: usize = 4;

/// Open files a worker keeps at most; it writes a contiguous stretch of the
/// plan, so the same few files come back again and again.
const OPEN_FILES: usize = 16;

/// Whether direct writes are still tried in this restore: the first file
/// system that refuses them (tmpfs, some FUSE and network file systems)
/// turns them off for the rest of it.
pub(crate) struct DirectMode(AtomicBool);

impl DirectMode {
    pub(crate) fn new(enabled: bool) -> Self {
        DirectMode(AtomicBool::new(enabled))
    }
    fn on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn off(&self) {
        self.0.store(false, Ordering::Relaxed)
    }
}

/// One restored file as a worker holds it open.
struct Open {
    buffered: File,
    /// The same file opened with `O_DIRECT`, once a direct write needs it.
    direct: Option<File>,
}

/// Bytes for consecutive offsets of one file. `buf[i]` is the byte at file
/// offset `base + i`, with `base` aligned, so file and memory alignment
/// coincide; the valid bytes are `buf[from..to]`.
struct Stage {
    node: usize,
    base: u64,
    from: usize,
    to: usize,
    /// When it was last written to, in writes: the oldest stage goes first.
    used: u64,
    buf: AlignedBuf,
}

impl Stage {
    fn end(&self) -> u64 {
        self.base + self.to as u64
    }
}

/// Where one restored file is written: its root, its path below the root
/// (its temporary name while it is written), and which file that is.
pub(crate) struct Target {
    pub(crate) root: usize,
    pub(crate) rel: std::path::PathBuf,
    pub(crate) id: crate::fsat::FileId,
}

/// Where a restore's files are, and their final sizes.
pub(crate) struct Dests<'a> {
    pub(crate) roots: &'a [crate::fsat::Root],
    pub(crate) targets: &'a [Target],
    pub(crate) sizes: &'a [u64],
}

impl Dests<'_> {
    /// Opens item `node`'s file for writing, beneath its root without
    /// following links, checking it is the file the restore made; past the
    /// page cache when `direct`.
    fn open(&self, node: usize, direct: bool) -> io::Result<File> {
        let t = &self.targets[node];
        crate::fsat::open_for_write(self.roots[t.root].fd(), &t.rel, direct, t.id)
    }

    /// Item `node`'s file, for messages.
    fn show(&self, node: usize) -> std::path::PathBuf {
        let t = &self.targets[node];
        self.roots[t.root].show(&t.rel)
    }
}

/// A restore worker's writer: its open files and its staging buffers.
pub(crate) struct FileSink<'a> {
    dests: &'a Dests<'a>,
    sizes: &'a [u64],
    direct: &'a DirectMode,
    files: HashMap<usize, Open>,
    stages: Vec<Stage>,
    /// Buffers of drained stages, for the next ones.
    spare: Vec<AlignedBuf>,
    /// Items some of whose staged bytes could not be written.
    failed: Vec<usize>,
    clock: u64,
}

impl<'a> FileSink<'a> {
    /// A sink for the items of `dests`.
    pub(crate) fn new(dests: &'a Dests<'a>, direct: &'a DirectMode) -> Self {
        FileSink {
            dests,
            sizes: dests.sizes,
            direct,
            files: HashMap::new(),
            stages: Vec::new(),
            spare: Vec::new(),
            failed: Vec::new(),
            clock: 0,
        }
    }

    /// Writes `data` at `offset` of item `node`'s file.
    pub(crate) fn write(&mut self, node: usize, offset: u64, data: &[u8]) -> Result<()> {
        if !self.direct.on() || self.sizes[node] < DIRECT_MIN {
            return self.write_buffered(node, offset, data);
        }
        let at = self.stage_for(node, offset)?;
        let mut rest = data;
        while !rest.is_empty() {
            let stage = &mut self.stages[at];
            let n = rest.len().min(STAGE - stage.to);
            let to = stage.to;
            stage.buf.as_mut_slice()[to..to + n].copy_from_slice(&rest[..n]);
            stage.to += n;
            rest = &rest[n..];
            if stage.to == STAGE {
                self.drain_at(at)?;
            }
        }
        Ok(())
    }

    /// Room for `len` bytes at `offset` of item `node`'s file in a staging
    /// buffer, when they will be written directly: the caller fills it (a
    /// chunk decompressed straight into place, with no copy) and then calls
    /// [`FileSink::commit`] with the same arguments. `None`: use `write`.
    pub(crate) fn reserve(
        &mut self,
        node: usize,
        offset: u64,
        len: usize,
    ) -> Result<Option<&mut [u8]>> {
        if !self.direct.on() || self.sizes[node] < DIRECT_MIN || len > STAGE - ALIGN {
            return Ok(None);
        }
        let at = self.stage_for(node, offset)?;
        if STAGE - self.stages[at].to < len {
            self.drain_at(at)?;
        }
        let stage = &mut self.stages[at];
        let to = stage.to;
        Ok(Some(&mut stage.buf.as_mut_slice()[to..to + len]))
    }

    /// Takes the `len` bytes filled in after [`FileSink::reserve`].
    pub(crate) fn commit(&mut self, node: usize, offset: u64, len: usize) -> Result<()> {
        let Some(at) = self.find_stage(node, offset) else {
            return Err(RepoError::Failed(
                "a restore write was committed without its reservation".into(),
            ));
        };
        self.stages[at].to += len;
        if self.stages[at].to == STAGE {
            self.drain_at(at)?;
        }
        Ok(())
    }

    /// The stage whose bytes end at `offset` of item `node`'s file.
    fn find_stage(&self, node: usize, offset: u64) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.node == node && s.end() == offset)
    }

    /// The stage that continues at `offset` of item `node`'s file, or a new
    /// one; marked as used now.
    fn stage_for(&mut self, node: usize, offset: u64) -> Result<usize> {
        self.clock += 1;
        let at = match self.find_stage(node, offset) {
            Some(i) => i,
            None => self.new_stage(node, offset)?,
        };
        self.stages[at].used = self.clock;
        Ok(at)
    }

    /// Writes out stage `at` up to its unaligned tail, which stays staged;
    /// the stage keeps its place in the list.
    fn drain_at(&mut self, at: usize) -> Result<()> {
        let mut stage = self.stages.swap_remove(at);
        let drained = self.drain(&mut stage, false);
        self.stages.push(stage);
        let last = self.stages.len() - 1;
        self.stages.swap(at, last);
        drained
    }

    /// A stage for `node` starting at `offset`: the node's stage that was not
    /// contiguous, or the least recently used one, is written out first.
    fn new_stage(&mut self, node: usize, offset: u64) -> Result<usize> {
        let evict = self.stages.iter().position(|s| s.node == node).or_else(|| {
            (self.stages.len() >= STAGES)
                .then(|| {
                    self.stages
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.used)
                        .map(|(i, _)| i)
                })
                .flatten()
        });
        if let Some(i) = evict {
            let mut old = self.stages.swap_remove(i);
            self.drain(&mut old, true)?;
            self.spare.push(old.buf);
        }
        let base = offset / ALIGN as u64 * ALIGN as u64;
        let from = (offset - base) as usize;
        let buf = self.spare.pop().unwrap_or_else(|| AlignedBuf::new(STAGE));
        self.stages.push(Stage {
            node,
            base,
            from,
            to: from,
            used: self.clock,
            buf,
        });
        Ok(self.stages.len() - 1)
    }

    /// Writes out everything staged, all of it even when some writes fail;
    /// the items whose writes failed are added to `failed`, and the first
    /// error is returned.
    pub(crate) fn flush(&mut self, failed: &mut Vec<usize>) -> Result<()> {
        let mut first = None;
        while let Some(mut stage) = self.stages.pop() {
            if let Err(e) = self.drain(&mut stage, true) {
                first.get_or_insert(e);
            }
            self.spare.push(stage.buf);
        }
        failed.append(&mut self.failed);
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes a stage's bytes: the aligned middle directly, an unaligned head
    /// through the page cache, and an unaligned tail either through the page
    /// cache (`all`) or kept at the front of the buffer for the bytes that
    /// follow it.
    fn drain(&mut self, stage: &mut Stage, all: bool) -> Result<()> {
        let drained = self.drain_inner(stage, all);
        if drained.is_err() {
            // Whoever called (a write to another file evicting this stage,
            // or the flush), these bytes are lost: the file is incomplete.
            self.failed.push(stage.node);
        }
        drained
    }

    fn drain_inner(&mut self, stage: &mut Stage, all: bool) -> Result<()> {
        let node = stage.node;
        let head_end = round_up(stage.from).min(stage.to);
        if stage.from < head_end {
            let at = stage.base + stage.from as u64;
            self.write_buffered(node, at, &stage.buf.as_slice()[stage.from..head_end])?;
        }
        let mid_end = round_down(stage.to).max(head_end);
        if head_end < mid_end {
            let at = stage.base + head_end as u64;
            self.write_direct(node, at, &stage.buf.as_slice()[head_end..mid_end])?;
        }
        if all {
            if mid_end < stage.to {
                let at = stage.base + mid_end as u64;
                self.write_buffered(node, at, &stage.buf.as_slice()[mid_end..stage.to])?;
            }
            stage.from = stage.to;
        } else {
            // Keep the unaligned tail: it is the start of the next write.
            let tail = stage.to - mid_end;
            stage.buf.as_mut_slice().copy_within(mid_end..stage.to, 0);
            stage.base += mid_end as u64;
            stage.from = 0;
            stage.to = tail;
        }
        Ok(())
    }

    /// Writes `data` (aligned in memory, in length and at `offset`) with
    /// `O_DIRECT`, skipping all-zero blocks; falls back to the page cache
    /// when the file system refuses direct I/O.
    fn write_direct(&mut self, node: usize, offset: u64, data: &[u8]) -> Result<()> {
        let dests = self.dests;
        for r in data_runs(data, offset) {
            let at = offset + r.start as u64;
            let run = &data[r];
            if !self.direct.on() {
                self.write_buffered(node, at, run)?;
                continue;
            }
            let open = self.open(node)?;
            if open.direct.is_none() {
                match dests.open(node, true) {
                    Ok(f) => open.direct = Some(f),
                    Err(e) if direct::unsupported(&e) => {
                        self.direct.off();
                        self.write_buffered(node, at, run)?;
                        continue;
                    }
                    Err(e) => return Err(RepoError::io("open", &dests.show(node), e)),
                }
            }
            let written = match open.direct.as_ref() {
                Some(f) => f.write_all_at(run, at),
                None => continue,
            };
            match written {
                Ok(()) => {}
                // Some file systems accept O_DIRECT at open and refuse the write.
                Err(e) if direct::unsupported(&e) => {
                    self.direct.off();
                    self.write_buffered(node, at, run)?;
                }
                Err(e) => return Err(RepoError::io("write", &dests.show(node), e)),
            }
        }
        Ok(())
    }

    fn write_buffered(&mut self, node: usize, offset: u64, data: &[u8]) -> Result<()> {
        let dests = self.dests;
        let open = self.open(node)?;
        write_sparse(&open.buffered, data, offset)
            .map_err(|e| RepoError::io("write", &dests.show(node), e))
    }

    fn open(&mut self, node: usize) -> Result<&mut Open> {
        if self.files.len() >= OPEN_FILES && !self.files.contains_key(&node) {
            // Keep the files that stages still write to.
            let stages = &self.stages;
            self.files
                .retain(|k, _| stages.iter().any(|s| s.node == *k));
        }
        let dests = self.dests;
        match self.files.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = dests
                    .open(node, false)
                    .map_err(|err| RepoError::io("open", &dests.show(node), err))?;
                Ok(e.insert(Open {
                    buffered: f,
                    direct: None,
                }))
            }
        }
    }
}

/// Block size for keeping holes: zero blocks are not written.
const SPARSE_BLOCK: u64 = ALIGN as u64;

/// Zero runs shorter than this are written as data, not left as holes. A
/// page file whose pages are half zeros (PostgreSQL heap pages with one
/// tuple) would otherwise be written 4 KiB at a time, one direct write per
/// block, ten times slower than the disk, and come back shredded into tens
/// of thousands of extents; real sparse regions are far longer than this.
const HOLE_MIN: u64 = 64 << 10;

/// The parts of `data`, to be written at file `offset` into a file created
/// at its final size (so it reads as zeros), that are worth writing:
/// everything but runs of whole zero blocks (blocks aligned on the file)
/// at least [`HOLE_MIN`] long, which stay holes.
pub(crate) fn data_runs(data: &[u8], offset: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let end = offset + data.len() as u64;
    let mut pos = offset;
    let mut zero_from: Option<u64> = None;
    let keep = |from: u64, to: u64, runs: &mut Vec<std::ops::Range<usize>>| {
        let (a, b) = ((from - offset) as usize, (to - offset) as usize);
        match runs.last_mut() {
            Some(last) if last.end == a => last.end = b,
            _ => runs.push(a..b),
        }
    };
    let mut data_from = offset;
    while pos < end {
        let next = ((pos / SPARSE_BLOCK + 1) * SPARSE_BLOCK).min(end);
        let zero = next - pos == SPARSE_BLOCK
            && lifeboat_chunker::is_zero(&data[(pos - offset) as usize..(next - offset) as usize]);
        if zero {
            zero_from.get_or_insert(pos);
        } else if let Some(z) = zero_from.take() {
            if pos - z >= HOLE_MIN {
                if z > data_from {
                    keep(data_from, z, &mut runs);
                }
                data_from = pos;
            }
        }
        pos = next;
    }
    let stop = match zero_from {
        Some(z) if end - z >= HOLE_MIN => z,
        _ => end,
    };
    if stop > data_from {
        keep(data_from, stop, &mut runs);
    }
    runs
}

/// Writes `data` at `offset` into a file that was created at its final size
/// (so reads as zeros), leaving long runs of zero blocks unwritten: they
/// stay holes, and a sparse file comes back sparse.
pub(crate) fn write_sparse(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    for r in data_runs(data, offset) {
        f.write_all_at(&data[r.clone()], offset + r.start as u64)?;
    }
    Ok(())
}

/// Makes everything written under `dir` durable: `syncfs(2)` on its file
/// system flushes file contents, sizes and directory entries in one call
/// (PostgreSQL's `recovery_init_sync_method = syncfs` does the same).
pub(crate) fn sync_filesystem(dir: &Path) -> Result<()> {
    direct::sync_filesystem(dir).map_err(|e| RepoError::io("sync the file system of", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn restore_pieces(direct: bool, size: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
        restore_pieces_in(&std::env::temp_dir(), direct, false, size, pieces)
    }

    fn restore_pieces_in(
        parent: &Path,
        direct: bool,
        reserve: bool,
        size: u64,
        pieces: &[(u64, Vec<u8>)],
    ) -> Vec<u8> {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let path = dir.path().join("f");
        let roots = vec![crate::fsat::Root::create(dir.path()).expect("root")];
        let id = crate::fsat::create_file(roots[0].fd(), std::ffi::OsStr::new("f"), size)
            .expect("create");
        let targets = vec![Target {
            root: 0,
            rel: std::path::PathBuf::from("f"),
            id,
        }];
        let sizes = vec![size];
        let dests = Dests {
            roots: &roots,
            targets: &targets,
            sizes: &sizes,
        };
        let mode = DirectMode::new(direct);
        let mut sink = FileSink::new(&dests, &mode);
        for (off, data) in pieces {
            if reserve {
                if let Some(slot) = sink.reserve(0, *off, data.len()).expect("reserve") {
                    slot.copy_from_slice(data);
                    sink.commit(0, *off, data.len()).expect("commit");
                    continue;
                }
            }
            sink.write(0, *off, data).expect("write");
        }
        sink.flush(&mut Vec::new()).expect("flush");
        drop(sink);
        sync_filesystem(dir.path()).expect("sync");
        std::fs::read(&path).expect("read back")
    }

    fn expected(size: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut want = vec![0u8; size as usize];
        for (off, data) in pieces {
            want[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        want
    }

    proptest! {
        /// The runs cover every byte that is not zero, never a block that
        /// is not wholly inside the data, and leave out only zero runs long
        /// enough to be holes.
        #[test]
        fn data_runs_leave_out_only_long_zero_runs(
            offset in 0u64..20_000,
            parts in proptest::collection::vec((0usize..200_000, any::<bool>()), 1..12),
        ) {
            let mut data = Vec::new();
            for (len, zero) in &parts {
                let fill = if *zero { 0u8 } else { 7u8 };
                data.extend(std::iter::repeat_n(fill, *len));
            }
            let runs = data_runs(&data, offset);
            let mut covered = vec![false; data.len()];
            let mut last_end = 0;
            for r in &runs {
                prop_assert!(r.start >= last_end && r.start < r.end && r.end <= data.len());
                last_end = r.end;
                for c in &mut covered[r.clone()] {
                    *c = true;
                }
            }
            for (i, b) in data.iter().enumerate() {
                prop_assert!(covered[i] || *b == 0, "byte {i} is data but not written");
            }
            // Every gap is zeros, and an inner gap is at least HOLE_MIN.
            let mut gaps = Vec::new();
            let mut at = 0;
            for r in &runs {
                if r.start > at {
                    gaps.push(at..r.start);
                }
                at = r.end;
            }
            if at < data.len() {
                gaps.push(at..data.len());
            }
            for g in gaps {
                prop_assert!(data[g.clone()].iter().all(|&b| b == 0));
                prop_assert!(g.len() as u64 >= HOLE_MIN, "a short gap {g:?} of {}", data.len());
            }
        }
    }

    /// Pages whose second half is zeros are written in long runs, not
    /// 4 KiB at a time; a long zero run stays a hole.
    #[test]
    fn half_zero_pages_are_one_run_and_long_zero_runs_are_holes() {
        let mut data = vec![0u8; 8192 * 64];
        for p in 0..64 {
            data[p * 8192..p * 8192 + 80].fill(9);
        }
        assert_eq!(data_runs(&data, 0), vec![0..8192 * 64]);
        let mut sparse = vec![0u8; 4 << 20];
        sparse[0] = 1;
        sparse[(4 << 20) - 1] = 1;
        assert_eq!(
            data_runs(&sparse, 0),
            vec![0..4096, (4 << 20) - 4096..4 << 20]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the cut, order and alignment of the pieces, direct and
        /// buffered writing give the same bytes as writing them in memory.
        #[test]
        fn any_pieces_come_back_as_written(
            cuts in proptest::collection::vec(1usize..300_000, 1..24),
            zero_every in 2usize..6,
            shuffle in any::<bool>(),
        ) {
            let mut pieces = Vec::new();
            let mut off = 0u64;
            for (i, len) in cuts.iter().enumerate() {
                let fill = if i % zero_every == 0 { 0 } else { (i % 251) as u8 + 1 };
                let data: Vec<u8> = (0..*len).map(|k| if fill == 0 { 0 } else { fill ^ (k as u8) }).collect();
                pieces.push((off, data));
                off += *len as u64;
            }
            let size = off + 5000;
            if shuffle {
                pieces.reverse();
            }
            let want = expected(size, &pieces);
            prop_assert!(restore_pieces(true, size, &pieces) == want);
            prop_assert!(restore_pieces(false, size, &pieces) == want);
            let tmp = std::env::temp_dir();
            prop_assert!(restore_pieces_in(&tmp, true, true, size, &pieces) == want);
        }
    }

    /// When writing out one file's staged bytes fails because another
    /// file's write needed the buffer, it is that file that is marked
    /// incomplete, never the one being written.
    #[test]
    fn a_failed_eviction_marks_the_evicted_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = vec![crate::fsat::Root::create(dir.path()).expect("root")];
        let size = 8u64 << 20;
        let mut targets = Vec::new();
        for i in 0..STAGES + 1 {
            let name = format!("f{i}");
            let id = crate::fsat::create_file(roots[0].fd(), std::ffi::OsStr::new(&name), size)
                .expect("create");
            targets.push(Target {
                root: 0,
                rel: std::path::PathBuf::from(name),
                id,
            });
        }
        let sizes = vec![size; targets.len()];
        let dests = Dests {
            roots: &roots,
            targets: &targets,
            sizes: &sizes,
        };
        let mode = DirectMode::new(true);
        let mut sink = FileSink::new(&dests, &mode);
        let piece = vec![7u8; 100_000];
        sink.write(0, 0, &piece).expect("stage file 0");
        // File 0's name now holds another user's file: draining its stage
        // fails. (Without the privilege to make one, there is nothing to
        // test.)
        std::fs::remove_file(dir.path().join("f0")).unwrap();
        std::fs::write(dir.path().join("f0"), b"other").unwrap();
        if std::os::unix::fs::chown(dir.path().join("f0"), Some(65534), Some(65534)).is_err() {
            return;
        }
        let mut evicted = false;
        for i in 1..=STAGES {
            if sink.write(i, 0, &piece).is_err() {
                evicted = true;
            }
        }
        assert!(evicted, "the fifth file's write evicted file 0's stage");
        let mut failed = Vec::new();
        let _ = sink.flush(&mut failed);
        assert!(failed.contains(&0), "{failed:?}");
        assert!(
            !failed.iter().any(|&n| n != 0),
            "only file 0 lost bytes: {failed:?}"
        );
    }

    /// tmpfs refuses O_DIRECT: the sink falls back to the page cache and
    /// the bytes are the same.
    #[test]
    fn a_file_system_without_direct_io_gets_the_same_bytes() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let pieces: Vec<(u64, Vec<u8>)> = (0..40u64)
            .map(|i| (i * 100_000, vec![(i % 200) as u8 + 1; 100_000]))
            .collect();
        let size = 40 * 100_000 + 123;
        let want = expected(size, &pieces);
        for reserve in [false, true] {
            assert!(restore_pieces_in(shm, true, reserve, size, &pieces) == want);
        }
    }

    #[test]
    fn a_large_file_written_in_page_chunks_is_identical() {
        let size = 9 * STAGE as u64 / 2 + 8192;
        let pieces: Vec<(u64, Vec<u8>)> = (0..size / 131_072 + 1)
            .map(|i| {
                let off = i * 131_072;
                let len = (size - off).min(131_072) as usize;
                (
                    off,
                    (0..len).map(|k| (k as u8) ^ (i as u8)).collect::<Vec<u8>>(),
                )
            })
            .filter(|(_, d)| !d.is_empty())
            .collect();
        assert!(restore_pieces(true, size, &pieces) == expected(size, &pieces));
    }
}
