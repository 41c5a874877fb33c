//! Bench-only: writes a real repository whose index holds about N chunks,
//! through the public API (a stream backup cut into tiny 64–1024-byte
//! chunks of incompressible data), for the index memory benchmark
//! (`bench/index/run.sh`). Not a test.
//!
//! ```text
//! cargo run --release -p lifeboat-repo --example gen_index -- DIR CHUNKS [PASSWORD] [referenced]
//! ```
//!
//! Chunks are written in rounds of at most 500 000, one snapshot a round.
//! By default a round's stream is then replaced, in the same snapshot, by a
//! one-chunk stream: the chunks stay stored and indexed but no snapshot
//! lists them (unused data a prune would remove), so that reading snapshots
//! (`lifeboat snapshots` and `latest` hold every snapshot in memory) does not
//! hide the index's memory. With `referenced` each snapshot keeps its round's
//! chunks (what a prune benchmark wants). The repository uses a cheap key
//! derivation so that the benchmark measures the index, not Argon2id.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::Arc;

use lifeboat_repo::{
    ChunkerConfig, Credential, InitOptions, Kdf, NoProgress, Repository, SnapshotOptions,
};
use lifeboat_storage::LocalStorage;

/// Incompressible, non-repeating bytes (xorshift64), `left` of them.
struct Noise {
    x: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for c in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            c.copy_from_slice(&self.x.to_le_bytes()[..c.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("DIR CHUNKS [PASSWORD]");
    let target: u64 = args.get(2).expect("DIR CHUNKS").parse().unwrap();
    let password = args.get(3).cloned().unwrap_or_else(|| "bench".into());
    let referenced = args.get(4).is_some_and(|a| a == "referenced");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let storage = Arc::new(LocalStorage::new(dir));
    let chunker = ChunkerConfig::Cdc {
        min: 64,
        avg: 256,
        max: 1024,
    };
    let mut repo = Repository::init(
        storage,
        rt.handle().clone(),
        &Credential::passphrase(password.into_bytes()),
        &InitOptions {
            chunker,
            pack_size: 16 << 20,
            compression_level: 0,
            passphrase_kdf: Kdf::Argon2id {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
        },
    )
    .unwrap();
    // Its own index cache, removed at the end (not the user's ~/.cache).
    let cache = format!("{dir}.gen-cache");
    repo.set_index_cache(
        Some(cache.clone().into()),
        lifeboat_repo::INDEX_CACHE_MIN_CHUNKS,
    );
    let started = std::time::Instant::now();
    let mut chunks = 0u64;
    let mut round = 0u64;
    while chunks < target - target / 100 {
        let want = (target - chunks).min(500_000);
        let mut draft = repo
            .stream_snapshot(&SnapshotOptions::named(
                "stream",
                &format!("gen-{round}"),
                "bench",
                &[],
            ))
            .unwrap();
        // ~290 bytes a chunk on average with these bounds.
        let noise = Noise {
            x: round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            left: want * 290,
        };
        draft
            .add_stream_with("data", noise, chunker, &NoProgress)
            .unwrap();
        if !referenced {
            let tiny = Noise {
                x: round | 1,
                left: 100,
            };
            draft
                .add_stream_with("data", tiny, chunker, &NoProgress)
                .unwrap();
        }
        let out = draft.commit().unwrap();
        chunks += out.snapshot.stats.chunks_new;
        round += 1;
        eprintln!(
            "{chunks} chunks in {round} snapshots, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!("{chunks}");
}
