//! lifeboat's agent, as a library: what `lifeboat agent` runs and what
//! `lifeboat status`, `lifeboat metrics` and `lifeboat jobs` print.
//!
//! - [`cron`]: schedules (5-field cron, `@daily`, `@every 30s`) in a time zone.
//! - [`plan`]: the agent's settings and jobs from the config file, checked.
//! - [`runner`]: one run of a job, a child `lifeboat` process.
//! - [`agent`]: the scheduler: no overlap, catch-up, retries, timeouts,
//!   reload, graceful stop; job history in the repository.
//! - [`state`]: what is known (history, repository, WAL) and its two views:
//! - [`sample`]: the metric catalogue and [`sample::Sample`]s, encoded by
//!   [`metrics`] for Prometheus;
//! - [`rules`]: the strategy's alerts, as Prometheus rules and as the
//!   agent's own evaluator; [`notify`]: their notifications;
//! - [`status`]: "are we protected?" per source (`lifeboat status --json`,
//!   `GET /api/status`, the status page);
//! - [`http`]: the listener (`/metrics`, `/api/status`, `/healthz`, and the
//!   status page of [`page`] at `/`).
//!
//! Library code never prints; the `lifeboat` binary owns output.

pub mod agent;
pub mod cron;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod plan;
mod redact;
pub mod rules;
pub mod runner;
pub mod sample;
pub mod state;
pub mod status;
pub mod wal;

pub use redact::redact;
