//! File-system calls that stay beneath a restore's target.
//!
//! A restore may run as root into a directory that others can write, where a
//! symbolic link planted at `etc` pointing to `/etc` would turn a write of
//! `etc/passwd` into a write outside the target. So every item is reached
//! from an open handle on its root directory, one name at a time or with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and nothing here ever
//! follows a symbolic link or `..`: a link in the way is an error the restore
//! reports (or, when told to overwrite, replaces), never a path it takes.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// False once `openat2` turned out to be missing (kernels before 5.6, some
/// sandboxes): the name-by-name walk is used instead.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// A directory items are restored under, held open.
pub(crate) struct Root {
    /// Where it is, for messages.
    pub(crate) path: PathBuf,
    fd: OwnedFd,
}

impl Root {
    /// Creates `path` (and its parents, as given: the caller chose it) and
    /// opens it.
    pub(crate) fn create(path: &Path) -> io::Result<Root> {
        std::fs::create_dir_all(path)?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The full path of `rel`, for messages.
    pub(crate) fn show(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// True when the directory holds any entry.
    pub(crate) fn has_entries(&self) -> io::Result<bool> {
        let mut dir = rustix::fs::Dir::read_from(self.fd())?;
        while let Some(e) = dir.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn plain(rel: &Path) -> io::Result<()> {
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a plain relative path", rel.display()),
        ))
    }
}

/// Opens `rel` beneath `root` with `flags`, following no symbolic link in
/// any component (a link is `ELOOP` or `ENOTDIR`). An empty `rel` is the
/// root itself.
pub(crate) fn open(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if rel.as_os_str().is_empty() {
        return Ok(rustix::fs::openat(root, ".", flags, mode)?);
    }
    plain(rel)?;
    if OPENAT2.load(Ordering::Relaxed) {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel, flags, mode, resolve) {
            // Missing (before Linux 5.6), or refused by a seccomp filter
            // (older container profiles answer EPERM): walk instead.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                OPENAT2.store(false, Ordering::Relaxed)
            }
            // openat2 refuses what it cannot resolve safely with EAGAIN
            // (a rename racing it); the walk below settles it.
            Err(rustix::io::Errno::AGAIN) => {}
            other => return Ok(other?),
        }
    }
    let (dir, name) = walk_to_parent(root, rel)?;
    let at = dir.as_ref().map_or(root, |d| d.as_fd());
    Ok(rustix::fs::openat(at, name, flags, mode)?)
}

/// Opens every directory on the way to `rel`'s parent, one name at a time,
/// none of them a link; returns the parent (`None`: the root) and the last
/// name.
fn walk_to_parent<'a>(
    root: BorrowedFd<'_>,
    rel: &'a Path,
) -> io::Result<(Option<OwnedFd>, &'a OsStr)> {
    let mut parts: Vec<&OsStr> = rel.iter().collect();
    let name = parts
        .pop()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut cur: Option<OwnedFd> = None;
    for p in parts {
        let at = cur.as_ref().map_or(root, |d| d.as_fd());
        let next = rustix::fs::openat(
            at,
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    Ok((cur, name))
}

/// Opens the directory `rel` beneath `root`.
pub(crate) fn open_dir(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open(root, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
}

/// Makes sure the directory `rel` exists beneath `root`, creating what is
/// missing with `mode` (less the umask); returns it open. A component that
/// exists and is not a directory (a link included) is an error.
pub(crate) fn ensure_dir(root: BorrowedFd<'_>, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
    match open_dir(root, rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    plain(rel)?;
    let mut cur = rustix::fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for p in rel.iter() {
        match rustix::fs::mkdirat(&cur, p, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = rustix::fs::openat(
            &cur,
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(cur)
}

/// What is at `name` in `dir`, without following a link; `None` when nothing.
pub(crate) fn stat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The kind of file a `st_mode` says.
pub(crate) fn kind_of(mode: u32) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(mode)
}

/// Removes `name` from `dir`, whatever it is; a directory with everything
/// below it, never following a link.
pub(crate) fn remove(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat(dir, name)? else {
        return Ok(());
    };
    if kind_of(st.st_mode) != rustix::fs::FileType::Directory {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    if st.st_dev != rustix::fs::fstat(dir)?.st_dev {
        return Err(io::Error::other(format!(
            "{} is a mount point: a restore does not empty another file system",
            name.to_string_lossy()
        )));
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    {
        let mut list = rustix::fs::Dir::read_from(&sub)?;
        while let Some(e) = list.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    for n in names {
        remove(sub.as_fd(), OsStr::from_bytes(&n))?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Which file a handle is: device, inode, owner and birth time. An inode
/// number is reused as soon as its file is gone, and birth times are only
/// as fine as the kernel's clock tick; the owner is what another user
/// cannot forge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: (u32, u32),
    ino: u64,
    uid: u32,
    born: Option<(i64, u32)>,
}

fn file_id(fd: BorrowedFd<'_>) -> io::Result<(FileId, u16)> {
    use rustix::fs::StatxFlags;
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::TYPE | StatxFlags::INO | StatxFlags::UID | StatxFlags::BTIME,
    )?;
    let born = (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
    Ok((
        FileId {
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            uid: st.stx_uid,
            born,
        },
        st.stx_mode,
    ))
}

/// Creates `name` in `dir` as a new, empty regular file of `len` bytes
/// (a hole until written) that only its owner can read; returns which file
/// it is, so later opens by name can check they found the same one.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &OsStr, len: u64) -> io::Result<FileId> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    if len > 0 {
        rustix::fs::ftruncate(&fd, len)?;
    }
    Ok(file_id(fd.as_fd())?.0)
}

/// Checks that `fd` is the regular file `id`: in a directory others can
/// write, the name may have been given to another file since it was made,
/// and the restore must not write into, or give its owner and mode to, a
/// file it did not make.
pub(crate) fn check_same(fd: BorrowedFd<'_>, id: FileId) -> io::Result<()> {
    let (found, mode) = file_id(fd)?;
    if kind_of(u32::from(mode)) != rustix::fs::FileType::RegularFile || found != id {
        return Err(io::Error::other(
            "the restore's temporary file was replaced by another file while it was written (someone else can write this directory); nothing was written to it",
        ));
    }
    Ok(())
}

/// Opens the restored file `id` for writing, beneath `root`, past the page
/// cache when `direct`; an error when the name no longer holds that file.
pub(crate) fn open_for_write(
    root: BorrowedFd<'_>,
    rel: &Path,
    direct: bool,
    id: FileId,
) -> io::Result<File> {
    // Non-blocking: a FIFO put in its place must not hang the restore.
    let mut flags = OFlags::WRONLY | OFlags::NONBLOCK;
    if direct {
        flags |= OFlags::DIRECT;
    }
    let fd = open(root, rel, flags, Mode::empty())?;
    check_same(fd.as_fd(), id)?;
    Ok(File::from(fd))
}

/// Ownership, mode and modification time for an item being finished.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    /// `None`: left as it is (now).
    pub(crate) mtime_ns: Option<i64>,
}

impl Meta {
    fn times(&self) -> Option<rustix::fs::Timestamps> {
        let ns = self.mtime_ns?;
        let t = rustix::fs::Timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000) as _,
        };
        Some(rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        })
    }
}

/// Owner, mode and times through an open handle. Ownership needs
/// privileges: an unprivileged restore keeps the restorer as owner.
pub(crate) fn set_meta_fd(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    match rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(m.uid)),
        Some(rustix::fs::Gid::from_raw(m.gid)),
    ) {
        // Not permitted, or an id this user namespace does not map:
        // the restorer stays the owner.
        Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    // After the owner: chown clears set-user-id bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode & 0o7777))?;
    if let Some(t) = m.times() {
        rustix::fs::futimens(fd, &t)?;
    }
    Ok(())
}

/// Owner and times of the symbolic link `name` in `dir` (a link has no mode
/// of its own).
pub(crate) fn set_link_meta(dir: BorrowedFd<'_>, name: &OsStr, m: &Meta) -> io::Result<()> {
    match rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(m.uid)),
        Some(rustix::fs::Gid::from_raw(m.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        // Not permitted, or an id this user namespace does not map:
        // the restorer stays the owner.
        Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(t) = m.times() {
        rustix::fs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// Owner, mode and times of the device node `name` in `dir`, which cannot be
/// opened to do it (opening a device may act on it): through an `O_PATH`
/// handle, the mode by its `/proc/self/fd` name.
pub(crate) fn set_node_meta(dir: BorrowedFd<'_>, name: &OsStr, m: &Meta) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match rustix::fs::chownat(
        &fd,
        "",
        Some(rustix::fs::Uid::from_raw(m.uid)),
        Some(rustix::fs::Gid::from_raw(m.gid)),
        AtFlags::EMPTY_PATH,
    ) {
        // Not permitted, or an id this user namespace does not map:
        // the restorer stays the owner.
        Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(m.mode & 0o7777))?;
    if let Some(t) = m.times() {
        rustix::fs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// Renames `from` to `to` in `dir`, replacing what `to` names (never
/// following it: a link there is replaced, not written through).
pub(crate) fn rename(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_on_the_way_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root_path = t.path().join("root");
        let root = Root::create(&root_path).unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("etc")).unwrap();
        std::os::unix::fs::symlink("../outside", root_path.join("up")).unwrap();
        for rel in ["etc/passwd", "up/passwd"] {
            let e = open(
                root.fd(),
                Path::new(rel),
                OFlags::WRONLY | OFlags::CREATE,
                Mode::from_raw_mode(0o600),
            );
            assert!(e.is_err(), "{rel} must not be created through a link");
        }
        assert!(open(root.fd(), Path::new("../x"), OFlags::RDONLY, Mode::empty()).is_err());
        // The walk without openat2 refuses the same.
        OPENAT2.store(false, Ordering::Relaxed);
        let e = open(
            root.fd(),
            Path::new("etc/passwd"),
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o600),
        );
        OPENAT2.store(true, Ordering::Relaxed);
        assert!(e.is_err());
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
        // ensure_dir refuses to make a directory through the link too.
        assert!(ensure_dir(root.fd(), Path::new("etc/sub"), 0o700).is_err());
        assert!(!outside.join("sub").exists());
        // A temporary file whose name another user gave to a file of theirs
        // is not written to (the inode number may well be the same).
        let id = create_file(root.fd(), OsStr::new("mine"), 10).unwrap();
        assert!(open_for_write(root.fd(), Path::new("mine"), false, id).is_ok());
        std::fs::remove_file(root_path.join("mine")).unwrap();
        std::fs::write(root_path.join("mine"), b"someone else's").unwrap();
        if std::os::unix::fs::chown(root_path.join("mine"), Some(65534), Some(65534)).is_ok() {
            assert!(open_for_write(root.fd(), Path::new("mine"), false, id).is_err());
        }
        // And remove() takes the link away, not what it points to.
        remove(root.fd(), OsStr::new("etc")).unwrap();
        assert!(outside.is_dir());
        assert!(!root_path.join("etc").exists());
    }
}
