//! The local-disk backend: lifeboat's embedded default.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::durable::{self, parent_of, sync_dir, TEMP_MARKER};
use crate::{ErrorKind, ObjectInfo, Storage, StorageError};

/// A repository directory on local disk.
///
/// A put writes a temporary file beside its target, fsyncs it, renames it into
/// place and fsyncs the directory, so a crash leaves either the old object or the
/// new one, never a torn one; leftover temporary files are ignored by listings.
///
/// Objects are private to the repository's owner: files 0600 and
/// directories 0700, or 0640/0750 when the root directory itself lets its
/// group in (`repo init --group-readable`), so no other local user can copy a
/// key slot and guess its passphrase offline.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Whether the group may read: learnt from the root's mode at the first
    /// write.
    group: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl LocalStorage {
    /// A store rooted at `root`. Nothing is touched until the first call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            group: Default::default(),
        }
    }

    /// Creates the root directory, owner-only or with read access for its
    /// group, before a repository is initialised in it; an existing root
    /// gets that mode too.
    pub fn create_root(&self, group_readable: bool) -> io::Result<()> {
        let mode = if group_readable { 0o750 } else { 0o700 };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&self.root)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(mode))?;
        let _ = self.group.set(group_readable);
        Ok(())
    }

    /// Modes for new files and directories: owner only, or the group too
    /// when the root lets it in.
    fn modes(&self) -> (u32, u32) {
        let group = *self.group.get_or_init(|| {
            fs::metadata(&self.root).is_ok_and(|m| m.permissions().mode() & 0o050 != 0)
        });
        if group {
            (0o640, 0o750)
        } else {
            (0o600, 0o700)
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, e: io::Error) -> StorageError {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                ErrorKind::Transient
            }
            io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
            _ => ErrorKind::Permanent,
        };
        StorageError::new(kind, op, key, &self.root.display().to_string(), e)
    }

    async fn blocking<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&LocalStorage) -> io::Result<T> + Send + 'static,
    {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || f(&this)).await;
        match result {
            Ok(r) => r.map_err(|e| self.err(op, key, e)),
            Err(join) => Err(StorageError::new(
                ErrorKind::Permanent,
                op,
                key,
                &self.location(),
                format!("the I/O task failed: {join}"),
            )),
        }
    }

    fn put_sync(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let target = self.path(key);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("object key has no parent directory"))?;
        let (file_mode, dir_mode) = self.modes();
        ensure_dir(dir, &self.root, dir_mode)?;
        durable::write_file_with(&target, data, file_mode, |step| match step {
            durable::Step::Written => lifeboat_types::failpoint_io!("local-put-before-rename"),
            durable::Step::Renamed => lifeboat_types::failpoint_io!("local-put-before-dir-sync"),
        })
    }

    /// Every file below `dir` (recursively) whose key `keep` accepts: its
    /// key, size and modification time. Files deleted while the walk runs
    /// are simply not there.
    fn walk(&self, dir: &Path, keep: impl Fn(&str) -> bool) -> io::Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                if !keep(&key) {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) => out.push(ObjectInfo {
                        key,
                        size: m.len(),
                        modified: m.modified().ok(),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Every temporary file of a put that never finished, anywhere below
    /// the root.
    fn leftovers_sync(&self) -> io::Result<Vec<ObjectInfo>> {
        self.walk(&self.root, |key| {
            key.rsplit('/')
                .next()
                .is_some_and(|name| name.contains(TEMP_MARKER))
        })
    }

    fn list_sync(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        self.walk(&self.path(dir_part), |key| {
            !key.contains(TEMP_MARKER) && key.starts_with(prefix)
        })
    }
}

/// Creates `dir` (with `mode`) and any missing parents up to `root`,
/// fsyncing each parent whose entries changed so the new directories survive
/// a crash. A relative root (`myrepo`) has the working directory as parent.
fn ensure_dir(dir: &Path, root: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent != root || !root.is_dir() {
            ensure_dir(parent, root, mode)?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let k = key.to_string();
        self.blocking("put", key, move |s| s.put_sync(&k, &data))
            .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        self.blocking("get", key, move |_| fs::read(path).map(Bytes::from))
            .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.get_range_into(key, range, Vec::new())
            .await
            .map(Bytes::from)
    }

    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key);
        self.blocking("get", key, move |_| {
            let len = range.end.saturating_sub(range.start);
            // Through the page cache: a pack a recent backup, restore or
            // drill read is then a copy from memory (a restore from a warm
            // repository takes three quarters of the time), and a cold read
            // costs about what a direct one does (docs/benchmarks.md).
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(range.start))?;
            buf.clear();
            buf.reserve(usize::try_from(len).map_err(io::Error::other)?);
            // Reads into the spare capacity: no zeroing of a buffer about to
            // be overwritten.
            let n = f.take(len).read_to_end(&mut buf)?;
            if (n as u64) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the object ends {} bytes before the range asked for",
                        len - n as u64
                    ),
                ));
            }
            Ok(buf)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let p = prefix.to_string();
        self.blocking("list", prefix, move |s| s.list_sync(&p))
            .await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(key);
        let k = key.to_string();
        self.blocking("stat", key, move |_| match fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: k,
                size: m.len(),
                modified: m.modified().ok(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn list_leftovers(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.blocking("list", "", |s| s.leftovers_sync()).await
    }

    async fn delete_leftover(&self, key: &str) -> Result<(), StorageError> {
        let name_ok = std::path::Path::new(key)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(TEMP_MARKER));
        if !name_ok || key.split('/').any(|c| c == "..") {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                "delete",
                key,
                &self.location(),
                "not a leftover temporary file",
            ));
        }
        // Unlike delete, a file that is not there is NotFound: the caller
        // counts what it removed.
        let path = self.path(key);
        self.blocking("delete", key, move |_| {
            fs::remove_file(&path)?;
            sync_dir(parent_of(&path))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        self.blocking("delete", key, move |_| match fs::remove_file(&path) {
            Ok(()) => sync_dir(parent_of(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}
