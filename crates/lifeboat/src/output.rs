//! What the user sees: progress bars on a terminal, summaries, JSON.
//!
//! Everything meant for standard output goes through `outln!`: when the
//! reader goes away (`lifeboat snapshots --json | head -1`), the rest of the
//! output is dropped quietly and the command ends with its own exit code, as
//! `ripgrep` does, instead of panicking; any other failure to write standard
//! output (a full disk under a redirection) fails the command.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Set once standard output could not be written: nothing more is printed.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Set when writing standard output failed for another reason than a reader
/// that left.
static STDOUT_FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes one line to standard output; see the module documentation.
pub(crate) fn emit_line(args: std::fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = out
        .write_fmt(args)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = written {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e.to_string());
        }
    }
}

/// Why writing standard output failed, when it did for another reason than
/// its reader leaving.
pub(crate) fn stdout_failure() -> Option<String> {
    STDOUT_FAILED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// `println!` for command output; see the module documentation.
macro_rules! outln {
    () => {
        $crate::output::emit_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::emit_line(format_args!($($arg)*))
    };
}

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_repo::Progress;

/// Draws a progress bar on stderr when it is a terminal; otherwise silent.
/// Warnings always reach stderr.
pub(crate) struct TermProgress {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl TermProgress {
    pub(crate) fn new(quiet: bool) -> Self {
        TermProgress {
            bar: Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// The bar, also after a thread panicked holding it.
    fn bar(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for TermProgress {
    fn start(&self, phase: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{prefix:>8} {spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar() = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar().as_ref() {
            bar.inc(bytes);
        }
    }

    fn set_total(&self, total: u64) {
        if let Some(bar) = self.bar().as_ref() {
            bar.set_length(total);
        }
    }

    fn warn(&self, message: &str) {
        let line = format!("warning: {message}");
        let bar = self.bar().clone();
        match bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
    }
}

pub(crate) use lifeboat_ops::fmt::{rate, secs, size};

pub(crate) fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// A restore's report as JSON, with the snapshot it came from and, when
/// timed, how long it took (`duration_ms`).
pub(crate) fn print_restore_json(
    report: &impl serde::Serialize,
    snapshot: &lifeboat_repo::SnapshotEntry,
    ms: Option<u64>,
) {
    print_json(&restore_json(report, snapshot, ms));
}

/// What [`print_restore_json`] prints, for a caller that adds to it.
pub(crate) fn restore_json(
    report: &impl serde::Serialize,
    snapshot: &lifeboat_repo::SnapshotEntry,
    ms: Option<u64>,
) -> serde_json::Value {
    let mut v = serde_json::json!(report);
    v["snapshot"] = serde_json::json!(snapshot.id.to_hex());
    if let Some(ms) = ms {
        v["duration_ms"] = serde_json::json!(ms);
    }
    v
}

/// What a backup of streams (a dump, an RDB) stored, on one line:
/// `4.0 GiB of dumps; new …, stored …; took … (…)`.
pub(crate) fn stream_stats(what: &str, st: &lifeboat_repo::BackupStats) -> String {
    format!(
        "{} {what}; new {}, stored {}; took {} ({})",
        size(st.bytes_total),
        size(st.bytes_new),
        size(st.bytes_stored),
        secs(st.duration_ms),
        rate(st.bytes_total, st.duration_ms)
    )
}
