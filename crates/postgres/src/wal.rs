//! Log sequence numbers, timelines and WAL file names — pure arithmetic, no I/O.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log, as PostgreSQL prints it: `16/B374D848`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Text that is not an LSN.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a WAL position: expected two hexadecimal numbers as in 16/B374D848")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The name of one WAL segment file: timeline and segment number, printed as
/// 24 hexadecimal digits (`000000010000000A000000FF`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline.
    pub timeline: u32,
    /// The segment number: LSN / segment size.
    pub number: u64,
    /// Segment size in bytes (a power of two, 1 MiB to 1 GiB).
    pub size: u64,
}

impl Segment {
    /// The segment holding `lsn` on `timeline`.
    pub fn containing(timeline: u32, lsn: Lsn, size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / size,
            size,
        }
    }

    /// Segments per 4 GiB "log id", the middle part of the name.
    fn per_id(size: u64) -> u64 {
        0x1_0000_0000 / size
    }

    /// The file name.
    pub fn name(&self) -> String {
        let per = Self::per_id(self.size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per,
            self.number % per
        )
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> Segment {
        Segment {
            number: self.number + 1,
            ..*self
        }
    }

    /// Parses a 24-digit segment name for a cluster with segments of `size` bytes.
    pub fn parse(name: &str, size: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        let per = Self::per_id(size);
        if seg >= per {
            return None;
        }
        Some(Segment {
            timeline,
            number: log * per + seg,
            size,
        })
    }

    /// The first LSN of the segment.
    pub fn start(&self) -> Lsn {
        Lsn(self.number * self.size)
    }
}

/// What kind of file `archive_command` hands over, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFileKind {
    /// A whole segment: 24 hexadecimal digits.
    Segment,
    /// The last, partial segment of an old timeline after a promotion: `<segment>.partial`.
    Partial,
    /// A timeline history file: `<8 hex digits>.history`.
    History,
    /// A backup history file: `<segment>.<8 hex digits>.backup`.
    Backup,
}

impl WalFileKind {
    /// Classifies a file name, or `None` for anything PostgreSQL does not archive.
    pub fn of(name: &str) -> Option<WalFileKind> {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if hex(name, 24) {
            Some(WalFileKind::Segment)
        } else if let Some(seg) = name.strip_suffix(".partial") {
            hex(seg, 24).then_some(WalFileKind::Partial)
        } else if let Some(tli) = name.strip_suffix(".history") {
            hex(tli, 8).then_some(WalFileKind::History)
        } else if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            (hex(seg, 24) && hex(off, 8)).then_some(WalFileKind::Backup)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segment_names_match_postgres() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let s = Segment::containing(1, lsn, 16 << 20);
        assert_eq!(s.name(), "0000000100000016000000B3");
        assert_eq!(s.next().name(), "0000000100000016000000B4");
        let last = Segment::parse("00000002000000000000000FF", 16 << 20);
        assert_eq!(last, None, "25 digits is not a name");
        let wrap = Segment::parse("0000000200000000000000FF", 16 << 20).unwrap();
        assert_eq!(wrap.next().name(), "000000020000000100000000");
        assert_eq!(lsn.to_string(), "16/B374D848");
    }

    #[test]
    fn archived_file_kinds() {
        assert_eq!(
            WalFileKind::of("000000010000000000000003"),
            Some(WalFileKind::Segment)
        );
        assert_eq!(
            WalFileKind::of("000000010000000000000003.partial"),
            Some(WalFileKind::Partial)
        );
        assert_eq!(
            WalFileKind::of("00000002.history"),
            Some(WalFileKind::History)
        );
        assert_eq!(
            WalFileKind::of("000000010000000000000002.00000028.backup"),
            Some(WalFileKind::Backup)
        );
        assert_eq!(WalFileKind::of("../etc/passwd"), None);
        assert_eq!(WalFileKind::of("00000001000000000000000G"), None);
    }

    proptest! {
        #[test]
        fn lsn_text_round_trips(v in any::<u64>()) {
            let l = Lsn(v);
            prop_assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
        }

        #[test]
        fn lsn_parser_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Lsn>();
            let _ = WalFileKind::of(&s);
            let _ = Segment::parse(&s, 16 << 20);
        }

        #[test]
        fn segment_names_round_trip(tli in 1u32..1000, lsn in any::<u64>(), shift in 20u32..31) {
            let size = 1u64 << shift;
            let s = Segment::containing(tli, Lsn(lsn), size);
            prop_assert_eq!(Segment::parse(&s.name(), size), Some(s));
            prop_assert!(s.start() <= Lsn(lsn));
        }
    }
}
