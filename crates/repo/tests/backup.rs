//! Library-level backup tests where timing must be controlled exactly.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lifeboat_repo::{
    Credential, FilesBackupOptions, InitOptions, Kdf, Progress, RepoError, Repository,
};
use lifeboat_storage::LocalStorage;

struct DeleteOnStart(Mutex<Option<PathBuf>>, Mutex<Vec<String>>);

impl Progress for DeleteOnStart {
    /// Called after the walk listed every file and before any is read: the
    /// moment a file can vanish "mid-backup".
    fn start(&self, _phase: &str, _total: Option<u64>) {
        if let Some(p) = self.0.lock().unwrap().take() {
            fs::remove_file(p).unwrap();
        }
    }
    fn warn(&self, message: &str) {
        self.1.lock().unwrap().push(message.to_string());
    }
}

fn repo(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Repository {
    let storage = Arc::new(LocalStorage::new(dir.join("repo")));
    let opts = InitOptions {
        passphrase_kdf: Kdf::Argon2id {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(
        storage,
        rt.handle().clone(),
        &Credential::passphrase(b"pw".to_vec()),
        &opts,
    )
    .unwrap()
}

#[test]
fn file_vanishing_mid_backup_is_named_and_needs_allow_partial() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repo = repo(dir.path(), &rt);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("stays"), b"kept").unwrap();
    let opts = |allow_partial| FilesBackupOptions {
        paths: vec![src.clone()],
        allow_partial,
        hostname: "test".into(),
        ..Default::default()
    };

    fs::write(src.join("goes"), b"gone").unwrap();
    let progress = DeleteOnStart(Mutex::new(Some(src.join("goes"))), Mutex::new(Vec::new()));
    let err = repo.backup_files(&opts(false), &progress).unwrap_err();
    match &err {
        RepoError::Incomplete { count, first } => {
            assert_eq!(*count, 1);
            assert!(
                first.contains("goes") && first.contains("vanished"),
                "{first}"
            );
        }
        other => panic!("expected Incomplete, got {other}"),
    }
    assert!(err.to_string().contains("--allow-partial"));
    assert!(progress
        .1
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("vanished")));
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "no snapshot without allow_partial"
    );

    fs::write(src.join("goes"), b"gone").unwrap();
    let progress = DeleteOnStart(Mutex::new(Some(src.join("goes"))), Mutex::new(Vec::new()));
    let out = repo.backup_files(&opts(true), &progress).unwrap();
    assert!(out.snapshot.partial);
    assert_eq!(out.snapshot.skipped.len(), 1);
    assert!(out
        .snapshot
        .nodes
        .iter()
        .any(|n| n.path.ends_with("src/stays")));
    assert!(!out
        .snapshot
        .nodes
        .iter()
        .any(|n| n.path.ends_with("src/goes")));
}
