//! Whole scenarios on throwaway servers, as library calls that return what
//! they measured: the demos (`lifeboat demo`), the end-to-end tests and the
//! coming `drill` command share them.
//!
//! - [`pitr`]: the strategy's PostgreSQL promise — an incident, a
//!   point-in-time restore, rows compared, RTO and RPO measured;
//! - [`files`]: the files promise — backup, change, verify, restore, compare;
//! - [`sandbox`]: throwaway servers — a PostgreSQL cluster, a redis-server,
//!   an OpenSearch node.
//!
//! Scenarios narrate through a callback and never print.
#![deny(missing_docs)]

pub mod drill;
pub mod files;
pub mod pitr;
pub mod sandbox;
