//! Leaf types shared by every lifeboat crate.
//!
//! Nothing here does I/O. The crate gives names to the 32-byte identifiers the
//! repository uses ([`ChunkId`], [`PackId`], [`SnapshotId`], [`IndexId`]) so that
//! one can never be passed where another is expected, and a [`ByteSize`] that
//! prints the way operators read sizes, and [`name`]: how item names, which
//! on Linux are bytes, are spelled in snapshots. [`failpoint`](mod@failpoint) holds the crash
//! points tests use (test builds only: the `testing` feature).
#![deny(missing_docs)]

pub mod error;
pub mod failpoint;
pub mod name;

pub use error::{Classify, ErrorClass};
/// An instant in UTC, nanosecond precision; RFC 3339 in text and JSON
/// (`2026-11-24T13:52:40.123456Z`).
pub use jiff::Timestamp;

use std::fmt;
use std::str::FromStr;

/// A 32-byte identifier could not be parsed from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id {text:?}: expected 64 hexadecimal characters")]
pub struct ParseIdError {
    text: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as 64 lowercase hexadecimal characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hexadecimal characters, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError { text: s.to_string() })?;
                Ok($name(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The keyed BLAKE3 hash of a chunk's plaintext, keyed with the repository's
    /// id key. It names the chunk and is what deduplication compares.
    ChunkId
);
id_type!(
    /// The BLAKE3 hash of a pack object's stored bytes; the pack's object name.
    PackId
);
id_type!(
    /// The BLAKE3 hash of a snapshot object's stored bytes; the snapshot's name.
    SnapshotId
);
id_type!(
    /// The BLAKE3 hash of an index object's stored bytes; the index's name.
    IndexId
);

/// A number of bytes, printed with binary units (`1.5 GiB`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// A byte size could not be parsed from text such as `16MiB`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {0:?}: expected a number with an optional unit (B, KiB, MiB, GiB, K, M, G)")]
pub struct ParseSizeError(String);

impl FromStr for ByteSize {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| ParseSizeError(s.to_string()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(ParseSizeError(s.to_string())),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ParseSizeError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_size_prints_binary_units() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(16 << 20).to_string(), "16.0 MiB");
    }

    #[test]
    fn byte_size_parses_units() {
        assert_eq!("16MiB".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!("8 k".parse::<ByteSize>(), Ok(ByteSize(8192)));
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[test]
    fn short_id_is_a_prefix_of_the_full_id() {
        let id = ChunkId([0xab; 32]);
        assert!(id.to_hex().starts_with(&id.short()));
        assert_eq!(id.short().len(), 8);
    }

    proptest! {
        #[test]
        fn ids_round_trip_through_hex_and_json(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = SnapshotId(bytes);
            prop_assert_eq!(id.to_hex().parse::<SnapshotId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<SnapshotId>(&json).unwrap(), id);
        }

        #[test]
        fn id_parser_never_panics(s in ".{0,80}") {
            let _ = s.parse::<PackId>();
        }
    }
}
