//! `es restore`: a recorded snapshot restored through the cluster's restore
//! API. In ingest mode the repository files it needs are first written into
//! a staging directory registered read-only; in orchestrate mode the
//! cluster's own repository holds them. The restore counts only when the
//! restored indices are at least yellow and hold the documents recorded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lifeboat_repo::{Progress, Repository, RestoreOptions, SnapshotEntry};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::backup::REPOSITORY_ITEM;
use crate::client::{reason_of, Client, Connection};
use crate::cluster::{self, enc};
use crate::error::{ElasticError, Result};
use crate::meta::{EsMeta, Mode};
use crate::names::{self, Rename};

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct EsRestoreOptions {
    /// How to reach the cluster restored into.
    pub connection: Connection,
    /// Index patterns over the snapshot's indices; every one when empty.
    pub indices: Vec<String>,
    /// `rename_pattern` and `rename_replacement`.
    pub rename: Option<(String, String)>,
    /// Restore the cluster's global state too.
    pub include_global_state: bool,
    /// Close existing indices of the restored names and restore over them
    /// (their documents are replaced).
    pub replace: bool,
    /// Ingest: the staging directory as seen from here (the files are
    /// written under it, in a directory of their own).
    pub staging_dir: Option<PathBuf>,
    /// Ingest: the staging directory as the nodes see it.
    pub staging_location: Option<String>,
    /// How long the restored indices may take to become yellow.
    pub timeout: Duration,
}

impl EsRestoreOptions {
    /// Options for the cluster at `url`: every index, no rename, a 4 h
    /// timeout.
    pub fn new(url: &str) -> Self {
        EsRestoreOptions {
            connection: Connection::new(url),
            indices: Vec::new(),
            rename: None,
            include_global_state: false,
            replace: false,
            staging_dir: None,
            staging_location: None,
            timeout: Duration::from_secs(4 * 3600),
        }
    }
}

/// One restored index.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredIndex {
    /// Its name in the snapshot.
    pub from: String,
    /// Its name now.
    pub index: String,
    /// Documents counted after the restore.
    pub docs: u64,
    /// Documents recorded at backup time ("N" or "between N and M").
    pub expected: String,
    /// Its health once restored.
    pub health: String,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct EsRestoreReport {
    /// The snapshot's name in the cluster.
    pub snapshot: String,
    /// The indices restored.
    pub indices: Vec<RestoredIndex>,
    /// Indices closed first (`replace`).
    pub closed: Vec<String>,
    /// Bytes of repository files written to the staging directory (ingest).
    pub staged_bytes: u64,
    /// Time to restore, from the start to the counts checked (the RTO).
    pub duration_ms: u64,
}

/// Restores one snapshot; see the module documentation.
pub fn restore(
    repo: &Repository,
    entry: &SnapshotEntry,
    opts: &EsRestoreOptions,
    progress: &dyn Progress,
) -> Result<EsRestoreReport> {
    let started = Instant::now();
    let meta = EsMeta::of(entry)?;
    let c = Client::new(&opts.connection)?;
    cluster::info(&c)?;
    // Indices and data streams, by the names the snapshot was asked for.
    let recorded = meta.restorable();
    let chosen = names::select(&recorded, &opts.indices);
    if chosen.is_empty() {
        return Err(ElasticError::Refused(format!(
            "--index {} selects none of the snapshot's indices and data streams ({})",
            opts.indices.join(","),
            recorded.join(", ")
        )));
    }
    let rename = match &opts.rename {
        Some((p, r)) => Some(Rename::new(p, r)?),
        None => None,
    };
    let targets: Vec<(String, String)> = chosen
        .iter()
        .map(|i| {
            let to = rename.as_ref().map_or_else(|| i.clone(), |r| r.apply(i));
            (i.clone(), to)
        })
        .collect();
    // A data stream is never restored over: the cluster refuses it, and
    // closing its write index is not a thing.
    let streams_now = cluster::data_streams(&c)?;
    let stream_clash: Vec<&String> = targets
        .iter()
        .filter(|(from, to)| meta.data_streams.contains_key(from) && streams_now.contains_key(to))
        .map(|(_, to)| to)
        .collect();
    if !stream_clash.is_empty() {
        return Err(ElasticError::Refused(format!(
            "the cluster at {} already has data stream {}: restore it under another name (--rename-pattern '(.+)' --rename-replacement 'restored-$1'), or delete it first (DELETE _data_stream/{}) if its documents are to go",
            c.target(),
            stream_clash.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            stream_clash[0]
        )));
    }
    let existing = cluster::cat_indices(&c, "*")?;
    let clashing: Vec<&cluster::IndexFacts> = existing
        .iter()
        .filter(|e| targets.iter().any(|(_, to)| *to == e.index))
        .collect();
    if !clashing.is_empty() && !opts.replace {
        return Err(ElasticError::Refused(format!(
            "the cluster at {} already has {} {}: restore under other names (--rename-pattern '(.+)' --rename-replacement 'restored-$1'), or pass --replace to close and restore over them (their documents are replaced)",
            c.target(),
            if clashing.len() == 1 { "index" } else { "indices" },
            clashing
                .iter()
                .map(|e| format!("{} ({})", e.index, if e.status == "close" { "closed" } else { "open" }))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    let mut staged_bytes = 0;
    let mut guard = Staged {
        client: &c,
        repository: None,
        dir: None,
    };
    let repository = match meta.mode {
        Mode::Ingest => {
            let base = opts.staging_dir.as_deref().ok_or_else(|| {
                ElasticError::Refused(
                    "restoring an ingest snapshot needs a staging directory (the source's staging_dir, or --staging-dir): a directory in path.repo of every node that lifeboat writes too".into(),
                )
            })?;
            let short = entry.id.to_string().chars().take(8).collect::<String>();
            sweep_killed_restores(&c, base, &meta.repository);
            let leaf = format!("restore-{short}-{}", std::process::id());
            let dir = base.join(&leaf);
            if dir.exists() {
                return Err(ElasticError::Refused(format!(
                    "{} exists already: another restore is using it, or one was killed; remove it once no restore runs",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| ElasticError::io("create the staging directory", &dir, e))?;
            guard.dir = Some(dir.clone());
            let stats = repo.restore(
                &entry.snapshot,
                &RestoreOptions {
                    target: dir.clone(),
                    include: vec![REPOSITORY_ITEM.into()],
                    ..RestoreOptions::default()
                },
                progress,
            )?;
            staged_bytes = stats.bytes;
            // The nodes read it at the same place under their view of the
            // staging directory.
            let location = match opts.staging_location.as_deref() {
                Some(l) => format!("{}/{leaf}/{REPOSITORY_ITEM}", l.trim_end_matches('/')),
                None => dir.join(REPOSITORY_ITEM).display().to_string(),
            };
            let name = format!("{}-{leaf}", meta.repository);
            cluster::register_fs(&c, &name, &location, true)?;
            guard.repository = Some(name.clone());
            name
        }
        Mode::Orchestrate => meta.repository.clone(),
    };
    if cluster::snapshot(&c, &repository, &meta.snapshot)?.is_none() {
        return Err(ElasticError::Refused(format!(
            "repository {repository} of the cluster at {} does not hold snapshot {}{}",
            c.target(),
            meta.snapshot,
            if meta.mode == Mode::Orchestrate {
                " (orchestrate mode: the cluster's own repository holds the data; was it deleted there, or is this another cluster?)"
            } else {
                " although lifeboat wrote its files: check the cluster's log"
            }
        )));
    }
    let mut closed = Vec::new();
    if !clashing.is_empty() {
        let open: Vec<String> = clashing
            .iter()
            .filter(|e| e.status != "close")
            .map(|e| e.index.clone())
            .collect();
        for chunk in cluster::chunks(&open) {
            c.ok(
                Method::POST,
                &format!("{}/_close", enc(&chunk.join(","))),
                None,
                "close the indices restored over (--replace)",
            )?;
            closed.extend(chunk.iter().cloned());
        }
    }
    let mut body = json!({
        "indices": chosen.join(","),
        "ignore_unavailable": false,
        "include_global_state": opts.include_global_state,
        "include_aliases": true,
    });
    if let Some((p, r)) = &opts.rename {
        body["rename_pattern"] = Value::from(p.as_str());
        body["rename_replacement"] = Value::from(r.as_str());
    }
    let a = c.call(
        Method::POST,
        &format!(
            "_snapshot/{}/{}/_restore",
            enc(&repository),
            enc(&meta.snapshot)
        ),
        Some(&body),
        "start the restore",
    )?;
    if !(200..300).contains(&a.status) {
        let mut reason = reason_of(&a.body);
        // What --replace closed is opened again: a refused restore must
        // not leave the indices it was to replace out of service.
        let mut still_closed = Vec::new();
        for chunk in cluster::chunks(&closed) {
            let reopened = c.call(
                Method::POST,
                &format!("{}/_open", enc(&chunk.join(","))),
                None,
                "open again the indices closed for the restore",
            );
            if !matches!(reopened, Ok(ref r) if (200..300).contains(&r.status)) {
                still_closed.extend(chunk.iter().cloned());
            }
        }
        if !still_closed.is_empty() {
            reason = format!(
                "{reason}; {} were closed for the restore and could not be opened again: open them with POST {}/_open",
                still_closed.join(", "),
                still_closed.join(",")
            );
        } else if !closed.is_empty() {
            reason = format!("{reason}; {} were opened again", closed.join(", "));
        }
        return Err(ElasticError::Api {
            target: c.target().to_string(),
            what: format!("restore snapshot {}", meta.snapshot),
            status: a.status,
            reason,
        });
    }
    progress.start("recover", None);
    // The concrete indices now: a restored data stream's backing indices
    // are found under its (renamed) name.
    let streams_after = if meta.data_streams.is_empty() {
        Default::default()
    } else {
        cluster::data_streams(&c)?
    };
    let concrete_of = |from: &String, to: &String| -> Vec<String> {
        if meta.data_streams.contains_key(from) {
            streams_after.get(to).cloned().unwrap_or_default()
        } else {
            vec![to.clone()]
        }
    };
    let names: Vec<String> = targets
        .iter()
        .flat_map(|(from, to)| concrete_of(from, to))
        .collect();
    let waited = wait_yellow(&c, &names, opts.timeout);
    progress.finish();
    let healths = waited?;
    let counts = cluster::doc_counts(&c, &names)?;
    let mut indices = Vec::new();
    for (from, to) in &targets {
        let Some(rec) = meta.record_of(from) else {
            continue;
        };
        let parts = concrete_of(from, to);
        let n: u64 = parts.iter().filter_map(|p| counts.get(p)).sum();
        let health = parts
            .iter()
            .filter_map(|p| healths.get(p))
            .max_by_key(|h| match h.as_str() {
                "green" => 0,
                "yellow" => 1,
                _ => 2,
            })
            .cloned()
            .unwrap_or_default();
        if !rec.agrees(n) {
            // Damage only when nothing was written during the snapshot:
            // otherwise deletes and updates then may explain it.
            if rec.docs == rec.docs_after {
                return Err(ElasticError::CountMismatch {
                    index: to.clone(),
                    recorded: rec.expected(),
                    restored: n,
                });
            }
            return Err(ElasticError::NotReady(format!(
                "restored index {to} holds {n} documents, outside the {} counted around the snapshot; the index was written to while the snapshot ran, so this may be deletes or updates of that time rather than damage: compare it with the source, and run `lifeboat verify --read-data`",
                rec.expected()
            )));
        }
        indices.push(RestoredIndex {
            from: from.clone(),
            index: to.clone(),
            docs: n,
            expected: rec.expected(),
            health,
        });
    }
    let cleanup = guard.finish();
    cleanup?;
    Ok(EsRestoreReport {
        snapshot: meta.snapshot,
        indices,
        closed,
        staged_bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// What restores killed before they cleaned up left: `restore-<id>-<pid>`
/// directories whose process is gone, and their read-only registrations.
fn sweep_killed_restores(c: &Client, base: &std::path::Path, repository: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let leaf = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = leaf
            .strip_prefix("restore-")
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let name = format!("{repository}-{leaf}");
        if cluster::unregister(c, &name).is_ok() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::warn!(
                    "removed {}, left by a restore that was killed",
                    e.path().display()
                ),
                Err(err) => tracing::warn!(
                    "cannot remove {}, left by a killed restore: {err}",
                    e.path().display()
                ),
            }
        }
    }
}

/// A restore whose shards the cluster gave up on: the primaries of
/// `names` left unassigned because their restore failed.
fn restore_failed(c: &Client, names: &[String]) -> Option<String> {
    let mut failed = Vec::new();
    for chunk in cluster::chunks(names) {
        let a = c
            .call(
                Method::GET,
                &format!(
                    "_cat/shards/{}?format=json&h=index,shard,prirep,state,unassigned.reason",
                    enc(&chunk.join(","))
                ),
                None,
                "list the restored shards",
            )
            .ok()?;
        for s in a.body.as_array()? {
            if s["prirep"] == "p"
                && s["state"] == "UNASSIGNED"
                && s["unassigned.reason"].as_str() == Some("RESTORE_FAILED")
            {
                failed.push(format!(
                    "{}[{}]",
                    s["index"].as_str().unwrap_or("?"),
                    s["shard"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    (!failed.is_empty()).then(|| failed.join(", "))
}

/// Waits until every index of `names` is yellow or green; their health.
fn wait_yellow(
    c: &Client,
    names: &[String],
    timeout: Duration,
) -> Result<std::collections::BTreeMap<String, String>> {
    let start = Instant::now();
    loop {
        let mut healths = std::collections::BTreeMap::new();
        for chunk in cluster::chunks(names) {
            let a = c.call(
                Method::GET,
                &format!(
                    "_cluster/health/{}?level=indices&wait_for_status=yellow&timeout=5s",
                    enc(&chunk.join(","))
                ),
                None,
                "report the restored indices' health",
            )?;
            for n in chunk {
                healths.insert(
                    n.clone(),
                    a.body["indices"][n]["status"]
                        .as_str()
                        .unwrap_or("missing")
                        .to_string(),
                );
            }
        }
        if healths.values().all(|h| h == "yellow" || h == "green") {
            return Ok(healths);
        }
        // A shard whose restore failed stays red: say so now, not after
        // the whole timeout.
        if healths.values().any(|h| h == "red") {
            if let Some(shards) = restore_failed(c, names) {
                return Err(ElasticError::NotReady(format!(
                    "the cluster could not restore shard(s) {shards} (RESTORE_FAILED): see GET _cluster/allocation/explain for why; the indices stay red until they are deleted or restored again"
                )));
            }
        }
        if start.elapsed() > timeout {
            let bad: Vec<String> = healths
                .iter()
                .filter(|(_, h)| *h != "yellow" && *h != "green")
                .map(|(n, h)| format!("{n} {h}"))
                .collect();
            return Err(ElasticError::NotReady(format!(
                "the restored indices did not become yellow within {} s ({}): the restore runs on in the cluster; see GET _cat/recovery and GET _cluster/allocation/explain",
                timeout.as_secs(),
                bad.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a restore put in place for the cluster to read, removed again
/// whatever happens: the read-only repository's registration first, then
/// its files.
struct Staged<'a> {
    client: &'a Client,
    repository: Option<String>,
    dir: Option<PathBuf>,
}

impl Staged<'_> {
    fn finish(&mut self) -> Result<()> {
        if let Some(name) = self.repository.take() {
            cluster::unregister(self.client, &name)?;
        }
        if let Some(dir) = self.dir.take() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ElasticError::io("remove the staging directory", &dir, e))?;
        }
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("could not clean up after the restore: {e}");
        }
    }
}
