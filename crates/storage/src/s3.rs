//! The S3 backend, through Apache OpenDAL.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::{services, Operator};

use crate::{
    class_needs_thaw, ByteStream, ColdState, ErrorKind, ObjectInfo, Storage, StorageError, ThawTier,
};

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
    /// The storage class of what [`Storage::put_cold`] stores (`GLACIER`,
    /// `DEEP_ARCHIVE`, `STANDARD_IA`, `GLACIER_IR`, …); other puts use the
    /// bucket's default.
    pub storage_class: Option<String>,
}

/// A bucket (and optional prefix) of an S3-compatible store.
#[derive(Debug)]
pub struct S3Storage {
    op: Operator,
    /// The operator of cold puts, when a storage class is set.
    cold: Option<Operator>,
    /// That storage class.
    class: Option<String>,
    location: String,
    /// What the calls OpenDAL does not make need: RestoreObject, and the
    /// HEAD that reads the restore state.
    raw: Raw,
}

/// Signed requests of our own, for the two calls OpenDAL has not.
struct Raw {
    client: reqwest::Client,
    /// `https://host[:port]`, no trailing slash.
    endpoint: String,
    bucket: String,
    /// The prefix, with a trailing slash when not empty.
    root: String,
    virtual_host: bool,
    signer: reqsign::AwsV4Signer,
    cred: reqsign::AwsCredential,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credential in any output.
        f.debug_struct("Raw")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Raw {
    fn url(&self, key: &str) -> String {
        if self.virtual_host {
            let (scheme, host) = self
                .endpoint
                .split_once("://")
                .unwrap_or(("https", &self.endpoint));
            format!("{scheme}://{}.{host}/{}{key}", self.bucket, self.root)
        } else {
            format!("{}/{}/{}{key}", self.endpoint, self.bucket, self.root)
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<reqwest::Response, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut req = reqwest::Request::new(method, url);
        if let Some(b) = body {
            req.headers_mut().insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/xml"),
            );
            *req.body_mut() = Some(reqwest::Body::from(b));
        }
        self.signer
            .sign(&mut req, &self.cred)
            .map_err(|e| format!("sign the request: {e}"))?;
        self.client
            .execute(req)
            .await
            .map_err(|e| format!("send the request: {e}"))
    }
}

/// The body of an S3 RestoreObject request.
fn restore_body(days: u32, tier: ThawTier) -> String {
    format!(
        "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days><GlacierJobParameters><Tier>{}</Tier></GlacierJobParameters></RestoreRequest>",
        tier.as_s3()
    )
}

/// What the headers of a HEAD say: `x-amz-storage-class` (absent:
/// STANDARD) and `x-amz-restore` (`ongoing-request="true"`, or
/// `ongoing-request="false", expiry-date="…"`).
fn cold_state_of(class: Option<&str>, restore: Option<&str>) -> ColdState {
    let class = class.unwrap_or("STANDARD").to_string();
    if !class_needs_thaw(&class) {
        return ColdState::Hot;
    }
    match restore {
        Some(r) if r.contains("ongoing-request=\"true\"") => ColdState::Thawing { class },
        Some(r) if r.contains("ongoing-request=\"false\"") => {
            let expiry = r
                .split("expiry-date=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(String::from);
            ColdState::Thawed { class, expiry }
        }
        _ => ColdState::Frozen { class },
    }
}

/// An error kind for an HTTP status of our own requests.
fn status_kind(status: u16) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::PermissionDenied,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
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
        let endpoint = options.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
        let key_id = options
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = options
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(key_id), Some(secret)) = (key_id, secret) else {
            return Err(StorageError::new(
                ErrorKind::Config,
                "open",
                "",
                &location,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [s3] access_key_id and secret_access_key in the config file",
            ));
        };
        let operator = |class: Option<&str>| -> Result<Operator, StorageError> {
            let mut builder = services::S3::default()
                .bucket(bucket)
                .root(&format!("/{}", prefix.trim_matches('/')))
                .region(&region)
                .disable_config_load()
                .disable_ec2_metadata()
                .access_key_id(&key_id)
                .secret_access_key(&secret);
            if let Some(endpoint) = &endpoint {
                builder = builder.endpoint(endpoint);
            }
            if options.virtual_host_style {
                builder = builder.enable_virtual_host_style();
            }
            if let Some(class) = class {
                builder = builder.default_storage_class(class);
            }
            Ok(Operator::new(builder)
                .map_err(|e| StorageError::new(ErrorKind::Config, "open", "", &location, e))?
                .finish())
        };
        let op = operator(None)?;
        let cold = options
            .storage_class
            .as_deref()
            .map(|c| operator(Some(c)))
            .transpose()?;
        let raw = Raw {
            client: reqwest::Client::new(),
            endpoint: endpoint
                .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"))
                .trim_end_matches('/')
                .to_string(),
            bucket: bucket.to_string(),
            root: match prefix.trim_matches('/') {
                "" => String::new(),
                p => format!("{p}/"),
            },
            virtual_host: options.virtual_host_style,
            signer: reqsign::AwsV4Signer::new("s3", &region),
            cred: reqsign::AwsCredential {
                access_key_id: key_id,
                secret_access_key: secret,
                session_token: None,
                expires_in: None,
            },
        };
        Ok(S3Storage {
            op,
            cold,
            class: options.storage_class.clone(),
            location,
            raw,
        })
    }

    fn raw_err(&self, op: &'static str, key: &str, status: u16, body: &str) -> StorageError {
        let code = body
            .split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("");
        StorageError::new(
            status_kind(status),
            op,
            key,
            &self.location,
            format!("the store answered {status} {code}"),
        )
    }

    fn err(&self, op: &'static str, key: &str, e: opendal::Error) -> StorageError {
        use opendal::ErrorKind as K;
        let kind = kind_of(&e);
        let message = match e.kind() {
            _ if kind == ErrorKind::Frozen => format!("{} ({e})", crate::FROZEN_MESSAGE),
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
    // A GET of an object in Glacier or Deep Archive that is not restored:
    // S3 answers 403 InvalidObjectState.
    if e.to_string().contains("InvalidObjectState") {
        return ErrorKind::Frozen;
    }
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

    fn may_be_cold(&self) -> bool {
        true
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

    async fn get_parts(&self, key: &str) -> Result<Vec<Bytes>, StorageError> {
        self.op
            .read(key)
            .await
            .map(|b| b.into_iter().collect())
            .map_err(|e| self.err("get", key, e))
    }

    async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        cold: bool,
    ) -> Result<(), StorageError> {
        let op = if cold {
            self.cold.as_ref().unwrap_or(&self.op)
        } else {
            &self.op
        };
        op.write(key, opendal::Buffer::from(parts))
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StorageError> {
        use futures_util::StreamExt;
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| self.err("get", key, e))?;
        let stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| self.err("get", key, e))?;
        let (k, loc) = (key.to_string(), self.location.clone());
        Ok(Some(Box::pin(stream.map(move |r| {
            r.map_err(|e| {
                // OpenDAL's error inside the io::Error, when it is one.
                let kind = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<opendal::Error>())
                    .map_or(ErrorKind::Transient, kind_of);
                StorageError::new(kind, "get", &k, &loc, e)
            })
        }))))
    }

    fn streams_puts(&self) -> bool {
        true
    }

    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        stream: ByteStream,
        cold: bool,
    ) -> Result<(), StorageError> {
        use futures_util::StreamExt;
        let url = reqwest::Url::parse(&self.raw.url(key))
            .map_err(|e| StorageError::new(ErrorKind::Config, "put", key, &self.location, e))?;
        let mut req = reqwest::Request::new(reqwest::Method::PUT, url);
        let h = req.headers_mut();
        h.insert(reqwest::header::CONTENT_LENGTH, len.into());
        if cold {
            if let Some(class) = &self.class {
                if let Ok(v) = reqwest::header::HeaderValue::from_str(class) {
                    h.insert("x-amz-storage-class", v);
                }
            }
        }
        let body = stream.map(|r| r.map_err(std::io::Error::other));
        *req.body_mut() = Some(reqwest::Body::wrap_stream(body));
        self.raw
            .signer
            .sign(&mut req, &self.raw.cred)
            .map_err(|e| StorageError::new(ErrorKind::Config, "put", key, &self.location, e))?;
        let resp = self.raw.client.execute(req).await.map_err(|e| {
            StorageError::new(
                ErrorKind::Transient,
                "put",
                key,
                &self.location,
                lifeboat_types::error::report(&e),
            )
        })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(self.raw_err("put", key, status, &body))
    }

    async fn put_cold(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.cold
            .as_ref()
            .unwrap_or(&self.op)
            .write(key, data)
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    async fn cold_state(&self, key: &str) -> Result<ColdState, StorageError> {
        let url = self.raw.url(key);
        let resp = self
            .raw
            .send(reqwest::Method::HEAD, &url, None)
            .await
            .map_err(|m| StorageError::new(ErrorKind::Transient, "stat", key, &self.location, m))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.raw_err("stat", key, status, ""));
        }
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        Ok(cold_state_of(
            get("x-amz-storage-class"),
            get("x-amz-restore"),
        ))
    }

    async fn thaw(&self, key: &str, days: u32, tier: ThawTier) -> Result<ColdState, StorageError> {
        let state = self.cold_state(key).await?;
        let class = match &state {
            ColdState::Hot | ColdState::Thawing { .. } => return Ok(state),
            ColdState::Frozen { class } | ColdState::Thawed { class, .. } => class.clone(),
        };
        let url = format!("{}?restore", self.raw.url(key));
        let resp = self
            .raw
            .send(reqwest::Method::POST, &url, Some(restore_body(days, tier)))
            .await
            .map_err(|m| StorageError::new(ErrorKind::Transient, "thaw", key, &self.location, m))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match status {
            // Asked for; already restored (the days are extended).
            202 => Ok(ColdState::Thawing { class }),
            200 => Ok(match state {
                ColdState::Thawed { .. } => state,
                _ => ColdState::Thawed {
                    class,
                    expiry: None,
                },
            }),
            409 if body.contains("RestoreAlreadyInProgress") => Ok(ColdState::Thawing { class }),
            _ => Err(self.raw_err("thaw", key, status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opendal::ErrorKind as K;

    #[test]
    fn the_restore_state_is_read_from_the_head_headers() {
        assert_eq!(cold_state_of(None, None), ColdState::Hot);
        assert_eq!(cold_state_of(Some("STANDARD_IA"), None), ColdState::Hot);
        assert_eq!(cold_state_of(Some("GLACIER_IR"), None), ColdState::Hot);
        assert_eq!(
            cold_state_of(Some("GLACIER"), None),
            ColdState::Frozen {
                class: "GLACIER".into()
            }
        );
        assert_eq!(
            cold_state_of(Some("DEEP_ARCHIVE"), Some("ongoing-request=\"true\"")),
            ColdState::Thawing {
                class: "DEEP_ARCHIVE".into()
            }
        );
        assert_eq!(
            cold_state_of(
                Some("GLACIER"),
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 23 Dec 2012 00:00:00 GMT\"")
            ),
            ColdState::Thawed {
                class: "GLACIER".into(),
                expiry: Some("Fri, 23 Dec 2012 00:00:00 GMT".into())
            }
        );
        let frozen = opendal::Error::new(
            K::PermissionDenied,
            r#"S3Error { code: "InvalidObjectState", message: "The operation is not valid for the object's storage class" }"#,
        );
        assert_eq!(kind_of(&frozen), ErrorKind::Frozen);
    }

    /// A loopback HTTP server that records each request (head and body)
    /// and answers with `answers`, one per connection, in turn.
    fn recording_server(
        answers: Vec<&'static str>,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut c, _) = listener.accept().unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = c.read(&mut buf).unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(at) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if req.len() >= at + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                // One connection per request: told so, the client never
                // sends the next request on the connection closed here
                // (which it would find reset).
                let answer = answer.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                c.write_all(answer.as_bytes()).unwrap();
                seen.push(String::from_utf8_lossy(&req).to_string());
            }
            seen
        });
        (addr, server)
    }

    fn archive_store(addr: std::net::SocketAddr) -> S3Storage {
        S3Storage::new(
            "archive",
            "prod",
            &S3Options {
                endpoint: Some(format!("http://{addr}")),
                region: Some("eu-west-1".into()),
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some("not-a-real-secret".into()),
                virtual_host_style: false,
                storage_class: Some("DEEP_ARCHIVE".into()),
            },
        )
        .unwrap()
    }

    /// The cold put of a replica's data carries the storage class; its
    /// other objects do not.
    #[test]
    fn a_cold_streamed_put_names_the_storage_class() {
        let (addr, server) = recording_server(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ]);
        let store = archive_store(addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (key, cold) in [("packs/ab/cd", true), ("index/ef", false)] {
            let body: ByteStream = Box::pin(futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ]));
            rt.block_on(store.put_stream(key, 11, body, cold)).unwrap();
        }
        let seen = server.join().unwrap();
        let (pack, index) = (&seen[0], &seen[1]);
        assert!(
            pack.starts_with("PUT /archive/prod/packs/ab/cd HTTP/1.1"),
            "{pack}"
        );
        let lower = pack.to_ascii_lowercase();
        assert!(
            lower.contains("x-amz-storage-class: deep_archive"),
            "{pack}"
        );
        assert!(
            lower.contains("content-length: 11") && pack.ends_with("hello world"),
            "{pack}"
        );
        assert!(
            !index.to_ascii_lowercase().contains("x-amz-storage-class"),
            "{index}"
        );
    }

    /// A stand-in for AWS (Garage has no storage classes and no
    /// RestoreObject): a loopback HTTP server that records each request
    /// and answers from a script. Shows the requests `thaw` makes — a
    /// signed HEAD, then a signed POST `?restore` with the days and tier —
    /// and how their answers are read.
    #[test]
    fn thaw_heads_then_posts_a_signed_restore_request() {
        let (addr, server) = recording_server(vec![
            "HTTP/1.1 200 OK\r\nx-amz-storage-class: DEEP_ARCHIVE\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-amz-storage-class: DEEP_ARCHIVE\r\nx-amz-restore: ongoing-request=\"true\"\r\ncontent-length: 0\r\n\r\n",
        ]);
        let store = archive_store(addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let key = "packs/ab/abcd";
        let state = rt.block_on(store.thaw(key, 7, ThawTier::Bulk)).unwrap();
        assert_eq!(
            state,
            ColdState::Thawing {
                class: "DEEP_ARCHIVE".into()
            }
        );
        let state = rt.block_on(store.cold_state(key)).unwrap();
        assert_eq!(state.name(), "thawing");
        let seen = server.join().unwrap();
        assert!(
            seen[0].starts_with("HEAD /archive/prod/packs/ab/abcd HTTP/1.1"),
            "{}",
            seen[0]
        );
        let post = &seen[1];
        assert!(
            post.starts_with("POST /archive/prod/packs/ab/abcd?restore HTTP/1.1"),
            "{post}"
        );
        let lower = post.to_ascii_lowercase();
        assert!(
            lower.contains("authorization: aws4-hmac-sha256 credential=akidexample/")
                && lower.contains("/eu-west-1/s3/aws4_request"),
            "{post}"
        );
        assert!(
            post.contains("<Days>7</Days>") && post.contains("<Tier>Bulk</Tier>"),
            "{post}"
        );
        assert!(!post.contains("not-a-real-secret"), "no secret on the wire");
        assert!(!format!("{store:?}").contains("not-a-real-secret"));
    }

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
