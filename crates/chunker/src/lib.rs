//! Chunking: cutting a byte stream into the pieces the repository deduplicates.
//!
//! Two modes, chosen by [`ChunkerConfig`]:
//! - **Content-defined** (FastCDC, 2020 variant): cut points depend on the bytes
//!   around them, so an insertion early in a stream moves only the chunks around
//!   it. Used for streams and ordinary files.
//! - **Fixed, page-aligned**: every chunk is `size` bytes (a multiple of 8 KiB, the
//!   PostgreSQL page), the last one shorter. Relation files change page by page in
//!   place, so fixed chunks aligned with pages deduplicate better than CDC would.
//!
//! [`Chunker`] is an iterator over any [`std::io::Read`]; it does no I/O of its own.
#![deny(missing_docs)]

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The size of a PostgreSQL page; fixed chunk sizes are multiples of it.
pub const PAGE_SIZE: u32 = 8192;

/// How a stream is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ChunkerConfig {
    /// Content-defined chunking with FastCDC.
    Cdc {
        /// Smallest chunk, in bytes (at least 64, at most 1 MiB).
        min: u32,
        /// Average chunk, in bytes (at least 256, at most 4 MiB).
        avg: u32,
        /// Largest chunk, in bytes (at least 1 KiB, at most 16 MiB).
        max: u32,
    },
    /// Fixed-size chunks; `size` is a multiple of 8 KiB.
    Fixed {
        /// Chunk size in bytes.
        size: u32,
    },
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig::Cdc {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// A chunker configuration that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkerError {
    /// The CDC sizes are out of FastCDC's range or not ordered min ≤ avg ≤ max.
    #[error("invalid content-defined chunk sizes min={min} avg={avg} max={max}: need 64 ≤ min ≤ 1 MiB, 256 ≤ avg ≤ 4 MiB, 1 KiB ≤ max ≤ 16 MiB and min ≤ avg ≤ max")]
    BadCdc {
        /// Requested minimum.
        min: u32,
        /// Requested average.
        avg: u32,
        /// Requested maximum.
        max: u32,
    },
    /// The fixed size is zero, too large, or not a multiple of 8 KiB.
    #[error(
        "invalid fixed chunk size {0}: it must be a non-zero multiple of 8 KiB, at most 16 MiB"
    )]
    BadFixed(u32),
}

impl lifeboat_types::Classify for ChunkerError {
    /// Always usage: a configuration that cannot be used.
    fn class(&self) -> lifeboat_types::ErrorClass {
        lifeboat_types::ErrorClass::Usage
    }
}

impl ChunkerConfig {
    /// The page-aligned fixed mode PostgreSQL relation files use by default (128 KiB).
    pub fn pages() -> Self {
        ChunkerConfig::Fixed {
            size: 16 * PAGE_SIZE,
        }
    }

    /// Checks the sizes; every chunker is built from a validated config.
    pub fn validate(&self) -> Result<(), ChunkerError> {
        match *self {
            ChunkerConfig::Cdc { min, avg, max } => {
                let ok = (64..=1 << 20).contains(&min)
                    && (256..=4 << 20).contains(&avg)
                    && (1024..=16 << 20).contains(&max)
                    && min <= avg
                    && avg <= max;
                if ok {
                    Ok(())
                } else {
                    Err(ChunkerError::BadCdc { min, avg, max })
                }
            }
            ChunkerConfig::Fixed { size } => {
                if size == 0 || size % PAGE_SIZE != 0 || size > 16 << 20 {
                    Err(ChunkerError::BadFixed(size))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The largest chunk this configuration produces.
    pub fn max_chunk(&self) -> usize {
        match *self {
            ChunkerConfig::Cdc { max, .. } => max as usize,
            ChunkerConfig::Fixed { size } => size as usize,
        }
    }

    /// A chunker over `reader`.
    pub fn chunker<R: Read>(&self, reader: R) -> Result<Chunker<R>, ChunkerError> {
        self.validate()?;
        let inner = match *self {
            ChunkerConfig::Cdc { min, avg, max } => {
                Inner::Cdc(fastcdc::v2020::StreamCDC::new(reader, min, avg, max))
            }
            ChunkerConfig::Fixed { size } => Inner::Fixed {
                reader,
                size: size as usize,
                done: false,
            },
        };
        Ok(Chunker { inner })
    }
}

impl ChunkerConfig {
    /// Cuts an in-memory buffer; returns the chunks' byte ranges in order.
    /// The same cut points as [`ChunkerConfig::chunker`] would find, without a
    /// stream buffer: small files are read whole and cut here.
    pub fn cut(&self, data: &[u8]) -> Result<Vec<std::ops::Range<usize>>, ChunkerError> {
        self.validate()?;
        Ok(match *self {
            ChunkerConfig::Cdc { min, avg, max } => {
                fastcdc::v2020::FastCDC::new(data, min, avg, max)
                    .map(|c| c.offset..c.offset + c.length)
                    .collect()
            }
            ChunkerConfig::Fixed { size } => (0..data.len())
                .step_by(size as usize)
                .map(|s| s..(s + size as usize).min(data.len()))
                .collect(),
        })
    }
}

/// An iterator of chunks cut from a reader. Each item is one chunk's bytes; the
/// chunks, concatenated, are exactly the bytes read. An empty stream has no chunks.
pub struct Chunker<R: Read> {
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Cdc(fastcdc::v2020::StreamCDC<R>),
    Fixed { reader: R, size: usize, done: bool },
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Cdc(cdc) => cdc.next().map(|r| {
                r.map(|c| c.data).map_err(|e| match e {
                    fastcdc::v2020::Error::IoError(io) => io,
                    other => io::Error::other(other.to_string()),
                })
            }),
            Inner::Fixed { reader, size, done } => {
                if *done {
                    return None;
                }
                // Read into spare capacity: no zeroing of a buffer that is
                // about to be overwritten.
                let mut buf = Vec::with_capacity(*size);
                if let Err(e) = reader.by_ref().take(*size as u64).read_to_end(&mut buf) {
                    *done = true;
                    return Some(Err(e));
                }
                let filled = buf.len();
                if filled < *size {
                    *done = true;
                }
                if filled == 0 {
                    return None;
                }
                Some(Ok(buf))
            }
        }
    }
}

/// True when `data` is all zero bytes: such chunks are stored as holes.
pub fn is_zero(data: &[u8]) -> bool {
    // Sixteen bytes at a time: this runs over every chunk read.
    let mut words = data.chunks_exact(16);
    words.all(|w| w.iter().fold(0u8, |acc, &b| acc | b) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_cdc() -> ChunkerConfig {
        ChunkerConfig::Cdc {
            min: 256,
            avg: 1024,
            max: 4096,
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(cfg: ChunkerConfig, data: &[u8]) -> Vec<Vec<u8>> {
        cfg.chunker(data).unwrap().map(|c| c.unwrap()).collect()
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(chunks(small_cdc(), b"").is_empty());
        assert!(chunks(ChunkerConfig::pages(), b"").is_empty());
    }

    #[test]
    fn bad_configs_are_refused_with_their_values() {
        let err = ChunkerConfig::Fixed { size: 1000 }.validate().unwrap_err();
        assert_eq!(err, ChunkerError::BadFixed(1000));
        assert!(err.to_string().contains("multiple of 8 KiB"));
        assert!(ChunkerConfig::Cdc {
            min: 9000,
            avg: 1024,
            max: 4096
        }
        .validate()
        .is_err());
    }

    #[test]
    fn insertion_moves_only_nearby_cdc_chunks() {
        let data = pseudo_random(512 * 1024, 7);
        let mut edited = data.clone();
        edited.splice(100_000..100_000, b"inserted bytes".iter().copied());
        let a = chunks(small_cdc(), &data);
        let b = chunks(small_cdc(), &edited);
        let set: std::collections::HashSet<_> = a.iter().collect();
        let shared = b.iter().filter(|c| set.contains(c)).count();
        // All but a few chunks around the insertion are unchanged.
        assert!(shared + 4 >= a.len(), "shared {shared} of {}", a.len());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 8193]));
        let mut v = vec![0u8; 8193];
        v[8192] = 1;
        assert!(!is_zero(&v));
        v[8192] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    proptest! {
        #[test]
        fn cutting_in_memory_matches_streaming(len in 0usize..40_000, seed in any::<u64>(), fixed in any::<bool>()) {
            let data = pseudo_random(len, seed);
            let cfg = if fixed { ChunkerConfig::Fixed { size: PAGE_SIZE } } else { small_cdc() };
            let streamed = chunks(cfg, &data);
            let cut: Vec<Vec<u8>> = cfg.cut(&data).unwrap().into_iter().map(|r| data[r].to_vec()).collect();
            prop_assert_eq!(cut, streamed);
        }

        #[test]
        fn cdc_chunks_concatenate_to_input_within_bounds(data in proptest::collection::vec(any::<u8>(), 0..20_000), seed in any::<u64>()) {
            let data = if seed % 2 == 0 { data } else { pseudo_random(data.len(), seed) };
            let cs = chunks(small_cdc(), &data);
            prop_assert_eq!(cs.concat(), data.clone());
            for (i, c) in cs.iter().enumerate() {
                prop_assert!(c.len() <= 4096);
                if i + 1 < cs.len() { prop_assert!(c.len() >= 256); }
            }
            prop_assert_eq!(chunks(small_cdc(), &data), cs);
        }

        #[test]
        fn fixed_chunks_are_page_aligned(len in 0usize..300_000, pages in 1u32..4) {
            let data = pseudo_random(len, 3);
            let size = (pages * PAGE_SIZE) as usize;
            let cs = chunks(ChunkerConfig::Fixed { size: size as u32 }, &data);
            prop_assert_eq!(cs.concat(), data);
            prop_assert_eq!(cs.len(), len.div_ceil(size));
            for c in cs.iter().take(cs.len().saturating_sub(1)) {
                prop_assert_eq!(c.len(), size);
            }
        }
    }
}
