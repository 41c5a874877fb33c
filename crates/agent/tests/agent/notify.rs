//! Notifications delivered for real on loopback: a tiny HTTP receiver that
//! records what it is sent (and fails the first requests when told to), a
//! receiver that never answers, and command targets writing what they got
//! to files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use lifeboat_agent::notify::{Format, Notifier, NotifierSettings, RetryPolicy, Target, TargetKind};
use lifeboat_agent::rules::{Alert, AlertSettings, Evaluator};
use lifeboat_agent::sample::{self as m, Sample};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A real alert: the evaluator's, on a failed full backup of `main`.
fn failed_backup(now: Timestamp) -> Vec<Alert> {
    let l = || {
        vec![
            ("source", "main".to_string()),
            ("kind", "postgres".to_string()),
            ("type", "full".to_string()),
        ]
    };
    let samples = [
        Sample {
            name: m::BACKUP_LAST_SUCCESS,
            labels: l(),
            value: 1000.0,
        },
        Sample {
            name: m::BACKUP_LAST_FAILURE,
            labels: l(),
            value: 2000.0,
        },
    ];
    let mut ev = Evaluator::new(&AlertSettings::default());
    ev.evaluate(&samples, now);
    let firing = ev.firing_alerts();
    assert_eq!(firing.len(), 1);
    firing
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

/// An HTTP receiver on loopback that records request bodies and answers
/// 500 to the first `fail_first` requests, 200 after.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook?token=s3cret",
        listener.local_addr().unwrap()
    );
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (b, r) = (bodies.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (b, r) = (b.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                let n = r.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail_first {
                    "500 Internal Server Error"
                } else {
                    b.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).expect("a JSON body"));
                    "200 OK"
                };
                let resp =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Receiver {
        url,
        bodies,
        requests,
    }
}

fn webhook(name: &str, url: &str, format: Format) -> Target {
    Target {
        name: name.into(),
        kind: TargetKind::Webhook {
            url: url.into(),
            format,
        },
        timeout: Duration::from_secs(5),
        send_resolved: true,
    }
}

fn quick(attempts: u32) -> NotifierSettings {
    NotifierSettings {
        retry: RetryPolicy {
            attempts,
            first_backoff: Duration::from_millis(10),
        },
        external_url: "http://127.0.0.1:9847/".into(),
        ..NotifierSettings::default()
    }
}

fn start(targets: Vec<Target>, settings: NotifierSettings) -> Notifier {
    Notifier::start(targets, settings, &tokio::runtime::Handle::current()).unwrap()
}

fn count(n: &Notifier, target: &str, outcome: &str) -> u64 {
    n.counts()
        .get(&(target.to_string(), outcome.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Waits until `what` holds, failing after 30 s.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_alertmanagers_payload_after_retries() {
    let rx = receiver(2).await;
    let n = start(
        vec![webhook("ops", &rx.url, Format::Alertmanager)],
        quick(5),
    );
    assert_eq!(n.send(t0(), &failed_backup(t0())), 1);
    wait_for("delivery", || count(&n, "ops", "delivered") == 1).await;
    assert_eq!(rx.requests.load(Ordering::SeqCst), 3, "two 500s, then 200");
    assert_eq!(count(&n, "ops", "failed"), 0);
    let body = rx.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["externalURL"], "http://127.0.0.1:9847/");
    assert_eq!(body["groupLabels"]["alertname"], "LifeboatBackupFailed");
    assert_eq!(body["commonLabels"]["severity"], "critical");
    let a = &body["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "LifeboatBackupFailed");
    assert_eq!(a["labels"]["source"], "main");
    assert_eq!(a["labels"]["type"], "full");
    assert_eq!(
        a["annotations"]["summary"],
        "full backup of postgres source main failed"
    );
    assert_eq!(a["startsAt"], t0().to_string());
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["fingerprint"].as_str().map(str::len), Some(16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_webhook_gets_a_readable_message() {
    let rx = receiver(0).await;
    let n = start(vec![webhook("chat", &rx.url, Format::Slack)], quick(1));
    n.send(t0(), &failed_backup(t0()));
    wait_for("delivery", || count(&n, "chat", "delivered") == 1).await;
    let body = rx.bodies.lock().unwrap()[0].clone();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "[FIRING] LifeboatBackupFailed (critical): full backup of postgres source main failed\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("lifeboat jobs --source main --failed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_once_repeated_after_repeat_interval_resolved_once() {
    let rx = receiver(0).await;
    let mut quiet = webhook("firing-only", &rx.url, Format::Alertmanager);
    quiet.send_resolved = false;
    let n = start(
        vec![webhook("all", &rx.url, Format::Alertmanager), quiet],
        NotifierSettings {
            repeat_interval: Duration::from_secs(4 * 3600),
            ..quick(1)
        },
    );
    let firing = failed_backup(t0());
    let at = |mins: i64| t0() + SignedDuration::from_mins(mins);
    assert_eq!(n.send(at(0), &firing), 2, "to both targets");
    assert_eq!(n.send(at(1), &firing), 0, "de-duplicated");
    assert_eq!(n.send(at(239), &firing), 0);
    assert_eq!(n.send(at(240), &firing), 2, "repeated after 4 h");
    assert_eq!(
        n.send(at(241), &[]),
        1,
        "resolved, to send_resolved targets"
    );
    assert_eq!(n.send(at(242), &[]), 0, "resolved once");
    wait_for("deliveries", || {
        count(&n, "all", "delivered") == 3 && count(&n, "firing-only", "delivered") == 2
    })
    .await;
    let bodies = rx.bodies.lock().unwrap().clone();
    let mut by_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &bodies {
        by_target
            .entry(b["receiver"].as_str().unwrap().to_string())
            .or_default()
            .push(b["status"].as_str().unwrap().to_string());
    }
    let mut all = by_target["all"].clone();
    all.sort();
    assert_eq!(all, ["firing", "firing", "resolved"]);
    assert_eq!(by_target["firing-only"], ["firing", "firing"]);
    let resolved = bodies.iter().find(|b| b["status"] == "resolved").unwrap();
    assert_eq!(resolved["alerts"][0]["endsAt"], at(241).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_gets_the_alert_on_stdin_and_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert");
    let script = "cat > \"$0.json\"; env | grep '^LIFEBOAT_ALERT_' | sort > \"$0.env\"";
    let target = |name: &str, argv: Vec<String>| Target {
        name: name.into(),
        kind: TargetKind::Command { argv },
        timeout: Duration::from_secs(10),
        send_resolved: true,
    };
    let n = start(
        vec![
            target(
                "script",
                vec![
                    "sh".into(),
                    "-c".into(),
                    script.into(),
                    out.display().to_string(),
                ],
            ),
            target(
                "broken",
                vec![
                    "sh".into(),
                    "-c".into(),
                    "echo pager refused >&2; exit 3".into(),
                ],
            ),
        ],
        quick(2),
    );
    assert_eq!(n.send(t0(), &failed_backup(t0())), 2);
    wait_for("the command's delivery", || {
        count(&n, "script", "delivered") == 1 && count(&n, "broken", "failed") == 1
    })
    .await;
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(json["status"], "firing");
    assert_eq!(json["labels"]["source"], "main");
    assert_eq!(
        json["annotations"]["summary"],
        "full backup of postgres source main failed"
    );
    let env = std::fs::read_to_string(out.with_extension("env")).unwrap();
    for line in [
        "LIFEBOAT_ALERT_NAME=LifeboatBackupFailed",
        "LIFEBOAT_ALERT_SEVERITY=critical",
        "LIFEBOAT_ALERT_SOURCE=main",
        "LIFEBOAT_ALERT_STATUS=firing",
        "LIFEBOAT_ALERT_SUMMARY=full backup of postgres source main failed",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }
    let e = n.last_error("broken").unwrap();
    assert!(e.contains("pager refused"), "{e}");
    assert!(e.contains("2 attempts"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_blocks_nothing_and_is_counted_failed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook?token=s3cret",
        listener.local_addr().unwrap()
    );
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h.lock().unwrap().push(sock); // read nothing, answer nothing
        }
    });
    let mut t = webhook("silent", &url, Format::Alertmanager);
    t.timeout = Duration::from_millis(300);
    let n = start(vec![t], quick(2));
    // send only queues: it returns while the receiver holds the request.
    assert_eq!(n.send(t0(), &failed_backup(t0())), 1);
    assert_eq!(count(&n, "silent", "failed"), 0);
    wait_for("the failure", || count(&n, "silent", "failed") == 1).await;
    assert_eq!(count(&n, "silent", "delivered"), 0);
    wait_for("both attempts to have reached it", || {
        held.lock().unwrap().len() == 2
    })
    .await;
    let e = n.last_error("silent").unwrap();
    assert!(e.contains("no answer within 300ms"), "{e}");
    assert!(!e.contains("s3cret") && !e.contains("127.0.0.1"), "{e}");
}
