//! The OpenSearch sandbox runs a real node: an `fs` snapshot of an index is
//! taken and restored through its REST API.

use lifeboat_scenarios::sandbox::opensearch::{LocalOpenSearch, Response};

const DOCS: usize = 1000;

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
    let r = ok(node, "GET", &format!("/{index}/_count"), None);
    r.body["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {}", r.body))
}

#[test]
fn opensearch_node_snapshots_and_restores_an_index_in_an_fs_repository() {
    let node = LocalOpenSearch::start().unwrap_or_else(|e| panic!("{e}"));

    let mut bulk = String::new();
    for i in 0..DOCS {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"books\",\"_id\":\"{i}\"}}}}\n"
        ));
        bulk.push_str(&format!(
            "{{\"n\":{i},\"title\":\"book {i}\",\"tags\":[\"t{}\"]}}\n",
            i % 7
        ));
    }
    let r = ok(&node, "POST", "/_bulk?refresh=true", Some(&bulk));
    assert_eq!(r.body["errors"], false, "bulk errors: {}", r.body);
    assert_eq!(count(&node, "books"), DOCS as u64);

    let location = node.repo_dir().join("backups");
    let repo = serde_json::json!({"type": "fs", "settings": {"location": location}});
    ok(&node, "PUT", "/_snapshot/backups", Some(&repo.to_string()));

    let r = ok(
        &node,
        "PUT",
        "/_snapshot/backups/snap-1?wait_for_completion=true",
        Some(r#"{"indices":"books"}"#),
    );
    let snap = &r.body["snapshot"];
    assert_eq!(snap["state"], "SUCCESS", "snapshot: {snap}");
    assert_eq!(snap["shards"]["failed"], 0, "snapshot: {snap}");
    assert!(
        location.join("index.latest").is_file(),
        "no repository files in {}",
        location.display()
    );

    ok(&node, "DELETE", "/books", None);
    let gone = node
        .request("GET", "/books/_count", None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gone.status, 404, "the index should be gone: {}", gone.body);

    let r = ok(
        &node,
        "POST",
        "/_snapshot/backups/snap-1/_restore?wait_for_completion=true",
        Some(r#"{"indices":"books"}"#),
    );
    assert_eq!(
        r.body["snapshot"]["shards"]["failed"], 0,
        "restore: {}",
        r.body
    );
    assert_eq!(count(&node, "books"), DOCS as u64);
}
