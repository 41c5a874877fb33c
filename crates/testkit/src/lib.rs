//! Test harness for lifeboat: real servers, started on loopback for a test and
//! stopped after it.
//!
//! - [`garage::Garage`]: a single-node Garage S3 server with a fresh bucket and
//!   key, in its own temporary directory, on free ports. It can be stopped and
//!   restarted with the same ports and data, to test outages.
//!
//! - `postgres::PgCluster`: a throwaway PostgreSQL cluster (initdb, free
//!   port, sockets in its temporary directory), run as the `postgres` user
//!   when the tests run as root.
//!
//! - [`netfault::FaultyLink`]: a TCP proxy that resets, cuts and stalls
//!   connections by a seeded plan: the network between two regions.
//!
//! Tests fail (they do not skip) when a server binary is missing: the test
//! script installs it (`scripts/install-garage.sh`).
#![deny(missing_docs)]

pub mod garage;
pub mod netfault;
#[cfg(feature = "postgres")]
pub mod postgres;
