//! Direct I/O (`O_DIRECT`): reads and writes that bypass the page cache.
//!
//! Backups and restores write each byte once. Through the page cache every
//! written byte also costs a cache page: memory taken from the database's
//! working set and, on virtual machines, a first touch of guest memory that
//! measured about a second per GiB here (docs/benchmarks.md). Large writes
//! (packs, restored files) therefore go direct where the file system supports
//! it, and fall back to the page cache where it does not (tmpfs, some FUSE
//! and network file systems answer `EINVAL`). Reads of packs go through the
//! cache: a warm repository is then read from memory, and a cold read costs
//! about what a direct one does.
//!
//! Direct I/O needs the file offset, the length and the memory address
//! aligned to the device's logical block size; [`ALIGN`] (the page size)
//! covers every Linux file system. Memory is aligned without unsafe code by
//! over-allocating a vector and working in its first aligned slice.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct transfers.
pub const ALIGN: usize = 4096;

/// Transfers smaller than this go through the page cache.
pub const DIRECT_MIN: u64 = 1 << 20;

/// A buffer whose slice starts at an [`ALIGN`] boundary.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (rounded up to [`ALIGN`]).
    pub fn new(len: usize) -> Self {
        let len = round_up(len.max(ALIGN));
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len }
    }
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: a buffer holds at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    /// The aligned bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// `n` rounded down to [`ALIGN`].
pub fn round_down(n: usize) -> usize {
    n / ALIGN * ALIGN
}

/// `n` rounded up to [`ALIGN`].
pub fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Whether an error means "this file system does not do direct I/O".
pub fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Opens `path` with `O_DIRECT` added to `opts`.
pub fn open(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
    opts.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
}

/// Bytes moved per direct call: large enough to keep the device busy.
const BOUNCE: usize = 1 << 20;

thread_local! {
    /// Each thread's bounce buffer, kept for its next transfer: fresh memory
    /// per transfer would cost what bypassing the cache saves.
    static BOUNCE_BUF: std::cell::RefCell<Option<AlignedBuf>> = const { std::cell::RefCell::new(None) };
}

fn with_bounce<T>(f: impl FnOnce(&mut AlignedBuf) -> T) -> T {
    BOUNCE_BUF.with(|cell| {
        let mut slot = cell.borrow_mut();
        let buf = slot.get_or_insert_with(|| AlignedBuf::new(BOUNCE));
        f(buf)
    })
}

/// Writes `data` to the new, empty file `direct` (opened with `O_DIRECT`)
/// from offset 0: whole blocks directly, through a bounce buffer, and a
/// trailing partial block through `buffered` (the same file without
/// `O_DIRECT`). Returns `Err` with [`unsupported`] true when the file system
/// refuses; the caller then writes it all through the page cache.
pub fn write_new(direct: &File, buffered: &File, data: &[u8]) -> io::Result<()> {
    let aligned = round_down(data.len());
    with_bounce(|bounce| {
        let mut pos = 0;
        while pos < aligned {
            let n = (aligned - pos).min(bounce.len());
            bounce.as_mut_slice()[..n].copy_from_slice(&data[pos..pos + n]);
            direct.write_all_at(&bounce.as_slice()[..n], pos as u64)?;
            pos += n;
        }
        Ok::<(), io::Error>(())
    })?;
    if aligned < data.len() {
        buffered.write_all_at(&data[aligned..], aligned as u64)?;
    }
    Ok(())
}

/// [`write_new`] into the new, empty file at `path` (`buffered` is its
/// handle without `O_DIRECT`); `Ok(false)`, with nothing written, when the
/// file system does not do direct I/O.
pub fn try_write_new(path: &Path, buffered: &File, data: &[u8]) -> io::Result<bool> {
    let direct = match open(OpenOptions::new().write(true), path) {
        Ok(f) => f,
        Err(e) if unsupported(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    match write_new(&direct, buffered, data) {
        Ok(()) => Ok(true),
        Err(e) if unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes everything written to the file system holding `dir` durable:
/// `syncfs(2)` flushes file contents, sizes and directory entries in one
/// call (PostgreSQL's `recovery_init_sync_method = syncfs` does the same).
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        for len in [1, 4096, 5000, 1 << 20] {
            let b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().as_ptr().align_offset(ALIGN), 0);
            assert!(b.len() >= len && b.len().is_multiple_of(ALIGN));
        }
    }

    #[test]
    fn direct_writes_are_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 << 20) + 1234)
            .map(|i: u32| (i % 251) as u8)
            .collect();
        let path = dir.path().join("obj");
        let buffered = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        match open(OpenOptions::new().write(true), &path) {
            Ok(direct) => write_new(&direct, &buffered, &data).expect("write"),
            // tmpfs: no direct I/O; the fallback is the caller's.
            Err(e) if unsupported(&e) => return,
            Err(e) => panic!("open: {e}"),
        }
        assert!(std::fs::read(&path).expect("read") == data);
    }
}
