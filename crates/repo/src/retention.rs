//! Retention: which snapshots of one series a policy keeps, and why. Pure:
//! no I/O, no clock.
//!
//! The `keep_*` rules mean exactly what restic's `forget --keep-*` flags
//! mean (restic's `internal/restic/snapshot_policy.go` is the model):
//! - the snapshots are walked newest first;
//! - each counting rule (`last`, `hourly`, `daily`, `weekly`, `monthly`,
//!   `yearly`) puts every snapshot in a bucket (its hour, day, ISO week,
//!   month, year in the policy's time zone; every snapshot its own for
//!   `last`) and keeps the first (newest) snapshot of each new bucket
//!   until its count is spent; a snapshot of the bucket just seen does not
//!   spend it; the oldest snapshot of the series is also kept by a rule
//!   that still has count left (history as long as the counts allow);
//!   [`ALL`] never runs out;
//! - `within D` keeps every snapshot strictly newer than the newest
//!   snapshot's time minus `D` (relative to the newest snapshot, not to
//!   now); `within_daily D` and the other `within_*` rules keep the newest
//!   snapshot of each bucket among those, without a count;
//! - a tag rule keeps every snapshot carrying all tags of the list;
//! - the rules are independent; a snapshot is kept when any keeps it.
//!
//! One difference: restic measures `within` from the newest snapshot that
//! is not in the future (by the clock); this engine has no clock and
//! measures from the newest snapshot given.
//!
//! lifeboat adds two reasons restic does not have: the newest snapshot of a
//! series is always kept ([`Reason::Newest`]), and a held snapshot is kept
//! whatever the policy ([`Reason::Hold`]).

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
pub use jiff::tz::TimeZone;
pub use jiff::Span;
use lifeboat_types::{SnapshotId, Timestamp};

/// A count that never runs out (restic's `-1`).
pub const ALL: u32 = u32::MAX;

/// A time span as restic writes it: years, months, days and hours, e.g.
/// `7d`, `1y6m`, `2d12h` (`m` is months).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Within {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl Within {
    /// True when every part is zero (no rule).
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    /// The instant `self` before `latest`, in calendar arithmetic of `tz`
    /// (years, months, days on the calendar, then hours); the earliest
    /// instant when it falls before it.
    /// The span as jiff's calendar span (years, months, days, hours).
    pub fn span(&self) -> Span {
        Span::new()
            .years(i64::from(self.years.min(19_998)))
            .months(i64::from(self.months.min(239_976)))
            .days(i64::from(self.days.min(7_304_484)))
            .hours(i64::from(self.hours.min(175_307_616)))
    }

    fn before(&self, latest: Timestamp, tz: &TimeZone) -> Timestamp {
        let span = self.span();
        latest
            .to_zoned(tz.clone())
            .checked_sub(span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }
}

/// A span that does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration lifeboat reads: give numbers with units y (years), m (months), d (days), h (hours), e.g. 7d, 1y6m, 2d12h")]
pub struct WithinError {
    /// The text given.
    pub text: String,
}

impl FromStr for Within {
    type Err = WithinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WithinError {
            text: s.to_string(),
        };
        let mut w = Within::default();
        let mut num = String::new();
        let mut seen = [false; 4];
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| err())?;
            num.clear();
            let (slot, i) = match c {
                'y' => (&mut w.years, 0),
                'm' => (&mut w.months, 1),
                'd' => (&mut w.days, 2),
                'h' => (&mut w.hours, 3),
                _ => return Err(err()),
            };
            if seen[i] {
                return Err(err());
            }
            seen[i] = true;
            *slot = n;
        }
        if !num.is_empty() || !seen.iter().any(|s| *s) {
            return Err(err());
        }
        Ok(w)
    }
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// Which snapshots to keep. Counts of zero (or absent) and zero spans are no
/// rule; [`ALL`] is a count that never runs out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N snapshots.
    pub keep_last: Option<u32>,
    /// The newest snapshot of each of the newest N hours that have one.
    pub keep_hourly: Option<u32>,
    /// … days.
    pub keep_daily: Option<u32>,
    /// … ISO weeks.
    pub keep_weekly: Option<u32>,
    /// … months.
    pub keep_monthly: Option<u32>,
    /// … years.
    pub keep_yearly: Option<u32>,
    /// Every snapshot within this span of the newest.
    pub keep_within: Option<Within>,
    /// The newest snapshot of each hour within this span of the newest.
    pub keep_within_hourly: Option<Within>,
    /// … of each day.
    pub keep_within_daily: Option<Within>,
    /// … of each ISO week.
    pub keep_within_weekly: Option<Within>,
    /// … of each month.
    pub keep_within_monthly: Option<Within>,
    /// … of each year.
    pub keep_within_yearly: Option<Within>,
    /// Every snapshot carrying all tags of one of these lists.
    pub keep_tags: Vec<Vec<String>>,
}

impl Policy {
    /// True when no rule would keep anything (every count zero or absent,
    /// every span zero or absent, no tag list).
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(c, _)| c.unwrap_or(0) == 0)
            && self
                .withins()
                .iter()
                .all(|(w, _)| w.is_none_or(|w| w.is_zero()))
            && self.keep_within.is_none_or(|w| w.is_zero())
            && self.keep_tags.iter().all(|t| t.is_empty())
    }

    /// `self`'s rules replaced by those `over` sets (flags over config).
    pub fn overridden_by(&self, over: &Policy) -> Policy {
        Policy {
            keep_last: over.keep_last.or(self.keep_last),
            keep_hourly: over.keep_hourly.or(self.keep_hourly),
            keep_daily: over.keep_daily.or(self.keep_daily),
            keep_weekly: over.keep_weekly.or(self.keep_weekly),
            keep_monthly: over.keep_monthly.or(self.keep_monthly),
            keep_yearly: over.keep_yearly.or(self.keep_yearly),
            keep_within: over.keep_within.or(self.keep_within),
            keep_within_hourly: over.keep_within_hourly.or(self.keep_within_hourly),
            keep_within_daily: over.keep_within_daily.or(self.keep_within_daily),
            keep_within_weekly: over.keep_within_weekly.or(self.keep_within_weekly),
            keep_within_monthly: over.keep_within_monthly.or(self.keep_within_monthly),
            keep_within_yearly: over.keep_within_yearly.or(self.keep_within_yearly),
            keep_tags: if over.keep_tags.is_empty() {
                self.keep_tags.clone()
            } else {
                over.keep_tags.clone()
            },
        }
    }

    /// True when some rule is set (a flag given).
    pub fn any_set(&self) -> bool {
        *self != Policy::default()
    }

    fn counts(&self) -> [(Option<u32>, Unit); 6] {
        [
            (self.keep_last, Unit::Last),
            (self.keep_hourly, Unit::Hour),
            (self.keep_daily, Unit::Day),
            (self.keep_weekly, Unit::Week),
            (self.keep_monthly, Unit::Month),
            (self.keep_yearly, Unit::Year),
        ]
    }

    fn withins(&self) -> [(Option<Within>, Unit); 5] {
        [
            (self.keep_within_hourly, Unit::Hour),
            (self.keep_within_daily, Unit::Day),
            (self.keep_within_weekly, Unit::Week),
            (self.keep_within_monthly, Unit::Month),
            (self.keep_within_yearly, Unit::Year),
        ]
    }
}

impl fmt::Display for Policy {
    /// The rules set, as `keep_daily=30 keep_within=7d …`; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (c, u) in self.counts() {
            match c {
                Some(ALL) => parts.push(format!("keep_{}=all", u.rule())),
                Some(n) if n > 0 => parts.push(format!("keep_{}={n}", u.rule())),
                _ => {}
            }
        }
        if let Some(w) = self.keep_within.filter(|w| !w.is_zero()) {
            parts.push(format!("keep_within={w}"));
        }
        for (w, u) in self.withins() {
            if let Some(w) = w.filter(|w| !w.is_zero()) {
                parts.push(format!("keep_within_{}={w}", u.rule()));
            }
        }
        for t in &self.keep_tags {
            parts.push(format!("keep_tag={}", t.join(",")));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// A bucket size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Every snapshot its own bucket (`keep_last`).
    Last,
    /// The hour.
    Hour,
    /// The day.
    Day,
    /// The ISO week.
    Week,
    /// The month.
    Month,
    /// The year.
    Year,
}

impl Unit {
    fn rule(self) -> &'static str {
        match self {
            Unit::Last => "last",
            Unit::Hour => "hourly",
            Unit::Day => "daily",
            Unit::Week => "weekly",
            Unit::Month => "monthly",
            Unit::Year => "yearly",
        }
    }

    /// The bucket of local time `dt` (`nr`: the snapshot's place, for `Last`).
    fn bucket(self, dt: DateTime, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(dt.year()),
            i64::from(dt.month()),
            i64::from(dt.day()),
            i64::from(dt.hour()),
        );
        match self {
            Unit::Last => nr as i64,
            Unit::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Unit::Day => (y * 100 + m) * 100 + d,
            Unit::Week => {
                let w = dt.date().iso_week_date();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Unit::Month => y * 100 + m,
            Unit::Year => y,
        }
    }

    /// The bucket of `dt` as people read it: `2026-11-27 13:00`,
    /// `2026-11-27`, `2026-W48`, `2026-10`, `2026`.
    fn label(self, dt: DateTime) -> String {
        match self {
            Unit::Last => String::new(),
            Unit::Hour => dt.strftime("%Y-%m-%d %H:00").to_string(),
            Unit::Day => dt.strftime("%Y-%m-%d").to_string(),
            Unit::Week => {
                let w = dt.date().iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Unit::Month => dt.strftime("%Y-%m").to_string(),
            Unit::Year => format!("{:04}", dt.year()),
        }
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The newest snapshot of its series: always kept.
    Newest,
    /// One of the newest `keep_last`.
    Last,
    /// The snapshot a counting rule keeps for its bucket (the label says
    /// which: `2026-11-27`).
    Bucket {
        /// The rule's bucket size (never `Last`).
        unit: Unit,
        /// The bucket, as [`Reason`]'s display shows it.
        label: String,
    },
    /// Within `keep_within` of the newest.
    Within(Within),
    /// The snapshot a `keep_within_*` rule keeps for its bucket.
    WithinBucket {
        /// The rule's bucket size.
        unit: Unit,
        /// The bucket.
        label: String,
    },
    /// Carries all these tags.
    Tag(Vec<String>),
    /// Held, for this reason.
    Hold(String),
    /// The series has no policy: everything is kept.
    NoPolicy,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Newest => f.write_str("newest"),
            Reason::Last => f.write_str("last"),
            Reason::Bucket { unit, label } => write!(f, "{} {label}", unit.rule()),
            Reason::Within(w) => write!(f, "within {w}"),
            Reason::WithinBucket { unit, label } => write!(f, "within-{} {label}", unit.rule()),
            Reason::Tag(t) => write!(f, "tag {}", t.join(",")),
            Reason::Hold(r) => write!(f, "hold: {r}"),
            Reason::NoPolicy => f.write_str("no policy"),
        }
    }
}

/// A snapshot of a series, as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: SnapshotId,
    /// Its time (the backup's start).
    pub time: Timestamp,
    /// Its tags.
    pub tags: &'a [String],
    /// The reason of an active hold on it.
    pub hold: Option<&'a str>,
}

/// What the policy decided for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: Timestamp,
    /// Why it is kept; empty: it is forgotten.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// True when some rule keeps it.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The decisions of `policy` over one series' `snapshots` (in any order),
/// newest first, buckets in time zone `tz`. An empty policy keeps
/// everything ([`Reason::NoPolicy`]); callers that mean to refuse it check
/// [`Policy::is_empty`] first.
pub fn apply(policy: &Policy, tz: &TimeZone, snapshots: &[Candidate<'_>]) -> Vec<Decision> {
    apply_at(policy, tz, snapshots, Timestamp::MAX)
}

/// [`apply`] at time `now`: the `within` rules count back from the newest
/// snapshot not after `now` (as restic does), so one recorded in the future
/// (`--time`) does not push every other out of a `keep_within` span.
pub fn apply_at(
    policy: &Policy,
    tz: &TimeZone,
    snapshots: &[Candidate<'_>],
    now: Timestamp,
) -> Vec<Decision> {
    let mut order: Vec<&Candidate<'_>> = snapshots.iter().collect();
    // Newest first; equal times by id, so the outcome does not depend on the
    // order given.
    order.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let Some(newest) = order.first().map(|c| c.time) else {
        return Vec::new();
    };
    let latest = order
        .iter()
        .map(|c| c.time)
        .find(|t| *t <= now)
        .unwrap_or(newest);
    let empty = policy.is_empty();
    let n = order.len();
    let mut counts: Vec<(u32, Unit, Option<i64>)> = policy
        .counts()
        .iter()
        .filter_map(|(c, u)| c.filter(|c| *c > 0).map(|c| (c, *u, None)))
        .collect();
    let within = policy
        .keep_within
        .filter(|w| !w.is_zero())
        .map(|w| (w, w.before(latest, tz)));
    let mut withins: Vec<(Unit, Timestamp, Option<i64>)> = policy
        .withins()
        .iter()
        .filter_map(|(w, u)| {
            w.filter(|w| !w.is_zero())
                .map(|w| (*u, w.before(latest, tz), None))
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for (nr, cur) in order.into_iter().enumerate() {
        let mut reasons = Vec::new();
        if nr == 0 {
            reasons.push(Reason::Newest);
        }
        if let Some(h) = cur.hold {
            reasons.push(Reason::Hold(h.to_string()));
        }
        if empty {
            reasons.push(Reason::NoPolicy);
        }
        let dt = tz.to_datetime(cur.time);
        for list in &policy.keep_tags {
            if !list.is_empty() && list.iter().all(|t| cur.tags.contains(t)) {
                reasons.push(Reason::Tag(list.clone()));
            }
        }
        if let Some((w, since)) = within {
            if cur.time > since {
                reasons.push(Reason::Within(w));
            }
        }
        for (count, unit, last) in counts.iter_mut() {
            if *count == 0 {
                continue;
            }
            let b = unit.bucket(dt, nr);
            if Some(b) != *last || nr == n - 1 {
                *last = Some(b);
                if *count != ALL {
                    *count -= 1;
                }
                reasons.push(match unit {
                    Unit::Last => Reason::Last,
                    u => Reason::Bucket {
                        unit: *u,
                        label: u.label(dt),
                    },
                });
            }
        }
        for (unit, since, last) in withins.iter_mut() {
            if cur.time > *since {
                let b = unit.bucket(dt, nr);
                if Some(b) != *last {
                    *last = Some(b);
                    reasons.push(Reason::WithinBucket {
                        unit: *unit,
                        label: unit.label(dt),
                    });
                }
            }
        }
        out.push(Decision {
            id: cur.id,
            time: cur.time,
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> SnapshotId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        SnapshotId(b)
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Decisions over times given as RFC 3339, rendered `time: reasons`.
    fn run(policy: &Policy, tz: &TimeZone, times: &[&str]) -> Vec<String> {
        let tags: Vec<String> = Vec::new();
        let c: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: id(i as u32),
                time: ts(t),
                tags: &tags,
                hold: None,
            })
            .collect();
        apply(policy, tz, &c)
            .iter()
            .map(|d| {
                let r: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                format!("{}: {}", d.time, r.join(", "))
            })
            .collect()
    }

    #[test]
    fn a_snapshot_in_the_future_does_not_push_the_others_out_of_keep_within() {
        let policy = Policy {
            keep_within: Some("30d".parse().unwrap()),
            ..Policy::default()
        };
        let tags: Vec<String> = Vec::new();
        let times = [
            "2030-01-01T00:00:00Z",
            "2026-11-20T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "2026-09-01T00:00:00Z",
        ];
        let c: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: id(i as u32),
                time: ts(t),
                tags: &tags,
                hold: None,
            })
            .collect();
        let kept: Vec<bool> = apply_at(&policy, &TimeZone::UTC, &c, ts("2026-11-28T00:00:00Z"))
            .iter()
            .map(Decision::keep)
            .collect();
        // The 2030 one is the newest (kept); the window counts back from
        // 2026-11-20, the newest not after now.
        assert_eq!(kept, [true, true, true, false]);
    }

    #[test]
    fn within_spans_read_as_restic_writes_them() {
        let w: Within = "1y6m2d12h".parse().unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 6, 2, 12));
        assert_eq!(w.to_string(), "1y6m2d12h");
        assert_eq!("7d".parse::<Within>().unwrap().to_string(), "7d");
        for bad in ["", "7", "7x", "d", "1d1d", "-1d", "7 days"] {
            assert!(bad.parse::<Within>().is_err(), "{bad}");
        }
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_the_oldest_while_count_is_left() {
        let p = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        let got = run(
            &p,
            &TimeZone::UTC,
            &[
                "2026-11-27T13:00:00Z",
                "2026-11-27T01:00:00Z",
                "2026-11-26T10:00:00Z",
                "2026-11-24T09:00:00Z",
                "2026-11-24T08:00:00Z",
                "2026-11-20T08:00:00Z",
            ],
        );
        assert_eq!(
            got,
            [
                "2026-11-27T13:00:00Z: newest, daily 2026-11-27",
                "2026-11-27T01:00:00Z: ",
                "2026-11-26T10:00:00Z: daily 2026-11-26",
                "2026-11-24T09:00:00Z: daily 2026-11-24",
                "2026-11-24T08:00:00Z: ",
                "2026-11-20T08:00:00Z: ",
            ]
        );
        // With count left at the oldest, the oldest is kept too (restic).
        let p = Policy {
            keep_daily: Some(10),
            ..Policy::default()
        };
        let got = run(
            &p,
            &TimeZone::UTC,
            &["2026-11-27T13:00:00Z", "2026-11-27T01:00:00Z"],
        );
        assert_eq!(
            got,
            [
                "2026-11-27T13:00:00Z: newest, daily 2026-11-27",
                "2026-11-27T01:00:00Z: daily 2026-11-27",
            ]
        );
    }

    #[test]
    fn weeks_are_iso_weeks_and_buckets_follow_the_time_zone() {
        let p = Policy {
            keep_weekly: Some(2),
            keep_yearly: Some(1),
            ..Policy::default()
        };
        // 2027-01-01 (Friday) is in ISO week 2026-W53 with 2026-12-28.
        let got = run(
            &p,
            &TimeZone::UTC,
            &[
                "2027-01-01T10:00:00Z",
                "2026-12-28T10:00:00Z",
                "2026-12-27T10:00:00Z",
                "2026-12-20T10:00:00Z",
            ],
        );
        assert_eq!(
            got,
            [
                "2027-01-01T10:00:00Z: newest, weekly 2026-W53, yearly 2027",
                "2026-12-28T10:00:00Z: ",
                "2026-12-27T10:00:00Z: weekly 2026-W52",
                "2026-12-20T10:00:00Z: ",
            ]
        );
        // 23:30 UTC is the next day in Paris.
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let p = Policy {
            keep_daily: Some(5),
            ..Policy::default()
        };
        let got = run(
            &p,
            &paris,
            &["2026-11-27T23:30:00Z", "2026-11-27T22:30:00Z"],
        );
        assert_eq!(
            got,
            [
                "2026-11-27T23:30:00Z: newest, daily 2026-11-28",
                "2026-11-27T22:30:00Z: daily 2026-11-27",
            ]
        );
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot_and_strict() {
        let p = Policy {
            keep_within: Some("2d".parse().unwrap()),
            keep_within_daily: Some("3d".parse().unwrap()),
            ..Policy::default()
        };
        let got = run(
            &p,
            &TimeZone::UTC,
            &[
                "2020-03-10T12:00:00Z",
                "2020-03-09T12:00:00Z",
                "2020-03-09T06:00:00Z",
                "2020-03-08T12:00:00Z",
                "2020-03-07T13:00:00Z",
                "2020-03-07T12:00:00Z",
            ],
        );
        assert_eq!(
            got,
            [
                "2020-03-10T12:00:00Z: newest, within 2d, within-daily 2020-03-10",
                "2020-03-09T12:00:00Z: within 2d, within-daily 2020-03-09",
                "2020-03-09T06:00:00Z: within 2d",
                "2020-03-08T12:00:00Z: within-daily 2020-03-08",
                "2020-03-07T13:00:00Z: within-daily 2020-03-07",
                "2020-03-07T12:00:00Z: ",
            ]
        );
    }

    #[test]
    fn last_hourly_monthly_tags_and_holds() {
        let tags_a = vec!["keep".to_string(), "db".to_string()];
        let none: Vec<String> = Vec::new();
        let times = [
            "2026-11-27T13:40:00Z",
            "2026-11-27T13:10:00Z",
            "2026-11-27T12:00:00Z",
            "2026-10-03T12:00:00Z",
            "2026-09-01T12:00:00Z",
        ];
        let c: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: id(i as u32),
                time: ts(t),
                tags: if i == 3 { &tags_a } else { &none },
                hold: (i == 4).then_some("legal case 42"),
            })
            .collect();
        let p = Policy {
            keep_last: Some(1),
            keep_hourly: Some(2),
            keep_monthly: Some(1),
            keep_tags: vec![vec!["keep".into()]],
            ..Policy::default()
        };
        let got: Vec<String> = apply(&p, &TimeZone::UTC, &c)
            .iter()
            .map(|d| {
                d.reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        assert_eq!(
            got,
            [
                "newest, last, hourly 2026-11-27 13:00, monthly 2026-11",
                "",
                "hourly 2026-11-27 12:00",
                "tag keep",
                "hold: legal case 42",
            ]
        );
    }

    #[test]
    fn all_never_runs_out_and_an_empty_policy_keeps_everything() {
        let p = Policy {
            keep_monthly: Some(ALL),
            ..Policy::default()
        };
        let got = run(
            &p,
            &TimeZone::UTC,
            &[
                "2026-03-02T00:00:00Z",
                "2026-03-01T00:00:00Z",
                "2026-02-01T00:00:00Z",
                "2026-01-15T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ],
        );
        // Only 2026-03-01 is forgotten: the oldest is kept, as count is left.
        assert_eq!(
            got.iter().filter(|l| l.ends_with(": ")).count(),
            1,
            "{got:?}"
        );
        assert!(Policy::default().is_empty());
        let got = run(
            &Policy::default(),
            &TimeZone::UTC,
            &["2026-01-01T00:00:00Z", "2025-01-01T00:00:00Z"],
        );
        assert_eq!(got[1], "2025-01-01T00:00:00Z: no policy");
        assert!(Policy {
            keep_daily: Some(0),
            ..Policy::default()
        }
        .is_empty());
    }

    /// The snapshot times of restic's policy tests
    /// (`internal/restic/snapshot_policy_test.go`), as data.
    const RESTIC_TIMES: &[&str] = &[
        "2014-09-01T10:20:30Z",
        "2014-09-02T10:20:30Z",
        "2014-09-05T10:20:30Z",
        "2014-09-06T10:20:30Z",
        "2014-09-08T10:20:30Z",
        "2014-09-09T10:20:30Z",
        "2014-09-10T10:20:30Z",
        "2014-09-11T10:20:30Z",
        "2014-09-20T10:20:30Z",
        "2014-09-22T10:20:30Z",
        "2014-08-08T10:20:30Z",
        "2014-08-10T10:20:30Z",
        "2014-08-12T10:20:30Z",
        "2014-08-13T10:20:30Z",
        "2014-08-13T10:20:30.1Z",
        "2014-08-15T10:20:30Z",
        "2014-08-18T10:20:30Z",
        "2014-08-20T10:20:30Z",
        "2014-08-21T10:20:30Z",
        "2014-08-22T10:20:30Z",
        "2014-10-01T10:20:30Z",
        "2014-10-02T10:20:30Z",
        "2014-10-05T10:20:30Z",
        "2014-10-06T10:20:30Z",
        "2014-10-08T10:20:30Z",
        "2014-10-09T10:20:30Z",
        "2014-10-10T10:20:30Z",
        "2014-10-11T10:20:30Z",
        "2014-10-20T10:20:30Z",
        "2014-10-22T10:20:30Z",
        "2014-11-08T10:20:30Z",
        "2014-11-10T10:20:30Z",
        "2014-11-12T10:20:30Z",
        "2014-11-13T10:20:30Z",
        "2014-11-13T10:20:30.1Z",
        "2014-11-15T10:20:30Z",
        "2014-11-18T10:20:30Z",
        "2014-11-20T10:20:30Z",
        "2014-11-21T10:20:30Z",
        "2014-11-22T10:20:30Z",
        "2015-09-01T10:20:30Z",
        "2015-09-02T10:20:30Z",
        "2015-09-05T10:20:30Z",
        "2015-09-06T10:20:30Z",
        "2015-09-08T10:20:30Z",
        "2015-09-09T10:20:30Z",
        "2015-09-10T10:20:30Z",
        "2015-09-11T10:20:30Z",
        "2015-09-20T10:20:30Z",
        "2015-09-22T10:20:30Z",
        "2015-08-08T10:20:30Z",
        "2015-08-10T10:20:30Z",
        "2015-08-12T10:20:30Z",
        "2015-08-13T10:20:30Z",
        "2015-08-13T10:20:30.1Z",
        "2015-08-15T10:20:30Z",
        "2015-08-18T10:20:30Z",
        "2015-08-20T10:20:30Z",
        "2015-08-21T10:20:30Z",
        "2015-08-22T10:20:30Z",
        "2015-10-01T10:20:30Z",
        "2015-10-02T10:20:30Z",
        "2015-10-05T10:20:30Z",
        "2015-10-06T10:20:30Z",
        "2015-10-08T10:20:30Z",
        "2015-10-09T10:20:30Z",
        "2015-10-10T10:20:30Z",
        "2015-10-11T10:20:30Z",
        "2015-10-20T10:20:30Z",
        "2015-10-22T10:20:30Z",
        "2015-10-22T10:20:30Z",
        "2015-10-22T10:20:30Z",
        "2015-10-22T10:20:30Z",
        "2015-10-22T10:20:30Z",
        "2015-11-08T10:20:30Z",
        "2015-11-10T10:20:30Z",
        "2015-11-12T10:20:30Z",
        "2015-11-13T10:20:30Z",
        "2015-11-13T10:20:30.1Z",
        "2015-11-15T10:20:30Z",
        "2015-11-18T10:20:30Z",
        "2015-11-20T10:20:30Z",
        "2015-11-21T10:20:30Z",
        "2015-11-22T10:20:30Z",
        "2016-01-01T01:02:03Z",
        "2016-01-01T01:03:03Z",
        "2016-01-01T07:08:03Z",
        "2016-01-03T07:02:03Z",
        "2016-01-04T10:23:03Z",
        "2016-01-04T11:23:03Z",
        "2016-01-04T12:23:03Z",
        "2016-01-04T12:24:03Z",
        "2016-01-04T12:28:03Z",
        "2016-01-04T12:30:03Z",
        "2016-01-04T16:23:03Z",
        "2016-01-05T09:02:03Z",
        "2016-01-06T08:02:03Z",
        "2016-01-07T10:02:03Z",
        "2016-01-08T20:02:03Z",
        "2016-01-09T21:02:03Z",
        "2016-01-12T21:02:03Z",
        "2016-01-12T21:08:03Z",
        "2016-01-18T12:02:03Z",
    ];

    /// Restic's example `--keep-daily 7 --keep-weekly 2 --keep-monthly 3
    /// --keep-yearly 10` (its golden file `policy_keep_snapshots_17`), plus
    /// the oldest snapshot, which today's restic keeps too: the yearly rule
    /// has count left when it reaches it.
    #[test]
    fn restics_daily_weekly_monthly_yearly_example() {
        let p = Policy {
            keep_daily: Some(7),
            keep_weekly: Some(2),
            keep_monthly: Some(3),
            keep_yearly: Some(10),
            ..Policy::default()
        };
        let got: Vec<String> = run(&p, &TimeZone::UTC, RESTIC_TIMES)
            .into_iter()
            .filter(|l| !l.ends_with(": "))
            .collect();
        assert_eq!(
            got,
            [
                "2016-01-18T12:02:03Z: newest, daily 2016-01-18, weekly 2016-W03, monthly 2016-01, yearly 2016",
                "2016-01-12T21:08:03Z: daily 2016-01-12, weekly 2016-W02",
                "2016-01-09T21:02:03Z: daily 2016-01-09",
                "2016-01-08T20:02:03Z: daily 2016-01-08",
                "2016-01-07T10:02:03Z: daily 2016-01-07",
                "2016-01-06T08:02:03Z: daily 2016-01-06",
                "2016-01-05T09:02:03Z: daily 2016-01-05",
                "2015-11-22T10:20:30Z: monthly 2015-11, yearly 2015",
                "2015-10-22T10:20:30Z: monthly 2015-10",
                "2014-11-22T10:20:30Z: yearly 2014",
                "2014-08-08T10:20:30Z: yearly 2014",
            ]
        );
        assert_eq!(
            run(&p, &TimeZone::UTC, RESTIC_TIMES).len(),
            RESTIC_TIMES.len()
        );
    }

    /// Restic's `--keep-within 1m14d` (`policy_keep_snapshots_25`): relative
    /// to the newest snapshot, 2016-01-18.
    #[test]
    fn restics_within_example() {
        let p = Policy {
            keep_within: Some("1m14d".parse().unwrap()),
            ..Policy::default()
        };
        let got = run(&p, &TimeZone::UTC, RESTIC_TIMES);
        let kept: Vec<&str> = got
            .iter()
            .filter(|l| !l.ends_with(": "))
            .map(|l| &l[..10])
            .collect();
        // 2016-01-18 minus one month and 14 days: 2015-12-04.
        // Every 2016 snapshot; none of 2015 reaches past it.
        assert_eq!(kept.len(), 19, "{kept:?}");
        assert!(kept.iter().all(|d| *d > "2015-12-04"), "{kept:?}");
    }

    fn policy_strategy() -> impl Strategy<Value = Policy> {
        let c = || prop::option::of(0u32..6);
        let w = || {
            prop::option::of(
                (0u32..2, 0u32..3, 0u32..20, 0u32..30).prop_map(|(y, m, d, h)| Within {
                    years: y,
                    months: m,
                    days: d,
                    hours: h,
                }),
            )
        };
        (
            (c(), c(), c(), c(), c(), c()),
            (w(), w(), w(), w(), w(), w()),
        )
            .prop_map(|((l, h, d, wk, mo, y), (wi, wh, wd, ww, wm, wy))| Policy {
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: wk,
                keep_monthly: mo,
                keep_yearly: y,
                keep_within: wi,
                keep_within_hourly: wh,
                keep_within_daily: wd,
                keep_within_weekly: ww,
                keep_within_monthly: wm,
                keep_within_yearly: wy,
                keep_tags: Vec::new(),
            })
    }

    fn candidates(offsets: &[(i64, bool)]) -> (Vec<Timestamp>, Vec<bool>) {
        let base = ts("2024-01-01T00:00:00Z");
        let times = offsets
            .iter()
            .map(|(o, _)| base.checked_add(Span::new().minutes(*o)).unwrap())
            .collect();
        (times, offsets.iter().map(|(_, h)| *h).collect())
    }

    fn decide(p: &Policy, times: &[Timestamp], held: &[bool], rev: bool) -> Vec<Decision> {
        let none: Vec<String> = Vec::new();
        let mut c: Vec<Candidate<'_>> = times
            .iter()
            .zip(held)
            .enumerate()
            .map(|(i, (t, h))| Candidate {
                id: id(i as u32),
                time: *t,
                tags: &none,
                hold: h.then_some("held"),
            })
            .collect();
        if rev {
            c.reverse();
        }
        apply(p, &TimeZone::UTC, &c)
    }

    proptest! {
        #[test]
        fn newest_and_held_are_always_kept_and_order_does_not_matter(
            p in policy_strategy(),
            offs in prop::collection::vec((0i64..2_000_000, prop::bool::weighted(0.1)), 1..60),
        ) {
            let (times, held) = candidates(&offs);
            let d = decide(&p, &times, &held, false);
            prop_assert_eq!(d.len(), times.len());
            prop_assert!(d[0].keep());
            let newest = *times.iter().max().unwrap();
            prop_assert_eq!(d[0].time, newest);
            for x in &d {
                let i = u32::from_be_bytes(x.id.0[..4].try_into().unwrap()) as usize;
                if held[i] { prop_assert!(x.keep()); }
            }
            prop_assert_eq!(d, decide(&p, &times, &held, true));
        }

        #[test]
        fn more_count_never_forgets_more(
            p in policy_strategy(),
            offs in prop::collection::vec((0i64..2_000_000, Just(false)), 1..60),
            which in 0usize..6,
        ) {
            let (times, held) = candidates(&offs);
            let mut q = p.clone();
            let slot = [&mut q.keep_last, &mut q.keep_hourly, &mut q.keep_daily, &mut q.keep_weekly, &mut q.keep_monthly, &mut q.keep_yearly];
            let old = slot[which].unwrap_or(0);
            *slot.into_iter().nth(which).unwrap() = Some(old + 1);
            if p.is_empty() { return Ok(()); }
            let a = decide(&p, &times, &held, false);
            let b = decide(&q, &times, &held, false);
            for (x, y) in a.iter().zip(&b) {
                prop_assert!(!x.keep() || y.keep(), "{:?} kept by {} but not by {}", x.time, p, q);
            }
        }

        #[test]
        fn a_count_keeps_at_most_its_buckets_and_the_oldest(
            n in 1u32..8,
            offs in prop::collection::vec((0i64..500_000, Just(false)), 1..80),
        ) {
            let (times, held) = candidates(&offs);
            let p = Policy { keep_daily: Some(n), ..Policy::default() };
            let d = decide(&p, &times, &held, false);
            let days: std::collections::BTreeSet<_> = times.iter().map(|t| TimeZone::UTC.to_datetime(*t).date()).collect();
            let by_rule = d.iter().filter(|x| x.reasons.iter().any(|r| matches!(r, Reason::Bucket { .. }))).count();
            prop_assert!(by_rule <= (n as usize).min(days.len()) + 1);
            prop_assert!(by_rule >= (n as usize).min(days.len()));
            // Each day kept is kept by its newest snapshot (but the oldest's).
            let last = d.len() - 1;
            for (i, x) in d.iter().enumerate() {
                if i < last && x.keep() && i > 0 {
                    let day = TimeZone::UTC.to_datetime(x.time).date();
                    prop_assert_ne!(TimeZone::UTC.to_datetime(d[i - 1].time).date(), day);
                }
            }
        }

        #[test]
        fn keep_last_keeps_exactly_the_newest_n(
            n in 1u32..10,
            offs in prop::collection::vec((0i64..500_000, Just(false)), 1..40),
        ) {
            let (times, held) = candidates(&offs);
            let p = Policy { keep_last: Some(n), ..Policy::default() };
            let d = decide(&p, &times, &held, false);
            let kept = d.iter().filter(|x| x.keep()).count();
            prop_assert_eq!(kept, (n as usize).min(d.len()));
            prop_assert!(d.iter().take(n as usize).all(|x| x.keep()));
        }
    }
}
