//! A small client of the cluster's REST API: JSON in and out, credentials by
//! basic auth or API key, a CA file for TLS, and every failure turned into
//! an [`ElasticError`] that names the cause.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::{ElasticError, Result};

/// How lifeboat proves who it is to the cluster.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials (a cluster with security off).
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// An API key, as the create-API-key call returns it encoded
    /// (`base64(id:key)`), sent as `Authorization: ApiKey …`.
    ApiKey(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::ApiKey(_) => f.write_str("ApiKey(***)"),
        }
    }
}

/// How to reach a cluster.
#[derive(Clone)]
pub struct Connection {
    /// `http(s)://[user:password@]host:port[/prefix]`.
    pub url: String,
    /// Credentials; a user and password in the URL are used when this is
    /// [`Auth::None`].
    pub auth: Auth,
    /// CA certificates (PEM) to check the node's certificate against,
    /// instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// How long one call may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password a URL may hold.
        f.debug_struct("Connection")
            .field("url", &redact(&self.url))
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Connection {
    /// A connection to `url` with no credentials and a 60 s timeout.
    pub fn new(url: &str) -> Self {
        Connection {
            url: url.to_string(),
            auth: Auth::None,
            ca_file: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// `url` without its user and password, for messages and records.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => match url.rsplit_once('@') {
            Some((_, rest)) => format!("***@{rest}"),
            None => url.to_string(),
        },
    }
}

/// A client of one cluster; clones share the connection pool, and calls may
/// run from several threads at once.
#[derive(Clone)]
pub struct Client {
    http: Http,
    base: Url,
    auth: Auth,
    target: String,
}

/// A call's answer: its status and JSON body (`Null` when empty).
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Client {
    /// Checks the URL and builds the client; nothing is sent yet.
    pub fn new(conn: &Connection) -> Result<Client> {
        let target = redact(&conn.url);
        let bad = |reason: String| ElasticError::BadUrl {
            url: target.clone(),
            reason,
        };
        let mut base = Url::parse(conn.url.trim()).map_err(|e| bad(e.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(bad(format!("the scheme is {:?}", base.scheme())));
        }
        if base.host_str().is_none() {
            return Err(bad("it names no host".into()));
        }
        let mut auth = conn.auth.clone();
        if !base.username().is_empty() {
            if matches!(auth, Auth::None) {
                auth = Auth::Basic {
                    user: decode(base.username()),
                    password: decode(base.password().unwrap_or("")),
                };
            }
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let mut builder = Http::builder()
            .timeout(conn.timeout)
            .connect_timeout(conn.timeout.min(Duration::from_secs(10)));
        if let Some(ca) = &conn.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ElasticError::io("read the CA file", ca, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ElasticError::Refused(format!(
                    "the CA file {} holds no PEM certificate ({e}): give the cluster's CA certificate (e.g. config/certs/http_ca.crt)",
                    ca.display()
                ))
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| ElasticError::Unreachable {
            target: target.clone(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })?;
        Ok(Client {
            http,
            base,
            auth,
            target,
        })
    }

    /// The cluster's URL without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ElasticError::BadUrl {
                    url: format!("{}/{path}", self.target),
                    reason: e.to_string(),
                })?;
        let rb = self.http.request(method, url);
        Ok(match &self.auth {
            Auth::None => rb,
            Auth::Basic { user, password } => rb.basic_auth(user, Some(password)),
            Auth::ApiKey(key) => {
                let mut value = reqwest::header::HeaderValue::from_str(&format!("ApiKey {key}"))
                    .map_err(|_| ElasticError::Refused(
                        "the API key holds characters a header cannot: give the encoded key the create-API-key call returns".into(),
                    ))?;
                value.set_sensitive(true);
                rb.header(reqwest::header::AUTHORIZATION, value)
            }
        })
    }

    /// Sends a call and returns its answer whatever the status, except 401
    /// and 403, which are errors naming the credentials or the privilege.
    /// `what` says what lifeboat asked, for messages.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer> {
        self.call_within(method, path, body, what, None)
    }

    /// [`Client::call`] with its own time limit instead of the connection's
    /// (a call the cluster answers only when its work is done).
    pub fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
        timeout: Option<Duration>,
    ) -> Result<Answer> {
        match self.exchange(method, path, body, timeout)? {
            Ok((status, bytes)) => self.answer(status, &bytes, what),
            Err(e) => Err(ElasticError::Unreachable {
                target: self.target.clone(),
                reason: format!("asking it to {what}: {}", describe(&e)),
            }),
        }
    }

    /// One request and its whole answer, or the transport's error.
    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<std::result::Result<(StatusCode, Vec<u8>), reqwest::Error>> {
        let mut rb = self.request(method.clone(), path)?;
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let sent = std::time::Instant::now();
        let got = rb.send().and_then(|resp| {
            let status = resp.status();
            resp.bytes().map(|b| (status, b.to_vec()))
        });
        match &got {
            Ok((status, _)) => tracing::debug!(
                "elastic call {method} /{path}: {}, took {} ms",
                status.as_u16(),
                sent.elapsed().as_millis()
            ),
            Err(e) => tracing::debug!(
                "elastic call {method} /{path}: no answer after {} ms ({e})",
                sent.elapsed().as_millis()
            ),
        }
        Ok(got)
    }

    /// An answer as [`Client::call`] returns it: 401 and 403 are errors
    /// naming the credentials or the privilege.
    fn answer(&self, status: StatusCode, bytes: &[u8], what: &str) -> Result<Answer> {
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        };
        match status {
            StatusCode::UNAUTHORIZED => Err(ElasticError::Auth {
                target: self.target.clone(),
                who: match &self.auth {
                    Auth::None => "no credentials (none were given)".into(),
                    Auth::Basic { user, .. } => format!("user {user:?}"),
                    Auth::ApiKey(_) => "an API key".into(),
                },
            }),
            StatusCode::FORBIDDEN => Err(ElasticError::Forbidden {
                target: self.target.clone(),
                what: what.to_string(),
                reason: reason_of(&body),
            }),
            _ => Ok(Answer {
                status: status.as_u16(),
                body,
            }),
        }
    }

    /// [`Client::call`] that turns any status but 2xx into an
    /// [`ElasticError::Api`] with the cluster's reason.
    pub fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value> {
        let a = self.call(method, path, body, what)?;
        if (200..300).contains(&a.status) {
            Ok(a.body)
        } else {
            Err(self.api_error(what, &a))
        }
    }

    /// `GET path`, 2xx only.
    pub fn get(&self, path: &str, what: &str) -> Result<Value> {
        self.ok(Method::GET, path, None, what)
    }

    /// The error for an answer that is not what was asked.
    pub fn api_error(&self, what: &str, a: &Answer) -> ElasticError {
        ElasticError::Api {
            target: self.target.clone(),
            what: what.to_string(),
            status: a.status,
            reason: format!("HTTP {}: {}", a.status, reason_of(&a.body)),
        }
    }
}

fn decode(s: &str) -> String {
    // Percent-decoding of a URL's user or password.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = s.source();
    }
    if e.is_timeout() {
        msg = format!("{msg} (timed out)");
    }
    msg
}

/// The cluster's explanation in an error body: `error.type: error.reason`
/// (with the root cause when it differs), or the body itself.
pub fn reason_of(body: &Value) -> String {
    let err = &body["error"];
    if let Some(s) = err.as_str() {
        return s.to_string();
    }
    let typ = err["type"].as_str().unwrap_or_default();
    let reason = err["reason"].as_str().unwrap_or_default();
    if typ.is_empty() && reason.is_empty() {
        let text = match body {
            Value::Null => "no explanation".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return text.chars().take(400).collect();
    }
    let mut out = format!("{typ}: {reason}");
    if let Some(root) = err["root_cause"].get(0) {
        let r = root["reason"].as_str().unwrap_or_default();
        if !r.is_empty() && r != reason {
            out = format!("{out} ({r})");
        }
    }
    if let Some(cause) = err["caused_by"]["reason"].as_str() {
        if !out.contains(cause) {
            out = format!("{out}; caused by: {cause}");
        }
    }
    out
}

/// The error type the cluster gave (`snapshot_missing_exception`, …).
pub fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_user_and_password() {
        assert_eq!(
            redact("https://elastic:s3cret@es1:9200/"),
            "https://es1:9200"
        );
        assert_eq!(redact("http://es1:9200"), "http://es1:9200");
        assert!(!redact("not a url user:pw@x").contains("pw"));
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_leave_the_url() {
        let c = Client::new(&Connection::new("http://el%40stic:p%3Ass@127.0.0.1:9200")).unwrap();
        assert_eq!(c.base.as_str(), "http://127.0.0.1:9200/");
        match &c.auth {
            Auth::Basic { user, password } => {
                assert_eq!(user, "el@stic");
                assert_eq!(password, "p:ss");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", c.auth).contains("p:ss"));
    }

    #[test]
    fn a_bad_url_is_refused_by_name() {
        let e = Client::new(&Connection::new("ftp://x:1")).err().unwrap();
        assert!(e.to_string().contains("http(s)://host:port"), "{e}");
    }

    /// The test node runs without the security plugin, so the answer a
    /// secured cluster gives to a wrong password is played by a loopback
    /// socket: the status line and body Elasticsearch sends.
    #[test]
    fn a_refused_password_is_named_as_such() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"error":{"type":"security_exception","reason":"unable to authenticate user [lifeboat]"},"status":401}"#;
            write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"security\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            request
        });
        let mut conn = Connection::new(&format!("http://127.0.0.1:{port}"));
        conn.auth = Auth::Basic {
            user: "lifeboat".into(),
            password: "wrong".into(),
        };
        let err = Client::new(&conn)
            .unwrap()
            .get("", "say who it is")
            .err()
            .unwrap();
        let request = server.join().unwrap();
        assert!(
            request.contains("authorization: Basic ") || request.contains("Authorization: Basic "),
            "{request}"
        );
        assert_eq!(err.class(), lifeboat_repo::ErrorClass::Usage);
        let msg = err.to_string();
        assert!(
            msg.contains("refused the credentials of user \"lifeboat\" (HTTP 401)"),
            "{msg}"
        );
        assert!(!msg.contains("wrong"), "the password leaked: {msg}");
    }

    #[test]
    fn reasons_name_the_type_and_the_cause() {
        let body: Value = serde_json::json!({"error": {"type": "repository_verification_exception",
            "reason": "[r] path is not accessible on master node",
            "root_cause": [{"type": "x", "reason": "[r] path is not accessible on master node"}],
            "caused_by": {"reason": "/x/tests-abc (Permission denied)"}}, "status": 500});
        let r = reason_of(&body);
        assert!(
            r.starts_with("repository_verification_exception: [r] path"),
            "{r}"
        );
        assert!(r.contains("Permission denied"), "{r}");
    }
}
