//! Snapshots: immutable manifests of one backup.

use std::collections::BTreeMap;

use lifeboat_types::{ChunkId, SnapshotId, Timestamp};
use serde::{Deserialize, Serialize};

/// A piece of an item's content: a chunk and its length, or a hole (zeros that
/// are not stored and are restored as a sparse region).
///
/// Pieces of files cut into pages (PostgreSQL relation files) also carry
/// [`Pages`]: fingerprints of their pages, and possibly a patch, when the
/// piece is stored as an older chunk (its *base*) with some pages replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRef {
    /// The id of the piece's bytes, or `None` for a hole. For a patched piece
    /// this chunk is not stored: its bytes are rebuilt from base and patch,
    /// and checked against this id.
    pub id: Option<ChunkId>,
    /// The length in bytes.
    pub len: u64,
    /// Page fingerprints and the patch, for pieces of paged files.
    pub pages: Option<Box<Pages>>,
}

/// What a piece of a paged file records so the next backup can store only its
/// changed pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pages {
    /// The page size in bytes.
    pub size: u32,
    /// A fingerprint of each page of the base chunk (the piece itself when
    /// it is not patched): see `Keyring::chunk_id_with_pages`.
    pub marks: Vec<u64>,
    /// Set when the piece is its base with some pages replaced.
    pub patch: Option<Patch>,
}

/// A patched piece: a stored base chunk and a stored patch chunk whose pages
/// replace some of the base's (`format::encode_patch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    /// The chunk the piece is built on, stored whole.
    pub base: ChunkId,
    /// The chunk holding the replaced pages.
    pub pages: ChunkId,
}

impl ContentRef {
    /// A stored chunk (or a hole, `None`) of `len` bytes.
    pub fn plain(id: Option<ChunkId>, len: u64) -> Self {
        ContentRef {
            id,
            len,
            pages: None,
        }
    }
    /// The id of the piece's bytes, or `None` for a hole.
    pub fn chunk(&self) -> Option<ChunkId> {
        self.id
    }
    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True for a zero-length piece (never produced by the writer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The patch, when the piece is stored as base and patch.
    pub fn patch(&self) -> Option<Patch> {
        self.pages.as_ref().and_then(|p| p.patch)
    }
    /// The chunk the next backup patches against: the base of a patched
    /// piece, else the piece itself.
    pub fn base(&self) -> Option<ChunkId> {
        self.patch().map(|p| p.base).or(self.id)
    }
    /// The chunks stored for this piece: none for a hole, base and patch for
    /// a patched piece, else its own.
    pub fn stored(&self) -> impl Iterator<Item = ChunkId> {
        let (a, b) = match (self.patch(), self.id) {
            (Some(p), _) => (Some(p.base), Some(p.pages)),
            (None, id) => (id, None),
        };
        a.into_iter().chain(b)
    }
}

// Stored as `[id, len]` (the only form of snapshot version 1) or, with pages,
// `[id, len, {"size": …, "marks": "<hex, 8 bytes a page>", "base": …, "patch": …}]`.
#[derive(Serialize, Deserialize)]
struct PagesDoc {
    size: u32,
    marks: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<ChunkId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patch: Option<ChunkId>,
}

impl Serialize for ContentRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(if self.pages.is_some() { 3 } else { 2 })?;
        t.serialize_element(&self.id)?;
        t.serialize_element(&self.len)?;
        if let Some(p) = &self.pages {
            let mut marks = String::with_capacity(p.marks.len() * 16);
            for m in &p.marks {
                for b in m.to_le_bytes() {
                    marks.push_str(&format!("{b:02x}"));
                }
            }
            t.serialize_element(&PagesDoc {
                size: p.size,
                marks,
                base: p.patch.map(|x| x.base),
                patch: p.patch.map(|x| x.pages),
            })?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for ContentRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ContentRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[chunk id or null, length] or [chunk id, length, pages]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<ContentRef, A::Error> {
                use serde::de::Error;
                let id: Option<ChunkId> = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let len: u64 = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let pages = match a.next_element::<PagesDoc>()? {
                    None => None,
                    Some(doc) => Some(Box::new(pages_from(doc).map_err(A::Error::custom)?)),
                };
                if a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(4, &self));
                }
                Ok(ContentRef { id, len, pages })
            }
        }
        d.deserialize_tuple(3, V)
    }
}

fn pages_from(doc: PagesDoc) -> Result<Pages, String> {
    let hex = doc.marks.as_bytes();
    if !hex.len().is_multiple_of(16) {
        return Err("page marks are not whole 8-byte values".into());
    }
    let mut marks = Vec::with_capacity(hex.len() / 16);
    for m in hex.chunks_exact(16) {
        let text = std::str::from_utf8(m).map_err(|_| "page marks are not hex")?;
        let v = u64::from_str_radix(text, 16).map_err(|_| "page marks are not hex")?;
        // Written as little-endian bytes; the text reads as big-endian.
        marks.push(u64::from_le_bytes(v.to_be_bytes()));
    }
    let patch = match (doc.base, doc.patch) {
        (Some(base), Some(pages)) => Some(Patch { base, pages }),
        (None, None) => None,
        _ => return Err("a patched piece needs both base and patch".into()),
    };
    Ok(Pages {
        size: doc.size,
        marks,
        patch,
    })
}

/// What kind of item a [`Node`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A stream with no file metadata (`files backup --stdin`, a dump).
    Stream,
    /// A named pipe (snapshot version 3).
    Fifo,
    /// A Unix-domain socket: recorded, never restored (it means nothing
    /// without the process that listened on it).
    Socket,
    /// A character device node, with its device number in `rdev`.
    #[serde(rename = "chardev")]
    CharDevice,
    /// A block device node, with its device number in `rdev`.
    #[serde(rename = "blockdev")]
    BlockDevice,
}

impl NodeKind {
    /// The letter `ls -l` shows for the kind.
    pub fn letter(self) -> char {
        match self {
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::File => '-',
            NodeKind::Stream => 's',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => '=',
            NodeKind::CharDevice => 'c',
            NodeKind::BlockDevice => 'b',
        }
    }

    /// True for FIFOs, sockets and device nodes.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice
        )
    }
}

/// One item of a snapshot's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The path inside the snapshot, `/`-separated, without a leading `/`,
    /// spelled as [`lifeboat_types::name`] says: the bytes of a Linux path,
    /// exactly, in text.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Unix permission bits and file type bits as `st_mode` has them.
    #[serde(default)]
    pub mode: u32,
    /// Owner user id.
    #[serde(default)]
    pub uid: u32,
    /// Owner group id.
    #[serde(default)]
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch (change detection).
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode number (change detection).
    #[serde(default)]
    pub inode: u64,
    /// Size in bytes (files and streams).
    #[serde(default)]
    pub size: u64,
    /// Symlink target, spelled as `path` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The device number of a device node (`st_rdev`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Content, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentRef>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// The item's path as the bytes of a relative Linux path.
    pub fn path_bytes(&self) -> Result<Vec<u8>, lifeboat_types::name::NameError> {
        lifeboat_types::name::decode(&self.path)
    }
}

/// An item that could not be backed up, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path.
    pub path: String,
    /// Why, as the OS or lifeboat said it.
    pub reason: String,
}

/// A source kind's typed metadata as the entries a snapshot records.
pub fn metadata_entries<T: Serialize>(
    meta: &T,
) -> Result<Vec<(String, serde_json::Value)>, crate::RepoError> {
    match serde_json::to_value(meta) {
        Ok(serde_json::Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(other) => Err(crate::RepoError::Failed(format!(
            "snapshot metadata must be an object, not {other}"
        ))),
        Err(e) => Err(crate::RepoError::Failed(format!(
            "snapshot metadata does not encode: {e}"
        ))),
    }
}

/// Figures of one backup, stored with its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Files (and streams) in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of content the snapshot describes.
    pub bytes_total: u64,
    /// Bytes actually read (files unchanged since the parent are not read).
    pub bytes_read: u64,
    /// Bytes of chunks that were new to the repository, before compression.
    pub bytes_new: u64,
    /// Bytes uploaded for new chunks, after compression and encryption.
    pub bytes_stored: u64,
    /// Chunks referenced.
    pub chunks: u64,
    /// Chunks that were new.
    pub chunks_new: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

/// The current snapshot document version. 3: item names spell bytes
/// ([`lifeboat_types::name`]), FIFOs, sockets and device nodes are items;
/// 2: page marks on pieces; 1: the first.
pub const SNAPSHOT_VERSION: u32 = 3;

/// A snapshot: what was backed up, from where, when, and the tree of items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Document version.
    pub version: u32,
    /// The kind of source: `files`, `stream`, and later `postgres`, `redis`, ….
    pub source_kind: String,
    /// The source's name (a configured source, or the paths backed up).
    pub source_name: String,
    /// The host that made the backup.
    pub hostname: String,
    /// The paths given to the backup.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Tags given by the user.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When the backup started (RFC 3339 in the document).
    pub start_time: Timestamp,
    /// When it ended.
    pub end_time: Timestamp,
    /// True when some items were skipped (`--allow-partial`).
    #[serde(default)]
    pub partial: bool,
    /// The items skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// The snapshot whose unchanged files were reused without reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Free-form facts from the source (LSNs, versions, row counts, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Figures of the backup.
    pub stats: BackupStats,
    /// The items, sorted by path; parents come before their children.
    pub nodes: Vec<Node>,
    /// The id it was read under (not stored): what a restore of it puts
    /// in the audit log. `None` for one not read from the repository.
    #[serde(skip)]
    pub loaded_as: Option<SnapshotId>,
}

impl Snapshot {
    /// The metadata read as `T`, a source kind's typed record of it
    /// (`what` names it in messages); damage naming snapshot `id` and the
    /// field when it does not fit. Keys `T` does not know are ignored.
    pub fn metadata_as<T: serde::de::DeserializeOwned>(
        &self,
        id: &SnapshotId,
        what: &str,
    ) -> Result<T, crate::RepoError> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            crate::RepoError::Corrupt {
                key: crate::ObjectKey::Snapshot(*id).to_string(),
                reason: format!("its {what} metadata does not read: {e}"),
            }
        })
    }

    /// The item called `name` (a name as lifeboat or a source chose it, e.g.
    /// `dump.rdb`, not yet spelled).
    pub fn item(&self, name: &str) -> Option<&Node> {
        let spelled = lifeboat_types::name::encode(name.as_bytes());
        self.nodes.iter().find(|n| n.path == spelled)
    }

    /// Brings a document of an older version to this build's reading: names
    /// before version 3 were plain text, so their backslashes are escaped.
    pub(crate) fn upgrade(&mut self) {
        if self.version >= 3 {
            return;
        }
        use lifeboat_types::name::from_plain;
        for n in &mut self.nodes {
            if n.path.contains('\\') {
                n.path = from_plain(&n.path);
            }
            if let Some(t) = n.target.as_mut().filter(|t| t.contains('\\')) {
                *t = from_plain(t);
            }
        }
        for p in &mut self.paths {
            *p = from_plain(p);
        }
    }

    /// Every stored chunk the snapshot references (bases and patches of
    /// patched pieces, not their rebuilt ids).
    pub fn chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.nodes
            .iter()
            .flat_map(|n| n.content.iter().flat_map(|c| c.stored()))
    }
}

/// A snapshot with its id, as listed.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// The id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_1_pieces_still_parse() {
        let id = ChunkId([7u8; 32]);
        let json = format!("[[\"{}\",131072],[null,8192]]", id.to_hex());
        let pieces: Vec<ContentRef> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            pieces,
            vec![
                ContentRef::plain(Some(id), 131072),
                ContentRef::plain(None, 8192)
            ]
        );
        // And they are written the same way.
        assert_eq!(serde_json::to_string(&pieces).unwrap(), json);
    }

    #[test]
    fn a_half_patch_is_refused() {
        let id = ChunkId([7u8; 32]).to_hex();
        let json = format!("[\"{id}\",16384,{{\"size\":8192,\"marks\":\"\",\"base\":\"{id}\"}}]");
        let err = serde_json::from_str::<ContentRef>(&json).unwrap_err();
        assert!(err.to_string().contains("both base and patch"), "{err}");
    }

    proptest! {
        #[test]
        fn pieces_with_pages_round_trip(
            id in any::<[u8; 32]>(),
            len in any::<u64>(),
            marks in proptest::collection::vec(any::<u64>(), 0..20),
            patch in proptest::option::of((any::<[u8; 32]>(), any::<[u8; 32]>())),
        ) {
            let piece = ContentRef {
                id: Some(ChunkId(id)),
                len,
                pages: Some(Box::new(Pages {
                    size: 8192,
                    marks,
                    patch: patch.map(|(b, p)| Patch { base: ChunkId(b), pages: ChunkId(p) }),
                })),
            };
            let json = serde_json::to_string(&piece).unwrap();
            prop_assert_eq!(serde_json::from_str::<ContentRef>(&json).unwrap(), piece);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = serde_json::from_str::<ContentRef>(&text);
            let _ = serde_json::from_str::<ContentRef>(&format!("[null,1,{text}]"));
        }
    }
}
