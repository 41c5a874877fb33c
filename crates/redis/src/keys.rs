//! Reading an RDB key by key, as RESTORE wants each one: the value's bytes
//! exactly as the RDB encodes them, so `RESTORE key ttl <type | value |
//! RDB version | CRC-64>` recreates it without lifeboat decoding the value.
//!
//! Only lengths are decoded (to know where a value ends); listpacks,
//! ziplists, intsets and LZF strings are carried as they are. Types 0–5 and
//! 9–21 (Redis up to 7.2, Valkey 7–8) are understood; module values and the
//! hash-field-expiry types of 7.4+ are refused by name.

use std::io::{self, Read};

use crate::rdb::CRC64;

/// One key of the RDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Its database.
    pub db: u64,
    /// The key.
    pub key: Vec<u8>,
    /// Absolute expiry, Unix milliseconds.
    pub expire_ms: Option<i64>,
    /// The RESTORE payload: type byte, value, RDB version, CRC-64.
    pub payload: Vec<u8>,
}

/// Reads keys from an RDB stream.
pub struct KeyReader<R: Read> {
    r: R,
    version: u16,
    db: u64,
    /// Bytes of the value being read, recorded for its payload.
    rec: Option<Vec<u8>>,
    /// Function libraries seen (not keys: `FUNCTION RESTORE` brings them).
    pub functions: u64,
    done: bool,
}

fn bad(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

impl<R: Read> KeyReader<R> {
    /// Reads the header; fails unless the stream is an RDB.
    pub fn new(mut r: R) -> io::Result<Self> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head)?;
        let digits = if head.starts_with(b"REDIS") {
            &head[5..]
        } else if head.starts_with(b"VALKEY") {
            &head[6..]
        } else {
            return Err(bad("not an RDB (no REDIS or VALKEY magic)"));
        };
        let version = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("the RDB version is not a number"))?;
        Ok(KeyReader {
            r,
            version,
            db: 0,
            rec: None,
            functions: 0,
            done: false,
        })
    }

    /// The RDB format version.
    pub fn version(&self) -> u16 {
        self.version
    }

    fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        (&mut self.r).take(n as u64).read_to_end(&mut buf)?;
        if buf.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the RDB ends in the middle of a value",
            ));
        }
        if let Some(rec) = self.rec.as_mut() {
            rec.extend_from_slice(&buf);
        }
        Ok(buf)
    }

    fn byte(&mut self) -> io::Result<u8> {
        Ok(self.exact(1)?[0])
    }

    /// A length, or the encoding of a special string (`Err` side: the
    /// encoding number).
    fn length(&mut self) -> io::Result<Result<u64, u8>> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Ok(u64::from(b & 0x3f)),
            1 => Ok((u64::from(b & 0x3f) << 8) | u64::from(self.byte()?)),
            2 => match b {
                0x80 => {
                    let v = self.exact(4)?;
                    Ok(u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]])))
                }
                0x81 => {
                    let v = self.exact(8)?;
                    Ok(u64::from_be_bytes([
                        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                    ]))
                }
                _ => return Err(bad(format!("unknown length encoding {b:#x}"))),
            },
            _ => Err(b & 0x3f),
        })
    }

    fn len(&mut self) -> io::Result<u64> {
        match self.length()? {
            Ok(n) => Ok(n),
            Err(e) => Err(bad(format!("a length where a string encoding {e} is"))),
        }
    }

    /// A string (a key, an aux field): raw, an encoded integer or
    /// LZF-compressed, decoded.
    fn string(&mut self) -> io::Result<Vec<u8>> {
        self.string_as(true)
    }

    /// A string inside a value: passed over, never decoded.
    fn skip_string(&mut self) -> io::Result<()> {
        self.string_as(false).map(drop)
    }

    fn string_as(&mut self, decode: bool) -> io::Result<Vec<u8>> {
        match self.length()? {
            Ok(n) => self.sized(n),
            Err(0) => Ok(i64::from(self.byte()? as i8).to_string().into_bytes()),
            Err(1) => {
                let v = self.exact(2)?;
                Ok(i64::from(i16::from_le_bytes([v[0], v[1]]))
                    .to_string()
                    .into_bytes())
            }
            Err(2) => {
                let v = self.exact(4)?;
                Ok(i64::from(i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
                    .to_string()
                    .into_bytes())
            }
            Err(3) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let data = self.sized(clen)?;
                if !decode {
                    return Ok(Vec::new());
                }
                if ulen > 1 << 32 {
                    return Err(bad(format!("an LZF string of {ulen} bytes")));
                }
                lzf_decompress(&data, ulen as usize)
                    .ok_or_else(|| bad("an LZF string does not decompress"))
            }
            Err(e) => Err(bad(format!("unknown string encoding {e}"))),
        }
    }

    fn sized(&mut self, n: u64) -> io::Result<Vec<u8>> {
        // A length past what any value can be is damage, not an allocation.
        if n > 1 << 36 {
            return Err(bad(format!("a {n}-byte string")));
        }
        self.exact(n as usize)
    }

    fn skip_strings(&mut self, n: u64) -> io::Result<()> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }

    /// The old zset encoding's score: a length byte and ASCII, or 253–255.
    fn double_string(&mut self) -> io::Result<()> {
        let n = self.byte()?;
        if n < 253 {
            self.exact(usize::from(n))?;
        }
        Ok(())
    }

    fn value(&mut self, kind: u8) -> io::Result<()> {
        match kind {
            0 => self.skip_string()?,
            1 | 2 => {
                let n = self.len()?;
                self.skip_strings(n)?;
            }
            3 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    self.double_string()?;
                }
            }
            4 => {
                let n = self.len()?;
                self.skip_strings(n.saturating_mul(2))?;
            }
            5 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    self.exact(8)?;
                }
            }
            9..=13 | 16 | 17 | 20 => self.skip_string()?,
            14 => {
                let n = self.len()?;
                self.skip_strings(n)?;
            }
            18 => {
                for _ in 0..self.len()? {
                    self.len()?; // container: plain or packed
                    self.skip_string()?;
                }
            }
            15 | 19 | 21 => self.stream(kind)?,
            6 | 7 => return Err(bad("a module value (restore it with the module loaded, from the dump.rdb)")),
            22..=25 => {
                return Err(bad("a hash with field expirations (Redis 7.4+), which this lifeboat cannot carry key by key yet"))
            }
            k => return Err(bad(format!("unknown value type {k}"))),
        }
        Ok(())
    }

    fn stream(&mut self, kind: u8) -> io::Result<()> {
        let listpacks = self.len()?;
        self.skip_strings(listpacks.saturating_mul(2))?; // master ID, listpack
        self.len()?; // length
        self.len()?; // last id: ms
        self.len()?; // last id: seq
        if kind >= 19 {
            for _ in 0..5 {
                self.len()?; // first id, max deleted id, entries added
            }
        }
        for _ in 0..self.len()? {
            self.skip_string()?; // group name
            self.len()?; // last id: ms
            self.len()?; // last id: seq
            if kind >= 19 {
                self.len()?; // entries read
            }
            for _ in 0..self.len()? {
                self.exact(16 + 8)?; // ID, delivery time
                self.len()?; // delivery count
            }
            for _ in 0..self.len()? {
                self.skip_string()?; // consumer name
                self.exact(8)?; // seen time
                if kind >= 21 {
                    self.exact(8)?; // active time
                }
                let pel = self.len()?;
                for _ in 0..pel {
                    self.exact(16)?;
                }
            }
        }
        Ok(())
    }

    /// The next key, or `None` at the end of the RDB.
    pub fn next_key(&mut self) -> io::Result<Option<Key>> {
        let mut expire_ms = None;
        while !self.done {
            let op = self.byte()?;
            match op {
                0xff => self.done = true,
                0xfe => self.db = self.len()?,
                0xfb => {
                    self.len()?;
                    self.len()?;
                }
                0xfa => {
                    self.string()?;
                    self.string()?;
                }
                0xfc => {
                    let v = self.exact(8)?;
                    expire_ms = Some(i64::from_le_bytes([
                        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                    ]));
                }
                0xfd => {
                    let v = self.exact(4)?;
                    expire_ms =
                        Some(i64::from(u32::from_le_bytes([v[0], v[1], v[2], v[3]])) * 1000);
                }
                0xf8 => {
                    self.len()?;
                }
                0xf9 => {
                    self.byte()?;
                }
                0xf5 | 0xf6 => {
                    // A function library: its code as a string.
                    if op == 0xf6 {
                        self.string()?;
                    }
                    self.string()?;
                    self.functions += 1;
                }
                0xf4 => {
                    for _ in 0..3 {
                        self.len()?;
                    }
                }
                0xf7 => {
                    // Module auxiliary data: module id, when, then opcodes to EOF.
                    self.len()?;
                    self.len()?;
                    self.module_opcodes()?;
                }
                kind => {
                    let key = self.string()?;
                    self.rec = Some(vec![kind]);
                    let read = self.value(kind);
                    let mut payload = self.rec.take().unwrap_or_default();
                    read.map_err(|e| bad(format!("key {:?}: {e}", String::from_utf8_lossy(&key))))?;
                    payload.extend_from_slice(&self.version.to_le_bytes());
                    let crc = CRC64.checksum(&payload);
                    payload.extend_from_slice(&crc.to_le_bytes());
                    return Ok(Some(Key {
                        db: self.db,
                        key,
                        expire_ms,
                        payload,
                    }));
                }
            }
        }
        Ok(None)
    }

    fn module_opcodes(&mut self) -> io::Result<()> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => {
                    self.exact(4)?;
                }
                4 => {
                    self.exact(8)?;
                }
                5 => self.skip_string()?,
                o => return Err(bad(format!("unknown module opcode {o}"))),
            }
        }
    }
}

/// LZF decompression (liblzf's format, as Redis writes it); `None` when the
/// input is damaged.
fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(input.get(i..i + n)?);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_come_with_their_db_expiry_and_a_checked_payload() {
        let mut d = b"REDIS0010".to_vec();
        d.extend_from_slice(&[0xfa, 0x03, b'k', b'e', b'y', 0x01, b'v']); // aux
        d.extend_from_slice(&[0xfe, 0x02, 0xfb, 0x01, 0x01]); // db 2, resizedb
        d.extend_from_slice(&[0xfc]);
        d.extend_from_slice(&1_900_000_000_000i64.to_le_bytes());
        d.extend_from_slice(&[0x00, 0x01, b'a', 0x02, b'h', b'i']); // "a" = "hi"
        d.extend_from_slice(&[0x02, 0x01, b's', 0x02, 0x01, b'x', 0xc0, 0x07]); // set {x, 7}
        d.push(0xff);
        let mut r = KeyReader::new(d.as_slice()).unwrap();
        let a = r.next_key().unwrap().unwrap();
        assert_eq!(
            (a.db, a.key.as_slice(), a.expire_ms),
            (2, &b"a"[..], Some(1_900_000_000_000))
        );
        assert_eq!(&a.payload[..4], &[0x00, 0x02, b'h', b'i']);
        assert_eq!(&a.payload[4..6], &10u16.to_le_bytes());
        assert_eq!(
            CRC64.checksum(&a.payload[..6]).to_le_bytes(),
            a.payload[6..]
        );
        let s = r.next_key().unwrap().unwrap();
        assert_eq!((s.key.as_slice(), s.expire_ms), (&b"s"[..], None));
        assert_eq!(&s.payload[..6], &[0x02, 0x02, 0x01, b'x', 0xc0, 0x07]);
        assert!(r.next_key().unwrap().is_none());
    }

    #[test]
    fn lzf_round_trips_what_redis_writes() {
        // "aaaaaaaaaa" as liblzf compresses it: literal 'a', then a back
        // reference of length 9 at distance 1.
        assert_eq!(
            lzf_decompress(&[0x00, b'a', 0xe0, 0x00, 0x00], 10).unwrap(),
            b"aaaaaaaaaa"
        );
        assert!(lzf_decompress(&[0xe0, 0x00, 0x05], 10).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut wire = b"REDIS0010".to_vec();
            wire.extend_from_slice(&data);
            if let Ok(mut r) = KeyReader::new(wire.as_slice()) {
                for _ in 0..1000 {
                    match r.next_key() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            let _ = lzf_decompress(&data, 500);
        }
    }
}
