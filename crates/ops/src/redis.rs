//! Redis operations: where a source's URL comes from.

use std::path::PathBuf;

use crate::config::FileConfig;
use crate::secrets::first_line_of;
use crate::{Error, Result};

/// The server's URL: `--redis-url`, else `--redis-url-file` (or the
/// source's `redis_url_file`), else `LIFEBOAT_REDIS_URL`, else the source's
/// `redis_url`.
pub fn resolve_url(
    file: &FileConfig,
    source: Option<&str>,
    url: Option<String>,
    url_file: Option<PathBuf>,
) -> Result<String> {
    let named = source.map(|n| file.redis_source(n)).transpose()?;
    let from_file = match url_file.or_else(|| named.and_then(|s| s.redis_url_file.clone())) {
        Some(p) => Some(first_line_of(&p, "Redis URL file")?),
        None => None,
    };
    let from_env = std::env::var("LIFEBOAT_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty());
    url.or(from_file)
        .or(from_env)
        .or_else(|| named.and_then(|s| s.redis_url.clone()))
        .ok_or_else(|| Error::usage(match source {
            Some(n) => format!("give the server with --redis-url (or LIFEBOAT_REDIS_URL); the config file's [redis.{n}] has no redis_url"),
            None => "give the server with --redis-url (or LIFEBOAT_REDIS_URL), or name a source from the config file".into(),
        }))
}
