//! Notifications: see notify.rs in the crate.
