//! Elasticsearch/OpenSearch end to end: a real OpenSearch 2.19 node
//! (testkit/opensearch, started on a free loopback port with its own data
//! and `path.repo`), snapshotted through `lifeboat es backup` and restored
//! with `lifeboat es restore`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lifeboat_scenarios::sandbox::opensearch::{LocalOpenSearch, Response};

use crate::harness::{stderr, Backend, Env};

fn node() -> LocalOpenSearch {
    LocalOpenSearch::start().unwrap_or_else(|e| panic!("{e}"))
}

fn ok(node: &LocalOpenSearch, method: &str, path: &str, body: Option<&str>) -> Response {
    let r = node
        .request(method, path, body)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (200..300).contains(&r.status),
        "{method} {path} answered {}: {}\nnode log:\n{}",
        r.status,
        r.body,
        node.log_tail(20)
    );
    r
}

fn count(node: &LocalOpenSearch, index: &str) -> u64 {
    ok(node, "POST", &format!("/{index}/_refresh"), None);
    let r = ok(node, "GET", &format!("/{index}/_count"), None);
    r.body["count"].as_u64().unwrap()
}

/// `n` documents with ids `first..first+n` into `index`.
fn index_docs(node: &LocalOpenSearch, index: &str, first: usize, n: usize) {
    let mut bulk = String::new();
    for i in first..first + n {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{i}\"}}}}\n"
        ));
        bulk.push_str(&format!(
            "{{\"n\":{i},\"title\":\"document {i} of {index}\",\"body\":\"{}\",\"tag\":\"t{}\"}}\n",
            "lorem ipsum dolor sit amet ".repeat(1 + i % 5),
            i % 11
        ));
    }
    let r = ok(node, "POST", "/_bulk?refresh=true", Some(&bulk));
    assert_eq!(r.body["errors"], false, "bulk errors: {}", r.body);
}

/// A repository, a node and a config naming it as source `logs` (ingest,
/// staging under the node's path.repo).
struct EsEnv {
    env: Env,
    node: LocalOpenSearch,
    cfg: PathBuf,
    staging: PathBuf,
}

impl EsEnv {
    fn new(extra: &str) -> EsEnv {
        let env = Env::new(Backend::Local);
        env.init(&[]);
        let node = node();
        let staging = node.repo_dir().join("lifeboat-logs");
        let cfg = env.path("lifeboat.toml");
        std::fs::write(
            &cfg,
            format!(
                "[elasticsearch.logs]\nurl = \"{}\"\nstaging_dir = \"{}\"\n{extra}",
                node.url(),
                staging.display()
            ),
        )
        .unwrap();
        EsEnv {
            env,
            node,
            cfg,
            staging,
        }
    }

    /// Source `logs` in orchestrate mode, with `owned`, an fs repository
    /// the cluster owns.
    fn orchestrated() -> EsEnv {
        let e = EsEnv::new("mode = \"orchestrate\"\nrepository = \"owned\"\n");
        let owned = e.node.repo_dir().join("owned");
        ok(
            &e.node,
            "PUT",
            "/_snapshot/owned",
            Some(&serde_json::json!({"type": "fs", "settings": {"location": owned}}).to_string()),
        );
        e
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["--config", self.cfg.to_str().unwrap()];
        a.extend_from_slice(rest);
        a
    }

    fn json(&self, rest: &[&str]) -> serde_json::Value {
        self.env.json(&self.args(rest))
    }

    fn fails(&self, rest: &[&str], code: i32, needle: &str) -> String {
        let out = self.env.run(&self.args(rest));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "lifeboat {rest:?} should exit {code}: {err}\nnode log:\n{}",
            self.node.log_tail(10)
        );
        assert!(
            err.contains(needle),
            "lifeboat {rest:?}: {needle:?} not in: {err}"
        );
        err
    }

    /// The source's own retention table: the newest snapshot only.
    fn keep_last_one(&self) {
        let text = std::fs::read_to_string(&self.cfg).unwrap();
        std::fs::write(
            &self.cfg,
            format!("{text}[elasticsearch.logs.retention]\nkeep_last = 1\n"),
        )
        .unwrap();
    }

    fn es_snapshots(&self) -> usize {
        self.env.json(&["snapshots"]).as_array().unwrap().len()
    }

    /// The cluster's snapshots in a repository, by name.
    fn cluster_snapshots(&self, repo: &str) -> Vec<String> {
        let r = ok(&self.node, "GET", &format!("/_snapshot/{repo}/_all"), None);
        r.body["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["snapshot"].as_str().unwrap().to_string())
            .collect()
    }
}

fn counts(node: &LocalOpenSearch, names: &[&str]) -> BTreeMap<String, u64> {
    names
        .iter()
        .map(|n| (n.to_string(), count(node, n)))
        .collect()
}

/// Ingest mode, the whole way: two backups (the second incremental in the
/// cluster and deduplicated in the repository, the staging repository
/// trimmed to the newest snapshot through the API), a restore of a deleted
/// index with its counts checked, a restore under new names beside the
/// originals, a refusal to restore over an open index and `--replace`, and
/// the staging registrations gone afterwards.
#[test]
fn ingest_backup_and_restore_with_counts_renames_and_replace() {
    let e = EsEnv::new("indices = [\"books\", \"logs-*\"]\n");
    index_docs(&e.node, "books", 0, 3000);
    index_docs(&e.node, "logs-1", 0, 1500);
    index_docs(&e.node, "logs-2", 0, 800);
    index_docs(&e.node, "other", 0, 10);

    let first = e.json(&["es", "backup", "logs"]);
    assert_eq!(first["state"], "SUCCESS", "{first}");
    assert_eq!(first["mode"], "ingest");
    let name1 = first["es_snapshot"].as_str().unwrap().to_string();
    assert!(name1.starts_with("lifeboat-logs-"), "{name1}");
    let recorded: Vec<&str> = first["indices"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        recorded,
        ["books", "logs-1", "logs-2"],
        "other is not asked"
    );
    assert_eq!(first["indices"]["books"]["docs"], 3000);
    assert_eq!(first["cluster"]["distribution"], "opensearch");
    assert!(e.staging.join("snapshots/index.latest").is_file());

    // A day's change: new documents, some updated.
    index_docs(&e.node, "books", 2900, 300);
    index_docs(&e.node, "logs-2", 800, 100);
    let second = e.json(&["es", "backup", "logs", "--tag", "daily"]);
    let name2 = second["es_snapshot"].as_str().unwrap().to_string();
    assert_ne!(name1, name2);
    assert_eq!(second["trimmed"], serde_json::json!([name1]));
    assert_eq!(e.cluster_snapshots("lifeboat-logs"), [name2.as_str()]);
    let st = &second["stats"];
    assert!(
        st["bytes_read"].as_u64().unwrap() < st["bytes_total"].as_u64().unwrap(),
        "the second backup re-read every unchanged blob: {st}"
    );
    assert_eq!(second["indices"]["books"]["docs"], 3200);
    assert_eq!(e.es_snapshots(), 2);

    // What a restore killed midway left (its directory, its read-only
    // registration) is swept by the next one.
    let killed = e.staging.join("restore-deadbeef-4194399");
    std::fs::create_dir_all(killed.join("repository")).unwrap();
    let left_behind = serde_json::json!({"type": "fs", "settings": {
        "location": killed.join("repository"), "readonly": true}});
    ok(
        &e.node,
        "PUT",
        "/_snapshot/lifeboat-logs-restore-deadbeef-4194399",
        Some(&left_behind.to_string()),
    );

    // The index is lost; the restore brings it back as recorded.
    let before = counts(&e.node, &["books", "logs-1", "logs-2"]);
    ok(&e.node, "DELETE", "/books", None);
    let r = e.json(&[
        "es", "restore", "latest", "--source", "logs", "--index", "books",
    ]);
    assert_eq!(r["indices"][0]["index"], "books", "{r}");
    assert_eq!(r["indices"][0]["docs"], 3200);
    assert_eq!(r["within_rto"], true);
    assert_eq!(counts(&e.node, &["books", "logs-1", "logs-2"]), before);

    // Beside the originals under new names, from the first backup.
    let first_id = first["snapshot"].as_str().unwrap();
    let r = e.json(&[
        "es",
        "restore",
        first_id,
        "--source",
        "logs",
        "--index",
        "logs-*",
        "--rename-pattern",
        "logs-(.+)",
        "--rename-replacement",
        "restored-logs-$1",
    ]);
    let restored: Vec<&str> = r["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_str().unwrap())
        .collect();
    assert_eq!(restored, ["restored-logs-1", "restored-logs-2"]);
    assert_eq!(
        count(&e.node, "restored-logs-2"),
        800,
        "as in the first backup"
    );
    assert_eq!(count(&e.node, "logs-2"), 900, "the original is untouched");

    // Over an open index: refused, unless --replace.
    let err = e.fails(
        &[
            "es", "restore", first_id, "--source", "logs", "--index", "books",
        ],
        2,
        "already has index books (open)",
    );
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(count(&e.node, "books"), 3200, "nothing changed");
    let r = e.json(&[
        "es",
        "restore",
        first_id,
        "--source",
        "logs",
        "--index",
        "books",
        "--replace",
    ]);
    assert_eq!(r["closed"], serde_json::json!(["books"]));
    assert_eq!(
        count(&e.node, "books"),
        3000,
        "books as in the first backup"
    );

    // Nothing staged is left: one repository registered (the staging one),
    // no restore directory.
    let repos = ok(&e.node, "GET", "/_snapshot", None);
    let names: Vec<&String> = repos.body.as_object().unwrap().keys().collect();
    assert_eq!(names, ["lifeboat-logs"], "{}", repos.body);
    let left: Vec<String> = std::fs::read_dir(&e.staging)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lifeboat-backup.lock")
        .collect();
    assert_eq!(left, ["snapshots"]);

    // Both backups are in the job history; the source is protected, and
    // its last success is exported under the fixed metric name.
    let jobs = e.json(&["jobs", "--source", "logs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");
    assert_eq!(jobs[0]["job"], "elasticsearch.logs.backup", "{jobs}");
    let st = e.json(&["status"]);
    let src = &st["sources"][0];
    assert_eq!(src["kind"], "elasticsearch", "{st}");
    assert_eq!(src["health"], "green", "{st}");
    let metrics = e.env.ok(&e.args(&["metrics"]));
    assert!(
        metrics.contains(
            "lifeboat_backup_last_success_timestamp_seconds{source=\"logs\",kind=\"elasticsearch\",type=\"backup\"}"
        ),
        "{metrics}"
    );

    // The repository proves what it holds.
    e.env.ok(&["verify", "--read-data"]);
}

/// Each way a backup must not count names its cause, exits non-zero and
/// records nothing: an unreachable node, a closed index, a red index, a
/// snapshot already running, a staging repository that fails the cluster's
/// check, an index pattern that matches nothing, a staging path outside
/// path.repo.
#[test]
fn backups_that_cannot_count_are_refused_by_name_and_record_nothing() {
    let e = EsEnv::new("");
    index_docs(&e.node, "books", 0, 200);
    index_docs(&e.node, ".plugin-state", 0, 3);
    let first = e.json(&["es", "backup", "logs"]);
    let indices: Vec<&String> = first["indices"].as_object().unwrap().keys().collect();
    assert_eq!(
        indices,
        ["books"],
        "dot-prefixed indices are left out by default"
    );
    assert_eq!(e.es_snapshots(), 1);

    e.fails(
        &["es", "backup", "logs", "--es-url", "http://127.0.0.1:1"],
        1,
        "cannot reach the cluster at http://127.0.0.1:1",
    );
    e.fails(
        &["es", "backup", "logs", "--index", "nothing-*"],
        2,
        "--index nothing-* matches no index",
    );

    ok(&e.node, "PUT", "/closed-one", None);
    ok(&e.node, "POST", "/closed-one/_close", None);
    ok(
        &e.node,
        "GET",
        "/_cluster/health?wait_for_status=yellow&timeout=30s",
        None,
    );
    e.fails(&["es", "backup", "logs"], 1, "index closed-one is closed");
    ok(&e.node, "DELETE", "/closed-one", None);

    // A primary that can never be assigned: the cluster is red.
    ok(
        &e.node,
        "PUT",
        "/red-one?wait_for_active_shards=0",
        Some(
            r#"{"settings":{"index.routing.allocation.require._name":"no-such-node","number_of_replicas":0}}"#,
        ),
    );
    e.fails(&["es", "backup", "logs"], 1, "is red (red: red-one)");
    ok(&e.node, "DELETE", "/red-one", None);

    // A snapshot someone else runs in the same repository, slowed to a
    // crawl (the registration throttled, at the same place).
    index_docs(&e.node, "big", 0, 20000);
    let throttled = serde_json::json!({"type": "fs", "settings": {
        "location": e.staging.join("snapshots"), "max_snapshot_bytes_per_sec": "20kb"}});
    ok(
        &e.node,
        "PUT",
        "/_snapshot/lifeboat-logs",
        Some(&throttled.to_string()),
    );
    ok(
        &e.node,
        "PUT",
        "/_snapshot/lifeboat-logs/someone-else",
        Some(r#"{"indices":"big"}"#),
    );
    e.fails(
        &["es", "backup", "logs"],
        1,
        "a snapshot is already running in repository lifeboat-logs",
    );
    ok(
        &e.node,
        "DELETE",
        "/_snapshot/lifeboat-logs/someone-else",
        None,
    );
    let plain =
        serde_json::json!({"type": "fs", "settings": {"location": e.staging.join("snapshots")}});
    ok(
        &e.node,
        "PUT",
        "/_snapshot/lifeboat-logs",
        Some(&plain.to_string()),
    );

    // The staging repository breaks under the cluster: its directory
    // becomes a file.
    let repo_dir = e.staging.join("snapshots");
    let aside = e.staging.join("aside");
    std::fs::rename(&repo_dir, &aside).unwrap();
    std::fs::write(&repo_dir, b"not a directory").unwrap();
    e.fails(
        &["es", "backup", "logs"],
        1,
        "fails the cluster's check (_verify)",
    );
    std::fs::remove_file(&repo_dir).unwrap();
    std::fs::rename(&aside, &repo_dir).unwrap();

    // A staging directory outside path.repo.
    let outside = e.env.path("outside");
    e.fails(
        &[
            "es",
            "backup",
            "--es-url",
            &e.node.url(),
            "--staging-dir",
            outside.to_str().unwrap(),
            "--repository",
            "elsewhere",
        ],
        1,
        "path.repo",
    );

    assert_eq!(e.es_snapshots(), 1, "no failed attempt was recorded");
    // And the way back: the next backup counts again.
    e.json(&["es", "backup", "logs"]);
    assert_eq!(e.es_snapshots(), 2);
}

/// Orchestrate mode: the cluster keeps the data in a repository it owns;
/// lifeboat records, restores from it, and `forget` deletes the cluster's
/// copy through the API before the record. The strategy's default policy
/// applies to the kind.
#[test]
fn orchestrate_mode_records_restores_and_forgets_through_the_api() {
    let e = EsEnv::orchestrated();
    index_docs(&e.node, "books", 0, 500);
    let old = e.json(&["es", "backup", "logs", "--time", "2026-01-10T02:00:00Z"]);
    assert_eq!(old["mode"], "orchestrate");
    index_docs(&e.node, "books", 500, 100);
    let new = e.json(&["es", "backup", "logs"]);
    let (old_name, new_name) = (
        old["es_snapshot"].as_str().unwrap().to_string(),
        new["es_snapshot"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        e.cluster_snapshots("owned"),
        [old_name.clone(), new_name.clone()]
    );

    ok(&e.node, "DELETE", "/books", None);
    let r = e.json(&["es", "restore", "latest", "--source", "logs"]);
    assert_eq!(r["indices"][0]["docs"], 600, "{r}");
    assert_eq!(count(&e.node, "books"), 600);

    // The default policy of the kind: 90 days and 84 monthlies. The January
    // snapshot is the month's only one: kept as monthly.
    let plan = e.json(&["forget", "--dry-run"]);
    let series = &plan["series"][0];
    assert_eq!(series["kind"], "elasticsearch");
    assert_eq!(series["policy_from"], "default");
    assert!(
        series["policy"].as_str().unwrap().contains("90d"),
        "{series}"
    );
    assert_eq!(plan["forgotten"], 0, "{plan}");

    // Keep only the newest: the cluster's copy of the other goes first.
    e.keep_last_one();
    let done = e.json(&["forget"]);
    assert_eq!(done["forgotten"], 1, "{done}");
    assert_eq!(e.cluster_snapshots("owned"), [new_name]);
    assert_eq!(e.es_snapshots(), 1);
}

/// A forget whose cluster cannot delete its copy keeps the record, says
/// why and exits 1, so nothing is lost track of.
#[test]
fn forget_keeps_an_orchestrate_record_whose_cluster_copy_cannot_go() {
    let e = EsEnv::orchestrated();
    index_docs(&e.node, "books", 0, 50);
    e.json(&["es", "backup", "logs"]);
    e.json(&["es", "backup", "logs"]);
    e.keep_last_one();
    // The cluster is gone from where the config says it is.
    let out = e
        .env
        .cmd()
        .env("LIFEBOAT_ES_URL", "http://127.0.0.1:1")
        .args(e.args(&["forget"]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kept because the cluster did not delete its copy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e.es_snapshots(), 2, "the record stays");
    assert_eq!(e.cluster_snapshots("owned").len(), 2);
}

/// A dataset of realistic size: 210 000 documents across four indices of
/// different shapes and shard counts, backed up, lost entirely, and
/// restored with every count as recorded and documents read back intact.
#[test]
fn a_200k_document_dataset_is_restored_whole() {
    let e = EsEnv::new("");
    let shapes = [
        ("orders", 3, 90_000),
        ("customers", 1, 40_000),
        ("events-2026.11", 2, 60_000),
        ("events-2026.12", 2, 20_000),
    ];
    for (index, shards, docs) in shapes {
        ok(
            &e.node,
            "PUT",
            &format!("/{index}"),
            Some(&format!(
                r#"{{"settings":{{"number_of_shards":{shards},"number_of_replicas":0}}}}"#
            )),
        );
        for first in (0..docs).step_by(10_000) {
            index_docs(&e.node, index, first, 10_000.min(docs - first));
        }
    }
    let names: Vec<&str> = shapes.iter().map(|s| s.0).collect();
    let before = counts(&e.node, &names);
    assert_eq!(before.values().sum::<u64>(), 210_000);
    let sample = |node: &LocalOpenSearch| -> Vec<serde_json::Value> {
        [
            ("orders", 89_999),
            ("customers", 17),
            ("events-2026.11", 31_337),
        ]
        .iter()
        .map(|(i, id)| ok(node, "GET", &format!("/{i}/_doc/{id}"), None).body["_source"].clone())
        .collect()
    };
    let docs_before = sample(&e.node);

    let b = e.json(&["es", "backup", "logs"]);
    assert_eq!(b["shards"], 8);
    for (index, _, docs) in shapes {
        assert_eq!(b["indices"][index]["docs"], docs, "{index}");
    }

    for index in &names {
        ok(&e.node, "DELETE", &format!("/{index}"), None);
    }
    let r = e.json(&["es", "restore", "latest", "--source", "logs"]);
    assert_eq!(r["indices"].as_array().unwrap().len(), 4, "{r}");
    assert_eq!(counts(&e.node, &names), before);
    assert_eq!(sample(&e.node), docs_before);
    let searched = ok(&e.node, "GET", "/orders/_count?q=tag:t7", None);
    assert!(
        searched.body["count"].as_u64().unwrap() > 8000,
        "{}",
        searched.body
    );
}

/// Data streams are backed up by default with their backing indices (which
/// are hidden, and dot-prefixed), and a lost data stream is restored whole,
/// its rolled-over generations included.
#[test]
fn data_streams_are_backed_up_and_restored_whole() {
    let e = EsEnv::new("");
    index_docs(&e.node, "books", 0, 100);
    ok(
        &e.node,
        "PUT",
        "/_index_template/app-logs",
        Some(
            r#"{"index_patterns":["app-logs*"],"data_stream":{},"priority":100,"template":{"settings":{"number_of_replicas":0}}}"#,
        ),
    );
    let events = |first: usize, n: usize| {
        let mut bulk = String::new();
        for i in first..first + n {
            bulk.push_str("{\"create\":{\"_index\":\"app-logs\"}}\n");
            bulk.push_str(&format!(
                "{{\"@timestamp\":\"2026-11-28T10:{:02}:{:02}Z\",\"n\":{i},\"msg\":\"event {i}\"}}\n",
                (i / 60) % 60,
                i % 60
            ));
        }
        let r = ok(&e.node, "POST", "/_bulk?refresh=true", Some(&bulk));
        assert_eq!(r.body["errors"], false, "bulk errors: {}", r.body);
    };
    events(0, 700);
    ok(&e.node, "POST", "/app-logs/_rollover", None);
    events(700, 300);
    assert_eq!(count(&e.node, "app-logs"), 1000);

    let b = e.json(&["es", "backup", "logs"]);
    let backing = b["data_streams"]["app-logs"].as_array().unwrap().clone();
    assert_eq!(backing.len(), 2, "two generations: {b}");
    let total: u64 = backing
        .iter()
        .map(|ix| b["indices"][ix.as_str().unwrap()]["docs"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1000, "{b}");
    assert_eq!(b["indices"]["books"]["docs"], 100);

    // Restoring over a live data stream is refused by name.
    e.fails(
        &[
            "es", "restore", "latest", "--source", "logs", "--index", "app-logs",
        ],
        2,
        "already has data stream app-logs",
    );
    ok(&e.node, "DELETE", "/_data_stream/app-logs", None);
    let r = e.json(&[
        "es", "restore", "latest", "--source", "logs", "--index", "app-logs",
    ]);
    assert_eq!(r["indices"][0]["index"], "app-logs", "{r}");
    assert_eq!(r["indices"][0]["docs"], 1000, "{r}");
    assert_eq!(count(&e.node, "app-logs"), 1000);
    let streams = ok(&e.node, "GET", "/_data_stream/app-logs", None);
    assert_eq!(
        streams.body["data_streams"][0]["indices"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{}",
        streams.body
    );
}

/// Ingest-mode retention through the same forget and prune as every
/// source: the forgotten snapshots' data goes, the kept one still restores
/// whole and the repository verifies.
#[test]
fn ingest_snapshots_forgotten_and_pruned_leave_the_kept_one_restorable() {
    let e = EsEnv::new("");
    index_docs(&e.node, "books", 0, 2000);
    e.json(&["es", "backup", "logs"]);
    index_docs(&e.node, "books", 2000, 500);
    let second = e.json(&["es", "backup", "logs"]);
    index_docs(&e.node, "books", 1000, 2000);
    let newest = e.json(&["es", "backup", "logs"]);
    assert_eq!(newest["indices"]["books"]["docs"], 3000);
    assert_eq!(
        newest["trimmed"],
        serde_json::json!([second["es_snapshot"]])
    );
    assert_eq!(e.es_snapshots(), 3);

    e.keep_last_one();
    let done = e.json(&["forget", "--prune"]);
    assert_eq!(done["forgotten"], 2, "{done}");
    // The forgotten snapshots' blobs are no longer used: prune finds them.
    let p = &done["prune"];
    assert!(
        p["chunks_used"].as_u64().unwrap() < p["chunks"].as_u64().unwrap(),
        "prune found nothing unused: {p}"
    );
    assert_eq!(e.es_snapshots(), 1);

    ok(&e.node, "DELETE", "/books", None);
    let r = e.json(&["es", "restore", "latest", "--source", "logs"]);
    assert_eq!(r["indices"][0]["docs"], 3000, "{r}");
    assert_eq!(count(&e.node, "books"), 3000);
    e.env.ok(&["verify", "--read-data"]);
}

/// A drill of an ingest-mode snapshot: a throwaway node of its own, the
/// documents counted, the source cluster untouched.
#[test]
fn a_drill_restores_an_ingest_snapshot_into_a_throwaway_node() {
    let e = EsEnv::new("");
    index_docs(&e.node, "books", 0, 1500);
    index_docs(&e.node, "logs-1", 0, 700);
    e.json(&["es", "backup", "logs"]);
    let before = counts(&e.node, &["books", "logs-1"]);
    let record = e.json(&["drill", "logs"]);
    assert_eq!(record["passed"], true, "{record:#}");
    let s = &record["sources"][0];
    assert_eq!(s["kind"], "elasticsearch");
    assert_eq!(s["rto_target_s"], 4 * 3600);
    assert_eq!(s["rpo_target_s"], 24 * 3600);
    let checks: Vec<(String, String)> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let docs = |name: &str| {
        checks
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}: {checks:?}"))
            .1
            .clone()
    };
    assert!(
        docs("docs books").starts_with("1500 documents"),
        "{checks:?}"
    );
    assert!(
        docs("docs logs-1").starts_with("700 documents"),
        "{checks:?}"
    );
    // The source cluster saw nothing of it.
    assert_eq!(counts(&e.node, &["books", "logs-1"]), before);
}
