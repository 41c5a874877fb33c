//! The listener and the status page: plain HTTP (routes, the bearer token,
//! security headers, a slow client) and the page in real headless Chromium
//! (`scripts/browser/check-page.mjs`), its figures checked against the model.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use lifeboat_agent::http::{self, Content};
use lifeboat_agent::sample::{self, Sample};
use lifeboat_agent::status::{
    AlertStatus, BackupPoint, FailurePoint, Health, JobStatus, RunSummary, SourceStatus, Status,
};
use serde_json::Value;

const TOKEN: &str = "t0ken-for-the-test";
const EVIL: &str = "<script>alert(\"pwned\")</script>";

/// A fixed status, served as is.
struct Fixed(Status);

impl Content for Fixed {
    fn metrics(&self) -> String {
        lifeboat_agent::metrics::encode(&[Sample {
            name: sample::BUILD_INFO,
            labels: vec![("version", "0.1.0".into())],
            value: 1.0,
        }])
    }

    fn status(&self) -> Status {
        self.0.clone()
    }
}

/// `http::serve` on 127.0.0.1:0 in a runtime of its own, stopped on drop.
struct Server {
    addr: SocketAddr,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    fn start(status: Status, token: Option<&str>) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(http::serve(
            listener,
            token.map(String::from),
            Arc::new(Fixed(status)),
            async {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            rt,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let stopped = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
            if !std::thread::panicking() {
                assert!(stopped.is_ok(), "serve did not return after shutdown");
            }
        }
    }
}

/// One HTTP/1.1 response, read whole (`Connection: close`).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: lifeboat\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 5\r\n\r\nhello");
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn point(now: Timestamp, ty: &str, age: SignedDuration, size: u64, secs: f64) -> BackupPoint {
    let time = now - age;
    BackupPoint {
        ty: ty.into(),
        time,
        age_seconds: age.as_secs_f64(),
        size_bytes: size,
        stored_bytes: size / 20,
        duration_seconds: secs,
        snapshot: Some(format!("{:064x}", time.as_second())),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Four sources: green (90 days of fulls and incrementals), amber (a failed
/// run after a good one, a password in its error), red with a `<script>`
/// name and a connection string in its error and no backup at all, red
/// past its RPO; two alerts; a job log.
fn fixture() -> Status {
    let now = at("2026-11-28T16:00:00Z");
    let h = SignedDuration::from_hours;
    let m = SignedDuration::from_mins;
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    // postgres/main: a full every day at 02:00, incrementals at 06, 10, 14.
    let mut main_history = Vec::new();
    for day in (0..90i64).rev() {
        let base = h(14 + 24 * day);
        let grow = (90 - day) as u64;
        if day != 40 {
            main_history.push(point(
                now,
                "full",
                base,
                GIB + grow * 4 * MIB,
                200.0 + (day % 7) as f64 * 15.0,
            ));
        }
        for k in 1..=3 {
            let age = base - h(4 * k);
            if age > h(0) {
                main_history.push(point(
                    now,
                    "incr",
                    age,
                    60 * MIB + (day % 5) as u64 * 9 * MIB,
                    40.0 + (k * 5) as f64,
                ));
            }
        }
    }
    main_history.retain(|p| p.age_seconds <= 90.0 * 86400.0);
    let main_last = point(now, "incr", h(3) + m(12), 87 * MIB, 52.5);
    main_history.retain(|p| p.time < main_last.time);
    main_history.push(main_last.clone());

    let mut cache_history = Vec::new();
    for i in (1..=120i64).rev() {
        cache_history.push(point(
            now,
            "backup",
            h(2 + 6 * (i - 1)),
            300 * MIB + (i % 9) as u64 * 3 * MIB,
            8.0 + (i % 4) as f64,
        ));
    }
    let cache_last = cache_history.last().cloned();

    let mut etc_history = Vec::new();
    for i in (0..10i64).rev() {
        etc_history.push(point(
            now,
            "backup",
            h(24 * (3 + 6 * i) + 1),
            12 * MIB,
            3.25,
        ));
    }
    let etc_last = etc_history.last().cloned();

    let evil_error = "could not connect to postgresql://u:secret@h/db: FATAL: password authentication failed for user \"u\"";
    let cache_error =
        "redis server at host=10.0.0.5 password=secret unreachable: connection refused";
    Status {
        generated: now,
        hostname: "db1.example".into(),
        version: "0.1.0".into(),
        repository_up: true,
        sources: vec![
            SourceStatus {
                kind: "postgres".into(),
                name: "main".into(),
                health: Health::Green,
                reason: "last good backup 3 h 12 min ago".into(),
                rpo_seconds: 25 * 3600,
                last_good: Some(main_last),
                last_failure: None,
                next_run: Some(now + m(48)),
                wal_age_seconds: Some(40.0),
                wal_archiver_lag_seconds: Some(2.5),
                history: main_history,
            },
            SourceStatus {
                kind: "redis".into(),
                name: "cache".into(),
                health: Health::Amber,
                reason: format!("last run failed: {cache_error}"),
                rpo_seconds: 7 * 3600,
                last_good: cache_last,
                last_failure: Some(FailurePoint {
                    ty: "backup".into(),
                    time: now - m(20),
                    error: cache_error.into(),
                }),
                next_run: Some(now + h(3) + m(40)),
                wal_age_seconds: None,
                wal_archiver_lag_seconds: None,
                history: cache_history,
            },
            SourceStatus {
                kind: "postgres".into(),
                name: EVIL.into(),
                health: Health::Red,
                reason: format!("no good backup; last run failed: {evil_error}"),
                rpo_seconds: 25 * 3600,
                last_good: None,
                last_failure: Some(FailurePoint {
                    ty: "full".into(),
                    time: now - m(5),
                    error: evil_error.into(),
                }),
                next_run: Some(now + h(10)),
                wal_age_seconds: None,
                wal_archiver_lag_seconds: None,
                history: Vec::new(),
            },
            SourceStatus {
                kind: "files".into(),
                name: "etc".into(),
                health: Health::Red,
                reason: "last good backup 3 d 1 h ago, over the RPO of 1 d 1 h".into(),
                rpo_seconds: 25 * 3600,
                last_good: etc_last,
                last_failure: None,
                next_run: None,
                wal_age_seconds: None,
                wal_archiver_lag_seconds: None,
                history: etc_history,
            },
        ],
        jobs: vec![
            JobStatus {
                job: "postgres.main.full".into(),
                schedule: "0 2 * * *".into(),
                next_run: Some(now + h(10)),
                running: false,
                last_outcome: Some("success".into()),
                last_run: Some(now - h(14)),
            },
            JobStatus {
                job: "postgres.main.incr".into(),
                schedule: "0 */4 * * *".into(),
                next_run: Some(now + m(48)),
                running: true,
                last_outcome: Some("success".into()),
                last_run: Some(now - h(3) - m(12)),
            },
            JobStatus {
                job: "redis.cache.backup".into(),
                schedule: "0 */6 * * *".into(),
                next_run: Some(now + h(3) + m(40)),
                running: false,
                last_outcome: Some("failed".into()),
                last_run: Some(now - m(20)),
            },
        ],
        alerts: vec![
            AlertStatus {
                alertname: "LifeboatBackupFailed".into(),
                severity: "critical".into(),
                labels: labels(&[("source", EVIL), ("kind", "postgres"), ("type", "full")]),
                summary: format!("the full backup of postgres/{EVIL} failed: {evil_error}"),
                since: now - m(5),
                firing: true,
            },
            AlertStatus {
                alertname: "LifeboatBackupTooOld".into(),
                severity: "critical".into(),
                labels: labels(&[("source", "etc"), ("kind", "files")]),
                summary: "the newest good backup of files/etc is 3 d 1 h old (over 25 h)".into(),
                since: now - h(48),
                firing: true,
            },
        ],
        recent: vec![
            RunSummary {
                job: format!("postgres.{EVIL}.full"),
                outcome: "failed".into(),
                started: now - m(6),
                duration_seconds: 1.5,
                error: Some(evil_error.into()),
                snapshot: None,
                hostname: "db1.example".into(),
            },
            RunSummary {
                job: "redis.cache.backup".into(),
                outcome: "failed".into(),
                started: now - m(21),
                duration_seconds: 30.0,
                error: Some(cache_error.into()),
                snapshot: None,
                hostname: "db1.example".into(),
            },
            RunSummary {
                job: "postgres.main.incr".into(),
                outcome: "success".into(),
                started: now - h(3) - m(13),
                duration_seconds: 52.5,
                error: None,
                snapshot: Some(
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                ),
                hostname: "db1.example".into(),
            },
            RunSummary {
                job: "postgres.main.incr".into(),
                outcome: "skipped".into(),
                started: now - h(4),
                duration_seconds: 0.0,
                error: None,
                snapshot: None,
                hostname: "db1.example".into(),
            },
            RunSummary {
                job: "repository.verify".into(),
                outcome: "timeout".into(),
                started: now - h(30),
                duration_seconds: 21600.0,
                error: Some("stopped after the job timeout of 6 h".into()),
                snapshot: None,
                hostname: "db2.example".into(),
            },
        ],
        replicas: vec![lifeboat_agent::status::ReplicaView {
            name: "dr-eu".into(),
            up: Some(true),
            lag_seconds: Some(42.0),
        }],
        cost: Some(lifeboat_agent::status::CostView {
            prices_source: "AWS S3 list prices, us-east-1".into(),
            repositories: vec![
                ("default".into(), 4.62, 201 << 30),
                ("dr-eu".into(), 4.62, 201 << 30),
            ],
            monthly_total: 9.24,
            baseline_monthly: 61.8,
            baseline_ratio: 13.4,
            measured: now,
        }),
        key_epoch: Some(lifeboat_agent::status::KeyEpochView {
            age_seconds: 30.0 * 86400.0,
            rotate_after_seconds: Some(90.0 * 86400.0),
        }),
    }
}

const SECURITY_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
];

fn assert_secure(r: &Reply, what: &str) {
    for (name, want) in SECURITY_HEADERS {
        let got = r
            .header(name)
            .unwrap_or_else(|| panic!("{what}: no {name} header"));
        assert!(got.starts_with(want), "{what}: {name}: {got}");
    }
    let csp = r.header("Content-Security-Policy").unwrap_or("");
    assert!(!csp.contains("script-src"), "{what}: {csp}");
}

#[test]
fn routes_require_the_token_and_are_read_only() {
    let status = fixture();
    let server = Server::start(status.clone(), Some(TOKEN));
    let a = server.addr;

    for path in ["/", "/metrics", "/api/status", "/nowhere"] {
        let r = request(a, "GET", path, None);
        assert_eq!(r.status, 401, "GET {path} without a token");
        assert!(
            r.header("WWW-Authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}"
        );
        assert!(!r.body.contains("secret"));
        assert_secure(&r, path);
        let r = request(a, "GET", path, Some("t0ken-for-the-tesT"));
        assert_eq!(r.status, 401, "GET {path} with a wrong token");
    }
    // The health check needs no token, and says nothing else.
    let r = request(a, "GET", "/healthz", None);
    assert_eq!((r.status, r.body.trim()), (200, "ok"));

    let r = request(a, "GET", "/", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_secure(&r, "/");
    assert!(r.body.contains("data-source=\"postgres/main\""));
    assert!(!r.body.contains("secret"), "a password on the page");
    assert!(
        !r.body.to_lowercase().contains("<script"),
        "a raw <script> on the page"
    );

    let r = request(a, "HEAD", "/", Some(TOKEN));
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    let r = request(a, "GET", "/metrics", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.body.contains("lifeboat_build_info{version=\"0.1.0\"} 1"),
        "{}",
        r.body
    );
    assert_secure(&r, "/metrics");

    let r = request(a, "GET", "/api/status", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(!r.body.contains("secret"), "a password in the JSON");
    let json: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json, serde_json::to_value(status.redacted()).unwrap());
    assert_eq!(json["sources"][2]["name"], EVIL);
    assert!(json["recent"][0]["error"]
        .as_str()
        .unwrap()
        .contains("postgresql://u:***@h/db"));

    // Read-only: anything but GET and HEAD is refused, whatever the path.
    for path in ["/", "/metrics", "/api/status"] {
        let r = request(a, "POST", path, Some(TOKEN));
        assert_eq!(r.status, 405, "POST {path}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        assert_secure(&r, path);
    }
    let r = request(a, "DELETE", "/api/status", Some(TOKEN));
    assert_eq!(r.status, 405);

    let r = request(a, "GET", "/admin", Some(TOKEN));
    assert_eq!(r.status, 404);
    assert_secure(&r, "/admin");
}

#[test]
fn on_loopback_without_a_token_file_no_token_is_asked() {
    let server = Server::start(fixture(), None);
    let r = request(server.addr, "GET", "/", None);
    assert_eq!(r.status, 200);
    let r = request(server.addr, "GET", "/api/status", None);
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_that_never_finishes_its_request_is_cut_off() {
    let server = Server::start(fixture(), Some(TOKEN));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: lifeboat\r\n")
        .unwrap();
    // The server closes the connection after HEADER_TIMEOUT; this read's
    // own limit is only the test's deadline.
    s.set_read_timeout(Some(http::HEADER_TIMEOUT * 3)).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let res = s.read_to_end(&mut buf);
    assert!(
        !matches!(&res, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the connection was still open after {:?}",
        started.elapsed()
    );
    // Nothing was served to it.
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // And the server still answers others.
    assert_eq!(request(server.addr, "GET", "/healthz", None).status, 200);
}

#[test]
fn start_binds_at_once_and_stops_when_told() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listen = http::check_listen("127.0.0.1:0", None).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let addr = http::start(rt.handle(), &listen, Arc::new(Fixed(fixture())), rx).unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(request(addr, "GET", "/healthz", None).status, 200);
    // A taken port fails at once, naming the setting.
    let taken = http::check_listen(&addr.to_string(), None).unwrap();
    let (_tx2, rx2) = tokio::sync::watch::channel(false);
    let e = http::start(rt.handle(), &taken, Arc::new(Fixed(fixture())), rx2).unwrap_err();
    assert!(e.to_string().contains("[agent] listen"), "{e}");
    // Told to stop, it stops accepting.
    tx.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository's `target/`, where artefacts are kept.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_path_buf()
}

/// Runs `scripts/browser/check-page.mjs` and returns its JSON.
fn check_page(url: &str, shot: &Path, token: Option<&str>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/browser/check-page.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(url).arg(shot);
    if let Some(t) = token {
        cmd.arg(t);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node cannot be started ({e}): run scripts/test.sh, which installs Chromium and playwright-core"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check-page.mjs did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(
        code.success(),
        "check-page.mjs failed ({code}): {stderr}\n(run scripts/test.sh: it installs Chromium and playwright-core)"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[test]
fn the_status_page_in_chromium_shows_the_models_figures() {
    let status = fixture();
    let server = Server::start(status.clone(), Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("status-page.png");

    // Without the token the browser gets 401 and no figure.
    let denied = check_page(&server.url("/"), &dir.path().join("denied.png"), None);
    assert_eq!(denied["http_status"], 401);
    assert_eq!(denied["sources"].as_array().map(Vec::len), Some(0));

    let page = check_page(&server.url("/"), &shot, Some(TOKEN));
    assert_eq!(page["http_status"], 200);
    assert_eq!(
        page["console_errors"],
        Value::Array(vec![]),
        "errors in the browser"
    );
    assert_eq!(page["script_elements"], 0);
    assert_eq!(page["generated"], status.generated.to_string());
    assert_eq!(page["hostname"], "db1.example");
    assert_eq!(page["repository_up"], true);
    assert_eq!(page["attention"], 3);
    assert_eq!(page["headline"], "3 sources need attention");

    // Every source, in order, with the model's figures.
    let sources = page["sources"].as_array().unwrap();
    assert_eq!(sources.len(), status.sources.len());
    for (got, want) in sources.iter().zip(&status.sources) {
        let key = format!("{}/{}", want.kind, want.name);
        assert_eq!(got["source"], key.as_str());
        // The <script> name is shown as text, not run.
        assert_eq!(got["name"], want.name.as_str());
        let health = serde_json::to_value(want.health).unwrap();
        assert_eq!(got["health"], health, "{key}");
        let word = match want.health {
            Health::Green => "Protected",
            Health::Amber => "At risk",
            Health::Red => "Unprotected",
        };
        assert_eq!(got["badge"], word, "{key}");
        assert_eq!(f(&got["rpo_seconds"]), Some(want.rpo_seconds as f64));
        let g = want.last_good.as_ref();
        assert_eq!(f(&got["age_seconds"]), g.map(|g| g.age_seconds), "{key}");
        assert_eq!(
            f(&got["size_bytes"]),
            g.map(|g| g.size_bytes as f64),
            "{key}"
        );
        assert_eq!(
            f(&got["duration_seconds"]),
            g.map(|g| g.duration_seconds),
            "{key}"
        );
        assert_eq!(
            got["backup_type"].as_str(),
            g.map(|g| g.ty.as_str()),
            "{key}"
        );
        assert_eq!(
            got["next_run"].as_str().map(String::from),
            want.next_run.map(|t| t.to_string()),
            "{key}"
        );
        assert_eq!(f(&got["wal_age_seconds"]), want.wal_age_seconds, "{key}");
        assert_eq!(
            f(&got["wal_lag_seconds"]),
            want.wal_archiver_lag_seconds,
            "{key}"
        );
        assert!(!got["reason"].as_str().unwrap().contains("secret"), "{key}");
        // The chart: drawn by Chromium with one bar per backup, or the
        // empty state.
        if want.history.is_empty() {
            assert!(got["chart"].is_null(), "{key}");
            assert_eq!(got["chart_empty"], true, "{key}");
        } else {
            let c = &got["chart"];
            assert_eq!(f(&c["points"]), Some(want.history.len() as f64), "{key}");
            assert!(f(&c["width"]).unwrap() > 100.0, "{key}: {c}");
            assert!(f(&c["height"]).unwrap() > 50.0, "{key}: {c}");
            assert!(
                f(&c["marks"]).unwrap() >= want.history.len() as f64,
                "{key}: {c}"
            );
        }
    }
    assert_eq!(
        sources[2]["alerts"],
        serde_json::json!(["LifeboatBackupFailed"])
    );

    // The alerts firing.
    let alerts: Vec<(&str, &str)> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        alerts,
        [
            ("LifeboatBackupFailed", EVIL),
            ("LifeboatBackupTooOld", "etc")
        ]
    );

    // The job log, newest first, failures with their (redacted) messages.
    let log = page["log"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r["job"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = status
        .recent
        .iter()
        .map(|r| (r.job.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, want);
    assert_eq!(
        log[0]["error"],
        "could not connect to postgresql://u:***@h/db: FATAL: password authentication failed for user \"u\""
    );
    assert_eq!(
        log[1]["error"],
        "redis server at host=10.0.0.5 password=*** unreachable: connection refused"
    );
    assert_eq!(
        page["schedule"][1],
        serde_json::json!({"job": "postgres.main.incr", "next_run": status.jobs[1].next_run.unwrap().to_string(), "running": true})
    );

    // No password and no raw <script> anywhere in what was served.
    let html = request(server.addr, "GET", "/", Some(TOKEN)).body;
    assert!(!html.contains("secret"));
    assert!(!html.to_lowercase().contains("<script"));

    // The screenshot, kept as an artefact.
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert!(png.len() > 50_000, "a {} byte screenshot", png.len());
    let height = f(&page["page_size"]["height"]).unwrap();
    assert!(height > 900.0, "the page is {height} px high");
    let keep = target_dir().join("test-artefacts");
    std::fs::create_dir_all(&keep).unwrap();
    let kept = keep.join("status-page.png");
    std::fs::copy(&shot, &kept).unwrap();
    println!("status page screenshot: {}", kept.display());
}
