//! One behaviour suite, run unchanged against every storage backend: each
//! case is a test per backend, `CASE::local` (a directory), `CASE::garage` (a
//! real Garage S3 server), `CASE::fault` (a directory through the fault layer,
//! no fault set) and `CASE::layered` (a directory through the retry and
//! concurrency layers `open` stacks). Then each error kind through the fault
//! and retry layers (`error_kinds::…`), and what only one backend has.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lifeboat_storage::{
    Classify, DynStorage, ErrorClass, ErrorKind, FaultAction, FaultRule, FaultStorage,
    LocalStorage, Op, RetryPolicy, RetryStorage, S3Options, S3Storage, Storage, StorageOptions,
};
use lifeboat_testkit::garage::Garage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The stores the suite runs on.
#[derive(Clone, Copy)]
enum Backend {
    Local,
    Garage,
    Fault,
    Layered,
}

/// What keeps a store alive while a case runs: its directory or its server.
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Garage(Garage),
}

/// A fresh, empty store of `backend`.
fn store(backend: Backend) -> (Keep, DynStorage) {
    let local = || {
        let dir = tempfile::tempdir().unwrap();
        let s: DynStorage = Arc::new(LocalStorage::new(dir.path().join("repo")));
        (dir, s)
    };
    match backend {
        Backend::Local => {
            let (dir, s) = local();
            (Keep::Dir(dir), s)
        }
        Backend::Garage => {
            let g = Garage::start().expect("start Garage (run scripts/install-garage.sh)");
            let s = garage_storage(&g, "repo");
            (Keep::Garage(g), s)
        }
        Backend::Fault => {
            let (dir, s) = local();
            (Keep::Dir(dir), Arc::new(FaultStorage::new(s)))
        }
        Backend::Layered => {
            let dir = tempfile::tempdir().unwrap();
            let url = dir.path().join("repo").display().to_string();
            let s = lifeboat_storage::open(&url, &StorageOptions::default()).unwrap();
            (Keep::Dir(dir), s)
        }
    }
}

/// Runs one case on a fresh store of `backend`.
fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(DynStorage) -> Fut,
    Fut: Future<Output = ()>,
{
    let (_keep, s) = store(backend);
    runtime().block_on(case(s));
}

/// Registers the case `async fn $case(s: DynStorage)` defined just above as
/// one test per backend: `$case::local`, `$case::garage`, `$case::fault`,
/// `$case::layered`.
macro_rules! on_every_backend {
    ($case:ident) => {
        mod $case {
            use super::{run, Backend};

            #[test]
            fn local() {
                run(Backend::Local, super::$case);
            }

            #[test]
            fn garage() {
                run(Backend::Garage, super::$case);
            }

            #[test]
            fn fault() {
                run(Backend::Fault, super::$case);
            }

            #[test]
            fn layered() {
                run(Backend::Layered, super::$case);
            }
        }
    };
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What is put is what is got: a small object, an empty one, one under a
/// nested key, one of a few megabytes.
async fn put_then_get_round_trips(s: DynStorage) {
    s.put("config", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&s.get("config").await.unwrap()[..], b"hello");
    s.put("snapshots/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("snapshots/empty").await.unwrap().len(), 0);
    assert_eq!(
        s.stat("snapshots/empty").await.unwrap().map(|o| o.size),
        Some(0)
    );
    let big = pattern(3_000_000);
    s.put("packs/ab/abcdef", Bytes::from(big.clone()))
        .await
        .unwrap();
    assert_eq!(s.get("packs/ab/abcdef").await.unwrap(), big);
    let info = s.stat("packs/ab/abcdef").await.unwrap().unwrap();
    assert_eq!(info.key, "packs/ab/abcdef");
    assert_eq!(info.size, big.len() as u64);
}
on_every_backend!(put_then_get_round_trips);

/// A put over an object replaces it whole.
async fn overwrite_replaces(s: DynStorage) {
    s.put("config", Bytes::from_static(b"hello")).await.unwrap();
    s.put("config", Bytes::from_static(b"world!"))
        .await
        .unwrap();
    assert_eq!(&s.get("config").await.unwrap()[..], b"world!");
    assert_eq!(s.stat("config").await.unwrap().map(|o| o.size), Some(6));
    assert_eq!(s.list("config").await.unwrap().len(), 1);
}
on_every_backend!(overwrite_replaces);

/// A missing object is NotFound for get and ranged get, named in the
/// message, a failure (the caller knows whether it is damage); stat says
/// `None`.
async fn a_missing_object_is_not_found(s: DynStorage) {
    let err = s.get("snapshots/missing").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.is_not_found());
    assert_eq!(err.class(), ErrorClass::Failure);
    assert!(err.to_string().contains("snapshots/missing"), "{err}");
    let err = s.get_range("snapshots/missing", 0..10).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(s.stat("snapshots/missing").await.unwrap().is_none());
}
on_every_backend!(a_missing_object_is_not_found);

/// A ranged read returns exactly the bytes of the range, into a reused
/// buffer too; an empty range is empty.
async fn ranged_reads_return_exactly_the_range(s: DynStorage) {
    let big = pattern(3_000_000);
    s.put("packs/ab/abcdef", Bytes::from(big.clone()))
        .await
        .unwrap();
    let got = s
        .get_range("packs/ab/abcdef", 1_000_000..1_000_100)
        .await
        .unwrap();
    assert_eq!(&got[..], &big[1_000_000..1_000_100]);
    let head = s.get_range("packs/ab/abcdef", 0..1).await.unwrap();
    assert_eq!(&head[..], &big[..1]);
    let tail = s
        .get_range("packs/ab/abcdef", 2_999_000..3_000_000)
        .await
        .unwrap();
    assert_eq!(&tail[..], &big[2_999_000..]);
    let empty = s.get_range("packs/ab/abcdef", 5..5).await.unwrap();
    assert!(empty.is_empty());
    // The buffer's contents are replaced, not appended to.
    let buf = vec![0xee; 4096];
    let got = s
        .get_range_into("packs/ab/abcdef", 10..20, buf)
        .await
        .unwrap();
    assert_eq!(got, &big[10..20]);
}
on_every_backend!(ranged_reads_return_exactly_the_range);

/// A range past the object's end is Truncated (damage: the object was cut
/// after it was written), whether it starts inside the object or after it,
/// and it is not retried into success.
async fn a_range_past_the_end_is_truncated(s: DynStorage) {
    s.put("packs/cu/cut", Bytes::from(pattern(1000)))
        .await
        .unwrap();
    for range in [900..1100, 1000..1100, 2000..2100] {
        let err = s
            .get_range("packs/cu/cut", range.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Truncated, "{range:?}: {err}");
        assert_eq!(err.class(), ErrorClass::Damage, "{err}");
        assert!(!err.is_retryable());
        let err = s
            .get_range_into("packs/cu/cut", range.clone(), Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Truncated, "{range:?}: {err}");
    }
}
on_every_backend!(a_range_past_the_end_is_truncated);

/// Listing is recursive, by prefix (a whole directory or part of a name),
/// with sizes; a prefix nothing starts with lists nothing.
async fn listing_is_recursive_by_prefix_with_sizes(s: DynStorage) {
    s.put("config", Bytes::from_static(b"c")).await.unwrap();
    s.put("packs/ab/abcdef", Bytes::from_static(b"123"))
        .await
        .unwrap();
    s.put("packs/cd/cdef01", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    s.put("snapshots/one", Bytes::from_static(b"s"))
        .await
        .unwrap();
    let listed = |prefix: &'static str| {
        let s = s.clone();
        async move {
            let mut v: Vec<(String, u64)> = s
                .list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        listed("packs/").await,
        [
            ("packs/ab/abcdef".to_string(), 3),
            ("packs/cd/cdef01".to_string(), 5)
        ]
    );
    assert_eq!(
        listed("packs/c").await,
        [("packs/cd/cdef01".to_string(), 5)]
    );
    assert_eq!(listed("snapshots/").await.len(), 1);
    assert!(listed("index/").await.is_empty());
    assert_eq!(listed("").await.len(), 4);
}
on_every_backend!(listing_is_recursive_by_prefix_with_sizes);

/// A new store has nothing: no object, no leftover.
async fn an_empty_store_lists_nothing(s: DynStorage) {
    assert!(s.list("").await.unwrap().is_empty());
    assert!(s.list("packs/").await.unwrap().is_empty());
    assert!(s.list_leftovers().await.unwrap().is_empty());
    assert!(s.stat("config").await.unwrap().is_none());
}
on_every_backend!(an_empty_store_lists_nothing);

/// Concurrent writers of different keys all land.
async fn concurrent_puts_of_different_keys_all_land(s: DynStorage) {
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
}
on_every_backend!(concurrent_puts_of_different_keys_all_land);

/// Delete removes the object; deleting it again, or an object that never
/// was, succeeds; other objects stay.
async fn delete_is_idempotent(s: DynStorage) {
    s.put("packs/ab/abcdef", Bytes::from_static(b"keep"))
        .await
        .unwrap();
    s.put("packs/cd/cdef01", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    s.delete("packs/cd/cdef01").await.unwrap();
    s.delete("packs/cd/cdef01").await.unwrap();
    s.delete("packs/ne/never").await.unwrap();
    assert!(s.stat("packs/cd/cdef01").await.unwrap().is_none());
    let err = s.get("packs/cd/cdef01").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    let left: Vec<_> = s
        .list("packs/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, ["packs/ab/abcdef"]);
    assert_eq!(&s.get("packs/ab/abcdef").await.unwrap()[..], b"keep");
}
on_every_backend!(delete_is_idempotent);

/// Finished puts leave no leftover, and an object is not a leftover:
/// `delete_leftover` refuses it and it stays.
async fn objects_are_not_leftovers(s: DynStorage) {
    s.put("config", Bytes::from_static(b"c")).await.unwrap();
    s.put("packs/ab/abcdef", Bytes::from(pattern(2_000_000)))
        .await
        .unwrap();
    assert!(s.list_leftovers().await.unwrap().is_empty());
    for key in ["config", "packs/ab/abcdef"] {
        let err = s.delete_leftover(key).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    }
    assert_eq!(&s.get("config").await.unwrap()[..], b"c");
    assert!(s.stat("packs/ab/abcdef").await.unwrap().is_some());
}
on_every_backend!(objects_are_not_leftovers);

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(30),
    }
}

/// Transient faults under a retry layer are invisible until they outlast
/// it; a permanent one is reported at once.
async fn faults_under_a_retry_layer(base: DynStorage) {
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
    assert_eq!(fault.calls(Op::Put), 4, "three failures, then the put");
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
on_every_backend!(faults_under_a_retry_layer);

/// Every operation failing with `kind` at the fault layer, under a retry
/// layer: the error keeps its kind, has `class` (as `StorageError::class`
/// documents), and only a transient one is tried again (four attempts in
/// all); the store behind is untouched.
fn error_kind_through_the_layers(kind: ErrorKind, class: ErrorClass) {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let local: DynStorage = Arc::new(LocalStorage::new(dir.path().join("repo")));
        local.put("config", Bytes::from_static(b"c")).await.unwrap();
        let fault = Arc::new(FaultStorage::new(local));
        let s = RetryStorage::new(fault.clone(), fast_retry());
        for op in [Op::Put, Op::Get, Op::List, Op::Stat, Op::Delete] {
            fault.add(FaultRule {
                op,
                key_prefix: "".into(),
                skip: 0,
                times: None,
                action: FaultAction::Fail(kind),
            });
        }
        let errors = [
            s.put("config", Bytes::from_static(b"new"))
                .await
                .unwrap_err(),
            s.get("config").await.unwrap_err(),
            s.get_range("config", 0..1).await.unwrap_err(),
            s.list("").await.unwrap_err(),
            s.stat("config").await.unwrap_err(),
            s.delete("config").await.unwrap_err(),
        ];
        for err in &errors {
            assert_eq!(err.kind, kind, "{err}");
            assert_eq!(err.class(), class, "{err}");
            assert_eq!(Classify::class(err), class, "{err}");
            assert_eq!(err.is_retryable(), kind == ErrorKind::Transient, "{err}");
        }
        let attempts = if kind == ErrorKind::Transient { 4 } else { 1 };
        for (op, calls) in [
            (Op::Put, attempts),
            (Op::Get, 2 * attempts),
            (Op::List, attempts),
            (Op::Stat, attempts),
            (Op::Delete, attempts),
        ] {
            assert_eq!(fault.calls(op), calls, "{op:?} with {kind:?}");
        }
        fault.clear();
        assert_eq!(&s.get("config").await.unwrap()[..], b"c");
    });
}

/// One test per error kind: `error_kinds::KIND`.
macro_rules! error_kinds {
    ($($test:ident: $kind:ident => $class:ident),* $(,)?) => {
        mod error_kinds {
            use lifeboat_storage::{ErrorClass, ErrorKind};
            $(
                #[test]
                fn $test() {
                    super::error_kind_through_the_layers(ErrorKind::$kind, ErrorClass::$class);
                }
            )*
        }
    };
}

error_kinds!(
    not_found: NotFound => Failure,
    permission_denied: PermissionDenied => Usage,
    transient: Transient => Transient,
    permanent: Permanent => Failure,
    truncated: Truncated => Damage,
    config: Config => Usage,
);

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
        storage_class: None,
    };
    Arc::new(S3Storage::new(&g.bucket, prefix, &opts).unwrap())
}

/// Two prefixes in one bucket are two stores: neither sees the other's
/// objects.
#[test]
fn garage_prefixes_in_one_bucket_are_separate_stores() {
    let g = Garage::start().expect("start Garage (run scripts/install-garage.sh)");
    runtime().block_on(async {
        let a = garage_storage(&g, "repo-a");
        let b = garage_storage(&g, "repo-b");
        a.put("packs/ab/abcdef", Bytes::from_static(b"a"))
            .await
            .unwrap();
        assert!(b.list("packs/").await.unwrap().is_empty());
        assert!(b.stat("packs/ab/abcdef").await.unwrap().is_none());
        assert_eq!(a.list("packs/").await.unwrap().len(), 1);
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
            storage_class: None,
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
            storage_class: None,
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
