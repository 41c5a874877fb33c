//! `lifeboat demo`: the strategy's PostgreSQL promise, end to end, on a
//! throwaway cluster and a temporary local repository.
//!
//! initdb a cluster (as the `postgres` user when root), archive its WAL with
//! `lifeboat pg wal-push`, load an identity-platform dataset, take a base
//! backup, keep writing, note a target time, make the "data corruption"
//! incident (an accidental `DELETE FROM users`), restore to just before it
//! into a new directory, start it, verify the rows, and report the measured
//! RTO and RPO against the strategy's targets (RPO 5 min, RTO 1 h).
//!
//! As root, the demo re-runs itself as the `postgres` user (PostgreSQL
//! refuses root, and its archive_command must write the repository), from a
//! copy of this binary in the work directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use lifeboat_postgres::server::{self, LocalServer};
use lifeboat_postgres::{self as pg, PgRestoreOptions, RecoveryTarget};
use lifeboat_repo::{Credential, InitOptions, NoProgress, Progress, Repository, SecretSource};
use lifeboat_storage::{LocalStorage, Storage};
use serde_json::json;

use crate::output::{print_json, secs, size, TermProgress};

/// The strategy's targets for PostgreSQL.
const RPO_TARGET: Duration = Duration::from_secs(5 * 60);
const RTO_TARGET: Duration = Duration::from_secs(60 * 60);
/// archive_timeout of the demo cluster: the longest WAL waits to be archived
/// under light load.
const ARCHIVE_TIMEOUT_S: u64 = 60;

pub(crate) struct DemoArgs {
    pub json: bool,
    pub quiet: bool,
    pub keep: bool,
    pub scale: usize,
    pub workdir: Option<PathBuf>,
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if let Some(dir) = &args.workdir {
        return inner(&args, dir);
    }
    if server::bindir().is_err() {
        bail!(crate::UsageError(
            "the PostgreSQL demo needs the distribution's PostgreSQL server programs (initdb, pg_ctl), and none were found via pg_config or /usr/lib/postgresql/*/bin. Run scripts/demo.sh (installs them), or `apt-get install postgresql`; `lifeboat demo --files` runs without PostgreSQL".into()
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("lifeboat-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    let root = work.path().to_path_buf();
    let result = if server::is_root() {
        // Run the demo as the postgres user from a copy of this binary it
        // can execute.
        let exe = root.join("lifeboat");
        std::fs::copy(std::env::current_exe()?, &exe)
            .context("copy lifeboat for the postgres user")?;
        server::prepare_dir(&root)?;
        let mut cmd = server::as_owner(&exe);
        cmd.args(["demo", "--workdir"]).arg(&root);
        if args.json {
            cmd.arg("--json");
        }
        if args.quiet {
            cmd.arg("--quiet");
        }
        cmd.arg("--scale").arg(args.scale.to_string());
        let status = cmd.status().context("run the demo as the postgres user")?;
        if status.success() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "the demo failed (run as the postgres user, {status}); see above. Its files are in {}",
                root.display()
            ))
        }
    } else {
        inner(&args, &root)
    };
    if args.keep || result.is_err() {
        let kept = work.keep();
        if !args.json {
            outln!(
                "kept {} (repository in repo/, the clusters in primary/ and restored/)",
                kept.display()
            );
        }
    } else if !args.json {
        outln!("cleaned up; run with --keep to look around");
    }
    result
}

/// Seconds since the epoch, as the server's clock says, to a SystemTime.
fn parse_epoch(text: &str) -> Result<SystemTime> {
    let (s, frac) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
    let secs: u64 = s.parse().context("server time")?;
    let frac = format!("{frac:0<9}");
    let nanos: u32 = frac[..9].parse().context("server time")?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

struct Counts {
    users: i64,
    fingerprint: String,
    sessions: i64,
    audit: i64,
}

fn counts(s: &LocalServer) -> Result<Counts> {
    let out = s.psql(
        "identity",
        "select (select count(*) from users) || '|' || \
                (select coalesce(md5(string_agg(id::text || email, ',' order by id)), '') from users) || '|' || \
                (select count(*) from sessions) || '|' || (select count(*) from audit_events)",
    )?;
    let p: Vec<&str> = out.split('|').collect();
    if p.len() != 4 {
        bail!("unexpected row counts from the server: {out:?}");
    }
    Ok(Counts {
        users: p[0].parse()?,
        fingerprint: p[1].to_string(),
        sessions: p[2].parse()?,
        audit: p[3].parse()?,
    })
}

const SCHEMA: &str = "
create table users (id bigint primary key, email text unique not null, password_hash text not null,
  display_name text, created_at timestamptz not null, updated_at timestamptz not null, profile jsonb);
create table sessions (id uuid primary key, user_id bigint not null, created_at timestamptz not null,
  expires_at timestamptz not null, user_agent text);
create table audit_events (id uuid primary key, user_id bigint, action text not null, ip inet,
  at timestamptz not null, detail jsonb);";

fn insert_users(from: usize, to: usize) -> String {
    format!(
        "insert into users select g, 'user' || g || '@example.com', \
           '$argon2id$v=19$' || md5(random()::text) || md5(random()::text), \
           (array['Ada','Grace','Linus','Barbara','Ken'])[1 + g % 5] || ' ' || (array['Lovelace','Hopper','Torvalds','Liskov','Thompson'])[1 + g / 5 % 5], \
           now() - (g % 1000) * interval '1 hour', now(), \
           jsonb_build_object('locale', (array['en','de','fr','ja'])[1 + g % 4], 'mfa', g % 2 = 0) \
         from generate_series({from}, {to}) g;"
    )
}

fn insert_activity(users: usize, sessions: usize, events: usize) -> String {
    format!(
        "insert into sessions select gen_random_uuid(), 1 + (random() * {})::bigint % {users}, now(), now() + interval '30 days', \
           (array['chrome','firefox','safari'])[1 + g % 3] || '/' || g % 120 from generate_series(1, {sessions}) g; \
         insert into audit_events select gen_random_uuid(), 1 + (random() * {})::bigint % {users}, \
           (array['login','logout','token.refresh','password.change','mfa.verify'])[1 + g % 5], \
           ('10.' || g % 256 || '.' || g / 256 % 256 || '.' || g % 7)::inet, now(), \
           jsonb_build_object('session', md5(random()::text)) from generate_series(1, {events}) g;",
        users.max(1),
        users.max(1)
    )
}

fn inner(args: &DemoArgs, root: &Path) -> Result<()> {
    let json_out = args.json;
    let say = |s: &str| {
        if !json_out {
            outln!("{s}");
        }
    };
    let progress: Box<dyn Progress> = if json_out || args.quiet {
        Box::new(NoProgress)
    } else {
        Box::new(TermProgress::new(false))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let exe = {
        let copy = root.join("lifeboat");
        if copy.exists() {
            copy
        } else {
            std::env::current_exe()?
        }
    };

    // The repository, with a key file the archiver and restorer can read.
    let repo_dir = root.join("repo");
    let key_path = root.join("key");
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).context("get random bytes for the demo key")?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_path, format!("{hex}\n")).context("write the demo key")?;
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(repo_dir.clone()));
    let cred = Credential::key_material(SecretSource::KeyFile, hex.into_bytes());
    let repo = Repository::init(storage, rt.handle().clone(), &cred, &InitOptions::default())?;
    let lifeboat = format!(
        "{} --repo {} --key-file {}",
        q(&exe),
        q(&repo_dir),
        q(&key_path)
    );

    // 1. The cluster, archiving into the repository.
    let primary_dir = root.join("primary");
    std::fs::create_dir_all(&primary_dir)?;
    let mut primary = LocalServer::init(
        &primary_dir.join("data"),
        &primary_dir,
        &format!(
            "archive_mode = on\narchive_command = '{} pg wal-push %p'\narchive_timeout = {ARCHIVE_TIMEOUT_S}\nshared_buffers = 64MB",
            lifeboat.replace('\'', "''")
        ),
    )?;
    primary.start()?;
    let version = primary.psql("postgres", "show server_version")?;
    say(&format!(
        "1. started a throwaway PostgreSQL {version} cluster (data checksums on) in {}, archiving WAL with `lifeboat pg wal-push` into an encrypted repository at {}",
        primary.pgdata.display(),
        repo_dir.display()
    ));

    // 2. The identity platform's data.
    let scale = args.scale;
    let n_users = 20_000 * scale;
    primary.psql("postgres", "create database identity")?;
    primary.psql("identity", SCHEMA)?;
    primary.psql("identity", &insert_users(1, n_users))?;
    primary.psql(
        "identity",
        &insert_activity(n_users, 40_000 * scale, 120_000 * scale),
    )?;
    primary.psql("identity", "vacuum analyze")?;
    let c0 = counts(&primary)?;
    let db_size: u64 = primary
        .psql("postgres", "select pg_database_size('identity')")?
        .parse()?;
    say(&format!(
        "2. loaded an identity platform: {} users, {} sessions, {} audit events ({})",
        c0.users,
        c0.sessions,
        c0.audit,
        size(db_size)
    ));

    // 3. The nightly base backup.
    let mut bopts = pg::BackupOptions::new(primary.pgdata.clone(), primary.conninfo("postgres"));
    bopts.hostname = "demo".into();
    bopts.tags = vec!["demo".into()];
    bopts.source_name = "identity-primary".into();
    bopts.archive_timeout = Duration::from_secs(120);
    let backup = pg::backup(&repo, rt.handle(), &bopts, progress.as_ref())?;
    let bs = &backup.snapshot.stats;
    say(&format!(
        "3. base backup {}: {} read, {} stored (compressed, encrypted) in {}; WAL {} to {} archived",
        backup.id.short(),
        size(bs.bytes_read),
        size(bs.bytes_stored),
        secs(bs.duration_ms),
        backup.snapshot.metadata["wal_start"].as_str().unwrap_or("?"),
        backup.snapshot.metadata["wal_stop"].as_str().unwrap_or("?"),
    ));

    // 4. Business goes on after the backup: sign-ups and activity.
    for i in 0..5 {
        let from = n_users + 1 + i * 100;
        primary.psql("identity", &insert_users(from, from + 99))?;
        primary.psql("identity", &insert_activity(n_users, 200, 1_000))?;
    }
    let good = counts(&primary)?;
    let target = parse_epoch(&primary.psql(
        "postgres",
        "select extract(epoch from clock_timestamp())::numeric(20,6)",
    )?)?;
    let target_text = humantime::format_rfc3339_micros(target).to_string();
    say(&format!(
        "4. after the backup: 500 sign-ups and their activity; now {} users. Target noted: {target_text}",
        good.users
    ));

    // 5. The incident: a DELETE without its WHERE.
    primary.psql("identity", "delete from users")?;
    primary.psql("identity", &insert_activity(1, 10, 500))?;
    let after = counts(&primary)?;
    // Archive what was written: a forced switch, then wait for the archiver.
    let switch_at = Instant::now();
    primary.archive_now(Duration::from_secs(120))?;
    let archive_lag = switch_at.elapsed();
    say(&format!(
        "5. incident: `DELETE FROM users` (the WHERE clause forgotten) removed {} users; writes went on ({} audit events now). Its WAL reached the repository {} after the segment closed",
        good.users - after.users,
        after.audit,
        secs(archive_lag.as_millis() as u64)
    ));
    primary.stop()?;

    // 6. Restore to just before the incident into a new directory, and start it.
    let restored_dir = root.join("restored");
    std::fs::create_dir_all(&restored_dir)?;
    let restore_began = Instant::now();
    let ropts = PgRestoreOptions {
        pgdata: restored_dir.join("data"),
        snapshot: None,
        target: RecoveryTarget::Time(target),
        target_action: "promote".into(),
        target_timeline: None,
        standby: false,
        primary_conninfo: None,
        delta: false,
        restore_command: format!("{lifeboat} pg wal-fetch %f %p"),
        tablespace_map: Vec::new(),
        archive_mode: Default::default(),
    };
    let restored = pg::restore(&repo, &ropts, progress.as_ref())?;
    drop(progress);
    let restore_ms = restore_began.elapsed().as_millis() as u64;
    let mut server = LocalServer::adopt(&ropts.pgdata, &restored_dir)?;
    let recovery_began = Instant::now();
    server.start()?;
    let state = server.wait_for_recovery("promote", Duration::from_secs(600))?;
    let recovery_ms = recovery_began.elapsed().as_millis() as u64;
    let rto_ms = restore_began.elapsed().as_millis() as u64;
    say(&format!(
        "6. restored backup {} into {} in {} and started it: recovery replayed WAL to {target_text} and {state} in {}",
        &restored.snapshot[..8],
        ropts.pgdata.display(),
        secs(restore_ms),
        secs(recovery_ms)
    ));

    // 7. Verify: every row committed before the target, none after it.
    let back = counts(&server)?;
    let users_lost = good.users - back.users;
    let same_users = back.fingerprint == good.fingerprint;
    let sessions_lost = good.sessions - back.sessions;
    let audit_lost = good.audit - back.audit;
    let later = back.audit - good.audit;
    say(&format!(
        "7. verified: {} of {} users back ({}), {} sessions, {} audit events — {} rows lost versus the target; {} writes from after the target (the incident and its aftermath) absent, as asked",
        back.users,
        good.users,
        if same_users { "every id and email identical" } else { "CONTENT DIFFERS" },
        back.sessions,
        back.audit,
        users_lost + sessions_lost + audit_lost,
        (after.audit - good.audit) + (good.users - after.users),
    ));
    server.stop()?;

    let rpo_ok = archive_lag <= RPO_TARGET && ARCHIVE_TIMEOUT_S <= RPO_TARGET.as_secs();
    let rto_ok = Duration::from_millis(rto_ms) <= RTO_TARGET;
    let rows_ok =
        users_lost == 0 && sessions_lost == 0 && audit_lost == 0 && later == 0 && same_users;
    say("\nReport");
    say(&format!(
        "  RTO  {} (restore {} + recovery {}) against the strategy's 1 h: {}",
        secs(rto_ms),
        secs(restore_ms),
        secs(recovery_ms),
        if rto_ok { "met" } else { "NOT met" }
    ));
    say(&format!(
        "  RPO  0 rows lost versus the target; WAL is archived as each segment closes (here {} after it closed) and at least every {ARCHIVE_TIMEOUT_S} s (archive_timeout), so losing the primary loses at most about {ARCHIVE_TIMEOUT_S} s, against the strategy's 5 min: {}",
        secs(archive_lag.as_millis() as u64),
        if rpo_ok && rows_ok { "met" } else { "NOT met" }
    ));
    say(&format!(
        "  took {} in all",
        secs(started.elapsed().as_millis() as u64)
    ));
    if json_out {
        print_json(&json!({
            "workdir": root,
            "postgres_version": version,
            "dataset": {"users": c0.users, "sessions": c0.sessions, "audit_events": c0.audit, "bytes": db_size},
            "backup": {"snapshot": backup.id.to_hex(), "stats": bs},
            "target_time": target_text,
            "incident": {"deleted_users": good.users - after.users},
            "restore": {"snapshot": restored.snapshot, "restore_ms": restore_ms, "recovery_ms": recovery_ms},
            "verify": {"users": back.users, "expected_users": good.users, "identical_users": same_users,
                       "rows_lost": users_lost + sessions_lost + audit_lost, "rows_after_target": later},
            "rto_ms": rto_ms, "rto_target_ms": RTO_TARGET.as_millis() as u64, "rto_met": rto_ok,
            "archive_lag_ms": archive_lag.as_millis() as u64, "archive_timeout_s": ARCHIVE_TIMEOUT_S,
            "rpo_target_ms": RPO_TARGET.as_millis() as u64, "rpo_met": rpo_ok && rows_ok,
        }));
    }
    if !rows_ok {
        bail!(
            "the restored cluster does not hold exactly the rows of the target: {users_lost} users, {sessions_lost} sessions, {audit_lost} audit events missing, {later} later rows present, users identical: {same_users}"
        );
    }
    Ok(())
}
