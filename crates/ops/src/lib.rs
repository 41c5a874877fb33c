//! lifeboat's operations layer: what the command-line tool and the agent
//! share.
//!
//! The `lifeboat` binary is clap, printing and exit codes; everything it
//! decides on the way lives here, as library calls with typed options and
//! results:
//! - [`config`]: the TOML config file and its sources;
//! - [`secrets`]: where the repository's secret comes from, in one order of
//!   precedence (also for the `restore_command` of a restored server);
//! - [`Session`]: settings settled once, the runtime, the repository opened,
//!   with warnings returned rather than printed;
//! - [`pg`], [`redis`], [`elastic`]: a source's settings, a restored server
//!   started;
//! - [`maintenance`]: prune's settings;
//! - [`retention`]: `forget`, each series' policy applied;
//! - [`Error`]: every failure, with its [`ErrorClass`].
//!
//! Like every library crate of lifeboat, this one never prints.
#![deny(missing_docs)]

pub mod config;
pub mod cost;
pub mod elastic;
pub mod erasure;
mod error;
pub mod fmt;
pub mod maintenance;
pub mod pg;
pub mod redis;
pub mod replicate;
pub mod retention;
pub mod runbook;
pub mod secrets;
mod session;

pub use error::{Error, Result};
pub use lifeboat_repo::{Classify, ErrorClass};
pub use session::{Opened, Session, Settings};

/// The OS user this process runs as (effective uid): its name from
/// `/etc/passwd`, else `uid N`.
pub fn os_user() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid.is_empty() {
        return std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// This machine's name, as snapshots record it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
