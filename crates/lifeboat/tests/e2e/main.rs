//! End-to-end tests of the `lifeboat` binary against real repositories: a
//! directory on local disk and a real Garage S3 server started per test, real
//! PostgreSQL clusters and redis-server processes.
//!
//! Each test is registered once, with `#[test]` in its own module (its name
//! is `pg::…`, `redis::…`); a scenario every backend must pass is registered
//! with `on_every_backend!` beside it and runs as `scenarios::NAME::local`
//! and `scenarios::NAME::s3`.

#![allow(clippy::unwrap_used)]

/// Registers the scenario `fn $name(env: &Env)` defined just above as two
/// tests, `$name::local` and `$name::s3`: the same steps against a repository
/// on local disk and one on a real Garage S3 server.
macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$name(&super::Env::new(super::Backend::Local));
            }

            #[test]
            fn s3() {
                super::$name(&super::Env::new(super::Backend::S3));
            }
        }
    };
}

mod agent;
mod cli;
mod drill;
mod dump;
mod elastic;
mod erasure;
mod harness;
mod pg;
mod prune;
mod redis;
mod replicate;
mod restore;
mod retention;
mod scenarios;
