//! The one question every lifeboat error answers: what kind of failure is it?
//!
//! Each library error type implements [`Classify`]. Callers decide on the
//! class alone: the command-line tool maps it to an exit code in one place,
//! the agent decides on it whether to retry. A wrapping error takes the class
//! of what it wraps, so the class of a storage timeout four layers down is
//! still `Transient`.

use std::fmt;

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// The request or the configuration is wrong (a missing repository, a
    /// wrong secret, a snapshot that does not exist, a refused request, a
    /// server not set up for what was asked). Trying again without changing
    /// something will fail the same way. Exit code 2.
    Usage,
    /// Stored or source data is damaged (a failed checksum, a missing
    /// object something refers to). Exit code 3, never retried.
    Damage,
    /// The failure may pass (a timeout, a refused connection, throttling, a
    /// server restarting). Exit code 1; worth retrying later.
    Transient,
    /// Anything else: the operation failed and retrying is not expected to
    /// help. Exit code 1.
    Failure,
}

impl ErrorClass {
    /// The name, as in JSON and metrics: `usage`, `damage`, `transient`, `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Usage => "usage",
            ErrorClass::Damage => "damage",
            ErrorClass::Transient => "transient",
            ErrorClass::Failure => "failure",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// The kind of failure.
    fn class(&self) -> ErrorClass;
}

/// An error and its causes on one line, `what: why: deeper why`, as a
/// report or listing shows it. Errors keep their causes in `source()`, never
/// in their own message, so nothing is said twice.
pub fn report<E: std::error::Error + ?Sized>(err: &E) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
