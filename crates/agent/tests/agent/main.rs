//! lifeboat-agent's integration tests: one binary, a module per subject.

mod notify;
mod promtool;
