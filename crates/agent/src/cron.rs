//! Schedules (a stand-in until the cron work lands: `@every DUR` only).
#![allow(missing_docs)]
use jiff::{tz::TimeZone, Timestamp};
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    text: String,
    every: i64,
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);
impl std::str::FromStr for Schedule {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, CronError> {
        let d = s
            .strip_prefix("@every ")
            .ok_or_else(|| CronError("only @every".into()))?;
        let d = humantime::parse_duration(d).map_err(|e| CronError(e.to_string()))?;
        Ok(Schedule {
            text: s.into(),
            every: (d.as_millis() as i64).max(1000),
        })
    }
}
impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
impl Schedule {
    pub fn next_after(&self, after: Timestamp, _tz: &TimeZone) -> Option<Timestamp> {
        let ms = after.as_millisecond();
        Timestamp::from_millisecond((ms / self.every + 1) * self.every).ok()
    }
    pub fn last_at_or_before(&self, at: Timestamp, _tz: &TimeZone) -> Option<Timestamp> {
        let ms = at.as_millisecond();
        Timestamp::from_millisecond(ms / self.every * self.every).ok()
    }
}
