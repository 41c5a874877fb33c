//! The repository, files, verify and repair commands: parsed arguments into
//! library calls, results printed.

use std::io::Read;

use lifeboat_ops::secrets::{self, SecretSettings};
use lifeboat_ops::{Error, Result};
use lifeboat_repo::{
    ByteSize, ChunkerConfig, Credential, FilesBackupOptions, InitOptions, Kdf, RestoreOptions,
    Snapshot, SnapshotEntry, StreamBackupOptions, Timestamp,
};
use serde_json::json;

use crate::context::{warn, Ctx};
use crate::output::{print_json, rate, secs, size};
use crate::{BackupArgs, KeyAddArgs, KeyCommand, RepairCommand, RestoreArgs};

fn parse_size(what: &str, text: &str) -> Result<u64> {
    text.parse::<ByteSize>()
        .map(|b| b.0)
        .map_err(|e| Error::usage(format!("{what}: {e}")))
}

fn kdf_with_memory(text: &str) -> Result<Kdf> {
    let mem = parse_size("--kdf-memory", text)?;
    if mem < 8 * 1024 {
        return Err(Error::usage("--kdf-memory must be at least 8KiB"));
    }
    match Kdf::default_passphrase() {
        Kdf::Argon2id {
            iterations,
            parallelism,
            ..
        } => Ok(Kdf::Argon2id {
            memory_kib: (mem / 1024) as u32,
            iterations,
            parallelism,
        }),
        other => Ok(other),
    }
}

pub(crate) fn init(ctx: &Ctx, args: &crate::InitArgs) -> Result<()> {
    let avg = parse_size("--chunk-size", &args.chunk_size)? as u32;
    let options = InitOptions {
        chunker: ChunkerConfig::Cdc {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        },
        pack_size: parse_size("--pack-size", &args.pack_size)?,
        compression_level: args.compression_level,
        passphrase_kdf: kdf_with_memory(&args.kdf_memory)?,
    };
    let opened = ctx.session.init(&options, args.group_readable)?;
    warn(&opened.warnings);
    ctx.audited(&opened.repo);
    let repo = opened.repo;
    if ctx.json {
        print_json(&json!({
            "repository": repo.location(),
            "id": repo.config().id,
            "key_slot": repo.opened_slot(),
            "config": repo.config(),
        }));
    } else {
        outln!(
            "created lifeboat repository {} at {}",
            repo.config().id,
            repo.location()
        );
        outln!(
            "key slot {} opens it; keep that secret safe: without it the data is lost",
            repo.opened_slot()
        );
    }
    Ok(())
}

pub(crate) fn key(ctx: &Ctx, cmd: KeyCommand) -> Result<()> {
    let mut repo = ctx.open()?;
    match cmd {
        KeyCommand::List => {
            let slots = repo.key_slots()?;
            let epochs = repo.key_epochs();
            let ids: Vec<String> = slots.iter().map(|s| s.id.clone()).collect();
            // Last use from the audit log; this command's own opening is
            // not in it yet.
            let used = repo.audit_last_use(&ids)?;
            let now = Timestamp::now().as_second();
            let age = |created: i64| (now - created).max(0);
            if ctx.json {
                let list: Vec<_> = slots
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id, "source": s.source, "label": s.label,
                            "created_unix": s.created_unix, "age_seconds": age(s.created_unix),
                            "last_used": used.get(&s.id),
                            "kdf": s.kdf,
                            "current": s.id == repo.opened_slot(),
                        })
                    })
                    .collect();
                let ep: Vec<_> = epochs
                    .iter()
                    .map(|(n, c)| json!({"epoch": n, "created_unix": c, "age_seconds": age(*c)}))
                    .collect();
                print_json(&json!({ "slots": list, "data_key_epochs": ep }));
            } else {
                outln!(
                    "{:<2}{:<18}{:<13}{:<22}{:<10}{:<22}label",
                    "",
                    "slot",
                    "source",
                    "created",
                    "age",
                    "last used"
                );
                for s in &slots {
                    let mark = if s.id == repo.opened_slot() { "*" } else { "" };
                    let source = serde_json::to_value(s.source)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    outln!(
                        "{mark:<2}{:<18}{:<13}{:<22}{:<10}{:<22}{}",
                        s.id,
                        source,
                        fmt_unix(s.created_unix),
                        lifeboat_agent::state::words(age(s.created_unix) as f64),
                        used.get(&s.id)
                            .map(|t| short_time(*t))
                            .unwrap_or_else(|| "never (in the log)".into()),
                        s.label
                    );
                }
                let current = epochs.last().copied().unwrap_or((0, 0));
                outln!(
                    "data-key epochs: {} (current: {}, {} old)",
                    epochs.len(),
                    current.0,
                    lifeboat_agent::state::words(age(current.1) as f64)
                );
            }
        }
        KeyCommand::Add(args) => {
            let cred = new_credential(&args)?;
            warn(&Vec::from_iter(secrets::short_passphrase_warning(&cred)));
            let kdf = kdf_with_memory(&args.kdf_memory)?;
            let slot = repo.add_key_slot(&cred, &args.label, &kdf)?;
            if ctx.json {
                print_json(&json!({ "added": slot.id, "source": slot.source }));
            } else {
                outln!("added key slot {}", slot.id);
            }
        }
        KeyCommand::Remove { id } => {
            let slot = repo.remove_key_slot(&id)?;
            if ctx.json {
                print_json(&json!({ "removed": slot.id }));
            } else {
                outln!("removed key slot {}", slot.id);
            }
        }
        KeyCommand::Rotate { if_older_than } => {
            if let Some(age) = if_older_than {
                let max = humantime::parse_duration(&age).map_err(|e| {
                    Error::usage(format!(
                        "--if-older-than {age:?}: {e}; give a duration such as 90d"
                    ))
                })?;
                let created = repo.current_epoch_created().unwrap_or(0);
                let old = (Timestamp::now().as_second() - created).max(0) as u64;
                if old < max.as_secs() {
                    let epoch = repo.key_epochs().last().map_or(0, |e| e.0);
                    if ctx.json {
                        print_json(
                            &json!({ "rotated": false, "epoch": epoch, "age_seconds": old }),
                        );
                    } else {
                        outln!(
                            "data-key epoch {epoch} is {} old, under {age}: not rotated",
                            lifeboat_agent::state::words(old as f64)
                        );
                    }
                    return Ok(());
                }
            }
            let epoch = repo.rotate_data_key()?;
            if ctx.json {
                print_json(&json!({ "rotated": true, "epoch": epoch }));
            } else {
                outln!("data-key epoch {epoch} is now used for new data; older data stays readable with its own epoch");
            }
        }
    }
    Ok(())
}

fn new_credential(args: &KeyAddArgs) -> Result<Credential> {
    let new = SecretSettings {
        key_file: args.new_key_file.clone(),
        key_command: args.new_key_command.clone(),
        password_file: args.new_password_file.clone(),
        password_command: args.new_password_command.clone(),
    };
    let none = SecretSettings::default();
    let given = secrets::key_given(&new, &none, "LIFEBOAT_NEW_KEY")
        .or_else(|| secrets::password_given(&new, &none, "LIFEBOAT_NEW_PASSWORD"))
        .ok_or_else(|| Error::usage("no new secret given: use --new-password-file, --new-password-command, LIFEBOAT_NEW_PASSWORD, --new-key-file, --new-key-command or LIFEBOAT_NEW_KEY"))?;
    secrets::credential(&given.secret)
}

fn fmt_unix(secs: i64) -> String {
    Timestamp::from_second(secs.max(0))
        .map(short_time)
        .unwrap_or_else(|_| secs.to_string())
}

/// A time to the second, as listings show it: `2026-11-24T13:52:40Z`.
fn short_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `--time`: an RFC 3339 instant (`2026-01-31T02:00:00Z`, or with an offset).
pub(crate) fn parse_time(text: &str) -> Result<Timestamp> {
    text.parse().map_err(|e| {
        Error::usage(format!(
            "--time {text:?} is not a time lifeboat reads: give it as RFC 3339, e.g. 2026-01-31T02:00:00Z ({e})"
        ))
    })
}

pub(crate) fn backup(ctx: &Ctx, args: &BackupArgs) -> Result<()> {
    let time = args.time.as_deref().map(parse_time).transpose()?;
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let host = args.host.clone().unwrap_or_else(lifeboat_ops::hostname);
    let outcome = if args.stdin {
        let opts = StreamBackupOptions {
            name: args.name.clone().unwrap_or_else(|| "stdin".into()),
            source_kind: "stream".into(),
            tags: args.tags.clone(),
            hostname: host,
            time,
            metadata: Default::default(),
        };
        let stdin = std::io::stdin();
        let reader: Box<dyn Read> = Box::new(stdin.lock());
        repo.backup_stream(&opts, reader, &progress)?
    } else {
        let opts = FilesBackupOptions {
            paths: args.paths.clone(),
            tags: args.tags.clone(),
            allow_partial: args.allow_partial,
            force_read: args.force,
            hostname: host,
            time,
            metadata: Default::default(),
        };
        repo.backup_files(&opts, &progress)?
    };
    let s = &outcome.snapshot;
    let st = &s.stats;
    if ctx.json {
        print_json(&json!({
            "snapshot": outcome.id.to_hex(),
            "partial": s.partial,
            "skipped": s.skipped,
            "parent": s.parent.map(|p| p.to_hex()),
            "stats": st,
            "throughput_bytes_per_sec": (st.bytes_read * 1000).checked_div(st.duration_ms).unwrap_or(0),
        }));
    } else {
        for sk in &s.skipped {
            eprintln!(
                "skipped {}: {}",
                lifeboat_repo::name::display(&sk.path),
                sk.reason
            );
        }
        let partial = if s.partial {
            " (PARTIAL: some items were skipped)"
        } else {
            ""
        };
        outln!("snapshot {} saved{partial}", outcome.id.short());
        outln!(
            "  {} files, {} dirs, {} in all; read {}, new {}, stored {} in {} pack(s)",
            st.files,
            st.dirs,
            size(st.bytes_total),
            size(st.bytes_read),
            size(st.bytes_new),
            size(st.bytes_stored),
            st.packs
        );
        outln!(
            "  took {} ({})",
            secs(st.duration_ms),
            rate(st.bytes_read, st.duration_ms)
        );
    }
    Ok(())
}

pub(crate) fn restore(ctx: &Ctx, args: &RestoreArgs) -> Result<()> {
    let repo = ctx.open()?;
    let entry = repo.find_snapshot(&args.snapshot)?;
    let progress = ctx.progress();
    if args.stdout {
        let started = std::time::Instant::now();
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let n = repo.restore_stream(&entry.snapshot, &mut lock, &progress)?;
        let ms = started.elapsed().as_millis() as u64;
        if !ctx.quiet {
            eprintln!(
                "restored {} from snapshot {} in {} ({})",
                size(n),
                entry.id.short(),
                secs(ms),
                rate(n, ms)
            );
        }
        return Ok(());
    }
    let target = args
        .target
        .clone()
        .ok_or_else(|| Error::usage("--target DIR is required"))?;
    let opts = RestoreOptions {
        target: target.clone(),
        include: args
            .include
            .iter()
            .map(|p| lifeboat_repo::name::encode(p.as_os_str().as_encoded_bytes()))
            .collect(),
        overwrite: match args.overwrite.as_deref() {
            Some(w) => w.parse().map_err(Error::usage)?,
            None => Default::default(),
        },
        ..Default::default()
    };
    let stats = repo.restore(&entry.snapshot, &opts, &progress)?;
    if ctx.json {
        print_json(&json!({ "snapshot": entry.id.to_hex(), "target": target, "stats": stats }));
    } else {
        let mut extra = String::new();
        if stats.specials > 0 {
            extra.push_str(&format!(", {} FIFOs and device nodes", stats.specials));
        }
        if stats.unchanged > 0 {
            extra.push_str(&format!(", {} left as they were", stats.unchanged));
        }
        outln!(
            "restored {} files, {} dirs, {} symlinks{extra}, {} from snapshot {} to {} in {} ({})",
            stats.files,
            stats.dirs,
            stats.symlinks,
            size(stats.bytes),
            entry.id.short(),
            target.display(),
            secs(stats.duration_ms),
            rate(stats.bytes, stats.duration_ms)
        );
        if stats.sockets_skipped > 0 {
            outln!(
                "  {} socket(s) in the snapshot were not restored (a socket is made by the program that listens on it)",
                stats.sockets_skipped
            );
        }
    }
    Ok(())
}

fn snapshot_json(e: &SnapshotEntry) -> serde_json::Value {
    let s = &e.snapshot;
    json!({
        "id": e.id.to_hex(), "short_id": e.id.short(), "source_kind": s.source_kind,
        "source_name": s.source_name, "hostname": s.hostname, "paths": s.paths, "tags": s.tags,
        "start_time": s.start_time, "end_time": s.end_time, "partial": s.partial,
        "parent": s.parent.map(|p| p.to_hex()), "metadata": s.metadata, "stats": s.stats,
    })
}

pub(crate) fn snapshots(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open()?;
    let all = repo.snapshots()?;
    let holds = repo.holds()?;
    if ctx.json {
        print_json(&serde_json::Value::Array(
            all.iter()
                .map(|e| {
                    let mut v = snapshot_json(e);
                    v["hold"] = crate::retention::holds_json(&holds, &e.id);
                    v
                })
                .collect(),
        ));
        return Ok(());
    }
    let now = Timestamp::now();
    outln!(
        "{:<10}{:<22}{:<16}{:<8}{:>11}{:>11}  {:<14}paths",
        "id",
        "time",
        "host",
        "kind",
        "size",
        "stored",
        "tags"
    );
    for e in &all {
        let s = &e.snapshot;
        let partial = if s.partial { " (partial)" } else { "" };
        let hold = holds
            .iter()
            .find(|h| h.snapshot == e.id)
            .map(|h| format!(" [{}]", crate::retention::hold_text(h, now)))
            .unwrap_or_default();
        outln!(
            "{:<10}{:<22}{:<16}{:<8}{:>11}{:>11}  {:<14}{}{partial}{hold}",
            e.id.short(),
            short_time(s.start_time),
            s.hostname,
            s.source_kind,
            size(s.stats.bytes_total),
            size(s.stats.bytes_stored),
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    outln!("{} snapshot(s)", all.len());
    Ok(())
}

pub(crate) fn ls(ctx: &Ctx, spec: &str) -> Result<()> {
    let repo = ctx.open()?;
    let e = repo.find_snapshot(spec)?;
    let s: &Snapshot = &e.snapshot;
    if ctx.json {
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|n| json!({
                "path": format!("/{}", n.path), "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target,
            }))
            .collect();
        print_json(&json!({ "snapshot": e.id.to_hex(), "nodes": nodes }));
        return Ok(());
    }
    for n in &s.nodes {
        let target = n
            .target
            .as_deref()
            .map(|t| format!(" -> {}", lifeboat_repo::name::display(t)))
            .unwrap_or_default();
        outln!(
            "{}{:04o} {:>6}:{:<6} {:>12} /{}{target}",
            n.kind.letter(),
            n.mode & 0o7777,
            n.uid,
            n.gid,
            n.size,
            lifeboat_repo::name::display(&n.path)
        );
    }
    Ok(())
}

/// A damaged WAL object is stored under a keyed hash that says nothing to
/// an operator: name it by its segment (or history file), as far as the
/// archive's timelines say which names it should hold. Best effort.
fn name_damaged_wal(repo: &lifeboat_repo::Repository, report: &mut lifeboat_repo::VerifyReport) {
    if !report
        .damaged
        .iter()
        .any(|d| d.object.starts_with("named/"))
    {
        return;
    }
    let Ok(names) = lifeboat_postgres::inspect::wal_names_by_key(repo) else {
        return;
    };
    for d in report.damaged.iter_mut() {
        if let Some(name) = names.get(&d.object) {
            d.problem = format!("WAL file {name}: {}", d.problem);
        }
    }
}

pub(crate) fn verify(ctx: &Ctx, read_data: bool, subset: Option<&str>) -> Result<()> {
    let subset = match subset {
        Some(s) => Some(
            s.parse::<lifeboat_repo::DataSubset>()
                .map_err(|e| lifeboat_ops::Error::usage(e.to_string()))?,
        ),
        None => read_data.then_some(lifeboat_repo::DataSubset::All),
    };
    let read_data = subset.is_some();
    let repo = ctx.open()?;
    let progress = ctx.progress();
    let started = std::time::Instant::now();
    let mut report = repo.verify_data(subset, &progress)?;
    name_damaged_wal(&repo, &mut report);
    let ms = started.elapsed().as_millis() as u64;
    if ctx.json {
        let mut v = json!(report);
        if let Some(o) = v.as_object_mut() {
            o.insert("clean".into(), json!(report.is_clean()));
            o.insert("duration_ms".into(), json!(ms));
        }
        print_json(&v);
    } else {
        outln!(
            "checked {} index object(s), {} snapshot(s), {} pack(s){}",
            report.indexes,
            report.snapshots,
            report.packs,
            if read_data {
                format!(
                    "; read {} of {} pack(s){}: {} chunk(s), {} patched piece(s), {} WAL/history file(s), {} read in {} ({})",
                    report.packs_read,
                    report.packs,
                    report
                        .read_data_subset
                        .as_deref()
                        .map(|s| format!(" (subset {s})"))
                        .unwrap_or_default(),
                    report.chunks_checked,
                    report.pieces_rebuilt,
                    report.named_checked,
                    size(report.bytes_read),
                    secs(ms),
                    rate(report.bytes_read, ms)
                )
            } else {
                String::new()
            }
        );
        let l = &report.leftovers;
        if l.count > 0 {
            outln!(
                "{} temporary file(s) of interrupted writes, {} in all, the oldest {} old (not damage; `lifeboat repair leftovers` removes those older than an hour)",
                l.count,
                size(l.bytes),
                l.oldest_s
                    .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        if report.unindexed_packs > 0 {
            outln!(
                "{} pack(s) are in no index (left by interrupted backups; harmless)",
                report.unindexed_packs
            );
        }
        for d in &report.damaged {
            outln!("DAMAGED {}: {}", d.object, d.problem);
        }
        for b in &report.broken_snapshots {
            outln!("BROKEN snapshot {}: {}", b.id.short(), b.reason);
        }
        if let Some(hint) = &report.hint {
            outln!("{hint}");
        }
        if report.is_clean() {
            outln!("no damage found");
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Error::DamageFound(format!(
            "{} damaged object(s), {} broken snapshot(s)",
            report.damaged.len(),
            report.broken_snapshots.len()
        )))
    }
}

pub(crate) fn repair(ctx: &Ctx, cmd: RepairCommand) -> Result<()> {
    let repo = ctx.open()?;
    match cmd {
        RepairCommand::Index { read_data } => {
            let progress = ctx.progress();
            let r = repo.repair_index(read_data, &progress)?;
            if ctx.json {
                print_json(&json!(r));
            } else {
                outln!(
                    "read the tables of {} pack(s) no intact index listed: {} pack(s) and {} chunk(s) indexed in {} new index object(s); {} index object(s) kept",
                    r.packs_read,
                    r.packs_indexed,
                    r.chunks_indexed,
                    r.indexes_written,
                    r.indexes_kept
                );
                for k in &r.indexes_removed {
                    outln!("removed the damaged index object {k}");
                }
                for (k, why) in &r.unreadable_packs {
                    outln!("DAMAGED {k}: {why} (left as it is)");
                }
                for (k, n) in &r.bad_chunks {
                    outln!("DAMAGED {k}: {n} chunk(s) fail decryption or their hash check (left out of the index)");
                }
                outln!("run `lifeboat verify` to see what every snapshot needs");
            }
            if r.unreadable_packs.is_empty() && r.bad_chunks.is_empty() {
                Ok(())
            } else {
                Err(Error::DamageFound(format!(
                    "{} pack(s) could not be indexed, {} with damaged chunks",
                    r.unreadable_packs.len(),
                    r.bad_chunks.len()
                )))
            }
        }
        RepairCommand::Leftovers {
            older_than,
            dry_run,
        } => {
            let min_age = humantime::parse_duration(&older_than)
                .map_err(|e| Error::usage(format!("--older-than {older_than:?}: {e}")))?;
            let list = if dry_run {
                repo.leftovers()?
                    .into_iter()
                    .filter(|l| l.age_s.is_some_and(|a| a >= min_age.as_secs()))
                    .collect()
            } else {
                repo.remove_leftovers(min_age)?
            };
            let bytes: u64 = list.iter().map(|l| l.size).sum();
            if ctx.json {
                print_json(&json!({ "removed": !dry_run, "leftovers": list, "bytes": bytes }));
            } else {
                for l in &list {
                    outln!(
                        "{} {} ({})",
                        if dry_run { "would remove" } else { "removed" },
                        l.key,
                        size(l.size)
                    );
                }
                outln!(
                    "{} {} leftover(s), {}",
                    if dry_run { "would remove" } else { "removed" },
                    list.len(),
                    size(bytes)
                );
            }
            Ok(())
        }
    }
}
