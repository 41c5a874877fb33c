//! lifeboat's agent, as a library: what `lifeboat agent` runs and what
//! `lifeboat status`, `lifeboat metrics` and `lifeboat alerts` print.
//!
//! - [`cron`]: schedules (5-field cron, `@daily`, `@every 30s`) in a time zone.
//! - [`sample`]: the metric catalogue — every metric's name, type and help —
//!   and [`sample::Sample`], one labelled value: the state the agent knows
//!   rendered once, then encoded for Prometheus and evaluated by the alerts.
//! - [`status`]: "are we protected?" per source, the shape `lifeboat status
//!   --json`, `GET /api/status` and the status page share.
//!
//! Library code never prints; the `lifeboat` binary owns output.

pub mod cron;
pub mod sample;
pub mod status;
