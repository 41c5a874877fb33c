//! Throwaway servers on loopback and in temporary directories: what a
//! scenario, a test or a drill restores into and checks.

pub mod opensearch;
pub mod pg;
pub mod redis;

/// A free TCP port on 127.0.0.1 (a PostgreSQL sandbox listens on a Unix
/// socket only, but the port names the socket).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}
