//! Runbooks: the recovery procedures of the strategy's scenarios written
//! for *this* deployment — the exact `lifeboat` commands with this config
//! file's sources, repository, replicas and key location (never a secret),
//! the checks after each step, and beside each target the RTO the last
//! drill measured. `lifeboat runbook` renders them as Markdown or HTML.
//!
//! Commands are meant to be run as written: what only the operator knows
//! (the time to recover to, where to restore) is a shell variable the
//! runbook says how to set. A test runs the PITR runbook's commands word
//! for word against a real cluster.

use std::path::Path;

use lifeboat_repo::{DrillRecord, SourceDrill};
use serde::Serialize;

use crate::config::FileConfig;
use crate::{Error, Result};

/// The scenarios, by name.
pub const SCENARIOS: [&str; 5] = [
    "pitr",
    "database-corruption",
    "redis-loss",
    "region-loss",
    "ransomware",
];

/// One step of a procedure.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// What it does.
    pub title: String,
    /// Why and how, for people.
    pub text: String,
    /// Commands to run as written (one shell line each).
    pub commands: Vec<String>,
    /// What to check once it is done.
    pub checks: Vec<String>,
}

/// One scenario's procedure.
#[derive(Clone, Debug, Serialize)]
pub struct Runbook {
    /// Its name (`pitr`).
    pub scenario: String,
    /// Its title.
    pub title: String,
    /// When to use it.
    pub when: String,
    /// The targets it must meet and what the last drill measured.
    pub targets: Vec<String>,
    /// Shell variables to set first, with what to put in them.
    pub variables: Vec<(String, String)>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// What a runbook is written from.
pub struct Deployment<'a> {
    /// The config file (its absolute path goes into every command).
    pub config_path: &'a Path,
    /// The config read.
    pub file: &'a FileConfig,
    /// The drill history (for the measured RTOs); empty when none ran.
    pub drills: &'a [DrillRecord],
}

/// `s` as one shell word: as it is when nothing in it is special.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@%+=,".contains(&b));
    if plain {
        s.to_string()
    } else {
        crate::secrets::shell_quote(s)
    }
}

fn step(title: &str, text: &str, commands: Vec<String>, checks: &[&str]) -> Step {
    Step {
        title: title.into(),
        text: text.into(),
        commands,
        checks: checks.iter().map(|c| c.to_string()).collect(),
    }
}

impl Deployment<'_> {
    /// `lifeboat --config PATH` (quoted for the shell).
    fn lb(&self) -> String {
        format!(
            "lifeboat --config {}",
            shell_quote(&self.config_path.display().to_string())
        )
    }

    /// The newest drill of (source, kind), if any ran.
    fn last_drill(&self, source: &str, kinds: &[&str]) -> Option<(&DrillRecord, &SourceDrill)> {
        self.drills.iter().rev().find_map(|r| {
            r.sources
                .iter()
                .find(|s| s.source == source && kinds.contains(&s.kind.as_str()))
                .map(|s| (r, s))
        })
    }

    /// "RTO target 1 h; the last drill (date) measured 4.2 min (passed)".
    fn target_line(
        &self,
        what: &str,
        source: &str,
        kinds: &[&str],
        rto: &str,
        rpo: &str,
    ) -> String {
        let measured = match self.last_drill(source, kinds) {
            Some((r, s)) => format!(
                "the last drill ({}, {}) measured RTO {}{}",
                r.started.strftime("%Y-%m-%d"),
                if s.passed { "passed" } else { "FAILED" },
                crate::fmt::secs(s.rto_ms),
                s.rpo_s
                    .map(|x| format!(", RPO {}", crate::fmt::secs(x * 1000)))
                    .unwrap_or_default()
            ),
            None => format!(
                "no drill yet: run `{} drill {source}` to measure it",
                self.lb()
            ),
        };
        format!("{what}: RTO target {rto}, RPO target {rpo}; {measured}")
    }

    fn pg_sources(&self) -> Vec<&str> {
        self.file.postgres.keys().map(String::as_str).collect()
    }

    fn pg_target_lines(&self) -> Vec<String> {
        self.pg_sources()
            .iter()
            .map(|s| {
                let rto = self.file.postgres[*s]
                    .rto
                    .clone()
                    .unwrap_or_else(|| "1h".into());
                self.target_line(
                    &format!("PostgreSQL source {s}"),
                    s,
                    &["postgres"],
                    &rto,
                    "5m",
                )
            })
            .collect()
    }

    fn key_note(&self) -> String {
        let f = self.file;
        let where_ = match (
            &f.key_file,
            &f.password_file,
            &f.key_command,
            &f.password_command,
        ) {
            (Some(p), _, _, _) => format!("the key file {}", p.display()),
            (_, Some(p), _, _) => format!("the passphrase file {}", p.display()),
            (_, _, Some(_), _) => "the key command of the config file".into(),
            (_, _, _, Some(_)) => "the passphrase command of the config file".into(),
            _ => "LIFEBOAT_PASSWORD or LIFEBOAT_KEY in the environment".into(),
        };
        format!(
            "The repository is {}; lifeboat reads its key from {where_} (a copy must be at hand on the host that restores: without it nothing can be read).",
            f.repo.as_deref().unwrap_or("(set with --repo)")
        )
    }

    fn pitr(&self) -> Runbook {
        let lb = self.lb();
        let source = self
            .pg_sources()
            .first()
            .copied()
            .unwrap_or("main")
            .to_string();
        Runbook {
            scenario: "pitr".into(),
            title: "Accidental deletion: point-in-time recovery of PostgreSQL".into(),
            when: "Rows or tables were deleted or overwritten by mistake (a bad migration, a DELETE without WHERE). The server still runs; the data must come back as it was just before the mistake.".into(),
            targets: self.pg_target_lines(),
            variables: vec![
                ("TARGET_TIME".into(), "the moment just before the mistake, in UTC (RFC 3339: 2026-11-29T10:41:00Z); the server log or the application's log gives it".into()),
                ("RESTORE_DIR".into(), "an empty directory on a disk with room for the database, owned by the postgres user (the damaged data directory stays as it is, for forensics)".into()),
            ],
            steps: vec![
                step(
                    "Check that the archive reaches the target",
                    &format!("{} `pg info` lists the base backups and the recoverable window of every cluster: TARGET_TIME must lie inside it.", self.key_note()),
                    vec![format!("{lb} pg info")],
                    &["TARGET_TIME is after the first backup's end and before the window's end (\"recoverable to\")"],
                ),
                step(
                    "Stop the damaged server's writers",
                    &format!("Stop the application (or revoke its role's LOGIN) so nothing more is written to source {source}; keep the damaged server itself as it is. If its port is the one the restored server will take (a restore on the same host), stop it too (systemctl stop postgresql@VERSION-main)."),
                    vec![],
                    &["no client writes to the damaged server any more"],
                ),
                step(
                    "Restore and recover to the target",
                    "The newest base backup before TARGET_TIME is restored into RESTORE_DIR and started as its owner; recovery replays the archived WAL up to TARGET_TIME and promotes. Before any client can connect, the erasure ledger is re-applied (GDPR requests made since the backup stay honoured). The command prints how long restore and recovery took: the RTO.",
                    vec![format!(
                        "{lb} pg restore --pgdata \"$RESTORE_DIR\" --target-time \"$TARGET_TIME\" --target-action promote --start"
                    )],
                    &[
                        "the command ends with `server started: promoted` and the erasure ledger line",
                        "the rows deleted by mistake are back: count them with psql on the restored server",
                        "rows written after TARGET_TIME are absent: copy any you need from the damaged server",
                    ],
                ),
                step(
                    "Check the restored server and take a new base backup",
                    "The restored server is on a new timeline: back it up at once so the next point-in-time recovery can start from it, and drill it.",
                    vec![format!("{lb} pg info"), format!("{lb} drills")],
                    &[
                        "archive_mode was turned off in the restore: turn it back on when the restored server replaces the source, point [postgres.NAME] pgdata at it, then `pg backup --type full` and `pg check`",
                        "point the application at the restored server, then re-enable its writes",
                    ],
                ),
            ],
        }
    }

    fn corruption(&self) -> Runbook {
        let lb = self.lb();
        Runbook {
            scenario: "database-corruption".into(),
            title: "Database corruption: restore PostgreSQL to the end of the archive".into(),
            when: "The server reports checksum failures, pg_amcheck finds damage, or it will not start on its own data. Everything archived is wanted back.".into(),
            targets: self.pg_target_lines(),
            variables: vec![("RESTORE_DIR".into(), "an empty directory owned by the postgres user, on healthy storage".into())],
            steps: vec![
                step(
                    "Confirm the backups restore before touching anything",
                    &format!("{} A drill restores the newest backup into a sandbox and runs pg_amcheck on it: if it passes, the backup is good.", self.key_note()),
                    self.pg_sources().iter().map(|s| format!("{lb} drill {s}")).collect(),
                    &["the drill passes (its pg_amcheck check is clean)"],
                ),
                step(
                    "Restore to the end of the archived WAL",
                    "Stop the corrupted server first. The newest backup is restored and every archived WAL segment replayed; the server is promoted and the erasure ledger re-applied before clients connect.",
                    vec![format!("{lb} pg restore --pgdata \"$RESTORE_DIR\" --start")],
                    &["`server started: promoted`", "pg_amcheck --all on the restored server is clean"],
                ),
                step(
                    "Back it up",
                    "A new timeline starts: a full backup makes it the base of the next recovery.",
                    vec![format!("{lb} pg info")],
                    &["turn archive_mode back on in the restored server, point [postgres.NAME] pgdata at it, then `pg backup --type full` and `pg check`"],
                ),
            ],
        }
    }

    fn redis_loss(&self) -> Runbook {
        let lb = self.lb();
        let targets = self
            .file
            .redis
            .iter()
            .map(|(name, s)| {
                let rto = s.rto.clone().unwrap_or_else(|| "30m".into());
                self.target_line(
                    &format!("Redis source {name}"),
                    name,
                    &["redis"],
                    &rto,
                    "1h",
                )
            })
            .collect();
        Runbook {
            scenario: "redis-loss".into(),
            title: "Redis loss: restore the newest RDB".into(),
            when: "A Redis server lost its data (a FLUSHALL, a lost disk, a replaced host).".into(),
            targets,
            variables: vec![("REDIS_DIR".into(), "the directory redis-server will load dump.rdb from (its `dir`), empty".into())],
            steps: vec![
                step(
                    "Restore the newest backup and prove it loads",
                    &format!("{} The RDB is written into REDIS_DIR, then a throwaway redis-server loads it and its keys are counted against the backup's.", self.key_note()),
                    vec![format!("{lb} redis restore latest --target-dir \"$REDIS_DIR\" --verify")],
                    &["the key counts per database match those recorded at backup time"],
                ),
                step(
                    "Start Redis on it",
                    "Start the server with `dir` set to REDIS_DIR (and appendonly as before), or load a running empty server key by key with `redis restore latest --to-url URL`.",
                    vec![],
                    &["INFO keyspace shows the keys restored"],
                ),
            ],
        }
    }

    fn region_loss(&self) -> Runbook {
        let lb = self.lb();
        let replica = self.file.replica.first();
        let (name, url) = replica
            .map(|r| (r.name.clone(), r.repo.clone()))
            .unwrap_or_else(|| ("REPLICA".into(), "REPLICA_URL".into()));
        let mut targets = self.pg_target_lines();
        targets.push(
            match self
                .drills
                .iter()
                .rev()
                .find(|r| r.scenario == "region-loss")
            {
                Some(r) => format!(
                    "the last region-loss drill ({}) {}",
                    r.started.strftime("%Y-%m-%d"),
                    if r.passed { "passed" } else { "FAILED" }
                ),
                None => {
                    format!("no region-loss drill yet: `{lb} drill --all --scenario region-loss`")
                }
            },
        );
        Runbook {
            scenario: "region-loss".into(),
            title: "Region loss: recover everything from the replica".into(),
            when: "The primary region (its servers and the primary repository) is gone or unreachable for longer than the RTO allows.".into(),
            targets,
            variables: vec![
                ("RESTORE_DIR".into(), "an empty directory for PostgreSQL on the DR host, owned by the postgres user".into()),
                ("DR_CONFIG".into(), format!("a copy of this config file with `repo = \"{url}\"` and the replica's [replica.s3] settings as its [s3] (and the key file beside it): prepare it on the DR host before a disaster")),
            ],
            steps: vec![
                step(
                    "Prove the replica restores",
                    &format!("The replica {name} ({url}) holds the same objects under the same key. {}", self.key_note()),
                    vec![format!("{lb} drill --all --scenario region-loss --replica {}", shell_quote(&name))],
                    &["the drill passes for every source"],
                ),
                step(
                    "Restore PostgreSQL from the replica",
                    "The base backup and its WAL come from the replica; the erasure ledger (replicated with it) is re-applied before clients connect.",
                    vec!["lifeboat --config \"$DR_CONFIG\" pg restore --pgdata \"$RESTORE_DIR\" --start".to_string()],
                    &["`server started: promoted`", "the newest rows are those of the replica's newest WAL (pg info on the replica)"],
                ),
                step(
                    "Go on from the replica",
                    "Until the primary region is back, DR_CONFIG is the config: backups go on into the replica.",
                    vec!["lifeboat --config \"$DR_CONFIG\" status".to_string()],
                    &["lifeboat status is green again after the next backups"],
                ),
            ],
        }
    }

    fn ransomware(&self) -> Runbook {
        let lb = self.lb();
        Runbook {
            scenario: "ransomware".into(),
            title: "Ransomware: restore from a snapshot taken before the attack".into(),
            when: "Data was encrypted or destroyed by an attacker who may also have reached the backups.".into(),
            targets: self.pg_target_lines(),
            variables: vec![
                ("SNAPSHOT".into(), "the id of the newest snapshot taken before the attack began (from `snapshots`)".into()),
                ("RESTORE_DIR".into(), "an empty directory on a clean host, owned by the postgres user".into()),
            ],
            steps: vec![
                step(
                    "Check what the attacker did to the repository",
                    &format!("The audit log names every command that opened the repository and its hash chain shows records removed or altered; replicas keep deleted objects for their delete_delay. {}", self.key_note()),
                    vec![format!("{lb} audit verify"), format!("{lb} audit --since 7d"), format!("{lb} snapshots")],
                    &["audit verify is clean, or the records it names are the attacker's", "pick SNAPSHOT from before the first suspicious record"],
                ),
                step(
                    "Freeze and check that snapshot",
                    "A hold keeps it whatever retention says; verify reads every chunk it needs.",
                    vec![
                        format!("{lb} hold \"$SNAPSHOT\" --reason 'ransomware incident'"),
                        format!("{lb} verify --read-data"),
                    ],
                    &["verify reports no damage (else use a replica: see region-loss)"],
                ),
                step(
                    "Restore it on a clean host",
                    "Restore the chosen backup (no WAL past the attack: recover to its own end).",
                    vec![format!(
                        "{lb} pg restore \"$SNAPSHOT\" --pgdata \"$RESTORE_DIR\" --immediate --target-action promote --start"
                    )],
                    &["`server started: promoted`", "rotate every credential the attacker may have seen: database roles, the repository key (`repo key rotate`)"],
                ),
            ],
        }
    }

    /// The runbook of `scenario`.
    pub fn runbook(&self, scenario: &str) -> Result<Runbook> {
        Ok(match scenario {
            "pitr" => self.pitr(),
            "database-corruption" => self.corruption(),
            "redis-loss" => self.redis_loss(),
            "region-loss" => self.region_loss(),
            "ransomware" => self.ransomware(),
            other => {
                return Err(Error::usage(format!(
                    "no runbook {other:?}; the scenarios are: {}",
                    SCENARIOS.join(", ")
                )))
            }
        })
    }
}

/// A runbook as Markdown: commands in `sh` blocks.
pub fn markdown(r: &Runbook) -> String {
    let mut s = format!("# {}\n\n_When:_ {}\n\n", r.title, r.when);
    if !r.targets.is_empty() {
        s.push_str("## Targets\n\n");
        for t in &r.targets {
            s.push_str(&format!("- {t}\n"));
        }
        s.push('\n');
    }
    if !r.variables.is_empty() {
        s.push_str("## Before you start\n\nSet these shell variables:\n\n");
        for (k, v) in &r.variables {
            s.push_str(&format!("- `{k}`: {v}\n"));
        }
        s.push('\n');
    }
    for (i, st) in r.steps.iter().enumerate() {
        s.push_str(&format!("## {}. {}\n\n{}\n\n", i + 1, st.title, st.text));
        if !st.commands.is_empty() {
            s.push_str("```sh\n");
            for c in &st.commands {
                s.push_str(c);
                s.push('\n');
            }
            s.push_str("```\n\n");
        }
        if !st.checks.is_empty() {
            s.push_str("Check:\n\n");
            for c in &st.checks {
                s.push_str(&format!("- [ ] {c}\n"));
            }
            s.push('\n');
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Runbooks as one self-contained HTML page (no script).
pub fn html(books: &[Runbook]) -> String {
    let mut body = String::new();
    for r in books {
        body.push_str(&format!(
            "<section data-scenario=\"{}\"><h1>{}</h1><p><i>When:</i> {}</p>\n",
            esc(&r.scenario),
            esc(&r.title),
            esc(&r.when)
        ));
        if !r.targets.is_empty() {
            body.push_str("<h2>Targets</h2><ul>");
            for t in &r.targets {
                body.push_str(&format!("<li>{}</li>", esc(t)));
            }
            body.push_str("</ul>\n");
        }
        if !r.variables.is_empty() {
            body.push_str("<h2>Before you start</h2><ul>");
            for (k, v) in &r.variables {
                body.push_str(&format!("<li><code>{}</code>: {}</li>", esc(k), esc(v)));
            }
            body.push_str("</ul>\n");
        }
        for (i, st) in r.steps.iter().enumerate() {
            body.push_str(&format!(
                "<h2>{}. {}</h2><p>{}</p>\n",
                i + 1,
                esc(&st.title),
                esc(&st.text)
            ));
            if !st.commands.is_empty() {
                body.push_str("<pre><code>");
                for c in &st.commands {
                    body.push_str(&esc(c));
                    body.push('\n');
                }
                body.push_str("</code></pre>\n");
            }
            if !st.checks.is_empty() {
                body.push_str("<ul class=\"checks\">");
                for c in &st.checks {
                    body.push_str(&format!("<li>&#9744; {}</li>", esc(c)));
                }
                body.push_str("</ul>\n");
            }
        }
        body.push_str("</section>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lifeboat runbooks</title>\n<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}pre{{background:#f4f4f4;padding:.8em;overflow-x:auto}}section{{border-top:2px solid #ccc;margin-top:2em}}ul.checks{{list-style:none}}</style></head>\n<body>\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_renders_and_names_no_secret() {
        let cfg: FileConfig = toml::from_str(
            "repo = \"s3://bucket/lb\"\nkey_file = \"/etc/lifeboat/key\"\n[s3]\nsecret_access_key = \"TOPSECRET\"\n[postgres.main]\npg_url = \"postgresql://app:hunter2@db/app\"\n[redis.cache]\nredis_url = \"redis://:pw@cache:6379\"\n[[replica]]\nname = \"dr\"\nrepo = \"s3://dr-bucket/lb\"\n",
        )
        .unwrap();
        let d = Deployment {
            config_path: Path::new("/etc/lifeboat/lifeboat.toml"),
            file: &cfg,
            drills: &[],
        };
        for s in SCENARIOS {
            let r = d.runbook(s).unwrap();
            let md = markdown(&r);
            let page = html(std::slice::from_ref(&r));
            for secret in ["TOPSECRET", "hunter2", ":pw@"] {
                assert!(
                    !md.contains(secret) && !page.contains(secret),
                    "{s}: {secret}"
                );
            }
            assert!(
                md.contains("lifeboat --config /etc/lifeboat/lifeboat.toml"),
                "{s}"
            );
            assert!(md.contains("/etc/lifeboat/key"), "{s}");
        }
        assert!(d.runbook("flood").is_err());
    }
}
