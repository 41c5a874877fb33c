//! The strategy's PostgreSQL promise, end to end, on a throwaway cluster and
//! a local repository: the README's first command (`lifeboat demo`).
//!
//! initdb a cluster, archive its WAL with `lifeboat pg wal-push`, load an
//! identity-platform dataset, take a base backup, keep writing, then an
//! incident:
//! - [`Incident::Delete`]: an accidental `DELETE FROM users`; restore to a
//!   time noted just before it;
//! - [`Incident::LostPrimary`]: the primary is lost (an immediate stop: no
//!   checkpoint, the last WAL segment never archived) right after more
//!   writes; restore everything the archive holds.
//!
//! Either way the restore goes into a new directory, is started, and its
//! rows are compared with the primary's. Every figure of the report —
//! rows lost, the window of writes lost, RTO — is measured in the run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lifeboat_ops::{Error, Result};
use lifeboat_postgres::server::{LocalServer, RecoveryAction};
use lifeboat_postgres::{self as pg, PgRestoreOptions, RecoveryTarget};
use lifeboat_repo::{BackupStats, Credential, InitOptions, Progress, Repository, SecretSource};
use lifeboat_storage::{LocalStorage, Storage};
use serde::Serialize;

use crate::sandbox::pg::Cluster;
use lifeboat_ops::fmt::{secs, size};

/// The strategy's RPO for PostgreSQL.
pub const RPO_TARGET: Duration = Duration::from_secs(5 * 60);
/// The strategy's RTO for PostgreSQL.
pub const RTO_TARGET: Duration = Duration::from_secs(60 * 60);
/// archive_timeout of the demo cluster: the longest WAL waits to be archived
/// under light load.
pub const ARCHIVE_TIMEOUT_S: u64 = 60;

/// What goes wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Incident {
    /// `DELETE FROM users` without its WHERE; restore to just before it.
    #[default]
    Delete,
    /// The primary is lost with writes not yet archived; restore all the
    /// archive holds.
    LostPrimary,
}

/// How to run the scenario.
#[derive(Clone, Debug)]
pub struct PitrOptions {
    /// The work directory: the repository, the key, the clusters. Must be
    /// writable by the server's OS user.
    pub root: PathBuf,
    /// The `lifeboat` program the cluster's archive_command and the restored
    /// server's restore_command run.
    pub exe: PathBuf,
    /// Dataset size factor (1 ≈ 60 MB).
    pub scale: usize,
    /// What goes wrong.
    pub incident: Incident,
}

/// Rows of the identity platform, and the newest write among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Users.
    pub users: i64,
    /// A fingerprint of every user's id and e-mail.
    pub fingerprint: String,
    /// Sessions.
    pub sessions: i64,
    /// Audit events.
    pub audit: i64,
    /// The newest audit event's time, microseconds since the epoch.
    pub newest_us: i64,
}

impl Counts {
    fn rows(&self) -> i64 {
        self.users + self.sessions + self.audit
    }

    fn same_rows(&self, other: &Counts) -> bool {
        self.users == other.users
            && self.fingerprint == other.fingerprint
            && self.sessions == other.sessions
            && self.audit == other.audit
    }
}

/// The dataset loaded.
#[derive(Clone, Debug, Serialize)]
pub struct Dataset {
    /// Users.
    pub users: i64,
    /// Sessions.
    pub sessions: i64,
    /// Audit events.
    pub audit_events: i64,
    /// The database's size.
    pub bytes: u64,
}

/// The base backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupFigures {
    /// Its snapshot id.
    pub snapshot: String,
    /// Its figures.
    pub stats: BackupStats,
}

/// The incident.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentFigures {
    /// Which.
    pub kind: Incident,
    /// Users the DELETE removed.
    pub deleted_users: i64,
    /// Rows committed on the primary after the last archived WAL.
    pub unarchived_rows: i64,
}

/// The restore.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreFigures {
    /// The base backup restored.
    pub snapshot: String,
    /// Writing the data directory.
    pub restore_ms: u64,
    /// Starting the server until recovery ended.
    pub recovery_ms: u64,
    /// How recovery ended.
    pub state: String,
}

/// What the restored cluster holds, against the primary.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyFigures {
    /// Users restored.
    pub users: i64,
    /// Users the primary had at the point recovered to.
    pub expected_users: i64,
    /// Every user's id and e-mail identical to the primary's at that point.
    pub identical_users: bool,
    /// Rows the primary had (at the target; when lost, at its last commit)
    /// that the restore lacks.
    pub rows_lost: i64,
    /// Rows restored that were written after the target.
    pub rows_after_target: i64,
    /// The restore holds exactly what it should: the primary's rows at the
    /// target, or, the primary lost, everything archived.
    pub as_expected: bool,
}

/// The data lost, measured.
#[derive(Clone, Debug, Serialize)]
pub struct RpoFigures {
    /// Rows lost (as [`VerifyFigures::rows_lost`]).
    pub rows_lost: i64,
    /// The time between the newest write the primary had and the newest
    /// write restored.
    pub window_ms: u64,
}

/// Everything the scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct PitrReport {
    /// The work directory.
    pub workdir: PathBuf,
    /// The server's version.
    pub postgres_version: String,
    /// The dataset.
    pub dataset: Dataset,
    /// The base backup.
    pub backup: BackupFigures,
    /// The time recovered to (the delete incident).
    pub target_time: Option<String>,
    /// The incident.
    pub incident: IncidentFigures,
    /// The restore.
    pub restore: RestoreFigures,
    /// The comparison.
    pub verify: VerifyFigures,
    /// The data lost.
    pub rpo: RpoFigures,
    /// Restore and recovery.
    pub rto_ms: u64,
    /// The strategy's RTO.
    pub rto_target_ms: u64,
    /// RTO within the strategy's.
    pub rto_met: bool,
    /// How long the last segment took to reach the repository once closed.
    pub archive_lag_ms: u64,
    /// The cluster's archive_timeout.
    pub archive_timeout_s: u64,
    /// The strategy's RPO.
    pub rpo_target_ms: u64,
    /// RPO within the strategy's.
    pub rpo_met: bool,
    /// The whole run.
    pub duration_ms: u64,
}

impl PitrReport {
    /// The report's summary, each figure as measured.
    pub fn summary(&self) -> Vec<String> {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let rpo = match self.incident.kind {
            Incident::Delete => format!(
                "  RPO  {} rows lost versus the target ({} of writes); WAL is archived as each segment closes (here {} after it closed) and at least every {} s (the archive_timeout setting), so losing the primary would lose at most about {} s, against the strategy's 5 min: {}",
                self.rpo.rows_lost,
                secs(self.rpo.window_ms),
                secs(self.archive_lag_ms),
                self.archive_timeout_s,
                self.archive_timeout_s,
                verdict(self.rpo_met)
            ),
            Incident::LostPrimary => format!(
                "  RPO  {} rows lost with the primary ({} of writes not yet archived), against the strategy's 5 min: {}",
                self.rpo.rows_lost,
                secs(self.rpo.window_ms),
                verdict(self.rpo_met)
            ),
        };
        vec![
            format!(
                "  RTO  {} (restore {} + recovery {}) against the strategy's 1 h: {}",
                secs(self.rto_ms),
                secs(self.restore.restore_ms),
                secs(self.restore.recovery_ms),
                verdict(self.rto_met)
            ),
            rpo,
            format!("  took {} in all", secs(self.duration_ms)),
        ]
    }
}

fn q(p: &Path) -> String {
    lifeboat_ops::secrets::shell_quote(&p.display().to_string())
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Failed(format!("{what}: {e}"))
}

/// Seconds since the epoch, as the server's clock says, to a SystemTime.
fn parse_epoch(text: &str) -> Result<SystemTime> {
    let (s, frac) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
    let secs: u64 = s.parse().map_err(|e| failed("server time", e))?;
    let frac = format!("{frac:0<9}");
    let nanos: u32 = frac[..9].parse().map_err(|e| failed("server time", e))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

fn counts(s: &LocalServer) -> Result<Counts> {
    let out = s.psql(
        "identity",
        "select (select count(*) from users) || '|' || \
                (select coalesce(md5(string_agg(id::text || email, ',' order by id)), '') from users) || '|' || \
                (select count(*) from sessions) || '|' || (select count(*) from audit_events) || '|' || \
                (select coalesce((extract(epoch from max(at)) * 1000000)::bigint, 0) from audit_events)",
    )?;
    let p: Vec<&str> = out.split('|').collect();
    let num = |i: usize| -> Result<i64> {
        p.get(i)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| failed("unexpected row counts from the server", &out))
    };
    Ok(Counts {
        users: num(0)?,
        fingerprint: p.get(1).unwrap_or(&"").to_string(),
        sessions: num(2)?,
        audit: num(3)?,
        newest_us: num(4)?,
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
           ('10.' || g % 256 || '.' || g / 256 % 256 || '.' || g % 7)::inet, clock_timestamp(), \
           jsonb_build_object('session', md5(random()::text)) from generate_series(1, {events}) g;",
        users.max(1),
        users.max(1)
    )
}

/// The repository of a run, with a key file the archiver and the restored
/// server's restore_command can read, and the lifeboat command line that
/// opens it.
struct DemoRepo {
    repo: Repository,
    dir: PathBuf,
    /// `'<exe>' --repo '<dir>' --key-file '<key>'`.
    lifeboat: String,
}

fn io_err(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::io(what, e)
}

/// Creates the repository and its key file in `root`.
fn create_repo(root: &Path, exe: &Path, rt: &tokio::runtime::Handle) -> Result<DemoRepo> {
    let dir = root.join("repo");
    let key_path = root.join("key");
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| failed("get random bytes for the demo key", e))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_path, format!("{hex}\n")).map_err(io_err("write", &key_path))?;
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(io_err("set the mode of", &key_path))?;
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.clone()));
    let cred = Credential::key_material(SecretSource::KeyFile, hex.into_bytes());
    let repo = Repository::init(storage, rt.clone(), &cred, &InitOptions::default())?;
    let lifeboat = format!("{} --repo {} --key-file {}", q(exe), q(&dir), q(&key_path));
    Ok(DemoRepo {
        repo,
        dir,
        lifeboat,
    })
}

/// Step 1: the primary, archiving into the repository with `wal-push`.
fn start_primary(root: &Path, lifeboat: &str) -> Result<Cluster> {
    let dir = root.join("primary");
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let mut primary = Cluster::init(
        &dir.join("data"),
        &dir,
        &format!(
            "archive_mode = on\narchive_command = {}\narchive_timeout = {ARCHIVE_TIMEOUT_S}\nshared_buffers = 64MB",
            pg::conf_quote(&format!("{lifeboat} pg wal-push %p"))
        ),
    )?;
    primary.start()?;
    Ok(primary)
}

/// Step 2: the identity platform's data.
fn load_dataset(primary: &Cluster, scale: usize) -> Result<Dataset> {
    let n_users = 20_000 * scale;
    primary.psql("postgres", "create database identity")?;
    primary.psql("identity", SCHEMA)?;
    primary.psql("identity", &insert_users(1, n_users))?;
    primary.psql(
        "identity",
        &insert_activity(n_users, 40_000 * scale, 120_000 * scale),
    )?;
    primary.psql("identity", "vacuum analyze")?;
    let c = counts(primary)?;
    let bytes = primary
        .psql("postgres", "select pg_database_size('identity')")?
        .trim()
        .parse()
        .map_err(|e| failed("the database size", e))?;
    Ok(Dataset {
        users: c.users,
        sessions: c.sessions,
        audit_events: c.audit,
        bytes,
    })
}

/// Step 3: the nightly base backup.
fn base_backup(
    demo: &DemoRepo,
    rt: &tokio::runtime::Handle,
    primary: &Cluster,
    progress: &dyn Progress,
) -> Result<(BackupFigures, pg::meta::BackupMeta)> {
    let mut bopts = pg::BackupOptions::new(primary.pgdata.clone(), primary.conninfo("postgres"));
    bopts.hostname = "demo".into();
    bopts.tags = vec!["demo".into()];
    bopts.source_name = "identity-primary".into();
    bopts.archive_timeout = Duration::from_secs(120);
    let backup = pg::backup(&demo.repo, rt, &bopts, progress)?;
    let meta = pg::meta::BackupMeta::of_snapshot(&backup.id, &backup.snapshot)?;
    Ok((
        BackupFigures {
            snapshot: backup.id.to_hex(),
            stats: backup.snapshot.stats,
        },
        meta,
    ))
}

/// Step 4: business goes on after the backup: 500 sign-ups and activity.
fn keep_writing(primary: &Cluster, n_users: usize) -> Result<Counts> {
    for i in 0..5 {
        let from = n_users + 1 + i * 100;
        primary.psql("identity", &insert_users(from, from + 99))?;
        primary.psql("identity", &insert_activity(n_users, 200, 1_000))?;
    }
    counts(primary)
}

/// What an incident left: where to recover to, what the restore must
/// hold, and what the primary had.
struct Aftermath {
    /// The time to recover to; `None`: the end of the archive.
    target: Option<SystemTime>,
    /// The rows the restore must hold exactly.
    expected: Counts,
    /// The primary's rows at the point recovered to (its last commit when
    /// lost): what is lost is measured against these.
    reference: Counts,
    deleted: i64,
    unarchived: i64,
    /// Rows written after the target (the DELETE and what followed).
    writes_after: i64,
    archive_lag: Duration,
}

/// Step 5, delete: a target noted, then `DELETE FROM users` and more
/// writes, archived; the primary stopped.
fn delete_users(
    primary: &mut Cluster,
    good: Counts,
    say: &mut dyn FnMut(String),
) -> Result<Aftermath> {
    let t = parse_epoch(&primary.psql(
        "postgres",
        "select extract(epoch from clock_timestamp())::numeric(20,6)",
    )?)?;
    say(format!(
        "4. after the backup: 500 sign-ups and their activity; now {} users. Target noted: {}",
        good.users,
        humantime::format_rfc3339_micros(t)
    ));
    primary.psql("identity", "delete from users")?;
    primary.psql("identity", &insert_activity(1, 10, 500))?;
    let after = counts(primary)?;
    // Archive what was written: a forced switch, then wait for the archiver.
    let switch_at = Instant::now();
    primary.archive_now(Duration::from_secs(120))?;
    let archive_lag = switch_at.elapsed();
    say(format!(
        "5. incident: `DELETE FROM users` (the WHERE clause forgotten) removed {} users; writes went on ({} audit events now). Its WAL reached the repository {} after the segment closed",
        good.users - after.users,
        after.audit,
        secs(archive_lag.as_millis() as u64)
    ));
    primary.stop()?;
    let deleted = good.users - after.users;
    Ok(Aftermath {
        target: Some(t),
        expected: good.clone(),
        reference: good.clone(),
        deleted,
        unarchived: 0,
        writes_after: (after.audit - good.audit) + deleted,
        archive_lag,
    })
}

/// Step 5, lost primary: everything so far archived, then 50 users and 100
/// audit events committed, and the primary stops as a crash would, before
/// their segment is full or archive_timeout passes.
fn lose_primary(
    primary: &mut Cluster,
    n_users: usize,
    good: Counts,
    say: &mut dyn FnMut(String),
) -> Result<Aftermath> {
    let switch_at = Instant::now();
    primary.archive_now(Duration::from_secs(120))?;
    let archive_lag = switch_at.elapsed();
    say(format!(
        "4. after the backup: 500 sign-ups and their activity, archived; now {} users",
        good.users
    ));
    let from = n_users + 501;
    primary.psql("identity", &insert_users(from, from + 49))?;
    primary.psql("identity", &insert_activity(n_users, 0, 100))?;
    let last = counts(primary)?;
    primary.crash()?;
    let unarchived = last.rows() - good.rows();
    say(format!(
        "5. incident: the primary is lost right after {unarchived} more rows were committed, before their WAL segment was full or archive_timeout ({ARCHIVE_TIMEOUT_S} s) passed"
    ));
    Ok(Aftermath {
        target: None,
        expected: good,
        reference: last,
        deleted: 0,
        unarchived,
        writes_after: 0,
        archive_lag,
    })
}

/// Step 6: restore into a new directory, start it, wait for recovery.
fn restore_and_start(
    demo: &DemoRepo,
    root: &Path,
    target: Option<SystemTime>,
    progress: &dyn Progress,
) -> Result<(Cluster, RestoreFigures, u64)> {
    let dir = root.join("restored");
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let began = Instant::now();
    let ropts = PgRestoreOptions {
        target: target.map_or(RecoveryTarget::End, RecoveryTarget::Time),
        ..PgRestoreOptions::new(
            dir.join("data"),
            format!("{} pg wal-fetch %f %p", demo.lifeboat),
        )
    };
    let restored = pg::restore(&demo.repo, &ropts, progress)?;
    let restore_ms = began.elapsed().as_millis() as u64;
    let mut server = Cluster::adopt(&ropts.pgdata, &dir)?;
    let recovery_began = Instant::now();
    server.start()?;
    let state = server.wait_for_recovery(RecoveryAction::Promote, Duration::from_secs(600))?;
    let recovery_ms = recovery_began.elapsed().as_millis() as u64;
    let rto_ms = began.elapsed().as_millis() as u64;
    Ok((
        server,
        RestoreFigures {
            snapshot: restored.snapshot,
            restore_ms,
            recovery_ms,
            state,
        },
        rto_ms,
    ))
}

/// Step 7: what the restore holds against what it should and what the
/// primary had.
fn compare(incident: Incident, back: &Counts, a: &Aftermath) -> (VerifyFigures, RpoFigures) {
    let lost = |want: i64, got: i64| (want - got).max(0);
    let r = &a.reference;
    let rows_lost =
        lost(r.users, back.users) + lost(r.sessions, back.sessions) + lost(r.audit, back.audit);
    let rows_after_target = match incident {
        Incident::Delete => (back.audit - a.expected.audit).max(0),
        Incident::LostPrimary => 0,
    };
    (
        VerifyFigures {
            users: back.users,
            expected_users: a.expected.users,
            identical_users: back.fingerprint == a.expected.fingerprint,
            rows_lost,
            rows_after_target,
            as_expected: back.same_rows(&a.expected),
        },
        RpoFigures {
            rows_lost,
            window_ms: ((r.newest_us - back.newest_us).max(0) / 1000) as u64,
        },
    )
}

/// Runs the scenario in `opts.root`; `say` gets each step's narration as it
/// happens. Returns the report whatever the rows restored; the caller
/// decides on [`VerifyFigures::as_expected`].
pub fn run(
    opts: &PitrOptions,
    progress: &dyn Progress,
    say: &mut dyn FnMut(String),
) -> Result<PitrReport> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let demo = create_repo(&opts.root, &opts.exe, rt.handle())?;

    let mut primary = start_primary(&opts.root, &demo.lifeboat)?;
    let version = primary.psql("postgres", "show server_version")?;
    say(format!(
        "1. started a throwaway PostgreSQL {version} cluster (data checksums on) in {}, archiving WAL with `lifeboat pg wal-push` into an encrypted repository at {}",
        primary.pgdata.display(),
        demo.dir.display()
    ));

    let scale = opts.scale.max(1);
    let dataset = load_dataset(&primary, scale)?;
    say(format!(
        "2. loaded an identity platform: {} users, {} sessions, {} audit events ({})",
        dataset.users,
        dataset.sessions,
        dataset.audit_events,
        size(dataset.bytes)
    ));

    let (backup, meta) = base_backup(&demo, rt.handle(), &primary, progress)?;
    let bs = &backup.stats;
    say(format!(
        "3. base backup {}: {} read, {} stored (compressed, encrypted) in {}; WAL {} to {} archived",
        &backup.snapshot[..8],
        size(bs.bytes_read),
        size(bs.bytes_stored),
        secs(bs.duration_ms),
        meta.wal_start,
        meta.wal_stop,
    ));

    let good = keep_writing(&primary, 20_000 * scale)?;
    let after = match opts.incident {
        Incident::Delete => delete_users(&mut primary, good, say)?,
        Incident::LostPrimary => lose_primary(&mut primary, 20_000 * scale, good, say)?,
    };

    let (mut server, restore, rto_ms) =
        restore_and_start(&demo, &opts.root, after.target, progress)?;
    let to = match after.target {
        Some(t) => format!("to {}", humantime::format_rfc3339_micros(t)),
        None => "to the end of the archive".to_string(),
    };
    say(format!(
        "6. restored backup {} into {} in {} and started it: recovery replayed WAL {to} and {} in {}",
        &restore.snapshot[..8],
        server.pgdata.display(),
        secs(restore.restore_ms),
        restore.state,
        secs(restore.recovery_ms)
    ));

    let back = counts(&server)?;
    server.stop()?;
    let (verify, rpo) = compare(opts.incident, &back, &after);
    say(format!(
        "7. verified: {} of {} users back ({}), {} sessions, {} audit events — {} rows lost versus {}; {}",
        back.users,
        after.reference.users,
        if verify.identical_users { "every id and email identical" } else { "CONTENT DIFFERS" },
        back.sessions,
        back.audit,
        verify.rows_lost,
        match opts.incident {
            Incident::Delete => "the target",
            Incident::LostPrimary => "the primary's last commit",
        },
        match (opts.incident, verify.as_expected) {
            (Incident::Delete, true) => format!(
                "the {} writes from after the target (the incident and its aftermath) absent, as asked",
                after.writes_after
            ),
            (Incident::LostPrimary, true) => "everything archived is back".to_string(),
            (_, false) => "NOT what the archive should give".to_string(),
        }
    ));

    let rto_met = Duration::from_millis(rto_ms) <= RTO_TARGET;
    let rpo_met = match opts.incident {
        Incident::Delete => {
            rpo.rows_lost == 0
                && after.archive_lag <= RPO_TARGET
                && Duration::from_secs(ARCHIVE_TIMEOUT_S) <= RPO_TARGET
        }
        Incident::LostPrimary => Duration::from_millis(rpo.window_ms) <= RPO_TARGET,
    };
    Ok(PitrReport {
        workdir: opts.root.clone(),
        postgres_version: version,
        dataset,
        backup,
        target_time: after
            .target
            .map(|t| humantime::format_rfc3339_micros(t).to_string()),
        incident: IncidentFigures {
            kind: opts.incident,
            deleted_users: after.deleted,
            unarchived_rows: after.unarchived,
        },
        restore,
        verify,
        rpo,
        rto_ms,
        rto_target_ms: RTO_TARGET.as_millis() as u64,
        rto_met,
        archive_lag_ms: after.archive_lag.as_millis() as u64,
        archive_timeout_s: ARCHIVE_TIMEOUT_S,
        rpo_target_ms: RPO_TARGET.as_millis() as u64,
        rpo_met,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kind: Incident, rows_lost: i64, window_ms: u64) -> PitrReport {
        PitrReport {
            workdir: PathBuf::from("/tmp/x"),
            postgres_version: "15".into(),
            dataset: Dataset {
                users: 1,
                sessions: 1,
                audit_events: 1,
                bytes: 1,
            },
            backup: BackupFigures {
                snapshot: "ab".into(),
                stats: BackupStats::default(),
            },
            target_time: None,
            incident: IncidentFigures {
                kind,
                deleted_users: 0,
                unarchived_rows: rows_lost,
            },
            restore: RestoreFigures {
                snapshot: "ab".into(),
                restore_ms: 1000,
                recovery_ms: 500,
                state: "promoted".into(),
            },
            verify: VerifyFigures {
                users: 1,
                expected_users: 1,
                identical_users: true,
                rows_lost,
                rows_after_target: 0,
                as_expected: true,
            },
            rpo: RpoFigures {
                rows_lost,
                window_ms,
            },
            rto_ms: 1500,
            rto_target_ms: RTO_TARGET.as_millis() as u64,
            rto_met: true,
            archive_lag_ms: 200,
            archive_timeout_s: ARCHIVE_TIMEOUT_S,
            rpo_target_ms: RPO_TARGET.as_millis() as u64,
            rpo_met: window_ms <= RPO_TARGET.as_millis() as u64,
            duration_ms: 9000,
        }
    }

    #[test]
    fn the_summary_says_the_rows_and_time_measured() {
        let lost = report(Incident::LostPrimary, 150, 420_000).summary();
        assert!(lost[1].contains("150 rows lost"), "{lost:?}");
        assert!(lost[1].contains("420.0 s"), "{lost:?}");
        assert!(lost[1].ends_with("NOT met"), "{lost:?}");
        let none = report(Incident::Delete, 0, 0).summary();
        assert!(
            none[1].contains("0 rows lost versus the target"),
            "{none:?}"
        );
        assert!(none[1].ends_with(": met"), "{none:?}");
        assert!(
            none[0].contains("1.5 s (restore 1.0 s + recovery 0.5 s)"),
            "{none:?}"
        );
    }
}
