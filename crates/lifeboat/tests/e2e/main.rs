//! End-to-end tests of the `lifeboat` binary against real repositories: a
//! directory on local disk and a real Garage S3 server started per test, real
//! PostgreSQL clusters and redis-server processes.
//!
//! Each test is registered once, with `#[test]` in its own module (its name
//! is `pg::…`, `redis::…`); a scenario every backend must pass is registered
//! with `on_every_backend!` beside it and runs as `scenarios::NAME::local`
//! and `scenarios::NAME::s3`.

#![allow(clippy::unwrap_used)]

mod cli;
mod dump;
mod harness;
mod pg;
mod redis;
mod restore;
mod scenarios;
