//! `es backup`: a snapshot taken through the cluster's snapshot API, counted
//! only when the cluster reports `SUCCESS` with every shard and every asked
//! index, then either ingested (the staging `fs` repository's files stored
//! in the lifeboat repository) or recorded (orchestrate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use lifeboat_repo::{
    BackupOutcome, Progress, RepoError, Repository, SnapshotOptions, Timestamp, TreeBackupOptions,
    TreeRoot,
};
use serde_json::json;

use crate::client::{Client, Connection};
use crate::cluster::{self, CreateRequest, IndexFacts, SnapshotInfo};
use crate::error::{ElasticError, Result};
use crate::meta::{EsMeta, IndexRecord, Mode};
use crate::names;

/// The snapshot source kind of Elasticsearch/OpenSearch backups.
pub const SOURCE_KIND: &str = "elasticsearch";
/// Where the staging repository's files are in an ingest snapshot.
pub const REPOSITORY_ITEM: &str = "repository";
/// The item of an orchestrate snapshot: the cluster's description of its
/// snapshot, as JSON.
pub const SNAPSHOT_ITEM: &str = "snapshot.json";
/// The staging repository's directory under a source's staging directory.
pub const STAGING_REPOSITORY_DIR: &str = "snapshots";

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct EsBackupOptions {
    /// How to reach the cluster.
    pub connection: Connection,
    /// The source's name in the snapshot and in the cluster's snapshot
    /// names.
    pub source_name: String,
    /// Host name recorded.
    pub hostname: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Ingest or orchestrate.
    pub mode: Mode,
    /// Index patterns (`logs-*`, `-logs-old`); every open index when empty
    /// (the dot-prefixed system and plugin indices left out).
    pub indices: Vec<String>,
    /// Whether to take the cluster's global state.
    pub include_global_state: bool,
    /// The snapshot repository in the cluster: ingest registers it (an
    /// `fs` repository at the staging location); orchestrate uses the one
    /// the cluster owns.
    pub repository: String,
    /// Ingest: the staging directory as seen from here; the repository is
    /// its `snapshots` directory.
    pub staging_dir: Option<PathBuf>,
    /// Ingest: the staging directory as the nodes see it (default: the
    /// same path).
    pub staging_location: Option<String>,
    /// How long the snapshot may take.
    pub timeout: Duration,
    /// Record the snapshot under this time instead of now.
    pub time: Option<Timestamp>,
}

impl EsBackupOptions {
    /// Options for the cluster at `url` with the defaults: ingest, every
    /// open index, no global state, a day's timeout.
    pub fn new(url: &str, repository: &str) -> Self {
        EsBackupOptions {
            connection: Connection::new(url),
            source_name: String::new(),
            hostname: String::new(),
            tags: Vec::new(),
            mode: Mode::Ingest,
            indices: Vec::new(),
            include_global_state: false,
            repository: repository.to_string(),
            staging_dir: None,
            staging_location: None,
            timeout: Duration::from_secs(24 * 3600),
            time: None,
        }
    }
}

/// What a backup did, beside the lifeboat snapshot.
#[derive(Clone, Debug)]
pub struct EsBackupOutcome {
    /// The lifeboat snapshot.
    pub outcome: BackupOutcome,
    /// What it records.
    pub meta: EsMeta,
    /// Snapshots deleted from the staging repository once this one
    /// succeeded (ingest).
    pub trimmed: Vec<String>,
}

/// The staging repository's location as the nodes see it.
pub fn staging_location(dir: &Path, location: Option<&str>) -> String {
    match location {
        Some(l) => format!("{}/{STAGING_REPOSITORY_DIR}", l.trim_end_matches('/')),
        None => dir.join(STAGING_REPOSITORY_DIR).display().to_string(),
    }
}

/// Backs up one cluster; see the module documentation.
pub fn backup(
    repo: &Repository,
    opts: &EsBackupOptions,
    progress: &dyn Progress,
) -> Result<EsBackupOutcome> {
    let mut clock = Clock::start();
    let c = Client::new(&opts.connection)?;
    // One backup at a time per staging directory (an agent's run and a
    // cron's, or two sources sharing it): the trim of one must not take
    // files another is reading. Held until the snapshot is recorded. The
    // first backup creates the directory, but only once the cluster has
    // answered: nothing is written for a cluster that is not there.
    let staging_dir = match opts.mode {
        Mode::Ingest => opts.staging_dir.as_deref(),
        Mode::Orchestrate => None,
    };
    let mut lock = match staging_dir {
        Some(dir) if dir.is_dir() => Some(lock_staging(dir)?),
        _ => None,
    };
    let known = match (&lock, staging_dir) {
        (None, Some(dir)) => {
            let info = cluster::info(&c)?;
            lock = Some(lock_staging(dir)?);
            Some(info)
        }
        _ => None,
    };
    let _lock = lock;
    let at = opts.time.unwrap_or_else(Timestamp::now);
    // The checks ask the cluster independent questions: asked at once,
    // they cost the slowest one's time rather than the sum (a daily
    // incremental snapshot takes about a second), and their answers are
    // then read in a fixed order, so the first cause named is the same
    // whichever came back first.
    let (who, listed, red, running, staging) = std::thread::scope(|s| {
        let who = s.spawn(|| {
            let info = match known {
                Some(i) => i,
                None => cluster::info(&c)?,
            };
            let source_name = if opts.source_name.is_empty() {
                info.cluster_name.clone()
            } else {
                opts.source_name.clone()
            };
            // Its answer is read after the repository's checks: a
            // repository the cluster cannot use fails this look too, and
            // its check names the cause.
            let name = free_name(
                &c,
                &opts.repository,
                &names::snapshot_name(&source_name, at),
            );
            Ok::<_, ElasticError>((info, source_name, name))
        });
        let all = s.spawn(|| cluster::cat_indices(&c, "*"));
        let streams = s.spawn(|| cluster::data_streams(&c));
        // The documents are counted after the snapshot (off its path: the
        // refresh that counting needs can take a tenth of a second); what
        // is read before is the indices' write counts, which need none.
        // Unchanged after, nothing was written while the snapshot ran, and
        // the count after is exactly what the snapshot holds.
        let ops = s.spawn(|| cluster::write_ops(&c, &["*".to_string()]));
        let red = s.spawn(|| cluster::require_not_red(&c));
        let running = s.spawn(|| cluster::running_snapshots(&c));
        let staging = s.spawn(|| prepare_repository(&c, opts));
        (
            joined(who),
            (joined(all), joined(streams), joined(ops)),
            joined(red),
            joined(running),
            joined(staging),
        )
    });
    let (info, source_name, name) = who?;
    let (all, streams, ops) = listed;
    let selection = choose_indices(&c, &opts.indices, all?, streams?)?;
    red?;
    // Another snapshot in the same repository would race the trim and the
    // ingest; elsewhere the cluster runs snapshots side by side (7.10+ and
    // OpenSearch; older ones refuse, and that refusal is named too).
    let running: Vec<String> = running?
        .into_iter()
        .filter(|r| {
            r.split_once('/')
                .is_some_and(|(repo, _)| repo == opts.repository)
        })
        .collect();
    if !running.is_empty() {
        return Err(ElasticError::NotReady(format!(
            "a snapshot is already running in repository {} of the cluster at {} ({}): wait for it to finish (GET _snapshot/_status) and back up again",
            opts.repository,
            c.target(),
            running.join(", ")
        )));
    }
    let staging = staging?;
    let name = name?;
    // Data streams' backing indices are hidden: not in `*`. Without the
    // write counts the record holds a range of counts, not one number.
    let mut before = ops.unwrap_or_else(|e| {
        tracing::warn!(
            "the write counts could not be read ({e}); the counts are recorded as a range"
        );
        BTreeMap::new()
    });
    let hidden: Vec<String> = selection
        .indices
        .iter()
        .filter(|i| !before.contains_key(&i.index))
        .map(|i| i.index.clone())
        .collect();
    if !hidden.is_empty() {
        before.extend(cluster::write_ops(&c, &hidden).unwrap_or_default());
    }
    let chosen = &selection.indices;
    let names: Vec<String> = chosen.iter().map(|i| i.index.clone()).collect();
    clock.lap("checks");

    // The staging repository keeps only the newest snapshot: the older ones
    // are deleted through the cluster as soon as the new one runs. The
    // cluster queues that deletion behind the snapshot and carries it out as
    // the snapshot ends, at almost no cost of its own; the ingest waits for
    // it (see `trim_during`).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (trim_tx, trim_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        if staging.is_some() {
            let (c, repository, source_name, name) = (&c, &opts.repository, &source_name, &name);
            s.spawn(move || {
                let done_rx = done_rx;
                let _ = trim_tx.send(trim_during(c, repository, source_name, name, &done_rx));
            });
        }
        // Progress in shards: the cluster reports shards done, not bytes.
        progress.start("snapshot (shards)", None);
        let (mut last_total, mut last_done) = (0, 0);
        let taken = cluster::take(
            &c,
            &opts.repository,
            &name,
            &CreateRequest {
                indices: selection.request.clone(),
                include_global_state: opts.include_global_state,
                metadata: json!({"taken_by": "lifeboat", "source": source_name}),
            },
            opts.timeout,
            &mut |done, total| {
                if total != last_total {
                    progress.set_total(total);
                    last_total = total;
                }
                if done > last_done {
                    progress.advance(done - last_done);
                    last_done = done;
                }
            },
        );
        progress.finish();
        drop(done_tx);
        let taken = taken?;
        clock.lap("snapshot");
        if let Err(e) = check(&taken, &names) {
            // Not recorded, so not kept: the cluster deletes what only it used.
            let cleanup = cluster::delete_snapshot(&c, &opts.repository, &name);
            return Err(match (e, cleanup) {
                (ElasticError::SnapshotFailed { snapshot, reason }, Ok(())) => {
                    ElasticError::SnapshotFailed {
                        snapshot,
                        reason: format!(
                            "{reason}; it was deleted from repository {}",
                            opts.repository
                        ),
                    }
                }
                (e, _) => e,
            });
        }
        let meta_of = |after: &Counted| EsMeta {
            mode: opts.mode,
            cluster: info.clone(),
            repository: opts.repository.clone(),
            snapshot: name.clone(),
            snapshot_uuid: taken.uuid.clone(),
            state: taken.state.clone(),
            start_ms: taken.start_ms,
            end_ms: taken.end_ms,
            shards: taken.shards_total,
            include_global_state: opts.include_global_state,
            patterns: opts.indices.clone(),
            indices: chosen
                .iter()
                .map(|f| {
                    (
                        f.index.clone(),
                        IndexRecord {
                            docs: after.before(f, &before),
                            docs_after: after.docs.get(&f.index).copied().unwrap_or(f.docs),
                            primaries: f.primaries,
                            replicas: f.replicas,
                            store_bytes: f.store_bytes,
                            uuid: f.uuid.clone(),
                        },
                    )
                })
                .collect(),
            data_streams: selection.data_streams.clone(),
        };
        let (outcome, meta, trimmed) = match staging {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(ElasticError::Refused(format!(
                        "the staging repository {} is not here, though the cluster wrote snapshot {name} into it: lifeboat must see the nodes' staging directory (a shared mount; staging_location gives the path as the nodes see it when it differs)",
                        dir.display()
                    )));
                }
                let done = ingest(
                    repo,
                    opts,
                    &Staged {
                        client: &c,
                        source_name: &source_name,
                        dir: &dir,
                        names: &names,
                        uuid: &taken.uuid,
                        at,
                    },
                    trim_rx,
                    &meta_of,
                    progress,
                )?;
                clock.lap("counts, trim and ingest");
                done
            }
            None => {
                let recorded = Counted::take(&c, &names).and_then(|counted| {
                    let meta = meta_of(&counted);
                    record(repo, opts, &source_name, at, &meta, &taken).map(|o| (o, meta))
                });
                match recorded {
                    Ok((o, meta)) => (o, meta, Vec::new()),
                    Err(e) => {
                        // Not recorded, so nothing would ever retain or delete it.
                        if let Err(d) = cluster::delete_snapshot(&c, &opts.repository, &name) {
                            tracing::warn!(
                                "snapshot {name} could not be recorded nor deleted: {d}"
                            );
                        }
                        return Err(e);
                    }
                }
            }
        };
        Ok(EsBackupOutcome {
            outcome,
            meta,
            trimmed,
        })
    })
}

/// The indices as counted after the snapshot: documents (after a refresh)
/// and then write counts.
struct Counted {
    docs: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
}

impl Counted {
    fn take(c: &Client, names: &[String]) -> Result<Counted> {
        let docs = cluster::doc_counts(c, names)?;
        let ops = cluster::write_ops(c, names).unwrap_or_default();
        Ok(Counted { docs, ops })
    }

    /// The documents of `index` just before the snapshot: the count after,
    /// when no write came in between (its write count unchanged since
    /// `ops_before`); else what the listing before showed (without a
    /// refresh, so perhaps short of the last writes).
    fn before(&self, index: &IndexFacts, ops_before: &BTreeMap<String, u64>) -> u64 {
        let unchanged = matches!(
            (ops_before.get(&index.index), self.ops.get(&index.index)),
            (Some(a), Some(b)) if a == b
        );
        match self.docs.get(&index.index) {
            Some(&after) if unchanged => after,
            _ => index.docs,
        }
    }
}

/// A checking thread's answer; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The snapshot repository a backup writes to, ready and verified by the
/// cluster: ingest registers the staging `fs` repository (or finds it
/// registered where expected) and returns its directory; orchestrate needs
/// the one the cluster owns.
fn prepare_repository(c: &Client, opts: &EsBackupOptions) -> Result<Option<PathBuf>> {
    let staging = match opts.mode {
        Mode::Ingest => {
            let dir = opts.staging_dir.as_deref().ok_or_else(|| {
                ElasticError::Refused(
                    "ingest mode needs a staging directory (the source's staging_dir, or --staging-dir): a directory in path.repo of every node that lifeboat reads too".into(),
                )
            })?;
            let location = staging_location(dir, opts.staging_location.as_deref());
            match cluster::repository(c, &opts.repository)? {
                None => cluster::register_fs(c, &opts.repository, &location, false)?,
                Some(v) => {
                    let typ = v["type"].as_str().unwrap_or_default();
                    let loc = v["settings"]["location"].as_str().unwrap_or_default();
                    if typ != "fs" || loc.trim_end_matches('/') != location {
                        return Err(ElasticError::Refused(format!(
                            "the cluster already has a snapshot repository {:?} of type {typ} at {loc:?}, not the staging repository lifeboat expects (fs at {location}): name another with the source's repository (or --repository), or switch the source to mode = \"orchestrate\"",
                            opts.repository
                        )));
                    }
                }
            }
            Some(dir.join(STAGING_REPOSITORY_DIR))
        }
        Mode::Orchestrate => {
            if cluster::repository(c, &opts.repository)?.is_none() {
                return Err(ElasticError::Refused(format!(
                    "the cluster at {} has no snapshot repository {:?}: orchestrate mode uses one the cluster owns (register it with PUT _snapshot/{}), or use ingest mode",
                    c.target(),
                    opts.repository,
                    opts.repository
                )));
            }
            None
        }
    };
    cluster::verify_repository(c, &opts.repository)?;
    Ok(staging)
}

/// Debug timings of a backup's phases (`LIFEBOAT_LOG=debug`).
struct Clock(std::time::Instant);

impl Clock {
    fn start() -> Self {
        Clock(std::time::Instant::now())
    }
    fn lap(&mut self, phase: &str) {
        tracing::debug!(
            "es backup: {phase} took {} ms",
            self.0.elapsed().as_millis()
        );
        self.0 = std::time::Instant::now();
    }
}

/// Deletes this source's older snapshots (`lifeboat-<source>-…`) from the
/// staging repository, so that it keeps only `newest`: the next snapshot is
/// incremental against it, and what the staging repository holds is what
/// is stored. Deleted through the cluster, never by removing files, and
/// asked for as soon as the cluster has `newest` in hand: the cluster
/// queues the deletion behind it and carries it out right as it ends, with
/// no round trip of lifeboat's in between, so the deletion costs the
/// backup almost nothing. Nothing is deleted when `newest` never started
/// (`done` ends first and the cluster does not have it). A cluster that
/// refuses a deletion while a snapshot runs (before 7.8), a call that times
/// out while it waits (a snapshot longer than the connection's timeout; the
/// cluster keeps the queued deletion) or a listing that fails gets the
/// deletions again once the snapshot is over. Should `newest` fail, time
/// out, or not be ingested after all, the next snapshot copies everything.
fn trim_during(
    c: &Client,
    repository: &str,
    source_name: &str,
    newest: &str,
    done: &std::sync::mpsc::Receiver<()>,
) -> Result<Vec<String>> {
    let started = loop {
        if let Ok(Some(_)) = cluster::snapshot(c, repository, newest) {
            break true;
        }
        match done.recv_timeout(Duration::from_millis(25)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            _ => break matches!(cluster::snapshot(c, repository, newest), Ok(Some(_))),
        }
    };
    if !started {
        return Ok(Vec::new());
    }
    let own = names::source_prefix(source_name);
    let older_of = |list: Vec<cluster::SnapshotInfo>| -> Vec<String> {
        list.into_iter()
            .map(|s| s.snapshot)
            .filter(|s| s != newest && s.starts_with(&own))
            .collect()
    };
    let early = cluster::snapshots(c, repository)
        .map(older_of)
        .and_then(|older| {
            for old in &older {
                cluster::delete_snapshot(c, repository, old)?;
            }
            Ok(older)
        });
    match early {
        Ok(older) => Ok(older),
        Err(e) => {
            if e.class() == lifeboat_repo::ErrorClass::Transient {
                tracing::debug!("trimming while {newest} runs: {e}; again once it ends");
            } else {
                tracing::warn!("trimming while {newest} runs: {e}; again once it ends");
            }
            let _ = done.recv();
            let older = older_of(cluster::snapshots(c, repository)?);
            for old in &older {
                cluster::delete_snapshot(c, repository, old)?;
            }
            Ok(older)
        }
    }
}

/// Takes the staging directory's lock file, or says who holds it.
fn lock_staging(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lifeboat-backup.lock");
    std::fs::create_dir_all(dir)
        .map_err(|e| ElasticError::io("create the staging directory", dir, e))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ElasticError::io("open the staging lock", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(ElasticError::NotReady(format!(
            "another es backup is using the staging directory {} (it holds {}): wait for it to finish; two sources must not share a staging_dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(ElasticError::io("lock", &path, e)),
    }
}

/// What a backup takes: indices and data streams.
struct Selection {
    /// Every concrete index: the chosen ones and the chosen data streams'
    /// backing indices.
    indices: Vec<IndexFacts>,
    /// The chosen data streams and their backing indices.
    data_streams: BTreeMap<String, Vec<String>>,
    /// The names the snapshot is asked for: indices and data streams.
    request: Vec<String>,
}

/// The indices and data streams to back up: those the patterns select
/// (every open index and data stream when none, the dot-prefixed system
/// and plugin indices left out), each present and open.
/// `all` is `_cat/indices/*`, which leaves hidden indices out, data
/// streams' backing indices (`.ds-…`) among them: data streams are listed
/// on their own (`streams`).
fn choose_indices(
    c: &Client,
    patterns: &[String],
    all: Vec<IndexFacts>,
    streams: BTreeMap<String, Vec<String>>,
) -> Result<Selection> {
    let parts: Vec<String> = patterns
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let backing: std::collections::BTreeSet<&String> = streams.values().flatten().collect();
    let mut all_names: Vec<String> = all
        .iter()
        .map(|i| i.index.clone())
        .filter(|n| !backing.contains(n))
        .collect();
    all_names.extend(streams.keys().cloned());
    all_names.sort();
    for p in parts.iter().filter(|p| !p.starts_with('-')) {
        if names::select(&all_names, std::slice::from_ref(p)).is_empty() {
            return Err(ElasticError::Refused(format!(
                "--index {p} matches no index or data stream in the cluster at {} (it has: {}); check the pattern",
                c.target(),
                summary(&all_names)
            )));
        }
    }
    // With no pattern, every open index and data stream but the
    // dot-prefixed ones (system and plugin indices: `.kibana`,
    // `.opendistro_security`, … which a snapshot without the global state
    // leaves out, as the cluster's own default does); a pattern may still
    // name them.
    let request: Vec<String> = if parts.is_empty() {
        all_names
            .iter()
            .filter(|n| !n.starts_with('.'))
            .cloned()
            .collect()
    } else {
        names::select(&all_names, &parts)
    };
    let data_streams: BTreeMap<String, Vec<String>> = streams
        .into_iter()
        .filter(|(n, _)| request.contains(n))
        .collect();
    let mut indices: Vec<IndexFacts> = all
        .into_iter()
        .filter(|i| request.contains(&i.index))
        .collect();
    let wanted_backing: Vec<String> = data_streams.values().flatten().cloned().collect();
    for chunk in cluster::chunks(&wanted_backing) {
        indices.extend(cluster::cat_indices(c, &chunk.join(","))?);
    }
    indices.sort_by(|a, b| a.index.cmp(&b.index));
    let closed: Vec<&str> = indices
        .iter()
        .filter(|i| i.status == "close")
        .map(|i| i.index.as_str())
        .collect();
    if !closed.is_empty() {
        return Err(ElasticError::NotReady(format!(
            "index {} is closed, and a snapshot cannot read a closed index: open it (POST {}/_open) or leave it out (--index with -{})",
            closed.join(", "),
            closed.join(","),
            closed[0]
        )));
    }
    if request.is_empty() {
        return Err(ElasticError::Refused(format!(
            "the cluster at {} has no open index or data stream to back up{}",
            c.target(),
            if parts.is_empty() {
                String::new()
            } else {
                format!(" that {} selects", parts.join(","))
            }
        )));
    }
    Ok(Selection {
        indices,
        data_streams,
        request,
    })
}

fn summary(names: &[String]) -> String {
    if names.is_empty() {
        return "no index".into();
    }
    let mut s = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        s.push_str(&format!(" and {} more", names.len() - 10));
    }
    s
}

/// A snapshot counts only when it succeeded with every shard and holds
/// every asked index.
fn check(taken: &SnapshotInfo, asked: &[String]) -> Result<()> {
    let fail = |reason: String| {
        Err(ElasticError::SnapshotFailed {
            snapshot: taken.snapshot.clone(),
            reason,
        })
    };
    if taken.state != "SUCCESS" {
        let mut why = format!("the cluster reports it {}", taken.state);
        if let Some(r) = &taken.reason {
            why.push_str(&format!(" ({r})"));
        }
        if !taken.failures.is_empty() {
            why.push_str(&format!(", shard failures: {}", taken.failures.join("; ")));
        }
        return fail(why);
    }
    if taken.shards_failed > 0 {
        return fail(format!(
            "{} of {} shards failed: {}",
            taken.shards_failed,
            taken.shards_total,
            taken.failures.join("; ")
        ));
    }
    let missing: Vec<&String> = asked
        .iter()
        .filter(|i| !taken.indices.contains(i))
        .collect();
    if !missing.is_empty() {
        return fail(format!(
            "it lacks asked indices: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// `name`, or `name-2`, `name-3` … when the repository holds it already.
fn free_name(c: &Client, repo: &str, name: &str) -> Result<String> {
    let mut candidate = name.to_string();
    for n in 2..100 {
        if cluster::snapshot(c, repo, &candidate)?.is_none() {
            return Ok(candidate);
        }
        candidate = format!("{name}-{n}");
    }
    Ok(candidate)
}

/// What an ingest stores: the staging directory the cluster wrote the
/// snapshot `uuid` into, the indices to count again.
struct Staged<'a> {
    client: &'a Client,
    source_name: &'a str,
    dir: &'a Path,
    names: &'a [String],
    /// The snapshot's UUID in the cluster.
    uuid: &'a str,
    at: Timestamp,
}

/// Stores the staging repository's files, with three things at once: the
/// document counts after the snapshot are taken, the cluster deletes the
/// older snapshots from the staging repository (its own time, about a
/// tenth of a second, is otherwise added to every backup), and the files
/// the new snapshot wrote are read. Once the deletion is done, the
/// directory is walked again and that is what is recorded (see
/// [`lifeboat_repo::TreePolicy::settle`]): only this snapshot's files,
/// every one of them unchanged by the deletion, which never touches the
/// newest snapshot's blobs. Returns what was stored, the record, and the
/// snapshots deleted.
fn ingest(
    repo: &Repository,
    opts: &EsBackupOptions,
    staged: &Staged<'_>,
    trimming: std::sync::mpsc::Receiver<Result<Vec<String>>>,
    meta_of: &(dyn Fn(&Counted) -> EsMeta + Sync),
    progress: &dyn Progress,
) -> Result<(BackupOutcome, EsMeta, Vec<String>)> {
    let tree = TreeBackupOptions {
        roots: vec![TreeRoot {
            path: staged.dir.to_path_buf(),
            prefix: Some(REPOSITORY_ITEM.into()),
        }],
        source_kind: SOURCE_KIND.into(),
        source_name: staged.source_name.to_string(),
        paths: vec![staged.source_name.to_string()],
        tags: opts.tags.clone(),
        allow_partial: false,
        force_read: false,
        hostname: opts.hostname.clone(),
        time: Some(staged.at),
        metadata: BTreeMap::new(),
        wal_hold: None,
    };
    let c = staged.client;
    std::thread::scope(|s| {
        let after = s.spawn(|| Counted::take(c, staged.names));
        let policy = StagingFiles {
            trim: Mutex::new(Some(trimming)),
            trimmed: Mutex::new(Vec::new()),
        };
        let mut meta = None;
        // The cluster's blobs are immutable and uniquely named (only the
        // root's index-N and index.latest change, and they are read
        // again): files unchanged since the parent are taken from it
        // unread.
        let stored = repo.backup_tree(&tree, &policy, progress, |draft| {
            whole(draft.nodes(), staged.uuid).map_err(|e| RepoError::Source(Box::new(e)))?;
            let after = joined(after).map_err(|e| RepoError::Source(Box::new(e)))?;
            let m = meta_of(&after);
            for (k, v) in m.entries().map_err(|e| RepoError::Source(Box::new(e)))? {
                draft.set_metadata(&k, v);
            }
            meta = Some(m);
            Ok(())
        });
        let stored = stored.map_err(ElasticError::from_repo)?;
        let trimmed = std::mem::take(&mut *lock(&policy.trimmed));
        let meta = meta.ok_or_else(|| {
            ElasticError::Repo(RepoError::Failed(
                "the backup was saved without its record".into(),
            ))
        })?;
        Ok((stored, meta, trimmed))
    })
}

/// Refuses to record a staging repository read without what restoring the
/// snapshot needs first: a root generation (`index-N`) and the snapshot's
/// own description (`snap-<uuid>.dat`). Their absence means lifeboat did
/// not see what the nodes wrote (a shared mount showing a listing it
/// cached).
fn whole(nodes: &[lifeboat_repo::Node], uuid: &str) -> Result<()> {
    let root = format!("{REPOSITORY_ITEM}/");
    let file = |n: &&lifeboat_repo::Node| {
        n.kind == lifeboat_repo::NodeKind::File && n.path.starts_with(&root)
    };
    let generation = nodes.iter().filter(file).any(|n| {
        n.path[root.len()..]
            .strip_prefix("index-")
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
    });
    let described = uuid.is_empty()
        || nodes
            .iter()
            .filter(file)
            .any(|n| n.path[root.len()..] == format!("snap-{uuid}.dat"));
    if generation && described {
        return Ok(());
    }
    Err(ElasticError::NotReady(format!(
        "the staging repository as read here lacks {}: lifeboat does not see what the nodes wrote. On a shared mount, mount it on this host with attribute caching off (NFS: actimeo=0), then back up again",
        if generation {
            format!("snap-{uuid}.dat, the snapshot's description")
        } else {
            "its root generation file (index-N)".to_string()
        }
    )))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The staging repository's files: every one, as written. One that
/// vanishes between the walk and its read was a blob of a trimmed snapshot
/// the cluster removed (the newest snapshot's are never removed), so it is
/// left out rather than failing the backup. The trim runs while the files
/// are read; [`StagingFiles::settle`] waits for it.
struct StagingFiles {
    /// The trim's answer, once.
    trim: Mutex<Option<std::sync::mpsc::Receiver<Result<Vec<String>>>>>,
    /// The snapshots it deleted.
    trimmed: Mutex<Vec<String>>,
}

impl lifeboat_repo::TreePolicy for StagingFiles {
    fn filter(&self, name: &str, _meta: &std::fs::Metadata) -> lifeboat_repo::Filter {
        if name.ends_with(".lifeboat-backup.lock") {
            lifeboat_repo::Filter::Skip
        } else {
            lifeboat_repo::Filter::Keep
        }
    }
    fn vanished_is_fine(&self) -> bool {
        true
    }
    /// The data blobs (`__…`) and each snapshot's own files
    /// (`snap-<uuid>.dat`, `meta-<uuid>.dat`) are written once under a
    /// unique name; the generations (`index-N`, `index.latest`, the
    /// shards' `index-…`) are what a deletion writes, and are read again.
    fn immutable(&self, name: &str) -> bool {
        let file = name.rsplit('/').next().unwrap_or(name);
        file.starts_with("__")
            || ((file.starts_with("snap-") || file.starts_with("meta-")) && file.ends_with(".dat"))
    }
    fn settle(&self) -> lifeboat_repo::Result<bool> {
        let Some(rx) = lock(&self.trim).take() else {
            return Ok(false);
        };
        match rx.recv() {
            Ok(Ok(deleted)) => {
                let changed = !deleted.is_empty();
                *lock(&self.trimmed) = deleted;
                Ok(changed)
            }
            Ok(Err(e)) => Err(RepoError::Source(Box::new(e))),
            Err(_) => Err(RepoError::Failed(
                "the staging repository's trim stopped without an answer".into(),
            )),
        }
    }
}

fn record(
    repo: &Repository,
    opts: &EsBackupOptions,
    source_name: &str,
    at: Timestamp,
    meta: &EsMeta,
    taken: &SnapshotInfo,
) -> Result<BackupOutcome> {
    let mut draft = repo.stream_snapshot(&SnapshotOptions {
        time: Some(at),
        ..SnapshotOptions::named(SOURCE_KIND, source_name, &opts.hostname, &opts.tags)
    })?;
    let text = serde_json::to_vec_pretty(taken).unwrap_or_default();
    draft.add_stream(
        SNAPSHOT_ITEM,
        std::io::Cursor::new(text),
        &lifeboat_repo::NoProgress,
    )?;
    for (k, v) in meta.entries()? {
        draft.set_metadata(&k, v);
    }
    Ok(draft.commit()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(state: &str, failed: u64, indices: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            snapshot: "lifeboat-logs-2026.11.28-01.00.00".into(),
            state: state.into(),
            indices: indices.iter().map(|s| s.to_string()).collect(),
            shards_total: 4,
            shards_failed: failed,
            failures: if failed > 0 {
                vec!["logs-1[2]: IndexShardSnapshotFailedException".into()]
            } else {
                vec![]
            },
            ..SnapshotInfo::default()
        }
    }

    fn node(path: &str) -> lifeboat_repo::Node {
        lifeboat_repo::Node {
            path: path.into(),
            kind: lifeboat_repo::NodeKind::File,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            target: None,
            rdev: 0,
            content: Vec::new(),
        }
    }

    /// A staging repository read without its root generation or the
    /// snapshot's description is not recorded, and the message says why.
    #[test]
    fn a_staging_repository_read_without_its_root_is_refused() {
        let ok = [
            node("repository/index-12"),
            node("repository/index.latest"),
            node("repository/snap-abc.dat"),
            node("repository/indices/x/0/__blob"),
        ];
        assert!(whole(&ok, "abc").is_ok());
        let e = whole(&ok[1..], "abc").unwrap_err();
        assert!(e.to_string().contains("root generation file"), "{e}");
        let e = whole(&ok, "other").unwrap_err();
        assert!(e.to_string().contains("snap-other.dat"), "{e}");
        // `index-` alone, or a shard's generation, is not the root's.
        let shard_only = [
            node("repository/indices/x/0/index-3"),
            node("repository/snap-abc.dat"),
        ];
        assert!(whole(&shard_only, "abc").is_err());
    }

    /// Blobs and each snapshot's own files are written once; the
    /// generations a deletion rewrites are read again after it.
    #[test]
    fn only_uniquely_named_blobs_count_as_immutable() {
        use lifeboat_repo::TreePolicy;
        let p = StagingFiles {
            trim: Mutex::new(None),
            trimmed: Mutex::new(Vec::new()),
        };
        for name in [
            "repository/indices/x/0/__Ab3",
            "repository/snap-abc.dat",
            "repository/indices/x/0/snap-abc.dat",
            "repository/meta-abc.dat",
        ] {
            assert!(p.immutable(name), "{name}");
        }
        for name in [
            "repository/index-12",
            "repository/index.latest",
            "repository/indices/x/0/index-Zq1",
            "repository/snap-abc.tmp",
        ] {
            assert!(!p.immutable(name), "{name}");
        }
    }

    /// The count before a snapshot is the exact count after it when the
    /// index took no write in between, and the unrefreshed listing's
    /// otherwise (the restore then checks a range, not one number).
    #[test]
    fn the_count_before_is_exact_only_when_nothing_was_written() {
        let facts = |name: &str, docs: u64| IndexFacts {
            index: name.into(),
            docs,
            ..IndexFacts::default()
        };
        let map = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let after = Counted {
            docs: map(&[("quiet", 120), ("busy", 130)]),
            ops: map(&[("quiet", 7), ("busy", 12)]),
        };
        let ops_before = map(&[("quiet", 7), ("busy", 9)]);
        // Listed as 100 before the refresh; nothing written since.
        assert_eq!(after.before(&facts("quiet", 100), &ops_before), 120);
        // Written to meanwhile: the listing's count, short of the writes.
        assert_eq!(after.before(&facts("busy", 100), &ops_before), 100);
        // Not counted at all: the listing's.
        assert_eq!(after.before(&facts("new", 5), &ops_before), 5);
    }

    /// What the cluster reports decides alone whether a snapshot counts:
    /// PARTIAL, a failed shard or a missing index never do, each named.
    #[test]
    fn only_a_whole_success_counts() {
        let asked = vec!["logs-1".to_string(), "logs-2".to_string()];
        assert!(check(&taken("SUCCESS", 0, &["logs-1", "logs-2"]), &asked).is_ok());
        let e = check(&taken("PARTIAL", 1, &["logs-1", "logs-2"]), &asked).unwrap_err();
        assert!(e.to_string().contains("reports it PARTIAL"), "{e}");
        assert!(e.to_string().contains("logs-1[2]"), "{e}");
        let e = check(&taken("SUCCESS", 1, &["logs-1", "logs-2"]), &asked).unwrap_err();
        assert!(e.to_string().contains("1 of 4 shards failed"), "{e}");
        let e = check(&taken("SUCCESS", 0, &["logs-1"]), &asked).unwrap_err();
        assert!(e.to_string().contains("lacks asked indices: logs-2"), "{e}");
        let e = check(&taken("FAILED", 0, &[]), &asked).unwrap_err();
        assert_eq!(e.class(), lifeboat_repo::ErrorClass::Failure);
        assert!(e.to_string().contains("nothing was recorded"), "{e}");
    }
}
