//! Progress reporting: the library reports, the binary draws.

/// Receives progress of long operations. The `lifeboat` binary implements it
/// with a progress bar on a terminal; the default methods ignore everything.
pub trait Progress: Send + Sync {
    /// A phase begins (`backup`, `restore`, `verify`), with the bytes it will
    /// process when known.
    fn start(&self, _phase: &str, _total_bytes: Option<u64>) {}
    /// Bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// The total became known or changed.
    fn set_total(&self, _total_bytes: u64) {}
    /// A non-fatal problem the user should see (a skipped file, a retry).
    fn warn(&self, _message: &str) {}
    /// The phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
