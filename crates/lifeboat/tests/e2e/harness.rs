//! Test harness: a repository on local disk or on a real Garage S3 server, and
//! a way to run the `lifeboat` binary against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use lifeboat_storage::{DynStorage, LocalStorage, S3Options, S3Storage};
use lifeboat_testkit::garage::Garage;

/// Asserts that `lifeboat args` succeeded, showing its output when not;
/// returns its stdout.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "lifeboat {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Where a test's repository lives.
pub enum Backend {
    Local,
    S3,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: String,
    pub garage: Option<Garage>,
    prefix: String,
}

impl Env {
    pub fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Local => {
                let repo = dir.path().join("repo").display().to_string();
                Env {
                    dir,
                    repo,
                    garage: None,
                    prefix: String::new(),
                }
            }
            Backend::S3 => {
                let g =
                    Garage::start().expect("start Garage (scripts/install-garage.sh installs it)");
                let prefix = "lifeboat-test".to_string();
                let repo = format!("s3://{}/{prefix}", g.bucket);
                Env {
                    dir,
                    repo,
                    garage: Some(g),
                    prefix,
                }
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `lifeboat` command with the repository, password and S3 settings set.
    pub fn cmd(&self) -> Command {
        self.with_env(Command::new(env!("CARGO_BIN_EXE_lifeboat")))
    }

    /// Runs `lifeboat args` with the failpoints `points` set (as
    /// `LIFEBOAT_FAILPOINTS`, see `lifeboat_types::failpoint`) and asserts
    /// that it died at one: ended by SIGABRT, as `abort` ends it, without a
    /// core file. Returns its output.
    pub fn crash(&self, points: &str, args: &[&str]) -> Output {
        let mut c = Command::new("sh");
        c.args(["-c", "ulimit -c 0 && exec \"$@\"", "sh"])
            .arg(env!("CARGO_BIN_EXE_lifeboat"));
        let out = self
            .with_env(c)
            .env(FAILPOINTS, points)
            .args(args)
            .output()
            .expect("run lifeboat");
        assert_aborted(&out, points, args);
        out
    }

    pub fn with_env(&self, mut c: Command) -> Command {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("LIFEBOAT_REPO", &self.repo)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            // The OpenSearch node a drill starts, where the test's own
            // HOME has it built.
            .env(
                lifeboat_scenarios::sandbox::opensearch::HOME_ENV,
                lifeboat_scenarios::sandbox::opensearch::launcher_home(),
            )
            .stdin(Stdio::null());
        if let Some(g) = &self.garage {
            c.env("LIFEBOAT_S3_ENDPOINT", &g.endpoint)
                .env("AWS_REGION", &g.region)
                .env("AWS_ACCESS_KEY_ID", &g.access_key_id)
                .env("AWS_SECRET_ACCESS_KEY", &g.secret_access_key);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run lifeboat")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lifeboat")
    }

    /// A fresh repository with cheap Argon2id settings (tests open it often).
    pub fn init(&self, extra: &[&str]) {
        let mut a = vec!["repo", "init", "--kdf-memory", "8MiB"];
        a.extend_from_slice(extra);
        self.ok(&a);
    }

    /// Direct access to the repository's objects, to damage or inspect them.
    pub fn storage(&self) -> DynStorage {
        match &self.garage {
            None => Arc::new(LocalStorage::new(&self.repo)),
            Some(g) => {
                let opts = S3Options {
                    endpoint: Some(g.endpoint.clone()),
                    region: Some(g.region.clone()),
                    access_key_id: Some(g.access_key_id.clone()),
                    secret_access_key: Some(g.secret_access_key.clone()),
                    virtual_host_style: false,
                    storage_class: None,
                };
                Arc::new(S3Storage::new(&g.bucket, &self.prefix, &opts).expect("s3 storage"))
            }
        }
    }

    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    pub fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        let s = self.storage();
        let mut v: Vec<_> = self
            .block(s.list(prefix))
            .expect("list")
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        v.sort();
        v
    }

    pub fn restore_dir(&self, snapshot: &str, name: &str) -> PathBuf {
        let target = self.path(name);
        self.ok(&[
            "files",
            "restore",
            snapshot,
            "--target",
            target.to_str().expect("utf8"),
        ]);
        target
    }
}

/// Everything below `dir`, directories and files, recursively; links are
/// listed, not followed.
pub fn entries_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The regular files below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    entries_below(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect()
}

/// The variable that sets failpoints (`lifeboat_types::failpoint::ENV`).
pub const FAILPOINTS: &str = lifeboat_types::failpoint::ENV;

/// Asserts that a run with the failpoints `points` set died at one: ended by
/// SIGABRT, the signal a failpoint's `abort` ends the process with.
pub fn assert_aborted(out: &Output, points: &str, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    const SIGABRT: i32 = 6;
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "lifeboat {args:?} with {points} did not die at the failpoint ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible text-like bytes.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "alpha ",
        "beta ",
        "gamma ",
        "delta ",
        "user@example.com ",
        "session ",
        "login\n",
    ];
    let r = random_bytes(len / 4 + 16, seed);
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[r[i % r.len()] as usize % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Compares two trees: same entries, types, contents, modes, mtimes, symlink
/// targets. Returns a description of the first difference.
pub fn diff_trees(a: &Path, b: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let pa = a.join(&rel);
        let pb = b.join(&rel);
        let ma = std::fs::symlink_metadata(&pa).ok()?;
        let mb = match std::fs::symlink_metadata(&pb) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: missing in restore ({e})", rel.display())),
        };
        if ma.file_type() != mb.file_type() {
            return Some(format!("{}: type differs", rel.display()));
        }
        if !ma.file_type().is_symlink() && ma.mode() != mb.mode() {
            return Some(format!(
                "{}: mode {:o} vs {:o}",
                rel.display(),
                ma.mode(),
                mb.mode()
            ));
        }
        if !ma.is_dir() && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            return Some(format!("{}: mtime differs", rel.display()));
        }
        if ma.file_type().is_symlink() {
            if std::fs::read_link(&pa).ok() != std::fs::read_link(&pb).ok() {
                return Some(format!("{}: symlink target differs", rel.display()));
            }
        } else if ma.is_file() {
            if ma.len() != mb.len() || std::fs::read(&pa).ok() != std::fs::read(&pb).ok() {
                return Some(format!("{}: contents differ", rel.display()));
            }
        } else if ma.is_dir() {
            let mut na: Vec<_> = std::fs::read_dir(&pa)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            let mut nb: Vec<_> = std::fs::read_dir(&pb)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            na.sort();
            nb.sort();
            if na != nb {
                return Some(format!(
                    "{}: entries differ: {na:?} vs {nb:?}",
                    rel.display()
                ));
            }
            for n in na {
                stack.push(rel.join(n));
            }
        }
    }
    None
}

/// Where a source directory lands under a restore target (paths are stored absolute).
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source"))
}

pub fn snapshot_id(backup_json: &serde_json::Value) -> String {
    backup_json["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}
