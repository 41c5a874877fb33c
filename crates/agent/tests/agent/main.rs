//! lifeboat-agent's integration tests, in one binary: the library driven
//! from outside, with the real programs it works with.
//!
//! - `page`: the HTTP listener (routes, the bearer token, security headers,
//!   slow clients) and the status page in headless Chromium
//!   (`scripts/browser/check-page.mjs`; scripts/test.sh installs Chromium
//!   and playwright-core).
#![allow(clippy::unwrap_used)]

mod page;
