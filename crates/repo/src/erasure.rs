//! The erasure ledger: every request to erase one person's data (GDPR
//! article 17) from a source. Backups are immutable, so an erased person
//! comes back with every restore; the ledger is what a restore re-applies
//! before clients see the restored data. Stored as
//! `erasures/<requested ms>-<id>`, a sealed JSON document like holds and
//! job records (`docs/format.md` "The erasure ledger"): encrypted, never
//! rewritten, never deleted by lifeboat.

use serde::{Deserialize, Serialize};

use crate::format::MAGIC_ERASURE;
use crate::keys::{FileType, ObjectKey};
use crate::sessions::random_id;
use crate::{RepoError, Repository, Result};
use lifeboat_types::Timestamp;

/// The erasure request version this build writes and reads.
pub const ERASURE_VERSION: u32 = 1;

/// One request: erase `subject` from `source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    /// Document version.
    pub version: u32,
    /// A random id (hex).
    pub id: String,
    /// The source's config name.
    pub source: String,
    /// The subject's id, as the source's `erase_sql` takes it (`$1`).
    pub subject: String,
    /// Why, as the operator said it (a ticket number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was recorded.
    pub requested: Timestamp,
    /// Who recorded it: OS user and host.
    pub user: String,
    /// The host.
    pub host: String,
}

impl ErasureRequest {
    /// A new request, now, with a fresh id.
    pub fn new(
        source: &str,
        subject: &str,
        reason: Option<String>,
        user: &str,
        host: &str,
    ) -> Result<Self> {
        if source.trim().is_empty() || subject.trim().is_empty() {
            return Err(RepoError::Invalid(
                "an erasure request needs a source and a subject".into(),
            ));
        }
        Ok(ErasureRequest {
            version: ERASURE_VERSION,
            id: random_id()?,
            source: source.to_string(),
            subject: subject.to_string(),
            reason,
            requested: Timestamp::now(),
            user: user.to_string(),
            host: host.to_string(),
        })
    }

    /// Its name under `erasures/`: the request time (ms, 14 digits) and id.
    pub fn name(&self) -> String {
        format!("{:014}-{}", self.requested.as_millisecond().max(0), self.id)
    }
}

impl Repository {
    /// Stores a request; returns its key.
    pub fn add_erasure(&self, request: &ErasureRequest) -> Result<String> {
        let name = request.name();
        let key = ObjectKey::Erasure(&name).to_string();
        self.put_document(&key, MAGIC_ERASURE, request)?;
        Ok(key)
    }

    /// Every request, oldest first. One that does not read is an error
    /// naming it: a ledger with a hole would bring a person back.
    pub fn erasures(&self) -> Result<Vec<ErasureRequest>> {
        let mut out = self
            .documents::<ErasureRequest>(FileType::Erasure, MAGIC_ERASURE)?
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.requested.cmp(&b.requested).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The subjects of `source`'s requests, each once, oldest request first.
    pub fn erasure_subjects(&self, source: &str) -> Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .erasures()?
            .into_iter()
            .filter(|r| r.source == source)
            .filter_map(|r| seen.insert(r.subject.clone()).then_some(r.subject))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_sort_by_request_time() {
        let mut a = ErasureRequest::new("main", "42", None, "root", "h").unwrap();
        let mut b = a.clone();
        a.requested = Timestamp::from_second(1_700_000_000).unwrap();
        b.requested = Timestamp::from_second(1_800_000_000).unwrap();
        b.id = "00".into();
        assert!(a.name() < b.name());
        assert!(ErasureRequest::new("main", " ", None, "root", "h").is_err());
    }

    proptest! {
        #[test]
        fn any_document_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<ErasureRequest>(&bytes);
        }
    }
}
