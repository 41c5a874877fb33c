//! The S3 backend, through Apache OpenDAL.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::{services, Operator};

use crate::{ErrorKind, ObjectInfo, Storage, StorageError};

/// How to reach an S3-compatible store. Unset fields fall back to the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The endpoint, e.g. `http://127.0.0.1:3900` for a local Garage; AWS when unset.
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when unset and not in the environment.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Virtual-host-style addressing (`BUCKET.endpoint`) instead of path style.
    pub virtual_host_style: bool,
}

/// A bucket (and optional prefix) of an S3-compatible store.
#[derive(Debug)]
pub struct S3Storage {
    op: Operator,
    location: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Storage {
    /// A store for `bucket` under `prefix`. No request is made yet.
    pub fn new(bucket: &str, prefix: &str, options: &S3Options) -> Result<Self, StorageError> {
        let location = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let region = options
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut builder = services::S3::default()
            .bucket(bucket)
            .root(&format!("/{}", prefix.trim_matches('/')))
            .region(&region)
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(endpoint) = options.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL")) {
            builder = builder.endpoint(&endpoint);
        }
        let key_id = options
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = options
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        match (key_id, secret) {
            (Some(id), Some(secret)) => {
                builder = builder.access_key_id(&id).secret_access_key(&secret);
            }
            _ => {
                return Err(StorageError::new(
                    ErrorKind::Config,
                    "open",
                    "",
                    &location,
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [s3] access_key_id and secret_access_key in the config file",
                ))
            }
        }
        if options.virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        let op = Operator::new(builder)
            .map_err(|e| StorageError::new(ErrorKind::Config, "open", "", &location, e))?
            .finish();
        Ok(S3Storage { op, location })
    }

    fn err(&self, op: &'static str, key: &str, e: opendal::Error) -> StorageError {
        use opendal::ErrorKind as K;
        let kind = kind_of(&e);
        let message = match e.kind() {
            K::PermissionDenied => format!(
                "access denied; check the S3 credentials and that they may use this bucket ({e})"
            ),
            _ => e.to_string(),
        };
        StorageError::new(kind, op, key, &self.location, message)
    }
}

/// How an OpenDAL error is treated. OpenDAL knows which failures may pass
/// (`is_temporary`: a request that could not be sent, a cut body, a 5xx, an
/// S3 `SlowDown`); everything else it does not name is permanent, so an
/// access denied or an unexpected answer is reported at once rather than
/// retried for minutes.
fn kind_of(e: &opendal::Error) -> ErrorKind {
    use opendal::ErrorKind as K;
    match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::ConfigInvalid => ErrorKind::Config,
        K::RangeNotSatisfied => ErrorKind::Truncated,
        // OpenDAL's own check of a ranged read against the length the store
        // answered: the object ends before the range does. A response cut
        // short in transit says the same words but is temporary, and is
        // retried like any other.
        K::Unexpected if !e.is_temporary() && e.to_string().contains("got too little data") => {
            ErrorKind::Truncated
        }
        // A range that starts at or past the object's end: S3 answers 416
        // InvalidRange, which OpenDAL's S3 service leaves `Unexpected`.
        K::Unexpected if !e.is_temporary() && e.to_string().contains("\"InvalidRange\"") => {
            ErrorKind::Truncated
        }
        // Throttling passes by definition, even when the store answers 429
        // without a code OpenDAL marks temporary (it reports a bare 429 or
        // 408 as Unexpected and not temporary, with the status only in the
        // response it attaches).
        K::RateLimited => ErrorKind::Transient,
        _ if e.is_temporary() => ErrorKind::Transient,
        _ if matches!(http_status(e), Some(408 | 429)) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The HTTP status of the response OpenDAL attached to `e` (its
/// `response` context, `Parts { status: 429, … }`), if any.
fn http_status(e: &opendal::Error) -> Option<u16> {
    let text = e.to_string();
    let at = text.find("status: ")? + "status: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.op
            .write(key, data)
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.op
            .read(key)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("get", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        self.op
            .read_with(key)
            .range(range)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("get", key, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let entries = self
            .op
            .list_with(prefix)
            .recursive(true)
            .await
            .map_err(|e| self.err("list", prefix, e))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| ObjectInfo {
                key: e.path().trim_start_matches('/').to_string(),
                size: e.metadata().content_length(),
                modified: e
                    .metadata()
                    .last_modified()
                    .map(std::time::SystemTime::from),
            })
            .collect())
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.content_length(),
                modified: m.last_modified().map(std::time::SystemTime::from),
            })),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.op
            .delete(key)
            .await
            .map_err(|e| self.err("delete", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opendal::ErrorKind as K;

    #[test]
    fn a_short_object_is_truncated_and_a_cut_response_is_retried() {
        let short = opendal::Error::new(K::Unexpected, "reader got too little data");
        assert_eq!(kind_of(&short), ErrorKind::Truncated);
        let cut =
            opendal::Error::new(K::Unexpected, "http response got too little data").set_temporary();
        assert_eq!(kind_of(&cut), ErrorKind::Transient);
        assert_eq!(
            kind_of(&opendal::Error::new(K::RangeNotSatisfied, "416")),
            ErrorKind::Truncated
        );
        // What OpenDAL's S3 service makes of a 416 (Garage, AWS).
        let past_the_end = opendal::Error::new(
            K::Unexpected,
            r#"S3Error { code: "InvalidRange", message: "Invalid HTTP range: (NoOverlap, 1000)", resource: "/b/k", request_id: "" }"#,
        );
        assert_eq!(kind_of(&past_the_end), ErrorKind::Truncated);
        assert_eq!(
            kind_of(&opendal::Error::new(K::NotFound, "x")),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn only_what_opendal_calls_temporary_is_retried() {
        let denied = opendal::Error::new(K::PermissionDenied, "403 AccessDenied");
        assert_eq!(kind_of(&denied), ErrorKind::PermissionDenied);
        assert!(!StorageError::new(kind_of(&denied), "get", "k", "s3://b", denied).is_retryable());
        let unknown = opendal::Error::new(K::Unexpected, "400 something odd");
        assert_eq!(kind_of(&unknown), ErrorKind::Permanent);
        let busy = opendal::Error::new(K::Unexpected, "503 SlowDown").set_temporary();
        assert_eq!(kind_of(&busy), ErrorKind::Transient);
        assert_eq!(
            kind_of(&opendal::Error::new(K::RateLimited, "429")),
            ErrorKind::Transient
        );
        // What OpenDAL 0.54 makes of a bare 429 or 408: Unexpected, not
        // temporary, the status in the attached response.
        for status in [429, 408] {
            let bare = opendal::Error::new(K::Unexpected, "TooManyRequests").with_context(
                "response",
                format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{}} }}"),
            );
            assert_eq!(kind_of(&bare), ErrorKind::Transient, "{status}");
        }
        let bad_request = opendal::Error::new(K::Unexpected, "InvalidArgument").with_context(
            "response",
            "Parts { status: 400, version: HTTP/1.1, headers: {} }",
        );
        assert_eq!(kind_of(&bad_request), ErrorKind::Permanent);
        assert_eq!(
            kind_of(&opendal::Error::new(K::ConfigInvalid, "NoSuchBucket")),
            ErrorKind::Config
        );
        assert_eq!(
            kind_of(&opendal::Error::new(K::Unsupported, "x")),
            ErrorKind::Permanent
        );
    }
}
