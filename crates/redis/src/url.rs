//! `redis://[user:password@]host:port[/db]` and `rediss://…`.

use crate::error::{RedisError, Result};

/// Where a Redis server is and how to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// ACL user (Redis 6+); `None`: the default user.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Database number from the path (default 0); backups take every database.
    pub db: u32,
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RedisUrl {
    /// Parses a URL.
    pub fn parse(url: &str) -> Result<RedisUrl> {
        let bad = |reason: &str| RedisError::BadUrl {
            url: redact(url),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(bad("it must start with redis:// or rediss://"));
        };
        // The credentials end at the last `@`: a password may hold `@` and
        // `/` itself; the host, port and path follow.
        let (auth, after) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, path) = match after.split_once('/') {
            Some((h, p)) => (h, p),
            None => (after, ""),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => {
                let (u, p) = match a.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (a, None),
                };
                let u = percent_decode(u)
                    .ok_or_else(|| bad("the user name is not valid percent-encoding"))?;
                let p = p
                    .map(|p| {
                        percent_decode(p)
                            .ok_or_else(|| bad("the password is not valid percent-encoding"))
                    })
                    .transpose()?;
                // redis://:password@host is the password alone.
                ((!u.is_empty()).then_some(u), p.filter(|p| !p.is_empty()))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            (h.to_string(), rest.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p
                .parse()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
        };
        let db = match path.split('?').next().unwrap_or("") {
            "" => 0,
            d => d
                .parse()
                .map_err(|_| bad("the path must be a database number"))?,
        };
        Ok(RedisUrl {
            tls,
            host,
            port,
            user,
            password,
            db,
        })
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The URL with its password hidden, for messages and snapshot names.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // As `RedisUrl::parse` reads it: the credentials end at the last `@`
    // (a password may hold `@` and `/` itself). Without a `:`, some clients
    // take the whole of it as a password: hidden too.
    match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_redis_clients_read_them() {
        let u = RedisUrl::parse("redis://backup:p%40ss@db.example:6380/2").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.user.as_deref(),
                u.password.as_deref(),
                u.db
            ),
            (false, "db.example", 6380, Some("backup"), Some("p@ss"), 2)
        );
        let u = RedisUrl::parse("rediss://:secret@[::1]").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.user.clone(),
                u.password.as_deref()
            ),
            (true, "::1", 6379, None, Some("secret"))
        );
        assert_eq!(u.target(), "[::1]:6379");
        for bad in ["http://x", "redis://", "redis://h:99999", "redis://h/x"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        let err = RedisUrl::parse("redis://u:topsecret@h:x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret") && err.contains("port"), "{err}");
    }

    #[test]
    fn redact_hides_every_byte_of_the_password() {
        for (url, shown) in [
            ("redis://u:top@secret@h:6379/2", "redis://u:***@h:6379/2"),
            ("rediss://:p:a@ss@h", "rediss://:***@h"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://u:pw@h/1@x", "redis://u:***@x"),
            ("redis://:ab/cd+ef==@h:6379/1", "redis://:***@h:6379/1"),
            ("redis://onlysecret@h", "redis://***@h"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
        // A password holding `/` (base64) parses whole, and a bad URL's
        // message does not show it.
        let u = RedisUrl::parse("redis://:ab/cd+ef==@h:6380/3").unwrap();
        assert_eq!(
            (u.password.as_deref(), u.port, u.db),
            (Some("ab/cd+ef=="), 6380, 3)
        );
        let err = RedisUrl::parse("redis://:ab/cd@h:notaport")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ab/cd"), "{err}");
    }
}
