//! The local-disk backend: lifeboat's embedded default.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{direct, ErrorKind, ObjectInfo, Storage, StorageError};

/// Marks temporary files of writes in progress; listings never show them.
const TEMP_MARKER: &str = ".tmp-";

/// A repository directory on local disk.
///
/// A put writes a temporary file beside its target, fsyncs it, renames it into
/// place and fsyncs the directory, so a crash leaves either the old object or the
/// new one, never a torn one; leftover temporary files are ignored by listings.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A store rooted at `root`. Nothing is touched until the first call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
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
        ensure_dir(dir, &self.root)?;
        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).map_err(io::Error::other)?;
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::other("object key has no file name"))?;
        let temp = dir.join(format!(
            "{}{TEMP_MARKER}{}",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            // Large objects (packs) go past the page cache: written once,
            // read rarely (see `direct`).
            let direct =
                data.len() as u64 >= direct::DIRECT_MIN && direct::try_write_new(&temp, &f, data)?;
            if !direct {
                f.write_all(data)?;
            }
            f.sync_all()?;
            drop(f);
            fs::rename(&temp, &target)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn list_sync(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let start = self.path(dir_part);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let ft = entry.file_type()?;
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                if key.contains(TEMP_MARKER) || !key.starts_with(prefix) {
                    continue;
                }
                let (size, modified) = match entry.metadata() {
                    Ok(m) => (m.len(), m.modified().ok()),
                    // Deleted between listing and stat: not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(ObjectInfo {
                    key,
                    size,
                    modified,
                });
            }
        }
        Ok(out)
    }
}

/// Creates `dir` and any missing parents up to `root`, fsyncing each parent
/// whose entries changed so the new directories survive a crash.
fn ensure_dir(dir: &Path, root: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent != root || !root.is_dir() {
            ensure_dir(parent, root)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
            // Large ranges (restores read packs in up to 4 MiB pieces) go
            // past the page cache.
            let n = if len >= direct::DIRECT_MIN {
                direct::try_read_range(&path, range.start, len, &mut buf)?
            } else {
                None
            };
            let n = match n {
                Some(n) => n as usize,
                None => {
                    let mut f = File::open(path)?;
                    f.seek(SeekFrom::Start(range.start))?;
                    buf.clear();
                    buf.reserve(usize::try_from(len).map_err(io::Error::other)?);
                    // Reads into the spare capacity: no zeroing of a buffer
                    // about to be overwritten.
                    f.take(len).read_to_end(&mut buf)?
                }
            };
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

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        self.blocking("delete", key, move |_| match fs::remove_file(&path) {
            Ok(()) => path.parent().map_or(Ok(()), sync_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}
