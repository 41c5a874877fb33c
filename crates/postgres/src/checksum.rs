//! PostgreSQL data page checksums (`src/include/storage/checksum_impl.h`),
//! checked as relation files stream into the repository.
//!
//! The algorithm is FNV-1a-like over 32 parallel lanes of 32-bit words, with
//! the block number mixed in so a page written to the wrong place fails too.

use crate::wal::Lsn;

/// Size of a data page.
pub const PAGE_SIZE: usize = 8192;
/// Pages in a 1 GiB relation segment file (`RELSEG_SIZE`).
pub const PAGES_PER_SEGMENT: u32 = 131_072;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const SEEDS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline(always)]
fn comp(sum: &mut u32, value: u32) {
    let t = *sum ^ value;
    *sum = t.wrapping_mul(FNV_PRIME) ^ (t >> 17);
}

/// One row of the page (one word per lane) into the sums. Written without
/// branches over fixed-size arrays so the compiler turns it into vector code.
#[inline(always)]
fn round(sums: &mut [u32; N_SUMS], row: &[u8; 4 * N_SUMS]) {
    for (j, sum) in sums.iter_mut().enumerate() {
        let w = [row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3]];
        comp(sum, u32::from_ne_bytes(w));
    }
}

/// The checksum PostgreSQL stores in `pd_checksum` for `page` at block
/// `block` of its relation (block within the segment + segment × 131072).
pub fn page_checksum(page: &[u8; PAGE_SIZE], block: u32) -> u16 {
    const ROW: usize = 4 * N_SUMS;
    let mut sums = SEEDS;
    // pd_checksum (bytes 8 and 9, in the first row) counts as zero.
    let mut first = [0u8; ROW];
    first.copy_from_slice(&page[..ROW]);
    first[8] = 0;
    first[9] = 0;
    round(&mut sums, &first);
    for row in page[ROW..].chunks_exact(ROW) {
        if let Ok(row) = <&[u8; ROW]>::try_from(row) {
            round(&mut sums, row);
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            comp(sum, 0);
        }
    }
    let c = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ block;
    ((c % 65535) + 1) as u16
}

/// The page's LSN (`pd_lsn`: high word first, each word native-endian).
pub fn page_lsn(page: &[u8; PAGE_SIZE]) -> u64 {
    let hi = u32::from_ne_bytes([page[0], page[1], page[2], page[3]]);
    let lo = u32::from_ne_bytes([page[4], page[5], page[6], page[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// What checking one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCheck {
    /// The stored checksum matches.
    Valid,
    /// Not checked: a new (all-zero) page, or one written after the backup
    /// started, which WAL replay rewrites anyway and which may be torn.
    Skipped,
    /// The stored checksum does not match.
    Invalid {
        /// What the page says.
        stored: u16,
        /// What its contents give.
        computed: u16,
    },
}

/// Checks one page as `pg_basebackup` does: new pages (`pd_upper == 0`) and
/// pages with an LSN at or after `start_lsn` are skipped.
pub fn check_page(page: &[u8; PAGE_SIZE], block: u32, start_lsn: Lsn) -> PageCheck {
    let upper = u16::from_ne_bytes([page[14], page[15]]);
    if upper == 0 || page_lsn(page) >= start_lsn.0 {
        return PageCheck::Skipped;
    }
    let stored = u16::from_ne_bytes([page[8], page[9]]);
    let computed = page_checksum(page, block);
    if stored == computed {
        PageCheck::Valid
    } else {
        PageCheck::Invalid { stored, computed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as PostgreSQL would write it, with its checksum set.
    pub(crate) fn page(fill: u8, lsn: u64, block: u32) -> [u8; PAGE_SIZE] {
        let mut p = [fill; PAGE_SIZE];
        p[..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        p[14..16].copy_from_slice(&4096u16.to_ne_bytes());
        let c = page_checksum(&p, block);
        p[8..10].copy_from_slice(&c.to_ne_bytes());
        p
    }

    #[test]
    fn a_flipped_byte_or_a_wrong_block_fails() {
        let p = page(7, 100, 3);
        assert_eq!(check_page(&p, 3, Lsn(1000)), PageCheck::Valid);
        assert!(matches!(
            check_page(&p, 4, Lsn(1000)),
            PageCheck::Invalid { .. }
        ));
        let mut bad = p;
        bad[5000] ^= 1;
        assert!(matches!(
            check_page(&bad, 3, Lsn(1000)),
            PageCheck::Invalid { .. }
        ));
    }

    #[test]
    fn new_pages_and_pages_newer_than_the_backup_are_skipped() {
        assert_eq!(
            check_page(&[0u8; PAGE_SIZE], 0, Lsn(1000)),
            PageCheck::Skipped
        );
        let mut p = page(7, 5000, 0);
        p[100] ^= 1;
        assert_eq!(check_page(&p, 0, Lsn(1000)), PageCheck::Skipped);
    }

    /// The straightforward transcription of `pg_checksum_block`, to hold the
    /// vectorisable one to it.
    fn reference_checksum(page: &[u8; PAGE_SIZE], block: u32) -> u16 {
        let mut sums = SEEDS;
        for row in 0..PAGE_SIZE / (4 * N_SUMS) {
            for (j, sum) in sums.iter_mut().enumerate() {
                let at = (row * N_SUMS + j) * 4;
                let mut w = [page[at], page[at + 1], page[at + 2], page[at + 3]];
                if at == 8 {
                    w = [0, 0, w[2], w[3]];
                }
                comp(sum, u32::from_ne_bytes(w));
            }
        }
        for _ in 0..2 {
            for sum in sums.iter_mut() {
                comp(sum, 0);
            }
        }
        let c = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ block;
        ((c % 65535) + 1) as u16
    }

    proptest::proptest! {
        #[test]
        fn matches_the_reference(seed in proptest::prelude::any::<u64>(), block in proptest::prelude::any::<u32>()) {
            let mut p = [0u8; PAGE_SIZE];
            let mut x = seed | 1;
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            proptest::prop_assert_eq!(page_checksum(&p, block), reference_checksum(&p, block));
        }
    }

    #[test]
    fn checksum_is_never_zero() {
        for b in 0..64u32 {
            assert_ne!(page_checksum(&[b as u8; PAGE_SIZE], b), 0);
        }
    }
}
