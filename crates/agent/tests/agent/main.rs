//! lifeboat-agent's integration tests, in one binary: the library driven
//! from outside, with the real programs it works with.
//!
//! - `notify`: deliveries to webhooks and commands on loopback.
//! - `page`: the HTTP listener (routes, the bearer token, security headers,
//!   slow clients) and the status page in headless Chromium
//!   (`scripts/browser/check-page.mjs`; scripts/test.sh installs Chromium
//!   and playwright-core).
//! - `promtool`: the generated rules checked and unit-tested by promtool,
//!   and the same scenarios fed to the agent's evaluator.
// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod notify;
mod page;
mod promtool;
