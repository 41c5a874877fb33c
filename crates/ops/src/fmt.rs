//! Figures as people read them, for whoever prints them (the CLI, a
//! scenario's narration, the status page).

/// A size in binary units: `1.5 GiB`.
pub fn size(n: u64) -> String {
    lifeboat_repo::ByteSize(n).to_string()
}

/// Milliseconds as seconds: `1.2 s`.
pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// A rate: `120.5 MiB/s`.
pub fn rate(bytes: u64, ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    format!("{}/s", size(bytes * 1000 / ms))
}
