//! lifeboat-agent's integration tests: one binary, a module per subject.
// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod notify;
mod promtool;
