//! One behaviour suite, run unchanged against every storage backend: local disk,
//! a real Garage S3 server, and both through the retry and fault layers.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lifeboat_storage::{
    DynStorage, ErrorKind, FaultAction, FaultRule, FaultStorage, LocalStorage, Op, RetryPolicy,
    RetryStorage, S3Options, S3Storage, Storage,
};
use lifeboat_testkit::garage::Garage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn conformance(s: DynStorage) {
    // Round trip, including an empty object and one with a nested key.
    s.put("config", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&s.get("config").await.unwrap()[..], b"hello");
    s.put("snapshots/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("snapshots/empty").await.unwrap().len(), 0);

    // Overwrite replaces.
    s.put("config", Bytes::from_static(b"world!"))
        .await
        .unwrap();
    assert_eq!(&s.get("config").await.unwrap()[..], b"world!");

    // A missing object is NotFound, for get and stat alike.
    let err = s.get("snapshots/missing").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("snapshots/missing"), "{err}");
    assert!(s.stat("snapshots/missing").await.unwrap().is_none());

    // Range reads.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.put("packs/ab/abcdef", Bytes::from(big.clone()))
        .await
        .unwrap();
    let got = s
        .get_range("packs/ab/abcdef", 1_000_000..1_000_100)
        .await
        .unwrap();
    assert_eq!(&got[..], &big[1_000_000..1_000_100]);
    assert_eq!(s.get("packs/ab/abcdef").await.unwrap().len(), big.len());
    assert_eq!(
        s.stat("packs/ab/abcdef").await.unwrap().map(|o| o.size),
        Some(big.len() as u64)
    );

    // Listing is recursive, by prefix, and shows sizes.
    s.put("packs/cd/cdef01", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    let mut packs = s.list("packs/").await.unwrap();
    packs.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<_> = packs.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["packs/ab/abcdef", "packs/cd/cdef01"]);
    assert_eq!(packs[1].size, 5);
    assert!(s.list("index/").await.unwrap().is_empty());
    let snaps = s.list("snapshots/").await.unwrap();
    assert_eq!(snaps.len(), 1);

    // Concurrent writers of different keys all land.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(&format!("index/{i:02}"), Bytes::from(vec![i as u8; 1000]))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.list("index/").await.unwrap().len(), 16);
    assert_eq!(&s.get("index/07").await.unwrap()[..], &[7u8; 1000][..]);

    // Delete, and deleting what is gone succeeds.
    s.delete("packs/cd/cdef01").await.unwrap();
    s.delete("packs/cd/cdef01").await.unwrap();
    assert!(s.stat("packs/cd/cdef01").await.unwrap().is_none());
    assert_eq!(s.list("packs/").await.unwrap().len(), 1);
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(30),
    }
}

/// Transient faults under a retry layer are invisible; permanent ones are not.
async fn retry_layer_behaviour(base: DynStorage) {
    let fault = Arc::new(FaultStorage::new(base));
    let s: DynStorage = Arc::new(RetryStorage::new(fault.clone(), fast_retry()));
    fault.add(FaultRule {
        op: Op::Put,
        key_prefix: "packs/".into(),
        skip: 0,
        times: Some(3),
        action: FaultAction::Fail(ErrorKind::Transient),
    });
    s.put("packs/00/retry", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(&s.get("packs/00/retry").await.unwrap()[..], b"x");

    fault.add(FaultRule {
        op: Op::Put,
        key_prefix: "packs/".into(),
        skip: 0,
        times: None,
        action: FaultAction::Fail(ErrorKind::Transient),
    });
    let err = s
        .put("packs/00/never", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    fault.clear();
    assert!(s.stat("packs/00/never").await.unwrap().is_none());

    fault.add(FaultRule {
        op: Op::Get,
        key_prefix: "".into(),
        skip: 0,
        times: Some(1),
        action: FaultAction::Fail(ErrorKind::PermissionDenied),
    });
    let err = s.get("packs/00/retry").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(&s.get("packs/00/retry").await.unwrap()[..], b"x");
}

#[test]
fn local_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let local: DynStorage = Arc::new(LocalStorage::new(dir.path().join("repo")));
        conformance(local.clone()).await;
        retry_layer_behaviour(local).await;
    });
}

#[test]
fn local_storage_leaves_no_temporary_files_and_ignores_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let s = LocalStorage::new(dir.path());
        s.put("snapshots/a", Bytes::from_static(b"a"))
            .await
            .unwrap();
        // A write killed before its rename leaves a temporary file behind.
        std::fs::write(dir.path().join("snapshots/b.tmp-0011223344556677"), b"torn").unwrap();
        let listed = s.list("snapshots/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "snapshots/a");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the object and the stale temp file: {names:?}"
        );
    });
}

fn garage_storage(g: &Garage, prefix: &str) -> DynStorage {
    let opts = S3Options {
        endpoint: Some(g.endpoint.clone()),
        region: Some(g.region.clone()),
        access_key_id: Some(g.access_key_id.clone()),
        secret_access_key: Some(g.secret_access_key.clone()),
        virtual_host_style: false,
    };
    Arc::new(S3Storage::new(&g.bucket, prefix, &opts).unwrap())
}

#[test]
fn garage_s3_storage_conforms() {
    let g = Garage::start().expect("start Garage (run scripts/install-garage.sh)");
    runtime().block_on(async {
        conformance(garage_storage(&g, "repo-a")).await;
        // A second prefix in the same bucket sees nothing of the first.
        let other = garage_storage(&g, "repo-b");
        assert!(other.list("packs/").await.unwrap().is_empty());
        retry_layer_behaviour(other).await;
    });
}

#[test]
fn s3_wrong_credentials_are_named() {
    let g = Garage::start().expect("start Garage (run scripts/install-garage.sh)");
    runtime().block_on(async {
        let opts = S3Options {
            endpoint: Some(g.endpoint.clone()),
            region: Some(g.region.clone()),
            access_key_id: Some(g.access_key_id.clone()),
            secret_access_key: Some("0".repeat(64)),
            virtual_host_style: false,
        };
        let s = S3Storage::new(&g.bucket, "x", &opts).unwrap();
        let err = s.put("config", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("config"), "{err}");
    });
}

#[test]
fn unreachable_s3_endpoint_fails_after_retries_with_a_clear_message() {
    let port = lifeboat_testkit::garage::free_port();
    runtime().block_on(async {
        let opts = S3Options {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("garage".into()),
            access_key_id: Some("GK000".into()),
            secret_access_key: Some("secret".into()),
            virtual_host_style: false,
        };
        let inner: DynStorage = Arc::new(S3Storage::new("bucket", "", &opts).unwrap());
        let s = RetryStorage::new(inner, fast_retry());
        let err = s.get("config").await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string().contains("gave up after 4 attempts"),
            "{err}"
        );
    });
}
