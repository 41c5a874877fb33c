//! Byte layouts of stored objects. `docs/format.md` is the prose version of this
//! file; change both together.
//!
//! Every object but a key slot is an *envelope*:
//!
//! ```text
//! magic[4] | version u16 LE | key epoch u32 LE | nonce[12] | ciphertext | tag[16]
//! ```
//!
//! sealed with AES-256-GCM, the first 10 bytes as associated data, so the framing
//! cannot be altered either. Epoch 0 means the master key (config, keyring);
//! other epochs name a data key of the keyring. The plaintext starts with one
//! byte naming its compression (0 none, 1 zstd).

use lifeboat_crypto::{Key, Keyring, NONCE_LEN, SEAL_OVERHEAD};
use lifeboat_types::{ChunkId, PackId};

use crate::error::{RepoError, Result};

/// Magic of the repository config object.
pub const MAGIC_CONFIG: &[u8; 4] = b"LBCF";
/// Magic of the keyring object.
pub const MAGIC_KEYRING: &[u8; 4] = b"LBKR";
/// Magic of index objects.
pub const MAGIC_INDEX: &[u8; 4] = b"LBIX";
/// Magic of snapshot objects.
pub const MAGIC_SNAPSHOT: &[u8; 4] = b"LBSN";
/// Magic of pack objects.
pub const MAGIC_PACK: &[u8; 4] = b"LBPK";
/// Magic of named objects (WAL segments and other files known by name).
pub const MAGIC_NAMED: &[u8; 4] = b"LBNO";
/// Magic of key slot objects (stored in clear after it).
pub const MAGIC_KEYSLOT: &[u8; 4] = b"LBKS";
/// Magic of a session record.
pub const MAGIC_SESSION: &[u8; 4] = b"LBSE";
/// Magic of a prune's mark.
pub const MAGIC_MARK: &[u8; 4] = b"LBMK";
/// Magic of a hold on a snapshot.
pub const MAGIC_HOLD: &[u8; 4] = b"LBHD";
/// Magic of a job record.
pub const MAGIC_JOB: &[u8; 4] = b"LBJB";
/// Magic of a replica's record of deletions seen on its primary.
pub const MAGIC_DELETION: &[u8; 4] = b"LBDL";
/// Magic of an audit log record.
pub const MAGIC_AUDIT: &[u8; 4] = b"LBAU";
/// Magic of an erasure request.
pub const MAGIC_ERASURE: &[u8; 4] = b"LBER";
/// Magic of a drill record.
pub const MAGIC_DRILL: &[u8; 4] = b"LBDR";

/// The format version this build writes and reads, for every object kind
/// but the config.
pub const FORMAT_VERSION: u16 = 1;
/// The config's envelope version since prune (issue #14): 2 says "every
/// writer of this repository records backup sessions and honours prune
/// marks", so builds that predate prune (which read version 1 only) refuse
/// to open it instead of deduplicating against packs a prune deletes.
/// Version 1 configs are still read; the first prune rewrites them as 2.
pub const CONFIG_VERSION: u16 = 2;

const HEADER_LEN: usize = 10;
const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

fn kind_name(magic: &[u8; 4]) -> &'static str {
    match magic {
        MAGIC_CONFIG => "config object",
        MAGIC_KEYRING => "keyring",
        MAGIC_INDEX => "index object",
        MAGIC_SNAPSHOT => "snapshot",
        MAGIC_PACK => "pack",
        MAGIC_KEYSLOT => "key slot",
        MAGIC_NAMED => "named object",
        MAGIC_SESSION => "session record",
        MAGIC_MARK => "prune mark",
        MAGIC_HOLD => "hold",
        MAGIC_JOB => "job record",
        MAGIC_DELETION => "deletion record",
        MAGIC_AUDIT => "audit record",
        MAGIC_ERASURE => "erasure request",
        MAGIC_DRILL => "drill record",
        _ => "object",
    }
}

fn corrupt(key: &str, reason: impl Into<String>) -> RepoError {
    RepoError::Corrupt {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Checks magic and version of a stored object's first bytes; returns the epoch.
pub fn check_header(key: &str, magic: &[u8; 4], bytes: &[u8]) -> Result<u32> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != magic {
        return Err(corrupt(
            key,
            format!("not a lifeboat {} (wrong magic bytes)", kind_name(magic)),
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let supported = if magic == MAGIC_CONFIG {
        CONFIG_VERSION
    } else {
        FORMAT_VERSION
    };
    if version == 0 || version > supported {
        return Err(RepoError::UnknownVersion {
            key: key.to_string(),
            what: kind_name(magic),
            found: version,
            supported,
        });
    }
    Ok(u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]))
}

/// The envelope version of a stored object's first bytes (checked first
/// with [`check_header`]).
pub fn header_version(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[4], bytes[5]])
}

fn header(magic: &[u8; 4], epoch: u32) -> [u8; HEADER_LEN] {
    let version = if magic == MAGIC_CONFIG {
        CONFIG_VERSION
    } else {
        FORMAT_VERSION
    };
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(magic);
    h[4..6].copy_from_slice(&version.to_le_bytes());
    h[6..10].copy_from_slice(&epoch.to_le_bytes());
    h
}

thread_local! {
    /// One zstd context per thread and level: creating one per chunk costs
    /// more than compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress_into(
    data: &[u8],
    level: i32,
    out: &mut std::io::Cursor<&mut Vec<u8>>,
) -> std::io::Result<usize> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress_to_buffer(data, out),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    with_decompressor(|d| d.decompress(data, capacity))
}

/// Compresses `data` with zstd when that makes it smaller; the first byte of
/// the result names the codec.
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    compress_append(data, level, &mut out);
    out
}

/// Appends what [`compress`] returns to `out`, compressing straight into it.
pub fn compress_append(data: &[u8], level: i32, out: &mut Vec<u8>) {
    let start = out.len();
    if level > 0 {
        out.push(CODEC_ZSTD);
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position((start + 1) as u64);
        if let Ok(n) = zstd_compress_into(data, level, &mut cursor) {
            // Keep the compressed form only when it saves at least 1/32: below that
            // decompression costs more than the bytes are worth.
            if n + data.len() / 32 < data.len() {
                return;
            }
        }
        out.truncate(start);
    }
    out.reserve(data.len() + 1);
    out.push(CODEC_NONE);
    out.extend_from_slice(data);
}

/// Reverses [`compress`] for documents whose size is not known in advance
/// (snapshots); the output grows as needed.
pub fn decompress_document(key: &str, data: &[u8]) -> Result<Vec<u8>> {
    match data.split_first() {
        Some((&CODEC_ZSTD, rest)) => zstd::stream::decode_all(rest)
            .map_err(|e| corrupt(key, format!("zstd data does not decompress: {e}"))),
        _ => decompress(key, data, data.len()),
    }
}

/// Reverses [`compress`]; `raw_len` bounds the output and is allocated up front.
pub fn decompress(key: &str, data: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    match data.split_first() {
        Some((&CODEC_NONE, rest)) => Ok(rest.to_vec()),
        Some((&CODEC_ZSTD, rest)) => zstd_decompress(rest, raw_len)
            .map_err(|e| corrupt(key, format!("zstd data does not decompress: {e}"))),
        Some((codec, _)) => Err(corrupt(key, format!("unknown compression codec {codec}"))),
        None => Err(corrupt(key, "empty payload")),
    }
}

/// Seals `body` into an envelope.
pub fn seal_object(magic: &[u8; 4], epoch: u32, key: &Key, body: &[u8]) -> Result<Vec<u8>> {
    let h = header(magic, epoch);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&h);
    key.seal_into(&h, body, &mut out)?;
    Ok(out)
}

/// Opens an envelope: checks magic and version, picks the key of its epoch
/// (`master` for epoch 0), authenticates and decrypts.
pub fn open_object(
    name: &str,
    magic: &[u8; 4],
    bytes: &[u8],
    master: &Key,
    keyring: Option<&Keyring>,
) -> Result<Vec<u8>> {
    let epoch = check_header(name, magic, bytes)?;
    let key = if epoch == 0 {
        master
    } else {
        keyring.and_then(|k| k.epoch(epoch)).ok_or_else(|| {
            corrupt(
                name,
                format!("sealed with key epoch {epoch}, which the keyring does not have"),
            )
        })?
    };
    key.open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
        .map_err(|_| {
            corrupt(
                name,
                "authentication failed (the bytes were altered or truncated)",
            )
        })
}

/// Where a chunk lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Offset of its sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub len: u32,
    /// Length of the chunk's plaintext.
    pub raw_len: u32,
}

const ENTRY_LEN: usize = 32 + 4 + 4 + 4;

fn put_entry(out: &mut Vec<u8>, e: &BlobEntry) {
    out.extend_from_slice(e.id.as_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.len.to_le_bytes());
    out.extend_from_slice(&e.raw_len.to_le_bytes());
}

/// A little-endian reader over a byte slice that reports truncation as damage.
struct Cursor<'a> {
    key: &'a str,
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(corrupt(self.key, "truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn id(&mut self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.take(32)?);
        Ok(out)
    }
    fn entry(&mut self) -> Result<BlobEntry> {
        Ok(BlobEntry {
            id: ChunkId(self.id()?),
            offset: self.u32()?,
            len: self.u32()?,
            raw_len: self.u32()?,
        })
    }
}

/// Builds a pack in memory: a clear header, sealed blobs, a sealed table of
/// contents, and the table's length in the last four bytes.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
    epoch: u32,
}

impl PackBuilder {
    /// An empty pack whose blobs are sealed with epoch `epoch`.
    pub fn new(epoch: u32, capacity: usize) -> Self {
        Self::with_buffer(epoch, Vec::with_capacity(capacity))
    }

    /// An empty pack built in a recycled buffer (its contents are discarded).
    pub fn with_buffer(epoch: u32, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&header(MAGIC_PACK, epoch));
        PackBuilder {
            buf,
            entries: Vec::new(),
            epoch,
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key epoch of this pack.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Compresses and seals a chunk straight into the pack: zstd writes into
    /// the pack buffer and AES-GCM encrypts there, so the payload is never
    /// copied. Layout and result are those of [`compress`] then [`Key::seal_into`].
    pub fn push_chunk(&mut self, key: &Key, id: ChunkId, data: &[u8], level: i32) -> Result<()> {
        let offset = u32::try_from(self.buf.len())
            .map_err(|_| RepoError::Failed("pack larger than 4 GiB".into()))?;
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; NONCE_LEN]);
        compress_append(data, level, &mut self.buf);
        key.seal_appended(id.as_bytes(), &mut self.buf, start)?;
        let len = u32::try_from(self.buf.len() - start)
            .map_err(|_| RepoError::Failed("blob larger than 4 GiB".into()))?;
        self.entries.push(BlobEntry {
            id,
            offset,
            len,
            raw_len: data.len() as u32,
        });
        Ok(())
    }

    /// Appends a blob sealed before, as it was stored in another pack of
    /// the same key epoch (prune's repack: a blob is sealed with its chunk id
    /// as associated data, not its pack, so it moves as it is).
    pub fn push_sealed(&mut self, entry: &BlobEntry, sealed: &[u8]) -> Result<()> {
        let offset = u32::try_from(self.buf.len())
            .map_err(|_| RepoError::Failed("pack larger than 4 GiB".into()))?;
        self.buf.extend_from_slice(sealed);
        self.entries.push(BlobEntry {
            offset,
            len: sealed.len() as u32,
            ..*entry
        });
        Ok(())
    }

    /// Seals the table of contents and returns the pack's id, bytes and entries.
    pub fn finish(mut self, key: &Key) -> Result<(PackId, Vec<u8>, Vec<BlobEntry>)> {
        let mut toc = Vec::with_capacity(4 + self.entries.len() * ENTRY_LEN);
        toc.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            put_entry(&mut toc, e);
        }
        let start = self.buf.len();
        let aad: [u8; HEADER_LEN] = header(MAGIC_PACK, self.epoch);
        key.seal_into(&aad, &toc, &mut self.buf)?;
        let toc_len = (self.buf.len() - start) as u32;
        self.buf.extend_from_slice(&toc_len.to_le_bytes());
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        Ok((id, self.buf, self.entries))
    }
}

/// Opens a blob and checks that its plaintext hashes to its id (a copying
/// [`open_blob_in_place`]).
pub fn open_blob(
    pack_key: &str,
    key: &Key,
    keyring: &Keyring,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let mut copy = sealed.to_vec();
    let mut scratch = Vec::new();
    open_blob_in_place(pack_key, key, keyring, entry, &mut copy, &mut scratch).map(<[u8]>::to_vec)
}

/// Opens a blob where it lies in a read buffer, without allocating: decrypts
/// `sealed` in place and, when the payload is compressed, decompresses it into
/// `scratch` (reused between calls). Checks that the plaintext hashes to the
/// blob's id and returns it. The restore path's hot loop.
pub fn open_blob_in_place<'a>(
    pack_key: &str,
    key: &Key,
    keyring: &Keyring,
    entry: &BlobEntry,
    sealed: &'a mut [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let raw_len = entry.raw_len as usize;
    let data: &[u8] = match decrypt_payload(pack_key, key, entry, sealed)? {
        (CODEC_NONE, rest) => rest,
        (_, rest) => {
            scratch.clear();
            scratch.reserve(raw_len);
            with_decompressor(|d| d.decompress_to_buffer(rest, scratch))
                .map_err(|e| corrupt(pack_key, format!("zstd data does not decompress: {e}")))?;
            scratch.as_slice()
        }
    };
    check_plain(pack_key, keyring, entry, data)?;
    Ok(data)
}

/// Where [`open_blob_to`] left a blob's plaintext.
pub enum Opened<'a> {
    /// Stored uncompressed: the plaintext is in the decrypted `sealed` buffer.
    InPlace(&'a [u8]),
    /// Decompressed into the first `raw_len` bytes of `out`.
    Written,
}

/// Like [`open_blob_in_place`], but decompresses into `out` (at least
/// `raw_len` bytes), wherever the caller wants the plaintext to end up, e.g.
/// a restore's aligned write buffer. `out` is checked before `Ok` returns,
/// unless `keyring` is `None`: the caller then checks what it makes of the
/// plaintext (a base chunk that a patch completes) against an id of its own;
/// authentication still proves the blob is the one stored under its id.
pub fn open_blob_to<'a>(
    pack_key: &str,
    key: &Key,
    keyring: Option<&Keyring>,
    entry: &BlobEntry,
    sealed: &'a mut [u8],
    out: &mut [u8],
) -> Result<Opened<'a>> {
    let raw_len = entry.raw_len as usize;
    let check = |data: &[u8]| match keyring {
        Some(k) => check_plain(pack_key, k, entry, data),
        None if data.len() == raw_len => Ok(()),
        None => Err(corrupt(
            pack_key,
            format!("chunk {} has the wrong length", entry.id.short()),
        )),
    };
    match decrypt_payload(pack_key, key, entry, sealed)? {
        (CODEC_NONE, rest) => {
            check(rest)?;
            Ok(Opened::InPlace(rest))
        }
        (_, rest) => {
            let room = out.len();
            let out = out.get_mut(..raw_len).ok_or_else(|| {
                RepoError::Failed(format!(
                    "a {raw_len}-byte chunk was asked into a {room}-byte buffer"
                ))
            })?;
            let n = with_decompressor(|d| d.decompress_to_buffer(rest, out))
                .map_err(|e| corrupt(pack_key, format!("zstd data does not decompress: {e}")))?;
            check(&out[..n])?;
            Ok(Opened::Written)
        }
    }
}

/// Decrypts a blob in place; returns its codec and payload.
fn decrypt_payload<'a>(
    pack_key: &str,
    key: &Key,
    entry: &BlobEntry,
    sealed: &'a mut [u8],
) -> Result<(u8, &'a [u8])> {
    let payload = key
        .open_in_place(entry.id.as_bytes(), sealed)
        .map_err(|_| {
            corrupt(
                pack_key,
                format!(
                    "chunk {} at offset {} fails authentication",
                    entry.id.short(),
                    entry.offset
                ),
            )
        })?;
    match payload.split_first() {
        Some((&codec @ (CODEC_NONE | CODEC_ZSTD), rest)) => Ok((codec, rest)),
        Some((codec, _)) => Err(corrupt(
            pack_key,
            format!("unknown compression codec {codec}"),
        )),
        None => Err(corrupt(pack_key, "empty payload")),
    }
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => f(d),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// Checks a blob's plaintext: its length and that it hashes to its id.
fn check_plain(pack_key: &str, keyring: &Keyring, entry: &BlobEntry, data: &[u8]) -> Result<()> {
    if data.len() != entry.raw_len as usize || keyring.chunk_id(data) != entry.id {
        return Err(corrupt(
            pack_key,
            format!("chunk {} does not match its id", entry.id.short()),
        ));
    }
    Ok(())
}

/// Reads a pack's sealed table of contents from the whole pack's bytes.
pub fn read_pack_toc(key_name: &str, bytes: &[u8], keyring: &Keyring) -> Result<Vec<BlobEntry>> {
    check_header(key_name, MAGIC_PACK, bytes)?;
    if bytes.len() < HEADER_LEN + 4 {
        return Err(corrupt(key_name, "truncated"));
    }
    let n = bytes.len();
    let toc_len = pack_toc_len(key_name, &bytes[n - 4..], n as u64)? as usize;
    read_pack_toc_parts(
        key_name,
        &bytes[..HEADER_LEN],
        &bytes[n - 4 - toc_len..n - 4],
        keyring,
    )
}

/// The length of a pack's sealed table of contents, from its last four
/// bytes, checked against the pack's size.
pub fn pack_toc_len(key_name: &str, last4: &[u8], pack_size: u64) -> Result<u64> {
    let len = last4
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| corrupt(key_name, "truncated"))?;
    if u64::from(len) + 4 + HEADER_LEN as u64 > pack_size {
        return Err(corrupt(key_name, "table of contents length out of range"));
    }
    Ok(u64::from(len))
}

/// The length of the clear header every stored object starts with.
pub const PACK_HEADER_LEN: usize = HEADER_LEN;

/// A pack's table of contents from its pieces, read apart: the 10-byte
/// header (the associated data of the seal) and the sealed table.
pub fn read_pack_toc_parts(
    key_name: &str,
    header: &[u8],
    sealed_toc: &[u8],
    keyring: &Keyring,
) -> Result<Vec<BlobEntry>> {
    let epoch = check_header(key_name, MAGIC_PACK, header)?;
    let key = keyring
        .epoch(epoch)
        .ok_or_else(|| corrupt(key_name, format!("unknown key epoch {epoch}")))?;
    let toc = key
        .open(&header[..HEADER_LEN], sealed_toc)
        .map_err(|_| corrupt(key_name, "table of contents fails authentication"))?;
    let mut c = Cursor {
        key: key_name,
        bytes: &toc,
    };
    let count = c.u32()? as usize;
    if count > toc.len() / ENTRY_LEN {
        return Err(corrupt(key_name, "table of contents count out of range"));
    }
    (0..count).map(|_| c.entry()).collect()
}

/// One pack's entries, as an index object lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack.
    pub pack: PackId,
    /// The key epoch its blobs are sealed with.
    pub epoch: u32,
    /// Its blobs.
    pub entries: Vec<BlobEntry>,
}

/// Serialises an index body: `u32 pack count`, then per pack its id, `u32 key
/// epoch`, `u32 entry count` and the entries (`chunk id[32] | offset u32 | len u32 | raw_len u32`).
pub fn encode_index(packs: &[IndexedPack]) -> Vec<u8> {
    let total: usize = packs.iter().map(|p| 40 + p.entries.len() * ENTRY_LEN).sum();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(p.pack.as_bytes());
        out.extend_from_slice(&p.epoch.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            put_entry(&mut out, e);
        }
    }
    out
}

/// Parses an index body made by [`encode_index`].
pub fn decode_index(key: &str, bytes: &[u8]) -> Result<Vec<IndexedPack>> {
    let mut c = Cursor { key, bytes };
    let packs = c.u32()? as usize;
    if packs > bytes.len() / 40 {
        return Err(corrupt(key, "pack count out of range"));
    }
    let mut out = Vec::with_capacity(packs);
    for _ in 0..packs {
        let pack = PackId(c.id()?);
        let epoch = c.u32()?;
        let n = c.u32()? as usize;
        if n > c.bytes.len() / ENTRY_LEN {
            return Err(corrupt(key, "entry count out of range"));
        }
        let entries = (0..n).map(|_| c.entry()).collect::<Result<Vec<_>>>()?;
        out.push(IndexedPack {
            pack,
            epoch,
            entries,
        });
    }
    if !c.bytes.is_empty() {
        return Err(corrupt(key, "trailing bytes"));
    }
    Ok(out)
}

/// The header of a named object's body: its name, the BLAKE3 hash and length
/// of its content. The compressed content follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedHeader {
    /// The name the caller gave.
    pub name: String,
    /// BLAKE3 of the content.
    pub hash: [u8; 32],
    /// Length of the content.
    pub len: u64,
}

/// Serialises a named object's body: `u16 name length | name | hash[32] |
/// u64 length | compressed content`.
pub fn encode_named(name: &str, content: &[u8], level: i32) -> Vec<u8> {
    // WAL is pushed one file per process, and the push is on the archiver's
    // critical path: hash and compress on both cores at once.
    let (hash, payload) = std::thread::scope(|s| {
        let hash = s.spawn(|| blake3::hash(content));
        let payload = compress_halves(content, level);
        (hash.join().expect("the hashing thread panicked"), payload)
    });
    let mut out = Vec::with_capacity(payload.len() + name.len() + 64);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(&(content.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Named objects this large are compressed as two zstd frames, one per
/// core; a zstd stream of concatenated frames decodes as one.
const SPLIT_AT: usize = 4 << 20;

/// [`compress_append`] into a new buffer, in two halves on two threads when
/// `data` is large.
fn compress_halves(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    if level <= 0 || data.len() < SPLIT_AT {
        compress_append(data, level, &mut out);
        return out;
    }
    let (a, b) = data.split_at(data.len() / 2);
    let (first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| zstd::bulk::compress(b, level));
        (zstd::bulk::compress(a, level), second.join())
    });
    match (first, second) {
        (Ok(x), Ok(Ok(y))) if x.len() + y.len() + data.len() / 32 < data.len() => {
            out.reserve(1 + x.len() + y.len());
            out.push(CODEC_ZSTD);
            out.extend_from_slice(&x);
            out.extend_from_slice(&y);
        }
        _ => {
            out.reserve(data.len() + 1);
            out.push(CODEC_NONE);
            out.extend_from_slice(data);
        }
    }
    out
}

/// Parses the header of a named object's body; returns it and the offset of
/// the compressed content.
pub fn decode_named_header(key: &str, body: &[u8]) -> Result<(NamedHeader, usize)> {
    let mut c = Cursor { key, bytes: body };
    let n = c.take(2)?;
    let n = u16::from_le_bytes([n[0], n[1]]) as usize;
    let name = std::str::from_utf8(c.take(n)?)
        .map_err(|_| corrupt(key, "the name is not UTF-8"))?
        .to_string();
    let hash = c.id()?;
    let l = c.take(8)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(l);
    let header = NamedHeader {
        name,
        hash,
        len: u64::from_le_bytes(len),
    };
    Ok((header, body.len() - c.bytes.len()))
}

/// Opens a named object's body: checks the name, decompresses and checks the
/// content against its hash.
pub fn decode_named(key: &str, body: &[u8], expect_name: &str) -> Result<Vec<u8>> {
    let (h, at) = decode_named_header(key, body)?;
    if h.name != expect_name {
        return Err(corrupt(
            key,
            format!("holds {:?} where {expect_name:?} was expected", h.name),
        ));
    }
    let len = usize::try_from(h.len).map_err(|_| corrupt(key, "length out of range"))?;
    // WAL segments are at most 1 GiB; a header claiming more is damaged
    // (and must not make us allocate it).
    if len > 1 << 31 {
        return Err(corrupt(key, "length out of range"));
    }
    let data = decompress(key, &body[at..], len)?;
    if data.len() != len || blake3::hash(&data).as_bytes() != &h.hash {
        return Err(corrupt(key, "the content does not match its hash"));
    }
    Ok(data)
}

/// The version byte a page patch starts with.
const PATCH_VERSION: u8 = 1;
const PATCH_HEADER: usize = 1 + 4 + 4;

/// Serialises a page patch, the plaintext of a chunk that replaces some pages
/// of a base chunk: `version u8 (1) | page size u32 | count u32 | count ×
/// page index u32 (ascending) | count × page bytes`, integers little-endian.
/// `pages` are the indices in `piece`, whose pages are copied.
pub fn encode_patch(piece: &[u8], page: usize, pages: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PATCH_HEADER + pages.len() * (4 + page));
    out.push(PATCH_VERSION);
    out.extend_from_slice(&(page as u32).to_le_bytes());
    out.extend_from_slice(&(pages.len() as u32).to_le_bytes());
    for &i in pages {
        out.extend_from_slice(&(i as u32).to_le_bytes());
    }
    for &i in pages {
        out.extend_from_slice(&piece[i * page..(i + 1) * page]);
    }
    out
}

/// Applies a page patch ([`encode_patch`]) to `base`, a copy of the base
/// chunk: its pages replace the base's at their indices. A patch that does
/// not fit the base (another page size, an index past its end, indices out
/// of order, a wrong length) is damage, reported against `key`.
pub fn apply_patch(key: &str, patch: &[u8], base: &mut [u8]) -> Result<()> {
    let mut c = Cursor { key, bytes: patch };
    let version = c.take(1)?[0];
    if version != PATCH_VERSION {
        return Err(corrupt(
            key,
            format!("page patch of unknown version {version}"),
        ));
    }
    let page = c.u32()? as usize;
    let count = c.u32()? as usize;
    if page == 0 || !base.len().is_multiple_of(page) {
        return Err(corrupt(
            key,
            format!(
                "page patch of {page}-byte pages for a {}-byte piece",
                base.len()
            ),
        ));
    }
    let want = count
        .checked_mul(4 + page)
        .filter(|&n| n == c.bytes.len())
        .ok_or_else(|| corrupt(key, "page patch length does not match its page count"))?;
    let (indices, pages) = c.bytes.split_at(want / (4 + page) * 4);
    let mut last = None;
    for (k, i) in indices.chunks_exact(4).enumerate() {
        let i = u32::from_le_bytes([i[0], i[1], i[2], i[3]]) as usize;
        if last.is_some_and(|l| i <= l) || (i + 1) * page > base.len() {
            return Err(corrupt(
                key,
                format!("page patch names page {i} out of order or range"),
            ));
        }
        last = Some(i);
        base[i * page..(i + 1) * page].copy_from_slice(&pages[k * page..(k + 1) * page]);
    }
    Ok(())
}

/// The object key of a pack.
pub fn pack_key(id: &PackId) -> String {
    crate::keys::ObjectKey::Pack(*id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::generate(0).unwrap()
    }

    #[test]
    fn unknown_version_names_both_versions() {
        let master = Key::generate().unwrap();
        let mut obj = seal_object(MAGIC_SNAPSHOT, 0, &master, b"x").unwrap();
        obj[4] = 9;
        let err = open_object("snapshots/ab", MAGIC_SNAPSHOT, &obj, &master, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("version 9") && msg.contains("version 1"),
            "{msg}"
        );
        assert!(msg.contains("snapshots/ab"), "{msg}");
    }

    #[test]
    fn named_objects_round_trip_and_check_their_name() {
        let content = b"wal segment ".repeat(1000);
        let body = encode_named("000000010000000000000003", &content, 1);
        assert_eq!(
            decode_named("k", &body, "000000010000000000000003").unwrap(),
            content
        );
        let err = decode_named("k", &body, "000000010000000000000004").unwrap_err();
        assert!(err.to_string().contains("was expected"), "{err}");
        // A segment-sized file is two zstd frames; it decodes as one stream.
        let mut big = Vec::with_capacity(16 << 20);
        let mut x = 0x9e37_79b9_u32;
        while big.len() < 16 << 20 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let word = x.to_le_bytes();
            big.extend_from_slice(if x.is_multiple_of(3) {
                &word[..]
            } else {
                b"wal record "
            });
        }
        let body = encode_named("000000010000000000000005", &big, 1);
        assert!(body.len() < big.len() / 2, "compressed: {}", body.len());
        assert_eq!(
            decode_named("k", &body, "000000010000000000000005").unwrap(),
            big
        );
        // Incompressible: stored raw.
        let noise: Vec<u8> = (0..(5u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let body = encode_named("n", &noise, 1);
        assert_eq!(decode_named("k", &body, "n").unwrap(), noise);
    }

    #[test]
    fn envelope_detects_tampering_anywhere() {
        let master = Key::generate().unwrap();
        let obj = seal_object(MAGIC_CONFIG, 0, &master, b"settings").unwrap();
        assert_eq!(
            open_object("config", MAGIC_CONFIG, &obj, &master, None).unwrap(),
            b"settings"
        );
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x40;
            assert!(
                open_object("config", MAGIC_CONFIG, &bad, &master, None).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let c = compress(&random, 3);
        assert_eq!(c[0], CODEC_NONE);
        let text = b"abcabcabc".repeat(500);
        let c2 = compress(&text, 3);
        assert_eq!(c2[0], CODEC_ZSTD);
        assert!(c2.len() < text.len() / 10);
        assert_eq!(decompress("k", &c2, text.len()).unwrap(), text);
    }

    #[test]
    fn a_patch_replaces_exactly_its_pages() {
        let base: Vec<u8> = (0..8 * 1024).map(|i| (i / 1024) as u8).collect();
        let mut piece = base.clone();
        piece[2 * 1024..3 * 1024].fill(0xee);
        piece[7 * 1024..].fill(0xdd);
        let patch = encode_patch(&piece, 1024, &[2, 7]);
        let mut rebuilt = base.clone();
        apply_patch("p", &patch, &mut rebuilt).unwrap();
        assert_eq!(rebuilt, piece);
        // The same patch on a piece of another length is refused by name.
        let mut short = vec![0u8; 4 * 1024];
        let err = apply_patch("chunk ab", &patch, &mut short)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk ab") && err.contains("page 7"), "{err}");
    }

    proptest! {
        #[test]
        fn patches_round_trip_and_arbitrary_ones_never_panic(
            pages in proptest::collection::btree_set(0usize..16, 0..16),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let piece: Vec<u8> = (0..16 * 512).map(|i| (i * 7 % 251) as u8).collect();
            let pages: Vec<usize> = pages.into_iter().collect();
            let mut base = vec![0u8; piece.len()];
            apply_patch("p", &encode_patch(&piece, 512, &pages), &mut base).unwrap();
            for i in 0..16 {
                let want = if pages.contains(&i) { &piece[i * 512..(i + 1) * 512] } else { &[0u8; 512][..] };
                prop_assert_eq!(&base[i * 512..(i + 1) * 512], want);
            }
            let mut target = vec![0u8; 4096];
            let _ = apply_patch("p", &junk, &mut target);
        }

        #[test]
        fn chunk_pack_index_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..20), level in 0i32..4) {
            let ring = ring();
            let key = &ring.current().key;
            let mut pack = PackBuilder::new(ring.current().number, 1024);
            let mut ids = Vec::new();
            for c in &chunks {
                let id = ring.chunk_id(c);
                pack.push_chunk(key, id, c, level).unwrap();
                ids.push(id);
            }
            let (pack_id, bytes, entries) = pack.finish(key).unwrap();
            prop_assert_eq!(PackId(*blake3::hash(&bytes).as_bytes()), pack_id);
            prop_assert_eq!(read_pack_toc("p", &bytes, &ring).unwrap(), entries.clone());
            let index = vec![IndexedPack { pack: pack_id, epoch: ring.current().number, entries: entries.clone() }];
            let decoded = decode_index("i", &encode_index(&index)).unwrap();
            prop_assert_eq!(&decoded, &index);
            for (e, c) in decoded[0].entries.iter().zip(&chunks) {
                let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
                prop_assert_eq!(&open_blob("p", key, &ring, e, sealed).unwrap(), c);
                let mut copy = sealed.to_vec();
                let mut scratch = Vec::new();
                prop_assert_eq!(open_blob_in_place("p", key, &ring, e, &mut copy, &mut scratch).unwrap(), &c[..]);
            }
        }

        #[test]
        fn chunker_to_pack_to_index_to_read_restores_the_stream(
            seed in any::<u64>(),
            len in 0usize..200_000,
            fixed in any::<bool>(),
        ) {
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len).map(|i| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                // Every third 4 KiB run is zeros (holes) or text-like (compressible).
                match (i / 4096) % 3 { 0 => 0, 1 => b"abcdefgh"[(x % 8) as usize], _ => x as u8 }
            }).collect();
            let cfg = if fixed {
                lifeboat_chunker::ChunkerConfig::Fixed { size: 16384 }
            } else {
                lifeboat_chunker::ChunkerConfig::Cdc { min: 1024, avg: 4096, max: 16384 }
            };
            let ring = ring();
            let key = &ring.current().key;
            let mut pack = PackBuilder::new(ring.current().number, 1024);
            let mut refs = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for chunk in cfg.chunker(&data[..]).unwrap() {
                let chunk = chunk.unwrap();
                let id = ring.chunk_id(&chunk);
                if seen.insert(id) {
                    pack.push_chunk(key, id, &chunk, 1).unwrap();
                }
                refs.push(id);
            }
            let (pack_id, bytes, entries) = pack.finish(key).unwrap();
            let index = decode_index("i", &encode_index(&[IndexedPack { pack: pack_id, epoch: ring.current().number, entries }])).unwrap();
            let mut mem = crate::index::Index::default();
            mem.add_all(&index);
            let mut out = Vec::with_capacity(len);
            for id in refs {
                let loc = mem.get(&id).unwrap();
                let e = BlobEntry { id, offset: loc.offset, len: loc.len, raw_len: loc.raw_len };
                let sealed = &bytes[loc.offset as usize..(loc.offset + loc.len) as usize];
                out.extend_from_slice(&open_blob("p", key, &ring, &e, sealed).unwrap());
            }
            prop_assert_eq!(out, data);
        }

        #[test]
        fn snapshot_documents_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = serde_json::from_slice::<crate::snapshot::Snapshot>(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let ring = ring();
            let _ = decode_index("i", &bytes);
            let _ = read_pack_toc("p", &bytes, &ring);
            let _ = check_header("x", MAGIC_INDEX, &bytes);
            let _ = decompress("x", &bytes, 1 << 16);
            let _ = decompress_document("x", &bytes);
            let _ = decode_named("x", &bytes, "n");
            let _ = open_object("x", MAGIC_INDEX, &bytes, &ring.current().key, Some(&ring));
        }
    }
}
