//! Schedules: 5-field cron expressions as Vixie cron (and every Linux
//! crontab) reads them, the `@daily` family, and `@every DUR`, evaluated in
//! a time zone.
//!
//! Written here rather than taken from a crate: the Rust cron crates speak
//! the Quartz dialect (6 or 7 fields with seconds, Sunday = 1, day of month
//! AND day of week), so `0 6 * * 0` or `0 0 1,15 * 5` would mean something
//! else than what an operator wrote in a crontab for twenty years.
//!
//! Grammar: `minute hour day-of-month month day-of-week`, each a list of
//! `*`, `N`, `A-B`, with an optional `/STEP` (`*/15`, `8-18/2`, `5/10` =
//! from 5 to the end every 10). Months and days may be named (`jan`,
//! `mon-fri`); day of week 0 and 7 are both Sunday. When both day fields
//! are restricted (neither starts with `*`), a day matches if *either*
//! does; otherwise it must match both (`*/10` in day-of-month counts as
//! starting with `*`), as in Vixie cron. Macros: `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`), `@hourly`; `@every 30s` / `@every
//! 4h` fires at the multiples of the duration since the Unix epoch (so a
//! fire time is the same whenever the agent started).
//!
//! Daylight saving time (in `[repository] timezone`): a wall time that does
//! not exist (the spring-forward gap) fires once, shifted forward by the
//! gap (jiff's "compatible" disambiguation, as RFC 5545 does): a daily
//! `30 2 * * *` in Europe/Paris runs at 03:30 on the last Sunday of March. A
//! wall time that occurs twice (fall back) fires once, at its first
//! occurrence, for a fixed-time job; a wildcard job (minute or hour
//! starting with `*`: `*/15 * * * *`, `0 * * * *`) fires in both passes of
//! the repeated hour, as Vixie cron and cronie do.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Hours of wall time looked at before (or after) a moment for a wildcard
/// job's fire times in a fold's second pass (folds are at most an hour or
/// two).
const FOLD_LOOKBACK: i64 = 3;

/// Years searched for the next (or last) fire time before giving up.
const SEARCH_YEARS: i16 = 8;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Cron(Fields),
    /// Every this many milliseconds, from the Unix epoch.
    Every(i64),
}

/// The allowed values of each field, as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fields {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
    /// A "wildcard job" in Vixie cron's words (minute or hour starts with
    /// `*`): in a fall-back fold it fires in both passes of the hour.
    wildcard: bool,
}

/// A schedule that does not parse; the message says which field and what
/// it accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this number.
    names_from: u32,
}

const SPECS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DAYS,
        names_from: 0,
    },
];

fn value(spec: &FieldSpec, field: &str, text: &str) -> Result<u32, CronError> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == t) {
        return Ok(i as u32 + spec.names_from);
    }
    let allowed = || {
        let mut s = format!("{}-{}", spec.min, spec.max);
        if !spec.names.is_empty() {
            s.push_str(&format!(
                " or {}-{}",
                spec.names[0],
                spec.names[spec.names.len() - 1]
            ));
        }
        s
    };
    let n: u32 = t.parse().map_err(|_| {
        CronError(format!(
            "{} field {field:?}: {text:?} is not a number; give {}",
            spec.name,
            allowed()
        ))
    })?;
    if n < spec.min || n > spec.max {
        return Err(CronError(format!(
            "{} field {field:?}: {n} is out of range; give {}",
            spec.name,
            allowed()
        )));
    }
    Ok(n)
}

/// The bit set of one field.
fn field(spec: &FieldSpec, text: &str) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(CronError(format!(
                "{} field {text:?}: an empty item in the list",
                spec.name
            )));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    CronError(format!(
                        "{} field {text:?}: step {s:?} must be a number from 1",
                        spec.name
                    ))
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(spec, text, a)?, value(spec, text, b)?);
            if a > b {
                return Err(CronError(format!(
                    "{} field {text:?}: the range {range:?} runs backwards",
                    spec.name
                )));
            }
            (a, b)
        } else {
            let a = value(spec, text, range)?;
            // `5/10`: from 5 to the end, every 10.
            (a, if step > 1 { spec.max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Schedule, CronError> {
        let text = s.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            "@reboot" => {
                return Err(CronError(
                    "@reboot is not a schedule the agent keeps: a run missed while it was down runs at start anyway ([agent] catch_up)".into(),
                ))
            }
            t if t.starts_with("@every") => {
                let d = text["@every".len()..].trim();
                let dur = humantime::parse_duration(d).map_err(|e| {
                    CronError(format!(
                        "@every {d:?}: {e}; give a duration such as 30s, 5m, 4h or 1h30m"
                    ))
                })?;
                if dur.as_secs() < 1 {
                    return Err(CronError(format!("@every {d:?}: at least 1s")));
                }
                return Ok(Schedule {
                    text: text.to_string(),
                    kind: Kind::Every(dur.as_millis().min(i64::MAX as u128) as i64),
                });
            }
            t if t.starts_with('@') => {
                return Err(CronError(format!(
                    "{text:?}: unknown; the macros are @yearly, @monthly, @weekly, @daily, @hourly and @every DURATION"
                )))
            }
            _ => text.to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError(format!(
                "{text:?} has {} fields; give 5: minute hour day-of-month month day-of-week (\"0 2 * * *\": daily at 02:00), a macro such as @daily, or @every 30s",
                parts.len()
            )));
        }
        let mut bits = [0u64; 5];
        for (i, (spec, part)) in SPECS.iter().zip(&parts).enumerate() {
            bits[i] = field(spec, part)?;
        }
        // Sunday is 0 and 7.
        let weekdays = ((bits[4] | (bits[4] >> 7)) & 0x7f) as u8;
        let fields = Fields {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays,
            days_star: parts[2].starts_with('*'),
            weekdays_star: parts[4].starts_with('*'),
            wildcard: parts[0].starts_with('*') || parts[1].starts_with('*'),
        };
        // A date that never comes (`0 0 30 2 *`) is a mistake, not a plan.
        if fields.weekdays_star && !fields.days_star {
            let possible = (1..=12u32).any(|m| {
                fields.months & (1 << m) != 0
                    && (1..=days_in_month(m)).any(|d| fields.days & (1 << d) != 0)
            });
            if !possible {
                return Err(CronError(format!(
                    "{text:?} names a day that no month it names has: it would never run"
                )));
            }
        }
        Ok(Schedule {
            text: text.to_string(),
            kind: Kind::Cron(fields),
        })
    }
}

/// The most days month `m` has (February: 29).
fn days_in_month(m: u32) -> u32 {
    match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Fields {
    fn month_ok(&self, d: Date) -> bool {
        self.months & (1 << d.month()) != 0
    }

    fn day_ok(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        // Vixie cron: a field starting with `*` (`*`, `*/10`) makes the two
        // an AND of their sets; both restricted otherwise, an OR.
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn hour_ok(&self, h: i8) -> bool {
        self.hours & (1 << h) != 0
    }

    fn minute_ok(&self, m: i8) -> bool {
        self.minutes & (1 << m) != 0
    }

    /// The first matching wall time at or after `t` (whole minutes), within
    /// the search window.
    fn next_wall(&self, mut t: DateTime, limit: Date) -> Option<DateTime> {
        while t.date() <= limit {
            let d = t.date();
            if !self.month_ok(d) {
                t = d
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_ok(d) {
                t = d
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.hour_ok(t.hour()) {
                t = next_hour(t)?;
                continue;
            }
            if !self.minute_ok(t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The last matching wall time at or before `t` (whole minutes).
    fn prev_wall(&self, mut t: DateTime, limit: Date) -> Option<DateTime> {
        let end_of = |d: Date| d.to_datetime(jiff::civil::time(23, 59, 0, 0));
        while t.date() >= limit {
            let d = t.date();
            if !self.month_ok(d) {
                t = end_of(d.first_of_month().yesterday().ok()?);
                continue;
            }
            if !self.day_ok(d) {
                t = end_of(d.yesterday().ok()?);
                continue;
            }
            if !self.hour_ok(t.hour()) {
                let top = t.with().minute(0).build().ok()?;
                t = top.checked_sub(1.minute()).ok()?;
                continue;
            }
            if !self.minute_ok(t.minute()) {
                t = t.checked_sub(1.minute()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }
}

fn next_hour(t: DateTime) -> Option<DateTime> {
    t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()
}

/// The instants of wall time `t` in `tz`: a gap's shifted forward; a
/// fold's first occurrence, and its second too when `both`.
fn instants(t: DateTime, tz: &TimeZone, both: bool) -> Vec<Timestamp> {
    let a = tz.to_ambiguous_timestamp(t);
    let fold = matches!(a.offset(), jiff::tz::AmbiguousOffset::Fold { .. });
    let mut v: Vec<Timestamp> = a.compatible().ok().into_iter().collect();
    if both && fold {
        v.extend(a.later().ok());
    }
    v
}

fn minute_floor(t: DateTime) -> DateTime {
    t.with().second(0).subsec_nanosecond(0).build().unwrap_or(t)
}

impl Schedule {
    /// The first fire time strictly after `after`, in `tz`; `None` when
    /// there is none within eight years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(ms) => {
                let t = after.as_millisecond();
                Timestamp::from_millisecond((t.div_euclid(*ms) + 1) * ms).ok()
            }
            Kind::Cron(f) => {
                let wall = after.to_zoned(tz.clone()).datetime();
                let limit = wall.date().checked_add(SEARCH_YEARS.years()).ok()?;
                // A wildcard job may fire again in a fold's second pass, at
                // a wall time before `after`'s: look from a little before.
                let mut t = if f.wildcard {
                    minute_floor(wall).checked_sub(FOLD_LOOKBACK.hours()).ok()?
                } else {
                    minute_floor(wall).checked_add(1.minute()).ok()?
                };
                let mut best: Option<Timestamp> = None;
                loop {
                    let Some(w) = f.next_wall(t, limit) else {
                        return best;
                    };
                    let found = instants(w, tz, f.wildcard);
                    // Later wall times start no earlier: done.
                    if let (Some(b), Some(first)) = (best, found.first()) {
                        if *first > b {
                            return best;
                        }
                    }
                    for i in found.into_iter().filter(|i| *i > after) {
                        best = Some(best.map_or(i, |b| b.min(i)));
                    }
                    t = w.checked_add(1.minute()).ok()?;
                }
            }
        }
    }

    /// The latest fire time at or before `at`, in `tz` (for catch-up: was
    /// a run due while the agent was down?); `None` when there is none
    /// within eight years.
    pub fn last_at_or_before(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(ms) => {
                let t = at.as_millisecond();
                Timestamp::from_millisecond(t.div_euclid(*ms) * ms).ok()
            }
            Kind::Cron(f) => {
                let wall = at.to_zoned(tz.clone()).datetime();
                let limit = wall.date().checked_sub(SEARCH_YEARS.years()).ok()?;
                let mut t = if f.wildcard {
                    minute_floor(wall).checked_add(FOLD_LOOKBACK.hours()).ok()?
                } else {
                    minute_floor(wall)
                };
                let mut best: Option<Timestamp> = None;
                loop {
                    let Some(w) = f.prev_wall(t, limit) else {
                        return best;
                    };
                    let found = instants(w, tz, f.wildcard);
                    if let (Some(b), Some(last)) = (best, found.last()) {
                        if *last < b {
                            return best;
                        }
                    }
                    for i in found.into_iter().filter(|i| *i <= at) {
                        best = Some(best.map_or(i, |b| b.max(i)));
                    }
                    t = w.checked_sub(1.minute()).ok()?;
                }
            }
        }
    }

    /// The interval of an `@every` schedule.
    pub fn every(&self) -> Option<SignedDuration> {
        match self.kind {
            Kind::Every(ms) => Some(SignedDuration::from_millis(ms)),
            Kind::Cron(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        let s: Schedule = expr.parse().unwrap();
        s.next_after(utc(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_strategy_s_schedules() {
        assert_eq!(
            next("0 2 * * *", "2026-11-28T01:59:59Z"),
            "2026-11-28T02:00:00Z"
        );
        assert_eq!(
            next("0 2 * * *", "2026-11-28T02:00:00Z"),
            "2026-11-29T02:00:00Z"
        );
        assert_eq!(
            next("0 */4 * * *", "2026-11-28T09:10:00Z"),
            "2026-11-28T12:00:00Z"
        );
        assert_eq!(
            next("30 3 * * *", "2026-11-28T03:30:30Z"),
            "2026-11-29T03:30:00Z"
        );
        // 2026-11-28 is a Saturday: the next Sunday 06:00.
        assert_eq!(
            next("0 6 * * 0", "2026-11-28T12:00:00Z"),
            "2026-11-29T06:00:00Z"
        );
        assert_eq!(
            next("0 6 * * 7", "2026-11-28T12:00:00Z"),
            "2026-11-29T06:00:00Z"
        );
        assert_eq!(
            next("0 6 * * sun", "2026-11-28T12:00:00Z"),
            "2026-11-29T06:00:00Z"
        );
        assert_eq!(
            next("0 5 * * 1-5", "2026-11-28T12:00:00Z"),
            "2026-11-30T05:00:00Z"
        );
        assert_eq!(
            next("*/15 9-17 * * mon-fri", "2026-11-30T17:50:00Z"),
            "2026-12-01T09:00:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-11-28T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-11-28T00:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-11-28T00:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-11-28T00:00:00Z"),
            "2026-11-28T01:00:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-11-28T00:06:00Z"),
            "2026-11-28T00:25:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st and 15th, and every Friday (2026-12-04 is one).
        let s: Schedule = "0 0 1,15 * 5".parse().unwrap();
        let mut t = utc("2026-11-28T00:00:00Z");
        let mut got = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t, &TimeZone::UTC).unwrap();
            got.push(t.to_string()[..10].to_string());
        }
        assert_eq!(
            got,
            ["2026-12-01", "2026-12-04", "2026-12-11", "2026-12-15"]
        );
        // With one restricted, only it counts.
        assert_eq!(
            next("0 0 1 * *", "2026-11-28T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
        assert_eq!(
            next("0 0 */10 * *", "2026-11-28T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s: Schedule = "@every 30s".parse().unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-28T10:00:10Z"), &TimeZone::UTC)
                .unwrap(),
            utc("2026-11-28T10:00:30Z")
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-11-28T10:00:10Z"), &TimeZone::UTC)
                .unwrap(),
            utc("2026-11-28T10:00:00Z")
        );
        assert_eq!(s.every(), Some(SignedDuration::from_secs(30)));
        let s: Schedule = "@every 1h30m".parse().unwrap();
        assert_eq!(s.every(), Some(SignedDuration::from_mins(90)));
    }

    #[test]
    fn mistakes_say_what_is_accepted() {
        let err = |e: &str| e.parse::<Schedule>().unwrap_err().to_string();
        assert!(err("0 25 * * *").contains("hour field \"25\": 25 is out of range; give 0-23"));
        assert!(err("0 2 * *").contains("has 4 fields; give 5"));
        assert!(err("0 0 2 * * *").contains("has 6 fields"));
        assert!(err("@reboot").contains("@reboot"));
        assert!(err("@fortnightly").contains("the macros are"));
        assert!(err("@every soon").contains("duration"));
        assert!(err("0 0 * foo *").contains("month field \"foo\""));
        assert!(err("*/0 * * * *").contains("step"));
        assert!(err("0 0 30 2 *").contains("never run"));
        assert!(err("5-1 * * * *").contains("backwards"));
        assert!(err("1,,2 * * * *").contains("empty item"));
        // Feb 29 exists (every fourth year).
        assert!("0 0 29 2 *".parse::<Schedule>().is_ok());
    }

    #[test]
    fn daylight_saving_gaps_shift_and_folds_fire_once() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let s: Schedule = "30 2 * * *".parse().unwrap();
        // 2026-03-29: 02:00 → 03:00 in Paris; 02:30 does not exist.
        let t = s.next_after(utc("2026-03-28T12:00:00Z"), &paris).unwrap();
        assert_eq!(t, utc("2026-03-29T01:30:00Z"), "03:30 CEST");
        let t2 = s.next_after(t, &paris).unwrap();
        assert_eq!(t2, utc("2026-03-30T00:30:00Z"), "02:30 CEST the next day");
        // 2026-10-25: 03:00 → 02:00; 02:30 happens twice; it fires once.
        let t = s.next_after(utc("2026-10-24T12:00:00Z"), &paris).unwrap();
        assert_eq!(t, utc("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        let t2 = s.next_after(t, &paris).unwrap();
        assert_eq!(t2, utc("2026-10-26T01:30:00Z"), "not the second 02:30");
        assert_eq!(s.last_at_or_before(t2, &paris), Some(t2));
        // A wildcard job fires in both passes of the repeated hour, as
        // Vixie cron does: 02:00 and 02:30 CEST, then 02:00 and 02:30 CET.
        let w: Schedule = "*/30 * * * *".parse().unwrap();
        let mut t = utc("2026-10-24T23:45:00Z");
        let mut fired = Vec::new();
        for _ in 0..6 {
            t = w.next_after(t, &paris).unwrap();
            fired.push(t);
        }
        let want: Vec<Timestamp> = [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:30:00Z",
        ]
        .iter()
        .map(|x| utc(x))
        .collect();
        assert_eq!(fired, want);
        // ... and the latest fire time before a moment of the second pass
        // is in the second pass.
        assert_eq!(
            w.last_at_or_before(utc("2026-10-25T01:10:00Z"), &paris),
            Some(utc("2026-10-25T01:00:00Z"))
        );
        // The hourly wildcard with a fixed minute: both 02:15s.
        let h: Schedule = "15 * * * *".parse().unwrap();
        let a = h.next_after(utc("2026-10-25T00:00:00Z"), &paris).unwrap();
        let b = h.next_after(a, &paris).unwrap();
        assert_eq!(
            (a, b),
            (utc("2026-10-25T00:15:00Z"), utc("2026-10-25T01:15:00Z"))
        );
    }

    fn brute_next(s: &Schedule, after: Timestamp) -> Option<Timestamp> {
        let mut t = Timestamp::from_second(after.as_second().div_euclid(60) * 60 + 60).unwrap();
        for _ in 0..200_000 {
            if matches_utc(s, t) {
                return Some(t);
            }
            t = t.checked_add(SignedDuration::from_secs(60)).unwrap();
        }
        None
    }

    /// Whether minute `t` (UTC) matches the fields, by the definition.
    fn matches_utc(s: &Schedule, t: Timestamp) -> bool {
        let Kind::Cron(f) = &s.kind else {
            return false;
        };
        let w = t.to_zoned(TimeZone::UTC).datetime();
        f.month_ok(w.date()) && f.day_ok(w.date()) && f.hour_ok(w.hour()) && f.minute_ok(w.minute())
    }

    fn item(min: u32, max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max, 1..5u32).prop_map(|(a, b, s)| format!(
                "{}-{}/{s}",
                a.min(b),
                a.max(b)
            )),
        ]
    }

    fn list(min: u32, max: u32) -> impl Strategy<Value = String> {
        prop::collection::vec(item(min, max), 1..3).prop_map(|v| {
            if v.iter().any(|i| i == "*") {
                "*".to_string()
            } else {
                v.join(",")
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn next_after_is_the_first_matching_minute(
            m in list(0, 59), h in list(0, 23), dom in list(1, 28),
            mon in list(1, 12), dow in list(0, 7),
            secs in 1_700_000_000i64..1_900_000_000,
        ) {
            let expr = format!("{m} {h} {dom} {mon} {dow}");
            let s: Schedule = expr.parse().unwrap();
            let after = Timestamp::from_second(secs).unwrap();
            let got = s.next_after(after, &TimeZone::UTC);
            // The brute force looks ~139 days ahead; a later answer must
            // then be later than that window.
            match brute_next(&s, after) {
                Some(want) => prop_assert_eq!(got, Some(want), "{}", expr),
                None => prop_assert!(got.is_none_or(|g| g.duration_since(after) > SignedDuration::from_hours(24 * 138)), "{}", expr),
            }
            if let Some(g) = got {
                prop_assert!(matches_utc(&s, g));
                prop_assert_eq!(s.last_at_or_before(g, &TimeZone::UTC), Some(g));
                let before = g.checked_sub(SignedDuration::from_secs(1)).unwrap();
                let prev = s.last_at_or_before(before, &TimeZone::UTC);
                prop_assert!(prev.is_none_or(|p| p <= after), "{}: {:?} between {} and {}", expr, prev, after, g);
            }
        }
    }
}
