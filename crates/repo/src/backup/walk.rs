//! The walk of a tree backup: what is below each root, named as the
//! snapshot names it, filtered by the policy.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use lifeboat_types::name;

use super::policy::{Filter, TreePolicy};
use crate::error::{RepoError, Result};
use crate::snapshot::{Node, NodeKind, Skipped};

/// The path of `p` inside a snapshot: absolute, without the leading `/`,
/// spelled as `lifeboat_types::name` says (Linux names are bytes).
pub(super) fn snapshot_path(p: &Path) -> String {
    let mut b = p.as_os_str().as_bytes();
    while let Some(rest) = b.strip_prefix(b"/") {
        b = rest;
    }
    name::encode(b)
}

fn node_from_meta(path: String, meta: &fs::Metadata, kind: NodeKind) -> Node {
    Node {
        path,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        size: if kind == NodeKind::File {
            meta.len()
        } else {
            0
        },
        target: None,
        rdev: if kind.is_special() { meta.rdev() } else { 0 },
        content: Vec::new(),
    }
}

/// What a walk found: the items (files without content yet), where each
/// file is on disk, and what could not be looked at.
pub(super) struct Walk {
    pub(super) nodes: Vec<Node>,
    pub(super) sources: HashMap<String, PathBuf>,
    pub(super) skipped: Vec<Skipped>,
}

/// Where a walk starts and how its items are named in the snapshot.
#[derive(Clone, Debug)]
pub struct TreeRoot {
    /// The directory (or file) on disk.
    pub path: PathBuf,
    /// `None`: items keep their absolute path (without the leading `/`) and the
    /// root's ancestors are recorded too, as `files backup` does. `Some(p)`:
    /// items are named relative to the root under `p` (`""` for the top), and
    /// the root itself is not an item.
    pub prefix: Option<String>,
}

fn name_in(root: &TreeRoot, abs_root: &Path, path: &Path) -> Option<String> {
    match &root.prefix {
        None => Some(snapshot_path(path)),
        Some(prefix) => {
            let rel = name::encode(path.strip_prefix(abs_root).ok()?.as_os_str().as_bytes());
            Some(match (prefix.is_empty(), rel.is_empty()) {
                (true, _) => rel,
                (false, true) => prefix.clone(),
                (false, false) => format!("{prefix}/{rel}"),
            })
        }
    }
}

/// Walks every root under `policy`: the items sorted by path.
pub(super) fn walk(roots: &[TreeRoot], policy: &dyn TreePolicy) -> Result<Walk> {
    let mut w = Walk {
        nodes: Vec::new(),
        sources: HashMap::new(),
        skipped: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        let abs =
            std::path::absolute(&root.path).map_err(|e| RepoError::io("resolve", &root.path, e))?;
        // The root must exist: a typo in a path is an error, not a partial backup.
        fs::symlink_metadata(&abs).map_err(|e| RepoError::io("read", &abs, e))?;
        // Ancestors first, so a restore recreates them with their modes.
        let mut ancestors: Vec<&Path> = abs.ancestors().skip(1).collect();
        ancestors.reverse();
        for a in ancestors.into_iter().filter(|_| root.prefix.is_none()) {
            let p = snapshot_path(a);
            if p.is_empty() || !seen.insert(p.clone()) {
                continue;
            }
            if let Ok(meta) = fs::symlink_metadata(a) {
                w.nodes.push(node_from_meta(p, &meta, NodeKind::Dir));
            }
        }
        let mut stack = vec![abs.clone()];
        while let Some(path) = stack.pop() {
            let Some(p) = name_in(root, &abs, &path) else {
                continue;
            };
            if !seen.insert(p.clone()) {
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !policy.vanished_is_fine() {
                        w.skipped.push(Skipped {
                            path: p,
                            reason: super::policy::VANISHED.into(),
                        });
                    }
                    continue;
                }
                Err(e) => {
                    w.skipped.push(Skipped {
                        path: p,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let is_top = root.prefix.as_deref() == Some(p.as_str()) && path == abs;
            let filter = if is_top {
                Filter::Keep
            } else {
                policy.filter(&p, &meta)
            };
            let ft = meta.file_type();
            if filter == Filter::Skip {
                // Skipped here, it may still come from another root (a
                // tablespace link skipped in the data directory is walked as
                // its own root under the same name).
                seen.remove(&p);
                continue;
            }
            if filter == Filter::Empty && !ft.is_dir() {
                // A directory kept empty may be a symlink elsewhere (pg_wal on
                // another disk): it comes back as a plain empty directory,
                // never as a link into the original's files.
                let mut n = node_from_meta(p, &meta, NodeKind::Dir);
                n.mode = 0o040700;
                w.nodes.push(n);
                continue;
            }
            if ft.is_dir() {
                // The top of a relative root is the snapshot's root: not an item.
                if !p.is_empty() {
                    w.nodes
                        .push(node_from_meta(p.clone(), &meta, NodeKind::Dir));
                }
                if filter == Filter::Empty {
                    continue;
                }
                match fs::read_dir(&path) {
                    Ok(entries) => {
                        for entry in entries {
                            match entry {
                                Ok(e) => stack.push(e.path()),
                                Err(e) => w.skipped.push(Skipped {
                                    path: p.clone(),
                                    reason: format!("listing failed: {e}"),
                                }),
                            }
                        }
                    }
                    // Removed since it was seen: as for a file.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && policy.vanished_is_fine() => {
                        if !p.is_empty() {
                            w.nodes.pop();
                        }
                    }
                    // The directory itself is kept; its contents are what is lost.
                    Err(e) => w.skipped.push(Skipped {
                        path: p,
                        reason: format!("cannot list the directory: {e}"),
                    }),
                }
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) => {
                        let mut n = node_from_meta(p, &meta, NodeKind::Symlink);
                        n.target = Some(name::encode(t.as_os_str().as_bytes()));
                        w.nodes.push(n);
                    }
                    Err(e) => w.skipped.push(Skipped {
                        path: p,
                        reason: e.to_string(),
                    }),
                }
            } else if ft.is_file() {
                w.sources.insert(p.clone(), path.clone());
                w.nodes.push(node_from_meta(p, &meta, NodeKind::File));
            } else {
                let kind = if ft.is_fifo() {
                    NodeKind::Fifo
                } else if ft.is_socket() {
                    NodeKind::Socket
                } else if ft.is_char_device() {
                    NodeKind::CharDevice
                } else if ft.is_block_device() {
                    NodeKind::BlockDevice
                } else {
                    w.skipped.push(Skipped {
                        path: p,
                        reason: format!("an unknown kind of file (mode {:o})", meta.mode()),
                    });
                    continue;
                };
                w.nodes.push(node_from_meta(p, &meta, kind));
            }
        }
    }
    w.nodes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(w)
}
