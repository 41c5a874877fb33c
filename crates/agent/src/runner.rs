//! One run of a job: a child `lifeboat` process.
//!
//! Each run is a process of its own, as with pgBackRest and cron: a crash,
//! a leak or a stuck call in one backup cannot take the agent down, and a
//! run's memory goes back to the system when it ends (the agent's stays
//! flat over months). The child gets the agent's config file and
//! environment, `--json --quiet`, and `LIFEBOAT_AGENT_JOB`: on failure it
//! prints `{"error":{"class":...,"message":...}}` as its last line of
//! standard output, which is how the agent tells a transient failure
//! (retried) from damage or a wrong setting (not retried).
//!
//! A run is stopped (timeout, shutdown) with SIGTERM to its process group
//! — the child and what it started (pg_dump) — then SIGKILL after
//! [`KILL_AFTER`]. A stopped backup records no snapshot (the snapshot is
//! the last object a backup writes), and the packs it stored and indexed
//! (every few packs) are reused by the next one.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// How long a stopped run has between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The program (the `lifeboat` binary).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// How long it may take.
    pub timeout: Duration,
    /// Read its standard output for the report (else it goes nowhere: a
    /// child that runs for months, `replicate --follow`, must not fill the
    /// agent's memory with it).
    pub keep_stdout: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal it did not send itself ended it.
    Killed(i32),
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// It was stopped because the agent is shutting down.
    Cancelled,
    /// It could not be started.
    NotStarted(String),
}

/// What a run gave.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub finished: Timestamp,
    /// How it ended.
    pub end: RunEnd,
    /// The last JSON object it printed on standard output: the command's
    /// report on success, `{"error": ...}` on failure.
    pub report: Option<serde_json::Value>,
    /// The end of its standard error (at most 4 KiB).
    pub stderr: String,
}

impl RunResult {
    /// True when it exited 0.
    pub fn succeeded(&self) -> bool {
        self.end == RunEnd::Exited(0)
    }

    /// The error class the child reported (`transient`, `failure`,
    /// `usage`, `damage`), else one read from its exit code.
    pub fn error_class(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        if let Some(c) = self
            .report
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(|e| e.get("class"))
            .and_then(|c| c.as_str())
        {
            return Some(c.to_string());
        }
        Some(
            match self.end {
                RunEnd::Exited(2) => "usage",
                RunEnd::Exited(3) => "damage",
                // A run that could not start, or was killed by something
                // else, may well work the next time.
                RunEnd::NotStarted(_) | RunEnd::Killed(_) => "transient",
                _ => "failure",
            }
            .to_string(),
        )
    }

    /// A one-line message saying why it failed.
    pub fn error_message(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        let reported = self
            .report
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let last_err_line = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start_matches("error: ").to_string());
        Some(match &self.end {
            RunEnd::TimedOut => "stopped: it ran past [agent] job_timeout".to_string(),
            RunEnd::Cancelled => "stopped: the agent shut down past its grace period".to_string(),
            RunEnd::NotStarted(e) => format!("could not start: {e}"),
            RunEnd::Killed(sig) => format!("killed by signal {sig}"),
            RunEnd::Exited(code) => reported
                .or(last_err_line)
                .unwrap_or_else(|| format!("exited with code {code}")),
        })
    }
}

/// Runs `req` to its end, its timeout, or until `cancel` turns true.
pub async fn run(req: &RunRequest, mut cancel: watch::Receiver<bool>) -> RunResult {
    let started = Timestamp::now();
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.args(&req.args);
    // The agent's own malloc arena limit is not its children's.
    if std::env::var_os("LIFEBOAT_AGENT_ARENAS").is_some() {
        cmd.env_remove("MALLOC_ARENA_MAX")
            .env_remove("LIFEBOAT_AGENT_ARENAS");
    }
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(if req.keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunResult {
                started,
                finished: Timestamp::now(),
                end: RunEnd::NotStarted(e.to_string()),
                report: None,
                stderr: String::new(),
            }
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    });
    let err_task = tokio::spawn(async move {
        // Keep the last 4 KiB only: a chatty child cannot grow the agent.
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        if let Some(s) = stderr.as_mut() {
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
        tail
    });
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut stopped: Option<RunEnd> = None;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            _ = &mut deadline, if stopped.is_none() => {
                stopped = Some(RunEnd::TimedOut);
                signal_group(pid, rustix::process::Signal::TERM);
            }
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    stopped = Some(RunEnd::Cancelled);
                    signal_group(pid, rustix::process::Signal::TERM);
                }
            }
            _ = tokio::time::sleep(KILL_AFTER), if stopped.is_some() => {
                signal_group(pid, rustix::process::Signal::KILL);
            }
        }
    };
    let out = out_task.await.unwrap_or_default();
    let err = err_task.await.unwrap_or_default();
    let end = match (stopped, status) {
        // It finished in the moment it was being stopped: it did its job.
        (Some(_), Ok(st)) if st.success() => RunEnd::Exited(0),
        (Some(s), _) => s,
        (None, Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => RunEnd::Exited(c),
                (None, Some(sig)) => RunEnd::Killed(sig),
                _ => RunEnd::Killed(0),
            }
        }
        (None, Err(e)) => RunEnd::NotStarted(format!("waiting for it failed: {e}")),
    };
    RunResult {
        started,
        finished: Timestamp::now(),
        end,
        report: last_json(&out),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// What the agent reads of a child's report: these keys only. The rest of
/// a report (a forget's every snapshot, a verify's every pack) is skipped
/// as it is parsed, never built: those grow with the repository, and the
/// agent's memory must not.
#[derive(Debug, Default, serde::Deserialize)]
struct Brief {
    #[serde(default)]
    snapshot: Option<serde_json::Value>,
    #[serde(default)]
    stats: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    archives: Option<serde_json::Value>,
    #[serde(default)]
    replicas: Option<serde_json::Value>,
    #[serde(default)]
    repositories: Option<serde_json::Value>,
    #[serde(default)]
    monthly_total: Option<serde_json::Value>,
    #[serde(default)]
    baseline: Option<serde_json::Value>,
    #[serde(default)]
    prices_source: Option<serde_json::Value>,
}

impl Brief {
    fn into_value(self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("snapshot", self.snapshot),
            ("stats", self.stats),
            ("error", self.error),
            ("archives", self.archives),
            ("replicas", self.replicas),
            ("repositories", self.repositories),
            ("monthly_total", self.monthly_total),
            ("baseline", self.baseline),
            ("prices_source", self.prices_source),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        }
        serde_json::Value::Object(m)
    }
}

/// The last JSON object of `out` (the whole output when it is one, else
/// its last line that is one), as [`Brief`] keeps it.
fn last_json(out: &[u8]) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(out);
    // A report may span lines (pretty-printed), and a failing command
    // prints `{"error": …}` after the report it printed: the output read as
    // a sequence of JSON values, their kept keys merged (later ones win).
    let values: Result<Vec<Brief>, _> = serde_json::Deserializer::from_str(text.trim())
        .into_iter::<Brief>()
        .collect();
    if let Ok(values) = values {
        let mut merged = serde_json::Map::new();
        for v in values {
            if let serde_json::Value::Object(m) = v.into_value() {
                merged.extend(m);
            }
        }
        if !merged.is_empty() || !text.trim().is_empty() {
            return Some(serde_json::Value::Object(merged));
        }
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Brief>(l.trim()).ok())
        .map(Brief::into_value)
        .next()
}

fn signal_group(pid: Option<u32>, sig: rustix::process::Signal) {
    let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return;
    };
    // The child leads its own group: the signal reaches what it started.
    let _ = rustix::process::kill_process_group(pid, sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> RunRequest {
        RunRequest {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            timeout,
            keep_stdout: true,
        }
    }

    /// Only what the agent reads of a report is kept: a forget's list of
    /// every snapshot is skipped as it is parsed.
    #[test]
    fn a_report_is_kept_brief() {
        let series: Vec<serde_json::Value> = (0..500)
            .map(|i| serde_json::json!({"id": format!("{i:064}"), "keep": false, "reasons": ["x"]}))
            .collect();
        let report = serde_json::json!({"snapshot": "ab", "stats": {"bytes_read": 7},
            "series": series, "kept": 3});
        let text = serde_json::to_string_pretty(&report).unwrap();
        let v = last_json(format!("{text}\n").as_bytes()).unwrap();
        assert_eq!(v["snapshot"], "ab");
        assert_eq!(v["stats"]["bytes_read"], 7);
        assert!(v.get("series").is_none() && v.get("kept").is_none(), "{v}");
        let v = last_json(b"one line\n{\"error\":{\"class\":\"transient\"}}\n").unwrap();
        assert_eq!(v["error"]["class"], "transient");
        // A report and the error after it: both kept.
        let v = last_json(
            b"{\n  \"replicas\": [{\"name\": \"dr\", \"up\": false}]\n}\n{\"error\":{\"class\":\"transient\"}}\n",
        )
        .unwrap();
        assert_eq!(v["replicas"][0]["up"], false, "{v}");
        assert_eq!(v["error"]["class"], "transient", "{v}");
        assert!(last_json(b"no json here\n").is_none());
    }

    #[tokio::test]
    async fn a_report_and_an_error_class_come_back() {
        let (_tx, rx) = watch::channel(false);
        let r = run(
            &sh(
                r#"echo '{"snapshot":"ab","stats":{"bytes_read":5}}'"#,
                Duration::from_secs(30),
            ),
            rx.clone(),
        )
        .await;
        assert!(r.succeeded());
        assert_eq!(r.report.unwrap()["snapshot"], "ab");
        let r = run(
            &sh(r#"echo 'error: store down' >&2; echo '{"error":{"class":"transient","message":"store down"}}'; exit 1"#, Duration::from_secs(30)),
            rx.clone(),
        )
        .await;
        assert_eq!(r.end, RunEnd::Exited(1));
        assert_eq!(r.error_class().as_deref(), Some("transient"));
        assert_eq!(r.error_message().as_deref(), Some("store down"));
        let r = run(
            &sh("echo 'error: bad key' >&2; exit 3", Duration::from_secs(30)),
            rx,
        )
        .await;
        assert_eq!(r.error_class().as_deref(), Some("damage"));
        assert_eq!(r.error_message().as_deref(), Some("bad key"));
    }

    #[tokio::test]
    async fn a_run_past_its_timeout_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let (_tx, rx) = watch::channel(false);
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let r = run(&sh(&script, Duration::from_millis(300)), rx).await;
        assert_eq!(r.end, RunEnd::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got the group's SIGTERM too: it is gone (or a zombie
        // waiting to be reaped) within moments.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let alive = alive();
        assert!(!alive, "the grandchild {pid} still runs");
    }

    #[tokio::test]
    async fn cancelling_stops_the_run() {
        let (tx, rx) = watch::channel(false);
        let task =
            tokio::spawn(async move { run(&sh("sleep 600", Duration::from_secs(600)), rx).await });
        tx.send(true).unwrap();
        let r = task.await.unwrap();
        assert_eq!(r.end, RunEnd::Cancelled);
        assert!(r.error_message().unwrap().contains("shut down"));
    }
}
