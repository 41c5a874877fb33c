//! Named objects: whole files that callers store and fetch by a name of their
//! own (WAL segments, history files). Each is one sealed, compressed object
//! whose key is a keyed hash of the name, so the store shows no names; opening
//! one needs no index, which keeps `wal-push` and `wal-fetch` fast.

use bytes::Bytes;

use crate::error::{RepoError, Result};
use crate::format::{self, MAGIC_NAMED};
use crate::keys::{FileType, ObjectKey};
use crate::repository::Repository;

/// What storing a named object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutNamed {
    /// It was stored now.
    Stored {
        /// Bytes uploaded.
        bytes: u64,
    },
    /// An object of that name with the same content was already there.
    AlreadyStored,
}

/// Damage to a named object, named by the name its caller knows (a WAL
/// segment's) as well as by its storage key.
fn named_as(name: &str, e: RepoError) -> RepoError {
    match e {
        RepoError::Corrupt { key, reason } => RepoError::Corrupt {
            key: format!("{name} (stored as {key})"),
            reason,
        },
        e => e,
    }
}

impl Repository {
    /// The storage key of the object `name` in `namespace`.
    pub fn named_key(&self, namespace: &str, name: &str) -> String {
        // The namespace is hashed with the name: it may say whose objects they
        // are (a cluster's system identifier), which the store must not show.
        let hash = hex::encode(self.inner.keyring.object_name(namespace, name));
        ObjectKey::Named(&hash).to_string()
    }

    /// Stores `content` as `name` in `namespace`. When an object of that name
    /// exists, identical content is success and different content is
    /// [`RepoError::Conflict`]; nothing is overwritten. Returns once the object
    /// is durably stored.
    pub fn put_named(&self, namespace: &str, name: &str, content: &[u8]) -> Result<PutNamed> {
        let key = self.named_key(namespace, name);
        let existing = match self.inner.block(self.inner.storage.get(&key)) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(bytes) = existing {
            let body = self
                .open_named_body(&key, &bytes)
                .map_err(|e| named_as(name, e))?;
            let (header, _) =
                format::decode_named_header(&key, &body).map_err(|e| named_as(name, e))?;
            if header.name == name
                && header.len == content.len() as u64
                && &header.hash == blake3::hash(content).as_bytes()
            {
                return Ok(PutNamed::AlreadyStored);
            }
            return Err(RepoError::Conflict {
                name: name.to_string(),
            });
        }
        let level = self.inner.config.compression_level;
        let body = format::encode_named(name, content, level);
        let epoch = self.inner.keyring.current();
        let obj = format::seal_object(MAGIC_NAMED, epoch.number, &epoch.key, &body)?;
        let bytes = obj.len() as u64;
        self.inner
            .block(self.inner.storage.put(&key, Bytes::from(obj)))?;
        Ok(PutNamed::Stored { bytes })
    }

    /// Fetches the object `name` of `namespace`, or `None` when there is none.
    /// Its content is checked against the hash stored with it.
    pub fn get_named(&self, namespace: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.named_key(namespace, name);
        let bytes = match self.inner.block(self.inner.storage.get(&key)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.open_named_body(&key, &bytes)
            .and_then(|body| format::decode_named(&key, &body, name))
            .map(Some)
            .map_err(|e| named_as(name, e))
    }

    /// The storage keys of every named object (compare them with
    /// [`Repository::named_key`] to learn which names are stored).
    pub fn list_named(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .inner
            .block(self.inner.storage.list(FileType::Named.prefix()))?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// Every named object's storage key with what the store says of it
    /// (size, when stored): [`Repository::list_named`] with sizes, for
    /// callers that report what deleting some would free.
    pub fn list_named_info(
        &self,
    ) -> Result<std::collections::HashMap<String, lifeboat_storage::ObjectInfo>> {
        Ok(self
            .inner
            .block(self.inner.storage.list(FileType::Named.prefix()))?
            .into_iter()
            .map(|o| (o.key.clone(), o))
            .collect())
    }

    /// Deletes the object `name` of `namespace`; deleting one that is not
    /// there succeeds. Callers decide what may go (the WAL archive's expiry
    /// deletes only what a plan made from a fresh listing names).
    pub fn delete_named(&self, namespace: &str, name: &str) -> Result<()> {
        let key = self.named_key(namespace, name);
        Ok(self.inner.block(self.inner.storage.delete(&key))?)
    }

    /// What the store says of the object `name` of `namespace` (size, when
    /// stored), or `None` when there is none.
    pub fn stat_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<lifeboat_storage::ObjectInfo>> {
        let key = self.named_key(namespace, name);
        Ok(self.inner.block(self.inner.storage.stat(&key))?)
    }

    /// Checks one stored named object: it decrypts, and its content matches
    /// the length and hash stored with it.
    pub(crate) fn check_named_object(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let body = self.open_named_body(key, bytes)?;
        let (header, _) = format::decode_named_header(key, &body)?;
        format::decode_named(key, &body, &header.name).map(|_| ())
    }

    fn open_named_body(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        format::open_object(
            key,
            MAGIC_NAMED,
            bytes,
            self.master_key(),
            Some(&self.inner.keyring),
        )
    }
}
