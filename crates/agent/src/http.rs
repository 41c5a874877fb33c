//! The agent's HTTP listener (`[agent] listen`): metrics, the status page
//! and the status as JSON. Read-only: no route changes anything.
//!
//! | route | content |
//! |---|---|
//! | `GET /` | the status page ([`crate::page`]), `text/html` |
//! | `GET /metrics` | Prometheus' text format ([`crate::metrics`]) |
//! | `GET /api/status` | the [`Status`] as JSON (the shape of `lifeboat status --json`) |
//! | `GET /healthz` | `ok`: the agent answers (never needs the token) |
//!
//! `HEAD` is answered as `GET`; other methods get 405, other paths 404.
//! With a token ([`check_listen`]: required off loopback), every route but
//! `/healthz` needs `Authorization: Bearer TOKEN`, else 401. Every response
//! carries a Content-Security-Policy that allows no script, no external
//! resource and no framing, `X-Content-Type-Options: nosniff` and
//! `Cache-Control: no-store`. Messages are passed through
//! [`crate::redact`] before they are shown. Request bodies are never read;
//! a client gets [`HEADER_TIMEOUT`] to send its request head, and a
//! connection is closed (after its request in flight) past
//! [`CONNECTION_LIFETIME`]; at most [`MAX_CONNECTIONS`] are served at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lifeboat_ops::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::status::Status;

/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection is kept (keep-alive included) before it is
/// closed after its current request.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;

/// The Content-Security-Policy of every response: no script at all,
/// inline styles and `data:` images only.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'";

/// What the listener serves; the agent implements it (for
/// [`crate::agent::Shared`] below). Called on a blocking thread for each
/// request.
pub trait Content: Send + Sync + 'static {
    /// The metrics now, in Prometheus' text format.
    fn metrics(&self) -> String;
    /// The status now.
    fn status(&self) -> Status;
}

impl Content for crate::agent::Shared {
    fn metrics(&self) -> String {
        crate::agent::Shared::metrics(self)
    }

    fn status(&self) -> Status {
        crate::agent::Shared::status(self)
    }
}

/// The listener's settings, checked ([`check_listen`]).
#[derive(Clone, Debug)]
pub struct Listen {
    /// The address to bind.
    pub addr: SocketAddr,
    /// The bearer token every route but `/healthz` requires, when set.
    pub token: Option<String>,
    /// Things to log (a token file others can read).
    pub warnings: Vec<String>,
}

/// Checks `[agent] listen` and `listen_token_file`: `addr` is `host:port`
/// (a name resolves to its first address; all of them must be loopback
/// for a loopback listener); an address that is not loopback is refused
/// without a token file. The token is the file's first line (surrounding
/// whitespace trimmed), and must not be empty. A token file that group or
/// others can read is accepted with a warning.
pub fn check_listen(addr: &str, token_file: Option<&Path>) -> Result<Listen, Error> {
    let addrs: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => addr
            .to_socket_addrs()
            .map_err(|e| {
                Error::usage_because(
                    format!("[agent] listen = {addr:?} is not a host:port this machine can bind"),
                    e,
                )
            })?
            .collect(),
    };
    let Some(&first) = addrs.first() else {
        return Err(Error::usage(format!(
            "[agent] listen = {addr:?} resolves to no address"
        )));
    };
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    let mut warnings = Vec::new();
    let token = match token_file {
        None if !loopback => {
            return Err(Error::usage(format!(
                "[agent] listen = {addr:?} is not a loopback address: set [agent] listen_token_file to a file holding the bearer token clients must send (or listen on 127.0.0.1)"
            )))
        }
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::usage_because(
                    format!(
                        "[agent] listen_token_file {} cannot be read",
                        path.display()
                    ),
                    e,
                )
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(Error::usage(format!(
                    "[agent] listen_token_file {}: its first line (the bearer token) is empty",
                    path.display()
                )));
            }
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    warnings.push(format!(
                        "[agent] listen_token_file {} can be read by other users (mode {:o}): chmod 600 it",
                        path.display(),
                        mode & 0o777
                    ));
                }
            }
            Some(token)
        }
    };
    Ok(Listen {
        addr: first,
        token,
        warnings,
    })
}

/// Binds `listen.addr` now (so that a taken port fails the agent's start,
/// before systemd hears READY=1) and serves `content` there on `handle`'s
/// runtime until `stop` turns true or its sender is dropped. Returns the
/// bound address (port 0 picks a free one).
pub fn start(
    handle: &tokio::runtime::Handle,
    listen: &Listen,
    content: Arc<dyn Content>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    let bind = |e| {
        Error::usage_because(
            format!(
                "[agent] listen = {}: the listener cannot be bound",
                listen.addr
            ),
            e,
        )
    };
    let std_listener = std::net::TcpListener::bind(listen.addr).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let addr = std_listener.local_addr().map_err(bind)?;
    let listener = {
        let _entered = handle.enter();
        TcpListener::from_std(std_listener).map_err(bind)?
    };
    handle.spawn(serve(listener, listen.token.clone(), content, async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    }));
    Ok(addr)
}

/// Serves `content` on `listener` until `shutdown` completes; then stops
/// accepting and drops the connections still open (nothing they do
/// changes state). A failed accept (too many open files) is logged and
/// retried after a pause.
pub async fn serve(
    listener: TcpListener,
    token: Option<String>,
    content: Arc<dyn Content>,
    shutdown: impl Future<Output = ()>,
) {
    let token: Option<Arc<[u8]>> = token.map(|t| Arc::from(t.into_bytes()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            a = accept(&listener, &slots) => a,
        };
        let Some((stream, permit)) = accepted else {
            continue;
        };
        let token = token.clone();
        let content = content.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let token = token.clone();
                let content = content.clone();
                async move {
                    let head = req.into_parts().0;
                    Ok::<_, Infallible>(respond(head, token, content).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        });
    }
    connections.shutdown().await;
}

/// The next connection, once a slot is free; `None` after a failed accept.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(e) => {
            tracing::warn!(error = %e, "the HTTP listener could not accept a connection");
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        }
    }
}

/// Whether `given` equals `expected`, in a time that depends on
/// `expected`'s length only.
fn same_token(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Whether the request's `Authorization` is `Bearer TOKEN`.
fn authorized(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(scheme) = value.get(..7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && same_token(token, value[7..].trim_ascii())
}

async fn respond(
    head: hyper::http::request::Parts,
    token: Option<Arc<[u8]>>,
    content: Arc<dyn Content>,
) -> Response<Full<Bytes>> {
    let path = head.uri.path();
    if path != "/healthz" {
        if let Some(token) = &token {
            if !authorized(&head.headers, token) {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "a bearer token is required: Authorization: Bearer <the token of [agent] listen_token_file>\n".into(),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"lifeboat\""),
                );
                return r;
            }
        }
    }
    if head.method != Method::GET && head.method != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "read-only: only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let route = match path {
        "/" => Route::Page,
        "/metrics" => Route::Metrics,
        "/api/status" => Route::Status,
        "/healthz" => {
            return reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into());
        }
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: try /, /metrics, /api/status or /healthz\n".into(),
            );
        }
    };
    let made = tokio::task::spawn_blocking(move || match route {
        Route::Page => (
            "text/html; charset=utf-8",
            crate::page::render(&content.status()),
        ),
        Route::Metrics => (crate::metrics::CONTENT_TYPE, content.metrics()),
        Route::Status => {
            let json = serde_json::to_string_pretty(&content.status().redacted())
                .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
            ("application/json", json + "\n")
        }
    })
    .await;
    match made {
        Ok((ty, body)) => reply(StatusCode::OK, ty, body),
        Err(e) => {
            tracing::error!(error = %e, "the HTTP listener failed to make a response");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "internal error\n".into(),
            )
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Page,
    Metrics,
    Status,
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"ab"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"abc", b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_the_token_exact() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, b"t0k"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0k"),
        );
        assert!(authorized(&h, b"t0k"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer t0k"),
        );
        assert!(authorized(&h, b"t0k"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(!authorized(&h, b"t0k"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0kk"),
        );
        assert!(!authorized(&h, b"t0k"));
    }

    #[test]
    fn off_loopback_a_token_file_is_required() {
        let e = check_listen("0.0.0.0:9847", None).unwrap_err();
        assert_eq!(e.class(), lifeboat_ops::ErrorClass::Usage);
        assert!(e.to_string().contains("listen_token_file"), "{e}");
        let l = check_listen("127.0.0.1:9847", None).unwrap();
        assert!(l.token.is_none() && l.warnings.is_empty());
        let l = check_listen("[::1]:0", None).unwrap();
        assert!(l.addr.ip().is_loopback());
        assert!(check_listen("no port", None).is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cr3t-token \nsecond line\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = check_listen("0.0.0.0:9847", Some(&file)).unwrap();
        assert_eq!(l.token.as_deref(), Some("s3cr3t-token"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let l = check_listen("0.0.0.0:9847", Some(&file)).unwrap();
        assert!(l.warnings[0].contains("chmod 600"), "{:?}", l.warnings);

        std::fs::write(&file, "\n").unwrap();
        let e = check_listen("0.0.0.0:9847", Some(&file)).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = check_listen("0.0.0.0:9847", Some(&dir.path().join("none"))).unwrap_err();
        assert_eq!(e.class(), lifeboat_ops::ErrorClass::Usage);
    }
}
