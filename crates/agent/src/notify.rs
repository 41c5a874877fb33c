//! Notifications of the agent's own alerts (`[[notify]]`), for teams that
//! run no Alertmanager — and shaped so that receivers built for one work
//! unchanged.
//!
//! - `webhook`: a JSON POST. `format = "alertmanager"` (default) is
//!   Alertmanager's webhook payload, version 4; `format = "slack"` is an
//!   incoming-webhook message (`{"text": ...}`).
//! - `command`: runs a program with the alert as JSON on standard input
//!   (one element of the Alertmanager payload's `alerts`) and in
//!   `LIFEBOAT_ALERT_NAME`, `LIFEBOAT_ALERT_STATUS`,
//!   `LIFEBOAT_ALERT_SEVERITY`, `LIFEBOAT_ALERT_SUMMARY` and
//!   `LIFEBOAT_ALERT_SOURCE`; a non-zero exit is a failed delivery.
//!
//! Repeats and de-duplication follow Alertmanager ([`Repeats`], pure): an
//! alert is sent when it starts firing, again every `repeat_interval` while
//! it fires, and once when resolved (to targets with `send_resolved`).
//! [`Notifier::send`] never blocks: deliveries go through a bounded queue
//! to a background task that retries each with backoff, then logs and
//! counts the failure (`lifeboat_notifications_total`). A webhook's URL may
//! hold a token: it is never logged, shown or counted, only the target's
//! name.
//!
//! Wiring, after each refresh of the samples:
//!
//! ```ignore
//! let settings = AlertSettings::from_config(&cfg.alerts)?;
//! let mut evaluator = Evaluator::new(&settings);
//! let notifier = Notifier::start(
//!     Target::from_config(&cfg.notify)?,
//!     NotifierSettings { repeat_interval: settings.repeat_interval, ..Default::default() },
//!     runtime.handle(),
//! )?;
//! // each refresh:
//! evaluator.evaluate(&knowledge.samples(version), now);
//! notifier.send(now, &evaluator.firing_alerts());
//! knowledge.alerts = evaluator.firing();
//! knowledge.notifications = notifier.counts();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_ops::config::NotifySection;
use lifeboat_ops::Error;
use serde_json::{json, Value};

use crate::rules::{Alert, AlertState};

/// A webhook's body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Alertmanager's webhook payload, version 4.
    Alertmanager,
    /// A Slack (or Mattermost, Rocket.Chat) incoming-webhook message.
    Slack,
}

/// Where a target delivers.
#[derive(Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// POST to a URL.
    Webhook {
        /// The URL (may hold a token: never shown).
        url: String,
        /// The body's format.
        format: Format,
    },
    /// Run a program.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

impl std::fmt::Debug for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetKind::Webhook { format, .. } => f
                .debug_struct("Webhook")
                .field("url", &"<hidden>")
                .field("format", format)
                .finish(),
            TargetKind::Command { argv } => f.debug_struct("Command").field("argv", argv).finish(),
        }
    }
}

/// One `[[notify]]` target, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its name in logs and metrics (`webhook-1` when the config gives
    /// none: the kind and the entry's position).
    pub name: String,
    /// What it does.
    pub kind: TargetKind,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Whether resolved alerts are sent too.
    pub send_resolved: bool,
}

impl Target {
    /// The targets `[[notify]]` lists, or a usage error naming the entry
    /// that is wrong. A `url_file` is read here (its first line).
    pub fn from_config(entries: &[NotifySection]) -> Result<Vec<Target>, Error> {
        let mut out: Vec<Target> = Vec::new();
        for (i, n) in entries.iter().enumerate() {
            let name = n
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", n.kind, i + 1));
            let what = format!("[[notify]] entry {} ({name:?})", i + 1);
            let bad = |m: String| Error::usage(format!("{what}: {m}"));
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(bad("name must be a non-empty single line".into()));
            }
            if out.iter().any(|t| t.name == name) {
                return Err(bad("another entry has that name; give each a name".into()));
            }
            let timeout = match n.timeout.as_deref() {
                None => Duration::from_secs(10),
                Some(t) => humantime::parse_duration(t.trim())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        bad(format!(
                            "timeout = {t:?}: give a duration more than 0, such as 10s"
                        ))
                    })?,
            };
            let kind = match n.kind.as_str() {
                "webhook" => {
                    let format = match n.format.as_deref() {
                        None | Some("alertmanager") => Format::Alertmanager,
                        Some("slack") => Format::Slack,
                        Some(f) => {
                            return Err(bad(format!(
                                "format = {f:?}: give alertmanager (default) or slack"
                            )))
                        }
                    };
                    if n.command.is_some() {
                        return Err(bad("command is for kind = \"command\"".into()));
                    }
                    let url = match (&n.url, &n.url_file) {
                        (Some(u), None) => u.trim().to_string(),
                        (None, Some(path)) => {
                            let text = std::fs::read_to_string(path).map_err(|e| {
                                Error::usage_because(
                                    format!("{what}: cannot read url_file {}", path.display()),
                                    e,
                                )
                            })?;
                            text.lines().next().unwrap_or("").trim().to_string()
                        }
                        (Some(_), Some(_)) => {
                            return Err(bad("give url or url_file, not both".into()))
                        }
                        (None, None) => return Err(bad(
                            "a webhook needs url (or url_file: a file whose first line is the URL)"
                                .into(),
                        )),
                    };
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        // The URL itself is not repeated: it may hold a token.
                        return Err(bad(
                            "the webhook URL must start with http:// or https://".into()
                        ));
                    }
                    TargetKind::Webhook { url, format }
                }
                "command" => {
                    if n.url.is_some() || n.url_file.is_some() || n.format.is_some() {
                        return Err(bad(
                            "url, url_file and format are for kind = \"webhook\"".into()
                        ));
                    }
                    let argv = n.command.clone().unwrap_or_default();
                    if argv.first().is_none_or(|p| p.trim().is_empty()) {
                        return Err(bad(
                            "a command target needs command = [\"program\", \"arg\", ...]".into(),
                        ));
                    }
                    TargetKind::Command { argv }
                }
                k => {
                    return Err(bad(format!("kind = {k:?}: give webhook or command")));
                }
            };
            out.push(Target {
                name,
                kind,
                timeout,
                send_resolved: n.send_resolved.unwrap_or(true),
            });
        }
        Ok(out)
    }
}

/// Alertmanager-like repeats and de-duplication, pure: what to send at
/// `now` given the alerts firing now.
#[derive(Debug)]
pub struct Repeats {
    repeat: Duration,
    /// Firing alerts sent, by fingerprint: the alert and when it was last
    /// sent.
    sent: HashMap<String, (Alert, Timestamp)>,
}

impl Repeats {
    /// Repeats every `repeat` while an alert fires.
    pub fn new(repeat: Duration) -> Repeats {
        Repeats {
            repeat,
            sent: HashMap::new(),
        }
    }

    /// The notifications due at `now`: each alert of `firing` not sent
    /// yet, or last sent `repeat` ago or more; and, resolved (`ends_at`
    /// set), each alert sent before that no longer fires.
    pub fn due(&mut self, now: Timestamp, firing: &[Alert]) -> Vec<Alert> {
        let mut out = Vec::new();
        let fps: std::collections::HashSet<&str> =
            firing.iter().map(|a| a.fingerprint.as_str()).collect();
        let mut resolved: Vec<String> = self
            .sent
            .keys()
            .filter(|k| !fps.contains(k.as_str()))
            .cloned()
            .collect();
        resolved.sort();
        for fp in resolved {
            if let Some((mut a, _)) = self.sent.remove(&fp) {
                a.ends_at = Some(now);
                out.push(a);
            }
        }
        for a in firing {
            let due = match self.sent.get(&a.fingerprint) {
                None => true,
                Some((_, last)) => now.duration_since(*last).unsigned_abs() >= self.repeat,
            };
            if due {
                let mut a = a.clone();
                a.ends_at = None;
                self.sent.insert(a.fingerprint.clone(), (a.clone(), now));
                out.push(a);
            }
        }
        out
    }
}

/// How deliveries are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt, doubled after each next.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 8, 16, 32 and 64 s between them: about two
    /// minutes.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_secs(8),
        }
    }
}

/// The notifier's settings.
#[derive(Clone, Debug)]
pub struct NotifierSettings {
    /// How often an alert still firing is sent again (`[alerts]
    /// repeat_interval`).
    pub repeat_interval: Duration,
    /// Retries of a failed delivery.
    pub retry: RetryPolicy,
    /// Where people can look: the agent's status page
    /// (`http://127.0.0.1:9847/`); Alertmanager's `externalURL` and each
    /// alert's `generatorURL`.
    pub external_url: String,
    /// Deliveries waiting at most; more are dropped and counted failed.
    pub queue: usize,
    /// Deliveries going on at once at most.
    pub parallel: usize,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        NotifierSettings {
            repeat_interval: Duration::from_secs(4 * 3600),
            retry: RetryPolicy::default(),
            external_url: String::new(),
            queue: 1024,
            parallel: 8,
        }
    }
}

const FIRING_ENDS_AT: &str = "0001-01-01T00:00:00Z";

/// One alert as an element of Alertmanager's `alerts`.
pub fn alert_json(alert: &Alert, external_url: &str) -> Value {
    json!({
        "status": alert.state().as_str(),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": alert.starts_at.to_string(),
        "endsAt": alert.ends_at.map_or(FIRING_ENDS_AT.to_string(), |t| t.to_string()),
        "generatorURL": external_url,
        "fingerprint": alert.fingerprint,
    })
}

/// Alertmanager's webhook payload (version 4) for one alert, grouped by
/// `alertname`, from receiver `receiver`.
pub fn alertmanager_payload(receiver: &str, external_url: &str, alert: &Alert) -> Value {
    let group = BTreeMap::from([("alertname", alert.name)]);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", alert.name),
        "truncatedAlerts": 0,
        "status": alert.state().as_str(),
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": external_url,
        "alerts": [alert_json(alert, external_url)],
    })
}

/// A Slack incoming-webhook message for one alert.
pub fn slack_payload(alert: &Alert, external_url: &str) -> Value {
    let mut text = format!(
        "[{}] {} ({}): {}",
        alert.state().as_str().to_uppercase(),
        alert.name,
        alert.severity.as_str(),
        alert.summary()
    );
    if let Some(d) = alert.annotations.get("description") {
        text.push('\n');
        text.push_str(d);
    }
    if !external_url.is_empty() {
        text.push('\n');
        text.push_str(external_url);
    }
    json!({ "text": text })
}

struct Delivery {
    target: usize,
    alert: Alert,
}

struct Shared {
    targets: Vec<Target>,
    clients: Vec<Option<reqwest::Client>>,
    settings: NotifierSettings,
    counts: Mutex<BTreeMap<(String, String), u64>>,
    last_error: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    fn count(&self, target: &str, outcome: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((target.to_string(), outcome.to_string()))
            .or_default() += 1;
    }

    fn failed(&self, target: &str, alert: &str, error: String) {
        tracing::warn!(
            target_name = target,
            alert = alert,
            "notification to {target} could not be delivered: {error}"
        );
        self.count(target, "failed");
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.to_string(), error);
    }

    /// One attempt; the error says what went wrong, never the URL.
    async fn attempt(&self, i: usize, alert: &Alert) -> Result<(), String> {
        let t = &self.targets[i];
        let ext = &self.settings.external_url;
        match &t.kind {
            TargetKind::Webhook { url, format } => {
                let body = match format {
                    Format::Alertmanager => alertmanager_payload(&t.name, ext, alert),
                    Format::Slack => slack_payload(alert, ext),
                };
                let client = self.clients[i].as_ref().ok_or("no HTTP client")?;
                let resp = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            format!("no answer within {}", humantime::format_duration(t.timeout))
                        } else {
                            e.without_url().to_string()
                        }
                    })?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the receiver answered HTTP {status}"))
                }
            }
            TargetKind::Command { argv } => run_command(argv, alert, ext, t.timeout).await,
        }
    }

    async fn deliver(self: Arc<Self>, d: Delivery) {
        let t = &self.targets[d.target];
        let policy = &self.settings.retry;
        let attempts = policy.attempts.max(1);
        let mut wait = policy.first_backoff;
        for n in 1..=attempts {
            match self.attempt(d.target, &d.alert).await {
                Ok(()) => {
                    self.count(&t.name, "delivered");
                    return;
                }
                Err(e) if n == attempts => {
                    self.failed(&t.name, d.alert.name, format!("{e} ({attempts} attempts)"));
                    return;
                }
                Err(e) => {
                    tracing::debug!(target_name = %t.name, "notification attempt {n} failed: {e}");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
}

async fn run_command(
    argv: &[String],
    alert: &Alert,
    external_url: &str,
    timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .env("LIFEBOAT_ALERT_NAME", alert.name)
        .env("LIFEBOAT_ALERT_STATUS", alert.state().as_str())
        .env("LIFEBOAT_ALERT_SEVERITY", alert.severity.as_str())
        .env("LIFEBOAT_ALERT_SUMMARY", alert.summary())
        .env("LIFEBOAT_ALERT_SOURCE", alert.label("source").unwrap_or(""));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let body = alert_json(alert, external_url).to_string();
    let run = async move {
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its input may close it: fine.
            let _ = stdin.write_all(body.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| {
            format!(
                "{} did not finish within {}",
                argv[0],
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let last: String = last.chars().take(300).collect();
    Err(format!("{} exited with {}: {last}", argv[0], out.status))
}

/// Sends the agent's alerts to the `[[notify]]` targets, in the
/// background.
pub struct Notifier {
    shared: Arc<Shared>,
    repeats: Mutex<Repeats>,
    tx: tokio::sync::mpsc::Sender<Delivery>,
}

impl Notifier {
    /// Starts the background delivery task on `runtime`.
    pub fn start(
        targets: Vec<Target>,
        settings: NotifierSettings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Notifier, Error> {
        let clients = targets
            .iter()
            .map(|t| match t.kind {
                TargetKind::Webhook { .. } => reqwest::Client::builder()
                    .timeout(t.timeout)
                    .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map(Some)
                    .map_err(|e| {
                        Error::Failed(format!(
                            "[[notify]] {}: cannot make an HTTP client: {e}",
                            t.name
                        ))
                    }),
                TargetKind::Command { .. } => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(settings.queue.max(1));
        let shared = Arc::new(Shared {
            targets,
            clients,
            counts: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(BTreeMap::new()),
            settings: settings.clone(),
        });
        let limit = Arc::new(tokio::sync::Semaphore::new(settings.parallel.max(1)));
        let bg = shared.clone();
        runtime.spawn(async move {
            while let Some(d) = rx.recv().await {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let s = bg.clone();
                tokio::spawn(async move {
                    s.deliver(d).await;
                    drop(permit);
                });
            }
        });
        Ok(Notifier {
            shared,
            repeats: Mutex::new(Repeats::new(settings.repeat_interval)),
            tx,
        })
    }

    /// Queues what is due at `now` given the alerts firing now (the
    /// evaluator's [`crate::rules::Evaluator::firing_alerts`]): new ones,
    /// repeats, and resolved ones. Returns at once; the deliveries happen
    /// in the background. Returns how many deliveries were queued.
    pub fn send(&self, now: Timestamp, firing: &[Alert]) -> usize {
        let due = self
            .repeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .due(now, firing);
        let mut queued = 0;
        for alert in due {
            for (i, t) in self.shared.targets.iter().enumerate() {
                if alert.state() == AlertState::Resolved && !t.send_resolved {
                    continue;
                }
                let d = Delivery {
                    target: i,
                    alert: alert.clone(),
                };
                match self.tx.try_send(d) {
                    Ok(()) => queued += 1,
                    Err(_) => self.shared.failed(
                        &t.name,
                        alert.name,
                        "the notification queue is full".into(),
                    ),
                }
            }
        }
        queued
    }

    /// Deliveries by (target, outcome: `delivered`, `failed`): the samples
    /// of `lifeboat_notifications_total`.
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last failure of `target`'s deliveries, if any (never with the
    /// URL).
    pub fn last_error(&self, target: &str) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .cloned()
    }

    /// The targets.
    pub fn targets(&self) -> &[Target] {
        &self.shared.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{fingerprint, Severity};

    fn alert(source: &str) -> Alert {
        let labels = BTreeMap::from([
            ("alertname".to_string(), "LifeboatBackupFailed".to_string()),
            ("source".to_string(), source.to_string()),
        ]);
        Alert {
            name: "LifeboatBackupFailed",
            severity: Severity::Critical,
            fingerprint: fingerprint(&labels),
            labels,
            annotations: BTreeMap::from([("summary".to_string(), "it failed".to_string())]),
            value: 1.0,
            starts_at: Timestamp::UNIX_EPOCH,
            ends_at: None,
        }
    }

    #[test]
    fn sent_when_firing_again_every_repeat_interval_resolved_once() {
        let mut r = Repeats::new(Duration::from_secs(4 * 3600));
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |m: i64| t0 + jiff::SignedDuration::from_mins(m);
        let (a, b) = (alert("main"), alert("cache"));
        let states = |v: Vec<Alert>| -> Vec<(String, &'static str)> {
            v.iter()
                .map(|a| (a.labels["source"].clone(), a.state().as_str()))
                .collect()
        };
        assert_eq!(
            states(r.due(at(0), std::slice::from_ref(&a))),
            [("main".into(), "firing")]
        );
        assert!(
            r.due(at(1), std::slice::from_ref(&a)).is_empty(),
            "de-duplicated"
        );
        assert_eq!(
            states(r.due(at(2), &[a.clone(), b.clone()])),
            [("cache".into(), "firing")]
        );
        assert!(r.due(at(239), &[a.clone(), b.clone()]).is_empty());
        assert_eq!(
            states(r.due(at(240), &[a.clone(), b.clone()])),
            [("main".into(), "firing")],
            "repeated after 4 h"
        );
        let out = r.due(at(241), std::slice::from_ref(&b));
        assert_eq!(states(out.clone()), [("main".into(), "resolved")]);
        assert_eq!(out[0].ends_at, Some(at(241)));
        assert_eq!(
            states(r.due(at(242), std::slice::from_ref(&b))),
            [("cache".into(), "firing")],
            "each alert repeats on its own clock"
        );
        assert!(
            r.due(at(243), std::slice::from_ref(&b)).is_empty(),
            "resolved once"
        );
        assert_eq!(states(r.due(at(252), &[])), [("cache".into(), "resolved")]);
        assert!(r.due(at(253), &[]).is_empty());
    }

    fn entry(toml_text: &str) -> Result<Vec<Target>, Error> {
        #[derive(serde::Deserialize)]
        struct F {
            notify: Vec<NotifySection>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        Target::from_config(&f.notify)
    }

    #[test]
    fn targets_are_checked_naming_the_entry() {
        let t = entry(
            "[[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example/x?token=s3cret\"\n\
             [[notify]]\nname = \"pager\"\nkind = \"command\"\ncommand = [\"/usr/local/bin/page\", \"-q\"]\ntimeout = \"30s\"\nsend_resolved = false\n",
        )
        .unwrap();
        assert_eq!(t[0].name, "webhook-1");
        assert_eq!(t[1].name, "pager");
        assert_eq!(t[1].timeout, Duration::from_secs(30));
        assert!(!t[1].send_resolved);
        assert!(
            !format!("{t:?}").contains("s3cret"),
            "the URL is never shown"
        );
        for (text, says) in [
            ("[[notify]]\nkind = \"sms\"\n", "kind = \"sms\""),
            ("[[notify]]\nkind = \"webhook\"\n", "needs url"),
            (
                "[[notify]]\nkind = \"webhook\"\nurl = \"http://x\"\nformat = \"teams\"\n",
                "format = \"teams\"",
            ),
            ("[[notify]]\nname = \"p\"\nkind = \"command\"\ncommand = []\n", "entry 1 (\"p\")"),
            (
                "[[notify]]\nkind = \"webhook\"\nurl = \"ftp://s3cret@x\"\n",
                "http://",
            ),
            (
                "[[notify]]\nkind = \"command\"\ncommand = [\"a\"]\n[[notify]]\nkind = \"command\"\ncommand = [\"b\"]\nname = \"command-1\"\n",
                "entry 2",
            ),
        ] {
            let e = entry(text).unwrap_err();
            let m = e.to_string();
            assert!(m.contains(says), "{m}");
            assert!(m.contains("[[notify]] entry"), "{m}");
            assert!(!m.contains("s3cret"), "{m}");
            assert_eq!(e.class(), lifeboat_repo::ErrorClass::Usage);
        }
    }

    #[test]
    fn payloads_are_alertmanagers_and_slacks() {
        let mut a = alert("main");
        let p = alertmanager_payload("ops", "http://127.0.0.1:9847/", &a);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "ops");
        assert_eq!(p["groupLabels"]["alertname"], "LifeboatBackupFailed");
        assert_eq!(p["alerts"][0]["labels"]["source"], "main");
        assert_eq!(p["alerts"][0]["endsAt"], FIRING_ENDS_AT);
        assert_eq!(p["alerts"][0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(p["alerts"][0]["fingerprint"], a.fingerprint.as_str());
        a.ends_at = Some(Timestamp::from_second(60).unwrap());
        let p = alertmanager_payload("ops", "", &a);
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], "1970-01-01T00:01:00Z");
        let s = slack_payload(&a, "");
        assert_eq!(
            s["text"],
            "[RESOLVED] LifeboatBackupFailed (critical): it failed"
        );
    }
}
