//! A faulty network link for tests: a TCP proxy on loopback between a
//! client and a real server (a Garage in another "region") that, by a
//! seeded random plan, resets connections as they open, cuts them part way
//! through a transfer, or stalls them. What it did is counted, so a test
//! can show the faults really happened.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often each fault strikes, per connection, in percent.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Connections closed as soon as they are accepted.
    pub reset_percent: u32,
    /// Connections cut after some bytes of the server's answer.
    pub cut_percent: u32,
    /// Connections whose answer waits `stall` before it flows.
    pub stall_percent: u32,
    /// How long a stall lasts (longer than the client's timeout, so the
    /// client gives up on it and tries again).
    pub stall: Duration,
    /// Stalls at most (each costs the client its timeout).
    pub max_stalls: u64,
    /// The random plan's seed.
    pub seed: u64,
}

/// What the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Connections accepted.
    pub connections: u64,
    /// Reset at once.
    pub resets: u64,
    /// Cut part way.
    pub cuts: u64,
    /// Stalled.
    pub stalls: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    resets: AtomicU64,
    cuts: AtomicU64,
    stalls: AtomicU64,
}

/// A running faulty link; stopped when dropped.
pub struct FaultyLink {
    /// Where clients connect: `http://127.0.0.1:PORT` for an HTTP server.
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    enabled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// xorshift64*, enough for a test's plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn percent(&mut self, p: u32) -> bool {
        self.next() % 100 < u64::from(p)
    }
}

/// What happens to one connection.
#[derive(Clone, Copy)]
enum Fate {
    Pass,
    Reset,
    Cut(usize),
    Stall,
}

impl FaultyLink {
    /// Starts a link to `upstream` (`127.0.0.1:PORT`) with `plan`.
    pub fn start(upstream: SocketAddr, plan: FaultPlan) -> std::io::Result<FaultyLink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let enabled = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(Rng(plan.seed | 1)));
        let (c, e, s) = (counters.clone(), enabled.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                c.connections.fetch_add(1, Ordering::SeqCst);
                let fate = if e.load(Ordering::SeqCst) {
                    let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
                    if r.percent(plan.reset_percent) {
                        Fate::Reset
                    } else if r.percent(plan.cut_percent) {
                        Fate::Cut(200 + (r.next() % 20_000) as usize)
                    } else if c.stalls.load(Ordering::SeqCst) < plan.max_stalls
                        && r.percent(plan.stall_percent)
                    {
                        Fate::Stall
                    } else {
                        Fate::Pass
                    }
                } else {
                    Fate::Pass
                };
                match fate {
                    Fate::Reset => {
                        c.resets.fetch_add(1, Ordering::SeqCst);
                        // An RST rather than a clean close: linger 0.
                        let _ = client.set_linger_zero();
                        drop(client);
                    }
                    Fate::Stall => {
                        c.stalls.fetch_add(1, Ordering::SeqCst);
                        let stall = plan.stall;
                        std::thread::spawn(move || {
                            std::thread::sleep(stall);
                            let _ = pipe(client, upstream, None);
                        });
                    }
                    Fate::Cut(after) => {
                        c.cuts.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || pipe(client, upstream, Some(after)));
                    }
                    Fate::Pass => {
                        std::thread::spawn(move || pipe(client, upstream, None));
                    }
                }
            }
        });
        Ok(FaultyLink {
            addr,
            counters,
            enabled,
            stop,
            accept: Some(accept),
        })
    }

    /// The link's URL for an HTTP server behind it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults on or off (off: a plain proxy).
    pub fn set_faults(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// What it did so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        FaultCounts {
            connections: c.connections.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            cuts: c.cuts.load(Ordering::SeqCst),
            stalls: c.stalls.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

trait LingerZero {
    fn set_linger_zero(&self) -> std::io::Result<()>;
}

impl LingerZero for TcpStream {
    /// SO_LINGER with a zero timeout: the close sends RST, as a peer that
    /// crashed or a middlebox that dropped the connection would.
    fn set_linger_zero(&self) -> std::io::Result<()> {
        rustix::net::sockopt::set_socket_linger(self, Some(Duration::ZERO))
            .map_err(std::io::Error::from)
    }
}

/// Copies both ways between `client` and a new connection to `upstream`;
/// with `cut`, the server's answer is cut after that many bytes.
fn pipe(client: TcpStream, upstream: SocketAddr, cut: Option<usize>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut sent = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut {
            Some(limit) if sent + n >= limit => {
                let _ = c_write.write_all(&buf[..limit - sent]);
                let _ = c_write.set_linger_zero();
                let _ = c_write.shutdown(Shutdown::Both);
                let _ = s_read.shutdown(Shutdown::Both);
                break;
            }
            _ => n,
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
