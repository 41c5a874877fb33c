//! The audit log from the command line: what each command puts in it (its
//! words and arguments with secrets redacted, the OS user, the host, how it
//! ended), `lifeboat audit [--since]` and `lifeboat audit verify`.

use std::ffi::OsString;

use clap::{Args, Subcommand};
use lifeboat_ops::{Error, ErrorClass, Result};
use lifeboat_repo::{AuditContext, AuditOutcome, AuditRecord, Timestamp};
use serde_json::json;

use crate::context::Ctx;

/// `lifeboat audit`.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only records written at or after this time: RFC 3339, a date
    /// (2026-11-01, UTC), or an age (7d, 12h)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the chain: names every record removed, altered, moved or
    /// reordered, and records removed from the end since this host last
    /// wrote or checked one (exit 3)
    Verify,
}

/// Commands left out of the log: `pg wal-push`, which PostgreSQL's
/// archiver runs per WAL segment (thousands a day) and which only adds to
/// the archive (each segment is its own record: `pg info` lists them);
/// `demo`, which works on a throwaway repository. `pg wal-fetch` reads
/// data, so it is on record, one record per segment fetched.
fn exempt(words: &[String]) -> bool {
    matches!(
        words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["pg", "wal-push"] | ["demo", ..]
    )
}

/// Flags whose value is a secret or personal data, never put in the log.
fn secret_flag(flag: &str) -> bool {
    let name = flag.trim_start_matches('-');
    if name.ends_with("-file") {
        return false;
    }
    [
        "password",
        "secret",
        "token",
        "key-command",
        "api-key",
        "subject",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// The arguments as the log keeps them: the value of a secret flag as
/// `***`, and the password of any URL or conninfo in them too.
pub(crate) fn redacted_args(args: &[OsString]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        let a = a.to_string_lossy();
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        if a.starts_with("--") {
            if let Some((flag, _)) = a.split_once('=') {
                if secret_flag(flag) {
                    out.push(format!("{flag}=***"));
                    continue;
                }
            } else if secret_flag(&a) {
                hide_next = true;
            }
        }
        out.push(lifeboat_agent::redact(&a));
    }
    out
}

/// What the log says of a command: its words (`pg restore`) from the
/// parsed command line, the rest of the line redacted; `None` for the
/// commands left out.
pub(crate) fn context(matches: &clap::ArgMatches, args: &[OsString]) -> Option<AuditContext> {
    let mut words = Vec::new();
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        words.push(name.to_string());
        m = sub;
    }
    if words.is_empty() || exempt(&words) {
        return None;
    }
    Some(AuditContext {
        command: words.join(" "),
        args: redacted_args(args.get(1..).unwrap_or_default()),
        user: lifeboat_ops::os_user(),
        host: lifeboat_ops::hostname(),
    })
}

/// Writes the command's final record, when it opened a repository. A record
/// that cannot be stored is a warning: the command's own outcome stands.
pub(crate) fn finish(ctx: &Ctx, result: &Result<u8>) {
    let Some(auditor) = ctx.auditor.borrow().clone() else {
        return;
    };
    // PostgreSQL asks for files the archive does not hold (the next
    // timeline's history, the segment past the end): nothing was read.
    if matches!(result, Ok(1))
        && ctx
            .audit
            .as_ref()
            .is_some_and(|a| a.command == "pg wal-fetch")
    {
        return;
    }
    let (outcome, error) = match result {
        Ok(0) => (AuditOutcome::Success, None),
        Ok(3) => (AuditOutcome::Damage, None),
        Ok(_) => (AuditOutcome::Failed, None),
        Err(e) => {
            let outcome = match e.class() {
                ErrorClass::Usage => AuditOutcome::Refused,
                ErrorClass::Damage => AuditOutcome::Damage,
                ErrorClass::Transient | ErrorClass::Failure => AuditOutcome::Failed,
            };
            let msg = lifeboat_agent::redact(&lifeboat_repo::report(e));
            (outcome, Some(msg))
        }
    };
    let detail = std::mem::take(&mut *ctx.audit_detail.borrow_mut());
    for w in auditor.warnings() {
        eprintln!("warning: {w}");
    }
    if let Err(e) = auditor.finish(outcome, error, detail) {
        eprintln!(
            "warning: the audit record of this command could not be stored ({}); the command's own outcome stands",
            lifeboat_repo::report(&e)
        );
    }
}

/// `--since`: an RFC 3339 time, a date (UTC), or an age.
fn parse_since(text: &str) -> Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Some(t) = text
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
    {
        return Ok(t.timestamp());
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
        .and_then(|d| Timestamp::now().checked_sub(d).ok())
        .ok_or_else(|| {
            Error::usage(format!(
                "--since {text:?} is not a time lifeboat reads: give 2026-11-01 (UTC), an RFC 3339 time, or an age such as 7d"
            ))
        })
}

fn record_json(r: &AuditRecord) -> serde_json::Value {
    json!({
        "seq": r.seq, "time": r.time, "command": r.command, "args": r.args,
        "user": r.user, "host": r.host, "pid": r.pid, "key_slot": r.key_slot,
        "read": r.read, "written": r.written, "deleted": r.deleted,
        "outcome": r.outcome.as_str(), "error": r.error, "detail": r.detail,
    })
}

/// `lifeboat audit [--since T] [verify]`.
pub(crate) fn run(ctx: &Ctx, args: &AuditArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let repo = ctx.open()?;
    match args.command {
        Some(AuditCommand::Verify) => verify(ctx, &repo),
        None => {
            let records = repo.audit_records(since)?;
            let mut unreadable = 0;
            let mut rows = Vec::new();
            for (name, r) in &records {
                match r {
                    Ok(r) => rows.push(r),
                    Err(e) => {
                        unreadable += 1;
                        eprintln!(
                            "warning: audit record {} does not read: {}",
                            name.key(),
                            lifeboat_repo::report(e)
                        );
                    }
                }
            }
            if ctx.json {
                let list: Vec<_> = rows.iter().map(|r| record_json(r)).collect();
                outln!("{}", json!({"records": list, "unreadable": unreadable}));
            } else if rows.is_empty() {
                outln!(
                    "no audit records{}",
                    if since.is_some() { " in that time" } else { "" }
                );
            } else {
                for r in &rows {
                    let mut line = format!(
                        "{:>6}  {}  {}@{}  {:<16} {:<8} slot {}",
                        r.seq,
                        r.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        r.user,
                        r.host,
                        r.command,
                        r.outcome.as_str(),
                        &r.key_slot[..r.key_slot.len().min(8)],
                    );
                    for (what, ids) in [
                        ("read", &r.read),
                        ("wrote", &r.written),
                        ("deleted", &r.deleted),
                    ] {
                        if !ids.is_empty() {
                            let short: Vec<String> = ids.iter().map(|i| i.short()).collect();
                            line.push_str(&format!("  {what} {}", short.join(",")));
                        }
                    }
                    if let Some(e) = &r.error {
                        line.push_str(&format!("  error: {e}"));
                    }
                    outln!("{line}");
                }
            }
            if unreadable > 0 {
                return Err(Error::DamageFound(format!(
                    "{unreadable} audit record(s) do not read: `lifeboat audit verify` names them"
                )));
            }
            Ok(())
        }
    }
}

fn verify(ctx: &Ctx, repo: &lifeboat_repo::Repository) -> Result<()> {
    let report = repo.verify_audit()?;
    if ctx.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for p in &report.problems {
            outln!("TAMPERED {p}");
        }
        if report.problems.is_empty() {
            outln!(
                "audit log intact: {} record(s), seq 1..{}, {} head(s){}",
                report.records,
                report.max_seq,
                report.heads,
                match &report.witnessed {
                    Some((seq, _)) => format!("; this host's witness (seq {seq}) is present"),
                    None => "; no witness on this host yet (records removed from the end cannot be told)".into(),
                }
            );
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::DamageFound(format!(
            "the audit log was tampered with: {} problem(s)",
            report.problems.len()
        )))
    }
}

/// Adds a fact to the command's final record (`erasure add`: the request).
pub(crate) fn detail(ctx: &Ctx, key: &str, value: String) {
    ctx.audit_detail.borrow_mut().insert(key.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_subjects_never_reach_the_log() {
        let args: Vec<OsString> = [
            "lifeboat",
            "--password-command",
            "vault read -field=pw secret/x",
            "pg",
            "backup",
            "--pg-url",
            "postgresql://app:s3cret@db/x",
            "--es-url=http://elastic:hunter2@es:9200",
            "--api-key=ABCDEF",
            "--subject",
            "user-42",
            "--key-file",
            "/etc/lifeboat/key",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out = redacted_args(&args[1..]);
        let joined = out.join(" ");
        for secret in ["vault read", "s3cret", "hunter2", "ABCDEF", "user-42"] {
            assert!(!joined.contains(secret), "{secret} in {joined}");
        }
        assert!(joined.contains("/etc/lifeboat/key"), "{joined}");
        assert!(joined.contains("postgresql://app:***@db/x"), "{joined}");
        assert_eq!(out[1], "***");
    }
}
