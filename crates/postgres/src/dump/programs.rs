//! The client programs a dump or a restore runs: the right version found
//! on this machine, with the connection's settings (and its password in
//! the environment, never on the command line).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{PgError, Result};
use crate::session::conninfo_quote;

/// A libpq connection string for `cfg` with database `db`, password left
/// out (it goes in `PGPASSWORD`, not on a command line others can read).
pub(super) fn conninfo_for(cfg: &Config, db: &str) -> String {
    let mut parts = Vec::new();
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", conninfo_quote(&hosts.join(","))));
    }
    let ports: Vec<String> = cfg.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", conninfo_quote(&ports.join(","))));
    }
    if let Some(u) = cfg.get_user() {
        parts.push(format!("user={}", conninfo_quote(u)));
    }
    parts.push(format!("dbname={}", conninfo_quote(db)));
    if let Some(t) = cfg.get_connect_timeout() {
        parts.push(format!("connect_timeout={}", t.as_secs().max(1)));
    }
    let ssl = match cfg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    parts.push(format!("sslmode={ssl}"));
    parts.push("application_name='lifeboat'".into());
    parts.join(" ")
}

/// A PostgreSQL client program (`pg_dump`, `pg_dumpall`, `pg_restore`,
/// `psql`) of major version `min` or newer, and its major: the same major
/// when installed, else the oldest newer one. `LIFEBOAT_PG_BINDIR` first,
/// then the distribution's directories, then `PATH`.
pub fn client_program(name: &str, min: u32) -> Result<(PathBuf, u32)> {
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let asked = |c: PathBuf| -> Option<(u32, PathBuf)> {
        let out = Command::new(&c).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())?;
        Some((major, c))
    };
    // LIFEBOAT_PG_BINDIR wins a tie; the distribution's directories say
    // their major (a client-only package has no initdb there); PATH last.
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Some(dir) = std::env::var_os(crate::server::BINDIR_ENV) {
        found.extend(asked(PathBuf::from(dir).join(name)));
    }
    found.extend(
        crate::server::installed_with(name)
            .into_iter()
            .map(|(major, dir)| (major, dir.join(name))),
    );
    found.extend(asked(PathBuf::from(name)));
    if let Some((m, p)) = found
        .iter()
        .filter(|(m, _)| *m >= min)
        .min_by_key(|(m, _)| *m)
    {
        return Ok((p.clone(), *m));
    }
    Err(PgError::Misconfigured(if found.is_empty() {
        format!("{name} was not found; install the PostgreSQL {min} client programs (e.g. `apt-get install postgresql-client-{min}`) or name their directory in {}", crate::server::BINDIR_ENV)
    } else {
        format!(
            "{name} {} is older than the server (PostgreSQL {min}) and cannot dump or restore it correctly; install the PostgreSQL {min} client programs (e.g. `apt-get install postgresql-client-{min}`) or name their directory in {}",
            {
                let mut majors: Vec<u32> = found.iter().map(|(m, _)| *m).collect();
                majors.sort_unstable();
                majors.dedup();
                majors.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            },
            crate::server::BINDIR_ENV
        )
    }))
}

/// A client program's command with the connection's password in the
/// environment.
pub(super) fn client(program: &Path, cfg: &Config) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("PGPASSWORD");
    if let Some(pw) = cfg.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::parse_conninfo;

    #[test]
    fn client_programs_older_than_the_server_are_refused_by_name() {
        // This machine's pg_dump (the distribution's) is found for its own
        // major and refused, with a message naming both versions and what
        // to install, for a server newer than any installed.
        let (path, major) = client_program("pg_dump", 12).expect("a pg_dump is installed");
        assert!(major >= 12 && path.ends_with("pg_dump"), "{path:?} {major}");
        let err = client_program("pg_dump", 99).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pg_dump {major}"))
                && err.contains("older than the server (PostgreSQL 99)"),
            "{err}"
        );
        assert!(err.contains("postgresql-client-99"), "{err}");
        let err = client_program("no_such_program_here", 15)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("was not found") && err.contains("LIFEBOAT_PG_BINDIR"),
            "{err}"
        );
    }

    #[test]
    fn conninfo_keeps_the_target_and_leaves_the_password_out() {
        let cfg = parse_conninfo("postgresql://alice:s3cret@db.example:6432/app?sslmode=require")
            .unwrap();
        let s = conninfo_for(&cfg, "other db");
        assert!(
            s.contains("host='db.example'") && s.contains("port='6432'"),
            "{s}"
        );
        assert!(
            s.contains("user='alice'") && s.contains("dbname='other db'"),
            "{s}"
        );
        assert!(s.contains("sslmode=require"), "{s}");
        assert!(!s.contains("s3cret"), "{s}");
        let cfg = parse_conninfo("host=/tmp user=o'brien").unwrap();
        assert!(conninfo_for(&cfg, "x").contains(r"user='o\'brien'"));
    }
}
