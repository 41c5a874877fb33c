//! Failpoints: named crash points that tests hit on every run.
//!
//! A test that must know what a crash at a given point leaves behind sets
//! `LIFEBOAT_FAILPOINTS` for the `lifeboat` process it runs, and the process
//! dies exactly there, instead of being killed after a sleep that may land
//! anywhere. The variable is read once, at the first failpoint reached:
//!
//! ```text
//! LIFEBOAT_FAILPOINTS=after-pack-stored=abort@5,local-put-before-rename=error
//! ```
//!
//! Each entry is `NAME=ACTION[@N]`. `abort` ends the process at once with
//! [`std::process::abort`], like a `kill -9` at that line: no destructor,
//! flush or cleanup runs. `error` makes the I/O call fail there, at the
//! failpoints that sit in one ([`failpoint_io!`](macro@crate::failpoint_io)).
//! `pause` waits there until the file `LIFEBOAT_FAILPOINT_RELEASE` names
//! exists (a run held in the middle: the agent's overlap, timeout and
//! shutdown tests).
//! `@N` acts on the Nth time the point is reached only (counted from 1);
//! without it, on every time.
//!
//! The failpoints, in the order a backup or a WAL push reaches them (the
//! invariants in ARCHITECTURE.md name them where they are stated):
//!
//! - `local-put-before-rename` (storage, `local.rs`): a put's temporary file
//!   is written and fsynced, not yet renamed to its key. `error` too.
//! - `local-put-before-dir-sync` (storage, `local.rs`): the file has its key,
//!   its directory is not yet fsynced. `error` too.
//! - `after-pack-stored` (repo, `writer.rs`): a pack is stored, no index
//!   object lists it yet.
//! - `after-index-stored` (repo, `writer.rs`): an index object is stored;
//!   further packs and the snapshot are not.
//! - `before-snapshot-stored` (repo, `repository.rs`): everything a snapshot
//!   references is stored and indexed (`Writer::finish` returned); the
//!   snapshot is not yet written.
//! - `prune-after-repack`, `prune-after-index`, `prune-after-mark`,
//!   `prune-delete-pack`, `prune-after-packs-deleted` (repo, `prune.rs`):
//!   a prune's live chunks copied into new packs; the index objects listing
//!   removed packs rewritten; its mark stored; before each pack deletion;
//!   its packs deleted, the superseded index objects and the mark not yet.
//! - `wal-push-after-store` (postgres, `archive.rs`): the WAL file
//!   PostgreSQL asked for is stored, the push is not yet acknowledged (no
//!   exit 0, nothing pushed ahead).
//! - `wal-expire-delete` (postgres, `expire.rs`): before each deletion of a
//!   WAL expiry, oldest first; those before it are gone, it and later ones
//!   are not.
//! - `drill-server-up` (scenarios, `drill.rs`): a drill's restored
//!   PostgreSQL server runs in its sandbox, nothing checked yet (what a
//!   SIGTERM or a kill there leaves: `drill::an_interrupted_drill_…`).
//! - `drill-redis-up` (scenarios, `sandbox/redis.rs`): the redis-server
//!   that proves a restored RDB runs, its keys not yet counted
//!   (`drill::a_redis_drill_stopped_…`).
//!
//! Only builds with this crate's `testing` feature have failpoints: the
//! `lifeboat` crate enables it in its dev-dependencies, so test builds (and
//! the binary the end-to-end tests run) have them, and `cargo build` or
//! `cargo install` do not. Without the feature [`failpoint!`](macro@crate::failpoint)
//! and [`failpoint_io!`](macro@crate::failpoint_io) expand to nothing, so neither
//! the checks nor the names are in the program. (The `fail` crate was not
//! used: it has no action that ends the process, and it pulls in `rand`.)

/// The environment variable that sets failpoints' actions.
pub const ENV: &str = "LIFEBOAT_FAILPOINTS";
/// The environment variable naming the file whose existence releases a
/// `pause` failpoint.
pub const RELEASE_ENV: &str = "LIFEBOAT_FAILPOINT_RELEASE";

/// Every failpoint name; a name set in [`ENV`] must be one of them.
pub const NAMES: &[&str] = &[
    "local-put-before-rename",
    "local-put-before-dir-sync",
    "after-pack-stored",
    "after-index-stored",
    "before-snapshot-stored",
    "wal-push-after-store",
    "prune-after-repack",
    "prune-after-index",
    "prune-after-mark",
    "prune-delete-pack",
    "prune-after-packs-deleted",
    "wal-expire-delete",
    "drill-server-up",
    "drill-redis-up",
];

/// A failpoint: with the `testing` feature, the process dies here when
/// [`LIFEBOAT_FAILPOINTS`](crate::failpoint::ENV) says `NAME=abort`.
/// Without it, nothing.
#[cfg(feature = "testing")]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint::hit($name)
    };
}

/// A failpoint: with the `testing` feature, the process dies here when
/// [`LIFEBOAT_FAILPOINTS`](crate::failpoint::ENV) says `NAME=abort`.
/// Without it, nothing.
#[cfg(not(feature = "testing"))]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {{}};
}

/// A failpoint in an I/O call: an `std::io::Result<()>` that is an error when
/// [`LIFEBOAT_FAILPOINTS`](crate::failpoint::ENV) says `NAME=error` (and the
/// process dies on `NAME=abort`). Without the `testing` feature, `Ok(())`.
#[cfg(feature = "testing")]
#[macro_export]
macro_rules! failpoint_io {
    ($name:literal) => {
        $crate::failpoint::hit_io($name)
    };
}

/// A failpoint in an I/O call: an `std::io::Result<()>` that is an error when
/// [`LIFEBOAT_FAILPOINTS`](crate::failpoint::ENV) says `NAME=error` (and the
/// process dies on `NAME=abort`). Without the `testing` feature, `Ok(())`.
#[cfg(not(feature = "testing"))]
#[macro_export]
macro_rules! failpoint_io {
    ($name:literal) => {
        ::std::io::Result::<()>::Ok(())
    };
}

#[cfg(feature = "testing")]
pub use imp::*;

#[cfg(feature = "testing")]
mod imp {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use super::{ENV, NAMES};

    /// What a failpoint does when reached.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Action {
        /// End the process at once ([`std::process::abort`]).
        Abort,
        /// Fail the I/O call the failpoint sits in.
        Error,
        /// Wait there until the file [`RELEASE_ENV`] names exists: a run
        /// held in the middle for as long as a test needs (the agent's
        /// overlap, timeout and shutdown tests).
        Pause,
    }

    /// Wait at a `pause` failpoint until the file this names exists.
    fn pause() {
        let Some(path) = std::env::var_os(super::RELEASE_ENV) else {
            panic!(
                "a pause failpoint needs {}: the file whose existence releases it",
                super::RELEASE_ENV
            );
        };
        while !std::path::Path::new(&path).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// One entry of [`ENV`]: a failpoint, its action, and the one hit it
    /// acts on (`None`: every hit).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Setting {
        /// The failpoint's name, one of [`NAMES`].
        pub name: &'static str,
        /// What it does.
        pub action: Action,
        /// The hit (from 1) it acts on; `None` for every hit.
        pub nth: Option<u64>,
    }

    /// Parses `NAME=ACTION[@N]` entries separated by commas.
    pub fn parse(spec: &str) -> Result<Vec<Setting>, String> {
        let mut out = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, rest) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?}: expected NAME=ACTION[@N]"))?;
            let name = name.trim();
            let name = NAMES
                .iter()
                .copied()
                .find(|n| *n == name)
                .ok_or_else(|| format!("{name:?} is not a failpoint: one of {NAMES:?}"))?;
            let (action, nth) = match rest.split_once('@') {
                Some((a, n)) => {
                    let n: u64 = n
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("{entry:?}: @N needs a count from 1"))?;
                    (a, Some(n))
                }
                None => (rest, None),
            };
            let action = match action.trim() {
                "abort" => Action::Abort,
                "error" => Action::Error,
                "pause" => Action::Pause,
                other => return Err(format!("{other:?}: the actions are abort, error and pause")),
            };
            out.push(Setting { name, action, nth });
        }
        Ok(out)
    }

    struct Armed {
        setting: Setting,
        hits: AtomicU64,
    }

    fn armed() -> &'static [Armed] {
        static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var(ENV).unwrap_or_default();
            // A wrong setting is a broken test: say so rather than run
            // without the crash the test expects.
            let settings = parse(&spec).unwrap_or_else(|e| panic!("{ENV}: {e}"));
            settings
                .into_iter()
                .map(|setting| Armed {
                    setting,
                    hits: AtomicU64::new(0),
                })
                .collect()
        })
    }

    /// Counts a hit of `name` and returns the action to take now, if any.
    pub fn action(name: &'static str) -> Option<Action> {
        debug_assert!(NAMES.contains(&name), "{name} is not in failpoint::NAMES");
        let mut act = None;
        for a in armed().iter().filter(|a| a.setting.name == name) {
            let n = a.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if a.setting.nth.is_none_or(|k| k == n) {
                act = act.or(Some(a.setting.action));
            }
        }
        act
    }

    /// The failpoint `name` in code that cannot fail: `abort` ends the
    /// process; `error` is refused (a broken test).
    pub fn hit(name: &'static str) {
        match action(name) {
            Some(Action::Abort) => std::process::abort(),
            Some(Action::Error) => panic!("failpoint {name} sits in no I/O call: use abort"),
            Some(Action::Pause) => pause(),
            None => {}
        }
    }

    /// The failpoint `name` in an I/O call: `abort` ends the process,
    /// `error` is an error of kind `Other`.
    pub fn hit_io(name: &'static str) -> io::Result<()> {
        match action(name) {
            Some(Action::Abort) => std::process::abort(),
            Some(Action::Error) => Err(io::Error::other(format!("failpoint {name}"))),
            Some(Action::Pause) => {
                pause();
                Ok(())
            }
            None => Ok(()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn settings_parse_with_counts_and_refuse_unknown_names() {
            assert_eq!(parse("").unwrap(), vec![]);
            assert_eq!(
                parse("after-pack-stored=abort@5, local-put-before-rename=error").unwrap(),
                vec![
                    Setting {
                        name: "after-pack-stored",
                        action: Action::Abort,
                        nth: Some(5)
                    },
                    Setting {
                        name: "local-put-before-rename",
                        action: Action::Error,
                        nth: None
                    },
                ]
            );
            for bad in [
                "no-such-point=abort",
                "after-pack-stored",
                "after-pack-stored=explode",
                "after-pack-stored=abort@0",
                "after-pack-stored=abort@x",
            ] {
                assert!(parse(bad).is_err(), "{bad} was accepted");
            }
        }
    }
}

#[cfg(test)]
mod names_tests {
    use super::NAMES;

    /// The failpoints in the workspace's sources, as `failpoint!("…")` or
    /// `failpoint_io!("…")` name them.
    fn used() -> Vec<String> {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("crates/");
        let mut out = Vec::new();
        let mut stack = vec![crates.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read the sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    if !path.ends_with("target") && !path.ends_with("tests") {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.ends_with("failpoint.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read a source");
                for macro_call in ["failpoint!(\"", "failpoint_io!(\""] {
                    for (i, _) in text.match_indices(macro_call) {
                        let rest = &text[i + macro_call.len()..];
                        let name = rest.split('"').next().unwrap_or_default();
                        out.push(name.to_string());
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_failpoint_in_the_sources_is_listed_once_and_every_listed_one_is_used() {
        let mut listed: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        listed.sort();
        assert_eq!(used(), listed);
    }
}
