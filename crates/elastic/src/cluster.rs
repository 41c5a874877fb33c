//! The calls lifeboat makes to a cluster, typed: who it is, its health, its
//! indices and their document counts, snapshot repositories and snapshots.
//! They are the same on Elasticsearch 7 and 8 and OpenSearch 1 and 2
//! (differences noted where they matter; README "Elasticsearch and
//! OpenSearch").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{error_type, reason_of, Client};
use crate::error::{ElasticError, Result};

/// Who the cluster is (`GET /`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// `cluster_name`.
    pub cluster_name: String,
    /// `cluster_uuid`.
    pub cluster_uuid: String,
    /// `elasticsearch` or `opensearch` (`version.distribution`, which only
    /// OpenSearch sends).
    pub distribution: String,
    /// `version.number`.
    pub version: String,
}

impl ClusterInfo {
    /// "OpenSearch 2.19.6" / "Elasticsearch 8.15.0".
    pub fn product(&self) -> String {
        let name = if self.distribution == "opensearch" {
            "OpenSearch"
        } else {
            "Elasticsearch"
        };
        format!("{name} {}", self.version)
    }
}

/// `GET /`.
pub fn info(c: &Client) -> Result<ClusterInfo> {
    let v = c.get("", "say who it is (GET /)")?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
    if s("/version/number").is_empty() {
        return Err(ElasticError::NotReady(format!(
            "{} answered GET / without a version: is it an Elasticsearch or OpenSearch node? ({})",
            c.target(),
            v.to_string().chars().take(200).collect::<String>()
        )));
    }
    Ok(ClusterInfo {
        cluster_name: s("/cluster_name").into(),
        cluster_uuid: s("/cluster_uuid").into(),
        distribution: match s("/version/distribution") {
            "" => "elasticsearch".into(),
            d => d.to_string(),
        },
        version: s("/version/number").into(),
    })
}

/// `GET _cluster/health`: `green`, `yellow` or `red`, and why when red.
pub fn health(c: &Client) -> Result<(String, Value)> {
    let v = c.get("_cluster/health", "report its health")?;
    Ok((v["status"].as_str().unwrap_or("unknown").to_string(), v))
}

/// Refuses a red cluster, naming the red indices.
pub fn require_not_red(c: &Client) -> Result<()> {
    let (status, _) = health(c)?;
    if status != "red" {
        return Ok(());
    }
    let red: Vec<String> = cat_indices(c, "*")?
        .into_iter()
        .filter(|i| i.health == "red")
        .map(|i| i.index)
        .collect();
    Err(ElasticError::NotReady(format!(
        "the cluster at {} is red ({}): a primary shard is unassigned, and a snapshot of it cannot succeed. Find why with GET _cluster/allocation/explain, fix it, then back up again",
        c.target(),
        if red.is_empty() {
            "no index reported red".to_string()
        } else {
            format!("red: {}", red.join(", "))
        }
    )))
}

/// One index as `_cat/indices` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFacts {
    /// Its name.
    pub index: String,
    /// Its UUID.
    #[serde(default)]
    pub uuid: String,
    /// `green`, `yellow`, `red` (empty for a closed index).
    #[serde(default)]
    pub health: String,
    /// `open` or `close`.
    #[serde(default)]
    pub status: String,
    /// Documents (Lucene documents of the primaries, nested ones included).
    #[serde(default)]
    pub docs: u64,
    /// Primary shards.
    #[serde(default)]
    pub primaries: u32,
    /// Replicas per primary.
    #[serde(default)]
    pub replicas: u32,
    /// Bytes stored, replicas included.
    #[serde(default)]
    pub store_bytes: u64,
}

fn num<T: std::str::FromStr + Default>(v: &Value) -> T {
    match v {
        Value::String(s) => s.parse().unwrap_or_default(),
        Value::Number(n) => n.to_string().parse().unwrap_or_default(),
        _ => T::default(),
    }
}

/// `GET _cat/indices/<patterns>`: every index the comma-separated patterns
/// match (open and closed, hidden ones left out as the cluster does by
/// default), sorted by name. A pattern that matches nothing matches no
/// index; a name without a wildcard that names no index is an error.
pub fn cat_indices(c: &Client, patterns: &str) -> Result<Vec<IndexFacts>> {
    let path = format!(
        "_cat/indices/{}?format=json&bytes=b&expand_wildcards=open,closed&h=index,uuid,health,status,docs.count,pri,rep,store.size",
        enc(patterns)
    );
    let a = c.call(Method::GET, &path, None, "list its indices")?;
    if a.status == 404 {
        return Err(ElasticError::Refused(format!(
            "no index {patterns} in the cluster at {}: {}; check --index (or the source's indices)",
            c.target(),
            reason_of(&a.body)
        )));
    }
    if !(200..300).contains(&a.status) {
        return Err(c.api_error("list its indices", &a));
    }
    let mut out: Vec<IndexFacts> = a
        .body
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| IndexFacts {
                    index: r["index"].as_str().unwrap_or_default().to_string(),
                    uuid: r["uuid"].as_str().unwrap_or_default().to_string(),
                    health: r["health"].as_str().unwrap_or_default().to_string(),
                    status: r["status"].as_str().unwrap_or_default().to_string(),
                    docs: num(&r["docs.count"]),
                    primaries: num(&r["pri"]),
                    replicas: num(&r["rep"]),
                    store_bytes: num(&r["store.size"]),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.index.cmp(&b.index));
    Ok(out)
}

/// The data streams (`GET _data_stream`): name → backing indices, oldest
/// first. Empty on a cluster without any (or one older than data streams:
/// Elasticsearch before 7.9).
pub fn data_streams(c: &Client) -> Result<BTreeMap<String, Vec<String>>> {
    let a = c.call(Method::GET, "_data_stream", None, "list its data streams")?;
    if matches!(a.status, 400 | 404 | 405) {
        return Ok(BTreeMap::new());
    }
    if !(200..300).contains(&a.status) {
        return Err(c.api_error("list its data streams", &a));
    }
    Ok(a.body["data_streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .filter_map(|d| {
                    let name = d["name"].as_str()?.to_string();
                    let backing = d["indices"]
                        .as_array()
                        .map(|ix| {
                            ix.iter()
                                .filter_map(|i| i["index_name"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((name, backing))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Makes what was indexed visible to counts (`POST <indices>/_refresh`).
pub fn refresh(c: &Client, indices: &[String]) -> Result<()> {
    for chunk in chunks(indices) {
        c.ok(
            Method::POST,
            &format!("{}/_refresh", enc(&chunk.join(","))),
            None,
            "refresh the indices before counting their documents",
        )?;
    }
    Ok(())
}

/// `names` in groups short enough for one request line (the cluster's
/// `http.max_initial_line_length` is 4 KB by default).
pub fn chunks(names: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut len) = (0, 0);
    for (i, n) in names.iter().enumerate() {
        if i > start && len + n.len() + 1 > 2000 {
            out.push(&names[start..i]);
            start = i;
            len = 0;
        }
        len += n.len() * 3 + 1;
    }
    if start < names.len() {
        out.push(&names[start..]);
    }
    out
}

/// Documents per index of `indices`, after a refresh.
pub fn doc_counts(c: &Client, indices: &[String]) -> Result<BTreeMap<String, u64>> {
    refresh(c, indices)?;
    let mut out = BTreeMap::new();
    for chunk in chunks(indices) {
        for f in cat_indices(c, &chunk.join(","))? {
            out.insert(f.index, f.docs);
        }
    }
    Ok(out)
}

/// The write operations (documents indexed and deleted, on the primaries)
/// each of `indices` has taken since its shards started: unchanged between
/// two readings, nothing was written in between. Needs no refresh.
pub fn write_ops(c: &Client, indices: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for chunk in chunks(indices) {
        let v = c.get(
            &format!(
                "{}/_stats/indexing?level=indices&filter_path=indices.*.primaries.indexing.index_total,indices.*.primaries.indexing.delete_total",
                enc(&chunk.join(","))
            ),
            "report the indices' write counts",
        )?;
        if let Some(m) = v["indices"].as_object() {
            for (name, st) in m {
                // An index without both counters is left out: its count is
                // then recorded as a range.
                let ix = &st["primaries"]["indexing"];
                if let (Some(i), Some(d)) =
                    (ix["index_total"].as_u64(), ix["delete_total"].as_u64())
                {
                    out.insert(name.clone(), i + d);
                }
            }
        }
    }
    Ok(out)
}

/// A snapshot repository's registration (`GET _snapshot/<name>`), if any.
pub fn repository(c: &Client, name: &str) -> Result<Option<Value>> {
    let a = c.call(
        Method::GET,
        &format!("_snapshot/{}", enc(name)),
        None,
        "read the snapshot repository",
    )?;
    match a.status {
        404 => Ok(None),
        200..=299 => Ok(a.body.get(name).cloned()),
        _ => Err(c.api_error(&format!("read snapshot repository {name}"), &a)),
    }
}

/// Registers an `fs` repository at `location` (as the nodes see it).
pub fn register_fs(c: &Client, name: &str, location: &str, readonly: bool) -> Result<()> {
    let body = json!({"type": "fs", "settings": {"location": location, "readonly": readonly}});
    let a = c.call(
        Method::PUT,
        &format!("_snapshot/{}", enc(name)),
        Some(&body),
        "register the staging repository",
    )?;
    if (200..300).contains(&a.status) {
        return Ok(());
    }
    let reason = reason_of(&a.body);
    if reason.contains("path.repo") || reason.contains("doesn't match any of the locations") {
        return Err(ElasticError::NotReady(format!(
            "the cluster at {} refused the staging repository {name} at {location}: {reason}. Add the staging directory (or a parent) to path.repo in elasticsearch.yml / opensearch.yml on every node and restart them; on several nodes it must be a shared mount",
            c.target()
        )));
    }
    Err(c.api_error(
        &format!("register snapshot repository {name} at {location}"),
        &a,
    ))
}

/// Drops a repository's registration (its files stay).
pub fn unregister(c: &Client, name: &str) -> Result<()> {
    let a = c.call(
        Method::DELETE,
        &format!("_snapshot/{}", enc(name)),
        None,
        "unregister a repository",
    )?;
    if (200..300).contains(&a.status) || a.status == 404 {
        Ok(())
    } else {
        Err(c.api_error(&format!("unregister snapshot repository {name}"), &a))
    }
}

/// `POST _snapshot/<name>/_verify`: every node can write and read it.
pub fn verify_repository(c: &Client, name: &str) -> Result<()> {
    let a = c.call(
        Method::POST,
        &format!("_snapshot/{}/_verify", enc(name)),
        None,
        "verify the snapshot repository",
    )?;
    if (200..300).contains(&a.status) {
        return Ok(());
    }
    Err(ElasticError::NotReady(format!(
        "snapshot repository {name} fails the cluster's check (_verify): {}. Every node must reach and write its location (for an fs repository: the same path, in path.repo, writable by the cluster's user; on several nodes a shared mount)",
        reason_of(&a.body)
    )))
}

/// A snapshot as the cluster describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub snapshot: String,
    /// Its UUID.
    #[serde(default)]
    pub uuid: String,
    /// `IN_PROGRESS`, `SUCCESS`, `PARTIAL`, `FAILED`, `INCOMPATIBLE`.
    pub state: String,
    /// The indices it holds.
    #[serde(default)]
    pub indices: Vec<String>,
    /// Whether it holds the cluster's global state.
    #[serde(default)]
    pub include_global_state: bool,
    /// Shards: total.
    #[serde(default)]
    pub shards_total: u64,
    /// Shards: failed.
    #[serde(default)]
    pub shards_failed: u64,
    /// Shard failures, each `index[shard]: reason`.
    #[serde(default)]
    pub failures: Vec<String>,
    /// The node version that wrote it.
    #[serde(default)]
    pub version: String,
    /// Start, in ms since the epoch.
    #[serde(default)]
    pub start_ms: i64,
    /// End, in ms since the epoch.
    #[serde(default)]
    pub end_ms: i64,
    /// The reason given for a failed snapshot.
    #[serde(default)]
    pub reason: Option<String>,
}

impl SnapshotInfo {
    fn of(v: &Value) -> SnapshotInfo {
        let mut indices: Vec<String> = v["indices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        indices.sort();
        SnapshotInfo {
            snapshot: v["snapshot"].as_str().unwrap_or_default().into(),
            uuid: v["uuid"].as_str().unwrap_or_default().into(),
            state: v["state"].as_str().unwrap_or_default().into(),
            indices,
            include_global_state: v["include_global_state"].as_bool().unwrap_or(false),
            shards_total: v["shards"]["total"].as_u64().unwrap_or(0),
            shards_failed: v["shards"]["failed"].as_u64().unwrap_or(0),
            failures: v["failures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            format!(
                                "{}[{}]: {}",
                                f["index"].as_str().unwrap_or("?"),
                                f["shard_id"].as_u64().unwrap_or(0),
                                f["reason"].as_str().unwrap_or("no reason given")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            version: v["version"].as_str().unwrap_or_default().into(),
            start_ms: v["start_time_in_millis"].as_i64().unwrap_or(0),
            end_ms: v["end_time_in_millis"].as_i64().unwrap_or(0),
            reason: v["reason"].as_str().map(String::from),
        }
    }
}

/// The snapshots of a repository (`GET _snapshot/<repo>/_all`), oldest
/// first.
pub fn snapshots(c: &Client, repo: &str) -> Result<Vec<SnapshotInfo>> {
    let v = c.get(
        &format!("_snapshot/{}/_all", enc(repo)),
        &format!("list the snapshots of repository {repo}"),
    )?;
    let mut out: Vec<SnapshotInfo> = v["snapshots"]
        .as_array()
        .map(|a| a.iter().map(SnapshotInfo::of).collect())
        .unwrap_or_default();
    out.sort_by(|a, b| (a.start_ms, &a.snapshot).cmp(&(b.start_ms, &b.snapshot)));
    Ok(out)
}

/// One snapshot, or `None` when the repository does not hold it.
pub fn snapshot(c: &Client, repo: &str, name: &str) -> Result<Option<SnapshotInfo>> {
    let a = c.call(
        Method::GET,
        &format!("_snapshot/{}/{}", enc(repo), enc(name)),
        None,
        "read a snapshot",
    )?;
    if a.status == 404 || error_type(&a.body) == "snapshot_missing_exception" {
        return Ok(None);
    }
    if !(200..300).contains(&a.status) {
        return Err(c.api_error(&format!("read snapshot {name} of {repo}"), &a));
    }
    Ok(a.body["snapshots"].get(0).map(SnapshotInfo::of))
}

/// The snapshots running anywhere in the cluster (`GET _snapshot/_status`),
/// each `repository/snapshot`.
pub fn running_snapshots(c: &Client) -> Result<Vec<String>> {
    let v = c.get("_snapshot/_status", "report the snapshots running")?;
    Ok(v["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s["repository"].as_str().unwrap_or("?"),
                        s["snapshot"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What a snapshot is asked to hold.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// The indices, by name.
    pub indices: Vec<String>,
    /// Whether to take the cluster's global state (templates, persistent
    /// settings, and on Elasticsearch 8 the feature states).
    pub include_global_state: bool,
    /// `metadata` recorded with the snapshot in the cluster.
    pub metadata: Value,
}

/// Starts a snapshot; it runs on in the cluster ([`follow`] follows it).
fn create(c: &Client, repo: &str, name: &str, req: &CreateRequest) -> Result<()> {
    start_snapshot(c, repo, name, req, None).map(|_| ())
}

/// Takes a snapshot and follows it to its end. The cluster is asked to
/// answer when the snapshot ends (`wait_for_completion=true`), so the
/// backup goes on the moment it does, with no polling pause added to it;
/// meanwhile `tick` gets the shards done about once a second. Should that
/// long call be cut (a proxy's idle timeout, a node restarting) after the
/// cluster took the snapshot in hand, the snapshot is followed by looking
/// at it ([`follow`]) until `timeout`.
pub fn take(
    c: &Client,
    repo: &str,
    name: &str,
    req: &CreateRequest,
    timeout: Duration,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<SnapshotInfo> {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = {
        let (c, repo, name, req) = (c.clone(), repo.to_string(), name.to_string(), req.clone());
        std::thread::Builder::new()
            .name("es-snapshot".into())
            .spawn(move || {
                let _ = tx.send(start_snapshot(&c, &repo, &name, &req, Some(timeout)));
            })
    };
    if spawned.is_err() {
        create(c, repo, name, req)?;
        return follow(c, repo, name, start, timeout, tick);
    }
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(Some(info))) => return Ok(info),
            // Accepted, but the answer did not describe it: look at it.
            Ok(Ok(None)) => break,
            // Refused before it started, for a cause named already.
            Ok(Err(
                e @ (ElasticError::NotReady(_)
                | ElasticError::Auth { .. }
                | ElasticError::Forbidden { .. }
                | ElasticError::BadUrl { .. }),
            )) => return Err(e),
            // The call ended without the snapshot's end (cut, timed out, or
            // an error while it ran): did the cluster take it in hand? Then
            // it is followed to its end, and a failure is checked (and
            // deleted) like any other.
            Ok(Err(e)) => match snapshot(c, repo, name) {
                Ok(Some(_)) => {
                    tracing::warn!(
                        "the call taking snapshot {name} ended without its result ({e}); following it"
                    );
                    break;
                }
                _ => return Err(e),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match snapshot(c, repo, name) {
                Ok(Some(_)) => break,
                _ => {
                    return Err(ElasticError::SnapshotFailed {
                        snapshot: name.to_string(),
                        reason: "the call that starts it stopped without an answer".into(),
                    })
                }
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                report_progress(c, repo, name, tick);
            }
        }
    }
    follow(c, repo, name, start, timeout, tick)
}

/// `PUT _snapshot/<repo>/<name>`; with `wait`, the cluster answers when the
/// snapshot ends (or `wait` passes), with its description.
fn start_snapshot(
    c: &Client,
    repo: &str,
    name: &str,
    req: &CreateRequest,
    wait: Option<Duration>,
) -> Result<Option<SnapshotInfo>> {
    let body = json!({
        "indices": req.indices.join(","),
        "ignore_unavailable": false,
        "include_global_state": req.include_global_state,
        "partial": false,
        "metadata": req.metadata,
    });
    let path = match wait {
        Some(_) => format!(
            "_snapshot/{}/{}?wait_for_completion=true",
            enc(repo),
            enc(name)
        ),
        None => format!("_snapshot/{}/{}", enc(repo), enc(name)),
    };
    let a = c.call_within(Method::PUT, &path, Some(&body), "take the snapshot", wait)?;
    if (200..300).contains(&a.status) {
        let described = &a.body["snapshot"];
        return Ok(match described["state"].as_str() {
            Some(state) if state != "IN_PROGRESS" => Some(SnapshotInfo::of(described)),
            _ => None,
        });
    }
    let typ = error_type(&a.body);
    let reason = reason_of(&a.body);
    if typ.contains("concurrent_snapshot") || reason.contains("already running") {
        return Err(ElasticError::NotReady(format!(
            "the cluster at {} refused snapshot {name}: another snapshot is running ({reason}). Wait for it to finish (GET _snapshot/_status) and back up again",
            c.target()
        )));
    }
    if typ.contains("index_closed") || reason.contains("closed") {
        return Err(ElasticError::NotReady(format!(
            "the cluster at {} refused snapshot {name}: {reason}. Open the index or leave it out with --index",
            c.target()
        )));
    }
    Err(c.api_error(&format!("start snapshot {name} in {repo}"), &a))
}

/// Gives `tick` a running snapshot's done and total shards, when the
/// cluster says.
fn report_progress(c: &Client, repo: &str, name: &str, tick: &mut dyn FnMut(u64, u64)) {
    if let Ok(v) = c.get(
        &format!("_snapshot/{}/{}/_status", enc(repo), enc(name)),
        "report the snapshot's progress",
    ) {
        let st = &v["snapshots"][0]["shards_stats"];
        tick(
            st["done"].as_u64().unwrap_or(0),
            st["total"].as_u64().unwrap_or(0),
        );
    }
}

/// Follows a snapshot until it is no longer `IN_PROGRESS` (or `timeout`
/// passes since `start`), calling `tick` with its done/total shards about
/// once a second.
fn follow(
    c: &Client,
    repo: &str,
    name: &str,
    start: Instant,
    timeout: Duration,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<SnapshotInfo> {
    let mut progress_at = start;
    let mut misses = 0;
    loop {
        // A node restarting or a dropped connection must not abandon a
        // snapshot that may run for hours: a few missed looks are retried.
        let looked = match snapshot(c, repo, name) {
            Err(e) if e.class() == lifeboat_repo::ErrorClass::Transient && misses < 30 => {
                misses += 1;
                tracing::warn!("following snapshot {name}: {e}; trying again");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            other => other?,
        };
        misses = 0;
        match looked {
            Some(s) if s.state != "IN_PROGRESS" && !s.state.is_empty() => return Ok(s),
            Some(_) => {
                // The shard counts, about once a second.
                if progress_at.elapsed() >= Duration::from_secs(1) {
                    progress_at = Instant::now();
                    report_progress(c, repo, name, tick);
                }
            }
            None => {
                let reason = format!("it vanished from repository {repo} while it ran");
                return Err(ElasticError::SnapshotFailed {
                    snapshot: name.to_string(),
                    reason: format!("{reason} (deleted by someone else?)"),
                });
            }
        }
        if start.elapsed() > timeout {
            return Err(ElasticError::SnapshotFailed {
                snapshot: name.to_string(),
                reason: format!(
                    "it was still running after {} s (the timeout); it runs on in the cluster and is not recorded",
                    timeout.as_secs()
                ),
            });
        }
        // Often at first (a daily incremental takes about a second, and
        // each pause past its end is time added to the backup), then
        // seldom: a GET of one snapshot costs the cluster little.
        let pause = match start.elapsed().as_secs() {
            0..=4 => Duration::from_millis(50),
            5..=59 => Duration::from_millis(250),
            _ => Duration::from_secs(1),
        };
        std::thread::sleep(pause);
    }
}

/// Deletes a snapshot through the cluster (the only safe way: the cluster
/// removes the files only it referenced). A snapshot already gone is fine.
pub fn delete_snapshot(c: &Client, repo: &str, name: &str) -> Result<()> {
    let a = c.call(
        Method::DELETE,
        &format!("_snapshot/{}/{}", enc(repo), enc(name)),
        None,
        "delete a snapshot",
    )?;
    // Gone already is fine; a repository that is not there is not (the
    // copy may be in a repository this cluster does not know).
    if (200..300).contains(&a.status) || error_type(&a.body) == "snapshot_missing_exception" {
        return Ok(());
    }
    Err(c.api_error(&format!("delete snapshot {name} of {repo}"), &a))
}

/// Percent-encodes what goes in a path segment (index patterns keep their
/// `*` and `,`).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b',' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Long lists of index names go in pieces that each fit a request
        /// line, in order, none lost.
        #[test]
        fn chunks_fit_a_request_line_and_lose_nothing(
            names in proptest::collection::vec("[a-z0-9.%-]{1,60}", 0..400)
        ) {
            let names: Vec<String> = names;
            let parts = chunks(&names);
            let joined: Vec<String> = parts.iter().flat_map(|c| c.iter().cloned()).collect();
            prop_assert_eq!(&joined, &names);
            for c in &parts {
                prop_assert!(!c.is_empty());
                let line = enc(&c.join(","));
                prop_assert!(line.len() <= 3000 || c.len() == 1, "{} bytes", line.len());
            }
        }
    }
}
