//! Schedules: 5-field cron expressions, `@daily` and friends, `@every DUR`,
//! evaluated in a time zone. (Filled in by the cron work.)
