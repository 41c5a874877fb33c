//! A throwaway OpenSearch node on loopback: the real server (2.19.6, the
//! embedded node of `testkit/opensearch`, built by
//! `scripts/install-opensearch.sh`) that the `es` tests run against.
//!
//! [`LocalOpenSearch::start`] runs the node's JVM in its own process group on
//! a free port, with its home, data, logs and snapshot repositories
//! (`path.repo`, [`LocalOpenSearch::repo_dir`]) in a temporary directory, and
//! waits (with a deadline) until `_cluster/health` is yellow or green.
//! Dropping the handle sends SIGTERM to the group (the node closes itself),
//! SIGKILL after a deadline, and removes the directory. Security is off: plain
//! HTTP without authentication.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The OpenSearch version the launcher embeds.
pub const VERSION: &str = "2.19.6";

/// The environment variable naming the launcher's directory (the one
/// `scripts/install-opensearch.sh` prints; it holds `classpath`).
pub const HOME_ENV: &str = "LIFEBOAT_OPENSEARCH_HOME";

/// The environment variable with the node's JVM options (default
/// `-Xms512m -Xmx1g`).
pub const JAVA_OPTS_ENV: &str = "LIFEBOAT_OPENSEARCH_JAVA_OPTS";

/// How long [`LocalOpenSearch::start`] waits for a healthy node.
pub const START_TIMEOUT: Duration = Duration::from_secs(180);

/// How long dropping the handle waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the node could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum OpenSearchError {
    /// The launcher has not been built (or Java is missing).
    #[error("the OpenSearch test node is not installed: {0} — run scripts/test.sh (or scripts/install-opensearch.sh, which needs Java 17 and Maven)")]
    NotInstalled(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The node exited, or was not healthy in time; carries its log's tail.
    #[error("{reason}; the node's log ({log}) ends with:\n{tail}")]
    Start {
        /// What went wrong.
        reason: String,
        /// The log file (in the node's directory, removed with it).
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// An HTTP exchange with the node failed or its answer was not JSON.
    #[error("HTTP {method} {path}: {reason}")]
    Http {
        /// The method.
        method: String,
        /// The path asked.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The result type of this module.
pub type Result<T, E = OpenSearchError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenSearchError {
    let what = what.into();
    move |source| OpenSearchError::Io { what, source }
}

/// The launcher's directory: `$LIFEBOAT_OPENSEARCH_HOME`, else
/// `${LIFEBOAT_CACHE:-$HOME/.cache/lifeboat}/opensearch-VERSION`.
pub fn launcher_home() -> PathBuf {
    if let Some(p) = std::env::var_os(HOME_ENV) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("LIFEBOAT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/lifeboat")
        });
    cache.join(format!("opensearch-{VERSION}"))
}

fn java_program() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// An HTTP answer from the node: its status and JSON body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, parsed (`Null` when empty).
    pub body: serde_json::Value,
}

/// A running OpenSearch node, stopped and removed when dropped.
pub struct LocalOpenSearch {
    child: Child,
    port: u16,
    node_dir: PathBuf,
    log: PathBuf,
    // Dropped after the node has stopped (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl LocalOpenSearch {
    /// Starts a node on a free loopback port in a new temporary directory and
    /// waits up to [`START_TIMEOUT`] until its cluster health is yellow or
    /// green. Fails with [`OpenSearchError::NotInstalled`] when the launcher
    /// is not built, and with the tail of the node's log when it exits or
    /// stays unhealthy.
    pub fn start() -> Result<LocalOpenSearch> {
        let home = launcher_home();
        let classpath_file = home.join("classpath");
        let classpath = std::fs::read_to_string(&classpath_file).map_err(|e| {
            OpenSearchError::NotInstalled(format!("cannot read {}: {e}", classpath_file.display()))
        })?;
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-opensearch-")
            .tempdir()
            .map_err(io("cannot create the node's temporary directory"))?;
        let node_dir = dir.path().join("node");
        let port = super::free_port().map_err(io("no free port on 127.0.0.1"))?;
        let log = dir.path().join("node.log");
        let out = File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        let err = out.try_clone().map_err(io("cannot share the log file"))?;
        let java = java_program();
        let opts = std::env::var(JAVA_OPTS_ENV).unwrap_or_else(|_| "-Xms512m -Xmx1g".into());
        let child = Command::new(&java)
            .args(opts.split_whitespace())
            .arg("-cp")
            .arg(classpath.trim())
            .arg("lifeboat.testkit.OpenSearchNode")
            .arg(port.to_string())
            .arg(&node_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: the stop signal reaches all it started.
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => OpenSearchError::NotInstalled(format!(
                    "{} not found (Java 17 is needed)",
                    java.display()
                )),
                _ => OpenSearchError::Io {
                    what: format!("cannot start {}", java.display()),
                    source: e,
                },
            })?;
        let mut node = LocalOpenSearch {
            child,
            port,
            node_dir,
            log,
            _dir: dir,
        };
        node.wait_healthy(START_TIMEOUT)?;
        Ok(node)
    }

    /// The process id of its JVM (the leader of its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node's HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's `path.repo`: `fs` snapshot repositories must lie under it.
    pub fn repo_dir(&self) -> PathBuf {
        self.node_dir.join("repo")
    }

    /// The node's log file (standard output and error of its JVM).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn start_error(&self, reason: String) -> OpenSearchError {
        OpenSearchError::Start {
            reason,
            log: self.log.display().to_string(),
            tail: self.log_tail(30),
        }
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("the OpenSearch node exited ({status})")));
            }
            // Connection refused until HTTP is up; then the server waits up
            // to a second for yellow itself.
            if let Ok(r) = self.request(
                "GET",
                "/_cluster/health?wait_for_status=yellow&timeout=1s",
                None,
            ) {
                let status = r.body.get("status").and_then(|s| s.as_str());
                if r.status == 200 && matches!(status, Some("yellow" | "green")) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "the OpenSearch node was not healthy (yellow) within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One HTTP request to the node (`path` with its query string), with an
    /// optional JSON or NDJSON body (`Content-Type: application/x-ndjson`
    /// when `body` ends with a newline, else `application/json`); returns
    /// the status and the JSON answer whatever the status.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Response> {
        let err = |reason: String| OpenSearchError::Http {
            method: method.to_string(),
            path: path.to_string(),
            reason,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| err(format!("cannot connect to {addr}: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(|e| err(e.to_string()))?;
        let body = body.unwrap_or("");
        let content_type = if body.ends_with('\n') {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        // HTTP/1.0: the server closes after its answer, which is then read
        // to the end without chunked decoding.
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(body.as_bytes()))
            .map_err(|e| err(format!("cannot send: {e}")))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| err(format!("cannot read the answer: {e}")))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| err(format!("no HTTP answer: {text:?}")))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| err(format!("no status line: {head:?}")))?;
        let body = if payload.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(payload)
                .map_err(|e| err(format!("answer is not JSON ({e}): {payload:.300}")))?
        };
        Ok(Response { status, body })
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }
}

impl Drop for LocalOpenSearch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // The launcher's shutdown hook closes the node on SIGTERM.
            self.signal(rustix::process::Signal::TERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                self.signal(rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.wait();
    }
}
