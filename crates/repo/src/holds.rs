//! Holds: a snapshot kept whatever the retention policy says (a legal
//! case, an investigation), until released or until its date passes.
//! Stored as `holds/<snapshot id>`, a sealed JSON document (`docs/format.md`
//! "Holds").

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::format::MAGIC_HOLD;
use crate::keys::{FileType, ObjectKey};
use crate::sessions::seal_document;
use crate::{RepoError, Repository, Result};
use lifeboat_types::{SnapshotId, Timestamp};

/// The hold document version this build writes and reads.
pub const HOLD_VERSION: u32 = 1;

/// A hold on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Document version.
    pub version: u32,
    /// The snapshot held.
    pub snapshot: SnapshotId,
    /// Why, as the user said it.
    pub reason: String,
    /// When the hold stops protecting the snapshot; `None`: until released.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// When it was placed.
    pub created: Timestamp,
    /// The host that placed it.
    pub hostname: String,
}

impl Hold {
    /// True while it protects its snapshot at `now` (no `until`, or
    /// `until` not yet reached).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

impl Repository {
    /// Holds the snapshot `spec` names (full id, unique prefix, `latest`)
    /// for `reason` until `until` (or until released); replaces a hold
    /// already on it. A snapshot that does not exist is a usage error naming
    /// it.
    pub fn hold(
        &self,
        spec: &str,
        reason: &str,
        until: Option<Timestamp>,
        hostname: &str,
    ) -> Result<Hold> {
        if reason.trim().is_empty() {
            return Err(RepoError::Invalid(
                "a hold needs a reason (--reason TEXT)".into(),
            ));
        }
        let snap = self.find_snapshot(spec)?;
        let hold = Hold {
            version: HOLD_VERSION,
            snapshot: snap.id,
            reason: reason.to_string(),
            until,
            created: Timestamp::now(),
            hostname: hostname.to_string(),
        };
        let obj = seal_document(&self.inner, MAGIC_HOLD, &hold)?;
        self.inner.block(
            self.inner
                .storage
                .put(&ObjectKey::Hold(snap.id).to_string(), Bytes::from(obj)),
        )?;
        Ok(hold)
    }

    /// Removes the hold on the snapshot `spec` names (full id or unique
    /// prefix, matched against held snapshots, so a hold outliving its
    /// snapshot can be released too), and returns it.
    pub fn release(&self, spec: &str) -> Result<Hold> {
        let spec_l = spec.to_ascii_lowercase();
        let holds = self.holds()?;
        let found: Vec<&Hold> = holds
            .iter()
            .filter(|h| !spec_l.is_empty() && h.snapshot.to_hex().starts_with(&spec_l))
            .collect();
        let hold = match found.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(RepoError::Invalid(format!(
                    "no hold on a snapshot matching {spec:?}; `lifeboat snapshots` shows the holds"
                )))
            }
            many => {
                return Err(RepoError::AmbiguousSnapshot {
                    spec: spec.to_string(),
                    count: many.len(),
                })
            }
        };
        self.inner.block(
            self.inner
                .storage
                .delete(&ObjectKey::Hold(hold.snapshot).to_string()),
        )?;
        Ok(hold)
    }

    /// Every hold in the repository, active or expired, by snapshot id.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        let listed = self
            .inner
            .block(self.inner.storage.list(FileType::Hold.prefix()))?;
        let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (key, bytes) in keys.iter().zip(self.get_many(&keys)) {
            let bytes = match bytes {
                Ok(b) => b,
                // Released between the listing and the read.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let hold: Hold = self.decode_document(key, MAGIC_HOLD, &bytes)?;
            if hold.version > HOLD_VERSION {
                return Err(RepoError::UnknownVersion {
                    key: key.clone(),
                    what: "hold document",
                    found: u16::try_from(hold.version).unwrap_or(u16::MAX),
                    supported: HOLD_VERSION as u16,
                });
            }
            if ObjectKey::Hold(hold.snapshot).to_string() != *key {
                return Err(RepoError::Corrupt {
                    key: key.clone(),
                    reason: format!(
                        "it holds snapshot {}, not the one its name says",
                        hold.snapshot
                    ),
                });
            }
            out.push(hold);
        }
        out.sort_by_key(|h| h.snapshot);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_protects_until_its_date() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut h = Hold {
            version: 1,
            snapshot: SnapshotId([1; 32]),
            reason: "case 42".into(),
            until: None,
            created: t("2026-01-01T00:00:00Z"),
            hostname: "h".into(),
        };
        assert!(h.is_active(t("2099-01-01T00:00:00Z")));
        h.until = Some(t("2026-06-01T00:00:00Z"));
        assert!(h.is_active(t("2026-05-31T23:59:59Z")));
        assert!(!h.is_active(t("2026-06-01T00:00:00Z")));
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(&"01".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<Hold>(&json).unwrap(), h);
    }
}
