//! Retention end to end: `files backup --time` over about three years,
//! `forget` deciding by the config's policy (reasons checked against an
//! independent model of restic's rules), deleting exactly what it forgets,
//! holds protecting, flags overriding the config, and the usage errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use crate::harness::*;

const CONFIG: &str = "[retention]\ntimezone = \"UTC\"\n\n[retention.files]\nkeep_daily = 7\nkeep_monthly = 12\nkeep_yearly = 5\n";

/// The backup times: the 1st of each month from 2024-01 to 2026-10, the
/// 15th of each month of 2026, then daily at 02:00 from 2026-11-18 to
/// 2026-11-27 with a second backup at 14:00 on the last three days.
fn times() -> Vec<String> {
    let mut t = Vec::new();
    for y in 2024..=2026 {
        for m in 1..=12 {
            if y == 2026 && m > 10 {
                break;
            }
            t.push(format!("{y}-{m:02}-01T02:00:00Z"));
            if y == 2026 {
                t.push(format!("{y}-{m:02}-15T02:00:00Z"));
            }
        }
    }
    for d in 18..=27 {
        t.push(format!("2026-11-{d}T02:00:00Z"));
        if d >= 25 {
            t.push(format!("2026-11-{d}T14:00:00Z"));
        }
    }
    t
}

/// The reasons restic's rules give, computed the plain way: for each rule,
/// the newest snapshot of each of the newest N buckets, and the oldest
/// snapshot when fewer than N buckets exist. `times` newest first.
/// A counting rule: its name, its count, the bucket of a time.
type Rule = (&'static str, usize, fn(&str) -> String);

fn model(times: &[String], rules: &[Rule]) -> Vec<BTreeSet<String>> {
    let mut out = vec![BTreeSet::new(); times.len()];
    out[0].insert("newest".to_string());
    for (name, n, bucket) in rules {
        let mut seen: Vec<String> = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let b = bucket(t);
            if seen.last() != Some(&b) && seen.len() < *n {
                seen.push(b.clone());
                out[i].insert(format!("{name} {b}"));
            }
        }
        let last = times.len() - 1;
        if seen.len() < *n && !out[last].contains(&format!("{name} {}", bucket(&times[last]))) {
            out[last].insert(format!("{name} {}", bucket(&times[last])));
        }
    }
    out
}

fn day(t: &str) -> String {
    t[..10].to_string()
}
fn month(t: &str) -> String {
    t[..7].to_string()
}
fn year(t: &str) -> String {
    t[..4].to_string()
}

struct Made {
    src: PathBuf,
    /// Snapshot id → (time, generation).
    by_id: BTreeMap<String, (String, usize)>,
}

fn make(env: &Env) -> Made {
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut by_id = BTreeMap::new();
    for (i, t) in times().iter().enumerate() {
        fs::write(src.join("data"), format!("generation {i}")).unwrap();
        let j = env.json(&["files", "backup", src.to_str().unwrap(), "--time", t]);
        by_id.insert(snapshot_id(&j), (t.clone(), i));
    }
    Made { src, by_id }
}

fn config(env: &Env, text: &str) -> String {
    let p = env.path("lifeboat.toml");
    fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The one series' snapshots of a `forget --json` report: id → reasons.
fn decided(report: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{report}");
    series[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let reasons: Vec<String> = e["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            assert_eq!(e["keep"], !reasons.is_empty(), "{e}");
            (
                e["id"].as_str().unwrap().to_string(),
                e["time"].as_str().unwrap().to_string(),
                reasons,
            )
        })
        .collect()
}

fn snapshot_ids(env: &Env) -> BTreeSet<String> {
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn restores(env: &Env, made: &Made, id: &str) {
    let target = env.path(&format!("r-{}", &id[..12]));
    env.ok(&["files", "restore", id, "--target", target.to_str().unwrap()]);
    let got = fs::read_to_string(restored(&target, &made.src).join("data")).unwrap();
    assert_eq!(got, format!("generation {}", made.by_id[id].1), "{id}");
    fs::remove_dir_all(&target).unwrap();
}

fn forget_by_policy_holds_and_flags(env: &Env) {
    let made = make(env);
    let cfg = config(env, CONFIG);
    let all = snapshot_ids(env);
    assert_eq!(all.len(), made.by_id.len());

    // Dry run: the config's policy, each reason as the model says.
    let report = env.json(&["--config", &cfg, "forget", "--dry-run"]);
    assert_eq!(report["series"][0]["policy_from"], "kind", "{report}");
    let got = decided(&report);
    let mut newest_first: Vec<String> = times();
    newest_first.reverse();
    let want = model(
        &newest_first,
        &[
            ("daily", 7, day),
            ("monthly", 12, month),
            ("yearly", 5, year),
        ],
    );
    assert_eq!(got.len(), want.len());
    for ((id, time, reasons), want) in got.iter().zip(&want) {
        let reasons: BTreeSet<String> = reasons.iter().cloned().collect();
        assert_eq!(&reasons, want, "snapshot {id} of {time}");
    }
    assert_eq!(snapshot_ids(env), all, "a dry run deletes nothing");
    let doomed: Vec<&(String, String, Vec<String>)> =
        got.iter().filter(|(_, _, r)| r.is_empty()).collect();
    assert!(doomed.len() > 10, "{got:?}");

    // A hold keeps one the policy forgets, whatever the policy.
    let held = doomed[doomed.len() / 2].0.clone();
    env.ok(&["hold", &held[..12], "--reason", "legal case 42"]);
    let snaps = env.json(&["snapshots"]);
    let entry = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == held.as_str())
        .unwrap();
    assert_eq!(entry["hold"]["reason"], "legal case 42", "{entry}");
    assert_eq!(entry["hold"]["active"], true, "{entry}");

    // Flags override the config rule by rule: --keep-daily 2 narrows the
    // daily rule, the monthly and yearly rules stay.
    let narrowed =
        decided(&env.json(&["--config", &cfg, "forget", "--dry-run", "--keep-daily", "2"]));
    let daily: Vec<&String> = narrowed
        .iter()
        .flat_map(|(_, _, r)| r.iter().filter(|x| x.starts_with("daily ")))
        .collect();
    assert_eq!(daily, ["daily 2026-11-27", "daily 2026-11-26"]);
    assert!(narrowed
        .iter()
        .any(|(_, _, r)| r.contains(&"monthly 2026-10".to_string())));

    // The real run deletes exactly the forgotten ones; every kept one restores.
    let report = env.json(&["--config", &cfg, "forget"]);
    let got = decided(&report);
    let kept: BTreeSet<String> = got
        .iter()
        .filter(|(_, _, r)| !r.is_empty())
        .map(|(id, _, _)| id.clone())
        .collect();
    assert!(kept.contains(&held));
    let held_reasons = &got.iter().find(|(id, _, _)| *id == held).unwrap().2;
    assert_eq!(held_reasons, &["hold: legal case 42"]);
    assert_eq!(snapshot_ids(env), kept);
    assert_eq!(report["forgotten"], doomed.len() - 1);
    for id in &kept {
        restores(env, &made, id);
    }

    // Released, the next forget removes it.
    env.ok(&["release", &held[..12]]);
    env.ok(&["--config", &cfg, "forget"]);
    let after = snapshot_ids(env);
    assert!(!after.contains(&held));
    assert_eq!(after.len(), kept.len() - 1);

    // forget --prune: the last one kept, the space of the others reclaimed
    // (on S3 after the delete delay), the repository sound.
    let r = env.json(&[
        "--config",
        &cfg,
        "forget",
        "--prune",
        "--keep-last",
        "1",
        "--keep-daily",
        "0",
        "--keep-monthly",
        "0",
        "--keep-yearly",
        "0",
    ]);
    assert_eq!(r["kept"], 1, "{r}");
    assert!(r["prune"]["snapshots"].as_u64() == Some(1), "{r}");
    let last = snapshot_ids(env);
    assert_eq!(last.len(), 1);
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    restores(env, &made, last.iter().next().unwrap());
}
on_every_backend!(forget_by_policy_holds_and_flags);

fn usage_error(env: &Env, args: &[&str], says: &str) {
    let out = env.run(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(says), "{args:?}: {err}");
}

#[test]
fn forget_refuses_bad_input_with_exit_2() {
    let env = Env::new(Backend::Local);
    env.init(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let j = env.json(&[
        "files",
        "backup",
        src.to_str().unwrap(),
        "--time",
        "2026-01-01T00:00:00Z",
    ]);
    let id = snapshot_id(&j);
    env.ok(&["files", "backup", src.to_str().unwrap()]);

    // Without a policy for files, nothing is forgotten, and it says so.
    let text = env.ok(&["forget", "--dry-run"]);
    assert!(text.contains("no policy: nothing forgotten"), "{text}");

    usage_error(&env, &["forget", "--source", "nope"], "no source \"nope\"");
    usage_error(&env, &["forget", "--keep-daily", "0"], "would keep nothing");
    usage_error(&env, &["forget", "--keep-within", "7x"], "not a duration");
    usage_error(
        &env,
        &["forget", "--keep-last", "1", "--timezone", "Mars/Olympus"],
        "unknown time zone \"Mars/Olympus\"",
    );
    let bad_tz = config(&env, "[retention]\ntimezone = \"Nowhere/City\"\n");
    usage_error(
        &env,
        &["--config", &bad_tz, "forget", "--keep-last", "1"],
        "unknown time zone \"Nowhere/City\"",
    );
    let nothing = config(&env, "[retention.files]\nkeep_daily = 0\n");
    usage_error(
        &env,
        &["--config", &nothing, "forget"],
        "would keep nothing",
    );
    let unknown = config(&env, "[retention.files]\nkeep_dayly = 3\n");
    usage_error(&env, &["--config", &unknown, "forget"], "keep_dayly");
    usage_error(
        &env,
        &["hold", "deadbeef", "--reason", "x"],
        "no snapshot matches \"deadbeef\"",
    );
    usage_error(&env, &["release", &id], "no hold");
    usage_error(
        &env,
        &["hold", &id, "--reason", "x", "--until", "someday"],
        "--until",
    );
    assert_eq!(snapshot_ids(&env).len(), 2, "nothing deleted");

    // An expired hold no longer protects and shows as expired.
    env.ok(&["hold", &id, "--reason", "old case", "--until", "2020-01-01"]);
    let text = env.ok(&["snapshots"]);
    assert!(text.contains("hold expired"), "{text}");
    let r = env.json(&["forget", "--keep-last", "1"]);
    assert_eq!(r["forgotten"], 1, "{r}");
    assert!(!snapshot_ids(&env).contains(&id));
}
