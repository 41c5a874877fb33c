//! One connection to PostgreSQL, kept for the whole of a backup.
//!
//! The non-exclusive backup API ties a backup to the session that started it:
//! `pg_backup_stop` must run on the same connection, and PostgreSQL aborts the
//! backup if that session ends. [`Session`] is that connection; every call
//! checks it is still alive and says so plainly when it is not.

use std::str::FromStr;

use tokio::runtime::Handle;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::error::{PgError, Result};
use crate::wal::Lsn;

/// Facts about the server, read once when a backup or check starts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150004.
    pub version_num: u32,
    /// `server_version`, e.g. `15.4 (Debian 15.4-1)`.
    pub version: String,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: String,
    /// Data page checksums are on.
    pub data_checksums: bool,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// The server's data directory.
    pub data_directory: String,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// `wal_level`.
    pub wal_level: String,
    /// The server is a standby (in recovery).
    pub in_recovery: bool,
    /// `archive_timeout` in seconds (0: off).
    pub archive_timeout_s: u64,
}

/// A database of the cluster and what it holds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DatabaseInfo {
    /// Its name.
    pub name: String,
    /// `pg_database_size`, bytes.
    pub size: u64,
    /// Row estimate per table (`schema.table` → `reltuples`).
    pub tables: std::collections::BTreeMap<String, i64>,
}

/// What `pg_backup_stop` returns.
#[derive(Clone, Debug)]
pub struct BackupStop {
    /// The stop LSN.
    pub lsn: Lsn,
    /// The `backup_label` to store with the backup, byte for byte.
    pub labelfile: String,
    /// The `tablespace_map` (empty without tablespaces).
    pub spcmapfile: String,
}

/// A connection string with the password hidden, for messages.
pub fn redact(conninfo: &str) -> String {
    // A URI only when it starts as libpq's do; a key=value password may
    // itself hold "://".
    let uri = ["postgresql://", "postgres://"]
        .iter()
        .any(|p| conninfo.trim_start().starts_with(p));
    if let Some((scheme, rest)) = conninfo.split_once("://").filter(|_| uri) {
        // postgresql://user:secret@host/db?password=x → user:***@host/db?password=***
        // The credentials end at the last `@` before the query: a password
        // written with `/` or `@` in it is hidden whole.
        let cut = rest.find('?').unwrap_or(rest.len());
        let rest = match rest[..cut].rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _)) => format!("{user}:***@{}", &rest[at + 1..]),
                None => rest.to_string(),
            },
            None => rest.to_string(),
        };
        let rest = match rest.split_once('?') {
            Some((base, query)) => {
                let params: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some(("password", _)) => "password=***".to_string(),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{base}?{}", params.join("&"))
            }
            None => rest,
        };
        return format!("{scheme}://{rest}");
    }
    // key = value pairs; a value may be quoted ('a b', with \' and \\).
    let mut out = String::new();
    let mut chars = conninfo.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        while let Some(&c) = chars.peek() {
            if c != '=' && !c.is_whitespace() {
                break;
            }
            out.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push_str(if key == "password" { "***" } else { &value });
    }
    out
}

/// Parses a libpq connection string (key=value pairs or a URL). A missing user
/// defaults to the operating-system user, as libpq does.
pub fn parse_conninfo(conninfo: &str) -> Result<Config> {
    let mut cfg = Config::from_str(conninfo).map_err(|e| PgError::BadConninfo {
        conninfo: redact(conninfo),
        reason: e.to_string(),
    })?;
    if cfg.get_user().is_none() {
        if let Ok(user) = std::env::var("PGUSER").or_else(|_| std::env::var("USER")) {
            cfg.user(user);
        }
    }
    if cfg.get_hosts().is_empty() {
        cfg.host("/var/run/postgresql");
    }
    if cfg.get_ports().is_empty() {
        cfg.port(5432);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("lifeboat");
    }
    Ok(cfg)
}

fn target_of(cfg: &Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "host {host} port {port} user {}",
        cfg.get_user().unwrap_or("?")
    )
}

/// One open connection.
pub struct Session {
    client: Client,
    rt: Handle,
    conn: tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>,
}

impl Session {
    /// Connects with `conninfo`. `rt` drives the connection; call from outside
    /// its worker threads.
    pub fn connect(rt: &Handle, conninfo: &str) -> Result<Session> {
        let cfg = parse_conninfo(conninfo)?;
        Self::connect_with(rt, &cfg)
    }

    /// Connects with a parsed configuration.
    pub fn connect_with(rt: &Handle, cfg: &Config) -> Result<Session> {
        let mut cfg = cfg.clone();
        cfg.connect_timeout(std::time::Duration::from_secs(10));
        let (client, conn) = rt
            .block_on(cfg.connect(NoTls))
            .map_err(|e| PgError::Connect {
                target: target_of(&cfg),
                reason: error_text(&e),
            })?;
        let conn = rt.spawn(conn);
        Ok(Session {
            client,
            rt: rt.clone(),
            conn,
        })
    }

    /// The client, for calls that need it mutably (a transaction).
    pub(crate) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// True while the connection is open.
    pub fn is_alive(&self) -> bool {
        !self.client.is_closed() && !self.conn.is_finished()
    }

    /// Runs `sql` (one or more statements, no parameters) and returns the rows
    /// of its last result as text. `what` names the step for error messages.
    pub fn rows(&self, what: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let messages = self
            .rt
            .block_on(self.client.simple_query(sql))
            .map_err(|e| PgError::Query {
                what: what.to_string(),
                reason: error_text(&e),
            })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// The first column of the first row of `sql`.
    pub fn value(&self, what: &str, sql: &str) -> Result<String> {
        self.rows(what, sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| PgError::Query {
                what: what.to_string(),
                reason: "the query returned no value".into(),
            })
    }

    /// Reads version, identity and archiving settings.
    pub fn server_info(&self) -> Result<ServerInfo> {
        let what = "report its settings (the role may lack pg_read_all_settings / pg_monitor)";
        let row = self
            .rows(
                what,
                "select current_setting('server_version_num'), current_setting('server_version'), \
                 (select system_identifier::text from pg_catalog.pg_control_system()), \
                 current_setting('data_checksums'), \
                 (select setting from pg_catalog.pg_settings where name = 'wal_segment_size'), \
                 current_setting('data_directory'), current_setting('archive_mode'), \
                 current_setting('archive_command'), current_setting('wal_level'), \
                 pg_catalog.pg_is_in_recovery()::text, \
                 (select setting from pg_catalog.pg_settings where name = 'archive_timeout')",
            )?
            .into_iter()
            .next()
            .unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let version_num: u32 = get(0).parse().unwrap_or(0);
        if version_num < 120_000 {
            return Err(PgError::Misconfigured(format!(
                "PostgreSQL {} is not supported: lifeboat needs PostgreSQL 12 or newer",
                get(1)
            )));
        }
        Ok(ServerInfo {
            version_num,
            version: get(1),
            system_identifier: get(2),
            data_checksums: get(3) == "on",
            wal_segment_size: get(4).parse().unwrap_or(16 << 20),
            data_directory: get(5),
            archive_mode: get(6),
            archive_command: get(7),
            wal_level: get(8),
            in_recovery: get(9) == "true",
            archive_timeout_s: get(10).parse().unwrap_or(0),
        })
    }

    /// Per database: its size and the row estimate of each table. Connects to
    /// each database in turn with the settings of `cfg`.
    pub fn databases(&self, cfg: &Config) -> Result<Vec<DatabaseInfo>> {
        let rows = self.rows(
            "list its databases",
            "select datname, pg_catalog.pg_database_size(oid)::text from pg_catalog.pg_database \
             where datallowconn and not datistemplate order by datname",
        )?;
        let mut out = Vec::new();
        for r in rows {
            let name = r.first().cloned().flatten().unwrap_or_default();
            let size = r
                .get(1)
                .cloned()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut db_cfg = cfg.clone();
            db_cfg.dbname(&name);
            let mut tables = std::collections::BTreeMap::new();
            // A database one cannot connect to still gets its size recorded.
            if let Ok(s) = Session::connect_with(&self.rt, &db_cfg) {
                for t in s.rows(
                    "estimate row counts",
                    "select n.nspname || '.' || c.relname, c.reltuples::bigint::text \
                     from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                     where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') \
                     and n.nspname not like 'pg_toast%'",
                )? {
                    if let (Some(Some(t)), Some(Some(n))) = (t.first(), t.get(1)) {
                        tables.insert(t.clone(), n.parse().unwrap_or(-1));
                    }
                }
            }
            out.push(DatabaseInfo { name, size, tables });
        }
        Ok(out)
    }

    /// The server's `server_version_num` and `server_version`; an answer
    /// that does not parse is an error, not version 0.
    pub fn server_version(&self) -> Result<(u32, String)> {
        let what = "report its version";
        let rows = self.rows(
            what,
            "select current_setting('server_version_num'), current_setting('server_version')",
        )?;
        let field = |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten());
        let num = field(0).unwrap_or_default();
        let version_num = num.trim().parse().map_err(|_| PgError::Query {
            what: what.into(),
            reason: format!("server_version_num {num:?} is not a number"),
        })?;
        Ok((version_num, field(1).unwrap_or_default()))
    }

    /// Starts a non-exclusive backup on this session; returns the start LSN and
    /// the timeline.
    pub fn backup_start(&self, info: &ServerInfo, label: &str, fast: bool) -> Result<(Lsn, u32)> {
        // Settings that would end this session mid-backup are switched off for it.
        self.rows(
            "prepare the backup session",
            "set statement_timeout = 0; set idle_in_transaction_session_timeout = 0; \
             set lock_timeout = 0",
        )?;
        if info.version_num >= 140_000 {
            self.rows("prepare the backup session", "set idle_session_timeout = 0")?;
        }
        let label = label.replace('\'', "");
        let sql = if info.version_num >= 150_000 {
            format!("select pg_catalog.pg_backup_start('{label}', {fast})::text")
        } else {
            format!("select pg_catalog.pg_start_backup('{label}', {fast}, false)::text")
        };
        let lsn: Lsn = self.value("start the backup", &sql)?.parse().map_err(
            |e: crate::wal::ParseLsnError| PgError::Query {
                what: "start the backup".into(),
                reason: e.to_string(),
            },
        )?;
        // The timeline names the WAL the backup needs: a guess would record
        // a backup whose WAL is looked for under the wrong names.
        let bad = |text: &str| PgError::Query {
            what: "read the timeline".into(),
            reason: format!("the server answered {text:?}, which is not a timeline"),
        };
        let timeline = if info.in_recovery {
            let text = self.value(
                "read the timeline",
                "select timeline_id::text from pg_catalog.pg_control_checkpoint()",
            )?;
            text.trim().parse().map_err(|_| bad(&text))?
        } else {
            let name = self.value(
                "read the timeline",
                &format!("select pg_catalog.pg_walfile_name('{lsn}')"),
            )?;
            name.get(..8)
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad(&name))?
        };
        Ok((lsn, timeline))
    }

    /// Stops the backup started on this session, without waiting for archiving
    /// (lifeboat waits for the WAL in its own repository).
    pub fn backup_stop(&self, info: &ServerInfo) -> Result<BackupStop> {
        if !self.is_alive() {
            return Err(PgError::SessionLost {
                reason: "the connection closed".into(),
            });
        }
        let sql = if info.version_num >= 150_000 {
            "select lsn::text, labelfile, spcmapfile from pg_catalog.pg_backup_stop(false)"
        } else {
            "select lsn::text, labelfile, spcmapfile from pg_catalog.pg_stop_backup(false, false)"
        };
        let row = self
            .rows("stop the backup", sql)
            .map_err(|e| match e {
                PgError::Query { reason, .. } if !self.is_alive() => {
                    PgError::SessionLost { reason }
                }
                other => other,
            })?
            .into_iter()
            .next()
            .unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(BackupStop {
            lsn: get(0)
                .parse()
                .map_err(|e: crate::wal::ParseLsnError| PgError::Query {
                    what: "stop the backup".into(),
                    reason: e.to_string(),
                })?,
            labelfile: get(1),
            spcmapfile: get(2),
        })
    }

    /// Forces a switch to a new WAL segment; returns the switch LSN.
    pub fn switch_wal(&self) -> Result<Lsn> {
        self.value(
            "switch WAL segments (needs superuser or EXECUTE on pg_switch_wal)",
            "select pg_catalog.pg_switch_wal()::text",
        )?
        .parse()
        .map_err(|e: crate::wal::ParseLsnError| PgError::Query {
            what: "switch WAL segments".into(),
            reason: e.to_string(),
        })
    }

    /// The current WAL insert position.
    pub fn current_lsn(&self) -> Result<Lsn> {
        self.value(
            "report the WAL position",
            "select pg_catalog.pg_current_wal_lsn()::text",
        )?
        .parse()
        .map_err(|e: crate::wal::ParseLsnError| PgError::Query {
            what: "report the WAL position".into(),
            reason: e.to_string(),
        })
    }
}

/// The server's message with its detail and hint, or the client's error.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// `v` as a value of a libpq key=value connection string: in single
/// quotes, backslashes and quotes escaped with a backslash.
pub(crate) fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the password holds, quoted as libpq reads it, none of
        /// it is shown.
        #[test]
        fn no_password_survives_redact(pw in "[a-zA-Z0-9 '\\\\@:=/]{6,20}") {
            let quoted = conninfo_quote(&pw);
            let shown = redact(&format!("host=db password={quoted} user=app"));
            proptest::prop_assert_eq!(shown, "host=db password=*** user=app");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("host=db user=app password=hunter2 dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact("postgresql://app:hunter2@db:5432/x"),
            "postgresql://app:***@db:5432/x"
        );
        for (conninfo, shown) in [
            (
                "host=db password='hunter 2' user=app",
                "host=db password=*** user=app",
            ),
            (
                "host=db password = 'it\\'s secret' dbname=x",
                "host=db password = *** dbname=x",
            ),
            (
                "postgresql://app@db/x?sslmode=require&password=hunter2",
                "postgresql://app@db/x?sslmode=require&password=***",
            ),
            ("postgresql:///x?host=/tmp", "postgresql:///x?host=/tmp"),
            (
                "postgresql://app:pa/ss@word@db:5432/x",
                "postgresql://app:***@db:5432/x",
            ),
            (
                "host=db password='://\\\\A=' user=app",
                "host=db password=*** user=app",
            ),
        ] {
            assert_eq!(redact(conninfo), shown, "{conninfo}");
        }
        let err = parse_conninfo("host=db password=hunter2 bogus=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn both_conninfo_forms_parse_with_unix_sockets() {
        let a = parse_conninfo("host=/var/run/postgresql port=5433 user=postgres").unwrap();
        assert_eq!(a.get_ports(), &[5433]);
        let b = parse_conninfo("postgresql://postgres@localhost:5434/db").unwrap();
        assert_eq!(b.get_ports(), &[5434]);
        assert_eq!(b.get_dbname(), Some("db"));
    }
}
