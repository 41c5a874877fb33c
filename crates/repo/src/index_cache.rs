//! The on-disk index cache: every chunk of a repository's index objects in
//! one local file, sorted by chunk id, read with positioned reads so that
//! memory does not grow with the repository (issue #14 §4).
//!
//! Inspired by git's pack `.idx` (a 256-entry fan-out table in front of
//! sorted ids) and Kopia's sorted index blobs: a lookup reads the fan-out
//! entry of the id's first two bytes (kept in memory, 256 KiB), then binary
//! searches that bucket in the file. The file is read with `pread`, not
//! mapped: the workspace forbids `unsafe` (mapping a file is unsafe in Rust,
//! since another process can truncate it under the mapping), and pages read
//! this way live in the kernel's page cache, shared and reclaimable, not in
//! the process's resident set.
//!
//! Layout (version 1, all integers little-endian), see docs/format.md:
//!
//! ```text
//! header   128 bytes: magic "LBIXCACH" | u32 version | u32 flags(0)
//!                     | u64 record count | u32 pack count | u32 source count
//!                     | u64 sources length | [32] marks hash
//!                     | [32] BLAKE3 of header (this field zeroed), fan-out,
//!                       pack table and sources | 8 bytes zero
//! fan-out  65536 × u32: records whose id's first two bytes (big-endian) ≤ i
//! packs    pack count × (pack id[32] | u32 key epoch)
//! sources  the index-object keys it was built from, sorted, each u16 length + bytes
//! records  count × 52 bytes: chunk id[32] | u32 pack | u32 offset | u32 len
//!          | u32 raw_len | u32 CRC-32C of the first 48 bytes
//! ```
//!
//! Nothing secret is stored: chunk ids are keyed hashes, pack ids, offsets
//! and lengths are visible in the repository's own listing.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use lifeboat_types::{ChunkId, PackId};

use crate::error::{RepoError, Result};
use crate::format::IndexedPack;
use crate::index::Location;

/// The file's magic bytes.
pub const MAGIC: &[u8; 8] = b"LBIXCACH";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: u64 = 128;
/// Fan-out entries (the first two bytes of a chunk id).
pub const FANOUT: usize = 65536;
/// One record.
pub const RECORD_LEN: usize = 52;
const PACK_LEN: usize = 36;
/// A bucket this small is read in one go instead of probed.
const SCAN: u64 = 64;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn bad(path: &Path, reason: impl Into<String>) -> RepoError {
    RepoError::Corrupt {
        key: format!("index cache {}", path.display()),
        reason: reason.into(),
    }
}

/// An open cache file.
#[derive(Debug)]
pub struct CacheFile {
    file: File,
    path: PathBuf,
    count: u64,
    fanout: Vec<u32>,
    records_at: u64,
    packs: Vec<(PackId, u32)>,
    sources: Vec<String>,
    marks_hash: [u8; 32],
}

/// One index entry while building: the chunk, its pack's position, where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    id: [u8; 32],
    loc: Location,
}

impl Rec {
    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.loc.pack.to_le_bytes());
        out[36..40].copy_from_slice(&self.loc.offset.to_le_bytes());
        out[40..44].copy_from_slice(&self.loc.len.to_le_bytes());
        out[44..48].copy_from_slice(&self.loc.raw_len.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Rec {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        Rec {
            id,
            loc: Location {
                pack: u(32),
                offset: u(36),
                len: u(40),
                raw_len: u(44),
            },
        }
    }
}

fn bucket(id: &[u8; 32]) -> usize {
    usize::from(u16::from_be_bytes([id[0], id[1]]))
}

/// BLAKE3 of the marked packs (sorted): a cache built under other marks
/// prefers other locations, so it is rebuilt.
pub fn marks_hash(marked: &HashSet<PackId>) -> [u8; 32] {
    let mut v: Vec<&PackId> = marked.iter().collect();
    v.sort();
    let mut h = blake3::Hasher::new();
    for p in v {
        h.update(p.as_bytes());
    }
    *h.finalize().as_bytes()
}

impl CacheFile {
    /// Opens and checks a cache file: magic, version, sizes, and the
    /// checksum over header, fan-out, pack table and sources. Records are
    /// checked one by one as they are read (each carries a CRC-32C).
    pub fn open(path: &Path) -> Result<CacheFile> {
        let file = File::open(path).map_err(|e| RepoError::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| RepoError::io("stat", path, e))?
            .len();
        let mut header = [0u8; HEADER_LEN as usize];
        if size < HEADER_LEN + (FANOUT as u64) * 4 {
            return Err(bad(path, "truncated"));
        }
        file.read_exact_at(&mut header, 0)
            .map_err(|e| RepoError::io("read", path, e))?;
        if &header[..8] != MAGIC {
            return Err(bad(path, "not an index cache"));
        }
        let u32at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32at(8);
        if version != VERSION {
            return Err(bad(
                path,
                format!("version {version}, this build reads {VERSION}"),
            ));
        }
        let count = u64at(16);
        let npacks = u64::from(u32at(24));
        let nsources = u64::from(u32at(28));
        let sources_len = u64at(32);
        let mut marks_hash = [0u8; 32];
        marks_hash.copy_from_slice(&header[40..72]);
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&header[72..104]);
        let packs_at = HEADER_LEN + (FANOUT as u64) * 4;
        let records_at = packs_at
            .checked_add(npacks * PACK_LEN as u64)
            .and_then(|x| x.checked_add(sources_len))
            .ok_or_else(|| bad(path, "sizes out of range"))?;
        let expect = count
            .checked_mul(RECORD_LEN as u64)
            .and_then(|r| r.checked_add(records_at));
        if expect != Some(size) {
            return Err(bad(path, "truncated or sizes do not match the file"));
        }
        if sources_len > 64 << 20 || nsources > sources_len / 2 + 1 {
            return Err(bad(path, "sources out of range"));
        }
        // Fan-out, pack table and sources: small, read whole and checksummed.
        let mut rest = vec![0u8; (records_at - HEADER_LEN) as usize];
        file.read_exact_at(&mut rest, HEADER_LEN)
            .map_err(|e| RepoError::io("read", path, e))?;
        let mut h = blake3::Hasher::new();
        let mut zeroed = header;
        zeroed[72..104].fill(0);
        h.update(&zeroed);
        h.update(&rest);
        if h.finalize().as_bytes() != &sum {
            return Err(bad(path, "checksum mismatch"));
        }
        let mut fanout = Vec::with_capacity(FANOUT);
        let mut prev = 0u32;
        for c in rest[..FANOUT * 4].chunks_exact(4) {
            let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if v < prev || u64::from(v) > count {
                return Err(bad(path, "fan-out not monotonic"));
            }
            prev = v;
            fanout.push(v);
        }
        if u64::from(prev) != count {
            return Err(bad(path, "fan-out does not end at the record count"));
        }
        let mut packs = Vec::with_capacity(npacks as usize);
        let ptab = &rest[FANOUT * 4..FANOUT * 4 + npacks as usize * PACK_LEN];
        for c in ptab.chunks_exact(PACK_LEN) {
            let mut id = [0u8; 32];
            id.copy_from_slice(&c[..32]);
            packs.push((PackId(id), u32::from_le_bytes([c[32], c[33], c[34], c[35]])));
        }
        let mut src = &rest[FANOUT * 4 + npacks as usize * PACK_LEN..];
        let mut sources = Vec::with_capacity(nsources as usize);
        for _ in 0..nsources {
            if src.len() < 2 {
                return Err(bad(path, "sources truncated"));
            }
            let n = usize::from(u16::from_le_bytes([src[0], src[1]]));
            let s = src
                .get(2..2 + n)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| bad(path, "bad source key"))?;
            sources.push(s.to_string());
            src = &src[2 + n..];
        }
        if !src.is_empty() {
            return Err(bad(path, "trailing bytes after the sources"));
        }
        Ok(CacheFile {
            file,
            path: path.to_path_buf(),
            count,
            fanout,
            records_at,
            packs,
            sources,
            marks_hash,
        })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The pack table: a record's `pack` is a position in it.
    pub fn packs(&self) -> &[(PackId, u32)] {
        &self.packs
    }

    /// The index-object keys it was built from, sorted.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The hash of the marked packs it was built under ([`marks_hash`]).
    pub fn marks_hash(&self) -> &[u8; 32] {
        &self.marks_hash
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_records(&self, first: u64, n: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(n as usize * RECORD_LEN, 0);
        self.file
            .read_exact_at(buf, self.records_at + first * RECORD_LEN as u64)
            .map_err(|e| RepoError::io("read", &self.path, e))
    }

    /// Checks one record: its CRC, its bucket, its pack position.
    fn check(&self, b: &[u8], ordinal: u64) -> Result<Rec> {
        let crc = u32::from_le_bytes([b[48], b[49], b[50], b[51]]);
        if CRC.checksum(&b[..48]) != crc {
            return Err(bad(
                &self.path,
                format!("record {ordinal} fails its checksum"),
            ));
        }
        let r = Rec::decode(b);
        let bk = bucket(&r.id);
        let lo = if bk == 0 {
            0
        } else {
            u64::from(self.fanout[bk - 1])
        };
        if ordinal < lo
            || ordinal >= u64::from(self.fanout[bk])
            || r.loc.pack as usize >= self.packs.len()
        {
            return Err(bad(&self.path, format!("record {ordinal} is out of place")));
        }
        Ok(r)
    }

    /// The record of `id`: its ordinal (position in the file) and location.
    pub fn lookup(&self, id: &ChunkId) -> Result<Option<(u64, Location)>> {
        let key = id.as_bytes();
        let bk = bucket(key);
        let mut lo = if bk == 0 {
            0
        } else {
            u64::from(self.fanout[bk - 1])
        };
        let mut hi = u64::from(self.fanout[bk]);
        let mut buf = Vec::new();
        while hi - lo > SCAN {
            let mid = lo + (hi - lo) / 2;
            self.read_records(mid, 1, &mut buf)?;
            let r = self.check(&buf, mid)?;
            match r.id.cmp(key) {
                std::cmp::Ordering::Equal => return Ok(Some((mid, r.loc))),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        if hi == lo {
            return Ok(None);
        }
        self.read_records(lo, hi - lo, &mut buf)?;
        for (i, b) in buf.chunks_exact(RECORD_LEN).enumerate() {
            let r = self.check(b, lo + i as u64)?;
            if &r.id == key {
                return Ok(Some((lo + i as u64, r.loc)));
            }
        }
        Ok(None)
    }

    /// Every record in order, read in blocks.
    pub fn iter(&self) -> impl Iterator<Item = Result<(ChunkId, Location)>> + '_ {
        const BLOCK: u64 = 16384;
        let mut buf = Vec::new();
        let mut at = 0u64;
        let mut pos = 0usize;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || at >= self.count {
                return None;
            }
            let block_start = at - at % BLOCK;
            if pos == 0 {
                let n = BLOCK.min(self.count - block_start);
                if let Err(e) = self.read_records(block_start, n, &mut buf) {
                    failed = true;
                    return Some(Err(e));
                }
            }
            let b = &buf[pos * RECORD_LEN..(pos + 1) * RECORD_LEN];
            let r = match self.check(b, at) {
                Ok(r) => r,
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            };
            at += 1;
            pos += 1;
            if pos as u64 == BLOCK {
                pos = 0;
            }
            Some(Ok((ChunkId(r.id), r.loc)))
        })
    }
}

/// What [`build`] made.
pub enum Built {
    /// Fewer entries than the threshold: they are kept in memory, sorted and
    /// without duplicates, with the pack table.
    Small(Vec<(ChunkId, Location)>, Vec<(PackId, u32)>),
    /// The cache file was written and opened.
    File(CacheFile),
}

/// Builds the cache from index objects, streaming: entries are gathered in
/// sorted runs of at most `run` entries (spilled to temporary files next to
/// the cache when there is more than one), then merged into the file. Memory
/// is bounded by the run size and the pack table, not by the repository.
///
/// When a chunk is in several packs, one location is kept: a pack not in
/// `marked` (packs a prune marked for deletion) before a marked one, then
/// the pack with the smallest id, then the smallest offset — deterministic, whatever the order of
/// `objects`. Any stored location is a valid one.
///
/// With fewer than `min_file` entries in total nothing is written and the
/// entries are returned ([`Built::Small`]).
pub fn build(
    path: &Path,
    objects: impl Iterator<Item = Result<(String, Vec<IndexedPack>)>>,
    marked: &HashSet<PackId>,
    run: usize,
    min_file: usize,
) -> Result<Built> {
    let mut packs: Vec<(PackId, u32)> = Vec::new();
    let mut pack_pos: HashMap<PackId, u32> = HashMap::new();
    let mut sources: Vec<String> = Vec::new();
    let mut buf: Vec<Rec> = Vec::new();
    let mut runs: Vec<PathBuf> = Vec::new();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp_base = format!("{}.{}", path.display(), std::process::id());
    let cleanup = |runs: &[PathBuf]| {
        for r in runs {
            let _ = fs::remove_file(r);
        }
    };
    let run = run.max(1);
    if min_file != usize::MAX {
        remove_leftovers(path);
    }
    let mut dir_made = false;
    for obj in objects {
        let (key, ips) = match obj {
            Ok(o) => o,
            Err(e) => {
                cleanup(&runs);
                return Err(e);
            }
        };
        sources.push(key);
        for ip in ips {
            let pos = *pack_pos.entry(ip.pack).or_insert_with(|| {
                packs.push((ip.pack, ip.epoch));
                (packs.len() - 1) as u32
            });
            for e in ip.entries {
                buf.push(Rec {
                    id: e.id.0,
                    loc: Location {
                        pack: pos,
                        offset: e.offset,
                        len: e.len,
                        raw_len: e.raw_len,
                    },
                });
                if buf.len() >= run {
                    if !dir_made {
                        fs::create_dir_all(dir).map_err(|e| RepoError::io("create", dir, e))?;
                        dir_made = true;
                    }
                    sort_dedup(&mut buf, &packs, marked);
                    let p = PathBuf::from(format!("{tmp_base}.run{}", runs.len()));
                    runs.push(p.clone());
                    if let Err(e) = write_run(&p, &buf) {
                        cleanup(&runs);
                        return Err(e);
                    }
                    buf.clear();
                }
            }
        }
    }
    sort_dedup(&mut buf, &packs, marked);
    sources.sort();
    if runs.is_empty() && buf.len() < min_file {
        return Ok(Built::Small(
            buf.into_iter().map(|r| (ChunkId(r.id), r.loc)).collect(),
            packs,
        ));
    }
    fs::create_dir_all(dir).map_err(|e| RepoError::io("create", dir, e))?;
    let tmp = PathBuf::from(format!("{tmp_base}.tmp"));
    let res = if runs.is_empty() {
        write_file(&tmp, &packs, &sources, marked, buf.into_iter().map(Ok))
    } else {
        let last = PathBuf::from(format!("{tmp_base}.run{}", runs.len()));
        runs.push(last.clone());
        let r = write_run(&last, &buf).and_then(|()| {
            drop(buf);
            let merged = merge(&runs, &packs, marked)?;
            write_file(&tmp, &packs, &sources, marked, merged)
        });
        cleanup(&runs);
        r
    };
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| RepoError::io("rename", path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Built::File(CacheFile::open(path)?))
}

/// Removes what a rebuild killed midway left beside `path`: temporary
/// files and runs named `<file>.<pid>.…` of a process that no longer runs
/// (a pid reused since only delays their removal).
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('.') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Which of two locations of one chunk wins: unmarked first, then the
/// smaller pack id, then the smaller offset.
fn rank(loc: &Location, packs: &[(PackId, u32)], marked: &HashSet<PackId>) -> (bool, PackId, u32) {
    let p = packs[loc.pack as usize].0;
    (marked.contains(&p), p, loc.offset)
}

fn sort_dedup(buf: &mut Vec<Rec>, packs: &[(PackId, u32)], marked: &HashSet<PackId>) {
    buf.sort_unstable_by(|a, b| {
        a.id.cmp(&b.id)
            .then_with(|| rank(&a.loc, packs, marked).cmp(&rank(&b.loc, packs, marked)))
    });
    buf.dedup_by(|later, first| later.id == first.id);
}

fn write_run(path: &Path, recs: &[Rec]) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| RepoError::io("create", path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut b = [0u8; 48];
    for r in recs {
        r.encode(&mut b);
        w.write_all(&b)
            .map_err(|e| RepoError::io("write", path, e))?;
    }
    w.flush().map_err(|e| RepoError::io("write", path, e))
}

struct Head {
    rec: Rec,
    rank: (bool, PackId, u32),
    run: usize,
}
impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    // Reversed: BinaryHeap is a max-heap, the merge wants the smallest.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.rec.id, o.rank, o.run).cmp(&(self.rec.id, self.rank, self.run))
    }
}

/// K-way merge of sorted runs, keeping the best-ranked copy of each chunk.
fn merge<'a>(
    runs: &[PathBuf],
    packs: &'a [(PackId, u32)],
    marked: &'a HashSet<PackId>,
) -> Result<impl Iterator<Item = Result<Rec>> + 'a> {
    let mut readers = Vec::with_capacity(runs.len());
    for p in runs {
        let f = File::open(p).map_err(|e| RepoError::io("open", p, e))?;
        readers.push((p.clone(), BufReader::with_capacity(256 << 10, f)));
    }
    let next = |readers: &mut Vec<(PathBuf, BufReader<File>)>, i: usize| -> Result<Option<Rec>> {
        let mut b = [0u8; 48];
        let (p, r) = &mut readers[i];
        match r.read_exact(&mut b) {
            Ok(()) => Ok(Some(Rec::decode(&b))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(RepoError::io("read", p, e)),
        }
    };
    let mut heap = BinaryHeap::new();
    for i in 0..readers.len() {
        if let Some(rec) = next(&mut readers, i)? {
            heap.push(Head {
                rank: rank(&rec.loc, packs, marked),
                rec,
                run: i,
            });
        }
    }
    let mut last: Option<[u8; 32]> = None;
    Ok(std::iter::from_fn(move || loop {
        let h = heap.pop()?;
        match next(&mut readers, h.run) {
            Ok(Some(rec)) => heap.push(Head {
                rank: rank(&rec.loc, packs, marked),
                rec,
                run: h.run,
            }),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        if last == Some(h.rec.id) {
            continue;
        }
        last = Some(h.rec.id);
        return Some(Ok(h.rec));
    }))
}

/// Writes the file at `tmp` (mode 0600) and syncs it.
fn write_file(
    tmp: &Path,
    packs: &[(PackId, u32)],
    sources: &[String],
    marked: &HashSet<PackId>,
    recs: impl Iterator<Item = Result<Rec>>,
) -> Result<()> {
    let io = |op: &'static str| move |e: std::io::Error| RepoError::io(op, tmp, e);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io("create"))?;
    let mut mid: Vec<u8> = vec![0u8; FANOUT * 4];
    for (p, epoch) in packs {
        mid.extend_from_slice(p.as_bytes());
        mid.extend_from_slice(&epoch.to_le_bytes());
    }
    for s in sources {
        let n = u16::try_from(s.len())
            .map_err(|_| RepoError::Failed(format!("index key too long: {s}")))?;
        mid.extend_from_slice(&n.to_le_bytes());
        mid.extend_from_slice(s.as_bytes());
    }
    let sources_len = (mid.len() - FANOUT * 4 - packs.len() * PACK_LEN) as u64;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(&[0u8; HEADER_LEN as usize])
        .map_err(io("write"))?;
    w.write_all(&mid).map_err(io("write"))?;
    let mut counts = vec![0u32; FANOUT];
    let mut count = 0u64;
    let mut b = [0u8; RECORD_LEN];
    for r in recs {
        let r = r?;
        r.encode(&mut b);
        let crc = CRC.checksum(&b[..48]);
        b[48..].copy_from_slice(&crc.to_le_bytes());
        w.write_all(&b).map_err(io("write"))?;
        counts[bucket(&r.id)] += 1;
        count += 1;
    }
    if count > u64::from(u32::MAX) {
        return Err(RepoError::Failed(
            "more than 4 G chunks in one index".into(),
        ));
    }
    let mut acc = 0u32;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        mid[i * 4..i * 4 + 4].copy_from_slice(&acc.to_le_bytes());
    }
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&count.to_le_bytes());
    header[24..28].copy_from_slice(&(packs.len() as u32).to_le_bytes());
    header[28..32].copy_from_slice(&(sources.len() as u32).to_le_bytes());
    header[32..40].copy_from_slice(&sources_len.to_le_bytes());
    header[40..72].copy_from_slice(&marks_hash(marked));
    let mut h = blake3::Hasher::new();
    h.update(&header);
    h.update(&mid);
    header[72..104].copy_from_slice(h.finalize().as_bytes());
    let mut f = w
        .into_inner()
        .map_err(|e| RepoError::io("write", tmp, e.into_error()))?;
    f.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    f.write_all(&header).map_err(io("write"))?;
    f.write_all(&mid).map_err(io("write"))?;
    f.sync_all().map_err(io("sync"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::format::BlobEntry;
    use proptest::prelude::*;

    fn objects(spec: &[(u8, Vec<[u8; 32]>)]) -> Vec<(String, Vec<IndexedPack>)> {
        spec.iter()
            .enumerate()
            .map(|(i, (p, ids))| {
                let entries = ids
                    .iter()
                    .enumerate()
                    .map(|(j, id)| BlobEntry {
                        id: ChunkId(*id),
                        offset: j as u32 * 10,
                        len: 7 + j as u32,
                        raw_len: 9,
                    })
                    .collect();
                (
                    format!("index/{i:04}"),
                    vec![IndexedPack {
                        pack: PackId([*p; 32]),
                        epoch: u32::from(*p),
                        entries,
                    }],
                )
            })
            .collect()
    }

    /// The rank of the best copy seen, its offset and length.
    type Best = ((bool, PackId, u32), u32, u32);

    fn ids() -> impl Strategy<Value = Vec<(u8, Vec<[u8; 32]>)>> {
        // Few distinct first bytes and a small id space: duplicates across
        // packs and crowded fan-out buckets.
        let id = (0u8..4, 0u8..3, 0u8..40).prop_map(|(a, b, c)| {
            let mut id = [0u8; 32];
            id[0] = a;
            id[1] = b;
            id[2] = c;
            id
        });
        prop::collection::vec((0u8..6, prop::collection::vec(id, 0..40)), 0..8)
    }

    fn built(
        path: &Path,
        objs: &[(String, Vec<IndexedPack>)],
        marked: &HashSet<PackId>,
        run: usize,
    ) -> CacheFile {
        match build(path, objs.iter().cloned().map(Ok), marked, run, 0).unwrap() {
            Built::File(f) => f,
            Built::Small(..) => unreachable!(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Lookups equal an oracle (the best-ranked location of each chunk),
        /// whatever the run size (spilled runs merged or not), and
        /// iteration gives every chunk once, sorted, at its ordinal.
        #[test]
        fn lookups_match_oracle(spec in ids(), run in 1usize..50, mark in 0u8..6) {
            let dir = tempfile::tempdir().unwrap();
            // A directory that does not exist yet: runs may spill before the
            // file is written.
            let path = dir.path().join("repo-id").join("index");
            let objs = objects(&spec);
            let marked: HashSet<PackId> = [PackId([mark; 32])].into();
            let f = built(&path, &objs, &marked, run);
            let mut oracle: HashMap<[u8; 32], Best> = HashMap::new();
            for (_, ips) in &objs {
                for ip in ips {
                    for e in &ip.entries {
                        let cand = ((marked.contains(&ip.pack), ip.pack, e.offset), e.offset, e.len);
                        let slot = oracle.entry(e.id.0).or_insert(cand);
                        if cand.0 < slot.0 { *slot = cand; }
                    }
                }
            }
            prop_assert_eq!(f.len() as usize, oracle.len());
            let all: Vec<_> = f.iter().map(|r| r.unwrap()).collect();
            prop_assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
            for (o, (id, loc)) in all.iter().enumerate() {
                let want = oracle[&id.0];
                prop_assert_eq!(f.packs()[loc.pack as usize].0, want.0.1);
                prop_assert_eq!((loc.offset, loc.len), (want.1, want.2));
                prop_assert_eq!(f.lookup(id).unwrap(), Some((o as u64, *loc)));
            }
            prop_assert_eq!(f.lookup(&ChunkId([9; 32])).unwrap(), None);
            let mut keys: Vec<_> = objs.iter().map(|o| o.0.clone()).collect();
            keys.sort();
            prop_assert_eq!(f.sources(), &keys[..]);
            // No run files are left behind.
            prop_assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        }

        /// A truncated or garbled file is rejected or reads a damaged record
        /// as an error: never a panic, never an entry that was not written.
        #[test]
        fn garbled_never_lies(spec in ids(), cut in any::<prop::sample::Index>(),
                              flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                              truncate in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index");
            let objs = objects(&spec);
            let f = built(&path, &objs, &HashSet::new(), 1000);
            let written: HashSet<(ChunkId, PackId, Location)> = f.iter()
                .map(|r| { let (id, loc) = r.unwrap(); (id, f.packs()[loc.pack as usize].0, loc) })
                .collect();
            drop(f);
            let mut bytes = fs::read(&path).unwrap();
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            } else {
                for (at, x) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            fs::write(&path, &bytes).unwrap();
            let Ok(g) = CacheFile::open(&path) else { return Ok(()) };
            prop_assert!(!truncate, "a truncated file opened");
            for r in g.iter() {
                let Ok((id, loc)) = r else { break };
                prop_assert!(written.contains(&(id, g.packs()[loc.pack as usize].0, loc)));
            }
            for (id, _, _) in &written {
                if let Ok(Some((_, loc))) = g.lookup(id) {
                    prop_assert!(written.contains(&(*id, g.packs()[loc.pack as usize].0, loc)));
                }
            }
        }

        /// Random bytes never open as a cache, nor panic.
        #[test]
        fn random_bytes_rejected(bytes in prop::collection::vec(any::<u8>(), 0..300_000)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index");
            fs::write(&path, &bytes).unwrap();
            prop_assert!(CacheFile::open(&path).is_err());
        }
    }

    /// A rebuild killed midway leaves its temporary file and runs; the next
    /// build removes them (not those of a process still running).
    #[test]
    fn leftovers_of_a_killed_rebuild_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        // Pid 4194304 is above Linux's highest pid: never running.
        let dead = dir.path().join("index.4194304.tmp");
        let dead_run = dir.path().join("index.4194304.run3");
        let alive = dir
            .path()
            .join(format!("index.{}.run0x", std::process::id()));
        let other = dir.path().join("unrelated.1.tmp");
        for p in [&dead, &dead_run, &alive, &other] {
            fs::write(p, b"x").unwrap();
        }
        let objs = objects(&[(1, vec![[1; 32]])]);
        build(&path, objs.into_iter().map(Ok), &HashSet::new(), 10, 0).unwrap();
        assert!(!dead.exists() && !dead_run.exists());
        assert!(alive.exists() && other.exists() && path.exists());
    }

    #[test]
    fn small_stays_in_memory_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let objs = objects(&[(1, vec![[1; 32], [2; 32]])]);
        let b = build(&path, objs.iter().cloned().map(Ok), &HashSet::new(), 10, 3).unwrap();
        assert!(matches!(b, Built::Small(ref e, _) if e.len() == 2));
        assert!(!path.exists());
        let b = build(&path, objs.iter().cloned().map(Ok), &HashSet::new(), 10, 2).unwrap();
        assert!(matches!(b, Built::File(_)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
