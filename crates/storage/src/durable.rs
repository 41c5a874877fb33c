//! Writing a whole file so that a crash leaves the old one or the new one,
//! never a torn one.
//!
//! The bytes go to a temporary file beside the target (same directory, so
//! same file system), named `<name>.tmp-<16 hex digits>` ([`TEMP_MARKER`]);
//! the file is fsynced, renamed to the target's name, and the directory is
//! fsynced so that the rename itself survives a crash. At worst a crash
//! leaves the temporary file, which nothing reads: the local store's
//! listings skip it and `repair leftovers` removes it.
//!
//! [`write_file`] writes bytes held in memory (an object, a configuration
//! file); [`NewFile`] is the same for contents written as they come (a
//! restored dump), and can refuse to replace a file that is already there.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::direct;

/// Marks temporary files of writes in progress: a file whose name holds it
/// is not an object, and one left behind is a leftover of a killed write.
pub const TEMP_MARKER: &str = ".tmp-";

/// The points of a write where it may be stopped (by failpoints, in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The temporary file is written and fsynced, not yet renamed.
    Written,
    /// The file has its name; its directory is not yet fsynced.
    Renamed,
}

/// Writes `data` to `path` crash-safely, replacing what is there; a new
/// file gets `mode` (less the umask, as `open(2)` does). Large contents
/// go past the page cache where the file system allows (see [`direct`]).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_file_with(path, data, mode, |_| Ok(()))
}

/// [`write_file`], calling `at` at each [`Step`]; an error from it fails
/// the write there (before the rename, the temporary file is removed).
pub fn write_file_with(
    path: &Path,
    data: &[u8],
    mode: u32,
    at: impl FnMut(Step) -> io::Result<()>,
) -> io::Result<()> {
    let mut f = NewFile::create(path, mode)?;
    // Large objects (packs) go past the page cache: written once, read
    // rarely (see `direct`).
    let direct = data.len() as u64 >= direct::DIRECT_MIN && {
        let temp = f.temp.clone();
        direct::try_write_new(&temp, f.file()?, data)?
    };
    if !direct {
        f.write_all(data)?;
    }
    f.commit_with(Replace::Yes, at)
}

/// Whether a file's commit may replace a file of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Replace it (atomically: a reader sees the old file or the new one).
    Yes,
    /// Fail with [`io::ErrorKind::AlreadyExists`] and leave it as it is.
    No,
}

/// A file being written under a temporary name beside its target; it gets
/// the target's name only in [`NewFile::commit`], once complete and
/// durable. Dropped without a commit, the temporary file is removed.
#[derive(Debug)]
pub struct NewFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    /// The temporary file no longer exists under its name (renamed).
    placed: bool,
}

impl NewFile {
    /// Creates the temporary file for `target` with `mode` (less the umask).
    pub fn create(target: &Path, mode: u32) -> io::Result<NewFile> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::other("the path to write has no file name"))?;
        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).map_err(io::Error::other)?;
        let temp = target.with_file_name(format!(
            "{}{TEMP_MARKER}{}",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        Ok(NewFile {
            file: Some(file),
            temp,
            target: target.to_path_buf(),
            placed: false,
        })
    }

    /// The open temporary file.
    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file is already committed"))
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Fsyncs the file, gives it its name (replacing a file of that name or
    /// not, as `replace` says) and fsyncs its directory.
    pub fn commit(self, replace: Replace) -> io::Result<()> {
        self.commit_with(replace, |_| Ok(()))
    }

    /// [`NewFile::commit`], calling `at` at each [`Step`].
    pub fn commit_with(
        mut self,
        replace: Replace,
        mut at: impl FnMut(Step) -> io::Result<()>,
    ) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file is already committed"))?;
        file.sync_all()?;
        drop(file);
        at(Step::Written)?;
        match replace {
            Replace::Yes => std::fs::rename(&self.temp, &self.target)?,
            Replace::No => rename_new(&self.temp, &self.target)?,
        }
        self.placed = true;
        at(Step::Renamed)?;
        sync_dir(parent_of(&self.target))
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.placed {
            self.file = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then). Where
/// the file system cannot rename without replacing, `to` is looked for
/// first: a file appearing between the look and the rename is replaced.
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            if to.symlink_metadata().is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Fsyncs directory `dir`: the names created, renamed or removed in it
/// survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path`: `.` for a bare relative name.
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgresql.auto.conf");
        write_file(&path, b"old", 0o600).unwrap();
        write_file(&path, b"new contents", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(names(dir.path()), ["postgresql.auto.conf"]);
        // Large contents (the direct path, or its fallback) too.
        let big: Vec<u8> = (0..(2 << 20) + 5).map(|i: u32| (i % 253) as u8).collect();
        write_file(&path, &big, 0o600).unwrap();
        assert!(std::fs::read(&path).unwrap() == big);
        assert_eq!(names(dir.path()), ["postgresql.auto.conf"]);
    }

    #[test]
    fn a_write_stopped_before_its_rename_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file(&path, b"old", 0o600).unwrap();
        let mut seen = Vec::new();
        let err = write_file_with(&path, b"new", 0o600, |step| {
            seen.push(step);
            Err(io::Error::other("stopped"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "stopped");
        assert_eq!(seen, [Step::Written]);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_new_file_appears_only_when_committed_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.rdb");
        let mut f = NewFile::create(&path, 0o644).unwrap();
        f.write_all(b"REDIS0011").unwrap();
        assert!(!path.exists());
        assert!(f.temp_path().starts_with(dir.path()));
        f.commit(Replace::No).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"REDIS0011");

        let mut g = NewFile::create(&path, 0o644).unwrap();
        g.write_all(b"other").unwrap();
        let err = g.commit(Replace::No).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"REDIS0011");
        assert_eq!(names(dir.path()), ["dump.rdb"]);

        // Dropped without a commit: nothing stays.
        let mut h = NewFile::create(&path, 0o644).unwrap();
        h.write_all(b"abandoned").unwrap();
        drop(h);
        assert_eq!(names(dir.path()), ["dump.rdb"]);
    }
}
