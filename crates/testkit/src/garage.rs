//! A real Garage S3 server for tests.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Garage version the test script installs.
pub const GARAGE_VERSION: &str = "2.5.0";

/// A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand
/// it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

/// A running single-node Garage server with one bucket and one key allowed on it.
pub struct Garage {
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The S3 region Garage answers for.
    pub region: String,
    /// The bucket created for the test.
    pub bucket: String,
    /// Access key id with read, write and owner rights on the bucket.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    binary: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
    s3_port: u16,
    child: Option<Child>,
}

impl Garage {
    /// The garage binary: `$LIFEBOAT_GARAGE_BIN`, else the test script's cache
    /// (`~/.cache/lifeboat/garage-VERSION/bin/garage`), else `garage` on PATH.
    pub fn binary() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("LIFEBOAT_GARAGE_BIN").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(home) = std::env::var_os("HOME") {
            let p = Path::new(&home).join(format!(
                ".cache/lifeboat/garage-{GARAGE_VERSION}/bin/garage"
            ));
            if p.exists() {
                return Ok(p);
            }
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join("garage");
            if p.exists() {
                return Ok(p);
            }
        }
        Err("the garage binary was not found: run scripts/install-garage.sh (or set LIFEBOAT_GARAGE_BIN)".into())
    }

    /// Starts a server in a fresh temporary directory and sets up its layout,
    /// key and bucket. Returns once the bucket accepts S3 requests.
    pub fn start() -> Result<Garage, String> {
        let binary = Self::binary()?;
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-garage-")
            .tempdir()
            .map_err(|e| format!("create a temp dir: {e}"))?;
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin}"
"#,
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = random_hex(64),
            admin = random_hex(32),
        );
        fs::write(&config, text).map_err(|e| format!("write garage config: {e}"))?;
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage".into(),
            bucket: format!("lifeboat-{}", random_hex(8)),
            access_key_id: format!("GK{}", random_hex(24)),
            secret_access_key: random_hex(64),
            binary,
            config,
            dir,
            s3_port,
            child: None,
        };
        g.spawn()?;
        let node = g.cli_retry(&["node", "id", "-q"])?;
        let node = node
            .split('@')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        g.cli_retry(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        g.cli_retry(&["layout", "apply", "--version", "1"])?;
        let (key, secret, bucket) = (
            g.access_key_id.clone(),
            g.secret_access_key.clone(),
            g.bucket.clone(),
        );
        g.cli_retry(&[
            "key",
            "import",
            "--yes",
            "-n",
            "lifeboat-test",
            &key,
            &secret,
        ])?;
        g.create_bucket(&bucket)?;
        g.wait_for_bucket(&bucket)?;
        Ok(g)
    }

    /// Creates another bucket with the same key allowed on it.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        self.cli_retry(&["bucket", "create", name])?;
        self.cli_retry(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.access_key_id,
        ])?;
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again with the same config, ports and data, and waits
    /// until the bucket answers again.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()?;
        let bucket = self.bucket.clone();
        self.wait_for_bucket(&bucket)
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open garage log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        // Wait until the S3 port accepts connections.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!("garage exited at start:\n{}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "garage did not listen within 60 s:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run garage {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    /// Admin commands right after start may race the node's own startup.
    fn cli_retry(&self, args: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.cli(args) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{e}\nlog:\n{}", self.log_tail()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// An anonymous GET of the bucket: any HTTP answer (403) means the S3 API serves it.
    fn s3_answers(&self, bucket: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.s3_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let req = format!(
            "GET /{bucket}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.s3_port
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.starts_with("HTTP/1.1").then_some(buf)
    }

    fn wait_for_bucket(&self, bucket: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Garage answers 403 (access denied) for an anonymous request to a
            // bucket it knows, and 404 NoSuchBucket for one it does not yet.
            if let Some(resp) = self.s3_answers(bucket) {
                if !resp.contains("NoSuchBucket") && !resp.starts_with("HTTP/1.1 5") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "bucket {bucket} not served within 60 s:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The raw S3 answer to an anonymous GET of the bucket, for tests of this harness.
    pub fn probe(&self) -> Option<String> {
        self.s3_answers(&self.bucket)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
