//! Read-ahead between a dump program's output and the repository.

use std::io::Read;

/// Read-ahead between pg_dump and the repository: up to 32 × 4 MiB.
pub(super) const READ_AHEAD_BLOCK: usize = 4 << 20;
pub(super) const READ_AHEAD_BLOCKS: usize = 32;

/// Hands `consume` a reader of `source` that is read ahead on another
/// thread, up to `blocks` blocks of `block` bytes, so the producer on the
/// other side of a pipe keeps going while the consumer is busy.
pub(super) fn read_ahead<T>(
    source: &mut (dyn Read + Send),
    block: usize,
    blocks: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(blocks);
    std::thread::scope(|s| {
        s.spawn(move || loop {
            let mut buf = vec![0u8; block];
            let mut filled = 0;
            let r = loop {
                match source.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == block {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            let end = filled < block;
            // The consumer gone (it failed) ends the reading too.
            let sent = match r {
                Ok(()) => tx.send(Ok(buf)),
                Err(e) => tx.send(Err(e)),
            };
            if sent.is_err() || end {
                return;
            }
        });
        let mut reader = ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        };
        consume(&mut reader)
    })
}

/// The consuming end of [`read_ahead`].
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(block)) if block.is_empty() => return Ok(0),
                Ok(Ok(block)) => {
                    self.current = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
