//! Where a repository keeps each kind of object: every storage key is built
//! here, from a typed [`ObjectKey`], and every listing names its
//! [`FileType`] — never a `format!` elsewhere (rustic's `FileType` is the
//! model). The layout is part of the stored format (`docs/format.md`).

use std::fmt;

use lifeboat_types::{IndexId, PackId, SnapshotId};

/// A kind of object, and the prefix all of its kind share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// `config`: the repository's settings.
    Config,
    /// `keyring`: the data keys, sealed with the master key.
    Keyring,
    /// `keys/<id>`: key slots.
    KeySlot,
    /// `packs/<2 hex>/<id>`: packs of sealed chunks.
    Pack,
    /// `index/<id>`: where chunks are.
    Index,
    /// `snapshots/<id>`: snapshots.
    Snapshot,
    /// `named/<keyed hash>`: whole files stored by name (WAL).
    Named,
    /// `sessions/<id>`: a running backup or prune (not a lock: nothing waits
    /// on it; a prune's deletions do).
    Session,
    /// `marks/<id>`: packs a prune marked for deletion, and the index
    /// objects it superseded.
    Mark,
    /// `holds/<snapshot id>`: a hold keeping a snapshot whatever the
    /// retention policy says.
    Hold,
    /// `jobs/<start ms>-<id>`: the record of one run of a job (history).
    Job,
    /// `deletions/<observed ms>-<id>`: in a replica only, objects seen
    /// gone from the primary, deleted from the replica once the replica's
    /// delete delay has passed.
    Deletion,
    /// `canary/<host>`: a few random bytes each host writes and reads back
    /// to tell that the store answers (`lifeboat_repository_up`).
    Canary,
    /// `audit/<block>/<seq>-<ms>-<hash>[.<parent>]*`: the audit log, one
    /// hash-chained record per command (`audit.rs`).
    Audit,
    /// `erasures/<ms>-<id>`: the erasure ledger, one request per subject.
    Erasure,
    /// `drills/<start ms>-<id>`: the drill history.
    Drill,
}

impl FileType {
    /// The prefix every key of this kind starts with (for listings).
    pub const fn prefix(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Keyring => "keyring",
            FileType::KeySlot => "keys/",
            FileType::Pack => "packs/",
            FileType::Index => "index/",
            FileType::Snapshot => "snapshots/",
            FileType::Named => "named/",
            FileType::Session => "sessions/",
            FileType::Mark => "marks/",
            FileType::Hold => "holds/",
            FileType::Job => "jobs/",
            FileType::Deletion => "deletions/",
            FileType::Canary => "canary/",
            FileType::Audit => "audit/",
            FileType::Erasure => "erasures/",
            FileType::Drill => "drills/",
        }
    }
}

/// One object's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey<'a> {
    /// The repository's settings.
    Config,
    /// The keyring.
    Keyring,
    /// A key slot, by its id.
    KeySlot(&'a str),
    /// A pack.
    Pack(PackId),
    /// An index object.
    Index(IndexId),
    /// A snapshot.
    Snapshot(SnapshotId),
    /// A named object, by the hex of its keyed name hash.
    Named(&'a str),
    /// A session, by its random id (hex).
    Session(&'a str),
    /// A prune's mark, by its random id (hex).
    Mark(&'a str),
    /// The hold on a snapshot.
    Hold(SnapshotId),
    /// A job record, by its name (`<start ms>-<id>`).
    Job(&'a str),
    /// A replica's record of deletions seen on the primary, by its name
    /// (`<observed ms>-<id>`).
    Deletion(&'a str),
    /// A host's canary, by its host name.
    Canary(&'a str),
    /// An erasure request, by its name (`<requested ms>-<id>`).
    Erasure(&'a str),
    /// A drill record, by its name (`<start ms>-<id>`).
    Drill(&'a str),
}

impl ObjectKey<'_> {
    /// The kind of object.
    pub fn file_type(&self) -> FileType {
        match self {
            ObjectKey::Config => FileType::Config,
            ObjectKey::Keyring => FileType::Keyring,
            ObjectKey::KeySlot(_) => FileType::KeySlot,
            ObjectKey::Pack(_) => FileType::Pack,
            ObjectKey::Index(_) => FileType::Index,
            ObjectKey::Snapshot(_) => FileType::Snapshot,
            ObjectKey::Named(_) => FileType::Named,
            ObjectKey::Session(_) => FileType::Session,
            ObjectKey::Mark(_) => FileType::Mark,
            ObjectKey::Hold(_) => FileType::Hold,
            ObjectKey::Job(_) => FileType::Job,
            ObjectKey::Deletion(_) => FileType::Deletion,
            ObjectKey::Canary(_) => FileType::Canary,
            ObjectKey::Erasure(_) => FileType::Erasure,
            ObjectKey::Drill(_) => FileType::Drill,
        }
    }
}

impl fmt::Display for ObjectKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.file_type().prefix();
        match self {
            ObjectKey::Config | ObjectKey::Keyring => f.write_str(prefix),
            ObjectKey::KeySlot(id)
            | ObjectKey::Named(id)
            | ObjectKey::Session(id)
            | ObjectKey::Mark(id)
            | ObjectKey::Job(id)
            | ObjectKey::Deletion(id)
            | ObjectKey::Canary(id)
            | ObjectKey::Erasure(id)
            | ObjectKey::Drill(id) => write!(f, "{prefix}{id}"),
            ObjectKey::Pack(id) => {
                // Fanned out by the first byte: no directory of a local
                // repository grows past a few thousand entries.
                let hex = id.to_hex();
                write!(f, "{prefix}{}/{hex}", &hex[..2])
            }
            ObjectKey::Index(id) => write!(f, "{prefix}{}", id.to_hex()),
            ObjectKey::Snapshot(id) | ObjectKey::Hold(id) => {
                write!(f, "{prefix}{}", id.to_hex())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_stored_layout() {
        let id = [0xab; 32];
        let hex = "ab".repeat(32);
        assert_eq!(ObjectKey::Config.to_string(), "config");
        assert_eq!(ObjectKey::Keyring.to_string(), "keyring");
        assert_eq!(ObjectKey::KeySlot("0011").to_string(), "keys/0011");
        assert_eq!(
            ObjectKey::Pack(PackId(id)).to_string(),
            format!("packs/ab/{hex}")
        );
        assert_eq!(
            ObjectKey::Index(IndexId(id)).to_string(),
            format!("index/{hex}")
        );
        assert_eq!(
            ObjectKey::Snapshot(SnapshotId(id)).to_string(),
            format!("snapshots/{hex}")
        );
        assert_eq!(ObjectKey::Named("ff").to_string(), "named/ff");
        assert_eq!(ObjectKey::Session("01").to_string(), "sessions/01");
        assert_eq!(ObjectKey::Mark("02").to_string(), "marks/02");
        assert_eq!(ObjectKey::Job("03-ab").to_string(), "jobs/03-ab");
        assert_eq!(ObjectKey::Deletion("04-cd").to_string(), "deletions/04-cd");
        assert_eq!(
            ObjectKey::Hold(SnapshotId(id)).to_string(),
            format!("holds/{hex}")
        );
        for k in [
            ObjectKey::KeySlot("x"),
            ObjectKey::Pack(PackId(id)),
            ObjectKey::Index(IndexId(id)),
            ObjectKey::Snapshot(SnapshotId(id)),
            ObjectKey::Named("y"),
        ] {
            assert!(k.to_string().starts_with(k.file_type().prefix()));
        }
    }
}
