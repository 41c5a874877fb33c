//! The RDB as it arrives after SYNC: its framing (`$<length>` or the
//! diskless `$EOF:<40-byte mark>`), and the checks made before a backup is
//! recorded: magic and version, the EOF opcode, and the CRC-64 trailer.

use std::io::{self, Read};

/// Redis's checksum of RDB files and DUMP payloads: CRC-64/Jones, reflected,
/// as `crc64.c` computes it.
pub(crate) static CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// The RDB opcode that ends the data, before the 8-byte checksum.
const RDB_EOF: u8 = 0xff;

/// How the server delimits the RDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `$<length>\r\n`, then exactly that many bytes (disk-based sync).
    Length(u64),
    /// `$EOF:<mark>\r\n`, then the RDB, then the same 40 bytes (diskless sync).
    Mark(Vec<u8>),
}

impl Framing {
    /// Parses the line after the keep-alive newlines, without its `$`.
    pub fn parse(line: &str) -> Option<Framing> {
        if let Some(mark) = line.strip_prefix("EOF:") {
            return (mark.len() == 40).then(|| Framing::Mark(mark.as_bytes().to_vec()));
        }
        line.parse().ok().map(Framing::Length)
    }
}

/// What the checks found in a sound RDB.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RdbFacts {
    /// `REDIS` or `VALKEY`.
    pub magic: String,
    /// The RDB format version.
    pub version: u32,
    /// Bytes in all.
    pub bytes: u64,
    /// False when the server writes no checksum (`rdbchecksum no`).
    pub checksummed: bool,
}

/// Follows an RDB byte by byte (in any pieces) and checks it at the end.
#[derive(Clone)]
pub struct Checker {
    head: Vec<u8>,
    digest: crc::Digest<'static, u64>,
    /// The last 8 bytes seen, not yet digested: the checksum, at the end.
    tail: Vec<u8>,
    /// The last byte digested: the EOF opcode, at the end.
    last: Option<u8>,
    bytes: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            head: Vec::with_capacity(9),
            digest: CRC64.digest(),
            tail: Vec::with_capacity(16),
            last: None,
            bytes: 0,
        }
    }
}

impl Checker {
    /// Takes the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let want = 9 - self.head.len().min(9);
        self.head.extend_from_slice(&data[..want.min(data.len())]);
        // Everything but the last 8 bytes goes into the checksum.
        if data.len() >= 8 {
            let (body, tail) = data.split_at(data.len() - 8);
            self.digest.update(&self.tail);
            self.digest.update(body);
            self.last = body
                .last()
                .copied()
                .or(self.tail.last().copied())
                .or(self.last);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 8 {
                let spill = self.tail.len() - 8;
                self.digest.update(&self.tail[..spill]);
                self.last = Some(self.tail[spill - 1]);
                self.tail.drain(..spill);
            }
        }
    }

    /// The verdict on everything taken.
    pub fn finish(self) -> Result<RdbFacts, String> {
        let (magic, digits) = if self.head.starts_with(b"REDIS") {
            ("REDIS", &self.head[5..])
        } else if self.head.starts_with(b"VALKEY") {
            ("VALKEY", &self.head[6..])
        } else {
            return Err(format!(
                "it does not start with REDIS or VALKEY (found {:?})",
                String::from_utf8_lossy(&self.head)
            ));
        };
        let version: u32 = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                format!(
                    "the version {:?} is not a number",
                    String::from_utf8_lossy(digits)
                )
            })?;
        if self.bytes < 9 + 1 + 8 {
            return Err(format!(
                "it is {} bytes long, too short for an RDB",
                self.bytes
            ));
        }
        if self.last != Some(RDB_EOF) {
            return Err("it does not end with the EOF opcode (truncated?)".into());
        }
        let stored =
            u64::from_le_bytes(self.tail.as_slice().try_into().map_err(|_| "no checksum")?);
        let checksummed = stored != 0;
        if checksummed {
            let computed = self.digest.finalize();
            if computed != stored {
                return Err(format!(
                    "its CRC-64 is {computed:016x} but the file says {stored:016x} (a flipped or lost byte)"
                ));
            }
        }
        Ok(RdbFacts {
            magic: magic.into(),
            version,
            bytes: self.bytes,
            checksummed,
        })
    }
}

/// Checks a whole RDB in memory.
pub fn check(data: &[u8]) -> Result<RdbFacts, String> {
    let mut c = Checker::default();
    c.update(data);
    c.finish()
}

/// The RDB payload of a SYNC reply, read from the connection and checked as
/// it passes: reads end at the RDB's end, whatever the server sends after.
pub struct RdbStream<'a, R: Read> {
    inner: &'a mut R,
    framing: Framing,
    remaining: u64,
    /// Mark framing: bytes read but not yet handed out (the last 40 may be
    /// the mark).
    window: Vec<u8>,
    /// The end was found; hand out the window and stop.
    ended: bool,
    checker: Checker,
}

impl<'a, R: Read> RdbStream<'a, R> {
    /// Reads the RDB that follows `framing` on `inner`.
    pub fn new(inner: &'a mut R, framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(n) => n,
            Framing::Mark(_) => 0,
        };
        RdbStream {
            inner,
            framing,
            remaining,
            window: Vec::new(),
            ended: false,
            checker: Checker::default(),
        }
    }

    /// The checks, once everything was read.
    pub fn finish(self) -> Result<RdbFacts, String> {
        if !self.ended || !self.window.is_empty() {
            return Err("the stream was not read to its end".into());
        }
        self.checker.finish()
    }

    fn hand_out(&mut self, buf: &mut [u8], keep: usize) -> usize {
        let n = buf.len().min(self.window.len().saturating_sub(keep));
        buf[..n].copy_from_slice(&self.window[..n]);
        self.window.drain(..n);
        self.checker.update(&buf[..n]);
        n
    }
}

impl<R: Read> Read for RdbStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &self.framing {
            Framing::Length(_) => {
                if self.remaining == 0 {
                    self.ended = true;
                    return Ok(0);
                }
                let want = buf
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the server closed the connection {} bytes before the end of the RDB",
                            self.remaining
                        ),
                    ));
                }
                self.remaining -= n as u64;
                self.checker.update(&buf[..n]);
                Ok(n)
            }
            Framing::Mark(mark) => {
                let mark_len = mark.len();
                loop {
                    if self.ended {
                        return Ok(self.hand_out(buf, 0));
                    }
                    if self.window.len() > mark_len {
                        return Ok(self.hand_out(buf, mark_len));
                    }
                    let from = self.window.len().saturating_sub(mark_len);
                    let mut chunk = [0u8; 64 * 1024];
                    let n = self.inner.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection before the end-of-RDB mark",
                        ));
                    }
                    self.window.extend_from_slice(&chunk[..n]);
                    let Framing::Mark(mark) = &self.framing else {
                        unreachable!()
                    };
                    if let Some(at) = self.window[from..]
                        .windows(mark_len)
                        .position(|w| w == mark.as_slice())
                    {
                        // What follows the mark (a replication stream) is not ours.
                        self.window.truncate(from + at);
                        self.ended = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal RDB: header, one string key in db 0, EOF, checksum.
    fn rdb() -> Vec<u8> {
        let mut d = b"REDIS0010".to_vec();
        d.extend_from_slice(&[0xfe, 0x00, 0x00, 0x01, b'a', 0x01, b'1', RDB_EOF]);
        let crc = CRC64.checksum(&d);
        d.extend_from_slice(&crc.to_le_bytes());
        d
    }

    #[test]
    fn the_crc_is_redis_s() {
        // crc64.c's self-test: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
        let facts = check(&rdb()).unwrap();
        assert_eq!(
            (facts.magic.as_str(), facts.version, facts.checksummed),
            ("REDIS", 10, true)
        );
    }

    #[test]
    fn damage_is_named() {
        let mut d = rdb();
        d[12] ^= 1;
        assert!(check(&d).unwrap_err().contains("CRC-64"));
        let d = rdb();
        assert!(check(&d[..d.len() - 3]).is_err());
        assert!(check(b"RADIS0010\xff\0\0\0\0\0\0\0\0")
            .unwrap_err()
            .contains("REDIS or VALKEY"));
        // rdbchecksum no: zero checksum, accepted and said.
        let mut d = rdb();
        let n = d.len();
        d[n - 8..].fill(0);
        assert!(!check(&d).unwrap().checksummed);
    }

    proptest! {
        #[test]
        fn both_framings_yield_the_rdb_in_any_pieces(split in 1usize..40, extra in proptest::collection::vec(any::<u8>(), 0..50)) {
            let body = rdb();
            let mark = b"0123456789012345678901234567890123456789".to_vec();
            for framing in [Framing::Length(body.len() as u64), Framing::Mark(mark.clone())] {
                let mut wire = body.clone();
                if let Framing::Mark(m) = &framing {
                    wire.extend_from_slice(m);
                }
                wire.extend_from_slice(&extra);
                let mut src = Pieces(wire.as_slice(), split);
                let mut s = RdbStream::new(&mut src, framing);
                let mut out = Vec::new();
                let mut buf = vec![0u8; split];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 { break; }
                    out.extend_from_slice(&buf[..n]);
                }
                prop_assert_eq!(&out, &body);
                prop_assert!(s.finish().is_ok());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_checker(data in proptest::collection::vec(any::<u8>(), 0..300), split in 1usize..20) {
            let mut c = Checker::default();
            for piece in data.chunks(split) {
                c.update(piece);
            }
            let whole = check(&data);
            prop_assert_eq!(c.finish().is_ok(), whole.is_ok());
        }
    }

    /// A reader that hands out at most `.1` bytes at a time.
    struct Pieces<'a>(&'a [u8], usize);
    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
