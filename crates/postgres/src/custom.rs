//! pg_dump's custom-format archive, re-chunked as it streams.
//!
//! Written uncompressed to a pipe, the custom format carries every COPY row
//! as its own data chunk behind a 5-byte length: 14 M rows, 70 MB of
//! headers that break up the text and compress badly (6.5 % more stored on
//! the identity dataset). [`Rechunk`] passes the archive through unchanged
//! except that it joins consecutive chunks of a data block into larger ones,
//! cut where a row's first bytes hash to a boundary (content-defined, so two
//! dumps of slowly changing data still share their chunks) or at 4 MiB. The
//! result is a custom-format archive pg_restore reads like the original; no
//! stored format changes.
//!
//! Only what is understood is rewritten: archive versions 1.12 to 1.15 with
//! 4-byte integers, 8-byte offsets and no compression. Anything else, or
//! anything unexpected mid-stream, passes through byte for byte from there
//! on, which is always a valid archive.

use std::io::{self, Read};

/// The block type of table data.
const BLK_DATA: u8 = 1;
/// Joined chunks are cut at 4 MiB at most.
const MAX_JOINED: usize = 4 << 20;
/// A row whose first bytes hash to 0 modulo this ends a joined chunk
/// (about 20 KiB of 300-byte rows: a changed row changes only its own
/// group's length, and the length headers left are 1 in 64).
const BOUNDARY: u64 = 64;

/// What the reader expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    /// Data blocks: the next byte is a block type (or the end).
    Blocks,
    /// Inside a data block: the next thing is a chunk length.
    Chunks,
    /// Passing everything through.
    Raw,
}

/// A reader of a custom-format archive that yields it re-chunked.
pub struct Rechunk<R: Read> {
    inner: R,
    /// Input read but not yet parsed: `buf[pos..len]`.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    state: State,
    int_size: usize,
    /// Output ready to hand out.
    out: Vec<u8>,
    out_at: usize,
    /// Data of the current block not yet written out as a chunk.
    joined: Vec<u8>,
    /// Rows seen (chunks joined), for the statistics.
    pub rows: u64,
}

/// Input is read in pieces of this size.
const READ: usize = 1 << 20;

impl<R: Read> Rechunk<R> {
    /// Re-chunks the archive read from `inner`.
    pub fn new(inner: R) -> Self {
        Rechunk {
            inner,
            buf: vec![0u8; 2 * READ],
            pos: 0,
            len: 0,
            eof: false,
            state: State::Header,
            int_size: 4,
            out: Vec::with_capacity(MAX_JOINED + 16),
            out_at: 0,
            joined: Vec::with_capacity(MAX_JOINED),
            rows: 0,
        }
    }

    /// Makes at least `n` unparsed bytes available; false when the input
    /// ends first (what there is stays available).
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.len - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.buf.len() - self.len < READ.min(n.max(READ)) {
                let want = (self.len + n.max(READ)).next_power_of_two();
                self.buf.resize(want, 0);
            }
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.len += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn truncated() -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "truncated archive")
    }

    /// The next `n` bytes, copied to the output when `copy`.
    fn must(&mut self, n: usize, copy: bool) -> io::Result<&[u8]> {
        if !self.fill(n)? {
            return Err(Self::truncated());
        }
        let at = self.pos;
        self.pos += n;
        if copy {
            self.out.extend_from_slice(&self.buf[at..at + n]);
        }
        Ok(&self.buf[at..at + n])
    }

    /// pg_dump's integer: a sign byte and `int_size` bytes, little-endian.
    fn int(&mut self, copy: bool) -> io::Result<i64> {
        let size = self.int_size;
        Ok(decode_int(self.must(1 + size, copy)?))
    }

    fn put_int(&mut self, v: usize) {
        self.out.push(0);
        self.out.extend_from_slice(&(v as u32).to_le_bytes());
    }

    /// A string: an integer length (-1: null) and the bytes; copied.
    /// Returns whether it was not null.
    fn string(&mut self) -> io::Result<bool> {
        let n = self.int(true)?;
        if n < 0 {
            return Ok(false);
        }
        if n > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a string longer than 1 GiB",
            ));
        }
        self.must(n as usize, true)?;
        Ok(true)
    }

    /// Copies the header and the table of contents; leaves the reader at
    /// the first data block. False (or an error) on what it does not know.
    fn header(&mut self) -> io::Result<bool> {
        let head = self.must(5 + 3 + 3, true)?.to_vec();
        if &head[..5] != b"PGDMP" {
            return Ok(false);
        }
        let (vmaj, vmin) = (head[5], head[6]);
        let (int_size, off_size, format) = (head[8], head[9], head[10]);
        // 1.12 (PostgreSQL 9.5) to 1.15 (16); 4-byte ints, 8-byte offsets,
        // custom format (1).
        if vmaj != 1 || !(12..=15).contains(&vmin) || int_size != 4 || off_size != 8 || format != 1
        {
            return Ok(false);
        }
        self.int_size = usize::from(int_size);
        // Compression: an int before 1.15, an algorithm byte since.
        let compressed = if vmin >= 15 {
            self.must(1, true)?[0] != 0
        } else {
            self.int(true)? != 0
        };
        if compressed {
            return Ok(false);
        }
        for _ in 0..7 {
            self.int(true)?; // creation time
        }
        for _ in 0..3 {
            self.string()?; // database, server version, pg_dump version
        }
        let entries = self.int(true)?;
        if !(0..=10_000_000).contains(&entries) {
            return Ok(false);
        }
        for _ in 0..entries {
            self.int(true)?; // dump id
            self.int(true)?; // has data
            for _ in 0..4 {
                self.string()?; // table oid, oid, tag, description
            }
            self.int(true)?; // section
            for _ in 0..5 {
                self.string()?; // definition, drop, copy statement, namespace, tablespace
            }
            if vmin >= 14 {
                self.string()?; // table access method
            }
            self.string()?; // owner
            self.string()?; // with OIDs ("false")
            while self.string()? {} // dependencies, to a null
            self.must(1 + usize::from(off_size), true)?; // data position
        }
        Ok(true)
    }

    /// Writes the joined data out as one chunk.
    fn flush_joined(&mut self) {
        if !self.joined.is_empty() {
            let joined = std::mem::take(&mut self.joined);
            self.put_int(joined.len());
            self.out.extend_from_slice(&joined);
            self.joined = joined;
            self.joined.clear();
        }
    }

    /// Produces more output; false at the end. What does not parse (a cut
    /// or unexpected archive) passes through from where parsing stopped:
    /// the rows joined before it are a valid chunk, everything after is as
    /// pg_dump wrote it, and pg_restore says what is wrong with it.
    fn step(&mut self) -> io::Result<bool> {
        match self.parse() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.flush_joined();
                self.state = State::Raw;
                Ok(true)
            }
            other => other,
        }
    }

    fn parse(&mut self) -> io::Result<bool> {
        match self.state {
            State::Header => {
                self.state = if self.header()? {
                    State::Blocks
                } else {
                    State::Raw
                };
            }
            State::Blocks => {
                if !self.fill(1)? {
                    return Ok(false);
                }
                let kind = self.must(1, true)?[0];
                if kind == BLK_DATA {
                    self.int(true)?; // dump id
                    self.state = State::Chunks;
                } else {
                    // Large objects and anything else: as they are.
                    self.state = State::Raw;
                }
            }
            State::Chunks => self.chunks()?,
            State::Raw => {
                if self.pos == self.len && !self.fill(1)? {
                    return Ok(false);
                }
                self.out.extend_from_slice(&self.buf[self.pos..self.len]);
                self.pos = self.len;
            }
        }
        Ok(true)
    }

    /// Joins the rows of a data block that are in the buffer, and reads more.
    fn chunks(&mut self) -> io::Result<()> {
        let head = 1 + self.int_size;
        if !self.fill(head)? {
            return Err(Self::truncated());
        }
        loop {
            let avail = self.len - self.pos;
            if avail < head {
                return Ok(());
            }
            let n = decode_int(&self.buf[self.pos..self.pos + head]);
            if n == 0 {
                self.pos += head;
                self.flush_joined();
                self.put_int(0);
                self.state = State::Blocks;
                return Ok(());
            }
            if !(1..=(1 << 30)).contains(&n) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a data chunk of an impossible length",
                ));
            }
            let n = n as usize;
            if avail < head + n {
                // The rest of this row is not read yet.
                if !self.fill(head + n)? {
                    return Err(Self::truncated());
                }
                continue;
            }
            let row = &self.buf[self.pos + head..self.pos + head + n];
            self.joined.extend_from_slice(row);
            let h = row[..n.min(16)]
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
            self.pos += head + n;
            self.rows += 1;
            if h % BOUNDARY == 0 || self.joined.len() >= MAX_JOINED {
                self.flush_joined();
                return Ok(());
            }
        }
    }
}

/// pg_dump's integer from its bytes: sign, then little-endian magnitude.
fn decode_int(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, byte) in b[1..].iter().enumerate() {
        v |= i64::from(*byte) << (8 * i);
    }
    if b[0] != 0 {
        -v
    } else {
        v
    }
}

impl<R: Read> Read for Rechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            if !self.step()? {
                // A block left open at the end (a truncated archive) keeps
                // its data: pg_restore will say what is wrong with it.
                self.flush_joined();
                if self.out.is_empty() {
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.out.len() - self.out_at);
        buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int(out: &mut Vec<u8>, v: i64) {
        out.push(u8::from(v < 0));
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    }

    fn string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => int(out, -1),
            Some(s) => {
                int(out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// A small archive as pg_dump 15 writes it to a pipe: header, a TOC of
    /// two entries, and the data block of one with a chunk per row.
    fn archive(rows: &[Vec<u8>]) -> Vec<u8> {
        let mut a = b"PGDMP".to_vec();
        a.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
        int(&mut a, 0); // no compression
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut a, v);
        }
        for s in ["app", "15.18", "15.18"] {
            string(&mut a, Some(s));
        }
        int(&mut a, 2);
        for (id, has) in [(1, 0), (2, 1)] {
            int(&mut a, id);
            int(&mut a, has);
            for s in ["0", "0", "users", "TABLE DATA"] {
                string(&mut a, Some(s));
            }
            int(&mut a, 2);
            for s in ["", "", "COPY users FROM stdin;\n", "public", ""] {
                string(&mut a, Some(s));
            }
            string(&mut a, Some("heap"));
            string(&mut a, Some("postgres"));
            string(&mut a, Some("false"));
            string(&mut a, Some("1"));
            string(&mut a, None);
            a.push(1); // K_OFFSET_POS_NOT_SET
            a.extend_from_slice(&[0; 8]);
        }
        a.push(BLK_DATA);
        int(&mut a, 2);
        for r in rows {
            int(&mut a, r.len() as i64);
            a.extend_from_slice(r);
        }
        int(&mut a, 0);
        a
    }

    /// The data of every block, joined, and the bytes before the first block.
    fn data_of(mut a: &[u8], toc_len: usize) -> (Vec<u8>, Vec<u8>) {
        let head = a[..toc_len].to_vec();
        a = &a[toc_len..];
        assert_eq!(a[0], BLK_DATA);
        a = &a[6..];
        let mut data = Vec::new();
        loop {
            let n = u32::from_le_bytes([a[1], a[2], a[3], a[4]]) as usize;
            a = &a[5..];
            if n == 0 {
                break;
            }
            data.extend_from_slice(&a[..n]);
            a = &a[n..];
        }
        assert!(a.is_empty());
        (head, data)
    }

    proptest! {
        #[test]
        fn rows_are_joined_and_nothing_else_changes(rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..400)) {
            let original = archive(&rows);
            let toc_len = archive(&[]).len() - 6 - 5;
            let mut out = Vec::new();
            let mut r = Rechunk::new(original.as_slice());
            r.read_to_end(&mut out).unwrap();
            prop_assert_eq!(r.rows, rows.len() as u64);
            let (head_a, data_a) = data_of(&original, toc_len);
            let (head_b, data_b) = data_of(&out, toc_len);
            prop_assert_eq!(head_a, head_b);
            prop_assert_eq!(data_a, data_b);
            prop_assert!(out.len() <= original.len());
        }

        #[test]
        fn anything_else_passes_through(bytes in proptest::collection::vec(any::<u8>(), 0..2000), magic in any::<bool>()) {
            // Not an archive this understands: unchanged, never an error.
            let input = if magic { [b"PGDMP".as_slice(), &bytes].concat() } else { bytes };
            let mut out = Vec::new();
            let mut r = Rechunk::new(input.as_slice());
            r.read_to_end(&mut out).unwrap();
            if r.rows == 0 {
                prop_assert_eq!(out, input);
            }
        }

        #[test]
        fn a_cut_or_damaged_archive_passes_through(
            rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..50),
            cut in any::<proptest::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Cut anywhere, garbage after: never an error; the bytes before
            // the first row joined and after the damage are unchanged.
            let original = archive(&rows);
            let at = cut.index(original.len() + 1);
            let input = [&original[..at], tail.as_slice()].concat();
            let mut out = Vec::new();
            let mut r = Rechunk::new(input.as_slice());
            r.read_to_end(&mut out).unwrap();
            if r.rows == 0 {
                prop_assert_eq!(&out, &input);
            }
            prop_assert!(out.len() <= input.len());
            prop_assert_eq!(out.last(), input.last());
        }
    }
}
