//! A small blocking RESP2 client: enough to log in, ask INFO and CONFIG, and
//! start a replication SYNC.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{RedisError, Result};
use crate::url::RedisUrl;

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$…`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (simple and bulk strings).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Longest line or bulk string accepted in a reply (INFO is a few KiB; an
/// RDB is not read through here).
const MAX_REPLY: usize = 64 << 20;

/// A plain or TLS (`rediss://`) connection.
pub enum Stream {
    /// TCP.
    Plain(TcpStream),
    /// TLS over TCP (rustls).
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The TLS client setup: the Mozilla root certificates (webpki-roots), or
/// the CA certificates of a PEM file (a private CA, as self-hosted and
/// managed Redis use).
fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| {
                    format!("{} is not a PEM certificate file: {e}", path.display())
                })?;
                roots.add(c).map_err(|e| {
                    format!("{}: a certificate that cannot be used: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One connection.
pub struct Conn {
    reader: BufReader<Stream>,
    target: String,
    /// Commands sent but not yet written: written together before the next
    /// read (or at 1 MiB), so pipelined commands (RESTORE batches) cost one
    /// write, and one TLS record, per batch instead of per command.
    out: Vec<u8>,
    /// The first of them, for a message should writing fail.
    out_first: String,
}

/// Commands gathered before they are written even without a read.
const OUT_MAX: usize = 1 << 20;

impl Conn {
    /// Connects (10 s to connect; `timeout` for every read after) and logs in
    /// with the URL's user and password. `rediss://` is TLS, checked against
    /// the Mozilla roots.
    pub fn connect(url: &RedisUrl, timeout: Duration) -> Result<Conn> {
        Self::connect_with(url, timeout, None)
    }

    /// [`Conn::connect`], with TLS checked against the CA certificates in
    /// `ca_file` (PEM) when given.
    pub fn connect_with(
        url: &RedisUrl,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Conn> {
        let target = url.target();
        let connect_err = |reason: String| RedisError::Connect {
            target: target.clone(),
            reason,
        };
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| connect_err(e.to_string()))?
            .collect();
        let mut last = String::from("no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .and_then(|_| stream.set_nodelay(true))
            .map_err(|e| connect_err(e.to_string()))?;
        let stream = if url.tls {
            let config = tls_config(ca_file).map_err(|reason| RedisError::Connect {
                target: target.clone(),
                reason,
            })?;
            let name = rustls_pki_types::ServerName::try_from(url.host.clone()).map_err(|e| {
                connect_err(format!(
                    "{:?} cannot be checked against a certificate: {e}",
                    url.host
                ))
            })?;
            let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
                .map_err(|e| connect_err(format!("TLS setup failed: {e}")))?;
            let mut s = rustls::StreamOwned::new(tls, stream);
            // The handshake now, so a certificate problem is named as one.
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).map_err(|e| {
                    connect_err(format!(
                        "TLS handshake failed: {e} (is the server's certificate signed by a CA lifeboat trusts? give it with --redis-ca FILE)"
                    ))
                })?;
            }
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(stream)
        };
        let mut conn = Conn {
            reader: BufReader::with_capacity(1 << 20, stream),
            target: target.clone(),
            out: Vec::new(),
            out_first: String::new(),
        };
        if let Some(pw) = &url.password {
            let reply = match &url.user {
                Some(u) => conn.command(&[b"AUTH", u.as_bytes(), pw.as_bytes()])?,
                None => conn.command(&[b"AUTH", pw.as_bytes()])?,
            };
            if let Reply::Error(e) = reply {
                return Err(RedisError::Auth { target, reason: e });
            }
        } else if let Some(u) = &url.user {
            return Err(RedisError::BadUrl {
                url: format!("redis://{u}@{target}"),
                reason: "an ACL user needs its password: redis://user:password@host:port".into(),
            });
        }
        // A server that wants a password says so on the first command.
        match conn.command(&[b"PING"])? {
            Reply::Error(e) if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") => {
                Err(RedisError::Auth { target, reason: e })
            }
            Reply::Error(e) => Err(conn.protocol("PING", &e)),
            _ => Ok(conn),
        }
    }

    /// Host and port, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn protocol(&self, what: &str, reason: &str) -> RedisError {
        RedisError::Protocol {
            target: self.target.clone(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> RedisError {
        let reason = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "no answer before the timeout (--timeout)".to_string()
            }
            std::io::ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
            _ => e.to_string(),
        };
        self.protocol(what, &reason)
    }

    /// Sends a command without reading its reply (written with the next
    /// read, or once 1 MiB of commands is waiting).
    pub fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        if self.out.is_empty() {
            self.out_first = command_name(args);
        }
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(self.out, "${}\r\n", a.len());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
        if self.out.len() >= OUT_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the commands sent so far.
    fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.reader.get_mut().write_all(&self.out);
        self.out.clear();
        written.map_err(|e| self.io_err(&format!("send {}", self.out_first), e))
    }

    /// Sends a command and reads its reply (an error reply is a `Reply`,
    /// not an `Err`).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args)?;
        self.reply(&command_name(args))
    }

    /// One line without its `\r\n`.
    pub fn line(&mut self, what: &str) -> Result<String> {
        self.flush()?;
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.io_err(what, e))?;
        if n == 0 {
            return Err(self.protocol(what, "the server closed the connection"));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads one reply.
    pub fn reply(&mut self, what: &str) -> Result<Reply> {
        let line = self.line(what)?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let number = |s: &str| -> Result<i64> {
            s.parse()
                .map_err(|_| self.protocol(what, &format!("not a RESP reply: {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(number(rest)?),
            "$" => {
                let n = number(rest)?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_REPLY {
                    return Err(self.protocol(what, "a reply larger than 64 MiB"));
                }
                let mut data = vec![0u8; n + 2];
                self.reader
                    .read_exact(&mut data)
                    .map_err(|e| self.io_err(what, e))?;
                data.truncate(n);
                Reply::Bulk(Some(data))
            }
            "*" => {
                let n = number(rest)?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.reply(what)?);
                }
                Reply::Array(Some(items))
            }
            _ => return Err(self.protocol(what, &format!("not a RESP reply: {line:?}"))),
        })
    }

    /// The buffered reader, for what follows a SYNC (whose reply line was
    /// read, so nothing waits to be written).
    pub fn reader(&mut self) -> &mut BufReader<Stream> {
        debug_assert!(self.out.is_empty());
        &mut self.reader
    }

    /// `INFO section` as `field → value`, and the keyspace lines by database.
    pub fn info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        match self.command(&[b"INFO", section.as_bytes()])? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect()),
            Reply::Error(e) => Err(self.protocol(&format!("INFO {section}"), &e)),
            other => Err(self.protocol(
                &format!("INFO {section}"),
                &format!("unexpected reply {other:?}"),
            )),
        }
    }
}

/// A command's name, for messages.
fn command_name(args: &[&[u8]]) -> String {
    String::from_utf8_lossy(args.first().copied().unwrap_or_default()).into_owned()
}
